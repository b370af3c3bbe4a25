//! The 16550 UART (`SerialDevice`) driven by any sequence of register reads
//! and writes (any offset, any width), host input and snapshot/restores,
//! checked against a model after every step:
//!
//! - the receive FIFO holds at most 64 bytes, reads of the data register
//!   return its bytes in order, and the line status "data ready" bit is set
//!   exactly when it is not empty;
//! - every state the device reaches is one its own restore accepts (line
//!   status, interrupt enable and identification bits a 16550 can have),
//!   and save → restore gives back an equal state;
//! - the output is exactly the bytes written to the transmit register
//!   while neither the divisor latch nor loopback was selected; in
//!   loopback they arrive in the receive FIFO instead;
//! - the transmitter-interrupt watch always reports the guest's IER bit 1,
//!   and accesses wider than a byte or past the 8 registers change nothing.

#![no_main]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use kindling_devices::legacy::{
    SerialDevice, SerialDeviceState, SerialRestoreArgs, SERIAL_FIFO_SIZE,
};
use kindling_devices::{BusDevice, EventFdLine};
use kindling_fuzz::{Input, SharedBuf};
use kindling_memory::Persist;
use libfuzzer_sys::fuzz_target;

const DATA: u64 = 0;
const IER: u64 = 1;
const LCR: u64 = 3;
const MCR: u64 = 4;
const LSR: u64 = 5;
const DLAB: u8 = 0x80;
const LOOP: u8 = 0x10;

/// What the guest and the host did, as far as the checks need it.
#[derive(Default)]
struct Model {
    fifo: VecDeque<u8>,
    output: Vec<u8>,
    lcr: u8,
    mcr: u8,
    ier: u8,
}

fn watched(serial: &mut SerialDevice) -> Arc<Mutex<Option<bool>>> {
    let seen = Arc::new(Mutex::new(None));
    let record = seen.clone();
    serial.set_tx_interrupt_watch(Box::new(move |on| *record.lock().unwrap() = Some(on)));
    seen
}

fn check(serial: &SerialDevice, model: &Model, out: &SharedBuf, watch: &Mutex<Option<bool>>) {
    let state: SerialDeviceState = serial.state();
    assert!(state.in_buffer.len() <= SERIAL_FIFO_SIZE);
    assert_eq!(state.in_buffer, Vec::from(model.fifo.clone()));
    assert_eq!(state.line_status & 1 != 0, !state.in_buffer.is_empty());
    assert_eq!(serial.input_room(), SERIAL_FIFO_SIZE - state.in_buffer.len());
    assert_eq!(state.line_control, model.lcr);
    assert_eq!(state.modem_control, model.mcr);
    assert_eq!(state.interrupt_enable, model.ier);
    assert_eq!(out.contents(), model.output);
    assert_eq!(serial.lost_output_bytes(), 0);
    assert_eq!(*watch.lock().unwrap(), Some(model.ier & 0x02 != 0));
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let out = SharedBuf::default();
    let mut serial = SerialDevice::new(EventFdLine::new(4).unwrap(), Box::new(out.clone()));
    let mut watch = watched(&mut serial);
    // vm-superio's reset state: 8N1, OUT2.
    let reset = serial.state();
    let mut model = Model {
        lcr: reset.line_control,
        mcr: reset.modem_control,
        ier: reset.interrupt_enable,
        ..Model::default()
    };
    let mut steps = 0;
    while !input.is_empty() && steps < 1024 {
        steps += 1;
        let op = input.u8();
        let offset = u64::from(op >> 4) % 8;
        match (op & 0x0f) % 6 {
            0 | 1 => {
                let value = input.u8();
                serial.write(offset, &[value]);
                let dlab = model.lcr & DLAB != 0;
                match offset {
                    DATA if !dlab => {
                        if model.mcr & LOOP == 0 {
                            model.output.push(value);
                        } else if model.fifo.len() < SERIAL_FIFO_SIZE {
                            model.fifo.push_back(value);
                        }
                    }
                    IER if !dlab => model.ier = value & 0x0f,
                    LCR => model.lcr = value,
                    MCR => model.mcr = value,
                    _ => {}
                }
            }
            2 => {
                let mut b = [0u8];
                serial.read(offset, &mut b);
                if offset == DATA && model.lcr & DLAB == 0 {
                    assert_eq!(b[0], model.fifo.pop_front().unwrap_or(0));
                }
                if offset == LSR {
                    assert_eq!(b[0] & 1 != 0, !model.fifo.is_empty());
                    // The transmitter is always ready.
                    assert_eq!(b[0] & 0x60, 0x60);
                }
            }
            3 => {
                let n = usize::from(input.u8() % 80);
                let bytes = input.bytes(n).to_vec();
                let taken = serial.enqueue_input(&bytes);
                let room = SERIAL_FIFO_SIZE - model.fifo.len();
                if model.mcr & LOOP != 0 || bytes.is_empty() {
                    assert_eq!(taken.unwrap(), 0);
                } else if room == 0 {
                    assert!(taken.is_err());
                } else {
                    let taken = taken.unwrap();
                    assert_eq!(taken, room.min(bytes.len()));
                    model.fifo.extend(&bytes[..taken]);
                }
            }
            4 => {
                // Accesses the device ignores: wider than a byte, or past
                // its registers.
                let before = serial.state();
                let width = [0usize, 2, 4, 8][usize::from(input.u8() % 4)];
                let far = u64::from(input.u16()) + 8;
                let mut buf = vec![0u8; width];
                serial.read(offset, &mut buf);
                assert!(buf.iter().all(|&b| b == 0xff));
                serial.write(offset, &buf);
                let mut one = [0u8];
                serial.read(far, &mut one);
                assert_eq!(one, [0xff]);
                serial.write(far, &[input.u8()]);
                assert_eq!(serial.state(), before);
            }
            _ => {
                let state = serial.save().unwrap();
                let args = SerialRestoreArgs {
                    irq: EventFdLine::new(4).unwrap(),
                    out: Box::new(out.clone()),
                };
                let restored = SerialDevice::restore(args, &state)
                    .unwrap_or_else(|e| panic!("a state the UART reached is refused: {e}"));
                assert_eq!(restored.save().unwrap(), state);
                serial = restored;
                watch = watched(&mut serial);
            }
        }
        check(&serial, &model, &out, &watch);
    }
});
