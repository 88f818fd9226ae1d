//! The users' handle on a client: what every [`AuthClient`](crate::AuthClient) clone, request
//! builder and middleware holds. Dropping the last one ends the client (see
//! [`AuthClient::close`](crate::AuthClient::close)). Background threads hold the [`Session`]
//! only, so they never keep the handle alive.

use std::sync::Arc;

use crate::config::Config;
use crate::error::Error;
use crate::session::Session;

pub(crate) struct Handle {
    pub(crate) config: Arc<Config>,
    pub(crate) session: Arc<Session>,
    /// Set by [`Handle::close`] once it shut the client down: `Drop` does not again.
    closed: bool,
}

impl Handle {
    pub(crate) fn new(config: Arc<Config>, session: Session) -> Arc<Handle> {
        Arc::new(Handle {
            config,
            session: Arc::new(session),
            closed: false,
        })
    }

    /// Ends one handle (see [`AuthClient::close`](crate::AuthClient::close)): the last one
    /// shuts the session down, once, here and not again when it drops.
    pub(crate) fn close(this: Arc<Handle>) -> Result<(), Error> {
        let session = Arc::clone(&this.session);
        match Arc::into_inner(this) {
            Some(mut handle) => {
                handle.closed = true;
                session.shut_down(true)
            }
            None => session.shut_down(false),
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if !self.closed {
            // Errors have been reported as events; `close()` is the way to receive them.
            let _ = self.session.shut_down(true);
        }
    }
}
