//! Graceful drain under load (rule 27, see `wsrelay::rules`, with the report's byte
//! accounting).
//!
//! `Proxy::serve` with a 1 s grace period carries about 1,000 live tunnels to an in-process
//! echo backend, every one of them exchanging data continuously, with byte counters on the
//! client and on the backend. Then shutdown is triggered. At that moment half the clients
//! (the "graceful" ones) stop sending and half-close, so their tunnels can end by themselves
//! within the grace period; the other half keep sending until the proxy cuts them.
//!
//! What can be asserted exactly, and is:
//!
//! - `serve` returns within the grace period plus a bound, having counted every tunnel as
//!   drained or cut (`drained + cut == accepted == tunnels`), and a report for every tunnel;
//!   nothing is left counted (`active_tunnels() == 0`) or open (file descriptors).
//! - The proxy never invents, drops silently, reorders or corrupts bytes. For each tunnel:
//!   the bytes it read from the client, `client_to_backend + undelivered_to_backend`, are at
//!   most what the client wrote (the client counts what its socket accepted, so this is not
//!   an equality: bytes still in the client's socket buffers at the cut are destroyed with
//!   the connection, unread by the proxy); the backend received at most `client_to_backend`
//!   (bytes the proxy wrote may still be in its socket buffers when the cut resets the
//!   connection); and the same holds the other way. Every byte a client received is the
//!   echo of the same offset of what it sent.
//! - For a tunnel that ended by itself (`CloseReason::Done`) nothing was lost anywhere, so
//!   every count is exact: nothing undelivered, and client sent = `client_to_backend` =
//!   backend received = backend sent (echo) = `backend_to_client` = client received.
//!
//! A `Report` does not say which connection it belongs to, so the per-tunnel inequalities are
//! checked as what they imply for the whole population: if each tunnel `i` has
//! `x_i <= a_i`, then the sorted `x` is element-wise at most the sorted `a` (the k-th
//! smallest `x` is matched to at least n-k+1 values of `a` no smaller than it). The exact
//! `Done` tuples are matched one to one against the clients and backend connections.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use wsrelay::{CloseReason, Report};

use support::{
    builder_for, connect, eventually, fd_limit, open_fds, read_head, send, within_for, ws_request,
    Backend, Running, Script, Then, FD_TOLERANCE, STEP,
};

/// The tunnels wanted (fewer if the descriptor limit does not allow them).
const TUNNELS: usize = 1_000;
/// Descriptors one tunnel may use: the client, the proxy's two sockets, the backend, and the
/// proxy's two pipes of the zero-copy path.
const FDS_PER_TUNNEL: u64 = 8;
/// The proxy's grace period.
const GRACE: Duration = Duration::from_secs(1);
/// How long after the grace period `serve` may take to return: the proxy gives cut tunnels
/// up to a second to wind down, plus scheduling slack on a loaded machine.
const AFTER_GRACE: Duration = Duration::from_secs(3);
/// How long traffic flows before the shutdown.
const WARM: Duration = Duration::from_millis(500);
/// The pause between two writes of a client.
const PACE: Duration = Duration::from_millis(25);
/// No client or backend task lives longer than this after the shutdown.
const HARD_STOP: Duration = Duration::from_secs(10);
/// How long a backend connection may live (the scripted backend's default is shorter than
/// opening every tunnel may take on a loaded machine).
const BACKEND_LIFETIME: Duration = Duration::from_secs(120);

/// The byte at `offset` of client `id`'s stream (what it sends, and expects echoed).
fn stream_byte(id: usize, offset: u64) -> u8 {
    ((offset.wrapping_mul(31) + id as u64 * 17) % 251) as u8
}

/// What one client did.
#[derive(Debug, Clone, Copy)]
struct ClientEnd {
    id: usize,
    graceful: bool,
    sent: u64,
    received: u64,
    /// Whether every byte received was the echo of what was sent at that offset.
    intact: bool,
}

/// What the report hook saw of one tunnel.
#[derive(Debug, Clone, Copy)]
struct Seen {
    c2b: u64,
    b2c: u64,
    u2b: u64,
    u2c: u64,
    reason: CloseReason,
}

