name 'golden_web'
maintainer 'goldenbake'
license 'Apache-2.0'
description 'Web role on top of golden_base: nginx in front of a small unprivileged app'
version '1.0.0'
chef_version '>= 15'
supports 'debian'

depends 'golden_base'
