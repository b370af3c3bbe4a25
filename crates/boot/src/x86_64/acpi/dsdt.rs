//! The DSDT: the `\_S5_` sleep package and the devices a guest cannot
//! discover on its own.
//!
//! ```text
//! Name (\_S5_, Package (4) { S5, S5, 0, 0 })
//! Scope (\_SB_) {
//!     Device (COM1) { _HID PNP0501, _UID 0, _CRS { IO port/8, Interrupt irq } }
//!     Device (PS2_) { _HID PNP0303, _UID 0, _CRS { IO data/1, IO command/1, Interrupt irq } }
//!     Device (RTC_) { _HID PNP0B00, _UID 0, _CRS { IO port/2 } }
//!     Device (VR00) { _HID "LNRO0005", _UID 0, _CRS { Memory32Fixed base/size, Interrupt irq } }
//!     ...
//! }
//! ```
//!
//! Every interrupt is `Interrupt (ResourceConsumer, Edge, ActiveHigh,
//! Exclusive)` (`Shared` when several devices use the same line): devices
//! raise their line through a KVM irqfd without a resampler, which pulses
//! the IOAPIC pin, and only an edge-triggered pin never loses a pulse. A
//! window above 4 GiB is a `QWordMemory` range instead of
//! `Memory32Fixed`.

use acpi_tables::aml::{
    Device, EISAName, Interrupt, Memory32Fixed, Name, Package, Path, ResourceTemplate, Scope, IO,
};
use acpi_tables::sdt::Sdt;
use acpi_tables::{Aml, AmlSink};

use super::{
    oem_table_id, AcpiConfig, CmosRtcDescription, I8042Description, SerialDescription,
    VirtioMmioDescription, OEM_ID, OEM_REVISION,
};

/// DSDT revision 2: integers are 64-bit.
const DSDT_REVISION: u8 = 2;
/// Size of the table header.
const HEADER_LEN: u32 = 36;
/// `_HID` of virtio-mmio devices, which Linux's `virtio_mmio` driver
/// matches.
pub(super) const VIRTIO_MMIO_HID: &str = "LNRO0005";
/// Number of I/O ports of a 16550.
const SERIAL_PORT_LEN: u8 = 8;

/// An edge-triggered, active-high interrupt consumed by the device,
/// `shared` if another device of the table uses it too.
fn edge_interrupt(irq: u32, shared: bool) -> Interrupt {
    Interrupt::new(true, true, false, shared, irq)
}

/// A single I/O range of `len` ports at `port`.
fn io(port: u16, len: u8) -> IO {
    IO::new(port, port, 1, len)
}

/// A `QWordMemory (ResourceConsumer, PosDecode, MinFixed, MaxFixed,
/// NonCacheable, ReadWrite)` descriptor for `[min, max]`.
///
/// `acpi_tables`' `AddressSpace` only makes producer ranges (bridge
/// windows); a device's own registers are a consumed range.
struct QWordMemory {
    min: u64,
    max: u64,
}

impl Aml for QWordMemory {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        /// Large item, QWord Address Space Descriptor.
        const QWORD_ADDRESS_SPACE: u8 = 0x8a;
        /// Bytes after the length field.
        const LEN: u16 = 43;
        /// Resource type: memory range.
        const MEMORY: u8 = 0;
        /// General flags: consumer (bit 0), positive decode (bit 1 clear),
        /// minimum fixed (bit 2), maximum fixed (bit 3).
        const CONSUMER_FIXED: u8 = 0b1101;
        /// Type-specific flags: read-write (bit 0), non-cacheable (bits 1-2
        /// clear).
        const READ_WRITE: u8 = 1;

        sink.byte(QWORD_ADDRESS_SPACE);
        sink.word(LEN);
        sink.byte(MEMORY);
        sink.byte(CONSUMER_FIXED);
        sink.byte(READ_WRITE);
        sink.qword(0); // granularity
        sink.qword(self.min);
        sink.qword(self.max);
        sink.qword(0); // translation
        sink.qword(self.max - self.min + 1);
    }
}

