//! End-to-end tunnel bench: throughput and CPU per GiB over loopback, and heap per idle
//! tunnel.
//!
//! Run with `cargo bench --bench tunnel` (release build). Optional environment:
//! `TUNNEL_BENCH_GIB` (default 2), `TUNNEL_BENCH_ROUNDS` (default 3) and
//! `TUNNEL_BENCH_IDLE` (default 1000).
//!
//! Throughput: one stream, one direction. A source thread writes with blocking std sockets,
//! a sink thread reads and discards; between them runs nothing (`direct`, the reference),
//! `wsrelay::tunnel` on the zero-copy path, on the buffered path, or tokio's
//! `copy_bidirectional` (the baseline), each on its own thread with a current-thread
//! runtime. CPU is measured per thread with `getrusage(RUSAGE_THREAD)` (user + system), so
//! the "tunnel CPU" column is the proxy thread's; "ends CPU" is source + sink. Loopback's
//! receive processing is charged to whichever thread sends, so the proxy thread also pays
//! for the sink's TCP receive path, which the source pays for in the direct run; "added CPU"
//! (all three threads minus the direct run's total) is the tunnel's true extra cost.
//!
//! Idle memory: a counting global allocator measures the heap growth caused by spawning N
//! tunnels over established idle connections (task and future included, sockets excluded).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener as StdListener, TcpStream as StdStream};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use wsrelay::{tunnel, CloseReason, Leftovers, SpliceConfig, TunnelPath};

// ---------------------------------------------------------------------------------------
// Counting allocator.

struct Counting;

