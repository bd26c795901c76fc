//! `tapegrad::check`: reports that catch every wrong gradient and never cry wolf at a kink.

mod common;

use common::{identity_with_error, panic_message, uniform};
use tapegrad::check::{Tolerance, compare, directional, gradcheck, gradcheck_with};
use tapegrad::losses::{hinge, hinge_grad_closed_form};
use tapegrad::{Tape, Tensor, Var, max, min};

fn tensor(seed: u64, shape: &[usize], lo: f64, hi: f64) -> Tensor {
    let n = shape.iter().product();
    Tensor::new(uniform(seed, n, lo, hi), shape).unwrap()
}

/// A batch of ±1 labels with predictions where every third element is an exact tie.
fn batch_with_ties(n: usize, seed: u64) -> (Tensor, Tensor) {
    let t: Vec<f64> = uniform(seed, n, -1.0, 1.0)
        .iter()
        .map(|v| if *v < 0.0 { -1.0 } else { 1.0 })
        .collect();
    let p: Vec<f64> = uniform(seed + 1, n, -2.5, 2.5)
        .iter()
        .zip(&t)
        .enumerate()
        .map(|(i, (p, t))| if i % 3 == 0 { *t } else { *p })
        .collect();
    (Tensor::from(p), Tensor::from(t))
}

#[test]
fn gradcheck_passes_every_op_on_random_inputs() {
    let w = tensor(7, &[3, 4], -1.0, 1.0);
    let other = tensor(8, &[4], 0.5, 2.0);
    let at = tensor(9, &[3, 4], 0.5, 2.0);
    type Case = (
        &'static str,
        for<'t> fn(&'t Tape, Var<'t>, Var<'t>) -> Var<'t>,
    );
    let cases: [Case; 14] = [
        ("add", |_, x, o| x + o),
        ("sub", |_, x, o| o - x),
        ("mul", |_, x, o| x * o),
        ("div", |_, x, o| o / x),
        ("neg", |_, x, _| -x),
        ("max", |_, x, o| max(x, o * 0.0 + 1.25)),
        ("min", |_, x, o| min(1.25, x + o * 0.0)),
        ("exp", |_, x, _| x.exp()),
        ("ln", |_, x, _| x.ln()),
        ("sum_axis", |_, x, _| x.sum_axis(0).reshape(&[1, 4])),
        ("reshape", |_, x, _| x.reshape(&[4, 3]).reshape(&[3, 4])),
        ("mean", |_, x, _| x.mean() * x),
        ("matmul", |_, x, o| x.matmul(o.reshape(&[4, 1])) * 1.0),
        ("scalar", |_, x, _| 2.0 * x - 1.0 / (x + 3.0)),
    ];
    for (name, op) in cases {
        let report = gradcheck(
            |tape, x| {
                let o = tape.constant(other.clone());
                let weights = tape.constant(w.clone());
                let y = op(tape, x, o);
                if y.shape().as_slice() == [3, 1] {
                    y.sum()
                } else {
                    (y * weights).sum()
                }
            },
            &at,
        );
        assert!(report.passed(), "{name}: {report}");
        assert_eq!(report.checked(), 12, "{name}");
    }
}

#[test]
fn gradcheck_passes_hinge_at_exact_ties_and_counts_them_as_kinks() {
    let (pred, target) = batch_with_ties(60, 11);
    let ties = (0..60).filter(|i| i % 3 == 0).count();
    let report = gradcheck(|tape, p| hinge(p, tape.constant(target.clone())), &pred);
    assert!(report.passed(), "{report}");
    assert_eq!(report.kinks(), ties, "{report}");
    // The tape's gradient is the closed form, 0 at every tie.
    let tape = Tape::new();
    let p = tape.var(pred.clone());
    let g = hinge(p, tape.constant(target.clone())).backward();
    assert!(
        compare(
            g.wrt(p),
            &hinge_grad_closed_form(&pred, &target),
            Tolerance::default()
        )
        .passed()
    );
}

