//! The presence state machine in virtual time: every test drives [`Core`] with made-up
//! instants and looks at its replies and outputs.

use super::*;

const BOB: &str = "bob@example.test";

fn t0() -> Now {
    // Any instant will do; unix_ms is arbitrary but fixed, so stored expiries are exact.
    Now {
        mono: Instant::now(),
        unix_ms: 1_800_000_000_000,
    }
}

fn settings() -> Settings {
    Settings {
        domain: Some("example.test".into()),
        ..Settings::default()
    }
}

fn core() -> Core {
    Core::new(settings(), "e")
}

fn msg(text: String) -> Message {
    let text = text.replace('\n', "\r\n");
    Message::parse(Bytes::from(text)).expect("test message parses")
}

fn pidf(id: &str, basic: &str) -> String {
    format!("<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:bob@example.test\"><tuple id=\"{id}\"><status><basic>{basic}</basic></status></tuple></presence>")
}

/// A PUBLISH from bob; `headers` are extra lines (each ending in `\n`).
fn publish_msg(headers: &str, body: &str) -> Message {
    let ct = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/pidf+xml\n".to_owned()
    };
    msg(format!(
        "PUBLISH sip:bob@example.test SIP/2.0\nVia: SIP/2.0/WS x.invalid;branch=z9hG4bK{}\nMax-Forwards: 70\nFrom: <sip:bob@example.test>;tag=b1\nTo: <sip:bob@example.test>\nCall-ID: pub-1\nCSeq: 1 PUBLISH\n{headers}{ct}Content-Length: {}\n\n{body}",
        body.len(),
        body.len()
    ))
}

fn inc<'a>(m: &'a Message, user: &'a str) -> Incoming<'a> {
    Incoming {
        msg: m,
        auth_user: Some(user),
        over_connection: true,
        local_tag: "srv1",
    }
}

fn publish(c: &mut Core, now: Now, headers: &str, body: &str) -> Reply {
    let m = publish_msg(headers, body);
    c.publish(now, inc(&m, "bob"))
}

/// An initial SUBSCRIBE from `watcher` to bob (Record-Route as the host adds it).
fn subscribe_msg(watcher: &str, call_id: &str, event: &str, extra: &str) -> Message {
    msg(format!(
        "SUBSCRIBE sip:bob@example.test SIP/2.0\nVia: SIP/2.0/WS x.invalid;branch=z9hG4bK{call_id}\nRecord-Route: <sip:127.0.0.1:5060;transport=ws;lr>\nRecord-Route: <sip:FLOW@127.0.0.1:5060;transport=ws;lr>\nMax-Forwards: 70\nFrom: <sip:{watcher}@example.test>;tag=w-{call_id}\nTo: <sip:bob@example.test>\nCall-ID: {call_id}\nCSeq: 10 SUBSCRIBE\nContact: <sip:{watcher}@df7jal23ls0d.invalid;transport=ws>\nEvent: {event}\n{extra}Content-Length: 0\n\n"
    ))
}

fn subscribe(c: &mut Core, now: Now, watcher: &str, call_id: &str, extra: &str) -> Reply {
    let m = subscribe_msg(watcher, call_id, "presence", extra);
    let tag = format!("t-{call_id}");
    c.subscribe(
        now,
        Incoming {
            msg: &m,
            auth_user: Some(watcher),
            over_connection: true,
            local_tag: &tag,
        },
    )
}

/// An in-dialog SUBSCRIBE (refresh or unsubscribe) of the dialog `call_id`.
fn resubscribe(
    c: &mut Core,
    now: Now,
    watcher: &str,
    call_id: &str,
    cseq: u32,
    expires: u32,
) -> Reply {
    let m = msg(format!(
        "SUBSCRIBE sip:bob@127.0.0.1 SIP/2.0\nVia: SIP/2.0/WS x.invalid;branch=z9hG4bK{call_id}{cseq}\nMax-Forwards: 70\nFrom: <sip:{watcher}@example.test>;tag=w-{call_id}\nTo: <sip:bob@example.test>;tag=t-{call_id}\nCall-ID: {call_id}\nCSeq: {cseq} SUBSCRIBE\nEvent: presence\nExpires: {expires}\nContent-Length: 0\n\n"
    ));
    c.subscribe(
        now,
        Incoming {
            msg: &m,
            auth_user: None,
            over_connection: true,
            local_tag: "unused",
        },
    )
}