static HEAP: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, and
// only adds bookkeeping on a global atomic counter.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            HEAP.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            HEAP.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) };
        HEAP.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::realloc`'s contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            HEAP.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

// ---------------------------------------------------------------------------------------
// Per-thread CPU time.

/// User + system CPU time of the calling thread.
#[cfg(target_os = "linux")]
fn thread_cpu() -> Duration {
    // SAFETY: `rusage` is plain data; all-zero is a valid value for getrusage to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage; RUSAGE_THREAD is supported since 2.6.26.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    assert_eq!(rc, 0, "getrusage failed");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

#[cfg(not(target_os = "linux"))]
fn thread_cpu() -> Duration {
    Duration::ZERO
}

// ---------------------------------------------------------------------------------------
// Throughput.

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Direct,
    ZeroCopy,
    /// Zero-copy with the pipe kept at 64 KiB (the default before pipes grew).
    ZeroCopySmallPipe,
    Buffered,
    CopyBidirectional,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct (reference)",
            Mode::ZeroCopy => "wsrelay zero-copy",
            Mode::ZeroCopySmallPipe => "wsrelay zero-copy 64K pipe",
            Mode::Buffered => "wsrelay buffered",
            Mode::CopyBidirectional => "tokio copy_bidirectional",
        }
    }
}

struct Run {
    elapsed: Duration,
    tunnel_cpu: Duration,
    ends_cpu: Duration,
}

const CHUNK: usize = 256 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads and discards until EOF; returns (bytes, thread CPU).
fn sink(listener: StdListener) -> (u64, Duration) {
    let (mut s, _) = listener.accept().expect("sink accept");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let cpu0 = thread_cpu();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) => panic!("sink read: {e}"),
        }
    }
    (total, thread_cpu() - cpu0)
}

/// Writes `total` bytes, shuts down writing, waits for EOF; returns thread CPU.
fn source(addr: std::net::SocketAddr, total: u64) -> Duration {
    let mut s = StdStream::connect(addr).expect("source connect");
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let cpu0 = thread_cpu();
    let buf = vec![0x5au8; CHUNK];
    let mut left = total;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        s.write_all(&buf[..n]).expect("source write");
        left -= n as u64;
    }
    s.shutdown(Shutdown::Write).unwrap();
    let mut end = [0u8; 16];
    let _ = s.read(&mut end);
    thread_cpu() - cpu0
}

fn run(mode: Mode, total: u64) -> Run {
    let sink_listener = StdListener::bind("127.0.0.1:0").unwrap();
    let sink_addr = sink_listener.local_addr().unwrap();
    let sink = thread::spawn(move || sink(sink_listener));

    let (source_addr, proxy) = if mode == Mode::Direct {
        (sink_addr, None)
    } else {
        let front = StdListener::bind("127.0.0.1:0").unwrap();
        front.set_nonblocking(true).unwrap();
        let addr = front.local_addr().unwrap();
        let proxy = thread::spawn(move || proxy_thread(mode, front, sink_addr));
        (addr, Some(proxy))
    };

    let start = Instant::now();
    let source = thread::spawn(move || source(source_addr, total));
    let source_cpu = source.join().expect("source thread");
    let (got, sink_cpu) = sink.join().expect("sink thread");
    let elapsed = start.elapsed();
    assert_eq!(
        got,
        total,
        "{}: sink got {got} of {total} bytes",
        mode.name()
    );
    let tunnel_cpu = proxy.map_or(Duration::ZERO, |p| p.join().expect("proxy thread"));
    Run {
        elapsed,
        tunnel_cpu,
        ends_cpu: source_cpu + sink_cpu,
    }
}

/// Accepts one connection, connects to the sink, proxies; returns the thread's CPU time.
fn proxy_thread(mode: Mode, front: StdListener, sink: std::net::SocketAddr) -> Duration {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let front = TcpListener::from_std(front).unwrap();
        let (client, _) = tokio::time::timeout(IO_TIMEOUT, front.accept())
            .await
            .expect("proxy accept timed out")
            .unwrap();
        let backend = TcpStream::connect(sink).await.unwrap();
        let cpu0 = thread_cpu();
        let limit = Duration::from_secs(300);
        match mode {
            Mode::CopyBidirectional => {
                let (mut c, mut b) = (client, backend);
                tokio::time::timeout(limit, tokio::io::copy_bidirectional(&mut c, &mut b))
                    .await
                    .expect("copy_bidirectional timed out")
                    .expect("copy_bidirectional failed");
            }
            Mode::ZeroCopy | Mode::ZeroCopySmallPipe | Mode::Buffered => {
                // The default (1 MiB, grown from 64 KiB), or 64 KiB throughout.
                let pipe = if mode == Mode::ZeroCopySmallPipe {
                    64 * 1024
                } else {
                    SpliceConfig::new().get_pipe_size()
                };
                let config = SpliceConfig::new()
                    .pipe_size(pipe)
                    .idle_timeout(Some(Duration::from_secs(10)))
                    .max_lifetime(Some(limit))
                    .zero_copy(mode != Mode::Buffered);
                let report = tunnel(
                    client,
                    backend,
                    Leftovers::default(),
                    &config,
                    std::future::pending(),
                )
                .await;
                assert_eq!(report.reason, CloseReason::Done, "{report:?}");
                let path = if mode != Mode::Buffered && cfg!(target_os = "linux") {
                    TunnelPath::ZeroCopy
                } else {
                    TunnelPath::Buffered
                };
                assert_eq!(report.path, path);
            }
            Mode::Direct => unreachable!(),
        }
        thread_cpu() - cpu0
    })
}

// ---------------------------------------------------------------------------------------
// Idle memory.

async fn tcp_pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
    let addr = listener.local_addr().unwrap();
    let (c, a) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (c.unwrap(), a.unwrap().0)
}

/// Heap bytes per idle tunnel for `mode` (zero-copy, buffered or copy_bidirectional).
fn idle_memory(mode: Mode, n: usize) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peers = Vec::with_capacity(2 * n);
        let mut ends = Vec::with_capacity(n);
        for _ in 0..n {
            let (cp, ce) = tcp_pair(&listener).await;
            let (bp, be) = tcp_pair(&listener).await;
            peers.push(cp);
            peers.push(bp);
            ends.push((ce, be));
        }
        let mut tasks = Vec::with_capacity(n);
        tokio::task::yield_now().await;
        let before = HEAP.load(Ordering::SeqCst);
        for (c, b) in ends {
            let task = match mode {
                Mode::CopyBidirectional => tokio::spawn(async move {
                    let (mut c, mut b) = (c, b);
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut b).await;
                }),
                _ => {
                    let config = SpliceConfig::new().zero_copy(mode == Mode::ZeroCopy);
                    tokio::spawn(async move {
                        let _ = tunnel(c, b, Leftovers::default(), &config, std::future::pending())
                            .await;
                    })
                }
            };
            tasks.push(task);
        }
        // Let every tunnel run until it waits for data.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = HEAP.load(Ordering::SeqCst);
        let tasks_vec =
            (tasks.capacity() * std::mem::size_of::<tokio::task::JoinHandle<()>>()) as isize;
        for t in &tasks {
            assert!(!t.is_finished(), "an idle tunnel ended");
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        drop(peers);
        (after - before - tasks_vec) as f64 / n as f64
    })
}

// ---------------------------------------------------------------------------------------

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: keep that run tiny.
    let benching = std::env::args().any(|a| a == "--bench");
    let gib = if benching {
        env_u64("TUNNEL_BENCH_GIB", 2)
    } else {
        0
    };
    let total = if benching { gib << 30 } else { 16 << 20 };
    let idle_n = if benching {
        env_u64("TUNNEL_BENCH_IDLE", 1000)
    } else {
        50
    } as usize;
    let gib_f = total as f64 / (1u64 << 30) as f64;
    let rounds = if benching {
        env_u64("TUNNEL_BENCH_ROUNDS", 3)
    } else {
        1
    }
    .max(1);

    println!(
        "throughput: {:.2} GiB, one stream, one direction, loopback; median of {rounds} rounds",
        gib_f
    );
    println!(
        "{:<26} {:>8} {:>9} {:>17} {:>15} {:>16}",
        "mode", "MiB/s", "vs direct", "tunnel CPU s/GiB", "ends CPU s/GiB", "added CPU s/GiB"
    );
    // Rounds run the modes interleaved; each column is the median over the rounds, so that
    // a noisy neighbour on a shared machine skews one sample rather than one mode.
    const MODES: [Mode; 5] = [
        Mode::Direct,
        Mode::ZeroCopy,
        Mode::ZeroCopySmallPipe,
        Mode::Buffered,
        Mode::CopyBidirectional,
    ];
    // Per mode: (MiB/s, % of direct, tunnel CPU, ends CPU, added CPU) per round.
    let mut samples: Vec<Vec<[f64; 5]>> = vec![Vec::new(); MODES.len()];
    for _ in 0..rounds {
        let mut direct = (0.0, 0.0);
        for (i, mode) in MODES.into_iter().enumerate() {
            let r = run(mode, total);
            let rate = total as f64 / (1 << 20) as f64 / r.elapsed.as_secs_f64();
            let cpu = (r.tunnel_cpu + r.ends_cpu).as_secs_f64() / gib_f;
            if mode == Mode::Direct {
                direct = (rate, cpu);
            }
            samples[i].push([
                rate,
                100.0 * rate / direct.0,
                r.tunnel_cpu.as_secs_f64() / gib_f,
                r.ends_cpu.as_secs_f64() / gib_f,
                cpu - direct.1,
            ]);
        }
    }
    for (mode, runs) in MODES.into_iter().zip(samples) {
        let m = |k: usize| median(runs.iter().map(|r| r[k]).collect());
        println!(
            "{:<26} {:>8.0} {:>8.0}% {:>17.3} {:>15.3} {:>16.3}",
            mode.name(),
            m(0),
            m(1),
            m(2),
            m(3),
            m(4),
        );
    }

    println!();
    println!("idle memory: {idle_n} established idle tunnels (heap growth from spawning them)");
    for mode in [Mode::ZeroCopy, Mode::Buffered, Mode::CopyBidirectional] {
        let per = idle_memory(mode, idle_n);
        println!("{:<26} {:>10.0} bytes/tunnel", mode.name(), per);
    }
}
