//! A jailer for Kindling microVMs, in the spirit of Firecracker's: it
//! prepares an isolated environment for one VMM process and executes the
//! VMM inside it.
//!
//! In order ([`run`]):
//!
//! 1. Check everything without changing anything ([`JailConfig::check`],
//!    [`cgroup::check`]): the id, the user (not root), the exec file and
//!    every `--file` (regular files), the network namespace, that the
//!    jail does not exist, that cgroup v2 offers the controllers.
//! 2. Build the jail ([`Jail::create`]):
//!    `<base>/<exec name>/<id>/root/` with a copy of the exec file, the
//!    files hard-linked (or copied), and `/dev/kvm` and `/dev/net/tun` made
//!    with `mknod`, owned by the VMM's user.
//! 3. Create the cgroup `<cgroup2 mount>/kindling/<id>` with the limits
//!    ([`Cgroup::create`]).
//! 4. `unshare(CLONE_NEWPID)` and fork: the child becomes PID 1 of a new
//!    PID namespace, joins the cgroup, enters new mount, IPC, UTS and
//!    network namespaces (or joins the given network namespace),
//!    `pivot_root`s into the jail and unmounts the host's tree, sets the
//!    resource limits, drops to the user (no groups, no new privileges,
//!    killed if the jailer dies), closes every inherited descriptor above
//!    2 and executes the VMM with an empty environment.
//! 5. The parent forwards SIGINT, SIGTERM, SIGHUP and SIGQUIT to the VMM,
//!    waits for it, removes the cgroup, and returns its exit status. A
//!    failure of the child before the exec comes back through a pipe;
//!    then the jail and the cgroup are removed again. With
//!    [`JailConfig::daemonize`], a daemon does this part and the calling
//!    process returns once the VMM runs.
//!
//! The `kindling-jailer` binary is the command-line front end.

pub mod cgroup;
pub mod config;
mod error;
mod isolate;
pub mod layout;
mod process;

pub use cgroup::Cgroup;
pub use config::{CgroupSetting, JailConfig, JailId, Resource, ResourceLimit, MAX_ID_LEN};
pub use error::Error;
pub use layout::Jail;
pub use process::run;
