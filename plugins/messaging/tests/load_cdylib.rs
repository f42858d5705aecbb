//! The built shared library and the allocator a host lends (ABI 1.11): opened by the server's
//! loader in this program, where nothing of the library was allocated before its first `init`,
//! it takes the host's allocator there (and says so in its log), keeps it for a second instance,
//! and works on it. The choice's rules are `huddle_sdk::allocator`'s unit tests; this is the
//! path the server takes, minus the network.
#![allow(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use huddle_sdk::fake::{built_cdylib, sample_request, FakeHost};
use huddle_sdk::hosting::HostServices;
use huddle_sdk::{Capabilities, Level};

fn cdylib() -> PathBuf {
    built_cdylib(env!("CARGO_PKG_NAME"))
}

#[test]
fn the_library_takes_the_allocator_a_host_lends_at_its_first_init_and_keeps_it() {
    let host = FakeHost::with_capabilities(
        Capabilities::ALL
            .with(Capabilities::EVENTS)
            .with(Capabilities::HOST_ALLOCATOR),
    );
    host.add_user("bob");
    // SAFETY: the library is this crate, just built by cargo.
    let loaded = unsafe { huddle_sdk::loader::load(cdylib(), host.capabilities()) }
        .unwrap_or_else(|e| panic!("{e}"));
    let lent = "allocator: the host's (ABI 1.11)";
    for instance in 0..2 {
        let mut plugin = host
            .start(loaded.entry(), "store_writers = 0")
            .expect("messaging starts");
        assert!(host.logged(Level::Debug, lent), "instance {instance}");
        assert!(!host.logged(Level::Debug, "allocator: the system's"));
        // It works on the lent allocator: a message to bob, who has no device, is stored and
        // answered 202.
        plugin.advance(Duration::ZERO).unwrap();
        let txn = plugin
            .request(sample_request(
                "MESSAGE",
                "sip:bob@example.test",
                "stored on the host's allocator",
            ))
            .unwrap();
        assert_eq!(host.final_response(txn).unwrap().status(), 202);
        drop(plugin);
    }
}
