//! The little SDP the relay reads and edits itself, line by line: what an offer asks for (one
//! video stream, sent or received), the offer narrowed to the one codec every leg of a
//! presentation uses, and the video mid of the host's answer.
//!
//! The host's engine does the real negotiation (ICE, DTLS, BUNDLE, codec parameters); the relay
//! only has to make sure the presenter's leg and every viewer's leg agree on one codec, because
//! the forwarding fast path relays packets as they are: a viewer must decode exactly what the
//! presenter encodes. So every offer is narrowed to `codec` (and its RTX) before the host sees it.
//! No SDP crate is pulled in for this: the edits are a filter over `a=`/`m=` lines of one m-line,
//! in the style of `plugins/conference/src/sdp.rs`.

/// Which way an offer's video goes, from the caller's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The caller sends video (`sendonly`, or `sendrecv`): they want to present.
    Present,
    /// The caller only receives video (`recvonly`): they want to watch.
    View,
}

/// Why an offer cannot become a presentation or a viewer's leg. Each maps to a 488 reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferError {
    /// An audio m-line with a port: a screen share is video only.
    HasAudio,
    /// No video m-line with a port.
    NoVideo,
    /// More than one video m-line.
    TwoVideos,
    /// The video is `inactive`.
    Inactive,
    /// The video m-line does not offer the configured codec.
    NoCodec,
}

impl OfferError {
    /// The reason phrase of the 488.
    pub fn reason(self) -> &'static str {
        match self {
            OfferError::HasAudio => "Not Acceptable Here - Screen Share Is Video Only",
            OfferError::NoVideo => "Not Acceptable Here - No Video Stream",
            OfferError::TwoVideos => "Not Acceptable Here - One Video Stream Only",
            OfferError::Inactive => "Not Acceptable Here - Video Inactive",
            OfferError::NoCodec => "Not Acceptable Here - Presentation Codec Not Offered",
        }
    }
}

/// One m-line of an SDP as read here.
#[derive(Debug, Default)]
struct Section {
    kind: String,
    port_zero: bool,
    direction: Option<String>,
}

fn is_direction(attr: &str) -> bool {
    matches!(attr, "sendrecv" | "sendonly" | "recvonly" | "inactive")
}

fn sections(sdp: &str) -> (Option<String>, Vec<Section>) {
    let mut session_direction = None;
    let mut out: Vec<Section> = Vec::new();
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            let mut parts = m.split_ascii_whitespace();
            out.push(Section {
                kind: parts.next().unwrap_or("").to_owned(),
                port_zero: parts.next() == Some("0"),
                direction: None,
            });
        } else if let Some(attr) = line.strip_prefix("a=").filter(|a| is_direction(a)) {
            match out.last_mut() {
                Some(section) => section.direction = Some(attr.to_owned()),
                None => session_direction = Some(attr.to_owned()),
            }
        }
    }
    (session_direction, out)
}

/// What the offer asks for: exactly one video stream, no audio, and which way the video goes.
pub fn role_of(offer: &str) -> Result<Role, OfferError> {
    let (session_direction, sections) = sections(offer);
    let live = || sections.iter().filter(|s| !s.port_zero);
    if live().any(|s| s.kind == "audio") {
        return Err(OfferError::HasAudio);
    }
    let mut videos = live().filter(|s| s.kind == "video");
    let video = videos.next().ok_or(OfferError::NoVideo)?;
    if videos.next().is_some() {
        return Err(OfferError::TwoVideos);
    }
    let direction = video
        .direction
        .as_deref()
        .or(session_direction.as_deref())
        .unwrap_or("sendrecv");
    match direction {
        "sendonly" | "sendrecv" => Ok(Role::Present),
        "recvonly" => Ok(Role::View),
        _ => Err(OfferError::Inactive),
    }
}

/// The payload type an `a=rtpmap:`/`a=fmtp:`/`a=rtcp-fb:` line is about.
fn pt_of<'a>(line: &'a str, attr: &str) -> Option<&'a str> {
    line.strip_prefix(attr)?.split([' ', '/']).next()
}

