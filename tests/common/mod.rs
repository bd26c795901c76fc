//! Helpers shared by the test files, and the op table ([`ops`]).
//!
//! Cargo builds every `tests/*.rs` as a crate of its own; a file that needs these says
//! `mod common;`. Not every file uses every helper, hence the `allow(dead_code)`.

#![allow(dead_code, unused_macros)]

pub mod fd;
pub mod ops;
pub mod rng;
pub mod shapes;

// Re-exported for the files that use them; no file uses all.
#[allow(unused_imports)]
pub use fd::{assert_close, close, fd_grad, fd_grad_with_step};
#[allow(unused_imports)]
pub use rng::{Rng, uniform};
#[allow(unused_imports)]
pub use shapes::{
    broadcast_offset, broadcast_shape, broadcast_to, broadcast_zip, map, try_broadcast_shape,
    unravel,
};

use std::panic::{AssertUnwindSafe, catch_unwind};

pub const NAN: f64 = f64::NAN;
pub const INF: f64 = f64::INFINITY;

/// The special values of `fixtures/special_values.txt`: NaN, ±inf, ±0, ±1 and 2.
pub const SPECIALS: [f64; 8] = [NAN, INF, -INF, 0.0, -0.0, 1.0, -1.0, 2.0];

/// What one-input ops also see there (`UNARY_S` of `gen_special.py`): [`SPECIALS`], then
/// ±0.5, ±3, a tiny 1e-8 and ±1000 (past every saturation, where a naive sigmoid or
/// softplus overflows).
pub const UNARY_SPECIALS: [f64; 15] = [
    NAN, INF, -INF, 0.0, -0.0, 1.0, -1.0, 2.0, 0.5, -0.5, 3.0, -3.0, 1e-8, 1000.0, -1000.0,
];

/// The message of the panic `f` raises (fails the test if it does not panic).
pub fn panic_message<R>(f: impl FnOnce() -> R) -> String {
    let payload = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(_) => panic!("expected a panic, but the call returned"),
        Err(payload) => payload,
    };
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else {
        panic!("panic payload is neither String nor &str")
    }
}

/// Assert `message` contains every one of `needles`.
#[track_caller]
pub fn assert_mentions(message: &str, needles: &[&str]) {
    for needle in needles {
        assert!(
            message.contains(needle),
            "message lacks {needle:?}: {message}"
        );
    }
}

/// Equal as f64 (so -0.0 == 0.0), or both NaN.
pub fn same(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

/// The same f64 bit for bit (signed zeros told apart), any NaN matching any NaN.
pub fn same_bits(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Both `None`, or both numbers that are [`same_bits`] (a gradient that may be absent).
pub fn same_bits_or_none(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => same_bits(a, b),
        (a, b) => a.is_none() && b.is_none(),
    }
}

/// Where `got` differs from `want`: their shapes, or the first element that is not
/// [`same_bits`] (and how many are not); `None` if neither.
pub fn bit_difference(got: &tapegrad::Tensor, want: &tapegrad::Tensor) -> Option<String> {
    if got.shape() != want.shape() {
        return Some(format!("shape {:?}, want {:?}", got.shape(), want.shape()));
    }
    let pairs = got.data().iter().zip(want.data());
    let mut differ = pairs.enumerate().filter(|(_, (g, w))| !same_bits(**g, **w));
    let (i, (g, w)) = differ.next()?;
    Some(format!(
        "element {i} of {:?}: {g:?} ({:#018x}), want {w:?} ({:#018x}); elements that \
         differ: {}",
        got.shape(),
        g.to_bits(),
        w.to_bits(),
        1 + differ.count()
    ))
}

/// Whether numpy's `-t / n` (the seed's closed-form hinge gradient) and the tape's chain
/// rule `(-(1 / n)) * t` round alike.
///
/// Reverse mode differentiates `sum / n` first (giving the rounded `1 / n`) and
/// multiplies by `t` later, two roundings where numpy has one. They agree for +-1
/// labels, powers of two, 0, inf and n a power of two, but not always (e.g. n = 50).
pub fn scaling_is_exact(t: f64, n: f64) -> bool {
    let (numpy, chain) = (-t / n, -(1.0 / n) * t);
    numpy == chain || (numpy.is_nan() && chain.is_nan())
}

/// Every element [`same`], listing both slices on failure.
#[track_caller]
pub fn assert_same(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            same(g, w),
            "{what}: element {i}: got {g:?}, want {w:?}\n  got  {got:?}\n  want {want:?}"
        );
    }
}

/// `x` with a hand-written backward that multiplies element `at` of the upstream by
/// `factor` (1: the right gradient): a graph built on it has a known wrong gradient in
/// one element, for testing the checker.
pub fn identity_with_error<'t>(
    tape: &'t tapegrad::Tape,
    x: tapegrad::Var<'t>,
    at: usize,
    factor: f64,
) -> tapegrad::Var<'t> {
    tape.custom(
        "identity_with_error",
        &[x],
        |x| x[0].clone(),
        move |_, _, up| {
            let mut g = up.data().to_vec();
            if let Some(u) = g.get_mut(at) {
                *u *= factor;
            }
            vec![tapegrad::Tensor::new(g, up.shape()).unwrap()]
        },
    )
}

/// Where a call was written: the file and line `panic_at_line!` saw.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub file: &'static str,
    pub line: u32,
}

/// `(caller, message)`: where `$e` is written and the message of the panic it raises
/// (for files that say `#[macro_use] mod common;`).
macro_rules! panic_at_line {
    ($e:expr) => {
        (
            $crate::common::Caller {
                file: file!(),
                line: line!(),
            },
            $crate::common::panic_message(|| {
                let _ = $e;
            }),
        )
    };
}

/// Assert `message` names every one of `parts` and the caller's `file:line:`.
#[track_caller]
pub fn assert_names(message: &str, at: Caller, parts: &[&str]) {
    for part in parts {
        assert!(
            message.contains(part),
            "message does not contain {part:?}: {message}"
        );
    }
    let at = format!("{}:{}:", at.file, at.line);
    assert!(
        message.contains(&at),
        "message does not name the caller's line {at:?}: {message}"
    );
}
