//! What a tape keeps alive. The gradient slots of a sweep hold no more tensors than the
//! sweep needs at once; `Tape::clear` drops the tensors that a sweep cut short by a panic
//! left in them; and `Tape::new` keeps the values of a mid-sized chain that is read
//! before `backward`, but not of a longer one, nor of one the backward reaches first.
//! The tests measure live heap bytes with the counting allocator below, so they run one
//! after the other (a lock), and no other test shares this binary.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use tapegrad::losses::hinge;
use tapegrad::{Tape, Tensor, release_pooled_buffers};

#[path = "common/counting.rs"]
mod counting;
use counting::{live, peak, reset_peak};

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A chain whose every step adds one more tensor gradient into the slot of `a`: the
/// sweep holds a handful of tensors at once, however long the chain. (Before slots reused
/// the places of taken tensors, each addition kept a 40-byte place for good: over 48
/// bytes per step at the peak, here more than the nodes' own slots.)
#[test]
fn a_long_sweep_of_tensor_gradients_keeps_a_bounded_number_of_slots() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const STEPS: usize = 100_000;
    let tape = Tape::unfused();
    let a = tape.var(Tensor::from(vec![0.5, 0.25]));
    let mut x = tape.var(Tensor::from(vec![1.0, 2.0]));
    for _ in 0..STEPS {
        x = x * a + a;
    }
    let loss = x.sum();
    let before = live();
    reset_peak();
    let grads = loss.backward();
    let extra = peak() - before;
    let nodes = tape.len() as isize;
    // One 16-byte slot per node, a few tensors, the gradients returned.
    assert!(
        extra < 20 * nodes,
        "the sweep over {nodes} nodes took {extra} bytes at its peak ({:.1} per node)",
        extra as f64 / nodes as f64
    );
    assert!(grads.wrt(a).data().iter().all(|g| g.is_finite()));
}

/// A custom backward that panics leaves the tensor gradients of the nodes after it in
/// their slots; `clear` drops them, so the tape holds no 8 MB array afterwards.
#[test]
fn clear_drops_the_tensors_a_panicking_sweep_left_in_the_slots() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const N: usize = 1 << 20;
    let array = (N * 8) as isize;
    let mut tape = Tape::unfused();
    // (a silent panic: the default hook's backtrace would keep its own memory)
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    release_pooled_buffers();
    let before = live();
    {
        let x = tape.var(Tensor::from(
            (0..N).map(|i| i as f64 / N as f64).collect::<Vec<_>>(),
        ));
        let a = x.exp();
        let b = tape.custom("boom", &[x], |x| x[0].clone(), |_, _, _| panic!("boom"));
        let loss = (a * b).sum();
        let result = catch_unwind(AssertUnwindSafe(|| loss.backward()));
        assert!(result.is_err(), "the custom backward panics");
    }
    std::panic::set_hook(hook);
    tape.clear();
    release_pooled_buffers();
    let kept = live() - before;
    assert!(
        kept < array / 2,
        "{kept} bytes still live after clear (one array is {array})"
    );
}

/// The hinge at `n` elements on `tape`, from its inputs: the bytes left live by
/// recording it and reading the loss before `backward`, or the most bytes live at once
/// while recording it and running `backward` (the pool released first, so every array
/// counts).
fn hinge_bytes(tape: &Tape, n: usize, value_first: bool) -> isize {
    let pred = Tensor::from(
        (0..n)
            .map(|i| (i % 9) as f64 / 2.0 - 2.0)
            .collect::<Vec<_>>(),
    );
    let target = Tensor::from((0..n).map(|i| [1.0, -1.0][i % 2]).collect::<Vec<_>>());
    let (p, t) = (tape.var(pred), tape.constant(target));
    release_pooled_buffers();
    let before = live();
    reset_peak();
    let loss = hinge(p, t);
    let bytes = if value_first {
        let _ = loss.value();
        live() - before
    } else {
        let _ = loss.backward();
        peak() - before
    };
    assert!(loss.value().item() > 0.0);
    bytes
}

/// `Tape::new` fuses the hinge's chain from 2^15 elements, so a `backward` that comes
/// first holds about the gradient (and the value, computed in its pass, keeps nothing);
/// read first below 2^18, the chain's three arrays are laid out and kept for the
/// backward instead of recomputed in it; from 2^18, and on `Tape::fused`, they are not.
#[test]
fn tape_new_keeps_a_mid_sized_chain_read_before_backward() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for n in [(1 << 15) + 3, 100_000, (1 << 18) - 1, (1 << 18) + 1] {
        let array = (n * 8) as isize;
        let kept = hinge_bytes(&Tape::new(), n, true);
        if n < 1 << 18 {
            assert!(
                kept > 3 * array - array / 8 && kept < 3 * array + array / 8,
                "n = {n}: Tape::new kept {kept} bytes after reading the loss (one array is {array})"
            );
        } else {
            assert!(kept < array / 2, "n = {n}: Tape::new kept {kept} bytes");
        }
        let kept = hinge_bytes(&Tape::fused(), n, true);
        assert!(kept < array / 2, "n = {n}: Tape::fused kept {kept} bytes");
        // Unfused, the chain's three arrays and the backward's; fused, only the
        // gradient and a few blocks.
        let peak = hinge_bytes(&Tape::new(), n, false);
        assert!(
            peak < array + array / 4,
            "n = {n}: backward first took {peak} bytes at the peak (one array is {array})"
        );
        let peak = hinge_bytes(&Tape::unfused(), n, false);
        assert!(peak >= 3 * array, "n = {n}: unfused took {peak} bytes");
    }
}
