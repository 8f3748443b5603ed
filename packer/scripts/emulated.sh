#!/bin/sh
# First on a build machine that QEMU emulates (TCG, the local target without KVM). TCG keeps the
# code it has translated by virtual address: with address space layout randomisation every new
# process maps ld.so and its libraries somewhere else and has all of it translated again, about
# 45 ms per exec here, 9 ms without. A build execs thousands of times (maintainer scripts,
# triggers, mkinitramfs), so randomisation is turned off in this machine's running kernel only:
# nothing is written to the disk, and the image boots with its own setting (harden.sh sets 2; a
# suite checks it on the verification machine).
set -eu
sysctl -q -w kernel.randomize_va_space=0
echo "bake-emulated: address space randomisation off in the build machine's running kernel"
