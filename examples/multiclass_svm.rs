//! A Weston–Watkins multiclass SVM on Fisher's iris data, trained with gradients from
//! the tape, and checked against the vectorized gradient written by hand (CS231n style).
//!
//! ```text
//! cargo run --release --example multiclass_svm [-- --epochs N]
//! ```
//!
//! With `X` the 150 x 4 standardized features plus a column of ones (150 x 5), `W` the
//! 5 x 3 weights (the last row is the bias) and `Y` the one-hot labels (150 x 3):
//!
//! ```text
//! S = X W                                    scores
//! c = sum over columns of S * Y              the correct class's score, as 150 x 1
//! M = max(0, S - c + 1) * (1 - Y)            margins of the wrong classes
//! J(W) = mean over rows of sum over columns of M + lambda / 2 * |W|^2,  lambda = 0.01
//! ```
//!
//! all built from tape ops. The closed form it is compared with:
//! `B = (M > 0)`, then `B[i, y_i] = -sum_j B[i, j]`, `dJ/dW = X^T B / N + lambda W`.
//!
//! Training is full-batch subgradient descent with the step `2 / (lambda (t + 1))` and
//! the iterates averaged with weights proportional to `t` (Lacoste-Julien, Schmidt and
//! Bach, 2012), the same schedule as `linear_svm`; the objective is strongly convex in
//! all of `W` here. The exact optimum, 0.150117521281098 (train accuracy 0.98), was
//! computed outside the project. Exits with status 1 unless the averaged model reaches
//! accuracy >= 0.95 (and both gradient checks pass).

mod common;

use common::{Progress, Schedule, axpy, load_csv, parse_epochs, print_result, toward};
use std::process::exit;
use tapegrad::check::{Tolerance, compare};
use tapegrad::{Tape, Tensor, Var, max};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/iris.csv");
const LAMBDA: f64 = 0.01;
const OPTIMUM: f64 = 0.150117521281098;
const DEFAULT_EPOCHS: usize = 3000;

/// Standardized features with a ones column, one-hot labels, class indices.
struct Data {
    x: Tensor,
    onehot: Tensor,
    class: Vec<usize>,
    rows: usize,
    /// Columns of `x`: the features and the ones.
    cols: usize,
    classes: usize,
    names: Vec<String>,
}

fn main() {
    let epochs = parse_epochs(DEFAULT_EPOCHS).unwrap_or_else(|message| {
        eprintln!("multiclass_svm: {message}\nusage: multiclass_svm [--epochs N]");
        exit(2);
    });
    let data = load(DATA).unwrap_or_else(|message| {
        eprintln!("multiclass_svm: {DATA}: {message}");
        exit(2);
    });
    println!(
        "iris: {} rows x {} features, standardized (ddof=0), plus a ones column; classes {}",
        data.rows,
        data.cols - 1,
        data.names.join(", ")
    );
    println!("objective: Weston-Watkins hinge, mean over rows, + {LAMBDA}/2 |W|^2\n");

    // A seeded random start, so the check sees a mix of active and inactive margins.
    let mut rng = 0x1715_u64;
    let start_values = (0..data.cols * data.classes)
        .map(|_| uniform(&mut rng) * 2.0 - 1.0)
        .collect();
    let mut w = Tensor::new(start_values, &[data.cols, data.classes]).expect("5 x 3");
    let mut ok = gradient_check("the seeded start W0", &data, &w);
    // Biases (0, -1, -1): every setosa row has both wrong-class margins exactly at 0.
    let mut at_ties = vec![0.0; data.cols * data.classes];
    let bias_row = (data.cols - 1) * data.classes;
    at_ties[bias_row + 1..bias_row + data.classes].fill(-1.0);
    let at_ties = Tensor::new(at_ties, &[data.cols, data.classes]).expect("5 x 3");
    ok &= gradient_check("W = 0 with biases (0, -1, -1)", &data, &at_ties);

    let mut w_avg = w.clone();
    let mut schedule = Schedule::new(LAMBDA);
    let mut tape = Tape::new();
    let progress = Progress::start(epochs);
    for t in 1..=epochs {
        tape.clear();
        let step = schedule.step(t);
        let (objective, gw) = {
            let (wv, loss) = build(&tape, &data, &w);
            let objective = loss.value().item();
            let grads = loss.backward();
            (objective, grads.wrt(wv).clone())
        };
        w = axpy(-step, &gw, &w);
        w_avg = toward(&w_avg, &w, schedule.share(t));

        if progress.due(t) {
            progress.line(
                t,
                step,
                objective,
                evaluate(&data, &w_avg),
                accuracy(&data, &w_avg),
            );
        }
    }
    progress.finish();
    ok &= gradient_check("the averaged model", &data, &w_avg);

    let acc = accuracy(&data, &w_avg);
    let objective = evaluate(&data, &w_avg);
    print_result(acc, objective, OPTIMUM);
    if acc < 0.95 {
        println!("FAIL: train accuracy below 0.95");
        ok = false;
    }
    if !ok {
        exit(1);
    }
}

