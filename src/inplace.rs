//! Boxing without the copy. `Box::new(value)` builds the value on the stack and then copies
//! it into the allocation: a memcpy of the type's whole size, which for a future is the size
//! of its largest state (kilobytes for a connection's or a request's) even while it holds a
//! few pointers. Allocating first lets the compiler build the value straight into the
//! allocation. Macros rather than functions taking a closure, so that a future built in
//! place may borrow the caller's locals.
//!
//! Depends on: nothing.

/// `Box::new($value)`, with `$value` built in its allocation (allocated first).
macro_rules! boxed {
    ($value:expr) => {
        ::std::boxed::Box::write(::std::boxed::Box::new_uninit(), $value)
    };
}

/// `Box::pin($value)`, with `$value` built in its allocation (allocated first).
macro_rules! pin_boxed {
    ($value:expr) => {
        ::std::boxed::Box::into_pin($crate::inplace::boxed!($value))
    };
}

pub(crate) use {boxed, pin_boxed};

#[cfg(test)]
mod tests {
    #[test]
    fn the_box_holds_what_was_made() {
        let big = boxed!([7u8; 4096]);
        assert!(big.iter().all(|&b| b == 7));
    }

    #[tokio::test]
    async fn a_pinned_future_borrows_the_callers_locals_and_runs_to_its_output() {
        let mut state = [0u64; 512];
        state[511] = 41;
        let fut = pin_boxed!(async {
            tokio::task::yield_now().await;
            state[511] + 1
        });
        assert_eq!(fut.await, 42);
    }
}
