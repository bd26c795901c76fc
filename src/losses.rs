//! Losses built from tape ops, and the closed forms they are checked against.
//!
//! Each loss `NAME(..) -> Var` is built from ordinary tape ops (no custom op, nothing
//! special-cased), so its gradient is whatever the ops' rules give; `NAME_grad_closed_form`
//! is the textbook gradient with respect to the prediction, written as plainly as numpy's
//! `np.where(..)` over the elements. All losses are means: `N` is the number of elements
//! of the prediction, or its number of rows for the classification losses.
//!
//! Where the two can agree exactly they do, kinks included: for `N` a power of two the
//! tape equals the closed form bit for bit (up to the sign of a zero) for every loss but
//! [`softmax_cross_entropy`]; for other `N` they differ by a rounding or two, because the
//! tape multiplies by `1/N` where the closed form divides by `N`. `tests/losses.rs` states
//! the tolerance per loss, and checks both against numpy (`tests/fixtures/losses.txt`).

use crate::max;
use crate::min;
use crate::select;
use crate::tape::Var;
use crate::tensor::{Tensor, broadcast_shapes, pairwise_sum};
use std::panic::Location;

/// The mean hinge loss `sum(max(0, 1 - pred * target)) / N`, N the number of elements of
/// `pred`, built from ordinary tape ops (nothing special-cased): its gradient is whatever
/// the ops' rules give, which is why it is a fair test of them.
///
/// At `pred * target == 1` the `max` routes the gradient to the constant 0, so the
/// gradient there is 0, exactly as [`hinge_grad_closed_form`].
///
/// # Panics
/// If `pred` is empty (the mean of nothing is not a loss), or `target` does not
/// broadcast to `pred`'s shape (the mean is over `pred`'s elements).
#[track_caller]
pub fn hinge<'t>(pred: Var<'t>, target: Var<'t>) -> Var<'t> {
    batch("hinge", pred, target);
    // (`mean` is `sum() / N` to the bit; ending in it lets `backward` from a loss not
    // yet read compute the value in the gradients' pass)
    max(0.0, 1.0 - pred * target).mean()
}

/// The seed's hand-derived gradient of [`hinge`] with respect to `pred`:
/// `np.where(pred * target < 1, -target / N, 0)`.
///
/// # Panics
/// If `pred` and `target` have different shapes, or are empty.
#[track_caller]
pub fn hinge_grad_closed_form(pred: &Tensor, target: &Tensor) -> Tensor {
    if pred.shape() != target.shape() || pred.is_empty() {
        panic!(
            "tapegrad: hinge_grad_closed_form: pred {:?} and target {:?} must have the same \
             non-empty shape (at {})",
            pred.shape(),
            target.shape(),
            Location::caller()
        );
    }
    let n = pred.len() as f64;
    let grad = pred
        .data()
        .iter()
        .zip(target.data())
        .map(|(&p, &t)| if p * t < 1.0 { -t / n } else { 0.0 })
        .collect();
    Tensor::new(grad, pred.shape()).expect("same length as pred")
}

// ---- the checks every loss makes --------------------------------------------------------

/// Panics at the caller's line unless `pred` is non-empty and `target` broadcasts to
/// `pred`'s shape (so that the mean is over `pred`'s elements).
#[track_caller]
fn batch(name: &str, pred: Var<'_>, target: Var<'_>) {
    let (p, t) = (pred.shape(), target.shape());
    if p.contains(&0) {
        panic!(
            "tapegrad: {name}: empty batch (pred has shape {p:?}); the mean over no elements \
             would be NaN (at {})",
            Location::caller()
        );
    }
    if broadcast_shapes(&p, &t).as_deref() != Some(&p[..]) {
        panic!(
            "tapegrad: {name}: target of shape {t:?} does not broadcast to pred's shape {p:?} \
             (at {})",
            Location::caller()
        );
    }
}

