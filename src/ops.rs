//! Every op, each in one section: its maths and the `Var` method (or operator) that
//! records it, side by side.
//!
//! An elementwise op is one [`PerElement`] rule and nothing else: the value of an output
//! element, and the gradient of each input element given the inputs, the output and the
//! upstream element. [`Elementwise`] turns any rule into an op once for all of them:
//! numpy broadcasting in the forward, the rank-0 path on plain numbers (micrograd's
//! workload), and the tensor backward, whose gradients [`sum_to`] reduces back to each
//! operand's shape. Adding an elementwise op is adding a rule and its method.
//!
//! The other ops (reductions, reshape, matmul) implement [`Op`] directly.
//!
//! Two rules hold throughout:
//! - `max`/`min` *select*: the side routed away gets exactly 0, never `0 * upstream`.
//! - A zero upstream is a hard zero: `upstream * local` is 0 where `upstream` is 0, even
//!   where the local derivative is inf or NaN. An element the loss does not depend on
//!   gets gradient 0, as in the closed form, not an IEEE `0 * inf = NaN`.

use crate::tape::{InputGrads, Op, Var};
use crate::tensor::{
    Shape, Tensor, broadcast_shapes, buffer, data_from_vec, numel, pairwise_sum, sum_to, zeroed,
    zip_broadcast,
};
use smallvec::smallvec;
use std::ops;

// ---- the elementwise machinery -------------------------------------------------------

/// The maths of one elementwise op of one or two inputs, per element. This is the only
/// place an elementwise op's value and derivative are written.
pub(crate) trait PerElement: 'static {
    /// Name shown in panics, `Display for Tape` and DOT output.
    const NAME: &'static str;
    /// Whether the gradients depend on the upstream element alone (add, sub, neg): then
    /// a uniform upstream gives uniform gradients, kept as one number.
    const UPSTREAM_ONLY: bool = false;
    /// The output element from the input elements (`b` is 0 for a one-input op).
    fn value(&self, a: f64, b: f64) -> f64;
    /// The gradients of `a` and `b` (the second ignored for a one-input op), given the
    /// inputs, the output `out` and the upstream element `u`. A zero `u` must give
    /// exactly 0 (see the module docs).
    fn grad(&self, a: f64, b: f64, out: f64, u: f64) -> [f64; 2];
}

/// An op generated from a [`PerElement`] rule.
struct Elementwise<R>(R);

/// Record the elementwise op `rule` on `inputs` (one or two vars of one tape).
#[track_caller]
fn record<'t, R: PerElement>(rule: R, inputs: &[Var<'t>]) -> Var<'t> {
    inputs[0].tape.push(Box::new(Elementwise(rule)), inputs)
}

impl<R: PerElement> Op for Elementwise<R> {
    fn name(&self) -> &str {
        R::NAME
    }

    fn forward(&self, x: &[&Tensor]) -> Result<Tensor, String> {
        let rule = &self.0;
        match *x {
            [a] => Ok(a.map(|a| rule.value(a, 0.0))),
            [a, b] => {
                let shape = broadcast_shapes(a.shape(), b.shape()).ok_or_else(|| {
                    format!(
                        "{}: shapes {:?} and {:?} do not broadcast",
                        R::NAME,
                        a.shape(),
                        b.shape()
                    )
                })?;
                fits(R::NAME, &shape)?;
                let n = numel(&shape).unwrap_or(0);
                if n <= 1 || (a.len() == n || a.len() == 1) && (b.len() == n || b.len() == 1) {
                    // No broadcast beyond a scalar's: one loop per operand layout.
                    let (x, y) = (a.data(), b.data());
                    let v = match (x.len() == 1, y.len() == 1) {
                        (true, true) => values(rule, x[0], y[0], n),
                        (true, false) => values(rule, x[0], y, n),
                        (false, true) => values(rule, x, y[0], n),
                        (false, false) => values(rule, x, y, n),
                    };
                    return Ok(Tensor::from_parts(data_from_vec(v), shape));
                }
                Ok(zip_broadcast(a, b, &shape, |a, b| rule.value(a, b)))
            }
            _ => unreachable!("elementwise ops take one or two inputs"),
        }
    }

    fn forward_scalar(&self, [a, b]: [f64; 2]) -> Option<f64> {
        Some(self.0.value(a, b))
    }

