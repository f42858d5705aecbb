//! Glue tests: the plugin on a `FakeHost`, through the real C ABI. Timing lives in the engine's
//! tests (virtual time); these check what crosses the boundary.

use super::*;
use huddle_sdk::fake::{sample_request, FakeHost, FakePlugin, SentRequest};
use huddle_sdk::HeaderName;

const BOB: &str = "sip:bob@example.test";

/// A `location/` record as the registrar writes it (the fields this plugin reads).
#[derive(Serialize)]
#[serde(crate = "huddle_sdk::serde")]
struct BindingRecord {
    expires_unix: u64,
}

fn binding(expires_unix: u64) -> Vec<u8> {
    wire::encode(&BindingRecord { expires_unix })
}

/// A host with one account, bob's.
fn host_with_bob() -> FakeHost {
    let host = FakeHost::new();
    host.add_user("bob");
    host
}

/// Starts the plugin writing on its own thread (`store_writers = 0`), so that every answer
/// is there when a call returns; `writers_answer_202_after_the_write` covers the writers.
fn start(config: &str) -> (FakeHost, FakePlugin) {
    start_on(host_with_bob(), config)
}

fn start_on(host: FakeHost, config: &str) -> (FakeHost, FakePlugin) {
    let mut plugin = host
        .start(
            &huddle_plugin_export::entry(),
            &format!("store_writers = 0\n{config}"),
        )
        .expect("messaging starts");
    plugin.advance(Duration::ZERO).unwrap();
    (host, plugin)
}

fn register(host: &FakeHost, plugin: &mut FakePlugin, key: &str) {
    host.put("location", key.as_bytes(), &binding(u64::MAX / 2000));
    plugin.deliver_changes().unwrap();
}

/// bob on two devices (d1, d2) and a MESSAGE with `body` to him: the plugin's transaction and
/// the two deliveries it sent.
fn two_devices_and_a_message(
    body: &str,
) -> (
    FakeHost,
    FakePlugin,
    huddle_sdk::TransactionId,
    Vec<SentRequest>,
) {
    let (host, mut plugin) = start("");
    register(&host, &mut plugin, "bob@example.test/d1");
    register(&host, &mut plugin, "bob@example.test/d2");
    let txn = plugin
        .request(sample_request("MESSAGE", BOB, body))
        .unwrap();
    assert!(host.final_response(txn).is_none(), "no device answered yet");
    let sent = host.take_sent_requests();
    assert_eq!(sent.len(), 2, "one delivery per device");
    (host, plugin, txn, sent)
}

#[test]
fn delivers_to_each_device_separately_and_answers_200_on_the_first_accept() {
    let (host, mut plugin, txn, sent) = two_devices_and_a_message("héllo");
    let pins: Vec<_> = sent
        .iter()
        .map(|s| {
            s.message
                .header(&HeaderName::parse(BINDING_HEADER))
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(pins, ["bob@example.test/d1", "bob@example.test/d2"]);
    let first = &sent[0].message;
    assert_eq!(first.body(), "héllo".as_bytes());
    assert_eq!(first.from_header().unwrap().uri, "sip:alice@example.test");
    assert!(first.header(&HeaderName::parse("Date")).is_some());
    plugin.answer(&sent[1], 200, "OK").unwrap();
    assert_eq!(host.final_response(txn).unwrap().status(), 200);
    plugin.answer(&sent[0], 200, "OK").unwrap();
    assert!(host.entries("").iter().all(|(k, _)| !k.starts_with(b"q/")));
}

#[test]
fn a_waiting_sender_is_answered_by_the_host_on_the_first_accept_and_only_once() {
    let (host, mut plugin, txn, sent) = two_devices_and_a_message("hi");
    let answer = HeaderName::parse(HUDDLE_ANSWER_HEADER);
    for s in &sent {
        assert_eq!(
            s.message.header(&answer),
            Some(txn.0.to_string().as_str()),
            "each delivery names the waiting sender"
        );
    }
    plugin.answer(&sent[0], 200, "OK").unwrap();
    plugin.answer(&sent[1], 200, "OK").unwrap();
    let answers = host.responses_to(txn);
    assert_eq!(answers.len(), 1, "one answer: the host's");
    assert_eq!(answers[0].status(), 200);
    assert!(
        answers[0].synthetic,
        "made by the host, not sent again by the plugin"
    );
    assert!(!host.logged(huddle_sdk::Level::Debug, "not sent"));
    assert!(host.entries("").iter().all(|(k, _)| !k.starts_with(b"q/")));
}

#[test]
fn a_failed_delivery_is_still_answered_by_the_plugin() {
    let (host, mut plugin) = start("");
    register(&host, &mut plugin, "bob@example.test/d1");
    let txn = plugin
        .request(sample_request("MESSAGE", BOB, "hi"))
        .unwrap();
    let sent = host.take_sent_requests();
    assert_eq!(sent.len(), 1);
    plugin.answer(&sent[0], 486, "Busy Here").unwrap();
    let answer = host
        .final_response(txn)
        .expect("answered after the failure");
    assert!(!answer.synthetic, "the plugin's own answer");
    assert_ne!(answer.status(), 200);
}

#[test]
fn offline_user_is_stored_before_202_without_asking_and_delivered_on_register() {
    let (host, mut plugin) = start("");
    let txn = plugin
        .request(sample_request("MESSAGE", BOB, "later"))
        .unwrap();
    assert!(
        host.sent_requests().is_empty(),
        "the account answer replaces the probe"
    );
    assert_eq!(host.final_response(txn).unwrap().status(), 202);
    assert_eq!(stored_count(&host), 1, "durable before the 202");

    register(&host, &mut plugin, "bob@example.test/d1");
    let sent = host.take_sent_requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].message.body(), b"later");
    plugin.answer(&sent[0], 200, "OK").unwrap();
    assert_eq!(stored_count(&host), 0);
}

