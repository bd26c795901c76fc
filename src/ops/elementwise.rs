//! The elementwise ops: each one [`PerElement`] rule (its value and derivative, written
//! once) and the method or operator that records it.

use super::{Elementwise, Operands, PerElement, chain, chain_div, record};
use crate::tape::{Held, Op, Var};

// ---- add: a + b ------------------------------------------------------------------------
struct Add;
impl PerElement for Add {
    const NAME: &'static str = "add";
    const CHEAP: bool = true;
    const READS_OUT: bool = false;
    const UPSTREAM_ONLY: bool = true;
    fn value(&self, a: f64, b: f64) -> f64 {
        a + b
    }
    fn grad(&self, _: f64, _: f64, _: f64, u: f64) -> [f64; 2] {
        [u, u]
    }
}
operator!(Add, add, Add);

// ---- sub: a - b ------------------------------------------------------------------------
struct Sub;
impl PerElement for Sub {
    const NAME: &'static str = "sub";
    const CHEAP: bool = true;
    const READS_OUT: bool = false;
    const UPSTREAM_ONLY: bool = true;
    fn value(&self, a: f64, b: f64) -> f64 {
        a - b
    }
    fn grad(&self, _: f64, _: f64, _: f64, u: f64) -> [f64; 2] {
        [u, -u]
    }
}
operator!(Sub, sub, Sub);

// ---- mul: a * b ------------------------------------------------------------------------
struct Mul;
impl PerElement for Mul {
    const NAME: &'static str = "mul";
    const CHEAP: bool = true;
    const READS_OUT: bool = false;
    fn value(&self, a: f64, b: f64) -> f64 {
        a * b
    }
    fn grad(&self, a: f64, b: f64, _: f64, u: f64) -> [f64; 2] {
        [chain(u, b), chain(u, a)]
    }
}
operator!(Mul, mul, Mul);

// ---- div: a / b (IEEE: x / 0 is ±inf or NaN, nothing is clamped) ----------------------
// d(a/b)/da = 1/b, d(a/b)/db = -(a/b)/b = -out/b
struct Div;
impl PerElement for Div {
    const NAME: &'static str = "div";
    fn value(&self, a: f64, b: f64) -> f64 {
        a / b
    }
    fn grad(&self, _: f64, b: f64, out: f64, u: f64) -> [f64; 2] {
        // -(u out) / b, not -(u out / b): the sign of a zero follows the maths.
        let gb = if u == 0.0 { 0.0 } else { -(u * out) / b };
        [chain_div(u, b), gb]
    }
}
operator!(Div, div, Div);

// ---- neg: -a ---------------------------------------------------------------------------
struct Neg;
impl PerElement for Neg {
    const NAME: &'static str = "neg";
    const CHEAP: bool = true;
    const READS_OUT: bool = false;
    const UPSTREAM_ONLY: bool = true;
    fn value(&self, a: f64, _: f64) -> f64 {
        -a
    }
    fn grad(&self, _: f64, _: f64, _: f64, u: f64) -> [f64; 2] {
        [-u, 0.0]
    }
}

/// Elementwise negation.
impl<'t> std::ops::Neg for Var<'t> {
    type Output = Var<'t>;
    #[track_caller]
    fn neg(self) -> Var<'t> {
        record(Neg, &[self])
    }
}

// ---- exp: d e^a = e^a ------------------------------------------------------------------
struct Exp;
impl PerElement for Exp {
    const NAME: &'static str = "exp";
    fn value(&self, a: f64, _: f64) -> f64 {
        a.exp()
    }
    fn grad(&self, _: f64, _: f64, out: f64, u: f64) -> [f64; 2] {
        [chain(u, out), 0.0]
    }
}

impl<'t> Var<'t> {
    /// Elementwise `e^x`.
    #[track_caller]
    pub fn exp(self) -> Var<'t> {
        record(Exp, &[self])
    }
}

// ---- ln: d ln a = 1 / a ----------------------------------------------------------------
struct Ln;
impl PerElement for Ln {
    const NAME: &'static str = "ln";
    const READS_OUT: bool = false;
    fn value(&self, a: f64, _: f64) -> f64 {
        a.ln()
    }
    fn grad(&self, a: f64, _: f64, _: f64, u: f64) -> [f64; 2] {
        [chain_div(u, a), 0.0]
    }
}

