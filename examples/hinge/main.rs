//! The hinge loss and its gradient at the kink: tape vs. the closed form.
//!
//! ```text
//! cargo run --release --example hinge                      # 16 elements, 6 exact ties
//! cargo run --release --example hinge -- --n 1000000       # a large seeded batch, timed
//! cargo run --release --example hinge -- --dot hinge.dot   # also write the graph as DOT
//! cargo run --release --example hinge -- --attempts        # the seed's attempts, judged
//! ```
//!
//! The loss is `tapegrad::losses::hinge`, `sum(max(0, 1 - pred * target)) / N`, built
//! from ordinary tape ops; its gradient with respect to `pred` is compared element by
//! element with the seed's closed form `np.where(pred * target < 1, -target / N, 0)`,
//! ties (`pred * target == 1` exactly) included. Exits with status 1 if the comparison
//! (or, with `--attempts`, any attempt's expected verdict) fails, 2 on bad arguments.

mod attempts;

use attempts::{Rng, tie_batch, ties};
use std::process::exit;
use std::time::Instant;
use tapegrad::Tensor;
use tapegrad::check::{Comparison, Tolerance, compare, directional, gradcheck};
use tapegrad::losses::{hinge, hinge_grad_closed_form};
use tapegrad::{Tape, Var};

const USAGE: &str = "usage: hinge [--n N] [--dot PATH] [--attempts]
  (no flag)     the hinge loss on 16 elements with 6 exact ties: gradients side by side
  --n N         the same check on a seeded random batch of N elements (~10% ties), timed
  --dot PATH    write the loss's graph (after backward, with gradients) as Graphviz DOT
  --attempts    judge the seed question's attempts at the gradient against the tape";

struct Args {
    n: Option<usize>,
    dot: Option<String>,
    attempts: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        n: None,
        dot: None,
        attempts: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--n" => {
                let value = it.next().ok_or("--n needs a number")?;
                let n: usize = value
                    .replace('_', "")
                    .parse()
                    .map_err(|_| format!("--n: not a count: {value:?}"))?;
                if n == 0 {
                    return Err("--n: the batch must not be empty".into());
                }
                args.n = Some(n);
            }
            "--dot" => args.dot = Some(it.next().ok_or("--dot needs a path")?),
            "--attempts" => args.attempts = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn main() {
    let args = parse_args().unwrap_or_else(|message| {
        eprintln!("hinge: {message}\n{USAGE}");
        exit(2);
    });
    let mut ok = true;
    if args.attempts {
        ok &= judge_attempts();
        if args.n.is_none() && args.dot.is_none() {
            exit(if ok { 0 } else { 1 });
        }
        println!();
    }
    ok &= match args.n {
        None => small_batch(args.dot.as_deref()),
        Some(n) => large_batch(n, args.dot.as_deref()),
    };
    if !ok {
        exit(1);
    }
}

/// Loss, tape gradient, closed form side by side, and the comparison.
fn small_batch(dot: Option<&str>) -> bool {
    let (pred, target) = tie_batch();
    let kinks = ties(&pred, &target);
    let n_ties = kinks.iter().filter(|&&k| k).count();

    let tape = Tape::new();
    let p = tape.var(pred.clone());
    let t = tape.constant(target.clone());
    let loss = hinge(p, t);
    let value = loss.value().item();
    let grads = loss.backward();
    let got = grads.wrt(p);
    let want = hinge_grad_closed_form(&pred, &target);

    println!(
        "hinge loss on {} elements ({n_ties} exact ties pred * target == 1, marked *)",
        pred.len()
    );
    println!("loss = {value}\n");
    println!(
        "{:>3}  {:>20}  {:>20}  {:>20}   {:>22}  {:>22}",
        "i", "pred", "target", "pred * target", "tape gradient", "closed form"
    );
    let rows = pred.data().iter().zip(target.data());
    for (i, (p, t)) in rows.enumerate() {
        let mark = if kinks[i] { "*" } else { " " };
        println!(
            "{i:>3}  {p:>20}  {t:>20}  {:>20}{mark}  {:>22}  {:>22}",
            p * t,
            got.data()[i],
            want.data()[i]
        );
    }
    let report = compare(got, &want, Tolerance::default()).with_kinks(&kinks);
    println!("\ntape gradient vs closed form: {report}");
    if let Some(path) = dot {
        write_dot(path, &loss.to_dot(Some(&grads)), tape.len());
    }
    // The same loss as a Rust programmer writes f64::max: the constant on the right.
    let tape = Tape::new();
    let p = tape.var(pred.clone());
    let t = tape.constant(target.clone());
    let n = pred.len() as f64;
    let written_as_method = (1.0 - p * t).max(0.0).sum() / n;
    let other = compare(
        written_as_method.backward().wrt(p),
        &want,
        Tolerance::default(),
    )
    .with_kinks(&kinks);
    println!("(1.0 - p * t).max(0.0).sum() / N vs closed form: {other}");
    report.passed() && other.passed()
}

