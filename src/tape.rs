//! The tape (`Tape`), the handle to a value on it (`Var`), and the reverse sweep that
//! turns a loss into `Gradients`.
//!
//! The tape is a flat list of nodes in creation order. An op can only use values that
//! already exist, so creation order is a topological order, and `backward` is a single
//! loop from the loss down to the first node: no recursion, no hash map, no sort.

use crate::ops::Op;
use crate::tensor::{Shape, Tensor, broadcast_shapes, zip_into};
use smallvec::SmallVec;
use std::cell::{Ref, RefCell, RefMut};
use std::fmt;
use std::panic::Location;
use std::sync::atomic::{AtomicU64, Ordering};

/// A recording of every value computed, in creation order.
///
/// Make leaves with [`Tape::var`] (differentiated) and [`Tape::constant`] (not), combine
/// them with the ops on [`Var`], then call [`Var::backward`].
pub struct Tape {
    pub(crate) nodes: RefCell<Vec<Node>>,
    /// One gradient slot per node during a sweep; kept between sweeps (empty) so a
    /// training loop that reuses the tape reuses the slots too.
    grads: RefCell<Vec<Grad>>,
    id: u64,
}

pub(crate) struct Node {
    pub(crate) kind: Kind,
    pub(crate) inputs: SmallVec<[usize; 2]>,
    pub(crate) value: Tensor,
    /// Whether some `Tape::var` leaf reaches this node (so a gradient must flow here).
    pub(crate) tracked: bool,
}

pub(crate) enum Kind {
    Var,
    Constant,
    Op(Rule),
}

/// An op's rules: a shared static for the ops without parameters (no allocation per
/// node, nothing to drop), a box for those with (an axis, a shape, closures).
pub(crate) enum Rule {
    Static(&'static dyn Op),
    Owned(Box<dyn Op>),
}

impl std::ops::Deref for Rule {
    type Target = dyn Op;
    fn deref(&self) -> &(dyn Op + 'static) {
        match self {
            Rule::Static(op) => *op,
            Rule::Owned(op) => op.as_ref(),
        }
    }
}

impl Kind {
    pub(crate) fn name(&self) -> &str {
        match self {
            Kind::Var => "var",
            Kind::Constant => "constant",
            Kind::Op(op) => op.name(),
        }
    }
}

static NEXT_TAPE_ID: AtomicU64 = AtomicU64::new(0);

impl Default for Tape {
    fn default() -> Self {
        Tape::new()
    }
}

impl Tape {
    /// An empty tape.
    pub fn new() -> Tape {
        Tape::with_capacity(0)
    }

    /// An empty tape with room for `nodes` nodes before it reallocates.
    pub fn with_capacity(nodes: usize) -> Tape {
        Tape {
            nodes: RefCell::new(Vec::with_capacity(nodes)),
            grads: RefCell::new(Vec::new()),
            id: NEXT_TAPE_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The number of nodes recorded so far.
    pub fn len(&self) -> usize {
        self.nodes.borrow().len()
    }

    /// Whether nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forget every node, keeping the allocation, so a training loop can reuse one tape.
    /// Taking `&mut self` means no `Var` of the old recording can still be alive.
    /// Gradients of the old recording no longer answer for vars of the new one.
    pub fn clear(&mut self) {
        self.nodes.get_mut().clear();
        self.grads.get_mut().clear();
        self.id = NEXT_TAPE_ID.fetch_add(1, Ordering::Relaxed);
    }

    /// A leaf whose gradient [`Var::backward`] computes.
    ///
    /// # Panics
    /// If a [`Var::value`] guard of this tape is still alive.
    #[track_caller]
    pub fn var(&self, value: Tensor) -> Var<'_> {
        let mut nodes = self.record("var");
        self.append(&mut nodes, Kind::Var, SmallVec::new(), value, true)
    }

    /// A leaf that is not differentiated (data, labels, fixed parameters).
    ///
    /// # Panics
    /// If a [`Var::value`] guard of this tape is still alive.
    #[track_caller]
    pub fn constant(&self, value: Tensor) -> Var<'_> {
        let mut nodes = self.record("constant");
        self.append(&mut nodes, Kind::Constant, SmallVec::new(), value, false)
    }

