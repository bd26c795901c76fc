//! Is a hand-written gradient right? Element-by-element comparison of two tensors
//! ([`compare`]), and of the tape's gradient with finite differences ([`gradcheck`],
//! [`gradcheck_many`], [`directional`]).
//!
//! # How gradcheck decides
//!
//! This is the one description of the method; the functions link here.
//!
//! For each element (or direction) `f` is evaluated on a stencil `x + k h`, k = -2..=2,
//! first with `h0 = 2^round(log2(cbrt(eps) max(1, |x_i|)))` (7.6e-6 for `|x_i| <= 1`;
//! a power of two, so `x_i + k h` is exact), then with the step halved again and again,
//! at most 12 times (each halving reuses two of the four evaluations). At each step:
//! - the fourth-order central difference `(8 (f(x+h) - f(x-h)) - (f(x+2h) - f(x-2h))) / 12h`
//!   estimates the derivative (truncation error `O(h^4)`);
//! - the second-order one-sided slopes `(4 f(x+h) - f(x+2h) - 3 f(x)) / 2h` and its mirror
//!   agree to `O(h^2)` on any smooth function, however curved: where they disagree beyond
//!   the tolerance, the stencil straddles a kink (or the curvature is too large for this
//!   step), and the step shrinks;
//! - a stencil with a non-finite value has left the domain of `f` (`ln` below 0, say):
//!   the step shrinks.
//!
//! An element is **smooth** at the first step where the slopes agree and the central
//! difference agrees with that of the previous (larger) step that also looked smooth:
//! the tape's value must then equal the central difference within the tolerance. It is
//! a **kink** only if the slopes still disagree at the smallest step: the tape's value
//! must then lie between the one-sided slopes (any subgradient does;
//! [`GradCheck::kinks`] counts these), taken at the step of the last run of disagreeing
//! steps where they moved least from the step before (large steps can straddle a second
//! kink or see curvature; small ones carry rounding noise), within the tolerance widened
//! by twice that movement. If `f(x)` is not finite,
//! or no step gives a finite stencil, the element **cannot be checked**
//! ([`GradCheck::unchecked`]) and the check does not pass.
//!
//! The tape's gradient is taken with a seed (upstream) of 2 and halved, which is exact:
//! a custom op whose hand-written backward ignores its upstream (the most common slip)
//! then fails even when it is the last op of `f`.
//!
//! The tolerance is `abs + rel * |finite difference|` ([`Tolerance::finite_differences`]:
//! 1e-8 and 1e-5), widened by the rounding noise of the differences, `8 eps max|f| / h`.
//! Where that noise is larger than the nominal tolerance (`f` much larger than its
//! derivative, or a very small step), the report says where and by how much
//! ([`GradCheck::widened`]), so a PASS never claims more precision than was checked.
//! The tape's own magnitude never widens the tolerance, so an infinite or NaN gradient
//! fails wherever the finite differences are finite.
//!
//! What it cannot do: resolve a kink closer to `x` than the smallest step (1.9e-9 for
//! `|x| <= 1`; such an element is a kink and any value between the slopes passes),
//! or see an error smaller than the widened tolerance. Measured on random graphs in
//! `tests/honesty.rs`: no false alarm, and a 1e-3 relative error caught in at least 99.98%
//! of cases of every kind (the misses: elements whose share of a large `f` is below its
//! rounding noise, which the report's widened tolerance states).

use crate::{Tape, Tensor, Var};
use std::fmt;

/// How close two elements must be: equal within `abs` absolute error, or within `rel`
/// relative error (`approx`'s `relative_eq`). NaN equals NaN and inf equals inf of the
/// same sign: a gradient that is NaN where the reference is NaN is not wrong.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Absolute tolerance, for elements near zero.
    pub abs: f64,
    /// Relative tolerance, as a fraction of the larger magnitude.
    pub rel: f64,
}

impl Default for Tolerance {
    /// `abs = 1e-12`, `rel = 1e-9`: tight enough that only rounding passes.
    fn default() -> Self {
        Tolerance {
            abs: 1e-12,
            rel: 1e-9,
        }
    }
}

impl Tolerance {
    /// Whether `got` is close enough to `want`.
    pub fn accepts(&self, got: f64, want: f64) -> bool {
        (got.is_nan() && want.is_nan())
            || approx::relative_eq!(got, want, epsilon = self.abs, max_relative = self.rel)
    }
}

/// `|got - want|`, with a NaN on one side only counting as an infinite error.
fn abs_error(got: f64, want: f64) -> f64 {
    match (got.is_nan(), want.is_nan()) {
        (true, true) => 0.0,
        (false, false) if got == want => 0.0,
        (false, false) => (got - want).abs(),
        _ => f64::INFINITY,
    }
}

