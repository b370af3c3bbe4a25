//! Request parsing: a pure function from (method, path, body) to a typed
//! [`ApiRequest`], with no I/O and no state, so it can be fuzzed and
//! reused by any transport.

use serde::de::DeserializeOwned;

use crate::models::{
    check_id, ActionType, BootSource, Drive, EntropyDevice, IdError, InstanceActionInfo,
    LoggerConfig, MachineConfig, MachineConfigUpdate, MetricsConfig, NetworkInterface,
    PartialDrive, PartialNetworkInterface, SerialDevice, SnapshotCreate, SnapshotCreateParams,
    SnapshotLoad, SnapshotLoadParams, SnapshotParamsError, VmPatch, VmStateRequest, VsockDevice,
};
use crate::unsupported::Unsupported;

/// The largest request body accepted (Firecracker's default limit).
pub const MAX_BODY_BYTES: usize = 51_200;

/// The HTTP methods the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `PUT`.
    Put,
    /// `PATCH`.
    Patch,
}

impl Method {
    /// Parses a method name (case-sensitive, as HTTP says).
    pub fn parse(name: &str) -> Result<Self, RequestError> {
        match name {
            "GET" => Ok(Method::Get),
            "PUT" => Ok(Method::Put),
            "PATCH" => Ok(Method::Patch),
            other => Err(RequestError::UnknownMethod(truncate(other))),
        }
    }

    /// The method's name.
    pub fn name(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
        }
    }
}

/// A request to the control plane, parsed and checked for shape (the
/// controller checks it against the VM's state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiRequest {
    /// `GET /`.
    GetInstanceInfo,
    /// `GET /version`.
    GetVersion,
    /// `GET /machine-config`.
    GetMachineConfig,
    /// `GET /vm/config`.
    GetVmConfig,
    /// `PUT /boot-source`.
    PutBootSource(BootSource),
    /// `PUT /machine-config`.
    PutMachineConfig(MachineConfig),
    /// `PATCH /machine-config`.
    PatchMachineConfig(MachineConfigUpdate),
    /// `PUT /drives/{drive_id}`.
    PutDrive(Drive),
    /// `PATCH /drives/{drive_id}`.
    PatchDrive(PartialDrive),
    /// `PUT /network-interfaces/{iface_id}`.
    PutNetworkInterface(NetworkInterface),
    /// `PATCH /network-interfaces/{iface_id}`.
    PatchNetworkInterface(PartialNetworkInterface),
    /// `PUT /vsock`.
    PutVsock(VsockDevice),
    /// `PUT /entropy`.
    PutEntropy(EntropyDevice),
    /// `PUT /serial`.
    PutSerial(SerialDevice),
    /// `PUT /logger`.
    PutLogger(LoggerConfig),
    /// `PUT /metrics`.
    PutMetrics(MetricsConfig),
    /// `PUT /actions`.
    Action(ActionType),
    /// `PATCH /vm`.
    PatchVm(VmStateRequest),
    /// `PUT /snapshot/create`.
    CreateSnapshot(SnapshotCreate),
    /// `PUT /snapshot/load`.
    LoadSnapshot(SnapshotLoad),
}

impl ApiRequest {
    /// A short name for logs and metrics: `put_api_requests.drive` and so
    /// on (Firecracker's metric groups and names).
    pub fn metric_name(&self) -> (&'static str, &'static str) {
        match self {
            ApiRequest::GetInstanceInfo => ("get_api_requests", "instance_info"),
            ApiRequest::GetVersion => ("get_api_requests", "vmm_version"),
            ApiRequest::GetMachineConfig => ("get_api_requests", "machine_cfg"),
            ApiRequest::GetVmConfig => ("get_api_requests", "vm_config"),
            ApiRequest::PutBootSource(_) => ("put_api_requests", "boot_source"),
            ApiRequest::PutMachineConfig(_) => ("put_api_requests", "machine_cfg"),
            ApiRequest::PatchMachineConfig(_) => ("patch_api_requests", "machine_cfg"),
            ApiRequest::PutDrive(_) => ("put_api_requests", "drive"),
            ApiRequest::PatchDrive(_) => ("patch_api_requests", "drive"),
            ApiRequest::PutNetworkInterface(_) => ("put_api_requests", "network"),
            ApiRequest::PatchNetworkInterface(_) => ("patch_api_requests", "network"),
            ApiRequest::PutVsock(_) => ("put_api_requests", "vsock"),
            ApiRequest::PutEntropy(_) => ("put_api_requests", "entropy"),
            ApiRequest::PutSerial(_) => ("put_api_requests", "serial"),
            ApiRequest::PutLogger(_) => ("put_api_requests", "logger"),
            ApiRequest::PutMetrics(_) => ("put_api_requests", "metrics"),
            ApiRequest::Action(_) => ("put_api_requests", "actions"),
            ApiRequest::PatchVm(_) => ("patch_api_requests", "vm"),
            ApiRequest::CreateSnapshot(_) => ("put_api_requests", "snapshot_create"),
            ApiRequest::LoadSnapshot(_) => ("put_api_requests", "snapshot_load"),
        }
    }
}

