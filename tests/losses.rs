//! The catalogue of losses (`tapegrad::losses`): each loss built from tape ops against
//! its textbook closed-form gradient, at random points and at every kink; against finite
//! differences (`gradcheck`); and both against numpy (`tests/fixtures/losses.txt`, from
//! `tests/fixtures/gen_losses.py`).
//!
//! How close they must be, per loss, in units in the last place (ulp) of each element
//! (measured worst cases over thousands of random points are at or below these):
//!
//! | loss | tape vs closed form, N a power of two | other N | closed form vs numpy |
//! |---|---|---|---|
//! | hinge, huber, mse | exact | 1 | exact |
//! | l1 | exact | exact | exact |
//! | squared hinge | exact | 2 | exact |
//! | multiclass hinge (C <= 8) | exact | 2 | exact |
//! | logistic | exact | 2 | 2 (`exp`: Rust's libm vs numpy's) |
//! | softmax cross-entropy | [`CE_ABS`] eps / N, absolutely | the same | 2 |
//!
//! "Exact" is equality as f64 (so -0.0 == 0.0), bit for bit otherwise. The tape
//! multiplies by the rounded `1/N` where the closed form divides by `N`: one rounding
//! more for each product it then takes, none when `N` is a power of two (for l1 the
//! product is `±1/N`, exact for any N). Every kink case has N a power of two, and the
//! kinks whose gradient is 0 are exactly 0 for any N. The tape's softmax (in
//! `log_softmax`'s backward) is `exp(log_softmax(s))`, the closed form's `e / sum(e)`:
//! different roundings, so cross-entropy is compared within a few roundings of the
//! probabilities, scaled by `1/N` (at large scores too: see
//! `logistic_and_cross_entropy_are_finite_for_large_inputs`). Loss values equal numpy's
//! exactly (both sum pairwise), within 2 ulp for logistic (`exp`, `ln_1p`).

#[macro_use]
mod common;

use common::{Rng, assert_names};
use tapegrad::check::{GradCheck, gradcheck, gradcheck_many};
use tapegrad::losses::*;
use tapegrad::{Tape, Tensor, Var};

const FIXTURE: &str = include_str!("fixtures/losses.txt");

/// Tape and closed form of softmax cross-entropy agree within this many eps divided by
/// `N` (the gradient's scale), absolutely.
const CE_ABS: f64 = 4.0;

/// Tape vs closed form of the multiclass hinge for `N` not a power of two (C <= 8), in
/// ulp: the tape's `-count/N` adds `count` copies of the rounded `1/N`.
const MULTICLASS_OTHER_N_ULPS: u64 = 2;

// ---- helpers ---------------------------------------------------------------------------

/// Distance in units in the last place between two doubles: 0 for equal ones (±0
/// included) and for two NaNs, `u64::MAX` for a NaN against a number.
fn ulps(a: f64, b: f64) -> u64 {
    if a == b || (a.is_nan() && b.is_nan()) {
        return 0;
    }
    if a.is_nan() || b.is_nan() {
        return u64::MAX;
    }
    let key = |x: f64| {
        let bits = x.to_bits() as i64;
        i128::from(if bits < 0 { i64::MIN - bits } else { bits })
    };
    (key(a) - key(b)).unsigned_abs() as u64
}

/// Assert `got` and `want` have one shape and every element within `max_ulps`; the
/// message names `what`, the worst element and both tensors.
#[track_caller]
fn assert_ulps(got: &Tensor, want: &Tensor, max_ulps: u64, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shapes");
    let worst = got
        .data()
        .iter()
        .zip(want.data())
        .enumerate()
        .map(|(i, (&g, &w))| (ulps(g, w), i, g, w))
        .max_by_key(|&(u, ..)| u);
    if let Some((u, i, g, w)) = worst {
        assert!(
            u <= max_ulps,
            "{what}: element {i}: got {g:e}, want {w:e}, {u} ulp apart (at most {max_ulps})\n  \
             got  {:?}\n  want {:?}",
            got.data(),
            want.data()
        );
    }
}

/// Assert every element of `got` is within `abs` of `want`'s.
#[track_caller]
fn assert_abs(got: &Tensor, want: &Tensor, abs: f64, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shapes");
    for (i, (&g, &w)) in got.data().iter().zip(want.data()).enumerate() {
        assert!(
            (g - w).abs() <= abs,
            "{what}: element {i}: got {g:e}, want {w:e}, |diff| {:e} > {abs:e}",
            (g - w).abs()
        );
    }
}

/// The value of `f` at `at` and the tape's gradient with respect to `at`.
fn value_and_grad(f: impl for<'t> Fn(&'t Tape, Var<'t>) -> Var<'t>, at: &Tensor) -> (f64, Tensor) {
    let tape = Tape::new();
    let x = tape.var(at.clone());
    let loss = f(&tape, x);
    let value = loss.value().item();
    (value, loss.backward().wrt(x).clone())
}

/// A loss of a prediction and a target, and its closed form.
struct PredTarget {
    name: &'static str,
    tape: for<'t> fn(Var<'t>, Var<'t>) -> Var<'t>,
    closed: fn(&Tensor, &Tensor) -> Tensor,
    /// Tape vs closed form for N not a power of two, in ulp.
    other_n_ulps: u64,
    /// Whether targets are labels ±1 (else any real number).
    labels: bool,
}

