#!/bin/sh
# Chef step, last part: converge the uploaded cookbooks in local mode, then remove what the run
# needed. The lineage values only the running build knows go to /etc/bake/build.env for
# golden_base::lineage. Chef Infra Client 15 and newer must be told its licence is accepted;
# Chef 14 and Cinc are not given that flag, and the client's own --version tells which is which.
# Environment: BAKE_CHEF_PRODUCT (chef or cinc), BAKE_IMAGE, BAKE_DIGEST, BAKE_SOURCE_AMI,
# BAKE_RUN_ID. BAKE_CHEF_STAGING and BAKE_RECORD_DIR move /tmp/bake-chef and /etc/bake (tests only:
# client.rb names /tmp/bake-chef and golden_base reads /etc/bake).
set -eu
: "${BAKE_CHEF_PRODUCT:?}" "${BAKE_IMAGE:?}" "${BAKE_DIGEST:?}" "${BAKE_SOURCE_AMI:?}" "${BAKE_RUN_ID:?}"
staging="${BAKE_CHEF_STAGING:-/tmp/bake-chef}"
record_dir="${BAKE_RECORD_DIR:-/etc/bake}"
client="${BAKE_CHEF_PRODUCT}-client"

fail() {
  echo "bake-chef: $*" >&2
  exit 1
}

[ -f "$staging/node.json" ] && [ -f "$staging/client.rb" ] && [ -d "$staging/cookbooks" ] ||
  fail "node.json, client.rb and cookbooks/ were not uploaded to $staging"
command -v "$client" >/dev/null 2>&1 || fail "$client is not installed"

for value in "$BAKE_IMAGE" "$BAKE_DIGEST" "$BAKE_SOURCE_AMI" "$BAKE_RUN_ID"; do
  case "$value" in
    *[!A-Za-z0-9._:/-]*) fail "lineage value '$value' has characters build.env cannot hold" ;;
  esac
done
trap 'rm -rf "$staging" "$record_dir/build.env"' EXIT
install -d -m 0755 "$record_dir"
cat > "$record_dir/build.env" <<ENV
BAKE_IMAGE=${BAKE_IMAGE}
BAKE_DIGEST=${BAKE_DIGEST}
BAKE_SOURCE_AMI=${BAKE_SOURCE_AMI}
BAKE_RUN_ID=${BAKE_RUN_ID}
BAKE_BUILT=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ENV
chmod 0644 "$record_dir/build.env"

banner=$("$client" --version | head -n 1)
major=$(printf '%s\n' "$banner" | sed -n 's/^[^0-9]*\([0-9][0-9]*\)\..*$/\1/p')
[ -n "$major" ] || fail "cannot tell the version of $client from '$banner'"
echo "bake-chef: $banner"

set -- -z -j "$staging/node.json" -c "$staging/client.rb" --no-color
case "$banner" in
  Chef*)
    if [ "$major" -ge 15 ]; then
      export CHEF_LICENSE=accept
      set -- "$@" --chef-license accept
    fi
    ;;
esac
cd "$staging"
"$client" "$@"
