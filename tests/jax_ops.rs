//! The new ops' values and gradients against JAX (float64), one case per op and a few
//! composites (softmax cross-entropy, logsumexp at 1000, max_axis at ties, select with
//! broadcasting, ...).
//!
//! The fixture comes from `tests/fixtures/gen_jax_ops.py`: for each case the inputs, the
//! op's arguments, a random weight `w` of the output's shape, the value `f(x)` and the
//! gradient of `sum(f(x) * w)` with respect to every input. Elements agree within 1e-12
//! relative to the element, or to the largest element of their tensor where they are
//! smaller than it (a difference of nearly equal terms, as in the softmax gradient,
//! is accurate to the terms' size, not its own); the selection and shape ops, whose
//! results are copies, sums of copies or of shares, agree exactly ([`EXACT`]).
//!
//! At the kinks tapegrad and JAX differ by design, so the fixture keeps away from them:
//! JAX's `abs` has slope 1 at 0 and its relu (`jnp.maximum(x, 0)`) slope 0.5, where
//! tapegrad's are 0 (`np.sign`, `x.max(0.0)`; see `semantics.rs`). At ties in a max/min
//! reduction both split the gradient evenly, and the `ties` cases check it.

use std::collections::BTreeMap;
use tapegrad::{Tape, Tensor, Var, select};

const FIXTURE: &str = include_str!("fixtures/jax_ops.txt");

/// Cases whose values and gradients are copies of inputs or weights, sums of copies, or
/// even shares of a weight: equal to JAX's exactly (as f64s, so `-0.0 == 0.0`).
const EXACT: &[&str] = &[
    "abs",
    "relu",
    "max_axis_0",
    "min_axis_2",
    "max_axis_ties_1",
    "max_axis_ties_0",
    "min_axis_ties_1",
    "transpose",
    "broadcast_to",
    "expand_dims",
    "index_select_repeats",
    "index_select_rows",
    "select_broadcast",
    "select_f64",
    "powf_0.0",
];

/// Relative tolerance everywhere else.
const TOL: f64 = 1e-12;

#[derive(Debug, Default)]
struct Case {
    name: String,
    op: String,
    inputs: Vec<(String, Tensor)>,
    cond: Option<Tensor>,
    axis: Option<usize>,
    p: Option<f64>,
    indices: Vec<usize>,
    shape: Vec<usize>,
    labels: Vec<usize>,
    b: Option<f64>,
    weight: Option<Tensor>,
    value: Option<Tensor>,
    grads: BTreeMap<String, Vec<f64>>,
}

impl Case {
    fn axis(&self) -> usize {
        self.axis
            .unwrap_or_else(|| panic!("{}: no axis", self.name))
    }
}

fn numbers(text: &str) -> Vec<f64> {
    text.split_whitespace()
        .map(|t| t.parse().expect("a number"))
        .collect()
}

fn integers(text: &str) -> Vec<usize> {
    text.split_whitespace()
        .map(|t| t.parse().expect("an integer"))
        .collect()
}

/// `NAME DIMS... : VALUES` (the name optional) as the name and a tensor.
fn named_tensor(text: &str, named: bool) -> (String, Tensor) {
    let (spec, values) = text.split_once(':').expect("DIMS : VALUES");
    let mut spec = spec.split_whitespace();
    let name = if named {
        spec.next().expect("a name").to_string()
    } else {
        String::new()
    };
    let shape: Vec<usize> = spec.map(|d| d.parse().expect("a dim")).collect();
    let tensor = Tensor::new(numbers(values), &shape).expect("fixture shape");
    (name, tensor)
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut current: Option<Case> = None;
    for line in FIXTURE
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (head, rest) = line.split_once(' ').unwrap_or((line, ""));
        if head == "case" {
            current = Some(Case {
                name: rest.to_string(),
                ..Case::default()
            });
            continue;
        }
        let case = current.as_mut().expect("a line inside a case");
        match head {
            "op" => case.op = rest.to_string(),
            "input" => case.inputs.push(named_tensor(rest, true)),
            "cond" => case.cond = Some(named_tensor(rest, false).1),
            "axis" => case.axis = Some(rest.parse().expect("an axis")),
            "p" => case.p = Some(rest.parse().expect("a number")),
            "b" => case.b = Some(rest.parse().expect("a number")),
            "indices" => case.indices = integers(rest),
            "shape" => case.shape = integers(rest),
            "labels" => case.labels = integers(rest),
            "weight" => case.weight = Some(named_tensor(rest, false).1),
            "value" => case.value = Some(named_tensor(rest, false).1),
            "grad" => {
                let (name, values) = rest.split_once(':').expect("grad NAME : VALUES");
                case.grads.insert(name.trim().to_string(), numbers(values));
            }
            "end" => cases.push(current.take().unwrap()),
            other => panic!("unexpected line {other:?}"),
        }
    }
    assert!(current.is_none(), "the fixture ends inside a case");
    cases
}

