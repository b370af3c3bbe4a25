//! The SIGSYS handler that reports a seccomp violation: one line on
//! standard error naming the thread kind and the system call, then death
//! by SIGSYS. Everything here is async-signal-safe: a stack buffer, a
//! `write(2)`, and the forbidden call made again.

use std::cell::Cell;
use std::io;
use std::sync::OnceLock;

use super::ThreadKind;

thread_local! {
    /// The kind of filter this thread installed last (`u8::MAX`: none).
    static THREAD_KIND: Cell<u8> = const { Cell::new(u8::MAX) };
}

/// `si_code` of a SIGSYS raised by seccomp.
const SYS_SECCOMP: libc::c_int = 1;

/// The start of a `siginfo_t` for SIGSYS (`<asm-generic/siginfo.h>`): the
/// libc crate does not expose `_sigsys`.
#[repr(C)]
struct SigsysInfo {
    signo: libc::c_int,
    errno: libc::c_int,
    code: libc::c_int,
    // The union is pointer-aligned.
    _pad: libc::c_int,
    call_addr: *mut libc::c_void,
    syscall: libc::c_int,
    arch: libc::c_uint,
}

pub(super) fn set_thread_kind(kind: ThreadKind) {
    THREAD_KIND.with(|k| k.set(kind.index() as u8));
}

/// Installs the reporting SIGSYS handler for the process (idempotent).
pub(super) fn install_handler() -> io::Result<()> {
    static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            // SAFETY: a zeroed sigaction is valid; the handler has the
            // SA_SIGINFO signature and only does async-signal-safe work.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_sigsys as *const () as usize;
                action.sa_flags = libc::SA_SIGINFO;
                libc::sigemptyset(&mut action.sa_mask);
                if libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) != 0 {
                    return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
                }
            }
            Ok(())
        })
        .map_err(io::Error::from_raw_os_error)
}

/// A fixed buffer that formats without allocating.
struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Line {
    fn push(&mut self, s: &[u8]) {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
    }

    fn push_num(&mut self, mut value: u64, radix: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b"0123456789abcdef"[(value % radix) as usize];
            value /= radix;
            if value == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }
}

/// Writes the report line for a violation by a `kind` thread (an index
/// into [`ThreadKind::ALL`], or anything else for an unknown thread).
fn report_line(kind: u8, nr: i64, ioctl_request: Option<u64>) -> Line {
    let mut line = Line {
        buf: [0; 256],
        len: 0,
    };
    line.push(b"kindling: seccomp: ");
    match ThreadKind::ALL.get(usize::from(kind)) {
        Some(kind) => {
            line.push(b"a thread of kind ");
            line.push(kind.name().as_bytes());
        }
        None => line.push(b"a thread with an inherited filter"),
    }
    line.push(b" made a forbidden system call: ");
    line.push_num(nr as u64, 10);
    if let Some(name) = syscall_name(nr) {
        line.push(b" (");
        line.push(name.as_bytes());
        line.push(b")");
    }
    if let Some(request) = ioctl_request {
        line.push(b" request 0x");
        line.push_num(request, 16);
    }
    line.push(b"; the process ends (see \"Security\" in the Kindling README)\n");
    line
}

extern "C" fn on_sigsys(
    _signo: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid siginfo for SIGSYS, whose layout
    // starts as `SigsysInfo`.
    let info = unsafe { &*(info as *const SigsysInfo) };
    let kind = THREAD_KIND.with(|k| k.get());
    if info.code != SYS_SECCOMP {
        let line = b"kindling: SIGSYS not raised by seccomp; the process ends\n";
        // SAFETY: write(2) and signal(2)/raise(3) are async-signal-safe;
        // SIGSYS is blocked while this handler runs, so the raised signal
        // is taken, with its default action, when it returns.
        unsafe {
            libc::write(2, line.as_ptr().cast(), line.len());
            libc::signal(libc::SIGSYS, libc::SIG_DFL);
            libc::raise(libc::SIGSYS);
        }
        return;
    }
    let nr = i64::from(info.syscall);
    let args = call_args(context);
    let request = (nr == libc::SYS_ioctl).then_some(args[1]);
    let line = report_line(kind, nr, request);
    // SAFETY: writing a stack buffer to stderr is async-signal-safe.
    unsafe { libc::write(2, line.buf.as_ptr().cast(), line.len) };
    // The same call, with the same arguments, is trapped again; SIGSYS is
    // blocked in this handler, so the kernel resets it to its default
    // action and the process dies of SIGSYS, as without a handler.
    // SAFETY: the filter denies this call before the kernel runs it.
    unsafe {
        libc::syscall(nr, args[0], args[1], args[2], args[3], args[4], args[5]);
        libc::_exit(128 + libc::SIGSYS);
    }
}

/// The six arguments of the trapped call, from the saved registers.
#[cfg(target_arch = "x86_64")]
fn call_args(context: *mut libc::c_void) -> [u64; 6] {
    // SAFETY: for an SA_SIGINFO handler the third argument is the
    // interrupted thread's ucontext_t.
    let gregs = unsafe { &(*(context as *const libc::ucontext_t)).uc_mcontext.gregs };
    [
        libc::REG_RDI,
        libc::REG_RSI,
        libc::REG_RDX,
        libc::REG_R10,
        libc::REG_R8,
        libc::REG_R9,
    ]
    .map(|r| gregs[r as usize] as u64)
}

