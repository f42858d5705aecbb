//! A call between two SIPml5 pages over WebSocket, both with `df7jal23ls0d.invalid` Contacts
//! (SIPML5.md §4): INVITE → 407 → ACK → INVITE with Proxy-Authorization reaches the callee's
//! connection; 100/180/200 come back with Record-Route and the 6 KB SDP byte for byte; the
//! caller's ACK and BYE, built per RFC 3261 §12.2.1.1 (Request-URI = the callee's `.invalid`
//! Contact, Route = Record-Route reversed), reach the callee; and an in-dialog INFO from the
//! callee (Route = Record-Route in order) reaches the caller's connection.

use huddle_e2e::sip_client::{
    answer, chrome_sdp, cseq_of, param_of, register_ok, response, ring, send_through_407, text,
    uri_of, Conn, Dialog, Session, Ua, SIPML5_HOST,
};
use huddle_e2e::TestServer;
use huddle_sip::message::HeaderName;
use huddle_sip::Message;

fn to_tag(msg: &Message) -> Option<String> {
    msg.header(&HeaderName::To).and_then(|t| param_of(t, "tag"))
}

fn from_tag(msg: &Message) -> Option<String> {
    msg.header(&HeaderName::From)
        .and_then(|t| param_of(t, "tag"))
}

