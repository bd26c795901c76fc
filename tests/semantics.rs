//! The engine's promises, one test each: the op table covers every op, the tie rule of
//! max/min line by line (in the rank-0 and the tensor path), selection (not masking) in
//! their backward, hard zeros for a zero upstream, the same rules in both backward paths,
//! max_axis/min_axis at ties and NaN, softmax and logsumexp at 1000, relu and abs as the
//! closed forms of max, compound assignment, select, one_hot and the shape ops, and
//! pairwise summation.
//!
//! Values against numpy live in `special_values.rs`, panics in `bad_input.rs`, the 10^6
//! chain in `long_runs.rs`.

mod common;

use common::ops::{Arg, LAYOUTS, Layout, OPS, Op, Special, engine_grads, op};
use common::{INF, NAN, SPECIALS, assert_same, same_bits, same_bits_or_none};
use tapegrad::losses::{hinge, hinge_grad_closed_form};
use tapegrad::{Tape, Tensor, Var, max};

// ---- the op table covers the engine ---------------------------------------------------

/// The string literal right after each `marker` in `text` (white space between them
/// allowed); a marker followed by anything else (`R::NAME`, `&self.name`) is skipped.
fn literals_after(text: &str, marker: &str) -> Vec<String> {
    text.match_indices(marker)
        .filter_map(|(at, _)| {
            let rest = text[at + marker.len()..].trim_start().strip_prefix('"')?;
            Some(rest[..rest.find('"')?].to_string())
        })
        .collect()
}

/// The names of the ops the engine defines, read from its source: every
/// `const NAME: &'static str = "..."` (a `PerElement` rule) and every
/// `fn name(&self) -> &str { "..." }` (an `Op`) in `src/`. A custom op's name is not a
/// literal, so custom ops are left out.
fn engine_op_names() -> Vec<String> {
    let mut files = vec![std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src"
    ))];
    let mut names = Vec::new();
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            names.extend(literals_after(&text, "const NAME: &'static str ="));
            names.extend(literals_after(&text, "fn name(&self) -> &str {"));
        }
    }
    names.sort();
    names
}

#[test]
fn the_op_name_scan_reads_both_ways_an_op_names_itself() {
    let src = "const NAME: &'static str = \"add\";\n fn name(&self) -> &str {\n  \"sum\"\n}\n\
               fn name(&self) -> &str {\n R::NAME\n}\n const NAME: &'static str;";
    assert_eq!(
        literals_after(src, "const NAME: &'static str ="),
        ["add"],
        "a rule's NAME"
    );
    assert_eq!(
        literals_after(src, "fn name(&self) -> &str {"),
        ["sum"],
        "an Op's name()"
    );
}

#[test]
fn every_op_the_engine_defines_has_a_row_in_the_op_table() {
    let missing: Vec<String> = engine_op_names()
        .into_iter()
        .filter(|name| OPS.iter().all(|op| op.name != name))
        .collect();
    assert!(
        missing.is_empty(),
        "ops of src/ without a row in tests/common/ops.rs: {missing:?}"
    );
}

#[test]
fn every_row_of_the_op_table_is_an_op_the_engine_defines_once() {
    let engine = engine_op_names();
    assert!(engine.len() >= 14, "the scan found only {engine:?}");
    for (i, row) in OPS.iter().enumerate() {
        assert!(
            engine.iter().any(|name| name == row.name),
            "row {:?} is no op of src/ (engine ops: {engine:?})",
            row.name
        );
        assert!(
            OPS[..i].iter().all(|earlier| earlier.name != row.name),
            "two rows named {:?}",
            row.name
        );
    }
}

// ---- the tie rule of max and min -------------------------------------------------------

/// How an operand enters `max`/`min`.
#[derive(Clone, Copy, Debug)]
enum Operand {
    /// `tape.var(x)`: tracked.
    Var(f64),
    /// `tape.constant(x)`: untracked.
    Const(f64),
    /// `tape.constant(x) - tape.constant(0.0)`: an untracked expression of constants.
    ConstExpr(f64),
    /// The plain number `x` (recorded as a rank-0 constant).
    F64(f64),
}

use Operand::{Const, ConstExpr, F64, Var as V};

/// The three ways an operand can be untracked.
const UNTRACKED: [fn(f64) -> Operand; 3] = [Const, ConstExpr, F64];

/// Pairs that tie: equal, signed zeros, infinities.
const TIES: [(f64, f64); 7] = [
    (1.5, 1.5),
    (-2.0, -2.0),
    (0.0, 0.0),
    (0.0, -0.0),
    (-0.0, 0.0),
    (INF, INF),
    (-INF, -INF),
];

/// Pairs with a NaN on one side or both.
const NANS: [(f64, f64); 6] = [
    (NAN, 1.0),
    (1.0, NAN),
    (NAN, NAN),
    (NAN, INF),
    (-INF, NAN),
    (NAN, -0.0),
];

fn max_and_min() -> [&'static Op; 2] {
    [op("max"), op("min")]
}

/// `op(a, b)` recorded on `tape` with its operands laid out as `layout`, and the var of
/// each operand that is one.
fn record<'t>(
    tape: &'t Tape,
    op: &Op,
    a: Operand,
    b: Operand,
    layout: Layout,
) -> (Var<'t>, [Option<Var<'t>>; 2]) {
    let rule = op.binary().expect("a binary op");
    let node = |o: Operand| match o {
        V(x) => tape.var(layout.leaf(x)),
        Const(x) => tape.constant(layout.leaf(x)),
        ConstExpr(x) => tape.constant(layout.leaf(x)) - tape.constant(layout.leaf(0.0)),
        F64(_) => unreachable!("plain numbers are passed as they are"),
    };
    let var_of = |o: Operand, v: Var<'t>| matches!(o, V(_)).then_some(v);
    match (a, b) {
        (F64(_), F64(_)) => panic!("test bug: two plain numbers"),
        (F64(x), b) => {
            let vb = node(b);
            ((rule.f64_var)(x, vb), [None, var_of(b, vb)])
        }
        (a, F64(y)) => {
            let va = node(a);
            ((rule.var_f64)(va, y), [var_of(a, va), None])
        }
        (a, b) => {
            let (va, vb) = (node(a), node(b));
            ((rule.apply)(va, vb), [var_of(a, va), var_of(b, vb)])
        }
    }
}