/// Record `J(W)` on `tape`: returns the `W` leaf and the objective.
fn build<'t>(tape: &'t Tape, data: &Data, w: &Tensor) -> (Var<'t>, Var<'t>) {
    let x = tape.constant(data.x.clone());
    let onehot = tape.constant(data.onehot.clone());
    let wv = tape.var(w.clone());
    let scores = x.matmul(wv);
    let correct = (scores * onehot).sum_axis(1).reshape(&[data.rows, 1]);
    let margins = max(0.0, scores - correct + 1.0) * (1.0 - onehot);
    let objective = margins.sum_axis(1).mean() + LAMBDA / 2.0 * (wv * wv).sum();
    (wv, objective)
}

/// `J(W)`, forward only.
fn evaluate(data: &Data, w: &Tensor) -> f64 {
    let tape = Tape::new();
    let (_, objective) = build(&tape, data, w);
    objective.value().item()
}

/// `S = X W`, by hand, row-major `rows x classes`.
fn scores(data: &Data, w: &Tensor) -> Vec<f64> {
    let (x, w, k) = (data.x.data(), w.data(), data.classes);
    let mut s = vec![0.0; data.rows * k];
    for i in 0..data.rows {
        for p in 0..data.cols {
            let xip = x[i * data.cols + p];
            for j in 0..k {
                s[i * k + j] += xip * w[p * k + j];
            }
        }
    }
    s
}

/// Fraction of rows whose highest score is the correct class (first maximum on ties).
fn accuracy(data: &Data, w: &Tensor) -> f64 {
    let s = scores(data, w);
    let right = s
        .chunks_exact(data.classes)
        .zip(&data.class)
        .filter(|(row, c)| {
            let best = row
                .iter()
                .enumerate()
                .fold(0, |best, (j, &v)| if v > row[best] { j } else { best });
            best == **c
        })
        .count();
    right as f64 / data.rows as f64
}

/// The vectorized gradient by hand (CS231n's `svm_loss_vectorized`):
/// `M = max(0, S - S[y] + 1)` with `M[i, y_i] = 0`; `B = (M > 0)`;
/// `B[i, y_i] = -sum_j B[i, j]`; `dJ/dW = X^T B / N + lambda W`.
/// Also returns how many margins are active (`M > 0`) and how many sit exactly at 0.
fn closed_form(data: &Data, w: &Tensor) -> (Tensor, usize, usize) {
    let (n, k) = (data.rows, data.classes);
    let s = scores(data, w);
    let mut b = vec![0.0; n * k];
    let (mut active, mut at_kink) = (0, 0);
    for i in 0..n {
        let y = data.class[i];
        let correct = s[i * k + y];
        let mut count = 0.0;
        for j in (0..k).filter(|&j| j != y) {
            let margin = f64::max(0.0, s[i * k + j] - correct + 1.0);
            if margin > 0.0 {
                b[i * k + j] = 1.0;
                count += 1.0;
                active += 1;
            } else if s[i * k + j] - correct + 1.0 == 0.0 {
                at_kink += 1;
            }
        }
        b[i * k + y] = -count;
    }
    let x = data.x.data();
    let mut dw: Vec<f64> = w.data().iter().map(|&w| LAMBDA * w).collect();
    for i in 0..n {
        for p in 0..data.cols {
            let xip = x[i * data.cols + p] / n as f64;
            for j in 0..k {
                dw[p * k + j] += xip * b[i * k + j];
            }
        }
    }
    let dw = Tensor::new(dw, w.shape()).expect("shape of W");
    (dw, active, at_kink)
}

/// Compare the tape's gradient with [`closed_form`] at `w` and print the report.
fn gradient_check(when: &str, data: &Data, w: &Tensor) -> bool {
    let tape = Tape::new();
    let (wv, objective) = build(&tape, data, w);
    let grads = objective.backward();
    let (dw, active, at_kink) = closed_form(data, w);
    println!(
        "gradient check at {when}: tape vs closed form ({active} of {} wrong-class margins \
         active, {at_kink} exactly at the kink)",
        data.rows * (data.classes - 1)
    );
    let report = compare(grads.wrt(wv), &dw, Tolerance::default());
    println!("dJ/dW {report}");
    report.passed()
}

/// SplitMix64, as a uniform number in [0, 1).
fn uniform(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
}

/// The CSV through [`load_csv`], with a column of ones appended and the classes checked
/// against the header's names and one-hot encoded.
fn load(path: &str) -> Result<Data, String> {
    let (csv, names) = load_csv(path)?;
    if names.is_empty() {
        return Err("short header: no class names".to_string());
    }
    let classes = names.len();
    let class = csv
        .labels
        .iter()
        .enumerate()
        .map(|(k, &c)| {
            if c < 0.0 || c.fract() != 0.0 || c as usize >= classes {
                return Err(format!("row {}: bad class {c}", k + 1));
            }
            Ok(c as usize)
        })
        .collect::<Result<Vec<usize>, String>>()?;
    let (rows, cols) = (csv.rows, csv.features + 1);
    let with_ones: Vec<f64> = csv
        .x
        .chunks_exact(csv.features)
        .flat_map(|row| row.iter().copied().chain([1.0]))
        .collect();
    let onehot: Vec<f64> = class
        .iter()
        .flat_map(|&c| (0..classes).map(move |j| if j == c { 1.0 } else { 0.0 }))
        .collect();
    Ok(Data {
        x: Tensor::new(with_ones, &[rows, cols]).map_err(|e| e.to_string())?,
        onehot: Tensor::new(onehot, &[rows, classes]).map_err(|e| e.to_string())?,
        class,
        rows,
        cols,
        classes,
        names,
    })
}