/// The hinge loss with the user's hand-written gradient as its backward.
fn hinge_with_manual_backward<'t>(
    tape: &'t Tape,
    p: Var<'t>,
    target: &Tensor,
    manual: fn(&Tensor, &Tensor) -> Tensor,
) -> Var<'t> {
    let t = tape.constant(target.clone());
    tape.custom(
        "hinge_manual",
        &[p, t],
        |x| {
            let n = x[0].len() as f64;
            let loss: f64 = x[0]
                .data()
                .iter()
                .zip(x[1].data())
                .map(|(p, t)| (1.0 - p * t).max(0.0))
                .sum::<f64>()
                / n;
            Tensor::scalar(loss)
        },
        move |x, _, up| {
            let g = manual(x[0], x[1]);
            let scaled = g.data().iter().map(|v| v * up.item()).collect();
            vec![
                Tensor::new(scaled, g.shape()).unwrap(),
                Tensor::zeros(x[1].shape()),
            ]
        },
    )
}

fn flipped_sign(p: &Tensor, t: &Tensor) -> Tensor {
    let g = hinge_grad_closed_form(p, t);
    Tensor::new(g.data().iter().map(|v| -v).collect(), g.shape()).unwrap()
}

fn positive_at_ties(p: &Tensor, t: &Tensor) -> Tensor {
    // Right everywhere but at the ties, where it claims +t/N (outside [-t/N, 0]).
    let n = p.len() as f64;
    let g = p
        .data()
        .iter()
        .zip(t.data())
        .map(|(p, t)| {
            if p * t == 1.0 {
                t / n
            } else if p * t < 1.0 {
                -t / n
            } else {
                0.0
            }
        })
        .collect();
    Tensor::new(g, p.shape()).unwrap()
}

#[test]
fn gradcheck_of_a_custom_op_accepts_the_right_manual_gradient() {
    let (pred, target) = batch_with_ties(30, 21);
    let report = gradcheck(
        |tape, p| hinge_with_manual_backward(tape, p, &target, hinge_grad_closed_form),
        &pred,
    );
    assert!(report.passed(), "{report}");
    assert_eq!(report.kinks(), 10);
}

#[test]
fn gradcheck_of_a_custom_op_fails_a_flipped_sign_and_names_the_worst_element() {
    let (pred, target) = batch_with_ties(30, 21);
    let report = gradcheck(
        |tape, p| hinge_with_manual_backward(tape, p, &target, flipped_sign),
        &pred,
    );
    assert!(!report.passed());
    let worst = report.worst_index().unwrap();
    let (p, t) = (pred.data()[worst], target.data()[worst]);
    assert!(p * t < 1.0, "the worst element is an active one: {report}");
    assert!(report.to_string().contains("FAIL"), "{report}");
}

#[test]
fn gradcheck_fails_a_wrong_gradient_at_a_tie() {
    let (pred, target) = batch_with_ties(30, 21);
    let report = gradcheck(
        |tape, p| hinge_with_manual_backward(tape, p, &target, positive_at_ties),
        &pred,
    );
    assert_eq!(report.failing(), 10, "{report}");
    let worst = report.worst_index().unwrap();
    assert_eq!(pred.data()[worst] * target.data()[worst], 1.0);
}

#[test]
fn compare_checks_a_custom_op_against_the_tapes_composite_version() {
    let (pred, target) = batch_with_ties(30, 5);
    let grad_of = |manual: Option<fn(&Tensor, &Tensor) -> Tensor>| {
        let tape = Tape::new();
        let p = tape.var(pred.clone());
        let loss = match manual {
            Some(m) => hinge_with_manual_backward(&tape, p, &target, m),
            None => hinge(p, tape.constant(target.clone())),
        };
        loss.backward().wrt(p).clone()
    };
    let composite = grad_of(None);
    let right = compare(
        &grad_of(Some(hinge_grad_closed_form)),
        &composite,
        Tolerance::default(),
    );
    assert!(right.passed(), "{right}");
    let wrong = compare(
        &grad_of(Some(positive_at_ties)),
        &composite,
        Tolerance::default(),
    );
    assert_eq!(wrong.failing(), 10, "{wrong}");
}

