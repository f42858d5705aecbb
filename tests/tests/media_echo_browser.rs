//! The echo plugin's calls in headless Chromium: JsSIP and SIP.js call `sip:echo@example.test`
//! with audio+video through a real Huddle (media engine on a loopback UDP port, echo loaded as a
//! plugin) and get their own media back; hold/resume; hang-up from the browser and from the
//! server (the leg's transport vanishes, the server sends BYE). The browser side is
//! `tests/clients/browser/echo.test.mjs`.

use std::process::Command;
use std::time::Duration;

use huddle_e2e::plugin_support::{cargo_cdylib, plugin_entry, PluginServer};
use huddle_e2e::{repo_root, require_tool, run_bounded, DOMAIN, USERS};

fn node_test(file: &str, ws_url: &str, limit: Duration) {
    require_tool(
        "node",
        "run ./scripts/test.sh, which installs the test dependencies",
    );
    require_tool(
        "chromium",
        "run ./scripts/test.sh, which installs Debian's chromium",
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
        .args(
            // HUDDLE_NODE_TEST_PATTERN narrows the run while iterating (`--test-name-pattern`).
            std::env::var("HUDDLE_NODE_TEST_PATTERN")
                .map(|p| vec![format!("--test-name-pattern={p}")])
                .unwrap_or_default(),
        )
        .arg(file)
        .env("HUDDLE_WS_URL", ws_url)
        .env("HUDDLE_DOMAIN", DOMAIN)
        .env("HUDDLE_USERS", users.join(","));
    let (ok, output) = run_bounded(cmd, limit);
    println!("{output}");
    assert!(ok, "node tests failed:\n{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_call_echo_and_get_their_media_back() {
    let lib = tokio::task::block_in_place(|| cargo_cdylib("huddle-plugin-echo"));
    let server = PluginServer::start(&plugin_entry(&lib, "")).await;
    assert!(
        server.running.media_addr().is_some(),
        "the media engine runs"
    );
    let url = server.ws_url();
    tokio::task::block_in_place(|| {
        node_test("browser/echo.test.mjs", &url, Duration::from_secs(480));
    });
    assert_eq!(
        server.running.media_sessions(),
        0,
        "every media leg ended with its call"
    );
    server.stop().await;
}
