//! Every op, checked two ways: its value against a direct computation written out in
//! this file, and the tape's gradient of a scalar function of it against central finite
//! differences (each evaluation on a fresh tape).
//!
//! Each gradient is checked under two losses: plain `.sum()` (a uniform upstream, which
//! the engine keeps as one number) and `(op(..) * w).sum()` with a fixed random `w` (a
//! non-uniform upstream). Inputs stay away from kinks (`|a - b| > 0.1` for max/min) and
//! from the poles of div and ln, so finite differences are accurate to ~1e-9.

use tapegrad::{Tape, Tensor, Var, max, min};

// ---- helpers -------------------------------------------------------------------------

/// splitmix64: a tiny deterministic PRNG, so the tests need no dependency.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        lo + (hi - lo) * unit
    }

    /// Elements uniform in `[lo, hi)`.
    fn tensor(&mut self, shape: &[usize], lo: f64, hi: f64) -> Tensor {
        let n = shape.iter().product();
        Tensor::new((0..n).map(|_| self.uniform(lo, hi)).collect(), shape).unwrap()
    }

    /// Magnitudes uniform in `[lo, hi)` with a random sign (keeps elements away from 0).
    fn signed(&mut self, shape: &[usize], lo: f64, hi: f64) -> Tensor {
        let n = shape.iter().product();
        let data = (0..n)
            .map(|_| {
                let m = self.uniform(lo, hi);
                if self.next_u64() & 1 == 0 { m } else { -m }
            })
            .collect();
        Tensor::new(data, shape).unwrap()
    }
}

/// Central finite differences of `f` at `x`, step `h = 1e-6 * max(1, |x_i|)`.
fn fd_grad(f: impl Fn(&Tensor) -> f64, x: &Tensor) -> Tensor {
    let mut data = x.data().to_vec();
    let mut grad = Vec::with_capacity(data.len());
    for i in 0..data.len() {
        let xi = data[i];
        let h = 1e-6 * xi.abs().max(1.0);
        let (plus, minus) = (xi + h, xi - h);
        data[i] = plus;
        let f_plus = f(&Tensor::new(data.clone(), x.shape()).unwrap());
        data[i] = minus;
        let f_minus = f(&Tensor::new(data.clone(), x.shape()).unwrap());
        data[i] = xi;
        // Divide by the step actually taken (plus - minus is exact here, 2h may not be).
        grad.push((f_plus - f_minus) / (plus - minus));
    }
    Tensor::new(grad, x.shape()).unwrap()
}

/// The gradient has the operand's shape and every element is within 1e-6 of the finite
/// difference, relative to `max(1, |want|)` (gradients here are O(1)).
fn assert_grad_close(got: &Tensor, want: &Tensor, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: gradient shape");
    for (i, (&g, &w)) in got.data().iter().zip(want.data()).enumerate() {
        let tol = 1e-6 * w.abs().max(1.0);
        assert!(
            (g - w).abs() <= tol,
            "{what}: element {i}: tape {g}, finite differences {w} (|diff| {:e} > {tol:e})\n  \
             tape: {got:?}\n  fd:   {want:?}",
            (g - w).abs()
        );
    }
}

/// Differentiate the scalar `loss(vars)` on a tape and compare the gradient of every
/// input with finite differences.
fn check_gradients(what: &str, inputs: &[Tensor], loss: impl for<'t> Fn(&[Var<'t>]) -> Var<'t>) {
    let tape = Tape::new();
    let vars: Vec<Var> = inputs.iter().map(|x| tape.var(x.clone())).collect();
    let grads = loss(&vars).backward();
    for (k, x) in inputs.iter().enumerate() {
        let numeric = fd_grad(
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
        assert_grad_close(
            grads.wrt(vars[k]),
            &numeric,
            &format!("{what}: d/d(input {k})"),
        );
    }
}

/// Both losses of the module docs over `out`, which has shape `out_shape`.
fn check_both_losses(
    what: &str,
    inputs: &[Tensor],
    out_shape: &[usize],
    rng: &mut Rng,
    op: impl for<'t> Fn(&[Var<'t>]) -> Var<'t>,
) {
    check_gradients(&format!("{what}, loss sum"), inputs, |v| op(v).sum());
    let w = rng.tensor(out_shape, -2.0, 2.0);
    check_gradients(&format!("{what}, loss (out * w).sum"), inputs, |v| {
        (op(v) * v[0].tape().constant(w.clone())).sum()
    });
}

