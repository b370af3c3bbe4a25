#!/bin/sh
# Runs the second level: microvm boots the Debian kernel, as the
# bzImage (vmlinuz as Debian ships it), as the extracted ELF vmlinux through
# the 64-bit Linux entry, and as that vmlinux through its PVH entry; with
# L2_SNAPSHOT=1 a fourth time as the bzImage snapshotted mid-way and
# restored in a new microvm process; and, when microvm has Firecracker's
# control plane, the vmlinux run is described by a Firecracker config file
# (`--no-api --config-file`) and one more run, `api`, is the bzImage
# configured and started through the API socket (`--api-sock`, driven with
# HTTP requests by e2e-sock), paused and resumed while it runs.
#
# With L2_NET=1 this level has a network for the guests: a TAP device
# (kt0, link-local 169.254.42.1/24) with busybox udhcpd on it (the guest
# image's udhcpc gets its address from it, a static lease per MAC), and the
# bzimage and api runs get a virtio-net device on it (--net tap=kt0,mac=...,
# or PUT /network-interfaces) and a vsock device (--vsock, or PUT /vsock).
# For those runs this level serves random data three ways: L2_TCP_BYTES
# (4 MiB) from a TCP listener on 169.254.42.1:5001, and L2_VSOCK_BYTES
# (1 MiB) through the Firecracker handshake to the guest's vsock listener
# on port 5000 on the device's Unix socket and from a listener at
# <uds>_6000 for the guest's connection to host port 6000 (sizes and
# sha256s in the guest's e2e.tcp and e2e.vsock); each prints what it
# received from the guest (its size and sha256, and e2e-sock's timing) for
# the harness to compare.
#
# The api run is the rate-limited one: its drive has L2_RATE_DISK as its
# rate_limiter and its interface L2_RATE_RX and L2_RATE_TX as its
# rx_rate_limiter and tx_rate_limiter (Firecracker's bandwidth bucket:
# size, one_time_burst, refill_time); its TCP transfer is L2_RATE_BYTES
# each way, one direction after the other (into the guest first), which
# the guest and this level time at their receiving ends.
# The guests of both runs read L2_DD_BYTES of their disk with O_DIRECT,
# timed (the bzimage run's unthrottled, for comparison).
#
# Before the runs this level lists its network interfaces (E2E-L2-IFACES):
# in the first level, started without a network card (-nic none), only lo
# and the TAP.
#
# With L2_JAILER=1 (the harness shipped kindling-jailer) one more run,
# `jailer`, boots the PVH vmlinux under the jailer: uid/gid 4242 (not root),
# the jail's root (pivot_root, or its fallback on this level's initramfs),
# new mount, PID and network namespaces, a cgroup v2 with cpu.max,
# memory.max and pids.max (this level's cgroup2 is mounted first if it is
# not), and rlimits (no-file, fsize). While it runs, jail_watch reads the
# VMM's cgroup files and /proc/PID (status, root, ns, limits, net/dev) from
# this level and prints them as `jail ...` lines after the run.
#
# Each run is under a timeout, and prints the transcript for the harness to
# assert:
#
#   E2E-L2-BEGIN <variant>
#   E2E-L2[<variant>] serial| <guest console line>
#   E2E-L2[<variant>] vmm| <microvm stderr line>
#   E2E-L2-END <variant> status=<exit status> wall_ms=<VMM process lifetime>
#   E2E-L2-RETRY <variant>: <why>     (a triple fault or a hang: the run
#                                      once more, from E2E-L2-BEGIN)
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
#   L2_NET        1: the network and vsock checks (above)
#   L2_TCP_BYTES, L2_VSOCK_BYTES, L2_RATE_BYTES, L2_DD_BYTES,
#   L2_RATE_RX, L2_RATE_TX, L2_RATE_DISK
#                 the transfers' sizes and the api run's limits (above;
#                 a limit is "SIZE ONE_TIME_BURST REFILL_TIME_MS")
#   L2_BUSYBOX    a busybox for its udhcpd, when this level has no udhcpd
#                 command (a host in direct mode)
#   E2E_SOCK      the e2e-sock tool (default: L2_DIR/e2e-sock)
#   L2_JAILER     1: also the jailer run (above)
#   JAILER        kindling-jailer (default: L2_DIR/kindling-jailer)
#   L2_JAIL_UID, L2_JAIL_GID, L2_JAIL_CPU_MAX, L2_JAIL_MEM_MAX,
#   L2_JAIL_PIDS_MAX, L2_JAIL_NOFILE
#                 the jailer run's user, cgroup and rlimit values
#   L2_CPUS, L2_MEM_MIB, L2_CMDLINE_EXTRA
set -u
if [ -n "${NESTED_DIR:-}" ]; then
    . "$NESTED_DIR/e2e.config"
    L2_DIR=$NESTED_DIR
    L2_DISK_IMG=$NESTED_DIR/disk0.img
