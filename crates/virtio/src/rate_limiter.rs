//! Token-bucket rate limiters for device queues, configured with
//! Firecracker's JSON shape:
//!
//! ```json
//! {"bandwidth": {"size": 1048576, "one_time_burst": 0, "refill_time": 100},
//!  "ops": {"size": 1000, "refill_time": 1000}}
//! ```
//!
//! A bucket holds up to `size` tokens (bytes for `bandwidth`, requests or
//! frames for `ops`) and refills completely in `refill_time`
//! milliseconds, continuously; `one_time_burst` tokens are spent first and
//! never come back. A bucket with `size` 0 or `refill_time` 0 is no limit.
//!
//! The arithmetic takes the current time as an argument (an [`Instant`]),
//! so it can be tested without a wall clock. A device asks
//! [`RateLimiter::consume`] before each request or frame; when it is
//! refused it stops the queue and arms a timer (a timerfd on its event
//! loop) for the [`Duration`] the refusal names, then resumes.
//!
//! An operation larger than the whole bucket (a 64 KiB frame through a
//! 16 KiB bucket) goes through once the bucket is full and leaves it in
//! debt, so the long-run rate stays the configured one and no operation
//! waits forever.

use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use vmm_sys_util::timerfd::TimerFd;

/// One bucket's configuration, in Firecracker's field names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBucketConfig {
    /// Tokens the bucket holds when full (0: no limit).
    pub size: u64,
    /// Extra tokens spent before the bucket's own, once.
    #[serde(default)]
    pub one_time_burst: u64,
    /// Milliseconds to refill an empty bucket completely (0: no limit).
    pub refill_time: u64,
}

impl TokenBucketConfig {
    /// Whether this bucket limits anything.
    pub fn is_limit(&self) -> bool {
        self.size != 0 && self.refill_time != 0
    }
}

/// A limiter's configuration: a bandwidth bucket (bytes) and an
/// operations bucket, each optional.
///
/// In a human-readable format (JSON) a bucket that is not set is left out,
/// as Firecracker writes it; in a binary format (the snapshot state file's
/// postcard, which has no field names to skip by) both are always written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimiterConfig {
    /// Bytes.
    #[serde(default)]
    pub bandwidth: Option<TokenBucketConfig>,
    /// Operations (requests, frames).
    #[serde(default)]
    pub ops: Option<TokenBucketConfig>,
}

impl serde::Serialize for RateLimiterConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let human = s.is_human_readable();
        let mut st = s.serialize_struct("RateLimiterConfig", 2)?;
        for (name, bucket) in [("bandwidth", &self.bandwidth), ("ops", &self.ops)] {
            if human && bucket.is_none() {
                st.skip_field(name)?;
            } else {
                st.serialize_field(name, bucket)?;
            }
        }
        st.end()
    }
}

impl RateLimiterConfig {
    /// Whether either bucket limits anything.
    pub fn is_limit(&self) -> bool {
        self.bandwidth.is_some_and(|b| b.is_limit()) || self.ops.is_some_and(|b| b.is_limit())
    }
}

/// A token bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBucket {
    config: TokenBucketConfig,
    /// Tokens available; negative after an operation larger than what
    /// was there (a debt paid back by refills).
    budget: i128,
    burst: u64,
    last_update: Instant,
}

impl TokenBucket {
    /// A full bucket, or `None` if `config` is no limit.
    pub fn new(config: TokenBucketConfig, now: Instant) -> Option<Self> {
        config.is_limit().then(|| Self {
            config,
            budget: i128::from(config.size),
            burst: config.one_time_burst,
            last_update: now,
        })
    }

    /// The configuration.
    pub fn config(&self) -> TokenBucketConfig {
        self.config
    }

    /// Tokens in the bucket now (after refilling), not counting the
    /// one-time burst; negative while in debt.
    pub fn budget(&mut self, now: Instant) -> i128 {
        self.refill(now);
        self.budget
    }

