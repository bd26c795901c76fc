//! `cargo run --release --example bench`: how fast and how lean the tape is on the seed's
//! workload. Medians over repeated runs after a warm-up, all in this one process.
//!
//! ```text
//! cargo run --release --example bench                        # everything, N up to 10^7
//! cargo run --release --example bench -- --quick             # fewer repetitions, N up to 10^6
//! cargo run --release --example bench -- --hinge-only 1000000  # 50 hinge_tape calls at one N (for profilers)
//! cargo run --release --example bench -- --chain-only 5      # scalar chains on one cleared tape (for profilers)
//! ```
//!
//! What it measures:
//! - `hinge_tape`: build the hinge loss on a fresh tape, `backward`, read the gradient
//!   and the loss: what a user of the tape does. From 2^15 elements the tape fuses the
//!   chain and computes the loss in the gradients' pass; from 2^18 it splits that pass
//!   between the threads (`tapegrad::threads()`, printed first). Its baseline
//!   `hinge_fused` is one hand-written, branch-free, vectorized loop computing the loss
//!   and the np.where gradient together and returning a new gradient vector, as the
//!   tape does; `hinge_fused_into` is the same loop writing into a buffer the caller
//!   reuses: the pure cost of the arithmetic and the memory traffic. At 10^7 a fresh 80 MB vector costs more in page faults than
//!   the arithmetic, so `hinge_fused` is slower than the tape there: the tape reuses the
//!   buffers it freed (the per-thread pool, `tapegrad::pooled_bytes`) and does not pay
//!   that.
//! - `scalar_chain`: 10^6 rank-0 nodes (micrograd's workload, `v = max(v * a + b, c)`),
//!   forward and backward, in ns per node, on one cleared tape and on a fresh one. Its
//!   baseline is the same recurrence in plain f64 with its derivative written by hand.
//!   The allocation count is of the whole call on a cleared tape (one: the result).
//! - Peak memory of `hinge_tape` at the largest N, from the counting allocator below,
//!   measured first, before anything else has allocated, in bytes per element and in
//!   arrays of N f64 (the two inputs included).
//!
//! - `hinge_tape_unfused`: `hinge_tape` on `Tape::unfused()`, every op computed whole as
//!   it is recorded (what `Tape::new()` does below 2^15 elements).
//! - `hinge_tape_value_first`: `hinge_tape` reading the loss before `backward` (the
//!   bench's `hinge_tape` calls `backward` first): from 2^18 elements, where the tape
//!   fuses, the value then takes a pass over the inputs of its own; below, `Tape::new()`
//!   lays the chain out when the loss is read, as unfused.
//! - `hinge_tape_one_thread`: `hinge_tape` after `tapegrad::set_threads(1)`, as the
//!   hand-fused loops run.
//! - `scalar_chain_reverse_crate`: the same chain on the `reverse` crate's scalar tape,
//!   compared per step (it records two nodes per step, tapegrad three).
//!
//! Why the tape is slower than the fused loop on one thread: a fused region runs each
//! op as one pass over a block's registers (in L1), where the compiled loop keeps every
//! value in CPU registers (the hinge's pass runs six such passes: three ops forward,
//! their sum, two backward, the `1 - x` handing its upstream on); below 2^15 elements
//! each op streams whole arrays, which then stay in cache. The hand-fused loops here
//! run on one thread. A rank-0 node is a 40-byte record with nothing to drop (its op,
//! two inputs, its number, flags): recording one borrows the tape, looks at each
//! operand and writes the record; the sweep calls the op's rule (a trait object) once
//! per node. `reverse` stores each node's two partial derivatives when it records it,
//! so its sweep is a multiply-add per input, no call.
//!
//! Peers are not part of this program (CI needs no Python):
//! `examples/peers/hinge_peers.py` times numpy (the seed's `hinge_forward` and its
//! np.where gradient) and `jax.jit(jax.value_and_grad(...))` in float64 on the same
//! inputs; run it right after this bench, on the same machine. Run-to-run
//! variation on a 2-core VM is up to about 20%; compare figures from one run.

use reverse::Gradient;
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Instant;
use tapegrad::losses::hinge;
use tapegrad::{Tape, Tensor, max};

