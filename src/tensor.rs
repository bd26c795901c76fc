//! `Tensor`: an n-d array of f64, row-major, with numpy broadcasting.
//!
//! The broadcasting of the crate lives here, once: [`broadcast_shapes`] decides the
//! shape, [`zip_broadcast`] evaluates a function of two operands over it (the
//! elementwise forward of a true broadcast, and [`Tensor::broadcast_to`]; operands that
//! are one number or already of the output's shape take the per-element loops of
//! `ops/mod.rs` instead), [`zip_into`] is the same with an in-place write (gradient
//! accumulation), and [`sum_to`] undoes a broadcast in every backward. Rank-0 operands
//! need none of it: the tape applies the op's rule to plain numbers. Also here: numpy's
//! pairwise sum and the per-thread buffer pool.

use smallvec::SmallVec;
use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

/// A shape: up to two dimensions live inline (a scalar, a vector or a matrix costs no
/// heap for its shape; higher ranks allocate theirs).
pub type Shape = SmallVec<[usize; 2]>;

/// Element storage. One element lives inline, so a rank-0 tensor costs no heap; more
/// live in a shared buffer, so cloning a tensor (onto a tape, out of `Gradients`) is
/// O(1), and a backward rule that owns the only handle can write in place.
#[derive(Clone)]
pub(crate) enum Data {
    One(f64),
    Many(Arc<Buffer>),
}

/// A heap buffer that goes back to this thread's pool when dropped (see [`buffer`]).
pub(crate) struct Buffer(Vec<f64>);

impl Drop for Buffer {
    fn drop(&mut self) {
        recycle(std::mem::take(&mut self.0));
    }
}

impl Data {
    fn as_slice(&self) -> &[f64] {
        match self {
            Data::One(x) => std::slice::from_ref(x),
            Data::Many(b) => &b.0,
        }
    }

    /// The elements for writing, if no one else holds them.
    fn unique_mut(&mut self) -> Option<&mut [f64]> {
        match self {
            Data::One(x) => Some(std::slice::from_mut(x)),
            Data::Many(b) => Arc::get_mut(b).map(|b| &mut b.0[..]),
        }
    }
}

// The buffer pool. Buffers of 4096 elements or more freed by one computation are kept
// (per thread, up to `POOL_SLOTS` buffers and `POOL_BYTES`) and handed to the next one
// that needs as many elements. Memory that malloc returns to the system (large blocks are
// unmapped, the top of the heap is trimmed) costs a page fault per 4 KiB when touched
// again, which takes longer than the arithmetic on it; a loop that rebuilds the same
// graph reuses the same few buffers instead. `release_pooled_buffers` gives it all back.
// The cap: at most 128 MiB stay behind after a computation. That holds the one
// gradient of a fused hinge at N = 10^7 (80 MB; fresh, it cost 50 ms of page faults on
// top of 26 ms of work), not the six arrays of the unfused chain.
const POOL_MIN_LEN: usize = 1 << 12;
const POOL_SLOTS: usize = 16;
const POOL_BYTES: usize = 128 << 20;

thread_local! {
    static POOL: RefCell<Vec<Vec<f64>>> = const { RefCell::new(Vec::new()) };
}

fn recycle(v: Vec<f64>) {
    if v.capacity() < POOL_MIN_LEN {
        return;
    }
    let _ = POOL.try_with(|pool| {
        let Ok(mut pool) = pool.try_borrow_mut() else {
            return;
        };
        pool.push(v);
        // Over a limit, drop the smallest buffers: a workload that grows (N = 10^5,
        // then 10^6) keeps the buffers it needs now, not those of the last size.
        let bytes = |pool: &Vec<Vec<f64>>| pool.iter().map(|b| b.capacity() * 8).sum::<usize>();
        while pool.len() > POOL_SLOTS || bytes(&pool) > POOL_BYTES {
            let smallest = (0..pool.len())
                .min_by_key(|&i| pool[i].capacity())
                .expect("pool is not empty");
            pool.swap_remove(smallest);
        }
    });
}

