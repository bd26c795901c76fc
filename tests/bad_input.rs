//! What tapegrad does with input it cannot use: each panic names the op (as
//! `tapegrad: <op>:`), the shapes, axes or indices involved and the caller's
//! `file:line:col` in its message; fallible constructors return an `Err` that says what
//! is wrong; empty tensors behave like numpy's.

#[macro_use]
mod common;

use common::ops::{Arg, Form, OPS};
use common::{assert_mentions, assert_names, panic_message};
use tapegrad::losses::hinge;
use tapegrad::{Tape, Tensor};

fn matrix(rows: usize, cols: usize) -> Tensor {
    Tensor::new((0..rows * cols).map(|i| i as f64).collect(), &[rows, cols]).unwrap()
}

// ---- shapes that do not broadcast ----------------------------------------------------

/// Every binary op of the table, recorded in `tests/common/ops.rs`: the panic names the
/// op, both shapes, and that file's line (the caller's, not one inside tapegrad).
#[test]
fn every_binary_op_of_shapes_that_do_not_broadcast_panics_naming_op_shapes_and_caller() {
    let binary: Vec<_> = OPS.iter().filter(|op| op.binary().is_some()).collect();
    assert!(
        binary.len() >= 6,
        "the table's binary ops: {}",
        binary.len()
    );
    for op in binary {
        let tape = Tape::new();
        let (a, b) = (tape.var(matrix(2, 3)), tape.var(Tensor::from(vec![1.0; 4])));
        let message = panic_message(|| op.apply(&[a, b], &Arg::None));
        assert_mentions(
            &message,
            &[op.name, "[2, 3]", "[4]", "tests/common/ops.rs:"],
        );
    }
}

#[test]
fn add_of_shapes_that_do_not_broadcast_names_the_line_it_was_written_on() {
    let tape = Tape::new();
    let (a, b) = (tape.var(matrix(2, 3)), tape.var(Tensor::from(vec![1.0; 4])));
    let (line, message) = panic_at_line!(a + b);
    assert_names(&message, line, &["add", "[2, 3]", "[4]"]);
}

#[test]
fn method_max_of_shapes_that_do_not_broadcast_names_the_methods_caller() {
    let tape = Tape::new();
    let (a, b) = (tape.var(matrix(3, 2)), tape.var(matrix(2, 3)));
    let (line, message) = panic_at_line!(a.max(b));
    assert_names(&message, line, &["max", "[3, 2]", "[2, 3]"]);
}

// ---- vars of two tapes ---------------------------------------------------------------

#[test]
fn op_on_vars_of_two_tapes_panics_naming_op_and_line() {
    let (first, second) = (Tape::new(), Tape::new());
    let (a, b) = (
        first.var(Tensor::scalar(1.0)),
        second.var(Tensor::scalar(2.0)),
    );
    let (line, message) = panic_at_line!(a * b);
    assert_names(&message, line, &["mul", "different tapes"]);
}

#[test]
fn every_op_of_two_inputs_on_vars_of_two_tapes_panics_naming_the_op() {
    let two: Vec<_> = OPS.iter().filter(|op| op.arity() == 2).collect();
    assert!(
        two.len() >= 7,
        "the table's ops of two inputs: {}",
        two.len()
    );
    for op in two {
        let (first, second) = (Tape::new(), Tape::new());
        let (a, b) = (first.var(matrix(2, 2)), second.var(matrix(2, 2)));
        let arg = match op.form() {
            Some(Form::Select) => Arg::Cond(Tensor::scalar(1.0)),
            _ => Arg::None,
        };
        let message = panic_message(|| op.apply(&[a, b], &arg));
        assert_mentions(&message, &[op.name, "different tapes"]);
    }
}

// ---- backward and wrt ----------------------------------------------------------------