fn drain(c: &mut Core) -> Vec<Output> {
    std::iter::from_fn(|| c.poll_output()).collect()
}

fn notifies(c: &mut Core) -> Vec<Notify> {
    drain(c)
        .into_iter()
        .filter_map(|o| match o {
            Output::Notify(n) => Some(n),
            _ => None,
        })
        .collect()
}

fn basic_of(doc: &str) -> Vec<String> {
    let d = roxmltree::Document::parse(doc).expect("NOTIFY bodies are XML");
    d.descendants()
        .filter(|n| n.tag_name().name() == "basic")
        .filter_map(|n| n.text())
        .map(str::to_owned)
        .collect()
}

/// Runs the core's timers up to `now`.
fn advance(c: &mut Core, now: Now) {
    while c.poll_timeout().is_some_and(|t| t <= now.mono) {
        c.handle_timeout(now);
    }
}

// ------------------------------------------------------------------ RFC 3903

#[test]
fn publish_refresh_modify_remove_and_the_sipml5_second_remove() {
    let mut c = core();
    let now = t0();
    let r = publish(
        &mut c,
        now,
        "Event: presence\nExpires: 200\n",
        &pidf("a", "open"),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("Expires"), Some("200"));
    let e1 = r.header("SIP-ETag").unwrap().to_owned();

    // Refresh: no body, SIP-If-Match; a new entity tag.
    let r = publish(
        &mut c,
        now.after(Duration::from_secs(100)),
        &format!("Event: presence\nSIP-If-Match: {e1}\nExpires: 200\n"),
        "",
    );
    assert_eq!(r.status, 200);
    let e2 = r.header("SIP-ETag").unwrap().to_owned();
    assert_ne!(e1, e2);
    // The old tag is gone.
    let r = publish(
        &mut c,
        now,
        &format!("Event: presence\nSIP-If-Match: {e1}\n"),
        "",
    );
    assert_eq!(
        (r.status, r.reason.as_str()),
        (412, "Conditional Request Failed")
    );

    // Modify: body and SIP-If-Match.
    let r = publish(
        &mut c,
        now,
        &format!("Event: presence\nSIP-If-Match: {e2}\n"),
        &pidf("a", "closed"),
    );
    assert_eq!(r.status, 200);
    let e3 = r.header("SIP-ETag").unwrap().to_owned();
    assert_eq!(basic_of(&c.document(BOB)), ["closed"]);

    // Remove, then SIPml5's second remove gets 412, harmlessly.
    let rm = format!("Event: presence\nSIP-If-Match: {e3}\nExpires: 0\n");
    assert_eq!(publish(&mut c, now, &rm, "").status, 200);
    assert_eq!(c.publication_count(BOB), 0);
    assert_eq!(publish(&mut c, now, &rm, "").status, 412);
}

