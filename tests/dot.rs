//! The DOT writer (`Var::to_dot`) and the table (`Display for Tape`): structure checks
//! that do not depend on Graphviz, plus a render through `dot` when it is installed.

use std::collections::BTreeSet;
use tapegrad::losses::hinge;
use tapegrad::{Tape, Tensor, Var};

/// Node lines (`n<i> [label=...]`) and edges (`n<a> -> n<b>`) of a DOT text.
struct Parsed {
    nodes: Vec<usize>,
    edges: Vec<(usize, usize)>,
}

fn node_id(token: &str) -> usize {
    token
        .strip_prefix('n')
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a node id: {token:?}"))
}

fn parse(dot: &str) -> Parsed {
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    for line in dot.lines() {
        let line = line.trim();
        if let Some((from, rest)) = line.split_once(" -> ") {
            let to = rest.split([' ', ';']).next().unwrap();
            edges.push((node_id(from), node_id(to)));
        } else if line.starts_with('n') && line.contains(" [label=\"") {
            nodes.push(node_id(line.split(' ').next().unwrap()));
        }
    }
    Parsed { nodes, edges }
}

/// Whether every `{` outside double-quoted strings is closed, in order.
fn braces_balanced(dot: &str) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0i64, false, false);
    for c in dot.chars() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => {}
        }
    }
    depth == 0 && !in_string
}

/// The label text of node `i` (between `label="` and the closing quote).
fn label_of(dot: &str, i: usize) -> String {
    let start = format!("n{i} [label=\"");
    let line = dot
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(&start))
        .unwrap_or_else(|| panic!("no node line for n{i} in\n{dot}"));
    let rest = &line[start.len()..];
    let mut out = String::new();
    let mut escaped = false;
    for c in rest.chars() {
        match (escaped, c) {
            (true, c) => {
                out.push('\\');
                out.push(c);
                escaped = false;
            }
            (false, '\\') => escaped = true,
            (false, '"') => return out,
            (false, c) => out.push(c),
        }
    }
    panic!("unterminated label for n{i}");
}

/// A hinge graph with one node before it and two after it that the loss does not use.
struct HingeGraph<'t> {
    pred: Var<'t>,
    target: Var<'t>,
    unused: Var<'t>,
    loss: Var<'t>,
}

fn hinge_graph(tape: &Tape) -> HingeGraph<'_> {
    let pred = tape.var(Tensor::from(vec![0.5, 1.0, 2.0, -1.0, 0.25]));
    let unused = tape.constant(Tensor::scalar(42.0));
    let target = tape.constant(Tensor::from(vec![1.0, 1.0, -1.0, 1.0, 4.0]));
    let loss = hinge(pred, target);
    let _after = loss * 2.0; // a constant and a mul after the loss: not reached either
    HingeGraph {
        pred,
        target,
        unused,
        loss,
    }
}

#[test]
fn header_braces_and_one_node_line_per_reached_node() {
    let tape = Tape::new();
    let g = hinge_graph(&tape);
    let dot = g.loss.to_dot(None);
    assert!(dot.starts_with("digraph tapegrad {\n"), "{dot}");
    assert_eq!(dot.trim_end().lines().last(), Some("}"), "{dot}");
    assert!(braces_balanced(&dot), "{dot}");

    let parsed = parse(&dot);
    // Reached: everything up to the loss except the unused constant.
    let want: Vec<usize> = (0..=g.loss.index())
        .filter(|&i| i != g.unused.index())
        .collect();
    assert_eq!(
        parsed.nodes, want,
        "one node line per reached node, in tape order"
    );
    assert!(
        tape.len() > g.loss.index() + 1,
        "nodes after the loss exist"
    );
    let declared: BTreeSet<usize> = parsed.nodes.iter().copied().collect();
    assert_eq!(declared.len(), parsed.nodes.len(), "no node declared twice");
    for &(from, to) in &parsed.edges {
        assert!(declared.contains(&from), "edge from undeclared n{from}");
        assert!(declared.contains(&to), "edge to undeclared n{to}");
        assert!(from < to, "edges go forward in tape order");
    }
    // hinge = max(0, 1 - pred * target).mean(): mul 2, sub 2, max 2, mean 1.
    assert_eq!(parsed.edges.len(), 7, "{dot}");
    let mul = g.target.index() + 1;
    assert!(parsed.edges.contains(&(g.pred.index(), mul)));
    assert!(parsed.edges.contains(&(g.target.index(), mul)));
}