#[test]
fn users_added_and_removed_at_run_time_are_answered_as_they_are_now() {
    let (host, mut plugin) = start("");
    let to_carol = || sample_request("MESSAGE", "sip:carol@example.test", "hi carol");
    let txn = plugin.request(to_carol()).unwrap();
    assert_eq!(host.final_response(txn).unwrap().status(), 404);
    host.add_user("carol");
    let txn = plugin.request(to_carol()).unwrap();
    assert_eq!(host.final_response(txn).unwrap().status(), 202);
    host.remove_user("carol");
    let txn = plugin.request(to_carol()).unwrap();
    assert_eq!(host.final_response(txn).unwrap().status(), 404);
    assert_eq!(stored_count(&host), 1, "what was accepted before stays");
    assert!(host.sent_requests().is_empty(), "never a probe");
}

#[test]
fn a_device_gone_by_registration_event_leaves_the_next_message_stored_at_once() {
    let (host, mut plugin) = start("");
    let online = |n| RegistrationEvent {
        kind: if n == 0 {
            huddle_sdk::RegistrationKind::Offline
        } else {
            huddle_sdk::RegistrationKind::Online
        },
        aor: BOB.into(),
        bindings: n,
        binding_keys: (0..n).map(|i| format!("bob@example.test/ws{i}")).collect(),
    };
    plugin.registration(&online(1)).unwrap();
    let txn = plugin
        .request(sample_request("MESSAGE", BOB, "live"))
        .unwrap();
    let sent = host.take_sent_requests();
    assert_eq!(sent.len(), 1, "to the device, not stored");
    plugin.answer(&sent[0], 200, "OK").unwrap();
    assert_eq!(host.final_response(txn).unwrap().status(), 200);
    // The WebSocket closed: the host announces it before `location/` is rewritten.
    plugin.registration(&online(0)).unwrap();
    let txn = plugin
        .request(sample_request("MESSAGE", BOB, "gone"))
        .unwrap();
    assert!(host.take_sent_requests().is_empty(), "no probe, no device");
    assert_eq!(host.final_response(txn).unwrap().status(), 202);
}

#[test]
fn a_host_that_cannot_tell_is_asked_by_routing_to_the_address_of_record() {
    // A host before ABI 1.5: no account answer, so the plugin probes as it always did.
    let host = host_with_bob();
    host.set_user_lookup(false);
    let (host, mut plugin) = start_on(host, "");
    let txn = plugin
        .request(sample_request("MESSAGE", BOB, "later"))
        .unwrap();
    let probe = host.take_sent_requests();
    assert_eq!(probe.len(), 1);
    assert!(probe[0]
        .message
        .header(&HeaderName::parse(BINDING_HEADER))
        .is_none());
    plugin
        .answer(&probe[0], 480, "Temporarily Unavailable")
        .unwrap();
    let answer = host.final_response(txn).unwrap();
    assert_eq!(answer.status(), 202);
    let stored: Vec<_> = host
        .entries("")
        .into_iter()
        .filter(|(k, _)| k.starts_with(b"q/"))
        .collect();
    assert_eq!(stored.len(), 1, "durable before the 202");

    register(&host, &mut plugin, "bob@example.test/d1");
    let sent = host.take_sent_requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].message.body(), b"later");
    plugin.answer(&sent[0], 200, "OK").unwrap();
    assert!(host.entries("").iter().all(|(k, _)| !k.starts_with(b"q/")));
    // The host's routing knows no such user: 404, nothing kept.
    let txn = plugin
        .request(sample_request("MESSAGE", "sip:nobody@example.test", "hi"))
        .unwrap();
    let probe = host.take_sent_requests();
    plugin.answer(&probe[0], 404, "Not Found").unwrap();
    assert_eq!(host.final_response(txn).unwrap().status(), 404);
    assert_eq!(stored_count(&host), 0);
}

