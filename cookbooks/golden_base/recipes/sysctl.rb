#
# Cookbook:: golden_base
# Recipe:: sysctl
#
# The kernel's network and filesystem baseline, applied now and at every boot.
template node['golden_base']['sysctl']['path'] do
  source 'sysctl.conf.erb'
  owner 'root'
  group 'root'
  mode '0644'
  variables(settings: node['golden_base']['sysctl']['settings'])
  notifies :run, 'execute[sysctl --system]', :immediately
end

execute 'sysctl --system' do
  command 'sysctl -q --system'
  action :nothing
end
