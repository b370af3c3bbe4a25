//! x86_64 boot: kernel loading, boot parameters, E820, the MP table and
//! the ACPI tables.

mod acpi;
mod bzimage;
mod cmdline;
mod e820;
mod elf;
mod error;
mod image;
mod initrd;
mod kernel;
mod layout;
mod linux;
mod mptable;
mod pvh;
mod reset_vector;
#[cfg(test)]
mod test_images;
mod zero_page;

pub use acpi::{
    build_acpi_tables, build_acpi_tables_with_layout, set_acpi_rsdp, set_pvh_rsdp, setup_acpi,
    setup_acpi_with_layout, AcpiConfig, AcpiPmDescription, AcpiTables, CmosRtcDescription,
    I8042Description, SerialDescription, VirtioMmioDescription, DEFAULT_ACPI_RESET_PORT,
    DEFAULT_ACPI_RESET_VALUE, DEFAULT_ACPI_S5_SLEEP_TYPE, DEFAULT_ACPI_SLEEP_CONTROL_PORT,
    DEFAULT_ACPI_SLEEP_STATUS_PORT, MAX_VIRTIO_MMIO_DEVICES,
};
pub use bzimage::{MIN_BOOT_PROTOCOL, STARTUP_64_OFFSET};
pub use cmdline::{load_cmdline, load_cmdline_with_layout, CmdlinePlacement};
pub use e820::{
    e820_from_ranges, e820_from_ranges_with_layout, e820_map, e820_map_with_layout, E820Entry,
    E820Type,
};
pub use error::BootError;
pub use image::ReadSeek;
pub use initrd::{
    load_initrd, load_initrd_with_layout, place_initrd, place_initrd_with_layout, InitrdPlacement,
};
pub use kernel::{
    load_kernel, load_kernel_with_layout, KernelFormat, LoadedKernel, DEFAULT_INITRD_ADDR_MAX,
};
pub use layout::{BootLayout, LayoutError};
pub use linux::{
    load_linux, load_linux_pvh, load_linux_pvh_with_layout, load_linux_with_layout, BootInfo,
    PvhBootInfo,
};
pub use mptable::{
    mptable_bytes, mptable_bytes_with_layout, mptable_size, setup_mptable,
    setup_mptable_with_layout, MAX_CPUS,
};
pub use pvh::{configure_pvh, configure_pvh_with_layout, XEN_HVM_START_MAGIC};
pub use reset_vector::{write_reset_vector, RESET_VECTOR, RESET_VECTOR_STUB};
pub use zero_page::{
    configure_zero_page, configure_zero_page_with_layout, zero_page, zero_page_with_layout,
    LOADER_TYPE_UNDEFINED,
};