fi
E2E_SOCK=${E2E_SOCK:-$L2_DIR/e2e-sock}
JAILER=${JAILER:-$L2_DIR/kindling-jailer}

uptime_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }
# prefix TEXT: each input line with TEXT before it and no CR, as it comes.
prefix() { awk -v p="$1" '{ sub(/\r$/, ""); print p $0; fflush() }'; }

mkdir -p "$OUT_DIR"
# Info: microvm's stderr then says why the VM ended (power-off, reset,
# triple fault, a vCPU error), which tells a guest crash from a clean end.
log_flags=""
"$MICROVM" --help 2>/dev/null | grep -q -- '--level' && log_flags="--level Info"
# The first second-level boot after the first level starts is single-CPU:
# about one boot in fifty of a 2-vCPU guest hung here while Linux started
# its second CPU (the console stops at "x86: Booting SMP configuration:";
# seen only in a first boot, a fault of the emulated first level as far as
# we can tell). Only the bzimage run has two vCPUs (and checks both come
# up, through the ACPI MADT); the others have one.
variants="vmlinux bzimage pvh"
[ "${L2_SNAPSHOT:-0}" = 1 ] && variants="$variants snapshot"
CONFIG_FILE=0
if "$MICROVM" --help 2>/dev/null | grep -q -- '--config-file'; then
    CONFIG_FILE=1
    variants="$variants api"
fi
[ "${L2_JAILER:-0}" = 1 ] && variants="$variants jailer"

# ---------------------------------------------------------------- network

# The guests' network: the first level's end of it.
# Link-local addresses (169.254.0.0/16, outside its first and last /24,
# which RFC 3927 reserves), in a /24: in direct mode a /16 on the TAP would
# take the host's route to link-local services such as a cloud's
# 169.254.169.254.
NET_TAP=kt0
NET_HOST=169.254.42.1
NET_UP=0
L2_TCP_BYTES=${L2_TCP_BYTES:-4194304}
L2_VSOCK_BYTES=${L2_VSOCK_BYTES:-1048576}
L2_RATE_BYTES=${L2_RATE_BYTES:-1048576}
L2_DD_BYTES=${L2_DD_BYTES:-3145728}
L2_RATE_RX=${L2_RATE_RX:-65536 65536 125}
L2_RATE_TX=${L2_RATE_TX:-32768 65536 125}
L2_RATE_DISK=${L2_RATE_DISK:-131072 262144 125}
# The MAC and the address (a static DHCP lease) of each run with a network.
net_mac() { case $1 in bzimage) echo 02:4b:44:00:00:01 ;; api) echo 02:4b:44:00:00:02 ;; esac; }
net_ip() { case $1 in bzimage) echo 169.254.42.2 ;; api) echo 169.254.42.3 ;; esac; }
# What this level sends: net_data BYTES is a file of that many random
# bytes, made once, and net_sha BYTES its sha256.
net_data() {
    [ -f "$OUT_DIR/l1-data-$1.bin" ] || head -c "$1" /dev/urandom > "$OUT_DIR/l1-data-$1.bin"
    echo "$OUT_DIR/l1-data-$1.bin"
}
net_sha() {
    [ -f "$OUT_DIR/l1-data-$1.sha" ] || sha256sum < "$(net_data "$1")" | cut -d' ' -f1 > "$OUT_DIR/l1-data-$1.sha"
    cat "$OUT_DIR/l1-data-$1.sha"
}
# The TCP transfer's size: the rate-limited api run's is L2_RATE_BYTES.
net_tcp_bytes() { case $1 in api) echo "$L2_RATE_BYTES" ;; *) echo "$L2_TCP_BYTES" ;; esac; }
# rate_json "SIZE BURST REFILL_MS": a Firecracker rate_limiter body.
rate_json() {
    set -- $1
    echo "{\"bandwidth\": {\"size\": $1, \"one_time_burst\": $2, \"refill_time\": $3}}"
}
net_setup() {
    # A persistent TAP device (busybox tunctl; iproute2 on a host).
    [ -e /dev/net/tun ] || modprobe tun 2>/dev/null
    if ! { tunctl -t "$NET_TAP" > /dev/null 2>&1 || ip tuntap add "$NET_TAP" mode tap 2>/dev/null; }; then
        echo "E2E-L2-NET FAIL cannot create the TAP device $NET_TAP (/dev/net/tun: $(ls -l /dev/net/tun 2>&1))"
        return 1
    fi
    # (A TAP left over by an interrupted run on a host keeps its address.)
    ip addr flush dev "$NET_TAP" 2>/dev/null
    if ! { ip addr add "$NET_HOST/24" dev "$NET_TAP" && ip link set "$NET_TAP" up; }; then
        echo "E2E-L2-NET FAIL cannot give $NET_TAP the address $NET_HOST/24"
        return 1
    fi
    # busybox udhcpd answers the guest image's udhcpc.
    {
        echo "interface $NET_TAP"
        echo "start 169.254.42.100"
        echo "end 169.254.42.120"
        echo "lease_file $OUT_DIR/udhcpd.leases"
        echo "option subnet 255.255.255.0"
        echo "static_lease $(net_mac bzimage) $(net_ip bzimage)"
        echo "static_lease $(net_mac api) $(net_ip api)"
    } > "$OUT_DIR/udhcpd.conf"
    : > "$OUT_DIR/udhcpd.leases"
    $UDHCPD -f "$OUT_DIR/udhcpd.conf" > "$OUT_DIR/udhcpd.log" 2>&1 &
    UDHCPD_PID=$!
    echo "E2E-L2-NET ok TAP $NET_TAP $NET_HOST/24, udhcpd pid $UDHCPD_PID"
}
UDHCPD=udhcpd
command -v udhcpd > /dev/null || UDHCPD="${L2_BUSYBOX:-busybox} udhcpd"
if [ "${L2_NET:-0}" = 1 ]; then
    if [ ! -x "$E2E_SOCK" ]; then
        echo "E2E-L2-NET FAIL no e2e-sock tool at $E2E_SOCK"
    elif ! $UDHCPD --help > /dev/null 2>&1; then
        echo "E2E-L2-NET FAIL no udhcpd (busybox) in this level"
    elif net_setup; then
        NET_UP=1
    fi
