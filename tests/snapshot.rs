//! Snapshots of whole microVMs through the front door: the test guest's
//! `count` action is snapshotted with the library, restored (in a new
//! `microvm` process, or in this one) and must go on exactly where it was.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{kvm_available, microvm_binary, wait_until, Capture, TempDir};
use kindling::vmm::snapshot::{
    apply_diff_snapshot, decode_state, encode_state, load_state, DiskOverride, DriveRef,
    MemBackend, MicrovmState, RestoreConfig, SnapshotError, SnapshotFormatError, SnapshotKind,
    SnapshotRequest,
};
use kindling::vmm::{
    DiskConfig, KernelSource, RunningVmm, SeccompPolicy, SerialConfig, VmConfig, VmRunState, Vmm,
    VmmError,
};
use vm_memory::{Bytes, GuestAddress};

const DISK_SECTORS: u64 = 64;

/// A running test guest and what it printed so far.
struct Guest {
    running: RunningVmm,
    serial: Capture,
}

fn start_guest(cmdline: &str, disk: Option<&Path>, track_dirty_pages: bool) -> Guest {
    let serial = Capture::default();
    let config = VmConfig {
        kernel: KernelSource::Bytes(kindling_test_guest::TEST_GUEST_ELF.into()),
        cmdline: cmdline.into(),
        memory_mib: 128,
        disks: disk
            .map(|path| {
                // Parsed, as --disk is: the defaults for every other option.
                vec![path.to_str().unwrap().parse::<DiskConfig>().unwrap()]
            })
            .unwrap_or_default(),
        track_dirty_pages,
        serial: SerialConfig::Writer(Box::new(serial.clone())),
        boot_timer_log: Arc::new(Mutex::new(std::io::sink())),
        // Snapshots read vCPU state on the vCPU threads, under their filter.
        seccomp: SeccompPolicy::Builtin,
        debug_exit: true,
        ..VmConfig::default()
    };
    let running = Vmm::build(config).unwrap().start().unwrap();
    Guest { running, serial }
}

/// The numbers of the complete `count: N` lines of `text` (a last line
/// without its newline, cut by a snapshot, is left out).
fn counts(text: &str) -> Vec<u64> {
    let complete = text.rfind('\n').map_or("", |end| &text[..=end]);
    complete
        .lines()
        .filter_map(|l| l.strip_prefix("count: "))
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// Checks `text` is exactly `count: 0` ... `count: M` (a last partial line
/// aside) and returns M.
fn check_sequence(text: &str) -> u64 {
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    let mut last = None;
    for (i, line) in complete.lines().enumerate() {
        assert_eq!(
            line,
            format!("count: {i}"),
            "line {i} of the joined output breaks the sequence:\n{text}"
        );
        last = Some(i as u64);
    }
    last.expect("no complete count line")
}

fn wait_for_count(guest: &Guest, n: u64) {
    wait_until(&format!("count: {n}"), || {
        counts(&guest.serial.text()).last().is_some_and(|&c| c >= n)
    });
}

fn snapshot(guest: &Guest, kind: SnapshotKind, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let state_path = dir.join(format!("{name}.state"));
    let mem_path = dir.join(format!("{name}.mem"));
    guest.running.pause().unwrap();
    let info = guest
        .running
        .snapshot(&SnapshotRequest {
            kind,
            state_path: state_path.clone(),
            mem_path: mem_path.clone(),
        })
        .unwrap();
    assert_eq!(info.kind, kind);
    assert_eq!(info.mem_file_size, 128 << 20);
    assert!(info.pages_written > 0);
    (state_path, mem_path)
}

/// A `microvm --restore` process whose serial lines arrive on a channel.
struct Restored {
    child: Child,
    lines: mpsc::Receiver<String>,
    text: String,
}

impl Restored {
    fn spawn(state: &Path, mem: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(microvm_binary())
            .arg("--restore")
            .arg(state)
            .arg("--restore-mem")
            .arg(mem)
            .arg("--debug-exit")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Self {
            child,
            lines,
            text: String::new(),
        }
    }

    /// Reads output until a `count: N` line with N >= `n`.
    fn until_count(&mut self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while counts(&self.text).last().is_none_or(|&c| c < n) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.text.push_str(&line),
                Err(_) => {
                    let _ = self.child.kill();
                    let out = self.child.wait_with_output_stderr();
                    panic!(
                        "no count: {n} from the restored VM; stdout:\n{}\nstderr:\n{out}",
                        self.text
                    );
                }
            }
        }
    }

    fn kill(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.text
    }
}

