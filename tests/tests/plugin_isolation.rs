//! A plugin cannot take the server down with it, and a library that does not fit never runs:
//!
//! * a panic in a callback is answered 500 and the plugin keeps serving (`on_panic = "keep"`)
//!   or is disabled, its requests then answered 503 (`"disable"`), while the server serves
//!   everything else; a callback that fails without answering gets 500, a busy one 503;
//! * a slow plugin with `queue_len = 1` makes the server answer 503 with Retry-After at once,
//!   while the SIP core keeps answering other requests;
//! * the C plugin `sdk/tests/c_plugin/echo.c`, compiled here against the header, loads from
//!   the config and answers a claimed request end to end;
//! * a library built for another ABI, one without the entry symbol and a garbage file stop
//!   `huddle::server::start` with an error naming the file; so do overlapping claims of two
//!   plugins, naming both;
//! * a plugin writes only under `plugin/<name>/`: `../location/x` is a key of its own
//!   namespace, `credentials` is unreadable, `location` is readable;
//! * a response on a transaction the plugin does not have is refused.
//!
//! Test plugins: `plugins/testkit` (test-only; it takes commands in MESSAGE bodies) built by
//! cargo, and C files compiled by the test.

use std::time::{Duration, Instant};

use huddle_e2e::plugin_support::{c_plugin, cargo_cdylib, plugin_entry, PluginServer};
use huddle_e2e::repo_root;
use huddle_e2e::sip_client::{
    new_branch, new_call_id, new_tag, register_ok, text, Conn, Ua, SIPML5_HOST,
};
use huddle_sip::message::HeaderName;
use huddle_sip::Message;

fn testkit() -> std::path::PathBuf {
    tokio::task::block_in_place(|| cargo_cdylib("huddle-plugin-testkit"))
}

/// `[[plugins]]` for a testkit instance named `name` claiming MESSAGE to `sip:<name>@…`.
fn kit(name: &str, extra: &str, config: &str) -> String {
    plugin_entry(
        &testkit(),
        &format!("name = \"{name}\"\n{extra}\n[plugins.config]\nuser = \"{name}\"\n{config}"),
    )
}

/// A MESSAGE to `sip:<user>@example.test` from a foreign (never challenged) sender.
fn message(user: &str, body: &str) -> (String, String) {
    let call_id = new_call_id();
    let req = format!(
        "MESSAGE sip:{user}@example.test SIP/2.0\r\nVia: SIP/2.0/WS {SIPML5_HOST};branch={};rport\r\n\
         From: <sip:tester@tests.invalid>;tag={}\r\nTo: <sip:{user}@example.test>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        new_branch(),
        new_tag(),
        body.len()
    );
    (req, call_id)
}

/// Sends a MESSAGE and returns the final response.
async fn ask(conn: &mut Conn, user: &str, body: &str) -> Message {
    let (req, _) = message(user, body);
    conn.request(&req).await
}

