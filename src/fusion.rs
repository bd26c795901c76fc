//! Loop fusion: chains of elementwise ops evaluated block by block, forward and backward.
//!
//! On a tape that fuses ([`crate::Tape::fused`] always; [`crate::Tape::new`] for cheap
//! ops on large tensors, see the crate docs), an elementwise op whose operands are each
//! one number or as long as its output is recorded *pending* ([`defer`]): its node holds
//! the shape, not the elements. A pending node's *cone* is the pending nodes it depends
//! on through pending nodes; it is evaluated only when something needs its elements:
//!
//! - a non-elementwise op, a true broadcast, a pending operand of another shape (`[n]`
//!   into `[1, n]`), a cone past [`MAX_CONE`], or `value()` lays the node out (and keeps
//!   it; on `Tape::new` below `KEEP_BELOW` elements, its whole cone, see `lay_out`);
//!   `Display`, `to_dot` and `Debug` compute a preview or a copy, not kept;
//! - `sum` and `mean` of a pending node are recorded *unsummed* (`Value::Unsummed`):
//!   when something needs them they sum it block by block ([`sum`]), with the same
//!   pairwise blocking as [`crate::pairwise_sum`], so nothing is laid out;
//! - `backward` reaching a pending node runs the backward of its *region* (the pending
//!   nodes below it all of whose uses are in the region) in one pass ([`backward`]): per
//!   block of [`BLOCK`] elements it recomputes the values the rules read, then applies
//!   each op's per-element backward rule in reverse order, and writes only the
//!   gradients of the region's inputs. An add, sub or neg whose operand gets nothing
//!   else hands its upstream on (negated where the rule negates) instead of running
//!   its rule ([`handed_on`]). A `backward` started from an unsummed node has that pass
//!   sum the region's top too, its blocks following the pairwise recursion.
//!
//! A pass over a region of at least 2^18 elements is cut into parts where the pairwise
//! recursion splits, one per thread ([`set_threads`]), each writing its own range of
//! the gradients; the parts' sums are combined as the recursion combines them.
//!
//! Both directions run the ops' own per-element rules (`PerElement` in `ops/mod.rs`
//! through `Op::forward_block` and `Op::backward_block`), and every gradient is summed
//! in the order the unfused sweep sums it, so a fused tape gives the same values and
//! gradients as [`crate::Tape::unfused`] to the bit. Where that order could not be kept
//! (an input whose shape has the region's length but another rank, or an input that an
//! op outside the region uses between the region's first use of it and the region's
//! top), the sweep takes the region's top node alone, as the unfused engine does, and
//! fuses what lies below.

use crate::tape::{Block, Lane, Nodes, Pending, Slots, Up, Value, View, lay_out};
use crate::tensor::{
    Shape, Tensor, broadcast_shapes, buffer, data_from_vec, numel, overwritable, pairwise, sum_to,
};
use std::cell::Cell;
use std::panic::resume_unwind;
use std::sync::{Mutex, OnceLock, PoisonError};

/// Elements per block: the registers of a region of a few ops stay in L1 beside the
/// streams of its inputs (a 3-op region's values, gradients and scratch take 8 x 2 KiB;
/// at 512 elements the fused hinge's backward ran 1.5x slower at N = 10^6 and 10^7).
/// At least 128, numpy's pairwise block, so that a fused sum splits exactly where
/// `pairwise_sum` does.
pub(crate) const BLOCK: usize = 256;

/// The most pending nodes one cone may hold, counted once per path (so a shared node
/// counts once for each way to reach it). An op that would make a larger cone lays its
/// pending operands out first.
pub(crate) const MAX_CONE: usize = 32;

/// The pending value of an elementwise op on `inputs`, if it can be deferred: its
/// operands are each one element or as long as its output (no broadcast but a
/// scalar's), pending ones of its exact shape (those of another shape are laid out),
/// and the cone stays within [`MAX_CONE`] (else the pending operands are laid out; as
/// `lay_out` lays out, with the cones shorter than `keep_below`).
pub(crate) fn defer(
    nodes: &mut Nodes,
    inputs: &[usize],
    from: usize,
    keep_below: usize,
) -> Option<Value> {
    let shape: Shape = match *inputs {
        [a] => nodes.shape(a).into(),
        [a, b] => broadcast_shapes(nodes.shape(a), nodes.shape(b))?,
        _ => return None,
    };
    let len = numel(&shape)?;
    if len < from.max(2)
        || inputs
            .iter()
            .any(|&j| nodes.numel(j) != 1 && nodes.numel(j) != len)
    {
        return None;
    }
    let mut size = 1;
    for &j in inputs {
        match nodes.value(j) {
            View::Pending(p) if p.shape == shape => size += p.size,
            _ => lay_out(nodes, j, keep_below),
        }
    }
    if size > MAX_CONE {
        inputs.iter().for_each(|&j| lay_out(nodes, j, keep_below));
        size = 1;
    }
    Some(Value::Pending(Box::new(Pending {
        shape,
        len,
        size,
        uses: 0,
    })))
}

