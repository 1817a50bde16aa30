#!/bin/sh
# Buildroot post-build hook: complete the initramfs layout hv-init expects
# (the default skeleton already has /dev /proc /sys /run /tmp /mnt).
set -e
TARGET_DIR="$1"
mkdir -p "$TARGET_DIR/data"
