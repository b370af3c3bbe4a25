//! `PUT /logger` and `PUT /metrics`.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Firecracker's log levels (case-insensitive in requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogLevel {
    /// Nothing is logged.
    Off,
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warning,
    /// Informational messages and above.
    #[default]
    Info,
    /// Debug messages and above.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The name Firecracker uses.
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Off => "Off",
            LogLevel::Error => "Error",
            LogLevel::Warning => "Warning",
            LogLevel::Info => "Info",
            LogLevel::Debug => "Debug",
            LogLevel::Trace => "Trace",
        }
    }

    /// The `log` crate's filter for the level.
    pub fn filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Off => log::LevelFilter::Off,
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warning => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

impl std::str::FromStr for LogLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "off" => LogLevel::Off,
            "error" => LogLevel::Error,
            "warning" | "warn" => LogLevel::Warning,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            _ => {
                return Err(format!(
                    "unknown log level {s:?} (expected Error, Warning, Info, Debug, Trace or Off)"
                ))
            }
        })
    }
}

impl Serialize for LogLevel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Firecracker's `Logger`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggerConfig {
    /// The level (Info when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<LogLevel>,
    /// An existing file or named pipe the log lines are appended to;
    /// standard error when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_path: Option<String>,
    /// Put the level in each line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_level: Option<bool>,
    /// Put the source file and line in each line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_log_origin: Option<bool>,
    /// Only log messages from module paths starting with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

/// Firecracker's `Metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// An existing file or named pipe that receives one JSON object per
    /// line.
    pub metrics_path: String,
    /// Put the instance id in each line (`"id"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emit_id: Option<bool>,
    /// Key-value pairs copied into each line (`"properties"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<BTreeMap<String, String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_case_insensitive() {
        let l: LoggerConfig = serde_json::from_str(r#"{"level": "wArNiNg"}"#).unwrap();
        assert_eq!(l.level, Some(LogLevel::Warning));
        assert_eq!(l.level.unwrap().filter(), log::LevelFilter::Warn);
        let err = serde_json::from_str::<LoggerConfig>(r#"{"level": "loud"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown log level"), "{err}");
        for level in ["Off", "Error", "Warning", "Info", "Debug", "Trace"] {
            let l: LogLevel = level.parse().unwrap();
            assert_eq!(l.name(), level);
            assert_eq!(serde_json::to_string(&l).unwrap(), format!("\"{level}\""));
        }
        assert_eq!(LogLevel::Off.filter(), log::LevelFilter::Off);
        assert_eq!(LogLevel::default(), LogLevel::Info);
        assert!(serde_json::from_str::<LoggerConfig>(r#"{"level": 3}"#).is_err());
        assert!(serde_json::from_str::<LoggerConfig>(r#"{"path": "/x"}"#).is_err());
    }

    #[test]
    fn metrics() {
        let m: MetricsConfig = serde_json::from_str(
            r#"{"metrics_path": "/m", "emit_id": true, "properties": {"a": "b"}}"#,
        )
        .unwrap();
        assert_eq!(m.properties.unwrap()["a"], "b");
        assert!(serde_json::from_str::<MetricsConfig>("{}").is_err());
        assert!(serde_json::from_str::<MetricsConfig>(
            r#"{"metrics_path": "/m", "properties": {"a": 1}}"#
        )
        .is_err());
    }
}
