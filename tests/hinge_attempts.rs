//! The seed question's attempts at `hinge_grad_input` (ported in
//! `examples/hinge/attempts.rs`, which `cargo run --example hinge -- --attempts` prints),
//! judged against the tape gradient of `tapegrad::losses::hinge` on a batch with exact
//! ties: the right answer passes, every wrong one fails, and the report's worst element
//! is where the mistake shows.

#[path = "../examples/hinge/attempts.rs"]
mod attempts;

use attempts::{Expect, active, tape_gradient, tie_batch, ties};
use tapegrad::Tensor;
use tapegrad::check::{Comparison, Tolerance, compare};
use tapegrad::losses::hinge_grad_closed_form;

fn judge(f: fn(&Tensor, &Tensor) -> Tensor) -> Comparison {
    let (pred, target) = tie_batch();
    let kinks = ties(&pred, &target);
    compare(
        &f(&pred, &target),
        &tape_gradient(&pred, &target),
        Tolerance::default(),
    )
    .with_kinks(&kinks)
}

fn count(mask: &[bool]) -> usize {
    mask.iter().filter(|&&m| m).count()
}

#[test]
fn the_batch_has_ties_active_and_inactive_elements() {
    let (pred, target) = tie_batch();
    assert_eq!(pred.shape(), &[16]);
    assert_eq!(target.shape(), &[16]);
    assert!(
        pred.data()
            .iter()
            .chain(target.data())
            .all(|x| x.is_finite())
    );
    let kinks = ties(&pred, &target);
    let active = active(&pred, &target);
    assert_eq!(count(&kinks), 6);
    assert!(kinks[..6].iter().all(|&k| k), "the first six are the ties");
    assert!(count(&active) >= 4);
    assert!(
        count(&active) + count(&kinks) < 16,
        "some inactive ones too"
    );
    assert!(
        target.data().iter().any(|t| t.abs() != 1.0),
        "real-valued targets"
    );
    // The neighbours of a tie: one ulp either side.
    assert!(active[6] && !kinks[6]);
    assert!(!active[7] && !kinks[7]);
}

#[test]
fn the_tape_gradient_is_the_seed_closed_form() {
    let (pred, target) = tie_batch();
    let tape = tape_gradient(&pred, &target);
    let closed = hinge_grad_closed_form(&pred, &target);
    let report = compare(&tape, &closed, Tolerance::default());
    assert!(report.passed(), "{report}");
    for (i, &k) in ties(&pred, &target).iter().enumerate() {
        if k {
            assert_eq!(tape.data()[i], 0.0, "0 at the tie {i}");
        }
    }
}

#[test]
fn the_answer_passes() {
    let report = judge(attempts::answer);
    assert!(report.passed(), "{report}");
    assert_eq!(report.max_abs_error(), 0.0, "{report}");
    // And it is the crate's closed form, element for element.
    let (pred, target) = tie_batch();
    assert_eq!(
        attempts::answer(&pred, &target),
        hinge_grad_closed_form(&pred, &target)
    );
}

#[test]
fn try_1_returns_a_scalar_reported_as_a_shape_mismatch() {
    let (pred, target) = tie_batch();
    let got = attempts::try_1(&pred, &target);
    assert_eq!(got.shape(), &[] as &[usize]);
    // The sum of the indices of the active elements.
    let want: usize = active(&pred, &target)
        .iter()
        .enumerate()
        .filter(|(_, a)| **a)
        .map(|(i, _)| i)
        .sum();
    assert_eq!(got.item(), want as f64);

    let report = judge(attempts::try_1);
    assert!(!report.passed());
    assert!(!report.shapes_match());
    assert_eq!(report.worst_index(), None, "nothing compared");
    let text = report.to_string();
    assert!(text.contains("FAIL"), "{text}");
    assert!(text.contains("[]") && text.contains("[16]"), "{text}");
}

#[test]
fn try_1_and_try_3_give_the_scalar_0_when_nothing_is_active() {
    let pred = Tensor::from(vec![2.0, -3.0, 1.0]);
    let target = Tensor::from(vec![1.0, -1.0, 1.0]);
    for f in [attempts::try_1, attempts::try_3] {
        let got = f(&pred, &target);
        assert_eq!(got.shape(), &[] as &[usize]);
        assert_eq!(got.item(), 0.0);
    }
}

