//! Every branch of a forked INVITE fails (RFC 3261 §16.7 step 6): the proxy waits for all
//! of them, then sends alice the best one. Bob is registered from two SIPml5 tabs; each tab
//! answers the INVITE with a failure, and each gets the proxy's hop-by-hop ACK for it
//! (§17.1.1.3: same Via branch as the INVITE of that branch, To with the tab's tag).
//!
//! * 486 and 603 → 603: a 6xx is always chosen over a 4xx ("It MUST choose from the 6xx class
//!   responses if any exist in the context").
//! * 486 and 404 → one of them: both are class 4xx; step 6 says the proxy "SHOULD choose from
//!   the lowest response class" and then "MAY select any response within that chosen class",
//!   giving preference only to 401, 407, 415, 420 and 484 (neither here). Huddle ranks 404 and
//!   486 equally (`proxy.rs`, `on_branch_response`, rank 2) and `min_by_key` returns the first
//!   branch with the best rank, i.e. the branch created first = the binding registered first
//!   (tab 1), whatever the order the responses arrive in. Both orders are exercised below.
//! * A 6xx while another branch still rings: that branch SHOULD be cancelled (§16.7 step 5).

use huddle_e2e::sip_client::{
    ack_for_failure, chrome_sdp, cseq_method_of, cseq_of, method_of, register_ok, response,
    send_through_407, text, to_tag_of, Conn, Session, Ua,
};
use huddle_e2e::TestServer;
use huddle_sip::Message;

/// How one tab fails the INVITE.
#[derive(Clone, Copy)]
struct Failure {
    status: u16,
    reason: &'static str,
}

const BUSY: Failure = Failure {
    status: 486,
    reason: "Busy Here",
};
const DECLINE: Failure = Failure {
    status: 603,
    reason: "Decline",
};
const NOT_FOUND: Failure = Failure {
    status: 404,
    reason: "Not Found",
};

