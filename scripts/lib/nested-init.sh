#!/bin/sh
# /init of the first level of scripts/nested-run.sh: Debian's kernel in QEMU
# (TCG, -cpu EPYC,+svm). Its console is the second serial port, which QEMU
# writes to the log file; the first serial port (ttyS0, QEMU's stdio) is
# microvm's console. It loads the kvm modules, copies the disks in from
# QEMU's virtio disks, runs microvm (or the --script) on ttyS0, copies the
# disks back and powers off. Lines for nested-run.sh, on the log:
#   NESTED-INIT uptime_ms=<ms> kernel=<release>
#   NESTED kvm: ok|FAIL <detail>
#   NESTED disk-in <n>: ok|FAIL <detail>
#   NESTED-STATUS <exit status of microvm or the script>
#   NESTED disk-out <n>: ok|FAIL <detail>
#   NESTED-DONE uptime_ms=<ms>
PATH=/bin
export PATH
mount -t devtmpfs devtmpfs /dev 2> /dev/null
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs -o size=90% tmpfs /tmp
uptime_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }
echo "NESTED-INIT uptime_ms=$(uptime_ms) kernel=$(uname -r)"
# The kernel's live text patching (a static key flipped at run time) can
# hang this emulated machine: QEMU's multi-threaded TCG once kept both CPUs
# on the temporary int3 of a patched site (both stuck in __alloc_pages'
# memory-cgroup branch, just after kindling-jailer made the first memory
# cgroup). The keys a jailed run would flip are flipped now, while nothing
# else runs, and held: the memory cgroup key (on for good once a memory
# cgroup exists) and CFS bandwidth's (on while a cgroup has a CPU quota:
# nested-warm keeps one).
mkdir -p /sys/fs/cgroup
if mount -t cgroup2 cgroup2 /sys/fs/cgroup 2> /dev/null; then
    for c in cpu memory pids; do
        echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control 2> /dev/null
    done
    mkdir -p /sys/fs/cgroup/nested-warm
    echo "100000 100000" > /sys/fs/cgroup/nested-warm/cpu.max 2> /dev/null
fi
# NESTED_MODE (microvm|script), NESTED_SCRIPT, NESTED_DISKS, NESTED_INITRD
. /nested/config

finish() {
    echo "NESTED-DONE uptime_ms=$(uptime_ms)"
    sync
    poweroff -f
    sleep 10
    # Still here: /init exiting panics the kernel, and panic=-1 with QEMU's
    # -no-reboot ends the first level.
    exit 1
}
insmod_list() {
    for ko in $1; do
        out=$(insmod "/lib/modules/$ko" 2>&1) || echo "NESTED-INFO insmod $ko: $out"
    done
}

# kvm: irqbypass, kvm, then the vendor module for this CPU.
insmod_list "$(cat /lib/modules/kvm.list)"
if grep -q -w svm /proc/cpuinfo; then
    insmod_list "$(cat /lib/modules/kvm-amd.list)"
elif grep -q -w vmx /proc/cpuinfo; then
    insmod_list "$(cat /lib/modules/kvm-intel.list)"
fi
# TAP devices for microvm's --net (the list is empty when tun is built in).
insmod_list "$(cat /lib/modules/tun.list)"
if [ -c /dev/kvm ]; then
    echo "NESTED kvm: ok /dev/kvm present (modules:$(awk '/^kvm|^irqbypass/ { printf " %s", $1 }' /proc/modules))"
else
    echo "NESTED kvm: FAIL no /dev/kvm after loading the kvm modules; cpu flags svm/vmx: $(grep -o -w -E 'svm|vmx' /proc/cpuinfo | sort -u | tr '\n' ' ')"
    dmesg | grep -i -E 'kvm|svm' | sed 's/^/NESTED-DMESG| /'
    finish
fi

# The disks travel in and out as QEMU virtio disks: vda, vdb, ...
letters="a b c d e f g h i j k l m n o p"
if [ "$NESTED_DISKS" -gt 0 ]; then
    insmod_list "$(cat /lib/modules/virtio-pci.list)"
fi
n=0
for l in $letters; do
    [ "$n" -lt "$NESTED_DISKS" ] || break
    i=0
    while [ ! -b "/dev/vd$l" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    if dd if="/dev/vd$l" of="/nested/disk$n.img" bs=1M 2> /tmp/dd.err; then
        echo "NESTED disk-in $n: ok copied /dev/vd$l to /nested/disk$n.img ($(wc -c < "/nested/disk$n.img") bytes)"
    else
        echo "NESTED disk-in $n: FAIL could not copy /dev/vd$l: $(cat /tmp/dd.err)"
        echo "NESTED-STATUS 125"
        finish
    fi
    n=$((n + 1))
done

# The arguments, one per line.
set --
while IFS= read -r arg; do set -- "$@" "$arg"; done < /nested/args
if [ "$NESTED_MODE" = microvm ]; then
    n=0
    while [ "$n" -lt "$NESTED_DISKS" ]; do
        set -- "$@" --disk "path=/nested/disk$n.img"
        n=$((n + 1))
    done
    [ "$NESTED_INITRD" = 1 ] && set -- --initrd /nested/initrd "$@"
    set -- /nested/microvm --kernel /nested/kernel "$@"
else
    set -- sh "/nested/$NESTED_SCRIPT" "$@"
fi
# While the second level runs, the first level's kernel logs warnings and
# worse as they come (with the stacks of a lockup, which a level that hangs
# could not print after); the rest of its messages come after.
echo 5 > /proc/sys/kernel/printk
dmesg -c > /dev/null 2>&1
echo "NESTED-RUN $*"
# setsid: microvm gets a session of its own, so ttyS0 never sends a signal
# to this init.
MICROVM=/nested/microvm NESTED_DIR=/nested NESTED_DISKS=$NESTED_DISKS \
    setsid "$@" < /dev/ttyS0 > /dev/ttyS0 2>&1
status=$?
echo "NESTED-STATUS $status"
dmesg -c 2> /dev/null | sed 's/^/NESTED-DMESG| /'

n=0
for l in $letters; do
    [ "$n" -lt "$NESTED_DISKS" ] || break
    if dd if="/nested/disk$n.img" of="/dev/vd$l" bs=1M conv=fsync 2> /tmp/dd.err; then
        echo "NESTED disk-out $n: ok copied /nested/disk$n.img back to /dev/vd$l"
    else
        echo "NESTED disk-out $n: FAIL could not write /dev/vd$l: $(cat /tmp/dd.err)"
    fi
    n=$((n + 1))
done
finish
