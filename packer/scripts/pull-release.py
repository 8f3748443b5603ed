#!/usr/bin/python3
"""goldenbake's pull at boot: install the release this instance's user data names.

Run by bake-release.service at every boot. It reads the user data through the instance metadata
service (IMDSv2), finds the release document goldenbake wrote there (a JSON document, or a part
of type text/x-goldenbake-release of multipart user data), downloads the release from S3 (signed
with the instance role's credentials when it has a role), checks its sha256, unpacks it under
$BAKE_APP_DIR/releases/VERSION, points $BAKE_APP_DIR/current at it and says so in
/run/bake/release.json. It exits non-zero when the release cannot be had or does not verify, so
the units that require bake-release.service (the health check's server) never start: the machine
stays unhealthy and a swap to it is refused. No release named: nothing to install, success.

Only Python's standard library: the image has python3 and nothing else is assumed.
"""

import datetime
import email
import hashlib
import hmac
import json
import os
import pwd
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

IMDS = os.environ.get("BAKE_IMDS_URL", "http://169.254.169.254").rstrip("/") + "/latest"
APP_DIR = os.environ.get("BAKE_APP_DIR", "/srv/app")
APP_USER = os.environ.get("BAKE_APP_USER", "app")
RUN_DIR = os.environ.get("BAKE_RUN_DIR", "/run/bake")
PATIENCE = float(os.environ.get("BAKE_RELEASE_PATIENCE", "300"))  # seconds of retrying
PART_TYPE = "text/x-goldenbake-release"
DOCUMENT_KEY = "goldenbake-release"
CHUNK = 1 << 16


class Failed(Exception):
    """The release cannot be installed; the message says why."""


def log(message):
    print(f"bake-release: {message}", file=sys.stderr, flush=True)


def with_retries(what, attempt):
    """`attempt()` until it works, for at most PATIENCE seconds: the network comes up by DHCP, and
    a store can answer 5xx for a moment. A Failed is final at once."""
    deadline = time.monotonic() + PATIENCE
    delay = 1.0
    while True:
        try:
            return attempt()
        except Failed:
            raise
        except (OSError, urllib.error.URLError) as exc:
            if time.monotonic() + delay > deadline:
                raise Failed(f"{what}: {exc}") from None
            log(f"{what}: {exc}; trying again in {delay:.0f}s")
            time.sleep(delay)
            delay = min(delay * 2, 15.0)


# the instance metadata service


def metadata_token():
    request = urllib.request.Request(
        IMDS + "/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"}
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        return answer.read().decode()


def metadata(path, token):
    """The bytes at `path`, or None when the metadata service has nothing there (404)."""
    request = urllib.request.Request(IMDS + "/" + path, headers={"X-aws-ec2-metadata-token": token})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def release_named(user_data):
    """The release document in the user data, or None."""
    if not user_data:
        return None
    if user_data.lstrip().startswith(b"{"):
        return _document(user_data)
    if user_data.lstrip().lower().startswith((b"content-type:", b"mime-version:")):
        for part in email.message_from_bytes(user_data).walk():
            if part.get_content_type() == PART_TYPE:
                return _document(part.get_payload(decode=True) or b"")
    return None


def _document(raw):
    try:
        parsed = json.loads(raw)
    except ValueError:
        return None
    named = parsed.get(DOCUMENT_KEY) if isinstance(parsed, dict) else None
    return named if isinstance(named, dict) else None


def credentials(token):
    """The instance role's credentials, or None for an instance without a role."""
    roles = metadata("meta-data/iam/security-credentials/", token)
    if not roles or not roles.strip():
        return None
    role = roles.decode().split()[0]
    found = json.loads(metadata(f"meta-data/iam/security-credentials/{role}", token) or b"{}")
    if "AccessKeyId" not in found:
        return None
    return found["AccessKeyId"], found["SecretAccessKey"], found.get("Token")


# S3


def object_url(release, region):
    bucket, _, key = release["url"].removeprefix("s3://").partition("/")
    quoted = urllib.parse.quote(key, safe="/-_.~")
    if release.get("endpoint"):
        return f"{release['endpoint'].rstrip('/')}/{bucket}/{quoted}"
    return f"https://{bucket}.s3.{region}.amazonaws.com/{quoted}"


