//! Two SIPml5 tabs of one user: both register the byte-identical Contact
//! `sip:alice@df7jal23ls0d.invalid;…` (SIPML5.md §3) over their own WebSocket, both stay
//! bound (also across a refresh), both receive a MESSAGE with a UTF-8 body intact in binary frames, and closing one
//! tab's socket removes exactly its binding at once.

use huddle_e2e::sip_client::{
    accept_message, fetch_bindings, register, register_ok, send_through_407, text, uri_of, Conn,
    Session, Ua,
};
use huddle_e2e::TestServer;
use huddle_sip::message::HeaderName;
use huddle_sip::Message;

/// Bob (SIPml5 shape) sends a MESSAGE to alice through the 407 challenge; returns its session.
async fn bob_sends(bob_conn: &mut Conn, bob: &Ua, body: &str) -> Session {
    let mut s = Session::new();
    let uri = "sip:alice@example.test";
    send_through_407(bob_conn, bob, &mut s, "MESSAGE", uri, |s, auth| {
        bob.message_request("alice", s, body, auth)
    })
    .await;
    s
}

/// A tab receives the MESSAGE intact and accepts it as SIPml5's `accept()` does.
async fn tab_receives(tab: &mut Conn, alice: &Ua, body: &str) {
    let req: Message = tab.recv_request("MESSAGE").await;
    assert_eq!(
        req.request_uri(),
        Some(alice.contact_uri.as_str()),
        "{}: the MESSAGE targets the registered Contact:\n{}",
        tab.name,
        text(&req)
    );
    assert_eq!(
        req.body(),
        body.as_bytes(),
        "{}: the UTF-8 body arrives byte for byte:\n{}",
        tab.name,
        text(&req)
    );
    assert_eq!(
        req.header(&HeaderName::ContentLength)
            .and_then(|v| v.trim().parse::<usize>().ok()),
        Some(body.len()),
        "{}: Content-Length counts UTF-8 bytes",
        tab.name
    );
    assert_eq!(
        req.header(&HeaderName::ContentType),
        Some("text/plain;charset=utf-8")
    );
    accept_message(tab, &req).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tabs_with_one_contact_both_receive_and_close_unbinds_one() {
    let server = TestServer::start().await;
    let url = server.ws_url();
    let alice = Ua::sipml5("alice", "alice-pw");
    let bob = Ua::sipml5("bob", "bob-pw");

    let mut tab1 = Conn::ws(&url, "tab1").await;
    let mut tab2 = Conn::ws(&url, "tab2").await;
    let mut s1 = register_ok(&mut tab1, &alice, 300).await;
    let s2 = register_ok(&mut tab2, &alice, 300).await;
    assert_ne!(s1.call_id, s2.call_id);

    let mut observer = Conn::ws(&url, "observer").await;
    let bindings = fetch_bindings(&mut observer, &alice).await;
    assert_eq!(
        bindings.len(),
        2,
        "two tabs registering the identical SIPml5 Contact must stay two bindings \
         (SIPML5.md §3, §9.3): {bindings:?}"
    );
    for b in &bindings {
        assert_eq!(uri_of(b), alice.contact_uri, "{bindings:?}");
    }

    // Tab 1's periodic refresh (same Call-ID, CSeq + 1, nc + 1) replaces its own binding only.
    let resp = register(
        &mut tab1,
        &alice,
        &mut s1,
        Some(&alice.register_contact(300)),
        None,
    )
    .await;
    assert_eq!(resp.status(), Some(200), "{}", text(&resp));
    let bindings = fetch_bindings(&mut observer, &alice).await;
    assert_eq!(
        bindings.len(),
        2,
        "a refresh from one tab must not replace the other tab's binding: {bindings:?}"
    );

    let body = "héllo ☺";
    let mut bob_conn = Conn::ws(&url, "bob").await;
    let s = bob_sends(&mut bob_conn, &bob, body).await;
    tab_receives(&mut tab1, &alice, body).await;
    tab_receives(&mut tab2, &alice, body).await;
    let resp = bob_conn.final_response(&s.call_id, s.cseq).await;
    assert_eq!(resp.status(), Some(200), "{}", text(&resp));

    // A tab closes: its binding goes with its connection, the other stays.
    tab1.close().await;
    let bindings = fetch_bindings(&mut observer, &alice).await;
    assert_eq!(
        bindings.len(),
        1,
        "closing tab 1's WebSocket must remove its binding at once: {bindings:?}"
    );

    let body2 = "encore ☺ é";
    let s = bob_sends(&mut bob_conn, &bob, body2).await;
    tab_receives(&mut tab2, &alice, body2).await;
    let resp = bob_conn.final_response(&s.call_id, s.cseq).await;
    assert_eq!(
        resp.status(),
        Some(200),
        "the MESSAGE reaches tab 2 alone:\n{}",
        text(&resp)
    );

    server.stop().await;
}
