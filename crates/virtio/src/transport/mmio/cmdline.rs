//! Announcing virtio-mmio devices to Linux on its command line
//! (`virtio_mmio.device=`, `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES`), with
//! linux-loader's [`Cmdline`].

use linux_loader::cmdline::{Cmdline, Error as LoaderCmdlineError};
use vm_memory::GuestAddress;

use super::MMIO_WINDOW_SIZE;

/// Errors announcing virtio-mmio devices on a kernel command line.
#[derive(Debug, thiserror::Error)]
pub enum CmdlineError {
    /// The command line given is already longer than allowed.
    #[error("kernel command line is too long: {len} bytes with its NUL, at most {capacity} fit")]
    TooLong {
        /// Its length, including the terminating NUL.
        len: usize,
        /// The largest length allowed, including the NUL.
        capacity: usize,
    },
    /// The command line given is not one linux-loader can extend.
    #[error("invalid kernel command line: {source}")]
    Invalid {
        /// What linux-loader found.
        #[source]
        source: LoaderCmdlineError,
    },
    /// A device's parameter could not be added (most often: it would make
    /// the command line too long).
    #[error(
        "kernel command line: cannot add the virtio-mmio device at {base:#x} (IRQ {irq}): {source}"
    )]
    Device {
        /// The base address of the device's window.
        base: u64,
        /// Its interrupt.
        irq: u32,
        /// What linux-loader found.
        #[source]
        source: LoaderCmdlineError,
    },
}

/// Adds the `virtio_mmio.device=4K@<base>:<irq>` parameter that announces
/// a virtio-mmio window ([`MMIO_WINDOW_SIZE`]) at `base` with interrupt
/// `irq` to Linux, with linux-loader's [`Cmdline::add_virtio_mmio_device`].
///
/// Fails, leaving `cmdline` unchanged, if the parameter does not fit in the
/// command line's capacity.
///
/// # Example
///
/// ```
/// use kindling_virtio::add_mmio_cmdline_device;
/// use kindling_virtio::linux_loader::cmdline::Cmdline;
///
/// let mut cmdline = Cmdline::new(2048).unwrap();
/// cmdline.insert_str("console=ttyS0").unwrap();
/// add_mmio_cmdline_device(&mut cmdline, 0xd000_0000, 5).unwrap();
/// assert_eq!(
///     cmdline.as_cstring().unwrap().to_str().unwrap(),
///     "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5"
/// );
/// ```
pub fn add_mmio_cmdline_device(
    cmdline: &mut Cmdline,
    base: u64,
    irq: u32,
) -> Result<(), CmdlineError> {
    cmdline
        .add_virtio_mmio_device(MMIO_WINDOW_SIZE, GuestAddress(base), irq, None)
        .map_err(|source| CmdlineError::Device { base, irq, source })
}

