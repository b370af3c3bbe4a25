//! The built-in allow-lists, one per [`ThreadKind`].
//!
//! Each list is what the code on that kind of thread calls, found by
//! reading it and checked under `strace -f` across the test suite and the
//! real-Linux tier. A list is a map from syscall number to the rules that
//! allow it: an empty rule list allows every call, otherwise any one rule
//! whose conditions all hold does.

use std::collections::BTreeMap;

use seccompiler::{SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};

use super::ThreadKind;

/// Syscall number to the rules that allow it.
pub type Rules = BTreeMap<i64, Vec<SeccompRule>>;

/// `ioctl` request numbers of KVM (type 0xAE) that the vCPU threads issue.
#[cfg(target_arch = "x86_64")]
mod kvm {
    use kindling_vcpu::kvm_bindings::{
        kvm_cpuid2, kvm_debugregs, kvm_lapic_state, kvm_mp_state, kvm_msrs, kvm_regs, kvm_sregs,
        kvm_vcpu_events, kvm_xcrs, kvm_xsave,
    };
    use kindling_vcpu::vmm_sys_util::{ioctl_io_nr, ioctl_ior_nr, ioctl_iowr_nr};

    const KVMIO: u32 = 0xAE;
    ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);
    ioctl_ior_nr!(KVM_GET_REGS, KVMIO, 0x81, kvm_regs);
    ioctl_ior_nr!(KVM_GET_SREGS, KVMIO, 0x83, kvm_sregs);
    ioctl_iowr_nr!(KVM_GET_MSRS, KVMIO, 0x88, kvm_msrs);
    ioctl_ior_nr!(KVM_GET_LAPIC, KVMIO, 0x8e, kvm_lapic_state);
    ioctl_iowr_nr!(KVM_GET_CPUID2, KVMIO, 0x91, kvm_cpuid2);
    ioctl_ior_nr!(KVM_GET_MP_STATE, KVMIO, 0x98, kvm_mp_state);
    ioctl_ior_nr!(KVM_GET_VCPU_EVENTS, KVMIO, 0x9f, kvm_vcpu_events);
    ioctl_ior_nr!(KVM_GET_DEBUGREGS, KVMIO, 0xa1, kvm_debugregs);
    ioctl_ior_nr!(KVM_GET_XSAVE, KVMIO, 0xa4, kvm_xsave);
    ioctl_ior_nr!(KVM_GET_XCRS, KVMIO, 0xa6, kvm_xcrs);

    /// What a vCPU thread runs: `KVM_RUN`, and the reads of its state a
    /// snapshot makes while it is parked.
    pub(super) fn vcpu_requests() -> [u64; 11] {
        [
            KVM_RUN(),
            KVM_GET_REGS(),
            KVM_GET_SREGS(),
            KVM_GET_MSRS(),
            KVM_GET_LAPIC(),
            KVM_GET_CPUID2(),
            KVM_GET_MP_STATE(),
            KVM_GET_VCPU_EVENTS(),
            KVM_GET_DEBUGREGS(),
            KVM_GET_XSAVE(),
            KVM_GET_XCRS(),
        ]
        .map(u64::from)
    }
}

/// Terminal `ioctl`s: the console's raw mode is restored when the VM ends.
const TERMINAL_IOCTLS: [u64; 5] = [
    libc::TCGETS,
    libc::TCSETS,
    libc::TCSETSW,
    libc::TCSETSF,
    libc::TIOCGWINSZ,
];

/// `ioctl` types (bits 8-15 of the request) the API threads may use while
/// they build a VM: KVM (0xAE), terminals and TUN ('T'), block devices
/// (0x12), userfaultfd (0xAA).
const API_IOCTL_TYPES: [u64; 4] = [0xAE, b'T' as u64, 0x12, 0xAA];

