//! `kindling-jailer`: runs one VMM process in a jail (see the crate
//! documentation and the README's "Jailer" section).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kindling_jailer::{CgroupSetting, JailConfig, JailId, ResourceLimit};

/// Prepares a chroot, namespaces, a cgroup and an unprivileged user for
/// one microVM, then executes the VMM in it. Exits with the VMM's status
/// (128 + N when signal N killed it); a failure of the jailer itself is
/// one line on standard error and exit status 1.
#[derive(Debug, Parser)]
#[command(name = "kindling-jailer", version)]
struct Cli {
    /// The microVM's id: 1 to 64 of A-Z, a-z, 0-9 and '-'.
    #[arg(long, value_name = "ID")]
    id: JailId,
    /// The VMM binary; it is copied into the jail.
    #[arg(long, value_name = "PATH")]
    exec_file: PathBuf,
    /// The user the VMM runs as.
    #[arg(long, value_name = "N")]
    uid: u32,
    /// The group the VMM runs as.
    #[arg(long, value_name = "N")]
    gid: u32,
    /// Where jails are made: <DIR>/<exec file name>/<id>/root.
    #[arg(long, value_name = "DIR", default_value = "/srv/jailer")]
    chroot_base_dir: PathBuf,
    /// Join this network namespace (e.g. /var/run/netns/NAME) instead of
    /// a new, empty one.
    #[arg(long, value_name = "PATH")]
    netns: Option<PathBuf>,
    /// A cgroup v2 limit for the VM's cgroup <cgroup2>/kindling/<id>
    /// (repeatable), e.g. cpu.max="50000 100000", memory.max=256M,
    /// pids.max=64.
    #[arg(long = "cgroup", value_name = "FILE=VALUE")]
    cgroups: Vec<CgroupSetting>,
    /// A resource limit (repeatable): no-file=N or fsize=N.
    #[arg(long = "resource-limit", value_name = "NAME=N")]
    resource_limits: Vec<ResourceLimit>,
    /// A file the VM needs (kernel, initrd, disk; repeatable): hard-linked
    /// into the jail's root (copied across file systems) and given to the
    /// user. VMM arguments naming it get its path in the jail.
    #[arg(long = "file", value_name = "PATH")]
    files: Vec<PathBuf>,
    /// Allow uid or gid 0 (the VMM keeps root's powers in its
    /// namespaces; for debugging only).
    #[arg(long)]
    allow_root: bool,
    /// Run in the background: exit 0 once the VMM runs (or 1 with the
    /// error); a daemon with its standard streams on /dev/null waits for
    /// the VMM and cleans up. Give the VMM a serial file or an API socket.
    #[arg(long)]
    daemonize: bool,
    /// The VMM's arguments, after `--`.
    #[arg(last = true, value_name = "VMM ARGS")]
    vmm_args: Vec<OsString>,
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("kindling-jailer: {message}");
    ExitCode::from(1)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help or --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's message on one line, without its "error: " prefix
            // and the usage that follows the first blank line.
            let text = e.to_string();
            let message: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let line = message.join(" ");
            return fail(line.strip_prefix("error: ").unwrap_or(&line));
        }
    };
    let config = JailConfig {
        id: cli.id,
        exec_file: cli.exec_file,
        uid: cli.uid,
        gid: cli.gid,
        chroot_base_dir: cli.chroot_base_dir,
        netns: cli.netns,
        cgroups: cli.cgroups,
        resource_limits: cli.resource_limits,
        files: cli.files,
        allow_root: cli.allow_root,
        daemonize: cli.daemonize,
        vmm_args: cli.vmm_args,
    };
    match kindling_jailer::run(&config) {
        Ok(status) => ExitCode::from(status.clamp(0, 255) as u8),
        Err(e) => fail(e),
    }
}
