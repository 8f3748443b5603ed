#!/bin/sh
# Chef step, first part: install the Chef (or Cinc) client that converges the cookbooks, and make
# the folder the next two steps upload into.
# Environment: BAKE_CHEF_METHOD (omnitruck, url or preinstalled), BAKE_CHEF_PRODUCT (chef or cinc),
# BAKE_CHEF_VERSION (omnitruck), BAKE_CHEF_URL and BAKE_CHEF_SHA256 (url: an https address, or an
# s3:// object the target presigned for this build; never printed, it carries a signature).
# BAKE_CHEF_STAGING moves the upload folder (tests only: client.rb names /tmp/bake-chef).
set -eu
: "${BAKE_CHEF_METHOD:?}" "${BAKE_CHEF_PRODUCT:?}"
: "${BAKE_CHEF_VERSION=}" "${BAKE_CHEF_URL=}" "${BAKE_CHEF_SHA256=}"
export DEBIAN_FRONTEND=noninteractive
staging="${BAKE_CHEF_STAGING:-/tmp/bake-chef}"
client="${BAKE_CHEF_PRODUCT}-client"

fail() {
  echo "bake-chef: $*" >&2
  exit 1
}

need_curl() {
  command -v curl >/dev/null 2>&1 && return 0
  apt-get update -q
  apt-get install -y -q --no-install-recommends curl ca-certificates
}

installed_version() {
  command -v "$client" >/dev/null 2>&1 || return 0
  "$client" --version | sed -n 's/^[^0-9]*\([0-9][0-9.]*\).*$/\1/p' | head -n 1
}

case "$BAKE_CHEF_PRODUCT" in
  chef) installer=https://omnitruck.chef.io/install.sh ;;
  cinc) installer=https://omnitruck.cinc.sh/install.sh ;;
  *) fail "unknown product '$BAKE_CHEF_PRODUCT' (chef or cinc)" ;;
esac

downloads=$(mktemp -d)
trap 'rm -rf "$downloads"' EXIT

case "$BAKE_CHEF_METHOD" in
  omnitruck)
    [ -n "$BAKE_CHEF_VERSION" ] || fail "omnitruck needs BAKE_CHEF_VERSION"
    if [ "$(installed_version)" = "$BAKE_CHEF_VERSION" ]; then
      echo "bake-chef: $client $BAKE_CHEF_VERSION is already installed"
    else
      need_curl
      curl -fsSL --retry 3 -o "$downloads/install.sh" "$installer"
      bash "$downloads/install.sh" -P "$BAKE_CHEF_PRODUCT" -v "$BAKE_CHEF_VERSION"
    fi
    ;;
  url)
    [ -n "$BAKE_CHEF_URL" ] || fail "url needs BAKE_CHEF_URL"
    [ -n "$BAKE_CHEF_SHA256" ] || fail "url needs BAKE_CHEF_SHA256"
    need_curl
    curl -fsSL --retry 3 -o "$downloads/client.deb" "$BAKE_CHEF_URL"
    if ! printf '%s  %s\n' "$BAKE_CHEF_SHA256" "$downloads/client.deb" | sha256sum -c --quiet -; then
      fail "the package's SHA-256 is $(sha256sum < "$downloads/client.deb" | cut -d' ' -f1), not $BAKE_CHEF_SHA256"
    fi
    if ! dpkg -i "$downloads/client.deb"; then
      apt-get update -q
      apt-get install -f -y -q
    fi
    ;;
  preinstalled) ;;
  *) fail "unknown method '$BAKE_CHEF_METHOD' (omnitruck, url or preinstalled)" ;;
esac

command -v "$client" >/dev/null 2>&1 || fail "$client is not installed (method $BAKE_CHEF_METHOD)"
echo "bake-chef: $("$client" --version | head -n 1)"

# The file provisioners upload as the SSH user, who is not root where this script runs with sudo.
owner="${SUDO_USER:-$(id -un)}"
rm -rf "$staging"
install -d -m 0700 -o "$owner" "$staging" "$staging/cookbooks"