/// A condition on the low 32 bits of argument `arg`: every argument
/// checked here is a 32-bit `int` or `unsigned int` in the kernel (an
/// `ioctl` request, a signal, a socket family, an `fcntl` or `prctl`
/// command, a pid, `mmap`'s protection bits, which the kernel refuses
/// above bit 31 anyway), and one comparison instead of two keeps the
/// filters short, which the kernel installs faster.
fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> SeccompCondition {
    // Argument indices below 6 and these operators are always valid.
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
        .expect("a valid seccomp condition")
}

fn rule(conditions: Vec<SeccompCondition>) -> SeccompRule {
    SeccompRule::new(conditions).expect("a non-empty seccomp rule")
}

/// Allows `nr` with any arguments.
fn allow(rules: &mut Rules, nrs: &[i64]) {
    for &nr in nrs {
        rules.insert(nr, Vec::new());
    }
}

/// Allows `nr` when argument `arg` equals one of `values`.
fn allow_arg_in(rules: &mut Rules, nr: i64, arg: u8, values: impl IntoIterator<Item = u64>) {
    let entry = rules.entry(nr).or_default();
    for value in values {
        entry.push(rule(vec![cond(arg, SeccompCmpOp::Eq, value)]));
    }
}

/// Allows `nr` when `(argument arg & mask) == value`.
fn allow_masked(rules: &mut Rules, nr: i64, arg: u8, mask: u64, value: u64) {
    rules
        .entry(nr)
        .or_default()
        .push(rule(vec![cond(arg, SeccompCmpOp::MaskedEq(mask), value)]));
}

/// What every thread needs: memory management without executable
/// mappings, locks, thread exit, signal return and mask, clocks, the
/// writes of log lines and of the SIGSYS report, `abort`, and the
/// console's terminal restore on a fatal signal.
fn base() -> Rules {
    let mut r = Rules::new();
    allow(
        &mut r,
        &[
            libc::SYS_brk,
            libc::SYS_munmap,
            libc::SYS_mremap,
            libc::SYS_madvise,
            libc::SYS_futex,
            libc::SYS_sched_yield,
            libc::SYS_close,
            libc::SYS_write,
            libc::SYS_getrandom,
            libc::SYS_clock_gettime,
            libc::SYS_rt_sigreturn,
            libc::SYS_rt_sigprocmask,
            libc::SYS_sigaltstack,
            libc::SYS_restart_syscall,
            libc::SYS_getpid,
            libc::SYS_gettid,
            libc::SYS_exit,
            libc::SYS_exit_group,
        ],
    );
    // No new executable memory: PROT_EXEC must be clear.
    let exec = libc::PROT_EXEC as u64;
    allow_masked(&mut r, libc::SYS_mmap, 2, exec, 0);
    allow_masked(&mut r, libc::SYS_mprotect, 2, exec, 0);
    // abort() signals the calling thread. The interactive console's
    // handler for SIGQUIT, SIGTERM, SIGINT and SIGHUP runs on whichever
    // thread takes the signal: it restores the terminal (TCSETS), resets
    // the signal's action and raises it again.
    allow_arg_in(
        &mut r,
        libc::SYS_tgkill,
        2,
        [
            libc::SIGABRT,
            libc::SIGQUIT,
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
        ]
        .map(|s| s as u64),
    );
    allow(&mut r, &[libc::SYS_rt_sigaction]);
    allow_arg_in(&mut r, libc::SYS_ioctl, 1, [libc::TCGETS, libc::TCSETS]);
    // Reading descriptor flags: Rust's debug builds check that a
    // descriptor is open before they close or adopt it.
    allow_arg_in(
        &mut r,
        libc::SYS_fcntl,
        1,
        [libc::F_GETFD as u64, libc::F_GETFL as u64],
    );
    r
}

/// The values of this process that some rules compare arguments with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ProcessValues {
    /// The vCPU kick signal (pause, stop).
    pub(super) kick: u64,
    /// This process's id.
    pub(super) pid: u64,
}

impl ProcessValues {
    /// This process's.
    pub(super) fn current() -> Self {
        Self {
            kick: kindling_vcpu::kick_signal() as u64,
            // SAFETY: getpid cannot fail.
            pid: u64::from(unsafe { libc::getpid() } as u32),
        }
    }
}

