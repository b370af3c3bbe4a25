//! Seccomp filters, one per kind of thread the VMM runs.
//!
//! Every thread of a Kindling VMM does a small, known set of things once
//! its set-up is over: a vCPU thread calls `KVM_RUN` (and reads its state
//! for a snapshot), the device event loop waits on epoll and does the
//! devices' I/O, the API threads parse requests and drive the VM. A
//! seccomp-BPF filter per [`ThreadKind`], installed on the thread when its
//! set-up is done, makes every other system call end the process: a guest
//! that takes over a device model still cannot open a file, start a
//! program or reach the network.
//!
//! The filters are compiled with the rust-vmm [`seccompiler`] crate
//! (re-exported); on x86_64 the built-in ones are compiled ahead of time
//! ([`builtin_filter`]). [`SeccompPolicy`] in
//! [`VmConfig::seccomp`](crate::VmConfig::seccomp) chooses them: off (the
//! library default: a VMM with devices of its own knows its syscalls
//! better), the built-in lists, or filters of your own
//! ([`SeccompFilters`]). [`install_filter`] installs one on the calling
//! thread, for threads a custom VMM starts itself.
//!
//! A violation sends SIGSYS (`SECCOMP_RET_TRAP`); the handler this module
//! installs writes one line to standard error naming the thread kind and
//! the system call, then lets the process die of SIGSYS:
//!
//! ```text
//! kindling: seccomp: a thread of kind vcpu made a forbidden system call: 59 (execve); the process ends (...)
//! ```
//!
//! With a policy on, [`Vmm::run`](crate::Vmm::run) filters the vCPU
//! threads, the termination-signal watcher and the calling thread (as the
//! event loop, for good: a filter cannot be removed);
//! [`Vmm::start`](crate::Vmm::start) filters the threads it starts and
//! leaves the calling thread as it is.
//!
//! # Filters apply per thread, and are inherited
//!
//! A filter binds the thread that installs it and every thread that thread
//! starts afterwards; a thread can add filters but never remove one, and a
//! system call must pass all of them. So a thread installs its filter only
//! after it has started the threads that need more than it allows (the
//! VMM installs the event loop's filter after starting the vCPU threads),
//! and the API threads, which build and start the VM, have the widest
//! filter of all ([`ThreadKind::Api`]).
//!
//! # Example
//!
//! A thread of your own that only waits on a channel:
//!
//! ```no_run
//! use kindling_vmm::seccomp::{compile, install_filter, rules_for, ThreadKind};
//!
//! std::thread::spawn(|| {
//!     // The signal watcher's list is small: start from it.
//!     let rules = rules_for(ThreadKind::SignalWatcher);
//!     let program = compile(rules).expect("compiles");
//!     install_filter(ThreadKind::SignalWatcher, &program).expect("installed");
//!     // From here on, only the listed system calls are allowed.
//! });
//! ```

mod bpf;
mod checks;
mod precompiled;
mod report;
mod rules;

use std::sync::{Arc, OnceLock};

pub use report::syscall_name;
pub use rules::Rules;
pub use seccompiler;
use seccompiler::BpfProgram;

/// The kinds of thread a Kindling VMM runs, each with its own filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThreadKind {
    /// A vCPU thread (`KVM_RUN`, the exits it handles).
    Vcpu,
    /// The device event loop (in `microvm`'s flag mode, the main thread
    /// once the VM runs).
    EventLoop,
    /// The API server's threads, and the threads that build, wait for,
    /// pause or snapshot a VM (the widest filter: building a VM is
    /// allowed).
    Api,
    /// The termination-signal watcher.
    SignalWatcher,
    /// The API server's periodic metrics writer.
    Metrics,
}

impl ThreadKind {
    /// Every kind.
    pub const ALL: [ThreadKind; 5] = [
        ThreadKind::Vcpu,
        ThreadKind::EventLoop,
        ThreadKind::Api,
        ThreadKind::SignalWatcher,
        ThreadKind::Metrics,
    ];