#[test]
fn publish_errors_are_precise() {
    let mut c = core();
    let now = t0();
    let body = pidf("a", "open");
    let r = publish(&mut c, now, "", &body);
    assert_eq!(
        (r.status, r.reason.as_str()),
        (489, "Bad Event - Missing Event Header")
    );
    assert_eq!(r.header("Allow-Events"), Some("presence"));
    assert_eq!(publish(&mut c, now, "Event: dialog\n", &body).status, 489);

    let r = publish(&mut c, now, "Event: presence\nExpires: 30\n", &body);
    assert_eq!((r.status, r.header("Min-Expires")), (423, Some("60")));
    assert_eq!(publish(&mut c, now, "Event: presence\n", "").status, 400);
    assert_eq!(
        publish(&mut c, now, "Event: presence\nExpires: soon\n", &body).status,
        400
    );

    let r = publish(
        &mut c,
        now,
        "Event: presence\n",
        "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='x'><tuple",
    );
    assert_eq!(r.status, 400);
    assert!(
        r.reason.starts_with("Bad Request - Malformed PIDF XML"),
        "{}",
        r.reason
    );

    let m = msg(("PUBLISH sip:bob@example.test SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bKct\nFrom: <sip:bob@example.test>;tag=1\nTo: <sip:bob@example.test>\nCall-ID: c\nCSeq: 1 PUBLISH\nEvent: presence\nContent-Type: text/plain\nContent-Length: 2\n\nhi").to_owned());
    let r = c.publish(now, inc(&m, "bob"));
    assert_eq!(
        (r.status, r.header("Accept")),
        (415, Some("application/pidf+xml"))
    );

    // Only bob publishes bob.
    let m = publish_msg("Event: presence\n", &body);
    assert_eq!(c.publish(now, inc(&m, "mallory")).status, 403);

    let mut small = Settings {
        domain: Some("example.test".into()),
        ..Settings::default()
    };
    small.limits.max_body = 10;
    small.limits.max_publications_per_user = 1;
    let mut c = Core::new(small, "s");
    assert_eq!(publish(&mut c, now, "Event: presence\n", &body).status, 413);
    let mut big = settings();
    big.limits.max_publications_per_user = 1;
    let mut c = Core::new(big, "s");
    assert_eq!(publish(&mut c, now, "Event: presence\n", &body).status, 200);
    assert_eq!(publish(&mut c, now, "Event: presence\n", &body).status, 403);
    assert!(drain(&mut c)
        .iter()
        .all(|o| !matches!(o, Output::Notify(_))));
}

#[test]
fn a_stale_publication_expires_and_watchers_hear_it() {
    let mut c = core();
    let now = t0();
    assert_eq!(subscribe(&mut c, now, "alice", "s1", "").status, 200);
    let r = publish(
        &mut c,
        now,
        "Event: presence\nExpires: 60\n",
        &pidf("a", "open"),
    );
    assert_eq!(r.status, 200);
    let n = notifies(&mut c);
    assert_eq!(basic_of(n.last().unwrap().body()), ["open"]);

    advance(&mut c, now.after(Duration::from_secs(59)));
    assert!(notifies(&mut c).is_empty(), "not yet");
    advance(&mut c, now.after(Duration::from_secs(60)));
    let n = notifies(&mut c);
    assert_eq!(n.len(), 1);
    assert_eq!(basic_of(n[0].body()), ["closed"]);
    assert_eq!(c.publication_count(BOB), 0);
}

#[test]
fn two_devices_compose_into_one_document_open_first() {
    let mut c = core();
    let now = t0();
    subscribe(&mut c, now, "alice", "s1", "");
    let r1 = publish(&mut c, now, "Event: presence\n", &pidf("laptop", "closed"));
    let r2 = publish(&mut c, now, "Event: presence\n", &pidf("phone", "open"));
    let n = notifies(&mut c);
    assert_eq!(n.len(), 3, "initial, then one per change");
    assert_eq!(basic_of(n[2].body()), ["open", "closed"], "{}", n[2].body());
    // Removing one device leaves the other.
    let e = r2.header("SIP-ETag").unwrap();
    publish(
        &mut c,
        now,
        &format!("Event: presence\nSIP-If-Match: {e}\nExpires: 0\n"),
        "",
    );
    assert_eq!(basic_of(notifies(&mut c)[0].body()), ["closed"]);
    assert_eq!(r1.status, 200);
}

// ------------------------------------------------------------------ RFC 6665 / 3856

