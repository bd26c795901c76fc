//! The engine's promises, one test each: NaN and tie rules of max/min, selection (not
//! masking) in their backward, hard zeros for a zero upstream, IEEE division, pairwise
//! summation, clear panics, and a 10^6-op chain without recursion.

use std::panic::{AssertUnwindSafe, catch_unwind};
use tapegrad::losses::hinge;
use tapegrad::{Tape, Tensor, Var, max, min};

const INF: f64 = f64::INFINITY;
const NAN: f64 = f64::NAN;

/// The message of the panic `f` raises (fails the test if it does not panic).
fn panic_message<R>(f: impl FnOnce() -> R) -> String {
    let payload = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(_) => panic!("expected a panic, got none"),
        Err(payload) => payload,
    };
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else {
        panic!("panic payload is not a string")
    }
}

fn assert_mentions(message: &str, needles: &[&str]) {
    for needle in needles {
        assert!(
            message.contains(needle),
            "panic message lacks {needle:?}: {message}"
        );
    }
}

/// Equal as f64 (so -0.0 == 0.0), or both NaN.
fn same(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

/// Same f64 bit for bit (signed zeros told apart), any NaN matching any NaN.
fn same_bits(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn assert_same(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            same(g, w),
            "{what}: element {i}: got {g:?}, want {w:?}\n  got  {got:?}\n  want {want:?}"
        );
    }
}

/// Gradients of `op(a, b)` with respect to both operands, seeded with `seed` (or
/// `.sum()` if `None`).
fn binary_grads(
    op: for<'t> fn(Var<'t>, Var<'t>) -> Var<'t>,
    a: &[f64],
    b: &[f64],
    seed: Option<&[f64]>,
) -> (Vec<f64>, Vec<f64>) {
    let tape = Tape::new();
    let (va, vb) = (
        tape.var(Tensor::from(a.to_vec())),
        tape.var(Tensor::from(b.to_vec())),
    );
    let out = op(va, vb);
    let grads = match seed {
        None => out.sum().backward(),
        Some(s) => out.backward_with(Tensor::from(s.to_vec())),
    };
    (grads.wrt(va).data().to_vec(), grads.wrt(vb).data().to_vec())
}

fn values(op: for<'t> fn(Var<'t>, Var<'t>) -> Var<'t>, a: &[f64], b: &[f64]) -> Vec<f64> {
    let tape = Tape::new();
    let out = op(
        tape.var(Tensor::from(a.to_vec())),
        tape.var(Tensor::from(b.to_vec())),
    );
    out.value().data().to_vec()
}

/// `(a, b, numpy's result)` for every `binary <op>` line of the special-values fixture.
fn numpy_special(op: &str) -> Vec<(f64, f64, f64)> {
    let text = include_str!("fixtures/special_values.txt");
    let rows: Vec<(f64, f64, f64)> = text
        .lines()
        .filter_map(|line| {
            let t: Vec<&str> = line.split_whitespace().collect();
            (t.len() == 5 && t[0] == "binary" && t[1] == op).then(|| {
                let num = |s: &str| s.parse::<f64>().unwrap();
                (num(t[2]), num(t[3]), num(t[4]))
            })
        })
        .collect();
    assert_eq!(rows.len(), 64, "special_values.txt: 8 x 8 rows for {op}");
    rows
}

/// The op's value on every pair of special values equals numpy's, bit for bit.
fn assert_matches_numpy(name: &str, op: for<'t> fn(Var<'t>, Var<'t>) -> Var<'t>) {
    let rows = numpy_special(name);
    let a: Vec<f64> = rows.iter().map(|r| r.0).collect();
    let b: Vec<f64> = rows.iter().map(|r| r.1).collect();
    let want: Vec<f64> = rows.iter().map(|r| r.2).collect();
    let got = values(op, &a, &b);
    for i in 0..rows.len() {
        assert!(
            same_bits(got[i], want[i]),
            "{name}({:?}, {:?}) = {:?}, numpy says {:?}",
            a[i],
            b[i],
            got[i],
            want[i]
        );
    }
}

// ---- max / min: values ---------------------------------------------------------------------

