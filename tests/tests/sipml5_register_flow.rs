//! SIPml5's whole registration life over WebSocket with `enable_early_ims: false`
//! (SIPML5.md §3): empty IMS credentials ignored and challenged once (MD5, `qop="auth"`), the
//! retry accepted with the requested expiry, a refresh with pre-computed credentials (same
//! nonce, nc + 1) accepted without a new challenge, a replayed nc answered `stale=true`,
//! unregistration, and 423 + Min-Expires followed by a retry with that value.

use huddle_e2e::sip_client::{
    contacts, empty_authorization, param_of, text, uri_of, Challenge, Conn, DigestSession, Session,
    Ua,
};
use huddle_e2e::{TestServer, DOMAIN};
use huddle_sip::message::HeaderName;
use huddle_sip::Message;

/// The one Contact of a 200 that is ours, and its expires.
fn own_contact_expires(resp: &Message, ua: &Ua) -> Option<u32> {
    let all = contacts(resp);
    let own: Vec<&String> = all.iter().filter(|c| uri_of(c) == ua.contact_uri).collect();
    assert!(
        own.len() <= 1,
        "our Contact is listed more than once:\n{}",
        text(resp)
    );
    own.first().map(|c| {
        param_of(c, "expires")
            .and_then(|e| e.parse().ok())
            .unwrap_or_else(|| panic!("Contact without a numeric expires:\n{}", text(resp)))
    })
}

/// SIPml5 reads the expiry from `Expires` first, then from its own Contact (SIPML5.md §3):
/// both, when present, must say `expected`.
fn assert_granted(resp: &Message, ua: &Ua, expected: u32) {
    assert_eq!(resp.status(), Some(200), "{}", text(resp));
    if let Some(e) = resp.expires() {
        assert_eq!(e.ok(), Some(expected), "Expires header:\n{}", text(resp));
    }
    assert_eq!(
        own_contact_expires(resp, ua),
        Some(expected),
        "the 200 must list our Contact with expires={expected}:\n{}",
        text(resp)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipml5_register_refresh_replay_unregister_and_min_expires() {
    let server = TestServer::start().await;
    let mut conn = Conn::ws(&server.ws_url(), "alice").await;
    let ua = Ua::sipml5("alice", "alice-pw");
    let uri = ua.registrar_uri();
    let contact300 = ua.register_contact(300);
    let mut s = Session::new();

    // 1. IMS-style empty credentials: ignored, one MD5 challenge with qop="auth".
    s.cseq += 1;
    let empty = empty_authorization("alice", DOMAIN, &uri);
    let resp = conn
        .request(&ua.register_request(&s, Some(&contact300), None, Some(&empty)))
        .await;
    assert_eq!(resp.status(), Some(401), "{}", text(&resp));
    assert_eq!(
        resp.header_count(&HeaderName::WwwAuthenticate),
        1,
        "exactly one WWW-Authenticate (SIPml5 answers each one, SIPML5.md §3):\n{}",
        text(&resp)
    );
    let challenge = Challenge::of(&resp);
    assert_eq!(challenge.realm, DOMAIN);
    assert!(!challenge.nonce.is_empty());
    assert_eq!(
        challenge.algorithm.as_deref(),
        Some("MD5"),
        "{}",
        text(&resp)
    );
    assert_eq!(challenge.qop.as_deref(), Some("auth"), "{}", text(&resp));
    assert!(
        !challenge.stale,
        "a first challenge is not stale:\n{}",
        text(&resp)
    );

    // 2. The retry with qop=auth, nc=00000001 registers for the Contact's expires.
    let mut auth = DigestSession::new(challenge, "alice", "alice-pw");
    s.cseq += 1;
    let value = auth.authorize("REGISTER", &uri);
    assert!(value.contains("qop=auth,nc=00000001"), "{value}");
    let resp = conn
        .request(&ua.register_request(&s, Some(&contact300), None, Some(&value)))
        .await;
    assert_granted(&resp, &ua, 300);
    s.initial = false;

    // 3. Refresh: same Call-ID and From tag, CSeq + 1, nc=00000002 on the same nonce, no
    //    `Supported: path`. No new challenge.
    s.cseq += 1;
    let value = auth.authorize("REGISTER", &uri);
    assert!(value.contains("nc=00000002"), "{value}");
    let refresh = ua.register_request(&s, Some(&contact300), None, Some(&value));
    assert!(!refresh.contains("Supported:"));
    let resp = conn.request(&refresh).await;
    assert_granted(&resp, &ua, 300);

    // 4. The same nc again (a replay, in a new transaction): challenged with stale=true,
    //    which SIPml5 accepts and answers with a new cnonce and nc=00000001.
    s.cseq += 1;
    let replay = auth.value("REGISTER", &uri, 2);
    let resp = conn
        .request(&ua.register_request(&s, Some(&contact300), None, Some(&replay)))
        .await;
    assert_eq!(
        resp.status(),
        Some(401),
        "a replayed nonce count must not register:\n{}",
        text(&resp)
    );
    let challenge = Challenge::of(&resp);
    assert!(
        challenge.stale,
        "a replayed nc with a correct digest gets stale=true (SIPml5 accepts a second challenge \
         only with stale=true):\n{}",
        text(&resp)
    );
    let mut auth = DigestSession::new(challenge, "alice", "alice-pw");
    s.cseq += 1;
    let value = auth.authorize("REGISTER", &uri);
    let resp = conn
        .request(&ua.register_request(&s, Some(&contact300), None, Some(&value)))
        .await;
    assert_granted(&resp, &ua, 300);

    // 5. stack.stop(): Contact expires=0 → 200 listing no Contact.
    s.cseq += 1;
    let value = auth.authorize("REGISTER", &uri);
    let resp = conn
        .request(&ua.register_request(&s, Some(&ua.register_contact(0)), None, Some(&value)))
        .await;
    assert_eq!(resp.status(), Some(200), "{}", text(&resp));
    assert!(
        contacts(&resp).is_empty(),
        "after unregistering, the 200 lists no binding:\n{}",
        text(&resp)
    );

    // 6. expires=10 is below min_expires (60): 423 with Min-Expires, and SIPml5's retry with
    //    that value registers.
    s.cseq += 1;
    let value = auth.authorize("REGISTER", &uri);
    let resp = conn
        .request(&ua.register_request(&s, Some(&ua.register_contact(10)), None, Some(&value)))
        .await;
    assert_eq!(resp.status(), Some(423), "{}", text(&resp));
    let min: u32 = resp
        .header(&HeaderName::MinExpires)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("423 without a numeric Min-Expires:\n{}", text(&resp)));
    assert_eq!(min, 60, "{}", text(&resp));
    s.cseq += 1;
    let value = auth.authorize("REGISTER", &uri);
    let resp = conn
        .request(&ua.register_request(&s, Some(&ua.register_contact(min)), None, Some(&value)))
        .await;
    assert_granted(&resp, &ua, min);

    drop(conn);
    server.stop().await;
}
