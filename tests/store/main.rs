//! Token stores: `MemoryStore` and a store of your own, `FileStore` (format, permissions,
//! locks, crashes, other processes), stores shared by clients and processes, and stores
//! that fail.
//!
//! One module per behaviour file; the shared servers, fixtures and observers are in
//! `tests/harness/`.

#[path = "../harness/mod.rs"]
mod harness;

mod app_dir;
mod file_store;
mod file_store_crash;
mod file_store_hygiene;
mod file_store_multiprocess;
mod keep_lock;
mod keep_lock_faults;
mod serde_store;
mod shared_store;
mod storage;
mod store_failures;
