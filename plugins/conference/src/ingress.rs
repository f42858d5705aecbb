//! Incoming RTP's way into the rooms' pipelines: a routing table from media session to the
//! `appsrc`s its streams feed, shared between the plugin's thread (which changes it as
//! participants join, leave, are muted, turn their camera off or on, and as a shared screen
//! comes and goes) and whoever delivers packets.
//!
//! On a host with RTP sinks (ABI 1.7) that is the host's media thread: [`Ingress`] is the
//! plugin's [`RtpSink`], so a packet goes from the host's media thread straight into its
//! `appsrc` (whose own thread decodes it), without the hop through the plugin's thread that a
//! queued `incoming_rtp` costs. On an older host the plugin's `incoming_rtp` hands packets to
//! the same table. Either way a packet of a session the table does not know (one that just
//! left, or whose room's pipeline is gone) is dropped.
//!
//! The table is read once per packet (a read lock, then a push into an `appsrc`, which never
//! blocks: they are leaky) and written only on the plugin's thread, briefly.

use std::collections::HashMap;
use std::sync::{OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use gstreamer as gst;
use gstreamer_app as gst_app;
use huddle_sdk::{MediaSessionId, RtpSink};

/// The payload type the screen's `appsrc` is built for; the screen's packets are rewritten to
/// it (the relay negotiated its own).
pub(crate) const SCREEN_PT: u8 = 96;

/// Where one incoming stream goes: its `appsrc` and the payload type it decodes (packets of
/// other types — comfort noise, DTMF, a codec switch we did not answer — would confuse the
/// depayloader and are dropped).
#[derive(Debug, Clone)]
pub(crate) struct Feed {
    pub(crate) src: gst_app::AppSrc,
    pub(crate) pt: u8,
}

/// What the packets of one media session feed.
#[derive(Debug)]
enum Route {
    /// A participant's call: its audio and video streams by mid.
    Participant {
        audio_mid: Option<String>,
        audio: Option<Feed>,
        video_mid: Option<String>,
        video: Option<Feed>,
        /// Kept out of the mix by the admin API.
        muted: bool,
    },
    /// A tapped shared screen (another plugin's session): one stream, whatever its mid.
    Screen {
        src: gst_app::AppSrc,
        /// The stream's payload type, taken from its first packet (the relay negotiated it);
        /// packets of another type (RTX is repaired by the host) are dropped.
        pt: OnceLock<u8>,
    },
}

/// The routing table; see the [module docs](self).
#[derive(Debug, Default)]
pub struct Ingress {
    routes: RwLock<HashMap<u64, Route>>,
}

impl Ingress {
    fn read(&self) -> RwLockReadGuard<'_, HashMap<u64, Route>> {
        // Every write replaces or removes whole entries: nothing is left half-done by a panic.
        self.routes.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<u64, Route>> {
        self.routes.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Routes a participant's streams: audio (`mid`, feed) and video (`mid`, and the feed while
    /// they send video). Keeps their mute flag when they are routed already.
    pub(crate) fn participant(
        &self,
        session: u64,
        audio: Option<(String, Feed)>,
        video_mid: Option<String>,
        video: Option<Feed>,
    ) {
        let mut routes = self.write();
        let muted = matches!(
            routes.get(&session),
            Some(Route::Participant { muted: true, .. })
        );
        let (audio_mid, audio) = audio.map_or((None, None), |(m, f)| (Some(m), Some(f)));
        routes.insert(
            session,
            Route::Participant {
                audio_mid,
                audio,
                video_mid,
                video,
                muted,
            },
        );
    }

    /// A participant's video now feeds `video` (their new tile's `appsrc`), or nothing (their
    /// camera is off: a placeholder tile).
    pub(crate) fn set_video(&self, session: u64, feed: Option<Feed>) {
        if let Some(Route::Participant { video, .. }) = self.write().get_mut(&session) {
            *video = feed;
        }
    }

    /// Keeps a participant's audio out of the mix (`true`) or lets it in again.
    pub fn set_muted(&self, session: u64, on: bool) {
        if let Some(Route::Participant { muted, .. }) = self.write().get_mut(&session) {
            *muted = on;
        }
    }

    /// Routes a tapped screen's session to `src`.
    pub(crate) fn screen(&self, session: u64, src: gst_app::AppSrc) {
        self.write().insert(
            session,
            Route::Screen {
                src,
                pt: OnceLock::new(),
            },
        );
    }

    /// Stops routing `session`.
    pub(crate) fn remove(&self, session: u64) {
        self.write().remove(&session);
    }

    /// Whether `session` is routed (tests).
    pub fn routes(&self, session: u64) -> bool {
        self.read().contains_key(&session)
    }

    /// One incoming RTP packet of stream `mid` of `session`: into the `appsrc` it feeds, if any.
    pub fn deliver(&self, session: u64, mid: &str, packet: &[u8]) {
        if packet.len() < 12 {
            return;
        }
        let pt = packet[1] & 0x7f;
        let routes = self.read();
        match routes.get(&session) {
            Some(Route::Participant {
                audio_mid,
                audio,
                video_mid,
                video,
                muted,
            }) => {
                let feed = if audio_mid.as_deref() == Some(mid) {
                    audio.as_ref().filter(|_| !muted)
                } else if video_mid.as_deref() == Some(mid) {
                    video.as_ref()
                } else {
                    None
                };
                if let Some(feed) = feed.filter(|f| f.pt == pt) {
                    let _ = feed
                        .src
                        .push_buffer(gst::Buffer::from_slice(packet.to_vec()));
                }
            }
            Some(Route::Screen { src, pt: first }) => {
                if *first.get_or_init(|| pt) != pt {
                    return;
                }
                let mut packet = packet.to_vec();
                packet[1] = (packet[1] & 0x80) | SCREEN_PT;
                let _ = src.push_buffer(gst::Buffer::from_mut_slice(packet));
            }
            None => {}
        }
    }
}

impl RtpSink for Ingress {
    fn incoming_rtp(&self, session: MediaSessionId, mid: &str, packet: &[u8]) {
        self.deliver(session.0, mid, packet);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gst::prelude::*;
    use std::time::{Duration, Instant};

    /// A VP8 RTP packet (payload type 96, one frame, marker set) of `len` bytes.
    fn vp8_packet(seq: u16, len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x80;
        p[1] = 0x80 | 96;
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[4..8].copy_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
        p[8..12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        // VP8 payload descriptor: start of a partition; then a key frame's first bytes.
        p[12] = 0x10;
        for (i, b) in p[13..].iter_mut().enumerate() {
            *b = i as u8;
        }
        p
    }

    fn rtp_caps(pt: i32) -> gst::Caps {
        gst::Caps::builder("application/x-rtp")
            .field("media", "video")
            .field("encoding-name", "VP8")
            .field("clock-rate", 90000i32)
            .field("payload", pt)
            .build()
    }

    /// An appsrc as the rooms build them, straight into an appsink: what a tile's depayloader
    /// would get.
    fn tap() -> (gst::Pipeline, gst_app::AppSrc, gst_app::AppSink) {
        gst::init().unwrap();
        let pipeline = gst::Pipeline::new();
        let src = crate::media::live_appsrc(&rtp_caps(96), 2_000_000, true);
        let sink = gst_app::AppSink::builder().sync(false).build();
        pipeline
            .add_many([src.upcast_ref::<gst::Element>(), sink.upcast_ref()])
            .unwrap();
        src.link(&sink).unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        (pipeline, src, sink)
    }

    fn pull(sink: &gst_app::AppSink) -> Option<gst::Buffer> {
        sink.try_pull_sample(gst::ClockTime::from_seconds(5))
            .and_then(|s| s.buffer_owned())
    }

    /// A participant's packets reach the appsrc of their stream byte for byte, stamped on
    /// arrival; other mids, other payload types and muted audio do not.
    #[test]
    fn packets_reach_their_stream_s_appsrc_byte_for_byte() {
        let (pipeline, video, video_sink) = tap();
        let (audio_pipeline, audio, audio_sink) = tap();
        let ingress = Ingress::default();
        ingress.participant(
            7,
            Some(("0".to_owned(), Feed { src: audio, pt: 96 })),
            Some("1".to_owned()),
            Some(Feed { src: video, pt: 96 }),
        );
        let first = vp8_packet(1, 300);
        ingress.deliver(7, "1", &first);
        ingress.deliver(7, "2", &vp8_packet(2, 300)); // no such stream
        let mut other_pt = vp8_packet(3, 300);
        other_pt[1] = 0x80 | 97;
        ingress.deliver(7, "1", &other_pt);
        ingress.deliver(8, "1", &vp8_packet(4, 300)); // no such session
        ingress.deliver(7, "1", &[0x80, 96, 0, 5]); // shorter than a header
        let last = vp8_packet(6, 1200);
        ingress.deliver(7, "1", &last);
        for sent in [&first, &last] {
            let got = pull(&video_sink).expect("the packet");
            assert_eq!(got.map_readable().unwrap().as_slice(), sent.as_slice());
            assert!(got.pts().is_some(), "stamped on arrival");
        }
        ingress.set_muted(7, true);
        ingress.deliver(7, "0", &vp8_packet(7, 100));
        ingress.set_muted(7, false);
        let heard = vp8_packet(8, 100);
        ingress.deliver(7, "0", &heard);
        let got = pull(&audio_sink).expect("the unmuted packet");
        assert_eq!(got.map_readable().unwrap().as_slice(), heard.as_slice());
        // Nothing else came through.
        pipeline.set_state(gst::State::Null).unwrap();
        audio_pipeline.set_state(gst::State::Null).unwrap();
        assert!(video_sink.try_pull_sample(gst::ClockTime::ZERO).is_none());
        assert!(audio_sink.try_pull_sample(gst::ClockTime::ZERO).is_none());
    }

    /// A shared screen's packets get the screen appsrc's payload type, and only those of the
    /// type its first packet had go in.
    #[test]
    fn a_screen_s_packets_are_rewritten_to_its_payload_type() {
        let (pipeline, src, sink) = tap();
        let ingress = Ingress::default();
        ingress.screen(9, src);
        let mut first = vp8_packet(1, 500);
        first[1] = 0x80 | 100;
        ingress.deliver(9, "whatever", &first);
        let mut rtx = vp8_packet(2, 500);
        rtx[1] = 101;
        ingress.deliver(9, "whatever", &rtx);
        let mut second = vp8_packet(3, 500);
        second[1] = 100;
        ingress.deliver(9, "x", &second);
        for (sent, marker) in [(&first, 0x80), (&second, 0)] {
            let got = pull(&sink).expect("the packet");
            let got = got.map_readable().unwrap();
            assert_eq!(got[1], marker | SCREEN_PT, "the screen's type, marker kept");
            assert_eq!(got[0], sent[0]);
            assert_eq!(&got[2..], &sent[2..]);
        }
        pipeline.set_state(gst::State::Null).unwrap();
        assert!(sink.try_pull_sample(gst::ClockTime::ZERO).is_none());
    }

    /// What one packet costs on the way in, for callgrind (not a test): `INGRESS_PACKETS`
    /// (default 20,000) packets of 450 bytes, one a frame, through `deliver` into a tile's
    /// appsrc and depayloader, as the host's media thread hands them over.
    ///
    ///   valgrind --tool=callgrind --toggle-collect='*Ingress*deliver*' \
    ///     target/release/deps/huddle_plugin_conference-* deliver_cost --ignored --exact ...
    #[test]
    #[ignore = "a cost harness for callgrind"]
    fn deliver_cost() {
        gst::init().unwrap();
        let packets: u16 = std::env::var("INGRESS_PACKETS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20_000);
        let pipeline = gst::Pipeline::new();
        let src = crate::media::live_appsrc(&rtp_caps(96), 2_000_000, true);
        let depay = gst::ElementFactory::make("rtpvp8depay").build().unwrap();
        let sink = gst::ElementFactory::make("fakesink")
            .property("sync", false)
            .build()
            .unwrap();
        let src_element: &gst::Element = src.upcast_ref();
        pipeline.add_many([src_element, &depay, &sink]).unwrap();
        gst::Element::link_many([src_element, &depay, &sink]).unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let ingress = Ingress::default();
        ingress.participant(1, None, Some("1".to_owned()), Some(Feed { src, pt: 96 }));
        let all: Vec<Vec<u8>> = (0..packets).map(|i| vp8_packet(i, 450)).collect();
        for p in &all {
            ingress.deliver(1, "1", p);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let queued: u64 = ingress_src(&ingress).property("current-level-buffers");
            if queued == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        pipeline.set_state(gst::State::Null).unwrap();
    }

    fn ingress_src(ingress: &Ingress) -> gst_app::AppSrc {
        match ingress.read().get(&1) {
            Some(Route::Participant {
                video: Some(feed), ..
            }) => feed.src.clone(),
            _ => unreachable!("routed above"),
        }
    }
}
