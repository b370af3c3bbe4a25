//! ACPI tables for a hardware-reduced microVM, built with the
//! [`acpi_tables`] crate: RSDP, XSDT, FADT, MADT and DSDT. See
//! [`setup_acpi`] for what they describe.

mod config;
mod dsdt;
mod fadt;
mod madt;
mod rsdp;
#[cfg(test)]
mod test_aml;

use kindling_memory::GuestMemoryMmap;
use vm_memory::{Bytes, GuestAddress};

use crate::x86_64::{BootError, BootLayout};

pub use config::{
    AcpiConfig, AcpiPmDescription, CmosRtcDescription, I8042Description, SerialDescription,
    VirtioMmioDescription, DEFAULT_ACPI_RESET_PORT, DEFAULT_ACPI_RESET_VALUE,
    DEFAULT_ACPI_S5_SLEEP_TYPE, DEFAULT_ACPI_SLEEP_CONTROL_PORT, DEFAULT_ACPI_SLEEP_STATUS_PORT,
    MAX_VIRTIO_MMIO_DEVICES,
};
pub use rsdp::{set_acpi_rsdp, set_pvh_rsdp};

/// OEM id in every table.
const OEM_ID: [u8; 6] = *b"KINDLG";
/// OEM revision of every table.
const OEM_REVISION: u32 = 1;
/// Tables start on this boundary (the RSDP needs 16).
const TABLE_ALIGN: u64 = 16;

/// The OEM table id of the table with `signature`: "KINDxxxx".
fn oem_table_id(signature: &[u8; 4]) -> [u8; 8] {
    let mut id = *b"KIND    ";
    id[4..].copy_from_slice(signature);
    id
}

/// The ACPI tables laid out as one block of guest memory, and where each
/// table is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiTables {
    /// Guest-physical address of the block, and of the RSDP at its start.
    pub rsdp_addr: u64,
    /// Guest-physical address of the XSDT.
    pub xsdt_addr: u64,
    /// Guest-physical address of the FADT.
    pub fadt_addr: u64,
    /// Guest-physical address of the MADT.
    pub madt_addr: u64,
    /// Guest-physical address of the DSDT.
    pub dsdt_addr: u64,
    /// The bytes to write at `rsdp_addr`: every table, 16-byte aligned,
    /// with zeros between them.
    pub bytes: Vec<u8>,
}

impl AcpiTables {
    /// The bytes of the table at guest-physical `addr` (that of the XSDT,
    /// FADT, MADT or DSDT; the RSDP has another header), as long as its
    /// header says, or `None` if that runs outside the block.
    pub fn table(&self, addr: u64) -> Option<&[u8]> {
        let start = usize::try_from(addr.checked_sub(self.rsdp_addr)?).ok()?;
        let len_bytes = self
            .bytes
            .get(start.checked_add(4)?..start.checked_add(8)?)?;
        let len = u32::from_le_bytes(len_bytes.try_into().ok()?) as usize;
        self.bytes.get(start..start.checked_add(len)?)
    }
}

fn align_up(value: u64) -> u64 {
    value.div_ceil(TABLE_ALIGN) * TABLE_ALIGN
}

