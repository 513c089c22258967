//! End-to-end comparison of the crate's `proxy` and `axum` examples with a
//! `copy_bidirectional` relay, nginx, HAProxy and Caddy, and with no proxy at all (`direct`),
//! on 127.0.0.1.
//!
//! ```text
//! cargo bench --bench compare                  # full run, ~25 minutes on 2 cores
//!                                              # (~14 of them the tls and h2 groups)
//! cargo bench --bench compare -- --quick       # small sizes, one run
//! cargo bench --bench compare -- --only nginx  # one proxy (plus `direct`); repeatable,
//!                                              # or comma-separated: --only wsrelay,axum
//! cargo bench --bench compare -- --runs 5      # runs per figure (median reported)
//! cargo bench --bench compare -- --scenario handshakes  # one group: bulk, rtt,
//!                                              # handshakes, halfclose, idle, silent,
//!                                              # tls, h2 (repeatable)
//! cargo bench --bench compare -- --only wsrelay --wrap 'perf record -g -o /tmp/p.data --'
//!                                              # run the examples (wsrelay, axum) under a
//!                                              # profiler (their CPU figures then include
//!                                              # the wrapper); use it with one --only
//! COMPARE_WSRELAY_ARGS='--threads 1' cargo bench --bench compare  # extra options for the
//!                                              # proxy example; COMPARE_AXUM_ARGS for axum
//! COMPARE_BASELINE_PER_CORE=1 cargo bench --bench compare  # copy_bidirectional on one
//!                                              # single-threaded runtime per CPU, as the
//!                                              # proxy example runs: the runtime's own floor
//! COMPARE_EXAMPLE_FEATURES=NAME cargo bench --bench compare  # build the examples with
//!                                              # these crate features too (`rustls` is on
//!                                              # whenever Cargo.toml declares it)
//! ```
//!
//! Columns (`--only` names in brackets): `direct`; `wsrelay` (`examples/proxy.rs`); `axum`
//! (`examples/axum.rs`, the proxy as an axum handler, upgraded at its route `/ws`);
//! `copy_bidirectional` (a raw TCP relay, this binary re-executed); `nginx`, `haproxy`,
//! `caddy` (Debian packages: `apt-get update && apt-get install -y nginx haproxy caddy`; a
//! column that is not installed says so). The upgrade path is a property of the column
//! (`/ws` for axum, `/` for the others); what the backend is to do travels in the query
//! (`?op=echo`, `?op=sink&bytes=N`, ...), which every proxy forwards as it is.
//!
//! It builds the examples (`cargo build --release --example proxy --example axum`, with the
//! `rustls` feature once the crate has it), starts a raw backend, then each proxy as its own
//! child process (nginx, HAProxy and Caddy each with a typical config in a temp dir), and
//! runs the scenarios against every proxy in turn, interleaved run by run so that a change
//! of machine load affects every column alike:
//!
//! - `bulk`: bulk transfer, 1 and 8 connections, each direction: MiB/s and the proxy's CPU
//!   seconds per GiB (utime + stime of its processes, from `/proc`);
//! - `rtt`: round trip of 64-byte messages on one connection: p50 / p99 µs;
//! - `handshakes`: connect, upgrade, one echo, close, by 16 concurrent workers: upgrades/s
//!   and the proxy's CPU µs per upgrade;
//! - `halfclose`: whether the backend's reply still arrives after the client shuts down
//!   writing;
//! - `idle`: the proxy's RSS and fd growth per upgraded connection held open (5,000 of them),
//!   then after one 16-byte echo on 1,000 of them (what a proxy allocates on first data);
//! - `silent`: the proxy's RSS and fd growth per TCP connection that sends nothing at all,
//!   not even a request head (3,000 of them, 1,000 with `--quick`), measured as soon as the
//!   proxy has accepted them, before any head timeout closes them; the table also says how
//!   many were still open then;
//! - `tls` (issue 11): every proxy terminates TLS (wss), the backend stays plain: bulk MiB/s
//!   and proxy CPU-s/GiB (1 and 8 connections, each direction), TLS handshakes (upgrades/s
//!   and proxy CPU-µs per TLS upgrade, a full handshake each: the client never resumes), and
//!   RSS per held wss connection. One setup for all: a throwaway CA and an ECDSA P-256
//!   server certificate made at bench start (`rcgen`, into a temp dir), TLS 1.3 only,
//!   `TLS_AES_128_GCM_SHA256`, X25519, ALPN `http/1.1`, each peer configured to it (nginx
//!   `listen … ssl`, HAProxy `bind … ssl crt`, Caddy `tls CERT KEY`, copy_bidirectional
//!   behind a tokio-rustls acceptor); the client is rustls on the ring provider offering
//!   nothing else. `direct` has no TLS figures;
//! - `h2` (issue 12): 1,000 WebSocket tunnels to the echo held at once through one proxy,
//!   as HTTP/2 streams on 10 h2c connections with prior knowledge (RFC 8441 extended
//!   CONNECT, `:protocol websocket`, `sec-websocket-version: 13`; the `h2` crate as client)
//!   and, side by side, as 1,000 upgraded HTTP/1.1 connections through the same proxy: proxy
//!   RSS per tunnel (held, then after the echo), CPU-ms per MiB echoed, echo MiB/s, and
//!   p50 / p99 round trip of a 64-byte message. HAProxy translates HTTP/2 to HTTP/1.1 on a
//!   `bind … proto h2`; nginx (`listen … http2`) and Caddy 2.6 (`protocols h1 h2 h2c`) get
//!   the same client and show what they answer (neither enables extended CONNECT);
//!   copy_bidirectional has no HTTP/2 rows.
//!
//! The crate's examples are held to the contract of issues 11 and 12: the `tls` group
//! starts them with `--listen 127.0.0.1:0 --backend ADDR --tls-cert PATH --tls-key PATH`
//! (PEM files: the chain, and the key in PKCS#8) and reads `listening on ADDR` from their
//! stdout; an example that refuses the flags (`unknown argument`) gets "not supported by
//! this build" in those cells. The `h2` group starts them as for plain HTTP/1.1 and speaks
//! h2c with prior knowledge to the same port (the axum example's `/ws`; the proxy example's
//! `/`); a proxy without it gets the reason in those cells.
//!
//! `idle`, `silent`, the wss idle run and both `h2` runs are on a freshly started proxy each
//! time, and not for `direct`. Each group that needs it (`tls`, `h2`) restarts the proxies
//! with the config for it.
//! RLIMIT_NOFILE is raised for the bench (and so for every proxy it starts); nginx's
//! `worker_connections` and HAProxy's `maxconn` leave room for all those connections.
//!
//! Output: the table (figures × proxies, medians, ratios against nginx) is printed and
//! written to `target/bench-compare.md`; beside it, `target/bench-compare.svg` charts every
//! figure of wsrelay, axum and copy_bidirectional as a ratio to the best of nginx, HAProxy
//! and Caddy for that figure (higher or lower being better as the figure says), titled with
//! the date and the machine. Both paths are printed at the end. Rows of groups that did not
//! run are left out; the targets of issues 5, 11 and 12 are checked for the groups that ran.
//!
//! Every socket operation has a timeout and every scenario run a time limit: a proxy that
//! dies or hangs becomes a failed column, not a hung bench. Children are stopped by PID
//! (SIGTERM, then SIGKILL) on every exit path, panics included.

