//! Parallel forking, first 2xx wins (RFC 3261 §16.7 step 5 and §16.10): bob is registered from
//! two SIPml5 tabs (two WebSockets) and one UDP phone. Alice's authorized INVITE reaches all
//! three, each copy with its own Via branch, a Record-Route and the SDP byte for byte. Both
//! tabs ring and alice sees both 180s (two early dialogs, two To-tags). Tab 2 answers: alice
//! gets exactly that 200; tab 1, which has sent a provisional, is CANCELled at once; the UDP
//! phone, which has not, gets no CANCEL until it sends a 180 (RFC 3261 §9.1: a CANCEL waits for
//! a provisional response), then gets it. Both cancelled branches answer 200 + 487, the proxy
//! ACKs each 487 hop by hop (same branch as its INVITE), and alice never sees a 487. Alice's
//! ACK and BYE then reach tab 2 only.

use huddle::transport::Transport;
use huddle_e2e::sip_client::{
    answer, chrome_sdp, cseq_method_of, cseq_of, method_of, register_ok, response, ring,
    send_through_407, text, to_tag_of, top_branch, uri_of, via_list, Conn, Dialog, Session, Ua,
};
use huddle_e2e::TestServer;
use huddle_sip::message::HeaderName;
use huddle_sip::Message;

/// What every forwarded copy of the INVITE must look like on leg `who`.
fn check_forwarded_invite(
    inv: &Message,
    who: &str,
    contact_uri: &str,
    sent: &Message,
    offer: &str,
    proxy_via: &str,
) {
    assert_eq!(
        inv.request_uri(),
        Some(contact_uri),
        "{who}: the copy targets this leg's registered Contact (RFC 3261 §16.6 step 2):\n{}",
        text(inv)
    );
    let vias = via_list(inv);
    let sent_vias = via_list(sent);
    assert_eq!(
        vias.len(),
        sent_vias.len() + 1,
        "{who}: the proxy adds exactly one Via (§16.6 step 8):\n{}",
        text(inv)
    );
    assert!(
        vias[0].starts_with(proxy_via),
        "{who}: the top Via is the proxy's own for this transport ({proxy_via}):\n{}",
        text(inv)
    );
    assert!(
        top_branch(inv).starts_with("z9hG4bK"),
        "{who}: an RFC 3261 branch:\n{}",
        text(inv)
    );
    let below = huddle_sip::headers::Via::parse(&vias[1]).expect("a Via");
    assert_eq!(
        (below.host, below.branch()),
        (huddle_e2e::sip_client::SIPML5_HOST, sent.branch()),
        "{who}: alice's Via stays right below the proxy's:\n{}",
        text(inv)
    );
    assert!(
        inv.header_count(&HeaderName::RecordRoute) > 0,
        "{who}: the proxy must Record-Route the INVITE:\n{}",
        text(inv)
    );
    assert_eq!(
        inv.max_forwards().and_then(Result::ok),
        Some(69),
        "{who}: Max-Forwards is decremented (§16.6 step 3):\n{}",
        text(inv)
    );
    assert_eq!(inv.call_id(), sent.call_id(), "{who}");
    assert_eq!(cseq_of(inv), cseq_of(sent), "{who}");
    assert_eq!(
        inv.body(),
        offer.as_bytes(),
        "{who}: the SDP offer arrives byte for byte"
    );
}

/// The CANCEL the proxy sends on a branch (RFC 3261 §9.1): same top Via (branch), Request-URI,
/// Call-ID, From, To (no tag) and CSeq number as the INVITE of that branch.
fn check_cancel(cancel: &Message, inv: &Message, who: &str) {
    assert_eq!(
        top_branch(cancel),
        top_branch(inv),
        "{who}: the CANCEL carries the branch of the INVITE it cancels (§9.1):\n{}",
        text(cancel)
    );
    assert_eq!(cancel.request_uri(), inv.request_uri(), "{who}");
    assert_eq!(cancel.call_id(), inv.call_id(), "{who}");
    assert_eq!(cseq_of(cancel), cseq_of(inv), "{who}");
    assert_eq!(cseq_method_of(cancel), "CANCEL", "{who}");
    assert_eq!(
        cancel.header(&HeaderName::From),
        inv.header(&HeaderName::From),
        "{who}"
    );
    assert_eq!(
        cancel.header(&HeaderName::To),
        inv.header(&HeaderName::To),
        "{who}: the CANCEL's To is the INVITE's, without a tag:\n{}",
        text(cancel)
    );
}

/// The ACK the proxy's client transaction sends for a non-2xx final (RFC 3261 §17.1.1.3).
fn is_hop_ack(msg: &Message, inv: &Message, tag: &str) -> bool {
    method_of(msg).as_deref() == Some("ACK")
        && msg.branch() == inv.branch()
        && to_tag_of(msg).as_deref() == Some(tag)
}