trait StderrText {
    fn wait_with_output_stderr(&mut self) -> String;
}

impl StderrText for Child {
    fn wait_with_output_stderr(&mut self) -> String {
        let mut text = String::new();
        if let Some(mut err) = self.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut err, &mut text);
        }
        let _ = self.wait();
        text
    }
}

fn disk(dir: &TempDir) -> PathBuf {
    dir.file("disk.img", &vec![0xeeu8; (DISK_SECTORS * 512) as usize])
}

#[test]
fn a_counting_guest_restored_in_a_new_process_goes_on_where_it_was() {
    if !kvm_available("a_counting_guest_restored_in_a_new_process_goes_on_where_it_was") {
        return;
    }
    let dir = TempDir::new("snap-count");
    let disk = disk(&dir);
    let guest = start_guest("kindling.test=count:0", Some(&disk), false);
    wait_for_count(&guest, 20);
    let (state, mem) = snapshot(&guest, SnapshotKind::Full, &dir.0, "full");
    let before = guest.serial.text();
    guest.running.stop();
    guest.running.wait().unwrap();
    let saved = *counts(&before).last().unwrap();

    // A small state file next to a sparse memory file.
    assert!(std::fs::metadata(&state).unwrap().len() < 256 << 10);
    let state_file = load_state(&state).unwrap();
    assert_eq!(state_file.vcpus.len(), 1);
    assert_eq!(state_file.virtio.len(), 1);

    let mut restored = Restored::spawn(&state, &mem, &[]);
    restored.until_count(saved + 80);
    let after = restored.kill();
    // The output before the snapshot and after the restore joins into one
    // unbroken count (a line cut by the snapshot included).
    let joined = format!("{before}{after}");
    let last = check_sequence(&joined);
    assert!(last >= saved + 80);

    // The disk holds what the guest wrote, before and after the restore:
    // sector N % 64 filled with N & 0xff for the last 63 lines.
    let image = std::fs::read(&disk).unwrap();
    for n in last - 62..=last {
        let sector = (n % DISK_SECTORS) as usize;
        let bytes = &image[sector * 512..(sector + 1) * 512];
        assert!(
            bytes.iter().all(|&b| b == (n & 0xff) as u8),
            "sector {sector} (count {n}) holds {:#x}",
            bytes[0]
        );
    }
}

