//! Routing (nginx `server_name` + `location`): a request's route is chosen by its Host and
//! the longest path prefix, in the one flow every front end shares; each route has its own
//! pool and rewrite; an unmatched request gets a complete 404 and reaches no backend. The
//! proxy example's `--route` and `--balance` flags, and their bad values.
//!
//! Backends are scripted ([`Script::tagged`]): each `101` says which backend answered.

mod support;

use std::net::SocketAddr;

use wsrelay::handshake::RewriteConfig;
use wsrelay::{Proxy, Route};

use support::*;

/// The tag of the backend that answered an upgrade for `host` and `path` through `addr`, or
/// the status when it was not a `101` (then read to the close, which must come).
async fn reach(addr: SocketAddr, host: &str, path: &str) -> Result<String, u16> {
    let request = upgrade_request(host, path, &[&key_line(), "Sec-WebSocket-Version: 13"]);
    let mut client = connect(addr).await;
    assert!(send(&mut client, &request).await);
    let got = read_head(&mut client, STEP).await;
    match got.status() {
        Some(101) => Ok(got.header("x-backend").into_iter().next().expect("tagged")),
        Some(status) => {
            let rest = read_to_close(&mut client, STEP).await;
            assert!(
                rest.closed,
                "{host}{path}: the connection closes after {status}"
            );
            let content_length = got.header("content-length");
            let body_len = got.body().len() + rest.bytes.len();
            assert_eq!(
                content_length,
                [body_len.to_string()],
                "{host}{path}: a complete response: {}",
                got.head()
            );
            Err(status)
        }
        None => panic!("{host}{path}: no response: {got:?}"),
    }
}

/// The front ends a route must work through: `Proxy::serve` and an axum handler (whose app
/// routes `/ws` only).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Front {
    Serve,
    Axum,
}

async fn front(front: Front, proxy: Proxy) -> (SocketAddr, Option<Running>) {
    match front {
        Front::Serve => {
            let running = Running::serve(proxy).await;
            (running.addr, Some(running))
        }
        Front::Axum => (axum_front(proxy).await, None),
    }
}

// The host chooses first: its exact name, else the longest wildcard it matches, else the
// routes for any host (here the builder's own backend). Case, a port and a trailing dot in
// Host do not matter.
#[tokio::test]
async fn routes_by_host() {
    for kind in [Front::Serve, Front::Axum] {
        let a = Backend::start(Script::tagged("a")).await;
        let b = Backend::start(Script::tagged("b")).await;
        let c = Backend::start(Script::tagged("c")).await;
        let d = Backend::start(Script::tagged("d")).await;
        let proxy = Proxy::builder()
            .backend(c.addr.to_string())
            .route(
                Route::new()
                    .host("chat.example")
                    .backend(a.addr.to_string()),
            )
            .route(Route::new().host("*.example").backend(b.addr.to_string()))
            .route(
                Route::new()
                    .host("*.eu.example")
                    .backend(d.addr.to_string()),
            )
            .build()
            .unwrap();
        let (addr, _running) = front(kind, proxy).await;
        for (host, expected) in [
            ("chat.example", "a"),
            ("CHAT.Example:8443", "a"),
            ("chat.example.", "a"),
            ("x.example", "b"),
            ("x.y.example:80", "b"),
            ("x.eu.example", "d"),
            ("example", "c"),
            ("other.test", "c"),
            ("127.0.0.1:8080", "c"),
        ] {
            assert_eq!(
                reach(addr, host, "/ws").await.as_deref(),
                Ok(expected),
                "{kind:?}: {host}"
            );
        }
    }
}

