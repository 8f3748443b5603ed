#!/bin/sh
# ship-logs: the machine's logs leave it as they are written, since machines are thrown away.
# What is shipped: everything journald gets (services' standard output included), which rsyslog's
# imjournal reads from the journal itself, and the files BAKE_SHIP_LOGS_FILES names (absolute
# paths or globs, separated by spaces). Where it goes, by BAKE_SHIP_LOGS_TO:
#   collector   rsyslog forwards each line over TCP to BAKE_SHIP_LOGS_COLLECTOR (ADDRESS:PORT; the
#               local target's collector, which QEMU runs on the host per machine), through a queue
#               that spills to disk while the collector cannot be reached and is tried again
#               every second, then less often but at least every 30 s, forever;
#   cloudwatch  rsyslog writes the journal to /var/log/bake/journal.log and the Amazon CloudWatch
#               agent (from the instance's own region's bucket, checked as ssm-agent.sh checks the
#               SSM agent; BAKE_CLOUDWATCH_AGENT_VERSION and _SHA256 pin it) sends that file and
#               the listed ones to the log group BAKE_SHIP_LOGS_GROUP, one stream per instance and
#               file (BAKE_SHIP_LOGS_RETENTION days, when given).
# BAKE_APT_PROXY (optional): the host's package cache, given to apt on its command line only.
#
# Nothing ships while the image is built: the shippers are enabled for the next boot and kept from
# starting until then by drop-ins under /run, which the build machine's shutdown takes away; the
# seal step removes what a shipper that ran anyway (a parent image's) queued or wrote.
# BAKE_SHIP_LOGS_ROOT (tests only) is where the files are written instead of /.
set -eu
: "${BAKE_SHIP_LOGS_TO:?}"
export DEBIAN_FRONTEND=noninteractive

root="${BAKE_SHIP_LOGS_ROOT:-}"
files="${BAKE_SHIP_LOGS_FILES:-}"
journal_file=/var/log/bake/journal.log
agent_dir=/opt/aws/amazon-cloudwatch-agent
metadata="http://169.254.169.254/latest"

say() { echo "ship-logs: $*"; }
fail() { echo "ship-logs: $*" >&2; exit 1; }

case "$BAKE_SHIP_LOGS_TO" in
  collector) : "${BAKE_SHIP_LOGS_COLLECTOR:?}" ;;
  cloudwatch) : "${BAKE_SHIP_LOGS_GROUP:?}" ;;
  *) fail "BAKE_SHIP_LOGS_TO is $BAKE_SHIP_LOGS_TO, not collector or cloudwatch" ;;
