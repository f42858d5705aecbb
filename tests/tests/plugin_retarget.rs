//! Retargeting (ABI 1.4, `Host::retarget`) through a running server, with two instances of the
//! test-only `plugins/testkit` (`kit` claims INVITE to `sip:kit@…` open to guests, `kit2`
//! INVITE to `sip:kit2@…` closed to them). An INVITE to `kit` whose body says so is handed
//! to `kit2` with the Request-URI rewritten and its body unchanged; `kit2` answers it
//! (the caller sees one 100 Trying, then `kit2`'s answer), and a CANCEL reaches `kit2`, not
//! `kit`; a request retargeted after its CANCEL came is answered 487 by the host. The host answers itself when the retarget cannot be done: 404 for a URI no plugin
//! claims (or another domain), 482 when the request keeps being retargeted, and the
//! synchronous error for a URI that is not SIP. A local caller who did not authenticate is
//! challenged (407) when the new claim is closed to guests; the authenticated retry reaches
//! `kit2` as that user.

use huddle_e2e::plugin_support::{
    ring_then_cancel, testkit_ask, testkit_entry, testkit_request as request, testkit_wait_event,
    PluginServer, FOREIGN_SENDER as FOREIGN,
};
use huddle_e2e::sip_client::{
    ack_for_failure, cancel_request, text, Challenge, Conn, DigestSession,
};
use huddle_sip::message::HeaderName;
use huddle_sip::Message;

/// `kit` claims INVITE and is open to guests, `kit2` claims INVITE and is not.
async fn two_kits() -> PluginServer {
    PluginServer::start(&format!(
        "{}{}",
        testkit_entry("kit", "invite = true\nguests = true\n"),
        testkit_entry("kit2", "invite = true\n"),
    ))
    .await
}

/// The event log of instance `user`.
async fn events(conn: &mut Conn, user: &str) -> String {
    testkit_ask(conn, user, "events").await
}

