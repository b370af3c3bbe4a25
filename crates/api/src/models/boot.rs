//! `PUT /boot-source`: the kernel, initrd and command line.

use serde::{Deserialize, Serialize};

/// Firecracker's `BootSource`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSource {
    /// Host path of the kernel image (ELF `vmlinux` or bzImage).
    pub kernel_image_path: String,
    /// Host path of an initial ramdisk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<String>,
    /// The kernel command line; Kindling's default Linux command line
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
}
