//! Long runs: memory stays flat over a 10,000-step training loop, a 10^6-deep chain
//! neither overflows the stack nor leaks, and rank-0 ops allocate nothing of their own.
//!
//! The global allocator below counts live bytes and allocations in two `AtomicUsize`s,
//! but only for threads that opted in with [`Counting::start`]: the test harness's own
//! threads allocate whenever another test finishes, and that must not land between two
//! readings. The tests that count also hold [`COUNTING`] so they never count at once.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use tapegrad::losses::hinge;
use tapegrad::{Tape, Tensor, max, min};

struct CountingAllocator;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Whether this thread's allocations are counted. `const`, no destructor: reading
    /// it never allocates, so the allocator may.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn counted() -> bool {
    COUNTED.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: every call is forwarded unchanged to `System`; the bookkeeping only touches
// atomics and a const thread-local, neither of which allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() && counted() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::SeqCst);
            ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() && counted() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::SeqCst);
            ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) };
        if counted() {
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::SeqCst);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() && counted() {
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::SeqCst);
            LIVE_BYTES.fetch_add(new_size, Ordering::SeqCst);
            ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Held by every test that counts, so two never count at once.
static COUNTING: Mutex<()> = Mutex::new(());

/// Counting on this thread for as long as it lives.
struct Counting {
    _lock: MutexGuard<'static, ()>,
}

impl Counting {
    fn start() -> Counting {
        let lock = COUNTING.lock().unwrap_or_else(|e| e.into_inner());
        COUNTED.with(|c| c.set(true));
        Counting { _lock: lock }
    }

    fn live_bytes(&self) -> usize {
        LIVE_BYTES.load(Ordering::SeqCst)
    }

    fn allocations(&self) -> usize {
        ALLOCATIONS.load(Ordering::SeqCst)
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        COUNTED.with(|c| c.set(false));
    }
}

// ---- a training loop keeps memory flat ------------------------------------------------

/// 8 points in 3-d, labels ±1, linearly separable through the origin.
fn dataset() -> (Tensor, Tensor) {
    let x = vec![
        1.0, 0.5, -0.2, //
        0.8, -0.3, 0.1, //
        1.5, 0.2, 0.4, //
        0.3, 1.2, -0.5, //
        -1.0, -0.4, 0.3, //
        -0.7, 0.6, -0.1, //
        -1.3, -0.1, -0.6, //
        -0.2, -1.1, 0.5,
    ];
    let y = vec![1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0];
    (
        Tensor::new(x, &[8, 3]).unwrap(),
        Tensor::new(y, &[8, 1]).unwrap(),
    )
}

/// One step of gradient descent on the mean hinge loss of `x w + b`, on a fresh tape.
/// Returns the loss before the step.
fn step(x: &Tensor, y: &Tensor, w: &mut Tensor, b: &mut Tensor, lr: f64) -> f64 {
    let tape = Tape::new();
    let (wv, bv) = (tape.var(w.clone()), tape.var(b.clone()));
    let pred = tape.constant(x.clone()).matmul(wv) + bv;
    let loss = hinge(pred, tape.constant(y.clone()));
    let value = loss.value().item();
    let grads = loss.backward();
    let descend = |p: &Tensor, g: &Tensor| {
        let data = p.data().iter().zip(g.data()).map(|(p, g)| p - lr * g);
        Tensor::new(data.collect(), p.shape()).unwrap()
    };
    *w = descend(w, grads.wrt(wv));
    *b = descend(b, grads.wrt(bv));
    value
}

#[test]
fn training_loop_of_10000_steps_with_a_fresh_tape_per_step_keeps_memory_flat() {
    let (x, y) = dataset();
    let mut w = Tensor::new(vec![0.0, 0.0, 0.0], &[3, 1]).unwrap();
    let mut b = Tensor::scalar(0.0);
    let counting = Counting::start();
    let first_loss = step(&x, &y, &mut w, &mut b, 0.01);
    for _ in 1..10 {
        step(&x, &y, &mut w, &mut b, 0.01);
    }
    let after_10 = counting.live_bytes();
    let allocations_before = counting.allocations();
    let mut last_loss = f64::NAN;
    for _ in 10..10_000 {
        last_loss = step(&x, &y, &mut w, &mut b, 0.01);
    }
    let after_10_000 = counting.live_bytes();
    let allocations = counting.allocations() - allocations_before;
    drop(counting);
    // The counter saw the steps' allocations (each step builds a tape and tensors)...
    assert!(
        allocations >= 9_990,
        "only {allocations} allocations counted"
    );
    // ...and every byte of them was freed again.
    assert_eq!(
        after_10_000, after_10,
        "live bytes grew from {after_10} after step 10 to {after_10_000} after step 10,000"
    );
    // The loop did train: the loss went from 1 (w = 0) to well below.
    assert_eq!(first_loss, 1.0);
    assert!(last_loss < 0.1, "loss after 10,000 steps: {last_loss}");
}

