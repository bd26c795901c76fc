//! Every op of the op table (`tests/common/ops.rs`), checked two ways: its value against
//! the table's reference, and the tape's gradient of a scalar function of it against
//! central finite differences (each evaluation on a fresh tape). The table's own
//! derivative is held to the same finite differences, so the reference that
//! `properties.rs` compares the tape with exactly is right.
//!
//! Each gradient is checked under two losses: plain `.sum()` (a uniform upstream, which
//! the engine keeps as one number) and `(op(..) * w).sum()` with a fixed random `w` (a
//! non-uniform upstream). Inputs come from each op's smooth domain, and max/min operands
//! stay more than 0.1 apart (away from the kink), so finite differences are accurate to
//! ~1e-9.

mod common;

use common::ops::{Arg, BinaryRule, Domain, Form, OPS, Op, Rule, op};
use common::{Rng, assert_close, broadcast_zip, fd_grad, map};
use tapegrad::{Tape, Tensor, Var, max, min};

/// How close a gradient must be to finite differences, relative to `max(1, |fd|)`.
const FD_TOL: f64 = 1e-6;

// ---- helpers -------------------------------------------------------------------------

/// Differentiate the scalar `loss(vars)` on a tape, compare the gradient of every input
/// with finite differences, and return those.
fn check_gradients(
    what: &str,
    inputs: &[Tensor],
    loss: impl for<'t> Fn(&[Var<'t>]) -> Var<'t>,
) -> Vec<Tensor> {
    let tape = Tape::new();
    let vars: Vec<Var> = inputs.iter().map(|x| tape.var(x.clone())).collect();
    let grads = loss(&vars).backward();
    let mut numeric = Vec::new();
    for (k, x) in inputs.iter().enumerate() {
        let fd = fd_grad(
            |xk| {
                let tape = Tape::new();
                let vars: Vec<Var> = inputs
                    .iter()
                    .enumerate()
                    .map(|(j, x)| tape.var(if j == k { xk.clone() } else { x.clone() }))
                    .collect();
                loss(&vars).value().item()
            },
            x,
        );
        let what = format!("{what}: d/d(input {k}), tape vs finite differences");
        assert_close(grads.wrt(vars[k]), &fd, FD_TOL, &what);
        numeric.push(fd);
    }
    numeric
}

/// The reference gradient of every input of an op for an upstream (the op table's).
type Vjp<'a> = &'a dyn Fn(&Tensor) -> Vec<Tensor>;

/// Both losses of the module docs over `out`, which has shape `out_shape`, for the tape;
/// `table`, if given, is the reference gradient of every input for an upstream, held to
/// the same finite differences.
fn check_both_losses(
    what: &str,
    inputs: &[Tensor],
    out_shape: &[usize],
    rng: &mut Rng,
    table: Option<Vjp>,
    op: impl for<'t> Fn(&[Var<'t>]) -> Var<'t>,
) {
    let w = rng.tensor(out_shape, -2.0, 2.0);
    let ones = Tensor::full(out_shape, 1.0);
    let by_sum = check_gradients(&format!("{what}, loss sum"), inputs, |v| op(v).sum());
    let weighted = format!("{what}, loss (out * w).sum");
    let by_weight = check_gradients(&weighted, inputs, |v| {
        (op(v) * v[0].tape().constant(w.clone())).sum()
    });
    let Some(table) = table else { return };
    for (upstream, fd, loss) in [(&ones, by_sum, "sum"), (&w, by_weight, "(out * w).sum")] {
        for (k, (t, fd)) in table(upstream).iter().zip(&fd).enumerate() {
            let what = format!("{what}, loss {loss}: d/d(input {k}), op table vs fd");
            assert_close(t, fd, FD_TOL, &what);
        }
    }
}

/// A tensor of `shape` from `domain`, magnitudes in `[0.5, 2)`.
fn draw(rng: &mut Rng, shape: &[usize], domain: Domain) -> Tensor {
    match domain {
        Domain::Signed => rng.signed(shape, 0.5, 2.0),
        Domain::Positive => rng.tensor(shape, 0.5, 2.0),
    }
}

