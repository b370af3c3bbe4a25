//! The KVM VM: memory slots, irqchip, PIT, irqfds and ioeventfds.

use std::sync::Arc;

use kvm_bindings::{
    kvm_clock_data, kvm_irqchip, kvm_pit_config, kvm_pit_state2, kvm_userspace_memory_region,
    KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use serde::{Deserialize, Serialize};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use kindling_memory::{DirtyBitmap, GuestMemoryMmap};

use crate::{Kvm, Vcpu, VmError};

/// How to create a [`Vm`]. The defaults follow kindling-memory's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmOptions {
    /// Register guest RAM with KVM's dirty logging, so that
    /// [`Vm::dirty_pages`] reports the guest's own writes (needed for diff
    /// snapshots; it costs a write-protection fault on the first write to
    /// each page after every read of the log).
    pub dirty_log: bool,
    /// Where KVM puts its three-page TSS (Intel VMX needs it; it must not
    /// be RAM or a device window).
    pub tss_address: u64,
    /// Where KVM puts its identity-map page for real mode on Intel (one
    /// page, not RAM).
    pub identity_map_address: u64,
}

#[cfg(target_arch = "x86_64")]
impl Default for VmOptions {
    fn default() -> Self {
        use kindling_memory::layout::{KVM_IDENTITY_MAP_START, KVM_TSS_START};
        Self {
            dirty_log: false,
            tss_address: KVM_TSS_START,
            identity_map_address: KVM_IDENTITY_MAP_START,
        }
    }
}

/// One registered memory slot.
#[derive(Debug, Clone, Copy)]
struct Slot {
    id: u32,
    guest_addr: u64,
    size: u64,
}

/// The VM-wide state KVM holds: the in-kernel interrupt controllers, the
/// PIT and the guest clock. Saved and restored through the VM's
/// [`Persist`](kindling_memory::Persist) implementation (see
/// [`VmRestoreArgs`](crate::VmRestoreArgs) for what a restore needs and how
/// the clock behaves).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmState {
    /// The master 8259 PIC.
    pub pic_master: kvm_irqchip,
    /// The slave 8259 PIC.
    pub pic_slave: kvm_irqchip,
    /// The IOAPIC.
    pub ioapic: kvm_irqchip,
    /// The 8254 PIT.
    pub pit: kvm_pit_state2,
    /// The kvmclock reference.
    pub clock: kvm_clock_data,
}

/// A KVM VM with its in-kernel interrupt controllers.
#[derive(Debug)]
pub struct Vm {
    fd: VmFd,
    max_vcpus: usize,
    next_slot: u32,
    slots: Vec<Slot>,
    dirty_log: bool,
    options: VmOptions,
    /// What a vCPU snapshot needs from `/dev/kvm`, kept so that a vCPU can
    /// save itself without it.
    msrs_to_save: Arc<[u32]>,
    xsave2_size: usize,
}

fn setup(step: &'static str) -> impl FnOnce(vmm_sys_util::errno::Error) -> VmError {
    move |source| VmError::Setup { step, source }
}

impl Vm {
    /// Creates a VM over `memory` with the in-kernel IOAPIC/PIC/LAPICs and
    /// PIT.
    ///
    /// The memory slots are registered before the irqchip exists: on the
    /// nested KVM hosts Kindling is tested on, registering a slot after
    /// `KVM_CREATE_IRQCHIP` waits for an expedited SRCU grace period and
    /// costs about 6 ms, against 0.06 ms before it.
    #[cfg(target_arch = "x86_64")]
    pub fn new(kvm: &Kvm, memory: &GuestMemoryMmap) -> Result<Self, VmError> {
        Self::with_options(kvm, memory, &VmOptions::default())
    }