/// Alice calls bob (two tabs); tab 1 fails with `f1`, tab 2 with `f2`, in the order given by
/// `tab2_first`. Checks the ACKs each tab gets and returns alice's final response and the two
/// To-tags.
async fn fork_and_fail(f1: Failure, f2: Failure, tab2_first: bool) -> (Message, String, String) {
    let server = TestServer::start().await;
    let url = server.ws_url();
    let alice = Ua::sipml5("alice", "alice-pw");
    let bob = Ua::sipml5("bob", "bob-pw");
    let mut a = Conn::ws(&url, "alice").await;
    let mut tab1 = Conn::ws(&url, "bob-tab1").await;
    let mut tab2 = Conn::ws(&url, "bob-tab2").await;
    register_ok(&mut tab1, &bob, 300).await;
    register_ok(&mut tab2, &bob, 300).await;

    let offer = chrome_sdp("actpass", 0);
    let mut s = Session::new();
    let invite = send_through_407(
        &mut a,
        &alice,
        &mut s,
        "INVITE",
        "sip:bob@example.test",
        |s, auth| alice.invite_request("bob", s, &offer, auth),
    )
    .await;
    let inv1 = tab1.recv_request("INVITE").await;
    let inv2 = tab2.recv_request("INVITE").await;
    assert_ne!(inv1.branch(), inv2.branch());

    let tag1 = huddle_e2e::sip_client::new_tag();
    let tag2 = huddle_e2e::sip_client::new_tag();
    let mut legs = [
        (&mut tab1, &inv1, f1, tag1.clone()),
        (&mut tab2, &inv2, f2, tag2.clone()),
    ];
    if tab2_first {
        legs.reverse();
    }
    for (i, (tab, inv, f, tag)) in legs.iter_mut().enumerate() {
        tab.send(&response(inv, 100, "Trying", None, &[], None))
            .await;
        tab.send(&response(inv, f.status, f.reason, Some(tag), &[], None))
            .await;
        // RFC 3261 §17.1.1.3: the proxy's client transaction ACKs the failure itself, on
        // the INVITE's branch, to the INVITE's Request-URI, with the response's To.
        let ack = tab
            .wait_for(&format!("the proxy's ACK for the {}", f.status), |m| {
                method_of(m).as_deref() == Some("ACK")
            })
            .await;
        assert_eq!(
            ack.branch(),
            inv.branch(),
            "{}: the ACK for a non-2xx is hop by hop, on the INVITE's branch:\n{}",
            tab.name,
            text(&ack)
        );
        assert_eq!(ack.request_uri(), inv.request_uri(), "{}", tab.name);
        assert_eq!(
            to_tag_of(&ack).as_deref(),
            Some(tag.as_str()),
            "{}",
            tab.name
        );
        assert_eq!(cseq_of(&ack), cseq_of(inv), "{}", tab.name);
        assert_eq!(cseq_method_of(&ack), "ACK");
        assert_eq!(ack.call_id(), inv.call_id());
        if i == 0 {
            // One branch is still pending: nothing final may reach alice yet (§16.7 step 5:
            // only 1xx and 2xx are forwarded at once).
            a.barrier().await;
            let early = a.take_queued(|m| {
                m.call_id() == Some(s.call_id.as_str()) && m.status().is_some_and(|c| c >= 200)
            });
            assert!(
                early.is_empty(),
                "a final was forwarded while a branch was still pending:\n{}",
                early.iter().map(text).collect::<Vec<_>>().join("\n---\n")
            );
        }
    }

    let fin = a.final_response(&s.call_id, s.cseq).await;
    a.send(&ack_for_failure(
        &Message::parse(invite.clone().into()).expect("our INVITE parses"),
        &fin,
    ))
    .await;
    // Exactly one final reaches alice, and her ACK ends at the proxy (it is hop by hop).
    a.barrier().await;
    let more = a.take_queued(|m| m.call_id() == Some(s.call_id.as_str()) && !m.is_request());
    assert!(
        more.iter().all(|m| m.status().is_some_and(|c| c < 200)),
        "alice got more than one final:\n{}",
        more.iter().map(text).collect::<Vec<_>>().join("\n---\n")
    );
    for (tab, inv) in [(&mut tab1, &inv1), (&mut tab2, &inv2)] {
        tab.barrier().await;
        // A CANCEL may legitimately reach a branch that was still pending when a 6xx came
        // (§16.7 step 5; see `a_6xx_cancels_the_branches_still_pending`).
        let extra = tab.take_queued(|m| {
            m.is_request()
                && !(method_of(m).as_deref() == Some("CANCEL") && m.branch() == inv.branch())
        });
        assert!(
            extra.is_empty(),
            "{}: alice's ACK for the failure must not be forwarded (§16.7 step 6 ends the \
             transaction at the proxy); got:\n{}",
            tab.name,
            extra.iter().map(text).collect::<Vec<_>>().join("\n---\n")
        );
    }
    server.stop().await;
    (fin, tag1, tag2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_6xx_is_preferred_over_a_4xx() {
    for tab2_first in [false, true] {
        let (fin, _tag1, tag2) = fork_and_fail(BUSY, DECLINE, tab2_first).await;
        assert_eq!(
            fin.status(),
            Some(603),
            "RFC 3261 §16.7 step 6: a 6xx wins over a 4xx (responses arrived {}):\n{}",
            if tab2_first { "603 first" } else { "486 first" },
            text(&fin)
        );
        assert_eq!(
            to_tag_of(&fin).as_deref(),
            Some(tag2.as_str()),
            "the 603 is tab 2's own response, forwarded:\n{}",
            text(&fin)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_4xx_give_one_of_them() {
    for (f1, f2) in [(BUSY, NOT_FOUND), (NOT_FOUND, BUSY)] {
        for tab2_first in [false, true] {
            let (fin, tag1, tag2) = fork_and_fail(f1, f2, tab2_first).await;
            let status = fin.status();
            assert!(
                status == Some(486) || status == Some(404),
                "RFC 3261 §16.7 step 6: the best of 486/404 is one of them:\n{}",
                text(&fin)
            );
            let from_tab1 = to_tag_of(&fin).as_deref() == Some(tag1.as_str());
            let from_tab2 = to_tag_of(&fin).as_deref() == Some(tag2.as_str());
            assert!(
                (from_tab1 && status == Some(f1.status))
                    || (from_tab2 && status == Some(f2.status)),
                "the chosen response is forwarded as the branch sent it:\n{}",
                text(&fin)
            );
            println!(
                "tab 1 {} / tab 2 {} ({} arrived first): alice got {} from tab {}",
                f1.status,
                f2.status,
                if tab2_first { "tab 2" } else { "tab 1" },
                status.unwrap_or_default(),
                if from_tab1 { 1 } else { 2 }
            );
        }
    }
}

/// RFC 3261 §16.7 step 5: "If a 6xx response is received, it is not immediately forwarded,
/// but the stateful proxy SHOULD cancel all client pending transactions as described in
/// Section 16.10". Tab 1 is ringing (its branch is Proceeding) when tab 2 declines: tab 1 must
/// get a CANCEL, and once it answers 487 alice gets the 603 (not the 487).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_6xx_cancels_the_branches_still_pending() {
    let server = TestServer::start().await;
    let url = server.ws_url();
    let alice = Ua::sipml5("alice", "alice-pw");
    let bob = Ua::sipml5("bob", "bob-pw");
    let mut a = Conn::ws(&url, "alice").await;
    let mut tab1 = Conn::ws(&url, "bob-tab1").await;
    let mut tab2 = Conn::ws(&url, "bob-tab2").await;
    register_ok(&mut tab1, &bob, 300).await;
    register_ok(&mut tab2, &bob, 300).await;

    let offer = chrome_sdp("actpass", 0);
    let mut s = Session::new();
    send_through_407(
        &mut a,
        &alice,
        &mut s,
        "INVITE",
        "sip:bob@example.test",
        |s, auth| alice.invite_request("bob", s, &offer, auth),
    )
    .await;
    let inv1 = tab1.recv_request("INVITE").await;
    let inv2 = tab2.recv_request("INVITE").await;
    let tag1 = huddle_e2e::sip_client::ring(&mut tab1, &bob, &inv1).await;
    let ringing = a.wait_for("tab 1's 180", |m| m.status() == Some(180)).await;
    assert_eq!(to_tag_of(&ringing).as_deref(), Some(tag1.as_str()));

    let tag2 = huddle_e2e::sip_client::new_tag();
    tab2.send(&response(&inv2, 603, "Decline", Some(&tag2), &[], None))
        .await;
    tab2.wait_for("the proxy's ACK for the 603", |m| {
        method_of(m).as_deref() == Some("ACK") && m.branch() == inv2.branch()
    })
    .await;

    let cancel = tab1
        .wait_for_within(huddle_e2e::sip_client::WAIT, |m| {
            method_of(m).as_deref() == Some("CANCEL")
        })
        .await;
    let Some(cancel) = cancel else {
        panic!(
            "RFC 3261 §16.7 step 5: after tab 2's 603 the proxy SHOULD cancel tab 1's ringing \
             branch (INVITE branch {:?}), but no CANCEL reached tab 1 within {:?}",
            inv1.branch(),
            huddle_e2e::sip_client::WAIT
        );
    };
    assert_eq!(cancel.branch(), inv1.branch(), "{}", text(&cancel));
    tab1.send(&response(&cancel, 200, "OK", Some(&tag1), &[], None))
        .await;
    tab1.send(&response(
        &inv1,
        487,
        "Request Terminated",
        Some(&tag1),
        &[],
        None,
    ))
    .await;
    let fin = a.final_response(&s.call_id, s.cseq).await;
    assert_eq!(
        fin.status(),
        Some(603),
        "the 6xx is the best response, not the 487 it caused:\n{}",
        text(&fin)
    );
    server.stop().await;
}