    fn backward_scalar(&self, [a, b]: [f64; 2], out: f64, u: f64) -> Option<[f64; 2]> {
        Some(self.0.grad(a, b, out, u))
    }

    fn backward(&self, x: &[&Tensor], out: &Tensor, up: Tensor, tracked: &[bool]) -> InputGrads {
        let wanted = [tracked[0], tracked.get(1) == Some(&true)];
        let shape = out.shape();
        let n = out.len();
        let local = if R::UPSTREAM_ONLY && up.len() == 1 {
            // Uniform upstream, gradients that read nothing else: one number each.
            let g = self.0.grad(0.0, 0.0, 0.0, up.data()[0]);
            [0, 1].map(|k| wanted[k].then(|| Tensor::scalar(g[k])))
        } else {
            // Operands that are neither one number nor the output's shape are laid out
            // at the output's shape first (a broadcast that is not a scalar's).
            let flat = |t: &Tensor| (t.len() > 1 && t.len() != n).then(|| t.broadcast_to(shape));
            let a_wide = flat(x[0]);
            let b_wide = x.get(1).and_then(|b| flat(b));
            let a = a_wide.as_ref().unwrap_or(x[0]).data();
            let b = match x.get(1) {
                Some(b) => b_wide.as_ref().unwrap_or(b).data(),
                None => &[0.0],
            };
            let up = if up.len() > 1 && up.len() != n {
                up.broadcast_to(shape)
            } else {
                up
            };
            let rule = &self.0;
            let out = out.data();
            match (a.len() == 1, b.len() == 1) {
                (true, true) => generated(rule, a[0], b[0], out, up, wanted, shape),
                (true, false) => generated(rule, a[0], b, out, up, wanted, shape),
                (false, true) => generated(rule, a, b[0], out, up, wanted, shape),
                (false, false) => generated(rule, a, b, out, up, wanted, shape),
            }
        };
        let [ga, gb] = local;
        let reduce = |g: Tensor, input: &Tensor| sum_to(g, shape, input.shape());
        let mut grads: InputGrads = smallvec![ga.map(|g| reduce(g, x[0]))];
        if let Some(b) = x.get(1) {
            grads.push(gb.map(|g| reduce(g, b)));
        }
        grads
    }
}

/// `Ok` if an op's result shape has an element count that fits in `usize`.
fn fits(op: &str, shape: &[usize]) -> Result<(), String> {
    match numel(shape) {
        Some(_) => Ok(()),
        None => Err(format!(
            "{op}: the result would have shape {shape:?}, more elements than fit in usize"
        )),
    }
}

/// An operand of the generated backward loop: one number for every element, or one per
/// element. Generic, so that each combination compiles to its own tight loop.
trait Source: Copy {
    /// Element `i` (any `i` below the `n` given to `first`).
    fn at(self, i: usize) -> f64;
    /// The first `n` elements (so the loop's index needs no bounds check).
    fn first(self, n: usize) -> Self;
}

impl Source for f64 {
    #[inline(always)]
    fn at(self, _: usize) -> f64 {
        self
    }
    fn first(self, _: usize) -> f64 {
        self
    }
}

impl Source for &[f64] {
    #[inline(always)]
    fn at(self, i: usize) -> f64 {
        self[i]
    }
    fn first(self, n: usize) -> Self {
        &self[..n]
    }
}

/// `n` output elements from the rule's value on two operands (each one number or `n`).
fn values<R: PerElement>(rule: &R, a: impl Source, b: impl Source, n: usize) -> Vec<f64> {
    let (a, b) = (a.first(n), b.first(n));
    let mut v = buffer(n);
    v.extend((0..n).map(move |i| rule.value(a.at(i), b.at(i))));
    v
}

