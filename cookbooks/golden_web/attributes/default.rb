# The app: an unprivileged user serving /srv/golden-web on the loopback interface only.
default['golden_web']['app']['user'] = 'golden-web'
default['golden_web']['app']['group'] = 'golden-web'
default['golden_web']['app']['root'] = '/srv/golden-web'
default['golden_web']['app']['service'] = 'golden-web-app'
default['golden_web']['app']['address'] = '127.0.0.1'
default['golden_web']['app']['port'] = 8080

# nginx: the only public listener; answers the load balancer's health check itself and proxies
# everything else to the app.
default['golden_web']['nginx']['port'] = 80
default['golden_web']['nginx']['server_name'] = '_'
default['golden_web']['nginx']['health_path'] = '/health'
default['golden_web']['nginx']['site'] = 'golden-web'