def signed_headers(url, region, keys, now=None):
    """AWS Signature Version 4 headers of an S3 GET of `url` with `keys` (id, secret, token)."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    parts = urllib.parse.urlsplit(url)
    payload = hashlib.sha256(b"").hexdigest()  # a GET sends no body
    headers = {"host": parts.netloc, "x-amz-content-sha256": payload, "x-amz-date": stamp}
    if keys[2]:
        headers["x-amz-security-token"] = keys[2]
    names = ";".join(sorted(headers))
    canonical = "\n".join(
        [
            "GET",
            parts.path or "/",
            parts.query,
            "".join(f"{name}:{headers[name]}\n" for name in sorted(headers)),
            names,
            payload,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + keys[1]).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={keys[0]}/{scope}, SignedHeaders={names}, "
        f"Signature={signature}"
    )
    del headers["host"]
    return headers


def download(url, headers, into):
    """The object at `url` into the open file `into`; its sha256."""
    into.seek(0)
    into.truncate()
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            while chunk := answer.read(CHUNK):
                digest.update(chunk)
                into.write(chunk)
    except urllib.error.HTTPError as exc:
        if exc.code in (403, 404):
            raise Failed(f"{url}: HTTP {exc.code} {exc.reason}") from None
        raise
    into.flush()
    return digest.hexdigest()


# installing


def unpack(archive_path, directory):
    """Unpack a release, refusing any member that would land outside `directory`."""
    with tarfile.open(archive_path, mode="r:gz") as archive:
        for member in archive.getmembers():
            name = member.name
            escapes = name.startswith("/") or ".." in name.split("/")
            if member.issym():
                target = os.path.normpath(os.path.join(os.path.dirname(name), member.linkname))
                escapes = escapes or member.linkname.startswith("/") or target.startswith("..")
            if escapes or not (member.isfile() or member.isdir() or member.issym()):
                raise Failed(f"the release's member {name!r} would land outside it")
        archive.extractall(directory)  # noqa: S202 (every member was checked above)


def own(directory, user):
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        return
    for root, folders, files in os.walk(directory):
        for name in [root, *(os.path.join(root, entry) for entry in folders + files)]:
            os.lchown(name, account.pw_uid, account.pw_gid)


def install(release, archive_path):
    releases = os.path.join(APP_DIR, "releases")
    os.makedirs(releases, exist_ok=True)
    final = os.path.join(releases, release["version"])
    if not os.path.isdir(final):
        staging = tempfile.mkdtemp(prefix=".unpacking-", dir=releases)
        try:
            unpack(archive_path, staging)
            own(staging, APP_USER)
            os.chmod(staging, 0o755)
            os.replace(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    link = os.path.join(APP_DIR, "current")
    temporary = link + ".new"
    if os.path.lexists(temporary):
        os.unlink(temporary)
    os.symlink(os.path.join("releases", release["version"]), temporary)
    os.replace(temporary, link)
    return final


def say(state):
    os.makedirs(RUN_DIR, exist_ok=True)
    path = os.path.join(RUN_DIR, "release.json")
    with open(path + ".new", "w", encoding="utf-8") as out:
        json.dump(state, out, indent=2, sort_keys=True)
        out.write("\n")
    os.replace(path + ".new", path)


def main():
    token = with_retries("the instance metadata service", metadata_token)
    user_data = with_retries("the user data", lambda: metadata("user-data", token))
    release = release_named(user_data)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if release is None:
        say({"release": None, "checked": now})
        log("the user data names no release; nothing to install")
        return 0
    try:
        for field in ("version", "url", "sha256"):
            if not isinstance(release.get(field), str) or not release[field]:
                raise Failed(f"the release document has no {field}")
        if "/" in release["version"] or release["version"].startswith("."):
            raise Failed(f"the release version {release['version']!r} is not a folder name")
        region = (metadata("meta-data/placement/region", token) or b"us-east-1").decode()
        url = object_url(release, region)
        keys = credentials(token)
        with tempfile.TemporaryFile() as archive:
            sha256 = with_retries(
                f"downloading {release['url']}",
                lambda: download(url, signed_headers(url, region, keys) if keys else {}, archive),
            )
            if sha256 != release["sha256"]:
                raise Failed(
                    f"{release['url']} has sha256 {sha256}, not {release['sha256']}: refused"
                )
            with tempfile.NamedTemporaryFile(suffix=".tar.gz") as copy:
                archive.seek(0)
                shutil.copyfileobj(archive, copy)
                copy.flush()
                installed = install(release, copy.name)
    except (Failed, tarfile.TarError, OSError) as exc:
        say({"release": release.get("version"), "url": release.get("url"), "error": str(exc)})
        log(f"release {release.get('version')} not installed: {exc}")
        return 1
    say(
        {
            "release": release["version"],
            "sha256": release["sha256"],
            "url": release["url"],
            "directory": installed,
            "installed": now,
        }
    )
    log(f"release {release['version']} installed in {installed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