fi
# This level's network interfaces: in the first level, lo and the TAP only
# (no network card: QEMU runs with -nic none).
echo "E2E-L2-IFACES $(ls /sys/class/net | sort | tr '\n' ' ' | sed 's/ $//')"
# net_start VARIANT UDS: this level's three services for the run, in the
# background (their pids in NET_PIDS, in the order net_report reads them).
net_start() {
    NET_PIDS=""
    "$E2E_SOCK" -t "$L2_TIMEOUT" tcp-listen:5001 < "$(net_data "$(net_tcp_bytes "$1")")" \
        > "$OUT_DIR/$1.tcp.in" 2> "$OUT_DIR/$1.tcp.err" &
    NET_PIDS="$NET_PIDS $!"
    "$E2E_SOCK" -t "$L2_TIMEOUT" unix-listen:"$2"_6000 < "$(net_data "$L2_VSOCK_BYTES")" \
        > "$OUT_DIR/$1.vsock-connect.in" 2> "$OUT_DIR/$1.vsock-connect.err" &
    NET_PIDS="$NET_PIDS $!"
    # Retried until the guest listens (the device closes the connection
    # while nothing listens on the port).
    "$E2E_SOCK" -t "$L2_TIMEOUT" -r "$L2_TIMEOUT" -c 5000 unix:"$2" < "$(net_data "$L2_VSOCK_BYTES")" \
        > "$OUT_DIR/$1.vsock-listen.in" 2> "$OUT_DIR/$1.vsock-listen.err" &
    NET_PIDS="$NET_PIDS $!"
}
# net_report VARIANT: what each service received, for the harness:
#   l1 <service>: received <bytes> bytes sha256 <hash> status <exit status>
# running PID: the process is alive (not a zombie waiting for this shell).
running() {
    state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)
    [ -n "$state" ] && [ "$state" != Z ]
}
net_report() {
    # A moment for them to finish writing what they received (the guest
    # may power off right after its last transfer).
    i=0
    while [ "$i" -lt 50 ]; do
        alive=0
        for pid in $NET_PIDS; do running "$pid" && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
        i=$((i + 1))
    done
    set -- "$1"
    for pid in $NET_PIDS; do
        # Still running: the guest never came (or stopped halfway).
        kill "$pid" 2>/dev/null
        wait "$pid"
        set -- "$@" "$?"
    done
    v=$1
    shift
    for service in tcp vsock-connect vsock-listen; do
        f=$OUT_DIR/$v.$service
        echo "l1 $service: received $(wc -c < "$f.in") bytes sha256 $(sha256sum < "$f.in" | cut -d' ' -f1) status $1"
        sed "s/^/l1 $service: /" "$f.err"
        rm -f "$f.in" "$f.err"
        shift
    done
}

