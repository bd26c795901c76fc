//! The tape (`Tape`), the handle to a value on it (`Var`), the contract every op keeps
//! with the reverse sweep (`Op`), the sweep itself, and the `Gradients` it returns.
//!
//! The tape is a flat list of nodes in creation order. An op can only use values that
//! already exist, so creation order is a topological order, and `backward` is a single
//! loop from the loss down to the first node: no recursion, no hash map, no sort.
//!
//! Ops depend on this module, never the other way round: `ops.rs` implements [`Op`] and
//! records nodes with [`Tape::push`].

use crate::fusion;
use crate::tensor::{Shape, Tensor, broadcast_shapes, zip_into};
use smallvec::SmallVec;
use std::borrow::Cow;
use std::cell::{Ref, RefCell, RefMut};
use std::fmt;
use std::panic::Location;
use std::sync::atomic::{AtomicU64, Ordering};

/// What the reverse sweep needs from an op: its name, its forward rule and its backward
/// rule. `ops.rs` holds every implementation.
pub(crate) trait Op {
    /// Name shown in panics, `Display for Tape` and DOT output.
    fn name(&self) -> &str;
    /// The output, or a message naming the op and the offending shapes or values.
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor, String>;
    /// Gradients for the inputs, in input order, given `upstream`, the gradient of the
    /// loss with respect to the output; `None` where `tracked[k]` is false.
    ///
    /// `upstream` may be *smaller* than the output (any shape that broadcasts to it): a
    /// gradient that is the same everywhere, like the one `sum` sends back, stays one
    /// number instead of N copies. Likewise the gradients returned need only broadcast
    /// to their inputs' shapes.
    fn backward(
        &self,
        inputs: &[&Tensor],
        out: &Tensor,
        upstream: Tensor,
        tracked: &[bool],
    ) -> InputGrads;
    /// The backward rule on rank-0 operands as plain numbers: the gradients of the (up
    /// to two) inputs, `upstream` already applied. Called only for the nodes that
    /// [`Tape::push_scalar`] recorded, all of elementwise ops.
    fn backward_scalar(&self, _a: f64, _b: f64, _out: f64, _upstream: f64) -> (f64, f64) {
        unreachable!("{} has no rule on plain numbers", self.name())
    }
    /// The block rules of an elementwise op, which a fused tape may defer and evaluate
    /// block by block (see `fusion.rs`); `None` for the other ops.
    fn block(&self) -> Option<&dyn Block> {
        None
    }
    /// Whether the op is cheap enough to recompute rather than store (see
    /// `PerElement::CHEAP`).
    fn cheap(&self) -> bool {
        false
    }
    /// For a reduction whose value depends on its one input only through the input's
    /// pairwise sum (`sum`, `mean`): the value from that sum and the input's length. A
    /// fused tape then sums a deferred input block by block instead of laying it out.
    fn value_of_sum(&self) -> Option<fn(f64, usize) -> f64> {
        None
    }
    /// For the same reductions: the gradient of every input element from the upstream
    /// and the input's length, so a pending input need not be laid out for `backward`
    /// (which does not read it).
    fn grad_of_sum(&self, _upstream: f64, _len: usize) -> Option<f64> {
        None
    }
}

/// What a fused region runs of an elementwise op, one block of elements at a time: the
/// same per-element rules as its `forward` and `backward`. `Sync`, because a pass over a
/// large region splits its blocks among threads (`fusion::set_threads`).
pub(crate) trait Block: Sync {
    /// The output elements of one block from the operands' elements there (`b` is
    /// `Lane::One(0.0)` for a one-input op): exactly what `forward` computes for them.
    fn forward_block(&self, a: Lane<'_>, b: Lane<'_>, out: &mut [f64]);
    /// The gradient contributions of the operands over one block, written to `g[0]` and
    /// `g[1]` where given (each as long as the block): exactly what `backward` computes
    /// for those elements, given the operands, the output `out` and the upstream `up`.
    fn backward_block(&self, a: Lane<'_>, b: Lane<'_>, out: &[f64], up: Up<'_>, g: Wanted<'_>);
    /// Whether `backward_block` reads the operands (not for add, sub, neg).
    fn reads_operands(&self) -> bool;
    /// `Some(negated)` if operand `k`'s gradient is the upstream itself (`false`) or its
    /// negation (`true`), bit for bit, whatever the upstream (add, sub, neg): a fused
    /// backward may then hand the upstream on instead of running the rule.
    fn passes(&self, k: usize) -> Option<bool>;
    /// Whether `backward_block` reads the output `out` (else `out` may be left
    /// uncomputed, and the rule is given NaN for it).
    fn reads_out(&self) -> bool;
}

/// The elements of one operand over a block of a fused region: one number for every
/// element (a rank-0 or one-element operand), or one per element.
#[derive(Clone, Copy)]
pub(crate) enum Lane<'a> {
    One(f64),
    Many(&'a [f64]),
}

/// The upstream of `backward_block` over a block: one number for every element, one
/// per element, or one per element to be read negated (an upstream handed on through a
/// negation, see [`Block::passes`]).
#[derive(Clone, Copy)]
pub(crate) enum Up<'a> {
    One(f64),
    Many(&'a [f64]),
    Negated(&'a [f64]),
}

/// Where `backward_block` writes the gradient contributions of the two operands over a
/// block (`None` where that operand's gradient is not wanted).
pub(crate) type Wanted<'a> = [Option<&'a mut [f64]>; 2];

/// The gradients an op's backward returns, one per input (no heap for up to two).
pub(crate) type InputGrads = SmallVec<[Option<Tensor>; 2]>;

/// A recording of every value computed, in creation order.
///
/// Make leaves with [`Tape::var`] (differentiated) and [`Tape::constant`] (not), combine
/// them with the ops on [`Var`], then call [`Var::backward`].
///
/// A tape belongs to one thread: it is neither `Send` nor `Sync`, because recording
/// mutates it through a shared `&Tape` (every [`Var`] holds one) without a lock, which
/// keeps each op cheap. To check gradients from several threads, give each thread its
/// own tape; [`Tensor`] and [`Gradients`] are `Send + Sync`, so inputs and results move
/// freely between threads. (A pass over a large fused chain may itself run on helper
/// threads, which finish before the call that started it returns: see
/// [`crate::set_threads`].)
pub struct Tape {
    pub(crate) nodes: RefCell<Nodes>,
    /// One gradient slot per node during a sweep; kept between sweeps (stamped with
    /// the sweep that wrote them) so a training loop that reuses the tape reuses the
    /// slots too.
    slots: RefCell<Slots>,
    /// The indices of the `Tape::var` leaves, in order (so that `backward` collects
    /// their gradients without scanning every node); the first 8 need no heap.
    vars: RefCell<SmallVec<[usize; 8]>>,
    id: u64,
    /// The element count from which an elementwise op is recorded pending and fused
    /// (`usize::MAX`: never).
    fuse_from: usize,
    /// Whether every elementwise op is fused and a pending value may feed several ops
    /// (`Tape::fused`), or only cheap ops, each pending value feeding one op
    /// (`Tape::new`: a value used twice is laid out, not recomputed for each use).
    fuse_all: bool,
}

