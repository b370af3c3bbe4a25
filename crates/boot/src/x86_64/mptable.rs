//! The Intel MultiProcessor table (MP specification 1.4), through which a
//! guest without ACPI finds its CPUs, its IOAPIC and the ISA interrupt
//! routing.
//!
//! The table goes at [`EBDA_START`](kindling_memory::layout::EBDA_START), inside the last KiB of base memory that
//! Linux scans for the floating pointer: the 16-byte floating pointer
//! structure first, then the configuration table it points to.

use std::mem::size_of;

use kindling_memory::layout::{IOAPIC_PINS, IOAPIC_START, LAPIC_START};
use kindling_memory::GuestMemoryMmap;
use vm_memory::{ByteValued, Bytes, GuestAddress};

use crate::x86_64::{BootError, BootLayout};

/// The largest vCPU count an MP table can describe here: APIC ids 0 to 253,
/// with the IOAPIC taking the next id and 0xff meaning "all".
pub const MAX_CPUS: u8 = 254;

const SPEC_REV: u8 = 4;
const OEM_ID: [u8; 8] = *b"KINDLING";
const PRODUCT_ID: [u8; 12] = *b"MICROVM     ";
const BUS_TYPE_ISA: [u8; 6] = *b"ISA   ";
const ISA_BUS_ID: u8 = 0;

const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;

const CPU_ENABLED: u8 = 1 << 0;
const CPU_BOOT_PROCESSOR: u8 = 1 << 1;
/// Local APIC version reported for every vCPU (KVM's).
const LAPIC_VERSION: u8 = 0x14;
/// CPUID signature: family 6, model 0, stepping 0.
const CPU_SIGNATURE: u32 = 6 << 8;
/// CPUID.1:EDX feature flags: FPU and an on-chip APIC.
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);
/// IOAPIC version reported (KVM's).
const IOAPIC_VERSION: u8 = 0x11;
const IOAPIC_ENABLED: u8 = 1;

const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;
/// Polarity and trigger mode "conform to the bus".
const INT_FLAGS_CONFORM: u16 = 0;
/// Destination "every local APIC".
const ALL_LAPICS: u8 = 0xff;

/// MP floating pointer structure.
#[repr(C, packed)]
#[derive(Debug, Default, Clone, Copy)]
struct FloatingPointer {
    signature: [u8; 4],
    config_table: u32,
    length_paragraphs: u8,
    spec_rev: u8,
    checksum: u8,
    features: [u8; 5],
}

/// MP configuration table header.
#[repr(C, packed)]
#[derive(Debug, Default, Clone, Copy)]
struct ConfigHeader {
    signature: [u8; 4],
    length: u16,
    spec_rev: u8,
    checksum: u8,
    oem_id: [u8; 8],
    product_id: [u8; 12],
    oem_table: u32,
    oem_table_size: u16,
    entry_count: u16,
    lapic_address: u32,
    ext_table_length: u16,
    ext_table_checksum: u8,
    reserved: u8,
}

/// Processor entry.
#[repr(C, packed)]
#[derive(Debug, Default, Clone, Copy)]
struct ProcessorEntry {
    entry_type: u8,
    lapic_id: u8,
    lapic_version: u8,
    cpu_flags: u8,
    cpu_signature: u32,
    feature_flags: u32,
    reserved: [u32; 2],
}

/// Bus entry.
#[repr(C, packed)]
#[derive(Debug, Default, Clone, Copy)]
struct BusEntry {
    entry_type: u8,
    bus_id: u8,
    bus_type: [u8; 6],
}

/// I/O APIC entry.
#[repr(C, packed)]
#[derive(Debug, Default, Clone, Copy)]
struct IoApicEntry {
    entry_type: u8,
    apic_id: u8,
    version: u8,
    flags: u8,
    address: u32,
}

