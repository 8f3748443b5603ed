#!/bin/sh
# OS patch step: apply every pending update from the release, -updates and -security suites.
# Environment: BAKE_SUITE (bookworm), BAKE_MIRROR, BAKE_SECURITY_MIRROR; BAKE_APT_PROXY (optional:
# the host's package cache, an http:// proxy).
#
# What makes it quick under emulation changes this run only, never the image: apt's options are
# given on its command line (no index translations, gzip indexes, dpkg without fsync, the proxy),
# and the initramfs and boot menu are made once, after every package is configured, instead of
# once per package that asks for them. The host lists the updates before the build and checks
# that none is left after it, so apt resolves the upgrade once.
set -eu
: "${BAKE_SUITE:?}" "${BAKE_MIRROR:?}" "${BAKE_SECURITY_MIRROR:?}"
export DEBIAN_FRONTEND=noninteractive

cat > /etc/apt/sources.list.d/debian.sources <<SOURCES
Types: deb
URIs: ${BAKE_MIRROR}
Suites: ${BAKE_SUITE} ${BAKE_SUITE}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${BAKE_SECURITY_MIRROR}
Suites: ${BAKE_SUITE}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
: > /etc/apt/sources.list

set -- -y -q -o APT::Install-Recommends=false -o Acquire::Languages=none \
  -o Acquire::CompressionTypes::Order::=gz -o Dpkg::Use-Pty=0 \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
  -o Dpkg::Options::=--force-unsafe-io
if [ -n "${BAKE_APT_PROXY:-}" ]; then
  set -- "$@" -o Acquire::http::Proxy="${BAKE_APT_PROXY}"
  echo "bake-patch: packages through the host's cache ${BAKE_APT_PROXY}"
fi

echo "bake-progress: reading the archive's indexes"
apt-get "$@" update

# The boot menu waits until the end: /etc/kernel/postinst.d/zz-update-grub and grub-pc's postinst
# update it only when it exists. The kernel's own initramfs hook waits too (INITRD=No), and the
# initramfs-tools trigger, when a package pulls it, makes the newest kernel's once, at the end.
grub_cfg=/boot/grub/grub.cfg
kernels_before=$(linux-version list | linux-version sort | tr '\n' ' ')
grub_before=$(dpkg-query -W -f='${Version}' grub-pc grub-common 2>/dev/null || true)
if [ -e "$grub_cfg" ]; then
  mv "$grub_cfg" "$grub_cfg.bake-upgrading"
  trap 'mv -f "$grub_cfg.bake-upgrading" "$grub_cfg" 2>/dev/null || true' EXIT
fi

# apt's status lines (fd 3) become "bake-progress: unpacking NAME (N of M)" lines for the host,
# each as soon as apt writes it; M is the number of packages it downloads. The shell reads them one
# line at a time: mawk, Debian's awk, reads a pipe a block at a time and held them back for half a
# minute and more.
show_progress() (
  set -f
  total=0 unpacked=0 configured=0 last='' seen_unpacked=' ' seen_configured=' '
  while IFS=: read -r kind package _percent message; do
    case "$kind:$message" in
      dlstatus:*)
        set -- $message
        if [ $# -eq 5 ]; then total=$5; fi
        if [ "$message" != "$last" ]; then echo "bake-progress: downloading: $message"; fi
        last=$message ;;
      pmstatus:Unpacking*)
        case $seen_unpacked in *" $package "*) ;; *)
          seen_unpacked="$seen_unpacked$package " unpacked=$((unpacked + 1))
          echo "bake-progress: unpacking $package ($unpacked of $total)" ;;
        esac ;;
      pmstatus:Configuring*)
        case $seen_configured in *" $package "*) ;; *)
          seen_configured="$seen_configured$package " configured=$((configured + 1))
          echo "bake-progress: configuring $package ($configured of $total)" ;;
        esac ;;
      "pmstatus:Running post-installation trigger"*)
        echo "bake-progress: trigger $package" ;;
    esac
  done
)

status=/run/bake-patch-status
{
  {
    code=0
    INITRD=No apt-get "$@" -o APT::Status-Fd=3 dist-upgrade 3>&1 1>&4 4>&- || code=$?
    echo "$code" > "$status"
  } | show_progress 4>&-
} 4>&1
read -r upgraded < "$status"
rm -f "$status"
[ "$upgraded" -eq 0 ] || { echo "bake-patch: apt-get dist-upgrade failed ($upgraded)" >&2; exit "$upgraded"; }

newest=$(linux-version list | linux-version sort | tail -n 1)
if [ ! -e "/boot/initrd.img-$newest" ]; then
  echo "bake-progress: making the initramfs of $newest"
  update-initramfs -c -k "$newest"
fi
kernels_after=$(linux-version list | linux-version sort | tr '\n' ' ')
if [ -e "$grub_cfg.bake-upgrading" ]; then
  trap - EXIT
  grub_after=$(dpkg-query -W -f='${Version}' grub-pc grub-common 2>/dev/null || true)
  if [ "$kernels_after" = "$kernels_before" ] && [ "$grub_after" = "$grub_before" ]; then
    mv "$grub_cfg.bake-upgrading" "$grub_cfg"
  else
    echo "bake-progress: writing the boot menu"
    rm -f "$grub_cfg.bake-upgrading"
    update-grub
  fi
fi
apt-get clean
echo "bake-patch: installed kernels: $kernels_after"
