//! A live room's media: GStreamer for decoding, compositing and encoding; audio mixing in our
//! code (`mix.rs`). RTP enters from the host through `appsrc`s (routed by [`Ingress`], on the
//! host's media thread where the host takes an RTP sink) and leaves through `appsink`s with
//! [`Host::send_rtp`] (audio) and [`Host::send_rtp_batch`] (each composite frame's packets to
//! all its receivers in one call); no `webrtcbin`, the host owns the transport.
//!
//! ```text
//! video (one pipeline per room):
//!   videotestsrc(live, 16x16, transparent) ──────────────────┐ (background: keeps the
//!   appsrc(RTP VP8) → rtpvp8depay → vp8dec → queue ───────────┤  canvas ticking when an
//!   appsrc(RTP H.264) → rtph264depay → avdec_h264 → … → queue ─┤  uplink freezes)
//!   videotestsrc(placeholder) → queue ────────────────────────┤
//!   appsrc(tapped screen, VP8/H.264) → depay → decode → queue ┤ (while one is shared)
//!                          compositor ─(names blended: probe)→ tee ─┬→ queue → vp8enc → rtpvp8pay → appsink ─► receivers of
//!                                                          │                                        profile 0 (canvas)
//!                                                          ├→ queue → videorate → videoscale → vp8enc → … ─► profile 1, …
//!                                                          └→ queue → [videorate → videoscale] → openh264enc
//!                                                               → rtph264pay → appsink ─► H.264 receivers (while any)
//! audio (one pipeline per participant):
//!   appsrc(RTP) → depay → decode → convert/resample to 48 kHz mono → appsink ─► input queue
//!   appsrc(PCM, from the mixer thread) → encode → pay → appsink ─► that participant
//! mixer thread (one per room, every 20 ms): one frame from each input queue,
//!   total − own for each participant, levels → active speaker.
//! ```
//!
//! The composite is encoded once per output profile (the room's `video`, then its
//! `lower_profiles`) and the same packets go to every receiver of that profile, each with the
//! payload type its answer chose. A key frame is forced on join and on a receiver's PLI in that
//! receiver's profile only (rate-limited, since it is shared by the profile's receivers).
//!
//! Receivers that take H.264 only (no VP8 in their offer, `sdp.rs`) share one more output, the
//! H.264 one: built when the first of them joins, at the profile its offer's bandwidth picks
//! (`room::profile_for`), kept while any remains and removed after the last leaves, so a room
//! without them pays nothing. It is encoded by openh264 (`openh264enc`, in
//! gstreamer1.0-plugins-bad with the VP8 decoder): Constrained Baseline, which every
//! Baseline/Constrained Baseline packetization-mode 1 format the caller may have offered
//! decodes, packetized by `rtph264pay` in mode 1 with SPS/PPS before every IDR (a receiver joining
//! or asking by PLI starts from the key frame alone). Its receivers keep it when their
//! bandwidth changes (one H.264 encode per room); key frames on join and PLI as for VP8.
//! Every tile and every encoder branch sits behind a leaky queue: a frozen uplink or a slow
//! encoder never holds the canvas back.
//!
//! Names (each participant's on their tile, centred on a placeholder; the presenter's on the
//! shared screen) are not drawn in the tiles' branches but on the composite, at the size each
//! tile is shown: a buffer probe on the compositor's output blends the room's overlay
//! composition (one rectangle per visible name, `labels.rs`), which [`Shared::relayout`]
//! rebuilds whenever tiles move or names change. A tile's thread thus only depayloads and
//! decodes, as a raw `gst-launch` pipeline does.
//!
//! A participant's video comes in as VP8 or H.264 (Baseline/Constrained Baseline,
//! packetization-mode 1: `sdp.rs` says when); only the depayloader and decoder differ, the rest
//! of the tile is the same. H.264 is decoded by libav's `avdec_h264` rather than `openh264dec`:
//! it decodes every profile a sender may actually put in the stream (openh264 only Constrained
//! Baseline), and conceals lost slices instead of dropping whole frames. It runs one thread per
//! tile: libav's frame threading would add a frame of delay per thread, and a room has a
//! decoder per participant already.
//!
//! A shared screen (the relay's presenter, tapped through the host: [`RoomMedia::show_screen`])
//! is one more input, built like a participant's and behind the same leaky queue (a frozen
//! screen freezes in its place only); while it is there the canvas shows the presenter layout
//! (`layout::arrange`), and without it the room's own layout comes back.
//!
//! Resources are bounded by configuration: seats per room bound the branches and queues; each
//! input queue holds at most [`MAX_QUEUE`] samples (older ones are dropped).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, Weak};
use std::thread;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use huddle_sdk::{Host, MediaSessionId, OutgoingRtp};

use crate::cpu::RoomCpu;
use crate::ingress::{Feed, Ingress, SCREEN_PT};
use crate::labels::{label_text, stamp_i420, LabelCache, Lookup, Renderer, Stamp};
use crate::layout::{arrange, label_place, label_px, shown, tiles, LayoutKind, Rect};
use crate::mix::{level_dbov, mix_minus, SpeakerDetector, FRAME};
use crate::room::{ParticipantId, VideoProfile};
use crate::sdp::{AudioCodec, VideoCodec};

/// At most 200 ms of decoded audio waits per participant; a sender running fast loses its
/// oldest samples rather than growing the delay.
pub const MAX_QUEUE: usize = FRAME * 10;
/// A participant's audio enters the mix once 40 ms are queued (absorbs network jitter).
const PRIME: usize = FRAME * 2;
/// Shared key frames are forced at most this often, whoever asks.
const KEYFRAME_GAP: Duration = Duration::from_millis(500);

/// Locks, recovering the data if a thread panicked while holding it (nothing we keep is left
/// half-updated by a panic: every critical section is a few assignments).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A failure building or changing a pipeline.
#[derive(Debug)]
pub struct MediaError(pub String);

impl From<gst::glib::BoolError> for MediaError {
    fn from(e: gst::glib::BoolError) -> Self {
        MediaError(e.to_string())
    }
}
impl From<gst::StateChangeError> for MediaError {
    fn from(e: gst::StateChangeError) -> Self {
        MediaError(e.to_string())
    }
}
impl From<gst::PadLinkError> for MediaError {
    fn from(e: gst::PadLinkError) -> Self {
        MediaError(format!("{e:?}"))
    }
}

fn make(factory: &str) -> Result<gst::Element, MediaError> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|_| MediaError(format!("GStreamer element '{factory}' is not installed")))
}

/// A participant's audio as the mixer thread sees it.
struct AudioMember {
    id: ParticipantId,
    queue: VecDeque<i16>,
    primed: bool,
    encoder: Option<gst_app::AppSrc>,
}

/// A receiver of the composite.
#[derive(Debug, Clone)]
struct Receiver {
    session: MediaSessionId,
    mid: String,
    /// The payload type its answer chose for the codec it gets.
    pt: u8,
    /// Which output it gets: a VP8 profile (index into the room's profiles), or the H.264
    /// output (index [`Shared::h264_output`]).
    profile: usize,
    /// Its own RTP numbering: each profile's payloader counts on its own, so a receiver moved
    /// to another profile would see sequence numbers and timestamps jump (a browser's jitter
    /// buffer drops such a stream). Its next sequence number, its last timestamp, the offset
    /// from the current profile's timestamps, and whether to re-anchor on the next packet.
    next_seq: u16,
    last_ts: u32,
    ts_offset: u32,
    rebase: bool,
}

impl Receiver {
    fn new(session: MediaSessionId, mid: String, pt: u8, profile: usize) -> Receiver {
        Receiver {
            session,
            mid,
            pt,
            profile,
            next_seq: 0,
            last_ts: 0,
            ts_offset: 0,
            rebase: true,
        }
    }

