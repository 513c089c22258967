//! Health-aware pools: passive ejection with a background retry (one log line per change of
//! state), the active check, least-connections, the per-backend cap, and the API that lists
//! backends and closes every tunnel to one (`Proxy::backends`, `Proxy::close_backend`).
//!
//! Backends are scripted ([`Script::tagged`]): each `101` says which backend answered, so a
//! test sees where each tunnel went. A backend is "killed" by closing its listening socket
//! ([`Backend::kill`]) and brought back on the same port ([`Backend::start_at`]).

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wsrelay::{
    BackendState, BackendStatus, Balance, CloseReason, HealthConfig, Proxy, ProxyBuilder,
};

use support::*;

/// Opens a tunnel through `addr` (`/ws`, `Host: proxy.test`): the client and the name of the
/// backend that answered.
async fn open(addr: std::net::SocketAddr) -> (TcpStream, String) {
    let mut client = connect(addr).await;
    assert!(send(&mut client, &ws_request(&[])).await);
    let got = read_head(&mut client, STEP).await;
    assert_eq!(got.status(), Some(101), "{}", got.head());
    let tag = got.header("x-backend").into_iter().next().expect("tagged");
    (client, tag)
}

/// The status `addr` answers a handshake with, read to the close.
async fn refused_with(addr: std::net::SocketAddr) -> Option<u16> {
    let got = raw_exchange(addr, &ws_request(&[]), STEP).await;
    got.status()
}

/// A round trip through a tunnel to an echoing backend.
async fn echoes(client: &mut TcpStream, text: &str) {
    within("write", client.write_all(text.as_bytes()))
        .await
        .expect("write");
    let mut back = vec![0; text.len()];
    within("echo", client.read_exact(&mut back))
        .await
        .expect("echoed");
    assert_eq!(back, text.as_bytes());
}

fn status(proxy: &Proxy, name: &str) -> BackendStatus {
    proxy
        .backends()
        .into_iter()
        .find(|b| b.name == name)
        .unwrap_or_else(|| panic!("no backend {name}"))
}

/// Two tagged backends, `a` and `b`, named by their address.
async fn two_backends() -> (Backend, Backend) {
    let a = Backend::start(Script::tagged("a")).await;
    let b = Backend::start(Script::tagged("b")).await;
    (a, b)
}

fn builder_of(backends: &[&Backend]) -> ProxyBuilder {
    backends.iter().fold(Proxy::builder(), |builder, b| {
        builder.backend(b.addr.to_string())
    })
}

// Passive ejection: after a backend dies, every handshake still succeeds (a failed connect
// goes on to the other backend in the same request), the dead one is skipped rather than
// tried again by each connection, and a background retry brings it back when it listens
// again. (The log lines: `the_example_logs_one_line_per_change_of_state`.)
#[tokio::test]
async fn a_killed_backend_is_skipped_and_no_client_notices() {
    let (a, b) = two_backends().await;
    let name_a = a.addr.to_string();
    let proxy = builder_of(&[&a, &b])
        .health(HealthConfig::new().backoff(Duration::from_millis(20)))
        .build()
        .unwrap();
    let running = Running::serve(proxy.clone()).await;

    let mut tags = Vec::new();
    for _ in 0..4 {
        tags.push(open(running.addr).await.1);
    }
    tags.sort();
    assert_eq!(tags, ["a", "a", "b", "b"], "round-robin while both are up");

    a.kill().await;
    let before = b.accepted();
    for i in 0..20 {
        let (mut client, tag) = open(running.addr).await;
        assert_eq!(tag, "b", "handshake {i} after the kill");
        echoes(&mut client, "still here").await;
    }
    assert_eq!(b.accepted() - before, 20);
    let a_now = status(&proxy, &name_a);
    assert_eq!(a_now.state, BackendState::Down);
    assert!(a_now.error.is_some());
    assert_eq!(status(&proxy, &b.addr.to_string()).state, BackendState::Up);

    // Back on the same port: the background retry finds it without any client's help.
    let a = Backend::start_at(a.addr, Script::tagged("a")).await;
    assert!(
        eventually(STEP, || status(&proxy, &name_a).state == BackendState::Up).await,
        "the retry did not bring it back"
    );
    let mut tags = Vec::new();
    for _ in 0..4 {
        tags.push(open(running.addr).await.1);
    }
    assert!(
        tags.iter().any(|t| t == "a"),
        "it gets traffic again: {tags:?}"
    );
    drop(a);
}

