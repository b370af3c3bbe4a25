//! `uffd_handler`: a page fault handler for Kindling's (and Firecracker's)
//! userfaultfd memory backend, serving a snapshot's memory file.
//!
//! ```text
//! cargo run --example uffd_handler -- SOCKET MEM_FILE
//! ```
//!
//! It listens on the Unix socket `SOCKET` (which appears once it is
//! listening), accepts one VMM restoring with
//! `MemBackend::Uffd(SOCKET)`, and fills each page the guest first touches
//! from `MEM_FILE` (holes are zeroes), until the VMM goes away. It prints
//! how many pages it served on stderr and exits 0, or 1 with one line on
//! stderr for any error.

use std::fs::File;
use std::os::unix::net::UnixListener;
use std::process::ExitCode;

use kindling::vmm::snapshot::uffd::{FilePages, UffdHandler};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, mem] = args.as_slice() else {
        eprintln!("usage: uffd_handler SOCKET MEM_FILE");
        return ExitCode::from(1);
    };
    let result = (|| -> Result<u64, String> {
        let file = File::open(mem).map_err(|e| format!("cannot open {mem}: {e}"))?;
        // Bound and listening under a temporary name, then renamed: a VMM
        // that sees SOCKET can connect.
        let tmp = format!("{socket}.{}", std::process::id());
        let listener =
            UnixListener::bind(&tmp).map_err(|e| format!("cannot listen on {tmp}: {e}"))?;
        std::fs::rename(&tmp, socket).map_err(|e| format!("cannot create {socket}: {e}"))?;
        let handler = UffdHandler::accept(&listener).map_err(|e| e.to_string())?;
        handler.run(&mut FilePages(file)).map_err(|e| e.to_string())
    })();
    match result {
        Ok(pages) => {
            eprintln!("uffd_handler: served {pages} pages");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("uffd_handler: {e}");
            ExitCode::from(1)
        }
    }
}
