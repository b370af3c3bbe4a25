//! `microvm`: the Kindling example VMM.
//!
//! ```text
//! cargo run --release --example microvm -- [--kernel PATH] [--initrd PATH]
//!     [--cmdline STR] [--cpus N] [--memory MIB] [--pvh] [--disk PATH[,readonly]]...
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
    BootProtocol, DiskConfig, KernelSource, SerialConfig, StartTime, VmConfig, Vmm,
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
    /// A virtio-block disk backed by a raw image (repeatable).
    #[arg(long, value_name = "PATH[,readonly]")]
    disk: Vec<DiskConfig>,
    /// Add a virtio-rng entropy device.
    #[arg(long)]
    entropy: bool,
    /// Serial console output: stdout, off, or file=PATH.
    #[arg(long, default_value = "stdout", value_parser = parse_serial, value_name = "WHERE")]
    serial: SerialArg,
    /// Serve Firecracker's API on this Unix socket; the VM boots at
    /// InstanceStart (the flags above pre-configure it).
    #[arg(long, value_name = "PATH")]
    api_sock: Option<PathBuf>,
    /// Configure from a Firecracker config file and boot at once.
    #[arg(long, value_name = "PATH")]
    config_file: Option<PathBuf>,
    /// No API socket (with --config-file).
    #[arg(long, conflicts_with = "api_sock")]
    no_api: bool,
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
    if args.api_sock.is_some() || args.config_file.is_some() || args.no_api {
        return api_mode(args, start_time);
    }
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
        entropy: args.entropy,
        serial: args.serial.into(),
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

impl From<SerialArg> for SerialConfig {
    fn from(arg: SerialArg) -> Self {
        match arg {
            SerialArg::Stdout => SerialConfig::Stdout,
            SerialArg::Off => SerialConfig::Off,
            SerialArg::File(path) => SerialConfig::File(path),
        }
    }
}

/// `--api-sock` / `--config-file`: Firecracker's control plane
/// (`kindling_api::server::serve`), the other flags as its pre-configuration.
fn api_mode(args: Args, start_time: StartTime) -> ExitCode {
    use kindling::api::server::{serve, Preset, ServeOptions};
    let preset = Preset {
        kernel: args.kernel,
        initrd: args.initrd,
        cmdline: args.cmdline,
        pvh: args.pvh,
        vcpus: args.cpus,
        memory_mib: args.memory,
        disks: args.disk,
        entropy: args.entropy,
    };
    let resources = match preset.into_resources() {
        Ok(resources) => resources,
        Err(e) => {
            eprintln!("microvm: {e}");
            return ExitCode::from(1);
        }
    };
    let options = ServeOptions {
        api_socket: args.api_sock,
        config_file: args.config_file,
        resources,
        serial: args.serial.into(),
        ..ServeOptions::new(start_time)
    };
    match serve(options) {
        Ok(reason) => ExitCode::from(reason.exit_code() as u8),
        Err(e) => {
            eprintln!("microvm: {e}");
            ExitCode::from(1)
        }
    }
}