    /// The name used in violation reports (`vcpu`, `event-loop`, `api`,
    /// `signal-watcher`, `metrics`).
    pub fn name(self) -> &'static str {
        match self {
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::EventLoop => "event-loop",
            ThreadKind::Api => "api",
            ThreadKind::SignalWatcher => "signal-watcher",
            ThreadKind::Metrics => "metrics",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why a filter could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The compiled filter is longer than the kernel accepts.
    #[error("the seccomp filter is {0} instructions long, more than the kernel's 4096")]
    TooLong(usize),
    /// The SIGSYS handler that reports violations could not be installed.
    #[error("cannot install the SIGSYS handler that reports seccomp violations: {0}")]
    Handler(#[source] std::io::Error),
    /// The kernel refused the filter.
    #[error("cannot install the seccomp filter of the {kind} thread: {source}")]
    Install {
        /// The thread kind's name.
        kind: &'static str,
        /// The error.
        #[source]
        source: seccompiler::Error,
    },
}

/// Compiles `rules` for this architecture into a filter whose default
/// action is `SECCOMP_RET_TRAP` (SIGSYS).
///
/// The system call number is found by a binary search, not by
/// seccompiler's row of comparisons, and one-word argument checks on the
/// same argument share one load and one return (see the `bpf` and
/// `checks` modules): the kernel checks, converts and JIT-compiles a new
/// filter, and runs it for every system call number, when it is
/// installed, so a short filter with short paths installs faster, on the
/// path to the guest's first instruction for a vCPU thread. The
/// argument checks are seccompiler's code for each rule.
pub fn compile(rules: Rules) -> Result<BpfProgram, SeccompError> {
    bpf::build(rules, libc::SECCOMP_RET_TRAP, libc::SECCOMP_RET_ALLOW)
        .map_err(SeccompError::TooLong)
}

/// The built-in rules for `kind` (to extend for a custom VMM, then
/// [`compile`]).
pub fn rules_for(kind: ThreadKind) -> Rules {
    rules::rules_for(kind)
}

/// The built-in filter for `kind`, made at its first use in the process
/// and shared afterwards: what [`compile`] makes of [`rules_for`], taken
/// from a table compiled ahead of time where there is one (x86_64), with
/// this process's kick signal and process id written in.
pub fn builtin_filter(kind: ThreadKind) -> Result<Arc<BpfProgram>, SeccompError> {
    static BUILT: [OnceLock<Arc<BpfProgram>>; 5] = [const { OnceLock::new() }; 5];
    let cell = &BUILT[kind.index()];
    if let Some(program) = cell.get() {
        return Ok(program.clone());
    }
    let program = match precompiled::program(kind, rules::ProcessValues::current()) {
        Some(program) => program,
        None => compile(rules_for(kind))?,
    };
    let program = Arc::new(program);
    // A thread that raced us compiled the same program.
    Ok(cell.get_or_init(|| program).clone())
}

/// Installs `program` on the calling thread (and the threads it starts
/// from now on), first installing the SIGSYS handler that reports a
/// violation as coming from a `kind` thread. Sets the thread's
/// no-new-privileges bit, as seccomp requires without `CAP_SYS_ADMIN`.
pub fn install_filter(kind: ThreadKind, program: &BpfProgram) -> Result<(), SeccompError> {
    report::install_handler().map_err(SeccompError::Handler)?;
    prepare_libc();
    report::set_thread_kind(kind);
    seccompiler::apply_filter(program).map_err(|source| SeccompError::Install {
        kind: kind.name(),
        source,
    })
}

/// Names the calling thread's kind in violation reports without
/// installing anything: for a thread that runs under a filter inherited
/// from the thread that started it (the API server's connection threads).
pub fn mark_thread(kind: ThreadKind) {
    report::set_thread_kind(kind);
}

/// Does once, before any filter, what the C library would otherwise do
/// lazily on a filtered thread: glibc loads the time zone
/// (`/etc/localtime`) the first time any of its time conversions runs,
/// `gmtime_r` included, which the CMOS RTC calls on a vCPU thread when a
/// Linux guest reads the clock.
fn prepare_libc() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        // SAFETY: tzset takes no arguments; it reads TZ and the zone file
        // into the C library's own state under the library's own lock.
        unsafe { tzset() };
    });
}

extern "C" {
    // In POSIX and every Linux libc; the libc crate does not declare it.
    fn tzset();
}

/// Filters of your own, per thread kind (a kind without one runs
/// unfiltered).
#[derive(Debug, Clone, Default)]
pub struct SeccompFilters {
    programs: [Option<BpfProgram>; 5],
}

impl SeccompFilters {
    /// No filter for any kind.
    pub fn new() -> Self {
        Self::default()
    }

    /// The built-in filters of every kind, compiled now.
    pub fn builtin() -> Result<Self, SeccompError> {
        let mut filters = Self::new();
        for kind in ThreadKind::ALL {
            filters.set(kind, (*builtin_filter(kind)?).clone());
        }
        Ok(filters)
    }