#[test]
fn unknown_user_gets_404_and_a_big_body_413() {
    let (host, mut plugin) = start("max_body_bytes = 4");
    let txn = plugin
        .request(sample_request("MESSAGE", "sip:nobody@example.test", "hi"))
        .unwrap();
    assert!(host.sent_requests().is_empty(), "no probe");
    assert_eq!(host.final_response(txn).unwrap().status(), 404);
    let txn = plugin
        .request(sample_request("MESSAGE", BOB, "too long"))
        .unwrap();
    assert_eq!(host.final_response(txn).unwrap().status(), 413);
}

#[test]
fn another_method_gets_405_naming_message_in_allow() {
    let (host, mut plugin) = start("");
    // Only a configuration that replaced the plugin's claims routes it another method.
    assert!(plugin.request(sample_request("OPTIONS", BOB, "")).is_err());
    let txn = plugin
        .request_unclaimed(sample_request("OPTIONS", BOB, ""))
        .unwrap();
    let response = host.final_response(txn).unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(
        response.message.header(&HeaderName::parse("Allow")),
        Some("MESSAGE")
    );
    assert!(host.sent_requests().is_empty());
}

#[test]
fn is_composing_is_relayed_never_stored() {
    let (host, mut plugin) = start("");
    let req = String::from_utf8(sample_request("MESSAGE", BOB, "<isComposing/>").to_vec())
        .unwrap()
        .replace("text/plain", "application/im-iscomposing+xml");
    let txn = plugin.request(req).unwrap();
    let sent = host.take_sent_requests();
    assert_eq!(sent.len(), 1);
    plugin
        .answer(&sent[0], 480, "Temporarily Unavailable")
        .unwrap();
    assert_eq!(host.final_response(txn).unwrap().status(), 480);
    assert!(host.entries("").is_empty());
}

#[test]
fn delivery_notice_goes_back_to_the_sender() {
    let (host, mut plugin) = start("imdn = \"header\"");
    register(&host, &mut plugin, "bob@example.test/d1");
    let req = String::from_utf8(sample_request("MESSAGE", BOB, "ping").to_vec())
        .unwrap()
        .replace(
            "Content-Type:",
            "Disposition-Notification: positive-delivery\r\nMessage-ID: m-42\r\nContent-Type:",
        );
    plugin.request(req).unwrap();
    let sent = host.take_sent_requests();
    plugin.answer(&sent[0], 200, "OK").unwrap();
    let notice = host.take_sent_requests();
    assert_eq!(notice.len(), 1);
    let n = &notice[0].message;
    assert_eq!(n.request_uri(), Some("sip:alice@example.test"));
    assert_eq!(n.content_type(), Some("message/imdn+xml"));
    assert!(std::str::from_utf8(n.body()).unwrap().contains("m-42"));
}

#[test]
fn stored_messages_survive_a_restart() {
    let (_, mut plugin) = start("");
    plugin
        .request(sample_request("MESSAGE", BOB, "kept"))
        .unwrap();
    let host = plugin.stop();
    host.put(
        "location",
        b"bob@example.test/d9",
        &binding(u64::MAX / 2000),
    );
    let mut plugin = host
        .start(&huddle_plugin_export::entry(), "store_writers = 0")
        .unwrap();
    plugin.advance(Duration::ZERO).unwrap();
    let sent = host.take_sent_requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].message.body(), b"kept");
}

