//! The op table: one row per op of the engine, with its name, how to apply it to vars,
//! its reference value and its derivative. It feeds the special-value tests, the
//! semantics tests, the property tests and the finite-difference tests, so adding an op
//! is adding a row to [`OPS`]. `semantics.rs` fails if an op of the engine has no row.
//!
//! An elementwise row gives its value and derivative per element, in plain f64
//! arithmetic; every other row gives them on whole tensors (the derivative as the
//! gradient of each input for a given upstream gradient).

use super::SPECIALS;
use super::shapes::{broadcast_offset, broadcast_to, broadcast_zip, map, unravel};
use tapegrad::{Tensor, Var, max, min};

pub type Unary = for<'t> fn(Var<'t>) -> Var<'t>;
pub type Binary = for<'t> fn(Var<'t>, Var<'t>) -> Var<'t>;
pub type VarF64 = for<'t> fn(Var<'t>, f64) -> Var<'t>;
pub type F64Var = for<'t> fn(f64, Var<'t>) -> Var<'t>;
pub type OnTensors = for<'t> fn(&[Var<'t>], &Arg) -> Var<'t>;

/// One op of the engine.
pub struct Op {
    /// The engine's name for it (`PerElement::NAME` or `Op::name`), as panics show it.
    pub name: &'static str,
    pub rule: Rule,
}

pub enum Rule {
    Unary(UnaryRule),
    Binary(BinaryRule),
    Tensor(TensorRule),
}

/// An elementwise op of one input.
pub struct UnaryRule {
    pub apply: Unary,
    pub value: fn(f64) -> f64,
    /// d op(a) / da.
    pub grad: fn(f64) -> f64,
    /// Where the op is smooth (the gradient tests draw from here).
    pub domain: Domain,
}

/// An elementwise op of two inputs, broadcast like numpy.
pub struct BinaryRule {
    pub apply: Binary,
    /// With a plain number as the second operand, and as the first.
    pub var_f64: VarF64,
    pub f64_var: F64Var,
    pub value: fn(f64, f64) -> f64,
    /// `[d/da, d/db]` at `(a, b)`, given which operands are tracked (depend on a
    /// `Tape::var`). Only the tie rule of max/min reads `tracked`; an untracked
    /// operand's entry is the share it takes, which then flows nowhere.
    pub grad: fn(f64, f64, [bool; 2]) -> [f64; 2],
    /// Where the op is smooth, per operand.
    pub domains: [Domain; 2],
    /// max/min: the gradient selects one operand. It has a kink at `a == b` (gradient
    /// tests keep the operands apart), and the side routed away gets exactly 0.
    pub selects: bool,
    /// `op(a, b) == op(b, a)`.
    pub commutes: bool,
}

/// Any other op, on whole tensors.
pub struct TensorRule {
    pub apply: OnTensors,
    pub value: fn(&[Tensor], &Arg) -> Tensor,
    /// The gradient of each input given the upstream gradient (of the output's shape).
    pub vjp: fn(&[Tensor], &Arg, &Tensor) -> Vec<Tensor>,
    pub form: Form,
}

/// The inputs an op on tensors takes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Form {
    /// One tensor of any shape, reduced to one number.
    Reduce,
    /// One tensor and an axis below its rank ([`Arg::Axis`]).
    Axis,
    /// One tensor and a shape of as many elements ([`Arg::Shape`]).
    Reshape,
    /// Two matrices `[m, k]` and `[k, n]`.
    MatMul,
}

/// What an op takes besides its inputs.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    None,
    Axis(usize),
    Shape(Vec<usize>),
}

impl Arg {
    pub fn axis(&self) -> usize {
        match self {
            Arg::Axis(axis) => *axis,
            other => panic!("test bug: {other:?} is not an axis"),
        }
    }

    pub fn shape(&self) -> &[usize] {
        match self {
            Arg::Shape(shape) => shape,
            other => panic!("test bug: {other:?} is not a shape"),
        }
    }
}

