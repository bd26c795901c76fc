//! Shape and selection: `reshape`, `transpose`, `broadcast_to`, `expand_dims`,
//! `index_select`, `select`, and `Tensor::one_hot` for the constants they take.

use super::{Operands, fits, split_at};
use crate::tape::{InputGrads, Op, Var};
use crate::tensor::{Shape, Tensor, broadcast_shapes, data_from_vec, numel, sum_to, zeroed};
use smallvec::smallvec;
use std::panic::Location;

// ---- reshape: same data, new shape; the gradient is reshaped back -------------------
struct Reshape(Shape);
impl Op for Reshape {
    fn name(&self) -> &str {
        "reshape"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor, String> {
        x[0].reshape(&self.0).map_err(|e| e.to_string())
    }
    fn backward(&self, x: &[&Tensor], out: &Tensor, up: Tensor, _: &[bool]) -> InputGrads {
        if up.len() == 1 {
            return smallvec![Some(Tensor::scalar(up.data()[0]))];
        }
        let g = up
            .broadcast_to(out.shape())
            .into_reshaped(Shape::from_slice(x[0].shape()));
        smallvec![Some(g)]
    }
}

impl<'t> Var<'t> {
    /// The same elements under another shape (row-major, like `np.reshape`).
    ///
    /// # Panics
    /// If the element counts differ.
    #[track_caller]
    pub fn reshape(self, shape: &[usize]) -> Var<'t> {
        self.tape.push(Reshape(Shape::from_slice(shape)), &[self])
    }
}

// ---- transpose: the axes reversed (numpy's .T); the gradient is transposed back ---------

/// `x` with its axes reversed: element `[i0, .., ik]` of the result is `[ik, .., i0]` of
/// `x`.
fn reversed_axes(x: &Tensor) -> Tensor {
    let shape = x.shape();
    let rank = shape.len();
    let out_shape: Shape = shape.iter().rev().copied().collect();
    // x's row-major strides, reversed: the stride of each output axis in x.
    let mut strides = vec![0usize; rank];
    let mut step = 1;
    for d in (0..rank).rev() {
        strides[d] = step;
        step *= shape[d];
    }
    strides.reverse();
    let data = x.data();
    let mut out = Vec::with_capacity(x.len());
    let mut index = vec![0usize; rank];
    let mut at = 0usize;
    for _ in 0..x.len() {
        out.push(data[at]);
        for d in (0..rank).rev() {
            index[d] += 1;
            at += strides[d];
            if index[d] < out_shape[d] {
                break;
            }
            at -= strides[d] * out_shape[d];
            index[d] = 0;
        }
    }
    Tensor::from_parts(data_from_vec(out), out_shape)
}

struct Transpose;
impl Op for Transpose {
    fn name(&self) -> &str {
        "transpose"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor, String> {
        Ok(reversed_axes(x[0]))
    }
    fn backward(&self, _: &[&Tensor], out: &Tensor, up: Tensor, _: &[bool]) -> InputGrads {
        if up.len() == 1 {
            return smallvec![Some(Tensor::scalar(up.data()[0]))];
        }
        smallvec![Some(reversed_axes(&up.broadcast_to(out.shape())))]
    }
}

impl<'t> Var<'t> {
    /// The axes reversed (numpy's `.T`): `[m, n]` becomes `[n, m]`, `[a, b, c]` becomes
    /// `[c, b, a]`; a rank-0 or 1-d var is unchanged.
    #[track_caller]
    pub fn transpose(self) -> Var<'t> {
        self.tape.push(Transpose, &[self])
    }
}

// ---- broadcast_to: numpy's; the gradient is summed back (sum_to) -----------------------
struct BroadcastTo(Shape);
impl Op for BroadcastTo {
    fn name(&self) -> &str {
        "broadcast_to"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor, String> {
        let target = &self.0[..];
        if broadcast_shapes(x[0].shape(), target).as_deref() != Some(target) {
            return Err(format!(
                "broadcast_to: shape {:?} does not broadcast to {target:?}",
                x[0].shape()
            ));
        }
        fits(self.name(), target)?;
        Ok(x[0].broadcast_to(target))
    }
    fn backward(&self, x: &[&Tensor], _: &Tensor, up: Tensor, _: &[bool]) -> InputGrads {
        smallvec![Some(sum_to(up, &self.0, x[0].shape()))]
    }
}

impl<'t> Var<'t> {
    /// This var repeated to `shape` by numpy's broadcasting rules (`np.broadcast_to`).
    /// The gradient sums over every repetition.
    ///
    /// # Panics
    /// If the var's shape does not broadcast to `shape` (naming both).
    #[track_caller]
    pub fn broadcast_to(self, shape: &[usize]) -> Var<'t> {
        self.tape
            .push(BroadcastTo(Shape::from_slice(shape)), &[self])
    }