    /// Creates a VM as [`Vm::new`] does, with explicit options (dirty
    /// logging, KVM's TSS and identity-map addresses).
    #[cfg(target_arch = "x86_64")]
    pub fn with_options(
        kvm: &Kvm,
        memory: &GuestMemoryMmap,
        options: &VmOptions,
    ) -> Result<Self, VmError> {
        let fd = kvm.fd().create_vm().map_err(setup("create the VM"))?;
        let mut vm = Self {
            fd,
            max_vcpus: kvm.max_vcpus(),
            next_slot: 0,
            slots: Vec::new(),
            dirty_log: options.dirty_log,
            options: *options,
            msrs_to_save: kvm.msrs_to_save().into(),
            xsave2_size: kvm.xsave2_size(),
        };
        vm.register_memory(memory)?;
        let tss = usize::try_from(options.tss_address).map_err(|_| VmError::Setup {
            step: "set the TSS address",
            source: vmm_sys_util::errno::Error::new(libc::EINVAL),
        })?;
        vm.fd
            .set_tss_address(tss)
            .map_err(setup("set the TSS address"))?;
        vm.fd
            .set_identity_map_address(options.identity_map_address)
            .map_err(setup("set the identity map address"))?;
        vm.fd
            .create_irq_chip()
            .map_err(setup("create the in-kernel irqchip"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.fd
            .create_pit2(pit)
            .map_err(setup("create the in-kernel PIT"))?;
        Ok(vm)
    }

    /// Registers every region of `memory` as a KVM memory slot (guest RAM
    /// given to [`Vm::new`] is already registered; this is for more).
    pub fn register_memory(&mut self, memory: &GuestMemoryMmap) -> Result<(), VmError> {
        for region in memory.iter() {
            let slot = self.next_slot;
            let guest_addr = region.start_addr().0;
            let size = region.len();
            let host_addr =
                memory
                    .get_host_address(region.start_addr())
                    .map_err(|_| VmError::MemorySlot {
                        slot,
                        guest_addr,
                        size,
                        source: vmm_sys_util::errno::Error::new(libc::EFAULT),
                    })? as u64;
            let mem_region = kvm_userspace_memory_region {
                slot,
                guest_phys_addr: guest_addr,
                memory_size: size,
                userspace_addr: host_addr,
                flags: if self.dirty_log {
                    kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES
                } else {
                    0
                },
            };
            // SAFETY: the host range belongs to `memory`'s mapping, which
            // the caller keeps alive as long as the VM (the VMM holds both),
            // and slots never overlap because `memory`'s regions do not.
            unsafe { self.fd.set_user_memory_region(mem_region) }.map_err(|source| {
                VmError::MemorySlot {
                    slot,
                    guest_addr,
                    size,
                    source,
                }
            })?;
            self.slots.push(Slot {
                id: slot,
                guest_addr,
                size,
            });
            self.next_slot += 1;
        }
        Ok(())
    }

    /// The options the VM was created with.
    pub fn options(&self) -> &VmOptions {
        &self.options
    }

    /// Whether the memory slots log the guest's writes.
    pub fn dirty_log_enabled(&self) -> bool {
        self.dirty_log
    }

    /// The pages of `memory` written since the last call: the guest's own
    /// writes from KVM's dirty log (when the VM was created with
    /// [`VmOptions::dirty_log`]) merged with the VMM's writes through
    /// `vm-memory`. Both sources are reset, so the next call reports only
    /// newer writes. Without dirty logging, guest writes are not seen:
    /// check [`Vm::dirty_log_enabled`].
    pub fn dirty_pages(&self, memory: &GuestMemoryMmap) -> Result<DirtyBitmap, VmError> {
        let mut dirty = DirtyBitmap::take_vmm_writes(memory);
        if !self.dirty_log {
            return Ok(dirty);
        }
        for region in dirty.regions.iter_mut() {
            let Some(slot) = self
                .slots
                .iter()
                .find(|s| s.guest_addr == region.guest_addr && s.size == region.len)
            else {
                return Err(VmError::DirtyLog {
                    guest_addr: region.guest_addr,
                    source: vmm_sys_util::errno::Error::new(libc::ENOENT),
                });
            };
            let size = usize::try_from(slot.size).map_err(|_| VmError::DirtyLog {
                guest_addr: slot.guest_addr,
                source: vmm_sys_util::errno::Error::new(libc::EOVERFLOW),
            })?;
            let log = self
                .fd
                .get_dirty_log(slot.id, size)
                .map_err(|source| VmError::DirtyLog {
                    guest_addr: slot.guest_addr,
                    source,
                })?;
            region.merge(&log);
        }
        Ok(dirty)
    }

    /// Creates vCPU `id`.
    pub fn create_vcpu(&self, id: u8) -> Result<Vcpu, VmError> {
        if usize::from(id) >= self.max_vcpus {
            return Err(VmError::TooManyVcpus {
                requested: usize::from(id) + 1,
                max: self.max_vcpus,
            });
        }
        let fd = self
            .fd
            .create_vcpu(u64::from(id))
            .map_err(|source| VmError::CreateVcpu { id, source })?;
        Ok(Vcpu::new(
            id,
            fd,
            self.msrs_to_save.clone(),
            self.xsave2_size,
        ))
    }

    /// The largest vCPU count this VM accepts.
    pub fn max_vcpus(&self) -> usize {
        self.max_vcpus
    }

    /// Makes writes to `event` raise interrupt `gsi` inside the kernel.
    pub fn register_irqfd(&self, event: &EventFd, gsi: u32) -> Result<(), VmError> {
        self.fd
            .register_irqfd(event, gsi)
            .map_err(|source| VmError::Irqfd { gsi, source })
    }

    /// Makes guest writes to MMIO address `addr` (any value) signal `event`
    /// inside the kernel instead of exiting to user space.
    pub fn register_mmio_ioevent(&self, event: &EventFd, addr: u64) -> Result<(), VmError> {
        self.fd
            .register_ioevent(event, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(|source| VmError::Ioeventfd { addr, source })
    }

    /// Makes guest writes of `value` (4 bytes) to MMIO address `addr` signal
    /// `event` inside the kernel.
    pub fn register_mmio_ioevent_value(
        &self,
        event: &EventFd,
        addr: u64,
        value: u32,
    ) -> Result<(), VmError> {
        self.fd
            .register_ioevent(event, &IoEventAddress::Mmio(addr), value)
            .map_err(|source| VmError::Ioeventfd { addr, source })
    }

    /// Makes guest port writes to `[port, port + len)` coalesced: KVM
    /// buffers them in the [`CoalescedRing`](crate::CoalescedRing) instead
    /// of exiting. Returns `Ok(false)` when the host KVM cannot coalesce
    /// port I/O (the writes then simply exit as usual).
    pub fn register_coalesced_pio(&self, port: u16, len: u32) -> Result<bool, VmError> {
        if !self.fd.check_extension(kvm_ioctls::Cap::CoalescedPio) {
            return Ok(false);
        }
        self.fd
            .register_coalesced_mmio(IoEventAddress::Pio(u64::from(port)), len)
            .map_err(setup("register a coalesced port-I/O zone"))?;
        Ok(true)
    }

    /// The underlying kvm-ioctls VM handle.
    pub fn fd(&self) -> &VmFd {
        &self.fd
    }
}
