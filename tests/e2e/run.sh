#!/usr/bin/env bash
# Kindling's real-Linux end-to-end tier (see README.md beside this file).
#
# Makes the guest with scripts/guest-image.sh (Debian's cloud kernel as
# vmlinuz and vmlinux, its initramfs, an ext4 root filesystem whose
# /etc/rc.local is guest-checks.sh) and boots it under the release `microvm`
# example six times (the vmlinuz bzImage as shipped, the extracted ELF
# vmlinux through the 64-bit entry from a Firecracker config file, that
# vmlinux through PVH, the bzImage snapshotted mid-way and restored in a new
# process, and the bzImage configured, started, paused and resumed through
# the API socket, the last two when microvm has them; and the PVH machine
# once more under kindling-jailer, whose limits, user, root and namespaces
# the level above checks from outside while it runs; the vmlinux run goes
# first), each with 256 MiB and one vCPU but the bzimage run, which has two
# (see level2-run.sh on the SMP bring-up hang), the root filesystem as its virtio disk and an entropy device; the
# bzimage and api runs also have a virtio-net device on a TAP of the level
# above (link-local addresses by DHCP, ping, 4 MiB over TCP both ways) and a
# vsock device (1 MiB both directions through Firecracker's Unix-socket
# protocol), with e2e-sock.c (built here with gcc -static) as the socket
# tool on both sides; the api run's disk and interface are rate-limited
# and its guest measures both (the bzimage guest measures the same
# unthrottled). The guest checks itself and the harness asserts the
# transcript, microvm's exit status, the files the guests wrote, what the
# level above received, the measured rates against the limits, that the
# first level has no network card, and the time bound, and reports the
# boot times. A second-level run that triple-faults or hangs, and a first
# level that locks up, stalls or panics, is run once more and reported as
# RETRY (tests/e2e/README.md says why).
#
# Where /dev/kvm cannot run a stock Linux guest (nested KVM that emulates
# guest ring 0, such as kvm_pvm: docs/nested-kvm.md) the runs happen
# inside a first level, through scripts/nested-run.sh (QEMU TCG with
# -cpu EPYC,+svm booting the same kernel with the kvm modules). With real
# hardware virtualization they run directly on the host.
#
# Environment (all optional):
#   KINDLING_E2E_MODE=auto|nested|direct   default auto (see detect_mode)
#   KINDLING_E2E_WORK=DIR                  the image and logs; default target/e2e
#                                          (packages are cached in target/debian, KINDLING_CACHE)
#   KINDLING_E2E_MICROVM=PATH              a prebuilt microvm; default: cargo build --release
#   KINDLING_E2E_JAILER_RUN=0              leave out the jailer run
#   KINDLING_E2E_JAILER=PATH               a prebuilt kindling-jailer; default: next to
#                                          microvm's build (release/kindling-jailer), built when missing
#   KINDLING_E2E_KERNEL_PKG=NAME           default linux-image-cloud-amd64
#   KINDLING_E2E_L1_TIMEOUT=S              the whole first level; default 480
#   KINDLING_E2E_L2_TIMEOUT=S              each microvm run; default 150
#   KINDLING_E2E_BOUND=S                   the whole run, downloads and build included; default 600
#   KINDLING_E2E_VERBOSE=1                 second-level kernel logs to the console (no `quiet`)
#   KINDLING_E2E_L2_APPEND=STR             more second-level kernel parameters (e.g. initcall_debug)
set -uo pipefail

export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export LC_ALL=C
E2E_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$E2E_SRC/../.." && pwd)
WORK=${KINDLING_E2E_WORK:-$REPO/target/e2e}
MODE=${KINDLING_E2E_MODE:-auto}
MODE_WHY="KINDLING_E2E_MODE=$MODE"
KERNEL_PKG=${KINDLING_E2E_KERNEL_PKG:-linux-image-cloud-amd64}
L1_TIMEOUT=${KINDLING_E2E_L1_TIMEOUT:-480}
L2_TIMEOUT=${KINDLING_E2E_L2_TIMEOUT:-150}
# A first level that prints nothing for this long is hung: every
# second-level run prints as it goes and ends within L2_TIMEOUT.
L1_STALL=$((L2_TIMEOUT + 30))
BOUND=${KINDLING_E2E_BOUND:-600}
L2_CPUS=2
L2_MEM_MIB=256
L2_CMDLINE_EXTRA="quiet"
[ "${KINDLING_E2E_VERBOSE:-0}" = 1 ] && L2_CMDLINE_EXTRA=""
L2_CMDLINE_EXTRA="$L2_CMDLINE_EXTRA ${KINDLING_E2E_L2_APPEND:-}"
# The network and vsock transfers (each way), and the rate-limited api run:
# its TCP transfer, the disk read (also in the bzimage run, unthrottled),
# and its limits, Firecracker bandwidth buckets "SIZE ONE_TIME_BURST
# REFILL_TIME_MS": 512 KiB/s into the guest (rx), 256 KiB/s out of it (tx),
# 1 MiB/s on the disk: well below what the bzimage guest measures
# unthrottled under the emulated first level (see tests/e2e/README.md).
L2_TCP_BYTES=$((4 * 1024 * 1024))
L2_VSOCK_BYTES=$((1024 * 1024))
L2_RATE_BYTES=$((1024 * 1024))
L2_DD_BYTES=$((3 * 1024 * 1024))
L2_RATE_RX="65536 65536 125"
L2_RATE_TX="32768 65536 125"
L2_RATE_DISK="131072 262144 125"
# A measured rate passes between RATE_MIN_PCT % of the limit and the limit
# plus what the buckets allow at once (bucket, burst and one operation over
# the bytes measured) plus RATE_TOL_PCT %.
RATE_MIN_PCT=60
RATE_TOL_PCT=10
VARIANTS="bzimage vmlinux pvh"

# ---------------------------------------------------------------- reporting

