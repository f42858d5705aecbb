//! Presenting by calling the room itself, in headless Chromium: alice and bob are in room `team`
//! (the conference plugin) with their cameras; alice's second, video-only call (getDisplayMedia)
//! to `sip:team@example.test` is retargeted by the conference to the screen-share relay (ABI 1.4
//! `retarget`) and becomes the room's presentation: the composite switches to the presenter
//! layout, bob watching the screen URI decodes alice's frames at her size, and alice hanging up
//! returns the grid and ends bob's view. carol, not in the room, making the same call to the room
//! joins it as a participant. The browser side is
//! `tests/clients/browser/conference-present-to-room.test.mjs`.

use huddle_e2e::plugin_support::run_team_room_with_relay;
use huddle_e2e::require_browser_tools;

/// No presenters by role: only someone in the room presents.
const SCREENSHARE: &str = "[plugins.config]\n\
    screen_user = \"{room}-screen\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participants_video_only_call_to_the_room_becomes_its_presentation() {
    require_browser_tools(true);
    run_team_room_with_relay(SCREENSHARE, "browser/conference-present-to-room.test.mjs").await;
}
