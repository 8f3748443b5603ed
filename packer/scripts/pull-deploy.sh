#!/bin/sh
# pull-deploy step: at every boot, bake-release.service installs the release the instance's user
# data names (packer/scripts/pull-release.py, uploaded to /tmp/bake-pull-release); bake-app.service
# runs its bin/start when it has one; the units in BAKE_RELEASE_BEFORE start only after the
# release is installed, so a machine whose release cannot be had never passes a health check.
# Environment: BAKE_APP_DIR (/srv/app), BAKE_APP_USER (app), BAKE_RELEASE_BEFORE (unit names).
set -eu
: "${BAKE_APP_DIR:?}" "${BAKE_APP_USER:?}"
BAKE_RELEASE_BEFORE="${BAKE_RELEASE_BEFORE:-}"

if ! id "$BAKE_APP_USER" >/dev/null 2>&1; then
  useradd --system --home-dir "$BAKE_APP_DIR" --no-create-home --shell /usr/sbin/nologin \
    "$BAKE_APP_USER"
fi
install -d -m 0755 "$BAKE_APP_DIR" "$BAKE_APP_DIR/releases" /usr/local/lib/bake
install -m 0755 /tmp/bake-pull-release /usr/local/lib/bake/pull-release
rm -f /tmp/bake-pull-release
python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read())' /usr/local/lib/bake/pull-release

cat > /etc/systemd/system/bake-release.service <<UNIT
[Unit]
Description=goldenbake: install the release this instance's user data names
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
RemainAfterExit=yes
Environment=BAKE_APP_DIR=${BAKE_APP_DIR} BAKE_APP_USER=${BAKE_APP_USER}
ExecStart=/usr/local/lib/bake/pull-release
TimeoutStartSec=15min

[Install]
WantedBy=multi-user.target
UNIT

cat > /etc/systemd/system/bake-app.service <<UNIT
[Unit]
Description=goldenbake: the release's bin/start
Requires=bake-release.service
After=bake-release.service
ConditionPathIsDirectory=${BAKE_APP_DIR}/current/
ConditionFileIsExecutable=${BAKE_APP_DIR}/current/bin/start

[Service]
User=${BAKE_APP_USER}
WorkingDirectory=${BAKE_APP_DIR}/current
ExecStart=${BAKE_APP_DIR}/current/bin/start
Restart=on-failure
RestartSec=2

[Install]
WantedBy=multi-user.target
UNIT

for unit in $BAKE_RELEASE_BEFORE; do
  install -d -m 0755 "/etc/systemd/system/${unit}.d"
  cat > "/etc/systemd/system/${unit}.d/50-bake-release.conf" <<UNIT
# ${unit} serves the health check: it starts only once the release is installed.
[Unit]
Requires=bake-release.service
After=bake-release.service
UNIT
done

systemctl daemon-reload
systemctl enable bake-release.service bake-app.service
echo "bake-pull-deploy: releases go to ${BAKE_APP_DIR}/releases, ${BAKE_APP_DIR}/current the one" \
  "installed; waiting on it: ${BAKE_RELEASE_BEFORE:-no unit}"
