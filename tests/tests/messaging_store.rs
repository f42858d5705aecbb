//! The messaging plugin end to end, with SIPml5-shaped clients over WebSocket (and a UDP
//! phone): delivery to every tab of a user with 200 to the sender on the first accept; the
//! offline store (202 only once stored, then delivery on REGISTER in order with the original
//! From, Date and Content-Type); unknown user 404, body limit 413, quota 486; a device that
//! answers an error is retried from the store; a positive-delivery notice (RFC 5438) goes back
//! to the sender; is-composing is relayed and never stored; stored messages survive a restart;
//! accounts added or removed while the server runs decide between 202 and 404 at once.

use std::path::Path;
use std::sync::Arc;

use huddle::config::Config;
use huddle::store::{RedbStore, Store};
use huddle_e2e::plugin_support::{cargo_cdylib, plugin_entry, PluginServer};
use huddle_e2e::sip_client::{
    accept_message, register_ok, response, send_through_407, text, top_branch, uri_of, Conn,
    Session, Ua,
};
use huddle_e2e::{test_config, DOMAIN};
use huddle_sip::message::HeaderName;
use huddle_sip::Message;

fn plugin(config: &str) -> String {
    let lib = tokio::task::block_in_place(|| cargo_cdylib("huddle-plugin-messaging"));
    plugin_entry(&lib, &format!("[plugins.config]\n{config}"))
}

async fn server(config: &str) -> PluginServer {
    PluginServer::start(&plugin(config)).await
}

/// Alice's MESSAGE to `to_user` (through the 407), with `edit` applied to the request text;
/// returns the final response.
async fn send(
    conn: &mut Conn,
    ua: &Ua,
    to_user: &str,
    body: &str,
    edit: impl Fn(String) -> String,
) -> Message {
    let mut s = Session::new();
    let uri = format!("sip:{to_user}@{DOMAIN}");
    send_through_407(conn, ua, &mut s, "MESSAGE", &uri, |s, auth| {
        edit(ua.message_request(to_user, s, body, auth))
    })
    .await;
    conn.final_response(&s.call_id, s.cseq).await
}

fn is_message_with(body: &'static str) -> impl Fn(&Message) -> bool {
    move |m: &Message| {
        m.method().is_some_and(|x| x.as_str() == "MESSAGE") && m.body() == body.as_bytes()
    }
}

fn is_message(m: &Message) -> bool {
    m.method().is_some_and(|x| x.as_str() == "MESSAGE")
}

