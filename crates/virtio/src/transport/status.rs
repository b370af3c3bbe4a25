//! The device-status state machine (virtio 1.2 §2.1 and §3.1.1), as a pure
//! function of the current status and the value the driver writes.
//!
//! The driver initialises a device by setting, one write at a time,
//! ACKNOWLEDGE, DRIVER, FEATURES_OK and DRIVER_OK, each write keeping the
//! bits already set. It may set FAILED at any time, and writes 0 to reset.
//! Anything else is refused: the status stays as it was.
//!
//! The status bits are virtio-bindings' `VIRTIO_CONFIG_S_*`.

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
};

/// The driver found the device.
pub const ACKNOWLEDGE: u32 = VIRTIO_CONFIG_S_ACKNOWLEDGE;
/// The driver knows how to drive the device.
pub const DRIVER: u32 = VIRTIO_CONFIG_S_DRIVER;
/// The driver is set up and ready to drive the device.
pub const DRIVER_OK: u32 = VIRTIO_CONFIG_S_DRIVER_OK;
/// The driver acknowledged the features it understands.
pub const FEATURES_OK: u32 = VIRTIO_CONFIG_S_FEATURES_OK;
/// The device hit an error it cannot recover from (set by the device).
pub const DEVICE_NEEDS_RESET: u32 = VIRTIO_CONFIG_S_NEEDS_RESET;
/// The driver gave up on the device.
pub const FAILED: u32 = VIRTIO_CONFIG_S_FAILED;

const KNOWN: u32 = ACKNOWLEDGE | DRIVER | DRIVER_OK | FEATURES_OK | DEVICE_NEEDS_RESET | FAILED;

/// What an accepted status write does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusStep {
    /// 0 was written: reset the device.
    Reset,
    /// Sets ACKNOWLEDGE.
    Acknowledge,
    /// Sets DRIVER.
    Driver,
    /// Asks for FEATURES_OK: the transport checks the negotiated features.
    FeaturesOk,
    /// Asks for DRIVER_OK: the transport validates the queues and
    /// activates the device.
    DriverOk,
    /// Sets FAILED.
    Failed,
    /// The value is the current status: nothing changes.
    Unchanged,
}

/// Why a status write was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    /// The value has bits virtio does not define.
    #[error("status {value:#x} has bits virtio does not define")]
    UnknownBits {
        /// The value written.
        value: u32,
    },
    /// The driver set FAILED earlier; only a reset is accepted now.
    #[error("status {value:#x} written after FAILED: only a reset (0) is accepted")]
    AfterFailed {
        /// The value written.
        value: u32,
    },
    /// The value is not the current status plus the next step.
    #[error("status {value:#x} after {current:#x} is not the next initialisation step (virtio 1.2 section 3.1.1)")]
    OutOfOrder {
        /// The status before the write.
        current: u32,
        /// The value written.
        value: u32,
    },
}