/// The nodes of a tape. Each is a small `Copy` record ([`Node`]): a chain of rank-0 ops
/// (micrograd's workload) writes, sweeps and clears only these. What a node holds
/// beyond a plain number, one op reference and two inputs (a tensor or pending value,
/// an op with state, a longer input list) is kept in a side entry ([`Side`]).
#[derive(Default)]
pub(crate) struct Nodes {
    list: Vec<Node>,
    sides: Vec<Side>,
    /// The inputs of the ops of more than two, one after another.
    more: Vec<usize>,
}

/// One node: its op, its inputs, its value if it is a plain number, and whether a
/// gradient flows to it. No drop glue, so clearing a tape of rank-0 nodes is free.
#[derive(Clone, Copy)]
pub(crate) struct Node {
    /// The op, if it has no state (a zero-sized op needs no heap); `None` for a leaf or
    /// an op kept in the side entry.
    op: Option<&'static dyn Op>,
    /// The inputs, `arity` of them; for more than two, where they start in
    /// `Nodes::more` and how many. (`u32`, for a smaller node: a tape holds fewer than
    /// 2^32 nodes.)
    inputs: [u32; 2],
    /// The value, if `inline` (a rank-0 value laid out).
    scalar: f64,
    /// The side entry's index in `Nodes::sides`, or `NO_SIDE`.
    side: u32,
    /// How many inputs (`MANY`: more than two).
    arity: u8,
    /// Whether the value is `scalar` (else it is in the side entry).
    inline: bool,
    /// Whether `Tape::push_scalar` recorded it: its op is elementwise, held in `op`, and
    /// its inputs are plain numbers (`inline`), so the sweep runs `Op::backward_scalar`.
    rule: bool,
    /// Whether some `Tape::var` leaf reaches this node (so a gradient must flow here).
    pub(crate) tracked: bool,
}

const NO_SIDE: u32 = u32::MAX;
/// `Node::arity` of a node whose inputs are in `Nodes::more`.
const MANY: u8 = u8::MAX;

/// A node's inputs, read as a slice of indices.
pub(crate) enum Inputs<'a> {
    /// Up to two (the count), from the node itself.
    Inline([usize; 2], u8),
    Many(&'a [usize]),
}

impl std::ops::Deref for Inputs<'_> {
    type Target = [usize];
    #[inline]
    fn deref(&self) -> &[usize] {
        match self {
            Inputs::Inline(inputs, n) => &inputs[..*n as usize],
            Inputs::Many(inputs) => inputs,
        }
    }
}

/// What a node holds that does not fit in a [`Node`].
struct Side {
    /// The value, unless it is a plain number in the node (never `Value::Scalar`).
    value: Option<Value>,
    /// An op with state.
    op: Option<Box<dyn Op>>,
}

/// An op as a node keeps it: a `'static` reference for an op without state (a box of
/// a zero-sized type, which allocates nothing and which leaking frees nothing), else
/// its box.
pub(crate) enum Held {
    Static(&'static dyn Op),
    Boxed(Box<dyn Op>),
}

impl Held {
    /// Hold `op`.
    #[inline]
    pub(crate) fn of<O: Op + 'static>(op: O) -> Held {
        match without_state(op) {
            Ok(op) => Held::Static(op),
            Err(op) => Held::Boxed(Box::new(op)),
        }
    }

    fn get(&self) -> &dyn Op {
        match self {
            Held::Static(op) => *op,
            Held::Boxed(op) => &**op,
        }
    }
}

/// `x` as a `'static` reference if its type is zero-sized (an op without state): a box
/// of a zero-sized type allocates nothing, and leaking it frees nothing. Anything else
/// is given back.
#[inline(always)]
pub(crate) fn without_state<T: 'static>(x: T) -> Result<&'static T, T> {
    match std::mem::size_of::<T>() {
        0 => Ok(Box::leak(Box::new(x))),
        _ => Err(x),
    }
}

/// A node's value as it is kept: a plain number if it is rank-0 and laid out.
pub(crate) enum Value {
    /// A rank-0 value, as a plain number: a chain of rank-0 ops (micrograd's workload)
    /// records and sweeps these without building a tensor per node.
    Scalar(f64),
    Ready(Tensor),
    /// An elementwise op on a fused tape: only its shape until something needs the
    /// elements (see `fusion.rs`).
    Pending(Box<Pending>),
    /// `sum` or `mean` (rank-0) of a pending node, not yet summed: computed when
    /// something needs it, or by `backward` from this node in the same pass as the
    /// gradients (see `fusion::backward`).
    Unsummed,
}