/// The bytes that this thread's buffer pool holds: buffers of at least 4096 elements
/// (32 KiB) that finished computations freed, kept so that the next computation of the
/// same size reuses them instead of paying page faults for fresh memory. At most 16
/// buffers and 128 MiB per thread (the smallest are dropped first past that);
/// [`release_pooled_buffers`] gives them back.
pub fn pooled_bytes() -> usize {
    POOL.try_with(|pool| {
        pool.try_borrow()
            .map_or(0, |pool| pool.iter().map(|b| b.capacity() * 8).sum())
    })
    .unwrap_or(0)
}

/// Give every buffer of this thread's pool back to the allocator (after a large
/// computation that will not be repeated, say), and return how many bytes that was.
/// Computations after it work as before; they just start with an empty pool.
///
/// ```
/// use tapegrad::{Tape, Tensor, pooled_bytes, release_pooled_buffers};
/// {
///     let tape = Tape::new();
///     let x = tape.var(Tensor::zeros(&[100_000]));
///     let _ = (x * 2.0).sum().backward();
/// } // the tape and its intermediates are dropped; their buffers go to the pool
/// assert!(pooled_bytes() > 0);
/// let released = release_pooled_buffers();
/// assert!(released > 0);
/// assert_eq!(pooled_bytes(), 0);
/// ```
pub fn release_pooled_buffers() -> usize {
    POOL.try_with(|pool| {
        pool.try_borrow_mut().map_or(0, |mut pool| {
            let bytes = pool.iter().map(|b| b.capacity() * 8).sum();
            pool.clear();
            bytes
        })
    })
    .unwrap_or(0)
}

/// An empty Vec with room for `n` elements: a pooled one if one fits (at least `n`,
/// at most `2n`), a new one otherwise.
pub(crate) fn buffer(n: usize) -> Vec<f64> {
    match pooled(n) {
        Some(mut v) => {
            v.clear();
            v
        }
        None => Vec::with_capacity(n),
    }
}

/// `n` elements whose values are not specified (what a pooled buffer last held, or
/// zeros), for a result every element of which is written before anything reads it:
/// a pooled buffer is not zeroed first.
pub(crate) fn overwritable(n: usize) -> Vec<f64> {
    match pooled(n) {
        Some(mut v) => {
            v.truncate(n);
            v.resize(n, 0.0);
            v
        }
        None => vec![0.0; n],
    }
}

/// A buffer of this thread's pool with room for `n` elements (at most `2n`), if any,
/// holding what it last held.
fn pooled(n: usize) -> Option<Vec<f64>> {
    if n < POOL_MIN_LEN {
        return None;
    }
    let pooled = POOL.try_with(|pool| {
        let mut pool = pool.try_borrow_mut().ok()?;
        let fit = pool
            .iter()
            .position(|b| b.capacity() >= n && b.capacity() <= 2 * n)?;
        Some(pool.swap_remove(fit))
    });
    pooled.ok().flatten()
}

/// `n` zeros in a (possibly pooled) buffer, for results filled by accumulation.
pub(crate) fn zeroed(n: usize) -> Vec<f64> {
    let mut v = buffer(n);
    v.resize(n, 0.0);
    v
}

/// `n` elements from an iterator into a (possibly pooled) buffer.
fn collect_data(n: usize, items: impl Iterator<Item = f64>) -> Data {
    if n == 1 {
        let mut items = items;
        return Data::One(items.next().expect("one element"));
    }
    let mut v = buffer(n);
    v.extend(items);
    Data::Many(Arc::new(Buffer(v)))
}

/// The error type of fallible constructors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
}

impl Error {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// An n-dimensional array of `f64` in row-major order.
///
/// ```
/// use tapegrad::Tensor;
/// let m = Tensor::new(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
/// assert_eq!(m.shape(), &[2, 3]);
/// assert_eq!(m.data()[4], 5.0); // row 1, column 1
/// assert!(Tensor::new(vec![1.0], &[2, 3]).is_err());
/// ```
pub struct Tensor {
    shape: Shape,
    data: Data,
}

impl Tensor {
    /// A tensor of the given shape from row-major data.
    ///
    /// # Errors
    /// If `data.len()` is not the product of `shape`; the message names both.
    pub fn new(data: Vec<f64>, shape: &[usize]) -> Result<Tensor, Error> {
        let Some(want) = numel(shape) else {
            return Err(Error::new(format!(
                "Tensor::new: shape {shape:?} has more elements than fit in memory"
            )));
        };
        if data.len() != want {
            return Err(Error::new(format!(
                "Tensor::new: data has {} elements but shape {:?} needs {}",
                data.len(),
                shape,
                want
            )));
        }
        Ok(Tensor::from_parts(
            data_from_vec(data),
            Shape::from_slice(shape),
        ))
    }