say() { printf 'e2e: %s\n' "$*"; }
# A failure before the checks: what went wrong, then exit.
fatal() {
    printf 'e2e: FAIL: %s\n' "$1" >&2
    shift
    for f in "$@"; do
        [ -s "$f" ] || continue
        printf -- '---- %s (last 60 lines) ----\n' "$f" >&2
        tail -n 60 "$f" >&2
    done
    echo "e2e: 0 passed, 1 failed"
    exit 1
}
# Milliseconds since T_START (pure bash: the console is timestamped per line).
us_now() { local t=$EPOCHREALTIME; echo $((10#${t/./})); }
T_START_US=$(us_now)
since_start() { local t=$EPOCHREALTIME; echo $(((10#${t/./} - T_START_US) / 1000)); }
fmt_s() { awk -v ms="$1" 'BEGIN { printf "%.2f s", ms / 1000 }'; }

PASSED=0
FAILED=0
SKIPPED=0
RESULTS=()
# Context to show for each failure, printed after the summary.
FAIL_CONTEXT=()
RETRIED=0
pass() { PASSED=$((PASSED + 1)); RESULTS+=("  ok    $1: $2"); }
# retried NAME WHY: a run that needed its second attempt (not a failure,
# but always shown: the reason is what there is to investigate).
retried() { RETRIED=$((RETRIED + 1)); RESULTS+=("  RETRY $1: $2"); }
skip() { SKIPPED=$((SKIPPED + 1)); RESULTS+=("  skip  $1: $2"); }
fail() {
    FAILED=$((FAILED + 1))
    RESULTS+=("  FAIL  $1: $2")
    [ $# -ge 3 ] && FAIL_CONTEXT+=("$3")
}

# ---------------------------------------------------------------- packages

APT_LOG=$WORK/apt.log
APT_UPDATED=0
apt_update() {
    [ "$APT_UPDATED" = 1 ] && return 0
    APT_UPDATED=1
    say "apt-get update"
    apt-get -o DPkg::Lock::Timeout=120 update >> "$APT_LOG" 2>&1
}
# apt_get ARGS...: runs apt-get, once more after an `apt-get update` if the
# package lists are missing or stale.
apt_get() {
    local lock=(-o DPkg::Lock::Timeout=120)
    DEBIAN_FRONTEND=noninteractive apt-get "${lock[@]}" "$@" >> "$APT_LOG" 2>&1 && return 0
    [ "$APT_UPDATED" = 1 ] && return 1
    apt_update || return 1
    DEBIAN_FRONTEND=noninteractive apt-get "${lock[@]}" "$@" >> "$APT_LOG" 2>&1
}
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | has 'install ok installed'; }
# ensure_packages PKG...: installs those that are missing.
ensure_packages() {
    local missing=() p
    for p in "$@"; do installed "$p" || missing+=("$p"); done
    [ ${#missing[@]} = 0 ] && return 0
    [ "$(id -u)" = 0 ] || fatal "missing Debian packages: ${missing[*]} (run as root so the harness can apt-get install them)"
    say "installing Debian packages: ${missing[*]}"
    apt_get install -y --no-install-recommends "${missing[@]}" \
        || fatal "could not install Debian packages: ${missing[*]} (apt-get output in $APT_LOG)" "$APT_LOG"
    for p in "${missing[@]}"; do
        installed "$p" || fatal "package $p is still not installed after apt-get install" "$APT_LOG"
    done
}

# ---------------------------------------------------------------- mode

# Real hardware virtualization: the CPU flags show vmx/svm and /dev/kvm is not
# the paravirtual kvm_pvm (which cannot run a stock Linux guest).
detect_mode() {
    case $MODE in
        nested | direct) return ;;
        auto) ;;
        *) fatal "KINDLING_E2E_MODE=$MODE is not auto, nested or direct" ;;
    esac
    if [ -e /sys/module/kvm_pvm ]; then
        MODE=nested
        MODE_WHY="/dev/kvm is kvm_pvm (nested through a paravirtual hypervisor)"
    elif ! grep -q -w -E 'vmx|svm' /proc/cpuinfo; then
        MODE=nested
        MODE_WHY="the CPU shows no vmx/svm flag"
    elif [ ! -c /dev/kvm ] || [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
        MODE=nested
        MODE_WHY="/dev/kvm is missing or not accessible"
    else
        MODE=direct
        MODE_WHY="hardware virtualization (vmx/svm) and a usable /dev/kvm"
    fi
}

# ---------------------------------------------------------------- the guest

# The guest, made by the same script users run (scripts/guest-image.sh):
# its root filesystem carries the checks as /etc/rc.local and the harness's
# token in /hello.txt.
build_guest() {
    IMAGE=$WORK/image
    mkdir -p "$IMAGE"
    printf '%s\n' "$TOKEN" > "$WORK/hello.txt"
    say "scripts/guest-image.sh (log: $WORK/guest-image.log)"
    bash "$REPO/scripts/guest-image.sh" --out "$IMAGE" --kernel-package "$KERNEL_PKG" \
        --add "$E2E_SRC/guest-checks.sh:/etc/rc.local" --add "$WORK/hello.txt:/hello.txt" \
        --add "$E2E_SOCK:/bin/e2e-sock" \
        > "$WORK/guest-image.log" 2>&1 \
        || fatal "scripts/guest-image.sh failed" "$WORK/guest-image.log"
    # shellcheck disable=SC1091
    . "$IMAGE/image.env"
    for f in vmlinuz vmlinux initrd.cpio rootfs.ext4; do
        [ -s "$IMAGE/$f" ] || fatal "scripts/guest-image.sh made no $f" "$WORK/guest-image.log"
    done
    # The command line it printed for users boots what the runs boot (the
    # vmlinux run's files, with the command line from image.env).
    # (Paths under the current directory are printed relative to it.)
    local rel=${IMAGE#"$PWD"/}
    PRINTED=$(grep -F -- "--kernel $rel/vmlinux --initrd $rel/initrd.cpio --disk $rel/rootfs.ext4" "$WORK/guest-image.log" | head -n 1)
    cat > "$WORK/e2e.config" << EOF
OUT_DIR=/tmp/l2-out
L2_TIMEOUT=$L2_TIMEOUT
L2_TOKEN=$TOKEN
L2_CPUS=$L2_CPUS
L2_MEM_MIB=$L2_MEM_MIB
L2_CMDLINE_EXTRA="$L2_CMDLINE_EXTRA"
L2_SNAPSHOT=$HAS_SNAPSHOT
L2_NET=$HAS_NET
L2_TCP_BYTES=$L2_TCP_BYTES
L2_VSOCK_BYTES=$L2_VSOCK_BYTES
L2_RATE_BYTES=$L2_RATE_BYTES
L2_DD_BYTES=$L2_DD_BYTES
L2_RATE_RX="$L2_RATE_RX"
L2_RATE_TX="$L2_RATE_TX"
L2_RATE_DISK="$L2_RATE_DISK"
IMAGE_CMDLINE="$CMDLINE"
EOF
}

# e2e-sock, the socket tool of both levels (TCP, vsock, Unix sockets, one
# HTTP request), statically linked so that busybox systems can run it.
build_sock() {
    E2E_SOCK=$WORK/e2e-sock
    gcc -static -O2 -Wall -o "$E2E_SOCK" "$E2E_SRC/e2e-sock.c" > "$WORK/e2e-sock.log" 2>&1 \
        || fatal "gcc -static could not build tests/e2e/e2e-sock.c" "$WORK/e2e-sock.log"
}

# ---------------------------------------------------------------- jailer

# The jailer run: kindling-jailer (next to the microvm build, or built
# here; KINDLING_E2E_JAILER names another) starts microvm for one more
# PVH boot as this user, with these cgroup v2 limits and rlimits (memory:
# the guest's RAM and 128 MiB for the VMM and KVM; one CPU; the file-size
# limit is the disk image's size, set by level2-run.sh).
JAIL_UID=4242
JAIL_GID=4242
JAIL_CPU_MAX="100000 100000"
JAIL_MEM_MAX=$(((L2_MEM_MIB + 128) * 1024 * 1024))
JAIL_PIDS_MAX=32
JAIL_NOFILE=256
find_jailer() {
    JAILER=${KINDLING_E2E_JAILER:-$(dirname "$(dirname "$MICROVM")")/kindling-jailer}
    if [ -z "${KINDLING_E2E_JAILER:-}" ] && [ ! -x "$JAILER" ]; then
        say "cargo build --release -p kindling-jailer"
        cargo build --release -p kindling-jailer --locked > "$WORK/cargo-jailer.log" 2>&1 \
            || fatal "cargo build --release -p kindling-jailer failed" "$WORK/cargo-jailer.log"
    fi
    [ -x "$JAILER" ] || fatal "no kindling-jailer binary at $JAILER"
    JAILER=$(realpath "$JAILER")
    VARIANTS="$VARIANTS jailer"
}
# For level2-run.sh (appended to e2e.config).
jailer_config() {
    cat << EOF
L2_JAILER=1
L2_JAIL_UID=$JAIL_UID
L2_JAIL_GID=$JAIL_GID
L2_JAIL_CPU_MAX="$JAIL_CPU_MAX"
L2_JAIL_MEM_MAX=$JAIL_MEM_MAX
L2_JAIL_PIDS_MAX=$JAIL_PIDS_MAX
L2_JAIL_NOFILE=$JAIL_NOFILE
EOF
}

# ---------------------------------------------------------------- running

# timestamp LOG: copies stdin to LOG, each line prefixed with the
# milliseconds since T_START, and echoes the harness's progress lines.
timestamp() {
    local line
    while IFS= read -r line; do
        line=${line%$'\r'}
        printf '%s %s\n' "$(since_start)" "$line"
        case $line in
            E2E-L2-BEGIN* | E2E-L2-END* | *"] serial| E2E-"*) say "  | $line" >&2 ;;
        esac
    done > "$1"
}

# The runs inside the first level: scripts/nested-run.sh with
# level2-run.sh as its --script; the first level's own log is separate.
run_nested() {
    mkdir -p "$WORK/l1"
    L1_LOG=$WORK/l1/level1.log
    say "level 1: scripts/nested-run.sh (qemu-system-x86_64, TCG, -cpu EPYC,+svm); timeout ${L1_TIMEOUT}s; console: $WORK/l1/console.log, level 1 log: $L1_LOG"
    T_L1_START=$(since_start)
    bash "$REPO/scripts/nested-run.sh" --microvm "$MICROVM" --kernel-package "$KERNEL_PKG" \
        --timeout "$L1_TIMEOUT" --stall "$L1_STALL" --log "$L1_LOG" --script "$E2E_SRC/level2-run.sh" \
        --file "$IMAGE/vmlinuz" --file "$IMAGE/vmlinux" --file "$IMAGE/initrd.cpio" \
        --file "$WORK/e2e.config" --file "$E2E_SOCK" ${JAILER:+--file "$JAILER"} --disk "$IMAGE/rootfs.ext4" \
        < /dev/null 2> "$WORK/l1/nested-run.stderr" | timestamp "$WORK/l1/console.log"
    L1_STATUS=${PIPESTATUS[0]}
    T_L1_END=$(since_start)
    TRANSCRIPT=$WORK/l1/console.log
}

run_direct() {
    say "second level directly on this host's /dev/kvm ($MODE_WHY)"
    mkdir -p "$WORK/direct"
    T_L1_START=$(since_start)
    (
        # shellcheck disable=SC1091
        . "$WORK/e2e.config"
        export MICROVM L2_TIMEOUT L2_TOKEN L2_CPUS L2_MEM_MIB L2_CMDLINE_EXTRA IMAGE_CMDLINE L2_SNAPSHOT L2_NET E2E_SOCK
        export JAILER L2_JAILER L2_JAIL_UID L2_JAIL_GID L2_JAIL_CPU_MAX L2_JAIL_MEM_MAX L2_JAIL_PIDS_MAX L2_JAIL_NOFILE
        export L2_TCP_BYTES L2_VSOCK_BYTES L2_RATE_BYTES L2_DD_BYTES L2_RATE_RX L2_RATE_TX L2_RATE_DISK
        export L2_DIR=$IMAGE L2_DISK_IMG=$IMAGE/rootfs.ext4 OUT_DIR=$WORK/direct/out
        # The host may have no udhcpd: the busybox guest-image.sh unpacked.
        export L2_BUSYBOX=${KINDLING_CACHE:-$REPO/target/debian}/busybox-static/bin/busybox
        sh "$E2E_SRC/level2-run.sh"
    ) 2>&1 | timestamp "$WORK/direct/transcript.log"
    T_L1_END=$(since_start)
    L1_STATUS=0
    TRANSCRIPT=$WORK/direct/transcript.log
}

# ---------------------------------------------------------------- asserting

# has PATTERN: grep that reads all its input (grep -q would stop early and,
# with pipefail, fail the pipeline through SIGPIPE).
has() { grep "$@" > /dev/null; }
# The transcript without the timestamps.
lines() { cut -d' ' -f2- "$TRANSCRIPT"; }
# attempt_lines VARIANT: the transcript from the last E2E-L2-BEGIN of that
# run on (level2-run.sh runs it a second time after a triple fault or a
# time-out, and only the last attempt is judged).
attempt_lines() {
    lines | awk -v b="E2E-L2-BEGIN $1" '$0 == b { n = 0 } { buf[n++] = $0 } END { for (i = 0; i < n; i++) print buf[i] }'
}
# variant_log VARIANT: that run's serial console and microvm's stderr.
variant_log() {
    attempt_lines "$1" | grep -F "E2E-L2[$1] " | sed "s/^E2E-L2\[$1\] //"
}
# check_line VARIANT NAME: the guest's "E2E-CHECK NAME: ..." result.
check_line() {
    variant_log "$1" | sed -n "s/^serial| E2E-CHECK $2: //p" | head -n 1
}
guest_check() {
    local v=$1 name=$2 r ctx
    r=$(check_line "$v" "$name")
    ctx="---- $v: the second-level guest's console and microvm's stderr ----"$'\n'"$(variant_log "$v" | tail -n 80)"
    case $r in
        ok*) pass "$v/$name" "${r#ok }" ;;
        SKIP*) skip "$v/$name" "${r#SKIP }" ;;
        FAIL*) fail "$v/$name" "${r#FAIL }" "$ctx" ;;
        *) fail "$v/$name" "the guest printed no E2E-CHECK $name line" "$ctx" ;;
    esac
}

# l1_stopped LOG: why nested-run.sh stopped a first level that failed (its
# kernel locked up or panicked, or it printed nothing for L1_STALL seconds;
# seen now and then under TCG: tests/e2e/README.md), from its log; nothing
# when it did not. The tier then runs that first level once more.
l1_stopped() { sed -n 's/^NESTED-STOPPED //p' "$1" 2> /dev/null | tr -d '\r' | head -n 1; }
# The first level's log (scripts/nested-run.sh --log): its NESTED lines.
l1_line() { sed -n "s/^NESTED $1: //p" "$L1_LOG" 2> /dev/null | head -n 1; }
assert_level1() {
    local ctx r step
    ctx="---- level 1 log (last 60 lines of $L1_LOG) ----"$'\n'"$(tail -n 60 "$L1_LOG" 2> /dev/null)"$'\n'"---- nested-run.sh stderr and qemu's ----"$'\n'"$(tail -n 20 "$WORK/l1/nested-run.stderr" "$L1_LOG.qemu-stderr" 2> /dev/null)"
    if ! has '^NESTED-INIT' "$L1_LOG"; then
        fail level1/boot "the first level did not reach /init (nested-run.sh exit status $L1_STATUS)" "$ctx"
        return 1
    fi
    L1_INIT_MS=$(sed -n 's/^NESTED-INIT uptime_ms=\([0-9]*\).*/\1/p' "$L1_LOG" | head -n 1)
    pass level1/boot "reached /init $(fmt_s "$L1_INIT_MS") after its kernel started"
    r=$(l1_line kvm)
    case $r in
        ok*) pass level1/kvm "${r#ok }" ;;
        *) fail level1/kvm "${r:-no NESTED kvm line}" "$ctx"; return 1 ;;
    esac
    for step in disk-in disk-out; do
        r=$(l1_line "$step 0")
        case $r in
            ok*) pass "level1/$step" "${r#ok }" ;;
            *) fail "level1/$step" "${r:-no NESTED $step line}" "$ctx" ;;
        esac
    done
    # Started with -nic none: no network card, only lo and the TAP the
    # level made for the guests.
    r=$(lines | sed -n 's/^E2E-L2-IFACES //p' | head -n 1)
    local others
    others=$(tr ' ' '\n' <<< "$r" | grep -v -x -e lo -e kt0 | tr '\n' ' ')
    if [ -z "$r" ]; then
        fail level1/no-nic "the first level did not list its network interfaces (no E2E-L2-IFACES line)" "$ctx"
    elif [ -n "$others" ]; then
        fail level1/no-nic "the first level has network interfaces besides lo and the TAP: $others(all: $r)" "$ctx"
    else
        pass level1/no-nic "the first level's network interfaces are $r: no network card (-nic none), the guests' traffic stays between the levels"
    fi
    if has '^NESTED-DONE' "$L1_LOG"; then
        if [ "$L1_STATUS" = 0 ]; then
            pass level1/poweroff "the first level powered off and nested-run.sh exited 0"
        else
            fail level1/poweroff "nested-run.sh exit status $L1_STATUS after the first level finished" "$ctx"
        fi
    elif [ "$L1_STATUS" = 125 ] && grep -q 'killed after' "$WORK/l1/nested-run.stderr"; then
        fail level1/finish "the first level did not finish within ${L1_TIMEOUT}s (killed)" "$ctx"
    else
        fail level1/finish "the first level ended early (nested-run.sh exit status $L1_STATUS)" "$ctx"
    fi
}

