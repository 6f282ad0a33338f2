//! Header handling between downstream and upstream: hop-by-hop removal, `x-forwarded-*`,
//! `x-request-id`, `x-forwarded-client-cert`.
//!
//! Depends on: http, fastrand, `tls::identity`.

use std::net::IpAddr;

use http::header::{CONNECTION, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue};

/// `x-request-id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `x-forwarded-for`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `x-forwarded-proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `x-forwarded-client-cert`.
pub static X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static X_B3_TRACEID: HeaderName = HeaderName::from_static("x-b3-traceid");
static X_B3_SPANID: HeaderName = HeaderName::from_static("x-b3-spanid");
static X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Remove hop-by-hop headers (RFC 9110 §7.6.1), including those `Connection` names.
/// `te: trailers` survives: gRPC needs it end to end.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    // One pass over the names present: most requests carry at most `Connection`, and a
    // hashed lookup per hop-by-hop name cost more than the whole scan.
    let (mut conn, mut others, mut te) = (false, false, false);
    for name in h.keys() {
        if *name == CONNECTION {
            conn = true;
        } else if *name == TE {
            te = true;
        } else if *name == KEEP_ALIVE
            || *name == PROXY_CONNECTION
            || *name == TRANSFER_ENCODING
            || *name == UPGRADE
        {
            others = true;
        }
    }
    if conn {
        // Common case first, without allocating: `Connection` names only standard tokens.
        let standard_only = h.get_all(&CONNECTION).iter().all(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',').all(|t| {
                    let t = t.trim();
                    t.eq_ignore_ascii_case("keep-alive")
                        || t.eq_ignore_ascii_case("close")
                        || t.eq_ignore_ascii_case("upgrade")
                        || t.is_empty()
                })
            })
        });
        if !standard_only {
            let named: Vec<HeaderName> = h
                .get_all(&CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
                .filter(|n| *n != TE)
                .collect();
            for n in named {
                h.remove(n);
            }
        }
        h.remove(&CONNECTION);
    }
    if others {
        h.remove(&KEEP_ALIVE);
        h.remove(&PROXY_CONNECTION);
        h.remove(&TRANSFER_ENCODING);
        h.remove(&UPGRADE);
    }
    if te {
        if let Some(te) = h.get(&TE) {
            let trailers = te.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
            });
            if trailers {
                h.insert(&TE, HeaderValue::from_static("trailers"));
            } else {
                h.remove(&TE);
            }
        }
    }
}

/// The protocol an HTTP/1.1 request asks to switch to (`Connection: upgrade` plus
/// `Upgrade: <proto>`), if any. HTTP/2 requests never upgrade this way.
pub fn upgrade_request(h: &HeaderMap, version: http::Version) -> Option<HeaderValue> {
    if version != http::Version::HTTP_11 {
        return None;
    }
    let asks = h.get_all(&CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
    });
    asks.then(|| h.get(&UPGRADE).cloned()).flatten()
}

/// The client address as an `x-forwarded-for` element, made once per connection: every
/// request on it then adds a shared value instead of formatting and allocating its own.
pub fn forwarded_for(client: IpAddr) -> HeaderValue {
    use std::fmt::Write as _;
    let mut value = String::with_capacity(15);
    match client {
        // `Display` for an address goes through the formatting machinery; dotted quads are
        // simple enough to write directly.
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    value.push('.');
                }
                push_u8(&mut value, octet);
            }
        }
        IpAddr::V6(_) => {
            let _ = write!(value, "{client}");
        }
    }
    HeaderValue::try_from(value).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Append the client's `element` (`forwarded_for`) to `x-forwarded-for` and set
/// `x-forwarded-proto`.
pub fn set_forwarded(h: &mut HeaderMap, element: &HeaderValue, scheme: &'static str) {
    // One hashed lookup for both the read and the write.
    match h.entry(&X_FORWARDED_FOR) {
        http::header::Entry::Occupied(mut e) => {
            let joined = e
                .get()
                .to_str()
                .ok()
                .filter(|p| !p.is_empty())
                .map(|prev| [prev.as_bytes(), b", ", element.as_bytes()].concat());
            match joined.map(HeaderValue::try_from) {
                Some(Ok(v)) => {
                    e.insert(v);
                }
                Some(Err(_)) => {}
                None => {
                    e.insert(element.clone());
                }
            }
        }
        http::header::Entry::Vacant(e) => {
            e.insert(element.clone());
        }
    }
    h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(scheme));
}

