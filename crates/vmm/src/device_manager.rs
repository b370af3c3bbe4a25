//! Creates the legacy devices and puts them on the buses.

use std::io::Write;
use std::sync::{Arc, Mutex};

use kindling_devices::legacy::{
    AcpiPmDevice, BootTimer, CmosRtc, DebugExit, I8042Device, SerialDevice, StartTime,
    ACPI_PM_PORT, ACPI_PM_PORT_LEN, CMOS_RTC_PORT, CMOS_RTC_PORT_LEN, COM1_PORT, DEBUG_EXIT_PORT,
    I8042_PORT, I8042_PORT_LEN, SERIAL_PORT_LEN,
};
use kindling_devices::{Bus, EventFdLine, SharedDevice, VmExitHandle};
use kindling_memory::layout::{BOOT_TIMER_SIZE, BOOT_TIMER_START, I8042_IRQ, SERIAL_IRQ};
use kindling_vcpu::Vm;

use crate::VmmError;

/// The legacy devices of a microVM, shared with the buses.
#[derive(Debug, Clone)]
pub struct LegacyDevices {
    /// COM1.
    pub serial: Arc<Mutex<SerialDevice>>,
    /// The i8042 controller.
    pub i8042: Arc<Mutex<I8042Device>>,
    /// The boot timer.
    pub boot_timer: Arc<Mutex<BootTimer>>,
    /// The CMOS real-time clock.
    pub rtc: Arc<Mutex<CmosRtc>>,
    /// The ACPI sleep and reset registers.
    pub acpi_pm: Arc<Mutex<AcpiPmDevice>>,
}

pub(crate) fn irq_line(vm: &Vm, gsi: u32, device: &'static str) -> Result<EventFdLine, VmmError> {
    let line = EventFdLine::new(gsi).map_err(|source| VmmError::EventFd {
        what: format!("interrupt line of the {device}"),
        source,
    })?;
    vm.register_irqfd(line.event(), gsi)?;
    Ok(line)
}

pub(crate) fn insert(
    bus: &mut Bus,
    base: u64,
    len: u64,
    device: SharedDevice,
    name: &str,
) -> Result<(), VmmError> {
    bus.insert(base, len, device)
        .map_err(|source| VmmError::Bus {
            device: name.to_string(),
            source,
        })
}

impl LegacyDevices {
    /// Creates COM1 (IRQ 4) writing to `serial_out`, the i8042 (IRQ 1), the
    /// CMOS RTC, the ACPI PM registers and the boot timer, and wires their
    /// interrupts to the VM; `LegacyDevices::place` puts them on the
    /// buses.
    pub fn create(
        vm: &Vm,
        exit: &VmExitHandle,
        serial_out: Box<dyn Write + Send>,
        start_time: StartTime,
        boot_timer_log: Arc<Mutex<dyn Write + Send>>,
    ) -> Result<Self, VmmError> {
        let serial = Arc::new(Mutex::new(SerialDevice::new(
            irq_line(vm, SERIAL_IRQ, "serial port")?,
            serial_out,
        )));
        let i8042 = Arc::new(Mutex::new(I8042Device::new(
            Box::new(irq_line(vm, I8042_IRQ, "i8042")?),
            exit.clone(),
        )));
        let devices = Self {
            serial,
            i8042,
            boot_timer: Arc::new(Mutex::new(BootTimer::new(start_time, boot_timer_log))),
            rtc: Arc::new(Mutex::new(CmosRtc::new())),
            acpi_pm: Arc::new(Mutex::new(AcpiPmDevice::new(exit.clone()))),
        };
        Ok(devices)
    }

    /// Puts the devices on `pio` and `mmio` at their fixed places, and with
    /// `debug_exit` a debug-exit port (which has no state) for `exit`.
    pub(crate) fn place(
        &self,
        pio: &mut Bus,
        mmio: &mut Bus,
        exit: &VmExitHandle,
        debug_exit: bool,
    ) -> Result<(), VmmError> {
        insert(
            pio,
            COM1_PORT,
            SERIAL_PORT_LEN,
            self.serial.clone(),
            "serial port",
        )?;
        insert(pio, I8042_PORT, I8042_PORT_LEN, self.i8042.clone(), "i8042")?;
        if debug_exit {
            let device = Arc::new(Mutex::new(DebugExit::new(exit.clone())));
            insert(pio, DEBUG_EXIT_PORT, 1, device, "debug-exit port")?;
        }
        insert(
            pio,
            u64::from(ACPI_PM_PORT),
            u64::from(ACPI_PM_PORT_LEN),
            self.acpi_pm.clone(),
            "ACPI PM registers",
        )?;
        insert(
            pio,
            CMOS_RTC_PORT,
            CMOS_RTC_PORT_LEN,
            self.rtc.clone(),
            "CMOS RTC",
        )?;
        insert(
            mmio,
            BOOT_TIMER_START,
            BOOT_TIMER_SIZE,
            self.boot_timer.clone(),
            "boot timer",
        )
    }
}
