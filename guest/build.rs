//! Builds the test guest from `c/` with the system `gcc` into
//! `$OUT_DIR/kindling-test-guest.elf`, which `src/lib.rs` embeds.

use std::path::{Path, PathBuf};
use std::process::{exit, Command};
use std::{env, fs};

/// Code generation for a freestanding kernel whose C runs in ring 3
/// without SSE (see `c/start.S`).
const CFLAGS: &[&str] = &[
    "-std=gnu11",
    "-ffreestanding",
    "-nostdlib",
    "-static",
    "-no-pie",
    "-fno-pic",
    "-mgeneral-regs-only",
    "-mno-red-zone",
    "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables",
    "-fcf-protection=none",
    // Keeps gcc from turning string.c's loops into calls to themselves.
    "-fno-tree-loop-distribute-patterns",
    // The guest reads fixed low addresses (the BIOS data area at 0x40e).
    "--param=min-pagesize=0",
    "-O2",
    "-Wall",
    "-Wextra",
    "-Wl,--build-id=none",
    "-Wl,-z,noexecstack",
    "-Wl,-z,max-page-size=4096",
];

fn fail(message: &str) -> ! {
    eprintln!("error: building the Kindling test guest: {message}");
    exit(1);
}

/// The guest's sources, sorted so the link order is stable.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let entries =
        fs::read_dir(dir).unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", dir.display())));
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("c" | "S" | "h" | "ld")
            )
        })
        .collect();
    files.sort();
    files
}

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let c_dir = manifest_dir.join("c");
    let linker_script = c_dir.join("link.ld");
    let output = out_dir.join("kindling-test-guest.elf");

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", c_dir.display());
    let files = sources(&c_dir);
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let compiled: Vec<&PathBuf> = files
        .iter()
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("c" | "S")))
        .collect();
    if compiled.is_empty() {
        fail(&format!("no .c or .S files in {}", c_dir.display()));
    }

    let mut gcc = Command::new("gcc");
    gcc.args(CFLAGS)
        .arg("-I")
        .arg(&c_dir)
        .arg("-T")
        .arg(&linker_script)
        .arg("-o")
        .arg(&output)
        .args(&compiled);
    let result = gcc.output().unwrap_or_else(|e| {
        fail(&format!(
            "cannot run gcc ({e}); the test guest is built from C source and needs gcc \
             with x86-64 support (Debian: apt-get install gcc)"
        ))
    });
    let stderr = String::from_utf8_lossy(&result.stderr);
    if !result.status.success() {
        fail(&format!(
            "gcc failed ({}):\n{gcc:?}\n{stderr}",
            result.status
        ));
    }
    for line in stderr.lines() {
        println!("cargo:warning=test guest: {line}");
    }
}
