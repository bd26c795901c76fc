//! Reductions: all elements to one (`sum`, `mean`) and along one axis (`sum_axis`,
//! `max_axis`, `min_axis`, `mean_axis`, `logsumexp_axis`), and the normalizations along
//! an axis (`softmax`, `log_softmax`). An axis op sees its input as `[outer, len, inner]`
//! around the axis: element `(o, k, i)` sits at `(o * len + k) * inner + i`.

use super::{chain, fits, split_at};
use crate::tape::{InputGrads, Op, Var};
use crate::tensor::{Shape, Tensor, data_from_vec, pairwise_sum, zeroed};
use smallvec::smallvec;

// ---- sum: all elements to one; the gradient is upstream everywhere (kept as one number)
struct Sum;
impl Op for Sum {
    fn name(&self) -> &str {
        "sum"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor, String> {
        Ok(Tensor::scalar(pairwise_sum(x[0].data())))
    }
    fn backward(&self, _: &[&Tensor], _: &Tensor, up: Tensor, _: &[bool]) -> InputGrads {
        smallvec![Some(up)]
    }
    fn value_of_sum(&self) -> Option<fn(f64, usize) -> f64> {
        Some(|sum, _| sum)
    }
    fn grad_of_sum(&self, u: f64, _: usize) -> Option<f64> {
        Some(u)
    }
}

// ---- mean: sum / n -------------------------------------------------------------------
struct Mean;
impl Mean {
    /// The mean from the sum of `n` elements.
    fn of(sum: f64, n: usize) -> f64 {
        sum / n as f64
    }
    /// The gradient of every element from the upstream.
    fn grad(u: f64, n: usize) -> f64 {
        u / n as f64
    }
}
impl Op for Mean {
    fn name(&self) -> &str {
        "mean"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor, String> {
        Ok(Tensor::scalar(Mean::of(
            pairwise_sum(x[0].data()),
            x[0].len(),
        )))
    }
    fn backward(&self, x: &[&Tensor], _: &Tensor, up: Tensor, _: &[bool]) -> InputGrads {
        let n = x[0].len();
        smallvec![Some(up.map_in_place(|u| Mean::grad(u, n)))]
    }
    fn value_of_sum(&self) -> Option<fn(f64, usize) -> f64> {
        Some(Mean::of)
    }
    fn grad_of_sum(&self, u: f64, n: usize) -> Option<f64> {
        Some(Mean::grad(u, n))
    }
}

impl<'t> Var<'t> {
    /// Sum of all elements (pairwise, as accurate as `np.sum`), shape `[]`; 0 for an
    /// empty var.
    #[track_caller]
    pub fn sum(self) -> Var<'t> {
        self.tape.push(Sum, &[self])
    }

    /// Mean of all elements, shape `[]` (NaN for an empty var, like numpy).
    #[track_caller]
    pub fn mean(self) -> Var<'t> {
        self.tape.push(Mean, &[self])
    }
}

// ---- sum_axis: drop one axis by summing over it -------------------------------------
struct SumAxis(usize);
impl Op for SumAxis {
    fn name(&self) -> &str {
        "sum_axis"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor, String> {
        let (shape, axis) = (x[0].shape(), self.0);
        let (outer, len, inner, out_shape) = around("sum_axis", shape, axis)?;
        if x[0].is_empty() {
            // Sums over nothing (+0.0), or no sums at all.
            return Ok(Tensor::zeros(&out_shape));
        }
        let mut out = zeroed(outer * inner);
        let data = x[0].data();
        if inner == 1 {
            // The last axis: contiguous rows, summed pairwise like `sum` and `np.sum`.
            for (o, row) in out.iter_mut().zip(data.chunks_exact(len.max(1))) {
                *o = pairwise_sum(row);
            }
        } else {
            for o in 0..outer {
                let row = &mut out[o * inner..(o + 1) * inner];
                for k in 0..len {
                    let src = &data[(o * len + k) * inner..(o * len + k + 1) * inner];
                    row.iter_mut().zip(src).for_each(|(r, &s)| *r += s);
                }
            }
        }
        Ok(Tensor::from_parts(data_from_vec(out), out_shape))
    }
    fn backward(&self, _: &[&Tensor], out: &Tensor, up: Tensor, _: &[bool]) -> InputGrads {
        if up.len() == 1 {
            return smallvec![Some(Tensor::scalar(up.data()[0]))];
        }
        // Put the summed axis back as a 1, so the gradient broadcasts along it.
        let mut shape = Shape::from_slice(out.shape());
        shape.insert(self.0, 1);
        smallvec![Some(up.broadcast_to(out.shape()).into_reshaped(shape))]
    }
}

impl<'t> Var<'t> {
    /// Sum over `axis`, which is dropped from the shape (like `np.sum(x, axis)`).
    ///
    /// # Panics
    /// If `axis` is not below the var's rank (the message names the axis and the shape).
    #[track_caller]
    pub fn sum_axis(self, axis: usize) -> Var<'t> {
        self.tape.push(SumAxis(axis), &[self])
    }
}