fn build(config: &AcpiConfig, start: u64, limit: u64) -> Result<AcpiTables, BootError> {
    config::validate(config)?;
    let dsdt = dsdt::dsdt(config);
    let madt = madt::madt(config.num_cpus);

    let rsdp_addr = start;
    let xsdt_addr = align_up(rsdp_addr + rsdp::RSDP_LEN);
    let fadt_addr = align_up(xsdt_addr + rsdp::xsdt_len(2));
    let madt_addr = align_up(fadt_addr + fadt::FADT_LEN);
    let dsdt_addr = align_up(madt_addr + madt.len() as u64);
    let end = dsdt_addr + dsdt.len() as u64;
    if end > limit {
        return Err(BootError::AcpiTablesTooLarge {
            size: (end - start) as usize,
            addr: start,
            limit,
        });
    }

    let fadt = fadt::fadt(&config.pm, config.cmos_rtc.as_ref(), dsdt_addr);
    let xsdt = rsdp::xsdt(&[fadt_addr, madt_addr]);
    let rsdp = rsdp::rsdp(xsdt_addr);

    let mut bytes = vec![0u8; (end - start) as usize];
    for (addr, table) in [
        (rsdp_addr, &rsdp),
        (xsdt_addr, &xsdt),
        (fadt_addr, &fadt),
        (madt_addr, &madt),
        (dsdt_addr, &dsdt),
    ] {
        let at = (addr - start) as usize;
        bytes[at..at + table.len()].copy_from_slice(table);
    }
    Ok(AcpiTables {
        rsdp_addr,
        xsdt_addr,
        fadt_addr,
        madt_addr,
        dsdt_addr,
        bytes,
    })
}

/// Builds the ACPI tables for `config`, laid out from [`ACPI_START`](kindling_memory::layout::ACPI_START),
/// without writing them.
///
/// Fails, before building anything, if `config` has no vCPUs or more than
/// [`MAX_CPUS`](crate::MAX_CPUS), more than [`MAX_VIRTIO_MMIO_DEVICES`] virtio devices, an
/// empty or wrapping MMIO window, an IRQ that is not an IOAPIC pin, a
/// power-management register at port 0 or an `_S5` sleep type above 7.
pub fn build_acpi_tables(config: &AcpiConfig) -> Result<AcpiTables, BootError> {
    build_acpi_tables_with_layout(config, &BootLayout::default())
}

/// Like [`build_acpi_tables`], laid out from `layout.acpi_start` to end
/// by `layout.acpi_end`.
pub fn build_acpi_tables_with_layout(
    config: &AcpiConfig,
    layout: &BootLayout,
) -> Result<AcpiTables, BootError> {
    layout.validate()?;
    build(config, layout.acpi_start, layout.acpi_end)
}

