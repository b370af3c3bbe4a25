//! `PUT /entropy` and `PUT /serial`.

use serde::{Deserialize, Serialize};

use super::rate_limiter::{RateLimiter, TokenBucket};

/// Firecracker's `EntropyDevice`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntropyDevice {
    /// A rate limiter: refused when it limits anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
}

/// Firecracker's `SerialDevice`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialDevice {
    /// Where the console output goes (a file, created or truncated when
    /// the VM starts, or a named pipe); the VMM's standard output when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_out_path: Option<String>,
    /// An output rate limit: not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<TokenBucket>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        let e: EntropyDevice = serde_json::from_str("{}").unwrap();
        assert_eq!(e, EntropyDevice::default());
        assert!(serde_json::from_str::<EntropyDevice>(r#"{"rate": 1}"#).is_err());
        let s: SerialDevice = serde_json::from_str(r#"{"serial_out_path": "/tmp/s"}"#).unwrap();
        assert_eq!(s.serial_out_path.as_deref(), Some("/tmp/s"));
        assert!(serde_json::from_str::<SerialDevice>(r#"{"serial_out_path": 1}"#).is_err());
    }
}