esac
set -f  # the globs in $files are for rsyslog and the agent, not for this shell
for pattern in $files; do
  case "$pattern" in
    /*) ;;
    *) fail "$pattern is not an absolute path" ;;
  esac
done
set +f

# --- not while the image is built -----------------------------------------------------------

hold_until_boot() {  # UNIT: nothing can start it until the next boot
  install -d "$root/run/systemd/system/$1.d"
  cat > "$root/run/systemd/system/$1.d/50-bake-build.conf" <<'CONF'
# goldenbake ship-logs: no shipping while the image is built. This file is under /run, so the
# next boot, a machine of the image, starts without it.
[Unit]
ConditionPathExists=/nonexistent/bake-building
CONF
}

hold_until_boot rsyslog.service
hold_until_boot amazon-cloudwatch-agent.service
systemctl daemon-reload

# --- packages --------------------------------------------------------------------------------

set -- -y -q -o APT::Install-Recommends=false -o Acquire::Languages=none \
  -o Acquire::CompressionTypes::Order::=gz -o Dpkg::Use-Pty=0 \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold
if [ -n "${BAKE_APT_PROXY:-}" ]; then
  set -- "$@" -o Acquire::http::Proxy="${BAKE_APT_PROXY}"
  say "packages through the host's cache ${BAKE_APT_PROXY}"
fi
packages=rsyslog
if [ "$BAKE_SHIP_LOGS_TO" = cloudwatch ]; then
  packages="rsyslog logrotate"
  command -v curl >/dev/null 2>&1 || packages="$packages curl"
fi
# Package lists an earlier step of this build fetched (the folder changed within 30 minutes;
# apt dates the files themselves as the archive does) are fresh enough to install from.
if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1 \
  || [ -z "$(find /var/lib/apt/lists -maxdepth 0 -mmin -30)" ]; then
  apt-get "$@" update
fi
# shellcheck disable=SC2086 # one word per package
apt-get "$@" install $packages
apt-get clean
# A shipper that runs already (a parent image's, started when the build machine booted) stops; so
# does the socket the install may have opened for rsyslog, which nothing would read.
for unit in rsyslog.service syslog.socket amazon-cloudwatch-agent.service; do
  if systemctl is-active --quiet "$unit"; then
    say "stopping $unit until the image boots"
    systemctl stop "$unit"
  fi
done

# --- rsyslog ---------------------------------------------------------------------------------

install -d "$root/etc/systemd/journald.conf.d"
cat > "$root/etc/systemd/journald.conf.d/50-bake-ship-logs.conf" <<'CONF'
# goldenbake ship-logs: rsyslog reads the journal itself (imjournal), where no line is dropped
# while rsyslog is busy or restarting; journald's copy for syslog's socket would only be a second,
# lossy one.
[Journal]
ForwardToSyslog=no
CONF

install -d "$root/etc/systemd/system/rsyslog.service.d"
cat > "$root/etc/systemd/system/rsyslog.service.d/50-bake-ship-logs.conf" <<'CONF'
# goldenbake ship-logs: rsyslog starts once the network is up, so at shutdown it stops before the
# network goes down, with time to send what it still holds.
[Unit]
After=network.target
CONF

imfile_inputs() {
  set -f
  for pattern in $files; do
    printf 'input(type="imfile" File="%s" Tag="bake-file" addMetadata="on")\n' "$pattern"
  done
  set +f
}

destination() {
  if [ "$BAKE_SHIP_LOGS_TO" = collector ]; then
    cat <<CONF
  # To the collector on the host, as lines (TCP syslog's traditional framing). The queue holds
  # 10000 lines in memory and spills to /var/spool/rsyslog (at most 256 MiB) while the collector
  # cannot be reached; the action is tried again every second, then less often but at least
  # every 30 s, forever. At shutdown it has 10 s to send what is queued; what is left is saved
  # for the next boot.
  action(type="omfwd" name="bake-ship-logs" target="${BAKE_SHIP_LOGS_COLLECTOR%:*}"
         port="${BAKE_SHIP_LOGS_COLLECTOR##*:}" protocol="tcp" TCP_Framing="traditional"
         template="bake-line"
         queue.type="LinkedList" queue.filename="bake-ship-logs" queue.size="10000"
         queue.maxDiskSpace="256m" queue.saveOnShutdown="on" queue.timeoutShutdown="10000"
         action.resumeRetryCount="-1" action.resumeInterval="1" action.resumeIntervalMax="30")
CONF
  else
    cat <<CONF
  # For the CloudWatch agent, which sends the file on (logrotate turns it over daily).
  action(type="omfile" name="bake-ship-logs" file="$journal_file" template="bake-line"
         dirCreateMode="0750" fileCreateMode="0640")
CONF
  fi
}

{
  cat <<'CONF'
# Written by goldenbake's ship-logs step (packer/scripts/ship-logs.sh): the machine's logs leave
# it as they are written.
#
# The journal, read by imjournal, which keeps its place in /var/spool/rsyslog/bake-imjournal.state
# (a restarted rsyslog goes on where it stopped; the first boot starts at the journal's start). The
# journal rate-limits each service already; rsyslog adds no limit of its own.
module(load="imjournal" StateFile="bake-imjournal.state" Ratelimit.Interval="0")
CONF
  if [ "$BAKE_SHIP_LOGS_TO" = collector ] && [ -n "$files" ]; then
    cat <<'CONF'

# The application's files, read as they grow (from their start when rsyslog first sees them).
module(load="imfile" mode="inotify")
CONF
    imfile_inputs
  fi
  cat <<'CONF'

# One line per message: time, host, where it came from (the journal's tag, or the file's path),
# the message, its control characters (a journal message's line feeds too) as #NNN, in decimal.
template(name="bake-line" type="string"
         string="%TIMESTAMP:::date-rfc3339% %HOSTNAME% %$.source%%msg:::sp-if-no-1st-sp%%msg:::escape-cc%\n")

if $inputname == "imjournal" or $inputname == "imfile" then {
  if $inputname == "imfile" then {
    set $.source = $!metadata!filename & ":";
  } else {
    set $.source = $syslogtag;
  }
CONF
  destination
  cat <<'CONF'
}
# Nothing goes on to the rules of /etc/rsyslog.conf: the journal (/var/log/journal) is the
# machine's own copy, and imuxsock and imklog would only repeat what the journal has.
stop
CONF
} > "$root/etc/rsyslog.d/99-bake-ship-logs.conf.new"
mv "$root/etc/rsyslog.d/99-bake-ship-logs.conf.new" "$root/etc/rsyslog.d/99-bake-ship-logs.conf"

rsyslogd -N1 >/dev/null || fail "rsyslog refuses its configuration (rsyslogd -N1)"
systemctl enable rsyslog.service
if [ "$BAKE_SHIP_LOGS_TO" = collector ]; then
  say "rsyslog ships the journal${files:+ and $files} to $BAKE_SHIP_LOGS_COLLECTOR from the next boot"
  exit 0
fi
say "rsyslog writes the journal to $journal_file for the CloudWatch agent from the next boot"

# --- the CloudWatch agent --------------------------------------------------------------------

cat > "$root/etc/logrotate.d/bake-ship-logs" <<CONF
# goldenbake ship-logs: the journal as rsyslog writes it for the CloudWatch agent
$journal_file {
	daily
	maxsize 100M
	rotate 2
	missingok
	notifempty
	compress
	delaycompress
	postrotate
		/usr/lib/rsyslog/rsyslog-rotate
	endscript
}
CONF

version="${BAKE_CLOUDWATCH_AGENT_VERSION:-latest}"
sha256="${BAKE_CLOUDWATCH_AGENT_SHA256:-}"

agent_version() {
  if dpkg-query -W -f='${Status} ${Version}\n' amazon-cloudwatch-agent 2>/dev/null \
      | grep -q '^install ok installed '; then
    dpkg-query -W -f='${Version}' amazon-cloudwatch-agent
  fi
}

is_pinned_version() {  # VERSION: whether the package's VERSION is the pinned one
  case "${1%%-*}" in
    "$version"|"${version%b*}") return 0 ;;
  esac
  return 1
}

found="$(agent_version)"
if [ -n "$found" ]; then
  if [ "$version" != latest ] && ! is_pinned_version "$found"; then
    fail "amazon-cloudwatch-agent $found is installed already, not $version: pin the version the source image has, or none"
  fi
  say "amazon-cloudwatch-agent $found is installed"
else
  token="$(curl -sSf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' "$metadata/api/token")"
  region="$(curl -sSf -H "X-aws-ec2-metadata-token: $token" "$metadata/meta-data/placement/region")"
  [ -n "$region" ] || fail "the instance metadata names no region"
  architecture="$(dpkg --print-architecture)"
  case "$architecture" in
    amd64|arm64) ;;
    *) fail "no amazon-cloudwatch-agent package for architecture $architecture" ;;
  esac
  url="https://amazoncloudwatch-agent-$region.s3.$region.amazonaws.com/debian/$architecture/$version/amazon-cloudwatch-agent.deb"
  scratch="$(mktemp -d)"
  package="$scratch/amazon-cloudwatch-agent.deb"
  say "downloading $url"
  curl -sSf --retry 5 --proto '=https' -o "$package" "$url"
  if [ -n "$sha256" ]; then
    echo "$sha256  $package" | sha256sum -c - >/dev/null \
      || fail "$url does not have the SHA-256 $sha256"
  fi
  [ "$(dpkg-deb -f "$package" Package)" = amazon-cloudwatch-agent ] \
    || fail "$url is not the amazon-cloudwatch-agent package"
  [ "$(dpkg-deb -f "$package" Architecture)" = "$architecture" ] \
    || fail "$url is not built for $architecture"
  if [ "$version" != latest ]; then
    got="$(dpkg-deb -f "$package" Version)"
    is_pinned_version "$got" || fail "$url is version $got, not $version"
  fi
  dpkg -i "$package"
  rm -rf "$scratch"
  found="$(agent_version)"
fi

collected() {  # the agent's collect_list: the journal's file, then each listed file or glob
  retention=""
  [ -z "${BAKE_SHIP_LOGS_RETENTION:-}" ] || retention=", \"retention_in_days\": $BAKE_SHIP_LOGS_RETENTION"
  separator=""
  set -f
  for pattern in "$journal_file" $files; do
    printf '%s          { "file_path": "%s", "log_group_name": "%s",\n' \
      "$separator" "$pattern" "$BAKE_SHIP_LOGS_GROUP"
    printf '            "log_stream_name": "{instance_id}", "publish_multi_logs": true%s }' \
      "$retention"
    separator=",
"
  done
  set +f
  echo
}

install -d "$root$agent_dir/etc"
cat > "$root$agent_dir/etc/amazon-cloudwatch-agent.json.new" <<JSON
{
  "agent": {
    "run_as_user": "root"
  },
  "logs": {
    "logs_collected": {
      "files": {
        "collect_list": [
$(collected)
        ]
      }
    }
  }
}
JSON
mv "$root$agent_dir/etc/amazon-cloudwatch-agent.json.new" \
  "$root$agent_dir/etc/amazon-cloudwatch-agent.json"

# The agent translates its configuration each time it starts; a configuration it refuses would
# only show at every instance's boot, so the build translates it once now, into scratch space.
scratch="$(mktemp -d)"
mkdir "$scratch/none"
"$root$agent_dir/bin/config-translator" --input "$root$agent_dir/etc/amazon-cloudwatch-agent.json" \
  --input-dir "$scratch/none" --output "$scratch/agent.toml" --mode ec2 \
  --config "$root$agent_dir/etc/common-config.toml" >/dev/null \
  || fail "the CloudWatch agent refuses its configuration (config-translator)"
rm -rf "$scratch"
systemctl enable amazon-cloudwatch-agent.service
say "amazon-cloudwatch-agent $found ships $journal_file${files:+ and $files} to the log group $BAKE_SHIP_LOGS_GROUP from the next boot"
