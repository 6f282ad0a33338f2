//! Header names recognised from their bytes without the general parser: the fields HTTP/1.1
//! framing and hop-by-hop handling look at (`Field`), and the names most requests carry
//! (`known`). `HeaderName::from_bytes` maps every byte through a table and then matches
//! the result against all standard names (~150 instructions a name); these dispatch on the
//! length and compare a word at a time.
//!
//! Depends on: http.

use http::header::{self, HeaderName};

/// The header fields HTTP/1.1 framing and hop-by-hop handling look at, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Connection,
    KeepAlive,
    ProxyConnection,
    Te,
    Upgrade,
    TransferEncoding,
    ContentLength,
    Trailer,
    Date,
    /// Any other name.
    Other,
}

impl Field {
    /// Which one `name` (a token, as parsers have checked) is, in any case. Dispatched on
    /// the length first: most names are none of these and cost one comparison of lengths.
    pub(crate) fn of(name: &[u8]) -> Self {
        let (candidate, field): (&[u8], Field) = match name.len() {
            2 => (b"te", Field::Te),
            4 => (b"date", Field::Date),
            7 if name[0].eq_ignore_ascii_case(&b't') => (b"trailer", Field::Trailer),
            7 => (b"upgrade", Field::Upgrade),
            10 if name[0].eq_ignore_ascii_case(&b'c') => (b"connection", Field::Connection),
            10 => (b"keep-alive", Field::KeepAlive),
            14 => (b"content-length", Field::ContentLength),
            16 => (b"proxy-connection", Field::ProxyConnection),
            17 => (b"transfer-encoding", Field::TransferEncoding),
            _ => return Field::Other,
        };
        if eq_lowercase(name, candidate) {
            field
        } else {
            Field::Other
        }
    }
}

/// `W` bytes of `s` from `at` as a little-endian word (`W` a constant, so this is one load).
#[inline(always)]
fn word<const W: usize>(s: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w[..W].copy_from_slice(&s[at..at + W]);
    u64::from_le_bytes(w)
}

/// Whether token `name` equals `lower` (lowercase letters and `-`, at least 2 bytes, the
/// same length) in any case, a word at a time. Setting bit 5 lowercases a letter and leaves
/// `-` alone; of the bytes it maps onto `-` or a lowercase letter only those two are token
/// characters, so this agrees with `eq_ignore_ascii_case` on tokens, at a fraction of the
/// cost of its byte-by-byte loop.
fn eq_lowercase(name: &[u8], lower: &[u8]) -> bool {
    if name.len() != lower.len() {
        return false;
    }
    match name.len() {
        0..=1 => name.eq_ignore_ascii_case(lower),
        2..=3 => eq_words::<2>(name, lower),
        4..=7 => eq_words::<4>(name, lower),
        _ => eq_words::<8>(name, lower),
    }
}

/// `eq_lowercase` in words of `W` bytes, for lengths from `W` up; the last word may overlap
/// the one before.
#[inline(always)]
fn eq_words<const W: usize>(name: &[u8], lower: &[u8]) -> bool {
    const CASE: u64 = 0x2020_2020_2020_2020;
    let mask = CASE >> (64 - 8 * W);
    let n = name.len();
    let mut at = 0;
    while at + W < n {
        if word::<W>(name, at) | mask != word::<W>(lower, at) {
            return false;
        }
        at += W;
    }
    word::<W>(name, n - W) | mask == word::<W>(lower, n - W)
}

/// Lowercase token bytes in place, a word at a time (`make_ascii_lowercase` goes byte by
/// byte); lowercasing twice changes nothing, so the last word may overlap the one before.
pub(crate) fn lowercase_token(s: &mut [u8]) {
    let n = s.len();
    if n >= 8 {
        let mut at = 0;
        while at + 8 < n {
            lower_word::<8>(s, at);
            at += 8;
        }
        lower_word::<8>(s, n - 8);
    } else if n >= 4 {
        lower_word::<4>(s, 0);
        lower_word::<4>(s, n - 4);
    } else {
        s.make_ascii_lowercase();
    }
}

/// Lowercase the `W` token bytes of `s` from `at`.
#[inline(always)]
fn lower_word<const W: usize>(s: &mut [u8], at: usize) {
    let v = word::<W>(s, at);
    // Per byte (all below 0x80 in a token): the high bit of `v + (0x80 - b'A')` is set
    // from `A` up, that of `v + (0x7f - b'Z')` from past `Z`; their difference marks the
    // capitals, and bit 5 of each makes it lowercase. Zero bytes past `W` stay zero.
    let upper = (v + 0x3f3f_3f3f_3f3f_3f3f) & !(v + 0x2525_2525_2525_2525) & 0x8080_8080_8080_8080;
    let lowered = (v | (upper >> 2)).to_le_bytes();
    s[at..at + W].copy_from_slice(&lowered[..W]);
}