// A 502 only when no backend at all can be reached; a pool whose only backend is down still
// tries it (last resort), so it serves again the moment the backend is back, before any
// background retry.
#[tokio::test]
async fn a_502_only_when_no_backend_can_be_reached() {
    let proxy = Proxy::builder()
        .backend(closed_port().await.to_string())
        .backend(closed_port().await.to_string())
        .build()
        .unwrap();
    let running = Running::serve(proxy.clone()).await;
    assert_eq!(refused_with(running.addr).await, Some(502));
    assert!(proxy
        .backends()
        .iter()
        .all(|b| b.state == BackendState::Down));

    let a = Backend::start(Script::tagged("a")).await;
    let proxy = builder_of(&[&a])
        .health(HealthConfig::new().backoff(Duration::from_secs(600)))
        .build()
        .unwrap();
    let running = Running::serve(proxy.clone()).await;
    a.kill().await;
    assert_eq!(refused_with(running.addr).await, Some(502));
    assert_eq!(proxy.backends()[0].state, BackendState::Down);
    let a = Backend::start_at(a.addr, Script::tagged("a")).await;
    let (_client, tag) = open(running.addr).await;
    assert_eq!(tag, "a");
    assert_eq!(proxy.backends()[0].state, BackendState::Up);
    drop(a);
}

// The active check finds a dead backend, and a recovered one, with no client traffic.
#[tokio::test]
async fn the_active_check_marks_backends_down_and_up_without_traffic() {
    let (a, b) = two_backends().await;
    let name_a = a.addr.to_string();
    let proxy = builder_of(&[&a, &b])
        .health(
            HealthConfig::new()
                .backoff(Duration::from_secs(600))
                .check_interval(Some(Duration::from_millis(20))),
        )
        .build()
        .unwrap();
    assert!(proxy.backends().iter().all(|b| b.state == BackendState::Up));
    a.kill().await;
    assert!(
        eventually(STEP, || status(&proxy, &name_a).state == BackendState::Down).await,
        "the check did not see it die"
    );
    let _a = Backend::start_at(a.addr, Script::tagged("a")).await;
    assert!(
        eventually(STEP, || status(&proxy, &name_a).state == BackendState::Up).await,
        "the check did not see it come back"
    );
    // The other one was probed too, and stayed up.
    assert!(b.accepted() > 0);
    assert_eq!(status(&proxy, &b.addr.to_string()).state, BackendState::Up);
}

// Least-connections with long-lived tunnels: once a backend's tunnels have closed, new
// tunnels go to it until it holds as many as the other (round-robin would alternate).
#[tokio::test]
async fn least_connections_sends_new_tunnels_to_the_emptier_backend() {
    let (a, b) = two_backends().await;
    let proxy = builder_of(&[&a, &b])
        .balance(Balance::LeastConnections)
        .build()
        .unwrap();
    let running = Running::serve(proxy.clone()).await;
    let mut open_a = Vec::new();
    let mut open_b = Vec::new();
    for _ in 0..6 {
        let (client, tag) = open(running.addr).await;
        if tag == "a" {
            open_a.push(client)
        } else {
            open_b.push(client)
        }
    }
    assert_eq!((open_a.len(), open_b.len()), (3, 3), "ties alternate");
    assert_eq!(status(&proxy, &a.addr.to_string()).active, 3);

    // Everyone on a leaves; b keeps its three.
    drop(open_a);
    let name_a = a.addr.to_string();
    assert!(eventually(STEP, || status(&proxy, &name_a).active == 0).await);
    for i in 0..3 {
        let (client, tag) = open(running.addr).await;
        assert_eq!(tag, "a", "tunnel {i} went to the fuller backend");
        open_b.push(client);
    }
    // Even again: ties alternate.
    let mut tags = Vec::new();
    for _ in 0..2 {
        let (client, tag) = open(running.addr).await;
        tags.push(tag);
        open_b.push(client);
    }
    tags.sort();
    assert_eq!(tags, ["a", "b"]);
    for backend in proxy.backends() {
        assert_eq!(backend.active, 4, "{backend:?}");
    }
}

