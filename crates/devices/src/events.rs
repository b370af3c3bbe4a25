//! Devices that own event sources: one trait ([`DeviceEvents`]) for every
//! device that wants file descriptors of its own on the event loop (a TAP
//! device, a Unix listener and its connections, a timerfd, an io_uring
//! completion eventfd), a scoped view of the event loop
//! ([`EventRegistry`]) through which it adds, changes and removes them,
//! and a subscriber ([`DeviceEventSubscriber`]) that puts any such device
//! on an [`event_manager`] loop.
//!
//! A device names each of its fds with a token of its choice (at most
//! [`MAX_DEVICE_TOKEN`]). The registry stores `token | DEVICE_TOKEN_BASE`
//! as the epoll data, so a subscriber that also has fds of its own (the
//! virtio subscriber's queue eventfds, numbered from 0) can tell the two
//! apart ([`device_token`]) and hand the device only its own events.

use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

/// The bit set in the epoll data of every fd registered through an
/// [`EventRegistry`].
pub const DEVICE_TOKEN_BASE: u32 = 1 << 31;
/// The largest token a device may give one of its fds.
pub const MAX_DEVICE_TOKEN: u32 = DEVICE_TOKEN_BASE - 1;

/// The device token in the epoll data `data`, if `data` belongs to a
/// device-registered fd.
pub fn device_token(data: u32) -> Option<u32> {
    (data & DEVICE_TOKEN_BASE != 0).then_some(data & MAX_DEVICE_TOKEN)
}

/// A device with event sources of its own.
///
/// Both methods run on the event-loop thread with the device locked.
/// Every fd a device registers must stay open until the device removes it
/// (closing it first leaves a stale entry in the event manager, and the
/// next fd with the same number could not be added).
pub trait DeviceEvents: Send {
    /// Registers the device's fds when its subscriber joins the event
    /// loop. The default registers nothing.
    fn register_events(&mut self, ops: &mut EventRegistry<'_>) {
        let _ = ops;
    }

    /// Called when the fd registered with `token` is ready; `events` says
    /// how (readable, writable, hung up, error). `ops` adds, changes or
    /// removes the device's fds. The default does nothing.
    fn handle_event(&mut self, token: u32, events: EventSet, ops: &mut EventRegistry<'_>) {
        let _ = (token, events, ops);
    }
}

/// Why an [`EventRegistry`] operation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventRegistryError {
    /// The token is outside the device token range.
    #[error("event token {0:#x} is larger than the largest device token {MAX_DEVICE_TOKEN:#x}")]
    TokenOutOfRange(u32),
    /// The fd was not registered by this device (it may belong to the
    /// subscriber or to another device).
    #[error("fd {0} was not registered by this device")]
    NotRegistered(RawFd),
    /// The event manager refused the operation.
    #[error("cannot {op} fd {fd} on the event loop: {source}")]
    EventLoop {
        /// The operation: "add", "modify" or "remove".
        op: &'static str,
        /// The fd.
        fd: RawFd,
        /// The event manager's error.
        #[source]
        source: event_manager::Error,
    },
}

/// The fds a device registered through its [`EventRegistry`]; kept by the
/// subscriber so the device can only modify or remove its own.
#[derive(Debug, Default)]
pub struct DeviceFds {
    fds: Vec<RawFd>,
}

impl DeviceFds {
    /// The registered fds.
    pub fn as_slice(&self) -> &[RawFd] {
        &self.fds
    }
}

/// The event-loop operations a registry forwards to; [`EventOps`] in
/// production.
trait LoopOps {
    fn add(&mut self, events: Events) -> Result<(), event_manager::Error>;
    fn modify(&mut self, events: Events) -> Result<(), event_manager::Error>;
    fn remove(&mut self, events: Events) -> Result<(), event_manager::Error>;
}

impl LoopOps for EventOps<'_> {
    fn add(&mut self, events: Events) -> Result<(), event_manager::Error> {
        EventOps::add(self, events)
    }
    fn modify(&mut self, events: Events) -> Result<(), event_manager::Error> {
        EventOps::modify(self, events)
    }
    fn remove(&mut self, events: Events) -> Result<(), event_manager::Error> {
        EventOps::remove(self, events)
    }
}

/// A device's view of the event loop: it adds, changes and removes its
/// own fds, each with a device-chosen token, and cannot touch fds it did
/// not register.
pub struct EventRegistry<'a> {
    ops: &'a mut (dyn LoopOps + 'a),
    fds: &'a mut DeviceFds,
}

impl std::fmt::Debug for EventRegistry<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventRegistry")
            .field("fds", &self.fds)
            .finish_non_exhaustive()
    }
}