    /// A new axis of length 1 at position `axis` (`np.expand_dims`; `axis` may be the
    /// rank, appending it).
    ///
    /// # Panics
    /// If `axis` is greater than the rank (naming the axis and the shape).
    #[track_caller]
    pub fn expand_dims(self, axis: usize) -> Var<'t> {
        let mut shape = self.shape();
        if axis > shape.len() {
            panic!(
                "tapegrad: expand_dims: axis {axis} is out of range for shape {shape:?} (rank \
                 {0}: a new axis goes at 0..={0}) (at {1})",
                shape.len(),
                Location::caller()
            );
        }
        shape.insert(axis, 1);
        self.reshape(&shape)
    }
}

// ---- index_select: slices along an axis; repeated indices add up in the gradient -----
struct IndexSelect {
    axis: usize,
    indices: Vec<usize>,
}

impl Op for IndexSelect {
    fn name(&self) -> &str {
        "index_select"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor, String> {
        let (shape, axis) = (x[0].shape(), self.axis);
        if axis >= shape.len() {
            return Err(format!(
                "index_select: axis {axis} is out of range for shape {shape:?} (rank {})",
                shape.len()
            ));
        }
        if let Some((p, &bad)) = self
            .indices
            .iter()
            .enumerate()
            .find(|(_, i)| **i >= shape[axis])
        {
            return Err(format!(
                "index_select: index {bad} (position {p}) is out of range for axis {axis} of \
                 length {} (shape {shape:?})",
                shape[axis]
            ));
        }
        let mut out_shape = Shape::from_slice(shape);
        out_shape[axis] = self.indices.len();
        if fits(self.name(), &out_shape)? == 0 {
            return Ok(Tensor::zeros(&out_shape)); // no slices (and no loop over them)
        }
        let (outer, len, inner) = split_at(shape, axis);
        let data = x[0].data();
        let mut out = Vec::with_capacity(numel(&out_shape).unwrap_or(0));
        for o in 0..outer {
            for &k in &self.indices {
                let from = (o * len + k) * inner;
                out.extend_from_slice(&data[from..from + inner]);
            }
        }
        Ok(Tensor::from_parts(data_from_vec(out), out_shape))
    }
    fn backward(&self, x: &[&Tensor], out: &Tensor, up: Tensor, _: &[bool]) -> InputGrads {
        if x[0].is_empty() || out.is_empty() {
            return smallvec![Some(Tensor::zeros(x[0].shape()))];
        }
        let up = up.broadcast_to(out.shape());
        let (outer, len, inner) = split_at(x[0].shape(), self.axis);
        let m = self.indices.len();
        let u = up.data();
        let mut g = zeroed(x[0].len());
        for o in 0..outer {
            for (j, &k) in self.indices.iter().enumerate() {
                let to = (o * len + k) * inner;
                let from = (o * m + j) * inner;
                for (g, &u) in g[to..to + inner].iter_mut().zip(&u[from..from + inner]) {
                    *g += u;
                }
            }
        }
        smallvec![Some(Tensor::from_parts(
            data_from_vec(g),
            Shape::from_slice(x[0].shape())
        ))]
    }
}

impl<'t> Var<'t> {
    /// The slices at `indices` along `axis`, in that order (`np.take(x, indices, axis)`):
    /// the axis's length becomes `indices.len()`. An index may repeat; the gradients of
    /// its copies add up.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::new();
    /// let scores = tape.var(Tensor::new(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap());
    /// let picked = scores.index_select(1, &[2, 0, 2]);
    /// assert_eq!(picked.value().data(), &[3.0, 1.0, 3.0, 6.0, 4.0, 6.0]);
    /// let g = picked.sum().backward();
    /// assert_eq!(g.wrt(scores).data(), &[1.0, 0.0, 2.0, 1.0, 0.0, 2.0]);
    /// ```
    ///
    /// # Panics
    /// If `axis` is not below the rank, or an index is not below the axis length (naming
    /// the index and the length).
    #[track_caller]
    pub fn index_select(self, axis: usize, indices: &[usize]) -> Var<'t> {
        let op = IndexSelect {
            axis,
            indices: indices.to_vec(),
        };
        self.tape.push(op, &[self])
    }
}

