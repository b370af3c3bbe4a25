//! The microVM's configuration before it starts: what `PUT` requests (or
//! a config file, or `microvm` flags) build up, checked as it arrives, and
//! turned into a [`VmConfig`] at `InstanceStart`.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use kindling_memory::Backing;
use kindling_virtio::block::{Block, BlockConfig, BlockError};
use kindling_virtio::net::{MacAddr, MacAddrError, Tap, TapError};
use kindling_vmm::{
    BootProtocol, KernelSource, NetConfig, SerialConfig, StartTime, VmConfig, VsockConfig,
    DEFAULT_LINUX_CMDLINE,
};
use serde::Serialize;

use crate::models::{
    limits, BootSource, Drive, EntropyDevice, HugePages, IoEngine, LoggerConfig, MachineConfig,
    MachineConfigError, MetricsConfig, NetworkInterface, SerialDevice, VsockDevice,
};

/// The lowest context id a guest may have (0 to 2 are the hypervisor's,
/// the loopback's and the host's).
pub const MIN_GUEST_CID: u64 = 3;

/// Why a resource is refused.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// A path field is empty.
    #[error("{0} is empty")]
    EmptyPath(&'static str),
    /// A file named by the request cannot be opened.
    #[error("cannot open {what} {path}: {source}")]
    OpenFile {
        /// What the file is.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The error from the kernel.
        source: io::Error,
    },
    /// A file named by the request is not a regular file (or block
    /// device).
    #[error("{what} {path} is not a regular file")]
    NotAFile {
        /// What the file is.
        what: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// A drive's image cannot be used.
    #[error("drive {id}: {source}")]
    Block {
        /// The drive id.
        id: String,
        /// What the block device said.
        source: BlockError,
    },
    /// A virtio-block drive without `path_on_host`.
    #[error("drive {0}: path_on_host is required")]
    MissingDrivePath(String),
    /// A second root device.
    #[error("drive {new}: drive {existing} is already the root device (only one drive may have is_root_device: true)")]
    SecondRootDevice {
        /// The root device already configured.
        existing: String,
        /// The drive that asked to be root too.
        new: String,
    },
    /// `partuuid` on a drive that is not the root device.
    #[error("drive {0}: partuuid is only meaningful with is_root_device: true")]
    PartuuidWithoutRoot(String),
    /// `partuuid` with characters that would change the command line.
    #[error("drive {0}: partuuid may only hold ASCII letters, digits and '-'")]
    BadPartuuid(String),
    /// A network interface's TAP device cannot be used.
    #[error("network interface {id}: {source}")]
    Tap {
        /// The `iface_id`.
        id: String,
        /// What opening the TAP said.
        source: TapError,
    },
    /// A network interface's `guest_mac` does not parse.
    #[error("network interface {id}: {source}")]
    GuestMac {
        /// The `iface_id`.
        id: String,
        /// What is wrong with the address.
        source: MacAddrError,
    },
    /// Two network interfaces share a TAP device or a MAC address.
    #[error(
        "network interface {new}: {what} {value} is already used by network interface {existing}"
    )]
    NetClash {
        /// The interface already configured.
        existing: String,
        /// The interface being put.
        new: String,
        /// `host_dev_name` or `guest_mac`.
        what: &'static str,
        /// The shared value.
        value: String,
    },
    /// A vsock `guest_cid` below [`MIN_GUEST_CID`] (or beyond 32 bits).
    #[error("vsock: guest_cid {0} is out of range: it must be between {MIN_GUEST_CID} and {max}", max = u32::MAX)]
    GuestCid(u64),
    /// A vsock `uds_path` whose directory does not exist.
    #[error("vsock: the directory of uds_path {0} does not exist")]
    UdsDirectory(PathBuf),
    /// A vsock `uds_path` that already exists.
    #[error("vsock: uds_path {0} already exists (the device creates the socket; remove it first)")]
    UdsExists(PathBuf),
    /// A setting Kindling does not support yet.
    #[error("Kindling does not support {0} yet")]
    Unsupported(&'static str),
    /// The machine configuration is refused.
    #[error(transparent)]
    MachineConfig(#[from] MachineConfigError),
}

/// The pre-boot configuration.
#[derive(Debug, Clone, Default)]
pub struct VmResources {
    /// `PUT /boot-source`.
    pub boot_source: Option<BootSource>,
    /// `PUT|PATCH /machine-config`.
    pub machine: MachineConfig,
    /// `PUT /drives/{id}`, root device first, the others in the order
    /// they were first put (the guest's vda, vdb, ...).
    pub drives: Vec<Drive>,
    /// `PUT /network-interfaces/{id}`, in the order they were first put.
    pub network_interfaces: Vec<NetworkInterface>,
    /// `PUT /vsock`.
    pub vsock: Option<VsockDevice>,
    /// `PUT /entropy`.
    pub entropy: Option<EntropyDevice>,
    /// `PUT /serial`.
    pub serial: Option<SerialDevice>,
    /// `PUT /logger`.
    pub logger: Option<LoggerConfig>,
    /// `PUT /metrics`.
    pub metrics: Option<MetricsConfig>,
    /// The kernel entry point: a Kindling extension (`microvm --pvh`), not
    /// in Firecracker's API.
    pub boot_protocol: BootProtocol,
    /// A debug-exit port at 0xf4 (the guest chooses the exit status): a
    /// Kindling extension for test guests (`microvm --debug-exit`), off
    /// by default.
    pub debug_exit: bool,
}

/// Opens `path` read-only and checks it is a regular file.
fn check_file(what: &'static str, path: &str) -> Result<(), ResourceError> {
    if path.is_empty() {
        return Err(ResourceError::EmptyPath(what));
    }
    let file = File::open(path).map_err(|source| ResourceError::OpenFile {
        what,
        path: path.into(),
        source,
    })?;
    let meta = file.metadata().map_err(|source| ResourceError::OpenFile {
        what,
        path: path.into(),
        source,
    })?;
    if !meta.is_file() {
        return Err(ResourceError::NotAFile {
            what,
            path: path.into(),
        });
    }
    Ok(())
}

impl VmResources {
    /// Sets the boot source after checking that the kernel and initrd can
    /// be opened (as Firecracker does; the kernel is loaded at start).
    pub fn set_boot_source(&mut self, boot: BootSource) -> Result<(), ResourceError> {
        check_file("kernel image", &boot.kernel_image_path)?;
        if let Some(initrd) = &boot.initrd_path {
            check_file("initrd", initrd)?;
        }
        self.boot_source = Some(boot);
        Ok(())
    }

    /// Replaces the machine configuration after checking it.
    pub fn set_machine_config(&mut self, machine: MachineConfig) -> Result<(), ResourceError> {
        machine.validate()?;
        self.machine = machine;
        Ok(())
    }

    /// Adds or replaces a drive after opening its image the way the VM
    /// will (so a missing, unreadable or misaligned image is refused now).
    pub fn put_drive(&mut self, drive: Drive) -> Result<(), ResourceError> {
        let id = drive.drive_id.clone();
        if drive.socket.is_some() {
            return Err(ResourceError::Unsupported(
                "vhost-user block devices (socket)",
            ));
        }
        if drive.io_engine == Some(IoEngine::Async) {
            return Err(ResourceError::Unsupported(
                "the Async (io_uring) block engine (use io_engine \"Sync\")",
            ));
        }
        if drive.partuuid.is_some() && !drive.is_root_device {
            return Err(ResourceError::PartuuidWithoutRoot(id));
        }
        if let Some(uuid) = &drive.partuuid {
            if uuid.is_empty() || !uuid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(ResourceError::BadPartuuid(id));
            }
        }
        let path = drive
            .path_on_host
            .as_deref()
            .ok_or_else(|| ResourceError::MissingDrivePath(id.clone()))?;
        if path.is_empty() {
            return Err(ResourceError::EmptyPath("path_on_host"));
        }
        if drive.is_root_device {
            if let Some(root) = self
                .drives
                .iter()
                .find(|d| d.is_root_device && d.drive_id != id)
            {
                return Err(ResourceError::SecondRootDevice {
                    existing: root.drive_id.clone(),
                    new: id,
                });
            }
        }
        open_block(&id, Path::new(path), drive.is_read_only.unwrap_or(false))?;
        let position = self.drives.iter().position(|d| d.drive_id == id);
        match position {
            Some(i) => self.drives[i] = drive,
            None => self.drives.push(drive),
        }
        // The root device is the guest's first disk (vda), as in
        // Firecracker.
        if let Some(i) = self.drives.iter().position(|d| d.is_root_device) {
            let root = self.drives.remove(i);
            self.drives.insert(0, root);
        }
        Ok(())
    }

    /// Adds or replaces a network interface after checking that its TAP
    /// device exists and can be opened (it is opened again at
    /// `InstanceStart`), that its MAC parses, and that no other interface
    /// has the same TAP or MAC.
    pub fn put_network_interface(&mut self, iface: NetworkInterface) -> Result<(), ResourceError> {
        let id = iface.iface_id.clone();
        let mac = iface
            .guest_mac
            .as_deref()
            .map(str::parse::<MacAddr>)
            .transpose()
            .map_err(|source| ResourceError::GuestMac {
                id: id.clone(),
                source,
            })?;
        for other in self.network_interfaces.iter().filter(|n| n.iface_id != id) {
            let clash = if other.host_dev_name == iface.host_dev_name {
                Some(("host_dev_name", iface.host_dev_name.clone()))
            } else {
                let other_mac = other
                    .guest_mac
                    .as_deref()
                    .and_then(|m| m.parse::<MacAddr>().ok());
                match (mac, other_mac) {
                    (Some(a), Some(b)) if a == b => Some(("guest_mac", a.to_string())),
                    _ => None,
                }
            };
            if let Some((what, value)) = clash {
                return Err(ResourceError::NetClash {
                    existing: other.iface_id.clone(),
                    new: id,
                    what,
                    value,
                });
            }
        }
        // Opened and closed at once: a missing, misnamed or busy TAP is
        // refused now rather than at InstanceStart.
        Tap::open(&iface.host_dev_name).map_err(|source| ResourceError::Tap {
            id: id.clone(),
            source,
        })?;
        match self
            .network_interfaces
            .iter()
            .position(|n| n.iface_id == id)
        {
            Some(i) => self.network_interfaces[i] = iface,
            None => self.network_interfaces.push(iface),
        }
        Ok(())
    }

    /// Sets the vsock device after checking its CID and that its socket
    /// can be created (its directory exists, the path does not).
    pub fn set_vsock(&mut self, vsock: VsockDevice) -> Result<(), ResourceError> {
        if vsock.guest_cid < MIN_GUEST_CID || vsock.guest_cid > u64::from(u32::MAX) {
            return Err(ResourceError::GuestCid(vsock.guest_cid));
        }
        if vsock.uds_path.is_empty() {
            return Err(ResourceError::EmptyPath("uds_path"));
        }
        let path = Path::new(&vsock.uds_path);
        let dir = match path.parent() {
            Some(dir) if dir.as_os_str().is_empty() => Path::new("."),
            Some(dir) => dir,
            None => return Err(ResourceError::UdsDirectory(path.into())),
        };
        if !dir.is_dir() {
            return Err(ResourceError::UdsDirectory(path.into()));
        }
        if path.symlink_metadata().is_ok() {
            return Err(ResourceError::UdsExists(path.into()));
        }
        self.vsock = Some(vsock);
        Ok(())
    }

    /// Adds the entropy device.
    pub fn set_entropy(&mut self, entropy: EntropyDevice) -> Result<(), ResourceError> {
        if limits(&entropy.rate_limiter) {
            return Err(ResourceError::Unsupported(
                "rate limiters on the entropy device",
            ));
        }
        self.entropy = Some(entropy);
        Ok(())
    }

    /// Sets where the serial console goes.
    pub fn set_serial(&mut self, serial: SerialDevice) -> Result<(), ResourceError> {
        if serial.rate_limiter.is_some() {
            return Err(ResourceError::Unsupported(
                "rate limiting the serial console",
            ));
        }
        if serial.serial_out_path.as_deref() == Some("") {
            return Err(ResourceError::EmptyPath("serial_out_path"));
        }
        self.serial = Some(serial);
        Ok(())
    }

    /// The kernel command line the VM gets: the boot arguments (or
    /// Kindling's default), then `root=` and `ro`/`rw` for a root drive.
    pub fn cmdline(&self) -> String {
        let mut cmdline = self
            .boot_source
            .as_ref()
            .and_then(|b| b.boot_args.clone())
            .unwrap_or_else(|| DEFAULT_LINUX_CMDLINE.to_string());
        if let Some(root) = self.drives.iter().find(|d| d.is_root_device) {
            let device = match &root.partuuid {
                Some(uuid) => format!("root=PARTUUID={uuid}"),
                None => "root=/dev/vda".to_string(),
            };
            let mode = if root.is_read_only.unwrap_or(false) {
                "ro"
            } else {
                "rw"
            };
            if !cmdline.is_empty() {
                cmdline.push(' ');
            }
            cmdline.push_str(&device);
            cmdline.push(' ');
            cmdline.push_str(mode);
        }
        cmdline
    }

    /// The [`VmConfig`] to build, with `serial` as the console when no
    /// `PUT /serial` named a file. Disks are not in it: they are added
    /// with their metrics by the controller. `None` without a boot source.
    pub fn vm_config(&self, serial: SerialConfig, start_time: StartTime) -> Option<VmConfig> {
        let boot = self.boot_source.as_ref()?;
        Some(VmConfig {
            kernel: KernelSource::Path(boot.kernel_image_path.clone().into()),
            initrd: boot.initrd_path.clone().map(PathBuf::from),
            cmdline: self.cmdline(),
            boot_protocol: self.boot_protocol,
            vcpus: self.machine.vcpu_count,
            memory_mib: self.machine.mem_size_mib,
            memory_backing: match self.machine.huge_pages {
                HugePages::Hugetlbfs2M => Backing::Hugetlbfs2M,
                _ => Backing::Anonymous,
            },
            track_dirty_pages: self.machine.track_dirty_pages,
            serial: match self
                .serial
                .as_ref()
                .and_then(|s| s.serial_out_path.as_ref())
            {
                Some(path) => SerialConfig::File(path.into()),
                None => serial,
            },
            start_time,
            net: self
                .network_interfaces
                .iter()
                .map(|n| NetConfig {
                    iface_id: n.iface_id.clone(),
                    host_dev_name: n.host_dev_name.clone(),
                    guest_mac: n.guest_mac.as_deref().and_then(|m| m.parse().ok()),
                    rx_rate_limiter: n.rx_rate_limiter.as_ref().map(|r| r.to_config()),
                    tx_rate_limiter: n.tx_rate_limiter.as_ref().map(|r| r.to_config()),
                })
                .collect(),
            vsock: self.vsock.as_ref().map(|v| VsockConfig {
                guest_cid: v.guest_cid,
                uds_path: v.uds_path.clone().into(),
            }),
            debug_exit: self.debug_exit,
            ..VmConfig::default()
        })
    }

    /// The whole configuration in Firecracker's `FullVmConfiguration`
    /// shape (`GET /vm/config`, and the config-file format).
    pub fn full_config(&self) -> serde_json::Value {
        #[derive(Serialize)]
        struct Full<'a> {
            #[serde(rename = "boot-source", skip_serializing_if = "Option::is_none")]
            boot_source: Option<&'a BootSource>,
            drives: Vec<Drive>,
            #[serde(rename = "machine-config")]
            machine: &'a MachineConfig,
            #[serde(rename = "network-interfaces")]
            network_interfaces: &'a [NetworkInterface],
            #[serde(skip_serializing_if = "Option::is_none")]
            vsock: Option<&'a VsockDevice>,
            #[serde(skip_serializing_if = "Option::is_none")]
            entropy: Option<&'a EntropyDevice>,
            #[serde(skip_serializing_if = "Option::is_none")]
            logger: Option<&'a LoggerConfig>,
            #[serde(skip_serializing_if = "Option::is_none")]
            metrics: Option<&'a MetricsConfig>,
        }
        let drives = self
            .drives
            .iter()
            .map(|d| Drive {
                is_read_only: Some(d.is_read_only.unwrap_or(false)),
                io_engine: Some(IoEngine::Sync),
                ..d.clone()
            })
            .collect();
        serde_json::to_value(Full {
            boot_source: self.boot_source.as_ref(),
            drives,
            machine: &self.machine,
            network_interfaces: &self.network_interfaces,
            vsock: self.vsock.as_ref(),
            entropy: self.entropy.as_ref(),
            logger: self.logger.as_ref(),
            metrics: self.metrics.as_ref(),
        })
        .unwrap_or(serde_json::Value::Null)
    }
}