#[test]
fn max_returns_nan_where_either_operand_is_nan() {
    let a = [NAN, 1.0, NAN, 2.0, -INF, INF];
    let b = [1.0, NAN, NAN, 0.0, NAN, NAN];
    let got = values(|a, b| max(a, b), &a, &b);
    assert_same(&got, &[NAN, NAN, NAN, 2.0, NAN, NAN], "max");
}

#[test]
fn min_returns_nan_where_either_operand_is_nan() {
    let a = [NAN, 1.0, NAN, 2.0, INF, -INF];
    let b = [1.0, NAN, NAN, 0.0, NAN, NAN];
    let got = values(|a, b| min(a, b), &a, &b);
    assert_same(&got, &[NAN, NAN, NAN, 0.0, NAN, NAN], "min");
}

#[test]
fn max_matches_np_maximum_on_every_pair_of_special_values() {
    // nan, +-inf, +-0.0, +-1, 2 in both positions, signed zeros included.
    assert_matches_numpy("max", |a, b| max(a, b));
}

#[test]
fn min_matches_np_minimum_on_every_pair_of_special_values() {
    assert_matches_numpy("min", |a, b| min(a, b));
}

// ---- max / min: where the gradient goes ---------------------------------------------------------

#[test]
fn max_tie_sends_gradient_to_first_operand() {
    let ties = [1.5, -2.0, 0.0, INF];
    for seed in [None, Some(&[2.0, -3.0, 0.5, 7.0][..])] {
        let (ga, gb) = binary_grads(|a, b| max(a, b), &ties, &ties, seed);
        let up = seed.unwrap_or(&[1.0; 4]);
        assert_same(&ga, up, &format!("max tie, grad a, seed {seed:?}"));
        assert_same(&gb, &[0.0; 4], &format!("max tie, grad b, seed {seed:?}"));
    }
    // max(0.0, z) at z == 0 (and -0.0): the tie goes to the constant, so z gets 0.
    let tape = Tape::new();
    let z = tape.var(Tensor::from(vec![0.0, -0.0, 1e-300]));
    let g = max(0.0, z).sum().backward();
    assert_same(g.wrt(z).data(), &[0.0, 0.0, 1.0], "max(0.0, z)");
}

#[test]
fn min_tie_sends_gradient_to_first_operand() {
    let ties = [1.5, -2.0, 0.0, -INF];
    for seed in [None, Some(&[2.0, -3.0, 0.5, 7.0][..])] {
        let (ga, gb) = binary_grads(|a, b| min(a, b), &ties, &ties, seed);
        let up = seed.unwrap_or(&[1.0; 4]);
        assert_same(&ga, up, &format!("min tie, grad a, seed {seed:?}"));
        assert_same(&gb, &[0.0; 4], &format!("min tie, grad b, seed {seed:?}"));
    }
    let tape = Tape::new();
    let z = tape.var(Tensor::from(vec![0.0, -0.0, -1e-300]));
    let g = min(0.0, z).sum().backward();
    assert_same(g.wrt(z).data(), &[0.0, 0.0, 1.0], "min(0.0, z)");
}

#[test]
fn max_gradient_goes_to_b_only_where_b_is_greater() {
    let (a, b) = ([3.0, 1.0, -INF, 0.0], [1.0, 3.0, -5.0, -0.0]);
    let (ga, gb) = binary_grads(|a, b| max(a, b), &a, &b, Some(&[2.0, 3.0, 4.0, 5.0]));
    assert_same(&ga, &[2.0, 0.0, 0.0, 5.0], "grad a");
    assert_same(&gb, &[0.0, 3.0, 4.0, 0.0], "grad b");
}

#[test]
fn min_gradient_goes_to_b_only_where_b_is_less() {
    let (a, b) = ([3.0, 1.0, INF, 0.0], [1.0, 3.0, 5.0, -0.0]);
    let (ga, gb) = binary_grads(|a, b| min(a, b), &a, &b, Some(&[2.0, 3.0, 4.0, 5.0]));
    assert_same(&ga, &[0.0, 3.0, 0.0, 5.0], "grad a");
    assert_same(&gb, &[2.0, 0.0, 4.0, 0.0], "grad b");
}

