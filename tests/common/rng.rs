//! splitmix64: a tiny deterministic generator, so the tests need no dependency for
//! their fixed random inputs.

use tapegrad::Tensor;

/// splitmix64 from a seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        lo + (hi - lo) * unit
    }

    /// Elements uniform in `[lo, hi)`.
    pub fn tensor(&mut self, shape: &[usize], lo: f64, hi: f64) -> Tensor {
        let n = shape.iter().product();
        Tensor::new((0..n).map(|_| self.uniform(lo, hi)).collect(), shape).unwrap()
    }

    /// Magnitudes uniform in `[lo, hi)` with a random sign (keeps elements away from 0).
    pub fn signed(&mut self, shape: &[usize], lo: f64, hi: f64) -> Tensor {
        let n = shape.iter().product();
        let data = (0..n)
            .map(|_| {
                let m = self.uniform(lo, hi);
                if self.next_u64() & 1 == 0 { m } else { -m }
            })
            .collect();
        Tensor::new(data, shape).unwrap()
    }
}

/// `n` numbers uniform in `[lo, hi)` from `seed` (the sequence `Rng(seed)` gives).
pub fn uniform(seed: u64, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    let mut rng = Rng(seed);
    (0..n).map(|_| rng.uniform(lo, hi)).collect()
}
