//! `Tensor` with other crates: `approx`'s traits (always), and the `ndarray` and
//! `nalgebra` conversions (only with those features: `cargo test --features
//! ndarray,nalgebra --test interop`; without them those tests are compiled out).

use approx::{
    abs_diff_eq, assert_abs_diff_eq, assert_relative_eq, assert_ulps_eq, relative_eq, ulps_eq,
};
use tapegrad::{Tape, Tensor};

fn t(data: &[f64], shape: &[usize]) -> Tensor {
    Tensor::new(data.to_vec(), shape).unwrap()
}

#[test]
fn approx_macros_take_tensors_and_references() {
    let tape = Tape::new();
    let x = t(&[1.0, -2.0, 3.0, 0.5, 0.0, -1.5], &[2, 3]);
    let w = tape.var(x.clone());
    let grads = (w * w).sum().backward();
    let manual = t(&[2.0, -4.0, 6.0, 1.0, 0.0, -3.0], &[2, 3]);
    // `grads.wrt(w)` is a `&Tensor`: approx's blanket impls for references apply.
    assert_relative_eq!(grads.wrt(w), &manual);
    assert_abs_diff_eq!(grads.wrt(w), &manual);
    assert_ulps_eq!(grads.wrt(w), &manual);
    let owned: Tensor = grads.wrt(w).clone();
    assert_relative_eq!(owned, manual, max_relative = 1e-12);
    assert_abs_diff_eq!(owned, manual, epsilon = 1e-12);
    assert_ulps_eq!(owned, manual, max_ulps = 0);
}

