//! Connections to Redis: a few idle connections kept for reuse, timeouts on every connect,
//! read and write, one retry on a fresh connection when a kept one turns out dead (Redis
//! restarted), and errors that never show the URL's password.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use parking_lot::Mutex;
use redis::{Client, Connection, RedisError, RedisResult};

use crate::url::strip_userinfo;

/// Idle connections kept for reuse. A client uses at most a few at once: the change-detection
/// thread, a lease's renewer, and the thread holding the lock (or waiting for it).
const MAX_IDLE: usize = 4;

/// One Redis server, as given by its URL.
pub(super) struct Redis {
    client: Client,
    /// Connections not in use. Guarded by itself; held only to take or return one.
    idle: Mutex<Vec<Connection>>,
    /// The connect, read and write timeout, in milliseconds (`RedisStore::io_timeout`).
    timeout_ms: AtomicU64,
    /// The URL without userinfo or query (where a password can be), for `Debug` and errors.
    shown: String,
    /// The URL's password and user name, removed from error messages should Redis or the
    /// `redis` crate ever quote them.
    secrets: Vec<String>,
}

impl Redis {
    /// Parses `url`; connects later, when first used.
    pub(super) fn open(url: &str, timeout: Duration) -> RedisResult<Redis> {
        let client = Client::open(url)?;
        let settings = client.get_connection_info().redis_settings();
        let secrets = [settings.password(), settings.username()]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let shown = strip_userinfo(url);
        let shown = shown.split('?').next().unwrap_or_default().to_owned();
        let redis = Redis {
            client,
            idle: Mutex::new(Vec::new()),
            timeout_ms: AtomicU64::new(0),
            shown,
            secrets,
        };
        redis.set_timeout(timeout);
        Ok(redis)
    }

    pub(super) fn set_timeout(&self, timeout: Duration) {
        let ms = u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.timeout_ms.store(ms, Relaxed);
    }

    pub(super) fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(Relaxed))
    }

    /// The URL as it may be shown: no user name, password or query.
    pub(super) fn shown(&self) -> &str {
        &self.shown
    }

    /// Runs `op` on a connection. A kept connection that fails with a connection error (Redis
    /// restarted, or the connection idled out) is dropped and `op` runs once more on a new
    /// one. Every operation of the store is safe to run twice: reads are reads, and each
    /// write is a compare-and-set that refuses to apply twice.
    pub(super) fn run<T>(
        &self,
        doing: &str,
        mut op: impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> io::Result<T> {
        let kept = self.idle.lock().pop();
        let fresh = kept.is_none();
        let mut conn = match kept {
            Some(conn) => conn,
            None => self.connect().map_err(|e| self.error(doing, &e))?,
        };
        let result = match op(&mut conn) {
            Err(e) if !fresh && is_connection_error(&e) => {
                conn = self.connect().map_err(|e| self.error(doing, &e))?;
                op(&mut conn)
            }
            result => result,
        };
        match result {
            Ok(value) => {
                let mut idle = self.idle.lock();
                if idle.len() < MAX_IDLE {
                    idle.push(conn);
                }
                Ok(value)
            }
            // The connection may be in any state now: it is dropped.
            Err(e) => Err(self.error(doing, &e)),
        }
    }

    fn connect(&self) -> RedisResult<Connection> {
        let timeout = self.timeout();
        let conn = self.client.get_connection_with_timeout(timeout)?;
        conn.set_read_timeout(Some(timeout))?;
        conn.set_write_timeout(Some(timeout))?;
        Ok(conn)
    }

    /// An `io::Error` for a failed operation: its kind from the Redis error, a message naming
    /// the server (without credentials) and what was being done.
    fn error(&self, doing: &str, e: &RedisError) -> io::Error {
        let kind = if e.is_timeout() {
            io::ErrorKind::TimedOut
        } else if e.is_connection_refusal() {
            io::ErrorKind::ConnectionRefused
        } else if is_connection_error(e) {
            io::ErrorKind::ConnectionAborted
        } else {
            io::ErrorKind::Other
        };
        let mut text = e.to_string();
        for secret in &self.secrets {
            text = text.replace(secret.as_str(), "[redacted]");
        }
        io::Error::new(kind, format!("Redis at {}: {doing}: {text}", self.shown))
    }
}

fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error()
}
