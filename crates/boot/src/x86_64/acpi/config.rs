//! What the ACPI tables describe: vCPUs, device windows, IRQ lines and
//! power-management registers, as plain data.

use kindling_memory::layout::{I8042_IRQ, IOAPIC_PINS, SERIAL_IRQ};

use crate::x86_64::{BootError, MAX_CPUS};

/// Default I/O port of the FADT's `SLEEP_CONTROL_REG`.
///
/// The three power-management registers sit at 0x600..0x603, the I/O base
/// QEMU's PC machines use for ACPI power management: no ISA device and no
/// Linux driver probes there.
pub const DEFAULT_ACPI_SLEEP_CONTROL_PORT: u16 = 0x600;
/// Default I/O port of the FADT's `SLEEP_STATUS_REG`.
pub const DEFAULT_ACPI_SLEEP_STATUS_PORT: u16 = 0x601;
/// Default I/O port of the FADT's `RESET_REG`.
pub const DEFAULT_ACPI_RESET_PORT: u16 = 0x602;
/// Default value the guest writes to the reset register to reset.
pub const DEFAULT_ACPI_RESET_VALUE: u8 = 0x01;
/// Default `SLP_TYP` value of the `\_S5_` (soft-off) package.
pub const DEFAULT_ACPI_S5_SLEEP_TYPE: u8 = 5;

/// The largest number of virtio-mmio devices the DSDT names (`VR00` to
/// `VRFF`).
pub const MAX_VIRTIO_MMIO_DEVICES: usize = 256;

/// One virtio-mmio device: its register window and its interrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioMmioDescription {
    /// Guest-physical base of the MMIO window.
    pub base: u64,
    /// Size of the MMIO window in bytes.
    pub size: u64,
    /// The GSI (IOAPIC pin) the device's irqfd raises.
    pub irq: u32,
}

/// A 16550 serial port: eight I/O ports and an interrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SerialDescription {
    /// First of its eight I/O ports.
    pub port: u16,
    /// Its IRQ (an IOAPIC pin).
    pub irq: u32,
}

impl SerialDescription {
    /// COM1: ports 0x3f8 to 0x3ff, IRQ 4.
    pub const COM1: Self = Self {
        port: 0x3f8,
        irq: SERIAL_IRQ,
    };
}

/// An i8042 PS/2 controller: its data and command/status ports and its
/// keyboard interrupt.
///
/// Described in the DSDT so that Linux's i8042 driver binds to it (for
/// host-sent Ctrl-Alt-Del). Resetting through port 0x64 (`reboot=k`) works
/// whether or not it is described.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct I8042Description {
    /// The data port.
    pub data_port: u16,
    /// The command/status port.
    pub command_port: u16,
    /// The keyboard IRQ (an IOAPIC pin).
    pub irq: u32,
}

impl I8042Description {
    /// The PC's i8042: ports 0x60 and 0x64, IRQ 1.
    pub const STANDARD: Self = Self {
        data_port: 0x60,
        command_port: 0x64,
        irq: I8042_IRQ,
    };
}

/// An MC146818 CMOS real-time clock without an interrupt: an index port
/// and the data port after it.
///
/// Described in the DSDT (`RTC_`, `PNP0B00`, no IRQ, so no alarms) so that
/// Linux's `rtc_cmos` driver binds to it. Without one, the FADT says that
/// there is no CMOS RTC and Linux leaves ports 0x70/0x71 alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmosRtcDescription {
    /// The index port; the data port is the next one.
    pub port: u16,
    /// The CMOS byte that holds the century (BCD), for the FADT's
    /// `CENTURY` field; 0 if there is none.
    pub century_register: u8,
}

impl CmosRtcDescription {
    /// The PC's RTC: ports 0x70 and 0x71, century in CMOS byte 0x32.
    pub const STANDARD: Self = Self {
        port: 0x70,
        century_register: 0x32,
    };
}

/// Where the hardware-reduced ACPI power-management registers are and
/// which values they take. A device at these ports must end the VM.
///
/// The guest powers off by writing `SLP_EN | (s5_sleep_type << 2)` (0x34
/// with the defaults) to the sleep control register, after writing
/// `WAK_STS` (0x80) to the sleep status register; it resets by writing
/// `reset_value` to the reset register. All three are 8-bit registers in
/// system I/O space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcpiPmDescription {
    /// I/O port of `SLEEP_CONTROL_REG`.
    pub sleep_control_port: u16,
    /// I/O port of `SLEEP_STATUS_REG`.
    pub sleep_status_port: u16,
    /// I/O port of `RESET_REG`.
    pub reset_port: u16,
    /// The value written to `RESET_REG` to reset (`RESET_VALUE`).
    pub reset_value: u8,
    /// The `SLP_TYP` value of the `\_S5_` package (0 to 7).
    pub s5_sleep_type: u8,
}