#[cfg(target_os = "linux")]
#[path = "compare/chart.rs"]
mod chart;
#[cfg(target_os = "linux")]
#[path = "compare/client.rs"]
mod client;
#[cfg(target_os = "linux")]
#[path = "compare/procs.rs"]
mod procs;
#[cfg(target_os = "linux")]
#[path = "compare/servers.rs"]
mod servers;
#[cfg(target_os = "linux")]
#[path = "compare/streams.rs"]
mod streams;
#[cfg(target_os = "linux")]
#[path = "compare/table.rs"]
mod table;
#[cfg(target_os = "linux")]
#[path = "compare/tls.rs"]
mod tls;

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("the compare bench measures processes through /proc: Linux only");
}

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    linux::main()
}

#[cfg(target_os = "linux")]
mod linux {
    use std::future::Future;
    use std::path::{Path, PathBuf};
    use std::process::{Command, ExitCode};
    use std::time::{Duration, Instant};

    use crate::client::{self, Direction, Endpoint};
    use crate::procs::{self, Env, Kind, Mode, Running};
    use crate::streams::{self, Shape, Via};
    use crate::table::{Column, Row, Status, Table};
    use crate::tls::TlsClient;

    const USAGE: &str =
        "usage: cargo bench --bench compare -- [--quick] [--runs N] [--only NAME]... \
         [--scenario GROUP]... [--wrap 'CMD ARGS']\n\
         NAME: direct, wsrelay, axum, copy_bidirectional, nginx, haproxy, caddy\n\
         GROUP: bulk, rtt, handshakes, halfclose, idle, silent, tls, h2";

    /// Sizes and counts of one bench run.
    #[derive(Debug, Clone)]
    pub(crate) struct Config {
        pub(crate) quick: bool,
        pub(crate) runs: usize,
        pub(crate) only: Vec<Kind>,
        /// Scenario groups to run (`bulk`, `rtt`, `handshakes`, `halfclose`, `idle`,
        /// `silent`, `tls`, `h2`); all when empty.
        pub(crate) scenarios: Vec<String>,
        /// A command to run the crate's examples (wsrelay, axum) under, for profiling
        /// (`--wrap`).
        pub(crate) wrap: Vec<String>,
        /// Bytes per bulk run (split evenly over the connections).
        pub(crate) bulk_bytes: u64,
        pub(crate) rtt_warmup: usize,
        pub(crate) rtt_count: usize,
        /// The round trips of a run are measured as this many shorter runs, interleaved
        /// with the other proxies', so that a burst of load from elsewhere on the machine
        /// hits every column alike; each figure is the median over all of them.
        pub(crate) rtt_slices: usize,
        pub(crate) handshake_workers: usize,
        pub(crate) handshakes: usize,
        pub(crate) idle_conns: usize,
        /// Connections that send nothing, held per silent run.
        pub(crate) silent_conns: usize,
        /// Bytes per wss bulk run (split evenly over the connections).
        pub(crate) tls_bulk_bytes: u64,
        /// wss handshakes per run (by `handshake_workers` workers).
        pub(crate) tls_handshakes: usize,
        /// wss connections held per run.
        pub(crate) tls_idle_conns: usize,
        /// The `h2` group's tunnels, connections and message counts.
        pub(crate) streams: Shape,
    }

    impl Config {
        fn full() -> Config {
            Config {
                quick: false,
                runs: 3,
                only: Vec::new(),
                scenarios: Vec::new(),
                wrap: Vec::new(),
                bulk_bytes: 2 << 30,
                rtt_warmup: 1_000,
                rtt_count: 20_000,
                rtt_slices: 5,
                handshake_workers: 16,
                handshakes: 10_000,
                idle_conns: 5_000,
                silent_conns: 3_000,
                tls_bulk_bytes: 1 << 30,
                tls_handshakes: 4_000,
                tls_idle_conns: 2_000,
                streams: Shape {
                    tunnels: 1_000,
                    h2_conns: 10,
                    rtt_rounds: 5,
                    echo_messages: 16,
                },
            }
        }