/// The pending nodes that `root` depends on through pending nodes, itself included, in
/// ascending order (a topological order).
pub(crate) fn cone(nodes: &Nodes, root: usize) -> Vec<usize> {
    let mut found: Vec<usize> = Vec::new();
    let mut stack = vec![root];
    while let Some(j) = stack.pop() {
        if found.contains(&j) || !nodes.is_pending(j) {
            continue;
        }
        found.push(j);
        stack.extend(nodes.inputs(j).iter().copied());
    }
    found.sort_unstable();
    found
}

/// Where a step of a [`Program`] reads an operand.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// A one-element operand.
    One(f64),
    /// A laid-out operand as long as the region.
    Many(&'a [f64]),
    /// The register of an earlier step.
    Register(usize),
}

/// One pending node of a region, as the evaluator runs it.
struct Step<'a> {
    node: usize,
    block: &'a dyn Block,
    operands: [Source<'a>; 2],
}

/// The forward of a region: its pending nodes in ascending order. The threads of a
/// pass share it, each running it in registers of its own ([`Program::registers`]).
pub(crate) struct Program<'a> {
    steps: Vec<Step<'a>>,
}

impl<'a> Program<'a> {
    /// The program computing the pending nodes `cone` (ascending, closed under pending
    /// operands, as [`cone`] returns them).
    pub(crate) fn new(nodes: &'a Nodes, cone: &[usize]) -> Program<'a> {
        let source = |k: usize| match cone.binary_search(&k) {
            Ok(step) => Source::Register(step),
            Err(_) => match nodes.value(k) {
                View::Scalar(x) => Source::One(x),
                _ => match nodes.ready(k).data() {
                    [x] => Source::One(*x),
                    data => Source::Many(data),
                },
            },
        };
        let steps: Vec<Step<'a>> = cone
            .iter()
            .map(|&j| {
                let op = nodes.op(j).expect("a pending node is an op");
                let inputs = nodes.inputs(j);
                let b = inputs.get(1).map_or(Source::One(0.0), |&k| source(k));
                Step {
                    node: j,
                    block: op.block().expect("a pending node's op is elementwise"),
                    operands: [source(inputs[0]), b],
                }
            })
            .collect();
        Program { steps }
    }

    /// Registers for one thread running the program: [`BLOCK`] elements per step.
    fn registers(&self) -> Vec<f64> {
        vec![0.0; self.steps.len() * BLOCK]
    }

    /// The step that computes node `j`, if the program computes it.
    fn step_of(&self, j: usize) -> Option<usize> {
        self.steps.binary_search_by_key(&j, |s| s.node).ok()
    }

    /// Compute the steps `needed` marks (every step for `None`) on the elements `lo..hi`
    /// (at most [`BLOCK`] of them), into `registers`.
    fn run(&self, registers: &mut [f64], lo: usize, hi: usize, needed: Option<&[bool]>) {
        let len = hi - lo;
        for (s, step) in self.steps.iter().enumerate() {
            if needed.is_some_and(|needed| !needed[s]) {
                continue;
            }
            let (done, rest) = registers.split_at_mut(s * BLOCK);
            let [a, b] = step.operands;
            let (a, b) = (lane(a, done, lo, hi), lane(b, done, lo, hi));
            step.block.forward_block(a, b, &mut rest[..len]);
        }
    }

    /// Operand `k` of step `s` over the block `lo..hi` last run in `registers` (a
    /// skipped step's register holds stale values).
    fn operand<'r>(
        &'r self,
        registers: &'r [f64],
        s: usize,
        k: usize,
        lo: usize,
        hi: usize,
    ) -> Lane<'r> {
        lane(self.steps[s].operands[k], registers, lo, hi)
    }
}

/// The values of step `s` over the first `len` elements of the block last run.
fn register(registers: &[f64], s: usize, len: usize) -> &[f64] {
    &registers[s * BLOCK..s * BLOCK + len]
}

/// The elements `lo..hi` of an operand, `registers` holding the earlier steps'.
fn lane<'r>(source: Source<'r>, registers: &'r [f64], lo: usize, hi: usize) -> Lane<'r> {
    match source {
        Source::One(x) => Lane::One(x),
        Source::Many(data) => Lane::Many(&data[lo..hi]),
        Source::Register(r) => Lane::Many(&registers[r * BLOCK..r * BLOCK + hi - lo]),
    }
}

/// The elements of pending node `j`, laid out (the forward of its region, block by
/// block, keeping only `j`'s values).
pub(crate) fn evaluate(nodes: &Nodes, j: usize) -> Tensor {
    debug_assert!(nodes.is_pending(j), "only a pending node is evaluated");
    let cone = cone(nodes, j);
    let program = Program::new(nodes, &cone);
    let top = cone.len() - 1;
    let n = nodes.numel(j);
    let mut v = overwritable(n);
    let parts = split(n).0;
    let jobs: Vec<(usize, &mut [f64])> =
        parts.iter().map(|p| p.0).zip(cut(&mut v, &parts)).collect();
    in_parallel(jobs, |(start, out)| {
        let mut registers = program.registers();
        for lo in (0..out.len()).step_by(BLOCK) {
            let hi = (lo + BLOCK).min(out.len());
            program.run(&mut registers, start + lo, start + hi, None);
            out[lo..hi].copy_from_slice(register(&registers, top, hi - lo));
        }
    });
    Tensor::from_parts(data_from_vec(v), nodes.shape(j).into())
}