/// Append `n` in decimal.
fn push_u8(s: &mut String, n: u8) {
    if n >= 100 {
        s.push(char::from(b'0' + n / 100));
    }
    if n >= 10 {
        s.push(char::from(b'0' + (n / 10) % 10));
    }
    s.push(char::from(b'0' + n % 10));
}

/// What happens to `x-forwarded-client-cert` (Envoy's `forward_client_cert_details`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardClientCert {
    /// Append our element for a mutual TLS client to what arrived; otherwise remove it.
    AppendForward,
    /// Forward what arrived, whatever the connection.
    AlwaysForwardOnly,
    /// Forward what arrived on a mutual TLS connection; otherwise remove it.
    ForwardOnly,
    /// Remove it (default: a client must not be able to claim an identity).
    #[default]
    Sanitize,
    /// Replace it with our element for a mutual TLS client; otherwise remove it (Istio's
    /// gateway setting).
    SanitizeSet,
}

/// Apply `mode` to `h` for a connection whose verified client certificate is `peer`.
pub fn forward_client_cert(
    h: &mut HeaderMap,
    mode: ForwardClientCert,
    peer: Option<&crate::tls::identity::Identity>,
) {
    let element = || peer.and_then(|p| HeaderValue::from_str(&p.xfcc_element(None)).ok());
    match (mode, peer.is_some()) {
        (ForwardClientCert::AlwaysForwardOnly, _) | (ForwardClientCert::ForwardOnly, true) => {}
        (ForwardClientCert::AppendForward, true) => {
            let prev = h
                .get(&X_FORWARDED_CLIENT_CERT)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_owned);
            let Some(ours) = element() else {
                h.remove(&X_FORWARDED_CLIENT_CERT);
                return;
            };
            let value = match prev {
                Some(p) => {
                    HeaderValue::from_str(&format!("{p},{}", ours.to_str().unwrap_or(""))).ok()
                }
                None => Some(ours),
            };
            h.remove(&X_FORWARDED_CLIENT_CERT);
            if let Some(v) = value {
                h.insert(&X_FORWARDED_CLIENT_CERT, v);
            }
        }
        (ForwardClientCert::SanitizeSet, true) => {
            h.remove(&X_FORWARDED_CLIENT_CERT);
            if let Some(v) = element() {
                h.insert(&X_FORWARDED_CLIENT_CERT, v);
            }
        }
        _ => {
            // Rarely there: a scan of the names costs less than the hashed removal.
            if h.keys().any(|k| *k == X_FORWARDED_CLIENT_CERT) {
                h.remove(&X_FORWARDED_CLIENT_CERT);
            }
        }
    }
}

/// A trace context the gateway started for a request that carried none: W3C `traceparent`
/// and B3 (`x-b3-traceid`, `x-b3-spanid`, `x-b3-sampled`) with the same random ids, sampled
/// for `sampling` percent of requests (Istio's default is 1). Its fields are added when the
/// request goes upstream, as Envoy's router injects them (after routing and after the
/// route's header rules, replacing any these set), so the request's own header map never
/// holds them. A request that arrives with `traceparent`, `b3` or `x-b3-traceid` keeps its
/// context untouched, `tracestate` included.
#[derive(Debug, Clone, Copy)]
pub struct TraceContext {
    /// `00-<32 hex trace id>-<16 hex span id>-<flags>`; the B3 ids are slices of it.
    tp: [u8; 55],
}

impl TraceContext {
    /// A new context, unless `h` carries one.
    pub fn start(h: &HeaderMap, sampling: f64) -> Option<Self> {
        // One pass over the names present: cheaper than three hashed lookups on a typical
        // request's handful of fields.
        if h.keys()
            .any(|n| matches!(n.as_str(), "traceparent" | "b3" | "x-b3-traceid"))
        {
            return None;
        }
        let mut tp = *b"00-00000000000000000000000000000000-0000000000000000-00";
        // Non-zero ids (an all-zero id is invalid); a ranged draw of a u128 cost more than
        // the rest of this function, for a bias of one value in 2^128.
        let (trace, span) = (fastrand::u128(..).max(1), fastrand::u64(..).max(1));
        for (i, b) in trace.to_be_bytes().into_iter().enumerate() {
            tp[3 + 2 * i..5 + 2 * i].copy_from_slice(&HEX_PAIRS[usize::from(b)]);
        }
        for (i, b) in span.to_be_bytes().into_iter().enumerate() {
            tp[36 + 2 * i..38 + 2 * i].copy_from_slice(&HEX_PAIRS[usize::from(b)]);
        }
        if crate::route::roll(sampling) {
            tp[54] = b'1';
        }
        Some(Self { tp })
    }

