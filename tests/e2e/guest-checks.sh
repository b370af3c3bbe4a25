#!/bin/sh
# The second-level guest's checks, installed as /etc/rc.local of the root
# filesystem that scripts/guest-image.sh makes: the image's initramfs has
# loaded the virtio modules and switched to /dev/vda, and its busybox init
# has mounted /proc, /sys and /dev and runs this at the end of start-up.
#
# First thing: tell the VMM's boot timer that the guest reached user space,
# by writing 123 to the first byte at 0xC000_0000 through /dev/mem; microvm
# then logs "Guest-boot-time = ..." on stderr, which the harness reports.
#
# Each check prints one line
#   E2E-CHECK <name>: ok|FAIL|SKIP <detail>
# that the harness (tests/e2e/run.sh) asserts. What to expect comes from the
# kernel command line: e2e.variant, e2e.cpus, e2e.mem (MiB), e2e.token (the
# text the harness put in /hello.txt), e2e.end (poweroff or reboot); in the
# runs with a network also e2e.mac, e2e.ip, e2e.host, e2e.tcp and e2e.vsock
# (BYTES:SHA256 of what the level above sends) and, in the rate-limited
# run, e2e.tcpseq=1 (the TCP transfer one direction after the other), and
# in the bzimage and api runs e2e.dd (bytes of the disk to read with
# O_DIRECT, timed).
#
# Rates are measured here and judged by the harness, from lines
#   E2E-INFO rate <what>: <bytes> bytes in <ms> ms
# (disk: dd from /dev/vda; tcp-rx: what e2e-sock received over TCP).
PATH=/bin:/sbin
export PATH
# Booted with the image's own command line (the interactive run): nothing
# to check here, on to the shell.
grep -q 'e2e\.variant=' /proc/cmdline || exit 0
if devmem 0xc0000000 8 123; then
    echo "E2E-INFO boot-timer: wrote 123 to 0xc0000000"
else
    echo "E2E-INFO boot-timer: devmem write to 0xc0000000 failed"
fi

param() {
    for word in $(cat /proc/cmdline); do
        case "$word" in "e2e.$1="*) echo "${word#*=}"; return ;; esac
    done
}
VARIANT=$(param variant)
CPUS=$(param cpus)
MEM_MIB=$(param mem)
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

# The kernel's own modules, loaded by the image's initramfs (in the order of
# its modules.dep) before it mounted the root filesystem.
missing=""
for m in virtio_mmio virtio_blk virtio_rng; do
    grep -q "^$m " /proc/modules || missing="$missing $m"
done
if [ -z "$missing" ]; then
    report modules "ok loaded by the initramfs:$(awk '/^virtio/ { printf " %s", $1 }' /proc/modules)"
else
    report modules "FAIL not loaded:$missing (loaded: $(awk '{ printf " %s", $1 }' /proc/modules))"
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

# Block device: the root filesystem is /dev/vda (ext4, read-write); read the
# harness's file, write ours.
rootdev=$(awk '$2 == "/" && $1 != "rootfs" { print $1 " " $3 " " substr($4, 1, 2) }' /proc/mounts | tail -n 1)
if [ "$rootdev" = "/dev/vda ext4 rw" ]; then
    got=$(cat /hello.txt 2>&1)
    if [ "$got" = "$TOKEN" ]; then
        report disk-read "ok / is /dev/vda (ext4, rw), /hello.txt reads back '$got'"
    else
        report disk-read "FAIL /hello.txt reads '$got', expected '$TOKEN'"
    fi
    if echo "written by the $VARIANT guest: $TOKEN" > "/from-guest-$VARIANT.txt" && sync; then
        echo "E2E-INFO disk-write: wrote /from-guest-$VARIANT.txt"
    else
        echo "E2E-INFO disk-write: writing /from-guest-$VARIANT.txt failed"
    fi
else
    report disk-read "FAIL / is '$rootdev', expected '/dev/vda ext4 rw'"
