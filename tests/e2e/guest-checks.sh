#!/bin/sh
# The second-level guest's checks. Each prints one line
#   E2E-CHECK <name>: ok|FAIL|SKIP <detail>
# that the harness (tests/e2e/run.sh) asserts. What to expect comes from the
# kernel command line: e2e.variant, e2e.cpus, e2e.mem (MiB), e2e.disk and
# e2e.rng (1 when microvm was given --disk / --entropy), e2e.token (the text
# the harness wrote into /hello.txt on the disk image), e2e.snapshot (1: the
# VMM snapshots the guest at its E2E-SNAPSHOT-NOW line and a new VMM process
# restores it).
PATH=/bin
export PATH
mount -t sysfs sysfs /sys

param() {
    for word in $(cat /proc/cmdline); do
        case "$word" in "e2e.$1="*) echo "${word#*=}"; return ;; esac
    done
}
VARIANT=$(param variant)
CPUS=$(param cpus)
MEM_MIB=$(param mem)
DISK=$(param disk)
RNG=$(param rng)
TOKEN=$(param token)

report() { echo "E2E-CHECK $1: $2"; }

read -r up _ < /proc/uptime
report init "ok /init of the $VARIANT guest running, kernel $(uname -r), uptime ${up}s"

# vCPUs.
n=$(nproc)
online=$(cat /sys/devices/system/cpu/online)
if [ "$n" = "$CPUS" ]; then
    report nproc "ok nproc=$n (online $online)"
elif dmesg | grep -q 'ACPI MADT or MP tables are not detected'; then
    # Debian's kernel is built without X86_MPPARSE: it ignores an MP table
    # and finds the other CPUs only in the ACPI MADT.
    report nproc "SKIP not yet supported by microvm: no ACPI MADT (Debian's kernel has no X86_MPPARSE, so an MP table is ignored), the kernel runs on one CPU (nproc=$n, expected $CPUS)"
else
    report nproc "FAIL nproc=$n, expected $CPUS (online $online)"
fi

# Memory: MemTotal is the RAM the kernel manages, a little less than what the
# VMM gave it (the kernel image and early reservations are not counted).
total_kb=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
max_kb=$((MEM_MIB * 1024))
min_kb=$((MEM_MIB * 1024 * 80 / 100))
if [ "$total_kb" -le "$max_kb" ] && [ "$total_kb" -ge "$min_kb" ]; then
    report memtotal "ok MemTotal=${total_kb} kB for ${MEM_MIB} MiB (expected ${min_kb}..${max_kb} kB)"
else
    report memtotal "FAIL MemTotal=${total_kb} kB for ${MEM_MIB} MiB (expected ${min_kb}..${max_kb} kB)"
fi

# ACPI: Debian's kernel finds virtio-mmio devices only through the DSDT, and
# powers off only through ACPI.
if [ -e /sys/firmware/acpi/tables/DSDT ]; then
    ACPI=1
    echo "E2E-INFO acpi: present ($(ls /sys/firmware/acpi/tables | tr '\n' ' '))"
else
    ACPI=0
    echo "E2E-INFO acpi: absent"
fi

# The kernel's own modules, in dependency order (resolved by the harness from
# modules.dep).
loaded=""
failed=""
for ko in $(cat /lib/modules/modules.list); do
    if out=$(insmod "/lib/modules/$ko" 2>&1); then
        loaded="$loaded ${ko%.ko}"
    else
        failed="$failed ${ko%.ko} ($out)"
    fi
done
if [ -z "$failed" ]; then
    report modules "ok loaded$loaded"
else
    report modules "FAIL could not load:$failed; loaded:$loaded"
fi

# Snapshot and restore (e2e.snapshot=1): the VMM writes a snapshot at the
# marker line and exits; a new VMM process restores it and the guest goes on
# from the sleep, so the lines below and every later check come from the
# restored VM. Its clock must not have gone backwards.
if [ "$(param snapshot)" = 1 ]; then
    before=$(date +%s)
    echo "E2E-SNAPSHOT-NOW at $before"
    sleep 2
    after=$(date +%s)
    report snapshot "ok the guest went on after the restore in a new microvm process (date $before before the snapshot, $after after)"
    if [ "$after" -ge "$before" ]; then
        report clock "ok the clock did not jump backwards across the restore ($before -> $after)"
    else
        report clock "FAIL the clock jumped backwards across the restore ($before -> $after)"
    fi