fn broadcast_shape(a: &[usize], b: &[usize]) -> Vec<usize> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], d: usize| {
        let pad = rank - s.len();
        if d < pad { 1 } else { s[d - pad] }
    };
    (0..rank)
        .map(|d| match (dim(a, d), dim(b, d)) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            (x, y) => panic!("test bug: {a:?} and {b:?} do not broadcast ({x} vs {y})"),
        })
        .collect()
}

/// Row-major multi-index of `flat` in `shape`.
fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        index[d] = flat % shape[d];
        flat /= shape[d];
    }
    index
}

/// Flat position in an operand of `shape` of the broadcast element at `index`.
fn broadcast_offset(index: &[usize], shape: &[usize]) -> usize {
    let pad = index.len() - shape.len();
    shape.iter().enumerate().fold(0, |offset, (d, &n)| {
        offset * n + if n == 1 { 0 } else { index[pad + d] }
    })
}

/// `f` elementwise over the numpy broadcast of `a` and `b`, written out directly.
fn broadcast_zip(a: &Tensor, b: &Tensor, f: impl Fn(f64, f64) -> f64) -> Tensor {
    let out = broadcast_shape(a.shape(), b.shape());
    let n = out.iter().product();
    let data = (0..n)
        .map(|flat| {
            let index = unravel(flat, &out);
            f(
                a.data()[broadcast_offset(&index, a.shape())],
                b.data()[broadcast_offset(&index, b.shape())],
            )
        })
        .collect();
    Tensor::new(data, &out).unwrap()
}

fn map(x: &Tensor, f: impl Fn(f64) -> f64) -> Tensor {
    Tensor::new(x.data().iter().map(|&v| f(v)).collect(), x.shape()).unwrap()
}

type Binary = for<'t> fn(Var<'t>, Var<'t>) -> Var<'t>;
type Unary = for<'t> fn(Var<'t>) -> Var<'t>;

/// Value of `op(a, b)` equals `reference` elementwise over the broadcast (exactly: the
/// same IEEE operation), and both gradients match finite differences and have their
/// operand's shape.
fn check_binary(name: &str, op: Binary, reference: fn(f64, f64) -> f64, a: &Tensor, b: &Tensor) {
    let what = format!("{name} {:?} with {:?}", a.shape(), b.shape());
    let want = broadcast_zip(a, b, reference);
    let tape = Tape::new();
    let got = op(tape.var(a.clone()), tape.var(b.clone())).value().clone();
    assert_eq!(got.shape(), want.shape(), "{what}: value shape");
    assert_eq!(got.data(), want.data(), "{what}: value");
    let mut rng = Rng(0xC0FFEE ^ a.len() as u64 ^ ((b.len() as u64) << 16));
    check_both_losses(
        &what,
        &[a.clone(), b.clone()],
        want.shape(),
        &mut rng,
        |v| op(v[0], v[1]),
    );
}

/// Value of `op(x)` equals `reference(x)` within `value_rel` relative error (0: exactly),
/// and the gradient matches finite differences.
fn check_unary(
    name: &str,
    op: Unary,
    reference: impl Fn(&Tensor) -> Tensor,
    x: &Tensor,
    value_rel: f64,
) {
    let what = format!("{name} of {:?}", x.shape());
    let want = reference(x);
    let tape = Tape::new();
    let got = op(tape.var(x.clone())).value().clone();
    assert_eq!(got.shape(), want.shape(), "{what}: value shape");
    for (i, (&g, &w)) in got.data().iter().zip(want.data()).enumerate() {
        assert!(
            g == w || (g - w).abs() <= value_rel * w.abs(),
            "{what}: value element {i}: tape {g}, direct {w}"
        );
    }
    let mut rng = Rng(0xBEEF ^ x.len() as u64);
    check_both_losses(
        &what,
        std::slice::from_ref(x),
        want.shape(),
        &mut rng,
        |v| op(v[0]),
    );
}

/// Shape pairs that broadcast, each also tried the other way round.
const BROADCAST_PAIRS: [(&[usize], &[usize]); 4] = [
    (&[3, 4], &[4]),
    (&[3, 1], &[1, 4]),
    (&[], &[2, 3]),
    (&[2, 3, 4], &[3, 1]),
];