    /// Rewrites `packet` (of its profile's stream) into this receiver's numbering.
    fn renumber(&mut self, packet: &mut [u8]) {
        let ts = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        if self.rebase {
            // One 90 kHz frame at 30 fps after the last packet sent: continuous enough.
            self.ts_offset = self.last_ts.wrapping_add(3000).wrapping_sub(ts);
            self.rebase = false;
        }
        let out_ts = ts.wrapping_add(self.ts_offset);
        packet[2..4].copy_from_slice(&self.next_seq.to_be_bytes());
        packet[4..8].copy_from_slice(&out_ts.to_be_bytes());
        self.next_seq = self.next_seq.wrapping_add(1);
        self.last_ts = out_ts;
    }
}

/// What the GStreamer threads and the mixer thread share with the plugin thread.
struct Shared {
    host: Host,
    /// Receivers of the composite.
    video_out: Mutex<Vec<Receiver>>,
    audio: Mutex<Vec<AudioMember>>,
    /// Tiles in order.
    tiles: Mutex<Vec<Tile>>,
    speaker: Mutex<Option<ParticipantId>>,
    stop: AtomicBool,
    /// Each output's encoder src pad, where key frames are asked for: the VP8 profiles (set
    /// once built), then the H.264 output's while it exists.
    encoder_pads: Mutex<Vec<Option<gst::Pad>>>,
    /// Each output's forced key frames: when the last was asked for, and whether one is owed.
    keyframes: Mutex<Vec<KeyframeState>>,
    /// The index of the H.264 output (after the VP8 profiles).
    h264_output: usize,
    /// Changed at run time by the admin API (`RoomMedia::set_layout`).
    layout: Mutex<LayoutKind>,
    /// The canvas (the first output profile).
    canvas: VideoProfile,
    /// CPU the room's pipelines and mixer have used (its own `Arc`: bus handlers hold it, and
    /// they must not hold `Shared`, which holds the pipelines' elements).
    cpu: Arc<RoomCpu>,
    /// The shared screen's compositor pad and label, while one is shown.
    screen: Mutex<Option<(gst::Pad, String)>>,
    /// The names, rendered or asked for.
    labels: Mutex<LabelCache>,
    /// Where names to render go: the room's label thread ([`label_loop`]); `None` once the
    /// room stops.
    label_jobs: Mutex<Option<mpsc::Sender<(String, u32)>>>,
    /// The names as placed now, blended onto every composite frame (its own `Arc`: the
    /// compositor's pad probe holds it).
    overlay: Arc<Mutex<Arc<Vec<Stamp>>>>,
}

/// A participant's tile: their compositor pad and the name drawn on it.
struct Tile {
    id: ParticipantId,
    pad: gst::Pad,
    label: String,
    /// No picture (audio only, or video off): the name goes in the middle.
    placeholder: bool,
}

/// Forced key frames of one output profile.
#[derive(Debug, Clone, Copy, Default)]
struct KeyframeState {
    last: Option<Instant>,
    /// A request came within [`KEYFRAME_GAP`] of the last: one key frame is sent when the gap
    /// ends (by the room's clock, the mixer thread), so no receiver is left waiting for the
    /// encoder's periodic one.
    owed: bool,
}

impl Shared {
    /// A key frame in `profile` now, or when [`KEYFRAME_GAP`] since the last has passed.
    fn request_keyframe(&self, profile: usize, now: Instant) {
        {
            let mut states = lock(&self.keyframes);
            let Some(state) = states.get_mut(profile) else {
                return;
            };
            if state
                .last
                .is_some_and(|t| now.duration_since(t) < KEYFRAME_GAP)
            {
                state.owed = true;
                return;
            }
            state.last = Some(now);
            state.owed = false;
        }
        self.send_keyframe_event(profile);
    }

    /// Sends the key frames owed whose gap has passed.
    fn pay_owed_keyframes(&self, now: Instant) {
        let due: Vec<usize> = {
            let mut states = lock(&self.keyframes);
            states
                .iter_mut()
                .enumerate()
                .filter(|(_, s)| {
                    s.owed && s.last.is_none_or(|t| now.duration_since(t) >= KEYFRAME_GAP)
                })
                .map(|(i, s)| {
                    s.owed = false;
                    s.last = Some(now);
                    i
                })
                .collect()
        };
        for profile in due {
            self.send_keyframe_event(profile);
        }
    }

    fn send_keyframe_event(&self, profile: usize) {
        let event = gstreamer_video::UpstreamForceKeyUnitEvent::builder()
            .all_headers(true)
            .build();
        let pad = lock(&self.encoder_pads).get(profile).cloned().flatten();
        if let Some(pad) = pad {
            pad.send_event(event);
        }
    }

    /// Puts every tile where the layout says, and its name on it; the active speaker's is the
    /// featured one, or the shared screen while there is one.
    fn relayout(&self) {
        // Held throughout, so two relayouts (the plugin's thread, the mixer's on a speaker
        // change) leave the pads and the names of the same arrangement.
        let tiles_now = lock(&self.tiles);
        let speaker = *lock(&self.speaker);
        let screen = lock(&self.screen);
        let kind = *lock(&self.layout);
        let featured = speaker.and_then(|s| tiles_now.iter().position(|t| t.id == s));
        let (width, height) = (self.canvas.width, self.canvas.height);
        let arrangement = arrange(
            kind,
            tiles_now.len(),
            width,
            height,
            featured,
            screen.is_some(),
        );
        let places = screen
            .iter()
            .map(|(pad, label)| (pad, label.as_str(), false))
            .zip([arrangement.screen])
            .chain(
                tiles_now
                    .iter()
                    .map(|t| (&t.pad, t.label.as_str(), t.placeholder))
                    .zip(arrangement.tiles),
            );
        let mut named = Vec::new();
        for ((pad, label, centred), rect) in places {
            match rect {
                Some(r) => {
                    pad.set_property("xpos", r.x as i32);
                    pad.set_property("ypos", r.y as i32);
                    pad.set_property("width", r.w as i32);
                    pad.set_property("height", r.h as i32);
                    pad.set_property("alpha", 1.0f64);
                    named.push((label, r, centred));
                }
                None => pad.set_property("alpha", 0.0f64),
            }
        }
        // In the speaker layout a new speaker (the mixer's thread) moves two names between
        // the big size and the thumbnails': every name is rendered at both here, so that
        // relayout finds them all and renders nothing.
        let mut sizes = Vec::new();
        if kind == LayoutKind::Speaker && screen.is_none() && tiles_now.len() > 1 {
            let shapes = tiles(kind, tiles_now.len(), width, height, Some(0));
            sizes.extend(shapes.iter().take(2).flatten().map(|r| label_px(*r)));
        }
        let all: Vec<&str> = screen
            .iter()
            .map(|(_, l)| l.as_str())
            .chain(tiles_now.iter().map(|t| t.label.as_str()))
            .collect();
        self.draw_labels(&named, &all, &sizes);
    }

    /// Makes the names in `named` (text, its tile, centred) the composite's overlay; asks the
    /// label thread for every rendering missing (of those, and of every name of `all` at each
    /// of `sizes`, ahead of need), which relayouts again when it has them; forgets the names
    /// no longer in `all`. Never renders here: this runs on the plugin's and the mixer's
    /// threads.
    fn draw_labels(&self, named: &[(&str, Rect, bool)], all: &[&str], sizes: &[u32]) {
        let mut labels = lock(&self.labels);
        let mut rects = Vec::with_capacity(named.len());
        let mut jobs = Vec::new();
        for &(text, tile, centred) in named {
            let px = label_px(tile);
            match labels.lookup(text, px) {
                Lookup::Ready(Some(label)) => {
                    if let Some(at) = label_place(tile, label.width, label.height, centred) {
                        rects.push(label.at(at.x, at.y, at.w, at.h));
                    }
                }
                Lookup::Ready(None) | Lookup::Missing(false) => {}
                Lookup::Missing(true) => jobs.push((text.to_owned(), px)),
            }
        }
        for text in all {
            for &px in sizes {
                if let Lookup::Missing(true) = labels.lookup(text, px) {
                    jobs.push(((*text).to_owned(), px));
                }
            }
        }
        labels.keep_only(all);
        drop(labels);
        if !jobs.is_empty() {
            if let Some(tx) = lock(&self.label_jobs).as_ref() {
                for job in jobs {
                    let _ = tx.send(job);
                }
            }
        }
        *lock(&self.overlay) = Arc::new(rects);
    }
}