/// The case's function of its inputs on a tape, from tapegrad's ops.
fn build<'t>(case: &Case, tape: &'t Tape, v: &[Var<'t>]) -> Var<'t> {
    let x = v[0];
    match case.op.as_str() {
        "abs" => x.abs(),
        "sqrt" => x.sqrt(),
        "tanh" => x.tanh(),
        "sigmoid" => x.sigmoid(),
        "relu" => x.relu(),
        "log1p" => x.log1p(),
        "softplus" => x.softplus(),
        "sin" => x.sin(),
        "cos" => x.cos(),
        "powf" => x.powf(case.p.expect("p")),
        "max_axis" => x.max_axis(case.axis()),
        "min_axis" => x.min_axis(case.axis()),
        "mean_axis" => x.mean_axis(case.axis()),
        "logsumexp_axis" => x.logsumexp_axis(case.axis()),
        "softmax" => x.softmax(case.axis()),
        "log_softmax" => x.log_softmax(case.axis()),
        "transpose" => x.transpose(),
        "broadcast_to" => x.broadcast_to(&case.shape),
        "expand_dims" => x.expand_dims(case.axis()),
        "index_select" => x.index_select(case.axis(), &case.indices),
        "select" => select(case.cond.as_ref().expect("cond"), v[0], v[1]),
        "select_f64" => select(case.cond.as_ref().expect("cond"), x, case.b.expect("b")),
        "softmax_cross_entropy" => {
            // The log-probability of each row's label, picked from the flattened rows.
            let shape = x.shape();
            let (n, c) = (shape[0], shape[1]);
            let picks: Vec<usize> = case
                .labels
                .iter()
                .enumerate()
                .map(|(i, &l)| i * c + l)
                .collect();
            -x.log_softmax(1)
                .reshape(&[n * c])
                .index_select(0, &picks)
                .mean()
        }
        "softmax_cross_entropy_one_hot" => {
            let shape = x.shape();
            let y = tape.constant(Tensor::one_hot(&case.labels, shape[1]));
            -(x.log_softmax(1) * y).sum() / shape[0] as f64
        }
        other => panic!("no tapegrad version of {other}"),
    }
}

/// Where `got` differs from `want` (same shape assumed): exactly, or beyond [`TOL`]
/// relative to the element or to the tensor's largest.
fn differences(got: &[f64], want: &[f64], exact: bool) -> Vec<String> {
    let largest = want.iter().fold(0.0f64, |m, w| m.max(w.abs()));
    got.iter()
        .zip(want)
        .enumerate()
        .filter(|&(_, (&g, &w))| {
            let ok = if exact {
                g == w || g.is_nan() && w.is_nan()
            } else {
                (g - w).abs() <= TOL * w.abs().max(largest) || g == w
            };
            !ok
        })
        .map(|(i, (g, w))| format!("element {i}: got {g:?}, jax {w:?}"))
        .collect()
}

#[test]
fn the_fixture_holds_a_case_of_every_new_op_and_the_composites() {
    let ops: Vec<String> = cases().into_iter().map(|c| c.op).collect();
    for op in [
        "abs",
        "sqrt",
        "powf",
        "tanh",
        "sigmoid",
        "relu",
        "log1p",
        "softplus",
        "sin",
        "cos",
        "max_axis",
        "min_axis",
        "mean_axis",
        "logsumexp_axis",
        "softmax",
        "log_softmax",
        "transpose",
        "broadcast_to",
        "expand_dims",
        "index_select",
        "select",
        "select_f64",
        "softmax_cross_entropy",
        "softmax_cross_entropy_one_hot",
    ] {
        assert!(ops.iter().any(|o| o == op), "no case of {op}");
    }
    let names: Vec<String> = cases().into_iter().map(|c| c.name).collect();
    for name in EXACT {
        assert!(
            names.iter().any(|n| n == name),
            "EXACT names no case {name}"
        );
    }
    assert_eq!(names.len(), 39, "{names:?}");
}

#[test]
fn values_and_gradients_of_the_new_ops_match_jax() {
    let mut failures = Vec::new();
    for case in cases() {
        let exact = EXACT.contains(&case.name.as_str());
        let tape = Tape::new();
        let vars: Vec<Var> = case
            .inputs
            .iter()
            .map(|(_, t)| tape.var(t.clone()))
            .collect();
        let out = build(&case, &tape, &vars);
        let (value, weight) = (case.value.as_ref().unwrap(), case.weight.clone().unwrap());
        let got = out.value();
        if got.shape() != value.shape() {
            failures.push(format!(
                "{}: value shape {:?}, jax {:?}",
                case.name,
                got.shape(),
                value.shape()
            ));
            continue;
        }
        for d in differences(got.data(), value.data(), exact) {
            failures.push(format!("{}: value {d}", case.name));
        }
        let grads = (out * tape.constant(weight)).sum().backward();
        for ((input, _), &var) in case.inputs.iter().zip(&vars) {
            let want = &case.grads[input];
            let got = grads.wrt(var).data();
            assert_eq!(got.len(), want.len(), "{}: d/d{input} length", case.name);
            for d in differences(got, want, exact) {
                failures.push(format!("{}: d/d{input} {d}", case.name));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The tolerance means something: a gradient 1e-11 off fails it, a value off in the
/// last bit fails an exact case.
#[test]
fn the_comparison_rejects_an_error_of_1e_11_and_an_inexact_copy() {
    assert!(differences(&[1.0 + 1e-11], &[1.0], false).len() == 1);
    assert!(differences(&[1.0 + 1e-13], &[1.0], false).is_empty());
    assert!(differences(&[f64::from_bits(1.0f64.to_bits() + 1)], &[1.0], true).len() == 1);
    // Small elements are held to the tensor's largest, not to themselves.
    assert!(differences(&[1e-20, 2.0], &[0.0, 2.0], false).is_empty());
    assert!(differences(&[1e-11, 2.0], &[0.0, 2.0], false).len() == 1);
}