fi

# The disk's read rate (e2e.dd bytes with O_DIRECT, so from the device and
# not the page cache, in 64 KiB requests), timed with the guest's clock.
DD_BYTES=$(param dd)
if [ -n "$DD_BYTES" ]; then
    read -r up0 _ < /proc/uptime
    if dd if=/dev/vda of=/dev/null bs=65536 count=$((DD_BYTES / 65536)) iflag=direct 2> /tmp/dd.err; then
        read -r up1 _ < /proc/uptime
        echo "E2E-INFO rate disk: $DD_BYTES bytes in $(awk -v a="$up0" -v b="$up1" 'BEGIN { printf "%d", (b - a) * 1000 }') ms (dd from /dev/vda, O_DIRECT, 64 KiB blocks)"
    else
        echo "E2E-INFO rate disk: dd failed: $(tr '\n' ' ' < /tmp/dd.err)"
    fi
fi

# Entropy device: /dev/hwrng backed by virtio-rng gives bytes.
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

# Network and vsock (e2e.mac= given: the run has a virtio-net device on the
# first level's TAP and a vsock device). The first level serves e2e.tcp's
# and e2e.vsock's data (BYTES:SHA256) over TCP and vsock and keeps what the
# guest sends back (as much random data of its own): the guest checks what
# it received against the sha256 and prints the size and sha256 of what it
# sent (E2E-INFO data <service>), which the harness compares with what the
# first level received.
MAC=$(param mac)
if [ -n "$MAC" ]; then
    IP=$(param ip)
    HOST=$(param host)
    TCP=$(param tcp)
    VSOCK=$(param vsock)
    # ms since boot, for the throughput.
    ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }
    # received NAME FILE T0 SHA256: the check line for FILE, received since
    # T0, which should have SHA256.
    received() {
        t=$(($(ms) - $3))
        [ "$t" -gt 0 ] || t=1
        size=$(wc -c < "$2")
        got=$(sha256sum < "$2" | cut -d' ' -f1)
        rate="$size bytes received and $SENT sent in $t ms ($((size * 2 * 1000 / 1024 / t)) KiB/s both ways)${NOTE:-}"
        if [ "$got" = "$4" ]; then
            report "$1" "ok $rate; what it received matches the first level's data (sha256 ${got%"${got#????????????????}"}...)"
        else
            report "$1" "FAIL $rate; received sha256 $got, expected $4; $(tr '\n' ' ' 2>/dev/null < /tmp/e2e-sock.err)"
        fi
    }
    # outgoing SERVICE BYTES: random data to send in /tmp/e2e-out.bin.
    outgoing() {
        head -c "$2" /dev/urandom > /tmp/e2e-out.bin
        SENT=$2
        echo "E2E-INFO data $1: sent $2 bytes sha256 $(sha256sum < /tmp/e2e-out.bin | cut -d' ' -f1)"
    }

    # The link: eth0 with the MAC the VMM was given, the address from the
    # first level's DHCP server (its static lease for that MAC; the image's
    # rcS ran udhcpc). udhcpc may still be at it in the background.
    has_address() { ip -4 addr show dev eth0 2>/dev/null | grep -q "inet $IP/"; }
    DEVICE_WAIT=100 wait_until has_address
    got_mac=$(cat /sys/class/net/eth0/address 2>/dev/null)
    addr=$(ip -4 addr show dev eth0 2>/dev/null | awk '/inet / { printf "%s%s", sep, $2; sep = " " }')
    if ! grep -q '^virtio_net ' /proc/modules; then
        report net-link "FAIL virtio_net is not loaded (modules: $(awk '{ printf " %s", $1 }' /proc/modules))"
    elif [ "$got_mac" != "$MAC" ]; then
        report net-link "FAIL eth0's MAC is '$got_mac', expected $MAC (interfaces: $(ls /sys/class/net | tr '\n' ' '))"
    elif ! has_address; then
        report net-link "FAIL eth0 ($got_mac) has no address $IP from DHCP after 10 s (addresses: ${addr:-none}; $(cat /sys/class/net/eth0/operstate))"
    else
        report net-link "ok eth0 (virtio_net) has MAC $got_mac and $addr from the first level's DHCP server"
    fi

    # ICMP both ways through the TAP (-A: the next request as soon as the
    # reply came).
    out=$(ping -c 3 -A -W 5 "$HOST" 2>&1)
    if echo "$out" | grep -q ' 0% packet loss'; then
        report net-ping "ok $(echo "$out" | grep -E 'packets transmitted|round-trip' | tr '\n' ' ')"
    else
        report net-ping "FAIL ping $HOST: $(echo "$out" | tail -n 3 | tr '\n' ' ')"
    fi

    # TCP both ways at once on one connection to the first level's listener;
    # the rate of what came in, as e2e-sock timed it (the first level times
    # what went out). Rate-limited (e2e.tcpseq=1), one direction after the
    # other (e2e-sock -R: receive, then send), so that the ACKs of each
    # direction do not queue behind the other's throttled data.
    outgoing tcp "${TCP%%:*}"
    seq=""
    [ "$(param tcpseq)" = 1 ] && seq=-R
    t0=$(ms)
    e2e-sock -t 90 $seq "tcp:$HOST:5001" < /tmp/e2e-out.bin > /tmp/e2e-in.bin 2> /tmp/e2e-sock.err
    received net-tcp /tmp/e2e-in.bin "$t0" "${TCP#*:}"
    echo "E2E-INFO rate tcp-rx: $(sed -n 's/^e2e-sock: received \([0-9]*\) bytes in \([0-9]*\) ms$/\1 bytes in \2 ms/p' /tmp/e2e-sock.err)"

    # vsock: the first level connects to our port 5000 through the device's
    # Unix socket (CONNECT 5000), then we connect to its port 6000 (its
    # listener at <uds>_6000).
    if grep -q '^vmw_vsock_virtio_transport ' /proc/modules; then
        outgoing vsock "${VSOCK%%:*}"
        t0=$(ms)
        # A connection reset as soon as accepted (nothing received) is
        # Firecracker's protocol at work, not a failure: the device gives up
        # on a host connection the guest has not accepted within 2 s (a
        # guest slowed down by the emulation above), and the first level
        # then connects again; listen again then, at most twice (said in
        # the check's line).
        for attempt in 1 2 3; do
            e2e-sock -t 90 vsock-listen:5000 < /tmp/e2e-out.bin > /tmp/e2e-in.bin 2> /tmp/e2e-sock.err
            [ -s /tmp/e2e-in.bin ] && break
            echo "E2E-INFO vsock-listen: accepted connection $attempt brought nothing: $(tr '\n' ' ' < /tmp/e2e-sock.err)"
        done
        NOTE=""
        [ "$attempt" -gt 1 ] && NOTE=" (accepted connection $attempt: the ones before were reset at once)"
        received vsock-listen /tmp/e2e-in.bin "$t0" "${VSOCK#*:}"
        NOTE=""
        t0=$(ms)
        e2e-sock -t 90 vsock:2:6000 < /tmp/e2e-out.bin > /tmp/e2e-in.bin 2> /tmp/e2e-sock.err
        received vsock-connect /tmp/e2e-in.bin "$t0" "${VSOCK#*:}"
    else
        for name in vsock-listen vsock-connect; do
            report "$name" "FAIL vmw_vsock_virtio_transport is not loaded (modules: $(awk '{ printf " %s", $1 }' /proc/modules))"
        done
    fi
    rm -f /tmp/e2e-out.bin /tmp/e2e-in.bin
fi

# The root filesystem read-only, so what was written is on the disk (journal
# checkpointed) when the VM ends without init's shutdown.
mount -o remount,ro / || echo "E2E-INFO disk-write: remount,ro / failed"

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
