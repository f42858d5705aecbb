//! What the proxy refuses, and what it must not challenge (RFC 3261 §16.3, §16.5, §22.3):
//!
//! * MESSAGE to a user this domain does not have → 404 (§16.5: the domain is ours, the
//!   location service has no such AOR);
//! * to a known but unregistered user (carol) → 480 (RFC 3261 §21.4.18);
//! * `Max-Forwards: 0` → 483, never forwarded (§16.3 step 3);
//! * a request for another domain from an authenticated local user → 403 (no open relay);
//! * a request with a To tag (in-dialog shape) must not be a way around that rule either;
//! * a request from a foreign domain's user to a registered local user is delivered without a
//!   challenge (the proxy can only authenticate its own users, §22.3);
//! * an in-dialog request is not challenged: the callee's BYE (a SIPml5 callee never got
//!   credentials for the dialog, and SIPml5 cannot answer a fresh challenge in a dialog,
//!   SIPML5.md §3) reaches the caller.

use huddle::transport::Transport;
use huddle_e2e::sip_client::{
    accept_message, answer, chrome_sdp, method_of, new_tag, register_ok, response, ring,
    send_through_407, text, uri_of, Conn, Dialog, Session, Ua, WAIT,
};
use huddle_e2e::TestServer;
use huddle_sip::message::HeaderName;
use huddle_sip::Message;

/// A SIPml5 page of a user of another domain, with no account here.
fn eve() -> Ua {
    let mut eve = Ua::sipml5("eve", "not-ours");
    eve.domain = "foreign.test".to_owned();
    eve
}

