# shellcheck shell=bash
# Shared by scripts/guest-image.sh and scripts/nested-run.sh (sourced, bash):
# Debian's kernel and busybox from the Debian archive, unpacked without
# installing them (apt-get download, dpkg-deb -x), the kernel's modules with
# their dependencies, the ELF vmlinux inside a bzImage, busybox roots and
# cpio archives.
#
# The caller sets DK_NAME (its name, for messages) and may set
#   KINDLING_CACHE   where packages are unpacked; default <repo>/target/debian
#   DK_LOG           where apt's output goes; default $KINDLING_CACHE/apt.log
#   DK_QUIET=1       no progress lines
# Failures print "DK_NAME: error: ..." on stderr and exit 1.

DK_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
KINDLING_CACHE=${KINDLING_CACHE:-$DK_REPO/target/debian}
DK_LOG=${DK_LOG:-$KINDLING_CACHE/apt.log}
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
mkdir -p "$KINDLING_CACHE"

dk_say() { [ "${DK_QUIET:-0}" = 1 ] || printf '%s: %s\n' "$DK_NAME" "$*" >&2; }
# dk_die MESSAGE [FILE...]: the message, the last lines of each FILE, exit 1.
dk_die() {
    printf '%s: error: %s\n' "$DK_NAME" "$1" >&2
    shift
    local f
    for f in "$@"; do
        [ -s "$f" ] || continue
        printf -- '---- %s (last 30 lines) ----\n' "$f" >&2
        tail -n 30 "$f" >&2
    done
    exit 1
}

