//! The persist contract for the network device: it saves its
//! configuration (TAP name, MAC, queue size, rate limits) and the frame it
//! holds, if any (read from the TAP, not yet delivered because the driver
//! had no receive buffers left): the restored device delivers it first, so
//! a snapshot loses no frame the device had taken. Frames still queued in
//! the TAP are the kernel's: they are dropped when the saved VM's process
//! closes the TAP (Linux purges a TAP's queue when its last fd goes), like
//! packets lost on a link, which TCP retransmits; while no VMM has the TAP
//! open, and until the kernel's link watcher has caught up with the
//! carrier of a reopened one (up to a second), what the host sends to it
//! is dropped too. The features the
//! driver accepted and the queues are saved by the transport, whose
//! restore reactivates the device (which sets the TAP's offloads again).
//! The TAP is reopened by name at restore, or by another name
//! (Firecracker's `network_overrides`), or handed in open. Rate-limiter
//! buckets start full.

use kindling_memory::Persist;

use super::{Net, NetConfig, NetError, Tap, MAX_FRAME_LEN, VNET_HDR_LEN};

/// The network device's state, for snapshots.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetState {
    /// The configuration, with the rate limits in force when saved.
    pub config: NetConfig,
    /// The features the device offered.
    pub device_features: u64,
    /// The frame the device had read from the TAP and not yet delivered.
    pub held_frame: Option<HeldFrame>,
}

/// A received frame waiting for receive buffers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeldFrame {
    /// The bytes read from the TAP: the 12-byte virtio header, then the
    /// frame.
    pub bytes: Vec<u8>,
    /// Whether the receive rate limiter already charged it (it is not
    /// charged again).
    pub charged: bool,
}

/// Where a restored [`Net`] finds its TAP.
#[derive(Debug, Default)]
pub enum NetRestoreArgs {
    /// Reopen the TAP the saved device used.
    #[default]
    SameTap,
    /// Open this TAP interface instead.
    OverrideTap(String),
    /// Use this TAP, already open.
    Tap(Tap),
}

impl Persist<'_> for Net {
    type State = NetState;
    type ConstructorArgs = NetRestoreArgs;
    type Error = NetError;

    fn save(&self) -> Result<NetState, NetError> {
        Ok(NetState {
            config: self.config(),
            device_features: self.features,
            held_frame: self.held_frame().map(|(bytes, charged)| HeldFrame {
                bytes: bytes.to_vec(),
                charged,
            }),
        })
    }

    /// Recreates an (inactive) device holding the saved frame, if any; the
    /// transport's restore reactivates it with its queues, and the frame
    /// is the first the driver receives. Rate-limiter buckets start full.
    fn restore(args: NetRestoreArgs, state: &NetState) -> Result<Self, NetError> {
        if let Some(held) = &state.held_frame {
            let len = held.bytes.len();
            if !(VNET_HDR_LEN..=VNET_HDR_LEN + MAX_FRAME_LEN).contains(&len) {
                return Err(NetError::HeldFrameLength { len });
            }
        }
        let mut config = state.config.clone();
        let net = match args {
            NetRestoreArgs::SameTap => Net::new(&config)?,
            NetRestoreArgs::OverrideTap(name) => {
                config.tap = name;
                Net::new(&config)?
            }
            NetRestoreArgs::Tap(tap) => {
                config.tap = tap.name().to_string();
                Net::with_tap(tap, &config)?
            }
        };
        let mut net = net;
        if let Some(held) = &state.held_frame {
            net.hold_frame(&held.bytes, held.charged);
        }
        Ok(net)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::device::tests::{netns_tap, TestTap};
    use crate::rate_limiter::{RateLimiterConfig, TokenBucketConfig};
    use crate::VirtioDevice;

    #[test]
    fn state_round_trips_and_the_tap_is_reopened_by_name_or_override() {
        let TestTap { name, .. } = netns_tap("kdlp0", true);
        let mut config = NetConfig::new(&name);
        config.mac = Some("06:00:00:00:00:09".parse().unwrap());
        config.tx_rate_limiter = Some(RateLimiterConfig {
            bandwidth: None,
            ops: Some(TokenBucketConfig {
                size: 10,
                one_time_burst: 0,
                refill_time: 100,
            }),
        });
        let net = Net::new(&config).unwrap();
        let state: NetState =
            serde_json::from_str(&serde_json::to_string(&net.save().unwrap()).unwrap()).unwrap();
        assert_eq!(state.config, config);
        drop(net);
        let again = Net::restore(NetRestoreArgs::SameTap, &state).unwrap();
        assert_eq!(again.config(), config);
        assert_eq!(again.device_features(), state.device_features);
        drop(again);
        let other = netns_tap("kdlp1", true);
        let moved = Net::restore(NetRestoreArgs::OverrideTap(other.name.clone()), &state).unwrap();
        assert_eq!(moved.tap_name(), "kdlp1");
        let e = Net::restore(NetRestoreArgs::OverrideTap("kdl-gone".into()), &state).unwrap_err();
        assert!(
            e.to_string().contains("no network interface \"kdl-gone\""),
            "{e}"
        );
    }
}