assert_variant() {
    local v=$1 end status wall ctx timeout_s bt r
    ctx="---- $v: the second-level guest's console and microvm's stderr ----"$'\n'"$(variant_log "$v" | tail -n 80)"
    while IFS= read -r r; do
        [ -n "$r" ] && retried "$v/run" "the first attempt ended in a $r; the checks below are the second attempt's"
    done <<< "$(lines | sed -n "s/^E2E-L2-RETRY $v: //p")"
    end=$(attempt_lines "$v" | grep "^E2E-L2-END $v " | head -n 1)
    if [ -z "$end" ]; then
        # The first level's failure, when there is one, shows its console.
        if lines | has "^E2E-L2-BEGIN $v\$"; then
            fail "$v/run" "microvm started but its run never finished (the level above died or hung)" "$ctx"
        else
            if [ "$MODE" = direct ]; then
                fail "$v/run" "the second level never started" "---- transcript (last 40 lines) ----"$'\n'"$(lines | tail -n 40)"
            else
                fail "$v/run" "the second level never started"
            fi
        fi
        return
    fi
    status=$(sed -n 's/.* status=\([0-9]*\).*/\1/p' <<< "$end")
    wall=$(sed -n 's/.* wall_ms=\([0-9]*\).*/\1/p' <<< "$end")
    timeout_s=$(sed -n 's/.* timeout_s=\([0-9]*\).*/\1/p' <<< "$end")
    WALL_MS[$v]=$wall

    # Did it boot to /init? The boot timer, then the guest's checks.
    if ! variant_log "$v" | has '^serial| E2E-CHECK init: ok'; then
        local why="the guest never reached /init"
        [ "$wall" -ge $((timeout_s * 1000)) ] && why="$why; microvm killed after ${timeout_s}s"
        [ "$L2_CMDLINE_EXTRA" != "${L2_CMDLINE_EXTRA#quiet}" ] && ctx="$ctx"$'\n'"(the guest kernel ran with 'quiet': KINDLING_E2E_VERBOSE=1 shows its whole log)"
        fail "$v/boot" "$why (microvm exit status ${status:-unknown})" "$ctx"
        return
    fi
    pass "$v/boot" "$(check_line "$v" init | sed 's/^ok //')"
    bt=$(variant_log "$v" | sed -n 's/^vmm| Guest-boot-time = *\([0-9]*\) us.*/\1/p' | head -n 1)
    if [ -n "$bt" ]; then
        BOOT_US[$v]=$bt
        pass "$v/boot-timer" "fired: Guest-boot-time $((bt / 1000)) ms (microvm start to the guest's write of 123)"
    else
        fail "$v/boot-timer" "microvm logged no Guest-boot-time line (the guest's devmem write: $(variant_log "$v" | sed -n 's/^serial| E2E-INFO boot-timer: //p'))" "$ctx"
    fi
    guest_check "$v" nproc
    guest_check "$v" memtotal
    guest_check "$v" modules
    guest_check "$v" disk-read
    # A file the guest wrote is in the image afterwards (read with debugfs,
    # no loop mount).
    r=$(check_line "$v" disk-read)
    case $r in
        ok*)
            local got want="written by the $v guest: $TOKEN"
            got=$(debugfs -R "cat /from-guest-$v.txt" "$IMAGE/rootfs.ext4" 2>/dev/null)
            if [ "$got" = "$want" ]; then
                pass "$v/disk-write" "the image holds /from-guest-$v.txt: '$got'"
            else
                fail "$v/disk-write" "/from-guest-$v.txt in the image reads '$got', expected '$want'" "$ctx"
            fi
            ;;
        SKIP*) skip "$v/disk-write" "${r#SKIP }" ;;
        *) fail "$v/disk-write" "not checked: the guest's disk-read failed" ;;
    esac
    guest_check "$v" hwrng
    if [ "$v" = snapshot ]; then
        # The first microvm wrote the snapshot and exited 0; the guest's
        # later lines come from the restored one.
        if variant_log "$v" | has '^vmm| microvm: snapshot written' \
            && variant_log "$v" | has '^vmm| snapshot run exit status 0$'; then
            pass "$v/snapshot-create" "microvm wrote a full snapshot at the guest's E2E-SNAPSHOT-NOW line and exited 0"
        else
            fail "$v/snapshot-create" "no snapshot was written at the marker line" "$ctx"
        fi
        guest_check "$v" snapshot
        guest_check "$v" clock
    fi

    [ "$v" = api ] && assert_api
    [ "$v" = jailer ] && assert_jailer
    case " $NET_VARIANTS " in *" $v "*) assert_net "$v" ;; esac
    [ "$v" = api ] && assert_rates

    # How the VM ended: ACPI power-off once microvm has ACPI, else reboot -f
    # through the i8042. A guest whose power-off or reboot did not work falls
    # through to a kernel panic, which panic=-1 turns into a reset: not a pass.
    local name how after killed=""
    how=$(variant_log "$v" | sed -n "s/^serial| E2E-END $v: //p" | head -n 1)
    after=$(variant_log "$v" | grep -E -m1 '^serial\| .*(Kernel panic|E2E-END .*still running)' | sed 's/^serial| //')
    [ -n "$wall" ] && [ "$wall" -ge $((timeout_s * 1000)) ] && killed="; microvm killed after ${timeout_s}s"
    if variant_log "$v" | has '^serial| E2E-INFO acpi: present'; then
        name=poweroff
        # The vmlinux run reboots through the ACPI reset register instead.
        [ "$v" = vmlinux ] && name=reboot
    else
        name=reboot
        skip "$v/poweroff" "not yet supported by microvm: no ACPI tables, so the guest ends with reboot -f (i8042 reset, reboot=k)"
    fi
    if [ "${how%% *}" != "$name" ]; then
        fail "$v/$name" "the guest did not reach its $name (microvm exit status ${status:-unknown}$killed)" "$ctx"
    elif [ -n "$after" ]; then
        fail "$v/$name" "$name -f did not end the VM: '$after' (microvm exit status ${status:-unknown})" "$ctx"
    elif [ "$status" != 0 ]; then
        fail "$v/$name" "microvm exit status ${status:-unknown} after $name -f, expected 0$killed" "$ctx"
    else
        pass "$v/$name" "$name -f ended microvm with status 0, $(fmt_s "$wall") after it started"
    fi
}