/// One element of a [`Comparison`].
#[derive(Debug, Clone, PartialEq)]
pub struct Element {
    /// Flat (row-major) index.
    pub flat: usize,
    /// Multi-index, one entry per dimension.
    pub index: Vec<usize>,
    /// The value being checked.
    pub got: f64,
    /// The reference value.
    pub want: f64,
    /// `|got - want|` (inf where exactly one side is NaN).
    pub abs_error: f64,
    /// `abs_error / max(|got|, |want|)` (0 where both are 0).
    pub rel_error: f64,
    /// Whether the element sits at a kink, when the caller said (see
    /// [`Comparison::with_kinks`]).
    pub at_kink: Option<bool>,
    /// Whether this element is outside the tolerance (the report's table marks it FAIL).
    pub fails: bool,
}

/// The result of [`compare`]: how many elements were checked and failed, the largest
/// errors, and the worst elements.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    got_shape: Vec<usize>,
    want_shape: Vec<usize>,
    tolerance: Tolerance,
    checked: usize,
    failing: usize,
    /// Flat indices of the failing elements, for [`Comparison::with_kinks`].
    failing_flat: Vec<usize>,
    failing_at_kinks: Option<usize>,
    max_abs_error: f64,
    max_rel_error: f64,
    /// Up to [`Comparison::SHOWN`] elements, worst first.
    worst: Vec<Element>,
}

/// Compare `got` with `want` element by element under `tol`.
///
/// Never panics: tensors of different shapes give a failed report that names both.
///
/// ```
/// use tapegrad::Tensor;
/// use tapegrad::check::{compare, Tolerance};
/// let got = Tensor::from(vec![0.0, -0.25, 0.5]);
/// let want = Tensor::from(vec![0.0, -0.25, -0.5]);
/// let report = compare(&got, &want, Tolerance::default());
/// assert!(!report.passed());
/// assert_eq!(report.worst_index(), Some(2));
/// assert_eq!(report.max_abs_error(), 1.0);
/// ```
pub fn compare(got: &Tensor, want: &Tensor, tol: Tolerance) -> Comparison {
    let mut report = Comparison {
        got_shape: got.shape().to_vec(),
        want_shape: want.shape().to_vec(),
        tolerance: tol,
        checked: 0,
        failing: 0,
        failing_flat: Vec::new(),
        failing_at_kinks: None,
        max_abs_error: 0.0,
        max_rel_error: 0.0,
        worst: Vec::new(),
    };
    if got.shape() != want.shape() {
        return report;
    }
    // Rank by how far each element is outside its tolerance, so the worst element is the
    // one that fails most clearly, whatever its magnitude.
    let mut ranked: Vec<(f64, usize)> = Vec::new();
    for (flat, (&g, &w)) in got.data().iter().zip(want.data()).enumerate() {
        let abs = abs_error(g, w);
        let rel = rel_error(abs, g, w);
        report.checked += 1;
        report.max_abs_error = report.max_abs_error.max(abs);
        report.max_rel_error = report.max_rel_error.max(rel);
        let fails = !tol.accepts(g, w);
        if fails {
            report.failing += 1;
            report.failing_flat.push(flat);
        }
        // An infinite error (inf against a number, NaN against a number) is the worst.
        let excess = if abs.is_finite() {
            abs / (tol.abs + tol.rel * g.abs().max(w.abs())).max(f64::MIN_POSITIVE)
        } else {
            f64::INFINITY
        };
        let excess = if fails {
            excess.max(1.0)
        } else {
            excess.min(1.0)
        };
        insert_ranked(&mut ranked, (excess, flat), Comparison::SHOWN);
    }
    report.worst = ranked
        .into_iter()
        .map(|(_, flat)| {
            let (g, w) = (got.data()[flat], want.data()[flat]);
            let abs_error = abs_error(g, w);
            Element {
                flat,
                index: unravel(flat, got.shape()),
                got: g,
                want: w,
                abs_error,
                rel_error: rel_error(abs_error, g, w),
                at_kink: None,
                fails: !tol.accepts(g, w),
            }
        })
        .collect();
    report
}

/// Keep the `keep` largest entries (by excess, ties to the lower index), sorted.
fn insert_ranked(ranked: &mut Vec<(f64, usize)>, entry: (f64, usize), keep: usize) {
    let at = ranked.partition_point(|&(e, _)| e >= entry.0);
    if at < keep {
        ranked.insert(at, entry);
        ranked.truncate(keep);
    }
}

fn rel_error(abs: f64, got: f64, want: f64) -> f64 {
    let scale = got.abs().max(want.abs());
    if abs == 0.0 {
        0.0
    } else if scale == 0.0 || !scale.is_finite() {
        f64::INFINITY
    } else {
        abs / scale
    }
}