/// Operands for every broadcast pair, both orders; `make(rng, shape, is_second)`.
fn broadcast_operands(
    seed: u64,
    make: impl Fn(&mut Rng, &[usize], bool) -> Tensor,
) -> Vec<(Tensor, Tensor)> {
    let mut rng = Rng(seed);
    let mut pairs = Vec::new();
    for (s, t) in BROADCAST_PAIRS {
        pairs.push((make(&mut rng, s, false), make(&mut rng, t, true)));
        pairs.push((make(&mut rng, t, false), make(&mut rng, s, true)));
    }
    pairs
}

/// Operands of max/min whose broadcast pairs are all more than 0.1 apart.
fn apart(rng: &mut Rng, a: &[usize], b: &[usize]) -> (Tensor, Tensor) {
    for _ in 0..1000 {
        let (x, y) = (rng.tensor(a, -2.0, 2.0), rng.tensor(b, -2.0, 2.0));
        if broadcast_zip(&x, &y, |p, q| (p - q).abs())
            .data()
            .iter()
            .all(|&d| d > 0.1)
        {
            return (x, y);
        }
    }
    panic!("test bug: no operands 0.1 apart for {a:?} and {b:?}");
}

fn same_shape_operands(seed: u64, shape: &[usize]) -> (Tensor, Tensor) {
    let mut rng = Rng(seed);
    (rng.tensor(shape, -2.0, 2.0), rng.tensor(shape, -2.0, 2.0))
}

// ---- add, sub, mul, div: same shapes -------------------------------------------------

#[test]
fn add_value_and_gradients_match_direct_computation_and_finite_differences() {
    let (a, b) = same_shape_operands(1, &[3, 4]);
    check_binary("add", |a, b| a + b, |x, y| x + y, &a, &b);
}

#[test]
fn sub_value_and_gradients_match_direct_computation_and_finite_differences() {
    let (a, b) = same_shape_operands(2, &[3, 4]);
    check_binary("sub", |a, b| a - b, |x, y| x - y, &a, &b);
}

#[test]
fn mul_value_and_gradients_match_direct_computation_and_finite_differences() {
    let (a, b) = same_shape_operands(3, &[3, 4]);
    check_binary("mul", |a, b| a * b, |x, y| x * y, &a, &b);
}

#[test]
fn div_value_and_gradients_match_direct_computation_and_finite_differences() {
    let mut rng = Rng(4);
    let (a, b) = (
        rng.tensor(&[3, 4], -2.0, 2.0),
        rng.signed(&[3, 4], 0.5, 2.0),
    );
    check_binary("div", |a, b| a / b, |x, y| x / y, &a, &b);
}

#[test]
fn max_value_and_gradients_match_direct_computation_and_finite_differences() {
    let (a, b) = apart(&mut Rng(5), &[3, 4], &[3, 4]);
    check_binary("max", |a, b| max(a, b), f64::max, &a, &b);
}

#[test]
fn min_value_and_gradients_match_direct_computation_and_finite_differences() {
    let (a, b) = apart(&mut Rng(6), &[3, 4], &[3, 4]);
    check_binary("min", |a, b| min(a, b), f64::min, &a, &b);
}

#[test]
fn max_and_min_methods_equal_the_free_functions() {
    let (a, b) = apart(&mut Rng(7), &[3, 4], &[3, 4]);
    check_binary("a.max(b)", |a, b| a.max(b), f64::max, &a, &b);
    check_binary("a.min(b)", |a, b| a.min(b), f64::min, &a, &b);
}

#[test]
fn max_and_min_route_gradient_to_both_operands_in_these_inputs() {
    // Guards the two tests above: the random inputs must exercise both sides.
    for seed in [5, 6] {
        let (a, b) = apart(&mut Rng(seed), &[3, 4], &[3, 4]);
        let a_wins = a.data().iter().zip(b.data()).filter(|(x, y)| x > y).count();
        assert!(
            0 < a_wins && a_wins < 12,
            "seed {seed}: a wins {a_wins} of 12"
        );
    }
}

// ---- add, sub, mul, div, max, min: broadcasting ----------------------------------------

#[test]
fn add_broadcasts_and_reduces_each_gradient_to_its_operand_shape() {
    for (a, b) in broadcast_operands(11, |r, s, _| r.tensor(s, -2.0, 2.0)) {
        check_binary("add", |a, b| a + b, |x, y| x + y, &a, &b);
    }
}

