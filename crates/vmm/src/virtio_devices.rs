//! The microVM's virtio-mmio devices: planned before the kernel is loaded
//! (their windows and IRQs go on the command line and into the ACPI DSDT),
//! attached once the VM exists.

use std::sync::{Arc, Mutex};

use kindling_devices::{Bus, EventFdLine, InterruptLine};
use kindling_memory::{GuestMemoryMmap, ResourceAllocator};
use kindling_vcpu::Vm;
use kindling_virtio::block::{Block, BlockConfig};
use kindling_virtio::net::{Net, NetConfig as DeviceNetConfig};
use kindling_virtio::vsock::Vsock;
use kindling_virtio::{
    cmdline_with_mmio_devices, CmdlineError, MmioTransport, TransportError, VirtioDevice,
    VirtioSubscriber, MMIO_WINDOW_SIZE, QUEUE_NOTIFY_OFFSET,
};

use crate::config::{DiskConfig, NetConfig, VsockConfig};
use crate::devices::{VirtioKind, VirtioSlot};
use crate::VmmError;

/// A virtio device with its MMIO window and interrupt line.
pub(crate) struct PlannedDevice {
    pub(crate) name: String,
    device: Arc<Mutex<dyn VirtioDevice>>,
    /// What the device is, for snapshots.
    kind: VirtioKind,
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

impl PlannedDevice {
    /// Gives `device` a window and an IRQ from `allocator`.
    pub(crate) fn allocate(
        name: String,
        device: Arc<Mutex<dyn VirtioDevice>>,
        kind: VirtioKind,
        allocator: &mut ResourceAllocator,
    ) -> Result<Self, VmmError> {
        let (base, irq) = allocate_window(&name, allocator)?;
        Ok(Self {
            name,
            device,
            kind,
            base,
            irq,
        })
    }

