//! The contract as a Rust plugin sees it, exercised through the C ABI (the FakeHost starts
//! each plugin through its descriptor and trampolines, exactly as the server will): the store
//! and its namespaces, watches, timers, sent requests and their responses, panics and errors at
//! the boundary, capabilities, init failures, and the lifetime of the `Host` handle.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use huddle_sdk::abi::HuddlePluginDescriptor;
use huddle_sdk::fake::{sample_request, FakeHost};
use huddle_sdk::hosting::{DescriptorError, PluginEntry, PluginInstance, StartError};
use huddle_sdk::{
    Capabilities, Claim, Claims, Config, Error, HangupReason, Host, Level, MediaSessionId, Method,
    NewRequest, Plugin, RegistrationEvent, RegistrationKind, Request, RequestId, Response, Result,
    StoreChange, TimerId, TransactionId,
};

fn logs(host: &FakeHost) -> String {
    host.logs()
        .iter()
        .map(|l| format!("{:?} {}\n", l.level, l.message))
        .collect()
}

// --- the store and its namespaces -------------------------------------------------------------

struct Storer;

impl Plugin for Storer {
    fn init(_: &Host, _: &Config, claims: &mut Claims) -> Result<Self> {
        claims.add(Claim::user("store"));
        Ok(Storer)
    }

    fn handle_request(&mut self, host: &Host, req: Request) -> Result<()> {
        let store = host.store();
        assert_eq!(store.get(b"a")?, None);
        store.put(b"a", b"1")?;
        assert_eq!(store.get(b"a")?.as_deref(), Some(&b"1"[..]));
        store.put(b"empty", b"")?;
        assert_eq!(
            store.get(b"empty")?.as_deref(),
            Some(&b""[..]),
            "empty is not absent"
        );
        // Compare-and-swap: a mismatch reports the current value (or its absence).
        assert_eq!(
            store.compare_and_swap(b"a", Some(b"2"), Some(b"3"))?,
            Err(Some(b"1".to_vec()))
        );
        assert_eq!(
            store.compare_and_swap(b"a", Some(b"1"), Some(b"3"))?,
            Ok(())
        );
        assert_eq!(store.compare_and_swap(b"new", None, Some(b"x"))?, Ok(()));
        assert_eq!(
            store.compare_and_swap(b"gone", Some(b"x"), None)?,
            Err(None)
        );
        assert_eq!(store.compare_and_swap(b"new", Some(b"x"), None)?, Ok(()));
        assert_eq!(store.get(b"new")?, None);
        assert!(store.delete(b"a")?);
        assert!(!store.delete(b"a")?);
        // Scans page at the host's limit and resume after the last key.
        for i in 0..1500u32 {
            store.put(format!("k/{i:05}").as_bytes(), &i.to_be_bytes())?;
        }
        let page = store.scan(b"k/", None, 0)?;
        assert_eq!(page.entries.len(), 1024);
        assert!(page.more);
        let next = store.scan(b"k/", page.resume_after(), 10)?;
        assert_eq!(next.entries[0].0, b"k/01024");
        assert_eq!(store.scan_all(b"k/")?.len(), 1500);
        // Shared namespaces: location is readable, another plugin's is not, unless allowed.
        assert_eq!(
            host.namespace("location")
                .get(b"sip:alice@example.test")?
                .as_deref(),
            Some(&b"binding"[..])
        );
        assert_eq!(
            host.namespace("plugin/secret").get(b"k"),
            Err(Error::PermissionDenied)
        );
        assert_eq!(
            host.namespace("plugin/presence").get(b"alice")?.as_deref(),
            Some(&b"open"[..])
        );
        assert_eq!(host.namespace("location").scan_all(b"sip:")?.len(), 1);
        host.reply(&req, 200, "OK")
    }
}