/// The `HeaderName` for `name` (a token, as parsers have checked) when it is one of the
/// names most requests carry; `None` for the rest, which take `HeaderName::from_bytes`.
pub(crate) fn known(name: &[u8]) -> Option<HeaderName> {
    let first = name.first()?.to_ascii_lowercase();
    let (candidate, known): (&[u8], HeaderName) = match (name.len(), first) {
        (4, _) => (b"host", header::HOST),
        (6, b'a') => (b"accept", header::ACCEPT),
        (6, b'c') => (b"cookie", header::COOKIE),
        (6, _) => (b"origin", header::ORIGIN),
        (7, _) => (b"referer", header::REFERER),
        (10, b'u') => (b"user-agent", header::USER_AGENT),
        (10, _) => (b"connection", header::CONNECTION),
        (12, _) => (b"content-type", header::CONTENT_TYPE),
        (13, b'a') => (b"authorization", header::AUTHORIZATION),
        (13, _) => (b"cache-control", header::CACHE_CONTROL),
        (14, _) => (b"content-length", header::CONTENT_LENGTH),
        (15, b'a') if name.get(7).is_some_and(|b| b.eq_ignore_ascii_case(&b'e')) => {
            (b"accept-encoding", header::ACCEPT_ENCODING)
        }
        (15, b'a') => (b"accept-language", header::ACCEPT_LANGUAGE),
        _ => return None,
    };
    eq_lowercase(name, candidate).then_some(known)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_and_lowercase_like_the_byte_loops() {
        // Every token character, in names of lengths 2 to 20.
        let tchars: Vec<u8> = (0u8..128)
            .filter(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
            .collect();
        for len in 2..=20 {
            for (k, _) in tchars.iter().enumerate() {
                let name: Vec<u8> = (0..len)
                    .map(|j| tchars[(k + j * 7) % tchars.len()])
                    .collect();
                let mut lowered = name.clone();
                lowercase_token(&mut lowered);
                assert_eq!(lowered, name.to_ascii_lowercase(), "{name:?}");
                let target: Vec<u8> = name
                    .iter()
                    .map(|&b| {
                        if b.is_ascii_alphabetic() {
                            b.to_ascii_lowercase()
                        } else {
                            b'-'
                        }
                    })
                    .collect();
                assert_eq!(
                    eq_lowercase(&name, &target),
                    name.eq_ignore_ascii_case(&target),
                    "{name:?} {target:?}"
                );
            }
        }
        assert!(eq_lowercase(b"Content-Length", b"content-length"));
        assert!(!eq_lowercase(b"Content-Lengtx", b"content-length"));
        assert!(!eq_lowercase(b"Xontent-Length", b"content-length"));
        assert!(!eq_lowercase(b"content-length", b"content-lengt"));
    }

    #[test]
    fn fields_are_told_apart_by_name_in_any_case() {
        for (name, field) in [
            ("Connection", Field::Connection),
            ("KEEP-ALIVE", Field::KeepAlive),
            ("proxy-connection", Field::ProxyConnection),
            ("TE", Field::Te),
            ("Upgrade", Field::Upgrade),
            ("Transfer-Encoding", Field::TransferEncoding),
            ("content-LENGTH", Field::ContentLength),
            ("Trailer", Field::Trailer),
            ("Date", Field::Date),
            ("tf", Field::Other),
            ("dates", Field::Other),
            ("trailed", Field::Other),
            ("upgrades", Field::Other),
            ("connectiom", Field::Other),
            ("keep-alivf", Field::Other),
            ("x-length-of-14", Field::Other),
            ("", Field::Other),
        ] {
            assert_eq!(Field::of(name.as_bytes()), field, "{name}");
        }
    }

    #[test]
    fn known_names_are_the_ones_from_bytes_makes() {
        for name in [
            "Host",
            "ACCEPT",
            "Cookie",
            "origin",
            "Referer",
            "User-Agent",
            "Connection",
            "Content-Type",
            "Authorization",
            "Cache-Control",
            "Content-Length",
            "Accept-Encoding",
            "accept-LANGUAGE",
        ] {
            assert_eq!(
                known(name.as_bytes()),
                Some(HeaderName::from_bytes(name.as_bytes()).unwrap()),
                "{name}"
            );
        }
        for other in [
            "hosts",
            "hast",
            "accepts",
            "x-request-id",
            "accept-encodinh",
            "a",
            "",
        ] {
            assert_eq!(known(other.as_bytes()), None, "{other}");
        }
    }
}