/// The system allocator, counting live and peak bytes.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`; we only count.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
        PEAK.fetch_max(live, Relaxed);
        ALLOCATIONS.fetch_add(1, Relaxed);
        // SAFETY: same layout contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let live = if new_size >= layout.size() {
            LIVE.fetch_add(new_size - layout.size(), Relaxed) + new_size - layout.size()
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Relaxed) - (layout.size() - new_size)
        };
        PEAK.fetch_max(live, Relaxed);
        ALLOCATIONS.fetch_add(1, Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Deterministic inputs: ±1 labels, predictions in [-2, 2) with every 10th an exact tie.
fn batch(n: usize) -> (Tensor, Tensor) {
    let mut s = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let target: Vec<f64> = (0..n)
        .map(|_| if next() < 0.5 { -1.0 } else { 1.0 })
        .collect();
    let pred: Vec<f64> = (0..n)
        .map(|i| {
            if i % 10 == 0 {
                target[i]
            } else {
                4.0 * next() - 2.0
            }
        })
        .collect();
    (Tensor::from(pred), Tensor::from(target))
}

/// The baseline: loss and np.where gradient in one branch-free pass, returning a new
/// gradient vector as the tape does.
fn hinge_fused(pred: &[f64], target: &[f64]) -> (f64, Vec<f64>) {
    let mut grad = vec![0.0; pred.len()];
    let loss = hinge_fused_into(pred, target, &mut grad);
    (loss, grad)
}

/// The same pass writing into a gradient buffer the caller reuses: no allocation, no
/// first touch of fresh memory, only the arithmetic and the memory traffic. Eight
/// running sums (one per lane) let the loop vectorize.
fn hinge_fused_into(pred: &[f64], target: &[f64], grad: &mut [f64]) -> f64 {
    let n = pred.len() as f64;
    let mut sums = [0.0; 8];
    let element = |p: f64, t: f64, g: &mut f64, sum: &mut f64| {
        let z = p * t;
        let active = z < 1.0;
        *sum += if active { 1.0 - z } else { 0.0 };
        *g = if active { -t / n } else { 0.0 };
    };
    let whole = pred.len() - pred.len() % 8;
    let lanes = pred[..whole]
        .chunks_exact(8)
        .zip(target[..whole].chunks_exact(8))
        .zip(grad[..whole].chunks_exact_mut(8));
    for ((p, t), g) in lanes {
        for j in 0..8 {
            element(p[j], t[j], &mut g[j], &mut sums[j]);
        }
    }
    for i in whole..pred.len() {
        element(pred[i], target[i], &mut grad[i], &mut sums[0]);
    }
    sums.iter().sum::<f64>() / n
}

/// Build, backward, read the gradient: what a user of the tape does.
fn hinge_tape(pred: &Tensor, target: &Tensor) -> (f64, f64) {
    hinge_on(Tape::new(), pred, target)
}

/// The same on `tape` (`Tape::unfused()` for the engine without fusion): `backward`,
/// then the loss's value (on a fused tape, computed in the gradients' pass).
fn hinge_on(tape: Tape, pred: &Tensor, target: &Tensor) -> (f64, f64) {
    let p = tape.var(pred.clone());
    let t = tape.constant(target.clone());
    let loss = hinge(p, t);
    let grads = loss.backward();
    let value = loss.value().item();
    let g = grads.wrt(p);
    (value, g.data()[g.len() / 2])
}

/// `hinge_tape` reading the loss's value before `backward`: on a fused tape the value
/// then takes a pass of its own, and `backward` another.
fn hinge_value_first(pred: &Tensor, target: &Tensor) -> (f64, f64) {
    let tape = Tape::new();
    let p = tape.var(pred.clone());
    let t = tape.constant(target.clone());
    let loss = hinge(p, t);
    let value = loss.value().item();
    let grads = loss.backward();
    let g = grads.wrt(p);
    (value, g.data()[g.len() / 2])
}

/// Median of `reps` timings of `f` in milliseconds, after `warm` untimed runs.
fn median_ms<R>(reps: usize, warm: usize, mut f: impl FnMut() -> R) -> f64 {
    for _ in 0..warm {
        black_box(f());
    }
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let start = Instant::now();
            black_box(f());
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[reps / 2]
}

/// micrograd's workload: `v = max(v * a + b, c)`, three rank-0 nodes per step, on
/// `tape` after clearing it (a training loop reuses its tape; a fresh one would add the
/// first touch of its memory, reported separately).
fn scalar_chain(tape: &mut Tape, nodes: usize) -> f64 {
    tape.clear();
    let a = tape.var(Tensor::scalar(0.999));
    let b = tape.var(Tensor::scalar(0.01));
    let c = tape.var(Tensor::scalar(-0.5));
    let mut v = tape.var(Tensor::scalar(0.3));
    for _ in 0..(nodes - 4) / 3 {
        v = max(v * a + b, c);
    }
    let grads = v.backward();
    grads.wrt(a).item()
}

/// The same chain on the `reverse` crate's scalar tape (cleared, as ours is). It has no
/// max op, so max is the branch a user would write; it records two nodes per step where
/// tapegrad records three, so the two are compared per step.
fn scalar_chain_reverse(tape: &reverse::Tape, nodes: usize) -> f64 {
    tape.clear();
    let a = tape.add_var(0.999);
    let b = tape.add_var(0.01);
    let c = tape.add_var(-0.5);
    let mut v = tape.add_var(0.3);
    for _ in 0..(nodes - 4) / 3 {
        let u = v * a + b;
        v = if c.val > u.val { c } else { u };
    }
    let grads = v.grad();
    grads.wrt(&a)
}

/// The same recurrence in plain f64, forward and its derivative w.r.t. `a` by hand.
fn scalar_chain_by_hand(nodes: usize) -> f64 {
    let (a, b, c) = (black_box(0.999), black_box(0.01), black_box(-0.5));
    let (mut v, mut dv_da) = (0.3, 0.0);
    for _ in 0..(nodes - 4) / 3 {
        let u = v * a + b;
        let du_da = dv_da * a + v;
        (v, dv_da) = if c > u { (c, 0.0) } else { (u, du_da) };
    }
    dv_da
}

fn line(case: &str, n: usize, ms: f64, ratio: f64) {
    println!("bench case={case} n={n} median_ms={ms:.6} ratio={ratio:.3}");
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    if let Some(n) = std::env::args().skip_while(|a| a != "--hinge-only").nth(1) {
        // For profilers: repeated hinge_tape runs at one size, nothing else.
        let (pred, target) = batch(n.parse().expect("--hinge-only N"));
        for _ in 0..50 {
            black_box(hinge_tape(&pred, &target));
        }
        return;
    }
    if std::env::args().any(|a| a == "--chain-only") {
        // For profilers: scalar chains on one cleared tape, nothing else.
        let mut tape = Tape::new();
        let runs = std::env::args().skip_while(|a| a != "--chain-only").nth(1);
        for _ in 0..runs.map_or(5, |r| r.parse().expect("--chain-only RUNS")) {
            black_box(scalar_chain(&mut tape, 1_000_000));
        }
        return;
    }
    let sizes: &[usize] = if quick {
        &[1_000, 10_000, 100_000, 1_000_000]
    } else {
        &[1_000, 10_000, 100_000, 1_000_000, 10_000_000]
    };
    println!("tapegrad bench: medians after warm-up, one process, release build");
    println!(
        "threads for fused passes: {} (tapegrad::set_threads, TAPEGRAD_THREADS)",
        tapegrad::threads()
    );
    println!();

    // Memory first, while nothing has been allocated yet: everything the run allocates
    // counts, the buffers it frees and reuses included.
    let n = *sizes.last().unwrap();
    let (pred, target) = batch(n);
    let before = LIVE.load(Relaxed);
    PEAK.store(before, Relaxed);
    black_box(hinge_tape(&pred, &target));
    let peak = PEAK.load(Relaxed);
    drop((pred, target));
    println!(
        "peak memory, hinge_tape at N = {n}: {:.1} bytes/element = {:.2} arrays of N f64 \
         alive at once, the {:.1} input arrays (pred, target) included",
        peak as f64 / n as f64,
        peak as f64 / (8 * n) as f64,
        before as f64 / (8 * n) as f64
    );
    println!();

    println!(
        "{:>10}  {:>12}  {:>12}  {:>7}  {:>16}  {:>7}  {:>12}  {:>12}  {:>12}",
        "N",
        "hinge_tape",
        "hinge_fused",
        "ratio",
        "hinge_fused_into",
        "ratio",
        "unfused tape",
        "value first",
        "one thread"
    );
    let mut lines = Vec::new();
    for &n in sizes {
        let (pred, target) = batch(n);
        // Same answer first: the timing is of equal work.
        let (loss_fused, grad_fused) = hinge_fused(pred.data(), target.data());
        let (loss_tape, mid) = hinge_tape(&pred, &target);
        assert!((loss_fused - loss_tape).abs() <= 1e-12 * loss_fused.abs().max(1.0));
        assert_eq!(mid, grad_fused[n / 2]);
        assert_eq!(hinge_value_first(&pred, &target), (loss_tape, mid));
        let reps = match (quick, n) {
            (true, _) => 5,
            (_, n) if n >= 10_000_000 => 9,
            (_, n) if n >= 1_000_000 => 31,
            _ => 301,
        };
        let warm = (reps / 4).max(2);
        let fused = median_ms(reps, warm, || hinge_fused(pred.data(), target.data()));
        let mut grad = vec![0.0; n];
        let into = median_ms(reps, warm, || {
            hinge_fused_into(pred.data(), target.data(), &mut grad)
        });
        let tape = median_ms(reps, warm, || hinge_tape(&pred, &target));
        let unfused = median_ms(reps, warm, || hinge_on(Tape::unfused(), &pred, &target));
        let value_first = median_ms(reps, warm, || hinge_value_first(&pred, &target));
        let threads = tapegrad::threads();
        tapegrad::set_threads(1);
        let one_thread = median_ms(reps, warm, || hinge_tape(&pred, &target));
        tapegrad::set_threads(threads);
        println!(
            "{:>10}  {:>9.4} ms  {:>9.4} ms  {:>6.2}x  {:>13.4} ms  {:>6.2}x  {:>9.4} ms  \
             {:>9.4} ms  {:>9.4} ms",
            n,
            tape,
            fused,
            tape / fused,
            into,
            tape / into,
            unfused,
            value_first,
            one_thread
        );
        lines.push(("hinge_tape", n, tape, tape / fused));
        lines.push(("hinge_tape_unfused", n, unfused, unfused / fused));
        let first = value_first / fused;
        lines.push(("hinge_tape_value_first", n, value_first, first));
        lines.push(("hinge_tape_one_thread", n, one_thread, one_thread / fused));
        lines.push(("hinge_fused", n, fused, 1.0));
        lines.push(("hinge_fused_into", n, into, into / fused));
    }

    let nodes = 1_000_000;
    let mut tape = Tape::with_capacity(nodes);
    assert!((scalar_chain(&mut tape, nodes) - scalar_chain_by_hand(nodes)).abs() < 1e-9);
    let reps = if quick { 3 } else { 11 };
    let chain = median_ms(reps, 2, || scalar_chain(&mut tape, nodes));
    let fresh = median_ms(reps, 1, || scalar_chain(&mut Tape::new(), nodes));
    let by_hand = median_ms(reps, 2, || scalar_chain_by_hand(nodes));
    let other = reverse::Tape::new();
    let dr = scalar_chain_reverse(&other, nodes) - scalar_chain_by_hand(nodes);
    assert!(
        dr.abs() < 1e-9,
        "reverse's chain gives another gradient ({dr})"
    );
    let on_reverse = median_ms(reps, 2, || scalar_chain_reverse(&other, nodes));
    let steps = ((nodes - 4) / 3) as f64;
    let before = ALLOCATIONS.load(Relaxed);
    black_box(scalar_chain(&mut tape, nodes));
    let allocations = ALLOCATIONS.load(Relaxed) - before;
    println!();
    println!(
        "scalar_chain: {nodes} rank-0 nodes, forward + backward: {:.2} ms = {:.1} ns/node \
         on a cleared tape ({allocations} heap allocations in all); {:.1} ns/node on a fresh \
         tape; plain f64 by hand: {:.3} ms",
        chain,
        chain * 1e6 / nodes as f64,
        fresh * 1e6 / nodes as f64,
        by_hand
    );
    println!(
        "  per step (v = max(v * a + b, c)): tapegrad {:.1} ns, the reverse crate (0.2.2) \
         {:.1} ns on its cleared tape: {:.2}x",
        chain * 1e6 / steps,
        on_reverse * 1e6 / steps,
        chain / on_reverse
    );
    lines.push(("scalar_chain", nodes, chain, chain / by_hand));
    lines.push((
        "scalar_chain_reverse_crate",
        nodes,
        on_reverse,
        on_reverse / by_hand,
    ));
    lines.push(("scalar_chain_fresh_tape", nodes, fresh, fresh / by_hand));
    lines.push(("scalar_chain_by_hand", nodes, by_hand, 1.0));

    println!();
    for (case, n, ms, ratio) in lines {
        line(case, n, ms, ratio);
    }
    println!(
        "bench case=peak_memory n={} bytes_per_element={:.1}",
        sizes.last().unwrap(),
        peak as f64 / *sizes.last().unwrap() as f64
    );
}