/// Checks a driver's write of `value` to the Status register when the
/// status is `current`.
///
/// DEVICE_NEEDS_RESET is the device's bit: a driver that writes back the
/// status it read (as Linux does) may include it, and it is ignored.
pub fn check_write(current: u32, value: u32) -> Result<StatusStep, StatusError> {
    if value == 0 {
        return Ok(StatusStep::Reset);
    }
    if value & !KNOWN != 0 {
        return Err(StatusError::UnknownBits { value });
    }
    let current = current & !DEVICE_NEEDS_RESET;
    let value = value & !DEVICE_NEEDS_RESET;
    if current & FAILED != 0 {
        return if value == current {
            Ok(StatusStep::Unchanged)
        } else {
            Err(StatusError::AfterFailed { value })
        };
    }
    if value & FAILED != 0 {
        return Ok(StatusStep::Failed);
    }
    if value == current {
        return Ok(StatusStep::Unchanged);
    }
    let step = match current {
        0 => (ACKNOWLEDGE, StatusStep::Acknowledge),
        ACKNOWLEDGE => (DRIVER, StatusStep::Driver),
        x if x == ACKNOWLEDGE | DRIVER => (FEATURES_OK, StatusStep::FeaturesOk),
        x if x == ACKNOWLEDGE | DRIVER | FEATURES_OK => (DRIVER_OK, StatusStep::DriverOk),
        _ => return Err(StatusError::OutOfOrder { current, value }),
    };
    if value == current | step.0 {
        Ok(step.1)
    } else {
        Err(StatusError::OutOfOrder { current, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: u32 = ACKNOWLEDGE;
    const AD: u32 = ACKNOWLEDGE | DRIVER;
    const ADF: u32 = ACKNOWLEDGE | DRIVER | FEATURES_OK;
    const ALL: u32 = ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK;

    #[test]
    fn the_initialisation_sequence_is_accepted() {
        assert_eq!(check_write(0, A), Ok(StatusStep::Acknowledge));
        assert_eq!(check_write(A, AD), Ok(StatusStep::Driver));
        assert_eq!(check_write(AD, ADF), Ok(StatusStep::FeaturesOk));
        assert_eq!(check_write(ADF, ALL), Ok(StatusStep::DriverOk));
        for s in [0, A, AD, ADF, ALL, ALL | FAILED] {
            assert_eq!(check_write(s, 0), Ok(StatusStep::Reset));
        }
        for s in [A, AD, ADF, ALL] {
            assert_eq!(check_write(s, s), Ok(StatusStep::Unchanged));
        }
    }

    #[test]
    fn every_other_transition_is_refused() {
        let states = [0, A, AD, ADF, ALL];
        let next = [A, AD, ADF, ALL];
        // Every value without FAILED from every state, except the next step
        // and the current status.
        for (i, &s) in states.iter().enumerate() {
            for v in 1..=0xffu32 {
                if v & (FAILED | DEVICE_NEEDS_RESET) != 0 {
                    continue;
                }
                let r = check_write(s, v);
                if v == s || next.get(i) == Some(&v) {
                    assert!(r.is_ok(), "{s:#x} -> {v:#x}");
                } else if v & !KNOWN != 0 {
                    assert_eq!(r, Err(StatusError::UnknownBits { value: v }));
                } else {
                    assert_eq!(
                        r,
                        Err(StatusError::OutOfOrder {
                            current: s,
                            value: v
                        }),
                        "{s:#x} -> {v:#x}"
                    );
                }
            }
        }
        assert_eq!(
            check_write(0, 0x100),
            Err(StatusError::UnknownBits { value: 0x100 })
        );
    }

    #[test]
    fn failed_is_accepted_anywhere_and_sticks() {
        for s in [0, A, AD, ADF, ALL, ALL | DEVICE_NEEDS_RESET] {
            assert_eq!(check_write(s, s | FAILED), Ok(StatusStep::Failed));
            // Also with bits the device refused (a driver that tracks the
            // status it wrote rather than the one it read).
            assert_eq!(check_write(s, ADF | FAILED), Ok(StatusStep::Failed));
        }
        assert_eq!(
            check_write(AD | FAILED, ADF | FAILED),
            Err(StatusError::AfterFailed {
                value: ADF | FAILED
            })
        );
        assert_eq!(
            check_write(AD | FAILED, A),
            Err(StatusError::AfterFailed { value: A })
        );
        assert_eq!(
            check_write(AD | FAILED, AD | FAILED),
            Ok(StatusStep::Unchanged)
        );
    }

    #[test]
    fn needs_reset_in_a_write_is_ignored() {
        let s = ALL | DEVICE_NEEDS_RESET;
        assert_eq!(check_write(s, s), Ok(StatusStep::Unchanged));
        assert_eq!(
            check_write(ADF | DEVICE_NEEDS_RESET, ALL | DEVICE_NEEDS_RESET),
            Ok(StatusStep::DriverOk)
        );
        assert_eq!(
            check_write(0, DEVICE_NEEDS_RESET),
            Ok(StatusStep::Unchanged)
        );
    }
}