#[test]
fn store_operations_and_namespace_isolation() {
    let host = FakeHost::new();
    host.put("location", b"sip:alice@example.test", b"binding");
    host.put("plugin/secret", b"k", b"hidden");
    host.put("plugin/presence", b"alice", b"open");
    host.allow_namespace("plugin/presence");
    let entry = huddle_sdk::plugin_entry!(Storer, "storer", "1", Capabilities::STORE);
    let mut plugin = host.start(&entry, "").unwrap();
    let txn = plugin
        .request(sample_request("OPTIONS", "sip:store@example.test", ""))
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&host)));
    assert_eq!(host.final_response(txn).unwrap().status(), 200);
    // The plugin's writes landed in its own namespace only.
    assert_eq!(
        host.get("plugin/secret", b"k").as_deref(),
        Some(&b"hidden"[..])
    );
    assert_eq!(
        host.get("", b"k/00000").as_deref(),
        Some(&0u32.to_be_bytes()[..])
    );
}

#[test]
fn location_needs_the_location_capability() {
    let host = FakeHost::with_capabilities(Capabilities::STORE);
    host.put("location", b"sip:alice@example.test", b"binding");
    struct Reader;
    impl Plugin for Reader {
        fn init(host: &Host, _: &Config, claims: &mut Claims) -> Result<Self> {
            claims.add(Claim::method("OPTIONS"));
            assert_eq!(
                host.namespace("location").get(b"sip:alice@example.test"),
                Err(Error::PermissionDenied)
            );
            // Watches are a capability of their own: absent here.
            assert_eq!(host.store().watch(b""), Err(Error::NotSupported));
            assert_eq!(
                host.set_timer(Duration::from_secs(1), 0),
                Err(Error::NotSupported)
            );
            Ok(Reader)
        }
        fn handle_request(&mut self, _: &Host, _: Request) -> Result<()> {
            Ok(())
        }
    }
    let entry = huddle_sdk::plugin_entry!(Reader, "reader", "1", Capabilities::NONE);
    host.start(&entry, "")
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&host)));
}

// --- watches ----------------------------------------------------------------------------------

struct Watcher;

impl Plugin for Watcher {
    fn init(host: &Host, _: &Config, claims: &mut Claims) -> Result<Self> {
        claims.add(Claim::user("watch"));
        host.store().watch(b"w/")?;
        host.namespace("location").watch(b"sip:")?;
        Ok(Watcher)
    }

    fn handle_request(&mut self, host: &Host, req: Request) -> Result<()> {
        host.store().put(b"w/from-plugin", req.body())?;
        host.store().put(b"unwatched", b"x")?;
        host.reply(&req, 200, "OK")
    }

    fn on_store_change(&mut self, host: &Host, change: StoreChange) -> Result<()> {
        let line = match &change {
            StoreChange::Put { key, value, .. } => format!(
                "put {} {}",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(value)
            ),
            StoreChange::Delete { key, .. } => format!("delete {}", String::from_utf8_lossy(key)),
            StoreChange::Lagged { .. } => "lagged".to_owned(),
        };
        let store = host.store();
        let mut log = store.get(b"seen")?.unwrap_or_default();
        log.extend_from_slice(line.as_bytes());
        log.push(b'\n');
        store.put(b"seen", &log)
    }
}

#[test]
fn watches_fire_for_own_and_shared_namespaces() {
    let host = FakeHost::new();
    let entry = huddle_sdk::plugin_entry!(
        Watcher,
        "watcher",
        "1",
        Capabilities::STORE
            .with(Capabilities::STORE_WATCH)
            .with(Capabilities::LOCATION)
    );
    let mut plugin = host.start(&entry, "").unwrap();
    host.put("location", b"sip:bob@example.test", b"ws-flow-7");
    host.put("location", b"other", b"not watched");
    plugin
        .request(sample_request("MESSAGE", "sip:watch@example.test", "hi"))
        .unwrap();
    host.delete("location", b"sip:bob@example.test");
    let watch = host.watches()[0].0;
    host.lag_watch(watch);
    plugin.deliver_changes().unwrap();
    let seen = String::from_utf8(host.get("", b"seen").unwrap()).unwrap();
    assert_eq!(
        seen,
        "put sip:bob@example.test ws-flow-7\nput w/from-plugin hi\ndelete sip:bob@example.test\nlagged\n",
        "{}",
        logs(&host)
    );
}