/// Where an elementwise op is smooth, and finite differences are accurate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Domain {
    /// `±[0.5, 3)`: away from 0 (poles of `/`) and small enough for `exp`.
    Signed,
    /// `[0.5, 3)`, for `ln`.
    Positive,
}

impl Domain {
    /// Map a magnitude in `[0.5, 3)` and a sign into the domain.
    pub fn pick(self, magnitude: f64, negative: bool) -> f64 {
        match self {
            Domain::Signed if negative => -magnitude,
            _ => magnitude,
        }
    }
}

use Domain::{Positive, Signed};

pub static OPS: &[Op] = &[
    Op {
        name: "add",
        rule: Rule::Binary(BinaryRule {
            apply: |a, b| a + b,
            var_f64: |a, b| a + b,
            f64_var: |a, b| a + b,
            value: |a, b| a + b,
            grad: |_, _, _| [1.0, 1.0],
            domains: [Signed, Signed],
            selects: false,
            commutes: true,
        }),
    },
    Op {
        name: "sub",
        rule: Rule::Binary(BinaryRule {
            apply: |a, b| a - b,
            var_f64: |a, b| a - b,
            f64_var: |a, b| a - b,
            value: |a, b| a - b,
            grad: |_, _, _| [1.0, -1.0],
            domains: [Signed, Signed],
            selects: false,
            commutes: false,
        }),
    },
    Op {
        name: "mul",
        rule: Rule::Binary(BinaryRule {
            apply: |a, b| a * b,
            var_f64: |a, b| a * b,
            f64_var: |a, b| a * b,
            value: |a, b| a * b,
            grad: |a, b, _| [b, a],
            domains: [Signed, Signed],
            selects: false,
            commutes: true,
        }),
    },
    Op {
        name: "div",
        rule: Rule::Binary(BinaryRule {
            apply: |a, b| a / b,
            var_f64: |a, b| a / b,
            f64_var: |a, b| a / b,
            value: |a, b| a / b,
            grad: |a, b, _| [1.0 / b, -(a / b) / b],
            domains: [Signed, Signed],
            selects: false,
            commutes: false,
        }),
    },
    Op {
        name: "max",
        rule: Rule::Binary(BinaryRule {
            apply: |a, b| max(a, b),
            var_f64: |a, b| a.max(b),
            f64_var: |a, b| max(a, b),
            value: np_maximum,
            grad: |a, b, tracked| select(a > b, b > a, tracked),
            domains: [Signed, Signed],
            selects: true,
            commutes: true,
        }),
    },
    Op {
        name: "min",
        rule: Rule::Binary(BinaryRule {
            apply: |a, b| min(a, b),
            var_f64: |a, b| a.min(b),
            f64_var: |a, b| min(a, b),
            value: np_minimum,
            grad: |a, b, tracked| select(a < b, b < a, tracked),
            domains: [Signed, Signed],
            selects: true,
            commutes: true,
        }),
    },
    Op {
        name: "neg",
        rule: Rule::Unary(UnaryRule {
            apply: |a| -a,
            value: |a| -a,
            grad: |_| -1.0,
            domain: Signed,
        }),
    },
    Op {
        name: "exp",
        rule: Rule::Unary(UnaryRule {
            apply: |a| a.exp(),
            value: f64::exp,
            grad: f64::exp,
            domain: Signed,
        }),
    },
    Op {
        name: "ln",
        rule: Rule::Unary(UnaryRule {
            apply: |a| a.ln(),
            value: f64::ln,
            grad: |a| 1.0 / a,
            domain: Positive,
        }),
    },
    Op {
        name: "sum",
        rule: Rule::Tensor(TensorRule {
            apply: |x, _| x[0].sum(),
            value: |x, _| Tensor::scalar(np_sum(x[0].data())),
            vjp: |x, _, up| vec![Tensor::full(x[0].shape(), up.item())],
            form: Form::Reduce,
        }),
    },
    Op {
        name: "mean",
        rule: Rule::Tensor(TensorRule {
            apply: |x, _| x[0].mean(),
            value: |x, _| Tensor::scalar(np_sum(x[0].data()) / x[0].len() as f64),
            vjp: |x, _, up| vec![Tensor::full(x[0].shape(), up.item() / x[0].len() as f64)],
            form: Form::Reduce,
        }),
    },
    Op {
        name: "sum_axis",
        rule: Rule::Tensor(TensorRule {
            apply: |x, arg| x[0].sum_axis(arg.axis()),
            value: |x, arg| sum_axis(&x[0], arg.axis()),
            vjp: |x, arg, up| vec![sum_axis_vjp(&x[0], arg.axis(), up)],
            form: Form::Axis,
        }),
    },
    Op {
        name: "reshape",
        rule: Rule::Tensor(TensorRule {
            apply: |x, arg| x[0].reshape(arg.shape()),
            value: |x, arg| Tensor::new(x[0].data().to_vec(), arg.shape()).unwrap(),
            vjp: |x, _, up| vec![Tensor::new(up.data().to_vec(), x[0].shape()).unwrap()],
            form: Form::Reshape,
        }),
    },
    Op {
        name: "matmul",
        rule: Rule::Tensor(TensorRule {
            apply: |x, _| x[0].matmul(x[1]),
            value: |x, _| matmul(&x[0], &x[1]),
            // d/da = up b^T, d/db = a^T up
            vjp: |x, _, up| vec![matmul(up, &transpose(&x[1])), matmul(&transpose(&x[0]), up)],
            form: Form::MatMul,
        }),
    },
];

