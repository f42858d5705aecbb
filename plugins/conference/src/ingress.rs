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