/// The rules for `kind`'s threads in this process.
pub(super) fn rules_for(kind: ThreadKind) -> Rules {
    rules_with(kind, ProcessValues::current())
}

/// The rules for `kind`'s threads, comparing with `values`.
pub(super) fn rules_with(kind: ThreadKind, values: ProcessValues) -> Rules {
    match kind {
        ThreadKind::Vcpu => vcpu(),
        ThreadKind::EventLoop => event_loop(values),
        ThreadKind::Api => api(values),
        ThreadKind::SignalWatcher => signal_watcher(values),
        ThreadKind::Metrics => metrics(),
    }
}

/// A vCPU thread: `KVM_RUN` and the state reads of a snapshot, plus what
/// exit handlers do on it (serial output, eventfd reads and writes, arming
/// the serial flush timer, device activation and reset: a block device
/// draining its io_uring, a network device's TAP offloads, a vsock
/// device's host connections).
fn vcpu() -> Rules {
    let mut r = base();
    allow(
        &mut r,
        &[
            libc::SYS_read,
            libc::SYS_writev,
            libc::SYS_timerfd_settime,
            libc::SYS_io_uring_enter,
            libc::SYS_nanosleep,
            libc::SYS_clock_nanosleep,
        ],
    );
    #[cfg(target_arch = "x86_64")]
    allow_arg_in(&mut r, libc::SYS_ioctl, 1, kvm::vcpu_requests());
    // Device activation and reset run on the vCPU thread that writes the
    // status register: virtio-net sets the TAP's offloads to what the
    // driver acked (and clears them on reset), a virtio-vsock reset shuts
    // its host connections down.
    allow_arg_in(&mut r, libc::SYS_ioctl, 1, [libc::TUNSETOFFLOAD]);
    allow(&mut r, &[libc::SYS_shutdown]);
    r
}

/// The device event loop (in `microvm`'s flag mode, the main thread from
/// the moment the VM runs to the process exit): epoll, block I/O (sync
/// and io_uring engines), TAP reads and writes, vsock's Unix sockets,
/// timers, the console, stopping and joining the vCPU threads.
fn event_loop(values: ProcessValues) -> Rules {
    let mut r = base();
    allow(
        &mut r,
        &[
            libc::SYS_epoll_wait,
            libc::SYS_epoll_pwait,
            libc::SYS_epoll_ctl,
            libc::SYS_read,
            libc::SYS_readv,
            libc::SYS_writev,
            libc::SYS_pread64,
            libc::SYS_pwrite64,
            libc::SYS_preadv,
            libc::SYS_pwritev,
            libc::SYS_preadv2,
            libc::SYS_pwritev2,
            libc::SYS_lseek,
            libc::SYS_fsync,
            libc::SYS_fdatasync,
            libc::SYS_fallocate,
            libc::SYS_io_uring_enter,
            libc::SYS_timerfd_settime,
            libc::SYS_timerfd_gettime,
            libc::SYS_poll,
            libc::SYS_ppoll,
            libc::SYS_accept4,
            libc::SYS_connect,
            libc::SYS_sendto,
            libc::SYS_recvfrom,
            libc::SYS_sendmsg,
            libc::SYS_recvmsg,
            libc::SYS_shutdown,
            libc::SYS_getsockopt,
            libc::SYS_fstat,
            libc::SYS_newfstatat,
            libc::SYS_statx,
            libc::SYS_nanosleep,
            libc::SYS_clock_nanosleep,
            // The vsock device removes its socket when the VM ends.
            libc::SYS_unlink,
        ],
    );
    // Non-blocking mode, duplicated eventfds, close-on-exec.
    allow(&mut r, &[libc::SYS_fcntl]);
    // vsock: new host connections are Unix stream sockets.
    allow_arg_in(&mut r, libc::SYS_socket, 0, [libc::AF_UNIX as u64]);
    allow_arg_in(
        &mut r,
        libc::SYS_ioctl,
        1,
        TERMINAL_IOCTLS.into_iter().chain([libc::FIONBIO]),
    );
    allow_arg_in(&mut r, libc::SYS_tgkill, 2, [values.kick]);
    r
}