/// The first `count` (at most [`BLOCK`]) elements of pending node `j`: one block of its
/// cone, for a preview that need not compute the rest.
pub(crate) fn first(nodes: &Nodes, j: usize, count: usize) -> Vec<f64> {
    debug_assert!(nodes.is_pending(j), "only a pending node is previewed");
    let cone = cone(nodes, j);
    let program = Program::new(nodes, &cone);
    let mut registers = program.registers();
    let count = count.min(nodes.numel(j)).min(BLOCK);
    program.run(&mut registers, 0, count, None);
    register(&registers, cone.len() - 1, count).to_vec()
}

/// `pairwise_sum` of pending node `j`'s elements without laying them out (see
/// [`pairwise_blocks`]), so the result is the same to the bit.
pub(crate) fn sum(nodes: &Nodes, j: usize) -> f64 {
    debug_assert!(
        nodes.is_pending(j),
        "only a pending node is summed block by block"
    );
    let cone = cone(nodes, j);
    let program = Program::new(nodes, &cone);
    let top = cone.len() - 1;
    let n = nodes.numel(j);
    let (parts, depth) = split(n);
    let sums = in_parallel(parts, |(start, end)| {
        let mut registers = program.registers();
        pairwise_blocks(start, end - start, &mut |lo, hi| {
            program.run(&mut registers, lo, hi, None);
            pairwise(register(&registers, top, hi - lo))
        })
    });
    0.0 + combine(n, depth, &mut sums.into_iter())
}

// ---- splitting a pass: pairwise pieces and threads --------------------------------------

/// `block(lo, hi)` on the pieces of `lo..lo + n` that the pairwise recursion of
/// `pairwise_sum` reaches at [`BLOCK`] elements or fewer, in order; returns what the
/// recursion makes of the pieces' results. When `block` returns the `pairwise` sum of
/// the piece's elements, `0.0 +` that over a whole array is `pairwise_sum` of it to the
/// bit (the recursion depends only on lengths, so any piece is summed as it is there).
fn pairwise_blocks(lo: usize, n: usize, block: &mut impl FnMut(usize, usize) -> f64) -> f64 {
    if n <= BLOCK {
        block(lo, lo + n)
    } else {
        let half = pairwise_half(n);
        pairwise_blocks(lo, half, block) + pairwise_blocks(lo + half, n - half, block)
    }
}

/// Where the pairwise recursion splits `n` elements (numpy's: half, rounded down to a
/// multiple of 8).
fn pairwise_half(n: usize) -> usize {
    let half = n / 2;
    half - half % 8
}

/// The parts of `lo..lo + n` that the pairwise recursion reaches `depth` levels down (or
/// sooner, at [`BLOCK`] elements or fewer), in order.
fn parts(lo: usize, n: usize, depth: u32, out: &mut Vec<(usize, usize)>) {
    if depth == 0 || n <= BLOCK {
        out.push((lo, lo + n));
    } else {
        let half = pairwise_half(n);
        parts(lo, half, depth - 1, out);
        parts(lo + half, n - half, depth - 1, out);
    }
}

/// What the pairwise recursion makes of the results of the [`parts`] of `n` elements at
/// `depth` (one per part, in order).
fn combine(n: usize, depth: u32, results: &mut impl Iterator<Item = f64>) -> f64 {
    if depth == 0 || n <= BLOCK {
        results.next().expect("one result per part")
    } else {
        let half = pairwise_half(n);
        combine(half, depth - 1, results) + combine(n - half, depth - 1, results)
    }
}

/// The most threads a pass uses by default, however many cores the machine has.
const MAX_THREADS: usize = 8;

/// The fewest elements per thread: a thread costs tens of microseconds to start, about
/// what a fused pass over 2^15 elements takes.
const PER_THREAD: usize = 1 << 17;

thread_local! {
    /// This thread's [`set_threads`] (0: the default).
    static THREADS: Cell<usize> = const { Cell::new(0) };
}

/// Set the most threads that a fused pass started on this thread may use (1: none but
/// this one; 0: back to the default). The default is the environment variable
/// `TAPEGRAD_THREADS` if it holds a positive number (read once), else the machine's
/// available parallelism, at most 8.
///
/// Only the passes over large fused regions split (see [Fusion](crate#fusion)): laying
/// out, summing and the backward of regions of at least 2^18 elements, with at least
/// 2^17 elements per thread, in a power-of-two number of parts. Every part is summed
/// where numpy's pairwise sum splits, so values and gradients are the same to the bit
/// whatever the count. The threads are started and joined within each pass; nothing
/// runs in the background.
///
/// ```
/// use tapegrad::{Tape, Tensor, set_threads, threads};
/// set_threads(1);
/// assert_eq!(threads(), 1);
/// let tape = Tape::new();
/// let x = tape.var(Tensor::full(&[1 << 20], 0.5));
/// let loss = (x * x).mean();
/// let grads = loss.backward();
/// assert_eq!(loss.value().item(), 0.25);
/// assert_eq!(grads.wrt(x).data()[0], 1.0 / (1 << 20) as f64);
/// set_threads(0); // the default again
/// assert!(threads() >= 1);
/// ```
pub fn set_threads(threads: usize) {
    THREADS.with(|t| t.set(threads));
}

