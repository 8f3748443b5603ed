#
# Cookbook:: golden_base
# Recipe:: timesync
#
# Time from systemd-timesyncd, with the servers from attributes.
timesync = node['golden_base']['timesync']

package 'systemd-timesyncd'

directory '/etc/systemd/timesyncd.conf.d' do
  owner 'root'
  group 'root'
  mode '0755'
end

template '/etc/systemd/timesyncd.conf.d/50-golden-base.conf' do
  source 'timesyncd.conf.erb'
  owner 'root'
  group 'root'
  mode '0644'
  variables(servers: timesync['servers'], fallback_servers: timesync['fallback_servers'])
  notifies :restart, 'service[systemd-timesyncd]', :delayed
end

service 'systemd-timesyncd' do
  supports status: true, restart: true
  action [:enable, :start]
end