/// `shape` as `[outer, len, inner]` around `axis`, and `shape` without the axis; an
/// error naming `op`, the axis and the rank if the axis is out of range, or if the
/// result has more elements than one allocation can hold.
fn around(op: &str, shape: &[usize], axis: usize) -> Result<(usize, usize, usize, Shape), String> {
    if axis >= shape.len() {
        return Err(format!(
            "{op}: axis {axis} is out of range for shape {shape:?} (rank {})",
            shape.len()
        ));
    }
    let mut out = Shape::from_slice(shape);
    out.remove(axis);
    fits(op, &out)?;
    let count = |dims: &[usize]| -> usize {
        if dims.contains(&0) {
            0
        } else {
            dims.iter().product()
        }
    };
    Ok((
        count(&shape[..axis]),
        shape[axis],
        count(&shape[axis + 1..]),
        out,
    ))
}

/// The axis ops' upstream at the output's shape (it may arrive as one number).
fn full_upstream(up: Tensor, out: &Tensor) -> Tensor {
    up.broadcast_to(out.shape())
}

// ---- max_axis and min_axis: NaN propagates; ties share the gradient evenly --------------

/// The maximum (`MAX`) or minimum of each lane along `axis`: NaN if the lane holds one
/// (`np.max`), else the extreme. Folded in order as `np.maximum` (the later of two tied
/// elements), so between +0.0 and -0.0 it returns the later one; numpy's vectorized
/// `np.max` can return either zero on longer lanes, so only the sign of a zero may differ.
fn extreme_forward<const MAX: bool>(op: &str, x: &Tensor, axis: usize) -> Result<Tensor, String> {
    let (outer, len, inner, out_shape) = around(op, x.shape(), axis)?;
    if len == 0 {
        return Err(format!(
            "{op}: axis {axis} of shape {:?} has length 0; the {} of nothing is undefined \
             (numpy raises too)",
            x.shape(),
            if MAX { "maximum" } else { "minimum" }
        ));
    }
    if x.is_empty() {
        return Ok(Tensor::zeros(&out_shape)); // no lanes (and no loop over them)
    }
    let data = x.data();
    let mut out = zeroed(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            let mut r = data[o * len * inner + i];
            for k in 1..len {
                let v = data[(o * len + k) * inner + i];
                let r_wins = if MAX { r > v } else { r < v };
                r = if r.is_nan() || r_wins { r } else { v };
            }
            out[o * inner + i] = r;
        }
    }
    Ok(Tensor::from_parts(data_from_vec(out), out_shape))
}

/// The upstream of each lane shared evenly among the lane's elements equal to its
/// extreme (the NaN elements where it is NaN); exactly 0 elsewhere.
fn extreme_backward(x: &Tensor, out: &Tensor, up: Tensor, axis: usize) -> InputGrads {
    let shape = x.shape();
    if x.is_empty() {
        return smallvec![Some(Tensor::zeros(shape))];
    }
    let (outer, len, inner) = split_at(shape, axis);
    let up = full_upstream(up, out);
    let (data, best, up) = (x.data(), out.data(), up.data());
    let mut g = zeroed(x.len());
    let hits = |v: f64, b: f64| v == b || (v.is_nan() && b.is_nan());
    for o in 0..outer {
        for i in 0..inner {
            let (b, u) = (best[o * inner + i], up[o * inner + i]);
            let at = |k: usize| (o * len + k) * inner + i;
            let ties = (0..len).filter(|&k| hits(data[at(k)], b)).count();
            if u == 0.0 || ties == 0 {
                continue;
            }
            let share = u / ties as f64;
            for k in (0..len).filter(|&k| hits(data[at(k)], b)) {
                g[at(k)] = share;
            }
        }
    }
    smallvec![Some(Tensor::from_parts(
        data_from_vec(g),
        Shape::from_slice(shape)
    ))]
}

