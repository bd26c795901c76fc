"""Time the peers of `cargo run --release --example bench` on the seed's workload.

Not part of CI (CI needs no Python). Run it right after the bench, on the same machine:

    python3 -m venv venv && venv/bin/pip install numpy "jax[cpu]"
    venv/bin/python examples/peers/hinge_peers.py

It draws the bench's inputs with the bench's generator (xorshift64, the same seed:
labels +-1, predictions uniform in [-2, 2) with every tenth one at its label, a tie),
and reports medians, in ms, of:
- numpy: the seed question's `hinge_forward` and the np.where gradient
  (`np.where(pred * target < 1, -target / N, 0)`), value and gradient;
- jax: `jax.jit(jax.value_and_grad(loss))` in float64 on the CPU, the result blocked on.
The repetitions follow the bench's: 301 up to 10^5, 31 at 10^6, 9 at 10^7.
"""

import sys
import timeit

import numpy as np

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402


def batch(n):
    """The bench's `batch(n)`: the same xorshift64 stream and the same use of it."""
    s = 0x123456789ABCDEF0
    mask = (1 << 64) - 1
    # The stream is drawn in order: n labels, then the predictions that are not ties.
    draws = []
    count = n + (n - (n + 9) // 10)
    for _ in range(count):
        s ^= (s << 13) & mask
        s ^= s >> 7
        s ^= (s << 17) & mask
        draws.append((s >> 11) / float(1 << 53))
    target = np.where(np.array(draws[:n]) < 0.5, -1.0, 1.0)
    rest = iter(draws[n:])
    pred = np.array([target[i] if i % 10 == 0 else 4.0 * next(rest) - 2.0 for i in range(n)])
    return pred, target


def hinge_forward(target_pred, target_true):
    """The seed question's loss."""
    return np.sum((np.maximum(0, 1 - target_pred * target_true)) / target_pred.size)


def hinge_grad_input(target_pred, target_true):
    """The seed question's accepted gradient."""
    return np.where(target_pred * target_true < 1, -target_true / target_pred.size, 0)


def numpy_both(pred, target):
    return hinge_forward(pred, target), hinge_grad_input(pred, target)


def jax_loss(pred, target):
    return jnp.sum(jnp.maximum(0.0, 1.0 - pred * target)) / pred.size


jax_both = jax.jit(jax.value_and_grad(jax_loss))


def median_ms(f, reps, warm):
    for _ in range(warm):
        f()
    times = timeit.repeat(f, repeat=reps, number=1)
    return sorted(times)[reps // 2] * 1e3


def main():
    sizes = [10**3, 10**4, 10**5, 10**6, 10**7]
    if "--quick" in sys.argv:
        sizes = sizes[:4]
    print(f"numpy {np.__version__}, jax {jax.__version__} ({jax.devices()[0].platform}, float64)")
    print(f"{'N':>10}  {'numpy (ms)':>12}  {'jax.jit (ms)':>12}")
    for n in sizes:
        pred, target = batch(n)
        reps = 9 if n >= 10**7 else 31 if n >= 10**6 else 301
        warm = max(reps // 4, 2)
        # The same loss first: the timing is of equal work. (The gradients differ at the
        # ties, every tenth element: JAX splits the tie of `maximum`, the closed form
        # does not.)
        loss, grad = numpy_both(pred, target)
        jp, jt = jnp.asarray(pred), jnp.asarray(target)
        jloss, jgrad = jax_both(jp, jt)
        assert abs(float(jloss) - loss) <= 1e-12 * max(abs(loss), 1.0)
        away = pred * target != 1
        assert np.array_equal(np.asarray(jgrad)[away], grad[away])
        t_np = median_ms(lambda: numpy_both(pred, target), reps, warm)
        t_jax = median_ms(lambda: jax.block_until_ready(jax_both(jp, jt)), reps, warm)
        print(f"{n:>10}  {t_np:>12.4f}  {t_jax:>12.4f}")
        print(f"peer case=numpy n={n} median_ms={t_np:.6f}")
        print(f"peer case=jax_jit n={n} median_ms={t_jax:.6f}")


if __name__ == "__main__":
    main()
