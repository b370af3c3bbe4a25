//! `microvm`: the Kindling example VMM.
//!
//! ```text
//! cargo run --release --example microvm -- [--kernel PATH] [--initrd PATH]
//!     [--cmdline STR] [--cpus N] [--memory MIB] [--pvh]
//!     [--disk PATH[,readonly][,engine=sync|io_uring] | --disk [OPTION,]...path=PATH]...
//!     [--net tap=NAME[,mac=aa:bb:cc:dd:ee:ff]]...
//!     [--entropy] [--vsock cid=N,uds=PATH] [--serial stdout|off|file=PATH]
//! cargo run --release --example microvm -- --restore STATE_FILE --restore-mem MEM_FILE
//!     [--disk-override N=PATH]... [--net-override N=TAP]...
//!     [--vsock-override PATH] [--serial stdout|off|file=PATH]
//! ```
//!
//! `--snapshot-on-line TEXT --snapshot-state STATE_FILE --snapshot-mem
//! MEM_FILE` (with either form) writes a full snapshot at the first serial
//! line containing TEXT and exits 0: a hook for tests.
//!
//! Every VMM thread runs under its own seccomp filter (`--no-seccomp` turns
//! them off; README, "Security").
//!
//! With no `--kernel` it boots the embedded test guest. It exits with the
//! guest's status (the debug-exit port, opt-in with `--debug-exit` and on
//! for the embedded test guest), 0 after a guest reset or power-off
//! or the console escape (Ctrl-A x), and 1 with one line on stderr for any
//! error. `--help` says more.

#[path = "microvm/snapshot_hook.rs"]
mod snapshot_hook;