/// I/O interrupt assignment and local interrupt assignment entries, which
/// share one layout.
#[repr(C, packed)]
#[derive(Debug, Default, Clone, Copy)]
struct InterruptEntry {
    entry_type: u8,
    interrupt_type: u8,
    flags: u16,
    source_bus: u8,
    source_irq: u8,
    dest_apic: u8,
    dest_pin: u8,
}

// SAFETY: `FloatingPointer` is `repr(C, packed)` and made only of integers
// and integer arrays, so it has no padding and every bit pattern is valid.
unsafe impl ByteValued for FloatingPointer {}
// SAFETY: `ConfigHeader` is `repr(C, packed)` and made only of integers and
// integer arrays, so it has no padding and every bit pattern is valid.
unsafe impl ByteValued for ConfigHeader {}
// SAFETY: `ProcessorEntry` is `repr(C, packed)` and made only of integers
// and integer arrays, so it has no padding and every bit pattern is valid.
unsafe impl ByteValued for ProcessorEntry {}
// SAFETY: `BusEntry` is `repr(C, packed)` and made only of integers and
// integer arrays, so it has no padding and every bit pattern is valid.
unsafe impl ByteValued for BusEntry {}
// SAFETY: `IoApicEntry` is `repr(C, packed)` and made only of integers, so
// it has no padding and every bit pattern is valid.
unsafe impl ByteValued for IoApicEntry {}
// SAFETY: `InterruptEntry` is `repr(C, packed)` and made only of integers,
// so it has no padding and every bit pattern is valid.
unsafe impl ByteValued for InterruptEntry {}

const _: () = assert!(size_of::<FloatingPointer>() == 16);
const _: () = assert!(size_of::<ConfigHeader>() == 44);
const _: () = assert!(size_of::<ProcessorEntry>() == 20);
const _: () = assert!(size_of::<BusEntry>() == 8);
const _: () = assert!(size_of::<IoApicEntry>() == 8);
const _: () = assert!(size_of::<InterruptEntry>() == 8);

/// The value that makes `bytes` sum to zero (mod 256) when added.
fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |sum, b| sum.wrapping_add(*b))
        .wrapping_neg()
}

/// Size in bytes of the MP table (floating pointer included) for
/// `num_cpus` vCPUs.
pub fn mptable_size(num_cpus: u8) -> usize {
    size_of::<FloatingPointer>()
        + size_of::<ConfigHeader>()
        + usize::from(num_cpus) * size_of::<ProcessorEntry>()
        + size_of::<BusEntry>()
        + size_of::<IoApicEntry>()
        + IOAPIC_PINS as usize * size_of::<InterruptEntry>()
        + 2 * size_of::<InterruptEntry>()
}