/// Why a request was refused before it reached the controller. Every
/// variant is a 400 with the message as `fault_message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The method is not one the API uses.
    #[error("invalid HTTP method {0:?}: the API uses GET, PUT and PATCH")]
    UnknownMethod(String),
    /// No resource has this path.
    #[error("invalid request path {0:?}: no such resource")]
    UnknownPath(String),
    /// The resource exists but not with this method.
    #[error("{method} is not allowed on {path} (allowed: {allowed})")]
    MethodNotAllowed {
        /// The method.
        method: &'static str,
        /// The path.
        path: String,
        /// The methods the resource takes.
        allowed: &'static str,
    },
    /// A resource Kindling does not support yet.
    #[error("{0}")]
    Unsupported(Unsupported),
    /// The body is over [`MAX_BODY_BYTES`].
    #[error("the request body is {0} bytes, more than the {MAX_BODY_BYTES} allowed")]
    BodyTooLarge(usize),
    /// A PUT or PATCH came without a body.
    #[error("{method} {path} needs a JSON body")]
    MissingBody {
        /// The method.
        method: &'static str,
        /// The path.
        path: String,
    },
    /// A GET came with a body.
    #[error("GET {0} takes no body")]
    UnexpectedBody(String),
    /// The body is not valid JSON for the resource.
    #[error("invalid body for {path}: {message}")]
    InvalidBody {
        /// The path.
        path: String,
        /// What serde said (line, column and the field).
        message: String,
    },
    /// The id in the path is not valid.
    #[error("invalid id in {path}: {source}")]
    InvalidId {
        /// The path.
        path: String,
        /// What is wrong with the id.
        source: IdError,
    },
    /// The id in the path and the one in the body differ.
    #[error("the id in the path ({path_id:?}) does not match the id in the body ({body_id:?})")]
    IdMismatch {
        /// The id in the path.
        path_id: String,
        /// The id in the body.
        body_id: String,
    },
    /// A PATCH that changes nothing.
    #[error("PATCH {0} names no field to change")]
    EmptyPatch(String),
    /// A snapshot body that parses but asks for something invalid or
    /// unsupported.
    #[error("invalid body for {path}: {source}")]
    Snapshot {
        /// The path.
        path: &'static str,
        /// What is wrong.
        source: SnapshotParamsError,
    },
}

/// Cuts attacker-sized strings down for error messages.
fn truncate(s: &str) -> String {
    const MAX: usize = 128;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

fn body<T: DeserializeOwned>(method: Method, path: &str, bytes: &[u8]) -> Result<T, RequestError> {
    body_with_arrays(method, path, bytes, &[])
}

/// [`body`] for a body whose top-level fields `arrays` are lists of
/// objects (`network_overrides`).
fn body_with_arrays<T: DeserializeOwned>(
    method: Method,
    path: &str,
    bytes: &[u8],
    arrays: &[&str],
) -> Result<T, RequestError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(RequestError::MissingBody {
            method: method.name(),
            path: truncate(path),
        });
    }
    let invalid = |message: String| RequestError::InvalidBody {
        path: truncate(path),
        message,
    };
    // Parsed once as a plain value to hold it to the document's shapes
    // (serde would take `null` for an absent field and an array for a
    // struct), then into the type (which also refuses duplicate fields).
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
    check_shape_allowing(&value, "body", arrays).map_err(|e| invalid(e.to_string()))?;
    serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))
}

