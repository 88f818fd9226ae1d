//! `RedisStore` against a real `redis-server` (feature `redis`; without it this binary is
//! empty): one client's record and lease, and fleets of processes sharing a session.
//!
//! One module per behaviour file; the shared servers, fixtures and observers are in
//! `tests/harness/`.
#![cfg(feature = "redis")]

#[path = "../harness/mod.rs"]
mod harness;

mod redis_backoff;
mod redis_deferred;
mod redis_fleet;
mod redis_store;