    /// A rank-0 tensor (shape `[]`) holding `value`.
    pub fn scalar(value: f64) -> Tensor {
        Tensor::from_parts(Data::One(value), Shape::new())
    }

    /// A tensor of the given shape with every element equal to `value`.
    ///
    /// # Panics
    /// If the shape has more elements than one allocation can hold (the message names
    /// it).
    #[track_caller]
    pub fn full(shape: &[usize], value: f64) -> Tensor {
        let Some(n) = numel(shape) else {
            panic!(
                "tapegrad: Tensor::full: shape {shape:?} has more elements than fit in memory \
                 (at {})",
                std::panic::Location::caller()
            )
        };
        let data = collect_data(n, std::iter::repeat_n(value, n));
        Tensor::from_parts(data, Shape::from_slice(shape))
    }

    /// Zeros of the given shape.
    ///
    /// # Panics
    /// If the shape has more elements than one allocation can hold (the message names
    /// it).
    #[track_caller]
    pub fn zeros(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 0.0)
    }

    pub(crate) fn from_parts(data: Data, shape: Shape) -> Tensor {
        debug_assert_eq!(Some(data.as_slice().len()), numel(&shape));
        Tensor { shape, data }
    }

    /// The shape, outermost dimension first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The elements in row-major order.
    pub fn data(&self) -> &[f64] {
        self.data.as_slice()
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.data().len()
    }

    /// Whether the tensor has no elements (some dimension is 0).
    pub fn is_empty(&self) -> bool {
        self.data().is_empty()
    }

    /// The single element of a one-element tensor (of any rank).
    ///
    /// # Panics
    /// If the tensor does not hold exactly one element.
    #[track_caller]
    pub fn item(&self) -> f64 {
        if self.len() != 1 {
            panic!(
                "tapegrad: Tensor::item: tensor of shape {:?} has {} elements, item() needs \
                 exactly one (at {})",
                self.shape,
                self.len(),
                std::panic::Location::caller()
            );
        }
        self.data()[0]
    }

    /// The same elements under another shape with as many elements.
    ///
    /// # Errors
    /// If the element counts differ (or the new shape's overflows `usize`).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor, Error> {
        let Some(want) = numel(shape) else {
            return Err(Error::new(format!(
                "reshape: cannot reshape {:?} ({} elements) to {shape:?}, which has more \
                 elements than fit in memory",
                self.shape,
                self.len(),
            )));
        };
        if want != self.len() {
            return Err(Error::new(format!(
                "reshape: cannot reshape {:?} ({} elements) to {:?} ({} elements)",
                self.shape,
                self.len(),
                shape,
                want
            )));
        }
        Ok(Tensor::from_parts(
            self.data.clone(),
            Shape::from_slice(shape),
        ))
    }

    /// The element of a rank-0 tensor; `None` for any other rank.
    #[inline]
    pub(crate) fn as_scalar(&self) -> Option<f64> {
        match (self.shape.is_empty(), &self.data) {
            (true, Data::One(x)) => Some(*x),
            _ => None,
        }
    }

    /// The elements for writing in place, if no other tensor shares them.
    pub(crate) fn unique_mut(&mut self) -> Option<&mut [f64]> {
        self.data.unique_mut()
    }

    pub(crate) fn into_reshaped(self, shape: Shape) -> Tensor {
        Tensor::from_parts(self.data, shape)
    }

    /// Apply `f` to every element, reusing this tensor's buffer.
    pub(crate) fn map_in_place(mut self, f: impl Fn(f64) -> f64) -> Tensor {
        match self.data.unique_mut() {
            Some(data) => data.iter_mut().for_each(|x| *x = f(*x)),
            None => return self.map(f),
        }
        self
    }

    /// A new tensor of the same shape with `f` applied to every element.
    pub(crate) fn map(&self, f: impl Fn(f64) -> f64) -> Tensor {
        let data = collect_data(self.len(), self.data().iter().map(|&x| f(x)));
        Tensor::from_parts(data, Shape::from_slice(&self.shape))
    }

    /// This tensor broadcast to `shape` (which it must broadcast to).
    pub(crate) fn broadcast_to(&self, shape: &[usize]) -> Tensor {
        if self.shape() == shape {
            return self.clone();
        }
        zip_broadcast(self, &Tensor::scalar(0.0), shape, |x, _| x)
    }
}