/// How a body breaks the shapes of the API's documents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    /// The body (or a resource in a config file) is not a JSON object.
    #[error("the {0} must be a JSON object")]
    NotAnObject(String),
    /// A field is `null`.
    #[error("{0} is null: leave optional fields out instead")]
    Null(String),
    /// A field is an array.
    #[error("{0} is an array, which no field of the API takes")]
    Array(String),
    /// Objects nested deeper than any body of the API.
    #[error("{0} is nested too deeply")]
    TooDeep(String),
}

/// The deepest object nesting in an API body (a drive's rate limiter's
/// bucket is 2 deep).
const MAX_DEPTH: usize = 8;

/// Checks that a request body is an object whose values are strings,
/// numbers, booleans or objects of those: no API body has an array or a
/// `null` (an absent optional field is left out). `at` names the body in
/// messages.
pub fn check_shape(value: &serde_json::Value, at: &str) -> Result<(), ShapeError> {
    check_shape_allowing(value, at, &[])
}

/// [`check_shape`], except that the top-level fields named in `arrays`
/// may be arrays of objects (each held to the same shapes).
fn check_shape_allowing(
    value: &serde_json::Value,
    at: &str,
    arrays: &[&str],
) -> Result<(), ShapeError> {
    use serde_json::Value;
    fn walk(value: &Value, at: &str, depth: usize) -> Result<(), ShapeError> {
        match value {
            Value::Null => Err(ShapeError::Null(at.to_string())),
            Value::Array(_) => Err(ShapeError::Array(at.to_string())),
            Value::Object(_) if depth > MAX_DEPTH => Err(ShapeError::TooDeep(at.to_string())),
            Value::Object(map) => map
                .iter()
                .try_for_each(|(k, v)| walk(v, &format!("{at}.{}", truncate(k)), depth + 1)),
            _ => Ok(()),
        }
    }
    let Value::Object(map) = value else {
        return Err(ShapeError::NotAnObject(at.to_string()));
    };
    map.iter().try_for_each(|(k, v)| {
        let at = format!("{at}.{}", truncate(k));
        match v {
            Value::Array(items) if arrays.contains(&k.as_str()) => {
                items.iter().enumerate().try_for_each(|(i, item)| {
                    let at = format!("{at}[{i}]");
                    match item {
                        Value::Object(_) => walk(item, &at, 1),
                        Value::Null => Err(ShapeError::Null(at)),
                        _ => Err(ShapeError::NotAnObject(at)),
                    }
                })
            }
            _ => walk(v, &at, 1),
        }
    })
}