/// A node's value as read: [`Value`] borrowed from the node or its side entry.
#[derive(Clone, Copy)]
pub(crate) enum View<'a> {
    Scalar(f64),
    Ready(&'a Tensor),
    Pending(&'a Pending),
    Unsummed,
}

impl Value {
    /// A laid-out value: a plain number if it is rank-0.
    fn of(t: Tensor) -> Value {
        match t.as_scalar() {
            Some(x) => Value::Scalar(x),
            None => Value::Ready(t),
        }
    }
}

/// What a pending node knows before its elements are computed.
pub(crate) struct Pending {
    pub(crate) shape: Shape,
    /// The element count (at least 2).
    pub(crate) len: usize,
    /// At least the number of pending nodes in this one's cone.
    pub(crate) size: usize,
    /// How many ops use it so far.
    pub(crate) uses: u32,
}

impl std::ops::Index<usize> for Nodes {
    type Output = Node;
    #[inline]
    fn index(&self, j: usize) -> &Node {
        &self.list[j]
    }
}

impl Nodes {
    /// How many nodes there are.
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// Forget every node, keeping the allocations.
    fn clear(&mut self) {
        self.list.clear();
        self.sides.clear();
        self.more.clear();
    }

    /// Append a node (`op` `None` for a leaf) and return its index.
    #[inline]
    fn push(&mut self, op: Option<Held>, inputs: &[usize], value: Value, tracked: bool) -> usize {
        let (op, side_op) = match op {
            Some(Held::Static(op)) => (Some(op), None),
            Some(Held::Boxed(op)) => (None, Some(op)),
            None => (None, None),
        };
        let index = self.next_index();
        // (inputs are earlier nodes: below `index`, so they fit in a u32)
        let (arity, inputs) = match *inputs {
            [] => (0, [0; 2]),
            [a] => (1, [a as u32, 0]),
            [a, b] => (2, [a as u32, b as u32]),
            _ => {
                let start = u32::try_from(self.more.len()).ok();
                let start = start
                    .expect("tapegrad: a tape holds at most 2^32 inputs of ops of more than two");
                self.more.extend_from_slice(inputs);
                (MANY, [start, inputs.len() as u32])
            }
        };
        let (scalar, side_value) = match value {
            Value::Scalar(x) => (x, None),
            value => (0.0, Some(value)),
        };
        let inline = side_value.is_none();
        let side = match (side_value, side_op) {
            (None, None) => NO_SIDE,
            (value, op) => self.push_side(Side { value, op }),
        };
        if self.list.len() == self.list.capacity() {
            self.make_room();
        }
        self.list.push(Node {
            op,
            inputs,
            scalar,
            side,
            arity,
            inline,
            rule: false,
            tracked,
        });
        index
    }

    /// Room for at least one more node: 16 at first (a small graph's nodes in one
    /// allocation), then twice as many. Out of line, so that `push_scalar`'s fast path
    /// calls nothing.
    #[cold]
    #[inline(never)]
    fn make_room(&mut self) {
        self.list.reserve(16.max(self.list.len()));
    }

    /// The index of the next node, checked to fit in a `u32` (with room for one more).
    #[inline]
    fn next_index(&self) -> usize {
        let index = self.list.len();
        if index >= u32::MAX as usize {
            panic!("tapegrad: a tape holds at most 2^32 - 1 nodes; clear it or start a new one");
        }
        index
    }

    /// Append a side entry and return its index.
    fn push_side(&mut self, side: Side) -> u32 {
        if self.sides.capacity() == 0 {
            // (a small graph's side entries in one allocation)
            self.sides.reserve(16);
        }
        let index = u32::try_from(self.sides.len())
            .ok()
            .filter(|&s| s != NO_SIDE);
        let index =
            index.expect("tapegrad: a tape holds at most 2^32 - 1 nodes that are not rank-0");
        self.sides.push(side);
        index
    }

    fn side(&self, j: usize) -> Option<&Side> {
        match self.list[j].side {
            NO_SIDE => None,
            s => Some(&self.sides[s as usize]),
        }
    }

    /// Node `j`'s inputs.
    #[inline]
    pub(crate) fn inputs(&self, j: usize) -> Inputs<'_> {
        let node = &self.list[j];
        let [a, b] = node.inputs.map(|k| k as usize);
        match node.arity {
            MANY => Inputs::Many(&self.more[a..a + b]),
            n => Inputs::Inline([a, b], n),
        }
    }

    /// Node `j`'s value.
    #[inline]
    pub(crate) fn value(&self, j: usize) -> View<'_> {
        let node = &self.list[j];
        if node.inline {
            return View::Scalar(node.scalar);
        }
        match self.sides[node.side as usize].value {
            Some(Value::Ready(ref t)) => View::Ready(t),
            Some(Value::Pending(ref p)) => View::Pending(p),
            Some(Value::Unsummed) => View::Unsummed,
            Some(Value::Scalar(_)) | None => unreachable!("a value is kept in its node"),
        }
    }

    /// Replace node `j`'s value.
    pub(crate) fn set_value(&mut self, j: usize, value: Value) {
        let node = &mut self.list[j];
        match value {
            Value::Scalar(x) => {
                (node.scalar, node.inline) = (x, true);
                if node.side != NO_SIDE {
                    self.sides[node.side as usize].value = None;
                }
            }
            value => {
                node.inline = false;
                match node.side {
                    NO_SIDE => {
                        let side = Side {
                            value: Some(value),
                            op: None,
                        };
                        self.list[j].side = self.push_side(side);
                    }
                    s => self.sides[s as usize].value = Some(value),
                }
            }
        }
    }

    /// What node `j` knows while it is pending.
    pub(crate) fn pending_mut(&mut self, j: usize) -> Option<&mut Pending> {
        let node = &self.list[j];
        if node.inline {
            return None;
        }
        match &mut self.sides[node.side as usize].value {
            Some(Value::Pending(p)) => Some(&mut **p),
            _ => None,
        }
    }

    /// The op of node `j`; `None` for a leaf.
    #[inline]
    pub(crate) fn op(&self, j: usize) -> Option<&dyn Op> {
        match self.list[j].op {
            Some(op) => Some(op),
            None => self.side(j).and_then(|s| s.op.as_deref()),
        }
    }

    /// The value of node `j` as a tensor; only for a node that holds one (not a plain
    /// number, nor pending or unsummed).
    pub(crate) fn ready(&self, j: usize) -> &Tensor {
        match self.value(j) {
            View::Ready(t) => t,
            _ => unreachable!("a node that holds no tensor was read as one"),
        }
    }

    pub(crate) fn is_pending(&self, j: usize) -> bool {
        matches!(self.value(j), View::Pending(_))
    }

    pub(crate) fn shape(&self, j: usize) -> &[usize] {
        match self.value(j) {
            View::Ready(t) => t.shape(),
            View::Pending(p) => &p.shape,
            View::Scalar(_) | View::Unsummed => &[],
        }
    }

    /// The element count of node `j`'s value.
    pub(crate) fn numel(&self, j: usize) -> usize {
        match self.value(j) {
            View::Ready(t) => t.len(),
            View::Pending(p) => p.len,
            View::Scalar(_) | View::Unsummed => 1,
        }
    }

    /// `var`, `constant`, or the op's name.
    pub(crate) fn name(&self, j: usize) -> &str {
        match self.op(j) {
            Some(op) => op.name(),
            None if self.list[j].tracked => "var",
            None => "constant",
        }
    }

    /// Whether node `j` is a leaf (`Tape::var` or `Tape::constant`).
    pub(crate) fn is_leaf(&self, j: usize) -> bool {
        self.op(j).is_none()
    }

    /// Whether node `j` is a `Tape::var` leaf.
    pub(crate) fn is_var(&self, j: usize) -> bool {
        self.is_leaf(j) && self.list[j].tracked
    }
}

/// Node `j`'s value, computed (not kept) if it is pending.
#[inline]
pub(crate) fn value_of(nodes: &Nodes, j: usize) -> Cow<'_, Tensor> {
    match nodes.value(j) {
        View::Ready(t) => Cow::Borrowed(t),
        View::Scalar(x) => Cow::Owned(Tensor::scalar(x)),
        View::Pending(_) | View::Unsummed => Cow::Owned(computed(nodes, j)),
    }
}

/// The value of the pending or unsummed node `j`, computed.
#[inline(never)]
fn computed(nodes: &Nodes, j: usize) -> Tensor {
    match nodes.value(j) {
        View::Pending(_) => fusion::evaluate(nodes, j),
        View::Unsummed => Tensor::scalar(unsummed_value(nodes, j)),
        View::Ready(t) => t.clone(),
        View::Scalar(x) => Tensor::scalar(x),
    }
}

/// Lay out node `j`'s value and keep it, if it is pending or unsummed. The whole cone
/// of a pending value shorter than `keep_below` elements (see [`Tape::keeps_below`]) is
/// laid out first, each op computed whole as the unfused engine computes it, so the
/// backward finds those values and recomputes none of them.
#[inline]
pub(crate) fn lay_out(nodes: &mut Nodes, j: usize, keep_below: usize) {
    if let View::Pending(_) | View::Unsummed = nodes.value(j) {
        lay_out_now(nodes, j, keep_below);
    }
}