impl From<Vec<f64>> for Tensor {
    /// A 1-d tensor.
    fn from(data: Vec<f64>) -> Tensor {
        let n = data.len();
        Tensor::from_parts(data_from_vec(data), SmallVec::from_slice(&[n]))
    }
}

impl Clone for Tensor {
    /// O(1) for the elements: they are shared until someone writes.
    fn clone(&self) -> Tensor {
        Tensor::from_parts(self.data.clone(), Shape::from_slice(&self.shape))
    }
}

impl PartialEq for Tensor {
    /// Same shape and elements equal by `==` (so NaN != NaN, and -0.0 == 0.0).
    fn eq(&self, other: &Tensor) -> bool {
        self.shape == other.shape && self.data() == other.data()
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor(shape={:?}, data=", self.shape)?;
        write_preview(f, self.data(), 8)?;
        f.write_str(")")
    }
}

impl fmt::Display for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} ", self.shape)?;
        write_preview(f, self.data(), 8)
    }
}

/// `[a, b, c, ... (n in all)]`, at most `max` elements.
pub(crate) fn write_preview(f: &mut dyn fmt::Write, data: &[f64], max: usize) -> fmt::Result {
    write_preview_of(f, data, data.len(), max)
}

/// [`write_preview`] of `len` elements of which `first` holds at least the first `max`.
pub(crate) fn write_preview_of(
    f: &mut dyn fmt::Write,
    first: &[f64],
    len: usize,
    max: usize,
) -> fmt::Result {
    f.write_str("[")?;
    for (i, x) in first.iter().take(max).enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{x}")?;
    }
    if len > max {
        write!(f, ", ... ({len} in all)")?;
    }
    f.write_str("]")
}

/// Vec → inline storage for one element, the Vec's own buffer otherwise.
pub(crate) fn data_from_vec(v: Vec<f64>) -> Data {
    if v.len() == 1 {
        Data::One(v[0])
    } else {
        Data::Many(Arc::new(Buffer(v)))
    }
}

/// The most `f64`s one allocation can hold (`isize::MAX` bytes).
const MAX_ELEMENTS: usize = isize::MAX as usize / std::mem::size_of::<f64>();

/// The number of elements of `shape`, or `None` if more than one allocation can hold
/// (`isize::MAX` bytes; a shape with a 0 has none, whatever its other dimensions).
pub(crate) fn numel(shape: &[usize]) -> Option<usize> {
    if shape.contains(&0) {
        return Some(0);
    }
    let n = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))?;
    (n <= MAX_ELEMENTS).then_some(n)
}

/// The number of elements of a shape that an op already checked with [`numel`] (so
/// the product cannot overflow once a shape with a 0 is set aside).
#[inline]
fn count(shape: &[usize]) -> usize {
    if shape.contains(&0) {
        0
    } else {
        shape.iter().product()
    }
}

/// The numpy broadcast of two shapes, or `None` if they do not broadcast.
pub(crate) fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Shape> {
    if a == b {
        return Some(Shape::from_slice(a));
    }
    let rank = a.len().max(b.len());
    let mut out = Shape::with_capacity(rank);
    for i in 0..rank {
        let da = dim_from_right(a, rank - 1 - i);
        let db = dim_from_right(b, rank - 1 - i);
        out.push(match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        });
    }
    Some(out)
}

/// Dimension `k` counted from the right (0 = last), 1 where the shape is too short.
fn dim_from_right(shape: &[usize], k: usize) -> usize {
    if k < shape.len() {
        shape[shape.len() - 1 - k]
    } else {
        1
    }
}