#[test]
fn equal_tensors_pass_and_one_element_outside_the_tolerance_fails() {
    let a = t(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    assert!(relative_eq!(a, a.clone()));
    assert!(abs_diff_eq!(a, a.clone()));
    assert!(ulps_eq!(a, a.clone()));

    // One element off by a relative 1e-9: inside 1e-8, outside 1e-10 and the default.
    let mut data = a.data().to_vec();
    data[2] *= 1.0 + 1e-9;
    let b = t(&data, &[2, 2]);
    assert!(relative_eq!(a, b, max_relative = 1e-8));
    assert!(!relative_eq!(a, b, max_relative = 1e-10));
    assert!(!relative_eq!(a, b));
    assert!(abs_diff_eq!(a, b, epsilon = 1e-8));
    assert!(!abs_diff_eq!(a, b, epsilon = 1e-10));
    assert!(!ulps_eq!(a, b));

    // Within a few ulps: equal by the defaults (f64's: epsilon f64::EPSILON, 4 ulps).
    data[2] = 3.0f64.next_up();
    let c = t(&data, &[2, 2]);
    assert!(relative_eq!(a, c));
    assert!(ulps_eq!(a, c, epsilon = 0.0));
    assert!(!ulps_eq!(a, c, epsilon = 0.0, max_ulps = 0));
}

#[test]
fn different_shapes_are_never_equal() {
    let data = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
    let shapes: [&[usize]; 4] = [&[2, 3], &[3, 2], &[6], &[1, 6]];
    for (i, &s) in shapes.iter().enumerate() {
        for (j, &r) in shapes.iter().enumerate() {
            let (a, b) = (t(&data, s), t(&data, r));
            let wide = f64::INFINITY;
            assert_eq!(abs_diff_eq!(a, b, epsilon = wide), i == j, "{s:?} vs {r:?}");
            assert_eq!(
                relative_eq!(a, b, epsilon = wide, max_relative = wide),
                i == j,
                "{s:?} vs {r:?}"
            );
            assert_eq!(ulps_eq!(a, b, epsilon = wide), i == j, "{s:?} vs {r:?}");
        }
    }
    // A scalar and a one-element vector, and two empty tensors of different shapes.
    assert!(!relative_eq!(Tensor::scalar(1.0), t(&[1.0], &[1])));
    assert!(!relative_eq!(
        Tensor::zeros(&[0, 2]),
        Tensor::zeros(&[2, 0])
    ));
    assert!(relative_eq!(Tensor::zeros(&[0, 2]), Tensor::zeros(&[0, 2])));
}

#[test]
fn nan_is_never_equal() {
    let a = t(&[1.0, f64::NAN], &[2]);
    let wide = f64::INFINITY;
    assert!(!relative_eq!(a, a.clone()));
    assert!(!relative_eq!(
        a,
        a.clone(),
        epsilon = wide,
        max_relative = wide
    ));
    assert!(!abs_diff_eq!(a, a.clone(), epsilon = wide));
    assert!(!ulps_eq!(a, a.clone(), epsilon = wide, max_ulps = u32::MAX));
    assert!(!relative_eq!(
        Tensor::scalar(f64::NAN),
        Tensor::scalar(f64::NAN)
    ));
    // Infinities of the same sign are equal, as for f64.
    let inf = t(&[f64::INFINITY, f64::NEG_INFINITY], &[2]);
    assert!(relative_eq!(inf, inf.clone()));
}

#[cfg(feature = "ndarray")]
mod ndarray_conversions {
    use approx::assert_relative_eq;
    use ndarray::{Array, Array0, Array2, Array3, ArrayD, IxDyn, ShapeBuilder, array};
    use tapegrad::{Tape, Tensor};

    #[test]
    fn a_non_square_matrix_round_trips() {
        let a = Array2::from_shape_vec((2, 3), (0..6).map(f64::from).collect()).unwrap();
        let t = Tensor::from(a.clone());
        assert_eq!(t.shape(), &[2, 3]);
        assert_eq!(t.data(), &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        let back = ArrayD::from(&t);
        assert_eq!(back.shape(), &[2, 3]);
        assert_eq!(back, a.into_dyn());
    }

    #[test]
    fn a_3d_array_round_trips() {
        let a = Array3::from_shape_fn((2, 3, 4), |(i, j, k)| (100 * i + 10 * j + k) as f64);
        let t = Tensor::from(a.clone());
        assert_eq!(t.shape(), &[2, 3, 4]);
        // Row-major: the last index moves fastest.
        assert_eq!(&t.data()[..5], &[0.0, 1.0, 2.0, 3.0, 10.0]);
        assert_eq!(t.data()[23], 123.0);
        assert_eq!(ArrayD::from(&t), a.into_dyn());
    }

    #[test]
    fn fortran_order_and_transposed_arrays_convert_in_logical_order() {
        // Stored column by column: memory holds 0, 3, 1, 4, 2, 5.
        let f = Array::from_shape_vec((2, 3).f(), vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]).unwrap();
        assert_eq!(f[[0, 1]], 1.0);
        let t = Tensor::from(f);
        assert_eq!(t.shape(), &[2, 3]);
        assert_eq!(t.data(), &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);

        // A transposed row-major array: [[0, 3], [1, 4], [2, 5]].
        let a = Array2::from_shape_vec((2, 3), (0..6).map(f64::from).collect()).unwrap();
        let t = Tensor::from(a.reversed_axes());
        assert_eq!(t.shape(), &[3, 2]);
        assert_eq!(t.data(), &[0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);

        // Fortran order in 3-d: element [i, j, k] lands at row-major position.
        let f3 = Array3::from_shape_fn((2, 3, 4).f(), |(i, j, k)| (100 * i + 10 * j + k) as f64);
        let t = Tensor::from(f3.clone());
        assert_eq!(t.data()[12 + 2 * 4 + 3], 123.0);
        assert_eq!(ArrayD::from(&t), f3.into_dyn());
    }

    #[test]
    fn a_sliced_array_converts_only_its_elements() {
        let mut a = array![[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]];
        a.slice_axis_inplace(ndarray::Axis(0), (1..).into());
        assert_eq!(Tensor::from(a).data(), &[3.0, 4.0, 5.0, 6.0]);
        let mut b = array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]];
        b.slice_axis_inplace(ndarray::Axis(1), (1..).into());
        let t = Tensor::from(b);
        assert_eq!(t.shape(), &[2, 2]);
        assert_eq!(t.data(), &[2.0, 3.0, 5.0, 6.0]);
    }

    #[test]
    fn a_0d_array_is_a_scalar_and_empty_arrays_keep_their_shape() {
        let t = Tensor::from(Array0::from_elem((), 2.5));
        assert_eq!(t.shape(), &[] as &[usize]);
        assert_eq!(t.item(), 2.5);
        let back = ArrayD::from(&t);
        assert_eq!(back.ndim(), 0);
        assert_eq!(back[IxDyn(&[])], 2.5);

        let e = Tensor::from(Array2::<f64>::zeros((0, 3)));
        assert_eq!(e.shape(), &[0, 3]);
        assert_eq!(ArrayD::from(&e).shape(), &[0, 3]);
    }

    #[test]
    fn a_gradient_checked_in_ndarray() {
        let x = Array::from_shape_fn((3, 2).f(), |(i, j)| i as f64 - 1.5 * j as f64);
        let tape = Tape::new();
        let w = tape.var(Tensor::from(x.clone()));
        let loss = (w * w).sum();
        let g = loss.backward();
        let got = ArrayD::from(g.wrt(w));
        let manual = (2.0 * &x).into_dyn(); // d sum(x^2) / dx = 2x
        assert_eq!(got, manual);
        assert_relative_eq!(Tensor::from(got), Tensor::from(manual));
    }
}

