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

pub use ops::{Operands, max, min, select};
pub use tape::{Gradients, Tape, Var};
pub use tensor::{Error, Shape, Tensor, pairwise_sum, pooled_bytes, release_pooled_buffers};

/// The README's Rust examples run as doctests, so the tour cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