// --- timers -----------------------------------------------------------------------------------

struct Ticker {
    cancel: Option<TimerId>,
}

impl Plugin for Ticker {
    fn init(host: &Host, _: &Config, claims: &mut Claims) -> Result<Self> {
        claims.add(Claim::user("tick"));
        host.set_timer(Duration::from_millis(30), 3)?;
        host.set_timer(Duration::from_millis(10), 1)?;
        let two = host.set_timer(Duration::from_millis(20), 2)?;
        Ok(Ticker { cancel: Some(two) })
    }

    fn handle_request(&mut self, host: &Host, req: Request) -> Result<()> {
        if let Some(t) = self.cancel.take() {
            host.cancel_timer(t)?;
            assert_eq!(host.cancel_timer(t), Err(Error::NotFound));
        }
        host.reply(&req, 200, "OK")
    }

    fn on_timer(&mut self, host: &Host, _: TimerId, token: u64) -> Result<()> {
        let mut fired = host.store().get(b"fired")?.unwrap_or_default();
        fired.push(b'0' + token as u8);
        host.store().put(b"fired", &fired)?;
        if token == 1 {
            // A timer armed from a timer callback fires in the same advance if it falls due.
            host.set_timer(Duration::from_millis(5), 4)?;
        }
        Ok(())
    }
}

#[test]
fn timers_fire_in_due_order_and_can_be_cancelled() {
    let host = FakeHost::new();
    let entry = huddle_sdk::plugin_entry!(
        Ticker,
        "ticker",
        "1",
        Capabilities::TIMERS.with(Capabilities::STORE)
    );
    let mut plugin = host.start(&entry, "").unwrap();
    plugin
        .request(sample_request("OPTIONS", "sip:tick@example.test", ""))
        .unwrap();
    assert_eq!(plugin.advance(Duration::from_millis(25)).unwrap(), 2);
    assert_eq!(host.get("", b"fired").as_deref(), Some(&b"14"[..]));
    assert_eq!(plugin.advance(Duration::from_millis(10)).unwrap(), 1);
    assert_eq!(host.get("", b"fired").as_deref(), Some(&b"143"[..]));
    assert!(host.timers().is_empty());
}

// --- requests the plugin sends ----------------------------------------------------------------

#[derive(Default)]
struct Relay {
    waiting: Vec<(RequestId, TransactionId, Request)>,
}

impl Plugin for Relay {
    fn init(_: &Host, _: &Config, claims: &mut Claims) -> Result<Self> {
        claims.add(Claim::method("MESSAGE").with_user("relay"));
        Ok(Relay::default())
    }

    fn handle_request(&mut self, host: &Host, req: Request) -> Result<()> {
        let txn = req.transaction().ok_or(Error::UnknownTransaction)?;
        let out = NewRequest::new(Method::Message, "sip:carol@example.test")
            .from("<sip:relay@example.test>")
            .body("text/plain", req.body())
            .build();
        let id = host.send_request(&out)?;
        // Answer later, when the far end has answered.
        self.waiting.push((id, txn, req));
        Ok(())
    }

    fn handle_response(&mut self, host: &Host, response: Response) -> Result<()> {
        if !response.is_final() {
            return Ok(());
        }
        let Some(i) = self
            .waiting
            .iter()
            .position(|w| w.0 == response.request_id())
        else {
            return Err(Error::NotFound);
        };
        let (_, txn, req) = self.waiting.remove(i);
        host.respond(txn, &req.reply(response.status(), "Relayed"))
    }
}

