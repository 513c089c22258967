//! The proxies under test as child processes: starting them with their configs in a temp
//! dir, stopping them by PID (also on panics), and measuring their CPU time and RSS from
//! `/proc`.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a proxy may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a proxy may take to exit after SIGTERM before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// The columns of the table, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No proxy: the client talks to the backend.
    Direct,
    /// `examples/proxy.rs`, release build.
    Wsrelay,
    /// `examples/axum.rs`, release build: the proxy as an axum handler at `/ws`.
    Axum,
    /// A raw TCP relay with `tokio::io::copy_bidirectional` (this binary, re-executed).
    Baseline,
    Nginx,
    Haproxy,
    Caddy,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Direct,
        Kind::Wsrelay,
        Kind::Axum,
        Kind::Baseline,
        Kind::Nginx,
        Kind::Haproxy,
        Kind::Caddy,
    ];

    /// The column heading.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Wsrelay => "wsrelay",
            Kind::Axum => "axum",
            Kind::Baseline => "copy_bidirectional",
            Kind::Nginx => "nginx",
            Kind::Haproxy => "HAProxy",
            Kind::Caddy => "Caddy",
        }
    }

    /// Parses a `--only` argument.
    pub fn parse(name: &str) -> Option<Kind> {
        Some(match name.to_ascii_lowercase().as_str() {
            "direct" => Kind::Direct,
            "wsrelay" | "proxy" => Kind::Wsrelay,
            "axum" => Kind::Axum,
            "copy_bidirectional" | "baseline" | "copy" => Kind::Baseline,
            "nginx" => Kind::Nginx,
            "haproxy" => Kind::Haproxy,
            "caddy" => Kind::Caddy,
            _ => return None,
        })
    }

    /// The path this proxy upgrades at. The client puts what it wants from the backend in
    /// the query (`?op=echo`), which every proxy here forwards as it is.
    pub fn upgrade_path(self) -> &'static str {
        match self {
            Kind::Axum => "/ws",
            _ => "/",
        }
    }

    /// The example a column runs, if it is one of the crate's (`cargo build --example`).
    pub fn example(self) -> Option<&'static str> {
        match self {
            Kind::Wsrelay => Some("proxy"),
            Kind::Axum => Some("axum"),
            _ => None,
        }
    }

    /// The executable of a system peer, looked up in `PATH` and the sbin directories.
    pub fn system_binary(self) -> Option<PathBuf> {
        let name = match self {
            Kind::Nginx => "nginx",
            Kind::Haproxy => "haproxy",
            Kind::Caddy => "caddy",
            _ => return None,
        };
        let path = std::env::var("PATH").unwrap_or_default();
        let found = path
            .split(':')
            .chain(["/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin"])
            .filter(|dir| !dir.is_empty())
            .map(|dir| Path::new(dir).join(name))
            .find(|candidate| candidate.is_file());
        found
    }
}

/// How a proxy is set up for a scenario group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plain TCP, HTTP/1.1 upgrades: every group but `tls` and `h2`.
    Plain,
    /// TLS terminated by the proxy (wss); the backend stays plain.
    Tls,
    /// HTTP/1.1 and h2c with prior knowledge (RFC 8441 extended CONNECT), on one port or,
    /// where the proxy needs it (nginx, HAProxy), on two.
    H2,
}

/// The certificate files every TLS-terminating proxy is given (see `tls.rs`).
#[derive(Debug, Clone)]
pub struct TlsPaths {
    /// Certificate chain, PEM.
    pub cert: PathBuf,
    /// Private key, PKCS#8 PEM.
    pub key: PathBuf,
    /// Both in one file, for HAProxy's `crt`.
    pub combined: PathBuf,
}

/// What an error of a crate example that does not know a flag yet looks like, turned into
/// the cell's note.
const NOT_SUPPORTED: &str = "not supported by this build";

/// Where to find what the proxies need.
#[derive(Debug, Clone)]
pub struct Env {
    /// `target/release/examples/proxy`.
    pub wsrelay_exe: PathBuf,
    /// `target/release/examples/axum`.
    pub axum_exe: PathBuf,
    /// A command the crate's examples (wsrelay, axum) are run under (`--wrap`), e.g.
    /// `perf record -g --`.
    pub wrap: Vec<String>,
    /// This bench binary, re-executed for the baseline proxy and the backend.
    pub self_exe: PathBuf,
    /// The raw backend.
    pub backend: SocketAddr,
    /// RLIMIT_NOFILE of the bench, inherited by every proxy.
    pub nofile: u64,
    /// The certificate for the `tls` group, or why there is none.
    pub tls: Result<TlsPaths, String>,
}

