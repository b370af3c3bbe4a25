#!/usr/bin/env bash
# Kindling's real-Linux end-to-end tier (see README.md beside this file).
#
# Boots Debian's cloud kernel under the release `microvm` example, twice (the
# vmlinuz bzImage as shipped and the ELF vmlinux extracted from it), with
# 2 vCPUs, 256 MiB, an initramfs of busybox and the kernel's own virtio
# modules, and an ext4 disk image; the guest checks itself and the harness
# asserts the transcript, microvm's exit status and the time bound, and
# reports the boot times.
#
# Where /dev/kvm cannot run a stock Linux guest (nested KVM through a
# paravirtual hypervisor: DESIGN.md §3) the second level runs inside a first
# level: QEMU TCG with -cpu EPYC,+svm booting the same kernel with the kvm
# modules. With real hardware virtualization the second level runs directly.
#
# Environment (all optional):
#   KINDLING_E2E_MODE=auto|nested|direct   default auto (see detect_mode)
#   KINDLING_E2E_WORK=DIR                  cache and logs; default target/e2e
#   KINDLING_E2E_MICROVM=PATH              a prebuilt microvm; default: cargo build --release
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
BOUND=${KINDLING_E2E_BOUND:-600}
L2_CPUS=2
L2_MEM_MIB=256
L2_CMDLINE_EXTRA="quiet"
[ "${KINDLING_E2E_VERBOSE:-0}" = 1 ] && L2_CMDLINE_EXTRA=""
L2_CMDLINE_EXTRA="$L2_CMDLINE_EXTRA ${KINDLING_E2E_L2_APPEND:-}"
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
pass() { PASSED=$((PASSED + 1)); RESULTS+=("  ok    $1: $2"); }
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

# ---------------------------------------------------------------- kernel

# Downloads Debian's kernel package (never installs it: the host's /boot is
# not touched) and unpacks it under $WORK/kernel/<package>.
fetch_kernel() {
    local pkg deps
    deps=$(apt-cache depends "$KERNEL_PKG" 2>/dev/null)
    if ! grep -q 'Depends: linux-image-' <<< "$deps"; then
        apt_update
        deps=$(apt-cache depends "$KERNEL_PKG" 2>>"$APT_LOG")
    fi
    pkg=$(awk '/Depends: linux-image-/ { print $2; exit }' <<< "$deps")
    if [ -z "$pkg" ]; then
        # Already a versioned package name?
        apt-cache show "$KERNEL_PKG" > /dev/null 2>&1 && pkg=$KERNEL_PKG
    fi
    [ -n "$pkg" ] || fatal "no Debian package $KERNEL_PKG (or what it depends on) in the apt lists" "$APT_LOG"
    KDIR=$WORK/kernel/$pkg
    if [ ! -f "$KDIR/.unpacked" ]; then
        say "downloading $pkg"
        rm -rf "$KDIR" "$WORK/debs"
        mkdir -p "$WORK/debs"
        (cd "$WORK/debs" && apt_get download -o APT::Sandbox::User=root "$pkg") \
            || fatal "could not download Debian package $pkg" "$APT_LOG"
        mkdir -p "$KDIR"
        dpkg-deb -x "$WORK"/debs/"$pkg"_*.deb "$KDIR" || fatal "could not unpack $WORK/debs/${pkg}_*.deb"
        rm -rf "$WORK/debs"
        touch "$KDIR/.unpacked"
    fi
    VMLINUZ=$(ls "$KDIR"/boot/vmlinuz-* 2>/dev/null | head -n 1)
    [ -f "$VMLINUZ" ] || fatal "package $pkg has no /boot/vmlinuz-*"
    KVER=${VMLINUZ##*/vmlinuz-}
    MODDIR=$KDIR/lib/modules/$KVER
    [ -d "$MODDIR" ] || fatal "package $pkg has no /lib/modules/$KVER"
    # The package ships no modules.dep (depmod runs at install time): make it.
    if [ ! -f "$MODDIR/modules.dep" ]; then
        busybox depmod -b "$KDIR" "$KVER" || fatal "busybox depmod failed for $MODDIR"
    fi
}

# mod_path NAME: a module's path under $MODDIR (dashes and underscores alike).
mod_path() {
    awk -F: -v want="${1//-/_}" '{
        n = $1; sub(/.*\//, "", n); sub(/\.ko.*$/, "", n); gsub(/-/, "_", n)
        if (n == want) { print $1; exit }
    }' "$MODDIR/modules.dep"
}
# mod_closure NAME...: the modules and their dependencies from modules.dep,
# dependencies first, each once.
mod_closure() {
    local seen=" " out=() m
    visit() {
        local path=$1 dep
        case $seen in *" $path "*) return ;; esac
        seen="$seen$path "
        for dep in $(awk -F': *' -v m="$path" '$1 == m { print $2; exit }' "$MODDIR/modules.dep"); do
            visit "$dep"
        done
        out+=("$path")
    }
    for m in "$@"; do
        local p
        p=$(mod_path "$m")
        [ -n "$p" ] || fatal "kernel $KVER has no module $m (not in $MODDIR/modules.dep)"
        visit "$p"
    done
    printf '%s\n' "${out[@]}"
}
# copy_modules DEST LISTFILE NAME...: copies the closure flat into DEST and
# writes the load order into LISTFILE.
copy_modules() {
    local dest=$1 list=$2 path paths
    shift 2
    mkdir -p "$dest"
    : > "$list"
    paths=$(mod_closure "$@") || exit 1
    for path in $paths; do
        case $path in *.ko) ;; *) fatal "module $path is compressed; this harness expects plain .ko files" ;; esac
        cp "$MODDIR/$path" "$dest/"
        echo "${path##*/}" >> "$list"
    done
}