#[test]
fn sub_broadcasts_and_reduces_each_gradient_to_its_operand_shape() {
    for (a, b) in broadcast_operands(12, |r, s, _| r.tensor(s, -2.0, 2.0)) {
        check_binary("sub", |a, b| a - b, |x, y| x - y, &a, &b);
    }
}

#[test]
fn mul_broadcasts_and_reduces_each_gradient_to_its_operand_shape() {
    for (a, b) in broadcast_operands(13, |r, s, _| r.tensor(s, -2.0, 2.0)) {
        check_binary("mul", |a, b| a * b, |x, y| x * y, &a, &b);
    }
}

#[test]
fn div_broadcasts_and_reduces_each_gradient_to_its_operand_shape() {
    let make = |r: &mut Rng, s: &[usize], denominator: bool| {
        if denominator {
            r.signed(s, 0.5, 2.0)
        } else {
            r.tensor(s, -2.0, 2.0)
        }
    };
    for (a, b) in broadcast_operands(14, make) {
        check_binary("div", |a, b| a / b, |x, y| x / y, &a, &b);
    }
}

#[test]
fn max_broadcasts_and_reduces_each_gradient_to_its_operand_shape() {
    let mut rng = Rng(15);
    for (s, t) in BROADCAST_PAIRS {
        for (s, t) in [(s, t), (t, s)] {
            let (a, b) = apart(&mut rng, s, t);
            check_binary("max", |a, b| max(a, b), f64::max, &a, &b);
        }
    }
}

#[test]
fn min_broadcasts_and_reduces_each_gradient_to_its_operand_shape() {
    let mut rng = Rng(16);
    for (s, t) in BROADCAST_PAIRS {
        for (s, t) in [(s, t), (t, s)] {
            let (a, b) = apart(&mut rng, s, t);
            check_binary("min", |a, b| min(a, b), f64::min, &a, &b);
        }
    }
}

// ---- Var with f64, f64 with Var --------------------------------------------------------

fn operand(seed: u64) -> Tensor {
    // Magnitudes in [0.5, 2): away from 0 (div) and from the f64 operands 0.3 / -0.3
    // (max/min kinks).
    Rng(seed).signed(&[3, 4], 0.5, 2.0)
}

#[test]
fn add_with_f64_on_either_side() {
    let x = operand(21);
    check_unary("x + 0.7", |x| x + 0.7, |t| map(t, |v| v + 0.7), &x, 0.0);
    check_unary("0.7 + x", |x| 0.7 + x, |t| map(t, |v| 0.7 + v), &x, 0.0);
}

#[test]
fn sub_with_f64_on_either_side() {
    let x = operand(22);
    check_unary("x - 0.7", |x| x - 0.7, |t| map(t, |v| v - 0.7), &x, 0.0);
    check_unary("0.7 - x", |x| 0.7 - x, |t| map(t, |v| 0.7 - v), &x, 0.0);
}

#[test]
fn mul_with_f64_on_either_side() {
    let x = operand(23);
    check_unary("x * -1.3", |x| x * -1.3, |t| map(t, |v| v * -1.3), &x, 0.0);
    check_unary("-1.3 * x", |x| -1.3 * x, |t| map(t, |v| -1.3 * v), &x, 0.0);
}

#[test]
fn div_with_f64_on_either_side() {
    let x = operand(24);
    check_unary("x / -1.3", |x| x / -1.3, |t| map(t, |v| v / -1.3), &x, 0.0);
    check_unary("-1.3 / x", |x| -1.3 / x, |t| map(t, |v| -1.3 / v), &x, 0.0);
}

#[test]
fn max_with_f64_on_either_side() {
    let x = operand(25);
    check_unary(
        "max(x, 0.3)",
        |x| max(x, 0.3),
        |t| map(t, |v| v.max(0.3)),
        &x,
        0.0,
    );
    check_unary(
        "max(0.3, x)",
        |x| max(0.3, x),
        |t| map(t, |v| v.max(0.3)),
        &x,
        0.0,
    );
    check_unary(
        "x.max(0.3)",
        |x| x.max(0.3),
        |t| map(t, |v| v.max(0.3)),
        &x,
        0.0,
    );
}

