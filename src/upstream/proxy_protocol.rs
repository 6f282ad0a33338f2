//! PROXY protocol headers (HAProxy's v1 text and v2 binary) that start a destination's
//! TCP-proxied connections when its DestinationRule sets `trafficPolicy.proxyProtocol`, so
//! the backend learns the client's address (Envoy's `upstream_proxy_protocol` transport
//! socket, which Istio configures from that field).
//!
//! Depends on: ppp (the header encodings).

use std::io;
use std::net::SocketAddr;

use ppp::v2::{Builder, Command, Protocol, Version};

/// The PROXY protocol version a destination's connections start with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    /// Human-readable `PROXY TCP4 ...\r\n` (Istio's default).
    V1,
    /// The binary header.
    V2,
}

impl ProxyVersion {
    /// The header for a connection from `client` that reached the gateway at `local`.
    pub fn header(self, client: SocketAddr, local: SocketAddr) -> io::Result<Vec<u8>> {
        // A client seen on a dual-stack socket has an IPv4-mapped address; the header wants
        // both ends in one family (different families give UNKNOWN, as the spec says).
        let pair = (canonical(client), canonical(local));
        match self {
            ProxyVersion::V1 => Ok(ppp::v1::Addresses::from(pair).to_string().into_bytes()),
            ProxyVersion::V2 => {
                Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, pair)
                    .build()
            }
        }
    }
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_is_the_text_line() {
        let h = ProxyVersion::V1
            .header(
                "192.0.2.7:51000".parse().unwrap(),
                "[::ffff:10.0.0.1]:443".parse().unwrap(),
            )
            .unwrap();
        assert_eq!(h, b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 443\r\n");
        let h = ProxyVersion::V1
            .header(
                "[2001:db8::1]:1".parse().unwrap(),
                "[::1]:2".parse().unwrap(),
            )
            .unwrap();
        assert_eq!(h, b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n");
    }

    #[test]
    fn v2_is_the_binary_header() {
        let h = ProxyVersion::V2
            .header(
                "192.0.2.7:51000".parse().unwrap(),
                "10.0.0.1:443".parse().unwrap(),
            )
            .unwrap();
        let mut want = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        // v2 PROXY, TCP over IPv4, 12 address bytes.
        want.extend([0x21, 0x11, 0, 12]);
        want.extend([192, 0, 2, 7, 10, 0, 0, 1]);
        want.extend(51000u16.to_be_bytes());
        want.extend(443u16.to_be_bytes());
        assert_eq!(h, want);
    }
}
