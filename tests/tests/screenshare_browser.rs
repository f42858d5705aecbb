//! The screen-share relay in headless Chromium: alice and bob join room `team` (the conference
//! plugin, loaded next to the relay), alice shares her screen (getDisplayMedia) to
//! `sip:team-screen@example.test`, bob watches it there and decodes it at the resolution alice's
//! encoder sends (relayed by the host's forwarding path, not transcoded), bob presenting meanwhile
//! gets 403, carol (not in the room) may not watch, and the end of the presentation — alice
//! hanging up, or leaving the room — ends bob's viewing call with a BYE. The browser side is
//! `tests/clients/browser/screenshare.test.mjs`. The relay's webhook events reach a receiver in
//! this test, signed and in order: started and stopped (hang-up), started and stopped (left the
//! room); bob's refused attempt raises none.

use std::time::Duration;

use huddle_e2e::plugin_support::{
    assert_no_presentation_left, cargo_cdylib, plugin_entry, PluginServer,
};
use huddle_e2e::webhook_receiver::Receiver;
use huddle_e2e::{require_browser_tools, run_node_tests};

const SECRET: &str = "screenshare-secret";

/// Room `team` without a PIN (the conference's on-demand rooms are off: their `room-*` claim
/// would overlap the relay's `*-screen`), with a small composite to keep the CPU for the relay.
const CONFERENCE: &str = "[plugins.config]\n\
    on_demand_prefix = \"\"\n\
    [[plugins.config.rooms]]\n\
    name = \"team\"\n\
    max_participants = 4\n\
    video = { width = 320, height = 180, fps = 10, bitrate_kbps = 200 }\n";

const SCREENSHARE: &str = "[plugins.config]\n\
    screen_user = \"{room}-screen\"\n\
    second_presenter = \"refuse\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_screen_is_relayed_to_a_viewer_as_sent() {
    require_browser_tools(true);
    let (conference, screenshare) = tokio::task::block_in_place(|| {
        (
            cargo_cdylib("huddle-plugin-conference"),
            cargo_cdylib("huddle-plugin-screenshare"),
        )
    });
    let mut receiver = Receiver::start("127.0.0.1:0".parse().unwrap()).await;
    let extra = format!(
        "{}{}[webhooks]\nurls = [\"{}\"]\nsecret = \"{SECRET}\"\n\
         events = [\"presentation.started\", \"presentation.stopped\"]\n",
        plugin_entry(&conference, CONFERENCE),
        plugin_entry(&screenshare, SCREENSHARE),
        receiver.url()
    );
    let server = PluginServer::start(&extra).await;
    let url = server.ws_url();
    tokio::task::block_in_place(|| {
        run_node_tests(
            &["browser/screenshare.test.mjs"],
            &url,
            &[],
            Duration::from_secs(600),
        )
    });
    let wait = Duration::from_secs(15);
    let expected = [
        ("presentation.started", None),
        ("presentation.stopped", Some("hangup")),
        ("presentation.started", None),
        ("presentation.stopped", Some("left_room")),
    ];
    let mut last_id = 0;
    for (kind, reason) in expected {
        let ev = receiver.next(kind, wait).await;
        assert_eq!(ev.kind(), kind, "{}", ev.body);
        assert_eq!(ev.body["source"], "screenshare", "{}", ev.body);
        let data = &ev.body["data"];
        assert_eq!(data["room"], "team", "{}", ev.body);
        assert_eq!(data["presenter"], "alice", "{}", ev.body);
        assert_eq!(data["display"], "alice", "{}", ev.body);
        if let Some(reason) = reason {
            assert_eq!(data["reason"], reason, "{}", ev.body);
            assert!(
                data["duration_ms"].as_u64().is_some_and(|ms| ms > 0),
                "{}",
                ev.body
            );
        }
        let id = ev.body["id"].as_u64().expect("an id");
        assert!(id > last_id, "in order: {id} after {last_id}");
        last_id = id;
        assert!(ev.signed_with(SECRET), "signed: {}", ev.body);
    }
    assert_eq!(
        server.running.media_sessions(),
        0,
        "every media leg ended with its call"
    );
    receiver.stop();
    let store = server.stop().await;
    assert_no_presentation_left(&*store, "team");
}