/// Operands of a binary op of shapes `a` and `b`; for a selecting op (max/min), with
/// every pair the broadcast puts together more than 0.1 apart.
fn operands(rng: &mut Rng, rule: &BinaryRule, a: &[usize], b: &[usize]) -> (Tensor, Tensor) {
    for _ in 0..1000 {
        let (x, y) = (draw(rng, a, rule.domains[0]), draw(rng, b, rule.domains[1]));
        let gaps = broadcast_zip(&x, &y, |p, q| (p - q).abs());
        if !rule.selects || gaps.data().iter().all(|&d| d > 0.1) {
            return (x, y);
        }
    }
    panic!("test bug: no operands 0.1 apart for {a:?} and {b:?}");
}

/// Shape pairs that broadcast, each also tried the other way round.
const BROADCAST_PAIRS: [(&[usize], &[usize]); 5] = [
    (&[3, 4], &[4]),
    (&[3, 1], &[1, 4]),
    (&[], &[2, 3]),
    (&[2, 3, 4], &[3, 1]),
    (&[], &[]),
];

/// The shapes and axes an op along an axis is checked at.
const AXES: [(&[usize], usize); 4] = [(&[2, 3, 4], 0), (&[2, 3, 4], 1), (&[2, 3, 4], 2), (&[5], 0)];

/// `(condition, a, b)` shapes of `select`, broadcast together in various ways.
#[allow(clippy::type_complexity)]
const SELECT_SHAPES: [(&[usize], &[usize], &[usize]); 5] = [
    (&[3, 4], &[3, 4], &[3, 4]),
    (&[3, 1], &[4], &[3, 4]),
    (&[4], &[3, 1], &[]),
    (&[], &[2, 3], &[2, 3]),
    (&[2, 3, 4], &[3, 1], &[4]),
];

/// Whether every two elements of each lane of `x` along `axis` are more than `gap`
/// apart.
fn lanes_apart(x: &Tensor, axis: usize, gap: f64) -> bool {
    let shape = x.shape();
    let (len, inner) = (shape[axis], shape[axis + 1..].iter().product::<usize>());
    x.data().iter().enumerate().all(|(i, &v)| {
        let k = i / inner % len;
        (1..len - k).all(|j| (v - x.data()[i + j * inner]).abs() > gap)
    })
}

/// One set of inputs of an op, and what else it takes.
struct Example {
    inputs: Vec<Tensor>,
    arg: Arg,
}

impl Example {
    fn of(inputs: Vec<Tensor>) -> Example {
        Example {
            inputs,
            arg: Arg::None,
        }
    }
}