# ---------------------------------------------------------------- API socket

# api METHOD URI [BODY]: one request on API_SOCK (retried while the socket
# is not there yet), one line:
#   api <METHOD> <URI> -> <status> <body>
api() {
    out=$("$E2E_SOCK" -t 60 -r 20 http "unix:$API_SOCK" "$@" 2>&1)
    echo "api $1 $2 -> $out"
}
# cpu_ticks PID: the CPU time of the process, all its threads, user and
# system, in clock ticks (fields 14 and 15 of /proc/PID/stat).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null; }
# vmm_pid: the pid of the microvm serving API_SOCK (not the timeout around it).
vmm_pid() {
    for d in /proc/[0-9]*; do
        case $(tr '\0' ' ' 2>/dev/null < "$d/cmdline") in
            "$MICROVM --api-sock $API_SOCK "*) echo "${d#/proc/}"; return ;;
        esac
    done
}
# api_driver SOCKET KERNEL CMDLINE UDS: configures and starts the api run
# through its API socket, then pauses and resumes it.
api_driver() {
    API_SOCK=$1
    api GET /
    api PUT /boot-source "{\"kernel_image_path\": \"$2\", \"initrd_path\": \"$L2_DIR/initrd.cpio\", \"boot_args\": \"$3\"}"
    api PUT /machine-config "{\"vcpu_count\": $cpus, \"mem_size_mib\": $L2_MEM_MIB}"
    # The rate-limited run: the drive's and the interface's limits.
    api PUT /drives/rootfs "{\"drive_id\": \"rootfs\", \"path_on_host\": \"$L2_DISK_IMG\", \"is_root_device\": false, \"is_read_only\": false, \"rate_limiter\": $(rate_json "$L2_RATE_DISK")}"
    api PUT /entropy "{}"
    if [ "$NET_UP" = 1 ]; then
        api PUT /network-interfaces/eth0 "{\"iface_id\": \"eth0\", \"host_dev_name\": \"$NET_TAP\", \"guest_mac\": \"$(net_mac api)\", \"rx_rate_limiter\": $(rate_json "$L2_RATE_RX"), \"tx_rate_limiter\": $(rate_json "$L2_RATE_TX")}"
        api PUT /vsock "{\"guest_cid\": 3, \"uds_path\": \"$4\"}"
    fi
    api GET /vm/config
    api PUT /actions '{"action_type": "InstanceStart"}'
    api GET /
    # Paused at once, while the guest boots (its vCPUs busy), for two
    # seconds, then resumed: the guest must still run all its checks. The
    # VMM's CPU time shows whether its vCPUs stopped meanwhile (in clock
    # ticks, 1/100 s), and, for comparison, how busy they are in the second
    # after the resume (when the guest is still running then: a guest on
    # real hardware may be done by then).
    pid=$(vmm_pid)
    api PATCH /vm '{"state": "Paused"}'
    api GET /
    t0=$(cpu_ticks "$pid")
    sleep 2
    t1=$(cpu_ticks "$pid")
    api PATCH /vm '{"state": "Resumed"}'
    api GET /
    t2=$(cpu_ticks "$pid")
    sleep 1
    t3=$(cpu_ticks "$pid")
    if [ -n "$t0" ] && [ -n "$t1" ]; then
        running=""
        [ -n "$t2" ] && [ -n "$t3" ] && running=", running $((t3 - t2)) ticks in the 1 s after the resume"
        echo "api cpu: pid $pid: paused $((t1 - t0)) ticks in 2 s$running"
    else
        echo "api cpu: not measured (microvm pid '$pid', ticks '$t0' '$t1')"
    fi
}

# ---------------------------------------------------------------- jailer

