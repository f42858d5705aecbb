//! The caller cancels a ringing call (RFC 3261 §9, §16.10): alice INVITEs bob (one SIPml5
//! tab), bob rings, alice hangs up before an answer (SIPml5 `hangup()` sends CANCEL, SIPML5.md
//! §4). The proxy answers alice's CANCEL with 200 itself (hop by hop, §16.10), sends its own
//! CANCEL on bob's branch (same Via branch as the INVITE it forwarded, §9.1), bob answers 200
//! and 487, the proxy ACKs bob's 487 (§17.1.1.3) and forwards the 487 to alice, whose ACK for
//! it ends at the proxy.

use huddle_e2e::sip_client::{
    ack_for_failure, cancel_request, chrome_sdp, cseq_method_of, cseq_of, method_of, register_ok,
    response, ring, send_through_407, text, to_tag_of, Conn, Session, Ua,
};
use huddle_e2e::TestServer;
use huddle_sip::message::HeaderName;
use huddle_sip::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_cancel_reaches_the_ringing_callee_and_487_comes_back() {
    let server = TestServer::start().await;
    let url = server.ws_url();
    let alice = Ua::sipml5("alice", "alice-pw");
    let bob = Ua::sipml5("bob", "bob-pw");
    let mut a = Conn::ws(&url, "alice").await;
    let mut b = Conn::ws(&url, "bob").await;
    register_ok(&mut b, &bob, 300).await;

    let offer = chrome_sdp("actpass", 0);
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
    let inv = b.recv_request("INVITE").await;
    let bob_tag = ring(&mut b, &bob, &inv).await;
    let ringing = a
        .wait_for("bob's 180", |m| {
            m.status() == Some(180) && m.call_id() == Some(s.call_id.as_str())
        })
        .await;
    assert_eq!(to_tag_of(&ringing).as_deref(), Some(bob_tag.as_str()));

    // Alice hangs up.
    let cancel = cancel_request(&invite);
    a.send(&cancel).await;
    let cancel_ok = a
        .wait_for("the 200 for alice's CANCEL", |m| {
            !m.is_request()
                && m.call_id() == Some(s.call_id.as_str())
                && cseq_method_of(m) == "CANCEL"
        })
        .await;
    assert_eq!(
        cancel_ok.status(),
        Some(200),
        "a stateful proxy answers a CANCEL matching its INVITE transaction with 200 \
         (§16.10):\n{}",
        text(&cancel_ok)
    );
    assert_eq!(cseq_of(&cancel_ok), s.cseq);
    assert_eq!(
        cancel_ok.branch(),
        Message::parse(cancel.clone().into())
            .expect("our CANCEL parses")
            .branch(),
        "the 200 answers alice's CANCEL transaction"
    );

    // Bob's branch is cancelled hop by hop.
    let got = b.recv_request("CANCEL").await;
    assert_eq!(
        got.branch(),
        inv.branch(),
        "the proxy's CANCEL carries the branch of the INVITE it forwarded to bob (§9.1):\n{}",
        text(&got)
    );
    assert_eq!(got.request_uri(), inv.request_uri(), "{}", text(&got));
    assert_eq!(cseq_of(&got), cseq_of(&inv));
    assert_eq!(got.call_id(), inv.call_id());
    assert_eq!(got.header(&HeaderName::From), inv.header(&HeaderName::From));
    assert_eq!(
        got.header(&HeaderName::To),
        inv.header(&HeaderName::To),
        "the CANCEL's To has no tag, as the INVITE's:\n{}",
        text(&got)
    );
    b.send(&response(&got, 200, "OK", Some(&bob_tag), &[], None))
        .await;
    b.send(&response(
        &inv,
        487,
        "Request Terminated",
        Some(&bob_tag),
        &[],
        None,
    ))
    .await;
    let ack = b
        .wait_for("the proxy's ACK for the 487", |m| {
            method_of(m).as_deref() == Some("ACK")
        })
        .await;
    assert_eq!(
        ack.branch(),
        inv.branch(),
        "the ACK for bob's 487 is the proxy's, on the INVITE's branch (§17.1.1.3):\n{}",
        text(&ack)
    );
    assert_eq!(ack.request_uri(), inv.request_uri());
    assert_eq!(to_tag_of(&ack).as_deref(), Some(bob_tag.as_str()));
    assert_eq!(cseq_of(&ack), cseq_of(&inv));

    // Alice gets the 487 for her INVITE and ACKs it.
    let fin = a.final_response(&s.call_id, s.cseq).await;
    assert_eq!(fin.status(), Some(487), "{}", text(&fin));
    assert_eq!(cseq_method_of(&fin), "INVITE");
    assert_eq!(to_tag_of(&fin).as_deref(), Some(bob_tag.as_str()));
    let sent = Message::parse(invite.clone().into()).expect("our INVITE parses");
    a.send(&ack_for_failure(&sent, &fin)).await;

    // Alice's ACK is absorbed by the proxy's INVITE server transaction: bob gets nothing more.
    a.barrier().await;
    b.barrier().await;
    let extra = b.take_queued(Message::is_request);
    assert!(
        extra.is_empty(),
        "bob got more than INVITE, CANCEL and the proxy's ACK:\n{}",
        extra.iter().map(text).collect::<Vec<_>>().join("\n---\n")
    );
    let more = a.take_queued(|m| {
        !m.is_request()
            && m.call_id() == Some(s.call_id.as_str())
            && m.status().is_some_and(|c| c >= 200)
    });
    assert!(
        more.is_empty(),
        "alice got another final:\n{}",
        more.iter().map(text).collect::<Vec<_>>().join("\n---\n")
    );
    server.stop().await;
}
