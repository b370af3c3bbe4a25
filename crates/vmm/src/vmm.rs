//! Building and running a microVM.

use std::fs::File;
use std::io::{Cursor, Write};
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use kindling_devices::legacy::{BufferedOutput, OutputFlusher};
use kindling_devices::{Bus, ExitReason, VmExitHandle};
use kindling_memory::{
    create_guest_memory, GuestMemoryMmap, GuestRam, MemoryConfig, ResourceAllocator,
};
use kindling_vcpu::x86_64::gdt;
use kindling_vcpu::{BootEntry, CoalescedRing, Kvm, Vcpu, VcpuHandle, VcpuStopReason, Vm};
use kindling_virtio::VirtioSubscriber;
use vmm_sys_util::timerfd::TimerFd;

use crate::config::{BootProtocol, KernelSource, SerialConfig, VmConfig};
use crate::device_manager::LegacyDevices;
use crate::event_loop::{
    CoalescedDrainSubscriber, ExitSubscriber, SerialFlushSubscriber, StdinSubscriber,
};
use crate::{virtio_devices, BusExitHandler, VmmError};

/// The largest vCPU count a Kindling VM supports (the MP table's APIC ids
/// stop at 254, with the IOAPIC taking the next id).
pub const MAX_VCPUS: u8 = 254;

/// A built microVM, ready to run.
#[derive(Debug)]
pub struct Vmm {
    // Field order is drop order: vCPUs before the VM before memory.
    vcpus: Vec<Vcpu>,
    devices: LegacyDevices,
    handler: Arc<BusExitHandler>,
    serial_flusher: OutputFlusher,
    coalesced: Option<CoalescedSerial>,
    virtio_subscribers: Vec<VirtioSubscriber>,
    exit: VmExitHandle,
    stdin_input: bool,
    console_escape: Option<crate::console::ConsoleEscape>,
    vm: Vm,
    kvm: Kvm,
    memory: GuestRam,
}

/// The coalesced serial data port: its ring and the timer that replays it
/// while the guest waits for transmit interrupts.
#[derive(Debug)]
struct CoalescedSerial {
    ring: Arc<CoalescedRing>,
    timer: Arc<Mutex<TimerFd>>,
}

/// How often coalesced serial writes are replayed while the guest drives
/// the UART by interrupts: 16 bytes (one FIFO) per period, faster than a
/// real 115200-baud line.
const SERIAL_DRAIN_PERIOD: std::time::Duration = std::time::Duration::from_millis(1);

/// Stops a running [`Vmm`] from another thread.
#[derive(Debug, Clone)]
pub struct VmmHandle {
    exit: VmExitHandle,
}

impl VmmHandle {
    /// Asks the VM to stop; [`Vmm::run`] then returns
    /// [`ExitReason::Stopped`].
    pub fn stop(&self) {
        self.exit.request(ExitReason::Stopped);
    }
}

type SubscriberBox = Box<dyn MutEventSubscriber + Send>;