// The per-backend cap (nginx `max_conns`): a full backend is skipped, and when every backend
// is full the client gets a complete 503 and the connection closes.
#[tokio::test]
async fn a_backend_at_its_cap_is_skipped_and_503_when_all_are_full() {
    for balance in [Balance::RoundRobin, Balance::LeastConnections] {
        let (a, b) = two_backends().await;
        let proxy = builder_of(&[&a, &b])
            .balance(balance)
            .backend_max_connections(Some(2))
            .build()
            .unwrap();
        let running = Running::serve(proxy.clone()).await;
        let mut on_a = Vec::new();
        let mut on_b = Vec::new();
        for _ in 0..4 {
            let (client, tag) = open(running.addr).await;
            if tag == "a" {
                on_a.push(client)
            } else {
                on_b.push(client)
            }
        }
        assert_eq!((on_a.len(), on_b.len()), (2, 2), "{balance:?}");
        let got = raw_exchange(running.addr, &ws_request(&[]), STEP).await;
        assert_eq!(got.status(), Some(503), "{balance:?}: {}", got.head());
        assert_eq!(
            got.header("content-length").len(),
            1,
            "a complete response: {}",
            got.head()
        );
        assert_eq!(
            (a.accepted(), b.accepted()),
            (2, 2),
            "no backend was contacted"
        );

        // A place frees on b: the next tunnel goes there, whatever the balance.
        drop(on_b.pop());
        let name_b = b.addr.to_string();
        assert!(eventually(STEP, || status(&proxy, &name_b).active == 1).await);
        let (_client, tag) = open(running.addr).await;
        assert_eq!(tag, "b", "{balance:?}");
    }
}

// `close_backend` ends every tunnel to one backend (their reports say why), through every
// front end, and leaves the others alone.
#[tokio::test]
async fn close_backend_ends_every_tunnel_to_it_and_no_other() {
    for front in ["serve", "axum"] {
        let (a, b) = two_backends().await;
        let reports = Arc::new(Mutex::new(Vec::new()));
        let seen = reports.clone();
        let proxy = builder_of(&[&a, &b])
            .on_report(move |report| {
                seen.lock()
                    .unwrap()
                    .push((report.backend.clone(), report.reason))
            })
            .build()
            .unwrap();
        let _running;
        let addr = if front == "serve" {
            _running = Running::serve(proxy.clone()).await;
            _running.addr
        } else {
            axum_front(proxy.clone()).await
        };
        let mut on_a = Vec::new();
        let mut on_b = Vec::new();
        for _ in 0..4 {
            let (client, tag) = open(addr).await;
            if tag == "a" {
                on_a.push(client)
            } else {
                on_b.push(client)
            }
        }
        assert_eq!((on_a.len(), on_b.len()), (2, 2), "{front}");

        let name_a = a.addr.to_string();
        assert_eq!(proxy.close_backend(&name_a), Some(2), "{front}");
        for client in &mut on_a {
            let got = read_to_close(client, STEP).await;
            assert!(got.closed && got.bytes.is_empty(), "{front}: {got:?}");
        }
        for client in &mut on_b {
            echoes(client, "untouched").await;
        }
        assert!(eventually(STEP, || reports.lock().unwrap().len() == 2).await);
        for (backend, reason) in reports.lock().unwrap().iter() {
            assert_eq!(backend.as_deref(), Some(name_a.as_str()), "{front}");
            assert_eq!(*reason, CloseReason::BackendClosed, "{front}");
        }
        assert_eq!(status(&proxy, &name_a).active, 0);
        // The backend stays in rotation: new tunnels may use it.
        assert_eq!(status(&proxy, &name_a).state, BackendState::Up);
        assert_eq!(proxy.close_backend("127.0.0.1:1"), None);

        // Disabled, it takes no new tunnel until enabled again.
        assert!(proxy.disable_backend(&name_a));
        assert_eq!(status(&proxy, &name_a).state, BackendState::Disabled);
        for _ in 0..3 {
            let (client, tag) = open(addr).await;
            assert_eq!(tag, "b", "{front}");
            on_b.push(client);
        }
        assert!(proxy.enable_backend(&name_a));
        let mut tags = Vec::new();
        for _ in 0..2 {
            let (client, tag) = open(addr).await;
            tags.push(tag);
            on_b.push(client);
        }
        assert!(tags.contains(&"a".to_owned()), "{front}: {tags:?}");
    }
}