/// [`lay_out`] of a pending or unsummed node (out of line: the ops that record tensors
/// call `lay_out` on every operand, nearly always laid out already).
#[inline(never)]
fn lay_out_now(nodes: &mut Nodes, j: usize, keep_below: usize) {
    let root = match nodes.value(j) {
        View::Unsummed => nodes.inputs(j)[0],
        _ => j,
    };
    if let View::Pending(p) = nodes.value(root)
        && p.len < keep_below
    {
        lay_out_cone(nodes, root);
    }
    if let View::Pending(_) | View::Unsummed = nodes.value(j) {
        let value = Value::of(computed(nodes, j));
        nodes.set_value(j, value);
    }
}

/// Lay out every pending node of `root`'s cone, in ascending order, each by its op's
/// `forward` on its laid-out operands.
#[cold]
fn lay_out_cone(nodes: &mut Nodes, root: usize) {
    for k in fusion::cone(nodes, root) {
        let op = nodes.op(k).expect("a pending node is an op");
        let forward = match *nodes.inputs(k) {
            [a] => op.forward(&[&value_of(nodes, a)]),
            [a, b] => op.forward(&[&value_of(nodes, a), &value_of(nodes, b)]),
            _ => unreachable!("a pending op takes one or two inputs"),
        };
        let value = forward.expect("the operands of a pending op fit it");
        nodes.set_value(k, Value::of(value));
    }
}

/// The value of the unsummed node `j` (`sum` or `mean` of one input): the input's
/// pairwise sum, block by block if it is still pending, given to the op's
/// `value_of_sum`, which is what its `forward` computes from the laid-out input.
fn unsummed_value(nodes: &Nodes, j: usize) -> f64 {
    let a = nodes.inputs(j)[0];
    let op = nodes.op(j).expect("an unsummed node is an op");
    let value_of_sum = op.value_of_sum().expect("an unsummed node sums");
    let sum = match nodes.value(a) {
        View::Pending(_) => fusion::sum(nodes, a),
        View::Ready(t) => crate::tensor::pairwise_sum(t.data()),
        View::Scalar(_) | View::Unsummed => unreachable!("the input of a sum was pending"),
    };
    value_of_sum(sum, nodes.numel(a))
}

static NEXT_TAPE_ID: AtomicU64 = AtomicU64::new(0);

/// From how many elements [`Tape::new`] fuses cheap ops: below it, computing each op
/// whole is faster than a fused pass's per-block work (the fused and unfused hinge,
/// `backward` first, cross near 2.5 x 10^4 elements on the machine of the README's table).
const FUSE_FROM: usize = 1 << 15;

