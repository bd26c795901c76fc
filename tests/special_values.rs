//! What every op gives for NaN, ±inf and ±0, compared bit for bit with numpy.
//!
//! The values come from `fixtures/special_values.txt`, written by
//! `fixtures/gen_special.py` with real numpy. Two results agree when both are NaN or
//! when their bits are equal (so `-0.0` and `0.0` differ). Each test lists every
//! failing row in one message.
//!
//! numpy has no gradients, so the last section pins down tapegrad's own rules at the
//! same inputs (ties, NaN, infinite local derivatives, zero upstream).

use tapegrad::{Tape, Tensor, Var, max, min};

const FIXTURE: &str = include_str!("fixtures/special_values.txt");

#[derive(Debug)]
enum Row {
    Binary {
        op: String,
        a: f64,
        b: f64,
        want: f64,
    },
    Unary {
        op: String,
        a: f64,
        want: f64,
    },
    Reduce {
        op: String,
        values: Vec<f64>,
        want: f64,
    },
}

fn number(token: &str, line: &str) -> f64 {
    token
        .parse()
        .unwrap_or_else(|_| panic!("bad number {token:?} in fixture line {line:?}"))
}

fn rows() -> Vec<Row> {
    let rows: Vec<Row> = FIXTURE
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| {
            let t: Vec<&str> = line.split_whitespace().collect();
            let op = t.get(1).expect("an op name").to_string();
            match (t[0], t.len()) {
                ("binary", 5) => Row::Binary {
                    op,
                    a: number(t[2], line),
                    b: number(t[3], line),
                    want: number(t[4], line),
                },
                ("unary", 4) => Row::Unary {
                    op,
                    a: number(t[2], line),
                    want: number(t[3], line),
                },
                ("reduce", n) if n >= 3 => Row::Reduce {
                    op,
                    want: number(t[2], line),
                    values: t[3..].iter().map(|v| number(v, line)).collect(),
                },
                _ => panic!("malformed fixture line {line:?}"),
            }
        })
        .collect();
    // Guard against a truncated fixture: every op must have rows.
    for op in [
        "add", "sub", "mul", "div", "max", "min", "neg", "exp", "ln", "sum", "mean",
    ] {
        let has = |r: &Row| match r {
            Row::Binary { op: o, .. } | Row::Unary { op: o, .. } | Row::Reduce { op: o, .. } => {
                o == op
            }
        };
        assert!(rows.iter().any(has), "fixture has no rows for {op}");
    }
    rows
}

/// numpy's equality for this table: both NaN, or the same bits (sign of zero included).
fn same(got: f64, want: f64) -> bool {
    (got.is_nan() && want.is_nan()) || got.to_bits() == want.to_bits()
}

fn binary<'t>(op: &str, a: Var<'t>, b: Var<'t>) -> Var<'t> {
    match op {
        "add" => a + b,
        "sub" => a - b,
        "mul" => a * b,
        "div" => a / b,
        "max" => max(a, b),
        "min" => min(a, b),
        _ => panic!("unknown binary op {op}"),
    }
}

fn binary_with_f64_b<'t>(op: &str, a: Var<'t>, b: f64) -> Var<'t> {
    match op {
        "add" => a + b,
        "sub" => a - b,
        "mul" => a * b,
        "div" => a / b,
        "max" => max(a, b),
        "min" => min(a, b),
        _ => panic!("unknown binary op {op}"),
    }
}

fn binary_with_f64_a<'t>(op: &str, a: f64, b: Var<'t>) -> Var<'t> {
    match op {
        "add" => a + b,
        "sub" => a - b,
        "mul" => a * b,
        "div" => a / b,
        "max" => max(a, b),
        "min" => min(a, b),
        _ => panic!("unknown binary op {op}"),
    }
}

fn unary<'t>(op: &str, a: Var<'t>) -> Var<'t> {
    match op {
        "neg" => -a,
        "exp" => a.exp(),
        "ln" => a.ln(),
        _ => panic!("unknown unary op {op}"),
    }
}

