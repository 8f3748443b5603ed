#
# Cookbook:: golden_web
# Recipe:: default
#
# The web role: the lineage record, the app, and nginx in front of it. The rest of the baseline
# comes from the base image this role is layered on.
include_recipe 'golden_base::lineage'
include_recipe 'golden_web::app'
include_recipe 'golden_web::nginx'