# extract_vmlinux VMLINUZ OUT: the ELF vmlinux inside a bzImage. Reads the
# compressed payload's position from the setup header (payload_offset at
# 0x248, payload_length at 0x24c, after (setup_sects + 1) * 512 bytes), finds
# the compression from its magic, and decompresses it, as the kernel's
# scripts/extract-vmlinux does.
extract_vmlinux() {
    local in=$1 dest=$2 setup_sects poff plen start magic tool pkg trim=0
    u8() { od -An -tu1 -j "$1" -N1 "$in" | tr -d ' '; }
    u32() { od -An -tu4 -j "$1" -N4 "$in" | tr -d ' '; }
    [ "$(od -An -c -j $((0x202)) -N4 "$in" | tr -d ' ')" = HdrS ] || fatal "$in is not a bzImage (no HdrS)"
    setup_sects=$(u8 $((0x1f1)))
    [ "$setup_sects" = 0 ] && setup_sects=4
    poff=$(u32 $((0x248)))
    plen=$(u32 $((0x24c)))
    start=$(((setup_sects + 1) * 512 + poff))
    magic=$(od -An -tx1 -j "$start" -N6 "$in" | tr -d ' \n')
    case $magic in
        1f8b*) tool="gzip -dc" pkg=gzip ;;
        fd377a585a00) tool="xz -dc" pkg=xz-utils ;;
        5d0000*) tool="xz --format=lzma -dc" pkg=xz-utils ;;
        425a68*) tool="bzip2 -dc" pkg=bzip2 ;;
        894c5a*) tool="lzop -dc" pkg=lzop ;;
        # The kernel's lz4 is the legacy frame format with the 4-byte
        # uncompressed size appended (size_append), which lz4 -d would read
        # as one more block: leave it out.
        02214c18*) tool="lz4 -dc" pkg=lz4 trim=4 ;;
        28b52ffd*) tool="zstd -dc" pkg=zstd ;;
        *) fatal "$in: unknown compressed payload (magic $magic at offset $start)" ;;
    esac
    COMPRESSION=${tool%% *}
    ensure_packages "$pkg"
    tail -c +$((start + 1)) "$in" | head -c $((plen - trim)) | $tool > "$dest.tmp" 2> "$dest.err"
    [ "$(od -An -tx1 -N4 "$dest.tmp" | tr -d ' \n')" = 7f454c46 ] \
        || fatal "decompressing $in's payload with '$tool' did not give an ELF" "$dest.err"
    mv "$dest.tmp" "$dest"
    rm -f "$dest.err"
}

# ---------------------------------------------------------------- initramfs