#[test]
fn backward_of_a_non_scalar_panics_pointing_to_backward_with() {
    let tape = Tape::new();
    let x = tape.var(Tensor::from(vec![1.0, 2.0, 3.0]));
    let y = x * 2.0;
    let (line, message) = panic_at_line!(y.backward());
    assert_names(
        &message,
        line,
        &["backward", "[3]", "3 elements", "backward_with"],
    );
}

#[test]
fn backward_with_a_seed_of_another_shape_panics_naming_both_shapes() {
    let tape = Tape::new();
    let x = tape.var(matrix(2, 3));
    let y = x * 2.0;
    let (line, message) = panic_at_line!(y.backward_with(Tensor::from(vec![1.0; 6])));
    assert_names(&message, line, &["backward_with", "[6]", "[2, 3]"]);
}

#[test]
fn wrt_of_a_constant_panics_saying_it_is_a_constant() {
    let tape = Tape::new();
    let (x, c) = (
        tape.var(Tensor::scalar(1.0)),
        tape.constant(Tensor::scalar(2.0)),
    );
    let grads = (x * c).backward();
    let (line, message) = panic_at_line!(grads.wrt(c));
    assert_names(&message, line, &["wrt", "constant", "Tape::var"]);
}

#[test]
fn wrt_of_an_intermediate_panics_saying_only_leaves_keep_gradients() {
    let tape = Tape::new();
    let x = tape.var(Tensor::scalar(1.0));
    let y = x * 3.0;
    let grads = (y + 1.0).backward();
    let (line, message) = panic_at_line!(grads.wrt(y));
    assert_names(&message, line, &["wrt", "intermediate"]);
}

#[test]
fn wrt_of_a_var_of_another_tape_panics() {
    let (first, second) = (Tape::new(), Tape::new());
    let x = first.var(Tensor::scalar(1.0));
    let other = second.var(Tensor::scalar(1.0));
    let grads = (x * 2.0).backward();
    let (line, message) = panic_at_line!(grads.wrt(other));
    assert_names(&message, line, &["wrt", "another tape"]);
}

#[test]
fn wrt_of_a_var_created_after_backward_panics() {
    let tape = Tape::new();
    let x = tape.var(Tensor::scalar(1.0));
    let grads = (x * 2.0).backward();
    let late = tape.var(Tensor::scalar(1.0));
    let (line, message) = panic_at_line!(grads.wrt(late));
    assert_names(&message, line, &["wrt", "after backward"]);
}

/// `Tape::clear` starts a new recording: gradients of the old one must not answer for
/// the vars of the new one (they would silently give another var's gradient).
#[test]
fn wrt_of_a_var_recorded_after_tape_clear_panics_instead_of_giving_a_stale_gradient() {
    let mut tape = Tape::new();
    let grads = {
        let x = tape.var(Tensor::scalar(1.0));
        (x * 2.0).backward()
    };
    tape.clear();
    let y = tape.var(Tensor::from(vec![5.0, 6.0]));
    let message = panic_message(|| grads.wrt(y).clone());
    assert_mentions(&message, &["wrt", "cleared"]);
}

// ---- item, reshape, matmul, sum_axis -------------------------------------------------

#[test]
fn item_of_many_elements_panics_naming_shape_count_and_line() {
    let t = matrix(2, 3);
    let (line, message) = panic_at_line!(t.item());
    assert_names(
        &message,
        line,
        &["item", "[2, 3]", "6 elements", "exactly one"],
    );
    assert_eq!(Tensor::new(vec![7.0], &[1, 1]).unwrap().item(), 7.0);
}

#[test]
fn reshape_to_another_element_count_panics_naming_both_shapes_and_line() {
    let tape = Tape::new();
    let x = tape.var(matrix(2, 3));
    let (line, message) = panic_at_line!(x.reshape(&[4]));
    assert_names(&message, line, &["reshape", "[2, 3]", "[4]"]);
}

#[test]
fn tensor_reshape_to_another_element_count_is_an_error_naming_both_shapes() {
    let err = matrix(2, 3).reshape(&[4]).unwrap_err().to_string();
    for part in ["reshape", "[2, 3]", "[4]", "6", "4"] {
        assert!(err.contains(part), "{part:?} missing from: {err}");
    }
}

