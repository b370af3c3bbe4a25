//! The event-loop side of a virtio device: queue notifications arrive on
//! eventfds and are processed on the event-loop thread; the device's own
//! fds ([`kindling_devices::DeviceEvents`]) are registered and dispatched
//! alongside them.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use kindling_devices::{device_token, DeviceFds, EventRegistry};
use vmm_sys_util::eventfd::EventFd;

use crate::{QueueProgress, VirtioDevice};

/// An [`event_manager`] subscriber that processes a device's queues when
/// their notification eventfds fire. Get one from
/// [`crate::MmioTransport::subscriber`] and add it to the device event
/// loop.
///
/// Queue `i`'s eventfd is registered with epoll data `i`; the device's own
/// fds are registered through an [`EventRegistry`], whose data carries
/// [`kindling_devices::DEVICE_TOKEN_BASE`], so the two never collide: an
/// event with a device token goes to
/// [`kindling_devices::DeviceEvents::handle_event`], any other to the
/// queue.
pub struct VirtioSubscriber {
    device: Arc<Mutex<dyn VirtioDevice>>,
    queue_events: Vec<EventFd>,
    device_fds: DeviceFds,
    stats: Arc<PassStats>,
}

/// How long a device held the event loop: every queue pass and device
/// event a [`VirtioSubscriber`] dispatches is timed, so an operator (or a
/// test with an adversarial guest) can see that one device's guest does
/// not hold the loop, and every other device on it, for long.
#[derive(Debug, Default)]
pub struct PassStats {
    longest_ns: AtomicU64,
    passes: AtomicU64,
}

impl PassStats {
    /// Records one dispatch that took `took`.
    pub fn record(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.longest_ns.fetch_max(ns, Ordering::Relaxed);
        self.passes.fetch_add(1, Ordering::Relaxed);
    }

    /// The longest dispatch so far.
    pub fn longest(&self) -> Duration {
        Duration::from_nanos(self.longest_ns.load(Ordering::Relaxed))
    }

    /// How many dispatches there were.
    pub fn passes(&self) -> u64 {
        self.passes.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for VirtioSubscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VirtioSubscriber")
            .field("queue_events", &self.queue_events)
            .field("device_fds", &self.device_fds)
            .finish_non_exhaustive()
    }
}

impl VirtioSubscriber {
    /// A subscriber for `device` whose queue `i` is notified through
    /// `queue_events[i]`.
    pub fn new(device: Arc<Mutex<dyn VirtioDevice>>, queue_events: Vec<EventFd>) -> Self {
        Self {
            device,
            queue_events,
            device_fds: DeviceFds::default(),
            stats: Arc::default(),
        }
    }

    /// How long the device's dispatches took (shared: it keeps counting
    /// once the subscriber is on the event loop).
    pub fn stats(&self) -> Arc<PassStats> {
        self.stats.clone()
    }

    /// The fds the device registered on the event loop.
    pub fn device_fds(&self) -> &[std::os::fd::RawFd] {
        self.device_fds.as_slice()
    }

    /// Drains queue `index`'s eventfd and processes the queue. This is
    /// what the event loop calls; tests may call it directly.
    pub fn handle_queue_event(&mut self, index: usize) {
        let Some(event) = self.queue_events.get(index) else {
            kindling_devices::log_limited!(
                log::Level::Warn,
                "virtio: event for queue {index}, which does not exist"
            );
            return;
        };
        // Consume the notification count; EAGAIN when a spurious wake-up
        // found it empty, in which case processing is harmless.
        let _ = event.read();
        let mut device = self.device.lock().unwrap_or_else(|p| p.into_inner());
        if !device.is_activated() {
            return;
        }
        let began = Instant::now();
        let progress = device.process_queue(index);
        self.stats.record(began.elapsed());
        match progress {
            Ok(QueueProgress::Done) => {}
            Ok(QueueProgress::MoreWork) => {
                // Come back after the other ready events.
                if let Err(e) = event.write(1) {
                    kindling_devices::log_limited!(
                        log::Level::Error,
                        "virtio: cannot re-signal queue {index}: {e}"
                    );
                }
            }
            Err(e) => kindling_devices::log_limited!(
                log::Level::Error,
                "virtio {:?}: {e}",
                device.device_type()
            ),
        }
    }
}

