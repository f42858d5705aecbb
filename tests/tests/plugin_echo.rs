//! The echo plugin end to end: `cargo build -p huddle-plugin-echo` builds the library, the
//! server loads it from `[[plugins]]`, and a SIPml5-shaped page over WebSocket sends MESSAGE
//! to `sip:echo@example.test`: it is challenged (407) like any request from a local user,
//! then answered 200 by the plugin, and the plugin's own MESSAGE with the same text comes
//! back on the page's connection (the host routed it through the location service), with
//! the host's Via on top and the plugin's From. Also: two tabs of one user both get the
//! echo (every binding), and a sender who is not registered makes the echo fail quietly
//! while the sender still gets its 200.

use huddle_e2e::plugin_support::{cargo_cdylib, plugin_entry, PluginServer};
use huddle_e2e::sip_client::{
    accept_message, register_ok, send_through_407, text, uri_of, Conn, Session, Ua,
};
use huddle_sip::message::HeaderName;
use huddle_sip::Message;

async fn echo_server() -> PluginServer {
    let lib = tokio::task::block_in_place(|| cargo_cdylib("huddle-plugin-echo"));
    PluginServer::start(&plugin_entry(&lib, "")).await
}

/// Alice sends `body` to echo and gets the 200; returns nothing (the echo is the caller's).
async fn message_echo(conn: &mut Conn, ua: &Ua, body: &str) {
    let mut s = Session::new();
    send_through_407(
        conn,
        ua,
        &mut s,
        "MESSAGE",
        "sip:echo@example.test",
        |s, auth| ua.message_request("echo", s, body, auth),
    )
    .await;
    let ok = conn.final_response(&s.call_id, s.cseq).await;
    assert_eq!(ok.status(), Some(200), "the plugin answers:\n{}", text(&ok));
    assert!(
        ok.to_header().ok().and_then(|t| t.tag()).is_some(),
        "the plugin's 200 has a To tag:\n{}",
        text(&ok)
    );
}

fn is_echo(body: &'static str) -> impl Fn(&Message) -> bool {
    move |m: &Message| {
        m.method().is_some_and(|x| x.as_str() == "MESSAGE") && m.body() == body.as_bytes()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipml5_message_to_echo_gets_200_and_the_text_back() {
    let server = echo_server().await;
    let alice = Ua::sipml5("alice", "alice-pw");
    let mut a = Conn::ws(&server.ws_url(), "alice").await;
    register_ok(&mut a, &alice, 300).await;

    let body = "hello, echo ☺";
    message_echo(&mut a, &alice, body).await;

    let echo = a.wait_for("the echoed MESSAGE", is_echo(body)).await;
    assert_eq!(
        echo.request_uri(),
        Some(alice.contact_uri.as_str()),
        "the echo targets alice's registered Contact:\n{}",
        text(&echo)
    );
    assert_eq!(
        uri_of(echo.header(&HeaderName::From).unwrap()),
        "sip:echo@example.test",
        "{}",
        text(&echo)
    );
    assert_eq!(
        uri_of(echo.header(&HeaderName::To).unwrap()),
        "sip:alice@example.test"
    );
    assert_eq!(
        echo.header(&HeaderName::ContentType),
        Some("text/plain;charset=utf-8"),
        "the Content-Type is echoed with its parameters"
    );
    let via = echo.top_via().expect("a Via");
    assert_eq!(via.transport, "WS", "the host's Via:\n{}", text(&echo));
    assert_eq!(
        echo.header_count(&HeaderName::Via),
        1,
        "one Via: the host's (the plugin's request had none)"
    );
    assert!(echo.max_forwards().is_some(), "Max-Forwards is present");
    accept_message(&mut a, &echo).await;

    // The plugin keeps serving.
    message_echo(&mut a, &alice, "again").await;
    let again = a.wait_for("the second echo", is_echo("again")).await;
    accept_message(&mut a, &again).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_reaches_every_tab_of_the_sender() {
    let server = echo_server().await;
    let alice = Ua::sipml5("alice", "alice-pw");
    let mut tab1 = Conn::ws(&server.ws_url(), "alice tab 1").await;
    let mut tab2 = Conn::ws(&server.ws_url(), "alice tab 2").await;
    register_ok(&mut tab1, &alice, 300).await;
    register_ok(&mut tab2, &alice, 300).await;

    message_echo(&mut tab1, &alice, "to both tabs").await;
    let e1 = tab1
        .wait_for("the echo on tab 1", is_echo("to both tabs"))
        .await;
    let e2 = tab2
        .wait_for("the echo on tab 2", is_echo("to both tabs"))
        .await;
    accept_message(&mut tab1, &e1).await;
    accept_message(&mut tab2, &e2).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregistered_sender_still_gets_200() {
    let server = echo_server().await;
    let alice = Ua::sipml5("alice", "alice-pw");
    let mut a = Conn::ws(&server.ws_url(), "alice").await;
    // Not registered: the echo has nowhere to go (the plugin gets a host-made 480).
    message_echo(&mut a, &alice, "anyone there?").await;
    a.barrier().await;
    assert!(
        a.take_queued(is_echo("anyone there?")).is_empty(),
        "no echo without a registration"
    );
    server.stop().await;
}
