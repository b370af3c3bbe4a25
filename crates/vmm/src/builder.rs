//! Building a microVM step by step: check the configuration and create
//! guest memory, let the user add devices, then load the guest, create the
//! VM and its vCPUs and wire every device.

use std::fs::File;
use std::io::Cursor;
use std::sync::{Arc, Mutex};

use event_manager::MutEventSubscriber;
use kindling_devices::legacy::{BufferedOutput, CoalescedSerial};
use kindling_devices::{Bus, BusExitHandler, EventFdLine, SharedDevice, VmExitHandle};
use kindling_memory::{create_guest_memory, GuestRam, MemoryConfig, MmioWindow, ResourceAllocator};
use kindling_vcpu::{Kvm, Vm, VmOptions};
use kindling_virtio::block::Block;
use kindling_virtio::net::Net;
use kindling_virtio::rng::Entropy;
use kindling_virtio::vsock::Vsock;
use kindling_virtio::VirtioDevice;

use crate::boot_setup::{load_guest, BootSources};
use crate::config::{KernelSource, SerialConfig, VmConfig};
use crate::device_manager::{insert, LegacyDevices};
use crate::devices::VirtioKind;
use crate::files::{identity, open_regular, open_serial_file};
use crate::virtio_devices::{self, PlannedDevice};
use crate::vmm::{serial_output, MAX_VCPUS};
use crate::{Vmm, VmmDevices, VmmError};

/// An event-loop subscriber a user adds for a device of their own.
pub type UserSubscriber = Box<dyn MutEventSubscriber + Send>;

/// A microVM being put together: memory exists and the configured disks
/// are open, but nothing touches KVM until [`VmmBuilder::build`].
///
/// Between [`VmmBuilder::new`] and [`VmmBuilder::build`] a user adds
/// devices of their own: port-I/O and MMIO devices on the buses, interrupt
/// lines, virtio devices (which the guest finds through ACPI and the
/// command line like the built-in ones) and event-loop subscribers for
/// their file descriptors.
///
/// # Example
///
/// ```no_run
/// use std::sync::{Arc, Mutex};
/// use kindling_devices::BusDevice;
/// use kindling_vmm::{KernelSource, VmConfig, VmmBuilder};
///
/// struct Port(u8);
/// impl BusDevice for Port {
///     fn read(&mut self, _: u64, data: &mut [u8]) { data[0] = self.0; }
///     fn write(&mut self, _: u64, data: &[u8]) { self.0 = data[0]; }
/// }
///
/// let config = VmConfig {
///     kernel: KernelSource::Path("vmlinux".into()),
///     ..VmConfig::default()
/// };
/// let mut builder = VmmBuilder::new(config).unwrap();
/// builder.add_pio_device("scratch port", 0x80, 1, Arc::new(Mutex::new(Port(0)))).unwrap();
/// let entropy = builder
///     .add_virtio_device("entropy", kindling_virtio::rng::Entropy::new())
///     .unwrap();
/// let vmm = builder.build().unwrap();
/// let running = vmm.start().unwrap();
/// running.pause().unwrap();
/// // The typed handle: no downcasting.
/// let _active = entropy.lock().unwrap();
/// running.resume().unwrap();
/// running.stop();
/// running.wait().unwrap();
/// ```
pub struct VmmBuilder {
    config: VmConfig,
    memory: GuestRam,
    kernel_file: Option<File>,
    initrd: Option<File>,
    allocator: ResourceAllocator,
    virtio: Vec<PlannedDevice>,
    disks: Vec<Arc<Mutex<Block>>>,
    net: Vec<(String, Arc<Mutex<Net>>)>,
    entropy: Option<Arc<Mutex<Entropy>>>,
    vsock: Option<Arc<Mutex<Vsock>>>,
    pio: Vec<(String, u64, u64, SharedDevice)>,
    mmio: Vec<(String, u64, u64, SharedDevice)>,
    irq_lines: Vec<(u32, EventFdLine)>,
    subscribers: Vec<UserSubscriber>,
}

impl std::fmt::Debug for VmmBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmmBuilder")
            .field("config", &self.config)
            .field("virtio", &self.virtio)
            .field("pio_devices", &self.pio.len())
            .field("mmio_devices", &self.mmio.len())
            .field("subscribers", &self.subscribers.len())
            .finish_non_exhaustive()
    }
}

