//! `PUT|PATCH /network-interfaces/{iface_id}` and `PUT /vsock`.

use serde::{Deserialize, Serialize};

use super::rate_limiter::RateLimiter;

/// Firecracker's `NetworkInterface` (for `PUT` and in `GET /vm/config`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterface {
    /// The interface's id (alphanumeric and `_`, at most 64 bytes).
    pub iface_id: String,
    /// The host TAP device, created beforehand
    /// (`ip tuntap add NAME mode tap`).
    pub host_dev_name: String,
    /// The guest's MAC address (`aa:bb:cc:dd:ee:ff`); the guest picks its
    /// own when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
    /// Limits on what the guest receives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiter>,
    /// Limits on what the guest sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiter>,
}

/// Firecracker's `PartialNetworkInterface` (for `PATCH`, after
/// `InstanceStart`): new rate limits for a running interface.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialNetworkInterface {
    /// The interface's id.
    pub iface_id: String,
    /// New receive limits (a bucket given replaces the current one, a
    /// bucket of size 0 removes it).
    #[serde(default)]
    pub rx_rate_limiter: Option<RateLimiter>,
    /// New transmit limits (same rules).
    #[serde(default)]
    pub tx_rate_limiter: Option<RateLimiter>,
}

/// Firecracker's `Vsock` (for `PUT /vsock` and in `GET /vm/config`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockDevice {
    /// An id for the device (deprecated in Firecracker, kept for
    /// compatibility; not used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_id: Option<String>,
    /// The guest's context id (3 or more).
    pub guest_cid: u64,
    /// The host Unix socket the device listens on; guest connections to
    /// host port `P` go to `<uds_path>_<P>`. It must not exist yet and its
    /// directory must.
    pub uds_path: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        let n: NetworkInterface = serde_json::from_str(
            r#"{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:00:00:00:01",
                "rx_rate_limiter": {"bandwidth": {"size": 1000, "refill_time": 100}}}"#,
        )
        .unwrap();
        assert_eq!(n.host_dev_name, "tap0");
        assert!(n.rx_rate_limiter.unwrap().limits());
        for bad in [
            r#"{"iface_id": "eth0"}"#,
            r#"{"host_dev_name": "tap0"}"#,
            r#"{"iface_id": "eth0", "host_dev_name": "tap0", "allow_mmds_requests": true}"#,
            r#"{"iface_id": "eth0", "host_dev_name": 1}"#,
        ] {
            assert!(
                serde_json::from_str::<NetworkInterface>(bad).is_err(),
                "{bad}"
            );
        }
        let p: PartialNetworkInterface = serde_json::from_str(r#"{"iface_id": "eth0"}"#).unwrap();
        assert_eq!(p.rx_rate_limiter, None);
        assert!(serde_json::from_str::<PartialNetworkInterface>(
            r#"{"iface_id": "eth0", "host_dev_name": "tap1"}"#
        )
        .is_err());
        let v: VsockDevice =
            serde_json::from_str(r#"{"vsock_id": "v", "guest_cid": 3, "uds_path": "/v.sock"}"#)
                .unwrap();
        assert_eq!(v.guest_cid, 3);
        assert!(serde_json::from_str::<VsockDevice>(r#"{"guest_cid": 3}"#).is_err());
        assert!(
            serde_json::from_str::<VsockDevice>(r#"{"guest_cid": -3, "uds_path": "/v"}"#).is_err()
        );
        assert!(serde_json::from_str::<VsockDevice>(
            r#"{"guest_cid": 3, "uds_path": "/v", "cid": 3}"#
        )
        .is_err());
    }
}