impl<'t> Var<'t> {
    /// Elementwise natural logarithm (IEEE: `ln(0) = -inf`, `ln(-1) = NaN`).
    #[track_caller]
    pub fn ln(self) -> Var<'t> {
        record(Ln, &[self])
    }
}

// ---- max and min: numpy's values; the tie rule for the gradient -----------------------

/// Where the gradient of `max`/`min` goes where neither operand wins (a tie, or a NaN
/// on either side), fixed when the op is recorded from which operands are tracked: to
/// the untracked one, or half to each if both are tracked. A type parameter, so the
/// backward loop has no branch on it.
const TO_FIRST: u8 = 0;
const TO_SECOND: u8 = 1;
const SPLIT: u8 = 2;

/// The tie rule of `max(a, b)` and `min(a, b)` from whether `a` and `b` are tracked:
/// the untracked operand gets a tie (the first if neither is tracked: nothing flows
/// then), half to each if both are tracked.
fn tie(a_tracked: bool, b_tracked: bool) -> u8 {
    match (a_tracked, b_tracked) {
        (true, true) => SPLIT,
        (true, false) => TO_SECOND,
        (false, _) => TO_FIRST,
    }
}

/// Record a selecting op (`max` or `min`) on `a` and `b`: its op for each tie rule is
/// `ops` (by [`tie`]), its value the `value` of any of them. The tie is from whether
/// `a` and `b` are tracked, read in the same look at the tape as their numbers when
/// both are rank-0.
#[track_caller]
fn selecting<'t, R: PerElement>(
    a: Var<'t>,
    b: Var<'t>,
    rule: R,
    ops: &'static [&'static dyn Op; 3],
) -> Var<'t> {
    // (the value does not depend on the tie rule)
    let value = |x, y| rule.value(x, y);
    if let Some(var) = a
        .tape
        .push_scalar(&[a, b], value, |ta, tb| ops[tie(ta, tb) as usize])
    {
        return var;
    }
    let (ta, tb) = Var::both_tracked(a, b);
    a.tape
        .push_held(Held::Static(ops[tie(ta, tb) as usize]), &[a, b])
}

/// The ops of `max` for each tie rule (by [`tie`]): constants, so recording one reads
/// a table in static memory.
const MAX_OPS: [&dyn Op; 3] = [
    &Elementwise(Max::<TO_FIRST>),
    &Elementwise(Max::<TO_SECOND>),
    &Elementwise(Max::<SPLIT>),
];

/// The ops of `min` for each tie rule, as [`MAX_OPS`].
const MIN_OPS: [&dyn Op; 3] = [
    &Elementwise(Min::<TO_FIRST>),
    &Elementwise(Min::<TO_SECOND>),
    &Elementwise(Min::<SPLIT>),
];

/// The gradients of a selecting op: `u` to the winner (`a` where `a_wins`, `b` where
/// `b_wins`), exactly 0 to the other; where neither wins, by the tie rule `TIE`.
#[inline(always)]
fn select<const TIE: u8>(a_wins: bool, b_wins: bool, u: f64) -> [f64; 2] {
    let (tie_a, tie_b) = match TIE {
        TO_FIRST => (u, 0.0),
        TO_SECOND => (0.0, u),
        _ => (0.5 * u, 0.5 * u),
    };
    let ga = if a_wins {
        u
    } else if b_wins {
        0.0
    } else {
        tie_a
    };
    let gb = if b_wins {
        u
    } else if a_wins {
        0.0
    } else {
        tie_b
    };
    [ga, gb]
}

/// `np.maximum`: NaN where either operand is NaN, `b` at a tie (numpy returns b).
struct Max<const TIE: u8>;
impl<const TIE: u8> PerElement for Max<TIE> {
    const NAME: &'static str = "max";
    const CHEAP: bool = true;
    const READS_OUT: bool = false;
    fn value(&self, a: f64, b: f64) -> f64 {
        if a.is_nan() || a > b { a } else { b }
    }
    fn grad(&self, a: f64, b: f64, _: f64, u: f64) -> [f64; 2] {
        select::<TIE>(a > b, b > a, u)
    }
}

/// `np.minimum`: NaN where either operand is NaN, `b` at a tie.
struct Min<const TIE: u8>;
impl<const TIE: u8> PerElement for Min<TIE> {
    const NAME: &'static str = "min";
    const CHEAP: bool = true;
    const READS_OUT: bool = false;
    fn value(&self, a: f64, b: f64) -> f64 {
        if a.is_nan() || a < b { a } else { b }
    }
    fn grad(&self, a: f64, b: f64, _: f64, u: f64) -> [f64; 2] {
        select::<TIE>(a < b, b < a, u)
    }
}

