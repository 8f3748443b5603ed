#!/bin/sh
# The shipped `web` role: nginx from Debian answering /health, and / with who this machine is: its
# instance id, AMI and type from the instance metadata service (IMDSv2), its running kernel, and
# its image's lineage digest from /etc/bake/lineage.json, and the release it runs (pull-deploy); and
# /app/ the release's files. The page is written at every boot, before nginx starts, so a machine
# that cannot learn who it is never passes a health check.
set -eu
export DEBIAN_FRONTEND=noninteractive
# apt's options on its command line only (nothing of them stays in the image): no index
# translations, gzip indexes, and the host's package cache where the build has one.
set -- -y -q -o APT::Install-Recommends=false -o Acquire::Languages=none \
  -o Acquire::CompressionTypes::Order::=gz -o Dpkg::Use-Pty=0
[ -z "${BAKE_APT_PROXY:-}" ] || set -- "$@" -o Acquire::http::Proxy="${BAKE_APT_PROXY}"
# Package lists an earlier step of this build fetched (the folder changed within 30 minutes;
# apt dates the files themselves as the archive does) are fresh enough to install from.
if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1 \
  || [ -z "$(find /var/lib/apt/lists -maxdepth 0 -mmin -30)" ]; then
  apt-get "$@" update
fi
apt-get "$@" install nginx curl
set --

install -d -m 0755 /usr/local/lib/bake
cat > /usr/local/lib/bake/identity <<'PY'
#!/usr/bin/python3
"""Write /run/bake/identity.json: who this machine is, asked of the instance metadata service."""
import json
import os
import platform
import sys
import time
import urllib.request

METADATA = "http://169.254.169.254/latest"
OUTPUT = "/run/bake/identity.json"
PATIENCE = 180  # seconds: the network comes up by DHCP after boot


def token():
    request = urllib.request.Request(
        METADATA + "/api/token", method="PUT",
        headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"},
    )
    with urllib.request.urlopen(request, timeout=3) as answer:
        return answer.read().decode()


def meta(path, session):
    request = urllib.request.Request(
        METADATA + "/meta-data/" + path, headers={"X-aws-ec2-metadata-token": session}
    )
    with urllib.request.urlopen(request, timeout=3) as answer:
        return answer.read().decode()


def ask():
    deadline = time.monotonic() + PATIENCE
    while True:
        try:
            session = token()
            return {key: meta(path, session) for key, path in (
                ("instance_id", "instance-id"), ("ami_id", "ami-id"),
                ("instance_type", "instance-type"),
                ("availability_zone", "placement/availability-zone"),
            )}
        except OSError as exc:
            if time.monotonic() > deadline:
                sys.exit(f"the instance metadata service did not answer: {exc}")
            time.sleep(1)


def release():
    """The release installed at this boot (pull-deploy's record), or None."""
    try:
        with open("/run/bake/release.json", encoding="utf-8") as stream:
            return json.load(stream).get("release")
    except (OSError, ValueError):
        return None


with open("/etc/bake/lineage.json", encoding="utf-8") as stream:
    lineage = json.load(stream)
identity = {
    **ask(),
    "kernel": platform.release(),
    "image": lineage["image"],
    "digest": lineage["digest"],
    "run_id": lineage["run_id"],
    "release": release(),
    "booted": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
}
os.makedirs(os.path.dirname(OUTPUT), exist_ok=True)
os.chmod(os.path.dirname(OUTPUT), 0o755)  # nginx's workers read the page
with open(OUTPUT + ".partial", "w", encoding="utf-8") as stream:
    json.dump(identity, stream, indent=2)
    stream.write("\n")
os.chmod(OUTPUT + ".partial", 0o644)
os.replace(OUTPUT + ".partial", OUTPUT)
print(json.dumps(identity))
PY
chmod 0755 /usr/local/lib/bake/identity

cat > /etc/systemd/system/bake-identity.service <<'UNIT'
[Unit]
Description=goldenbake: who this machine is (instance metadata, kernel, lineage), for the web page
Wants=network-online.target
After=network-online.target bake-release.service
Before=nginx.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/lib/bake/identity

[Install]
WantedBy=multi-user.target
UNIT
install -d -m 0755 /etc/systemd/system/nginx.service.d
cat > /etc/systemd/system/nginx.service.d/10-bake-identity.conf <<'UNIT'
# nginx serves only once the machine knows who it is: until then the health check fails.
[Unit]
Requires=bake-identity.service
After=bake-identity.service
UNIT

cat > /etc/nginx/sites-available/bake-web <<'NGINX'
server {
    listen 80 default_server;
    listen [::]:80 default_server;
    root /run/bake;
    add_header Cache-Control "no-store" always;

    location = /health {
        access_log off;
        default_type text/plain;
        return 200 "ok\n";
    }
    location = / {
        default_type application/json;
        try_files /identity.json =503;
    }
    # The release a pull-deploy step installed (bake release), its files as they are.
    location /app/ {
        alias /srv/app/current/;
        index index.html;
    }
    location / {
        return 404;
    }
}
NGINX
rm -f /etc/nginx/sites-enabled/default
ln -sf /etc/nginx/sites-available/bake-web /etc/nginx/sites-enabled/bake-web
nginx -t
systemctl daemon-reload
systemctl enable bake-identity.service nginx.service