# The network and vsock checks of a run with a virtio-net and a vsock
# device: the guest's lines, and for each transfer also what the level
# above received from the guest (its "l1 <service>: received ..." line),
# compared with the sha256 of what the guest sent.
assert_net() {
    local v=$1 ctx sent pair name service data r l1
    ctx="---- $v: the second-level guest's console and microvm's stderr ----"$'\n'"$(variant_log "$v" | tail -n 80)"
    if ! lines | has '^E2E-L2-NET ok'; then
        fail "$v/net" "the level above has no network for the guests: $(lines | grep -m1 '^E2E-L2-NET' || echo 'no E2E-L2-NET line')"
        return
    fi
    # The address: link-local (169.254.0.0/16).
    r=$(check_line "$v" net-link)
    case $r in
        "ok "*" and 169.254."*) guest_check "$v" net-link ;;
        ok*) fail "$v/net-link" "${r#ok }: not a link-local address (169.254.0.0/16)" "$ctx" ;;
        *) guest_check "$v" net-link ;;
    esac
    guest_check "$v" net-ping
    for pair in net-tcp:tcp:tcp vsock-listen:vsock-listen:vsock vsock-connect:vsock-connect:vsock; do
        name=${pair%%:*}
        service=${pair#*:}
        data=${service#*:}
        service=${service%:*}
        # "<bytes> bytes sha256 <hash>"
        sent=$(variant_log "$v" | sed -n "s/^serial| E2E-INFO data $data: sent //p" | head -n 1)
        r=$(check_line "$v" "$name")
        l1=$(variant_log "$v" | sed -n "s/^vmm| l1 $service: received \([0-9]* bytes sha256 .*\)/\1/p" | head -n 1)
        case $r in
            ok*)
                if [ -n "$sent" ] && [ "$l1" = "$sent status 0" ]; then
                    pass "$v/$name" "${r#ok }; the level above received the guest's ${sent%% *} bytes intact"
                else
                    fail "$v/$name" "the guest received the data, but the level above received ${l1:-nothing} (the guest sent ${sent:-unknown})" "$ctx"
                fi
                ;;
            FAIL*) fail "$v/$name" "${r#FAIL }; the level above received ${l1:-nothing}" "$ctx" ;;
            *) fail "$v/$name" "the guest printed no E2E-CHECK $name line" "$ctx" ;;
        esac
    done
}

