//! x86_64 specifics of the guest memory map.

pub mod layout;
