#!/bin/sh
# Runs the second level: microvm boots the Debian kernel three times, as the
# bzImage (vmlinuz as Debian ships it), as the extracted ELF vmlinux through
# the 64-bit Linux entry, and as that vmlinux through its PVH entry (and, with
# L2_SNAPSHOT=1, a fourth time as the bzImage snapshotted mid-way and
# restored in a new process), each under a timeout, and prints the
# transcript for the harness to assert:
#
#   E2E-L2-BEGIN <variant>
#   E2E-L2[<variant>] serial| <guest console line>
#   E2E-L2[<variant>] vmm| <microvm stderr line>
#   E2E-L2-END <variant> status=<exit status> wall_ms=<VMM process lifetime>
#
# POSIX sh: runs under busybox inside the first level, or on the host when it
# has real hardware virtualization. Configuration, from the environment:
#   MICROVM       the microvm binary
#   L2_DIR        holds vmlinuz, vmlinux, initramfs.cpio (and disk.img)
#   OUT_DIR       where the per-run logs go
#   L2_TIMEOUT    seconds each microvm run may take
#   L2_DISK       1: pass --disk L2_DIR/disk.img
#   L2_RNG        1: pass --entropy
#   L2_TOKEN      the text in the disk image's /hello.txt
#   L2_SNAPSHOT   1: also run the snapshot variant (the bzImage, snapshotted
#                 by microvm --snapshot-on-line at the guest's
#                 E2E-SNAPSHOT-NOW line, then restored by a second microvm
#                 process, which runs the rest of the checks)
#   L2_CPUS, L2_MEM_MIB, L2_CMDLINE_EXTRA
set -u

uptime_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }
# prefix TEXT: each input line with TEXT before it and no CR, as it comes.
prefix() { awk -v p="$1" '{ sub(/\r$/, ""); print p $0; fflush() }'; }

mkdir -p "$OUT_DIR"
variants="bzimage vmlinux pvh"
[ "${L2_SNAPSHOT:-0}" = 1 ] && variants="$variants snapshot"
for variant in $variants; do
    entry=""
    snapshot=0
    # The pvh run ends with `reboot -f` and no reboot=k, so Linux resets
    # through the ACPI reset register; the others power off.
    reboot="reboot=k"
    end=poweroff
    case $variant in
        bzimage) kernel=$L2_DIR/vmlinuz ;;
        vmlinux) kernel=$L2_DIR/vmlinux; reboot=""; end=reboot ;;
        pvh) kernel=$L2_DIR/vmlinux; entry=--pvh ;;
        snapshot) kernel=$L2_DIR/vmlinuz; snapshot=1 ;;
    esac
    snap_state=$OUT_DIR/snapshot.state
    snap_mem=$OUT_DIR/snapshot.mem
    stderr=$OUT_DIR/$variant.stderr
    status_file=$OUT_DIR/$variant.status
    rm -f "$stderr" "$status_file"
    cmdline="console=ttyS0 $reboot panic=-1 pci=off rdinit=/init ${L2_CMDLINE_EXTRA:-}"
    cmdline="$cmdline e2e.end=$end"
    cmdline="$cmdline e2e.variant=$variant e2e.cpus=$L2_CPUS e2e.mem=$L2_MEM_MIB"
    cmdline="$cmdline e2e.disk=$L2_DISK e2e.rng=$L2_RNG e2e.token=$L2_TOKEN e2e.snapshot=$snapshot"
    set -- --kernel "$kernel" --initrd "$L2_DIR/initramfs.cpio" --cmdline "$cmdline" \
        --cpus "$L2_CPUS" --memory "$L2_MEM_MIB" --serial stdout
    [ -n "$entry" ] && set -- "$@" "$entry"
    [ "$L2_DISK" = 1 ] && set -- "$@" --disk "$L2_DIR/disk.img"
    [ "$L2_RNG" = 1 ] && set -- "$@" --entropy
    [ "$snapshot" = 1 ] && set -- "$@" --snapshot-on-line E2E-SNAPSHOT-NOW \
        --snapshot-state "$snap_state" --snapshot-mem "$snap_mem"
    echo "E2E-L2-BEGIN $variant"
    echo "E2E-L2[$variant] vmm| \$ microvm $*"
    t0=$(uptime_ms)
    # The guest's console streams through as it comes (so a level that hangs
    # still shows how far it got); microvm's stderr follows the run.
    {
        timeout -k 5 "$L2_TIMEOUT" "$MICROVM" "$@" < /dev/null 2> "$stderr"
        status=$?
        if [ "$snapshot" = 1 ]; then
            # The snapshot run ends at the marker; a new process restores
            # it and the guest goes on with its checks.
            echo "snapshot run exit status $status" >> "$stderr"
            echo "\$ microvm --restore $snap_state --restore-mem $snap_mem --serial stdout" >> "$stderr"
            timeout -k 5 "$L2_TIMEOUT" "$MICROVM" --restore "$snap_state" \
                --restore-mem "$snap_mem" --serial stdout < /dev/null 2>> "$stderr"
            status=$?
            rm -f "$snap_state" "$snap_mem"
        fi
        echo $status > "$status_file"
    } | prefix "E2E-L2[$variant] serial| "
    t1=$(uptime_ms)
    status=$(cat "$status_file" 2>/dev/null || echo unknown)
    [ -f "$stderr" ] && prefix "E2E-L2[$variant] vmm| " < "$stderr"
    echo "E2E-L2-END $variant status=$status wall_ms=$((t1 - t0)) timeout_s=$L2_TIMEOUT"
done