#[test]
fn max_gradient_goes_to_first_operand_where_either_is_nan() {
    let (a, b) = ([NAN, 1.0, NAN], [1.0, NAN, NAN]);
    for seed in [None, Some(&[2.0, 3.0, 4.0][..])] {
        let (ga, gb) = binary_grads(|a, b| max(a, b), &a, &b, seed);
        assert_same(&ga, seed.unwrap_or(&[1.0; 3]), "grad a");
        assert_same(&gb, &[0.0; 3], "grad b");
    }
}

#[test]
fn min_gradient_goes_to_first_operand_where_either_is_nan() {
    let (a, b) = ([NAN, 1.0, NAN], [1.0, NAN, NAN]);
    for seed in [None, Some(&[2.0, 3.0, 4.0][..])] {
        let (ga, gb) = binary_grads(|a, b| min(a, b), &a, &b, seed);
        assert_same(&ga, seed.unwrap_or(&[1.0; 3]), "grad a");
        assert_same(&gb, &[0.0; 3], "grad b");
    }
}

#[test]
fn max_gradient_is_exactly_zero_for_the_routed_away_side_even_with_inf_upstream() {
    // b wins at 1 and 3; the upstream there is NaN and -inf, elsewhere inf and NaN.
    let (a, b) = ([3.0, 1.0, 5.0, -1.0], [1.0, 3.0, 2.0, 4.0]);
    let seed = [INF, NAN, NAN, -INF];
    let (ga, gb) = binary_grads(|a, b| max(a, b), &a, &b, Some(&seed));
    assert_same(&ga, &[INF, 0.0, NAN, 0.0], "grad a");
    assert_same(&gb, &[0.0, NAN, 0.0, -INF], "grad b");
}

#[test]
fn min_gradient_is_exactly_zero_for_the_routed_away_side_even_with_inf_upstream() {
    let (a, b) = ([1.0, 3.0, 2.0, 4.0], [3.0, 1.0, 5.0, -1.0]);
    let seed = [INF, NAN, NAN, -INF];
    let (ga, gb) = binary_grads(|a, b| min(a, b), &a, &b, Some(&seed));
    assert_same(&ga, &[INF, 0.0, NAN, 0.0], "grad a");
    assert_same(&gb, &[0.0, NAN, 0.0, -INF], "grad b");
}

#[test]
fn max_with_a_scalar_inf_upstream_still_gives_exact_zeros() {
    // A one-element seed takes the uniform-upstream path of the backward.
    let tape = Tape::new();
    let (a, b) = (
        tape.var(Tensor::from(vec![3.0, 1.0])),
        tape.var(Tensor::from(vec![1.0, 3.0])),
    );
    let g = (max(a, b).sum() * INF).backward();
    assert_same(g.wrt(a).data(), &[INF, 0.0], "grad a");
    assert_same(g.wrt(b).data(), &[0.0, INF], "grad b");
}

// ---- a zero upstream is a hard zero --------------------------------------------------------------

#[test]
fn mul_with_zero_upstream_gives_zero_not_nan() {
    // The hinge with target = inf: where pred * target >= 1 the element is inactive, the
    // upstream reaching `pred * target` is 0, and 0 * inf must not become NaN.
    let tape = Tape::new();
    let pred = tape.var(Tensor::from(vec![1.0, -1.0, 0.5, 2.0]));
    let target = tape.constant(Tensor::from(vec![INF, INF, 1.0, -1.0]));
    let g = hinge(pred, target).backward();
    assert_same(g.wrt(pred).data(), &[0.0, -INF, -0.25, 0.25], "hinge grad");

    // Directly: a zero seed against inf and NaN factors.
    let tape = Tape::new();
    let x = tape.var(Tensor::from(vec![1.0, 2.0, 3.0]));
    let c = tape.constant(Tensor::from(vec![INF, NAN, 3.0]));
    let g = (x * c).backward_with(Tensor::from(vec![0.0, -0.0, 1.0]));
    assert_eq!(g.wrt(x).data(), &[0.0, 0.0, 3.0]);
}

