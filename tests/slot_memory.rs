//! The gradient slots of a sweep hold no more tensors than the sweep needs at once, and
//! `Tape::clear` drops the tensors that a sweep cut short by a panic left in them. Both
//! tests measure live heap bytes with the counting allocator below, so they run one
//! after the other (a lock), and no other test shares this binary.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
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