#[test]
fn a_diff_snapshot_layered_on_its_base_restores_the_later_state() {
    if !kvm_available("a_diff_snapshot_layered_on_its_base_restores_the_later_state") {
        return;
    }
    let dir = TempDir::new("snap-diff");
    let guest = start_guest("kindling.test=count", None, true);
    // Without a base a diff is refused.
    wait_for_count(&guest, 5);
    guest.running.pause().unwrap();
    let err = guest
        .running
        .snapshot(&SnapshotRequest {
            kind: SnapshotKind::Diff,
            state_path: dir.0.join("x.state"),
            mem_path: dir.0.join("x.mem"),
        })
        .unwrap_err();
    assert!(
        matches!(err, VmmError::Snapshot(SnapshotError::NoDiffBase)),
        "{err}"
    );
    let (base_state, base_mem) = snapshot(&guest, SnapshotKind::Full, &dir.0, "base");
    let base_text = guest.serial.text();
    let at_base = *counts(&base_text).last().unwrap();
    guest.running.resume().unwrap();
    wait_for_count(&guest, at_base + 30);
    let (diff_state, diff_mem) = snapshot(&guest, SnapshotKind::Diff, &dir.0, "diff");
    let before = guest.serial.text();
    let at_diff = *counts(&before).last().unwrap();
    guest.running.stop();
    guest.running.wait().unwrap();

    // The diff is much smaller than the base.
    let diff = load_state(&diff_state).unwrap();
    assert_eq!(diff.memory_file.kind, SnapshotKind::Diff);
    // The base alone restores the earlier state.
    let mut early = Restored::spawn(&base_state, &base_mem, &[]);
    early.until_count(at_base + 1);
    let early_text = early.kill();
    assert!(check_sequence(&format!("{base_text}{early_text}")) > at_base);

    // Base + diff restores the later one.
    let merged = dir.0.join("merged.mem");
    std::fs::copy(&base_mem, &merged).unwrap();
    assert!(apply_diff_snapshot(&diff_state, &merged, &diff_mem).unwrap() > 0);
    let mut late = Restored::spawn(&diff_state, &merged, &[]);
    late.until_count(at_diff + 20);
    let joined = format!("{before}{}", late.kill());
    assert!(check_sequence(&joined) >= at_diff + 20);

    // A full snapshot's state is not a diff to apply.
    let err = apply_diff_snapshot(&base_state, &merged, &diff_mem).unwrap_err();
    assert!(err.to_string().contains("not of a diff"), "{err}");
}

/// Restores `state` + `mem` in this process with its serial captured.
fn restore_here(state: &Path, mem: &Path, resume: bool) -> Guest {
    let serial = Capture::default();
    let config = RestoreConfig {
        serial: SerialConfig::Writer(Box::new(serial.clone())),
        resume,
        boot_timer_log: Arc::new(Mutex::new(std::io::sink())),
        seccomp: SeccompPolicy::Builtin,
        debug_exit: true,
        ..RestoreConfig::new(state, MemBackend::File(mem.to_path_buf()))
    };
    let running = Vmm::restore(config).unwrap().start().unwrap();
    Guest { running, serial }
}

#[test]
fn clones_of_one_snapshot_run_at_once_each_with_its_own_memory() {
    if !kvm_available("clones_of_one_snapshot_run_at_once_each_with_its_own_memory") {
        return;
    }
    let dir = TempDir::new("snap-clones");
    let guest = start_guest("kindling.test=count", None, false);
    wait_for_count(&guest, 10);
    let (state, mem) = snapshot(&guest, SnapshotKind::Full, &dir.0, "full");
    let before = guest.serial.text();
    let saved = *counts(&before).last().unwrap();
    guest.running.stop();
    guest.running.wait().unwrap();
    let pristine = std::fs::read(&mem).unwrap();

    let clones: Vec<Guest> = (0..3).map(|_| restore_here(&state, &mem, true)).collect();
    for clone in &clones {
        wait_for_count(clone, saved + 20);
        // Each goes on from the snapshot, unbroken.
        assert!(check_sequence(&format!("{before}{}", clone.serial.text())) >= saved + 20);
    }
    // A write into one clone's memory is seen by no other, nor the file.
    let marker = GuestAddress(100 << 20);
    clones[0]
        .running
        .memory()
        .write_obj(0x5eed_u64, marker)
        .unwrap();
    assert_eq!(
        clones[0].running.memory().read_obj::<u64>(marker).unwrap(),
        0x5eed
    );
    for clone in &clones[1..] {
        assert_eq!(clone.running.memory().read_obj::<u64>(marker).unwrap(), 0);
    }
    for clone in clones {
        clone.running.stop();
        clone.running.wait().unwrap();
    }
    assert!(
        std::fs::read(&mem).unwrap() == pristine,
        "a clone wrote the memory file"
    );
}

