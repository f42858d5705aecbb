//! Presence state survives a restart on the same store: a UDP watcher's subscription and a
//! UDP publisher's publication are restored, the watcher gets a NOTIFY of the current state
//! from the restarted server without subscribing again, the publisher's entity tag still
//! works, and the next change reaches the watcher in the same dialog.

use huddle::store::Namespace;
use huddle::transport::Transport;
use huddle_e2e::plugin_support::{cargo_cdylib, plugin_entry, PluginServer};
use huddle_e2e::sip_client::{
    body_text, response, send_through_407, text, top_branch, Conn, Session, Ua,
};
use huddle_e2e::{test_config, TestServer, DOMAIN};
use huddle_sip::message::HeaderName;
use huddle_sip::Message;

fn pidf(note: &str) -> String {
    format!("<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:bob@example.test\"><tuple id=\"desk\"><status><basic>open</basic></status></tuple><note>{note}</note></presence>")
}

/// Event is added by the application (SIPML5.md §6–7).
const EVENT: &str = "Event: presence\r\n";

/// The next NOTIFY of the subscription dialog `call_id` not answered yet, answered 200 (as
/// [`Conn::notify_ok`]). Over UDP the server resends a NOTIFY every T1 (500 ms) until its 200
/// arrives: when the test answers late (a loaded machine), a copy of one answered already
/// (same top Via branch: the same transaction) waits in the socket, and it is not a new
/// state. `answered` holds the branches answered so far.
async fn next_notify(conn: &mut Conn, call_id: &str, answered: &mut Vec<String>) -> Message {
    let n = conn
        .wait_for(&format!("a new NOTIFY of {call_id}"), |m| {
            m.method().is_some_and(|x| x.as_str() == "NOTIFY")
                && m.call_id() == Some(call_id)
                && m.branch().is_some_and(|b| !answered.iter().any(|a| a == b))
        })
        .await;
    conn.send(&response(&n, 200, "OK", None, &[], None)).await;
    answered.push(top_branch(&n));
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_and_publications_survive_a_restart() {
    let lib = tokio::task::block_in_place(|| cargo_cdylib("huddle-plugin-presence"));
    let extra = plugin_entry(&lib, "[plugins.config]\ndomain = \"example.test\"\n");
    let server = PluginServer::start(&extra).await;

    let mut a = Conn::udp(server.addr(Transport::Udp), "alice-udp").await;
    let alice = Ua::udp("alice", "alice-pw", a.local_addr());
    let mut b = Conn::udp(server.addr(Transport::Udp), "bob-udp").await;
    let bob = Ua::udp("bob", "bob-pw", b.local_addr());

    let mut answered = Vec::new();
    let mut sub = Session::new();
    send_through_407(
        &mut a,
        &alice,
        &mut sub,
        "SUBSCRIBE",
        "sip:bob@example.test",
        |s, auth| alice.subscribe_request("bob", s, 600, EVENT, auth),
    )
    .await;
    assert_eq!(
        a.final_response(&sub.call_id, sub.cseq).await.status(),
        Some(200)
    );
    let first = next_notify(&mut a, &sub.call_id, &mut answered).await;
    assert!(
        body_text(&first).contains("<basic>closed</basic>"),
        "{}",
        text(&first)
    );

    let mut publ = Session::new();
    send_through_407(&mut b, &bob, &mut publ, "PUBLISH", &bob.aor(), |s, auth| {
        bob.publish_request(s, 600, EVENT, Some(&pidf("before the restart")), auth)
    })
    .await;
    let r = b.final_response(&publ.call_id, publ.cseq).await;
    assert_eq!(r.status(), Some(200), "{}", text(&r));
    let etag = r.header(&HeaderName::parse("SIP-ETag")).unwrap().to_owned();
    let n = next_notify(&mut a, &sub.call_id, &mut answered).await;
    assert!(body_text(&n).contains("before the restart"));
    let cseq_before = n.cseq().unwrap().seq;

    // Restart on the same store.
    let PluginServer {
        running,
        store,
        dir,
    } = server;
    running.shutdown().await;
    // Other plugins read bob's composed document from the presence namespace (the shutdown
    // wrote what the write-behind window still held).
    let key = Namespace::plugin("presence")
        .expect("a valid plugin name")
        .key(b"presence/bob@example.test");
    let doc = store
        .get(&key)
        .expect("store readable")
        .expect("bob's composed document");
    assert!(String::from_utf8_lossy(&doc).contains("before the restart"));
    drop(store);
    let config = test_config(dir.path(), DOMAIN, &extra);
    let server = TestServer::start_in(dir, &config).await;
    a.set_server(server.addr(Transport::Udp));
    b.set_server(server.addr(Transport::Udp));

    // Without subscribing again, alice hears the current state in the same dialog.
    let n = next_notify(&mut a, &sub.call_id, &mut answered).await;
    assert!(body_text(&n).contains("before the restart"), "{}", text(&n));
    assert!(
        n.cseq().unwrap().seq > cseq_before,
        "the dialog's CSeq goes on: {}",
        text(&n)
    );
    assert_eq!(
        n.from_header().unwrap().tag(),
        first.from_header().unwrap().tag()
    );

    // bob's entity tag still works (after a fresh challenge: the restarted server's nonces
    // are new); his change reaches alice.
    publ.cseq += 1;
    let if_match = format!("{EVENT}SIP-If-Match: {etag}\r\n");
    let after = pidf("after the restart");
    send_through_407(&mut b, &bob, &mut publ, "PUBLISH", &bob.aor(), |s, auth| {
        bob.publish_request(s, 600, &if_match, Some(&after), auth)
    })
    .await;
    let r = b.final_response(&publ.call_id, publ.cseq).await;
    assert_eq!(r.status(), Some(200), "{}", text(&r));
    let n = next_notify(&mut a, &sub.call_id, &mut answered).await;
    assert!(body_text(&n).contains("after the restart"), "{}", text(&n));
    server.stop().await;
}
