//! Property tests over the op table (`tests/common/ops.rs`): for every op, on random
//! broadcast-compatible shapes and random values, the tape's gradient has its operand's
//! shape and is the derivative of the tape's own forward (central finite differences)
//! and the table's derivative (to rounding); it does not depend on operand order where
//! the op commutes (for max/min at ties too), and does not change when a reshape round
//! trip is spliced in.
//!
//! Every loss is `sum(op(inputs) * w)` with `w` a random constant whose shape broadcasts
//! to the output: a full-shape `w` sends a non-uniform upstream into the op, a smaller
//! one (down to rank 0) a partly or fully uniform one, which the engine keeps unexpanded.
//!
//! Each property runs `PROPTEST_CASES` cases (256 by default) for every op it applies
//! to; a failure names the op and the shrunk case.

mod common;

use common::ops::{Arg, Domain, Form, OPS, Op, Rule};
use common::{broadcast_shape, broadcast_to, broadcast_zip, close, fd_grad_with_step};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use std::fmt;
use tapegrad::{Tape, Tensor, Var};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(256),
        // No regressions file: the cases the properties found are kept below as plain
        // tests instead.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Central-difference step (relative). Inputs are in ±[0.5, 3], so this is about 1e-5.
const H: f64 = 1e-5;
/// `max`/`min` operands closer than this are treated as a kink and the case is skipped.
const KINK_GAP: f64 = 1e-3;

#[derive(Clone)]
struct Case {
    op: &'static Op,
    inputs: Vec<Tensor>,
    arg: Arg,
    weight: Tensor,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} {:?}", self.op.name, self.arg)?;
        for (i, x) in self.inputs.iter().enumerate() {
            writeln!(f, "  input {i}: shape {:?} data {:?}", x.shape(), x.data())?;
        }
        write!(
            f,
            "  weight: shape {:?} data {:?}",
            self.weight.shape(),
            self.weight.data()
        )
    }
}