/// A seeded batch of `n`: ±1 labels, about 10% exact ties (`pred == target`), the rest
/// uniform in [-3, 3).
fn large_batch(n: usize, dot: Option<&str>) -> bool {
    let mut rng = Rng::new(1_000_003);
    let mut pred = Vec::with_capacity(n);
    let mut target = Vec::with_capacity(n);
    for _ in 0..n {
        let t = rng.sign();
        let p = if rng.uniform(0.0, 1.0) < 0.1 {
            t // t * t == 1 exactly
        } else {
            rng.uniform(-3.0, 3.0)
        };
        pred.push(p);
        target.push(t);
    }
    let (pred, target) = (Tensor::from(pred), Tensor::from(target));
    let kinks = ties(&pred, &target);
    let n_ties = kinks.iter().filter(|&&k| k).count();

    let start = Instant::now();
    let tape = Tape::new();
    let p = tape.var(pred.clone());
    let t = tape.constant(target.clone());
    let loss = hinge(p, t);
    let built = start.elapsed();
    let grads = loss.backward();
    let total = start.elapsed();
    let value = loss.value().item();

    let want = hinge_grad_closed_form(&pred, &target);
    let report = compare(grads.wrt(p), &want, Tolerance::default()).with_kinks(&kinks);
    println!("hinge loss on {n} elements (seeded), {n_ties} exact ties");
    println!("loss = {value}");
    println!(
        "time: build {:.2} ms + backward {:.2} ms = {:.2} ms",
        built.as_secs_f64() * 1e3,
        (total - built).as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3
    );
    println!("tape gradient vs closed form: {report}");
    if let Some(path) = dot {
        write_dot(path, &loss.to_dot(Some(&grads)), tape.len());
    }

    // Finite differences at this size: 8 random directions, 33 evaluations of the loss.
    let start = Instant::now();
    let fd = directional(|tape, p| hinge(p, tape.constant(target.clone())), &pred, 8);
    println!(
        "tape gradient vs finite differences along 8 random directions ({:.0} ms): {fd}",
        start.elapsed().as_secs_f64() * 1e3
    );
    report.passed() && fd.passed()
}

fn write_dot(path: &str, dot: &str, nodes: usize) {
    if let Err(e) = std::fs::write(path, dot) {
        eprintln!("hinge: cannot write {path}: {e}");
        exit(2);
    }
    println!("wrote the graph ({nodes} nodes) as DOT to {path}");
}

/// Compare every attempt with the tape gradient; `true` if each behaves as expected.
fn judge_attempts() -> bool {
    let (pred, target) = tie_batch();
    let kinks = ties(&pred, &target);
    let reference = attempts::tape_gradient(&pred, &target);
    let active = attempts::active(&pred, &target);
    println!(
        "the seed's attempts at hinge_grad_input vs the tape gradient, on {} elements \
         with {} exact ties (p = pred, t = target)\n",
        pred.len(),
        kinks.iter().filter(|&&k| k).count()
    );
    let mut all_as_expected = true;
    for attempt in attempts::all() {
        let got = (attempt.grad)(&pred, &target);
        let report = compare(&got, &reference, Tolerance::default()).with_kinks(&kinks);
        let verdict = if report.passed() { "PASS" } else { "FAIL" };
        println!("{:<18} {verdict}  {}", attempt.name, attempt.numpy);
        println!(
            "{:<18}       worst: {}",
            "",
            worst(&report, &kinks, &active)
        );
        println!("{:<18}       why: {}", "", attempt.why);
        if let Err(message) = attempt.expect.check(&report, &pred, &target) {
            println!("{:<18}       UNEXPECTED: {message}", "");
            all_as_expected = false;
        }
    }
    if all_as_expected {
        println!("\nas expected: the answer passes, every other attempt fails");
    } else {
        println!("\nsome attempt did not behave as expected");
    }

    // The same question without the tape's answer: the manual gradient as the backward
    // of a custom op, checked against finite differences (kinks accepted between the
    // one-sided slopes).
    println!("\nthe answer and the flipped sign as a custom op's backward, vs finite differences:");
    let mut fd_as_expected = true;
    for (name, manual, should_pass) in [
        (
            "answer",
            attempts::answer as fn(&Tensor, &Tensor) -> Tensor,
            true,
        ),
        ("flipped sign", attempts::flipped_sign, false),
    ] {
        let report = gradcheck(|tape, p| manual_hinge(tape, p, &target, manual), &pred);
        println!("{name}: {report}");
        fd_as_expected &= report.passed() == should_pass;
    }
    all_as_expected && fd_as_expected
}

/// The hinge loss as one custom op whose backward is a hand-written gradient.
fn manual_hinge<'t>(
    tape: &'t Tape,
    p: Var<'t>,
    target: &Tensor,
    manual: fn(&Tensor, &Tensor) -> Tensor,
) -> Var<'t> {
    let t = tape.constant(target.clone());
    tape.custom(
        "hinge_by_hand",
        &[p, t],
        |x| {
            let scratch = Tape::new();
            let loss = hinge(
                scratch.constant(x[0].clone()),
                scratch.constant(x[1].clone()),
            );
            Tensor::scalar(loss.value().item())
        },
        move |x, _out, upstream| {
            let g = manual(x[0], x[1]);
            let scaled = g.data().iter().map(|v| v * upstream.item()).collect();
            vec![
                Tensor::new(scaled, x[0].shape()).expect("same shape as pred"),
                Tensor::zeros(x[1].shape()),
            ]
        },
    )
}

/// `[i] got g, want w (a tie)`, or why nothing was compared.
fn worst(report: &Comparison, kinks: &[bool], active: &[bool]) -> String {
    if !report.shapes_match() {
        // The report's own sentence names both shapes.
        return report.to_string();
    }
    if report.passed() {
        return format!(
            "none: 0 of {} elements outside tolerance (max abs err {:.3e})",
            report.checked(),
            report.max_abs_error()
        );
    }
    match report.worst().first() {
        Some(e) => {
            let kind = if kinks[e.flat] {
                "a tie"
            } else if active[e.flat] {
                "active"
            } else {
                "inactive"
            };
            format!(
                "{:?} got {}, want {} ({kind}; abs err {:.3e}); {} of {} elements fail",
                e.index,
                e.got,
                e.want,
                e.abs_error,
                report.failing(),
                report.checked()
            )
        }
        None => "nothing compared".into(),
    }
}
