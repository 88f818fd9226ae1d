//! [`AuthClient::logout`]: end the session here and at the server (RFC 7009).

use std::sync::Arc;

use crate::client::AuthClient;
use crate::error::Error;
use crate::event::Event;

impl AuthClient {
    /// Logs out: clears the tokens from memory and the store, then revokes the session at the
    /// server (RFC 7009) if the refresher can ([`OAuth2Refresh`](crate::OAuth2Refresh) with a
    /// [revocation URL](crate::OAuth2Refresh::revocation_url), set by `discover`). Later calls
    /// return [`Error::NoTokens`] until [`AuthClient::set_tokens`].
    ///
    /// The local logout comes first and always happens; the revocation is best effort: it
    /// sends the refresh token (the access token if there is none) with the refresher's client
    /// authentication and `token_type_hint`, on the token agent, within
    /// [`REVOCATION_TIMEOUT`](crate::REVOCATION_TIMEOUT). Without a revocation endpoint, or
    /// without tokens, the logout is local only. Tokens another process saved to a shared
    /// store (e.g. after rotating the refresh token) are adopted first, so the newest refresh
    /// token is the one revoked.
    ///
    /// # Concurrent calls
    /// Generation-checked like every change: the tokens cleared are exactly the ones revoked.
    /// If a refresh or a login lands between reading the tokens and clearing them, the newer
    /// tokens are the ones logged out; a login made after the clear is never touched, also
    /// while the revocation is still running (no lock is held during it). Threads waiting on a
    /// refresh wake up and see [`Error::NoTokens`].
    ///
    /// # Errors
    /// - [`Error::RevocationFailed`] when the server could not be reached or refused: the
    ///   local logout happened all the same; an [`Event::RevocationFailed`] is reported too.
    /// - [`Error::Store`] if the store could not be cleared (memory is cleared; the revocation
    ///   was still attempted, and its failure, if any, is reported as an event only).
    pub fn logout(&self) -> Result<(), Error> {
        let inner = &self.inner;
        // A store that cannot be read now is cleared below all the same.
        let _ = inner.adopt_external_change();
        let mut store_err = None;
        let (tokens, generation) = loop {
            let snap = inner.gate.snapshot();
            let cleared = inner.gate.clear_if(snap.generation, |_| {
                store_err = inner.store.clear().err();
            });
            if cleared.is_some() {
                break (snap.tokens, snap.generation);
            }
            // The generation moved between the read and the clear: log out the newer tokens.
        };
        let revoked = match (&tokens, &inner.refresher) {
            (Some(current), Some(refresher)) => {
                refresher.revoke(&inner.token_agent, &current.tokens)
            }
            _ => None,
        };
        let revoke_err = match revoked {
            Some(Err(e)) => {
                inner.emit(Event::RevocationFailed { generation });
                Some(e)
            }
            _ => None,
        };
        if let Some(e) = store_err {
            return Err(Error::Store(Arc::new(e)));
        }
        revoke_err.map_or(Ok(()), |e| Err(Error::RevocationFailed(e)))
    }
}
