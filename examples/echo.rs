//! An RFC 6455 WebSocket echo server: every frame comes back as the same frame.
//!
//! It is the backend the other examples start in-process, and a handy target for the proxy.
//!
//! Run it:
//!
//! ```text
//! cargo run --release --example echo -- --listen 127.0.0.1:9000
//! ```
//!
//! Try it with any WebSocket client, directly or through the proxy example:
//!
//! ```text
//! websocat ws://127.0.0.1:9000/
//! cargo run --release --example proxy -- --listen 127.0.0.1:8080 --backend 127.0.0.1:9000
//! websocat ws://127.0.0.1:8080/
//! ```

#[path = "support/echo.rs"]
mod echo;

use std::net::SocketAddr;
use std::process::ExitCode;

const USAGE: &str = "usage: echo [--listen ADDR]   (default 127.0.0.1:9000)";

#[tokio::main]
async fn main() -> ExitCode {
    let listen = match parse_args(std::env::args().skip(1)) {
        Ok(listen) => listen,
        Err(message) => {
            eprintln!("{message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("cannot listen on {listen}: {error}");
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("listening on {addr}"),
        Err(_) => println!("listening on {listen}"),
    }
    echo::serve(listener).await;
    ExitCode::SUCCESS
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<SocketAddr, String> {
    let mut listen: SocketAddr = ([127, 0, 0, 1], 9000).into();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let value = args.next().ok_or("--listen needs an address")?;
                listen = value
                    .parse()
                    .map_err(|error| format!("bad --listen address {value:?}: {error}"))?;
            }
            "-h" | "--help" => return Err("an RFC 6455 echo server".into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(listen)
}
