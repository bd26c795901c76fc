//! What `linear_svm` and `multiclass_svm` share: the command line, reading and
//! standardizing the CSV data, the training schedule with its averaged iterate, and the
//! progress and result lines they print. `two_layer_net` uses the command line and the
//! CSV reader.

use std::time::Instant;
use tapegrad::Tensor;

/// `--epochs N` from the command line (a positive count, the last one wins), or
/// `default` without it; any other argument is an error.
pub fn parse_epochs(default: usize) -> Result<usize, String> {
    let mut epochs = default;
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

/// A data file as [`load_csv`] returns it.
pub struct Csv {
    /// The features, row-major `rows x features`, each column standardized by
    /// [`load_csv`], as in the file from [`read_csv`].
    pub x: Vec<f64>,
    /// The last column of every row (the class index), as read.
    pub labels: Vec<f64>,
    /// Number of rows.
    pub rows: usize,
    /// Number of features per row.
    pub features: usize,
}

/// Read the CSV (header `rows,features,class names...`, then `features..., class`),
/// check the counts against the header, and standardize every feature to mean 0 and
/// population (ddof = 0) standard deviation 1. Returns the data and the header's class
/// names (none if the header stops after the counts).
pub fn load_csv(path: &str) -> Result<(Csv, Vec<String>), String> {
    let (mut csv, names) = read_csv(path)?;
    standardize(&mut csv.x, csv.features);
    Ok((csv, names))
}

/// [`load_csv`] without the standardization: the features as the file has them (for a
/// caller that scales them itself, with statistics of a training split, say).
pub fn read_csv(path: &str) -> Result<(Csv, Vec<String>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().ok_or("empty file")?.split(',').collect();
    if header.len() < 2 {
        return Err(format!("short header {header:?}"));
    }
    let number = |s: &str| {
        s.trim()
            .parse::<usize>()
            .map_err(|_| format!("bad header field {s:?}"))
    };
    let (rows, features) = (number(header[0])?, number(header[1])?);
    let names: Vec<String> = header[2..].iter().map(|s| s.trim().to_string()).collect();
    let mut x = Vec::with_capacity(rows * features);
    let mut labels = Vec::with_capacity(rows);
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
        labels.push(values[features]);
    }
    if labels.len() != rows {
        return Err(format!("{} rows, the header says {rows}", labels.len()));
    }
    let csv = Csv {
        x,
        labels,
        rows,
        features,
    };
    Ok((csv, names))
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

/// `a * x + y`, elementwise.
pub fn axpy(a: f64, x: &Tensor, y: &Tensor) -> Tensor {
    let data = x.data().iter().zip(y.data()).map(|(x, y)| a * x + y);
    Tensor::new(data.collect(), y.shape()).expect("same shape")
}

/// The training schedule: full-batch subgradient descent with the step
/// `2 / (lambda (t + 1))` at epoch `t` (from 1), and the iterates averaged with weight
/// `t` for iterate `t` (Lacoste-Julien, Schmidt and Bach, 2012).
pub struct Schedule {
    /// The objective's regularization strength.
    lambda: f64,
    /// Sum of the weights of the iterates averaged so far.
    weight: f64,
}

impl Schedule {
    /// The schedule for an objective with regularization strength `lambda`.
    pub fn new(lambda: f64) -> Self {
        Schedule {
            lambda,
            weight: 0.0,
        }
    }

    /// The step size at epoch `t`.
    pub fn step(&self, t: usize) -> f64 {
        2.0 / (self.lambda * (t as f64 + 1.0))
    }

    /// Count iterate `t` into the average and return its share of it,
    /// `t / (1 + 2 + ... + t)`: the average moves that fraction of the way to iterate `t`.
    pub fn share(&mut self, t: usize) -> f64 {
        self.weight += t as f64;
        t as f64 / self.weight
    }
}

/// `average + share * (latest - average)`: the running average moved toward `latest`.
pub fn toward(average: &Tensor, latest: &Tensor, share: f64) -> Tensor {
    axpy(share, &axpy(-1.0, average, latest), average)
}

/// The table printed while training, and the time it took.
pub struct Progress {
    /// Number of epochs of the run.
    epochs: usize,
    /// When training started.
    start: Instant,
}

impl Progress {
    /// Start the clock and print the table's header.
    pub fn start(epochs: usize) -> Self {
        let start = Instant::now();
        println!(
            "\n{:>6}  {:>10}  {:>12}  {:>10}  {:>9}",
            "epoch", "step", "J(iterate)", "J(average)", "accuracy"
        );
        Progress { epochs, start }
    }

    /// Whether epoch `t` gets a line: the first, and every tenth of the run.
    pub fn due(&self, t: usize) -> bool {
        t == 1 || t.is_multiple_of((self.epochs / 10).max(1))
    }

    /// Print the line for epoch `t`: its step, the objective at the iterate it started
    /// from, and the objective and train accuracy of the averaged model.
    pub fn line(&self, t: usize, step: f64, objective: f64, average: f64, accuracy: f64) {
        println!("{t:>6}  {step:>10.3e}  {objective:>12.6}  {average:>10.6}  {accuracy:>9.4}");
    }

    /// Stop the clock and print the time per epoch.
    pub fn finish(self) {
        let elapsed = self.start.elapsed();
        println!(
            "\ntrained {} epochs in {:.3} s ({:.1} us per epoch: build, backward, update)",
            self.epochs,
            elapsed.as_secs_f64(),
            elapsed.as_secs_f64() * 1e6 / self.epochs as f64
        );
    }
}

/// Print the final model's train accuracy and objective, the latter against the known
/// `optimum`; returns the objective's gap above the optimum in percent.
pub fn print_result(accuracy: f64, objective: f64, optimum: f64) -> f64 {
    let gap = (objective - optimum) / optimum * 100.0;
    println!("\ntrain accuracy: {accuracy:.4}");
    println!("objective: {objective:.6} (optimum {optimum:.6}, gap {gap:+.3}%)");
    gap
}