fn huber_1<'t>(pred: Var<'t>, target: Var<'t>) -> Var<'t> {
    huber(pred, target, 1.0)
}

fn huber_1_closed(pred: &Tensor, target: &Tensor) -> Tensor {
    huber_grad_closed_form(pred, target, 1.0)
}

static PRED_TARGET: [PredTarget; 6] = [
    PredTarget {
        name: "hinge",
        tape: hinge,
        closed: hinge_grad_closed_form,
        other_n_ulps: 1,
        labels: true,
    },
    PredTarget {
        name: "squared_hinge",
        tape: squared_hinge,
        closed: squared_hinge_grad_closed_form,
        other_n_ulps: 2,
        labels: true,
    },
    PredTarget {
        name: "logistic",
        tape: logistic,
        closed: logistic_grad_closed_form,
        other_n_ulps: 2,
        labels: true,
    },
    PredTarget {
        name: "huber",
        tape: huber_1,
        closed: huber_1_closed,
        other_n_ulps: 1,
        labels: false,
    },
    PredTarget {
        name: "mse",
        tape: mse,
        closed: mse_grad_closed_form,
        other_n_ulps: 1,
        labels: false,
    },
    PredTarget {
        name: "l1",
        tape: l1,
        closed: l1_grad_closed_form,
        other_n_ulps: 0,
        labels: false,
    },
];

/// The loss of [`PRED_TARGET`] called `name`.
fn named(name: &str) -> &'static PredTarget {
    let found = PRED_TARGET.iter().find(|l| l.name == name);
    found.unwrap_or_else(|| panic!("no loss {name:?}"))
}

impl PredTarget {
    /// The tape's value and gradient w.r.t. `pred`, the target a constant.
    fn on_tape(&self, pred: &Tensor, target: &Tensor) -> (f64, Tensor) {
        value_and_grad(
            |tape, p| (self.tape)(p, tape.constant(target.clone())),
            pred,
        )
    }

    /// A random prediction of `shape` and a target: ±1 labels for the margin losses,
    /// and for the others (and with `real`) numbers in [-3, 3).
    fn point(&self, rng: &mut Rng, shape: &[usize], real: bool) -> (Tensor, Tensor) {
        let pred = rng.tensor(shape, -3.0, 3.0);
        let target = if self.labels && !real {
            let n = shape.iter().product();
            let labels = (0..n)
                .map(|_| if rng.next_u64() & 1 == 0 { 1.0 } else { -1.0 })
                .collect();
            Tensor::new(labels, shape).unwrap()
        } else {
            rng.tensor(shape, -3.0, 3.0)
        };
        (pred, target)
    }
}

/// Scores `[n, c]` in [-3, 3) and labels below `c`.
fn classification(rng: &mut Rng, n: usize, c: usize) -> (Tensor, Vec<usize>) {
    let scores = rng.tensor(&[n, c], -3.0, 3.0);
    let labels = (0..n)
        .map(|_| (rng.next_u64() % c as u64) as usize)
        .collect();
    (scores, labels)
}

/// Assert a gradcheck report passed, naming `what`.
#[track_caller]
fn assert_passed(report: &GradCheck, what: &str) {
    assert!(report.passed(), "{what}: {report}");
}

#[test]
fn ulps_counts_units_in_the_last_place() {
    assert_eq!(ulps(1.0, 1.0), 0);
    assert_eq!(ulps(0.0, -0.0), 0);
    assert_eq!(ulps(1.0, 1.0 + f64::EPSILON), 1);
    assert_eq!(ulps(-1.0, -1.0 - 2.0 * f64::EPSILON), 2);
    assert_eq!(ulps(f64::from_bits(1), -f64::from_bits(1)), 2);
    assert_eq!(ulps(f64::NAN, f64::NAN), 0);
    assert_eq!(ulps(f64::NAN, 1.0), u64::MAX);
}

// ---- tape vs closed form at random points ------------------------------------------------

#[test]
fn pred_target_losses_tape_equals_closed_form_exactly_when_n_is_a_power_of_two() {
    let mut rng = Rng(20261201);
    for loss in &PRED_TARGET {
        for shape in [&[64][..], &[4, 8], &[1], &[2, 2, 2]] {
            for real in [false, true] {
                let (pred, target) = loss.point(&mut rng, shape, real);
                let (_, tape) = loss.on_tape(&pred, &target);
                let closed = (loss.closed)(&pred, &target);
                let what = format!("{} at shape {shape:?} (real targets: {real})", loss.name);
                assert_ulps(&tape, &closed, 0, &what);
            }
        }
    }
}

#[test]
fn pred_target_losses_tape_is_within_a_rounding_or_two_of_closed_form_for_other_n() {
    let mut rng = Rng(7);
    for loss in &PRED_TARGET {
        for shape in [&[50][..], &[3, 7], &[3], &[1000]] {
            for real in [false, true] {
                let (pred, target) = loss.point(&mut rng, shape, real);
                let (_, tape) = loss.on_tape(&pred, &target);
                let closed = (loss.closed)(&pred, &target);
                let what = format!("{} at shape {shape:?} (real targets: {real})", loss.name);
                assert_ulps(&tape, &closed, loss.other_n_ulps, &what);
            }
        }
    }
}