/// Writes the ACPI tables for `config` into
/// [`ACPI_START`](kindling_memory::layout::ACPI_START)`..`[`ACPI_END`](kindling_memory::layout::ACPI_END) (which the E820 map reserves) and
/// returns the address of the RSDP, [`ACPI_START`](kindling_memory::layout::ACPI_START).
///
/// The tables, each 16-byte aligned, in this order:
///
/// - the **RSDP** (revision 2), where Linux finds it by scanning
///   `0xe0000..0x100000`; it points to
/// - the **XSDT**, which lists the FADT and the MADT;
/// - the **FADT** (ACPI 6.5) of a hardware-reduced platform
///   (`HW_REDUCED_ACPI`: no PM1 blocks, PM timer, GPEs or SCI; no fixed
///   power or sleep button). `IAPC_BOOT_ARCH` says there is no VGA, no MSI
///   and no PCIe ASPM, that there is no CMOS RTC unless one is configured
///   (then `CENTURY` names its century byte), and does not claim an i8042
///   (the DSDT describes one when there is one). `SLEEP_CONTROL_REG`,
///   `SLEEP_STATUS_REG` and `RESET_REG` (with `RESET_REG_SUP`) are 8-bit
///   system I/O registers at the ports of [`AcpiPmDescription`]. It
///   points to
/// - the **DSDT** (revision 2): `\_S5_` = `Package { S5, S5, 0, 0 }` with
///   the configured sleep type, and under `\_SB_` the serial port (`COM1`,
///   `PNP0501`, its eight ports and IRQ), the i8042 (`PS2_`, `PNP0303`,
///   data and command ports and IRQ), the CMOS RTC (`RTC_`, `PNP0B00`,
///   its two ports, no IRQ), and one `VRnn` per virtio-mmio
///   device (`nn` its position in hexadecimal; `_HID` `"LNRO0005"`, `_UID`
///   its position, `_CRS` its window as `Memory32Fixed`, or `QWordMemory`
///   above 4 GiB, and its IRQ). Every interrupt is `Interrupt
///   (ResourceConsumer, Edge, ActiveHigh, Exclusive)`, or `Shared` when
///   several devices use the line: devices raise their line through a KVM
///   irqfd without a resampler, which pulses the IOAPIC pin, and only an
///   edge-triggered pin never loses a pulse.
/// - the **MADT** (revision 6): one enabled local APIC per vCPU (APIC ids
///   and processor UIDs `0..num_cpus`), the IOAPIC at
///   [`IOAPIC_START`](kindling_memory::layout::IOAPIC_START) with id
///   `num_cpus` and GSIs 0 to 23, and NMI on LINT1 of every local APIC;
///   no `PCAT_COMPAT`. This is what the MP table ([`setup_mptable`]) says.
///   There is no interrupt source override: ISA IRQ `n` is GSI `n`, as
///   KVM's default routing has it.
///
/// Linux finds the RSDP by itself; a VMM may also pass its address in the
/// zero page ([`set_acpi_rsdp`]) or the PVH start info ([`set_pvh_rsdp`]).
/// The power-management ports must be served by a device that ends the
/// VM: `kindling_devices::legacy::AcpiPmDevice`, whose ports and values
/// are the defaults here.
///
/// See [`build_acpi_tables`] for the errors; writing fails with
/// [`BootError::GuestMemory`] when the area is not guest RAM.
///
/// [`setup_mptable`]: crate::setup_mptable
///
/// # Example
///
/// ```
/// use kindling_boot::{setup_acpi, AcpiConfig, VirtioMmioDescription};
/// use kindling_memory::{create_guest_memory, MemoryConfig};
/// use vm_memory::{Bytes, GuestAddress};
///
/// let ram = create_guest_memory(&MemoryConfig { size_mib: 64, backing: Default::default() })
///     .unwrap();
/// let mut config = AcpiConfig::new(2);
/// config.virtio_mmio.push(VirtioMmioDescription { base: 0xc000_1000, size: 0x1000, irq: 5 });
/// let rsdp = setup_acpi(&ram.memory, &config).unwrap();
/// assert_eq!(rsdp, 0xe0000);
/// let mut signature = [0u8; 8];
/// ram.memory.read_slice(&mut signature, GuestAddress(rsdp)).unwrap();
/// assert_eq!(&signature, b"RSD PTR ");
/// ```
pub fn setup_acpi(mem: &GuestMemoryMmap, config: &AcpiConfig) -> Result<u64, BootError> {
    setup_acpi_with_layout(mem, config, &BootLayout::default())
}

/// Like [`setup_acpi`], into `layout.acpi_start..layout.acpi_end`. Linux
/// scans only `0xe0000..0x100000` for the RSDP: elsewhere, pass the
/// returned address with [`set_acpi_rsdp`] or [`set_pvh_rsdp`].
pub fn setup_acpi_with_layout(
    mem: &GuestMemoryMmap,
    config: &AcpiConfig,
    layout: &BootLayout,
) -> Result<u64, BootError> {
    let tables = build_acpi_tables_with_layout(config, layout)?;
    mem.write_slice(&tables.bytes, GuestAddress(tables.rsdp_addr))
        .map_err(BootError::guest_memory(
            "ACPI tables",
            tables.rsdp_addr,
            tables.bytes.len() as u64,
        ))?;
    Ok(tables.rsdp_addr)
}

#[cfg(test)]
mod tests {
    use kindling_memory::layout::{ACPI_END, ACPI_START};

    use super::*;
    use crate::x86_64::test_images::guest_memory;