#[test]
fn writers_answer_202_after_the_write() {
    let host = host_with_bob();
    let mut plugin = host
        .start(&huddle_plugin_export::entry(), "store_writers = 2")
        .unwrap();
    plugin.advance(Duration::ZERO).unwrap();
    let mut txns = Vec::new();
    for body in ["w1", "w2", "w3"] {
        let txn = plugin
            .request(sample_request("MESSAGE", BOB, body))
            .unwrap();
        assert!(host.sent_requests().is_empty(), "no probe");
        txns.push(txn);
    }
    // Stopping the plugin lets the writers finish their queues: every 202 is out, and every
    // message answered 202 is in the store.
    let host = plugin.stop();
    for txn in txns {
        assert_eq!(host.final_response(txn).unwrap().status(), 202);
    }
    let stored = host
        .entries("")
        .into_iter()
        .filter(|(k, _)| k.starts_with(b"q/"))
        .count();
    assert_eq!(stored, 3);
}

#[test]
fn history_is_written_in_batches_and_old_batches_are_swept() {
    let host = FakeHost::new();
    // A batch from 1970 (older than any retention) and one from the far future.
    let old = b"h/0000000000000001-0000000000000001".to_vec();
    let future = b"h/7fffffffffffffff-0000000000000001".to_vec();
    host.put("", &old, &wire::encode(&Vec::<HistoryEntry>::new()));
    host.put("", &future, &wire::encode(&Vec::<HistoryEntry>::new()));
    let mut plugin = host
        .start(&huddle_plugin_export::entry(), "store_writers = 0")
        .unwrap();
    plugin.advance(Duration::ZERO).unwrap();
    assert!(host.get("", &old).is_none(), "swept at start");
    assert!(host.get("", &future).is_some(), "within retention");

    register(&host, &mut plugin, "bob@example.test/d1");
    plugin
        .request(sample_request("MESSAGE", BOB, "for the record"))
        .unwrap();
    let sent = host.take_sent_requests();
    plugin.answer(&sent[0], 200, "OK").unwrap();
    // Written at the next flush (a timer), as one record.
    plugin.advance(Duration::from_secs(1)).unwrap();
    let batches: Vec<Vec<HistoryEntry>> = host
        .entries("")
        .into_iter()
        .filter(|(k, _)| k.starts_with(b"h/") && *k != future)
        .filter_map(|(_, v)| wire::decode(&v))
        .collect();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].len(), 1);
    let e = &batches[0][0];
    assert_eq!(e.from, "sip:alice@example.test");
    assert_eq!(e.to, BOB);
    assert_eq!(e.body, Body::Text("for the record".into()));
}

#[test]
fn a_device_announced_by_a_registration_event_gets_the_next_message_before_the_store_knows_it() {
    let (host, mut plugin) = start("");
    register(&host, &mut plugin, "bob@example.test/d1");
    // d2 has registered (the host says so in order with requests) but `location/` is written
    // behind: its record is not in the store yet when alice's MESSAGE arrives.
    plugin
        .registration(&RegistrationEvent {
            kind: huddle_sdk::RegistrationKind::Updated,
            aor: BOB.into(),
            bindings: 2,
            binding_keys: vec!["bob@example.test/d1".into(), "bob@example.test/d2".into()],
        })
        .unwrap();
    let txn = plugin
        .request(sample_request("MESSAGE", BOB, "both of you"))
        .unwrap();
    let sent = host.take_sent_requests();
    let mut pins: Vec<_> = sent
        .iter()
        .map(|s| {
            s.message
                .header(&HeaderName::parse(BINDING_HEADER))
                .unwrap()
                .to_owned()
        })
        .collect();
    pins.sort();
    assert_eq!(pins, ["bob@example.test/d1", "bob@example.test/d2"]);
    plugin.answer(&sent[0], 200, "OK").unwrap();
    assert_eq!(host.final_response(txn).unwrap().status(), 200);
    // The write-behind catches up: nothing is sent twice.
    register(&host, &mut plugin, "bob@example.test/d2");
    assert!(host.take_sent_requests().is_empty());
    // The host says d1 went away (its connection closed) before the store does.
    plugin
        .registration(&RegistrationEvent {
            kind: huddle_sdk::RegistrationKind::Updated,
            aor: BOB.into(),
            bindings: 1,
            binding_keys: vec!["bob@example.test/d2".into()],
        })
        .unwrap();
    let txn = plugin
        .request(sample_request("MESSAGE", BOB, "just d2"))
        .unwrap();
    let sent = host.take_sent_requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0]
            .message
            .header(&HeaderName::parse(BINDING_HEADER))
            .unwrap(),
        "bob@example.test/d2"
    );
    plugin.answer(&sent[0], 200, "OK").unwrap();
    assert_eq!(host.final_response(txn).unwrap().status(), 200);
}

