//! Restoring a microVM from a snapshot, in any process.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kindling_devices::legacy::{
    AcpiPmDevice, BootTimer, BootTimerRestoreArgs, BootTimerState, BufferedOutput, CmosRtc,
    CoalescedSerial, I8042Device, I8042RestoreArgs, SerialDevice, SerialRestoreArgs, StartTime,
};
use kindling_devices::{Bus, BusExitHandler, VmExitHandle};
use kindling_memory::layout::{I8042_IRQ, SERIAL_IRQ};
use kindling_memory::{restore_guest_memory, GuestRam, MemoryConfig, Persist, ResourceAllocator};
use kindling_vcpu::x86_64::cpu_compat::check_compatible;
use kindling_vcpu::{Kvm, Vcpu, VcpuRestoreArgs, Vm, VmOptions, VmRestoreArgs};
use kindling_virtio::block::{Block, BlockRestoreArgs};
use kindling_virtio::net::{Net, NetRestoreArgs};
use kindling_virtio::rng::Entropy;
use kindling_virtio::vsock::{Vsock, VsockRestoreArgs};
use kindling_virtio::{MmioTransport, MmioTransportRestoreArgs, VirtioDevice};

use super::state::{MicrovmState, VirtioDeviceState, VirtioSlotState};
use super::{decode_state, SnapshotError, MAX_STATE_FILE_SIZE};
use crate::device_manager::{irq_line, LegacyDevices};
use crate::devices::VirtioKind;
use crate::virtio_devices::{allocate_window, attach_one};
use crate::vmm::{serial_output, Parts};
use crate::{SerialConfig, UserSubscriber, Vmm, VmmDevices, VmmError};

/// Where a restored VM's memory comes from (Firecracker's `mem_backend`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemBackend {
    /// Map the memory file `MAP_PRIVATE`: nothing is read up front, pages
    /// fault in from the page cache on first touch, and every VM restored
    /// from one file shares its clean pages.
    File(PathBuf),
    /// Anonymous memory registered with userfaultfd and handed to the page
    /// fault handler listening on this Unix socket (Firecracker's
    /// protocol), which fills pages on first touch.
    Uffd(PathBuf),
}

/// Names a device of the snapshot among those of its kind (a disk, a
/// network interface).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceRef {
    /// The device's position among the snapshot's devices of its kind (the
    /// guest's vda, or its first network interface, is 0).
    Index(usize),
    /// The device's name in the snapshot: a disk's (`disk 0`, ...) or a
    /// network interface's `iface_id` (`eth0`, ...).
    Id(String),
}

/// Names a disk of the snapshot (see [`DeviceRef`]).
pub type DriveRef = DeviceRef;

impl std::fmt::Display for DeviceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceRef::Index(index) => write!(f, "{index}"),
            DeviceRef::Id(id) => f.write_str(id),
        }
    }
}

impl DeviceRef {
    /// `N` is an index, anything else an id.
    fn parse(s: &str) -> Self {
        match s.parse() {
            Ok(index) => DeviceRef::Index(index),
            Err(_) => DeviceRef::Id(s.to_string()),
        }
    }
}

/// Attaches a network interface to another TAP at restore (Firecracker's
/// `network_overrides`): the snapshot's TAP is not opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetOverride {
    /// Which interface: its index among the snapshot's network interfaces
    /// or its `iface_id`.
    pub iface: DeviceRef,
    /// The TAP interface to open instead.
    pub tap: String,
}

impl std::str::FromStr for NetOverride {
    type Err = String;

    /// Parses `N=TAP` (an interface index) or `IFACE_ID=TAP`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('=') {
            Some((iface, tap)) if !iface.is_empty() && !tap.is_empty() => Ok(Self {
                iface: DeviceRef::parse(iface),
                tap: tap.to_string(),
            }),
            _ => Err(format!("'{s}' is not IFACE=TAP")),
        }
    }
}