/// Alice (authenticated after a 407) sends a MESSAGE to `target`; returns the final response.
async fn alice_messages(a: &mut Conn, alice: &Ua, target: &str) -> Message {
    let mut s = Session::new();
    send_through_407(a, alice, &mut s, "MESSAGE", target, |s, auth| {
        alice.message_request_to(target, s, "hello", None, auth)
    })
    .await;
    a.final_response(&s.call_id, s.cseq).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_to_an_unknown_user_is_404() {
    let server = TestServer::start().await;
    let alice = Ua::sipml5("alice", "alice-pw");
    let mut a = Conn::ws(&server.ws_url(), "alice").await;
    let resp = alice_messages(&mut a, &alice, "sip:nobody@example.test").await;
    assert_eq!(
        resp.status(),
        Some(404),
        "no such user in our domain:\n{}",
        text(&resp)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_to_a_known_unregistered_user_is_480() {
    let server = TestServer::start().await;
    let alice = Ua::sipml5("alice", "alice-pw");
    let mut a = Conn::ws(&server.ws_url(), "alice").await;
    let resp = alice_messages(&mut a, &alice, "sip:carol@example.test").await;
    assert_eq!(
        resp.status(),
        Some(480),
        "carol exists but has no binding: 480 Temporarily Unavailable:\n{}",
        text(&resp)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_forwards_zero_is_483_and_not_forwarded() {
    let server = TestServer::start().await;
    let bob = Ua::sipml5("bob", "bob-pw");
    let mut b = Conn::ws(&server.ws_url(), "bob").await;
    register_ok(&mut b, &bob, 300).await;

    let eve = eve();
    let mut e = Conn::ws(&server.ws_url(), "eve").await;
    let s = Session::new();
    let req = eve
        .message_request_to("sip:bob@example.test", &s, "hop", None, None)
        .replace("Max-Forwards: 70\r\n", "Max-Forwards: 0\r\n");
    assert!(req.contains("Max-Forwards: 0\r\n"));
    let resp = e.request(&req).await;
    assert_eq!(
        resp.status(),
        Some(483),
        "RFC 3261 §16.3 step 3: Max-Forwards 0 on a request to forward → 483:\n{}",
        text(&resp)
    );
    b.barrier().await;
    let got = b.take_queued(Message::is_request);
    assert!(
        got.is_empty(),
        "a request with Max-Forwards 0 must not be forwarded:\n{}",
        got.iter().map(text).collect::<Vec<_>>().join("\n---\n")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_to_another_domain_from_a_local_user_is_403() {
    let server = TestServer::start().await;
    let alice = Ua::sipml5("alice", "alice-pw");
    let mut a = Conn::ws(&server.ws_url(), "alice").await;
    let resp = alice_messages(&mut a, &alice, "sip:x@foreign.test").await;
    assert_eq!(
        resp.status(),
        Some(403),
        "no relaying to other domains, even for an authenticated user:\n{}",
        text(&resp)
    );
    server.stop().await;
}

/// A request that merely carries a To tag, with no Route naming this proxy (so it belongs to
/// no dialog this proxy record-routed), must not be relayed to an arbitrary address either:
/// otherwise anybody can use the server as an open relay by adding `;tag=x` to To.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_to_tag_does_not_open_a_relay() {
    let server = TestServer::start().await;
    // The "victim": any SIP endpoint somewhere, here a UDP socket of ours.
    let mut victim = Conn::udp(server.addr(Transport::Udp), "victim").await;
    let target = format!("sip:x@{};transport=udp", victim.local_addr());

    let alice = Ua::sipml5("alice", "alice-pw");
    let mut a = Conn::ws(&server.ws_url(), "alice").await;
    let s = Session::new();
    let req = alice.message_request_to(&target, &s, "spam", Some(&new_tag()), None);
    a.send(&req).await;
    let is_final = |m: &Message| {
        !m.is_request()
            && m.call_id() == Some(s.call_id.as_str())
            && m.status().is_some_and(|c| c >= 200)
    };
    let is_copy = |m: &Message| method_of(m).as_deref() == Some("MESSAGE");
    // Whichever comes first: alice's answer (refused) or a copy at the victim (relayed).
    let (resp, mut relayed) = tokio::select! {
        r = a.wait_for_within(WAIT, is_final) => (r, None),
        c = victim.wait_for_within(WAIT, is_copy) => (None, c),
    };
    if relayed.is_none() {
        // The server writes to one UDP socket in order: anything it relayed before answering
        // alice is at the victim once the victim's own round trip is done.
        victim.barrier().await;
        relayed = victim.take_queued(is_copy).pop();
    }
    if let Some(copy) = relayed {
        panic!(
            "open relay: an unauthenticated MESSAGE from alice with a made-up To tag and no \
             Route naming the proxy, Request-URI {target}, was forwarded there (the proxy \
             treats any To-tagged request as in-dialog: no challenge, and the foreign-domain \
             check is skipped). The victim got:\n{}",
            text(&copy)
        );
    }
    let resp = resp.unwrap_or_else(|| panic!("no final response within {WAIT:?}"));
    assert!(
        resp.status().is_some_and(|c| c >= 400),
        "refused:\n{}",
        text(&resp)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_user_reaches_a_registered_local_user_without_a_challenge() {
    let server = TestServer::start().await;
    let bob = Ua::sipml5("bob", "bob-pw");
    let mut b = Conn::ws(&server.ws_url(), "bob").await;
    register_ok(&mut b, &bob, 300).await;

    let eve = eve();
    let mut e = Conn::ws(&server.ws_url(), "eve").await;
    let s = Session::new();
    let body = "hi bob, from another domain";
    let req = eve.message_request_to("sip:bob@example.test", &s, body, None, None);
    e.send(&req).await;
    let got = b.recv_request("MESSAGE").await;
    assert_eq!(got.body(), body.as_bytes());
    assert_eq!(
        uri_of(got.header(&HeaderName::From).unwrap_or_default()),
        "sip:eve@foreign.test"
    );
    accept_message(&mut b, &got).await;
    let resp = e.final_response(&s.call_id, s.cseq).await;
    assert_eq!(
        resp.status(),
        Some(200),
        "a foreign user cannot be challenged by our realm; the MESSAGE is delivered and bob's \
         200 comes back:\n{}",
        text(&resp)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callees_in_dialog_bye_is_not_challenged() {
    let server = TestServer::start().await;
    let url = server.ws_url();
    let alice = Ua::sipml5("alice", "alice-pw");
    let bob = Ua::sipml5("bob", "bob-pw");
    let mut a = Conn::ws(&url, "alice").await;
    let mut b = Conn::ws(&url, "bob").await;
    register_ok(&mut b, &bob, 300).await;

    let mut s = Session::new();
    let invite = send_through_407(
        &mut a,
        &alice,
        &mut s,
        "INVITE",
        "sip:bob@example.test",
        |s, auth| alice.invite_request("bob", s, &chrome_sdp("actpass", 0), auth),
    )
    .await;
    let inv = b.recv_request("INVITE").await;
    let bob_tag = ring(&mut b, &bob, &inv).await;
    answer(&mut b, &bob, &inv, &bob_tag, &chrome_sdp("active", 0)).await;
    let ok = a.final_response(&s.call_id, s.cseq).await;
    assert_eq!(ok.status(), Some(200), "{}", text(&ok));
    let mut ad = Dialog::caller(&invite, &ok, s.auth.clone());
    a.send(&ad.request(&alice, "ACK", &[], None)).await;
    b.recv_request("ACK").await;

    // Bob hangs up: a BYE in the dialog, without any credentials.
    let mut bd = Dialog::callee(&inv, &bob_tag);
    let bye = bd.request(&bob, "BYE", &[], None);
    assert!(!bye.contains("Authorization"), "{bye}");
    b.send(&bye).await;
    let got = a.recv_request("BYE").await;
    a.send(&response(&got, 200, "OK", None, &[], None)).await;
    let resp = b.final_response(&bd.call_id, bd.cseq).await;
    assert_eq!(
        resp.status(),
        Some(200),
        "the callee's BYE must reach the caller without a challenge:\n{}",
        text(&resp)
    );
    server.stop().await;
}
