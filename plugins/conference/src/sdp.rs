//! The little SDP the plugin does itself: narrow the offer to the codecs the mixer decodes
//! before the host answers it, and read the answer's streams and payload types.
//!
//! The host's engine answers each m-line with the offer's codecs that it enables; the plugin
//! decides which it can *mix*, so it hands over an offer that lists only those (Opus, PCMU,
//! PCMA for audio; VP8 or H.264 and their RTX for video). Everything else in the offer passes
//! unchanged.
//!
//! Video: an answer's codec list is what *both* sides may send on the m-line, so one codec is
//! kept. VP8 wins whenever it is offered (H.264 is then left out): the composite's VP8 profiles
//! are what most receivers share. An offer with H.264 but no VP8 keeps one H.264 format
//! ([`h264_choice`]: packetization-mode=1, Baseline or Constrained Baseline, Constrained
//! Baseline first) and its RTX: that caller's H.264 is decoded into their tile, and they receive
//! the room's H.264 composite (Constrained Baseline from openh264, which both of those
//! profiles decode) on the payload type of that format.

/// An audio codec the mixer decodes and encodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioCodec {
    /// Opus, 48 kHz.
    Opus,
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
}

/// A stream of an SDP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// Its mid.
    pub mid: String,
    /// Audio or video, with its codec.
    pub kind: Kind,
    /// The payload type the answer chose (the first listed).
    pub pt: u8,
    /// Whether it flows towards us (`sendrecv`/`sendonly` from the caller's side).
    pub receiving: bool,
    /// Whether we send on it.
    pub sending: bool,
}

/// What a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Audio in this codec.
    Audio(AudioCodec),
    /// Video in this codec.
    Video(VideoCodec),
}

/// A video codec the mixer decodes and encodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// VP8.
    Vp8,
    /// H.264, packetization-mode 1, Baseline or Constrained Baseline.
    H264,
}

impl VideoCodec {
    /// The RTP encoding name (`a=rtpmap`, GStreamer's RTP caps).
    pub fn encoding_name(self) -> &'static str {
        match self {
            VideoCodec::Vp8 => "VP8",
            VideoCodec::H264 => "H264",
        }
    }

    /// The codec of an `a=rtpmap` encoding name, if the mixer decodes it.
    pub fn from_name(name: &str) -> Option<VideoCodec> {
        if name.eq_ignore_ascii_case("vp8") {
            Some(VideoCodec::Vp8)
        } else if name.eq_ignore_ascii_case("h264") {
            Some(VideoCodec::H264)
        } else {
            None
        }
    }
}

fn audio_ok(name: &str) -> bool {
    matches!(name.to_ascii_lowercase().as_str(), "opus" | "pcmu" | "pcma")
}

/// Whether an H.264 format's `a=fmtp` parameters are ones the decoder is given: non-interleaved
/// mode (`packetization-mode=1`; mode 0, the default, is single-NAL and browsers pair it with
/// a mode-1 twin anyway) and a profile every H.264 decoder handles: Baseline (`42`), or
/// Constrained Baseline signalled as Main/Extended with the constraint flags of RFC 6184
/// table 5. A missing profile-level-id means Baseline (RFC 6184 §8.1).
pub fn h264_fmtp_ok(params: &str) -> bool {
    let mut mode_1 = false;
    let mut profile = Some((0x42u8, 0u8));
    for p in params.split(';') {
        let Some((key, value)) = p.trim().split_once('=') else {
            continue;
        };
        let value = value.trim();
        if key.eq_ignore_ascii_case("packetization-mode") {
            mode_1 = value == "1";
        } else if key.eq_ignore_ascii_case("profile-level-id") {
            let byte = |i: usize| {
                value
                    .get(i..i + 2)
                    .and_then(|b| u8::from_str_radix(b, 16).ok())
            };
            profile = match (value.len(), byte(0), byte(2)) {
                (6, Some(idc), Some(iop)) => Some((idc, iop)),
                _ => None,
            };
        }
    }
    let baseline = match profile {
        Some((0x42, _)) => true,
        Some((0x4d, iop)) => iop & 0x80 != 0,
        Some((0x58, iop)) => iop & 0xc0 == 0xc0,
        _ => false,
    };
    mode_1 && baseline
}

