//! Every op, each in one section: its maths and the `Var` method (or operator) that
//! records it, side by side.
//!
//! An elementwise op is one [`PerElement`] rule and nothing else: the value of an output
//! element, and the gradient of each input element given the inputs, the output and the
//! upstream element. [`Elementwise`] turns any rule into an op once for all of them:
//! numpy broadcasting in the forward, the rank-0 path on plain numbers (micrograd's
//! workload), and the tensor backward, whose gradients [`sum_to`] reduces back to each
//! operand's shape. Adding an elementwise op is adding a rule and its method to
//! `elementwise.rs`.
//!
//! The other ops implement [`Op`] directly: reductions along an axis in `reduce.rs`,
//! shape and selection in `shape.rs`, the matrix product in `matmul.rs`.
//!
//! Two rules hold throughout:
//! - `max`/`min` *select*: the side routed away gets exactly 0, never `0 * upstream`.
//! - A zero upstream is a hard zero: `upstream * local` is 0 where `upstream` is 0, even
//!   where the local derivative is inf or NaN. An element the loss does not depend on
//!   gets gradient 0, as in the closed form, not an IEEE `0 * inf = NaN`.

use crate::tape::{Block, Held, InputGrads, Lane, Op, Up, Var, Wanted, without_state};
use crate::tensor::{
    Shape, Tensor, broadcast_shapes, buffer, data_from_vec, numel, sum_to, zip_broadcast,
};
use smallvec::smallvec;

// ---- the elementwise machinery -------------------------------------------------------

/// The maths of one elementwise op of one or two inputs, per element. This is the only
/// place an elementwise op's value and derivative are written.
pub(crate) trait PerElement: Sync + 'static {
    /// Name shown in panics, `Display for Tape` and DOT output.
    const NAME: &'static str;
    /// Whether the gradients depend on the upstream element alone (add, sub, neg): then
    /// a uniform upstream gives uniform gradients, kept as one number.
    const UPSTREAM_ONLY: bool = false;
    /// Whether the op costs about as little as moving its element through memory (add,
    /// sub, mul, neg, max, min, abs, relu): only such ops are fused by `Tape::new`,
    /// whose fused backward recomputes them.
    const CHEAP: bool = false;
    /// Whether `grad` reads the output `out` (`false` lets a fused backward skip
    /// recomputing the value; a rule whose `grad` names `out` must leave it `true`).
    const READS_OUT: bool = true;
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
pub(crate) fn record<'t, R: PerElement>(rule: R, inputs: &[Var<'t>]) -> Var<'t> {
    let tape = inputs[0].tape;
    let op = match stateless_op(rule) {
        Ok(op) => op,
        Err(rule) => return tape.push(Elementwise(rule), inputs),
    };
    // Rank-0 operands (micrograd's workload): the rule on plain numbers, no tensors.
    let value = |a, b| op.0.value(a, b);
    match tape.push_scalar(inputs, value, |_, _| op) {
        Some(var) => var,
        None => tape.push_held(Held::Static(op), inputs),
    }
}