/// Opens a drive's image as a block device (checks it can be used).
pub(crate) fn open_block(id: &str, path: &Path, read_only: bool) -> Result<Block, ResourceError> {
    let config = BlockConfig {
        read_only,
        ..BlockConfig::new(path)
    };
    Block::new(&config).map_err(|source| ResourceError::Block {
        id: id.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::RateLimiter;

    struct Files(PathBuf);

    impl Files {
        fn new(tag: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("kindling-api-res-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Files(dir)
        }
        fn file(&self, name: &str, len: usize) -> String {
            let p = self.0.join(name);
            std::fs::write(&p, vec![0u8; len]).unwrap();
            p.to_str().unwrap().to_string()
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn drive(id: &str, path: &str, root: bool) -> Drive {
        Drive {
            drive_id: id.into(),
            partuuid: None,
            is_root_device: root,
            cache_type: Default::default(),
            is_read_only: Some(false),
            path_on_host: Some(path.into()),
            rate_limiter: None,
            io_engine: None,
            socket: None,
        }
    }

    #[test]
    fn boot_source_files_are_checked() {
        let f = Files::new("boot");
        let kernel = f.file("k", 10);
        let mut r = VmResources::default();
        let boot = |k: &str, i: Option<&str>| BootSource {
            kernel_image_path: k.into(),
            initrd_path: i.map(str::to_string),
            boot_args: None,
        };
        let e = r.set_boot_source(boot("/nonexistent/k", None)).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot open kernel image /nonexistent/k"),
            "{e}"
        );
        let e = r.set_boot_source(boot("/", None)).unwrap_err();
        assert!(matches!(e, ResourceError::NotAFile { .. }), "{e}");
        let e = r.set_boot_source(boot("", None)).unwrap_err();
        assert!(matches!(e, ResourceError::EmptyPath(_)));
        let e = r
            .set_boot_source(boot(&kernel, Some("/nonexistent/i")))
            .unwrap_err();
        assert!(e.to_string().contains("initrd"), "{e}");
        assert!(r.boot_source.is_none());
        assert!(r.vm_config(SerialConfig::Off, StartTime::now()).is_none());
        r.set_boot_source(boot(&kernel, Some(&kernel))).unwrap();
        let c = r.vm_config(SerialConfig::Off, StartTime::now()).unwrap();
        assert_eq!(c.cmdline, DEFAULT_LINUX_CMDLINE);
        assert_eq!(c.initrd, Some(PathBuf::from(&kernel)));
        assert_eq!((c.vcpus, c.memory_mib), (1, 128));
    }

    #[test]
    fn drives_root_first_and_checked() {
        let f = Files::new("drives");
        let a = f.file("a.img", 4096);
        let b = f.file("b.img", 8192);
        let odd = f.file("odd.img", 1000);
        let mut r = VmResources::default();
        r.put_drive(drive("data", &a, false)).unwrap();
        r.put_drive(drive("root", &b, true)).unwrap();
        let ids: Vec<_> = r.drives.iter().map(|d| d.drive_id.as_str()).collect();
        assert_eq!(ids, ["root", "data"]);
        // Updating in place keeps the order.
        r.put_drive(drive("data", &b, false)).unwrap();
        assert_eq!(r.drives[1].path_on_host.as_deref(), Some(b.as_str()));
        let e = r.put_drive(drive("other", &a, true)).unwrap_err();
        assert!(matches!(e, ResourceError::SecondRootDevice { .. }), "{e}");
        let e = r.put_drive(drive("x", &odd, false)).unwrap_err();
        assert!(e.to_string().contains("not a multiple of 512"), "{e}");
        let e = r
            .put_drive(drive("x", "/nonexistent.img", false))
            .unwrap_err();
        assert!(e.to_string().contains("cannot open disk image"), "{e}");
        let mut d = drive("x", &a, false);
        d.path_on_host = None;
        assert!(matches!(
            r.put_drive(d),
            Err(ResourceError::MissingDrivePath(_))
        ));
        let mut d = drive("x", &a, false);
        d.socket = Some("/s".into());
        assert!(r
            .put_drive(d)
            .unwrap_err()
            .to_string()
            .contains("vhost-user"));
        let mut d = drive("x", &a, false);
        d.io_engine = Some(IoEngine::Async);
        assert!(r.put_drive(d).unwrap_err().to_string().contains("Async"));
        let mut d = drive("x", &a, false);
        d.rate_limiter = Some(RateLimiter {
            bandwidth: Some(crate::models::TokenBucket {
                size: 1,
                one_time_burst: None,
                refill_time: 1,
            }),
            ops: None,
        });
        r.put_drive(d).unwrap();
        let mut d = drive("x", &a, false);
        d.rate_limiter = Some(RateLimiter::default());
        r.put_drive(d).unwrap();
        let mut d = drive("x", &a, false);
        d.partuuid = Some("abc".into());
        assert!(matches!(
            r.put_drive(d),
            Err(ResourceError::PartuuidWithoutRoot(_))
        ));
        assert_eq!(r.drives.len(), 3);
        assert!(
            r.cmdline().ends_with(" root=/dev/vda rw"),
            "{}",
            r.cmdline()
        );
        let mut d = drive("root", &b, true);
        d.partuuid = Some("1234-ab".into());
        d.is_read_only = Some(true);
        r.put_drive(d).unwrap();
        assert!(
            r.cmdline().ends_with(" root=PARTUUID=1234-ab ro"),
            "{}",
            r.cmdline()
        );
        let mut d = drive("root", &b, true);
        d.partuuid = Some("x rw init=/bin/sh".into());
        assert!(matches!(r.put_drive(d), Err(ResourceError::BadPartuuid(_))));
        let full = r.full_config();
        assert_eq!(full["drives"][0]["drive_id"], "root");
        assert_eq!(full["drives"][1]["io_engine"], "Sync");
        assert_eq!(full["machine-config"]["vcpu_count"], 1);
        assert!(full.get("boot-source").is_none());
    }

    #[test]
    fn devices_and_machine() {
        let mut r = VmResources::default();
        r.set_entropy(EntropyDevice::default()).unwrap();
        let limited = EntropyDevice {
            rate_limiter: Some(RateLimiter {
                bandwidth: None,
                ops: Some(crate::models::TokenBucket {
                    size: 1,
                    one_time_burst: Some(1),
                    refill_time: 1,
                }),
            }),
        };
        assert!(r.set_entropy(limited).is_err());
        r.set_serial(SerialDevice {
            serial_out_path: Some("/tmp/x".into()),
            rate_limiter: None,
        })
        .unwrap();
        assert!(r
            .set_serial(SerialDevice {
                serial_out_path: Some(String::new()),
                rate_limiter: None
            })
            .is_err());
        assert!(r
            .set_machine_config(MachineConfig {
                vcpu_count: 0,
                ..MachineConfig::default()
            })
            .is_err());
        r.set_machine_config(MachineConfig {
            vcpu_count: 2,
            mem_size_mib: 64,
            huge_pages: HugePages::Hugetlbfs2M,
            track_dirty_pages: true,
            ..MachineConfig::default()
        })
        .unwrap();
        r.boot_source = Some(BootSource {
            kernel_image_path: "/k".into(),
            initrd_path: None,
            boot_args: Some(String::new()),
        });
        let c = r.vm_config(SerialConfig::Stdout, StartTime::now()).unwrap();
        assert_eq!(c.memory_backing, Backing::Hugetlbfs2M);
        assert!(c.track_dirty_pages);
        assert!(matches!(c.serial, SerialConfig::File(_)));
        assert_eq!(c.cmdline, "");
    }

    fn iface(id: &str, tap: &str, mac: Option<&str>) -> NetworkInterface {
        NetworkInterface {
            iface_id: id.into(),
            host_dev_name: tap.into(),
            guest_mac: mac.map(str::to_string),
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        }
    }

    #[test]
    fn network_interfaces_are_checked() {
        let mut r = VmResources::default();
        let e = r
            .put_network_interface(iface("eth0", "kdlnotap0", None))
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("there is no network interface \"kdlnotap0\""),
            "{e}"
        );
        let e = r
            .put_network_interface(iface("eth0", "", None))
            .unwrap_err();
        assert!(matches!(e, ResourceError::Tap { .. }), "{e}");
        let e = r
            .put_network_interface(iface("eth0", &"t".repeat(40), None))
            .unwrap_err();
        assert!(e.to_string().contains("longer than"), "{e}");
        let e = r
            .put_network_interface(iface("eth0", "kdlnotap0", Some("06:00:zz:00:00:01")))
            .unwrap_err();
        assert!(matches!(e, ResourceError::GuestMac { .. }), "{e}");
        // Clashes are found before the TAP is opened.
        r.network_interfaces
            .push(iface("eth0", "kdlnotap0", Some("06:00:00:00:00:01")));
        let e = r
            .put_network_interface(iface("eth1", "kdlnotap0", None))
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("host_dev_name kdlnotap0 is already used by network interface eth0"),
            "{e}"
        );
        let e = r
            .put_network_interface(iface("eth1", "kdlnotap1", Some("06:00:00:00:00:01")))
            .unwrap_err();
        assert!(
            matches!(
                e,
                ResourceError::NetClash {
                    what: "guest_mac",
                    ..
                }
            ),
            "{e}"
        );
        let kernel_dir = Files::new("net");
        let kernel = kernel_dir.file("k", 10);
        r.set_boot_source(BootSource {
            kernel_image_path: kernel,
            initrd_path: None,
            boot_args: None,
        })
        .unwrap();
        r.network_interfaces[0].tx_rate_limiter = Some(RateLimiter {
            bandwidth: None,
            ops: Some(crate::models::TokenBucket {
                size: 5,
                one_time_burst: Some(2),
                refill_time: 10,
            }),
        });
        let c = r.vm_config(SerialConfig::Off, StartTime::now()).unwrap();
        assert_eq!(c.net.len(), 1);
        assert_eq!(c.net[0].host_dev_name, "kdlnotap0");
        assert_eq!(c.net[0].guest_mac.unwrap().to_string(), "06:00:00:00:00:01");
        assert_eq!(
            c.net[0]
                .tx_rate_limiter
                .unwrap()
                .ops
                .unwrap()
                .one_time_burst,
            2
        );
        assert_eq!(c.net[0].rx_rate_limiter, None);
        let full = r.full_config();
        assert_eq!(full["network-interfaces"][0]["iface_id"], "eth0");
    }

    #[test]
    fn vsock_is_checked() {
        let f = Files::new("vsock");
        let existing = f.file("taken.sock", 0);
        let dir = f.0.to_str().unwrap().to_string();
        let mut r = VmResources::default();
        let v = |cid: u64, path: &str| VsockDevice {
            vsock_id: None,
            guest_cid: cid,
            uds_path: path.into(),
        };
        for cid in [0, 1, 2, 1 << 32] {
            assert!(matches!(
                r.set_vsock(v(cid, &format!("{dir}/v.sock"))),
                Err(ResourceError::GuestCid(_))
            ));
        }
        assert!(matches!(
            r.set_vsock(v(3, "")),
            Err(ResourceError::EmptyPath("uds_path"))
        ));
        let e = r.set_vsock(v(3, "/nonexistent/dir/v.sock")).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        let e = r.set_vsock(v(3, &existing)).unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
        assert!(r.vsock.is_none());
        r.set_vsock(v(3, &format!("{dir}/v.sock"))).unwrap();
        r.set_vsock(v(42, &format!("{dir}/w.sock"))).unwrap();
        assert_eq!(r.vsock.as_ref().unwrap().guest_cid, 42);
        assert_eq!(r.full_config()["vsock"]["guest_cid"], 42);
    }
}