    /// Record `op` applied to `inputs`: the forward rule runs now.
    #[track_caller]
    pub(crate) fn push(&self, op: Rule, inputs: &[Var<'_>]) -> Var<'_> {
        for v in inputs {
            if !std::ptr::eq(v.tape, self) {
                panic!(
                    "tapegrad: {}: operands belong to different tapes (at {})",
                    op.name(),
                    Location::caller()
                );
            }
        }
        let mut nodes = self.record(op.name());
        let inputs: SmallVec<[usize; 2]> = match inputs {
            [a] => SmallVec::from_buf_and_len([a.index, 0], 1),
            [a, b] => SmallVec::from_buf([a.index, b.index]),
            _ => inputs.iter().map(|v| v.index).collect(),
        };
        // Rank-0 operands of an elementwise op: its rule on plain numbers.
        let value = match scalar_operands(&nodes, &inputs).and_then(|x| op.forward_scalar(x)) {
            Some(value) => Tensor::scalar(value),
            None => match with_inputs(&nodes, &inputs, |values, _| op.forward(values)) {
                Ok(value) => value,
                Err(message) => panic!("tapegrad: {message} (at {})", Location::caller()),
            },
        };
        let tracked = inputs.iter().any(|&j| nodes[j].tracked);
        self.append(&mut nodes, Kind::Op(op), inputs, value, tracked)
    }

    /// The node list, to record a node named `what`.
    #[track_caller]
    fn record(&self, what: &str) -> RefMut<'_, Vec<Node>> {
        let Ok(nodes) = self.nodes.try_borrow_mut() else {
            panic!(
                "tapegrad: {what}: the tape is borrowed by a live `value()` guard; drop it \
                 (or clone the tensor) before adding ops (at {})",
                Location::caller()
            );
        };
        nodes
    }

    fn append(
        &self,
        nodes: &mut Vec<Node>,
        kind: Kind,
        inputs: SmallVec<[usize; 2]>,
        value: Tensor,
        tracked: bool,
    ) -> Var<'_> {
        nodes.push(Node {
            kind,
            inputs,
            value,
            tracked,
        });
        Var {
            tape: self,
            index: nodes.len() - 1,
        }
    }
}

/// A value on a tape: a cheap, `Copy` handle (the tape and an index).
///
/// Arithmetic reads like maths: `+ - * /` between two vars or a var and an `f64`,
/// unary `-`, and the methods below. Elementwise ops broadcast like numpy.
#[derive(Clone, Copy)]
pub struct Var<'t> {
    pub(crate) tape: &'t Tape,
    pub(crate) index: usize,
}