// Least-connections counts are global to a proxy shared by several runtimes: the example
// runs one current-thread runtime per thread.
#[cfg(unix)]
#[tokio::test]
async fn the_example_balances_least_connections_across_its_threads() {
    let (a, b) = two_backends().await;
    let (name_a, name_b) = (a.addr.to_string(), b.addr.to_string());
    let (child, addr) = start_example(
        "proxy",
        &[
            "--listen",
            "127.0.0.1:0",
            "--threads",
            "4",
            "--balance",
            "least-connections",
            "--backend",
            &name_a,
            "--backend",
            &name_b,
        ],
    )
    .await;
    let addr = addr.parse().unwrap();
    let mut on_a = Vec::new();
    let mut on_b = Vec::new();
    for _ in 0..8 {
        let (client, tag) = open(addr).await;
        if tag == "a" {
            on_a.push(client)
        } else {
            on_b.push(client)
        }
    }
    assert_eq!((on_a.len(), on_b.len()), (4, 4));
    drop(on_a);
    for i in 0..4 {
        a.closed(i, STEP).await;
    }
    for i in 0..4 {
        let (client, tag) = open(addr).await;
        assert_eq!(tag, "a", "tunnel {i}, accepted by any of the threads");
        on_b.push(client);
    }
    drop(child);
}

// The example's log (stderr, WARN) has one line when a backend goes down and one when it is
// back, however many connections meet it meanwhile; no client notices.
#[cfg(unix)]
#[tokio::test]
async fn the_example_logs_one_line_per_change_of_state() {
    let (a, b) = two_backends().await;
    let (name_a, name_b) = (a.addr.to_string(), b.addr.to_string());
    let (child, addr) = start_example(
        "proxy",
        &[
            "--listen",
            "127.0.0.1:0",
            "--backend",
            &name_a,
            "--backend",
            &name_b,
        ],
    )
    .await;
    let addr = addr.parse().unwrap();
    let mut tags = Vec::new();
    for _ in 0..4 {
        tags.push(open(addr).await.1);
    }
    tags.sort();
    assert_eq!(tags, ["a", "a", "b", "b"]);
    a.kill().await;
    for i in 0..20 {
        let (mut client, tag) = open(addr).await;
        assert_eq!(tag, "b", "handshake {i} after the kill");
        echoes(&mut client, "still here").await;
    }
    // Back on its port: within the first back-off (1 s) and a retry, it gets traffic again.
    let _a = Backend::start_at(a.addr, Script::tagged("a")).await;
    let deadline = std::time::Instant::now() + STEP;
    loop {
        let (_client, tag) = open(addr).await;
        if tag == "a" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "a never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    terminate(&child).await;
    let (code, stderr) = finish(child).await;
    assert_eq!(code, Some(0), "{stderr}");
    let lines = |words: &[&str]| {
        stderr
            .lines()
            .filter(|line| words.iter().all(|w| line.contains(w)))
            .count()
    };
    assert_eq!(lines(&["backend down", &name_a]), 1, "{stderr}");
    assert_eq!(lines(&["backend up", &name_a]), 1, "{stderr}");
    assert_eq!(lines(&[&name_b]), 0, "{stderr}");
    assert_eq!(lines(&["unreachable"]), 0, "{stderr}");
}
