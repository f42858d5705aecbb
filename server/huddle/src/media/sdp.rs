//! The SDP/session layer, sans-IO: an offer in, an answer out, with no socket and no clock of
//! its own (the caller passes `now`). It decides what the host accepts before str0m sees the
//! offer, builds the [`Rtc`] for a new leg (ICE-lite, our one host candidate, the codecs the
//! configuration enables) and turns str0m's refusals into SIP answers.
//!
//! Division of labour: the *plugin* picks codecs and directions — it hands over the offer it
//! is willing to answer (an SDK helper can drop codecs or change a direction first), and str0m
//! answers each m-line with the subset of the offer's codecs that the host enables, mirroring
//! the offered direction. The *host* adds the transport attributes: `a=ice-lite`, its ICE
//! credentials, the DTLS fingerprint and `a=setup`, the one host candidate, `a=rtcp-mux` and the
//! BUNDLE group.
//!
//! What is refused, and how (the SIP status the plugin should send):
//! * not UTF-8, or not parseable as SDP → 400 with a reason naming the fault;
//! * no media lines, or an m-line whose transport is plain RTP (`RTP/AVP`, `RTP/AVPF`) or SDES
//!   (`RTP/SAVP(F)` without a fingerprint) → 488 and a `Warning` (the RTP bridge for SIP phones
//!   does not exist yet);
//! * no DTLS fingerprint or ICE credentials → 488;
//! * no codec in common → 488.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use str0m::change::SdpOffer;
use str0m::{Candidate, Rtc, RtcConfig};

use super::keytap::{self, KeySlot};

/// The codecs the engine can answer with (`[media] codecs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecName {
    /// Opus 48 kHz stereo.
    Opus,
    /// G.722.
    G722,
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
    /// VP8.
    Vp8,
    /// H.264.
    H264,
    /// VP9.
    Vp9,
    /// AV1.
    Av1,
}

impl CodecName {
    /// Parses a `[media] codecs` entry (case-insensitive).
    pub fn parse(name: &str) -> Option<CodecName> {
        Some(match name.to_ascii_lowercase().as_str() {
            "opus" => CodecName::Opus,
            "g722" => CodecName::G722,
            "pcmu" => CodecName::Pcmu,
            "pcma" => CodecName::Pcma,
            "vp8" => CodecName::Vp8,
            "h264" => CodecName::H264,
            "vp9" => CodecName::Vp9,
            "av1" => CodecName::Av1,
            _ => return None,
        })
    }

    /// Every codec, in the default order of preference.
    pub const ALL: [CodecName; 8] = [
        CodecName::Opus,
        CodecName::G722,
        CodecName::Pcmu,
        CodecName::Pcma,
        CodecName::Vp8,
        CodecName::H264,
        CodecName::Vp9,
        CodecName::Av1,
    ];
}

/// Why an offer was refused. Each variant maps to the SIP response the plugin sends
/// ([`SdpError::status`], [`SdpError::reason`], [`SdpError::warning`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdpError {
    /// The body is not UTF-8 text.
    #[error("the SDP is not UTF-8 text")]
    NotText,
    /// The body is not SDP that can be parsed.
    #[error("the SDP cannot be parsed")]
    Malformed,
    /// No `m=` line.
    #[error("the offer has no media lines")]
    NoMedia,
    /// An m-line offers plain RTP or SDES-SRTP (a SIP phone, not a WebRTC client).
    #[error("plain RTP/AVP or SDES offers are not supported (WebRTC only: UDP/TLS/RTP/SAVPF)")]
    PlainRtp,
    /// No `a=fingerprint` for DTLS.
    #[error("the offer has no DTLS fingerprint")]
    NoFingerprint,
    /// No `a=ice-ufrag`/`a=ice-pwd`.
    #[error("the offer has no ICE credentials")]
    NoIce,
    /// str0m refused it (no codec in common, inconsistent BUNDLE, a change it cannot apply).
    #[error("the offer cannot be answered (no codec in common, or an unsupported change)")]
    NotAcceptable,
    /// The engine has as many sessions as it may.
    #[error("too many media sessions")]
    TooManySessions,
}