/// The most threads a fused pass started on this thread may use: what [`set_threads`]
/// set here, or the default (`TAPEGRAD_THREADS`, else the machine's available
/// parallelism, at most 8).
pub fn threads() -> usize {
    let set = THREADS.with(Cell::get);
    if set > 0 {
        return set;
    }
    static DEFAULT: OnceLock<usize> = OnceLock::new();
    *DEFAULT.get_or_init(|| {
        let asked = std::env::var("TAPEGRAD_THREADS").ok();
        match asked.and_then(|s| s.trim().parse::<usize>().ok()) {
            Some(n) if n > 0 => n,
            _ => {
                let available = std::thread::available_parallelism().map_or(1, |n| n.get());
                available.min(MAX_THREADS)
            }
        }
    })
}

/// The parts a pass over `n` elements splits into, one per thread, and the depth of the
/// pairwise recursion they are at.
fn split(n: usize) -> (Vec<(usize, usize)>, u32) {
    let depth = threads().min(n / PER_THREAD).max(1).ilog2();
    let mut out = Vec::with_capacity(1 << depth);
    parts(0, n, depth, &mut out);
    (out, depth)
}

/// `data` cut into the consecutive `parts` (which cover it).
fn cut<'d>(data: &'d mut [f64], parts: &[(usize, usize)]) -> Vec<&'d mut [f64]> {
    let mut rest = data;
    let mut pieces = Vec::with_capacity(parts.len());
    for &(lo, hi) in parts {
        let (piece, tail) = std::mem::take(&mut rest).split_at_mut(hi - lo);
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

/// `work` on every job, the first on this thread and each other on a thread of its own
/// (or here, if a thread cannot be started); the results in order.
fn in_parallel<J: Send, T: Send>(jobs: Vec<J>, work: impl Fn(J) -> T + Sync) -> Vec<T> {
    if jobs.len() == 1 {
        return jobs.into_iter().map(work).collect();
    }
    let slots: Vec<Mutex<Option<J>>> = jobs.into_iter().map(|j| Mutex::new(Some(j))).collect();
    let take = |k: usize| {
        let mut slot = slots[k].lock().unwrap_or_else(PoisonError::into_inner);
        slot.take()
    };
    std::thread::scope(|scope| {
        let (work, take) = (&work, &take);
        let started: Vec<_> = (1..slots.len())
            .map(|k| {
                std::thread::Builder::new()
                    .spawn_scoped(scope, move || take(k).map(work))
                    .ok()
            })
            .collect();
        let mut results = Vec::with_capacity(slots.len());
        results.push(work(take(0).expect("the first job")));
        for (k, thread) in (1..).zip(started) {
            let done = thread.and_then(|t| t.join().unwrap_or_else(|p| resume_unwind(p)));
            results.push(match done {
                Some(result) => result,
                None => work(take(k).expect("a job no thread took")),
            });
        }
        results
    })
}

/// Who uses each node, for the region checks of the backward sweep: the consumers of
/// node `j` (with one entry per use) are `list[start[j]..start[j + 1]]`, ascending.
pub(crate) struct Consumers {
    start: Vec<usize>,
    list: Vec<usize>,
}

impl Consumers {
    /// The consumers among nodes `0..=root` (later nodes never send a gradient).
    pub(crate) fn new(nodes: &Nodes, root: usize) -> Consumers {
        let count = root + 1;
        let mut start = vec![0usize; count + 1];
        for c in 0..count {
            for &j in nodes.inputs(c).iter() {
                start[j + 1] += 1;
            }
        }
        for j in 0..count {
            start[j + 1] += start[j];
        }
        let mut fill = start.clone();
        let mut list = vec![0; start[count]];
        for c in 0..count {
            for &j in nodes.inputs(c).iter() {
                list[fill[j]] = c;
                fill[j] += 1;
            }
        }
        Consumers { start, list }
    }

    fn of(&self, j: usize) -> &[usize] {
        &self.list[self.start[j]..self.start[j + 1]]
    }
}

/// The gradient of a region input being summed over a fused region's backward, in the
/// order the unfused sweep sums it.
struct Sum {
    /// The node whose gradient this is (or to which this use's gradient goes).
    node: usize,
    /// Where the sum goes when the region is done.
    into: Destination,
    /// Whether the unfused sweep would hold it as one number (see `backward`).
    uniform: bool,
    /// What the node's slot held before the region ran.
    base: Base,
    /// The node's gradient, all `n` elements: the slot's for a full base; else values
    /// that no one reads, each overwritten by its block's first contribution.
    data: Vec<f64>,
}

#[derive(Clone, Copy)]
enum Base {
    Empty,
    Scalar(f64),
    Full,
}

/// What becomes of a [`Sum`] when the region is done.
#[derive(Clone, Copy)]
enum Destination {
    /// It is the node's gradient so far: it replaces its slot.
    Slot,
    /// It is one use's gradient of a one-element node: reduced with `sum_to` and added
    /// to the node's slot, as the unfused step does.
    Reduced,
}

impl Sum {
    fn new(node: usize, base: Base, data: Vec<f64>, into: Destination) -> Sum {
        Sum {
            node,
            into,
            uniform: !matches!(base, Base::Full),
            base,
            data,
        }
    }
}

/// One thread's part of a [`Sum`]: its elements `start..end` of the pass, indexed from
/// `start`.
struct Part<'p> {
    base: Base,
    data: &'p mut [f64],
}

