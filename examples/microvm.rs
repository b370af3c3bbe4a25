//! `microvm`: the Kindling example VMM.
//!
//! ```text
//! cargo run --release --example microvm -- [--kernel PATH] [--initrd PATH]
//!     [--cmdline STR] [--cpus N] [--memory MIB] [--pvh]
//!     [--disk PATH[,readonly][,engine=sync|io_uring] | --disk [OPTION,]...path=PATH]...
//!     [--entropy] [--serial stdout|off|file=PATH]
//! ```
//!
//! With no `--kernel` it boots the embedded test guest. It exits with the
//! guest's status (the debug-exit port), 0 after a guest reset or power-off
//! or the console escape (Ctrl-A x), and 1 with one line on stderr for any
//! error. `--help` says more.

use std::io::IsTerminal;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use kindling::vcpu::VcpuError;
use kindling::vmm::console::{self, ConsoleEscape, RawTerminal, ESCAPE_HELP};
use kindling::vmm::{
    BootProtocol, DiskConfig, ExitReason, KernelSource, SerialConfig, StartTime, VmConfig, Vmm,
    VmmError, DEFAULT_LINUX_CMDLINE,
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

Exit status: what the guest writes to the debug-exit port (0xf4); 0 after
a guest reset (i8042, ACPI reset register, triple fault) or power-off
(ACPI S5); 0 after the console escape; 1 with one line on stderr
(\"microvm: ...\") for any error.

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
    let user_kernel = args.kernel.is_some();
    let (kernel, default_cmdline) = match args.kernel {
        Some(path) => (KernelSource::Path(path), DEFAULT_LINUX_CMDLINE),
        None => (
            KernelSource::Bytes(kindling_test_guest::TEST_GUEST_ELF.into()),
            kindling_test_guest::DEFAULT_CMDLINE,
        ),
    };
    // An interactive console: the serial port on a terminal.
    let interactive = matches!(args.serial, SerialArg::Stdout) && std::io::stdin().is_terminal();
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
        entropy: args.entropy,
        serial: match args.serial {
            SerialArg::Stdout => SerialConfig::Stdout,
            SerialArg::Off => SerialConfig::Off,
            SerialArg::File(path) => SerialConfig::File(path),
        },
        start_time,
        console_escape: interactive.then(|| escape.clone()),
        stop_on_signals: true,
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
        run_interactive(vmm, interactive)
    });
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
