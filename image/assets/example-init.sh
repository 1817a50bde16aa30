#!/bin/busybox sh
# PID 1 of the example guest: mount the kernel filesystems, say hello, report
# what the VMM gave us, then idle until asked to power off.

/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

power_off() {
	echo "example guest: powering off"
	sync
	poweroff -f
}
# Signals from the host's clean shutdown request: SIGINT is what the kernel
# sends PID 1 for Ctrl-Alt-Del once we switch that to "signal init" below;
# SIGTERM/SIGUSR2/SIGPWR are what init systems conventionally use.
trap power_off INT TERM USR2 PWR
# Ctrl-Alt-Del would otherwise reboot immediately, which the VMM reports as a
# reboot request instead of a clean power-off.
echo 0 >/proc/sys/kernel/ctrl-alt-del

ip link set lo up 2>/dev/null

list() {
	out=$(ls "$1" 2>/dev/null | grep -v '^lo$' | tr '\n' ' ')
	echo "${out% }" | sed 's/^$/none/'
}
cpus=$(grep -c '^processor' /proc/cpuinfo)
mem=$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)
rng=$(cat /sys/class/misc/hw_random/rng_current 2>/dev/null || echo none)

echo "Hello from the example guest"
echo "example guest: cpus=$cpus memory=${mem}MiB block=[$(list /sys/block)] net=[$(list /sys/class/net)] hwrng=$rng"

# `wait` (unlike a foreground sleep) returns as soon as a trapped signal
# arrives, so the trap runs without delay.
while :; do
	sleep 3600 &
	wait $!
done
