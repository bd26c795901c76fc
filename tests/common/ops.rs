//! The op table: one row per op of the engine, with its name, how to apply it to vars,
//! its reference value and its derivative. It feeds the special-value tests, the
//! semantics tests, the property tests and the finite-difference tests, so adding an op
//! is adding a row to [`OPS`]. `semantics.rs` fails if an op of the engine has no row.
//!
//! An elementwise row gives its value and derivative per element, in plain f64
//! arithmetic (an op with a number besides its input, `powf(p)`, also takes `p`, and
//! names the `p`s the tests use); every other row gives them on whole tensors (the
//! derivative as the gradient of each input for a given upstream gradient), written with
//! explicit indices rather than the engine's strided loops, and says by its [`Form`]
//! which inputs and [`Arg`] it takes, so every consumer can draw examples of it.

use super::shapes::{broadcast_offset, broadcast_shape, broadcast_to, broadcast_zip, map, unravel};
use super::{SPECIALS, UNARY_SPECIALS};
use tapegrad::{Tensor, Var, max, min};

pub type Unary = for<'t> fn(Var<'t>) -> Var<'t>;
pub type WithParam = for<'t> fn(Var<'t>, f64) -> Var<'t>;
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
    Param(ParamRule),
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

/// An elementwise op of one input and a number `p` ([`Arg::Param`]): `powf(p)`.
pub struct ParamRule {
    pub apply: WithParam,
    /// The value at `(x, p)`.
    pub value: fn(f64, f64) -> f64,
    /// d op(x; p) / dx at `(x, p)`.
    pub grad: fn(f64, f64) -> f64,
    /// The `p`s the tests use, each with the domain where `x -> op(x; p)` is smooth.
    pub params: &'static [(f64, Domain)],
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
    /// max_axis/min_axis: the gradient selects the extreme of each lane along the axis.
    /// It has a kink where two elements of a lane tie (gradient tests keep them apart;
    /// the tie tests seek them out).
    pub selects: bool,
}

/// The inputs an op on tensors takes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Form {
    /// One tensor of any shape, reduced to one number.
    Reduce,
    /// One tensor and an axis below its rank ([`Arg::Axis`]), which the op drops.
    Axis,
    /// One tensor and an axis below its rank ([`Arg::Axis`]); the output has the input's
    /// shape (softmax, log_softmax: a normalization of each lane).
    AlongAxis,
    /// One tensor and a shape of as many elements ([`Arg::Shape`]).
    Reshape,
    /// One tensor of any shape, its axes reversed.
    Transpose,
    /// One tensor and a shape it broadcasts to ([`Arg::Shape`]).
    BroadcastTo,
    /// One tensor, an axis and indices below its length ([`Arg::Indices`]).
    IndexSelect,
    /// Two matrices `[m, k]` and `[k, n]`.
    MatMul,
    /// Two operands and a condition ([`Arg::Cond`]), all three broadcast together.
    Select,
}

impl Form {
    /// Whether the op takes an axis below the input's rank (`Arg::Axis` or
    /// `Arg::Indices`).
    pub fn takes_axis(self) -> bool {
        matches!(self, Form::Axis | Form::AlongAxis | Form::IndexSelect)
    }
}

/// What an op takes besides its inputs.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    None,
    Axis(usize),
    Shape(Vec<usize>),
    /// The number of a [`ParamRule`] op (`p` of `powf(p)`).
    Param(f64),
    /// `index_select(axis, &indices)`.
    Indices {
        axis: usize,
        indices: Vec<usize>,
    },
    /// The condition of `select(&cond, a, b)`.
    Cond(Tensor),
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

    pub fn param(&self) -> f64 {
        match self {
            Arg::Param(p) => *p,
            other => panic!("test bug: {other:?} is not a parameter"),
        }
    }

    pub fn indices(&self) -> (usize, &[usize]) {
        match self {
            Arg::Indices { axis, indices } => (*axis, indices),
            other => panic!("test bug: {other:?} is not an axis and indices"),
        }
    }

    pub fn cond(&self) -> &Tensor {
        match self {
            Arg::Cond(cond) => cond,
            other => panic!("test bug: {other:?} is not a condition"),
        }
    }
}