#[test]
fn matmul_of_a_vector_panics_naming_both_shapes_and_line() {
    let tape = Tape::new();
    let (a, b) = (
        tape.var(Tensor::from(vec![1.0, 2.0, 3.0])),
        tape.var(matrix(3, 2)),
    );
    let (line, message) = panic_at_line!(a.matmul(b));
    assert_names(&message, line, &["matmul", "[3]", "[3, 2]"]);
}

#[test]
fn matmul_of_a_rank3_tensor_panics_naming_both_shapes_and_line() {
    let tape = Tape::new();
    let a = tape.var(Tensor::new(vec![0.0; 8], &[2, 2, 2]).unwrap());
    let b = tape.var(matrix(2, 2));
    let (line, message) = panic_at_line!(a.matmul(b));
    assert_names(&message, line, &["matmul", "[2, 2, 2]", "[2, 2]"]);
}

#[test]
fn matmul_of_mismatched_inner_dims_panics_naming_both_shapes_and_line() {
    let tape = Tape::new();
    let (a, b) = (tape.var(matrix(2, 3)), tape.var(matrix(2, 3)));
    let (line, message) = panic_at_line!(a.matmul(b));
    assert_names(&message, line, &["matmul", "[2, 3] x [2, 3]"]);
}

#[test]
fn sum_axis_out_of_range_panics_naming_axis_shape_and_line() {
    let tape = Tape::new();
    let x = tape.var(matrix(2, 3));
    let (line, message) = panic_at_line!(x.sum_axis(2));
    assert_names(&message, line, &["sum_axis", "axis 2", "[2, 3]"]);
}

#[test]
fn sum_axis_of_a_rank0_var_panics() {
    let tape = Tape::new();
    let x = tape.var(Tensor::scalar(1.0));
    let (line, message) = panic_at_line!(x.sum_axis(0));
    assert_names(&message, line, &["sum_axis", "axis 0", "[]"]);
}

// ---- the ops along an axis, index_select, broadcast_to, select, one_hot ---------------

/// Every op of the table that takes an axis, given axis 2 of a `[2, 3]` var: the panic
/// names the op, the axis, the rank and the line in `tests/common/ops.rs` that called it.
#[test]
fn every_op_of_the_table_that_takes_an_axis_panics_on_an_axis_out_of_range() {
    let with_axis: Vec<_> = OPS
        .iter()
        .filter(|op| op.form().is_some_and(Form::takes_axis))
        .collect();
    assert!(
        with_axis.len() >= 7,
        "the table's ops with an axis: {}",
        with_axis.len()
    );
    for op in with_axis {
        let tape = Tape::new();
        let x = tape.var(matrix(2, 3));
        let message = panic_message(|| op.apply(&[x], &op.arg_with_axis(2)));
        let head = format!("tapegrad: {}:", op.name);
        assert_mentions(
            &message,
            &[&head, "axis 2", "[2, 3]", "rank 2", "tests/common/ops.rs:"],
        );
    }
}

/// The same, one call per op written here (the composite `mean_axis` too, which has no
/// row): the message names this file's line.
#[test]
fn an_axis_out_of_range_panics_naming_the_op_the_axis_the_rank_and_the_line() {
    let tape = Tape::new();
    let x = tape.var(matrix(2, 3));
    let calls = [
        ("max_axis", panic_at_line!(x.max_axis(2))),
        ("min_axis", panic_at_line!(x.min_axis(2))),
        ("mean_axis", panic_at_line!(x.mean_axis(2))),
        ("logsumexp_axis", panic_at_line!(x.logsumexp_axis(2))),
        ("softmax", panic_at_line!(x.softmax(2))),
        ("log_softmax", panic_at_line!(x.log_softmax(5))),
        ("index_select", panic_at_line!(x.index_select(2, &[0]))),
    ];
    for (op, (line, message)) in calls {
        let head = format!("tapegrad: {op}:");
        let axis = if op == "log_softmax" {
            "axis 5"
        } else {
            "axis 2"
        };
        assert_names(&message, line, &[&head, axis, "[2, 3]", "rank 2"]);
    }
}

