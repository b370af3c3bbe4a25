//! The error type of every boot step.

use std::io;

use crate::x86_64::KernelFormat;

/// Everything that can go wrong while loading a guest and writing its boot
/// tables.
///
/// Kernel and initrd images are untrusted input: every malformed image maps
/// to one of these variants, never to a panic.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// Reading or seeking an image failed on the host.
    #[error("cannot read the {what}: {source}")]
    Io {
        /// What was being read ("kernel image", "initrd", ...).
        what: &'static str,
        /// The I/O error.
        source: io::Error,
    },
    /// The image is shorter than its own headers say it is.
    #[error("{what} is truncated: it needs {needed} bytes but the image has {actual}")]
    Truncated {
        /// The part that is cut off ("ELF header", "ELF segment 2", ...).
        what: String,
        /// Bytes the image must have for that part to be complete.
        needed: u64,
        /// Bytes the image has.
        actual: u64,
    },
    /// The kernel image is neither an ELF file nor a bzImage.
    #[error(
        "kernel image is not an ELF vmlinux or a bzImage: bad magic (first bytes {found:02x?})"
    )]
    BadMagic {
        /// The first (up to four) bytes of the image.
        found: Vec<u8>,
    },
    /// The ELF kernel is not a 64-bit (ELFCLASS64) file.
    #[error("ELF kernel is not 64-bit: EI_CLASS is {class} (expected 2, ELFCLASS64)")]
    Not64Bit {
        /// The `EI_CLASS` byte of the ELF header.
        class: u8,
    },
    /// The ELF kernel is not little-endian.
    #[error("ELF kernel is not little-endian: EI_DATA is {data} (expected 1, ELFDATA2LSB)")]
    NotLittleEndian {
        /// The `EI_DATA` byte of the ELF header.
        data: u8,
    },
    /// The ELF kernel is built for another machine.
    #[error("ELF kernel is not an x86_64 image: e_machine is {machine} (expected 62, EM_X86_64)")]
    NotX86_64 {
        /// The `e_machine` field of the ELF header.
        machine: u16,
    },
    /// The ELF kernel's headers are inconsistent.
    #[error("invalid ELF kernel: {reason}")]
    InvalidElf {
        /// What is wrong.
        reason: String,
    },
    /// The bzImage's setup header is inconsistent.
    #[error("invalid bzImage kernel: {reason}")]
    InvalidBzImage {
        /// What is wrong.
        reason: String,
    },
    /// The bzImage speaks a boot protocol older than the one Kindling needs.
    #[error("bzImage boot protocol {:#06x} is too old: at least {:#06x} is required", .version, .required)]
    ProtocolTooOld {
        /// The `version` field of the setup header.
        version: u16,
        /// The oldest version accepted.
        required: u16,
    },
    /// The bzImage has no 64-bit entry point (`XLF_KERNEL_64` is clear).
    #[error(
        "bzImage has no 64-bit entry point: XLF_KERNEL_64 is clear in xloadflags {xloadflags:#06x}"
    )]
    No64BitEntry {
        /// The `xloadflags` field of the setup header.
        xloadflags: u16,
    },
    /// The kernel asks to be loaded below high memory, over the boot tables.
    #[error("kernel wants to be loaded at {addr:#x}, below high memory at {himem:#x}")]
    KernelBelowHimem {
        /// The requested load address.
        addr: u64,
        /// The lowest address a kernel may occupy.
        himem: u64,
    },
    /// The kernel needs memory that is not guest RAM.
    #[error("kernel does not fit in guest memory: it needs [{start:#x}, {end:#x}) and guest RAM ends at {ram_end:#x} (or has a hole there)")]
    DoesNotFit {
        /// First address the kernel needs.
        start: u64,
        /// End (exclusive) of what the kernel needs; `u64::MAX` if that
        /// overflows.
        end: u64,
        /// End (exclusive) of guest RAM.
        ram_end: u64,
    },
    /// linux-loader refused the image after Kindling's own checks passed.
    #[error("linux-loader cannot load the {format} kernel: {source}")]
    Loader {
        /// The detected format.
        format: KernelFormat,
        /// The loader's error.
        source: linux_loader::loader::Error,
    },
    /// The initrd is empty.
    #[error("initrd is empty")]
    InitrdEmpty,
    /// The initrd is larger than the memory the kernel lets it use.
    #[error("initrd of {size} bytes is too large: at most {max} bytes fit below {limit:#x}")]
    InitrdTooLarge {
        /// Size of the initrd.
        size: u64,
        /// Largest initrd that fits above high memory and below `limit`.
        max: u64,
        /// End (exclusive) of the memory the initrd may occupy.
        limit: u64,
    },
    /// The initrd would fit in guest RAM, but only over the kernel.
    #[error("initrd of {size} bytes cannot be placed without overlapping the kernel: the kernel ends at {kernel_end:#x} and the initrd must end below {limit:#x}")]
    InitrdOverlapsKernel {
        /// Size of the initrd.
        size: u64,
        /// End (exclusive) of the kernel.
        kernel_end: u64,
        /// End (exclusive) of the memory the initrd may occupy.
        limit: u64,
    },
    /// The command line is longer than the kernel accepts.
    #[error("kernel command line is too long: {len} bytes with its NUL, the kernel accepts at most {max}")]
    CmdlineTooLong {
        /// Length including the terminating NUL.
        len: usize,
        /// Largest length accepted, including the NUL.
        max: usize,
    },
    /// The command line contains a NUL byte, which would cut it short.
    #[error("kernel command line contains a NUL byte at offset {position}")]
    CmdlineContainsNul {
        /// Offset of the first NUL.
        position: usize,
    },
    /// The PVH boot protocol was asked for but the kernel has no PVH note.
    #[error("the PVH boot protocol was requested but the {format} kernel has no PVH entry note")]
    PvhUnavailable {
        /// The kernel's format.
        format: KernelFormat,
    },
    /// Guest memory has more RAM ranges than the memory map can describe.
    #[error("guest memory needs {count} memory map entries, at most {max} fit")]
    TooManyE820Entries {
        /// Entries needed.
        count: usize,
        /// Entries that fit.
        max: usize,
    },
    /// The vCPU count cannot be described in an MP table.
    #[error("cannot describe {num_cpus} vCPUs in the MP table: 1 to {max} are supported")]
    InvalidCpuCount {
        /// The requested count.
        num_cpus: u8,
        /// The largest count supported.
        max: u8,
    },
    /// The MP table does not fit between its start and its limit.
    #[error("MP table of {size} bytes at {addr:#x} does not fit below {limit:#x}")]
    MpTableTooLarge {
        /// Size of the table, floating pointer included.
        size: usize,
        /// Where it starts.
        addr: u64,
        /// The address it must stay below.
        limit: u64,
    },
    /// The vCPU count cannot be described in the ACPI MADT.
    #[error("cannot describe {num_cpus} vCPUs in the ACPI MADT: 1 to {max} are supported")]
    AcpiInvalidCpuCount {
        /// The requested count.
        num_cpus: u8,
        /// The largest count supported.
        max: u8,
    },
    /// There are more virtio-mmio devices than the DSDT can name.
    #[error(
        "cannot describe {count} virtio-mmio devices in the ACPI DSDT: at most {max} are supported"
    )]
    AcpiTooManyDevices {
        /// Devices asked for.
        count: usize,
        /// Devices that can be named.
        max: usize,
    },
    /// A virtio-mmio device's MMIO window is empty or runs past the end of
    /// the address space.
    #[error("virtio-mmio device {index} has an invalid MMIO window of {size:#x} bytes at {base:#x}: it must be non-empty and end at or below 2^64")]
    AcpiInvalidMmioWindow {
        /// Position of the device in the list.
        index: usize,
        /// Base of the window.
        base: u64,
        /// Size of the window.
        size: u64,
    },
    /// A device's interrupt is not a pin of the IOAPIC the MADT describes.
    #[error("the {device} uses IRQ {irq}, but the IOAPIC only has pins 0 to {max}")]
    AcpiInvalidIrq {
        /// The device ("serial port", "virtio-mmio device 3", ...).
        device: String,
        /// The IRQ asked for.
        irq: u32,
        /// The highest IOAPIC pin.
        max: u32,
    },
    /// A power-management register is at I/O port 0, which ACPI takes to
    /// mean that the register does not exist.
    #[error("the ACPI {register} register cannot be at I/O port 0: ACPI reads address 0 as \"not present\"")]
    AcpiInvalidPmPort {
        /// The register ("sleep control", "sleep status" or "reset").
        register: &'static str,
    },
    /// The `_S5` sleep type does not fit in the 3-bit `SLP_TYP` field.
    #[error("ACPI S5 sleep type {value} does not fit in the 3-bit SLP_TYP field (0 to 7)")]
    AcpiInvalidSleepType {
        /// The sleep type asked for.
        value: u8,
    },
    /// The ACPI tables do not fit in the area reserved for them.
    #[error("ACPI tables of {size} bytes at {addr:#x} do not fit below {limit:#x}")]
    AcpiTablesTooLarge {
        /// Size of all the tables, alignment included.
        size: usize,
        /// Where they start.
        addr: u64,
        /// The address they must stay below.
        limit: u64,
    },
    /// Writing boot data to guest memory failed (the target is not RAM).
    #[error("cannot write the {what} ({len} bytes) to guest memory at {addr:#x}: {source}")]
    GuestMemory {
        /// What was being written.
        what: &'static str,
        /// Guest-physical address of the write.
        addr: u64,
        /// Length of the write.
        len: u64,
        /// The guest memory error.
        source: vm_memory::GuestMemoryError,
    },
    /// The boot layout is unusable (overlapping areas, areas outside RAM).
    #[error(transparent)]
    Layout(#[from] crate::x86_64::LayoutError),
}

impl BootError {
    pub(crate) fn io(what: &'static str) -> impl FnOnce(io::Error) -> BootError {
        move |source| BootError::Io { what, source }
    }

    pub(crate) fn guest_memory(
        what: &'static str,
        addr: u64,
        len: u64,
    ) -> impl FnOnce(vm_memory::GuestMemoryError) -> BootError {
        move |source| BootError::GuestMemory {
            what,
            addr,
            len,
            source,
        }
    }
}