#[test]
fn min_with_f64_on_either_side() {
    let x = operand(26);
    check_unary(
        "min(x, -0.3)",
        |x| min(x, -0.3),
        |t| map(t, |v| v.min(-0.3)),
        &x,
        0.0,
    );
    check_unary(
        "min(-0.3, x)",
        |x| min(-0.3, x),
        |t| map(t, |v| v.min(-0.3)),
        &x,
        0.0,
    );
    check_unary(
        "x.min(-0.3)",
        |x| x.min(-0.3),
        |t| map(t, |v| v.min(-0.3)),
        &x,
        0.0,
    );
}

// ---- unary elementwise ------------------------------------------------------------------

#[test]
fn neg_value_and_gradient() {
    let x = Rng(31).tensor(&[3, 4], -2.0, 2.0);
    check_unary("neg", |x| -x, |t| map(t, |v| -v), &x, 0.0);
}

#[test]
fn exp_value_and_gradient() {
    let x = Rng(32).tensor(&[3, 4], -2.0, 2.0);
    check_unary("exp", |x| x.exp(), |t| map(t, f64::exp), &x, 0.0);
}

#[test]
fn ln_value_and_gradient() {
    let x = Rng(33).tensor(&[3, 4], 0.5, 3.0);
    check_unary("ln", |x| x.ln(), |t| map(t, f64::ln), &x, 0.0);
}

// ---- reductions and shape ops -------------------------------------------------------------

fn naive_sum(x: &[f64]) -> f64 {
    x.iter().sum()
}

#[test]
fn sum_value_and_gradient() {
    let x = Rng(41).tensor(&[2, 3, 4], -2.0, 2.0);
    let direct = |t: &Tensor| Tensor::scalar(naive_sum(t.data()));
    check_unary("sum", |x| x.sum(), direct, &x, 1e-14);
}

#[test]
fn sum_of_a_large_input_still_has_the_right_gradient() {
    // 300 elements: past the 128-element block of the pairwise summation.
    let x = Rng(42).tensor(&[300], -2.0, 2.0);
    let direct = |t: &Tensor| Tensor::scalar(naive_sum(t.data()));
    check_unary("sum", |x| x.sum(), direct, &x, 1e-13);
}

#[test]
fn mean_value_and_gradient() {
    let x = Rng(43).tensor(&[2, 3, 4], -2.0, 2.0);
    let direct = |t: &Tensor| Tensor::scalar(naive_sum(t.data()) / t.len() as f64);
    check_unary("mean", |x| x.mean(), direct, &x, 1e-14);
}

/// `np.sum(x, axis)` for a 3-d `x`, written out with explicit indices.
fn sum_axis_direct(x: &Tensor, axis: usize) -> Tensor {
    let s = x.shape();
    let mut out_shape = s.to_vec();
    out_shape.remove(axis);
    let mut out = vec![0.0; out_shape.iter().product()];
    for i in 0..s[0] {
        for j in 0..s[1] {
            for k in 0..s[2] {
                let v = x.data()[(i * s[1] + j) * s[2] + k];
                let at = match axis {
                    0 => j * s[2] + k,
                    1 => i * s[2] + k,
                    _ => i * s[1] + j,
                };
                out[at] += v;
            }
        }
    }
    Tensor::new(out, &out_shape).unwrap()
}

#[test]
fn sum_axis_0_of_a_3d_input_value_and_gradient() {
    let x = Rng(44).tensor(&[2, 3, 4], -2.0, 2.0);
    check_unary(
        "sum_axis(0)",
        |x| x.sum_axis(0),
        |t| sum_axis_direct(t, 0),
        &x,
        1e-14,
    );
}

#[test]
fn sum_axis_1_of_a_3d_input_value_and_gradient() {
    let x = Rng(45).tensor(&[2, 3, 4], -2.0, 2.0);
    check_unary(
        "sum_axis(1)",
        |x| x.sum_axis(1),
        |t| sum_axis_direct(t, 1),
        &x,
        1e-14,
    );
}

#[test]
fn sum_axis_2_of_a_3d_input_value_and_gradient() {
    let x = Rng(46).tensor(&[2, 3, 4], -2.0, 2.0);
    check_unary(
        "sum_axis(2)",
        |x| x.sum_axis(2),
        |t| sum_axis_direct(t, 2),
        &x,
        1e-14,
    );
}