/// Sends an INVITE to `kit` and returns its final response (after checking the provisional
/// ones: one 100 Trying, whoever answers), ACKing a failure.
async fn invite_kit(conn: &mut Conn, body: &str) -> Message {
    let (invite, call_id) = request("INVITE", "kit", FOREIGN, "", body);
    conn.send(&invite).await;
    let mut trying = 0;
    loop {
        let r = conn.next_response(&call_id, 1).await;
        match r.status() {
            Some(100) => trying += 1,
            Some(s) if s >= 200 => {
                assert_eq!(trying, 1, "one 100 Trying, from the host");
                if s >= 300 {
                    let own = Message::parse(invite.clone().into()).unwrap();
                    conn.send(&ack_for_failure(&own, &r)).await;
                }
                return r;
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retargeted_invite_reaches_the_other_plugin_with_its_cancel() {
    let server = two_kits().await;
    let mut c = Conn::ws(&server.ws_url(), "tester").await;

    // Answered by kit2, which saw the new Request-URI and the body as sent.
    let body = "retarget kit sip:kit2@example.test answer";
    let ok = invite_kit(&mut c, body).await;
    assert_eq!(ok.status(), Some(200), "{}", text(&ok));
    let contact = ok.header(&HeaderName::Contact).unwrap_or_default();
    assert!(
        contact.contains("sip:kit2@"),
        "kit2 answered: {}",
        text(&ok)
    );
    testkit_wait_event(&mut c, "kit", "retarget sip:kit2@example.test ok").await;
    testkit_wait_event(
        &mut c,
        "kit2",
        &format!("invite sip:kit2@example.test user=- body={body}"),
    )
    .await;

    // Ringing at kit2, then CANCEL: kit2 ends the INVITE with 487, kit never hears of it.
    let (invite, call_id) = request(
        "INVITE",
        "kit",
        FOREIGN,
        "",
        "retarget kit sip:kit2@example.test ring",
    );
    ring_then_cancel(&mut c, &invite, &call_id).await;
    testkit_wait_event(&mut c, "kit2", "cancel").await;
    let kit = events(&mut c, "kit").await;
    assert!(
        !kit.lines().any(|l| l == "cancel"),
        "kit got the CANCEL:\n{kit}"
    );

    // Retargeted after its CANCEL arrived: over, the host answers 487 and kit2 never rings.
    let (invite, call_id) = request(
        "INVITE",
        "kit",
        FOREIGN,
        "",
        "retarget-on-cancel sip:kit2@example.test",
    );
    c.send(&invite).await;
    let trying = c.next_response(&call_id, 1).await;
    assert_eq!(trying.status(), Some(100), "{}", text(&trying));
    let ringing = c.next_response(&call_id, 1).await;
    assert_eq!(ringing.status(), Some(180), "kit rings: {}", text(&ringing));
    c.send(&cancel_request(&invite)).await;
    let ended = c
        .wait_for("the INVITE's final response", |m| {
            m.call_id() == Some(call_id.as_str())
                && m.cseq().is_ok_and(|c| c.method.as_str() == "INVITE")
                && m.status().is_some_and(|s| s >= 200)
        })
        .await;
    assert_eq!(ended.status(), Some(487), "{}", text(&ended));
    testkit_wait_event(&mut c, "kit", "retarget-on-cancel sip:kit2@example.test ok").await;
    let kit2 = events(&mut c, "kit2").await;
    assert!(
        !kit2.contains("body=retarget-on-cancel"),
        "kit2 got a cancelled INVITE:\n{kit2}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_answers_retargets_that_go_nowhere() {
    let server = two_kits().await;
    let mut c = Conn::ws(&server.ws_url(), "tester").await;

    // Nothing claims the URI, or it names another domain: 404 from the host.
    for uri in ["sip:nobody@example.test", "sip:kit2@elsewhere.invalid"] {
        let r = invite_kit(&mut c, &format!("retarget kit {uri} answer")).await;
        assert_eq!(r.status(), Some(404), "{uri}: {}", text(&r));
    }

    // kit2 retargets to itself for ever: the fourth retarget is a loop.
    let r = invite_kit(&mut c, "retarget * sip:kit2@example.test").await;
    assert_eq!(r.status(), Some(482), "{}", text(&r));
    let log = events(&mut c, "kit2").await;
    let retargets = log
        .lines()
        .filter(|l| l.starts_with("retarget sip:kit2@example.test ok"))
        .count();
    assert_eq!(retargets, 3, "kit2 retargeted twice more after kit:\n{log}");

    // Not a SIP URI: refused at the call, the request still kit's to answer.
    let r = invite_kit(&mut c, "retarget kit tel:+15550100 answer").await;
    assert_eq!(r.status(), Some(500), "{}", text(&r));
    assert_eq!(r.body(), b"error: invalid argument", "{}", text(&r));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_retargeted_to_a_closed_claim_is_challenged_and_the_retry_gets_through() {
    let server = two_kits().await;
    let mut c = Conn::ws(&server.ws_url(), "alice").await;
    let body = "retarget kit sip:kit2@example.test answer";

    // alice (a local user) without credentials: kit is open to guests, kit2 is not.
    let (invite, call_id) = request("INVITE", "kit", "sip:alice@example.test", "", body);
    c.send(&invite).await;
    let challenge = c.final_response(&call_id, 1).await;
    assert_eq!(challenge.status(), Some(407), "{}", text(&challenge));
    let own = Message::parse(invite.clone().into()).unwrap();
    c.send(&ack_for_failure(&own, &challenge)).await;
    testkit_wait_event(&mut c, "kit", "invite sip:kit@example.test user=- ").await;

    // The authenticated retry reaches kit as alice, and kit2 with her after the retarget.
    let mut digest = DigestSession::new(Challenge::of(&challenge), "alice", "alice-pw");
    let credentials = format!(
        "Proxy-Authorization: {}\r\n",
        digest.authorize("INVITE", "sip:kit@example.test")
    );
    let (invite, call_id) = request(
        "INVITE",
        "kit",
        "sip:alice@example.test",
        &credentials,
        body,
    );
    c.send(&invite).await;
    let ok = c.final_response(&call_id, 1).await;
    assert_eq!(ok.status(), Some(200), "{}", text(&ok));
    testkit_wait_event(&mut c, "kit", "invite sip:kit@example.test user=alice ").await;
    testkit_wait_event(&mut c, "kit2", "invite sip:kit2@example.test user=alice ").await;
    server.stop().await;
}