impl<'t> Var<'t> {
    /// The tape this var lives on.
    pub fn tape(&self) -> &'t Tape {
        self.tape
    }

    /// This var's position on its tape (nodes are numbered in creation order).
    pub fn index(&self) -> usize {
        self.index
    }

    /// The var's value. The guard borrows the tape: drop it (or clone the tensor)
    /// before recording more ops, or the next op panics and says so.
    pub fn value(&self) -> Ref<'t, Tensor> {
        Ref::map(self.tape.nodes.borrow(), |nodes| &nodes[self.index].value)
    }

    /// The var's shape.
    pub fn shape(&self) -> Shape {
        SmallVec::from_slice(self.value().shape())
    }

    /// Gradients of this one-element var with respect to every `Tape::var` leaf.
    ///
    /// # Panics
    /// If the var holds more than one element: use [`Var::backward_with`] with an
    /// explicit upstream gradient.
    #[track_caller]
    pub fn backward(self) -> Gradients {
        let shape = self.shape();
        if shape.iter().product::<usize>() != 1 {
            panic!(
                "tapegrad: backward: var has shape {:?} ({} elements); backward() needs a \
                 one-element loss, use backward_with(seed) to give an upstream gradient \
                 (at {})",
                shape,
                shape.iter().product::<usize>(),
                Location::caller()
            );
        }
        self.backward_with(Tensor::full(&shape, 1.0))
    }

    /// Reverse sweep seeded with `seed`, the gradient of some scalar with respect to
    /// this var (same shape as the var).
    ///
    /// Every node's gradient is dropped as soon as it has been passed to its inputs;
    /// only the gradients of `Tape::var` leaves are kept.
    ///
    /// # Panics
    /// If `seed`'s shape differs from the var's.
    #[track_caller]
    pub fn backward_with(self, seed: Tensor) -> Gradients {
        let Ok(nodes) = self.tape.nodes.try_borrow() else {
            panic!(
                "tapegrad: backward: the tape is being modified (at {})",
                Location::caller()
            );
        };
        let root = self.index;
        if seed.shape() != nodes[root].value.shape() {
            panic!(
                "tapegrad: backward_with: seed has shape {:?} but the var has shape {:?} (at {})",
                seed.shape(),
                nodes[root].value.shape(),
                Location::caller()
            );
        }
        // Fresh slots every sweep: nothing can be left over, even from a sweep that a
        // panicking custom backward unwound.
        let mut grads = self.tape.grads.borrow_mut();
        grads.clear();
        grads.resize_with(root + 1, Grad::default);
        grads[root] = Grad::from(seed);
        for i in (0..=root).rev() {
            let node = &nodes[i];
            // Leaves keep their slot (read below); a node with only constants behind it
            // has nobody to pass a gradient to.
            let Kind::Op(op) = &node.kind else { continue };
            if !node.tracked {
                continue;
            }
            let upstream = std::mem::take(&mut grads[i]);
            let inputs = node.inputs.as_slice();
            // A rank-0 node of rank-0 inputs: the op's rule on plain numbers.
            if let (Grad::Scalar(u), Some(out)) = (&upstream, node.value.as_scalar()) {
                let x = scalar_operands(&nodes, inputs);
                if let Some(local) = x.and_then(|x| op.backward_scalar(x, out, *u)) {
                    for (&j, g) in inputs.iter().zip(local) {
                        if nodes[j].tracked {
                            grads[j].add_scalar(g);
                        }
                    }
                    continue;
                }
            }
            let Some(upstream) = upstream.into_tensor() else {
                continue;
            };
            let local = with_inputs(&nodes, inputs, |values, wanted| {
                op.backward(values, &node.value, upstream, wanted)
            });
            local.each(|k, g| grads[inputs[k]].add(g));
        }
        // Keep the leaves' gradients, at exactly their shapes; leaves after the root
        // cannot be reached from it and get zeros.
        let mut leaves = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            if let Kind::Var = node.kind {
                let grad = grads
                    .get_mut(i)
                    .and_then(|g| std::mem::take(g).into_tensor());
                let shape = node.value.shape();
                let g = match grad {
                    Some(g) if g.shape() == shape => g,
                    Some(g) => g.broadcast_to(shape),
                    None => Tensor::zeros(shape),
                };
                leaves.push((i, g));
            }
        }
        grads.clear();
        Gradients {
            leaves,
            nodes: nodes.len(),
            tape: self.tape.id,
        }
    }
}

/// The operands of a one- or two-input node as plain numbers, if all are rank-0 (the
/// second is 0 for one input): what `Op::forward_scalar` and `Op::backward_scalar` take.
#[inline]
fn scalar_operands(nodes: &[Node], inputs: &[usize]) -> Option<[f64; 2]> {
    let scalar = |j: usize| nodes[j].value.as_scalar();
    match *inputs {
        [a] => scalar(a).map(|a| [a, 0.0]),
        [a, b] => scalar(a).zip(scalar(b)).map(|(a, b)| [a, b]),
        _ => None,
    }
}

/// Run `f` on the values of the given nodes and whether each is tracked (no heap for one
/// or two inputs).
fn with_inputs<R>(nodes: &[Node], inputs: &[usize], f: impl FnOnce(&[&Tensor], &[bool]) -> R) -> R {
    match *inputs {
        [a] => f(&[&nodes[a].value], &[nodes[a].tracked]),
        [a, b] => {
            let (a, b) = (&nodes[a], &nodes[b]);
            f(&[&a.value, &b.value], &[a.tracked, b.tracked])
        }
        _ => {
            let values: Vec<&Tensor> = inputs.iter().map(|&j| &nodes[j].value).collect();
            let wanted: Vec<bool> = inputs.iter().map(|&j| nodes[j].tracked).collect();
            f(&values, &wanted)
        }
    }
}

/// A node's gradient during the sweep. One that is the same for every element is a
/// plain number (it broadcasts like a rank-0 tensor), which keeps rank-0 graphs free of
/// tensor moves.
#[derive(Default)]
enum Grad {
    #[default]
    None,
    Scalar(f64),
    /// Boxed so that a slot is 16 bytes: a sweep over 10^6 rank-0 nodes writes and
    /// reads every slot, and only non-scalar gradients pay for the box.
    Full(Box<Tensor>),
}

