//! Metrics: one JSON object per line, written to the file or named pipe
//! of `PUT /metrics` on `FlushMetrics`, periodically, and when the VMM
//! exits.
//!
//! Counters are reported as Firecracker reports them: the increase since
//! the previous line. Group and counter names are Firecracker's where the
//! meaning is the same (`vcpu.exit_io_in`, `block.read_count`,
//! `put_api_requests.drive_count`, ...); `block` is the sum over drives and
//! `block_{drive_id}` each drive. Latencies (`latencies_us`) and
//! `api_server.process_startup_time_us` are values, not increases.

use kindling_vmm::seccomp::{SeccompPolicy, ThreadKind};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use kindling_devices::BusExitHandler;
use kindling_virtio::block::{BlockCounts, BlockMetrics};
use serde_json::{json, Map, Value};

use crate::models::MetricsConfig;

/// How often metrics are written without a `FlushMetrics` (Firecracker's
/// period).
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(60);

/// Why metrics could not be configured or written.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// `PUT /metrics` came a second time.
    #[error("the metrics system is already configured")]
    AlreadyConfigured,
    /// `FlushMetrics` before `PUT /metrics`.
    #[error("the metrics system is not configured: PUT /metrics first")]
    NotConfigured,
    /// The metrics file could not be opened.
    #[error(
        "cannot open the metrics file {path}: {source} (it must exist: a file or a named pipe)"
    )]
    Open {
        /// The path.
        path: String,
        /// The error from the kernel.
        source: std::io::Error,
    },
    /// The line could not be written.
    #[error("cannot write metrics to {path}: {source}")]
    Write {
        /// The path.
        path: String,
        /// The error from the kernel.
        source: std::io::Error,
    },
}

#[derive(Debug)]
struct Sink {
    file: File,
    config: MetricsConfig,
}

#[derive(Debug, Default)]
struct Sources {
    exits: Option<Arc<BusExitHandler>>,
    drives: Vec<(String, Arc<BlockMetrics>)>,
}

/// The metrics of one VMM process.
#[derive(Debug)]
pub struct Metrics {
    id: String,
    interval: Duration,
    counters: Mutex<BTreeMap<(&'static str, String), u64>>,
    values: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    sources: Mutex<Sources>,
    sink: Mutex<Option<Sink>>,
    previous: Mutex<BTreeMap<String, u64>>,
    missed: AtomicU64,
    flushes: AtomicU64,
    /// Held across a whole flush, so lines go out in the order their
    /// increases were computed (FlushMetrics and the periodic writer).
    flushing: Mutex<()>,
    /// The filter of the periodic writer's thread.
    seccomp: Mutex<SeccompPolicy>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    /// Metrics for instance `id`, written every `interval` once
    /// configured.
    pub fn new(id: &str, interval: Duration) -> Arc<Self> {
        Arc::new(Self {
            id: id.to_string(),
            interval,
            counters: Mutex::new(BTreeMap::new()),
            values: Mutex::new(BTreeMap::new()),
            sources: Mutex::new(Sources::default()),
            sink: Mutex::new(None),
            previous: Mutex::new(BTreeMap::new()),
            missed: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            flushing: Mutex::new(()),
            seccomp: Mutex::new(SeccompPolicy::Off),
        })
    }

    /// The seccomp filters to use: the periodic writer's thread installs
    /// the [`ThreadKind::Metrics`] one when it starts.
    pub fn set_seccomp(&self, policy: SeccompPolicy) {
        *lock(&self.seccomp) = policy;
    }

    /// Applies `PUT /metrics`: opens the file (which must exist, as in
    /// Firecracker; a named pipe is opened non-blocking) and starts the
    /// periodic writer.
    pub fn configure(self: &Arc<Self>, config: &MetricsConfig) -> Result<(), MetricsError> {
        let mut sink = lock(&self.sink);
        if sink.is_some() {
            return Err(MetricsError::AlreadyConfigured);
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&config.metrics_path)
            .map_err(|source| MetricsError::Open {
                path: config.metrics_path.clone(),
                source,
            })?;
        *sink = Some(Sink {
            file,
            config: config.clone(),
        });
        let weak: Weak<Self> = Arc::downgrade(self);
        let interval = self.interval;
        let seccomp = lock(&self.seccomp).clone();
        // Without the thread, metrics are still written on FlushMetrics
        // and at exit.
        let _ = std::thread::Builder::new()
            .name("kindling-metrics".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                if let Err(e) = seccomp.install(ThreadKind::Metrics) {
                    log::warn!("periodic metrics: {e}");
                }
                loop {
                    std::thread::sleep(interval);
                    match weak.upgrade() {
                        Some(metrics) => {
                            if let Err(e) = metrics.flush() {
                                log::warn!("periodic metrics: {e}");
                            }
                        }
                        None => return,
                    }
                }
            });
        Ok(())
    }