impl SdpError {
    /// The SIP status to answer the INVITE with.
    pub fn status(self) -> u16 {
        match self {
            SdpError::NotText | SdpError::Malformed => 400,
            SdpError::TooManySessions => 503,
            _ => 488,
        }
    }

    /// The reason phrase, naming the fault.
    pub fn reason(self) -> &'static str {
        match self {
            SdpError::NotText => "Bad Request - SDP Is Not UTF-8",
            SdpError::Malformed => "Bad Request - Malformed SDP",
            SdpError::NoMedia => "Not Acceptable Here - No Media Lines",
            SdpError::PlainRtp => "Not Acceptable Here - WebRTC Media Only",
            SdpError::NoFingerprint => "Not Acceptable Here - No DTLS Fingerprint",
            SdpError::NoIce => "Not Acceptable Here - No ICE Credentials",
            SdpError::NotAcceptable => "Not Acceptable Here - No Common Codec",
            SdpError::TooManySessions => "Service Unavailable - Media Sessions Exhausted",
        }
    }

    /// The text of a `Warning: 399 <host> "..."` header for refusals a user should read.
    pub fn warning(self) -> Option<&'static str> {
        match self {
            SdpError::PlainRtp => Some(
                "plain RTP (RTP/AVP) and SDES-SRTP are not supported yet; this server needs \
                 WebRTC media: UDP/TLS/RTP/SAVPF with ICE and DTLS-SRTP",
            ),
            SdpError::NoFingerprint | SdpError::NoIce => {
                Some("this server needs WebRTC media: ICE and DTLS-SRTP")
            }
            _ => None,
        }
    }
}

/// What the host adds to every leg.
#[derive(Debug, Clone)]
pub struct LegSettings {
    /// The host candidate offered in every answer (the advertised address and the port).
    pub candidate: SocketAddr,
    /// The codecs answered with.
    pub codecs: Vec<CodecName>,
    /// Run str0m's send-side bandwidth estimation (TWCC) and pace to it; the estimates reach
    /// the plugin through `media_bitrate`. REMB estimates from the peer are reported either way.
    pub bandwidth_estimation: bool,
}

/// Checks an offer before str0m parses it, then parses it.
pub fn check_offer(offer: &[u8]) -> Result<SdpOffer, SdpError> {
    let text = std::str::from_utf8(offer).map_err(|_| SdpError::NotText)?;
    if !text.trim_start().starts_with("v=") {
        return Err(SdpError::Malformed);
    }
    let mut media = 0usize;
    let mut fingerprint = false;
    let mut ufrag = false;
    for line in text.lines() {
        let line = line.trim_end();
        // Every line is `<letter>=<value>` (RFC 8866 §5); an empty line only at the end.
        let b = line.as_bytes();
        let field = b.len() >= 2 && b[0].is_ascii_lowercase() && b[1] == b'=';
        if !b.is_empty() && !field {
            return Err(SdpError::Malformed);
        }
        if let Some(m) = line.strip_prefix("m=") {
            media += 1;
            // m=<media> <port> <proto> <fmt> ...
            let proto = m
                .split_ascii_whitespace()
                .nth(2)
                .ok_or(SdpError::Malformed)?;
            let kind = m.split_ascii_whitespace().next().unwrap_or("");
            let webrtc_rtp = proto.eq_ignore_ascii_case("UDP/TLS/RTP/SAVPF")
                || proto.eq_ignore_ascii_case("UDP/TLS/RTP/SAVP");
            let data = kind == "application";
            let plain = matches!(
                proto.to_ascii_uppercase().as_str(),
                "RTP/AVP" | "RTP/AVPF" | "RTP/SAVP" | "RTP/SAVPF"
            );
            if plain {
                return Err(SdpError::PlainRtp);
            }
            if !webrtc_rtp && !data {
                return Err(SdpError::NotAcceptable);
            }
        } else if line.starts_with("a=fingerprint:") {
            fingerprint = true;
        } else if line.starts_with("a=ice-ufrag:") {
            ufrag = true;
        }
    }
    if media == 0 {
        return Err(SdpError::NoMedia);
    }
    if !fingerprint {
        return Err(SdpError::NoFingerprint);
    }
    if !ufrag {
        return Err(SdpError::NoIce);
    }
    SdpOffer::from_sdp_string(text).map_err(|e| {
        tracing::debug!(error = %e, "SDP offer refused by the parser");
        SdpError::Malformed
    })
}

