//! The sync primitives the refresh gate is built on.
//!
//! Normally these are `parking_lot`'s. Under `RUSTFLAGS="--cfg tokengate_loom"` they are
//! loom's, behind the same small API, so `src/gate_loom_tests.rs` can model-check the gate.
//! (Plain `--cfg loom` is not usable: tokio, pulled in by httpmock, reacts to it too.)

#[cfg(not(tokengate_loom))]
mod imp {
    pub(crate) use parking_lot::{MutexGuard, RwLock};
    pub(crate) use std::sync::Arc;
    use std::time::Instant;

    /// `parking_lot::Mutex`.
    pub(crate) type Mutex<T> = parking_lot::Mutex<T>;

    /// `parking_lot::Condvar` with the one wait the gate needs.
    #[derive(Default)]
    pub(crate) struct Condvar(parking_lot::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Self {
            Self(parking_lot::Condvar::new())
        }

        /// Waits for a notification or `deadline`; returns true if the deadline passed.
        pub(crate) fn wait_until<T>(
            &self,
            guard: &mut MutexGuard<'_, T>,
            deadline: Instant,
        ) -> bool {
            self.0.wait_until(guard, deadline).timed_out()
        }

        pub(crate) fn notify_all(&self) {
            self.0.notify_all();
        }
    }
}

#[cfg(tokengate_loom)]
mod imp {
    // The tokens' `Arc` is not a synchronization primitive under test (the gate never relies
    // on its reference count), and the client hands it out; std's keeps one type under both cfgs.
    use std::ops::{Deref, DerefMut};
    pub(crate) use std::sync::Arc;
    use std::time::Instant;

    /// `loom::sync::Mutex` with parking_lot's `lock()` signature.
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    /// Wraps loom's guard so `Condvar::wait_until` can take `&mut` like parking_lot's.
    pub(crate) struct MutexGuard<'a, T>(Option<loom::sync::MutexGuard<'a, T>>);

    impl<T> Mutex<T> {
        pub(crate) fn new(v: T) -> Self {
            Self(loom::sync::Mutex::new(v))
        }
        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            MutexGuard(Some(self.0.lock().unwrap()))
        }
    }

    impl<T> Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            self.0.as_ref().unwrap()
        }
    }

    impl<T> DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            self.0.as_mut().unwrap()
        }
    }

    /// `loom::sync::RwLock` with parking_lot's signatures.
    pub(crate) struct RwLock<T>(loom::sync::RwLock<T>);

    impl<T> RwLock<T> {
        pub(crate) fn new(v: T) -> Self {
            Self(loom::sync::RwLock::new(v))
        }
        pub(crate) fn read(&self) -> loom::sync::RwLockReadGuard<'_, T> {
            self.0.read().unwrap()
        }
        pub(crate) fn write(&self) -> loom::sync::RwLockWriteGuard<'_, T> {
            self.0.write().unwrap()
        }
    }

    /// `loom::sync::Condvar`; loom never times out, so the deadline is ignored.
    pub(crate) struct Condvar(loom::sync::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Self {
            Self(loom::sync::Condvar::new())
        }
        pub(crate) fn wait_until<T>(
            &self,
            guard: &mut MutexGuard<'_, T>,
            _deadline: Instant,
        ) -> bool {
            let g = guard.0.take().unwrap();
            guard.0 = Some(self.0.wait(g).unwrap());
            false
        }
        pub(crate) fn notify_all(&self) {
            self.0.notify_all();
        }
    }
}

pub(crate) use imp::*;