// ---- select: np.where(cond != 0, a, b); the gradient is routed, never multiplied -------
struct Select(Tensor);
impl Op for Select {
    fn name(&self) -> &str {
        "select"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor, String> {
        let (cond, a, b) = (&self.0, x[0], x[1]);
        let shape = broadcast_shapes(a.shape(), b.shape())
            .and_then(|ab| broadcast_shapes(cond.shape(), &ab))
            .ok_or_else(|| {
                format!(
                    "select: the condition's shape {:?} and the operands' shapes {:?} and {:?} \
                     do not broadcast",
                    cond.shape(),
                    a.shape(),
                    b.shape()
                )
            })?;
        fits(self.name(), &shape)?;
        let (c, a, b) = (
            cond.broadcast_to(&shape),
            a.broadcast_to(&shape),
            b.broadcast_to(&shape),
        );
        let out = c
            .data()
            .iter()
            .zip(a.data().iter().zip(b.data()))
            .map(|(&c, (&a, &b))| if c != 0.0 { a } else { b })
            .collect();
        Ok(Tensor::from_parts(data_from_vec(out), shape))
    }
    fn backward(&self, x: &[&Tensor], out: &Tensor, up: Tensor, tracked: &[bool]) -> InputGrads {
        let shape = out.shape();
        let (c, up) = (self.0.broadcast_to(shape), up.broadcast_to(shape));
        let routed = |to_a: bool| {
            let g = c
                .data()
                .iter()
                .zip(up.data())
                .map(|(&c, &u)| if (c != 0.0) == to_a { u } else { 0.0 })
                .collect();
            Tensor::from_parts(data_from_vec(g), Shape::from_slice(shape))
        };
        smallvec![
            tracked[0].then(|| sum_to(routed(true), shape, x[0].shape())),
            tracked[1].then(|| sum_to(routed(false), shape, x[1].shape())),
        ]
    }
}

/// `np.where(cond != 0, a, b)` with numpy broadcasting of all three; `a` and `b` are vars
/// or `f64`s. The gradient goes to `a` where the condition holds (non-zero, NaN
/// included) and to `b` elsewhere: selected, never multiplied, so the other side gets
/// exactly 0 even where the upstream is inf or NaN.
///
/// ```
/// use tapegrad::{select, Tape, Tensor};
/// let tape = Tape::new();
/// let x = tape.var(Tensor::from(vec![-2.0, 3.0]));
/// let positive = Tensor::from(vec![0.0, 1.0]);
/// let y = select(&positive, x, 0.0); // relu, written as the closed form writes it
/// assert_eq!(y.value().data(), &[0.0, 3.0]);
/// assert_eq!(y.sum().backward().wrt(x).data(), &[0.0, 1.0]);
/// ```
///
/// # Panics
/// If the condition's shape does not broadcast with the operands' (naming all three).
#[track_caller]
pub fn select<'t, A, B>(cond: &Tensor, a: A, b: B) -> Var<'t>
where
    (A, B): Operands<'t>,
{
    let (a, b) = (a, b).vars();
    a.tape.push(Select(cond.clone()), &[a, b])
}

// ---- one_hot: the constant that picks a class ----------------------------------------

impl Tensor {
    /// Shape `[labels.len(), classes]`: row `i` is 1 at column `labels[i]`, 0 elsewhere.
    ///
    /// ```
    /// use tapegrad::Tensor;
    /// let y = Tensor::one_hot(&[2, 0], 3);
    /// assert_eq!(y.shape(), &[2, 3]);
    /// assert_eq!(y.data(), &[0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
    /// ```
    ///
    /// # Panics
    /// If a label is not below `classes` (naming it, its position and `classes`).
    #[track_caller]
    pub fn one_hot(labels: &[usize], classes: usize) -> Tensor {
        if let Some((i, &bad)) = labels.iter().enumerate().find(|(_, l)| **l >= classes) {
            panic!(
                "tapegrad: one_hot: label {bad} at position {i} is not below classes = \
                 {classes} (at {})",
                Location::caller()
            );
        }
        let Some(n) = numel(&[labels.len(), classes]) else {
            panic!(
                "tapegrad: one_hot: {} labels x {classes} classes is more elements than fit \
                 in memory (at {})",
                labels.len(),
                Location::caller()
            );
        };
        let mut data = vec![0.0; n];
        for (i, &l) in labels.iter().enumerate() {
            data[i * classes + l] = 1.0;
        }
        Tensor::from_parts(data_from_vec(data), smallvec![labels.len(), classes])
    }
}
