//! The conference composite follows a shared screen, in headless Chromium: alice and bob are in
//! room `team` (the conference plugin), carol shares her screen (getDisplayMedia) through the
//! screen-share relay, and the composite alice and bob receive switches to the presenter layout
//! (the screen big, the participants as thumbnails) while she shares and back to the grid when
//! she hangs up; bob's viewing call ends cleanly with it. The conference taps carol's stream
//! through the host (ABI 1.3 `media_tap`), found in the relay's presentation record. The
//! browser side, which reads the layout from the decoded composite's pixels, is
//! `tests/clients/browser/conference-presenter.test.mjs`.

use std::time::Duration;

use huddle_e2e::plugin_support::{cargo_cdylib, plugin_entry, PluginServer};
use huddle_e2e::{require_browser_tools, run_node_tests};

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
    let (conference, screenshare) = tokio::task::block_in_place(|| {
        (
            cargo_cdylib("huddle-plugin-conference"),
            cargo_cdylib("huddle-plugin-screenshare"),
        )
    });
    let extra = format!(
        "{}{}",
        plugin_entry(&conference, CONFERENCE),
        plugin_entry(&screenshare, SCREENSHARE)
    );
    let server = PluginServer::start(&extra).await;
    let url = server.ws_url();
    tokio::task::block_in_place(|| {
        run_node_tests(
            &["browser/conference-presenter.test.mjs"],
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
        store
            .get(b"plugin/screenshare/presentations/team")
            .ok()
            .flatten(),
        None,
        "no presentation record is left behind"
    );
}
