//! The VMM's ACPI tables agree with its devices.

mod common;

use kindling::boot::AcpiPmDescription;
use kindling::devices::legacy::{
    ACPI_RESET_PORT, ACPI_RESET_VALUE, ACPI_S5_SLEEP_TYPE, ACPI_SLEEP_CONTROL_PORT,
    ACPI_SLEEP_STATUS_PORT,
};
use kindling::memory::layout::ACPI_START;
use kindling::vmm::{KernelSource, SerialConfig, VmConfig, Vmm};
use vm_memory::{Bytes, GuestAddress};

#[test]
fn boot_defaults_match_the_pm_device() {
    let d = AcpiPmDescription::default();
    assert_eq!(d.sleep_control_port, ACPI_SLEEP_CONTROL_PORT);
    assert_eq!(d.sleep_status_port, ACPI_SLEEP_STATUS_PORT);
    assert_eq!(d.reset_port, ACPI_RESET_PORT);
    assert_eq!(d.reset_value, ACPI_RESET_VALUE);
    assert_eq!(d.s5_sleep_type, ACPI_S5_SLEEP_TYPE);
}

#[test]
fn a_built_vm_has_an_rsdp_in_the_bios_area_and_in_the_zero_page() {
    if !common::kvm_available("a_built_vm_has_an_rsdp_in_the_bios_area_and_in_the_zero_page") {
        return;
    }
    let vmm = Vmm::build(VmConfig {
        kernel: KernelSource::Bytes(kindling_test_guest::TEST_GUEST_ELF.into()),
        cmdline: "kindling.test=hello".into(),
        vcpus: 2,
        serial: SerialConfig::Off,
        debug_exit: true,
        ..VmConfig::default()
    })
    .unwrap();
    let mut signature = [0u8; 8];
    vmm.memory()
        .read_slice(&mut signature, GuestAddress(ACPI_START))
        .unwrap();
    assert_eq!(&signature, b"RSD PTR ");
    // boot_params.acpi_rsdp_addr at offset 0x70 of the zero page.
    let rsdp: u64 = vmm
        .memory()
        .read_obj(GuestAddress(
            kindling::memory::layout::ZERO_PAGE_START + 0x70,
        ))
        .unwrap();
    assert_eq!(rsdp, ACPI_START);
}