impl Part<'_> {
    /// The block's first contribution was written straight into `data[lo..hi]`: add
    /// what the slot held, if it was one number (an empty slot adds nothing: adding 0
    /// would turn -0 into +0).
    fn landed(&mut self, lo: usize, hi: usize) {
        if let Base::Scalar(s) = self.base {
            self.data[lo..hi].iter_mut().for_each(|x| *x += s);
        }
    }
}

/// `acc[i] += c[i]`.
fn add_into(acc: &mut [f64], c: &[f64]) {
    acc.iter_mut().zip(c).for_each(|(a, &x)| *a += x);
}

/// Where an operand's gradient contribution goes in a fused backward.
#[derive(Clone, Copy, PartialEq)]
enum Target {
    /// The gradient register of the region node at this position of the region.
    Region(usize),
    /// The [`Sum`] of the region input at this position of the inputs.
    Input(usize),
}

/// How one operand's contribution is written over a block: the same for every block,
/// since each block runs the same ops in the same order ([`plans`]).
#[derive(Clone, Copy)]
enum Plan {
    /// Not wanted (an untracked operand, or a one-input op's second).
    Skip,
    /// Straight into the target, which has nothing in it yet in the block (nor a
    /// laid-out gradient from before the region).
    Direct(Target),
    /// Into scratch, then added to the target.
    Add(Target),
}

/// The plan of each operand of each region node (by position in the region): straight
/// into a target that has nothing in it yet, else via scratch (so the second operand
/// of `x * x` adds to what the first wrote). `full[x]` tells whether sum `x` starts
/// from a laid-out gradient.
fn plans(targets: &[[Option<Target>; 2]], full: &[bool]) -> Vec<[Plan; 2]> {
    // The top's gradient is its upstream, there from the start.
    let mut filled = vec![false; targets.len()];
    filled[0] = true;
    let mut started = full.to_vec();
    let mut plans = Vec::with_capacity(targets.len());
    for target in targets {
        let mut plan = [Plan::Skip; 2];
        for k in 0..2 {
            let Some(t) = target[k] else { continue };
            let seen = match t {
                Target::Region(q) => std::mem::replace(&mut filled[q], true),
                Target::Input(x) => std::mem::replace(&mut started[x], true),
            };
            plan[k] = match seen {
                false => Plan::Direct(t),
                true => Plan::Add(t),
            };
        }
        plans.push(plan);
    }
    plans
}

/// Which region nodes hand their upstream on instead of running their rule, and to
/// whom: a node (not the top) whose one wanted operand gets the upstream itself or its
/// negation (`Block::passes`: add, sub, neg) and is a region node that no other
/// operand sends to. That operand's register then is the node's upstream register,
/// read negated where an odd number of negations lie between them: the same numbers,
/// one pass over the block fewer. Also returns whether each node's upstream is negated.
fn handed_on<'b>(
    plans: &[[Plan; 2]],
    block: impl Fn(usize) -> &'b dyn Block,
) -> (Vec<Option<usize>>, Vec<bool>) {
    let mut senders = vec![0usize; plans.len()];
    for plan in plans {
        for p in plan {
            if let Plan::Direct(Target::Region(q)) | Plan::Add(Target::Region(q)) = *p {
                senders[q] += 1;
            }
        }
    }
    let mut hands_to = vec![None; plans.len()];
    let mut negated = vec![false; plans.len()];
    // (by position: every consumer of a region node comes before it)
    for at in 1..plans.len() {
        let (k, q) = match plans[at] {
            [Plan::Direct(Target::Region(q)), Plan::Skip] => (0, q),
            [Plan::Skip, Plan::Direct(Target::Region(q))] => (1, q),
            _ => continue,
        };
        if let (1, Some(negates)) = (senders[q], block(at).passes(k)) {
            hands_to[at] = Some(q);
            negated[q] = negated[at] ^ negates;
        }
    }
    (hands_to, negated)
}