fn reduce<'t>(op: &str, x: Var<'t>) -> Var<'t> {
    match op {
        "sum" => x.sum(),
        "mean" => x.mean(),
        _ => panic!("unknown reduction {op}"),
    }
}

/// Assert no failures, listing every one of them.
fn assert_none_failed(failures: &[String], checked: usize) {
    assert!(checked > 0, "no row was checked");
    assert!(
        failures.is_empty(),
        "{} of {checked} rows differ from numpy:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn mismatch(what: &str, got: f64, want: f64) -> String {
    format!("  {what}: got {got:?}, numpy {want:?}")
}

// ---- values, one rank-0 op per row ---------------------------------------------------

#[test]
fn every_op_on_rank0_vars_matches_numpy_bit_for_bit() {
    let mut failures = Vec::new();
    let rows = rows();
    for row in &rows {
        let tape = Tape::new();
        let (what, got, want) = match row {
            Row::Binary { op, a, b, want } => {
                let y = binary(
                    op,
                    tape.var(Tensor::scalar(*a)),
                    tape.var(Tensor::scalar(*b)),
                );
                (format!("{op}({a:?}, {b:?})"), y.value().item(), *want)
            }
            Row::Unary { op, a, want } => {
                let y = unary(op, tape.var(Tensor::scalar(*a)));
                (format!("{op}({a:?})"), y.value().item(), *want)
            }
            Row::Reduce { op, values, want } => {
                let y = reduce(op, tape.var(Tensor::from(values.clone())));
                (format!("{op}({values:?})"), y.value().item(), *want)
            }
        };
        if !same(got, want) {
            failures.push(mismatch(&what, got, want));
        }
    }
    assert_none_failed(&failures, rows.len());
}

#[test]
fn binary_ops_with_an_f64_operand_match_numpy_bit_for_bit() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for row in rows() {
        let Row::Binary { op, a, b, want } = row else {
            continue;
        };
        let tape = Tape::new();
        let var_f64 = binary_with_f64_b(&op, tape.var(Tensor::scalar(a)), b);
        let f64_var = binary_with_f64_a(&op, a, tape.var(Tensor::scalar(b)));
        for (form, y) in [("var, f64", var_f64), ("f64, var", f64_var)] {
            let got = y.value().item();
            if !same(got, want) {
                failures.push(mismatch(
                    &format!("{op}({a:?}, {b:?}) as ({form})"),
                    got,
                    want,
                ));
            }
        }
        checked += 1;
    }
    assert_none_failed(&failures, checked);
}

// ---- values, all rows of an op in one tensor op --------------------------------------

/// The binary rows of each op as one elementwise op on `[n]` tensors, and again on
/// `[n, 1]` and `[n, 2]` (so the broadcasting loop runs, not the same-shape one).
#[test]
fn binary_ops_on_whole_columns_match_numpy_bit_for_bit() {
    let rows = rows();
    let mut failures = Vec::new();
    let mut checked = 0;
    for name in ["add", "sub", "mul", "div", "max", "min"] {
        let (mut a, mut b, mut want) = (Vec::new(), Vec::new(), Vec::new());
        for row in &rows {
            if let Row::Binary {
                op,
                a: x,
                b: y,
                want: w,
            } = row
                && op == name
            {
                a.push(*x);
                b.push(*y);
                want.push(*w);
            }
        }
        let n = a.len();
        let tape = Tape::new();
        let flat = binary(
            name,
            tape.var(Tensor::from(a.clone())),
            tape.var(Tensor::from(b.clone())),
        );
        let column = Tensor::new(a.clone(), &[n, 1]).unwrap();
        let doubled: Vec<f64> = b.iter().flat_map(|&y| [y, y]).collect();
        let wide = binary(
            name,
            tape.var(column),
            tape.var(Tensor::new(doubled, &[n, 2]).unwrap()),
        );
        let (flat, wide) = (flat.value().clone(), wide.value().clone());
        assert_eq!(flat.shape(), &[n]);
        assert_eq!(wide.shape(), &[n, 2]);
        for i in 0..n {
            let what = format!("{name}({:?}, {:?})", a[i], b[i]);
            let got = [
                ("[n]", flat.data()[i]),
                ("[n,1] with [n,2], column 0", wide.data()[2 * i]),
                ("[n,1] with [n,2], column 1", wide.data()[2 * i + 1]),
            ];
            for (layout, g) in got {
                if !same(g, want[i]) {
                    failures.push(mismatch(&format!("{what} as {layout}"), g, want[i]));
                }
            }
            checked += 1;
        }
    }
    assert_none_failed(&failures, checked);
}

