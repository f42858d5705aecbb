//! JsSIP and SIP.js in Node against a Huddle with the messaging plugin: delivery to two
//! devices, the offline store then REGISTER, UTF-8 bodies and IMDN
//! (`tests/clients/node/messaging.test.mjs`); quota, body limit and expiry on a server with
//! small limits (`messaging-limits.test.mjs`).

use std::process::Command;
use std::time::Duration;

use huddle_e2e::plugin_support::{cargo_cdylib, plugin_entry, PluginServer};
use huddle_e2e::{repo_root, require_tool, run_bounded, DOMAIN, USERS};

fn node_test(file: &str, ws_url: &str) {
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
        .args(["--test", "--test-concurrency=1", file])
        .env("HUDDLE_WS_URL", ws_url)
        .env("HUDDLE_DOMAIN", DOMAIN)
        .env("HUDDLE_USERS", users.join(","));
    let (ok, output) = run_bounded(cmd, Duration::from_secs(180));
    println!("{output}");
    assert!(ok, "node tests failed:\n{output}");
}

async fn server(config: &str) -> PluginServer {
    let lib = tokio::task::block_in_place(|| cargo_cdylib("huddle-plugin-messaging"));
    PluginServer::start(&plugin_entry(&lib, &format!("[plugins.config]\n{config}"))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jssip_and_sipjs_with_the_messaging_store() {
    let server = server("").await;
    let url = server.ws_url();
    tokio::task::block_in_place(|| node_test("node/messaging.test.mjs", &url));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jssip_quota_body_limit_and_expiry() {
    let server = server("quota_messages = 2\nlifetime_secs = 1\nmax_body_bytes = 64").await;
    let url = server.ws_url();
    tokio::task::block_in_place(|| node_test("node/messaging-limits.test.mjs", &url));
    server.stop().await;
}
