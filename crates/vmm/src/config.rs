//! What a microVM is made of.

use std::borrow::Cow;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kindling_devices::legacy::StartTime;
use kindling_memory::Backing;
use kindling_virtio::block::BlockEngine;
use kindling_virtio::net::MacAddr;
use kindling_virtio::rate_limiter::RateLimiterConfig;

/// The command line given to a Linux kernel when the user gives none.
pub const DEFAULT_LINUX_CMDLINE: &str = "console=ttyS0 reboot=k panic=1 pci=off";

/// Where the kernel image comes from.
#[derive(Debug, Clone)]
pub enum KernelSource {
    /// A file: ELF `vmlinux` or bzImage.
    Path(PathBuf),
    /// An image already in memory: borrowed for the program's lifetime
    /// (`Cow::Borrowed`, e.g. one embedded in the binary, never copied) or
    /// owned (`Cow::Owned`).
    Bytes(Cow<'static, [u8]>),
}

/// Which entry point of the kernel the boot vCPU starts at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BootProtocol {
    /// The 64-bit entry of the Linux boot protocol (ELF or bzImage).
    #[default]
    Linux64,
    /// The PVH entry of an ELF `vmlinux` that carries the PVH note.
    Pvh,
}

/// A virtio-block disk backed by a raw image file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// The image file.
    pub path: PathBuf,
    /// Refuse guest writes (the device offers VIRTIO_BLK_F_RO).
    pub read_only: bool,
    /// The I/O engine (synchronous by default).
    pub engine: BlockEngine,
    /// Limits on the guest's requests (Firecracker's `rate_limiter`).
    pub rate_limiter: Option<RateLimiterConfig>,
}

/// The disk syntax, for errors.
const DISK_SYNTAX: &str = "PATH[,readonly][,engine=sync|io_uring]";

impl std::str::FromStr for DiskConfig {
    type Err = String;

    /// Parses `PATH[,readonly][,engine=sync|io_uring]` (`ro` for
    /// `readonly`; options in any order after the path).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut path = s;
        let mut read_only = false;
        let mut engine = BlockEngine::default();
        while let Some((head, opt)) = path.rsplit_once(',') {
            if matches!(opt, "readonly" | "ro") {
                read_only = true;
            } else if let Some(name) = opt.strip_prefix("engine=") {
                engine = name.parse().map_err(|e| format!("{e} in '{s}'"))?;
            } else if !opt.contains('/') {
                return Err(format!(
                    "unknown disk option '{opt}' in '{s}' (expected {DISK_SYNTAX})"
                ));
            } else {
                // A comma inside the path.
                break;
            }
            path = head;
        }
        if path.is_empty() {
            return Err(format!(
                "'{s}' names no disk image (expected {DISK_SYNTAX})"
            ));
        }
        Ok(Self {
            path: path.into(),
            read_only,
            engine,
            rate_limiter: None,
        })
    }
}

/// A virtio-net interface on a host TAP device, with Firecracker's field
/// names (`PUT /network-interfaces/{iface_id}`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// The interface's name for the API.
    pub iface_id: String,
    /// The host TAP interface, created beforehand
    /// (`ip tuntap add NAME mode tap`).
    pub host_dev_name: String,
    /// The guest's MAC address; without one the guest picks its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<MacAddr>,
    /// Limits on what the guest receives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiterConfig>,
    /// Limits on what the guest sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiterConfig>,
}

impl NetConfig {
    /// An interface `iface_id` on TAP `host_dev_name`, no fixed MAC, no
    /// limits.
    pub fn new(iface_id: impl Into<String>, host_dev_name: impl Into<String>) -> Self {
        Self {
            iface_id: iface_id.into(),
            host_dev_name: host_dev_name.into(),
            guest_mac: None,
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        }
    }
}

/// The network interface syntax, for errors.
const NET_SYNTAX: &str = "tap=NAME[,mac=aa:bb:cc:dd:ee:ff][,id=IFACE_ID]";

impl std::str::FromStr for NetConfig {
    type Err = String;