#[test]
fn subscribe_creates_the_dialog_and_notifies_over_the_route_set() {
    let mut c = core();
    let now = t0();
    let r = subscribe(
        &mut c,
        now,
        "alice",
        "s1",
        "Expires: 300\nAccept: application/pidf+xml\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Expires"), Some("300"));
    assert_eq!(r.header("Contact"), Some("<sip:bob@example.test>"));
    let n = notifies(&mut c);
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].state, "active;expires=300");
    assert_eq!(basic_of(n[0].body()), ["closed"], "nothing known: closed");
    let m = Message::parse(n[0].bytes.clone()).unwrap();
    assert_eq!(
        m.request_uri(),
        Some("sip:alice@df7jal23ls0d.invalid;transport=ws")
    );
    let routes: Vec<&str> = m.header_list(&HeaderName::Route).collect();
    assert_eq!(
        routes,
        [
            "<sip:127.0.0.1:5060;transport=ws;lr>",
            "<sip:FLOW@127.0.0.1:5060;transport=ws;lr>"
        ],
        "the Record-Route set in order, ending at the subscriber's flow"
    );
    assert_eq!(m.call_id(), Some("s1"));
    assert_eq!(m.from_header().unwrap().tag(), Some("t-s1"));
    assert_eq!(m.to_header().unwrap().tag(), Some("w-s1"));
    assert_eq!(m.header(&HeaderName::Event), Some("presence"));
    assert_eq!(m.content_type(), Some("application/pidf+xml"));
    assert_eq!(m.cseq().unwrap().seq, 1);

    // Registered without publishing: open.
    c.registration(now, BOB, 1);
    let n = notifies(&mut c);
    assert_eq!(basic_of(n[0].body()), ["open"]);
    let m = Message::parse(n[0].bytes.clone()).unwrap();
    assert_eq!(m.cseq().unwrap().seq, 2, "CSeq grows in the dialog");
}

#[test]
fn subscription_refresh_expiry_and_unsubscribe() {
    let mut c = core();
    let now = t0();
    subscribe(&mut c, now, "alice", "s1", "Expires: 100\n");
    subscribe(&mut c, now, "carol", "s2", "Expires: 100\n");
    notifies(&mut c);
    // alice refreshes at 90 s for another 100 s; carol does not.
    let r = resubscribe(
        &mut c,
        now.after(Duration::from_secs(90)),
        "alice",
        "s1",
        11,
        100,
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        notifies(&mut c)[0].state,
        "active;expires=100",
        "a refresh gets a NOTIFY"
    );
    advance(&mut c, now.after(Duration::from_secs(100)));
    let n = notifies(&mut c);
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].state, "terminated;reason=timeout");
    assert_eq!(
        Message::parse(n[0].bytes.clone()).unwrap().call_id(),
        Some("s2")
    );
    assert_eq!(c.subscription_count(), 1);

    // An old CSeq is refused; then alice unsubscribes, twice as SIPml5 does.
    assert_eq!(resubscribe(&mut c, now, "alice", "s1", 11, 100).status, 500);
    let t = now.after(Duration::from_secs(120));
    assert_eq!(resubscribe(&mut c, t, "alice", "s1", 12, 0).status, 200);
    assert_eq!(notifies(&mut c)[0].state, "terminated;reason=timeout");
    assert_eq!(resubscribe(&mut c, t, "alice", "s1", 13, 0).status, 481);
    assert_eq!(c.subscription_count(), 0);
    assert!(c.poll_timeout().is_none(), "nothing left to expire");
}

#[test]
fn fetch_with_expires_0_notifies_once_and_keeps_nothing() {
    let mut c = core();
    let now = t0();
    c.registration(now, BOB, 1);
    drain(&mut c);
    let r = subscribe(&mut c, now, "alice", "f1", "Expires: 0\n");
    assert_eq!((r.status, r.header("Expires")), (200, Some("0")));
    let n = notifies(&mut c);
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].state, "terminated;reason=timeout");
    assert_eq!(basic_of(n[0].body()), ["open"]);
    assert_eq!(c.subscription_count(), 0);
}

