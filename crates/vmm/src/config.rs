//! What a microVM is made of.

use std::borrow::Cow;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::console::ConsoleEscape;
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

/// The `--disk` syntax, for error messages.
const DISK_SYNTAX: &str = "PATH[,readonly][,engine=sync|io_uring] or [OPTION,]...path=PATH";

impl std::str::FromStr for DiskConfig {
    type Err = String;

    /// Parses a disk in one of two forms:
    ///
    /// - `PATH[,readonly][,engine=sync|io_uring]` (`ro` is an alias of
    ///   `readonly`; options in any order after the path). A comma in
    ///   `PATH` is kept when what follows it contains a `/` (`dir,x/a.img`);
    ///   any other part after a comma must be an option.
    /// - `[OPTION,]...path=PATH`: the options first, then `path=`, which
    ///   takes the rest of the argument verbatim, commas included
    ///   (`readonly,path=a,b.img` is the file `a,b.img`, read-only). This
    ///   form is chosen when the argument starts with `path=` or contains
    ///   `,path=`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut read_only = false;
        let mut engine = BlockEngine::default();
        let mut option = |opt: &str| -> Result<bool, String> {
            if matches!(opt, "readonly" | "ro") {
                read_only = true;
            } else if let Some(name) = opt.strip_prefix("engine=") {
                engine = name.parse().map_err(|e| format!("{e} in '{s}'"))?;
            } else {
                return Ok(false);
            }
            Ok(true)
        };
        let unknown = |opt: &str| {
            format!(
                "unknown disk option '{opt}' in '{s}' (expected {DISK_SYNTAX}; \
                 a path with a comma is given as path=PATH)"
            )
        };
        let path = match key_form_path(s) {
            Some((options, path)) => {
                for opt in options.split(',').filter(|o| !o.is_empty()) {
                    if !option(opt)? {
                        return Err(unknown(opt));
                    }
                }
                path
            }
            None => {
                let mut path = s;
                while let Some((head, opt)) = path.rsplit_once(',') {
                    if option(opt)? {
                        path = head;
                    } else if opt.contains('/') {
                        break; // a comma inside the path
                    } else {
                        return Err(unknown(opt));
                    }
                }
                path
            }
        };
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

/// For the `[OPTION,]...path=PATH` form: the options before `path=` (with
/// their trailing comma) and the path after it.
fn key_form_path(s: &str) -> Option<(&str, &str)> {
    if let Some(path) = s.strip_prefix("path=") {
        return Some(("", path));
    }
    let at = s.find(",path=")?;
    Some((&s[..at], &s[at + ",path=".len()..]))
}

/// A virtio-vsock device (Firecracker's `vsock` object without its
/// `vsock_id`): the guest's CID and the host Unix socket it is reached
/// through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockConfig {
    /// The guest's context id (3 or more).
    pub guest_cid: u64,
    /// The Unix socket the device listens on for host connections
    /// (`CONNECT <port>\n`); guest connections to host port `P` go to
    /// `<uds_path>_<P>`. It must not exist yet and its directory must.
    pub uds_path: PathBuf,
}

/// The vsock syntax, for errors.
const VSOCK_SYNTAX: &str = "cid=N,uds=PATH";

impl std::str::FromStr for VsockConfig {
    type Err = String;

