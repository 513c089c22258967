//! What every example does the same way: log to stderr (in colour only on a terminal), and
//! stop on Ctrl-C or SIGTERM.
//!
//! Include it with `#[path = "support/signal.rs"] mod signal;`.
#![allow(dead_code)]

use std::io::IsTerminal;

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

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