#[test]
fn sent_requests_get_their_responses_and_the_plugin_answers_later() {
    let host = FakeHost::new();
    let entry = huddle_sdk::plugin_entry!(Relay, "relay", "1", Capabilities::SEND_REQUEST);
    let mut plugin = host.start(&entry, "").unwrap();
    let txn = plugin
        .request(sample_request(
            "MESSAGE",
            "sip:relay@example.test",
            "pass it on",
        ))
        .unwrap();
    assert!(
        host.final_response(txn).is_none(),
        "answered asynchronously"
    );
    let sent = host.take_sent_requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].message.request_uri(),
        Some("sip:carol@example.test")
    );
    assert_eq!(sent[0].message.body(), b"pass it on");
    plugin.answer(&sent[0], 180, "Ringing").unwrap();
    assert!(host.final_response(txn).is_none());
    plugin.answer(&sent[0], 486, "Busy Here").unwrap();
    let resp = host.final_response(txn).unwrap();
    assert_eq!((resp.status(), resp.synthetic), (486, false));
}

// --- panics and errors at the boundary --------------------------------------------------------

struct Faulty;

impl Plugin for Faulty {
    fn init(_: &Host, _: &Config, claims: &mut Claims) -> Result<Self> {
        claims.add(Claim::user("faulty"));
        Ok(Faulty)
    }

    fn handle_request(&mut self, host: &Host, req: Request) -> Result<()> {
        match req.body() {
            b"panic" => panic!("boom"),
            b"busy" => Err(Error::Busy),
            b"late" => {
                host.reply(&req, 202, "Accepted")?;
                assert_eq!(host.reply(&req, 200, "OK"), Err(Error::UnknownTransaction));
                Err(Error::Plugin)
            }
            _ => host.reply(&req, 200, "OK"),
        }
    }
}

#[test]
fn panics_and_errors_are_answered_and_the_plugin_keeps_serving() {
    let host = FakeHost::new();
    let entry = huddle_sdk::plugin_entry!(Faulty, "faulty", "1", Capabilities::NONE);
    let mut plugin = host.start(&entry, "").unwrap();
    let uri = "sip:faulty@example.test";

    assert_eq!(
        plugin.request(sample_request("MESSAGE", uri, "panic")),
        Err(Error::Panic)
    );
    let r = host.responses().pop().unwrap();
    assert_eq!((r.status(), r.synthetic), (500, true));
    assert!(
        host.logged(Level::Error, "panic in handle_request: boom"),
        "{}",
        logs(&host)
    );

    let txn = plugin
        .request(sample_request("MESSAGE", uri, "ok"))
        .unwrap();
    assert_eq!(
        host.final_response(txn).unwrap().status(),
        200,
        "still serving"
    );

    assert_eq!(
        plugin.request(sample_request("MESSAGE", uri, "busy")),
        Err(Error::Busy)
    );
    let r = host.responses().pop().unwrap();
    assert_eq!(r.status(), 503);
    assert!(r
        .message
        .header(&huddle_sdk::HeaderName::RetryAfter)
        .is_some());

    // An error after the final response: nothing more is sent.
    assert_eq!(
        plugin.request(sample_request("MESSAGE", uri, "late")),
        Err(Error::Plugin)
    );
    let last = host.responses().pop().unwrap();
    assert_eq!((last.status(), last.synthetic), (202, false));
    assert_eq!(
        host.logs()
            .iter()
            .filter(|l| l.level == Level::Error)
            .count(),
        1
    );
}

#[test]
fn a_panic_in_any_callback_is_caught() {
    let host = FakeHost::new();
    struct TimerPanics;
    impl Plugin for TimerPanics {
        fn init(host: &Host, _: &Config, claims: &mut Claims) -> Result<Self> {
            claims.add(Claim::user("x"));
            host.set_timer(Duration::from_millis(1), 0)?;
            Ok(TimerPanics)
        }
        fn handle_request(&mut self, _: &Host, _: Request) -> Result<()> {
            Ok(())
        }
        fn on_timer(&mut self, _: &Host, _: TimerId, _: u64) -> Result<()> {
            panic!("timer boom")
        }
        fn shutdown(&mut self, _: &Host) {
            panic!("shutdown boom")
        }
    }
    let entry = huddle_sdk::plugin_entry!(TimerPanics, "timer-panics", "1", Capabilities::TIMERS);
    let mut plugin = host.start(&entry, "").unwrap();
    assert_eq!(plugin.advance(Duration::from_millis(5)), Err(Error::Panic));
    assert!(host.logged(Level::Error, "panic in on_timer: timer boom"));
    drop(plugin); // destroy: the panic in shutdown is caught too
    assert!(
        host.logged(Level::Error, "panic in destroy: shutdown boom"),
        "{}",
        logs(&host)
    );
}

