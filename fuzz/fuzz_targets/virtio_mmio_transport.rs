//! A sequence of register reads and writes, guest memory writes, queue
//! notifications and snapshot/restores against a virtio-mmio transport in
//! front of an entropy or a block device. Invariants: every state the
//! transport reaches is accepted by its restore and restores to an equal
//! state, and the magic value and version registers never change.

#![no_main]

use std::sync::{Arc, Mutex};

use kindling_devices::BusDevice;
use kindling_fuzz::{memory_from, Input, MemBackend, NoInterrupt};
use kindling_memory::Persist;
use kindling_virtio::block::{Block, BlockConfig};
use kindling_virtio::rng::Entropy;
use kindling_virtio::{MmioTransport, MmioTransportRestoreArgs, VirtioDevice};
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress};

fn new_device(block: bool) -> Arc<Mutex<dyn VirtioDevice>> {
    if block {
        let config = BlockConfig {
            queue_size: 16,
            ..BlockConfig::new("fuzz.img")
        };
        Arc::new(Mutex::new(
            Block::with_backend(Box::new(MemBackend::new(64)), &config).unwrap(),
        ))
    } else {
        Arc::new(Mutex::new(Entropy::with_queue_size(16).unwrap()))
    }
}

const WIDTHS: [usize; 4] = [4, 1, 2, 8];

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let block = input.u8() & 1 == 1;
    let mem = memory_from(input.bytes(256));
    let mut transport =
        MmioTransport::new(mem.clone(), new_device(block), Arc::new(NoInterrupt)).unwrap();
    let mut subscriber = transport.subscriber().unwrap();
    let mut steps = 0;
    while !input.is_empty() && steps < 512 {
        steps += 1;
        match input.u8() % 7 {
            0 => {
                let offset = u64::from(input.u16() % 0x1000);
                let mut buf = vec![0u8; WIDTHS[usize::from(input.u8() % 4)]];
                if offset + buf.len() as u64 <= 0x1000 {
                    transport.read(offset, &mut buf);
                }
            }
            1 | 2 => {
                // Registers are where the state machine is: mostly aligned
                // 32-bit writes below the configuration space.
                let offset = u64::from(input.u16() % 0x1000);
                let offset = if offset < 0x100 { offset & !3 } else { offset };
                let value = input.u32();
                let width = WIDTHS[usize::from(input.u8() % 4)];
                let bytes = u64::from(value).to_le_bytes();
                if offset + width as u64 <= 0x1000 {
                    transport.write(offset, &bytes[..width]);
                }
            }
            3 => {
                let queue = usize::from(input.u8() % 2);
                transport.write(0x50, &(queue as u32).to_le_bytes());
                subscriber.handle_queue_event(queue);
            }
            4 => {
                let addr = u64::from(input.u16());
                let bytes =
                    input.bytes(usize::from(input.0.first().copied().unwrap_or(0)) % 64 + 1);
                let _ = mem.write_slice(bytes, GuestAddress(addr));
            }
            5 => {
                // The whole initialisation with queue 0 where the input
                // says, then DRIVER_OK.
                let features = input.u64();
                let (desc, avail, used) = (input.u16(), input.u16(), input.u16());
                let size = 1u32 << (input.u8() % 6);
                let w = |t: &mut MmioTransport, off: u64, v: u32| t.write(off, &v.to_le_bytes());
                w(&mut transport, 0x70, 0);
                w(&mut transport, 0x70, 1);
                w(&mut transport, 0x70, 3);
                w(&mut transport, 0x24, 0);
                w(&mut transport, 0x20, features as u32);
                w(&mut transport, 0x24, 1);
                w(&mut transport, 0x20, (features >> 32) as u32 | 1);
                w(&mut transport, 0x70, 11);
                w(&mut transport, 0x30, 0);
                w(&mut transport, 0x38, size);
                w(&mut transport, 0x80, u32::from(desc));
                w(&mut transport, 0x90, u32::from(avail));
                w(&mut transport, 0xa0, u32::from(used));
                w(&mut transport, 0x44, 1);
                w(&mut transport, 0x70, 15);
            }
            _ => {
                let state = transport.save().unwrap();
                let args = MmioTransportRestoreArgs {
                    memory: mem.clone(),
                    device: new_device(block),
                    line: Arc::new(NoInterrupt),
                };
                // Every state the transport reaches restores, to an equal
                // state.
                let restored = MmioTransport::restore(args, &state)
                    .unwrap_or_else(|e| panic!("a state the transport reached is refused: {e}"));
                assert_eq!(restored.state(), state);
                transport = restored;
                subscriber = transport.subscriber().unwrap();
            }
        }
        // Whatever the guest did, the transport still identifies itself.
        let mut magic = [0u8; 4];
        transport.read(0, &mut magic);
        assert_eq!(&magic, b"virt");
        let mut version = [0u8; 4];
        transport.read(4, &mut version);
        assert_eq!(u32::from_le_bytes(version), 2);
    }
});
