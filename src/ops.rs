//! Every op: its forward and backward rule side by side, one section per op (the
//! elementwise ones also give both rules on plain numbers, for rank-0 operands), and the
//! methods on `Var` that record them. Adding an op means adding a section and a method.
//!
//! Backward rules receive `upstream`, the gradient of the loss with respect to the op's
//! output. It may be *smaller* than the output (any shape that broadcasts to it): a
//! gradient that is the same everywhere, like the one `sum` sends back, stays one
//! number instead of N copies. Rules return gradients that broadcast to each input's
//! shape ([`sum_to`] undoes the forward broadcast).
//!
//! Two rules hold throughout:
//! - `max`/`min` *select*: the element routed away gets exactly 0, never `0 * upstream`.
//! - A zero upstream is a hard zero: `upstream * local` is 0 where `upstream` is 0, even
//!   where the local derivative is inf or NaN. An element the loss does not depend on
//!   gets gradient 0, as in the closed form, not an IEEE `0 * inf = NaN`.

use crate::tape::{Rule, Tape, Var};
use crate::tensor::{
    Shape, Tensor, broadcast_shapes, data_from_vec, pairwise_sum, sum_to, zeroed, zip_broadcast,
    zip_into,
};
use smallvec::smallvec;
use std::ops;

/// Gradients for an op's inputs, in input order; `None` where an input is not tracked.
pub(crate) enum Grads {
    /// One- and two-input ops (no heap).
    Two([Option<Tensor>; 2]),
    /// Custom ops with any number of inputs.
    Many(Vec<Option<Tensor>>),
}

impl Grads {
    /// Call `f(input position, gradient)` for every gradient present.
    pub(crate) fn each(self, mut f: impl FnMut(usize, Tensor)) {
        match self {
            Grads::Two([a, b]) => {
                if let Some(a) = a {
                    f(0, a);
                }
                if let Some(b) = b {
                    f(1, b);
                }
            }
            Grads::Many(all) => {
                for (k, g) in all.into_iter().enumerate() {
                    if let Some(g) = g {
                        f(k, g);
                    }
                }
            }
        }
    }
}
/// The gradients of a binary op's two operands.
type Pair = [Option<Tensor>; 2];

/// The gradient of a one-input op.
fn single(g: Tensor) -> Grads {
    Grads::Two([Some(g), None])
}

/// The forward and backward rule of one op.
pub(crate) trait Op {
    /// Name shown in panics, `Display for Tape` and DOT output.
    fn name(&self) -> &str;
    /// The output, or a message naming the op and the offending shapes.
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor, String>;
    /// Gradients for the inputs given the upstream gradient (see the module docs);
    /// `wanted[i]` says whether input `i` needs one.
    fn backward(
        &self,
        inputs: &[&Tensor],
        out: &Tensor,
        upstream: Tensor,
        wanted: &[bool],
    ) -> Grads;
    /// For the elementwise ops, the forward rule on rank-0 operands as plain numbers
    /// (micrograd's workload): the same value as `forward`, without building tensors.
    fn forward_scalar(&self, _inputs: [f64; 2]) -> Option<f64> {
        None
    }
    /// The backward rule on rank-0 operands as plain numbers: the gradients of the (up
    /// to two) inputs, `upstream` already applied.
    fn backward_scalar(&self, _inputs: [f64; 2], _out: f64, _upstream: f64) -> Option<[f64; 2]> {
        None
    }
}

/// `upstream * local`, with a zero upstream giving exactly zero (see the module docs).
fn chain(upstream: f64, local: f64) -> f64 {
    if upstream == 0.0 {
        0.0
    } else {
        upstream * local
    }
}

/// `upstream / local`, with a zero upstream giving exactly zero.
fn chain_div(upstream: f64, local: f64) -> f64 {
    if upstream == 0.0 {
        0.0
    } else {
        upstream / local
    }
}

/// The upstream for each operand that wants a gradient, cloned only if both do, so
/// that a rule for one operand owns the buffer and can write into it.
fn share(up: Tensor, wanted: &[bool]) -> [Option<Tensor>; 2] {
    match (wanted[0], wanted[1]) {
        (true, true) => [Some(up.clone()), Some(up)],
        (true, false) => [Some(up), None],
        (false, true) => [None, Some(up)],
        (false, false) => [None, None],
    }
}