/// Row-major multi-index of a flat index.
fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        index[d] = flat % shape[d];
        flat /= shape[d];
    }
    index
}

impl Comparison {
    /// How many of the worst elements a report keeps and shows.
    pub const SHOWN: usize = 5;

    /// Whether the shapes agree and every element is within tolerance.
    pub fn passed(&self) -> bool {
        self.shapes_match() && self.failing == 0
    }

    /// Whether `got` and `want` had the same shape (if not, nothing was compared).
    pub fn shapes_match(&self) -> bool {
        self.got_shape == self.want_shape
    }

    /// Number of elements compared.
    pub fn checked(&self) -> usize {
        self.checked
    }

    /// Number of elements outside tolerance.
    pub fn failing(&self) -> usize {
        self.failing
    }

    /// Largest `|got - want|` (inf where only one side is NaN).
    pub fn max_abs_error(&self) -> f64 {
        self.max_abs_error
    }

    /// Largest relative error.
    pub fn max_rel_error(&self) -> f64 {
        self.max_rel_error
    }

    /// Flat index of the worst element (the one furthest outside its tolerance), or
    /// `None` if nothing was compared.
    pub fn worst_index(&self) -> Option<usize> {
        self.worst.first().map(|e| e.flat)
    }

    /// The worst elements, worst first (at most [`Comparison::SHOWN`]).
    pub fn worst(&self) -> &[Element] {
        &self.worst
    }

    /// The tolerance used.
    pub fn tolerance(&self) -> Tolerance {
        self.tolerance
    }

    /// Number of failing elements that sit at kinks, if [`Comparison::with_kinks`] said
    /// where the kinks are.
    pub fn failing_at_kinks(&self) -> Option<usize> {
        self.failing_at_kinks
    }

    /// Mark which elements sit at kinks (`kinks[flat]`, one entry per element compared),
    /// so the report says whether the failures are there. Where the shapes differed
    /// nothing was compared, and the mask is not needed.
    ///
    /// # Panics
    /// At the caller's line, if the shapes matched and the mask's length is not the
    /// number of elements.
    #[track_caller]
    pub fn with_kinks(mut self, kinks: &[bool]) -> Comparison {
        if !self.shapes_match() {
            return self;
        }
        if kinks.len() != self.checked {
            panic!(
                "tapegrad: with_kinks: the mask has {} entries for {} elements compared (at {})",
                kinks.len(),
                self.checked,
                std::panic::Location::caller()
            );
        }
        for e in &mut self.worst {
            e.at_kink = Some(kinks[e.flat]);
        }
        self.failing_at_kinks = Some(self.failing_flat.iter().filter(|&&i| kinks[i]).count());
        self
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tol = self.tolerance;
        if !self.shapes_match() {
            return write!(
                f,
                "FAIL: shapes differ: got {:?}, want {:?}; no element compared",
                self.got_shape, self.want_shape
            );
        }
        let verdict = if self.passed() { "PASS" } else { "FAIL" };
        write!(
            f,
            "{verdict}: {} of {} elements outside tolerance (abs {:e}, rel {:e}); \
             max abs error {:.3e}, max rel error {:.3e}",
            self.failing, self.checked, tol.abs, tol.rel, self.max_abs_error, self.max_rel_error
        )?;
        if let Some(k) = self.failing_at_kinks {
            write!(f, "; {k} of the failures at kinks")?;
        }
        write_elements(f, &self.worst)
    }
}

/// The worst-elements table shared by the reports of this module.
fn write_elements(f: &mut fmt::Formatter<'_>, elements: &[Element]) -> fmt::Result {
    if elements.is_empty() {
        return Ok(());
    }
    let index: Vec<String> = elements.iter().map(|e| format!("{:?}", e.index)).collect();
    let w = index.iter().map(String::len).max().unwrap_or(0).max(5);
    write!(
        f,
        "\n  {:<w$}  {:>24}  {:>24}  {:>10}  {:>10}",
        "index", "got", "want", "abs err", "rel err"
    )?;
    for (e, i) in elements.iter().zip(&index) {
        write!(
            f,
            "\n  {:<w$}  {:>24}  {:>24}  {:>10.3e}  {:>10.3e}",
            i, e.got, e.want, e.abs_error, e.rel_error
        )?;
        if e.fails {
            f.write_str("  FAIL")?;
        }
        if e.at_kink == Some(true) {
            f.write_str("  at a kink")?;
        }
    }
    Ok(())
}

// ---- gradcheck: the tape's gradient against finite differences (method: module docs)

impl Tolerance {
    /// Defaults for comparing against finite differences: `abs = 1e-8`, `rel = 1e-5`.
    /// The fourth-order central difference [`gradcheck`] uses is accurate to about
    /// `1e-10` relative on smooth functions, so these leave room for rounding while
    /// every gradient that is wrong by more than that still fails.
    pub fn finite_differences() -> Tolerance {
        Tolerance {
            abs: 1e-8,
            rel: 1e-5,
        }
    }
}