# busybox_root DIR: a root with the static busybox, its applets as links,
# and the directories and /dev/console an initramfs needs.
busybox_root() {
    local root=$1 applet
    rm -rf "$root"
    mkdir -p "$root"/{bin,dev,proc,sys,tmp,mnt,lib/modules}
    cp /bin/busybox "$root/bin/busybox"
    for applet in $(busybox --list); do
        [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
    done
    # The kernel opens /dev/console for /init before devtmpfs is mounted.
    mknod -m 600 "$root/dev/console" c 5 1 || fatal "mknod $root/dev/console failed (the harness needs root)"
}
# mkcpio DIR OUT: a newc archive (uncompressed: quicker to unpack than to
# decompress, under TCG especially).
mkcpio() {
    (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) > "$2" \
        || fatal "cpio failed for $1"
}

build_level2() {
    local root=$WORK/l2/root
    mkdir -p "$WORK/l2"
    L2_DIR=$WORK/l2
    ln -f "$VMLINUZ" "$L2_DIR/vmlinuz" 2>/dev/null || cp "$VMLINUZ" "$L2_DIR/vmlinuz"
    if [ ! -f "$L2_DIR/vmlinux" ] || [ "$VMLINUZ" -nt "$L2_DIR/vmlinux" ]; then
        extract_vmlinux "$VMLINUZ" "$L2_DIR/vmlinux"
        echo "$COMPRESSION" > "$L2_DIR/vmlinux.compression"
    fi
    COMPRESSION=$(cat "$L2_DIR/vmlinux.compression" 2>/dev/null)
    busybox_root "$root"
    copy_modules "$root/lib/modules" "$root/lib/modules/modules.list" virtio_mmio virtio_blk virtio-rng
    install -m 755 "$E2E_SRC/guest-init.sh" "$root/init"
    install -m 755 "$E2E_SRC/guest-checks.sh" "$root/checks.sh"
    mkcpio "$root" "$L2_DIR/initramfs.cpio"
    # The disk image: fresh each run, since the guests write to it.
    rm -rf "$WORK/l2/disk-src" "$L2_DIR/disk.img"
    mkdir -p "$WORK/l2/disk-src"
    printf '%s\n' "$TOKEN" > "$WORK/l2/disk-src/hello.txt"
    mke2fs -q -F -t ext4 -L kindling-e2e -d "$WORK/l2/disk-src" "$L2_DIR/disk.img" 32M > "$WORK/l2/mke2fs.log" 2>&1 \
        || fatal "mke2fs -d failed" "$WORK/l2/mke2fs.log"
}

build_level1() {
    local root=$WORK/l1/root lib
    mkdir -p "$WORK/l1"
    busybox_root "$root"
    copy_modules "$root/lib/modules" "$root/lib/modules/kvm.list" kvm
    copy_modules "$root/lib/modules" "$WORK/l1/kvm-vendor.list" kvm-amd kvm-intel
    copy_modules "$root/lib/modules" "$root/lib/modules/virtio-pci.list" virtio_pci virtio_blk
    install -m 755 "$E2E_SRC/level1-init.sh" "$root/init"
    mkdir -p "$root/e2e" "$root/l2" "$root/microvm"
    install -m 755 "$E2E_SRC/level2-run.sh" "$root/e2e/level2-run.sh"
    # microvm and the shared libraries it needs, at the same paths.
    install -m 755 "$MICROVM" "$root/microvm/microvm"
    # A statically linked microvm (the default build) needs no libraries.
    for lib in $(ldd "$MICROVM" 2>/dev/null | grep -o -E '/[^ ]+' || true); do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
    ln "$L2_DIR/vmlinuz" "$root/l2/vmlinuz" 2>/dev/null || cp "$L2_DIR/vmlinuz" "$root/l2/vmlinuz"
    ln "$L2_DIR/vmlinux" "$root/l2/vmlinux" 2>/dev/null || cp "$L2_DIR/vmlinux" "$root/l2/vmlinux"
    cp "$L2_DIR/initramfs.cpio" "$root/l2/initramfs.cpio"
    cat > "$root/e2e/config" <<EOF
MICROVM=/microvm/microvm
L2_DIR=/l2
OUT_DIR=/tmp/l2-out
L2_TIMEOUT=$L2_TIMEOUT
L2_DISK=$HAS_DISK
L2_RNG=$HAS_ENTROPY
L2_TOKEN=$TOKEN
L2_CPUS=$L2_CPUS
L2_MEM_MIB=$L2_MEM_MIB
L2_CMDLINE_EXTRA="$L2_CMDLINE_EXTRA"
EOF
    mkcpio "$root" "$WORK/l1/initramfs.cpio"
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
            E2E-L1-INIT* | E2E-L1\ * | E2E-L1-DONE* | E2E-L2-BEGIN* | E2E-L2-END* | *"] serial| E2E-"*) say "  | $line" >&2 ;;
        esac
    done > "$1"
}