/// Parses one request. `path` is the request target without the query
/// string; `body` is the whole body.
///
/// ```
/// use kindling_api::{parse_request, ApiRequest, Method};
///
/// let request = parse_request(Method::Put, "/actions", br#"{"action_type": "InstanceStart"}"#);
/// assert!(matches!(request, Ok(ApiRequest::Action(_))));
/// let err = parse_request(Method::Put, "/balloon", b"{}").unwrap_err();
/// assert_eq!(err.to_string(), "Kindling does not support the memory balloon (/balloon) yet");
/// ```
pub fn parse_request(method: Method, path: &str, bytes: &[u8]) -> Result<ApiRequest, RequestError> {
    if bytes.len() > MAX_BODY_BYTES {
        return Err(RequestError::BodyTooLarge(bytes.len()));
    }
    let segments: Vec<&str> = match path.strip_prefix('/') {
        Some("") => Vec::new(),
        Some(rest) => rest.split('/').collect(),
        None => return Err(RequestError::UnknownPath(truncate(path))),
    };
    if let Some(unsupported) = Unsupported::from_path(&segments) {
        return Err(RequestError::Unsupported(unsupported));
    }
    let not_allowed = |allowed| RequestError::MethodNotAllowed {
        method: method.name(),
        path: truncate(path),
        allowed,
    };
    if method == Method::Get && !bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(RequestError::UnexpectedBody(truncate(path)));
    }
    let request = match (segments.as_slice(), method) {
        ([], Method::Get) => ApiRequest::GetInstanceInfo,
        ([], _) => return Err(not_allowed("GET")),
        (["version"], Method::Get) => ApiRequest::GetVersion,
        (["version"], _) => return Err(not_allowed("GET")),
        (["vm", "config"], Method::Get) => ApiRequest::GetVmConfig,
        (["vm", "config"], _) => return Err(not_allowed("GET")),
        (["vm"], Method::Patch) => ApiRequest::PatchVm(body::<VmPatch>(method, path, bytes)?.state),
        (["vm"], _) => return Err(not_allowed("PATCH")),
        (["machine-config"], Method::Get) => ApiRequest::GetMachineConfig,
        (["machine-config"], Method::Put) => {
            ApiRequest::PutMachineConfig(body(method, path, bytes)?)
        }
        (["machine-config"], Method::Patch) => {
            let update: MachineConfigUpdate = body(method, path, bytes)?;
            if update.is_empty() {
                return Err(RequestError::EmptyPatch(path.to_string()));
            }
            ApiRequest::PatchMachineConfig(update)
        }
        (["boot-source"], Method::Put) => ApiRequest::PutBootSource(body(method, path, bytes)?),
        (["boot-source"], _) => return Err(not_allowed("PUT")),
        (["drives", id], Method::Put) => {
            check_path_id(path, id)?;
            let drive: Drive = body(method, path, bytes)?;
            check_same_id(id, &drive.drive_id)?;
            ApiRequest::PutDrive(drive)
        }
        (["drives", id], Method::Patch) => {
            check_path_id(path, id)?;
            let drive: PartialDrive = body(method, path, bytes)?;
            check_same_id(id, &drive.drive_id)?;
            ApiRequest::PatchDrive(drive)
        }
        (["drives", _], _) => return Err(not_allowed("PUT, PATCH")),
        (["network-interfaces", id], Method::Put) => {
            check_path_id(path, id)?;
            let iface: NetworkInterface = body(method, path, bytes)?;
            check_same_id(id, &iface.iface_id)?;
            ApiRequest::PutNetworkInterface(iface)
        }
        (["network-interfaces", id], Method::Patch) => {
            check_path_id(path, id)?;
            let iface: PartialNetworkInterface = body(method, path, bytes)?;
            check_same_id(id, &iface.iface_id)?;
            ApiRequest::PatchNetworkInterface(iface)
        }
        (["network-interfaces", _], _) => return Err(not_allowed("PUT, PATCH")),
        (["vsock"], Method::Put) => ApiRequest::PutVsock(body(method, path, bytes)?),
        (["vsock"], _) => return Err(not_allowed("PUT")),
        (["entropy"], Method::Put) => ApiRequest::PutEntropy(body(method, path, bytes)?),
        (["entropy"], _) => return Err(not_allowed("PUT")),
        (["serial"], Method::Put) => ApiRequest::PutSerial(body(method, path, bytes)?),
        (["serial"], _) => return Err(not_allowed("PUT")),
        (["logger"], Method::Put) => ApiRequest::PutLogger(body(method, path, bytes)?),
        (["logger"], _) => return Err(not_allowed("PUT")),
        (["metrics"], Method::Put) => ApiRequest::PutMetrics(body(method, path, bytes)?),
        (["metrics"], _) => return Err(not_allowed("PUT")),
        (["actions"], Method::Put) => {
            ApiRequest::Action(body::<InstanceActionInfo>(method, path, bytes)?.action_type)
        }
        (["actions"], _) => return Err(not_allowed("PUT")),
        (["snapshot", "create"], Method::Put) => {
            let params: SnapshotCreateParams = body(method, path, bytes)?;
            ApiRequest::CreateSnapshot(params.check().map_err(|source| RequestError::Snapshot {
                path: "/snapshot/create",
                source,
            })?)
        }
        (["snapshot", "load"], Method::Put) => {
            let params: SnapshotLoadParams = body_with_arrays(
                method,
                path,
                bytes,
                &["network_overrides", "drive_overrides"],
            )?;
            ApiRequest::LoadSnapshot(params.check().map_err(|source| RequestError::Snapshot {
                path: "/snapshot/load",
                source,
            })?)
        }
        (["snapshot", "create" | "load"], _) => return Err(not_allowed("PUT")),
        _ => return Err(RequestError::UnknownPath(truncate(path))),
    };
    Ok(request)
}

