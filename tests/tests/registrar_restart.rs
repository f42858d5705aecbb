//! Bindings survive a restart on the same store folder when they can: a UDP binding is
//! persisted and comes back (listed by a binding fetch, and reachable), while a WebSocket
//! binding is connection-bound and does not outlive its connection.

use huddle::transport::Transport;
use huddle_e2e::sip_client::{
    accept_message, fetch_bindings, register_ok, send_through_407, text, uri_of, Conn, Session, Ua,
};
use huddle_e2e::{test_config, TestServer, DOMAIN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_binding_survives_restart_ws_binding_does_not() {
    let server = TestServer::start().await;
    let mut phone = Conn::udp(server.addr(Transport::Udp), "bob-udp").await;
    let bob_udp = Ua::udp("bob", "bob-pw", phone.local_addr());
    register_ok(&mut phone, &bob_udp, 600).await;

    let mut tab = Conn::ws(&server.ws_url(), "bob-ws").await;
    let bob_ws = Ua::sipml5("bob", "bob-pw");
    register_ok(&mut tab, &bob_ws, 600).await;

    let before = fetch_bindings(&mut phone, &bob_udp).await;
    let mut uris: Vec<String> = before.iter().map(|c| uri_of(c)).collect();
    uris.sort();
    let mut expected = vec![bob_udp.contact_uri.clone(), bob_ws.contact_uri.clone()];
    expected.sort();
    assert_eq!(uris, expected, "before the restart: {before:?}");

    // Restart on the same store; the WebSocket is cut by the shutdown.
    let dir = server.stop().await;
    let config = test_config(dir.path(), DOMAIN, "");
    let server = TestServer::start_in(dir, &config).await;
    phone.set_server(server.addr(Transport::Udp));

    let after = fetch_bindings(&mut phone, &bob_udp).await;
    assert_eq!(
        after.len(),
        1,
        "exactly the UDP binding survives the restart; a WS binding cannot (its connection is \
         gone): {after:?}"
    );
    assert_eq!(uri_of(&after[0]), bob_udp.contact_uri, "{after:?}");
    let left: u32 = huddle_e2e::sip_client::param_of(&after[0], "expires")
        .and_then(|e| e.parse().ok())
        .unwrap_or_else(|| panic!("no expires in {after:?}"));
    assert!(
        (1..=600).contains(&left),
        "the restored binding keeps its remaining time: {after:?}"
    );

    // The restored binding routes: carol's MESSAGE reaches the UDP phone.
    let carol = Ua::sipml5("carol", "carol-pw");
    let mut carol_conn = Conn::ws(&server.ws_url(), "carol").await;
    let mut s = Session::new();
    send_through_407(
        &mut carol_conn,
        &carol,
        &mut s,
        "MESSAGE",
        "sip:bob@example.test",
        |s, auth| carol.message_request("bob", s, "after the restart", auth),
    )
    .await;
    let req = phone.recv_request("MESSAGE").await;
    assert_eq!(req.body(), b"after the restart");
    assert_eq!(req.request_uri(), Some(bob_udp.contact_uri.as_str()));
    accept_message(&mut phone, &req).await;
    let resp = carol_conn.final_response(&s.call_id, s.cseq).await;
    assert_eq!(resp.status(), Some(200), "{}", text(&resp));

    drop(tab);
    server.stop().await;
}