#[test]
fn the_pred_gradient_is_the_same_when_the_target_is_tracked_too() {
    // The tie rule looks at which operands are tracked; the constants 0, 1 and delta
    // inside the losses are never tracked, whatever the target is.
    let mut rng = Rng(3);
    for loss in &PRED_TARGET {
        let (mut pred, target) = loss.point(&mut rng, &[8], false);
        // Put kinks in: p t == 1 for the margin losses, p - t = 0 and 1 for the others.
        let kinked: Vec<f64> = pred
            .data()
            .iter()
            .zip(target.data())
            .enumerate()
            .map(|(i, (&p, &t))| match (i % 4, loss.labels) {
                (0, _) => t,
                (1, false) => t + 1.0,
                _ => p,
            })
            .collect();
        pred = Tensor::new(kinked, &[8]).unwrap();
        let (_, constant) = loss.on_tape(&pred, &target);
        let tape = Tape::new();
        let (p, t) = (tape.var(pred.clone()), tape.var(target.clone()));
        let tracked = (loss.tape)(p, t).backward().wrt(p).clone();
        assert_ulps(&tracked, &constant, 0, loss.name);
        assert_ulps(&tracked, &(loss.closed)(&pred, &target), 0, loss.name);
    }
}

#[test]
fn softmax_cross_entropy_tape_is_within_a_few_roundings_of_closed_form() {
    let mut rng = Rng(11);
    for (n, c) in [(16, 5), (7, 10), (1, 2), (64, 3), (5, 1)] {
        let (scores, labels) = classification(&mut rng, n, c);
        let (_, tape) = value_and_grad(|_, s| softmax_cross_entropy(s, &labels), &scores);
        let closed = softmax_cross_entropy_grad_closed_form(&scores, &labels);
        let abs = CE_ABS * f64::EPSILON / n as f64;
        assert_abs(
            &tape,
            &closed,
            abs,
            &format!("softmax_cross_entropy [{n}, {c}]"),
        );
    }
}

#[test]
fn multiclass_hinge_tape_equals_closed_form_exactly_when_n_is_a_power_of_two() {
    let mut rng = Rng(13);
    for (n, c) in [(16, 4), (8, 10), (1, 2), (4, 1)] {
        let (scores, labels) = classification(&mut rng, n, c);
        let (_, tape) = value_and_grad(|_, s| multiclass_hinge(s, &labels), &scores);
        let closed = multiclass_hinge_grad_closed_form(&scores, &labels);
        assert_ulps(&tape, &closed, 0, &format!("multiclass_hinge [{n}, {c}]"));
    }
    for (n, c) in [(6, 3), (50, 7)] {
        let (scores, labels) = classification(&mut rng, n, c);
        let (_, tape) = value_and_grad(|_, s| multiclass_hinge(s, &labels), &scores);
        let closed = multiclass_hinge_grad_closed_form(&scores, &labels);
        let what = format!("multiclass_hinge [{n}, {c}]");
        assert_ulps(&tape, &closed, MULTICLASS_OTHER_N_ULPS, &what);
    }
}

// ---- at every kink ----------------------------------------------------------------------

/// Pairs with `p * t == 1` exactly, mixed with pairs off the kink on either side.
fn hinge_ties() -> (Tensor, Tensor, Vec<bool>) {
    let pairs = [
        (0.5, 2.0, true),
        (0.3, 1.0, false),
        (1.0, 1.0, true),
        (-1.0, -1.0, true),
        (2.0, 1.0, false),
        (2.0, 0.5, true),
        (0.25, 4.0, true),
        (-0.7, 1.5, false),
        (-4.0, -0.25, true),
        (0.125, 8.0, true),
        (1.5, -1.0, false),
        (-0.5, -2.0, true),
        (0.9, 1.0, false),
        (0.75, 1.0, false),
        (1.0, 1.5, false),
        (0.0, -1.0, false),
    ];
    let pred = Tensor::from(pairs.iter().map(|p| p.0).collect::<Vec<_>>());
    let target = Tensor::from(pairs.iter().map(|p| p.1).collect::<Vec<_>>());
    let ties: Vec<bool> = pairs.iter().map(|p| p.2).collect();
    for (i, &tie) in ties.iter().enumerate() {
        assert_eq!(pred.data()[i] * target.data()[i] == 1.0, tie, "pair {i}");
    }
    (pred, target, ties)
}

#[test]
fn hinge_and_squared_hinge_at_exact_ties_give_zero_as_the_closed_form() {
    let (pred, target, ties) = hinge_ties();
    for loss in [named("hinge"), named("squared_hinge")] {
        let (_, tape) = loss.on_tape(&pred, &target);
        let closed = (loss.closed)(&pred, &target);
        assert_ulps(&tape, &closed, 0, loss.name);
        for (i, _) in ties.iter().enumerate().filter(|(_, tie)| **tie) {
            assert_eq!(tape.data()[i], 0.0, "{}: tie {i}", loss.name);
        }
        // And with N = 6, not a power of two: the ties still give exactly 0.
        let few = |t: &Tensor| Tensor::from(t.data()[..6].to_vec());
        let (_, tape) = loss.on_tape(&few(&pred), &few(&target));
        let closed = (loss.closed)(&few(&pred), &few(&target));
        assert_ulps(&tape, &closed, loss.other_n_ulps, loss.name);
        for i in [0, 2, 3, 5] {
            assert_eq!((tape.data()[i], closed.data()[i]), (0.0, 0.0), "tie {i}");
        }
    }
}

