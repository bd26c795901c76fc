//! What every op gives for NaN, ±inf and ±0, compared bit for bit with numpy.
//!
//! The values come from `fixtures/special_values.txt`, written by
//! `fixtures/gen_special.py` with real numpy. Two results agree when both are NaN or
//! when their bits are equal (so `-0.0` and `0.0` differ). Each test lists every
//! failing row in one message.
//!
//! numpy has no gradients, so the last section pins down tapegrad's own rules at the
//! same inputs (ties, NaN, infinite local derivatives, zero upstream), and checks the op
//! table's derivative column against the engine at every special input.
//!
//! Every op is looked up in the op table (`tests/common/ops.rs`) by the fixture's name.

mod common;

use common::ops::{Arg, LAYOUTS, OPS, Op, engine_grads, op};
use common::{INF, NAN, SPECIALS, same, same_bits, same_bits_or_none};
use tapegrad::{Tape, Tensor, Var};

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

impl Row {
    fn op(&self) -> &str {
        match self {
            Row::Binary { op, .. } | Row::Unary { op, .. } | Row::Reduce { op, .. } => op,
        }
    }
}

fn number(token: &str, line: &str) -> f64 {
    token
        .parse()
        .unwrap_or_else(|_| panic!("bad number {token:?} in fixture line {line:?}"))
}

fn rows() -> Vec<Row> {
    FIXTURE
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
        .collect()
}

/// The names of the fixture's ops, in order of appearance.
fn fixture_ops() -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for row in rows() {
        if !names.iter().any(|n| n == row.op()) {
            names.push(row.op().to_string());
        }
    }
    names
}

/// Guard against a truncated or hand-edited fixture: every op has its whole grid (8 x 8
/// pairs, 8 values, 5 lists) of `gen_special.py`, the file ends with the reductions it
/// writes last, and every op is in the op table.
#[test]
fn the_fixture_holds_the_whole_grid_of_every_op_and_the_table_has_each_op() {
    let rows = rows();
    let names = fixture_ops();
    assert!(names.len() >= 11, "fixture ops: {names:?}");
    for name in &names {
        let of_op: Vec<&Row> = rows.iter().filter(|r| r.op() == name).collect();
        let want = match of_op[0] {
            Row::Binary { .. } => SPECIALS.len() * SPECIALS.len(),
            Row::Unary { .. } => SPECIALS.len(),
            Row::Reduce { .. } => 5,
        };
        assert_eq!(of_op.len(), want, "rows of {name}");
        let table = op(name);
        let fits = match of_op[0] {
            Row::Binary { .. } => table.binary().is_some(),
            Row::Unary { .. } => table.is_elementwise() && table.arity() == 1,
            Row::Reduce { .. } => !table.is_elementwise(),
        };
        assert!(fits, "{name}: the table's row is of another kind");
    }
    assert!(matches!(rows.last(), Some(Row::Reduce { .. })));
}

/// `op` of the table on `x`.
fn apply<'t>(name: &str, x: &[Var<'t>]) -> Var<'t> {
    op(name).apply(x, &Arg::None)
}

