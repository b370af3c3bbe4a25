//! The RSDP, the XSDT it points to, and telling the kernel where the RSDP
//! is.

use std::mem::offset_of;

use acpi_tables::rsdp::Rsdp;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use kindling_memory::GuestMemoryMmap;
use linux_loader::bootparam::boot_params;
use linux_loader::loader::elf::start_info::hvm_start_info;
use vm_memory::{Bytes, GuestAddress};

use super::{oem_table_id, OEM_ID, OEM_REVISION};
use crate::x86_64::BootError;

/// Size of an ACPI 2.0+ RSDP.
pub(super) const RSDP_LEN: u64 = 36;
/// Size of the common header of a system description table.
const HEADER_LEN: u64 = 36;

/// Size of an XSDT with `entries` table pointers.
pub(super) fn xsdt_len(entries: usize) -> u64 {
    HEADER_LEN + 8 * entries as u64
}

/// The XSDT listing the tables at `tables`.
pub(super) fn xsdt(tables: &[u64]) -> Vec<u8> {
    let mut xsdt = XSDT::new(OEM_ID, oem_table_id(b"XSDT"), OEM_REVISION);
    for &table in tables {
        xsdt.add_entry(table);
    }
    let mut bytes = Vec::new();
    xsdt.to_aml_bytes(&mut bytes);
    bytes
}

/// The revision-2 RSDP pointing to the XSDT at `xsdt_addr` (and to no
/// RSDT).
pub(super) fn rsdp(xsdt_addr: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    Rsdp::new(OEM_ID, xsdt_addr).to_aml_bytes(&mut bytes);
    bytes
}

/// Stores `rsdp` in the `acpi_rsdp_addr` field (offset 0x070) of the zero
/// page at `zero_page`, which must already be written.
///
/// Linux (4.20 and later) then uses that address instead of scanning for
/// the RSDP.
///
/// # Example
///
/// ```
/// # use kindling_boot::{set_acpi_rsdp, setup_acpi, AcpiConfig};
/// # use kindling_memory::{create_guest_memory, MemoryConfig};
/// use vm_memory::{Bytes, GuestAddress};
///
/// let ram = create_guest_memory(&MemoryConfig { size_mib: 16, backing: Default::default() }).unwrap();
/// let rsdp = setup_acpi(&ram.memory, &AcpiConfig::new(1)).unwrap();
/// set_acpi_rsdp(&ram.memory, 0x7000, rsdp).unwrap();
/// assert_eq!(ram.memory.read_obj::<u64>(GuestAddress(0x7000 + 0x70)).unwrap(), rsdp);
/// ```
pub fn set_acpi_rsdp(mem: &GuestMemoryMmap, zero_page: u64, rsdp: u64) -> Result<(), BootError> {
    write_u64(
        mem,
        zero_page.checked_add(offset_of!(boot_params, acpi_rsdp_addr) as u64),
        rsdp,
        "acpi_rsdp_addr of the zero page",
    )
}

/// Stores `rsdp` in the `rsdp_paddr` field of the PVH `hvm_start_info` at
/// `start_info`, which must already be written.
///
/// Linux booted through PVH takes the RSDP from there, and scans for it
/// when the field is zero.
pub fn set_pvh_rsdp(mem: &GuestMemoryMmap, start_info: u64, rsdp: u64) -> Result<(), BootError> {
    write_u64(
        mem,
        start_info.checked_add(offset_of!(hvm_start_info, rsdp_paddr) as u64),
        rsdp,
        "rsdp_paddr of the PVH start info",
    )
}

fn write_u64(
    mem: &GuestMemoryMmap,
    addr: Option<u64>,
    value: u64,
    what: &'static str,
) -> Result<(), BootError> {
    // An address that overflows is as unwritable as one that is not RAM.
    let addr = addr.unwrap_or(u64::MAX);
    mem.write_obj(value, GuestAddress(addr))
        .map_err(BootError::guest_memory(what, addr, 8))
}

#[cfg(test)]
mod tests {
    use kindling_memory::layout::ZERO_PAGE_START;

    use super::*;
    use crate::x86_64::acpi::tests::sum;
    use crate::x86_64::test_images::guest_memory;

    #[test]
    fn rsdp_fields_and_checksums() {
        let bytes = rsdp(0x1234_5678_9abc);
        assert_eq!(bytes.len() as u64, RSDP_LEN);
        assert_eq!(&bytes[..8], b"RSD PTR ");
        assert_eq!(sum(&bytes[..20]), 0, "ACPI 1.0 checksum");
        assert_eq!(sum(&bytes), 0, "extended checksum");
        assert_eq!(&bytes[9..15], b"KINDLG");
        assert_eq!(bytes[15], 2, "revision");
        assert_eq!(&bytes[16..20], &[0; 4], "no RSDT");
        assert_eq!(u32::from_le_bytes(bytes[20..24].try_into().unwrap()), 36);
        assert_eq!(
            u64::from_le_bytes(bytes[24..32].try_into().unwrap()),
            0x1234_5678_9abc
        );
    }

    #[test]
    fn xsdt_fields_and_checksum() {
        for entries in [&[][..], &[0xe0040], &[0xe0040, 0xe0160, 0xe0200]] {
            let bytes = xsdt(entries);
            assert_eq!(bytes.len() as u64, xsdt_len(entries.len()));
            assert_eq!(&bytes[..4], b"XSDT");
            assert_eq!(
                u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize,
                bytes.len()
            );
            assert_eq!(sum(&bytes), 0);
            assert_eq!(&bytes[10..16], b"KINDLG");
            assert_eq!(&bytes[16..24], b"KINDXSDT");
            let listed: Vec<u64> = bytes[36..]
                .chunks(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
                .collect();
            assert_eq!(listed, entries);
        }
    }

    #[test]
    fn rsdp_address_in_the_zero_page_and_start_info() {
        let mem = guest_memory(16 << 20);
        set_acpi_rsdp(&mem, ZERO_PAGE_START, 0xe0000).unwrap();
        let params: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        assert_eq!({ params.acpi_rsdp_addr }, 0xe0000);
        let raw: u64 = mem.read_obj(GuestAddress(ZERO_PAGE_START + 0x70)).unwrap();
        assert_eq!(raw, 0xe0000);

        set_pvh_rsdp(&mem, ZERO_PAGE_START, 0xe0010).unwrap();
        let info: hvm_start_info = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        assert_eq!({ info.rsdp_paddr }, 0xe0010);
        let raw: u64 = mem.read_obj(GuestAddress(ZERO_PAGE_START + 0x20)).unwrap();
        assert_eq!(raw, 0xe0010);
    }

    #[test]
    fn rsdp_address_outside_memory_is_an_error() {
        let mem = guest_memory(16 << 20);
        let err = set_acpi_rsdp(&mem, 32 << 20, 0xe0000).unwrap_err();
        assert!(
            matches!(err, BootError::GuestMemory { addr, len: 8, .. } if addr == (32 << 20) + 0x70),
            "{err}"
        );
        let err = set_pvh_rsdp(&mem, u64::MAX - 4, 0xe0000).unwrap_err();
        assert!(
            matches!(err, BootError::GuestMemory { addr: u64::MAX, .. }),
            "{err}"
        );
    }
}
