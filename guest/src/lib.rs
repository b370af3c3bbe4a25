//! The Kindling test guest: a tiny 64-bit x86 kernel that Kindling's
//! integration tests and benchmarks boot on `/dev/kvm`.
//!
//! It is written in C and GNU assembler (`guest/c/`) and built from source
//! by this crate's build script with the system `gcc`; [`TEST_GUEST_ELF`]
//! holds the result. The VMM loads it through the same path as a Linux
//! `vmlinux`: an ELF64 x86-64 executable whose `PT_LOAD` segments are
//! linked at physical (and virtual) address 1 MiB, entered at its ELF entry
//! point per the Linux x86 64-bit boot protocol.
//!
//! # Boot contract
//!
//! What the guest expects from the VMM (what Firecracker gives a `vmlinux`):
//!
//! - 64-bit long mode, paging on with an identity map covering the image,
//!   interrupts off, `RSI` = the address of the zero page
//!   (`struct boot_params`); CR4.SMEP and CR4.SMAP clear.
//! - In the zero page: `cmd_line_ptr` (0x228, plus `ext_cmd_line_ptr` at
//!   0x0c8 as the high 32 bits), `e820_entries` (0x1e8) and `e820_table`
//!   (0x2d0).
//! - For the `smp` action: an Intel MP table (spec 1.4) in the EBDA, in the
//!   last KiB of base memory or in 0xf0000..0xfffff; an in-kernel local APIC
//!   at 0xfee0_0000 in xAPIC mode; application processors waiting for
//!   INIT/SIPI; RAM at 0x3000 (the AP trampoline goes there).
//! - Devices: COM1 at port 0x3f8 (output only), the i8042 command port 0x64,
//!   the debug-exit port [`DEBUG_EXIT_PORT`], the boot timer at MMIO
//!   0xc000_0000, and [`BENCH_PORT`] for the `pio-loop` benchmark.
//!
//! The guest runs almost entirely in ring 3: its ring-0 prologue only loads
//! its own GDT and its own page tables (an identity map of 0..4 GiB with
//! 2 MiB pages, all user-accessible, built at link time) and `iretq`s to
//! ring 3 with IOPL=3. On hosts where KVM emulates ring-0 code instruction
//! by instruction, this keeps start-up in the microseconds. There is no
//! IDT: a fault is a triple fault, which the VMM sees as a shutdown.
//!
//! # Command line
//!
//! Tokens are separated by whitespace; tokens the guest does not know are
//! ignored, so a Linux-style line such as `console=ttyS0 kindling.test=e820`
//! works. When a token is given twice, the last one wins.
//!
//! - `kindling.test=A,B,C`: the actions to run, in order (default: `hello`,
//!   which is what [`DEFAULT_CMDLINE`] asks for too).
//! - `kindling.exit=N` (decimal 0..=255): at the end, write `N` to
//!   [`DEBUG_EXIT_PORT`], which makes the VMM exit with status `N`.
//!   `kindling.exit=reset`: write 0xfe to the i8042 command port (0x64)
//!   instead, a reset. Default, and for an invalid value: status 0 through
//!   [`DEBUG_EXIT_PORT`].
//!
//! # Actions and their output
//!
//! All output goes to COM1, one line per `rep outsb`, each line ending in
//! `\n`. The guest prints nothing but the lines below. (KVM still turns
//! each byte of a `rep outsb` into its own `KVM_EXIT_IO` of one byte, so
//! output costs one VM exit per byte unless the VMM registers the port as
//! a coalesced PIO zone.)
//!
//! | action | output lines | notes |
//! | --- | --- | --- |
//! | `hello` | `Hello from the Kindling test guest!` | |
//! | `cmdline` | `cmdline: <command line>` | the whole line as read from the zero page (at most 4095 bytes) |
//! | `e820` | `e820: <N> entries`, then N × `e820: addr=0x<16 hex> size=0x<16 hex> type=<decimal>` | lowercase hex, zero-padded to 16 digits; N is capped at 128 |
//! | `smp` | `smp: <A> of <M> cpus online` or `smp: no MP table` | see below |
//! | `timer` | `boot-timer: signalled` | first writes the byte 123 to MMIO 0xc000_0000, which makes the VMM log the boot time |
//! | `pio-loop` | none | writes the byte 0 to [`BENCH_PORT`] in an endless loop (a VM-exit benchmark); never returns |
//! | anything else | `unknown action: <name>` | then exits at once with status 2 through [`DEBUG_EXIT_PORT`] |
//!
//! `smp`: `M` is the number of enabled processor entries in the MP table;
//! `A` counts the boot CPU plus the application processors that answered.
//! The guest copies a real-mode trampoline to 0x3000, software-enables its
//! local APIC, and sends INIT, SIPI, SIPI (vector 0x03) to every enabled
//! processor other than itself; each AP increments a counter in the
//! trampoline's page and halts. The guest waits for the counter for a
//! bounded time (about a second of native execution if an AP never
//! answers). With the MP table the VMM writes for `n` vCPUs, the line is
//! `smp: n of n cpus online`.
//!
//! For example, `kindling.test=hello,e820 kindling.exit=7` on a 128 MiB
//! guest of Kindling's VMM prints
//!
//! ```text
//! Hello from the Kindling test guest!
//! e820: 3 entries
//! e820: addr=0x0000000000000000 size=0x000000000009fc00 type=1
//! e820: addr=0x000000000009fc00 size=0x0000000000060400 type=2
//! e820: addr=0x0000000000100000 size=0x0000000007f00000 type=1
//! ```
//!
//! and the VMM exits with status 7.
//!
//! # Example
//!
//! ```
//! use kindling_test_guest::{DEFAULT_CMDLINE, TEST_GUEST_ELF};
//!
//! assert_eq!(&TEST_GUEST_ELF[..4], b"\x7fELF");
//! assert_eq!(DEFAULT_CMDLINE, "kindling.test=hello");
//! ```