    /// What is left of the one-time burst.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    fn refill_ns(&self) -> u128 {
        u128::from(self.config.refill_time) * 1_000_000
    }

    fn refill(&mut self, now: Instant) {
        let size = i128::from(self.config.size);
        if self.budget >= size {
            self.last_update = now;
            return;
        }
        let elapsed = now.saturating_duration_since(self.last_update).as_nanos();
        let tokens = elapsed * u128::from(self.config.size) / self.refill_ns();
        if tokens == 0 {
            return;
        }
        let tokens = i128::try_from(tokens).unwrap_or(i128::MAX);
        let new = self.budget.saturating_add(tokens);
        if new >= size {
            self.budget = size;
            self.last_update = now;
        } else {
            self.budget = new;
            // Advance by the time those tokens took, keeping the fraction.
            let used_ns = (tokens as u128) * self.refill_ns() / u128::from(self.config.size);
            self.last_update += Duration::from_nanos(u64::try_from(used_ns).unwrap_or(u64::MAX));
        }
    }

    /// How long until `tokens` can be taken (zero if they can now).
    pub fn wait_for(&mut self, tokens: u64, now: Instant) -> Duration {
        self.refill(now);
        let need = i128::from(tokens.saturating_sub(self.burst).min(self.config.size));
        let missing = need - self.budget;
        if missing <= 0 {
            return Duration::ZERO;
        }
        let missing = missing as u128;
        let size = u128::from(self.config.size);
        let ns = (missing * self.refill_ns()).div_ceil(size);
        // Past the instant the last refill counted from.
        let since = now.saturating_duration_since(self.last_update).as_nanos();
        let ns = ns.saturating_sub(since).max(1);
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// Takes `tokens` (the burst first); call only when
    /// [`TokenBucket::wait_for`] said zero.
    fn take(&mut self, tokens: u64) {
        let from_burst = tokens.min(self.burst);
        self.burst -= from_burst;
        self.budget -= i128::from(tokens - from_burst);
    }
}

/// A bandwidth bucket and an operations bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimiter {
    bandwidth: Option<TokenBucket>,
    ops: Option<TokenBucket>,
}

impl RateLimiter {
    /// A limiter with full buckets.
    pub fn new(config: &RateLimiterConfig, now: Instant) -> Self {
        Self {
            bandwidth: config.bandwidth.and_then(|c| TokenBucket::new(c, now)),
            ops: config.ops.and_then(|c| TokenBucket::new(c, now)),
        }
    }

    /// A limiter that limits nothing.
    pub fn unlimited() -> Self {
        Self {
            bandwidth: None,
            ops: None,
        }
    }

    /// Whether the limiter limits nothing.
    pub fn is_unlimited(&self) -> bool {
        self.bandwidth.is_none() && self.ops.is_none()
    }

    /// The configuration in force.
    pub fn config(&self) -> RateLimiterConfig {
        RateLimiterConfig {
            bandwidth: self.bandwidth.as_ref().map(TokenBucket::config),
            ops: self.ops.as_ref().map(TokenBucket::config),
        }
    }

    /// Changes the limits while running (Firecracker's PATCH): a bucket
    /// given is replaced by a full one of the new shape (or removed if it
    /// is no limit); a bucket not given stays as it is.
    pub fn update(&mut self, update: &RateLimiterConfig, now: Instant) {
        if let Some(b) = update.bandwidth {
            self.bandwidth = TokenBucket::new(b, now);
        }
        if let Some(o) = update.ops {
            self.ops = TokenBucket::new(o, now);
        }
    }

    /// Takes one operation of `bytes` bytes if both buckets allow it now;
    /// otherwise takes nothing and says how long to wait before asking
    /// again.
    pub fn consume(&mut self, bytes: u64, now: Instant) -> Result<(), Duration> {
        let wait_bytes = self
            .bandwidth
            .as_mut()
            .map_or(Duration::ZERO, |b| b.wait_for(bytes, now));
        let wait_ops = self
            .ops
            .as_mut()
            .map_or(Duration::ZERO, |b| b.wait_for(1, now));
        let wait = wait_bytes.max(wait_ops);
        if !wait.is_zero() {
            return Err(wait);
        }
        if let Some(b) = self.bandwidth.as_mut() {
            b.take(bytes);
        }
        if let Some(o) = self.ops.as_mut() {
            o.take(1);
        }
        Ok(())
    }
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::unlimited()
    }
}

/// A [`RateLimiter`] with the timerfd that takes a stopped queue up again:
/// what a device keeps for one limited queue.
///
/// The device registers [`Throttle::as_raw_fd`] on its event loop; when
/// [`Throttle::admit`] refuses an operation the queue stops (the
/// operation stays in the available ring) and the timer is armed; when
/// the timer fires the device calls [`Throttle::on_timer`] and processes
/// the queue again.
#[derive(Debug)]
pub struct Throttle {
    limiter: RateLimiter,
    timer: TimerFd,
    throttled: bool,
    refusals: u64,
}

impl Throttle {
    /// A throttle with `config` (none: no limit).
    pub fn new(config: Option<&RateLimiterConfig>) -> std::io::Result<Self> {
        let timer = TimerFd::new().map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
        Ok(Self {
            limiter: config.map_or_else(RateLimiter::unlimited, |c| {
                RateLimiter::new(c, Instant::now())
            }),
            timer,
            throttled: false,
            refusals: 0,
        })
    }

    /// Whether the queue is stopped until the timer fires.
    pub fn is_throttled(&self) -> bool {
        self.throttled
    }