/// The AML of `Device (name) { _HID, _UID, _CRS }`.
fn device(name: &str, hid: &dyn Aml, uid: u32, crs: &ResourceTemplate) -> Vec<u8> {
    let hid = Name::new("_HID".into(), hid);
    let uid = Name::new("_UID".into(), &uid);
    let crs = Name::new("_CRS".into(), crs);
    let mut bytes = Vec::new();
    Device::new(Path::new(name), vec![&hid, &uid, &crs]).to_aml_bytes(&mut bytes);
    bytes
}

/// `COM1`: a 16550 at `serial.port`.
fn serial(serial: &SerialDescription, irq: Interrupt) -> Vec<u8> {
    let ports = io(serial.port, SERIAL_PORT_LEN);
    let crs = ResourceTemplate::new(vec![&ports, &irq]);
    device("COM1", &EISAName::new("PNP0501"), 0, &crs)
}

/// `PS2_`: an i8042 keyboard controller.
fn i8042(i8042: &I8042Description, irq: Interrupt) -> Vec<u8> {
    let data = io(i8042.data_port, 1);
    let command = io(i8042.command_port, 1);
    let crs = ResourceTemplate::new(vec![&data, &command, &irq]);
    device("PS2_", &EISAName::new("PNP0303"), 0, &crs)
}

/// `RTC_`: a CMOS RTC without an interrupt.
fn cmos_rtc(rtc: &CmosRtcDescription) -> Vec<u8> {
    let ports = io(rtc.port, 2);
    let crs = ResourceTemplate::new(vec![&ports]);
    device("RTC_", &EISAName::new("PNP0B00"), 0, &crs)
}

/// `VRnn` (`nn` the hexadecimal `index`): a virtio-mmio device. `dev` is
/// checked: its window is non-empty and does not wrap.
fn virtio_mmio(index: u8, dev: &VirtioMmioDescription, irq: Interrupt) -> Vec<u8> {
    let end = dev.base + (dev.size - 1);
    let window: Box<dyn Aml> = match (u32::try_from(dev.base), u32::try_from(end)) {
        (Ok(base), Ok(_)) if dev.size <= u64::from(u32::MAX) => {
            Box::new(Memory32Fixed::new(true, base, dev.size as u32))
        }
        _ => Box::new(QWordMemory {
            min: dev.base,
            max: end,
        }),
    };
    let crs = ResourceTemplate::new(vec![window.as_ref(), &irq]);
    device(
        &format!("VR{index:02X}"),
        &VIRTIO_MMIO_HID,
        u32::from(index),
        &crs,
    )
}

/// The DSDT for a checked `config`.
pub(super) fn dsdt(config: &AcpiConfig) -> Vec<u8> {
    let mut aml = Vec::new();

    let s5 = config.pm.s5_sleep_type;
    Name::new("_S5_".into(), &Package::new(vec![&s5, &s5, &0u8, &0u8])).to_aml_bytes(&mut aml);

    let irqs: Vec<u32> = (config.serial.iter().map(|d| d.irq))
        .chain(config.i8042.iter().map(|d| d.irq))
        .chain(config.virtio_mmio.iter().map(|d| d.irq))
        .collect();
    let interrupt = |irq: u32| edge_interrupt(irq, irqs.iter().filter(|&&i| i == irq).count() > 1);

    let mut devices = Vec::new();
    if let Some(desc) = &config.serial {
        devices.extend(serial(desc, interrupt(desc.irq)));
    }
    if let Some(desc) = &config.i8042 {
        devices.extend(i8042(desc, interrupt(desc.irq)));
    }
    if let Some(desc) = &config.cmos_rtc {
        devices.extend(cmos_rtc(desc));
    }
    // `validate` caps the list at 256 entries, so every index fits a u8.
    for (index, desc) in (0..=u8::MAX).zip(&config.virtio_mmio) {
        devices.extend(virtio_mmio(index, desc, interrupt(desc.irq)));
    }
    aml.extend(Scope::raw(Path::new("\\_SB_"), devices));

    let mut dsdt = Sdt::new(
        *b"DSDT",
        HEADER_LEN,
        DSDT_REVISION,
        OEM_ID,
        oem_table_id(b"DSDT"),
        OEM_REVISION,
    );
    dsdt.append_slice(&aml);
    dsdt.as_slice().to_vec()
}

