//! Two executor-agnostic future helpers: take one turn of the executor, and run two futures
//! concurrently on the calling task (storage runs on monoio shards and under tests alike).

use std::future::Future;
use std::pin::pin;
use std::task::Poll;

/// Returns `Pending` once, waking itself: other ready tasks run before the caller goes on.
pub async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await;
}

/// Polls `a` and `b` until both are done.
pub async fn join<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let mut a = pin!(a);
    let mut b = pin!(b);
    let mut a_output = None;
    let mut b_output = None;
    std::future::poll_fn(|cx| {
        if a_output.is_none() {
            if let Poll::Ready(output) = a.as_mut().poll(cx) {
                a_output = Some(output);
            }
        }
        if b_output.is_none() {
            if let Poll::Ready(output) = b.as_mut().poll(cx) {
                b_output = Some(output);
            }
        }
        if a_output.is_some() && b_output.is_some() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    (a_output.expect("done"), b_output.expect("done"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_runs_both_and_yield_lets_the_other_go_first() {
        let order = std::cell::RefCell::new(Vec::new());
        let (((), ()), _) = crate::file_disk::block_on(join(
            async {
                yield_once().await;
                order.borrow_mut().push('a');
            },
            async {
                order.borrow_mut().push('b');
            },
        ));
        assert_eq!(*order.borrow(), vec!['b', 'a']);
    }
}