# rate_of VARIANT WHAT: "<bytes> <ms>" of a rate measured in that run:
# disk (the guest's dd), tcp-rx (what the guest received over TCP, timed by
# the guest), tcp-tx (what the level above received, timed there).
rate_of() {
    case $2 in
        tcp-tx) variant_log "$1" | sed -n 's/^vmm| l1 tcp: e2e-sock: received \([0-9]*\) bytes in \([0-9]*\) ms$/\1 \2/p' | head -n 1 ;;
        *) variant_log "$1" | sed -n "s/^serial| E2E-INFO rate $2: \([0-9]*\) bytes in \([0-9]*\) ms.*/\1 \2/p" | head -n 1 ;;
    esac
}
# The api run's limits, measured inside the guest: the disk read, and the
# TCP transfer each way (rx: into the guest, tx: out of it). Each rate must
# stay between RATE_MIN_PCT % of the limit and the limit with what the
# bucket, its one-time burst and one operation (64 KiB: a dd block, a TSO
# frame) let through at once over the bytes measured, plus RATE_TOL_PCT %.
# The bzimage run's unthrottled rate is shown for comparison.
assert_rates() {
    local ctx pair name rest what spec m base size burst refill verdict
    ctx="---- api: the guest's console and microvm's stderr ----"$'\n'"$(variant_log api | tail -n 80)"
    local pairs="disk:disk:L2_RATE_DISK"
    # The interface's, when the level above has a network for the guests
    # (assert_net says why not).
    lines | has '^E2E-L2-NET ok' && pairs="$pairs net-rx:tcp-rx:L2_RATE_RX net-tx:tcp-tx:L2_RATE_TX"
    for pair in $pairs; do
        name=rate-${pair%%:*}
        rest=${pair#*:}
        what=${rest%%:*}
        spec=${rest#*:}
        read -r size burst refill <<< "${!spec}"
        m=$(rate_of api "$what")
        base=$(rate_of bzimage "$what")
        if [ -z "$m" ]; then
            fail "api/$name" "the api run measured no $what rate" "$ctx"
            continue
        fi
        # "ok|FAIL <detail>"
        verdict=$(awk -v m="$m" -v base="$base" -v size="$size" -v burst="$burst" -v refill="$refill" \
            -v minpct="$RATE_MIN_PCT" -v tol="$RATE_TOL_PCT" 'BEGIN {
                split(m, a, " "); bytes = a[1]; ms = a[2] > 0 ? a[2] : 1
                rate = bytes / ms * 1000 / 1024
                limit = size / refill * 1000 / 1024
                allow = size + burst + 65536
                hi = bytes > allow ? limit * bytes / (bytes - allow) * (1 + tol / 100) : 1e30
                lo = limit * minpct / 100
                ok = rate >= lo && rate <= hi ? "ok" : "FAIL"
                d = sprintf("%d bytes in %d ms: %.0f KiB/s, limit %.0f KiB/s (bucket %d, one_time_burst %d, refill_time %d ms), allowed %.0f-%.0f KiB/s", bytes, ms, rate, limit, size, burst, refill, lo, hi)
                if (base != "") {
                    split(base, b, " ")
                    u = b[1] / (b[2] > 0 ? b[2] : 1) * 1000 / 1024
                    d = d sprintf("; unthrottled (bzimage run): %.0f KiB/s", u)
                    if (u < hi) d = d " (not clearly above the limit: the check says little)"
                }
                print ok " " d
            }')
        case $verdict in
            ok*) pass "api/$name" "${verdict#ok }" ;;
            *) fail "api/$name" "${verdict#FAIL }" "$ctx" ;;
        esac
    done
}

