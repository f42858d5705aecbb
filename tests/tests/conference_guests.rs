//! Guests in the conference plugin, in headless Chromium: a JsSIP caller that never registered
//! (no password, From in our own domain) is admitted to the public room `lobby` under its display
//! name, while the same caller to the members-only room `team` and to a user is challenged with
//! 407. The host hands a public room's requests over without a challenge because the plugin's
//! claim for it is open to guests. The browser side is
//! `tests/clients/browser/conference-guest.test.mjs`.

use huddle_e2e::plugin_support::PluginServer;
use huddle_e2e::require_browser_tools;

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
    let server = PluginServer::start_with(&[("huddle-plugin-conference", CONFIG)]).await;
    assert!(
        server.running.media_addr().is_some(),
        "the media engine runs"
    );
    let store = server
        .run_clients_then_stop(&["browser/conference-guest.test.mjs"])
        .await;
    assert_eq!(
        store.get(b"plugin/conference/rooms/lobby").ok().flatten(),
        None,
        "the room's record is gone once it emptied"
    );
}