/// The gradients of the wanted operands at the output's shape, from the rule applied to
/// every element. `up` has one element or as many as the output.
fn generated<R: PerElement>(
    rule: &R,
    a: impl Source,
    b: impl Source,
    out: &[f64],
    up: Tensor,
    wanted: [bool; 2],
    shape: &[usize],
) -> [Option<Tensor>; 2] {
    let n = out.len();
    let (a, b) = (a.first(n), b.first(n));
    let g = move |i: usize, u: f64| rule.grad(a.at(i), b.at(i), out[i], u);
    // One operand wants a gradient and nobody else holds the upstream: write in place.
    if wanted[0] != wanted[1] && up.len() == n && n > 1 {
        let mut up = up.into_reshaped(Shape::from_slice(shape));
        if let Some(data) = up.unique_mut() {
            let data = &mut data[..n]; // its length, for the loop's bounds checks
            match wanted[0] {
                true => in_place(data, |i, u| g(i, u)[0]),
                false => in_place(data, |i, u| g(i, u)[1]),
            }
            return if wanted[0] {
                [Some(up), None]
            } else {
                [None, Some(up)]
            };
        }
        let up = &up.data()[..n];
        return fill(wanted, n, shape, move |i| g(i, up[i]));
    }
    match up.data() {
        &[u] => fill(wanted, n, shape, move |i| g(i, u)),
        up => {
            let up = &up[..n];
            fill(wanted, n, shape, move |i| g(i, up[i]))
        }
    }
}

/// `data[i] = grad(i, data[i])`: the upstream replaced by the gradient.
fn in_place(data: &mut [f64], grad: impl Fn(usize, f64) -> f64) {
    for (i, u) in data.iter_mut().enumerate() {
        *u = grad(i, *u);
    }
}

