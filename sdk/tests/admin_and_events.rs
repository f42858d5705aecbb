//! ABI 1.2 through the C ABI: a plugin answers admin requests with JSON and raises webhook
//! events; a plugin without `admin_request` — the default, or one whose descriptor has the
//! 1.1 layout — answers "not supported"; a host without the events capability says so to a
//! plugin that tries; event names are checked at the boundary.

mod common;

use huddle_sdk::abi::HuddlePluginDescriptor;
use huddle_sdk::fake::FakeHost;
use huddle_sdk::hosting::PluginEntry;
use huddle_sdk::{Capabilities, Claim, Claims, Config, Error, Host, Plugin, Request, Result};

/// Answers `{"command":"count"}` with how many it was asked, raising `counter.asked` each time.
struct Counter {
    asked: u64,
}

impl Plugin for Counter {
    fn init(_: &Host, _: &Config, claims: &mut Claims) -> Result<Self> {
        claims.add(Claim::user("counter"));
        Ok(Counter { asked: 0 })
    }

    fn handle_request(&mut self, host: &Host, req: Request) -> Result<()> {
        host.reply(&req, 200, "OK")
    }

    fn admin_request(&mut self, host: &Host, request: &str) -> Result<String> {
        if !request.contains("\"count\"") {
            return Ok(r#"{"error":{"code":"bad_request","message":"unknown command"}}"#.into());
        }
        self.asked += 1;
        let details = format!("{{\"asked\":{}}}", self.asked);
        match host.emit_event("counter.asked", &details) {
            Ok(()) | Err(Error::NotSupported) => {}
            Err(e) => return Err(e),
        }
        if host.capabilities().contains(Capabilities::EVENTS) {
            assert_eq!(
                host.emit_event("Bad Kind", "{}"),
                Err(Error::InvalidArgument),
                "event names are checked at the boundary"
            );
        }
        Ok(format!("{{\"asked\":{}}}", self.asked))
    }
}

/// Takes no admin requests (the trait's default).
struct Silent;

impl Plugin for Silent {
    fn init(_: &Host, _: &Config, claims: &mut Claims) -> Result<Self> {
        claims.add(Claim::user("silent"));
        Ok(Silent)
    }

