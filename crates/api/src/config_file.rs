//! Firecracker's `--config-file` format: the API bodies keyed by resource
//! (`"boot-source"`, `"drives"`, `"machine-config"`, ...), turned into the
//! same [`ApiRequest`]s the socket takes, in the order Firecracker applies
//! them.

use serde::Deserialize;

use crate::models::{
    BootSource, Drive, EntropyDevice, LoggerConfig, MachineConfig, MetricsConfig, NetworkInterface,
    SerialDevice, VsockDevice,
};
use crate::request::ApiRequest;
use crate::unsupported::Unsupported;

/// The largest config file read (1 MiB).
pub const MAX_CONFIG_FILE_BYTES: u64 = 1 << 20;

/// Why a config file is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// The error from the kernel.
        source: std::io::Error,
    },
    /// The file is over [`MAX_CONFIG_FILE_BYTES`].
    #[error(
        "the config file {path} is {len} bytes, more than the {MAX_CONFIG_FILE_BYTES} allowed"
    )]
    TooLarge {
        /// The path.
        path: String,
        /// Its size.
        len: u64,
    },
    /// The JSON does not match the format.
    #[error("invalid config file: {0}")]
    Invalid(String),
    /// A resource has a `null`, an array or another shape the API does
    /// not take.
    #[error("invalid config file: {0}")]
    Shape(#[from] crate::request::ShapeError),
    /// A drive id is invalid.
    #[error("invalid config file: drive id {id:?}: {source}")]
    DriveId {
        /// The id.
        id: String,
        /// What is wrong with it.
        source: crate::models::IdError,
    },
    /// A network interface's id is invalid.
    #[error("invalid config file: iface_id {id:?}: {source}")]
    IfaceId {
        /// The id.
        id: String,
        /// What is wrong with it.
        source: crate::models::IdError,
    },
    /// A resource Kindling does not support yet, with a non-empty value.
    #[error("invalid config file: {0}")]
    Unsupported(Unsupported),
}

/// The config file's shape (Firecracker's `FullVmConfiguration` plus
/// `serial`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(rename = "boot-source")]
    boot_source: BootSource,
    #[serde(default)]
    drives: Vec<Drive>,
    #[serde(rename = "machine-config", default)]
    machine_config: Option<MachineConfig>,
    #[serde(default)]
    logger: Option<LoggerConfig>,
    #[serde(default)]
    metrics: Option<MetricsConfig>,
    #[serde(default)]
    entropy: Option<EntropyDevice>,
    #[serde(default)]
    serial: Option<SerialDevice>,
    #[serde(rename = "network-interfaces", default)]
    network_interfaces: Vec<NetworkInterface>,
    #[serde(default)]
    vsock: Option<VsockDevice>,
    #[serde(default)]
    balloon: Option<serde_json::Value>,
    #[serde(rename = "mmds-config", default)]
    mmds_config: Option<serde_json::Value>,
    #[serde(default)]
    pmem: Option<Vec<serde_json::Value>>,
    #[serde(rename = "cpu-config", default)]
    cpu_config: Option<serde_json::Value>,
    #[serde(rename = "memory-hotplug", default)]
    memory_hotplug: Option<serde_json::Value>,
}

/// Parses a config file's text into the requests that configure the VM
/// (logger and metrics first, so the rest is logged and counted), without
/// the final `InstanceStart`.
pub fn parse_config(text: &[u8]) -> Result<Vec<ApiRequest>, ConfigFileError> {
    let value: serde_json::Value =
        serde_json::from_slice(text).map_err(|e| ConfigFileError::Invalid(e.to_string()))?;
    // Each resource is held to the shapes the API takes.
    if let Some(map) = value.as_object() {
        for (key, resource) in map {
            match (key.as_str(), resource) {
                (key @ ("drives" | "network-interfaces"), serde_json::Value::Array(list)) => {
                    for (i, item) in list.iter().enumerate() {
                        crate::request::check_shape(item, &format!("{key}[{i}]"))?;
                    }
                }
                (_, serde_json::Value::Null | serde_json::Value::Array(_)) => {}
                (key, resource) => crate::request::check_shape(resource, key)?,
            }
        }
    }
    let file: ConfigFile =
        serde_json::from_slice(text).map_err(|e| ConfigFileError::Invalid(e.to_string()))?;
    let refuse_list = |v: &Option<Vec<serde_json::Value>>, what| match v {
        Some(list) if !list.is_empty() => Err(ConfigFileError::Unsupported(what)),
        _ => Ok(()),
    };
    let refuse = |v: &Option<serde_json::Value>, what| match v {
        Some(value) if !value.is_null() => Err(ConfigFileError::Unsupported(what)),
        _ => Ok(()),
    };
    refuse_list(&file.pmem, Unsupported::Pmem)?;
    refuse(&file.balloon, Unsupported::Balloon)?;
    refuse(&file.mmds_config, Unsupported::Mmds)?;
    refuse(&file.cpu_config, Unsupported::CpuConfig)?;
    refuse(&file.memory_hotplug, Unsupported::MemoryHotplug)?;
    let mut requests = Vec::new();
    if let Some(logger) = file.logger {
        requests.push(ApiRequest::PutLogger(logger));
    }
    if let Some(metrics) = file.metrics {
        requests.push(ApiRequest::PutMetrics(metrics));
    }
    if let Some(machine) = file.machine_config {
        requests.push(ApiRequest::PutMachineConfig(machine));
    }
    requests.push(ApiRequest::PutBootSource(file.boot_source));
    for drive in file.drives {
        crate::models::check_id(&drive.drive_id).map_err(|source| ConfigFileError::DriveId {
            id: drive.drive_id.clone(),
            source,
        })?;
        requests.push(ApiRequest::PutDrive(drive));
    }
    for iface in file.network_interfaces {
        crate::models::check_id(&iface.iface_id).map_err(|source| ConfigFileError::IfaceId {
            id: iface.iface_id.clone(),
            source,
        })?;
        requests.push(ApiRequest::PutNetworkInterface(iface));
    }
    if let Some(vsock) = file.vsock {
        requests.push(ApiRequest::PutVsock(vsock));
    }
    if let Some(entropy) = file.entropy {
        requests.push(ApiRequest::PutEntropy(entropy));
    }
    if let Some(serial) = file.serial {
        requests.push(ApiRequest::PutSerial(serial));
    }
    Ok(requests)
}