// --- capabilities, registration events, media -------------------------------------------------

#[derive(Default)]
struct Media {
    events: Vec<String>,
}

impl Plugin for Media {
    fn init(_: &Host, _: &Config, claims: &mut Claims) -> Result<Self> {
        claims.add(Claim::method("INVITE").with_user("room-*"));
        Ok(Media::default())
    }

    fn handle_request(&mut self, host: &Host, req: Request) -> Result<()> {
        let (session, answer) = host.media_answer(None, req.body())?;
        self.events.push(format!("answered {session}"));
        let resp = req
            .response(200, "OK")
            .body("application/sdp", &answer)
            .build();
        host.respond(req.transaction().ok_or(Error::UnknownTransaction)?, &resp)
    }

    fn on_registration(&mut self, _: &Host, event: RegistrationEvent) -> Result<()> {
        self.events.push(format!(
            "{:?} {} {:?}",
            event.kind, event.aor, event.binding_keys
        ));
        Ok(())
    }

    fn media_ready(&mut self, host: &Host, session: MediaSessionId) -> Result<()> {
        host.request_keyframe(session, "1")
    }

    fn incoming_rtp(
        &mut self,
        host: &Host,
        session: MediaSessionId,
        mid: &str,
        packet: &[u8],
    ) -> Result<()> {
        host.send_rtp(session, mid, packet)
    }

    fn media_hangup(&mut self, host: &Host, _: MediaSessionId, reason: HangupReason) -> Result<()> {
        huddle_sdk::info!(host, "hangup {reason:?}; events {:?}", self.events);
        Ok(())
    }
}

const MEDIA_CAPS: Capabilities = Capabilities::MEDIA.with(Capabilities::REGISTRATION_EVENTS);

