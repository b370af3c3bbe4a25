//! Firecracker's rate limiters: parsed so that bodies are checked exactly,
//! then turned into the devices' [`RateLimiterConfig`] (drives and network
//! interfaces) or refused when they ask for a limit (the entropy device).

use kindling_virtio::rate_limiter::{RateLimiterConfig, TokenBucketConfig};
use serde::{Deserialize, Serialize};

/// Firecracker's `TokenBucket`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBucket {
    /// Tokens the bucket holds.
    pub size: u64,
    /// An initial burst.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_burst: Option<u64>,
    /// Milliseconds to refill.
    pub refill_time: u64,
}

/// Firecracker's `RateLimiter`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimiter {
    /// Bytes per refill period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<TokenBucket>,
    /// Operations per refill period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<TokenBucket>,
}

impl RateLimiter {
    /// Whether the limiter limits anything (an empty one is accepted, as
    /// it changes nothing).
    pub fn limits(&self) -> bool {
        self.bandwidth.is_some() || self.ops.is_some()
    }
}

impl TokenBucket {
    /// The device's bucket configuration.
    pub fn to_config(&self) -> TokenBucketConfig {
        TokenBucketConfig {
            size: self.size,
            one_time_burst: self.one_time_burst.unwrap_or(0),
            refill_time: self.refill_time,
        }
    }
}

impl RateLimiter {
    /// The devices' limiter configuration.
    pub fn to_config(&self) -> RateLimiterConfig {
        RateLimiterConfig {
            bandwidth: self.bandwidth.as_ref().map(TokenBucket::to_config),
            ops: self.ops.as_ref().map(TokenBucket::to_config),
        }
    }
}

/// Whether an optional limiter limits anything.
pub fn limits(limiter: &Option<RateLimiter>) -> bool {
    limiter.as_ref().is_some_and(RateLimiter::limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_limits() {
        let r: RateLimiter = serde_json::from_str("{}").unwrap();
        assert!(!r.limits());
        assert!(!limits(&Some(r)));
        assert!(!limits(&None));
        let r: RateLimiter =
            serde_json::from_str(r#"{"ops": {"size": 10, "refill_time": 100}}"#).unwrap();
        assert!(r.limits());
        assert!(serde_json::from_str::<RateLimiter>(r#"{"ops": {"size": 10}}"#).is_err());
        assert!(
            serde_json::from_str::<RateLimiter>(r#"{"ops": {"size": -1, "refill_time": 1}}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<RateLimiter>(r#"{"iops": {}}"#).is_err());
        let c = r.to_config();
        assert!(c.is_limit());
        assert_eq!(c.ops.unwrap().size, 10);
        assert_eq!(c.ops.unwrap().one_time_burst, 0);
        assert_eq!(c.bandwidth, None);
    }
}
