#
# Cookbook:: golden_base
# Recipe:: sshd
#
# sshd takes keys only. A changed drop-in is checked with `sshd -t` at once, and only a check that
# passes queues the restart: Chef runs queued restarts even when a later resource fails, so the
# template itself must not notify the service.
sshd = node['golden_base']['sshd']

package 'openssh-server'

directory ::File.dirname(sshd['drop_in']) do
  owner 'root'
  group 'root'
  mode '0755'
end

template sshd['drop_in'] do
  source 'sshd_hardening.conf.erb'
  owner 'root'
  group 'root'
  mode '0644'
  variables(settings: sshd['settings'])
  notifies :run, 'execute[validate sshd config]', :immediately
end

execute 'validate sshd config' do
  command '/usr/sbin/sshd -t'
  action :nothing
  notifies :restart, "service[#{sshd['service']}]", :delayed
end

service sshd['service'] do
  supports status: true, restart: true, reload: true
  action [:enable, :start]
end
