//! The matrix product of two 2-d vars.

use super::{chain, fits};
use crate::tape::{InputGrads, Op, Var};
use crate::tensor::{Tensor, data_from_vec, zeroed};
use smallvec::smallvec;

// ---- matmul: [m,k] x [k,n]; da = up b^T, db = a^T up -------------------------------
struct MatMul;
impl Op for MatMul {
    fn name(&self) -> &str {
        "matmul"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor, String> {
        let (a, b) = (x[0], x[1]);
        let ok = a.shape().len() == 2 && b.shape().len() == 2 && a.shape()[1] == b.shape()[0];
        if !ok {
            return Err(format!(
                "matmul: needs [m, k] x [k, n], got {:?} x {:?}",
                a.shape(),
                b.shape()
            ));
        }
        let (m, k, n) = (a.shape()[0], a.shape()[1], b.shape()[1]);
        fits("matmul", &[m, n])?;
        if m == 0 || n == 0 || k == 0 {
            // No products (sums over nothing are +0.0), and no loop over empty rows.
            return Ok(Tensor::zeros(&[m, n]));
        }
        let mut out = zeroed(m * n);
        for i in 0..m {
            let row = &mut out[i * n..(i + 1) * n];
            for p in 0..k {
                let aip = a.data()[i * k + p];
                let brow = &b.data()[p * n..(p + 1) * n];
                row.iter_mut().zip(brow).for_each(|(r, &bv)| *r += aip * bv);
            }
        }
        Ok(Tensor::from_parts(data_from_vec(out), smallvec![m, n]))
    }
    fn backward(&self, x: &[&Tensor], out: &Tensor, up: Tensor, tracked: &[bool]) -> InputGrads {
        let (a, b) = (x[0], x[1]);
        let up = up.broadcast_to(out.shape());
        let (m, k, n) = (a.shape()[0], a.shape()[1], b.shape()[1]);
        if m == 0 || n == 0 || k == 0 {
            // Each gradient is a sum over nothing (+0.0) or has no elements.
            let zeros = |t: bool, s: &[usize]| t.then(|| Tensor::zeros(s));
            return smallvec![zeros(tracked[0], &[m, k]), zeros(tracked[1], &[k, n])];
        }
        let (u, ad, bd) = (up.data(), a.data(), b.data());
        let ga = tracked[0].then(|| {
            // ga[i, p] = sum_j up[i, j] * b[p, j]
            let mut g = zeroed(m * k);
            for i in 0..m {
                for p in 0..k {
                    let (urow, brow) = (&u[i * n..(i + 1) * n], &bd[p * n..(p + 1) * n]);
                    // A sum over nothing (n == 0) is +0.0, as numpy's.
                    g[i * k + p] = urow
                        .iter()
                        .zip(brow)
                        .fold(0.0, |s, (&u, &y)| s + chain(u, y));
                }
            }
            Tensor::from_parts(data_from_vec(g), smallvec![m, k])
        });
        let gb = tracked[1].then(|| {
            // gb[p, j] = sum_i a[i, p] * up[i, j]
            let mut g = zeroed(k * n);
            for i in 0..m {
                for p in 0..k {
                    let aip = ad[i * k + p];
                    let urow = &u[i * n..(i + 1) * n];
                    g[p * n..(p + 1) * n]
                        .iter_mut()
                        .zip(urow)
                        .for_each(|(g, &uv)| *g += chain(uv, aip));
                }
            }
            Tensor::from_parts(data_from_vec(g), smallvec![k, n])
        });
        smallvec![ga, gb]
    }
}

impl<'t> Var<'t> {
    /// Matrix product of two 2-d vars: `[m, k] x [k, n] -> [m, n]`.
    ///
    /// # Panics
    /// If either is not 2-d, the inner dimensions differ, or the vars belong to
    /// different tapes.
    #[track_caller]
    pub fn matmul(self, other: Var<'t>) -> Var<'t> {
        self.tape.push(MatMul, &[self, other])
    }
}