run_nested() {
    local drive=() status
    [ "$HAS_DISK" = 1 ] && drive=(-drive "file=$L2_DIR/disk.img,format=raw,if=virtio")
    say "level 1: qemu-system-x86_64 (TCG, -cpu EPYC,+svm) boots $KVER; timeout ${L1_TIMEOUT}s; console: $WORK/l1/console.log"
    T_L1_START=$(since_start)
    timeout -k 10 "$L1_TIMEOUT" qemu-system-x86_64 \
        -accel tcg,thread=multi -cpu EPYC,+svm -smp 2 -m 3G \
        -nodefaults -display none -no-user-config -monitor none -serial stdio -no-reboot \
        -kernel "$VMLINUZ" -initrd "$WORK/l1/initramfs.cpio" \
        -append "console=ttyS0 panic=-1 rdinit=/init loglevel=4" \
        "${drive[@]}" < /dev/null 2> "$WORK/l1/qemu.stderr" | timestamp "$WORK/l1/console.log"
    status=${PIPESTATUS[0]}
    T_L1_END=$(since_start)
    L1_STATUS=$status
    TRANSCRIPT=$WORK/l1/console.log
}

run_direct() {
    say "second level directly on this host's /dev/kvm ($MODE_WHY)"
    mkdir -p "$WORK/direct"
    T_L1_START=$(since_start)
    MICROVM=$MICROVM L2_DIR=$L2_DIR OUT_DIR=$WORK/direct/out L2_TIMEOUT=$L2_TIMEOUT \
        L2_DISK=$HAS_DISK L2_RNG=$HAS_ENTROPY L2_TOKEN=$TOKEN L2_CPUS=$L2_CPUS \
        L2_MEM_MIB=$L2_MEM_MIB L2_CMDLINE_EXTRA=$L2_CMDLINE_EXTRA \
        sh "$E2E_SRC/level2-run.sh" 2>&1 | timestamp "$WORK/direct/transcript.log"
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
# variant_log VARIANT: that run's serial console and microvm's stderr.
variant_log() {
    lines | grep -F "E2E-L2[$1] " | sed "s/^E2E-L2\[$1\] //"
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

assert_level1() {
    local l1log=$WORK/l1/console.log ctx
    ctx="---- level 1 console (last 60 lines of $l1log) ----"$'\n'"$(lines | tail -n 60)"$'\n'"---- qemu stderr (without its TCG feature warnings) ----"$'\n'"$(grep -v "TCG doesn't support requested feature" "$WORK/l1/qemu.stderr" | tail -n 20)"
    if ! lines | has '^E2E-L1-INIT'; then
        if [ "$L1_STATUS" = 124 ] || [ "$L1_STATUS" = 137 ]; then
            fail level1/boot "the first level did not reach /init within ${L1_TIMEOUT}s" "$ctx"
        else
            fail level1/boot "the first level did not reach /init (qemu exit status $L1_STATUS)" "$ctx"
        fi
        return 1
    fi
    T_L1_INIT=$(awk '/ E2E-L1-INIT/ { print $1; exit }' "$TRANSCRIPT")
    pass level1/boot "reached /init $(fmt_s $((T_L1_INIT - T_L1_START))) after qemu started"
    local r
    r=$(lines | sed -n 's/^E2E-L1 kvm: //p' | head -n 1)
    case $r in
        ok*) pass level1/kvm "${r#ok }" ;;
        *) fail level1/kvm "${r#FAIL }" "$ctx"; return 1 ;;
    esac
    if [ "$HAS_DISK" = 1 ]; then
        for step in disk-in disk-out; do
            r=$(lines | sed -n "s/^E2E-L1 $step: //p" | head -n 1)
            case $r in
                ok*) pass "level1/$step" "${r#ok }" ;;
                *) fail "level1/$step" "${r:-no E2E-L1 $step line}" "$ctx" ;;
            esac
        done
    fi
    if lines | has '^E2E-L1-DONE'; then
        if [ "$L1_STATUS" = 0 ]; then
            pass level1/poweroff "qemu exited 0 after the first level powered off"
        else
            fail level1/poweroff "qemu exit status $L1_STATUS after the first level finished" "$ctx"
        fi
    elif [ "$L1_STATUS" = 124 ] || [ "$L1_STATUS" = 137 ]; then
        fail level1/finish "the first level did not finish within ${L1_TIMEOUT}s (killed)" "$ctx"
    else
        fail level1/finish "the first level ended early (qemu exit status $L1_STATUS)" "$ctx"
    fi
}