/// The inputs each op is checked at: an elementwise op at `[3, 4]` and at rank 0 (a
/// binary one also at every broadcast pair, both ways round); the others at shapes of
/// their form.
fn examples(op: &Op, rng: &mut Rng) -> Vec<Example> {
    match &op.rule {
        Rule::Unary(rule) => [&[3, 4][..], &[]]
            .iter()
            .map(|s| Example::of(vec![draw(rng, s, rule.domain)]))
            .collect(),
        Rule::Param(rule) => rule
            .params
            .iter()
            .flat_map(|&(p, domain)| [&[3, 4][..], &[]].map(|s| (p, domain, s)))
            .map(|(p, domain, s)| Example {
                inputs: vec![draw(rng, s, domain)],
                arg: Arg::Param(p),
            })
            .collect(),
        Rule::Binary(rule) => {
            let mut pairs = vec![(&[3, 4][..], &[3, 4][..])];
            for (s, t) in BROADCAST_PAIRS {
                pairs.extend([(s, t), (t, s)]);
            }
            pairs
                .into_iter()
                .map(|(s, t)| {
                    let (a, b) = operands(rng, rule, s, t);
                    Example::of(vec![a, b])
                })
                .collect()
        }
        Rule::Tensor(rule) => {
            let selects = rule.selects;
            let mut tensor = |shape: &[usize]| rng.tensor(shape, -2.0, 2.0);
            match rule.form {
                // 300 elements: past the 128-element block of the pairwise summation.
                Form::Reduce => [&[2, 3, 4][..], &[300], &[]]
                    .iter()
                    .map(|s| Example::of(vec![tensor(s)]))
                    .collect(),
                Form::Axis | Form::AlongAxis => AXES
                    .iter()
                    .map(|&(s, axis)| {
                        // max_axis/min_axis: lanes whose elements are 0.1 apart or more.
                        let x = (0..1000)
                            .map(|_| tensor(s))
                            .find(|x| !selects || lanes_apart(x, axis, 0.1))
                            .expect("test bug: no lanes 0.1 apart");
                        Example {
                            inputs: vec![x],
                            arg: Arg::Axis(axis),
                        }
                    })
                    .collect(),
                Form::Reshape => [&[4, 6][..], &[24], &[4, 1, 6], &[2, 3, 4]]
                    .iter()
                    .map(|to| Example {
                        inputs: vec![tensor(&[2, 3, 4])],
                        arg: Arg::Shape(to.to_vec()),
                    })
                    .collect(),
                Form::MatMul => [([3, 4], [4, 2]), ([1, 5], [5, 1]), ([4, 1], [1, 3])]
                    .iter()
                    .map(|(a, b)| Example::of(vec![tensor(a), tensor(b)]))
                    .collect(),
                Form::Transpose => [&[2, 3, 4][..], &[3, 4], &[5], &[]]
                    .iter()
                    .map(|s| Example::of(vec![tensor(s)]))
                    .collect(),
                Form::BroadcastTo => [
                    (&[3, 1][..], &[2, 3, 4][..]),
                    (&[], &[2, 3]),
                    (&[4], &[3, 4]),
                    (&[2, 1], &[2, 5]),
                    (&[2, 3], &[2, 3]),
                ]
                .iter()
                .map(|&(s, to)| Example {
                    inputs: vec![tensor(s)],
                    arg: Arg::Shape(to.to_vec()),
                })
                .collect(),
                Form::IndexSelect => [
                    (&[2, 3, 4][..], 1, &[2, 0, 2][..]),
                    (&[2, 3, 4], 0, &[1, 1, 0]),
                    (&[2, 3, 4], 2, &[3, 0, 3, 3]),
                    (&[5], 0, &[4, 4, 0, 2]),
                    (&[2, 3], 1, &[]),
                ]
                .iter()
                .map(|&(s, axis, indices)| Example {
                    inputs: vec![tensor(s)],
                    arg: Arg::Indices {
                        axis,
                        indices: indices.to_vec(),
                    },
                })
                .collect(),
                Form::Select => SELECT_SHAPES
                    .iter()
                    .map(|&(c, a, b)| {
                        // Conditions 0, 1, -2 and NaN (true: NaN != 0), cycled.
                        let n: usize = c.iter().product();
                        let cond = [0.0, 1.0, -2.0, f64::NAN, 0.0];
                        let cond = (0..n).map(|i| cond[i % cond.len()]).collect();
                        Example {
                            inputs: vec![tensor(a), tensor(b)],
                            arg: Arg::Cond(Tensor::new(cond, c).unwrap()),
                        }
                    })
                    .collect(),
            }
        }
    }
}

fn shapes(x: &[Tensor]) -> Vec<&[usize]> {
    x.iter().map(|t| t.shape()).collect()
}

/// The value of `op` at the example equals the table's reference (exactly for an
/// elementwise op: the same IEEE operation; within 1e-13 for a sum of many terms), and
/// the tape's and the table's gradients match finite differences under both losses.
fn check_example(op: &'static Op, ex: &Example, rng: &mut Rng) {
    let what = format!("{} of {:?} {:?}", op.name, shapes(&ex.inputs), ex.arg);
    let tape = Tape::new();
    let vars: Vec<Var> = ex.inputs.iter().map(|x| tape.var(x.clone())).collect();
    let got = op.apply(&vars, &ex.arg).value();
    let want = op.value(&ex.inputs, &ex.arg);
    assert_eq!(got.shape(), want.shape(), "{what}: value shape");
    if op.is_elementwise() {
        assert_eq!(got.data(), want.data(), "{what}: value");
    } else {
        assert_close(&got, &want, 1e-13, &format!("{what}: value"));
    }
    let table = |up: &Tensor| op.vjp(&ex.inputs, &ex.arg, up, [true, true]);
    check_both_losses(&what, &ex.inputs, want.shape(), rng, Some(&table), |v| {
        op.apply(v, &ex.arg)
    });
}

