//! Rules to classic BPF, with a binary search over system call numbers.
//!
//! seccompiler lays a filter out as one comparison per listed system call,
//! in a row. Installing a filter costs the kernel time in proportion to its
//! length (it checks the program, converts it to eBPF and JIT-compiles it)
//! and to the length of its paths (it runs the filter for every system
//! call number to find the ones it always allows, its action cache), all
//! of it on the path to the guest's first instruction for a vCPU thread.
//! So the number is found by a binary search (about log2(n) + 2
//! instructions, small groups of calls without argument checks compared in
//! a row), each call's argument checks follow its comparison directly, and
//! the argument checks themselves are compact (see the `checks` module).

use seccompiler::{sock_filter, BpfProgram};

use super::checks::{self, Checks};
use super::rules::Rules;

/// `BPF_LD | BPF_W | BPF_ABS`: load a word of `struct seccomp_data`.
pub(super) const LD_W_ABS: u16 = 0x20;
/// `BPF_ALU | BPF_AND | BPF_K`.
pub(super) const AND_K: u16 = 0x54;
/// `BPF_JMP | BPF_JEQ | BPF_K`.
pub(super) const JEQ_K: u16 = 0x15;
/// `BPF_JMP | BPF_JGE | BPF_K`.
const JGE_K: u16 = 0x35;
/// `BPF_JMP | BPF_JA`: an unconditional jump with a 32-bit offset.
pub(super) const JA: u16 = 0x05;
/// `BPF_RET | BPF_K`.
pub(super) const RET_K: u16 = 0x06;
/// Offsets of `nr` and `arch` in `struct seccomp_data`.
const NR_OFFSET: u32 = 0;
const ARCH_OFFSET: u32 = 4;
/// The kernel's limit on a filter's length (`BPF_MAXINSNS`).
pub(super) const MAX_LEN: usize = 4096;
/// The longest row of calls without argument checks compared one after
/// the other instead of searched: a row of four costs at most two more
/// comparisons than the search, and saves three of its nodes.
const MAX_ROW: usize = 4;

/// `AUDIT_ARCH_*` of the architecture the filter is for.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;
#[cfg(target_arch = "riscv64")]
const AUDIT_ARCH: u32 = 0xC000_00F3;

pub(super) fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

pub(super) fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
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
    // Syscall numbers are small non-negative numbers (a BTreeMap keeps
    // them sorted).
    let entries: Vec<(u32, Checks)> = rules
        .into_iter()
        .map(|(nr, rules)| (nr as u32, checks::compile(rules, mismatch, matched)))
        .collect();
    if entries.is_empty() {
        prog.push(stmt(RET_K, mismatch));
        return Ok(prog);
    }
    prog.extend(search(&entries, mismatch, matched));
    if prog.len() > MAX_LEN {
        return Err(prog.len());
    }
    Ok(prog)
}

/// The search for `entries`, with their checks, as a self-contained piece
/// of code: every jump in it lands inside it, and it ends in returns only.
fn search(entries: &[(u32, Checks)], mismatch: u32, matched: u32) -> BpfProgram {
    if entries.len() <= MAX_ROW && entries.iter().all(|(_, c)| c.is_none()) {
        return row(entries.iter().map(|(nr, _)| *nr), mismatch, matched);
    }
    if let [(nr, checks)] = entries {
        return leaf(*nr, checks, mismatch);
    }
    let mid = entries.len() / 2;
    let left = search(&entries[..mid], mismatch, matched);
    let right = search(&entries[mid..], mismatch, matched);
    // Numbers at or above the middle one go right, past the left half.
    let mut prog = Vec::with_capacity(left.len() + right.len() + 2);
    match u8::try_from(left.len()) {
        Ok(skip) => prog.push(jump(JGE_K, entries[mid].0, skip, 0)),
        Err(_) => {
            prog.push(jump(JGE_K, entries[mid].0, 0, 1));
            prog.push(stmt(JA, left.len() as u32));
        }
    }
    prog.extend(left);
    prog.extend(right);
    prog
}

/// Calls without argument checks, compared one after the other
/// (`numbers` has at most [`MAX_ROW`] of them).
fn row(numbers: impl ExactSizeIterator<Item = u32>, mismatch: u32, matched: u32) -> BpfProgram {
    let n = numbers.len();
    let mut prog: BpfProgram = numbers
        .enumerate()
        // Comparison i jumps over the n - 1 - i after it and the mismatch.
        .map(|(i, nr)| jump(JEQ_K, nr, (n - i) as u8, 0))
        .collect();
    prog.push(stmt(RET_K, mismatch));
    prog.push(stmt(RET_K, matched));
    prog
}

