//! Which clients the current thread is busy inside: leading a refresh, or running one of the
//! client's store calls. A call back into such a client from its own refresher, store or event
//! listener would wait for itself (for the refresh it is part of, or for the store lock it
//! holds); instead it gets [`Error::Reentrant`](crate::Error::Reentrant) at once.

use std::cell::RefCell;

thread_local! {
    /// Addresses of the clients (their `Session`) this thread is busy inside, innermost
    /// last. Written only by [`enter`] and [`Busy`]'s `Drop` on this thread.
    static BUSY: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// Marks this thread busy inside client `key` until dropped.
#[must_use = "the mark lasts as long as the guard"]
pub(crate) struct Busy {
    key: usize,
}

/// Marks the current thread busy inside the client identified by `key`.
pub(crate) fn enter(key: usize) -> Busy {
    BUSY.with(|b| b.borrow_mut().push(key));
    Busy { key }
}

/// True if the current thread is busy inside the client identified by `key`.
pub(crate) fn is_busy(key: usize) -> bool {
    BUSY.with(|b| {
        let b = b.borrow();
        !b.is_empty() && b.contains(&key)
    })
}

impl Drop for Busy {
    fn drop(&mut self) {
        BUSY.with(|b| {
            let mut b = b.borrow_mut();
            if let Some(i) = b.iter().rposition(|k| *k == self.key) {
                b.remove(i);
            }
        });
    }
}