#[test]
fn multiclass_hinge_margins_exactly_zero_count_nothing_as_the_closed_form() {
    // Scores in quarters, so every s_j - s_y + 1 is exact; 9 margins are exactly 0.
    #[rustfmt::skip]
    let scores = Tensor::new(vec![
        2.5, 1.5, 0.0,    // y = 0: margin of 1 is 0, of 2 is -1.5
        1.0, 2.0, 1.0,    // y = 1: margins 0 and 0
        0.5, -0.5, 0.75,  // y = 0: margin of 1 is 0, of 2 is 1.25
        3.0, 3.0, 2.0,    // y = 2: margins 2 and 2
        -1.0, 0.0, -1.0,  // y = 1: margins 0 and 0
        4.0, 0.25, -0.75, // y = 1: margin of 2 is 0, of 0 is 4.75
        0.0, 1.0, 0.0,    // y = 2: margins 1 and 2
        7.0, 6.0, 6.0,    // y = 0: margins 0 and 0
    ], &[8, 3]).unwrap();
    let labels = [0, 1, 0, 2, 1, 1, 2, 0];
    let (value, tape) = value_and_grad(|_, s| multiclass_hinge(s, &labels), &scores);
    let closed = multiclass_hinge_grad_closed_form(&scores, &labels);
    assert_ulps(&tape, &closed, 0, "multiclass_hinge at margins 0");
    let e = 1.0 / 8.0;
    #[rustfmt::skip]
    let want = [
        0.0, 0.0, 0.0,
        0.0, 0.0, 0.0,
        -e, 0.0, e,
        e, e, -2.0 * e,
        0.0, 0.0, 0.0,
        e, -e, 0.0,
        e, e, -2.0 * e,
        0.0, 0.0, 0.0,
    ];
    assert_ulps(
        &tape,
        &Tensor::new(want.to_vec(), &[8, 3]).unwrap(),
        0,
        "by hand",
    );
    assert_eq!(
        value,
        (0.0 + 0.0 + 1.25 + 4.0 + 0.0 + 4.75 + 3.0 + 0.0) / 8.0
    );
    // Finite differences see the kinks and accept the tape's 0 between the slopes.
    let report = gradcheck(|_, s| multiclass_hinge(s, &labels), &scores);
    assert_passed(&report, "multiclass_hinge at margins 0");
    assert!(report.kinks() >= 9, "{report}");
}

#[test]
fn l1_at_pred_equal_target_gives_zero_as_np_sign() {
    let pred = Tensor::from(vec![0.5, -1.0, 0.0, 1.0, 2.0, 3.25, -0.7, 0.1]);
    let target = Tensor::from(vec![0.5, -1.0, 0.0, 2.0, 1.0, 3.25, 0.4, 0.1]);
    let (_, tape) = named("l1").on_tape(&pred, &target);
    let closed = l1_grad_closed_form(&pred, &target);
    assert_ulps(&tape, &closed, 0, "l1 at p == t");
    let e = 1.0 / 8.0;
    let want = Tensor::from(vec![0.0, 0.0, 0.0, -e, e, 0.0, -e, 0.0]);
    assert_ulps(&tape, &want, 0, "l1 by hand");
    let report = gradcheck(|tape, p| l1(p, tape.constant(target.clone())), &pred);
    assert_passed(&report, "l1 at p == t");
    assert_eq!(report.kinks(), 5, "{report}");
}

#[test]
fn huber_at_r_equal_plus_minus_delta_and_zero_gives_the_closed_form() {
    for delta in [1.0, 0.5, 0.3] {
        // r = p - t: +delta, -delta, 0, 0, just inside, beyond on both sides, 0 (the
        // targets chosen so that every r is exact).
        let t = [0.0, 0.0, 0.25, -2.0, 0.0, 1.0, 0.0, 1.0];
        let r = [
            delta,
            -delta,
            0.0,
            0.0,
            0.5 * delta,
            3.0 * delta,
            -3.0 * delta,
            0.0,
        ];
        let p: Vec<f64> = t.iter().zip(&r).map(|(t, r)| t + r).collect();
        let (pred, target) = (Tensor::from(p), Tensor::from(t.to_vec()));
        let rs: Vec<f64> = pred
            .data()
            .iter()
            .zip(target.data())
            .map(|(p, t)| p - t)
            .collect();
        let tape = value_and_grad(
            |tape, p| huber(p, tape.constant(target.clone()), delta),
            &pred,
        )
        .1;
        let closed = huber_grad_closed_form(&pred, &target, delta);
        let what = format!("huber delta {delta}");
        assert_ulps(&tape, &closed, 0, &what);
        for (i, &r) in rs.iter().enumerate() {
            let want = (if r.abs() <= delta {
                r
            } else {
                delta * r.signum()
            }) / 8.0;
            assert_eq!(tape.data()[i], want, "{what}: r = {r}");
            if r.abs() == delta {
                assert_eq!(
                    tape.data()[i],
                    delta * r.signum() / 8.0,
                    "{what}: at the kink"
                );
            }
        }
        assert_eq!(rs.iter().filter(|r| r.abs() == delta).count(), 2, "{what}");
        assert_eq!(rs.iter().filter(|r| **r == 0.0).count(), 3, "{what}");
        let report = gradcheck(
            |tape, p| huber(p, tape.constant(target.clone()), delta),
            &pred,
        );
        assert_passed(&report, &what);
    }
}