// Within a host, the longest prefix that starts the path wins; `/ws` takes the `/ws/` route.
#[tokio::test]
async fn routes_by_the_longest_prefix() {
    let a = Backend::start(Script::tagged("a")).await;
    let b = Backend::start(Script::tagged("b")).await;
    let c = Backend::start(Script::tagged("c")).await;
    let running = Running::start(
        Proxy::builder()
            .backend(c.addr.to_string())
            .route(format!("*/ws/={}", a.addr).parse().unwrap())
            .route(format!("*/ws/admin/={}", b.addr).parse().unwrap()),
    )
    .await;
    for (path, expected) in [
        ("/ws/admin/panel", "b"),
        ("/ws/admin/", "b"),
        ("/ws/admin", "b"),
        ("/ws/room?id=1", "a"),
        ("/ws", "a"),
        ("/wsx", "c"),
        ("/", "c"),
        ("/WS/room", "c"),
    ] {
        assert_eq!(
            reach(running.addr, "proxy.test", path).await.as_deref(),
            Ok(expected),
            "{path}"
        );
    }
}

// Without a route for any host, a request no route takes gets a complete 404, the
// connection closes, and no backend is contacted; a host that has routes does not fall back
// to another host's.
#[tokio::test]
async fn an_unmatched_request_gets_404_and_reaches_no_backend() {
    for kind in [Front::Serve, Front::Axum] {
        let a = Backend::start(Script::tagged("a")).await;
        let b = Backend::start(Script::tagged("b")).await;
        let proxy = Proxy::builder()
            .route(format!("chat.example/ws={}", a.addr).parse().unwrap())
            .route(format!("*.example/live/={}", b.addr).parse().unwrap())
            .build()
            .unwrap();
        let (addr, _running) = front(kind, proxy).await;
        assert_eq!(reach(addr, "other.test", "/ws").await, Err(404), "{kind:?}");
        assert_eq!(reach(addr, "x.example", "/ws").await, Err(404), "{kind:?}");
        assert_eq!(a.accepted() + b.accepted(), 0, "{kind:?}");
        assert_eq!(reach(addr, "chat.example", "/ws").await.as_deref(), Ok("a"));
    }
}

// Each route validates and rewrites with its own config; a route without one uses the
// builder's. A backend named by two routes is one backend.
#[tokio::test]
async fn each_route_has_its_own_rewrite_and_a_shared_backend_is_one() {
    let a = Backend::start(Script::tagged("a")).await;
    let b = Backend::start(Script::tagged("b")).await;
    let running = Running::start(
        Proxy::builder()
            .rewrite(RewriteConfig::new().allow_origin("https://app.example"))
            .backend(b.addr.to_string())
            .route(
                Route::new()
                    .prefix("/chat/")
                    .backend(a.addr.to_string())
                    .rewrite(RewriteConfig::new().strip_prefix("/chat/")),
            )
            .route(
                Route::new()
                    .host("other.example")
                    .backend(a.addr.to_string()),
            ),
    )
    .await;
    assert_eq!(
        reach(running.addr, "proxy.test", "/chat/room?x=1")
            .await
            .as_deref(),
        Ok("a")
    );
    assert_eq!(a.conn(0).request_line(), "GET /room?x=1 HTTP/1.1");
    // The builder's Origin allow-list holds on the default route, not on `/chat/`, which
    // has a config of its own.
    let foreign = upgrade_request(
        "proxy.test",
        "/other",
        &[
            &key_line(),
            "Sec-WebSocket-Version: 13",
            "Origin: https://evil.test",
        ],
    );
    let got = raw_exchange(running.addr, &foreign, STEP).await;
    assert_eq!(got.status(), Some(403), "{}", got.head());
    let mut client = connect(running.addr).await;
    let foreign_on_chat = upgrade_request(
        "proxy.test",
        "/chat/x",
        &[
            &key_line(),
            "Sec-WebSocket-Version: 13",
            "Origin: https://evil.test",
        ],
    );
    assert!(send(&mut client, &foreign_on_chat).await);
    let got = read_head(&mut client, STEP).await;
    assert_eq!(got.status(), Some(101), "{}", got.head());
    assert_eq!(b.accepted(), 0);

    assert_eq!(
        reach(running.addr, "other.example", "/").await.as_deref(),
        Ok("a")
    );
    let backends = running.proxy.backends();
    assert_eq!(backends.len(), 2, "{backends:?}");
}

