//! The echo plugin's calls in headless Chromium: JsSIP and SIP.js call `sip:echo@example.test`
//! with audio+video through a real Huddle (media engine on a loopback UDP port, echo loaded as a
//! plugin) and get their own media back; hold/resume; hang-up from the browser and from the
//! server (the leg's transport vanishes, the server sends BYE). The browser side is
//! `tests/clients/browser/echo.test.mjs`.

use std::time::Duration;

use huddle_e2e::plugin_support::{cargo_cdylib, plugin_entry, PluginServer};
use huddle_e2e::{require_browser_tools, run_node_tests};

fn node_test(file: &str, ws_url: &str, limit: Duration) {
    require_browser_tools(false);
    run_node_tests(&[file], ws_url, &[], limit);
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