/// The row named `name`.
#[track_caller]
pub fn op(name: &str) -> &'static Op {
    OPS.iter()
        .find(|op| op.name == name)
        .unwrap_or_else(|| panic!("the op table has no row {name:?}"))
}

impl Op {
    pub fn is_elementwise(&self) -> bool {
        !matches!(self.rule, Rule::Tensor(_))
    }

    /// The elementwise binary rule, if the op is one.
    pub fn binary(&self) -> Option<&BinaryRule> {
        match &self.rule {
            Rule::Binary(rule) => Some(rule),
            _ => None,
        }
    }

    pub fn arity(&self) -> usize {
        match &self.rule {
            Rule::Unary(_) => 1,
            Rule::Binary(_) => 2,
            Rule::Tensor(rule) if rule.form == Form::MatMul => 2,
            Rule::Tensor(_) => 1,
        }
    }

    /// The op applied to `x` (one var per input).
    pub fn apply<'t>(&self, x: &[Var<'t>], arg: &Arg) -> Var<'t> {
        assert_eq!(x.len(), self.arity(), "{}: number of inputs", self.name);
        match &self.rule {
            Rule::Unary(rule) => (rule.apply)(x[0]),
            Rule::Binary(rule) => (rule.apply)(x[0], x[1]),
            Rule::Tensor(rule) => (rule.apply)(x, arg),
        }
    }

    /// The reference value of the op at `x`.
    pub fn value(&self, x: &[Tensor], arg: &Arg) -> Tensor {
        match &self.rule {
            Rule::Unary(rule) => map(&x[0], rule.value),
            Rule::Binary(rule) => broadcast_zip(&x[0], &x[1], rule.value),
            Rule::Tensor(rule) => (rule.value)(x, arg),
        }
    }

    /// The reference gradient of each input of the op at `x`, for the upstream gradient
    /// `upstream` (which broadcasts to the output), with `tracked` saying which inputs
    /// depend on a var (for the tie rule). A zero upstream element gives exactly 0, and
    /// so does a side a selecting op routes away, whatever the upstream.
    pub fn vjp(
        &self,
        x: &[Tensor],
        arg: &Arg,
        upstream: &Tensor,
        tracked: [bool; 2],
    ) -> Vec<Tensor> {
        let out = self.value(x, arg);
        let up = broadcast_to(upstream, out.shape());
        match &self.rule {
            Rule::Unary(rule) => elementwise_vjp(&x[..1], &up, false, |a, _| [(rule.grad)(a), 0.0]),
            Rule::Binary(rule) => {
                elementwise_vjp(x, &up, rule.selects, |a, b| (rule.grad)(a, b, tracked))
            }
            Rule::Tensor(rule) => (rule.vjp)(x, arg, &up),
        }
    }
}