/// New tensors of `shape` for the wanted operands, element `i` from `grad(i)`.
fn fill(
    wanted: [bool; 2],
    n: usize,
    shape: &[usize],
    grad: impl Fn(usize) -> [f64; 2] + Copy,
) -> [Option<Tensor>; 2] {
    let tensor = |v: Vec<f64>| Tensor::from_parts(data_from_vec(v), Shape::from_slice(shape));
    let one = |k: usize| {
        let mut v = buffer(n);
        match k {
            0 => v.extend((0..n).map(move |i| grad(i)[0])),
            _ => v.extend((0..n).map(move |i| grad(i)[1])),
        }
        tensor(v)
    };
    match wanted {
        [true, false] => [Some(one(0)), None],
        [false, true] => [None, Some(one(1))],
        [true, true] => {
            let (mut ga, mut gb) = (buffer(n), buffer(n));
            for i in 0..n {
                let [x, y] = grad(i);
                ga.push(x);
                gb.push(y);
            }
            [Some(tensor(ga)), Some(tensor(gb))]
        }
        [false, false] => [None, None],
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

/// Either operand of a binary op: a `Var` or an `f64` (which becomes a constant).
pub trait Operands<'t> {
    /// Both operands as vars on one tape.
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

/// `a op b` for the arithmetic operators, between vars and with an `f64` on either side.
macro_rules! operator {
    ($trait:ident, $method:ident, $rule:ident) => {
        /// Elementwise, broadcast like numpy.
        ///
        /// # Panics
        /// If the shapes do not broadcast or the vars belong to different tapes.
        impl<'t> ops::$trait<Var<'t>> for Var<'t> {
            type Output = Var<'t>;
            #[track_caller]
            fn $method(self, rhs: Var<'t>) -> Var<'t> {
                record($rule, &[self, rhs])
            }
        }
        /// Elementwise with a constant (recorded as a rank-0 constant node).
        impl<'t> ops::$trait<f64> for Var<'t> {
            type Output = Var<'t>;
            #[track_caller]
            fn $method(self, rhs: f64) -> Var<'t> {
                let (a, b) = (self, rhs).vars();
                record($rule, &[a, b])
            }
        }
        /// Elementwise with a constant (recorded as a rank-0 constant node).
        impl<'t> ops::$trait<Var<'t>> for f64 {
            type Output = Var<'t>;
            #[track_caller]
            fn $method(self, rhs: Var<'t>) -> Var<'t> {
                let (a, b) = (self, rhs).vars();
                record($rule, &[a, b])
            }
        }
    };
}

// ---- add: a + b ------------------------------------------------------------------------
struct Add;
impl PerElement for Add {
    const NAME: &'static str = "add";
    const UPSTREAM_ONLY: bool = true;
    fn value(&self, a: f64, b: f64) -> f64 {
        a + b
    }
    fn grad(&self, _: f64, _: f64, _: f64, u: f64) -> [f64; 2] {
        [u, u]
    }
}
operator!(Add, add, Add);

// ---- sub: a - b ------------------------------------------------------------------------
struct Sub;
impl PerElement for Sub {
    const NAME: &'static str = "sub";
    const UPSTREAM_ONLY: bool = true;
    fn value(&self, a: f64, b: f64) -> f64 {
        a - b
    }
    fn grad(&self, _: f64, _: f64, _: f64, u: f64) -> [f64; 2] {
        [u, -u]
    }
}
operator!(Sub, sub, Sub);

// ---- mul: a * b ------------------------------------------------------------------------
struct Mul;
impl PerElement for Mul {
    const NAME: &'static str = "mul";
    fn value(&self, a: f64, b: f64) -> f64 {
        a * b
    }
    fn grad(&self, a: f64, b: f64, _: f64, u: f64) -> [f64; 2] {
        [chain(u, b), chain(u, a)]
    }
}
operator!(Mul, mul, Mul);

// ---- div: a / b (IEEE: x / 0 is ±inf or NaN, nothing is clamped) ----------------------
// d(a/b)/da = 1/b, d(a/b)/db = -(a/b)/b = -out/b
struct Div;
impl PerElement for Div {
    const NAME: &'static str = "div";
    fn value(&self, a: f64, b: f64) -> f64 {
        a / b
    }
    fn grad(&self, _: f64, b: f64, out: f64, u: f64) -> [f64; 2] {
        [chain_div(u, b), -chain_div(chain(u, out), b)]
    }
}
operator!(Div, div, Div);

// ---- neg: -a ---------------------------------------------------------------------------
struct Neg;
impl PerElement for Neg {
    const NAME: &'static str = "neg";
    const UPSTREAM_ONLY: bool = true;
    fn value(&self, a: f64, _: f64) -> f64 {
        -a
    }
    fn grad(&self, _: f64, _: f64, _: f64, u: f64) -> [f64; 2] {
        [-u, 0.0]
    }
}

/// Elementwise negation.
impl<'t> ops::Neg for Var<'t> {
    type Output = Var<'t>;
    #[track_caller]
    fn neg(self) -> Var<'t> {
        record(Neg, &[self])
    }
}

// ---- exp: d e^a = e^a ------------------------------------------------------------------
struct Exp;
impl PerElement for Exp {
    const NAME: &'static str = "exp";
    fn value(&self, a: f64, _: f64) -> f64 {
        a.exp()
    }
    fn grad(&self, _: f64, _: f64, out: f64, u: f64) -> [f64; 2] {
        [chain(u, out), 0.0]
    }
}

// ---- ln: d ln a = 1 / a ----------------------------------------------------------------
struct Ln;
impl PerElement for Ln {
    const NAME: &'static str = "ln";
    fn value(&self, a: f64, _: f64) -> f64 {
        a.ln()
    }
    fn grad(&self, a: f64, _: f64, _: f64, u: f64) -> [f64; 2] {
        [chain_div(u, a), 0.0]
    }
}

impl<'t> Var<'t> {
    /// Elementwise `e^x`.
    #[track_caller]
    pub fn exp(self) -> Var<'t> {
        record(Exp, &[self])
    }

    /// Elementwise natural logarithm (IEEE: `ln(0) = -inf`, `ln(-1) = NaN`).
    #[track_caller]
    pub fn ln(self) -> Var<'t> {
        record(Ln, &[self])
    }
}

// ---- max and min: numpy's values; the tie rule for the gradient -----------------------

/// Where the gradient of `max`/`min` goes where neither operand wins (a tie, or a NaN
/// on either side), fixed when the op is recorded from which operands are tracked: to
/// the untracked one, or half to each if both are tracked. A type parameter, so the
/// backward loop has no branch on it.
const TO_FIRST: u8 = 0;
const TO_SECOND: u8 = 1;
const SPLIT: u8 = 2;

/// The tie rule of `max(a, b)` and `min(a, b)`: the untracked operand gets a tie (the
/// first if neither is tracked: nothing flows then), half to each if both are tracked.
#[track_caller]
fn tie_of(a: Var<'_>, b: Var<'_>) -> u8 {
    match (a.is_tracked(), b.is_tracked()) {
        (true, true) => SPLIT,
        (true, false) => TO_SECOND,
        (false, _) => TO_FIRST,
    }
}