    /// Uses `program` for the threads of `kind`.
    pub fn set(&mut self, kind: ThreadKind, program: BpfProgram) -> &mut Self {
        self.programs[kind.index()] = Some(program);
        self
    }

    /// Runs the threads of `kind` unfiltered.
    pub fn clear(&mut self, kind: ThreadKind) -> &mut Self {
        self.programs[kind.index()] = None;
        self
    }

    /// The filter for `kind`, if any.
    pub fn get(&self, kind: ThreadKind) -> Option<&BpfProgram> {
        self.programs[kind.index()].as_ref()
    }
}

/// Which seccomp filters the VMM installs on its threads
/// ([`VmConfig::seccomp`](crate::VmConfig::seccomp)).
#[derive(Debug, Clone, Default)]
pub enum SeccompPolicy {
    /// No filters (the library default: the VMM cannot know what devices
    /// or event sources of your own call).
    #[default]
    Off,
    /// The built-in filter of each [`ThreadKind`] (what `microvm` uses).
    Builtin,
    /// Filters of your own.
    Custom(Arc<SeccompFilters>),
}

impl SeccompPolicy {
    /// Whether any filter is installed.
    pub fn is_on(&self) -> bool {
        !matches!(self, SeccompPolicy::Off)
    }

    /// Does now, on the calling thread, the one-time work of installing
    /// filters of these kinds later: the SIGSYS handler, the C library's
    /// time zone, and making the built-in filters ([`builtin_filter`]). The VMM calls it
    /// before it starts the vCPU threads, whose filter is then only the
    /// `seccomp(2)` call: a new thread's first allocations are slow (a
    /// fresh malloc arena), and this keeps them off the path to the
    /// guest's first instruction.
    pub fn prepare(&self, kinds: &[ThreadKind]) -> Result<(), SeccompError> {
        if !self.is_on() {
            return Ok(());
        }
        report::install_handler().map_err(SeccompError::Handler)?;
        prepare_libc();
        if let SeccompPolicy::Builtin = self {
            for &kind in kinds {
                builtin_filter(kind)?;
            }
        }
        Ok(())
    }

    /// Installs the filter this policy has for `kind` on the calling
    /// thread (nothing when it has none).
    pub fn install(&self, kind: ThreadKind) -> Result<(), SeccompError> {
        match self {
            SeccompPolicy::Off => Ok(()),
            SeccompPolicy::Builtin => install_filter(kind, &*builtin_filter(kind)?),
            SeccompPolicy::Custom(filters) => match filters.get(kind) {
                Some(program) => install_filter(kind, program),
                None => Ok(()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_filter_compiles() {
        for kind in ThreadKind::ALL {
            let program = builtin_filter(kind).unwrap();
            assert!(!program.is_empty(), "{}", kind.name());
            // BPF programs are at most 4096 instructions.
            assert!(program.len() < 4096, "{}: {}", kind.name(), program.len());
        }
        let filters = SeccompFilters::builtin().unwrap();
        assert!(filters.get(ThreadKind::Vcpu).is_some());
    }

    #[test]
    fn the_vcpu_list_is_tight() {
        let vcpu = rules_for(ThreadKind::Vcpu);
        for forbidden in [
            libc::SYS_openat,
            libc::SYS_execve,
            libc::SYS_socket,
            libc::SYS_clone,
            libc::SYS_clone3,
        ] {
            assert!(!vcpu.contains_key(&forbidden), "{forbidden}");
        }
        assert!(
            !vcpu[&libc::SYS_ioctl].is_empty(),
            "ioctl is argument-checked"
        );
        let api = rules_for(ThreadKind::Api);
        assert!(api.contains_key(&libc::SYS_clone3));
        assert!(!api.contains_key(&libc::SYS_execve));
    }

    #[test]
    fn a_custom_policy_installs_only_what_it_has() {
        let mut filters = SeccompFilters::new();
        filters
            .set(ThreadKind::Vcpu, vec![])
            .clear(ThreadKind::Vcpu);
        assert!(filters.get(ThreadKind::Vcpu).is_none());
        let policy = SeccompPolicy::Custom(Arc::new(filters));
        assert!(policy.is_on());
        // No filter for this kind: nothing is installed on the test thread.
        policy.install(ThreadKind::Api).unwrap();
        SeccompPolicy::Off.install(ThreadKind::Api).unwrap();
        assert!(!SeccompPolicy::Off.is_on());
        let names: Vec<_> = ThreadKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(
            names,
            ["vcpu", "event-loop", "api", "signal-watcher", "metrics"]
        );
    }
}
