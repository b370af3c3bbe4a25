//! The request and response bodies, with Firecracker's JSON field names
//! and `deny_unknown_fields`: a field Kindling does not know is an error,
//! never silently ignored.

mod boot;
mod devices;
mod drive;
mod machine;
mod net;
mod observability;
mod rate_limiter;
mod snapshot;
mod vm;

pub use boot::BootSource;
pub use devices::{EntropyDevice, SerialDevice};
pub use drive::{check_id, CacheType, Drive, IdError, IoEngine, PartialDrive, MAX_ID_LEN};
pub use machine::{
    HugePages, MachineConfig, MachineConfigError, MachineConfigUpdate, MAX_API_VCPUS, MAX_MEM_MIB,
};
pub use net::{NetworkInterface, PartialNetworkInterface, VsockDevice};
pub use observability::{LogLevel, LoggerConfig, MetricsConfig};
pub use rate_limiter::{limits, RateLimiter, TokenBucket};
pub use snapshot::{
    BackendType, MemoryBackend, NetworkOverride, SnapshotCreate, SnapshotCreateParams,
    SnapshotLoad, SnapshotLoadParams, SnapshotParamsError, SnapshotType, VsockOverride,
};
pub use vm::{ActionType, InstanceActionInfo, InstanceInfo, VersionInfo, VmPatch, VmStateRequest};
