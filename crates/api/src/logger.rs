//! The process logger behind the `log` crate: standard error at `Warning`
//! until `PUT /logger` chooses a level, a file or named pipe, and what
//! each line shows.
//!
//! Lines look like Firecracker's:
//! `2026-12-01T15:00:00.123456789 [anonymous-instance:main:Info:src/x.rs:10] message`
//! (the level and origin only when asked for). A named pipe is opened
//! non-blocking: when its reader falls behind, lines are dropped and
//! counted ([`missed_lines`]) instead of stalling the VMM.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::models::{LogLevel, LoggerConfig};

/// Why the logger could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum LoggerError {
    /// The log file could not be opened.
    #[error("cannot open the log file {path}: {source} (it must exist: a file or a named pipe)")]
    Open {
        /// The path.
        path: String,
        /// The error from the kernel.
        source: std::io::Error,
    },
    /// Another logger owns the `log` crate in this process.
    #[error("another logger is already installed in this process")]
    OtherLogger,
}

#[derive(Debug)]
struct State {
    instance_id: String,
    file: Option<File>,
    show_level: bool,
    show_origin: bool,
    module: Option<String>,
}

#[derive(Debug)]
struct ApiLogger {
    state: Mutex<State>,
    missed: AtomicU64,
    written: AtomicU64,
}

static LOGGER: OnceLock<ApiLogger> = OnceLock::new();
static INSTALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn logger() -> &'static ApiLogger {
    LOGGER.get_or_init(|| ApiLogger {
        state: Mutex::new(State {
            instance_id: "anonymous-instance".into(),
            file: None,
            show_level: false,
            show_origin: false,
            module: None,
        }),
        missed: AtomicU64::new(0),
        written: AtomicU64::new(0),
    })
}

/// Installs the logger for the process (standard error, `Warning`),
/// naming the instance `id` in each line. Installing it again only
/// renames the instance.
pub fn install(id: &str) -> Result<(), LoggerError> {
    let l = logger();
    l.state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .instance_id = id.to_string();
    match log::set_logger(l) {
        Ok(()) => {
            INSTALLED.store(true, Ordering::SeqCst);
            log::set_max_level(log::LevelFilter::Warn);
            Ok(())
        }
        Err(_) if INSTALLED.load(Ordering::SeqCst) => Ok(()),
        Err(_) => Err(LoggerError::OtherLogger),
    }
}

/// Applies a `PUT /logger` body: opens the file first, so a bad path
/// changes nothing.
pub fn configure(config: &LoggerConfig) -> Result<(), LoggerError> {
    let file = match &config.log_path {
        Some(path) => Some(
            OpenOptions::new()
                .read(true)
                .append(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
                .map_err(|source| LoggerError::Open {
                    path: path.clone(),
                    source,
                })?,
        ),
        None => None,
    };
    let l = logger();
    let mut state = l.state.lock().unwrap_or_else(|p| p.into_inner());
    state.file = file;
    state.show_level = config.show_level.unwrap_or(false);
    state.show_origin = config.show_log_origin.unwrap_or(false);
    state.module = config.module.clone();
    log::set_max_level(config.level.unwrap_or_default().filter());
    Ok(())
}

/// Lines dropped because the output could not take them.
pub fn missed_lines() -> u64 {
    logger().missed.load(Ordering::Relaxed)
}

/// Lines written.
pub fn written_lines() -> u64 {
    logger().written.load(Ordering::Relaxed)
}

/// A UTC timestamp with nanoseconds, as Firecracker writes it.
pub(crate) fn timestamp(now: std::time::SystemTime) -> String {
    let d = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_nanos()
    )
}

fn level_name(level: log::Level) -> &'static str {
    match level {
        log::Level::Error => LogLevel::Error.name(),
        log::Level::Warn => LogLevel::Warning.name(),
        log::Level::Info => LogLevel::Info.name(),
        log::Level::Debug => LogLevel::Debug.name(),
        log::Level::Trace => LogLevel::Trace.name(),
    }
}

impl log::Log for ApiLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(module) = &state.module {
            if !record
                .module_path()
                .unwrap_or("")
                .starts_with(module.as_str())
            {
                return;
            }
        }
        let thread = std::thread::current();
        let mut prefix = format!("{}:{}", state.instance_id, thread.name().unwrap_or("-"));
        if state.show_level {
            prefix.push(':');
            prefix.push_str(level_name(record.level()));
        }
        if state.show_origin {
            prefix.push_str(&format!(
                ":{}:{}",
                record.file().unwrap_or("?"),
                record.line().unwrap_or(0)
            ));
        }
        let line = format!(
            "{} [{prefix}] {}\n",
            timestamp(std::time::SystemTime::now()),
            record.args()
        );
        let result = match state.file.as_mut() {
            Some(file) => file.write_all(line.as_bytes()),
            None => std::io::stderr().write_all(line.as_bytes()),
        };
        match result {
            Ok(()) => self.written.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.missed.fetch_add(1, Ordering::Relaxed),
        };
    }

    fn flush(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(file) = state.file.as_mut() {
            let _ = file.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000000000");
        let t = UNIX_EPOCH + Duration::new(1_796_137_257, 123_456_789);
        assert_eq!(timestamp(t), "2026-12-01T15:00:57.123456789");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(&timestamp(leap)[..10], "2000-02-29");
    }

    // One test owns the process-wide logger, so the steps run in order.
    #[test]
    fn levels_paths_and_formats() {
        install("test-vm").unwrap();
        install("test-vm").unwrap();
        let path = std::env::temp_dir().join(format!("kindling-api-log-{}", std::process::id()));
        let missing = LoggerConfig {
            log_path: Some(path.to_str().unwrap().into()),
            ..LoggerConfig::default()
        };
        let e = configure(&missing).unwrap_err();
        assert!(e.to_string().contains("it must exist"), "{e}");
        std::fs::write(&path, b"").unwrap();
        configure(&LoggerConfig {
            level: Some(LogLevel::Info),
            show_level: Some(true),
            show_log_origin: Some(true),
            ..missing.clone()
        })
        .unwrap();
        log::info!("hello {}", 1);
        log::debug!("not shown");
        configure(&LoggerConfig {
            level: Some(LogLevel::Debug),
            module: Some("some_other_crate".into()),
            ..missing.clone()
        })
        .unwrap();
        log::debug!("filtered by module");
        configure(&LoggerConfig {
            level: Some(LogLevel::Debug),
            ..missing.clone()
        })
        .unwrap();
        log::debug!("shown without level");
        log::logger().flush();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].contains("[test-vm:"), "{text}");
        assert!(lines[0].contains(":Info:"), "{text}");
        assert!(lines[0].contains("logger.rs:"), "{text}");
        assert!(lines[0].ends_with("] hello 1"), "{text}");
        assert!(!lines[1].contains(":Debug"), "{text}");
        assert!(lines[1].ends_with("] shown without level"), "{text}");
        assert!(written_lines() >= 2);
        assert_eq!(missed_lines(), 0);
        configure(&LoggerConfig::default()).unwrap();
        assert_eq!(log::max_level(), log::LevelFilter::Info);
        let _ = std::fs::remove_file(&path);
    }
}
