#
# Cookbook:: golden_base
# Recipe:: lineage
#
# The lineage record: which build made this image, and the record of the image it started from.
# node['bake']['lineage'] comes from the node JSON bake renders (the image name); the values only
# the running build knows (digest, source AMI, run id, time) come from build.env, which bake's
# converge script writes just before this run and removes after it.
require 'json'

settings = node['golden_base']['lineage']

build_values = {}
if ::File.exist?(settings['build_env'])
  ::File.foreach(settings['build_env']) do |line|
    key, value = line.chomp.split('=', 2)
    next unless value && key.start_with?('BAKE_')
    build_values[key.delete_prefix('BAKE_').downcase] = value
  end
end
lineage = node['bake']['lineage'].to_h.merge(build_values)

missing = %w(image digest source_ami run_id).select { |key| lineage[key].to_s.empty? }
unless missing.empty?
  raise "golden_base::lineage: #{missing.join(', ')} not known: converge through bake, or give " \
        "node['bake']['lineage'] in the node JSON"
end

# The record already on the machine is the parent image's, unless this build wrote it (a second
# converge of the same build keeps the parent it found the first time).
previous = nil
if ::File.exist?(settings['path'])
  begin
    previous = JSON.parse(::File.read(settings['path']))
  rescue JSON::ParserError
    Chef::Log.warn("#{settings['path']} is not JSON; the new record has no parent")
  end
end
parent = (previous && previous['digest'] == lineage['digest']) ? previous['parent'] : previous

directory ::File.dirname(settings['path']) do
  owner 'root'
  group 'root'
  mode '0755'
end

template settings['path'] do
  source 'lineage.json.erb'
  owner 'root'
  group 'root'
  mode '0644'
  variables(
    record: {
      'image' => lineage['image'],
      'digest' => lineage['digest'],
      'source_ami' => lineage['source_ami'],
      'run_id' => lineage['run_id'],
      'built' => lineage['built'],
      'parent' => parent,
    }
  )
end
