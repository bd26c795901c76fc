//! The per-thread buffer pool gives its memory back when asked: after a hinge loss at
//! N = 10^7, dropping everything leaves the pool's buffers alive (by design: the next
//! call of that size reuses them), and `release_pooled_buffers` returns live memory to
//! where it was before the call; and after the unfused chain, which frees six arrays of N,
//! it keeps no more than its cap, 128 MiB. One test in this binary, so the allocator's count is
//! not disturbed by another test running beside it.

use tapegrad::losses::hinge;
use tapegrad::{Tape, Tensor, pooled_bytes, release_pooled_buffers};

#[path = "common/counting.rs"]
mod counting;
use counting::live;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

#[test]
fn live_memory_falls_back_after_a_large_hinge_once_the_pool_is_released() {
    const N: usize = 10_000_000;
    let array = (N * 8) as isize;
    let before = live();
    {
        let pred = Tensor::from((0..N).map(|i| (i % 7) as f64 - 3.0).collect::<Vec<_>>());
        let target = Tensor::from(
            (0..N)
                .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
                .collect::<Vec<_>>(),
        );
        let tape = Tape::new();
        let p = tape.var(pred);
        let loss = hinge(p, tape.constant(target));
        let grads = loss.backward();
        assert_eq!(grads.wrt(p).len(), N);
        assert!(live() - before > 3 * array, "inputs and gradient are alive");
    }
    let kept = live() - before;
    assert!(
        pooled_bytes() as isize >= array,
        "the pool keeps buffers by design"
    );
    assert!(kept >= array, "{kept} bytes still held");
    let released = release_pooled_buffers() as isize;
    assert!(released >= array, "released {released}");
    assert_eq!(pooled_bytes(), 0);
    let after = live() - before;
    assert!(
        after < array / 100,
        "{after} bytes still live after release"
    );

    // The unfused chain frees six arrays of N; the pool keeps at most 128 MiB of them.
    {
        let pred = Tensor::from((0..N).map(|i| (i % 7) as f64 - 3.0).collect::<Vec<_>>());
        let target = Tensor::full(&[N], 1.0);
        let tape = Tape::unfused();
        let p = tape.var(pred);
        let grads = hinge(p, tape.constant(target)).backward();
        assert_eq!(grads.wrt(p).len(), N);
    }
    let pooled = pooled_bytes();
    assert!(pooled >= N * 8, "the pool keeps a buffer for the next call");
    assert!(
        pooled <= 128 << 20,
        "{pooled} bytes kept after the computation finished"
    );
    release_pooled_buffers();
}