#[test]
fn gradcheck_with_a_tight_tolerance_still_passes_smooth_functions() {
    let at = tensor(3, &[5], -1.0, 1.0);
    let tol = Tolerance {
        abs: 1e-9,
        rel: 1e-7,
    };
    let report = gradcheck_with(|_, x| (x * x).exp().sum(), &at, tol);
    assert!(report.passed(), "{report}");
    assert_eq!(report.kinks(), 0);
}

#[test]
fn gradcheck_fails_a_gradient_off_by_one_part_in_ten_thousand() {
    let at = tensor(4, &[6], 0.5, 1.5);
    let report = gradcheck(
        |tape, x| {
            tape.custom(
                "almost_square",
                &[x],
                |x| Tensor::scalar(x[0].data().iter().map(|v| v * v).sum()),
                |x, _, up| {
                    let g = x[0].data().iter().map(|v| 2.0 * v * 1.0001 * up.item());
                    vec![Tensor::new(g.collect(), x[0].shape()).unwrap()]
                },
            )
        },
        &at,
    );
    assert_eq!(report.failing(), 6, "{report}");
}

#[test]
fn directional_passes_hinge_with_ties_and_fails_a_missing_division_by_n() {
    let (pred, target) = batch_with_ties(3000, 17);
    let right = directional(|tape, p| hinge(p, tape.constant(target.clone())), &pred, 8);
    assert!(right.passed(), "{right}");
    assert_eq!(right.checked(), 8);
    fn missing_n(p: &Tensor, t: &Tensor) -> Tensor {
        let n = p.len() as f64;
        let g = hinge_grad_closed_form(p, t);
        Tensor::new(g.data().iter().map(|v| v * n).collect(), g.shape()).unwrap()
    }
    let wrong = directional(
        |tape, p| hinge_with_manual_backward(tape, p, &target, missing_n),
        &pred,
        8,
    );
    assert!(wrong.failing() >= 4, "{wrong}");
}

#[test]
fn directional_catches_a_flipped_sign_even_when_a_third_of_the_batch_are_ties() {
    // Dense directions cross ~1000 ties, so their interval is too wide to see the sign;
    // the sparse directions miss the ties and see it.
    let (pred, target) = batch_with_ties(3000, 17);
    let wrong = directional(
        |tape, p| hinge_with_manual_backward(tape, p, &target, flipped_sign),
        &pred,
        8,
    );
    assert!(!wrong.passed(), "{wrong}");
    assert!(wrong.kinks() >= 1, "{wrong}");
}

#[test]
fn directional_repeats_exactly() {
    let at = tensor(2, &[50], -1.0, 1.0);
    fn f<'t>(_: &'t Tape, x: Var<'t>) -> Var<'t> {
        (x * x).sum()
    }
    assert_eq!(directional(f, &at, 3), directional(f, &at, 3));
}

#[test]
fn comparison_names_worst_elements_with_multi_indices() {
    let want = Tensor::new(vec![0.0; 6], &[2, 3]).unwrap();
    let got = Tensor::new(vec![0.0, 1e-3, 0.0, 0.0, 0.0, -0.5], &[2, 3]).unwrap();
    let report = compare(&got, &want, Tolerance::default());
    assert!(!report.passed());
    assert_eq!((report.checked(), report.failing()), (6, 2));
    assert_eq!(report.worst_index(), Some(5));
    assert_eq!(report.worst()[0].index, vec![1, 2]);
    assert_eq!(report.worst()[1].index, vec![0, 1]);
    assert_eq!(report.max_abs_error(), 0.5);
    let text = report.to_string();
    assert!(text.starts_with("FAIL: 2 of 6"), "{text}");
    assert!(text.contains("[1, 2]") && text.contains("-0.5"), "{text}");
}

