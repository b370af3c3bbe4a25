//! The coalesced MMIO/PIO ring walk (`CoalescedRing::replay`, what
//! `CoalescedRing::drain` runs over the page KVM shares) over a ring the
//! input fills: any capacity up to a page's worth, any entries (lengths
//! past the 8 data bytes, PIO and MMIO), and consumer/producer indices
//! taken from the input, in range or hostile. Invariants:
//!
//! - with both indices inside the ring, every entry from `first` up to
//!   `last` is replayed exactly once, in order, wrapping at the end, to the
//!   PIO or MMIO handler its entry names, with at most 8 data bytes; then
//!   `first == last`, and a second walk replays nothing;
//! - with an index outside the ring, nothing is replayed and the indices
//!   stay as they are;
//! - no entry outside the ring is ever read, and the walk always ends.

#![no_main]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use kindling_fuzz::Input;
use kindling_vcpu::kvm_bindings::kvm_coalesced_mmio;
use kindling_vcpu::{CoalescedRing, VcpuExitHandler};
use libfuzzer_sys::fuzz_target;

/// A 4 KiB ring page holds (4096 - 8) / 24 entries.
const PAGE_CAPACITY: u32 = 170;

#[derive(Default)]
struct Recorder(Mutex<Vec<(bool, u64, Vec<u8>)>>);

impl VcpuExitHandler for Recorder {
    fn pio_read(&self, _port: u16, _data: &mut [u8]) {
        panic!("a ring replays writes only");
    }
    fn pio_write(&self, port: u16, data: &[u8]) {
        self.0
            .lock()
            .unwrap()
            .push((true, u64::from(port), data.to_vec()));
    }
    fn mmio_read(&self, _addr: u64, _data: &mut [u8]) {
        panic!("a ring replays writes only");
    }
    fn mmio_write(&self, addr: u64, data: &[u8]) {
        self.0.lock().unwrap().push((false, addr, data.to_vec()));
    }
}

fn expected(e: &kvm_coalesced_mmio) -> (bool, u64, Vec<u8>) {
    // SAFETY: both union members are plain u32s.
    let pio = unsafe { e.__bindgen_anon_1.pio } != 0;
    let len = (e.len as usize).min(8);
    let addr = if pio {
        u64::from(e.phys_addr as u16)
    } else {
        e.phys_addr
    };
    (pio, addr, e.data[..len].to_vec())
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let capacity = u32::from(input.u8()) % (PAGE_CAPACITY + 1);
    let flags = input.u8();
    let index = |input: &mut Input, hostile: bool| {
        let raw = input.u32();
        if hostile || capacity == 0 {
            raw
        } else {
            raw % capacity
        }
    };
    let head = index(&mut input, flags & 1 != 0);
    let tail = index(&mut input, flags & 2 != 0);
    let entries: Vec<kvm_coalesced_mmio> = (0..capacity)
        .map(|_| {
            let mut e = kvm_coalesced_mmio {
                phys_addr: input.u64(),
                len: u32::from(input.u8() % 12),
                ..Default::default()
            };
            e.__bindgen_anon_1.pio = u32::from(input.u8() & 1);
            e.data.copy_from_slice(&input.u64().to_le_bytes());
            e
        })
        .collect();

    let (first, last) = (AtomicU32::new(head), AtomicU32::new(tail));
    let rec = Recorder::default();
    let mut reads = 0u64;
    let read = |i: u32| {
        reads += 1;
        assert!(reads <= u64::from(capacity), "the walk goes round the ring");
        entries[i as usize]
    };
    let n = CoalescedRing::replay(&first, &last, capacity, read, &rec);
    let replayed = rec.0.into_inner().unwrap();
    assert_eq!(n, replayed.len());

    if head < capacity && tail < capacity {
        let mut want = Vec::new();
        let mut i = head;
        while i != tail {
            want.push(expected(&entries[i as usize]));
            i = (i + 1) % capacity;
        }
        assert_eq!(replayed, want);
        assert_eq!(first.load(Ordering::Relaxed), tail);
        let again = Recorder::default();
        let read = |i: u32| entries[i as usize];
        assert_eq!(
            CoalescedRing::replay(&first, &last, capacity, read, &again),
            0
        );
    } else {
        assert_eq!(n, 0);
        assert_eq!(first.load(Ordering::Relaxed), head);
    }
    assert_eq!(last.load(Ordering::Relaxed), tail);
});