/// A child process killed by PID when dropped: SIGTERM, then SIGKILL for it and every
/// descendant still alive after [`STOP_TIMEOUT`].
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    name: String,
}

impl ChildGuard {
    /// Spawns `cmd` with a parent-death signal, so that it does not outlive the bench even if
    /// the bench is killed.
    pub fn spawn(name: &str, mut cmd: Command) -> io::Result<ChildGuard> {
        // SAFETY: the closure runs in the forked child before exec and only calls prctl(2),
        // which is async-signal-safe; it touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        Ok(ChildGuard {
            child,
            name: name.to_string(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Takes the child's stdout, if it was piped.
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    fn signal(pid: u32, signal: libc::c_int) {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return;
        };
        // SAFETY: kill(2) with a PID we spawned (or found as its descendant) and a valid
        // signal number; no memory is involved.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let pid = self.pid();
        let family = descendants(pid);
        Self::signal(pid, libc::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.exited().is_none() {
            eprintln!("  {}: no exit after SIGTERM, sending SIGKILL", self.name);
            Self::signal(pid, libc::SIGKILL);
            let _ = self.child.wait();
        }
        // Workers (nginx) that outlived their master.
        for worker in family {
            if is_alive(worker) {
                Self::signal(worker, libc::SIGKILL);
            }
        }
    }
}

/// A temp dir for a proxy's config and logs, removed when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> io::Result<TempDir> {
        let dir = std::env::temp_dir().join(format!(
            "wsrelay-bench-{}-{}-{tag}",
            std::process::id(),
            next_serial()
        ));
        fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn next_serial() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SERIAL: AtomicU32 = AtomicU32::new(0);
    SERIAL.fetch_add(1, Ordering::Relaxed)
}

/// A free port on 127.0.0.1, from binding port 0 (released again at once).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running proxy under test.
#[derive(Debug)]
pub struct Running {
    /// Where it takes HTTP/1.1 upgrades (over TLS in [`Mode::Tls`]).
    pub addr: SocketAddr,
    /// Where it takes h2c with prior knowledge in [`Mode::H2`]: `addr` unless the proxy
    /// needs a listener of its own for it.
    pub h2_addr: SocketAddr,
    pub mode: Mode,
    /// `None` for `direct`.
    pub process: Option<ChildGuard>,
    /// Kept for its `Drop`; holds the config and logs.
    pub dir: Option<TempDir>,
}

impl Running {
    /// What is measured: the process and its descendants.
    pub fn meter(&self) -> Option<Meter> {
        self.process.as_ref().map(|p| Meter { root: p.pid() })
    }

    /// `Err` with the exit status once the proxy (or, for nginx, every worker) is gone.
    pub fn check_alive(&mut self) -> Result<(), String> {
        let Some(process) = self.process.as_mut() else {
            return Ok(());
        };
        if let Some(status) = process.exited() {
            return Err(format!("proxy exited ({status}){}", self.log_tail()));
        }
        Ok(())
    }

