//! A standalone WebSocket reverse proxy built on `wsrelay::Proxy` over a bare `TcpListener`.
//!
//! Run it in front of a backend (repeat `--backend` for a round-robin pool with failover):
//!
//! ```text
//! cargo run --release --example echo -- --listen 127.0.0.1:9000
//! cargo run --release --example proxy -- --listen 127.0.0.1:8080 --backend 127.0.0.1:9000
//! ```
//!
//! or alone, with the bundled echo backend started in-process:
//!
//! ```text
//! cargo run --release --example proxy -- --listen 127.0.0.1:8080
//! ```
//!
//! Try it with any WebSocket client, e.g. `websocat ws://127.0.0.1:8080/`, or
//! `curl -i -N -H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13'
//! -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' http://127.0.0.1:8080/` to see the `101`.
//!
//! Options: `--idle-timeout SECS` (close tunnels silent that long), `--strip-prefix PATH`
//! (nginx `location /ws/` + `proxy_pass http://backend/`), `--allow-origin ORIGIN`
//! (repeatable; other browser origins get 403), `--verbose` (log refused handshakes and
//! closed tunnels). It prints `listening on ADDR` when ready, and on SIGINT or SIGTERM stops
//! accepting, lets tunnels finish for a few seconds, then closes them and exits.

#[path = "support/echo.rs"]
mod echo;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use wsrelay::handshake::RewriteConfig;
use wsrelay::{Proxy, SpliceConfig};

const USAGE: &str = "usage: proxy [--listen ADDR] [--backend ADDR]... [--idle-timeout SECS] \
                     [--strip-prefix PATH] [--allow-origin ORIGIN]... [--verbose]";

struct Options {
    listen: SocketAddr,
    backends: Vec<String>,
    idle_timeout: Option<Duration>,
    strip_prefix: Option<String>,
    origins: Vec<String>,
    verbose: bool,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        listen: ([127, 0, 0, 1], 8080).into(),
        backends: Vec::new(),
        idle_timeout: None,
        strip_prefix: None,
        origins: Vec::new(),
        verbose: false,
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => {
                let v = value()?;
                options.listen = v.parse().map_err(|e| format!("bad --listen {v:?}: {e}"))?;
            }
            "--backend" => options.backends.push(value()?),
            "--idle-timeout" => {
                let v = value()?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0)
                    .ok_or(format!("bad --idle-timeout {v:?}: want seconds > 0"))?;
                options.idle_timeout = Some(Duration::from_secs_f64(secs));
            }
            "--strip-prefix" => options.strip_prefix = Some(value()?),
            "--allow-origin" => options.origins.push(value()?),
            "--verbose" => options.verbose = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let level = if options.verbose {
        tracing_subscriber::filter::LevelFilter::DEBUG
    } else {
        tracing_subscriber::filter::LevelFilter::WARN
    };
    tracing_subscriber::fmt().with_max_level(level).init();

    let mut backends = options.backends;
    if backends.is_empty() {
        let echo = echo::spawn().await;
        eprintln!("no --backend given: echo backend started on {echo}");
        backends.push(echo.to_string());
    }
    let mut rewrite = RewriteConfig::new();
    if let Some(prefix) = &options.strip_prefix {
        rewrite = rewrite.strip_prefix(prefix);
    }
    for origin in &options.origins {
        rewrite = rewrite.allow_origin(origin);
    }
    let mut splice = SpliceConfig::new();
    if let Some(idle) = options.idle_timeout {
        splice = splice.idle_timeout(Some(idle));
    }
    let mut builder = Proxy::builder()
        .rewrite(rewrite)
        .splice(splice)
        .grace_period(Duration::from_secs(5));
    for backend in backends {
        builder = builder.backend(backend);
    }
    let proxy = builder.build().expect("at least one backend");

    let listener = match tokio::net::TcpListener::bind(options.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("cannot listen on {}: {error}", options.listen);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().unwrap_or(options.listen);
    println!("listening on {addr}");
    let summary = proxy.serve(listener, stop_signal()).await;
    eprintln!(
        "stopped: {} connections accepted, {} drained, {} cut",
        summary.accepted, summary.drained, summary.cut
    );
    ExitCode::SUCCESS
}

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