/// Reads and parses a config file.
pub fn read_config(path: &std::path::Path) -> Result<Vec<ApiRequest>, ConfigFileError> {
    use std::io::Read;
    let read_err = |source| ConfigFileError::Read {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut text = Vec::new();
    file.take(MAX_CONFIG_FILE_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > MAX_CONFIG_FILE_BYTES {
        return Err(ConfigFileError::TooLarge {
            path: path.display().to_string(),
            len: text.len() as u64,
        });
    }
    parse_config(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_in_order() {
        let text = br#"{
            "boot-source": {"kernel_image_path": "/k", "boot_args": "console=ttyS0"},
            "drives": [{"drive_id": "rootfs", "path_on_host": "/r", "is_root_device": true, "is_read_only": false}],
            "machine-config": {"vcpu_count": 2, "mem_size_mib": 256},
            "logger": {"level": "Info"},
            "metrics": {"metrics_path": "/m"},
            "entropy": {},
            "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0",
                                    "tx_rate_limiter": {"ops": {"size": 10, "refill_time": 100}}}],
            "vsock": {"guest_cid": 3, "uds_path": "/v.sock"}
        }"#;
        let requests = parse_config(text).unwrap();
        let names: Vec<_> = requests.iter().map(|r| r.metric_name().1).collect();
        assert_eq!(
            names,
            [
                "logger",
                "metrics",
                "machine_cfg",
                "boot_source",
                "drive",
                "network",
                "vsock",
                "entropy"
            ]
        );
    }

    #[test]
    fn bad_files() {
        let e = parse_config(b"{}").unwrap_err();
        assert!(e.to_string().contains("missing field `boot-source`"), "{e}");
        let e = parse_config(br#"{"boot-source": {"kernel_image_path": "/k"}, "nics": []}"#)
            .unwrap_err();
        assert!(e.to_string().contains("unknown field `nics`"), "{e}");
        let e = parse_config(
            br#"{"boot-source": {"kernel_image_path": "/k"}, "network-interfaces": [{"iface_id": "eth0"}]}"#,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("missing field `host_dev_name`"),
            "{e}"
        );
        let e = parse_config(
            br#"{"boot-source": {"kernel_image_path": "/k"}, "network-interfaces": [{"iface_id": "eth 0", "host_dev_name": "t"}]}"#,
        )
        .unwrap_err();
        assert!(matches!(e, ConfigFileError::IfaceId { .. }), "{e}");
        let e = parse_config(
            br#"{"boot-source": {"kernel_image_path": "/k"}, "network-interfaces": [{"iface_id": "e", "host_dev_name": null}]}"#,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("network-interfaces[0].host_dev_name is null"),
            "{e}"
        );
        let e = parse_config(
            br#"{"boot-source": {"kernel_image_path": "/k"}, "vsock": {"uds_path": "/v"}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("missing field `guest_cid`"), "{e}");
        let e = parse_config(
            br#"{"boot-source": {"kernel_image_path": "/k"}, "balloon": {"amount_mib": 1}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("balloon"), "{e}");
        let e = parse_config(
            br#"{"boot-source": {"kernel_image_path": "/k"}, "drives": [{"drive_id": "a b", "is_root_device": false}]}"#,
        )
        .unwrap_err();
        assert!(matches!(e, ConfigFileError::DriveId { .. }), "{e}");
        assert!(parse_config(b"\xff").is_err());
        let e =
            parse_config(br#"{"boot-source": {"kernel_image_path": "/k", "initrd_path": null}}"#)
                .unwrap_err();
        assert!(
            e.to_string().contains("boot-source.initrd_path is null"),
            "{e}"
        );
        let e = parse_config(br#"{"boot-source": {"kernel_image_path": "/k"}, "drives": [["d"]]}"#)
            .unwrap_err();
        assert!(
            e.to_string().contains("drives[0] must be a JSON object"),
            "{e}"
        );
        let e = read_config(std::path::Path::new("/nonexistent/config.json")).unwrap_err();
        assert!(
            e.to_string()
                .contains("cannot read the config file /nonexistent"),
            "{e}"
        );
    }
}
