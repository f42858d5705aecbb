//! The glue, through the real C ABI on the SDK's FakeHost: claims, answers, NOTIFYs sent
//! with the dialog's route set, the store layout, registration events and a restart.

use std::time::Duration;

use super::*;
use huddle_sdk::fake::{FakeHost, FakePlugin};
use huddle_sdk::{Message, RegistrationKind, RequestInfo};

const CONFIG: &str = "domain = \"example.test\"";

fn start(host: &FakeHost, config: &str) -> FakePlugin {
    host.start(&huddle_plugin_export::entry(), config)
        .expect("presence starts")
}

fn ws_as(user: &str) -> RequestInfo {
    RequestInfo::new(Transport::Ws, Some(([127, 0, 0, 1], 40000).into())).authenticated(user)
}

fn publish_req(body: &str) -> String {
    format!("PUBLISH sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/WS b.invalid;branch=z9hG4bKp1\r\nMax-Forwards: 70\r\nFrom: <sip:bob@example.test>;tag=b1\r\nTo: <sip:bob@example.test>\r\nCall-ID: p1\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\nExpires: 300\r\nContent-Type: application/pidf+xml\r\nContent-Length: {}\r\n\r\n{body}", body.len())
}

fn subscribe_req(event: &str) -> String {
    format!("SUBSCRIBE sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/WS a.invalid;branch=z9hG4bKs1\r\nRecord-Route: <sip:127.0.0.1:5060;transport=ws;lr>\r\nRecord-Route: <sip:tok@127.0.0.1:5060;transport=ws;lr>\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.test>;tag=a1\r\nTo: <sip:bob@example.test>\r\nCall-ID: s1\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:alice@a.invalid;transport=ws>\r\nEvent: {event}\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n")
}

const OPEN: &str = "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:bob@example.test\"><tuple id=\"t\"><status><basic>open</basic></status></tuple></presence>";

#[test]
fn claims_are_narrow() {
    let host = FakeHost::new();
    let plugin = start(&host, CONFIG);
    assert_eq!(
        plugin.claims(),
        &[
            Claim::method("PUBLISH"),
            Claim::method("SUBSCRIBE").with_event("presence"),
            Claim::method("SUBSCRIBE").with_event("presence.winfo"),
        ]
    );
    let conference = subscribe_req("conference");
    assert!(!plugin.claims_request(conference.as_bytes()));
    assert!(plugin.claims_request(subscribe_req("presence;id=7").as_bytes()));
    // What a conference plugin and the messaging plugin claim does not overlap ours.
    let theirs = [
        Claim::method("SUBSCRIBE")
            .with_event("conference")
            .with_user("room-*"),
        Claim::method("MESSAGE"),
    ];
    for mine in plugin.claims() {
        assert!(theirs.iter().all(|t| !mine.overlaps(t)), "{mine}");
    }
}

#[test]
fn a_bad_config_fails_start_up() {
    let host = FakeHost::new();
    assert!(host
        .start(&huddle_plugin_export::entry(), "policy = \"everyone\"")
        .is_err());
    assert!(host
        .start(&huddle_plugin_export::entry(), "polcy = \"lists\"")
        .is_err());
}

#[test]
fn publish_subscribe_notify_and_the_store() {
    let host = FakeHost::new();
    let mut plugin = start(&host, CONFIG);
    let txn = plugin
        .request_with(publish_req(OPEN), &ws_as("bob"))
        .unwrap();
    let ok = host.final_response(txn).unwrap();
    assert_eq!(ok.status(), 200);
    let etag = ok
        .message
        .header(&huddle_sdk::HeaderName::parse("SIP-ETag"))
        .expect("SIP-ETag on every successful PUBLISH")
        .to_owned();
    // Writes are gathered for `write_behind_ms` (100 by default) and made once.
    assert!(host.entries("").is_empty(), "nothing written yet");
    plugin.advance(Duration::from_millis(100)).unwrap();
    let stored = host
        .entries("")
        .into_iter()
        .find(|(k, _)| k.starts_with(b"pub/bob@example.test/"))
        .expect("the publication is stored");
    assert!(String::from_utf8(stored.1).unwrap().contains(&etag));
    let doc = host
        .get("", b"presence/bob@example.test")
        .expect("composed document");
    assert!(String::from_utf8(doc)
        .unwrap()
        .contains("<basic>open</basic>"));

    let txn = plugin
        .request_with(subscribe_req("presence"), &ws_as("alice"))
        .unwrap();
    let ok = host.final_response(txn).unwrap();
    assert_eq!(ok.status(), 200);
    let to_tag = ok.message.to_header().unwrap().tag().unwrap().to_owned();
    let sent = host.take_sent_requests();
    assert_eq!(sent.len(), 1);
    let notify: &Message = &sent[0].message;
    assert_eq!(notify.method(), Some(&Method::Notify));
    assert_eq!(
        notify.request_uri(),
        Some("sip:alice@a.invalid;transport=ws")
    );
    assert_eq!(notify.from_header().unwrap().tag(), Some(to_tag.as_str()));
    assert_eq!(
        notify.header_list(&huddle_sdk::HeaderName::Route).last(),
        Some("<sip:tok@127.0.0.1:5060;transport=ws;lr>")
    );
    assert!(std::str::from_utf8(notify.body()).unwrap().contains("open"));
    assert_eq!(
        notify.header(&huddle_sdk::HeaderName::parse("Huddle-Report")),
        Some("failures"),
        "only a failed NOTIFY needs its response"
    );
    plugin.advance(Duration::from_millis(100)).unwrap();
    assert_eq!(
        host.entries("")
            .iter()
            .filter(|(k, _)| k.starts_with(b"sub/"))
            .count(),
        1
    );

    // The subscriber is gone (the host made up a 480): the subscription goes too.
    plugin
        .answer(&sent[0], 480, "Temporarily Unavailable")
        .unwrap();
    plugin.advance(Duration::from_millis(100)).unwrap();
    assert_eq!(
        host.entries("")
            .iter()
            .filter(|(k, _)| k.starts_with(b"sub/"))
            .count(),
        0
    );
}