#[cfg(not(target_arch = "x86_64"))]
fn call_args(_context: *mut libc::c_void) -> [u64; 6] {
    [0; 6]
}

/// The name of common system calls (for the violation report).
pub fn syscall_name(nr: i64) -> Option<&'static str> {
    const NAMES: &[(i64, &str)] = &[
        (libc::SYS_read, "read"),
        (libc::SYS_write, "write"),
        (libc::SYS_open, "open"),
        (libc::SYS_openat, "openat"),
        (libc::SYS_close, "close"),
        (libc::SYS_stat, "stat"),
        (libc::SYS_fstat, "fstat"),
        (libc::SYS_newfstatat, "newfstatat"),
        (libc::SYS_statx, "statx"),
        (libc::SYS_lseek, "lseek"),
        (libc::SYS_mmap, "mmap"),
        (libc::SYS_mprotect, "mprotect"),
        (libc::SYS_munmap, "munmap"),
        (libc::SYS_ioctl, "ioctl"),
        (libc::SYS_pread64, "pread64"),
        (libc::SYS_pwrite64, "pwrite64"),
        (libc::SYS_readv, "readv"),
        (libc::SYS_writev, "writev"),
        (libc::SYS_access, "access"),
        (libc::SYS_pipe2, "pipe2"),
        (libc::SYS_poll, "poll"),
        (libc::SYS_dup, "dup"),
        (libc::SYS_nanosleep, "nanosleep"),
        (libc::SYS_clock_nanosleep, "clock_nanosleep"),
        (libc::SYS_getpid, "getpid"),
        (libc::SYS_socket, "socket"),
        (libc::SYS_connect, "connect"),
        (libc::SYS_accept4, "accept4"),
        (libc::SYS_sendto, "sendto"),
        (libc::SYS_recvfrom, "recvfrom"),
        (libc::SYS_sendmsg, "sendmsg"),
        (libc::SYS_recvmsg, "recvmsg"),
        (libc::SYS_bind, "bind"),
        (libc::SYS_listen, "listen"),
        (libc::SYS_clone, "clone"),
        (libc::SYS_clone3, "clone3"),
        (libc::SYS_fork, "fork"),
        (libc::SYS_vfork, "vfork"),
        (libc::SYS_execve, "execve"),
        (libc::SYS_execveat, "execveat"),
        (libc::SYS_kill, "kill"),
        (libc::SYS_tgkill, "tgkill"),
        (libc::SYS_fcntl, "fcntl"),
        (libc::SYS_fsync, "fsync"),
        (libc::SYS_fdatasync, "fdatasync"),
        (libc::SYS_ftruncate, "ftruncate"),
        (libc::SYS_unlink, "unlink"),
        (libc::SYS_unlinkat, "unlinkat"),
        (libc::SYS_mkdir, "mkdir"),
        (libc::SYS_rename, "rename"),
        (libc::SYS_prctl, "prctl"),
        (libc::SYS_ptrace, "ptrace"),
        (libc::SYS_mount, "mount"),
        (libc::SYS_setuid, "setuid"),
        (libc::SYS_rt_sigaction, "rt_sigaction"),
        (libc::SYS_rt_sigtimedwait, "rt_sigtimedwait"),
        (libc::SYS_epoll_create1, "epoll_create1"),
        (libc::SYS_epoll_ctl, "epoll_ctl"),
        (libc::SYS_epoll_wait, "epoll_wait"),
        (libc::SYS_eventfd2, "eventfd2"),
        (libc::SYS_timerfd_create, "timerfd_create"),
        (libc::SYS_timerfd_settime, "timerfd_settime"),
        (libc::SYS_fallocate, "fallocate"),
        (libc::SYS_memfd_create, "memfd_create"),
        (libc::SYS_io_uring_setup, "io_uring_setup"),
        (libc::SYS_io_uring_enter, "io_uring_enter"),
        (libc::SYS_userfaultfd, "userfaultfd"),
        (libc::SYS_seccomp, "seccomp"),
        (libc::SYS_getrandom, "getrandom"),
        (libc::SYS_uname, "uname"),
    ];
    NAMES.iter().find(|(n, _)| *n == nr).map(|(_, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(line: Line) -> String {
        String::from_utf8(line.buf[..line.len].to_vec()).unwrap()
    }

    #[test]
    fn the_report_names_the_thread_and_the_call() {
        let line = text(report_line(0, libc::SYS_execve, None));
        assert!(
            line.starts_with(
                "kindling: seccomp: a thread of kind vcpu made a forbidden system call: 59 (execve);"
            ),
            "{line}"
        );
        assert!(line.ends_with('\n'));
        let line = text(report_line(1, libc::SYS_ioctl, Some(0xae80)));
        assert!(line.contains("kind event-loop made"), "{line}");
        assert!(line.contains(": 16 (ioctl) request 0xae80;"), "{line}");
        let line = text(report_line(u8::MAX, 999, None));
        assert!(
            line.contains("an inherited filter made a forbidden system call: 999;"),
            "{line}"
        );
        assert_eq!(syscall_name(libc::SYS_openat), Some("openat"));
        assert_eq!(syscall_name(100_000), None);
    }
}
