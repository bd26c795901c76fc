//! A binary linear SVM on the Wisconsin breast-cancer data, trained with gradients from
//! the tape, and checked against the gradient written by hand.
//!
//! ```text
//! cargo run --release --example linear_svm [-- --epochs N]
//! ```
//!
//! Objective (569 rows, 30 standardized features, benign = +1, malignant = -1):
//!
//! ```text
//! J(w, b) = hinge(X w + b, y) + lambda / 2 * |w|^2,   lambda = 0.01
//! hinge(f, y) = mean(max(0, 1 - y * f))               (tapegrad::losses::hinge)
//! ```
//!
//! built from tape ops on a fresh recording each epoch (one `Tape`, cleared, so memory
//! stays flat). Before training, the tape's gradient is compared with the closed form
//! `dJ/dw = X^T g + lambda w`, `dJ/db = sum(g)`, `g = where(y f < 1, -y / N, 0)`.
//!
//! Training is full-batch subgradient descent with the step `2 / (lambda (t + 1))` and
//! the iterates averaged with weights proportional to `t` (Lacoste-Julien, Schmidt and
//! Bach, 2012: O(1/T) for strongly convex objectives). The reported model is that
//! average: the last iterate itself keeps jumping across the kinks. The objective's
//! exact optimum, 0.066077756106051 (train accuracy 0.98594), was computed outside the
//! project with cvxpy + CLARABEL (primal) and a dual QP, which agree to 3e-15. The
//! example exits with status 1 unless the averaged model reaches accuracy >= 0.98 and an
//! objective within 1% of that optimum.

use std::process::exit;
use std::time::Instant;
use tapegrad::check::{Tolerance, compare};
use tapegrad::losses::hinge;
use tapegrad::{Tape, Tensor, Var};

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/data/breast_cancer.csv"
);
const LAMBDA: f64 = 0.01;
const OPTIMUM: f64 = 0.066077756106051;
const DEFAULT_EPOCHS: usize = 3000;

/// Rows of features (standardized) and labels ±1.
struct Data {
    x: Tensor,
    y: Tensor,
    rows: usize,
    features: usize,
}

fn main() {
    let epochs = parse_epochs().unwrap_or_else(|message| {
        eprintln!("linear_svm: {message}\nusage: linear_svm [--epochs N]");
        exit(2);
    });
    let data = load(DATA).unwrap_or_else(|message| {
        eprintln!("linear_svm: {DATA}: {message}");
        exit(2);
    });
    println!(
        "breast cancer: {} rows x {} features, standardized (ddof=0); benign = +1, malignant = -1",
        data.rows, data.features
    );
    println!("objective: hinge(X w + b, y) + {LAMBDA}/2 |w|^2\n");

    let mut w = Tensor::zeros(&[data.features, 1]);
    let mut b = Tensor::scalar(0.0);
    let mut ok = gradient_check("epoch 0 (w = 0, b = 0)", &data, &w, &b);
    // With f = 1 everywhere, every benign row sits exactly on the margin: y f == 1.
    ok &= gradient_check("w = 0, b = 1", &data, &w, &Tensor::scalar(1.0));

    // Weighted average of the iterates, weight t for iterate t.
    let (mut w_avg, mut b_avg, mut weight) = (w.clone(), 0.0, 0.0);
    let mut tape = Tape::new();
    let start = Instant::now();
    println!(
        "\n{:>6}  {:>10}  {:>12}  {:>10}  {:>9}",
        "epoch", "step", "J(iterate)", "J(average)", "accuracy"
    );
    for t in 1..=epochs {
        tape.clear();
        let step = 2.0 / (LAMBDA * (t as f64 + 1.0));
        let (objective, gw, gb) = {
            let (wv, bv, loss) = build(&tape, &data, &w, &b);
            let objective = loss.value().item();
            let grads = loss.backward();
            (objective, grads.wrt(wv).clone(), grads.wrt(bv).item())
        };
        w = axpy(-step, &gw, &w);
        b = Tensor::scalar(b.item() - step * gb);

        weight += t as f64;
        let share = t as f64 / weight;
        w_avg = axpy(share, &axpy(-1.0, &w_avg, &w), &w_avg);
        b_avg += share * (b.item() - b_avg);

        if t == 1 || t % (epochs / 10).max(1) == 0 {
            let b_avg = Tensor::scalar(b_avg);
            println!(
                "{t:>6}  {step:>10.3e}  {objective:>12.6}  {:>10.6}  {:>9.4}",
                evaluate(&data, &w_avg, &b_avg),
                accuracy(&data, &w_avg, &b_avg)
            );
        }
    }
    let elapsed = start.elapsed();
    let b_avg = Tensor::scalar(b_avg);
    println!(
        "\ntrained {epochs} epochs in {:.3} s ({:.1} us per epoch: build, backward, update)",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / epochs as f64
    );
    ok &= gradient_check("the averaged model", &data, &w_avg, &b_avg);

    let acc = accuracy(&data, &w_avg, &b_avg);
    let objective = evaluate(&data, &w_avg, &b_avg);
    let gap = (objective - OPTIMUM) / OPTIMUM * 100.0;
    println!("\ntrain accuracy: {acc:.4}");
    println!("objective: {objective:.6} (optimum {OPTIMUM:.6}, gap {gap:+.3}%)");
    if acc < 0.98 {
        println!("FAIL: train accuracy below 0.98");
        ok = false;
    }
    if gap > 1.0 {
        println!("FAIL: objective more than 1% above the optimum");
        ok = false;
    }
    if !ok {
        exit(1);
    }
}

