//! One vCPU: set-up, one step of the run loop, state save and restore.

use kvm_bindings::{KVM_EXIT_IO_OUT, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN};
use std::sync::Arc;

use kvm_ioctls::{VcpuExit, VcpuFd};

#[cfg(target_arch = "x86_64")]
use crate::BootEntry;
use crate::{CoalescedRing, Kvm, VcpuError, VcpuExitHandler, VcpuStopReason};

/// A KVM vCPU.
#[derive(Debug)]
pub struct Vcpu {
    id: u8,
    fd: VcpuFd,
    coalesced: Option<Arc<CoalescedRing>>,
    /// The MSRs a snapshot saves (KVM's list, from the VM).
    msrs_to_save: Arc<[u32]>,
    /// KVM's XSAVE area size (`KVM_CAP_XSAVE2`), or 0 if unknown.
    xsave2_size: usize,
}

fn ioctl_err(id: u8, step: &'static str) -> impl FnOnce(vmm_sys_util::errno::Error) -> VcpuError {
    move |source| VcpuError::Ioctl { id, step, source }
}

impl Vcpu {
    pub(crate) fn new(id: u8, fd: VcpuFd, msrs_to_save: Arc<[u32]>, xsave2_size: usize) -> Self {
        Self {
            id,
            fd,
            coalesced: None,
            msrs_to_save,
            xsave2_size,
        }
    }

    /// The MSRs a snapshot of this vCPU saves.
    pub(crate) fn msrs_to_save(&self) -> &[u32] {
        &self.msrs_to_save
    }

    /// KVM's XSAVE area size, or 0 if unknown.
    pub(crate) fn xsave2_size(&self) -> usize {
        self.xsave2_size
    }

    /// Makes [`Vcpu::run_once`] replay the VM's coalesced writes before
    /// handling each exit, so that they stay in order with the exit.
    pub fn attach_coalesced_ring(&mut self, ring: Arc<CoalescedRing>) {
        self.coalesced = Some(ring);
    }

    /// The vCPU index, which is also its APIC id.
    pub fn id(&self) -> u8 {
        self.id
    }

    /// The underlying kvm-ioctls vCPU handle.
    pub fn fd(&self) -> &VcpuFd {
        &self.fd
    }

    /// The underlying kvm-ioctls vCPU handle, mutably (to call `run`
    /// directly, bypassing [`Vcpu::run_once`]).
    pub fn fd_mut(&mut self) -> &mut VcpuFd {
        &mut self.fd
    }

    /// Sets the vCPU up as number `self.id()` of `count`: CPUID, MSRs, FPU
    /// and LAPIC; with `boot`, also the registers of that entry (only the
    /// boot vCPU gets one: the others wait for INIT/SIPI). A [`BootEntry`]
    /// exists only once its GDT and page tables are in guest memory.
    #[cfg(target_arch = "x86_64")]
    pub fn configure(
        &self,
        kvm: &Kvm,
        count: u8,
        boot: Option<BootEntry>,
    ) -> Result<(), VcpuError> {
        use crate::x86_64::{cpuid, lapic, msrs, regs};
        let id = self.id;
        let cpuid = cpuid::normalize(kvm.supported_cpuid(), id, count);
        self.fd
            .set_cpuid2(&cpuid)
            .map_err(ioctl_err(id, "set CPUID"))?;
        let entries = msrs::boot_msr_entries();
        let written = self
            .fd
            .set_msrs(&msrs::to_msrs(&entries))
            .map_err(ioctl_err(id, "set boot MSRs"))?;
        if written < entries.len() {
            return Err(VcpuError::Msr {
                id,
                index: entries[written].index,
                step: "setting boot MSRs",
            });
        }
        self.fd
            .set_fpu(&regs::boot_fpu())
            .map_err(ioctl_err(id, "set the FPU"))?;
        let mut lapic_state = self
            .fd
            .get_lapic()
            .map_err(ioctl_err(id, "read the LAPIC"))?;
        lapic::configure_lint(&mut lapic_state);
        self.fd
            .set_lapic(&lapic_state)
            .map_err(ioctl_err(id, "set the LAPIC"))?;
        if let Some(boot) = boot {
            let sregs = self.fd.get_sregs().map_err(ioctl_err(id, "read sregs"))?;
            let (sregs, boot_regs) = boot.registers(sregs);
            self.fd
                .set_sregs(&sregs)
                .map_err(ioctl_err(id, "set sregs"))?;
            self.fd
                .set_regs(&boot_regs)
                .map_err(ioctl_err(id, "set registers"))?;
        }
        Ok(())
    }

