#!/bin/sh
# /init of the first-level guest: Debian's kernel under QEMU TCG with
# -cpu EPYC,+svm. Loads the kvm modules, checks /dev/kvm, runs the second
# level (level2-run.sh) and powers off. Everything it prints goes to the
# serial console that the harness captures:
#   E2E-L1-INIT uptime_ms=<ms>       /init started
#   E2E-L1 kvm: ok|FAIL <detail>
#   E2E-L1 disk-in|disk-out: ok|FAIL <detail>
#   E2E-L1-DONE uptime_ms=<ms>
PATH=/bin
export PATH
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs -o size=1g tmpfs /tmp
uptime_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }
echo "E2E-L1-INIT uptime_ms=$(uptime_ms) kernel=$(uname -r)"
. /e2e/config

finish() {
    echo "E2E-L1-DONE uptime_ms=$(uptime_ms)"
    sync
    poweroff -f
    sleep 10
    # Still here: /init exiting panics the kernel, and panic=-1 with QEMU's
    # -no-reboot ends the first level.
    exit 1
}

insmod_list() {
    for ko in $1; do
        out=$(insmod "/lib/modules/$ko" 2>&1) || echo "E2E-L1-INFO insmod $ko: $out"
    done
}

# kvm: irqbypass, kvm, then the vendor module for this CPU.
insmod_list "$(cat /lib/modules/kvm.list)"
if grep -q -w svm /proc/cpuinfo; then
    insmod_list kvm-amd.ko
elif grep -q -w vmx /proc/cpuinfo; then
    insmod_list kvm-intel.ko
fi
if [ -c /dev/kvm ]; then
    echo "E2E-L1 kvm: ok /dev/kvm present (modules:$(awk '/^kvm|^irqbypass/ { printf " %s", $1 }' /proc/modules))"
else
    echo "E2E-L1 kvm: FAIL no /dev/kvm after loading the kvm modules; cpu flags svm/vmx: $(grep -o -w -E 'svm|vmx' /proc/cpuinfo | sort -u | tr '\n' ' ')"
    dmesg | grep -i -E 'kvm|svm' | sed 's/^/E2E-L1-DMESG| /'
    finish
fi

# The disk image travels in and out through a QEMU virtio-blk disk.
if [ "$L2_DISK" = 1 ]; then
    insmod_list "$(cat /lib/modules/virtio-pci.list)"
    i=0
    while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    if dd if=/dev/vda of="$L2_DIR/disk.img" bs=1M 2>/dev/null; then
        echo "E2E-L1 disk-in: ok copied /dev/vda to $L2_DIR/disk.img ($(wc -c < "$L2_DIR/disk.img") bytes)"
    else
        echo "E2E-L1 disk-in: FAIL could not read /dev/vda"
    fi
fi

# Quiet the first level's kernel so its messages do not interleave with the
# transcript; they are printed after each run instead.
echo 1 > /proc/sys/kernel/printk
dmesg -c > /dev/null
export MICROVM L2_DIR OUT_DIR L2_TIMEOUT L2_DISK L2_RNG L2_SNAPSHOT L2_TOKEN L2_CPUS L2_MEM_MIB L2_CMDLINE_EXTRA
sh /e2e/level2-run.sh
dmesg -c | sed 's/^/E2E-L1-DMESG| /'

if [ "$L2_DISK" = 1 ]; then
    if dd if="$L2_DIR/disk.img" of=/dev/vda bs=1M conv=fsync 2>/dev/null; then
        echo "E2E-L1 disk-out: ok copied $L2_DIR/disk.img back to /dev/vda"
    else
        echo "E2E-L1 disk-out: FAIL could not write /dev/vda"
    fi
fi
finish
