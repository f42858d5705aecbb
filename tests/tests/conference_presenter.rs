//! The conference composite follows a shared screen, in headless Chromium: alice and bob are in
//! room `team` (the conference plugin), carol shares her screen (getDisplayMedia) through the
//! screen-share relay, and the composite alice and bob receive switches to the presenter layout
//! (the screen big, the participants as thumbnails) while she shares and back to the grid when
//! she hangs up; bob's viewing call ends cleanly with it. The conference taps carol's stream
//! through the host (ABI 1.3 `media_tap`), found in the relay's presentation record. The
//! browser side, which reads the layout from the decoded composite's pixels, is
//! `tests/clients/browser/conference-presenter.test.mjs`.

use huddle_e2e::plugin_support::PluginServer;
use huddle_e2e::require_browser_tools;

/// Room `team` without a PIN (on-demand rooms off: their `room-*` claim would overlap the
/// relay's `*-screen`), a small grid composite.
const CONFERENCE: &str = "[plugins.config]\n\
    on_demand_prefix = \"\"\n\
    [[plugins.config.rooms]]\n\
    name = \"team\"\n\
    max_participants = 4\n\
    layout = \"grid\"\n\
    video = { width = 320, height = 180, fps = 10, bitrate_kbps = 300 }\n";

/// carol presents by role, without being in the room: the room keeps two participants.
const SCREENSHARE: &str = "[plugins.config]\n\
    screen_user = \"{room}-screen\"\n\
    presenters = [\"carol\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_composite_shows_the_presenter_layout_while_a_screen_is_shared() {
    require_browser_tools(true);
    let server = PluginServer::start_with(&[
        ("huddle-plugin-conference", CONFERENCE),
        ("huddle-plugin-screenshare", SCREENSHARE),
    ])
    .await;
    let store = server
        .run_clients_then_stop(&["browser/conference-presenter.test.mjs"])
        .await;
    assert_eq!(
        store
            .get(b"plugin/screenshare/presentations/team")
            .ok()
            .flatten(),
        None,
        "no presentation record is left behind"
    );
}