DK_APT_UPDATED=0
dk_apt_update() {
    [ "$DK_APT_UPDATED" = 1 ] && return 0
    DK_APT_UPDATED=1
    dk_say "apt-get update"
    apt-get -o DPkg::Lock::Timeout=120 update >> "$DK_LOG" 2>&1
}
# dk_apt_get ARGS...: apt-get, once more after `apt-get update` if the
# package lists are missing or stale.
dk_apt_get() {
    command -v apt-get > /dev/null || dk_die "apt-get not found: this needs a Debian-like system (Debian, Ubuntu, ...)"
    local lock=(-o DPkg::Lock::Timeout=120)
    DEBIAN_FRONTEND=noninteractive apt-get "${lock[@]}" "$@" >> "$DK_LOG" 2>&1 && return 0
    [ "$DK_APT_UPDATED" = 1 ] && return 1
    dk_apt_update || return 1
    DEBIAN_FRONTEND=noninteractive apt-get "${lock[@]}" "$@" >> "$DK_LOG" 2>&1
}
dk_installed() { dpkg-query -W -f='${Status}' "$1" 2> /dev/null | grep 'install ok installed' > /dev/null; }
# dk_ensure_packages PKG...: installs the missing ones on the host (root).
dk_ensure_packages() {
    local missing=() p
    for p in "$@"; do dk_installed "$p" || missing+=("$p"); done
    [ ${#missing[@]} = 0 ] && return 0
    [ "$(id -u)" = 0 ] || dk_die "missing Debian packages: ${missing[*]} (install them, or run as root so this script can: apt-get install ${missing[*]})"
    dk_say "installing Debian packages: ${missing[*]}"
    dk_apt_get install -y --no-install-recommends "${missing[@]}" \
        || dk_die "could not install Debian packages: ${missing[*]} (apt-get output in $DK_LOG)" "$DK_LOG"
    for p in "${missing[@]}"; do
        dk_installed "$p" || dk_die "package $p is still not installed after apt-get install" "$DK_LOG"
    done
}

# dk_unpack PKG: downloads a Debian package (never installs it) and unpacks
# it under $KINDLING_CACHE/PKG; sets DK_DIR.
dk_unpack() {
    local pkg=$1 tmp
    DK_DIR=$KINDLING_CACHE/$pkg
    [ -f "$DK_DIR/.unpacked" ] && return 0
    dk_say "downloading $pkg"
    tmp=$KINDLING_CACHE/.download.$$
    rm -rf "$DK_DIR" "$tmp"
    mkdir -p "$tmp"
    local sandbox=()
    [ "$(id -u)" = 0 ] && sandbox=(-o APT::Sandbox::User=root)
    (cd "$tmp" && dk_apt_get download "${sandbox[@]}" "$pkg") \
        || { rm -rf "$tmp"; dk_die "could not download Debian package $pkg (apt-get output in $DK_LOG)" "$DK_LOG"; }
    mkdir -p "$DK_DIR"
    dpkg-deb -x "$tmp"/*.deb "$DK_DIR" || { rm -rf "$tmp"; dk_die "could not unpack the $pkg package"; }
    rm -rf "$tmp"
    touch "$DK_DIR/.unpacked"
}

# dk_resolve PKG: the versioned package a metapackage (linux-image-cloud-amd64)
# depends on, or PKG itself.
dk_resolve() {
    local deps pkg
    deps=$(apt-cache depends "$1" 2> /dev/null)
    if ! grep -q 'Depends: linux-image-' <<< "$deps"; then
        dk_apt_update
        deps=$(apt-cache depends "$1" 2>> "$DK_LOG")
    fi
    pkg=$(awk '/Depends: linux-image-/ { print $2; exit }' <<< "$deps")
    if [ -z "$pkg" ] && apt-cache show "$1" > /dev/null 2>&1; then
        pkg=$1
    fi
    [ -n "$pkg" ] || dk_die "no Debian package $1 (or what it depends on) in the apt lists" "$DK_LOG"
    echo "$pkg"
}

# dk_fetch_busybox: Debian's static busybox, unpacked; sets BUSYBOX.
dk_fetch_busybox() {
    dk_unpack busybox-static
    BUSYBOX=$DK_DIR/bin/busybox
    [ -x "$BUSYBOX" ] || dk_die "the busybox-static package has no /bin/busybox"
}

# dk_fetch_kernel PKG: Debian's kernel package, unpacked (the host's /boot
# is not touched), with a modules.dep; sets KPKG, KDIR, KVER, VMLINUZ, MODDIR.
# Needs BUSYBOX (its depmod).
dk_fetch_kernel() {
    KPKG=$(dk_resolve "$1") || exit 1
    dk_unpack "$KPKG"
    KDIR=$DK_DIR
    VMLINUZ=$(ls "$KDIR"/boot/vmlinuz-* 2> /dev/null | head -n 1)
    [ -f "$VMLINUZ" ] || dk_die "package $KPKG has no /boot/vmlinuz-*"
    KVER=${VMLINUZ##*/vmlinuz-}
    MODDIR=$KDIR/lib/modules/$KVER
    [ -d "$MODDIR" ] || dk_die "package $KPKG has no /lib/modules/$KVER"
    # The package ships no modules.dep (depmod runs at install time): make it.
    if [ ! -f "$MODDIR/modules.dep" ]; then
        "$BUSYBOX" depmod -b "$KDIR" "$KVER" || dk_die "busybox depmod failed for $MODDIR"
    fi
}

# dk_mod_path NAME: a module's path under $MODDIR (dashes and underscores
# alike); empty when the kernel has no such module.
dk_mod_path() {
    awk -F: -v want="${1//-/_}" '{
        n = $1; sub(/.*\//, "", n); sub(/\.ko.*$/, "", n); gsub(/-/, "_", n)
        if (n == want) { print $1; exit }
    }' "$MODDIR/modules.dep"
}
# dk_mod_builtin NAME: whether NAME is built into the kernel.
dk_mod_builtin() {
    [ -f "$MODDIR/modules.builtin" ] || return 1
    awk -v want="${1//-/_}" '{
        n = $1; sub(/.*\//, "", n); sub(/\.ko.*$/, "", n); gsub(/-/, "_", n)
        if (n == want) { found = 1; exit }
    } END { exit !found }' "$MODDIR/modules.builtin"
}
# dk_copy_modules DEST LISTFILE NAME...: copies the modules and their
# dependencies (from modules.dep, dependencies first, each once) flat into
# DEST and appends their file names, in load order, to LISTFILE. A NAME with
# a leading '?' is optional (skipped when the kernel lacks it); a built-in
# module is skipped too.
dk_copy_modules() {
    local dest=$1 list=$2 seen=" " m name p path
    shift 2
    mkdir -p "$dest"
    touch "$list"
    dk_visit() {
        local path=$1 dep
        case $seen in *" $path "*) return ;; esac
        seen="$seen$path "
        for dep in $(awk -F': *' -v m="$path" '$1 == m { print $2; exit }' "$MODDIR/modules.dep"); do
            dk_visit "$dep"
        done
        case $path in *.ko) ;; *) dk_die "module $path is compressed; only plain .ko files are supported" ;; esac
        cp "$MODDIR/$path" "$dest/"
        echo "${path##*/}" >> "$list"
    }
    for m in "$@"; do
        name=${m#\?}
        p=$(dk_mod_path "$name")
        if [ -z "$p" ]; then
            dk_mod_builtin "$name" && continue
            [ "$name" != "$m" ] && continue
            dk_die "kernel $KVER has no module $name (not in $MODDIR/modules.dep)"
        fi
        dk_visit "$p"
    done
}