struct MaxAxis(usize);
impl Op for MaxAxis {
    fn name(&self) -> &str {
        "max_axis"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor, String> {
        extreme_forward::<true>(self.name(), x[0], self.0)
    }
    fn backward(&self, x: &[&Tensor], out: &Tensor, up: Tensor, _: &[bool]) -> InputGrads {
        extreme_backward(x[0], out, up, self.0)
    }
}

struct MinAxis(usize);
impl Op for MinAxis {
    fn name(&self) -> &str {
        "min_axis"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor, String> {
        extreme_forward::<false>(self.name(), x[0], self.0)
    }
    fn backward(&self, x: &[&Tensor], out: &Tensor, up: Tensor, _: &[bool]) -> InputGrads {
        extreme_backward(x[0], out, up, self.0)
    }
}

impl<'t> Var<'t> {
    /// The maximum along `axis`, which is dropped (`np.max(x, axis)`): NaN where the lane
    /// holds a NaN. Where several elements tie for the maximum the gradient is split
    /// evenly among them (as JAX and `torch.amax`); the others get exactly 0.
    ///
    /// # Panics
    /// If `axis` is not below the rank, or the axis has length 0 (the maximum of
    /// nothing), naming the axis and the shape.
    #[track_caller]
    pub fn max_axis(self, axis: usize) -> Var<'t> {
        self.tape.push(MaxAxis(axis), &[self])
    }

    /// The minimum along `axis`, the mirror of [`Var::max_axis`].
    ///
    /// # Panics
    /// As [`Var::max_axis`].
    #[track_caller]
    pub fn min_axis(self, axis: usize) -> Var<'t> {
        self.tape.push(MinAxis(axis), &[self])
    }

    /// The mean along `axis`, which is dropped (`np.mean(x, axis)`): `sum_axis` divided
    /// by the axis length (NaN for a length-0 axis, as numpy).
    ///
    /// # Panics
    /// If `axis` is not below the rank (naming the axis and the shape).
    #[track_caller]
    pub fn mean_axis(self, axis: usize) -> Var<'t> {
        let shape = self.shape();
        if let Err(message) = around("mean_axis", &shape, axis) {
            panic!(
                "tapegrad: {message} (at {})",
                std::panic::Location::caller()
            );
        }
        self.sum_axis(axis) / shape[axis] as f64
    }
}

// ---- logsumexp_axis: ln(sum(exp(x))) along an axis, stable; gradient softmax ------------

/// A lane seen from its maximum: `m` (NaN if the lane holds one; -inf for nothing),
/// `s = sum(exp(x - m))` and `ln(s)`. Where `m` is not finite, `s` is NaN and `ln(s)` is
/// 0 (so that `m + ln(s)` is `m`).
struct Shifted {
    m: f64,
    s: f64,
    ln_s: f64,
}

impl Shifted {
    fn of(lane: impl Iterator<Item = f64> + Clone) -> Shifted {
        let m = lane.clone().fold(f64::NEG_INFINITY, |m, v| {
            if m.is_nan() || v.is_nan() {
                f64::NAN
            } else {
                m.max(v)
            }
        });
        if !m.is_finite() {
            return Shifted {
                m,
                s: f64::NAN,
                ln_s: 0.0,
            };
        }
        // The maxima contribute exactly 1 each; the rest sums below them, so that ln(s)
        // = ln(c) + ln_1p(rest / c) keeps its relative precision when s is near 1 (as
        // scipy's logsumexp: ln(1 + e^-30) is 9.4e-14, not the 9.35e-14 of ln(s)).
        let (c, rest) = lane.fold((0.0, 0.0), |(c, rest), v| {
            if v == m {
                (c + 1.0, rest)
            } else {
                (c, rest + (v - m).exp())
            }
        });
        Shifted {
            m,
            s: c + rest,
            ln_s: f64::ln(c) + (rest / c).ln_1p(),
        }
    }
}

