//! README's axum snippet builds in a new project that depends on nothing but `wsrelay`,
//! `axum` and `tokio`, as README says it does, and stays short.
//!
//! The snippet is taken from README.md (the first `rust` block under "In an axum router"),
//! written into a scratch crate under `target/`, and built with `cargo build`. The first run
//! compiles axum and tokio for that crate (a minute or two); later runs reuse its target
//! directory.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The first fenced `rust` block after `heading` in `text`.
fn snippet_after<'a>(text: &'a str, heading: &str) -> &'a str {
    let start = text.find(heading).expect("README has the heading");
    let rest = &text[start..];
    let open = rest
        .find("```rust")
        .expect("a rust block follows the heading");
    let body = &rest[open..];
    let body = &body[body.find('\n').expect("a line after the fence") + 1..];
    let close = body.find("\n```").expect("the block is closed");
    &body[..=close]
}

/// The axum "hello world" of axum's own README, counted the same way as the snippet: the
/// snippet may add at most ten lines to it.
const HELLO_WORLD: &str = r#"use axum::{routing::get, Router};

#[tokio::main]
async fn main() {
    let app = Router::new().route("/", get(|| async { "Hello, World!" }));
    let listener = tokio::net::TcpListener::bind("0.0.0.0:3000").await.unwrap();
    axum::serve(listener, app).await.unwrap();
}
"#;

fn code_lines(code: &str) -> usize {
    code.lines().filter(|line| !line.trim().is_empty()).count()
}

#[test]
fn readme_axum_snippet_builds_in_a_new_project_with_only_wsrelay_axum_and_tokio() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let snippet = snippet_after(&readme, "### In an axum router");
    assert!(snippet.contains("proxy.upgrade("), "{snippet}");
    assert!(snippet.contains("proxy.drain()"), "{snippet}");
    let added = code_lines(snippet).saturating_sub(code_lines(HELLO_WORLD));
    assert!(
        added <= 10,
        "the snippet adds {added} lines to axum's hello world:\n{snippet}"
    );

    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let project = target.join("readme-axum-snippet");
    std::fs::create_dir_all(project.join("src")).expect("scratch project");
    let manifest = format!(
        r#"[package]
name = "readme-axum-snippet"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
wsrelay = {{ path = {root:?}, features = ["hyper"] }}
axum = "0.8"
tokio = {{ version = "1", features = ["full"] }}

[workspace]
"#
    );
    std::fs::write(project.join("Cargo.toml"), manifest).expect("Cargo.toml");
    std::fs::write(project.join("src/main.rs"), snippet).expect("main.rs");

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["build", "--quiet"])
        .current_dir(&project)
        .env(
            "CARGO_TARGET_DIR",
            target.join("readme-axum-snippet-target"),
        )
        .env_remove("RUSTFLAGS")
        .output()
        .expect("run cargo");
    assert!(
        output.status.success(),
        "the README snippet does not build:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
