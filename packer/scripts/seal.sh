#!/bin/sh
# Always the last step: leave nothing behind that must differ between machines booted from the
# image (SSH host keys, machine id) and nothing the build only needed (package caches).
set -eu
install -d -m 0755 /etc/systemd/system/ssh.service.d
cat > /etc/systemd/system/ssh.service.d/10-bake-host-keys.conf <<'CONF'
# Each machine booted from this image makes its own SSH host keys on first boot.
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
CONF
rm -f /etc/ssh/ssh_host_*
# Log shippers (the ship-logs step's, of this image or of its parent) may have run during the
# build: what they queued, where they were in the journal and in files, and what rsyslog wrote for
# the CloudWatch agent belong to the build machine. Every machine of the image starts without them.
for unit in rsyslog.service syslog.socket amazon-cloudwatch-agent.service; do
  if systemctl is-active --quiet "$unit"; then systemctl stop "$unit"; fi
done
rm -rf /var/spool/rsyslog/* /var/log/bake /opt/aws/amazon-cloudwatch-agent/logs/state \
  /opt/aws/amazon-cloudwatch-agent/logs/amazon-cloudwatch-agent.log*
apt-get clean
rm -rf /var/lib/apt/lists/* /tmp/* /var/tmp/*
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
sync
# Hand freed blocks back to the disk image so the artifact stays small.
fstrim -av || true