fn stored_count(store: &Arc<dyn Store>) -> usize {
    store
        .scan_prefix(b"plugin/messaging/q/", None, 1024)
        .map(|p| p.entries.len())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_reaches_every_tab_and_the_sender_gets_200_on_the_first_accept() {
    let server = server("").await;
    let alice = Ua::sipml5("alice", "alice-pw");
    let bob = Ua::sipml5("bob", "bob-pw");
    let mut a = Conn::ws(&server.ws_url(), "alice").await;
    let mut b1 = Conn::ws(&server.ws_url(), "bob tab 1").await;
    let mut b2 = Conn::ws(&server.ws_url(), "bob tab 2").await;
    register_ok(&mut b1, &bob, 300).await;
    register_ok(&mut b2, &bob, 300).await;

    let mut s = Session::new();
    let body = "hello bob — ☺ ünïcödé";
    send_through_407(
        &mut a,
        &alice,
        &mut s,
        "MESSAGE",
        "sip:bob@example.test",
        |s, auth| alice.message_request("bob", s, body, auth),
    )
    .await;
    let m1 = b1.wait_for("the MESSAGE on tab 1", is_message).await;
    let m2 = b2.wait_for("the MESSAGE on tab 2", is_message).await;
    for m in [&m1, &m2] {
        assert_eq!(m.body(), body.as_bytes(), "UTF-8 intact:\n{}", text(m));
        assert_eq!(
            uri_of(m.header(&HeaderName::From).unwrap()),
            "sip:alice@example.test"
        );
        assert_eq!(
            m.header(&HeaderName::ContentType),
            Some("text/plain;charset=utf-8")
        );
        assert!(
            m.header(&HeaderName::parse("Date")).is_some(),
            "{}",
            text(m)
        );
        assert!(
            m.header(&HeaderName::parse("Huddle-Binding")).is_none(),
            "the host strips its pin:\n{}",
            text(m)
        );
    }
    // SIPml5 answers only when the application accepts (SIPML5.md §5): the sender waits.
    accept_message(&mut b2, &m2).await;
    let ok = a.final_response(&s.call_id, s.cseq).await;
    assert_eq!(ok.status(), Some(200), "{}", text(&ok));
    accept_message(&mut b1, &m1).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_messages_are_stored_then_delivered_in_order_on_register() {
    let server = server("").await;
    let alice = Ua::sipml5("alice", "alice-pw");
    let bob = Ua::sipml5("bob", "bob-pw");
    let mut a = Conn::ws(&server.ws_url(), "alice").await;
    let bodies = ["first", "second ☺", "third — último"];
    let mut dates = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        let date = format!("Thu, 26 Nov 2026 10:0{i}:00 GMT");
        let d = date.clone();
        let r = send(&mut a, &alice, "bob", body, move |req| {
            req.replace("Max-Forwards:", &format!("Date: {d}\r\nMax-Forwards:"))
        })
        .await;
        assert_eq!(r.status(), Some(202), "{}", text(&r));
        dates.push(date);
    }
    assert_eq!(
        stored_count(&server.store),
        3,
        "each 202 follows the store write"
    );

    let mut b = Conn::ws(&server.ws_url(), "bob").await;
    register_ok(&mut b, &bob, 300).await;
    for (body, date) in bodies.iter().zip(&dates) {
        let m = b.wait_for("a stored MESSAGE", is_message).await;
        assert_eq!(
            std::str::from_utf8(m.body()).unwrap(),
            *body,
            "in order:\n{}",
            text(&m)
        );
        assert_eq!(
            uri_of(m.header(&HeaderName::From).unwrap()),
            "sip:alice@example.test"
        );
        assert_eq!(m.header(&HeaderName::parse("Date")), Some(date.as_str()));
        assert_eq!(
            m.header(&HeaderName::ContentType),
            Some("text/plain;charset=utf-8")
        );
        accept_message(&mut b, &m).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_user_404_large_body_413_full_mailbox_486() {
    let server = server("max_body_bytes = 32\nquota_messages = 2").await;
    let alice = Ua::sipml5("alice", "alice-pw");
    let mut a = Conn::ws(&server.ws_url(), "alice").await;

    let r = send(&mut a, &alice, "nobody", "hi", |r| r).await;
    assert_eq!(r.status(), Some(404), "{}", text(&r));
    let r = send(&mut a, &alice, "bob", &"x".repeat(33), |r| r).await;
    assert_eq!(r.status(), Some(413), "{}", text(&r));
    assert!(
        r.reason().unwrap_or("").contains("32 Bytes"),
        "{}",
        text(&r)
    );
    for _ in 0..2 {
        let r = send(&mut a, &alice, "bob", "fits", |r| r).await;
        assert_eq!(r.status(), Some(202), "{}", text(&r));
    }
    let r = send(&mut a, &alice, "bob", "one too many", |r| r).await;
    assert_eq!(r.status(), Some(486), "{}", text(&r));
    assert!(r.reason().unwrap_or("").contains("Full"), "{}", text(&r));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_written_while_running_decide_between_202_and_404() {
    // The plugin asks the host's accounts (plugin ABI 1.5 `user_exists`: the host's account
    // set, kept current by a watch on the store it shares with this test), not
    // the user's address: erin, written to the store after start-up, is unknown to the
    // proxy's routing (which would answer 404) yet gets her message stored.
    let server = server("").await;
    let alice = Ua::sipml5("alice", "alice-pw");
    let mut a = Conn::ws(&server.ws_url(), "alice").await;
    let r = send(&mut a, &alice, "erin", "before", |r| r).await;
    assert_eq!(r.status(), Some(404), "{}", text(&r));

    let erin = huddle::users::UserRecord::new("erin", DOMAIN, "erin-pw");
    huddle::users::put_user(server.store.as_ref(), &erin).unwrap();
    let r = send(&mut a, &alice, "erin", "while she exists", |r| r).await;
    assert_eq!(r.status(), Some(202), "{}", text(&r));
    assert_eq!(stored_count(&server.store), 1);

    assert!(huddle::users::remove_user(server.store.as_ref(), "erin").unwrap());
    let r = send(&mut a, &alice, "erin", "after", |r| r).await;
    assert_eq!(r.status(), Some(404), "{}", text(&r));
    assert_eq!(stored_count(&server.store), 1, "nothing kept for no one");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_answers_an_error_gets_the_message_again() {
    let server = server("retry_base_ms = 100").await;
    let alice = Ua::sipml5("alice", "alice-pw");
    let bob = Ua::sipml5("bob", "bob-pw");
    let mut a = Conn::ws(&server.ws_url(), "alice").await;
    let mut b = Conn::ws(&server.ws_url(), "bob").await;
    register_ok(&mut b, &bob, 300).await;

    let mut s = Session::new();
    send_through_407(
        &mut a,
        &alice,
        &mut s,
        "MESSAGE",
        "sip:bob@example.test",
        |s, auth| alice.message_request("bob", s, "try again", auth),
    )
    .await;
    let first = b
        .wait_for("the MESSAGE", is_message_with("try again"))
        .await;
    b.send(&response(
        &first,
        500,
        "Server Internal Error",
        Some("t1"),
        &[],
        None,
    ))
    .await;
    let r = a.final_response(&s.call_id, s.cseq).await;
    assert_eq!(r.status(), Some(202), "stored for a retry:\n{}", text(&r));
    let again = b
        .wait_for("the retried MESSAGE", is_message_with("try again"))
        .await;
    assert_ne!(
        again.call_id(),
        first.call_id(),
        "a new request, not a retransmission"
    );
    accept_message(&mut b, &again).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sender_gets_a_delivery_notice_when_it_asks() {
    let server = server("imdn = \"both\"").await;
    let alice = Ua::sipml5("alice", "alice-pw");
    let bob = Ua::sipml5("bob", "bob-pw");
    let mut a = Conn::ws(&server.ws_url(), "alice").await;
    let mut b = Conn::ws(&server.ws_url(), "bob").await;
    register_ok(&mut a, &alice, 300).await;
    register_ok(&mut b, &bob, 300).await;

    let mut s = Session::new();
    send_through_407(
        &mut a,
        &alice,
        &mut s,
        "MESSAGE",
        "sip:bob@example.test",
        |s, auth| {
            alice.message_request("bob", s, "notify me", auth).replace(
            "Max-Forwards:",
            "Disposition-Notification: positive-delivery\r\nMessage-ID: imdn-77\r\nMax-Forwards:",
        )
        },
    )
    .await;
    let m = b.wait_for("the MESSAGE", is_message).await;
    accept_message(&mut b, &m).await;
    let ok = a.final_response(&s.call_id, s.cseq).await;
    assert_eq!(ok.status(), Some(200));
    let notice = a
        .wait_for("the delivery notice", |m| {
            is_message(m) && m.header(&HeaderName::ContentType) == Some("message/imdn+xml")
        })
        .await;
    let xml = std::str::from_utf8(notice.body()).unwrap();
    assert!(xml.contains("<message-id>imdn-77</message-id>"), "{xml}");
    assert!(xml.contains("<delivered/>"), "{xml}");
    assert_eq!(
        uri_of(notice.header(&HeaderName::From).unwrap()),
        "sip:bob@example.test"
    );
    accept_message(&mut a, &notice).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn is_composing_is_relayed_and_never_stored() {
    let server = server("").await;
    let alice = Ua::sipml5("alice", "alice-pw");
    let bob = Ua::sipml5("bob", "bob-pw");
    let mut a = Conn::ws(&server.ws_url(), "alice").await;
    let composing = "<?xml version=\"1.0\"?><isComposing xmlns=\"urn:ietf:params:xml:ns:im-iscomposing\"><state>active</state></isComposing>";
    let as_composing =
        |r: String| r.replace("text/plain;charset=utf-8", "application/im-iscomposing+xml");
    let r = send(&mut a, &alice, "bob", composing, as_composing).await;
    assert_eq!(r.status(), Some(480), "bob is offline:\n{}", text(&r));
    assert_eq!(stored_count(&server.store), 0, "never stored");

    let mut b = Conn::ws(&server.ws_url(), "bob").await;
    register_ok(&mut b, &bob, 300).await;
    let mut s = Session::new();
    send_through_407(
        &mut a,
        &alice,
        &mut s,
        "MESSAGE",
        "sip:bob@example.test",
        |s, auth| as_composing(alice.message_request("bob", s, composing, auth)),
    )
    .await;
    let m = b.wait_for("the indication", is_message).await;
    assert_eq!(
        m.header(&HeaderName::ContentType),
        Some("application/im-iscomposing+xml")
    );
    accept_message(&mut b, &m).await;
    let ok = a.final_response(&s.call_id, s.cseq).await;
    assert_eq!(ok.status(), Some(200));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_messages_survive_a_restart_and_go_to_a_udp_phone() {
    let dir = tempfile::tempdir().unwrap();
    let text_config = test_config(dir.path(), DOMAIN, &plugin(""));
    let config = Config::from_toml(&text_config, Path::new("test.toml")).unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&config.store.path).unwrap());
    let running = huddle::server::start(config, store.clone()).await.unwrap();
    let alice = Ua::sipml5("alice", "alice-pw");
    let mut a = Conn::ws(&running.ws_url().unwrap(), "alice").await;
    let r = send(&mut a, &alice, "carol", "across a restart", |r| r).await;
    assert_eq!(r.status(), Some(202), "{}", text(&r));
    drop(a);
    running.shutdown().await;
    drop(store);

    let config = Config::from_toml(&text_config, Path::new("test.toml")).unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&config.store.path).unwrap());
    let running = huddle::server::start(config, store.clone()).await.unwrap();
    let udp = running.addrs[&huddle::transport::Transport::Udp];
    let mut c = Conn::udp(udp, "carol's phone").await;
    let carol = Ua::udp("carol", "carol-pw", c.local_addr());
    register_ok(&mut c, &carol, 300).await;
    let m = c
        .wait_for("the stored MESSAGE", is_message_with("across a restart"))
        .await;
    assert_eq!(
        m.request_uri(),
        Some(carol.contact_uri.as_str()),
        "{}",
        text(&m)
    );
    accept_message(&mut c, &m).await;
    running.shutdown().await;
}

/// Delivery progress per device survives a restart: a message stored for carol (offline)
/// goes to both her phones when they register; the first accepts, the second has not answered
/// when the server restarts (the record now says "delivered, still owed to the second phone").
/// After the restart the second phone gets it and the first does not get it again: the next
/// MESSAGE the first phone sees is a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_device_gets_a_stored_message_once_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let text_config = test_config(dir.path(), DOMAIN, &plugin(""));
    let start = |text: String| async move {
        let config = Config::from_toml(&text, Path::new("test.toml")).unwrap();
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(&config.store.path).unwrap());
        let running = huddle::server::start(config, store.clone()).await.unwrap();
        (running, store)
    };
    let (running, store) = start(text_config.clone()).await;
    let alice = Ua::sipml5("alice", "alice-pw");
    let mut a = Conn::ws(&running.ws_url().unwrap(), "alice").await;
    let r = send(&mut a, &alice, "carol", "first", |r| r).await;
    assert_eq!(r.status(), Some(202), "{}", text(&r));
    let mut queue = store.watch_prefix(b"plugin/messaging/q/").unwrap();

    let udp = running.addrs[&huddle::transport::Transport::Udp];
    let mut p1 = Conn::udp(udp, "carol's first phone").await;
    let carol1 = Ua::udp("carol", "carol-pw", p1.local_addr());
    let mut p2 = Conn::udp(udp, "carol's second phone").await;
    let carol2 = Ua::udp("carol", "carol-pw", p2.local_addr());
    register_ok(&mut p1, &carol1, 3600).await;
    let m1 = p1
        .wait_for("the stored MESSAGE", is_message_with("first"))
        .await;
    register_ok(&mut p2, &carol2, 3600).await;
    let m2 = p2
        .wait_for("the stored MESSAGE", is_message_with("first"))
        .await;
    // The first phone accepts while the second has not answered: the record is rewritten
    // with the progress.
    accept_message(&mut p1, &m1).await;
    let rewritten = tokio::time::timeout(huddle_e2e::sip_client::WAIT, queue.recv()).await;
    assert!(
        matches!(rewritten, Ok(Some(_))),
        "the progress was not written ({rewritten:?})"
    );
    assert_eq!(stored_count(&store), 1, "still owed to the second phone");
    drop(queue);
    drop(a);
    running.shutdown().await;
    drop(store);

    let (running, store) = start(text_config).await;
    let udp = running.addrs[&huddle::transport::Transport::Udp];
    p1.set_server(udp);
    p2.set_server(udp);
    register_ok(&mut p1, &carol1, 3600).await;
    register_ok(&mut p2, &carol2, 3600).await;
    // The old server's copies may still wait in the phones' sockets: Timer E resends a copy
    // every T1 (500 ms) until it is answered, and neither phone reads its socket between
    // taking its copy and the restart. A retransmission is the old transaction (same branch),
    // not a delivery: only a copy sent by the restarted server counts.
    let (old1, old2) = (top_branch(&m1), top_branch(&m2));
    let again = p2
        .wait_for("the owed MESSAGE", |m| {
            is_message_with("first")(m) && top_branch(m) != old2
        })
        .await;
    accept_message(&mut p2, &again).await;

    let mut a = Conn::ws(&running.ws_url().unwrap(), "alice").await;
    let mut s = Session::new();
    send_through_407(
        &mut a,
        &alice,
        &mut s,
        "MESSAGE",
        "sip:carol@example.test",
        |s, auth| alice.message_request("carol", s, "second", auth),
    )
    .await;
    let next = p1
        .wait_for("a MESSAGE", |m| is_message(m) && top_branch(m) != old1)
        .await;
    assert_eq!(
        next.body(),
        b"second",
        "the first phone got the first message once only:\n{}",
        text(&next)
    );
    accept_message(&mut p1, &next).await;
    assert_eq!(
        a.final_response(&s.call_id, s.cseq).await.status(),
        Some(200)
    );
    drop(store);
    running.shutdown().await;
}
