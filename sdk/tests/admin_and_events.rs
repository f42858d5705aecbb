//! ABI 1.2 through the C ABI: a plugin answers admin requests with JSON and raises webhook
//! events; a plugin without `admin_request` — the default, or one whose descriptor has the
//! 1.1 layout — answers "not supported"; a host without the events capability says so to a
//! plugin that tries; event names are checked at the boundary.

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