// The example: repeated `--route`, with no `--backend` (so no pool for any host and no
// in-process echo backend).
#[cfg(unix)]
#[tokio::test]
async fn the_example_routes_by_host_and_prefix() {
    let a = Backend::start(Script::tagged("a")).await;
    let b = Backend::start(Script::tagged("b")).await;
    let c = Backend::start(Script::tagged("c")).await;
    let (child, addr) = start_example(
        "proxy",
        &[
            "--listen",
            "127.0.0.1:0",
            "--route",
            &format!("chat.example/={},{}", a.addr, c.addr),
            "--route",
            &format!("*/ws/={}", b.addr),
        ],
    )
    .await;
    let addr: SocketAddr = addr.parse().unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(reach(addr, "chat.example:8080", "/ws/x").await.unwrap());
    }
    seen.sort();
    assert_eq!(seen, ["a", "c"], "the route's pool, round-robin");
    assert_eq!(reach(addr, "other.test", "/ws/x").await.as_deref(), Ok("b"));
    assert_eq!(reach(addr, "other.test", "/x").await, Err(404));
    terminate(&child).await;
    let (code, stderr) = finish(child).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("echo backend started"), "{stderr}");
}

// Bad values are refused at startup: exit 2, the reason and the usage on stderr, never a
// panic, nothing on stdout.
#[cfg(unix)]
#[tokio::test]
async fn bad_route_and_balance_values_are_refused_at_startup() {
    for (args, reason) in [
        (&["--route", "chat.example"][..], "no `=`"),
        (&["--route", "chat.example=127.0.0.1:9"], "no path prefix"),
        (&["--route", "chat.example:80/=127.0.0.1:9"], "invalid host"),
        (&["--route", "chat.example/ws/="], "empty backend"),
        (&["--route", "chat.example/ws/=nowhere"], "no port"),
        (
            &["--route", "*/=127.0.0.1:9", "--route", "*/=127.0.0.1:10"],
            "same host and prefix",
        ),
        (
            &["--backend", "127.0.0.1:9", "--route", "*/=127.0.0.1:10"],
            "same host and prefix",
        ),
        (&["--route"], "needs a value"),
        (&["--balance", "fastest"], "bad --balance"),
        (&["--balance"], "needs a value"),
    ] {
        let output = run_example_to_exit("proxy", args).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
        assert!(stderr.contains("usage: proxy"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?}");
    }
}

// HTTP/2 (RFC 8441): the extended CONNECT's `:authority` is the host that chooses the route,
// and a request no route takes gets 404 on its stream.
#[tokio::test]
async fn http2_extended_connect_routes_by_authority() {
    let a = Backend::start(Script::tagged("a")).await;
    let b = Backend::start(Script::tagged("b")).await;
    let proxy = Proxy::builder()
        .route(format!("chat.example/={}", a.addr).parse().unwrap())
        .route(format!("*.example/={}", b.addr).parse().unwrap())
        .build()
        .unwrap();
    let addr = axum_front(proxy).await;
    let mut send = h2_connect(addr).await;
    for (authority, expected) in [
        ("chat.example", Ok("a")),
        ("chat.example:443", Ok("a")),
        ("x.example", Ok("b")),
        ("other.test", Err(404)),
    ] {
        let request = http::Request::connect(format!("http://{authority}/ws"))
            .extension(h2::ext::Protocol::from("websocket"))
            .header("sec-websocket-version", "13")
            .body(())
            .unwrap();
        let stream = h2_open(&mut send, request).await;
        let got = match stream.status() {
            200 => Ok(stream.response.headers()["x-backend"].to_str().unwrap()),
            status => Err(status),
        };
        assert_eq!(got, expected, "{authority}");
    }
}