    /// The last lines of the proxy's stderr log, for an error message.
    pub fn log_tail(&self) -> String {
        let Some(dir) = &self.dir else {
            return String::new();
        };
        let mut text = String::new();
        for name in ["stderr.log", "stdout.log", "error.log"] {
            if let Ok(content) = fs::read_to_string(dir.path().join(name)) {
                let lines: Vec<&str> = content.lines().rev().take(3).collect();
                for line in lines.into_iter().rev() {
                    let _ = write!(text, "; {}", line.chars().take(200).collect::<String>());
                }
            }
        }
        text
    }
}

/// Starts the proxy of `kind` in front of `env.backend`, set up for `mode`.
pub fn start(kind: Kind, env: &Env, mode: Mode) -> Result<Running, String> {
    let tls = match mode {
        Mode::Tls => Some(
            env.tls
                .as_ref()
                .map_err(|e| format!("no certificate: {e}"))?,
        ),
        _ => None,
    };
    let mut running = match kind {
        Kind::Direct if mode == Mode::Plain => Ok(Running {
            addr: env.backend,
            h2_addr: env.backend,
            mode,
            process: None,
            dir: None,
        }),
        Kind::Direct => Err("no proxy: plain TCP to the backend only".into()),
        Kind::Wsrelay | Kind::Axum => {
            let (exe, name, extra) = match kind {
                Kind::Wsrelay => (&env.wsrelay_exe, "wsrelay", "COMPARE_WSRELAY_ARGS"),
                _ => (&env.axum_exe, "axum", "COMPARE_AXUM_ARGS"),
            };
            let dir = TempDir::new(name).map_err(|e| e.to_string())?;
            let mut cmd = match env.wrap.split_first() {
                Some((wrapper, args)) => {
                    let mut cmd = Command::new(wrapper);
                    cmd.args(args).arg(exe);
                    cmd
                }
                None => Command::new(exe),
            };
            cmd.args(["--listen", "127.0.0.1:0", "--backend"])
                .arg(env.backend.to_string());
            // The contract of issue 11: the examples terminate TLS with PEM files.
            if let Some(tls) = tls {
                cmd.arg("--tls-cert")
                    .arg(&tls.cert)
                    .arg("--tls-key")
                    .arg(&tls.key);
            }
            // Extra options for the example, e.g. `--threads 1` (for experiments).
            if let Ok(extra) = std::env::var(extra) {
                cmd.args(extra.split_whitespace());
            }
            start_announcing(name, cmd, dir).map_err(|e| {
                // An example built before it had the flags refuses them and exits.
                match e.split("; ").find(|part| part.contains("unknown argument")) {
                    Some(refusal) if tls.is_some() => format!(
                        "{NOT_SUPPORTED}: the {name} example does not take \
                         --tls-cert/--tls-key (it says: {refusal})"
                    ),
                    _ => e,
                }
            })
        }
        Kind::Baseline => {
            let dir = TempDir::new("baseline").map_err(|e| e.to_string())?;
            let mut cmd = Command::new(&env.self_exe);
            cmd.args(["--baseline-proxy", "127.0.0.1:0"])
                .arg(env.backend.to_string());
            if let Some(tls) = tls {
                cmd.arg(&tls.cert).arg(&tls.key);
            }
            start_announcing("copy_bidirectional", cmd, dir)
        }
        Kind::Nginx | Kind::Haproxy | Kind::Caddy => {
            let exe = kind
                .system_binary()
                .ok_or_else(|| "not installed".to_string())?;
            let dir = TempDir::new(kind.label()).map_err(|e| e.to_string())?;
            let port = free_port().map_err(|e| e.to_string())?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            // nginx and HAProxy take h2c with prior knowledge on a listener of its own.
            let h2_addr = match (mode, kind) {
                (Mode::H2, Kind::Nginx | Kind::Haproxy) => {
                    let port = free_port().map_err(|e| e.to_string())?;
                    SocketAddr::from(([127, 0, 0, 1], port))
                }
                _ => addr,
            };
            let listen = Listen {
                addr,
                h2_addr,
                mode,
                tls,
            };
            let cmd = peer_command(kind, &exe, dir.path(), &listen, env)
                .map_err(|e| format!("writing the config: {e}"))?;
            start_polling(kind.label(), cmd, dir, &[addr, h2_addr])
        }
    }?;
    running.mode = mode;
    if running.h2_addr.port() == 0 {
        running.h2_addr = running.addr;
    }
    Ok(running)
}

/// Where and how a system peer listens.
struct Listen<'a> {
    addr: SocketAddr,
    h2_addr: SocketAddr,
    mode: Mode,
    tls: Option<&'a TlsPaths>,
}