/// A new leg's `Rtc`: ICE-lite (the server has known addresses and never gathers), RTP mode
/// (plugins see RTP packets, not frames), the configured codecs only, our host candidate.
/// Returns it with the local ICE username fragment, which demultiplexes its STUN, and the slot
/// where its DTLS leaves the SRTP keys ([`keytap`](super::keytap)).
pub(crate) fn new_leg(settings: &LegSettings, now: Instant) -> (Rtc, String, Arc<KeySlot>) {
    let mut config = RtcConfig::new()
        .set_ice_lite(true)
        .set_rtp_mode(true)
        // Stats events only for the NACK/PLI totals of `/metrics`: rarely, as each costs a
        // pass over every stream.
        .set_stats_interval(Some(std::time::Duration::from_secs(5)))
        .clear_codecs();
    for codec in &settings.codecs {
        config = match codec {
            CodecName::Opus => config.enable_opus(true, false),
            CodecName::G722 => config.enable_g722(true, false),
            CodecName::Pcmu => config.enable_pcmu(true, false),
            CodecName::Pcma => config.enable_pcma(true, false),
            CodecName::Vp8 => config.enable_vp8(true),
            CodecName::H264 => config.enable_h264(true),
            CodecName::Vp9 => config.enable_vp9(true),
            CodecName::Av1 => config.enable_av1(true),
        };
    }
    if settings.bandwidth_estimation {
        config = config.enable_bwe(Some(str0m::bwe::Bitrate::kbps(1000)));
    }
    let ufrag = config
        .local_ice_credentials()
        .as_ref()
        .map(|c| c.ufrag.clone())
        .unwrap_or_default();
    let (config, ufrag) = if ufrag.is_empty() {
        let creds = str0m::IceCreds::new();
        let ufrag = creds.ufrag.clone();
        (config.set_local_ice_credentials(creds), ufrag)
    } else {
        (config, ufrag)
    };
    let (mut rtc, keys) = keytap::build(config, now);
    if let Ok(candidate) = Candidate::host(settings.candidate, "udp") {
        rtc.add_local_candidate(candidate);
    }
    (rtc, ufrag, keys)
}

/// Answers `offer` on `rtc` (a new leg or a renegotiation).
pub fn answer(rtc: &mut Rtc, offer: SdpOffer) -> Result<String, SdpError> {
    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|_| SdpError::NotAcceptable)?;
    let text = answer.to_sdp_string();
    // An answer that rejects every m-line (port 0 everywhere) means nothing was in common.
    let usable = text
        .lines()
        .filter_map(|l| l.strip_prefix("m="))
        .any(|m| m.split_ascii_whitespace().nth(1).is_some_and(|p| p != "0"));
    if usable {
        Ok(text)
    } else {
        Err(SdpError::NotAcceptable)
    }
}

#[cfg(test)]
mod tests {
    //! The SDP layer without sockets: offers shaped like SIPml5/Chromium's in, answers out.
    use super::*;