fn build(num_cpus: u8, addr: u64, limit: u64) -> Result<Vec<u8>, BootError> {
    if num_cpus == 0 || num_cpus > MAX_CPUS {
        return Err(BootError::InvalidCpuCount {
            num_cpus,
            max: MAX_CPUS,
        });
    }
    let size = mptable_size(num_cpus);
    if addr.saturating_add(size as u64) > limit {
        return Err(BootError::MpTableTooLarge { size, addr, limit });
    }

    let mut entries: Vec<u8> = Vec::with_capacity(size);
    let mut count: u16 = 0;
    let mut push = |bytes: &[u8]| {
        entries.extend_from_slice(bytes);
        count += 1;
    };
    for id in 0..num_cpus {
        let boot = if id == 0 { CPU_BOOT_PROCESSOR } else { 0 };
        push(
            ProcessorEntry {
                entry_type: ENTRY_PROCESSOR,
                lapic_id: id,
                lapic_version: LAPIC_VERSION,
                cpu_flags: CPU_ENABLED | boot,
                cpu_signature: CPU_SIGNATURE,
                feature_flags: CPU_FEATURES,
                reserved: [0; 2],
            }
            .as_slice(),
        );
    }
    push(
        BusEntry {
            entry_type: ENTRY_BUS,
            bus_id: ISA_BUS_ID,
            bus_type: BUS_TYPE_ISA,
        }
        .as_slice(),
    );
    let ioapic_id = num_cpus;
    push(
        IoApicEntry {
            entry_type: ENTRY_IOAPIC,
            apic_id: ioapic_id,
            version: IOAPIC_VERSION,
            flags: IOAPIC_ENABLED,
            address: IOAPIC_START as u32,
        }
        .as_slice(),
    );
    for pin in 0..IOAPIC_PINS as u8 {
        push(
            InterruptEntry {
                entry_type: ENTRY_IO_INTERRUPT,
                interrupt_type: INT_TYPE_INT,
                flags: INT_FLAGS_CONFORM,
                source_bus: ISA_BUS_ID,
                source_irq: pin,
                dest_apic: ioapic_id,
                dest_pin: pin,
            }
            .as_slice(),
        );
    }
    for (interrupt_type, lint) in [(INT_TYPE_EXTINT, 0), (INT_TYPE_NMI, 1)] {
        push(
            InterruptEntry {
                entry_type: ENTRY_LOCAL_INTERRUPT,
                interrupt_type,
                flags: INT_FLAGS_CONFORM,
                source_bus: ISA_BUS_ID,
                source_irq: 0,
                dest_apic: ALL_LAPICS,
                dest_pin: lint,
            }
            .as_slice(),
        );
    }

    let table_addr = addr + size_of::<FloatingPointer>() as u64;
    let mut header = ConfigHeader {
        signature: *b"PCMP",
        length: (size_of::<ConfigHeader>() + entries.len()) as u16,
        spec_rev: SPEC_REV,
        oem_id: OEM_ID,
        product_id: PRODUCT_ID,
        entry_count: count,
        lapic_address: LAPIC_START as u32,
        ..Default::default()
    };
    header.checksum = checksum(header.as_slice()).wrapping_add(checksum(&entries));

    let mut pointer = FloatingPointer {
        signature: *b"_MP_",
        config_table: table_addr as u32,
        length_paragraphs: 1,
        spec_rev: SPEC_REV,
        ..Default::default()
    };
    pointer.checksum = checksum(pointer.as_slice());

    let mut table = Vec::with_capacity(size);
    table.extend_from_slice(pointer.as_slice());
    table.extend_from_slice(header.as_slice());
    table.extend_from_slice(&entries);
    Ok(table)
}

/// The bytes of the MP table for `num_cpus` vCPUs, laid out to be written
/// at [`EBDA_START`](kindling_memory::layout::EBDA_START).
///
/// It lists one enabled processor per vCPU (APIC ids `0..num_cpus`, the
/// first one the bootstrap processor), one ISA bus, one IOAPIC (id
/// `num_cpus`, at [`IOAPIC_START`]) whose pin `n` receives ISA IRQ `n` for
/// every one of its [`IOAPIC_PINS`] pins, and ExtINT on LINT0 and NMI on
/// LINT1 of every local APIC.
///
/// `num_cpus` must be between 1 and [`MAX_CPUS`].
pub fn mptable_bytes(num_cpus: u8) -> Result<Vec<u8>, BootError> {
    mptable_bytes_with_layout(num_cpus, &BootLayout::default())
}

/// Like [`mptable_bytes`], laid out to be written at `layout.ebda_start`
/// and to end by `layout.acpi_start`.
pub fn mptable_bytes_with_layout(num_cpus: u8, layout: &BootLayout) -> Result<Vec<u8>, BootError> {
    layout.validate()?;
    build(num_cpus, layout.ebda_start, layout.acpi_start)
}

/// Writes the MP table for `num_cpus` vCPUs at [`EBDA_START`](kindling_memory::layout::EBDA_START).
///
/// # Example
///
/// ```
/// # use kindling_boot::setup_mptable;
/// # use kindling_memory::{create_guest_memory, MemoryConfig};
/// use vm_memory::{Bytes, GuestAddress};
///
/// let ram = create_guest_memory(&MemoryConfig { size_mib: 16, backing: Default::default() }).unwrap();
/// setup_mptable(&ram.memory, 2).unwrap();
/// let mut signature = [0u8; 4];
/// ram.memory.read_slice(&mut signature, GuestAddress(0x9fc00)).unwrap();
/// assert_eq!(&signature, b"_MP_");
/// ```
pub fn setup_mptable(mem: &GuestMemoryMmap, num_cpus: u8) -> Result<(), BootError> {
    setup_mptable_with_layout(mem, num_cpus, &BootLayout::default())
}