use std::io::{IsTerminal, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;

use clap::Parser;
use kindling::api::models::{LogLevel, LoggerConfig};
use kindling::vcpu::VcpuError;
use kindling::vmm::console::{self, ConsoleEscape, RawTerminal, ESCAPE_HELP};
use kindling::vmm::snapshot::{
    DiskOverride, MemBackend, NetOverride, RestoreConfig, SnapshotKind, SnapshotRequest,
};
use kindling::vmm::{
    BootProtocol, DiskConfig, ExitReason, KernelSource, NetConfig, SeccompPolicy, SerialConfig,
    StartTime, VmConfig, Vmm, VmmError, VsockConfig, DEFAULT_LINUX_CMDLINE,
};

/// Where the README explains hosts whose /dev/kvm cannot run Linux.
const NESTED_DOC: &str = "docs/nested-kvm.md in the Kindling repository";

/// The paravirtual KVM module that runs guest ring 0 through KVM's
/// instruction emulator: its presence is one `stat`.
const KVM_PVM_MODULE: &str = "/sys/module/kvm_pvm";

const LONG_ABOUT: &str = "\
Boot a KVM microVM: the embedded test guest, or a Linux kernel you give.

Without --kernel, microvm boots its embedded test guest with the command
line \"kindling.test=hello\" (it prints a hello line and exits 0); the
guest's actions (hello, cmdline, e820, smp, timer, virtio, blk-*, rng, ...)
and kindling.exit=N|reset are listed in the README, section \"The test
guest\". With --kernel, the default command line is
\"console=ttyS0 reboot=k panic=1 pci=off\".

Exit status: what the guest writes to the debug-exit port (0xf4; only
with --debug-exit or the embedded test guest); 0 after
a guest reset (i8042, ACPI reset register, triple fault) or power-off
(ACPI S5); 0 after the console escape; 1 with one line on stderr
(\"microvm: ...\") for any error.

Seccomp: every VMM thread runs under a filter of its own; a system call
outside it prints one \"kindling: seccomp: ...\" line naming the thread
kind and the call, and the process dies of SIGSYS. --no-seccomp turns the
filters off.

Console: with --serial stdout, standard input feeds the guest's serial
port. When it is a terminal it is put in raw mode (restored on exit):
every key, Ctrl-C included, goes to the guest; Ctrl-A x quits, Ctrl-A
Ctrl-A sends Ctrl-A.

On a host whose /dev/kvm emulates guest ring 0 (nested KVM through the
kvm_pvm module) a stock Linux kernel cannot run: see docs/nested-kvm.md
(scripts/nested-run.sh runs microvm in an emulated machine instead).";

/// Boot a KVM microVM (the embedded test guest, or your Linux kernel).
#[derive(Debug, Parser)]
#[command(name = "microvm", version, about, long_about = LONG_ABOUT)]
struct Args {
    /// Kernel image: ELF vmlinux or bzImage. Default: the embedded test guest.
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// Initial ramdisk.
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,
    /// Kernel command line. Default with --kernel: "console=ttyS0 reboot=k
    /// panic=1 pci=off"; for the test guest: "kindling.test=hello".
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
    /// A virtio-block disk backed by a raw image (repeatable; the guest
    /// sees vda, vdb, ... in order). `ro` is short for `readonly`;
    /// engine=io_uring uses the io_uring engine (sync, the default, does
    /// positioned reads and writes on the event loop). A path with a comma:
    /// `[OPTION,]...path=PATH`, where path= comes last and takes the rest
    /// verbatim.
    #[arg(long, value_name = "PATH[,readonly][,engine=sync|io_uring]")]
    disk: Vec<DiskConfig>,
    /// A virtio-net interface on an existing TAP device (repeatable;
    /// create it first: ip tuntap add NAME mode tap).
    #[arg(long, value_name = "tap=NAME[,mac=aa:bb:cc:dd:ee:ff]")]
    net: Vec<NetConfig>,
    /// Add a virtio-rng entropy device.
    #[arg(long)]
    entropy: bool,
    /// A virtio-vsock device: the guest's CID (3 or more) and the Unix
    /// socket host programs connect to (`CONNECT <port>\n`); guest
    /// connections to host port P go to PATH_P.
    #[arg(long, value_name = "cid=N,uds=PATH")]
    vsock: Option<VsockConfig>,
    /// Serial console output: stdout, off, or file=PATH.
    #[arg(long, default_value = "stdout", value_parser = parse_serial, value_name = "WHERE")]
    serial: SerialArg,
    /// Restore the VM from this snapshot state file instead of booting.
    #[arg(long, value_name = "STATE_FILE", requires = "restore_mem",
          conflicts_with_all = ["kernel", "initrd", "cmdline", "pvh", "disk", "entropy", "net", "vsock"])]
    restore: Option<PathBuf>,
    /// The snapshot's memory file (for a diff snapshot: its base with the
    /// diff applied).
    #[arg(long, value_name = "MEM_FILE", requires = "restore")]
    restore_mem: Option<PathBuf>,
    /// At restore, open another image for disk N (index or name): N=PATH
    /// (repeatable).
    #[arg(long, value_name = "N=PATH", requires = "restore")]
    disk_override: Vec<DiskOverride>,
    /// At restore, attach network interface N (index or iface_id) to
    /// another TAP: N=TAP (repeatable). The others reopen their own TAP.
    #[arg(long, value_name = "N=TAP", requires = "restore")]
    net_override: Vec<NetOverride>,
    /// At restore, the vsock device listens on this Unix socket instead of
    /// the one it had (its connections are reset either way).
    #[arg(long, value_name = "PATH", requires = "restore")]
    vsock_override: Option<PathBuf>,
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
    /// Serve Firecracker's API on this Unix socket; the VM boots at
    /// InstanceStart (the flags above pre-configure it) or is loaded from
    /// a snapshot at PUT /snapshot/load.
    #[arg(long, value_name = "PATH")]
    api_sock: Option<PathBuf>,
    /// Configure from a Firecracker config file and boot at once.
    #[arg(long, value_name = "PATH")]
    config_file: Option<PathBuf>,
    /// No API socket (with --config-file).
    #[arg(long, conflicts_with = "api_sock")]
    no_api: bool,
    /// Run without the seccomp filters (on by default: each VMM thread may
    /// make only the system calls it needs; see "Security" in the README).
    #[arg(long)]
    no_seccomp: bool,
    /// Add the debug-exit port (0xf4): a byte the guest writes there ends
    /// microvm with that status. On by default for the embedded test
    /// guest; otherwise off, since it lets the guest choose the exit
    /// status.
    #[arg(long)]
    debug_exit: bool,
    /// Log level: Error, Warning (the default), Info, Debug, Trace or Off
    /// (the VMM's own messages: device errors, why the VM ended, ...).
    #[arg(long, value_name = "LEVEL")]
    level: Option<LogLevel>,
    /// Append log lines to this existing file or named pipe instead of
    /// standard error.
    #[arg(long, value_name = "PATH")]
    log_path: Option<PathBuf>,
}