        fn quick() -> Config {
            Config {
                quick: true,
                runs: 1,
                bulk_bytes: 256 << 20,
                rtt_warmup: 200,
                rtt_count: 2_000,
                rtt_slices: 1,
                handshakes: 1_000,
                idle_conns: 1_000,
                silent_conns: 1_000,
                tls_bulk_bytes: 128 << 20,
                tls_handshakes: 400,
                tls_idle_conns: 500,
                streams: Shape {
                    tunnels: 1_000,
                    h2_conns: 10,
                    rtt_rounds: 1,
                    echo_messages: 2,
                },
                ..Config::full()
            }
        }
    }

    fn parse_args(args: &[String]) -> Result<Config, String> {
        let mut config = if args.iter().any(|a| a == "--quick") {
            Config::quick()
        } else {
            Config::full()
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--quick" => {}
                // What `cargo bench` passes to every bench binary.
                "--bench" => {}
                "--runs" => {
                    let n = it.next().ok_or("--runs needs a number")?;
                    config.runs = n
                        .parse()
                        .ok()
                        .filter(|&n: &usize| (1..=50).contains(&n))
                        .ok_or(format!("bad --runs {n:?}: want 1 to 50"))?;
                }
                "--only" => {
                    let name = it.next().ok_or("--only needs a name")?;
                    for name in name.split(',') {
                        let kind = Kind::parse(name).ok_or(format!("unknown proxy {name:?}"))?;
                        config.only.push(kind);
                    }
                }
                "--scenario" => {
                    let names = it.next().ok_or("--scenario needs a name")?;
                    for name in names.split(',') {
                        if !Scenario::ALL.iter().any(|s| s.group() == name) {
                            return Err(format!("unknown scenario {name:?}"));
                        }
                        config.scenarios.push(name.to_string());
                    }
                }
                "--wrap" => {
                    let command = it.next().ok_or("--wrap needs a command")?;
                    config.wrap = command.split_whitespace().map(String::from).collect();
                }
                "-h" | "--help" => return Err(String::new()),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(config)
    }

    pub(crate) fn main() -> ExitCode {
        let args: Vec<String> = std::env::args().skip(1).collect();
        // The private modes of the re-executed binary.
        match args.first().map(String::as_str) {
            Some("--raw-backend") if args.len() == 2 => {
                return exit(crate::servers::raw_backend_main(&args[1]));
            }
            Some("--baseline-proxy") if args.len() == 3 => {
                return exit(crate::servers::baseline_proxy_main(
                    &args[1], &args[2], None,
                ));
            }
            Some("--baseline-proxy") if args.len() == 5 => {
                let tls = Some((args[3].as_str(), args[4].as_str()));
                return exit(crate::servers::baseline_proxy_main(&args[1], &args[2], tls));
            }
            _ => {}
        }
        let config = match parse_args(&args) {
            Ok(config) => config,
            Err(message) => {
                eprintln!("{message}\n{USAGE}");
                return ExitCode::from(2);
            }
        };
        match bench(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("compare: {message}");
                ExitCode::FAILURE
            }
        }
    }

