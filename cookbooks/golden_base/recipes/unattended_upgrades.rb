#
# Cookbook:: golden_base
# Recipe:: unattended_upgrades
#
# Security updates between bakes: apt's daily timers fetch and install from the security origin
# only; everything else waits for the next image.
upgrades = node['golden_base']['unattended_upgrades']

package 'unattended-upgrades'

template '/etc/apt/apt.conf.d/20auto-upgrades' do
  source '20auto-upgrades.erb'
  owner 'root'
  group 'root'
  mode '0644'
  variables(
    update_days: upgrades['update_days'],
    upgrade_days: upgrades['upgrade_days'],
    autoclean_days: upgrades['autoclean_days']
  )
end

template '/etc/apt/apt.conf.d/50unattended-upgrades' do
  source '50unattended-upgrades.erb'
  owner 'root'
  group 'root'
  mode '0644'
  variables(
    origins: upgrades['origins'],
    package_blocklist: upgrades['package_blocklist'],
    remove_unused_dependencies: upgrades['remove_unused_dependencies'],
    automatic_reboot: upgrades['automatic_reboot'],
    automatic_reboot_time: upgrades['automatic_reboot_time']
  )
end

%w(apt-daily.timer apt-daily-upgrade.timer).each do |timer|
  systemd_unit timer do
    action [:enable, :start]
  end
end