#[test]
fn registration_events_drive_presence() {
    let host = FakeHost::new();
    let mut plugin = start(&host, CONFIG);
    plugin
        .request_with(subscribe_req("presence"), &ws_as("alice"))
        .unwrap();
    host.take_sent_requests();
    let event = |kind, bindings| RegistrationEvent {
        kind,
        aor: "sip:bob@example.test".into(),
        bindings,
        binding_keys: Vec::new(),
    };
    plugin
        .registration(&event(RegistrationKind::Online, 1))
        .unwrap();
    let sent = host.take_sent_requests();
    assert!(std::str::from_utf8(sent[0].message.body())
        .unwrap()
        .contains("<basic>open</basic>"));
    plugin
        .registration(&event(RegistrationKind::Offline, 0))
        .unwrap();
    let sent = host.take_sent_requests();
    assert!(std::str::from_utf8(sent[0].message.body())
        .unwrap()
        .contains("<basic>closed</basic>"));
}

#[test]
fn a_restart_keeps_subscriptions_and_notifies_them() {
    let host = FakeHost::new();
    let mut plugin = start(&host, CONFIG);
    plugin
        .request_with(publish_req(OPEN), &ws_as("bob"))
        .unwrap();
    plugin
        .request_with(subscribe_req("presence"), &ws_as("alice"))
        .unwrap();
    let before = host.take_sent_requests();
    let call_id = before[0].message.call_id().unwrap().to_owned();
    let host = plugin.stop();

    let _plugin = start(&host, CONFIG);
    let after = host.take_sent_requests();
    assert_eq!(after.len(), 1, "one NOTIFY of the current state");
    assert_eq!(after[0].message.call_id(), Some(call_id.as_str()));
    assert!(after[0].message.cseq().unwrap().seq > 1);
    assert!(std::str::from_utf8(after[0].message.body())
        .unwrap()
        .contains("open"));
}

#[test]
fn lists_in_the_store_are_applied_as_they_change() {
    let host = FakeHost::new();
    let mut plugin = start(&host, "domain = \"example.test\"\npolicy = \"lists\"");
    plugin
        .request_with(publish_req(OPEN), &ws_as("bob"))
        .unwrap();
    plugin
        .request_with(subscribe_req("presence"), &ws_as("alice"))
        .unwrap();
    let sent = host.take_sent_requests();
    assert!(std::str::from_utf8(sent[0].message.body())
        .unwrap()
        .contains("closed"));
    host.put(
        "",
        b"policy/bob@example.test",
        br#"{"allow":["alice@example.test"]}"#,
    );
    plugin.deliver_changes().unwrap();
    let sent = host.take_sent_requests();
    assert_eq!(sent.len(), 1);
    assert!(std::str::from_utf8(sent[0].message.body())
        .unwrap()
        .contains("open"));
}

#[test]
fn the_config_documented_in_huddle_toml_is_accepted() {
    // The commented `[plugins.config]` of the presence entry in config/huddle.toml, uncommented:
    // every key it documents must be one the plugin accepts (`deny_unknown_fields`).
    let text = include_str!("../../../config/huddle.toml");
    let table: String = text
        .lines()
        .skip_while(|l| !l.starts_with("# name = \"presence\""))
        .skip_while(|l| !l.starts_with("# [plugins.config]"))
        .skip(1)
        .take_while(|l| l.starts_with('#'))
        .map(|l| format!("{}\n", l.trim_start_matches('#').trim_start()))
        .collect();
    assert!(table.contains("write_behind_ms"), "{table}");
    let host = FakeHost::new();
    assert!(
        host.start(&huddle_plugin_export::entry(), &table).is_ok(),
        "{table}"
    );
}

