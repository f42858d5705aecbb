//! The conference plugin (the MCU) in headless Chromium: three JsSIP/SIP.js participants join
//! `sip:team@example.test;pin=1234` through a real Huddle (media engine on loopback, the plugin
//! loaded), each hears the others (audio with energy) and decodes the 640x360 composite; one
//! leaves and the others continue; a conference subscription (RFC 4575) lists them; a missing
//! or wrong PIN is refused with 403. The browser side is
//! `tests/clients/browser/conference.test.mjs`.

use huddle_e2e::plugin_support::PluginServer;
use huddle_e2e::require_browser_tools;

const CONFIG: &str = "[plugins.config]\n\
    on_demand_prefix = \"meet-\"\n\
    [[plugins.config.rooms]]\n\
    name = \"team\"\n\
    pin = \"1234\"\n\
    max_participants = 4\n\
    video = { width = 640, height = 360, fps = 15, bitrate_kbps = 500 }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_browsers_meet_in_a_room() {
    require_browser_tools(true);
    let server = PluginServer::start_with(&[("huddle-plugin-conference", CONFIG)]).await;
    assert!(
        server.running.media_addr().is_some(),
        "the media engine runs"
    );
    let store = server
        .run_clients_then_stop(&["browser/conference.test.mjs"])
        .await;
    assert_eq!(
        store.get(b"plugin/conference/rooms/team").ok().flatten(),
        None,
        "the room's record is gone once it emptied"
    );
}
