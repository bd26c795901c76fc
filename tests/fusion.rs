//! Fusion changes no bit: a fused tape ([`Tape::fused`], which records chains of
//! elementwise ops lazily and evaluates them block by block; [`Tape::new`] does so for
//! cheap ops from 2^15 elements) gives the same values and gradients as an unfused one
//! ([`Tape::unfused`], every op computed as it is recorded), bit for bit ([`same_bits`]:
//! NaN matches any NaN, +0 and -0 differ) and shape for shape. Every graph here is built
//! by one function that takes the tape, once on each.
//!
//! - The op table (`tests/common/ops.rs`), row by row: every op on operands of several
//!   shapes (broadcast pairs, rank 0, sizes past 1024) holding special values, ties and
//!   kinks, as leaves (tracked or not) and as intermediate results (`x * 1.5`,
//!   `x.exp()`), the binary ops also with an `f64` on either side and with one node on
//!   both; each output summed, seeded with `backward_with`, or fed into a further chain.
//! - Random graphs (proptest): 1 to 12 ops of the table and custom ops (`Tape::custom`)
//!   over 1 to 3 leaves of 1 to a few thousand elements that broadcast together (among
//!   them tracked one-element leaves of rank 0 to 2, and leaves `[1, ..]` and `[2, ..]`
//!   over the first), nodes with several consumers, numbers as operands; the sweep
//!   started from the last node or an earlier one (nodes after it consume what it
//!   uses) by a sum, a mean, a random seed or a seed of one number repeated; every
//!   intermediate value and leaf gradient compared. In a second property some values are
//!   read while the graph is still being recorded. Plain plans chain one-element
//!   operands under gradients held as one number, which random plans rarely do.
//! - Read order: reading a value early (before the ops that consume it are recorded),
//!   late, twice or only after `backward` gives the same bits.
//! - The seed's hinge loss at N = 10^6: fused and unfused agree, and the gradient is the
//!   closed form.
//! - A custom op's backward that reads values and prints the tape while the sweep runs;
//!   misuse panicking with the same message; `Tape::new` around its 2^15 and 2^18 thresholds.
//!
//! The random graphs run `CASES` cases per property; `TAPEGRAD_FUSION_CASES=N` runs N.

mod common;

