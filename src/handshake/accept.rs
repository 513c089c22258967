//! `Sec-WebSocket-Key` and `Sec-WebSocket-Accept` (RFC 6455 §4.2.1, §4.2.2, §11.3).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha1::{Digest, Sha1};

/// The GUID RFC 6455 §1.3 appends to the key before hashing.
pub const WEBSOCKET_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Whether `key` is a valid `Sec-WebSocket-Key`: base64 that decodes to exactly 16 bytes
/// (RFC 6455 §4.1 item 7, §4.2.1 item 5).
///
/// ```
/// assert!(wsrelay::handshake::is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
/// assert!(!wsrelay::handshake::is_valid_key(b"c2hvcnQ="));
/// ```
pub fn is_valid_key(key: &[u8]) -> bool {
    // 16 bytes are exactly 24 base64 characters, the last two being padding.
    if key.len() != 24 {
        return false;
    }
    let mut decoded = [0u8; 18];
    matches!(STANDARD.decode_slice(key, &mut decoded), Ok(16))
}

/// 16 key bytes as a `Sec-WebSocket-Key` value: 24 base64 characters (RFC 6455 §4.1 item 7).
pub(crate) fn encode_key(key: &[u8; 16]) -> http::HeaderValue {
    let mut out = [0u8; 24];
    let n = STANDARD
        .encode_slice(key, &mut out)
        .expect("16 bytes encode to 24 base64 characters");
    debug_assert_eq!(n, 24);
    http::HeaderValue::from_bytes(&out).expect("base64 is a valid header value")
}

/// The `Sec-WebSocket-Accept` value a server must answer `key` with:
/// base64(SHA-1(key ++ GUID)) (RFC 6455 §4.2.2 item 5.4).
///
/// ```
/// // The example from RFC 6455 §1.3.
/// let accept = wsrelay::handshake::derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ==");
/// assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
/// ```
pub fn derive_accept_key(key: &[u8]) -> String {
    let accept = accept_bytes(key);
    String::from_utf8(accept.to_vec()).expect("base64 is ASCII")
}

/// [`derive_accept_key`] without allocating.
pub(crate) fn accept_bytes(key: &[u8]) -> [u8; 28] {
    let digest = Sha1::new()
        .chain_update(key)
        .chain_update(WEBSOCKET_GUID)
        .finalize();
    let mut out = [0u8; 28];
    let n = STANDARD
        .encode_slice(digest, &mut out)
        .expect("20 bytes encode to 28 base64 characters");
    debug_assert_eq!(n, 28);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 6455 §1.3 and §4.2.2: the specification's own example key and accept value.
    #[test]
    fn rfc6455_example_vector() {
        assert_eq!(
            &accept_bytes(b"dGhlIHNhbXBsZSBub25jZQ==")[..],
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    // Rule 3: the key is base64 that decodes to exactly 16 bytes.
    #[test]
    fn key_validity() {
        let cases: &[(&[u8], bool)] = &[
            (b"dGhlIHNhbXBsZSBub25jZQ==", true),
            (b"AAAAAAAAAAAAAAAAAAAAAA==", true),
            (b"dGhlIHNhbXBsZSBub25jZQ", false),  // padding missing
            (b"dGhlIHNhbXBsZSBub25jZQ=", false), // padding short
            (b"dGhlIHNhbXBsZSBub25jZXg=", false), // 17 bytes
            (b"dGhlIHNhbXBsZSBub25j", false),    // 15 bytes
            (b"dGhlIHNhbXBsZSBub25jZQ*=", false), // not base64
            (b"dGhlIHNhbXBsZSBub25jZR==", false), // non-canonical trailing bits
            (b"", false),
            (b" dGhlIHNhbXBsZSBub25jZQ==", false), // 25 characters
        ];
        for (key, valid) in cases {
            assert_eq!(
                is_valid_key(key),
                *valid,
                "{}",
                String::from_utf8_lossy(key)
            );
        }
    }
}