# The api run: microvm --api-sock, configured and started by HTTP requests
# on the socket (level2-run.sh's "api <METHOD> <URI> -> <status> <body>"
# lines), paused and resumed.
assert_api() {
    local ctx puts want_puts=5 bad states want
    ctx="---- api: the requests, the guest's console and microvm's stderr ----"$'\n'"$(variant_log api | tail -n 80)"
    api_lines() { variant_log api | sed -n 's/^vmm| api //p'; }
    # The boot source, the machine, the drive, the entropy device and
    # InstanceStart; the network interface and vsock when the level above
    # has a network.
    lines | has '^E2E-L2-NET ok' && want_puts=7
    puts=$(api_lines | grep -c '^PUT ')
    bad=$(api_lines | grep '^PUT ' | grep -v -e '-> 204 *$' | head -n 1)
    if [ "$puts" = "$want_puts" ] && [ -z "$bad" ]; then
        pass api/configure "$puts PUT requests on the API socket answered 204 ($(api_lines | sed -n 's/^PUT \([^ ]*\) .*/\1/p' | tr '\n' ' '| sed 's/ $//'))"
    else
        fail api/configure "${bad:-$puts PUT requests answered, expected $want_puts}" "$ctx"
    fi
    # The configuration as the PUTs made it: the kernel, and the TAP and
    # the interface's rate limiters when the run has a network.
    local shown='"kernel_image_path": *"[^"]*/vmlinuz"'
    [ "$HAS_NET" = 1 ] && shown='"host_dev_name": *"kt0".*"tx_rate_limiter": *\{"bandwidth"'
    if api_lines | grep '^GET /vm/config -> 200 ' | has -E "$shown"; then
        pass api/vm-config "GET /vm/config shows the configuration the PUTs made"
    else
        fail api/vm-config "GET /vm/config: $(api_lines | grep -m1 '^GET /vm/config ')" "$ctx"
    fi
    # GET / before the start, after InstanceStart, after the pause, after
    # the resume.
    states=$(api_lines | sed -n 's/^GET \/ -> 200 .*"state": *"\([^"]*\)".*/\1/p' | tr '\n' ',')
    want="Not started,Running,Paused,Running,"
    if [ "$states" = "$want" ] && [ "$(api_lines | grep -c '^PATCH /vm -> 204')" = 2 ]; then
        pass api/pause-resume "GET / shows ${want%,}: PATCH /vm Paused and Resumed while the guest boots (204 each)"
    else
        fail api/pause-resume "GET / showed '${states%,}', expected '${want%,}'; PATCH /vm: $(api_lines | grep '^PATCH /vm' | tr '\n' ' ')" "$ctx"
    fi
    # Paused, the VMM's vCPUs do not run: at most 0.2 s of CPU time in the
    # 2 s (the guest, booting, keeps a running vCPU busy: 1.1-1.5 s per s
    # here).
    local cpu paused
    cpu=$(api_lines | sed -n 's/^cpu: //p' | head -n 1)
    paused=$(sed -n 's/.*: paused \([0-9]*\) ticks in 2 s.*/\1/p' <<< "$cpu")
    if [ -z "$paused" ]; then
        fail api/paused "no CPU time measured for the paused VMM (${cpu:-no 'api cpu' line})" "$ctx"
    elif [ "$paused" -le 20 ]; then
        pass api/paused "the paused VMM used $paused clock ticks of CPU in 2 s ($cpu)"
    else
        fail api/paused "the paused VMM used $paused clock ticks of CPU in 2 s, more than 20: its vCPUs kept running ($cpu)" "$ctx"
    fi
}