/// The gradients of a selecting op: `u` to the winner (`a` where `a_wins`, `b` where
/// `b_wins`), exactly 0 to the other; where neither wins, by the tie rule `TIE`.
#[inline(always)]
fn select<const TIE: u8>(a_wins: bool, b_wins: bool, u: f64) -> [f64; 2] {
    let (tie_a, tie_b) = match TIE {
        TO_FIRST => (u, 0.0),
        TO_SECOND => (0.0, u),
        _ => (0.5 * u, 0.5 * u),
    };
    let ga = if a_wins {
        u
    } else if b_wins {
        0.0
    } else {
        tie_a
    };
    let gb = if b_wins {
        u
    } else if a_wins {
        0.0
    } else {
        tie_b
    };
    [ga, gb]
}

/// `np.maximum`: NaN where either operand is NaN, `b` at a tie (numpy returns b).
struct Max<const TIE: u8>;
impl<const TIE: u8> PerElement for Max<TIE> {
    const NAME: &'static str = "max";
    fn value(&self, a: f64, b: f64) -> f64 {
        if a.is_nan() || a > b { a } else { b }
    }
    fn grad(&self, a: f64, b: f64, _: f64, u: f64) -> [f64; 2] {
        select::<TIE>(a > b, b > a, u)
    }
}

/// `np.minimum`: NaN where either operand is NaN, `b` at a tie.
struct Min<const TIE: u8>;
impl<const TIE: u8> PerElement for Min<TIE> {
    const NAME: &'static str = "min";
    fn value(&self, a: f64, b: f64) -> f64 {
        if a.is_nan() || a < b { a } else { b }
    }
    fn grad(&self, a: f64, b: f64, _: f64, u: f64) -> [f64; 2] {
        select::<TIE>(a < b, b < a, u)
    }
}

/// Elementwise maximum of two operands (vars or `f64`s), broadcast like `np.maximum`.
///
/// - Value: NaN where either operand is NaN (like `np.maximum`, unlike `f64::max`), and
///   `b` at a tie, as numpy returns.
/// - Gradient: to `a` where `a > b`, to `b` where `b > a`; the other operand gets
///   exactly 0 (selected, never multiplied). Where neither wins (a tie, or a NaN on
///   either side): to the *untracked* operand if exactly one is untracked (a constant,
///   or an expression of constants), so nothing flows back; split 0.5 and 0.5 if both
///   are tracked. So `max(a, b)` and `max(b, a)` have the same gradient, `max(0.0, z)`
///   and `z.max(0.0)` both have gradient exactly `np.where(z > 0, 1, 0)`, the hinge loss
///   matches its closed form at `pred * target == 1`, and `max(x, -x)` has gradient
///   `np.sign(x)` (0 at 0).
///
/// ```
/// use tapegrad::{max, Tape, Tensor};
/// let tape = Tape::new();
/// let z = tape.var(Tensor::from(vec![-1.0, 0.0, 2.0]));
/// let g = max(0.0, z).sum().backward();
/// assert_eq!(g.wrt(z).data(), &[0.0, 0.0, 1.0]); // the tie at 0 goes to the constant
/// let g = z.max(0.0).sum().backward();
/// assert_eq!(g.wrt(z).data(), &[0.0, 0.0, 1.0]); // whichever side the constant is on
/// let g = max(z, -z).sum().backward();
/// assert_eq!(g.wrt(z).data(), &[-1.0, 0.0, 1.0]); // two tracked operands: half each
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
    match tie_of(a, b) {
        TO_FIRST => record(Max::<TO_FIRST>, &[a, b]),
        TO_SECOND => record(Max::<TO_SECOND>, &[a, b]),
        _ => record(Max::<SPLIT>, &[a, b]),
    }
}

