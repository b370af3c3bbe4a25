//! Timers for the device event loop.

use std::io;
use std::os::fd::AsRawFd;

use vmm_sys_util::timerfd::TimerFd;

/// Creates a disarmed monotonic timerfd whose reads never block.
///
/// An event loop that reads a timer after epoll said it was readable can
/// race with another thread re-arming or disarming it (which resets its
/// expiration count); a blocking read would then hang the loop.
pub fn nonblocking_timer() -> io::Result<TimerFd> {
    let timer = TimerFd::new()?;
    let fd = timer.as_raw_fd();
    // SAFETY: `fd` is a valid descriptor owned by `timer`; F_GETFL/F_SETFL
    // only change its status flags.
    let ok = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
    };
    if ok {
        Ok(timer)
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_a_disarmed_timer_does_not_block() {
        let mut timer = nonblocking_timer().unwrap();
        let err = timer.wait().unwrap_err();
        assert_eq!(err.errno(), libc::EAGAIN);
        timer
            .reset(std::time::Duration::from_millis(1), None)
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(timer.wait().unwrap(), 1);
    }
}
