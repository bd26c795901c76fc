//! Is a hand-written gradient right? Element-by-element comparison of two tensors.

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
        let excess = abs / (tol.abs + tol.rel * g.abs().max(w.abs())).max(f64::MIN_POSITIVE);
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

    /// Mark which elements sit at kinks (`kinks[flat]`), so the report says whether the
    /// failures are there. A mask of the wrong length is ignored.
    pub fn with_kinks(mut self, kinks: &[bool]) -> Comparison {
        if kinks.len() != self.checked {
            return self;
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
        if e.at_kink == Some(true) {
            f.write_str("  at a kink")?;
        }
    }
    Ok(())
}

// ---- gradcheck: the tape's gradient against finite differences --------------------

impl Tolerance {
    /// Defaults for comparing against finite differences: `abs = 1e-8`, `rel = 1e-5`.
    /// A central difference with the step [`gradcheck`] picks is accurate to about
    /// `1e-10` relative on smooth functions, so these leave room for rounding while
    /// every gradient that is wrong by more than a rounding error still fails.
    pub fn finite_differences() -> Tolerance {
        Tolerance {
            abs: 1e-8,
            rel: 1e-5,
        }
    }
}

/// The report of [`gradcheck`] or [`directional`]: the tape's gradient against finite
/// differences, element by element (or direction by direction).
#[derive(Debug, Clone, PartialEq)]
pub struct GradCheck {
    what: &'static str,
    value: f64,
    tolerance: Tolerance,
    checked: usize,
    failing: usize,
    kinks: usize,
    /// Up to [`Comparison::SHOWN`] elements, worst first; `want` is the central
    /// difference.
    worst: Vec<Element>,
}

/// One finite-difference probe: the function at `x + k h` (k = -2..=2) along some
/// direction, and the tape's directional derivative there.
struct Probe {
    tape: f64,
    /// `f(x - 2h), f(x - h), f(x), f(x + h), f(x + 2h)`.
    f: [f64; 5],
    h: f64,
}

impl Probe {
    /// Evaluate `at(k)` = `f(x + k h)` for k = ±1, ±2 around the known `f(x)`.
    fn new(tape: f64, zero: f64, h: f64, mut at: impl FnMut(f64) -> f64) -> Probe {
        Probe {
            tape,
            f: [at(-2.0), at(-1.0), zero, at(1.0), at(2.0)],
            h,
        }
    }

    /// How far this probe is outside its tolerance (≤ 1: passes), whether it sits at a
    /// kink, and the central difference.
    ///
    /// - The central difference `(8 (f(x+h) - f(x-h)) - (f(x+2h) - f(x-2h))) / 12h` is
    ///   compared with the tape within `tol`, widened by the rounding noise of the
    ///   differences (`8 eps |f| / h`).
    /// - The one-sided slopes are taken to second order,
    ///   `(4 f(x+h) - f(x+2h) - 3 f(x)) / 2h` and its mirror, so that on a smooth
    ///   function they agree to `O(h^2)` however curved it is. Where they disagree
    ///   beyond the tolerance there is a corner near `x`: the tape passes if its value
    ///   lies between the one-sided slopes (a valid subgradient), and the element counts
    ///   as a kink when they differ by more than 0.1%.
    fn judge(&self, tol: Tolerance) -> (f64, bool, f64) {
        let [m2, m1, f0, p1, p2] = self.f;
        let h = self.h;
        // Fourth-order central difference: truncation O(h^4), so even ln near 0.001
        // keeps to 1e-9 relative with this step.
        let central = (8.0 * (p1 - m1) - (p2 - m2)) / (12.0 * h);
        let (right1, left1) = ((p1 - f0) / h, (f0 - m1) / h);
        let right = (4.0 * p1 - p2 - 3.0 * f0) / (2.0 * h);
        let left = (3.0 * f0 - 4.0 * m1 + m2) / (2.0 * h);
        let magnitude = right.abs().max(left.abs()).max(self.tape.abs());
        let largest = self.f.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let noise = 8.0 * f64::EPSILON * largest / h;
        let slack = tol.abs + tol.rel * magnitude + noise;
        let spread = (right - left).abs();
        let kink = spread > slack && spread > 1e-3 * right.abs().max(left.abs());
        let off_central = abs_error(self.tape, central);
        // Near a corner the first-order slopes are valid bounds too (a corner between
        // x + h and x + 2h spoils the second-order ones).
        let lo = left.min(right).min(left1).min(right1) - slack;
        let hi = left.max(right).max(left1).max(right1) + slack;
        let passes = off_central <= slack || (spread > slack && (lo..=hi).contains(&self.tape));
        let excess = if passes {
            (off_central / slack).min(1.0)
        } else {
            // Off the central difference; at a corner, off the subgradient interval
            // (measured from its nearest end).
            let outside = if spread > slack {
                (self.tape - hi).max(lo - self.tape)
            } else {
                off_central
            };
            let outside = if outside.is_nan() {
                f64::INFINITY
            } else {
                outside
            };
            (outside / slack).max(1.0 + f64::EPSILON)
        };
        (excess, kink, central)
    }
}