/// The offer with the video m-line narrowed to `codec` (case-insensitive encoding name) and the
/// RTX streams that repair it, and its direction set to what a relay leg needs: a presenter's
/// `sendrecv` becomes `sendonly` (the relay sends nothing back), a viewer's stays `recvonly`.
/// Lines outside the video m-line pass unchanged.
pub fn narrow_offer(offer: &str, codec: &str) -> Result<String, OfferError> {
    // First pass over the video section: which payload types stay.
    let mut in_video = false;
    let mut maps: Vec<(String, String)> = Vec::new();
    let mut apts: Vec<(String, String)> = Vec::new();
    for line in offer.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            in_video = m.starts_with("video ") && !m.split_ascii_whitespace().nth(1).eq(&Some("0"));
        } else if in_video {
            if let Some(rest) = line.strip_prefix("a=rtpmap:") {
                let mut it = rest.split([' ', '/']);
                if let (Some(pt), Some(name)) = (it.next(), it.next()) {
                    maps.push((pt.to_owned(), name.to_ascii_lowercase()));
                }
            } else if let Some(rest) = line.strip_prefix("a=fmtp:") {
                if let Some((pt, params)) = rest.split_once(' ') {
                    if let Some(apt) = params
                        .split(';')
                        .find_map(|p| p.trim().strip_prefix("apt="))
                    {
                        apts.push((pt.to_owned(), apt.to_owned()));
                    }
                }
            }
        }
    }
    let codec = codec.to_ascii_lowercase();
    let primary: Vec<&str> = maps
        .iter()
        .filter(|(_, name)| *name == codec)
        .map(|(pt, _)| pt.as_str())
        .collect();
    if primary.is_empty() {
        return Err(OfferError::NoCodec);
    }
    let keep = |pt: &str| {
        primary.contains(&pt)
            || apts
                .iter()
                .any(|(rtx, apt)| rtx == pt && primary.contains(&apt.as_str()))
    };
    // Second pass: rewrite.
    let mut out = String::with_capacity(offer.len());
    let mut in_video = false;
    for line in offer.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            let parts: Vec<&str> = m.split_ascii_whitespace().collect();
            in_video = parts.first() == Some(&"video") && parts.get(1) != Some(&"0");
            if in_video && parts.len() > 3 {
                let formats: Vec<&str> = parts[3..].iter().copied().filter(|f| keep(f)).collect();
                out.push_str(&format!(
                    "m={} {} {} {}\r\n",
                    parts[0],
                    parts[1],
                    parts[2],
                    formats.join(" ")
                ));
                continue;
            }
        } else if in_video {
            let about = pt_of(line, "a=rtpmap:")
                .or_else(|| pt_of(line, "a=fmtp:"))
                .or_else(|| pt_of(line, "a=rtcp-fb:"));
            if about.is_some_and(|pt| pt != "*" && !keep(pt)) {
                continue;
            }
            if line == "a=sendrecv" {
                out.push_str("a=sendonly\r\n");
                continue;
            }
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    Ok(out)
}