#[test]
fn labels_name_ops_shapes_values_and_mark_the_root() {
    let tape = Tape::new();
    let g = hinge_graph(&tape);
    let dot = g.loss.to_dot(None);
    for op in ["var", "constant", "mul", "sub", "max", "mean"] {
        assert!(
            dot.contains(&format!(" {op}\\n")),
            "op {op} missing from\n{dot}"
        );
    }
    let pred = label_of(&dot, g.pred.index());
    assert!(pred.starts_with("#0 var\\nshape [5]\\nvalue [0.5, 1, 2, -1, ... (5 in all)]"));
    assert!(!pred.contains("grad"), "no gradients asked for: {pred}");
    let loss = label_of(&dot, g.loss.index());
    assert!(loss.contains("mean\\nshape []\\nvalue [1.1]"), "{loss}");
    let root_lines: Vec<&str> = dot
        .lines()
        .filter(|l| l.contains("peripheries=2"))
        .collect();
    assert_eq!(root_lines.len(), 1);
    assert!(
        root_lines[0]
            .trim()
            .starts_with(&format!("n{} ", g.loss.index()))
    );
}

#[test]
fn gradients_are_shown_for_var_leaves_only() {
    let tape = Tape::new();
    let g = hinge_graph(&tape);
    let grads = g.loss.backward();
    let dot = g.loss.to_dot(Some(&grads));
    let pred = label_of(&dot, g.pred.index());
    // pred * target = [0.5, 1 (a tie), -2, -1, 1 (a tie)]: -target / 5 where < 1.
    assert!(
        pred.ends_with("\\ngrad [-0.2, 0, 0.2, -0.2, ... (5 in all)]"),
        "{pred}"
    );
    assert_eq!(
        dot.matches("\\ngrad ").count(),
        1,
        "only the var leaf: {dot}"
    );
    let target = label_of(&dot, g.target.index());
    assert!(!target.contains("grad"), "{target}");
}

#[test]
fn an_intermediate_root_draws_only_its_own_inputs() {
    let tape = Tape::new();
    let a = tape.var(Tensor::scalar(2.0));
    let b = tape.var(Tensor::scalar(3.0));
    let ab = a * b;
    let c = tape.var(Tensor::scalar(5.0));
    let _abc = ab + c;
    let parsed = parse(&ab.to_dot(None));
    assert_eq!(parsed.nodes, vec![0, 1, 2]);
    assert_eq!(parsed.edges, vec![(0, 2), (1, 2)]);
    let leaf = parse(&c.to_dot(None));
    assert_eq!(leaf.nodes, vec![c.index()]);
    assert!(leaf.edges.is_empty());
}

#[test]
fn a_var_used_twice_gives_two_labelled_edges() {
    let tape = Tape::new();
    let x = tape.var(Tensor::from(vec![1.0, 2.0]));
    let y = (x * x).sum();
    let dot = y.to_dot(None);
    assert!(dot.contains("n0 -> n1 [label=\"0\"];"), "{dot}");
    assert!(dot.contains("n0 -> n1 [label=\"1\"];"), "{dot}");
    assert!(dot.contains("n1 -> n2;"), "{dot}");
}

#[test]
fn names_with_quotes_and_backslashes_are_escaped() {
    let tape = Tape::new();
    let x = tape.var(Tensor::from(vec![1.0, 2.0]));
    let y = tape.custom(
        "say \"hi\" \\ {x}",
        &[x],
        |x| x[0].clone(),
        |_, _, up| vec![up.clone()],
    );
    let dot = y.to_dot(None);
    assert!(braces_balanced(&dot), "{dot}");
    assert!(dot.contains(r#"#1 say \"hi\" \\ {x}\n"#), "{dot}");
    assert_eq!(parse(&dot).nodes, vec![0, 1]);
}

#[test]
fn a_long_chain_does_not_overflow_the_stack() {
    let tape = Tape::with_capacity(200_001);
    let mut v = tape.var(Tensor::scalar(0.0));
    for _ in 0..100_000 {
        v = -v;
    }
    let dot = v.to_dot(None);
    let parsed = parse(&dot);
    assert_eq!(parsed.nodes.len(), 100_001);
    assert_eq!(parsed.edges.len(), 100_000);
}

#[test]
fn display_has_one_row_per_node() {
    let tape = Tape::new();
    assert_eq!(
        tape.to_string().lines().count(),
        1,
        "empty tape: the header"
    );
    let g = hinge_graph(&tape);
    let table = tape.to_string();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 1 + tape.len(), "{table}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["#", "op", "shape", "inputs", "value"]);
    for (i, row) in lines[1..].iter().enumerate() {
        assert_eq!(
            row.split_whitespace().next(),
            Some(format!("#{i}").as_str()),
            "{table}"
        );
    }
    let mul = lines[1 + g.target.index() + 1];
    assert!(mul.contains("mul") && mul.contains("[5]"), "{mul}");
    assert!(mul.contains(&format!("{}, {}", g.pred.index(), g.target.index())));
    let loss = lines[1 + g.loss.index()];
    assert!(loss.contains("mean") && loss.contains("[1.1]"), "{loss}");
}

#[test]
fn graphviz_accepts_the_output_when_installed() {
    let tape = Tape::new();
    let g = hinge_graph(&tape);
    let grads = g.loss.backward();
    let dot = g.loss.to_dot(Some(&grads));
    let child = std::process::Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("graphviz `dot` not installed: render check skipped");
        return;
    };
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(dot.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dot rejected the graph: {}\n{dot}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("<svg"));
}
