//! The built shared library itself: the server's loader opens `libhuddle_plugin_echo.so`,
//! finds `huddle_plugin_entry_v1`, validates the descriptor, and the plugin answers through the
//! FakeHost. This is the path the server takes, minus the network.
#![allow(unsafe_code)]

use std::path::PathBuf;

use huddle_sdk::fake::{built_cdylib, sample_request, FakeHost};
use huddle_sdk::hosting::HostServices;
use huddle_sdk::{Capabilities, Method};

fn cdylib() -> PathBuf {
    built_cdylib(env!("CARGO_PKG_NAME"))
}

#[test]
fn the_echo_library_loads_and_answers() {
    let path = cdylib();
    let host = FakeHost::new();
    // SAFETY: the library is this crate, just built by cargo.
    let loaded = unsafe { huddle_sdk::loader::load(&path, host.capabilities()) }
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!loaded.info().name.is_empty());
    assert_eq!(loaded.info().version, env!("CARGO_PKG_VERSION"));
    assert_eq!(loaded.info().capabilities, Capabilities::SEND_REQUEST);

    let mut plugin = host.start(loaded.entry(), "user = \"someone\"").unwrap();
    let txn = plugin
        .request(sample_request(
            "MESSAGE",
            "sip:someone@example.test",
            "over the ABI",
        ))
        .unwrap();
    assert_eq!(host.final_response(txn).unwrap().status(), 200);
    let echo = &host.sent_requests()[0].message;
    assert_eq!(echo.method(), Some(&Method::Message));
    assert_eq!(echo.body(), b"over the ABI");
}

#[test]
fn an_old_host_without_send_request_refuses_it() {
    let host = FakeHost::with_capabilities(Capabilities::STORE);
    // SAFETY: as above.
    let err = unsafe { huddle_sdk::loader::load(cdylib(), host.capabilities()) }.unwrap_err();
    assert!(
        err.to_string()
            .contains("requires capabilities this host does not provide: send_request"),
        "{err}"
    );
}