#[test]
fn unary_ops_on_whole_columns_match_numpy_bit_for_bit() {
    let rows = rows();
    let mut failures = Vec::new();
    let mut checked = 0;
    for name in ["neg", "exp", "ln"] {
        let (mut a, mut want) = (Vec::new(), Vec::new());
        for row in &rows {
            if let Row::Unary { op, a: x, want: w } = row
                && op == name
            {
                a.push(*x);
                want.push(*w);
            }
        }
        let tape = Tape::new();
        let y = unary(name, tape.var(Tensor::from(a.clone())));
        let y = y.value().clone();
        for i in 0..a.len() {
            if !same(y.data()[i], want[i]) {
                failures.push(mismatch(
                    &format!("{name}({:?}) in a column", a[i]),
                    y.data()[i],
                    want[i],
                ));
            }
            checked += 1;
        }
    }
    assert_none_failed(&failures, checked);
}

// ---- gradients at special inputs, under tapegrad's rules -----------------------------

/// Gradients of `op(a, b)` with respect to `a` and `b` (upstream 1).
fn binary_grads(op: &str, a: f64, b: f64) -> (f64, f64) {
    let tape = Tape::new();
    let (x, y) = (tape.var(Tensor::scalar(a)), tape.var(Tensor::scalar(b)));
    let grads = binary(op, x, y).backward();
    (grads.wrt(x).item(), grads.wrt(y).item())
}

fn unary_grad(op: &str, a: f64) -> f64 {
    let tape = Tape::new();
    let x = tape.var(Tensor::scalar(a));
    unary(op, x).backward().wrt(x).item()
}

const NAN: f64 = f64::NAN;
const INF: f64 = f64::INFINITY;

/// `(op, a, b, d/da, d/db)`, compared like the values (NaN == NaN, sign of zero counts).
const BINARY_GRADIENTS: &[(&str, f64, f64, f64, f64)] = &[
    // add/sub pass the upstream through, whatever the operands.
    ("add", NAN, 1.0, 1.0, 1.0),
    ("add", INF, -INF, 1.0, 1.0),
    ("sub", INF, INF, 1.0, -1.0),
    // mul: d/da = b, d/db = a, IEEE products of the upstream 1.
    ("mul", 0.0, INF, INF, 0.0),
    ("mul", -0.0, 2.0, 2.0, -0.0),
    ("mul", NAN, 2.0, 2.0, NAN),
    // div: d/da = 1/b, d/db = -(a/b)/b.
    ("div", 1.0, 0.0, INF, -INF),
    ("div", 1.0, -0.0, -INF, -INF),
    ("div", 0.0, 0.0, INF, NAN),
    ("div", 1.0, INF, 0.0, -0.0),
    // max: to b where b > a, to a everywhere else: ties (signed zeros too) and NaN.
    ("max", 1.0, 1.0, 1.0, 0.0),
    ("max", 0.0, -0.0, 1.0, 0.0),
    ("max", -0.0, 0.0, 1.0, 0.0),
    ("max", INF, INF, 1.0, 0.0),
    ("max", NAN, 1.0, 1.0, 0.0),
    ("max", 1.0, NAN, 1.0, 0.0),
    ("max", 1.0, 2.0, 0.0, 1.0),
    ("max", -INF, 1.0, 0.0, 1.0),
    // min mirrors max.
    ("min", 1.0, 1.0, 1.0, 0.0),
    ("min", 0.0, -0.0, 1.0, 0.0),
    ("min", NAN, 1.0, 1.0, 0.0),
    ("min", 1.0, NAN, 1.0, 0.0),
    ("min", 2.0, 1.0, 0.0, 1.0),
    ("min", INF, 1.0, 0.0, 1.0),
];