#[test]
fn a_device_failing_after_another_accepted_keeps_the_message_stored_for_it() {
    let (host, mut plugin, txn, sent) = two_devices_and_a_message("hi");
    plugin.answer(&sent[0], 200, "OK").unwrap();
    assert_eq!(host.final_response(txn).unwrap().status(), 200);
    plugin
        .answer(&sent[1], 500, "Server Internal Error")
        .unwrap();
    let stored: Vec<_> = host
        .entries("")
        .into_iter()
        .filter(|(k, _)| k.starts_with(b"q/"))
        .collect();
    assert_eq!(stored.len(), 1, "kept for the retry of d2");
    let record = String::from_utf8_lossy(&stored[0].1).into_owned();
    assert!(record.contains("bob@example.test/d2"), "{record}");
}

/// Sends `bodies` to offline bob (given an account here) on a plugin with one writer that
/// gathers for up to `window_ms`, stops it (the writer commits what it holds) and returns the
/// host and the transactions.
fn offline_burst(
    host: FakeHost,
    config: &str,
    bodies: &[&str],
) -> (FakeHost, Vec<huddle_sdk::TransactionId>) {
    host.add_user("bob");
    let mut plugin = host
        .start(&huddle_plugin_export::entry(), config)
        .expect("messaging starts");
    plugin.advance(Duration::ZERO).unwrap();
    let mut txns = Vec::new();
    for body in bodies {
        txns.push(
            plugin
                .request(sample_request("MESSAGE", BOB, body))
                .unwrap(),
        );
    }
    assert!(host.sent_requests().is_empty(), "no probe");
    (plugin.stop(), txns)
}

fn stored_count(host: &FakeHost) -> usize {
    host.entries("")
        .into_iter()
        .filter(|(k, _)| k.starts_with(b"q/"))
        .count()
}

#[test]
fn a_writer_gathers_writes_into_few_commits_and_answers_202_after_them() {
    let bodies = ["b1", "b2", "b3", "b4", "b5", "b6"];
    // A window far longer than the burst takes: every write shares the first one's commit
    // (a second commit only if this thread stalled for a second).
    let (host, txns) = offline_burst(
        FakeHost::new(),
        "store_writers = 1\nstore_batch_window_ms = 1000\nstore_batch_max = 64",
        &bodies,
    );
    for txn in txns {
        assert_eq!(host.final_response(txn).unwrap().status(), 202);
    }
    assert_eq!(stored_count(&host), bodies.len());
    // The history, flushed on the way out, went through the writer too.
    let history: Vec<HistoryEntry> = host
        .entries("")
        .into_iter()
        .filter(|(k, _)| k.starts_with(b"h/"))
        .filter_map(|(_, v)| wire::decode::<Vec<HistoryEntry>>(&v))
        .flatten()
        .collect();
    assert_eq!(history.len(), bodies.len());
    let commits = host.batch_commits();
    assert!(
        (1..bodies.len()).contains(&commits),
        "{commits} commits for {} writes",
        bodies.len()
    );
}

#[test]
fn a_batch_over_the_host_limit_is_split_and_still_all_stored() {
    let host = FakeHost::new();
    host.set_batch_limit(Some((2, 1 << 20)));
    let bodies = ["s1", "s2", "s3", "s4", "s5"];
    let (host, txns) = offline_burst(
        host,
        "store_writers = 1\nstore_batch_window_ms = 1000\nstore_batch_max = 64",
        &bodies,
    );
    for txn in txns {
        assert_eq!(host.final_response(txn).unwrap().status(), 202);
    }
    assert_eq!(stored_count(&host), bodies.len());
    assert!(host.batch_commits() >= 3, "{}", host.batch_commits());
}

#[test]
fn a_host_without_batches_gets_one_write_at_a_time() {
    let host = FakeHost::new();
    host.set_batch_limit(None);
    let bodies = ["o1", "o2", "o3"];
    let (host, txns) = offline_burst(host, "store_writers = 1", &bodies);
    for txn in txns {
        assert_eq!(host.final_response(txn).unwrap().status(), 202);
    }
    assert_eq!(stored_count(&host), bodies.len());
    assert_eq!(host.batch_commits(), 0);
}

#[test]
fn batch_settings_out_of_range_are_refused() {
    for bad in ["store_batch_max = 0", "store_batch_window_ms = 5000"] {
        let host = FakeHost::new();
        assert!(
            host.start(&huddle_plugin_export::entry(), bad).is_err(),
            "{bad} accepted"
        );
    }
}

