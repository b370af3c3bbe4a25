//! Transport tests: register accesses, the status state machine, queue
//! setup and validation, interrupts, reset and snapshots, against a mock
//! device.

use super::*;
use crate::interrupt::tests::CountingLine;
use crate::interrupt::{INT_CONFIG, INT_VRING};
use crate::queue::tests::memory;
use crate::queue::QueueError;
use crate::transport::status::*;
use crate::QueueProgress;
use kindling_memory::Persist;
use virtio_queue::{Queue, QueueT};

/// A device that records what the transport does to it.
#[derive(Debug, Default)]
struct MockDevice {
    config: [u8; 8],
    active: Option<(Vec<Queue>, u64)>,
    activations: usize,
    resets: usize,
    processed: Vec<usize>,
    refuse: bool,
}

const MOCK_FEATURES: u64 = features::COMMON | 0b101;

impl kindling_devices::DeviceEvents for MockDevice {}

impl VirtioDevice for MockDevice {
    fn device_type(&self) -> DeviceType {
        DeviceType::Other(42)
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[16, 8]
    }
    fn device_features(&self) -> u64 {
        MOCK_FEATURES
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.config.get(offset as usize + i).copied().unwrap_or(0);
        }
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            if let Some(slot) = self.config.get_mut(offset as usize + i) {
                *slot = *b;
            }
        }
    }
    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        if self.refuse {
            return Err(ActivateError::QueueNotReady {
                device: self.device_type(),
                index: 0,
            });
        }
        if self.active.is_some() {
            return Err(ActivateError::AlreadyActive(self.device_type()));
        }
        self.activations += 1;
        self.active = Some((activation.queues, activation.acked_features));
        Ok(())
    }
    fn is_activated(&self) -> bool {
        self.active.is_some()
    }
    fn reset(&mut self) {
        self.resets += 1;
        self.active = None;
        self.config = [0; 8];
    }
    fn process_queue(&mut self, index: usize) -> Result<QueueProgress, QueueError> {
        self.processed.push(index);
        Ok(QueueProgress::Done)
    }
    fn queues(&self) -> &[Queue] {
        self.active.as_ref().map_or(&[], |(q, _)| q.as_slice())
    }
}

struct Fixture {
    transport: MmioTransport,
    device: Arc<Mutex<MockDevice>>,
    line: Arc<CountingLine>,
}

fn fixture() -> Fixture {
    let device = Arc::new(Mutex::new(MockDevice::default()));
    let line = Arc::new(CountingLine::default());
    let transport = MmioTransport::new(memory(0x10_0000), device.clone(), line.clone()).unwrap();
    Fixture {
        transport,
        device,
        line,
    }
}

fn rd(t: &mut MmioTransport, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(offset, &mut b);
    u32::from_le_bytes(b)
}

fn wr(t: &mut MmioTransport, offset: u64, v: u32) {
    t.write(offset, &v.to_le_bytes());
}