/// Below how many elements [`Tape::new`] lays out the whole cone of a pending value
/// that something other than `backward` needs (`value()`, an op that does not fuse, a
/// second use): the backward would recompute the cone, and while its arrays stay in
/// cache, keeping them costs less (the hinge read before `backward` is faster unfused
/// up to about 2.8 x 10^5 elements on that machine).
const KEEP_BELOW: usize = 1 << 18;

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
            nodes: RefCell::new(Nodes {
                list: Vec::with_capacity(nodes),
                ..Nodes::default()
            }),
            slots: RefCell::new(Slots::default()),
            vars: RefCell::new(SmallVec::new()),
            id: NEXT_TAPE_ID.fetch_add(1, Ordering::Relaxed),
            fuse_from: FUSE_FROM,
            fuse_all: false,
        }
    }

    /// An empty tape that fuses every chain of elementwise ops on tensors of two or more
    /// elements, whatever their size and their ops: the least memory (see
    /// [Fusion](crate#fusion)). [`Tape::new`] fuses only cheap ops from 2^15 elements,
    /// where fusing is also faster.
    pub fn fused() -> Tape {
        Tape {
            fuse_from: 2,
            fuse_all: true,
            ..Tape::new()
        }
    }

    /// An empty tape that computes every op as soon as it is recorded, one whole array
    /// at a time, instead of fusing chains of elementwise ops. Values and gradients are
    /// the same to the bit either way; this is the reference the fused engine is tested
    /// against, and a way to rule fusion out.
    pub fn unfused() -> Tape {
        Tape {
            fuse_from: usize::MAX,
            ..Tape::new()
        }
    }

    /// Below how many elements laying out a pending value lays out and keeps its whole
    /// cone: [`KEEP_BELOW`] on a tape that fuses only cheap ops (`Tape::new`), none on
    /// [`Tape::fused`], which keeps the least.
    fn keeps_below(&self) -> usize {
        if self.fuse_all { 0 } else { KEEP_BELOW }
    }

    /// The element count from which this tape fuses elementwise ops: 2^15 for
    /// [`Tape::new`], 2 for [`Tape::fused`], `None` for [`Tape::unfused`].
    pub fn fuses_from(&self) -> Option<usize> {
        (self.fuse_from != usize::MAX).then_some(self.fuse_from)
    }

    /// The number of nodes recorded so far.
    #[track_caller]
    pub fn len(&self) -> usize {
        self.read("len").len()
    }

    /// Whether nothing has been recorded.
    #[track_caller]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forget every node, keeping the allocation, so a training loop can reuse one tape.
    /// Taking `&mut self` means no `Var` of the old recording can still be alive.
    /// Gradients of the old recording no longer answer for vars of the new one.
    pub fn clear(&mut self) {
        self.nodes.get_mut().clear();
        // (tensors a panicking sweep left in the slots)
        self.slots.get_mut().drop_tensors();
        self.vars.get_mut().clear();
        self.id = NEXT_TAPE_ID.fetch_add(1, Ordering::Relaxed);
    }

    /// A leaf whose gradient [`Var::backward`] computes.
    ///
    /// # Panics
    /// If called from inside a custom op's forward or backward on this tape.
    #[track_caller]
    pub fn var(&self, value: Tensor) -> Var<'_> {
        let mut nodes = self.record("var");
        let index = nodes.push(None, &[], Value::of(value), true);
        self.vars.borrow_mut().push(index);
        Var { tape: self, index }
    }

    /// A leaf that is not differentiated (data, labels, fixed parameters).
    ///
    /// # Panics
    /// If called from inside a custom op's forward or backward on this tape.
    #[track_caller]
    pub fn constant(&self, value: Tensor) -> Var<'_> {
        let index = self
            .record("constant")
            .push(None, &[], Value::of(value), false);
        Var { tape: self, index }
    }

    /// Record `op` applied to `inputs`: the forward rule runs now, or, for an
    /// elementwise op on a fused tape, when something needs the value.
    #[track_caller]
    pub(crate) fn push<O: Op + 'static>(&self, op: O, inputs: &[Var<'_>]) -> Var<'_> {
        self.push_held(Held::of(op), inputs)
    }

    #[track_caller]
    pub(crate) fn push_held(&self, op: Held, inputs: &[Var<'_>]) -> Var<'_> {
        for v in inputs {
            if !std::ptr::eq(v.tape, self) {
                panic!(
                    "tapegrad: {}: operands belong to different tapes (at {})",
                    op.get().name(),
                    Location::caller()
                );
            }
        }
        let mut nodes = match self.nodes.try_borrow_mut() {
            Ok(nodes) => nodes,
            Err(_) => busy(op.get().name()),
        };
        let inputs: SmallVec<[usize; 2]> = match inputs {
            [a] => SmallVec::from_buf_and_len([a.index, 0], 1),
            [a, b] => SmallVec::from_buf([a.index, b.index]),
            _ => inputs.iter().map(|v| v.index).collect(),
        };
        // (an elementwise op on rank-0 numbers took `Tape::push_scalar`'s path instead)
        let value = match self.forward(&mut nodes, op.get(), &inputs) {
            Ok(value) => value,
            Err(message) => panic!("tapegrad: {message} (at {})", Location::caller()),
        };
        let tracked = inputs.iter().any(|&j| nodes[j].tracked);
        let index = nodes.push(Some(op), &inputs, value, tracked);
        Var { tape: self, index }
    }

    /// Record an elementwise op without state on `inputs` (one or two vars, the first of
    /// this tape) if every input is a rank-0 number of this tape: its value is `value(a,
    /// b)` of the inputs' numbers (`b` 0 for one input), its op `op(a_tracked,
    /// b_tracked)`. `None`, recording nothing, if an input is not such a number or the
    /// tape is busy (`Tape::push` then takes the op).
    #[inline]
    pub(crate) fn push_scalar(
        &self,
        inputs: &[Var<'_>],
        value: impl FnOnce(f64, f64) -> f64,
        op: impl FnOnce(bool, bool) -> &'static dyn Op,
    ) -> Option<Var<'_>> {
        let mut nodes = self.nodes.try_borrow_mut().ok()?;
        // Room for the node first, and out of line: the path that records then calls
        // nothing, so the numbers stay in registers and fewer need saving on entry.
        if nodes.list.len() == nodes.list.capacity() {
            nodes.make_room();
            drop(nodes);
            return self.push_scalar_grown(inputs, value, op);
        }
        let scalar = |v: &Var<'_>| {
            let node = nodes.list.get(v.index)?;
            node.inline.then_some((node.scalar, node.tracked))
        };
        // (the first input is of this tape; inputs are its nodes, so below 2^32)
        let (x, tracked, inputs, arity) = match *inputs {
            [a] => scalar(&a).map(|(x, t)| ([x, 0.0], [t, false], [a.index as u32, 0], 1)),
            [a, b] if std::ptr::eq(b.tape, self) => scalar(&a)
                .zip(scalar(&b))
                .map(|((x, s), (y, t))| ([x, y], [s, t], [a.index as u32, b.index as u32], 2)),
            _ => None,
        }?;
        let scalar = value(x[0], x[1]);
        let op = op(tracked[0], tracked[1]);
        let index = nodes.next_index();
        if index >= nodes.list.capacity() {
            unreachable!("room was made above");
        }
        // (the whole node in one write: no side entry)
        nodes.list.push(Node {
            op: Some(op),
            inputs,
            scalar,
            side: NO_SIDE,
            arity,
            inline: true,
            rule: true,
            tracked: tracked[0] || tracked[1],
        });
        Some(Var { tape: self, index })
    }

    /// [`Tape::push_scalar`] once the node list has grown (out of line, see there).
    #[cold]
    #[inline(never)]
    fn push_scalar_grown(
        &self,
        inputs: &[Var<'_>],
        value: impl FnOnce(f64, f64) -> f64,
        op: impl FnOnce(bool, bool) -> &'static dyn Op,
    ) -> Option<Var<'_>> {
        self.push_scalar(inputs, value, op)
    }

    /// The value of `op` on `inputs` (not rank-0 numbers): deferred on a fused tape if
    /// the op is elementwise and its operands allow; for `sum` and `mean` of a deferred
    /// operand, unsummed until needed; otherwise computed now, deferred operands laid out.
    fn forward(&self, nodes: &mut Nodes, op: &dyn Op, inputs: &[usize]) -> Result<Value, String> {
        if self.fuse_from != usize::MAX {
            if !self.fuse_all {
                // A pending value that already feeds an op is laid out for the second.
                for (k, &j) in inputs.iter().enumerate() {
                    if let Some(p) = nodes.pending_mut(j)
                        && !inputs[..k].contains(&j)
                    {
                        p.uses += 1;
                        if p.uses > 1 {
                            lay_out(nodes, j, self.keeps_below());
                        }
                    }
                }
            }
            // (a deferred result is as long as its longest operand: no true broadcast)
            let longest = inputs.iter().map(|&j| nodes.numel(j)).max().unwrap_or(0);
            if op.block().is_some() && (self.fuse_all || op.cheap()) && longest >= self.fuse_from {
                if let Some(value) =
                    fusion::defer(nodes, inputs, self.fuse_from, self.keeps_below())
                {
                    return Ok(value);
                }
            } else if let (Some(_), &[a]) = (op.value_of_sum(), inputs)
                && nodes.is_pending(a)
            {
                // Summed when needed: by `backward` from this node, in its pass.
                return Ok(Value::Unsummed);
            }
        }
        for &j in inputs {
            lay_out(nodes, j, self.keeps_below());
        }
        // (a plain number as a rank-0 tensor, which holds it inline)
        let value = |j: usize| value_of(nodes, j);
        let forward = match *inputs {
            [a] => op.forward(&[&value(a)]),
            [a, b] => op.forward(&[&value(a), &value(b)]),
            _ => {
                let owned: Vec<Cow<'_, Tensor>> = inputs.iter().map(|&j| value(j)).collect();
                op.forward(&owned.iter().map(|v| &**v).collect::<Vec<_>>())
            }
        };
        forward.map(Value::of)
    }

    /// The node list, to record a node named `what`.
    #[track_caller]
    fn record(&self, what: &str) -> RefMut<'_, Nodes> {
        match self.nodes.try_borrow_mut() {
            Ok(nodes) => nodes,
            Err(_) => busy(what),
        }
    }

    /// The node list, to read it for `what`.
    #[track_caller]
    pub(crate) fn read(&self, what: &str) -> Ref<'_, Nodes> {
        match self.nodes.try_borrow() {
            Ok(nodes) => nodes,
            Err(_) => busy(what),
        }
    }

    /// Record an op with a hand-written forward and backward, so a manual gradient can be
    /// checked in context (by [`crate::check::gradcheck`] against finite differences, or
    /// by [`crate::check::compare`] against the same function built from tape ops).
    ///
    /// - `forward(inputs)` returns the output value.
    /// - `backward(inputs, output, upstream)` returns one gradient per input, each of
    ///   that input's shape; `upstream` has the output's shape.
    ///
    /// Both compute on the tensors they are given: neither may record on this tape or
    /// call `backward` on it (that panics, saying so).
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::new();
    /// let x = tape.var(Tensor::from(vec![1.0, 2.0]));
    /// // square, with its derivative written by hand
    /// let y = tape.custom(
    ///     "square",
    ///     &[x],
    ///     |x| Tensor::new(x[0].data().iter().map(|v| v * v).collect(), x[0].shape()).unwrap(),
    ///     |x, _out, up| {
    ///         let g = x[0].data().iter().zip(up.data()).map(|(v, u)| 2.0 * v * u).collect();
    ///         vec![Tensor::new(g, x[0].shape()).unwrap()]
    ///     },
    /// );
    /// let grads = y.sum().backward();
    /// assert_eq!(grads.wrt(x).data(), &[2.0, 4.0]);
    /// ```
    ///
    /// # Panics
    /// If the inputs belong to another tape; during `backward`, if the backward returns
    /// the wrong number of gradients or a gradient of the wrong shape.
    #[track_caller]
    pub fn custom<'t>(
        &'t self,
        name: &str,
        inputs: &[Var<'t>],
        forward: impl Fn(&[&Tensor]) -> Tensor + 'static,
        backward: impl Fn(&[&Tensor], &Tensor, &Tensor) -> Vec<Tensor> + 'static,
    ) -> Var<'t> {
        let op = Custom {
            name: name.to_string(),
            forward: Box::new(forward),
            backward: Box::new(backward),
            recorded_at: Location::caller(),
        };
        self.push(op, inputs)
    }
}