#[test]
fn reshape_keeps_row_major_order_and_reshapes_the_gradient_back() {
    let x = Rng(47).tensor(&[2, 3, 4], -2.0, 2.0);
    let to =
        |shape: &'static [usize]| move |t: &Tensor| Tensor::new(t.data().to_vec(), shape).unwrap();
    check_unary(
        "reshape [4, 6]",
        |x| x.reshape(&[4, 6]),
        to(&[4, 6]),
        &x,
        0.0,
    );
    check_unary("reshape [24]", |x| x.reshape(&[24]), to(&[24]), &x, 0.0);
    check_unary(
        "reshape [4, 1, 6]",
        |x| x.reshape(&[4, 1, 6]),
        to(&[4, 1, 6]),
        &x,
        0.0,
    );
}

fn matmul_direct(a: &Tensor, b: &Tensor) -> Tensor {
    let (m, k, n) = (a.shape()[0], a.shape()[1], b.shape()[1]);
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k)
                .map(|p| a.data()[i * k + p] * b.data()[p * n + j])
                .sum();
        }
    }
    Tensor::new(out, &[m, n]).unwrap()
}

#[test]
fn matmul_value_and_gradients_of_both_operands() {
    let mut rng = Rng(48);
    let (a, b) = (
        rng.tensor(&[3, 4], -2.0, 2.0),
        rng.tensor(&[4, 2], -2.0, 2.0),
    );
    let want = matmul_direct(&a, &b);
    let tape = Tape::new();
    let got = tape
        .var(a.clone())
        .matmul(tape.var(b.clone()))
        .value()
        .clone();
    assert_eq!(got.shape(), &[3, 2]);
    for (&g, &w) in got.data().iter().zip(want.data()) {
        assert!(
            (g - w).abs() <= 1e-14 * w.abs().max(1.0),
            "matmul value {g} vs {w}"
        );
    }
    check_both_losses("matmul [3,4] x [4,2]", &[a, b], &[3, 2], &mut rng, |v| {
        v[0].matmul(v[1])
    });
}

#[test]
fn matmul_of_vectors_shaped_as_row_and_column() {
    let mut rng = Rng(49);
    let (a, b) = (
        rng.tensor(&[1, 5], -2.0, 2.0),
        rng.tensor(&[5, 1], -2.0, 2.0),
    );
    check_both_losses("matmul [1,5] x [5,1]", &[a, b], &[1, 1], &mut rng, |v| {
        v[0].matmul(v[1])
    });
    let (a, b) = (
        rng.tensor(&[4, 1], -2.0, 2.0),
        rng.tensor(&[1, 3], -2.0, 2.0),
    );
    check_both_losses("matmul [4,1] x [1,3]", &[a, b], &[4, 3], &mut rng, |v| {
        v[0].matmul(v[1])
    });
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
        |v| (v[0] + v[1]).sum_axis(0),
    );
}

#[test]
fn scalar_plus_matrix_followed_by_sum_axis_has_the_right_gradient() {
    let mut rng = Rng(52);
    let (a, b) = (rng.tensor(&[], -2.0, 2.0), rng.tensor(&[3, 4], -2.0, 2.0));
    check_both_losses("(a[] + b[3,4]).sum_axis(0)", &[a, b], &[4], &mut rng, |v| {
        (v[0] + v[1]).sum_axis(0)
    });
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
        |v| v[0] * v[0].exp() + v[0] / v[1] - v[0].ln(),
    );
}

#[test]
fn fd_grad_helper_recovers_a_known_gradient() {
    // f(x) = sum(x^3) has gradient 3 x^2: the helper the other tests rely on is right,
    // also for a large x, where the step grows with |x|.
    let cube = |t: &Tensor| t.data().iter().map(|v| v * v * v).sum::<f64>();
    for x in [
        Tensor::from(vec![-1.5, 0.25, 2.0, 3.0]),
        Tensor::from(vec![1e3]),
    ] {
        let numeric = fd_grad(cube, &x);
        assert_grad_close(&numeric, &map(&x, |v| 3.0 * v * v), "fd of sum(x^3)");
    }
}

#[test]
fn assert_grad_close_rejects_a_gradient_off_by_1e_3() {
    let x = Tensor::from(vec![-1.5, 0.25, 2.0]);
    let off = map(&x, |v| v + 1e-3);
    let caught = std::panic::catch_unwind(|| assert_grad_close(&x, &off, "off by 1e-3"));
    assert!(
        caught.is_err(),
        "assert_grad_close accepted a gradient off by 1e-3"
    );
}