    /// How the ACPI DSDT describes the device.
    pub(crate) fn acpi_description(&self) -> kindling_boot::VirtioMmioDescription {
        kindling_boot::VirtioMmioDescription {
            base: self.base,
            size: MMIO_WINDOW_SIZE,
            irq: self.irq,
        }
    }
}

/// The next virtio-mmio window and interrupt line of `allocator`, for the
/// device `name`: the build path and the restore path (which checks that a
/// snapshot's layout is the one the allocator gives) share it.
pub(crate) fn allocate_window(
    name: &str,
    allocator: &mut ResourceAllocator,
) -> Result<(u64, u32), VmmError> {
    let alloc_err = |source| VmmError::Allocate {
        device: name.to_string(),
        source,
    };
    let window = allocator
        .allocate_mmio(MMIO_WINDOW_SIZE)
        .map_err(alloc_err)?;
    let irq = allocator.allocate_irq().map_err(alloc_err)?;
    Ok((window.base, irq))
}

/// Opens disk `index` as described by `disk`. Disk images are opened
/// before anything touches KVM, so a bad path is reported first.
pub(crate) fn open_disk(index: usize, disk: &DiskConfig) -> Result<Block, VmmError> {
    let config = BlockConfig {
        read_only: disk.read_only,
        engine: disk.engine,
        rate_limiter: disk.rate_limiter,
        ..BlockConfig::new(&disk.path)
    };
    Block::new(&config).map_err(|source| VmmError::Block { index, source })
}

/// Creates the vsock device (it binds its socket at once, so a taken path
/// is reported at configuration time).
pub(crate) fn open_vsock(config: &VsockConfig) -> Result<Vsock, VmmError> {
    Vsock::new(&kindling_virtio::vsock::VsockConfig {
        guest_cid: config.guest_cid,
        uds_path: config.uds_path.clone(),
    })
    .map_err(VmmError::Vsock)
}

/// The network device's configuration for interface `net`.
pub(crate) fn net_device_config(net: &NetConfig) -> DeviceNetConfig {
    DeviceNetConfig {
        mac: net.guest_mac,
        rx_rate_limiter: net.rx_rate_limiter,
        tx_rate_limiter: net.tx_rate_limiter,
        ..DeviceNetConfig::new(&net.host_dev_name)
    }
}

/// Checks that no two interfaces share an `iface_id` or a TAP.
pub(crate) fn check_nets(nets: &[NetConfig]) -> Result<(), VmmError> {
    for (second, b) in nets.iter().enumerate() {
        for (first, a) in nets[..second].iter().enumerate() {
            let clash = if a.iface_id == b.iface_id {
                Some(("iface_id", &b.iface_id))
            } else if a.host_dev_name == b.host_dev_name {
                Some(("host_dev_name", &b.host_dev_name))
            } else {
                None
            };
            if let Some((what, value)) = clash {
                return Err(VmmError::NetDuplicate {
                    first,
                    second,
                    what,
                    value: value.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Opens the TAP of interface `index`; like disks, before anything
/// touches KVM.
pub(crate) fn open_net(index: usize, net: &NetConfig) -> Result<Net, VmmError> {
    Net::new(&net_device_config(net)).map_err(|source| VmmError::Net {
        index,
        iface_id: net.iface_id.clone(),
        source,
    })
}

/// `cmdline` with the `virtio_mmio.device=` kernel parameters that
/// announce `devices`, within the kernel's command-line limit.
pub(crate) fn cmdline_with_devices(
    cmdline: &str,
    devices: &[PlannedDevice],
) -> Result<String, CmdlineError> {
    let windows: Vec<(u64, u32)> = devices.iter().map(|d| (d.base, d.irq)).collect();
    cmdline_with_mmio_devices(cmdline, kindling_memory::layout::CMDLINE_MAX_SIZE, &windows)
}

/// Puts each device behind a new virtio-mmio transport on the MMIO bus
/// (see [`attach_one`]) and returns the event-loop subscribers and the
/// typed slots.
pub(crate) fn attach(
    devices: Vec<PlannedDevice>,
    vm: &Vm,
    memory: &GuestMemoryMmap,
    mmio: &mut Bus,
) -> Result<(Vec<VirtioSubscriber>, Vec<VirtioSlot>), VmmError> {
    let mut subscribers = Vec::with_capacity(devices.len());
    let mut slots = Vec::with_capacity(devices.len());
    for planned in devices {
        let device = planned.device;
        let (subscriber, slot) = attach_one(
            planned.name,
            planned.base,
            planned.irq,
            planned.kind,
            vm,
            mmio,
            |line| MmioTransport::new(memory.clone(), device, line),
        )?;
        subscribers.push(subscriber);
        slots.push(slot);
    }
    Ok((subscribers, slots))
}

/// Wires one virtio device: an interrupt line for `irq` (an irqfd), the
/// transport `make` builds around it (new, or restored from a snapshot),
/// one ioeventfd per queue on QueueNotify, and the transport on the MMIO
/// bus at `base`. Returns the subscriber that processes its queues and its
/// typed slot.
pub(crate) fn attach_one(
    name: String,
    base: u64,
    irq: u32,
    kind: VirtioKind,
    vm: &Vm,
    mmio: &mut Bus,
    make: impl FnOnce(Arc<dyn InterruptLine>) -> Result<MmioTransport, TransportError>,
) -> Result<(VirtioSubscriber, VirtioSlot), VmmError> {
    let line = EventFdLine::new(irq).map_err(|source| VmmError::EventFd {
        what: format!("interrupt line of the {name}"),
        source,
    })?;
    vm.register_irqfd(line.event(), irq)?;
    let transport_err = |source| VmmError::Transport {
        device: name.clone(),
        source,
    };
    let transport = make(Arc::new(line)).map_err(transport_err)?;
    for (index, event) in transport.queue_events().iter().enumerate() {
        vm.register_mmio_ioevent_value(event, base + QUEUE_NOTIFY_OFFSET, index as u32)?;
    }
    let subscriber = transport.subscriber().map_err(transport_err)?;
    let pass_stats = subscriber.stats();
    let transport = Arc::new(Mutex::new(transport));
    mmio.insert(base, MMIO_WINDOW_SIZE, transport.clone())
        .map_err(|source| VmmError::Bus {
            device: name.clone(),
            source,
        })?;
    Ok((
        subscriber,
        VirtioSlot {
            name,
            base,
            irq,
            pass_stats,
            transport,
            kind,
        },
    ))
}
