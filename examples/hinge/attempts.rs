//! The seed question's attempts at `hinge_grad_input`, ported to Rust, with the answer
//! that worked and a few more ways to get it wrong; plus the batch they are judged on.
//!
//! Shared by `examples/hinge/main.rs` (`--attempts`) and `tests/hinge_attempts.rs`
//! (through `#[path]`), so the example prints what the test asserts.
//!
//! The seed is the StackOverflow question "Hinge loss function gradient w.r.t. input
//! prediction" (question 53225960). Its NumPy is quoted above each port, with `p` for
//! `target_pred`, `t` for `target_true` and `N` for `target_pred.size`. The ports keep
//! the logic as written, dead stores and all: try 1 returns a scalar, which `compare`
//! reports as a shape mismatch against the `[N]` gradient instead of panicking.

use tapegrad::check::Comparison;
use tapegrad::losses::hinge;
use tapegrad::{Tape, Tensor, pairwise_sum};

/// SplitMix64: a tiny seeded generator, so every run sees the same "random" batch.
pub struct Rng(u64);

impl Rng {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        let unit = (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        lo + (hi - lo) * unit
    }

    /// `+1.0` or `-1.0` with equal odds.
    pub fn sign(&mut self) -> f64 {
        if self.next_u64() >> 63 == 0 {
            1.0
        } else {
            -1.0
        }
    }
}

/// The batch everything here is judged on: 16 elements, `(pred, target)`.
///
/// - 6 exact ties, `pred * target == 1.0` in f64: (1, 1), (-1, -1), (0.5, 2), (2, 0.5),
///   (-0.25, -4), and (1/3, 3), whose product rounds to exactly 1.0;
/// - the two f64 neighbours of a tie, one on each side, and three more fixed cases with
///   real-valued targets (active, wrong side, comfortably inactive);
/// - 5 seeded random elements, NaN-free, with ±1 or real-valued targets.
pub fn tie_batch() -> (Tensor, Tensor) {
    let mut pred = vec![
        1.0,
        -1.0,
        0.5,
        2.0,
        -0.25,
        1.0 / 3.0,
        1.0 - f64::EPSILON / 2.0, // the largest f64 below 1: active by one ulp
        1.0 + f64::EPSILON,       // the smallest f64 above 1: inactive by one ulp
        0.0,
        3.0,
        -2.0,
    ];
    let mut target = vec![1.0, -1.0, 2.0, 0.5, -4.0, 3.0, 1.0, 1.0, 1.5, -1.0, -1.5];
    let mut rng = Rng::new(53225960);
    for i in 0..5 {
        pred.push(rng.uniform(-2.0, 2.0));
        target.push(if i % 2 == 0 {
            rng.sign()
        } else {
            rng.uniform(-2.0, 2.0)
        });
    }
    (Tensor::from(pred), Tensor::from(target))
}

/// Where `pred * target == 1` exactly: the kink of the hinge.
pub fn ties(pred: &Tensor, target: &Tensor) -> Vec<bool> {
    products(pred, target).map(|z| z == 1.0).collect()
}

/// Where `pred * target < 1`: the hinge is active and the gradient is `-target / N`.
pub fn active(pred: &Tensor, target: &Tensor) -> Vec<bool> {
    products(pred, target).map(|z| z < 1.0).collect()
}

fn products<'a>(pred: &'a Tensor, target: &'a Tensor) -> impl Iterator<Item = f64> + 'a {
    pred.data().iter().zip(target.data()).map(|(p, t)| p * t)
}

/// The tape's gradient of `tapegrad::losses::hinge` with respect to `pred`: the
/// reference every attempt is compared with.
pub fn tape_gradient(pred: &Tensor, target: &Tensor) -> Tensor {
    let tape = Tape::new();
    let p = tape.var(pred.clone());
    let t = tape.constant(target.clone());
    let grads = hinge(p, t).backward();
    grads.wrt(p).clone()
}

/// What the comparison with the tape gradient should show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Every element within tolerance.
    Pass,
    /// A result of another shape: nothing compared, the report names both shapes.
    ShapeMismatch,
    /// Fails only at ties, so the worst element is a tie.
    FailAtTies,
    /// Fails where the hinge is active, and the worst element is an active one.
    FailActive,
    /// Fails where the hinge is flat too (inactive elements, whose gradient is 0).
    FailFlat,
}