#[test]
fn div_with_zero_upstream_gives_zero_not_nan() {
    // d(a/b)/da = 1/b = inf at b = 0, d(a/b)/db = -a/b^2 = NaN at a = b = 0.
    let tape = Tape::new();
    let a = tape.var(Tensor::from(vec![1.0, 0.0, 6.0]));
    let b = tape.var(Tensor::from(vec![0.0, 0.0, 2.0]));
    let g = (a / b).backward_with(Tensor::from(vec![0.0, 0.0, 1.0]));
    assert_eq!(g.wrt(a).data(), &[0.0, 0.0, 0.5]);
    assert_eq!(g.wrt(b).data(), &[0.0, 0.0, -1.5]);
}

#[test]
fn exp_and_ln_with_zero_upstream_give_zero_not_nan() {
    // exp(1000) = inf and ln'(0) = 1/0 = inf: the local derivatives are infinite.
    let tape = Tape::new();
    let x = tape.var(Tensor::from(vec![1000.0, 0.0]));
    let g = x.exp().backward_with(Tensor::from(vec![0.0, 1.0]));
    assert_eq!(g.wrt(x).data(), &[0.0, 1.0]);
    let g = x.ln().backward_with(Tensor::from(vec![1.0, 0.0]));
    assert_eq!(g.wrt(x).data(), &[0.001, 0.0]);
}

#[test]
fn matmul_with_zero_upstream_gives_zero_not_nan() {
    // out = a b, a [1, 2], b [2, 2] with b[0][0] = inf. Seeding out[0][0] with 0 says the
    // loss does not depend on it, so b[0][0] = inf must not reach a's gradient:
    // grad a = seed b^T = [0 * inf + 1 * 1, 0 * 1 + 1 * 1] with the zero a hard zero.
    let tape = Tape::new();
    let a = tape.var(Tensor::new(vec![1.0, 2.0], &[1, 2]).unwrap());
    let b = tape.var(Tensor::new(vec![INF, 1.0, 1.0, 1.0], &[2, 2]).unwrap());
    let g = a
        .matmul(b)
        .backward_with(Tensor::new(vec![0.0, 1.0], &[1, 2]).unwrap());
    assert_same(g.wrt(a).data(), &[1.0, 1.0], "grad a");
    // grad b = a^T seed = [[1 * 0, 1 * 1], [2 * 0, 2 * 1]]: finite either way.
    assert_same(g.wrt(b).data(), &[0.0, 1.0, 0.0, 2.0], "grad b");
}

// ---- IEEE arithmetic ----------------------------------------------------------------------------

#[test]
fn division_by_zero_is_ieee() {
    let got = values(
        |a, b| a / b,
        &[1.0, 0.0, -1.0, 1.0, -1.0],
        &[0.0, 0.0, 0.0, -0.0, -0.0],
    );
    assert_same(&got, &[INF, NAN, -INF, -INF, INF], "x / 0");
}

#[test]
fn division_matches_numpy_on_every_pair_of_special_values() {
    assert_matches_numpy("div", |a, b| a / b);
}

// ---- summation ----------------------------------------------------------------------------------

#[test]
fn sum_is_pairwise_and_as_accurate_as_numpy() {
    let n = 1_000_000usize;
    let tape = Tape::new();
    let got = tape.var(Tensor::full(&[n], 0.1)).sum().value().item();

    // The exact sum of n copies of fl(0.1) = 0x1999999999999A * 2^-56, rounded once.
    let mantissa: u64 = 0x19_9999_9999_999A;
    let scale = 2f64.powi(-56);
    assert_eq!(mantissa as f64 * scale, 0.1);
    let exact = (u128::from(mantissa) * n as u128) as f64 * scale;
    assert_eq!(exact, 100000.0);
    let rel = |s: f64| (s - exact).abs() / exact;

    // np.sum(np.full(10**6, 0.1)) with numpy 2.4.6: the same blocking, the same bits.
    assert_eq!(got, 100000.00000000003, "np.sum gives 100000.00000000003");
    assert!(rel(got) < 1e-9);
    assert!(rel(got) < 1e-15, "pairwise error {:e}", rel(got));

    // A left-to-right sum drifts far outside that bound, so the bound means something.
    let naive = (0..n).fold(0.0, |acc, _| acc + 0.1);
    assert_eq!(naive, 100000.00000133288);
    assert!(rel(naive) > 1e-12, "naive error {:e}", rel(naive));
    assert!(rel(naive) > 1000.0 * rel(got));
}