impl<'a> EventRegistry<'a> {
    /// A registry over a subscriber's `ops`, recording the device's fds in
    /// `fds` (which the subscriber keeps from one call to the next).
    pub fn new(ops: &'a mut EventOps<'_>, fds: &'a mut DeviceFds) -> Self {
        Self { ops, fds }
    }

    fn data(token: u32) -> Result<u32, EventRegistryError> {
        if token > MAX_DEVICE_TOKEN {
            return Err(EventRegistryError::TokenOutOfRange(token));
        }
        Ok(token | DEVICE_TOKEN_BASE)
    }

    fn owned(&self, fd: RawFd) -> Result<usize, EventRegistryError> {
        self.fds
            .fds
            .iter()
            .position(|&f| f == fd)
            .ok_or(EventRegistryError::NotRegistered(fd))
    }

    /// Watches `fd` for `events`; the device is called back with `token`.
    pub fn add(
        &mut self,
        fd: RawFd,
        token: u32,
        events: EventSet,
    ) -> Result<(), EventRegistryError> {
        let data = Self::data(token)?;
        self.ops
            .add(Events::with_data_raw(fd, data, events))
            .map_err(|source| EventRegistryError::EventLoop {
                op: "add",
                fd,
                source,
            })?;
        self.fds.fds.push(fd);
        Ok(())
    }

    /// Changes the token or the events of an fd the device registered
    /// (to stop watching for writability once a buffer drained, say).
    pub fn modify(
        &mut self,
        fd: RawFd,
        token: u32,
        events: EventSet,
    ) -> Result<(), EventRegistryError> {
        let data = Self::data(token)?;
        self.owned(fd)?;
        self.ops
            .modify(Events::with_data_raw(fd, data, events))
            .map_err(|source| EventRegistryError::EventLoop {
                op: "modify",
                fd,
                source,
            })
    }

    /// Stops watching an fd the device registered. Call it before closing
    /// the fd.
    pub fn remove(&mut self, fd: RawFd) -> Result<(), EventRegistryError> {
        let at = self.owned(fd)?;
        self.ops
            .remove(Events::empty_raw(fd))
            .map_err(|source| EventRegistryError::EventLoop {
                op: "remove",
                fd,
                source,
            })?;
        self.fds.fds.swap_remove(at);
        Ok(())
    }

    /// Whether the device registered `fd` and has not removed it.
    pub fn is_registered(&self, fd: RawFd) -> bool {
        self.owned(fd).is_ok()
    }
}

/// Puts a device with its own event sources on an [`event_manager`]
/// loop: `init` calls [`DeviceEvents::register_events`] and every event on
/// a device fd calls [`DeviceEvents::handle_event`] with its token.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
/// use kindling_devices::{DeviceEventSubscriber, DeviceEvents};
///
/// struct Quiet;
/// impl DeviceEvents for Quiet {}
///
/// let mut manager = EventManager::<Box<dyn MutEventSubscriber + Send>>::new().unwrap();
/// manager.add_subscriber(Box::new(DeviceEventSubscriber::new(Arc::new(Mutex::new(Quiet)))));
/// ```
pub struct DeviceEventSubscriber<T: DeviceEvents + ?Sized> {
    device: Arc<Mutex<T>>,
    fds: DeviceFds,
}

impl<T: DeviceEvents + ?Sized> std::fmt::Debug for DeviceEventSubscriber<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceEventSubscriber")
            .field("fds", &self.fds)
            .finish_non_exhaustive()
    }
}

impl<T: DeviceEvents + ?Sized> DeviceEventSubscriber<T> {
    /// A subscriber for `device`.
    pub fn new(device: Arc<Mutex<T>>) -> Self {
        Self {
            device,
            fds: DeviceFds::default(),
        }
    }

    /// The fds the device has registered.
    pub fn fds(&self) -> &[RawFd] {
        self.fds.as_slice()
    }
}