    /// Whether `name` is one of the fields this context sets.
    pub fn sets(name: &HeaderName) -> bool {
        // By the text: four comparisons of `HeaderName`s cost more than one match.
        matches!(
            name.as_str(),
            "traceparent" | "x-b3-traceid" | "x-b3-spanid" | "x-b3-sampled"
        )
    }

    /// The fields, names and values, in the order they are sent.
    pub fn fields(&self) -> [(&'static HeaderName, &[u8]); 4] {
        let sampled: &'static [u8] = if self.tp[54] == b'1' { b"1" } else { b"0" };
        [
            (&TRACEPARENT, &self.tp[..]),
            (&X_B3_TRACEID, &self.tp[3..35]),
            (&X_B3_SPANID, &self.tp[36..52]),
            (&X_B3_SAMPLED, sampled),
        ]
    }

    /// Set the fields in `h`, replacing any already there.
    pub fn insert_into(&self, h: &mut HeaderMap) {
        // One allocation shared by the three id values (each `from_bytes` would copy).
        let tp = bytes::Bytes::copy_from_slice(&self.tp);
        for (name, value) in [
            (&TRACEPARENT, tp.clone()),
            (&X_B3_TRACEID, tp.slice(3..35)),
            (&X_B3_SPANID, tp.slice(36..52)),
        ] {
            if let Ok(v) = HeaderValue::from_maybe_shared(value) {
                h.insert(name, v);
            }
        }
        let sampled = if self.tp[54] == b'1' { "1" } else { "0" };
        h.insert(&X_B3_SAMPLED, HeaderValue::from_static(sampled));
    }
}

/// Each byte as two lowercase hex digits.
static HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX[i >> 4], HEX[i & 15]];
        i += 1;
    }
    t
};