use common::ops::{Arg, Binary, Domain, Form, OPS, Op, Rule, op};
use common::{
    Rng, SPECIALS, UNARY_SPECIALS, bit_difference, broadcast_offset, broadcast_zip, map,
    panic_message, same_bits, scaling_is_exact, try_broadcast_shape, unravel,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::cell::RefCell;
use std::rc::Rc;
use tapegrad::losses::{hinge, hinge_grad_closed_form};
use tapegrad::{Tape, Tensor, Var, pairwise_sum, select, set_threads, threads};

/// Random graphs per property (each evaluated on both tapes) in a plain `cargo test`.
const CASES: u32 = 2048;

// ---- the comparison -------------------------------------------------------------------

/// What a graph gave on one tape: every value read and the gradient of every tracked
/// leaf, each labelled.
#[derive(Default)]
struct Outcome {
    values: Vec<(String, Tensor)>,
    grads: Vec<(String, Tensor)>,
}

impl Outcome {
    fn value(&mut self, what: impl Into<String>, v: Var<'_>) {
        self.values.push((what.into(), v.value()));
    }
}

/// Every difference between the fused and the unfused outcome, one line each.
fn differences(fused: &Outcome, unfused: &Outcome) -> Vec<String> {
    let mut out = Vec::new();
    for (kind, f, u) in [
        ("value", &fused.values, &unfused.values),
        ("gradient", &fused.grads, &unfused.grads),
    ] {
        let labels = |list: &[(String, Tensor)]| list.iter().map(|x| x.0.clone()).collect();
        let (fl, ul): (Vec<String>, Vec<String>) = (labels(f), labels(u));
        assert_eq!(fl, ul, "test bug: the two tapes read different {kind}s");
        for ((what, f), (_, u)) in f.iter().zip(u) {
            if let Some(d) = bit_difference(f, u) {
                out.push(format!("{kind} of {what}: fused {d}"));
            }
        }
    }
    out
}

/// `graph` built on a fused and on an unfused tape: every difference between the two.
fn fused_vs_unfused(graph: impl Fn(&Tape) -> Outcome) -> Vec<String> {
    let (fused, unfused) = (Tape::fused(), Tape::unfused());
    assert_eq!((fused.fuses_from(), unfused.fuses_from()), (Some(2), None));
    differences(&graph(&fused), &graph(&unfused))
}

/// A fused backward hands the upstream of add, sub and neg on to their operand instead
/// of running their rule, only where that operand gets nothing else: here a pending `y`
/// feeds one of them and another op too, in both orders of recording (the one that
/// hands on is swept first or second), with the upstream negated once, twice or not.
#[test]
fn an_upstream_handed_on_by_add_sub_or_neg_meets_the_other_uses_of_its_operand() {
    type Use = fn(Var<'_>) -> Var<'_>;
    let passing: [(&str, Use); 4] = [
        ("1 - y", |y| 1.0 - y),
        ("y - 1", |y| y - 1.0),
        ("-y", |y| -y),
        ("-(1 - y)", |y| -(1.0 - y)),
    ];
    let other: [(&str, Use); 3] = [
        ("y * 2", |y| y * 2.0),
        ("y.exp()", |y| y.exp()),
        ("y", |y| y),
    ];
    let x0: Vec<f64> = (0..300).map(|i| (i as f64 - 150.0) / 37.0).collect();
    let mut failures = Vec::new();
    for (p_name, pass) in passing {
        for (o_name, use_y) in other {
            for pass_last in [false, true] {
                let found = fused_vs_unfused(|tape| {
                    let x = tape.var(Tensor::from(x0.clone()));
                    let y = x * x;
                    let z = if pass_last {
                        let o = use_y(y);
                        o * 3.0 + pass(y)
                    } else {
                        let q = pass(y);
                        q * 3.0 + use_y(y)
                    };
                    let loss = z.sum();
                    let grads = loss.backward();
                    let mut outcome = Outcome {
                        values: vec![],
                        grads: vec![],
                    };
                    outcome.value("loss", loss);
                    outcome.grads.push(("x".into(), grads.wrt(x).clone()));
                    outcome
                });
                if !found.is_empty() {
                    failures.push(format!(
                        "{p_name} with {o_name} (last: {pass_last}): {found:?}"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The comparison is between the two engines, not one engine twice.
#[test]
fn tape_fused_fuses_from_two_elements_tape_new_from_large_arrays_and_unfused_never() {
    assert_eq!(Tape::fused().fuses_from(), Some(2));
    assert_eq!(Tape::new().fuses_from(), Some(1 << 15));
    assert_eq!(Tape::default().fuses_from(), Some(1 << 15));
    assert_eq!(Tape::unfused().fuses_from(), None);
}

/// A difference in one value or one gradient is reported, with its label.
#[test]
fn differences_finds_one_flipped_sign_of_zero_and_passes_nan_for_nan() {
    let outcome = |zero: f64, nan: f64| Outcome {
        values: vec![("y".into(), Tensor::from(vec![1.0, nan]))],
        grads: vec![("x".into(), Tensor::from(vec![zero, 2.0]))],
    };
    let other_nan = f64::from_bits(f64::NAN.to_bits() ^ 1);
    assert!(other_nan.is_nan());
    assert!(differences(&outcome(0.0, f64::NAN), &outcome(0.0, other_nan)).is_empty());
    let found = differences(&outcome(-0.0, f64::NAN), &outcome(0.0, f64::NAN));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("gradient of x: fused element 0"),
        "{found:?}"
    );
}

// ---- values for operands --------------------------------------------------------------

/// Values a few elements of a lane or pair share, so that max and min tie.
const TIES: [f64; 3] = [-1.0, 0.5, 2.0];

/// A tensor of `shape`: about a quarter of its elements from `specials`, a quarter from
/// [`TIES`], the rest from `domain` (`±[0.5, 3)`, or positive).
fn operand(rng: &mut Rng, shape: &[usize], specials: &[f64], domain: Domain) -> Tensor {
    let n = shape.iter().product();
    let data = (0..n)
        .map(|_| match rng.next_u64() % 4 {
            0 => specials[(rng.next_u64() % specials.len() as u64) as usize],
            1 => TIES[(rng.next_u64() % 3) as usize],
            _ => domain.pick(rng.uniform(0.5, 3.0), rng.next_u64() & 1 == 0),
        })
        .collect();
    Tensor::new(data, shape).unwrap()
}

/// The finite ones of `specials` (±0, ±1, 2, ...: zeros and kinks without NaN or inf).
fn finite(specials: &[f64]) -> Vec<f64> {
    specials.iter().copied().filter(|v| v.is_finite()).collect()
}

/// The operands of `shape` a case takes: one with `specials`, and for more than 64
/// elements also one with only the finite specials (a NaN or inf among thousands of
/// elements makes every sum over them NaN, which would hide any error in the sum).
fn operands(rng: &mut Rng, shape: &[usize], specials: &[f64], domain: Domain) -> Vec<Tensor> {
    let mut out = vec![operand(rng, shape, specials, domain)];
    if shape.iter().product::<usize>() > 64 {
        out.push(operand(rng, shape, &finite(specials), domain));
    }
    out
}

/// `b` with its first and about half of its other elements replaced by the element of
/// `a` the broadcast puts next to it: ties for max and min, whatever the shapes.
fn tied_with(rng: &mut Rng, a: &Tensor, b: Tensor) -> Tensor {
    let out = try_broadcast_shape(a.shape(), b.shape()).expect("test bug: no broadcast");
    let mut data = b.data().to_vec();
    for (j, v) in data.iter_mut().enumerate() {
        if j == 0 || rng.next_u64() & 1 == 0 {
            let mut index = vec![0; out.len() - b.shape().len()];
            index.extend(unravel(j, b.shape()));
            *v = a.data()[broadcast_offset(&index, a.shape())];
        }
    }
    Tensor::new(data, b.shape()).unwrap()
}

/// An upstream gradient of `shape`: mostly numbers in `[-2, 2)`, also ±0 and 1, and in
/// seeds of up to 64 elements now and then inf or NaN (in a larger one, they would make
/// the gradient of every broadcast operand NaN).
fn seed(rng: &mut Rng, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    let small = n <= 64;
    let data = (0..n)
        .map(|_| match rng.next_u64() % 64 {
            0 if small => f64::INFINITY,
            1 if small => f64::NAN,
            2..=9 => 0.0,
            10..=13 => -0.0,
            14..=17 => 1.0,
            _ => rng.uniform(-2.0, 2.0),
        })
        .collect();
    Tensor::new(data, shape).unwrap()
}

// ---- 1. every row of the op table -----------------------------------------------------

/// How an operand of the op under test is made from its leaf.
#[derive(Clone, Copy, Debug)]
enum Via {
    /// The leaf itself.
    Leaf,
    /// `leaf * 1.5`: an intermediate result, so the op extends a chain.
    Scaled,
    /// `leaf.exp()`.
    Exp,
}

const VIAS: [Via; 3] = [Via::Leaf, Via::Scaled, Via::Exp];

/// An operand of the op under test.
#[derive(Clone, Debug)]
enum Input {
    /// A leaf (`Tape::var` if tracked, else `Tape::constant`), through `via`.
    Leaf { x: Tensor, tracked: bool, via: Via },
    /// A plain `f64` (a binary op's `var_f64` or `f64_var`).
    Number(f64),
    /// The node of the first input again: one node on both sides.
    First,
}

/// What is done with the op's output `y`.
#[derive(Clone, Copy, Debug)]
enum Ending {
    /// `y.sum().backward()`: one number upstream, kept unexpanded; values read after.
    Sum,
    /// `y.backward_with(seed)`, `y` read before the sweep as well as after.
    Seed,
    /// `(y * y.tanh()).sum().backward()`: `y` has two consumers and the chain goes on.
    Chain,
}

const ENDINGS: [Ending; 3] = [Ending::Sum, Ending::Seed, Ending::Chain];

/// The op of `row` on `inputs` with `arg`, ended by `ending`, on `tape`.
fn row_graph(tape: &Tape, row: &Op, arg: &Arg, inputs: &[Input], ending: Ending) -> Outcome {
    let mut out = Outcome::default();
    let (mut operands, mut leaves) = (Vec::new(), Vec::new());
    let mut number = None;
    for (k, input) in inputs.iter().enumerate() {
        match input {
            Input::Leaf { x, tracked, via } => {
                let leaf = match tracked {
                    true => tape.var(x.clone()),
                    false => tape.constant(x.clone()),
                };
                if *tracked {
                    leaves.push((k, leaf));
                }
                operands.push(match via {
                    Via::Leaf => leaf,
                    Via::Scaled => leaf * 1.5,
                    Via::Exp => leaf.exp(),
                });
            }
            Input::Number(c) => number = Some((k, *c)),
            Input::First => operands.push(operands[0]),
        }
    }
    let y = match (&row.rule, number) {
        (Rule::Binary(rule), Some((0, c))) => (rule.f64_var)(c, operands[0]),
        (Rule::Binary(rule), Some((_, c))) => (rule.var_f64)(operands[0], c),
        (_, None) => row.apply(&operands, arg),
        _ => panic!("test bug: a number for {}", row.name),
    };
    let grads = match ending {
        Ending::Sum => y.sum().backward(),
        Ending::Seed => {
            out.value("y before backward", y);
            let mut rng = Rng(y.shape().iter().product::<usize>() as u64);
            y.backward_with(seed(&mut rng, &y.shape()))
        }
        Ending::Chain => {
            let z = y * y.tanh();
            let grads = z.sum().backward();
            out.value("y * y.tanh()", z);
            grads
        }
    };
    out.value("y", y);
    for (k, &v) in operands.iter().enumerate() {
        out.value(format!("operand {k}"), v);
    }
    for (k, leaf) in leaves {
        out.grads
            .push((format!("input {k}"), grads.wrt(leaf).clone()));
    }
    out
}

/// Shapes of the one operand of an elementwise op, and of a reduction's input.
const SHAPES: &[&[usize]] = &[&[], &[1], &[7], &[3, 4], &[2, 3, 2], &[1025], &[3, 700]];

/// Operand shapes of a binary op: equal, broadcast either way, with rank 0, past 1024.
const PAIRS: &[(&[usize], &[usize])] = &[
    (&[], &[]),
    (&[5], &[]),
    (&[], &[5]),
    (&[3, 4], &[4]),
    (&[4], &[3, 4]),
    (&[3, 1], &[1, 4]),
    (&[1, 4], &[3, 1]),
    (&[3, 4], &[3, 4]),
    (&[2, 3, 4], &[3, 1]),
    (&[1025], &[1025]),
    (&[2049], &[]),
    (&[3, 1], &[3, 700]),
];

/// The `f64` operands of binary ops: every special value, and 0.5.
fn numbers() -> Vec<f64> {
    SPECIALS.iter().copied().chain([0.5]).collect()
}

/// Every way to make one operand: each [`Via`], tracked or not.
fn leaf_inputs(x: &Tensor) -> Vec<Input> {
    let mut out = Vec::new();
    for via in VIAS {
        for tracked in [true, false] {
            out.push(Input::Leaf {
                x: x.clone(),
                tracked,
                via,
            });
        }
    }
    out
}

/// Every combination of [`leaf_inputs`] for the tensors `x` (one or two).
fn combinations(x: &[Tensor]) -> Vec<Vec<Input>> {
    match x {
        [a] => leaf_inputs(a).into_iter().map(|i| vec![i]).collect(),
        [a, b] => {
            let mut out = Vec::new();
            for i in leaf_inputs(a) {
                for j in leaf_inputs(b) {
                    out.push(vec![i.clone(), j]);
                }
            }
            out
        }
        _ => panic!("test bug: {} operands", x.len()),
    }
}

/// The operands the cases of an op on tensors take, by its form, with the arg of each.
fn tensor_cases(rng: &mut Rng, form: Form) -> Vec<(Arg, Vec<Tensor>)> {
    let mut x = |shape: &[usize]| operands(rng, shape, &SPECIALS, Domain::Signed);
    let ranked: &[&[usize]] = &[&[7], &[3, 4], &[2, 3, 2], &[1, 5], &[1025], &[3, 700]];
    let mut out = Vec::new();
    match form {
        Form::Reduce | Form::Transpose => {
            for shape in SHAPES {
                out.extend(x(shape).into_iter().map(|x| (Arg::None, vec![x])));
            }
        }
        Form::Axis | Form::AlongAxis => {
            for shape in ranked {
                for axis in 0..shape.len() {
                    out.extend(x(shape).into_iter().map(|x| (Arg::Axis(axis), vec![x])));
                }
            }
        }
        Form::Reshape => {
            let pairs: &[(&[usize], &[usize])] = &[
                (&[], &[1, 1]),
                (&[3, 4], &[12]),
                (&[3, 4], &[4, 1, 3]),
                (&[2, 3, 4], &[6, 4]),
                (&[1025], &[5, 205]),
                (&[3, 700], &[2100]),
            ];
            for (from, to) in pairs {
                let arg = Arg::Shape(to.to_vec());
                out.extend(x(from).into_iter().map(|x| (arg.clone(), vec![x])));
            }
        }
        Form::BroadcastTo => {
            let pairs: &[(&[usize], &[usize])] = &[
                (&[], &[5]),
                (&[4], &[3, 4]),
                (&[3, 1], &[3, 4]),
                (&[1], &[1025]),
                (&[3, 1], &[2, 3, 700]),
            ];
            for (from, to) in pairs {
                let arg = Arg::Shape(to.to_vec());
                out.extend(x(from).into_iter().map(|x| (arg.clone(), vec![x])));
            }
        }
        Form::IndexSelect => {
            let picks: &[(&[usize], usize, Vec<usize>)] = &[
                (&[5], 0, vec![0, 4, 4, 2]),
                (&[3, 4], 1, vec![3, 0, 3]),
                (&[3, 4], 0, vec![2]),
                (&[2, 1025], 1, (0..1500).map(|i| i * 7 % 1025).collect()),
                (&[3, 700], 0, vec![1, 1, 0, 2, 1]),
            ];
            for (shape, axis, indices) in picks {
                let arg = Arg::Indices {
                    axis: *axis,
                    indices: indices.clone(),
                };
                out.extend(x(shape).into_iter().map(|x| (arg.clone(), vec![x])));
            }
        }
        Form::MatMul => {
            for (m, k, n) in [(1, 1, 1), (2, 3, 4), (5, 1, 5), (1, 6, 1), (33, 40, 35)] {
                let pairs = x(&[m, k]).into_iter().zip(x(&[k, n]));
                out.extend(pairs.map(|(a, b)| (Arg::None, vec![a, b])));
            }
        }
        Form::Select => {
            let triples: &[(&[usize], &[usize], &[usize])] = &[
                (&[3, 4], &[3, 4], &[4]),
                (&[4], &[3, 1], &[1, 4]),
                (&[], &[5], &[]),
                (&[1025], &[1025], &[]),
                (&[3, 1], &[700], &[3, 700]),
            ];
            for (c, a, b) in triples {
                let n = c.iter().product();
                let cond =
                    (0..n).map(|_| [0.0, 1.0, -2.0, f64::NAN][(rng.next_u64() % 4) as usize]);
                let cond = Tensor::new(cond.collect(), c).unwrap();
                let a = operands(rng, a, &SPECIALS, Domain::Signed);
                let b = operands(rng, b, &SPECIALS, Domain::Signed);
                let pairs = a.into_iter().zip(b.into_iter().cycle());
                out.extend(pairs.map(|(a, b)| (Arg::Cond(cond.clone()), vec![a, b])));
            }
        }
    }
    out
}

/// Every case of the op of `row`: its arg and its inputs.
fn row_cases(row: &Op, rng: &mut Rng) -> Vec<(Arg, Vec<Input>)> {
    let mut out = Vec::new();
    match &row.rule {
        Rule::Unary(_) | Rule::Param(_) => {
            for arg in row.elementwise_args() {
                for shape in SHAPES {
                    for x in operands(rng, shape, &UNARY_SPECIALS, row.domain(&arg)) {
                        out.extend(combinations(&[x]).into_iter().map(|i| (arg.clone(), i)));
                    }
                }
            }
        }
        Rule::Binary(rule) => {
            for (sa, sb) in PAIRS {
                let a = operands(rng, sa, &SPECIALS, rule.domains[0]);
                let b = operands(rng, sb, &SPECIALS, rule.domains[1]);
                for (a, b) in a.into_iter().zip(b.into_iter().cycle()) {
                    let b = tied_with(rng, &a, b);
                    out.extend(combinations(&[a, b]).into_iter().map(|i| (Arg::None, i)));
                }
            }
            for shape in SHAPES {
                for c in numbers() {
                    // Every fifth element is the number: ties for max and min.
                    for x in operands(rng, shape, &SPECIALS, rule.domains[0]) {
                        let data = x.data().iter().enumerate();
                        let data = data.map(|(i, &v)| if i % 5 == 0 { c } else { v });
                        let x = Tensor::new(data.collect(), shape).unwrap();
                        for input in leaf_inputs(&x) {
                            out.push((Arg::None, vec![input.clone(), Input::Number(c)]));
                            out.push((Arg::None, vec![Input::Number(c), input]));
                        }
                    }
                }
                for x in operands(rng, shape, &SPECIALS, rule.domains[0]) {
                    for input in leaf_inputs(&x) {
                        out.push((Arg::None, vec![input, Input::First]));
                    }
                }
            }
        }
        Rule::Tensor(rule) => {
            for (arg, x) in tensor_cases(rng, rule.form) {
                out.extend(combinations(&x).into_iter().map(|i| (arg.clone(), i)));
            }
        }
    }
    out
}

/// A short description of a case, for a failure message.
fn describe(arg: &Arg, inputs: &[Input], ending: Ending) -> String {
    let inputs: Vec<String> = inputs
        .iter()
        .map(|input| match input {
            Input::Leaf { x, tracked, via } => {
                let kind = if *tracked { "var" } else { "constant" };
                format!("{kind} {:?} via {via:?}", x.shape())
            }
            Input::Number(c) => format!("{c:?}"),
            Input::First => "the first operand again".to_string(),
        })
        .collect();
    let arg = match arg {
        Arg::Cond(c) => format!("Cond of shape {:?}", c.shape()),
        Arg::Indices { axis, indices } if indices.len() > 8 => {
            format!("{} indices along axis {axis}", indices.len())
        }
        other => format!("{other:?}"),
    };
    format!("({}) {arg}, {ending:?}", inputs.join(", "))
}

/// Every row of the op table, fused against unfused, on all the cases of
/// [`row_cases`] and each [`Ending`]; a failure lists every op and case that differ.
#[test]
fn every_op_of_the_table_gives_the_same_bits_fused_and_unfused() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for (r, row) in OPS.iter().enumerate() {
        let mut rng = Rng(0xf0_5e00 + r as u64);
        let cases = row_cases(row, &mut rng);
        assert!(
            cases.len() >= 18,
            "{}: only {} cases",
            row.name,
            cases.len()
        );
        for (arg, inputs) in &cases {
            for ending in ENDINGS {
                let found = fused_vs_unfused(|tape| row_graph(tape, row, arg, inputs, ending));
                if !found.is_empty() {
                    failures.push(format!(
                        "{} {}:\n    {}",
                        row.name,
                        describe(arg, inputs, ending),
                        found.join("\n    ")
                    ));
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 10_000, "only {checked} cases");
    let shown = &failures[..failures.len().min(40)];
    assert!(
        failures.is_empty(),
        "{} of {checked} cases differ fused and unfused (first {}):\n{}",
        failures.len(),
        shown.len(),
        shown.join("\n")
    );
}

/// The op-table cases of `max` hold what they are meant to: all the broadcast pairs, ties
/// between the operands wherever the broadcast puts them, every special value in some
/// operand, and large operands with and without NaN and inf.
#[test]
fn the_op_table_cases_broadcast_tie_and_hold_every_special_value() {
    let mut rng = Rng(1);
    let max = op("max");
    let cases = row_cases(max, &mut rng);
    let leaves = |inputs: &[Input]| -> Vec<Tensor> {
        let x = inputs.iter().filter_map(|i| match i {
            Input::Leaf { x, .. } => Some(x.clone()),
            _ => None,
        });
        x.collect()
    };
    let pairs: Vec<(Vec<usize>, Vec<usize>)> = cases
        .iter()
        .map(|(_, i)| leaves(i))
        .filter(|x| x.len() == 2)
        .map(|x| (x[0].shape().to_vec(), x[1].shape().to_vec()))
        .collect();
    for (a, b) in PAIRS {
        assert!(
            pairs.contains(&(a.to_vec(), b.to_vec())),
            "{a:?} with {b:?}"
        );
    }
    // Ties across the broadcast: some element of b equals the element of a beside it.
    for (_, inputs) in cases.iter().filter(|(_, i)| leaves(i).len() == 2) {
        let x = leaves(inputs);
        let out = try_broadcast_shape(x[0].shape(), x[1].shape()).unwrap();
        let n: usize = out.iter().product();
        let tie = (0..n).any(|flat| {
            let index = unravel(flat, &out);
            let [a, b] = [0, 1].map(|k| x[k].data()[broadcast_offset(&index, x[k].shape())]);
            same_bits(a, b)
        });
        assert!(tie, "no tie in {:?} with {:?}", x[0], x[1]);
    }
    // Large operands also come without NaN and inf, so that sums over them are numbers.
    let finite_and_large = |x: &Tensor| x.len() > 64 && x.data().iter().all(|v| v.is_finite());
    let large = cases
        .iter()
        .map(|(_, i)| leaves(i))
        .filter(|x| x.len() == 2);
    let large: Vec<Vec<Tensor>> = large.filter(|x| x[0].len() > 64).collect();
    assert!(large.iter().any(|x| x.iter().all(finite_and_large)));
    assert!(large.iter().any(|x| !x.iter().all(finite_and_large)));
    let all: Vec<f64> = cases
        .iter()
        .flat_map(|(_, i)| leaves(i))
        .flat_map(|x| x.data().to_vec())
        .collect();
    for special in SPECIALS {
        assert!(
            all.iter().any(|&v| v.to_bits() == special.to_bits()),
            "no {special:?}"
        );
    }
}

// ---- 2. random graphs -----------------------------------------------------------------

/// The most elements a node may have: a broadcast or a matmul that would make more is
/// not drawn.
const MAX_ELEMENTS: usize = 8192;

/// Shapes of the first leaf (the others broadcast with it): 1 to 4097 elements, some at
/// and just past a power of two, so that blocks of every size end inside a tensor.
const GRAPH_SHAPES: &[&[usize]] = &[
    &[],
    &[1],
    &[6],
    &[3, 4],
    &[2, 3, 5],
    &[1023],
    &[1024],
    &[1025],
    &[2049],
    &[4097],
    &[4, 300],
    &[3, 1025],
    &[2, 2, 777],
];

/// A leaf of a random graph. Its elements come from `seed`, so that a failing case
/// prints in a few lines and can be rebuilt from them.
#[derive(Clone, Debug)]
struct LeafSpec {
    shape: Vec<usize>,
    tracked: bool,
    seed: u64,
    /// One element in this many is a special value (NaN, ±inf, ±0, ±1, 2); none if 0.
    specials: u64,
    /// Only the finite special values (±0, ±1, 2).
    finite: bool,
}

impl LeafSpec {
    /// Elements uniform in `[-3, 3)`, an eighth of them from [`TIES`], and the specials.
    fn tensor(&self) -> Tensor {
        let mut rng = Rng(self.seed);
        let n = self.shape.iter().product();
        let data = (0..n)
            .map(|_| {
                if self.specials > 0 && rng.next_u64().is_multiple_of(self.specials) {
                    let pool = if self.finite {
                        finite(&SPECIALS)
                    } else {
                        SPECIALS.to_vec()
                    };
                    pool[(rng.next_u64() % pool.len() as u64) as usize]
                } else if rng.next_u64().is_multiple_of(8) {
                    TIES[(rng.next_u64() % 3) as usize]
                } else {
                    rng.uniform(-3.0, 3.0)
                }
            })
            .collect();
        Tensor::new(data, &self.shape).unwrap()
    }
}

/// One node of a random graph (nodes are numbered from the leaves on).
#[derive(Clone, Debug)]
enum Step {
    /// The op of the table named `op` on the nodes `inputs`, with `arg`.
    Op {
        op: &'static str,
        arg: Arg,
        inputs: Vec<usize>,
    },
    /// A binary op of the table with an `f64` operand: `node op number`, or
    /// `number op node` if `number_first`.
    Number {
        op: &'static str,
        node: usize,
        number: f64,
        number_first: bool,
    },
    /// The op of [`custom`] (`Tape::custom`) on one node or two of one shape.
    Custom { inputs: Vec<usize> },
}

/// How the sweep starts from the root.
#[derive(Clone, Copy, Debug)]
enum End {
    /// `root.sum().backward()`, the sum recorded after the last node.
    Sum,
    /// `root.mean().backward()`, likewise: `root` gets one number, not 1, upstream.
    Mean,
    /// `root.backward_with(seed)`, the seed's elements from [`seed`] with this seed.
    Seed(u64),
    /// `root.backward_with(Tensor::full(shape, c))`: every element of the seed `c`
    /// (`root.backward()` for `c = 1` on one element).
    Full(f64),
}

/// The numbers a [`End::Full`] seed is made of: 1, and some whose multiples and sums
/// round (a gradient held as one number is multiplied where a laid-out one is summed).
const FULL_SEEDS: [f64; 4] = [1.0, 0.1, -0.7, -0.0];

#[derive(Clone, Debug)]
struct Plan {
    leaves: Vec<LeafSpec>,
    steps: Vec<Step>,
    /// The shape of every node, leaves first.
    shapes: Vec<Vec<usize>>,
    /// The node the sweep starts from: the last, or one that later nodes consume.
    root: usize,
    end: End,
    /// `(node, after)`: node's value is read as soon as node `after` is recorded (before
    /// the nodes after it exist, and before backward).
    early: Vec<(usize, usize)>,
}

/// The choices a plan is made of, read one word at a time; a word past the end reads
/// as 0, and 0 is always the simplest choice, so proptest shrinks a failing plan by
/// shrinking its words.
struct Choices<'a> {
    words: &'a [u32],
    at: usize,
}

impl Choices<'_> {
    /// A number below `n`.
    fn below(&mut self, n: usize) -> usize {
        let word = self.words.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        word as usize % n
    }

    fn one_of<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn seed(&mut self) -> u64 {
        let high = self.below(1 << 16) as u64;
        (high << 32) | self.below(1 << 32) as u64
    }

    /// Of `candidates` (not empty), the latest (chains are the usual case) or any.
    fn node(&mut self, candidates: &[usize]) -> usize {
        match self.below(2) {
            0 => candidates[candidates.len() - 1],
            _ => self.one_of(candidates),
        }
    }
}

/// The ops whose gradients do not read their operands: an upstream the same for every
/// element (from a sum, a mean or a one-number seed) stays so through them, which the
/// fused backward tracks. Half the elementwise steps take one of them.
const LINEAR: [&str; 3] = ["add", "sub", "neg"];

/// A shape that broadcasts with `base`: `base` itself, some dims 1, a suffix, one
/// element of rank 0, 1 or 2 (`[]`, `[1]`, `[1, 1]`), or `base` under a new first dim of
/// 1 or 2 (`[1, n]`, `[2, n]`).
fn leaf_shape(ch: &mut Choices<'_>, base: &[usize]) -> Vec<usize> {
    match ch.below(5) {
        0 => base.to_vec(),
        1 => base
            .iter()
            .map(|&d| if ch.below(2) == 0 { 1 } else { d })
            .collect(),
        2 => base[ch.below(base.len() + 1)..].to_vec(),
        3 => vec![1; ch.below(3)],
        _ => {
            let first = 1 + ch.below(2);
            let first = if first * elements(base) > MAX_ELEMENTS {
                1
            } else {
                first
            };
            [&[first], base].concat()
        }
    }
}

fn elements(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// The nodes (of `shapes`) for which `keep` holds.
fn nodes_where(shapes: &[Vec<usize>], keep: impl Fn(&[usize]) -> bool) -> Vec<usize> {
    (0..shapes.len()).filter(|&i| keep(&shapes[i])).collect()
}

/// The nodes that broadcast with a node of shape `a` to at most [`MAX_ELEMENTS`].
fn partners(shapes: &[Vec<usize>], a: &[usize]) -> Vec<usize> {
    nodes_where(shapes, |b| {
        try_broadcast_shape(a, b).is_some_and(|out| elements(&out) <= MAX_ELEMENTS)
    })
}

fn op_step(row: &Op, arg: Arg, inputs: Vec<usize>) -> Step {
    Step::Op {
        op: row.name,
        arg,
        inputs,
    }
}

/// The steps (usually one) that record the op on tensors of `row` on nodes of
/// `shapes`, with the shape of each; `None` if no node fits its form.
fn tensor_steps(
    ch: &mut Choices<'_>,
    row: &Op,
    form: Form,
    shapes: &[Vec<usize>],
) -> Option<Vec<(Step, Vec<usize>)>> {
    let all: Vec<usize> = (0..shapes.len()).collect();
    let ranked = nodes_where(shapes, |s| !s.is_empty());
    let one = |step, shape| Some(vec![(step, shape)]);
    match form {
        Form::Reduce => one(op_step(row, Arg::None, vec![ch.node(&all)]), vec![]),
        Form::Axis | Form::AlongAxis => {
            if ranked.is_empty() {
                return None;
            }
            let a = ch.node(&ranked);
            let axis = ch.below(shapes[a].len());
            let mut shape = shapes[a].clone();
            if form == Form::Axis {
                shape.remove(axis);
            }
            one(op_step(row, Arg::Axis(axis), vec![a]), shape)
        }
        Form::Reshape => {
            let a = ch.node(&all);
            let from = &shapes[a];
            let to = match ch.below(3) {
                0 => vec![elements(from)],
                1 => from.iter().rev().copied().collect(),
                _ => {
                    let mut to = from.clone();
                    to.insert(ch.below(from.len() + 1), 1);
                    to
                }
            };
            one(op_step(row, Arg::Shape(to.clone()), vec![a]), to)
        }
        Form::Transpose => {
            let a = ch.node(&all);
            let to = shapes[a].iter().rev().copied().collect();
            one(op_step(row, Arg::None, vec![a]), to)
        }
        Form::BroadcastTo => {
            let ones = nodes_where(shapes, |s| elements(s) == 1);
            let (a, mut to) = match ch.below(3) {
                // A one-element node (a leaf, a sum) spread over any node's shape.
                0 if !ones.is_empty() => {
                    let (a, b) = (ch.node(&ones), ch.one_of(&all));
                    (a, try_broadcast_shape(&shapes[a], &shapes[b]).unwrap())
                }
                _ => {
                    let a = ch.node(&all);
                    let mut to: Vec<usize> = shapes[a]
                        .iter()
                        .map(|&d| if d == 1 { 1 + ch.below(3) } else { d })
                        .collect();
                    if ch.below(2) == 0 {
                        to.insert(0, 1 + ch.below(3));
                    }
                    (a, to)
                }
            };
            if elements(&to) > MAX_ELEMENTS {
                to = shapes[a].clone();
            }
            one(op_step(row, Arg::Shape(to.clone()), vec![a]), to)
        }
        Form::IndexSelect => {
            if ranked.is_empty() {
                return None;
            }
            let a = ch.node(&ranked);
            let axis = ch.below(shapes[a].len());
            let len = shapes[a][axis];
            // Up to 3 more than the axis holds, but at most MAX_ELEMENTS in all.
            let most = MAX_ELEMENTS / (elements(&shapes[a]) / len);
            let count = 1 + ch.below((len + 3).min(40).min(most));
            let indices: Vec<usize> = (0..count).map(|_| ch.below(len)).collect();
            let mut shape = shapes[a].clone();
            shape[axis] = count;
            one(op_step(row, Arg::Indices { axis, indices }, vec![a]), shape)
        }
        Form::MatMul => {
            let matrices = nodes_where(shapes, |s| s.len() == 2);
            if matrices.is_empty() {
                return None;
            }
            let a = ch.node(&matrices);
            let (m, k) = (shapes[a][0], shapes[a][1]);
            let fits = |m: usize, k: usize, n: usize| m * n <= MAX_ELEMENTS && m * k * n <= 300_000;
            let others = nodes_where(shapes, |s| s.len() == 2 && s[0] == k && fits(m, k, s[1]));
            if !others.is_empty() && ch.below(2) == 0 {
                let b = ch.node(&others);
                return one(op_step(row, Arg::None, vec![a, b]), vec![m, shapes[b][1]]);
            }
            // a with its own transpose t (the next node): a t or t a.
            let t = shapes.len();
            let transpose = op_step(op("transpose"), Arg::None, vec![a]);
            let (inputs, shape) = match (fits(m, k, m), fits(k, m, k), ch.below(2)) {
                (true, false, _) | (true, true, 0) => (vec![a, t], vec![m, m]),
                (_, true, _) => (vec![t, a], vec![k, k]),
                (false, false, _) => return None,
            };
            Some(vec![
                (transpose, vec![k, m]),
                (op_step(row, Arg::None, inputs), shape),
            ])
        }
        Form::Select => {
            let a = ch.node(&all);
            let b = ch.node(&partners(shapes, &shapes[a]));
            let out = try_broadcast_shape(&shapes[a], &shapes[b]).unwrap();
            let mut cond: Vec<usize> = out[out.len() - ch.below(out.len() + 1)..].to_vec();
            if elements(&cond) > 64 {
                cond.clear();
            }
            let values = (0..elements(&cond))
                .map(|_| ch.one_of(&[0.0, 1.0, -2.0, f64::NAN]))
                .collect();
            let cond = Tensor::new(values, &cond).unwrap();
            one(op_step(row, Arg::Cond(cond), vec![a, b]), out)
        }
    }
}

/// The plan the choices `words` make: leaves, 1 to 12 steps (a matmul of a node with its
/// transpose takes two), the root and the end, and if `early` the values read before
/// backward.
fn plan(words: &[u32], early: bool) -> Plan {
    let ch = &mut Choices { words, at: 0 };
    let base = ch.one_of(GRAPH_SHAPES).to_vec();
    let leaves: Vec<LeafSpec> = (0..1 + ch.below(3))
        .map(|k| LeafSpec {
            shape: if k == 0 {
                base.clone()
            } else {
                leaf_shape(ch, &base)
            },
            tracked: ch.below(4) != 3,
            seed: ch.seed(),
            specials: ch.one_of(&[0, 16, 64, 8]),
            finite: ch.below(2) == 0,
        })
        .collect();
    let mut shapes: Vec<Vec<usize>> = leaves.iter().map(|l| l.shape.clone()).collect();
    let elementwise: Vec<&'static Op> = OPS.iter().filter(|r| r.is_elementwise()).collect();
    let binary: Vec<&'static Op> = OPS.iter().filter(|r| r.binary().is_some()).collect();
    let on_tensors: Vec<&'static Op> = OPS.iter().filter(|r| !r.is_elementwise()).collect();
    let mut steps = Vec::new();
    let length = 1 + ch.below(12);
    while steps.len() < length {
        let all: Vec<usize> = (0..shapes.len()).collect();
        let made = match ch.below(9) {
            0..=3 => {
                let row = match ch.below(2) {
                    0 => op(ch.one_of(&LINEAR)),
                    _ => ch.one_of(&elementwise),
                };
                let a = ch.node(&all);
                let (arg, inputs, shape) = match &row.rule {
                    Rule::Unary(_) => (Arg::None, vec![a], shapes[a].clone()),
                    Rule::Param(rule) => {
                        let p = ch.one_of(rule.params).0;
                        (Arg::Param(p), vec![a], shapes[a].clone())
                    }
                    _ => {
                        // Often a one-element node (a leaf, a sum): it broadcasts.
                        let ones = nodes_where(&shapes, |s| elements(s) == 1);
                        let b = match ch.below(4) {
                            0 if !ones.is_empty() => ch.node(&ones),
                            _ => ch.node(&partners(&shapes, &shapes[a])),
                        };
                        let out = try_broadcast_shape(&shapes[a], &shapes[b]).unwrap();
                        let inputs = if ch.below(2) == 0 {
                            vec![a, b]
                        } else {
                            vec![b, a]
                        };
                        (Arg::None, inputs, out)
                    }
                };
                vec![(op_step(row, arg, inputs), shape)]
            }
            4 => {
                let node = ch.node(&all);
                let step = Step::Number {
                    op: ch.one_of(&binary).name,
                    node,
                    number: ch.one_of(&numbers()),
                    number_first: ch.below(2) == 1,
                };
                vec![(step, shapes[node].clone())]
            }
            8 => {
                let a = ch.node(&all);
                let inputs = match ch.below(2) {
                    0 => vec![a],
                    _ => vec![a, ch.node(&nodes_where(&shapes, |s| s == shapes[a]))],
                };
                vec![(Step::Custom { inputs }, shapes[a].clone())]
            }
            _ => {
                // A third of them a sum or a mean: one number upstream of their input.
                let row = match ch.below(3) {
                    0 => op(ch.one_of(&["sum", "mean"])),
                    _ => ch.one_of(&on_tensors),
                };
                let form = row.form().unwrap();
                tensor_steps(ch, row, form, &shapes).unwrap_or_else(|| {
                    vec![(op_step(op("sum"), Arg::None, vec![ch.node(&all)]), vec![])]
                })
            }
        };
        for (step, shape) in made {
            // Every node broadcasts with itself within the limit, so has a partner.
            assert!(
                elements(&shape) <= MAX_ELEMENTS,
                "test bug: {step:?} is {shape:?}"
            );
            steps.push(step);
            shapes.push(shape);
        }
    }
    let nodes = shapes.len();
    // A root before the last node has consumers the sweep does not reach.
    let root = match ch.below(3) {
        0 => leaves.len() + ch.below(steps.len()),
        _ => nodes - 1,
    };
    let end = match ch.below(5) {
        0 => End::Seed(ch.seed()),
        1 => End::Full(ch.one_of(&FULL_SEEDS)),
        2 => End::Mean,
        _ => End::Sum,
    };
    let mut reads = Vec::new();
    if early {
        for node in 0..nodes {
            if ch.below(3) == 0 {
                reads.push((node, node + ch.below(nodes - node)));
            }
        }
    }
    Plan {
        leaves,
        steps,
        shapes,
        root,
        end,
        early: reads,
    }
}

/// A custom op ([`Tape::custom`]) whose backward reads its inputs: `x * |x|` of one
/// node, `a * b` of two of one shape.
fn custom<'t>(tape: &'t Tape, inputs: &[Var<'t>]) -> Var<'t> {
    match *inputs {
        [x] => tape.custom(
            "x * |x|",
            &[x],
            |x| map(x[0], |v| v * v.abs()),
            |x, _, up| vec![broadcast_zip(x[0], up, |v, u| 2.0 * v.abs() * u)],
        ),
        [a, b] => tape.custom(
            "a * b",
            &[a, b],
            |x| broadcast_zip(x[0], x[1], |a, b| a * b),
            |x, _, up| {
                let g = |k: usize| broadcast_zip(x[1 - k], up, |v, u| u * v);
                vec![g(0), g(1)]
            },
        ),
        _ => panic!("test bug: a custom op on {} nodes", inputs.len()),
    }
}

/// The graph of `plan` on `tape`: the values it reads early, then (after backward) the
/// loss, every node, and every tracked leaf's gradient.
fn plan_graph(tape: &Tape, plan: &Plan) -> Outcome {
    let mut out = Outcome::default();
    let mut nodes: Vec<Var<'_>> = Vec::new();
    let read_early = |out: &mut Outcome, nodes: &[Var<'_>]| {
        let at = nodes.len() - 1;
        for &(node, _) in plan.early.iter().filter(|(_, after)| *after == at) {
            out.value(
                format!("node {node} once node {at} is recorded"),
                nodes[node],
            );
        }
    };
    for leaf in &plan.leaves {
        let x = leaf.tensor();
        nodes.push(match leaf.tracked {
            true => tape.var(x),
            false => tape.constant(x),
        });
        read_early(&mut out, &nodes);
    }
    for step in &plan.steps {
        let v = match step {
            Step::Op {
                op: name,
                arg,
                inputs,
            } => {
                let inputs: Vec<Var<'_>> = inputs.iter().map(|&i| nodes[i]).collect();
                op(name).apply(&inputs, arg)
            }
            Step::Number {
                op: name,
                node,
                number,
                number_first,
            } => {
                let rule = op(name).binary().unwrap();
                match number_first {
                    true => (rule.f64_var)(*number, nodes[*node]),
                    false => (rule.var_f64)(nodes[*node], *number),
                }
            }
            Step::Custom { inputs } => {
                let inputs: Vec<Var<'_>> = inputs.iter().map(|&i| nodes[i]).collect();
                custom(tape, &inputs)
            }
        };
        let shape = &plan.shapes[nodes.len()];
        assert_eq!(&v.shape()[..], shape, "test bug: the shape of {step:?}");
        nodes.push(v);
        read_early(&mut out, &nodes);
    }
    let root = nodes[plan.root];
    let shape = root.shape();
    let grads = match plan.end {
        End::Sum | End::Mean => {
            let loss = match plan.end {
                End::Sum => root.sum(),
                _ => root.mean(),
            };
            let grads = loss.backward();
            out.value("the loss", loss);
            grads
        }
        End::Seed(s) => root.backward_with(seed(&mut Rng(s), &shape)),
        End::Full(c) if c == 1.0 && elements(&shape) == 1 => root.backward(),
        End::Full(c) => root.backward_with(Tensor::full(&shape, c)),
    };
    for (i, &v) in nodes.iter().enumerate() {
        out.value(format!("node {i}"), v);
    }
    for (i, leaf) in plan.leaves.iter().enumerate() {
        if leaf.tracked {
            out.grads
                .push((format!("leaf {i}"), grads.wrt(nodes[i]).clone()));
        }
    }
    out
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("TAPEGRAD_FUSION_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(CASES),
        // No regressions file: a case found is kept as a plain test instead.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Words per plan: nearly twice what the greediest of 2000 drawn plans reads (176). A
/// plan that reads past them gets zeros, the simplest choices, and is still a plan.
const WORDS: usize = 320;

fn plans(early: bool) -> impl Strategy<Value = Plan> {
    prop::collection::vec(any::<u32>(), WORDS).prop_map(move |words| plan(&words, early))
}

fn check_plan(plan: &Plan) -> Result<(), TestCaseError> {
    let found = fused_vs_unfused(|tape| plan_graph(tape, plan));
    prop_assert!(found.is_empty(), "{}", found.join("\n"));
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// Every node's value (read after backward) and every tracked leaf's gradient.
    #[test]
    fn random_graphs_give_the_same_bits_fused_and_unfused(plan in plans(false)) {
        check_plan(&plan)?;
    }

    /// As above, with some values read while the graph is still being recorded.
    #[test]
    fn random_graphs_read_while_recording_give_the_same_bits_fused_and_unfused(
        plan in plans(true)
    ) {
        check_plan(&plan)?;
    }
}

/// The plans the properties draw are what they are meant to be: every op of the table
/// (the binary ones also with a number), and each kind of graph the tally below names,
/// in at least the share of plans it gives. Tallied over plans drawn as the properties
/// draw them, without evaluating any.
#[test]
fn random_plans_use_every_op_several_consumers_and_sizes_past_a_block() {
    let mut rng = Rng(7);
    let mut names: Vec<&str> = Vec::new();
    let mut numbers: Vec<&str> = Vec::new();
    // (what, 1 / the least share of plans that must have it, how many have it)
    let mut tally: Vec<(&str, usize, usize)> = Vec::new();
    let count = 20_000;
    let mut longest = 0;
    for _ in 0..count {
        let words: Vec<u32> = (0..WORDS).map(|_| rng.next_u64() as u32).collect();
        let plan = plan(&words, true);
        let (leaves, shapes) = (plan.leaves.len(), &plan.shapes);
        let mut uses = vec![0; shapes.len()];
        // Whether each node is an elementwise op's result (pending on a fused tape).
        let mut elementwise = vec![false; leaves];
        let (mut customs, mut custom_on_pending, mut custom_on_two) = (false, false, false);
        let (mut same_twice, mut spread, mut broadcast_one) = (false, false, false);
        for (s, step) in plan.steps.iter().enumerate() {
            let one = |i: &usize| elements(&shapes[*i]) == 1;
            let many = elements(&shapes[leaves + s]) > 1;
            let inputs = match step {
                Step::Op {
                    op: name, inputs, ..
                } => {
                    names.push(name);
                    elementwise.push(op(name).is_elementwise());
                    same_twice |= inputs.len() == 2 && inputs[0] == inputs[1];
                    spread |= *name == "broadcast_to" && one(&inputs[0]) && many;
                    broadcast_one |= elementwise[leaves + s] && inputs.iter().any(one) && many;
                    inputs.clone()
                }
                Step::Number { op, node, .. } => {
                    numbers.push(op);
                    elementwise.push(true);
                    vec![*node]
                }
                Step::Custom { inputs } => {
                    customs = true;
                    custom_on_pending |= inputs.iter().any(|&i| elementwise[i]);
                    custom_on_two |= inputs.len() == 2;
                    elementwise.push(false);
                    inputs.clone()
                }
            };
            inputs.iter().for_each(|&i| uses[i] += 1);
        }
        let base = &plan.leaves[0].shape;
        let tracked_one = |rank: usize| {
            let mut l = plan.leaves.iter();
            l.any(|l| l.tracked && l.shape == vec![1; rank])
        };
        let over_base = |first: usize| {
            let mut l = plan.leaves[1..].iter();
            l.any(|l| l.shape.len() == base.len() + 1 && l.shape[0] == first)
        };
        let mut later = plan.steps[plan.root + 1 - leaves..].iter();
        let consumed_later = later.any(|step| match step {
            Step::Op { inputs, .. } | Step::Custom { inputs } => {
                inputs.iter().any(|&i| i <= plan.root)
            }
            Step::Number { node, .. } => *node <= plan.root,
        });
        let seeded = matches!(plan.end, End::Seed(_) | End::Full(_));
        let kinds = [
            ("leaves past 1024 elements", 5, elements(base) > 1024),
            (
                "a node with several consumers",
                5,
                uses.iter().any(|&u| u >= 2),
            ),
            ("a binary op with one node on both sides", 5, same_twice),
            ("a constant leaf", 5, plan.leaves.iter().any(|l| !l.tracked)),
            ("root.mean()", 10, matches!(plan.end, End::Mean)),
            ("backward_with(seed)", 10, matches!(plan.end, End::Seed(_))),
            (
                "backward_with(Tensor::full(shape, c)), c != 1",
                10,
                matches!(plan.end, End::Full(c) if c != 1.0),
            ),
            (
                "an elementwise root given a seed",
                10,
                seeded && elementwise[plan.root],
            ),
            (
                "a root with later nodes consuming nodes up to it",
                5,
                consumed_later,
            ),
            ("early reads", 5, !plan.early.is_empty()),
            ("a custom op", 5, customs),
            ("a custom op on an elementwise result", 5, custom_on_pending),
            ("a custom op on two nodes", 5, custom_on_two),
            ("a tracked [] leaf", 10, tracked_one(0)),
            ("a tracked [1] leaf", 10, tracked_one(1)),
            ("a tracked [1, 1] leaf", 20, tracked_one(2)),
            (
                "a leaf [1, ..] over the first leaf's shape",
                10,
                over_base(1),
            ),
            (
                "a leaf [2, ..] over the first leaf's shape",
                20,
                over_base(2),
            ),
            (
                "a one-element operand of an elementwise op on more",
                10,
                broadcast_one,
            ),
            ("a one-element node broadcast_to more", 100, spread),
        ];
        if tally.is_empty() {
            tally = kinds
                .iter()
                .map(|&(what, share, _)| (what, share, 0))
                .collect();
        }
        for (t, (_, _, has)) in tally.iter_mut().zip(kinds) {
            t.2 += usize::from(has);
        }
        longest = longest.max(plan.steps.len());
        assert!(!plan.steps.is_empty() && plan.steps.len() <= 13, "{plan:?}");
    }
    for row in OPS {
        assert!(names.contains(&row.name), "no plan applies {}", row.name);
        if row.binary().is_some() {
            assert!(
                numbers.contains(&row.name),
                "no plan applies {} to a number",
                row.name
            );
        }
    }
    for (what, share, n) in tally {
        assert!(n >= count / share, "only {n} of {count} plans have {what}");
    }
    assert!(longest >= 12, "the longest plan has {longest} steps");
}

/// One-element operands of a chain: the fused backward reduces their gradient one use
/// at a time in the order the unfused sweep does, and must know which gradients are held
/// as one number (the upstream of a sum, a mean or a one-number seed stays so through
/// add, sub and neg), since the unfused sweep multiplies such a gradient by the count
/// where it sums a laid-out one, and the two differ in the last bit. The random plans
/// rarely chain all of it; these plain plans do, over `[n]` with a tracked one-element
/// leaf `w` of rank 0, 1 or 2: `x + w` and `-(w - x)` under a mean, `(x + w).sum()`
/// given 0.1 or a random seed, `w.broadcast_to(..) + x` under a mean, and
/// `(x * w + w) * w` given each of 8 random seeds.
#[test]
fn one_element_operands_and_one_number_gradients_give_the_same_bits() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for n in [7, 100, 1023, 1025, 4097] {
        for w in [vec![], vec![1], vec![1, 1]] {
            let leaf = |shape: &[usize], seed| LeafSpec {
                shape: shape.to_vec(),
                tracked: true,
                seed,
                specials: 0,
                finite: true,
            };
            let leaves = vec![leaf(&[n], n as u64), leaf(&w, 1)];
            let out = try_broadcast_shape(&[n], &w).unwrap();
            let (xw, one): (&[usize], &[usize]) = (&out, &[]);
            let step = |name, inputs: &[usize]| op_step(op(name), Arg::None, inputs.to_vec());
            let spread = Arg::Shape(out.clone());
            let graphs = [
                (vec![(step("add", &[0, 1]), xw)], End::Mean),
                (
                    vec![(step("sub", &[1, 0]), xw), (step("neg", &[2]), xw)],
                    End::Mean,
                ),
                (
                    vec![(step("add", &[0, 1]), xw), (step("sum", &[2]), one)],
                    End::Full(0.1),
                ),
                (
                    vec![(step("add", &[0, 1]), xw), (step("sum", &[2]), one)],
                    End::Seed(n as u64),
                ),
                (
                    vec![
                        (op_step(op("broadcast_to"), spread, vec![1]), xw),
                        (step("add", &[0, 2]), xw),
                    ],
                    End::Mean,
                ),
            ];
            // Three uses: the order their gradients are added in shows in the last bit
            // of some sums, so with several seeds.
            let three_uses = (0..8).map(|k| {
                let made = vec![
                    (step("mul", &[0, 1]), xw),
                    (step("add", &[2, 1]), xw),
                    (step("mul", &[3, 1]), xw),
                ];
                (made, End::Seed(n as u64 + k))
            });
            for (made, end) in graphs.into_iter().chain(three_uses) {
                let mut shapes: Vec<Vec<usize>> = leaves.iter().map(|l| l.shape.clone()).collect();
                shapes.extend(made.iter().map(|(_, shape)| shape.to_vec()));
                let plan = Plan {
                    leaves: leaves.clone(),
                    steps: made.into_iter().map(|(step, _)| step).collect(),
                    root: shapes.len() - 1,
                    shapes,
                    end,
                    early: vec![],
                };
                let found = fused_vs_unfused(|tape| plan_graph(tape, &plan));
                if !found.is_empty() {
                    failures.push(format!("{plan:?}:\n    {}", found.join("\n    ")));
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 5 * 3 * 13);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---- 3. the order values are read in --------------------------------------------------

/// When the graph of [`read_order_graph`] reads its values.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Reads {
    /// Each node as soon as it is recorded (before the ops that consume it).
    AsRecorded,
    /// All nodes once the graph is recorded, first to last, before backward.
    Forward,
    /// All nodes once the graph is recorded, last to first, before backward.
    Backward,
    /// None before backward.
    AfterSweep,
}

const READS: [Reads; 4] = [
    Reads::AsRecorded,
    Reads::Forward,
    Reads::Backward,
    Reads::AfterSweep,
];

/// The nodes of a graph, each read as soon as it is recorded if `reads` says so.
struct Recorder<'t> {
    reads: Reads,
    nodes: Vec<(&'static str, Var<'t>)>,
    /// The value read before backward, by node.
    first: Vec<Option<Tensor>>,
}

impl<'t> Recorder<'t> {
    fn node(&mut self, name: &'static str, v: Var<'t>) -> Var<'t> {
        let now = self.reads == Reads::AsRecorded;
        self.first.push(now.then(|| v.value()));
        self.nodes.push((name, v));
        v
    }
}

/// Chains of elementwise ops over an `[n]` and a `[]` leaf and a constant, a node with
/// three consumers, a reduction in the middle broadcast back: every node read as
/// `reads` says, then every node again after backward. The two reads of a node must give
/// the same bits (the test fails here otherwise); the outcome holds the second, so the
/// outcomes of all orders compare.
fn read_order_graph(tape: &Tape, n: usize, reads: Reads) -> Outcome {
    let mut rng = Rng(n as u64);
    // Finite: one NaN would make s, and so every node after it, NaN.
    let x = operand(&mut rng, &[n], &finite(&SPECIALS), Domain::Signed);
    let c = rng.tensor(&[n], -1.0, 1.0);
    let r = &mut Recorder {
        reads,
        nodes: Vec::new(),
        first: Vec::new(),
    };
    let x = r.node("x", tape.var(x));
    let b = r.node("b", tape.var(Tensor::scalar(0.5)));
    let c = r.node("c", tape.constant(c));
    let a = r.node("a = x * 1.5 + b", x * 1.5 + b);
    let e = r.node("e = a.exp() - c", a.exp() - c);
    let m = r.node("m = a.max(0.0)", a.max(0.0));
    let s = r.node("s = (e * m).sum()", (e * m).sum());
    let k = r.node("k = a / s", a / s);
    let loss = r.node("loss = (k.tanh() + m).sum()", (k.tanh() + m).sum());
    let order: Vec<usize> = match reads {
        Reads::Forward => (0..r.nodes.len()).collect(),
        Reads::Backward => (0..r.nodes.len()).rev().collect(),
        Reads::AsRecorded | Reads::AfterSweep => vec![],
    };
    for i in order {
        r.first[i] = Some(r.nodes[i].1.value());
    }
    let grads = loss.backward();
    let mut out = Outcome::default();
    for ((name, v), first) in r.nodes.iter().zip(&r.first) {
        out.value(*name, *v);
        let after = &out.values[out.values.len() - 1].1;
        if let Some(d) = first
            .as_ref()
            .and_then(|first| bit_difference(after, first))
        {
            panic!(
                "n = {n}, {reads:?}, fused: {}: {name} after backward differs from the \
                 value read before: {d}",
                tape.fuses_from().is_some()
            );
        }
    }
    let expected = match reads {
        Reads::AfterSweep => 0,
        _ => r.nodes.len(),
    };
    assert_eq!(
        r.first.iter().flatten().count(),
        expected,
        "{reads:?}: reads"
    );
    for (name, leaf) in [("x", x), ("b", b)] {
        out.grads.push((name.to_string(), grads.wrt(leaf).clone()));
    }
    out
}

/// Reading a value early (before the ops that consume it are recorded), once the graph
/// is recorded (first to last or last to first), or only after backward gives the same
/// bits, on either tape, as reading it after backward on the unfused one; so do the
/// gradients. Sizes around the powers of two.
#[test]
fn reading_values_early_late_or_twice_in_any_order_gives_the_same_bits() {
    let mut failures = Vec::new();
    for n in [1, 5, 1023, 1024, 1025, 2049, 4099] {
        let want = read_order_graph(&Tape::unfused(), n, Reads::AfterSweep);
        assert_eq!(want.values.len(), 9);
        for reads in READS {
            for tape in [Tape::fused(), Tape::unfused()] {
                let got = read_order_graph(&tape, n, reads);
                for d in differences(&got, &want) {
                    let fused = tape.fuses_from().is_some();
                    failures.push(format!("n = {n}, {reads:?}, fused: {fused}: {d}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---- 4. the hinge loss at N = 10^6 ----------------------------------------------------

const N: usize = 1_000_000;

/// The seed's hinge loss as written there.
fn seed_hinge<'t>(p: Var<'t>, t: Var<'t>) -> Var<'t> {
    ((1.0 - p * t).max(0.0)).sum() / N as f64
}

/// Predictions and targets: targets mostly ±1 labels, one in five a real number (where
/// numpy's `-t / N` and the tape's `-(1 / N) * t` can round apart); one prediction in
/// seven at the kink `p * t == 1`.
fn hinge_inputs() -> (Tensor, Tensor) {
    let mut rng = Rng(0x41_6e6e);
    let mut p = Vec::with_capacity(N);
    let mut t = Vec::with_capacity(N);
    for i in 0..N {
        let sign = if rng.next_u64() & 1 == 0 { 1.0 } else { -1.0 };
        let target = match i % 5 {
            0 => sign * rng.uniform(0.1, 3.0),
            _ => sign,
        };
        t.push(target);
        p.push(match i % 7 {
            0 => 1.0 / target,
            _ => rng.uniform(-2.0, 2.0),
        });
    }
    (Tensor::from(p), Tensor::from(t))
}

/// The loss and `d loss / d p` on `tape`.
fn hinge_on(tape: &Tape, loss: Binary) -> (Tensor, Tensor) {
    let (pred, target) = hinge_inputs();
    let p = tape.var(pred);
    let t = tape.constant(target);
    let l = loss(p, t);
    let grads = l.backward();
    (l.value(), grads.wrt(p).clone())
}

/// The hinge loss over 10^6 elements, as the seed writes it and as `losses::hinge`
/// does: the same bits fused and unfused; the loss is the pairwise sum of the
/// hinge terms over N, and the gradient the closed form `np.where(p t < 1, -t / N, 0)`
/// with `-t / N` rounded as the chain rule rounds it, `-(1 / N) * t`, and equal to
/// numpy's `-t / N` (`hinge_grad_closed_form`) wherever the two roundings agree.
#[test]
fn hinge_loss_at_a_million_elements_is_the_same_fused_and_unfused_and_its_closed_form() {
    let (p, t) = hinge_inputs();
    let n = N as f64;
    let terms: Vec<f64> = p
        .data()
        .iter()
        .zip(t.data())
        .map(|(p, t)| {
            let z = 1.0 - p * t;
            if z > 0.0 { z } else { 0.0 }
        })
        .collect();
    let loss = pairwise_sum(&terms) / n;
    let closed_form: Vec<f64> = p
        .data()
        .iter()
        .zip(t.data())
        .map(|(p, &t)| if p * t < 1.0 { -(1.0 / n) * t } else { 0.0 })
        .collect();
    let closed_form = Tensor::from(closed_form);
    let numpy = hinge_grad_closed_form(&p, &t);
    let ties = p
        .data()
        .iter()
        .zip(t.data())
        .filter(|(p, t)| *p * *t == 1.0);
    assert!(ties.count() > N / 10, "too few ties");
    let spellings: [(&str, Binary); 2] = [
        ("((1.0 - p * t).max(0.0)).sum() / n", seed_hinge),
        ("losses::hinge", hinge),
    ];
    for (name, spelling) in spellings {
        let (fused_loss, fused_grad) = hinge_on(&Tape::new(), spelling);
        let (unfused_loss, unfused_grad) = hinge_on(&Tape::unfused(), spelling);
        for (what, loss_got, grad) in [
            ("fused", &fused_loss, &fused_grad),
            ("unfused", &unfused_loss, &unfused_grad),
        ] {
            assert_eq!(
                loss_got.shape(),
                &[] as &[usize],
                "{name}, {what}: loss shape"
            );
            let got = loss_got.item();
            assert!(
                same_bits(got, loss),
                "{name}, {what}: loss {got:?}, pairwise sum / N {loss:?}"
            );
            if let Some(d) = bit_difference(grad, &closed_form) {
                panic!("{name}, {what}: gradient against -(1 / N) * t: {d}");
            }
        }
        if let Some(d) = bit_difference(&fused_grad, &unfused_grad) {
            panic!("{name}: gradient fused against unfused: {d}");
        }
        let (mut exact, mut rounded) = (0, 0);
        for (i, (&g, &t)) in fused_grad.data().iter().zip(t.data()).enumerate() {
            if scaling_is_exact(t, n) {
                exact += 1;
                let want = numpy.data()[i];
                assert!(
                    same_bits(g, want),
                    "{name}: element {i}: {g:?}, numpy {want:?}"
                );
            } else {
                rounded += 1;
            }
        }
        // Both kinds of element are there, so both comparisons check something.
        assert!(
            exact > N / 2 && rounded > 1000,
            "{exact} exact, {rounded} rounded"
        );
    }
}

// ---- 5. custom ops' backward, misuse, and Tape::new's threshold -----------------------

/// `tape`, kept for the rest of the run: a custom op's backward is `'static`, so a var it
/// reads, or a tape it prints, must be `'static` too.
fn leaked(tape: Tape) -> &'static Tape {
    Box::leak(Box::new(tape))
}

/// A custom op whose backward, run by the sweep (the tape busy), reads values of a
/// pending node, of its own input and of a leaf, and prints the tape, a var and its DOT;
/// what it printed is returned beside the outcome. `p` is laid out by the custom op, `q`
/// stays pending until read after backward.
fn peeking_graph(tape: &'static Tape, n: usize) -> (Outcome, Vec<String>) {
    let printed = Rc::new(RefCell::new(Vec::new()));
    let mut rng = Rng(n as u64);
    let x = tape.var(rng.tensor(&[n], -2.0, 2.0));
    let w = tape.var(Tensor::scalar(0.5));
    let p = (x * 2.0).exp();
    let q = p.sin() + x * w;
    // A mean nothing reads: unsummed on a fused tape while the tape is printed.
    let s = (x * w + 1.0).mean();
    let seen = Rc::clone(&printed);
    let c = tape.custom(
        "peek",
        &[p],
        |x| x[0].clone(),
        move |_, _, up| {
            let (q_now, p_now, x_now) = (q.value(), p.value(), x.value());
            // (the unsummed mean, computed and not kept: the tape is busy)
            let s_now = s.value();
            let mut seen = seen.borrow_mut();
            seen.push(format!("{tape}"));
            seen.push(format!("{q:?}"));
            seen.push(q.to_dot(None));
            seen.push(format!("{q_now} {p_now} {x_now} {s_now}"));
            let g = |v: f64, u: f64| u * v;
            vec![broadcast_zip(&broadcast_zip(&q_now, &p_now, g), up, g)]
        },
    );
    let loss = (c * q).sum() + p.mean();
    let grads = loss.backward();
    let mut out = Outcome::default();
    let printed_after = format!("{tape}");
    for (what, v) in [
        ("x", x),
        ("p", p),
        ("q", q),
        ("c", c),
        ("loss", loss),
        ("s", s),
    ] {
        out.value(what, v);
    }
    for (what, leaf) in [("x", x), ("w", w)] {
        out.grads.push((what.into(), grads.wrt(leaf).clone()));
    }
    printed.borrow_mut().push(printed_after);
    assert_eq!(printed.borrow().len(), 5, "the custom backward ran once");
    let printed = printed.borrow().clone();
    (out, printed)
}

/// `value()`, `Display`, `Debug` and `to_dot` called from a custom op's backward (the
/// tape busy with the sweep, a pending value computed and not kept) give what the
/// unfused tape gives, to the bit and to the character, and change no value or
/// gradient; sizes below, at and past a block.
#[test]
fn a_custom_backward_reading_values_and_printing_the_tape_sees_the_same_fused_and_unfused() {
    for n in [3, 256, 1025] {
        let (fused, fused_printed) = peeking_graph(leaked(Tape::fused()), n);
        let (unfused, unfused_printed) = peeking_graph(leaked(Tape::unfused()), n);
        let found = differences(&fused, &unfused);
        assert!(found.is_empty(), "n = {n}: {}", found.join("\n"));
        for (f, u) in fused_printed.iter().zip(&unfused_printed) {
            assert_eq!(f, u, "n = {n}: printed from the custom backward");
        }
    }
}

/// A custom backward reading the loss it is part of, a mean not yet summed while the
/// sweep runs (the sweep sums it and keeps the value after): the same bits as the
/// unfused tape, read there and after; on `Tape::fused` and, past 2^15 and 2^18
/// elements with the hinge, on `Tape::new`.
#[test]
fn a_custom_backward_reading_the_unsummed_loss_sees_its_value() {
    type Seen = Rc<RefCell<Vec<u64>>>;
    fn run(tape: &'static Tape, n: usize, use_hinge: bool) -> (Vec<u64>, Outcome) {
        let mut rng = Rng(n as u64);
        let x = tape.var(rng.tensor(&[n], -2.0, 2.0));
        let t = tape.constant(rng.tensor(&[n], -1.0, 1.0));
        let slot: Rc<RefCell<Option<Var<'static>>>> = Rc::default();
        let seen: Seen = Rc::default();
        let (from, to) = (Rc::clone(&slot), Rc::clone(&seen));
        let c = tape.custom(
            "peek",
            &[x],
            |x| x[0].clone(),
            move |_, _, up| {
                let loss = from.borrow().expect("the loss is recorded");
                to.borrow_mut().push(loss.value().item().to_bits());
                vec![up.clone()]
            },
        );
        let loss = match use_hinge {
            true => hinge(c, t),
            false => (c * 2.0 + t).mean(),
        };
        *slot.borrow_mut() = Some(loss);
        let grads = loss.backward();
        let mut out = Outcome::default();
        out.value("loss", loss);
        out.grads.push(("x".into(), grads.wrt(x).clone()));
        let seen = seen.borrow().clone();
        (seen, out)
    }
    for (n, use_hinge) in [
        (1000, false),
        (1000, true),
        ((1 << 15) + 3, true),
        ((1 << 18) + 3, true),
    ] {
        let (want_seen, want) = run(leaked(Tape::unfused()), n, use_hinge);
        assert_eq!(want_seen.len(), 1);
        for tape in [Tape::fused(), Tape::new()] {
            let (seen, got) = run(leaked(tape), n, use_hinge);
            assert_eq!(
                seen, want_seen,
                "n = {n}: the loss read in the custom backward"
            );
            let found = differences(&got, &want);
            assert!(found.is_empty(), "n = {n}: {}", found.join("\n"));
        }
    }
}

/// A pending `[4]` node on a fused tape (computed on an unfused one): `(x * 1.5).exp()`.
fn pending(tape: &Tape) -> Var<'_> {
    (tape.var(Tensor::from(vec![0.5, -1.0, 2.0, 0.0])) * 1.5).exp()
}

/// A custom identity on `x` whose backward is `backward` (given the tape and upstream).
fn custom_backward(
    tape: &'static Tape,
    x: Var<'static>,
    backward: fn(&'static Tape, &Tensor) -> Vec<Tensor>,
) -> Var<'static> {
    tape.custom(
        "custom",
        &[x],
        |x| x[0].clone(),
        move |_, _, up| backward(tape, up),
    )
}

/// Misuse panics with the same message on both tapes, with a pending operand on the
/// fused one: shapes that do not fit (add, matmul, reshape, broadcast_to, select), an
/// axis or index out of range, `backward` of many elements, a seed of the wrong shape,
/// a custom backward giving too few gradients or one of the wrong shape, recording or
/// calling `backward` inside a custom op, and `wrt` of an intermediate result.
#[test]
fn misuse_panics_with_the_same_message_fused_and_unfused() {
    type Case = (&'static str, fn(&'static Tape));
    let cases: [Case; 15] = [
        ("[4] + [3]", |t| {
            let _ = pending(t) + t.var(Tensor::from(vec![1.0; 3]));
        }),
        ("matmul of [4] and [3]", |t| {
            let _ = pending(t).matmul(t.var(Tensor::from(vec![1.0; 3])));
        }),
        ("reshape to [3]", |t| {
            let _ = pending(t).reshape(&[3]);
        }),
        ("broadcast_to [3]", |t| {
            let _ = pending(t).broadcast_to(&[3]);
        }),
        ("select with a [3] condition", |t| {
            let _ = select(&Tensor::zeros(&[3]), pending(t), pending(t));
        }),
        ("sum_axis(1) of [4]", |t| {
            let _ = pending(t).sum_axis(1);
        }),
        ("index 7 of [4]", |t| {
            let _ = pending(t).index_select(0, &[7]);
        }),
        ("backward of [4]", |t| {
            let _ = pending(t).backward();
        }),
        ("a [3] seed for [4]", |t| {
            let _ = pending(t).backward_with(Tensor::zeros(&[3]));
        }),
        ("no gradient from a custom backward", |t| {
            let _ = custom_backward(t, pending(t), |_, _| vec![])
                .sum()
                .backward();
        }),
        ("a [3] gradient from a custom backward", |t| {
            let y = custom_backward(t, pending(t), |_, _| vec![Tensor::zeros(&[3])]);
            let _ = y.sum().backward();
        }),
        ("recording inside a custom backward", |t| {
            let y = custom_backward(t, pending(t), |t, up| vec![t.var(up.clone()).value()]);
            let _ = y.sum().backward();
        }),
        ("backward inside a custom backward", |t| {
            let y = custom_backward(t, pending(t), |t, up| {
                let _ = t.var(Tensor::scalar(1.0)).backward();
                vec![up.clone()]
            });
            let _ = y.sum().backward();
        }),
        ("recording inside a custom forward", |t| {
            let _ = t.custom(
                "f",
                &[pending(t)],
                move |x| t.var(x[0].clone()).value(),
                |_, _, up| vec![up.clone()],
            );
        }),
        ("wrt of an intermediate result", |t| {
            let p = pending(t);
            let _ = p.sum().backward().wrt(p).clone();
        }),
    ];
    for (what, case) in cases {
        let [fused, unfused] =
            [Tape::fused(), Tape::unfused()].map(|tape| panic_message(|| case(leaked(tape))));
        assert_eq!(fused, unfused, "{what}");
        assert!(fused.starts_with("tapegrad: "), "{what}: {fused}");
    }
}

/// [`Tape::new`] fuses only cheap ops, from 2^15 elements, lays a pending value out at
/// its second use, and below 2^18 lays out a pending value's whole cone when it lays
/// the value out. Just below, at and past both sizes, a graph of cheap chains broken by
/// other ops, with a tracked `[]` and `[1]` weight and a node used three times, gives
/// the same bits on it and on [`Tape::fused`] as unfused; so does a graph read in every
/// order before `backward`.
#[test]
fn tape_new_at_its_thresholds_gives_the_same_bits_as_unfused() {
    let graph = |tape: &Tape, n: usize| {
        let mut rng = Rng(n as u64);
        let x = tape.var(rng.tensor(&[n], -2.0, 2.0));
        let c = tape.constant(rng.tensor(&[n], -1.0, 1.0));
        let w = tape.var(Tensor::scalar(0.7));
        let b = tape.var(Tensor::from(vec![-0.25]));
        let a = x * w - c;
        let h = (a + b).tanh();
        let m = a.max(h) * a;
        let r = (m - x).abs().relu().powf(1.5) + b;
        let loss = r.mean() + (h * w).sum();
        let grads = loss.backward();
        let mut out = Outcome::default();
        for (what, v) in [("a", a), ("h", h), ("m", m), ("r", r), ("loss", loss)] {
            out.value(what, v);
        }
        for (what, leaf) in [("x", x), ("w", w), ("b", b)] {
            out.grads.push((what.into(), grads.wrt(leaf).clone()));
        }
        out
    };
    for n in [
        (1 << 15) - 1,
        1 << 15,
        (1 << 15) + 3,
        (1 << 18) - 1,
        1 << 18,
    ] {
        let want = graph(&Tape::unfused(), n);
        for tape in [Tape::new(), Tape::fused()] {
            let found = differences(&graph(&tape, n), &want);
            let fuses = tape.fuses_from();
            assert!(
                found.is_empty(),
                "n = {n}, fuses from {fuses:?}: {}",
                found.join("\n")
            );
        }
        let want = read_order_graph(&Tape::unfused(), n, Reads::AfterSweep);
        for reads in READS {
            let found = differences(&read_order_graph(&Tape::new(), n, reads), &want);
            assert!(found.is_empty(), "n = {n}, {reads:?}: {}", found.join("\n"));
        }
    }
}

// ---- 8. passes split among threads ----------------------------------------------------

/// A pass over a large region splits into parts, one per thread (`set_threads`), each
/// summed where numpy's pairwise sum splits: the same bits as one thread and as the
/// unfused engine. Sizes that split into 2 parts and into up to 8 (lengths that are not
/// multiples of 8), every read order (so sums are taken in the gradients' pass, in a
/// pass of their own, and of inputs already laid out), one-element tracked operands
/// (their gradients reduced per part), and `Tape::new`'s cheap-op regions.
#[test]
fn passes_split_among_threads_give_the_same_bits_as_one_thread_and_unfused() {
    assert!(threads() >= 1);
    let mut failures = Vec::new();
    for n in [(1 << 18) + 5, (1 << 20) + 37] {
        set_threads(1);
        let want = read_order_graph(&Tape::unfused(), n, Reads::AfterSweep);
        for count in [1, 2, 3, 8] {
            set_threads(count);
            assert_eq!(threads(), count);
            for reads in READS {
                for tape in [Tape::fused(), Tape::new()] {
                    let got = read_order_graph(&tape, n, reads);
                    for d in differences(&got, &want) {
                        let from = tape.fuses_from();
                        failures.push(format!(
                            "n = {n}, {count} threads, {reads:?}, fuses from {from:?}: {d}"
                        ));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The hinge at 10^6 on 1, 2 and 4 threads, the loss read before or after `backward`:
/// the same bits as the unfused engine (the sum of its terms is split across threads at
/// the top levels of the pairwise recursion).
#[test]
fn the_hinge_split_among_threads_gives_the_same_bits() {
    set_threads(1);
    let want = hinge_on(&Tape::unfused(), hinge);
    for count in [1, 2, 4] {
        set_threads(count);
        let got = hinge_on(&Tape::new(), hinge);
        assert_eq!(
            got.0.data()[0].to_bits(),
            want.0.data()[0].to_bits(),
            "{count}"
        );
        let d = bit_difference(&got.1, &want.1);
        assert!(d.is_none(), "{count} threads: {d:?}");
        let tape = Tape::new();
        let (pred, target) = hinge_inputs();
        let p = tape.var(pred);
        let loss = hinge(p, tape.constant(target));
        let value = loss.value();
        let grads = loss.backward();
        assert_eq!(value.data()[0].to_bits(), want.0.data()[0].to_bits());
        let d = bit_difference(grads.wrt(p), &want.1);
        assert!(d.is_none(), "{count} threads, value first: {d:?}");
    }
}

/// `TAPEGRAD_THREADS` sets the default count, read once per process: this test runs
/// itself again in a child process with the variable set, where the child checks it.
#[test]
fn tapegrad_threads_sets_the_default_thread_count() {
    const NAME: &str = "tapegrad_threads_sets_the_default_thread_count";
    if let Ok(count) = std::env::var("TAPEGRAD_THREADS") {
        // (the child, or a run with the variable set: a value that is not a positive
        // number leaves the default)
        match count.trim().parse::<usize>() {
            Ok(count) if count > 0 => assert_eq!(threads(), count),
            _ => assert!(threads() >= 1),
        }
        return;
    }
    let exe = std::env::current_exe().expect("the test binary");
    let child = std::process::Command::new(exe)
        .args([NAME, "--exact", "--test-threads=1"])
        .env("TAPEGRAD_THREADS", "3")
        .output()
        .expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&child.stdout);
    assert!(child.status.success(), "{stdout}");
    assert!(
        stdout.contains("1 passed"),
        "the child ran the test: {stdout}"
    );
}
