//! The conference composite follows a shared screen, in headless Chromium: alice and bob are in
//! room `team` (the conference plugin), carol shares her screen (getDisplayMedia) through the
//! screen-share relay, and the composite alice and bob receive switches to the presenter layout
//! (the screen big, the participants as thumbnails) while she shares and back to the grid when
//! she hangs up; bob's viewing call ends cleanly with it. The conference taps carol's stream
//! through the host (ABI 1.3 `media_tap`), found in the relay's presentation record. The
//! browser side, which reads the layout from the decoded composite's pixels, is
//! `tests/clients/browser/conference-presenter.test.mjs`.

use huddle_e2e::plugin_support::run_team_room_with_relay;
use huddle_e2e::require_browser_tools;

/// carol presents by role, without being in the room: the room keeps two participants.
const SCREENSHARE: &str = "[plugins.config]\n\
    screen_user = \"{room}-screen\"\n\
    presenters = [\"carol\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_composite_shows_the_presenter_layout_while_a_screen_is_shared() {
    require_browser_tools(true);
    run_team_room_with_relay(SCREENSHARE, "browser/conference-presenter.test.mjs").await;
}
