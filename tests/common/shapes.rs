//! numpy broadcasting, written out with explicit indices (the references the engine's
//! broadcasting is checked against).

use tapegrad::Tensor;

/// numpy's broadcast of two shapes.
///
/// # Panics
/// If they do not broadcast (a bug in the test that asked).
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Vec<usize> {
    try_broadcast_shape(a, b)
        .unwrap_or_else(|| panic!("test bug: {a:?} and {b:?} do not broadcast"))
}

/// numpy's broadcast of two shapes, `None` if they do not broadcast (for tests that
/// look for operands that do).
pub fn try_broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], d: usize| {
        let pad = rank - s.len();
        if d < pad { 1 } else { s[d - pad] }
    };
    (0..rank)
        .map(|d| match (dim(a, d), dim(b, d)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// Row-major multi-index of `flat` in `shape`.
pub fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        index[d] = flat % shape[d];
        flat /= shape[d];
    }
    index
}

/// Flat position in an operand of `shape` of the broadcast element at `index`.
pub fn broadcast_offset(index: &[usize], shape: &[usize]) -> usize {
    let pad = index.len() - shape.len();
    shape.iter().enumerate().fold(0, |offset, (d, &n)| {
        offset * n + if n == 1 { 0 } else { index[pad + d] }
    })
}

/// `f` elementwise over the numpy broadcast of `a` and `b`.
pub fn broadcast_zip(a: &Tensor, b: &Tensor, f: impl Fn(f64, f64) -> f64) -> Tensor {
    let out = broadcast_shape(a.shape(), b.shape());
    let n = out.iter().product();
    let data = (0..n)
        .map(|flat| {
            let index = unravel(flat, &out);
            f(
                a.data()[broadcast_offset(&index, a.shape())],
                b.data()[broadcast_offset(&index, b.shape())],
            )
        })
        .collect();
    Tensor::new(data, &out).unwrap()
}

/// `x` broadcast to `shape` (which it must broadcast to).
pub fn broadcast_to(x: &Tensor, shape: &[usize]) -> Tensor {
    let out = broadcast_zip(x, &Tensor::zeros(shape), |x, _| x);
    assert_eq!(out.shape(), shape, "test bug: {:?} is wider", x.shape());
    out
}

/// `f` applied to every element.
pub fn map(x: &Tensor, f: impl Fn(f64) -> f64) -> Tensor {
    Tensor::new(x.data().iter().map(|&v| f(v)).collect(), x.shape()).unwrap()
}