# The jailer run's jail: next to the disk image, so that --file hard-links
# it (the guest's writes reach the image) instead of copying it.
JAIL_UID=${L2_JAIL_UID:-4242}
JAIL_GID=${L2_JAIL_GID:-4242}
JAIL_ID=e2e-jailer
JAIL_BASE=$(dirname "$L2_DISK_IMG")/jail
JAIL_DIR=$JAIL_BASE/${MICROVM##*/}/$JAIL_ID
JAIL_CPU_MAX=${L2_JAIL_CPU_MAX:-100000 100000}
JAIL_MEM_MAX=${L2_JAIL_MEM_MAX:-402653184}
JAIL_PIDS_MAX=${L2_JAIL_PIDS_MAX:-32}
JAIL_NOFILE=${L2_JAIL_NOFILE:-256}
# jail_setup: this level's cgroup2 (mounted at /sys/fs/cgroup when it is
# not mounted yet: scripts/nested-run.sh's first level mounts it there) and its
# controllers, as `jail controllers: ...` for the harness.
jail_setup() {
    CG_MOUNT=$(awk '{ for (i = 1; i <= NF; i++) if ($i == "-") { if ($(i + 1) == "cgroup2") print $5; break } }' /proc/self/mountinfo | head -n 1)
    if [ -z "$CG_MOUNT" ]; then
        mkdir -p /sys/fs/cgroup
        if mount -t cgroup2 cgroup2 /sys/fs/cgroup 2> "$OUT_DIR/cgroup2.err"; then
            CG_MOUNT=/sys/fs/cgroup
            echo "jail cgroup2: mounted at $CG_MOUNT"
        else
            echo "jail cgroup2: not mounted and mount -t cgroup2 failed: $(cat "$OUT_DIR/cgroup2.err")"
        fi
    else
        echo "jail cgroup2: at $CG_MOUNT"
    fi
    CG_CONTROLLERS=""
    [ -n "$CG_MOUNT" ] && CG_CONTROLLERS=$(cat "$CG_MOUNT/cgroup.controllers" 2>/dev/null)
    echo "jail controllers: $CG_CONTROLLERS"
    echo "jail requested: cpu.max=$JAIL_CPU_MAX memory.max=$JAIL_MEM_MAX pids.max=$JAIL_PIDS_MAX no-file=$JAIL_NOFILE fsize=$(wc -c < "$L2_DISK_IMG") uid=$JAIL_UID gid=$JAIL_GID"
    rm -rf "$JAIL_DIR"
}
cg_has() { case " $CG_CONTROLLERS " in *" $1 "*) return 0 ;; esac; return 1; }
# The jailer (its command line) and the VMM (the jailer's child).
jailer_pid() {
    for d in /proc/[0-9]*; do
        case $(tr '\0' ' ' 2>/dev/null < "$d/cmdline") in
            "$JAILER --id $JAIL_ID "*) echo "${d#/proc/}"; return ;;
        esac
    done
}
child_of() {
    for d in /proc/[0-9]*; do
        [ "$(awk '{ print $4 }' "$d/stat" 2>/dev/null)" = "$1" ] && { echo "${d#/proc/}"; return; }
    done
}
# jail_watch: waits for the jailed VMM, prints what this level sees of it
# (the `jail ...` lines), then follows its cgroup's usage until it exits.
jail_watch() {
    cg=$CG_MOUNT/kindling/$JAIL_ID
    i=0
    pid=""
    while [ "$i" -lt 600 ]; do
        jp=$(jailer_pid)
        [ -n "$jp" ] && pid=$(child_of "$jp")
        # Executed: the child is microvm now, no longer the forked jailer.
        if [ -n "$pid" ] && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" != "$(readlink "/proc/$jp/exe")" ]; then
            break
        fi
        [ -e "$OUT_DIR/jailer.done" ] && break
        pid=""
        sleep 0.1
        i=$((i + 1))
    done
    if [ -z "$pid" ]; then
        echo "jail vmm: not found (no child of the jailer running a VMM within 60 s)"
        return
    fi
    # A moment for the guest to boot, so the usage means something (the
    # checks below do not depend on it).
    sleep 2
    echo "jail vmm: pid $pid (child of the jailer, pid $jp), exe $(readlink "/proc/$pid/exe")"
    echo "jail cgroup: $cg"
    for f in cpu.max memory.max pids.max; do
        echo "jail $f: $(cat "$cg/$f" 2>&1)"
    done
    # Each process with its name, and `kernel` for a kernel thread (no
    # executable): KVM moves its per-VM worker threads into the cgroup of
    # the process that made the VM.
    procs=""
    for p in $(cat "$cg/cgroup.procs" 2>&1); do
        kind=""
        readlink "/proc/$p/exe" > /dev/null 2>&1 || kind=":kernel"
        procs="$procs $p:$(cat "/proc/$p/comm" 2>/dev/null)$kind"
    done
    echo "jail cgroup.procs:$procs"
    echo "jail proc-cgroup: $(cat "/proc/$pid/cgroup" 2>&1)"
    for key in Uid Gid Groups NoNewPrivs CapEff NSpid; do
        echo "jail status $key: $(awk -v k="$key:" '$1 == k { $1 = ""; sub(/^ /, ""); print }' "/proc/$pid/status")"
    done
    echo "jail root: $(stat -L -c '%d:%i' "/proc/$pid/root" 2>&1) jail $(stat -c '%d:%i' "$JAIL_DIR/root" 2>&1)"
    # Its mount table: mount point (file system type) each.
    echo "jail mounts: $(awk '{ for (i = 7; i <= NF; i++) if ($i == "-") { printf "%s(%s) ", $5, $(i + 1); break } }' "/proc/$pid/mountinfo" 2>&1)"
    echo "jail root-entries: $(ls -A "/proc/$pid/root/" 2>&1 | sort | tr '\n' ' ')"
    for ns in mnt pid net; do
        echo "jail ns $ns: $(readlink "/proc/$pid/ns/$ns") init $(readlink "/proc/1/ns/$ns")"
    done
    echo "jail net: $(awk -F: 'NR > 2 { gsub(/ /, "", $1); printf "%s ", $1 }' "/proc/$pid/net/dev" 2>&1)"
    echo "jail limit nofile: $(awk '/^Max open files/ { print $4, $5 }' "/proc/$pid/limits")"
    echo "jail limit fsize: $(awk '/^Max file size/ { print $4, $5 }' "/proc/$pid/limits")"
    # Usage until the VMM exits (the jailer then removes the cgroup).
    mem_peak=0
    pids_peak=0
    stat=""
    while [ -d "/proc/$pid" ] && [ -d "$cg" ]; do
        m=$(cat "$cg/memory.peak" 2>/dev/null || cat "$cg/memory.current" 2>/dev/null)
        p=$(cat "$cg/pids.current" 2>/dev/null)
        [ -n "$m" ] && [ "$m" -gt "$mem_peak" ] && mem_peak=$m
        [ -n "$p" ] && [ "$p" -gt "$pids_peak" ] && pids_peak=$p
        s=$(awk '{ printf "%s=%s ", $1, $2 }' "$cg/cpu.stat" 2>/dev/null)
        [ -n "$s" ] && stat=$s
        ev=$(awk '{ printf "%s=%s ", $1, $2 }' "$cg/memory.events" 2>/dev/null)
        [ -n "$ev" ] && events=$ev
        sleep 0.5
    done
    echo "jail usage: memory peak $mem_peak bytes, pids peak $pids_peak; cpu.stat: $stat; memory.events: ${events:-}"
}