#[test]
fn a_vm_restored_paused_waits_for_resume_and_can_be_snapshotted_again() {
    if !kvm_available("a_vm_restored_paused_waits_for_resume_and_can_be_snapshotted_again") {
        return;
    }
    let dir = TempDir::new("snap-paused");
    let guest = start_guest("kindling.test=count", None, true);
    wait_for_count(&guest, 5);
    let (state, mem) = snapshot(&guest, SnapshotKind::Full, &dir.0, "first");
    let before = guest.serial.text();
    let saved = *counts(&before).last().unwrap();
    guest.running.stop();
    guest.running.wait().unwrap();

    let restored = restore_here(&state, &mem, false);
    assert_eq!(restored.running.state(), VmRunState::Paused);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        restored.serial.text().is_empty(),
        "a VM restored paused ran: {}",
        restored.serial.text()
    );
    restored.running.resume().unwrap();
    wait_for_count(&restored, saved + 10);

    // A snapshot of the restored VM (the memory file is its base: a diff
    // works at once), then a restore of that.
    let (diff_state, diff_mem) = snapshot(&restored, SnapshotKind::Diff, &dir.0, "second");
    let (state2, mem2) = snapshot(&restored, SnapshotKind::Full, &dir.0, "third");
    let second_text = format!("{before}{}", restored.serial.text());
    let at_second = *counts(&second_text).last().unwrap();
    restored.running.stop();
    restored.running.wait().unwrap();
    let again = restore_here(&state2, &mem2, true);
    wait_for_count(&again, at_second + 5);
    assert!(check_sequence(&format!("{second_text}{}", again.serial.text())) >= at_second + 5);
    again.running.stop();
    again.running.wait().unwrap();
    // The diff applies onto the first memory file.
    let merged = dir.0.join("merged.mem");
    std::fs::copy(&mem, &merged).unwrap();
    apply_diff_snapshot(&diff_state, &merged, &diff_mem).unwrap();
    let from_diff = restore_here(&diff_state, &merged, true);
    wait_for_count(&from_diff, at_second + 5);
    from_diff.running.stop();
    from_diff.running.wait().unwrap();
}

#[test]
fn snapshots_need_a_paused_vm_and_the_right_set_up() {
    if !kvm_available("snapshots_need_a_paused_vm_and_the_right_set_up") {
        return;
    }
    let dir = TempDir::new("snap-refusals");
    let guest = start_guest("kindling.test=count", None, false);
    wait_for_count(&guest, 1);
    let request = |kind| SnapshotRequest {
        kind,
        state_path: dir.0.join("s.state"),
        mem_path: dir.0.join("s.mem"),
    };
    let err = guest
        .running
        .snapshot(&request(SnapshotKind::Full))
        .unwrap_err();
    assert!(err.to_string().contains("pause it first"), "{err}");
    guest.running.pause().unwrap();
    let err = guest
        .running
        .handle()
        .snapshot(&request(SnapshotKind::Diff))
        .unwrap_err();
    assert!(
        matches!(err, VmmError::Snapshot(SnapshotError::DirtyTrackingOff)),
        "{err}"
    );
    // A memory file that cannot be created: a clear error, the VM stays
    // paused and can go on.
    let err = guest
        .running
        .snapshot(&SnapshotRequest {
            kind: SnapshotKind::Full,
            state_path: dir.0.join("s.state"),
            mem_path: dir.0.join("no/such/dir/s.mem"),
        })
        .unwrap_err();
    assert!(err.to_string().contains("memory file"), "{err}");
    assert!(!dir.0.join("s.state").exists());
    assert_eq!(guest.running.state(), VmRunState::Paused);
    guest.running.resume().unwrap();
    let now = *counts(&guest.serial.text()).last().unwrap();
    wait_for_count(&guest, now + 3);
    guest.running.stop();
    guest.running.wait().unwrap();

    // A device the VMM does not know.
    let mut builder = kindling::vmm::VmmBuilder::new(VmConfig {
        kernel: KernelSource::Bytes(kindling_test_guest::TEST_GUEST_ELF.into()),
        cmdline: "kindling.test=count".into(),
        serial: SerialConfig::Off,
        boot_timer_log: Arc::new(Mutex::new(std::io::sink())),
        debug_exit: true,
        ..VmConfig::default()
    })
    .unwrap();
    builder
        .add_virtio_device(
            "mystery",
            kindling::virtio::block::Block::new(&kindling::virtio::block::BlockConfig::new(disk(
                &dir,
            )))
            .unwrap(),
        )
        .unwrap();
    let running = builder.build().unwrap().start().unwrap();
    running.pause().unwrap();
    let err = running.snapshot(&request(SnapshotKind::Full)).unwrap_err();
    assert!(
        err.to_string()
            .contains("'mystery' was added by the user and cannot be saved"),
        "{err}"
    );
    running.stop();
    running.wait().unwrap();
}