// ---- panics that say what went wrong -----------------------------------------------------------

#[test]
fn shape_mismatch_panics_naming_op_shapes_and_caller_line() {
    let tape = Tape::new();
    let a = tape.var(Tensor::from(vec![1.0, 2.0, 3.0]));
    let b = tape.var(Tensor::from(vec![1.0, 2.0, 3.0, 4.0]));
    let (line, message) = (line!(), panic_message(|| a * b));
    assert_mentions(
        &message,
        &["mul", "[3]", "[4]", &format!("semantics.rs:{line}:")],
    );
}

#[test]
fn two_tapes_in_one_op_panics() {
    let (t1, t2) = (Tape::new(), Tape::new());
    let (a, b) = (t1.var(Tensor::scalar(1.0)), t2.var(Tensor::scalar(2.0)));
    let message = panic_message(|| a + b);
    assert_mentions(&message, &["add", "different tapes"]);
    let message = panic_message(|| max(b, a));
    assert_mentions(&message, &["max", "different tapes"]);
}

#[test]
fn backward_on_non_scalar_panics_and_names_backward_with() {
    let tape = Tape::new();
    let x = tape.var(Tensor::from(vec![1.0, 2.0, 3.0]));
    let message = panic_message(|| (x * 2.0).backward());
    assert_mentions(&message, &["backward", "[3]", "backward_with"]);
}

#[test]
fn wrt_on_constant_panics_clearly() {
    let tape = Tape::new();
    let x = tape.var(Tensor::scalar(2.0));
    let c = tape.constant(Tensor::scalar(3.0));
    let g = (x * c).backward();
    let message = panic_message(|| g.wrt(c).clone());
    assert_mentions(&message, &["wrt", "constant", "Tape::var"]);
}

#[test]
fn wrt_on_intermediate_panics_clearly() {
    let tape = Tape::new();
    let x = tape.var(Tensor::scalar(2.0));
    let y = x * 3.0;
    let g = (y * y).backward();
    let message = panic_message(|| g.wrt(y).clone());
    assert_mentions(&message, &["wrt", "intermediate"]);
}

#[test]
fn wrt_on_unused_var_gives_zeros_of_its_shape() {
    let tape = Tape::new();
    let unused = tape.var(Tensor::new(vec![5.0; 6], &[2, 3]).unwrap());
    let x = tape.var(Tensor::from(vec![1.0, 2.0]));
    let g = (x * x).sum().backward();
    assert_eq!(g.wrt(unused), &Tensor::zeros(&[2, 3]));
    assert_eq!(g.wrt(x).data(), &[2.0, 4.0]);
}

#[test]
fn adding_an_op_while_a_value_guard_is_alive_panics_saying_so() {
    let tape = Tape::new();
    let x = tape.var(Tensor::scalar(2.0));
    let message = panic_message(|| {
        let guard = x.value();
        let y = x + x;
        drop(guard);
        y
    });
    assert_mentions(&message, &["add", "value()", "drop"]);
}

#[test]
fn value_guard_panic_names_the_callers_line_with_an_f64_operand_too() {
    let tape = Tape::new();
    let x = tape.var(Tensor::scalar(2.0));
    let guard = x.value();
    let (line, message) = (line!(), panic_message(|| x + 1.0));
    assert_mentions(&message, &["value()", &format!("semantics.rs:{line}:")]);
    let (line, message) = (line!(), panic_message(|| max(0.0, x)));
    assert_mentions(&message, &["value()", &format!("semantics.rs:{line}:")]);
    drop(guard);
}

#[test]
fn tensor_new_wrong_length_is_err_naming_length_and_shape() {
    let err = Tensor::new(vec![1.0; 5], &[2, 3]).unwrap_err();
    let message = err.to_string();
    assert_mentions(&message, &["5", "[2, 3]", "6"]);
}