/// A sum from +0.0 left to right, as numpy starts (Rust's `Iterator::sum` starts from
/// -0.0, so the sum of nothing or of negative zeros would be -0.0).
fn np_sum(x: &[f64]) -> f64 {
    x.iter().fold(0.0, |sum, v| sum + v)
}

/// `np.maximum`: NaN if either is NaN, `b` at a tie (signed zeros included).
fn np_maximum(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a > b {
        a
    } else {
        b
    }
}

/// `np.minimum`: NaN if either is NaN, `b` at a tie (signed zeros included).
fn np_minimum(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a < b {
        a
    } else {
        b
    }
}

/// The tie rule of max and min: the whole gradient to the winner; where neither wins (a
/// tie, or a NaN on either side), to the untracked operand if exactly one is untracked
/// (so nothing flows back), half to each if both are tracked, nowhere if neither is.
pub fn select(a_wins: bool, b_wins: bool, tracked: [bool; 2]) -> [f64; 2] {
    match (a_wins, b_wins, tracked) {
        (true, _, _) => [1.0, 0.0],
        (_, true, _) => [0.0, 1.0],
        (_, _, [true, true]) => [0.5, 0.5],
        (_, _, [true, false]) => [0.0, 1.0],
        (_, _, [false, true]) => [1.0, 0.0],
        (_, _, [false, false]) => [0.0, 0.0],
    }
}

/// The gradients of an elementwise op's inputs: `grad` at every element of the
/// broadcast output times the upstream element there, summed back into each input's
/// shape.
fn elementwise_vjp(
    x: &[Tensor],
    up: &Tensor,
    selects: bool,
    grad: impl Fn(f64, f64) -> [f64; 2],
) -> Vec<Tensor> {
    let out = up.shape();
    let mut grads: Vec<Vec<f64>> = x.iter().map(|t| vec![0.0; t.len()]).collect();
    for (flat, &u) in up.data().iter().enumerate() {
        let index = unravel(flat, out);
        let at: Vec<usize> = x
            .iter()
            .map(|t| broadcast_offset(&index, t.shape()))
            .collect();
        let b = x.get(1).map_or(0.0, |b| b.data()[at[1]]);
        let local = grad(x[0].data()[at[0]], b);
        for k in 0..x.len() {
            if u != 0.0 && !(selects && local[k] == 0.0) {
                grads[k][at[k]] += u * local[k];
            }
        }
    }
    grads
        .into_iter()
        .zip(x)
        .map(|(g, t)| Tensor::new(g, t.shape()).unwrap())
        .collect()
}

/// `np.sum(x, axis)`, one element at a time.
fn sum_axis(x: &Tensor, axis: usize) -> Tensor {
    let mut shape = x.shape().to_vec();
    shape.remove(axis);
    let mut out = vec![0.0; shape.iter().product()];
    for (flat, &v) in x.data().iter().enumerate() {
        let mut index = unravel(flat, x.shape());
        index.remove(axis);
        out[broadcast_offset(&index, &shape)] += v;
    }
    Tensor::new(out, &shape).unwrap()
}

/// The gradient of `sum_axis`: every element gets the upstream of the sum it went into.
fn sum_axis_vjp(x: &Tensor, axis: usize, up: &Tensor) -> Tensor {
    let g = (0..x.len())
        .map(|flat| {
            let mut index = unravel(flat, x.shape());
            index.remove(axis);
            up.data()[broadcast_offset(&index, up.shape())]
        })
        .collect();
    Tensor::new(g, x.shape()).unwrap()
}

