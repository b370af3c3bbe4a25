//! `custom_vmm`: a microVM composed from the Kindling crates by hand,
//! without `kindling-vmm`: guest memory, the test guest kernel, one vCPU,
//! a serial console, a virtio-block disk and a port-I/O device of its own
//! (an "exit port" through which the guest reports its result).
//!
//! ```text
//! cargo run --release --example custom_vmm -- [DISK_IMAGE]
//! ```
//!
//! The guest reads the first 4 KiB of the disk (a 64 KiB image of its own
//! when none is given), prints a CRC-32 of them and writes its exit status
//! to the exit port; the VMM exits with that status. README.md ("Build your
//! own VMM") walks through it.

use std::error::Error;
use std::io::Cursor;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use kindling::boot::load_linux;
use kindling::devices::legacy::{CoalescedSerial, SerialDevice, COM1_PORT, SERIAL_PORT_LEN};
use kindling::devices::{BusDevice, BusExitHandler, EventFdLine};
use kindling::event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use kindling::memory::layout::{CMDLINE_MAX_SIZE, SERIAL_IRQ};
use kindling::memory::{create_guest_memory, Backing, MemoryConfig, ResourceAllocator};
use kindling::vcpu::{BootEntry, Kvm, VcpuHandle, VcpuRunState, Vm};
use kindling::virtio::block::{Block, BlockConfig};
use kindling::virtio::{
    cmdline_with_mmio_devices, MmioTransport, MMIO_WINDOW_SIZE, QUEUE_NOTIFY_OFFSET,
};
use kindling::vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// The device of our own: the guest writes its exit status to port 0xf4.
struct ExitPort {
    status: Arc<AtomicI32>,
    wake: EventFd,
}

impl BusDevice for ExitPort {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&mut self, _offset: u64, data: &[u8]) {
        self.status.store(i32::from(data[0]), Ordering::SeqCst);
        let _ = self.wake.write(1); // wake the event loop below
    }
}

/// Wakes the event loop when the exit port was written.
struct ExitPortEvent(EventFd);

impl MutEventSubscriber for ExitPortEvent {
    fn process(&mut self, _: Events, _: &mut EventOps) {
        let _ = self.0.read();
    }
    fn init(&mut self, ops: &mut EventOps) {
        ops.add(Events::new(&self.0, event_manager::EventSet::IN))
            .expect("watch the exit event");
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    // 1. Guest RAM, and a window and an interrupt line for the disk.
    let ram = create_guest_memory(&MemoryConfig {
        size_mib: 128,
        backing: Backing::Anonymous,
    })?;
    let mut allocator = ResourceAllocator::new()?;
    let disk_window = allocator.allocate_mmio(MMIO_WINDOW_SIZE)?;
    let disk_irq = allocator.allocate_irq()?;

    // 2. The kernel, told on its command line what to do and where the disk is.
    let cmdline = cmdline_with_mmio_devices(
        "kindling.test=hello,virtio,blk-read:0:0:8",
        CMDLINE_MAX_SIZE,
        &[(disk_window.base, disk_irq)],
    )?;
    let mut kernel = Cursor::new(kindling_test_guest::TEST_GUEST_ELF);
    let loaded = load_linux(&ram.memory, &mut kernel, None, &cmdline, 1)?;
    // Writes the GDT and page tables the 64-bit entry needs.
    let entry = BootEntry::linux64(&ram.memory, loaded.entry, loaded.zero_page)?;

    // 3. The VM (memory slots, irqchip, PIT).
    let kvm = Kvm::new()?;
    let vm = Vm::new(&kvm, &ram.memory)?;

    // 4. Devices on the buses: COM1, our exit port, the virtio disk.
    let mut handler = BusExitHandler::default();
    let serial_line = EventFdLine::new(SERIAL_IRQ)?;
    vm.register_irqfd(serial_line.event(), SERIAL_IRQ)?;
    let serial = Arc::new(Mutex::new(SerialDevice::new(
        serial_line,
        Box::new(std::io::stdout()),
    )));
    handler
        .pio
        .insert(COM1_PORT, SERIAL_PORT_LEN, serial.clone())?;

    let status = Arc::new(AtomicI32::new(-1));
    let wake = EventFd::new(EFD_NONBLOCK | libc::EFD_CLOEXEC)?;
    let exit_port = ExitPort {
        status: status.clone(),
        wake: wake.try_clone()?,
    };
    handler
        .pio
        .insert(0xf4, 1, Arc::new(Mutex::new(exit_port)))?;

    let scratch = std::env::temp_dir().join(format!("custom-vmm-{}.img", std::process::id()));
    let image = match std::env::args_os().nth(1) {
        Some(path) => path.into(),
        None => {
            std::fs::write(&scratch, vec![0x42u8; 64 * 1024])?;
            scratch.clone()
        }
    };
    let disk = Block::new(&BlockConfig::new(&image));
    let _ = std::fs::remove_file(&scratch); // the open file lives on
    let disk = Arc::new(Mutex::new(disk?));
    let disk_line = EventFdLine::new(disk_irq)?;
    vm.register_irqfd(disk_line.event(), disk_irq)?;
    let transport = MmioTransport::new(ram.memory.clone(), disk, Arc::new(disk_line))?;
    for (queue, event) in transport.queue_events().iter().enumerate() {
        // Queue notifications wake the event loop, not a vCPU exit.
        vm.register_mmio_ioevent_value(
            event,
            disk_window.base + QUEUE_NOTIFY_OFFSET,
            queue as u32,
        )?;
    }
    let disk_events = transport.subscriber()?;
    handler.mmio.insert(
        disk_window.base,
        MMIO_WINDOW_SIZE,
        Arc::new(Mutex::new(transport)),
    )?;

    // 5. One vCPU, at the kernel's 64-bit entry; serial output coalesced.
    let mut vcpus = vec![vm.create_vcpu(0)?];
    vcpus[0].configure(&kvm, 1, Some(entry))?;
    let coalesced = CoalescedSerial::setup(&vm, &mut vcpus, &serial)?;

    // 6. Run: the vCPU on its thread, device I/O on this one.
    let handler = Arc::new(handler);
    let vcpu = VcpuHandle::spawn(vcpus.remove(0), handler.clone(), Box::new(|_, _| {}))?;
    let mut events = EventManager::<Box<dyn MutEventSubscriber + Send>>::new()?;
    events.add_subscriber(Box::new(disk_events));
    events.add_subscriber(Box::new(ExitPortEvent(wake)));
    while status.load(Ordering::SeqCst) < 0 && vcpu.state() != VcpuRunState::Finished {
        events.run_with_timeout(100)?;
    }
    let (_vcpu, result) = vcpu.join();
    if let Some(coalesced) = coalesced {
        coalesced.drain(&*handler); // print what the guest still buffered
    }
    result?;
    let status = status.load(Ordering::SeqCst);
    eprintln!("custom_vmm: the guest reported status {status}");
    std::process::exit(status.max(0));
}