/// Runs a child that prints `listening on ADDR` on stdout when ready.
fn start_announcing(name: &str, mut cmd: Command, dir: TempDir) -> Result<Running, String> {
    let stderr = fs::File::create(dir.path().join("stderr.log")).map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    let mut process = ChildGuard::spawn(name, cmd).map_err(|e| format!("cannot start: {e}"))?;
    let stdout = process.take_stdout().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    // Reads the announcement, then keeps copying stdout (log lines) to `stdout.log` until
    // the child exits, keeping at most 1 MiB.
    let mut log = fs::File::create(dir.path().join("stdout.log")).map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        use std::io::Write as _;
        let mut lines = BufReader::new(stdout).lines();
        let mut tx = Some(tx);
        let mut logged = 0usize;
        while let Some(Ok(line)) = lines.next() {
            if let Some(addr) = line.trim().strip_prefix("listening on ") {
                // `ADDR`, or a URL of it (`https://ADDR/`).
                let addr = addr.trim();
                let addr = addr.split_once("://").map_or(addr, |(_, rest)| rest);
                let addr = addr.trim_end_matches('/');
                if let Some(tx) = tx.take() {
                    let _ = tx.send(addr.to_string());
                }
            } else if logged < 1 << 20 {
                logged += line.len() + 1;
                let _ = writeln!(log, "{line}");
            }
        }
    });
    let mut running = Running {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        h2_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        mode: Mode::Plain,
        process: Some(process),
        dir: Some(dir),
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(addr) => {
                running.addr = addr
                    .parse()
                    .map_err(|e| format!("bad listening address {addr:?}: {e}"))?;
                return Ok(running);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                running.check_alive()?;
                if Instant::now() >= deadline {
                    return Err(format!("not listening after {START_TIMEOUT:?}"));
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(50));
                running.check_alive()?;
                return Err("closed stdout without announcing its address".into());
            }
        }
    }
}

