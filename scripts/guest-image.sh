#!/usr/bin/env bash
# Makes a ready-to-boot Linux guest for microvm from Debian packages, in one
# command, and prints the microvm command line that boots it:
#
#   OUT/vmlinuz        Debian's kernel as shipped (a bzImage)
#   OUT/vmlinux        the ELF vmlinux extracted from it
#   OUT/initrd.cpio    an initramfs: static busybox and the kernel's own
#                      virtio-mmio, virtio-blk, virtio-rng, virtio-net,
#                      virtio-vsock and ext4 modules (with their dependencies, from a
#                      modules.dep made with depmod); its /init loads them,
#                      mounts root= (default /dev/vda) and switches to it
#   OUT/rootfs.ext4    an ext4 root filesystem (mke2fs -d, no loop mount)
#                      with a busybox userland: busybox init mounts /proc,
#                      /sys, /dev, /dev/pts, /tmp and /run, brings up the
#                      loopback and any ethN (udhcpc), runs /etc/rc.local if
#                      present and gives a root shell on the console;
#                      `poweroff` ends the VM
#   OUT/image.env      what was made, for scripts (KVER, CMDLINE, ...)
#
# Usage: scripts/guest-image.sh [OPTIONS]
#   --out DIR               where the files go (default: target/guest-image)
#   --kernel-package PKG    the Debian kernel (default: linux-image-cloud-amd64)
#   --size MIB              size of rootfs.ext4 (default: 64)
#   --add SRC:DEST          copy the file SRC to DEST in the root filesystem
#                           (repeatable; DEST /etc/rc.local runs at boot)
#   --quiet                 no progress lines, only the command line
#   -h, --help              this text
#
# Needs a Debian-like system (apt-get, dpkg-deb, mke2fs, cpio). Packages are
# downloaded with `apt-get download` and unpacked under target/debian
# (KINDLING_CACHE), never installed; tools that are missing (cpio, the
# kernel's decompressor) are installed with apt-get when run as root.
set -euo pipefail
# DK_NAME (and DK_QUIET) are read by lib/debian.sh.
# shellcheck disable=SC2034
DK_NAME=guest-image
# shellcheck source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/lib/debian.sh"

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }

OUT=$DK_REPO/target/guest-image
KERNEL_PKG=linux-image-cloud-amd64
SIZE_MIB=64
ADDS=()
while [ $# -gt 0 ]; do
    case $1 in
        --out) OUT=${2:?--out needs a directory}; shift 2 ;;
        --kernel-package) KERNEL_PKG=${2:?--kernel-package needs a package name}; shift 2 ;;
        --size) SIZE_MIB=${2:?--size needs MiB}; shift 2 ;;
        --add) ADDS+=("${2:?--add needs SRC:DEST}"); shift 2 ;;
        --quiet) DK_QUIET=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) dk_die "unknown argument '$1' (see --help)" ;;
    esac