#[test]
fn subscribe_errors_are_precise() {
    let mut c = core();
    let now = t0();
    let m = subscribe_msg("alice", "x1", "dialog", "");
    let r = c.subscribe(now, inc(&m, "alice"));
    assert_eq!(
        (r.status, r.header("Allow-Events")),
        (489, Some("presence, presence.winfo"))
    );
    assert_eq!(
        subscribe(&mut c, now, "alice", "x2", "Expires: 10\n").status,
        423
    );
    assert_eq!(
        subscribe(&mut c, now, "alice", "x3", "Accept: text/plain\n").status,
        406
    );
    assert_eq!(
        resubscribe(&mut c, now, "alice", "nope", 2, 100).status,
        481
    );
    let m = subscribe_msg("alice", "x4", "presence", "");
    let r = c.subscribe(
        now,
        Incoming {
            auth_user: None,
            ..inc(&m, "alice")
        },
    );
    assert_eq!(
        r.status, 403,
        "unauthenticated watchers are refused by default"
    );
    // Another user's watcher info is not for alice.
    let m = subscribe_msg("alice", "x5", "presence.winfo", "");
    assert_eq!(c.subscribe(now, inc(&m, "alice")).status, 403);

    let mut s = settings();
    s.limits.max_subscriptions_per_user = 1;
    let mut c = Core::new(s, "s");
    assert_eq!(subscribe(&mut c, now, "alice", "y1", "").status, 200);
    assert_eq!(subscribe(&mut c, now, "alice", "y2", "").status, 403);
}

// ------------------------------------------------------------------ registrations

#[test]
fn last_binding_gone_means_closed_at_once_and_no_leftovers() {
    let mut c = core();
    let now = t0();
    c.registration(now, BOB, 2);
    subscribe(&mut c, now, "alice", "s1", "");
    publish(&mut c, now, "Event: presence\n", &pidf("tab", "open"));
    notifies(&mut c);
    // One of two tabs closes: still open.
    c.registration(now, BOB, 1);
    assert!(notifies(&mut c)
        .iter()
        .all(|n| basic_of(n.body()) == ["open"]));
    // The last one goes: closed now, and the tab's publication is gone with its connection.
    c.registration(now, BOB, 0);
    let n = notifies(&mut c);
    assert_eq!(n.len(), 1);
    assert_eq!(basic_of(n[0].body()), ["closed"]);
    assert_eq!(c.publication_count(BOB), 0);
}

#[test]
fn a_browser_that_reconnects_leaves_no_duplicate_watcher() {
    let mut c = core();
    let now = t0();
    c.registration(now, "alice@example.test", 1);
    subscribe(&mut c, now, "alice", "old", "");
    // The WebSocket closes: alice has no binding, her connection subscription goes quietly.
    c.registration(now, "alice@example.test", 0);
    assert_eq!(c.subscription_count(), 0);
    c.registration(now, "alice@example.test", 1);
    subscribe(&mut c, now, "alice", "new", "");
    assert_eq!(c.subscription_count(), 1);

    // With two tabs, one closing: its subscriptions get a NOTIFY; the failed one is removed.
    c.registration(now, "alice@example.test", 2);
    subscribe(&mut c, now, "alice", "tab2", "");
    drain(&mut c);
    c.registration(now, "alice@example.test", 1);
    let n = notifies(&mut c);
    assert_eq!(n.len(), 2, "both probed");
    let dead = n
        .iter()
        .find(|n| Message::parse(n.bytes.clone()).unwrap().call_id() == Some("tab2"))
        .unwrap();
    c.notify_failed(now, dead.subscription, 480);
    assert_eq!(c.subscription_count(), 1);
}

// ------------------------------------------------------------------ RFC 3857, policy

