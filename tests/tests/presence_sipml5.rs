//! The presence plugin end to end with SIPml5-shaped clients over WebSocket (SIPML5.md §6–7):
//! PUBLISH through the 407 challenge with `Event: presence` added by the application,
//! SIP-ETag refresh/modify/remove and the duplicate remove (412), PUBLISH and SUBSCRIBE
//! without Event (489 naming the packages),
//! SUBSCRIBE with the immediate NOTIFY on the subscriber's own connection, refresh in the
//! dialog, NOTIFY on every change, `closed` at once when the publisher's WebSocket closes,
//! unsubscribe and the duplicate unsubscribe (481); then expiry of publications and of
//! subscriptions (`terminated;reason=timeout`) with short configured timers.

use huddle_e2e::plugin_support::{cargo_cdylib, plugin_entry, PluginServer};
use huddle_e2e::sip_client::{body_text, register_ok, send_through_407, text, Conn, Session, Ua};
use huddle_sip::message::HeaderName;
use huddle_sip::Message;

/// Short timers so that expiry happens within the harness's bounded waits.
const CONFIG: &str = "[plugins.config]\ndomain = \"example.test\"\nmin_expires = 1\n";

async fn presence_server() -> PluginServer {
    let lib = tokio::task::block_in_place(|| cargo_cdylib("huddle-plugin-presence"));
    PluginServer::start(&plugin_entry(&lib, CONFIG)).await
}

fn pidf(user: &str, id: &str, basic: &str, note: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\"\n xmlns:im=\"urn:ietf:params:xml:ns:pidf:im\" entity=\"sip:{user}@example.test\">\n<tuple id=\"{id}\">\n<status>\n   <basic>{basic}</basic>\n   <im:im>away</im:im>\n</status>\n<note>{note}</note>\n</tuple>\n</presence>"
    )
}

/// The Event and Accept lines a SIPml5 application adds to its SUBSCRIBE (SIPML5.md §7).
const SUBSCRIBE_EVENT: &str = "Event: presence\r\nAccept: application/pidf+xml\r\n";

/// A PUBLISH after the first: same Call-ID, CSeq + 1, the credentials of the last challenge.
async fn republish(
    conn: &mut Conn,
    ua: &Ua,
    s: &mut Session,
    expires: u32,
    headers: &str,
    body: Option<&str>,
) -> Message {
    s.cseq += 1;
    let auth = s
        .auth
        .as_mut()
        .expect("challenged before")
        .authorize("PUBLISH", &ua.aor());
    conn.request(&ua.publish_request(s, expires, headers, body, Some(&auth)))
        .await
}