/// One call: its comparison, then its checks.
fn leaf(nr: u32, checks: &Checks, mismatch: u32) -> BpfProgram {
    let mut prog = Vec::with_capacity(checks.code.len() + 2);
    match u8::try_from(checks.mismatch_at) {
        // Another number goes to the checks' own mismatch.
        Ok(skip) => prog.push(jump(JEQ_K, nr, 0, skip)),
        Err(_) => {
            prog.push(jump(JEQ_K, nr, 1, 0));
            prog.push(stmt(RET_K, mismatch));
        }
    }
    prog.extend_from_slice(&checks.code);
    prog
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
        assert!(api.len() < MAX_LEN / 8, "{}", api.len());
        // The vCPU filter, installed on the way to the guest, is short.
        let vcpu = build(rules_for(ThreadKind::Vcpu), trap, allow).unwrap();
        assert!(vcpu.len() < 160, "{}", vcpu.len());
    }

    /// seccompiler's own filter for `rules`.
    fn linear(rules: Rules) -> BpfProgram {
        SeccompFilter::new(
            rules,
            SeccompAction::Trap,
            SeccompAction::Allow,
            std::env::consts::ARCH.try_into().unwrap(),
        )
        .unwrap()
        .try_into()
        .unwrap()
    }

    #[test]
    fn long_lists_and_every_kind_of_rule_decide_as_seccompiler() {
        use seccompiler::{SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition};
        let (trap, allow) = (libc::SECCOMP_RET_TRAP, libc::SECCOMP_RET_ALLOW);
        let cond = |arg, len, op, value| SeccompCondition::new(arg, len, op, value).unwrap();
        let rule = |conds| seccompiler::SeccompRule::new(conds).unwrap();
        let mut rules = Rules::new();
        // 300 calls without checks: search nodes whose left half is
        // longer than an 8-bit jump.
        for nr in 0..300 {
            rules.insert(nr, Vec::new());
        }
        // 300 values of one word: rows split before the 8-bit limit, and
        // checks longer than an 8-bit jump from the call's comparison.
        rules.insert(
            10,
            (0..300)
                .map(|v| rule(vec![cond(1, Len::Dword, Op::Eq, 0xae00 + v)]))
                .collect(),
        );
        // Word rules broken up by other rules, other words and masks.
        rules.insert(
            20,
            vec![
                rule(vec![cond(0, Len::Dword, Op::Eq, 1)]),
                rule(vec![cond(0, Len::Dword, Op::Eq, u64::MAX)]),
                rule(vec![cond(0, Len::Qword, Op::Eq, 0x1_0000_ae80)]),
                rule(vec![cond(0, Len::Dword, Op::MaskedEq(0xff00), 0xae00)]),
                rule(vec![cond(0, Len::Dword, Op::MaskedEq(0xff00), 0x5400)]),
                rule(vec![cond(1, Len::Dword, Op::Eq, 0xae80)]),
                rule(vec![
                    cond(0, Len::Dword, Op::Eq, 0),
                    cond(1, Len::Dword, Op::Ne, 1),
                ]),
                rule(vec![cond(2, Len::Qword, Op::Gt, 0xae01)]),
                rule(vec![cond(2, Len::Dword, Op::Lt, 1)]),
                rule(vec![cond(0, Len::Dword, Op::Eq, 0x8090_ae81)]),
            ],
        );
        rules.insert(
            21,
            vec![
                rule(vec![cond(1, Len::Qword, Op::Ge, 0xae80)]),
                rule(vec![cond(0, Len::Dword, Op::Le, 1)]),
            ],
        );
        // A call above the others, with a long check of its own.
        rules.insert(
            400,
            (0..100)
                .map(|v| rule(vec![cond(0, Len::Qword, Op::Eq, v << 36)]))
                .collect(),
        );
        let tree = build(rules.clone(), trap, allow).unwrap();
        let linear = linear(rules);
        let mut args = sample_args();
        args.extend((0..300u64).flat_map(|v| [[0, 0xae00 + v, 0, 0, 0, 0], [v << 36; 6]]));
        for nr in [
            0, 1, 9, 10, 11, 20, 21, 22, 150, 298, 299, 300, 301, 399, 400, 401,
        ] {
            for args in &args {
                assert_eq!(
                    run(&tree, AUDIT_ARCH, nr, *args),
                    run(&linear, AUDIT_ARCH, nr, *args),
                    "nr {nr} args {args:x?}"
                );
            }
        }
    }
}