done
case $SIZE_MIB in '' | *[!0-9]*) dk_die "--size $SIZE_MIB is not a number of MiB" ;; esac
[ "$SIZE_MIB" -ge 8 ] || dk_die "--size $SIZE_MIB is too small (at least 8 MiB)"
for add in "${ADDS[@]}"; do
    case $add in
        *:/*) [ -f "${add%%:*}" ] || dk_die "--add $add: no file ${add%%:*}" ;;
        *) dk_die "--add $add is not SRC:/DEST (DEST an absolute path in the guest)" ;;
    esac
done
command -v mke2fs > /dev/null || dk_ensure_packages e2fsprogs
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

dk_fetch_busybox
dk_fetch_kernel "$KERNEL_PKG"
dk_say "kernel $KVER ($KPKG)"

# ---------------------------------------------------------------- kernel

cp "$VMLINUZ" "$OUT/vmlinuz.tmp" && mv "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"
if [ ! -f "$OUT/vmlinux" ] || [ ! -f "$OUT/vmlinux.compression" ] || [ "$VMLINUZ" -nt "$OUT/vmlinux" ]; then
    dk_say "extracting vmlinux from vmlinuz"
    dk_extract_vmlinux "$VMLINUZ" "$OUT/vmlinux"
    echo "$COMPRESSION" > "$OUT/vmlinux.compression"
fi
COMPRESSION=$(cat "$OUT/vmlinux.compression")

# ---------------------------------------------------------------- initramfs

WORK=$OUT/.work
rm -rf "$WORK"
mkdir -p "$WORK"
INITRD_ROOT=$WORK/initrd
dk_busybox_root "$INITRD_ROOT"
# What microvm's devices need (virtio-mmio transport, disks, entropy, the
# network, vsock) and the root filesystem's driver. Modules the kernel builds
# in are skipped; optional ones ('?') may be missing.
dk_copy_modules "$INITRD_ROOT/lib/modules" "$INITRD_ROOT/lib/modules/load.list" \
    virtio_mmio virtio_blk ext4 '?virtio_rng' '?virtio_net' '?vmw_vsock_virtio_transport'
MODULES=$(sed 's/\.ko$//' "$INITRD_ROOT/lib/modules/load.list" | tr '\n' ' ' | sed 's/ $//')
cat > "$INITRD_ROOT/init" << 'EOF'
#!/bin/sh
# The initramfs's /init (made by scripts/guest-image.sh): loads the modules
# in /lib/modules/load.list, mounts root= (default /dev/vda; rootfstype=,
# rootflags=, ro/rw as for the kernel) and switches to init= (default
# /sbin/init). On failure it says why and gives a shell.
PATH=/bin
export PATH
mount -t devtmpfs devtmpfs /dev 2> /dev/null
[ -e /proc/self ] || mount -t proc proc /proc
mount -t sysfs sysfs /sys
# Without /dev/console in the archive the kernel started us with no stdio.
[ -t 1 ] || exec < /dev/console > /dev/console 2>&1
rescue() {
    echo "initramfs: $*; here is a shell (exit reboots)"
    setsid cttyhack sh
    reboot -f
}
root=/dev/vda fstype=ext4 flags= mode=ro init=/sbin/init
for arg in $(cat /proc/cmdline); do
    case $arg in
        root=*) root=${arg#root=} ;;
        rootfstype=*) fstype=${arg#rootfstype=} ;;
        rootflags=*) flags=${arg#rootflags=} ;;
        ro) mode=ro ;;
        rw) mode=rw ;;
        init=*) init=${arg#init=} ;;
    esac
done
for ko in $(cat /lib/modules/load.list); do
    out=$(insmod "/lib/modules/$ko" 2>&1) || echo "initramfs: insmod $ko: $out"
done
i=0
while [ ! -b "$root" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
[ -b "$root" ] || rescue "no root device $root after 5 s (is there a --disk? virtio devices: $(ls /sys/bus/virtio/devices 2> /dev/null | tr '\n' ' '))"
mkdir -p /newroot
out=$(mount -t "$fstype" -o "$mode${flags:+,$flags}" "$root" /newroot 2>&1) \
    || rescue "cannot mount $root ($fstype, $mode${flags:+,$flags}): $out"
[ -x "/newroot$init" ] || [ -L "/newroot$init" ] || rescue "no $init on $root"
mount --move /dev /newroot/dev
umount /sys /proc
exec switch_root /newroot "$init"
EOF
chmod 755 "$INITRD_ROOT/init"
dk_mkcpio "$INITRD_ROOT" "$OUT/initrd.cpio"

# ---------------------------------------------------------------- root filesystem

ROOT=$WORK/rootfs
dk_busybox_root "$ROOT"
rm -f "$ROOT/dev/console"
mkdir -p "$ROOT"/etc/init.d "$ROOT"/usr/share/udhcpc "$ROOT"/var/log
cat > "$ROOT/etc/inittab" << 'EOF'
# busybox init (made by scripts/guest-image.sh)
::sysinit:/etc/init.d/rcS
# A root shell on the console, with the console as its controlling terminal
# (so Ctrl-C interrupts the command running in it); respawned on exit.
::respawn:/bin/cttyhack /bin/sh -l
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/sync
::shutdown:/bin/umount -a -r
::shutdown:/bin/mount -o remount,ro /
EOF
cat > "$ROOT/etc/init.d/rcS" << 'EOF'
#!/bin/sh
# System start-up (made by scripts/guest-image.sh).
PATH=/bin:/sbin
export PATH
mount -t proc proc /proc
mount -t sysfs sysfs /sys
grep -q '^[^ ]* /dev ' /proc/mounts || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
hostname -F /etc/hostname
# Network: the loopback, and DHCP on every ethN in the background.
ip link set lo up
for dev in /sys/class/net/eth*; do
    [ -e "$dev" ] || continue
    ip link set "${dev##*/}" up
    udhcpc -b -q -i "${dev##*/}" -s /usr/share/udhcpc/default.script > /dev/null 2>&1
