//! Pictures of the graph: Graphviz DOT output and `Display for Tape`.
//!
//! [`Var::to_dot`] draws the part of the tape that a var depends on, one DOT node per
//! tape node and one edge per input, so a loss can be looked at with
//! `dot -Tsvg loss.dot -o loss.svg`. `Display for Tape` prints every node as one row of
//! a table, for a quick look in a terminal.

use crate::fusion;
use crate::tape::{Gradients, Nodes, Tape, Var, View, value_of};
use crate::tensor::{Tensor, write_preview, write_preview_of};
use std::fmt::{self, Write};

/// Values with at most this many elements are shown in full; longer ones as a preview of
/// their first elements and their length.
const SHOWN: usize = 4;

impl Var<'_> {
    /// The graph that computes this var, in Graphviz DOT.
    ///
    /// Every tape node this var depends on (found by walking inputs back from it) becomes
    /// one DOT node, named `n<index>` and emitted in tape order, whose label gives its
    /// index, op name, shape and value (in full up to 4 elements, else the first 4 and
    /// the length); every input of such a node becomes one edge `n<input> -> n<node>`
    /// (labelled with the operand's position when the op has several). Leaves made with
    /// [`Tape::var`] are drawn as blue ellipses, constants as grey boxes, ops as rounded
    /// boxes, and this var with a double border.
    ///
    /// With `grads` (from a `backward` of this tape), each `Tape::var` leaf's label also
    /// shows its gradient.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::new();
    /// let x = tape.var(Tensor::from(vec![1.0, 2.0]));
    /// let unused = tape.constant(Tensor::scalar(7.0));
    /// let loss = (x * x).sum();
    /// let grads = loss.backward();
    /// let dot = loss.to_dot(Some(&grads));
    /// assert!(dot.starts_with("digraph tapegrad {"));
    /// assert!(dot.contains("n0 -> n2")); // x feeds the mul twice
    /// assert!(dot.contains("grad [2, 4]"));
    /// assert!(!dot.contains("n1 [")); // the unused constant is not drawn
    /// # let _ = unused;
    /// ```
    pub fn to_dot(&self, grads: Option<&Gradients>) -> String {
        let nodes = self.tape.nodes.borrow();
        let reached = reached_from(&nodes, self.index);
        let mut out = String::new();
        out.push_str("digraph tapegrad {\n");
        out.push_str("  node [fontname=\"monospace\", fontsize=10];\n");
        out.push_str("  edge [fontname=\"monospace\", fontsize=9];\n");
        // (`reached` has `self.index + 1` entries)
        for (i, _) in reached.iter().enumerate().filter(|(_, r)| **r) {
            let grad = match grads {
                Some(g) if nodes.is_var(i) => g.leaf(self.tape, i),
                _ => None,
            };
            let label = escape(&node_label(&nodes, i, &node_preview(&nodes, i), grad));
            let style = match (nodes.is_leaf(i), nodes[i].tracked) {
                (true, true) => "shape=ellipse, style=filled, fillcolor=\"#cfe2ff\"",
                (true, false) => "shape=box, style=filled, fillcolor=\"#e9ecef\"",
                (false, _) => "shape=box, style=rounded",
            };
            let root = if i == self.index {
                ", peripheries=2"
            } else {
                ""
            };
            // Writing to a String cannot fail.
            let _ = writeln!(out, "  n{i} [label=\"{label}\", {style}{root}];");
        }
        for (i, _) in reached.iter().enumerate().filter(|(_, r)| **r) {
            let several = nodes.inputs(i).len() > 1;
            for (position, &j) in nodes.inputs(i).iter().enumerate() {
                if several {
                    let _ = writeln!(out, "  n{j} -> n{i} [label=\"{position}\"];");
                } else {
                    let _ = writeln!(out, "  n{j} -> n{i};");
                }
            }
        }
        out.push_str("}\n");
        out
    }
}

/// `reached[i]`: whether node `i` is `root` or an input of a reached node. Iterative (an
/// explicit stack), so a long chain of ops cannot overflow the call stack.
fn reached_from(nodes: &Nodes, root: usize) -> Vec<bool> {
    let mut reached = vec![false; root + 1];
    let mut stack = vec![root];
    while let Some(i) = stack.pop() {
        if reached[i] {
            continue;
        }
        reached[i] = true;
        stack.extend(nodes.inputs(i).iter().copied().filter(|&j| !reached[j]));
    }
    reached
}

/// `#3 mul` / `shape [4]` / `value [...]` (/ `grad [...]`), lines joined by `\n`.
fn node_label(nodes: &Nodes, index: usize, value: &str, grad: Option<&Tensor>) -> String {
    let mut label = format!(
        "#{index} {}\nshape {:?}\nvalue {}",
        nodes.name(index),
        nodes.shape(index),
        value
    );
    if let Some(g) = grad {
        let _ = write!(label, "\ngrad {}", preview(g.data()));
    }
    label
}

/// [`preview`] of node `i`'s value; of a pending node, only the elements shown are
/// computed.
fn node_preview(nodes: &Nodes, i: usize) -> String {
    match nodes.value(i) {
        View::Ready(t) => preview(t.data()),
        View::Scalar(x) => preview(&[x]),
        View::Pending(p) => {
            let mut s = String::new();
            let _ = write_preview_of(&mut s, &fusion::first(nodes, i, SHOWN), p.len, SHOWN);
            s
        }
        View::Unsummed => preview(value_of(nodes, i).data()),
    }
}

/// `[a, b, c, d]`, or `[a, b, c, d, ... (n in all)]` past [`SHOWN`] elements.
fn preview(data: &[f64]) -> String {
    let mut s = String::new();
    let _ = write_preview(&mut s, data, SHOWN);
    s
}

/// The text of a DOT double-quoted string: quotes and backslashes escaped, line breaks
/// as DOT's `\n` (centered lines).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

impl fmt::Display for Tape {
    /// One row per node, in tape order: index, op, shape, inputs and the first values.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::new();
    /// let x = tape.var(Tensor::from(vec![1.0, 2.0]));
    /// let _y = (x * 3.0).sum();
    /// let table = tape.to_string();
    /// assert_eq!(table.lines().count(), 1 + 4); // header + var, constant, mul, sum
    /// assert!(table.lines().nth(3).unwrap().contains("mul"));
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes = self.nodes.borrow();
        let rows: Vec<[String; 5]> = (0..nodes.len())
            .map(|i| {
                let inputs: Vec<String> = nodes.inputs(i).iter().map(usize::to_string).collect();
                [
                    format!("#{i}"),
                    nodes.name(i).to_string(),
                    format!("{:?}", nodes.shape(i)),
                    inputs.join(", "),
                    node_preview(&nodes, i),
                ]
            })
            .collect();
        let header = ["#", "op", "shape", "inputs", "value"];
        let mut width = header.map(str::len);
        for row in &rows {
            for (w, cell) in width.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let [w0, w1, w2, w3, _] = width;
        write!(
            f,
            "{:>w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {}",
            header[0], header[1], header[2], header[3], header[4]
        )?;
        for [index, op, shape, inputs, value] in &rows {
            write!(
                f,
                "\n{index:>w0$}  {op:<w1$}  {shape:<w2$}  {inputs:<w3$}  {value}"
            )?;
        }
        Ok(())
    }
}