# The jailer run: what the level above saw of the jailed VMM while it ran
# (level2-run.sh's jail_watch, its "jail ..." lines): the cgroup's limits
# and process, the user, the root, the namespaces, the rlimits, and the
# cgroup's removal afterwards. (The guest's own checks, the disk write and
# the power-off are assert_variant's.)
assert_jailer() {
    local ctx r want got pid ns line lacking="" c
    ctx="---- jailer: the level above's view of the jailed VMM, the guest's console and the jailer's stderr ----"$'\n'"$(variant_log jailer | tail -n 100)"
    jail_line() { variant_log jailer | sed -n "s/^vmm| jail $1: //p" | head -n 1; }
    # Every controller the limits use, offered by the level above's cgroup2.
    r=$(jail_line controllers)
    for c in cpu memory pids; do
        case " $r " in *" $c "*) ;; *) lacking="$lacking $c" ;; esac
    done
    if [ -z "$lacking" ]; then
        pass jailer/cgroup-controllers "cgroup v2 in the level above ($(jail_line cgroup2)) offers cpu, memory and pids (all: $r)"
    else
        fail jailer/cgroup-controllers "cgroup v2 in the level above ($(jail_line cgroup2)) lacks${lacking}: those limits could not be applied (it offers: ${r:-nothing})" "$ctx"
    fi
    pid=$(jail_line vmm | sed -n 's/^pid \([0-9]*\) .*/\1/p')
    if [ -z "$pid" ]; then
        fail jailer/vmm "the level above never saw the jailed VMM run: $(jail_line vmm)" "$ctx"
        return
    fi
    pass jailer/vmm "$(jail_line vmm)"
    # The limits, read back from the VMM's cgroup while it ran.
    got="cpu.max=$(jail_line cpu.max) memory.max=$(jail_line memory.max) pids.max=$(jail_line pids.max)"
    want="cpu.max=$JAIL_CPU_MAX memory.max=$JAIL_MEM_MAX pids.max=$JAIL_PIDS_MAX"
    if [ "$got" = "$want" ]; then
        pass jailer/cgroup-limits "$(jail_line cgroup): $got while the VMM ran; $(jail_line usage)"
    else
        fail jailer/cgroup-limits "$(jail_line cgroup): $got, expected $want" "$ctx"
    fi
    # The VMM (the jailer's child) is in the cgroup, the jailer is not,
    # and anything else there is one of KVM's kernel threads for the VM
    # (KVM moves them into the VM owner's cgroups).
    local entry others="" vmm_in=0 jailer_pid
    jailer_pid=$(jail_line vmm | sed -n 's/.*(child of the jailer, pid \([0-9]*\)).*/\1/p')
    r=$(jail_line cgroup.procs)
    for entry in $r; do
        case $entry in
            "$pid":*) vmm_in=1 ;;
            "$jailer_pid":*) others="$others $entry(the jailer)" ;;
            *:kvm*:kernel) ;;
            *) others="$others $entry" ;;
        esac
    done
    if [ "$vmm_in" = 1 ] && [ -z "$others" ] && [ "$(jail_line proc-cgroup)" = "0::/kindling/e2e-jailer" ]; then
        pass jailer/cgroup-procs "cgroup.procs holds the VMM's pid $pid, not the jailer's (pid:name: $r); /proc/$pid/cgroup: $(jail_line proc-cgroup)"
    else
        fail jailer/cgroup-procs "cgroup.procs: '$r': the VMM's pid $pid $([ "$vmm_in" = 1 ] && echo is in || echo is NOT in), unexpected:${others:- none}; /proc/$pid/cgroup: $(jail_line proc-cgroup)" "$ctx"
    fi
    # The user: dropped uid and gid (real, effective, saved, file system),
    # no groups, no capabilities, no new privileges.
    got="Uid=$(jail_line 'status Uid' | tr -s ' \t' ' ') Gid=$(jail_line 'status Gid' | tr -s ' \t' ' ') Groups=$(jail_line 'status Groups') CapEff=$(jail_line 'status CapEff') NoNewPrivs=$(jail_line 'status NoNewPrivs')"
    want="Uid=$JAIL_UID $JAIL_UID $JAIL_UID $JAIL_UID Gid=$JAIL_GID $JAIL_GID $JAIL_GID $JAIL_GID Groups= CapEff=0000000000000000 NoNewPrivs=1"
    if [ "$got" = "$want" ]; then
        pass jailer/user "/proc/$pid/status: $got"
    else
        fail jailer/user "/proc/$pid/status: $got, expected $want" "$ctx"
    fi
    # The root: the jail's root directory (the same device and inode),
    # holding only the VMM, its device nodes and the files it was given.
    local disk=disk0.img
    [ "$MODE" = direct ] && disk=rootfs.ext4
    want=$(printf '%s\n' dev "$disk" initrd.cpio microvm vmlinux | sort | tr '\n' ' ')
    r=$(jail_line root)
    got=$(jail_line root-entries)
    # Its mount namespace has nothing mounted but its root: no /proc,
    # /sys, /dev or /tmp of the level above.
    local mounts other=""
    mounts=$(jail_line mounts)
    for entry in $mounts; do
        case $entry in "/("*) ;; *) other="$other $entry" ;; esac
    done
    if [ -n "${r%% *}" ] && [ "$r" = "${r%% *} jail ${r%% *}" ] && [ "$got" = "$want" ] && [ -n "$mounts" ] && [ -z "$other" ]; then
        pass jailer/chroot "/proc/$pid/root is the jail's root (device:inode ${r%% *}), holding: ${got% }; its mounts: ${mounts% }"
    else
        fail jailer/chroot "/proc/$pid/root: $r; it holds: ${got% } (expected: ${want% }); its mounts: ${mounts:-none} (other than /:${other:- none})" "$ctx"
    fi
    # Namespaces: mount, PID and network differ from the level above's
    # init; the VMM is PID 1 in its PID namespace and sees only lo.
    lacking=""
    for ns in mnt pid net; do
        line=$(jail_line "ns $ns")
        [ -n "${line%% *}" ] && [ "${line%% *}" != "${line##* }" ] || lacking="$lacking $ns ($line)"
    done
    got=$(jail_line 'status NSpid' | tr -s ' \t' ' ')
    if [ -z "$lacking" ] && [ "${got##* }" = 1 ] && [ "$(jail_line net)" = "lo " ]; then
        pass jailer/namespaces "mnt $(jail_line 'ns mnt'), pid $(jail_line 'ns pid'), net $(jail_line 'ns net'); NSpid $got (PID 1 inside); interfaces: lo"
    else
        fail jailer/namespaces "not new:${lacking:- none}; NSpid '$got'; interfaces: $(jail_line net)" "$ctx"
    fi
    # Resource limits (soft and hard).
    got="no-file=$(jail_line 'limit nofile') fsize=$(jail_line 'limit fsize')"
    want="no-file=$JAIL_NOFILE $JAIL_NOFILE fsize=$(jail_line requested | sed -n 's/.* fsize=\([0-9]*\) .*/\1 \1/p')"
    if [ "$got" = "$want" ]; then
        pass jailer/rlimits "/proc/$pid/limits: $got (soft and hard; fsize is the disk image's size)"
    else
        fail jailer/rlimits "/proc/$pid/limits: $got, expected $want" "$ctx"
    fi
    r=$(jail_line cleanup)
    case $r in
        "the jailer removed the cgroup"*) pass jailer/cleanup "$r" ;;
        *) fail jailer/cleanup "${r:-no cleanup line}" "$ctx" ;;
    esac
}

# ---------------------------------------------------------------- interactive

# The image as a user gets it: the printed command line (through the nested
# runner on hosts like ours), its console on a pseudo-terminal driven by
# interactive.py: the shell, a typed command, Ctrl-C, `poweroff`, the
# terminal restored, and the typed command's file in the image afterwards.
run_interactive() {
    local dir=$WORK/interactive cmd r name got
    local names="shell typed ctrl-c poweroff terminal"
    mkdir -p "$dir"
    if ! command -v python3 > /dev/null; then
        for name in $names disk; do skip "interactive/$name" "python3 not found (it drives the pseudo-terminal)"; done
        return
    fi
    local args=(--kernel "$IMAGE/vmlinux" --initrd "$IMAGE/initrd.cpio" --disk "$IMAGE/rootfs.ext4")
    # One vCPU: see the note on SMP bring-up in level2-run.sh.
    local vm_args=(--entropy --cpus 1 --memory "$L2_MEM_MIB" --cmdline "$CMDLINE")
    if [ "$MODE" = nested ]; then
        cmd=(bash "$REPO/scripts/nested-run.sh" --microvm "$MICROVM" --kernel-package "$KERNEL_PKG"
            --timeout "$L1_TIMEOUT" --stall "$L1_STALL" --log "$dir/level1.log" "${args[@]}" -- "${vm_args[@]}")
    else
        cmd=("$MICROVM" "${args[@]}" "${vm_args[@]}")
    fi
    say "interactive: ${cmd[*]##*/} on a pseudo-terminal (console: $dir/console.log)"
    interactive_once() {
        T_INT_START=$(since_start)
        E2E_INTERACTIVE_TIMEOUT=$L1_TIMEOUT python3 "$E2E_SRC/interactive.py" "$dir/console.log" "${cmd[@]}" \
            > "$dir/result" 2>&1
    }
    interactive_once
    # Once more (as a second-level run of level2-run.sh would be) when the
    # first level was stopped, or the guest triple-faulted.
    local why
    why=$(l1_stopped "$dir/level1.log")
    [ -n "$why" ] && why="the first level was stopped: $why"
    [ -z "$why" ] && why=$(tr -d '\r' < "$dir/console.log" | grep -a -m 1 'triple fault at' | sed 's/.*triple fault at /a guest triple fault at /')
    if [ -n "$why" ]; then
        rm -rf "$dir/first"
        mkdir -p "$dir/first"
        mv "$dir/console.log" "$dir/result" "$dir/level1.log" "$dir/first/" 2> /dev/null
        say "interactive: $why; once more"
        retried interactive/run "the first attempt ended in $why (its console and log: $dir/first/); the checks below are the second attempt's"
        interactive_once
    fi
    T_INT_END=$(since_start)
    local ctx
    ctx="---- interactive: the console (last 40 lines of $dir/console.log) ----"$'\n'"$(tr -d '\r' < "$dir/console.log" | tail -n 40)"$'\n'"---- interactive.py ----"$'\n'"$(cat "$dir/result")"
    for name in $names; do
        r=$(sed -n "s/^INTERACTIVE $name: //p" "$dir/result" | head -n 1)
        case $r in
            ok*) pass "interactive/$name" "${r#ok }" ;;
            FAIL*) fail "interactive/$name" "${r#FAIL }" "$ctx" ;;
            *) fail "interactive/$name" "not reached" "$ctx" ;;
        esac
    done
    got=$(debugfs -R "cat /root/typed.txt" "$IMAGE/rootfs.ext4" 2> /dev/null)
    if [ "$got" = typed-42 ]; then
        pass interactive/disk "the image holds /root/typed.txt from the typed command, after the shutdown"
    else
        fail interactive/disk "/root/typed.txt in the image reads '$got', expected 'typed-42'" "$ctx"
    fi
}