#[test]
fn try_3_multiplies_pred_by_the_number_of_active_elements() {
    let (pred, target) = tie_batch();
    let count = count(&active(&pred, &target)) as f64;
    let got = attempts::try_3(&pred, &target);
    assert_eq!(got.shape(), pred.shape());
    for (g, p) in got.data().iter().zip(pred.data()) {
        assert_eq!(*g, count * p);
    }
    let report = judge(attempts::try_3);
    assert!(!report.passed(), "{report}");
}

#[test]
fn try_2_puts_1_where_the_hinge_is_active() {
    let (pred, target) = tie_batch();
    let act = active(&pred, &target);
    let got = attempts::try_2(&pred, &target);
    let mask: Vec<bool> = got.data().iter().map(|&g| g == 1.0).collect();
    assert_eq!(mask, act);
    let report = judge(attempts::try_2);
    assert!(!report.passed());
    let worst = report.worst_index().expect("shapes match");
    assert!(
        act[worst],
        "worst element {worst} should be active: {report}"
    );
    assert_eq!(report.failing(), count(&act), "{report}");
    assert_eq!(report.failing_at_kinks(), Some(0));
}

#[test]
fn le_instead_of_lt_fails_exactly_at_the_ties() {
    let (pred, target) = tie_batch();
    let kinks = ties(&pred, &target);
    let report = judge(attempts::le_instead_of_lt);
    assert!(!report.passed());
    let worst = report.worst_index().unwrap();
    assert!(
        kinks[worst],
        "worst element {worst} should be a tie: {report}"
    );
    assert_eq!(report.failing(), count(&kinks));
    assert_eq!(report.failing_at_kinks(), Some(count(&kinks)));
    assert!(report.to_string().contains("at a kink"), "{report}");
}

#[test]
fn jax_half_at_ties_fails_exactly_at_the_ties() {
    let (pred, target) = tie_batch();
    let kinks = ties(&pred, &target);
    let report = judge(attempts::jax_half_at_ties);
    let worst = report.worst_index().unwrap();
    assert!(
        kinks[worst],
        "worst element {worst} should be a tie: {report}"
    );
    assert_eq!(report.failing(), count(&kinks));
    // Half of what `<=` gives there.
    let e = &report.worst()[0];
    let n = pred.len() as f64;
    assert_eq!(e.got, -0.5 * target.data()[worst] / n);
    assert_eq!(e.want, 0.0);
}

#[test]
fn the_other_wrong_variants_fail_at_an_active_element() {
    let (pred, target) = tie_batch();
    let act = active(&pred, &target);
    for (name, f) in [
        (
            "missing / N",
            attempts::missing_n as fn(&Tensor, &Tensor) -> Tensor,
        ),
        ("flipped sign", attempts::flipped_sign),
        ("pred for target", attempts::pred_for_target),
    ] {
        let report = judge(f);
        assert!(!report.passed(), "{name}: {report}");
        let worst = report.worst_index().unwrap();
        assert!(
            act[worst],
            "{name}: worst element {worst} should be active: {report}"
        );
        assert_eq!(report.failing_at_kinks(), Some(0), "{name}: {report}");
    }
    // Missing / N is off by the factor N exactly.
    let report = judge(attempts::missing_n);
    let e = &report.worst()[0];
    assert_eq!(e.got, e.want * pred.len() as f64);
}

#[test]
fn every_attempt_meets_its_stated_expectation() {
    let (pred, target) = tie_batch();
    let reference = tape_gradient(&pred, &target);
    let all = attempts::all();
    assert_eq!(all.len(), 9);
    assert_eq!(all[0].expect, Expect::Pass, "the answer comes first");
    assert_eq!(
        all.iter().filter(|a| a.expect == Expect::Pass).count(),
        1,
        "only the answer passes"
    );
    for a in &all {
        let report = compare(&(a.grad)(&pred, &target), &reference, Tolerance::default());
        if let Err(message) = a.expect.check(&report, &pred, &target) {
            panic!("{}: {message}", a.name);
        }
        assert!(!a.why.is_empty() && !a.numpy.is_empty());
    }
}

#[test]
fn the_seeded_generator_is_reproducible() {
    let mut a = attempts::Rng::new(7);
    let mut b = attempts::Rng::new(7);
    for _ in 0..100 {
        let x = a.uniform(-2.0, 2.0);
        assert_eq!(x, b.uniform(-2.0, 2.0));
        assert!((-2.0..2.0).contains(&x));
        assert_eq!(a.sign().abs(), 1.0);
        b.sign();
    }
    assert_eq!(tie_batch(), tie_batch());
}
