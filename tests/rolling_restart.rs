//! A rolling restart behind a real L4 balancer (issue 14; rules 27, 38 and 39, see
//! `wsrelay::rules`): HAProxy in TCP mode with `send-proxy-v2` in front of two replicas of
//! the proxy example (`--proxy-protocol --send-proxy-protocol`), one echo backend that reads
//! the replicas' PROXY v2 header and the `X-Real-IP` of each connection, and 200 clients, each
//! bound to its own 127.0.0.x address, holding tunnels and sending a message every 100 ms.
//! The replicas are restarted one after the other (SIGTERM, start again on the same port,
//! wait for `READY=1` on `NOTIFY_SOCKET`), as a deployment would.
//!
//! Meanwhile a prober opens a new connection every 25 ms (a handshake and one echo).
//!
//! It asserts that every message was echoed exactly or its connection was seen to close
//! (nothing lost silently), that no handshake failed (one replica is always up), that each
//! old replica exited 0 within its grace period plus a second, and that the backend saw each
//! client's own address and port, as the PROXY header's source and as `X-Real-IP`. It prints
//! the counts. HAProxy comes from Debian's `haproxy` package (`.ci/test-deps.sh` installs it);
//! without the binary the test says so and passes.
#![cfg(all(
    feature = "proxy-protocol",
    feature = "systemd",
    feature = "rustls",
    unix
))]

mod support;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UnixDatagram};
use tokio::process::{Child, ChildStdout, Command};
use wsrelay::handshake::derive_accept_key;
use wsrelay::proxy_protocol::read_header;

use support::*;

/// Clients, each on its own source address 127.0.0.2 to 127.0.0.201.
const CLIENTS: usize = 200;
/// The replicas' `--grace`.
const GRACE: Duration = Duration::from_secs(2);
/// How often each client sends a message.
const TICK: Duration = Duration::from_millis(100);
/// A message neither echoed nor seen closed within this is lost.
const ECHO_LIMIT: Duration = Duration::from_secs(3);
/// How long the clients run with both replicas up, before, between and after the restarts.
const STEADY: Duration = Duration::from_secs(1);
/// How often the prober opens a new connection.
const PROBE_EVERY: Duration = Duration::from_millis(25);

/// One connection as the backend saw it.
#[derive(Debug, Clone)]
struct Seen {
    /// The PROXY v2 header's source and destination (`None` for LOCAL).
    source: Option<SocketAddr>,
    destination: Option<SocketAddr>,
    /// The request's `X-Real-IP`.
    real_ip: Option<String>,
}

/// What the backend saw: connections, and those it could not read a header or head from.
#[derive(Default)]
struct BackendLog {
    seen: Mutex<Vec<Seen>>,
    bad: AtomicU64,
}

/// The echo backend: reads the PROXY header and the upgrade request, answers `101`, then
/// echoes every byte. Runs until the test's runtime ends.
async fn backend(log: Arc<BackendLog>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the backend");
    let addr = listener.local_addr().expect("backend address");
    tokio::spawn(async move {
        loop {
            if let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(echo(stream, log.clone()));
            }
        }
    });
    addr
}