#[test]
fn stored_and_delivered_events_name_the_message_never_its_body() {
    let host = FakeHost::with_capabilities(
        Capabilities::ALL
            .without(Capabilities::MEDIA)
            .with(Capabilities::EVENTS),
    );
    host.add_user("bob");
    let mut plugin = host
        .start(&huddle_plugin_export::entry(), "store_writers = 0")
        .expect("messaging starts");
    plugin.advance(Duration::ZERO).unwrap();
    let txn = plugin
        .request(sample_request("MESSAGE", BOB, "secret words"))
        .unwrap();
    assert_eq!(host.final_response(txn).unwrap().status(), 202);
    register(&host, &mut plugin, "bob@example.test/d1");
    let sent = host.take_sent_requests();
    assert_eq!(sent.len(), 1);
    plugin.answer(&sent[0], 200, "OK").unwrap();

    let events = host.events();
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["message.stored", "message.delivered"]);
    for (_, details) in &events {
        assert!(!details.contains("secret"), "{details}");
    }
    let stored: serde_json::Value = serde_json::from_str(&events[0].1).unwrap();
    assert_eq!(stored["from"], "sip:alice@example.test");
    assert_eq!(stored["to"], BOB);
    assert_eq!(stored["size"], "secret words".len());
    assert!(stored["content_type"]
        .as_str()
        .is_some_and(|c| c.starts_with("text/plain")));
    let key = format!("q/{}", stored["id"].as_str().unwrap());
    let delivered: serde_json::Value = serde_json::from_str(&events[1].1).unwrap();
    assert_eq!(delivered["id"], stored["id"]);
    assert_eq!(delivered["binding"], "bob@example.test/d1");
    assert_eq!(delivered["to"], BOB);
    assert!(
        host.get("", key.as_bytes()).is_none(),
        "delivered: unstored"
    );
}

#[test]
fn events_no_webhook_takes_are_not_raised() {
    let host = FakeHost::with_capabilities(
        Capabilities::ALL
            .without(Capabilities::MEDIA)
            .with(Capabilities::EVENTS),
    );
    host.set_events_taken(Some(&["message.delivered"]));
    host.add_user("bob");
    let mut plugin = host
        .start(&huddle_plugin_export::entry(), "store_writers = 0")
        .expect("messaging starts");
    plugin.advance(Duration::ZERO).unwrap();
    let txn = plugin
        .request(sample_request("MESSAGE", BOB, "hello"))
        .unwrap();
    assert_eq!(host.final_response(txn).unwrap().status(), 202);
    register(&host, &mut plugin, "bob@example.test/d1");
    let sent = host.take_sent_requests();
    assert_eq!(sent.len(), 1);
    plugin.answer(&sent[0], 200, "OK").unwrap();
    let kinds: Vec<String> = host.events().into_iter().map(|(k, _)| k).collect();
    assert_eq!(kinds, ["message.delivered"]);

    host.set_events_taken(Some(&[]));
    let txn = plugin
        .request(sample_request("MESSAGE", BOB, "again"))
        .unwrap();
    let sent = host.take_sent_requests();
    assert_eq!(sent.len(), 1);
    plugin.answer(&sent[0], 200, "OK").unwrap();
    assert_eq!(host.final_response(txn).unwrap().status(), 200);
    assert_eq!(
        host.events().len(),
        1,
        "nothing raised once no webhook takes it"
    );
}

#[test]
fn a_delivery_in_parts_is_the_request_new_request_writes() {
    for (from, body, target, answer) in [
        (
            "\"Alice\" <sip:alice@example.test>;tag=a1",
            Body::of(b"hello"),
            Target::Device("bob@example.test/k1".into()),
            Some(TransactionId(42)),
        ),
        (
            "sip:alice@example.test;x=y",
            Body::of(&[0xff, 0, 1]),
            Target::Aor,
            None,
        ),
    ] {
        let m = Stored {
            seq: 1,
            user: "bob".into(),
            to: BOB.into(),
            from: from.into(),
            from_uri: "sip:alice@example.test".into(),
            content_type: "text/plain".into(),
            date: "Fri, 27 Nov 2026 17:00:00 GMT".into(),
            body,
            received_ms: 0,
            expires_ms: 1,
            imdn: None,
            progress: Default::default(),
        };
        let mut scratch = String::from("c1@h");
        let parts = delivery_parts(&m, false, &target, answer, &mut scratch, |p| {
            huddle_sdk::Message::from_parts(p, 65_535).unwrap()
        });
        let mut req = NewRequest::new(Method::Message, &m.to)
            .call_id("c1@h")
            .from(&m.from)
            .to(&format!("<{}>", m.to))
            .header("Date", &m.date);
        if let Target::Device(key) = &target {
            req = req.header(BINDING_HEADER, key);
        }
        if let Some(txn) = answer {
            req = req.header(HUDDLE_ANSWER_HEADER, &txn.0.to_string());
        }
        let bytes = req.body(&m.content_type, &m.body.bytes()).build();
        let tag = |m: &huddle_sdk::Message| {
            m.from_header()
                .ok()
                .and_then(|f| f.tag().map(str::to_owned))
        };
        let built = huddle_sdk::Message::parse(bytes).unwrap();
        if from.contains("tag=") {
            assert_eq!(parts.raw(), built.raw());
        } else {
            // A fresh tag each: equal but for it.
            let (a, b) = (tag(&parts).unwrap(), tag(&built).unwrap());
            let text = |m: &huddle_sdk::Message, t: &str| {
                String::from_utf8_lossy(m.raw()).replace(t, "TAG")
            };
            assert_eq!(text(&parts, &a), text(&built, &b));
        }
    }
}

