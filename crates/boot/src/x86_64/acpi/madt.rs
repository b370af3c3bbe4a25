//! The MADT: the local APICs, the IOAPIC and the local APIC NMI line.
//!
//! It states what the MP table states: APIC ids `0..num_cpus`, the IOAPIC
//! with id `num_cpus` and GSIs 0 to 23, ISA IRQ `n` on GSI `n` (the ACPI
//! default, so no interrupt source override), NMI on LINT1.

use acpi_tables::madt::{EnabledStatus, IoApic, ProcessorLocalApic};
use acpi_tables::sdt::Sdt;
use acpi_tables::Aml;
use kindling_memory::layout::{IOAPIC_START, LAPIC_START};

use super::{oem_table_id, OEM_ID, OEM_REVISION};

/// MADT revision of ACPI 6.5.
const MADT_REVISION: u8 = 6;
/// Size of the MADT header: the table header, the local APIC address and
/// the flags.
pub(super) const MADT_HEADER_LEN: usize = 44;
/// MADT flags: no `PCAT_COMPAT`, since a hardware-reduced guest uses no
/// 8259 PIC.
const MADT_FLAGS: u32 = 0;

/// Size of a processor local APIC structure.
pub(super) const LOCAL_APIC_LEN: usize = 8;
/// Size of an I/O APIC structure.
pub(super) const IOAPIC_LEN: usize = 12;
/// Type of a local APIC NMI structure.
const LOCAL_APIC_NMI: u8 = 4;
/// Size of a local APIC NMI structure.
pub(super) const LOCAL_APIC_NMI_LEN: usize = 6;
/// Processor UID meaning "every processor".
const ALL_PROCESSORS: u8 = 0xff;
/// MPS INTI flags: polarity and trigger mode conform to the bus.
const INTI_CONFORMS: u16 = 0;
/// The local APIC input NMI is wired to.
const NMI_LINT: u8 = 1;

/// The local APIC NMI structure for `lint` of the processor with `uid`.
fn local_apic_nmi(uid: u8, flags: u16, lint: u8) -> [u8; LOCAL_APIC_NMI_LEN] {
    let flags = flags.to_le_bytes();
    [
        LOCAL_APIC_NMI,
        LOCAL_APIC_NMI_LEN as u8,
        uid,
        flags[0],
        flags[1],
        lint,
    ]
}

/// The MADT for `num_cpus` vCPUs (checked to be 1 to `MAX_CPUS`).
pub(super) fn madt(num_cpus: u8) -> Vec<u8> {
    let mut madt = Sdt::new(
        *b"APIC",
        MADT_HEADER_LEN as u32,
        MADT_REVISION,
        OEM_ID,
        oem_table_id(b"APIC"),
        OEM_REVISION,
    );
    madt.write_u32(36, LAPIC_START as u32);
    madt.write_u32(40, MADT_FLAGS);

    let mut entries = Vec::with_capacity(
        usize::from(num_cpus) * LOCAL_APIC_LEN + IOAPIC_LEN + LOCAL_APIC_NMI_LEN,
    );
    for id in 0..num_cpus {
        ProcessorLocalApic::new(id, id, EnabledStatus::Enabled).to_aml_bytes(&mut entries);
    }
    IoApic::new(num_cpus, IOAPIC_START as u32, 0).to_aml_bytes(&mut entries);
    entries.extend_from_slice(&local_apic_nmi(ALL_PROCESSORS, INTI_CONFORMS, NMI_LINT));
    madt.append_slice(&entries);
    madt.as_slice().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x86_64::acpi::tests::sum;
    use crate::x86_64::MAX_CPUS;

    /// The MADT's structures as (type, body after type and length).
    fn structures(b: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = MADT_HEADER_LEN;
        while at < b.len() {
            let (kind, len) = (b[at], usize::from(b[at + 1]));
            assert!(len >= 2 && at + len <= b.len(), "structure at {at}");
            out.push((kind, b[at + 2..at + len].to_vec()));
            at += len;
        }
        assert_eq!(at, b.len());
        out
    }

    #[test]
    fn entries_per_cpu_count() {
        for num_cpus in [1u8, 2, 3, 8, 64, 253, MAX_CPUS] {
            let b = madt(num_cpus);
            let n = usize::from(num_cpus);
            assert_eq!(
                b.len(),
                MADT_HEADER_LEN + n * LOCAL_APIC_LEN + IOAPIC_LEN + LOCAL_APIC_NMI_LEN
            );
            assert_eq!(&b[..4], b"APIC");
            assert_eq!(
                u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize,
                b.len()
            );
            assert_eq!(b[8], MADT_REVISION);
            assert_eq!(sum(&b), 0, "checksum for {num_cpus} vCPUs");
            assert_eq!(&b[16..24], b"KINDAPIC");
            assert_eq!(
                u32::from_le_bytes(b[36..40].try_into().unwrap()),
                0xfee0_0000
            );
            assert_eq!(u32::from_le_bytes(b[40..44].try_into().unwrap()), 0);

            let s = structures(&b);
            assert_eq!(s.len(), n + 2);
            for (i, (kind, body)) in s[..n].iter().enumerate() {
                assert_eq!(*kind, 0, "local APIC");
                // UID, APIC id, flags (enabled).
                assert_eq!(body, &[i as u8, i as u8, 1, 0, 0, 0]);
            }
            let (kind, body) = &s[n];
            assert_eq!(*kind, 1, "IOAPIC");
            assert_eq!(body[0], num_cpus, "IOAPIC id after the APIC ids");
            assert_eq!(
                u32::from_le_bytes(body[2..6].try_into().unwrap()),
                0xfec0_0000
            );
            assert_eq!(u32::from_le_bytes(body[6..10].try_into().unwrap()), 0);
            assert_eq!(s[n + 1], (4, vec![0xff, 0, 0, 1]), "NMI on LINT1 of all");
        }
    }
}