/// `f(upstream, other)` elementwise and broadcast, reusing upstream's buffer if it can.
fn zip_grad(upstream: Tensor, other: &Tensor, f: impl Fn(f64, f64) -> f64) -> Tensor {
    let shape = broadcast_shapes(upstream.shape(), other.shape()).expect("shapes broadcast");
    zip_into(upstream, other, &shape, f)
}

fn broadcast_or_err(name: &str, a: &Tensor, b: &Tensor) -> Result<Shape, String> {
    broadcast_shapes(a.shape(), b.shape()).ok_or_else(|| {
        format!(
            "{name}: shapes {:?} and {:?} do not broadcast",
            a.shape(),
            b.shape()
        )
    })
}

/// Either operand of a binary op: a `Var` or an `f64` (which becomes a constant).
pub trait Operands<'t> {
    /// Both operands as vars on one tape.
    ///
    /// # Panics
    /// If an `f64` must become a constant while a [`Var::value`] guard is alive.
    #[track_caller]
    fn vars(self) -> (Var<'t>, Var<'t>);
}

impl<'t> Operands<'t> for (Var<'t>, Var<'t>) {
    fn vars(self) -> (Var<'t>, Var<'t>) {
        self
    }
}

impl<'t> Operands<'t> for (Var<'t>, f64) {
    #[track_caller]
    fn vars(self) -> (Var<'t>, Var<'t>) {
        (self.0, self.0.tape.constant(Tensor::scalar(self.1)))
    }
}

impl<'t> Operands<'t> for (f64, Var<'t>) {
    #[track_caller]
    fn vars(self) -> (Var<'t>, Var<'t>) {
        (self.1.tape.constant(Tensor::scalar(self.0)), self.1)
    }
}

impl<'t> Var<'t> {
    #[track_caller]
    fn binary(self, op: Rule, other: Var<'t>) -> Var<'t> {
        self.tape.push(op, &[self, other])
    }

    #[track_caller]
    fn unary(self, op: Rule) -> Var<'t> {
        self.tape.push(op, &[self])
    }
}

/// Elementwise ops of two operands with numpy broadcasting.
///
/// - `$forward(a, b)` maps two elements to one.
/// - `$backward_scalar(a, b, out, upstream)` is the backward rule for one element: the
///   gradients of `a` and `b`. The sweep uses it directly for rank-0 nodes (micrograd's
///   workload).
/// - `$backward(a, b, out, upstream, wanted)` is the same rule over whole tensors,
///   written to reuse buffers; it returns gradients at the broadcast shape, and
///   `sum_to` reduces them to the operands' shapes.
macro_rules! binary_op {
    ($op:ident, $name:literal, $forward:expr, $backward_scalar:expr, $backward:expr) => {
        struct $op;
        impl Op for $op {
            fn name(&self) -> &str {
                $name
            }
            fn forward(&self, x: &[&Tensor]) -> Result<Tensor, String> {
                let forward = |a: f64, b: f64| -> f64 { ($forward)(a, b) };
                let shape = broadcast_or_err($name, x[0], x[1])?;
                Ok(zip_broadcast(x[0], x[1], &shape, forward))
            }
            fn forward_scalar(&self, [a, b]: [f64; 2]) -> Option<f64> {
                Some(($forward)(a, b))
            }
            fn backward_scalar(&self, [a, b]: [f64; 2], out: f64, up: f64) -> Option<[f64; 2]> {
                let rule: fn(f64, f64, f64, f64) -> (f64, f64) = $backward_scalar;
                let (ga, gb) = rule(a, b, out, up);
                Some([ga, gb])
            }
            fn backward(&self, x: &[&Tensor], out: &Tensor, up: Tensor, wanted: &[bool]) -> Grads {
                let backward: fn(&Tensor, &Tensor, &Tensor, Tensor, &[bool]) -> Pair = $backward;
                let [ga, gb] = backward(x[0], x[1], out, up, wanted);
                let reduce = |g: Tensor, input: &Tensor| sum_to(g, out.shape(), input.shape());
                Grads::Two([ga.map(|g| reduce(g, x[0])), gb.map(|g| reduce(g, x[1]))])
            }
        }
    };
}

// ---- add: a + b --------------------------------------------------------------------
binary_op!(
    Add,
    "add",
    |a, b| a + b,
    |_, _, _, u| (u, u),
    |_, _, _, up, wanted| share(up, wanted)
);