#[test]
fn huber_value_is_quadratic_inside_and_linear_outside() {
    let pred = Tensor::from(vec![0.5, 3.0, -1.0, 0.0]);
    let target = Tensor::from(vec![0.0; 4]);
    let (value, _) = value_and_grad(
        |tape, p| huber(p, tape.constant(target.clone()), 1.0),
        &pred,
    );
    assert_eq!(value, (0.125 + 2.5 + 0.5 + 0.0) / 4.0);
}

// ---- finite differences at random points -------------------------------------------------

#[test]
fn gradcheck_passes_on_every_loss_at_random_points_for_pred_and_target() {
    let mut rng = Rng(17);
    for loss in &PRED_TARGET {
        for real in [false, true] {
            let (pred, target) = loss.point(&mut rng, &[12], real);
            let reports = gradcheck_many(|_, v| (loss.tape)(v[0], v[1]), &[pred, target]);
            for report in &reports {
                assert_passed(report, loss.name);
            }
        }
    }
    for delta in [0.3, 2.0] {
        let (pred, target) = (rng.tensor(&[12], -3.0, 3.0), rng.tensor(&[12], -3.0, 3.0));
        let reports = gradcheck_many(|_, v| huber(v[0], v[1], delta), &[pred, target]);
        for report in &reports {
            assert_passed(report, &format!("huber delta {delta}"));
        }
    }
    for (n, c) in [(6, 4), (1, 3), (3, 1)] {
        let (scores, labels) = classification(&mut rng, n, c);
        let report = gradcheck(|_, s| softmax_cross_entropy(s, &labels), &scores);
        assert_passed(&report, "softmax_cross_entropy");
        let report = gradcheck(|_, s| multiclass_hinge(s, &labels), &scores);
        assert_passed(&report, "multiclass_hinge");
    }
}

#[test]
fn gradcheck_passes_at_the_ties_of_hinge_and_squared_hinge() {
    let (pred, target, ties) = hinge_ties();
    let kinks = ties.iter().filter(|t| **t).count();
    let report = gradcheck(|tape, p| hinge(p, tape.constant(target.clone())), &pred);
    assert_passed(&report, "hinge at ties");
    assert_eq!(report.kinks(), kinks, "{report}");
    // Squared, the kink is gone: the slopes agree, and 0 is the derivative.
    let report = gradcheck(
        |tape, p| squared_hinge(p, tape.constant(target.clone())),
        &pred,
    );
    assert_passed(&report, "squared_hinge at ties");
}

// ---- stability --------------------------------------------------------------------------

#[test]
fn logistic_and_cross_entropy_are_finite_for_large_inputs() {
    let pred = Tensor::from(vec![800.0, -800.0, 40.0, -40.0]);
    let target = Tensor::from(vec![-1.0, -1.0, 1.0, 1.0]);
    let (value, tape) = named("logistic").on_tape(&pred, &target);
    assert_eq!(value, (800.0 + 40.0) / 4.0); // e^-40 is lost against 840
    assert_ulps(
        &tape,
        &logistic_grad_closed_form(&pred, &target),
        0,
        "logistic large",
    );
    assert_eq!(tape.data()[0], 0.25); // -t sigmoid(800) / 4
    assert_eq!(tape.data()[1], 0.0); // sigmoid(-800) underflows to 0

    let scores = Tensor::new(vec![1000.0, 999.0, 998.0, -1000.0, 0.0, 1000.0], &[2, 3]).unwrap();
    let labels = [1, 2];
    let (value, tape) = value_and_grad(|_, s| softmax_cross_entropy(s, &labels), &scores);
    assert!(
        value.is_finite() && (value - 1.4076059644443804 / 2.0).abs() < 1e-12,
        "{value}"
    );
    let closed = softmax_cross_entropy_grad_closed_form(&scores, &labels);
    // log_softmax computes (s - m) - ln(sum(exp(s - m))), so scores near 1000 cost no
    // more than small ones: a few roundings of the probabilities.
    assert_abs(
        &tape,
        &closed,
        8.0 * f64::EPSILON,
        "softmax_cross_entropy at 1000",
    );
}

// ---- against numpy -----------------------------------------------------------------------

/// One case of `losses.txt`.
#[derive(Debug, Default)]
struct Case {
    name: String,
    loss: String,
    shape: Vec<usize>,
    pred: Vec<f64>,
    target: Vec<f64>,
    scores: Vec<f64>,
    labels: Vec<usize>,
    delta: Option<f64>,
    value: f64,
    grad: Vec<f64>,
}