/// A good snapshot of the counting guest with a disk, for the hostile
/// file tests.
fn good_snapshot(dir: &TempDir) -> (PathBuf, PathBuf, PathBuf) {
    let disk = disk(dir);
    let guest = start_guest("kindling.test=count:0", Some(&disk), false);
    wait_for_count(&guest, 3);
    let (state, mem) = snapshot(&guest, SnapshotKind::Full, &dir.0, "good");
    guest.running.stop();
    guest.running.wait().unwrap();
    (state, mem, disk)
}

fn restore_err(state: &Path, mem: &Path, overrides: Vec<DiskOverride>) -> VmmError {
    let config = RestoreConfig {
        serial: SerialConfig::Off,
        disk_overrides: overrides,
        debug_exit: true,
        ..RestoreConfig::new(state, MemBackend::File(mem.to_path_buf()))
    };
    Vmm::restore(config).expect_err("a hostile snapshot was restored")
}

/// Decodes `state`, lets `edit` change it, writes it back as a valid
/// container at `out`.
fn edited(state: &Path, out: &Path, edit: impl FnOnce(&mut MicrovmState)) -> PathBuf {
    let mut decoded: MicrovmState = decode_state(&std::fs::read(state).unwrap()).unwrap();
    edit(&mut decoded);
    std::fs::write(out, encode_state(&decoded).unwrap()).unwrap();
    out.to_path_buf()
}