/// The API server (accept and connection threads) and the threads that
/// wait for or snapshot a VM they control. They build the VM at
/// `InstanceStart`, so they may do what building needs (open files, create
/// the KVM VM, map guest memory, start threads, install the filters of
/// those threads); the threads they start inherit this filter and narrow
/// it with their own.
fn api(values: ProcessValues) -> Rules {
    let mut r = event_loop(values);
    allow(
        &mut r,
        &[
            libc::SYS_openat,
            libc::SYS_open,
            libc::SYS_readlink,
            libc::SYS_readlinkat,
            libc::SYS_getdents64,
            libc::SYS_access,
            libc::SYS_faccessat,
            libc::SYS_faccessat2,
            libc::SYS_mkdir,
            libc::SYS_mkdirat,
            libc::SYS_unlink,
            libc::SYS_unlinkat,
            libc::SYS_rename,
            libc::SYS_renameat,
            libc::SYS_renameat2,
            libc::SYS_ftruncate,
            libc::SYS_flock,
            libc::SYS_fadvise64,
            libc::SYS_dup,
            libc::SYS_dup3,
            libc::SYS_pipe2,
            libc::SYS_memfd_create,
            libc::SYS_eventfd2,
            libc::SYS_timerfd_create,
            libc::SYS_epoll_create1,
            libc::SYS_io_uring_setup,
            libc::SYS_io_uring_register,
            libc::SYS_userfaultfd,
            libc::SYS_bind,
            libc::SYS_listen,
            libc::SYS_setsockopt,
            libc::SYS_getsockname,
            libc::SYS_getpeername,
            libc::SYS_socketpair,
            libc::SYS_mincore,
            libc::SYS_sysinfo,
            libc::SYS_uname,
            libc::SYS_getuid,
            libc::SYS_geteuid,
            libc::SYS_sched_getaffinity,
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_set_robust_list,
            libc::SYS_rseq,
            libc::SYS_seccomp,
            libc::SYS_rt_sigtimedwait,
        ],
    );
    // API mode hands a termination signal that came as the VM started
    // back to the VM's watcher: kill(2) on this process only.
    r.insert(
        libc::SYS_kill,
        crate::signals::TERMINATION_SIGNALS
            .iter()
            .map(|&signo| {
                rule(vec![
                    cond(0, SeccompCmpOp::Eq, values.pid),
                    cond(1, SeccompCmpOp::Eq, signo as u64),
                ])
            })
            .collect(),
    );
    // Thread names, and the no-new-privileges bit a filter needs.
    allow_arg_in(
        &mut r,
        libc::SYS_prctl,
        0,
        [libc::PR_SET_NAME as u64, libc::PR_SET_NO_NEW_PRIVS as u64],
    );
    // Any ioctl of the types building a VM uses (KVM, TUN, terminals,
    // block devices, userfaultfd).
    r.remove(&libc::SYS_ioctl);
    for ty in API_IOCTL_TYPES {
        allow_masked(&mut r, libc::SYS_ioctl, 1, 0xff00, ty << 8);
    }
    // if_nametoindex(3), when a TAP device is opened.
    allow_arg_in(&mut r, libc::SYS_ioctl, 1, [libc::SIOCGIFINDEX]);
    r
}

/// The termination-signal watcher: waits for a signal, then stops the VM.
fn signal_watcher(values: ProcessValues) -> Rules {
    let mut r = base();
    allow(&mut r, &[libc::SYS_rt_sigtimedwait]);
    allow_arg_in(&mut r, libc::SYS_tgkill, 2, [values.kick]);
    r
}

/// The periodic metrics writer of the API server.
fn metrics() -> Rules {
    let mut r = base();
    allow(&mut r, &[libc::SYS_nanosleep, libc::SYS_clock_nanosleep]);
    r
}