// ---- sub: a - b --------------------------------------------------------------------
binary_op!(
    Sub,
    "sub",
    |a, b| a - b,
    |_, _, _, u| (u, -u),
    |_, _, _, up, wanted| {
        let [ga, gb] = share(up, wanted);
        [ga, gb.map(|g| g.map_in_place(|u| -u))]
    }
);

// ---- mul: a * b --------------------------------------------------------------------
binary_op!(
    Mul,
    "mul",
    |a, b| a * b,
    |a, b, _, u| (chain(u, b), chain(u, a)),
    |a, b, _, up, wanted| {
        let [ua, ub] = share(up, wanted);
        [
            ua.map(|u| zip_grad(u, b, chain)),
            ub.map(|u| zip_grad(u, a, chain)),
        ]
    }
);

// ---- div: a / b (IEEE: x / 0 is ±inf or NaN, nothing is clamped) -------------------
// d(a/b)/da = 1/b, d(a/b)/db = -(a/b)/b = -out/b
binary_op!(
    Div,
    "div",
    |a, b| a / b,
    |_, b, out, u| (chain_div(u, b), -chain_div(chain(u, out), b)),
    |_, b, out, up, wanted| {
        let [ua, ub] = share(up, wanted);
        let gb = ub.map(|u| zip_grad(zip_grad(u, out, chain), b, |v, y| -chain_div(v, y)));
        [ua.map(|u| zip_grad(u, b, chain_div)), gb]
    }
);

// ---- max: np.maximum (NaN wins); gradient to b where b > a, to a elsewhere ----------
binary_op!(
    Max,
    "max",
    |a: f64, b: f64| if a.is_nan() || a > b { a } else { b },
    |a, b, _, u| if b > a { (0.0, u) } else { (u, 0.0) },
    |a, b, out, up, wanted| select(a, b, out, up, wanted, |a, b| b > a)
);

// ---- min: np.minimum (NaN wins); gradient to b where b < a, to a elsewhere ----------
binary_op!(
    Min,
    "min",
    |a: f64, b: f64| if a.is_nan() || a < b { a } else { b },
    |a, b, _, u| if b < a { (0.0, u) } else { (u, 0.0) },
    |a, b, out, up, wanted| select(a, b, out, up, wanted, |a, b| b < a)
);

/// The backward of `max`/`min`: route each upstream element to `b` where `to_b(a, b)`
/// and to `a` everywhere else (ties and NaN included, so `max(0, z)` has gradient
/// exactly `z > 0`). The other side gets exactly 0: selected, not multiplied.
fn select(
    a: &Tensor,
    b: &Tensor,
    out: &Tensor,
    up: Tensor,
    wanted: &[bool],
    to_b: impl Fn(f64, f64) -> bool + Copy,
) -> Pair {
    let shape = out.shape();
    if up.len() == 1 {
        // A uniform upstream (e.g. from `sum`): one pass over the operands per side.
        let u = up.data()[0];
        let ga =
            wanted[0].then(|| zip_broadcast(a, b, shape, |x, y| if to_b(x, y) { 0.0 } else { u }));
        let gb =
            wanted[1].then(|| zip_broadcast(a, b, shape, |x, y| if to_b(x, y) { u } else { 0.0 }));
        return [ga, gb];
    }
    let up = up.broadcast_to(shape);
    let routed = zip_broadcast(a, b, shape, |x, y| if to_b(x, y) { 1.0 } else { 0.0 });
    let ga = wanted[0]
        .then(|| zip_broadcast(&up, &routed, shape, |u, r| if r == 1.0 { 0.0 } else { u }));
    let gb = wanted[1].then(|| zip_into(up, &routed, shape, |u, r| if r == 1.0 { u } else { 0.0 }));
    [ga, gb]
}

