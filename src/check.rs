//! Is a hand-written gradient right? Element-by-element comparison of two tensors.

use crate::Tensor;
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
pub(crate) fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
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
pub(crate) fn write_elements(f: &mut fmt::Formatter<'_>, elements: &[Element]) -> fmt::Result {
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