# run_once ARGS...: one attempt of the run $variant, as the loop below set
# it up, with ARGS for microvm (or the jailer); prints its E2E-L2-BEGIN and
# E2E-L2-END lines and what happened between them.
run_once() {
    [ "$net" = 1 ] && rm -f "$uds" "$uds"_*
    driver=""
    if [ "$variant" = jailer ]; then
        [ "$attempt" -gt 1 ] && jail_setup > "$OUT_DIR/jailer.watch" 2>&1
        # (Hard links: the files' owner becomes the jail's user; put back.)
        jail_owners=""
        for f in "$kernel" "$L2_DIR/initrd.cpio" "$L2_DISK_IMG"; do
            jail_owners="$jail_owners $(stat -c %u:%g "$f"):$f"
        done
        rm -f "$OUT_DIR/jailer.done"
        jail_watch >> "$OUT_DIR/jailer.watch" 2>&1 &
        driver=$!
    fi
    if [ "$variant" = api ]; then
        # Nothing but the socket: the driver configures and starts it.
        rm -f "$OUT_DIR/api.sock"
        set -- --api-sock "$OUT_DIR/api.sock" --serial stdout $log_flags
        api_driver "$OUT_DIR/api.sock" "$kernel" "$cmdline" "$uds" > "$OUT_DIR/api.driver" 2>&1 &
        driver=$!
    fi
    [ "$net" = 1 ] && net_start "$variant" "$uds"
    echo "E2E-L2-BEGIN $variant"
    [ -n "${config:-}" ] && [ "$variant" = vmlinux ] && echo "E2E-L2[$variant] vmm| config: $(cat "$config")"
    echo "E2E-L2[$variant] vmm| \$ ${vmm##*/} $*"
    t0=$(uptime_ms)
    # The guest's console streams through as it comes (so a level that hangs
    # still shows how far it got); microvm's stderr follows the run.
    {
        timeout -k 5 "$L2_TIMEOUT" "$vmm" "$@" < /dev/null 2> "$stderr"
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
    } | tee "$OUT_DIR/$variant.console" | prefix "E2E-L2[$variant] serial| "
    t1=$(uptime_ms)
    status=$(cat "$status_file" 2>/dev/null || echo unknown)
    [ -f "$stderr" ] && prefix "E2E-L2[$variant] vmm| " < "$stderr"
    if [ "$variant" = jailer ]; then
        # The watcher ends with the VMM (or now, if it never found it).
        touch "$OUT_DIR/jailer.done"
        wait "$driver"
        driver=""
        if [ -n "$CG_MOUNT" ] && [ -d "$CG_MOUNT/kindling/$JAIL_ID" ]; then
            echo "jail cleanup: the cgroup $CG_MOUNT/kindling/$JAIL_ID is still there" >> "$OUT_DIR/jailer.watch"
        else
            echo "jail cleanup: the jailer removed the cgroup; the jail dir $([ -d "$JAIL_DIR/root" ] && echo was left, as documented || echo is gone)" >> "$OUT_DIR/jailer.watch"
        fi
        prefix "E2E-L2[$variant] vmm| " < "$OUT_DIR/jailer.watch"
        for o in $jail_owners; do chown "${o%%:/*}" "/${o#*:/}"; done
        rm -rf "$JAIL_DIR"
    fi
    if [ -n "$driver" ]; then
        kill "$driver" 2>/dev/null
        wait "$driver"
        prefix "E2E-L2[$variant] vmm| " < "$OUT_DIR/api.driver"
    fi
    if [ "$net" = 1 ]; then
        # (Not in a pipeline: it waits for this shell's children.)
        net_report "$variant" > "$OUT_DIR/$variant.net"
        prefix "E2E-L2[$variant] vmm| " < "$OUT_DIR/$variant.net"
    fi
    echo "E2E-L2-END $variant status=$status wall_ms=$((t1 - t0)) timeout_s=$L2_TIMEOUT"
}