/// `ln(sum(exp(x)))` of a lane, stably: `m + ln(sum(exp(x - m)))`; all -inf (or nothing)
/// gives -inf, a +inf or a NaN itself.
fn lane_logsumexp(lane: impl Iterator<Item = f64> + Clone) -> f64 {
    let lane = Shifted::of(lane);
    lane.m + lane.ln_s
}

struct LogSumExpAxis(usize);
impl Op for LogSumExpAxis {
    fn name(&self) -> &str {
        "logsumexp_axis"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor, String> {
        let (outer, len, inner, out_shape) = around(self.name(), x[0].shape(), self.0)?;
        if x[0].is_empty() {
            // Sums over nothing: ln(0) = -inf (or no lanes at all).
            return Ok(Tensor::full(&out_shape, f64::NEG_INFINITY));
        }
        let data = x[0].data();
        let mut out = zeroed(outer * inner);
        for o in 0..outer {
            for i in 0..inner {
                let lane = (0..len).map(|k| data[(o * len + k) * inner + i]);
                out[o * inner + i] = lane_logsumexp(lane);
            }
        }
        Ok(Tensor::from_parts(data_from_vec(out), out_shape))
    }
    fn backward(&self, x: &[&Tensor], out: &Tensor, up: Tensor, _: &[bool]) -> InputGrads {
        // d lse / d x_k = exp(x_k - m) / s: the softmax of the lane (as `softmax` takes
        // it, so [1000, 1000] gives exactly 0.5 each).
        let shape = x[0].shape();
        if x[0].is_empty() {
            return smallvec![Some(Tensor::zeros(shape))];
        }
        let axis = self.0;
        let (outer, len, inner) = split_at(shape, axis);
        let up = full_upstream(up, out);
        let (data, up) = (x[0].data(), up.data());
        let mut g = zeroed(x[0].len());
        for o in 0..outer {
            for i in 0..inner {
                let at = |k: usize| (o * len + k) * inner + i;
                let Shifted { m, s, .. } = Shifted::of((0..len).map(|k| data[at(k)]));
                let u = up[o * inner + i];
                for k in 0..len {
                    g[at(k)] = chain(u, (data[at(k)] - m).exp() / s);
                }
            }
        }
        smallvec![Some(Tensor::from_parts(
            data_from_vec(g),
            Shape::from_slice(shape)
        ))]
    }
}

impl<'t> Var<'t> {
    /// `ln(sum(exp(x)))` along `axis`, which is dropped, computed stably (the lane's
    /// maximum is taken out first, so 1000 does not overflow; `scipy.special.logsumexp`).
    /// Gradient: the softmax of the lane.
    ///
    /// # Panics
    /// If `axis` is not below the rank.
    #[track_caller]
    pub fn logsumexp_axis(self, axis: usize) -> Var<'t> {
        self.tape.push(LogSumExpAxis(axis), &[self])
    }
}

// ---- softmax and log_softmax along an axis -----------------------------------------------

/// `f(lane, out lane)` for every lane of `x` along `axis` into an output of x's shape:
/// the lane's elements are gathered into `lane`, `f` writes the output lane.
fn map_lanes(
    op: &str,
    x: &Tensor,
    axis: usize,
    mut f: impl FnMut(&[f64], &mut [f64]),
) -> Result<Tensor, String> {
    let (outer, len, inner, _) = around(op, x.shape(), axis)?;
    if x.is_empty() {
        return Ok(x.clone());
    }
    let data = x.data();
    let mut out = zeroed(x.len());
    let (mut lane, mut result) = (vec![0.0; len], vec![0.0; len]);
    for o in 0..outer {
        for i in 0..inner {
            for k in 0..len {
                lane[k] = data[(o * len + k) * inner + i];
            }
            f(&lane, &mut result);
            for k in 0..len {
                out[(o * len + k) * inner + i] = result[k];
            }
        }
    }
    Ok(Tensor::from_parts(
        data_from_vec(out),
        Shape::from_slice(x.shape()),
    ))
}