/// Run `check` on random cases of every op of the table that `applies` to, cases drawn
/// by `strategy`; fail listing each op whose property failed, with its shrunk case.
fn for_every_op(
    applies: impl Fn(&Op) -> bool,
    strategy: impl Fn(&'static Op) -> BoxedStrategy<Case>,
    check: impl Fn(&Case) -> Result<(), TestCaseError>,
) {
    let ops: Vec<&'static Op> = OPS.iter().filter(|op| applies(op)).collect();
    assert!(
        !ops.is_empty(),
        "the property applies to no op of the table"
    );
    let failures: Vec<String> = ops
        .iter()
        .filter_map(|&op| {
            let mut runner = TestRunner::new(config());
            let result = runner.run(&strategy(op), |case| check(&case));
            result.err().map(|e| format!("{}: {e}", op.name))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// ---- the expressions under test ---------------------------------------------------

/// `x.reshape([len]).reshape(shape of x)`.
fn round_trip(x: Var<'_>) -> Var<'_> {
    let shape = x.shape();
    let len = shape.iter().product();
    x.reshape(&[len]).reshape(&shape)
}

#[derive(Clone, Copy, PartialEq)]
enum Splice {
    Nothing,
    RoundTripOperands,
    RoundTripResult,
}

/// `sum(op(inputs) * weight)`, with a reshape round trip spliced in where asked.
fn loss<'t>(tape: &'t Tape, case: &Case, inputs: &[Var<'t>], splice: Splice) -> Var<'t> {
    let inputs: Vec<Var<'t>> = if splice == Splice::RoundTripOperands {
        inputs.iter().map(|&x| round_trip(x)).collect()
    } else {
        inputs.to_vec()
    };
    let mut out = case.op.apply(&inputs, &case.arg);
    if splice == Splice::RoundTripResult {
        out = round_trip(out);
    }
    (out * tape.constant(case.weight.clone())).sum()
}

/// The loss value and the gradient with respect to every input.
fn value_and_grads(case: &Case, splice: Splice) -> (f64, Vec<Tensor>) {
    let tape = Tape::new();
    let vars: Vec<Var<'_>> = case.inputs.iter().map(|x| tape.var(x.clone())).collect();
    let l = loss(&tape, case, &vars, splice);
    let value = l.value().item();
    let grads = l.backward();
    (value, vars.iter().map(|&v| grads.wrt(v).clone()).collect())
}

/// The loss value at `inputs`, all recorded as constants.
fn value_at(case: &Case, inputs: &[Tensor]) -> f64 {
    let tape = Tape::new();
    let vars: Vec<Var<'_>> = inputs.iter().map(|x| tape.constant(x.clone())).collect();
    loss(&tape, case, &vars, Splice::Nothing).value().item()
}

// ---- the properties -------------------------------------------------------------------

fn check_central_differences(case: &Case) -> Result<(), TestCaseError> {
    let (_, grads) = value_and_grads(case, Splice::Nothing);
    for (i, x) in case.inputs.iter().enumerate() {
        prop_assert_eq!(grads[i].shape(), x.shape(), "gradient shape of input {}", i);
        let fd = fd_grad_with_step(
            |xi| {
                let mut inputs = case.inputs.clone();
                inputs[i] = xi.clone();
                value_at(case, &inputs)
            },
            x,
            H,
        );
        for (j, (&tape, &fd)) in grads[i].data().iter().zip(fd.data()).enumerate() {
            prop_assert!(
                close(tape, fd, 1e-6),
                "input {} element {}: tape gradient {} but central difference {}",
                i,
                j,
                tape,
                fd
            );
        }
    }
    Ok(())
}

/// The tape's gradient is the table's derivative for the upstream `w` (broadcast to the
/// output), up to the rounding of sums taken in another order.
fn check_table_derivative(case: &Case) -> Result<(), TestCaseError> {
    let (_, grads) = value_and_grads(case, Splice::Nothing);
    let out = case.op.value(&case.inputs, &case.arg);
    let upstream = broadcast_to(&case.weight, out.shape());
    let want = case
        .op
        .vjp(&case.inputs, &case.arg, &upstream, [true, true]);
    for (i, (g, w)) in grads.iter().zip(&want).enumerate() {
        prop_assert_eq!(g.shape(), w.shape(), "gradient shape of input {}", i);
        for (j, (&g, &w)) in g.data().iter().zip(w.data()).enumerate() {
            prop_assert!(
                close(g, w, 1e-10),
                "input {} element {}: tape gradient {} but the table says {}",
                i,
                j,
                g,
                w
            );
        }
    }
    Ok(())
}

fn bits(x: &Tensor) -> Vec<u64> {
    x.data().iter().map(|v| v.to_bits()).collect()
}

/// Splicing a reshape round trip into the loss changes no value and no gradient.
///
/// Round-tripping the operands changes nothing at all, bit for bit. Round-tripping the
/// result makes the upstream reaching the op full-size where it may have been kept
/// smaller (a `[3, 1]` weight on a `[3, 4]` output), so a broadcast operand's gradient is
/// summed from 4 copies instead of scaled by 4: equal up to rounding, which is all this
/// then asks (a tolerance far below any factor error).
fn check_splice_changes_nothing(case: &Case, splice: Splice) -> Result<(), TestCaseError> {
    let (value, grads) = value_and_grads(case, Splice::Nothing);
    let (spliced_value, spliced_grads) = value_and_grads(case, splice);
    prop_assert_eq!(spliced_value.to_bits(), value.to_bits(), "value");
    for (i, (s, g)) in spliced_grads.iter().zip(&grads).enumerate() {
        prop_assert_eq!(s.shape(), g.shape(), "gradient shape of input {}", i);
        let same = if splice == Splice::RoundTripOperands {
            bits(s) == bits(g)
        } else {
            s.data()
                .iter()
                .zip(g.data())
                .all(|(x, y)| (x - y).abs() <= 1e-10 + 1e-12 * y.abs())
        };
        prop_assert!(
            same,
            "gradient of input {}: {:?} with the round trip, {:?} without",
            i,
            s.data(),
            g.data()
        );
    }
    Ok(())
}

/// `op(a, b)` and `op(b, a)` give the same value and each operand the same gradient.
fn check_operand_order_irrelevant(case: &Case) -> Result<(), TestCaseError> {
    let swapped = Case {
        inputs: vec![case.inputs[1].clone(), case.inputs[0].clone()],
        ..case.clone()
    };
    let (value, grads) = value_and_grads(case, Splice::Nothing);
    let (swapped_value, swapped_grads) = value_and_grads(&swapped, Splice::Nothing);
    prop_assert_eq!(swapped_value.to_bits(), value.to_bits(), "value");
    prop_assert_eq!(bits(&swapped_grads[1]), bits(&grads[0]), "gradient of a");
    prop_assert_eq!(bits(&swapped_grads[0]), bits(&grads[1]), "gradient of b");
    Ok(())
}

// ---- strategies ---------------------------------------------------------------------

/// Values of `domain`: magnitudes in [0.5, 3], away from 0 (for `ln`, `/` and the kinks
/// of `abs` and `relu`) and small enough for `exp`.
fn values(domain: Domain) -> BoxedStrategy<f64> {
    (0.5f64..3.0, any::<bool>())
        .prop_map(move |(m, negative)| domain.pick(m, negative))
        .boxed()
}

fn signed() -> BoxedStrategy<f64> {
    values(Domain::Signed)
}

/// Few distinct values, so that max/min operands tie in many elements.
fn tie_prone() -> BoxedStrategy<f64> {
    prop::sample::select(vec![-2.0, -1.0, 0.5, 1.0, 2.5]).boxed()
}

/// An output shape: rank 0 to 3, dims 1 to 5.
fn output_shape() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..=5, 0..=3)
}

/// A shape that broadcasts to `out`: some dims set to 1, some leading dims dropped.
fn operand_shape(out: Vec<usize>) -> impl Strategy<Value = Vec<usize>> {
    let rank = out.len();
    (
        prop::collection::vec(prop::bool::weighted(0.3), rank),
        0..=rank,
    )
        .prop_map(move |(ones, dropped)| {
            (dropped..rank)
                .map(|d| if ones[d] { 1 } else { out[d] })
                .collect()
        })
}

fn tensor(shape: Vec<usize>, values: BoxedStrategy<f64>) -> impl Strategy<Value = Tensor> {
    let n: usize = shape.iter().product();
    prop::collection::vec(values, n).prop_map(move |data| Tensor::new(data, &shape).unwrap())
}

/// A weight whose shape broadcasts to `out` (often `out` itself).
fn weight(out: Vec<usize>) -> impl Strategy<Value = Tensor> {
    let full = Just(out.clone()).boxed();
    let smaller = operand_shape(out).boxed();
    prop_oneof![full, smaller].prop_flat_map(|shape| tensor(shape, (-2.0f64..2.0).boxed()))
}

/// The smallest `|a - b|` over all pairs of elements the broadcast puts together.
fn min_gap(a: &Tensor, b: &Tensor) -> f64 {
    let gaps = broadcast_zip(a, b, |p, q| (p - q).abs());
    gaps.data().iter().fold(f64::INFINITY, |m, &g| m.min(g))
}

/// An elementwise binary op on random broadcast-compatible operands; kept away from
/// the kink if `apart` (the operands of max/min).
fn binary(
    op: &'static Op,
    a_values: BoxedStrategy<f64>,
    b_values: BoxedStrategy<f64>,
    apart: bool,
) -> BoxedStrategy<Case> {
    output_shape()
        .prop_flat_map(|out| (operand_shape(out.clone()), operand_shape(out)))
        .prop_flat_map(move |(sa, sb)| {
            let out = broadcast_shape(&sa, &sb);
            (
                tensor(sa, a_values.clone()),
                tensor(sb, b_values.clone()),
                weight(out),
            )
        })
        .prop_map(move |(a, b, weight)| Case {
            op,
            inputs: vec![a, b],
            arg: Arg::None,
            weight,
        })
        .prop_filter("max/min operands too close to a tie", move |case| {
            !apart || min_gap(&case.inputs[0], &case.inputs[1]) > KINK_GAP
        })
        .boxed()
}

/// An op of one operand that keeps its shape, with `arg`.
fn unary(op: &'static Op, values: BoxedStrategy<f64>, arg: Arg) -> BoxedStrategy<Case> {
    output_shape()
        .prop_flat_map(move |shape| (tensor(shape.clone(), values.clone()), weight(shape)))
        .prop_map(move |(x, weight)| Case {
            op,
            inputs: vec![x],
            arg: arg.clone(),
            weight,
        })
        .boxed()
}

/// An op of one operand and a number: each of the table's `p`s, values from its domain.
fn with_param(op: &'static Op, params: &'static [(f64, Domain)]) -> BoxedStrategy<Case> {
    prop::sample::select(params)
        .prop_flat_map(move |(p, domain)| unary(op, values(domain), Arg::Param(p)))
        .boxed()
}

/// A reduction of a random tensor to one number.
fn reduce(op: &'static Op) -> BoxedStrategy<Case> {
    output_shape()
        .prop_flat_map(|shape| (tensor(shape, signed()), weight(vec![])))
        .prop_map(move |(x, weight)| Case {
            op,
            inputs: vec![x],
            arg: Arg::None,
            weight,
        })
        .boxed()
}

/// A random tensor of rank 1 to 3 and one of its axes.
fn shape_and_axis() -> impl Strategy<Value = (Vec<usize>, usize)> {
    prop::collection::vec(1usize..=5, 1..=3)
        .prop_flat_map(|shape| (Just(shape.clone()), 0..shape.len()))
}

/// The smallest gap between two elements of one lane along `axis` (inf if no lane has
/// two elements).
fn min_lane_gap(x: &Tensor, axis: usize) -> f64 {
    let shape = x.shape();
    let (len, inner) = (shape[axis], shape[axis + 1..].iter().product::<usize>());
    let mut gap = f64::INFINITY;
    for (i, &v) in x.data().iter().enumerate() {
        let k = i / inner % len;
        for j in 1..len - k {
            gap = gap.min((v - x.data()[i + j * inner]).abs());
        }
    }
    gap
}

/// A reduction over one axis of a random tensor of rank 1 to 3 (drawn from `values`);
/// kept away from ties within a lane if `apart` (max_axis, min_axis).
fn axis(op: &'static Op, values: BoxedStrategy<f64>, apart: bool) -> BoxedStrategy<Case> {
    shape_and_axis()
        .prop_flat_map(move |(shape, axis)| {
            let mut out = shape.clone();
            out.remove(axis);
            (tensor(shape, values.clone()), Just(axis), weight(out))
        })
        .prop_map(move |(x, axis, weight)| Case {
            op,
            inputs: vec![x],
            arg: Arg::Axis(axis),
            weight,
        })
        .prop_filter("two elements of a lane too close to a tie", move |case| {
            !apart || min_lane_gap(&case.inputs[0], case.arg.axis()) > KINK_GAP
        })
        .boxed()
}

/// A normalization along one axis of a random tensor of rank 1 to 3 (the shape kept).
fn along_axis(op: &'static Op) -> BoxedStrategy<Case> {
    shape_and_axis()
        .prop_flat_map(|(shape, axis)| (tensor(shape.clone(), signed()), Just(axis), weight(shape)))
        .prop_map(move |(x, axis, weight)| Case {
            op,
            inputs: vec![x],
            arg: Arg::Axis(axis),
            weight,
        })
        .boxed()
}

fn transpose(op: &'static Op) -> BoxedStrategy<Case> {
    output_shape()
        .prop_flat_map(|shape| {
            let reversed = shape.iter().rev().copied().collect();
            (tensor(shape, signed()), weight(reversed))
        })
        .prop_map(move |(x, weight)| Case {
            op,
            inputs: vec![x],
            arg: Arg::None,
            weight,
        })
        .boxed()
}

/// A random operand broadcast to a random shape it broadcasts to.
fn broadcast_to_op(op: &'static Op) -> BoxedStrategy<Case> {
    output_shape()
        .prop_flat_map(|out| (operand_shape(out.clone()), Just(out)))
        .prop_flat_map(|(shape, out)| (tensor(shape, signed()), weight(out.clone()), Just(out)))
        .prop_map(move |(x, weight, out)| Case {
            op,
            inputs: vec![x],
            arg: Arg::Shape(out),
            weight,
        })
        .boxed()
}

/// Up to 6 indices along a random axis, repeats likely (their gradients add up).
fn index_select(op: &'static Op) -> BoxedStrategy<Case> {
    shape_and_axis()
        .prop_flat_map(|(shape, axis)| {
            let indices = prop::collection::vec(0..shape[axis], 0..=6);
            (Just(shape), Just(axis), indices)
        })
        .prop_flat_map(|(shape, axis, indices)| {
            let mut out = shape.clone();
            out[axis] = indices.len();
            (
                tensor(shape, signed()),
                weight(out),
                Just(Arg::Indices { axis, indices }),
            )
        })
        .prop_map(move |(x, weight, arg)| Case {
            op,
            inputs: vec![x],
            arg,
            weight,
        })
        .boxed()
}

/// `select(cond, a, b)` with all three broadcast together; the condition holds 0, 1,
/// -2 or NaN (true, as NaN != 0).
fn select(op: &'static Op) -> BoxedStrategy<Case> {
    let conditions = prop::sample::select(vec![0.0, 1.0, -2.0, f64::NAN]).boxed();
    output_shape()
        .prop_flat_map(|out| {
            (
                operand_shape(out.clone()),
                operand_shape(out.clone()),
                operand_shape(out),
            )
        })
        .prop_flat_map(move |(sc, sa, sb)| {
            let out = broadcast_shape(&sc, &broadcast_shape(&sa, &sb));
            (
                tensor(sc, conditions.clone()),
                tensor(sa, signed()),
                tensor(sb, signed()),
                weight(out),
            )
        })
        .prop_map(move |(cond, a, b, weight)| Case {
            op,
            inputs: vec![a, b],
            arg: Arg::Cond(cond),
            weight,
        })
        .boxed()
}

/// Reshape to the same dims in another order, with a 1 inserted somewhere or not.
fn reshape(op: &'static Op) -> BoxedStrategy<Case> {
    output_shape()
        .prop_flat_map(|shape| {
            let rank = shape.len();
            (
                Just(shape.clone()),
                Just(shape).prop_shuffle(),
                prop::option::of(0..=rank),
            )
        })
        .prop_flat_map(|(shape, mut to, one_at)| {
            if let Some(k) = one_at {
                to.insert(k, 1);
            }
            (tensor(shape, signed()), weight(to.clone()), Just(to))
        })
        .prop_map(move |(x, weight, to)| Case {
            op,
            inputs: vec![x],
            arg: Arg::Shape(to),
            weight,
        })
        .boxed()
}

fn matmul(op: &'static Op) -> BoxedStrategy<Case> {
    (1usize..=5, 1usize..=5, 1usize..=5)
        .prop_flat_map(|(m, k, n)| {
            (
                tensor(vec![m, k], signed()),
                tensor(vec![k, n], signed()),
                weight(vec![m, n]),
            )
        })
        .prop_map(move |(a, b, weight)| Case {
            op,
            inputs: vec![a, b],
            arg: Arg::None,
            weight,
        })
        .boxed()
}

/// Random cases of `op`, from its domain and of shapes its form takes.
fn cases(op: &'static Op) -> BoxedStrategy<Case> {
    match &op.rule {
        Rule::Unary(rule) => unary(op, values(rule.domain), Arg::None),
        Rule::Param(rule) => with_param(op, rule.params),
        Rule::Binary(rule) => binary(
            op,
            values(rule.domains[0]),
            values(rule.domains[1]),
            rule.selects,
        ),
        Rule::Tensor(rule) => match rule.form {
            Form::Reduce => reduce(op),
            Form::Axis => axis(op, signed(), rule.selects),
            Form::AlongAxis => along_axis(op),
            Form::Reshape => reshape(op),
            Form::Transpose => transpose(op),
            Form::BroadcastTo => broadcast_to_op(op),
            Form::IndexSelect => index_select(op),
            Form::MatMul => matmul(op),
            Form::Select => select(op),
        },
    }
}

// ---- the properties, for every op of the table -------------------------------------------

fn every_op(_: &Op) -> bool {
    true
}

#[test]
fn every_op_gradient_has_its_operands_shape_and_matches_central_differences() {
    for_every_op(every_op, cases, check_central_differences);
}

#[test]
fn every_op_gradient_is_the_op_tables_derivative() {
    for_every_op(every_op, cases, check_table_derivative);
}

#[test]
fn every_op_gradient_is_unchanged_by_a_reshape_round_trip_of_its_operands() {
    for_every_op(every_op, cases, |case| {
        check_splice_changes_nothing(case, Splice::RoundTripOperands)
    });
}

#[test]
fn every_op_gradient_is_unchanged_by_a_reshape_round_trip_of_its_result() {
    for_every_op(every_op, cases, |case| {
        check_splice_changes_nothing(case, Splice::RoundTripResult)
    });
}

fn commutes(op: &Op) -> bool {
    op.binary().is_some_and(|rule| rule.commutes)
}

#[test]
fn commuting_ops_give_each_operand_the_same_gradient_in_either_order() {
    for_every_op(commutes, cases, check_operand_order_irrelevant);
}

/// The tie rule does not look at operand order: two tracked operands split a tie half
/// and half whichever comes first.
#[test]
fn max_and_min_give_each_operand_the_same_gradient_in_either_order_at_ties() {
    let selects = |op: &Op| op.binary().is_some_and(|rule| rule.selects);
    let tie_prone = |op| binary(op, tie_prone(), tie_prone(), false);
    for_every_op(selects, tie_prone, check_operand_order_irrelevant);
}

/// max_axis and min_axis at lanes full of ties: the tape splits each lane's upstream
/// evenly among the elements that tie for its extreme, as the table's derivative does.
#[test]
fn max_and_min_axis_split_the_gradient_evenly_among_tied_elements() {
    let selects = |op: &Op| op.tensor().is_some_and(|rule| rule.selects);
    let tie_prone = |op| axis(op, tie_prone(), false);
    for_every_op(selects, tie_prone, check_table_derivative);
}

// ---- cases the properties found, kept as fixed examples --------------------------------

/// The gradient of a rank-0 operand broadcast over N elements is the sum of N upstream
/// elements, also when the upstream is one number kept unexpanded (as `sum` sends it).
#[test]
fn add_gradient_of_a_rank0_operand_sums_over_the_elements_it_was_broadcast_to() {
    let tape = Tape::new();
    let a = tape.var(Tensor::scalar(0.5));
    let b = tape.var(Tensor::from(vec![1.0, 2.0, 3.0]));
    let grads = (a + b).sum().backward();
    assert_eq!(grads.wrt(a).data(), &[3.0]);
    assert_eq!(grads.wrt(b).data(), &[1.0, 1.0, 1.0]);
}

/// As above for `sub`, whose gradient for `b` is the negated upstream.
#[test]
fn sub_gradient_of_a_rank0_operand_sums_over_the_elements_it_was_broadcast_to() {
    let tape = Tape::new();
    let a = tape.var(Tensor::from(vec![1.0, 2.0, 3.0, 4.0, 5.0]));
    let b = tape.var(Tensor::scalar(0.5));
    let grads = ((a - b) * 2.0).sum().backward();
    assert_eq!(grads.wrt(a).data(), &[2.0; 5]);
    assert_eq!(grads.wrt(b).data(), &[-10.0]);
}

/// The upstream of `a + b` here has shape `[3, 1]` (the weight's) while the sum has
/// shape `[3, 2]`: each upstream element stands for two output elements, so the
/// rank-0 `a` gets twice the weight's sum.
#[test]
fn add_gradient_counts_the_dims_an_unexpanded_upstream_leaves_implicit() {
    let tape = Tape::new();
    let a = tape.var(Tensor::scalar(0.5));
    let b = tape.var(Tensor::new(vec![0.5; 6], &[3, 2]).unwrap());
    let w = tape.constant(Tensor::new(vec![1.0, 2.0, 4.0], &[3, 1]).unwrap());
    let grads = ((a + b) * w).sum().backward();
    assert_eq!(grads.wrt(a).data(), &[2.0 * (1.0 + 2.0 + 4.0)]);
    assert_eq!(grads.wrt(b).data(), &[1.0, 1.0, 2.0, 2.0, 4.0, 4.0]);
}

/// As above with a `[3, 1]` operand: the early exit for a gradient that already has the
/// operand's shape must not skip the factor 4 for the implicit last dim.
#[test]
fn add_gradient_of_a_column_sums_over_the_row_an_unexpanded_upstream_leaves_implicit() {
    let tape = Tape::new();
    let a = tape.var(Tensor::new(vec![0.0; 3], &[3, 1]).unwrap());
    let b = tape.var(Tensor::new(vec![0.0; 4], &[1, 4]).unwrap());
    let w = tape.constant(Tensor::new(vec![1.0, 2.0, 4.0], &[3, 1]).unwrap());
    let grads = ((a + b) * w).sum().backward();
    assert_eq!(grads.wrt(a).data(), &[4.0, 8.0, 16.0]);
    assert_eq!(grads.wrt(b).data(), &[7.0; 4]);
}