impl VmmBuilder {
    /// Checks `config`, creates guest memory and opens every file it
    /// names (kernel, initrd, disks, TAP devices), so bad input is reported before
    /// anything touches KVM.
    pub fn new(config: VmConfig) -> Result<Self, VmmError> {
        if config.vcpus == 0 || config.vcpus > MAX_VCPUS {
            return Err(VmmError::VcpuCount(config.vcpus));
        }
        let memory = create_guest_memory(&MemoryConfig {
            size_mib: config.memory_mib,
            backing: config.memory_backing,
        })?;
        let mut in_use = Vec::new();
        let kernel_file = match &config.kernel {
            KernelSource::Path(path) => {
                let file = open_regular("kernel image", path)?;
                in_use.extend(identity(path).map(|id| (id, "the kernel image", path.clone())));
                Some(file)
            }
            KernelSource::Bytes(_) => None,
        };
        let initrd = match &config.initrd {
            Some(path) => {
                let file = open_regular("initrd", path)?;
                in_use.extend(identity(path).map(|id| (id, "the initrd", path.clone())));
                Some(file)
            }
            None => None,
        };
        for disk in &config.disks {
            let Some(id) = identity(&disk.path) else {
                continue; // opening it reports the error
            };
            if let Some((_, first, other)) = in_use.iter().find(|(used, _, _)| *used == id) {
                return Err(VmmError::FileUsedTwice {
                    path: disk.path.clone(),
                    first,
                    other: other.clone(),
                });
            }
            in_use.push((id, "a disk image", disk.path.clone()));
        }
        virtio_devices::check_nets(&config.net)?;
        let mut config = config;
        if let SerialConfig::File(path) = &config.serial {
            let file = open_serial_file(path, &in_use)?;
            config.serial = SerialConfig::Writer(Box::new(file));
        }
        let allocator = ResourceAllocator::new().map_err(|source| VmmError::Allocate {
            device: "resource allocator".into(),
            source,
        })?;
        let mut builder = Self {
            memory,
            kernel_file,
            initrd,
            allocator,
            virtio: Vec::new(),
            disks: Vec::new(),
            net: Vec::new(),
            entropy: None,
            vsock: None,
            pio: Vec::new(),
            mmio: Vec::new(),
            irq_lines: Vec::new(),
            subscribers: Vec::new(),
            config,
        };
        for index in 0..builder.config.disks.len() {
            let disk = builder.config.disks[index].clone();
            let block = Arc::new(Mutex::new(virtio_devices::open_disk(index, &disk)?));
            let kind = VirtioKind::Block {
                device: block.clone(),
                path: disk.path,
                read_only: disk.read_only,
            };
            builder.plan_virtio(&format!("disk {index}"), block.clone(), kind)?;
            builder.disks.push(block);
        }
        for index in 0..builder.config.net.len() {
            let net = virtio_devices::open_net(index, &builder.config.net[index])?;
            let iface_id = builder.config.net[index].iface_id.clone();
            let net = Arc::new(Mutex::new(net));
            let kind = VirtioKind::Net {
                device: net.clone(),
                iface_id: iface_id.clone(),
            };
            builder.plan_virtio(&format!("network interface {iface_id}"), net.clone(), kind)?;
            builder.net.push((iface_id, net));
        }
        if builder.config.entropy {
            let entropy = builder.add_virtio_device("entropy device", Entropy::new())?;
            builder.entropy = Some(entropy);
        }
        if let Some(vsock) = &builder.config.vsock {
            let device = virtio_devices::open_vsock(vsock)?;
            builder.vsock = Some(builder.add_virtio_device("vsock device", device)?);
        }
        Ok(builder)
    }

    /// Gives `device` a window and an interrupt line.
    fn plan_virtio(
        &mut self,
        name: &str,
        device: Arc<Mutex<dyn VirtioDevice>>,
        kind: VirtioKind,
    ) -> Result<(), VmmError> {
        let planned = PlannedDevice::allocate(name.to_string(), device, kind, &mut self.allocator)?;
        self.virtio.push(planned);
        Ok(())
    }

    /// Guest memory (already created; nothing is loaded yet).
    pub fn memory(&self) -> &GuestRam {
        &self.memory
    }

