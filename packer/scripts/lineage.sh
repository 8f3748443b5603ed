#!/bin/sh
# Lineage record: which build made this image, and from which source image.
# Environment: BAKE_IMAGE, BAKE_DIGEST, BAKE_SOURCE_AMI, BAKE_RUN_ID.
set -eu
: "${BAKE_IMAGE:?}" "${BAKE_DIGEST:?}" "${BAKE_SOURCE_AMI:?}" "${BAKE_RUN_ID:?}"
install -d -m 0755 /etc/bake
parent=""
if [ -f /etc/bake/lineage.json ]; then
  parent=$(tr -d '\n' < /etc/bake/lineage.json)
fi
cat > /etc/bake/lineage.json <<JSON
{
  "image": "${BAKE_IMAGE}",
  "digest": "${BAKE_DIGEST}",
  "source_ami": "${BAKE_SOURCE_AMI}",
  "run_id": "${BAKE_RUN_ID}",
  "built": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "parent": ${parent:-null}
}
JSON
chmod 0644 /etc/bake/lineage.json
cat /etc/bake/lineage.json