#[test]
fn a_host_without_a_required_capability_refuses_the_plugin() {
    let host = FakeHost::new(); // no media, like the server today
    let entry = huddle_sdk::plugin_entry!(Media, "media", "1", MEDIA_CAPS);
    let err = host.start(&entry, "").unwrap_err();
    assert!(
        matches!(
            &err,
            StartError::Incompatible(DescriptorError::MissingCapabilities { missing, .. })
                if *missing == Capabilities::MEDIA
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "plugin `media` requires capabilities this host does not provide: media (host provides: store|store_watch|location|registration_events|send_request|timers)"
    );
}

#[test]
fn media_and_registration_events_reach_a_plugin_that_requires_them() {
    let host = FakeHost::with_capabilities(Capabilities::ALL);
    let entry = huddle_sdk::plugin_entry!(Media, "media", "1", MEDIA_CAPS);
    let mut plugin = host.start(&entry, "").unwrap();
    plugin
        .registration(&RegistrationEvent {
            kind: RegistrationKind::Online,
            aor: "sip:alice@example.test".into(),
            bindings: 1,
            binding_keys: vec!["alice@example.test/tab#1".into()],
        })
        .unwrap();
    let txn = plugin
        .request(sample_request(
            "INVITE",
            "sip:room-1@example.test",
            "v=0 offer",
        ))
        .unwrap();
    let resp = host.final_response(txn).unwrap();
    assert_eq!(resp.message.body(), huddle_sdk::fake::FAKE_SDP_ANSWER);
    let session = MediaSessionId(match &host.media_calls()[0] {
        huddle_sdk::fake::MediaCall::Answer { session, .. } => session.0,
        other => panic!("{other:?}"),
    });
    plugin.media_ready(session).unwrap();
    plugin.incoming_rtp(session, "0", b"\x80rtp").unwrap();
    plugin
        .media_hangup(session, HangupReason::Transport)
        .unwrap();
    let calls = host.media_calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(host.logged(
        Level::Info,
        &format!(
            "hangup Transport; events [\"Online sip:alice@example.test [\\\"alice@example.test/tab#1\\\"]\", \"answered {session}\"]"
        )
    ));
}

#[test]
fn registration_events_go_only_to_plugins_that_require_them() {
    let host = FakeHost::new();
    let entry = huddle_sdk::plugin_entry!(Faulty, "faulty", "1", Capabilities::NONE);
    let mut instance =
        PluginInstance::start(&entry, std::sync::Arc::new(host.clone()), "").unwrap();
    let event = RegistrationEvent {
        kind: RegistrationKind::Offline,
        aor: "sip:a@b".into(),
        bindings: 0,
        binding_keys: Vec::new(),
    };
    assert_eq!(instance.on_registration(&event), Err(Error::NotSupported));
}

// --- init failures ----------------------------------------------------------------------------

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StrictConfig {
    #[allow(dead_code)]
    greeting: String,
}

struct Strict;

impl Plugin for Strict {
    fn init(_: &Host, config: &Config, claims: &mut Claims) -> Result<Self> {
        let _: StrictConfig = config.parse()?;
        claims.add(Claim::method("OPTIONS").with_user("strict"));
        Ok(Strict)
    }

    fn handle_request(&mut self, _: &Host, _: Request) -> Result<()> {
        Ok(())
    }
}

#[test]
fn init_failures_are_reported_with_the_reason_logged() {
    let entry = huddle_sdk::plugin_entry!(Strict, "strict", "1", Capabilities::NONE);

    let host = FakeHost::new();
    let err = host.start(&entry, "greting = \"typo\"").unwrap_err();
    assert!(
        matches!(&err, StartError::Init { plugin, error: Error::InvalidConfig(_) } if plugin == "strict"),
        "{err}"
    );
    assert!(host.logged(Level::Warn, "greting"), "{}", logs(&host));

    let host = FakeHost::new();
    host.refuse_claim(Claim::method("OPTIONS").with_user("strict"));
    let err = host.start(&entry, "greeting = \"hi\"").unwrap_err();
    assert!(
        matches!(
            &err,
            StartError::Init {
                error: Error::PermissionDenied,
                ..
            }
        ),
        "{err}"
    );
    assert!(host.logged(
        Level::Error,
        "the host refused claim method=OPTIONS user=strict"
    ));

    let host = FakeHost::new();
    let plugin = host.start(&entry, "greeting = \"hi\"").unwrap();
    assert_eq!(
        plugin.claims(),
        &[Claim::method("OPTIONS").with_user("strict")]
    );
}

#[test]
fn reserved_methods_cannot_be_claimed() {
    struct Greedy;
    impl Plugin for Greedy {
        fn init(_: &Host, _: &Config, claims: &mut Claims) -> Result<Self> {
            claims.add(Claim::method("REGISTER"));
            Ok(Greedy)
        }
        fn handle_request(&mut self, _: &Host, _: Request) -> Result<()> {
            Ok(())
        }
    }
    let host = FakeHost::new();
    let entry = huddle_sdk::plugin_entry!(Greedy, "greedy", "1", Capabilities::NONE);
    let err = host.start(&entry, "").unwrap_err();
    assert!(
        matches!(
            &err,
            StartError::Init {
                error: Error::PermissionDenied,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        host.logged(Level::Error, "REGISTER cannot be claimed"),
        "{}",
        logs(&host)
    );
}

#[test]
fn a_claim_open_to_guests_keeps_its_flag_across_the_abi() {
    struct Lobby;
    impl Plugin for Lobby {
        fn init(_: &Host, _: &Config, claims: &mut Claims) -> Result<Self> {
            claims.add(Claim::method("INVITE").with_user("lobby").open_to_guests());
            claims.add(Claim::method("INVITE").with_user("board"));
            Ok(Lobby)
        }
        fn handle_request(&mut self, _: &Host, _: Request) -> Result<()> {
            Ok(())
        }
    }
    let host = FakeHost::new();
    let entry = huddle_sdk::plugin_entry!(Lobby, "lobby", "1", Capabilities::NONE);
    let plugin = host.start(&entry, "").expect("starts");
    let open: Vec<bool> = plugin.claims().iter().map(Claim::admits_guests).collect();
    assert_eq!(open, [true, false]);
    assert_eq!(
        plugin.claims()[0].to_string(),
        "method=INVITE user=lobby guests"
    );
}

// --- the Host handle's lifetime and threads ---------------------------------------------------

static KEPT: Mutex<Option<Host>> = Mutex::new(None);

struct Threaded {
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Plugin for Threaded {
    fn init(host: &Host, _: &Config, claims: &mut Claims) -> Result<Self> {
        claims.add(Claim::user("threaded"));
        *KEPT.lock().unwrap() = Some(host.clone());
        Ok(Threaded { workers: vec![] })
    }

    fn handle_request(&mut self, host: &Host, req: Request) -> Result<()> {
        // Answer from a thread of the plugin's own, with a clone of the handle.
        let host = host.clone();
        self.workers.push(std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            host.reply(&req, 200, "From A Thread").unwrap();
        }));
        Ok(())
    }

    fn shutdown(&mut self, _: &Host) {
        for w in self.workers.drain(..) {
            w.join().unwrap();
        }
    }
}

#[test]
fn host_handles_work_from_plugin_threads_and_die_with_the_instance() {
    let host = FakeHost::new();
    let entry = huddle_sdk::plugin_entry!(Threaded, "threaded", "1", Capabilities::STORE);
    let mut plugin = host.start(&entry, "").unwrap();
    let txn = plugin
        .request(sample_request("MESSAGE", "sip:threaded@example.test", "x"))
        .unwrap();
    let host_for_wait = host.clone();
    let answered = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        host_for_wait.final_response(txn).is_some()
    });
    assert!(answered, "the plugin's thread answered");
    drop(plugin);
    let kept = KEPT.lock().unwrap().take().unwrap();
    assert_eq!(kept.store().get(b"k"), Err(Error::BadState));
    kept.log(Level::Info, "dropped silently");
    assert!(!host.logged(Level::Info, "dropped silently"));
}