    /// How many times an operation was refused.
    pub fn refusals(&self) -> u64 {
        self.refusals
    }

    /// The limits in force (`None` for no limit).
    pub fn config(&self) -> Option<RateLimiterConfig> {
        Some(self.limiter.config()).filter(|c| c.is_limit())
    }

    /// Takes an operation of `bytes` bytes, or stops the queue and arms
    /// the timer; says whether the operation may go.
    pub fn admit(&mut self, bytes: u64) -> bool {
        if self.throttled {
            return false;
        }
        // No clock read when there is nothing to limit (the common case,
        // once per frame or request).
        if self.limiter.is_unlimited() {
            return true;
        }
        match self.limiter.consume(bytes, Instant::now()) {
            Ok(()) => true,
            Err(wait) => {
                self.throttled = true;
                self.refusals += 1;
                self.arm(wait.max(Duration::from_millis(1)));
                false
            }
        }
    }

    fn arm(&mut self, wait: Duration) {
        if let Err(e) = self.timer.reset(wait, None) {
            kindling_devices::log_limited!(
                log::Level::Error,
                "rate limiter: cannot arm the timer: {e}"
            );
        }
    }

    /// The timer fired: the queue may go again.
    pub fn on_timer(&mut self) {
        let _ = self.timer.wait();
        self.throttled = false;
    }

    /// Changes the limits ([`RateLimiter::update`]). A stopped queue is
    /// taken up through the timer, which fires at once.
    pub fn update(&mut self, update: &RateLimiterConfig) {
        self.limiter.update(update, Instant::now());
        if self.throttled {
            self.arm(Duration::from_nanos(1));
        }
    }
}

impl AsRawFd for Throttle {
    fn as_raw_fd(&self) -> RawFd {
        self.timer.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// JSON leaves a bucket that is not set out; postcard (the snapshot
    /// state file) has no names to skip by and writes both: each
    /// round-trips.
    #[test]
    fn configurations_round_trip_through_json_and_postcard() {
        let set = TokenBucketConfig {
            size: 10,
            one_time_burst: 2,
            refill_time: 100,
        };
        for config in [
            RateLimiterConfig::default(),
            RateLimiterConfig {
                bandwidth: None,
                ops: Some(set),
            },
            RateLimiterConfig {
                bandwidth: Some(set),
                ops: None,
            },
        ] {
            let json = serde_json::to_string(&config).unwrap();
            assert!(!json.contains("null"), "{json}");
            assert_eq!(
                serde_json::from_str::<RateLimiterConfig>(&json).unwrap(),
                config
            );
            let bytes = postcard::to_stdvec(&Some(config)).unwrap();
            assert_eq!(
                postcard::from_bytes::<Option<RateLimiterConfig>>(&bytes).unwrap(),
                Some(config)
            );
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn bucket(size: u64, burst: u64, refill_time: u64) -> TokenBucketConfig {
        TokenBucketConfig {
            size,
            one_time_burst: burst,
            refill_time,
        }
    }

    #[test]
    fn a_bucket_drains_and_refills_linearly() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(bucket(1000, 0, 100), t0).unwrap();
        assert_eq!(b.wait_for(1000, t0), Duration::ZERO);
        b.take(1000);
        assert_eq!(b.budget(t0), 0);
        // 10 ms refill 100 tokens.
        assert_eq!(b.budget(t0 + ms(10)), 100);
        assert_eq!(b.wait_for(100, t0 + ms(10)), Duration::ZERO);
        assert_eq!(b.wait_for(300, t0 + ms(10)), ms(20));
        // Never above the size.
        assert_eq!(b.budget(t0 + ms(10_000)), 1000);
    }

    #[test]
    fn fractions_of_a_token_are_not_lost() {
        let t0 = Instant::now();
        // 3 tokens per 10 ms: one every 3.33 ms.
        let mut b = TokenBucket::new(bucket(3, 0, 10), t0).unwrap();
        b.take(3);
        let mut t = t0;
        for _ in 0..30 {
            t += ms(1);
            b.refill(t);
        }
        assert_eq!(b.budget(t), 3);
        b.take(3);
        for _ in 0..5 {
            t += ms(1);
            b.refill(t);
        }
        // 5 ms in: one token (3.33 ms), not zero and not two.
        assert_eq!(b.budget(t), 1);
    }

    #[test]
    fn the_one_time_burst_is_spent_first_and_once() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(bucket(100, 250, 1000), t0).unwrap();
        assert_eq!(b.wait_for(300, t0), Duration::ZERO);
        b.take(300);
        assert_eq!(b.burst(), 0);
        assert_eq!(b.budget(t0), 50);
        b.take(50);
        assert_eq!(b.wait_for(100, t0), ms(1000));
    }

    #[test]
    fn oversized_operations_pass_when_full_and_leave_a_debt() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(
            &RateLimiterConfig {
                bandwidth: Some(bucket(1000, 0, 1000)),
                ops: None,
            },
            t0,
        );
        l.consume(5000, t0).unwrap();
        // 4000 in debt, plus 1000 to fill: 5 s.
        assert_eq!(l.consume(1, t0), Err(ms(4001)));
        assert_eq!(l.consume(1, t0 + ms(4000)), Err(ms(1)));
        l.consume(1, t0 + ms(4001)).unwrap();
    }