/// Where an elementwise op is smooth, and finite differences are accurate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Domain {
    /// `±[0.5, 3)`: away from 0 (poles of `/` and `x^-1`, kinks of `abs` and `relu`)
    /// and small enough for `exp`.
    Signed,
    /// `[0.5, 3)`, for `ln`, `sqrt`, `log1p` and `x^2.5`.
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
        name: "abs",
        rule: Rule::Unary(UnaryRule {
            apply: |a| a.abs(),
            value: f64::abs,
            grad: np_sign,
            domain: Signed,
        }),
    },
    Op {
        name: "sqrt",
        rule: Rule::Unary(UnaryRule {
            apply: |a| a.sqrt(),
            value: f64::sqrt,
            grad: |a| 1.0 / (2.0 * a.sqrt()),
            domain: Positive,
        }),
    },
    Op {
        name: "powf",
        rule: Rule::Param(ParamRule {
            apply: |a, p| a.powf(p),
            value: f64::powf,
            // x^0 is the constant 1: its derivative is 0 everywhere, also at x = 0.
            grad: |a, p| if p == 0.0 { 0.0 } else { p * a.powf(p - 1.0) },
            params: &[
                (0.0, Signed),
                (1.0, Signed),
                (2.0, Signed),
                (3.0, Signed),
                (0.5, Positive),
                (-1.0, Signed),
                (-2.0, Signed),
                (2.5, Positive),
            ],
        }),
    },
    Op {
        name: "tanh",
        rule: Rule::Unary(UnaryRule {
            apply: |a| a.tanh(),
            value: f64::tanh,
            grad: |a| 1.0 - a.tanh() * a.tanh(),
            domain: Signed,
        }),
    },
    Op {
        name: "sigmoid",
        rule: Rule::Unary(UnaryRule {
            apply: |a| a.sigmoid(),
            value: sigmoid,
            grad: |a| sigmoid(a) * (1.0 - sigmoid(a)),
            domain: Signed,
        }),
    },
    Op {
        name: "relu",
        rule: Rule::Unary(UnaryRule {
            apply: |a| a.relu(),
            value: |a| np_maximum(a, 0.0),
            // As `x.max(0.0)`: 1 where x > 0, 0 elsewhere (at 0 and NaN: the constant).
            grad: |a| if a > 0.0 { 1.0 } else { 0.0 },
            domain: Signed,
        }),
    },
    Op {
        name: "log1p",
        rule: Rule::Unary(UnaryRule {
            apply: |a| a.log1p(),
            value: f64::ln_1p,
            grad: |a| 1.0 / (1.0 + a),
            domain: Positive,
        }),
    },
    Op {
        name: "softplus",
        rule: Rule::Unary(UnaryRule {
            apply: |a| a.softplus(),
            value: |a| np_logaddexp(0.0, a),
            grad: sigmoid,
            domain: Signed,
        }),
    },
    Op {
        name: "sin",
        rule: Rule::Unary(UnaryRule {
            apply: |a| a.sin(),
            value: f64::sin,
            grad: f64::cos,
            domain: Signed,
        }),
    },
    Op {
        name: "cos",
        rule: Rule::Unary(UnaryRule {
            apply: |a| a.cos(),
            value: f64::cos,
            grad: |a| -a.sin(),
            domain: Signed,
        }),
    },
    Op {
        name: "sum",
        rule: Rule::Tensor(TensorRule {
            apply: |x, _| x[0].sum(),
            value: |x, _| Tensor::scalar(np_sum(x[0].data())),
            vjp: |x, _, up| vec![Tensor::full(x[0].shape(), up.item())],
            form: Form::Reduce,
            selects: false,
        }),
    },
    Op {
        name: "mean",
        rule: Rule::Tensor(TensorRule {
            apply: |x, _| x[0].mean(),
            value: |x, _| Tensor::scalar(np_sum(x[0].data()) / x[0].len() as f64),
            vjp: |x, _, up| vec![Tensor::full(x[0].shape(), up.item() / x[0].len() as f64)],
            form: Form::Reduce,
            selects: false,
        }),
    },
    Op {
        name: "sum_axis",
        rule: Rule::Tensor(TensorRule {
            apply: |x, arg| x[0].sum_axis(arg.axis()),
            value: |x, arg| sum_axis(&x[0], arg.axis()),
            vjp: |x, arg, up| vec![sum_axis_vjp(&x[0], arg.axis(), up)],
            form: Form::Axis,
            selects: false,
        }),
    },
    Op {
        name: "reshape",
        rule: Rule::Tensor(TensorRule {
            apply: |x, arg| x[0].reshape(arg.shape()),
            value: |x, arg| Tensor::new(x[0].data().to_vec(), arg.shape()).unwrap(),
            vjp: |x, _, up| vec![Tensor::new(up.data().to_vec(), x[0].shape()).unwrap()],
            form: Form::Reshape,
            selects: false,
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
            selects: false,
        }),
    },
    Op {
        name: "max_axis",
        rule: Rule::Tensor(TensorRule {
            apply: |x, arg| x[0].max_axis(arg.axis()),
            value: |x, arg| reduce_lanes(&x[0], arg.axis(), |lane| extreme(lane, np_maximum)),
            vjp: |x, arg, up| {
                vec![reduce_vjp(&x[0], arg.axis(), up, |lane| {
                    shares(lane, extreme(lane, np_maximum))
                })]
            },
            form: Form::Axis,
            selects: true,
        }),
    },
    Op {
        name: "min_axis",
        rule: Rule::Tensor(TensorRule {
            apply: |x, arg| x[0].min_axis(arg.axis()),
            value: |x, arg| reduce_lanes(&x[0], arg.axis(), |lane| extreme(lane, np_minimum)),
            vjp: |x, arg, up| {
                vec![reduce_vjp(&x[0], arg.axis(), up, |lane| {
                    shares(lane, extreme(lane, np_minimum))
                })]
            },
            form: Form::Axis,
            selects: true,
        }),
    },
    Op {
        name: "logsumexp_axis",
        rule: Rule::Tensor(TensorRule {
            apply: |x, arg| x[0].logsumexp_axis(arg.axis()),
            value: |x, arg| reduce_lanes(&x[0], arg.axis(), logsumexp),
            // d lse / d x_k = softmax_k
            vjp: |x, arg, up| vec![reduce_vjp(&x[0], arg.axis(), up, softmax)],
            form: Form::Axis,
            selects: false,
        }),
    },
    Op {
        name: "softmax",
        rule: Rule::Tensor(TensorRule {
            apply: |x, arg| x[0].softmax(arg.axis()),
            value: |x, arg| map_lanes(&x[0], arg.axis(), softmax),
            // g_k = s_k (u_k - sum_j u_j s_j)
            vjp: |x, arg, up| {
                vec![lane_vjp(&x[0], arg.axis(), up, |lane, u| {
                    let s = softmax(lane);
                    let dot: f64 = s.iter().zip(u).map(|(s, u)| s * u).sum();
                    s.iter().zip(u).map(|(s, u)| s * (u - dot)).collect()
                })]
            },
            form: Form::AlongAxis,
            selects: false,
        }),
    },
    Op {
        name: "log_softmax",
        rule: Rule::Tensor(TensorRule {
            apply: |x, arg| x[0].log_softmax(arg.axis()),
            value: |x, arg| {
                map_lanes(&x[0], arg.axis(), |lane| {
                    let lse = logsumexp(lane);
                    lane.iter().map(|v| v - lse).collect()
                })
            },
            // g_k = u_k - softmax_k sum_j u_j
            vjp: |x, arg, up| {
                vec![lane_vjp(&x[0], arg.axis(), up, |lane, u| {
                    let total: f64 = u.iter().sum();
                    let s = softmax(lane);
                    u.iter().zip(s).map(|(u, s)| u - s * total).collect()
                })]
            },
            form: Form::AlongAxis,
            selects: false,
        }),
    },
    Op {
        name: "transpose",
        rule: Rule::Tensor(TensorRule {
            apply: |x, _| x[0].transpose(),
            value: |x, _| transpose(&x[0]),
            vjp: |_, _, up| vec![transpose(up)],
            form: Form::Transpose,
            selects: false,
        }),
    },
    Op {
        name: "broadcast_to",
        rule: Rule::Tensor(TensorRule {
            apply: |x, arg| x[0].broadcast_to(arg.shape()),
            value: |x, arg| broadcast_to(&x[0], arg.shape()),
            vjp: |x, _, up| vec![sum_back(up, x[0].shape())],
            form: Form::BroadcastTo,
            selects: false,
        }),
    },
    Op {
        name: "index_select",
        rule: Rule::Tensor(TensorRule {
            apply: |x, arg| {
                let (axis, indices) = arg.indices();
                x[0].index_select(axis, indices)
            },
            value: |x, arg| index_select(&x[0], arg),
            vjp: |x, arg, up| vec![index_select_vjp(&x[0], arg, up)],
            form: Form::IndexSelect,
            selects: false,
        }),
    },
    Op {
        name: "select",
        rule: Rule::Tensor(TensorRule {
            apply: |x, arg| tapegrad::select(arg.cond(), x[0], x[1]),
            value: |x, arg| np_where(arg.cond(), &x[0], &x[1]),
            vjp: |x, arg, up| select_vjp(arg.cond(), x, up),
            form: Form::Select,
            selects: false,
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

    /// The rule of an op on tensors, if the op is one.
    pub fn tensor(&self) -> Option<&TensorRule> {
        match &self.rule {
            Rule::Tensor(rule) => Some(rule),
            _ => None,
        }
    }

    /// The form of an op on tensors (`None` for an elementwise op).
    pub fn form(&self) -> Option<Form> {
        self.tensor().map(|rule| rule.form)
    }

    pub fn arity(&self) -> usize {
        match &self.rule {
            Rule::Unary(_) | Rule::Param(_) => 1,
            Rule::Binary(_) => 2,
            Rule::Tensor(rule) if matches!(rule.form, Form::MatMul | Form::Select) => 2,
            Rule::Tensor(_) => 1,
        }
    }

    /// The args an elementwise op is tested with: [`Arg::None`], or each `p` of a
    /// [`ParamRule`].
    pub fn elementwise_args(&self) -> Vec<Arg> {
        match &self.rule {
            Rule::Unary(_) | Rule::Binary(_) => vec![Arg::None],
            Rule::Param(rule) => rule.params.iter().map(|&(p, _)| Arg::Param(p)).collect(),
            Rule::Tensor(_) => panic!("test bug: {} is not elementwise", self.name),
        }
    }

    /// The arg of an op that takes an axis ([`Form::takes_axis`]) with `axis` (and index
    /// 0 for `index_select`).
    pub fn arg_with_axis(&self, axis: usize) -> Arg {
        match self.form() {
            Some(Form::Axis | Form::AlongAxis) => Arg::Axis(axis),
            Some(Form::IndexSelect) => Arg::Indices {
                axis,
                indices: vec![0],
            },
            _ => panic!("test bug: {} takes no axis", self.name),
        }
    }

    /// Where an elementwise op of one input is smooth, for `arg`.
    pub fn domain(&self, arg: &Arg) -> Domain {
        match &self.rule {
            Rule::Unary(rule) => rule.domain,
            Rule::Param(rule) => {
                let p = arg.param();
                let found = rule.params.iter().find(|&&(q, _)| q == p);
                found
                    .unwrap_or_else(|| panic!("test bug: {} has no p = {p}", self.name))
                    .1
            }
            _ => panic!(
                "test bug: {} is not an elementwise op of one input",
                self.name
            ),
        }
    }

    /// The op applied to `x` (one var per input).
    pub fn apply<'t>(&self, x: &[Var<'t>], arg: &Arg) -> Var<'t> {
        assert_eq!(x.len(), self.arity(), "{}: number of inputs", self.name);
        match &self.rule {
            Rule::Unary(rule) => (rule.apply)(x[0]),
            Rule::Param(rule) => (rule.apply)(x[0], arg.param()),
            Rule::Binary(rule) => (rule.apply)(x[0], x[1]),
            Rule::Tensor(rule) => (rule.apply)(x, arg),
        }
    }

    /// The reference value of the op at `x`.
    pub fn value(&self, x: &[Tensor], arg: &Arg) -> Tensor {
        match &self.rule {
            Rule::Unary(rule) => map(&x[0], rule.value),
            Rule::Param(rule) => map(&x[0], |a| (rule.value)(a, arg.param())),
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
            Rule::Param(rule) => {
                let p = arg.param();
                elementwise_vjp(&x[..1], &up, false, |a, _| [(rule.grad)(a, p), 0.0])
            }
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

/// The axes of `x` reversed (numpy's `.T`): element `[i0, .., ik]` of the result is
/// `[ik, .., i0]` of `x`.
fn transpose(x: &Tensor) -> Tensor {
    let shape: Vec<usize> = x.shape().iter().rev().copied().collect();
    let out = (0..x.len())
        .map(|flat| {
            let index: Vec<usize> = unravel(flat, &shape).into_iter().rev().collect();
            x.data()[broadcast_offset(&index, x.shape())]
        })
        .collect();
    Tensor::new(out, &shape).unwrap()
}

/// `np.sign`: -1, 0 or 1, NaN at NaN.
fn np_sign(a: f64) -> f64 {
    if a > 0.0 {
        1.0
    } else if a < 0.0 {
        -1.0
    } else if a == 0.0 {
        0.0
    } else {
        f64::NAN
    }
}

/// The logistic sigmoid `1 / (1 + e^-x)`, as `e^x / (1 + e^x)` for negative `x` so that
/// neither form overflows.
fn sigmoid(a: f64) -> f64 {
    if a >= 0.0 {
        1.0 / (1.0 + (-a).exp())
    } else {
        a.exp() / (1.0 + a.exp())
    }
}

/// numpy's `npy_logaddexp(x, y)`, `ln(e^x + e^y)`, as numpy writes it.
fn np_logaddexp(x: f64, y: f64) -> f64 {
    if x == y {
        // Handles infinities of the same sign.
        x + std::f64::consts::LN_2
    } else {
        let d = x - y;
        if d > 0.0 {
            x + (-d).exp().ln_1p()
        } else if d <= 0.0 {
            y + d.exp().ln_1p()
        } else {
            d // NaN
        }
    }
}

/// The flat index of every element of every lane of `shape` along `axis`: one lane per
/// element of the shape without the axis, in that shape's row-major order.
fn lanes(shape: &[usize], axis: usize) -> Vec<Vec<usize>> {
    let mut outer = shape.to_vec();
    outer.remove(axis);
    (0..outer.iter().product())
        .map(|o| {
            let mut index = unravel(o, &outer);
            index.insert(axis, 0);
            (0..shape[axis])
                .map(|k| {
                    index[axis] = k;
                    broadcast_offset(&index, shape)
                })
                .collect()
        })
        .collect()
}

/// The values of `x` at `flat` indices.
fn gather(x: &Tensor, flat: &[usize]) -> Vec<f64> {
    flat.iter().map(|&at| x.data()[at]).collect()
}

/// `f` of every lane of `x` along `axis`: the axis dropped.
fn reduce_lanes(x: &Tensor, axis: usize, f: impl Fn(&[f64]) -> f64) -> Tensor {
    let mut shape = x.shape().to_vec();
    shape.remove(axis);
    let out = lanes(x.shape(), axis)
        .iter()
        .map(|lane| f(&gather(x, lane)))
        .collect();
    Tensor::new(out, &shape).unwrap()
}

/// The gradient of a reduction along `axis` whose derivative with respect to each
/// element of a lane is `local(lane)`: that times the lane's upstream element.
fn reduce_vjp(x: &Tensor, axis: usize, up: &Tensor, local: impl Fn(&[f64]) -> Vec<f64>) -> Tensor {
    let mut g = vec![0.0; x.len()];
    for (o, lane) in lanes(x.shape(), axis).iter().enumerate() {
        for (&at, d) in lane.iter().zip(local(&gather(x, lane))) {
            g[at] = up.data()[o] * d;
        }
    }
    Tensor::new(g, x.shape()).unwrap()
}

/// `f` of every lane of `x` along `axis`, written back in place: the shape kept.
fn map_lanes(x: &Tensor, axis: usize, f: impl Fn(&[f64]) -> Vec<f64>) -> Tensor {
    let mut out = vec![0.0; x.len()];
    for lane in lanes(x.shape(), axis) {
        for (&at, v) in lane.iter().zip(f(&gather(x, &lane))) {
            out[at] = v;
        }
    }
    Tensor::new(out, x.shape()).unwrap()
}

/// The gradient of a lane-wise map, `g(lane of x, lane of upstream)` per lane.
fn lane_vjp(
    x: &Tensor,
    axis: usize,
    up: &Tensor,
    g: impl Fn(&[f64], &[f64]) -> Vec<f64>,
) -> Tensor {
    let mut out = vec![0.0; x.len()];
    for lane in lanes(x.shape(), axis) {
        for (&at, v) in lane.iter().zip(g(&gather(x, &lane), &gather(up, &lane))) {
            out[at] = v;
        }
    }
    Tensor::new(out, x.shape()).unwrap()
}

/// `np.max` (`pick` = [`np_maximum`]) or `np.min` of a lane: NaN if it holds one, and at
/// a tie the later element, as numpy's reduction returns (`np.max([0.0, -0.0])` is
/// `-0.0`).
fn extreme(lane: &[f64], pick: fn(f64, f64) -> f64) -> f64 {
    lane[1..].iter().fold(lane[0], |best, &v| pick(best, v))
}

/// The share of each element of a lane in the gradient of its extreme `best`: split
/// evenly among the elements equal to it (the NaNs where it is NaN), 0 elsewhere.
fn shares(lane: &[f64], best: f64) -> Vec<f64> {
    let hit = |v: f64| v == best || v.is_nan() && best.is_nan();
    let ties = lane.iter().filter(|&&v| hit(v)).count() as f64;
    lane.iter()
        .map(|&v| if hit(v) { 1.0 / ties } else { 0.0 })
        .collect()
}

/// `ln(sum(exp(lane)))` with the lane's maximum taken out first
/// (`scipy.special.logsumexp`): the maximum itself where it is ±inf or NaN.
fn logsumexp(lane: &[f64]) -> f64 {
    let m = lane
        .iter()
        .fold(f64::NEG_INFINITY, |m, &v| np_maximum(m, v));
    if !m.is_finite() {
        return m;
    }
    m + lane.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
}

/// `exp(lane - logsumexp(lane))`.
fn softmax(lane: &[f64]) -> Vec<f64> {
    let lse = logsumexp(lane);
    lane.iter().map(|v| (v - lse).exp()).collect()
}

/// The sum of `up` over the dims that broadcasting `shape` to `up`'s shape repeated.
fn sum_back(up: &Tensor, shape: &[usize]) -> Tensor {
    let mut g = vec![0.0; shape.iter().product()];
    for (flat, &u) in up.data().iter().enumerate() {
        g[broadcast_offset(&unravel(flat, up.shape()), shape)] += u;
    }
    Tensor::new(g, shape).unwrap()
}

/// The shape of `index_select(axis, indices)` of `shape`, and for each of its elements
/// the flat index of the element of the input it copies.
fn index_select_sources(shape: &[usize], arg: &Arg) -> (Vec<usize>, Vec<usize>) {
    let (axis, indices) = arg.indices();
    let mut out = shape.to_vec();
    out[axis] = indices.len();
    let sources = (0..out.iter().product())
        .map(|flat| {
            let mut index = unravel(flat, &out);
            index[axis] = indices[index[axis]];
            broadcast_offset(&index, shape)
        })
        .collect();
    (out, sources)
}

/// `np.take(x, indices, axis)`.
fn index_select(x: &Tensor, arg: &Arg) -> Tensor {
    let (shape, sources) = index_select_sources(x.shape(), arg);
    Tensor::new(gather(x, &sources), &shape).unwrap()
}

/// Each upstream element added to the element it was copied from (repeats add up).
fn index_select_vjp(x: &Tensor, arg: &Arg, up: &Tensor) -> Tensor {
    let (_, sources) = index_select_sources(x.shape(), arg);
    let mut g = vec![0.0; x.len()];
    for (&at, &u) in sources.iter().zip(up.data()) {
        g[at] += u;
    }
    Tensor::new(g, x.shape()).unwrap()
}

/// The broadcast shape of `cond`, `a` and `b`, and for each of its elements the flat
/// positions in the three.
fn where_positions(cond: &Tensor, a: &Tensor, b: &Tensor) -> (Vec<usize>, Vec<[usize; 3]>) {
    let shape = broadcast_shape(cond.shape(), &broadcast_shape(a.shape(), b.shape()));
    let positions = (0..shape.iter().product())
        .map(|flat| {
            let index = unravel(flat, &shape);
            [cond, a, b].map(|t| broadcast_offset(&index, t.shape()))
        })
        .collect();
    (shape, positions)
}

/// `np.where(cond != 0, a, b)` (a NaN condition is true: NaN != 0).
fn np_where(cond: &Tensor, a: &Tensor, b: &Tensor) -> Tensor {
    let (shape, positions) = where_positions(cond, a, b);
    let out = positions
        .iter()
        .map(|&[c, i, j]| {
            if cond.data()[c] != 0.0 {
                a.data()[i]
            } else {
                b.data()[j]
            }
        })
        .collect();
    Tensor::new(out, &shape).unwrap()
}

/// The upstream routed to `a` where the condition holds and to `b` elsewhere, summed
/// back to each operand's shape.
fn select_vjp(cond: &Tensor, x: &[Tensor], up: &Tensor) -> Vec<Tensor> {
    let (_, positions) = where_positions(cond, &x[0], &x[1]);
    let (mut ga, mut gb) = (vec![0.0; x[0].len()], vec![0.0; x[1].len()]);
    for (&[c, i, j], &u) in positions.iter().zip(up.data()) {
        if cond.data()[c] != 0.0 {
            ga[i] += u;
        } else {
            gb[j] += u;
        }
    }
    vec![
        Tensor::new(ga, x[0].shape()).unwrap(),
        Tensor::new(gb, x[1].shape()).unwrap(),
    ]
}

impl Op {
    /// The reference derivative `[d/da, d/db]` of an elementwise op at the numbers `x`
    /// (one or two) with `arg`, given which inputs are tracked (`d/db` is 0 for one
    /// input).
    pub fn local_grad(&self, x: &[f64], arg: &Arg, tracked: [bool; 2]) -> [f64; 2] {
        match &self.rule {
            Rule::Unary(rule) => [(rule.grad)(x[0]), 0.0],
            Rule::Param(rule) => [(rule.grad)(x[0], arg.param()), 0.0],
            Rule::Binary(rule) => (rule.grad)(x[0], x[1], tracked),
            Rule::Tensor(_) => panic!("test bug: {} is not elementwise", self.name),
        }
    }
}

/// An elementwise op's inputs at special values, the arg and the tracked operands.
#[derive(Clone, Debug)]
pub struct Special {
    pub x: Vec<f64>,
    pub arg: Arg,
    pub tracked: [bool; 2],
}

impl Op {
    /// An elementwise op's inputs at every special value (every pair of [`SPECIALS`]
    /// for two operands, every one of [`UNARY_SPECIALS`] for one), with each of its
    /// args, and every choice of tracked operands that leaves one tracked.
    pub fn special_inputs(&self) -> Vec<Special> {
        let mut out = Vec::new();
        for arg in self.elementwise_args() {
            let at = |x: Vec<f64>, tracked| Special {
                x,
                arg: arg.clone(),
                tracked,
            };
            match self.arity() {
                1 => out.extend(UNARY_SPECIALS.iter().map(|&a| at(vec![a], [true, false]))),
                _ => {
                    for a in SPECIALS {
                        for b in SPECIALS {
                            for t in [[true, true], [true, false], [false, true]] {
                                out.push(at(vec![a, b], t));
                            }
                        }
                    }
                }
            }
        }
        out
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

/// The engine's gradient of each input of the elementwise `op` (with `arg`) at the
/// numbers `x` laid out as `layout`, for the upstream `u` in every element: `Some` for the inputs
/// `tracked` makes vars, `None` for those it makes constants. In the tensor layout every
/// element must get the same gradient (the test fails otherwise).
pub fn engine_grads(
    op: &Op,
    x: &[f64],
    arg: &Arg,
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
    let y = op.apply(&inputs, arg);
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
