//! JsSIP and SIP.js in Node against a real Huddle over WebSocket: register, MESSAGE with a
//! UTF-8 body, two registrations of one user (two tabs), re-register, unregister; and JsSIP
//! talking to the echo plugin loaded by the server.

use std::process::Command;
use std::time::Duration;

use huddle_e2e::plugin_support::{cargo_cdylib, plugin_entry, PluginServer};
use huddle_e2e::{repo_root, require_tool, run_bounded, TestServer, DOMAIN, USERS};

fn node_test(files: &[&str], server: &TestServer, limit: Duration) {
    node_test_at(files, &server.ws_url(), limit);
}

fn node_test_at(files: &[&str], ws_url: &str, limit: Duration) {
    require_tool(
        "node",
        "run ./scripts/test.sh, which installs the test dependencies",
    );
    let clients = repo_root().join("tests/clients");
    assert!(
        clients.join("node_modules").exists(),
        "tests/clients/node_modules is missing: run ./scripts/test.sh (npm ci)"
    );
    let users: Vec<String> = USERS.iter().map(|(u, p)| format!("{u}:{p}")).collect();
    let mut cmd = Command::new("node");
    cmd.current_dir(&clients)
        .arg("--test")
        .arg("--test-concurrency=1")
        .args(files)
        .env("HUDDLE_WS_URL", ws_url)
        .env("HUDDLE_DOMAIN", DOMAIN)
        .env("HUDDLE_USERS", users.join(","));
    let (ok, output) = run_bounded(cmd, limit);
    println!("{output}");
    assert!(ok, "node tests failed:\n{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jssip_and_sipjs_in_node() {
    let server = TestServer::start().await;
    let s = &server;
    tokio::task::block_in_place(|| {
        node_test(
            &["node/jssip.test.mjs", "node/sipjs.test.mjs"],
            s,
            Duration::from_secs(240),
        );
    });
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jssip_and_the_echo_plugin() {
    let lib = tokio::task::block_in_place(|| cargo_cdylib("huddle-plugin-echo"));
    let server = PluginServer::start(&plugin_entry(&lib, "")).await;
    let url = server.ws_url();
    tokio::task::block_in_place(|| {
        node_test_at(&["node/echo.test.mjs"], &url, Duration::from_secs(120));
    });
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_video_call_between_browsers() {
    require_tool(
        "chromium",
        "run ./scripts/test.sh, which installs Debian's chromium",
    );
    let server = TestServer::start().await;
    let s = &server;
    tokio::task::block_in_place(|| {
        node_test(&["browser/call.test.mjs"], s, Duration::from_secs(300));
    });
    server.stop().await;
}