/// `N` as an `f64`; panics at the caller's line unless `pred` and `target` have the same
/// non-empty shape.
#[track_caller]
fn same_shape(name: &str, pred: &Tensor, target: &Tensor) -> f64 {
    if pred.shape() != target.shape() || pred.is_empty() {
        panic!(
            "tapegrad: {name}: pred {:?} and target {:?} must have the same non-empty shape \
             (at {})",
            pred.shape(),
            target.shape(),
            Location::caller()
        );
    }
    pred.len() as f64
}

/// `(N, C)` of scores `[N, C]` with one label per row, each below `C`; panics at the
/// caller's line otherwise.
#[track_caller]
fn classes(name: &str, shape: &[usize], labels: &[usize]) -> (usize, usize) {
    let &[n, c] = shape else {
        panic!(
            "tapegrad: {name}: scores must have shape [N, C], got {shape:?} (at {})",
            Location::caller()
        );
    };
    if n == 0 || labels.len() != n {
        panic!(
            "tapegrad: {name}: scores {shape:?} need N > 0 rows and one label per row, got {} \
             labels (at {})",
            labels.len(),
            Location::caller()
        );
    }
    if let Some((i, &y)) = labels.iter().enumerate().find(|(_, y)| **y >= c) {
        panic!(
            "tapegrad: {name}: label {y} of row {i} is not below C = {c} (scores {shape:?}) \
             (at {})",
            Location::caller()
        );
    }
    (n, c)
}

/// `f(p, t)` for every pair of elements, in a tensor of `pred`'s shape.
fn zip_map(pred: &Tensor, target: &Tensor, f: impl Fn(f64, f64) -> f64) -> Tensor {
    let grad = pred
        .data()
        .iter()
        .zip(target.data())
        .map(|(&p, &t)| f(p, t))
        .collect();
    Tensor::new(grad, pred.shape()).expect("same length as pred")
}

/// `np.sign`: -1, 0 or 1 (0 at ±0), NaN at NaN.
fn sign(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else if x == 0.0 {
        0.0
    } else {
        f64::NAN
    }
}

/// The logistic sigmoid `1 / (1 + e^-z)`, as `e^z / (1 + e^z)` for negative `z` so that
/// nothing overflows.
fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        z.exp() / (1.0 + z.exp())
    }
}

/// The flat indices `i * C + labels[i]` of the true classes in row-major `[N, C]`.
fn true_classes(labels: &[usize], c: usize) -> Vec<usize> {
    labels.iter().enumerate().map(|(i, &y)| i * c + y).collect()
}

// ---- squared hinge ----------------------------------------------------------------------

/// The mean squared hinge loss `mean(max(0, 1 - pred * target)^2)`.
///
/// Built as `m = max(0.0, 1.0 - pred * target); (m * m).mean()`. Closed form
/// ([`squared_hinge_grad_closed_form`]):
/// `np.where(pred * target < 1, -2 * target * (1 - pred * target) / N, 0)`.
///
/// The loss is differentiable at `pred * target == 1` (the kink of the hinge is squared
/// away): the gradient there is 0 in the closed form, in tapegrad (the `max` routes it to
/// the constant 0), and in JAX (`jnp.maximum(0, 1 - p * t) ** 2` gives -0.0, half the
/// slope times `2 m = 0`); PyTorch documents using the gradient where one exists.
///
/// # Panics
/// At the caller's line if `pred` is empty or `target` does not broadcast to its shape.
#[track_caller]
pub fn squared_hinge<'t>(pred: Var<'t>, target: Var<'t>) -> Var<'t> {
    batch("squared_hinge", pred, target);
    let m = max(0.0, 1.0 - pred * target);
    (m * m).mean()
}

/// The gradient of [`squared_hinge`] with respect to `pred`:
/// `np.where(pred * target < 1, -2 * target * (1 - pred * target) / N, 0)`.
///
/// # Panics
/// At the caller's line if `pred` and `target` have different shapes, or are empty.
#[track_caller]
pub fn squared_hinge_grad_closed_form(pred: &Tensor, target: &Tensor) -> Tensor {
    let n = same_shape("squared_hinge_grad_closed_form", pred, target);
    zip_map(pred, target, |p, t| {
        if p * t < 1.0 {
            -2.0 * t * (1.0 - p * t) / n
        } else {
            0.0
        }
    })
}

