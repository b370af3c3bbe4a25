//! Boots the embedded test guest in each mode on /dev/kvm and checks what
//! it prints.

mod common;

use common::{kvm_available, run_test_guest, run_test_guest_with};
use kindling::memory::layout::{EBDA_START, HIGH_RAM_START, HIMEM_START, MIB, MMIO_GAP_START};
use kindling::vmm::{ExitReason, KernelSource};

const HELLO: &str = "Hello from the Kindling test guest!";

#[test]
fn hello_line_and_default_exit_status() {
    if !kvm_available("hello_line_and_default_exit_status") {
        return;
    }
    let run = run_test_guest("kindling.test=hello", 1, 128);
    assert_eq!(run.lines(), vec![HELLO], "serial: {}", run.serial);
    assert_eq!(run.reason, ExitReason::Status(0));
}

#[test]
fn kernel_from_owned_bytes() {
    if !kvm_available("kernel_from_owned_bytes") {
        return;
    }
    let run = run_test_guest_with("kindling.test=hello", 1, 64, |config| {
        config.kernel = KernelSource::Bytes(kindling_test_guest::TEST_GUEST_ELF.to_vec().into());
    });
    assert_eq!(run.lines(), vec![HELLO], "serial: {}", run.serial);
    assert_eq!(run.reason, ExitReason::Status(0));
}

#[test]
fn command_line_round_trips() {
    if !kvm_available("command_line_round_trips") {
        return;
    }
    let cmdline = "console=ttyS0 kindling.test=cmdline quoted=\"a b\" x=y";
    let run = run_test_guest(cmdline, 1, 64);
    assert_eq!(
        run.lines(),
        vec![format!("cmdline: {cmdline}")],
        "serial: {}",
        run.serial
    );
}

#[test]
fn virtio_devices_are_announced_before_init_arguments() {
    if !kvm_available("virtio_devices_are_announced_before_init_arguments") {
        return;
    }
    let run = run_test_guest_with("kindling.test=cmdline -- init-arg", 1, 64, |config| {
        config.entropy = true;
    });
    let lines = run.lines();
    assert_eq!(lines.len(), 1, "serial: {}", run.serial);
    let cmdline = lines[0].trim_start_matches("cmdline: ");
    let (kernel_args, init_args) = cmdline.split_once(" -- ").expect("init arguments");
    assert!(
        kernel_args.starts_with("kindling.test=cmdline virtio_mmio.device=4K@0x"),
        "{cmdline}"
    );
    assert_eq!(init_args, "init-arg");
}

/// Parses the guest's `e820:` lines into `(addr, size, type)`.
fn parse_e820(serial: &str) -> Vec<(u64, u64, u32)> {
    let mut lines = serial.lines().filter(|l| l.starts_with("e820: "));
    let header = lines.next().expect("e820 header line");
    let count: usize = header
        .trim_start_matches("e820: ")
        .trim_end_matches(" entries")
        .parse()
        .expect("e820 count");
    let entries: Vec<_> = lines
        .map(|l| {
            let mut fields = l.trim_start_matches("e820: ").split(' ');
            let mut hex = |key: &str| {
                let f = fields.next().expect(key);
                u64::from_str_radix(f.trim_start_matches(key).trim_start_matches("0x"), 16)
                    .expect(key)
            };
            let addr = hex("addr=");
            let size = hex("size=");
            let ty: u32 = fields
                .next()
                .expect("type")
                .trim_start_matches("type=")
                .parse()
                .expect("type");
            (addr, size, ty)
        })
        .collect();
    assert_eq!(entries.len(), count, "{serial}");
    entries
}

/// The usable RAM the guest must see for `mib` MiB: the layout's RAM
/// ranges, minus the EBDA-to-1-MiB hole.
fn expected_usable(mib: u64) -> Vec<(u64, u64)> {
    let size = mib * MIB;
    let low_end = size.min(MMIO_GAP_START);
    let mut ranges = vec![(0, EBDA_START), (HIMEM_START, low_end - HIMEM_START)];
    if size > MMIO_GAP_START {
        ranges.push((HIGH_RAM_START, size - MMIO_GAP_START));
    }
    ranges
}

#[test]
fn e820_matches_the_layout_for_several_sizes() {
    if !kvm_available("e820_matches_the_layout_for_several_sizes") {
        return;
    }
    for mib in [16, 128, 3 * 1024, 5 * 1024] {
        let run = run_test_guest("kindling.test=e820", 1, mib);
        let usable: Vec<(u64, u64)> = parse_e820(&run.serial)
            .into_iter()
            .filter(|&(_, _, ty)| ty == 1)
            .map(|(a, s, _)| (a, s))
            .collect();
        assert_eq!(usable, expected_usable(mib), "{mib} MiB: {}", run.serial);
        assert_eq!(run.reason, ExitReason::Status(0));
    }
}

#[test]
fn every_vcpu_answers() {
    if !kvm_available("every_vcpu_answers") {
        return;
    }
    for cpus in [1u8, 2, 4] {
        let run = run_test_guest("kindling.test=smp", cpus, 128);
        assert_eq!(
            run.lines(),
            vec![format!("smp: {cpus} of {cpus} cpus online")],
            "{cpus} vCPUs: {}",
            run.serial
        );
    }
}

#[test]
fn boot_timer_logs_the_boot_time() {
    if !kvm_available("boot_timer_logs_the_boot_time") {
        return;
    }
    let run = run_test_guest("kindling.test=hello,timer", 1, 128);
    assert_eq!(run.lines(), vec![HELLO, "boot-timer: signalled"]);
    assert!(
        run.boot_timer_log.starts_with("Guest-boot-time = "),
        "log: {:?}",
        run.boot_timer_log
    );
}

#[test]
fn exit_status_comes_back() {
    if !kvm_available("exit_status_comes_back") {
        return;
    }
    let run = run_test_guest("kindling.test=hello kindling.exit=42", 1, 128);
    assert_eq!(run.reason, ExitReason::Status(42));
    let run = run_test_guest("kindling.test=hello kindling.exit=reset", 1, 128);
    assert_eq!(run.reason, ExitReason::Reset);
    assert_eq!(run.lines(), vec![HELLO]);
}

#[test]
fn unknown_action_is_reported() {
    if !kvm_available("unknown_action_is_reported") {
        return;
    }
    let run = run_test_guest("kindling.test=hello,bogus", 1, 128);
    assert_eq!(run.lines(), vec![HELLO, "unknown action: bogus"]);
    assert_eq!(run.reason, ExitReason::Status(2));
}

#[test]
fn actions_run_in_order() {
    if !kvm_available("actions_run_in_order") {
        return;
    }
    let run = run_test_guest("kindling.test=smp,hello,cmdline", 2, 128);
    let lines = run.lines();
    assert_eq!(lines.len(), 3, "{}", run.serial);
    assert_eq!(lines[0], "smp: 2 of 2 cpus online");
    assert_eq!(lines[1], HELLO);
    assert!(lines[2].starts_with("cmdline: kindling.test=smp"));
}

#[test]
fn without_the_debug_exit_port_the_guest_cannot_choose_the_status() {
    if !kvm_available("without_the_debug_exit_port_the_guest_cannot_choose_the_status") {
        return;
    }
    let run = common::run_test_guest_with("kindling.test=hello kindling.exit=7", 1, 128, |c| {
        c.debug_exit = false;
    });
    assert_eq!(run.reason, ExitReason::Reset, "{}", run.serial);
    assert_eq!(
        run.lines(),
        vec![
            HELLO,
            "exit: no debug-exit device at port 0xf4, status 7 lost; resetting"
        ]
    );
}
