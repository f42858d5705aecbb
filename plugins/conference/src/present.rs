//! Presenting from inside the room: a participant's second, video-only call to the room URI
//! (SIPml5's `call-screenshare` to the room, JsSIP/SIP.js with a `getDisplayMedia` track)
//! is handed to the screen-share relay rather than joined as another participant.
//!
//! The relay publishes where it listens in its namespace (`screenshare_namespace`, key
//! [`ABOUT`]: `{"v":1,"screen_user":"<template>"}`, `{room}` standing for the room). When that
//! record is there, the offer is video-only and sends video, and the caller already has a
//! participant leg in the room (the same authenticated user; a guest of a public room by the
//! same display name, as the relay matches guests), the conference retargets the INVITE
//! (`Host::retarget`, ABI 1.4) to `sip:<screen user>@<the Request-URI's host>`. The relay then
//! decides as for any call to its screen URI (who may present, one presenter or take-over);
//! the two plugins never call each other. Anything else joins the room as today: a video-only
//! caller who is not in the room (or when no relay runs) is a participant without audio.
//! Presenters by role who are not in the room call the screen URI themselves.
//!
//! Everything here is pure: the plugin reads the record and the offer and asks [`target`].

use huddle_sdk::serde::Deserialize;

/// The key of the relay's record in its namespace.
pub const ABOUT: &str = "about";

/// The relay's `about` record: where it takes screens.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(crate = "huddle_sdk::serde")]
pub struct Relay {
    /// Record version (1).
    pub v: u32,
    /// The screen URI's user part, `{room}` standing for the room (`screen-{room}`).
    pub screen_user: String,
}

impl Relay {
    /// The record in `bytes`, if it is one this plugin understands (version 1, a template with
    /// exactly one `{room}` and nothing that cannot be a URI user part).
    pub fn parse(bytes: &[u8]) -> Option<Relay> {
        let relay: Relay = serde_json::from_slice(bytes).ok()?;
        let usable = relay.v == 1
            && relay.screen_user.matches("{room}").count() == 1
            && !relay.screen_user.contains(|c: char| {
                c.is_whitespace() || matches!(c, '@' | ':' | ';' | '?' | '<' | '>')
            });
        usable.then_some(relay)
    }

    /// The screen URI of `room` on the host of `request_uri` (`sip:team@example.com;x=y` →
    /// `sip:screen-team@example.com`), with the request's scheme.
    pub fn screen_uri(&self, room: &str, request_uri: &str) -> Option<String> {
        let (scheme, rest) = request_uri.split_once(':')?;
        if !scheme.eq_ignore_ascii_case("sip") && !scheme.eq_ignore_ascii_case("sips") {
            return None;
        }
        let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        let host = host.split([';', '?']).next().unwrap_or_default();
        if host.is_empty() {
            return None;
        }
        let user = self.screen_user.replace("{room}", room);
        Some(format!("{}:{user}@{host}", scheme.to_ascii_lowercase()))
    }
}

/// Whether `offer` (SDP text) is what a screen share sends: no audio stream (no audio m-line,
/// or only ones with port 0) and a video stream the caller sends (`sendonly` or `sendrecv`,
/// the default).
pub fn shares_video_only(offer: &str) -> bool {
    let mut session_direction = Direction::SendRecv;
    let mut sections: Vec<(String, bool, Option<Direction>)> = Vec::new();
    for line in offer.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            let mut words = m.split_whitespace();
            let kind = words.next().unwrap_or_default().to_ascii_lowercase();
            let live = words.next().is_some_and(|port| port != "0");
            sections.push((kind, live, None));
        } else if let Some(d) = line.strip_prefix("a=").and_then(Direction::of) {
            match sections.last_mut() {
                Some(section) => section.2 = Some(d),
                None => session_direction = d,
            }
        }
    }
    let audio = sections
        .iter()
        .any(|(kind, live, _)| kind == "audio" && *live);
    let sends_video = sections.iter().any(|(kind, live, direction)| {
        kind == "video"
            && *live
            && matches!(
                direction.unwrap_or(session_direction),
                Direction::SendRecv | Direction::SendOnly
            )
    });
    !audio && sends_video
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn of(attribute: &str) -> Option<Direction> {
        match attribute {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }
}

/// Who a call is from, as the room tells callers apart: the authenticated user, or, for a
/// guest, the display name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Who<'a> {
    /// The authenticated user (`None`: a guest).
    pub member: Option<&'a str>,
    /// The display name.
    pub display: &'a str,
}

impl Who<'_> {
    /// The same caller: the same user, or two guests with the same display name.
    pub fn same_as(&self, other: &Who<'_>) -> bool {
        match (self.member, other.member) {
            (Some(a), Some(b)) => a == b,
            (None, None) => self.display == other.display,
            _ => false,
        }
    }
}