#[cfg(test)]
mod tests {
    use super::super::test_aml::{parse_dsdt, AmlObject, Resource};
    use super::super::AcpiPmDescription;
    use super::*;
    use crate::x86_64::acpi::tests::sum;

    const EDGE_HIGH_CONSUMER: u8 = 0b0011;

    fn config(devices: usize) -> AcpiConfig {
        let mut config = AcpiConfig::new(1);
        config.virtio_mmio = (0..devices)
            .map(|i| VirtioMmioDescription {
                base: 0xc000_1000 + 0x1000 * i as u64,
                size: 0x1000,
                irq: 5 + (i as u32 % 19),
            })
            .collect();
        config
    }

    #[test]
    fn header_length_and_checksum() {
        for devices in [0, 1, 7, 256] {
            let b = dsdt(&config(devices));
            assert_eq!(&b[..4], b"DSDT");
            assert_eq!(
                u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize,
                b.len()
            );
            assert_eq!(b[8], 2);
            assert_eq!(sum(&b), 0, "checksum with {devices} devices");
            assert_eq!(&b[16..24], b"KINDDSDT");
        }
    }

    #[test]
    fn one_device_entry_per_virtio_device() {
        for devices in [0usize, 1, 2, 19, 100, 256] {
            let config = config(devices);
            let parsed = parse_dsdt(&dsdt(&config));
            let virtio: Vec<_> = parsed
                .devices
                .iter()
                .filter(|d| d.hid() == Some(AmlObject::String(VIRTIO_MMIO_HID.into())))
                .collect();
            assert_eq!(virtio.len(), devices);
            for (i, (dev, desc)) in virtio.iter().zip(&config.virtio_mmio).enumerate() {
                // Past 19 devices the test's IRQs repeat, and are shared.
                let users = config.virtio_mmio.iter().filter(|d| d.irq == desc.irq);
                let shared = if users.count() > 1 { 1 << 3 } else { 0 };
                assert_eq!(dev.path, format!("\\_SB_.VR{i:02X}"));
                assert_eq!(dev.name("_UID"), Some(&AmlObject::Integer(i as u64)));
                assert_eq!(
                    dev.resources(),
                    vec![
                        Resource::Memory32Fixed {
                            writable: true,
                            base: desc.base as u32,
                            len: desc.size as u32
                        },
                        Resource::Interrupt {
                            flags: EDGE_HIGH_CONSUMER | shared,
                            irqs: vec![desc.irq]
                        },
                    ]
                );
            }
            // COM1, PS2_ and RTC_ are there too, and nothing else.
            assert_eq!(parsed.devices.len(), devices + 3);
        }
    }

    #[test]
    fn serial_and_i8042() {
        let parsed = parse_dsdt(&dsdt(&config(1)));
        let com1 = parsed.device("\\_SB_.COM1").unwrap();
        assert_eq!(com1.hid(), Some(AmlObject::EisaId("PNP0501".into())));
        assert_eq!(
            com1.resources(),
            vec![
                Resource::Io {
                    min: 0x3f8,
                    max: 0x3f8,
                    align: 1,
                    len: 8
                },
                Resource::Interrupt {
                    flags: EDGE_HIGH_CONSUMER,
                    irqs: vec![4]
                },
            ]
        );
        let ps2 = parsed.device("\\_SB_.PS2_").unwrap();
        assert_eq!(ps2.hid(), Some(AmlObject::EisaId("PNP0303".into())));
        assert_eq!(
            ps2.resources(),
            vec![
                Resource::Io {
                    min: 0x60,
                    max: 0x60,
                    align: 1,
                    len: 1
                },
                Resource::Io {
                    min: 0x64,
                    max: 0x64,
                    align: 1,
                    len: 1
                },
                Resource::Interrupt {
                    flags: EDGE_HIGH_CONSUMER,
                    irqs: vec![1]
                },
            ]
        );

        let rtc = parsed.device("\\_SB_.RTC_").unwrap();
        assert_eq!(rtc.hid(), Some(AmlObject::EisaId("PNP0B00".into())));
        assert_eq!(
            rtc.resources(),
            vec![Resource::Io {
                min: 0x70,
                max: 0x70,
                align: 1,
                len: 2
            }]
        );

        let mut bare = config(1);
        bare.serial = Some(SerialDescription {
            port: 0x2f8,
            irq: 3,
        });
        bare.i8042 = None;
        bare.cmos_rtc = None;
        let parsed = parse_dsdt(&dsdt(&bare));
        assert!(parsed.device("\\_SB_.PS2_").is_none());
        assert!(parsed.device("\\_SB_.RTC_").is_none());
        let com1 = parsed.device("\\_SB_.COM1").unwrap();
        assert_eq!(
            com1.resources()[0],
            Resource::Io {
                min: 0x2f8,
                max: 0x2f8,
                align: 1,
                len: 8
            }
        );
        bare.serial = None;
        let parsed = parse_dsdt(&dsdt(&bare));
        assert_eq!(parsed.devices.len(), 1);
    }