impl Default for AcpiPmDescription {
    /// The `DEFAULT_ACPI_*` ports and values.
    fn default() -> Self {
        Self {
            sleep_control_port: DEFAULT_ACPI_SLEEP_CONTROL_PORT,
            sleep_status_port: DEFAULT_ACPI_SLEEP_STATUS_PORT,
            reset_port: DEFAULT_ACPI_RESET_PORT,
            reset_value: DEFAULT_ACPI_RESET_VALUE,
            s5_sleep_type: DEFAULT_ACPI_S5_SLEEP_TYPE,
        }
    }
}

/// What the ACPI tables describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiConfig {
    /// Number of vCPUs, 1 to [`MAX_CPUS`]; their APIC ids are
    /// `0..num_cpus`.
    pub num_cpus: u8,
    /// The virtio-mmio devices, named `VR00`, `VR01`, ... in this order,
    /// with `_UID` equal to their position. At most
    /// [`MAX_VIRTIO_MMIO_DEVICES`].
    pub virtio_mmio: Vec<VirtioMmioDescription>,
    /// The serial port, described as `COM1`, if any.
    pub serial: Option<SerialDescription>,
    /// The i8042 controller, described as `PS2_`, if any.
    pub i8042: Option<I8042Description>,
    /// The CMOS RTC, described as `RTC_`, if any.
    pub cmos_rtc: Option<CmosRtcDescription>,
    /// The power-management registers.
    pub pm: AcpiPmDescription,
}

impl AcpiConfig {
    /// A configuration for `num_cpus` vCPUs with COM1, the standard i8042,
    /// the standard CMOS RTC, the default power-management registers and
    /// no virtio devices: Kindling's reference VMM.
    pub fn new(num_cpus: u8) -> Self {
        Self {
            num_cpus,
            virtio_mmio: Vec::new(),
            serial: Some(SerialDescription::COM1),
            i8042: Some(I8042Description::STANDARD),
            cmos_rtc: Some(CmosRtcDescription::STANDARD),
            pm: AcpiPmDescription::default(),
        }
    }
}

