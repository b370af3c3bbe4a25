#!/bin/sh
# Runs the second level: microvm boots the Debian kernel, as the
# bzImage (vmlinuz as Debian ships it), as the extracted ELF vmlinux through
# the 64-bit Linux entry, and as that vmlinux through its PVH entry; with
# L2_SNAPSHOT=1 a fourth time as the bzImage snapshotted mid-way and
# restored in a new microvm process; and, when microvm has Firecracker's
# control plane, once more: the bzImage configured through a Firecracker
# config file (`--no-api --config-file`, the same requests the API socket
# takes). Each run is under a timeout, and prints the transcript for the
# harness to assert:
#
#   E2E-L2-BEGIN <variant>
#   E2E-L2[<variant>] serial| <guest console line>
#   E2E-L2[<variant>] vmm| <microvm stderr line>
#   E2E-L2-END <variant> status=<exit status> wall_ms=<VMM process lifetime>
#
# The kernels, the initramfs and the root filesystem are what
# scripts/guest-image.sh made; the command line is the one it prints
# (IMAGE_CMDLINE) plus the e2e.* parameters the checks read.
#
# POSIX sh: runs under busybox inside the first level (as the --script of
# scripts/nested-run.sh, which sets NESTED_DIR and MICROVM and puts the disk
# at NESTED_DIR/disk0.img), or on the host when it has real hardware
# virtualization. Configuration, from the environment or, in the first
# level, from NESTED_DIR/e2e.config:
#   MICROVM       the microvm binary
#   L2_DIR        holds vmlinuz, vmlinux and initrd.cpio
#   L2_DISK_IMG   the root filesystem image (rootfs.ext4)
#   OUT_DIR       where the per-run logs go
#   L2_TIMEOUT    seconds each microvm run may take
#   L2_TOKEN      the text in the root filesystem's /hello.txt
#   IMAGE_CMDLINE the command line guest-image.sh prints
#   L2_SNAPSHOT   1: also run the snapshot variant (the bzImage, snapshotted
#                 by microvm --snapshot-on-line at the guest's
#                 E2E-SNAPSHOT-NOW line, then restored by a second microvm
#                 process, which runs the rest of the checks)
#   L2_CPUS, L2_MEM_MIB, L2_CMDLINE_EXTRA
set -u
if [ -n "${NESTED_DIR:-}" ]; then
    . "$NESTED_DIR/e2e.config"
    L2_DIR=$NESTED_DIR
    L2_DISK_IMG=$NESTED_DIR/disk0.img
fi

uptime_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }
# prefix TEXT: each input line with TEXT before it and no CR, as it comes.
prefix() { awk -v p="$1" '{ sub(/\r$/, ""); print p $0; fflush() }'; }

mkdir -p "$OUT_DIR"
# Info: microvm's stderr then says why the VM ended (power-off, reset,
# triple fault, a vCPU error), which tells a guest crash from a clean end.
log_flags=""
"$MICROVM" --help 2>/dev/null | grep -q -- '--level' && log_flags="--level Info"
variants="bzimage vmlinux pvh"
[ "${L2_SNAPSHOT:-0}" = 1 ] && variants="$variants snapshot"
"$MICROVM" --help 2>/dev/null | grep -q -- '--config-file' && variants="$variants api"
for variant in $variants; do
    entry=""
    snapshot=0
    # The vmlinux run ends with `reboot -f` and no reboot=k, so Linux resets
    # through the ACPI reset register; the others power off.
    cmdline=$IMAGE_CMDLINE
    end=poweroff
    case $variant in
        bzimage) kernel=$L2_DIR/vmlinuz ;;
        vmlinux)
            kernel=$L2_DIR/vmlinux
            end=reboot
            cmdline=$(echo "$IMAGE_CMDLINE" | sed 's/ *reboot=k//')
            ;;
        pvh) kernel=$L2_DIR/vmlinux; entry=--pvh ;;
        snapshot) kernel=$L2_DIR/vmlinuz; snapshot=1 ;;
        api) kernel=$L2_DIR/vmlinuz ;;
    esac
    snap_state=$OUT_DIR/snapshot.state
    snap_mem=$OUT_DIR/snapshot.mem
    stderr=$OUT_DIR/$variant.stderr
    status_file=$OUT_DIR/$variant.status
    rm -f "$stderr" "$status_file"
    # panic=-1: a guest that panics ends microvm at once (the harness then
    # fails the run on the panic message).
    cmdline="$(echo "$cmdline" | sed 's/panic=[0-9-]*/panic=-1/') ${L2_CMDLINE_EXTRA:-}"
    cmdline="$cmdline e2e.end=$end"
    cmdline="$cmdline e2e.variant=$variant e2e.cpus=$L2_CPUS e2e.mem=$L2_MEM_MIB"
    cmdline="$cmdline e2e.token=$L2_TOKEN e2e.snapshot=$snapshot"
    set -- --kernel "$kernel" --initrd "$L2_DIR/initrd.cpio" --cmdline "$cmdline" \
        --cpus "$L2_CPUS" --memory "$L2_MEM_MIB" --serial stdout
    set -- "$@" $log_flags
    [ -n "$entry" ] && set -- "$@" "$entry"
    set -- "$@" --disk "path=$L2_DISK_IMG" --entropy
    [ "$snapshot" = 1 ] && set -- "$@" --snapshot-on-line E2E-SNAPSHOT-NOW \
        --snapshot-state "$snap_state" --snapshot-mem "$snap_mem"
    if [ "$variant" = api ]; then
        # The same machine as a Firecracker config file: the API's bodies
        # keyed by resource (the root filesystem is named on the command
        # line already, so the drive is not the "root device").
        config=$OUT_DIR/api-config.json
        drives="{\"drive_id\": \"rootfs\", \"path_on_host\": \"$L2_DISK_IMG\", \"is_root_device\": false, \"is_read_only\": false}"
        printf '{"boot-source": {"kernel_image_path": "%s", "initrd_path": "%s", "boot_args": "%s"}, "machine-config": {"vcpu_count": %s, "mem_size_mib": %s}, "drives": [%s], "entropy": {}}\n' \
            "$kernel" "$L2_DIR/initrd.cpio" "$cmdline" "$L2_CPUS" "$L2_MEM_MIB" "$drives" > "$config"
        set -- --no-api --config-file "$config" $log_flags
        echo "E2E-L2[$variant] vmm| config: $(cat "$config")"
    fi
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
                --restore-mem "$snap_mem" --serial stdout $log_flags < /dev/null 2>> "$stderr"
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