/// The gradient of each var operand of `op(a, b)` (`None` for the others) for the
/// upstream `u` in every element. In the tensor layout the upstream reaches the op once
/// element by element and once as one number (`(y.sum() * u)`): every element, both
/// ways, must get the same bits.
fn shares_of(op: &Op, a: Operand, b: Operand, layout: Layout, u: f64) -> [Option<f64>; 2] {
    let tape = Tape::new();
    let (y, vars) = record(&tape, op, a, b, layout);
    let sweeps = match layout {
        Layout::Rank0 => vec![y.backward_with(Tensor::scalar(u))],
        Layout::Tensor => vec![y.backward_with(layout.leaf(u)), (y.sum() * u).backward()],
    };
    vars.map(|v| {
        v.map(|v| {
            let all: Vec<f64> = sweeps
                .iter()
                .flat_map(|g| g.wrt(v).data().to_vec())
                .collect();
            assert!(
                all.iter().all(|&g| same_bits(g, all[0])),
                "{}({a:?}, {b:?}) in {layout:?}, upstream {u}: elements or paths differ: {all:?}",
                op.name
            );
            all[0]
        })
    })
}

/// Assert that `op(a, b)` gives its var operands the shares `want` of the upstream
/// (`None` for the operands that are not vars) and `op(b, a)` the same shares swapped:
/// in the rank-0 and the tensor layout, for the upstreams 1, -3 and inf. A share of 0
/// must be exactly 0, never `0 * inf`.
#[track_caller]
fn assert_shares(op: &Op, a: Operand, b: Operand, want: [Option<f64>; 2]) {
    for (k, o) in [a, b].iter().enumerate() {
        assert_eq!(
            want[k].is_some(),
            matches!(o, V(_)),
            "test bug: a share for each var"
        );
    }
    for (a, b, want) in [(a, b, want), (b, a, [want[1], want[0]])] {
        for layout in LAYOUTS {
            for u in [1.0, -3.0, INF] {
                let got = shares_of(op, a, b, layout, u);
                let expected = want.map(|s| s.map(|s| if s == 0.0 { 0.0 } else { s * u }));
                let ok = (0..2).all(|k| same_bits_or_none(got[k], expected[k]));
                assert!(
                    ok,
                    "d {}({a:?}, {b:?}) in {layout:?}, upstream {u}: got {got:?}, want {expected:?}",
                    op.name
                );
            }
        }
    }
}

#[test]
fn max_and_min_send_the_whole_gradient_to_the_winner_and_exactly_zero_to_the_other() {
    let (max, min) = (op("max"), op("min"));
    // (greater, smaller)
    for (hi, lo) in [
        (3.0, 1.0),
        (INF, 2.0),
        (-5.0, -INF),
        (1e-300, 0.0),
        (2.0, -0.0),
    ] {
        assert_shares(max, V(hi), V(lo), [Some(1.0), Some(0.0)]);
        assert_shares(min, V(hi), V(lo), [Some(0.0), Some(1.0)]);
        for untracked in UNTRACKED {
            assert_shares(max, V(hi), untracked(lo), [Some(1.0), None]);
            assert_shares(max, untracked(hi), V(lo), [None, Some(0.0)]);
            assert_shares(min, V(hi), untracked(lo), [Some(0.0), None]);
            assert_shares(min, untracked(hi), V(lo), [None, Some(1.0)]);
        }
    }
}

/// [`assert_shares`] of max and min at every pair of [`TIES`], a var against `other`.
#[track_caller]
fn assert_at_every_tie(other: fn(f64) -> Operand, want: [Option<f64>; 2]) {
    for op in max_and_min() {
        for (a, b) in TIES {
            assert_shares(op, V(a), other(b), want);
        }
    }
}

#[test]
fn max_and_min_tie_with_a_constant_on_either_side_sends_nothing_back() {
    assert_at_every_tie(Const, [Some(0.0), None]);
}

#[test]
fn max_and_min_tie_with_an_f64_on_either_side_sends_nothing_back() {
    assert_at_every_tie(F64, [Some(0.0), None]);
}

#[test]
fn max_and_min_tie_with_an_expression_of_constants_on_either_side_sends_nothing_back() {
    // max(c1 - c2, x): c1 - c2 depends on no var, so it is untracked like a constant.
    assert_at_every_tie(ConstExpr, [Some(0.0), None]);
}

#[test]
fn max_and_min_tie_between_two_vars_splits_the_gradient_half_and_half() {
    assert_at_every_tie(V, [Some(0.5), Some(0.5)]);
}

#[test]
fn max_and_min_with_a_nan_on_either_side_follow_the_tie_rule() {
    for op in max_and_min() {
        for (a, b) in NANS {
            assert_shares(op, V(a), V(b), [Some(0.5), Some(0.5)]);
            for untracked in UNTRACKED {
                assert_shares(op, V(a), untracked(b), [Some(0.0), None]);
            }
        }
    }
}

#[test]
fn max_of_zero_and_z_in_every_spelling_has_gradient_zero_at_zero_and_at_nan() {
    let z = [-1.0, 0.0, -0.0, NAN, 2.0];
    let spellings: [(&str, common::ops::Unary); 4] = [
        ("max(0.0, z)", |z| max(0.0, z)),
        ("max(z, 0.0)", |z| max(z, 0.0)),
        ("z.max(0.0)", |z| z.max(0.0)),
        ("max(zero, z)", |z| {
            max(z.tape().constant(Tensor::scalar(0.0)), z)
        }),
    ];
    for (name, f) in spellings {
        let tape = Tape::new();
        let zs = tape.var(Tensor::from(z.to_vec()));
        let g = f(zs).sum().backward();
        assert_same(g.wrt(zs).data(), &[0.0, 0.0, 0.0, 0.0, 1.0], name);
        for (i, &x) in z.iter().enumerate() {
            let tape = Tape::new();
            let x_var = tape.var(Tensor::scalar(x));
            let g = f(x_var).backward();
            let want = [0.0, 0.0, 0.0, 0.0, 1.0][i];
            assert!(
                same_bits(g.wrt(x_var).item(), want),
                "{name} at rank 0, z = {x:?}"
            );
        }
    }
}