/// Row-major strides of `shape` laid over `out` (right-aligned): 0 on broadcast dims.
fn strides_in(shape: &[usize], out: &[usize]) -> Shape {
    let mut strides = Shape::from_elem(0, out.len());
    let mut step = 1;
    for k in 0..shape.len() {
        let d = shape[shape.len() - 1 - k];
        if d != 1 {
            strides[out.len() - 1 - k] = step;
        }
        step *= d;
    }
    strides
}

/// `f(a, b)` elementwise over `out`, the broadcast of both shapes (the caller checked).
///
/// Fast paths: same shape (a single element stays inline, no heap) and one side holding
/// a single element; everything else walks the outer dimensions with an odometer and the
/// last one in a tight loop.
pub(crate) fn zip_broadcast(
    a: &Tensor,
    b: &Tensor,
    out: &[usize],
    f: impl Fn(f64, f64) -> f64,
) -> Tensor {
    let (x, y) = (a.data(), b.data());
    let n = count(out);
    let data = if x.len() == n && y.len() == n {
        collect_data(n, x.iter().zip(y).map(|(&p, &q)| f(p, q)))
    } else if y.len() == 1 && x.len() == n {
        let q = y[0];
        collect_data(n, x.iter().map(|&p| f(p, q)))
    } else if x.len() == 1 && y.len() == n {
        let p = x[0];
        collect_data(n, y.iter().map(|&q| f(p, q)))
    } else {
        data_from_vec(zip_strided(x, a.shape(), y, b.shape(), out, &f))
    };
    Tensor::from_parts(data, Shape::from_slice(out))
}

/// Like [`zip_broadcast`] but writes into `a`'s buffer when `a` already has shape `out`.
pub(crate) fn zip_into(
    mut a: Tensor,
    b: &Tensor,
    out: &[usize],
    f: impl Fn(f64, f64) -> f64,
) -> Tensor {
    if a.shape() != out || a.len() <= 1 {
        return zip_broadcast(&a, b, out, f);
    }
    let y = b.data();
    let n = a.len();
    match a.data.unique_mut() {
        Some(x) if y.len() == n => x.iter_mut().zip(y).for_each(|(p, &q)| *p = f(*p, q)),
        Some(x) if y.len() == 1 => {
            let q = y[0];
            x.iter_mut().for_each(|p| *p = f(*p, q));
        }
        _ => return zip_broadcast(&a, b, out, f),
    }
    a
}

fn zip_strided(
    x: &[f64],
    xs: &[usize],
    y: &[f64],
    ys: &[usize],
    out: &[usize],
    f: &impl Fn(f64, f64) -> f64,
) -> Vec<f64> {
    let n = count(out);
    let mut result = buffer(n);
    if n == 0 {
        return result;
    }
    let (sx, sy) = (strides_in(xs, out), strides_in(ys, out));
    let rank = out.len();
    let inner = out[rank - 1];
    let (ix, iy) = (sx[rank - 1], sy[rank - 1]);
    let mut index = Shape::from_elem(0, rank);
    let (mut ox, mut oy) = (0usize, 0usize);
    loop {
        if ix == 0 && iy == 0 {
            // Both operands are broadcast along the last axis: one value, repeated.
            result.extend(std::iter::repeat_n(f(x[ox], y[oy]), inner));
        } else {
            for k in 0..inner {
                result.push(f(x[ox + k * ix], y[oy + k * iy]));
            }
        }
        // Advance the odometer over the outer dimensions.
        let mut d = rank - 1;
        loop {
            if d == 0 {
                return result;
            }
            d -= 1;
            index[d] += 1;
            ox += sx[d];
            oy += sy[d];
            if index[d] < out[d] {
                break;
            }
            ox -= sx[d] * out[d];
            oy -= sy[d] * out[d];
            index[d] = 0;
        }
    }
}

