#!/bin/sh
# Runs the second level: microvm boots the Debian kernel three times, as the
# bzImage (vmlinuz as Debian ships it), as the extracted ELF vmlinux through
# the 64-bit Linux entry, and as that vmlinux through its PVH entry, and,
# when microvm has Firecracker's control plane, a fourth time: the bzImage
# configured through a Firecracker config file (`--no-api --config-file`,
# the same requests the API socket takes). Each run is under a timeout, and
# prints the transcript for the harness to assert:
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
#   L2_CPUS, L2_MEM_MIB, L2_CMDLINE_EXTRA
set -u

uptime_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }
# prefix TEXT: each input line with TEXT before it and no CR, as it comes.
prefix() { awk -v p="$1" '{ sub(/\r$/, ""); print p $0; fflush() }'; }

mkdir -p "$OUT_DIR"
variants="bzimage vmlinux pvh"
"$MICROVM" --help 2>/dev/null | grep -q -- '--config-file' && variants="$variants api"
for variant in $variants; do
    entry=""
    # The pvh run ends with `reboot -f` and no reboot=k, so Linux resets
    # through the ACPI reset register; the others power off.
    reboot="reboot=k"
    end=poweroff
    case $variant in
        bzimage) kernel=$L2_DIR/vmlinuz ;;
        vmlinux) kernel=$L2_DIR/vmlinux; reboot=""; end=reboot ;;
        pvh) kernel=$L2_DIR/vmlinux; entry=--pvh ;;
        api) kernel=$L2_DIR/vmlinuz ;;
    esac
    stderr=$OUT_DIR/$variant.stderr
    status_file=$OUT_DIR/$variant.status
    rm -f "$stderr" "$status_file"
    cmdline="console=ttyS0 $reboot panic=-1 pci=off rdinit=/init ${L2_CMDLINE_EXTRA:-}"
    cmdline="$cmdline e2e.end=$end"
    cmdline="$cmdline e2e.variant=$variant e2e.cpus=$L2_CPUS e2e.mem=$L2_MEM_MIB"
    cmdline="$cmdline e2e.disk=$L2_DISK e2e.rng=$L2_RNG e2e.token=$L2_TOKEN"
    set -- --kernel "$kernel" --initrd "$L2_DIR/initramfs.cpio" --cmdline "$cmdline" \
        --cpus "$L2_CPUS" --memory "$L2_MEM_MIB" --serial stdout
    [ -n "$entry" ] && set -- "$@" "$entry"
    [ "$L2_DISK" = 1 ] && set -- "$@" --disk "$L2_DIR/disk.img"
    [ "$L2_RNG" = 1 ] && set -- "$@" --entropy
    if [ "$variant" = api ]; then
        # The same machine as a Firecracker config file: the API's bodies
        # keyed by resource.
        config=$OUT_DIR/api-config.json
        drives=""
        [ "$L2_DISK" = 1 ] && drives="{\"drive_id\": \"data\", \"path_on_host\": \"$L2_DIR/disk.img\", \"is_root_device\": false, \"is_read_only\": false}"
        entropy=""
        [ "$L2_RNG" = 1 ] && entropy=', "entropy": {}'
        printf '{"boot-source": {"kernel_image_path": "%s", "initrd_path": "%s", "boot_args": "%s"}, "machine-config": {"vcpu_count": %s, "mem_size_mib": %s}, "drives": [%s]%s}\n' \
            "$kernel" "$L2_DIR/initramfs.cpio" "$cmdline" "$L2_CPUS" "$L2_MEM_MIB" "$drives" "$entropy" > "$config"
        set -- --no-api --config-file "$config"
        echo "E2E-L2[$variant] vmm| config: $(cat "$config")"
    fi
    echo "E2E-L2-BEGIN $variant"
    echo "E2E-L2[$variant] vmm| \$ microvm $*"
    t0=$(uptime_ms)
    # The guest's console streams through as it comes (so a level that hangs
    # still shows how far it got); microvm's stderr follows the run.
    {
        timeout -k 5 "$L2_TIMEOUT" "$MICROVM" "$@" < /dev/null 2> "$stderr"
        echo $? > "$status_file"
    } | prefix "E2E-L2[$variant] serial| "
    t1=$(uptime_ms)
    status=$(cat "$status_file" 2>/dev/null || echo unknown)
    [ -f "$stderr" ] && prefix "E2E-L2[$variant] vmm| " < "$stderr"
    echo "E2E-L2-END $variant status=$status wall_ms=$((t1 - t0)) timeout_s=$L2_TIMEOUT"
done
