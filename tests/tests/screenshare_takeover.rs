//! A screen-share presentation taken over, in headless Chromium (the browser side is
//! `tests/clients/browser/screenshare-takeover.test.mjs`): with `second_presenter = "take_over"`,
//! bob presenting while alice presents ends alice's screen call with a BYE, and carol, watching,
//! keeps her call and decodes bob's screen (another size) from then on; the relay's admin state
//! lists the presentation and carol's loss counters. The relay's webhook
//! events reach a receiver in this test, signed and in order: started (alice), stopped (alice,
//! taken over), started (bob), stopped (bob, hang-up).

use std::time::Duration;

use huddle_e2e::plugin_support::{cargo_cdylib, plugin_entry, PluginServer};
use huddle_e2e::webhook_receiver::Receiver;
use huddle_e2e::{require_browser_tools, run_node_tests};

const SECRET: &str = "takeover-secret";
const TOKEN: &str = "takeover-token";

/// Room `team`, which nobody joins here: the relay still reads the conference's records.
const CONFERENCE: &str = "[plugins.config]\n\
    on_demand_prefix = \"room-\"\n\
    [[plugins.config.rooms]]\n\
    name = \"team\"\n";

/// The shipped defaults (screen URI `screen-{room}`, no clash with `room-`) but for who may
/// present and watch and what a second presenter does.
const SCREENSHARE: &str = "[plugins.config]\n\
    second_presenter = \"take_over\"\n\
    presenters = [\"alice\", \"bob\"]\n\
    viewers = \"anyone\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_presenter_takes_over_and_the_viewer_follows() {
    require_browser_tools(true);
    let (conference, screenshare) = tokio::task::block_in_place(|| {
        (
            cargo_cdylib("huddle-plugin-conference"),
            cargo_cdylib("huddle-plugin-screenshare"),
        )
    });
    let mut receiver = Receiver::start("127.0.0.1:0".parse().unwrap()).await;
    let extra = format!(
        "{}{}[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n[webhooks]\nurls = [\"{}\"]\nsecret = \"{SECRET}\"\n\
         events = [\"presentation.started\", \"presentation.stopped\"]\n",
        plugin_entry(&conference, CONFERENCE),
        plugin_entry(&screenshare, SCREENSHARE),
        receiver.url()
    );
    let server = PluginServer::start(&extra).await;
    let url = server.ws_url();
    let admin = server.running.admin_addr().expect("the admin API runs");
    tokio::task::block_in_place(|| {
        run_node_tests(
            &["browser/screenshare-takeover.test.mjs"],
            &url,
            &[
                ("HUDDLE_ADMIN_URL", &format!("http://{admin}")),
                ("HUDDLE_ADMIN_TOKEN", TOKEN),
            ],
            Duration::from_secs(600),
        )
    });

    let wait = Duration::from_secs(15);
    let expected = [
        ("presentation.started", "alice", None),
        ("presentation.stopped", "alice", Some("taken_over")),
        ("presentation.started", "bob", None),
        ("presentation.stopped", "bob", Some("hangup")),
    ];
    for (kind, presenter, reason) in expected {
        let ev = receiver.next(kind, wait).await;
        assert_eq!(ev.kind(), kind, "{}", ev.body);
        assert_eq!(ev.body["source"], "screenshare", "{}", ev.body);
        let data = &ev.body["data"];
        assert_eq!(data["room"], "team", "{}", ev.body);
        assert_eq!(data["presenter"], presenter, "{}", ev.body);
        assert_eq!(
            data["screen_uri"],
            format!("sip:screen-team@{}", huddle_e2e::DOMAIN),
            "{}",
            ev.body
        );
        if let Some(reason) = reason {
            assert_eq!(data["reason"], reason, "{}", ev.body);
            assert!(data["duration_ms"].as_u64().is_some(), "{}", ev.body);
        }
        assert!(ev.signed_with(SECRET), "signed: {}", ev.body);
    }
    assert_eq!(
        server.running.media_sessions(),
        0,
        "every media leg ended with its call"
    );
    server.stop().await;
    receiver.stop();
}