// ---- every op of the table --------------------------------------------------------------

/// The examples of a binary op include every broadcast pair, so this also checks that
/// each gradient is reduced back to its operand's shape (`assert_close` compares shapes).
#[test]
fn every_op_at_every_example_shape_matches_its_reference_value_and_finite_differences() {
    let mut checked = 0;
    for (i, op) in OPS.iter().enumerate() {
        let mut rng = Rng(1000 + i as u64);
        for ex in examples(op, &mut rng) {
            check_example(op, &ex, &mut rng);
            checked += 1;
        }
    }
    assert!(checked >= OPS.len() * 3, "{checked} examples");
}

#[test]
fn every_binary_op_with_an_f64_on_either_side_matches_its_reference_and_finite_differences() {
    for (i, op) in OPS.iter().enumerate() {
        let Some(rule) = op.binary() else { continue };
        // ±0.3 is away from the operands' magnitudes [0.5, 2): no kink, no pole.
        for c in [0.3, -0.3] {
            let mut rng = Rng(2000 + i as u64);
            let c_tensor = Tensor::scalar(c);
            for var_first in [true, false] {
                let x = draw(&mut rng, &[3, 4], rule.domains[usize::from(!var_first)]);
                let (inputs, tracked, k) = match var_first {
                    true => ([x.clone(), c_tensor.clone()], [true, false], 0),
                    false => ([c_tensor.clone(), x.clone()], [false, true], 1),
                };
                let what = match var_first {
                    true => format!("{}(x, {c})", op.name),
                    false => format!("{}({c}, x)", op.name),
                };
                let want = op.value(&inputs, &Arg::None);
                let tape = Tape::new();
                let v = tape.var(x.clone());
                let got = match var_first {
                    true => (rule.var_f64)(v, c),
                    false => (rule.f64_var)(c, v),
                };
                assert_eq!(got.value().data(), want.data(), "{what}: value");
                let table = |up: &Tensor| vec![op.vjp(&inputs, &Arg::None, up, tracked)[k].clone()];
                check_both_losses(
                    &what,
                    std::slice::from_ref(&x),
                    &[3, 4],
                    &mut rng,
                    Some(&table),
                    |v| match var_first {
                        true => (rule.var_f64)(v[0], c),
                        false => (rule.f64_var)(c, v[0]),
                    },
                );
            }
        }
    }
}

#[test]
fn max_and_min_examples_route_the_gradient_to_both_operands() {
    // Guards the tests above: the random inputs of a selecting op exercise both sides.
    for (i, op) in OPS.iter().enumerate() {
        let Some(rule) = op.binary().filter(|r| r.selects) else {
            continue;
        };
        let ex = examples(op, &mut Rng(1000 + i as u64)).remove(0);
        let wins = (0..12)
            .filter(|&j| {
                (rule.grad)(ex.inputs[0].data()[j], ex.inputs[1].data()[j], [true; 2])[0] == 1.0
            })
            .count();
        assert!(0 < wins && wins < 12, "{}: a wins {wins} of 12", op.name);
    }
}

#[test]
fn max_and_min_methods_equal_the_free_functions() {
    // At random operands and at ties: the same values and gradients, bit for bit.
    let (a, b) = operands(&mut Rng(7), op("max").binary().unwrap(), &[3, 4], &[3, 4]);
    let ties = Tensor::from(vec![1.0, -0.0, 0.0, f64::NAN]);
    let ties_b = Tensor::from(vec![1.0, 0.0, -0.0, 2.0]);
    let pairs = [(a, b), (ties, ties_b)];
    type Form = for<'t> fn(Var<'t>, Var<'t>) -> Var<'t>;
    let forms: [(Form, Form); 2] = [
        (|a, b| a.max(b), |a, b| max(a, b)),
        (|a, b| a.min(b), |a, b| min(a, b)),
    ];
    for (x, y) in &pairs {
        for (method, free) in forms {
            let run = |f: Form| {
                let tape = Tape::new();
                let (va, vb) = (tape.var(x.clone()), tape.var(y.clone()));
                let out = f(va, vb);
                let g = out.sum().backward();
                let bits = |t: &Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                (bits(&out.value()), bits(g.wrt(va)), bits(g.wrt(vb)))
            };
            assert_eq!(run(method), run(free), "{x:?}, {y:?}");
        }
    }
}