fn floats(text: &str, line: usize) -> Vec<f64> {
    text.split_whitespace()
        .map(|t| {
            t.parse()
                .unwrap_or_else(|e| panic!("losses.txt:{line}: bad number {t:?}: {e}"))
        })
        .collect()
}

fn integers(text: &str, line: usize) -> Vec<usize> {
    text.split_whitespace()
        .map(|t| {
            t.parse()
                .unwrap_or_else(|e| panic!("losses.txt:{line}: bad integer {t:?}: {e}"))
        })
        .collect()
}

/// Parse the fixture strictly: `case NAME`, then `key values` lines, then `end`; `#`
/// lines are comments. Panics with the line number on anything unexpected.
fn parse(text: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut current: Option<(Case, Vec<&str>)> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
        match (&mut current, key) {
            (None, "case") => {
                let case = Case {
                    name: rest.to_string(),
                    ..Case::default()
                };
                current = Some((case, Vec::new()));
            }
            (None, _) => panic!("losses.txt:{n}: expected `case <name>`, got {line:?}"),
            (Some((case, seen)), "end") => {
                for needed in ["loss", "shape", "value", "grad"] {
                    assert!(seen.contains(&needed), "case {}: no `{needed}`", case.name);
                }
                cases.push(current.take().unwrap().0);
            }
            (Some((case, seen)), key) => {
                assert!(!seen.contains(&key), "losses.txt:{n}: `{key}` twice");
                match key {
                    "loss" => case.loss = rest.to_string(),
                    "shape" => case.shape = integers(rest, n),
                    "pred" => case.pred = floats(rest, n),
                    "target" => case.target = floats(rest, n),
                    "scores" => case.scores = floats(rest, n),
                    "labels" => case.labels = integers(rest, n),
                    "delta" => case.delta = Some(floats(rest, n)[0]),
                    "value" => case.value = floats(rest, n)[0],
                    "grad" => case.grad = floats(rest, n),
                    _ => panic!("losses.txt:{n}: unknown key {key:?}"),
                }
                seen.push(key);
            }
        }
    }
    assert!(current.is_none(), "losses.txt ends inside a case");
    cases
}

/// What the tape and the Rust closed form give on a case's inputs:
/// `(tape value, tape gradient, closed form)`.
fn evaluate(case: &Case) -> (f64, Tensor, Tensor) {
    let tensor = |data: &[f64]| Tensor::new(data.to_vec(), &case.shape).unwrap();
    let labels = &case.labels;
    match case.loss.as_str() {
        "softmax_cross_entropy" => {
            let s = tensor(&case.scores);
            let (v, g) = value_and_grad(|_, s| softmax_cross_entropy(s, labels), &s);
            (v, g, softmax_cross_entropy_grad_closed_form(&s, labels))
        }
        "multiclass_hinge" => {
            let s = tensor(&case.scores);
            let (v, g) = value_and_grad(|_, s| multiclass_hinge(s, labels), &s);
            (v, g, multiclass_hinge_grad_closed_form(&s, labels))
        }
        "huber" => {
            let (p, t) = (tensor(&case.pred), tensor(&case.target));
            let delta = case.delta.expect("huber has a delta");
            let (v, g) = value_and_grad(|tape, p| huber(p, tape.constant(t.clone()), delta), &p);
            (v, g, huber_grad_closed_form(&p, &t, delta))
        }
        name => {
            let loss = named(name);
            let (p, t) = (tensor(&case.pred), tensor(&case.target));
            let (v, g) = loss.on_tape(&p, &t);
            (v, g, (loss.closed)(&p, &t))
        }
    }
}

/// Closed form vs numpy, in ulp: exact where the formula is arithmetic, 2 where it
/// calls `exp` or `ln` (Rust's libm and numpy's may round differently).
fn numpy_ulps(loss: &str) -> u64 {
    match loss {
        "logistic" | "softmax_cross_entropy" => 2,
        _ => 0,
    }
}

/// Tape vs closed form for `N` not a power of two, in ulp.
fn other_n_ulps(loss: &str) -> u64 {
    match loss {
        "multiclass_hinge" => MULTICLASS_OTHER_N_ULPS,
        name => {
            PRED_TARGET
                .iter()
                .find(|l| l.name == name)
                .unwrap()
                .other_n_ulps
        }
    }
}

#[test]
fn fixture_header_names_numpy_and_the_generator() {
    let first = FIXTURE.lines().next().unwrap_or("");
    assert!(
        first.starts_with("# Generated by tests/fixtures/gen_losses.py with numpy "),
        "{first:?}"
    );
}

#[test]
fn fixture_has_every_loss_and_its_kinks() {
    let cases = parse(FIXTURE);
    let names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    for loss in [
        "hinge",
        "squared_hinge",
        "logistic",
        "softmax_cross_entropy",
        "multiclass_hinge",
        "huber",
        "mse",
        "l1",
    ] {
        assert!(
            cases.iter().filter(|c| c.loss == loss).count() >= 2,
            "{loss}: {names:?}"
        );
    }
    for kinks in [
        "hinge_ties",
        "squared_hinge_ties",
        "multiclass_hinge_kinks",
        "huber_kinks",
        "huber_kinks_half",
        "l1_ties",
    ] {
        assert!(names.contains(&kinks), "{kinks}: {names:?}");
    }
    assert!(cases.len() >= 20, "{names:?}");
}