/// Installs the process logger: standard error at Warning unless
/// `--level` / `--log-path` say otherwise (`PUT /logger` can change it
/// later in API mode).
fn install_logger(level: Option<LogLevel>, log_path: Option<&Path>) -> Result<(), String> {
    use kindling::api::logger;
    logger::install("anonymous-instance").map_err(|e| e.to_string())?;
    if level.is_none() && log_path.is_none() {
        return Ok(());
    }
    let config = LoggerConfig {
        level: Some(level.unwrap_or(LogLevel::Warning)),
        log_path: log_path.map(|p| p.to_string_lossy().into_owned()),
        ..LoggerConfig::default()
    };
    logger::configure(&config).map_err(|e| e.to_string())
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
    // Before any thread starts: SIGTERM, SIGINT and SIGHUP then stop the
    // VM in order (disks flushed) instead of killing the process.
    if let Err(e) = kindling::vmm::signals::block_termination_signals() {
        eprintln!("microvm: cannot block termination signals: {e}");
        return ExitCode::from(1);
    }
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
    let seccomp = if args.no_seccomp {
        SeccompPolicy::Off
    } else {
        SeccompPolicy::Builtin
    };
    if let Err(e) = install_logger(args.level, args.log_path.as_deref()) {
        eprintln!("microvm: {e}");
        return ExitCode::from(1);
    }
    if args.api_sock.is_some() || args.config_file.is_some() || args.no_api {
        return api_mode(args, start_time, seccomp);
    }
    let stdout_serial = matches!(args.serial, SerialArg::Stdout);
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
            SerialConfig::File(path) => match std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                // Never through a symbolic link (as the VMM's own serial file).
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
            {
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
        serial = SerialConfig::Writer(Box::new(snapshot_hook::MarkerWriter {
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
            net_overrides: args.net_override,
            vsock_override: args.vsock_override,
            serial,
            start_time,
            stop_on_signals: true,
            seccomp: seccomp.clone(),
            debug_exit: args.debug_exit,
            ..RestoreConfig::new(state, MemBackend::File(mem))
        };
        let result = Vmm::restore(config).and_then(|vmm| match snapshot_at_marker {
            Some((found, request)) => {
                snapshot_hook::run_with_snapshot(vmm, found, request, &seccomp)
            }
            None => vmm.run(),
        });
        return exit_with(result, &ConsoleEscape::new());
    }
    let user_kernel = args.kernel.is_some();
    let (kernel, default_cmdline) = match args.kernel {
        Some(path) => (KernelSource::Path(path), DEFAULT_LINUX_CMDLINE),
        None => (
            KernelSource::Bytes(kindling_test_guest::TEST_GUEST_ELF.into()),
            kindling_test_guest::DEFAULT_CMDLINE,
        ),
    };
    // An interactive console: the serial port on a terminal.
    let interactive =
        stdout_serial && snapshot_at_marker.is_none() && std::io::stdin().is_terminal();
    let escape = ConsoleEscape::new();
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
        vsock: args.vsock,
        serial,
        start_time,
        console_escape: interactive.then(|| escape.clone()),
        stop_on_signals: true,
        seccomp: seccomp.clone(),
        // The embedded test guest ends through the port; a kernel the user
        // gives gets it only when asked.
        debug_exit: args.debug_exit || !user_kernel,
        ..VmConfig::default()
    };
    let ring0_emulated = user_kernel && Path::new(KVM_PVM_MODULE).exists();
    let result = Vmm::build(config).and_then(|vmm| {
        if ring0_emulated {
            eprintln!(
                "microvm: warning: this host's /dev/kvm is kvm_pvm, which runs guest ring 0 \
                 through KVM's instruction emulator: a stock Linux kernel will crawl and stop \
                 with a KVM internal error; see {NESTED_DOC} for the way around \
                 (scripts/nested-run.sh)"
            );
        }
        match snapshot_at_marker {
            Some((found, request)) => {
                snapshot_hook::run_with_snapshot(vmm, found, request, &seccomp)
            }
            None => run_interactive(vmm, interactive),
        }
    });
    exit_with(result, &escape)
}

/// The process status and the one line that says why, for `result`.
fn exit_with(result: Result<ExitReason, VmmError>, escape: &ConsoleEscape) -> ExitCode {
    match result {
        Ok(reason) if escape.pressed() => {
            eprintln!("microvm: quit by the console escape ({ESCAPE_HELP}); exit status 0");
            ExitCode::from(reason.exit_code() as u8)
        }
        Ok(reason) => {
            if let ExitReason::Signal(signo) = reason {
                eprintln!(
                    "microvm: stopped by {}: vCPUs stopped, disks flushed",
                    kindling::vmm::signals::signal_name(signo)
                );
            }
            ExitCode::from(reason.exit_code() as u8)
        }
        Err(e @ VmmError::Vcpu(VcpuError::InternalError { .. })) => {
            let why = if Path::new(KVM_PVM_MODULE).exists() {
                "this host's /dev/kvm (kvm_pvm) emulates guest ring 0, which a stock Linux \
                 kernel cannot run on"
            } else {
                "if this host's /dev/kvm emulates guest ring 0 (nested KVM), a stock Linux \
                 kernel cannot run on it"
            };
            eprintln!("microvm: {e}; {why}: see {NESTED_DOC}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("microvm: {e}");
            ExitCode::from(1)
        }
    }
}

/// Runs the VM; with an interactive console, in raw mode, restoring the
/// terminal on every way out (the guard's drop; a panic hook, since release
/// builds abort on panic; signals, see `RawTerminal`).
fn run_interactive(vmm: Vmm, interactive: bool) -> Result<ExitReason, VmmError> {
    if !interactive {
        return vmm.run();
    }
    let raw = RawTerminal::enter(std::io::stdin().as_raw_fd()).map_err(VmmError::Console)?;
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        console::restore_saved_terminal();
        previous(info);
    }));
    let result = vmm.run();
    drop(raw);
    result
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
/// Termination signals stay blocked (see `main`): before the VM runs one
/// ends the server, once it runs one stops it in order.
fn api_mode(args: Args, start_time: StartTime, seccomp: SeccompPolicy) -> ExitCode {
    use kindling::api::server::{serve, Preset, ServeOptions, Served};
    if args.restore.is_some() {
        eprintln!(
            "microvm: --restore is not available with --api-sock/--config-file: load the \
             snapshot with PUT /snapshot/load instead"
        );
        return ExitCode::from(1);
    }
    if !args.net.is_empty() || args.vsock.is_some() || args.snapshot_on_line.is_some() {
        // (--net was silently dropped here before: the Preset has no network.)
        eprintln!(
            "microvm: --net, --vsock and --snapshot-on-line are not available with \
             --api-sock/--config-file yet (PUT /network-interfaces and /vsock, or the config \
             file's network-interfaces and vsock, configure those devices)"
        );
        return ExitCode::from(1);
    }
    let preset = Preset {
        kernel: args.kernel,
        initrd: args.initrd,
        cmdline: args.cmdline,
        pvh: args.pvh,
        vcpus: args.cpus,
        memory_mib: args.memory,
        disks: args.disk,
        entropy: args.entropy,
        debug_exit: args.debug_exit,
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
        seccomp,
        stop_on_signals: true,
        ..ServeOptions::new(start_time)
    };
    let socket = options.api_socket.clone();
    match serve(options) {
        Ok(Served::VmEnded(reason)) => exit_with(Ok(reason), &ConsoleEscape::new()),
        Ok(served @ Served::SignalBeforeStart(signo)) => {
            let removed = match &socket {
                Some(path) => format!(", API socket {} removed", path.display()),
                None => String::new(),
            };
            eprintln!(
                "microvm: stopped by {} before any microVM ran{removed}",
                kindling::vmm::signals::signal_name(signo)
            );
            ExitCode::from(served.exit_code() as u8)
        }
        Err(e) => {
            eprintln!("microvm: {e}");
            ExitCode::from(1)
        }
    }
}
