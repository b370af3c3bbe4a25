//! `microvm`: the Kindling example VMM.
//!
//! ```text
//! cargo run --release --example microvm -- [--kernel PATH] [--initrd PATH]
//!     [--cmdline STR] [--cpus N] [--memory MIB] [--pvh]
//!     [--disk PATH[,readonly][,engine=sync|io_uring]]...
//!     [--net tap=NAME[,mac=aa:bb:cc:dd:ee:ff]]...
//!     [--entropy] [--serial stdout|off|file=PATH]
//! ```
//!
//! With no `--kernel` it boots the embedded test guest. It exits with the
//! guest's status (the debug-exit port), 0 after a guest reset or power-off,
//! and 1 with one line on stderr for any error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kindling::vmm::{
    BootProtocol, DiskConfig, KernelSource, NetConfig, SerialConfig, StartTime, VmConfig, Vmm,
    DEFAULT_LINUX_CMDLINE,
};

/// Boot a KVM microVM.
#[derive(Debug, Parser)]
#[command(name = "microvm", version, about)]
struct Args {
    /// Kernel image: ELF vmlinux or bzImage. Default: the embedded test guest.
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// Initial ramdisk.
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, value_name = "STR")]
    cmdline: Option<String>,
    /// Boot an ELF vmlinux through its PVH entry note instead of the 64-bit
    /// Linux entry.
    #[arg(long)]
    pvh: bool,
    /// Number of vCPUs (1-254).
    #[arg(
        long,
        default_value_t = 1,
        value_name = "N",
        allow_hyphen_values = true
    )]
    cpus: u8,
    /// Guest memory in MiB.
    #[arg(
        long,
        default_value_t = 128,
        value_name = "MIB",
        allow_hyphen_values = true
    )]
    memory: u64,
    /// A virtio-block disk backed by a raw image (repeatable); engine=io_uring
    /// uses the io_uring engine (sync, the default, does positioned reads
    /// and writes on the event loop).
    #[arg(long, value_name = "PATH[,readonly][,engine=sync|io_uring]")]
    disk: Vec<DiskConfig>,
    /// A virtio-net interface on an existing TAP device (repeatable;
    /// create it first: ip tuntap add NAME mode tap).
    #[arg(long, value_name = "tap=NAME[,mac=aa:bb:cc:dd:ee:ff]")]
    net: Vec<NetConfig>,
    /// Add a virtio-rng entropy device.
    #[arg(long)]
    entropy: bool,
    /// Serial console output: stdout, off, or file=PATH.
    #[arg(long, default_value = "stdout", value_parser = parse_serial, value_name = "WHERE")]
    serial: SerialArg,
}

#[derive(Debug, Clone)]
enum SerialArg {
    Stdout,
    Off,
    File(PathBuf),
}

fn parse_serial(s: &str) -> Result<SerialArg, String> {
    match s {
        "stdout" => Ok(SerialArg::Stdout),
        "off" => Ok(SerialArg::Off),
        _ => match s.strip_prefix("file=") {
            Some(path) if !path.is_empty() => Ok(SerialArg::File(path.into())),
            _ => Err(format!("'{s}' is not stdout, off or file=PATH")),
        },
    }
}

fn main() -> ExitCode {
    let start_time = StartTime::now();
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            // Help and version go to stdout with status 0; usage errors are
            // one line on stderr (clap's full message, first line).
            if !e.use_stderr() {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("microvm: {}", first.trim_start_matches("error: "));
            return ExitCode::from(1);
        }
    };
    let (kernel, default_cmdline) = match args.kernel {
        Some(path) => (KernelSource::Path(path), DEFAULT_LINUX_CMDLINE),
        None => (
            KernelSource::Bytes(kindling_test_guest::TEST_GUEST_ELF.into()),
            kindling_test_guest::DEFAULT_CMDLINE,
        ),
    };
    let config = VmConfig {
        kernel,
        initrd: args.initrd,
        cmdline: args.cmdline.unwrap_or_else(|| default_cmdline.to_string()),
        boot_protocol: if args.pvh {
            BootProtocol::Pvh
        } else {
            BootProtocol::Linux64
        },
        vcpus: args.cpus,
        memory_mib: args.memory,
        disks: args.disk,
        net: args.net,
        entropy: args.entropy,
        serial: match args.serial {
            SerialArg::Stdout => SerialConfig::Stdout,
            SerialArg::Off => SerialConfig::Off,
            SerialArg::File(path) => SerialConfig::File(path),
        },
        start_time,
        ..VmConfig::default()
    };
    match Vmm::build(config).and_then(Vmm::run) {
        Ok(reason) => ExitCode::from(reason.exit_code() as u8),
        Err(e) => {
            eprintln!("microvm: {e}");
            ExitCode::from(1)
        }
    }
}
