//! The microVM's virtio-mmio devices: planned before the kernel is loaded
//! (their windows and IRQs go on the command line and into the ACPI DSDT),
//! attached once the VM exists.

use std::sync::{Arc, Mutex};

use kindling_devices::{Bus, EventFdLine};
use kindling_memory::{GuestMemoryMmap, ResourceAllocator};
use kindling_vcpu::Vm;
use kindling_virtio::block::{Block, BlockConfig};
use kindling_virtio::rng::Entropy;
use kindling_virtio::{
    mmio_cmdline_device, MmioTransport, VirtioDevice, VirtioSubscriber, MMIO_WINDOW_SIZE,
    QUEUE_NOTIFY_OFFSET,
};

use crate::config::DiskConfig;
use crate::VmmError;

/// A virtio device with its MMIO window and interrupt line.
pub(crate) struct PlannedDevice {
    name: String,
    device: Arc<Mutex<dyn VirtioDevice>>,
    /// Base of the 4 KiB MMIO window.
    pub(crate) base: u64,
    /// The IOAPIC pin (GSI) it raises.
    pub(crate) irq: u32,
}

impl std::fmt::Debug for PlannedDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlannedDevice")
            .field("name", &self.name)
            .field("base", &format_args!("{:#x}", self.base))
            .field("irq", &self.irq)
            .finish()
    }
}

fn virtio_err(name: &str, reason: impl std::fmt::Display) -> VmmError {
    VmmError::Virtio {
        device: name.to_string(),
        reason: reason.to_string(),
    }
}

/// Opens the disks and creates the entropy device, each with a window and
/// an IRQ from `allocator`. Disk images are opened here, before anything
/// touches KVM, so a bad path is reported first.
pub(crate) fn plan(
    disks: &[DiskConfig],
    entropy: bool,
    allocator: &mut ResourceAllocator,
) -> Result<Vec<PlannedDevice>, VmmError> {
    let mut planned = Vec::new();
    let mut add = |name: String, device: Arc<Mutex<dyn VirtioDevice>>| {
        let window = allocator
            .allocate_mmio(MMIO_WINDOW_SIZE)
            .map_err(|e| virtio_err(&name, e))?;
        let irq = allocator.allocate_irq().map_err(|e| virtio_err(&name, e))?;
        planned.push(PlannedDevice {
            name,
            device,
            base: window.base,
            irq,
        });
        Ok::<(), VmmError>(())
    };
    for (index, disk) in disks.iter().enumerate() {
        let config = BlockConfig {
            read_only: disk.read_only,
            engine: disk.engine,
            ..BlockConfig::new(&disk.path)
        };
        let block = Block::new(&config).map_err(|e| VmmError::Virtio {
            device: format!("disk {index}"),
            reason: e.to_string(),
        })?;
        add(format!("disk {index}"), Arc::new(Mutex::new(block)))?;
    }
    if entropy {
        add(
            "entropy device".into(),
            Arc::new(Mutex::new(Entropy::new())),
        )?;
    }
    Ok(planned)
}

/// The `virtio_mmio.device=` kernel parameters that announce `devices`.
pub(crate) fn cmdline_entries(devices: &[PlannedDevice]) -> String {
    devices
        .iter()
        .map(|d| mmio_cmdline_device(d.base, d.irq))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Puts each device behind a virtio-mmio transport on the MMIO bus, wires
/// its interrupt (irqfd) and queue notifications (ioeventfds on
/// QueueNotify, one per queue), and returns the event-loop subscribers that
/// process the queues.
pub(crate) fn attach(
    devices: Vec<PlannedDevice>,
    vm: &Vm,
    memory: &GuestMemoryMmap,
    mmio: &mut Bus,
) -> Result<Vec<VirtioSubscriber>, VmmError> {
    let mut subscribers = Vec::with_capacity(devices.len());
    for planned in devices {
        let name = planned.name;
        let line = EventFdLine::new(planned.irq).map_err(|e| virtio_err(&name, e))?;
        vm.register_irqfd(line.event(), planned.irq)?;
        let transport = MmioTransport::new(memory.clone(), planned.device, Arc::new(line))
            .map_err(|e| virtio_err(&name, e))?;
        for (index, event) in transport.queue_events().iter().enumerate() {
            vm.register_mmio_ioevent_value(
                event,
                planned.base + QUEUE_NOTIFY_OFFSET,
                index as u32,
            )?;
        }
        subscribers.push(transport.subscriber().map_err(|e| virtio_err(&name, e))?);
        mmio.insert(
            planned.base,
            MMIO_WINDOW_SIZE,
            Arc::new(Mutex::new(transport)),
        )
        .map_err(|e| virtio_err(&name, e))?;
    }
    Ok(subscribers)
}