impl Grad {
    fn from(g: Tensor) -> Grad {
        match g.as_scalar() {
            Some(x) => Grad::Scalar(x),
            None => Grad::Full(Box::new(g)),
        }
    }

    fn into_tensor(self) -> Option<Tensor> {
        match self {
            Grad::None => None,
            Grad::Scalar(x) => Some(Tensor::scalar(x)),
            Grad::Full(t) => Some(*t),
        }
    }

    /// Add one more contribution.
    fn add(&mut self, g: Tensor) {
        match g.as_scalar() {
            Some(x) => self.add_scalar(x),
            None => {
                *self = Grad::from(match std::mem::take(self).into_tensor() {
                    None => g,
                    Some(acc) => accumulate(acc, g),
                })
            }
        }
    }

    /// Add a contribution that is the same for every element.
    #[inline]
    fn add_scalar(&mut self, g: f64) {
        *self = match std::mem::take(self) {
            Grad::None => Grad::Scalar(g),
            Grad::Scalar(x) => Grad::Scalar(x + g),
            Grad::Full(acc) => Grad::from(accumulate(*acc, Tensor::scalar(g))),
        };
    }
}

/// Sum of two gradient contributions for one node (both broadcast to its shape).
fn accumulate(acc: Tensor, g: Tensor) -> Tensor {
    let shape = broadcast_shapes(acc.shape(), g.shape()).expect("gradient shapes broadcast");
    if acc.shape() == &shape[..] {
        zip_into(acc, &g, &shape, |x, y| x + y)
    } else {
        zip_into(g, &acc, &shape, |y, x| x + y)
    }
}

/// Gradients from one reverse sweep, looked up by var.
pub struct Gradients {
    /// `(node index, gradient)` of every `Tape::var` leaf, by index.
    leaves: Vec<(usize, Tensor)>,
    /// How many nodes the tape had when the sweep ran.
    nodes: usize,
    tape: u64,
}

impl Gradients {
    /// The gradient of node `index` if it is a `Tape::var` leaf of `tape`.
    pub(crate) fn leaf(&self, tape: &Tape, index: usize) -> Option<&Tensor> {
        if tape.id != self.tape {
            return None;
        }
        let at = self.leaves.binary_search_by_key(&index, |(i, _)| *i).ok()?;
        Some(&self.leaves[at].1)
    }

    /// The gradient with respect to the leaf `var` (made with [`Tape::var`]): same shape
    /// as the var, zeros where the loss does not depend on it.
    ///
    /// # Panics
    /// If `var` is a constant, an intermediate result (their gradients are freed during
    /// the sweep), was created after the sweep, or belongs to another tape.
    #[track_caller]
    pub fn wrt(&self, var: Var<'_>) -> &Tensor {
        if var.tape.id != self.tape {
            panic!(
                "tapegrad: wrt: var #{} belongs to another tape than these gradients, or the \
                 tape was cleared since they were computed (at {})",
                var.index,
                Location::caller()
            );
        }
        if let Some(g) = self.leaf(var.tape, var.index) {
            return g;
        }
        if var.index >= self.nodes {
            panic!(
                "tapegrad: wrt: var #{} was created after backward() ran; the loss cannot \
                 depend on it (at {})",
                var.index,
                Location::caller()
            );
        }
        let constant = matches!(var.tape.nodes.borrow()[var.index].kind, Kind::Constant);
        if constant {
            panic!(
                "tapegrad: wrt: var #{} is a constant (Tape::constant) and has no gradient; \
                 make it with Tape::var to differentiate it (at {})",
                var.index,
                Location::caller()
            );
        }
        panic!(
            "tapegrad: wrt: var #{} is an intermediate result; gradients are kept only for \
             leaves made with Tape::var (at {})",
            var.index,
            Location::caller()
        )
    }
}

impl fmt::Debug for Var<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes = self.tape.nodes.borrow();
        let node = &nodes[self.index];
        write!(
            f,
            "Var(#{} {} {:?})",
            self.index,
            node.kind.name(),
            node.value
        )
    }
}

impl fmt::Debug for Gradients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_map();
        for (i, g) in &self.leaves {
            list.entry(i, g);
        }
        list.finish()
    }
}
