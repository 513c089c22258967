//! No leaks after mass abandonment (rules 7 and 25, see `wsrelay::rules`): 2,000 connections
//! opened and abandoned mid-handshake leave no connection counted and no file descriptor open.
//!
//! The measure is the whole process's descriptor count (`/proc/self/fd`), so this file holds
//! this one test alone: no other test shares the process and opens sockets meanwhile.

mod support;

use std::time::Duration;

use tokio::net::TcpStream;

use support::{
    builder_for, connect, eventually, open_fds, send, ws_request, Backend, Running, Script,
    FD_TOLERANCE, STEP,
};

/// Connections abandoned after half a head.
const ABANDONED: usize = 2_000;
/// How many are held open at once before being dropped together.
const WAVE: usize = 250;
/// Connections abandoned after a whole head, while the backend thinks.
const ABANDONED_WAITING: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_25_two_thousand_abandoned_handshakes_leak_nothing() {
    let backend = Backend::start(Script::silent()).await;
    let proxy = Running::start(builder_for(&backend)).await;
    let half = ws_request(&[]);
    let half = &half[..half.len() / 2];

    // Warm up every path once, then take the baseline.
    abandon_wave(&proxy, 20, half).await;
    abandon_waiting(&proxy, &backend, 5).await;
    let baseline = open_fds();

    let mut waves = 0;
    while waves * WAVE < ABANDONED {
        abandon_wave(&proxy, WAVE, half).await;
        waves += 1;
    }
    abandon_waiting(&proxy, &backend, ABANDONED_WAITING).await;

    assert!(
        eventually(STEP, || proxy.proxy.active_tunnels() == 0).await,
        "{} connections still counted after every client left",
        proxy.proxy.active_tunnels()
    );
    let settled = eventually(STEP, || open_fds() <= baseline + FD_TOLERANCE).await;
    let now = open_fds();
    println!(
        "file descriptors: {baseline} before, {now} after {} abandoned connections",
        waves * WAVE + ABANDONED_WAITING
    );
    assert!(
        settled,
        "{now} descriptors open after the abandoned handshakes, {baseline} before"
    );
    assert_eq!(
        backend.accepted(),
        5 + ABANDONED_WAITING,
        "half heads never reach the backend; whole ones do, once each"
    );
}

/// Opens `count` connections, writes `half` a head on each, waits until the proxy is
/// handling all of them, and drops them all.
async fn abandon_wave(proxy: &Running, count: usize, half: &[u8]) {
    let mut clients: Vec<TcpStream> = Vec::with_capacity(count);
    for _ in 0..count {
        let mut client = connect(proxy.addr).await;
        assert!(send(&mut client, half).await, "half a head written");
        clients.push(client);
    }
    let all_in = eventually(STEP, || proxy.proxy.active_tunnels() >= count).await;
    assert!(
        all_in,
        "the proxy took up only {} of {count} half handshakes",
        proxy.proxy.active_tunnels()
    );
    drop(clients);
}

/// Opens `count` connections that send a whole head (which the silent backend receives and
/// never answers), then drops them all: the proxy notices each client leaving while the
/// backend thinks, and closes the backend connection too.
async fn abandon_waiting(proxy: &Running, backend: &Backend, count: usize) {
    let before = backend.accepted();
    let mut clients: Vec<TcpStream> = Vec::with_capacity(count);
    for _ in 0..count {
        let mut client = connect(proxy.addr).await;
        assert!(send(&mut client, &ws_request(&[])).await, "a head written");
        clients.push(client);
    }
    let all_asked = eventually(STEP, || {
        let conns = backend.conns();
        conns.len() >= before + count && conns[before..].iter().all(|c| c.head_len.is_some())
    })
    .await;
    assert!(all_asked, "every head reached the silent backend");
    drop(clients);
    let all_closed = eventually(STEP, || backend.conns().iter().all(|c| c.closed)).await;
    assert!(
        all_closed,
        "the proxy closed every backend connection whose client left"
    );
    // Let the runtime finish the tasks.
    tokio::time::sleep(Duration::from_millis(10)).await;
}
