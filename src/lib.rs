//! # tapegrad
//!
//! A small, exact reverse-mode automatic-differentiation engine over n-d `f64` tensors,
//! built to answer one question: *is my hand-written gradient right?*
//!
//! Build an expression from ops on a [`Tape`], call [`Var::backward`], and compare the
//! tape's gradient with yours, element by element. The motivating case is the hinge
//! loss, whose closed-form gradient has a kink at `pred * target == 1`; tapegrad agrees
//! with the closed form exactly there (see [`max`] for the rule).
//!
//! ```
//! use tapegrad::{max, min, Tape, Tensor, Var};
//! use tapegrad::losses::{hinge, hinge_grad_closed_form};
//! use tapegrad::check::{compare, Tolerance};
//!
//! let pred = Tensor::from(vec![0.5, 1.0, 2.0, -1.0]); // 1.0 * 1.0 == 1: a tie
//! let target = Tensor::from(vec![1.0, 1.0, -1.0, 1.0]);
//! let tape = Tape::new();
//! let p: Var = tape.var(pred.clone());
//! let t: Var = tape.constant(target.clone());
//! let loss = hinge(p, t);
//! let value: f64 = loss.value().item();
//! assert_eq!(value, (0.5 + 0.0 + 3.0 + 2.0) / 4.0);
//! let grads = loss.backward();
//! let g: &Tensor = grads.wrt(p);
//! let manual = hinge_grad_closed_form(&pred, &target);
//! let report = compare(g, &manual, Tolerance::default());
//! assert!(report.passed(), "{report}");
//! assert_eq!(g.data(), &[-0.25, 0.0, 0.25, -0.25]); // 0 at the tie, as np.where
//! ```
//!
//! Rules that hold everywhere:
//! - Elementwise ops broadcast like numpy; `backward` reduces each gradient back to its
//!   operand's shape.
//! - IEEE arithmetic: NaN propagates (also through [`max`] and [`min`], like
//!   `np.maximum`), division by zero gives inf or NaN; nothing is clamped.
//! - `max`/`min` route each gradient element to one operand and give the other exactly
//!   0; a zero upstream gradient stays exactly 0 (no `0 * inf = NaN`).
//! - Shape errors panic at the op with the op's name, both shapes and the caller's line.
//!
//! # Fusion
//!
//! On large tensors a chain of elementwise ops is not computed op by op, each streaming
//! whole arrays through memory: it is *fused*. An elementwise op whose operands are each
//! one number or as long as its result is recorded *pending* (its shape is known, its
//! elements are not computed yet). When something needs the elements, the chain behind
//! them is evaluated block by block (256 elements, so that every intermediate stays in
//! the L1 cache), and only what was asked for is written out:
//! - `sum` and `mean` of a pending value are not computed when recorded either: they
//!   sum it block by block, with numpy's pairwise blocking (so the sum is the one
//!   [`pairwise_sum`] gives on the laid-out array), when something needs them; or,
//!   when `backward` starts from them before anyone has, in the backward's own pass;
//! - any other op and [`Var::value`] lay the value out and keep it (`value()` inside a
//!   custom op's backward computes it without keeping it); `Display` and `to_dot`
//!   compute only the elements they show;
//! - `backward` takes each fused chain in one pass: per block it recomputes the chain's
//!   values, applies each op's per-element backward rule in reverse, and writes only the
//!   gradients of the chain's inputs.
//!
//! So a loss that ends in `sum` or `mean` of a fused chain, like [`losses::hinge`], is
//! computed with its gradient in one pass over the inputs if `backward` comes first and
//! the value is read after it; reading the value first costs a pass of its own (the
//! results are the same), or on [`Tape::new`] below 2^18 elements lays the chain out.
//! A pass over a chain of at least 2^18 elements is split among threads
//! ([`set_threads`], `TAPEGRAD_THREADS`; by default as many as the machine has, at most
//! 8), at the top levels of the pairwise recursion, so the bits do not depend on the
//! count.
//!
//! Both directions run each op's one per-element rule, and gradients are summed in the
//! order the unfused sweep sums them, so values and gradients are the same to the bit
//! as on an unfused tape, NaN, ±inf and ±0 included (`tests/fusion.rs` checks this over
//! the op table and random graphs). A NaN stays a NaN, but where two NaNs with different
//! payloads meet, which payload comes out may differ (Rust does not fix it: the
//! vectorized and the scalar tail of a loop may pick differently). The hinge loss at N = 10^7 keeps 3 arrays alive
//! (the two inputs and the gradient) where the unfused chain keeps 6.
//!
//! Which tape fuses what:
//! - [`Tape::new`] fuses results of 2^15 elements and more, of the ops that cost about
//!   as little as moving an element through memory (add, sub, mul, neg, max, min, abs,
//!   relu), and lays out a pending value as soon as a second op uses it. Below about
//!   2.5 x 10^4 elements computing each op whole is faster than a fused pass (2^15 is
//!   the power of two above); recomputing `exp`, `tanh` or `sin`, or a value shared by
//!   several chains, costs more than storing it. Below 2^18, where a chain's arrays stay
//!   in cache, laying out a pending value (`value()`, an op that does not fuse, a
//!   second use) lays out and keeps the whole chain below it, each op computed whole,
//!   so that the backward recomputes none of that chain: reading the loss before
//!   `backward` then costs what it costs unfused.
//! - [`Tape::fused`] fuses every elementwise op from two elements, shared values
//!   included: the least memory.
//! - [`Tape::unfused`] never fuses.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod check;
mod display;
mod fusion;
mod interop;
pub mod losses;
mod ops;
mod tape;
mod tensor;

pub use fusion::{set_threads, threads};
pub use ops::{Operands, max, min, select};
pub use tape::{Gradients, Tape, Var};
pub use tensor::{Error, Shape, Tensor, pairwise_sum, pooled_bytes, release_pooled_buffers};

/// The README's Rust examples run as doctests, so the tour cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