/// Check the tape's gradient of `f` at `at` against central finite differences, with
/// [`Tolerance::finite_differences`]. See [`gradcheck_with`].
///
/// # Panics
/// If `f` returns a var with more than one element.
pub fn gradcheck(f: impl for<'t> Fn(&'t Tape, Var<'t>) -> Var<'t>, at: &Tensor) -> GradCheck {
    gradcheck_with(f, at, Tolerance::finite_differences())
}

/// Check the tape's gradient of `f` at `at` against finite differences, element by
/// element. `f` builds a one-element var from a var holding `at`; it is called once for
/// the gradient and four times per element (at `x_i ± h` and `x_i ± 2h`).
///
/// The step for element `i` is `h = cbrt(eps) * max(1, |x_i|)` (about `6e-6` for
/// `|x_i| <= 1`): the rounding error of a difference grows like `eps / h` and its
/// truncation error shrinks like `h^4`, and this step keeps both near `1e-10`
/// relative for ordinary functions; it scales with the element so large values still
/// move. The step is rounded so that `x_i + h` is exact.
///
/// The tape's value is compared with the fourth-order central difference
/// `(8 (f(x+h) - f(x-h)) - (f(x+2h) - f(x-2h))) / 12h` (truncation error `O(h^4)`).
/// Kinks: the one-sided slopes are taken to second order (from `f(x)`, `f(x ± h)` and
/// `f(x ± 2h)`), so on a smooth function they agree to `O(h^2)` however curved it is.
/// Where they disagree, `f` has a corner near `x_i`, and any value between the two
/// one-sided slopes is a valid (sub)gradient: the element passes if the tape's value
/// lies there. So `gradcheck` never fails the hinge loss at `pred * target == 1`, but it
/// does fail a gradient outside the two slopes there. Such elements are counted by
/// [`GradCheck::kinks`].
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
/// If `f` returns a var with more than one element.
pub fn gradcheck_with(
    f: impl for<'t> Fn(&'t Tape, Var<'t>) -> Var<'t>,
    at: &Tensor,
    tol: Tolerance,
) -> GradCheck {
    let (zero, grad) = value_and_grad(&f, at);
    let mut x = at.data().to_vec();
    let probes: Vec<Probe> = (0..x.len())
        .map(|i| {
            let xi = x[i];
            let h = (xi + STEP * xi.abs().max(1.0)) - xi;
            Probe::new(grad.data()[i], zero, h, |k| {
                x[i] = xi + k * h;
                let value = eval(&f, x.clone(), at.shape());
                x[i] = xi;
                value
            })
        })
        .collect();
    GradCheck::from_probes("element", zero, at.shape(), &probes, tol)
}

/// Check `<gradient, w>` against the central difference of `f` along `w` for `directions`
/// random directions (seeded: the same directions every run), with `h = cbrt(eps)`,
/// `w_i = v_i max(1, |x_i|)` (each element moves in proportion to its magnitude, as in
/// [`gradcheck_with`]) and [`Tolerance::finite_differences`].
///
/// For large inputs: it costs `4 * directions + 1` evaluations of `f` instead of `4N`,
/// so it runs at N = 10^6. It finds that a gradient is wrong, not where; the report's
/// elements are directions.
///
/// Direction `k` has `v_i = ±1` on about `N / 8^k` random elements (at least one) and
/// 0 elsewhere. A dense direction crosses every kink of `f` (every exact tie of a hinge
/// loss, say); there the check can only ask that `<gradient, v>` lie between the two
/// one-sided slopes, as in [`gradcheck_with`], which is a wide interval when there are
/// many kinks. The sparser directions are likely to miss every kink, and there the
/// check is as sharp as on a smooth function. Use at least 6 directions at N = 10^6.
///
/// # Panics
/// If `f` returns a var with more than one element.
pub fn directional(
    f: impl for<'t> Fn(&'t Tape, Var<'t>) -> Var<'t>,
    at: &Tensor,
    directions: usize,
) -> GradCheck {
    let (zero, grad) = value_and_grad(&f, at);
    let x = at.data();
    let n = x.len();
    let mut rng = SplitMix(0x7a9e_64ad);
    let probes: Vec<Probe> = (0..directions)
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
            Probe::new(crate::pairwise_sum(&tape), zero, STEP, |k| {
                let moved = x
                    .iter()
                    .zip(&w)
                    .map(|(xi, wi)| xi + k * STEP * wi)
                    .collect();
                eval(&f, moved, at.shape())
            })
        })
        .collect();
    GradCheck::from_probes(
        "direction",
        zero,
        &[directions],
        &probes,
        Tolerance::finite_differences(),
    )
}