fn body_of(resp: &Message) -> String {
    String::from_utf8_lossy(resp.body()).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_is_answered_500_and_the_server_keeps_serving() {
    let server = PluginServer::start(&format!(
        "{}{}",
        kit("sturdy", "", "panic_on = \"boom\""),
        kit("fragile", "on_panic = \"disable\"", "panic_on = \"boom\""),
    ))
    .await;
    let mut c = Conn::ws(&server.ws_url(), "tester").await;

    // on_panic = "keep": 500, then business as usual.
    let r = ask(&mut c, "sturdy", "boom").await;
    assert_eq!(r.status(), Some(500), "{}", text(&r));
    let r = ask(&mut c, "sturdy", "ping").await;
    assert_eq!((r.status(), body_of(&r).as_str()), (Some(200), "pong"));
    let r = ask(&mut c, "sturdy", "boom").await;
    assert_eq!(
        r.status(),
        Some(500),
        "still keeps serving after a second panic"
    );
    let r = ask(&mut c, "sturdy", "ping").await;
    assert_eq!(r.status(), Some(200));

    // on_panic = "disable": 500, then 503 for everything it claimed.
    let r = ask(&mut c, "fragile", "ping").await;
    assert_eq!(r.status(), Some(200));
    let r = ask(&mut c, "fragile", "boom").await;
    assert_eq!(r.status(), Some(500), "{}", text(&r));
    let r = ask(&mut c, "fragile", "ping").await;
    assert_eq!(r.status(), Some(503), "a disabled plugin: {}", text(&r));

    // The rest of the server is untouched: the other plugin, the registrar.
    let r = ask(&mut c, "sturdy", "ping").await;
    assert_eq!(r.status(), Some(200));
    let alice = Ua::sipml5("alice", "alice-pw");
    let mut a = Conn::ws(&server.ws_url(), "alice").await;
    register_ok(&mut a, &alice, 300).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_and_busy_callbacks_are_answered_for_the_plugin() {
    let server = PluginServer::start(&kit("kit", "", "")).await;
    let mut c = Conn::ws(&server.ws_url(), "tester").await;
    let r = ask(&mut c, "kit", "fail").await;
    assert_eq!(r.status(), Some(500), "{}", text(&r));
    let r = ask(&mut c, "kit", "busy").await;
    assert_eq!(r.status(), Some(503), "{}", text(&r));
    assert!(
        r.header(&HeaderName::RetryAfter).is_some(),
        "503 for a busy plugin carries Retry-After:\n{}",
        text(&r)
    );
    let r = ask(&mut c, "kit", "bogus-respond").await;
    assert_eq!(
        body_of(&r),
        "error: unknown or finished transaction",
        "respond on a transaction the plugin does not have is refused"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_plugin_with_a_full_queue_gets_503_and_the_core_keeps_going() {
    let hold = tempfile::tempdir().expect("temporary folder");
    let release = hold.path().join("release");
    let server = PluginServer::start(&kit(
        "slow",
        "queue_len = 1",
        &format!("hold_file = {:?}", release.display().to_string()),
    ))
    .await;
    let mut c = Conn::ws(&server.ws_url(), "tester").await;

    // Four at once: at most one is being handled (held) and one waits; the others find the
    // queue full (which two depends on when the plugin's thread takes the first). The plugin
    // stays held until the end, so every answer before that came without it.
    let mut calls = Vec::new();
    for i in 0..4 {
        let (req, call_id) = message("slow", &format!("ping {i}"));
        c.send(&req).await;
        calls.push(call_id);
    }
    let mut refused = Vec::new();
    for _ in 0..2 {
        let calls = calls.clone();
        let r = c
            .wait_for("a 503 for the slow plugin, while it is held", move |m| {
                m.status().is_some_and(|s| s >= 200)
                    && calls.iter().any(|id| m.call_id() == Some(id.as_str()))
            })
            .await;
        assert_eq!(r.status(), Some(503), "{}", text(&r));
        let retry = r
            .header(&HeaderName::RetryAfter)
            .unwrap_or_else(|| panic!("503 without Retry-After:\n{}", text(&r)));
        assert!(retry.trim().parse::<u32>().is_ok(), "{retry}");
        refused.push(r.call_id().unwrap_or_default().to_owned());
    }

    // The SIP core is not waiting for the plugin: a registration goes through while it is held.
    let alice = Ua::sipml5("alice", "alice-pw");
    let mut a = Conn::ws(&server.ws_url(), "alice").await;
    register_ok(&mut a, &alice, 300).await;

    // Released, the plugin answers the ones it took, in turn; the rest got their 503.
    std::fs::write(&release, b"").expect("release file");
    let mut answered = 0;
    for call_id in calls.iter().filter(|id| !refused.contains(id)) {
        let r = c.final_response(call_id, 1).await;
        match r.status() {
            Some(200) => answered += 1,
            Some(503) => {}
            _ => panic!("{}", text(&r)),
        }
    }
    assert!(
        (1..=2).contains(&answered),
        "{answered} answered by the plugin"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_c_plugin_answers_a_claimed_request_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let lib = tokio::task::block_in_place(|| {
        c_plugin(
            &repo_root().join("sdk/tests/c_plugin/echo.c"),
            dir.path(),
            "c_echo",
            &[],
        )
    });
    let server = PluginServer::start(&plugin_entry(&lib, "")).await;
    let mut c = Conn::ws(&server.ws_url(), "tester").await;
    for _ in 0..2 {
        let r = ask(&mut c, "c-anything", "hello C").await;
        assert_eq!(r.status(), Some(200), "{}", text(&r));
        assert_eq!(
            r.to_header().ok().and_then(|t| t.tag().map(str::to_owned)),
            Some("c0ffee".to_owned()),
            "the C plugin's own response:\n{}",
            text(&r)
        );
    }
    // It counted in its own namespace, named after the plugin (`c-echo`).
    let store = server.stop().await;
    assert_eq!(
        store.get(b"plugin/c-echo/count").unwrap().as_deref(),
        Some(&b"2"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libraries_that_do_not_fit_stop_start_up_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let variants = repo_root().join("sdk/tests/c_plugin/variants.c");
    let bad_major = tokio::task::block_in_place(|| {
        c_plugin(&variants, dir.path(), "bad_major", &["BAD_MAJOR"])
    });
    let no_symbol = tokio::task::block_in_place(|| {
        c_plugin(&variants, dir.path(), "no_symbol", &["NO_SYMBOL"])
    });
    let garbage = dir.path().join("libgarbage.so");
    std::fs::write(&garbage, b"\x7fELF this is not really a library").unwrap();
    let missing = dir.path().join("libmissing.so");

    for (lib, needle) in [
        (&bad_major, "ABI"),
        (&no_symbol, "huddle_plugin_entry_v1"),
        (&garbage, "not a loadable shared library"),
        (&missing, "cannot read the file"),
    ] {
        let err = PluginServer::try_start(&plugin_entry(lib, ""))
            .await
            .expect_err("start-up must fail")
            .to_string();
        assert!(
            err.contains(&lib.display().to_string()) && err.contains(needle),
            "the error names {} and says {needle:?}: {err}",
            lib.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_claims_stop_start_up_naming_both_plugins() {
    // Both claim MESSAGE to sip:same@…; an unrelated third does not matter.
    let extra = format!(
        "{}{}{}",
        plugin_entry(
            &testkit(),
            "name = \"first\"\n[plugins.config]\nuser = \"same\""
        ),
        kit("other", "", ""),
        plugin_entry(
            &testkit(),
            "name = \"second\"\n[plugins.config]\nuser = \"same\""
        ),
    );
    let err = PluginServer::try_start(&extra)
        .await
        .expect_err("overlapping claims must fail start-up")
        .to_string();
    assert!(
        err.contains("`first` and `second`") && err.contains("user=same"),
        "{err}"
    );

    // A claims override in the config resolves it.
    let fixed = format!(
        "{}{}",
        plugin_entry(
            &testkit(),
            "name = \"first\"\n[plugins.config]\nuser = \"same\""
        ),
        plugin_entry(
            &testkit(),
            "name = \"second\"\nclaims = [{ method = \"MESSAGE\", user = \"second\" }]\n\
             [plugins.config]\nuser = \"same\""
        ),
    );
    let server = PluginServer::start(&fixed).await;
    let mut c = Conn::ws(&server.ws_url(), "tester").await;
    assert_eq!(body_of(&ask(&mut c, "second", "ping").await), "pong");
    assert_eq!(body_of(&ask(&mut c, "same", "ping").await), "pong");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_writes_only_its_own_namespace() {
    let server =
        PluginServer::start(&format!("{}{}", kit("kit", "", ""), kit("peer", "", ""))).await;
    // Every registration is in location/: over UDP, and over WebSocket with its connection.
    let mut b = Conn::udp(server.addr(huddle::transport::Transport::Udp), "bob").await;
    let bob = Ua::udp("bob", "bob-pw", b.local_addr());
    register_ok(&mut b, &bob, 300).await;

    let mut c = Conn::ws(&server.ws_url(), "tester").await;
    register_ok(&mut c, &Ua::sipml5("carol", "carol-pw"), 300).await;
    assert_eq!(body_of(&ask(&mut c, "kit", "put mine 1").await), "ok");
    assert_eq!(
        body_of(&ask(&mut c, "kit", "put ../location/evil 1").await),
        "ok",
        "a key with `..` is just a key in the own namespace"
    );
    assert_eq!(
        body_of(&ask(&mut c, "kit", "get credentials bob").await),
        "error: permission denied"
    );
    assert_eq!(
        body_of(&ask(&mut c, "peer", "get plugin/kit mine").await),
        "value: 1",
        "other plugins' namespaces are readable"
    );
    // The registrar writes location/ behind (every `persist_interval_ms`, 1 s by default); the
    // plugin reads it. Polled: the store has no event to wait for.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listing = body_of(&ask(&mut c, "kit", "scan location bob@").await);
        let browsers = body_of(&ask(&mut c, "kit", "scan location carol@").await);
        // A connection-bound binding's key names its connection.
        if listing.contains("bob@example.test/") && browsers.contains("@flow") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bob's and carol's bindings never showed: {listing:?} {browsers:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let store = server.stop().await;
    assert_eq!(
        store.get(b"plugin/kit/mine").unwrap().as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(
        store
            .get(b"plugin/kit/../location/evil")
            .unwrap()
            .as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(store.get(b"location/evil").unwrap(), None);
    assert_eq!(store.get(b"plugin/peer/mine").unwrap(), None);
}