    /// Parses `tap=NAME[,mac=aa:bb:cc:dd:ee:ff][,id=IFACE_ID]`; the
    /// `iface_id` is the TAP name unless `id=` gives one.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (mut tap, mut mac, mut id) = (None, None, None);
        for opt in s.split(',') {
            let (key, value) = opt.split_once('=').ok_or_else(|| {
                format!("network option '{opt}' in '{s}' is not KEY=VALUE (expected {NET_SYNTAX})")
            })?;
            match key {
                "tap" if !value.is_empty() => tap = Some(value.to_string()),
                "mac" => {
                    mac = Some(
                        value
                            .parse::<MacAddr>()
                            .map_err(|e| format!("{e} in '{s}'"))?,
                    )
                }
                "id" if !value.is_empty() => id = Some(value.to_string()),
                _ => {
                    return Err(format!(
                        "unknown or empty network option '{opt}' in '{s}' (expected {NET_SYNTAX})"
                    ))
                }
            }
        }
        let tap =
            tap.ok_or_else(|| format!("'{s}' names no TAP device (expected {NET_SYNTAX})"))?;
        Ok(Self {
            iface_id: id.unwrap_or_else(|| tap.clone()),
            host_dev_name: tap,
            guest_mac: mac,
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        })
    }
}

/// Where the serial console's output goes.
pub enum SerialConfig {
    /// The VMM's standard output (input comes from standard input).
    Stdout,
    /// Nowhere.
    Off,
    /// A file, created or truncated.
    File(PathBuf),
    /// Any writer, for embedding and tests.
    Writer(Box<dyn Write + Send>),
}

impl std::fmt::Debug for SerialConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SerialConfig::Stdout => write!(f, "Stdout"),
            SerialConfig::Off => write!(f, "Off"),
            SerialConfig::File(p) => write!(f, "File({})", p.display()),
            SerialConfig::Writer(_) => write!(f, "Writer(..)"),
        }
    }
}

/// The description of a microVM.
pub struct VmConfig {
    /// The kernel image.
    pub kernel: KernelSource,
    /// An optional initial ramdisk.
    pub initrd: Option<PathBuf>,
    /// The kernel command line.
    pub cmdline: String,
    /// The kernel entry point to use.
    pub boot_protocol: BootProtocol,
    /// Number of vCPUs (1 to 254).
    pub vcpus: u8,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// virtio-block disks, in the order the guest sees them.
    pub disks: Vec<DiskConfig>,
    /// virtio-net interfaces, in the order the guest sees them (after the
    /// disks).
    pub net: Vec<NetConfig>,
    /// Whether to add a virtio-rng (entropy) device.
    pub entropy: bool,
    /// What backs guest RAM.
    pub memory_backing: Backing,
    /// Register guest RAM with KVM's dirty logging, so the guest's own
    /// writes can be read back with [`Vm::dirty_pages`] (diff snapshots).
    /// The VMM's writes are always tracked.
    ///
    /// [`Vm::dirty_pages`]: kindling_vcpu::Vm::dirty_pages
    pub track_dirty_pages: bool,
    /// The serial console.
    pub serial: SerialConfig,
    /// When the VMM process started, for the boot timer.
    pub start_time: StartTime,
    /// Where the boot timer logs (standard error by default).
    pub boot_timer_log: Arc<Mutex<dyn Write + Send>>,
}

impl std::fmt::Debug for VmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmConfig")
            .field("kernel", &self.kernel)
            .field("initrd", &self.initrd)
            .field("cmdline", &self.cmdline)
            .field("boot_protocol", &self.boot_protocol)
            .field("vcpus", &self.vcpus)
            .field("memory_mib", &self.memory_mib)
            .field("disks", &self.disks)
            .field("net", &self.net)
            .field("entropy", &self.entropy)
            .field("memory_backing", &self.memory_backing)
            .field("track_dirty_pages", &self.track_dirty_pages)
            .field("serial", &self.serial)
            .finish()
    }
}

