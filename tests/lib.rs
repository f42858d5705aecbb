//! Shared harness for Huddle's end-to-end tests: starts a real server in-process on loopback
//! ports chosen by the OS, with a redb store in a temporary folder, and helps drive real
//! clients (Node, SIPp) against it. Every wait is bounded.

pub mod plugin_support;
pub mod sip_client;
pub mod webhook_receiver;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use huddle::config::Config;
use huddle::server::{start, Running};
use huddle::store::RedbStore;
use huddle::transport::Transport;

/// Users every test server knows.
pub const USERS: &[(&str, &str)] = &[
    ("alice", "alice-pw"),
    ("bob", "bob-pw"),
    ("carol", "carol-pw"),
];

/// The domain every test server serves.
pub const DOMAIN: &str = "example.test";

/// A server running for one test.
#[derive(Debug)]
pub struct TestServer {
    pub running: Running,
    pub dir: tempfile::TempDir,
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A config listening on fresh loopback ports, with the test users and `extra` TOML appended.
pub fn test_config(dir: &Path, domain: &str, extra: &str) -> String {
    let mut users = String::new();
    for (name, password) in USERS {
        users.push_str(&format!(
            "[[users]]\nname = \"{name}\"\npassword = \"{password}\"\n"
        ));
    }
    format!(
        "[sip]\ndomain = \"{domain}\"\nlisten = [\"udp:127.0.0.1:0\", \"tcp:127.0.0.1:0\", \"ws:127.0.0.1:0\"]\n\
         [store]\npath = \"{}\"\n[log]\nlevel = \"warn\"\n{extra}\n{users}",
        dir.join("huddle.redb").display()
    )
}

impl TestServer {
    /// Starts a server for `domain` with extra config.
    pub async fn start_with(domain: &str, extra: &str) -> TestServer {
        let dir = tempfile::tempdir().expect("temporary folder");
        let text = test_config(dir.path(), domain, extra);
        TestServer::start_in(dir, &text).await
    }

    /// Starts a server with a full config text in an existing folder.
    pub async fn start_in(dir: tempfile::TempDir, text: &str) -> TestServer {
        let config = Config::from_toml(text, Path::new("test.toml")).expect("test config is valid");
        let store = RedbStore::open(&config.store.path).expect("store opens");
        let running = start(config, Arc::new(store)).await.expect("server starts");
        TestServer { running, dir }
    }

    /// Starts the default test server.
    pub async fn start() -> TestServer {
        TestServer::start_with(DOMAIN, "").await
    }

    /// The bound address of a transport.
    pub fn addr(&self, transport: Transport) -> std::net::SocketAddr {
        self.running.addrs[&transport]
    }

    /// `ws://127.0.0.1:PORT`.
    pub fn ws_url(&self) -> String {
        self.running.ws_url().expect("a ws listener")
    }

    /// Stops the server and returns its folder.
    pub async fn stop(self) -> tempfile::TempDir {
        self.running.shutdown().await;
        self.dir
    }
}

/// Runs a command with a wall-clock bound; returns its combined output and success.
pub fn run_bounded(mut cmd: Command, limit: Duration) -> (bool, String) {
    use std::io::Read;
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return (false, format!("cannot start {cmd:?}: {e}")),
    };
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let mut output = out_reader.join().unwrap_or_default();
    output.push_str(&err_reader.join().unwrap_or_default());
    match status {
        Some(s) => (s.success(), output),
        None => (false, format!("timed out after {limit:?}\n{output}")),
    }
}

/// Fails with a clear message when a tool the suite needs is missing.
pub fn require_tool(name: &str, hint: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(found, "{name} is not installed: {hint}");
}

/// Fails with a clear message unless the browser tests' tools are installed: Node with the
/// client packages, Debian's Chromium and, for rooms (`gstreamer`), GStreamer.
pub fn require_browser_tools(gstreamer: bool) {
    require_tool(
        "node",
        "run ./scripts/test.sh, which installs the test dependencies",
    );
    require_tool(
        "chromium",
        "run ./scripts/test.sh, which installs Debian's chromium",
    );
    if gstreamer {
        require_tool(
            "gst-inspect-1.0",
            "run ./scripts/install-deps.sh, which installs GStreamer",
        );
    }
    assert!(
        repo_root().join("tests/clients/node_modules").exists(),
        "tests/clients/node_modules is missing: run ./scripts/test.sh (npm ci)"
    );
}

/// Runs `node --test` on `files` (under `tests/clients`), one test at a time, against the
/// server at `ws_url` with the shared users and domain (`HUDDLE_WS_URL`, `HUDDLE_DOMAIN`,
/// `HUDDLE_USERS`) and `env`; `HUDDLE_NODE_TEST_PATTERN` narrows the run while iterating.
/// Blocks the calling thread (use `block_in_place` in async tests); panics with Node's output
/// when a test fails or `limit` passes.
pub fn run_node_tests(files: &[&str], ws_url: &str, env: &[(&str, &str)], limit: Duration) {
    let users: Vec<String> = USERS.iter().map(|(u, p)| format!("{u}:{p}")).collect();
    let mut cmd = Command::new("node");
    cmd.current_dir(repo_root().join("tests/clients"))
        .arg("--test")
        .arg("--test-concurrency=1")
        .args(
            std::env::var("HUDDLE_NODE_TEST_PATTERN")
                .map(|p| vec![format!("--test-name-pattern={p}")])
                .unwrap_or_default(),
        )
        .args(files)
        .env("HUDDLE_WS_URL", ws_url)
        .env("HUDDLE_DOMAIN", DOMAIN)
        .env("HUDDLE_USERS", users.join(","))
        .envs(env.iter().copied());
    let (ok, output) = run_bounded(cmd, limit);
    println!("{output}");
    assert!(ok, "node tests {files:?} failed:\n{output}");
}