/// Where a new INVITE to `room` goes instead of joining it, if anywhere: the relay's screen
/// URI when the relay published `relay`, the offer shares video only, and `caller` is one of
/// `in_room` (who has a participant leg in the room now).
pub fn target<'a>(
    relay: Option<&Relay>,
    offer: &str,
    caller: &Who<'_>,
    mut in_room: impl Iterator<Item = Who<'a>>,
    room: &str,
    request_uri: &str,
) -> Option<String> {
    let relay = relay?;
    if !shares_video_only(offer) || !in_room.any(|p| p.same_as(caller)) {
        return None;
    }
    relay.screen_uri(room, request_uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What JsSIP offers for a `getDisplayMedia` track alone (trimmed).
    const SCREEN: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendrecv\r\n\
        a=rtpmap:96 VP8/90000\r\n";
    const CAMERA: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendrecv\r\na=rtpmap:111 opus/48000/2\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=sendrecv\r\na=rtpmap:96 VP8/90000\r\n";

    fn relay() -> Relay {
        Relay::parse(br#"{"v":1,"screen_user":"screen-{room}"}"#).unwrap()
    }

    const ALICE: Who<'static> = Who {
        member: Some("alice"),
        display: "Alice",
    };

    #[test]
    fn a_screen_offer_is_video_only_and_sending() {
        assert!(shares_video_only(SCREEN));
        assert!(shares_video_only(&SCREEN.replace("sendrecv", "sendonly")));
        // No direction attribute: sendrecv.
        assert!(shares_video_only(&SCREEN.replace("a=sendrecv\r\n", "")));
        assert!(!shares_video_only(CAMERA), "a camera call has audio");
        // An audio m-line that is switched off (port 0) is no audio.
        let rejected_audio = CAMERA.replace("m=audio 9", "m=audio 0");
        assert!(shares_video_only(&rejected_audio));
        // A viewer (recvonly), held (inactive), or a session-level recvonly: not presenting.
        assert!(!shares_video_only(&SCREEN.replace("sendrecv", "recvonly")));
        assert!(!shares_video_only(&SCREEN.replace("sendrecv", "inactive")));
        let session_recvonly = SCREEN
            .replace("a=sendrecv\r\n", "")
            .replace("t=0 0\r\n", "t=0 0\r\na=recvonly\r\n");
        assert!(!shares_video_only(&session_recvonly));
        assert!(!shares_video_only(""));
        assert!(!shares_video_only("m=audio 9 RTP/AVP 0\r\n"));
    }

    #[test]
    fn the_relay_record_gives_the_screen_uri_on_the_request_host() {
        let r = relay();
        assert_eq!(
            r.screen_uri("team", "sip:team@example.test").as_deref(),
            Some("sip:screen-team@example.test")
        );
        assert_eq!(
            r.screen_uri("team", "SIPS:team@example.test:5061;transport=wss?x=y")
                .as_deref(),
            Some("sips:screen-team@example.test:5061")
        );
        let suffix = Relay::parse(br#"{"v":1,"screen_user":"{room}-screen"}"#).unwrap();
        assert_eq!(
            suffix.screen_uri("team", "sip:team@h").as_deref(),
            Some("sip:team-screen@h")
        );
        assert_eq!(r.screen_uri("team", "tel:+1555"), None);
        assert_eq!(r.screen_uri("team", "sip:team@"), None);
        for bad in [
            &br#"{"v":2,"screen_user":"screen-{room}"}"#[..],
            br#"{"v":1,"screen_user":"screen"}"#,
            br#"{"v":1,"screen_user":"{room}-{room}"}"#,
            br#"{"v":1,"screen_user":"a@b-{room}"}"#,
            br#"{"v":1}"#,
            b"not json",
        ] {
            assert_eq!(Relay::parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn only_someone_in_the_room_sharing_video_only_is_sent_to_the_relay() {
        let r = relay();
        let bob = Who {
            member: Some("bob"),
            display: "Bob",
        };
        let guest = |display| Who {
            member: None,
            display,
        };
        let uri = "sip:team@example.test";
        let decide =
            |relay: Option<&Relay>, offer: &str, caller: &Who<'_>, room: &[Who<'static>]| {
                target(relay, offer, caller, room.iter().copied(), "team", uri)
            };
        let screen = Some("sip:screen-team@example.test".to_owned());
        assert_eq!(decide(Some(&r), SCREEN, &ALICE, &[bob, ALICE]), screen);
        // A guest of a public room, by the display name of their leg.
        assert_eq!(
            decide(Some(&r), SCREEN, &guest("Zed"), &[guest("Zed")]),
            screen
        );
        // Not in the room (nobody, someone else, a guest named like a member): joins.
        assert_eq!(decide(Some(&r), SCREEN, &ALICE, &[]), None);
        assert_eq!(decide(Some(&r), SCREEN, &ALICE, &[bob]), None);
        assert_eq!(
            decide(Some(&r), SCREEN, &guest("Alice"), &[ALICE]),
            None,
            "a guest is not the member with their display name"
        );
        assert_eq!(
            decide(Some(&r), SCREEN, &ALICE, &[guest("Alice")]),
            None,
            "nor the other way round"
        );
        // A camera call, or no relay: joins.
        assert_eq!(decide(Some(&r), CAMERA, &ALICE, &[ALICE]), None);
        assert_eq!(decide(None, SCREEN, &ALICE, &[ALICE]), None);
    }
}