    /// Runs the vCPU until its next exit to user space and handles that
    /// exit. Returns `Some` when the vCPU should stop, `None` to go on
    /// (including after a kick, so the caller can look at its requests).
    pub fn run_once(
        &mut self,
        handler: &dyn VcpuExitHandler,
    ) -> Result<Option<VcpuStopReason>, VcpuError> {
        let id = self.id;
        let result = self.fd.run();
        if let Some(ring) = &self.coalesced {
            ring.drain(handler);
        }
        match result {
            Ok(VcpuExit::IoIn(..)) | Ok(VcpuExit::IoOut(..)) => {
                self.handle_pio(handler);
                Ok(None)
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                data.fill(0);
                handler.mmio_read(addr, data);
                Ok(None)
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                handler.mmio_write(addr, data);
                Ok(None)
            }
            Ok(VcpuExit::Hlt) => Ok(Some(VcpuStopReason::Halted)),
            Ok(VcpuExit::Shutdown) => {
                // What the vCPU was doing is the only clue to a guest crash.
                #[cfg(target_arch = "x86_64")]
                log::warn!("vCPU {id}: triple fault at {}", self.fault_report());
                Ok(Some(VcpuStopReason::TripleFault))
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => match kind {
                KVM_SYSTEM_EVENT_RESET => Ok(Some(VcpuStopReason::Reset)),
                KVM_SYSTEM_EVENT_SHUTDOWN => Ok(Some(VcpuStopReason::PowerOff)),
                other => Err(VcpuError::UnexpectedExit {
                    id,
                    exit: format!("system event {other}"),
                }),
            },
            Ok(VcpuExit::InternalError) => {
                let run = self.fd.get_kvm_run();
                // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so the
                // kernel filled the `internal` member of the union.
                let suberror = unsafe { run.__bindgen_anon_1.internal.suberror };
                Err(VcpuError::InternalError { id, suberror })
            }
            Ok(VcpuExit::FailEntry(reason, _)) => Err(VcpuError::FailEntry { id, reason }),
            Ok(VcpuExit::Intr) => Ok(None),
            Ok(other) => Err(VcpuError::UnexpectedExit {
                id,
                exit: format!("{other:?}"),
            }),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                self.fd.set_kvm_immediate_exit(0);
                Ok(None)
            }
            Err(source) => Err(VcpuError::Run { id, source }),
        }
    }

    /// The registers that say where a vCPU was when it faulted, on one line
    /// (best effort: a register set that cannot be read is left out).
    ///
    /// After a triple fault on an AMD host, KVM has already reset the vCPU
    /// (the VMCB is undefined after a shutdown intercept, so KVM's SVM code
    /// reinitialises it): the registers are then the reset state, and the
    /// report says so instead of pretending to know where the guest was.
    /// On Intel hosts the state at the fault is kept.
    #[cfg(target_arch = "x86_64")]
    pub fn fault_report(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let regs = self.fd.get_regs().ok();
        let sregs = self.fd.get_sregs().ok();
        let reset = match (&regs, &sregs) {
            (Some(r), Some(s)) => is_reset_state(r.rip, s.cs.selector),
            _ => false,
        };
        if let Some(r) = regs {
            let _ = write!(
                out,
                "rip={:#x} rsp={:#x} rflags={:#x} rax={:#x} ",
                r.rip, r.rsp, r.rflags, r.rax
            );
        }
        if let Some(s) = sregs {
            let _ = write!(
                out,
                "cs={:#x} cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x} \
                 idt={:#x}/{:#x} gdt={:#x}/{:#x} tr={:#x} ",
                s.cs.selector,
                s.cr0,
                s.cr2,
                s.cr3,
                s.cr4,
                s.efer,
                s.idt.base,
                s.idt.limit,
                s.gdt.base,
                s.gdt.limit,
                s.tr.base
            );
        }
        if let Ok(e) = self.fd.get_vcpu_events() {
            let _ = write!(
                out,
                "exception={}/{} pending={} error_code={:#x} nmi_pending={}",
                e.exception.nr,
                e.exception.injected,
                e.exception.pending,
                e.exception.error_code,
                e.nmi.pending
            );
        }
        if reset {
            out.push_str(
                " (the reset state: this host's KVM reset the vCPU at the shutdown, \
                 as on AMD, so where the guest faulted is lost)",
            );
        }
        out.trim_end().to_string()
    }

    /// Dispatches a port-I/O exit, one access per element of a string
    /// (`rep ins`/`rep outs`) operation.
    fn handle_pio(&mut self, handler: &dyn VcpuExitHandler) {
        let run = self.fd.get_kvm_run();
        // SAFETY: only called after KVM_RUN returned KVM_EXIT_IO, so the
        // kernel filled the `io` member of the union.
        let io = unsafe { run.__bindgen_anon_1.io };
        let size = usize::from(io.size);
        let len = size * io.count as usize;
        if size == 0 {
            return;
        }
        let base = run as *mut kvm_bindings::kvm_run as *mut u8;
        // SAFETY: the kernel places `count` elements of `size` bytes at
        // `data_offset` inside the kvm_run mapping, which stays mapped while
        // `self.fd` lives; nothing else references that area during this call.
        let data =
            unsafe { std::slice::from_raw_parts_mut(base.add(io.data_offset as usize), len) };
        if u32::from(io.direction) == KVM_EXIT_IO_OUT {
            for element in data.chunks_exact(size) {
                handler.pio_write(io.port, element);
            }
        } else {
            for element in data.chunks_exact_mut(size) {
                element.fill(0);
                handler.pio_read(io.port, element);
            }
        }
    }
}

/// Whether `rip` and the `cs` selector are those of an x86 vCPU just out of
/// reset (or INIT): the first instruction at `0xf000:0xfff0`.
#[cfg(target_arch = "x86_64")]
fn is_reset_state(rip: u64, cs_selector: u16) -> bool {
    rip == 0xfff0 && cs_selector == 0xf000
}
