//! Losses built from tape ops, and the closed forms they are checked against.

use crate::max;
use crate::tape::Var;
use crate::tensor::Tensor;
use std::panic::Location;

/// The mean hinge loss `sum(max(0, 1 - pred * target)) / N`, N the number of elements of
/// `pred`, built from ordinary tape ops (nothing special-cased): its gradient is whatever
/// the ops' rules give, which is why it is a fair test of them.
///
/// At `pred * target == 1` the `max` routes the gradient to the constant 0, so the
/// gradient there is 0, exactly as [`hinge_grad_closed_form`].
///
/// # Panics
/// If `pred` is empty (the mean of nothing is not a loss), or the shapes do not
/// broadcast.
#[track_caller]
pub fn hinge<'t>(pred: Var<'t>, target: Var<'t>) -> Var<'t> {
    let n = pred.value().len();
    if n == 0 {
        panic!(
            "tapegrad: hinge: empty batch (pred has shape {:?}); the mean over no elements \
             would be NaN (at {})",
            pred.shape(),
            Location::caller()
        );
    }
    max(0.0, 1.0 - pred * target).sum() / n as f64
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