    /// Parses `cid=N,uds=PATH` (in either order; the path may contain
    /// commas when it comes last).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut cid = None;
        let mut uds = None;
        let mut rest = s;
        while !rest.is_empty() {
            if let Some(path) = rest.strip_prefix("uds=") {
                // The path runs to the end unless a `,cid=` follows.
                let (path, tail) = match path.rfind(",cid=") {
                    Some(at) => (&path[..at], &path[at + 1..]),
                    None => (path, ""),
                };
                uds = Some(PathBuf::from(path));
                rest = tail;
            } else if let Some(value) = rest.strip_prefix("cid=") {
                let (value, tail) = value.split_once(',').unwrap_or((value, ""));
                cid = Some(value.parse::<u64>().map_err(|_| {
                    format!(
                        "vsock cid '{value}' is not a number in '{s}' (expected {VSOCK_SYNTAX})"
                    )
                })?);
                rest = tail;
            } else {
                let option = rest.split(',').next().unwrap_or(rest);
                return Err(format!(
                    "unknown vsock option '{option}' in '{s}' (expected {VSOCK_SYNTAX})"
                ));
            }
        }
        match (cid, uds) {
            (Some(guest_cid), Some(uds_path)) if !uds_path.as_os_str().is_empty() => Ok(Self {
                guest_cid,
                uds_path,
            }),
            _ => Err(format!(
                "'{s}' needs both cid= and uds= (expected {VSOCK_SYNTAX})"
            )),
        }
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
    /// A virtio-vsock device.
    pub vsock: Option<VsockConfig>,
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
    /// Stop the VM in order on SIGTERM, SIGINT and SIGHUP (vCPUs stopped,
    /// disks drained and flushed, serial output written; the run ends with
    /// [`ExitReason::Signal`](kindling_devices::ExitReason::Signal)). The
    /// program must have called
    /// [`signals::block_termination_signals`](crate::signals::block_termination_signals)
    /// first thing in `main`.
    pub stop_on_signals: bool,
    /// Where the boot timer logs (standard error by default).
    pub boot_timer_log: Arc<Mutex<dyn Write + Send>>,
    /// The console escape (Ctrl-A x ends the VM, see [`crate::console`]):
    /// only looked at with [`SerialConfig::Stdout`]. `None` (the default)
    /// passes standard input to the guest unchanged.
    pub console_escape: Option<ConsoleEscape>,
    /// Put a debug-exit port at I/O port 0xf4: a byte the guest writes
    /// there ends the VM with that status
    /// ([`ExitReason::Status`](kindling_devices::ExitReason::Status)).
    /// Off by default, since it lets the guest choose the VMM's exit
    /// status; test guests (Kindling's own included) turn it on.
    pub debug_exit: bool,
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
            .field("vsock", &self.vsock)
            .field("memory_backing", &self.memory_backing)
            .field("track_dirty_pages", &self.track_dirty_pages)
            .field("serial", &self.serial)
            .field("stop_on_signals", &self.stop_on_signals)
            .field("console_escape", &self.console_escape)
            .field("debug_exit", &self.debug_exit)
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
            vsock: None,
            memory_backing: Backing::Anonymous,
            track_dirty_pages: false,
            serial: SerialConfig::Stdout,
            stop_on_signals: false,
            start_time: StartTime::now(),
            boot_timer_log: Arc::new(Mutex::new(std::io::stderr())),
            console_escape: None,
            debug_exit: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(s: &str) -> DiskConfig {
        s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn disk_options_parse() {
        let d = disk("/img/root.ext4");
        assert_eq!(d.path, PathBuf::from("/img/root.ext4"));
        assert!(!d.read_only);
        let d = disk("a.img,readonly");
        assert!(d.read_only);
        assert_eq!(d.path, PathBuf::from("a.img"));
        let d = disk("a.img,ro");
        assert!(d.read_only);
        // A comma inside a path is kept when a '/' follows it.
        let d = disk("dir,x/a.img");
        assert_eq!(d.path, PathBuf::from("dir,x/a.img"));
        assert!("a.img,rw"
            .parse::<DiskConfig>()
            .unwrap_err()
            .contains("unknown disk option 'rw'"));
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
    fn disk_path_key_takes_the_rest_verbatim() {
        let d = disk("path=a,b.img");
        assert_eq!((d.path, d.read_only), (PathBuf::from("a,b.img"), false));
        let d = disk("readonly,path=a,b.img");
        assert_eq!((d.path, d.read_only), (PathBuf::from("a,b.img"), true));
        let d = disk("ro,path=/x/a,b");
        assert_eq!((d.path, d.read_only), (PathBuf::from("/x/a,b"), true));
        // Options after path= are part of the path: no ambiguity.
        let d = disk("path=a.img,readonly");
        assert_eq!(
            (d.path, d.read_only),
            (PathBuf::from("a.img,readonly"), false)
        );
        // A file whose name starts with "path=".
        let d = disk("path=path=x");
        assert_eq!(d.path, PathBuf::from("path=x"));
        // Only the first ",path=" separates.
        let d = disk("ro,path=a,path=b");
        assert_eq!((d.path, d.read_only), (PathBuf::from("a,path=b"), true));
    }

    #[test]
    fn disk_path_key_errors() {
        let e = "path=".parse::<DiskConfig>().unwrap_err();
        assert!(e.contains("names no disk image"), "{e}");
        let e = "readonly,path=".parse::<DiskConfig>().unwrap_err();
        assert!(e.contains("names no disk image"), "{e}");
        let e = "rw,path=a.img".parse::<DiskConfig>().unwrap_err();
        assert!(e.contains("unknown disk option 'rw'"), "{e}");
        let e = "ro,,cache,path=a.img".parse::<DiskConfig>().unwrap_err();
        assert!(e.contains("unknown disk option 'cache'"), "{e}");
        // A comma in a plain path without '/' after it points to path=.
        let e = "a,b.img".parse::<DiskConfig>().unwrap_err();
        assert!(e.contains("path=PATH"), "{e}");
    }

    #[test]
    fn vsock_options_parse() {
        let v: VsockConfig = "cid=3,uds=/tmp/v.sock".parse().unwrap();
        assert_eq!(v.guest_cid, 3);
        assert_eq!(v.uds_path, PathBuf::from("/tmp/v.sock"));
        let v: VsockConfig = "uds=/tmp/a,b.sock,cid=42".parse().unwrap();
        assert_eq!(
            (v.guest_cid, v.uds_path),
            (42, PathBuf::from("/tmp/a,b.sock"))
        );
        let v: VsockConfig = "cid=5,uds=/tmp/a,b".parse().unwrap();
        assert_eq!(v.uds_path, PathBuf::from("/tmp/a,b"));
        assert_eq!(
            "cid=x,uds=/a".parse::<VsockConfig>().unwrap_err(),
            "vsock cid 'x' is not a number in 'cid=x,uds=/a' (expected cid=N,uds=PATH)"
        );
        assert!("cid=3"
            .parse::<VsockConfig>()
            .unwrap_err()
            .contains("needs both"));
        assert!("uds=/a"
            .parse::<VsockConfig>()
            .unwrap_err()
            .contains("needs both"));
        assert!("cid=3,uds=".parse::<VsockConfig>().is_err());
        assert!("".parse::<VsockConfig>().is_err());
        assert!("cid=3,port=4,uds=/a"
            .parse::<VsockConfig>()
            .unwrap_err()
            .contains("unknown vsock option 'port=4'"));
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
