//! [`AuthClient::logout`]: end the session here and at the server (RFC 7009).

use crate::client::AuthClient;
use crate::error::Error;
use crate::event::Event;

impl AuthClient {
    /// Logs out: clears the tokens from memory and the store, then revokes the session at the
    /// server (RFC 7009) if the refresher can ([`OAuth2Refresh`](crate::OAuth2Refresh) from an
    /// [`AuthServer`](crate::AuthServer) with a
    /// [revocation URL](crate::AuthServer::revocation_url), set by discovery). Later calls
    /// return [`Error::NoTokens`] until [`AuthClient::set_tokens`].
    ///
    /// The local logout comes first and always happens; the revocation is best effort: it
    /// sends the refresh token (the access token if there is none) with the refresher's client
    /// authentication and `token_type_hint`, on the token agent, within
    /// [`REVOCATION_TIMEOUT`](crate::login::REVOCATION_TIMEOUT). Without a revocation endpoint, or
    /// without tokens, the logout is local only. With a shared store the logout is written
    /// under the store's lock, and if another process saved newer tokens (e.g. after rotating
    /// the refresh token) those are the ones revoked.
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
    /// - [`Error::Store`] if the store could not be cleared, also when a shared store's lock
    ///   could not be taken: memory is cleared and the revocation attempted all the same (its
    ///   failure, if any, is reported as an event only), and the logout is written to the
    ///   store later, over whatever it holds by then (see [`AuthClient::clear_tokens`]).
    /// - [`Error::Reentrant`] from the client's own refresher, store or a listener running
    ///   during a refresh.
    pub fn logout(&self) -> Result<(), Error> {
        let session = self.session();
        let out = session.log_out_locally()?;
        let generation = out.generation;
        let revoke_err = match out.tokens.as_ref().and_then(|t| session.revoke(t)) {
            Some(Err(e)) => {
                session.hooks().report(
                    Event::RevocationFailed { generation },
                    format_args!(
                        "logged out locally, but revoking the session at the server \
                        failed: {}",
                        crate::logging::Chain(&e)
                    ),
                );
                Some(e)
            }
            _ => None,
        };
        out.cleared?;
        revoke_err.map_or(Ok(()), |e| Err(Error::RevocationFailed(e)))
    }
}
