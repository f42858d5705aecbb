//! Guests in the conference plugin, in headless Chromium: a JsSIP caller that never registered
//! (no password, From in our own domain) is admitted to the public room `lobby` under its display
//! name, while the same caller to the members-only room `team` and to a user is challenged with
//! 407. The host hands a public room's requests over without a challenge because the plugin's
//! claim for it is open to guests. The browser side is
//! `tests/clients/browser/conference-guest.test.mjs`.

use std::time::Duration;

use huddle_e2e::plugin_support::{cargo_cdylib, plugin_entry, PluginServer};
use huddle_e2e::{require_browser_tools, run_node_tests};

const CONFIG: &str = "[plugins.config]\n\
    [[plugins.config.rooms]]\n\
    name = \"lobby\"\n\
    public = true\n\
    video = { width = 640, height = 360, fps = 15, bitrate_kbps = 500 }\n\
    [[plugins.config.rooms]]\n\
    name = \"team\"\n\
    pin = \"1234\"\n\
    video = { width = 640, height = 360, fps = 15, bitrate_kbps = 500 }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_enters_only_public_rooms() {
    require_browser_tools(true);
    let lib = tokio::task::block_in_place(|| cargo_cdylib("huddle-plugin-conference"));
    let server = PluginServer::start(&plugin_entry(&lib, CONFIG)).await;
    assert!(
        server.running.media_addr().is_some(),
        "the media engine runs"
    );
    let url = server.ws_url();
    tokio::task::block_in_place(|| {
        run_node_tests(
            &["browser/conference-guest.test.mjs"],
            &url,
            &[],
            Duration::from_secs(600),
        )
    });
    assert_eq!(
        server.running.media_sessions(),
        0,
        "every media leg ended with its call"
    );
    let store = server.stop().await;
    assert_eq!(
        store.get(b"plugin/conference/rooms/lobby").ok().flatten(),
        None,
        "the room's record is gone once it emptied"
    );
}
