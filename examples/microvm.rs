//! `microvm`: the Kindling example VMM.
//!
//! ```text
//! cargo run --release --example microvm -- [--kernel PATH] [--initrd PATH]
//!     [--cmdline STR] [--cpus N] [--memory MIB] [--pvh] [--disk PATH[,readonly]]...
//!     [--entropy] [--serial stdout|off|file=PATH]
//! cargo run --release --example microvm -- --restore STATE_FILE --restore-mem MEM_FILE
//!     [--disk-override N=PATH]... [--serial stdout|off|file=PATH]
//! ```
//!
//! `--snapshot-on-line TEXT --snapshot-state STATE_FILE --snapshot-mem
//! MEM_FILE` (with either form) writes a full snapshot at the first serial
//! line containing TEXT and exits 0: a hook for tests.
//!
//! With no `--kernel` it boots the embedded test guest. It exits with the
//! guest's status (the debug-exit port), 0 after a guest reset or power-off,
//! and 1 with one line on stderr for any error.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;

use clap::Parser;
use kindling::vmm::snapshot::{
    DiskOverride, MemBackend, RestoreConfig, SnapshotKind, SnapshotRequest,
};
use kindling::vmm::{
    BootProtocol, DiskConfig, ExitReason, KernelSource, SerialConfig, StartTime, VmConfig, Vmm,
    VmmError, DEFAULT_LINUX_CMDLINE,
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
    /// Restore the VM from this snapshot state file instead of booting.
    #[arg(long, value_name = "STATE_FILE", requires = "restore_mem",
          conflicts_with_all = ["kernel", "initrd", "cmdline", "pvh", "disk", "entropy"])]
    restore: Option<PathBuf>,
    /// The snapshot's memory file (for a diff snapshot: its base with the
    /// diff applied).
    #[arg(long, value_name = "MEM_FILE", requires = "restore")]
    restore_mem: Option<PathBuf>,
    /// At restore, open another image for disk N (index or name): N=PATH
    /// (repeatable).
    #[arg(long, value_name = "N=PATH", requires = "restore")]
    disk_override: Vec<DiskOverride>,
    /// At the first serial line containing TEXT, pause the VM, write a full
    /// snapshot to --snapshot-state and --snapshot-mem, and exit 0.
    #[arg(long, value_name = "TEXT", requires_all = ["snapshot_state", "snapshot_mem"])]
    snapshot_on_line: Option<String>,
    /// The state file --snapshot-on-line writes.
    #[arg(long, value_name = "STATE_FILE", requires = "snapshot_on_line")]
    snapshot_state: Option<PathBuf>,
    /// The memory file --snapshot-on-line writes.
    #[arg(long, value_name = "MEM_FILE", requires = "snapshot_on_line")]
    snapshot_mem: Option<PathBuf>,
}

/// Passes serial output through and reports the first line that holds a
/// marker.
struct MarkerWriter {
    inner: Box<dyn Write + Send>,
    marker: String,
    line: Vec<u8>,
    found: Option<mpsc::Sender<()>>,
}

impl Write for MarkerWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        for &byte in &buf[..n] {
            if byte != b'\n' {
                self.line.push(byte);
                continue;
            }
            if String::from_utf8_lossy(&self.line).contains(&self.marker) {
                if let Some(found) = self.found.take() {
                    let _ = found.send(());
                }
            }
            self.line.clear();
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Runs `vmm`, and at the marker line pauses it, snapshots it to `request`
/// and stops it.
fn run_with_snapshot(
    vmm: Vmm,
    found: mpsc::Receiver<()>,
    request: SnapshotRequest,
) -> Result<ExitReason, VmmError> {
    let running = vmm.start()?;
    let handle = running.handle();
    let state_path = request.state_path.clone();
    let snapshotter = std::thread::spawn(move || -> Option<Result<(), VmmError>> {
        // The sender goes away with the VM when it ends first.
        found.recv().ok()?;
        let result = handle
            .pause()
            .and_then(|()| handle.snapshot(&request))
            .map(|_| ());
        handle.stop();
        Some(result)
    });
    let reason = running.wait();
    match snapshotter.join() {
        Ok(Some(Ok(()))) => {
            eprintln!("microvm: snapshot written to {}", state_path.display());
            reason.map(|_| ExitReason::PowerOff)
        }
        Ok(Some(Err(e))) => Err(e),
        _ => reason,
    }
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
    let mut serial = match args.serial {
        SerialArg::Stdout => SerialConfig::Stdout,
        SerialArg::Off => SerialConfig::Off,
        SerialArg::File(path) => SerialConfig::File(path),
    };
    let mut snapshot_at_marker = None;
    if let (Some(marker), Some(state_path), Some(mem_path)) = (
        args.snapshot_on_line,
        args.snapshot_state,
        args.snapshot_mem,
    ) {
        let inner: Box<dyn Write + Send> = match serial {
            SerialConfig::File(path) => match std::fs::File::create(&path) {
                Ok(file) => Box::new(file),
                Err(e) => {
                    eprintln!("microvm: cannot create {}: {e}", path.display());
                    return ExitCode::from(1);
                }
            },
            SerialConfig::Off => Box::new(std::io::sink()),
            _ => Box::new(std::io::stdout()),
        };
        let (tx, rx) = mpsc::channel();
        serial = SerialConfig::Writer(Box::new(MarkerWriter {
            inner,
            marker,
            line: Vec::new(),
            found: Some(tx),
        }));
        let request = SnapshotRequest {
            kind: SnapshotKind::Full,
            state_path,
            mem_path,
        };
        snapshot_at_marker = Some((rx, request));
    }
    if let (Some(state), Some(mem)) = (args.restore, args.restore_mem) {
        let config = RestoreConfig {
            disk_overrides: args.disk_override,
            serial,
            start_time,
            ..RestoreConfig::new(state, MemBackend::File(mem))
        };
        return exit_with(
            Vmm::restore(config).and_then(|vmm| match snapshot_at_marker {
                Some((found, request)) => run_with_snapshot(vmm, found, request),
                None => vmm.run(),
            }),
        );
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
        serial,
        start_time,
        ..VmConfig::default()
    };
    exit_with(Vmm::build(config).and_then(|vmm| match snapshot_at_marker {
        Some((found, request)) => run_with_snapshot(vmm, found, request),
        None => vmm.run(),
    }))
}

fn exit_with(result: Result<ExitReason, VmmError>) -> ExitCode {
    match result {
        Ok(reason) => ExitCode::from(reason.exit_code() as u8),
        Err(e) => {
            eprintln!("microvm: {e}");
            ExitCode::from(1)
        }
    }
}