/// How many times the step may be halved: the smallest step is `h0 / 2^LEVELS` (1.9e-9
/// for |x| <= 1). Smaller steps would resolve kinks closer to x, but the rounding
/// noise of the differences grows as the step shrinks.
const LEVELS: u32 = 12;

/// `cbrt(f64::EPSILON)`: the relative size of the first step.
const STEP: f64 = 6.055_454_452_393_343e-6;

/// The first step for an element of magnitude `x`: a power of two near
/// `STEP * max(1, |x|)`, so that `x + k h` is exact for small `k`.
fn first_step(x: f64) -> f64 {
    let h = STEP * x.abs().max(1.0);
    if !h.is_finite() {
        return h;
    }
    2f64.powi(h.log2().round() as i32)
}

/// What finite differences say about one element (or direction).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Verdict {
    /// `f` is smooth here with derivative `want`; accepted within `slack`.
    Smooth { want: f64, slack: f64, nominal: f64 },
    /// The slopes still disagree at the smallest step: any value in `[lo, hi]`
    /// (within `slack`) is a subgradient. `want` is the central difference there.
    Kink {
        lo: f64,
        hi: f64,
        want: f64,
        slack: f64,
        nominal: f64,
    },
    /// `f` is not finite at `x`, or at every stencil tried.
    Unchecked,
}

/// The estimates from one stencil `f(x + k h)`, k = -2..=2.
#[derive(Clone, Copy)]
struct Stencil {
    central: f64,
    /// Second-order one-sided slopes.
    left: f64,
    right: f64,
    /// First-order one-sided slopes (valid bounds too when a kink sits between h and 2h).
    left1: f64,
    right1: f64,
    slack: f64,
    nominal: f64,
}

impl Stencil {
    fn new([m2, m1, f0, p1, p2]: [f64; 5], h: f64, tol: Tolerance) -> Option<Stencil> {
        if ![m2, m1, p1, p2].iter().all(|v| v.is_finite()) {
            return None;
        }
        let central = (8.0 * (p1 - m1) - (p2 - m2)) / (12.0 * h);
        let right = (4.0 * p1 - p2 - 3.0 * f0) / (2.0 * h);
        let left = (3.0 * f0 - 4.0 * m1 + m2) / (2.0 * h);
        let largest = [m2, m1, f0, p1, p2]
            .iter()
            .fold(0.0f64, |m, v| m.max(v.abs()));
        let noise = 8.0 * f64::EPSILON * largest / h;
        let magnitude = central.abs().max(left.abs()).max(right.abs());
        let nominal = tol.abs + tol.rel * magnitude;
        Some(Stencil {
            central,
            left,
            right,
            left1: (f0 - m1) / h,
            right1: (p1 - f0) / h,
            slack: nominal + noise,
            nominal,
        })
    }

    fn smooth(&self) -> bool {
        (self.right - self.left).abs() <= self.slack
    }
}

/// Judge `f` around a point along one direction: `at(t)` is `f(x + t d)`, `f0 = f(x)`.
fn probe(f0: f64, h0: f64, tol: Tolerance, mut at: impl FnMut(f64) -> f64) -> Verdict {
    if !(f0.is_finite() && h0 > 0.0 && h0.is_finite()) {
        return Verdict::Unchecked;
    }
    let mut h = h0;
    let (mut m2, mut p2) = (at(-2.0 * h), at(2.0 * h));
    let mut previous: Option<Stencil> = None;
    let mut last: Option<Stencil> = None;
    // The steps (the last run of them) where the slopes disagreed: `(lo, hi, slack)` of
    // the interval they span at each.
    let mut kinked: Vec<(f64, f64, f64)> = Vec::new();
    for _ in 0..=LEVELS {
        let (m1, p1) = (at(-h), at(h));
        if let Some(s) = Stencil::new([m2, m1, f0, p1, p2], h, tol) {
            if s.smooth() {
                if let Some(p) = &previous
                    && (s.central - p.central).abs() <= s.slack.max(p.slack)
                {
                    return Verdict::Smooth {
                        want: s.central,
                        slack: s.slack,
                        nominal: s.nominal,
                    };
                }
                previous = Some(s);
                kinked.clear();
            } else {
                previous = None;
                let lo = s.left.min(s.right).min(s.left1).min(s.right1);
                let hi = s.left.max(s.right).max(s.left1).max(s.right1);
                kinked.push((lo, hi, s.slack));
            }
            last = Some(s);
        }
        // The next stencil's outer points are this one's inner points.
        (m2, p2) = (m1, p1);
        h /= 2.0;
    }
    match (last, steadiest(&kinked)) {
        (None, _) => Verdict::Unchecked,
        (Some(s), Some((lo, hi, slack))) if !s.smooth() => Verdict::Kink {
            lo,
            hi,
            want: s.central,
            slack,
            nominal: s.nominal,
        },
        (Some(s), _) => Verdict::Smooth {
            want: s.central,
            slack: s.slack,
            nominal: s.nominal,
        },
    }
}

