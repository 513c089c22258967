//! Child processes: the example binaries (`tests/example_*.rs`) and the independent peers
//! (`tests/interop.rs`). Spawn them with `kill_on_drop(true)` so that no path leaks one, and
//! bound every wait.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

use super::within_for;

/// The bound on one step of a child process (a start, an exit, a handshake through it):
/// longer than [`STEP`](super::STEP), since a process starts cold on a loaded machine.
pub const PROCESS_STEP: Duration = Duration::from_secs(20);

/// `target/<profile>/examples/<name>`, the example binary `cargo test` builds next to the
/// test binaries; built first (same cargo, all features) if missing, as in a run limited to
/// one test file with `--test`.
pub async fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test>-HASH → target/<profile>/examples/<name>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let binary = profile_dir.join("examples").join(name);
    if !binary.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--example", name, "--all-features"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .kill_on_drop(true)
            .status();
        let status = within_for(
            Duration::from_secs(600),
            &format!("building the {name} example"),
            status,
        )
        .await
        .expect("cargo runs");
        assert!(status.success(), "cargo build --example {name} failed");
    }
    assert!(binary.exists(), "no {name} example at {}", binary.display());
    binary
}

/// Reads `child`'s stdout (which must be piped; it is taken) until a line
/// `listening on ADDR`, within `limit` and in at most `lines` lines; ADDR.
pub async fn listening_on(child: &mut Child, lines: usize, limit: Duration, what: &str) -> String {
    let stdout = child.stdout.take().expect("piped stdout");
    let mut reader = BufReader::new(stdout).lines();
    within_for(limit, &format!("{what} to say where it listens"), async {
        let mut seen = Vec::new();
        while seen.len() < lines {
            let line = reader
                .next_line()
                .await
                .expect("read stdout")
                .unwrap_or_else(|| panic!("{what} closed its stdout before listening"));
            if let Some(addr) = line.strip_prefix("listening on ") {
                return addr.to_owned();
            }
            seen.push(line);
        }
        panic!("{what} did not say where it listens; its stdout began {seen:?}");
    })
    .await
}

/// Starts the example `name` with `args` (stdout and stderr piped, killed when dropped);
/// returns the child and the address it announced on its first line.
pub async fn start_example(name: &str, args: &[&str]) -> (Child, String) {
    let mut child = Command::new(example_binary(name).await)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start the {name} example: {e}"));
    let addr = listening_on(&mut child, 1, PROCESS_STEP, &format!("the {name} example")).await;
    (child, addr)
}

/// Sends SIGTERM with the `kill` command (no `unsafe` outside the splice module).
pub async fn terminate(child: &Child) {
    let pid = child.id().expect("the child is running").to_string();
    let status = within_for(
        PROCESS_STEP,
        "kill -TERM",
        Command::new("kill").args(["-TERM", &pid]).status(),
    )
    .await
    .expect("run kill");
    assert!(status.success(), "kill -TERM {pid} failed");
}

/// Waits for the child's exit; returns the exit code and everything written to stderr.
pub async fn finish(mut child: Child) -> (Option<i32>, String) {
    let mut stderr = child.stderr.take().expect("piped stderr");
    let mut text = String::new();
    let (read, status) = within_for(PROCESS_STEP, "the child to exit", async {
        tokio::join!(stderr.read_to_string(&mut text), child.wait())
    })
    .await;
    read.expect("read stderr");
    (status.expect("wait for the child").code(), text)
}

/// Runs the example `name` with `args` to its exit (bounded by [`PROCESS_STEP`]), with its
/// output: for arguments it must refuse.
pub async fn run_example_to_exit(name: &str, args: &[&str]) -> std::process::Output {
    let output = Command::new(example_binary(name).await)
        .args(args)
        .kill_on_drop(true)
        .output();
    within_for(PROCESS_STEP, &format!("the {name} example to exit"), output)
        .await
        .unwrap_or_else(|e| panic!("run the {name} example: {e}"))
}