/// Elementwise maximum of two operands (vars or `f64`s), broadcast like `np.maximum`.
///
/// - Value: NaN where either operand is NaN (like `np.maximum`, unlike `f64::max`), and
///   `b` at a tie, as numpy returns.
/// - Gradient: to `a` where `a > b`, to `b` where `b > a`; the other operand gets
///   exactly 0 (selected, never multiplied). Where neither wins (a tie, or a NaN on
///   either side): to the *untracked* operand if exactly one is untracked (a constant,
///   or an expression of constants), so nothing flows back; split 0.5 and 0.5 if both
///   are tracked. So `max(a, b)` and `max(b, a)` have the same gradient, `max(0.0, z)`
///   and `z.max(0.0)` both have gradient exactly `np.where(z > 0, 1, 0)`, the hinge loss
///   matches its closed form at `pred * target == 1`, and `max(x, -x)` has gradient
///   `np.sign(x)` (0 at 0).
///
/// ```
/// use tapegrad::{max, Tape, Tensor};
/// let tape = Tape::new();
/// let z = tape.var(Tensor::from(vec![-1.0, 0.0, 2.0]));
/// let g = max(0.0, z).sum().backward();
/// assert_eq!(g.wrt(z).data(), &[0.0, 0.0, 1.0]); // the tie at 0 goes to the constant
/// let g = z.max(0.0).sum().backward();
/// assert_eq!(g.wrt(z).data(), &[0.0, 0.0, 1.0]); // whichever side the constant is on
/// let g = max(z, -z).sum().backward();
/// assert_eq!(g.wrt(z).data(), &[-1.0, 0.0, 1.0]); // two tracked operands: half each
/// ```
///
/// # Panics
/// If the shapes do not broadcast, or the vars belong to different tapes.
#[track_caller]
pub fn max<'t, A, B>(a: A, b: B) -> Var<'t>
where
    (A, B): Operands<'t>,
{
    let (a, b) = (a, b).vars();
    selecting(a, b, Max::<TO_FIRST>, &MAX_OPS)
}

/// Elementwise minimum, the mirror of [`max`]: NaN wins, `b` at a tie; the gradient
/// goes to the smaller operand, and where neither is smaller (a tie or a NaN), by the
/// same rule as `max`: to the untracked operand, or half to each if both are tracked.
///
/// # Panics
/// If the shapes do not broadcast, or the vars belong to different tapes.
#[track_caller]
pub fn min<'t, A, B>(a: A, b: B) -> Var<'t>
where
    (A, B): Operands<'t>,
{
    let (a, b) = (a, b).vars();
    selecting(a, b, Min::<TO_FIRST>, &MIN_OPS)
}

impl<'t> Var<'t> {
    /// `max(self, other)`; see [`max`] for the NaN and tie rules.
    ///
    /// # Panics
    /// As [`max`].
    #[track_caller]
    pub fn max<B>(self, other: B) -> Var<'t>
    where
        (Var<'t>, B): Operands<'t>,
    {
        max(self, other)
    }

    /// `min(self, other)`; see [`min`].
    ///
    /// # Panics
    /// As [`min`].
    #[track_caller]
    pub fn min<B>(self, other: B) -> Var<'t>
    where
        (Var<'t>, B): Operands<'t>,
    {
        min(self, other)
    }
}

// ---- compound assignment: x += y is x = x + y ------------------------------------------

/// `x op= y` for a var `x` and a var or `f64` `y`: records `x op y` and makes `x` the
/// result (the old var stays on the tape, unchanged).
macro_rules! assign {
    ($trait:ident, $method:ident, $op:tt) => {
        /// Records `self op rhs` and rebinds `self` to it.
        impl<'t> std::ops::$trait<Var<'t>> for Var<'t> {
            #[track_caller]
            fn $method(&mut self, rhs: Var<'t>) {
                *self = *self $op rhs;
            }
        }
        /// Records `self op rhs` (a rank-0 constant) and rebinds `self` to it.
        impl<'t> std::ops::$trait<f64> for Var<'t> {
            #[track_caller]
            fn $method(&mut self, rhs: f64) {
                *self = *self $op rhs;
            }
        }
    };
}

assign!(AddAssign, add_assign, +);
assign!(SubAssign, sub_assign, -);
assign!(MulAssign, mul_assign, *);
assign!(DivAssign, div_assign, /);

// ---- abs: d|a| = sign(a), 0 at 0 (np.sign) ---------------------------------------------
struct Abs;
impl PerElement for Abs {
    const NAME: &'static str = "abs";
    const CHEAP: bool = true;
    const READS_OUT: bool = false;
    fn value(&self, a: f64, _: f64) -> f64 {
        a.abs()
    }
    fn grad(&self, a: f64, _: f64, _: f64, u: f64) -> [f64; 2] {
        let sign = if a > 0.0 {
            1.0
        } else if a < 0.0 {
            -1.0
        } else if a == 0.0 {
            0.0
        } else {
            f64::NAN // np.sign(nan)
        };
        [chain(u, sign), 0.0]
    }
}

impl<'t> Var<'t> {
    /// Elementwise `|x|` (`np.abs`). Gradient `np.sign(x)`: 0 at 0, as the closed form
    /// of `abs` and `max(x, -x)`.
    #[track_caller]
    pub fn abs(self) -> Var<'t> {
        record(Abs, &[self])
    }
}