#[test]
fn comparison_of_different_shapes_fails_naming_both() {
    let report = compare(
        &Tensor::scalar(3.0),
        &Tensor::zeros(&[4]),
        Tolerance::default(),
    );
    assert!(!report.passed());
    assert_eq!(report.worst_index(), None);
    let text = report.to_string();
    assert!(
        text.contains("shapes differ") && text.contains("[]") && text.contains("[4]"),
        "{text}"
    );
}

#[test]
fn comparison_says_when_failures_sit_at_kinks() {
    let (pred, target) = batch_with_ties(9, 3);
    let kinks: Vec<bool> = pred
        .data()
        .iter()
        .zip(target.data())
        .map(|(p, t)| p * t == 1.0)
        .collect();
    let report = compare(
        &positive_at_ties(&pred, &target),
        &hinge_grad_closed_form(&pred, &target),
        Tolerance::default(),
    )
    .with_kinks(&kinks);
    assert_eq!(report.failing_at_kinks(), Some(3));
    assert!(report.to_string().contains("at a kink"), "{report}");
}

#[test]
fn nan_matches_nan_and_a_one_sided_nan_fails() {
    let nan = f64::NAN;
    let tol = Tolerance::default();
    assert!(
        compare(
            &Tensor::from(vec![nan, 1.0]),
            &Tensor::from(vec![nan, 1.0]),
            tol
        )
        .passed()
    );
    let report = compare(
        &Tensor::from(vec![nan, 1.0]),
        &Tensor::from(vec![0.0, 1.0]),
        tol,
    );
    assert_eq!(report.worst_index(), Some(0));
    assert_eq!(report.max_abs_error(), f64::INFINITY);
}

/// `x^2` with a hand-written backward `2x + offset`.
fn square_with_offset<'t>(tape: &'t Tape, x: Var<'t>, offset: f64) -> Var<'t> {
    tape.custom(
        "square",
        &[x],
        |x| Tensor::new(x[0].data().iter().map(|v| v * v).collect(), x[0].shape()).unwrap(),
        move |x, _, up| {
            let g = x[0].data().iter().zip(up.data());
            vec![
                Tensor::new(
                    g.map(|(v, u)| (2.0 * v + offset) * u).collect(),
                    x[0].shape(),
                )
                .unwrap(),
            ]
        },
    )
    .sum()
}

#[test]
fn curvature_is_not_taken_for_a_kink_so_a_small_error_at_a_stationary_point_fails() {
    // First-order one-sided slopes of x^2 at 0 are ±h: any value in between would pass.
    let at = Tensor::from(vec![0.0, 0.0]);
    let right = gradcheck(|tape, x| square_with_offset(tape, x, 0.0), &at);
    assert!(right.passed() && right.kinks() == 0, "{right}");
    let wrong = gradcheck(|tape, x| square_with_offset(tape, x, 5e-6), &at);
    assert_eq!(wrong.failing(), 2, "{wrong}");
}

#[test]
fn a_one_sided_slope_of_a_curved_kink_passes() {
    // ln(1 + 10 max(x, 0)) at 0: slopes 0 (left) and 10 (right); the tape gives 0 (the
    // tie goes to the constant), the left slope.
    let at = Tensor::from(vec![0.0, 0.0]);
    let report = gradcheck(|_, x| (max(x, 0.0) * 10.0 + 1.0).ln().sum(), &at);
    assert!(report.passed(), "{report}");
    assert_eq!(report.kinks(), 2, "{report}");
}

#[test]
fn directional_steps_each_element_in_proportion_to_its_size() {
    // One step for all would take 0.001 below zero, where ln is NaN.
    let at = Tensor::from(vec![1000.0, 0.001]);
    let report = directional(|_, p| p.ln().sum(), &at, 4);
    assert!(report.passed(), "{report}");
}

