//! JsSIP and SIP.js in Node against a real Huddle with the presence plugin, over WebSocket
//! (`tests/clients/node/presence.test.mjs`): SIP.js publishers on two devices of one user,
//! JsSIP and SIP.js watchers, modify, unpublish, `closed` when the last WebSocket drops, and a
//! reconnecting browser that stays one watcher (checked through watcher info).

use std::process::Command;
use std::time::Duration;

use huddle_e2e::plugin_support::{cargo_cdylib, plugin_entry, PluginServer};
use huddle_e2e::{repo_root, require_tool, run_bounded, DOMAIN, USERS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jssip_and_sipjs_presence() {
    require_tool(
        "node",
        "run ./scripts/test.sh, which installs the test dependencies",
    );
    let clients = repo_root().join("tests/clients");
    assert!(
        clients.join("node_modules").exists(),
        "tests/clients/node_modules is missing: run ./scripts/test.sh (npm ci)"
    );
    let lib = tokio::task::block_in_place(|| cargo_cdylib("huddle-plugin-presence"));
    let server = PluginServer::start(&plugin_entry(
        &lib,
        "[plugins.config]\ndomain = \"example.test\"\n",
    ))
    .await;
    let users: Vec<String> = USERS.iter().map(|(u, p)| format!("{u}:{p}")).collect();
    let mut cmd = Command::new("node");
    cmd.current_dir(&clients)
        .arg("--test")
        .arg("--test-concurrency=1")
        .arg("node/presence.test.mjs")
        .env("HUDDLE_WS_URL", server.ws_url())
        .env("HUDDLE_DOMAIN", DOMAIN)
        .env("HUDDLE_USERS", users.join(","));
    let (ok, output) = tokio::task::block_in_place(|| run_bounded(cmd, Duration::from_secs(120)));
    println!("{output}");
    assert!(ok, "node presence tests failed:\n{output}");
    server.stop().await;
}
