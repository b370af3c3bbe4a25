//! A one-port device through which a guest ends the VM with a status.

use crate::{BusDevice, ExitReason, VmExitHandle};

/// Writing byte `N` to this port ends the VM with exit status `N`. Reads
/// return 0. Test guests use it to report their result.
#[derive(Debug)]
pub struct DebugExit {
    exit: VmExitHandle,
}

impl DebugExit {
    /// Creates the device, reporting through `exit`.
    pub fn new(exit: VmExitHandle) -> Self {
        Self { exit }
    }
}

impl BusDevice for DebugExit {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == 0 {
            if let Some(&status) = data.first() {
                self.exit.request(ExitReason::Status(status));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_requests_the_exit_status() {
        let exit = VmExitHandle::new().unwrap();
        let mut d = DebugExit::new(exit.clone());
        let mut b = [9u8];
        d.read(0, &mut b);
        assert_eq!(b, [0]);
        d.write(1, &[5]);
        assert_eq!(exit.reason(), None);
        d.write(0, &[]);
        assert_eq!(exit.reason(), None);
        d.write(0, &[42]);
        assert_eq!(exit.reason(), Some(ExitReason::Status(42)));
    }
}