/// Opens another image for a disk at restore (Firecracker's drive
/// overrides). The image must have the capacity the guest saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskOverride {
    /// Which disk.
    pub drive: DriveRef,
    /// The image to open instead of the one the snapshot names.
    pub path: PathBuf,
}

impl std::str::FromStr for DiskOverride {
    type Err = String;

    /// Parses `N=PATH` (a disk index) or `NAME=PATH`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((drive, path)) = s.split_once('=') else {
            return Err(format!("'{s}' is not DRIVE=PATH"));
        };
        if drive.is_empty() || path.is_empty() {
            return Err(format!("'{s}' is not DRIVE=PATH"));
        }
        Ok(Self {
            drive: DeviceRef::parse(drive),
            path: path.into(),
        })
    }
}

/// How to restore a microVM (Firecracker's `PUT /snapshot/load`:
/// `snapshot_path`, `mem_backend`, `resume_vm`, drive, network and vsock
/// overrides).
pub struct RestoreConfig {
    /// The state file.
    pub state_path: PathBuf,
    /// Guest memory: the snapshot's memory file (for a diff snapshot, the
    /// base with the diff applied: [`apply_diff_snapshot`](super::apply_diff_snapshot)).
    pub memory: MemBackend,
    /// Other images for some disks.
    pub disk_overrides: Vec<DiskOverride>,
    /// Other TAPs for some network interfaces (the others reopen the TAP
    /// they had, by name).
    pub net_overrides: Vec<NetOverride>,
    /// Another Unix socket path for the vsock device to listen on (`None`:
    /// the path it had, which must be free: the saved VM's device removes
    /// its socket when it goes; a socket left by a killed process must be
    /// removed first, as at a normal start).
    pub vsock_override: Option<PathBuf>,
    /// Where the serial console goes now.
    pub serial: SerialConfig,
    /// Start running when [`Vmm::start`] is called (`true`), or start
    /// paused, vCPUs and event loop parked, until resumed (`false`).
    pub resume: bool,
    /// When the VMM process started, for the boot timer.
    pub start_time: StartTime,
    /// Where the boot timer logs.
    pub boot_timer_log: Arc<Mutex<dyn Write + Send>>,
    /// Stop the VM in order on termination signals (see
    /// [`VmConfig::stop_on_signals`](crate::VmConfig::stop_on_signals)).
    pub stop_on_signals: bool,
    /// The seccomp filters installed on the VMM's threads (see
    /// [`VmConfig::seccomp`](crate::VmConfig::seccomp)).
    pub seccomp: crate::seccomp::SeccompPolicy,
    /// Put the debug-exit port (0xf4) on the restored VM, as
    /// [`VmConfig::debug_exit`](crate::VmConfig::debug_exit): off by
    /// default; a snapshot does not record it.
    pub debug_exit: bool,
}

impl std::fmt::Debug for RestoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreConfig")
            .field("state_path", &self.state_path)
            .field("memory", &self.memory)
            .field("disk_overrides", &self.disk_overrides)
            .field("net_overrides", &self.net_overrides)
            .field("vsock_override", &self.vsock_override)
            .field("serial", &self.serial)
            .field("resume", &self.resume)
            .field("stop_on_signals", &self.stop_on_signals)
            .field("seccomp", &self.seccomp)
            .field("debug_exit", &self.debug_exit)
            .finish_non_exhaustive()
    }
}

impl RestoreConfig {
    /// Restores `state_path` with memory from `memory`, serial output on
    /// standard output, no overrides, resumed on start.
    pub fn new(state_path: impl Into<PathBuf>, memory: MemBackend) -> Self {
        Self {
            state_path: state_path.into(),
            memory,
            disk_overrides: Vec::new(),
            net_overrides: Vec::new(),
            vsock_override: None,
            serial: SerialConfig::Stdout,
            resume: true,
            start_time: StartTime::now(),
            boot_timer_log: Arc::new(Mutex::new(std::io::stderr())),
            stop_on_signals: false,
            seccomp: crate::seccomp::SeccompPolicy::Off,
            debug_exit: false,
        }
    }
}

