//! `GET|PUT|PATCH /machine-config`: vCPUs and memory.

use serde::{Deserialize, Serialize};

/// The most vCPUs the API accepts: Firecracker's documented limit, so
/// that a request valid for Firecracker's API document is valid here and
/// the other way round (`microvm --cpus` goes up to 254).
pub const MAX_API_VCPUS: u8 = 32;

/// What backs guest memory (Firecracker's `huge_pages`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum HugePages {
    /// Regular 4 KiB pages.
    #[default]
    None,
    /// Transparent huge pages (`madvise(MADV_HUGEPAGE)`): not supported
    /// by Kindling yet.
    Transparent,
    /// 2 MiB hugetlbfs pages.
    #[serde(rename = "2M")]
    Hugetlbfs2M,
}

/// Firecracker's `MachineConfiguration` (for `PUT` and `GET`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    /// Number of vCPUs, 1 to [`MAX_API_VCPUS`].
    pub vcpu_count: u8,
    /// Guest memory in MiB.
    pub mem_size_mib: u64,
    /// Simultaneous multithreading: Kindling supports `false` only.
    #[serde(default)]
    pub smt: bool,
    /// A CPU template: Kindling supports `"None"` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<String>,
    /// Track dirty pages (for diff snapshots).
    #[serde(default)]
    pub track_dirty_pages: bool,
    /// What backs guest memory.
    #[serde(default)]
    pub huge_pages: HugePages,
}

impl Default for MachineConfig {
    fn default() -> Self {
        Self {
            vcpu_count: 1,
            mem_size_mib: 128,
            smt: false,
            cpu_template: None,
            track_dirty_pages: false,
            huge_pages: HugePages::None,
        }
    }
}

/// The body of `PATCH /machine-config`: any subset of the fields.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfigUpdate {
    /// New vCPU count.
    #[serde(default)]
    pub vcpu_count: Option<u8>,
    /// New memory size in MiB.
    #[serde(default)]
    pub mem_size_mib: Option<u64>,
    /// New SMT setting.
    #[serde(default)]
    pub smt: Option<bool>,
    /// New CPU template.
    #[serde(default)]
    pub cpu_template: Option<String>,
    /// New dirty-page tracking setting.
    #[serde(default)]
    pub track_dirty_pages: Option<bool>,
    /// New memory backing.
    #[serde(default)]
    pub huge_pages: Option<HugePages>,
}

impl MachineConfigUpdate {
    /// Whether the update names no field at all.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// `base` with the fields of the update applied.
    pub fn apply_to(&self, base: &MachineConfig) -> MachineConfig {
        MachineConfig {
            vcpu_count: self.vcpu_count.unwrap_or(base.vcpu_count),
            mem_size_mib: self.mem_size_mib.unwrap_or(base.mem_size_mib),
            smt: self.smt.unwrap_or(base.smt),
            cpu_template: self
                .cpu_template
                .clone()
                .or_else(|| base.cpu_template.clone()),
            track_dirty_pages: self.track_dirty_pages.unwrap_or(base.track_dirty_pages),
            huge_pages: self.huge_pages.unwrap_or(base.huge_pages),
        }
    }
}

/// Why a machine configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MachineConfigError {
    /// The vCPU count is out of range.
    #[error("vcpu_count {0} is out of range: it must be between 1 and {MAX_API_VCPUS}")]
    VcpuCount(u8),
    /// The memory size is zero or too large.
    #[error("mem_size_mib {0} is out of range: it must be between 1 and {max}", max = MAX_MEM_MIB)]
    MemSize(u64),
    /// 2 MiB huge pages need an even memory size.
    #[error("mem_size_mib {0} is not a multiple of 2, as 2M huge pages need")]
    HugePageMultiple(u64),
    /// SMT was asked for.
    #[error("Kindling does not support SMT (smt: true) yet")]
    Smt,
    /// A CPU template was asked for.
    #[error("Kindling does not support CPU templates yet (cpu_template {0:?}; only \"None\")")]
    CpuTemplate(String),
    /// Transparent huge pages were asked for.
    #[error("Kindling does not support transparent huge pages yet (huge_pages \"Transparent\"; use \"None\" or \"2M\")")]
    TransparentHugePages,
}

/// The largest guest memory the API accepts: 1 TiB.
pub const MAX_MEM_MIB: u64 = 1 << 20;