// --- users (ABI 1.5) ----------------------------------------------------------------------------

/// Answers a MESSAGE with whether the host has an account named by its Request-URI user:
/// 200 yes, 404 no, 501 when the host cannot tell.
struct Directory;

impl Plugin for Directory {
    fn init(_: &Host, _: &Config, claims: &mut Claims) -> Result<Self> {
        claims.add(Claim::method("MESSAGE"));
        Ok(Directory)
    }

    fn handle_request(&mut self, host: &Host, req: Request) -> Result<()> {
        match host.user_exists(req.uri_user().unwrap_or("")) {
            Ok(true) => host.reply(&req, 200, "OK"),
            Ok(false) => host.reply(&req, 404, "Not Found"),
            Err(Error::NotSupported) => host.reply(&req, 501, "Not Implemented"),
            Err(e) => Err(e),
        }
    }
}

fn directory_entry() -> huddle_sdk::hosting::PluginEntry {
    huddle_sdk::plugin_entry!(Directory, "directory", "1", Capabilities::NONE)
}

/// The status `plugin` answers a MESSAGE to `user@example.test` with.
fn ask(host: &FakeHost, plugin: &mut huddle_sdk::fake::FakePlugin, user: &str) -> u16 {
    let uri = format!("sip:{user}@example.test");
    let txn = plugin.request(sample_request("MESSAGE", &uri, "")).unwrap();
    host.final_response(txn).unwrap().status()
}

