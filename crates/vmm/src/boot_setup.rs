//! Putting the guest into memory: kernel, initrd, command line, ACPI
//! tables and the boot vCPU's entry.

use kindling_boot::VirtioMmioDescription;
use kindling_memory::GuestMemoryMmap;
use kindling_vcpu::BootEntry;

use crate::config::BootProtocol;
use crate::VmmError;

/// What the guest is booted from.
pub(crate) struct BootSources<'a> {
    pub(crate) kernel: &'a mut dyn kindling_boot::ReadSeek,
    pub(crate) initrd: Option<&'a mut dyn kindling_boot::ReadSeek>,
    pub(crate) cmdline: &'a str,
    pub(crate) protocol: BootProtocol,
    pub(crate) vcpus: u8,
}

/// Loads the kernel, initrd and command line, writes the ACPI tables
/// (describing `virtio` devices) and the reset-vector stub, and returns
/// the boot vCPU's entry with its GDT and page tables in place.
pub(crate) fn load_guest(
    memory: &GuestMemoryMmap,
    sources: BootSources<'_>,
    virtio: &[VirtioMmioDescription],
) -> Result<BootEntry, VmmError> {
    let BootSources {
        kernel,
        initrd,
        cmdline,
        protocol,
        vcpus,
    } = sources;
    // Load, then point the entry's boot structure at the ACPI tables.
    let (entry, boot_struct) = match protocol {
        BootProtocol::Linux64 => {
            let boot = kindling_boot::load_linux(memory, kernel, initrd, cmdline, vcpus)?;
            let entry = BootEntry::linux64(memory, boot.entry, boot.zero_page)?;
            (entry, boot.zero_page)
        }
        BootProtocol::Pvh => {
            let boot = kindling_boot::load_linux_pvh(memory, kernel, initrd, cmdline, vcpus)?;
            let entry = BootEntry::pvh(memory, boot.entry, boot.start_info)?;
            (entry, boot.start_info)
        }
    };
    let rsdp = setup_acpi(memory, vcpus, virtio)?;
    match protocol {
        BootProtocol::Linux64 => kindling_boot::set_acpi_rsdp(memory, boot_struct, rsdp)?,
        BootProtocol::Pvh => kindling_boot::set_pvh_rsdp(memory, boot_struct, rsdp)?,
    }
    Ok(entry)
}

/// Writes the ACPI tables describing the vCPUs, the legacy devices at their
/// standard places and the `virtio` devices, and the reset-vector stub that
/// Linux's BIOS-reboot fallback jumps to on a hardware-reduced ACPI
/// platform; returns the RSDP address.
fn setup_acpi(
    memory: &GuestMemoryMmap,
    vcpus: u8,
    virtio: &[VirtioMmioDescription],
) -> Result<u64, VmmError> {
    kindling_boot::write_reset_vector(memory)?;
    // AcpiConfig::new describes the legacy devices at the ports where
    // kindling-devices puts them (checked by a test below).
    let mut acpi = kindling_boot::AcpiConfig::new(vcpus);
    acpi.virtio_mmio = virtio.to_vec();
    Ok(kindling_boot::setup_acpi(memory, &acpi)?)
}

#[cfg(test)]
mod tests {
    use kindling_devices::legacy::{
        ACPI_RESET_PORT, ACPI_RESET_VALUE, ACPI_S5_SLEEP_TYPE, ACPI_SLEEP_CONTROL_PORT,
        ACPI_SLEEP_STATUS_PORT,
    };

    #[test]
    fn the_acpi_tables_describe_the_pm_device_where_it_is() {
        let pm = kindling_boot::AcpiConfig::new(1).pm;
        assert_eq!(pm.sleep_control_port, ACPI_SLEEP_CONTROL_PORT);
        assert_eq!(pm.sleep_status_port, ACPI_SLEEP_STATUS_PORT);
        assert_eq!(pm.reset_port, ACPI_RESET_PORT);
        assert_eq!(pm.reset_value, ACPI_RESET_VALUE);
        assert_eq!(pm.s5_sleep_type, ACPI_S5_SLEEP_TYPE);
    }
}
