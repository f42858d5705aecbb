//! The admin API's rooms endpoints with real participants (headless Chromium, JsSIP and SIP.js;
//! the browser side is `tests/clients/browser/admin-rooms.test.mjs`): list and participants follow
//! joins, a locked room refuses a new caller with 403, mute/unmute and layout change, a kicked
//! participant's call ends with the server's BYE, errors are JSON. The room's webhook events
//! (room created, participants joined and left, room ended) reach a receiver in this test,
//! signed, in order.

use std::time::Duration;

use huddle_e2e::plugin_support::{cargo_cdylib, plugin_entry, PluginServer};
use huddle_e2e::webhook_receiver::Receiver;
use huddle_e2e::{require_browser_tools, run_node_tests};

const TOKEN: &str = "rooms-token";
const SECRET: &str = "rooms-secret";
const CONFIG: &str = "[plugins.config]\n\
    on_demand_prefix = \"\"\n\
    stats_interval_secs = 1\n\
    [[plugins.config.rooms]]\n\
    name = \"ops\"\n\
    max_participants = 4\n\
    video = { width = 320, height = 180, fps = 10, bitrate_kbps = 200 }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_manages_a_live_room_and_its_events_are_hooked() {
    require_browser_tools(true);
    let lib = tokio::task::block_in_place(|| cargo_cdylib("huddle-plugin-conference"));
    let mut receiver = Receiver::start("127.0.0.1:0".parse().unwrap()).await;
    let extra = format!(
        "{}[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\
         [webhooks]\nurls = [\"{}\"]\nsecret = \"{SECRET}\"\n\
         events = [\"room.created\", \"room.ended\", \"participant.joined\", \"participant.left\"]\n",
        plugin_entry(&lib, CONFIG),
        receiver.url()
    );
    let server = PluginServer::start(&extra).await;
    let admin = server.running.admin_addr().expect("admin API runs");
    let url = server.ws_url();
    tokio::task::block_in_place(|| {
        run_node_tests(
            &["browser/admin-rooms.test.mjs"],
            &url,
            &[
                ("HUDDLE_ADMIN_URL", &format!("http://{admin}")),
                ("HUDDLE_ADMIN_TOKEN", TOKEN),
            ],
            Duration::from_secs(600),
        )
    });

    // The room's life as webhooks saw it, in order (carol was refused: no event).
    let wait = Duration::from_secs(15);
    let expected = [
        ("room.created", None),
        ("participant.joined", Some("alice")),
        ("participant.joined", Some("bob")),
        ("participant.left", Some("alice")),
        ("participant.left", Some("bob")),
        ("room.ended", None),
    ];
    for (kind, entity) in expected {
        let ev = receiver.next(kind, wait).await;
        assert_eq!(ev.kind(), kind, "{}", ev.body);
        assert_eq!(ev.body["source"], "conference", "{}", ev.body);
        assert_eq!(ev.body["data"]["room"], "ops", "{}", ev.body);
        if let Some(entity) = entity {
            assert_eq!(ev.body["data"]["entity"], entity, "{}", ev.body);
        }
        assert!(ev.signed_with(SECRET), "signed: {}", ev.body);
    }
    server.stop().await;
    receiver.stop();
}
