#
# Cookbook:: golden_base
# Recipe:: default
#
# The baseline every golden image carries.
include_recipe 'golden_base::sshd'
include_recipe 'golden_base::sysctl'
include_recipe 'golden_base::timesync'
include_recipe 'golden_base::unattended_upgrades'
include_recipe 'golden_base::lineage'