/// The test guest, an ELF64 x86-64 executable linked at 1 MiB (entry
/// `_start`), built from `guest/c/` by this crate's build script.
pub const TEST_GUEST_ELF: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/kindling-test-guest.elf"));

/// The command line to boot the test guest with when nothing else is asked
/// for: it prints its hello line and exits with status 0.
pub const DEFAULT_CMDLINE: &str = "kindling.test=hello";

/// The debug-exit port: the guest writes its exit status here (one byte),
/// and the VMM exits with that status.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// The port the `pio-loop` action writes to, forever: one VM exit per
/// write, for exit-path benchmarks.
pub const BENCH_PORT: u16 = 0xf5;

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(off: usize) -> u16 {
        u16::from_le_bytes(TEST_GUEST_ELF[off..off + 2].try_into().unwrap())
    }

    fn u32_at(off: usize) -> u32 {
        u32::from_le_bytes(TEST_GUEST_ELF[off..off + 4].try_into().unwrap())
    }

    fn u64_at(off: usize) -> u64 {
        u64::from_le_bytes(TEST_GUEST_ELF[off..off + 8].try_into().unwrap())
    }

    /// `(p_type, p_offset, p_paddr, p_filesz, p_memsz)` of each program header.
    fn program_headers() -> Vec<(u32, u64, u64, u64, u64)> {
        let phoff = u64_at(32) as usize;
        let phentsize = u16_at(54) as usize;
        let phnum = u16_at(56) as usize;
        (0..phnum)
            .map(|i| {
                let ph = phoff + i * phentsize;
                (
                    u32_at(ph),
                    u64_at(ph + 8),
                    u64_at(ph + 24),
                    u64_at(ph + 32),
                    u64_at(ph + 40),
                )
            })
            .collect()
    }

    #[test]
    fn is_an_elf64_x86_64_executable() {
        assert_eq!(&TEST_GUEST_ELF[..4], b"\x7fELF");
        assert_eq!(TEST_GUEST_ELF[4], 2, "ELFCLASS64");
        assert_eq!(TEST_GUEST_ELF[5], 1, "little-endian");
        assert_eq!(u16_at(16), 2, "ET_EXEC");
        assert_eq!(u16_at(18), 62, "EM_X86_64");
    }

    #[test]
    fn entry_is_inside_a_loaded_segment_above_1_mib() {
        let entry = u64_at(24);
        assert!(entry >= 0x10_0000, "entry {entry:#x}");
        let loads: Vec<_> = program_headers().into_iter().filter(|p| p.0 == 1).collect();
        assert!(!loads.is_empty(), "no PT_LOAD segment");
        for &(_, offset, paddr, filesz, memsz) in &loads {
            assert!(paddr >= 0x10_0000, "segment at {paddr:#x}");
            assert!(filesz <= memsz);
            assert!(offset + filesz <= TEST_GUEST_ELF.len() as u64);
        }
        assert!(loads
            .iter()
            .any(|&(_, _, paddr, filesz, _)| (paddr..paddr + filesz).contains(&entry)));
    }

    #[test]
    fn image_is_small() {
        // The static page tables are 24 KiB; the rest is a few KiB of code.
        assert!(
            TEST_GUEST_ELF.len() < 64 * 1024,
            "{} bytes",
            TEST_GUEST_ELF.len()
        );
    }

    #[test]
    fn default_command_line_asks_for_hello() {
        assert_eq!(DEFAULT_CMDLINE, "kindling.test=hello");
        assert_ne!(DEBUG_EXIT_PORT, BENCH_PORT);
    }
}