/// Runs a child and waits until each of `addrs` (the first is the main one) accepts
/// connections.
fn start_polling(
    name: &str,
    mut cmd: Command,
    dir: TempDir,
    addrs: &[SocketAddr],
) -> Result<Running, String> {
    let stderr = fs::File::create(dir.path().join("stderr.log")).map_err(|e| e.to_string())?;
    let stdout = fs::File::create(dir.path().join("stdout.log")).map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
    let process = ChildGuard::spawn(name, cmd).map_err(|e| format!("cannot start: {e}"))?;
    let addr = addrs[0];
    let mut running = Running {
        addr,
        h2_addr: *addrs.last().unwrap_or(&addr),
        mode: Mode::Plain,
        process: Some(process),
        dir: Some(dir),
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        running.check_alive()?;
        let accepting =
            |a: &SocketAddr| TcpStream::connect_timeout(a, Duration::from_millis(200)).is_ok();
        if addrs.iter().all(accepting) {
            return Ok(running);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "not accepting on {addr} after {START_TIMEOUT:?}{}",
                running.log_tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes the config a typical user writes for `kind` in `listen.mode` and returns the
/// command that runs it in the foreground.
///
/// TLS ([`Mode::Tls`]): each peer terminates TLS with the bench's certificate, held to the
/// one setup of the comparison (`tls.rs`): TLS 1.3 only, `TLS_AES_128_GCM_SHA256`, X25519,
/// ALPN `http/1.1`; session handling as the peer has it by default (the client never
/// resumes). HTTP/2 ([`Mode::H2`]): HTTP/1.1 as in [`Mode::Plain`] plus h2c with prior
/// knowledge, where the peer has it.
fn peer_command(
    kind: Kind,
    exe: &Path,
    dir: &Path,
    listen: &Listen<'_>,
    env: &Env,
) -> io::Result<Command> {
    let d = dir.display();
    let backend = env.backend;
    let addr = listen.addr;
    let h2_addr = listen.h2_addr;
    let tls = || {
        listen
            .tls
            .ok_or_else(|| io::Error::other("TLS mode without certificate files"))
    };
    // Room for 5,000 held connections (two sockets each) and then some; nginx's
    // `worker_connections` and HAProxy's `maxconn` also cover the silent scenario's 3,000
    // connections that send nothing (one socket each, held by one nginx worker at worst).
    let nofile = env.nofile.max(1024);
    let maxconn = (nofile.saturating_sub(100) / 2).min(20_000);
    let mut cmd = Command::new(exe);
    match kind {
        Kind::Nginx => {
            // Debian's nginx.conf (worker_processes auto, www-data) with the WebSocket
            // location from nginx's own documentation. Access logging is off so that the
            // comparison is about proxying; fd limits are raised for the idle scenario.
            let user = if is_root() { "user www-data;\n" } else { "" };
            let listens = match listen.mode {
                Mode::Plain => format!("listen {addr};"),
                Mode::Tls => {
                    let tls = tls()?;
                    format!(
                        "listen {addr} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.3;
        ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;
        ssl_ecdh_curve X25519;",
                        cert = tls.cert.display(),
                        key = tls.key.display()
                    )
                }
                // h2c with prior knowledge needs a port of its own (`http2` on a plain
                // listener); nginx has no RFC 8441, which the h2 rows then show.
                Mode::H2 => format!("listen {addr};\n        listen {h2_addr} http2;"),
            };
            let conf = format!(
                "{user}worker_processes auto;
worker_rlimit_nofile {nofile};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections 16384;
}}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    server {{
        {listens}
        location / {{
            proxy_pass http://{backend};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_read_timeout 3600s;
        }}
    }}
}}
"
            );
            let path = dir.join("nginx.conf");
            fs::write(&path, conf)?;
            cmd.arg("-p")
                .arg(dir)
                .arg("-c")
                .arg(&path)
                .arg("-e")
                .arg(dir.join("error.log"))
                .args(["-g", "daemon off;"]);
        }
        Kind::Haproxy => {
            // The usual HTTP-mode config, with `timeout tunnel` for WebSockets.
            let binds = match listen.mode {
                Mode::Plain => format!("bind {addr}"),
                Mode::Tls => format!(
                    "bind {addr} ssl crt {crt} alpn http/1.1 ssl-min-ver TLSv1.3 \
                     ciphersuites TLS_AES_128_GCM_SHA256 curves X25519",
                    crt = tls()?.combined.display()
                ),
                // HTTP/2 to HTTP/1.1 translation, RFC 8441 included (HAProxy 2.4+), on
                // an h2c listener beside the HTTP/1.1 one.
                Mode::H2 => format!("bind {addr}\n    bind {h2_addr} proto h2"),
            };
            let conf = format!(
                "global
    maxconn {maxconn}
defaults
    mode http
    maxconn {maxconn}
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout tunnel 3600s
frontend ws
    {binds}
    default_backend app
backend app
    server app1 {backend}
"
            );
            let path = dir.join("haproxy.cfg");
            fs::write(&path, conf)?;
            cmd.arg("-f").arg(&path).arg("-db");
        }
        Kind::Caddy => {
            // `reverse_proxy` proxies WebSockets as they are; no admin endpoint, no
            // automatic certificates or redirects. With TLS, the certificate files are given
            // (`tls CERT KEY`) and HTTP/3 is left out (`protocols h1 h2`): no UDP listener.
            let ip = addr.ip();
            let port = addr.port();
            let (protocols, site) = match listen.mode {
                Mode::Plain => (
                    String::new(),
                    format!(
                        "http://{addr} {{
    bind {ip}
    reverse_proxy {backend}
}}"
                    ),
                ),
                Mode::Tls => {
                    let tls = tls()?;
                    (
                        "    servers {\n        protocols h1 h2\n    }\n".to_string(),
                        format!(
                            "https://:{port} {{
    bind {ip}
    tls {cert} {key} {{
        protocols tls1.3 tls1.3
        curves x25519
        alpn http/1.1
    }}
    reverse_proxy {backend}
}}",
                            cert = tls.cert.display(),
                            key = tls.key.display()
                        ),
                    )
                }
                Mode::H2 => (
                    "    servers {\n        protocols h1 h2 h2c\n    }\n".to_string(),
                    format!(
                        "http://{addr} {{
    bind {ip}
    reverse_proxy {backend}
}}"
                    ),
                ),
            };
            let conf = format!(
                "{{
    admin off
    auto_https off
{protocols}}}
{site}
"
            );
            let path = dir.join("Caddyfile");
            fs::write(&path, conf)?;
            cmd.arg("run")
                .arg("--config")
                .arg(&path)
                .args(["--adapter", "caddyfile"])
                .env("HOME", dir)
                .env("XDG_DATA_HOME", dir.join("data"))
                .env("XDG_CONFIG_HOME", dir.join("config"));
        }
        _ => unreachable!("not a system peer"),
    }
    Ok(cmd)
}

/// The version line of a system peer, e.g. `nginx/1.22.1`.
pub fn peer_version(kind: Kind) -> Option<String> {
    let exe = kind.system_binary()?;
    let arg = match kind {
        Kind::Caddy => "version",
        _ => "-v",
    };
    let mut cmd = Command::new(exe);
    cmd.arg(arg);
    let text = output_within(cmd, Duration::from_secs(5))?;
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())?
        .trim()
        .to_string();
    Some(match kind {
        Kind::Nginx => line.trim_start_matches("nginx version: ").to_string(),
        Kind::Haproxy => line
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
            .replace("HAProxy version", "HAProxy"),
        _ => format!("Caddy {}", line.split_whitespace().next().unwrap_or("")),
    })
}