fn negotiate(t: &mut MmioTransport, features: u64) {
    wr(t, reg::STATUS, 0);
    wr(t, reg::STATUS, ACKNOWLEDGE);
    wr(t, reg::STATUS, ACKNOWLEDGE | DRIVER);
    wr(t, reg::DRIVER_FEATURES_SEL, 0);
    wr(t, reg::DRIVER_FEATURES, features as u32);
    wr(t, reg::DRIVER_FEATURES_SEL, 1);
    wr(t, reg::DRIVER_FEATURES, (features >> 32) as u32);
    wr(t, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
}

fn setup_queue(t: &mut MmioTransport, index: u32, size: u32, base: u64) {
    wr(t, reg::QUEUE_SEL, index);
    wr(t, reg::QUEUE_NUM, size);
    wr(t, reg::QUEUE_DESC_LOW, base as u32);
    wr(t, reg::QUEUE_DESC_HIGH, (base >> 32) as u32);
    wr(t, reg::QUEUE_DRIVER_LOW, (base + 0x1000) as u32);
    wr(t, reg::QUEUE_DRIVER_HIGH, 0);
    wr(t, reg::QUEUE_DEVICE_LOW, (base + 0x2000) as u32);
    wr(t, reg::QUEUE_DEVICE_HIGH, 0);
    wr(t, reg::QUEUE_READY, 1);
}

const ALL: u32 = ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK;

fn bring_up(t: &mut MmioTransport, features: u64) {
    negotiate(t, features);
    setup_queue(t, 0, 16, 0x10000);
    setup_queue(t, 1, 8, 0x20000);
    wr(t, reg::STATUS, ALL);
}

#[test]
fn identity_registers() {
    let mut f = fixture();
    let t = &mut f.transport;
    assert_eq!(rd(t, reg::MAGIC_VALUE), 0x7472_6976);
    assert_eq!(rd(t, reg::VERSION), 2);
    assert_eq!(rd(t, reg::DEVICE_ID), 42);
    assert_eq!(rd(t, reg::VENDOR_ID), VENDOR_ID);
    assert_eq!(rd(t, reg::SHM_LEN_LOW), u32::MAX);
    assert_eq!(rd(t, reg::SHM_LEN_HIGH), u32::MAX);
    assert_eq!(rd(t, reg::CONFIG_GENERATION), 0);
    wr(t, reg::DEVICE_FEATURES_SEL, 0);
    assert_eq!(rd(t, reg::DEVICE_FEATURES), MOCK_FEATURES as u32);
    wr(t, reg::DEVICE_FEATURES_SEL, 1);
    assert_eq!(rd(t, reg::DEVICE_FEATURES), (MOCK_FEATURES >> 32) as u32);
    wr(t, reg::DEVICE_FEATURES_SEL, 2);
    assert_eq!(rd(t, reg::DEVICE_FEATURES), 0);
    wr(t, reg::QUEUE_SEL, 0);
    assert_eq!(rd(t, reg::QUEUE_NUM_MAX), 16);
    wr(t, reg::QUEUE_SEL, 1);
    assert_eq!(rd(t, reg::QUEUE_NUM_MAX), 8);
    wr(t, reg::QUEUE_SEL, 2);
    assert_eq!(rd(t, reg::QUEUE_NUM_MAX), 0);
    assert_eq!(rd(t, reg::QUEUE_READY), 0);
    assert!(format!("{t:?}").contains("MmioTransport"));
    assert_eq!(t.device_type(), DeviceType::Other(42));
}

#[test]
fn write_only_and_unknown_registers_read_zero_and_ignore_writes() {
    let mut f = fixture();
    let t = &mut f.transport;
    for offset in [
        reg::DEVICE_FEATURES_SEL,
        reg::DRIVER_FEATURES,
        reg::DRIVER_FEATURES_SEL,
        reg::QUEUE_SEL,
        reg::QUEUE_NUM,
        reg::QUEUE_NOTIFY,
        reg::INTERRUPT_ACK,
        reg::QUEUE_DESC_LOW,
        reg::QUEUE_DEVICE_HIGH,
        reg::SHM_SEL,
        reg::QUEUE_RESET,
        0x028,
        0x0f8,
    ] {
        assert_eq!(rd(t, offset), 0, "{offset:#x}");
    }
    let before = t.state();
    for offset in [
        reg::MAGIC_VALUE,
        reg::VERSION,
        reg::DEVICE_ID,
        reg::DEVICE_FEATURES,
        reg::QUEUE_NUM_MAX,
        reg::INTERRUPT_STATUS,
        reg::CONFIG_GENERATION,
        reg::QUEUE_RESET,
        0x0f8,
    ] {
        wr(t, offset, 0xffff_ffff);
    }
    assert_eq!(t.state(), before);
    assert_eq!(rd(t, reg::MAGIC_VALUE), 0x7472_6976);
}

#[test]
fn non_32_bit_register_accesses_are_ignored() {
    let mut f = fixture();
    let t = &mut f.transport;
    for len in [1usize, 2, 3, 8] {
        let mut buf = vec![0xaa; len];
        t.read(reg::MAGIC_VALUE, &mut buf);
        assert!(buf.iter().all(|&b| b == 0), "{len}-byte read");
        t.write(reg::STATUS, &vec![1; len]);
    }
    // Misaligned 32-bit accesses too.
    let mut buf = [0xaa; 4];
    t.read(reg::MAGIC_VALUE + 1, &mut buf);
    assert_eq!(buf, [0; 4]);
    t.write(reg::STATUS + 2, &1u32.to_le_bytes());
    assert_eq!(rd(t, reg::STATUS), 0);
}

#[test]
fn config_space_allows_byte_word_and_dword_accesses() {
    let mut f = fixture();
    let t = &mut f.transport;
    t.write(reg::CONFIG, &[1]);
    t.write(reg::CONFIG + 2, &[2, 3]);
    t.write(reg::CONFIG + 4, &[4, 5, 6, 7]);
    t.write(reg::CONFIG, &[9; 8]); // 8-byte: ignored
    t.write(reg::CONFIG + 1, &[9; 3]); // 3-byte: ignored
    assert_eq!(f.device.lock().unwrap().config, [1, 0, 2, 3, 4, 5, 6, 7]);
    let mut b1 = [0u8; 1];
    t.read(reg::CONFIG + 3, &mut b1);
    assert_eq!(b1, [3]);
    let mut b2 = [0u8; 2];
    t.read(reg::CONFIG + 2, &mut b2);
    assert_eq!(b2, [2, 3]);
    assert_eq!(rd(t, reg::CONFIG + 4), 0x0706_0504);
    let mut b8 = [0xffu8; 8];
    t.read(reg::CONFIG, &mut b8);
    assert_eq!(b8, [0; 8]);
    // Past the device's configuration space.
    assert_eq!(rd(t, reg::CONFIG + 0x100), 0);
    assert_eq!(rd(t, MMIO_WINDOW_SIZE - 4), 0);
}

#[test]
fn full_initialisation_activates_the_device() {
    let mut f = fixture();
    let t = &mut f.transport;
    let features = features::VERSION_1 | features::RING_EVENT_IDX | 1;
    bring_up(t, features);
    assert_eq!(rd(t, reg::STATUS), ALL);
    assert!(t.is_activated());
    assert_eq!(t.driver_features(), features);
    let dev = f.device.lock().unwrap();
    let (queues, acked) = dev.active.as_ref().unwrap();
    assert_eq!(*acked, features);
    assert_eq!(queues.len(), 2);
    assert!(queues[0].ready() && queues[1].ready());
    assert_eq!(queues[0].size(), 16);
    assert_eq!(queues[1].size(), 8);
    assert_eq!(queues[0].desc_table(), 0x10000);
    assert_eq!(queues[0].avail_ring(), 0x11000);
    assert_eq!(queues[0].used_ring(), 0x12000);
    assert!(queues[0].event_idx_enabled());
    drop(dev);
    wr(t, reg::QUEUE_SEL, 1);
    assert_eq!(rd(t, reg::QUEUE_READY), 1);
    // Activation kicks every queue once.
    assert_eq!(t.queue_events()[0].read().unwrap(), 1);
    assert_eq!(t.queue_events()[1].read().unwrap(), 1);
}

#[test]
fn a_queue_the_driver_leaves_disabled_is_passed_idle() {
    let mut f = fixture();
    let t = &mut f.transport;
    negotiate(t, features::VERSION_1);
    setup_queue(t, 0, 4, 0x10000);
    wr(t, reg::STATUS, ALL);
    assert!(t.is_activated());
    let dev = f.device.lock().unwrap();
    let (queues, _) = dev.active.as_ref().unwrap();
    assert!(queues[0].ready());
    assert!(!queues[1].ready());
    assert!(!queues[0].event_idx_enabled());
}

#[test]
fn driver_without_version_1_is_refused() {
    let mut f = fixture();
    let t = &mut f.transport;
    negotiate(t, features::RING_EVENT_IDX);
    assert_eq!(rd(t, reg::STATUS), ACKNOWLEDGE | DRIVER);
    // The driver gives up, as Linux does.
    wr(t, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | FAILED);
    assert_eq!(rd(t, reg::STATUS), ACKNOWLEDGE | DRIVER | FAILED);
    // Only a reset helps now.
    wr(t, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    assert_eq!(rd(t, reg::STATUS), ACKNOWLEDGE | DRIVER | FAILED);
    wr(t, reg::STATUS, 0);
    assert_eq!(rd(t, reg::STATUS), 0);
}

#[test]
fn features_not_offered_are_refused() {
    let mut f = fixture();
    let t = &mut f.transport;
    negotiate(t, features::VERSION_1 | 0b10);
    assert_eq!(rd(t, reg::STATUS), ACKNOWLEDGE | DRIVER);
    // Bits in windows past 64 are refused too.
    wr(t, reg::STATUS, 0);
    wr(t, reg::STATUS, ACKNOWLEDGE);
    wr(t, reg::STATUS, ACKNOWLEDGE | DRIVER);
    wr(t, reg::DRIVER_FEATURES_SEL, 1);
    wr(t, reg::DRIVER_FEATURES, 1);
    wr(t, reg::DRIVER_FEATURES_SEL, 2);
    wr(t, reg::DRIVER_FEATURES, 1);
    wr(t, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    assert_eq!(rd(t, reg::STATUS), ACKNOWLEDGE | DRIVER);
    // A zero in a high window is fine.
    negotiate(t, features::VERSION_1);
    assert_eq!(rd(t, reg::STATUS), ACKNOWLEDGE | DRIVER | FEATURES_OK);
}

#[test]
fn driver_features_are_only_written_between_driver_and_features_ok() {
    let mut f = fixture();
    let t = &mut f.transport;
    wr(t, reg::DRIVER_FEATURES, 1);
    wr(t, reg::STATUS, ACKNOWLEDGE);
    wr(t, reg::DRIVER_FEATURES, 1);
    assert_eq!(t.driver_features(), 0);
    negotiate(t, features::VERSION_1);
    wr(t, reg::DRIVER_FEATURES_SEL, 0);
    wr(t, reg::DRIVER_FEATURES, 0b100);
    assert_eq!(t.driver_features(), features::VERSION_1);
}

#[test]
fn out_of_order_status_writes_are_refused() {
    let mut f = fixture();
    let t = &mut f.transport;
    for v in [DRIVER, FEATURES_OK, DRIVER_OK, ALL, 0x10, 0x20, 0x100] {
        wr(t, reg::STATUS, v);
        assert_eq!(rd(t, reg::STATUS), 0, "{v:#x}");
    }
    wr(t, reg::STATUS, ACKNOWLEDGE);
    for v in [
        DRIVER,
        ACKNOWLEDGE | FEATURES_OK,
        ACKNOWLEDGE | DRIVER_OK,
        ACKNOWLEDGE | DRIVER | FEATURES_OK,
    ] {
        wr(t, reg::STATUS, v);
        assert_eq!(rd(t, reg::STATUS), ACKNOWLEDGE, "{v:#x}");
    }
    wr(t, reg::STATUS, ACKNOWLEDGE | DRIVER);
    wr(t, reg::STATUS, ACKNOWLEDGE | DRIVER | DRIVER_OK);
    assert_eq!(rd(t, reg::STATUS), ACKNOWLEDGE | DRIVER);
    wr(t, reg::STATUS, ACKNOWLEDGE);
    assert_eq!(rd(t, reg::STATUS), ACKNOWLEDGE | DRIVER, "clearing a bit");
    assert!(!f.device.lock().unwrap().is_activated());
}

#[test]
fn queue_registers_outside_queue_setup_are_ignored() {
    let mut f = fixture();
    let t = &mut f.transport;
    // Before FEATURES_OK.
    wr(t, reg::STATUS, ACKNOWLEDGE);
    wr(t, reg::STATUS, ACKNOWLEDGE | DRIVER);
    setup_queue(t, 0, 4, 0x10000);
    wr(t, reg::QUEUE_SEL, 0);
    assert_eq!(rd(t, reg::QUEUE_READY), 0);
    assert_eq!(t.state().queues[0].config, QueueConfig::new(16));
    // A queue that does not exist.
    negotiate(t, features::VERSION_1);
    setup_queue(t, 7, 4, 0x10000);
    assert_eq!(rd(t, reg::QUEUE_READY), 0);
    // An enabled queue cannot be changed, but can be disabled.
    setup_queue(t, 0, 4, 0x10000);
    wr(t, reg::QUEUE_NUM, 8);
    wr(t, reg::QUEUE_DESC_LOW, 0x30000);
    assert_eq!(t.state().queues[0].config.size, 4);
    assert_eq!(t.state().queues[0].config.desc_table, 0x10000);
    wr(t, reg::QUEUE_READY, 2);
    assert_eq!(rd(t, reg::QUEUE_READY), 1);
    wr(t, reg::QUEUE_READY, 0);
    assert_eq!(rd(t, reg::QUEUE_READY), 0);
    wr(t, reg::QUEUE_NUM, 8);
    assert_eq!(t.state().queues[0].config.size, 8);
    wr(t, reg::QUEUE_NUM, 0x1_0000);
    assert_eq!(t.state().queues[0].config.size, u16::MAX);
    // After DRIVER_OK.
    setup_queue(t, 0, 4, 0x10000);
    wr(t, reg::STATUS, ALL);
    assert!(t.is_activated());
    wr(t, reg::QUEUE_SEL, 0);
    wr(t, reg::QUEUE_READY, 0);
    wr(t, reg::QUEUE_NUM, 2);
    assert_eq!(rd(t, reg::QUEUE_READY), 1);
    assert_eq!(t.state().queues[0].config.size, 4);
}

#[test]
fn bad_queues_do_not_activate_the_device() {
    type Corrupt = fn(&mut MmioTransport);
    let cases: [(&str, Corrupt); 6] = [
        ("size not a power of two", |t| wr(t, reg::QUEUE_NUM, 5)),
        ("size above the maximum", |t| wr(t, reg::QUEUE_NUM, 32)),
        ("size zero", |t| wr(t, reg::QUEUE_NUM, 0)),
        ("misaligned descriptors", |t| {
            wr(t, reg::QUEUE_DESC_LOW, 0x10008)
        }),
        ("used ring outside memory", |t| {
            wr(t, reg::QUEUE_DEVICE_HIGH, 1)
        }),
        ("avail ring past the end", |t| {
            wr(t, reg::QUEUE_DRIVER_LOW, 0xffffe)
        }),
    ];
    for (what, corrupt) in cases {
        let mut f = fixture();
        let t = &mut f.transport;
        negotiate(t, features::VERSION_1);
        wr(t, reg::QUEUE_SEL, 0);
        wr(t, reg::QUEUE_NUM, 16);
        wr(t, reg::QUEUE_DESC_LOW, 0x10000);
        wr(t, reg::QUEUE_DRIVER_LOW, 0x11000);
        wr(t, reg::QUEUE_DEVICE_LOW, 0x12000);
        corrupt(t);
        wr(t, reg::QUEUE_READY, 1);
        wr(t, reg::STATUS, ALL);
        assert!(!t.is_activated(), "{what}");
        assert!(!f.device.lock().unwrap().is_activated(), "{what}");
        assert_eq!(rd(t, reg::STATUS), ALL | DEVICE_NEEDS_RESET, "{what}");
        assert_eq!(rd(t, reg::INTERRUPT_STATUS), INT_CONFIG, "{what}");
        assert_eq!(f.line.count(), 1, "{what}");
        // The driver resets and the device is usable again.
        wr(t, reg::STATUS, 0);
        assert_eq!(rd(t, reg::STATUS), 0);
        bring_up(t, features::VERSION_1);
        assert!(t.is_activated(), "{what}");
    }
}

#[test]
fn a_device_refusing_activation_needs_reset() {
    let mut f = fixture();
    f.device.lock().unwrap().refuse = true;
    let t = &mut f.transport;
    bring_up(t, features::VERSION_1);
    assert!(!t.is_activated());
    assert_eq!(rd(t, reg::STATUS), ALL | DEVICE_NEEDS_RESET);
    // Writing back what was read (as Linux's add_status does) is fine.
    wr(t, reg::STATUS, ALL | DEVICE_NEEDS_RESET | FAILED);
    assert_eq!(rd(t, reg::STATUS), ALL | DEVICE_NEEDS_RESET | FAILED);
}

#[test]
fn interrupt_status_and_acknowledge() {
    let mut f = fixture();
    let t = &mut f.transport;
    bring_up(t, features::VERSION_1);
    let irq = t.interrupt().clone();
    irq.signal_used_queue().unwrap();
    assert_eq!(rd(t, reg::INTERRUPT_STATUS), INT_VRING);
    irq.signal_config_change().unwrap();
    assert_eq!(rd(t, reg::INTERRUPT_STATUS), INT_VRING | INT_CONFIG);
    assert_eq!(rd(t, reg::CONFIG_GENERATION), 1);
    wr(t, reg::INTERRUPT_ACK, INT_VRING);
    assert_eq!(rd(t, reg::INTERRUPT_STATUS), INT_CONFIG);
    wr(t, reg::INTERRUPT_ACK, 0xffff_ffff);
    assert_eq!(rd(t, reg::INTERRUPT_STATUS), 0);
    assert_eq!(f.line.count(), 2);
}

#[test]
fn queue_notify_signals_the_queue_eventfd() {
    let mut f = fixture();
    let t = &mut f.transport;
    bring_up(t, features::VERSION_1);
    for e in t.queue_events() {
        let _ = e.read();
    }
    wr(t, reg::QUEUE_NOTIFY, 1);
    wr(t, reg::QUEUE_NOTIFY, 1);
    wr(t, reg::QUEUE_NOTIFY, 9); // no such queue
    assert_eq!(t.queue_events()[1].read().unwrap(), 2);
    assert!(t.queue_events()[0].read().is_err());
    // The subscriber processes a notified queue.
    let mut sub = t.subscriber().unwrap();
    wr(t, reg::QUEUE_NOTIFY, 0);
    sub.handle_queue_event(0);
    sub.handle_queue_event(5);
    assert_eq!(f.device.lock().unwrap().processed, vec![0]);
}

#[test]
fn reset_returns_everything_to_the_initial_state() {
    let mut f = fixture();
    let t = &mut f.transport;
    let initial = t.state();
    bring_up(t, features::VERSION_1 | features::RING_EVENT_IDX);
    wr(t, reg::DEVICE_FEATURES_SEL, 1);
    wr(t, reg::SHM_SEL, 3);
    t.write(reg::CONFIG, &[7]);
    t.interrupt().signal_config_change().unwrap();
    wr(t, reg::QUEUE_NOTIFY, 0);
    assert_ne!(t.state(), initial);
    let resets = f.device.lock().unwrap().resets;
    wr(t, reg::STATUS, 0);
    assert_eq!(t.state(), initial);
    assert!(!t.is_activated());
    let dev = f.device.lock().unwrap();
    assert!(!dev.is_activated());
    assert_eq!(dev.resets, resets + 1);
    assert_eq!(dev.config, [0; 8]);
    drop(dev);
    assert!(t.queue_events()[0].read().is_err(), "notification dropped");
    assert_eq!(rd(t, reg::INTERRUPT_STATUS), 0);
    assert_eq!(rd(t, reg::CONFIG_GENERATION), 0);
}

#[test]
fn state_round_trips_through_serde_and_reactivates() {
    let mut f = fixture();
    let t = &mut f.transport;
    bring_up(t, features::VERSION_1 | features::RING_EVENT_IDX);
    {
        let mut dev = f.device.lock().unwrap();
        let (queues, _) = dev.active.as_mut().unwrap();
        queues[0].set_next_avail(3);
        queues[0].set_next_used(2);
    }
    t.interrupt().signal_used_queue().unwrap();
    let state = t.state();
    assert_eq!(state.queues[0].next_avail, 3);
    assert_eq!(state.queues[0].next_used, 2);
    assert!(state.queues[0].event_idx);
    let json = serde_json::to_string(&state).unwrap();
    let state: MmioTransportState = serde_json::from_str(&json).unwrap();

    let device = Arc::new(Mutex::new(MockDevice::default()));
    let line = Arc::new(CountingLine::default());
    let restored = MmioTransport::restore(args(device.clone(), line.clone()), &state).unwrap();
    // The used-buffer interrupt pending at the snapshot is raised again
    // (it may never have reached the saved interrupt controller).
    assert_eq!(line.count(), 1);
    assert_eq!(restored.save().unwrap(), state);
    assert!(restored.is_activated());
    let dev = device.lock().unwrap();
    let (queues, acked) = dev.active.as_ref().unwrap();
    assert_eq!(queues[0].next_avail(), 3);
    assert_eq!(*acked, features::VERSION_1 | features::RING_EVENT_IDX);
    assert_eq!(restored.interrupt().status(), INT_VRING);
    assert_eq!(restored.queue_events()[0].read().unwrap(), 1);
}

fn args(device: Arc<Mutex<MockDevice>>, line: Arc<CountingLine>) -> MmioTransportRestoreArgs {
    MmioTransportRestoreArgs {
        memory: memory(0x10_0000),
        device,
        line,
    }
}

fn restore_fresh(state: &MmioTransportState) -> Result<MmioTransport, TransportError> {
    let device = Arc::new(Mutex::new(MockDevice::default()));
    MmioTransport::restore(args(device, Arc::new(CountingLine::default())), state)
}

#[test]
fn a_transport_saved_mid_negotiation_continues_it() {
    let mut f = fixture();
    let t = &mut f.transport;
    negotiate(t, features::VERSION_1 | 0b1);
    setup_queue(t, 0, 16, 0x10000);
    wr(t, reg::QUEUE_SEL, 1);
    wr(t, reg::QUEUE_NUM, 8);
    let state = t.save().unwrap();
    let json = serde_json::to_string(&state).unwrap();
    let device = Arc::new(Mutex::new(MockDevice::default()));
    let mut r = MmioTransport::restore(
        args(device.clone(), Arc::new(CountingLine::default())),
        &serde_json::from_str(&json).unwrap(),
    )
    .unwrap();
    assert_eq!(r.save().unwrap(), state);
    assert!(!r.is_activated());
    assert_eq!(r.interrupt().status(), 0);
    // The driver finishes queue 1 and sets DRIVER_OK on the restored
    // transport, exactly as it would have on the original.
    for t in [&mut f.transport, &mut r] {
        assert_eq!(rd(t, reg::QUEUE_SEL), 0, "write-only register");
        assert_eq!(rd(t, reg::STATUS), ACKNOWLEDGE | DRIVER | FEATURES_OK);
        wr(t, reg::QUEUE_SEL, 1);
        assert_eq!(rd(t, reg::QUEUE_NUM_MAX), 8);
        setup_queue(t, 1, 8, 0x20000);
        wr(t, reg::STATUS, ALL);
        assert!(t.is_activated());
        assert_eq!(rd(t, reg::STATUS), ALL);
    }
    let dev = device.lock().unwrap();
    let (queues, acked) = dev.active.as_ref().unwrap();
    assert_eq!(queues[0].size(), 16);
    assert_eq!(queues[1].desc_table(), 0x20000);
    assert_eq!(*acked, features::VERSION_1 | 0b1);
}

#[test]
fn mismatched_or_invalid_state_is_refused() {
    let mut f = fixture();
    let mut state = f.transport.state();
    state.device_id = 2;
    assert!(matches!(
        restore_fresh(&state),
        Err(TransportError::StateMismatch { .. })
    ));
    let mut state = f.transport.state();
    state.queues.pop();
    assert!(matches!(
        restore_fresh(&state),
        Err(TransportError::StateMismatch { .. })
    ));
    for bad in [0x100, DRIVER, ACKNOWLEDGE | FEATURES_OK, ALL & !FEATURES_OK] {
        let mut state = f.transport.state();
        state.status = bad;
        assert!(
            matches!(restore_fresh(&state), Err(TransportError::InvalidStatus { status }) if status == bad),
            "status {bad:#x}"
        );
    }
    let mut state = f.transport.state();
    state.activated = true;
    state.status = ACKNOWLEDGE | DRIVER | FEATURES_OK | FAILED;
    state.driver_features = features::VERSION_1;
    assert!(matches!(
        restore_fresh(&state),
        Err(TransportError::ActiveWithoutDriverOk { .. })
    ));
    // FEATURES_OK with features the transport would have refused.
    for (driver, high) in [
        (0b1, false),
        (features::VERSION_1 | 0b10, false),
        (features::VERSION_1, true),
    ] {
        let mut state = f.transport.state();
        state.status = ACKNOWLEDGE | DRIVER | FEATURES_OK;
        state.driver_features = driver;
        state.driver_features_high = high;
        assert!(
            matches!(
                restore_fresh(&state),
                Err(TransportError::InvalidFeatures { .. })
            ),
            "{driver:#x} {high}"
        );
    }
    let mut state = f.transport.state();
    state.interrupt.status = 0x10;
    assert!(matches!(
        restore_fresh(&state),
        Err(TransportError::InvalidInterrupt(_))
    ));

    bring_up(&mut f.transport, features::VERSION_1);
    let active = f.transport.state();
    let mut state = active.clone();
    state.queues[0].config.desc_table = 0x3;
    let err = restore_fresh(&state).unwrap_err();
    assert!(matches!(err, TransportError::InvalidQueue { index: 0, .. }));
    assert!(err.to_string().contains("snapshot queue 0"), "{err}");
    let mut state = active.clone();
    state.queues[1].event_idx = true;
    assert!(matches!(
        restore_fresh(&state),
        Err(TransportError::EventIdxMismatch {
            index: 1,
            queue: true,
            negotiated: false
        })
    ));
    // A device that is already active refuses to be reactivated.
    let dev = Arc::new(Mutex::new(MockDevice::default()));
    dev.lock().unwrap().active = Some((Vec::new(), 0));
    assert!(matches!(
        MmioTransport::restore(args(dev, Arc::new(CountingLine::default())), &active),
        Err(TransportError::Activate(ActivateError::AlreadyActive(_)))
    ));
    // FAILED after activation is a reachable status.
    let mut state = active;
    state.status |= FAILED;
    assert!(restore_fresh(&state).unwrap().is_activated());
}

#[test]
fn devices_with_invalid_queue_sizes_are_refused() {
    #[derive(Debug)]
    struct Bad;
    impl kindling_devices::DeviceEvents for Bad {}
    impl VirtioDevice for Bad {
        fn device_type(&self) -> DeviceType {
            DeviceType::Rng
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[3]
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
            false
        }
        fn reset(&mut self) {}
        fn process_queue(&mut self, _: usize) -> Result<QueueProgress, QueueError> {
            Ok(QueueProgress::Done)
        }
        fn queues(&self) -> &[Queue] {
            &[]
        }
    }
    let err = MmioTransport::new(
        memory(0x1000),
        Arc::new(Mutex::new(Bad)),
        Arc::new(CountingLine::default()),
    )
    .unwrap_err();
    assert!(err.to_string().contains("maximum size 3"), "{err}");
}

#[test]
fn cmdline_entry() {
    let mut cmdline = linux_loader::cmdline::Cmdline::new(64).unwrap();
    add_mmio_cmdline_device(&mut cmdline, 0xc000_1000, 12).unwrap();
    assert_eq!(
        cmdline.as_cstring().unwrap().to_str().unwrap(),
        "virtio_mmio.device=4K@0xc0001000:12"
    );
}