/// `expand_dims` may put the new axis at the rank (appending it), so axis 2 of a
/// `[2, 3]` var is fine and axis 3 is out of range. Its message names the range of
/// valid axes (`0..=2`) rather than the word "rank".
#[test]
fn expand_dims_past_the_rank_panics_naming_the_axis_the_valid_range_and_the_line() {
    let tape = Tape::new();
    let x = tape.var(matrix(2, 3));
    assert_eq!(x.expand_dims(2).value().shape(), &[2, 3, 1]);
    let (line, message) = panic_at_line!(x.expand_dims(3));
    assert_names(
        &message,
        line,
        &["tapegrad: expand_dims:", "axis 3", "[2, 3]", "0..=2"],
    );
}

#[test]
fn index_select_of_an_index_out_of_range_panics_naming_the_index_and_the_axis_length() {
    let tape = Tape::new();
    let x = tape.var(matrix(2, 3));
    let (line, message) = panic_at_line!(x.index_select(1, &[0, 3, 1]));
    assert_names(
        &message,
        line,
        &[
            "tapegrad: index_select:",
            "index 3",
            "position 1",
            "axis 1",
            "length 3",
        ],
    );
    let (line, message) = panic_at_line!(x.index_select(0, &[1, 1, 7]));
    assert_names(
        &message,
        line,
        &["index 7", "position 2", "axis 0", "length 2"],
    );
}

#[test]
fn broadcast_to_a_shape_it_does_not_broadcast_to_panics_naming_both_shapes() {
    let tape = Tape::new();
    let x = tape.var(matrix(2, 3));
    let (line, message) = panic_at_line!(x.broadcast_to(&[4, 3]));
    assert_names(
        &message,
        line,
        &["tapegrad: broadcast_to:", "[2, 3]", "[4, 3]"],
    );
    // Fewer dims than the operand: broadcasting never drops one.
    let (line, message) = panic_at_line!(x.broadcast_to(&[3]));
    assert_names(
        &message,
        line,
        &["tapegrad: broadcast_to:", "[2, 3]", "[3]"],
    );
}

#[test]
fn one_hot_of_a_label_not_below_classes_panics_naming_label_position_and_classes() {
    let (line, message) = panic_at_line!(Tensor::one_hot(&[0, 2, 3], 3));
    assert_names(
        &message,
        line,
        &["tapegrad: one_hot:", "label 3", "position 2", "classes = 3"],
    );
}

#[test]
fn select_with_a_condition_that_does_not_broadcast_panics_naming_all_three_shapes() {
    let tape = Tape::new();
    let (a, b) = (
        tape.var(matrix(2, 2)),
        tape.var(Tensor::from(vec![1.0, 2.0])),
    );
    let cond = Tensor::from(vec![1.0, 0.0, 1.0]);
    let (line, message) = panic_at_line!(tapegrad::select(&cond, a, b));
    assert_names(
        &message,
        line,
        &["tapegrad: select:", "[3]", "[2, 2]", "[2]"],
    );
    // With an f64 operand (a rank-0 constant).
    let (line, message) = panic_at_line!(tapegrad::select(&cond, a, 0.0));
    assert_names(
        &message,
        line,
        &["tapegrad: select:", "[3]", "[2, 2]", "[]"],
    );
}