/// The backward of the region whose top is the pending node `top`, whose slot holds
/// its gradient: gradients for the region's inputs, added to their slots, and, if
/// `want_sum`, `pairwise_sum` of `top`'s values from the same pass (for an unsummed
/// `sum` or `mean` of `top`, whose gradient does not depend on its value). Returns
/// `None`, having changed nothing, if the region cannot keep the unfused summation
/// order; the sweep then takes `top` alone.
pub(crate) fn backward(
    nodes: &Nodes,
    slots: &mut Slots,
    consumers: &Consumers,
    top: usize,
    want_sum: bool,
) -> Option<Option<f64>> {
    // The region: pending tracked nodes below `top` all of whose uses are in the region,
    // so their gradients are complete once the region's are; decided from the top down
    // (every consumer of a node has a larger index, so it is decided first).
    let mut region = vec![top];
    let mut candidates: Vec<usize> = nodes.inputs(top).to_vec();
    while let Some(&j) = candidates.iter().max() {
        candidates.retain(|&k| k != j);
        if nodes.is_pending(j)
            && nodes[j].tracked
            && consumers.of(j).iter().all(|c| region.contains(c))
        {
            region.push(j);
            candidates.extend(nodes.inputs(j).iter().copied());
        }
    }
    // `region` is descending (every node of it has `top`'s shape). Its inputs that
    // receive a gradient: each has the region's shape, or one element (its gradient is
    // then reduced with `sum_to` at the end, one use at a time, as the unfused sweep
    // does); and no op outside the region may use it between the region's first use
    // and `top` (that op's gradient would arrive in between).
    let mut inputs: Vec<usize> = Vec::new();
    for &r in &region {
        for &j in nodes.inputs(r).iter() {
            if nodes[j].tracked && !region.contains(&j) && !inputs.contains(&j) {
                inputs.push(j);
            }
        }
    }
    let n = nodes.numel(top);
    for &j in &inputs {
        // (`sum_to` between shapes of one length but different ranks is not a copy: it
        // adds to 0, turning -0 into +0; the unfused step does that, so take it.)
        if nodes.numel(j) != 1 && nodes.shape(j) != nodes.shape(top) {
            return None;
        }
        let first = region
            .iter()
            .copied()
            .filter(|&r| nodes.inputs(r).contains(&j))
            .min();
        let first = first.expect("a region input is used in the region");
        let uses = consumers.of(j); // ascending
        let (from, to) = (
            uses.partition_point(|&c| c <= first),
            uses.partition_point(|&c| c < top),
        );
        if from < to && uses[from..to].iter().any(|c| !region.contains(c)) {
            return None;
        }
    }

    // The gradient of `top` from its slot, as one number or `n`.
    let upstream = match slots.take(top) {
        Some(t) if t.len() == 1 || t.len() == n => t,
        Some(t) => t.broadcast_to(nodes.shape(top)),
        None if want_sum => return Some(Some(sum(nodes, top))),
        None => return Some(None),
    };
    // One sum per input of the region's shape, starting from its slot; one per use of
    // a one-element input (each reduced on its own at the end).
    let mut sums: Vec<Sum> = Vec::new();
    let mut full_sum = vec![usize::MAX; inputs.len()];
    for (x, &j) in inputs.iter().enumerate() {
        if nodes.numel(j) == 1 {
            continue;
        }
        let (base, data) = match slots.take(j) {
            None => (Base::Empty, overwritable(n)),
            Some(t) if t.len() == 1 => (Base::Scalar(t.data()[0]), overwritable(n)),
            Some(t) => {
                let t = match t.len() == n {
                    true => t,
                    false => t.broadcast_to(nodes.shape(j)),
                };
                let mut data = buffer(n);
                data.extend_from_slice(t.data());
                (Base::Full, data)
            }
        };
        full_sum[x] = sums.len();
        sums.push(Sum::new(j, base, data, Destination::Slot));
    }
    // Where each operand of each region node sends its gradient.
    let mut targets: Vec<[Option<Target>; 2]> = Vec::with_capacity(region.len());
    for &r in &region {
        let mut t = [None; 2];
        for (k, &j) in nodes.inputs(r).iter().enumerate() {
            if !nodes[j].tracked {
                continue;
            }
            t[k] = Some(match region.iter().position(|&q| q == j) {
                Some(q) => Target::Region(q),
                None if nodes.numel(j) == 1 => {
                    let data = overwritable(n);
                    sums.push(Sum::new(j, Base::Empty, data, Destination::Reduced));
                    Target::Input(sums.len() - 1)
                }
                None => {
                    let x = inputs.iter().position(|&x| x == j).expect("an input");
                    Target::Input(full_sum[x])
                }
            });
        }
        targets.push(t);
    }

    let cone = cone(nodes, top);
    let program = Program::new(nodes, &cone);
    let steps: Vec<usize> = region
        .iter()
        .map(|&r| program.step_of(r).expect("the region is in its cone"))
        .collect();
    let block = |at: usize| program.steps[steps[at]].block;

    // Which gradients the unfused sweep would hold as one number: a uniform upstream
    // stays uniform through ops whose gradients read only the upstream (add, sub, neg).
    // That matters beyond the region: `sum_to` multiplies a uniform gradient by the
    // count where it sums a laid-out one, and the two differ in the last bit.
    let mut uniform = vec![true; region.len()];
    uniform[0] = upstream.len() == 1;
    for at in 0..region.len() {
        // (descending: every consumer of a region node has been seen before it)
        let gives = uniform[at] && !block(at).reads_operands();
        for t in targets[at].iter().flatten() {
            match *t {
                Target::Region(q) => uniform[q] &= gives,
                Target::Input(x) => sums[x].uniform &= gives,
            }
        }
    }

    // The values the backward rules read (and the top's, for its sum), and what
    // computing them needs (the steps are in topological order, so one pass from the
    // last step down closes the set).
    let mut needed = vec![false; program.steps.len()];
    needed[steps[0]] = want_sum;
    for (at, &s) in steps.iter().enumerate() {
        needed[s] |= block(at).reads_out();
        if block(at).reads_operands() {
            for k in 0..2 {
                if let Source::Register(q) = program.steps[s].operands[k] {
                    needed[q] = true;
                }
            }
        }
    }
    for s in (0..needed.len()).rev() {
        if needed[s] {
            for k in 0..2 {
                if let Source::Register(q) = program.steps[s].operands[k] {
                    needed[q] = true;
                }
            }
        }
    }

    // The pass, in parts (one per thread), each writing its part of every sum.
    let full: Vec<bool> = sums.iter().map(|s| matches!(s.base, Base::Full)).collect();
    let plans = plans(&targets, &full);
    let (hands_to, negated) = handed_on(&plans, block);
    let pass = Pass {
        program,
        rules: rules(&plans, &hands_to, &negated),
        grad_registers: steps.len(),
        steps,
        needed,
        upstream,
        want_sum,
    };
    let (parts, depth) = split(n);
    let mut views: Vec<Vec<Part<'_>>> = parts.iter().map(|_| Vec::new()).collect();
    for sum in sums.iter_mut() {
        for (view, data) in views.iter_mut().zip(cut(&mut sum.data, &parts)) {
            view.push(Part {
                base: sum.base,
                data,
            });
        }
    }
    let jobs: Vec<_> = parts.iter().copied().zip(views).collect();
    let part_sums = in_parallel(jobs, |((start, end), mut view)| {
        pass.part(start, end, &mut view)
    });
    let top_sum = want_sum.then(|| 0.0 + combine(n, depth, &mut part_sums.into_iter()));

    // (in order: the uses of a one-element input were made in descending order)
    for sum in sums {
        let j = sum.node;
        let shape = nodes.shape(j);
        match sum.into {
            // Every element went through the same additions of the same numbers.
            Destination::Slot if sum.uniform => slots.set(j, Tensor::scalar(sum.data[0])),
            Destination::Slot => {
                let t = Tensor::from_parts(data_from_vec(sum.data), shape.into());
                slots.set(j, t);
            }
            Destination::Reduced => {
                let g = match sum.uniform {
                    true => Tensor::scalar(sum.data[0]),
                    false => Tensor::from_parts(data_from_vec(sum.data), nodes.shape(top).into()),
                };
                slots.add(j, sum_to(g, nodes.shape(top), shape));
            }
        }
    }
    Some(top_sum)
}