#[test]
fn hostile_snapshot_files_are_clear_errors() {
    if !kvm_available("hostile_snapshot_files_are_clear_errors") {
        return;
    }
    let dir = TempDir::new("snap-hostile");
    let (state, mem, _disk) = good_snapshot(&dir);
    let good = std::fs::read(&state).unwrap();
    let bad = dir.0.join("bad.state");
    let format = |bytes: &[u8]| {
        std::fs::write(&bad, bytes).unwrap();
        match restore_err(&bad, &mem, vec![]) {
            VmmError::Snapshot(SnapshotError::Format { source, .. }) => source,
            other => panic!("not a format error: {other}"),
        }
    };
    // Truncated anywhere.
    for cut in [0, 10, 30, good.len() / 2, good.len() - 1] {
        let err = format(&good[..cut]);
        assert!(
            matches!(err, SnapshotFormatError::Truncated { .. }),
            "{cut}: {err}"
        );
    }
    let mut b = good.clone();
    b[..8].copy_from_slice(b"NOTASNAP");
    assert!(matches!(format(&b), SnapshotFormatError::BadMagic { .. }));
    let mut b = good.clone();
    b[8] = 99;
    assert!(matches!(
        format(&b),
        SnapshotFormatError::UnsupportedVersion { found: 99 }
    ));
    let mut b = good.clone();
    let mid = b.len() / 2;
    b[mid] ^= 0x40;
    assert!(matches!(format(&b), SnapshotFormatError::Checksum { .. }));

    // A memory file shorter than the state says.
    let short = dir.0.join("short.mem");
    std::fs::write(&short, vec![0u8; 1 << 20]).unwrap();
    let err = restore_err(&state, &short, vec![]);
    assert!(
        err.to_string()
            .contains("smaller than the 134217728 bytes of guest RAM"),
        "{err}"
    );
    let err = restore_err(&state, &dir.0.join("missing.mem"), vec![]);
    assert!(
        err.to_string().contains("cannot open the memory file"),
        "{err}"
    );

    // A CPU lacking a feature the guest was shown: set a leaf 7 bit the
    // host does not offer.
    let kvm = kindling::vcpu::Kvm::new().unwrap();
    let host = kvm.supported_cpuid().as_slice().to_vec();
    let leaf7 = host
        .iter()
        .find(|e| e.function == 7 && e.index == 0)
        .expect("leaf 7");
    let native = std::arch::x86_64::__cpuid_count(7, 0);
    let missing_bit = (0..32)
        .map(|b| 1u32 << b)
        .find(|bit| (leaf7.ecx | native.ecx) & bit == 0)
        .expect("a leaf 7 ECX bit the host lacks");
    let cpu = edited(&state, &dir.0.join("cpu.state"), |s| {
        for e in &mut s.vcpus[0].cpuid {
            if e.function == 7 && e.index == 0 {
                e.ecx |= missing_bit;
            }
        }
    });
    let err = restore_err(&cpu, &mem, vec![]);
    assert!(
        matches!(err, VmmError::Snapshot(SnapshotError::Cpu { id: 0, .. })),
        "{err}"
    );
    assert!(err.to_string().contains("lacks features"), "{err}");

    // States that contradict each other.
    let queue = edited(&state, &dir.0.join("queue.state"), |s| {
        let q = &mut s.virtio[0].transport.queues[0];
        q.config.size = q.config.max_size * 2;
    });
    let err = restore_err(&queue, &mem, vec![]);
    assert!(err.to_string().contains("disk 0"), "{err}");
    let index = edited(&state, &dir.0.join("index.state"), |s| {
        let q = &mut s.virtio[0].transport.queues[0];
        q.next_avail = q.config.size.wrapping_add(7).wrapping_mul(1000);
        q.next_used = 3;
    });
    let err = restore_err(&index, &mem, vec![]);
    assert!(err.to_string().contains("more than its size"), "{err}");
    let vcpus = edited(&state, &dir.0.join("vcpus.state"), |s| {
        s.vcpus.clear();
    });
    let err = restore_err(&vcpus, &mem, vec![]);
    assert!(err.to_string().contains("0 vCPU states"), "{err}");
    let ids = edited(&state, &dir.0.join("ids.state"), |s| {
        s.vcpus[0].id = 3;
    });
    let err = restore_err(&ids, &mem, vec![]);
    assert!(err.to_string().contains("belongs to vCPU 3"), "{err}");
    let layout = edited(&state, &dir.0.join("layout.state"), |s| {
        s.virtio[0].base += 0x1000;
    });
    let err = restore_err(&layout, &mem, vec![]);
    assert!(
        matches!(err, VmmError::Snapshot(SnapshotError::Layout { .. })),
        "{err}"
    );
    let size = edited(&state, &dir.0.join("size.state"), |s| {
        s.memory.size_mib = 256;
    });
    let err = restore_err(&size, &mem, vec![]);
    assert!(err.to_string().contains("smaller than"), "{err}");
    let kind = edited(&state, &dir.0.join("kind.state"), |s| {
        s.virtio[0].transport.device_id = 4;
    });
    let err = restore_err(&kind, &mem, vec![]);
    assert!(err.to_string().contains("is a block device"), "{err}");

    // Drive overrides: an unknown drive, a disk of another size.
    let err = restore_err(
        &state,
        &mem,
        vec![DiskOverride {
            drive: DriveRef::Index(1),
            path: "x.img".into(),
        }],
    );
    assert!(err.to_string().contains("names no disk"), "{err}");
    let small = dir.file("small.img", &[0u8; 4096]);
    let err = restore_err(
        &state,
        &mem,
        vec![DiskOverride {
            drive: DriveRef::Id("disk 0".into()),
            path: small,
        }],
    );
    assert!(err.to_string().contains("disk 0"), "{err}");

    // The untouched snapshot still restores.
    let ok = restore_here(&state, &mem, true);
    wait_for_count(&ok, 5);
    ok.running.stop();
    ok.running.wait().unwrap();
}