// ---- issue: a checker that never lies ------------------------------------------------

/// `ln(x)` with a hand-written derivative `factor / x`.
fn ln_times<'t>(tape: &'t Tape, x: Var<'t>, factor: f64) -> Var<'t> {
    tape.custom(
        "ln",
        &[x],
        |x| Tensor::new(x[0].data().iter().map(|v| v.ln()).collect(), x[0].shape()).unwrap(),
        move |x, _, up| {
            let g = x[0]
                .data()
                .iter()
                .zip(up.data())
                .map(|(v, u)| factor / v * u);
            vec![Tensor::new(g.collect(), x[0].shape()).unwrap()]
        },
    )
}

/// The step the checker used to take for |x| <= 1.
const OLD_H: f64 = 6.055_454_452_393_343e-6;

#[test]
fn gradcheck_passes_the_seed_hinge_just_past_its_kink() {
    // Inactive, gradient exactly 0; the kink at pred = 1 is within two steps.
    let at = Tensor::from(vec![1.000_004_036_985_895_1]);
    let report = gradcheck(
        |tape, p| hinge(p, tape.constant(Tensor::from(vec![1.0]))),
        &at,
    );
    assert!(report.passed(), "{report}");
    assert_eq!(report.kinks(), 0, "{report}");
    assert_eq!(report.worst()[0].want, 0.0, "{report}");
}

#[test]
fn gradcheck_is_not_fooled_by_a_kink_two_thirds_of_a_step_away() {
    // x + 2e-4 max(0, x - 2h/3) at 0: the derivative is exactly 1.
    fn f<'t>(tape: &'t Tape, x: Var<'t>, factor: f64) -> Var<'t> {
        let x = identity_with_error(tape, x, 0, factor);
        (x + max(0.0, x - 2.0 * OLD_H / 3.0) * 2e-4).sum()
    }
    let at = Tensor::from(vec![0.0]);
    let right = gradcheck(|tape, x| f(tape, x, 1.0), &at);
    assert!(right.passed(), "{right}");
    let wrong = gradcheck(|tape, x| f(tape, x, 1.001), &at);
    assert!(!wrong.passed(), "{wrong}");
}

#[test]
fn gradcheck_is_not_fooled_by_two_kinks_half_a_step_either_side() {
    // max(0, -x - h/2) - max(0, x - h/2) at 0: flat there, derivative 0.
    let report = gradcheck(
        |_, x| (max(0.0, -x - OLD_H / 2.0) - max(0.0, x - OLD_H / 2.0)).sum(),
        &Tensor::from(vec![0.0]),
    );
    assert!(report.passed(), "{report}");
    assert_eq!(report.kinks(), 0, "{report}");
}

#[test]
fn gradcheck_fails_an_infinite_or_nan_gradient() {
    for (at, wrong) in [(1, f64::INFINITY), (0, f64::NAN)] {
        let report = gradcheck(
            |tape, x| (identity_with_error(tape, x, at, wrong) * 2.0).sum(),
            &Tensor::from(vec![0.5, 0.25]),
        );
        assert_eq!(report.failing(), 1, "{wrong}: {report}");
        assert_eq!(report.worst_index(), Some(at), "{wrong}: {report}");
    }
}

#[test]
fn gradcheck_fails_half_where_the_truth_is_zero_half_a_step_from_a_kink() {
    // max(0, x - h/2) at 0 is flat: the right gradient is 0; the custom op below adds a
    // wrong 0.5 (its value is 0, its hand-written derivative 0.5).
    fn f<'t>(tape: &'t Tape, x: Var<'t>) -> Var<'t> {
        let wrong = tape.custom(
            "zero",
            &[x],
            |x| Tensor::zeros(x[0].shape()),
            |_, _, up| {
                vec![Tensor::new(up.data().iter().map(|u| 0.5 * u).collect(), up.shape()).unwrap()]
            },
        );
        (max(0.0, x - OLD_H / 2.0) + wrong).sum()
    }
    let report = gradcheck(f, &Tensor::from(vec![0.0]));
    assert!(!report.passed(), "{report}");
    assert_eq!(report.kinks(), 0, "{report}");
}