#[test]
fn max_and_min_axis_over_an_axis_of_length_zero_panic_naming_the_axis_and_shape() {
    let tape = Tape::new();
    let x = tape.var(Tensor::new(vec![], &[0, 3]).unwrap());
    let calls = [
        ("max_axis", panic_at_line!(x.max_axis(0))),
        ("min_axis", panic_at_line!(x.min_axis(0))),
    ];
    for (op, (line, message)) in calls {
        let head = format!("tapegrad: {op}:");
        assert_names(&message, line, &[&head, "axis 0", "[0, 3]", "length 0"]);
    }
    // Along the other axis (of length 3) there are no lanes at all: an empty result.
    assert_eq!(x.max_axis(1).value().shape(), &[0]);
    // An axis of length 0 with no lanes either: numpy raises all the same.
    let empty = tape.var(Tensor::new(vec![], &[0, 0]).unwrap());
    let (line, message) = panic_at_line!(empty.max_axis(0));
    assert_names(
        &message,
        line,
        &["tapegrad: max_axis:", "axis 0", "[0, 0]", "length 0"],
    );
}

/// The other reductions along an axis are defined over nothing, as in numpy: a sum of
/// 0, a mean of NaN, a logsumexp of -inf.
#[test]
fn sums_means_and_logsumexps_over_an_axis_of_length_zero_are_numpys() {
    let tape = Tape::new();
    let x = tape.var(Tensor::new(vec![], &[0, 2]).unwrap());
    assert_eq!(x.sum_axis(0).value().data(), &[0.0, 0.0]);
    assert!(x.mean_axis(0).value().data().iter().all(|m| m.is_nan()));
    let lse = x.logsumexp_axis(0).value();
    assert_eq!(lse.data(), &[f64::NEG_INFINITY; 2]);
}

// ---- Tensor::new ---------------------------------------------------------------------

#[test]
fn tensor_new_with_the_wrong_length_is_an_error_naming_length_and_shape() {
    let err = Tensor::new(vec![1.0; 5], &[2, 3]).unwrap_err().to_string();
    for part in ["Tensor::new", "5 elements", "[2, 3]", "needs 6"] {
        assert!(err.contains(part), "{part:?} missing from: {err}");
    }
}

#[test]
fn tensor_new_with_a_shape_too_large_for_usize_is_an_error_naming_the_shape() {
    let err = Tensor::new(vec![], &[1 << 32, 1 << 32]).unwrap_err();
    assert_mentions(
        &err.to_string(),
        &["Tensor::new", "[4294967296, 4294967296]"],
    );
}

#[test]
fn tensor_new_errors_are_std_errors() {
    fn build() -> Result<Tensor, Box<dyn std::error::Error>> {
        Ok(Tensor::new(vec![1.0], &[2])?)
    }
    let err = build().unwrap_err();
    assert!(err.source().is_none());
    assert_mentions(&err.to_string(), &["Tensor::new", "[2]"]);
}

#[test]
fn tensor_new_of_rank0_needs_exactly_one_element() {
    assert!(Tensor::new(vec![], &[]).is_err());
    assert_eq!(Tensor::new(vec![7.0], &[]).unwrap().item(), 7.0);
}

// ---- empty tensors (shape [0]) behave like numpy's -----------------------------------

fn empty() -> Tensor {
    Tensor::new(vec![], &[0]).unwrap()
}

#[test]
fn every_elementwise_op_of_empty_tensors_is_empty() {
    let elementwise: Vec<_> = OPS.iter().filter(|op| op.is_elementwise()).collect();
    assert!(elementwise.len() >= 9);
    for op in elementwise {
        for arg in op.elementwise_args() {
            let tape = Tape::new();
            let inputs: Vec<_> = (0..op.arity()).map(|_| tape.var(empty())).collect();
            let y = op.apply(&inputs, &arg).value();
            assert_eq!(y.shape(), &[0], "{} {arg:?}", op.name);
            assert!(y.data().is_empty(), "{} {arg:?}", op.name);
        }
    }
}

#[test]
fn empty_tensor_broadcast_with_a_scalar_is_empty() {
    let tape = Tape::new();
    let y = tape.var(empty()) * 2.0 + tape.var(Tensor::scalar(1.0));
    assert_eq!(y.value().shape(), &[0]);
}