/// Like [`setup_mptable`], at `layout.ebda_start`.
pub fn setup_mptable_with_layout(
    mem: &GuestMemoryMmap,
    num_cpus: u8,
    layout: &BootLayout,
) -> Result<(), BootError> {
    let table = mptable_bytes_with_layout(num_cpus, layout)?;
    mem.write_slice(&table, GuestAddress(layout.ebda_start))
        .map_err(BootError::guest_memory(
            "MP table",
            layout.ebda_start,
            table.len() as u64,
        ))
}

#[cfg(test)]
mod tests {
    use kindling_memory::layout::{ACPI_START, EBDA_START};

    use super::*;
    use crate::x86_64::test_images::guest_memory;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
    }

    fn read<T: ByteValued + Default>(bytes: &[u8], at: usize) -> T {
        let mut value = T::default();
        value
            .as_mut_slice()
            .copy_from_slice(&bytes[at..at + size_of::<T>()]);
        value
    }

    /// What a guest learns from a table, parsed the way Linux parses it.
    #[derive(Debug, Default)]
    struct Parsed {
        cpus: Vec<(u8, u8)>,
        buses: Vec<[u8; 6]>,
        ioapics: Vec<(u8, u32)>,
        io_interrupts: Vec<InterruptEntry>,
        local_interrupts: Vec<InterruptEntry>,
    }

    /// Parses a table written at `base`.
    fn parse(table: &[u8], base: u64) -> Parsed {
        let fp: FloatingPointer = read(table, 0);
        assert_eq!(&fp.signature, b"_MP_");
        assert_eq!(fp.length_paragraphs, 1);
        assert_eq!(fp.spec_rev, 4);
        assert_eq!(fp.features, [0; 5], "a configuration table is present");
        assert_eq!(sum(&table[..16]), 0);

        let start = (u64::from(fp.config_table) - base) as usize;
        let header: ConfigHeader = read(table, start);
        assert_eq!(&header.signature, b"PCMP");
        assert_eq!(header.spec_rev, 4);
        assert_eq!(&header.oem_id, b"KINDLING");
        assert_eq!(u64::from(header.lapic_address), LAPIC_START);
        let end = start + usize::from(header.length);
        assert_eq!(end, table.len());
        assert_eq!(sum(&table[start..end]), 0);

        let mut parsed = Parsed::default();
        let mut at = start + size_of::<ConfigHeader>();
        let mut last_type = 0;
        for _ in 0..header.entry_count {
            let entry_type = table[at];
            assert!(entry_type >= last_type, "entries are sorted by type");
            last_type = entry_type;
            at += match entry_type {
                ENTRY_PROCESSOR => {
                    let p: ProcessorEntry = read(table, at);
                    assert_eq!(p.lapic_version, LAPIC_VERSION);
                    assert_eq!({ p.feature_flags } & (1 << 9), 1 << 9);
                    assert_eq!(({ p.cpu_signature } >> 8) & 0xf, 6);
                    parsed.cpus.push((p.lapic_id, p.cpu_flags));
                    20
                }
                ENTRY_BUS => {
                    parsed.buses.push(read::<BusEntry>(table, at).bus_type);
                    8
                }
                ENTRY_IOAPIC => {
                    let io: IoApicEntry = read(table, at);
                    assert_eq!(io.flags, 1);
                    assert_eq!(io.version, 0x11);
                    parsed.ioapics.push((io.apic_id, io.address));
                    8
                }
                ENTRY_IO_INTERRUPT => {
                    parsed.io_interrupts.push(read(table, at));
                    8
                }
                ENTRY_LOCAL_INTERRUPT => {
                    parsed.local_interrupts.push(read(table, at));
                    8
                }
                other => panic!("unknown entry type {other}"),
            };
        }
        assert_eq!(at, end, "entry_count matches the length");
        parsed
    }

    #[test]
    fn checksums_and_counts_for_several_cpu_counts() {
        for num_cpus in [1u8, 2, 3, 8, 64, 128, 253, 254] {
            let table = mptable_bytes(num_cpus).unwrap();
            assert_eq!(table.len(), mptable_size(num_cpus));
            let parsed = parse(&table, EBDA_START);
            assert_eq!(parsed.cpus.len(), usize::from(num_cpus));
            for (i, &(id, flags)) in parsed.cpus.iter().enumerate() {
                assert_eq!(usize::from(id), i);
                let expected = if i == 0 { 3 } else { 1 };
                assert_eq!(flags, expected, "cpu {i}");
            }
            assert_eq!(parsed.buses, vec![*b"ISA   "]);
            assert_eq!(parsed.ioapics, vec![(num_cpus, IOAPIC_START as u32)]);
            assert_eq!(parsed.io_interrupts.len(), IOAPIC_PINS as usize);
            for (irq, entry) in parsed.io_interrupts.iter().enumerate() {
                assert_eq!(entry.interrupt_type, INT_TYPE_INT);
                assert_eq!(usize::from(entry.source_irq), irq);
                assert_eq!(usize::from(entry.dest_pin), irq);
                assert_eq!(entry.dest_apic, num_cpus);
                assert_eq!(entry.source_bus, 0);
            }
            let lints: Vec<(u8, u8, u8)> = parsed
                .local_interrupts
                .iter()
                .map(|e| (e.interrupt_type, e.dest_apic, e.dest_pin))
                .collect();
            assert_eq!(
                lints,
                vec![(INT_TYPE_EXTINT, 0xff, 0), (INT_TYPE_NMI, 0xff, 1)]
            );
        }
    }

    #[test]
    fn written_table_parses_back_from_guest_memory() {
        let mem = guest_memory(16 << 20);
        setup_mptable(&mem, 4).unwrap();
        let mut table = vec![0u8; mptable_size(4)];
        mem.read_slice(&mut table, GuestAddress(EBDA_START))
            .unwrap();
        assert_eq!(parse(&table, EBDA_START).cpus.len(), 4);
        // The floating pointer is on a 16-byte boundary in the last KiB of
        // base memory, where Linux looks for it.
        assert_eq!(EBDA_START % 16, 0);
        assert_eq!(EBDA_START, 639 * 1024);
        // The largest table stays below the ACPI area.
        assert!(EBDA_START + mptable_size(MAX_CPUS) as u64 <= ACPI_START);
    }

    #[test]
    fn invalid_cpu_counts() {
        for num_cpus in [0u8, 255] {
            let err = mptable_bytes(num_cpus).unwrap_err();
            assert!(
                matches!(err, BootError::InvalidCpuCount { num_cpus: n, max: 254 } if n == num_cpus),
                "{err}"
            );
        }
    }

    #[test]
    fn table_that_does_not_fit() {
        let err = build(2, EBDA_START, EBDA_START + 100).unwrap_err();
        assert!(
            matches!(err, BootError::MpTableTooLarge { size, addr: EBDA_START, .. } if size == mptable_size(2)),
            "{err}"
        );
    }

    #[test]
    fn memory_without_the_ebda_is_an_error() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x9_0000)]).unwrap();
        let err = setup_mptable(&mem, 1).unwrap_err();
        assert!(
            matches!(
                err,
                BootError::GuestMemory {
                    addr: EBDA_START,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn checksum_makes_the_sum_zero() {
        let bytes = [1u8, 2, 3, 250];
        assert_eq!(sum(&bytes).wrapping_add(checksum(&bytes)), 0);
        assert_eq!(checksum(&[]), 0);
    }
}
