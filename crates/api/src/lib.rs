//! A Firecracker-compatible control plane for Kindling microVMs.
//!
//! The same requests Firecracker takes, with its paths, methods, JSON
//! field names, status codes (204, 200, and 400 with
//! `{"fault_message": "..."}`) and state rules, so that its SDKs and
//! orchestrators can drive a Kindling microVM.
//!
//! - [`request`]: a pure function from (method, path, body) to a typed
//!   [`ApiRequest`] ([`parse_request`]), with no I/O, fuzzed on its own;
//!   [`models`] holds the bodies.
//! - [`controller`]: the state machine that applies requests to the
//!   pre-boot configuration ([`VmResources`]) and, after `InstanceStart`
//!   or `PUT /snapshot/load`, to the running VM (snapshots with
//!   `PUT /snapshot/create`).
//! - [`config_file`]: Firecracker's `--config-file` format.
//! - [`logger`] and [`metrics`]: `PUT /logger` and `PUT /metrics`.
//! - [`server`] (feature `server`): HTTP/1.1 on a Unix socket, and
//!   [`server::serve`], the API-mode runner of the example VMM.
//!
//! Resources Kindling does not support yet ([`Unsupported`]) answer a 400
//! that says so.

pub mod config_file;
pub mod controller;
mod launch;
pub mod logger;
pub mod metrics;
pub mod models;
pub mod request;
pub mod resources;
#[cfg(feature = "server")]
pub mod server;
mod unsupported;

pub use controller::{ApiResponse, Controller, ControllerError, VERSION};
pub use request::{
    check_shape, parse_request, ApiRequest, Method, RequestError, ShapeError, MAX_BODY_BYTES,
};
pub use resources::{ResourceError, VmResources};
pub use unsupported::Unsupported;
