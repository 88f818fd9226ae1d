//! Random ids: bytes from the operating system (with a fallback), for ids whose uniqueness
//! is all that matters.

/// `N` random bytes from the operating system, for ids whose uniqueness is all that matters
/// (logins' lineages, store writes, lease owners). Should the OS source fail (it does not on
/// supported platforms), std's per-process random hash keys mixed with the process id, the
/// time and a counter stand in.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if getrandom::getrandom(&mut bytes).is_err() {
        use std::hash::{BuildHasher, Hasher};
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        for (i, chunk) in bytes.chunks_mut(8).enumerate() {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(n);
            h.write_u32(std::process::id());
            h.write_u128(nanos);
            h.write_usize(i);
            chunk.copy_from_slice(&h.finish().to_le_bytes()[..chunk.len()]);
        }
    }
    bytes
}

/// 128 random bits (see [`random_bytes`]) as 32 lowercase hex digits: `RedisStore`'s lease
/// owners and write ids.
#[cfg(feature = "redis")]
pub(crate) fn random_id() -> String {
    crate::encoding::hex(&random_bytes::<16>())
}
