//! The users' handle on a client: what every [`AuthClient`](crate::AuthClient) clone, request
//! builder and middleware holds. Dropping the last one ends the client (see
//! [`AuthClient::close`](crate::AuthClient::close)). Background threads hold the [`Session`]
//! only, so they never keep the handle alive.

use std::sync::Arc;

use crate::config::Config;
use crate::error::Error;
use crate::reentry;
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
            session: session.into_arc(),
            closed: false,
        })
    }

    /// Ends one handle (see [`AuthClient::close`](crate::AuthClient::close)): the last one
    /// shuts the session down, once, here and not again when it drops.
    pub(crate) fn close(this: Arc<Handle>) -> Result<(), Error> {
        let session = Arc::clone(&this.session);
        if reentry::is_busy(session.key()) {
            // From inside the client's own refresh, store or listener: the handle stays open
            // until it drops, and the last one shuts the session down once the refresh is
            // over (see `Drop`).
            drop(this);
            return Err(Error::Reentrant);
        }
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
        if self.closed {
            return;
        }
        if reentry::is_busy(self.session.key()) {
            // Dropped inside the client's own refresh, store or listener, which this thread
            // is running: the shutdown waits for it to end, on a thread of its own.
            let session = Arc::clone(&self.session);
            let spawned = std::thread::Builder::new()
                .name("tokengate-close".into())
                .spawn(move || {
                    let _ = session.shut_down(true);
                });
            if spawned.is_ok() {
                return;
            }
        }
        // Errors have been reported as events; `close()` is the way to receive them.
        let _ = self.session.shut_down(true);
    }
}