impl MutEventSubscriber for VirtioSubscriber {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if let Some(token) = device_token(events.data()) {
            let mut device = self.device.lock().unwrap_or_else(|p| p.into_inner());
            let mut registry = EventRegistry::new(ops, &mut self.device_fds);
            let began = Instant::now();
            device.handle_event(token, events.event_set(), &mut registry);
            self.stats.record(began.elapsed());
        } else if events.event_set().contains(EventSet::IN) {
            self.handle_queue_event(events.data() as usize);
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        for (index, event) in self.queue_events.iter().enumerate() {
            if let Err(e) = ops.add(Events::with_data(event, index as u32, EventSet::IN)) {
                kindling_devices::log_limited!(
                    log::Level::Error,
                    "virtio: cannot watch the eventfd of queue {index}: {e:?}"
                );
            }
        }
        let mut device = self.device.lock().unwrap_or_else(|p| p.into_inner());
        let mut registry = EventRegistry::new(ops, &mut self.device_fds);
        device.register_events(&mut registry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{ActivateError, Activation, DeviceType};
    use crate::queue::QueueError;
    use event_manager::{EventManager, SubscriberOps};
    use kindling_devices::{DeviceEvents, EventRegistryError};
    use std::os::fd::AsRawFd;
    use virtio_queue::Queue;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    #[derive(Debug, Default)]
    struct Counter {
        active: bool,
        processed: Vec<usize>,
        fail: bool,
        more: Option<()>,
        /// An fd of the device's own, registered with token 0 (the same
        /// number as queue 0's data).
        extra: Option<EventFd>,
        handled: Vec<(u32, EventSet)>,
        errors: Vec<EventRegistryError>,
    }

    impl DeviceEvents for Counter {
        fn register_events(&mut self, ops: &mut EventRegistry<'_>) {
            if let Some(extra) = &self.extra {
                ops.add(extra.as_raw_fd(), 0, EventSet::IN).unwrap();
            }
        }

        fn handle_event(&mut self, token: u32, events: EventSet, ops: &mut EventRegistry<'_>) {
            self.handled.push((token, events));
            let Some(extra) = &self.extra else { return };
            let _ = extra.read();
            // The second event removes the fd; a device cannot remove an
            // fd it does not own (here: a fresh one).
            if self.handled.len() == 2 {
                ops.remove(extra.as_raw_fd()).unwrap();
                let other = EventFd::new(EFD_NONBLOCK).unwrap();
                self.errors.extend(ops.remove(other.as_raw_fd()).err());
            }
        }
    }

    impl VirtioDevice for Counter {
        fn device_type(&self) -> DeviceType {
            DeviceType::Other(9)
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[4, 4]
        }
        fn device_features(&self) -> u64 {
            0
        }
        fn read_config(&self, _: u64, _: &mut [u8]) {}
        fn write_config(&mut self, _: u64, _: &[u8]) {}
        fn activate(&mut self, _: Activation) -> Result<(), ActivateError> {
            Ok(())
        }
        fn is_activated(&self) -> bool {
            self.active
        }
        fn reset(&mut self) {}
        fn process_queue(&mut self, index: usize) -> Result<QueueProgress, QueueError> {
            self.processed.push(index);
            if self.fail {
                return Err(QueueError::NoSuchQueue { index });
            }
            if self.more.take().is_some() {
                return Ok(QueueProgress::MoreWork);
            }
            Ok(QueueProgress::Done)
        }
        fn queues(&self) -> &[Queue] {
            &[]
        }
    }

    #[test]
    fn the_event_loop_processes_notified_queues() {
        let device = Arc::new(Mutex::new(Counter {
            active: true,
            ..Counter::default()
        }));
        let events: Vec<EventFd> = (0..2)
            .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
            .collect();
        let notify1 = events[1].try_clone().unwrap();
        let sub = VirtioSubscriber::new(device.clone(), events);
        assert!(format!("{sub:?}").contains("VirtioSubscriber"));
        let mut manager = EventManager::<Box<dyn MutEventSubscriber + Send>>::new().unwrap();
        manager.add_subscriber(Box::new(sub));
        notify1.write(1).unwrap();
        notify1.write(1).unwrap();
        assert_eq!(manager.run_with_timeout(100).unwrap(), 1);
        assert_eq!(device.lock().unwrap().processed, vec![1]);
        // The eventfd was drained: nothing more to do.
        assert_eq!(manager.run_with_timeout(0).unwrap(), 0);
    }

    #[test]
    fn inactive_devices_and_errors_are_handled() {
        let device = Arc::new(Mutex::new(Counter::default()));
        let events: Vec<EventFd> = (0..2)
            .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
            .collect();
        let mut sub = VirtioSubscriber::new(device.clone(), events);
        sub.handle_queue_event(0);
        assert!(device.lock().unwrap().processed.is_empty());
        device.lock().unwrap().active = true;
        device.lock().unwrap().fail = true;
        sub.handle_queue_event(1);
        sub.handle_queue_event(2);
        assert_eq!(device.lock().unwrap().processed, vec![1]);
    }

    #[test]
    fn unfinished_work_re_signals_the_queue() {
        let device = Arc::new(Mutex::new(Counter {
            active: true,
            more: Some(()),
            ..Counter::default()
        }));
        let events: Vec<EventFd> = (0..2)
            .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
            .collect();
        let notify0 = events[0].try_clone().unwrap();
        let mut manager = EventManager::<Box<dyn MutEventSubscriber + Send>>::new().unwrap();
        manager.add_subscriber(Box::new(VirtioSubscriber::new(device.clone(), events)));
        notify0.write(1).unwrap();
        assert_eq!(manager.run_with_timeout(100).unwrap(), 1);
        // The device said there was more: the queue comes back by itself.
        assert_eq!(manager.run_with_timeout(100).unwrap(), 1);
        assert_eq!(manager.run_with_timeout(0).unwrap(), 0);
        assert_eq!(device.lock().unwrap().processed, vec![0, 0]);
    }

    #[test]
    fn device_fds_are_dispatched_apart_from_queues() {
        let extra = EventFd::new(EFD_NONBLOCK).unwrap();
        let poke = extra.try_clone().unwrap();
        let device = Arc::new(Mutex::new(Counter {
            active: true,
            extra: Some(extra),
            ..Counter::default()
        }));
        let events: Vec<EventFd> = (0..2)
            .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
            .collect();
        let notify0 = events[0].try_clone().unwrap();
        let mut manager = EventManager::<Box<dyn MutEventSubscriber + Send>>::new().unwrap();
        manager.add_subscriber(Box::new(VirtioSubscriber::new(device.clone(), events)));
        // The device's fd, token 0, is not queue 0.
        poke.write(1).unwrap();
        assert_eq!(manager.run_with_timeout(100).unwrap(), 1);
        assert!(device.lock().unwrap().processed.is_empty());
        assert_eq!(device.lock().unwrap().handled, vec![(0, EventSet::IN)]);
        // Queue 0 is not the device's fd.
        notify0.write(1).unwrap();
        assert_eq!(manager.run_with_timeout(100).unwrap(), 1);
        assert_eq!(device.lock().unwrap().processed, vec![0]);
        assert_eq!(device.lock().unwrap().handled.len(), 1);
        // The second event removes the device's fd: no more events.
        poke.write(1).unwrap();
        assert_eq!(manager.run_with_timeout(100).unwrap(), 1);
        poke.write(1).unwrap();
        assert_eq!(manager.run_with_timeout(0).unwrap(), 0);
        let d = device.lock().unwrap();
        assert_eq!(d.handled.len(), 2);
        assert!(matches!(
            d.errors[..],
            [EventRegistryError::NotRegistered(_)]
        ));
        drop(d);
        // A new subscriber registers the device's fd again at init.
        let mut again = EventManager::<Box<dyn MutEventSubscriber + Send>>::new().unwrap();
        let sub = VirtioSubscriber::new(device.clone(), vec![]);
        assert!(sub.device_fds().is_empty());
        again.add_subscriber(Box::new(sub));
        poke.write(1).unwrap();
        assert_eq!(again.run_with_timeout(100).unwrap(), 1);
        assert_eq!(device.lock().unwrap().handled.len(), 3);
    }
}