fn file_err(
    op: &'static str,
    what: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> SnapshotError {
    let path = path.to_path_buf();
    move |source| SnapshotError::File {
        op,
        what,
        path,
        source,
    }
}

/// Reads and decodes a state file, refusing one larger than any state
/// file Kindling writes before reading it.
pub fn load_state(path: &Path) -> Result<MicrovmState, SnapshotError> {
    let file = File::open(path).map_err(file_err("open", "state file", path))?;
    let len = file
        .metadata()
        .map_err(file_err("stat", "state file", path))?
        .len();
    let format_err = |source| SnapshotError::Format {
        path: path.to_path_buf(),
        source,
    };
    if len > MAX_STATE_FILE_SIZE {
        return Err(format_err(super::SnapshotFormatError::TooLarge { len }));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    std::io::Read::read_to_end(
        &mut std::io::Read::take(&file, MAX_STATE_FILE_SIZE + 1),
        &mut bytes,
    )
    .map_err(file_err("read", "state file", path))?;
    let state: MicrovmState = decode_state(&bytes).map_err(format_err)?;
    Ok(state)
}

/// Layers a diff snapshot's memory file onto its base's memory file, so
/// that `base_mem` becomes the memory of the diff snapshot
/// (`diff_state_path` is the diff's state file, which says which pages
/// the diff holds). Restore the diff's state file with `base_mem`
/// afterwards. Returns the bytes copied.
pub fn apply_diff_snapshot(
    diff_state_path: &Path,
    base_mem: &Path,
    diff_mem: &Path,
) -> Result<u64, SnapshotError> {
    let state = load_state(diff_state_path)?;
    state.validate()?;
    if state.memory_file.kind != super::SnapshotKind::Diff {
        return Err(SnapshotError::InvalidState {
            reason: format!(
                "{} is the state of a full snapshot, not of a diff",
                diff_state_path.display()
            ),
        });
    }
    let dirty = state.memory_file.dirty_bitmap(state.memory.size_mib)?;
    let base = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(base_mem)
        .map_err(file_err("open", "base memory file", base_mem))?;
    let diff = File::open(diff_mem).map_err(file_err("open", "diff memory file", diff_mem))?;
    let expected = state.memory.size_mib << 20;
    let actual = base
        .metadata()
        .map_err(file_err("stat", "base memory file", base_mem))?
        .len();
    if actual < expected {
        return Err(SnapshotError::Memory {
            path: base_mem.to_path_buf(),
            source: kindling_memory::MemorySnapshotError::FileTooSmall { expected, actual },
        });
    }
    kindling_memory::apply_diff(&base, &diff, &dirty).map_err(|source| SnapshotError::Memory {
        path: diff_mem.to_path_buf(),
        source,
    })
}

fn restore_err<E: std::error::Error + Send + Sync + 'static>(
    part: String,
) -> impl FnOnce(E) -> SnapshotError {
    move |e| SnapshotError::Restore {
        part,
        source: Box::new(e),
    }
}

/// Checks every virtio device is where the allocator puts it, resolves the
/// drive overrides and returns each disk's image path (by slot).
fn check_layout(
    state: &MicrovmState,
    overrides: &[DiskOverride],
) -> Result<Vec<Option<PathBuf>>, VmmError> {
    let mut allocator = ResourceAllocator::new().map_err(|source| VmmError::Allocate {
        device: "resource allocator".into(),
        source,
    })?;
    let mut paths = Vec::with_capacity(state.virtio.len());
    for slot in &state.virtio {
        let (base, irq) = allocate_window(&slot.name, &mut allocator)?;
        if (base, irq) != (slot.base, slot.irq) {
            return Err(SnapshotError::Layout {
                device: slot.name.clone(),
                found_base: slot.base,
                found_irq: slot.irq,
                expected_base: base,
                expected_irq: irq,
            }
            .into());
        }
        paths.push(match &slot.device {
            VirtioDeviceState::Block { path, .. } => Some(path.clone()),
            _ => None,
        });
    }
    let disks: Vec<usize> = (0..state.virtio.len())
        .filter(|&i| paths[i].is_some())
        .collect();
    for o in overrides {
        let slot = match &o.drive {
            DriveRef::Index(index) => disks.get(*index).copied(),
            DriveRef::Id(id) => disks.iter().copied().find(|&i| state.virtio[i].name == *id),
        };
        let Some(slot) = slot else {
            let names: Vec<String> = disks
                .iter()
                .enumerate()
                .map(|(n, &i)| format!("{n} '{}'", state.virtio[i].name))
                .collect();
            return Err(SnapshotError::UnknownDrive {
                drive: o.drive.to_string(),
                disks: if names.is_empty() {
                    "no disks".into()
                } else {
                    names.join(", ")
                },
            }
            .into());
        };
        paths[slot] = Some(o.path.clone());
    }
    Ok(paths)
}

/// Resolves the network overrides to a TAP name per slot (`None`: the
/// saved TAP), and checks a vsock override has a device to apply to.
fn resolve_net_overrides(
    slots: &[VirtioSlotState],
    net_overrides: &[NetOverride],
    vsock_override: Option<&Path>,
) -> Result<Vec<Option<String>>, SnapshotError> {
    let nets: Vec<(usize, &str)> = slots
        .iter()
        .enumerate()
        .filter_map(|(i, slot)| match &slot.device {
            VirtioDeviceState::Net { iface_id, .. } => Some((i, iface_id.as_str())),
            _ => None,
        })
        .collect();
    let mut taps = vec![None; slots.len()];
    for o in net_overrides {
        let found = match &o.iface {
            DeviceRef::Index(index) => nets.get(*index),
            DeviceRef::Id(id) => nets.iter().find(|(_, iface)| iface == id),
        };
        let Some(&(slot, _)) = found else {
            let names: Vec<String> = nets
                .iter()
                .enumerate()
                .map(|(n, (_, iface))| format!("{n} '{iface}'"))
                .collect();
            return Err(SnapshotError::UnknownNet {
                iface: o.iface.to_string(),
                nets: if names.is_empty() {
                    "no network interfaces".into()
                } else {
                    names.join(", ")
                },
            });
        };
        if taps[slot].is_some() {
            return Err(SnapshotError::DuplicateOverride {
                what: "network interface",
                device: slots[slot].name.clone(),
            });
        }
        taps[slot] = Some(o.tap.clone());
    }
    if let Some(path) = vsock_override {
        if !slots
            .iter()
            .any(|slot| matches!(slot.device, VirtioDeviceState::Vsock(_)))
        {
            return Err(SnapshotError::NoVsock {
                path: path.to_path_buf(),
            });
        }
    }
    Ok(taps)
}

/// Creates guest memory for the snapshot from `backend`.
fn restore_memory(
    backend: &MemBackend,
    size_mib: u64,
) -> Result<(GuestRam, Option<super::uffd::UffdSession>), VmmError> {
    let config = MemoryConfig {
        size_mib,
        backing: kindling_memory::Backing::Anonymous,
    };
    match backend {
        MemBackend::File(path) => {
            let file = File::open(path).map_err(file_err("open", "memory file", path))?;
            let ram =
                restore_guest_memory(&config, file).map_err(|source| SnapshotError::Memory {
                    path: path.clone(),
                    source,
                })?;
            Ok((ram, None))
        }
        MemBackend::Uffd(socket) => {
            let (ram, session) =
                super::uffd::restore_with_uffd(&config, socket).map_err(SnapshotError::Uffd)?;
            Ok((ram, Some(session)))
        }
    }
}

impl Vmm {
    /// Restores a microVM from a snapshot: ready to [`Vmm::start`]
    /// (running, or paused when `config.resume` is false) or
    /// [`Vmm::run`].
    ///
    /// Everything is checked before anything runs: the state file's
    /// container (magic, version, checksum), the state's consistency
    /// (vCPU count, a diff bitmap that fits memory, device types, each
    /// virtio device at the window and line this VMM would give it), the
    /// host CPU (vendor and every feature the guest was shown), the memory
    /// file's size, each disk's capacity, each queue against guest
    /// memory, each override against the snapshot's devices, each TAP and
    /// the vsock socket path as the devices open them. Any failure is an
    /// error and nothing is left running.
    ///
    /// Network interfaces reopen their TAP (or an override's); a frame the
    /// device held is delivered first. The vsock device listens again (on
    /// its path or the override) with no connection and sends the guest a
    /// transport reset. Disks reopen on the I/O engine they had, with their
    /// rate limits (token buckets full).
    ///
    /// Guest memory is mapped, not read: the cost does not depend on the
    /// guest's size.
    #[cfg(target_arch = "x86_64")]
    pub fn restore(config: RestoreConfig) -> Result<Self, VmmError> {
        let state = load_state(&config.state_path)?;
        state.validate()?;
        let defaults = VmOptions::default();
        if (state.memory.tss_address, state.memory.identity_map_address)
            != (defaults.tss_address, defaults.identity_map_address)
        {
            return Err(SnapshotError::InvalidState {
                reason: format!(
                    "KVM's TSS at {:#x} and identity map at {:#x}, not where this VMM puts them",
                    state.memory.tss_address, state.memory.identity_map_address
                ),
            }
            .into());
        }
        let disk_paths = check_layout(&state, &config.disk_overrides)?;
        let taps = resolve_net_overrides(
            &state.virtio,
            &config.net_overrides,
            config.vsock_override.as_deref(),
        )?;

        let kvm = Kvm::new()?;
        if state.vcpus.len() > kvm.max_vcpus() {
            return Err(kindling_vcpu::VmError::TooManyVcpus {
                requested: state.vcpus.len(),
                max: kvm.max_vcpus(),
            }
            .into());
        }
        let host_cpuid = host_cpuid(&kvm);
        for vcpu in &state.vcpus {
            check_compatible(&vcpu.cpuid, &host_cpuid).map_err(|source| SnapshotError::Cpu {
                id: vcpu.id,
                source,
            })?;
        }

        let (memory, uffd) = restore_memory(&config.memory, state.memory.size_mib)?;
        let options = VmOptions {
            dirty_log: state.memory.track_dirty_pages,
            ..defaults
        };
        let vm = Vm::restore(
            VmRestoreArgs {
                kvm: &kvm,
                memory: &memory.memory,
                options,
            },
            &state.vm,
        )
        .map_err(restore_err("VM".into()))?;

        let exit = VmExitHandle::new().map_err(|source| VmmError::EventFd {
            what: "VM exit event".into(),
            source,
        })?;
        let (serial_out, stdin_input) = serial_output(config.serial)?;
        let (serial_out, serial_flusher) =
            BufferedOutput::new(serial_out).map_err(|source| VmmError::EventFd {
                what: "serial port's output timer".into(),
                source,
            })?;
        let mut pio = Bus::new();
        let mut mmio = Bus::new();
        let legacy = restore_legacy(
            &vm,
            &state,
            &exit,
            Box::new(serial_out),
            config.start_time,
            config.boot_timer_log,
        )?;
        legacy.place(&mut pio, &mut mmio, &exit, config.debug_exit)?;

        let mut subscribers: Vec<UserSubscriber> = Vec::new();
        let mut slots = Vec::with_capacity(state.virtio.len());
        let mut disks = Vec::new();
        let mut entropy = None;
        let mut nets = Vec::new();
        let mut vsock = None;
        for ((slot, path), tap) in state.virtio.iter().zip(disk_paths).zip(taps) {
            let (device, kind): (Arc<Mutex<dyn VirtioDevice>>, VirtioKind) =
                match (&slot.device, path) {
                    (VirtioDeviceState::Block { state: block, .. }, Some(path)) => {
                        let device = Block::restore(BlockRestoreArgs::Path(path.clone()), block)
                            .map_err(restore_err(slot.name.clone()))?;
                        let device = Arc::new(Mutex::new(device));
                        disks.push(device.clone());
                        (
                            device.clone(),
                            VirtioKind::Block {
                                device,
                                path,
                                read_only: block.read_only,
                            },
                        )
                    }
                    (VirtioDeviceState::Entropy(rng), _) => {
                        let device = Arc::new(Mutex::new(
                            Entropy::restore((), rng).map_err(restore_err(slot.name.clone()))?,
                        ));
                        entropy.get_or_insert_with(|| device.clone());
                        (device.clone(), VirtioKind::Entropy(device))
                    }
                    (VirtioDeviceState::Net { iface_id, state }, _) => {
                        let args = match tap {
                            Some(tap) => NetRestoreArgs::OverrideTap(tap),
                            None => NetRestoreArgs::SameTap,
                        };
                        let device = Arc::new(Mutex::new(
                            Net::restore(args, state).map_err(restore_err(slot.name.clone()))?,
                        ));
                        nets.push((iface_id.clone(), device.clone()));
                        (
                            device.clone(),
                            VirtioKind::Net {
                                device,
                                iface_id: iface_id.clone(),
                            },
                        )
                    }
                    (VirtioDeviceState::Vsock(saved), _) => {
                        let args = VsockRestoreArgs {
                            uds_path: config.vsock_override.clone(),
                        };
                        let device = Arc::new(Mutex::new(
                            Vsock::restore(args, saved).map_err(restore_err(slot.name.clone()))?,
                        ));
                        if vsock.is_some() {
                            return Err(SnapshotError::InvalidState {
                                reason: format!("the {} is a second vsock device", slot.name),
                            }
                            .into());
                        }
                        vsock = Some(device.clone());
                        (device.clone(), VirtioKind::Vsock(device))
                    }
                    (VirtioDeviceState::Block { .. }, None) => {
                        // check_layout gives every disk a path.
                        return Err(SnapshotError::InvalidState {
                            reason: format!("the {} has no image", slot.name),
                        }
                        .into());
                    }
                };
            let memory_for_queues = memory.memory.clone();
            let transport_state = &slot.transport;
            let (subscriber, slot) = attach_one(
                slot.name.clone(),
                slot.base,
                slot.irq,
                kind,
                &vm,
                &mut mmio,
                |line| {
                    MmioTransport::restore(
                        MmioTransportRestoreArgs {
                            memory: memory_for_queues,
                            device,
                            line,
                        },
                        transport_state,
                    )
                },
            )?;
            subscribers.push(Box::new(subscriber));
            slots.push(slot);
        }

        let mut vcpus = Vec::with_capacity(state.vcpus.len());
        for (id, saved) in state.vcpus.iter().enumerate() {
            let vcpu = Vcpu::restore(
                VcpuRestoreArgs {
                    vm: &vm,
                    id: id as u8,
                },
                saved,
            )
            .map_err(restore_err(format!("vCPU {id}")))?;
            vcpus.push(vcpu);
        }
        let coalesced = CoalescedSerial::setup(&vm, &mut vcpus, &legacy.serial)?;
        Vmm::assemble(Parts {
            vcpus,
            devices: VmmDevices {
                legacy,
                disks,
                entropy,
                vsock,
                net: nets,
                virtio: slots,
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
            console_escape: None,
            vm: Arc::new(vm),
            kvm: Arc::new(kvm),
            memory,
            start_paused: !config.resume,
            uffd,
        })
    }
}

/// What this host can show a guest: KVM's supported CPUID, with the host
/// CPU's own feature bits added. (Some hosts, such as PVM nested guests,
/// show vCPUs the host CPU's features while `KVM_GET_SUPPORTED_CPUID`
/// reports fewer; a feature the host CPU has runs in a restored guest.)
fn host_cpuid(kvm: &Kvm) -> kindling_vcpu::kvm_bindings::CpuId {
    let mut cpuid = kvm.supported_cpuid().clone();
    for entry in cpuid.as_mut_slice() {
        let leaf = entry.function;
        // Only the basic and extended feature leaves the compatibility
        // check looks at.
        if !matches!(leaf, 0x1 | 0x7 | 0xd | 0x8000_0001) {
            continue;
        }
        // Leaves past the maximum return zeroes or the highest leaf, which
        // only adds bits to a check that already has KVM's.
        let native = std::arch::x86_64::__cpuid_count(leaf, entry.index);
        entry.eax |= if leaf == 0xd { native.eax } else { 0 };
        entry.ebx |= native.ebx;
        entry.ecx |= native.ecx;
        entry.edx |= native.edx;
    }
    cpuid
}

/// Rebuilds the legacy devices from their states, with new interrupt
/// lines on `vm`.
fn restore_legacy(
    vm: &Vm,
    state: &MicrovmState,
    exit: &VmExitHandle,
    serial_out: Box<dyn Write + Send>,
    start: StartTime,
    log: Arc<Mutex<dyn Write + Send>>,
) -> Result<LegacyDevices, VmmError> {
    let saved = &state.legacy;
    let serial = SerialDevice::restore(
        SerialRestoreArgs {
            irq: irq_line(vm, SERIAL_IRQ, "serial port")?,
            out: serial_out,
        },
        &saved.serial,
    )
    .map_err(restore_err("serial port".into()))?;
    let i8042 = I8042Device::restore(
        I8042RestoreArgs {
            irq: Box::new(irq_line(vm, I8042_IRQ, "i8042")?),
            exit: exit.clone(),
        },
        &saved.i8042,
    )
    .map_err(restore_err("i8042".into()))?;
    let rtc = CmosRtc::restore((), &saved.rtc).map_err(restore_err("CMOS RTC".into()))?;
    let acpi_pm = AcpiPmDevice::restore(exit.clone(), &saved.acpi_pm)
        .map_err(restore_err("ACPI PM registers".into()))?;
    let boot_timer = BootTimer::restore(BootTimerRestoreArgs { start, log }, &BootTimerState {})
        .map_err(restore_err("boot timer".into()))?;
    Ok(LegacyDevices {
        serial: Arc::new(Mutex::new(serial)),
        i8042: Arc::new(Mutex::new(i8042)),
        boot_timer: Arc::new(Mutex::new(boot_timer)),
        rtc: Arc::new(Mutex::new(rtc)),
        acpi_pm: Arc::new(Mutex::new(acpi_pm)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_overrides_parse() {
        let o: DiskOverride = "0=/img/a.ext4".parse().unwrap();
        assert_eq!(o.drive, DriveRef::Index(0));
        assert_eq!(o.path, PathBuf::from("/img/a.ext4"));
        let o: DiskOverride = "disk 1=b.img".parse().unwrap();
        assert_eq!(o.drive, DriveRef::Id("disk 1".into()));
        assert!("nopath".parse::<DiskOverride>().is_err());
        assert!("=x".parse::<DiskOverride>().is_err());
        assert!("1=".parse::<DiskOverride>().is_err());
    }

    #[test]
    fn net_overrides_parse() {
        let o: NetOverride = "1=tap7".parse().unwrap();
        assert_eq!((o.iface, o.tap.as_str()), (DeviceRef::Index(1), "tap7"));
        let o: NetOverride = "eth0=tap8".parse().unwrap();
        assert_eq!(o.iface, DeviceRef::Id("eth0".into()));
        for bad in ["tap", "=tap", "0=", ""] {
            let e = bad.parse::<NetOverride>().unwrap_err();
            assert!(e.contains("is not IFACE=TAP"), "{e}");
        }
    }

    fn slot(name: &str, device: VirtioDeviceState) -> VirtioSlotState {
        VirtioSlotState {
            name: name.into(),
            base: 0,
            irq: 0,
            transport: kindling_virtio::MmioTransportState {
                device_id: device.device_id().0,
                status: 0,
                device_features_sel: 0,
                driver_features_sel: 0,
                driver_features: 0,
                driver_features_high: false,
                queue_sel: 0,
                shm_sel: 0,
                queues: Vec::new(),
                interrupt: Default::default(),
                activated: false,
            },
            device,
        }
    }

    fn net(iface: &str) -> VirtioDeviceState {
        VirtioDeviceState::Net {
            iface_id: iface.into(),
            state: kindling_virtio::net::NetState {
                config: kindling_virtio::net::NetConfig::new(format!("tap-{iface}")),
                device_features: 0,
                held_frame: None,
            },
        }
    }

    #[test]
    fn net_overrides_resolve_by_index_or_id_and_unknown_ones_are_refused() {
        let slots = vec![
            slot(
                "entropy device",
                VirtioDeviceState::Entropy(kindling_virtio::rng::EntropyState { queue_size: 8 }),
            ),
            slot("network interface eth0", net("eth0")),
            slot("network interface eth1", net("eth1")),
        ];
        let o = |s: &str| s.parse::<NetOverride>().unwrap();
        let taps = resolve_net_overrides(&slots, &[o("1=tapB"), o("eth0=tapA")], None).unwrap();
        assert_eq!(taps, vec![None, Some("tapA".into()), Some("tapB".into())]);
        let e = resolve_net_overrides(&slots, &[o("2=x")], None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the network override '2' names no network interface of the snapshot (it has 0 'eth0', 1 'eth1')"
        );
        let e = resolve_net_overrides(&slots, &[o("eth9=x")], None).unwrap_err();
        assert!(e.to_string().contains("'eth9' names no network"), "{e}");
        let e = resolve_net_overrides(&slots, &[o("0=x"), o("eth0=y")], None).unwrap_err();
        assert!(
            e.to_string()
                .contains("two overrides name the network interface"),
            "{e}"
        );
        let e = resolve_net_overrides(&slots[..1], &[o("0=x")], None).unwrap_err();
        assert!(
            e.to_string().contains("(it has no network interfaces)"),
            "{e}"
        );
        // A vsock override needs a vsock device.
        let e = resolve_net_overrides(&slots, &[], Some(Path::new("/run/v.sock"))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "a vsock override (/run/v.sock) was given but the snapshot has no vsock device"
        );
    }

    #[test]
    fn network_and_vsock_slots_round_trip_through_the_state_format() {
        let vsock = VirtioDeviceState::Vsock(kindling_virtio::vsock::VsockState {
            guest_cid: 3,
            uds_path: "/run/v.sock".into(),
            queue_sizes: [256; 3],
        });
        let mut with_frame = net("eth0");
        if let VirtioDeviceState::Net { state, .. } = &mut with_frame {
            // A limiter with one bucket unset (JSON leaves it out, the
            // state file must not).
            state.config.rx_rate_limiter = Some(kindling_virtio::rate_limiter::RateLimiterConfig {
                bandwidth: None,
                ops: Some(kindling_virtio::rate_limiter::TokenBucketConfig {
                    size: 5,
                    one_time_burst: 0,
                    refill_time: 10,
                }),
            });
            state.held_frame = Some(kindling_virtio::net::HeldFrame {
                bytes: vec![7; 60],
                charged: true,
            });
        }
        let slots = vec![
            slot("network interface eth0", with_frame),
            slot("vsock device", vsock),
        ];
        let bytes = super::super::encode_state(&slots).unwrap();
        let back: Vec<VirtioSlotState> = decode_state(&bytes).unwrap();
        assert_eq!(format!("{back:?}"), format!("{slots:?}"));
        assert_eq!(back[0].device.device_id(), (1, "network"));
        assert_eq!(back[1].device.device_id(), (19, "vsock"));
        // Any cut is a clear error.
        for cut in [bytes.len() / 2, bytes.len() - 1] {
            assert!(decode_state::<Vec<VirtioSlotState>>(&bytes[..cut]).is_err());
        }
    }
}