/// Record `J(w, b)` on `tape`: returns the `w` and `b` leaves and the objective.
fn build<'t>(tape: &'t Tape, data: &Data, w: &Tensor, b: &Tensor) -> (Var<'t>, Var<'t>, Var<'t>) {
    let x = tape.constant(data.x.clone());
    let y = tape.constant(data.y.clone());
    let wv = tape.var(w.clone());
    let bv = tape.var(b.clone());
    let f = x.matmul(wv).reshape(&[data.rows]) + bv;
    let objective = hinge(f, y) + LAMBDA / 2.0 * (wv * wv).sum();
    (wv, bv, objective)
}

/// `J(w, b)`, forward only.
fn evaluate(data: &Data, w: &Tensor, b: &Tensor) -> f64 {
    let tape = Tape::new();
    let (_, _, objective) = build(&tape, data, w, b);
    objective.value().item()
}

/// `f = X w + b`, by hand.
fn decision(data: &Data, w: &Tensor, b: &Tensor) -> Vec<f64> {
    let (x, w, b) = (data.x.data(), w.data(), b.item());
    (0..data.rows)
        .map(|i| {
            let row = &x[i * data.features..(i + 1) * data.features];
            row.iter().zip(w).map(|(a, c)| a * c).sum::<f64>() + b
        })
        .collect()
}

/// Fraction of rows with `sign(f) == y` (f = 0 counts as +1).
fn accuracy(data: &Data, w: &Tensor, b: &Tensor) -> f64 {
    let f = decision(data, w, b);
    let right = f
        .iter()
        .zip(data.y.data())
        .filter(|&(&f, &y)| (f >= 0.0) == (y > 0.0))
        .count();
    right as f64 / data.rows as f64
}

/// The gradient by hand: `g = where(y f < 1, -y / N, 0)`, `dJ/dw = X^T g + lambda w`,
/// `dJ/db = sum(g)`.
fn closed_form(data: &Data, w: &Tensor, b: &Tensor) -> (Tensor, Tensor) {
    let n = data.rows as f64;
    let f = decision(data, w, b);
    let g: Vec<f64> = f
        .iter()
        .zip(data.y.data())
        .map(|(&f, &y)| if y * f < 1.0 { -y / n } else { 0.0 })
        .collect();
    let x = data.x.data();
    let mut dw: Vec<f64> = w.data().iter().map(|&w| LAMBDA * w).collect();
    for (i, &gi) in g.iter().enumerate() {
        let row = &x[i * data.features..(i + 1) * data.features];
        for (d, &xij) in dw.iter_mut().zip(row) {
            *d += xij * gi;
        }
    }
    let dw = Tensor::new(dw, w.shape()).expect("shape of w");
    (dw, Tensor::scalar(g.iter().sum()))
}