    fn exit(result: std::io::Result<()>) -> ExitCode {
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        }
    }

    /// `target/`, from this binary's path (`target/release/deps/compare-HASH`).
    fn target_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
            return PathBuf::from(dir);
        }
        let exe = std::env::current_exe().unwrap_or_default();
        exe.ancestors()
            .nth(3)
            .map(Path::to_path_buf)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
    }

    /// The crate features the examples are built with: `rustls` (TLS termination, issue 11)
    /// when `Cargo.toml` declares it, and whatever `COMPARE_EXAMPLE_FEATURES` names
    /// (comma- or space-separated).
    fn example_features() -> Vec<String> {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let text = std::fs::read_to_string(manifest).unwrap_or_default();
        // The keys of the `[features]` table: `name = [...]` lines up to the next table.
        let declared: Vec<&str> = text
            .lines()
            .skip_while(|l| l.trim() != "[features]")
            .skip(1)
            .take_while(|l| !l.trim_start().starts_with('['))
            .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
            .collect();
        let mut features: Vec<String> = ["rustls"]
            .into_iter()
            .filter(|f| declared.contains(f))
            .map(String::from)
            .collect();
        if let Ok(extra) = std::env::var("COMPARE_EXAMPLE_FEATURES") {
            features.extend(
                extra
                    .split([',', ' '])
                    .filter(|f| !f.is_empty())
                    .map(String::from),
            );
        }
        features
    }

    /// `cargo build --release --example NAME...` for the given examples (with
    /// [`example_features`]), bounded in time; the path of each executable.
    fn build_examples(target: &Path, names: &[&str]) -> Result<Vec<PathBuf>, String> {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let features = example_features().join(",");
        let mut args = vec!["build", "--release", "--quiet"];
        if !features.is_empty() {
            args.extend(["--features", &features]);
        }
        for name in names {
            args.extend(["--example", name]);
        }
        eprintln!("building the examples (cargo {})...", args.join(" "));
        let mut command = Command::new(cargo);
        command
            .args(&args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CARGO_TARGET_DIR", target);
        // `cargo bench` gives this process the variables of a running target
        // (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, ...). Some build scripts (ring's) watch one of
        // them, so passing them on would make the inner build rebuild those crates, and the
        // next `cargo bench` rebuild them back: each run would compile TLS twice.
        for (name, _) in std::env::vars_os() {
            let Some(name) = name.to_str() else { continue };
            let set_for_targets = name == "CARGO_MANIFEST_DIR"
                || name == "CARGO_MANIFEST_PATH"
                || name == "CARGO_CRATE_NAME"
                || name == "CARGO_BIN_NAME"
                || name == "CARGO_PRIMARY_PACKAGE"
                || name == "CARGO_TARGET_TMPDIR"
                || name == "OUT_DIR"
                || name.starts_with("CARGO_PKG_");
            if set_for_targets {
                command.env_remove(name);
            }
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(30 * 60);
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => break,
                Ok(Some(status)) => return Err(format!("cargo build failed ({status})")),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err("cargo build did not finish within 30 minutes".into());
                }
            }
        }
        names
            .iter()
            .map(|name| {
                let exe = target.join("release").join("examples").join(name);
                if exe.is_file() {
                    Ok(exe)
                } else {
                    Err(format!("{} not found after the build", exe.display()))
                }
            })
            .collect()
    }

    /// The scenarios, in the order they run.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Scenario {
        Bulk(Direction, usize),
        RoundTrip,
        Handshakes,
        HalfClose,
        Idle,
        Silent,
        /// Bulk over wss.
        TlsBulk(Direction, usize),
        /// wss handshakes, a full TLS handshake each.
        TlsHandshakes,
        /// wss connections held.
        TlsIdle,
        /// 1,000 tunnels held at once, as HTTP/2 streams or HTTP/1.1 connections.
        Streams(Via),
    }

    impl Scenario {
        const ALL: [Scenario; 17] = [
            Scenario::Bulk(Direction::Up, 1),
            Scenario::Bulk(Direction::Down, 1),
            Scenario::Bulk(Direction::Up, 8),
            Scenario::Bulk(Direction::Down, 8),
            Scenario::RoundTrip,
            Scenario::Handshakes,
            Scenario::HalfClose,
            Scenario::Idle,
            Scenario::Silent,
            Scenario::TlsBulk(Direction::Up, 1),
            Scenario::TlsBulk(Direction::Down, 1),
            Scenario::TlsBulk(Direction::Up, 8),
            Scenario::TlsBulk(Direction::Down, 8),
            Scenario::TlsHandshakes,
            Scenario::TlsIdle,
            Scenario::Streams(Via::H2),
            Scenario::Streams(Via::H1),
        ];

        fn name(self) -> String {
            match self {
                Scenario::Bulk(dir, conns) => format!(
                    "bulk {} conn{} {}",
                    conns,
                    if conns == 1 { "" } else { "s" },
                    if dir == Direction::Up { "up" } else { "down" }
                ),
                Scenario::RoundTrip => "round trip".into(),
                Scenario::Handshakes => "handshakes".into(),
                Scenario::HalfClose => "half-close".into(),
                Scenario::Idle => "idle".into(),
                Scenario::Silent => "silent".into(),
                Scenario::TlsBulk(dir, conns) => {
                    format!("wss {}", Scenario::Bulk(dir, conns).name())
                }
                Scenario::TlsHandshakes => "wss handshakes".into(),
                Scenario::TlsIdle => "wss idle".into(),
                Scenario::Streams(Via::H2) => "h2 streams".into(),
                Scenario::Streams(Via::H1) => "h2 group, HTTP/1.1".into(),
            }
        }

        /// The name `--scenario` selects it by.
        fn group(self) -> &'static str {
            match self {
                Scenario::Bulk(..) => "bulk",
                Scenario::RoundTrip => "rtt",
                Scenario::Handshakes => "handshakes",
                Scenario::HalfClose => "halfclose",
                Scenario::Idle => "idle",
                Scenario::Silent => "silent",
                Scenario::TlsBulk(..) | Scenario::TlsHandshakes | Scenario::TlsIdle => "tls",
                Scenario::Streams(_) => "h2",
            }
        }

        /// How the proxies are set up for it.
        fn mode(self) -> Mode {
            match self {
                Scenario::TlsBulk(..) | Scenario::TlsHandshakes | Scenario::TlsIdle => Mode::Tls,
                Scenario::Streams(_) => Mode::H2,
                _ => Mode::Plain,
            }
        }

        /// Whether a column has anything to measure here: `direct` has no proxy process
        /// (nothing for the fresh-process scenarios) and no TLS (the backend is plain);
        /// copy_bidirectional relays bytes to a backend that speaks HTTP/1.1 only, so HTTP/2
        /// streams cannot go through it.
        fn applies(self, kind: Kind) -> bool {
            match kind {
                Kind::Direct => !on_fresh_process(self) && self.mode() == Mode::Plain,
                Kind::Baseline => self != Scenario::Streams(Via::H2),
                _ => true,
            }
        }

        /// The rows this scenario fills.
        fn rows(self) -> Vec<Row> {
            match self {
                Scenario::Bulk(dir, conns) => {
                    vec![Row::BulkMib(dir, conns), Row::BulkCpu(dir, conns)]
                }
                Scenario::RoundTrip => vec![Row::RttP50, Row::RttP99],
                Scenario::Handshakes => vec![Row::HandshakeRate, Row::HandshakeCpu],
                Scenario::HalfClose => vec![Row::HalfClose],
                Scenario::Idle => vec![Row::IdleRss, Row::IdleFds, Row::EchoRss, Row::EchoFds],
                Scenario::Silent => vec![Row::SilentRss, Row::SilentFds, Row::SilentOpen],
                Scenario::TlsBulk(dir, conns) => {
                    vec![Row::TlsBulkMib(dir, conns), Row::TlsBulkCpu(dir, conns)]
                }
                Scenario::TlsHandshakes => vec![Row::TlsHandshakeRate, Row::TlsHandshakeCpu],
                Scenario::TlsIdle => vec![Row::TlsIdleRss],
                Scenario::Streams(via) => vec![
                    Row::StreamsRss(via),
                    Row::StreamsEchoRss(via),
                    Row::StreamsCpu(via),
                    Row::StreamsMib(via),
                    Row::StreamsP50(via),
                    Row::StreamsP99(via),
                ],
            }
        }

        /// How many times it runs.
        fn runs(self, config: &Config) -> usize {
            match self {
                Scenario::RoundTrip => config.runs * config.rtt_slices.max(1),
                _ => config.runs,
            }
        }

        /// The time limit of one run.
        fn limit(self, config: &Config) -> Duration {
            match self {
                // Even at 50 MiB/s.
                Scenario::Bulk(..) => Duration::from_secs(30 + (config.bulk_bytes >> 20) / 50),
                Scenario::RoundTrip => Duration::from_secs(90),
                Scenario::Handshakes => Duration::from_secs(120),
                Scenario::HalfClose => Duration::from_secs(30),
                Scenario::Idle => Duration::from_secs(180),
                Scenario::Silent => Duration::from_secs(120),
                // Even at 20 MiB/s.
                Scenario::TlsBulk(..) => {
                    Duration::from_secs(30 + (config.tls_bulk_bytes >> 20) / 20)
                }
                Scenario::TlsHandshakes => Duration::from_secs(180),
                Scenario::TlsIdle => Duration::from_secs(180),
                Scenario::Streams(_) => Duration::from_secs(240),
            }
        }
    }

    /// Whether it measures a freshly started proxy process (and so has nothing to measure
    /// for `direct`): the RSS growth is then not hidden by memory kept from earlier
    /// scenarios.
    fn on_fresh_process(scenario: Scenario) -> bool {
        matches!(
            scenario,
            Scenario::Idle | Scenario::Silent | Scenario::TlsIdle | Scenario::Streams(_)
        )
    }

    /// One column while the bench runs.
    struct Subject {
        column: Column,
        running: Option<Running>,
        hangs: usize,
        /// Modes the proxy could not be started in, and why: their scenarios fail at once
        /// with that reason instead of trying again.
        mode_failed: Vec<(Mode, String)>,
    }

    fn bench(config: Config) -> Result<(), String> {
        let nofile = procs::raise_nofile_limit();
        let needed = config
            .idle_conns
            .max(config.silent_conns)
            .max(config.streams.tunnels) as u64
            * 2
            + 1_000;
        if nofile < needed {
            eprintln!(
                "warning: RLIMIT_NOFILE is {nofile}, the idle and silent scenarios need ~{needed}"
            );
        }
        let kinds: Vec<Kind> = Kind::ALL
            .into_iter()
            .filter(|k| config.only.is_empty() || config.only.contains(k) || *k == Kind::Direct)
            .collect();
        let target = target_dir();
        let self_exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let examples: Vec<&str> = kinds.iter().filter_map(|k| k.example()).collect();
        let built = if examples.is_empty() {
            Ok(Vec::new())
        } else {
            build_examples(&target, &examples)
        };
        let example_exe = |kind: Kind| -> Result<PathBuf, String> {
            let i = examples
                .iter()
                .position(|&e| Some(e) == kind.example())
                .ok_or("not selected")?;
            Ok(built.as_ref()?[i].clone())
        };

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        let load_start = loadavg();
        let started = Instant::now();

        let backend = procs::start_backend(&self_exe).map_err(|e| format!("backend: {e}"))?;
        // The throwaway CA and certificate of the `tls` group, kept until the end.
        let tls_files = crate::tls::make_files();
        let tls_client = tls_files
            .as_ref()
            .map_err(Clone::clone)
            .and_then(crate::tls::client);
        let env = Env {
            wsrelay_exe: example_exe(Kind::Wsrelay).unwrap_or_default(),
            axum_exe: example_exe(Kind::Axum).unwrap_or_default(),
            wrap: config.wrap.clone(),
            self_exe,
            backend: backend.addr,
            nofile,
            tls: tls_files
                .as_ref()
                .map_err(Clone::clone)
                .map(|f| procs::TlsPaths {
                    cert: f.cert.clone(),
                    key: f.key.clone(),
                    combined: f.combined.clone(),
                }),
        };
        eprintln!("raw backend on {}", env.backend);

        let mut subjects: Vec<Subject> = Vec::new();
        for kind in kinds {
            let mut column = Column::new(kind);
            let running = match (kind.example(), example_exe(kind)) {
                (Some(_), Err(e)) => {
                    column.status = Status::Failed(format!("build: {e}"));
                    None
                }
                _ if matches!(kind, Kind::Nginx | Kind::Haproxy | Kind::Caddy)
                    && kind.system_binary().is_none() =>
                {
                    column.status = Status::NotInstalled;
                    None
                }
                _ => match start_checked(&runtime, kind, &env, Mode::Plain, None) {
                    Ok(running) => {
                        let pid = running.meter().map(|m| m.pid().to_string());
                        eprintln!(
                            "{} on {} (pid {})",
                            kind.label(),
                            running.addr,
                            pid.unwrap_or_else(|| "-".into())
                        );
                        Some(running)
                    }
                    Err(e) => {
                        eprintln!("{}: {e}", kind.label());
                        column.status = Status::Failed(format!("start: {e}"));
                        None
                    }
                },
            };
            column.version = procs::peer_version(kind);
            subjects.push(Subject {
                column,
                running,
                hangs: 0,
                mode_failed: Vec::new(),
            });
        }

        for scenario in Scenario::ALL {
            if !config.scenarios.is_empty()
                && !config.scenarios.iter().any(|s| s == scenario.group())
            {
                continue;
            }
            let runs = scenario.runs(&config);
            for run in 0..runs {
                for subject in subjects.iter_mut() {
                    let tls = tls_client.as_ref().ok().copied();
                    run_one(&runtime, &config, &env, tls, scenario, (run, runs), subject);
                }
            }
        }
        // Stop every proxy, then the backend.
        for subject in subjects.iter_mut() {
            subject.running = None;
        }
        drop(backend);
        runtime.shutdown_timeout(Duration::from_secs(2));

        let ran = |group: &str| {
            config.scenarios.is_empty() || config.scenarios.iter().any(|s| s == group)
        };
        let mut group_notes = Vec::new();
        if ran("tls") {
            group_notes.push(tls_note(&config, tls_client.as_ref().err()));
        }
        if ran("h2") {
            group_notes.push(h2_note(&config));
        }
        drop(tls_files);
        let table = Table {
            columns: subjects.into_iter().map(|s| s.column).collect(),
            silent_conns: config.silent_conns,
            config_note: config_note(&config, nofile),
            group_notes,
            machine: machine_note(),
            load: format!(
                "load average {} at the start, {} at the end; {:.0} s in all",
                load_start,
                loadavg(),
                started.elapsed().as_secs_f64()
            ),
        };
        let markdown = table.render();
        println!("{markdown}");
        let out = target.join("bench-compare.md");
        std::fs::write(&out, &markdown).map_err(|e| format!("writing {}: {e}", out.display()))?;
        let svg = target.join("bench-compare.svg");
        let title = format!(
            "{} compare bench{}, {}: {}",
            env!("CARGO_PKG_NAME"),
            if config.quick { " (--quick)" } else { "" },
            crate::chart::today(),
            table.machine
        );
        let chart = crate::chart::write_svg(&table, &title, &svg);
        eprintln!("table written to {}", out.display());
        match chart {
            Ok(()) => eprintln!("chart written to {}", svg.display()),
            Err(e) => {
                // Not beside this table: a chart of an earlier run would pass for this one's.
                let _ = std::fs::remove_file(&svg);
                eprintln!("chart not written: {e}");
            }
        }
        Ok(())
    }

    /// Starts a proxy set up for `mode` and checks that one handshake (over TLS with a
    /// TLS client) goes through it.
    fn start_checked(
        runtime: &tokio::runtime::Runtime,
        kind: Kind,
        env: &Env,
        mode: Mode,
        tls: Option<&'static TlsClient>,
    ) -> Result<Running, String> {
        let mut running = procs::start(kind, env, mode)?;
        let to = Endpoint {
            addr: running.addr,
            path: kind.upgrade_path(),
            tls: if mode == Mode::Tls { tls } else { None },
        };
        let probe = runtime.block_on(async {
            let mut last = String::new();
            // Bounded: 20 tries over ~5 s.
            for _ in 0..20 {
                match client::one_handshake(to).await {
                    Ok(()) => return Ok(()),
                    Err(e) => last = e.to_string(),
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(last)
        });
        match probe {
            Ok(()) => Ok(running),
            Err(e) => {
                let alive = running.check_alive().err().unwrap_or_default();
                Err(format!("first handshake failed: {e} {alive}"))
            }
        }
    }

    /// Runs one scenario once against one subject and records the figures or the failure.
    fn run_one(
        runtime: &tokio::runtime::Runtime,
        config: &Config,
        env: &Env,
        tls: Option<&'static TlsClient>,
        scenario: Scenario,
        (run, runs): (usize, usize),
        subject: &mut Subject,
    ) {
        let kind = subject.column.kind;
        if subject.column.status != Status::Ok {
            return;
        }
        // After a failure, the remaining runs of that scenario are skipped.
        if scenario
            .rows()
            .iter()
            .any(|r| subject.column.errors.contains_key(r))
        {
            return;
        }
        if !scenario.applies(kind) {
            return;
        }
        let mode = scenario.mode();
        if let Some((_, e)) = subject.mode_failed.iter().find(|(m, _)| *m == mode) {
            subject.column.fail(scenario.rows(), e.clone());
            return;
        }
        if mode == Mode::Tls && tls.is_none() {
            subject
                .column
                .fail(scenario.rows(), "no TLS client (see the notes)".into());
            return;
        }
        let other_mode = subject.running.as_ref().map(|r| r.mode) != Some(mode);
        if on_fresh_process(scenario) || other_mode {
            subject.running = None;
            match start_checked(runtime, kind, env, mode, tls) {
                Ok(running) => subject.running = Some(running),
                Err(e) => {
                    let e = format!("start for the {} group: {e}", scenario.group());
                    eprintln!(
                        "{:<22} {:<20} run {}/{}: FAILED: {e}",
                        scenario.name(),
                        kind.label(),
                        run + 1,
                        runs
                    );
                    // A mode the proxy cannot be set up in fails every scenario of it;
                    // a plain restart that failed, only this one.
                    if mode != Mode::Plain {
                        subject.mode_failed.push((mode, e.clone()));
                    }
                    subject.column.fail(scenario.rows(), e);
                    return;
                }
            }
        }
        let Some(running) = subject.running.as_mut() else {
            return;
        };
        if let Err(e) = running.check_alive() {
            subject.column.status = Status::Failed(format!("before {}: {e}", scenario.name()));
            return;
        }
        let to = Endpoint {
            addr: running.addr,
            path: kind.upgrade_path(),
            tls: if mode == Mode::Tls { tls } else { None },
        };
        let h2_addr = running.h2_addr;
        let meter = running.meter();
        let limit = scenario.limit(config);
        // What the progress line says besides the figures.
        let mut aside = String::new();
        let result: Result<Vec<(Row, f64)>, String> = match scenario {
            Scenario::Bulk(dir, conns) => bounded(
                runtime,
                limit,
                client::bulk(to, dir, conns, config.bulk_bytes, meter),
            )
            .map(|b| {
                let mut v = vec![(Row::BulkMib(dir, conns), b.mib_per_s)];
                v.extend(b.cpu_s_per_gib.map(|c| (Row::BulkCpu(dir, conns), c)));
                v
            }),
            Scenario::RoundTrip => bounded(
                runtime,
                limit,
                client::round_trip(
                    to,
                    config.rtt_warmup / config.rtt_slices.max(1),
                    config.rtt_count / config.rtt_slices.max(1),
                ),
            )
            .map(|r| vec![(Row::RttP50, r.p50_us), (Row::RttP99, r.p99_us)]),
            Scenario::Handshakes => bounded(
                runtime,
                limit,
                client::handshakes(to, config.handshake_workers, config.handshakes, meter),
            )
            .map(|h| {
                let mut v = vec![(Row::HandshakeRate, h.per_s)];
                v.extend(h.cpu_us.map(|c| (Row::HandshakeCpu, c)));
                v
            }),
            Scenario::HalfClose => bounded(runtime, limit, client::half_close(to))
                .map(|pass| vec![(Row::HalfClose, if pass { 1.0 } else { 0.0 })]),
            Scenario::Idle => match meter {
                Some(meter) => bounded(runtime, limit, client::idle(to, config.idle_conns, meter))
                    .map(|idle| {
                        vec![
                            (Row::IdleRss, idle.rss_kib),
                            (Row::IdleFds, idle.fds),
                            (Row::EchoRss, idle.echo_rss_kib),
                            (Row::EchoFds, idle.echo_fds),
                        ]
                    }),
                None => Ok(Vec::new()),
            },
            Scenario::Silent => match meter {
                Some(meter) => bounded(
                    runtime,
                    limit,
                    client::silent(to, config.silent_conns, meter),
                )
                .map(|silent| {
                    aside = format!(
                        " (measured {:.1} s after the first connect)",
                        silent.measured_after.as_secs_f64()
                    );
                    vec![
                        (Row::SilentRss, silent.rss_kib),
                        (Row::SilentFds, silent.fds),
                        (Row::SilentOpen, silent.open as f64),
                    ]
                }),
                None => Ok(Vec::new()),
            },
            Scenario::TlsBulk(dir, conns) => bounded(
                runtime,
                limit,
                client::bulk(to, dir, conns, config.tls_bulk_bytes, meter),
            )
            .map(|b| {
                let mut v = vec![(Row::TlsBulkMib(dir, conns), b.mib_per_s)];
                v.extend(b.cpu_s_per_gib.map(|c| (Row::TlsBulkCpu(dir, conns), c)));
                v
            }),
            Scenario::TlsHandshakes => bounded(
                runtime,
                limit,
                client::handshakes(to, config.handshake_workers, config.tls_handshakes, meter),
            )
            .map(|h| {
                let mut v = vec![(Row::TlsHandshakeRate, h.per_s)];
                v.extend(h.cpu_us.map(|c| (Row::TlsHandshakeCpu, c)));
                v
            }),
            Scenario::TlsIdle => match meter {
                Some(meter) => bounded(
                    runtime,
                    limit,
                    client::idle(to, config.tls_idle_conns, meter),
                )
                .map(|idle| vec![(Row::TlsIdleRss, idle.rss_kib)]),
                None => Ok(Vec::new()),
            },
            Scenario::Streams(via) => match meter {
                Some(meter) => bounded(
                    runtime,
                    limit,
                    streams::streams(to, h2_addr, via, config.streams, meter),
                )
                .map(|s| {
                    vec![
                        (Row::StreamsRss(via), s.rss_kib),
                        (Row::StreamsEchoRss(via), s.echo_rss_kib),
                        (Row::StreamsCpu(via), s.cpu_ms_per_mib),
                        (Row::StreamsMib(via), s.mib_per_s),
                        (Row::StreamsP50(via), s.p50_us),
                        (Row::StreamsP99(via), s.p99_us),
                    ]
                }),
                None => Ok(Vec::new()),
            },
        };
        let label = kind.label();
        match result {
            Ok(figures) => {
                let shown: Vec<String> = figures
                    .iter()
                    .map(|(row, value)| format!("{} {}", row.format_value(*value), row.unit()))
                    .collect();
                eprintln!(
                    "{:<22} {:<20} run {}/{}: {}{aside}",
                    scenario.name(),
                    label,
                    run + 1,
                    runs,
                    shown.join(", ")
                );
                for (row, value) in figures {
                    subject.column.samples.entry(row).or_default().push(value);
                }
            }
            Err(e) => {
                let e = match running.check_alive() {
                    Err(dead) => {
                        subject.column.status =
                            Status::Failed(format!("died during {}: {dead}", scenario.name()));
                        dead
                    }
                    // A protocol the proxy does not speak is a verdict, not a failure
                    // its log would explain.
                    Ok(()) if streams::is_verdict(&e) => e,
                    Ok(()) => format!("{e}{}", running.log_tail()),
                };
                if e.contains("time limit") {
                    subject.hangs += 1;
                    if subject.hangs >= 2 {
                        subject.column.status =
                            Status::Failed(format!("hung twice, last in {}", scenario.name()));
                    }
                }
                eprintln!(
                    "{:<22} {:<20} run {}/{}: FAILED: {e}",
                    scenario.name(),
                    label,
                    run + 1,
                    runs
                );
                subject.column.fail(scenario.rows(), e);
            }
        }
    }

    /// Runs `fut` on the runtime within `limit`.
    fn bounded<T>(
        runtime: &tokio::runtime::Runtime,
        limit: Duration,
        fut: impl Future<Output = Result<T, String>>,
    ) -> Result<T, String> {
        runtime.block_on(async {
            match tokio::time::timeout(limit, fut).await {
                Ok(result) => result,
                Err(_) => Err(format!("time limit of {} s reached", limit.as_secs())),
            }
        })
    }

    /// The load average and, where the kernel has PSI, the share of time some task waited
    /// for a CPU over the last minute: other work on the machine inflates every figure.
    fn loadavg() -> String {
        let load = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|| "?".into());
        let pressure = std::fs::read_to_string("/proc/pressure/cpu")
            .ok()
            .and_then(|p| {
                p.lines()
                    .find(|l| l.starts_with("some"))
                    .and_then(|l| l.split_whitespace().find_map(|f| f.strip_prefix("avg60=")))
                    .map(|v| format!(" (CPU pressure {v}%)"))
            })
            .unwrap_or_default();
        format!("{load}{pressure}")
    }

    fn machine_note() -> String {
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        let model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .map(|l| l.trim_start_matches([' ', '\t', ':']).trim().to_string())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|k| k.trim().to_string())
            .unwrap_or_default();
        format!("{cpus} CPUs ({model}), Linux {kernel}")
    }

    /// The table note of the `tls` group.
    fn tls_note(config: &Config, failed: Option<&String>) -> String {
        let failed = failed.map_or(String::new(), |e| format!(" The TLS setup failed: {e}."));
        format!(
            "wss (`--scenario tls`): every proxy terminates TLS with the same throwaway \
             certificate, made by the bench at start (rcgen): {setup}. nginx `listen … ssl` \
             with `ssl_protocols TLSv1.3`, `ssl_conf_command Ciphersuites \
             TLS_AES_128_GCM_SHA256`, `ssl_ecdh_curve X25519`; HAProxy `bind … ssl crt … alpn \
             http/1.1 ssl-min-ver TLSv1.3 ciphersuites TLS_AES_128_GCM_SHA256 curves X25519`; \
             Caddy `tls CERT KEY {{ protocols tls1.3 tls1.3; curves x25519; alpn http/1.1 }}` \
             (`protocols h1 h2`: no HTTP/3); wsrelay and axum `--tls-cert CERT --tls-key KEY` \
             (PEM, the key PKCS#8); copy_bidirectional a tokio-rustls acceptor (ring) in \
             front of the same relay. The client is rustls on the ring provider, offering \
             only that suite and group, with resumption disabled: every TLS upgrade is a \
             full handshake (servers keep their default session tickets or cache, which the \
             client ignores). The backend stays plain TCP; `direct` has no TLS figures. \
             Bulk: {bulk} MiB per run and direction; handshakes: {hs} by {workers} \
             concurrent workers (connect, TLS handshake, upgrade, one 16-byte echo, \
             close_notify and close); idle: {idle} wss connections held on a freshly \
             started proxy.{failed}",
            setup = crate::tls::SETUP,
            bulk = config.tls_bulk_bytes >> 20,
            hs = config.tls_handshakes,
            workers = config.handshake_workers,
            idle = config.tls_idle_conns,
        )
    }

    /// The table note of the `h2` group.
    fn h2_note(config: &Config) -> String {
        let shape = config.streams;
        format!(
            "HTTP/2 (`--scenario h2`): {tunnels} WebSocket tunnels held at once through one \
             proxy, to the backend's echo. HTTP/2 streams: h2c with prior knowledge on \
             {conns} connections (the `h2` crate as client; windows 256 KiB per stream, \
             16 MiB per connection), each stream an extended CONNECT (RFC 8441: \
             `:protocol websocket`, `sec-websocket-version: 13`, the column's path with \
             `?op=echo`) that the proxy turns into an HTTP/1.1 upgrade to the backend. \
             HTTP/1.1 upgrades: {tunnels} upgraded connections through the same proxy and \
             config. Proxies set up for both: HAProxy `bind … proto h2` beside its plain \
             `bind` (HTTP/2 to HTTP/1.1 translation); nginx `listen … http2` beside its plain \
             `listen` (nginx has no RFC 8441); Caddy `servers {{ protocols h1 h2 h2c }}`; the \
             axum example on its one port (as issue 12 has it); wsrelay's proxy example gets \
             HTTP/2 on its one port too. A proxy whose SETTINGS do not enable extended \
             CONNECT within 2 s fails the HTTP/2 rows with that reason; copy_bidirectional \
             has no HTTP/2 row (its backend speaks HTTP/1.1 only). Each path on a freshly \
             started proxy, after a warm-up of a few tunnels: RSS before and 1 s after \
             opening all of them, and again after the echo (growth from the start); round \
             trip: {rounds} round{s} of one 64-byte message on each tunnel in turn, all held; \
             echo: every tunnel at once echoes {msgs} message{ms} of 16 KiB one at a time, \
             CPU per MiB the client sent (each byte crosses the proxy twice).",
            tunnels = shape.tunnels,
            conns = shape.h2_conns,
            rounds = shape.rtt_rounds,
            s = if shape.rtt_rounds == 1 { "" } else { "s" },
            msgs = shape.echo_messages,
            ms = if shape.echo_messages == 1 { "" } else { "s" },
        )
    }

    fn config_note(config: &Config, nofile: u64) -> String {
        let ran = |group: &str| {
            config.scenarios.is_empty() || config.scenarios.iter().any(|s| s == group)
        };
        let mut parts = vec![format!(
            "{mode}; median of {runs} run{s} per figure.",
            mode = if config.quick {
                "Quick mode (--quick)"
            } else {
                "Full mode"
            },
            runs = config.runs,
            s = if config.runs == 1 { "" } else { "s" },
        )];
        if ran("bulk") {
            parts.push(format!(
                "Bulk: {} MiB per run and direction (split evenly over the 8 connections).",
                config.bulk_bytes >> 20
            ));
        }
        if ran("rtt") {
            parts.push(format!(
                "Round trip: {} runs of {} round trips, each after {} unmeasured.",
                config.runs * config.rtt_slices.max(1),
                config.rtt_count / config.rtt_slices.max(1),
                config.rtt_warmup / config.rtt_slices.max(1),
            ));
        }
        if ran("handshakes") {
            parts.push(format!(
                "Handshakes: {} by {} concurrent workers.",
                config.handshakes, config.handshake_workers
            ));
        }
        if ran("idle") {
            parts.push(format!("Idle: {} connections.", config.idle_conns));
        }
        if ran("silent") {
            parts.push(format!("Silent: {} connections.", config.silent_conns));
        }
        parts.push(format!("RLIMIT_NOFILE {nofile}, inherited by every proxy."));
        parts.join(" ")
    }
}