// ---- sqrt: d sqrt(a) = 1 / (2 sqrt(a)) -------------------------------------------------
struct Sqrt;
impl PerElement for Sqrt {
    const NAME: &'static str = "sqrt";
    fn value(&self, a: f64, _: f64) -> f64 {
        a.sqrt()
    }
    fn grad(&self, _: f64, _: f64, out: f64, u: f64) -> [f64; 2] {
        [chain_div(u, 2.0 * out), 0.0]
    }
}

impl<'t> Var<'t> {
    /// Elementwise square root (`np.sqrt`: NaN below 0). Gradient `1 / (2 sqrt(x))`, inf
    /// at 0.
    #[track_caller]
    pub fn sqrt(self) -> Var<'t> {
        record(Sqrt, &[self])
    }
}

// ---- powf: d a^p = p a^(p-1) -----------------------------------------------------------
struct Powf(f64);
impl PerElement for Powf {
    const NAME: &'static str = "powf";
    const READS_OUT: bool = false;
    fn value(&self, a: f64, _: f64) -> f64 {
        a.powf(self.0)
    }
    fn grad(&self, a: f64, _: f64, _: f64, u: f64) -> [f64; 2] {
        let p = self.0;
        // x^0 is the constant 1 (also at x = 0, where p x^(p-1) would be 0 * inf).
        let local = if p == 0.0 { 0.0 } else { p * a.powf(p - 1.0) };
        [chain(u, local), 0.0]
    }
}

impl<'t> Var<'t> {
    /// Elementwise `x^p` (`np.power(x, p)`, IEEE `pow`: NaN for a negative `x` and a
    /// non-integer `p`). Gradient `p x^(p-1)` (0 for `p = 0`).
    #[track_caller]
    pub fn powf(self, p: f64) -> Var<'t> {
        record(Powf(p), &[self])
    }
}

// ---- tanh: d tanh(a) = 1 - tanh(a)^2 ---------------------------------------------------
struct Tanh;
impl PerElement for Tanh {
    const NAME: &'static str = "tanh";
    fn value(&self, a: f64, _: f64) -> f64 {
        a.tanh()
    }
    fn grad(&self, _: f64, _: f64, out: f64, u: f64) -> [f64; 2] {
        [chain(u, 1.0 - out * out), 0.0]
    }
}

impl<'t> Var<'t> {
    /// Elementwise hyperbolic tangent (`np.tanh`). Gradient `1 - tanh(x)^2`.
    #[track_caller]
    pub fn tanh(self) -> Var<'t> {
        record(Tanh, &[self])
    }
}

// ---- sigmoid: d s(a) = s(a) (1 - s(a)) -------------------------------------------------

/// `1 / (1 + e^-x)` without overflow: `e^x / (1 + e^x)` for negative `x`.
fn logistic(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

struct Sigmoid;
impl PerElement for Sigmoid {
    const NAME: &'static str = "sigmoid";
    fn value(&self, a: f64, _: f64) -> f64 {
        logistic(a)
    }
    fn grad(&self, _: f64, _: f64, out: f64, u: f64) -> [f64; 2] {
        [chain(u, out * (1.0 - out)), 0.0]
    }
}

impl<'t> Var<'t> {
    /// Elementwise logistic sigmoid `1 / (1 + e^-x)`, computed without overflow for
    /// large `|x|` (0 and 1 at the infinities). Gradient `s (1 - s)`.
    #[track_caller]
    pub fn sigmoid(self) -> Var<'t> {
        record(Sigmoid, &[self])
    }
}

