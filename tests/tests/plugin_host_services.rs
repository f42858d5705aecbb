//! The host services a plugin gets from a running server, seen through the test-only
//! `plugins/testkit` plugin (commands in MESSAGE bodies, events read back with `events`):
//! prefix watches fire, timers fire, registration events arrive (online when a user
//! registers, offline when the connection closes, the user unregisters or the binding
//! expires), requests the
//! plugin sends get their final response (the callee's 200, or a host-made 480 when nobody is
//! registered), and a claimed INVITE follows RFC 3261 with the host in between: 100 Trying,
//! CANCEL answered 200 and passed to the plugin, which ends the INVITE with 487; an ACK for
//! its 2xx reaches it.

use huddle_e2e::plugin_support::{
    ring_then_cancel, testkit_ask, testkit_entry, testkit_request, testkit_wait_event,
    PluginServer, FOREIGN_SENDER,
};
use huddle_e2e::sip_client::{
    accept_message, new_branch, register, register_ok, text, Conn, Session, Ua, SIPML5_HOST,
};
use huddle_sip::Message;

async fn kit_server(config: &str) -> PluginServer {
    kit_server_with("", config).await
}

/// A server with `server_toml` (other tables) and the testkit `kit` with `config`.
async fn kit_server_with(server_toml: &str, config: &str) -> PluginServer {
    PluginServer::start(&format!("{server_toml}\n{}", testkit_entry("kit", config))).await
}

/// A MESSAGE (or INVITE) to `sip:kit@example.test` from a foreign sender.
fn request(method: &str, body: &str) -> (String, String) {
    testkit_request(method, "kit", FOREIGN_SENDER, "", body)
}

/// Sends `kit` the command `body`; its 200's body.
async fn ask(conn: &mut Conn, body: &str) -> String {
    testkit_ask(conn, "kit", body).await
}

/// Polls kit's event log until it has a line containing `needle`.
async fn wait_event(conn: &mut Conn, needle: &str) -> String {
    testkit_wait_event(conn, "kit", needle).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_and_timers_fire() {
    let server = kit_server("").await;
    let mut c = Conn::ws(&server.ws_url(), "tester").await;
    assert!(ask(&mut c, "watch - w/").await.starts_with("watch "));
    assert_eq!(ask(&mut c, "put w/a 1").await, "ok");
    assert_eq!(ask(&mut c, "put other 2").await, "ok");
    assert_eq!(ask(&mut c, "delete w/a").await, "ok");
    let events = wait_event(&mut c, "change delete w/a").await;
    let changes: Vec<&str> = events.lines().filter(|l| l.starts_with("change")).collect();
    assert_eq!(
        changes,
        ["change put w/a=1", "change delete w/a"],
        "only the watched prefix, in order"
    );

    assert!(ask(&mut c, "timer 50 7").await.starts_with("timer "));
    wait_event(&mut c, "timer 7").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_events_follow_first_and_last_binding() {
    let server = kit_server("").await;
    let mut c = Conn::ws(&server.ws_url(), "tester").await;
    let alice = Ua::sipml5("alice", "alice-pw");

    let mut tab1 = Conn::ws(&server.ws_url(), "alice tab 1").await;
    register_ok(&mut tab1, &alice, 300).await;
    wait_event(&mut c, "registration online sip:alice@example.test 1").await;

    let mut tab2 = Conn::ws(&server.ws_url(), "alice tab 2").await;
    register_ok(&mut tab2, &alice, 300).await;
    wait_event(&mut c, "registration updated sip:alice@example.test 2").await;

    // Closing a tab removes its binding; closing the last takes alice offline.
    tab1.close().await;
    wait_event(&mut c, "registration updated sip:alice@example.test 1").await;
    tab2.close().await;
    wait_event(&mut c, "registration offline sip:alice@example.test 0").await;

    // Unregistering does too.
    let bob = Ua::sipml5("bob", "bob-pw");
    let mut b = Conn::ws(&server.ws_url(), "bob").await;
    let mut s: Session = register_ok(&mut b, &bob, 300).await;
    wait_event(&mut c, "registration online sip:bob@example.test 1").await;
    let r = register(&mut b, &bob, &mut s, Some(&bob.register_contact(0)), None).await;
    assert_eq!(r.status(), Some(200), "{}", text(&r));
    wait_event(&mut c, "registration offline sip:bob@example.test 0").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_registration_goes_offline() {
    let server = kit_server_with(
        "[registrar]\nmin_expires = 1\ndefault_expires = 1\nmax_expires = 3600",
        "",
    )
    .await;
    let mut c = Conn::ws(&server.ws_url(), "tester").await;
    let carol = Ua::sipml5("carol", "carol-pw");
    let mut page = Conn::ws(&server.ws_url(), "carol").await;
    register_ok(&mut page, &carol, 1).await;
    wait_event(&mut c, "registration online sip:carol@example.test 1").await;
    // Nothing refreshes it: the registrar's expiry removes it after a second.
    wait_event(&mut c, "registration offline sip:carol@example.test 0").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_plugin_sends_get_one_final_response() {
    let server = kit_server("").await;
    let mut c = Conn::ws(&server.ws_url(), "tester").await;

    // Nobody registered: the host answers the plugin 480 itself.
    let sent = ask(&mut c, "send sip:bob@example.test are you there").await;
    let id = sent.strip_prefix("sent ").expect("an id").to_owned();
    wait_event(&mut c, &format!("response {id} 480")).await;

    // Bob registered: his page gets the MESSAGE and its 200 goes back to the plugin.
    let bob = Ua::sipml5("bob", "bob-pw");
    let mut b = Conn::ws(&server.ws_url(), "bob").await;
    register_ok(&mut b, &bob, 300).await;
    let sent = ask(&mut c, "send sip:bob@example.test hello bob").await;
    let id = sent.strip_prefix("sent ").expect("an id").to_owned();
    let msg = b
        .wait_for("the plugin's MESSAGE", |m: &Message| {
            m.method().is_some_and(|x| x.as_str() == "MESSAGE") && m.body() == b"hello bob"
        })
        .await;
    accept_message(&mut b, &msg).await;
    wait_event(&mut c, &format!("response {id} 200")).await;

    // A user that does not exist: a host-made 404.
    let sent = ask(&mut c, "send sip:nobody@example.test hi").await;
    let id = sent.strip_prefix("sent ").expect("an id").to_owned();
    wait_event(&mut c, &format!("response {id} 404")).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_invite_is_cancelled_and_an_answered_one_acknowledged() {
    let server = kit_server("invite = true").await;
    let mut c = Conn::ws(&server.ws_url(), "tester").await;

    // Ringing, then CANCEL: 200 for the CANCEL from the host, 487 for the INVITE from the
    // plugin.
    let (invite, call_id) = request("INVITE", "ring");
    ring_then_cancel(&mut c, &invite, &call_id).await;
    wait_event(&mut c, "cancel").await;

    // Answered: the ACK for the 2xx (new branch, to the plugin's Contact) reaches the plugin.
    let (invite, call_id) = request("INVITE", "answer");
    c.send(&invite).await;
    let ok = c.final_response(&call_id, 1).await;
    assert_eq!(ok.status(), Some(200), "{}", text(&ok));
    let to = ok.header(&huddle_sip::message::HeaderName::To).unwrap();
    let ack = format!(
        "ACK sip:kit@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WS {SIPML5_HOST};branch={};rport\r\n\
         From: <sip:tester@tests.invalid>;tag=x\r\nTo: {to}\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        new_branch()
    );
    c.send(&ack).await;
    wait_event(&mut c, "ack").await;
    server.stop().await;
}