/// Reduce `grad`, a gradient for a value of shape `out`, to an operand of shape `target`
/// that was broadcast to `out`: sum over every dimension the broadcast stretched.
///
/// `grad` may itself be smaller than `out` (any shape that broadcasts to `out`): a
/// gradient that is the same for all elements is kept as one number, and where it was
/// never materialized along a reduced dimension, summing means multiplying by that
/// dimension's length. The result broadcasts to `target`; [`Tensor::broadcast_to`]
/// makes it exactly `target` when someone needs that.
pub(crate) fn sum_to(grad: Tensor, out: &[usize], target: &[usize]) -> Tensor {
    if target == out {
        return grad;
    }
    if out.contains(&0) {
        // Every element of the operand was broadcast over nothing: a sum of nothing is 0
        // (and not `inf * 0`, were the uniform upstream inf).
        return Tensor::zeros(target);
    }
    if target.iter().product::<usize>() == 1 {
        // The whole gradient collapses to one number.
        let n = count(out);
        let total = if grad.len() == 1 {
            grad.data()[0] * (n as f64)
        } else if grad.len() == n {
            pairwise_sum(grad.data()) // also an empty `out`: the sum of nothing, 0
        } else {
            // `grad` broadcasts to `out`: each element stands for n / len of them.
            pairwise_sum(grad.data()) * (n / grad.len()) as f64
        };
        return Tensor::from_parts(Data::One(total), Shape::from_slice(target));
    }
    let rank = out.len();
    let g = grad.broadcast_to_rank(rank);
    // Per dimension: keep it (target has it), sum it (g has it, target does not), or
    // scale by it (neither has it).
    let mut kept = Shape::with_capacity(rank);
    let mut scale = 1.0;
    for (d, &od) in out.iter().enumerate() {
        let t = dim_from_right(target, rank - 1 - d);
        let gd = g.shape[d];
        if t == od {
            kept.push(gd);
        } else {
            kept.push(1);
            if gd == 1 {
                scale *= od as f64;
            }
        }
    }
    let mut reduced = zeroed(count(&kept));
    let strides = strides_in(&kept, g.shape());
    for_each_index(g.shape(), |flat, index| {
        let at: usize = index.iter().zip(&strides).map(|(i, s)| i * s).sum();
        reduced[at] += g.data()[flat];
    });
    if scale != 1.0 {
        reduced.iter_mut().for_each(|x| *x *= scale);
    }
    // Drop leading dimensions the target does not have (they are all 1 now).
    let extra = rank - target.len().min(rank);
    Tensor::from_parts(data_from_vec(reduced), Shape::from_slice(&kept[extra..]))
}

impl Tensor {
    /// Same data with leading 1s prepended up to `rank`.
    fn broadcast_to_rank(self, rank: usize) -> Tensor {
        if self.shape.len() >= rank {
            return self;
        }
        let mut shape = Shape::from_elem(1, rank - self.shape.len());
        shape.extend_from_slice(&self.shape);
        self.into_reshaped(shape)
    }
}

/// Call `f(flat, multi_index)` for every element of `shape`, in row-major order.
fn for_each_index(shape: &[usize], mut f: impl FnMut(usize, &[usize])) {
    let n = count(shape);
    let mut index = Shape::from_elem(0, shape.len());
    for flat in 0..n {
        f(flat, &index);
        for d in (0..shape.len()).rev() {
            index[d] += 1;
            if index[d] < shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
}

/// Pairwise summation, the same blocking as numpy's (`pairwise_sum` in numpy's
/// `loops_utils.h`): 8 accumulators over blocks of up to 128 elements, halves above.
/// Error grows like O(log n), not O(n), and results match `np.sum` bit for bit on
/// contiguous data. An empty slice sums to 0.
pub fn pairwise_sum(x: &[f64]) -> f64 {
    0.0 + pairwise(x)
}

pub(crate) fn pairwise(x: &[f64]) -> f64 {
    let n = x.len();
    if n < 8 {
        x.iter().fold(0.0, |acc, &v| acc + v)
    } else if n <= 128 {
        let mut r = [0.0; 8];
        r.copy_from_slice(&x[..8]);
        let whole = n - n % 8;
        for chunk in x[8..whole].chunks_exact(8) {
            for j in 0..8 {
                r[j] += chunk[j];
            }
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &v in &x[whole..] {
            res += v;
        }
        res
    } else {
        let mut half = n / 2;
        half -= half % 8;
        pairwise(&x[..half]) + pairwise(&x[half..])
    }
}