#[test]
fn watcher_info_lists_who_watches() {
    let mut c = core();
    let now = t0();
    let m = subscribe_msg("bob", "w1", "presence.winfo", "");
    let r = c.subscribe(
        now,
        Incoming {
            local_tag: "t-w1",
            ..inc(&m, "bob")
        },
    );
    assert_eq!(r.status, 200);
    let n = notifies(&mut c);
    assert!(n[0].body().contains("<watcher-list resource=\"sip:bob@example.test\" package=\"presence\">\n</watcher-list>"), "{}", n[0].body());
    let m = Message::parse(n[0].bytes.clone()).unwrap();
    assert_eq!(m.content_type(), Some("application/watcherinfo+xml"));

    subscribe(&mut c, now, "alice", "s1", "");
    let n: Vec<Notify> = notifies(&mut c)
        .into_iter()
        .filter(|n| n.body().contains("watcherinfo"))
        .collect();
    assert_eq!(n.len(), 1);
    assert!(n[0]
        .body()
        .contains("status=\"active\" event=\"subscribe\""));
    assert!(
        n[0].body().contains(">sip:alice@example.test</watcher>"),
        "{}",
        n[0].body()
    );
    assert!(n[0].body().contains("version=\"2\""));
    resubscribe(&mut c, now, "alice", "s1", 11, 0);
    let n: Vec<Notify> = notifies(&mut c)
        .into_iter()
        .filter(|n| n.body().contains("watcherinfo"))
        .collect();
    assert!(!n[0].body().contains("alice"), "{}", n[0].body());
}

#[test]
fn a_denied_watcher_sees_what_an_offline_user_looks_like() {
    let mut s = settings();
    s.policy = Policy::Lists;
    let mut c = Core::new(s, "p");
    let now = t0();
    c.registration(now, BOB, 1);
    c.set_lists(
        now,
        BOB,
        Some(Lists {
            allow: vec!["carol@example.test".into()],
            deny: vec!["mallory@example.test".into()],
        }),
    );
    subscribe(&mut c, now, "carol", "c1", "");
    subscribe(&mut c, now, "mallory", "m1", "");
    subscribe(&mut c, now, "dave", "d1", "");
    let n = notifies(&mut c);
    assert_eq!(
        n.len(),
        3,
        "every watcher is accepted: no error tells who exists"
    );
    assert_eq!(basic_of(n[0].body()), ["open"]);
    let offline = pidf::basic("sip:bob@example.test", false);
    assert_eq!(n[1].body(), offline);
    assert_eq!(n[2].body(), offline);
    // Allowing dave later tells him at once.
    c.set_lists(
        now,
        BOB,
        Some(Lists {
            allow: vec!["*@example.test".into()],
            deny: vec!["mallory@example.test".into()],
        }),
    );
    let n = notifies(&mut c);
    assert_eq!(n.len(), 1);
    assert_eq!(basic_of(n[0].body()), ["open"]);

    // Domain policy: deny still wins.
    let mut c = core();
    c.registration(now, BOB, 1);
    c.set_lists(
        now,
        BOB,
        Some(Lists {
            allow: vec![],
            deny: vec!["mallory@example.test".into()],
        }),
    );
    subscribe(&mut c, now, "mallory", "m1", "");
    subscribe(&mut c, now, "alice", "a1", "");
    let n = notifies(&mut c);
    assert_eq!(basic_of(n[0].body()), ["closed"]);
    assert_eq!(basic_of(n[1].body()), ["open"]);
}

// ------------------------------------------------------------------ restart

#[test]
fn state_survives_a_restart_and_notifies_continue() {
    let mut c = core();
    let now = t0();
    subscribe(&mut c, now, "alice", "s1", "Expires: 600\n");
    let r = publish(
        &mut c,
        now,
        "Event: presence\nExpires: 600\n",
        &pidf("a", "open"),
    );
    let etag = r.header("SIP-ETag").unwrap().to_owned();
    // What the glue would have stored: the latest record per key.
    let mut pubs: HashMap<u64, PublicationRecord> = HashMap::new();
    let mut subs: HashMap<u64, SubscriptionRecord> = HashMap::new();
    for o in drain(&mut c) {
        match o {
            Output::SavePublication(p) => {
                pubs.insert(p.id, p);
            }
            Output::DeletePublication { id, .. } => {
                pubs.remove(&id);
            }
            Output::SaveSubscription(s) => {
                subs.insert(s.id, s);
            }
            Output::DeleteSubscription(id) => {
                subs.remove(&id);
            }
            _ => {}
        }
    }
    // The server is down for 100 s; the restarted core gets new instants.
    let later = Now {
        mono: Instant::now() + Duration::from_secs(5),
        unix_ms: now.unix_ms + 100_000,
    };
    let mut c = Core::new(settings(), "f");
    for p in pubs.into_values() {
        assert!(c.restore_publication(later, p));
    }
    for s in subs.into_values() {
        assert!(c.restore_subscription(later, s));
    }
    c.resume(later);
    let n = notifies(&mut c);
    assert_eq!(n.len(), 1);
    assert_eq!(basic_of(n[0].body()), ["open"]);
    assert_eq!(n[0].state, "active;expires=500");
    let m = Message::parse(n[0].bytes.clone()).unwrap();
    assert!(
        m.cseq().unwrap().seq > 2,
        "the dialog's CSeq keeps increasing after a restart"
    );
    // The entity tag still works, and expiry keeps its schedule.
    let r = publish(
        &mut c,
        later,
        &format!("Event: presence\nSIP-If-Match: {etag}\n"),
        "",
    );
    assert_eq!(r.status, 200);
    advance(&mut c, later.after(Duration::from_secs(500)));
    let n = notifies(&mut c);
    assert_eq!(n.last().unwrap().state, "terminated;reason=timeout");
}