/// A room's label thread: renders the names asked for (in batches: a layout change asks for
/// several), puts them in the room's cache and relayouts so they show. Ends when the room
/// stops (its sender is dropped) or is gone.
fn label_loop(shared: Weak<Shared>, jobs: mpsc::Receiver<(String, u32)>, cpu: Arc<RoomCpu>) {
    cpu.enter_current();
    let mut renderer: Option<Result<Renderer, String>> = None;
    while let Ok(first) = jobs.recv() {
        let batch: Vec<(String, u32)> = std::iter::once(first).chain(jobs.try_iter()).collect();
        let new = renderer.is_none();
        let renderer = renderer.get_or_insert_with(Renderer::new);
        let done: Vec<_> = batch
            .into_iter()
            .map(|(text, px)| {
                let label = renderer.as_ref().ok().and_then(|r| r.render(&text, px));
                (text, px, label)
            })
            .collect();
        let Some(shared) = shared.upgrade() else {
            break;
        };
        if let (true, Err(e)) = (new, &renderer) {
            huddle_sdk::warn!(shared.host, "tiles are shown without names: {e}");
        }
        {
            let mut labels = lock(&shared.labels);
            for (text, px, label) in done {
                labels.put(text, px, label);
            }
        }
        shared.relayout();
    }
    cpu.leave_current();
}

/// One participant's pieces.
struct Leg {
    /// Their media session (the key of their routes in [`Ingress`]).
    session: u64,
    /// Their audio pipeline (decode and encode), when they have audio.
    audio: Option<gst::Pipeline>,
    audio_in: Option<gst_app::AppSrc>,
    audio_pt: u8,
    /// Their video branch in the room's pipeline: the appsrc (if they send video) and every
    /// element of the branch, in link order, and the compositor pad it feeds.
    video_in: Option<gst_app::AppSrc>,
    video_pt: u8,
    branch: Vec<gst::Element>,
    pad: Option<gst::Pad>,
}

impl Leg {
    /// Where their audio packets go, while they have audio.
    fn audio_feed(&self) -> Option<Feed> {
        self.audio_in.clone().map(|src| Feed {
            src,
            pt: self.audio_pt,
        })
    }

    /// Where their video packets go, while they send video.
    fn video_feed(&self) -> Option<Feed> {
        self.video_in.clone().map(|src| Feed {
            src,
            pt: self.video_pt,
        })
    }
}

/// A participant's media as negotiated.
#[derive(Debug, Clone)]
pub struct LegSpec {
    /// The session.
    pub session: MediaSessionId,
    /// The name on their tile.
    pub display: String,
    /// Audio stream: mid, codec, payload type.
    pub audio: Option<(String, AudioCodec, u8)>,
    /// Video stream.
    pub video: Option<VideoSpec>,
    /// The VP8 output profile their bandwidth fits (also the H.264 output's shape when they
    /// are its first receiver).
    pub profile: usize,
}

/// A participant's video stream as negotiated.
#[derive(Debug, Clone)]
pub struct VideoSpec {
    /// Its mid.
    pub mid: String,
    /// The codec the answer chose (what they send us).
    pub codec: VideoCodec,
    /// Its payload type (also the one the composite goes out on, when we send).
    pub pt: u8,
    /// Whether they send video to us.
    pub receiving: bool,
    /// Whether we send them the composite, in `codec` on this payload type.
    pub sending: bool,
}

/// A live room's pipelines and mixer.
pub struct RoomMedia {
    shared: Arc<Shared>,
    /// Where incoming RTP is routed to this room's `appsrc`s.
    ingress: Arc<Ingress>,
    video: gst::Pipeline,
    compositor: gst::Element,
    /// One encoder per output profile, in profile order.
    encoders: Vec<gst::Element>,
    /// The output profiles (the canvas's first).
    profiles: Vec<VideoProfile>,
    /// Where every output branch starts.
    tee: gst::Element,
    /// The H.264 output's branch, while an H.264 receiver is here.
    h264: Option<OutputBranch>,
    legs: BTreeMap<ParticipantId, Leg>,
    mixer: Option<thread::JoinHandle<()>>,
    /// The thread rendering names ([`label_loop`]).
    labeller: Option<thread::JoinHandle<()>>,
    /// The shared screen's input, while one is shown.
    screen: Option<ScreenInput>,
}

/// The shared screen's branch: the tapped session feeding it (routed by [`Ingress`]) and its
/// elements.
struct ScreenInput {
    session: u64,
    branch: Vec<gst::Element>,
    pad: gst::Pad,
}

/// An output branch added to a running room: its tee pad and its elements, in link order.
struct OutputBranch {
    tee_pad: gst::Pad,
    elements: Vec<gst::Element>,
}

impl std::fmt::Debug for RoomMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomMedia")
            .field("participants", &self.legs.len())
            .finish()
    }
}

impl RoomMedia {
    /// Builds and starts the room's video pipeline (canvas `profiles[0]`, one encoder per
    /// profile) and mixer thread; its participants' and screen's RTP is routed in `ingress`.
    pub fn start(
        host: &Host,
        ingress: &Arc<Ingress>,
        room: &str,
        profiles: &[VideoProfile],
        layout: LayoutKind,
    ) -> Result<RoomMedia, MediaError> {
        let canvas = *profiles
            .first()
            .ok_or_else(|| MediaError("a room needs an output profile".to_owned()))?;
        let shared = Arc::new(Shared {
            host: host.clone(),
            video_out: Mutex::new(Vec::new()),
            audio: Mutex::new(Vec::new()),
            tiles: Mutex::new(Vec::new()),
            speaker: Mutex::new(None),
            stop: AtomicBool::new(false),
            encoder_pads: Mutex::new(vec![None; profiles.len() + 1]),
            keyframes: Mutex::new(vec![KeyframeState::default(); profiles.len() + 1]),
            h264_output: profiles.len(),
            layout: Mutex::new(layout),
            canvas,
            cpu: Arc::new(RoomCpu::default()),
            screen: Mutex::new(None),
            labels: Mutex::new(LabelCache::default()),
            label_jobs: Mutex::new(None),
            overlay: Arc::default(),
        });
        let labeller = {
            let (tx, rx) = mpsc::channel();
            *lock(&shared.label_jobs) = Some(tx);
            let weak = Arc::downgrade(&shared);
            let cpu = shared.cpu.clone();
            thread::Builder::new()
                .name(format!("labels-{room}"))
                .spawn(move || label_loop(weak, rx, cpu))
                .map_err(|e| MediaError(format!("label thread: {e}")))?
        };
        let video = gst::Pipeline::with_name(&format!("room-{room}"));
        let raw_caps = raw_video_caps(&canvas);
        let background = make("videotestsrc")?;
        background.set_property("is-live", true);
        background.set_property_from_str("pattern", "black");
        // The background only sets the canvas's pace (it is live, at the canvas rate); the
        // compositor's own black fill paints. A full-canvas black frame blended under the
        // tiles cost ~0.1 core at 720p30, so it is a transparent 16x16 one.
        let bg_caps = make("capsfilter")?;
        bg_caps.set_property("caps", i420_caps(16, 16, canvas.fps as i32));
        let compositor = make("compositor")?;
        compositor.set_property_from_str("background", "black");
        // Decoders and the network are late by tens of ms; the canvas waits this much for
        // them, then goes ahead with each tile's last frame (a frozen uplink stays frozen in
        // its tile only).
        compositor.set_property("latency", 60_000_000u64);
        let out_caps = make("capsfilter")?;
        out_caps.set_property("caps", &raw_caps);
        let tee = make("tee")?;
        video.add_many([&background, &bg_caps, &compositor, &out_caps, &tee])?;
        gst::Element::link_many([&background, &bg_caps])?;
        let bg_pad = compositor
            .request_pad_simple("sink_%u")
            .ok_or_else(|| MediaError("compositor gave no sink pad".to_owned()))?;
        bg_pad.set_property("zorder", 0u32);
        // Fully transparent pads are skipped by the compositor, not blended.
        bg_pad.set_property("alpha", 0.0f64);
        bg_caps
            .static_pad("src")
            .ok_or_else(|| MediaError("capsfilter without src".to_owned()))?
            .link(&bg_pad)?;
        gst::Element::link_many([&compositor, &out_caps, &tee])?;
        blend_names(&compositor, &raw_caps, &shared.overlay)?;
        let mut encoders = Vec::with_capacity(profiles.len());
        for (index, profile) in profiles.iter().enumerate() {
            let mut branch = vec![newest_frames_queue()?];
            if index > 0 {
                branch.extend(scaler(profile)?);
            }
            let encoder = vp8_encoder(profile)?;
            encoders.push(encoder.clone());
            branch.push(encoder);
            let pay = make("rtpvp8pay")?;
            pay.set_property("mtu", 1150u32);
            pay.set_property("pt", 96u32);
            pay.set_property_from_str("picture-id-mode", "15-bit");
            branch.push(pay);
            branch.push(out_sink(&shared, SinkKind::Video(index)).upcast());
            let refs: Vec<&gst::Element> = branch.iter().collect();
            video.add_many(refs.iter().copied())?;
            gst::Element::link_many(refs.iter().copied())?;
            tee.link(&branch[0])?;
        }
        {
            let mut pads = lock(&shared.encoder_pads);
            for (slot, encoder) in pads.iter_mut().zip(&encoders) {
                *slot = encoder.static_pad("src");
            }
        }
        watch_bus(host, &video, room, &shared.cpu);
        video.set_state(gst::State::Playing)?;
        // The live pipeline reaches PLAYING asynchronously (tens of ms). A tile added and fed
        // before then (a participant's video, a tapped screen arriving with the first joiner)
        // gets timestamps from before the pipeline's base time and froze the whole canvas: so
        // the room starts only once it is playing (bounded).
        let (reached, _, _) = video.state(Some(gst::ClockTime::from_seconds(2)));
        if reached.is_err() {
            let _ = video.set_state(gst::State::Null);
            return Err(MediaError(format!(
                "room {room}: the video pipeline did not start"
            )));
        }

        let mixer = {
            let shared = shared.clone();
            thread::Builder::new()
                .name(format!("mix-{room}"))
                .spawn(move || mixer_loop(&shared))
                .map_err(|e| MediaError(format!("mixer thread: {e}")))?
        };
        Ok(RoomMedia {
            shared,
            ingress: ingress.clone(),
            video,
            compositor,
            encoders,
            profiles: profiles.to_vec(),
            tee,
            h264: None,
            legs: BTreeMap::new(),
            mixer: Some(mixer),
            labeller: Some(labeller),
            screen: None,
        })
    }

