#
# Cookbook:: golden_web
# Recipe:: nginx
#
# nginx answers GET /health itself and proxies everything else to the app. A changed site is
# checked with `nginx -t` at once, and only a check that passes queues the reload.
web = node['golden_web']['nginx']
app = node['golden_web']['app']
site = "/etc/nginx/sites-available/#{web['site']}"

package 'nginx'

template site do
  source 'golden-web.nginx.conf.erb'
  owner 'root'
  group 'root'
  mode '0644'
  variables(
    port: web['port'],
    server_name: web['server_name'],
    health_path: web['health_path'],
    app_address: app['address'],
    app_port: app['port']
  )
  notifies :run, 'execute[validate nginx config]', :immediately
end

link "/etc/nginx/sites-enabled/#{web['site']}" do
  to site
  notifies :run, 'execute[validate nginx config]', :immediately
end

# Debian's welcome site would also claim port 80 as the default server.
link '/etc/nginx/sites-enabled/default' do
  action :delete
  only_if { ::File.symlink?('/etc/nginx/sites-enabled/default') }
  notifies :run, 'execute[validate nginx config]', :immediately
end

execute 'validate nginx config' do
  command '/usr/sbin/nginx -t -q'
  action :nothing
  notifies :reload, 'service[nginx]', :delayed
end

service 'nginx' do
  supports status: true, restart: true, reload: true
  action [:enable, :start]
end