/// A From known to carry a tag goes out as stored, not read again (`tagged` would have added
/// one to this tag-less value); one not known is read and tagged.
#[test]
fn a_from_known_to_be_tagged_is_sent_without_being_read_again() {
    let m = Stored {
        seq: 1,
        user: "bob".into(),
        to: BOB.into(),
        from: "<sip:alice@example.test>".into(),
        from_uri: "sip:alice@example.test".into(),
        content_type: "text/plain".into(),
        date: "Fri, 27 Nov 2026 17:00:00 GMT".into(),
        body: Body::of(b"hi"),
        received_ms: 0,
        expires_ms: 1,
        imdn: None,
        progress: Default::default(),
    };
    let from_of = |from_tagged: bool| {
        let mut scratch = String::from("c1@h");
        delivery_parts(&m, from_tagged, &Target::Aor, None, &mut scratch, |p| {
            let field = p.headers.iter().find(|(n, _)| *n == "From").unwrap();
            field.1.to_owned()
        })
    };
    assert_eq!(from_of(true), "<sip:alice@example.test>");
    assert!(from_of(false).starts_with("<sip:alice@example.test>;tag="));
}

/// Through the plugin: a sender's tagged From is delivered as received, a tag-less one gets a
/// tag (what `tagged` did for every delivery before the arrival's reading was kept), at the
/// edges where the arrival's reading and `tagged` could drift apart: a `;tag=` inside a quoted
/// display name (with an escaped quote) is no tag, the compact `f:` and `;TAG=` are read, and
/// the header's other parameters survive.
#[test]
fn a_senders_from_is_delivered_as_received_or_with_a_tag_added() {
    let (host, mut plugin) = start("");
    register(&host, &mut plugin, "bob@example.test/d1");
    let from = HeaderName::From;
    // (field name, value, what the delivery's From starts with when a tag is added: `None`
    // when it is sent as received).
    for (name, given, tag_added_to) in [
        ("From", "\"Al\" <sip:alice@example.test>;tag=x1;p=q", None),
        ("f", "<sip:alice@example.test>;tag=a", None),
        ("From", "<sip:alice@example.test>;TAG=a", None),
        (
            "From",
            "<sip:alice@example.test>;p=q",
            Some("<sip:alice@example.test>;p=q;tag="),
        ),
        (
            "From",
            "sip:alice@example.test",
            Some("<sip:alice@example.test>;tag="),
        ),
        (
            "From",
            r#""A \"x;tag=y\"" <sip:alice@example.test>"#,
            Some(r#""A \"x;tag=y\"" <sip:alice@example.test>;tag="#),
        ),
    ] {
        let text = String::from_utf8(sample_request("MESSAGE", BOB, "hi").to_vec()).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("From:"))
            .unwrap()
            .to_owned();
        let text = text.replace(&line, &format!("{name}: {given}"));
        let txn = plugin.request(text.into_bytes()).unwrap();
        let sent = host.take_sent_requests();
        assert_eq!(sent.len(), 1, "{given}");
        let out = sent[0].message.header(&from).unwrap().to_owned();
        let f = sent[0].message.from_header().unwrap();
        assert_eq!(f.uri, "sip:alice@example.test", "{out}");
        match tag_added_to {
            None => assert_eq!(out, given),
            Some(prefix) => {
                assert!(out.starts_with(prefix), "{out}");
                assert!(f.tag().is_some_and(|t| t.len() == 16), "{out}");
                assert_eq!(out.len(), prefix.len() + 16, "{out}");
            }
        }
        plugin.answer(&sent[0], 200, "OK").unwrap();
        assert_eq!(host.final_response(txn).unwrap().status(), 200);
    }
}

