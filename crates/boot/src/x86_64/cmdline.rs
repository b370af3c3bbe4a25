//! The kernel command line.

use kindling_memory::GuestMemoryMmap;
use vm_memory::{Bytes, GuestAddress};

use crate::x86_64::{BootError, BootLayout, LoadedKernel};

/// Where the command line was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmdlinePlacement {
    /// Guest-physical address of the first byte.
    pub addr: u64,
    /// Length in bytes, including the terminating NUL.
    pub len: usize,
}

/// Writes `cmdline`, NUL-terminated, at
/// [`CMDLINE_START`](kindling_memory::layout::CMDLINE_START) (the default
/// [`BootLayout`]).
///
/// The command line with its NUL must not be longer than
/// [`LoadedKernel::cmdline_max_size`] and must not contain a NUL byte.
///
/// # Example
///
/// ```
/// # use kindling_boot::{load_cmdline, CmdlinePlacement, KernelFormat, LoadedKernel};
/// # use kindling_memory::{create_guest_memory, MemoryConfig};
/// let ram = create_guest_memory(&MemoryConfig { size_mib: 16, backing: Default::default() }).unwrap();
/// # let kernel = LoadedKernel { format: KernelFormat::Elf, entry: 0x100_0000, start: 0x100_0000,
/// #     end: 0x110_0000, setup_header: None, cmdline_max_size: 2048, pvh_entry: None };
/// let placed = load_cmdline(&ram.memory, &kernel, "console=ttyS0 reboot=k panic=1").unwrap();
/// assert_eq!(placed, CmdlinePlacement { addr: 0x20000, len: 31 });
/// ```
pub fn load_cmdline(
    mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
    cmdline: &str,
) -> Result<CmdlinePlacement, BootError> {
    load_cmdline_with_layout(mem, kernel, cmdline, &BootLayout::default())
}

/// Like [`load_cmdline`], at `layout.cmdline_start`, and no longer than
/// `layout.cmdline_max_size` either.
pub fn load_cmdline_with_layout(
    mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
    cmdline: &str,
    layout: &BootLayout,
) -> Result<CmdlinePlacement, BootError> {
    layout.validate()?;
    let start = layout.cmdline_start;
    let max = layout.cmdline_limit(kernel.cmdline_max_size);
    let bytes = cmdline.as_bytes();
    if let Some(position) = bytes.iter().position(|&b| b == 0) {
        return Err(BootError::CmdlineContainsNul { position });
    }
    let len = bytes.len() + 1;
    if len > max {
        return Err(BootError::CmdlineTooLong { len, max });
    }
    let mut with_nul = Vec::with_capacity(len);
    with_nul.extend_from_slice(bytes);
    with_nul.push(0);
    mem.write_slice(&with_nul, GuestAddress(start))
        .map_err(BootError::guest_memory(
            "kernel command line",
            start,
            len as u64,
        ))?;
    Ok(CmdlinePlacement { addr: start, len })
}

#[cfg(test)]
mod tests {
    use kindling_memory::layout::{CMDLINE_MAX_SIZE, CMDLINE_START};

    use super::*;
    use crate::x86_64::test_images::guest_memory;
    use crate::x86_64::KernelFormat;

    fn kernel(max: usize) -> LoadedKernel {
        LoadedKernel {
            format: KernelFormat::Elf,
            entry: 0x100_0000,
            start: 0x100_0000,
            end: 0x110_0000,
            setup_header: None,
            cmdline_max_size: max,
            pvh_entry: None,
        }
    }

    #[test]
    fn writes_nul_terminated() {
        let mem = guest_memory(16 << 20);
        mem.write_slice(&[0xff; 16], GuestAddress(CMDLINE_START))
            .unwrap();
        let placed = load_cmdline(&mem, &kernel(CMDLINE_MAX_SIZE), "quiet").unwrap();
        assert_eq!(
            placed,
            CmdlinePlacement {
                addr: CMDLINE_START,
                len: 6
            }
        );
        let mut buf = [0xffu8; 6];
        mem.read_slice(&mut buf, GuestAddress(CMDLINE_START))
            .unwrap();
        assert_eq!(&buf, b"quiet\0");
    }

    #[test]
    fn empty_is_just_a_nul() {
        let mem = guest_memory(16 << 20);
        let placed = load_cmdline(&mem, &kernel(CMDLINE_MAX_SIZE), "").unwrap();
        assert_eq!(placed.len, 1);
    }

    #[test]
    fn limit_counts_the_nul() {
        let mem = guest_memory(16 << 20);
        let k = kernel(CMDLINE_MAX_SIZE);
        let longest = "a".repeat(CMDLINE_MAX_SIZE - 1);
        assert_eq!(
            load_cmdline(&mem, &k, &longest).unwrap().len,
            CMDLINE_MAX_SIZE
        );
        let err = load_cmdline(&mem, &k, &"a".repeat(CMDLINE_MAX_SIZE)).unwrap_err();
        assert!(
            matches!(
                err,
                BootError::CmdlineTooLong {
                    len: 2049,
                    max: 2048
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn interior_nul_is_refused() {
        let mem = guest_memory(16 << 20);
        let err =
            load_cmdline(&mem, &kernel(CMDLINE_MAX_SIZE), "root=/dev/vda\0init=/x").unwrap_err();
        assert!(
            matches!(err, BootError::CmdlineContainsNul { position: 13 }),
            "{err}"
        );
    }

    #[test]
    fn memory_without_the_cmdline_area_is_an_error() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1_0000)]).unwrap();
        let err = load_cmdline(&mem, &kernel(CMDLINE_MAX_SIZE), "x").unwrap_err();
        assert!(
            matches!(
                err,
                BootError::GuestMemory {
                    addr: CMDLINE_START,
                    len: 2,
                    ..
                }
            ),
            "{err}"
        );
    }
}