/// What the proxy must have done to an in-dialog request before the UA sees it: the Route
/// values naming the proxy are consumed (RFC 3261 §16.4), so none is left.
fn assert_routes_consumed(req: &Message, who: &str) {
    assert_eq!(
        req.header_count(&HeaderName::Route),
        0,
        "{who}: the proxy's own Route values must be removed before delivery:\n{}",
        text(req)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipml5_call_routes_invite_ack_info_bye_over_the_websocket_flows() {
    let server = TestServer::start().await;
    let url = server.ws_url();
    let alice = Ua::sipml5("alice", "alice-pw");
    let bob = Ua::sipml5("bob", "bob-pw");
    let mut a = Conn::ws(&url, "alice").await;
    let mut b = Conn::ws(&url, "bob").await;
    register_ok(&mut a, &alice, 300).await;
    register_ok(&mut b, &bob, 300).await;

    let offer = chrome_sdp("actpass", 6 * 1024);
    let answer_sdp = chrome_sdp("active", 6 * 1024);
    assert!(offer.len() >= 6 * 1024 && answer_sdp.len() >= 6 * 1024);

    // Alice calls bob: INVITE → 407 → ACK (same branch) → INVITE with Proxy-Authorization.
    let mut s = Session::new();
    let invite = send_through_407(
        &mut a,
        &alice,
        &mut s,
        "INVITE",
        "sip:bob@example.test",
        |s, auth| alice.invite_request("bob", s, &offer, auth),
    )
    .await;

    // The first request on bob's connection is the authorized INVITE (the ACK for the 407
    // ends at the proxy).
    let inv = b.wait_for("a request", Message::is_request).await;
    assert_eq!(
        inv.method().map(|m| m.as_str().to_owned()).as_deref(),
        Some("INVITE"),
        "bob's first request:\n{}",
        text(&inv)
    );
    assert_eq!(cseq_of(&inv), s.cseq, "{}", text(&inv));
    assert_eq!(inv.call_id(), Some(s.call_id.as_str()));
    assert_eq!(
        inv.request_uri(),
        Some(bob.contact_uri.as_str()),
        "the INVITE targets bob's registered Contact:\n{}",
        text(&inv)
    );
    assert!(
        inv.header_count(&HeaderName::RecordRoute) > 0,
        "the proxy must Record-Route so in-dialog requests to `.invalid` Contacts find the \
         WebSocket (SIPML5.md §4, §9.5):\n{}",
        text(&inv)
    );
    assert_eq!(
        inv.body(),
        offer.as_bytes(),
        "the SDP offer arrives byte for byte"
    );

    // Bob's SIPml5: 100 from the transaction layer, automatic 180 with To-tag, then accept().
    let bob_tag = ring(&mut b, &bob, &inv).await;

    let ringing = loop {
        let r = a.next_response(&s.call_id, s.cseq).await;
        if r.status() != Some(100) {
            break r;
        }
    };
    assert_eq!(ringing.status(), Some(180), "{}", text(&ringing));
    assert_eq!(
        to_tag(&ringing).as_deref(),
        Some(bob_tag.as_str()),
        "SIPml5 rejects a 1xx without To-tag:\n{}",
        text(&ringing)
    );
    assert!(ringing.header_count(&HeaderName::RecordRoute) > 0);

    answer(&mut b, &bob, &inv, &bob_tag, &answer_sdp).await;
    let ok = a.next_response(&s.call_id, s.cseq).await;
    assert_eq!(ok.status(), Some(200), "{}", text(&ok));
    assert!(
        ok.header_count(&HeaderName::RecordRoute) > 0,
        "the 200 carries the Record-Route:\n{}",
        text(&ok)
    );
    assert_eq!(
        ok.body(),
        answer_sdp.as_bytes(),
        "the SDP answer arrives byte for byte"
    );

    // Alice's dialog: target = bob's Contact, route = Record-Route reversed, credentials
    // re-used with nc + 1 (SIPml5 trace).
    let mut ad = Dialog::caller(&invite, &ok, s.auth.clone());
    assert_eq!(ad.target, format!("sip:bob@{SIPML5_HOST};transport=ws"));
    let ack = ad.request(&alice, "ACK", &[], None);
    assert!(ack.contains("nc=00000002"), "{ack}");
    a.send(&ack).await;
    let got = b.recv_request("ACK").await;
    assert_eq!(
        got.request_uri(),
        Some(ad.target.as_str()),
        "{}",
        text(&got)
    );
    assert_eq!(cseq_of(&got), s.cseq);
    assert_eq!(got.call_id(), Some(s.call_id.as_str()));
    assert_eq!(to_tag(&got).as_deref(), Some(bob_tag.as_str()));
    assert_routes_consumed(&got, "bob (ACK)");

    // Bob → alice in dialog: INFO with route set = Record-Route in order, target = alice's
    // INVITE Contact (`sip:alice@df7jal23ls0d.invalid;…`).
    let mut bd = Dialog::callee(&inv, &bob_tag);
    assert_eq!(bd.target, alice.dialog_contact_uri());
    let info_body = r#"{"event":"hello from bob","n":1}"#;
    let info = bd.request(&bob, "INFO", &[], Some(("application/json", info_body)));
    b.send(&info).await;
    let got = a.recv_request("INFO").await;
    assert_eq!(
        got.request_uri(),
        Some(alice.dialog_contact_uri().as_str()),
        "{}",
        text(&got)
    );
    assert_eq!(got.body(), info_body.as_bytes());
    assert_eq!(from_tag(&got).as_deref(), Some(bob_tag.as_str()));
    assert_eq!(to_tag(&got).as_deref(), Some(s.tag.as_str()));
    assert_routes_consumed(&got, "alice (INFO)");
    a.send(&response(&got, 200, "OK", None, &[], None)).await;
    let r = b.final_response(&bd.call_id, bd.cseq).await;
    assert_eq!(r.status(), Some(200), "{}", text(&r));

    // Alice hangs up: BYE along the same route, credentials nc=3; bob's 200 comes back.
    let bye = ad.request(
        &alice,
        "BYE",
        &[("Accept-Contact", "*;+g.oma.sip-im")],
        None,
    );
    assert!(bye.contains("nc=00000003"), "{bye}");
    a.send(&bye).await;
    let got = b.recv_request("BYE").await;
    assert_eq!(
        got.request_uri(),
        Some(ad.target.as_str()),
        "{}",
        text(&got)
    );
    assert_eq!(cseq_of(&got), ad.cseq);
    assert_eq!(
        uri_of(got.header(&HeaderName::From).unwrap_or("")),
        alice.aor()
    );
    assert_routes_consumed(&got, "bob (BYE)");
    b.send(&response(&got, 200, "OK", None, &[], None)).await;
    let r = a.final_response(&s.call_id, ad.cseq).await;
    assert_eq!(r.status(), Some(200), "{}", text(&r));

    server.stop().await;
}