#[test]
fn closed_forms_equal_numpy_exactly_except_where_exp_rounds() {
    for case in parse(FIXTURE) {
        let (_, _, closed) = evaluate(&case);
        let want = Tensor::new(case.grad.clone(), &case.shape).unwrap();
        let what = format!("case {}: closed form vs numpy", case.name);
        assert_ulps(&closed, &want, numpy_ulps(&case.loss), &what);
    }
}

#[test]
fn tape_gradients_equal_numpy_within_the_per_loss_tolerance() {
    for case in parse(FIXTURE) {
        let (_, tape, _) = evaluate(&case);
        let want = Tensor::new(case.grad.clone(), &case.shape).unwrap();
        let what = format!("case {}: tape vs numpy", case.name);
        let n = case.shape[0] as f64;
        if case.loss == "softmax_cross_entropy" {
            // 1000-scale scores in one case: see logistic_and_cross_entropy_are_finite...
            let scale = case.scores.iter().fold(1.0f64, |m, s| m.max(s.abs()));
            assert_abs(&tape, &want, CE_ABS * scale * f64::EPSILON / n, &what);
            continue;
        }
        let pow2 = case.shape[0].is_power_of_two();
        let tol = match pow2 {
            true => numpy_ulps(&case.loss),
            false => other_n_ulps(&case.loss) + numpy_ulps(&case.loss),
        };
        assert_ulps(&tape, &want, tol, &what);
    }
}

#[test]
fn tape_values_equal_numpy_exactly_but_where_exp_or_ln_rounds() {
    for case in parse(FIXTURE) {
        let (value, _, _) = evaluate(&case);
        if case.loss == "softmax_cross_entropy" {
            // log_softmax is s - logsumexp(s): exact to about max|s| eps, not to ulps of
            // the loss (scores of 1000 in one case).
            let scale = case.scores.iter().fold(1.0f64, |m, s| m.max(s.abs()));
            let err = (value - case.value).abs();
            assert!(
                err <= 4.0 * scale * f64::EPSILON,
                "case {}: {err:e}",
                case.name
            );
            continue;
        }
        let u = ulps(value, case.value);
        assert!(
            u <= numpy_ulps(&case.loss),
            "case {}: tape {value:e}, numpy {:e}: {u} ulp",
            case.name,
            case.value
        );
    }
}

// ---- bad input ----------------------------------------------------------------------------

// Called directly, not through `PRED_TARGET`'s fn pointers: a call through a pointer
// reports the callee's own line, not the caller's (a limit of `#[track_caller]`).

#[test]
fn an_empty_batch_panics_at_the_callers_line() {
    let tape = Tape::new();
    let (p, t) = (
        tape.var(Tensor::zeros(&[0])),
        tape.constant(Tensor::zeros(&[0])),
    );
    let losses = [
        panic_at_line!(hinge(p, t)),
        panic_at_line!(squared_hinge(p, t)),
        panic_at_line!(logistic(p, t)),
        panic_at_line!(huber(p, t, 1.0)),
        panic_at_line!(mse(p, t)),
        panic_at_line!(l1(p, t)),
    ];
    for (line, message) in losses {
        assert_names(&message, line, &["empty batch", "[0]"]);
    }
    let e = Tensor::zeros(&[0]);
    let closed = [
        panic_at_line!(hinge_grad_closed_form(&e, &e)),
        panic_at_line!(squared_hinge_grad_closed_form(&e, &e)),
        panic_at_line!(logistic_grad_closed_form(&e, &e)),
        panic_at_line!(huber_grad_closed_form(&e, &e, 1.0)),
        panic_at_line!(mse_grad_closed_form(&e, &e)),
        panic_at_line!(l1_grad_closed_form(&e, &e)),
    ];
    for (line, message) in closed {
        assert_names(&message, line, &["grad_closed_form", "non-empty"]);
    }
    let s = tape.var(Tensor::zeros(&[0, 3]));
    let (line, message) = panic_at_line!(softmax_cross_entropy(s, &[]));
    assert_names(
        &message,
        line,
        &["softmax_cross_entropy", "N > 0", "[0, 3]"],
    );
    let (line, message) = panic_at_line!(multiclass_hinge(s, &[]));
    assert_names(&message, line, &["multiclass_hinge", "N > 0"]);
    let e = Tensor::zeros(&[0, 3]);
    let (line, message) = panic_at_line!(multiclass_hinge_grad_closed_form(&e, &[]));
    assert_names(
        &message,
        line,
        &["multiclass_hinge_grad_closed_form", "N > 0"],
    );
    let (line, message) = panic_at_line!(softmax_cross_entropy_grad_closed_form(&e, &[]));
    assert_names(
        &message,
        line,
        &["softmax_cross_entropy_grad_closed_form", "N > 0"],
    );
}