/// `cbrt(f64::EPSILON)`: the relative step of the central differences.
const STEP: f64 = 6.055_454_452_393_343e-6;

fn value_and_grad(f: &impl for<'t> Fn(&'t Tape, Var<'t>) -> Var<'t>, at: &Tensor) -> (f64, Tensor) {
    let tape = Tape::new();
    let x = tape.var(at.clone());
    let y = f(&tape, x);
    let value = one_element(y);
    let grads = y.backward();
    (value, grads.wrt(x).clone())
}

fn eval(f: &impl for<'t> Fn(&'t Tape, Var<'t>) -> Var<'t>, x: Vec<f64>, shape: &[usize]) -> f64 {
    let tape = Tape::new();
    let at = Tensor::new(x, shape).expect("same shape as the checked point");
    one_element(f(&tape, tape.constant(at)))
}

#[track_caller]
fn one_element(y: Var<'_>) -> f64 {
    let value = y.value();
    if value.len() != 1 {
        panic!(
            "tapegrad: gradcheck: f must return a one-element var, got shape {:?}",
            value.shape()
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
    fn from_probes(
        what: &'static str,
        value: f64,
        shape: &[usize],
        probes: &[Probe],
        tol: Tolerance,
    ) -> GradCheck {
        let mut report = GradCheck {
            what,
            value,
            tolerance: tol,
            checked: probes.len(),
            failing: 0,
            kinks: 0,
            worst: Vec::new(),
        };
        let mut ranked = Vec::new();
        let mut judged = Vec::with_capacity(probes.len());
        for (flat, probe) in probes.iter().enumerate() {
            let (excess, kink, central) = probe.judge(tol);
            report.failing += usize::from(excess > 1.0);
            report.kinks += usize::from(kink);
            insert_ranked(&mut ranked, (excess, flat), Comparison::SHOWN);
            judged.push((kink, central));
        }
        report.worst = ranked
            .into_iter()
            .map(|(_, flat)| {
                let (kink, central) = judged[flat];
                let got = probes[flat].tape;
                let abs_error = abs_error(got, central);
                Element {
                    flat,
                    index: unravel(flat, shape),
                    got,
                    want: central,
                    abs_error,
                    rel_error: rel_error(abs_error, got, central),
                    at_kink: Some(kink),
                }
            })
            .collect();
        report
    }

    /// Whether every element (or direction) agrees with finite differences.
    pub fn passed(&self) -> bool {
        self.failing == 0
    }

    /// Number of elements (or directions) checked.
    pub fn checked(&self) -> usize {
        self.checked
    }

    /// Number of elements (or directions) that disagree with finite differences.
    pub fn failing(&self) -> usize {
        self.failing
    }

    /// Number of elements (or directions) at a kink: where the one-sided differences
    /// disagree by more than curvature explains.
    pub fn kinks(&self) -> usize {
        self.kinks
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
    /// difference.
    pub fn worst(&self) -> &[Element] {
        &self.worst
    }
}

impl fmt::Display for GradCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed() { "PASS" } else { "FAIL" };
        write!(
            f,
            "{verdict}: {} of {} {}s disagree with finite differences (abs {:e}, rel {:e}); \
             {} at kinks (accepted between the one-sided slopes); f = {}",
            self.failing,
            self.checked,
            self.what,
            self.tolerance.abs,
            self.tolerance.rel,
            self.kinks,
            self.value
        )?;
        write_elements(f, &self.worst)
    }
}
