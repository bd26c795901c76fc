//! Value and gradients of functions built from several ops, against JAX (float64).
//!
//! The fixture comes from `tests/fixtures/gen_jax.py` (jax.value_and_grad); inputs are
//! continuous random values, so no max/min tie occurs and tapegrad's tie rule does not
//! come into play (at a tie it agrees with JAX's half and half only between two tracked
//! operands; against a constant it sends the gradient to the constant).

use std::collections::BTreeMap;
use tapegrad::check::{Tolerance, compare};
use tapegrad::{Tape, Tensor, Var, max, min};

const FIXTURE: &str = include_str!("fixtures/jax_grads.txt");

struct Case {
    name: String,
    inputs: Vec<(String, Tensor)>,
    value: f64,
    grads: BTreeMap<String, Vec<f64>>,
}

fn numbers(text: &str) -> Vec<f64> {
    text.split_whitespace()
        .map(|t| t.parse().expect("a number"))
        .collect()
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut current: Option<Case> = None;
    for line in FIXTURE
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (head, rest) = line.split_once(' ').unwrap_or((line, ""));
        let case = current.as_mut();
        match head {
            "case" => {
                current = Some(Case {
                    name: rest.to_string(),
                    inputs: Vec::new(),
                    value: f64::NAN,
                    grads: BTreeMap::new(),
                })
            }
            "input" => {
                let (spec, values) = rest.split_once(':').expect("input NAME DIMS : VALUES");
                let mut spec = spec.split_whitespace();
                let name = spec.next().expect("name").to_string();
                let shape: Vec<usize> = spec.map(|d| d.parse().expect("a dim")).collect();
                let tensor = Tensor::new(numbers(values), &shape).expect("fixture shape");
                case.expect("inside a case").inputs.push((name, tensor));
            }
            "value" => case.expect("inside a case").value = rest.trim().parse().unwrap(),
            "grad" => {
                let (name, values) = rest.split_once(':').expect("grad NAME : VALUES");
                let grads = &mut case.expect("inside a case").grads;
                grads.insert(name.trim().to_string(), numbers(values));
            }
            "end" => cases.push(current.take().expect("a case to end")),
            other => panic!("unexpected line {other:?}"),
        }
    }
    cases
}

/// The same functions as in gen_jax.py, from tapegrad's ops.
fn build<'t>(name: &str, v: &[Var<'t>]) -> Var<'t> {
    match name {
        "exp_mul_div_broadcast" => {
            let (x, y, w) = (v[0], v[1], v[2]);
            ((x * 0.3).exp() * y - w / (x + 3.0)).sum()
        }
        "max_min_broadcast_mean" => {
            let (x, y, w) = (v[0], v[1], v[2]);
            (max(x, y) * min(w, x)).mean()
        }
        "ln_of_square_plus_one" => (v[0] * v[0] + 1.0).ln().sum(),
        "matmul_reshape_weights" => {
            let (x, y, w) = (v[0], v[1], v[2]);
            (x.matmul(y.reshape(&[4, 1])) * w).sum()
        }
        "sum_axis_sigmoid" => {
            let (x, y) = (v[0], v[1]);
            ((x * y).sum_axis(0) / (1.0 + (-y).exp())).sum()
        }
        "hinge_real_targets" => tapegrad::losses::hinge(v[0], v[1]),
        "scalar_chain" => {
            let (a, b, c) = (v[0], v[1], v[2]);
            max((a * b + c) / (a - 4.0), -(b * c)) * a.exp()
        }
        "multiclass_svm_margins" => {
            let (s, m) = (v[0], v[1]);
            let correct = (s * m).sum_axis(1).reshape(&[5, 1]);
            (max(0.0, s - correct + 1.0) * (1.0 - m)).sum_axis(1).mean()
        }
        other => panic!("no tapegrad version of {other}"),
    }
}

#[test]
fn the_fixture_holds_every_case() {
    let names: Vec<String> = cases().into_iter().map(|c| c.name).collect();
    assert_eq!(names.len(), 8, "{names:?}");
}

#[test]
fn values_and_gradients_match_jax() {
    let mut failures = Vec::new();
    for case in cases() {
        let tape = Tape::new();
        let vars: Vec<Var> = case
            .inputs
            .iter()
            .map(|(_, t)| tape.var(t.clone()))
            .collect();
        let y = build(&case.name, &vars);
        let value = y.value().item();
        let tol = Tolerance::default();
        if !tol.accepts(value, case.value) {
            failures.push(format!(
                "{}: value {value} vs jax {}",
                case.name, case.value
            ));
        }
        let grads = y.backward();
        for ((input, t), &var) in case.inputs.iter().zip(&vars) {
            let want = Tensor::new(case.grads[input].clone(), t.shape()).unwrap();
            let report = compare(grads.wrt(var), &want, tol);
            if !report.passed() {
                failures.push(format!("{} d/d{input}: {report}", case.name));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