impl<T: DeviceEvents + ?Sized> MutEventSubscriber for DeviceEventSubscriber<T> {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let Some(token) = device_token(events.data()) else {
            crate::log_limited!(
                log::Level::Warn,
                "device events: fd {} has data {:#x}, outside the device token space",
                events.fd(),
                events.data()
            );
            return;
        };
        let mut device = self.device.lock().unwrap_or_else(|p| p.into_inner());
        let mut registry = EventRegistry::new(ops, &mut self.fds);
        device.handle_event(token, events.event_set(), &mut registry);
    }

    fn init(&mut self, ops: &mut EventOps) {
        let mut device = self.device.lock().unwrap_or_else(|p| p.into_inner());
        let mut registry = EventRegistry::new(ops, &mut self.fds);
        device.register_events(&mut registry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_manager::{EventManager, SubscriberOps};
    use std::os::fd::AsRawFd;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    /// A device with one eventfd that, when it fires, adds a second fd;
    /// the second one removes itself.
    struct Echo {
        first: EventFd,
        second: EventFd,
        seen: Vec<(u32, EventSet)>,
        errors: Vec<EventRegistryError>,
    }

    impl DeviceEvents for Echo {
        fn register_events(&mut self, ops: &mut EventRegistry<'_>) {
            ops.add(self.first.as_raw_fd(), 7, EventSet::IN).unwrap();
            self.errors.extend(
                ops.add(self.second.as_raw_fd(), MAX_DEVICE_TOKEN + 1, EventSet::IN)
                    .err(),
            );
            self.errors
                .extend(ops.remove(self.second.as_raw_fd()).err());
        }

        fn handle_event(&mut self, token: u32, events: EventSet, ops: &mut EventRegistry<'_>) {
            self.seen.push((token, events));
            match token {
                7 => {
                    let _ = self.first.read();
                    ops.add(self.second.as_raw_fd(), MAX_DEVICE_TOKEN, EventSet::IN)
                        .unwrap();
                    // Registering it twice is refused by the event manager.
                    self.errors
                        .extend(ops.add(self.second.as_raw_fd(), 3, EventSet::IN).err());
                }
                MAX_DEVICE_TOKEN => {
                    let _ = self.second.read();
                    assert!(ops.is_registered(self.second.as_raw_fd()));
                    ops.modify(self.second.as_raw_fd(), 5, EventSet::IN)
                        .unwrap();
                    ops.remove(self.second.as_raw_fd()).unwrap();
                    assert!(!ops.is_registered(self.second.as_raw_fd()));
                }
                _ => {}
            }
        }
    }

    #[test]
    fn devices_add_and_remove_their_own_fds() {
        let echo = Echo {
            first: EventFd::new(EFD_NONBLOCK).unwrap(),
            second: EventFd::new(EFD_NONBLOCK).unwrap(),
            seen: Vec::new(),
            errors: Vec::new(),
        };
        let first = echo.first.try_clone().unwrap();
        let second = echo.second.try_clone().unwrap();
        let second_fd = echo.second.as_raw_fd();
        let device = Arc::new(Mutex::new(echo));
        let sub = DeviceEventSubscriber::new(device.clone());
        assert!(format!("{sub:?}").contains("DeviceEventSubscriber"));
        let mut manager = EventManager::<Box<dyn MutEventSubscriber + Send>>::new().unwrap();
        manager.add_subscriber(Box::new(sub));
        {
            let d = device.lock().unwrap();
            assert_eq!(
                d.errors,
                vec![
                    EventRegistryError::TokenOutOfRange(MAX_DEVICE_TOKEN + 1),
                    EventRegistryError::NotRegistered(second_fd),
                ]
            );
            assert!(d.errors[0].to_string().contains("largest device token"));
        }
        // Not registered yet: no event.
        second.write(1).unwrap();
        assert_eq!(manager.run_with_timeout(0).unwrap(), 0);
        first.write(1).unwrap();
        assert_eq!(manager.run_with_timeout(100).unwrap(), 1);
        // The second fd (already signalled) is now watched.
        assert_eq!(manager.run_with_timeout(100).unwrap(), 1);
        // It removed itself.
        second.write(1).unwrap();
        assert_eq!(manager.run_with_timeout(0).unwrap(), 0);
        let d = device.lock().unwrap();
        assert_eq!(
            d.seen,
            vec![(7, EventSet::IN), (MAX_DEVICE_TOKEN, EventSet::IN)]
        );
        assert!(matches!(
            d.errors[2],
            EventRegistryError::EventLoop {
                op: "add",
                source: event_manager::Error::FdAlreadyRegistered,
                ..
            }
        ));
    }

    #[test]
    fn tokens_are_kept_apart_from_other_data() {
        assert_eq!(device_token(3), None);
        assert_eq!(device_token(DEVICE_TOKEN_BASE | 3), Some(3));
        assert_eq!(device_token(u32::MAX), Some(MAX_DEVICE_TOKEN));
    }

    #[test]
    fn the_defaults_register_nothing() {
        struct Quiet;
        impl DeviceEvents for Quiet {}
        let device = Arc::new(Mutex::new(Quiet));
        let mut manager = EventManager::<Box<dyn MutEventSubscriber + Send>>::new().unwrap();
        let sub = DeviceEventSubscriber::new(device.clone());
        assert!(sub.fds().is_empty());
        manager.add_subscriber(Box::new(sub));
        assert_eq!(manager.run_with_timeout(0).unwrap(), 0);
    }
}