    /// A Chromium offer as SIPml5 sends it (§4 of SIPML5.md): BUNDLE, rtcp-mux, DTLS actpass,
    /// all candidates inline, opus/G722/PCMU/PCMA + VP8/H264/VP9/AV1, and a `c=` that lies.
    pub(crate) const CHROME_OFFER: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=Doubango Telecom - chrome\r\n\
t=0 0\r\n\
a=group:BUNDLE 0 1\r\n\
a=extmap-allow-mixed\r\n\
a=msid-semantic: WMS stream\r\n\
m=audio 40001 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\n\
c=IN IP4 127.0.0.1\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=candidate:1 1 udp 2113937151 127.0.0.1 40001 typ host generation 0\r\n\
a=ice-ufrag:Xb3Q\r\n\
a=ice-pwd:9yFl6nM3pKq2sT8vWz1xYc4R\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 2E:3B:9A:11:47:6F:0D:C2:88:51:AA:1F:73:04:E9:5B:C6:22:90:7E:41:38:DD:AF:15:67:0B:92:C4:E8:3D:10\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
a=sendrecv\r\n\
a=msid:stream audio0\r\n\
a=rtcp-mux\r\n\
a=rtcp-rsize\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=rtcp-fb:111 transport-cc\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=rtpmap:63 red/48000/2\r\n\
a=fmtp:63 111/111\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:13 CN/8000\r\n\
a=rtpmap:110 telephone-event/48000\r\n\
a=rtpmap:126 telephone-event/8000\r\n\
a=ssrc:1111 cname:abcd\r\n\
m=video 40001 UDP/TLS/RTP/SAVPF 96 97 102 103 45 98 99 118 120\r\n\
c=IN IP4 127.0.0.1\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=candidate:1 1 udp 2113937151 127.0.0.1 40001 typ host generation 0\r\n\
a=ice-ufrag:Xb3Q\r\n\
a=ice-pwd:9yFl6nM3pKq2sT8vWz1xYc4R\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 2E:3B:9A:11:47:6F:0D:C2:88:51:AA:1F:73:04:E9:5B:C6:22:90:7E:41:38:DD:AF:15:67:0B:92:C4:E8:3D:10\r\n\
a=setup:actpass\r\n\
a=mid:1\r\n\
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
a=sendrecv\r\n\
a=msid:stream video0\r\n\
a=rtcp-mux\r\n\
a=rtcp-rsize\r\n\
a=rtpmap:96 VP8/90000\r\n\
a=rtcp-fb:96 goog-remb\r\n\
a=rtcp-fb:96 transport-cc\r\n\
a=rtcp-fb:96 ccm fir\r\n\
a=rtcp-fb:96 nack\r\n\
a=rtcp-fb:96 nack pli\r\n\
a=rtpmap:97 rtx/90000\r\n\
a=fmtp:97 apt=96\r\n\
a=rtpmap:102 H264/90000\r\n\
a=rtcp-fb:102 nack\r\n\
a=rtcp-fb:102 nack pli\r\n\
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=rtpmap:103 rtx/90000\r\n\
a=fmtp:103 apt=102\r\n\
a=rtpmap:45 AV1/90000\r\n\
a=rtcp-fb:45 nack\r\n\
a=rtcp-fb:45 nack pli\r\n\
a=rtpmap:98 VP9/90000\r\n\
a=rtcp-fb:98 nack\r\n\
a=rtcp-fb:98 nack pli\r\n\
a=fmtp:98 profile-id=0\r\n\
a=rtpmap:99 rtx/90000\r\n\
a=fmtp:99 apt=98\r\n\
a=rtpmap:118 red/90000\r\n\
a=rtpmap:120 ulpfec/90000\r\n\
a=ssrc-group:FID 2222 3333\r\n\
a=ssrc:2222 cname:abcd\r\n\
a=ssrc:3333 cname:abcd\r\n";

    fn settings(codecs: &[CodecName]) -> LegSettings {
        LegSettings {
            candidate: "127.0.0.1:40000".parse().unwrap(),
            codecs: codecs.to_vec(),
            bandwidth_estimation: true,
        }
    }

    fn crypto() {
        crate::media::install_crypto();
    }

    fn answer_for(offer: &str, codecs: &[CodecName]) -> Result<String, SdpError> {
        crypto();
        let offer = check_offer(offer.as_bytes())?;
        let (mut rtc, _, _) = new_leg(&settings(codecs), Instant::now());
        answer(&mut rtc, offer)
    }