#[test]
fn item_on_many_elements_panics_saying_so() {
    let t = Tensor::new(vec![1.0, 2.0], &[2, 1]).unwrap();
    let message = panic_message(|| t.item());
    assert_mentions(&message, &["item", "[2, 1]", "2 elements", "exactly one"]);
    assert_eq!(Tensor::new(vec![7.0], &[1, 1]).unwrap().item(), 7.0);
}

#[test]
fn error_implements_std_error() {
    fn build() -> Result<Tensor, Box<dyn std::error::Error>> {
        Ok(Tensor::new(vec![1.0], &[2])?)
    }
    let err = build().unwrap_err();
    assert!(err.source().is_none());
    assert_mentions(&err.to_string(), &["Tensor::new", "[2]"]);
}

// ---- a long chain: no recursion, and dropping is fine -----------------------------------------------

const OPS: usize = 1_000_000;
const FACTOR: f64 = 1.0000001;

/// `y = x`, then `OPS` ops alternating `y * FACTOR` and `y + 0.0`; 2 * OPS + 1 nodes
/// (each f64 operand is a constant node).
fn long_chain(tape: &Tape) -> (Var<'_>, Var<'_>) {
    let x = tape.var(Tensor::scalar(1.0));
    let mut y = x;
    for i in 0..OPS {
        y = if i % 2 == 0 { y * FACTOR } else { y + 0.0 };
    }
    (x, y)
}

/// Run `f` on a thread with a 2 MiB stack: deep recursion would overflow it.
fn on_small_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap_or_else(|payload| std::panic::resume_unwind(payload));
}

#[test]
fn a_chain_of_one_million_ops_differentiates_and_drops() {
    on_small_stack(|| {
        let tape = Tape::new();
        let (x, y) = long_chain(&tape);
        assert_eq!(tape.len(), 2 * OPS + 1);
        let value = y.value().item();
        let grad = y.backward().wrt(x).item();
        drop(tape);
        // y = x * FACTOR^(OPS / 2), so dy/dx = FACTOR^(OPS / 2) too; the tape multiplies
        // the same factors in the same order forwards and backwards.
        let closed_form = FACTOR.powi((OPS / 2) as i32);
        assert!(
            (grad - closed_form).abs() <= 1e-9 * closed_form,
            "grad {grad}, closed form {closed_form}"
        );
        assert!(
            (value - closed_form).abs() <= 1e-9 * closed_form,
            "value {value}"
        );
        assert_eq!(grad, value);
    });
}

#[test]
fn a_chain_of_one_million_ops_drops_without_backward() {
    on_small_stack(|| {
        let tape = Tape::new();
        let (_, y) = long_chain(&tape);
        assert_eq!(y.index(), 2 * OPS);
        drop(tape);
    });
}

#[test]
fn a_scalar_broadcast_over_an_empty_var_gets_zero_even_from_an_inf_upstream() {
    // mean of nothing sends back 1/0 = inf as one number; summed over no elements it is 0.
    let tape = Tape::new();
    let c = tape.var(Tensor::scalar(1.5));
    let x = tape.var(Tensor::from(vec![]));
    let g = (c + x).mean().backward();
    assert_eq!(g.wrt(c).data(), &[0.0]);
    let row = tape.var(Tensor::new(vec![1.0, 2.0, 3.0], &[1, 3]).unwrap());
    let empty = tape.var(Tensor::new(vec![], &[0, 3]).unwrap());
    let g = (row - empty).mean().backward();
    assert_eq!(g.wrt(row).data(), &[0.0; 3]);
}

#[test]
fn a_sweep_that_panicked_leaves_nothing_behind_for_the_next() {
    let tape = Tape::new();
    let x = tape.var(Tensor::from(vec![1.0, 2.0]));
    let a = x * 3.0;
    // A custom op whose backward returns no gradient at all: the engine panics mid-sweep,
    // after `a` has already received its gradient from `b + a`.
    let b = tape.custom("bad", &[a], |v| v[0].clone(), |_, _, _| vec![]);
    let sweep = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (b + a).sum().backward()));
    assert!(sweep.is_err());
    let g = a.sum().backward();
    assert_eq!(g.wrt(x).data(), &[3.0, 3.0]);
}

