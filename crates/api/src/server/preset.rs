//! The example VMM's flags as a pre-configuration of API mode: what
//! `microvm --kernel ... --api-sock PATH` configures before the first
//! request (the same checks as the API's).

use std::path::PathBuf;

use kindling_vmm::{BootProtocol, DiskConfig};

use crate::models::{BootSource, Drive, EntropyDevice, MachineConfig};
use crate::resources::{ResourceError, VmResources};

/// Settings given on the command line.
#[derive(Debug, Clone, Default)]
pub struct Preset {
    /// The kernel (`--kernel`): the boot source, with `cmdline` and
    /// `initrd`.
    pub kernel: Option<PathBuf>,
    /// `--initrd`.
    pub initrd: Option<PathBuf>,
    /// `--cmdline`.
    pub cmdline: Option<String>,
    /// `--pvh`.
    pub pvh: bool,
    /// `--cpus`.
    pub vcpus: u8,
    /// `--memory`.
    pub memory_mib: u64,
    /// `--disk`, as drives `disk0`, `disk1`, ...
    pub disks: Vec<DiskConfig>,
    /// `--entropy`.
    pub entropy: bool,
    /// `--debug-exit`.
    pub debug_exit: bool,
}

/// A flag that means nothing without another.
#[derive(Debug, thiserror::Error)]
pub enum PresetError {
    /// `--initrd` or `--cmdline` without `--kernel`.
    #[error("{0} needs --kernel in API mode (or PUT /boot-source)")]
    NeedsKernel(&'static str),
    /// A path that is not UTF-8 (the API's paths are JSON strings).
    #[error("{0} is not valid UTF-8")]
    NotUtf8(String),
    /// A setting was refused.
    #[error(transparent)]
    Resource(#[from] ResourceError),
}

fn utf8(path: PathBuf) -> Result<String, PresetError> {
    path.into_os_string()
        .into_string()
        .map_err(|p| PresetError::NotUtf8(p.to_string_lossy().into_owned()))
}

impl Preset {
    /// The resources these flags configure.
    pub fn into_resources(self) -> Result<VmResources, PresetError> {
        let mut resources = VmResources::default();
        resources.set_machine_config(MachineConfig {
            vcpu_count: self.vcpus,
            mem_size_mib: self.memory_mib,
            ..MachineConfig::default()
        })?;
        match self.kernel {
            Some(kernel) => resources.set_boot_source(BootSource {
                kernel_image_path: utf8(kernel)?,
                initrd_path: self.initrd.map(utf8).transpose()?,
                boot_args: self.cmdline,
            })?,
            None if self.initrd.is_some() => return Err(PresetError::NeedsKernel("--initrd")),
            None if self.cmdline.is_some() => return Err(PresetError::NeedsKernel("--cmdline")),
            None => {}
        }
        if self.pvh {
            resources.boot_protocol = BootProtocol::Pvh;
        }
        resources.debug_exit = self.debug_exit;
        for (i, disk) in self.disks.into_iter().enumerate() {
            resources.put_drive(Drive {
                drive_id: format!("disk{i}"),
                partuuid: None,
                is_root_device: false,
                cache_type: Default::default(),
                is_read_only: Some(disk.read_only),
                path_on_host: Some(utf8(disk.path)?),
                rate_limiter: None,
                io_engine: None,
                socket: None,
            })?;
        }
        if self.entropy {
            resources.set_entropy(EntropyDevice::default())?;
        }
        Ok(resources)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_resources() {
        let r = Preset {
            vcpus: 2,
            memory_mib: 64,
            entropy: true,
            pvh: true,
            ..Preset::default()
        }
        .into_resources()
        .unwrap();
        assert_eq!(r.machine.vcpu_count, 2);
        assert!(r.entropy.is_some());
        assert!(r.boot_source.is_none());
        assert_eq!(r.boot_protocol, BootProtocol::Pvh);
        let e = Preset {
            vcpus: 1,
            memory_mib: 64,
            cmdline: Some("x".into()),
            ..Preset::default()
        }
        .into_resources()
        .unwrap_err();
        assert!(e.to_string().contains("--cmdline needs --kernel"), "{e}");
        let e = Preset {
            vcpus: 0,
            memory_mib: 64,
            ..Preset::default()
        }
        .into_resources()
        .unwrap_err();
        assert!(e.to_string().contains("vcpu_count 0"), "{e}");
        let e = Preset {
            vcpus: 1,
            memory_mib: 64,
            disks: vec!["/nonexistent.img".parse().unwrap()],
            ..Preset::default()
        }
        .into_resources()
        .unwrap_err();
        assert!(e.to_string().contains("drive disk0"), "{e}");
    }
}