/// The op of a rule without state, as a `'static` reference (see [`without_state`]);
/// a rule with state is given back.
#[inline(always)]
fn stateless_op<R: PerElement>(rule: R) -> Result<&'static Elementwise<R>, R> {
    without_state(Elementwise(rule)).map_err(|op| op.0)
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
                let n = fits(R::NAME, &shape)?;
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

    fn backward_scalar(&self, a: f64, b: f64, out: f64, u: f64) -> (f64, f64) {
        let [ga, gb] = self.0.grad(a, b, out, u);
        (ga, gb)
    }

    fn block(&self) -> Option<&dyn Block> {
        Some(self)
    }

    fn cheap(&self) -> bool {
        R::CHEAP
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
            // A rule that reads only the upstream gets placeholders instead.
            let flat = |t: &Tensor| (t.len() > 1 && t.len() != n).then(|| t.broadcast_to(shape));
            let (a_wide, b_wide) = match R::UPSTREAM_ONLY {
                true => (None, None),
                false => (flat(x[0]), x.get(1).and_then(|b| flat(b))),
            };
            let a = match R::UPSTREAM_ONLY {
                true => &[0.0],
                false => a_wide.as_ref().unwrap_or(x[0]).data(),
            };
            let b = match x.get(1) {
                Some(b) if !R::UPSTREAM_ONLY => b_wide.as_ref().unwrap_or(b).data(),
                _ => &[0.0],
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

impl<R: PerElement> Block for Elementwise<R> {
    fn forward_block(&self, a: Lane<'_>, b: Lane<'_>, out: &mut [f64]) {
        let rule = &self.0;
        match (a, b) {
            (Lane::One(a), Lane::One(b)) => block_values(rule, a, b, out),
            (Lane::One(a), Lane::Many(b)) => block_values(rule, a, b, out),
            (Lane::Many(a), Lane::One(b)) => block_values(rule, a, b, out),
            (Lane::Many(a), Lane::Many(b)) => block_values(rule, a, b, out),
        }
    }

    fn backward_block(&self, a: Lane<'_>, b: Lane<'_>, out: &[f64], up: Up<'_>, g: Wanted<'_>) {
        let rule = &self.0;
        match up {
            Up::One(u) => lanes_grads(rule, a, b, out, u, g),
            Up::Many(u) => lanes_grads(rule, a, b, out, u, g),
            Up::Negated(u) => lanes_grads(rule, a, b, out, Negated(u), g),
        }
    }

    fn reads_operands(&self) -> bool {
        !R::UPSTREAM_ONLY
    }

    fn passes(&self, k: usize) -> Option<bool> {
        if !R::UPSTREAM_ONLY {
            return None;
        }
        // A rule that reads only the upstream hands it on if it gives back `u` or `-u`,
        // the same bits, for every `u`: a number, both zeros, and NaN of either sign
        // (where `-u` and `u * -1.0` differ) cover the ways two such rules can differ.
        let probes = [1.5, -0.0, 0.0, f64::NAN, -f64::NAN, f64::INFINITY];
        let given = |u: f64| self.0.grad(0.0, 0.0, f64::NAN, u)[k].to_bits();
        if probes.iter().all(|&u| given(u) == u.to_bits()) {
            Some(false)
        } else if probes.iter().all(|&u| given(u) == (-u).to_bits()) {
            Some(true)
        } else {
            None
        }
    }

    fn reads_out(&self) -> bool {
        R::READS_OUT
    }
}

/// The element count of an op's result shape, if one allocation can hold it; else an
/// error naming the op and the shape.
pub(crate) fn fits(op: &str, shape: &[usize]) -> Result<usize, String> {
    match numel(shape) {
        Some(n) => Ok(n),
        None => Err(format!(
            "{op}: the result would have shape {shape:?}, more elements than fit in memory"
        )),
    }
}

/// `shape` as `(outer, len, inner)` around `axis` (which must be below the rank): element
/// `(o, k, i)` of a row-major tensor of that shape sits at `(o * len + k) * inner + i`.
/// Exact for the shape of any tensor that exists (a shape with a 0 counts 0).
pub(crate) fn split_at(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let count = |dims: &[usize]| -> usize {
        if dims.contains(&0) {
            0
        } else {
            dims.iter().product()
        }
    };
    (
        count(&shape[..axis]),
        shape[axis],
        count(&shape[axis + 1..]),
    )
}

/// [`block_grads`] for each layout of the operands.
#[inline(always)]
fn lanes_grads<R: PerElement>(
    rule: &R,
    a: Lane<'_>,
    b: Lane<'_>,
    out: &[f64],
    up: impl Source,
    g: Wanted<'_>,
) {
    match (a, b) {
        (Lane::One(a), Lane::One(b)) => block_grads(rule, a, b, out, up, g),
        (Lane::One(a), Lane::Many(b)) => block_grads(rule, a, b, out, up, g),
        (Lane::Many(a), Lane::One(b)) => block_grads(rule, a, b, out, up, g),
        (Lane::Many(a), Lane::Many(b)) => block_grads(rule, a, b, out, up, g),
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

/// An upstream read negated (see [`Up::Negated`]).
#[derive(Clone, Copy)]
struct Negated<'a>(&'a [f64]);

impl Source for Negated<'_> {
    #[inline(always)]
    fn at(self, i: usize) -> f64 {
        -self.0[i]
    }
    fn first(self, n: usize) -> Self {
        Negated(&self.0[..n])
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

/// `out[i]` from the rule's value on two operands over one block of a fused region.
fn block_values<R: PerElement>(rule: &R, a: impl Source, b: impl Source, out: &mut [f64]) {
    let n = out.len();
    let (a, b) = (a.first(n), b.first(n));
    for (i, o) in out.iter_mut().enumerate() {
        *o = rule.value(a.at(i), b.at(i));
    }
}

/// The rule's gradients over one block of a fused region, into the wanted outputs.
fn block_grads<R: PerElement>(
    rule: &R,
    a: impl Source,
    b: impl Source,
    out: &[f64],
    up: impl Source,
    g: Wanted<'_>,
) {
    let n = g.iter().flatten().map(|g| g.len()).next().unwrap_or(0);
    let (a, b, up) = (a.first(n), b.first(n), up.first(n));
    // `out` is not recomputed for a rule that does not read it (its register then holds
    // stale values, and the rule gets NaN instead).
    let out = if R::READS_OUT { &out[..n] } else { out };
    let grad = move |i: usize| {
        let o = if R::READS_OUT { out[i] } else { f64::NAN };
        rule.grad(a.at(i), b.at(i), o, up.at(i))
    };
    match g {
        [Some(ga), None] => ga[..n]
            .iter_mut()
            .enumerate()
            .for_each(|(i, g)| *g = grad(i)[0]),
        [None, Some(gb)] => gb[..n]
            .iter_mut()
            .enumerate()
            .for_each(|(i, g)| *g = grad(i)[1]),
        [Some(ga), Some(gb)] => {
            let (ga, gb) = (&mut ga[..n], &mut gb[..n]);
            for i in 0..n {
                [ga[i], gb[i]] = grad(i);
            }
        }
        [None, None] => {}
    }
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
pub(crate) fn chain(upstream: f64, local: f64) -> f64 {
    if upstream == 0.0 {
        0.0
    } else {
        upstream * local
    }
}

/// `upstream / local`, with a zero upstream giving exactly zero.
pub(crate) fn chain_div(upstream: f64, local: f64) -> f64 {
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
        impl<'t> std::ops::$trait<Var<'t>> for Var<'t> {
            type Output = Var<'t>;
            #[track_caller]
            fn $method(self, rhs: Var<'t>) -> Var<'t> {
                record($rule, &[self, rhs])
            }
        }
        /// Elementwise with a constant (recorded as a rank-0 constant node).
        impl<'t> std::ops::$trait<f64> for Var<'t> {
            type Output = Var<'t>;
            #[track_caller]
            fn $method(self, rhs: f64) -> Var<'t> {
                let (a, b) = (self, rhs).vars();
                record($rule, &[a, b])
            }
        }
        /// Elementwise with a constant (recorded as a rank-0 constant node).
        impl<'t> std::ops::$trait<Var<'t>> for f64 {
            type Output = Var<'t>;
            #[track_caller]
            fn $method(self, rhs: Var<'t>) -> Var<'t> {
                let (a, b) = (self, rhs).vars();
                record($rule, &[a, b])
            }
        }
    };
}

mod elementwise;
mod matmul;
mod reduce;
mod shape;

pub use elementwise::{max, min};
pub use shape::select;
