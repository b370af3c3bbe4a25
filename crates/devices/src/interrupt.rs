//! Interrupt lines: how a device raises its interrupt.

use std::io;
use std::sync::Arc;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// An edge-triggered interrupt line a device can raise.
pub trait InterruptLine: Send + Sync {
    /// Raises the interrupt.
    fn trigger(&self) -> io::Result<()>;
}

/// An interrupt line backed by an eventfd. The VMM registers the eventfd as
/// a KVM irqfd for [`EventFdLine::gsi`], so a write raises the guest
/// interrupt without leaving the kernel.
#[derive(Debug, Clone)]
pub struct EventFdLine {
    event: Arc<EventFd>,
    gsi: u32,
}

impl EventFdLine {
    /// Creates a line for interrupt `gsi` with a fresh eventfd.
    pub fn new(gsi: u32) -> io::Result<Self> {
        Ok(Self {
            event: Arc::new(EventFd::new(EFD_NONBLOCK | libc::EFD_CLOEXEC)?),
            gsi,
        })
    }

    /// The eventfd to register as an irqfd.
    pub fn event(&self) -> &EventFd {
        &self.event
    }

    /// The interrupt number (GSI) this line raises.
    pub fn gsi(&self) -> u32 {
        self.gsi
    }
}

impl InterruptLine for EventFdLine {
    fn trigger(&self) -> io::Result<()> {
        self.event.write(1)
    }
}

impl vm_superio::Trigger for EventFdLine {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        InterruptLine::trigger(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_signals_the_eventfd() {
        let line = EventFdLine::new(5).unwrap();
        assert_eq!(line.gsi(), 5);
        InterruptLine::trigger(&line).unwrap();
        InterruptLine::trigger(&line.clone()).unwrap();
        assert_eq!(line.event().read().unwrap(), 2);
    }
}
