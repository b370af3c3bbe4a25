//! `--snapshot-on-line`: a full snapshot at the first serial line holding a
//! marker (a hook for tests and the end-to-end tier).

use std::io::Write;
use std::sync::mpsc;

use kindling::vmm::seccomp::{SeccompPolicy, ThreadKind};
use kindling::vmm::snapshot::SnapshotRequest;
use kindling::vmm::{ExitReason, Vmm, VmmError};

/// Passes serial output through and reports the first line that holds a
/// marker.
pub(crate) struct MarkerWriter {
    pub(crate) inner: Box<dyn Write + Send>,
    pub(crate) marker: String,
    pub(crate) line: Vec<u8>,
    pub(crate) found: Option<mpsc::Sender<()>>,
}

impl Write for MarkerWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        for &byte in &buf[..n] {
            if byte != b'\n' {
                self.line.push(byte);
                continue;
            }
            if String::from_utf8_lossy(&self.line).contains(&self.marker) {
                if let Some(found) = self.found.take() {
                    let _ = found.send(());
                }
            }
            self.line.clear();
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Runs `vmm`, and at the marker line pauses it, snapshots it to `request`
/// and stops it.
pub(crate) fn run_with_snapshot(
    vmm: Vmm,
    found: mpsc::Receiver<()>,
    request: SnapshotRequest,
    seccomp: &SeccompPolicy,
) -> Result<ExitReason, VmmError> {
    let running = vmm.start()?;
    let handle = running.handle();
    let state_path = request.state_path.clone();
    let policy = seccomp.clone();
    let snapshotter = std::thread::spawn(move || -> Option<Result<(), VmmError>> {
        // Pausing and snapshotting is what the API threads do.
        if let Err(e) = policy.install(ThreadKind::Api) {
            handle.stop();
            return Some(Err(e.into()));
        }
        // The sender goes away with the VM when it ends first.
        found.recv().ok()?;
        let result = handle
            .pause()
            .and_then(|()| handle.snapshot(&request))
            .map(|_| ());
        handle.stop();
        Some(result)
    });
    // This thread only waits from here on.
    if let Err(e) = seccomp.install(ThreadKind::Api) {
        running.stop();
        let _ = running.wait();
        let _ = snapshotter.join();
        return Err(e.into());
    }
    let reason = running.wait();
    match snapshotter.join() {
        Ok(Some(Ok(()))) => {
            eprintln!("microvm: snapshot written to {}", state_path.display());
            reason.map(|_| ExitReason::PowerOff)
        }
        Ok(Some(Err(e))) => Err(e),
        _ => reason,
    }
}