    fn handle_request(&mut self, host: &Host, req: Request) -> Result<()> {
        host.reply(&req, 200, "OK")
    }
}

fn counter_entry() -> PluginEntry {
    huddle_sdk::plugin_entry!(Counter, "counter", "0.1.0", Capabilities::NONE)
}

#[test]
fn a_plugin_answers_admin_requests_and_raises_events() {
    let host = FakeHost::with_capabilities(Capabilities::ALL.with(Capabilities::EVENTS));
    let mut plugin = host.start(&counter_entry(), "").unwrap();
    assert_eq!(
        plugin.admin_request(r#"{"command":"count"}"#).unwrap(),
        r#"{"asked":1}"#
    );
    assert_eq!(
        plugin.admin_request(r#"{"command":"count"}"#).unwrap(),
        r#"{"asked":2}"#
    );
    assert!(plugin
        .admin_request(r#"{"command":"other"}"#)
        .unwrap()
        .contains("bad_request"));
    assert_eq!(
        host.events(),
        vec![
            ("counter.asked".to_owned(), r#"{"asked":1}"#.to_owned()),
            ("counter.asked".to_owned(), r#"{"asked":2}"#.to_owned()),
        ]
    );
}

#[test]
fn a_host_without_events_says_not_supported() {
    let host = FakeHost::with_capabilities(Capabilities::ALL);
    let mut plugin = host.start(&counter_entry(), "").unwrap();
    // The plugin copes (it treats NotSupported as "no webhooks") and still answers.
    assert_eq!(
        plugin.admin_request(r#"{"command":"count"}"#).unwrap(),
        r#"{"asked":1}"#
    );
    assert!(host.events().is_empty());
}

#[test]
fn a_plugin_without_admin_requests_answers_not_supported() {
    let host = FakeHost::new();
    let entry = huddle_sdk::plugin_entry!(Silent, "silent", "0.1.0", Capabilities::NONE);
    let mut plugin = host.start(&entry, "").unwrap();
    assert_eq!(plugin.admin_request("{}"), Err(Error::NotSupported));
    // "Not supported" is an answer, not a failure: nothing logged at warning level.
    assert!(!host.logged(huddle_sdk::Level::Warn, "admin_request"));
}

#[test]
fn a_plugin_built_for_abi_1_1_loads_and_answers_not_supported() {
    // The same plugin, described with the 1.1 layout: `struct_size` ends before
    // `admin_request`, so the host must not read the callback that follows.
    let mut old: HuddlePluginDescriptor = *counter_entry().raw();
    old.abi_minor = 1;
    old.struct_size = std::mem::offset_of!(HuddlePluginDescriptor, admin_request);
    let old: &'static HuddlePluginDescriptor = Box::leak(Box::new(old));
    // SAFETY: a copy of a valid SDK descriptor with a smaller `struct_size`, leaked: static.
    #[allow(unsafe_code)]
    let entry = unsafe { PluginEntry::from_raw(old) }.expect("a 1.1 descriptor loads");
    assert_eq!(entry.info().abi_minor, 1);
    let host = FakeHost::new();
    let mut plugin = host.start(&entry, "").unwrap();
    assert_eq!(
        plugin.admin_request(r#"{"command":"count"}"#),
        Err(Error::NotSupported)
    );
}

/// Answers an admin request `{"kind":...}` with whether an event of that kind is wanted
/// (ABI 1.8), and raises it when it is.
struct Asker;

impl Plugin for Asker {
    fn init(_: &Host, _: &Config, claims: &mut Claims) -> Result<Self> {
        claims.add(Claim::user("asker"));
        Ok(Asker)
    }

    fn handle_request(&mut self, host: &Host, req: Request) -> Result<()> {
        host.reply(&req, 200, "OK")
    }

    fn admin_request(&mut self, host: &Host, request: &str) -> Result<String> {
        let kind = request
            .strip_prefix(r#"{"kind":""#)
            .and_then(|k| k.strip_suffix(r#""}"#))
            .unwrap_or("");
        let wanted = host.wants_event(kind);
        if wanted {
            let _ = host.emit_event(kind, "{}");
        }
        Ok(format!("{{\"wanted\":{wanted}}}"))
    }
}

fn asker_entry() -> PluginEntry {
    huddle_sdk::plugin_entry!(Asker, "asker", "0.1.0", Capabilities::NONE)
}

fn ask(plugin: &mut huddle_sdk::fake::FakePlugin, kind: &str) -> String {
    plugin
        .admin_request(&format!(r#"{{"kind":"{kind}"}}"#))
        .unwrap()
}

#[test]
fn a_plugin_asks_which_events_are_taken_and_skips_the_others() {
    let host = FakeHost::with_capabilities(Capabilities::ALL.with(Capabilities::EVENTS));
    let mut plugin = host.start(&asker_entry(), "").unwrap();
    // Every kind is taken by default.
    assert_eq!(ask(&mut plugin, "a.b"), r#"{"wanted":true}"#);
    host.set_events_taken(Some(&["a.b"]));
    assert_eq!(ask(&mut plugin, "a.b"), r#"{"wanted":true}"#);
    assert_eq!(ask(&mut plugin, "c.d"), r#"{"wanted":false}"#);
    // A kind the host refuses gets no "nobody takes it", so the SDK says yes (an event too
    // many is harmless) and `emit_event` then refuses the kind.
    assert_eq!(ask(&mut plugin, "Bad Kind"), r#"{"wanted":true}"#);
    host.set_events_taken(Some(&[]));
    assert_eq!(ask(&mut plugin, "a.b"), r#"{"wanted":false}"#);
    assert_eq!(
        host.events(),
        vec![
            ("a.b".to_owned(), "{}".to_owned()),
            ("a.b".to_owned(), "{}".to_owned())
        ],
        "c.d was not raised, the refused kind not taken"
    );
}

#[test]
fn without_the_events_capability_no_event_is_wanted() {
    let host = FakeHost::with_capabilities(Capabilities::ALL);
    let mut plugin = host.start(&asker_entry(), "").unwrap();
    assert_eq!(ask(&mut plugin, "a.b"), r#"{"wanted":false}"#);
}

/// What [`AsksAtInit`] got from `wants_event`.
static WANTED_AT_INIT: std::sync::Mutex<Option<bool>> = std::sync::Mutex::new(None);

struct AsksAtInit;

impl Plugin for AsksAtInit {
    fn init(host: &Host, _: &Config, _: &mut Claims) -> Result<Self> {
        *WANTED_AT_INIT.lock().unwrap() = Some(host.wants_event("a.b"));
        Ok(AsksAtInit)
    }

    fn handle_request(&mut self, host: &Host, req: Request) -> Result<()> {
        host.reply(&req, 200, "OK")
    }
}

#[allow(unsafe_code)]
mod table_1_7 {
    //! What a 1.7 host with events adds to the bare table; `struct_size` ends before
    //! `event_wanted`.
    use std::ffi::c_void;

    use huddle_sdk::abi;

    /// Lies beyond `struct_size`: a plugin that read it would get "nobody takes it".
    pub unsafe extern "C" fn event_wanted(_: *mut c_void, _: *const u8, _: usize) -> i32 {
        abi::HUDDLE_ERR_NOT_FOUND
    }
}

#[test]
fn a_1_7_host_cannot_tell_so_every_event_is_built() {
    use huddle_sdk::abi::HuddleHostApi;
    let mut table = common::bare_table(7, std::mem::offset_of!(HuddleHostApi, event_wanted));
    table.host_capabilities = Capabilities::EVENTS.bits();
    table.emit_event = Some(common::noop::emit_event);
    table.event_wanted = Some(table_1_7::event_wanted);
    let entry = huddle_sdk::plugin_entry!(AsksAtInit, "asks", "1", Capabilities::NONE);
    common::init_and_destroy(&entry, &table);
    assert_eq!(WANTED_AT_INIT.lock().unwrap().take(), Some(true));
}
