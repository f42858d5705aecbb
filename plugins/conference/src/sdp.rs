//! The little SDP the plugin does itself: narrow the offer to the codecs the mixer decodes
//! before the host answers it, and read the answer's streams and payload types.
//!
//! The host's engine answers each m-line with the offer's codecs that it enables; the plugin
//! decides which it can *mix*, so it hands over an offer that lists only those (Opus, PCMU,
//! PCMA for audio; VP8 and its RTX for video). Everything else in the offer passes unchanged.

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
    /// Audio (with its codec) or video (VP8).
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
    /// VP8 video.
    Video,
}

fn codec_ok(video: bool, name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    if video {
        name == "vp8" || name == "rtx"
    } else {
        matches!(name.as_str(), "opus" | "pcmu" | "pcma")
    }
}

/// An offer's m-line while it is read: video or audio, its rtpmaps (pt, name) and RTX
/// associations (pt, apt).
#[derive(Default)]
struct OfferSection {
    video: bool,
    maps: Vec<(String, String)>,
    apts: Vec<(String, String)>,
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
/// repairs a kept payload type). An m-line left with none keeps its first format and is
/// answered by the host as it sees fit (it will refuse it: no codec in common).
pub fn narrow_offer(offer: &str) -> String {
    // First pass: per m-line, which payload types to keep.
    let mut keep: Vec<Vec<String>> = Vec::new();
    let mut section: Option<OfferSection> = None;
    let flush = |section: &mut Option<OfferSection>, keep: &mut Vec<Vec<String>>| {
        if let Some(OfferSection { video, maps, apts }) = section.take() {
            let mut kept: Vec<String> = maps
                .iter()
                .filter(|(_, name)| codec_ok(video, name) && !name.eq_ignore_ascii_case("rtx"))
                .map(|(pt, _)| pt.clone())
                .collect();
            let rtx: Vec<String> = maps
                .iter()
                .filter(|(_, name)| name.eq_ignore_ascii_case("rtx"))
                .filter(|(pt, _)| {
                    apts.iter()
                        .any(|(p, apt)| p == pt && kept.iter().any(|k| k == apt))
                })
                .map(|(pt, _)| pt.clone())
                .collect();
            kept.extend(rtx);
            keep.push(kept);
        }
    };
    for line in offer.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            flush(&mut section, &mut keep);
            section = Some(OfferSection {
                video: m.starts_with("video"),
                ..OfferSection::default()
            });
            if !m.starts_with("video") && !m.starts_with("audio") {
                section = None;
                keep.push(Vec::new());
            }
        } else if let Some(OfferSection { maps, apts, .. }) = section.as_mut() {
            if let Some(rest) = line.strip_prefix("a=rtpmap:") {
                if let Some((pt, enc)) = rest.split_once(' ') {
                    let name = enc.split('/').next().unwrap_or("");
                    maps.push((pt.to_owned(), name.to_owned()));
                }
            } else if let Some(rest) = line.strip_prefix("a=fmtp:") {
                if let Some((pt, params)) = rest.split_once(' ') {
                    for p in params.split(';') {
                        if let Some(apt) = p.trim().strip_prefix("apt=") {
                            apts.push((pt.to_owned(), apt.to_owned()));
                        }
                    }
                }
            }
        }
    }
    flush(&mut section, &mut keep);

    // Second pass: rewrite m-lines and drop attribute lines of removed payload types.
    let mut out = String::with_capacity(offer.len());
    let mut index: Option<usize> = None;
    for line in offer.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            index = Some(index.map_or(0, |i| i + 1));
            let kept = index.and_then(|i| keep.get(i)).filter(|k| !k.is_empty());
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
        let kept = index.and_then(|i| keep.get(i)).filter(|k| !k.is_empty());
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

/// The streams of an answer we can use (audio with a mixable codec, VP8 video).
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
            (true, "vp8") => Kind::Video,
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
        assert_eq!(s[1].kind, Kind::Video);
        assert_eq!((s[1].mid.as_str(), s[1].pt), ("v", 96));
        assert_eq!((s[1].receiving, s[1].sending), (false, true));
    }
}