fi

# wait_until COMMAND...: runs COMMAND every tenth of a second, up to 5 s,
# until it succeeds. Without ACPI tables no virtio-mmio device can appear:
# no waiting then.
DEVICE_WAIT=50
[ "$ACPI" = 1 ] || DEVICE_WAIT=0
wait_until() {
    i=0
    while ! "$@" && [ "$i" -lt "$DEVICE_WAIT" ]; do
        sleep 0.1
        i=$((i + 1))
    done
    "$@"
}
has_virtio_rng() { grep -q virtio /sys/class/misc/hw_random/rng_available 2>/dev/null; }

no_device() {
    # $1 check name, $2 what is missing
    if [ "$ACPI" = 0 ]; then
        report "$1" "SKIP not yet supported by microvm: no ACPI tables, so Debian's kernel (no VIRTIO_MMIO_CMDLINE_DEVICES) cannot find the virtio-mmio $2"
    else
        report "$1" "FAIL ACPI tables present but no $2 appeared; virtio lines from the kernel log: $(dmesg | grep -i -E 'virtio|LNRO' | tail -n 5 | tr '\n' '|')"
    fi
}

# Block device: mount the ext4 image, read the harness's file, write ours.
if [ "$DISK" = 1 ]; then
    if wait_until test -b /dev/vda; then
        mkdir -p /mnt
        if out=$(mount -t ext4 /dev/vda /mnt 2>&1); then
            got=$(cat /mnt/hello.txt 2>&1)
            if [ "$got" = "$TOKEN" ]; then
                report disk-read "ok /dev/vda mounted (ext4), /hello.txt reads back '$got'"
            else
                report disk-read "FAIL /hello.txt reads '$got', expected '$TOKEN'"
            fi
            if echo "written by the $VARIANT guest: $TOKEN" > "/mnt/from-guest-$VARIANT.txt" && sync; then
                echo "E2E-INFO disk-write: wrote /from-guest-$VARIANT.txt"
            else
                echo "E2E-INFO disk-write: writing /from-guest-$VARIANT.txt failed"
            fi
            umount /mnt || echo "E2E-INFO disk-write: umount failed"
        else
            report disk-read "FAIL mount -t ext4 /dev/vda: $out"
        fi
    else
        no_device disk-read "block device (/dev/vda)"
    fi
else
    report disk-read "SKIP not yet supported by microvm: no --disk option"
fi

# Entropy device: /dev/hwrng backed by virtio-rng gives bytes.
if [ "$RNG" = 1 ]; then
    if wait_until has_virtio_rng; then
        current=$(cat /sys/class/misc/hw_random/rng_current)
        bytes=$(timeout 10 dd if=/dev/hwrng bs=32 count=1 2>/dev/null | od -An -tx1 | tr -d ' \n')
        if [ "${#bytes}" = 64 ] && [ "$bytes" != "0000000000000000000000000000000000000000000000000000000000000000" ]; then
            report hwrng "ok 32 bytes from /dev/hwrng ($current): $bytes"
        else
            report hwrng "FAIL read '$bytes' from /dev/hwrng ($current), expected 32 non-zero bytes"
        fi
    else
        no_device hwrng "entropy device (no virtio rng in /sys/class/misc/hw_random/rng_available)"
    fi
else
    report hwrng "SKIP not yet supported by microvm: no --entropy option"
fi

# End the VM: ACPI power-off when the VMM provides ACPI (or, with
# e2e.end=reboot, a reboot through the FADT reset register, the command line
# having no reboot=k), otherwise a reset through the i8042 (reboot=k).
if [ "$ACPI" = 1 ] && [ "$(param end)" = reboot ]; then
    echo "E2E-END $VARIANT: reboot"
    reboot -f
elif [ "$ACPI" = 1 ]; then
    echo "E2E-END $VARIANT: poweroff"
    poweroff -f
else
    echo "E2E-END $VARIANT: reboot (no ACPI: poweroff not yet supported by microvm)"
    reboot -f
fi
sleep 5
echo "E2E-END $VARIANT: still running 5 s after power-off/reboot"