/// Assert no failures, listing every one of them.
fn assert_none_failed(failures: &[String], checked: usize) {
    assert!(checked > 0, "no row was checked");
    assert!(
        failures.is_empty(),
        "{} of {checked} rows differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn mismatch(what: &str, got: f64, want: f64) -> String {
    format!("  {what}: got {got:?}, numpy {want:?}")
}

// ---- values, one rank-0 op per row ---------------------------------------------------

/// Results agree when both are NaN or their bits are equal (the sign of zero counts).
#[test]
fn every_op_on_rank0_vars_matches_numpy_bit_for_bit() {
    let mut failures = Vec::new();
    let rows = rows();
    for row in &rows {
        let tape = Tape::new();
        let (what, got, want) = match row {
            Row::Binary { op, a, b, want } => {
                let x = [tape.var(Tensor::scalar(*a)), tape.var(Tensor::scalar(*b))];
                let y = apply(op, &x);
                (format!("{op}({a:?}, {b:?})"), y.value().item(), *want)
            }
            Row::Unary { op, a, want } => {
                let y = apply(op, &[tape.var(Tensor::scalar(*a))]);
                (format!("{op}({a:?})"), y.value().item(), *want)
            }
            Row::Reduce { op, values, want } => {
                let y = apply(op, &[tape.var(Tensor::from(values.clone()))]);
                (format!("{op}({values:?})"), y.value().item(), *want)
            }
        };
        if !same_bits(got, want) {
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
        let Row::Binary {
            op: name,
            a,
            b,
            want,
        } = row
        else {
            continue;
        };
        let rule = op(&name).binary().unwrap();
        let tape = Tape::new();
        let var_f64 = (rule.var_f64)(tape.var(Tensor::scalar(a)), b);
        let f64_var = (rule.f64_var)(a, tape.var(Tensor::scalar(b)));
        for (form, y) in [("var, f64", var_f64), ("f64, var", f64_var)] {
            let got = y.value().item();
            if !same_bits(got, want) {
                failures.push(mismatch(
                    &format!("{name}({a:?}, {b:?}) as ({form})"),
                    got,
                    want,
                ));
            }
        }
        checked += 1;
    }
    assert_none_failed(&failures, checked);
}

/// The table's reference values are numpy's too (so the tests they feed hold the
/// engine to numpy's rules: NaN through max/min, `b` at a tie, IEEE division).
#[test]
fn the_op_tables_reference_values_match_numpy_bit_for_bit() {
    let mut failures = Vec::new();
    let rows = rows();
    for row in &rows {
        let (what, got, want) = match row {
            Row::Binary {
                op: name,
                a,
                b,
                want,
            } => {
                let x = [Tensor::scalar(*a), Tensor::scalar(*b)];
                let got = op(name).value(&x, &Arg::None).item();
                (format!("{name}({a:?}, {b:?})"), got, *want)
            }
            Row::Unary { op: name, a, want } => {
                let got = op(name).value(&[Tensor::scalar(*a)], &Arg::None).item();
                (format!("{name}({a:?})"), got, *want)
            }
            Row::Reduce {
                op: name,
                values,
                want,
            } => {
                let x = [Tensor::from(values.clone())];
                let got = op(name).value(&x, &Arg::None).item();
                (format!("{name}({values:?})"), got, *want)
            }
        };
        if !same_bits(got, want) {
            failures.push(mismatch(&format!("table: {what}"), got, want));
        }
    }
    assert_none_failed(&failures, rows.len());
}

// ---- values, all rows of an op in one tensor op --------------------------------------

/// The binary rows of each op as one elementwise op on `[n]` tensors, and again on
/// `[n, 1]` and `[n, 2]` (so the broadcasting loop runs, not the same-shape one).
#[test]
fn binary_ops_on_whole_columns_match_numpy_bit_for_bit() {
    let rows = rows();
    let mut failures = Vec::new();
    let mut checked = 0;
    for name in fixture_ops() {
        let (mut a, mut b, mut want) = (Vec::new(), Vec::new(), Vec::new());
        for row in &rows {
            if let Row::Binary {
                op,
                a: x,
                b: y,
                want: w,
            } = row
                && *op == name
            {
                a.push(*x);
                b.push(*y);
                want.push(*w);
            }
        }
        if a.is_empty() {
            continue;
        }
        let n = a.len();
        let tape = Tape::new();
        let flat = apply(
            &name,
            &[
                tape.var(Tensor::from(a.clone())),
                tape.var(Tensor::from(b.clone())),
            ],
        );
        let column = Tensor::new(a.clone(), &[n, 1]).unwrap();
        let doubled: Vec<f64> = b.iter().flat_map(|&y| [y, y]).collect();
        let wide = apply(
            &name,
            &[
                tape.var(column),
                tape.var(Tensor::new(doubled, &[n, 2]).unwrap()),
            ],
        );
        let (flat, wide) = (flat.value(), wide.value());
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
                if !same_bits(g, want[i]) {
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
    for name in fixture_ops() {
        let (mut a, mut want) = (Vec::new(), Vec::new());
        for row in &rows {
            if let Row::Unary { op, a: x, want: w } = row
                && *op == name
            {
                a.push(*x);
                want.push(*w);
            }
        }
        if a.is_empty() {
            continue;
        }
        let tape = Tape::new();
        let y = apply(&name, &[tape.var(Tensor::from(a.clone()))]).value();
        for i in 0..a.len() {
            if !same_bits(y.data()[i], want[i]) {
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

/// Both operands vars (tracked), or only one of them (the other a constant).
const BOTH: [bool; 2] = [true, true];
const A_ONLY: [bool; 2] = [true, false];
const B_ONLY: [bool; 2] = [false, true];

/// `(op, a, b, tracked, d/da, d/db)`, upstream 1, compared like the values (NaN == NaN,
/// sign of zero counts); `None` for an operand that is a constant.
type BinaryGradient = (&'static str, f64, f64, [bool; 2], Option<f64>, Option<f64>);

const BINARY_GRADIENTS: &[BinaryGradient] = &[
    // add/sub pass the upstream through, whatever the operands.
    ("add", NAN, 1.0, BOTH, Some(1.0), Some(1.0)),
    ("add", INF, -INF, BOTH, Some(1.0), Some(1.0)),
    ("sub", INF, INF, BOTH, Some(1.0), Some(-1.0)),
    // mul: d/da = b, d/db = a, IEEE products of the upstream 1.
    ("mul", 0.0, INF, BOTH, Some(INF), Some(0.0)),
    ("mul", -0.0, 2.0, BOTH, Some(2.0), Some(-0.0)),
    ("mul", NAN, 2.0, BOTH, Some(2.0), Some(NAN)),
    // div: d/da = 1/b, d/db = -(a/b)/b.
    ("div", 1.0, 0.0, BOTH, Some(INF), Some(-INF)),
    ("div", 1.0, -0.0, BOTH, Some(-INF), Some(-INF)),
    ("div", 0.0, 0.0, BOTH, Some(INF), Some(NAN)),
    ("div", 1.0, INF, BOTH, Some(0.0), Some(-0.0)),
    // max: to the greater operand, exactly 0 to the other.
    ("max", 1.0, 2.0, BOTH, Some(0.0), Some(1.0)),
    ("max", -INF, 1.0, BOTH, Some(0.0), Some(1.0)),
    ("max", INF, 1.0, A_ONLY, Some(1.0), None),
    ("max", 1.0, INF, A_ONLY, Some(0.0), None),
    // max, a tie or a NaN between two vars: half to each.
    ("max", 1.0, 1.0, BOTH, Some(0.5), Some(0.5)),
    ("max", 0.0, -0.0, BOTH, Some(0.5), Some(0.5)),
    ("max", -0.0, 0.0, BOTH, Some(0.5), Some(0.5)),
    ("max", INF, INF, BOTH, Some(0.5), Some(0.5)),
    ("max", NAN, 1.0, BOTH, Some(0.5), Some(0.5)),
    ("max", 1.0, NAN, BOTH, Some(0.5), Some(0.5)),
    ("max", NAN, NAN, BOTH, Some(0.5), Some(0.5)),
    // max, a tie or a NaN against a constant: all to the constant, nothing to the var.
    ("max", 1.0, 1.0, A_ONLY, Some(0.0), None),
    ("max", 1.0, 1.0, B_ONLY, None, Some(0.0)),
    ("max", 0.0, -0.0, A_ONLY, Some(0.0), None),
    ("max", -0.0, 0.0, B_ONLY, None, Some(0.0)),
    ("max", -INF, -INF, A_ONLY, Some(0.0), None),
    ("max", NAN, 1.0, A_ONLY, Some(0.0), None),
    ("max", NAN, 1.0, B_ONLY, None, Some(0.0)),
    ("max", 1.0, NAN, A_ONLY, Some(0.0), None),
    ("max", 1.0, NAN, B_ONLY, None, Some(0.0)),
    // min mirrors max.
    ("min", 2.0, 1.0, BOTH, Some(0.0), Some(1.0)),
    ("min", INF, 1.0, BOTH, Some(0.0), Some(1.0)),
    ("min", -INF, 1.0, B_ONLY, None, Some(0.0)),
    ("min", 1.0, 1.0, BOTH, Some(0.5), Some(0.5)),
    ("min", 0.0, -0.0, BOTH, Some(0.5), Some(0.5)),
    ("min", NAN, 1.0, BOTH, Some(0.5), Some(0.5)),
    ("min", 1.0, NAN, BOTH, Some(0.5), Some(0.5)),
    ("min", 1.0, 1.0, A_ONLY, Some(0.0), None),
    ("min", -0.0, 0.0, B_ONLY, None, Some(0.0)),
    ("min", NAN, 1.0, A_ONLY, Some(0.0), None),
    ("min", 1.0, NAN, B_ONLY, None, Some(0.0)),
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
    for &(name, a, b, tracked, want_a, want_b) in BINARY_GRADIENTS {
        for layout in LAYOUTS {
            let [ga, gb] = engine_grads(op(name), &[a, b], tracked, layout, 1.0);
            if !same_bits_or_none(ga, want_a) || !same_bits_or_none(gb, want_b) {
                failures.push(format!(
                    "  d {name}({a:?}, {b:?}) tracked {tracked:?} in {layout:?}: got \
                     ({ga:?}, {gb:?}), want ({want_a:?}, {want_b:?})"
                ));
            }
        }
    }
    assert_none_failed(&failures, BINARY_GRADIENTS.len());
}

#[test]
fn unary_op_gradients_at_special_inputs_follow_the_documented_rules() {
    let mut failures = Vec::new();
    for &(name, a, want) in UNARY_GRADIENTS {
        for layout in LAYOUTS {
            let [g, _] = engine_grads(op(name), &[a], A_ONLY, layout, 1.0);
            if !same_bits_or_none(g, Some(want)) {
                failures.push(format!(
                    "  d {name}({a:?}) in {layout:?}: got {g:?}, want {want:?}"
                ));
            }
        }
    }
    assert_none_failed(&failures, UNARY_GRADIENTS.len());
}

/// The engine's gradients of every elementwise op of the table at every special input
/// (with every choice of tracked operands), in both layouts, for the upstream `u`:
/// `check(op, x, tracked, got)` says what was wanted where they are wrong; every such
/// case is listed.
fn assert_at_every_special_input(
    u: f64,
    check: impl Fn(&Op, &[f64], [bool; 2], [Option<f64>; 2]) -> Result<(), String>,
) {
    let mut failures = Vec::new();
    let mut checked = 0;
    for op in OPS.iter().filter(|op| op.is_elementwise()) {
        for (x, tracked) in op.special_inputs() {
            for layout in LAYOUTS {
                let got = engine_grads(op, &x, tracked, layout, u);
                if let Err(want) = check(op, &x, tracked, got) {
                    failures.push(format!(
                        "  d {}{x:?} tracked {tracked:?} in {layout:?}, upstream {u}: got \
                         {got:?}, want {want}",
                        op.name
                    ));
                }
                checked += 1;
            }
        }
    }
    assert_none_failed(&failures, checked);
}

/// The table's derivative column (the tie rule of max/min included) is what the engine
/// does at every special input, in both backward paths: NaN where it is NaN, the same
/// number elsewhere. The sign of a zero is left to the list above: the table writes the
/// maths (`-(a / b) / b`), and where that is `+0.0` the engine's `div` may give `-0.0`.
#[test]
fn every_elementwise_op_gradient_at_special_inputs_is_the_op_tables_derivative() {
    assert_at_every_special_input(1.0, |op, x, tracked, got| {
        let local = op.local_grad(x, tracked);
        let want = [0, 1].map(|k| (k < x.len() && tracked[k]).then_some(local[k]));
        let agree = got.iter().zip(&want).all(|(g, w)| match (g, w) {
            (Some(g), Some(w)) => same(*g, *w),
            (g, w) => g == w,
        });
        if agree {
            Ok(())
        } else {
            Err(format!("{want:?} (the table)"))
        }
    });
}

/// A zero upstream gives exactly 0 (not `0 * inf = NaN`), even where the local
/// derivative is inf or NaN: every elementwise op at every special input, in both
/// backward paths.
#[test]
fn zero_upstream_gives_zero_gradient_where_the_local_derivative_is_inf_or_nan() {
    assert_at_every_special_input(0.0, |_, _, _, got| {
        match got.iter().flatten().all(|&g| g == 0.0) {
            true => Ok(()),
            false => Err("0".to_string()),
        }
    });
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
