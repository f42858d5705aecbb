//! `Contact: *` (RFC 3261 §10.2.2, §10.3 step 6): with `Expires: 0` it removes every binding
//! of the address-of-record, whatever transport registered it; without `Expires: 0` it is a
//! 400 and changes nothing. The removal reaches the store: nothing comes back after a restart.

use huddle::transport::Transport;
use huddle_e2e::sip_client::{
    contacts, fetch_bindings, register, register_ok, send_through_407, text, Conn, Session, Ua,
};
use huddle_e2e::{test_config, TestServer, DOMAIN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_with_expires_zero_removes_every_binding() {
    let server = TestServer::start().await;
    let mut tab = Conn::ws(&server.ws_url(), "alice-ws").await;
    let alice_ws = Ua::sipml5("alice", "alice-pw");
    register_ok(&mut tab, &alice_ws, 300).await;
    let mut phone = Conn::udp(server.addr(Transport::Udp), "alice-udp").await;
    let alice_udp = Ua::udp("alice", "alice-pw", phone.local_addr());
    register_ok(&mut phone, &alice_udp, 300).await;
    assert_eq!(fetch_bindings(&mut phone, &alice_udp).await.len(), 2);

    let mut s = Session::new();
    let resp = register(&mut phone, &alice_udp, &mut s, Some("*"), Some(0)).await;
    assert_eq!(resp.status(), Some(200), "{}", text(&resp));
    assert!(
        contacts(&resp).is_empty(),
        "the 200 to a wildcard removal lists nothing:\n{}",
        text(&resp)
    );
    let left = fetch_bindings(&mut phone, &alice_udp).await;
    assert!(left.is_empty(), "bindings left after `*`: {left:?}");

    // Nothing routes to alice any more.
    let bob = Ua::sipml5("bob", "bob-pw");
    let mut bob_conn = Conn::ws(&server.ws_url(), "bob").await;
    let mut m = Session::new();
    send_through_407(
        &mut bob_conn,
        &bob,
        &mut m,
        "MESSAGE",
        "sip:alice@example.test",
        |s, auth| bob.message_request("alice", s, "anyone?", auth),
    )
    .await;
    let resp = bob_conn.final_response(&m.call_id, m.cseq).await;
    assert_eq!(resp.status(), Some(480), "{}", text(&resp));

    // The persisted UDP binding was deleted too: it does not come back after a restart.
    drop(tab);
    let dir = server.stop().await;
    let config = test_config(dir.path(), DOMAIN, "");
    let server = TestServer::start_in(dir, &config).await;
    phone.set_server(server.addr(Transport::Udp));
    let left = fetch_bindings(&mut phone, &alice_udp).await;
    assert!(
        left.is_empty(),
        "bindings restored after `*` and a restart: {left:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_without_expires_zero_is_a_bad_request() {
    let server = TestServer::start().await;
    let mut phone = Conn::udp(server.addr(Transport::Udp), "alice-udp").await;
    let alice = Ua::udp("alice", "alice-pw", phone.local_addr());
    register_ok(&mut phone, &alice, 300).await;

    for expires in [None, Some(300)] {
        let mut s = Session::new();
        let resp = register(&mut phone, &alice, &mut s, Some("*"), expires).await;
        assert_eq!(
            resp.status(),
            Some(400),
            "`Contact: *` with Expires {expires:?} must be refused (RFC 3261 §10.3 step 6):\n{}",
            text(&resp)
        );
    }
    let left = fetch_bindings(&mut phone, &alice).await;
    assert_eq!(
        left.len(),
        1,
        "a refused wildcard changes nothing: {left:?}"
    );
    server.stop().await;
}