/// The history written as each message arrives is the record the owned entries made:
/// escapes, non-ASCII text, a binary body, one entry and several.
#[test]
fn history_written_as_it_comes_is_the_record_of_its_entries() {
    let bodies: [&[u8]; 4] = [
        b"hello",
        "quote \" back\\slash \n tab\t ctl\u{1} \u{e9}t\u{e9} \u{1f600}".as_bytes(),
        &[0xff, 0x00, 0x10, 0xab],
        b"",
    ];
    for n in 1..=bodies.len() {
        let mut buffer = HistoryBuffer::default();
        let mut owned = Vec::new();
        for (i, body) in bodies.iter().take(n).enumerate() {
            let seq = i as u64 + 7;
            let entry = HistoryRef {
                seq,
                ts_ms: 1_700_000_000_000 + seq,
                from: "sip:alice@example.test",
                to: "sip:b\"ob@example.test",
                content_type: "text/plain; charset=\"utf-8\"",
                body: BodyRef::of(body),
            };
            buffer.push(&entry);
            owned.push(HistoryEntry {
                seq,
                ts_ms: entry.ts_ms,
                from: entry.from.to_owned(),
                to: entry.to.to_owned(),
                content_type: entry.content_type.to_owned(),
                body: Body::of(body),
            });
        }
        assert_eq!(buffer.len(), n);
        let (first, entries, record) = buffer.take().expect("a batch");
        assert_eq!((first, entries), ((1_700_000_000_007, 7), n));
        assert_eq!(record, wire::encode(&owned));
        assert_eq!(wire::decode::<Vec<HistoryEntry>>(&record), Some(owned));
        assert!(buffer.take().is_none());
    }
}

/// The IMDN fields found by their text are what `Request::header` finds: any case, the first
/// of two, an empty value, absent, and names that only start or end the same.
#[test]
fn unknown_fields_are_found_as_request_header_finds_them() {
    let head = "MESSAGE sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:bob@example.test>\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\n";
    for fields in [
        "",
        "Disposition-Notification: positive-delivery\r\nMessage-ID: <m1>\r\n",
        "disposition-notification: negative-delivery\r\nMESSAGE-ID: m2\r\nMessage-ID: m3\r\n",
        "Message-IDs: no\r\nX-Disposition-Notification: no\r\nDisposition-Notification:\r\n",
    ] {
        let bytes = huddle_sdk::Bytes::from(format!("{head}{fields}Content-Length: 0\r\n\r\n"));
        let info = huddle_sdk::RequestInfo::new(huddle_sdk::Transport::Udp, None);
        let request = Request::parse(None, bytes, info).expect("a request");
        for name in ["Disposition-Notification", "Message-ID"] {
            assert_eq!(
                unknown_header(&request, name),
                request.header(name),
                "{fields}"
            );
        }
    }
}

/// The Call-IDs and hex written by hand are what `format!` wrote, at every digit count.
#[test]
fn call_ids_written_by_hand_are_what_format_wrote() {
    let mut ids = CallIds::new();
    let mut values = vec![0u64, 1, 9, 10, 15, 16, 255, 256, u64::MAX - 1];
    values.extend((0..64).map(|shift| 1u64 << shift));
    values.extend((1..64).map(|shift| (1u64 << shift) - 1));
    for n in values {
        let mut hex = String::from("x");
        push_hex(&mut hex, n);
        assert_eq!(hex, format!("x{n:x}"));
        ids.next = n;
        let mut id = String::new();
        ids.write_next(&mut id);
        assert_eq!(id, format!("{}-{:x}@huddle.invalid", ids.prefix, n + 1));
    }
}

/// The store keys written by hand are what `format!` wrote.
#[test]
fn store_keys_written_by_hand_are_what_format_wrote() {
    let mut values = vec![0u64, 1, 15, 16, u64::MAX];
    values.extend((0..64).map(|shift| 1u64 << shift));
    values.extend((1..64).map(|shift| (1u64 << shift) - 1));
    for &n in &values {
        assert_eq!(queue_key(n), format!("q/{n:016x}").into_bytes());
        for &m in &values[..8] {
            assert_eq!(
                history_key(n, m),
                format!("h/{n:016x}-{m:016x}").into_bytes()
            );
        }
    }
}
