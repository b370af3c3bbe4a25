#!/usr/bin/env bash
# Runs microvm inside an emulated machine, for hosts whose /dev/kvm cannot
# run a stock Linux guest (nested KVM that emulates guest ring 0, such as
# the kvm_pvm module; see docs/nested-kvm.md):
#
#   scripts/nested-run.sh --kernel vmlinux --initrd initrd.cpio --disk rootfs.ext4 \
#       -- --entropy --cpus 2 --memory 256 --cmdline "console=ttyS0 root=/dev/vda rw"
#
# The first level is QEMU without hardware acceleration (TCG) with an AMD
# CPU that has SVM (-cpu EPYC,+svm), booting Debian's cloud kernel with the
# kvm modules; its /dev/kvm runs the second level, microvm, with the given
# kernel, initrd and disks and the arguments after `--`. microvm's console
# is this command's standard input and output: interactive when run from a
# terminal (Ctrl-A x quits microvm, Ctrl-C goes to the guest). Disks are
# copied into the first level's memory and back to their files when microvm
# ends. The first level has no network card (-nic none): a --net TAP made in
# it (by a --script) links microvm's guest and the first level only. Exits
# with microvm's exit status (125 when the first level failed, hung and was
# stopped, or its kernel panicked; the reason is on stderr and in the log).
#
# Options:
#   --kernel PATH          the kernel microvm boots (required unless --script)
#   --initrd PATH          its initial ramdisk
#   --disk PATH            a raw disk image (repeatable), given to microvm as
#                          --disk path=... in this order (vda, vdb, ...)
#   --microvm PATH         the microvm binary (default: the release build,
#                          built with cargo when missing)
#   --timeout S            stop the first level after S seconds (default: none)
#   --stall S              stop the first level when neither microvm's console
#                          nor the first level's log has printed anything for
#                          S seconds (default: never; not for a console a
#                          person types into)
#   --log FILE             the first level's console (default: target/nested/level1.log)
#   --l1-cpus N            the first level's CPUs (default 2)
#   --l1-memory MIB        the first level's memory (default 3072; holds the disks)
#   --kernel-package PKG   the first level's Debian kernel (default linux-image-cloud-amd64)
#   --script PATH          run this POSIX sh script in the first level instead of
#                          microvm, with the arguments after `--` (environment:
#                          MICROVM, NESTED_DIR holding the files, NESTED_DISKS;
#                          the disks are NESTED_DIR/disk0.img, ...)
#   --file PATH            another file for NESTED_DIR (repeatable)
#   -h, --help             this text
#
# Needs a Debian-like system, root the first time (it apt-get installs
# qemu-system-x86 and cpio), and about 1.5 GiB of memory above the disks.
set -euo pipefail
# DK_NAME (and DK_QUIET) are read by lib/debian.sh.
# shellcheck disable=SC2034
DK_NAME=nested-run
# shellcheck source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/lib/debian.sh"

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }

KERNEL="" INITRD="" SCRIPT="" MICROVM="" TIMEOUT="" STALL=""
LOG=$DK_REPO/target/nested/level1.log
L1_CPUS=2 L1_MEM=3072
KERNEL_PKG=linux-image-cloud-amd64
DISKS=() FILES=()
while [ $# -gt 0 ]; do
    case $1 in
        --kernel) KERNEL=${2:?--kernel needs a path}; shift 2 ;;
        --initrd) INITRD=${2:?--initrd needs a path}; shift 2 ;;
        --disk) DISKS+=("${2:?--disk needs a path}"); shift 2 ;;
        --microvm) MICROVM=${2:?--microvm needs a path}; shift 2 ;;
        --timeout) TIMEOUT=${2:?--timeout needs seconds}; shift 2 ;;
        --stall) STALL=${2:?--stall needs seconds}; shift 2 ;;
        --log) LOG=${2:?--log needs a file}; shift 2 ;;
        --l1-cpus) L1_CPUS=${2:?--l1-cpus needs a number}; shift 2 ;;
        --l1-memory) L1_MEM=${2:?--l1-memory needs MiB}; shift 2 ;;
        --kernel-package) KERNEL_PKG=${2:?--kernel-package needs a package}; shift 2 ;;
        --script) SCRIPT=${2:?--script needs a path}; shift 2 ;;
        --file) FILES+=("${2:?--file needs a path}"); shift 2 ;;
        -h | --help) usage; exit 0 ;;
        --) shift; break ;;
        *) dk_die "unknown argument '$1' (see --help; microvm's arguments go after --)" ;;
    esac
