//! Sums compared bit for bit with numpy's `np.sum` on arrays of many lengths.
//!
//! `fixtures/sums.txt` was written by `fixtures/gen_sums.py` with real numpy; the arrays
//! are not stored but computed here as there (exact integer arithmetic). The values
//! span 40 binades with both signs, so a sum that adds in another order than numpy's
//! pairwise blocking differs in its last bits. Every length is summed by
//! `pairwise_sum`, by `sum` on an unfused tape, and by `sum` of a pending node on a
//! fused tape (summed block by block, split between threads from 2^18 elements).

mod common;

use common::rng::Rng;
use tapegrad::{Tape, Tensor, pairwise_sum, set_threads};

const FIXTURE: &str = include_str!("fixtures/sums.txt");

/// The generator's `mix(x)`: splitmix64's first number from seed `x`.
fn mix(x: u64) -> u64 {
    Rng(x).next_u64()
}

/// The generator's array of length `n`.
fn values(n: usize) -> Vec<f64> {
    (0..n as u64)
        .map(|i| {
            let h = mix(n as u64 * 1_000_003 + i);
            let mantissa = (h & ((1 << 40) - 1)) as i64 - (1 << 39);
            let exponent = 20 + (h >> 40) % 41;
            mantissa as f64 * 2f64.powi(-(exponent as i32))
        })
        .collect()
}

/// A number written by Python's `float.hex` (normal numbers and zero).
fn from_hex(s: &str) -> f64 {
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let s = s.strip_prefix("0x").expect("0x");
    let (mantissa, exponent) = s.split_once('p').expect("p");
    let (lead, fraction) = mantissa.split_once('.').expect(".");
    let exponent: i64 = exponent.parse().expect("exponent");
    let fraction = u64::from_str_radix(&format!("{fraction:0<13}"), 16).expect("hex");
    let magnitude = match lead {
        "0" => {
            assert_eq!(fraction, 0, "no subnormals here");
            0.0
        }
        "1" => f64::from_bits((((exponent + 1023) as u64) << 52) | fraction),
        _ => panic!("a float.hex number starts 0x0 or 0x1: {s}"),
    };
    if negative { -magnitude } else { magnitude }
}

fn rows() -> Vec<(usize, f64)> {
    FIXTURE
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (n, want) = l.split_once(' ').expect("<n> <sum>");
            (n.parse().expect("n"), from_hex(want.trim()))
        })
        .collect()
}

#[test]
fn the_fixture_covers_every_length_to_300_and_large_ones() {
    let rows = rows();
    assert_eq!(rows.len(), 300 + 23);
    assert!((0..300).all(|n| rows[n].0 == n));
    assert_eq!(rows.last().unwrap().0, 262_147);
    // The values are what the generator summed: numpy's sum of the first few, by hand.
    assert_eq!(rows[1].1, values(1)[0]);
    assert_eq!(rows[2].1, 0.0 + values(2)[0] + values(2)[1]);
}

#[test]
fn pairwise_sum_is_np_sum_to_the_bit() {
    let wrong: Vec<String> = rows()
        .into_iter()
        .filter_map(|(n, want)| {
            let got = pairwise_sum(&values(n));
            (got.to_bits() != want.to_bits()).then(|| format!("n = {n}: {got:e}, numpy {want:e}"))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} lengths differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn sum_on_a_tape_is_np_sum_to_the_bit_fused_or_not() {
    let mut wrong = Vec::new();
    for threads in [1, 2] {
        set_threads(threads);
        for (n, want) in rows().into_iter().filter(|&(n, _)| n > 0) {
            let x = Tensor::from(values(n));
            for (name, tape) in [("unfused", Tape::unfused()), ("fused", Tape::fused())] {
                let v = tape.var(x.clone());
                // (on the fused tape `v * 1.0` is pending: its sum is taken block by block)
                let got = (v * 1.0).sum().value().item();
                if got.to_bits() != want.to_bits() {
                    wrong.push(format!(
                        "{name}, {threads} threads, n = {n}: {got:e}, numpy {want:e}"
                    ));
                }
            }
        }
    }
    set_threads(0);
    assert!(
        wrong.is_empty(),
        "{} sums differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