// ---- logistic ---------------------------------------------------------------------------

/// The mean logistic loss `mean(log(1 + exp(-pred * target)))` for labels ±1, computed
/// without overflow.
///
/// Built as `(-(pred * target)).softplus().mean()` (`softplus(z) = ln(1 + e^z)`, stable).
/// Closed form ([`logistic_grad_closed_form`]): `-target * sigmoid(-pred * target) / N`,
/// with the sigmoid computed stably. Smooth everywhere: no kink, and tapegrad, JAX and
/// PyTorch all give the derivative.
///
/// # Panics
/// At the caller's line if `pred` is empty or `target` does not broadcast to its shape.
#[track_caller]
pub fn logistic<'t>(pred: Var<'t>, target: Var<'t>) -> Var<'t> {
    batch("logistic", pred, target);
    (-(pred * target)).softplus().mean()
}

/// The gradient of [`logistic`] with respect to `pred`:
/// `-target * sigmoid(-pred * target) / N`, the sigmoid as `e^z / (1 + e^z)` for
/// negative `z` so that it never overflows.
///
/// # Panics
/// At the caller's line if `pred` and `target` have different shapes, or are empty.
#[track_caller]
pub fn logistic_grad_closed_form(pred: &Tensor, target: &Tensor) -> Tensor {
    let n = same_shape("logistic_grad_closed_form", pred, target);
    zip_map(pred, target, |p, t| -t * sigmoid(-p * t) / n)
}

// ---- softmax cross-entropy --------------------------------------------------------------

/// The mean softmax cross-entropy of scores `[N, C]` and labels (one class index per
/// row): `mean over i of -log_softmax(scores)[i, labels[i]]`.
///
/// Built as `-(scores.log_softmax(1).reshape(&[N * C]).index_select(0, &picked).mean())`,
/// `picked` the flat indices `i * C + y_i` of the true classes. Closed form
/// ([`softmax_cross_entropy_grad_closed_form`]): `(softmax(scores) - one_hot(labels)) / N`.
/// Smooth everywhere: no kink (a tie between scores is no kink either).
///
/// The tape computes the softmax of the backward as `exp(x - logsumexp(x))` and the
/// closed form as `e / sum(e)` with `e = exp(x - max(x))`, so the two differ by a few
/// roundings of the probabilities, more for scores of large magnitude.
///
/// # Panics
/// At the caller's line if `scores` is not 2-d, has no rows, has not one label per row,
/// or a label is not below `C`.
#[track_caller]
pub fn softmax_cross_entropy<'t>(scores: Var<'t>, labels: &[usize]) -> Var<'t> {
    let (n, c) = classes("softmax_cross_entropy", &scores.shape(), labels);
    let picked = true_classes(labels, c);
    -(scores
        .log_softmax(1)
        .reshape(&[n * c])
        .index_select(0, &picked)
        .mean())
}

/// The gradient of [`softmax_cross_entropy`] with respect to the scores:
/// `(softmax(scores) - one_hot(labels)) / N`, each row's softmax as `e / sum(e)` with
/// `e = exp(s - max(s))`.
///
/// # Panics
/// As [`softmax_cross_entropy`].
#[track_caller]
pub fn softmax_cross_entropy_grad_closed_form(scores: &Tensor, labels: &[usize]) -> Tensor {
    let name = "softmax_cross_entropy_grad_closed_form";
    let (n, c) = classes(name, scores.shape(), labels);
    let mut grad = Vec::with_capacity(n * c);
    for (row, &y) in scores.data().chunks_exact(c).zip(labels) {
        let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = row.iter().map(|&s| (s - m).exp()).collect();
        let total = pairwise_sum(&e);
        for (j, &e_j) in e.iter().enumerate() {
            let one_hot = if j == y { 1.0 } else { 0.0 };
            grad.push((e_j / total - one_hot) / n as f64);
        }
    }
    Tensor::new(grad, scores.shape()).expect("same length as scores")
}

// ---- multiclass hinge -------------------------------------------------------------------

