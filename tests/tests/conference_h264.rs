//! H.264 into the conference, in headless Chromium: alice (JsSIP) joins room `team` sending
//! VP8 as usual; bob (JsSIP) joins with his video transceiver restricted to H.264
//! (`RTCRtpTransceiver.setCodecPreferences`), so his offer has no VP8. The conference answers
//! his video m-line with one H.264 format, both ways: it decodes his picture (`avdec_h264`) into
//! his tile, which alice's VP8 composite shows, and sends him the room's H.264 composite
//! (openh264, Constrained Baseline, packetization-mode 1), which his Chromium decodes and which
//! shows alice. The browser side, which reads each one's view of the other's tile from the
//! decoded composite's pixels, is `tests/clients/browser/conference-h264.test.mjs`.

use huddle_e2e::plugin_support::{PluginServer, TEAM_ROOM};
use huddle_e2e::require_browser_tools;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h264_only_participant_shows_in_the_vp8_composite_and_receives_an_h264_one() {
    require_browser_tools(true);
    let server = PluginServer::start_with(&[("huddle-plugin-conference", TEAM_ROOM)]).await;
    server
        .run_clients_then_stop(&["browser/conference-h264.test.mjs"])
        .await;
}
