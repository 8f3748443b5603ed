#
# Cookbook:: golden_web
# Recipe:: app
#
# A small app run by systemd as an unprivileged user with no login shell, listening on the
# loopback interface only; nginx is its only way in.
app = node['golden_web']['app']
unit_path = "/etc/systemd/system/#{app['service']}.service"

package 'python3'

group app['group'] do
  system true
end

user app['user'] do
  gid app['group']
  system true
  home app['root']
  manage_home false
  shell '/usr/sbin/nologin'
  comment 'golden-web app'
end

# Owned by root and read-only to the app: it serves these files and cannot change them.
directory app['root'] do
  owner 'root'
  group app['group']
  mode '0750'
end

template "#{app['root']}/index.html" do
  source 'index.html.erb'
  owner 'root'
  group app['group']
  mode '0640'
  variables(name: app['service'])
end

template unit_path do
  source 'golden-web-app.service.erb'
  owner 'root'
  group 'root'
  mode '0644'
  variables(
    user: app['user'],
    group: app['group'],
    root: app['root'],
    address: app['address'],
    port: app['port']
  )
  notifies :run, 'execute[systemctl daemon-reload]', :immediately
  notifies :restart, "service[#{app['service']}]", :delayed
end

execute 'systemctl daemon-reload' do
  action :nothing
end

service app['service'] do
  supports status: true, restart: true
  action [:enable, :start]
end