impl Expect {
    /// Whether `report` (an attempt compared with the tape gradient on `pred`, `target`)
    /// shows what was expected; if not, why not.
    pub fn check(self, report: &Comparison, pred: &Tensor, target: &Tensor) -> Result<(), String> {
        let ties = ties(pred, target);
        let active = active(pred, target);
        let worst = report.worst_index();
        match self {
            Expect::Pass if report.passed() => Ok(()),
            Expect::Pass => Err(format!("expected PASS, got {report}")),
            Expect::ShapeMismatch if !report.shapes_match() => Ok(()),
            Expect::ShapeMismatch => Err("expected a shape mismatch".into()),
            Expect::FailAtTies => {
                let n_ties = ties.iter().filter(|&&k| k).count();
                match worst {
                    Some(i) if !report.passed() && ties[i] && report.failing() == n_ties => Ok(()),
                    _ => Err(format!(
                        "expected to fail at the {n_ties} ties only, got {report}"
                    )),
                }
            }
            Expect::FailActive => match worst {
                Some(i) if !report.passed() && active[i] => Ok(()),
                _ => Err(format!(
                    "expected the worst element to be active, got {report}"
                )),
            },
            Expect::FailFlat => {
                let tol = report.tolerance();
                let flat_fails = report
                    .worst()
                    .iter()
                    .any(|e| !active[e.flat] && !ties[e.flat] && !tol.accepts(e.got, e.want));
                match flat_fails {
                    true => Ok(()),
                    false => Err(format!(
                        "expected a failure where the hinge is flat, got {report}"
                    )),
                }
            }
        }
    }
}

/// One attempt at `hinge_grad_input(pred, target)`.
pub struct Attempt {
    /// Short name.
    pub name: &'static str,
    /// The NumPy it ports (one line).
    pub numpy: &'static str,
    /// Why it is right or wrong, in one line.
    pub why: &'static str,
    /// What comparing it with the tape gradient should show.
    pub expect: Expect,
    /// The port.
    pub grad: fn(&Tensor, &Tensor) -> Tensor,
}

/// Every attempt, the right answer first.
pub fn all() -> Vec<Attempt> {
    vec![
        Attempt {
            name: "answer",
            numpy: "np.where(p * t < 1, -t / N, 0)",
            why: "d/dp max(0, 1 - p t)/N is -t/N where p t < 1 and 0 where p t > 1; at the tie both sides take 0",
            expect: Expect::Pass,
            grad: answer,
        },
        Attempt {
            name: "try 1",
            numpy: "np.sum(np.where(hinge > 0))  (0 if the loss is 0)",
            why: "np.where with one argument gives indices: the result is one number (their sum), not a gradient of shape [N]",
            expect: Expect::ShapeMismatch,
            grad: try_1,
        },
        Attempt {
            name: "try 2",
            numpy: "g = zeros_like(hinge); g[hinge > 0] = 1",
            why: "the right mask, but the value is 1 instead of -t/N: no sign, no target, no 1/N",
            expect: Expect::FailActive,
            grad: try_2,
        },
        Attempt {
            name: "try 3",
            numpy: "0 if the loss is 0; else g[loss > 0] = 1; g = np.sum(g) * p",
            why: "the mask is summed away: the number of active elements times pred, nonzero even where the loss is flat",
            expect: Expect::FailFlat,
            grad: try_3,
        },
        Attempt {
            name: "<= instead of <",
            numpy: "np.where(p * t <= 1, -t / N, 0)",
            why: "counts the ties as active: -t/N at p t == 1, where max(0, 0) has 0 on the right",
            expect: Expect::FailAtTies,
            grad: le_instead_of_lt,
        },
        Attempt {
            name: "missing / N",
            numpy: "np.where(p * t < 1, -t, 0)",
            why: "the gradient of the sum, not of the mean: N times too large where active",
            expect: Expect::FailActive,
            grad: missing_n,
        },
        Attempt {
            name: "flipped sign",
            numpy: "np.where(p * t < 1, t / N, 0)",
            why: "forgets the minus of 1 - p t: points uphill",
            expect: Expect::FailActive,
            grad: flipped_sign,
        },
        Attempt {
            name: "pred for target",
            numpy: "np.where(p * t < 1, -p / N, 0)",
            why: "differentiates with respect to the wrong factor: d(p t)/dp is t, not p",
            expect: Expect::FailActive,
            grad: pred_for_target,
        },
        Attempt {
            name: "JAX's 0.5 at ties",
            numpy: "np.where(p * t < 1, -t / N, np.where(p * t == 1, -0.5 * t / N, 0))",
            why: "jax.grad of jnp.maximum splits a tie half and half; the seed's closed form gives 0",
            expect: Expect::FailAtTies,
            grad: jax_half_at_ties,
        },
    ]
}

// ---- helpers in NumPy's terms ----------------------------------------------------------

/// `np.maximum(0, 1 - p * t)` (NaN stays NaN, as in numpy, unlike `f64::max`).
fn hinge_terms(p: &Tensor, t: &Tensor) -> Vec<f64> {
    products(p, t)
        .map(|z| 1.0 - z)
        .map(|h| if h.is_nan() || h > 0.0 { h } else { 0.0 })
        .collect()
}

/// The seed's `hinge_forward`: `np.sum((np.maximum(0, 1 - p * t)) / p.size)`.
fn hinge_forward(p: &Tensor, t: &Tensor) -> f64 {
    let n = p.len() as f64;
    let divided: Vec<f64> = hinge_terms(p, t).into_iter().map(|h| h / n).collect();
    pairwise_sum(&divided)
}

