//! Deferred accept (`TCP_DEFER_ACCEPT`) on ports whose clients speak first: the kernel
//! hands a connection over when its first bytes have arrived, not when the handshake ends.
//!
//! Why: without it, a new connection costs a wake-up for the accept, a read that finds
//! nothing (tokio reads an accepted socket at once), a return to epoll and a second wake-up
//! for the request. With it, the accept comes with the request already readable. With a new
//! connection per request, proxy CPU per request went from 46.1 to 32.6 µs in the load
//! benchmark (nginx 38.3, which offers the same as `listen ... deferred`, off by default).
//! A client that connects and stays silent is not accepted, so costs no descriptor and no
//! memory here; after `SECONDS` the kernel hands it over anyway and the header timeout runs.
//!
//! Only HTTP and TLS ports (a request or a ClientHello comes first). Opaque TCP ports may
//! carry protocols where the server speaks first (MySQL, SMTP): those are never deferred.
//!
//! This file holds the library's only unsafe code: one `setsockopt` call. std's
//! `set_deferaccept` is unstable (rust-lang/rust#119639), and socket2, rustix and nix do
//! not offer the option.
//!
//! Depends on: libc (Linux only; elsewhere this is a no-op).
#![allow(unsafe_code)]

use std::io;

use tokio::net::TcpListener;

use crate::config::PortProtocol;

/// Seconds a silent connection waits in the kernel before it is handed over anyway; as
/// nginx (`deferred`) and haproxy (`defer-accept`) set it. The kernel counts this in SYN-ACK
/// retransmissions, so the handover comes after one to three seconds.
#[cfg(target_os = "linux")]
const SECONDS: libc::c_int = 1;

/// Whether connections to a port of `protocol` should be deferred until data arrives.
pub fn wanted(protocol: PortProtocol) -> bool {
    matches!(protocol, PortProtocol::Http | PortProtocol::Tls)
}

/// Defer accepts on `listener` when `on`, or stop deferring (a port whose protocol changed
/// on reload); the listener keeps its queue either way.
#[cfg(target_os = "linux")]
pub fn set(listener: &TcpListener, on: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let value: libc::c_int = if on { SECONDS } else { 0 };
    let len = libc::socklen_t::try_from(size_of::<libc::c_int>()).unwrap_or(4);
    // SAFETY: the descriptor belongs to `listener`, which is borrowed (so open) for the whole
    // call; `value` lives on the stack across it and `len` is exactly its size, which is
    // what setsockopt(2) reads for TCP_DEFER_ACCEPT. Nothing is written back.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&raw const value).cast::<libc::c_void>(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Not Linux: accepts are never deferred.
#[cfg(not(target_os = "linux"))]
pub fn set(_listener: &TcpListener, _on: bool) -> io::Result<()> {
    Ok(())
}

// Test code: the unwraps below are on sockets this module's tests open on 127.0.0.1 and on
// `set` with those sockets, never on user or peer input.
#[cfg(test)]
#[cfg(target_os = "linux")]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;

    #[test]
    fn only_client_first_protocols_are_deferred() {
        assert!(wanted(PortProtocol::Http));
        assert!(wanted(PortProtocol::Tls));
        assert!(!wanted(PortProtocol::Tcp));
    }

    /// Whether `listener` hands over a connection within `wait`.
    async fn accepts_within(listener: &TcpListener, wait: Duration) -> bool {
        tokio::time::timeout(wait, listener.accept()).await.is_ok()
    }

    #[tokio::test]
    async fn a_silent_connection_is_handed_over_only_once_it_sends() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        set(&listener, true).unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        assert!(!accepts_within(&listener, Duration::from_millis(300)).await);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert!(accepts_within(&listener, Duration::from_secs(5)).await);
    }

    #[tokio::test]
    async fn turned_off_again_a_silent_connection_is_accepted_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        set(&listener, true).unwrap();
        set(&listener, false).unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        assert!(accepts_within(&listener, Duration::from_secs(5)).await);
    }
}
