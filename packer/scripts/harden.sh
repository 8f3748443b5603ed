#!/bin/sh
# Hardening step: sshd, kernel network and filesystem settings, and services a server does not need.
set -eu

install -d -m 0755 /etc/ssh/sshd_config.d
cat > /etc/ssh/sshd_config.d/50-bake-hardening.conf <<'CONF'
# Written by goldenbake's hardening step.
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitEmptyPasswords no
X11Forwarding no
AllowAgentForwarding no
AllowTcpForwarding no
MaxAuthTries 3
LoginGraceTime 30
ClientAliveInterval 300
ClientAliveCountMax 2
CONF
chmod 0644 /etc/ssh/sshd_config.d/50-bake-hardening.conf
sshd -t

cat > /etc/sysctl.d/60-bake-hardening.conf <<'CONF'
# Written by goldenbake's hardening step.
net.ipv4.conf.all.accept_redirects = 0
net.ipv4.conf.default.accept_redirects = 0
net.ipv6.conf.all.accept_redirects = 0
net.ipv4.conf.all.send_redirects = 0
net.ipv4.conf.all.accept_source_route = 0
net.ipv4.conf.all.rp_filter = 1
net.ipv4.conf.all.log_martians = 1
net.ipv4.tcp_syncookies = 1
net.ipv4.icmp_echo_ignore_broadcasts = 1
kernel.kptr_restrict = 2
kernel.dmesg_restrict = 1
kernel.randomize_va_space = 2
fs.protected_hardlinks = 1
fs.protected_symlinks = 1
fs.suid_dumpable = 0
CONF
sysctl -q --system

# No core dumps from setuid programs, and a umask that keeps new files private to their group.
install -d -m 0755 /etc/security/limits.d
echo "* hard core 0" > /etc/security/limits.d/60-bake-hardening.conf
sed -i 's/^UMASK.*/UMASK\t\t027/' /etc/login.defs
chmod 0600 /etc/ssh/sshd_config