    /// Adds a participant: their audio pipeline, their tile, and them as a receiver of the
    /// composite. Returns the output they receive: their VP8 profile, or the H.264 output
    /// (built now if they are its first receiver); what [`RoomMedia::force_keyframe`] takes.
    pub fn join(&mut self, id: ParticipantId, spec: &LegSpec) -> Result<usize, MediaError> {
        let mut leg = Leg {
            session: spec.session.0,
            audio: None,
            audio_in: None,
            audio_pt: 0,
            video_in: None,
            video_pt: 0,
            branch: Vec::new(),
            pad: None,
        };
        if let Some((mid, codec, pt)) = &spec.audio {
            let (pipeline, input, encoder) =
                audio_pipeline(&self.shared, id, spec.session, mid, *codec, *pt)?;
            leg.audio = Some(pipeline);
            leg.audio_in = Some(input);
            leg.audio_pt = *pt;
            lock(&self.shared.audio).push(AudioMember {
                id,
                queue: VecDeque::with_capacity(MAX_QUEUE),
                primed: false,
                encoder: Some(encoder),
            });
        }
        let video_in = spec
            .video
            .as_ref()
            .filter(|v| v.receiving)
            .map(|v| (v.codec, v.pt));
        let mut output = spec.profile.min(self.encoders.len() - 1);
        if let Some(v) = spec.video.as_ref().filter(|v| v.sending) {
            if v.codec == VideoCodec::H264 {
                if self.h264.is_none() {
                    self.h264 = Some(self.add_h264_output(output)?);
                }
                output = self.shared.h264_output;
            }
        }
        if let Err(e) = self.add_tile(&mut leg, id, &spec.display, video_in) {
            self.drop_unused_h264_output();
            return Err(e);
        }
        if let Some(v) = spec.video.as_ref().filter(|v| v.sending) {
            lock(&self.shared.video_out).push(Receiver::new(
                spec.session,
                v.mid.clone(),
                v.pt,
                output,
            ));
        }
        // Their packets flow from here on.
        self.ingress.participant(
            leg.session,
            spec.audio
                .as_ref()
                .zip(leg.audio_feed())
                .map(|((mid, _, _), feed)| (mid.clone(), feed)),
            spec.video.as_ref().map(|v| v.mid.clone()),
            leg.video_feed(),
        );
        self.legs.insert(id, leg);
        self.shared.relayout();
        Ok(output)
    }

    /// Builds the H.264 output at the size and rate of `profile` and starts it: a new branch of
    /// the tee (see the module doc).
    fn add_h264_output(&self, profile: usize) -> Result<OutputBranch, MediaError> {
        let shape = self.profiles[profile];
        let mut elements = vec![newest_frames_queue()?];
        if profile > 0 {
            elements.extend(scaler(&shape)?);
        }
        let encoder = h264_encoder(&shape)?;
        let encoder_src = encoder
            .static_pad("src")
            .ok_or_else(|| MediaError("openh264enc without src".to_owned()))?;
        elements.push(encoder);
        let caps = make("capsfilter")?;
        caps.set_property(
            "caps",
            gst::Caps::builder("video/x-h264")
                .field("profile", "constrained-baseline")
                .field("stream-format", "byte-stream")
                .field("alignment", "au")
                .build(),
        );
        elements.push(caps);
        let pay = make("rtph264pay")?;
        pay.set_property("mtu", 1150u32);
        pay.set_property("pt", 96u32);
        // SPS and PPS before every IDR: a receiver starts from any key frame.
        pay.set_property("config-interval", -1i32);
        pay.set_property_from_str("aggregate-mode", "zero-latency");
        elements.push(pay);
        elements.push(out_sink(&self.shared, SinkKind::Video(self.shared.h264_output)).upcast());
        self.video.add_many(&elements)?;
        let linked = gst::Element::link_many(&elements)
            .map_err(MediaError::from)
            .and_then(|()| {
                let tee_pad = self
                    .tee
                    .request_pad_simple("src_%u")
                    .ok_or_else(|| MediaError("tee gave no src pad".to_owned()))?;
                let sink = elements[0]
                    .static_pad("sink")
                    .ok_or_else(|| MediaError("queue without sink".to_owned()))?;
                // Downstream first, so the branch is ready before the first frame comes.
                for e in elements.iter().rev() {
                    e.sync_state_with_parent()?;
                }
                if let Err(e) = tee_pad.link(&sink) {
                    self.tee.release_request_pad(&tee_pad);
                    return Err(e.into());
                }
                Ok(tee_pad)
            });
        let tee_pad = match linked {
            Ok(pad) => pad,
            Err(e) => {
                for el in &elements {
                    let _ = el.set_state(gst::State::Null);
                    let _ = self.video.remove(el);
                }
                return Err(e);
            }
        };
        if let Some(slot) = lock(&self.shared.encoder_pads).get_mut(self.shared.h264_output) {
            *slot = Some(encoder_src);
        }
        if let Some(state) = lock(&self.shared.keyframes).get_mut(self.shared.h264_output) {
            *state = KeyframeState::default();
        }
        Ok(OutputBranch { tee_pad, elements })
    }

