#!/usr/bin/env bash
# Boots the host kernel in QEMU with the VMM and a busybox guest; see README.md.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
RIG="${RIG_DIR:-/tmp/vmm-rig}"
SCENARIOS="${*:-poweroff reboot sigterm stubborn virtio}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/tgt/vmm}"

HOST_BZ="${HOST_BZ:-$("$REPO/scripts/kernel" host | tail -n1)}"
GUEST_BZ="${GUEST_BZ:-$("$REPO/scripts/kernel" guest | tail -n1)}"
(cd "$REPO" && cargo build --release -p vmm --target x86_64-unknown-linux-musl >&2)
VMM_BIN="$CARGO_TARGET_DIR/x86_64-unknown-linux-musl/release/vmm"

rm -rf "$RIG/guest" "$RIG/host"
mkdir -p "$RIG"

# --- guest initramfs: busybox init, reports, then does what the scenario says.
G="$RIG/guest"
mkdir -p "$G"/{bin,sbin,etc,proc,sys,dev}
cp /bin/busybox "$G/bin/busybox"
for app in $(/bin/busybox --list); do [ "$app" = busybox ] || ln -sf busybox "$G/bin/$app"; done
ln -s ../bin/busybox "$G/sbin/init"
ln -s bin/busybox "$G/init"
cat > "$G/etc/inittab" <<'INITTAB'
::sysinit:/bin/sh /etc/rc
::ctrlaltdel:/bin/sh -c 'echo rig-guest: got ctrl-alt-del; poweroff -f'
INITTAB
cat > "$G/etc/rc" <<'RC'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "rig-guest: Hello, up $(cut -d' ' -f1 /proc/uptime) s, $(grep -c ^processor /proc/cpuinfo) cpus, date $(date -u +%Y-%m-%dT%H:%M:%S)"
action=$(sed -n 's/.*rig.action=\([a-z]*\).*/\1/p' /proc/cmdline)
case "$action" in
  poweroff) poweroff -f ;;
  reboot) reboot -f ;;
  stubborn) echo "::ctrlaltdel:/bin/echo rig-guest: ignoring ctrl-alt-del" > /etc/inittab; kill -HUP 1 ;;
  virtio)
    echo "rig-guest: vda $(cat /sys/block/vda/size 2>&1) sectors, serial $(cat /sys/block/vda/serial 2>&1)"
    echo "rig-guest: vda says: $(head -c 11 /dev/vda 2>&1)"
    echo "rig-guest: hwrng $(cat /sys/class/misc/hw_random/rng_current 2>&1): $(head -c 8 /dev/hwrng 2>&1 | od -An -tx1)"
    poweroff -f ;;
esac
echo "rig-guest: ready"
RC
chmod +x "$G/etc/rc"
(cd "$G" && find . | cpio -o -H newc --owner=0:0 --quiet | gzip -9) > "$RIG/guest.cpio.gz"

# --- host initramfs: busybox + vmm + guest, runs the scenarios.
H="$RIG/host"
mkdir -p "$H"/{bin,etc,proc,sys,dev,tmp,guest}
cp /bin/busybox "$H/bin/busybox"
cp "$VMM_BIN" "$H/bin/vmm"
cp "$GUEST_BZ" "$H/guest/bzImage"
cp "$RIG/guest.cpio.gz" "$H/guest/initrd.img"
# The host kernel may lack binfmt_script: busybox init runs the rig script
# through sh.
ln -s bin/busybox "$H/init"
echo "::sysinit:/bin/busybox sh /etc/rig.sh" > "$H/etc/inittab"
cat > "$H/etc/rig.sh" <<INIT
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
echo "rig: host up \$(cut -d' ' -f1 /proc/uptime) s, vmm \$(stat -c %s /bin/vmm) bytes"
printf '[machine]\nvcpus = 2\nmemory_mib = 256\n[boot]\nkernel = "bzImage"\ninitrd = "initrd.img"\ncmdline = "console=ttyS0 panic=-1 no_timer_check rig.action=virtio"\n[[disk]]\npath = "/tmp/disk.img"\n[rng]\nenabled = true\n' > /guest/virtio.toml
echo "hello disk!" > /tmp/disk.img; dd if=/dev/zero bs=1M count=8 >> /tmp/disk.img 2>/dev/null
run() { # scenario expected-exit
  sc=\$1; exp=\$2
  t0=\$(cut -d' ' -f1 /proc/uptime)
  if [ "\$sc" = virtio ]; then
    timeout -s KILL ${RIG_VMM_TIMEOUT:-120} /bin/vmm --guest /guest/virtio.toml --uid 1000 --gid 1000 > /tmp/\$sc.log 2>&1 &
  else
    timeout -s KILL ${RIG_VMM_TIMEOUT:-120} /bin/vmm --kernel /guest/bzImage --initrd /guest/initrd.img --mem 256 --vcpus 2 \
      --uid 1000 --gid 1000 --shutdown-timeout 3 \
      --cmdline "console=ttyS0 panic=-1 no_timer_check rig.action=\$sc" > /tmp/\$sc.log 2>&1 &
  fi
  pid=\$!
  if [ "\$sc" = sigterm ] || [ "\$sc" = stubborn ]; then
    while ! grep -q "rig-guest: ready" /tmp/\$sc.log 2>/dev/null; do
      kill -0 \$pid 2>/dev/null || break; sleep 0.2; done
    kill -TERM \$pid
  fi
  wait \$pid; rc=\$?
  t1=\$(cut -d' ' -f1 /proc/uptime)
  sed 's/^/  | /' /tmp/\$sc.log
  v=FAIL; [ \$rc = \$exp ] && v=PASS
  echo "rig: \$sc exit=\$rc expected=\$exp \$v (\$t0 -> \$t1 s)" | tee -a /tmp/summary
}
for sc in $SCENARIOS; do
  case \$sc in poweroff|sigterm|virtio) run \$sc 0;; reboot) run \$sc 3;; stubborn) run \$sc 5;; esac
done
echo "rig: summary"; cat /tmp/summary
poweroff -f
INIT
(cd "$H" && find . | cpio -o -H newc --owner=0:0 --quiet | gzip -1) > "$RIG/host.cpio.gz"

timeout "${RIG_TIMEOUT:-900}" qemu-system-x86_64 -accel tcg -cpu max -m 2048 -smp 2 -nographic \
  -no-reboot -kernel "$HOST_BZ" -initrd "$RIG/host.cpio.gz" \
  -append 'console=ttyS0 rdinit=/init panic=-1' | tee "$RIG/console.log"
