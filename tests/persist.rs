//! The persist contract on /dev/kvm: a real-mode guest saved mid-run and
//! restored into a fresh VM and vCPU keeps doing what it did; the VM's
//! irqchip, PIT and clock survive; and a whole VM's parts go through one
//! generic save → JSON → restore walk.

mod common;

use std::sync::{Arc, Mutex};

use common::{kvm_available, Capture, TempDir};
use kindling::devices::legacy::{
    AcpiPmDevice, BootTimer, BootTimerRestoreArgs, CmosRtc, DebugExit, I8042Device,
    I8042RestoreArgs, SerialDevice, SerialRestoreArgs, StartTime,
};
use kindling::devices::{BusDevice, EventFdLine, ExitReason, VmExitHandle};
use kindling::memory::{create_guest_memory, Backing, GuestRam, MemoryConfig, Persist};
use kindling::vcpu::x86_64::msrs::{to_msrs, MSR_IA32_TSC};
use kindling::vcpu::{
    Kvm, Vcpu, VcpuError, VcpuExitHandler, VcpuRestoreArgs, VcpuState, Vm, VmError, VmRestoreArgs,
    VmState,
};
use kindling_virtio::block::{Block, BlockConfig, BlockRestoreArgs};
use kindling_virtio::rng::Entropy;
use kindling_virtio::transport::{registers as reg, status};
use kindling_virtio::{features, MmioTransport, MmioTransportRestoreArgs, VirtioDevice};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

/// One part of a snapshot: save, through JSON (as a snapshot file would
/// hold it), restore with fresh host resources. Returns the restored part
/// and the JSON of the saved state.
fn walk<'a, P: Persist<'a>>(part: &P, args: P::ConstructorArgs) -> (P, String)
where
    P::Error: std::fmt::Debug,
{
    let state = part.save().expect("save");
    let json = serde_json::to_string(&state).unwrap();
    let back: P::State = serde_json::from_str(&json).unwrap();
    let restored = P::restore(args, &back).expect("restore");
    (restored, json)
}

/// The JSON of a part's state now.
fn json_of<'a, P: Persist<'a>>(part: &P) -> String
where
    P::Error: std::fmt::Debug,
{
    serde_json::to_string(&part.save().expect("save")).unwrap()
}

/// A vCPU state as JSON without the TSC, which runs on between a restore
/// and the next save.
fn without_tsc(mut state: VcpuState) -> String {
    for msr in &mut state.msrs {
        if msr.index == MSR_IA32_TSC {
            msr.data = 0;
        }
    }
    serde_json::to_string(&state).unwrap()
}

/// Whether `vcpu` holds the state saved as `json`, apart from the TSC.
fn holds_saved_state(vcpu: &Vcpu, json: &str) -> bool {
    without_tsc(vcpu.save().unwrap()) == without_tsc(serde_json::from_str(json).unwrap())
}

/// Records the guest's port writes to 0xf5.
#[derive(Default)]
struct Recorder(Mutex<Vec<u8>>);

