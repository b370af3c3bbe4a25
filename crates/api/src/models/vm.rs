//! `PUT /actions`, `PATCH /vm`, and the bodies of `GET /` and
//! `GET /version`.

use serde::{Deserialize, Serialize};

/// Firecracker's `InstanceActionInfo.action_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionType {
    /// Write the metrics now.
    FlushMetrics,
    /// Boot the microVM.
    InstanceStart,
    /// Press Ctrl-Alt-Del on the i8042 keyboard.
    SendCtrlAltDel,
}

/// Firecracker's `InstanceActionInfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceActionInfo {
    /// The action.
    pub action_type: ActionType,
}

/// Firecracker's `Vm.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmStateRequest {
    /// Pause the vCPUs and devices.
    Paused,
    /// Resume them.
    Resumed,
}

/// Firecracker's `Vm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmPatch {
    /// The state asked for.
    pub state: VmStateRequest,
}

/// Firecracker's `InstanceInfo` (`GET /`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceInfo {
    /// The application's name: `"Kindling"`.
    pub app_name: String,
    /// The instance id.
    pub id: String,
    /// `"Not started"`, `"Running"` or `"Paused"`.
    pub state: String,
    /// Kindling's version.
    pub vmm_version: String,
}

/// Firecracker's `FirecrackerVersion` (`GET /version`): Kindling's own
/// version, under the field name clients look for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionInfo {
    /// Kindling's version.
    pub firecracker_version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_and_states() {
        let a: InstanceActionInfo =
            serde_json::from_str(r#"{"action_type": "InstanceStart"}"#).unwrap();
        assert_eq!(a.action_type, ActionType::InstanceStart);
        for bad in [
            r#"{"action_type": "instancestart"}"#,
            r#"{"action_type": "Reboot"}"#,
            r#"{}"#,
            r#"{"action_type": "FlushMetrics", "payload": 1}"#,
        ] {
            assert!(
                serde_json::from_str::<InstanceActionInfo>(bad).is_err(),
                "{bad}"
            );
        }
        let v: VmPatch = serde_json::from_str(r#"{"state": "Paused"}"#).unwrap();
        assert_eq!(v.state, VmStateRequest::Paused);
        assert!(serde_json::from_str::<VmPatch>(r#"{"state": "Running"}"#).is_err());
    }
}
