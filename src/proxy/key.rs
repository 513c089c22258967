//! Fresh `Sec-WebSocket-Key`s for the HTTP/1.1 backend of an HTTP/2 client ([rules] 32): the
//! client sends none over HTTP/2, so the proxy makes its own and checks the backend's
//! `Sec-WebSocket-Accept` against it.
//!
//! No new dependency and no system call per key: SipHash (std's `RandomState`), keyed once per
//! process from the operating system's random source, of a process-wide counter. The output
//! of a keyed PRF on distinct inputs is unpredictable without the key, which never leaves the
//! process, and the counter makes every input distinct. That is what the key is for (RFC 6455
//! §4.1 item 7, §10.3: a nonce that proves the backend read this handshake, not a secret).
//!
//! [rules]: crate::rules

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// 16 bytes for a new `Sec-WebSocket-Key`, different from every other this process made.
pub(crate) fn generate() -> [u8; 16] {
    static STATE: OnceLock<RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let state = STATE.get_or_init(RandomState::new);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut key = [0u8; 16];
    for (half, part) in key.chunks_exact_mut(8).zip(0u8..) {
        let mut hasher = state.build_hasher();
        hasher.write_u64(n);
        hasher.write_u8(part);
        half.copy_from_slice(&hasher.finish().to_le_bytes());
    }
    key
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    #[test]
    fn keys_are_distinct_and_valid() {
        let keys: HashSet<[u8; 16]> = (0..10_000).map(|_| super::generate()).collect();
        assert_eq!(keys.len(), 10_000);
        // Neither half is constant (a counter in plain sight would leave most bytes equal).
        let first = super::generate();
        let second = super::generate();
        assert_ne!(first[..8], second[..8]);
        assert_ne!(first[8..], second[8..]);
        assert_ne!(first[..8], first[8..]);
    }
}