/// The Weston–Watkins multiclass hinge loss as in CS231n, of scores `[N, C]` and labels:
/// `mean over i of sum over j != y_i of max(0, s_ij - s_iy_i + 1)`.
///
/// Built as `select(&wrong, max(0.0, scores - correct + 1.0), 0.0).sum_axis(1).mean()`,
/// `correct` the true-class scores picked with `index_select` (shape `[N, 1]`) and
/// `wrong` a constant mask, 0 at the true class: the `j == y_i` term is 0 and routes no
/// gradient. Closed form ([`multiclass_hinge_grad_closed_form`]): for `j != y_i`, `1/N`
/// where the margin `s_ij - s_iy_i + 1 > 0`, else 0; for `y_i`, `-count/N`, `count` the
/// positive margins of the row.
///
/// At a margin exactly 0 the closed form counts nothing, and neither does tapegrad (the
/// `max` routes the gradient to the constant 0). JAX's `jnp.maximum` splits it: `0.5/N`
/// to `s_j` and `-0.5/N` to `s_y` per such margin (checked with JAX 0.10.2); PyTorch
/// documents the minimum-norm subgradient per elementary op, which for `torch.maximum`
/// at a tie is half to each operand as well.
///
/// # Panics
/// At the caller's line if `scores` is not 2-d, has no rows, has not one label per row,
/// or a label is not below `C`.
#[track_caller]
pub fn multiclass_hinge<'t>(scores: Var<'t>, labels: &[usize]) -> Var<'t> {
    let (n, c) = classes("multiclass_hinge", &scores.shape(), labels);
    let picked = true_classes(labels, c);
    let correct = scores
        .reshape(&[n * c])
        .index_select(0, &picked)
        .reshape(&[n, 1]);
    let mut wrong = vec![1.0; n * c];
    for &k in &picked {
        wrong[k] = 0.0;
    }
    let wrong = Tensor::new(wrong, &[n, c]).expect("n * c elements");
    select(&wrong, max(0.0, scores - correct + 1.0), 0.0)
        .sum_axis(1)
        .mean()
}

/// The gradient of [`multiclass_hinge`] with respect to the scores, as CS231n writes it:
/// per row, `1/N` for each wrong class whose margin `s_j - s_y + 1` is positive, 0 for
/// the others, and `-count/N` for the true class, `count` the positive margins.
///
/// # Panics
/// As [`multiclass_hinge`].
#[track_caller]
pub fn multiclass_hinge_grad_closed_form(scores: &Tensor, labels: &[usize]) -> Tensor {
    let (n, c) = classes("multiclass_hinge_grad_closed_form", scores.shape(), labels);
    let n = n as f64;
    let mut grad = vec![0.0; scores.len()];
    for (i, (row, &y)) in scores.data().chunks_exact(c).zip(labels).enumerate() {
        let mut count = 0;
        for j in (0..c).filter(|&j| j != y) {
            if row[j] - row[y] + 1.0 > 0.0 {
                grad[i * c + j] = 1.0 / n;
                count += 1;
            }
        }
        grad[i * c + y] = -(count as f64) / n;
    }
    Tensor::new(grad, scores.shape()).expect("same length as scores")
}

// ---- huber ------------------------------------------------------------------------------

/// The mean Huber loss with threshold `delta`, `r = pred - target`:
/// `mean(where(|r| <= delta, 0.5 r^2, delta (|r| - 0.5 delta)))`.
///
/// Built as `a = (pred - target).abs(); q = min(a, delta); (q * (a - 0.5 * q)).mean()`
/// (`q (a - q/2)` is `a^2/2` where `a <= delta` and `delta (a - delta/2)` beyond).
/// Closed form ([`huber_grad_closed_form`]):
/// `np.where(|r| <= delta, r, delta * np.sign(r)) / N`.
///
/// The loss is C1: at `|r| == delta` both sides give `delta sign(r) / N`, and so do
/// tapegrad (the `min` routes the tie to the constant `delta`), JAX (with `jnp.where` or
/// `jnp.minimum`) and, by its documented rule (the gradient where one exists), PyTorch.
/// At `r == 0` all give 0.
///
/// # Panics
/// At the caller's line if `delta` is not positive and finite, `pred` is empty or
/// `target` does not broadcast to its shape.
#[track_caller]
pub fn huber<'t>(pred: Var<'t>, target: Var<'t>, delta: f64) -> Var<'t> {
    positive_delta("huber", delta);
    batch("huber", pred, target);
    let a = (pred - target).abs();
    let q = min(a, delta);
    (q * (a - 0.5 * q)).mean()
}