/// The kink interval to judge by, from the intervals `(lo, hi, slack)` the slopes
/// spanned at successive steps: the one whose ends moved least from the step before.
/// Large steps can straddle a second kink or see curvature, small ones carry rounding
/// noise that the estimate `8 eps max|f| / h` can miss (`f` computed with cancellation);
/// where the ends hold still, the slopes are the one-sided derivatives. The slack
/// covers twice that movement.
fn steadiest(kinked: &[(f64, f64, f64)]) -> Option<(f64, f64, f64)> {
    match kinked {
        [] => None,
        [only] => Some(*only),
        _ => kinked
            .windows(2)
            .map(|w| {
                let ((l0, h0, _), (l1, h1, slack)) = (w[0], w[1]);
                let moved = (l1 - l0).abs().max((h1 - h0).abs());
                (moved, (l1, h1, slack.max(2.0 * moved)))
            })
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, interval)| interval),
    }
}

impl Verdict {
    /// How far `tape` is outside what this verdict accepts, in units of the tolerance
    /// (at most 1: accepted; `inf`: not a number, or infinitely far).
    fn excess(&self, tape: f64) -> f64 {
        let outside = |off: f64, slack: f64| {
            if off.is_nan() || off.is_infinite() {
                f64::INFINITY
            } else {
                off / slack
            }
        };
        match *self {
            Verdict::Smooth { want, slack, .. } => outside(abs_error(tape, want), slack),
            Verdict::Kink { lo, hi, slack, .. } => {
                if tape.is_nan() {
                    return f64::INFINITY;
                }
                let beyond = (tape - hi).max(lo - tape).max(0.0);
                outside(beyond, slack).max(0.0)
            }
            Verdict::Unchecked => f64::INFINITY,
        }
    }

    fn want(&self) -> f64 {
        match *self {
            Verdict::Smooth { want, .. } | Verdict::Kink { want, .. } => want,
            Verdict::Unchecked => f64::NAN,
        }
    }

    /// The tolerance applied and the nominal one (`abs + rel |fd|`).
    fn tolerances(&self) -> Option<(f64, f64)> {
        match *self {
            Verdict::Smooth { slack, nominal, .. } | Verdict::Kink { slack, nominal, .. } => {
                Some((slack, nominal))
            }
            Verdict::Unchecked => None,
        }
    }
}

/// The report of [`gradcheck`] or [`directional`]: the tape's gradient against finite
/// differences, element by element (or direction by direction).
#[derive(Debug, Clone, PartialEq)]
pub struct GradCheck {
    /// Which input of [`gradcheck_many`] this report is about.
    input: Option<usize>,
    what: &'static str,
    value: f64,
    tolerance: Tolerance,
    checked: usize,
    failing: usize,
    kinks: usize,
    /// Elements that could not be checked (f not finite), first few by index.
    unchecked: Vec<Vec<usize>>,
    unchecked_count: usize,
    /// The widest tolerance applied, where rounding noise widened it: (multi-index,
    /// applied absolute tolerance, nominal tolerance there).
    widest: Option<(Vec<usize>, f64, f64)>,
    /// Up to [`Comparison::SHOWN`] elements, worst first; `want` is the central
    /// difference.
    worst: Vec<Element>,
}

/// Check the tape's gradient of `f` at `at` against finite differences, with
/// [`Tolerance::finite_differences`]. See [`gradcheck_with`].
///
/// # Panics
/// At the caller's line, if `f` returns a var with more than one element.
#[track_caller]
pub fn gradcheck(f: impl for<'t> Fn(&'t Tape, Var<'t>) -> Var<'t>, at: &Tensor) -> GradCheck {
    gradcheck_with(f, at, Tolerance::finite_differences())
}

