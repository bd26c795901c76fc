//! The edges an adversarial run found: shapes whose element count overflows `usize`,
//! sums over nothing, a tape used from inside a custom op, and which types may cross
//! threads.

mod common;

use common::panic_message;
use tapegrad::{Gradients, Tape, Tensor};

const HUGE: usize = 1 << 32;

#[test]
fn zeros_of_a_shape_that_overflows_panics_naming_the_shape_and_line() {
    let line = line!() + 1;
    let message = panic_message(|| drop(Tensor::zeros(&[HUGE, HUGE])));
    assert!(message.starts_with("tapegrad: Tensor::full"), "{message}");
    assert!(message.contains("[4294967296, 4294967296]"), "{message}");
    assert!(message.contains(&format!("limits.rs:{line}")), "{message}");
    let message = panic_message(|| drop(Tensor::full(&[HUGE, HUGE, 2], 1.0)));
    assert!(
        message.contains("more elements than fit in memory"),
        "{message}"
    );
}

#[test]
fn a_shape_with_a_zero_has_no_elements_whatever_else_it_holds() {
    let t = Tensor::zeros(&[HUGE, HUGE, 0]);
    assert_eq!(t.len(), 0);
    assert_eq!(t.shape(), &[HUGE, HUGE, 0]);
}

#[test]
fn reshape_to_a_shape_that_overflows_is_an_error() {
    let t = Tensor::from(vec![1.0, 2.0]);
    let err = t.reshape(&[HUGE, HUGE]).expect_err("must not reshape");
    assert!(
        err.to_string().contains("more elements than fit in memory"),
        "{err}"
    );
    assert!(Tensor::new(vec![], &[HUGE, HUGE, HUGE]).is_err());
}

#[test]
fn ops_whose_result_would_overflow_panic_at_the_op_naming_it_and_the_shapes() {
    let tape = Tape::new();
    let a = tape.var(Tensor::zeros(&[HUGE, HUGE, 0]));
    let line = line!() + 2;
    let message = panic_message(|| {
        a.sum_axis(2);
    });
    assert!(message.starts_with("tapegrad: sum_axis"), "{message}");
    assert!(message.contains("[4294967296, 4294967296]"), "{message}");
    assert!(message.contains(&format!("limits.rs:{line}")), "{message}");

    let m = tape.var(Tensor::zeros(&[HUGE, 0]));
    let n = tape.var(Tensor::zeros(&[0, HUGE]));
    let message = panic_message(|| {
        m.matmul(n);
    });
    assert!(message.starts_with("tapegrad: matmul"), "{message}");
    assert!(message.contains("[4294967296, 4294967296]"), "{message}");

    // An elementwise op cannot get there: operands that exist and broadcast to more
    // than usize::MAX elements would each need 2^32 elements.
}

#[test]
fn the_gradient_of_a_matmul_with_an_empty_inner_result_is_positive_zero() {
    let tape = Tape::new();
    let a = tape.var(Tensor::new(vec![1.0, -2.0, 3.0, -4.0, 5.0, -6.0], &[2, 3]).unwrap());
    let b = tape.var(Tensor::zeros(&[3, 0]));
    let grads = a.matmul(b).sum().backward();
    let ga = grads.wrt(a);
    assert_eq!(ga.shape(), &[2, 3]);
    for g in ga.data() {
        assert!(*g == 0.0 && g.is_sign_positive(), "{ga:?}");
    }
}

#[test]
fn a_custom_forward_that_records_on_its_tape_panics_saying_why() {
    let tape = Tape::new();
    let x = tape.var(Tensor::from(vec![1.0, 2.0]));
    let tape_ref: &'static Tape = Box::leak(Box::new(Tape::new()));
    let y = tape_ref.var(Tensor::from(vec![1.0]));
    let message = panic_message(|| {
        tape_ref.custom(
            "records",
            &[y],
            move |x| {
                // Recording on the tape this op is being recorded on.
                let _ = tape_ref.constant(x[0].clone());
                x[0].clone()
            },
            |_, _, up| vec![up.clone()],
        );
    });
    assert!(
        message.contains("tapegrad: constant: the tape is busy"),
        "{message}"
    );
    assert!(message.contains("custom op"), "{message}");
    let _ = x;
}