    #[test]
    fn both_buckets_must_agree_and_a_refusal_takes_nothing() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(
            &RateLimiterConfig {
                bandwidth: Some(bucket(10_000, 0, 100)),
                ops: Some(bucket(2, 0, 100)),
            },
            t0,
        );
        l.consume(100, t0).unwrap();
        l.consume(100, t0).unwrap();
        assert_eq!(l.consume(100, t0), Err(ms(50)));
        // The bandwidth bucket was not charged for the refused operation.
        assert_eq!(l.bandwidth.as_mut().unwrap().budget(t0), 9_800);
        l.consume(100, t0 + ms(50)).unwrap();
        assert!(!l.is_unlimited());
    }

    #[test]
    fn zero_size_or_refill_is_no_limit_and_update_replaces_given_buckets() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(
            &RateLimiterConfig {
                bandwidth: Some(bucket(0, 0, 100)),
                ops: Some(bucket(5, 0, 0)),
            },
            t0,
        );
        assert!(l.is_unlimited());
        for _ in 0..1000 {
            l.consume(u64::MAX, t0).unwrap();
        }
        l.update(
            &RateLimiterConfig {
                bandwidth: None,
                ops: Some(bucket(1, 0, 1000)),
            },
            t0,
        );
        l.consume(10, t0).unwrap();
        assert_eq!(l.consume(10, t0), Err(ms(1000)));
        // Updating only the bandwidth keeps the ops bucket (and its state).
        l.update(
            &RateLimiterConfig {
                bandwidth: Some(bucket(100, 0, 10)),
                ops: None,
            },
            t0,
        );
        assert_eq!(l.config().ops, Some(bucket(1, 0, 1000)));
        assert_eq!(l.consume(10, t0), Err(ms(1000)));
        // Removing it.
        l.update(
            &RateLimiterConfig {
                bandwidth: None,
                ops: Some(TokenBucketConfig::default()),
            },
            t0,
        );
        l.consume(10, t0).unwrap();
        assert_eq!(l.config().ops, None);
    }

    #[test]
    fn firecracker_json_shape() {
        let c: RateLimiterConfig = serde_json::from_str(
            r#"{"bandwidth": {"size": 1048576, "one_time_burst": 10, "refill_time": 100},
                "ops": {"size": 1000, "refill_time": 1000}}"#,
        )
        .unwrap();
        assert_eq!(c.bandwidth, Some(bucket(1_048_576, 10, 100)));
        assert_eq!(c.ops, Some(bucket(1000, 0, 1000)));
        assert!(c.is_limit());
        assert!(serde_json::from_str::<RateLimiterConfig>(r#"{"bandwith": {}}"#).is_err());
        let empty: RateLimiterConfig = serde_json::from_str("{}").unwrap();
        assert!(!empty.is_limit());
        assert_eq!(serde_json::to_string(&empty).unwrap(), "{}");
    }

    #[test]
    fn a_throttle_stops_arms_its_timer_and_resumes() {
        let mut t = Throttle::new(Some(&RateLimiterConfig {
            bandwidth: None,
            ops: Some(bucket(1, 0, 60_000)),
        }))
        .unwrap();
        assert!(t.admit(100));
        assert!(!t.admit(100));
        assert!(t.is_throttled() && t.timer.is_armed().unwrap());
        assert_eq!(t.refusals(), 1);
        // Lifting the limit fires the timer at once.
        t.update(&RateLimiterConfig {
            bandwidth: None,
            ops: Some(TokenBucketConfig::default()),
        });
        std::thread::sleep(ms(5));
        t.on_timer();
        assert!(!t.is_throttled());
        assert!(t.admit(100));
        assert_eq!(t.config(), None);
        assert!(Throttle::new(None).unwrap().admit(u64::MAX));
    }

    #[test]
    fn time_going_backwards_is_harmless() {
        let t0 = Instant::now() + ms(1000);
        let mut b = TokenBucket::new(bucket(10, 0, 10), t0).unwrap();
        b.take(10);
        assert_eq!(b.budget(t0 - ms(500)), 0);
        assert_eq!(b.budget(t0 + ms(5)), 5);
    }
}