/// An offer's m-line while it is read: video or audio, its rtpmaps (pt, name), RTX
/// associations (pt, apt) and format parameters (pt, params).
#[derive(Default)]
struct OfferSection {
    video: bool,
    maps: Vec<(String, String)>,
    apts: Vec<(String, String)>,
    fmtps: Vec<(String, String)>,
}

/// What the second pass does to one m-line: the payload types it keeps (none: left as it is).
#[derive(Default)]
struct SectionPlan {
    keep: Vec<String>,
}

/// Whether an H.264 format (its `a=fmtp` parameters) is Constrained Baseline: profile_idc 66
/// with constraint_set1, or Main/Extended with the constraint flags that make it so (RFC 6184
/// table 5).
fn h264_constrained_baseline(params: &str) -> bool {
    let id = params.split(';').find_map(|p| {
        let (key, value) = p.trim().split_once('=')?;
        key.eq_ignore_ascii_case("profile-level-id")
            .then(|| value.trim().to_owned())
    });
    let byte = |id: &str, i: usize| {
        id.get(i..i + 2)
            .and_then(|b| u8::from_str_radix(b, 16).ok())
    };
    match id.as_deref().map(|id| (byte(id, 0), byte(id, 2))) {
        Some((Some(0x42), Some(iop))) => iop & 0x40 != 0,
        Some((Some(0x4d), Some(iop))) => iop & 0x80 != 0,
        Some((Some(0x58), Some(iop))) => iop & 0xc0 == 0xc0,
        _ => false,
    }
}

/// The one H.264 format kept from an offer without VP8, given its formats in offer order as
/// (payload type, `a=fmtp` parameters): the first Constrained Baseline one in mode 1 (what
/// openh264 encodes the composite in, and what browsers list first), else the first Baseline
/// one in mode 1 (a Constrained Baseline stream is a valid Baseline one), else none.
pub fn h264_choice<'a>(formats: &[(&'a str, &str)]) -> Option<&'a str> {
    let usable = || formats.iter().filter(|(_, params)| h264_fmtp_ok(params));
    usable()
        .find(|(_, params)| h264_constrained_baseline(params))
        .or_else(|| usable().next())
        .map(|(pt, _)| *pt)
}

impl OfferSection {
    fn plan(self) -> SectionPlan {
        let OfferSection {
            video,
            maps,
            apts,
            fmtps,
        } = self;
        let fmtp = |pt: &str| {
            fmtps
                .iter()
                .find(|(p, _)| p == pt)
                .map_or("", |(_, params)| params.as_str())
        };
        let mut kept: Vec<String> = if video {
            let vp8: Vec<String> = maps
                .iter()
                .filter(|(_, name)| VideoCodec::from_name(name) == Some(VideoCodec::Vp8))
                .map(|(pt, _)| pt.clone())
                .collect();
            if vp8.is_empty() {
                let h264: Vec<(&str, &str)> = maps
                    .iter()
                    .filter(|(_, name)| VideoCodec::from_name(name) == Some(VideoCodec::H264))
                    .map(|(pt, _)| (pt.as_str(), fmtp(pt)))
                    .collect();
                h264_choice(&h264).map(str::to_owned).into_iter().collect()
            } else {
                vp8
            }
        } else {
            maps.iter()
                .filter(|(_, name)| audio_ok(name))
                .map(|(pt, _)| pt.clone())
                .collect()
        };
        let rtx: Vec<String> = maps
            .iter()
            .filter(|(_, name)| video && name.eq_ignore_ascii_case("rtx"))
            .filter(|(pt, _)| {
                apts.iter()
                    .any(|(p, apt)| p == pt && kept.iter().any(|k| k == apt))
            })
            .map(|(pt, _)| pt.clone())
            .collect();
        kept.extend(rtx);
        SectionPlan { keep: kept }
    }
}

