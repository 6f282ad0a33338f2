//! ClientHello parsing: bytes in, one of three answers out. Pure, so it can be fuzzed and
//! tested on every prefix of a real ClientHello.
//!
//! A ClientHello may span several TLS records (and any number of TCP segments); records are
//! reassembled until the whole handshake message is present, within `MAX_HELLO` bytes.
//!
//! Depends on: tls-parser.

use tls_parser::{
    parse_tls_client_hello_extensions, parse_tls_message_handshake, SNIType, TlsExtension,
    TlsMessage, TlsMessageHandshake,
};

/// Largest ClientHello (all records, headers included) we buffer.
pub const MAX_HELLO: usize = 16 * 1024;

const HANDSHAKE: u8 = 0x16;
const CLIENT_HELLO: u8 = 0x01;

/// What the ClientHello says, as far as routing cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hello {
    /// The server name (`server_name` extension, host_name type), lowercased.
    pub sni: Option<String>,
    /// ALPN protocols offered, in order.
    pub alpn: Vec<Vec<u8>>,
}

/// The outcome of parsing a buffer prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientHello {
    /// Not enough bytes yet.
    NeedMore,
    /// The bytes are not a TLS handshake.
    NotTls,
    /// TLS, but malformed or larger than `MAX_HELLO`.
    Invalid,
    /// A complete ClientHello.
    Hello(Hello),
}

/// Parse the start of a connection.
pub fn parse(buf: &[u8]) -> ClientHello {
    match buf {
        [] => return ClientHello::NeedMore,
        [first, ..] if *first != HANDSHAKE => return ClientHello::NotTls,
        [_, major, ..] if *major != 3 => return ClientHello::NotTls,
        _ => {}
    }
    let mut handshake: Vec<u8> = Vec::new();
    let mut at = 0;
    loop {
        let Some(header) = buf.get(at..at + 5) else {
            return need_more(buf);
        };
        if header[0] != HANDSHAKE {
            return ClientHello::Invalid;
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > MAX_HELLO {
            return ClientHello::Invalid;
        }
        let Some(payload) = buf.get(at + 5..at + 5 + len) else {
            return need_more(buf);
        };
        at += 5 + len;
        // One record holding the whole message is the common case: parse in place.
        let msg: &[u8] =
            if handshake.is_empty() && message_len(payload).is_some_and(|m| m <= payload.len()) {
                payload
            } else {
                handshake.extend_from_slice(payload);
                &handshake
            };
        if msg.len() >= 4 {
            if msg[0] != CLIENT_HELLO {
                return ClientHello::Invalid;
            }
            let Some(total) = message_len(msg) else {
                return ClientHello::Invalid;
            };
            if total > MAX_HELLO {
                return ClientHello::Invalid;
            }
            if msg.len() >= total {
                return hello(&msg[..total]);
            }
        }
    }
}

fn need_more(buf: &[u8]) -> ClientHello {
    if buf.len() >= MAX_HELLO {
        ClientHello::Invalid
    } else {
        ClientHello::NeedMore
    }
}

/// Length of the handshake message at the start of `msg`, header included.
fn message_len(msg: &[u8]) -> Option<usize> {
    let h = msg.get(..4)?;
    Some(4 + (usize::from(h[1]) << 16 | usize::from(h[2]) << 8 | usize::from(h[3])))
}

fn hello(msg: &[u8]) -> ClientHello {
    let Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ClientHello(ch)))) =
        parse_tls_message_handshake(msg)
    else {
        return ClientHello::Invalid;
    };
    let mut out = Hello::default();
    let Some(ext) = ch.ext else {
        return ClientHello::Hello(out);
    };
    let Ok((_, exts)) = parse_tls_client_hello_extensions(ext) else {
        return ClientHello::Invalid;
    };
    for e in exts {
        match e {
            TlsExtension::SNI(names) => {
                out.sni = names
                    .iter()
                    .find(|(t, _)| *t == SNIType::HostName)
                    .and_then(|(_, n)| std::str::from_utf8(n).ok())
                    .filter(|n| !n.is_empty())
                    .map(str::to_ascii_lowercase);
            }
            TlsExtension::ALPN(protos) => out.alpn = protos.iter().map(|p| p.to_vec()).collect(),
            _ => {}
        }
    }
    ClientHello::Hello(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// The first flight of a real rustls client for `sni`, offering `alpn`.
    fn client_hello(sni: &str, alpn: &[&[u8]]) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn parses_sni_and_alpn() {
        let bytes = client_hello("API.Example.com", &[b"h2", b"http/1.1"]);
        let ClientHello::Hello(h) = parse(&bytes) else {
            panic!("no hello")
        };
        assert_eq!(h.sni.as_deref(), Some("api.example.com"));
        assert_eq!(h.alpn, [b"h2".to_vec(), b"http/1.1".to_vec()]);
    }

    #[test]
    fn every_prefix_needs_more() {
        let bytes = client_hello("a.example.com", &[b"h2"]);
        for n in 0..bytes.len() {
            assert_eq!(parse(&bytes[..n]), ClientHello::NeedMore, "prefix {n}");
        }
        assert!(matches!(parse(&bytes), ClientHello::Hello(_)));
    }

    #[test]
    fn hello_split_across_records() {
        let bytes = client_hello("split.example.com", &[]);
        let body = &bytes[5..];
        let (a, b) = body.split_at(body.len() / 3);
        let mut split = Vec::new();
        for part in [a, b] {
            split.extend_from_slice(&[0x16, 3, 1]);
            split.extend_from_slice(&(part.len() as u16).to_be_bytes());
            split.extend_from_slice(part);
        }
        let ClientHello::Hello(h) = parse(&split) else {
            panic!("no hello")
        };
        assert_eq!(h.sni.as_deref(), Some("split.example.com"));
        for n in 0..split.len() {
            assert_eq!(parse(&split[..n]), ClientHello::NeedMore, "prefix {n}");
        }
    }

    #[test]
    fn not_tls_and_invalid() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), ClientHello::NotTls);
        assert_eq!(parse(&[0x16, 9]), ClientHello::NotTls);
        assert_eq!(parse(&[0x16, 3, 1, 0, 0]), ClientHello::Invalid);
        assert_eq!(
            parse(&[0x16, 3, 1, 0, 4, 2, 0, 0, 0]),
            ClientHello::Invalid,
            "server hello"
        );
        assert_eq!(
            parse(&[0x16, 3, 1, 0xff, 0xff]),
            ClientHello::Invalid,
            "record too large"
        );
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(7);
        let real = client_hello("fuzz.example.com", &[b"h2"]);
        for _ in 0..20_000 {
            let mut b = real.clone();
            for _ in 0..rng.usize(1..8) {
                let i = rng.usize(..b.len());
                b[i] = rng.u8(..);
            }
            b.truncate(rng.usize(..=b.len()));
            let _ = parse(&b);
            let noise: Vec<u8> = (0..rng.usize(..64)).map(|_| rng.u8(..)).collect();
            let _ = parse(&noise);
        }
    }
}