/// Compare the tape's gradient with [`closed_form`] at `(w, b)` and print both reports.
fn gradient_check(when: &str, data: &Data, w: &Tensor, b: &Tensor) -> bool {
    let tape = Tape::new();
    let (wv, bv, objective) = build(&tape, data, w, b);
    let grads = objective.backward();
    let (dw, db) = closed_form(data, w, b);
    let margins: Vec<f64> = decision(data, w, b)
        .iter()
        .zip(data.y.data())
        .map(|(&f, &y)| y * f)
        .collect();
    let active = margins.iter().filter(|&&m| m < 1.0).count();
    let on = margins.iter().filter(|&&m| m == 1.0).count();
    println!(
        "gradient check at {when}: tape vs closed form ({active} of {} rows inside the margin, \
         {on} exactly on it)",
        data.rows
    );
    let rw = compare(grads.wrt(wv), &dw, Tolerance::default());
    let rb = compare(grads.wrt(bv), &db, Tolerance::default());
    println!("dJ/dw {rw}");
    println!("dJ/db {rb}");
    rw.passed() && rb.passed()
}

/// `a * x + y`, elementwise.
fn axpy(a: f64, x: &Tensor, y: &Tensor) -> Tensor {
    let data = x.data().iter().zip(y.data()).map(|(x, y)| a * x + y);
    Tensor::new(data.collect(), y.shape()).expect("same shape")
}

fn parse_epochs() -> Result<usize, String> {
    let mut epochs = DEFAULT_EPOCHS;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--epochs" => {
                let value = args.next().ok_or("--epochs needs a number")?;
                epochs = value
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or(format!("--epochs: not a positive count: {value:?}"))?;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(epochs)
}

/// Read the CSV (header `rows,features,class names...`, then `features..., class`),
/// standardize every feature to mean 0 and population standard deviation 1, and map
/// class 1 (benign) to +1 and class 0 (malignant) to -1.
fn load(path: &str) -> Result<Data, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().ok_or("empty file")?.split(',').collect();
    let number = |s: &str| {
        s.trim()
            .parse::<usize>()
            .map_err(|_| format!("bad header {s:?}"))
    };
    let (rows, features) = (
        number(header[0])?,
        number(header.get(1).ok_or("short header")?)?,
    );
    let mut x = Vec::with_capacity(rows * features);
    let mut y = Vec::with_capacity(rows);
    for (k, line) in lines.filter(|l| !l.trim().is_empty()).enumerate() {
        let values: Vec<f64> = line
            .split(',')
            .map(|v| v.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("row {}: {e}", k + 1))?;
        if values.len() != features + 1 {
            return Err(format!(
                "row {}: {} values, want {}",
                k + 1,
                values.len(),
                features + 1
            ));
        }
        x.extend_from_slice(&values[..features]);
        y.push(if values[features] == 1.0 { 1.0 } else { -1.0 });
    }
    if y.len() != rows {
        return Err(format!("{} rows, the header says {rows}", y.len()));
    }
    standardize(&mut x, features);
    Ok(Data {
        x: Tensor::new(x, &[rows, features]).map_err(|e| e.to_string())?,
        y: Tensor::from(y),
        rows,
        features,
    })
}

/// Per column: subtract the mean, divide by the population (ddof = 0) standard deviation.
fn standardize(x: &mut [f64], features: usize) {
    let rows = x.len() / features;
    for j in 0..features {
        let mean = (0..rows).map(|i| x[i * features + j]).sum::<f64>() / rows as f64;
        let var = (0..rows)
            .map(|i| (x[i * features + j] - mean).powi(2))
            .sum::<f64>()
            / rows as f64;
        let std = if var > 0.0 { var.sqrt() } else { 1.0 };
        for i in 0..rows {
            x[i * features + j] = (x[i * features + j] - mean) / std;
        }
    }
}