/// `g(out lane, upstream lane, gradient lane)` for every lane: the backward of a
/// normalization, whose upstream has the output's (and input's) shape.
fn grad_lanes(
    x: &Tensor,
    out: &Tensor,
    up: Tensor,
    axis: usize,
    mut g: impl FnMut(&[f64], &[f64], &mut [f64]),
) -> InputGrads {
    if x.is_empty() {
        return smallvec![Some(Tensor::zeros(x.shape()))];
    }
    let up = full_upstream(up, out);
    let (shape, o_data, u_data) = (x.shape(), out.data(), up.data());
    let (outer, len, inner) = split_at(shape, axis);
    let mut grad = zeroed(x.len());
    let (mut ol, mut ul, mut gl) = (vec![0.0; len], vec![0.0; len], vec![0.0; len]);
    for o in 0..outer {
        for i in 0..inner {
            for k in 0..len {
                let at = (o * len + k) * inner + i;
                (ol[k], ul[k]) = (o_data[at], u_data[at]);
            }
            g(&ol, &ul, &mut gl);
            for k in 0..len {
                grad[(o * len + k) * inner + i] = gl[k];
            }
        }
    }
    smallvec![Some(Tensor::from_parts(
        data_from_vec(grad),
        Shape::from_slice(shape)
    ))]
}

struct Softmax(usize);
impl Op for Softmax {
    fn name(&self) -> &str {
        "softmax"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor, String> {
        map_lanes(self.name(), x[0], self.0, |lane, out| {
            // exp(x - m) / sum(exp(x - m)): no overflow, one rounding for the division;
            // a lane with a +inf or a NaN (or all -inf) is NaN, as scipy's and JAX's.
            let Shifted { m, s, .. } = Shifted::of(lane.iter().copied());
            for (o, &v) in out.iter_mut().zip(lane) {
                *o = (v - m).exp() / s;
            }
        })
    }
    fn backward(&self, x: &[&Tensor], out: &Tensor, up: Tensor, _: &[bool]) -> InputGrads {
        // d s_j / d x_k = s_j (delta_jk - s_k): g_k = s_k (u_k - sum_j u_j s_j).
        grad_lanes(x[0], out, up, self.0, |s, u, g| {
            let dot: f64 = s.iter().zip(u).map(|(&s, &u)| chain(u, s)).sum();
            for k in 0..s.len() {
                g[k] = if u[k] == 0.0 && dot == 0.0 {
                    0.0
                } else {
                    s[k] * (u[k] - dot)
                };
            }
        })
    }
}

struct LogSoftmax(usize);
impl Op for LogSoftmax {
    fn name(&self) -> &str {
        "log_softmax"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor, String> {
        map_lanes(self.name(), x[0], self.0, |lane, out| {
            // (x - m) - ln(s), not x - (m + ln(s)): m + ln(s) would round at m's scale
            // (scores near 1000 lost about 100 ulps).
            let Shifted { m, ln_s, .. } = Shifted::of(lane.iter().copied());
            for (o, &v) in out.iter_mut().zip(lane) {
                // A lane with a +inf or a NaN (or all -inf) is NaN, as scipy's and JAX's.
                *o = if m.is_finite() {
                    (v - m) - ln_s
                } else {
                    f64::NAN
                };
            }
        })
    }
    fn backward(&self, x: &[&Tensor], out: &Tensor, up: Tensor, _: &[bool]) -> InputGrads {
        // d (x_j - lse) / d x_k = delta_jk - s_k: g_k = u_k - s_k sum_j u_j.
        grad_lanes(x[0], out, up, self.0, |l, u, g| {
            let total: f64 = u.iter().sum();
            for k in 0..l.len() {
                g[k] = u[k] - chain(total, l[k].exp());
            }
        })
    }
}

impl<'t> Var<'t> {
    /// `exp(x) / sum(exp(x))` along `axis` (same shape as the input), computed stably.
    ///
    /// # Panics
    /// If `axis` is not below the rank.
    #[track_caller]
    pub fn softmax(self, axis: usize) -> Var<'t> {
        self.tape.push(Softmax(axis), &[self])
    }

    /// `x - logsumexp(x)` along `axis` (same shape as the input), computed stably: the
    /// log of [`Var::softmax`] without its underflow.
    ///
    /// # Panics
    /// If `axis` is not below the rank.
    #[track_caller]
    pub fn log_softmax(self, axis: usize) -> Var<'t> {
        self.tape.push(LogSoftmax(axis), &[self])
    }
}