done
number() { case $2 in '' | *[!0-9]*) dk_die "$1 $2 is not a number" ;; esac; }
number --l1-cpus "$L1_CPUS"
number --l1-memory "$L1_MEM"
[ -z "$TIMEOUT" ] || number --timeout "$TIMEOUT"
[ -z "$STALL" ] || number --stall "$STALL"
if [ -z "$SCRIPT" ]; then
    [ -n "$KERNEL" ] || dk_die "--kernel is required (the kernel microvm boots)"
fi
for f in "$KERNEL" "$INITRD" "$SCRIPT" "${FILES[@]}" "${DISKS[@]}"; do
    [ -z "$f" ] || [ -f "$f" ] || dk_die "no file $f"
done
[ ${#DISKS[@]} -le 16 ] || dk_die "at most 16 disks"
case $LOG in *,*) dk_die "--log $LOG: QEMU cannot write to a path with a comma" ;; esac
for arg in "$@"; do
    case $arg in *$'\n'*) dk_die "a microvm argument contains a newline" ;; esac
done

# microvm: the release build unless given.
if [ -z "$MICROVM" ]; then
    MICROVM=${CARGO_TARGET_DIR:-$DK_REPO/target}/x86_64-unknown-linux-gnu/release/examples/microvm
    if [ ! -x "$MICROVM" ]; then
        dk_say "building microvm: cargo build --release --example microvm"
        (cd "$DK_REPO" && cargo build --release --example microvm) || dk_die "cargo build --release --example microvm failed"
    fi
fi
[ -x "$MICROVM" ] || dk_die "no microvm binary at $MICROVM"

command -v qemu-system-x86_64 > /dev/null || dk_ensure_packages qemu-system-x86
dk_fetch_busybox
dk_fetch_kernel "$KERNEL_PKG"

# ---------------------------------------------------------------- first level

WORK=$(dirname "$LOG")/nested-l1.$$
mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/root
dk_busybox_root "$ROOT"
dk_copy_modules "$ROOT/lib/modules" "$ROOT/lib/modules/kvm.list" kvm
dk_copy_modules "$ROOT/lib/modules" "$ROOT/lib/modules/kvm-amd.list" '?kvm-amd'
dk_copy_modules "$ROOT/lib/modules" "$ROOT/lib/modules/kvm-intel.list" '?kvm-intel'
dk_copy_modules "$ROOT/lib/modules" "$ROOT/lib/modules/virtio-pci.list" virtio_pci virtio_blk
# TAP devices (/dev/net/tun), for microvm's --net inside the first level.
dk_copy_modules "$ROOT/lib/modules" "$ROOT/lib/modules/tun.list" '?tun'
# The vendor lists without what kvm.list loads already.
for vendor in kvm-amd kvm-intel; do
    grep -v -x -F -f "$ROOT/lib/modules/kvm.list" "$ROOT/lib/modules/$vendor.list" > "$WORK/list" || :
    mv "$WORK/list" "$ROOT/lib/modules/$vendor.list"
done
install -m 755 "$DK_REPO/scripts/lib/nested-init.sh" "$ROOT/init"
N=$ROOT/nested
mkdir -p "$N"
install -m 755 "$MICROVM" "$N/microvm"
# A statically linked microvm (the default build) needs no libraries.
for lib in $(ldd "$MICROVM" 2> /dev/null | grep -o -E '/[^ ]+' || true); do
    mkdir -p "$ROOT$(dirname "$lib")"
    cp -L "$lib" "$ROOT$lib"