/// Checks everything in `config` that could make a table wrong.
pub(super) fn validate(config: &AcpiConfig) -> Result<(), BootError> {
    if config.num_cpus == 0 || config.num_cpus > MAX_CPUS {
        return Err(BootError::AcpiInvalidCpuCount {
            num_cpus: config.num_cpus,
            max: MAX_CPUS,
        });
    }
    if config.virtio_mmio.len() > MAX_VIRTIO_MMIO_DEVICES {
        return Err(BootError::AcpiTooManyDevices {
            count: config.virtio_mmio.len(),
            max: MAX_VIRTIO_MMIO_DEVICES,
        });
    }
    let check_irq = |irq: u32, device: &dyn Fn() -> String| {
        if irq >= IOAPIC_PINS {
            return Err(BootError::AcpiInvalidIrq {
                device: device(),
                irq,
                max: IOAPIC_PINS - 1,
            });
        }
        Ok(())
    };
    for (index, dev) in config.virtio_mmio.iter().enumerate() {
        if dev.size == 0 || dev.base.checked_add(dev.size - 1).is_none() {
            return Err(BootError::AcpiInvalidMmioWindow {
                index,
                base: dev.base,
                size: dev.size,
            });
        }
        check_irq(dev.irq, &|| format!("virtio-mmio device {index}"))?;
    }
    if let Some(serial) = config.serial {
        check_irq(serial.irq, &|| "serial port".to_string())?;
    }
    if let Some(i8042) = config.i8042 {
        check_irq(i8042.irq, &|| "i8042".to_string())?;
    }
    let pm = &config.pm;
    for (port, register) in [
        (pm.sleep_control_port, "sleep control"),
        (pm.sleep_status_port, "sleep status"),
        (pm.reset_port, "reset"),
    ] {
        if port == 0 {
            return Err(BootError::AcpiInvalidPmPort { register });
        }
    }
    if pm.s5_sleep_type > 7 {
        return Err(BootError::AcpiInvalidSleepType {
            value: pm.s5_sleep_type,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::x86_64::acpi::tests::virtio;

    #[test]
    fn invalid_cpu_counts() {
        for num_cpus in [0u8, 255] {
            let err = validate(&AcpiConfig::new(num_cpus)).unwrap_err();
            assert!(
                matches!(err, BootError::AcpiInvalidCpuCount { num_cpus: n, max: 254 } if n == num_cpus),
                "{err}"
            );
        }
    }
    #[test]
    fn too_many_devices() {
        let mut config = AcpiConfig::new(1);
        config.virtio_mmio = virtio(257);
        let err = validate(&config).unwrap_err();
        assert!(
            matches!(
                err,
                BootError::AcpiTooManyDevices {
                    count: 257,
                    max: 256
                }
            ),
            "{err}"
        );
    }
    #[test]
    fn invalid_mmio_windows() {
        for (base, size) in [(0xc000_0000, 0), (u64::MAX, 2), (u64::MAX - 0xfff, 0x2000)] {
            let mut config = AcpiConfig::new(1);
            config.virtio_mmio = virtio(2);
            config.virtio_mmio[1] = VirtioMmioDescription { base, size, irq: 5 };
            let err = validate(&config).unwrap_err();
            assert!(
                matches!(err, BootError::AcpiInvalidMmioWindow { index: 1, base: b, size: s }
                    if b == base && s == size),
                "{err}"
            );
        }
        // A window that ends exactly at the top of the address space is fine.
        let mut config = AcpiConfig::new(1);
        config.virtio_mmio = vec![VirtioMmioDescription {
            base: u64::MAX - 0xfff,
            size: 0x1000,
            irq: 5,
        }];
        validate(&config).unwrap();
    }
    #[test]
    fn irqs_must_be_ioapic_pins() {
        let mut config = AcpiConfig::new(1);
        config.virtio_mmio = virtio(1);
        config.virtio_mmio[0].irq = 24;
        let err = validate(&config).unwrap_err();
        assert!(
            matches!(&err, BootError::AcpiInvalidIrq { device, irq: 24, max: 23 }
                if device == "virtio-mmio device 0"),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "the virtio-mmio device 0 uses IRQ 24, but the IOAPIC only has pins 0 to 23"
        );

        let mut config = AcpiConfig::new(1);
        config.serial = Some(SerialDescription {
            port: 0x3f8,
            irq: 100,
        });
        let err = validate(&config).unwrap_err();
        assert!(
            matches!(&err, BootError::AcpiInvalidIrq { device, irq: 100, .. } if device == "serial port"),
            "{err}"
        );

        let mut config = AcpiConfig::new(1);
        config.i8042 = Some(I8042Description {
            irq: u32::MAX,
            ..I8042Description::STANDARD
        });
        let err = validate(&config).unwrap_err();
        assert!(
            matches!(&err, BootError::AcpiInvalidIrq { device, .. } if device == "i8042"),
            "{err}"
        );
    }
    #[test]
    fn pm_registers_are_checked() {
        for (register, pm) in [
            (
                "sleep control",
                AcpiPmDescription {
                    sleep_control_port: 0,
                    ..Default::default()
                },
            ),
            (
                "sleep status",
                AcpiPmDescription {
                    sleep_status_port: 0,
                    ..Default::default()
                },
            ),
            (
                "reset",
                AcpiPmDescription {
                    reset_port: 0,
                    ..Default::default()
                },
            ),
        ] {
            let config = AcpiConfig {
                pm,
                ..AcpiConfig::new(1)
            };
            let err = validate(&config).unwrap_err();
            assert!(
                matches!(err, BootError::AcpiInvalidPmPort { register: r } if r == register),
                "{err}"
            );
        }
        let config = AcpiConfig {
            pm: AcpiPmDescription {
                s5_sleep_type: 8,
                ..Default::default()
            },
            ..AcpiConfig::new(1)
        };
        let err = validate(&config).unwrap_err();
        assert!(
            matches!(err, BootError::AcpiInvalidSleepType { value: 8 }),
            "{err}"
        );
    }
    #[test]
    fn defaults() {
        let pm = AcpiPmDescription::default();
        assert_eq!(
            (
                pm.sleep_control_port,
                pm.sleep_status_port,
                pm.reset_port,
                pm.reset_value,
                pm.s5_sleep_type
            ),
            (0x600, 0x601, 0x602, 1, 5)
        );
        let config = AcpiConfig::new(3);
        assert_eq!(config.num_cpus, 3);
        assert_eq!(
            config.serial,
            Some(SerialDescription {
                port: 0x3f8,
                irq: 4
            })
        );
        assert_eq!(
            config.i8042,
            Some(I8042Description {
                data_port: 0x60,
                command_port: 0x64,
                irq: 1
            })
        );
        assert_eq!(
            config.cmos_rtc,
            Some(CmosRtcDescription {
                port: 0x70,
                century_register: 0x32
            })
        );
        assert!(config.virtio_mmio.is_empty());
    }
}
