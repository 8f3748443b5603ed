#!/bin/sh
# The machine's installed packages, one per line, for the image's package list and SBOM. Written
# to /run (a tmpfs), so nothing of it stays in the image. Environment: BAKE_INVENTORY_FILE.
set -eu
: "${BAKE_INVENTORY_FILE:?}"
dpkg-query -W -f='${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\t${source:Package}\t${source:Version}\n' \
  > "$BAKE_INVENTORY_FILE"
echo "bake-inventory: $(grep -c '^ii' "$BAKE_INVENTORY_FILE") packages installed"