fn check_path_id(path: &str, id: &str) -> Result<(), RequestError> {
    check_id(id).map_err(|source| RequestError::InvalidId {
        path: truncate(path),
        source,
    })
}

fn check_same_id(path_id: &str, body_id: &str) -> Result<(), RequestError> {
    if path_id != body_id {
        return Err(RequestError::IdMismatch {
            path_id: path_id.to_string(),
            body_id: truncate(body_id),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Method::*;

    fn ok(method: Method, path: &str, body: &str) -> ApiRequest {
        parse_request(method, path, body.as_bytes())
            .unwrap_or_else(|e| panic!("{method:?} {path} {body}: {e}"))
    }

    fn err(method: Method, path: &str, body: &str) -> RequestError {
        parse_request(method, path, body.as_bytes()).unwrap_err()
    }

    #[test]
    fn every_endpoint_parses() {
        assert_eq!(ok(Get, "/", ""), ApiRequest::GetInstanceInfo);
        assert_eq!(ok(Get, "/version", ""), ApiRequest::GetVersion);
        assert_eq!(ok(Get, "/vm/config", ""), ApiRequest::GetVmConfig);
        assert_eq!(
            ok(Get, "/machine-config", " \r\n"),
            ApiRequest::GetMachineConfig
        );
        assert!(matches!(
            ok(
                Put,
                "/machine-config",
                r#"{"vcpu_count": 2, "mem_size_mib": 64}"#
            ),
            ApiRequest::PutMachineConfig(MachineConfig { vcpu_count: 2, .. })
        ));
        assert!(matches!(
            ok(Patch, "/machine-config", r#"{"mem_size_mib": 64}"#),
            ApiRequest::PatchMachineConfig(_)
        ));
        assert!(matches!(
            ok(
                Put,
                "/boot-source",
                r#"{"kernel_image_path": "/k", "boot_args": "a=b"}"#
            ),
            ApiRequest::PutBootSource(BootSource { .. })
        ));
        assert!(matches!(
            ok(
                Put,
                "/drives/root",
                r#"{"drive_id": "root", "path_on_host": "/r", "is_root_device": true, "is_read_only": false}"#
            ),
            ApiRequest::PutDrive(_)
        ));
        assert!(matches!(
            ok(
                Patch,
                "/drives/root",
                r#"{"drive_id": "root", "path_on_host": "/s"}"#
            ),
            ApiRequest::PatchDrive(_)
        ));
        assert_eq!(
            ok(Put, "/entropy", "{}"),
            ApiRequest::PutEntropy(EntropyDevice::default())
        );
        assert!(matches!(
            ok(Put, "/serial", r#"{"serial_out_path": "/s"}"#),
            ApiRequest::PutSerial(_)
        ));
        assert!(matches!(
            ok(Put, "/logger", r#"{"level": "Debug"}"#),
            ApiRequest::PutLogger(_)
        ));
        assert!(matches!(
            ok(Put, "/metrics", r#"{"metrics_path": "/m"}"#),
            ApiRequest::PutMetrics(_)
        ));
        assert!(matches!(
            ok(
                Put,
                "/network-interfaces/eth0",
                r#"{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:00:00:00:01"}"#
            ),
            ApiRequest::PutNetworkInterface(_)
        ));
        assert!(matches!(
            ok(
                Patch,
                "/network-interfaces/eth0",
                r#"{"iface_id": "eth0", "tx_rate_limiter": {"ops": {"size": 10, "refill_time": 100}}}"#
            ),
            ApiRequest::PatchNetworkInterface(_)
        ));
        assert!(matches!(
            ok(Put, "/vsock", r#"{"guest_cid": 3, "uds_path": "/v.sock"}"#),
            ApiRequest::PutVsock(VsockDevice { guest_cid: 3, .. })
        ));
        assert_eq!(
            ok(Put, "/vsock", r#"{"guest_cid": 3, "uds_path": "/v"}"#).metric_name(),
            ("put_api_requests", "vsock")
        );
        assert_eq!(
            ok(Put, "/actions", r#"{"action_type": "SendCtrlAltDel"}"#),
            ApiRequest::Action(ActionType::SendCtrlAltDel)
        );
        assert_eq!(
            ok(Patch, "/vm", r#"{"state": "Resumed"}"#),
            ApiRequest::PatchVm(VmStateRequest::Resumed)
        );
        assert_eq!(
            ok(Put, "/actions", r#"{"action_type": "FlushMetrics"}"#).metric_name(),
            ("put_api_requests", "actions")
        );
    }

    #[test]
    fn bad_paths_and_methods() {
        assert!(matches!(
            err(Get, "/nope", ""),
            RequestError::UnknownPath(_)
        ));
        assert!(matches!(err(Get, "", ""), RequestError::UnknownPath(_)));
        assert!(matches!(
            err(Get, "version", ""),
            RequestError::UnknownPath(_)
        ));
        assert!(matches!(
            err(Get, "/version/", ""),
            RequestError::UnknownPath(_)
        ));
        assert!(matches!(err(Get, "//", ""), RequestError::UnknownPath(_)));
        assert!(matches!(
            err(Put, "/drives", "{}"),
            RequestError::UnknownPath(_)
        ));
        assert!(matches!(
            err(Put, "/drives/a/b", "{}"),
            RequestError::UnknownPath(_)
        ));
        let e = err(Put, "/", "{}");
        assert_eq!(e.to_string(), "PUT is not allowed on / (allowed: GET)");
        assert!(matches!(
            err(Get, "/drives/x", ""),
            RequestError::MethodNotAllowed { .. }
        ));
        assert!(matches!(
            err(Patch, "/boot-source", "{}"),
            RequestError::MethodNotAllowed { .. }
        ));
        assert!(matches!(
            err(Put, "/vm", "{}"),
            RequestError::MethodNotAllowed { .. }
        ));
        assert!(matches!(
            err(Get, "/actions", ""),
            RequestError::MethodNotAllowed { .. }
        ));
        assert!(matches!(
            err(Put, "/vm/config", "{}"),
            RequestError::MethodNotAllowed { .. }
        ));
        assert!(matches!(
            Method::parse("DELETE"),
            Err(RequestError::UnknownMethod(_))
        ));
        assert!(matches!(
            Method::parse("get"),
            Err(RequestError::UnknownMethod(_))
        ));
        assert_eq!(Method::parse("PATCH").unwrap().name(), "PATCH");
        let long = format!("/{}", "x".repeat(10_000));
        assert!(err(Get, &long, "").to_string().len() < 300);
    }

    #[test]
    fn unsupported_resources_say_so() {
        for (path, needle) in [
            ("/balloon", "balloon"),
            ("/balloon/statistics", "balloon"),
            ("/mmds", "metadata"),
            ("/mmds/config", "metadata"),
            ("/pmem/p0", "pmem"),
            ("/hotplug/memory", "hotplug"),
            ("/cpu-config", "CPU"),
        ] {
            for method in [Get, Put, Patch] {
                let e = err(method, path, "{}");
                assert!(matches!(e, RequestError::Unsupported(_)), "{path}");
                let text = e.to_string();
                assert!(text.starts_with("Kindling does not support"), "{text}");
                assert!(text.contains(needle), "{text}");
            }
        }
    }

    #[test]
    fn bad_bodies() {
        assert!(matches!(
            err(Put, "/boot-source", ""),
            RequestError::MissingBody { .. }
        ));
        assert!(matches!(
            err(Put, "/boot-source", "  "),
            RequestError::MissingBody { .. }
        ));
        assert!(matches!(
            err(Get, "/", "{}"),
            RequestError::UnexpectedBody(_)
        ));
        let e = err(Put, "/boot-source", "{");
        assert!(matches!(e, RequestError::InvalidBody { .. }));
        assert!(e.to_string().contains("EOF"), "{e}");
        let e = err(
            Put,
            "/boot-source",
            r#"{"kernel_image_path": "/k", "initrd": "/i"}"#,
        );
        assert!(e.to_string().contains("unknown field `initrd`"), "{e}");
        let e = err(Put, "/boot-source", r#"{"kernel_image_path": 5}"#);
        assert!(e.to_string().contains("invalid type"), "{e}");
        assert!(matches!(
            err(Put, "/boot-source", "[]"),
            RequestError::InvalidBody { .. }
        ));
        assert!(matches!(
            err(Put, "/boot-source", "null"),
            RequestError::InvalidBody { .. }
        ));
        assert!(matches!(
            err(Put, "/boot-source", r#"{"kernel_image_path": "/k"} {}"#),
            RequestError::InvalidBody { .. }
        ));
        assert!(matches!(
            err(
                Put,
                "/boot-source",
                r#"{"kernel_image_path": "/k", "kernel_image_path": "/j"}"#
            ),
            RequestError::InvalidBody { .. }
        ));
        assert!(matches!(
            err(Put, "/boot-source", "\u{feff}{}"),
            RequestError::InvalidBody { .. }
        ));
        let deep = "[".repeat(10_000);
        assert!(matches!(
            err(Put, "/actions", &deep),
            RequestError::InvalidBody { .. }
        ));
        let huge = format!(
            r#"{{"kernel_image_path": "{}"}}"#,
            "k".repeat(MAX_BODY_BYTES)
        );
        assert!(matches!(
            err(Put, "/boot-source", &huge),
            RequestError::BodyTooLarge(_)
        ));
        assert!(matches!(
            err(Patch, "/machine-config", "{}"),
            RequestError::EmptyPatch(_)
        ));
        assert!(matches!(
            err(Patch, "/vm", r#"{"state": "paused"}"#),
            RequestError::InvalidBody { .. }
        ));
        assert!(matches!(
            err(Put, "/actions", r#"{"action_type": null}"#),
            RequestError::InvalidBody { .. }
        ));
        assert!(matches!(
            err(Put, "/entropy", r#"{"rate_limiter": 1}"#),
            RequestError::InvalidBody { .. }
        ));
    }

    #[test]
    fn snapshot_bodies() {
        assert_eq!(
            ok(
                Put,
                "/snapshot/create",
                r#"{"snapshot_type": "Diff", "snapshot_path": "/s", "mem_file_path": "/m"}"#
            ),
            ApiRequest::CreateSnapshot(SnapshotCreate {
                kind: kindling_vmm::snapshot::SnapshotKind::Diff,
                state_path: "/s".into(),
                mem_path: "/m".into(),
            })
        );
        let load = ok(
            Put,
            "/snapshot/load",
            r#"{"snapshot_path": "/s", "mem_backend": {"backend_type": "File", "backend_path": "/m"}, "network_overrides": [], "resume_vm": true}"#,
        );
        assert_eq!(load.metric_name(), ("put_api_requests", "snapshot_load"));
        let ApiRequest::LoadSnapshot(load) = load else {
            panic!("{load:?}")
        };
        assert!(load.resume);
        assert!(matches!(
            err(Get, "/snapshot/create", ""),
            RequestError::MethodNotAllowed { .. }
        ));
        assert!(matches!(
            err(Patch, "/snapshot/load", "{}"),
            RequestError::MethodNotAllowed { .. }
        ));
        assert!(matches!(
            err(Put, "/snapshot", "{}"),
            RequestError::UnknownPath(_)
        ));
        assert!(matches!(
            err(Put, "/snapshot/restore", "{}"),
            RequestError::UnknownPath(_)
        ));
        assert!(matches!(
            err(Put, "/snapshot/create", ""),
            RequestError::MissingBody { .. }
        ));
        let e = err(
            Put,
            "/snapshot/load",
            r#"{"snapshot_path": "/s", "mem_file_path": "/m", "network_overrides": [{"iface_id": "eth0", "host_dev_name": ""}]}"#,
        );
        assert_eq!(
            e.to_string(),
            "invalid body for /snapshot/load: network_overrides[].host_dev_name is empty"
        );
        // Arrays only where the document has one, of objects only.
        for bad in [
            r#"{"snapshot_path": "/s", "mem_file_path": "/m", "network_overrides": [1]}"#,
            r#"{"snapshot_path": "/s", "mem_file_path": "/m", "network_overrides": [null]}"#,
            r#"{"snapshot_path": "/s", "mem_file_path": "/m", "network_overrides": [[]]}"#,
            r#"{"snapshot_path": "/s", "mem_file_path": "/m", "network_overrides": [{"iface_id": []}]}"#,
            r#"{"snapshot_path": ["/s"], "mem_file_path": "/m"}"#,
            r#"{"snapshot_path": "/s", "mem_file_path": null}"#,
            r#"{"snapshot_path": "/s", "mem_backend": {"backend_type": "File", "backend_path": "/m", "x": 1}}"#,
            "[]",
        ] {
            assert!(
                matches!(
                    err(Put, "/snapshot/load", bad),
                    RequestError::InvalidBody { .. }
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            err(
                Put,
                "/snapshot/create",
                r#"{"snapshot_path": "/s", "mem_file_path": "/m", "network_overrides": []}"#
            ),
            RequestError::InvalidBody { .. }
        ));
        let e = err(
            Put,
            "/snapshot/create",
            r#"{"snapshot_path": "/s", "mem_file_path": "", "snapshot_type": "Full"}"#,
        );
        assert_eq!(
            e.to_string(),
            "invalid body for /snapshot/create: mem_file_path is empty"
        );
    }

    #[test]
    fn drive_ids() {
        let d = r#"{"drive_id": "b", "path_on_host": "/r", "is_root_device": false}"#;
        let e = err(Put, "/drives/a", d);
        assert_eq!(
            e,
            RequestError::IdMismatch {
                path_id: "a".into(),
                body_id: "b".into()
            }
        );
        assert!(e.to_string().contains("does not match"));
        assert!(matches!(
            err(Put, "/drives/a-b", d),
            RequestError::InvalidId { .. }
        ));
        assert!(matches!(
            err(Put, "/drives/", d),
            RequestError::InvalidId { .. }
        ));
        assert!(matches!(
            err(Patch, "/drives/a", r#"{"drive_id": "b"}"#),
            RequestError::IdMismatch { .. }
        ));
        assert!(matches!(
            err(Patch, "/drives/%41", "{}"),
            RequestError::InvalidId { .. }
        ));
    }

    #[test]
    fn network_interfaces_and_vsock() {
        let n = r#"{"iface_id": "eth1", "host_dev_name": "tap0"}"#;
        assert_eq!(
            err(Put, "/network-interfaces/eth0", n),
            RequestError::IdMismatch {
                path_id: "eth0".into(),
                body_id: "eth1".into()
            }
        );
        assert!(matches!(
            err(Patch, "/network-interfaces/eth0", r#"{"iface_id": "eth1"}"#),
            RequestError::IdMismatch { .. }
        ));
        assert!(matches!(
            err(Put, "/network-interfaces/eth-0", n),
            RequestError::InvalidId { .. }
        ));
        assert!(matches!(
            err(Put, "/network-interfaces", n),
            RequestError::UnknownPath(_)
        ));
        assert!(matches!(
            err(Get, "/network-interfaces/eth0", ""),
            RequestError::MethodNotAllowed { .. }
        ));
        for bad in [
            r#"{"iface_id": "eth0"}"#,
            r#"{"iface_id": "eth0", "host_dev_name": "tap0", "mtu": 1500}"#,
            r#"{"iface_id": "eth0", "host_dev_name": null}"#,
            r#"{"iface_id": "eth0", "host_dev_name": "tap0", "rx_rate_limiter": {"ops": {"size": 1}}}"#,
        ] {
            assert!(
                matches!(
                    err(Put, "/network-interfaces/eth0", bad),
                    RequestError::InvalidBody { .. }
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            err(
                Patch,
                "/network-interfaces/eth0",
                r#"{"iface_id": "eth0", "host_dev_name": "tap1"}"#
            ),
            RequestError::InvalidBody { .. }
        ));
        assert!(matches!(
            err(Patch, "/vsock", r#"{"guest_cid": 3, "uds_path": "/v"}"#),
            RequestError::MethodNotAllowed { .. }
        ));
        for bad in [
            "{}",
            r#"{"guest_cid": 3}"#,
            r#"{"guest_cid": "3", "uds_path": "/v"}"#,
            r#"{"guest_cid": 3, "uds_path": "/v", "port": 1}"#,
        ] {
            assert!(
                matches!(err(Put, "/vsock", bad), RequestError::InvalidBody { .. }),
                "{bad}"
            );
        }
    }
}
