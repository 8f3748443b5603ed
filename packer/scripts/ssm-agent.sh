#!/bin/sh
# The SSM agent (amazon-ssm-agent), so that Session Manager and Run Command reach instances of the
# image: the Debian package from the instance's own region's bucket (region from the instance's
# metadata, IMDSv2), checked (package name, architecture, and with BAKE_SSM_AGENT_VERSION pinned,
# its version and BAKE_SSM_AGENT_SHA256), installed and enabled at boot.
#
# The same script is the build instance's user data under ssh_interface = "session_manager", where
# Packer's SSH goes through the agent: an agent already there (installed by the user data, or by
# the distribution) is only checked and enabled, never restarted.
set -eu

version="${BAKE_SSM_AGENT_VERSION:-latest}"
sha256="${BAKE_SSM_AGENT_SHA256:-}"
metadata="http://169.254.169.254/latest"

say() { echo "ssm-agent: $*"; }
fail() { echo "ssm-agent: $*" >&2; exit 1; }

installed_version() {
  if dpkg-query -W -f='${Status} ${Version}\n' amazon-ssm-agent 2>/dev/null \
      | grep -q '^install ok installed '; then
    dpkg-query -W -f='${Version}' amazon-ssm-agent
  elif command -v snap >/dev/null 2>&1 && snap list amazon-ssm-agent >/dev/null 2>&1; then
    snap list amazon-ssm-agent | awk 'NR == 2 { print $2 }'
  fi
}

enabled() {
  systemctl is-enabled --quiet amazon-ssm-agent 2>/dev/null \
    || systemctl is-enabled --quiet snap.amazon-ssm-agent.amazon-ssm-agent 2>/dev/null
}

found="$(installed_version)"
if [ -n "$found" ]; then
  if [ "$version" != latest ] && [ "${found%%-*}" != "$version" ]; then
    fail "amazon-ssm-agent $found is installed already, not $version: pin the version the source image has, or none"
  fi
  enabled || systemctl enable amazon-ssm-agent
  say "amazon-ssm-agent $found is installed and enabled"
  exit 0
fi

if ! command -v curl >/dev/null 2>&1; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q curl
fi

token="$(curl -sSf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' "$metadata/api/token")"
region="$(curl -sSf -H "X-aws-ec2-metadata-token: $token" "$metadata/meta-data/placement/region")"
[ -n "$region" ] || fail "the instance metadata names no region"
architecture="$(dpkg --print-architecture)"
case "$architecture" in
  amd64|arm64) ;;
  *) fail "no amazon-ssm-agent package for architecture $architecture" ;;
esac

url="https://s3.$region.amazonaws.com/amazon-ssm-$region/$version/debian_$architecture/amazon-ssm-agent.deb"
package="$(mktemp -d)/amazon-ssm-agent.deb"
say "downloading $url"
curl -sSf --retry 5 --proto '=https' -o "$package" "$url"

if [ -n "$sha256" ]; then
  echo "$sha256  $package" | sha256sum -c - >/dev/null \
    || fail "$url does not have the SHA-256 $sha256"
fi
[ "$(dpkg-deb -f "$package" Package)" = amazon-ssm-agent ] \
  || fail "$url is not the amazon-ssm-agent package"
[ "$(dpkg-deb -f "$package" Architecture)" = "$architecture" ] \
  || fail "$url is not built for $architecture"
if [ "$version" != latest ]; then
  got="$(dpkg-deb -f "$package" Version)"
  [ "${got%%-*}" = "$version" ] || fail "$url is version $got, not $version"
fi

dpkg -i "$package"
rm -rf "$(dirname "$package")"
systemctl enable amazon-ssm-agent
systemctl start amazon-ssm-agent
systemctl is-active --quiet amazon-ssm-agent || fail "amazon-ssm-agent does not run"
say "amazon-ssm-agent $(installed_version) installed from $region and enabled"