/// Where a rule writes one operand's contribution over a block, with the region's
/// gradient registers resolved to the place each block's values take (see [`rules`]).
#[derive(Clone, Copy)]
enum Put {
    /// Not wanted.
    Skip,
    /// Straight into gradient register `r`.
    Register(usize),
    /// Straight into sum `x`'s part.
    Sum(usize),
    /// Into scratch, then added to gradient register `r`.
    AddRegister(usize),
    /// Into scratch, then added to sum `x`'s part.
    AddSum(usize),
}

/// One region node's backward rule as each block runs it (a node that hands its
/// upstream on runs none).
struct Rule {
    /// The node's position in the region (0: the top, whose upstream is the slot's).
    at: usize,
    /// The gradient register holding the node's upstream (the top's own register,
    /// which holds nothing, for the top: its upstream is in its slot).
    up: usize,
    /// Whether that register holds the upstream negated.
    negated: bool,
    /// Where each operand's contribution goes.
    put: [Put; 2],
}

/// The rules each block runs, in order, from the region's `plans`: gradient register
/// `r` is the `r`th `BLOCK` of the pass's gradient registers, and a node that hands its
/// upstream on ([`handed_on`]) gives its register to the operand it hands it to.
fn rules(plans: &[[Plan; 2]], hands_to: &[Option<usize>], negated: &[bool]) -> Vec<Rule> {
    // `register[q]`: the register where region node `q`'s upstream is gathered. It
    // changes only when `q`'s one sender hands its own register on to it (a sender that
    // runs no rule), so the rules writing to `q` and `q`'s own rule see the same one.
    let mut register: Vec<usize> = (0..plans.len()).collect();
    let mut rules = Vec::with_capacity(plans.len());
    for (at, plan) in plans.iter().enumerate() {
        if let Some(q) = hands_to[at] {
            register.swap(at, q);
            continue;
        }
        let put = plan.map(|p| match p {
            Plan::Skip => Put::Skip,
            Plan::Direct(Target::Region(q)) => Put::Register(register[q]),
            Plan::Direct(Target::Input(x)) => Put::Sum(x),
            Plan::Add(Target::Region(q)) => Put::AddRegister(register[q]),
            Plan::Add(Target::Input(x)) => Put::AddSum(x),
        });
        rules.push(Rule {
            at,
            up: register[at],
            negated: negated[at],
            put,
        });
    }
    rules
}