/// Check the tape's gradient of `f` at `at` against finite differences, element by
/// element, with adaptive steps that resolve kinks near `x` and stay inside the domain
/// of `f` ([the method](crate::check#how-gradcheck-decides)). `f` builds a one-element
/// var from a var holding `at`; it is called once for the gradient, then about 6 times
/// per smooth element and up to 30 times per element at or near a kink.
///
/// At a kink (the hinge loss at `pred * target == 1`, say) the tape's value passes if it
/// lies between the one-sided slopes, and [`GradCheck::kinks`] counts the element; an
/// infinite or NaN gradient fails; an element where `f` is not finite cannot be checked,
/// and the check does not pass.
///
/// ```
/// use tapegrad::check::gradcheck;
/// use tapegrad::losses::hinge;
/// use tapegrad::Tensor;
///
/// let target = Tensor::from(vec![1.0, -1.0, 1.0]);
/// let at = Tensor::from(vec![1.0, 0.5, -2.0]); // element 0 is a tie: 1 * 1 == 1
/// let report = gradcheck(|tape, p| hinge(p, tape.constant(target.clone())), &at);
/// assert!(report.passed(), "{report}");
/// assert_eq!(report.kinks(), 1);
/// ```
///
/// # Panics
/// At the caller's line, if `f` returns a var with more than one element.
#[track_caller]
pub fn gradcheck_with(
    f: impl for<'t> Fn(&'t Tape, Var<'t>) -> Var<'t>,
    at: &Tensor,
    tol: Tolerance,
) -> GradCheck {
    let mut reports = check_inputs(&of_one(f), std::slice::from_ref(at), tol, false);
    reports.remove(0)
}

