//! Where tokens live between refreshes: the [`TokenStore`] trait and [`MemoryStore`].

use std::fmt;
use std::io;

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
}