fn check_hop_ack(ack: &Message, inv: &Message, who: &str) {
    assert_eq!(
        ack.request_uri(),
        inv.request_uri(),
        "{who}: the ACK for a failure has the INVITE's Request-URI:\n{}",
        text(ack)
    );
    assert_eq!(cseq_of(ack), cseq_of(inv), "{who}");
    assert_eq!(cseq_method_of(ack), "ACK", "{who}");
    assert_eq!(ack.call_id(), inv.call_id(), "{who}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_2xx_wins_and_the_other_branches_are_cancelled() {
    let server = TestServer::start().await;
    let url = server.ws_url();
    let ws_addr = server.addr(Transport::Ws);
    let udp_addr = server.addr(Transport::Udp);

    let alice = Ua::sipml5("alice", "alice-pw");
    let bob = Ua::sipml5("bob", "bob-pw");
    let mut a = Conn::ws(&url, "alice").await;
    let mut tab1 = Conn::ws(&url, "bob-tab1").await;
    let mut tab2 = Conn::ws(&url, "bob-tab2").await;
    let mut phone = Conn::udp(udp_addr, "bob-udp").await;
    let bob_udp = Ua::udp("bob", "bob-pw", phone.local_addr());
    register_ok(&mut a, &alice, 300).await;
    register_ok(&mut tab1, &bob, 300).await;
    register_ok(&mut tab2, &bob, 300).await;
    register_ok(&mut phone, &bob_udp, 300).await;

    let offer = chrome_sdp("actpass", 6 * 1024);
    let answer_sdp = chrome_sdp("active", 6 * 1024);

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
    let sent = Message::parse(invite.clone().into()).expect("our INVITE parses");

    // All three legs get their copy.
    let inv1 = tab1.recv_request("INVITE").await;
    let inv2 = tab2.recv_request("INVITE").await;
    let inv3 = phone.recv_request("INVITE").await;
    let ws_via = format!("SIP/2.0/WS {ws_addr};branch=");
    let udp_via = format!("SIP/2.0/UDP {udp_addr};branch=");
    check_forwarded_invite(&inv1, "tab 1", &bob.contact_uri, &sent, &offer, &ws_via);
    check_forwarded_invite(&inv2, "tab 2", &bob.contact_uri, &sent, &offer, &ws_via);
    check_forwarded_invite(
        &inv3,
        "UDP phone",
        &bob_udp.contact_uri,
        &sent,
        &offer,
        &udp_via,
    );
    let branches = [top_branch(&inv1), top_branch(&inv2), top_branch(&inv3)];
    assert!(
        branches[0] != branches[1] && branches[1] != branches[2] && branches[0] != branches[2],
        "each branch is its own client transaction with its own Via branch (§16.6 step 8): \
         {branches:?}"
    );

    // Both tabs ring (100 + 180 with their own To-tags); the UDP phone stays silent.
    let tag1 = ring(&mut tab1, &bob, &inv1).await;
    let tag2 = ring(&mut tab2, &bob, &inv2).await;
    assert_ne!(tag1, tag2);
    for tag in [&tag1, &tag2] {
        let r = a
            .wait_for(&format!("180 with To-tag {tag}"), |m| {
                m.status() == Some(180)
                    && m.call_id() == Some(s.call_id.as_str())
                    && to_tag_of(m).as_deref() == Some(tag.as_str())
            })
            .await;
        assert_eq!(cseq_of(&r), s.cseq);
        assert_eq!(
            via_list(&r).len(),
            1,
            "the proxy removes its own Via from the 180 (§16.7 step 3):\n{}",
            text(&r)
        );
    }

    // Tab 2 answers.
    answer(&mut tab2, &bob, &inv2, &tag2, &answer_sdp).await;
    let ok = a
        .wait_for("the 200 to the INVITE", |m| {
            m.status().is_some_and(|c| c >= 200)
                && m.call_id() == Some(s.call_id.as_str())
                && cseq_of(m) == s.cseq
        })
        .await;
    assert_eq!(
        ok.status(),
        Some(200),
        "alice's final is tab 2's 200:\n{}",
        text(&ok)
    );
    assert_eq!(
        to_tag_of(&ok).as_deref(),
        Some(tag2.as_str()),
        "{}",
        text(&ok)
    );
    assert_eq!(
        ok.body(),
        answer_sdp.as_bytes(),
        "the SDP answer byte for byte"
    );

    // Tab 1 rang, so its branch is Proceeding: it is cancelled now.
    let cancel1 = tab1.recv_request("CANCEL").await;
    check_cancel(&cancel1, &inv1, "tab 1");
    tab1.send(&response(&cancel1, 200, "OK", Some(&tag1), &[], None))
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
    let ack1 = tab1
        .wait_for("the proxy's ACK for tab 1's 487", |m| {
            is_hop_ack(m, &inv1, &tag1)
        })
        .await;
    check_hop_ack(&ack1, &inv1, "tab 1");

    // The UDP phone has sent nothing, so its branch is still Calling: the CANCEL is held
    // (§9.1). Timer A keeps retransmitting the INVITE there meanwhile; wait for one of those
    // retransmissions sent after the 200 went up, then make sure no CANCEL came before it.
    phone.barrier().await;
    let stale = phone.take_queued(|m| method_of(m).as_deref() == Some("INVITE"));
    assert!(
        stale.iter().all(|m| m.branch() == inv3.branch()),
        "INVITE retransmissions keep the branch"
    );
    let held = phone.take_queued(|m| method_of(m).as_deref() == Some("CANCEL"));
    assert!(
        held.is_empty(),
        "RFC 3261 §9.1: no CANCEL on a branch that has had no provisional response; got:\n{}",
        held.iter().map(text).collect::<Vec<_>>().join("\n---\n")
    );
    let again = phone.recv_request("INVITE").await;
    assert_eq!(
        again.branch(),
        inv3.branch(),
        "a Timer A retransmission of the same INVITE:\n{}",
        text(&again)
    );
    phone.barrier().await;
    let held = phone.take_queued(|m| method_of(m).as_deref() == Some("CANCEL"));
    assert!(
        held.is_empty(),
        "still no CANCEL before a provisional response (§9.1):\n{}",
        held.iter().map(text).collect::<Vec<_>>().join("\n---\n")
    );

    // Now the phone rings late: the held CANCEL goes out.
    let tag3 = huddle_e2e::sip_client::new_tag();
    phone
        .send(&response(
            &inv3,
            180,
            "Ringing",
            Some(&tag3),
            &[("Contact", &format!("<{}>", bob_udp.contact_uri))],
            None,
        ))
        .await;
    let cancel3 = phone.recv_request("CANCEL").await;
    check_cancel(&cancel3, &inv3, "UDP phone");
    phone
        .send(&response(&cancel3, 200, "OK", Some(&tag3), &[], None))
        .await;
    phone
        .send(&response(
            &inv3,
            487,
            "Request Terminated",
            Some(&tag3),
            &[],
            None,
        ))
        .await;
    let ack3 = phone
        .wait_for("the proxy's ACK for the phone's 487", |m| {
            is_hop_ack(m, &inv3, &tag3)
        })
        .await;
    check_hop_ack(&ack3, &inv3, "UDP phone");

    // Alice's ACK and BYE follow the dialog with tab 2 only.
    let mut ad = Dialog::caller(&invite, &ok, s.auth.clone());
    assert_eq!(ad.target, uri_of(&bob.answer_contact()));
    a.send(&ad.request(&alice, "ACK", &[], None)).await;
    let ack = tab2.recv_request("ACK").await;
    assert_eq!(to_tag_of(&ack).as_deref(), Some(tag2.as_str()));
    assert_eq!(cseq_of(&ack), s.cseq);
    a.send(&ad.request(&alice, "BYE", &[], None)).await;
    let bye = tab2.recv_request("BYE").await;
    assert_eq!(to_tag_of(&bye).as_deref(), Some(tag2.as_str()));
    tab2.send(&response(&bye, 200, "OK", None, &[], None)).await;
    let r = a.final_response(&s.call_id, ad.cseq).await;
    assert_eq!(r.status(), Some(200), "{}", text(&r));

    // Nothing else: tab 1 and the phone got no ACK-for-2xx or BYE, alice no 487, no second
    // final and not the phone's late 180.
    for (leg, inv) in [(&mut tab1, &inv1), (&mut phone, &inv3)] {
        leg.barrier().await;
        let extra = leg.take_queued(|m| {
            m.is_request()
                && !(method_of(m).as_deref() == Some("INVITE") && m.branch() == inv.branch())
        });
        assert!(
            extra.is_empty(),
            "{}: only the winning branch gets the dialog's ACK and BYE; got:\n{}",
            leg.name,
            extra.iter().map(text).collect::<Vec<_>>().join("\n---\n")
        );
    }
    a.barrier().await;
    let late = a.take_queued(|m| {
        !m.is_request()
            && m.call_id() == Some(s.call_id.as_str())
            && cseq_of(m) == s.cseq
            && (m.status().is_some_and(|c| c >= 200) || to_tag_of(m).as_deref() == Some(&tag3))
    });
    assert!(
        late.is_empty(),
        "after the 2xx alice must see no other final (no 487 from the cancelled branches, \
         §16.7 step 5/6) and no late provisional; got:\n{}",
        late.iter().map(text).collect::<Vec<_>>().join("\n---\n")
    );

    server.stop().await;
}