#[test]
fn a_custom_backward_that_calls_backward_on_its_tape_panics_saying_why() {
    let tape: &'static Tape = Box::leak(Box::new(Tape::new()));
    let x = tape.var(Tensor::from(vec![1.0, 2.0]));
    let y = tape.custom(
        "reenters",
        &[x],
        |x| x[0].clone(),
        move |_, _, up| {
            let z = tape.var(Tensor::scalar(1.0));
            let _ = z.backward();
            vec![up.clone()]
        },
    );
    let message = panic_message(|| drop(y.sum().backward()));
    assert!(message.contains("the tape is busy"), "{message}");
    assert!(message.contains("custom op"), "{message}");
    // The tape still works afterwards.
    let g = (x * 3.0).sum().backward();
    assert_eq!(g.wrt(x).data(), &[3.0, 3.0]);
}

#[test]
fn tensors_and_gradients_may_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Tensor>();
    send_sync::<Gradients>();
    // Checking from several threads: one tape per thread.
    let at = Tensor::from(vec![0.5, -1.5]);
    let handles: Vec<_> = (0..2)
        .map(|k| {
            let at = at.clone();
            std::thread::spawn(move || {
                let tape = Tape::new();
                let x = tape.var(at);
                (x * (k as f64 + 1.0)).sum().backward()
            })
        })
        .collect();
    for (k, h) in handles.into_iter().enumerate() {
        let grads = h.join().unwrap();
        let tape = Tape::new();
        let _ = tape; // gradients answer only for their own tape's vars
        assert_eq!(
            format!("{grads:?}"),
            format!("{{0: Tensor(shape=[2], data=[{0}, {0}])}}", k + 1)
        );
    }
}

#[test]
fn ops_on_empty_tensors_with_huge_dimensions_finish_at_once() {
    // No elements, but loops over the huge dimension would take forever.
    let tape = Tape::new();
    let wide = tape.var(Tensor::zeros(&[usize::MAX, 3, 0]));
    let flat = tape.var(Tensor::zeros(&[usize::MAX, 0]));
    let none = tape.var(Tensor::zeros(&[0, 0]));
    let results = [
        (flat.index_select(1, &[]), vec![usize::MAX, 0]),
        (wide.max_axis(1), vec![usize::MAX, 0]),
        (wide.min_axis(1), vec![usize::MAX, 0]),
        (wide.logsumexp_axis(1), vec![usize::MAX, 0]),
        (wide.sum_axis(1), vec![usize::MAX, 0]),
        (wide.softmax(1), vec![usize::MAX, 3, 0]),
        (wide.log_softmax(1), vec![usize::MAX, 3, 0]),
        (flat.matmul(none), vec![usize::MAX, 0]),
    ];
    for (y, shape) in results {
        assert_eq!(y.value().shape(), &shape[..]);
        let grads = y.sum().backward();
        assert_eq!(grads.wrt(wide).shape(), &[usize::MAX, 3, 0]);
        assert_eq!(grads.wrt(flat).shape(), &[usize::MAX, 0]);
    }
    // A sum over an axis of length 0: lanes of nothing.
    let lanes = tape.var(Tensor::zeros(&[2, 0]));
    assert_eq!(
        lanes.logsumexp_axis(1).value().data(),
        &[f64::NEG_INFINITY; 2]
    );
    assert_eq!(lanes.sum_axis(1).value().data(), &[0.0; 2]);
}

#[test]
fn shapes_whose_bytes_overflow_are_refused_with_a_message() {
    // Fits in usize as a count of elements, but not as bytes.
    let message = common::panic_message(|| drop(Tensor::zeros(&[1 << 61])));
    assert!(message.starts_with("tapegrad: Tensor::full"), "{message}");
    assert!(
        message.contains("more elements than fit in memory"),
        "{message}"
    );
    let message = common::panic_message(|| drop(Tensor::one_hot(&[0], 1 << 62)));
    assert!(message.starts_with("tapegrad: one_hot"), "{message}");
    let tape = Tape::new();
    let x = tape.var(Tensor::zeros(&[1, 1]));
    let message = common::panic_message(|| {
        x.broadcast_to(&[1 << 31, 1 << 31]);
    });
    assert!(message.starts_with("tapegrad: broadcast_to"), "{message}");
}