#[test]
fn user_exists_answers_from_the_hosts_accounts_as_they_are_at_the_call() {
    let host = FakeHost::new();
    host.add_user("bob");
    let mut plugin = host.start(&directory_entry(), "").unwrap();
    assert_eq!(ask(&host, &mut plugin, "bob"), 200);
    assert_eq!(ask(&host, &mut plugin, "carol"), 404);
    host.add_user("carol");
    assert_eq!(ask(&host, &mut plugin, "carol"), 200);
    host.remove_user("bob");
    assert_eq!(ask(&host, &mut plugin, "bob"), 404);
}

#[test]
fn user_exists_needs_the_location_capability_and_a_host_that_keeps_accounts() {
    let host = FakeHost::with_capabilities(Capabilities::STORE);
    host.add_user("bob");
    let mut plugin = host.start(&directory_entry(), "").unwrap();
    assert_eq!(
        ask(&host, &mut plugin, "bob"),
        501,
        "no location capability"
    );

    let host = FakeHost::new();
    host.add_user("bob");
    host.set_user_lookup(false);
    let mut plugin = host.start(&directory_entry(), "").unwrap();
    assert_eq!(ask(&host, &mut plugin, "bob"), 501, "a host before 1.5");
}

#[test]
fn a_plugin_built_for_abi_1_4_loads_on_a_1_5_host() {
    // 1.5 added only a host-table entry: a 1.4 plugin's descriptor is the same layout with
    // minor 4, and must load and serve as before.
    let mut old: HuddlePluginDescriptor = *directory_entry().raw();
    old.abi_minor = 4;
    let old: &'static HuddlePluginDescriptor = Box::leak(Box::new(old));
    // SAFETY: a copy of a valid SDK descriptor, leaked: static.
    #[allow(unsafe_code)]
    let entry = unsafe { PluginEntry::from_raw(old) }.expect("a 1.4 descriptor loads");
    assert_eq!(entry.info().abi_minor, 4);
    let host = FakeHost::new();
    host.add_user("bob");
    let mut plugin = host.start(&entry, "").unwrap();
    assert_eq!(ask(&host, &mut plugin, "bob"), 200);
}

/// What [`AsksAtInit`] got from `user_exists`.
static ASKED_AT_INIT: Mutex<Option<Result<bool>>> = Mutex::new(None);

/// Asks for `bob` during `init` (host functions work from the start of `init`).
struct AsksAtInit;

impl Plugin for AsksAtInit {
    fn init(host: &Host, _: &Config, claims: &mut Claims) -> Result<Self> {
        claims.add(Claim::method("MESSAGE"));
        *ASKED_AT_INIT.lock().unwrap() = Some(host.user_exists("bob"));
        Ok(AsksAtInit)
    }

    fn handle_request(&mut self, _: &Host, _: Request) -> Result<()> {
        Ok(())
    }
}

#[allow(unsafe_code)]
mod table_1_4 {
    //! What a 1.4 host adds to the bare table: nothing; `struct_size` ends before `user_exists`.
    use std::ffi::c_void;

    use huddle_sdk::abi;

    /// Lies beyond `struct_size`: a plugin that read it would get "yes".
    pub unsafe extern "C" fn user_exists(_: *mut c_void, _: *const u8, _: usize) -> i32 {
        abi::HUDDLE_OK
    }
}

#[test]
fn a_1_4_host_table_has_no_user_exists_even_with_bytes_beyond_its_size() {
    use huddle_sdk::abi::HuddleHostApi;
    let mut table = common::bare_table(4, std::mem::offset_of!(HuddleHostApi, user_exists));
    table.host_capabilities = Capabilities::ALL.without(Capabilities::MEDIA).bits();
    table.user_exists = Some(table_1_4::user_exists);
    let entry = huddle_sdk::plugin_entry!(AsksAtInit, "asks", "1", Capabilities::NONE);
    common::init_and_destroy(&entry, &table);
    assert_eq!(
        ASKED_AT_INIT.lock().unwrap().take(),
        Some(Err(Error::NotSupported))
    );
}