macro_rules! operators {
    ($trait:ident, $method:ident, $op:ident) => {
        /// Elementwise, broadcast like numpy.
        ///
        /// # Panics
        /// If the shapes do not broadcast, the vars belong to different tapes, or a
        /// [`Var::value`] guard of this tape is alive.
        impl<'t> ops::$trait<Var<'t>> for Var<'t> {
            type Output = Var<'t>;
            #[track_caller]
            fn $method(self, rhs: Var<'t>) -> Var<'t> {
                self.binary(Rule::Static(&$op), rhs)
            }
        }
        /// Elementwise with a constant (recorded as a rank-0 constant node).
        ///
        /// # Panics
        /// If a [`Var::value`] guard of this tape is alive.
        impl<'t> ops::$trait<f64> for Var<'t> {
            type Output = Var<'t>;
            #[track_caller]
            fn $method(self, rhs: f64) -> Var<'t> {
                let (a, b) = (self, rhs).vars();
                a.binary(Rule::Static(&$op), b)
            }
        }
        /// Elementwise with a constant (recorded as a rank-0 constant node).
        ///
        /// # Panics
        /// If a [`Var::value`] guard of this tape is alive.
        impl<'t> ops::$trait<Var<'t>> for f64 {
            type Output = Var<'t>;
            #[track_caller]
            fn $method(self, rhs: Var<'t>) -> Var<'t> {
                let (a, b) = (self, rhs).vars();
                a.binary(Rule::Static(&$op), b)
            }
        }
    };
}

operators!(Add, add, Add);
operators!(Sub, sub, Sub);
operators!(Mul, mul, Mul);
operators!(Div, div, Div);

/// Elementwise maximum of two operands (vars or `f64`s), broadcast like `np.maximum`.
///
/// - Value: NaN where either operand is NaN (like `np.maximum`, unlike `f64::max`).
/// - Gradient: goes to `b` where `b > a`, and to `a` everywhere else, ties and NaN
///   included; the other operand gets exactly 0. So `max(0.0, z)` has gradient exactly
///   `np.where(z > 0, 1, 0)`, and the hinge loss matches its closed form at
///   `pred * target == 1`. (JAX, autograd and PyTorch's `maximum` give 0.5 at ties.)
///
/// ```
/// use tapegrad::{max, Tape, Tensor};
/// let tape = Tape::new();
/// let z = tape.var(Tensor::from(vec![-1.0, 0.0, 2.0]));
/// let g = max(0.0, z).sum().backward();
/// assert_eq!(g.wrt(z).data(), &[0.0, 0.0, 1.0]); // the tie at 0 goes to the constant
/// ```
///
/// # Panics
/// If the shapes do not broadcast, or the vars belong to different tapes.
#[track_caller]
pub fn max<'t, A, B>(a: A, b: B) -> Var<'t>
where
    (A, B): Operands<'t>,
{
    let (a, b) = (a, b).vars();
    a.binary(Rule::Static(&Max), b)
}

/// Elementwise minimum, the mirror of [`max`]: NaN wins; the gradient goes to `b` where
/// `b < a` and to `a` everywhere else (ties and NaN included).
///
/// # Panics
/// If the shapes do not broadcast, or the vars belong to different tapes.
#[track_caller]
pub fn min<'t, A, B>(a: A, b: B) -> Var<'t>
where
    (A, B): Operands<'t>,
{
    let (a, b) = (a, b).vars();
    a.binary(Rule::Static(&Min), b)
}

impl<'t> Var<'t> {
    /// `max(self, other)`; see [`max`] for the NaN and tie rules.
    ///
    /// # Panics
    /// As [`max`].
    #[track_caller]
    pub fn max<B>(self, other: B) -> Var<'t>
    where
        (Var<'t>, B): Operands<'t>,
    {
        max(self, other)
    }

    /// `min(self, other)`; see [`min`].
    ///
    /// # Panics
    /// As [`min`].
    #[track_caller]
    pub fn min<B>(self, other: B) -> Var<'t>
    where
        (Var<'t>, B): Operands<'t>,
    {
        min(self, other)
    }

    /// Sum of all elements (pairwise, as accurate as `np.sum`), shape `[]`; 0 for an
    /// empty var.
    ///
    /// # Panics
    /// If a [`Var::value`] guard of this tape is still alive (as every op).
    #[track_caller]
    pub fn sum(self) -> Var<'t> {
        self.unary(Rule::Static(&Sum))
    }

    /// Mean of all elements, shape `[]` (NaN for an empty var, like numpy).
    ///
    /// # Panics
    /// If a [`Var::value`] guard of this tape is still alive (as every op).
    #[track_caller]
    pub fn mean(self) -> Var<'t> {
        self.unary(Rule::Static(&Mean))
    }