    /// Adds a virtio device behind its own virtio-mmio transport, with a
    /// window and an interrupt line of its own, described to the guest in
    /// the ACPI DSDT and on the command line. Returns the typed handle the
    /// transport shares.
    ///
    /// Snapshots save an entropy, network (named by `name` in network
    /// overrides) or vsock device added this way; a device of any other
    /// type (a virtio-block device too: its image path is not known
    /// here; configure disks in [`VmConfig::disks`] or add them with
    /// [`VmmBuilder::add_block_device`]) makes a snapshot of
    /// the VM fail with [`SnapshotError::UnsupportedDevice`](crate::snapshot::SnapshotError::UnsupportedDevice).
    pub fn add_virtio_device<D: VirtioDevice + 'static>(
        &mut self,
        name: &str,
        device: D,
    ) -> Result<Arc<Mutex<D>>, VmmError> {
        let device = Arc::new(Mutex::new(device));
        let any: Box<dyn std::any::Any> = Box::new(device.clone());
        let kind = match any.downcast::<Arc<Mutex<Entropy>>>() {
            Ok(entropy) => VirtioKind::Entropy(*entropy),
            Err(any) => match any.downcast::<Arc<Mutex<Net>>>() {
                Ok(net) => VirtioKind::Net {
                    device: *net,
                    iface_id: name.to_string(),
                },
                Err(any) => match any.downcast::<Arc<Mutex<Vsock>>>() {
                    Ok(vsock) => VirtioKind::Vsock(*vsock),
                    Err(_) => VirtioKind::Other,
                },
            },
        };
        self.plan_virtio(name, device.clone(), kind)?;
        Ok(device)
    }

    /// Adds a virtio-block device the caller opened (on a backend of its
    /// own, such as a metered one) after the disks of
    /// [`VmConfig::disks`], treated as they are: the guest sees it as the
    /// next disk, it is flushed when the VM stops, and snapshots save it
    /// with `path`, which a restore opens again (or an override in its
    /// place). `path` and `read_only` must be the image and the mode
    /// `block` was opened with. Returns the handle the transport shares.
    pub fn add_block_device(
        &mut self,
        name: &str,
        block: Block,
        path: std::path::PathBuf,
        read_only: bool,
    ) -> Result<Arc<Mutex<Block>>, VmmError> {
        let block = Arc::new(Mutex::new(block));
        let kind = VirtioKind::Block {
            device: block.clone(),
            path,
            read_only,
        };
        self.plan_virtio(name, block.clone(), kind)?;
        self.disks.push(block.clone());
        Ok(block)
    }

    /// Puts `device` on the port-I/O bus at `[port, port + len)`.
    /// Overlaps with other devices are reported by [`VmmBuilder::build`].
    pub fn add_pio_device(
        &mut self,
        name: &str,
        port: u16,
        len: u16,
        device: SharedDevice,
    ) -> Result<(), VmmError> {
        check_range(name, u64::from(port), u64::from(len), 0x1_0000)?;
        self.pio
            .push((name.to_string(), u64::from(port), u64::from(len), device));
        Ok(())
    }

    /// Puts `device` on the MMIO bus in a window of `len` bytes (a
    /// multiple of 4 KiB) allocated in the MMIO gap; returns the window.
    pub fn add_mmio_device(
        &mut self,
        name: &str,
        len: u64,
        device: SharedDevice,
    ) -> Result<MmioWindow, VmmError> {
        let window = self
            .allocator
            .allocate_mmio(len)
            .map_err(|source| VmmError::Allocate {
                device: name.to_string(),
                source,
            })?;
        self.mmio
            .push((name.to_string(), window.base, window.size, device));
        Ok(window)
    }

    /// Allocates an interrupt line (an IOAPIC pin) for a device of the
    /// user's; it is wired to the VM (as a KVM irqfd) when the VM is built.
    pub fn add_irq_line(&mut self, name: &str) -> Result<EventFdLine, VmmError> {
        let gsi = self
            .allocator
            .allocate_irq()
            .map_err(|source| VmmError::Allocate {
                device: name.to_string(),
                source,
            })?;
        let line = EventFdLine::new(gsi).map_err(|source| VmmError::EventFd {
            what: format!("interrupt line of the {name}"),
            source,
        })?;
        self.irq_lines.push((gsi, line.clone()));
        Ok(line)
    }

    /// Adds a subscriber to the device event loop, for a device of the
    /// user's that has file descriptors to watch.
    pub fn add_event_subscriber(&mut self, subscriber: UserSubscriber) {
        self.subscribers.push(subscriber);
    }

    /// Loads the guest, creates the VM, wires every device and creates the
    /// vCPUs. Nothing runs until [`Vmm::start`] or [`Vmm::run`].
    #[cfg(target_arch = "x86_64")]
    pub fn build(mut self) -> Result<Vmm, VmmError> {
        let config = &mut self.config;
        let cmdline = virtio_devices::cmdline_with_devices(&config.cmdline, &self.virtio)?;
        let virtio_acpi: Vec<_> = self
            .virtio
            .iter()
            .map(PlannedDevice::acpi_description)
            .collect();
        let mut kernel_bytes;
        let kernel: &mut dyn kindling_boot::ReadSeek = match self.kernel_file.as_mut() {
            Some(file) => file,
            None => {
                // `new` opened the file of a `KernelSource::Path`.
                let bytes: &[u8] = match &config.kernel {
                    KernelSource::Bytes(bytes) => bytes,
                    KernelSource::Path(_) => &[],
                };
                kernel_bytes = Cursor::new(bytes);
                &mut kernel_bytes
            }
        };
        let boot_entry = load_guest(
            &self.memory.memory,
            BootSources {
                kernel,
                initrd: self
                    .initrd
                    .as_mut()
                    .map(|f| f as &mut dyn kindling_boot::ReadSeek),
                cmdline: &cmdline,
                protocol: config.boot_protocol,
                vcpus: config.vcpus,
            },
            &virtio_acpi,
        )?;

        let kvm = Kvm::new()?;
        if usize::from(config.vcpus) > kvm.max_vcpus() {
            return Err(kindling_vcpu::VmError::TooManyVcpus {
                requested: usize::from(config.vcpus),
                max: kvm.max_vcpus(),
            }
            .into());
        }
        let options = VmOptions {
            dirty_log: config.track_dirty_pages,
            ..VmOptions::default()
        };
        let vm = Vm::with_options(&kvm, &self.memory.memory, &options)?;

        let exit = VmExitHandle::new().map_err(|source| VmmError::EventFd {
            what: "VM exit event".into(),
            source,
        })?;
        let serial_config = std::mem::replace(&mut config.serial, SerialConfig::Off);
        let (serial_out, stdin_input) = serial_output(serial_config)?;
        let (serial_out, serial_flusher) =
            BufferedOutput::new(serial_out).map_err(|source| VmmError::EventFd {
                what: "serial port's output timer".into(),
                source,
            })?;
        let mut pio = Bus::new();
        let mut mmio = Bus::new();
        let legacy = LegacyDevices::create(
            &vm,
            &exit,
            Box::new(serial_out),
            config.start_time,
            config.boot_timer_log.clone(),
        )?;
        legacy.place(&mut pio, &mut mmio, &exit, config.debug_exit)?;
        for (name, base, len, device) in self.pio.drain(..) {
            insert(&mut pio, base, len, device, &name)?;
        }
        for (name, base, len, device) in self.mmio.drain(..) {
            insert(&mut mmio, base, len, device, &name)?;
        }
        for (gsi, line) in &self.irq_lines {
            vm.register_irqfd(line.event(), *gsi)?;
        }
        let (virtio_subscribers, virtio_slots) = virtio_devices::attach(
            std::mem::take(&mut self.virtio),
            &vm,
            &self.memory.memory,
            &mut mmio,
        )?;

        let mut vcpus = Vec::with_capacity(usize::from(config.vcpus));
        for id in 0..config.vcpus {
            let vcpu = vm.create_vcpu(id)?;
            vcpu.configure(&kvm, config.vcpus, (id == 0).then_some(boot_entry))?;
            vcpus.push(vcpu);
        }
        let coalesced = CoalescedSerial::setup(&vm, &mut vcpus, &legacy.serial)?;
        let mut subscribers: Vec<UserSubscriber> = virtio_subscribers
            .into_iter()
            .map(|s| Box::new(s) as UserSubscriber)
            .collect();
        subscribers.append(&mut self.subscribers);
        Vmm::assemble(crate::vmm::Parts {
            vcpus,
            devices: VmmDevices {
                legacy,
                disks: self.disks,
                net: self.net,
                entropy: self.entropy,
                virtio: virtio_slots,
                vsock: self.vsock,
            },
            handler: Arc::new(BusExitHandler {
                pio,
                mmio,
                counters: Default::default(),
                exit: Some(exit.clone()),
            }),
            serial_flusher,
            coalesced: coalesced.map(Arc::new),
            subscribers,
            exit,
            stdin_input,
            stop_on_signals: config.stop_on_signals,
            seccomp: config.seccomp.clone(),
            console_escape: config.console_escape.take(),
            vm: Arc::new(vm),
            kvm: Arc::new(kvm),
            memory: self.memory,
            start_paused: false,
            uffd: None,
        })
    }
}

/// Checks a bus range before it is added.
fn check_range(name: &str, base: u64, len: u64, end: u64) -> Result<(), VmmError> {
    if len == 0 || base.checked_add(len).is_none_or(|e| e > end) {
        return Err(VmmError::Bus {
            device: name.to_string(),
            source: kindling_devices::BusError::InvalidRange { base, len },
        });
    }
    Ok(())
}