    #[test]
    fn a_sipml5_offer_gets_a_webrtc_answer_with_our_transport() {
        let sdp = answer_for(CHROME_OFFER, &[CodecName::Opus, CodecName::Vp8]).unwrap();
        assert!(sdp.contains("a=ice-lite"), "{sdp}");
        assert!(sdp.contains("a=group:BUNDLE 0 1"), "{sdp}");
        assert!(sdp.contains("a=rtcp-mux"), "{sdp}");
        assert!(sdp.contains("a=fingerprint:sha-256 "), "{sdp}");
        assert!(
            sdp.contains("a=setup:passive") || sdp.contains("a=setup:active"),
            "{sdp}"
        );
        assert!(sdp.contains("127.0.0.1 40000 typ host"), "{sdp}");
        assert!(sdp.contains("UDP/TLS/RTP/SAVPF"), "{sdp}");
        // The plugin's codec choice: opus and VP8 only, with the offer's payload types.
        assert!(sdp.contains("a=rtpmap:111 opus/48000/2"), "{sdp}");
        assert!(sdp.contains("a=rtpmap:96 VP8/90000"), "{sdp}");
        assert!(!sdp.contains("H264"), "{sdp}");
        assert!(!sdp.contains("PCMU"), "{sdp}");
    }

    #[test]
    fn directions_mirror_the_offer() {
        let held = CHROME_OFFER.replace("a=sendrecv", "a=sendonly");
        let sdp = answer_for(&held, &CodecName::ALL).unwrap();
        assert!(sdp.contains("a=recvonly"), "{sdp}");
        assert!(!sdp.contains("a=sendrecv"), "{sdp}");
    }

    #[test]
    fn a_renegotiation_on_the_same_leg_keeps_the_transport() {
        crypto();
        let (mut rtc, ufrag, _) = new_leg(&settings(&CodecName::ALL), Instant::now());
        let first = answer(&mut rtc, check_offer(CHROME_OFFER.as_bytes()).unwrap()).unwrap();
        let held = CHROME_OFFER
            .replace("a=sendrecv", "a=sendonly")
            .replace("2 IN IP4", "3 IN IP4");
        let second = answer(&mut rtc, check_offer(held.as_bytes()).unwrap()).unwrap();
        assert!(first.contains(&format!("a=ice-ufrag:{ufrag}")));
        assert!(second.contains(&format!("a=ice-ufrag:{ufrag}")), "{second}");
        assert!(second.contains("a=recvonly"), "{second}");
    }

    #[test]
    fn plain_rtp_from_a_phone_is_488_with_a_warning() {
        let phone = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
                     m=audio 4000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\n";
        let err = answer_for(phone, &CodecName::ALL).unwrap_err();
        assert_eq!(err, SdpError::PlainRtp);
        assert_eq!(err.status(), 488);
        assert!(err.warning().unwrap().contains("RTP/AVP"));
    }

    #[test]
    fn malformed_and_incomplete_offers_name_the_fault() {
        assert_eq!(check_offer(b"\xff\xfe").unwrap_err(), SdpError::NotText);
        assert_eq!(check_offer(b"hello").unwrap_err(), SdpError::Malformed);
        assert_eq!(
            check_offer(b"v=0\r\nthis is not sdp\r\n").unwrap_err(),
            SdpError::Malformed
        );
        assert_eq!(check_offer(b"").unwrap_err().status(), 400);
        assert_eq!(
            check_offer(b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\n").unwrap_err(),
            SdpError::NoMedia
        );
        let no_fp: String = CHROME_OFFER
            .lines()
            .filter(|l| !l.starts_with("a=fingerprint"))
            .map(|l| format!("{l}\r\n"))
            .collect();
        assert_eq!(
            check_offer(no_fp.as_bytes()).unwrap_err(),
            SdpError::NoFingerprint
        );
        let no_ice: String = CHROME_OFFER
            .lines()
            .filter(|l| !l.starts_with("a=ice-"))
            .map(|l| format!("{l}\r\n"))
            .collect();
        assert_eq!(check_offer(no_ice.as_bytes()).unwrap_err(), SdpError::NoIce);
        let truncated = &CHROME_OFFER[..CHROME_OFFER.find("m=video").unwrap() + 9];
        assert!(check_offer(truncated.as_bytes()).is_err());
    }

    #[test]
    fn no_codec_in_common_is_488() {
        let err = answer_for(CHROME_OFFER, &[]).unwrap_err();
        assert_eq!(err, SdpError::NotAcceptable);
        assert_eq!(err.status(), 488);
    }
}