#[test]
fn the_microvm_binary_reports_a_bad_snapshot_in_one_line() {
    let dir = TempDir::new("snap-cli");
    let state = dir.file("bad.state", b"not a snapshot");
    let mem = dir.file("bad.mem", b"");
    let out = Command::new(microvm_binary())
        .arg("--restore")
        .arg(&state)
        .arg("--restore-mem")
        .arg(&mem)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("truncated"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // --restore without its memory file is a usage error.
    let out = Command::new(microvm_binary())
        .arg("--restore")
        .arg(&state)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn a_restore_through_userfaultfd_is_served_by_a_handler_thread() {
    if !kvm_available("a_restore_through_userfaultfd_is_served_by_a_handler_thread") {
        return;
    }
    let dir = TempDir::new("snap-uffd");
    let guest = start_guest("kindling.test=count", None, true);
    wait_for_count(&guest, 5);
    let (state, mem) = snapshot(&guest, SnapshotKind::Full, &dir.0, "full");
    let before = guest.serial.text();
    let saved = *counts(&before).last().unwrap();
    guest.running.stop();
    guest.running.wait().unwrap();

    let socket = dir.0.join("uffd.sock");
    let handler = kindling::vmm::snapshot::uffd::spawn_file_handler(
        &socket,
        std::fs::File::open(&mem).unwrap(),
    )
    .unwrap();
    let serial = Capture::default();
    let config = RestoreConfig {
        serial: SerialConfig::Writer(Box::new(serial.clone())),
        boot_timer_log: Arc::new(Mutex::new(std::io::sink())),
        seccomp: SeccompPolicy::Builtin,
        debug_exit: true,
        ..RestoreConfig::new(&state, MemBackend::Uffd(socket.clone()))
    };
    let restored = Guest {
        running: Vmm::restore(config).unwrap().start().unwrap(),
        serial,
    };
    wait_for_count(&restored, saved + 10);
    assert!(check_sequence(&format!("{before}{}", restored.serial.text())) >= saved + 10);
    // Lazily filled memory: a full snapshot is refused, a diff works.
    restored.running.pause().unwrap();
    let err = restored
        .running
        .snapshot(&SnapshotRequest {
            kind: SnapshotKind::Full,
            state_path: dir.0.join("again.state"),
            mem_path: dir.0.join("again.mem"),
        })
        .unwrap_err();
    assert!(
        matches!(err, VmmError::Snapshot(SnapshotError::LazyMemory)),
        "{err}"
    );
    let (diff_state, diff_mem) = snapshot(&restored, SnapshotKind::Diff, &dir.0, "diff");
    restored.running.stop();
    restored.running.wait().unwrap();
    // The handler served the pages the guest touched, then saw the VMM go.
    let served = handler.join().unwrap().unwrap();
    assert!(served > 0 && served < 128 * 256, "{served} pages");
    let merged = dir.0.join("merged.mem");
    std::fs::copy(&mem, &merged).unwrap();
    apply_diff_snapshot(&diff_state, &merged, &diff_mem).unwrap();
    let from_diff = restore_here(&diff_state, &merged, true);
    wait_for_count(&from_diff, saved + 15);
    from_diff.running.stop();
    from_diff.running.wait().unwrap();
}

#[test]
fn a_restore_through_userfaultfd_is_served_by_a_handler_process() {
    if !kvm_available("a_restore_through_userfaultfd_is_served_by_a_handler_process") {
        return;
    }
    let dir = TempDir::new("snap-uffd-proc");
    let guest = start_guest("kindling.test=count", None, false);
    wait_for_count(&guest, 5);
    let (state, mem) = snapshot(&guest, SnapshotKind::Full, &dir.0, "full");
    let saved = *counts(&guest.serial.text()).last().unwrap();
    guest.running.stop();
    guest.running.wait().unwrap();

    let socket = dir.0.join("uffd.sock");
    let handler = Command::new(common::example_binary("uffd_handler"))
        .arg(&socket)
        .arg(&mem)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the handler's socket", || socket.exists());
    let serial = Capture::default();
    let config = RestoreConfig {
        serial: SerialConfig::Writer(Box::new(serial.clone())),
        boot_timer_log: Arc::new(Mutex::new(std::io::sink())),
        seccomp: SeccompPolicy::Builtin,
        debug_exit: true,
        ..RestoreConfig::new(&state, MemBackend::Uffd(socket.clone()))
    };
    let restored = Guest {
        running: Vmm::restore(config).unwrap().start().unwrap(),
        serial,
    };
    wait_for_count(&restored, saved + 10);
    restored.running.stop();
    restored.running.wait().unwrap();
    let out = handler.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("served"), "{err}");

    // No handler listening: a clear error.
    let config = RestoreConfig {
        serial: SerialConfig::Off,
        debug_exit: true,
        ..RestoreConfig::new(&state, MemBackend::Uffd(dir.0.join("nobody.sock")))
    };
    let err = Vmm::restore(config).unwrap_err();
    assert!(err.to_string().contains("nobody.sock"), "{err}");
}

#[test]
fn the_microvm_binary_snapshots_at_a_marker_line_and_restores_it() {
    if !kvm_available("the_microvm_binary_snapshots_at_a_marker_line_and_restores_it") {
        return;
    }
    let dir = TempDir::new("snap-cli-marker");
    let state = dir.0.join("vm.state");
    let mem = dir.0.join("vm.mem");
    let out = Command::new(microvm_binary())
        .args(["--cmdline", "kindling.test=count"])
        .args(["--snapshot-on-line", "count: 7"])
        .arg("--snapshot-state")
        .arg(&state)
        .arg("--snapshot-mem")
        .arg(&mem)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("snapshot written"), "{err}");
    let before = String::from_utf8_lossy(&out.stdout).into_owned();
    let saved = *counts(&before).last().unwrap();
    assert!(saved >= 7, "{before}");
    let mut restored = Restored::spawn(&state, &mem, &[]);
    restored.until_count(saved + 10);
    let joined = format!("{before}{}", restored.kill());
    assert!(check_sequence(&joined) >= saved + 10);
}