# dk_extract_vmlinux VMLINUZ OUT: the ELF vmlinux inside a bzImage. Reads the
# compressed payload's position from the setup header (payload_offset at
# 0x248, payload_length at 0x24c, after (setup_sects + 1) * 512 bytes), finds
# the compression from its magic and decompresses it, as the kernel's
# scripts/extract-vmlinux does. Sets COMPRESSION.
dk_extract_vmlinux() {
    local in=$1 dest=$2 setup_sects poff plen start magic tool pkg trim=0
    dk_u8() { od -An -tu1 -j "$1" -N1 "$in" | tr -d ' '; }
    dk_u32() { od -An -tu4 -j "$1" -N4 "$in" | tr -d ' '; }
    [ "$(od -An -c -j $((0x202)) -N4 "$in" | tr -d ' ')" = HdrS ] || dk_die "$in is not a bzImage (no HdrS)"
    setup_sects=$(dk_u8 $((0x1f1)))
    [ "$setup_sects" = 0 ] && setup_sects=4
    poff=$(dk_u32 $((0x248)))
    plen=$(dk_u32 $((0x24c)))
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
        *) dk_die "$in: unknown compressed payload (magic $magic at offset $start)" ;;
    esac
    COMPRESSION=${tool%% *}
    command -v "$COMPRESSION" > /dev/null || dk_ensure_packages "$pkg"
    # tail dies of SIGPIPE when head has its bytes: the ELF check below is
    # what tells success.
    tail -c +$((start + 1)) "$in" | head -c $((plen - trim)) | $tool > "$dest.tmp" 2> "$dest.err" || :
    [ "$(od -An -tx1 -N4 "$dest.tmp" | tr -d ' \n')" = 7f454c46 ] \
        || dk_die "decompressing $in's payload with '$tool' did not give an ELF" "$dest.err"
    mv "$dest.tmp" "$dest"
    rm -f "$dest.err"
}

# dk_busybox_root DIR: a fresh root with the static busybox in /bin, its
# applets as links, and the usual directories. As root it also makes
# /dev/console, which the kernel opens for the first process before
# anything mounts devtmpfs (the init scripts cope without it).
dk_busybox_root() {
    local root=$1 applet
    rm -rf "$root"
    mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,run,mnt,root,etc,lib/modules}
    cp "$BUSYBOX" "$root/bin/busybox"
    for applet in $("$BUSYBOX" --list); do
        [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
    done
    ln -s ../bin/busybox "$root/sbin/init"
    if [ "$(id -u)" = 0 ]; then
        mknod -m 600 "$root/dev/console" c 5 1 || dk_die "mknod $root/dev/console failed"
    fi
}

# dk_mkcpio DIR OUT: a newc archive owned by root (uncompressed: quicker to
# unpack than to decompress, under emulation especially).
dk_mkcpio() {
    command -v cpio > /dev/null || dk_ensure_packages cpio
    (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) > "$2.tmp" \
        || dk_die "cpio failed for $1"
    mv "$2.tmp" "$2"
}
