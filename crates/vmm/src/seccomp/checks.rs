//! The argument checks of one system call, in compact BPF.
//!
//! Each rule is seccompiler's own code for it (a [`SeccompRule`] into
//! BPF): its conditions fall through when they hold and jump past the
//! rule's end when one does not. seccompiler starts every rule with two
//! jumps for its own layout, which are dropped here (the first skips the
//! second), and the commonest rules, one condition comparing a 32-bit word
//! (masked or not) with a value, are merged: consecutive ones on the same
//! word load it once and compare it with each value in a row, all jumping
//! to one `matched` return. The vCPU filter's `ioctl` check (14 request
//! numbers) is then 17 instructions instead of 71, which the kernel
//! installs that much faster.

use seccompiler::{sock_filter, BpfProgram, SeccompRule};

use super::bpf::{jump, stmt, AND_K, JA, JEQ_K, LD_W_ABS, RET_K};

/// The most values compared in one row: every comparison must reach the
/// row's `matched` return with an 8-bit jump.
const MAX_ROW: usize = 200;

/// A system call's checks: self-contained code (every jump lands inside
/// it, it ends in returns) that returns `matched` when a rule holds and
/// `mismatch` otherwise.
#[derive(Debug)]
pub(super) struct Checks {
    /// The code.
    pub(super) code: BpfProgram,
    /// Where in `code` a `mismatch` return is (a call of another number
    /// jumps there).
    pub(super) mismatch_at: usize,
    /// Whether the call is allowed with any arguments (no rules).
    pub(super) any_arguments: bool,
}

impl Checks {
    /// Whether there is nothing to check.
    pub(super) fn is_none(&self) -> bool {
        self.any_arguments
    }
}

/// A one-condition rule on a 32-bit word: `(word & mask) == value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WordEq {
    /// The word's offset in `struct seccomp_data`.
    offset: u32,
    mask: Option<u32>,
    value: u32,
}

/// One rule, as merged comparisons or as its own code.
enum Piece {
    Word(WordEq),
    Code(BpfProgram),
}

/// Compiles the rules of one system call (none: any arguments).
pub(super) fn compile(rules: Vec<SeccompRule>, mismatch: u32, matched: u32) -> Checks {
    if rules.is_empty() {
        return Checks {
            code: vec![stmt(RET_K, matched), stmt(RET_K, mismatch)],
            mismatch_at: 1,
            any_arguments: true,
        };
    }
    let pieces: Vec<Piece> = rules.into_iter().map(piece).collect();
    let mut code = BpfProgram::new();
    let mut rest = &pieces[..];
    while let Some(first) = rest.first() {
        match first {
            Piece::Code(body) => {
                code.extend_from_slice(body);
                // A failed condition jumps past this return.
                code.push(stmt(RET_K, matched));
                rest = &rest[1..];
            }
            Piece::Word(word) => {
                let same = rest
                    .iter()
                    .take(MAX_ROW)
                    .take_while(|p| matches!(p, Piece::Word(w) if same_word(w, word)))
                    .count();
                let values = rest[..same].iter().map(|p| match p {
                    Piece::Word(w) => w.value,
                    Piece::Code(_) => unreachable!("only words were counted"),
                });
                rest = &rest[same..];
                row(&mut code, word, values, rest.is_empty(), mismatch, matched);
            }
        }
    }
    // A last row ends in the mismatch return and the matched one already.
    let mismatch_at = if matches!(pieces.last(), Some(Piece::Word(_))) {
        code.len() - 2
    } else {
        code.push(stmt(RET_K, mismatch));
        code.len() - 1
    };
    Checks {
        code,
        mismatch_at,
        any_arguments: false,
    }
}

fn same_word(a: &WordEq, b: &WordEq) -> bool {
    a.offset == b.offset && a.mask == b.mask
}

/// Loads `word` (masked) and compares it with each of `values`; a match
/// returns `matched`, no match goes on with the next rule, or returns
/// `mismatch` when this row is the `last`.
fn row(
    code: &mut BpfProgram,
    word: &WordEq,
    values: impl ExactSizeIterator<Item = u32>,
    last: bool,
    mismatch: u32,
    matched: u32,
) {
    code.push(stmt(LD_W_ABS, word.offset));
    if let Some(mask) = word.mask {
        code.push(stmt(AND_K, mask));
    }
    let n = values.len();
    // Comparison i jumps over the n - 1 - i after it and the exit, to the
    // matched return.
    code.extend(
        values
            .enumerate()
            .map(|(i, value)| jump(JEQ_K, value, (n - i) as u8, 0)),
    );
    if last {
        code.push(stmt(RET_K, mismatch));
    } else {
        // On to the next rule, past the matched return.
        code.push(stmt(JA, 1));
    }
    code.push(stmt(RET_K, matched));
}

/// seccompiler's code for `rule` without its two leading jumps, seen as a
/// [`WordEq`] when it is one.
fn piece(rule: SeccompRule) -> Piece {
    let code = BpfProgram::from(rule);
    // seccompiler's rule starts with `ja 1` (into the rule) and a jump out
    // that only its own layout reaches.
    let body = match code.as_slice() {
        [first, second, body @ ..] if *first == stmt(JA, 1) && second.code == JA => body,
        _ => return Piece::Code(code),
    };
    // `ld [offset]; (and mask;) jeq value, 0, 1`: the jump past the end of
    // the rule when the word differs.
    let word = match body {
        [ld, cmp] if is_load(ld) && is_eq_or_skip(cmp) => Some(WordEq {
            offset: ld.k,
            mask: None,
            value: cmp.k,
        }),
        [ld, and, cmp] if is_load(ld) && and.code == AND_K && is_eq_or_skip(cmp) => Some(WordEq {
            offset: ld.k,
            mask: Some(and.k),
            value: cmp.k,
        }),
        _ => None,
    };
    match word {
        Some(word) => Piece::Word(word),
        None => Piece::Code(body.to_vec()),
    }
}

fn is_load(insn: &sock_filter) -> bool {
    insn.code == LD_W_ABS && insn.jt == 0 && insn.jf == 0
}

fn is_eq_or_skip(insn: &sock_filter) -> bool {
    insn.code == JEQ_K && insn.jt == 0 && insn.jf == 1
}