// ---- a 10^6-deep chain ------------------------------------------------------------------

/// `y = x + x + ... + x` as a chain of 10^6 adds, built, differentiated and dropped in
/// a thread with a 2 MiB stack: nothing recurses over the chain.
#[test]
fn chain_of_a_million_ops_builds_differentiates_and_drops_on_a_2_mib_stack() {
    const DEPTH: usize = 1_000_000;
    let worker = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            let tape = Tape::with_capacity(DEPTH + 1);
            let x = tape.var(Tensor::scalar(0.5));
            let mut y = x;
            for _ in 0..DEPTH {
                y += x;
            }
            let value = y.value().item();
            let grads = y.backward();
            let gradient = grads.wrt(x).item();
            let nodes = tape.len();
            drop(grads);
            drop(tape);
            (value, gradient, nodes)
        })
        .unwrap();
    let (value, gradient, nodes) = worker
        .join()
        .expect("the deep chain overflowed or panicked");
    assert_eq!(nodes, DEPTH + 1);
    assert_eq!(value, 0.5 * (DEPTH + 1) as f64);
    assert_eq!(gradient, (DEPTH + 1) as f64);
}

// ---- rank-0 ops allocate nothing of their own ------------------------------------------

const OPS: usize = 100_000;

/// `OPS` rank-0 ops cycling through mul, add and max, with vars and `f64`s on either
/// side; returns the final var's value. Every `f64` operand becomes a constant node.
fn build_rank0_chain(tape: &Tape) -> f64 {
    let x = tape.var(Tensor::scalar(0.5));
    let z = tape.var(Tensor::scalar(0.25));
    let mut y = x;
    for i in 0..OPS {
        y = match i % 6 {
            0 => y * x,
            1 => y + 0.5,
            2 => max(y, z),
            3 => 0.75 * y,
            4 => y + z,
            _ => max(0.1, y),
        };
    }
    y.value().item()
}

/// Nodes `build_rank0_chain` records: two leaves, one per op, one per `f64` operand.
const RANK0_NODES: usize = 2 + OPS + OPS / 2;

#[test]
fn rank0_mul_add_max_on_a_preallocated_tape_allocate_nothing() {
    let tape = Tape::with_capacity(RANK0_NODES);
    let counting = Counting::start();
    let before = counting.allocations();
    let value = build_rank0_chain(&tape);
    let allocations = counting.allocations() - before;
    drop(counting);
    assert_eq!(tape.len(), RANK0_NODES);
    assert_eq!(
        allocations, 0,
        "{allocations} heap allocations while recording {OPS} rank-0 ops"
    );
    assert!(value.is_finite() && value > 0.0);
}

/// The other rank-0 ops (sub, div, min, neg, exp, ln, sum, mean) allocate nothing
/// either: a rank-0 tensor and its shape live inline, and the ops are zero-sized.
#[test]
fn other_rank0_ops_on_a_preallocated_tape_allocate_nothing() {
    let tape = Tape::with_capacity(2 + 8 * (OPS / 8) + 2 * (OPS / 8));
    let counting = Counting::start();
    let before = counting.allocations();
    let x = tape.var(Tensor::scalar(1.5));
    let z = tape.var(Tensor::scalar(0.25));
    let mut y = x;
    for i in 0..OPS / 8 * 8 {
        y = match i % 8 {
            0 => y - z,
            1 => y / x,
            2 => min(y, z),
            3 => -y,
            4 => y.exp(),
            5 => (y + 2.0).ln(),
            6 => y.sum(),
            _ => y.mean(),
        };
    }
    let allocations = counting.allocations() - before;
    drop(counting);
    assert_eq!(
        allocations, 0,
        "{allocations} heap allocations while recording {OPS} rank-0 ops"
    );
    assert!(y.value().item().is_finite());
}

/// Without preallocation the only allocations are the tape's node list growing
/// (amortized doubling: a few dozen reallocations for 150,000 nodes, not one per node).
#[test]
fn rank0_ops_on_a_growing_tape_allocate_only_for_the_tapes_growth() {
    let tape = Tape::new();
    let counting = Counting::start();
    let before = counting.allocations();
    build_rank0_chain(&tape);
    let allocations = counting.allocations() - before;
    drop(counting);
    let doublings = usize::BITS - RANK0_NODES.leading_zeros();
    assert!(
        allocations > 0,
        "the node list never grew, or nothing was counted"
    );
    assert!(
        allocations <= doublings as usize + 4,
        "{allocations} heap allocations for {RANK0_NODES} nodes; doubling needs about {doublings}"
    );
}