impl From<&Report> for Seen {
    fn from(r: &Report) -> Self {
        Seen {
            c2b: r.client_to_backend,
            b2c: r.backend_to_client,
            u2b: r.undelivered_to_backend,
            u2c: r.undelivered_to_client,
            reason: r.reason,
        }
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One client: handshake, then send its stream in paced chunks while checking the echo.
/// Graceful clients stop and half-close when `stop` turns true; the others keep sending until
/// the proxy cuts them (or `HARD_STOP` after the stop).
async fn client(
    id: usize,
    addr: std::net::SocketAddr,
    ready: mpsc::UnboundedSender<()>,
    stop: watch::Receiver<bool>,
) -> ClientEnd {
    let graceful = id % 2 == 0;
    let mut stream = connect(addr).await;
    let head = ws_request(&[&format!("X-Client-Id: {id}")]);
    assert!(
        send(&mut stream, &head).await,
        "client {id} handshake written"
    );
    let got = read_head(&mut stream, STEP * 3).await;
    assert_eq!(
        got.status_line(),
        "HTTP/1.1 101 Switching Protocols",
        "client {id}"
    );
    assert!(
        got.body().is_empty(),
        "the backend sends nothing before the client"
    );
    let _ = ready.send(());
    let (mut reader, mut writer) = stream.into_split();

    let writing = {
        let mut stop = stop.clone();
        async move {
            let mut sent = 0u64;
            let mut deadline = None;
            let mut round = 0u64;
            loop {
                if deadline.is_none() && *stop.borrow() {
                    if graceful {
                        let _ = tokio::time::timeout(STEP, writer.shutdown()).await;
                        break;
                    }
                    deadline = Some(tokio::time::Instant::now() + HARD_STOP);
                }
                // Chunks of 1 to 512 bytes, varying per client and round.
                let len = ((id as u64 * 7 + round * 13) % 512 + 1) as usize;
                round += 1;
                let chunk: Vec<u8> = (0..len as u64).map(|i| stream_byte(id, sent + i)).collect();
                let mut at = 0;
                while at < chunk.len() {
                    let write = tokio::select! {
                        write = writer.write(&chunk[at..]) => write,
                        () = sleep_until_opt(deadline) => return (sent, writer),
                    };
                    match write {
                        Ok(0) | Err(_) => return (sent, writer),
                        Ok(n) => {
                            at += n;
                            sent += n as u64;
                        }
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(PACE) => {}
                    _ = stop.changed(), if deadline.is_none() => {}
                    () = sleep_until_opt(deadline) => return (sent, writer),
                }
            }
            (sent, writer)
        }
    };
    let reading = {
        let mut stop = stop.clone();
        async move {
            let mut received = 0u64;
            let mut intact = true;
            let mut buf = vec![0u8; 16 * 1024];
            let mut deadline = None;
            loop {
                if deadline.is_none() && *stop.borrow() {
                    deadline = Some(tokio::time::Instant::now() + HARD_STOP);
                }
                let read = tokio::select! {
                    read = reader.read(&mut buf) => read,
                    _ = stop.changed(), if deadline.is_none() => continue,
                    () = sleep_until_opt(deadline) => break,
                };
                match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        for (i, &b) in buf[..n].iter().enumerate() {
                            if b != stream_byte(id, received + i as u64) {
                                intact = false;
                            }
                        }
                        received += n as u64;
                    }
                }
            }
            (received, intact)
        }
    };
    let ((sent, writer), (received, intact)) = tokio::join!(writing, reading);
    drop(writer);
    ClientEnd {
        id,
        graceful,
        sent,
        received,
        intact,
    }
}

/// What each client's backend connection received and echoed, by client id (its
/// `X-Client-Id`): the bytes after the head, and the bytes its socket took.
fn backend_counts(backend: &Backend, tunnels: usize) -> Vec<(u64, u64)> {
    let mut counts = vec![None; tunnels];
    for conn in backend.conns() {
        let id: usize = conn
            .header("x-client-id")
            .first()
            .and_then(|v| v.parse().ok())
            .expect("the client's id");
        let previous = counts[id].replace((conn.after_head().len() as u64, conn.sent_after));
        assert!(previous.is_none(), "client {id} reached the backend twice");
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(id, c)| c.unwrap_or_else(|| panic!("client {id} never reached the backend")))
        .collect()
}

/// Checks that some pairing of `lows` with `highs` has each low at most its high: the
/// sorted lows are element-wise at most the sorted highs.
fn assert_dominated(what: &str, mut lows: Vec<u64>, mut highs: Vec<u64>) {
    assert_eq!(
        lows.len(),
        highs.len(),
        "{what}: as many values on both sides"
    );
    lows.sort_unstable();
    highs.sort_unstable();
    for (k, (low, high)) in lows.iter().zip(&highs).enumerate() {
        assert!(
            low <= high,
            "{what}: the {k}-th smallest is {low} on the left but {high} on the right, so \
             some tunnel has more on the left than on the right"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_27_drain_under_load_accounts_for_every_byte() {
    let limit = fd_limit().unwrap_or(1024);
    let room = limit.saturating_sub(open_fds() as u64 + 128) / FDS_PER_TUNNEL;
    let tunnels = (room as usize).min(TUNNELS);
    println!("RLIMIT_NOFILE soft limit {limit}: running {tunnels} tunnels");
    assert!(
        tunnels >= 50,
        "the descriptor limit ({limit}) leaves room for too few tunnels"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    // Echoes what each client sends, counting every byte as its socket takes it.
    let backend = Backend::start(Script::switching(Then::Echo).lifetime(BACKEND_LIFETIME)).await;
    // With the backend's listener open (it stays open); the proxy's is closed by the end.
    let baseline_fds = open_fds();

    let reports: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let builder = {
        let reports = reports.clone();
        builder_for(&backend)
            .grace_period(GRACE)
            .on_report(move |report| reports.lock().unwrap().push(Seen::from(report)))
    };
    let mut serving = Running::start(builder).await;
    let proxy = serving.proxy.clone();
    let addr = serving.addr;

    // Open every tunnel.
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let clients: Vec<_> = (0..tunnels)
        .map(|id| tokio::spawn(client(id, addr, ready_tx.clone(), stop_rx.clone())))
        .collect();
    drop(ready_tx);
    within_for(Duration::from_secs(60), "every tunnel to open", async {
        for _ in 0..tunnels {
            ready_rx
                .recv()
                .await
                .expect("a client failed its handshake");
        }
    })
    .await;
    assert_eq!(proxy.active_tunnels(), tunnels, "every tunnel is open");

    // Traffic flows; then the shutdown, and once serve has seen it the graceful clients
    // half-close.
    tokio::time::sleep(WARM).await;
    let triggered = Instant::now();
    // Once serve has seen the shutdown, no tunnel can end (and be reaped uncounted by the
    // accept loop) between the signal and the start of the drain.
    serving.shutdown().await;
    let _ = stop_tx.send(true);
    let (summary, returned) = serving.stop(GRACE + AFTER_GRACE + STEP).await;
    let took = returned - triggered;
    println!("serve returned {took:?} after the shutdown signal: {summary:?}");

    let mut ends = Vec::with_capacity(tunnels);
    for task in clients {
        let end = within_for(HARD_STOP + STEP, "a client to end", task)
            .await
            .expect("a client does not panic");
        ends.push(end);
    }
    let backends_done = eventually(HARD_STOP + STEP, || {
        let conns = backend.conns();
        conns.len() == tunnels && conns.iter().all(|c| c.closed)
    })
    .await;
    assert!(backends_done, "every backend connection ended");
    let backend_counts = backend_counts(&backend, tunnels);

    // serve: on time, and every tunnel counted once.
    assert!(
        took <= GRACE + AFTER_GRACE,
        "serve took {took:?} after the shutdown, more than the {GRACE:?} grace and \
         {AFTER_GRACE:?}"
    );
    assert_eq!(summary.accepted, tunnels as u64);
    assert_eq!(
        summary.drained + summary.cut,
        tunnels as u64,
        "every tunnel was drained or cut: {summary:?}"
    );
    assert!(
        summary.cut > 0,
        "the clients that never stop must be cut: {summary:?}"
    );
    if summary.cut > 0 {
        assert!(
            took >= GRACE,
            "tunnels were cut before the grace period ended"
        );
    }

    // Reports: one per tunnel, and their reasons agree with the summary.
    let reports = reports.lock().unwrap().clone();
    assert_eq!(reports.len(), tunnels, "a report for every tunnel");
    let shut = reports
        .iter()
        .filter(|r| r.reason == CloseReason::Shutdown)
        .count() as u64;
    let done = reports
        .iter()
        .filter(|r| r.reason == CloseReason::Done)
        .count();
    println!(
        "reports: {done} done, {shut} shut down, {} other",
        tunnels - done - shut as usize
    );
    assert!(
        shut <= summary.cut,
        "{shut} tunnels ended by the shutdown, but only {} were cut",
        summary.cut
    );
    assert!(
        done > 0,
        "no graceful tunnel managed to end by itself within the grace period"
    );

    // Bytes: never invented, corrupted or reordered.
    for end in &ends {
        assert!(
            end.intact,
            "client {} got bytes that are not its echo",
            end.id
        );
        let (b_received, b_sent) = backend_counts[end.id];
        assert!(b_received <= end.sent, "client {}: {end:?}", end.id);
        assert!(b_sent <= b_received, "client {}: echo", end.id);
        assert!(end.received <= b_sent, "client {}: {end:?}", end.id);
    }
    let client_sent: Vec<u64> = ends.iter().map(|e| e.sent).collect();
    let client_received: Vec<u64> = ends.iter().map(|e| e.received).collect();
    let backend_received: Vec<u64> = backend_counts.iter().map(|c| c.0).collect();
    let backend_sent: Vec<u64> = backend_counts.iter().map(|c| c.1).collect();
    // What the proxy read from the client is at most what the client sent.
    assert_dominated(
        "client_to_backend + undelivered_to_backend <= client sent",
        reports.iter().map(|r| r.c2b + r.u2b).collect(),
        client_sent,
    );
    // What the backend received is at most what the proxy wrote to it.
    assert_dominated(
        "backend received <= client_to_backend",
        backend_received,
        reports.iter().map(|r| r.c2b).collect(),
    );
    // The same the other way.
    assert_dominated(
        "backend_to_client + undelivered_to_client <= backend sent",
        reports.iter().map(|r| r.b2c + r.u2c).collect(),
        backend_sent,
    );
    assert_dominated(
        "client received <= backend_to_client",
        client_received,
        reports.iter().map(|r| r.b2c).collect(),
    );

    // Tunnels that ended by themselves: every count exact, matched one to one with a
    // graceful client and its backend connection.
    let mut exact: HashMap<(u64, u64), usize> = HashMap::new();
    for end in ends.iter().filter(|e| e.graceful) {
        let (b_received, b_sent) = backend_counts[end.id];
        if end.sent == b_received && b_received == b_sent && b_sent == end.received {
            *exact.entry((end.sent, end.received)).or_default() += 1;
        }
    }
    for report in reports.iter().filter(|r| r.reason == CloseReason::Done) {
        assert_eq!(
            (report.u2b, report.u2c),
            (0, 0),
            "a tunnel that ended by itself left bytes undelivered: {report:?}"
        );
        let slot = exact.get_mut(&(report.c2b, report.b2c));
        match slot {
            Some(n) if *n > 0 => *n -= 1,
            _ => panic!(
                "no graceful client sent and received exactly what this finished tunnel \
                 reports, with its backend agreeing: {report:?}"
            ),
        }
    }

    // Nothing left behind.
    assert!(
        eventually(STEP, || proxy.active_tunnels() == 0).await,
        "{} connections still counted after serve returned",
        proxy.active_tunnels()
    );
    drop(ends);
    let fds_back = eventually(STEP, || open_fds() <= baseline_fds + FD_TOLERANCE).await;
    assert!(
        fds_back,
        "{} descriptors open after the drain, {baseline_fds} before",
        open_fds()
    );
}