#[cfg(feature = "nalgebra")]
mod nalgebra_conversions {
    use approx::assert_relative_eq;
    use nalgebra::DMatrix;
    use tapegrad::{Tape, Tensor};

    #[test]
    fn a_non_square_matrix_round_trips() {
        let m = DMatrix::from_fn(2, 3, |i, j| (10 * i + j) as f64 + 0.5);
        let t = Tensor::from(&m);
        assert_eq!(t.shape(), &[2, 3]);
        for i in 0..2 {
            for j in 0..3 {
                assert_eq!(t.data()[i * 3 + j], m[(i, j)], "[{i}, {j}]");
            }
        }
        assert_eq!(t.data(), &[0.5, 1.5, 2.5, 10.5, 11.5, 12.5]);
        let back = DMatrix::try_from(&t).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.shape(), (2, 3));
    }

    #[test]
    fn only_2d_tensors_convert_to_a_matrix() {
        let e = DMatrix::<f64>::try_from(&Tensor::from(vec![1.0, 2.0, 3.0])).unwrap_err();
        assert!(e.to_string().contains("[3]"), "{e}");
        let e = DMatrix::<f64>::try_from(&Tensor::zeros(&[2, 3, 4])).unwrap_err();
        assert!(e.to_string().contains("[2, 3, 4]"), "{e}");
        let e = DMatrix::<f64>::try_from(&Tensor::scalar(1.0)).unwrap_err();
        assert!(e.to_string().contains("[]"), "{e}");
        let empty = DMatrix::<f64>::try_from(&Tensor::zeros(&[0, 4])).unwrap();
        assert_eq!(empty.shape(), (0, 4));
    }

    #[test]
    fn a_gradient_checked_in_nalgebra() {
        let xm = DMatrix::from_fn(3, 2, |i, j| i as f64 - 0.25 * j as f64 + 1.0);
        let wm = DMatrix::from_fn(2, 4, |i, j| (i + 2 * j) as f64 * 0.5 - 1.0);
        let tape = Tape::new();
        let x = tape.constant(Tensor::from(&xm));
        let w = tape.var(Tensor::from(&wm));
        let loss = x.matmul(w).sum();
        assert_relative_eq!(loss.value().item(), (&xm * &wm).sum(), max_relative = 1e-12);
        let g = loss.backward();
        // d sum(X W) / dW = X^T 1, with 1 the all-ones matrix of X W's shape.
        let manual = xm.transpose() * DMatrix::from_element(3, 4, 1.0);
        let got = DMatrix::try_from(g.wrt(w)).unwrap();
        assert_relative_eq!(got, manual, max_relative = 1e-12);
        assert_relative_eq!(g.wrt(w), &Tensor::from(&manual), max_relative = 1e-12);
    }
}