/// What every thread of a fused backward reads.
struct Pass<'a> {
    program: Program<'a>,
    /// The step of each region node, by its position in the region (the top first).
    steps: Vec<usize>,
    /// The backward rules each block runs, in order.
    rules: Vec<Rule>,
    /// How many gradient registers the rules use (one per region node).
    grad_registers: usize,
    /// The steps whose values the pass computes.
    needed: Vec<bool>,
    /// The top's gradient: one number, or one per element.
    upstream: Tensor,
    /// Whether to sum the top's values.
    want_sum: bool,
}

impl Pass<'_> {
    /// The backward over the elements `start..end`, into `sums` (their parts there), a
    /// block at a time: the values the rules read, then each region node's rule in
    /// reverse order. Returns the top's values there summed as the pairwise recursion
    /// sums that part, if wanted (else 0).
    fn part(&self, start: usize, end: usize, sums: &mut [Part<'_>]) -> f64 {
        let mut registers = self.program.registers();
        // The gradient registers, and two more that are borrowed where a rule writes
        // to no register (so that every rule borrows three distinct ones), never
        // written; scratch for one rule's contributions. (The top's register holds
        // nothing, its upstream being in its slot, and no rule writes to it.)
        let spare = self.grad_registers;
        let mut grads = vec![0.0; (spare + 2) * BLOCK];
        let mut scratch = vec![0.0; 2 * BLOCK];
        let mut block = |lo: usize, hi: usize| -> f64 {
            let (len, at_part) = (hi - lo, lo - start);
            self.program.run(&mut registers, lo, hi, Some(&self.needed));
            let sum = match self.want_sum {
                true => pairwise(register(&registers, self.steps[0], len)),
                false => 0.0,
            };
            let reg = |r: usize| r * BLOCK..r * BLOCK + len;
            let part = at_part..at_part + len;
            for rule in &self.rules {
                let s = self.steps[rule.at];
                let [p0, p1] = rule.put;
                let written = |k: usize| match rule.put[k] {
                    Put::Register(r) => r,
                    _ => spare + k,
                };
                let [up, r0, r1] = grads
                    .get_disjoint_mut([reg(rule.up), reg(written(0)), reg(written(1))])
                    .expect("a rule's registers are distinct");
                let (s0, s1) = match (p0, p1) {
                    (Put::Sum(x0), Put::Sum(x1)) => {
                        let [a, b] = sums
                            .get_disjoint_mut([x0, x1])
                            .expect("one operand goes straight into a sum");
                        (
                            Some(&mut a.data[part.clone()]),
                            Some(&mut b.data[part.clone()]),
                        )
                    }
                    (Put::Sum(x), _) => (Some(&mut sums[x].data[part.clone()]), None),
                    (_, Put::Sum(x)) => (None, Some(&mut sums[x].data[part.clone()])),
                    _ => (None, None),
                };
                let (sa, sb) = scratch.split_at_mut(BLOCK);
                let g = [(p0, r0, s0, sa), (p1, r1, s1, sb)].map(|(p, r, s, c)| match p {
                    Put::Skip => None,
                    Put::Register(_) => Some(r),
                    Put::Sum(_) => s,
                    Put::AddRegister(_) | Put::AddSum(_) => Some(&mut c[..len]),
                });
                // The top's upstream straight from its slot (one number, or `n`).
                let up = match (rule.at, self.upstream.data()) {
                    (0, [u]) => Up::One(*u),
                    (0, all) => Up::Many(&all[lo..hi]),
                    _ if rule.negated => Up::Negated(up),
                    _ => Up::Many(up),
                };
                let a = self.program.operand(&registers, s, 0, lo, hi);
                let b = self.program.operand(&registers, s, 1, lo, hi);
                let out = register(&registers, s, len);
                self.program.steps[s].block.backward_block(a, b, out, up, g);
                for (k, put) in rule.put.into_iter().enumerate() {
                    let c = &scratch[k * BLOCK..k * BLOCK + len];
                    match put {
                        Put::Skip | Put::Register(_) => {}
                        Put::Sum(x) => sums[x].landed(at_part, at_part + len),
                        Put::AddRegister(r) => add_into(&mut grads[reg(r)], c),
                        Put::AddSum(x) => add_into(&mut sums[x].data[part.clone()], c),
                    }
                }
            }
            sum
        };
        // (the blocks of a sum split where `pairwise_sum` does; others are full blocks)
        match self.want_sum {
            true => pairwise_blocks(start, end - start, &mut block),
            false => {
                for lo in (start..end).step_by(BLOCK) {
                    block(lo, (lo + BLOCK).min(end));
                }
                0.0
            }
        }
    }
}