/// `cmdline` with one `virtio_mmio.device=` parameter for each
/// `(base, irq)` of `devices`, in order, added with
/// [`add_mmio_cmdline_device`]. The result, with its terminating NUL, is
/// at most `capacity` bytes (for Linux on x86_64,
/// `kindling_memory::layout::CMDLINE_MAX_SIZE`); a longer one is an error.
///
/// The parameters go after the kernel's own arguments and before any
/// arguments for init (after ` -- `), so that the kernel sees them. With
/// no devices, `cmdline` is returned unchanged (the boot loader checks its
/// length against the kernel's limit).
///
/// # Example
///
/// ```
/// use kindling_virtio::cmdline_with_mmio_devices;
///
/// let cmdline = cmdline_with_mmio_devices(
///     "console=ttyS0 -- init-arg",
///     2048,
///     &[(0xd000_0000, 5), (0xd000_1000, 6)],
/// )
/// .unwrap();
/// assert_eq!(
///     cmdline,
///     "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 \
///      virtio_mmio.device=4K@0xd0001000:6 -- init-arg"
/// );
/// ```
pub fn cmdline_with_mmio_devices(
    cmdline: &str,
    capacity: usize,
    devices: &[(u64, u32)],
) -> Result<String, CmdlineError> {
    if devices.is_empty() {
        return Ok(cmdline.to_string());
    }
    let len = cmdline.len().saturating_add(1);
    if len > capacity {
        return Err(CmdlineError::TooLong { len, capacity });
    }
    let mut built =
        Cmdline::try_from(cmdline, capacity).map_err(|source| CmdlineError::Invalid { source })?;
    for &(base, irq) in devices {
        add_mmio_cmdline_device(&mut built, base, irq)?;
    }
    let text = built
        .as_cstring()
        .map_err(|source| CmdlineError::Invalid { source })?;
    // Every byte linux-loader accepted is printable ASCII.
    text.into_string().map_err(|_| CmdlineError::Invalid {
        source: LoaderCmdlineError::InvalidAscii,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPACITY: usize = 2048;

    #[test]
    fn one_device_on_an_empty_command_line() {
        assert_eq!(
            cmdline_with_mmio_devices("", CAPACITY, &[(0xd000_0000, 5)]).unwrap(),
            "virtio_mmio.device=4K@0xd0000000:5"
        );
    }

    #[test]
    fn devices_follow_the_kernel_arguments_in_order() {
        assert_eq!(
            cmdline_with_mmio_devices(
                "console=ttyS0 quoted=\"a b\"",
                CAPACITY,
                &[(0xc000_1000, 5), (0xc000_2000, 23)]
            )
            .unwrap(),
            "console=ttyS0 quoted=\"a b\" virtio_mmio.device=4K@0xc0001000:5 \
             virtio_mmio.device=4K@0xc0002000:23"
        );
    }

    #[test]
    fn devices_go_before_init_arguments() {
        assert_eq!(
            cmdline_with_mmio_devices("panic=1 -- single", CAPACITY, &[(0x1000, 7)]).unwrap(),
            "panic=1 virtio_mmio.device=4K@0x1000:7 -- single"
        );
    }

    #[test]
    fn without_devices_the_command_line_is_unchanged() {
        let long = "x".repeat(3 * CAPACITY);
        assert_eq!(
            cmdline_with_mmio_devices(&long, CAPACITY, &[]).unwrap(),
            long
        );
        assert_eq!(
            cmdline_with_mmio_devices("  a  b ", CAPACITY, &[]).unwrap(),
            "  a  b "
        );
    }

    #[test]
    fn a_command_line_already_too_long_is_refused() {
        let long = "x".repeat(CAPACITY);
        let err = cmdline_with_mmio_devices(&long, CAPACITY, &[(0x1000, 5)]).unwrap_err();
        assert!(
            matches!(
                err,
                CmdlineError::TooLong {
                    len,
                    capacity: CAPACITY
                } if len == CAPACITY + 1
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains("command line is too long"),
            "{err}"
        );
    }

    #[test]
    fn a_device_that_does_not_fit_is_refused() {
        // "virtio_mmio.device=4K@0x1000:5" is 30 bytes: with the separator
        // and the NUL, 10 + 1 + 30 + 1 = 42 bytes.
        let base = "x".repeat(10);
        assert!(cmdline_with_mmio_devices(&base, 42, &[(0x1000, 5)]).is_ok());
        let err = cmdline_with_mmio_devices(&base, 41, &[(0x1000, 5)]).unwrap_err();
        assert!(
            matches!(
                err,
                CmdlineError::Device {
                    base: 0x1000,
                    irq: 5,
                    source: LoaderCmdlineError::TooLarge
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("0x1000 (IRQ 5)"), "{err}");
        // The second of two devices.
        let err = cmdline_with_mmio_devices(&base, 60, &[(0x1000, 5), (0x2000, 6)]).unwrap_err();
        assert!(
            matches!(err, CmdlineError::Device { base: 0x2000, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_failed_add_leaves_the_command_line_unchanged() {
        let mut cmdline = Cmdline::new(20).unwrap();
        cmdline.insert_str("a=b").unwrap();
        let err = add_mmio_cmdline_device(&mut cmdline, 0xd000_0000, 5).unwrap_err();
        assert!(matches!(err, CmdlineError::Device { .. }), "{err}");
        assert_eq!(cmdline.as_cstring().unwrap().to_str().unwrap(), "a=b");
    }

    #[test]
    fn invalid_capacity_is_an_error_not_a_panic() {
        let err = cmdline_with_mmio_devices("", 0, &[(0x1000, 5)]).unwrap_err();
        assert!(matches!(err, CmdlineError::TooLong { .. }), "{err}");
    }
}
