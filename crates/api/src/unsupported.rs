//! Firecracker resources Kindling does not implement yet. Each answers a
//! 400 that says so; an issue that adds one removes its variant here and
//! routes its path in [`crate::request`].

/// A Firecracker resource Kindling does not support yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsupported {
    /// `/balloon` and its sub-resources.
    Balloon,
    /// `/mmds` and `/mmds/config`.
    Mmds,
    /// `/pmem/{id}`.
    Pmem,
    /// `/hotplug/memory`.
    MemoryHotplug,
    /// `/cpu-config`.
    CpuConfig,
}

impl Unsupported {
    /// The resource a request path names, if it is one of these.
    pub fn from_path(segments: &[&str]) -> Option<Self> {
        Some(match segments.first().copied()? {
            "balloon" => Unsupported::Balloon,
            "mmds" => Unsupported::Mmds,
            "pmem" => Unsupported::Pmem,
            "hotplug" => Unsupported::MemoryHotplug,
            "cpu-config" => Unsupported::CpuConfig,
            _ => return None,
        })
    }

    /// What the resource is, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Unsupported::Balloon => "the memory balloon (/balloon)",
            Unsupported::Mmds => "the microVM metadata service (/mmds)",
            Unsupported::Pmem => "pmem devices (/pmem)",
            Unsupported::MemoryHotplug => "memory hotplug (/hotplug/memory)",
            Unsupported::CpuConfig => "custom CPU configuration (/cpu-config)",
        }
    }
}

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kindling does not support {} yet", self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            Unsupported::from_path(&["network-interfaces", "eth0"]),
            None
        );
        assert_eq!(Unsupported::from_path(&["vsock"]), None);
        assert_eq!(Unsupported::from_path(&["snapshot", "load"]), None);
        assert_eq!(
            Unsupported::from_path(&["balloon", "statistics"]),
            Some(Unsupported::Balloon)
        );
        assert_eq!(Unsupported::from_path(&["drives"]), None);
        assert_eq!(Unsupported::from_path(&[]), None);
        assert_eq!(
            Unsupported::Mmds.to_string(),
            "Kindling does not support the microVM metadata service (/mmds) yet"
        );
    }
}