// ---- relu: max(a, 0), gradient 1 where a > 0 and 0 elsewhere (0 at 0) -----------------
struct Relu;
impl PerElement for Relu {
    const NAME: &'static str = "relu";
    const CHEAP: bool = true;
    const READS_OUT: bool = false;
    fn value(&self, a: f64, _: f64) -> f64 {
        // np.maximum(a, 0): NaN stays NaN, and -0.0 gives 0.0 (numpy returns b at a tie).
        if a.is_nan() || a > 0.0 { a } else { 0.0 }
    }
    fn grad(&self, a: f64, _: f64, _: f64, u: f64) -> [f64; 2] {
        [if a > 0.0 { u } else { 0.0 }, 0.0]
    }
}

impl<'t> Var<'t> {
    /// Elementwise `max(x, 0)`, with the same value and gradient as `x.max(0.0)`: 1
    /// where `x > 0`, 0 elsewhere (at 0 and at NaN too, selected, never multiplied).
    #[track_caller]
    pub fn relu(self) -> Var<'t> {
        record(Relu, &[self])
    }
}

// ---- log1p: d ln(1 + a) = 1 / (1 + a) --------------------------------------------------
struct Log1p;
impl PerElement for Log1p {
    const NAME: &'static str = "log1p";
    const READS_OUT: bool = false;
    fn value(&self, a: f64, _: f64) -> f64 {
        a.ln_1p()
    }
    fn grad(&self, a: f64, _: f64, _: f64, u: f64) -> [f64; 2] {
        [chain_div(u, 1.0 + a), 0.0]
    }
}

impl<'t> Var<'t> {
    /// Elementwise `ln(1 + x)` (`np.log1p`: accurate for small `x`, -inf at -1).
    #[track_caller]
    pub fn log1p(self) -> Var<'t> {
        record(Log1p, &[self])
    }
}

// ---- softplus: ln(1 + e^a), gradient sigmoid(a) ----------------------------------------
struct Softplus;
impl PerElement for Softplus {
    const NAME: &'static str = "softplus";
    const READS_OUT: bool = false;
    fn value(&self, a: f64, _: f64) -> f64 {
        // max(a, 0) + ln(1 + e^-|a|): no overflow, and exact at the infinities.
        let positive = if a > 0.0 { a } else { 0.0 };
        if a.is_nan() {
            a
        } else {
            positive + (-a.abs()).exp().ln_1p()
        }
    }
    fn grad(&self, a: f64, _: f64, _: f64, u: f64) -> [f64; 2] {
        [chain(u, logistic(a)), 0.0]
    }
}

impl<'t> Var<'t> {
    /// Elementwise `ln(1 + e^x)` without overflow (`np.logaddexp(0, x)`). Gradient
    /// `sigmoid(x)`.
    #[track_caller]
    pub fn softplus(self) -> Var<'t> {
        record(Softplus, &[self])
    }
}

// ---- sin and cos -----------------------------------------------------------------------
struct Sin;
impl PerElement for Sin {
    const NAME: &'static str = "sin";
    const READS_OUT: bool = false;
    fn value(&self, a: f64, _: f64) -> f64 {
        a.sin()
    }
    fn grad(&self, a: f64, _: f64, _: f64, u: f64) -> [f64; 2] {
        [chain(u, a.cos()), 0.0]
    }
}

impl<'t> Var<'t> {
    /// Elementwise sine (`np.sin`). Gradient `cos(x)`.
    #[track_caller]
    pub fn sin(self) -> Var<'t> {
        record(Sin, &[self])
    }
}

struct Cos;
impl PerElement for Cos {
    const NAME: &'static str = "cos";
    const READS_OUT: bool = false;
    fn value(&self, a: f64, _: f64) -> f64 {
        a.cos()
    }
    fn grad(&self, a: f64, _: f64, _: f64, u: f64) -> [f64; 2] {
        [chain(u, -a.sin()), 0.0]
    }
}

impl<'t> Var<'t> {
    /// Elementwise cosine (`np.cos`). Gradient `-sin(x)`.
    #[track_caller]
    pub fn cos(self) -> Var<'t> {
        record(Cos, &[self])
    }
}
