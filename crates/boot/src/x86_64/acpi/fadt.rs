//! The FADT of a hardware-reduced ACPI platform.
//!
//! Hardware-reduced ACPI has no fixed PM1 event/control blocks, no PM timer,
//! no GPE blocks and no SCI: sleep (and so power-off) goes through the
//! `SLEEP_CONTROL_REG` and `SLEEP_STATUS_REG`, reset through `RESET_REG`.

use acpi_tables::fadt::{FADTBuilder, Flags, FADT};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::Aml;

use super::{oem_table_id, AcpiPmDescription, CmosRtcDescription, OEM_ID, OEM_REVISION};

/// Size of an ACPI 6.5 FADT.
pub(super) const FADT_LEN: u64 = 276;

// IA-PC boot architecture flags (ACPI 6.5, table 5.11).
/// Bit 1: an i8042 is present. Left clear: the DSDT describes the i8042
/// when there is one, and Linux skips probing a controller that is not.
#[cfg(test)]
const IAPC_8042: u16 = 1 << 1;
/// Bit 2: VGA is not present.
const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;
/// Bit 3: MSI must not be enabled (there is no PCI).
const IAPC_MSI_NOT_SUPPORTED: u16 = 1 << 3;
/// Bit 4: OSPM must not enable PCIe ASPM.
const IAPC_PCIE_ASPM_CONTROLS: u16 = 1 << 4;
/// Bit 5: there is no CMOS RTC.
const IAPC_CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;

/// The IA-PC boot architecture flags always set in the FADT.
const IAPC_BOOT_ARCH: u16 = IAPC_VGA_NOT_PRESENT | IAPC_MSI_NOT_SUPPORTED | IAPC_PCIE_ASPM_CONTROLS;

/// "KINDLING", the hypervisor vendor identity.
const HYPERVISOR_VENDOR: u64 = u64::from_le_bytes(*b"KINDLING");

/// An 8-bit register at I/O port `port`.
fn io_register(port: u16) -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        u64::from(port),
    )
}

/// The FADT: hardware-reduced, the DSDT at `dsdt_addr`, the sleep and
/// reset registers of `pm`, and `rtc`'s century byte or no CMOS RTC.
pub(super) fn fadt(
    pm: &AcpiPmDescription,
    rtc: Option<&CmosRtcDescription>,
    dsdt_addr: u64,
) -> Vec<u8> {
    let mut builder = FADTBuilder::new(OEM_ID, oem_table_id(b"FACP"), OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        // No fixed-feature power or sleep button.
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    builder.iapc_boot_arch = match rtc {
        Some(_) => IAPC_BOOT_ARCH,
        None => IAPC_BOOT_ARCH | IAPC_CMOS_RTC_NOT_PRESENT,
    }
    .into();
    builder.century = rtc.map_or(0, |rtc| rtc.century_register);
    builder.reset_reg = io_register(pm.reset_port);
    builder.reset_value = pm.reset_value;
    builder.sleep_control_reg = io_register(pm.sleep_control_port);
    builder.sleep_status_reg = io_register(pm.sleep_status_port);
    builder.hypervisor_vendor_identity = HYPERVISOR_VENDOR.into();
    let fadt: FADT = builder.finalize();
    let mut bytes = Vec::with_capacity(FADT_LEN as usize);
    fadt.to_aml_bytes(&mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x86_64::acpi::tests::sum;

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
    }
    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    /// The Generic Address Structure at `at`: (space, bit width, bit
    /// offset, access size, address).
    fn gas_at(b: &[u8], at: usize) -> (u8, u8, u8, u8, u64) {
        (b[at], b[at + 1], b[at + 2], b[at + 3], u64_at(b, at + 4))
    }

    #[test]
    fn header_length_and_checksum() {
        let b = fadt(&AcpiPmDescription::default(), None, 0xe0400);
        assert_eq!(b.len() as u64, FADT_LEN);
        assert_eq!(&b[..4], b"FACP");
        assert_eq!(u32_at(&b, 4) as u64, FADT_LEN);
        assert_eq!(b[8], 6, "major version");
        assert_eq!(b[131], 5, "minor version");
        assert_eq!(sum(&b), 0);
        assert_eq!(&b[10..16], b"KINDLG");
        assert_eq!(&b[16..24], b"KINDFACP");
    }

    #[test]
    fn hardware_reduced_with_sleep_and_reset_registers() {
        let pm = AcpiPmDescription {
            sleep_control_port: 0x3c0,
            sleep_status_port: 0x3c1,
            reset_port: 0x3c2,
            reset_value: 0x0e,
            s5_sleep_type: 5,
        };
        let b = fadt(&pm, None, 0xe0400);
        // DSDT through X_DSDT only.
        assert_eq!(u32_at(&b, 40), 0);
        assert_eq!(u64_at(&b, 140), 0xe0400);
        // No FACS, no SCI, no legacy PM blocks.
        assert_eq!(u32_at(&b, 36), 0);
        assert_eq!(u64_at(&b, 132), 0);
        assert_eq!(u16_at(&b, 46), 0, "SCI_INT");
        assert!(b[48..88].iter().all(|&x| x == 0), "SMI_CMD to GPE1_BLK");
        assert!(
            b[148..244].iter().all(|&x| x == 0),
            "X_PM1a_EVT_BLK to X_GPE1_BLK"
        );

        let flags = u32_at(&b, 112);
        assert_eq!(flags, (1 << 20) | (1 << 10) | (1 << 4) | (1 << 5));
        let iapc = u16_at(&b, 109);
        assert_eq!(iapc, 0b11_1100, "no VGA, MSI, ASPM or CMOS RTC");
        assert_eq!(iapc & IAPC_8042, 0);

        assert_eq!(gas_at(&b, 116), (1, 8, 0, 1, 0x3c2), "RESET_REG");
        assert_eq!(b[128], 0x0e, "RESET_VALUE");
        assert_eq!(gas_at(&b, 244), (1, 8, 0, 1, 0x3c0), "SLEEP_CONTROL_REG");
        assert_eq!(gas_at(&b, 256), (1, 8, 0, 1, 0x3c1), "SLEEP_STATUS_REG");
        assert_eq!(&b[268..276], b"KINDLING");
        assert_eq!(b[108], 0, "no CENTURY without an RTC");
    }

    #[test]
    fn cmos_rtc_clears_the_not_present_flag() {
        let rtc = CmosRtcDescription::STANDARD;
        let b = fadt(&AcpiPmDescription::default(), Some(&rtc), 0xe0400);
        assert_eq!(u16_at(&b, 109), 0b01_1100, "no VGA, MSI or ASPM");
        assert_eq!(b[108], 0x32, "CENTURY");
        assert_eq!(sum(&b), 0);
    }
}