/// Check the tape's gradient of `f` with respect to each of several inputs against finite
/// differences, element by element, with [`Tolerance::finite_differences`]: one report
/// per input, in order, each naming its input (`input 0`, `input 1`, ...). `f` builds a
/// one-element var from vars holding `at` (in that order); the method and the kink
/// handling are [`gradcheck_with`]'s, each input's elements moved while the others stay.
///
/// ```
/// use tapegrad::check::gradcheck_many;
/// use tapegrad::Tensor;
///
/// let x = Tensor::new(vec![1.0, -2.0, 0.5, 3.0], &[2, 2]).unwrap();
/// let w = Tensor::new(vec![0.3, -0.7, 1.1, 0.2], &[2, 2]).unwrap();
/// let b = Tensor::from(vec![0.1, -0.4]);
/// let reports = gradcheck_many(|_, v| (v[0].matmul(v[1]) + v[2]).relu().sum(), &[x, w, b]);
/// assert_eq!(reports.len(), 3);
/// for report in &reports {
///     assert!(report.passed(), "{report}");
/// }
/// assert!(reports[2].to_string().starts_with("input 2: PASS"));
/// ```
///
/// # Panics
/// At the caller's line, if `at` is empty or `f` returns a var with more than one
/// element.
#[track_caller]
pub fn gradcheck_many(
    f: impl for<'t> Fn(&'t Tape, &[Var<'t>]) -> Var<'t>,
    at: &[Tensor],
) -> Vec<GradCheck> {
    if at.is_empty() {
        // An empty list of reports would pass every `for report in &reports` check.
        panic!(
            "tapegrad: gradcheck_many: no inputs to check (at {})",
            std::panic::Location::caller()
        );
    }
    check_inputs(&f, at, Tolerance::finite_differences(), true)
}

/// `f` of one input as a function of a slice of them.
fn of_one(
    f: impl for<'t> Fn(&'t Tape, Var<'t>) -> Var<'t>,
) -> impl for<'t> Fn(&'t Tape, &[Var<'t>]) -> Var<'t> {
    move |tape, x| f(tape, x[0])
}

/// The reports of [`gradcheck_many`] (inputs `named`) and [`gradcheck_with`] (one, not).
#[track_caller]
fn check_inputs(
    f: &impl for<'t> Fn(&'t Tape, &[Var<'t>]) -> Var<'t>,
    at: &[Tensor],
    tol: Tolerance,
    named: bool,
) -> Vec<GradCheck> {
    let (zero, grads) = value_and_grads(f, at);
    let mut inputs: Vec<Tensor> = at.to_vec();
    (0..at.len())
        .map(|k| {
            let mut x = at[k].data().to_vec();
            let judged: Vec<(f64, Verdict)> = (0..x.len())
                .map(|i| {
                    let xi = x[i];
                    let verdict = probe(zero, first_step(xi), tol, |t| {
                        x[i] = xi + t;
                        inputs[k] = Tensor::new(x.clone(), at[k].shape())
                            .expect("same shape as the checked point");
                        x[i] = xi;
                        eval(f, &inputs)
                    });
                    (grads[k].data()[i], verdict)
                })
                .collect();
            inputs[k] = at[k].clone();
            let mut report = GradCheck::new("element", zero, at[k].shape(), &judged, tol);
            report.input = named.then_some(k);
            report
        })
        .collect()
}

/// Check `<gradient, w>` against the finite differences of `f` along `w` for
/// `directions` random directions (seeded: the same directions every run), with
/// `w_i = v_i max(1, |x_i|)` (each element moves in proportion to its magnitude, as in
/// [`gradcheck_with`]), the same adaptive steps and [`Tolerance::finite_differences`].
///
/// For large inputs: it costs about `6 * directions + 1` evaluations of `f` (more where
/// a direction crosses kinks) instead of `6N`, so it runs at N = 10^6. It finds that a
/// gradient is wrong, not where; the report's elements are directions.
///
/// Direction `k` has `v_i = ±1` on about `N / 8^k` random elements (at least one) and
/// 0 elsewhere. A dense direction crosses every kink of `f` (every exact tie of a hinge
/// loss, say); there the check can only ask that `<gradient, v>` lie between the two
/// one-sided slopes, as in [`gradcheck_with`], which is a wide interval when there are
/// many kinks. The sparser directions are likely to miss every kink, and there the
/// check is as sharp as on a smooth function. Use at least 6 directions at N = 10^6.
///
/// # Panics
/// At the caller's line, if `f` returns a var with more than one element.
#[track_caller]
pub fn directional(
    f: impl for<'t> Fn(&'t Tape, Var<'t>) -> Var<'t>,
    at: &Tensor,
    directions: usize,
) -> GradCheck {
    let tol = Tolerance::finite_differences();
    let f = of_one(f);
    let (zero, grads) = value_and_grads(&f, std::slice::from_ref(at));
    let grad = &grads[0];
    let x = at.data();
    let n = x.len();
    let mut rng = SplitMix(0x7a9e_64ad);
    let judged: Vec<(f64, Verdict)> = (0..directions)
        .map(|k| {
            let support = n.checked_shr(3 * k as u32).unwrap_or(0).max(1);
            let keep = support as f64 / n.max(1) as f64;
            let mut v: Vec<f64> = (0..n)
                .map(|_| {
                    let r = rng.next();
                    let inside = ((r >> 11) as f64 / (1u64 << 53) as f64) < keep;
                    match (inside, r & 1) {
                        (false, _) => 0.0,
                        (true, 0) => 1.0,
                        (true, _) => -1.0,
                    }
                })
                .collect();
            if n > 0 && v.iter().all(|&vi| vi == 0.0) {
                v[(rng.next() % n as u64) as usize] = 1.0;
            }
            // Each element moves in proportion to its magnitude, as in `gradcheck`, so a
            // small element next to a large one stays inside its domain.
            let w: Vec<f64> = x
                .iter()
                .zip(&v)
                .map(|(xi, vi)| vi * xi.abs().max(1.0))
                .collect();
            let tape: Vec<f64> = grad.data().iter().zip(&w).map(|(g, wi)| g * wi).collect();
            let verdict = probe(zero, first_step(1.0), tol, |t| {
                let moved = x.iter().zip(&w).map(|(xi, wi)| xi + t * wi).collect();
                let moved = Tensor::new(moved, at.shape()).expect("same shape as the point");
                eval(&f, &[moved])
            });
            (crate::pairwise_sum(&tape), verdict)
        })
        .collect();
    GradCheck::new("direction", zero, &[directions], &judged, tol)
}

#[track_caller]
fn value_and_grads(
    f: &impl for<'t> Fn(&'t Tape, &[Var<'t>]) -> Var<'t>,
    at: &[Tensor],
) -> (f64, Vec<Tensor>) {
    let tape = Tape::new();
    let x: Vec<Var> = at.iter().map(|a| tape.var(a.clone())).collect();
    let y = f(&tape, &x);
    let value = one_element(y);
    // Seeded with 2 and halved (both exact): a hand-written backward that ignores its
    // upstream gives twice the truth here, so it cannot pass as the root of `f`.
    let grads = y.backward_with(Tensor::full(&y.shape(), 2.0));
    (
        value,
        x.iter().map(|&v| grads.wrt(v).map(|g| g * 0.5)).collect(),
    )
}

#[track_caller]
fn eval(f: &impl for<'t> Fn(&'t Tape, &[Var<'t>]) -> Var<'t>, at: &[Tensor]) -> f64 {
    let tape = Tape::new();
    let x: Vec<Var> = at.iter().map(|a| tape.constant(a.clone())).collect();
    one_element(f(&tape, &x))
}

#[track_caller]
fn one_element(y: Var<'_>) -> f64 {
    let value = y.value();
    if value.len() != 1 {
        panic!(
            "tapegrad: gradcheck: f must return a one-element var, got shape {:?}; reduce it \
             to one number, e.g. with .sum() (at {})",
            value.shape(),
            std::panic::Location::caller()
        );
    }
    value.data()[0]
}

/// A small deterministic generator (splitmix64), so random directions repeat.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl GradCheck {
    /// How many unchecked elements a report names.
    const UNCHECKED_SHOWN: usize = 5;

    fn new(
        what: &'static str,
        value: f64,
        shape: &[usize],
        judged: &[(f64, Verdict)],
        tol: Tolerance,
    ) -> GradCheck {
        let mut report = GradCheck {
            input: None,
            what,
            value,
            tolerance: tol,
            checked: judged.len(),
            failing: 0,
            kinks: 0,
            unchecked: Vec::new(),
            unchecked_count: 0,
            widest: None,
            worst: Vec::new(),
        };
        let mut ranked = Vec::new();
        let mut widest = (1.0, 0);
        for (flat, (tape, verdict)) in judged.iter().enumerate() {
            let Some((slack, nominal)) = verdict.tolerances() else {
                report.unchecked_count += 1;
                if report.unchecked.len() < Self::UNCHECKED_SHOWN {
                    report.unchecked.push(unravel(flat, shape));
                }
                continue;
            };
            let excess = verdict.excess(*tape);
            report.failing += usize::from(excess > 1.0);
            report.kinks += usize::from(matches!(verdict, Verdict::Kink { .. }));
            insert_ranked(&mut ranked, (excess, flat), Comparison::SHOWN);
            // Widened by more than a tenth: say so.
            if slack > 1.1 * nominal && slack / nominal > widest.0 {
                widest = (slack / nominal, flat);
                report.widest = Some((unravel(flat, shape), slack, nominal));
            }
        }
        report.worst = ranked
            .into_iter()
            .map(|(excess, flat)| {
                let (got, verdict) = judged[flat];
                let want = verdict.want();
                let abs_error = abs_error(got, want);
                Element {
                    flat,
                    index: unravel(flat, shape),
                    got,
                    want,
                    abs_error,
                    rel_error: rel_error(abs_error, got, want),
                    at_kink: Some(matches!(verdict, Verdict::Kink { .. })),
                    fails: excess > 1.0,
                }
            })
            .collect();
        report
    }

    /// Whether every element (or direction) was checked and agrees with finite
    /// differences.
    pub fn passed(&self) -> bool {
        self.failing == 0 && self.unchecked_count == 0
    }

    /// Number of elements (or directions) in the report.
    pub fn checked(&self) -> usize {
        self.checked
    }

    /// Number of elements (or directions) that disagree with finite differences.
    pub fn failing(&self) -> usize {
        self.failing
    }

    /// Number of elements (or directions) at a kink: where the one-sided slopes still
    /// disagree at the smallest step.
    pub fn kinks(&self) -> usize {
        self.kinks
    }

    /// Number of elements (or directions) that could not be checked: `f` is not finite
    /// at the point, or at every step tried around it. A report with any is not a pass.
    pub fn unchecked(&self) -> usize {
        self.unchecked_count
    }

    /// Where rounding noise in `f` widened the tolerance by more than a tenth, the
    /// widest case: the element's multi-index, the absolute tolerance applied there and
    /// the nominal one (`abs + rel |finite difference|`).
    pub fn widened(&self) -> Option<(&[usize], f64, f64)> {
        self.widest
            .as_ref()
            .map(|(index, applied, nominal)| (&index[..], *applied, *nominal))
    }

    /// The input this report is about, for a report of [`gradcheck_many`].
    pub fn input(&self) -> Option<usize> {
        self.input
    }

    /// The value of `f` at the checked point.
    pub fn value(&self) -> f64 {
        self.value
    }

    /// Flat index of the worst element (the failing one furthest outside its
    /// tolerance, else the closest to failing), `None` if nothing was checked.
    pub fn worst_index(&self) -> Option<usize> {
        self.worst.first().map(|e| e.flat)
    }

    /// The worst elements, worst first; `got` is the tape's value, `want` the central
    /// difference at the step the verdict was reached.
    pub fn worst(&self) -> &[Element] {
        &self.worst
    }
}

impl fmt::Display for GradCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed() { "PASS" } else { "FAIL" };
        if let Some(k) = self.input {
            write!(f, "input {k}: ")?;
        }
        write!(
            f,
            "{verdict}: {} of {} {}s disagree with finite differences (abs {:e}, rel {:e}",
            self.failing, self.checked, self.what, self.tolerance.abs, self.tolerance.rel,
        )?;
        if let Some((index, applied, nominal)) = &self.widest {
            write!(
                f,
                "; widened for rounding noise in f up to abs {applied:.2e} at {index:?}, \
                 {:.1}x the nominal {nominal:.2e}",
                applied / nominal
            )?;
        }
        write!(
            f,
            "); {} at kinks (accepted between the one-sided slopes); f = {}",
            self.kinks, self.value
        )?;
        if self.unchecked_count > 0 {
            let shown: Vec<String> = self.unchecked.iter().map(|i| format!("{i:?}")).collect();
            let more = self.unchecked_count - self.unchecked.len();
            write!(
                f,
                "\n  {} {}s cannot be checked (f is not finite at or around them): {}{}",
                self.unchecked_count,
                self.what,
                shown.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            )?;
        }
        write_elements(f, &self.worst)
    }
}
