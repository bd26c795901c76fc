//! Property tests: for every op, on random broadcast-compatible shapes and random values,
//! the tape's gradient is the derivative of the tape's own forward (central finite
//! differences), has its operand's shape, does not depend on operand order where the op
//! commutes, and does not change when a reshape round trip is spliced in.
//!
//! Every loss is `sum(op(inputs) * w)` with `w` a random constant whose shape broadcasts
//! to the output: a full-shape `w` sends a non-uniform upstream into the op, a smaller
//! one (down to rank 0) a partly or fully uniform one, which the engine keeps unexpanded.
//!
//! `PROPTEST_CASES` overrides the number of cases (256 by default).

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::fmt;
use tapegrad::{Tape, Tensor, Var, max, min};

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

/// Central-difference step. Inputs are in ±[0.5, 3], so this is about 1e-5 relative.
const H: f64 = 1e-5;
/// `max`/`min` operands closer than this are treated as a kink and the case is skipped.
const KINK_GAP: f64 = 1e-3;

#[derive(Clone, Debug, PartialEq)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    Neg,
    Exp,
    Ln,
    Sum,
    Mean,
    SumAxis(usize),
    Reshape(Vec<usize>),
    MatMul,
}

#[derive(Clone)]
struct Case {
    op: Op,
    inputs: Vec<Tensor>,
    weight: Tensor,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:?}", self.op)?;
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

// ---- the expressions under test ---------------------------------------------------