fn open(what: &'static str, path: &std::path::Path) -> Result<File, VmmError> {
    File::open(path).map_err(|source| VmmError::OpenFile {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn serial_output(config: SerialConfig) -> Result<(Box<dyn Write + Send>, bool), VmmError> {
    Ok(match config {
        SerialConfig::Stdout => (Box::new(std::io::stdout()), true),
        SerialConfig::Off => (Box::new(std::io::sink()), false),
        SerialConfig::File(path) => {
            let file = File::create(&path).map_err(|source| VmmError::OpenFile {
                what: "serial output file",
                path,
                source,
            })?;
            (Box::new(file), false)
        }
        SerialConfig::Writer(w) => (w, false),
    })
}

impl Vmm {
    /// Builds the microVM described by `config`: memory, VM, kernel,
    /// devices and vCPUs. Nothing runs until [`Vmm::run`].
    #[cfg(target_arch = "x86_64")]
    pub fn build(config: VmConfig) -> Result<Self, VmmError> {
        if config.vcpus == 0 || config.vcpus > MAX_VCPUS {
            return Err(VmmError::VcpuCount(config.vcpus));
        }
        // Check everything the user gave before touching KVM.
        let memory = create_guest_memory(&MemoryConfig {
            size_mib: config.memory_mib,
            backing: config.memory_backing,
        })?;
        let mut kernel_file;
        let mut kernel_bytes;
        let kernel: &mut dyn kindling_boot::ReadSeek = match &config.kernel {
            KernelSource::Path(path) => {
                kernel_file = open("kernel image", path)?;
                &mut kernel_file
            }
            KernelSource::Bytes(bytes) => {
                kernel_bytes = Cursor::new(*bytes);
                &mut kernel_bytes
            }
        };
        let mut initrd = match &config.initrd {
            Some(path) => Some(open("initrd", path)?),
            None => None,
        };
        let mut allocator = ResourceAllocator::new().map_err(|e| VmmError::Device {
            device: "resource allocator",
            reason: e.to_string(),
        })?;
        let planned = virtio_devices::plan(&config.disks, config.entropy, &mut allocator)?;
        let mut cmdline = config.cmdline.clone();
        let virtio_cmdline = virtio_devices::cmdline_entries(&planned);
        if !virtio_cmdline.is_empty() {
            if !cmdline.is_empty() {
                cmdline.push(' ');
            }
            cmdline.push_str(&virtio_cmdline);
        }
        let virtio_acpi: Vec<kindling_boot::VirtioMmioDescription> = planned
            .iter()
            .map(|d| kindling_boot::VirtioMmioDescription {
                base: d.base,
                size: kindling_virtio::MMIO_WINDOW_SIZE,
                irq: d.irq,
            })
            .collect();
        let initrd = initrd
            .as_mut()
            .map(|f| f as &mut dyn kindling_boot::ReadSeek);
        let boot_entry = match config.boot_protocol {
            BootProtocol::Linux64 => {
                let boot = kindling_boot::load_linux(
                    &memory.memory,
                    kernel,
                    initrd,
                    &cmdline,
                    config.vcpus,
                )?;
                gdt::write_gdt_and_idt(&memory.memory)?;
                gdt::write_identity_page_tables(&memory.memory)?;
                let rsdp = setup_acpi(&memory.memory, config.vcpus, &virtio_acpi)?;
                kindling_boot::set_acpi_rsdp(&memory.memory, boot.zero_page, rsdp)?;
                BootEntry::Linux64 {
                    entry: boot.entry,
                    zero_page: boot.zero_page,
                }
            }
            BootProtocol::Pvh => {
                let boot = kindling_boot::load_linux_pvh(
                    &memory.memory,
                    kernel,
                    initrd,
                    &cmdline,
                    config.vcpus,
                )?;
                gdt::write_pvh_gdt_and_idt(&memory.memory)?;
                let rsdp = setup_acpi(&memory.memory, config.vcpus, &virtio_acpi)?;
                kindling_boot::set_pvh_rsdp(&memory.memory, boot.start_info, rsdp)?;
                BootEntry::Pvh {
                    entry: boot.entry,
                    start_info: boot.start_info,
                }
            }
        };

        let kvm = Kvm::new()?;
        if usize::from(config.vcpus) > kvm.max_vcpus() {
            return Err(kindling_vcpu::VmError::TooManyVcpus {
                requested: usize::from(config.vcpus),
                max: kvm.max_vcpus(),
            }
            .into());
        }
        let vm = Vm::new(&kvm, &memory.memory)?;

        let exit = VmExitHandle::new().map_err(|e| VmmError::Device {
            device: "exit event",
            reason: e.to_string(),
        })?;
        let (serial_out, stdin_input) = serial_output(config.serial)?;
        let (serial_out, serial_flusher) =
            BufferedOutput::new(serial_out).map_err(|e| VmmError::Device {
                device: "serial port",
                reason: format!("cannot create its output timer: {e}"),
            })?;
        let mut pio = Bus::new();
        let mut mmio = Bus::new();
        let devices = LegacyDevices::create(
            &vm,
            &mut pio,
            &mut mmio,
            &exit,
            Box::new(serial_out),
            config.start_time,
            config.boot_timer_log,
        )?;

        let virtio_subscribers = virtio_devices::attach(planned, &vm, &memory.memory, &mut mmio)?;
        let mut vcpus = Vec::with_capacity(usize::from(config.vcpus));
        for id in 0..config.vcpus {
            let vcpu = vm.create_vcpu(id)?;
            vcpu.configure(&kvm, config.vcpus, (id == 0).then_some(boot_entry))?;
            vcpus.push(vcpu);
        }
        let coalesced = coalesce_serial_output(&vm, &mut vcpus, &devices)?;
        Ok(Self {
            vcpus,
            devices,
            handler: Arc::new(BusExitHandler { pio, mmio }),
            serial_flusher,
            coalesced,
            virtio_subscribers,
            exit,
            stdin_input,
            console_escape: config.console_escape,
            vm,
            kvm,
            memory,
        })
    }

    /// A handle to stop the VM from another thread.
    pub fn handle(&self) -> VmmHandle {
        VmmHandle {
            exit: self.exit.clone(),
        }
    }

    /// Guest memory.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory.memory
    }

    /// The legacy devices.
    pub fn devices(&self) -> &LegacyDevices {
        &self.devices
    }

    /// The KVM VM.
    pub fn vm(&self) -> &Vm {
        &self.vm
    }

    /// The checked KVM handle.
    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }

    /// Runs the VM until the guest or a [`VmmHandle`] ends it: vCPUs on
    /// their own threads, the device event loop on this one. Returns why
    /// the VM ended, or the first vCPU error.
    pub fn run(mut self) -> Result<ExitReason, VmmError> {
        let mut manager: EventManager<SubscriberBox> =
            EventManager::new().map_err(|e| VmmError::EventLoop(format!("{e:?}")))?;
        manager.add_subscriber(Box::new(ExitSubscriber {
            exit: self.exit.clone(),
        }));
        manager.add_subscriber(Box::new(SerialFlushSubscriber {
            flusher: self.serial_flusher.clone(),
        }));
        for subscriber in self.virtio_subscribers.drain(..) {
            manager.add_subscriber(Box::new(subscriber));
        }
        if let Some(coalesced) = &self.coalesced {
            manager.add_subscriber(Box::new(CoalescedDrainSubscriber {
                ring: coalesced.ring.clone(),
                handler: self.handler.clone(),
                timer: coalesced.timer.clone(),
            }));
        }
        if self.stdin_input {
            manager.add_subscriber(Box::new(StdinSubscriber {
                serial: self.devices.serial.clone(),
                fd: libc::STDIN_FILENO,
                active: false,
                escape: self.console_escape.take().map(|escape| {
                    (
                        crate::console::EscapeDetector::new(),
                        escape,
                        self.exit.clone(),
                    )
                }),
            }));
        }

        let mut handles = Vec::with_capacity(self.vcpus.len());
        for vcpu in self.vcpus.drain(..) {
            let exit = self.exit.clone();
            let on_stop = Box::new(move |_id: u8, result: &Result<VcpuStopReason, _>| {
                let reason = match result {
                    Ok(VcpuStopReason::Stopped) => return,
                    Ok(VcpuStopReason::Reset) | Ok(VcpuStopReason::TripleFault) => {
                        ExitReason::Reset
                    }
                    Ok(VcpuStopReason::PowerOff) | Ok(VcpuStopReason::Halted) => {
                        ExitReason::PowerOff
                    }
                    Err(_) => ExitReason::Stopped,
                };
                exit.request(reason);
            });
            match VcpuHandle::spawn(vcpu, self.handler.clone(), on_stop) {
                Ok(handle) => handles.push(handle),
                Err(e) => {
                    self.exit.request(ExitReason::Stopped);
                    stop_all(handles);
                    return Err(e.into());
                }
            }
        }

        let mut loop_error = None;
        while self.exit.reason().is_none() {
            if let Err(e) = manager.run() {
                loop_error = Some(VmmError::EventLoop(format!("{e:?}")));
                break;
            }
        }
        let vcpu_error = stop_all(handles);
        if let Some(coalesced) = &self.coalesced {
            coalesced.ring.drain(&*self.handler);
        }
        let _ = self.serial_flusher.flush_pending();
        if let Some(e) = vcpu_error {
            return Err(e.into());
        }
        if let Some(e) = loop_error {
            return Err(e);
        }
        Ok(self.exit.reason().unwrap_or(ExitReason::Stopped))
    }
}

/// Makes the guest's writes to the serial data port coalesced: a line of
/// output then costs one VM exit instead of one per byte. Every vCPU
/// replays the ring before handling its next exit (so a polling driver
/// sees its bytes in order), and while the guest enables the
/// transmitter-empty interrupt a timer replays it from the event loop.
/// Returns `None` where the host cannot coalesce port I/O.
fn coalesce_serial_output(
    vm: &Vm,
    vcpus: &mut [Vcpu],
    devices: &LegacyDevices,
) -> Result<Option<CoalescedSerial>, VmmError> {
    use kindling_devices::legacy::COM1_PORT;
    let device_err = |reason: String| VmmError::Device {
        device: "serial port",
        reason,
    };
    let Some(first) = vcpus.first() else {
        return Ok(None);
    };
    if !vm.register_coalesced_pio(COM1_PORT as u16, 1)? {
        return Ok(None);
    }
    let ring = Arc::new(CoalescedRing::map(first)?);
    for vcpu in vcpus.iter_mut() {
        vcpu.attach_coalesced_ring(ring.clone());
    }
    let timer = Arc::new(Mutex::new(
        kindling_devices::nonblocking_timer()
            .map_err(|e| device_err(format!("cannot create its drain timer: {e}")))?,
    ));
    let watch_timer = timer.clone();
    devices
        .serial
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .set_tx_interrupt_watch(Box::new(move |enabled| {
            let mut timer = watch_timer.lock().unwrap_or_else(|p| p.into_inner());
            // A timer that cannot be armed leaves replay to vCPU exits.
            let _ = if enabled {
                timer.reset(SERIAL_DRAIN_PERIOD, Some(SERIAL_DRAIN_PERIOD))
            } else {
                timer.clear()
            };
        }));
    Ok(Some(CoalescedSerial { ring, timer }))
}

/// Writes the ACPI tables describing the vCPUs and the legacy devices, and
/// the reset-vector stub that Linux's BIOS-reboot fallback jumps to on a
/// hardware-reduced ACPI platform; returns the RSDP address.
fn setup_acpi(
    memory: &GuestMemoryMmap,
    vcpus: u8,
    virtio: &[kindling_boot::VirtioMmioDescription],
) -> Result<u64, VmmError> {
    kindling_boot::write_reset_vector(memory)?;
    use kindling_devices::legacy::{
        ACPI_RESET_PORT, ACPI_RESET_VALUE, ACPI_S5_SLEEP_TYPE, ACPI_SLEEP_CONTROL_PORT,
        ACPI_SLEEP_STATUS_PORT,
    };
    let mut acpi = kindling_boot::AcpiConfig::new(vcpus);
    acpi.virtio_mmio = virtio.to_vec();
    acpi.pm = kindling_boot::AcpiPmDescription {
        sleep_control_port: ACPI_SLEEP_CONTROL_PORT,
        sleep_status_port: ACPI_SLEEP_STATUS_PORT,
        reset_port: ACPI_RESET_PORT,
        reset_value: ACPI_RESET_VALUE,
        s5_sleep_type: ACPI_S5_SLEEP_TYPE,
    };
    Ok(kindling_boot::setup_acpi(memory, &acpi)?)
}

/// Stops and joins every vCPU; returns the first vCPU error.
fn stop_all(handles: Vec<VcpuHandle>) -> Option<kindling_vcpu::VcpuError> {
    for handle in &handles {
        handle.stop();
    }
    let mut first_error = None;
    for handle in handles {
        let (_vcpu, result) = handle.join();
        if let (Err(e), None) = (result, &first_error) {
            first_error = Some(e);
        }
    }
    first_error
}
