//! Rules to classic BPF, with a binary search over system call numbers.
//!
//! seccompiler lays a filter out as one comparison per listed system call,
//! in a row; the kernel, when a filter is installed, runs the filter for
//! every system call number to find the ones it always allows (its action
//! cache), so that row is walked some 450 times: about 150 µs for the vCPU
//! list on the development machine, on the path to the guest's first
//! instruction. Here the number is found by a binary search (about
//! 2·log2(n) + 3 instructions), and the argument checks of each call are
//! seccompiler's own rule code ([`SeccompRule`] into BPF), unchanged: a
//! rule's code ends in the match action or falls through to the next rule.

use seccompiler::{sock_filter, BpfProgram, SeccompRule};

use super::rules::Rules;

/// `BPF_LD | BPF_W | BPF_ABS`: load a word of `struct seccomp_data`.
const LD_W_ABS: u16 = 0x20;
/// `BPF_JMP | BPF_JEQ | BPF_K`.
const JEQ_K: u16 = 0x15;
/// `BPF_JMP | BPF_JGE | BPF_K`.
const JGE_K: u16 = 0x35;
/// `BPF_JMP | BPF_JA`: an unconditional jump with a 32-bit offset.
const JA: u16 = 0x05;
/// `BPF_RET | BPF_K`.
const RET_K: u16 = 0x06;
/// Offsets of `nr` and `arch` in `struct seccomp_data`.
const NR_OFFSET: u32 = 0;
const ARCH_OFFSET: u32 = 4;
/// The kernel's limit on a filter's length (`BPF_MAXINSNS`).
pub(super) const MAX_LEN: usize = 4096;