    /// Whether `PUT /metrics` was applied.
    pub fn is_configured(&self) -> bool {
        lock(&self.sink).is_some()
    }

    /// Counts one API request of `group.name` (`put_api_requests.drive`),
    /// and a failure (`..._fails`) when it failed.
    pub fn count_request(&self, group: &'static str, name: &'static str, failed: bool) {
        let mut counters = lock(&self.counters);
        *counters
            .entry((group, format!("{name}_count")))
            .or_default() += 1;
        if failed {
            *counters
                .entry((group, format!("{name}_fails")))
                .or_default() += 1;
        }
    }

    /// Adds one to the counter `group.name`.
    pub fn increment(&self, group: &'static str, name: &str) {
        *lock(&self.counters)
            .entry((group, name.to_string()))
            .or_default() += 1;
    }

    /// Sets the value `group.name` (a latency or a time, not a counter).
    pub fn set_value(&self, group: &'static str, name: &'static str, value: u64) {
        lock(&self.values).insert((group, name), value);
    }

    /// Gives the metrics the running VM's counters.
    pub fn set_vm_sources(
        &self,
        exits: Arc<BusExitHandler>,
        drives: Vec<(String, Arc<BlockMetrics>)>,
    ) {
        let mut sources = lock(&self.sources);
        sources.exits = Some(exits);
        sources.drives = drives;
    }

    /// The next line's content: counters as totals since the start.
    fn totals(&self) -> BTreeMap<String, BTreeMap<String, (u64, bool)>> {
        let mut groups: BTreeMap<String, BTreeMap<String, (u64, bool)>> = BTreeMap::new();
        let mut put = |group: &str, name: &str, value: u64, counter: bool| {
            groups
                .entry(group.to_string())
                .or_default()
                .insert(name.to_string(), (value, counter));
        };
        for ((group, name), value) in lock(&self.counters).iter() {
            put(group, name, *value, true);
        }
        for ((group, name), value) in lock(&self.values).iter() {
            put(group, name, *value, false);
        }
        let sources = lock(&self.sources);
        if let Some(exits) = &sources.exits {
            let c = exits.counters.counts();
            put("vcpu", "exit_io_in", c.pio_in, true);
            put("vcpu", "exit_io_out", c.pio_out, true);
            put("vcpu", "exit_mmio_read", c.mmio_read, true);
            put("vcpu", "exit_mmio_write", c.mmio_write, true);
            put("vcpu", "coalesced_writes", c.coalesced, true);
        }
        let mut total = BlockCounts::default();
        let block = |group: &str, c: &BlockCounts, put: &mut dyn FnMut(&str, &str, u64, bool)| {
            put(group, "read_count", c.read_count, true);
            put(group, "write_count", c.write_count, true);
            put(group, "flush_count", c.flush_count, true);
            put(group, "discard_count", c.discard_count, true);
            put(group, "write_zeroes_count", c.write_zeroes_count, true);
            put(group, "read_bytes", c.read_bytes, true);
            put(group, "write_bytes", c.write_bytes, true);
            put(group, "execute_fails", c.io_errors, true);
        };
        for (id, m) in &sources.drives {
            let c = m.counts();
            total = total.add(&c);
            block(&format!("block_{id}"), &c, &mut put);
        }
        if !sources.drives.is_empty() {
            block("block", &total, &mut put);
        }
        put(
            "logger",
            "missed_log_count",
            crate::logger::missed_lines(),
            true,
        );
        put("logger", "log_count", crate::logger::written_lines(), true);
        put(
            "metrics",
            "missed_metrics_count",
            self.missed.load(Ordering::Relaxed),
            true,
        );
        put(
            "metrics",
            "metrics_count",
            self.flushes.load(Ordering::Relaxed),
            true,
        );
        groups
    }