fn state(m: &Message) -> String {
    m.header(&HeaderName::SubscriptionState)
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipml5_publish_subscribe_notify_over_websocket() {
    let server = presence_server().await;
    let alice = Ua::sipml5("alice", "alice-pw");
    let bob = Ua::sipml5("bob", "bob-pw");
    let mut a = Conn::ws(&server.ws_url(), "alice").await;
    let mut b = Conn::ws(&server.ws_url(), "bob").await;
    register_ok(&mut a, &alice, 300).await;
    register_ok(&mut b, &bob, 300).await;

    // alice subscribes without Event (SIPml5's default): the host answers 489 at once on the
    // plugins' behalf, naming the packages, instead of challenging and relaying it to bob's
    // tab (which would answer 481, or nothing).
    let bare = Session::new();
    let r = a
        .request(&alice.subscribe_request("bob", &bare, 200, "", None))
        .await;
    assert_eq!(r.status(), Some(489), "{}", text(&r));
    assert_eq!(r.reason(), Some("Bad Event - Missing Event Header"));
    assert_eq!(
        r.header(&HeaderName::AllowEvents),
        Some("presence, presence.winfo")
    );

    // alice watches bob: 200, then a NOTIFY on her own connection; bob is registered and has
    // published nothing, so he is open.
    let mut sub = Session::new();
    send_through_407(
        &mut a,
        &alice,
        &mut sub,
        "SUBSCRIBE",
        "sip:bob@example.test",
        |s, auth| alice.subscribe_request("bob", s, 200, SUBSCRIBE_EVENT, auth),
    )
    .await;
    let ok = a.final_response(&sub.call_id, sub.cseq).await;
    assert_eq!(ok.status(), Some(200), "{}", text(&ok));
    assert_eq!(ok.header(&HeaderName::Expires), Some("200"));
    let n = a.notify_ok(&sub.call_id).await;
    assert!(state(&n).starts_with("active;expires="), "{}", text(&n));
    assert_eq!(n.header(&HeaderName::Event), Some("presence"));
    assert_eq!(
        n.request_uri(),
        Some(alice.dialog_contact_uri().as_str()),
        "the NOTIFY targets alice's Contact:\n{}",
        text(&n)
    );
    assert!(
        body_text(&n).contains("<basic>open</basic>"),
        "{}",
        text(&n)
    );

    // bob publishes without Event (SIPml5's default): 489, saying what is missing.
    let mut publ = Session::new();
    send_through_407(&mut b, &bob, &mut publ, "PUBLISH", &bob.aor(), |s, auth| {
        bob.publish_request(s, 200, "", Some(&pidf("bob", "s1", "open", "x")), auth)
    })
    .await;
    let r = b.final_response(&publ.call_id, publ.cseq).await;
    assert_eq!(r.status(), Some(489), "{}", text(&r));
    assert_eq!(r.header(&HeaderName::AllowEvents), Some("presence"));

    // With Event: presence: 200 with an entity tag, and alice hears the note.
    let doc = pidf("bob", "s8794", "open", "Bonjour de Paris");
    let r = republish(
        &mut b,
        &bob,
        &mut publ,
        200,
        "Event: presence\r\n",
        Some(&doc),
    )
    .await;
    assert_eq!(r.status(), Some(200), "{}", text(&r));
    let etag = r
        .header(&HeaderName::parse("SIP-ETag"))
        .expect("SIP-ETag")
        .to_owned();
    let n = a.notify_ok(&sub.call_id).await;
    assert!(body_text(&n).contains("Bonjour de Paris"), "{}", text(&n));
    assert!(
        body_text(&n).contains("<im:im>away</im:im>"),
        "extensions survive: {}",
        text(&n)
    );

    // Refresh (no body, SIP-If-Match): a new tag, no NOTIFY needed.
    let r = republish(
        &mut b,
        &bob,
        &mut publ,
        200,
        &format!("Event: presence\r\nSIP-If-Match: {etag}\r\n"),
        None,
    )
    .await;
    assert_eq!(r.status(), Some(200), "{}", text(&r));
    let etag = r.header(&HeaderName::parse("SIP-ETag")).unwrap().to_owned();
    // Modify.
    let doc = pidf("bob", "s8794", "open", "In a meeting");
    let r = republish(
        &mut b,
        &bob,
        &mut publ,
        200,
        &format!("Event: presence\r\nSIP-If-Match: {etag}\r\n"),
        Some(&doc),
    )
    .await;
    assert_eq!(r.status(), Some(200));
    let etag = r.header(&HeaderName::parse("SIP-ETag")).unwrap().to_owned();
    let n = a.notify_ok(&sub.call_id).await;
    assert!(body_text(&n).contains("In a meeting"), "{}", text(&n));
    // Bad XML: 400 naming the fault.
    let r = republish(
        &mut b,
        &bob,
        &mut publ,
        200,
        "Event: presence\r\n",
        Some("<presence"),
    )
    .await;
    assert_eq!(r.status(), Some(400));
    assert!(
        r.reason().unwrap_or("").contains("Malformed PIDF"),
        "{}",
        text(&r)
    );

    // alice refreshes in the dialog: 200 and a NOTIFY.
    sub.cseq += 1;
    let r = a
        .request(&alice.resubscribe_request(&sub, &ok, 200, SUBSCRIBE_EVENT))
        .await;
    assert_eq!(r.status(), Some(200), "{}", text(&r));
    a.notify_ok(&sub.call_id).await;

    // Remove, and SIPml5's second remove: 200 then a harmless 412.
    let rm = format!("Event: presence\r\nSIP-If-Match: {etag}\r\n");
    let r = republish(&mut b, &bob, &mut publ, 0, &rm, None).await;
    assert_eq!(r.status(), Some(200), "{}", text(&r));
    let r = republish(&mut b, &bob, &mut publ, 0, &rm, None).await;
    assert_eq!(r.status(), Some(412), "{}", text(&r));
    let n = a.notify_ok(&sub.call_id).await;
    assert!(!body_text(&n).contains("In a meeting"), "{}", text(&n));
    assert!(
        body_text(&n).contains("<basic>open</basic>"),
        "still registered: {}",
        text(&n)
    );

    // bob publishes again, then closes his tab: alice hears closed at once, without his
    // publication (it lived on his connection).
    let r = republish(
        &mut b,
        &bob,
        &mut publ,
        200,
        "Event: presence\r\n",
        Some(&doc),
    )
    .await;
    assert_eq!(r.status(), Some(200), "{}", text(&r));
    a.notify_ok(&sub.call_id).await;
    b.close().await;
    let n = a.notify_ok(&sub.call_id).await;
    assert!(
        body_text(&n).contains("<basic>closed</basic>"),
        "{}",
        text(&n)
    );
    assert!(!body_text(&n).contains("In a meeting"), "{}", text(&n));

    // Unsubscribe, twice as SIPml5 does: 200 with a final NOTIFY, then 481.
    sub.cseq += 1;
    let r = a
        .request(&alice.resubscribe_request(&sub, &ok, 0, SUBSCRIBE_EVENT))
        .await;
    assert_eq!(r.status(), Some(200), "{}", text(&r));
    let n = a.notify_ok(&sub.call_id).await;
    assert!(state(&n).starts_with("terminated"), "{}", text(&n));
    sub.cseq += 1;
    let r = a
        .request(&alice.resubscribe_request(&sub, &ok, 0, SUBSCRIBE_EVENT))
        .await;
    assert_eq!(r.status(), Some(481), "{}", text(&r));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_and_subscriptions_expire() {
    let server = presence_server().await;
    let alice = Ua::sipml5("alice", "alice-pw");
    let carol = Ua::sipml5("carol", "carol-pw");
    let mut a = Conn::ws(&server.ws_url(), "alice").await;
    let mut c = Conn::ws(&server.ws_url(), "carol").await;
    register_ok(&mut a, &alice, 300).await;

    // alice watches carol (not registered: closed) for 3 s.
    let mut sub = Session::new();
    send_through_407(
        &mut a,
        &alice,
        &mut sub,
        "SUBSCRIBE",
        "sip:carol@example.test",
        |s, auth| alice.subscribe_request("carol", s, 3, SUBSCRIBE_EVENT, auth),
    )
    .await;
    assert_eq!(
        a.final_response(&sub.call_id, sub.cseq).await.status(),
        Some(200)
    );
    let n = a.notify_ok(&sub.call_id).await;
    assert!(
        body_text(&n).contains("<basic>closed</basic>"),
        "{}",
        text(&n)
    );

    // carol publishes for 1 s (without registering): open, then closed when it expires.
    let mut publ = Session::new();
    send_through_407(
        &mut c,
        &carol,
        &mut publ,
        "PUBLISH",
        &carol.aor(),
        |s, auth| {
            carol.publish_request(
                s,
                1,
                "Event: presence\r\n",
                Some(&pidf("carol", "c", "open", "brb")),
                auth,
            )
        },
    )
    .await;
    assert_eq!(
        c.final_response(&publ.call_id, publ.cseq).await.status(),
        Some(200)
    );
    let n = a.notify_ok(&sub.call_id).await;
    assert!(body_text(&n).contains("brb"), "{}", text(&n));
    let n = a.notify_ok(&sub.call_id).await;
    assert!(
        body_text(&n).contains("<basic>closed</basic>"),
        "the stale publication expired: {}",
        text(&n)
    );

    // The subscription itself runs out: terminated;reason=timeout.
    let n = a.notify_ok(&sub.call_id).await;
    assert_eq!(state(&n), "terminated;reason=timeout", "{}", text(&n));
    server.stop().await;
}