/// `(op, a, d/da)`.
const UNARY_GRADIENTS: &[(&str, f64, f64)] = &[
    ("neg", NAN, -1.0),
    ("neg", INF, -1.0),
    ("exp", INF, INF),
    ("exp", -INF, 0.0),
    ("exp", NAN, NAN),
    ("exp", 0.0, 1.0),
    ("ln", 0.0, INF),
    ("ln", -0.0, -INF),
    ("ln", INF, 0.0),
    ("ln", -INF, -0.0),
    ("ln", -1.0, -1.0),
    ("ln", NAN, NAN),
];

#[test]
fn binary_op_gradients_at_special_inputs_follow_the_documented_rules() {
    let mut failures = Vec::new();
    for &(op, a, b, want_a, want_b) in BINARY_GRADIENTS {
        let (ga, gb) = binary_grads(op, a, b);
        if !same(ga, want_a) || !same(gb, want_b) {
            failures.push(format!(
                "  d {op}({a:?}, {b:?}): got ({ga:?}, {gb:?}), want ({want_a:?}, {want_b:?})"
            ));
        }
    }
    assert_none_failed(&failures, BINARY_GRADIENTS.len());
}

#[test]
fn unary_op_gradients_at_special_inputs_follow_the_documented_rules() {
    let mut failures = Vec::new();
    for &(op, a, want) in UNARY_GRADIENTS {
        let g = unary_grad(op, a);
        if !same(g, want) {
            failures.push(format!("  d {op}({a:?}): got {g:?}, want {want:?}"));
        }
    }
    assert_none_failed(&failures, UNARY_GRADIENTS.len());
}

/// A zero upstream gives exactly 0 (not `0 * inf = NaN`), even where the local
/// derivative is inf or NaN: each op below, weighted by 0, at inputs where its local
/// derivative is not finite.
#[test]
fn zero_upstream_gives_zero_gradient_where_the_local_derivative_is_inf_or_nan() {
    let mut failures = Vec::new();
    let cases: &[(&str, f64, f64)] = &[
        ("mul", INF, NAN),
        ("mul", NAN, INF),
        ("div", 1.0, 0.0),
        ("div", 0.0, 0.0),
        ("div", NAN, -0.0),
        ("max", NAN, INF),
        ("min", -INF, NAN),
        ("add", NAN, INF),
        ("sub", INF, NAN),
    ];
    for &(op, a, b) in cases {
        let tape = Tape::new();
        let (x, y) = (tape.var(Tensor::scalar(a)), tape.var(Tensor::scalar(b)));
        let grads = (binary(op, x, y) * 0.0).backward();
        let (ga, gb) = (grads.wrt(x).item(), grads.wrt(y).item());
        if ga != 0.0 || gb != 0.0 {
            failures.push(format!("  d {op}({a:?}, {b:?}) * 0: got ({ga:?}, {gb:?})"));
        }
    }
    for &(op, a) in &[
        ("exp", INF),
        ("exp", NAN),
        ("ln", 0.0),
        ("ln", -0.0),
        ("ln", NAN),
    ] {
        let tape = Tape::new();
        let x = tape.var(Tensor::scalar(a));
        let g = (unary(op, x) * 0.0).backward().wrt(x).item();
        if g != 0.0 {
            failures.push(format!("  d {op}({a:?}) * 0: got {g:?}"));
        }
    }
    assert_none_failed(&failures, cases.len() + 5);
}

#[test]
fn sum_and_mean_gradients_ignore_special_values_among_the_elements() {
    let tape = Tape::new();
    let x = tape.var(Tensor::from(vec![NAN, INF, -INF, -0.0]));
    let grads = x.sum().backward();
    assert_eq!(grads.wrt(x).data(), &[1.0; 4]);
    let grads = x.mean().backward();
    assert_eq!(grads.wrt(x).data(), &[0.25; 4]);
}