#[test]
fn expired_records_are_not_restored() {
    let mut c = core();
    let now = t0();
    subscribe(&mut c, now, "alice", "s1", "Expires: 60\n");
    let rec = drain(&mut c)
        .into_iter()
        .find_map(|o| match o {
            Output::SaveSubscription(s) => Some(s),
            _ => None,
        })
        .unwrap();
    let mut c = core();
    assert!(!c.restore_subscription(now.after(Duration::from_secs(61)), rec));
    assert_eq!(c.subscription_count(), 0);
}

#[test]
fn the_composed_document_is_published_for_other_plugins() {
    let mut c = core();
    let now = t0();
    c.registration(now, BOB, 1);
    let docs: Vec<_> = drain(&mut c)
        .into_iter()
        .filter_map(|o| match o {
            Output::Composed { aor, document } => Some((aor, document)),
            _ => None,
        })
        .collect();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].0, BOB);
    assert_eq!(basic_of(docs[0].1.as_deref().unwrap()), ["open"]);
    c.registration(now, BOB, 0);
    assert!(drain(&mut c).contains(&Output::Composed {
        aor: BOB.into(),
        document: None
    }));
}

#[test]
fn a_notify_the_host_refused_is_sent_again_with_the_latest_state() {
    let mut c = core();
    let now = t0();
    subscribe(&mut c, now, "alice", "s1", "");
    let id = notifies(&mut c)[0].subscription;
    c.registration(now, BOB, 1);
    assert_eq!(notifies(&mut c).len(), 1);
    // The host was busy: the NOTIFY did not go out. Meanwhile bob goes offline.
    c.notify_unsent(id);
    c.registration(now, BOB, 0);
    notifies(&mut c);
    c.notify_unsent(id);
    assert!(c.has_unsent());
    c.resend(now);
    let n = notifies(&mut c);
    assert_eq!(n.len(), 1, "one NOTIFY with the state of now");
    assert_eq!(basic_of(n[0].body()), ["closed"]);
    assert!(!c.has_unsent());
}

#[test]
fn the_composed_document_stays_within_its_bound() {
    let mut s = settings();
    s.limits.max_document = 600;
    let mut c = Core::new(s, "b");
    let now = t0();
    for i in 0..10 {
        let note = "x".repeat(100);
        let body = format!("<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:bob@example.test\"><tuple id=\"d{i}\"><status><basic>open</basic></status><note>{note}</note></tuple></presence>");
        assert_eq!(publish(&mut c, now, "Event: presence\n", &body).status, 200);
    }
    let doc = c.document(BOB);
    assert!(doc.len() < 1000, "{} bytes", doc.len());
    assert!(doc.contains("id=\"d9\""), "the newest is kept: {doc}");
    assert!(!doc.contains("id=\"d0\""), "the oldest is left out: {doc}");
    assert!(pidf::parse(doc.as_bytes()).is_ok());
}