impl MachineConfig {
    /// Checks the configuration as Firecracker does, and refuses what
    /// Kindling cannot do.
    pub fn validate(&self) -> Result<(), MachineConfigError> {
        if self.vcpu_count == 0 || self.vcpu_count > MAX_API_VCPUS {
            return Err(MachineConfigError::VcpuCount(self.vcpu_count));
        }
        if self.mem_size_mib == 0 || self.mem_size_mib > MAX_MEM_MIB {
            return Err(MachineConfigError::MemSize(self.mem_size_mib));
        }
        if self.smt {
            return Err(MachineConfigError::Smt);
        }
        match self.cpu_template.as_deref() {
            None | Some("None") => {}
            Some(other) => return Err(MachineConfigError::CpuTemplate(other.to_string())),
        }
        match self.huge_pages {
            HugePages::None => {}
            HugePages::Transparent => return Err(MachineConfigError::TransparentHugePages),
            HugePages::Hugetlbfs2M if self.mem_size_mib % 2 != 0 => {
                return Err(MachineConfigError::HugePageMultiple(self.mem_size_mib))
            }
            HugePages::Hugetlbfs2M => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<MachineConfig, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn defaults_and_round_trip() {
        let c = parse(r#"{"vcpu_count": 2, "mem_size_mib": 256}"#).unwrap();
        assert_eq!(c.vcpu_count, 2);
        assert!(!c.smt && !c.track_dirty_pages);
        assert_eq!(c.huge_pages, HugePages::None);
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(parse(&json).unwrap(), c);
        assert!(json.contains(r#""huge_pages":"None""#), "{json}");
        assert!(!json.contains("cpu_template"));
        c.validate().unwrap();
        assert_eq!(MachineConfig::default().vcpu_count, 1);
    }

    #[test]
    fn bad_bodies_are_refused() {
        assert!(
            parse(r#"{"vcpu_count": 2}"#).is_err(),
            "mem_size_mib required"
        );
        assert!(
            parse(r#"{"mem_size_mib": 2}"#).is_err(),
            "vcpu_count required"
        );
        assert!(parse(r#"{"vcpu_count": 300, "mem_size_mib": 2}"#).is_err());
        assert!(parse(r#"{"vcpu_count": -1, "mem_size_mib": 2}"#).is_err());
        assert!(parse(r#"{"vcpu_count": "2", "mem_size_mib": 2}"#).is_err());
        assert!(parse(r#"{"vcpu_count": 1, "mem_size_mib": 2, "gdb": 1}"#).is_err());
        assert!(parse(r#"{"vcpu_count": 1, "mem_size_mib": 2, "huge_pages": "1G"}"#).is_err());
    }

    #[test]
    fn validation() {
        let ok = MachineConfig::default();
        let with = |f: fn(&mut MachineConfig)| {
            let mut c = ok.clone();
            f(&mut c);
            c.validate()
        };
        assert_eq!(
            with(|c| c.vcpu_count = 0),
            Err(MachineConfigError::VcpuCount(0))
        );
        assert_eq!(
            with(|c| c.vcpu_count = 33),
            Err(MachineConfigError::VcpuCount(33))
        );
        assert!(with(|c| c.vcpu_count = 32).is_ok());
        assert_eq!(
            with(|c| c.mem_size_mib = 0),
            Err(MachineConfigError::MemSize(0))
        );
        assert!(with(|c| c.mem_size_mib = u64::MAX).is_err());
        assert_eq!(with(|c| c.smt = true), Err(MachineConfigError::Smt));
        assert!(with(|c| c.cpu_template = Some("None".into())).is_ok());
        let err = with(|c| c.cpu_template = Some("T2".into())).unwrap_err();
        assert!(
            err.to_string().contains("does not support CPU templates"),
            "{err}"
        );
        assert_eq!(
            with(|c| c.huge_pages = HugePages::Transparent),
            Err(MachineConfigError::TransparentHugePages)
        );
        assert_eq!(
            with(|c| {
                c.huge_pages = HugePages::Hugetlbfs2M;
                c.mem_size_mib = 129
            }),
            Err(MachineConfigError::HugePageMultiple(129))
        );
        assert!(with(|c| c.huge_pages = HugePages::Hugetlbfs2M).is_ok());
    }

    #[test]
    fn updates() {
        let u: MachineConfigUpdate = serde_json::from_str("{}").unwrap();
        assert!(u.is_empty());
        let u: MachineConfigUpdate = serde_json::from_str(r#"{"vcpu_count": 4}"#).unwrap();
        assert!(!u.is_empty());
        let c = u.apply_to(&MachineConfig::default());
        assert_eq!((c.vcpu_count, c.mem_size_mib), (4, 128));
        assert!(serde_json::from_str::<MachineConfigUpdate>(r#"{"cpus": 4}"#).is_err());
    }
}