/// Runs `cmd` and returns its stdout and stderr, or `None` if it fails or takes longer than
/// `limit` (it is then killed).
pub fn output_within(mut cmd: Command, limit: Duration) -> Option<String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().ok()?;
    let mut out = child.stdout.take()?;
    let mut err = child.stderr.take()?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        let _ = err.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    reader.join().ok()
}

pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Measures a process tree from `/proc`.
#[derive(Debug, Clone, Copy)]
pub struct Meter {
    root: u32,
}

impl Meter {
    /// The measured process.
    pub fn pid(&self) -> u32 {
        self.root
    }

    /// The root and its descendants (nginx's workers).
    fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.root];
        pids.extend(descendants(self.root));
        pids
    }

    /// utime + stime of the tree.
    pub fn cpu(&self) -> Result<Duration, String> {
        let ticks_per_sec = clock_ticks();
        let mut ticks = 0u64;
        for pid in self.pids() {
            let stat = read_stat(pid).map_err(|e| format!("reading /proc/{pid}/stat: {e}"))?;
            ticks += stat.utime + stat.stime;
        }
        Ok(Duration::from_secs_f64(ticks as f64 / ticks_per_sec))
    }

    /// Open file descriptors of the tree.
    pub fn fds(&self) -> Result<u64, String> {
        let mut total = 0;
        for pid in self.pids() {
            let entries = fs::read_dir(format!("/proc/{pid}/fd"))
                .map_err(|e| format!("reading /proc/{pid}/fd: {e}"))?;
            total += entries.count() as u64;
        }
        Ok(total)
    }

    /// VmRSS of the tree, in KiB.
    pub fn rss_kib(&self) -> Result<u64, String> {
        let mut total = 0;
        for pid in self.pids() {
            let status = fs::read_to_string(format!("/proc/{pid}/status"))
                .map_err(|e| format!("reading /proc/{pid}/status: {e}"))?;
            let kib = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0);
            total += kib;
        }
        Ok(total)
    }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf(3) has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

struct Stat {
    ppid: u32,
    utime: u64,
    stime: u64,
}

fn read_stat(pid: u32) -> io::Result<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    let rest = text
        .rfind(')')
        .map(|i| &text[i + 1..])
        .ok_or_else(|| io::Error::other("malformed stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    let field = |i: usize| -> io::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::other("malformed stat"))
    };
    Ok(Stat {
        ppid: u32::try_from(field(1)?).unwrap_or(0),
        utime: field(11)?,
        stime: field(12)?,
    })
}

fn is_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Every live descendant of `root`, from the ppid fields of `/proc/*/stat`.
pub fn descendants(root: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: Vec<(u32, u32)> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, read_stat(pid).ok()?.ppid)))
        .collect();
    let mut found = Vec::new();
    let mut frontier = vec![root];
    // Bounded: each round moves one generation down; a tree deeper than 8 is not ours.
    for _ in 0..8 {
        let next: Vec<u32> = parents
            .iter()
            .filter(|(_, ppid)| frontier.contains(ppid))
            .map(|(pid, _)| *pid)
            .filter(|pid| !found.contains(pid) && *pid != root)
            .collect();
        if next.is_empty() {
            break;
        }
        found.extend(&next);
        frontier = next;
    }
    found
}

/// Raises RLIMIT_NOFILE (children inherit it) so that 5,000 held connections fit: to 65,536
/// when allowed (root), else to the hard limit. Returns the soft limit in force.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes into the struct we pass, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    let want: libc::rlim_t = 65_536;
    if lim.rlim_cur >= want {
        return lim.rlim_cur;
    }
    let wanted = libc::rlimit {
        rlim_cur: want,
        rlim_max: lim.rlim_max.max(want),
    };
    // SAFETY: setrlimit(2) reads the struct we pass, which lives for the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } == 0 {
        return want;
    }
    let capped = libc::rlimit {
        rlim_cur: lim.rlim_max,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &capped) } == 0 {
        return lim.rlim_max;
    }
    lim.rlim_cur
}

/// Starts the raw backend (this binary with `--raw-backend`).
pub fn start_backend(self_exe: &Path) -> Result<Running, String> {
    let dir = TempDir::new("backend").map_err(|e| e.to_string())?;
    let mut cmd = Command::new(self_exe);
    cmd.args(["--raw-backend", "127.0.0.1:0"]);
    start_announcing("backend", cmd, dir)
}
