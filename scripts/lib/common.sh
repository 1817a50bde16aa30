# Shared helpers for the entry-point scripts. Source it; do not run it.

# Debian packages the build and the tests need. Kept in one place so that
# scripts/build, scripts/test and scripts/kernel agree on a fresh machine.
HV_BUILD_PACKAGES=(
    linux-source-6.12 flex bison bc libelf-dev libssl-dev cpio xz-utils make gcc
    busybox-static systemd-boot-efi syslinux syslinux-common pxelinux mtools
)
HV_TEST_PACKAGES=(
    qemu-system-x86 ovmf ipxe-qemu dosfstools gdisk e2fsprogs minisign acpica-tools
)
# scripts/sign-config (and the signed-config tests) sign with minisign.
HV_SIGN_PACKAGES=(minisign)

HV_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HV_CACHE=${HV_CACHE:-$HOME/.cache/hv}
HV_MUSL=x86_64-unknown-linux-musl

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Installs whichever of the named Debian packages are missing. The package
# lists are refreshed only when something is actually missing, so a warm
# machine pays nothing.
ensure_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing Debian packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# rust-toolchain.toml names the musl target; rustup installs it on first use,
# but only when a cargo command runs inside the repo, so ask for it early.
ensure_rust() {
    command -v cargo >/dev/null || die "cargo not found: install Rust with rustup (https://rustup.rs)"
    (cd "$HV_ROOT" && rustup target list --installed | grep -qx "$HV_MUSL") ||
        (cd "$HV_ROOT" && rustup target add "$HV_MUSL" >&2)
}

# Runs a named stage and reports how long it took.
stage() {
    local name=$1; shift
    local t0=$SECONDS
    log "$name"
    "$@"
    log "$name: done in $((SECONDS - t0)) s"
}

# Each kernel build directory takes a few hundred MB and a fragment change
# makes a new one. Keeps the directory in use (given as the bzImage path,
# and marked as used now, since a cache hit does not touch it) and the most
# recently used other one, so switching back one commit stays instant; leaves
# alone any directory whose lock another build holds.
prune_kernel_cache() {
    local profile=$1 in_use
    in_use=$(dirname "$2")
    touch "$in_use"
    local dirs dir
    mapfile -t dirs < <(ls -1dt "$HV_CACHE/kernel/$profile"-*/ 2>/dev/null)
    local kept_other=0
    for dir in "${dirs[@]}"; do
        dir=${dir%/}
        [ "$dir" -ef "$in_use" ] && continue
        if [ $kept_other -eq 0 ]; then
            kept_other=1
            continue
        fi
        (
            exec 9>"$dir.lock"
            flock -n 9 || exit 0
            log "removing old kernel build $dir"
            rm -rf "$dir"
            rm -f "$dir.lock"
        )
    done
}