#[test]
fn count_touch_dirties_its_pages_for_the_next_diff() {
    if !kvm_available("count_touch_dirties_its_pages_for_the_next_diff") {
        return;
    }
    let dir = TempDir::new("snap-count-touch");
    let guest = start_guest("kindling.test=count-touch:256", None, true);
    wait_for_count(&guest, 2);
    snapshot(&guest, SnapshotKind::Full, &dir.0, "base");
    let seen = *counts(&guest.serial.text()).last().unwrap();
    guest.running.resume().unwrap();
    wait_for_count(&guest, seen + 2);
    guest.running.pause().unwrap();
    let info = guest
        .running
        .snapshot(&SnapshotRequest {
            kind: SnapshotKind::Diff,
            state_path: dir.0.join("diff.state"),
            mem_path: dir.0.join("diff.mem"),
        })
        .unwrap();
    // The 256 KiB from 16 MiB up, plus the guest's counter and stack.
    assert!(
        (64..64 + 16).contains(&info.pages_written),
        "{} pages written",
        info.pages_written
    );
    let byte: u8 = guest
        .running
        .memory()
        .read_obj(GuestAddress((16 << 20) + (256 << 10) - 1))
        .unwrap();
    assert_eq!(byte & 1, 1, "the guest's last touched byte is {byte:#x}");
    let untouched: u8 = guest
        .running
        .memory()
        .read_obj(GuestAddress((16 << 20) + (256 << 10)))
        .unwrap();
    assert_eq!(untouched, 0, "the guest wrote past its 256 KiB");
    guest.running.stop();
    guest.running.wait().unwrap();
}