#[test]
fn tensor_new_with_a_shape_too_large_for_usize_is_an_error() {
    let err = Tensor::new(vec![], &[1 << 32, 1 << 32]).unwrap_err();
    assert!(
        err.to_string().contains("[4294967296, 4294967296]"),
        "{err}"
    );
}

#[test]
fn sum_axis_over_the_last_axis_is_pairwise_like_sum() {
    let values: Vec<f64> = (0..1000)
        .map(|i| ((i * 7919) % 1013) as f64 * 0.1 + 1e-3)
        .collect();
    let tape = Tape::new();
    let x = tape.constant(Tensor::new(values.clone(), &[1, 1000]).unwrap());
    let by_axis = x.sum_axis(1).value().item();
    let whole = x.sum().value().item();
    assert_eq!(by_axis.to_bits(), whole.to_bits());
    assert_eq!(whole, tapegrad::pairwise_sum(&values));
}

type Binary = for<'t> fn(Var<'t>, Var<'t>) -> Var<'t>;
type Unary = for<'t> fn(Var<'t>) -> Var<'t>;

/// A leaf holding `x`: rank 0, or the tensor `[x, x]`.
fn leaf(tape: &Tape, x: f64, rank0: bool) -> Var<'_> {
    tape.var(if rank0 {
        Tensor::scalar(x)
    } else {
        Tensor::from(vec![x, x])
    })
}

/// Gradients of `op` at the inputs for the upstream `u` (first element of each).
fn grads_with_upstream(op: Operator, inputs: &[f64], rank0: bool, u: f64) -> Vec<f64> {
    let tape = Tape::new();
    let vars: Vec<Var> = inputs.iter().map(|&x| leaf(&tape, x, rank0)).collect();
    let y = match op {
        Operator::Unary(f) => f(vars[0]),
        Operator::Binary(f) => f(vars[0], vars[1]),
    };
    let seed = if rank0 {
        Tensor::scalar(u)
    } else {
        Tensor::from(vec![u, u])
    };
    let g = y.backward_with(seed);
    vars.iter().map(|&v| g.wrt(v).data()[0]).collect()
}

#[derive(Clone, Copy)]
enum Operator {
    Unary(Unary),
    Binary(Binary),
}

/// Elementwise ops carry their backward rule twice: on plain numbers for rank-0 nodes
/// and over tensors. Both must give the same bits for every special value and upstream.
#[test]
fn rank0_and_tensor_backward_rules_agree_bit_for_bit_on_special_values() {
    let specials = [NAN, INF, -INF, 0.0, -0.0, 1.0, -1.0, 2.0];
    let upstreams = [0.0, 1.0, -3.0, INF, NAN];
    let ops: [(&str, Operator); 9] = [
        ("add", Operator::Binary(|a, b| a + b)),
        ("sub", Operator::Binary(|a, b| a - b)),
        ("mul", Operator::Binary(|a, b| a * b)),
        ("div", Operator::Binary(|a, b| a / b)),
        ("max", Operator::Binary(|a, b| max(a, b))),
        ("min", Operator::Binary(|a, b| min(a, b))),
        ("neg", Operator::Unary(|a| -a)),
        ("exp", Operator::Unary(|a| a.exp())),
        ("ln", Operator::Unary(|a| a.ln())),
    ];
    let mut mismatches = Vec::new();
    for &u in &upstreams {
        for &a in &specials {
            for &b in &specials {
                for (name, op) in ops {
                    let inputs = match op {
                        Operator::Unary(_) => vec![a],
                        Operator::Binary(_) => vec![a, b],
                    };
                    let scalar = grads_with_upstream(op, &inputs, true, u);
                    let tensor = grads_with_upstream(op, &inputs, false, u);
                    if !scalar.iter().zip(&tensor).all(|(&s, &t)| same_bits(s, t)) {
                        mismatches.push(format!(
                            "{name}{inputs:?} upstream {u}: rank-0 {scalar:?}, tensor {tensor:?}"
                        ));
                    }
                }
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