/// The mid of the answer's video stream (the m-line with a port), if it has one.
pub fn video_mid(answer: &str) -> Option<String> {
    let mut in_video = false;
    for line in answer.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            in_video = m.starts_with("video ") && !m.split_ascii_whitespace().nth(1).eq(&Some("0"));
        } else if let Some(mid) = line.strip_prefix("a=mid:").filter(|_| in_video) {
            return Some(mid.to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Chromium video-only offer as JsSIP sends it for a `getDisplayMedia` track (trimmed).
    pub(crate) const SCREEN_OFFER: &str = "v=0\r\n\
o=- 1 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 45 98 99\r\n\
c=IN IP4 0.0.0.0\r\n\
a=ice-ufrag:Xb3Q\r\n\
a=ice-pwd:9yFl6nM3pKq2sT8vWz1xYc4R\r\n\
a=fingerprint:sha-256 2E:3B:9A:11:47:6F:0D:C2:88:51:AA:1F:73:04:E9:5B:C6:22:90:7E:41:38:DD:AF:15:67:0B:92:C4:E8:3D:10\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=sendrecv\r\n\
a=rtcp-mux\r\n\
a=rtpmap:96 VP8/90000\r\n\
a=rtcp-fb:96 nack\r\n\
a=rtcp-fb:96 nack pli\r\n\
a=rtpmap:97 rtx/90000\r\n\
a=fmtp:97 apt=96\r\n\
a=rtpmap:102 H264/90000\r\n\
a=rtcp-fb:102 nack pli\r\n\
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=rtpmap:103 rtx/90000\r\n\
a=fmtp:103 apt=102\r\n\
a=rtpmap:45 AV1/90000\r\n\
a=rtpmap:98 VP9/90000\r\n\
a=rtpmap:99 rtx/90000\r\n\
a=fmtp:99 apt=98\r\n\
a=rtcp-fb:* transport-cc\r\n";

    #[test]
    fn the_direction_of_the_video_says_who_presents() {
        assert_eq!(role_of(SCREEN_OFFER), Ok(Role::Present));
        let send = SCREEN_OFFER.replace("a=sendrecv", "a=sendonly");
        assert_eq!(role_of(&send), Ok(Role::Present));
        let view = SCREEN_OFFER.replace("a=sendrecv", "a=recvonly");
        assert_eq!(role_of(&view), Ok(Role::View));
        let off = SCREEN_OFFER.replace("a=sendrecv", "a=inactive");
        assert_eq!(role_of(&off), Err(OfferError::Inactive));
        // A session-level direction applies when the m-line has none.
        let session = SCREEN_OFFER
            .replace("a=sendrecv\r\n", "")
            .replace("t=0 0\r\n", "t=0 0\r\na=recvonly\r\n");
        assert_eq!(role_of(&session), Ok(Role::View));
    }

    #[test]
    fn audio_or_a_second_video_is_refused() {
        let with_audio = SCREEN_OFFER.replace(
            "m=video",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:a\r\nm=video",
        );
        assert_eq!(role_of(&with_audio), Err(OfferError::HasAudio));
        // A rejected (port 0) audio line is no audio.
        let dead_audio = SCREEN_OFFER.replace(
            "m=video",
            "m=audio 0 UDP/TLS/RTP/SAVPF 111\r\na=mid:a\r\nm=video",
        );
        assert_eq!(role_of(&dead_audio), Ok(Role::Present));
        let two = format!("{SCREEN_OFFER}m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n");
        assert_eq!(role_of(&two), Err(OfferError::TwoVideos));
        assert_eq!(role_of("v=0\r\n"), Err(OfferError::NoVideo));
    }

    #[test]
    fn the_offer_is_narrowed_to_one_codec_and_its_rtx() {
        let narrowed = narrow_offer(SCREEN_OFFER, "VP8").unwrap();
        assert!(
            narrowed.contains("m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\n"),
            "{narrowed}"
        );
        assert!(narrowed.contains("a=rtpmap:96 VP8/90000"));
        assert!(narrowed.contains("a=fmtp:97 apt=96"));
        assert!(narrowed.contains("a=rtcp-fb:96 nack pli"));
        assert!(narrowed.contains("a=rtcp-fb:* transport-cc"));
        for gone in ["H264", "AV1", "VP9", "apt=102", "apt=98", "rtcp-fb:102"] {
            assert!(!narrowed.contains(gone), "{gone} left in {narrowed}");
        }
        assert!(narrowed.contains("a=sendonly") && !narrowed.contains("a=sendrecv"));
        assert!(narrowed.contains("a=fingerprint:sha-256"));
        let h264 = narrow_offer(SCREEN_OFFER, "h264").unwrap();
        assert!(
            h264.contains("m=video 9 UDP/TLS/RTP/SAVPF 102 103\r\n"),
            "{h264}"
        );
        assert_eq!(
            narrow_offer(&SCREEN_OFFER.replace("VP8", "XYZ"), "vp8"),
            Err(OfferError::NoCodec)
        );
    }

    #[test]
    fn the_video_mid_of_an_answer() {
        let answer = "v=0\r\nm=audio 0 UDP/TLS/RTP/SAVPF 0\r\na=mid:a\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:v1\r\n";
        assert_eq!(video_mid(answer).as_deref(), Some("v1"));
        assert_eq!(video_mid("v=0\r\nm=audio 9 X 0\r\na=mid:0\r\n"), None);
    }
}
