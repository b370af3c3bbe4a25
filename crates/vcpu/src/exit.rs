//! What a vCPU does with guest I/O, and why it stops.

/// Handles the guest accesses that leave KVM: port I/O and MMIO.
///
/// It is called on the vCPU's own thread, so implementations must be cheap
/// and must not block on anything the guest waits for. `data` is the access
/// (1, 2, 4 or 8 bytes); reads fill it, and it arrives zeroed.
pub trait VcpuExitHandler: Send + Sync {
    /// A guest `in` from `port`.
    fn pio_read(&self, port: u16, data: &mut [u8]);
    /// A guest `out` to `port`.
    fn pio_write(&self, port: u16, data: &[u8]);
    /// A guest read from MMIO address `addr`.
    fn mmio_read(&self, addr: u64, data: &mut [u8]);
    /// A guest write to MMIO address `addr`.
    fn mmio_write(&self, addr: u64, data: &[u8]);

    /// A guest `out` that KVM buffered in a coalesced ring (no exit of its
    /// own), replayed now. The default handles it like [`Self::pio_write`];
    /// a handler that counts exits tells the two apart.
    fn coalesced_pio_write(&self, port: u16, data: &[u8]) {
        self.pio_write(port, data);
    }

    /// A guest MMIO write that KVM buffered in a coalesced ring, replayed
    /// now. The default handles it like [`Self::mmio_write`].
    fn coalesced_mmio_write(&self, addr: u64, data: &[u8]) {
        self.mmio_write(addr, data);
    }

    /// Whether the VM is ending (a device asked for power-off, reset or an
    /// exit status, or the host asked it to stop). Checked after every
    /// exit: a vCPU run by a [`VcpuHandle`](crate::VcpuHandle) then stops
    /// with [`VcpuStopReason::Stopped`] instead of running more guest code.
    /// The default never ends the VM from here.
    fn vm_ending(&self) -> bool {
        false
    }
}

/// Why a vCPU stopped running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcpuStopReason {
    /// The host asked it to stop.
    Stopped,
    /// The guest triple-faulted (`KVM_EXIT_SHUTDOWN`).
    TripleFault,
    /// KVM reported a guest reset request (`KVM_SYSTEM_EVENT_RESET`).
    Reset,
    /// KVM reported a guest power-off (`KVM_SYSTEM_EVENT_SHUTDOWN`).
    PowerOff,
    /// The vCPU executed `hlt` and KVM returned to user space (only
    /// without an in-kernel irqchip).
    Halted,
}