/// An answer's m-line while it is read.
#[derive(Default)]
struct AnswerSection {
    video: bool,
    first_pt: Option<u8>,
    mid: Option<String>,
    direction: String,
    maps: Vec<(u8, String)>,
}

/// The offer with only mixable codecs left on each audio/video m-line (RTX only when it
/// repairs a kept payload type), VP8 preferred to one H.264 format (see the module doc). An m-line left
/// with none keeps its first format and is answered by the host as it sees fit (it will refuse
/// it: no codec in common).
pub fn narrow_offer(offer: &str) -> String {
    // First pass: per m-line, which payload types to keep.
    let mut plans: Vec<SectionPlan> = Vec::new();
    let mut section: Option<OfferSection> = None;
    for line in offer.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            if let Some(done) = section.take() {
                plans.push(done.plan());
            }
            if m.starts_with("video") || m.starts_with("audio") {
                section = Some(OfferSection {
                    video: m.starts_with("video"),
                    ..OfferSection::default()
                });
            } else {
                plans.push(SectionPlan::default());
            }
        } else if let Some(cur) = section.as_mut() {
            if let Some(rest) = line.strip_prefix("a=rtpmap:") {
                if let Some((pt, enc)) = rest.split_once(' ') {
                    let name = enc.split('/').next().unwrap_or("");
                    cur.maps.push((pt.to_owned(), name.to_owned()));
                }
            } else if let Some(rest) = line.strip_prefix("a=fmtp:") {
                if let Some((pt, params)) = rest.split_once(' ') {
                    for p in params.split(';') {
                        if let Some(apt) = p.trim().strip_prefix("apt=") {
                            cur.apts.push((pt.to_owned(), apt.to_owned()));
                        }
                    }
                    cur.fmtps.push((pt.to_owned(), params.to_owned()));
                }
            }
        }
    }
    if let Some(done) = section.take() {
        plans.push(done.plan());
    }

    // Second pass: rewrite m-lines, drop attribute lines of removed payload types.
    let mut out = String::with_capacity(offer.len());
    let mut index: Option<usize> = None;
    for line in offer.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            index = Some(index.map_or(0, |i| i + 1));
            let plan = index.and_then(|i| plans.get(i));
            let kept = plan.map(|p| &p.keep).filter(|k| !k.is_empty());
            let parts: Vec<&str> = m.split(' ').collect();
            match kept {
                Some(kept) if parts.len() > 3 => {
                    out.push_str("m=");
                    out.push_str(&parts[..3].join(" "));
                    for pt in parts[3..].iter().filter(|p| kept.iter().any(|k| k == *p)) {
                        out.push(' ');
                        out.push_str(pt);
                    }
                }
                _ => out.push_str(line),
            }
            out.push_str("\r\n");
            continue;
        }
        let kept = index
            .and_then(|i| plans.get(i))
            .map(|p| &p.keep)
            .filter(|k| !k.is_empty());
        if let Some(kept) = kept {
            let pt_attr = ["a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"]
                .iter()
                .find_map(|p| line.strip_prefix(p))
                .and_then(|rest| rest.split(' ').next());
            if let Some(pt) = pt_attr {
                if pt != "*" && !kept.iter().any(|k| k == pt) {
                    continue;
                }
            }
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out
}

