//! The persist contract for the entropy device: its state is its queue
//! size; its queue is saved by the transport.

use kindling_memory::Persist;

use super::{Entropy, EntropyError, EntropyState};

impl Persist<'_> for Entropy {
    type State = EntropyState;
    type ConstructorArgs = ();
    type Error = EntropyError;

    fn save(&self) -> Result<EntropyState, EntropyError> {
        Ok(EntropyState {
            queue_size: self.queue_sizes[0],
        })
    }

    /// Recreates an (inactive) device; the transport's restore reactivates
    /// it with its queue.
    fn restore(_: (), state: &EntropyState) -> Result<Self, EntropyError> {
        Self::with_queue_size(state.queue_size)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use kindling_devices::BusDevice;
    use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};

    use super::*;
    use crate::interrupt::tests::CountingLine;
    use crate::queue::tests::{memory, Rings};
    use crate::transport::registers as reg;
    use crate::transport::status::{ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK};
    use crate::{features, MmioTransport, MmioTransportRestoreArgs, VirtioDevice};

    fn wr(t: &mut MmioTransport, offset: u64, v: u32) {
        t.write(offset, &v.to_le_bytes());
    }

    fn through_json<S: serde::Serialize + serde::de::DeserializeOwned>(s: &S) -> S {
        serde_json::from_str(&serde_json::to_string(s).unwrap()).unwrap()
    }

    /// An entropy device behind an activated transport, saved after it
    /// served one request, restored into fresh objects, serves the next
    /// request from the same queue.
    #[test]
    fn entropy_behind_a_transport_continues_after_restore() {
        let mem = memory(0x10_0000);
        let vq = Rings::new(&mem, 16);
        let rng = Arc::new(Mutex::new(Entropy::with_queue_size(16).unwrap()));
        let mut t = MmioTransport::new(mem.clone(), rng.clone(), Arc::new(CountingLine::default()))
            .unwrap();
        wr(&mut t, reg::STATUS, ACKNOWLEDGE);
        wr(&mut t, reg::STATUS, ACKNOWLEDGE | DRIVER);
        wr(&mut t, reg::DRIVER_FEATURES_SEL, 1);
        wr(
            &mut t,
            reg::DRIVER_FEATURES,
            (features::VERSION_1 >> 32) as u32,
        );
        wr(&mut t, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        wr(&mut t, reg::QUEUE_SEL, 0);
        wr(&mut t, reg::QUEUE_NUM, 16);
        for (low, addr) in [
            (reg::QUEUE_DESC_LOW, vq.config.desc_table),
            (reg::QUEUE_DRIVER_LOW, vq.config.avail_ring),
            (reg::QUEUE_DEVICE_LOW, vq.config.used_ring),
        ] {
            wr(&mut t, low, addr as u32);
        }
        wr(&mut t, reg::QUEUE_READY, 1);
        wr(
            &mut t,
            reg::STATUS,
            ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
        );
        assert!(t.is_activated());
        let desc =
            |addr| RawDescriptor::from(Descriptor::new(addr, 32, VRING_DESC_F_WRITE as u16, 0));
        vq.add_chain(0, &[desc(0x8000)]);
        rng.lock().unwrap().process_queue(0).unwrap();
        assert_eq!(vq.used.idx().load(), 1);

        // Snapshot: the device, then the transport (with the live queue).
        let device_state = through_json(&rng.lock().unwrap().save().unwrap());
        let transport_state = through_json(&t.save().unwrap());
        assert_eq!(transport_state.queues[0].next_avail, 1);
        drop(t);

        let line = Arc::new(CountingLine::default());
        let new_rng = Arc::new(Mutex::new(Entropy::restore((), &device_state).unwrap()));
        let restored = MmioTransport::restore(
            MmioTransportRestoreArgs {
                memory: mem.clone(),
                device: new_rng.clone(),
                line: line.clone(),
            },
            &transport_state,
        )
        .unwrap();
        assert_eq!(restored.save().unwrap(), transport_state);
        assert!(new_rng.lock().unwrap().is_activated());
        // The first request's interrupt was still pending (not acknowledged)
        // at the snapshot: raised again at restore.
        assert_eq!(line.count(), 1);
        vq.add_chain(1, &[desc(0x9000)]);
        new_rng.lock().unwrap().process_queue(0).unwrap();
        assert_eq!(vq.used.idx().load(), 2);
        assert_eq!(vq.used_entry(1), (1, 32));
        assert_eq!(
            line.count(),
            2,
            "the restored device interrupts its new line"
        );
    }

    #[test]
    fn bad_queue_sizes_are_refused() {
        for queue_size in [0, 3, 40000] {
            assert_eq!(
                Entropy::restore((), &EntropyState { queue_size }).unwrap_err(),
                EntropyError::InvalidQueueSize(queue_size)
            );
        }
    }
}