# ---------------------------------------------------------------- main

mkdir -p "$WORK"
: > "$APT_LOG"
cd "$REPO" || exit 1
detect_mode
say "mode: $MODE ($MODE_WHY); work dir: $WORK"

# debugfs reads the image afterwards; guest-image.sh and nested-run.sh
# install what else they need (cpio, the kernel's decompressor, QEMU).
ensure_packages e2fsprogs gcc libc6-dev

# The release microvm.
if [ -n "${KINDLING_E2E_MICROVM:-}" ]; then
    MICROVM=$(realpath "$KINDLING_E2E_MICROVM")
else
    say "cargo build --release --example microvm"
    cargo build --release --example microvm --locked > "$WORK/cargo.log" 2>&1 \
        || fatal "cargo build --release --example microvm failed" "$WORK/cargo.log"
    target_dir=${CARGO_TARGET_DIR:-$REPO/target}
    MICROVM=$(realpath "$target_dir/x86_64-unknown-linux-gnu/release/examples/microvm")
fi
[ -x "$MICROVM" ] || fatal "no microvm binary at $MICROVM"
help=$("$MICROVM" --help 2>&1) || fatal "$MICROVM --help failed: $help"
HAS_SNAPSHOT=0
grep -q -- '--snapshot-on-line' <<< "$help" && HAS_SNAPSHOT=1
[ "$HAS_SNAPSHOT" = 1 ] && VARIANTS="$VARIANTS snapshot"
say "microvm: $MICROVM (snapshot variant: $([ $HAS_SNAPSHOT = 1 ] && echo yes || echo no))"
# Firecracker's control plane: one more run configured through the API
# socket (and the vmlinux run through a config file).
grep -q -- '--config-file' <<< "$help" && VARIANTS="$VARIANTS api"
# The network and vsock checks in the bzimage and api runs.
HAS_NET=0
NET_VARIANTS=""
if grep -q -- '--net' <<< "$help" && grep -q -- '--vsock' <<< "$help"; then
    HAS_NET=1
    NET_VARIANTS="bzimage api"
fi

JAILER=""
[ "${KINDLING_E2E_JAILER_RUN:-1}" = 1 ] && find_jailer
TOKEN=kindling-e2e-$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')
build_sock
build_guest
[ -n "$JAILER" ] && jailer_config >> "$WORK/e2e.config"
say "guest (scripts/guest-image.sh): kernel $KVER; vmlinuz $(stat -c %s "$IMAGE/vmlinuz") bytes, vmlinux $(stat -c %s "$IMAGE/vmlinux") bytes ($COMPRESSION payload), initrd.cpio $(stat -c %s "$IMAGE/initrd.cpio") bytes (modules: $MODULES), rootfs.ext4"
T_BUILT=$(since_start)

case $PRINTED in
    *"/examples/microvm --kernel "*" --entropy --cpus $L2_CPUS --memory $L2_MEM_MIB --cmdline \"$CMDLINE\"")
        pass image/command "guest-image.sh printed the microvm command line for the image it made" ;;
    *) fail image/command "guest-image.sh printed no microvm command line for $IMAGE (with --cmdline \"$CMDLINE\")" "---- guest-image.log ----"$'\n'"$(cat "$WORK/guest-image.log")" ;;
esac

declare -A WALL_MS BOOT_US
if [ "$MODE" = nested ]; then
    run_nested
    stopped=$(l1_stopped "$L1_LOG")
    if [ -n "$stopped" ] && [ "$L1_STATUS" = 125 ]; then
        rm -rf "$WORK/l1-stopped"
        mv "$WORK/l1" "$WORK/l1-stopped"
        say "level 1: stopped ($stopped); once more"
        retried level1/run "the first attempt's first level was stopped: $stopped (its log: $WORK/l1-stopped/level1.log); the checks below are the second attempt's"
        run_nested
    fi
    assert_level1
else
    run_direct
fi
for v in $VARIANTS; do
    assert_variant "$v"
done
run_interactive
T_END=$(since_start)
if [ "$T_END" -le $((BOUND * 1000)) ]; then
    pass time-bound "the whole run took $(fmt_s "$T_END") (bound ${BOUND}s)"
else
    fail time-bound "the whole run took $(fmt_s "$T_END"), over the ${BOUND}s bound"
fi

say ""
say "results ($MODE, kernel $KVER):"
printf '%s\n' "${RESULTS[@]}"
say ""
say "timings:"
printf '  %-52s %s\n' "preparation (packages, kernel, build, guest-image.sh)" "$(fmt_s "$T_BUILT")"
if [ "$MODE" = nested ]; then
    [ -n "${L1_INIT_MS:-}" ] && printf '  %-52s %s\n' "level 1 boot (its kernel start to /init)" "$(fmt_s "$L1_INIT_MS")"
    printf '  %-52s %s\n' "level 1 total (nested-run.sh start to exit)" "$(fmt_s $((T_L1_END - T_L1_START)))"
fi
for v in $VARIANTS; do
    [ -n "${BOOT_US[$v]:-}" ] && printf '  %-52s %s\n' "level 2 $v boot (microvm start to boot timer)" "$(fmt_s $((BOOT_US[$v] / 1000)))"
    [ -n "${WALL_MS[$v]:-}" ] && printf '  %-52s %s\n' "level 2 $v microvm lifetime" "$(fmt_s "${WALL_MS[$v]}")"
done
[ -n "${T_INT_START:-}" ] && printf '  %-52s %s\n' "interactive run (start to exit)" "$(fmt_s $((T_INT_END - T_INT_START)))"
printf '  %-52s %s\n' "total wall time" "$(fmt_s "$T_END")"
if [ ${#FAIL_CONTEXT[@]} -gt 0 ]; then
    say ""
    say "failure details:"
    declare -A shown
    for ctx in "${FAIL_CONTEXT[@]}"; do
        [ -n "${shown[$ctx]:-}" ] && continue
        shown[$ctx]=1
        printf '%s\n' "$ctx"
    done
fi
say ""
echo "e2e: $PASSED passed, $FAILED failed, $SKIPPED skipped, $RETRIED retried"
[ "$FAILED" = 0 ]