    pub(super) fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
    }

    /// `n` virtio-mmio devices in consecutive windows.
    pub(super) fn virtio(n: usize) -> Vec<VirtioMmioDescription> {
        (0..n)
            .map(|i| VirtioMmioDescription {
                base: 0xc000_1000 + 0x1000 * i as u64,
                size: 0x1000,
                irq: 5 + (i as u32 % 19),
            })
            .collect()
    }

    #[test]
    fn layout_is_aligned_and_inside_the_acpi_area() {
        for (cpus, devices) in [(1u8, 0usize), (2, 3), (254, 256)] {
            let mut config = AcpiConfig::new(cpus);
            config.virtio_mmio = virtio(devices);
            let t = build_acpi_tables(&config).unwrap();
            assert_eq!(t.rsdp_addr, ACPI_START);
            for addr in [t.xsdt_addr, t.fadt_addr, t.madt_addr, t.dsdt_addr] {
                assert_eq!(addr % 16, 0);
                let table = t.table(addr).unwrap();
                assert_eq!(sum(table), 0, "checksum of the table at {addr:#x}");
            }
            assert!(t.rsdp_addr < t.xsdt_addr);
            assert!(t.xsdt_addr < t.fadt_addr);
            assert!(t.fadt_addr < t.madt_addr);
            assert!(t.madt_addr < t.dsdt_addr);
            let end = t.rsdp_addr + t.bytes.len() as u64;
            assert_eq!(
                end,
                t.dsdt_addr + t.table(t.dsdt_addr).unwrap().len() as u64
            );
            assert!(end <= ACPI_END);
        }
    }

    /// Follows the pointers the way a guest does: RSDP -> XSDT -> FADT ->
    /// DSDT, and XSDT -> MADT; then reads each device back from the AML.
    #[test]
    fn guest_walk_finds_every_device() {
        let mut config = AcpiConfig::new(3);
        config.virtio_mmio = virtio(5);
        let t = build_acpi_tables(&config).unwrap();
        let at = |addr: u64| (addr - t.rsdp_addr) as usize;
        let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());

        let rsdp = &t.bytes[..36];
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(sum(&rsdp[..20]), 0);
        assert_eq!(sum(rsdp), 0);
        let xsdt = t.table(u64_at(rsdp, 24)).unwrap();
        assert_eq!(&xsdt[..4], b"XSDT");
        let pointers: Vec<u64> = (36..xsdt.len())
            .step_by(8)
            .map(|i| u64_at(xsdt, i))
            .collect();
        assert_eq!(pointers, vec![t.fadt_addr, t.madt_addr]);
        let fadt = t.table(pointers[0]).unwrap();
        assert_eq!(&fadt[..4], b"FACP");
        let madt = t.table(pointers[1]).unwrap();
        assert_eq!(&madt[..4], b"APIC");
        assert_eq!(madt.len(), 44 + 3 * 8 + 12 + 6);
        let dsdt_addr = u64_at(fadt, 140);
        assert_eq!(dsdt_addr, t.dsdt_addr);
        assert_eq!(&t.bytes[at(dsdt_addr)..at(dsdt_addr) + 4], b"DSDT");

        let parsed = test_aml::parse_dsdt(t.table(dsdt_addr).unwrap());
        for (i, dev) in config.virtio_mmio.iter().enumerate() {
            let found = parsed.device(&format!("\\_SB_.VR{i:02X}")).unwrap();
            assert_eq!(
                found.hid(),
                Some(test_aml::AmlObject::String("LNRO0005".into()))
            );
            assert_eq!(
                found.resources(),
                vec![
                    test_aml::Resource::Memory32Fixed {
                        writable: true,
                        base: dev.base as u32,
                        len: dev.size as u32,
                    },
                    test_aml::Resource::Interrupt {
                        flags: 0b0011,
                        irqs: vec![dev.irq],
                    },
                ]
            );
        }
        assert!(parsed.device("\\_SB_.COM1").is_some());
        assert!(parsed.device("\\_SB_.PS2_").is_some());
        assert!(parsed.device("\\_SB_.RTC_").is_some());
    }

    #[test]
    fn oem_table_ids() {
        assert_eq!(oem_table_id(b"DSDT"), *b"KINDDSDT");
    }

    #[test]
    fn table_lookup_outside_the_block() {
        let t = build_acpi_tables(&AcpiConfig::new(1)).unwrap();
        assert!(t.table(ACPI_START - 1).is_none());
        assert!(t.table(ACPI_START + t.bytes.len() as u64).is_none());
        assert!(t.table(u64::MAX).is_none());
        let at_zero = AcpiTables {
            rsdp_addr: 0,
            ..t.clone()
        };
        assert!(at_zero.table(u64::MAX).is_none());
        assert_eq!(
            at_zero.table(t.dsdt_addr - t.rsdp_addr),
            t.table(t.dsdt_addr)
        );
    }

    #[test]
    fn tables_at_a_moved_layout() {
        let mem = guest_memory(16 << 20);
        let layout = crate::x86_64::test_images::moved_layout();
        let config = AcpiConfig::new(2);
        let rsdp = setup_acpi_with_layout(&mem, &config, &layout).unwrap();
        assert_eq!(rsdp, layout.acpi_start);
        let t = build_acpi_tables_with_layout(&config, &layout).unwrap();
        assert_eq!(t.rsdp_addr, layout.acpi_start);
        assert!(t.dsdt_addr > layout.acpi_start && t.dsdt_addr < layout.acpi_end);
        let mut signature = [0u8; 8];
        mem.read_slice(&mut signature, GuestAddress(rsdp)).unwrap();
        assert_eq!(&signature, b"RSD PTR ");
        let tiny = crate::x86_64::BootLayout {
            acpi_end: layout.acpi_start + 0x40,
            ..layout
        };
        let err = build_acpi_tables_with_layout(&config, &tiny).unwrap_err();
        assert!(matches!(err, BootError::AcpiTablesTooLarge { .. }), "{err}");
    }

    #[test]
    fn written_tables_match_the_built_ones() {
        let mem = guest_memory(16 << 20);
        let mut config = AcpiConfig::new(4);
        config.virtio_mmio = virtio(2);
        let rsdp = setup_acpi(&mem, &config).unwrap();
        assert_eq!(rsdp, ACPI_START);
        let t = build_acpi_tables(&config).unwrap();
        let mut written = vec![0u8; t.bytes.len()];
        mem.read_slice(&mut written, GuestAddress(rsdp)).unwrap();
        assert_eq!(written, t.bytes);
    }

    #[test]
    fn memory_without_the_acpi_area_is_an_error() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x9_0000)]).unwrap();
        let err = setup_acpi(&mem, &AcpiConfig::new(1)).unwrap_err();
        assert!(
            matches!(
                err,
                BootError::GuestMemory {
                    what: "ACPI tables",
                    addr: ACPI_START,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn tables_that_do_not_fit() {
        let err = build(&AcpiConfig::new(2), ACPI_START, ACPI_START + 0x100).unwrap_err();
        assert!(
            matches!(err, BootError::AcpiTablesTooLarge { addr: ACPI_START, limit, size }
                if limit == ACPI_START + 0x100 && size > 0x100),
            "{err}"
        );
    }

    /// Writes the tables of a sample configuration to the directory named
    /// by `KINDLING_ACPI_DUMP`, one file per table, for `iasl -d`.
    #[test]
    #[ignore = "writes files; run by hand to check the tables with iasl"]
    fn dump_tables_for_iasl() {
        let dir =
            std::env::var("KINDLING_ACPI_DUMP").expect("set KINDLING_ACPI_DUMP to a directory");
        let mut config = AcpiConfig::new(2);
        config.virtio_mmio = virtio(3);
        config.virtio_mmio.push(VirtioMmioDescription {
            base: 0x1_0000_0000,
            size: 0x200,
            irq: 7,
        });
        let t = build_acpi_tables(&config).unwrap();
        for (name, addr) in [
            ("xsdt", t.xsdt_addr),
            ("facp", t.fadt_addr),
            ("apic", t.madt_addr),
            ("dsdt", t.dsdt_addr),
        ] {
            std::fs::write(format!("{dir}/{name}.dat"), t.table(addr).unwrap()).unwrap();
        }
        std::fs::write(format!("{dir}/rsdp.dat"), &t.bytes[..36]).unwrap();
    }
}