/// `AUDIT_ARCH_*` of the architecture the filter is for.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;
#[cfg(target_arch = "riscv64")]
const AUDIT_ARCH: u32 = 0xC000_00F3;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// Compiles `rules`: calls on the list go to their rules (`matched` if one
/// holds, or at once when there are none), everything else gets
/// `mismatch`; a call made under another architecture's ABI kills the
/// process. Returns the program, or its length when the kernel would
/// refuse it as too long.
pub(super) fn build(rules: Rules, mismatch: u32, matched: u32) -> Result<BpfProgram, usize> {
    let mut prog = vec![
        stmt(LD_W_ABS, ARCH_OFFSET),
        jump(JEQ_K, AUDIT_ARCH, 1, 0),
        stmt(RET_K, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(LD_W_ABS, NR_OFFSET),
    ];
    let entries: Vec<(i64, Vec<SeccompRule>)> = rules.into_iter().collect();
    if entries.is_empty() {
        prog.push(stmt(RET_K, mismatch));
        return Ok(prog);
    }
    // Syscall numbers are small non-negative numbers (a BTreeMap keeps
    // them sorted).
    let numbers: Vec<u32> = entries.iter().map(|(nr, _)| *nr as u32).collect();
    let mut to_block = Vec::with_capacity(entries.len());
    search(&mut prog, &numbers, 0, mismatch, &mut to_block);
    let mut starts = Vec::with_capacity(entries.len());
    for (_, rules) in entries {
        starts.push(prog.len());
        if rules.is_empty() {
            prog.push(stmt(RET_K, matched));
            continue;
        }
        for rule in rules {
            prog.extend(BpfProgram::from(rule));
            prog.push(stmt(RET_K, matched));
        }
        prog.push(stmt(RET_K, mismatch));
    }
    for (pc, index) in to_block {
        prog[pc].k = (starts[index] - (pc + 1)) as u32;
    }
    if prog.len() > MAX_LEN {
        return Err(prog.len());
    }
    Ok(prog)
}

/// Emits the search for `numbers` (entries `first..` of the list). A
/// leaf compares the number and jumps to its block (recorded in
/// `to_block` as the jump's position and the entry index, patched once
/// the blocks are laid out); a node sends numbers at or above its middle
/// one to the right half through a 32-bit jump, so no offset overflows
/// the 8-bit conditional jumps.
fn search(
    prog: &mut BpfProgram,
    numbers: &[u32],
    first: usize,
    mismatch: u32,
    to_block: &mut Vec<(usize, usize)>,
) {
    if let [nr] = numbers {
        prog.push(jump(JEQ_K, *nr, 0, 1));
        to_block.push((prog.len(), first));
        prog.push(stmt(JA, 0));
        prog.push(stmt(RET_K, mismatch));
        return;
    }
    let mid = numbers.len() / 2;
    prog.push(jump(JGE_K, numbers[mid], 0, 1));
    let to_right = prog.len();
    prog.push(stmt(JA, 0));
    search(prog, &numbers[..mid], first, mismatch, to_block);
    prog[to_right].k = (prog.len() - (to_right + 1)) as u32;
    search(prog, &numbers[mid..], first + mid, mismatch, to_block);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::{rules_for, ThreadKind};
    use seccompiler::{SeccompAction, SeccompFilter};

    /// Runs a classic BPF seccomp program over (arch, nr, args): the
    /// instructions seccompiler and this module emit.
    fn run(prog: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = vec![nr, arch, 0, 0];
        for a in args {
            data.push(a as u32);
            data.push((a >> 32) as u32);
        }
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let i = &prog[pc];
            pc += 1;
            match i.code {
                LD_W_ABS => acc = data[i.k as usize / 4],
                // BPF_ALU | BPF_AND | BPF_K
                0x54 => acc &= i.k,
                JA => pc += i.k as usize,
                RET_K => return i.k,
                code => {
                    let taken = match code {
                        JEQ_K => acc == i.k,
                        JGE_K => acc >= i.k,
                        // BPF_JMP | BPF_JGT | BPF_K
                        0x25 => acc > i.k,
                        // BPF_JMP | BPF_JSET | BPF_K
                        0x45 => acc & i.k != 0,
                        other => panic!("unexpected BPF opcode {other:#x}"),
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
            }
        }
    }

    /// Arguments that exercise the built-in argument checks.
    fn sample_args() -> Vec<[u64; 6]> {
        let values = [
            0,
            1,
            u64::MAX,
            0xae80,
            0xae01,
            0x8090_ae81,
            libc::TCGETS,
            libc::FIONBIO,
            libc::SIOCGIFINDEX,
            libc::PROT_EXEC as u64,
            (libc::PROT_READ | libc::PROT_EXEC) as u64,
            libc::PROT_READ as u64,
            libc::AF_UNIX as u64,
            libc::AF_INET as u64,
            libc::F_GETFD as u64,
            libc::F_SETFL as u64,
            libc::SIGABRT as u64,
            kindling_vcpu::kick_signal() as u64,
            libc::PR_SET_NAME as u64,
            libc::PR_SET_DUMPABLE as u64,
            0x1_0000_ae80,
        ];
        let mut out = vec![[0; 6]];
        for v in values {
            for arg in 0..3 {
                let mut a = [0; 6];
                a[arg] = v;
                out.push(a);
            }
        }
        out
    }

    #[test]
    fn the_search_decides_as_seccompilers_linear_filter() {
        let (trap, allow) = (libc::SECCOMP_RET_TRAP, libc::SECCOMP_RET_ALLOW);
        for kind in ThreadKind::ALL {
            let tree = build(rules_for(kind), trap, allow).unwrap();
            let linear: BpfProgram = SeccompFilter::new(
                rules_for(kind),
                SeccompAction::Trap,
                SeccompAction::Allow,
                std::env::consts::ARCH.try_into().unwrap(),
            )
            .unwrap()
            .try_into()
            .unwrap();
            let mut allowed = 0;
            for nr in 0..=470 {
                for args in sample_args() {
                    let want = run(&linear, AUDIT_ARCH, nr, args);
                    assert_eq!(
                        run(&tree, AUDIT_ARCH, nr, args),
                        want,
                        "{}: nr {nr} args {args:x?}",
                        kind.name()
                    );
                    allowed += usize::from(want == allow);
                }
            }
            assert!(allowed > 0);
            // Another ABI (i386 here) is killed outright.
            assert_eq!(
                run(&tree, 0x4000_0003, 1, [0; 6]),
                libc::SECCOMP_RET_KILL_PROCESS
            );
        }
    }

    #[test]
    fn lookups_are_short_and_edge_cases_hold() {
        let (trap, allow) = (libc::SECCOMP_RET_TRAP, libc::SECCOMP_RET_ALLOW);
        let empty = build(Rules::new(), trap, allow).unwrap();
        assert_eq!(run(&empty, AUDIT_ARCH, 0, [0; 6]), trap);
        let mut one = Rules::new();
        one.insert(libc::SYS_write, Vec::new());
        let one = build(one, trap, allow).unwrap();
        assert_eq!(run(&one, AUDIT_ARCH, libc::SYS_write as u32, [0; 6]), allow);
        assert_eq!(run(&one, AUDIT_ARCH, libc::SYS_read as u32, [0; 6]), trap);
        // The API list, the longest, stays far below the kernel's limit.
        let api = build(rules_for(ThreadKind::Api), trap, allow).unwrap();
        assert!(api.len() < MAX_LEN / 4, "{}", api.len());
    }
}