impl Default for VmConfig {
    fn default() -> Self {
        Self {
            kernel: KernelSource::Path(PathBuf::new()),
            initrd: None,
            cmdline: DEFAULT_LINUX_CMDLINE.to_string(),
            boot_protocol: BootProtocol::Linux64,
            vcpus: 1,
            memory_mib: 128,
            disks: Vec::new(),
            net: Vec::new(),
            entropy: false,
            memory_backing: Backing::Anonymous,
            track_dirty_pages: false,
            serial: SerialConfig::Stdout,
            start_time: StartTime::now(),
            boot_timer_log: Arc::new(Mutex::new(std::io::stderr())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_options_parse() {
        let d: DiskConfig = "/img/root.ext4".parse().unwrap();
        assert_eq!(d.path, PathBuf::from("/img/root.ext4"));
        assert!(!d.read_only);
        let d: DiskConfig = "a.img,readonly".parse().unwrap();
        assert!(d.read_only);
        assert_eq!(d.path, PathBuf::from("a.img"));
        let d: DiskConfig = "a.img,ro".parse().unwrap();
        assert!(d.read_only);
        // A comma inside a path is kept.
        let d: DiskConfig = "dir,x/a.img".parse().unwrap();
        assert_eq!(d.path, PathBuf::from("dir,x/a.img"));
        assert!("a.img,rw"
            .parse::<DiskConfig>()
            .unwrap_err()
            .contains("unknown disk option"));
        assert!("".parse::<DiskConfig>().is_err());
        assert_eq!(d.engine, BlockEngine::Sync);
        let d: DiskConfig = "a.img,engine=io_uring".parse().unwrap();
        assert_eq!((d.engine, d.read_only), (BlockEngine::IoUring, false));
        let d: DiskConfig = "a.img,engine=io_uring,ro".parse().unwrap();
        assert_eq!((d.engine, d.read_only), (BlockEngine::IoUring, true));
        assert_eq!(d.path, PathBuf::from("a.img"));
        let d: DiskConfig = "a.img,readonly,engine=sync".parse().unwrap();
        assert_eq!((d.engine, d.read_only), (BlockEngine::Sync, true));
        let e = "x,engine=bogus".parse::<DiskConfig>().unwrap_err();
        assert_eq!(
            e,
            "unknown block engine \"bogus\": expected sync or io_uring in 'x,engine=bogus'"
        );
        assert!(",engine=sync".parse::<DiskConfig>().is_err());
        assert!(",readonly".parse::<DiskConfig>().is_err());
    }

    #[test]
    fn net_options_parse() {
        let n: NetConfig = "tap=tap0".parse().unwrap();
        assert_eq!(n, NetConfig::new("tap0", "tap0"));
        let n: NetConfig = "mac=06:00:00:00:00:01,tap=t1,id=eth0".parse().unwrap();
        assert_eq!(
            (n.iface_id.as_str(), n.host_dev_name.as_str()),
            ("eth0", "t1")
        );
        assert_eq!(n.guest_mac.unwrap().to_string(), "06:00:00:00:00:01");
        for (bad, why) in [
            ("", "not KEY=VALUE"),
            ("tap=", "unknown or empty"),
            ("mac=06:00:00:00:00:01", "names no TAP"),
            ("tap=a,mac=zz", "invalid MAC address"),
            (
                "tap=a,speed=10",
                "unknown or empty network option 'speed=10'",
            ),
        ] {
            let e = bad.parse::<NetConfig>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn net_config_uses_firecracker_field_names() {
        let n: NetConfig = serde_json::from_str(
            r#"{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:ac:10:00:02",
                "rx_rate_limiter": {"bandwidth": {"size": 1000, "refill_time": 100}},
                "tx_rate_limiter": {"ops": {"size": 10, "one_time_burst": 5, "refill_time": 1000}}}"#,
        )
        .unwrap();
        assert_eq!(n.iface_id, "eth0");
        assert_eq!(n.rx_rate_limiter.unwrap().bandwidth.unwrap().size, 1000);
        assert_eq!(n.tx_rate_limiter.unwrap().ops.unwrap().one_time_burst, 5);
        assert!(serde_json::from_str::<NetConfig>(
            r#"{"iface_id": "a", "host_dev_name": "b", "mtu": 1}"#
        )
        .is_err());
    }
}