    /// Sum over `axis`, which is dropped from the shape (like `np.sum(x, axis)`).
    ///
    /// # Panics
    /// If `axis` is not below the var's rank (the message names the axis and the shape).
    #[track_caller]
    pub fn sum_axis(self, axis: usize) -> Var<'t> {
        self.unary(Rule::Owned(Box::new(SumAxis(axis))))
    }

    /// The same elements under another shape (row-major, like `np.reshape`).
    ///
    /// # Panics
    /// If the element counts differ.
    #[track_caller]
    pub fn reshape(self, shape: &[usize]) -> Var<'t> {
        self.unary(Rule::Owned(Box::new(Reshape(Shape::from_slice(shape)))))
    }

    /// Matrix product of two 2-d vars: `[m, k] x [k, n] -> [m, n]`.
    ///
    /// # Panics
    /// If either is not 2-d, the inner dimensions differ, or the vars belong to
    /// different tapes.
    #[track_caller]
    pub fn matmul(self, other: Var<'t>) -> Var<'t> {
        self.binary(Rule::Static(&MatMul), other)
    }

    /// Elementwise `e^x`.
    ///
    /// # Panics
    /// If a [`Var::value`] guard of this tape is still alive (as every op).
    #[track_caller]
    pub fn exp(self) -> Var<'t> {
        self.unary(Rule::Static(&Exp))
    }

    /// Elementwise natural logarithm (IEEE: `ln(0) = -inf`, `ln(-1) = NaN`).
    ///
    /// # Panics
    /// If a [`Var::value`] guard of this tape is still alive (as every op).
    #[track_caller]
    pub fn ln(self) -> Var<'t> {
        self.unary(Rule::Static(&Ln))
    }
}

/// Ops of one operand. `$forward` maps an element; `$backward_scalar(x, out, upstream)` is
/// the gradient of one element and `$backward(x, out, upstream)` the same over a tensor.
macro_rules! unary_op {
    ($op:ident, $name:literal, $forward:expr, $backward_scalar:expr, $backward:expr) => {
        struct $op;
        impl Op for $op {
            fn name(&self) -> &str {
                $name
            }
            fn forward(&self, x: &[&Tensor]) -> Result<Tensor, String> {
                Ok(x[0].map($forward))
            }
            fn forward_scalar(&self, [a, _]: [f64; 2]) -> Option<f64> {
                let forward: fn(f64) -> f64 = $forward;
                Some(forward(a))
            }
            fn backward_scalar(&self, [a, _]: [f64; 2], out: f64, up: f64) -> Option<[f64; 2]> {
                let rule: fn(f64, f64, f64) -> f64 = $backward_scalar;
                Some([rule(a, out, up), 0.0])
            }
            fn backward(&self, x: &[&Tensor], out: &Tensor, up: Tensor, _: &[bool]) -> Grads {
                let backward: fn(&Tensor, &Tensor, Tensor) -> Tensor = $backward;
                single(backward(x[0], out, up))
            }
        }
    };
}

// ---- neg: -a -------------------------------------------------------------------------
unary_op!(Neg, "neg", |a| -a, |_, _, u| -u, |_, _, up| up
    .map_in_place(|u| -u));

// ---- exp: d e^a = e^a ------------------------------------------------------------------
unary_op!(
    Exp,
    "exp",
    f64::exp,
    |_, out, u| chain(u, out),
    |_, out, up| zip_grad(up, out, chain)
);

// ---- ln: d ln a = 1 / a ----------------------------------------------------------------
unary_op!(Ln, "ln", f64::ln, |a, _, u| chain_div(u, a), |a, _, up| {
    zip_grad(up, a, chain_div)
});

/// Elementwise negation.
///
/// # Panics
/// If a [`Var::value`] guard of this tape is alive.
impl<'t> ops::Neg for Var<'t> {
    type Output = Var<'t>;
    #[track_caller]
    fn neg(self) -> Var<'t> {
        self.unary(Rule::Static(&Neg))
    }
}

