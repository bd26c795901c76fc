//! `Tensor` next to other crates: `approx`'s comparisons (always), and conversions to
//! and from `ndarray` arrays and `nalgebra` matrices (cargo features `ndarray` and
//! `nalgebra`, both off by default).
//!
//! Comparisons are elementwise with `approx`'s `f64` semantics and defaults (so NaN is
//! never equal to anything); tensors of different shapes are never equal, even with the
//! same elements. Conversions always produce and read a tensor's elements in row-major
//! (logical) order, whatever the other library's memory layout: a Fortran-order or
//! transposed `ndarray` array, and `nalgebra`'s column-major storage, are reordered.
//!
//! ```
//! use approx::assert_relative_eq;
//! use tapegrad::{Tape, Tensor};
//!
//! let x = Tensor::new(vec![1.0, -2.0, 3.0], &[3]).unwrap();
//! let tape = Tape::new();
//! let w = tape.var(x.clone());
//! let grads = (w * w).sum().backward();
//! let manual = Tensor::new(vec![2.0, -4.0, 6.0], &[3]).unwrap();
//! assert_relative_eq!(grads.wrt(w), &manual);
//! assert_relative_eq!(grads.wrt(w).clone(), manual, max_relative = 1e-12);
//! ```

use crate::tensor::Tensor;
use approx::{AbsDiffEq, RelativeEq, UlpsEq};

/// Both tensors have the same shape, and every pair of elements satisfies `eq`.
fn all_close(a: &Tensor, b: &Tensor, eq: impl Fn(&f64, &f64) -> bool) -> bool {
    a.shape() == b.shape() && a.data().iter().zip(b.data()).all(|(x, y)| eq(x, y))
}

/// Same shape, and every element within `epsilon` of the other's (`f64::abs_diff_eq`);
/// the default epsilon is `f64`'s, `f64::EPSILON`.
impl AbsDiffEq for Tensor {
    type Epsilon = f64;

    fn default_epsilon() -> f64 {
        f64::default_epsilon()
    }

    fn abs_diff_eq(&self, other: &Tensor, epsilon: f64) -> bool {
        all_close(self, other, |x, y| x.abs_diff_eq(y, epsilon))
    }
}

/// Same shape, and every pair of elements equal by `f64::relative_eq` (within `epsilon`
/// absolutely or `max_relative` relatively); the default `max_relative` is `f64`'s,
/// `f64::EPSILON`.
impl RelativeEq for Tensor {
    fn default_max_relative() -> f64 {
        f64::default_max_relative()
    }

    fn relative_eq(&self, other: &Tensor, epsilon: f64, max_relative: f64) -> bool {
        all_close(self, other, |x, y| x.relative_eq(y, epsilon, max_relative))
    }
}

/// Same shape, and every pair of elements equal by `f64::ulps_eq` (within `epsilon`, or
/// at most `max_ulps` representable values apart); the default `max_ulps` is `f64`'s, 4.
impl UlpsEq for Tensor {
    fn default_max_ulps() -> u32 {
        f64::default_max_ulps()
    }

    fn ulps_eq(&self, other: &Tensor, epsilon: f64, max_ulps: u32) -> bool {
        all_close(self, other, |x, y| x.ulps_eq(y, epsilon, max_ulps))
    }
}

#[cfg(feature = "ndarray")]
mod ndarray_impls {
    use crate::tensor::Tensor;
    use ndarray::{Array, ArrayD, Dimension, IxDyn};

    /// A tensor of the array's shape holding its elements in logical row-major order,
    /// whatever its strides (a Fortran-order or transposed array is reordered; a
    /// standard-layout array hands over its buffer without a copy).
    impl<D: Dimension> From<Array<f64, D>> for Tensor {
        fn from(array: Array<f64, D>) -> Tensor {
            let shape = array.shape().to_vec();
            let data = if array.is_standard_layout() {
                let n = array.len();
                match array.into_raw_vec_and_offset() {
                    (v, Some(0) | None) if v.len() == n => v,
                    // A standard-layout view into a larger buffer: copy the live part.
                    (v, offset) => {
                        let start = offset.unwrap_or(0);
                        v[start..start + n].to_vec()
                    }
                }
            } else {
                array.iter().copied().collect()
            };
            Tensor::new(data, &shape).expect("an ndarray's element count matches its shape")
        }
    }

    /// An array of the tensor's shape and elements (a standard-layout, row-major array).
    ///
    /// # Panics
    /// If ndarray cannot represent the shape: a tensor with no elements whose other
    /// dimensions multiply to more than `isize::MAX` (the message names the shape).
    impl From<&Tensor> for ArrayD<f64> {
        fn from(tensor: &Tensor) -> ArrayD<f64> {
            ArrayD::from_shape_vec(IxDyn(tensor.shape()), tensor.data().to_vec()).unwrap_or_else(
                |e| {
                    panic!(
                        "tapegrad: ArrayD::from(&Tensor): ndarray cannot hold shape {:?}: {e}",
                        tensor.shape()
                    )
                },
            )
        }
    }
}

#[cfg(feature = "nalgebra")]
mod nalgebra_impls {
    use crate::tensor::{Error, Tensor};
    use nalgebra::DMatrix;

    /// A tensor of shape `[nrows, ncols]` whose element `[i, j]` is `m[(i, j)]`:
    /// nalgebra's column-major storage is read out row by row.
    impl From<&DMatrix<f64>> for Tensor {
        fn from(m: &DMatrix<f64>) -> Tensor {
            let (rows, cols) = m.shape();
            let mut data = Vec::with_capacity(rows * cols);
            for i in 0..rows {
                data.extend(m.row(i).iter().copied());
            }
            Tensor::new(data, &[rows, cols]).expect("a matrix has nrows * ncols elements")
        }
    }

    /// The matrix whose element `(i, j)` is the tensor's element `[i, j]`.
    ///
    /// # Errors
    /// If the tensor is not 2-d; the message names its shape.
    impl TryFrom<&Tensor> for DMatrix<f64> {
        type Error = Error;

        fn try_from(tensor: &Tensor) -> Result<DMatrix<f64>, Error> {
            match *tensor.shape() {
                [rows, cols] => Ok(DMatrix::from_row_slice(rows, cols, tensor.data())),
                ref shape => Err(Error::new(format!(
                    "DMatrix::try_from(&Tensor): a matrix needs a 2-d tensor, got shape \
                     {shape:?} ({}-d)",
                    shape.len()
                ))),
            }
        }
    }
}