/// `np.where(cond(p * t), value(p, t), 0)`, elementwise.
fn where_product(
    p: &Tensor,
    t: &Tensor,
    cond: impl Fn(f64) -> bool,
    value: impl Fn(f64, f64) -> f64,
) -> Tensor {
    let g = p
        .data()
        .iter()
        .zip(t.data())
        .map(|(&p, &t)| if cond(p * t) { value(p, t) } else { 0.0 })
        .collect();
    Tensor::new(g, p.shape()).expect("same length as pred")
}

// ---- the seed's three attempts ---------------------------------------------------------

/// Try 1:
/// ```python
/// hinge_result = hinge_forward(target_pred, target_true)
/// if hinge_result == 0:
///     grad_input = 0
/// else:
///     hinge = np.maximum(0, 1 - target_pred * target_true)
///     grad_input = np.zeros_like(hinge)
///     grad_input[hinge > 0] = 1
///     grad_input = np.sum(np.where(hinge > 0))
/// ```
/// `np.where(mask)` is a tuple of index arrays, so the last line sums the *indices* of
/// the active elements: a scalar, overwriting the mask built just before.
pub fn try_1(p: &Tensor, t: &Tensor) -> Tensor {
    if hinge_forward(p, t) == 0.0 {
        return Tensor::scalar(0.0);
    }
    let hinge = hinge_terms(p, t);
    let mut grad_input = vec![0.0; hinge.len()];
    for (g, &h) in grad_input.iter_mut().zip(&hinge) {
        if h > 0.0 {
            *g = 1.0;
        }
    }
    let _ = grad_input; // overwritten by the next line, as in the original
    let indices: Vec<f64> = (0..hinge.len())
        .filter(|&i| hinge[i] > 0.0)
        .map(|i| i as f64)
        .collect();
    Tensor::scalar(pairwise_sum(&indices))
}

/// Try 2:
/// ```python
/// hinge = np.maximum(0, 1 - target_pred * target_true)
/// grad_input = np.zeros_like(hinge)
/// grad_input[hinge > 0] = 1
/// ```
pub fn try_2(p: &Tensor, t: &Tensor) -> Tensor {
    let g = hinge_terms(p, t)
        .into_iter()
        .map(|h| if h > 0.0 { 1.0 } else { 0.0 })
        .collect();
    Tensor::new(g, p.shape()).expect("same length as pred")
}

/// Try 3 (the one left uncommented in the question):
/// ```python
/// hinge_result = hinge_forward(target_pred, target_true)
/// if hinge_result == 0:
///     grad_input = 0
/// else:
///     loss = np.maximum(0, 1 - target_pred * target_true)
///     grad_input = np.zeros_like(loss)
///     grad_input[loss > 0] = 1
///     grad_input = np.sum(grad_input) * target_pred
/// ```
/// The mask is right, but summing it leaves the number of active elements, which then
/// multiplies `pred`: a vector of the right shape, wrong wherever that product is not
/// the true gradient, flat elements included. With no element active the result is the
/// scalar 0 (a shape mismatch, like try 1).
pub fn try_3(p: &Tensor, t: &Tensor) -> Tensor {
    if hinge_forward(p, t) == 0.0 {
        return Tensor::scalar(0.0);
    }
    let active = try_2(p, t);
    let count = pairwise_sum(active.data());
    let g = p.data().iter().map(|&pi| count * pi).collect();
    Tensor::new(g, p.shape()).expect("same length as pred")
}

// ---- the answer, and more wrong variants -------------------------------------------------

/// The accepted answer: `np.where(target_pred * target_true < 1, -target_true / N, 0)`.
pub fn answer(p: &Tensor, t: &Tensor) -> Tensor {
    let n = p.len() as f64;
    where_product(p, t, |z| z < 1.0, |_, t| -t / n)
}

/// `<=` instead of `<`: wrong exactly at the ties.
pub fn le_instead_of_lt(p: &Tensor, t: &Tensor) -> Tensor {
    let n = p.len() as f64;
    where_product(p, t, |z| z <= 1.0, |_, t| -t / n)
}

/// The gradient of the summed loss, not the mean.
pub fn missing_n(p: &Tensor, t: &Tensor) -> Tensor {
    where_product(p, t, |z| z < 1.0, |_, t| -t)
}

/// `+t / N`.
pub fn flipped_sign(p: &Tensor, t: &Tensor) -> Tensor {
    let n = p.len() as f64;
    where_product(p, t, |z| z < 1.0, |_, t| t / n)
}

/// `-p / N`.
pub fn pred_for_target(p: &Tensor, t: &Tensor) -> Tensor {
    let n = p.len() as f64;
    where_product(p, t, |z| z < 1.0, |p, _| -p / n)
}

/// JAX's convention: `jax.grad` of `jnp.maximum(0, x)` gives 0.5 at `x == 0`.
pub fn jax_half_at_ties(p: &Tensor, t: &Tensor) -> Tensor {
    let n = p.len() as f64;
    let g = p
        .data()
        .iter()
        .zip(t.data())
        .map(|(&p, &t)| {
            let z = p * t;
            if z < 1.0 {
                -t / n
            } else if z == 1.0 {
                -0.5 * t / n
            } else {
                0.0
            }
        })
        .collect();
    Tensor::new(g, p.shape()).expect("same length as pred")
}
