//! The messaging plugin's webhook events through a real server and a real HTTP receiver
//! (axum, in the test): a MESSAGE for an offline user raises `message.stored` once it is
//! durable (sender, recipient, id, content type, size; never the body), and its delivery to
//! the user's phone when it registers raises `message.delivered` naming the same id and the
//! device's binding. Both arrive signed, from the plugin.

use std::time::Duration;

use huddle_e2e::plugin_support::{cargo_cdylib, plugin_entry, PluginServer};
use huddle_e2e::sip_client::{
    accept_message, register_ok, send_through_407, text, Conn, Session, Ua,
};
use huddle_e2e::webhook_receiver::Receiver;
use huddle_e2e::DOMAIN;

const SECRET: &str = "webhook-secret";
const WAIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_then_delivered_message_raises_both_events_without_its_body() {
    let mut receiver = Receiver::start("127.0.0.1:0".parse().unwrap()).await;
    let lib = tokio::task::block_in_place(|| cargo_cdylib("huddle-plugin-messaging"));
    let server = PluginServer::start(&format!(
        "[webhooks]\nurls = [\"{}\"]\nsecret = \"{SECRET}\"\n{}",
        receiver.url(),
        plugin_entry(&lib, "[plugins.config]\nstore_batch_window_ms = 2")
    ))
    .await;
    let alice = Ua::sipml5("alice", "alice-pw");
    let bob = Ua::sipml5("bob", "bob-pw");
    let mut a = Conn::ws(&server.ws_url(), "alice").await;

    let body = "the secret plan ☺";
    let mut s = Session::new();
    let uri = format!("sip:bob@{DOMAIN}");
    send_through_407(&mut a, &alice, &mut s, "MESSAGE", &uri, |s, auth| {
        alice.message_request("bob", s, body, auth)
    })
    .await;
    let r = a.final_response(&s.call_id, s.cseq).await;
    assert_eq!(
        r.status(),
        Some(202),
        "bob is offline: stored\n{}",
        text(&r)
    );

    let seen = receiver.until("message.stored", WAIT).await;
    let stored = seen.last().expect("the stored event");
    assert_eq!(stored.kind_header, "message.stored");
    assert!(stored.signed_with(SECRET), "{}", stored.body);
    assert_eq!(stored.body["source"], "messaging", "{}", stored.body);
    let data = &stored.body["data"];
    assert_eq!(data["from"], format!("sip:alice@{DOMAIN}"), "{data}");
    assert_eq!(data["to"], uri, "{data}");
    assert_eq!(data["size"], body.len(), "{data}");
    assert!(
        data["content_type"]
            .as_str()
            .is_some_and(|c| c.starts_with("text/plain")),
        "{data}"
    );
    let id = data["id"].as_str().expect("an id").to_owned();
    assert!(
        !String::from_utf8_lossy(&stored.raw).contains("secret plan"),
        "never the body: {}",
        stored.body
    );

    let mut b = Conn::ws(&server.ws_url(), "bob").await;
    register_ok(&mut b, &bob, 300).await;
    let m = b
        .wait_for("the stored MESSAGE", |m| {
            m.method().is_some_and(|x| x.as_str() == "MESSAGE")
        })
        .await;
    assert_eq!(m.body(), body.as_bytes());
    accept_message(&mut b, &m).await;

    let seen = receiver.until("message.delivered", WAIT).await;
    let delivered = seen.last().expect("the delivered event");
    assert!(delivered.signed_with(SECRET), "{}", delivered.body);
    let data = &delivered.body["data"];
    assert_eq!(data["id"], id.as_str(), "the same message: {data}");
    assert_eq!(data["from"], format!("sip:alice@{DOMAIN}"), "{data}");
    assert_eq!(data["to"], uri, "{data}");
    assert!(
        data["binding"]
            .as_str()
            .is_some_and(|k| k.starts_with(&format!("bob@{DOMAIN}/"))),
        "bob's device: {data}"
    );
    assert!(!String::from_utf8_lossy(&delivered.raw).contains("secret plan"));
    server.stop().await;
    receiver.stop();
}
