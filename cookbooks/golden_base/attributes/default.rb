# sshd: a drop-in read before the distribution's sshd_config, so these settings win.
default['golden_base']['sshd']['service'] = 'ssh'
default['golden_base']['sshd']['drop_in'] = '/etc/ssh/sshd_config.d/40-golden-base.conf'
default['golden_base']['sshd']['settings'] = {
  'PermitRootLogin' => 'prohibit-password',
  'PasswordAuthentication' => 'no',
  'KbdInteractiveAuthentication' => 'no',
  'PermitEmptyPasswords' => 'no',
  'X11Forwarding' => 'no',
  'AllowAgentForwarding' => 'no',
  'AllowTcpForwarding' => 'no',
  'MaxAuthTries' => '3',
  'LoginGraceTime' => '30',
  'ClientAliveInterval' => '300',
  'ClientAliveCountMax' => '2',
}

# sysctl: the kernel's network and filesystem baseline.
default['golden_base']['sysctl']['path'] = '/etc/sysctl.d/60-golden-base.conf'
default['golden_base']['sysctl']['settings'] = {
  'net.ipv4.conf.all.accept_redirects' => 0,
  'net.ipv4.conf.default.accept_redirects' => 0,
  'net.ipv6.conf.all.accept_redirects' => 0,
  'net.ipv4.conf.all.send_redirects' => 0,
  'net.ipv4.conf.all.accept_source_route' => 0,
  'net.ipv4.conf.all.rp_filter' => 1,
  'net.ipv4.conf.all.log_martians' => 1,
  'net.ipv4.tcp_syncookies' => 1,
  'net.ipv4.icmp_echo_ignore_broadcasts' => 1,
  'kernel.kptr_restrict' => 2,
  'kernel.dmesg_restrict' => 1,
  'kernel.randomize_va_space' => 2,
  'fs.protected_hardlinks' => 1,
  'fs.protected_symlinks' => 1,
  'fs.suid_dumpable' => 0,
}

# Time sync: the Amazon Time Sync Service first (link-local, on every EC2 instance), then the
# Debian pool; timesyncd moves on to the next server when one does not answer.
default['golden_base']['timesync']['servers'] = %w(169.254.169.123 0.debian.pool.ntp.org 1.debian.pool.ntp.org)
default['golden_base']['timesync']['fallback_servers'] = %w(2.debian.pool.ntp.org 3.debian.pool.ntp.org)

# Unattended upgrades: security updates only, daily, no automatic reboot (the nightly bake ships
# kernels; a reboot is a blue/green swap, not a cron job).
default['golden_base']['unattended_upgrades']['update_days'] = 1
default['golden_base']['unattended_upgrades']['upgrade_days'] = 1
default['golden_base']['unattended_upgrades']['autoclean_days'] = 7
default['golden_base']['unattended_upgrades']['origins'] = [
  'origin=Debian,codename=${distro_codename},label=Debian-Security',
  'origin=Debian,codename=${distro_codename}-security,label=Debian-Security',
]
default['golden_base']['unattended_upgrades']['package_blocklist'] = []
default['golden_base']['unattended_upgrades']['remove_unused_dependencies'] = false
default['golden_base']['unattended_upgrades']['automatic_reboot'] = false
default['golden_base']['unattended_upgrades']['automatic_reboot_time'] = '02:00'

# Lineage: where the record goes, and where bake's converge script leaves the values only the
# running build knows (digest, source AMI, run id). node['bake']['lineage'] comes from the node
# JSON that bake renders; it is declared here so the recipe can read it outside a bake build too.
default['golden_base']['lineage']['path'] = '/etc/bake/lineage.json'
default['golden_base']['lineage']['build_env'] = '/etc/bake/build.env'
default['bake']['lineage'] = {}