// ---- compositions: a broadcast whose upstream gradient is itself reduced ------------

#[test]
fn broadcast_add_followed_by_sum_axis_has_the_right_gradient() {
    // The upstream reaching `add` is [1, 4] (sum_axis puts the axis back as a 1), so the
    // [1, 4] operand's gradient must still be multiplied by the 3 rows it was added to.
    let mut rng = Rng(51);
    let (a, b) = (
        rng.tensor(&[1, 4], -2.0, 2.0),
        rng.tensor(&[3, 4], -2.0, 2.0),
    );
    check_both_losses(
        "(a[1,4] + b[3,4]).sum_axis(0)",
        &[a, b],
        &[4],
        &mut rng,
        None,
        |v| (v[0] + v[1]).sum_axis(0),
    );
}

#[test]
fn scalar_plus_matrix_followed_by_sum_axis_has_the_right_gradient() {
    let mut rng = Rng(52);
    let (a, b) = (rng.tensor(&[], -2.0, 2.0), rng.tensor(&[3, 4], -2.0, 2.0));
    check_both_losses(
        "(a[] + b[3,4]).sum_axis(0)",
        &[a, b],
        &[4],
        &mut rng,
        None,
        |v| (v[0] + v[1]).sum_axis(0),
    );
}

#[test]
fn broadcast_mul_followed_by_sum_axis_has_the_right_gradient() {
    let mut rng = Rng(53);
    let (a, b) = (
        rng.tensor(&[3, 1], -2.0, 2.0),
        rng.tensor(&[1, 4], -2.0, 2.0),
    );
    check_both_losses(
        "(a[3,1] * b[1,4]).sum_axis(1)",
        &[a, b],
        &[3],
        &mut rng,
        None,
        |v| (v[0] * v[1]).sum_axis(1),
    );
}

#[test]
fn a_var_used_twice_accumulates_both_gradients() {
    let mut rng = Rng(54);
    let (x, y) = (rng.tensor(&[3, 4], 0.5, 2.0), rng.tensor(&[4], -2.0, 2.0));
    check_both_losses(
        "x * x.exp() + x / y - x.ln()",
        &[x, y],
        &[3, 4],
        &mut rng,
        None,
        |v| v[0] * v[0].exp() + v[0] / v[1] - v[0].ln(),
    );
}

// ---- the helpers the tests above rely on --------------------------------------------------

#[test]
fn fd_grad_recovers_a_known_gradient() {
    // f(x) = sum(x^3) has gradient 3 x^2, also for a large x, where the step grows with
    // |x|.
    let cube = |t: &Tensor| t.data().iter().map(|v| v * v * v).sum::<f64>();
    for x in [
        Tensor::from(vec![-1.5, 0.25, 2.0, 3.0]),
        Tensor::from(vec![1e3]),
    ] {
        let numeric = fd_grad(cube, &x);
        assert_close(
            &numeric,
            &map(&x, |v| 3.0 * v * v),
            FD_TOL,
            "fd of sum(x^3)",
        );
    }
}

#[test]
fn assert_close_rejects_a_gradient_off_by_1e_3() {
    let x = Tensor::from(vec![-1.5, 0.25, 2.0]);
    let off = map(&x, |v| v + 1e-3);
    let message = common::panic_message(|| assert_close(&x, &off, FD_TOL, "off by 1e-3"));
    assert!(message.contains("off by 1e-3: element 0"), "{message}");
}

#[test]
fn rng_is_splitmix64() {
    // The first outputs of splitmix64 from seed 0, as published with the algorithm.
    let mut rng = Rng(0);
    assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
    assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    let u = common::uniform(7, 1000, -2.0, 3.0);
    assert!(u.iter().all(|x| (-2.0..3.0).contains(x)));
    assert_eq!(u, common::uniform(7, 1000, -2.0, 3.0));
}