/// The streams of an answer we can use (audio with a mixable codec, VP8 or H.264 video).
pub fn answer_streams(answer: &str) -> Vec<Stream> {
    let mut out = Vec::new();
    let mut cur: Option<AnswerSection> = None;
    let finish = |cur: &mut Option<AnswerSection>, out: &mut Vec<Stream>| {
        let Some(AnswerSection {
            video,
            first_pt,
            mid,
            direction: dir,
            maps,
        }) = cur.take()
        else {
            return;
        };
        let (Some(pt), Some(mid)) = (first_pt, mid) else {
            return;
        };
        let name = maps
            .iter()
            .find(|(p, _)| *p == pt)
            .map(|(_, n)| n.to_ascii_lowercase())
            .unwrap_or_default();
        let kind = match (video, name.as_str()) {
            (true, "vp8") => Kind::Video(VideoCodec::Vp8),
            (true, "h264") => Kind::Video(VideoCodec::H264),
            (false, "opus") => Kind::Audio(AudioCodec::Opus),
            (false, "pcmu") => Kind::Audio(AudioCodec::Pcmu),
            (false, "pcma") => Kind::Audio(AudioCodec::Pcma),
            _ => return,
        };
        // The answer's direction is ours: `recvonly` = we only receive.
        let (sending, receiving) = match dir.as_str() {
            "sendonly" => (true, false),
            "recvonly" => (false, true),
            "inactive" => (false, false),
            _ => (true, true),
        };
        out.push(Stream {
            mid,
            kind,
            pt,
            receiving,
            sending,
        });
    };
    for line in answer.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            finish(&mut cur, &mut out);
            let parts: Vec<&str> = m.split(' ').collect();
            let port_zero = parts.get(1) == Some(&"0");
            let first_pt = parts.get(3).and_then(|p| p.parse().ok());
            cur = (!port_zero && (parts[0] == "audio" || parts[0] == "video")).then(|| {
                AnswerSection {
                    video: parts[0] == "video",
                    first_pt,
                    direction: "sendrecv".to_owned(),
                    ..AnswerSection::default()
                }
            });
        } else if let Some(AnswerSection {
            mid,
            direction: dir,
            maps,
            ..
        }) = cur.as_mut()
        {
            if let Some(m) = line.strip_prefix("a=mid:") {
                *mid = Some(m.to_owned());
            } else if let Some(rest) = line.strip_prefix("a=rtpmap:") {
                if let Some((pt, enc)) = rest.split_once(' ') {
                    if let Ok(pt) = pt.parse() {
                        maps.push((pt, enc.split('/').next().unwrap_or("").to_owned()));
                    }
                }
            } else if let Some(d) = line.strip_prefix("a=") {
                if matches!(d, "sendrecv" | "sendonly" | "recvonly" | "inactive") {
                    *dir = d.to_owned();
                }
            }
        }
    }
    finish(&mut cur, &mut out);
    out
}