impl Recorder {
    fn values(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

impl VcpuExitHandler for Recorder {
    fn pio_read(&self, _: u16, _: &mut [u8]) {}
    fn pio_write(&self, port: u16, data: &[u8]) {
        if port == 0xf5 {
            self.0.lock().unwrap().push(data[0]);
        }
    }
    fn mmio_read(&self, _: u64, _: &mut [u8]) {}
    fn mmio_write(&self, _: u64, _: &[u8]) {}
}

fn new_ram() -> GuestRam {
    create_guest_memory(&MemoryConfig {
        size_mib: 2,
        backing: Backing::Anonymous,
    })
    .unwrap()
}

/// A VM whose only vCPU runs 16-bit `code` at 0x1000 in real mode.
fn real_mode_vm(kvm: &Kvm, code: &[u8]) -> (Vm, Vcpu, GuestRam) {
    let ram = new_ram();
    ram.memory.write_slice(code, GuestAddress(0x1000)).unwrap();
    let vm = Vm::new(kvm, &ram.memory).unwrap();
    let vcpu = vm.create_vcpu(0).unwrap();
    vcpu.configure(kvm, 1, None).unwrap();
    let mut sregs = vcpu.fd().get_sregs().unwrap();
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.fd().set_sregs(&sregs).unwrap();
    let mut regs = vcpu.fd().get_regs().unwrap();
    regs.rip = 0x1000;
    regs.rflags = 2;
    vcpu.fd().set_regs(&regs).unwrap();
    (vm, vcpu, ram)
}

/// Runs until the guest has written `n` more values to port 0xf5, then
/// completes the exit (as a pause does) so that the vCPU can be saved.
fn run_until(vcpu: &mut Vcpu, recorder: &Recorder, n: usize) {
    let target = recorder.values().len() + n;
    while recorder.values().len() < target {
        assert!(vcpu.run_once(recorder).unwrap().is_none());
    }
    vcpu.fd_mut().set_kvm_immediate_exit(1);
    assert!(vcpu.run_once(recorder).unwrap().is_none());
}

/// Guest RAM for the restored VM: a copy of the saved VM's (a snapshot
/// file would hold it).
fn copy_ram(from: &GuestRam) -> GuestRam {
    let to = new_ram();
    for region in from.memory.iter() {
        let mut bytes = vec![0u8; region.len() as usize];
        from.memory
            .read_slice(&mut bytes, region.start_addr())
            .unwrap();
        to.memory.write_slice(&bytes, region.start_addr()).unwrap();
    }
    to
}

/// `inc ax; mov [0x2000], ax; out 0xf5, al; jmp $-8`: counts in AX and in
/// memory, reporting each count.
const COUNTER: &[u8] = &[0x40, 0xa3, 0x00, 0x20, 0xe6, 0xf5, 0xeb, 0xf8];

#[test]
fn a_guest_restored_into_a_fresh_vm_keeps_counting() {
    if !kvm_available("a_guest_restored_into_a_fresh_vm_keeps_counting") {
        return;
    }
    let kvm = Kvm::new().unwrap();
    let (vm, mut vcpu, ram) = real_mode_vm(&kvm, COUNTER);
    let recorder = Recorder::default();
    run_until(&mut vcpu, &recorder, 5);
    assert_eq!(recorder.values(), [1, 2, 3, 4, 5]);
    // Move the TSC far from where a new vCPU's starts.
    const TSC: u64 = 1 << 40;
    let tsc_entry = kvm_bindings::kvm_msr_entry {
        index: MSR_IA32_TSC,
        data: TSC,
        ..Default::default()
    };
    assert_eq!(vcpu.fd().set_msrs(&to_msrs(&[tsc_entry])).unwrap(), 1);

    let ram2 = copy_ram(&ram);
    let (vm2, _) = walk(
        &vm,
        VmRestoreArgs {
            kvm: &kvm,
            memory: &ram2.memory,
            options: *vm.options(),
        },
    );
    let (mut vcpu2, saved) = walk(&vcpu, VcpuRestoreArgs { vm: &vm2, id: 0 });
    // The restored vCPU holds the saved state (registers, LAPIC, MSRs...).
    assert!(holds_saved_state(&vcpu2, &saved));
    let tsc = |vcpu: &Vcpu| {
        let state = vcpu.save().unwrap();
        state
            .msrs
            .iter()
            .find(|m| m.index == MSR_IA32_TSC)
            .unwrap()
            .data
    };
    // The TSC goes on from the saved value, not from the new vCPU's zero.
    assert!(tsc(&vcpu2) >= TSC, "{:#x}", tsc(&vcpu2));

    // Both go on from 5: the original and the restored copy behave alike.
    let restored = Recorder::default();
    run_until(&mut vcpu2, &restored, 3);
    run_until(&mut vcpu, &recorder, 3);
    assert_eq!(restored.values(), [6, 7, 8]);
    assert_eq!(&recorder.values()[5..], [6, 7, 8]);
    let counter = |ram: &GuestRam| ram.memory.read_obj::<u16>(GuestAddress(0x2000)).unwrap();
    assert_eq!(counter(&ram2), 8);
    assert_eq!(counter(&ram), 8);

    // A state restored as another vCPU id is refused.
    let state = vcpu.save().unwrap();
    let err = Vcpu::restore(VcpuRestoreArgs { vm: &vm2, id: 1 }, &state).unwrap_err();
    assert!(
        matches!(err, VcpuError::InvalidState { id: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("belongs to vCPU 0"), "{err}");
}

/// Masks IRQs 0, 2, 4, 5 and 7 on the master PIC, programs PIT channel 0
/// (mode 2, count 0x5678), reports 0x56 on port 0xf5; then reads the
/// mask back and reports it.
const PIC_AND_PIT: &[u8] = &[
    0xb0, 0xb5, 0xe6, 0x21, // mov al, 0xb5; out 0x21, al
    0xb0, 0x34, 0xe6, 0x43, // mov al, 0x34; out 0x43, al
    0xb0, 0x78, 0xe6, 0x40, // mov al, 0x78; out 0x40, al
    0xb0, 0x56, 0xe6, 0x40, // mov al, 0x56; out 0x40, al
    0xe6, 0xf5, // out 0xf5, al
    0xe4, 0x21, 0xe6, 0xf5, // in al, 0x21; out 0xf5, al
    0xfa, 0xf4, // cli; hlt
];

/// The PIT state without the host timestamps KVM sets when it loads it.
fn pit_without_times(state: &VmState) -> String {
    let mut pit = state.pit;
    for channel in &mut pit.channels {
        channel.count_load_time = 0;
    }
    serde_json::to_string(&pit).unwrap()
}

#[test]
fn irqchip_pit_and_clock_survive_a_restore() {
    if !kvm_available("irqchip_pit_and_clock_survive_a_restore") {
        return;
    }
    let kvm = Kvm::new().unwrap();
    let (vm, mut vcpu, ram) = real_mode_vm(&kvm, PIC_AND_PIT);
    let recorder = Recorder::default();
    run_until(&mut vcpu, &recorder, 1);
    assert_eq!(recorder.values(), [0x56]);
    // Move the guest clock far from where a new VM's starts.
    const CLOCK: u64 = 1_000_000_000_000;
    vm.fd()
        .set_clock(&kvm_bindings::kvm_clock_data {
            clock: CLOCK,
            ..Default::default()
        })
        .unwrap();

    let saved = vm.save().unwrap();
    assert_eq!(saved.pic_master.chip_id, 0);
    assert_eq!(saved.pit.channels[0].count, 0x5678);
    assert_eq!(saved.pit.channels[0].mode, 2);
    let ram2 = copy_ram(&ram);
    let args = VmRestoreArgs {
        kvm: &kvm,
        memory: &ram2.memory,
        options: *vm.options(),
    };
    let (vm2, _) = walk(&vm, args);
    let mut again = vm2.save().unwrap();
    let mut saved_chips = saved.clone();
    // The restored PIT keeps running and may raise IRQ 0 (every 18 ms at
    // this count) between the restore and the save: the request register
    // of the master PIC and the IOAPIC's may then differ. Everything else
    // must be identical.
    for state in [&mut again, &mut saved_chips] {
        // SAFETY: chip 0 is a PIC (chip_id checked above) and chip 2 the
        // IOAPIC, so these are the union members KVM filled.
        unsafe {
            state.pic_master.chip.pic.irr &= !1;
            state.ioapic.chip.ioapic.irr &= !((1 << 2) | 1);
        }
    }
    for (a, b) in [
        (&again.pic_master, &saved_chips.pic_master),
        (&again.pic_slave, &saved_chips.pic_slave),
        (&again.ioapic, &saved_chips.ioapic),
    ] {
        assert_eq!(
            serde_json::to_string(a).unwrap(),
            serde_json::to_string(b).unwrap()
        );
    }
    assert_eq!(pit_without_times(&again), pit_without_times(&saved));
    // The clock goes on from the saved value (not from a new VM's zero).
    let fresh = Vm::new(&kvm, &new_ram().memory).unwrap();
    assert!(fresh.save().unwrap().clock.clock < CLOCK);
    assert!(again.clock.clock >= CLOCK);
    assert!(
        again.clock.clock < CLOCK + 60_000_000_000,
        "{}",
        again.clock.clock
    );

    // Behaviour: the restored guest reads the mask from the restored PIC.
    let (mut vcpu2, _) = walk(&vcpu, VcpuRestoreArgs { vm: &vm2, id: 0 });
    let restored = Recorder::default();
    run_until(&mut vcpu2, &restored, 1);
    assert_eq!(restored.values(), [0xb5]);
    run_until(&mut vcpu, &recorder, 1);
    assert_eq!(recorder.values(), [0x56, 0xb5]);

    // A state whose chips are swapped is refused before a VM is created.
    let mut bad = saved.clone();
    bad.ioapic.chip_id = 0;
    let err = Vm::restore(args, &bad).unwrap_err();
    assert!(matches!(err, VmError::ChipIdMismatch { .. }), "{err}");
}

fn wr(t: &mut MmioTransport, offset: u64, value: u32) {
    t.write(offset, &value.to_le_bytes());
}

/// Drives a transport to DRIVER_OK with one queue at 0x10000.
fn activate(t: &mut MmioTransport, queue_size: u32) {
    wr(t, reg::STATUS, status::ACKNOWLEDGE);
    wr(t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    wr(t, reg::DRIVER_FEATURES_SEL, 1);
    wr(t, reg::DRIVER_FEATURES, (features::VERSION_1 >> 32) as u32);
    let ok = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
    wr(t, reg::STATUS, ok);
    wr(t, reg::QUEUE_NUM, queue_size);
    wr(t, reg::QUEUE_DESC_LOW, 0x10000);
    wr(t, reg::QUEUE_DRIVER_LOW, 0x11000);
    wr(t, reg::QUEUE_DEVICE_LOW, 0x12000);
    wr(t, reg::QUEUE_READY, 1);
    wr(t, reg::STATUS, ok | status::DRIVER_OK);
    assert!(t.is_activated());
}

fn read32(t: &mut MmioTransport, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(offset, &mut b);
    u32::from_le_bytes(b)
}

/// A snapshot is a walk: every part of a VM (the VM, its vCPU, each legacy
/// device, each virtio device and its transport) through the same generic
/// save → JSON → restore, each restored part holding the saved state.
#[test]
fn a_whole_vm_is_a_walk_over_its_parts() {
    if !kvm_available("a_whole_vm_is_a_walk_over_its_parts") {
        return;
    }
    let kvm = Kvm::new().unwrap();
    let (vm, mut vcpu, ram) = real_mode_vm(&kvm, COUNTER);
    let recorder = Recorder::default();
    run_until(&mut vcpu, &recorder, 2);

    let exit = VmExitHandle::new().unwrap();
    let mut serial = SerialDevice::new(EventFdLine::new(4).unwrap(), Box::new(std::io::sink()));
    serial.write(7, &[0x42]);
    serial.enqueue_input(b"in").unwrap();
    let mut i8042 = I8042Device::new(Box::new(EventFdLine::new(1).unwrap()), exit.clone());
    i8042.write(4, &[0xaa]);
    let mut rtc = CmosRtc::new();
    rtc.write(0, &[0x30]);
    rtc.write(1, &[0x99]);
    let mut acpi = AcpiPmDevice::new(exit.clone());
    acpi.write(0, &[1 << 5]);
    let log: Arc<Mutex<dyn std::io::Write + Send>> = Arc::new(Mutex::new(Vec::<u8>::new()));
    let timer = BootTimer::new(StartTime::now(), log.clone());
    let debug_exit = DebugExit::new(exit.clone());

    let dir = TempDir::new("persist-walk");
    let image = dir.file("disk.img", &[7u8; 8192]);
    let mut block_config = BlockConfig::new(&image);
    block_config.serial = Some("walk".into());
    let block = Arc::new(Mutex::new(Block::new(&block_config).unwrap()));
    let mut block_t = MmioTransport::new(
        ram.memory.clone(),
        block.clone(),
        Arc::new(EventFdLine::new(5).unwrap()),
    )
    .unwrap();
    activate(&mut block_t, 64);
    let rng = Arc::new(Mutex::new(Entropy::new()));
    let mut rng_t = MmioTransport::new(
        ram.memory.clone(),
        rng.clone(),
        Arc::new(EventFdLine::new(6).unwrap()),
    )
    .unwrap();
    wr(&mut rng_t, reg::STATUS, status::ACKNOWLEDGE);

    // The walk. Host resources are all new: memory, VM, eventfds, writers.
    let ram2 = copy_ram(&ram);
    let (vm2, _) = walk(
        &vm,
        VmRestoreArgs {
            kvm: &kvm,
            memory: &ram2.memory,
            options: *vm.options(),
        },
    );
    let (mut vcpu2, vcpu_json) = walk(&vcpu, VcpuRestoreArgs { vm: &vm2, id: 0 });
    assert!(holds_saved_state(&vcpu2, &vcpu_json));
    let out = Capture::default();
    let (mut serial2, json) = walk(
        &serial,
        SerialRestoreArgs {
            irq: EventFdLine::new(4).unwrap(),
            out: Box::new(out.clone()),
        },
    );
    assert_eq!(json_of(&serial2), json);
    let exit2 = VmExitHandle::new().unwrap();
    let (mut i8042_2, json) = walk(
        &i8042,
        I8042RestoreArgs {
            irq: Box::new(EventFdLine::new(1).unwrap()),
            exit: exit2.clone(),
        },
    );
    assert_eq!(json_of(&i8042_2), json);
    let (mut rtc2, json) = walk(&rtc, ());
    assert_eq!(json_of(&rtc2), json);
    let (mut acpi2, json) = walk(&acpi, exit2.clone());
    assert_eq!(json_of(&acpi2), json);
    let (_timer2, _) = walk(
        &timer,
        BootTimerRestoreArgs {
            start: StartTime::now(),
            log,
        },
    );
    let (mut debug_exit2, _) = walk(&debug_exit, exit2.clone());
    // Each virtio device first (inactive), then its transport, which
    // reactivates it.
    // The restored VM gets its own copy of the disk: the original is
    // locked by the device that still has it open, as a clone's would be.
    let image2 = dir.file("disk-clone.img", &std::fs::read(&image).unwrap());
    let (block2, block_json) = walk(&*block.lock().unwrap(), BlockRestoreArgs::Path(image2));
    let block2 = Arc::new(Mutex::new(block2));
    let (mut block_t2, json) = walk(
        &block_t,
        MmioTransportRestoreArgs {
            memory: ram2.memory.clone(),
            device: block2.clone(),
            line: Arc::new(EventFdLine::new(5).unwrap()),
        },
    );
    assert_eq!(json_of(&block_t2), json);
    assert_eq!(json_of(&*block2.lock().unwrap()), block_json);
    let (rng2, _) = walk(&*rng.lock().unwrap(), ());
    let rng2 = Arc::new(Mutex::new(rng2));
    let (mut rng_t2, json) = walk(
        &rng_t,
        MmioTransportRestoreArgs {
            memory: ram2.memory.clone(),
            device: rng2.clone(),
            line: Arc::new(EventFdLine::new(6).unwrap()),
        },
    );
    assert_eq!(json_of(&rng_t2), json);

    // The restored parts behave as the saved ones.
    let restored = Recorder::default();
    run_until(&mut vcpu2, &restored, 1);
    assert_eq!(restored.values(), [3]);
    let byte = |d: &mut dyn BusDevice, offset| {
        let mut b = [0u8];
        d.read(offset, &mut b);
        b[0]
    };
    assert_eq!(byte(&mut serial2, 7), 0x42);
    assert_eq!(byte(&mut serial2, 0), b'i');
    serial2.write(0, b"o");
    assert_eq!(&*out.0.lock().unwrap(), b"o");
    assert_eq!(byte(&mut i8042_2, 0), 0x55, "self-test answer");
    rtc2.write(0, &[0x30]);
    assert_eq!(byte(&mut rtc2, 1), 0x99);
    assert_eq!(byte(&mut acpi2, 1), 0x80, "WAK_STS");
    assert!(block2.lock().unwrap().is_activated());
    assert_eq!(
        read32(&mut block_t2, reg::CONFIG),
        16,
        "capacity in sectors"
    );
    assert!(!rng2.lock().unwrap().is_activated());
    assert_eq!(read32(&mut rng_t2, reg::STATUS), status::ACKNOWLEDGE);
    debug_exit2.write(0, &[9]);
    assert_eq!(exit2.reason(), Some(ExitReason::Status(9)));
    assert_eq!(
        exit.reason(),
        None,
        "the saved VM's exit handle is untouched"
    );
}