    /// Removes the H.264 output when nobody receives it any more.
    fn drop_unused_h264_output(&mut self) {
        let h264 = self.shared.h264_output;
        if lock(&self.shared.video_out)
            .iter()
            .any(|r| r.profile == h264)
        {
            return;
        }
        let Some(branch) = self.h264.take() else {
            return;
        };
        if let Some(slot) = lock(&self.shared.encoder_pads).get_mut(h264) {
            *slot = None;
        }
        // Unlinked first: the tee then skips the pad (a tee only fails when every pad is
        // unlinked), and no buffer enters the branch while it stops.
        if let Some(peer) = branch.tee_pad.peer() {
            let _ = branch.tee_pad.unlink(&peer);
        }
        self.tee.release_request_pad(&branch.tee_pad);
        for e in &branch.elements {
            let _ = e.set_state(gst::State::Null);
            let _ = self.video.remove(e);
        }
    }

    /// Adds a decoding branch (ending in its leaky queue) to the running pipeline, links it to a
    /// new compositor pad above the background, and starts it; the pad is where the layout
    /// places it.
    fn attach_to_canvas(&self, branch: &[gst::Element]) -> Result<gst::Pad, MediaError> {
        self.video.add_many(branch)?;
        gst::Element::link_many(branch)?;
        let pad = self
            .compositor
            .request_pad_simple("sink_%u")
            .ok_or_else(|| MediaError("compositor gave no sink pad".to_owned()))?;
        pad.set_property("zorder", 1u32);
        branch
            .last()
            .and_then(|q| q.static_pad("src"))
            .ok_or_else(|| MediaError("queue without src".to_owned()))?
            .link(&pad)?;
        for e in branch {
            e.sync_state_with_parent()?;
        }
        Ok(pad)
    }

    /// Shows a shared screen, the tapped stream of `session` (RTP in `codec`, routed to it by
    /// [`Ingress`]), labelled `label`: the canvas switches to the presenter layout. A screen
    /// already shown is replaced.
    pub fn show_screen(
        &mut self,
        session: MediaSessionId,
        label: &str,
        codec: VideoCodec,
    ) -> Result<(), MediaError> {
        self.hide_screen();
        let caps = video_rtp_caps(codec, SCREEN_PT);
        let src = live_appsrc(&caps, 4_000_000, true);
        let [depay, decoder] = video_decoder(codec)?;
        let branch = vec![
            src.clone().upcast(),
            depay,
            decoder,
            make("videoconvert")?,
            // A frozen screen must not hold the canvas back.
            newest_frames_queue()?,
        ];
        let pad = self.attach_to_canvas(&branch)?;
        *lock(&self.shared.screen) = Some((pad.clone(), label_text(label)));
        self.ingress.screen(session.0, src);
        self.screen = Some(ScreenInput {
            session: session.0,
            branch,
            pad,
        });
        self.shared.relayout();
        // Everyone's picture changes at once: a key frame of every output.
        self.force_keyframes();
        Ok(())
    }

    /// Removes the shared screen: the room's own layout comes back.
    pub fn hide_screen(&mut self) {
        let Some(screen) = self.screen.take() else {
            return;
        };
        self.ingress.remove(screen.session);
        *lock(&self.shared.screen) = None;
        for e in &screen.branch {
            let _ = e.set_state(gst::State::Null);
        }
        self.compositor.release_request_pad(&screen.pad);
        for e in &screen.branch {
            let _ = self.video.remove(e);
        }
        self.shared.relayout();
        self.force_keyframes();
    }

    /// A key frame of every output there is.
    fn force_keyframes(&self) {
        for profile in 0..self.encoders.len() {
            self.force_keyframe(profile);
        }
        if self.h264.is_some() {
            self.force_keyframe(self.shared.h264_output);
        }
    }

    /// Whether a shared screen is shown.
    pub fn has_screen(&self) -> bool {
        self.screen.is_some()
    }

    /// The name of the layout the canvas shows now (`grid`, `speaker`, `presenter`).
    pub fn shown_layout(&self) -> &'static str {
        shown(*lock(&self.shared.layout), self.screen.is_some())
    }

    /// A tile for `id`: their decoded video (`Some((codec, pt))`) or a named placeholder.
    fn add_tile(
        &mut self,
        leg: &mut Leg,
        id: ParticipantId,
        display: &str,
        video_in: Option<(VideoCodec, u8)>,
    ) -> Result<(), MediaError> {
        let fps = self.shared.canvas.fps as i32;
        let mut branch: Vec<gst::Element> = Vec::new();
        match video_in {
            Some((codec, pt)) => {
                let src = live_appsrc(&video_rtp_caps(codec, pt), 2_000_000, true);
                leg.video_in = Some(src.clone());
                leg.video_pt = pt;
                branch.push(src.upcast());
                branch.extend(video_decoder(codec)?);
                // vp8dec gives I420, which the compositor takes as it is (a videoconvert there
                // is a pass-through per frame that raw-floor.sh does not have); H.264 may come
                // in chroma layouts or depths the compositor does not take.
                if codec != VideoCodec::Vp8 {
                    branch.push(make("videoconvert")?);
                }
            }
            None => branch.extend(placeholder(fps)?),
        }
        // Never let a slow tile hold the canvas back.
        branch.push(newest_frames_queue()?);
        let pad = self.attach_to_canvas(&branch)?;
        {
            // Tiles stay in join order (ids grow with each session), also after a swap.
            let mut tiles = lock(&self.shared.tiles);
            tiles.push(Tile {
                id,
                pad: pad.clone(),
                label: label_text(display),
                placeholder: video_in.is_none(),
            });
            tiles.sort_by_key(|t| t.id);
        }
        leg.branch = branch;
        leg.pad = Some(pad);
        Ok(())
    }

    /// Swaps a participant's tile between their video (`Some((codec, pt))`) and the named
    /// placeholder.
    pub fn set_video(
        &mut self,
        id: ParticipantId,
        display: &str,
        video_in: Option<(VideoCodec, u8)>,
    ) -> Result<(), MediaError> {
        let Some(mut leg) = self.legs.remove(&id) else {
            return Ok(());
        };
        // No packet for the old tile while it goes.
        self.ingress.set_video(leg.session, None);
        self.remove_tile(&mut leg, id);
        let added = self.add_tile(&mut leg, id, display, video_in);
        if added.is_ok() {
            self.ingress.set_video(leg.session, leg.video_feed());
        }
        self.legs.insert(id, leg);
        self.shared.relayout();
        added
    }

    fn remove_tile(&mut self, leg: &mut Leg, id: ParticipantId) {
        lock(&self.shared.tiles).retain(|t| t.id != id);
        // Upstream first: each element's streaming thread stops before the next one goes.
        for e in &leg.branch {
            let _ = e.set_state(gst::State::Null);
        }
        if let Some(pad) = leg.pad.take() {
            self.compositor.release_request_pad(&pad);
        }
        for e in leg.branch.drain(..) {
            let _ = self.video.remove(&e);
        }
        leg.video_in = None;
    }

    /// Removes a participant; their tile goes, the others move up.
    pub fn leave(&mut self, id: ParticipantId, session: MediaSessionId) {
        self.ingress.remove(session.0);
        lock(&self.shared.video_out).retain(|r| r.session != session);
        self.drop_unused_h264_output();
        lock(&self.shared.audio).retain(|m| m.id != id);
        if let Some(mut leg) = self.legs.remove(&id) {
            if let Some(p) = leg.audio.take() {
                let _ = p.set_state(gst::State::Null);
            }
            self.remove_tile(&mut leg, id);
        }
        {
            let mut speaker = lock(&self.shared.speaker);
            if *speaker == Some(id) {
                *speaker = None;
            }
        }
        self.shared.relayout();
    }

    /// A receiver of output `profile` (a VP8 profile or the H.264 output, as
    /// [`RoomMedia::join`] said) lost the picture (PLI/FIR) or just joined: a key frame in that
    /// output (receivers of other outputs are not disturbed), at most one per 500 ms
    /// (`KEYFRAME_GAP`); a request inside the gap is paid when it ends.
    pub fn force_keyframe(&self, profile: usize) {
        self.shared.request_keyframe(profile, Instant::now());
    }

    /// Moves `session` to VP8 profile `profile` (its bandwidth changed), with a key frame of
    /// the new profile so its picture starts at once. False when nothing changed; a receiver of
    /// the H.264 output stays on it.
    pub fn set_profile(&self, session: MediaSessionId, profile: usize) -> bool {
        if profile >= self.encoders.len() {
            return false;
        }
        let mut changed = false;
        let h264 = self.shared.h264_output;
        for r in lock(&self.shared.video_out)
            .iter_mut()
            .filter(|r| r.session == session && r.profile != profile && r.profile != h264)
        {
            r.profile = profile;
            r.rebase = true;
            changed = true;
        }
        if changed {
            // The new stream must start with a key frame even within the rate limit.
            if let Some(state) = lock(&self.shared.keyframes).get_mut(profile) {
                state.last = None;
            }
            self.force_keyframe(profile);
        }
        changed
    }

    /// How many VP8 output profiles (encoders) the room has.
    pub fn profiles(&self) -> usize {
        self.encoders.len()
    }

    /// How many participants have media here.
    pub fn len(&self) -> usize {
        self.legs.len()
    }

    /// True when nobody has media here.
    pub fn is_empty(&self) -> bool {
        self.legs.is_empty()
    }

    /// Switches the composite to `layout` (admin API); tiles move on the next frame.
    pub fn set_layout(&self, layout: LayoutKind) {
        *lock(&self.shared.layout) = layout;
        self.shared.relayout();
    }

    /// CPU the room's media has used so far (see [`crate::cpu`]).
    pub fn cpu_time(&self) -> Duration {
        self.shared.cpu.total()
    }

    /// The current active speaker.
    pub fn speaker(&self) -> Option<ParticipantId> {
        *lock(&self.shared.speaker)
    }
}