#[test]
fn empty_and_length_two_do_not_broadcast() {
    let tape = Tape::new();
    let (a, b) = (tape.var(empty()), tape.var(Tensor::from(vec![1.0, 2.0])));
    let (line, message) = panic_at_line!(a + b);
    assert_names(&message, line, &["add", "[0]", "[2]"]);
}

#[test]
fn sum_of_an_empty_tensor_is_zero() {
    let tape = Tape::new();
    let s = tape.var(empty()).sum();
    assert_eq!(s.value().shape(), &[] as &[usize]);
    assert_eq!(s.value().item().to_bits(), 0.0f64.to_bits());
}

#[test]
fn mean_of_an_empty_tensor_is_nan_as_numpy() {
    let tape = Tape::new();
    let m = tape.var(empty()).mean();
    assert!(m.value().item().is_nan());
}

#[test]
fn backward_through_sum_of_an_empty_var_gives_an_empty_gradient() {
    let tape = Tape::new();
    let x = tape.var(empty());
    let grads = (x * 3.0).sum().backward();
    assert_eq!(grads.wrt(x).shape(), &[0]);
}

#[test]
fn backward_through_mean_of_an_empty_var_gives_an_empty_gradient() {
    let tape = Tape::new();
    let x = tape.var(empty());
    let grads = x.mean().backward();
    assert_eq!(grads.wrt(x).shape(), &[0]);
}

/// A scalar broadcast over no elements gets the sum of no gradients: 0.
#[test]
fn backward_through_an_empty_var_plus_a_scalar_gives_the_scalar_zero_gradient() {
    let tape = Tape::new();
    let (x, b) = (tape.var(empty()), tape.var(Tensor::scalar(1.5)));
    let w = tape.constant(empty());
    let grads = ((x + b) * w).sum().backward();
    assert_eq!(grads.wrt(x).shape(), &[0]);
    assert_eq!(grads.wrt(b).data(), &[0.0]);
}

/// As above with the upstream kept as one number (no weight).
#[test]
fn backward_through_sum_of_an_empty_var_times_a_scalar_gives_the_scalar_zero_gradient() {
    let tape = Tape::new();
    let (x, b) = (tape.var(empty()), tape.var(Tensor::scalar(1.5)));
    let grads = (x * b).sum().backward();
    assert_eq!(grads.wrt(x).shape(), &[0]);
    assert_eq!(grads.wrt(b).data(), &[0.0]);
}

#[test]
fn hinge_of_an_empty_batch_panics_saying_empty_instead_of_returning_nan() {
    let tape = Tape::new();
    let (pred, target) = (tape.var(empty()), tape.constant(empty()));
    let (line, message) = panic_at_line!(hinge(pred, target));
    assert_names(&message, line, &["hinge", "empty", "[0]"]);
}

#[test]
fn a_custom_backward_of_the_wrong_count_or_shape_panics_naming_the_op_and_where_it_was_recorded() {
    let tape = Tape::new();
    let x = tape.var(Tensor::from(vec![1.0, 2.0, 3.0]));
    let line = line!() + 1;
    let wrong_shape = tape.custom(
        "bad",
        &[x],
        |x| x[0].clone(),
        |_, _, _| vec![Tensor::from(vec![1.0, 2.0])],
    );
    let message = panic_message(|| wrong_shape.sum().backward());
    assert_mentions(
        &message,
        &[
            "tapegrad: custom op 'bad'",
            "shape [2] for input 0 of shape [3]",
            &format!("op recorded at {}:{line}:", file!()),
        ],
    );
    let line = line!() + 1;
    let wrong_count = tape.custom("bad2", &[x], |x| x[0].clone(), |_, _, _| vec![]);
    let message = panic_message(|| wrong_count.sum().backward());
    assert_mentions(
        &message,
        &[
            "tapegrad: custom op 'bad2'",
            "0 gradients for 1 inputs",
            &format!("op recorded at {}:{line}:", file!()),
        ],
    );
}
