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

use common::ops::{Arg, Form, LAYOUTS, OPS, Op, Rule, Special, engine_grads, op};
use common::{INF, NAN, SPECIALS, UNARY_SPECIALS, same_bits, same_bits_or_none};
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
    /// An op of one input and a number: `powf(p)` at `a`.
    Param {
        op: String,
        p: f64,
        a: f64,
        want: f64,
    },
    Reduce {
        op: String,
        values: Vec<f64>,
        want: f64,
    },
    /// A reduction along axis 0 of the 1-d array `values`.
    Axis {
        op: String,
        values: Vec<f64>,
        want: f64,
    },
}

impl Row {
    fn op(&self) -> &str {
        match self {
            Row::Binary { op, .. }
            | Row::Unary { op, .. }
            | Row::Param { op, .. }
            | Row::Reduce { op, .. }
            | Row::Axis { op, .. } => op,
        }
    }

    /// What the op takes besides its inputs.
    fn arg(&self) -> Arg {
        match self {
            Row::Param { p, .. } => Arg::Param(*p),
            Row::Axis { .. } => Arg::Axis(0),
            _ => Arg::None,
        }
    }

    /// The inputs: rank-0 tensors for an elementwise op, a 1-d one for a reduction.
    fn inputs(&self) -> Vec<Tensor> {
        match self {
            Row::Binary { a, b, .. } => vec![Tensor::scalar(*a), Tensor::scalar(*b)],
            Row::Unary { a, .. } | Row::Param { a, .. } => vec![Tensor::scalar(*a)],
            Row::Reduce { values, .. } | Row::Axis { values, .. } => {
                vec![Tensor::from(values.clone())]
            }
        }
    }

    fn want(&self) -> f64 {
        match self {
            Row::Binary { want, .. }
            | Row::Unary { want, .. }
            | Row::Param { want, .. }
            | Row::Reduce { want, .. }
            | Row::Axis { want, .. } => *want,
        }
    }