impl Drop for RoomMedia {
    fn drop(&mut self) {
        for leg in self.legs.values() {
            self.ingress.remove(leg.session);
        }
        if let Some(screen) = &self.screen {
            self.ingress.remove(screen.session);
        }
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(m) = self.mixer.take() {
            let _ = m.join();
        }
        // Its channel closes: the label thread ends after the batch it may be rendering.
        lock(&self.shared.label_jobs).take();
        if let Some(l) = self.labeller.take() {
            let _ = l.join();
        }
        for leg in self.legs.values() {
            if let Some(p) = &leg.audio {
                let _ = p.set_state(gst::State::Null);
            }
        }
        let _ = self.video.set_state(gst::State::Null);
    }
}

enum SinkKind {
    /// The composite in this output profile: to its receivers in `video_out`.
    Video(usize),
    /// One participant's mix.
    Audio(MediaSessionId, String, u8),
}

/// An appsink that sends the RTP packets it gets to the host.
///
/// It takes buffer lists: a payloader pushes a frame's packets as one list (`rtpvp8pay`
/// always, `rtph264pay` for a fragmented NAL unit), so a composite frame goes to all its
/// receivers in one [`Host::send_rtp_batch`] instead of one per packet. The host's media
/// thread then advances each receiver's leg once per frame rather than once per packet (a
/// timer pass of its `Rtc` per leg and batch), and gets one command per frame.
fn out_sink(shared: &Arc<Shared>, kind: SinkKind) -> gst_app::AppSink {
    let shared = shared.clone();
    gst_app::AppSink::builder()
        .sync(false)
        .max_buffers(50)
        .drop(true)
        .buffer_list(true)
        .callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let buffers: Vec<&gst::BufferRef> = match sample.buffer_list() {
                        Some(list) => list.iter().collect(),
                        None => sample.buffer().into_iter().collect(),
                    };
                    let maps: Vec<_> = buffers
                        .into_iter()
                        .filter_map(|b| b.map_readable().ok())
                        .filter(|m| m.len() >= 12)
                        .collect();
                    match &kind {
                        SinkKind::Video(profile) => {
                            send_composite(&shared, *profile, maps.iter().map(|m| m.as_slice()))
                        }
                        SinkKind::Audio(session, mid, pt) => {
                            for map in &maps {
                                let mut packet = map.as_slice().to_vec();
                                // The receiver's answer may have picked its own payload type.
                                packet[1] = (packet[1] & 0x80) | (pt & 0x7f);
                                // A full queue drops the packet, as the network would.
                                let _ = shared.host.send_rtp(*session, mid, &packet);
                            }
                        }
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        )
        .build()
}

/// Sends packets of output `profile` to every receiver of that profile, in one call:
/// renumbered (and given each receiver's payload type) under the receivers' lock, sent after
/// it. Each receiver gets the packets in the order given.
fn send_composite<'a>(shared: &Shared, profile: usize, packets: impl Iterator<Item = &'a [u8]>) {
    // Every copy back to back in one buffer; `out` says whose each is (an index into `to`)
    // and where it ends.
    let mut bytes: Vec<u8> = Vec::new();
    let mut to: Vec<(MediaSessionId, String)> = Vec::new();
    let mut out: Vec<(usize, usize)> = Vec::new();
    {
        let mut receivers = lock(&shared.video_out);
        let mut mine: Vec<&mut Receiver> = receivers
            .iter_mut()
            .filter(|r| r.profile == profile)
            .collect();
        if mine.is_empty() {
            return;
        }
        to.extend(mine.iter().map(|r| (r.session, r.mid.clone())));
        for packet in packets {
            for (i, r) in mine.iter_mut().enumerate() {
                let start = bytes.len();
                bytes.extend_from_slice(packet);
                let copy = &mut bytes[start..];
                r.renumber(copy);
                copy[1] = (copy[1] & 0x80) | (r.pt & 0x7f);
                out.push((i, bytes.len()));
            }
        }
    }
    let mut start = 0;
    let batch: Vec<OutgoingRtp<'_>> = out
        .iter()
        .map(|&(i, end)| {
            let packet = &bytes[start..end];
            start = end;
            OutgoingRtp {
                session: to[i].0,
                mid: &to[i].1,
                packet,
            }
        })
        .collect();
    // A receiver that just left is skipped by the host; a full queue drops the packets, as the
    // network would.
    let _ = shared.host.send_rtp_batch(&batch);
}