done
[ -x /etc/rc.local ] && /etc/rc.local
exit 0
EOF
cat > "$ROOT/usr/share/udhcpc/default.script" << 'EOF'
#!/bin/sh
# udhcpc's hook (made by scripts/guest-image.sh): configures the interface,
# the default route and /etc/resolv.conf from the lease.
case $1 in
    deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
    bound | renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
        for r in $router; do ip route add default via "$r" dev "$interface"; break; done
        : > /etc/resolv.conf
        for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
        ;;
esac
exit 0
EOF
echo kindling > "$ROOT/etc/hostname"
echo 'root::0:0:root:/root:/bin/sh' > "$ROOT/etc/passwd"
echo 'root:x:0:' > "$ROOT/etc/group"
cat > "$ROOT/etc/profile" << 'EOF'
export PATH=/bin:/sbin
export HOME=/root
PS1='\h:\w# '
echo "Kindling guest (busybox). 'poweroff' ends the VM."
EOF
chmod 755 "$ROOT/etc/init.d/rcS" "$ROOT/usr/share/udhcpc/default.script"
for add in "${ADDS[@]}"; do
    src=${add%%:*}
    dest=$ROOT${add#*:}
    mkdir -p "$(dirname "$dest")"
    cp "$src" "$dest"
done
rm -f "$OUT/rootfs.ext4"
mke2fs -q -F -t ext4 -L kindling-root -E root_owner=0:0 -d "$ROOT" "$OUT/rootfs.ext4" "${SIZE_MIB}M" > "$WORK/mke2fs.log" 2>&1 \
    || dk_die "mke2fs -d failed" "$WORK/mke2fs.log"
rm -rf "$WORK"

# ---------------------------------------------------------------- the command line

CMDLINE="console=ttyS0 reboot=k panic=1 pci=off root=/dev/vda rw"
MICROVM_BIN=${CARGO_TARGET_DIR:-$DK_REPO/target}/x86_64-unknown-linux-gnu/release/examples/microvm
# A path for the printed command: relative to the current directory when
# under it, quoted for the shell when it needs to be.
rel() { case $1 in "$PWD"/*) printf '%q' "${1#"$PWD"/}" ;; *) printf '%q' "$1" ;; esac; }
cat > "$OUT/image.env" << EOF
KVER='$KVER'
KERNEL_PACKAGE='$KPKG'
COMPRESSION='$COMPRESSION'
MODULES='$MODULES'
CMDLINE='$CMDLINE'
EOF
dk_say "made $(rel "$OUT"): vmlinuz, vmlinux ($COMPRESSION payload), initrd.cpio (modules: $MODULES), rootfs.ext4 (${SIZE_MIB} MiB)"
DISK_ARG=$(rel "$OUT/rootfs.ext4")
# A comma in the path: microvm's unambiguous form.
case $DISK_ARG in *,*) DISK_ARG=path=$DISK_ARG ;; esac
ARGS="--initrd $(rel "$OUT/initrd.cpio") --disk $DISK_ARG --entropy --cpus 2 --memory 256 --cmdline \"$CMDLINE\""
echo "Boot it (Ctrl-A x quits, 'poweroff' in the guest ends the VM):"
echo "  $(rel "$MICROVM_BIN") --kernel $(rel "$OUT/vmlinux") $ARGS"
if [ -e /sys/module/kvm_pvm ]; then
    echo "This host's /dev/kvm (kvm_pvm) cannot run it directly; boot it in the nested runner (docs/nested-kvm.md):"
    echo "  $(rel "$DK_REPO/scripts/nested-run.sh") --kernel $(rel "$OUT/vmlinux") --initrd $(rel "$OUT/initrd.cpio") --disk $(rel "$OUT/rootfs.ext4") -- --entropy --cpus 2 --memory 256 --cmdline \"$CMDLINE\""
fi