fn apply<'t>(op: &Op, x: &[Var<'t>]) -> Var<'t> {
    match op {
        Op::Add => x[0] + x[1],
        Op::Sub => x[0] - x[1],
        Op::Mul => x[0] * x[1],
        Op::Div => x[0] / x[1],
        Op::Max => max(x[0], x[1]),
        Op::Min => min(x[0], x[1]),
        Op::Neg => -x[0],
        Op::Exp => x[0].exp(),
        Op::Ln => x[0].ln(),
        Op::Sum => x[0].sum(),
        Op::Mean => x[0].mean(),
        Op::SumAxis(axis) => x[0].sum_axis(*axis),
        Op::Reshape(shape) => x[0].reshape(shape),
        Op::MatMul => x[0].matmul(x[1]),
    }
}

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
    let mut out = apply(&case.op, &inputs);
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
        for j in 0..x.len() {
            let moved = |delta: f64| -> Vec<Tensor> {
                let mut inputs = case.inputs.clone();
                let mut data = x.data().to_vec();
                data[j] += delta;
                inputs[i] = Tensor::new(data, x.shape()).unwrap();
                inputs
            };
            let fd = (value_at(case, &moved(H)) - value_at(case, &moved(-H))) / (2.0 * H);
            let tape = grads[i].data()[j];
            prop_assert!(
                (tape - fd).abs() <= 1e-6 * (1.0 + fd.abs()),
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

fn check_gradient_shapes(case: &Case) -> Result<(), TestCaseError> {
    let (_, grads) = value_and_grads(case, Splice::Nothing);
    prop_assert_eq!(grads.len(), case.inputs.len());
    for (i, (g, x)) in grads.iter().zip(&case.inputs).enumerate() {
        prop_assert_eq!(g.shape(), x.shape(), "input {}", i);
        prop_assert_eq!(g.len(), x.len(), "input {}", i);
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

/// Values in ±[0.5, 3]: away from 0 (for `ln` and `/`) and small enough for `exp`.
fn signed() -> BoxedStrategy<f64> {
    (0.5f64..3.0, any::<bool>())
        .prop_map(|(m, negative)| if negative { -m } else { m })
        .boxed()
}

/// Values in [0.5, 3], for `ln`.
fn positive() -> BoxedStrategy<f64> {
    (0.5f64..3.0).boxed()
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

/// numpy's broadcast of two shapes (they must broadcast).
fn broadcast(a: &[usize], b: &[usize]) -> Vec<usize> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], d: usize| {
        let pad = rank - s.len();
        if d < pad { 1 } else { s[d - pad] }
    };
    (0..rank)
        .map(|d| {
            let (x, y) = (dim(a, d), dim(b, d));
            assert!(
                x == y || x == 1 || y == 1,
                "{a:?} and {b:?} do not broadcast"
            );
            x.max(y)
        })
        .collect()
}

/// The smallest `|a - b|` over all pairs of elements the broadcast puts together.
fn min_gap(a: &Tensor, b: &Tensor) -> f64 {
    let out = broadcast(a.shape(), b.shape());
    let flat_in = |x: &Tensor, index: &[usize]| {
        let pad = index.len() - x.shape().len();
        x.shape()
            .iter()
            .zip(&index[pad..])
            .fold(0, |flat, (&d, &i)| flat * d + if d == 1 { 0 } else { i })
    };
    let mut gap = f64::INFINITY;
    let n: usize = out.iter().product();
    let mut index = vec![0; out.len()];
    for _ in 0..n {
        let (p, q) = (a.data()[flat_in(a, &index)], b.data()[flat_in(b, &index)]);
        gap = gap.min((p - q).abs());
        for d in (0..out.len()).rev() {
            index[d] += 1;
            if index[d] < out[d] {
                break;
            }
            index[d] = 0;
        }
    }
    gap
}

/// An elementwise binary op on random broadcast-compatible operands.
fn binary(
    op: Op,
    a_values: BoxedStrategy<f64>,
    b_values: BoxedStrategy<f64>,
) -> BoxedStrategy<Case> {
    let away_from_kinks = matches!(op, Op::Max | Op::Min);
    output_shape()
        .prop_flat_map(|out| (operand_shape(out.clone()), operand_shape(out)))
        .prop_flat_map(move |(sa, sb)| {
            let out = broadcast(&sa, &sb);
            (
                tensor(sa, a_values.clone()),
                tensor(sb, b_values.clone()),
                weight(out),
            )
        })
        .prop_map(move |(a, b, weight)| Case {
            op: op.clone(),
            inputs: vec![a, b],
            weight,
        })
        .prop_filter("max/min operands too close to a tie", move |case| {
            !away_from_kinks || min_gap(&case.inputs[0], &case.inputs[1]) > KINK_GAP
        })
        .boxed()
}

/// An op of one operand that keeps its shape.
fn unary(op: Op, values: BoxedStrategy<f64>) -> BoxedStrategy<Case> {
    output_shape()
        .prop_flat_map(move |shape| (tensor(shape.clone(), values.clone()), weight(shape)))
        .prop_map(move |(x, weight)| Case {
            op: op.clone(),
            inputs: vec![x],
            weight,
        })
        .boxed()
}

/// `sum` or `mean` of a random tensor.
fn reduce(op: Op) -> BoxedStrategy<Case> {
    output_shape()
        .prop_flat_map(|shape| (tensor(shape, signed()), weight(vec![])))
        .prop_map(move |(x, weight)| Case {
            op: op.clone(),
            inputs: vec![x],
            weight,
        })
        .boxed()
}

fn sum_axis() -> BoxedStrategy<Case> {
    prop::collection::vec(1usize..=5, 1..=3)
        .prop_flat_map(|shape| (Just(shape.clone()), 0..shape.len()))
        .prop_flat_map(|(shape, axis)| {
            let mut out = shape.clone();
            out.remove(axis);
            (tensor(shape, signed()), Just(axis), weight(out))
        })
        .prop_map(|(x, axis, weight)| Case {
            op: Op::SumAxis(axis),
            inputs: vec![x],
            weight,
        })
        .boxed()
}

/// Reshape to the same dims in another order, with a 1 inserted somewhere or not.
fn reshape() -> BoxedStrategy<Case> {
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
        .prop_map(|(x, weight, to)| Case {
            op: Op::Reshape(to),
            inputs: vec![x],
            weight,
        })
        .boxed()
}

fn matmul() -> BoxedStrategy<Case> {
    (1usize..=5, 1usize..=5, 1usize..=5)
        .prop_flat_map(|(m, k, n)| {
            (
                tensor(vec![m, k], signed()),
                tensor(vec![k, n], signed()),
                weight(vec![m, n]),
            )
        })
        .prop_map(|(a, b, weight)| Case {
            op: Op::MatMul,
            inputs: vec![a, b],
            weight,
        })
        .boxed()
}

// ---- one module of properties per op --------------------------------------------------

macro_rules! op_properties {
    ($name:ident, $strategy:expr) => {
        mod $name {
            use super::*;

            proptest! {
                #![proptest_config(config())]

                #[test]
                fn gradient_matches_central_differences(case in $strategy) {
                    check_central_differences(&case)?;
                }

                #[test]
                fn gradient_has_its_operands_shape(case in $strategy) {
                    check_gradient_shapes(&case)?;
                }

                #[test]
                fn reshape_round_trip_of_operands_changes_nothing(case in $strategy) {
                    check_splice_changes_nothing(&case, Splice::RoundTripOperands)?;
                }

                #[test]
                fn reshape_round_trip_of_result_changes_nothing(case in $strategy) {
                    check_splice_changes_nothing(&case, Splice::RoundTripResult)?;
                }
            }
        }
    };
}

op_properties!(add, binary(Op::Add, signed(), signed()));
op_properties!(sub, binary(Op::Sub, signed(), signed()));
op_properties!(mul, binary(Op::Mul, signed(), signed()));
op_properties!(div, binary(Op::Div, signed(), signed()));
op_properties!(max, binary(Op::Max, signed(), signed()));
op_properties!(min, binary(Op::Min, signed(), signed()));
op_properties!(neg, unary(Op::Neg, signed()));
op_properties!(exp, unary(Op::Exp, signed()));
op_properties!(ln, unary(Op::Ln, positive()));
op_properties!(sum, reduce(Op::Sum));
op_properties!(mean, reduce(Op::Mean));
op_properties!(sum_axis, sum_axis());
op_properties!(reshape, reshape());
op_properties!(matmul, matmul());

mod operand_order {
    use super::*;

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn add_of_b_and_a_equals_add_of_a_and_b(case in binary(Op::Add, signed(), signed())) {
            check_operand_order_irrelevant(&case)?;
        }

        #[test]
        fn mul_of_b_and_a_equals_mul_of_a_and_b(case in binary(Op::Mul, signed(), signed())) {
            check_operand_order_irrelevant(&case)?;
        }

        #[test]
        fn max_of_b_and_a_equals_max_of_a_and_b_away_from_ties(
            case in binary(Op::Max, signed(), signed())
        ) {
            check_operand_order_irrelevant(&case)?;
        }

        #[test]
        fn min_of_b_and_a_equals_min_of_a_and_b_away_from_ties(
            case in binary(Op::Min, signed(), signed())
        ) {
            check_operand_order_irrelevant(&case)?;
        }
    }
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