/// The request's `x-request-id`, generating a UUIDv4 one when absent or unusable.
pub fn ensure_request_id(h: &mut HeaderMap) -> HeaderValue {
    // One hashed lookup for both the read and the write.
    let entry = match h.entry(&X_REQUEST_ID) {
        http::header::Entry::Occupied(e) if !e.get().is_empty() => return e.get().clone(),
        e => e,
    };
    // A random (version 4, RFC 9562 variant) UUID in its hyphenated lowercase form, written
    // from the byte-pair table: the `uuid` crate's formatter cost more than the rest of
    // this function.
    let mut id = fastrand::u128(..).to_le_bytes();
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    let mut buf = [0u8; 36];
    let mut at = 0;
    for (i, byte) in id.into_iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            buf[at] = b'-';
            at += 1;
        }
        buf[at..at + 2].copy_from_slice(&HEX_PAIRS[usize::from(byte)]);
        at += 2;
    }
    // Owned by one shared allocation: a value copied from a slice is moved to a second
    // allocation the first time it is cloned (the clone returned for the request record).
    let v = HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(buf))
        .unwrap_or_else(|_| HeaderValue::from_static("-"));
    match entry {
        http::header::Entry::Occupied(mut e) => {
            e.insert(v.clone());
        }
        http::header::Entry::Vacant(e) => {
            e.insert(v.clone());
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_removed() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-private".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("te", "trailers, deflate".parse().unwrap());
        h.insert("x-keep", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-private").is_none() && h.get("connection").is_none());
        assert_eq!(h.get("te").unwrap(), "trailers");
        assert_eq!(h.get("x-keep").unwrap(), "1");
    }

    #[test]
    fn trace_context_started_or_kept() {
        let mut h = HeaderMap::new();
        TraceContext::start(&h, 100.0).unwrap().insert_into(&mut h);
        let tp = h["traceparent"].to_str().unwrap().to_owned();
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(
            (parts[0], parts[1].len(), parts[2].len(), parts[3]),
            ("00", 32, 16, "01")
        );
        for id in [parts[1], parts[2]] {
            assert!(
                id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
                "{id}"
            );
            assert!(id.bytes().any(|b| b != b'0'), "{id}");
        }
        assert_eq!(h["x-b3-traceid"], parts[1]);
        assert_eq!(h["x-b3-spanid"], parts[2]);
        assert_eq!(h["x-b3-sampled"], "1");
        // The fields as written on the wire are the same as inserted.
        let t = TraceContext::start(&HeaderMap::new(), 0.0).unwrap();
        let mut m = HeaderMap::new();
        t.insert_into(&mut m);
        for (name, value) in t.fields() {
            assert!(TraceContext::sets(name));
            assert_eq!(m[name].as_bytes(), value);
        }
        assert!(m["traceparent"].to_str().unwrap().ends_with("-00"));
        assert_eq!(m["x-b3-sampled"], "0");
        let mut b3 = HeaderMap::new();
        b3.insert(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"
                .parse()
                .unwrap(),
        );
        assert!(TraceContext::start(&b3, 100.0).is_none());
        b3.clear();
        b3.insert("traceparent", "00-1-2-01".parse().unwrap());
        assert!(TraceContext::start(&b3, 100.0).is_none());
    }

    #[test]
    fn client_cert_modes() {
        use crate::tls::identity::Identity;
        let peer = Identity {
            hash: "ab".into(),
            subject: "CN=c".into(),
            uris: vec!["spiffe://c".into()],
            ..Identity::default()
        };
        let ours = "Hash=ab;Subject=\"CN=c\";URI=spiffe://c";
        let run = |mode, peer: Option<&Identity>| {
            let mut h = HeaderMap::new();
            h.insert("x-forwarded-client-cert", "Hash=forged".parse().unwrap());
            forward_client_cert(&mut h, mode, peer);
            h.get("x-forwarded-client-cert")
                .map(|v| v.to_str().unwrap().to_owned())
        };
        use ForwardClientCert::*;
        assert_eq!(run(Sanitize, Some(&peer)), None);
        assert_eq!(run(SanitizeSet, None), None);
        assert_eq!(run(SanitizeSet, Some(&peer)).as_deref(), Some(ours));
        assert_eq!(
            run(AppendForward, Some(&peer)),
            Some(format!("Hash=forged,{ours}"))
        );
        assert_eq!(run(AppendForward, None), None);
        assert_eq!(run(ForwardOnly, None), None);
        assert_eq!(
            run(ForwardOnly, Some(&peer)).as_deref(),
            Some("Hash=forged")
        );
        assert_eq!(run(AlwaysForwardOnly, None).as_deref(), Some("Hash=forged"));
    }

    #[test]
    fn forwarded_and_request_id() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "10.0.0.1".parse().unwrap());
        h.append("x-forwarded-for", "10.0.0.2".parse().unwrap());
        let ip = "127.0.0.1".parse().unwrap();
        set_forwarded(&mut h, &forwarded_for(ip), "http");
        // The first field is extended; the map keeps one.
        let all: Vec<_> = h.get_all("x-forwarded-for").iter().collect();
        assert_eq!(all, ["10.0.0.1, 127.0.0.1"]);
        // An empty one is replaced.
        h.insert("x-forwarded-for", HeaderValue::from_static(""));
        set_forwarded(&mut h, &forwarded_for(ip), "http");
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        // An empty request id is replaced too.
        h.insert("x-request-id", HeaderValue::from_static(""));
        let id = ensure_request_id(&mut h);
        assert_eq!(id.len(), 36);
        let text = id.to_str().unwrap();
        let uuid = uuid::Uuid::parse_str(text).unwrap();
        assert_eq!(uuid.get_version_num(), 4, "{text}");
        assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122, "{text}");
        assert_eq!(text.as_bytes()[8], b'-', "{text}");
        // Random: a second request gets another id.
        let mut other = HeaderMap::new();
        assert_ne!(ensure_request_id(&mut other), id);
        assert_eq!(text, text.to_ascii_lowercase());
        assert_eq!(ensure_request_id(&mut h), id);
        assert_eq!(h.get("x-request-id").unwrap(), text);
    }

    #[test]
    fn forwarded_for_writes_every_address_as_display_does() {
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "192.168.1.20",
            "::1",
            "2001:db8::8a2e:370:7334",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:255.255.255.255",
        ] {
            let mut h = HeaderMap::new();
            let addr: IpAddr = ip.parse().unwrap();
            set_forwarded(&mut h, &forwarded_for(addr), "https");
            assert_eq!(h["x-forwarded-for"], addr.to_string().as_str());
            assert_eq!(h["x-forwarded-proto"], "https");
        }
    }

    #[test]
    fn hop_by_hop_only_where_present() {
        let mut h = HeaderMap::new();
        h.insert("upgrade", "h2c".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("x-keep", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        let mut h = HeaderMap::new();
        h.insert("te", "deflate".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty());
    }
}