/// The panic for a tape used while it is recording or sweeping: only a custom op's own
/// forward or backward can get here.
#[track_caller]
fn busy(what: &str) -> ! {
    panic!(
        "tapegrad: {what}: the tape is busy recording an op or running backward; a custom \
         op's forward and backward must compute on the tensors they are given, not record \
         on their tape or call backward on it (at {})",
        Location::caller()
    )
}

/// A custom op's forward: the output from the inputs.
type CustomForward = Box<dyn Fn(&[&Tensor]) -> Tensor>;
/// A custom op's backward: one gradient per input from the inputs, output and upstream.
type CustomBackward = Box<dyn Fn(&[&Tensor], &Tensor, &Tensor) -> Vec<Tensor>>;

/// An op with a user-supplied forward and backward ([`Tape::custom`]).
struct Custom {
    name: String,
    forward: CustomForward,
    backward: CustomBackward,
    /// Where `Tape::custom` was called, for the messages about its backward (which runs
    /// later, inside `backward`).
    recorded_at: &'static Location<'static>,
}

impl Op for Custom {
    fn name(&self) -> &str {
        &self.name
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor, String> {
        Ok((self.forward)(x))
    }
    fn backward(&self, x: &[&Tensor], out: &Tensor, up: Tensor, tracked: &[bool]) -> InputGrads {
        let up = up.broadcast_to(out.shape());
        let grads = (self.backward)(x, out, &up);
        if grads.len() != x.len() {
            panic!(
                "tapegrad: custom op '{}': backward returned {} gradients for {} inputs (op \
                 recorded at {})",
                self.name,
                grads.len(),
                x.len(),
                self.recorded_at
            );
        }
        let checked = grads.into_iter().zip(x).zip(tracked).enumerate();
        checked
            .map(|(i, ((g, input), &want))| {
                if g.shape() != input.shape() {
                    panic!(
                        "tapegrad: custom op '{}': backward returned shape {:?} for input {i} \
                         of shape {:?} (op recorded at {})",
                        self.name,
                        g.shape(),
                        input.shape(),
                        self.recorded_at
                    );
                }
                want.then_some(g)
            })
            .collect()
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

    /// The var's value. The tensor shares its elements with the tape (an O(1) clone).
    ///
    /// On a fused tape, an elementwise result (and `sum` or `mean` of one) is computed
    /// when first asked for (here, by an op that needs it, or, for a sum, by `backward`
    /// from it) and kept from then on.
    #[track_caller]
    pub fn value(&self) -> Tensor {
        {
            let nodes = self.tape.read("value");
            match nodes.value(self.index) {
                View::Ready(t) => return t.clone(),
                View::Scalar(x) => return Tensor::scalar(x),
                _ => {}
            }
        }
        match self.tape.nodes.try_borrow_mut() {
            Ok(mut nodes) => {
                lay_out(&mut nodes, self.index, self.tape.keeps_below());
                value_of(&nodes, self.index).into_owned()
            }
            // Asked from a custom op's backward: computed, not kept.
            Err(_) => value_of(&self.tape.read("value"), self.index).into_owned(),
        }
    }

    /// The var's shape.
    #[track_caller]
    pub fn shape(&self) -> Shape {
        Shape::from_slice(self.tape.read("shape").shape(self.index))
    }

    /// Whether some [`Tape::var`] leaf reaches this var (so a gradient flows through it).
    #[track_caller]
    pub(crate) fn is_tracked(&self) -> bool {
        self.tape.read("tracked")[self.index].tracked
    }

    /// [`Var::is_tracked`] of `a` and of `b`, with one look at the tape if they share it.
    #[track_caller]
    #[inline]
    pub(crate) fn both_tracked(a: Var<'_>, b: Var<'_>) -> (bool, bool) {
        if !std::ptr::eq(a.tape, b.tape) {
            return (a.is_tracked(), b.is_tracked());
        }
        let nodes = a.tape.read("tracked");
        (nodes[a.index].tracked, nodes[b.index].tracked)
    }

    /// Gradients of this one-element var with respect to every `Tape::var` leaf.
    ///
    /// # Panics
    /// If the var holds more than one element: use [`Var::backward_with`] with an
    /// explicit seed (upstream gradient).
    #[track_caller]
    pub fn backward(self) -> Gradients {
        let shape = self.shape();
        let n = crate::tensor::numel(&shape).unwrap_or(usize::MAX);
        if n != 1 {
            panic!(
                "tapegrad: backward: var has shape {shape:?} ({n} elements); backward() needs \
                 a one-element loss, use backward_with(seed) to give an upstream gradient \
                 (at {})",
                Location::caller()
            );
        }
        self.backward_with(Tensor::full(&shape, 1.0))
    }

    /// Reverse sweep started from `seed`, the *upstream gradient* of this var: the
    /// gradient of some scalar with respect to it (same shape as the var). `backward()`
    /// is `backward_with` a seed of ones.
    ///
    /// Every node's gradient is dropped as soon as it has been passed to its inputs;
    /// only the gradients of `Tape::var` leaves are kept.
    ///
    /// # Panics
    /// If `seed`'s shape differs from the var's, or if called from inside a custom op's
    /// forward or backward on this tape.
    #[track_caller]
    pub fn backward_with(self, seed: Tensor) -> Gradients {
        let nodes = self.tape.read("backward");
        let Ok(mut slots) = self.tape.slots.try_borrow_mut() else {
            busy("backward")
        };
        let root = self.index;
        if seed.shape() != nodes.shape(root) {
            panic!(
                "tapegrad: backward_with: seed has shape {:?} but the var has shape {:?} (at {})",
                seed.shape(),
                nodes.shape(root),
                Location::caller()
            );
        }
        // Empty slots every sweep: nothing can be left over, even from a sweep that a
        // panicking custom backward unwound.
        slots.reset(root + 1);
        slots.set(root, seed);
        // Who uses each node, built when the sweep meets the first pending node.
        let mut consumers = None;
        // Unsummed nodes `(input, node)` whose gradient went to their pending input: the
        // input's region sums it in its pass, and `summed` keeps the values.
        let mut unsummed: SmallVec<[(usize, usize); 1]> = SmallVec::new();
        let mut summed: SmallVec<[(usize, f64); 1]> = SmallVec::new();
        let mut next = Some(root);
        while let Some(i) = next {
            next = i.checked_sub(1);
            let node = &nodes[i];
            // A run of rank-0 nodes of rank-0 inputs (micrograd's workload): their
            // rules on plain numbers, in a loop of their own.
            if node.rule && !matches!(slots.get(i), Slot::Full(_)) {
                next = sweep_rules(&nodes.list, &mut slots, i);
                continue;
            }
            // Leaves keep their slot (read below); a node with only constants behind it
            // has nobody to pass a gradient to.
            let Some(op) = nodes.op(i) else { continue };
            if !node.tracked {
                continue;
            }
            if nodes.is_pending(i) {
                // The top of a fused region: its whole backward in one pass, unless
                // that would change the order gradients are summed in.
                let consumers =
                    consumers.get_or_insert_with(|| fusion::Consumers::new(&nodes, root));
                if slots.is_empty(i) {
                    continue;
                }
                let want_sum = unsummed.iter().any(|&(a, _)| a == i);
                if let Some(sum) = fusion::backward(&nodes, &mut slots, consumers, i, want_sum) {
                    for &(_, j) in unsummed.iter().filter(|&&(a, _)| a == i) {
                        let value_of_sum = nodes.op(j).and_then(|op| op.value_of_sum());
                        let value_of_sum = value_of_sum.expect("a sum");
                        let sum = sum.expect("the region summed its top");
                        summed.push((j, value_of_sum(sum, nodes.numel(i))));
                    }
                    continue;
                }
            }
            let inputs = nodes.inputs(i);
            // `sum` or `mean` of a pending node: its gradient without its elements.
            if let ([a], Slot::Scalar(u)) = (&*inputs, slots.get(i)) {
                let a = *a;
                let local = op.grad_of_sum(u, nodes.numel(a));
                if let (true, Some(g)) = (nodes.is_pending(a), local) {
                    slots.put(i, Slot::Empty);
                    slots.add_scalar(a, g);
                    if matches!(nodes.value(i), View::Unsummed) {
                        unsummed.push((a, i));
                    }
                    continue;
                }
            }
            let Some(upstream) = slots.take(i) else {
                continue;
            };
            // Values of pending nodes (a region the sweep takes node by node) are
            // computed here and dropped after.
            let value = |j: usize| value_of(&nodes, j);
            let out = value(i);
            let local = match *inputs {
                // The common arities without collecting into SmallVecs.
                [a] => op.backward(&[&value(a)], &out, upstream, &[nodes[a].tracked]),
                [a, b] => {
                    let values = [&*value(a), &*value(b)];
                    let tracked = [nodes[a].tracked, nodes[b].tracked];
                    op.backward(&values, &out, upstream, &tracked)
                }
                _ => {
                    let owned: Vec<Cow<'_, Tensor>> = inputs.iter().map(|&j| value(j)).collect();
                    let values: Vec<&Tensor> = owned.iter().map(|v| &**v).collect();
                    let tracked: Vec<bool> = inputs.iter().map(|&j| nodes[j].tracked).collect();
                    op.backward(&values, &out, upstream, &tracked)
                }
            };
            for (&j, g) in inputs.iter().zip(local) {
                if let Some(g) = g {
                    slots.add(j, g);
                }
            }
        }
        // Keep the leaves' gradients, at exactly their shapes; leaves after the root
        // cannot be reached from it and get zeros.
        let vars = self.tape.vars.borrow();
        let mut leaves = Vec::with_capacity(vars.len());
        for &i in vars.iter() {
            let grad = (i <= root).then(|| slots.take(i)).flatten();
            let shape = nodes.shape(i);
            let g = match grad {
                Some(g) if g.shape() == shape => g,
                Some(g) => g.broadcast_to(shape),
                None => Tensor::zeros(shape),
            };
            leaves.push((i, g));
        }
        slots.drop_tensors();
        let count = nodes.len();
        drop(nodes);
        // Keep what the sweep summed (a custom op's backward asking for a value holds
        // no borrow past its return, so the tape is free again).
        if !summed.is_empty()
            && let Ok(mut nodes) = self.tape.nodes.try_borrow_mut()
        {
            for (j, value) in summed {
                nodes.set_value(j, Value::Scalar(value));
            }
        }
        Gradients {
            leaves,
            nodes: count,
            tape: self.tape.id,
        }
    }
}

/// The sweep over the rank-0 nodes that `Tape::push_scalar` recorded (`Node::rule`),
/// from node `from` down, while they run: each one's `Op::backward_scalar` adds to its
/// inputs' slots. Returns the next node to sweep (the first it did not take), if any.
#[inline(never)]
fn sweep_rules(nodes: &[Node], slots: &mut Slots, from: usize) -> Option<usize> {
    // (the slots' parts as locals: the rule's call cannot change them)
    let sweep = slots.sweep;
    let list = &mut slots.list[..];
    let mut i = from;
    loop {
        let node = &nodes[i];
        let (true, Some(op)) = (node.rule, node.op) else {
            return Some(i);
        };
        let s = list[i];
        match (s.sweep == sweep, s.state) {
            // (the slot stays: nothing reads a rule node's slot after this)
            (true, SCALAR) => {
                let u = s.value;
                let [a, b] = node.inputs.map(|k| k as usize);
                let (ga, gb) = match node.arity {
                    1 => op.backward_scalar(nodes[a].scalar, 0.0, node.scalar, u),
                    _ => op.backward_scalar(nodes[a].scalar, nodes[b].scalar, node.scalar, u),
                };
                if nodes[a].tracked {
                    add_number(list, sweep, a, ga);
                }
                if node.arity == 2 && nodes[b].tracked {
                    add_number(list, sweep, b, gb);
                }
            }
            (true, FULL) => return Some(i),
            // No gradient reached it.
            _ => {}
        }
        i = i.checked_sub(1)?;
    }
}

/// Add `g` to the slot `j` of `list` (in sweep `sweep`), the slot of a rank-0 node: it
/// holds a number or nothing, since only rank-0 gradients reach a rank-0 node and
/// `Slots` keeps every rank-0 gradient as a number.
#[inline(always)]
fn add_number(list: &mut [Stamped], sweep: u32, j: usize, g: f64) {
    if !list[j].add(sweep, g) {
        unreachable!("tapegrad: a gradient with elements reached a rank-0 node");
    }
}

/// A node's gradient slot during the sweep: the sum of what its consumers sent back so
/// far. One that is the same for every element is a plain number (it broadcasts like a
/// rank-0 tensor), which keeps rank-0 graphs free of tensor moves.
#[derive(Clone, Copy)]
pub(crate) enum Slot {
    Empty,
    Scalar(f64),
    /// A tensor, kept at this index of `Slots::full`.
    Full(usize),
}

/// A [`Slot`] as `Slots` keeps it, stamped with the sweep that wrote it (16 bytes).
#[derive(Clone, Copy, Default)]
struct Stamped {
    sweep: u32,
    /// `EMPTY`, `SCALAR` (`value` is the number) or `FULL` (`value`'s bits are the index).
    state: u8,
    value: f64,
}

impl Stamped {
    /// Add `g` to this slot (in sweep `sweep`) if it holds a number or nothing (then
    /// `g` itself: adding to 0 would turn -0 into +0); `false`, changing nothing, if it
    /// holds a tensor.
    #[inline(always)]
    fn add(&mut self, sweep: u32, g: f64) -> bool {
        match (self.sweep == sweep, self.state) {
            (true, SCALAR) => self.value += g,
            (true, FULL) => return false,
            _ => {
                *self = Stamped {
                    sweep,
                    state: SCALAR,
                    value: g,
                }
            }
        }
        true
    }
}

const EMPTY: u8 = 0;
const SCALAR: u8 = 1;
const FULL: u8 = 2;

/// The gradient slots of one sweep, one per node, and the tensors they hold.
///
/// The slots are kept from sweep to sweep (on this recording or the next), each stamped
/// with the sweep that wrote it: a slot that an earlier sweep wrote reads as empty. So
/// a sweep never empties the slots of the one before, even one that a panicking custom
/// backward cut short, and a sweep over 10^6 rank-0 nodes writes each slot only when a
/// gradient arrives.
#[derive(Default)]
pub(crate) struct Slots {
    list: Vec<Stamped>,
    /// The tensors of `Slot::Full` slots (`None` once taken).
    full: Vec<Option<Tensor>>,
    /// Indices of `full` whose tensor was taken, for the next `set` to reuse.
    free: Vec<usize>,
    /// The stamp of the current sweep (never 0, which no sweep writes).
    sweep: u32,
}

impl Slots {
    /// Empty slots for `n` nodes: a new stamp.
    fn reset(&mut self, n: usize) {
        self.sweep = self.sweep.wrapping_add(1);
        if self.sweep == 0 {
            // (after 2^32 - 1 sweeps, stamps come round again: forget the old ones)
            self.list.clear();
            self.sweep = 1;
        }
        if self.list.len() < n {
            self.list.resize(n, Stamped::default());
        }
        self.drop_tensors();
    }

    /// Drop the tensors the slots hold (each slot keeps its stamp: a new sweep reads it
    /// as empty).
    fn drop_tensors(&mut self) {
        self.full.clear();
        self.free.clear();
    }

    /// Node `j`'s slot.
    #[inline(always)]
    pub(crate) fn get(&self, j: usize) -> Slot {
        let s = self.list[j];
        match (s.sweep == self.sweep, s.state) {
            (true, SCALAR) => Slot::Scalar(s.value),
            (true, FULL) => Slot::Full(s.value.to_bits() as usize),
            _ => Slot::Empty,
        }
    }

    #[inline(always)]
    fn put(&mut self, j: usize, slot: Slot) {
        let (state, value) = match slot {
            Slot::Empty => (EMPTY, 0.0),
            Slot::Scalar(x) => (SCALAR, x),
            Slot::Full(k) => (FULL, f64::from_bits(k as u64)),
        };
        self.list[j] = Stamped {
            sweep: self.sweep,
            state,
            value,
        };
    }

    fn is_empty(&self, j: usize) -> bool {
        matches!(self.get(j), Slot::Empty)
    }

    /// Node `j`'s gradient, leaving its slot empty.
    pub(crate) fn take(&mut self, j: usize) -> Option<Tensor> {
        let slot = self.get(j);
        self.put(j, Slot::Empty);
        match slot {
            Slot::Empty => None,
            Slot::Scalar(x) => Some(Tensor::scalar(x)),
            Slot::Full(k) => {
                self.free.push(k);
                self.full[k].take()
            }
        }
    }

    /// Set node `j`'s gradient to `g`.
    pub(crate) fn set(&mut self, j: usize, g: Tensor) {
        let slot = match number(&g) {
            Some(x) => Slot::Scalar(x),
            None => match self.free.pop() {
                Some(k) => {
                    self.full[k] = Some(g);
                    Slot::Full(k)
                }
                None => {
                    self.full.push(Some(g));
                    Slot::Full(self.full.len() - 1)
                }
            },
        };
        self.put(j, slot);
    }

    /// Add one more contribution to node `j`'s gradient.
    pub(crate) fn add(&mut self, j: usize, g: Tensor) {
        match number(&g) {
            Some(x) => self.add_scalar(j, x),
            None => {
                let sum = match self.take(j) {
                    None => g,
                    Some(acc) => accumulate(acc, g),
                };
                self.set(j, sum);
            }
        }
    }

    /// Add a contribution that is the same for every element to node `j`'s gradient.
    #[inline(always)]
    pub(crate) fn add_scalar(&mut self, j: usize, g: f64) {
        if !self.list[j].add(self.sweep, g) {
            self.add_scalar_to_full(j, g);
        }
    }

    #[inline(never)]
    fn add_scalar_to_full(&mut self, j: usize, g: f64) {
        let acc = self.take(j).expect("a full slot holds a tensor");
        self.set(j, accumulate(acc, Tensor::scalar(g)));
    }
}

/// The element of a rank-0 gradient, whatever holds it: a slot keeps every rank-0
/// gradient as a number (which `sweep_rules` relies on).
fn number(g: &Tensor) -> Option<f64> {
    g.as_scalar()
        .or_else(|| g.shape().is_empty().then(|| g.data()[0]))
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
        let nodes = var.tape.read("wrt");
        let constant = nodes.is_leaf(var.index) && !nodes[var.index].tracked;
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
        let Ok(nodes) = self.tape.nodes.try_borrow() else {
            return write!(f, "Var(#{} on a busy tape)", self.index);
        };
        write!(
            f,
            "Var(#{} {} {:?})",
            self.index,
            nodes.name(self.index),
            value_of(&nodes, self.index)
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