    /// The next metrics line (counters as increases since the previous
    /// line), and records it as written.
    pub fn next_line(&self) -> Value {
        let totals = self.totals();
        let mut previous = lock(&self.previous);
        let mut line = Map::new();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        line.insert("utc_timestamp_ms".into(), json!(now.as_millis() as u64));
        for (group, entries) in totals {
            let mut object = Map::new();
            for (name, (value, counter)) in entries {
                let reported = if counter {
                    let key = format!("{group}.{name}");
                    let before = previous.insert(key, value).unwrap_or(0);
                    value.saturating_sub(before)
                } else {
                    value
                };
                object.insert(name, json!(reported));
            }
            line.insert(group, Value::Object(object));
        }
        if let Some(sink) = lock(&self.sink).as_ref() {
            if sink.config.emit_id == Some(true) {
                line.insert("id".into(), json!(self.id));
            }
            if let Some(properties) = &sink.config.properties {
                line.insert("properties".into(), json!(properties));
            }
        }
        Value::Object(line)
    }

    /// Writes one line now (`FlushMetrics`).
    pub fn flush(&self) -> Result<(), MetricsError> {
        let _flushing = lock(&self.flushing);
        if !self.is_configured() {
            return Err(MetricsError::NotConfigured);
        }
        self.flushes.fetch_add(1, Ordering::Relaxed);
        let mut text = self.next_line().to_string();
        text.push('\n');
        let mut sink = lock(&self.sink);
        let Some(sink) = sink.as_mut() else {
            return Err(MetricsError::NotConfigured);
        };
        sink.file.write_all(text.as_bytes()).map_err(|source| {
            self.missed.fetch_add(1, Ordering::Relaxed);
            MetricsError::Write {
                path: sink.config.metrics_path.clone(),
                source,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("kindling-api-metrics-{tag}-{}", std::process::id()))
    }

    #[test]
    fn lines_report_increases() {
        let m = Metrics::new("vm1", DEFAULT_FLUSH_INTERVAL);
        assert!(matches!(m.flush(), Err(MetricsError::NotConfigured)));
        let path = temp("lines");
        let config = MetricsConfig {
            metrics_path: path.to_str().unwrap().into(),
            emit_id: Some(true),
            properties: Some([("pod".to_string(), "a".to_string())].into()),
        };
        assert!(matches!(
            m.configure(&config),
            Err(MetricsError::Open { .. })
        ));
        std::fs::write(&path, b"").unwrap();
        m.configure(&config).unwrap();
        assert!(matches!(
            m.configure(&config),
            Err(MetricsError::AlreadyConfigured)
        ));
        m.count_request("put_api_requests", "drive", false);
        m.count_request("put_api_requests", "drive", true);
        m.set_value("latencies_us", "instance_start", 1500);
        let handler = Arc::new(BusExitHandler::default());
        kindling_vcpu::VcpuExitHandler::pio_write(&*handler, 0x80, &[1]);
        let blk = BlockMetrics::new();
        m.set_vm_sources(handler.clone(), vec![("root".into(), blk)]);
        m.flush().unwrap();
        m.count_request("put_api_requests", "drive", false);
        m.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["put_api_requests"]["drive_count"], 2);
        assert_eq!(lines[0]["put_api_requests"]["drive_fails"], 1);
        assert_eq!(lines[1]["put_api_requests"]["drive_count"], 1);
        assert_eq!(lines[1]["put_api_requests"]["drive_fails"], 0);
        assert_eq!(lines[0]["latencies_us"]["instance_start"], 1500);
        assert_eq!(lines[1]["latencies_us"]["instance_start"], 1500);
        assert_eq!(lines[0]["vcpu"]["exit_io_out"], 1);
        assert_eq!(lines[1]["vcpu"]["exit_io_out"], 0);
        assert_eq!(lines[0]["block"]["read_count"], 0);
        assert_eq!(lines[0]["block_root"]["write_bytes"], 0);
        assert_eq!(lines[0]["id"], "vm1");
        assert_eq!(lines[0]["properties"]["pod"], "a");
        assert_eq!(lines[1]["metrics"]["metrics_count"], 1);
        assert!(lines[0]["utc_timestamp_ms"].as_u64().unwrap() > 1_700_000_000_000);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn periodic_lines() {
        let m = Metrics::new("vm2", Duration::from_millis(20));
        let path = temp("periodic");
        std::fs::write(&path, b"").unwrap();
        m.configure(&MetricsConfig {
            metrics_path: path.to_str().unwrap().into(),
            emit_id: None,
            properties: None,
        })
        .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&path).unwrap().lines().count() < 2 {
            assert!(std::time::Instant::now() < deadline, "no periodic lines");
            std::thread::sleep(Duration::from_millis(5));
        }
        let first = std::fs::read_to_string(&path).unwrap();
        assert!(!first.contains("\"id\""));
        drop(m);
        let _ = std::fs::remove_file(&path);
    }
}