/// The gradient of [`huber`] with respect to `pred`:
/// `np.where(|r| <= delta, r, delta * np.sign(r)) / N`, `r = pred - target`.
///
/// # Panics
/// At the caller's line if `delta` is not positive and finite, or `pred` and `target`
/// have different shapes, or are empty.
#[track_caller]
pub fn huber_grad_closed_form(pred: &Tensor, target: &Tensor, delta: f64) -> Tensor {
    positive_delta("huber_grad_closed_form", delta);
    let n = same_shape("huber_grad_closed_form", pred, target);
    zip_map(pred, target, |p, t| {
        let r = p - t;
        let g = if r.abs() <= delta { r } else { delta * sign(r) };
        g / n
    })
}

/// Panics at the caller's line unless `delta` is positive and finite.
#[track_caller]
fn positive_delta(name: &str, delta: f64) {
    if !(delta > 0.0 && delta.is_finite()) {
        panic!(
            "tapegrad: {name}: delta must be positive and finite, got {delta} (at {})",
            Location::caller()
        );
    }
}

// ---- mse --------------------------------------------------------------------------------

/// The mean squared error `mean((pred - target)^2)`.
///
/// Built as `r = pred - target; (r * r).mean()`. Closed form
/// ([`mse_grad_closed_form`]): `2 * (pred - target) / N`. Smooth: no kink.
///
/// # Panics
/// At the caller's line if `pred` is empty or `target` does not broadcast to its shape.
#[track_caller]
pub fn mse<'t>(pred: Var<'t>, target: Var<'t>) -> Var<'t> {
    batch("mse", pred, target);
    let r = pred - target;
    (r * r).mean()
}

/// The gradient of [`mse`] with respect to `pred`: `2 * (pred - target) / N`.
///
/// # Panics
/// At the caller's line if `pred` and `target` have different shapes, or are empty.
#[track_caller]
pub fn mse_grad_closed_form(pred: &Tensor, target: &Tensor) -> Tensor {
    let n = same_shape("mse_grad_closed_form", pred, target);
    zip_map(pred, target, |p, t| 2.0 * (p - t) / n)
}

// ---- l1 ---------------------------------------------------------------------------------

/// The mean absolute error `mean(|pred - target|)`.
///
/// Built as `(pred - target).abs().mean()`. Closed form ([`l1_grad_closed_form`]):
/// `np.sign(pred - target) / N`, 0 where `pred == target`.
///
/// At `pred == target` the closed form gives 0 and so does tapegrad (`abs`'s gradient is
/// `np.sign`). JAX gives `+1/N` there: `jax.grad(jnp.abs)(0.0)` is 1.0 (checked with JAX
/// 0.10.2). PyTorch documents the minimum-norm subgradient for a convex op, 0 for `abs`
/// at 0.
///
/// # Panics
/// At the caller's line if `pred` is empty or `target` does not broadcast to its shape.
#[track_caller]
pub fn l1<'t>(pred: Var<'t>, target: Var<'t>) -> Var<'t> {
    batch("l1", pred, target);
    (pred - target).abs().mean()
}

/// The gradient of [`l1`] with respect to `pred`: `np.sign(pred - target) / N` (0 where
/// `pred == target`).
///
/// # Panics
/// At the caller's line if `pred` and `target` have different shapes, or are empty.
#[track_caller]
pub fn l1_grad_closed_form(pred: &Tensor, target: &Tensor) -> Tensor {
    let n = same_shape("l1_grad_closed_form", pred, target);
    zip_map(pred, target, |p, t| sign(p - t) / n)
}
