//! Header-field lists (RFC 9110 §5.6.1): comma-separated elements across any number of lines,
//! with optional whitespace around them. Shared by the rewriter and the body framing.

use http::header::HeaderName;
use http::HeaderMap;

/// Iterates over the comma-separated elements of every line of `name`, trimmed of optional
/// whitespace, skipping empty elements (RFC 9110 §5.6.1 list rules).
pub(crate) fn list_items<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .get_all(name)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(trim_ows)
        .filter(|item| !item.is_empty())
}

/// Whether any line of `name` lists `token`, compared case-insensitively.
pub(crate) fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    list_items(headers, name).any(|item| item.eq_ignore_ascii_case(token.as_bytes()))
}

pub(crate) fn trim_ows(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}