    #[test]
    fn lines_used_twice_are_shared() {
        let mut config = config(3);
        config.virtio_mmio[0].irq = 4; // COM1's
        config.virtio_mmio[2].irq = config.virtio_mmio[1].irq;
        let parsed = parse_dsdt(&dsdt(&config));
        let flags = |name: &str| match parsed.device(name).unwrap().resources().pop() {
            Some(Resource::Interrupt { flags, .. }) => flags,
            other => panic!("{other:?}"),
        };
        const SHARED: u8 = 1 << 3;
        assert_eq!(flags("\\_SB_.COM1"), EDGE_HIGH_CONSUMER | SHARED);
        assert_eq!(flags("\\_SB_.PS2_"), EDGE_HIGH_CONSUMER);
        assert_eq!(flags("\\_SB_.VR00"), EDGE_HIGH_CONSUMER | SHARED);
        assert_eq!(flags("\\_SB_.VR01"), EDGE_HIGH_CONSUMER | SHARED);
        assert_eq!(flags("\\_SB_.VR02"), EDGE_HIGH_CONSUMER | SHARED);
    }

    #[test]
    fn windows_above_4g_are_qword_memory() {
        let mut config = config(0);
        config.virtio_mmio = vec![
            VirtioMmioDescription {
                base: 0x1_0000_0000,
                size: 0x200,
                irq: 6,
            },
            // Ends exactly at 4 GiB: still 32-bit.
            VirtioMmioDescription {
                base: 0xffff_f000,
                size: 0x1000,
                irq: 7,
            },
            // Starts below 4 GiB and crosses it.
            VirtioMmioDescription {
                base: 0xffff_f000,
                size: 0x2000,
                irq: 8,
            },
        ];
        let parsed = parse_dsdt(&dsdt(&config));
        let res = |name: &str| parsed.device(name).unwrap().resources()[0].clone();
        assert_eq!(
            res("\\_SB_.VR00"),
            Resource::QWordMemory {
                min: 0x1_0000_0000,
                max: 0x1_0000_01ff,
                len: 0x200
            }
        );
        assert_eq!(
            res("\\_SB_.VR01"),
            Resource::Memory32Fixed {
                writable: true,
                base: 0xffff_f000,
                len: 0x1000
            }
        );
        assert_eq!(
            res("\\_SB_.VR02"),
            Resource::QWordMemory {
                min: 0xffff_f000,
                max: 0x1_0000_0fff,
                len: 0x2000
            }
        );
    }

    #[test]
    fn s5_package() {
        let parsed = parse_dsdt(&dsdt(&config(0)));
        let s5 = |p: &super::super::test_aml::ParsedDsdt| {
            p.names
                .iter()
                .find(|(path, _)| path == "\\_S5_")
                .map(|(_, o)| o.clone())
        };
        let int = AmlObject::Integer;
        assert_eq!(
            s5(&parsed),
            Some(AmlObject::Package(vec![int(5), int(5), int(0), int(0)]))
        );
        let mut other = config(0);
        other.pm = AcpiPmDescription {
            s5_sleep_type: 0,
            ..Default::default()
        };
        assert_eq!(
            s5(&parse_dsdt(&dsdt(&other))),
            Some(AmlObject::Package(vec![int(0), int(0), int(0), int(0)]))
        );
    }
}