#[test]
fn gradcheck_fails_ln_two_percent_high_near_zero() {
    let at = Tensor::from(vec![1e-4]);
    let right = gradcheck(|tape, x| ln_times(tape, x, 1.0).sum(), &at);
    assert!(right.passed(), "{right}");
    let wrong = gradcheck(|tape, x| ln_times(tape, x, 1.02).sum(), &at);
    assert!(!wrong.passed(), "{wrong}");
    assert_eq!(wrong.kinks(), 0, "{wrong}");
}

#[test]
fn gradcheck_passes_ln_where_the_first_step_would_leave_its_domain() {
    let at = Tensor::from(vec![1e-5, 3e-7]);
    let report = gradcheck(|_, x| x.ln().sum(), &at);
    assert!(report.passed(), "{report}");
    assert_eq!(report.unchecked(), 0, "{report}");
}

#[test]
fn gradcheck_does_not_pass_where_f_is_not_finite() {
    // exp(1000) is inf: nothing can be checked, whatever the gradient.
    let report = gradcheck(|_, x| x.exp().sum(), &Tensor::from(vec![1000.0, 0.0]));
    assert!(!report.passed(), "{report}");
    assert_eq!(report.unchecked(), 2, "{report}");
    assert!(report.to_string().contains("cannot be checked"), "{report}");
}

#[test]
fn gradcheck_reports_a_tolerance_widened_by_rounding_noise() {
    // f = x + 1e9: the differences carry rounding noise of about 1e9 eps / h.
    fn f<'t>(tape: &'t Tape, x: Var<'t>, factor: f64) -> Var<'t> {
        (identity_with_error(tape, x, 0, factor) + 1e9).sum()
    }
    let at = Tensor::from(vec![0.5]);
    let right = gradcheck(|tape, x| f(tape, x, 1.0), &at);
    assert!(right.passed(), "{right}");
    let (index, applied, nominal) = right.widened().expect("the tolerance was widened");
    assert_eq!(index, &[0]);
    assert!(applied > 100.0 * nominal, "{right}");
    assert!(right.to_string().contains("widened"), "{right}");
    // Where the widened tolerance still resolves an error, it is caught.
    let wrong = gradcheck(|tape, x| f(tape, x, 2.0), &at);
    assert!(!wrong.passed(), "{wrong}");
}

#[test]
fn gradcheck_of_a_many_element_f_panics_at_the_callers_line_saying_to_reduce() {
    let line = line!() + 2;
    let message = panic_message(|| {
        gradcheck(|_, x| x * 2.0, &Tensor::from(vec![1.0, 2.0]));
    });
    assert!(message.contains(".sum()"), "{message}");
    assert!(
        message.contains(&format!("tests/check.rs:{line}")),
        "{message}"
    );
}

#[test]
fn compare_ranks_an_infinite_error_worst() {
    let got = Tensor::from(vec![f64::INFINITY, 2.0]);
    let want = Tensor::from(vec![1.0, 1.0]);
    let report = compare(&got, &want, Tolerance::default());
    assert_eq!(report.worst_index(), Some(0), "{report}");
    assert_eq!(report.worst().len(), 2, "{report}");
    let report = compare(
        &Tensor::from(vec![3.0, f64::NAN, 1.0]),
        &Tensor::from(vec![1.0, 1.0, 1.5]),
        Tolerance::default(),
    );
    assert_eq!(report.worst_index(), Some(1), "{report}");
    assert_eq!(
        report.worst()[1].flat,
        0,
        "then the larger finite error: {report}"
    );
}