#[test]
fn mismatched_shapes_of_closed_form_inputs_panic_at_the_callers_line() {
    let (a, b) = (Tensor::zeros(&[3]), Tensor::zeros(&[4]));
    let closed = [
        panic_at_line!(hinge_grad_closed_form(&a, &b)),
        panic_at_line!(squared_hinge_grad_closed_form(&a, &b)),
        panic_at_line!(logistic_grad_closed_form(&a, &b)),
        panic_at_line!(huber_grad_closed_form(&a, &b, 1.0)),
        panic_at_line!(mse_grad_closed_form(&a, &b)),
        panic_at_line!(l1_grad_closed_form(&a, &b)),
    ];
    for (line, message) in closed {
        assert_names(&message, line, &["grad_closed_form", "[3]", "[4]", "same"]);
    }
    // Same element count, different shapes: still a mismatch.
    let (line, message) = panic_at_line!(mse_grad_closed_form(&Tensor::zeros(&[2, 2]), &b));
    assert_names(&message, line, &["mse_grad_closed_form", "[2, 2]", "[4]"]);
}

#[test]
fn a_target_that_does_not_broadcast_to_pred_panics_at_the_callers_line() {
    let tape = Tape::new();
    let t = tape.constant(Tensor::zeros(&[4]));
    // Wider than pred: the mean would be over more terms than pred has elements.
    let p = tape.var(Tensor::zeros(&[1]));
    let (line, message) = panic_at_line!(mse(p, t));
    assert_names(
        &message,
        line,
        &["mse", "[4]", "does not broadcast to pred's shape [1]"],
    );
    // The seed's hinge too: it would sum 4 terms and divide by 1.
    let (line, message) = panic_at_line!(hinge(p, t));
    assert_names(
        &message,
        line,
        &["hinge", "[4]", "does not broadcast to pred's shape [1]"],
    );
    let p = tape.var(Tensor::zeros(&[3]));
    let losses = [
        panic_at_line!(squared_hinge(p, t)),
        panic_at_line!(logistic(p, t)),
        panic_at_line!(huber(p, t, 1.0)),
        panic_at_line!(l1(p, t)),
    ];
    for (line, message) in losses {
        assert_names(
            &message,
            line,
            &["[4]", "does not broadcast to pred's shape [3]"],
        );
    }
    // A scalar target broadcasts, and is then every element's target.
    let value = l1(p, tape.constant(Tensor::scalar(1.0))).value().item();
    assert_eq!(value, 1.0);
}

#[test]
fn a_label_not_below_c_panics_at_the_callers_line() {
    let tape = Tape::new();
    let s = tape.var(Tensor::zeros(&[2, 3]));
    let (line, message) = panic_at_line!(softmax_cross_entropy(s, &[0, 3]));
    assert_names(
        &message,
        line,
        &["softmax_cross_entropy", "label 3 of row 1", "C = 3"],
    );
    let (line, message) = panic_at_line!(multiclass_hinge(s, &[5, 0]));
    assert_names(
        &message,
        line,
        &["multiclass_hinge", "label 5 of row 0", "C = 3"],
    );
    let scores = Tensor::zeros(&[2, 3]);
    let (line, message) = panic_at_line!(softmax_cross_entropy_grad_closed_form(&scores, &[3, 0]));
    assert_names(
        &message,
        line,
        &["softmax_cross_entropy_grad_closed_form", "label 3"],
    );
    let (line, message) = panic_at_line!(multiclass_hinge_grad_closed_form(&scores, &[0, 9]));
    assert_names(
        &message,
        line,
        &["multiclass_hinge_grad_closed_form", "label 9 of row 1"],
    );
}

#[test]
fn scores_not_n_by_c_or_labels_not_one_per_row_panic_at_the_callers_line() {
    let tape = Tape::new();
    let flat = tape.var(Tensor::zeros(&[6]));
    let (line, message) = panic_at_line!(softmax_cross_entropy(flat, &[0]));
    assert_names(
        &message,
        line,
        &["softmax_cross_entropy", "shape [N, C]", "[6]"],
    );
    let s = tape.var(Tensor::zeros(&[2, 3]));
    let (line, message) = panic_at_line!(multiclass_hinge(s, &[0, 1, 2]));
    assert_names(
        &message,
        line,
        &["multiclass_hinge", "one label per row", "3 labels"],
    );
    let scores = Tensor::zeros(&[2, 3]);
    let (line, message) = panic_at_line!(softmax_cross_entropy_grad_closed_form(&scores, &[0]));
    assert_names(&message, line, &["one label per row", "1 labels"]);
}

#[test]
fn a_delta_not_positive_and_finite_panics_at_the_callers_line() {
    let tape = Tape::new();
    let (p, t) = (
        tape.var(Tensor::zeros(&[2])),
        tape.constant(Tensor::zeros(&[2])),
    );
    for delta in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let (line, message) = panic_at_line!(huber(p, t, delta));
        assert_names(
            &message,
            line,
            &["huber", "delta must be positive and finite"],
        );
        let z = Tensor::zeros(&[2]);
        let (line, message) = panic_at_line!(huber_grad_closed_form(&z, &z, delta));
        assert_names(&message, line, &["huber_grad_closed_form", "delta"]);
    }
}