async fn echo(mut stream: TcpStream, log: Arc<BackendLog>) {
    let header = match tokio::time::timeout(STEP, read_header(&mut stream)).await {
        Ok(Ok(header)) => header,
        _ => {
            log.bad.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let got = read_head(&mut stream, STEP).await;
    let Some(key) = got.header("sec-websocket-key").into_iter().next() else {
        log.bad.fetch_add(1, Ordering::Relaxed);
        return;
    };
    log.seen.lock().unwrap().push(Seen {
        source: header.source(),
        destination: header.destination(),
        real_ip: got.header("x-real-ip").into_iter().next(),
    });
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    let early = got.body().to_vec();
    if stream.write_all(answer.as_bytes()).await.is_err() || stream.write_all(&early).await.is_err()
    {
        return;
    }
    let mut buf = vec![0; 4096];
    while let Ok(n @ 1..) = stream.read(&mut buf).await {
        if stream.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A free port on 127.0.0.1 (bound, then released for a child to take).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local address").port()
}

/// A running replica of the proxy example.
struct Replica {
    child: Child,
    /// Kept open so that nothing the child writes to stdout fails.
    _stdout: Lines<BufReader<ChildStdout>>,
    notify: UnixDatagram,
}

/// Starts a replica on `port` (again and again while the port is still taken by the one
/// being replaced) and waits for its `listening on` line and its `READY=1`.
async fn start_replica(dir: &TempDir, name: &str, port: u16, backend: SocketAddr) -> Replica {
    static STARTS: AtomicUsize = AtomicUsize::new(0);
    let binary = example_binary("proxy").await;
    let deadline = Instant::now() + PROCESS_STEP;
    loop {
        let n = STARTS.fetch_add(1, Ordering::Relaxed);
        let socket = dir.join(&format!("{name}-{n}.notify"));
        let notify = UnixDatagram::bind(&socket).expect("bind a NOTIFY_SOCKET");
        let log = std::fs::File::create(dir.join(&format!("{name}-{n}.log"))).expect("log file");
        let grace = GRACE.as_secs().to_string();
        let mut child = Command::new(&binary)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--backend", &backend.to_string(), "--grace", &grace])
            .args([
                "--threads",
                "2",
                "--proxy-protocol",
                "--send-proxy-protocol",
            ])
            .env("NOTIFY_SOCKET", &socket)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start the proxy example");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
        let line = within_for(PROCESS_STEP, "a replica's first line", stdout.next_line()).await;
        match line {
            Ok(Some(line)) if line.starts_with("listening on ") => {
                let mut ready = [0; 64];
                let n = within("READY=1", notify.recv(&mut ready))
                    .await
                    .expect("recv");
                assert_eq!(&ready[..n], b"READY=1\n", "{name}: readiness");
                return Replica {
                    child,
                    _stdout: stdout,
                    notify,
                };
            }
            other => {
                let status = within("a failed replica to exit", child.wait()).await;
                let text = std::fs::read_to_string(dir.join(&format!("{name}-{n}.log")));
                assert!(
                    Instant::now() < deadline,
                    "{name} did not start: {other:?}, {status:?}, {text:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// `haproxy` on the `PATH`, or Debian's `/usr/sbin/haproxy` (not on a user's `PATH`).
fn haproxy_binary() -> Option<&'static str> {
    ["haproxy", "/usr/sbin/haproxy"].into_iter().find(|binary| {
        std::process::Command::new(binary)
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    })
}

/// HAProxy in TCP mode in front of the replicas on `ports`, with `send-proxy-v2` and TCP
/// health checks that send a v2 LOCAL header (`check-send-proxy`); a refused connect is
/// retried on the other replica (`option redispatch`).
async fn start_haproxy(binary: &str, dir: &TempDir, front: u16, ports: [u16; 2]) -> Child {
    let config = format!(
        "global\n    maxconn 4096\n    nbthread 1\n\
         defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 30s\n\
         \x20   timeout server 30s\n    timeout check 1s\n    retries 3\n    option redispatch 1\n\
         frontend front\n    bind 127.0.0.1:{front}\n    default_backend replicas\n\
         backend replicas\n    balance roundrobin\n\
         \x20   default-server send-proxy-v2 check check-send-proxy inter 100ms fall 1 rise 2\n\
         \x20   server r1 127.0.0.1:{}\n    server r2 127.0.0.1:{}\n",
        ports[0], ports[1]
    );
    let path = dir.write("haproxy.cfg", config);
    let log = std::fs::File::create(dir.join("haproxy.log")).expect("log file");
    let child = Command::new(binary)
        .args(["-db", "-f"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start haproxy");
    let up = async {
        while TcpStream::connect(("127.0.0.1", front)).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    within_for(PROCESS_STEP, "haproxy to listen", up).await;
    child
}

/// What the clients counted.
#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    echoed: AtomicU64,
    /// Messages whose connection closed before their echo came back.
    closed_in_flight: AtomicU64,
    /// Tunnels that closed under a client (it then connects again).
    reconnects: AtomicU64,
    handshakes: AtomicU64,
    failed_handshakes: AtomicU64,
    /// Short connections opened by the prober (a handshake and one echo each).
    probes: AtomicU64,
    /// Tunnels open now.
    open: AtomicUsize,
    /// What went wrong, for the assertion message.
    failures: Mutex<Vec<String>>,
    /// Every client connection's own address (what the backend must see).
    addresses: Mutex<Vec<SocketAddr>>,
}

/// One client: holds a tunnel through `front` from 127.0.0.`2 + i`, sends a message every
/// [`TICK`] and reads its echo; connects again when the tunnel closes; stops at `stop`.
/// `Err` for an echo that differs or never comes (neither echoed nor closed).
async fn client(i: usize, front: SocketAddr, stop: Arc<AtomicBool>, counts: Arc<Counts>) {
    let ip = Ipv4Addr::new(127, 0, 0, u8::try_from(2 + i).expect("200 clients"));
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // Connect and upgrade.
        let connect = async {
            let socket = TcpSocket::new_v4()?;
            socket.bind((ip, 0).into())?;
            socket.connect(front).await
        };
        let mut stream = match tokio::time::timeout(STEP, connect).await {
            Ok(Ok(stream)) => stream,
            other => {
                fail(&counts, format!("client {i}: connect: {other:?}"));
                tokio::time::sleep(TICK).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().expect("local address");
        let got = if send(&mut stream, &ws_request(&[])).await {
            read_head(&mut stream, STEP).await
        } else {
            Got {
                bytes: Vec::new(),
                closed: true,
            }
        };
        if got.status() != Some(101) || !got.body().is_empty() {
            fail(
                &counts,
                format!("client {i} from {local}: {:?}", got.head()),
            );
            tokio::time::sleep(TICK).await;
            continue;
        }
        counts.handshakes.fetch_add(1, Ordering::Relaxed);
        counts.addresses.lock().unwrap().push(local);
        counts.open.fetch_add(1, Ordering::Relaxed);
        // Echo until the tunnel closes or the test stops.
        let mut tick = tokio::time::interval(TICK);
        let mut echo = Vec::new();
        loop {
            tick.tick().await;
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let message = format!("client {i} message {n}\n");
            n += 1;
            counts.sent.fetch_add(1, Ordering::Relaxed);
            let ok = send(&mut stream, message.as_bytes()).await;
            echo.resize(message.len(), 0);
            let read = tokio::time::timeout(ECHO_LIMIT, stream.read_exact(&mut echo)).await;
            match read {
                Ok(Ok(_)) if ok && echo == message.as_bytes() => {
                    counts.echoed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Ok(_)) => {
                    let echo = String::from_utf8_lossy(&echo);
                    let what = format!("client {i}: sent {message:?}, echoed {echo:?} (ok {ok})");
                    counts.failures.lock().unwrap().push(what);
                    break;
                }
                // EOF or reset: the tunnel closed, with the message in flight.
                Ok(Err(_)) => {
                    counts.closed_in_flight.fetch_add(1, Ordering::Relaxed);
                    counts.reconnects.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(_) => {
                    let what = format!("client {i}: {message:?} neither echoed nor closed");
                    counts.failures.lock().unwrap().push(what);
                    break;
                }
            }
        }
        counts.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Opens a short connection from 127.0.0.250 every [`PROBE_EVERY`] (a handshake, one echo,
/// close) until `stop`: new handshakes all through the restarts, also while a replica's
/// listener has just closed.
async fn prober(front: SocketAddr, stop: Arc<AtomicBool>, counts: Arc<Counts>) {
    let ip = Ipv4Addr::new(127, 0, 0, 250);
    let mut tick = tokio::time::interval(PROBE_EVERY);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let connect = async {
            let socket = TcpSocket::new_v4()?;
            socket.bind((ip, 0).into())?;
            socket.connect(front).await
        };
        let mut stream = match tokio::time::timeout(STEP, connect).await {
            Ok(Ok(stream)) => stream,
            other => {
                fail(&counts, format!("probe: connect: {other:?}"));
                continue;
            }
        };
        let local = stream.local_addr().expect("local address");
        let message = format!("probe {n}\n");
        n += 1;
        let request = [ws_request(&[]), message.clone().into_bytes()].concat();
        let got = if send(&mut stream, &request).await {
            read_head(&mut stream, STEP).await
        } else {
            Got {
                bytes: Vec::new(),
                closed: true,
            }
        };
        if got.status() != Some(101) {
            fail(&counts, format!("probe from {local}: {:?}", got.head()));
            continue;
        }
        counts.probes.fetch_add(1, Ordering::Relaxed);
        counts.addresses.lock().unwrap().push(local);
        let mut echo = got.body().to_vec();
        let missing = message.len().saturating_sub(echo.len());
        let mut more = vec![0; missing];
        let read = tokio::time::timeout(ECHO_LIMIT, stream.read_exact(&mut more)).await;
        echo.extend_from_slice(&more);
        if !matches!(read, Ok(Ok(_))) || echo != message.as_bytes() {
            let what = format!("probe from {local}: {message:?} came back as {echo:?}");
            counts.failures.lock().unwrap().push(what);
        }
    }
}

fn fail(counts: &Counts, what: String) {
    counts.failed_handshakes.fetch_add(1, Ordering::Relaxed);
    counts.failures.lock().unwrap().push(what);
}

/// SIGTERM to `old`, a new replica started on `port` at once; the old one's exit code and
/// how long it took from the signal. Returns the new replica.
async fn restart(
    dir: &TempDir,
    name: &str,
    old: Replica,
    port: u16,
    backend: SocketAddr,
) -> (Replica, Option<i32>, Duration, Duration) {
    let Replica {
        mut child,
        _stdout,
        notify,
    } = old;
    let signalled = Instant::now();
    terminate(&child).await;
    let new = start_replica(dir, name, port, backend).await;
    let ready = signalled.elapsed();
    let status = within_for(
        GRACE + PROCESS_STEP,
        "the old replica to exit",
        child.wait(),
    )
    .await
    .expect("wait for the old replica");
    let drained = signalled.elapsed();
    // It said it was stopping.
    let mut stopping = [0; 64];
    let n = within("STOPPING=1", notify.recv(&mut stopping))
        .await
        .expect("recv");
    assert_eq!(&stopping[..n], b"STOPPING=1\n", "{name}: stopping");
    drop(_stdout);
    (new, status.code(), ready, drained)
}

/// Waits until `n` tunnels are open (or `limit` passes); whether they were.
async fn until_open(counts: &Counts, n: usize, limit: Duration) -> bool {
    eventually(limit, || counts.open.load(Ordering::Relaxed) >= n).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_behind_haproxy_loses_nothing() {
    let Some(haproxy) = haproxy_binary() else {
        eprintln!(
            "SKIPPED: no haproxy binary (Debian package `haproxy`; .ci/test-deps.sh installs it)"
        );
        return;
    };
    let started = Instant::now();
    let dir = TempDir::new("rolling");
    let log = Arc::new(BackendLog::default());
    let backend = backend(log.clone()).await;
    let ports = [free_port(), free_port()];
    let front_port = free_port();
    let mut replicas = Vec::new();
    for (name, port) in ["r1", "r2"].into_iter().zip(ports) {
        replicas.push(start_replica(&dir, name, port, backend).await);
    }
    let _haproxy = start_haproxy(haproxy, &dir, front_port, ports).await;
    let front = SocketAddr::from(([127, 0, 0, 1], front_port));

    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        clients.push(tokio::spawn(client(i, front, stop.clone(), counts.clone())));
    }
    let all_open = until_open(&counts, CLIENTS, PROCESS_STEP).await;
    let probing = tokio::spawn(prober(front, stop.clone(), counts.clone()));
    tokio::time::sleep(STEADY).await;

    // One replica after the other: SIGTERM, start again on the same port, wait until ready.
    let mut report = Vec::new();
    let mut new_replicas = Vec::new();
    for ((name, port), old) in ["r1", "r2"].into_iter().zip(ports).zip(replicas) {
        let (new, code, ready, drained) = restart(&dir, name, old, port, backend).await;
        report.push((name, code, ready, drained));
        new_replicas.push(new);
        // The clients whose tunnels were cut are back (through either replica).
        until_open(&counts, CLIENTS, PROCESS_STEP).await;
        tokio::time::sleep(STEADY).await;
    }
    stop.store(true, Ordering::Relaxed);
    within_for(ECHO_LIMIT + STEP, "the prober to stop", probing)
        .await
        .expect("prober task");
    for client in clients {
        within_for(ECHO_LIMIT + STEP, "a client to stop", client)
            .await
            .expect("client task");
    }

    let sent = counts.sent.load(Ordering::Relaxed);
    let echoed = counts.echoed.load(Ordering::Relaxed);
    let closed = counts.closed_in_flight.load(Ordering::Relaxed);
    let seen = log.seen.lock().unwrap().clone();
    eprintln!(
        "rolling restart: {CLIENTS} clients, {sent} messages sent, {echoed} echoed, {closed} \
         closed in flight, {} reconnects, {} handshakes, {} probes, {} failed handshakes; \
         backend saw {} connections ({} unreadable); {:.1} s in all",
        counts.reconnects.load(Ordering::Relaxed),
        counts.handshakes.load(Ordering::Relaxed),
        counts.probes.load(Ordering::Relaxed),
        counts.failed_handshakes.load(Ordering::Relaxed),
        seen.len(),
        log.bad.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
    );
    for (name, code, ready, drained) in &report {
        eprintln!(
            "rolling restart: {name}: new replica ready {:.2} s after SIGTERM, old one exited \
             {code:?} {:.2} s after it (grace {} s)",
            ready.as_secs_f64(),
            drained.as_secs_f64(),
            GRACE.as_secs()
        );
    }

    let failures = counts.failures.lock().unwrap().clone();
    assert!(
        all_open,
        "not every client got a tunnel at the start: {failures:?}"
    );
    assert!(
        failures.is_empty(),
        "{} failures: {failures:?}",
        failures.len()
    );
    assert_eq!(
        sent,
        echoed + closed,
        "every message echoed or its connection closed"
    );
    assert!(closed <= counts.reconnects.load(Ordering::Relaxed));
    for (name, code, _, drained) in &report {
        assert_eq!(*code, Some(0), "{name} exit code");
        assert!(
            *drained <= GRACE + Duration::from_secs(1),
            "{name} took {drained:?} to exit"
        );
    }
    // The backend saw each connection's real source: the client's own address and port in
    // the replicas' PROXY header, its address in X-Real-IP, the balancer's address as the
    // destination; never the balancer's or a replica's own address.
    assert_eq!(
        log.bad.load(Ordering::Relaxed),
        0,
        "backend connections without a header"
    );
    let sources: HashSet<SocketAddr> = seen.iter().filter_map(|s| s.source).collect();
    for s in &seen {
        let source = s.source.expect("a PROXY header with addresses");
        assert_eq!(s.real_ip, Some(source.ip().to_string()), "{s:?}");
        assert_eq!(s.destination, Some(front), "{s:?}");
    }
    let addresses = counts.addresses.lock().unwrap().clone();
    for address in &addresses {
        assert!(sources.contains(address), "the backend never saw {address}");
    }
    let clients_seen: HashSet<_> = sources.iter().map(|s| s.ip()).collect();
    // The clients' and the prober's.
    assert_eq!(
        clients_seen.len(),
        CLIENTS + 1,
        "distinct client addresses at the backend"
    );
    assert!(
        !clients_seen.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)),
        "the balancer's address"
    );
    assert!(sent > 0 && echoed > 0);
}