#[test]
fn gradcheck_many_checks_every_input_and_names_the_wrong_one() {
    // A two-layer net: relu(x W1 + b1) W2 + b2, squared; W1's backward is wrong in one
    // element through a custom identity in front of it.
    let x = tensor(21, &[3, 2], -1.0, 1.0);
    let w1 = tensor(22, &[2, 4], -1.0, 1.0);
    let b1 = tensor(23, &[4], -0.5, 0.5);
    let w2 = tensor(24, &[4, 1], -1.0, 1.0);
    let b2 = tensor(25, &[1], -0.5, 0.5);
    let at = [x, w1, b1, w2, b2];
    fn net<'t>(tape: &'t Tape, v: &[Var<'t>], factor: f64) -> Var<'t> {
        let w1 = identity_with_error(tape, v[1], 5, factor);
        let hidden = (v[0].matmul(w1) + v[2]).relu();
        let out = hidden.matmul(v[3]) + v[4];
        (out * out).sum()
    }
    let right = tapegrad::check::gradcheck_many(|tape, v| net(tape, v, 1.0), &at);
    assert_eq!(right.len(), 5);
    for (k, report) in right.iter().enumerate() {
        assert!(report.passed(), "{report}");
        assert_eq!(report.input(), Some(k));
        assert!(
            report.to_string().starts_with(&format!("input {k}: PASS")),
            "{report}"
        );
        assert_eq!(report.checked(), at[k].len());
    }
    let wrong = tapegrad::check::gradcheck_many(|tape, v| net(tape, v, 1.01), &at);
    let failing: Vec<usize> = (0..5).filter(|&k| !wrong[k].passed()).collect();
    assert_eq!(failing, vec![1], "{}", wrong[1]);
    assert_eq!(wrong[1].worst_index(), Some(5), "{}", wrong[1]);
}

#[test]
fn gradcheck_reveals_where_two_kinks_cancel_and_the_local_rules_do_not() {
    // max(x, 0) + min(x, 0) is x: derivative 1. At 0 both ties go to the constant, so the
    // tape says 0 (JAX's halves happen to add up to 1); the check must say so.
    let at = Tensor::from(vec![0.0, 1.5]);
    let tape = Tape::new();
    let x = tape.var(at.clone());
    let g = (max(x, 0.0) + min(x, 0.0)).sum().backward();
    assert_eq!(g.wrt(x).data(), &[0.0, 1.0]);
    let report = gradcheck(|_, x| (max(x, 0.0) + min(x, 0.0)).sum(), &at);
    assert_eq!(report.failing(), 1, "{report}");
    assert_eq!(report.worst_index(), Some(0), "{report}");
    assert_eq!(report.kinks(), 0, "{report}");
}

/// `f` with a hand-written backward that claims `claim` for every element.
fn claiming<'t>(
    tape: &'t Tape,
    x: Var<'t>,
    f: impl Fn(f64) -> f64 + 'static,
    claim: f64,
) -> Var<'t> {
    tape.custom(
        "claiming",
        &[x],
        move |x| Tensor::new(x[0].data().iter().map(|&v| f(v)).collect(), x[0].shape()).unwrap(),
        move |x, _, up| {
            let g = up.data().iter().map(|u| u * claim).collect();
            vec![Tensor::new(g, x[0].shape()).unwrap()]
        },
    )
    .sum()
}

#[test]
fn at_a_kink_only_the_slopes_of_the_smallest_step_count_not_a_second_kink_nearby() {
    // |x| + |x - 1e-6| at 0: one-sided slopes -2 and 0; the second kink is far from the
    // smallest step but inside the first ones.
    let f = |v: f64| v.abs() + (v - 1e-6).abs();
    let at = Tensor::from(vec![0.0]);
    for claim in [-2.0, -1.0, 0.0] {
        let report = gradcheck(|tape, x| claiming(tape, x, f, claim), &at);
        assert!(report.passed() && report.kinks() == 1, "{claim}: {report}");
    }
    for claim in [1.0, 0.5, -2.5] {
        let report = gradcheck(|tape, x| claiming(tape, x, f, claim), &at);
        assert!(!report.passed(), "{claim}: {report}");
    }
}