/// Elementwise minimum, the mirror of [`max`]: NaN wins, `b` at a tie; the gradient
/// goes to the smaller operand, and where neither is smaller (a tie or a NaN), by the
/// same rule as `max`: to the untracked operand, or half to each if both are tracked.
///
/// # Panics
/// If the shapes do not broadcast, or the vars belong to different tapes.
#[track_caller]
pub fn min<'t, A, B>(a: A, b: B) -> Var<'t>
where
    (A, B): Operands<'t>,
{
    let (a, b) = (a, b).vars();
    match tie_of(a, b) {
        TO_FIRST => record(Min::<TO_FIRST>, &[a, b]),
        TO_SECOND => record(Min::<TO_SECOND>, &[a, b]),
        _ => record(Min::<SPLIT>, &[a, b]),
    }
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
    fn backward(&self, _: &[&Tensor], _: &Tensor, up: Tensor, _: &[bool]) -> InputGrads {
        smallvec![Some(up)]
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
    fn backward(&self, x: &[&Tensor], _: &Tensor, up: Tensor, _: &[bool]) -> InputGrads {
        let n = x[0].len() as f64;
        smallvec![Some(up.map_in_place(|u| u / n))]
    }
}

impl<'t> Var<'t> {
    /// Sum of all elements (pairwise, as accurate as `np.sum`), shape `[]`; 0 for an
    /// empty var.
    #[track_caller]
    pub fn sum(self) -> Var<'t> {
        self.tape.push(Box::new(Sum), &[self])
    }

    /// Mean of all elements, shape `[]` (NaN for an empty var, like numpy).
    #[track_caller]
    pub fn mean(self) -> Var<'t> {
        self.tape.push(Box::new(Mean), &[self])
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
        let mut out_shape = Shape::from_slice(shape);
        out_shape.remove(axis);
        fits("sum_axis", &out_shape)?;
        if x[0].is_empty() {
            // Sums over nothing (+0.0), or no sums at all.
            return Ok(Tensor::zeros(&out_shape));
        }
        // Exact: products of some of the dimensions of a non-empty shape that fits.
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
        Ok(Tensor::from_parts(data_from_vec(out), out_shape))
    }
    fn backward(&self, _: &[&Tensor], out: &Tensor, up: Tensor, _: &[bool]) -> InputGrads {
        if up.len() == 1 {
            return smallvec![Some(Tensor::scalar(up.data()[0]))];
        }
        // Put the summed axis back as a 1, so the gradient broadcasts along it.
        let mut shape = Shape::from_slice(out.shape());
        shape.insert(self.0, 1);
        smallvec![Some(up.broadcast_to(out.shape()).into_reshaped(shape))]
    }
}

impl<'t> Var<'t> {
    /// Sum over `axis`, which is dropped from the shape (like `np.sum(x, axis)`).
    ///
    /// # Panics
    /// If `axis` is not below the var's rank (the message names the axis and the shape).
    #[track_caller]
    pub fn sum_axis(self, axis: usize) -> Var<'t> {
        self.tape.push(Box::new(SumAxis(axis)), &[self])
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
        self.tape
            .push(Box::new(Reshape(Shape::from_slice(shape))), &[self])
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
        fits("matmul", &[m, n])?;
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
    fn backward(&self, x: &[&Tensor], out: &Tensor, up: Tensor, tracked: &[bool]) -> InputGrads {
        let (a, b) = (x[0], x[1]);
        let up = up.broadcast_to(out.shape());
        let (m, k, n) = (a.shape()[0], a.shape()[1], b.shape()[1]);
        let (u, ad, bd) = (up.data(), a.data(), b.data());
        let ga = tracked[0].then(|| {
            // ga[i, p] = sum_j up[i, j] * b[p, j]
            let mut g = zeroed(m * k);
            for i in 0..m {
                for p in 0..k {
                    let (urow, brow) = (&u[i * n..(i + 1) * n], &bd[p * n..(p + 1) * n]);
                    // A sum over nothing (n == 0) is +0.0, as numpy's.
                    g[i * k + p] = urow
                        .iter()
                        .zip(brow)
                        .fold(0.0, |s, (&u, &y)| s + chain(u, y));
                }
            }
            Tensor::from_parts(data_from_vec(g), smallvec![m, k])
        });
        let gb = tracked[1].then(|| {
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
        smallvec![ga, gb]
    }
}

impl<'t> Var<'t> {
    /// Matrix product of two 2-d vars: `[m, k] x [k, n] -> [m, n]`.
    ///
    /// # Panics
    /// If either is not 2-d, the inner dimensions differ, or the vars belong to
    /// different tapes.
    #[track_caller]
    pub fn matmul(self, other: Var<'t>) -> Var<'t> {
        self.tape.push(Box::new(MatMul), &[self, other])
    }
}