/// A participant's audio pipeline: RTP in → 48 kHz mono PCM to the mixer, and mixed PCM from
/// the mixer → RTP out. Returns the pipeline, its RTP appsrc and its PCM appsrc.
fn audio_pipeline(
    shared: &Arc<Shared>,
    id: ParticipantId,
    session: MediaSessionId,
    mid: &str,
    codec: AudioCodec,
    pt: u8,
) -> Result<(gst::Pipeline, gst_app::AppSrc, gst_app::AppSrc), MediaError> {
    let pipeline = gst::Pipeline::with_name(&format!("audio-{id}"));
    let (name, rate, depay, dec, enc, pay) = match codec {
        AudioCodec::Opus => (
            "OPUS",
            48000,
            "rtpopusdepay",
            "opusdec",
            "opusenc",
            "rtpopuspay",
        ),
        AudioCodec::Pcmu => (
            "PCMU",
            8000,
            "rtppcmudepay",
            "mulawdec",
            "mulawenc",
            "rtppcmupay",
        ),
        AudioCodec::Pcma => (
            "PCMA",
            8000,
            "rtppcmadepay",
            "alawdec",
            "alawenc",
            "rtppcmapay",
        ),
    };
    let rtp_caps = gst::Caps::builder("application/x-rtp")
        .field("media", "audio")
        .field("encoding-name", name)
        .field("clock-rate", rate)
        .field("payload", i32::from(pt))
        .build();
    let pcm = gst::Caps::builder("audio/x-raw")
        .field("format", "S16LE")
        .field("layout", "interleaved")
        .field("rate", 48000i32)
        .field("channels", 1i32)
        .build();

    // Decode branch.
    let input = live_appsrc(&rtp_caps, 200_000, true);
    let depay_e = make(depay)?;
    let dec_e = make(dec)?;
    let conv = make("audioconvert")?;
    let resample = make("audioresample")?;
    let to_pcm = make("capsfilter")?;
    to_pcm.set_property("caps", &pcm);
    let decoded = {
        let shared = shared.clone();
        gst_app::AppSink::builder()
            .sync(false)
            .caps(&pcm)
            .callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |sink| {
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        if let Some(map) = sample.buffer().and_then(|b| b.map_readable().ok()) {
                            let mut audio = lock(&shared.audio);
                            if let Some(m) = audio.iter_mut().find(|m| m.id == id) {
                                m.queue.extend(
                                    map.chunks_exact(2)
                                        .map(|b| i16::from_le_bytes([b[0], b[1]])),
                                );
                                let excess = m.queue.len().saturating_sub(MAX_QUEUE);
                                m.queue.drain(..excess);
                            }
                        }
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .build(),
            )
            .build()
    };

    // Encode branch: PCM pushed by the mixer with its own timestamps.
    let mixed = live_appsrc(&pcm, 100_000, false);
    let conv2 = make("audioconvert")?;
    let resample2 = make("audioresample")?;
    let enc_e = make(enc)?;
    if codec == AudioCodec::Opus {
        enc_e.set_property("bitrate", 32000i32);
        enc_e.set_property_from_str("frame-size", "20");
    }
    let pay_e = make(pay)?;
    pay_e.set_property("pt", u32::from(pt));
    let sink = out_sink(shared, SinkKind::Audio(session, mid.to_owned(), pt));

    pipeline.add_many([
        input.upcast_ref(),
        &depay_e,
        &dec_e,
        &conv,
        &resample,
        &to_pcm,
        decoded.upcast_ref(),
        mixed.upcast_ref(),
        &conv2,
        &resample2,
        &enc_e,
        &pay_e,
        sink.upcast_ref(),
    ])?;
    gst::Element::link_many([
        input.upcast_ref(),
        &depay_e,
        &dec_e,
        &conv,
        &resample,
        &to_pcm,
        decoded.upcast_ref(),
    ])?;
    gst::Element::link_many([
        mixed.upcast_ref(),
        &conv2,
        &resample2,
        &enc_e,
        &pay_e,
        sink.upcast_ref(),
    ])?;
    watch_bus(&shared.host, &pipeline, &format!("audio-{id}"), &shared.cpu);
    pipeline.set_state(gst::State::Playing)?;
    Ok((pipeline, input, mixed))
}

/// A live `appsrc` for what we push (RTP from the host, PCM from the mixer): at most
/// `max_bytes` wait, the oldest dropped first when a pipeline falls behind; `timestamp` stamps
/// buffers on arrival (RTP), otherwise the pusher sets them (the mixer's clock).
pub(crate) fn live_appsrc(caps: &gst::Caps, max_bytes: u64, timestamp: bool) -> gst_app::AppSrc {
    let src = gst_app::AppSrc::builder()
        .caps(caps)
        .is_live(true)
        .do_timestamp(timestamp)
        .format(gst::Format::Time)
        .max_bytes(max_bytes)
        .build();
    src.set_property_from_str("leaky-type", "downstream");
    src
}

/// Blends the room's names (`overlay`, as [`Shared::relayout`] last placed them) onto every
/// frame the compositor puts out, in its thread, before the tee hands the frame to the
/// encoders: only the labels' samples are touched, at the size the tiles are shown.
fn blend_names(
    compositor: &gst::Element,
    canvas: &gst::Caps,
    overlay: &Arc<Mutex<Arc<Vec<Stamp>>>>,
) -> Result<(), MediaError> {
    let info = gst_video::VideoInfo::from_caps(canvas)?;
    let overlay = overlay.clone();
    compositor
        .static_pad("src")
        .ok_or_else(|| MediaError("compositor without src".to_owned()))?
        .add_probe(gst::PadProbeType::BUFFER, move |_, probe| {
            let stamps = lock(&overlay).clone();
            if let (false, Some(gst::PadProbeData::Buffer(buffer))) =
                (stamps.is_empty(), probe.data.as_mut())
            {
                // The compositor's fresh frame: writable without a copy.
                let buffer = buffer.make_mut();
                if let Ok(mut frame) =
                    gst_video::VideoFrameRef::from_buffer_ref_writable(buffer, &info)
                {
                    stamp_i420(&mut frame, &stamps);
                }
            }
            gst::PadProbeReturn::Ok
        })
        .ok_or_else(|| MediaError("no probe on the compositor".to_owned()))?;
    Ok(())
}

/// A queue that keeps the newest few frames and drops older ones: what sits between the
/// canvas and anything that may be slow (a tile's decoder, an encoder).
/// A named tile's picture while there is no video (audio only, camera off): a dark solid
/// colour, live at a low rate. It reports no latency of its own: a live `videotestsrc`
/// answers one of its frames (200 ms at 5 fps), and the compositor takes its inputs' largest
/// latency into how long it waits for every canvas frame — it asks again whenever a pad is
/// released (a video mute, a leave) — so a room with a placeholder would wait a fifth of a
/// second more for each canvas frame. The canvas's wait is the pacer's and its own.
fn placeholder(fps: i32) -> Result<[gst::Element; 2], MediaError> {
    let src = make("videotestsrc")?;
    src.set_property("is-live", true);
    src.set_property_from_str("pattern", "solid-color");
    src.set_property("foreground-color", 0xff30_3040u32);
    let caps = make("capsfilter")?;
    caps.set_property("caps", i420_caps(320, 180, fps.min(5)));
    caps.static_pad("src")
        .ok_or_else(|| MediaError("capsfilter without src".to_owned()))?
        .add_probe(
            gst::PadProbeType::QUERY_UPSTREAM | gst::PadProbeType::PULL,
            |_, probe| {
                if let Some(gst::PadProbeData::Query(query)) = probe.data.as_mut() {
                    if let gst::QueryViewMut::Latency(latency) = query.view_mut() {
                        let (live, _, max) = latency.result();
                        latency.set(live, gst::ClockTime::ZERO, max);
                    }
                }
                gst::PadProbeReturn::Ok
            },
        )
        .ok_or_else(|| MediaError("no probe on the placeholder".to_owned()))?;
    Ok([src, caps])
}

fn newest_frames_queue() -> Result<gst::Element, MediaError> {
    let queue = make("queue")?;
    queue.set_property_from_str("leaky", "downstream");
    queue.set_property("max-size-buffers", 3u32);
    queue.set_property("max-size-time", 0u64);
    queue.set_property("max-size-bytes", 0u32);
    Ok(queue)
}

/// I420 caps of a profile's size and rate.
fn raw_video_caps(profile: &VideoProfile) -> gst::Caps {
    i420_caps(
        profile.width as i32,
        profile.height as i32,
        profile.fps as i32,
    )
}

/// I420 caps of `width`x`height` at `fps` frames a second.
fn i420_caps(width: i32, height: i32, fps: i32) -> gst::Caps {
    gst::Caps::builder("video/x-raw")
        .field("format", "I420")
        .field("width", width)
        .field("height", height)
        .field("framerate", gst::Fraction::new(fps, 1))
        .build()
}

/// The RTP caps of a video input in `codec` on payload type `pt`.
fn video_rtp_caps(codec: VideoCodec, pt: u8) -> gst::Caps {
    gst::Caps::builder("application/x-rtp")
        .field("media", "video")
        .field("encoding-name", codec.encoding_name())
        .field("clock-rate", 90000i32)
        .field("payload", i32::from(pt))
        .build()
}

/// The depayloader and decoder of a video input (see the module doc for the H.264 choice).
fn video_decoder(codec: VideoCodec) -> Result<[gst::Element; 2], MediaError> {
    Ok(match codec {
        VideoCodec::Vp8 => [make("rtpvp8depay")?, make("vp8dec")?],
        VideoCodec::H264 => {
            let decoder = make("avdec_h264")?;
            decoder.set_property("max-threads", 1i32);
            [make("rtph264depay")?, decoder]
        }
    })
}