#[test]
fn at_a_kink_curvature_of_the_large_steps_does_not_widen_the_interval() {
    // relu(x) + 1e5 x^2 at 0: subgradients [0, 1].
    let f = |v: f64| v.max(0.0) + 1e5 * v * v;
    let at = Tensor::from(vec![0.0]);
    for claim in [0.0, 0.5, 1.0] {
        let report = gradcheck(|tape, x| claiming(tape, x, f, claim), &at);
        assert!(report.passed(), "{claim}: {report}");
    }
    for claim in [1.3, -0.3, 1.01] {
        let report = gradcheck(|tape, x| claiming(tape, x, f, claim), &at);
        assert!(!report.passed(), "{claim}: {report}");
    }
}

#[test]
fn gradcheck_fails_a_custom_backward_that_ignores_its_upstream_even_as_the_last_op() {
    // sum(x^2) with the backward 2x, upstream forgotten: right only for an upstream of 1.
    fn forgetful<'t>(tape: &'t Tape, x: Var<'t>) -> Var<'t> {
        tape.custom(
            "sum_of_squares",
            &[x],
            |x| Tensor::scalar(x[0].data().iter().map(|v| v * v).sum()),
            |x, _, _| {
                let g = x[0].data().iter().map(|v| 2.0 * v).collect();
                vec![Tensor::new(g, x[0].shape()).unwrap()]
            },
        )
    }
    let report = gradcheck(forgetful, &Tensor::from(vec![0.5, -1.0, 2.0]));
    assert_eq!(report.failing(), 3, "{report}");
}

#[test]
fn with_kinks_refuses_a_mask_of_the_wrong_length_unless_nothing_was_compared() {
    let three = Tensor::from(vec![1.0, 2.0, 3.0]);
    let message =
        panic_message(|| compare(&three, &three, Tolerance::default()).with_kinks(&[true]));
    assert!(
        message.contains("tapegrad: with_kinks: the mask has 1 entries for 3 elements"),
        "{message}"
    );
    assert!(message.contains("(at tests/check.rs:"), "{message}"); // the caller's line
    // Shapes differ: nothing compared, the mask is not needed.
    let report =
        compare(&Tensor::scalar(1.0), &three, Tolerance::default()).with_kinks(&[false; 3]);
    assert!(!report.passed());
}

#[test]
fn report_tables_mark_the_failing_rows() {
    let got = Tensor::from(vec![1.0, 2.0, 3.5]);
    let want = Tensor::from(vec![1.0, 2.0 + 1e-13, 3.0]);
    let report = compare(&got, &want, Tolerance::default());
    let worst = report.worst();
    assert_eq!((worst[0].flat, worst[0].fails), (2, true));
    assert!(worst[1..].iter().all(|e| !e.fails), "{report}");
    let text = report.to_string();
    let rows: Vec<&str> = text.lines().skip(2).collect();
    assert!(
        rows[0].trim_start().starts_with("[2]") && rows[0].ends_with("FAIL"),
        "{text}"
    );
    assert!(rows[1..].iter().all(|r| !r.contains("FAIL")), "{text}");
}

#[test]
fn gradcheck_many_of_no_inputs_panics_instead_of_passing_vacuously() {
    let message = panic_message(|| {
        tapegrad::check::gradcheck_many(|tape, _| tape.constant(Tensor::scalar(1.0)), &[])
    });
    assert!(
        message.contains("tapegrad: gradcheck_many: no inputs"),
        "{message}"
    );
    assert!(message.contains("(at tests/check.rs:"), "{message}");
}
