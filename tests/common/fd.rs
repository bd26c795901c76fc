//! Central finite differences, and the tolerance the gradients are held to.

use tapegrad::Tensor;

/// Central finite differences of `f` at `x`, step `1e-6 * max(1, |x_i|)`.
pub fn fd_grad(f: impl Fn(&Tensor) -> f64, x: &Tensor) -> Tensor {
    fd_grad_with_step(f, x, 1e-6)
}

/// Central finite differences of `f` at `x`, step `step * max(1, |x_i|)`.
pub fn fd_grad_with_step(f: impl Fn(&Tensor) -> f64, x: &Tensor, step: f64) -> Tensor {
    let mut data = x.data().to_vec();
    let mut grad = Vec::with_capacity(data.len());
    for i in 0..data.len() {
        let xi = data[i];
        let h = step * xi.abs().max(1.0);
        let (plus, minus) = (xi + h, xi - h);
        data[i] = plus;
        let f_plus = f(&Tensor::new(data.clone(), x.shape()).unwrap());
        data[i] = minus;
        let f_minus = f(&Tensor::new(data.clone(), x.shape()).unwrap());
        data[i] = xi;
        // Divide by the step actually taken (plus - minus is exact here, 2h may not be).
        grad.push((f_plus - f_minus) / (plus - minus));
    }
    Tensor::new(grad, x.shape()).unwrap()
}

/// `got` is within `tol * max(1, |want|)` of `want`.
pub fn close(got: f64, want: f64, tol: f64) -> bool {
    (got - want).abs() <= tol * want.abs().max(1.0)
}

/// Same shape, and every element [`close`] to `want`'s.
#[track_caller]
pub fn assert_close(got: &Tensor, want: &Tensor, tol: f64, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    for (i, (&g, &w)) in got.data().iter().zip(want.data()).enumerate() {
        assert!(
            close(g, w, tol),
            "{what}: element {i}: got {g}, want {w} (|diff| {:e} > {tol:e} * max(1, |want|))\n  \
             got:  {got:?}\n  want: {want:?}",
            (g - w).abs()
        );
    }
}