done
link() { ln -f "$1" "$2" 2> /dev/null || cp "$1" "$2"; }
[ -z "$KERNEL" ] || link "$KERNEL" "$N/kernel"
[ -z "$INITRD" ] || link "$INITRD" "$N/initrd"
[ -z "$SCRIPT" ] || link "$SCRIPT" "$N/${SCRIPT##*/}"
for f in "${FILES[@]}"; do link "$f" "$N/${f##*/}"; done
printf '%s\n' "$@" > "$N/args"
[ $# -gt 0 ] || : > "$N/args"
cat > "$N/config" << EOF
NESTED_MODE=$([ -n "$SCRIPT" ] && echo script || echo microvm)
NESTED_SCRIPT='${SCRIPT##*/}'
NESTED_DISKS=${#DISKS[@]}
NESTED_INITRD=$([ -n "$INITRD" ] && echo 1 || echo 0)
EOF
dk_mkcpio "$ROOT" "$WORK/initramfs.cpio"

drives=()
for d in "${DISKS[@]}"; do
    # QEMU's option syntax: a comma in a value is written twice.
    drives+=(-drive "file=${d//,/,,},format=raw,if=virtio")
done
timeout=()
# --foreground: QEMU stays in the terminal's foreground process group, so it
# can read an interactive console (it has no children to time out).
[ -z "$TIMEOUT" ] || timeout=(timeout --foreground -k 10 "$TIMEOUT")
dk_say "first level: qemu-system-x86_64 (TCG, -cpu EPYC,+svm) with $KVER; log: $LOG"
: > "$LOG"
# A first level that hangs never finishes: QEMU is stopped, instead of at
# --timeout, once the log has two soft-lockup reports of its kernel (a CPU
# stuck for about a minute, or both stuck; a few seconds later, for the
# stacks), or, with --stall, once nothing was printed for that long (an
# emulated machine whose CPUs make no progress prints nothing at all). Both
# are seen now and then under TCG (docs/nested-kvm.md). The reason goes to
# the log as `NESTED-STOPPED <reason>` and to stderr, followed by where
# each emulated CPU was (`NESTED-CPU` lines, from QEMU's monitor).
: > "$WORK/console.log"
# cpu_report: one line per emulated CPU with its RIP and flags, read through
# QEMU's monitor socket (python3 speaks to it; without python3, nothing).
# The first level runs with nokaslr, so /proc/kallsyms of any first level
# of the same kernel names the address (docs/nested-kvm.md says how); a
# CPU running the second level (nested guest mode) shows that level's RIP.
cpu_report() {
    command -v python3 > /dev/null && [ -S "$WORK/monitor.sock" ] || return 0
    python3 - "$WORK/monitor.sock" > "$WORK/registers" 2>&1 << 'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.settimeout(1)
s.sendall(b"info registers -a\n")
out, end = b"", time.time() + 5
while time.time() < end:
    try:
        data = s.recv(65536)
    except socket.timeout:
        break
    if not data:
        break
    out += data
sys.stdout.write(out.decode(errors="replace"))
PY
    tr -d '\r' < "$WORK/registers" | awk '
        /^CPU#/ { cpu = $1; sub(/:$/, "", cpu) }
        /^RIP=/ { rip = $1; fl = $2; print "NESTED-CPU " cpu " " rip " " fl }'
}
hang_watch() {
    local quiet=0 size last=""
    while sleep 2; do
        if [ "$(grep -c 'BUG: soft lockup' "$LOG" 2> /dev/null)" -ge 2 ]; then
            sleep 5
            echo "its kernel locked up: $(grep -m 1 'BUG: soft lockup' "$LOG" | tr -d '\r')" > "$WORK/stopped"
            break
        fi
        [ -n "$STALL" ] || continue
        size="$(stat -c %s "$LOG" "$WORK/console.log" 2> /dev/null | tr '\n' ' ')"
        if [ "$size" = "$last" ]; then
            quiet=$((quiet + 2))
        else
            quiet=0
            last=$size
        fi
        if [ "$quiet" -ge "$STALL" ]; then
            echo "it stalled: nothing on microvm's console or in its log for ${STALL}s" > "$WORK/stopped"
            break
        fi
    done
    printf '\nNESTED-STOPPED %s\n' "$(cat "$WORK/stopped")" >> "$LOG"
    cpu_report >> "$LOG"
    kill "$(cat "$WORK/qemu.pid" 2> /dev/null)" 2> /dev/null
    return 0
}
hang_watch &
watcher=$!
# QEMU's monitor, for cpu_report (a Unix socket path has at most 107 bytes).
monitor=(-monitor none)
[ ${#WORK} -le 90 ] && monitor=(-monitor "unix:$WORK/monitor.sock,server=on,wait=off")
set +e
# ttyS0 (QEMU's stdio, signal=off: Ctrl-C goes to the guest) is microvm's
# console; ttyS1 (the log) is the first level's. -nic none: no network card
# (-nodefaults already leaves out the e1000 on a user-mode network QEMU adds
# otherwise; this says so), so microvm's TAP devices are the first level's
# only network, reaching nothing beyond it.
"${timeout[@]}" qemu-system-x86_64 \
    -accel tcg,thread=multi -cpu EPYC,+svm -smp "$L1_CPUS" -m "$L1_MEM" \
    -nodefaults -nic none -display none -no-user-config -no-reboot \
    "${monitor[@]}" \
    -pidfile "$WORK/qemu.pid" \
    -chardev "stdio,id=console,signal=off,logfile=$WORK/console.log" \
    -serial chardev:console -serial "file:$LOG" \
    -kernel "$VMLINUZ" -initrd "$WORK/initramfs.cpio" \
    -append "console=ttyS1 panic=-1 rdinit=/init loglevel=5 nokaslr" \
    "${drives[@]}" 2> "$WORK/qemu.stderr"
qemu_status=$?
kill "$watcher" 2> /dev/null
wait "$watcher" 2> /dev/null
set -e
grep -v "TCG doesn't support requested feature" "$WORK/qemu.stderr" > "$LOG.qemu-stderr" || :

status=$(sed -n 's/^NESTED-STATUS \([0-9]*\).*/\1/p' "$LOG" | tail -n 1)
failed=$(grep -E '^NESTED (kvm|disk-in [0-9]+|disk-out [0-9]+): FAIL' "$LOG" || :)
if [ -n "$failed" ]; then
    dk_say "first level: ${failed#NESTED }"
    [ -n "$status" ] && [ "$status" != 0 ] || status=125
fi
if [ -z "$status" ]; then
    case $qemu_status in
        124 | 137) why="killed after ${TIMEOUT}s (--timeout)" ;;
        *) why="qemu exit status $qemu_status" ;;
    esac
    if [ -s "$WORK/stopped" ]; then
        why="stopped: $(cat "$WORK/stopped")"
    elif panic=$(grep -a -m 1 'Kernel panic - ' "$LOG" | tr -d '\r') && [ -n "$panic" ]; then
        # Its kernel panicked (and QEMU, -no-reboot, ended): a hang of
        # another kind, logged the same way.
        why="its kernel panicked: $panic"
        printf '\nNESTED-STOPPED %s\n' "$why" >> "$LOG"
    fi
    printf '%s: error: the first level ended before microvm did (%s); its log: %s\n' "$DK_NAME" "$why" "$LOG" >&2
    tail -n 15 "$LOG" "$LOG.qemu-stderr" >&2 2> /dev/null || :
    exit 125
fi
exit "$status"