# ---------------------------------------------------------------- the runs

for variant in $variants; do
    entry=""
    snapshot=0
    # The vmlinux run ends with `reboot -f` and no reboot=k, so Linux resets
    # through the ACPI reset register; the others power off.
    cmdline=$IMAGE_CMDLINE
    end=poweroff
    cpus=1
    case $variant in
        bzimage) kernel=$L2_DIR/vmlinuz; cpus=$L2_CPUS ;;
        vmlinux)
            kernel=$L2_DIR/vmlinux
            end=reboot
            cmdline=$(echo "$IMAGE_CMDLINE" | sed 's/ *reboot=k//')
            ;;
        pvh) kernel=$L2_DIR/vmlinux; entry=--pvh ;;
        snapshot) kernel=$L2_DIR/vmlinuz; snapshot=1 ;;
        api) kernel=$L2_DIR/vmlinuz ;;
        jailer) kernel=$L2_DIR/vmlinux; entry=--pvh ;;
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
    cmdline="$cmdline e2e.variant=$variant e2e.cpus=$cpus e2e.mem=$L2_MEM_MIB"
    cmdline="$cmdline e2e.token=$L2_TOKEN e2e.snapshot=$snapshot"
    # The disk's read rate: the api run's is limited, the bzimage run's not.
    case $variant in bzimage | api) cmdline="$cmdline e2e.dd=$L2_DD_BYTES" ;; esac
    net=0
    uds=$OUT_DIR/vsock-$variant.sock
    if [ "$NET_UP" = 1 ] && [ -n "$(net_mac "$variant")" ]; then
        net=1
        rm -f "$uds" "$uds"_*
        tcp=$(net_tcp_bytes "$variant")
        cmdline="$cmdline e2e.mac=$(net_mac "$variant") e2e.ip=$(net_ip "$variant") e2e.host=$NET_HOST"
        cmdline="$cmdline e2e.tcp=$tcp:$(net_sha "$tcp") e2e.vsock=$L2_VSOCK_BYTES:$(net_sha "$L2_VSOCK_BYTES")"
        # Rate-limited: the TCP transfer one direction after the other.
        [ "$variant" = api ] && cmdline="$cmdline e2e.tcpseq=1"
    fi
    set -- --kernel "$kernel" --initrd "$L2_DIR/initrd.cpio" --cmdline "$cmdline" \
        --cpus "$cpus" --memory "$L2_MEM_MIB" --serial stdout
    set -- "$@" $log_flags
    [ -n "$entry" ] && set -- "$@" "$entry"
    set -- "$@" --disk "path=$L2_DISK_IMG" --entropy
    [ "$net" = 1 ] && set -- "$@" --net "tap=$NET_TAP,mac=$(net_mac "$variant")" --vsock "cid=3,uds=$uds"
    [ "$snapshot" = 1 ] && set -- "$@" --snapshot-on-line E2E-SNAPSHOT-NOW \
        --snapshot-state "$snap_state" --snapshot-mem "$snap_mem"
    if [ "$variant" = vmlinux ] && [ "$CONFIG_FILE" = 1 ]; then
        # The same machine as a Firecracker config file: the API's bodies
        # keyed by resource (the root filesystem is named on the command
        # line already, so the drive is not the "root device").
        config=$OUT_DIR/vmlinux-config.json
        drives="{\"drive_id\": \"rootfs\", \"path_on_host\": \"$L2_DISK_IMG\", \"is_root_device\": false, \"is_read_only\": false}"
        printf '{"boot-source": {"kernel_image_path": "%s", "initrd_path": "%s", "boot_args": "%s"}, "machine-config": {"vcpu_count": %s, "mem_size_mib": %s}, "drives": [%s], "entropy": {}}\n' \
            "$kernel" "$L2_DIR/initrd.cpio" "$cmdline" "$cpus" "$L2_MEM_MIB" "$drives" > "$config"
        set -- --no-api --config-file "$config" $log_flags
    fi
    vmm=$MICROVM
    if [ "$variant" = jailer ]; then
        # The same PVH machine, through the jailer: it links the files into
        # the jail, rewrites the arguments naming them, and runs microvm
        # as the user in its namespaces and cgroup.
        jail_setup > "$OUT_DIR/jailer.watch" 2>&1
        vmm=$JAILER
        set -- -- "$@"
        cg_has pids && set -- --cgroup "pids.max=$JAIL_PIDS_MAX" "$@"
        cg_has memory && set -- --cgroup "memory.max=$JAIL_MEM_MAX" "$@"
        cg_has cpu && set -- --cgroup "cpu.max=$JAIL_CPU_MAX" "$@"
        set -- --id "$JAIL_ID" --exec-file "$MICROVM" --uid "$JAIL_UID" --gid "$JAIL_GID" \
            --chroot-base-dir "$JAIL_BASE" --file "$kernel" --file "$L2_DIR/initrd.cpio" \
            --file "$L2_DISK_IMG" --resource-limit "no-file=$JAIL_NOFILE" \
            --resource-limit "fsize=$(wc -c < "$L2_DISK_IMG")" "$@"
    fi
    attempt=1
    while :; do
        run_once "$@"
        # One more attempt, once, when the guest crashed with a triple
        # fault or hung past the timeout: both are seen about once in a
        # hundred boots here and not yet explained (the first level is an
        # emulated machine; see tests/e2e/README.md). The harness reports
        # the retry and the vCPU's registers at the fault, and judges the
        # last attempt only.
        why=""
        if grep -q 'triple fault' "$stderr" 2>/dev/null; then
            why="triple fault: $(grep -m1 'triple fault at' "$stderr" | sed 's/.*triple fault at //')"
        elif [ "$status" = 124 ] || [ "$status" = 137 ] || [ $((t1 - t0)) -ge $((L2_TIMEOUT * 1000)) ]; then
            # (Timed out: busybox's timeout passes on microvm's own exit
            # status, 143 after its orderly stop on SIGTERM; GNU's says 124.)
            why="timed out after ${L2_TIMEOUT}s (the console's last line: $(tail -n 1 "$OUT_DIR/$variant.console" 2>/dev/null | tr -d '\r'))"
        fi
        if [ -z "$why" ] || [ "$attempt" -ge 2 ]; then
            break
        fi
        echo "E2E-L2-RETRY $variant: $why"
        attempt=$((attempt + 1))
    done
done
if [ "$NET_UP" = 1 ]; then
    kill "$UDHCPD_PID" 2>/dev/null
    # The persistent TAP goes (it would outlive a direct-mode run on a host).
    tunctl -d "$NET_TAP" > /dev/null 2>&1 || ip link del "$NET_TAP" 2>/dev/null
fi
exit 0