#[test]
fn the_expiry_timer_stays_when_its_deadline_goes_away() {
    let host = FakeHost::new();
    let mut plugin = start(&host, CONFIG);
    plugin
        .request_with(subscribe_req("presence"), &ws_as("alice"))
        .unwrap();
    let txn = plugin
        .request_with(publish_req(OPEN), &ws_as("bob"))
        .unwrap();
    let etag = host
        .final_response(txn)
        .unwrap()
        .message
        .header(&huddle_sdk::HeaderName::parse("SIP-ETag"))
        .unwrap()
        .to_owned();
    let expiry_timers = || -> Vec<(TimerId, Duration)> {
        host.timers()
            .into_iter()
            .filter(|&(_, _, token)| token == EXPIRY)
            .map(|(id, due, _)| (id, due))
            .collect()
    };
    let armed = expiry_timers();
    assert_eq!(
        armed.len(),
        1,
        "one timer, at the publication's expiry (300 s)"
    );
    let remove = publish_req("")
        .replace("Expires: 300", "Expires: 0")
        .replace("CSeq: 1", "CSeq: 2")
        .replace(
            "Content-Type: application/pidf+xml\r\n",
            &format!("SIP-If-Match: {etag}\r\n"),
        );
    let txn = plugin.request_with(remove, &ws_as("bob")).unwrap();
    assert_eq!(host.final_response(txn).unwrap().status(), 200);
    assert_eq!(
        expiry_timers(),
        armed,
        "the next deadline (the subscription's, 600 s) is later: the timer is kept, not moved"
    );
    // It fires early, finds nothing due and is set again for the subscription.
    plugin.fire_timer(armed[0].0).unwrap();
    let rearmed = expiry_timers();
    assert_eq!(rearmed.len(), 1);
    assert_ne!(rearmed[0].0, armed[0].0);
    assert_eq!(
        host.take_sent_requests()
            .iter()
            .filter(|r| r.message.method() == Some(&Method::Notify))
            .count(),
        3,
        "the subscription's first NOTIFY, the publication's and the removal's; the early \
         timer sends nothing"
    );
}

#[test]
fn a_write_behind_window_is_one_store_commit() {
    for batches in [true, false] {
        let host = FakeHost::new();
        if !batches {
            // A host before ABI 1.3 (or one whose limits refuse the batch): one write per key.
            host.set_batch_limit(None);
        }
        let mut plugin = start(&host, CONFIG);
        for (n, user) in ["alice", "carol", "dave"].into_iter().enumerate() {
            let sub = subscribe_req("presence")
                .replace("alice", user)
                .replace("Call-ID: s1", &format!("Call-ID: s{n}"));
            plugin.request_with(sub, &ws_as(user)).unwrap();
        }
        plugin
            .request_with(publish_req(OPEN), &ws_as("bob"))
            .unwrap();
        assert!(host.entries("").is_empty(), "nothing written yet");
        let commits = host.batch_commits();
        plugin.advance(Duration::from_millis(100)).unwrap();
        let keys: Vec<Vec<u8>> = host.entries("").into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys.iter().filter(|k| k.starts_with(b"sub/")).count(),
            3,
            "{batches}"
        );
        assert_eq!(keys.iter().filter(|k| k.starts_with(b"pub/")).count(), 1);
        assert!(keys.iter().any(|k| k == b"presence/bob@example.test"));
        let expected = if batches { commits + 1 } else { commits };
        assert_eq!(host.batch_commits(), expected, "batches: {batches}");

        // The publication removed within the next window: deleted in the store, the
        // subscriptions stay.
        let etag = host
            .responses()
            .iter()
            .rev()
            .find_map(|r| {
                r.message
                    .header(&huddle_sdk::HeaderName::parse("SIP-ETag"))
                    .map(str::to_owned)
            })
            .unwrap();
        let remove = publish_req("")
            .replace(
                "Expires: 300",
                &format!("Expires: 0\r\nSIP-If-Match: {etag}"),
            )
            .replace("Content-Type: application/pidf+xml\r\n", "")
            .replace("CSeq: 1", "CSeq: 2");
        let txn = plugin.request_with(remove, &ws_as("bob")).unwrap();
        assert_eq!(host.final_response(txn).unwrap().status(), 200);
        plugin.advance(Duration::from_millis(100)).unwrap();
        let keys: Vec<Vec<u8>> = host.entries("").into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys.iter().filter(|k| k.starts_with(b"pub/")).count(), 0);
        assert_eq!(keys.iter().filter(|k| k.starts_with(b"sub/")).count(), 3);
    }
}