/// The bandwidth the offer's first video m-line asks for, kbit/s: `b=AS:` (kbit/s) or
/// `b=TIAS:` (bit/s), if it has either.
pub fn video_bandwidth_kbps(offer: &str) -> Option<u32> {
    let mut in_video = false;
    for line in offer.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            if in_video {
                return None;
            }
            in_video = m.starts_with("video");
        } else if in_video {
            if let Some(v) = line.strip_prefix("b=AS:") {
                return v.trim().parse().ok();
            }
            if let Some(v) = line.strip_prefix("b=TIAS:") {
                return v.trim().parse::<u64>().ok().map(|bps| (bps / 1000) as u32);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111 9 0 8 126\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n\
        a=fmtp:111 minptime=10;useinbandfec=1\r\na=rtcp-fb:111 transport-cc\r\na=rtpmap:9 G722/8000\r\n\
        a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:126 telephone-event/8000\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103\r\na=mid:1\r\na=rtpmap:96 VP8/90000\r\n\
        a=rtcp-fb:96 nack pli\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
        a=rtpmap:102 H264/90000\r\na=fmtp:102 profile-level-id=42e01f\r\na=rtpmap:103 rtx/90000\r\na=fmtp:103 apt=102\r\n";

    #[test]
    fn the_offer_keeps_only_mixable_codecs() {
        let n = narrow_offer(OFFER);
        assert!(n.contains("m=audio 9 UDP/TLS/RTP/SAVPF 111 0 8\r\n"), "{n}");
        assert!(n.contains("m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\n"), "{n}");
        assert!(!n.contains("H264") && !n.contains("G722") && !n.contains("apt=102"));
        assert!(n.contains("a=fmtp:111 minptime=10;useinbandfec=1"));
        assert!(n.contains("a=fmtp:97 apt=96"));
    }

    #[test]
    fn the_video_bandwidth_comes_from_b_as_or_b_tias() {
        assert_eq!(video_bandwidth_kbps(OFFER), None);
        let as_line = OFFER.replace("a=mid:1\r\n", "a=mid:1\r\nb=AS:800\r\n");
        assert_eq!(video_bandwidth_kbps(&as_line), Some(800));
        let tias = OFFER.replace("a=mid:1\r\n", "a=mid:1\r\nb=TIAS:512000\r\n");
        assert_eq!(video_bandwidth_kbps(&tias), Some(512));
        // An audio m-line's bandwidth is not the video's.
        let audio = OFFER.replace("a=mid:0\r\n", "a=mid:0\r\nb=AS:64\r\n");
        assert_eq!(video_bandwidth_kbps(&audio), None);
    }

    #[test]
    fn answer_streams_name_codec_pt_and_direction() {
        let answer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:a\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=mid:v\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=sendonly\r\n\
            m=video 0 UDP/TLS/RTP/SAVPF 98\r\na=mid:x\r\n";
        let s = answer_streams(answer);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].kind, Kind::Audio(AudioCodec::Pcmu));
        assert_eq!((s[0].pt, s[0].receiving, s[0].sending), (0, true, true));
        assert_eq!(s[1].kind, Kind::Video(VideoCodec::Vp8));
        assert_eq!((s[1].mid.as_str(), s[1].pt), ("v", 96));
        assert_eq!((s[1].receiving, s[1].sending), (false, true));
    }

    /// A Chromium-shaped video m-line offering H.264 only (as after
    /// `setCodecPreferences([H264…])`): mode 1 and mode 0 of Constrained Baseline, a High
    /// profile, each with RTX.
    const H264_ONLY: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendrecv\r\na=rtpmap:111 opus/48000/2\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 102 103 104 105 112 113\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendrecv\r\n\
        a=rtpmap:102 H264/90000\r\na=rtcp-fb:102 nack pli\r\n\
        a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
        a=rtpmap:103 rtx/90000\r\na=fmtp:103 apt=102\r\n\
        a=rtpmap:104 H264/90000\r\na=fmtp:104 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f\r\n\
        a=rtpmap:105 rtx/90000\r\na=fmtp:105 apt=104\r\n\
        a=rtpmap:112 H264/90000\r\na=fmtp:112 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64001f\r\n\
        a=rtpmap:113 rtx/90000\r\na=fmtp:113 apt=112\r\n";

    #[test]
    fn an_h264_only_offer_keeps_one_baseline_mode_1_format_and_its_direction() {
        let n = narrow_offer(H264_ONLY);
        assert!(n.contains("m=video 9 UDP/TLS/RTP/SAVPF 102 103\r\n"), "{n}");
        assert!(n.contains(
            "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
        ));
        assert!(n.contains("a=fmtp:103 apt=102\r\n"));
        assert!(!n.contains("a=rtpmap:104") && !n.contains("64001f") && !n.contains("apt=112"));
        // The composite goes back in H.264: the caller's direction stands.
        let video = &n[n.find("m=video").unwrap()..];
        assert!(video.contains("a=sendrecv\r\n"), "{n}");
        let recv =
            narrow_offer(&H264_ONLY.replace("a=mid:1\r\na=sendrecv", "a=mid:1\r\na=recvonly"));
        assert!(
            recv[recv.find("m=video").unwrap()..].contains("a=recvonly\r\n"),
            "{recv}"
        );
    }

    #[test]
    fn the_h264_format_kept_is_constrained_baseline_first_then_baseline_in_offer_order() {
        let mode1 = |id: &str| {
            format!("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={id}")
        };
        let (b, cb, cb_main, high) = (
            mode1("42001f"),
            mode1("42e01f"),
            mode1("4de01f"),
            mode1("64001f"),
        );
        let cb_mode0 = "packetization-mode=0;profile-level-id=42e01f";
        // Baseline listed first (Firefox's order): Constrained Baseline still wins.
        assert_eq!(h264_choice(&[("97", &b), ("126", &cb)]), Some("126"));
        // Among Constrained Baselines, the caller's order.
        assert_eq!(h264_choice(&[("102", &cb), ("127", &cb_main)]), Some("102"));
        assert_eq!(h264_choice(&[("127", &cb_main), ("102", &cb)]), Some("127"));
        // Only Baseline (a Constrained Baseline stream decodes as Baseline).
        assert_eq!(h264_choice(&[("112", &high), ("97", &b)]), Some("97"));
        // Mode 0 or High only: nothing we send or are given.
        assert_eq!(h264_choice(&[("104", cb_mode0), ("112", &high)]), None);
        assert_eq!(h264_choice(&[]), None);
        // No profile-level-id is Baseline, not Constrained Baseline.
        assert_eq!(
            h264_choice(&[("98", "packetization-mode=1"), ("99", &cb)]),
            Some("99")
        );
        // Through the offer: Baseline listed before Constrained Baseline keeps the latter only.
        let offer = H264_ONLY
            .replace(
                "profile-level-id=42e01f\r\na=rtpmap:103",
                "profile-level-id=42001f\r\na=rtpmap:103",
            )
            .replace(
                "packetization-mode=1;profile-level-id=64001f",
                "packetization-mode=1;profile-level-id=42e01f",
            );
        let n = narrow_offer(&offer);
        assert!(n.contains("m=video 9 UDP/TLS/RTP/SAVPF 112 113\r\n"), "{n}");
    }

    #[test]
    fn vp8_wins_when_both_are_offered_whatever_the_order() {
        // H.264 first, as a caller preferring it offers: VP8 still answers, sendrecv kept.
        let both = H264_ONLY
            .replace("SAVPF 102 103 104 105 112 113", "SAVPF 102 103 96 97")
            .replace(
                "a=rtpmap:102 H264",
                "a=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\na=rtpmap:102 H264",
            );
        let n = narrow_offer(&both);
        assert!(n.contains("m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\n"), "{n}");
        assert!(
            !n.contains("H264") && n.contains("a=mid:1\r\na=sendrecv\r\n"),
            "{n}"
        );
    }

    #[test]
    fn h264_profiles_the_decoder_is_given() {
        // Baseline and Constrained Baseline, as Chromium, Firefox and SIPml5 offer them.
        for id in ["42e01f", "42001f", "42C01E", "4d8028", "58c01f"] {
            assert!(
                h264_fmtp_ok(&format!("packetization-mode=1;profile-level-id={id}")),
                "{id}"
            );
        }
        // No profile-level-id: Baseline.
        assert!(h264_fmtp_ok("packetization-mode=1"));
        // Main, High, Constrained High; mode 0 (also by default); malformed ids.
        for params in [
            "packetization-mode=1;profile-level-id=4d001f",
            "packetization-mode=1;profile-level-id=640c1f",
            "packetization-mode=1;profile-level-id=58401f",
            "packetization-mode=0;profile-level-id=42e01f",
            "profile-level-id=42e01f",
            "packetization-mode=1;profile-level-id=42e0",
            "packetization-mode=1;profile-level-id=zz001f",
            "packetization-mode=1;profile-level-id=42é01",
        ] {
            assert!(!h264_fmtp_ok(params), "{params}");
        }
    }

    #[test]
    fn answer_streams_read_h264_video() {
        let answer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102 103\r\na=mid:1\r\n\
            a=rtpmap:102 H264/90000\r\na=rtpmap:103 rtx/90000\r\na=recvonly\r\n";
        let s = answer_streams(answer);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].kind, s[0].pt), (Kind::Video(VideoCodec::H264), 102));
        assert_eq!((s[0].receiving, s[0].sending), (true, false));
    }
}
