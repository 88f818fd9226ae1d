//! Where tokens live between refreshes: the [`TokenStore`] trait and [`MemoryStore`].

use std::fmt;
use std::io;

pub(crate) mod file;

use parking_lot::Mutex;

use crate::tokens::Tokens;

/// Persistence for tokens. The client keeps the authoritative copy in memory and writes
/// through to the store after every change (refresh, `set_tokens`, `clear_tokens`, session
/// expiry), in the order the changes happened.
///
/// # Errors
/// A failing `save` or `clear` is reported as [`Error::Store`](crate::Error::Store) to the
/// call that caused the change; the in-memory tokens are already updated, so no token is lost
/// for this process.
pub trait TokenStore: Send + Sync + 'static {
    /// Loads the saved tokens, if any. Called once by `build()` when no tokens were given.
    fn load(&self) -> io::Result<Option<Tokens>>;
    /// Saves `tokens`, replacing what was there.
    fn save(&self, tokens: &Tokens) -> io::Result<()>;
    /// Removes the saved tokens (logout or session expiry).
    fn clear(&self) -> io::Result<()>;

    /// Called by the one thread about to refresh, before the refresher runs. A store shared
    /// between processes takes a cross-process lock here and returns it with the tokens it
    /// currently holds: if another process already refreshed (the stored access token differs
    /// from the one this process is replacing), the client adopts the stored tokens instead of
    /// refreshing. The lock is dropped after the refresh result has been saved.
    ///
    /// Defaults to `Ok(None)`: no cross-process coordination.
    fn lock_for_refresh(&self) -> io::Result<Option<RefreshLock>> {
        Ok(None)
    }

    /// A cheap check, made before each request, whether another process changed the stored
    /// tokens since this process last loaded or saved them. `Some(tokens)` is adopted as the
    /// new state (`Some(None)`: logged out elsewhere). Changes this process made must not be
    /// reported. Defaults to `Ok(None)`.
    fn poll_external_change(&self) -> io::Result<Option<Option<Tokens>>> {
        Ok(None)
    }
}

/// A cross-process refresh lock returned by [`TokenStore::lock_for_refresh`].
pub struct RefreshLock {
    /// Released when dropped (e.g. a locked `File`).
    _guard: Box<dyn std::any::Any + Send>,
    /// The tokens stored at the moment the lock was taken.
    stored: Option<Tokens>,
}

impl RefreshLock {
    /// A lock held by `guard` (released on drop), with the tokens read under it.
    pub fn new(guard: impl std::any::Any + Send, stored: Option<Tokens>) -> Self {
        RefreshLock {
            _guard: Box::new(guard),
            stored,
        }
    }

    /// The tokens stored when the lock was taken.
    pub fn stored(&self) -> Option<&Tokens> {
        self.stored.as_ref()
    }
}

impl fmt::Debug for RefreshLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshLock")
            .field("stored", &self.stored)
            .finish_non_exhaustive()
    }
}

/// Keeps tokens in memory only; the default store.
#[derive(Default)]
pub struct MemoryStore {
    /// Written by the client under its persist lock; read by `load`.
    tokens: Mutex<Option<Tokens>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding `tokens`.
    pub fn with_tokens(tokens: Tokens) -> Self {
        MemoryStore {
            tokens: Mutex::new(Some(tokens)),
        }
    }
}

impl TokenStore for MemoryStore {
    fn load(&self) -> io::Result<Option<Tokens>> {
        Ok(self.tokens.lock().clone())
    }

    fn save(&self, tokens: &Tokens) -> io::Result<()> {
        *self.tokens.lock() = Some(tokens.clone());
        Ok(())
    }

    fn clear(&self) -> io::Result<()> {
        *self.tokens.lock() = None;
        Ok(())
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("has_tokens", &self.tokens.lock().is_some())
            .finish()
    }
}

impl<S: TokenStore> TokenStore for std::sync::Arc<S> {
    fn load(&self) -> io::Result<Option<Tokens>> {
        (**self).load()
    }
    fn save(&self, tokens: &Tokens) -> io::Result<()> {
        (**self).save(tokens)
    }
    fn clear(&self) -> io::Result<()> {
        (**self).clear()
    }
    fn lock_for_refresh(&self) -> io::Result<Option<RefreshLock>> {
        (**self).lock_for_refresh()
    }
    fn poll_external_change(&self) -> io::Result<Option<Option<Tokens>>> {
        (**self).poll_external_change()
    }
}