/// What turns the canvas into a lower profile: drop frames first, so the scaler works at the
/// profile's rate, then scale.
fn scaler(profile: &VideoProfile) -> Result<[gst::Element; 3], MediaError> {
    let caps = make("capsfilter")?;
    caps.set_property("caps", raw_video_caps(profile));
    Ok([make("videorate")?, make("videoscale")?, caps])
}

/// The H.264 encoder of the H.264 output: openh264 at its fastest, bitrate rate control, no
/// frame skipping (the canvas's rate is the receivers' frame rate), one slice per frame.
fn h264_encoder(profile: &VideoProfile) -> Result<gst::Element, MediaError> {
    let encoder = make("openh264enc")?;
    encoder.set_property("bitrate", profile.bitrate_kbps * 1000);
    encoder.set_property_from_str("rate-control", "bitrate");
    encoder.set_property_from_str("complexity", "low");
    encoder.set_property("enable-frame-skip", false);
    encoder.set_property(
        "gop-size",
        profile.fps.saturating_mul(profile.keyframe_interval_secs),
    );
    encoder.set_property("multi-thread", 1u32);
    Ok(encoder)
}

/// A VP8 encoder for a profile: real-time, fixed speed, constant bitrate, no look-ahead.
fn vp8_encoder(profile: &VideoProfile) -> Result<gst::Element, MediaError> {
    let encoder = make("vp8enc")?;
    encoder.set_property("deadline", 1i64);
    // A fixed (negative) speed: positive values are adaptive and take whatever CPU is idle.
    encoder.set_property("cpu-used", -8i32);
    encoder.set_property_from_str("end-usage", "cbr");
    encoder.set_property("target-bitrate", (profile.bitrate_kbps * 1000) as i32);
    let interval = profile.fps.saturating_mul(profile.keyframe_interval_secs);
    encoder.set_property(
        "keyframe-max-dist",
        i32::try_from(interval).unwrap_or(i32::MAX),
    );
    encoder.set_property("lag-in-frames", 0i32);
    // One thread: libvpx's VP8 worker threads spin while they wait for each other, so on a
    // busy machine `threads = 2` cost 2-3x the CPU of one thread and the canvas lost frames
    // (gst-launch, 10 s of 720p30 plus a 360p15 branch: 2.8 s of CPU with one thread, 7.9 s
    // with two); one thread encodes a 720p30 canvas in about a fifth of a core.
    encoder.set_property("threads", 1i32);
    Ok(encoder)
}

/// Logs errors and warnings a pipeline posts, through the server's log, and charges the room
/// for its streaming threads (they post `ENTER`/`LEAVE` themselves, so the sync handler runs on
/// the thread concerned).
fn watch_bus(host: &Host, pipeline: &gst::Pipeline, what: &str, cpu: &Arc<RoomCpu>) {
    let Some(bus) = pipeline.bus() else {
        return;
    };
    let host = host.clone();
    let what = what.to_owned();
    let cpu = cpu.clone();
    bus.set_sync_handler(move |_, msg| {
        match msg.view() {
            gst::MessageView::StreamStatus(status) => match status.get().0 {
                gst::StreamStatusType::Enter => cpu.enter_current(),
                gst::StreamStatusType::Leave => cpu.leave_current(),
                _ => {}
            },
            gst::MessageView::Error(e) => huddle_sdk::warn!(
                host,
                "{what}: GStreamer error from {}: {} ({:?})",
                e.src()
                    .map(|s| s.path_string().to_string())
                    .unwrap_or_default(),
                e.error(),
                e.debug()
            ),
            gst::MessageView::Warning(w) => huddle_sdk::debug!(
                host,
                "{what}: GStreamer warning: {} ({:?})",
                w.error(),
                w.debug()
            ),
            _ => {}
        }
        gst::BusSyncReply::Drop
    });
}

/// The room's audio clock: every 20 ms, one frame from every primed input, N−1 mixes out,
/// levels into the speaker detector.
fn mixer_loop(shared: &Shared) {
    shared.cpu.enter_current();
    let period = Duration::from_millis(20);
    let mut next = Instant::now() + period;
    let mut tick: u64 = 0;
    let mut detector = SpeakerDetector::new(15);
    let mut ids: Vec<ParticipantId> = Vec::new();
    let mut frames: Vec<Vec<i16>> = Vec::new();
    let mut outs: Vec<Vec<i16>> = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        }
        next += period;
        // After a stall (machine overloaded), catch up on the clock without a burst.
        if Instant::now() > next + period * 5 {
            next = Instant::now() + period;
        }
        tick += 1;
        shared.pay_owed_keyframes(Instant::now());
        let mut audio = lock(&shared.audio);
        // The detector indexes by position: rebuild it when the membership changes.
        let now_ids: Vec<ParticipantId> = audio.iter().map(|m| m.id).collect();
        if now_ids != ids {
            detector = SpeakerDetector::new(15);
            ids = now_ids;
        }
        frames.resize_with(audio.len(), Vec::new);
        let mut levels = Vec::with_capacity(audio.len());
        let mut have = Vec::with_capacity(audio.len());
        for (m, f) in audio.iter_mut().zip(frames.iter_mut()) {
            f.clear();
            if !m.primed && m.queue.len() >= PRIME {
                m.primed = true;
            }
            if m.primed && m.queue.len() >= FRAME {
                f.extend(m.queue.drain(..FRAME));
                levels.push(level_dbov(f));
                have.push(true);
            } else {
                // Ran dry: wait for the jitter margin again before playing them.
                m.primed = false;
                levels.push(-127.0);
                have.push(false);
            }
        }
        let inputs: Vec<Option<&[i16]>> = frames
            .iter()
            .zip(&have)
            .map(|(f, h)| h.then_some(f.as_slice()))
            .collect();
        mix_minus(&inputs, &mut outs);
        let pts = gst::ClockTime::from_mseconds(tick * 20);
        for (m, out) in audio.iter().zip(&outs) {
            if let Some(enc) = &m.encoder {
                let bytes: Vec<u8> = out.iter().flat_map(|s| s.to_le_bytes()).collect();
                let mut buffer = gst::Buffer::from_mut_slice(bytes);
                if let Some(b) = buffer.get_mut() {
                    b.set_pts(pts);
                    b.set_duration(gst::ClockTime::from_mseconds(20));
                }
                let _ = enc.push_buffer(buffer);
            }
        }
        let speaker = detector.update(&levels).and_then(|i| ids.get(i).copied());
        drop(audio);
        let changed = {
            let mut current = lock(&shared.speaker);
            let changed = speaker.is_some() && *current != speaker;
            if changed {
                *current = speaker;
            }
            changed
        };
        if changed && *lock(&shared.layout) == LayoutKind::Speaker {
            shared.relayout();
        }
    }
    shared.cpu.leave_current();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the placeholder tells the compositor about its latency once playing: live, with no
    /// minimum of its own (a live 5 fps `videotestsrc` alone would say 200 ms).
    #[test]
    fn a_placeholder_reports_no_latency() {
        gst::init().unwrap();
        let pipeline = gst::Pipeline::new();
        let [src, caps] = placeholder(30).unwrap();
        let sink = make("fakesink").unwrap();
        pipeline.add_many([&src, &caps, &sink]).unwrap();
        gst::Element::link_many([&src, &caps, &sink]).unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let (reached, _, _) = pipeline.state(Some(gst::ClockTime::from_seconds(5)));
        assert!(reached.is_ok(), "the placeholder plays");
        let mut query = gst::query::Latency::new();
        assert!(sink.static_pad("sink").unwrap().peer_query(&mut query));
        let (live, min, _) = query.result();
        pipeline.set_state(gst::State::Null).unwrap();
        assert!(live, "a placeholder is a live source");
        assert_eq!(
            min,
            gst::ClockTime::ZERO,
            "the placeholder's own frame is not reported"
        );
    }
}
