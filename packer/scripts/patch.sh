#!/bin/sh
# OS patch step: apply every pending update from the release, -updates and -security suites.
# Environment: BAKE_SUITE (bookworm), BAKE_MIRROR, BAKE_SECURITY_MIRROR.
set -eu
: "${BAKE_SUITE:?}" "${BAKE_MIRROR:?}" "${BAKE_SECURITY_MIRROR:?}"
export DEBIAN_FRONTEND=noninteractive

cat > /etc/apt/sources.list.d/debian.sources <<SOURCES
Types: deb
URIs: ${BAKE_MIRROR}
Suites: ${BAKE_SUITE} ${BAKE_SUITE}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${BAKE_SECURITY_MIRROR}
Suites: ${BAKE_SUITE}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
: > /etc/apt/sources.list

apt-get update -q
echo "bake-patch: pending updates:"
apt-get -s -o APT::Install-Recommends=false dist-upgrade | awk '/^Inst /{print "  " $2, $3, $4}'
apt-get -y -q \
  -o APT::Install-Recommends=false \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
  dist-upgrade
apt-get clean
pending=$(apt-get -s -o APT::Install-Recommends=false dist-upgrade | grep -c '^Inst ' || true)
if [ "$pending" -ne 0 ]; then
  echo "bake-patch: $pending updates still pending after the upgrade" >&2
  exit 1
fi
echo "bake-patch: installed kernels: $(linux-version list | linux-version sort | tr '\n' ' ')"