assert_variant() {
    local v=$1 end status wall ctx timeout_s bt r
    ctx="---- $v: the second-level guest's console and microvm's stderr ----"$'\n'"$(variant_log "$v" | tail -n 80)"
    end=$(lines | grep "^E2E-L2-END $v " | head -n 1)
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
            got=$(debugfs -R "cat /from-guest-$v.txt" "$L2_DIR/disk.img" 2>/dev/null)
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

    # How the VM ended: ACPI power-off once microvm has ACPI, else reboot -f
    # through the i8042. A guest whose power-off or reboot did not work falls
    # through to a kernel panic, which panic=-1 turns into a reset: not a pass.
    local name how after killed=""
    how=$(variant_log "$v" | sed -n "s/^serial| E2E-END $v: //p" | head -n 1)
    after=$(variant_log "$v" | grep -E -m1 '^serial\| .*(Kernel panic|E2E-END .*still running)' | sed 's/^serial| //')
    [ -n "$wall" ] && [ "$wall" -ge $((timeout_s * 1000)) ] && killed="; microvm killed after ${timeout_s}s"
    if variant_log "$v" | has '^serial| E2E-INFO acpi: present'; then
        name=poweroff
        # The pvh run reboots through the ACPI reset register instead.
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

# ---------------------------------------------------------------- main

mkdir -p "$WORK"
: > "$APT_LOG"
cd "$REPO" || exit 1
detect_mode
say "mode: $MODE ($MODE_WHY); work dir: $WORK"

pkgs=(busybox-static cpio e2fsprogs)
[ "$MODE" = nested ] && pkgs+=(qemu-system-x86)
ensure_packages "${pkgs[@]}"
fetch_kernel
say "kernel: $KVER ($VMLINUZ)"

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
HAS_DISK=0
HAS_ENTROPY=0
grep -q -- '--disk' <<< "$help" && HAS_DISK=1
grep -q -- '--entropy' <<< "$help" && HAS_ENTROPY=1
# Firecracker's control plane: a fourth run configured by a config file.
grep -q -- '--config-file' <<< "$help" && VARIANTS="$VARIANTS api"
say "microvm: $MICROVM (--disk: $([ $HAS_DISK = 1 ] && echo yes || echo 'not yet'), --entropy: $([ $HAS_ENTROPY = 1 ] && echo yes || echo 'not yet'))"

TOKEN=kindling-e2e-$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')
build_level2
say "second level: vmlinuz ($(stat -c %s "$L2_DIR/vmlinuz") bytes), vmlinux ($(stat -c %s "$L2_DIR/vmlinux") bytes, payload: $COMPRESSION), initramfs ($(stat -c %s "$L2_DIR/initramfs.cpio") bytes: $(tr '\n' ' ' < "$WORK/l2/root/lib/modules/modules.list")), disk.img"
if [ "$MODE" = nested ]; then
    build_level1
    say "first level: initramfs $(stat -c %s "$WORK/l1/initramfs.cpio") bytes"
fi
T_BUILT=$(since_start)

declare -A WALL_MS BOOT_US
if [ "$MODE" = nested ]; then
    run_nested
    assert_level1
else
    run_direct
fi
for v in $VARIANTS; do
    assert_variant "$v"
done
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
printf '  %-52s %s\n' "preparation (packages, kernel, build, images)" "$(fmt_s "$T_BUILT")"
if [ "$MODE" = nested ]; then
    [ -n "${T_L1_INIT:-}" ] && printf '  %-52s %s\n' "level 1 boot (qemu start to /init)" "$(fmt_s $((T_L1_INIT - T_L1_START)))"
    printf '  %-52s %s\n' "level 1 total (qemu start to exit)" "$(fmt_s $((T_L1_END - T_L1_START)))"
fi
for v in $VARIANTS; do
    [ -n "${BOOT_US[$v]:-}" ] && printf '  %-52s %s\n' "level 2 $v boot (microvm start to boot timer)" "$(fmt_s $((BOOT_US[$v] / 1000)))"
    [ -n "${WALL_MS[$v]:-}" ] && printf '  %-52s %s\n' "level 2 $v microvm lifetime" "$(fmt_s "${WALL_MS[$v]}")"
done
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
echo "e2e: $PASSED passed, $FAILED failed, $SKIPPED skipped"
[ "$FAILED" = 0 ]