    /// The call, as a failure names it.
    fn call(&self) -> String {
        match self {
            Row::Binary { op, a, b, .. } => format!("{op}({a:?}, {b:?})"),
            Row::Unary { op, a, .. } => format!("{op}({a:?})"),
            Row::Param { op, p, a, .. } => format!("{op}({a:?}, p = {p:?})"),
            Row::Reduce { op, values, .. } => format!("{op}({values:?})"),
            Row::Axis { op, values, .. } => format!("{op}({values:?}, axis 0)"),
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
            let list = || t[3..].iter().map(|v| number(v, line)).collect();
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
                ("param", 5) => Row::Param {
                    op,
                    p: number(t[2], line),
                    a: number(t[3], line),
                    want: number(t[4], line),
                },
                ("reduce", n) if n >= 3 => Row::Reduce {
                    op,
                    want: number(t[2], line),
                    values: list(),
                },
                ("axis", n) if n >= 4 => Row::Axis {
                    op,
                    want: number(t[2], line),
                    values: list(),
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

/// Lists of `AXIS_INPUTS` in `gen_special.py`: each reduction along an axis has a row for
/// each.
const AXIS_INPUTS: usize = 11;

/// Guard against a truncated or hand-edited fixture: every op has its whole grid of
/// `gen_special.py` (8 x 8 pairs, 15 values, 15 values for each `p` of the op table, 5
/// or 11 lists), the file ends with the reductions it writes last, and every op is in the
/// op table, in a row of the same kind.
#[test]
fn the_fixture_holds_the_whole_grid_of_every_op_and_the_table_has_each_op() {
    let rows = rows();
    let names = fixture_ops();
    assert!(names.len() >= 24, "fixture ops: {names:?}");
    for name in &names {
        let of_op: Vec<&Row> = rows.iter().filter(|r| r.op() == name).collect();
        let table = op(name);
        let want = match of_op[0] {
            Row::Binary { .. } => SPECIALS.len() * SPECIALS.len(),
            Row::Unary { .. } => UNARY_SPECIALS.len(),
            Row::Param { .. } => {
                // Every p of the table, each at every value.
                let args = table.elementwise_args();
                for arg in &args {
                    let at_p = of_op.iter().filter(|r| r.arg() == *arg).count();
                    assert_eq!(at_p, UNARY_SPECIALS.len(), "rows of {name} at {arg:?}");
                }
                args.len() * UNARY_SPECIALS.len()
            }
            Row::Reduce { .. } => 5,
            Row::Axis { .. } => AXIS_INPUTS,
        };
        assert_eq!(of_op.len(), want, "rows of {name}");
        let fits = match of_op[0] {
            Row::Binary { .. } => table.binary().is_some(),
            Row::Unary { .. } => matches!(table.rule, Rule::Unary(_)),
            Row::Param { .. } => matches!(table.rule, Rule::Param(_)),
            Row::Reduce { .. } => table.form() == Some(Form::Reduce),
            Row::Axis { .. } => table.form() == Some(Form::Axis),
        };
        assert!(fits, "{name}: the table's row is of another kind");
    }
    assert!(matches!(rows.last(), Some(Row::Reduce { .. })));
}

/// Ops whose value numpy (or scipy) computes another way than tapegrad, so that the two
/// differ in the last bit at some rows: compared within this many ulps there, bit for
/// bit at the infinities, zeros and NaN. Every other op (abs, sqrt, tanh, sin, cos, exp,
/// ln, relu, softplus, the reductions, the binary ops) matches bit for bit everywhere.
const ULPS: &[(&str, u64)] = &[
    // numpy's log1p is its SIMD (AVX-512) loop, tapegrad's the platform libm's (glibc),
    // which is not correctly rounded everywhere: log1p(2.0) is 1.0986122886681096 in
    // glibc, 1.0986122886681098 (= ln 3 correctly rounded) in numpy.
    ("log1p", 1),
    // scipy's expit is 1 / (1 + e^-x); tapegrad writes e^x / (1 + e^x) for x < 0 (no
    // e^-x overflow to lean on): one rounding apart, e.g. at -0.5 and -3.
    ("sigmoid", 1),
    // numpy's pow loop with an array of exponents is its SIMD pow, which is not
    // correctly rounded everywhere: (1e-8)^2 is 1e-16 in numpy, 1.0000000000000001e-16
    // (= 1e-8 * 1e-8) in libm's pow, which tapegrad calls.
    ("powf", 1),
];

/// `got` and `want` agree: bit for bit (NaN matching any NaN, the sign of zero counting),
/// or for an op of [`ULPS`] within its ulps (of the same sign; infinities and zeros
/// still bit for bit).
fn agrees(op: &str, got: f64, want: f64) -> bool {
    let ulps = ULPS.iter().find(|(name, _)| *name == op).map_or(0, |u| u.1);
    same_bits(got, want)
        || ulps > 0
            && got.is_finite()
            && want.is_finite()
            && got != 0.0
            && want != 0.0
            && got.is_sign_negative() == want.is_sign_negative()
            && got.to_bits().abs_diff(want.to_bits()) <= ulps
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
        let x: Vec<Var> = row.inputs().into_iter().map(|t| tape.var(t)).collect();
        let got = op(row.op()).apply(&x, &row.arg()).value().item();
        if !agrees(row.op(), got, row.want()) {
            failures.push(mismatch(&row.call(), got, row.want()));
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
/// engine to numpy's rules: NaN through max/min, `b` at a tie, IEEE division, the later
/// element at a tie of `np.max`, no overflow in softplus and logsumexp).
#[test]
fn the_op_tables_reference_values_match_numpy_bit_for_bit() {
    let mut failures = Vec::new();
    let rows = rows();
    for row in &rows {
        let got = op(row.op()).value(&row.inputs(), &row.arg()).item();
        if !agrees(row.op(), got, row.want()) {
            failures.push(mismatch(&format!("table: {}", row.call()), got, row.want()));
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
        let row = op(&name);
        let flat = row.apply(
            &[
                tape.var(Tensor::from(a.clone())),
                tape.var(Tensor::from(b.clone())),
            ],
            &Arg::None,
        );
        let column = Tensor::new(a.clone(), &[n, 1]).unwrap();
        let doubled: Vec<f64> = b.iter().flat_map(|&y| [y, y]).collect();
        let wide = row.apply(
            &[
                tape.var(column),
                tape.var(Tensor::new(doubled, &[n, 2]).unwrap()),
            ],
            &Arg::None,
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

/// The rows of each one-input op (for each `p` of `powf`) as one op on a `[n]` tensor.
#[test]
fn unary_ops_on_whole_columns_match_numpy_bit_for_bit() {
    let rows = rows();
    let mut failures = Vec::new();
    let mut checked = 0;
    let mut columns: Vec<(String, Arg, Vec<f64>, Vec<f64>)> = Vec::new();
    for row in &rows {
        let (Row::Unary { op, a, want } | Row::Param { op, a, want, .. }) = row else {
            continue;
        };
        let arg = row.arg();
        match columns.iter_mut().find(|c| c.0 == *op && c.1 == arg) {
            Some(column) => {
                column.2.push(*a);
                column.3.push(*want);
            }
            None => columns.push((op.clone(), arg, vec![*a], vec![*want])),
        }
    }
    for (name, arg, a, want) in columns {
        let tape = Tape::new();
        let y = op(&name)
            .apply(&[tape.var(Tensor::from(a.clone()))], &arg)
            .value();
        for i in 0..a.len() {
            if !agrees(&name, y.data()[i], want[i]) {
                failures.push(mismatch(
                    &format!("{name}({:?}) {arg:?} in a column", a[i]),
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
    // d/db = -(u * out) / b: the sign of a zero follows the maths, -(+0) / 1 = -0 and
    // -(-0) / 1 = +0.
    ("div", 0.0, 1.0, BOTH, Some(1.0), Some(-0.0)),
    ("div", -0.0, 1.0, BOTH, Some(1.0), Some(0.0)),
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
    ("neg", -0.0, -1.0),
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
    // abs: np.sign(x), 0 at ±0 (the closed form of |x| and max(x, -x)), NaN at NaN.
    ("abs", 0.0, 0.0),
    ("abs", -0.0, 0.0),
    ("abs", -2.0, -1.0),
    ("abs", INF, 1.0),
    ("abs", -INF, -1.0),
    ("abs", NAN, NAN),
    // sqrt: 1 / (2 sqrt(x)), inf at 0 (-inf at -0.0, whose sqrt is -0.0).
    ("sqrt", 0.0, INF),
    ("sqrt", -0.0, -INF),
    ("sqrt", 4.0, 0.25),
    ("sqrt", INF, 0.0),
    ("sqrt", -1.0, NAN),
    ("sqrt", NAN, NAN),
    // tanh: 1 - tanh(x)^2, exactly 0 once tanh saturates.
    ("tanh", 0.0, 1.0),
    ("tanh", 1000.0, 0.0),
    ("tanh", -INF, 0.0),
    ("tanh", NAN, NAN),
    // sigmoid: s (1 - s), exactly 0 at ±1000 (no overflow on either side).
    ("sigmoid", 0.0, 0.25),
    ("sigmoid", 1000.0, 0.0),
    ("sigmoid", -1000.0, 0.0),
    ("sigmoid", INF, 0.0),
    ("sigmoid", -INF, 0.0),
    ("sigmoid", NAN, NAN),
    // relu: as x.max(0.0), 1 where x > 0 and 0 elsewhere: at ±0 and NaN too.
    ("relu", 2.0, 1.0),
    ("relu", -2.0, 0.0),
    ("relu", 0.0, 0.0),
    ("relu", -0.0, 0.0),
    ("relu", INF, 1.0),
    ("relu", -INF, 0.0),
    ("relu", NAN, 0.0),
    // log1p: 1 / (1 + x), inf at the pole -1.
    ("log1p", 0.0, 1.0),
    ("log1p", -1.0, INF),
    ("log1p", -2.0, -1.0),
    ("log1p", INF, 0.0),
    ("log1p", NAN, NAN),
    // softplus: sigmoid(x), exactly 1 and 0 at ±1000.
    ("softplus", 0.0, 0.5),
    ("softplus", 1000.0, 1.0),
    ("softplus", -1000.0, 0.0),
    ("softplus", INF, 1.0),
    ("softplus", -INF, 0.0),
    ("softplus", NAN, NAN),
    // sin and cos: cos(x) and -sin(x), NaN at the infinities.
    ("sin", 0.0, 1.0),
    ("sin", INF, NAN),
    ("sin", NAN, NAN),
    ("cos", 0.0, -0.0),
    ("cos", -0.0, 0.0),
    ("cos", -INF, NAN),
];

/// `(op, p, a, d/da)` of an op with a number: `powf(p)`, whose derivative is
/// `p x^(p-1)`, and 0 for `p = 0` (x^0 is the constant 1, also at 0, inf and NaN).
const PARAM_GRADIENTS: &[(&str, f64, f64, f64)] = &[
    ("powf", 0.0, 0.0, 0.0),
    ("powf", 0.0, INF, 0.0),
    ("powf", 0.0, NAN, 0.0),
    ("powf", 1.0, 0.0, 1.0),
    ("powf", 1.0, -INF, 1.0),
    ("powf", 1.0, NAN, 1.0), // 1 * NaN^0, and NaN^0 = 1 (IEEE pow)
    ("powf", 2.0, 3.0, 6.0),
    ("powf", 2.0, 0.0, 0.0),
    ("powf", 2.0, -0.0, -0.0),
    ("powf", 2.0, -INF, -INF),
    ("powf", 0.5, 4.0, 0.25),
    ("powf", 0.5, 0.0, INF),
    ("powf", 0.5, -1.0, NAN),
    ("powf", -1.0, 2.0, -0.25),
    ("powf", -1.0, 0.0, -INF),
    ("powf", -1.0, -0.0, -INF),
    ("powf", -1.0, INF, -0.0),
    ("powf", 2.5, 4.0, 20.0),
    ("powf", 2.5, 0.0, 0.0),
    ("powf", 2.5, -1.0, NAN),
];

#[test]
fn binary_op_gradients_at_special_inputs_follow_the_documented_rules() {
    let mut failures = Vec::new();
    for &(name, a, b, tracked, want_a, want_b) in BINARY_GRADIENTS {
        for layout in LAYOUTS {
            let [ga, gb] = engine_grads(op(name), &[a, b], &Arg::None, tracked, layout, 1.0);
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
    let without_p = UNARY_GRADIENTS
        .iter()
        .map(|&(name, a, want)| (name, Arg::None, a, want));
    let with_p = PARAM_GRADIENTS
        .iter()
        .map(|&(name, p, a, want)| (name, Arg::Param(p), a, want));
    for (name, arg, a, want) in without_p.chain(with_p) {
        for layout in LAYOUTS {
            let [g, _] = engine_grads(op(name), &[a], &arg, A_ONLY, layout, 1.0);
            if !same_bits_or_none(g, Some(want)) {
                failures.push(format!(
                    "  d {name}({a:?}) {arg:?} in {layout:?}: got {g:?}, want {want:?}"
                ));
            }
        }
    }
    assert_none_failed(&failures, UNARY_GRADIENTS.len() + PARAM_GRADIENTS.len());
}

/// Every elementwise op of one input has gradient rows above, at 0 or its pole at least.
#[test]
fn every_unary_op_of_the_table_has_gradient_rows_at_special_inputs() {
    for op in OPS
        .iter()
        .filter(|op| op.is_elementwise() && op.arity() == 1)
    {
        let rows = UNARY_GRADIENTS.iter().map(|r| r.0);
        let count = rows
            .chain(PARAM_GRADIENTS.iter().map(|r| r.0))
            .filter(|n| *n == op.name);
        assert!(count.count() >= 3, "{}: too few gradient rows", op.name);
    }
}

/// The engine's gradients of every elementwise op of the table at every special input
/// (with every choice of tracked operands), in both layouts, for the upstream `u`:
/// `check(op, special input, got)` says what was wanted where they are wrong; every
/// such case is listed.
fn assert_at_every_special_input(
    u: f64,
    check: impl Fn(&Op, &Special, [Option<f64>; 2]) -> Result<(), String>,
) {
    let mut failures = Vec::new();
    let mut checked = 0;
    for op in OPS.iter().filter(|op| op.is_elementwise()) {
        for at in op.special_inputs() {
            for layout in LAYOUTS {
                let Special { x, arg, tracked } = &at;
                let got = engine_grads(op, x, arg, *tracked, layout, u);
                if let Err(want) = check(op, &at, got) {
                    failures.push(format!(
                        "  d {}{x:?} {arg:?} tracked {tracked:?} in {layout:?}, upstream \
                         {u}: got {got:?}, want {want}",
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
/// does at every special input, in both backward paths, bit for bit: NaN where it is
/// NaN, the same number elsewhere, the sign of a zero included (`div` now gives
/// `-(u out) / b`, so its zeros carry the sign of the maths, as the table writes it).
#[test]
fn every_elementwise_op_gradient_at_special_inputs_is_the_op_tables_derivative() {
    assert_at_every_special_input(1.0, |op, at, got| {
        let local = op.local_grad(&at.x, &at.arg, at.tracked);
        let want = [0, 1].map(|k| (k < at.x.len() && at.tracked[k]).then_some(local[k]));
        match (0..2).all(|k| same_bits_or_none(got[k], want[k])) {
            true => Ok(()),
            false => Err(format!("{want:?} (the table)")),
        }
    });
}

/// A zero upstream gives exactly 0 (not `0 * inf = NaN`), even where the local
/// derivative is inf or NaN: every elementwise op at every special input, in both
/// backward paths.
#[test]
fn zero_upstream_gives_zero_gradient_where_the_local_derivative_is_inf_or_nan() {
    assert_at_every_special_input(0.0, |_, _, got| {
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
