//! What every example server does the same way: log to stderr (in colour only on a
//! terminal), listen with a deep accept queue, and stop on Ctrl-C or SIGTERM.
//!
//! Include it with `#[path = "support/server.rs"] mod server;`.
#![allow(dead_code)]

use std::io::{self, IsTerminal};
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// The accept queue of a listening socket, as nginx's default `backlog` (tokio's
/// `TcpListener::bind` uses 128, which a burst of connects overflows).
pub const BACKLOG: u32 = 1024;

/// A listener on `addr` with [`BACKLOG`].
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Logs `tracing` events to stderr (stdout carries the `listening on` line), at WARN, or
/// DEBUG when `verbose`.
pub fn init_logging(verbose: bool) {
    let level = if verbose {
        tracing_subscriber::filter::LevelFilter::DEBUG
    } else {
        tracing_subscriber::filter::LevelFilter::WARN
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM. The signals are caught from this call
/// on (not from the first poll): call it before saying the server is ready, so that a stop
/// signal sent right after the announcement drains instead of killing the process.
pub fn stop_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