#[test]
fn max_of_x_and_minus_x_has_gradient_sign_of_x_and_zero_at_zero() {
    // |x| = max(x, -x) and -|x| = min(x, -x): both operands tracked, the tie at 0 (and a
    // NaN) split half and half, which cancels.
    let x = [-2.0, -0.0, 0.0, 3.0, NAN];
    let sign = [-1.0, 0.0, 0.0, 1.0, 0.0];
    for (op, flip) in [(op("max"), 1.0), (op("min"), -1.0)] {
        let (name, f) = (op.name, op.binary().unwrap().apply);
        let want: Vec<f64> = sign.iter().map(|s| flip * s + 0.0).collect();
        for layout in LAYOUTS {
            for (i, &xi) in x.iter().enumerate() {
                let tape = Tape::new();
                let v = tape.var(layout.leaf(xi));
                let g = f(v, -v).backward_with(layout.leaf(1.0));
                let got = g.wrt(v).data();
                assert!(
                    got.iter().all(|&g| same_bits(g, want[i])),
                    "{name}(x, -x) in {layout:?} at x = {xi:?}: got {got:?}, want {}",
                    want[i]
                );
            }
        }
    }
}

#[test]
fn max_and_min_of_x_and_x_have_gradient_one() {
    for op in max_and_min() {
        let f = op.binary().unwrap().apply;
        for layout in LAYOUTS {
            for x in [1.5, 0.0, -INF, NAN] {
                let tape = Tape::new();
                let v = tape.var(layout.leaf(x));
                let g = f(v, v).backward_with(layout.leaf(3.0));
                assert!(
                    g.wrt(v).data().iter().all(|&g| g == 3.0),
                    "{}(x, x) in {layout:?}, x = {x:?}: {:?}",
                    op.name,
                    g.wrt(v)
                );
            }
        }
    }
}

#[test]
fn max_and_min_of_two_constants_send_nothing_and_leave_the_other_gradients_alone() {
    for op in max_and_min() {
        let f = op.binary().unwrap().apply;
        for layout in LAYOUTS {
            for (a, b) in TIES.iter().chain(&NANS) {
                let tape = Tape::new();
                let x = tape.var(layout.leaf(2.0));
                let m = f(
                    tape.constant(layout.leaf(*a)),
                    tape.constant(layout.leaf(*b)),
                );
                let g = (m * 0.0 + x * 3.0).backward_with(layout.leaf(1.0));
                assert!(
                    g.wrt(x).data().iter().all(|&g| g == 3.0),
                    "{} of constants ({a:?}, {b:?}) in {layout:?}: {:?}",
                    op.name,
                    g.wrt(x)
                );
            }
        }
    }
}