// ---- sum: all elements to one; the gradient is upstream everywhere (kept as one number)
struct Sum;
impl Op for Sum {
    fn name(&self) -> &str {
        "sum"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor, String> {
        Ok(Tensor::scalar(pairwise_sum(x[0].data())))
    }
    fn backward(&self, _: &[&Tensor], _: &Tensor, up: Tensor, _: &[bool]) -> Grads {
        single(up)
    }
}

// ---- mean: sum / n -------------------------------------------------------------------
struct Mean;
impl Op for Mean {
    fn name(&self) -> &str {
        "mean"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor, String> {
        Ok(Tensor::scalar(
            pairwise_sum(x[0].data()) / x[0].len() as f64,
        ))
    }
    fn backward(&self, x: &[&Tensor], _: &Tensor, up: Tensor, _: &[bool]) -> Grads {
        let n = x[0].len() as f64;
        single(up.map_in_place(|u| u / n))
    }
}

// ---- sum_axis: drop one axis by summing over it -------------------------------------
struct SumAxis(usize);
impl Op for SumAxis {
    fn name(&self) -> &str {
        "sum_axis"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor, String> {
        let (shape, axis) = (x[0].shape(), self.0);
        if axis >= shape.len() {
            return Err(format!(
                "sum_axis: axis {axis} is out of range for shape {shape:?} (rank {})",
                shape.len()
            ));
        }
        let outer: usize = shape[..axis].iter().product();
        let (len, inner): (usize, usize) = (shape[axis], shape[axis + 1..].iter().product());
        let mut out = zeroed(outer * inner);
        let data = x[0].data();
        if inner == 1 {
            // The last axis: contiguous rows, summed pairwise like `sum` and `np.sum`.
            for (o, row) in out.iter_mut().zip(data.chunks_exact(len.max(1))) {
                *o = pairwise_sum(row);
            }
        } else {
            for o in 0..outer {
                let row = &mut out[o * inner..(o + 1) * inner];
                for k in 0..len {
                    let src = &data[(o * len + k) * inner..(o * len + k + 1) * inner];
                    row.iter_mut().zip(src).for_each(|(r, &s)| *r += s);
                }
            }
        }
        let mut out_shape = Shape::from_slice(shape);
        out_shape.remove(axis);
        Ok(Tensor::from_parts(data_from_vec(out), out_shape))
    }
    fn backward(&self, _: &[&Tensor], out: &Tensor, up: Tensor, _: &[bool]) -> Grads {
        if up.len() == 1 {
            return single(Tensor::scalar(up.data()[0]));
        }
        // Put the summed axis back as a 1, so the gradient broadcasts along it.
        let mut shape = Shape::from_slice(out.shape());
        shape.insert(self.0, 1);
        let g = up.broadcast_to(out.shape()).into_reshaped(shape);
        single(g)
    }
}

// ---- reshape: same data, new shape; the gradient is reshaped back -------------------
struct Reshape(Shape);
impl Op for Reshape {
    fn name(&self) -> &str {
        "reshape"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor, String> {
        x[0].reshape(&self.0).map_err(|e| e.to_string())
    }
    fn backward(&self, x: &[&Tensor], out: &Tensor, up: Tensor, _: &[bool]) -> Grads {
        if up.len() == 1 {
            return single(Tensor::scalar(up.data()[0]));
        }
        let g = up
            .broadcast_to(out.shape())
            .into_reshaped(Shape::from_slice(x[0].shape()));
        single(g)
    }
}

// ---- matmul: [m,k] x [k,n]; da = up b^T, db = a^T up -------------------------------
struct MatMul;
impl Op for MatMul {
    fn name(&self) -> &str {
        "matmul"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor, String> {
        let (a, b) = (x[0], x[1]);
        let ok = a.shape().len() == 2 && b.shape().len() == 2 && a.shape()[1] == b.shape()[0];
        if !ok {
            return Err(format!(
                "matmul: needs [m, k] x [k, n], got {:?} x {:?}",
                a.shape(),
                b.shape()
            ));
        }
        let (m, k, n) = (a.shape()[0], a.shape()[1], b.shape()[1]);
        let mut out = zeroed(m * n);
        for i in 0..m {
            let row = &mut out[i * n..(i + 1) * n];
            for p in 0..k {
                let aip = a.data()[i * k + p];
                let brow = &b.data()[p * n..(p + 1) * n];
                row.iter_mut().zip(brow).for_each(|(r, &bv)| *r += aip * bv);
            }
        }
        Ok(Tensor::from_parts(data_from_vec(out), smallvec![m, n]))
    }
    fn backward(&self, x: &[&Tensor], out: &Tensor, up: Tensor, wanted: &[bool]) -> Grads {
        let (a, b) = (x[0], x[1]);
        let up = up.broadcast_to(out.shape());
        let (m, k, n) = (a.shape()[0], a.shape()[1], b.shape()[1]);
        let (u, ad, bd) = (up.data(), a.data(), b.data());
        let ga = wanted[0].then(|| {
            // ga[i, p] = sum_j up[i, j] * b[p, j]
            let mut g = zeroed(m * k);
            for i in 0..m {
                for p in 0..k {
                    let (urow, brow) = (&u[i * n..(i + 1) * n], &bd[p * n..(p + 1) * n]);
                    g[i * k + p] = urow.iter().zip(brow).map(|(&u, &y)| chain(u, y)).sum();
                }
            }
            Tensor::from_parts(data_from_vec(g), smallvec![m, k])
        });
        let gb = wanted[1].then(|| {
            // gb[p, j] = sum_i a[i, p] * up[i, j]
            let mut g = zeroed(k * n);
            for i in 0..m {
                for p in 0..k {
                    let aip = ad[i * k + p];
                    let urow = &u[i * n..(i + 1) * n];
                    g[p * n..(p + 1) * n]
                        .iter_mut()
                        .zip(urow)
                        .for_each(|(g, &uv)| *g += chain(uv, aip));
                }
            }
            Tensor::from_parts(data_from_vec(g), smallvec![k, n])
        });
        Grads::Two([ga, gb])
    }
}

// ---- custom: a user-supplied forward and backward ------------------------------------
type CustomForward = Box<dyn Fn(&[&Tensor]) -> Tensor>;
type CustomBackward = Box<dyn Fn(&[&Tensor], &Tensor, &Tensor) -> Vec<Tensor>>;

struct Custom {
    name: String,
    forward: CustomForward,
    backward: CustomBackward,
}

impl Op for Custom {
    fn name(&self) -> &str {
        &self.name
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor, String> {
        Ok((self.forward)(x))
    }
    fn backward(&self, x: &[&Tensor], out: &Tensor, up: Tensor, wanted: &[bool]) -> Grads {
        let up = up.broadcast_to(out.shape());
        let grads = (self.backward)(x, out, &up);
        if grads.len() != x.len() {
            panic!(
                "tapegrad: custom op '{}': backward returned {} gradients for {} inputs",
                self.name,
                grads.len(),
                x.len()
            );
        }
        let grads = grads
            .into_iter()
            .zip(x)
            .zip(wanted)
            .enumerate()
            .map(|(i, ((g, input), &want))| {
                if g.shape() != input.shape() {
                    panic!(
                        "tapegrad: custom op '{}': backward returned shape {:?} for input {i} \
                         of shape {:?}",
                        self.name,
                        g.shape(),
                        input.shape()
                    );
                }
                want.then_some(g)
            })
            .collect();
        Grads::Many(grads)
    }
}

impl Tape {
    /// Record an op with a hand-written forward and backward, so a manual gradient can be
    /// checked in context (by [`crate::check::gradcheck`] against finite differences, or
    /// by [`crate::check::compare`] against the same function built from tape ops).
    ///
    /// - `forward(inputs)` returns the output value.
    /// - `backward(inputs, output, upstream)` returns one gradient per input, each of
    ///   that input's shape; `upstream` has the output's shape.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::new();
    /// let x = tape.var(Tensor::from(vec![1.0, 2.0]));
    /// // square, with its derivative written by hand
    /// let y = tape.custom(
    ///     "square",
    ///     &[x],
    ///     |x| Tensor::new(x[0].data().iter().map(|v| v * v).collect(), x[0].shape()).unwrap(),
    ///     |x, _out, up| {
    ///         let g = x[0].data().iter().zip(up.data()).map(|(v, u)| 2.0 * v * u).collect();
    ///         vec![Tensor::new(g, x[0].shape()).unwrap()]
    ///     },
    /// );
    /// let grads = y.sum().backward();
    /// assert_eq!(grads.wrt(x).data(), &[2.0, 4.0]);
    /// ```
    ///
    /// # Panics
    /// If the inputs belong to another tape; during `backward`, if the backward returns
    /// the wrong number of gradients or a gradient of the wrong shape.
    #[track_caller]
    pub fn custom<'t>(
        &'t self,
        name: &str,
        inputs: &[Var<'t>],
        forward: impl Fn(&[&Tensor]) -> Tensor + 'static,
        backward: impl Fn(&[&Tensor], &Tensor, &Tensor) -> Vec<Tensor> + 'static,
    ) -> Var<'t> {
        let op = Custom {
            name: name.to_string(),
            forward: Box::new(forward),
            backward: Box::new(backward),
        };
        self.push(Rule::Owned(Box::new(op)), inputs)
    }
}