/// `[m, k] x [k, n]`, one dot product per element.
fn matmul(a: &Tensor, b: &Tensor) -> Tensor {
    let (m, k, n) = (a.shape()[0], a.shape()[1], b.shape()[1]);
    let out = (0..m * n)
        .map(|at| {
            let (i, j) = (at / n, at % n);
            (0..k)
                .map(|p| a.data()[i * k + p] * b.data()[p * n + j])
                .sum()
        })
        .collect();
    Tensor::new(out, &[m, n]).unwrap()
}

fn transpose(a: &Tensor) -> Tensor {
    let (m, n) = (a.shape()[0], a.shape()[1]);
    let t = (0..m * n)
        .map(|at| a.data()[(at % m) * n + at / m])
        .collect();
    Tensor::new(t, &[n, m]).unwrap()
}

impl Op {
    /// The reference derivative `[d/da, d/db]` of an elementwise op at the numbers `x`
    /// (one or two), given which inputs are tracked (`d/db` is 0 for one input).
    pub fn local_grad(&self, x: &[f64], tracked: [bool; 2]) -> [f64; 2] {
        match &self.rule {
            Rule::Unary(rule) => [(rule.grad)(x[0]), 0.0],
            Rule::Binary(rule) => (rule.grad)(x[0], x[1], tracked),
            Rule::Tensor(_) => panic!("test bug: {} is not elementwise", self.name),
        }
    }
}

impl Op {
    /// An elementwise op's inputs at every special value (every pair for two operands),
    /// with every choice of tracked operands that leaves one tracked.
    pub fn special_inputs(&self) -> Vec<(Vec<f64>, [bool; 2])> {
        match self.arity() {
            1 => SPECIALS.iter().map(|&a| (vec![a], [true, false])).collect(),
            _ => SPECIALS
                .iter()
                .flat_map(|&a| SPECIALS.map(|b| vec![a, b]))
                .flat_map(|x| [[true, true], [true, false], [false, true]].map(|t| (x.clone(), t)))
                .collect(),
        }
    }
}

/// How a test lays out the numbers it gives an elementwise op: the engine's sweep has a
/// path for rank-0 nodes and one for tensors, and both must keep every rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Layout {
    /// `Tensor::scalar(x)`: the scalar path.
    Rank0,
    /// `[x, x, x]`: the tensor path.
    Tensor,
}

pub const LAYOUTS: [Layout; 2] = [Layout::Rank0, Layout::Tensor];

impl Layout {
    /// `x` laid out.
    pub fn leaf(self, x: f64) -> Tensor {
        match self {
            Layout::Rank0 => Tensor::scalar(x),
            Layout::Tensor => Tensor::from(vec![x; 3]),
        }
    }
}

/// The engine's gradient of each input of the elementwise `op` at the numbers `x` laid
/// out as `layout`, for the upstream `u` in every element: `Some` for the inputs
/// `tracked` makes vars, `None` for those it makes constants. In the tensor layout every
/// element must get the same gradient (the test fails otherwise).
pub fn engine_grads(
    op: &Op,
    x: &[f64],
    tracked: [bool; 2],
    layout: Layout,
    u: f64,
) -> [Option<f64>; 2] {
    let tape = tapegrad::Tape::new();
    let inputs: Vec<Var> = x
        .iter()
        .zip(tracked)
        .map(|(&x, tracked)| match tracked {
            true => tape.var(layout.leaf(x)),
            false => tape.constant(layout.leaf(x)),
        })
        .collect();
    let y = op.apply(&inputs, &Arg::None);
    let grads = y.backward_with(layout.leaf(u));
    let mut out = [None, None];
    for (k, &v) in inputs.iter().enumerate() {
        if tracked[k] {
            let g = grads.wrt(v).data();
            assert!(
                g.iter()
                    .all(|e| e.to_bits() == g[0].to_bits() || e.is_nan() && g[0].is_nan()),
                "{}{x:?}: elements of one gradient differ: {g:?}",
                op.name
            );
            out[k] = Some(g[0]);
        }
    }
    out
}