#[test]
fn max_and_min_gradients_do_not_depend_on_operand_order() {
    for op in max_and_min() {
        for a in SPECIALS {
            for b in SPECIALS {
                let pairs = [V(b)].into_iter().chain(UNTRACKED.map(|u| u(b)));
                for other in pairs {
                    for layout in LAYOUTS {
                        let ab = shares_of(op, V(a), other, layout, 1.0);
                        let ba = shares_of(op, other, V(a), layout, 1.0);
                        assert!(
                            same_bits_or_none(ab[0], ba[1]) && same_bits_or_none(ab[1], ba[0]),
                            "{}(x = {a:?}, {other:?}) in {layout:?}: {ab:?}, swapped {ba:?}",
                            op.name
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn the_readme_hinge_is_its_closed_form_with_the_constant_on_either_side_of_max() {
    // pred * target = [1, 1, -2, 1]: three ties at the kink, one active element.
    let pred = Tensor::from(vec![1.0, 0.5, -2.0, 0.25]);
    let target = Tensor::from(vec![1.0, 2.0, 1.0, 4.0]);
    let want = [0.0, 0.0, -0.25, 0.0];
    assert_eq!(hinge_grad_closed_form(&pred, &target).data(), &want);
    let forms: [(&str, common::ops::Binary); 3] = [
        ("max(0.0, 1.0 - p * t).sum() / 4.0", |p, t| {
            max(0.0, 1.0 - p * t).sum() / 4.0
        }),
        ("(1.0 - p * t).max(0.0).sum() / 4.0", |p, t| {
            (1.0 - p * t).max(0.0).sum() / 4.0
        }),
        ("losses::hinge(p, t)", hinge),
    ];
    for (name, loss) in forms {
        let tape = Tape::new();
        let p = tape.var(pred.clone());
        let l = loss(p, tape.constant(target.clone()));
        assert_eq!(l.value().item(), 0.75, "{name}: value");
        let g = l.backward();
        assert_eq!(g.wrt(p).data(), &want, "{name}");
        assert!(g.wrt(p).data().iter().all(|g| g.is_finite()), "{name}");
    }
}

// ---- max / min: the side routed away gets exactly 0 -----------------------------------

/// Gradients of `op(a, b)` with respect to both operands, seeded with `seed`.
fn binary_grads(op: &Op, a: &[f64], b: &[f64], seed: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let tape = Tape::new();
    let (va, vb) = (
        tape.var(Tensor::from(a.to_vec())),
        tape.var(Tensor::from(b.to_vec())),
    );
    let grads = op
        .apply(&[va, vb], &Arg::None)
        .backward_with(Tensor::from(seed.to_vec()));
    (grads.wrt(va).data().to_vec(), grads.wrt(vb).data().to_vec())
}

#[test]
fn max_and_min_give_the_side_routed_away_exactly_zero_even_where_the_upstream_is_inf_or_nan() {
    // The first operand wins at 0 and 2, the second at 1 and 3; the upstream there is
    // NaN and -inf on the side routed away.
    let seed = [INF, NAN, NAN, -INF];
    for (name, a, b) in [
        ("max", [3.0, 1.0, 5.0, -1.0], [1.0, 3.0, 2.0, 4.0]),
        ("min", [1.0, 3.0, 2.0, 4.0], [3.0, 1.0, 5.0, -1.0]),
    ] {
        let (ga, gb) = binary_grads(op(name), &a, &b, &seed);
        assert_same(&ga, &[INF, 0.0, NAN, 0.0], &format!("{name}: grad a"));
        assert_same(&gb, &[0.0, NAN, 0.0, -INF], &format!("{name}: grad b"));
    }
}

#[test]
fn max_with_a_scalar_inf_upstream_still_gives_exact_zeros() {
    // A one-element upstream takes the uniform-upstream path of the backward.
    let tape = Tape::new();
    let (a, b) = (
        tape.var(Tensor::from(vec![3.0, 1.0])),
        tape.var(Tensor::from(vec![1.0, 3.0])),
    );
    let g = (max(a, b).sum() * INF).backward();
    assert_same(g.wrt(a).data(), &[INF, 0.0], "grad a");
    assert_same(g.wrt(b).data(), &[0.0, INF], "grad b");
}

// ---- a zero upstream is a hard zero -----------------------------------------------------

#[test]
fn mul_with_zero_upstream_gives_zero_not_nan() {
    // The hinge with target = inf: where pred * target >= 1 the element is inactive, the
    // upstream reaching `pred * target` is 0, and 0 * inf must not become NaN.
    let tape = Tape::new();
    let pred = tape.var(Tensor::from(vec![1.0, -1.0, 0.5, 2.0]));
    let target = tape.constant(Tensor::from(vec![INF, INF, 1.0, -1.0]));
    let g = hinge(pred, target).backward();
    assert_same(g.wrt(pred).data(), &[0.0, -INF, -0.25, 0.25], "hinge grad");

    // Directly: a zero seed against inf and NaN factors.
    let tape = Tape::new();
    let x = tape.var(Tensor::from(vec![1.0, 2.0, 3.0]));
    let c = tape.constant(Tensor::from(vec![INF, NAN, 3.0]));
    let g = (x * c).backward_with(Tensor::from(vec![0.0, -0.0, 1.0]));
    assert_eq!(g.wrt(x).data(), &[0.0, 0.0, 3.0]);
}

#[test]
fn div_with_zero_upstream_gives_zero_not_nan() {
    // d(a/b)/da = 1/b = inf at b = 0, d(a/b)/db = -a/b^2 = NaN at a = b = 0.
    let tape = Tape::new();
    let a = tape.var(Tensor::from(vec![1.0, 0.0, 6.0]));
    let b = tape.var(Tensor::from(vec![0.0, 0.0, 2.0]));
    let g = (a / b).backward_with(Tensor::from(vec![0.0, 0.0, 1.0]));
    assert_eq!(g.wrt(a).data(), &[0.0, 0.0, 0.5]);
    assert_eq!(g.wrt(b).data(), &[0.0, 0.0, -1.5]);
}

#[test]
fn exp_and_ln_with_zero_upstream_give_zero_not_nan() {
    // exp(1000) = inf and ln'(0) = 1/0 = inf: the local derivatives are infinite.
    let tape = Tape::new();
    let x = tape.var(Tensor::from(vec![1000.0, 0.0]));
    let g = x.exp().backward_with(Tensor::from(vec![0.0, 1.0]));
    assert_eq!(g.wrt(x).data(), &[0.0, 1.0]);
    let g = x.ln().backward_with(Tensor::from(vec![1.0, 0.0]));
    assert_eq!(g.wrt(x).data(), &[0.001, 0.0]);
}

#[test]
fn matmul_with_zero_upstream_gives_zero_not_nan() {
    // out = a b, a [1, 2], b [2, 2] with b[0][0] = inf. Seeding out[0][0] with 0 says the
    // loss does not depend on it, so b[0][0] = inf must not reach a's gradient:
    // grad a = seed b^T = [0 * inf + 1 * 1, 0 * 1 + 1 * 1] with the zero a hard zero.
    let tape = Tape::new();
    let a = tape.var(Tensor::new(vec![1.0, 2.0], &[1, 2]).unwrap());
    let b = tape.var(Tensor::new(vec![INF, 1.0, 1.0, 1.0], &[2, 2]).unwrap());
    let g = a
        .matmul(b)
        .backward_with(Tensor::new(vec![0.0, 1.0], &[1, 2]).unwrap());
    assert_same(g.wrt(a).data(), &[1.0, 1.0], "grad a");
    // grad b = a^T seed = [[1 * 0, 1 * 1], [2 * 0, 2 * 1]]: finite either way.
    assert_same(g.wrt(b).data(), &[0.0, 1.0, 0.0, 2.0], "grad b");
}

#[test]
fn a_scalar_broadcast_over_an_empty_var_gets_zero_even_from_an_inf_upstream() {
    // mean of nothing sends back 1/0 = inf as one number; summed over no elements it is 0.
    let tape = Tape::new();
    let c = tape.var(Tensor::scalar(1.5));
    let x = tape.var(Tensor::from(vec![]));
    let g = (c + x).mean().backward();
    assert_eq!(g.wrt(c).data(), &[0.0]);
    let row = tape.var(Tensor::new(vec![1.0, 2.0, 3.0], &[1, 3]).unwrap());
    let empty = tape.var(Tensor::new(vec![], &[0, 3]).unwrap());
    let g = (row - empty).mean().backward();
    assert_eq!(g.wrt(row).data(), &[0.0; 3]);
}

// ---- one rule, two backward paths ---------------------------------------------------------

/// Elementwise ops run their backward rule on plain numbers for rank-0 nodes and over
/// tensors otherwise. Both must give the same bits for every special value, upstream
/// and choice of tracked operands, for every elementwise op of the table.
#[test]
fn rank0_and_tensor_backward_rules_agree_bit_for_bit_on_special_values() {
    let upstreams = [0.0, 1.0, -3.0, INF, NAN];
    let mut mismatches = Vec::new();
    let mut checked = 0;
    for op in OPS.iter().filter(|op| op.is_elementwise()) {
        for Special { x, arg, tracked } in op.special_inputs() {
            for u in upstreams {
                let scalar = engine_grads(op, &x, &arg, tracked, Layout::Rank0, u);
                let tensor = engine_grads(op, &x, &arg, tracked, Layout::Tensor, u);
                if !(0..2).all(|k| same_bits_or_none(scalar[k], tensor[k])) {
                    mismatches.push(format!(
                        "{}{x:?} {arg:?} tracked {tracked:?} upstream {u}: rank-0 \
                         {scalar:?}, tensor {tensor:?}",
                        op.name
                    ));
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 0);
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

// ---- max_axis and min_axis: NaN propagates, ties share the gradient evenly ---------------

/// `(lane, max, d max / d lane, min, d min / d lane)` for the upstream 1.
type LaneCase = (&'static [f64], f64, &'static [f64], f64, &'static [f64]);

const LANES: &[LaneCase] = &[
    (
        &[1.0, 3.0, 2.0],
        3.0,
        &[0.0, 1.0, 0.0],
        1.0,
        &[1.0, 0.0, 0.0],
    ),
    // Two-way and three-way ties: the upstream split evenly, exactly 0 elsewhere.
    (
        &[1.0, 3.0, 3.0, 1.0],
        3.0,
        &[0.0, 0.5, 0.5, 0.0],
        1.0,
        &[0.5, 0.0, 0.0, 0.5],
    ),
    (&[2.0, 2.0, 2.0], 2.0, &[1.0 / 3.0; 3], 2.0, &[1.0 / 3.0; 3]),
    // Signed zeros tie; the value is the later one, as np.max and np.min return.
    (&[0.0, -0.0], -0.0, &[0.5, 0.5], -0.0, &[0.5, 0.5]),
    (&[-0.0, 0.0], 0.0, &[0.5, 0.5], 0.0, &[0.5, 0.5]),
    // Infinities tie like numbers.
    (
        &[INF, 1.0, INF],
        INF,
        &[0.5, 0.0, 0.5],
        1.0,
        &[0.0, 1.0, 0.0],
    ),
    (&[-INF, -INF], -INF, &[0.5, 0.5], -INF, &[0.5, 0.5]),
    // A NaN wins (np.max): the NaN elements share the gradient.
    (
        &[1.0, NAN, 2.0],
        NAN,
        &[0.0, 1.0, 0.0],
        NAN,
        &[0.0, 1.0, 0.0],
    ),
    (
        &[NAN, 5.0, NAN, 7.0],
        NAN,
        &[0.5, 0.0, 0.5, 0.0],
        NAN,
        &[0.5, 0.0, 0.5, 0.0],
    ),
    // One element: its own extreme.
    (&[-4.0], -4.0, &[1.0], -4.0, &[1.0]),
];

#[test]
fn max_and_min_axis_propagate_nan_and_split_ties_evenly_along_either_axis() {
    for &(lane, max, d_max, min, d_min) in LANES {
        let n = lane.len();
        // The lane along axis 1 of [2, n] (twice), and along axis 0 of [n, 2] (twice).
        let rows = Tensor::new([lane, lane].concat(), &[2, n]).unwrap();
        let columns: Vec<f64> = lane.iter().flat_map(|&v| [v, v]).collect();
        let columns = Tensor::new(columns, &[n, 2]).unwrap();
        for (name, want, d_want) in [("max_axis", max, d_max), ("min_axis", min, d_min)] {
            for (x, axis) in [(&rows, 1), (&columns, 0)] {
                let tape = Tape::new();
                let v = tape.var(x.clone());
                let y = op(name).apply(&[v], &Arg::Axis(axis));
                let what = format!("{name}({lane:?}) along axis {axis}");
                assert!(
                    y.value().data().iter().all(|&g| same_bits(g, want)),
                    "{what}"
                );
                // The upstream 1 for one lane, 0 for the other: that lane gets nothing.
                let g = y.backward_with(Tensor::from(vec![1.0, 0.0]));
                let g = g.wrt(v);
                let (first, second): (Vec<f64>, Vec<f64>) = match axis {
                    1 => (g.data()[..n].to_vec(), g.data()[n..].to_vec()),
                    _ => (
                        g.data().iter().step_by(2).copied().collect(),
                        g.data().iter().skip(1).step_by(2).copied().collect(),
                    ),
                };
                assert_same(&first, d_want, &what);
                assert!(
                    second.iter().all(|&g| same_bits(g, 0.0)),
                    "{what}: {second:?}"
                );
            }
        }
    }
}

#[test]
fn max_axis_gives_exactly_zero_to_the_losers_even_for_an_inf_or_nan_upstream() {
    let tape = Tape::new();
    let x = tape.var(Tensor::new(vec![1.0, 3.0, 3.0, 5.0, 4.0, 2.0], &[2, 3]).unwrap());
    let g = x.max_axis(1).backward_with(Tensor::from(vec![INF, NAN]));
    assert_same(g.wrt(x).data(), &[0.0, INF, INF, NAN, 0.0, 0.0], "grad");
}

// ---- logsumexp, softmax, log_softmax --------------------------------------------------------

#[test]
fn logsumexp_axis_at_1000_does_not_overflow() {
    let tape = Tape::new();
    let x = tape.var(Tensor::new(vec![1000.0, 1000.0, 1000.0, -1000.0], &[2, 2]).unwrap());
    let y = x.logsumexp_axis(1);
    assert_eq!(y.value().data(), &[1000.0 + std::f64::consts::LN_2, 1000.0]);
    // The gradient is exp(x - lse): lse = 1000.69.. carries its rounding (half an ulp
    // of 1000, 5.7e-14) into the exponent, so 0.5 comes out as 0.5000000000000275 (JAX,
    // which differentiates through exp(x - max), gets 0.5 exactly).
    let g = y.sum().backward();
    let want = [0.5, 0.5, 1.0, 0.0];
    for (g, w) in g.wrt(x).data().iter().zip(want) {
        assert!((g - w).abs() <= 1e-13, "{g} vs {w}");
    }
    // A lane of -inf: -inf, and no NaN in the gradient of the other lane.
    let x = tape.var(Tensor::new(vec![-INF, -INF, 0.0, 0.0], &[2, 2]).unwrap());
    let y = x.logsumexp_axis(1);
    assert_same(y.value().data(), &[-INF, std::f64::consts::LN_2], "value");
}

/// softmax along either axis of a [3, 4] input with 1000s and a -inf in it: every lane
/// sums to 1 within a few roundings (each element is exp(x - m) / s, m the lane's
/// maximum: nothing is rounded at the scale of 1000), nothing overflows, the -inf gets
/// exactly 0.
#[test]
fn softmax_lanes_sum_to_one_even_at_1000() {
    let data = vec![
        1000.0, 999.0, -1000.0, 0.5, //
        -INF, 2.0, 1.0, 1000.0, //
        0.0, 0.0, 0.0, 0.0,
    ];
    let tape = Tape::new();
    let x = tape.var(Tensor::new(data, &[3, 4]).unwrap());
    for axis in [0, 1] {
        let s = x.softmax(axis).value();
        assert!(s.data().iter().all(|p| (0.0..=1.0).contains(p)), "{s:?}");
        let sums = tape.constant(s.clone()).sum_axis(axis).value();
        for &sum in sums.data() {
            assert!(
                (sum - 1.0).abs() <= 4.0 * f64::EPSILON,
                "axis {axis}: {sum}"
            );
        }
    }
    assert_eq!(x.softmax(1).value().data()[4], 0.0, "softmax at -inf");
    assert_eq!(x.softmax(1).value().data()[8..], [0.25; 4]);
}

/// log_softmax does not lose precision to a large maximum: shifting every score by 1000
/// changes nothing, bit for bit (`(x - m) - ln(s)`; `x - (m + ln(s))` lost ~100 ulps).
#[test]
fn log_softmax_of_shifted_scores_is_the_same_bit_for_bit() {
    let tape = Tape::new();
    let small = tape.var(Tensor::from(vec![0.5, 0.25, 0.0, -0.125]));
    let large = tape.var(Tensor::from(vec![1000.5, 1000.25, 1000.0, 999.875]));
    let bits = |t: Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(small.log_softmax(0).value()),
        bits(large.log_softmax(0).value())
    );
    assert_eq!(
        bits(small.softmax(0).value()),
        bits(large.softmax(0).value())
    );
}

/// log_softmax is `x - logsumexp(x)` along the axis, up to the rounding of the composite
/// (which subtracts `m + ln(s)` rounded at the scale of the maximum `m`), and so is its
/// gradient.
#[test]
fn log_softmax_is_x_minus_logsumexp() {
    let data = vec![
        1000.0, 999.0, -1000.0, 0.5, -3.0, 2.0, 1.0, 1000.0, 0.0, 0.1, 0.2, 0.3,
    ];
    let w = Tensor::new((0..12).map(|i| (i as f64 * 0.7).sin()).collect(), &[3, 4]).unwrap();
    for axis in [0, 1] {
        let tape = Tape::new();
        let x = tape.var(Tensor::new(data.clone(), &[3, 4]).unwrap());
        let direct = x.log_softmax(axis);
        let composite = x - x.logsumexp_axis(axis).expand_dims(axis);
        for (a, b) in direct.value().data().iter().zip(composite.value().data()) {
            assert!(
                (a - b).abs() <= 4.0 * f64::EPSILON * 1000.0,
                "axis {axis}: {a} vs {b}"
            );
        }
        let g1 = (direct * tape.constant(w.clone())).sum().backward();
        let g2 = (composite * tape.constant(w.clone())).sum().backward();
        // The composite's softmax inherits the rounding of m + ln(s) at m = 1000.
        for (a, b) in g1.wrt(x).data().iter().zip(g2.wrt(x).data()) {
            assert!((a - b).abs() <= 1e-12, "axis {axis}: {a} vs {b}");
        }
        // exp(log_softmax) is softmax.
        let s = x.softmax(axis).value();
        for (l, s) in direct.value().data().iter().zip(s.data()) {
            assert!((l.exp() - s).abs() <= 1e-15, "axis {axis}");
        }
    }
}

#[test]
fn softmax_and_log_softmax_with_a_zero_upstream_give_zero_not_nan() {
    // exp(1000 - 1000) etc. are finite, but a lane holding inf gives NaN outputs; a
    // zero upstream for that lane must still give exactly 0.
    let tape = Tape::new();
    let x = tape.var(Tensor::new(vec![INF, 1.0, 2.0, 3.0], &[2, 2]).unwrap());
    let up = Tensor::new(vec![0.0, 0.0, 1.0, -1.0], &[2, 2]).unwrap();
    let g = x.softmax(1).backward_with(up.clone());
    assert_eq!(g.wrt(x).data()[..2], [0.0, 0.0]);
    let g = x.log_softmax(1).backward_with(up);
    assert_eq!(g.wrt(x).data()[..2], [0.0, 0.0]);
}

// ---- relu and abs: the closed forms of max ----------------------------------------------------

#[test]
fn relu_is_x_max_zero_in_value_and_gradient_bit_for_bit() {
    let x: Vec<f64> = common::UNARY_SPECIALS.to_vec();
    let tape = Tape::new();
    let v = tape.var(Tensor::from(x.clone()));
    let (relu, max0) = (v.relu(), v.max(0.0));
    let bits = |t: &Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&relu.value()), bits(&max0.value()));
    for u in [1.0, -3.0, INF, NAN] {
        let seed = Tensor::full(&[x.len()], u);
        let (g1, g2) = (relu.backward_with(seed.clone()), max0.backward_with(seed));
        assert_eq!(bits(g1.wrt(v)), bits(g2.wrt(v)), "upstream {u}");
    }
}

#[test]
fn abs_has_gradient_sign_of_x_like_max_of_x_and_minus_x() {
    let x = [-2.0, -0.0, 0.0, 3.0, -INF];
    let tape = Tape::new();
    let v = tape.var(Tensor::from(x.to_vec()));
    let g = v.abs().sum().backward();
    assert_same(g.wrt(v).data(), &[-1.0, 0.0, 0.0, 1.0, -1.0], "abs");
    let g_max = max(v, -v).sum().backward();
    assert_same(g.wrt(v).data(), g_max.wrt(v).data(), "abs vs max(x, -x)");
}

// ---- compound assignment ------------------------------------------------------------------

#[test]
fn compound_assignment_records_the_same_op_as_the_operator() {
    let x0 = Tensor::from(vec![1.5, -2.0, 3.0]);
    let y0 = Tensor::from(vec![0.5, 4.0, -1.0]);
    type Step = for<'t> fn(&mut Var<'t>, Var<'t>);
    type Plain = for<'t> fn(Var<'t>, Var<'t>) -> Var<'t>;
    let forms: [(&str, Step, Plain, f64); 4] = [
        ("+=", |a, b| *a += b, |a, b| a + b, 0.25),
        ("-=", |a, b| *a -= b, |a, b| a - b, 0.25),
        ("*=", |a, b| *a *= b, |a, b| a * b, 0.25),
        ("/=", |a, b| *a /= b, |a, b| a / b, 0.25),
    ];
    for (name, step, plain, c) in forms {
        let run = |assign: bool| {
            let tape = Tape::new();
            let (x, y) = (tape.var(x0.clone()), tape.var(y0.clone()));
            let mut acc = x;
            if assign {
                step(&mut acc, y);
                step(&mut acc, x);
            } else {
                acc = plain(plain(acc, y), x);
            }
            let out = acc.sum();
            let g = out.backward();
            (out.value().item(), g.wrt(x).clone(), g.wrt(y).clone())
        };
        assert_eq!(run(true), run(false), "x {name} y; x {name} x");
        // With an f64 on the right.
        let tape = Tape::new();
        let x = tape.var(x0.clone());
        let mut acc = x;
        match name {
            "+=" => acc += c,
            "-=" => acc -= c,
            "*=" => acc *= c,
            _ => acc /= c,
        }
        let want = match name {
            "+=" => x + c,
            "-=" => x - c,
            "*=" => x * c,
            _ => x / c,
        };
        assert_eq!(acc.value(), want.value(), "x {name} {c}");
        assert_eq!(acc.sum().backward().wrt(x), want.sum().backward().wrt(x));
    }
}

// ---- select, one_hot, the shape ops ----------------------------------------------------------

#[test]
fn select_routes_the_gradient_and_never_multiplies_it() {
    let tape = Tape::new();
    let a = tape.var(Tensor::from(vec![1.0, 2.0, 3.0, 4.0]));
    let b = tape.var(Tensor::scalar(-1.0));
    // NaN != 0: a NaN condition selects a, as np.where does.
    let cond = Tensor::from(vec![1.0, 0.0, NAN, -0.0]);
    let y = tapegrad::select(&cond, a, b);
    assert_eq!(y.value().data(), &[1.0, -1.0, 3.0, -1.0]);
    let g = y.backward_with(Tensor::from(vec![INF, NAN, 2.0, 5.0]));
    assert_same(g.wrt(a).data(), &[INF, 0.0, 2.0, 0.0], "grad a");
    // b was broadcast: the gradients it got add up (NaN + 5).
    assert_same(g.wrt(b).data(), &[NAN], "grad b");
    // f64 operands on either side, a condition broadcast over rows.
    let m = tape.var(Tensor::new(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap());
    let cond = Tensor::new(vec![1.0, 0.0], &[2, 1]).unwrap();
    let y = tapegrad::select(&cond, m, 0.0);
    assert_eq!(y.value().data(), &[1.0, 2.0, 3.0, 0.0, 0.0, 0.0]);
    assert_eq!(
        y.sum().backward().wrt(m).data(),
        &[1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    );
    let y = tapegrad::select(&cond, 7.0, m);
    assert_eq!(y.value().data(), &[7.0, 7.0, 7.0, 4.0, 5.0, 6.0]);
    assert_eq!(
        y.sum().backward().wrt(m).data(),
        &[0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    );
}

#[test]
fn one_hot_rows_pick_the_labels_and_pick_scores_with_index_select_too() {
    let y = Tensor::one_hot(&[2, 0, 1, 2], 3);
    assert_eq!(y.shape(), &[4, 3]);
    assert_eq!(
        y.data(),
        &[0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    );
    assert_eq!(Tensor::one_hot(&[], 3).shape(), &[0, 3]);
    // The score of the right class, two ways: (scores * one_hot).sum_axis(1) and a
    // gather with index_select; the same values and gradients.
    let tape = Tape::new();
    let scores = tape.var(Tensor::new((0..12).map(f64::from).collect(), &[4, 3]).unwrap());
    let masked = (scores * tape.constant(y)).sum_axis(1);
    let picked: Vec<Var> = [2, 0, 1, 2]
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            scores
                .index_select(0, &[i])
                .index_select(1, &[c])
                .reshape(&[])
        })
        .collect();
    let gathered = picked[1..].iter().fold(picked[0], |s, &p| s + p);
    assert_eq!(masked.sum().value(), gathered.value());
    let (g1, g2) = (masked.sum().backward(), gathered.backward());
    assert_eq!(g1.wrt(scores), g2.wrt(scores));
}

#[test]
fn index_select_adds_up_the_gradients_of_repeated_indices() {
    let tape = Tape::new();
    let x = tape.var(Tensor::new((0..6).map(f64::from).collect(), &[3, 2]).unwrap());
    let y = x.index_select(0, &[2, 2, 0, 2]);
    assert_eq!(y.value().data(), &[4.0, 5.0, 4.0, 5.0, 0.0, 1.0, 4.0, 5.0]);
    let w = Tensor::new((1..=8).map(f64::from).collect(), &[4, 2]).unwrap();
    let g = y.backward_with(w);
    // Row 2 gets rows 0, 1 and 3 of the upstream; row 0 gets row 2; row 1 nothing.
    assert_eq!(
        g.wrt(x).data(),
        &[5.0, 6.0, 0.0, 0.0, 1.0 + 3.0 + 7.0, 2.0 + 4.0 + 8.0]
    );
}

#[test]
fn transpose_reverses_every_axis_and_leaves_rank_0_and_1_alone() {
    let tape = Tape::new();
    let x = tape.var(Tensor::new((0..24).map(f64::from).collect(), &[2, 3, 4]).unwrap());
    let t = x.transpose().value();
    assert_eq!(t.shape(), &[4, 3, 2]);
    // t[k][j][i] = x[i][j][k] = 12 i + 4 j + k
    for (flat, &v) in t.data().iter().enumerate() {
        let (k, j, i) = (flat / 6, flat / 2 % 3, flat % 2);
        assert_eq!(v, (12 * i + 4 * j + k) as f64);
    }
    assert_eq!(x.transpose().transpose().value(), x.value());
    for leaf in [Tensor::scalar(2.0), Tensor::from(vec![1.0, 2.0, 3.0])] {
        let v = tape.var(leaf.clone());
        assert_eq!(v.transpose().value(), leaf);
    }
}

#[test]
fn mean_axis_is_sum_axis_over_the_length_and_expand_dims_inserts_a_one() {
    let tape = Tape::new();
    let x = tape.var(Tensor::new(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap());
    assert_eq!(x.mean_axis(1).value().data(), &[2.0, 5.0]);
    assert_eq!(x.mean_axis(0).value().data(), &[2.5, 3.5, 4.5]);
    let g = x.mean_axis(1).sum().backward();
    assert_eq!(g.wrt(x).data(), &[1.0 / 3.0; 6]);
    for (axis, shape) in [(0, [1, 2, 3]), (1, [2, 1, 3]), (2, [2, 3, 1])] {
        let e = x.expand_dims(axis);
        assert_eq!(e.value().shape(), &shape);
        assert_eq!(e.value().data(), x.value().data());
    }
    // broadcast_to's gradient sums over the copies.
    let row = tape.var(Tensor::new(vec![1.0, 2.0], &[1, 2]).unwrap());
    let g = row.broadcast_to(&[4, 3, 2]).sum().backward();
    assert_eq!(g.wrt(row).data(), &[12.0, 12.0]);
}

// ---- summation --------------------------------------------------------------------------

#[test]
fn sum_is_pairwise_and_as_accurate_as_numpy() {
    let n = 1_000_000usize;
    let tape = Tape::new();
    let got = tape.var(Tensor::full(&[n], 0.1)).sum().value().item();

    // The exact sum of n copies of fl(0.1) = 0x1999999999999A * 2^-56, rounded once.
    let mantissa: u64 = 0x19_9999_9999_999A;
    let scale = 2f64.powi(-56);
    assert_eq!(mantissa as f64 * scale, 0.1);
    let exact = (u128::from(mantissa) * n as u128) as f64 * scale;
    assert_eq!(exact, 100000.0);
    let rel = |s: f64| (s - exact).abs() / exact;

    // np.sum(np.full(10**6, 0.1)) with numpy 2.4.6: the same blocking, the same bits.
    assert_eq!(got, 100000.00000000003, "np.sum gives 100000.00000000003");
    assert!(rel(got) < 1e-15, "pairwise error {:e}", rel(got));

    // A left-to-right sum drifts far outside that bound, so the bound means something.
    let naive = (0..n).fold(0.0, |acc, _| acc + 0.1);
    assert_eq!(naive, 100000.00000133288);
    assert!(rel(naive) > 1000.0 * rel(got));
}

#[test]
fn sum_axis_over_the_last_axis_is_pairwise_like_sum() {
    let values: Vec<f64> = (0..1000)
        .map(|i| ((i * 7919) % 1013) as f64 * 0.1 + 1e-3)
        .collect();
    let tape = Tape::new();
    let x = tape.constant(Tensor::new(values.clone(), &[1, 1000]).unwrap());
    let by_axis = x.sum_axis(1).value().item();
    let whole = x.sum().value().item();
    assert_eq!(by_axis.to_bits(), whole.to_bits());
    assert_eq!(whole, tapegrad::pairwise_sum(&values));
}

// ---- gradients of leaves ------------------------------------------------------------------

#[test]
fn wrt_on_unused_var_gives_zeros_of_its_shape() {
    let tape = Tape::new();
    let unused = tape.var(Tensor::new(vec![5.0; 6], &[2, 3]).unwrap());
    let x = tape.var(Tensor::from(vec![1.0, 2.0]));
    let g = (x * x).sum().backward();
    assert_eq!(g.wrt(unused), &Tensor::zeros(&[2, 3]));
    assert_eq!(g.wrt(x).data(), &[2.0, 4.0]);
}

#[test]
fn a_sweep_that_panicked_leaves_nothing_behind_for_the_next() {
    let tape = Tape::new();
    let x = tape.var(Tensor::from(vec![1.0, 2.0]));
    let a = x * 3.0;
    // A custom op whose backward returns no gradient at all: the engine panics mid-sweep,
    // after `a` has already received its gradient from `b + a`.
    let b = tape.custom("bad", &[a], |v| v[0].clone(), |_, _, _| vec![]);
    let message = common::panic_message(|| (b + a).sum().backward());
    assert!(message.contains("bad"), "{message}");
    let g = a.sum().backward();
    assert_eq!(g.wrt(x).data(), &[3.0, 3.0]);
}

/// A sweep that leaves a gradient in a slot (here the seed of a loss with only
/// constants behind it, which nobody takes) does not leak it into the next sweep, on
/// the same recording or after `clear`, for a number and for a tensor: the gradients
/// are those of a fresh tape.
#[test]
fn a_slot_left_by_one_sweep_is_not_read_by_the_next() {
    for shape in [&[][..], &[3][..]] {
        let mut tape = Tape::new();
        let c = tape.constant(Tensor::full(shape, 2.0));
        let _x = tape.var(Tensor::full(shape, 3.0));
        let stuck = c * c; // node 2: untracked, its seed stays in its slot
        let g = stuck.backward_with(Tensor::full(shape, 1.0));
        assert_eq!(g.wrt(_x).data(), Tensor::zeros(shape).data());
        tape.clear();
        let x = tape.var(Tensor::full(shape, 3.0));
        let c = tape.constant(Tensor::full(shape, 2.0));
        let y = x * c; // node 2 again, tracked now
        let g = (y * 5.0).sum().backward();
        assert_eq!(
            g.wrt(x).data(),
            Tensor::full(shape, 10.0).data(),
            "{shape:?}"
        );
        // and on the same recording, from another root
        let g = (y * 7.0).sum().backward();
        assert_eq!(
            g.wrt(x).data(),
            Tensor::full(shape, 14.0).data(),
            "{shape:?}"
        );
    }
}

/// A rank-0 var reached both by rank-0 ops and through ops on tensors (a reshape to
/// one element and back): its gradient sums both.
#[test]
fn a_rank_0_var_reached_through_tensors_and_numbers_sums_both() {
    let tape = Tape::new();
    let x = tape.var(Tensor::scalar(1.5));
    let through = x.reshape(&[1]).reshape(&[]);
    let z = x * 2.0 + through * through; // 2x + x^2
    let g = z.backward();
    assert_eq!(g.wrt(x).item(), 2.0 + 2.0 * 1.5);
    assert_eq!(z.value().item(), 3.0 + 2.25);
}

/// logsumexp near 0 keeps its relative precision (as scipy's): ln(1 + e^-30) is
/// 9.357622968839737e-14, and softplus(-30) agrees with it.
#[test]
fn logsumexp_axis_near_zero_keeps_its_relative_precision() {
    let tape = Tape::new();
    let x = tape.var(Tensor::from(vec![0.0, -30.0]));
    let lse = x.logsumexp_axis(0).value().item();
    let want = 9.357622968839737e-14; // scipy.special.logsumexp([0, -30])
    assert!((lse - want).abs() <= 4.0 * f64::EPSILON * want, "{lse:e}");
    let softplus = tape.var(Tensor::scalar(-30.0)).softplus().value().item();
    assert!(
        (lse - softplus).abs() <= 4.0 * f64::EPSILON * want,
        "{lse:e} vs {softplus:e}"
    );
}

/// A lane holding +inf or NaN (or only -inf) is NaN under softmax and log_softmax, as
/// scipy's and JAX's; other lanes are untouched.
#[test]
fn softmax_of_a_lane_with_inf_or_nan_is_nan() {
    let tape = Tape::new();
    let inf = f64::INFINITY;
    let x = tape
        .var(Tensor::new(vec![inf, 1.0, f64::NAN, 0.0, -inf, -inf, 0.0, 0.0], &[4, 2]).unwrap());
    for y in [x.softmax(1), x.log_softmax(1)] {
        let v = y.value();
        assert!(v.data()[..6].iter().all(|v| v.is_nan()), "{v:?}");
        assert!(v.data()[6..].iter().all(|v| !v.is_nan()), "{v:?}");
    }
}
