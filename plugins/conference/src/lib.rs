//! `conference`: Huddle's video group chat, an MCU.
//!
//! Call `sip:<room>@<domain>` (SIPml5 `call-audiovideo`, JsSIP, SIP.js, a SIP phone) and you
//! receive one audio stream — everyone but yourself — and one composited video of the room:
//! the only way a single-stream client sees a group.
//!
//! * [`room`]: which rooms exist (configured, or on demand under a prefix), PINs (`;pin=` in
//!   the Request-URI or a `TP-BridgePin` header → 403 when wrong or missing), seats, members
//!   versus guests (public rooms admit callers who did not log in, under their display name).
//! * [`sdp`]: the offer narrowed to what the mixer decodes (Opus/PCMU/PCMA; VP8, or H.264
//!   when VP8 is not offered) before the host's media engine answers it. The composite goes out
//!   as VP8 only, so a caller offering H.264 but not VP8 (packetization-mode=1, Baseline or
//!   Constrained Baseline) is answered receive-only on video: their picture is mixed, but they
//!   see no composite (an answer listing H.264 alone leaves no codec we can send on that
//!   m-line). Whenever VP8 is offered, VP8 alone is answered, whatever the offer's order.
//! * [`media`]: GStreamer pipelines (decode, composite, encode once per room) and the mixer
//!   thread; [`mix`] and [`layout`] are its pure parts, [`labels`] renders the tiles' names
//!   (drawn on the canvas, at each tile's displayed size). [`ingress`] routes incoming RTP to the
//!   pipelines' `appsrc`s: registered as the plugin's RTP sink (ABI 1.7), it runs on the host's
//!   media thread, so a packet reaches its decoder without a hop through the plugin's thread
//!   (on older hosts `incoming_rtp` feeds it the same way).
//! * [`events`]: RFC 4575 conference-info for `SUBSCRIBE Event: conference` to a room, and the
//!   room record in the store (`plugin/conference/rooms/<room>`, plus
//!   `plugin/conference/in-meeting/<user>` per member) so presence can show "in a meeting".
//! * [`screens`]: the screen-share relay's presentation records, watched in its namespace
//!   (`screenshare_namespace`); while a room's screen is shared the mixer taps the presenter's
//!   stream through the host (`Host::tap_stream`) and the composite shows the presenter layout
//!   (the screen big, participants as thumbnails), back to the room's own when it ends. The
//!   room record says which layout is shown (`"layout"`).
//! * [`present`]: a participant's second, video-only call to the room URI (SIPml5's
//!   `call-screenshare` to the room) becomes the room's presentation: when the relay publishes
//!   its screen URIs (`about` in `screenshare_namespace`) the INVITE is retargeted there
//!   (`Host::retarget`, ABI 1.4) and the relay admits it as it admits any presenter. A
//!   video-only call from someone not in the room, or with no relay, joins as a participant.
//!
//! The SIP side follows `plugins/echo` (the template): the host answers SDP, adds ICE/DTLS, and
//! Record-Routes; our 200 carries the room URI as Contact so in-dialog requests come back here.
//! Callbacks run one at a time on the plugin's thread; media threads (GStreamer's, the
//! mixer's, the host's delivering RTP) only touch what `media.rs` and `ingress.rs` share with
//! them.

pub mod admin;
pub mod cpu;
pub mod events;
pub mod ingress;
pub mod labels;
pub mod layout;
pub mod media;
pub mod mix;
pub mod present;
pub mod room;
pub mod screens;
pub mod sdp;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use huddle_sdk::dialog::{self, UasDialog};
use huddle_sdk::{
    Capabilities, Claim, Claims, Config, Error, HangupReason, HeaderName, Host, MediaSessionId,
    Method, Plugin, Request, RequestId, Response, Result, StoreChange, TimerId, WatchId,
};

use ingress::Ingress;
use media::{LegSpec, RoomMedia, VideoSpec};
use room::{Caller, RoomSettings, Rooms};
use sdp::Kind;

/// The plugin's configuration (`[plugins.config]`).
#[derive(Debug, huddle_sdk::serde::Deserialize)]
#[serde(crate = "huddle_sdk::serde", default, deny_unknown_fields)]
pub struct ConferenceConfig {
    /// Configured rooms (`[[plugins.config.rooms]]`).
    pub rooms: Vec<RoomSettings>,
    /// Names starting with this make a room on demand (`""`: off). Default `room-`.
    pub on_demand_prefix: String,
    /// Settings of on-demand rooms (`[plugins.config.on_demand]`; its `name` is ignored).
    pub on_demand: RoomSettings,
    /// Longest conference subscription granted, seconds (60..=86400).
    pub max_subscription_secs: u32,
    /// Most conference subscriptions at once (1..=10000); more → 503.
    pub max_subscriptions: usize,
    /// How often each live room's `stats/<room>` record (mixer CPU) is rewritten, seconds
    /// (1..=3600).
    pub stats_interval_secs: u64,
    /// Where the screen-share relay keeps its presentation records (`plugin/<its instance
    /// name>`), followed for the presenter layout; `""`: no presenter layout.
    pub screenshare_namespace: String,
}

impl Default for ConferenceConfig {
    fn default() -> Self {
        ConferenceConfig {
            rooms: Vec::new(),
            on_demand_prefix: "room-".to_owned(),
            on_demand: RoomSettings::default(),
            max_subscription_secs: 3600,
            max_subscriptions: 1000,
            stats_interval_secs: 10,
            screenshare_namespace: "plugin/screenshare".to_owned(),
        }
    }
}

/// One participant's dialog.
#[derive(Debug)]
struct Call {
    session: MediaSessionId,
    room: String,
    entity: Option<String>,
    /// The dialog; its local URI (the room's) is our Contact.
    dialog: UasDialog,
    video_mid: Option<String>,
    video_in: bool,
    display: String,
    /// The output profile they receive, and since when (switches are spaced out).
    profile: usize,
    profile_since: Instant,
}

/// The shortest time between two profile switches of one receiver: each costs a key frame.
const PROFILE_SWITCH_GAP: Duration = Duration::from_secs(5);

/// One `Event: conference` subscription.
#[derive(Debug)]
struct Subscription {
    room: String,
    domain: String,
    /// The subscription's dialog; its local URI is the room's.
    dialog: UasDialog,
    version: u32,
    expires_at: Instant,
}

/// The plugin instance.
#[derive(Debug)]
pub struct Conference {
    rooms: Rooms,
    media: HashMap<String, RoomMedia>,
    /// Incoming RTP's routes into the rooms' pipelines (the RTP sink, where the host takes
    /// one).
    ingress: Arc<Ingress>,
    calls: HashMap<String, Call>,
    by_session: HashMap<MediaSessionId, String>,
    subs: HashMap<String, Subscription>,
    notifies: HashMap<RequestId, String>,
    max_sub: u32,
    max_subs: usize,
    admin: admin::AdminState,
    stats_interval: Duration,
    /// Armed while a room is live.
    stats_timer: Option<TimerId>,
    /// Screens shared in rooms, from the relay's records.
    screens: screens::Screens,
    /// The relay's namespace and our watch on its presentations (`None`: not followed).
    screens_ns: String,
    screens_watch: Option<WatchId>,
}

/// The token of the room-statistics timer (the only timer this plugin sets).
const STATS_TIMER: u64 = 1;

impl Plugin for Conference {
    fn init(host: &Host, config: &Config, claims: &mut Claims) -> Result<Self> {
        let config: ConferenceConfig = config.parse()?;
        let invalid = |msg: String| {
            huddle_sdk::warn!(host, "bad configuration: {msg}");
            Error::InvalidArgument
        };
        let rooms = Rooms::new(config.rooms, &config.on_demand_prefix, config.on_demand)
            .map_err(invalid)?;
        if !(60..=86400).contains(&config.max_subscription_secs)
            || !(1..=10000).contains(&config.max_subscriptions)
        {
            return Err(invalid(
                "max_subscription_secs must be 60..=86400 and max_subscriptions 1..=10000"
                    .to_owned(),
            ));
        }
        if !(1..=3600).contains(&config.stats_interval_secs) {
            return Err(invalid("stats_interval_secs must be 1..=3600".to_owned()));
        }
        gstreamer::init().map_err(|e| invalid(format!("GStreamer: {e}")))?;
        // Public rooms' INVITEs and SUBSCRIBEs are open to guests: the host hands them over
        // without challenging a caller who did not log in, and `Rooms::check` admits such a
        // caller (no authenticated user) only to public rooms. Members-only rooms keep the
        // host's 407 for local callers.
        let users = rooms.user_patterns();
        let open = |claim: Claim, public: bool| {
            if public {
                claim.open_to_guests()
            } else {
                claim
            }
        };
        for (user, public) in &users {
            claims.add(open(Claim::method("INVITE").with_user(user), *public));
            claims.add(Claim::method("BYE").with_user(user));
            claims.add(open(
                Claim::method("SUBSCRIBE")
                    .with_event("conference")
                    .with_user(user),
                *public,
            ));
        }
        let names: Vec<String> = users
            .iter()
            .map(|(u, public)| format!("{u}{}", if *public { " (public)" } else { "" }))
            .collect();
        huddle_sdk::info!(host, "conference rooms: {}", names.join(", "));
        let ns = config
            .screenshare_namespace
            .trim_end_matches('/')
            .to_owned();
        if !ns.is_empty() && !ns.starts_with("plugin/") {
            return Err(invalid(format!(
                "screenshare_namespace {ns:?} must be plugin/<the relay's instance name>, or \"\""
            )));
        }
        let screens_watch = if ns.is_empty() {
            None
        } else {
            match host.namespace(&ns).watch(screens::PRESENTATIONS.as_bytes()) {
                Ok(w) => Some(w),
                Err(e) => {
                    huddle_sdk::warn!(
                        host,
                        "cannot watch {ns}/{}: {e}; no presenter layout",
                        screens::PRESENTATIONS
                    );
                    None
                }
            }
        };
        // Incoming RTP goes from the host's media thread straight into the pipelines; a host
        // before ABI 1.7 delivers it to `incoming_rtp`, which feeds the same routes.
        let ingress = Arc::new(Ingress::default());
        match host.set_rtp_sink(Some(ingress.clone())) {
            Ok(()) => huddle_sdk::debug!(host, "incoming RTP is routed on the media thread"),
            Err(e) => huddle_sdk::debug!(host, "no RTP sink ({e}): incoming_rtp routes it"),
        }
        let mut conference = Conference {
            rooms,
            media: HashMap::new(),
            ingress,
            calls: HashMap::new(),
            by_session: HashMap::new(),
            subs: HashMap::new(),
            notifies: HashMap::new(),
            max_sub: config.max_subscription_secs,
            max_subs: config.max_subscriptions,
            admin: admin::AdminState::default(),
            stats_interval: Duration::from_secs(config.stats_interval_secs),
            stats_timer: None,
            screens: screens::Screens::default(),
            screens_ns: ns,
            screens_watch,
        };
        if conference.screens_watch.is_some() {
            conference.rescan_screens(host);
        }
        Ok(conference)
    }

    fn on_store_change(&mut self, host: &Host, change: StoreChange) -> Result<()> {
        if Some(change.watch()) != self.screens_watch {
            return Ok(());
        }
        match change {
            StoreChange::Put { key, value, .. } => match screens::parse(&key, &value) {
                Some((room, Ok(screen))) => {
                    let changes = self.screens.set(&room, Some(screen));
                    self.apply_screens(host, changes);
                }
                Some((room, Err(why))) => {
                    huddle_sdk::warn!(
                        host,
                        "room {room}: the shared screen cannot be shown ({why:?})"
                    );
                    let changes = self.screens.set(&room, None);
                    self.apply_screens(host, changes);
                }
                None => {}
            },
            StoreChange::Delete { key, .. } => {
                if let Some(room) = screens::room_of(&key) {
                    let changes = self.screens.set(room, None);
                    self.apply_screens(host, changes);
                }
            }
            // Changes were lost: read every record again.
            StoreChange::Lagged { .. } => self.rescan_screens(host),
        }
        Ok(())
    }

    fn handle_request(&mut self, host: &Host, request: Request) -> Result<()> {
        let call_id = request.message().call_id().unwrap_or_default().to_owned();
        match request.method() {
            Method::Invite => self.invite(host, request, call_id),
            Method::Bye => match self.calls.remove(&call_id) {
                Some(call) => {
                    host.reply(&request, 200, "OK")?;
                    self.by_session.remove(&call.session);
                    let _ = host.close_media(call.session);
                    self.left(host, call);
                    Ok(())
                }
                None => host.reply(&request, 481, "Call/Transaction Does Not Exist"),
            },
            Method::Subscribe => self.subscribe(host, request, call_id),
            Method::Ack | Method::Cancel => Ok(()),
            _ => host.reply(&request, 405, "Method Not Allowed"),
        }
    }

    fn handle_response(&mut self, host: &Host, response: Response) -> Result<()> {
        if !response.is_final() {
            return Ok(());
        }
        if let Some(call_id) = self.notifies.remove(&response.request_id()) {
            // The subscriber is gone (481) or unreachable: stop notifying it (RFC 6665 §4.2.2).
            if matches!(response.status(), 404 | 408 | 480 | 481 | 489 | 500..=599) {
                huddle_sdk::debug!(
                    host,
                    "subscription {call_id} ended by {}",
                    response.status()
                );
                self.subs.remove(&call_id);
            }
        }
        Ok(())
    }

    fn on_timer(&mut self, host: &Host, _timer: TimerId, token: u64) -> Result<()> {
        if token == STATS_TIMER {
            self.stats_timer = None;
            for (room, media) in &self.media {
                let _ = host.store().put(
                    format!("stats/{room}").as_bytes(),
                    events::stats_record(room, media.cpu_time()).as_bytes(),
                );
            }
            self.arm_stats(host);
        }
        Ok(())
    }

    fn media_ready(&mut self, host: &Host, session: MediaSessionId) -> Result<()> {
        let Some(call) = self
            .by_session
            .get(&session)
            .and_then(|c| self.calls.get(c))
        else {
            return Ok(());
        };
        // A key frame from the newcomer for their tile, and one of the composite for them.
        if let (Some(mid), true) = (&call.video_mid, call.video_in) {
            let _ = host.request_keyframe(session, mid);
        }
        if let Some(m) = self.media.get(&call.room) {
            m.force_keyframe(call.profile);
        }
        Ok(())
    }

    fn incoming_rtp(
        &mut self,
        _host: &Host,
        session: MediaSessionId,
        mid: &str,
        packet: &[u8],
    ) -> Result<()> {
        // Only on hosts without RTP sinks (ABI 1.7): the same routes as the sink's.
        self.ingress.deliver(session.0, mid, packet);
        Ok(())
    }

    fn incoming_rtcp(
        &mut self,
        _host: &Host,
        session: MediaSessionId,
        packet: &[u8],
    ) -> Result<()> {
        // A key-frame request for what we send: the composite, in this receiver's profile.
        if !huddle_sdk::rtcp::asks_for_keyframe(packet) {
            return Ok(());
        }
        if let Some(call) = self
            .by_session
            .get(&session)
            .and_then(|c| self.calls.get(c))
        {
            if let Some(m) = self.media.get(&call.room) {
                m.force_keyframe(call.profile);
            }
        }
        Ok(())
    }

    fn media_bitrate(&mut self, host: &Host, session: MediaSessionId, bps: u64) -> Result<()> {
        let Some(call) = self
            .by_session
            .get(&session)
            .and_then(|c| self.calls.get_mut(c))
        else {
            return Ok(());
        };
        let (Some(m), Some(settings)) = (
            self.media.get(&call.room),
            self.rooms.get(&call.room).map(|r| &r.settings),
        ) else {
            return Ok(());
        };
        if m.profiles() < 2 || call.profile_since.elapsed() < PROFILE_SWITCH_GAP {
            return Ok(());
        }
        let kbps = u32::try_from(bps / 1000).unwrap_or(u32::MAX);
        let wanted = room::profile_for(&settings.profiles(), Some(kbps), Some(call.profile));
        if wanted != call.profile && m.set_profile(session, wanted) {
            huddle_sdk::debug!(
                host,
                "{} in room {}: profile {} -> {wanted} ({kbps} kbit/s)",
                call.display,
                call.room,
                call.profile
            );
            call.profile = wanted;
            call.profile_since = Instant::now();
        }
        Ok(())
    }

    fn media_hangup(
        &mut self,
        host: &Host,
        session: MediaSessionId,
        reason: HangupReason,
    ) -> Result<()> {
        let Some(call_id) = self.by_session.remove(&session) else {
            return Ok(());
        };
        let Some(mut call) = self.calls.remove(&call_id) else {
            return Ok(());
        };
        huddle_sdk::info!(
            host,
            "call {call_id}: media ended ({reason:?}); sending BYE"
        );
        let sent = call.dialog.send_bye(host);
        self.left(host, call);
        sent
    }

    fn admin_request(&mut self, host: &Host, request: &str) -> Result<String> {
        admin::handle(self, host, request)
    }

    fn shutdown(&mut self, host: &Host) {
        // No tapped screen's packets for an instance that is going.
        for (_, screen) in self.screens.all() {
            let _ = host.tap_stream(screen.session, &screen.mid, false);
        }
        // Stops every pipeline and mixer thread (RoomMedia's Drop).
        self.media.clear();
    }
}

impl Conference {
    fn invite(&mut self, host: &Host, request: Request, call_id: String) -> Result<()> {
        if dialog::is_in_dialog(&request) {
            return self.reinvite(host, request, &call_id);
        }
        if self.calls.contains_key(&call_id) {
            // A retransmission the host did not absorb, or a forked copy: already answered.
            return Ok(());
        }
        let Some(room) = request.uri_user().map(str::to_owned) else {
            return host.reply(&request, 404, "Not Found - No Such Room");
        };
        let from = request
            .message()
            .header(&HeaderName::From)
            .unwrap_or_default()
            .to_owned();
        let caller = Caller {
            member: request.info().auth_user.clone(),
            display: room::display_name_of(&from),
            pin: room::pin_of(
                request.uri(),
                request
                    .header("TP-BridgePin")
                    .or_else(|| request.header("X-Pin")),
            ),
        };
        // Before the room's own checks: a presenter already has a seat (and passed the PIN).
        if let Some(screen) = self.screen_share_target(host, &request, &room, &caller) {
            let txn = request.transaction().ok_or(Error::UnknownTransaction)?;
            match host.retarget(txn, &screen) {
                Ok(()) => {
                    huddle_sdk::info!(
                        host,
                        "{} shares a screen in room {room}: handed to {screen}",
                        caller.display
                    );
                    return Ok(());
                }
                // A host before ABI 1.4: the call joins as it did before.
                Err(e) => huddle_sdk::warn!(
                    host,
                    "room {room}: cannot hand {}'s screen to {screen}: {e}; joining it",
                    caller.display
                ),
            }
        }
        if let Err(refusal) = self.rooms.check(&room, &caller) {
            let (status, reason) = refusal.status();
            huddle_sdk::info!(
                host,
                "{} refused from room {room}: {reason}",
                caller.display
            );
            return host.reply(&request, status, reason);
        }
        if self.admin.is_locked(&room) {
            let (status, reason) = admin::LOCKED;
            return host.reply(&request, status, reason);
        }
        if request.body().is_empty() {
            return host.reply(&request, 488, "Not Acceptable Here - SDP Offer Required");
        }
        let offer = sdp::narrow_offer(&String::from_utf8_lossy(request.body()));
        let offered_kbps = sdp::video_bandwidth_kbps(&offer);
        let (session, answer) = match host.media_answer(None, offer.as_bytes()) {
            Ok(a) => a,
            Err(e) => return dialog::refuse_offer(host, &request, e),
        };
        let streams = sdp::answer_streams(&String::from_utf8_lossy(&answer));
        let audio = streams.iter().find(|s| matches!(s.kind, Kind::Audio(_)));
        let video = streams.iter().find(|s| matches!(s.kind, Kind::Video(_)));
        if audio.is_none() && video.is_none() {
            let _ = host.close_media(session);
            return host.reply(&request, 488, "Not Acceptable Here - No Mixable Codec");
        }
        let sends_audio = audio.is_some_and(|a| a.receiving);
        let sends_video = video.is_some_and(|v| v.receiving);
        let started = match self
            .rooms
            .join(&room, session.0, &caller, sends_audio, sends_video)
        {
            Ok(started) => started,
            Err(refusal) => {
                let _ = host.close_media(session);
                let (status, reason) = refusal.status();
                return host.reply(&request, status, reason);
            }
        };
        if started {
            let settings = self.rooms.get(&room).map(|r| r.settings.clone());
            if let Some(s) = settings {
                match RoomMedia::start(host, &self.ingress, &room, &s.profiles(), s.layout) {
                    Ok(m) => {
                        self.media.insert(room.clone(), m);
                        self.arm_stats(host);
                        if let Some(screen) = self.screens.get(&room).cloned() {
                            self.show_screen(host, &room, &screen);
                        }
                    }
                    Err(e) => {
                        huddle_sdk::error!(host, "room {room}: mixer did not start: {}", e.0);
                        self.rooms.leave(&room, session.0);
                        let _ = host.close_media(session);
                        return host.reply(&request, 500, "Server Internal Error - Mixer Failed");
                    }
                }
            }
        }
        let profile = self.rooms.get(&room).map_or(0, |r| {
            room::profile_for(&r.settings.profiles(), offered_kbps, None)
        });
        let spec = LegSpec {
            session,
            profile,
            display: caller.display.clone(),
            audio: audio.and_then(|a| match a.kind {
                Kind::Audio(codec) => Some((a.mid.clone(), codec, a.pt)),
                Kind::Video(_) => None,
            }),
            video: video.and_then(|v| match v.kind {
                Kind::Video(codec) => Some(VideoSpec {
                    mid: v.mid.clone(),
                    codec,
                    pt: v.pt,
                    receiving: v.receiving,
                    sending: v.sending,
                }),
                Kind::Audio(_) => None,
            }),
        };
        let joined = self
            .media
            .get_mut(&room)
            .map(|m| m.join(session.0, &spec))
            .unwrap_or_else(|| Err(media::MediaError("room has no mixer".to_owned())));
        // The output they receive: their VP8 profile, or the room's H.264 output.
        let profile = match joined {
            Ok(output) => output,
            Err(e) => {
                huddle_sdk::error!(
                    host,
                    "room {room}: could not add {}: {}",
                    caller.display,
                    e.0
                );
                self.drop_participant(&room, session);
                let _ = host.close_media(session);
                return host.reply(&request, 500, "Server Internal Error - Mixer Failed");
            }
        };

        let call_dialog = UasDialog::accept(&request);
        let response = request
            .response(200, "OK")
            .header("Contact", &format!("<{}>;isfocus", call_dialog.local_uri))
            .header("Allow", "INVITE, ACK, BYE, CANCEL, SUBSCRIBE")
            .body("application/sdp", &answer)
            .build();
        host.respond(
            request.transaction().ok_or(Error::UnknownTransaction)?,
            &response,
        )?;
        huddle_sdk::info!(host, "{} joined room {room}", caller.display);
        let call = Call {
            session,
            room: room.clone(),
            entity: caller.member.clone(),
            dialog: call_dialog,
            video_mid: spec.video.as_ref().map(|v| v.mid.clone()),
            video_in: sends_video,
            display: caller.display.clone(),
            profile,
            profile_since: Instant::now(),
        };
        self.by_session.insert(session, call_id.clone());
        self.calls.insert(call_id, call);
        self.room_changed(host, &room);
        admin::joined(self, host, &room, session.0, started);
        Ok(())
    }

    /// Where a new INVITE to `room` goes instead of joining it: the relay's screen URI for a
    /// video-only offer from someone in the room, when the relay runs ([`present`]).
    fn screen_share_target(
        &self,
        host: &Host,
        request: &Request,
        room: &str,
        caller: &Caller,
    ) -> Option<String> {
        if self.screens_ns.is_empty() {
            return None;
        }
        let offer = String::from_utf8_lossy(request.body());
        // Cheap tests first: most INVITEs carry audio and never read the relay's record.
        if !present::shares_video_only(&offer) {
            return None;
        }
        let about = host
            .namespace(&self.screens_ns)
            .get(present::ABOUT.as_bytes())
            .ok()
            .flatten()?;
        let relay = present::Relay::parse(&about);
        let who = present::Who {
            member: caller.member.as_deref(),
            display: &caller.display,
        };
        let in_room = self
            .calls
            .values()
            .filter(|c| c.room == room)
            .map(|c| present::Who {
                member: c.entity.as_deref(),
                display: &c.display,
            });
        present::target(relay.as_ref(), &offer, &who, in_room, room, request.uri())
    }

    /// A re-INVITE (hold, resume, ICE restart): renegotiated on the same session. The mixer keeps
    /// its tile as it is; a held participant's tile freezes and their mix keeps flowing.
    fn reinvite(&mut self, host: &Host, request: Request, call_id: &str) -> Result<()> {
        let Some(call) = self.calls.get(call_id) else {
            return host.reply(&request, 481, "Call/Transaction Does Not Exist");
        };
        if request.body().is_empty() {
            return host.reply(&request, 488, "Not Acceptable Here - SDP Offer Required");
        }
        let offer = sdp::narrow_offer(&String::from_utf8_lossy(request.body()));
        let answer = match host.media_answer(Some(call.session), offer.as_bytes()) {
            Ok((_, a)) => a,
            Err(e) => return dialog::refuse_offer(host, &request, e),
        };
        let response = request
            .response(200, "OK")
            .header("Contact", &format!("<{}>;isfocus", call.dialog.local_uri))
            .body("application/sdp", &answer)
            .build();
        host.respond(
            request.transaction().ok_or(Error::UnknownTransaction)?,
            &response,
        )?;
        // Video stopped (a=recvonly/inactive: camera off) or started again: swap their tile
        // between the decoded picture and the named placeholder, and tell subscribers.
        let streams = sdp::answer_streams(&String::from_utf8_lossy(&answer));
        let video = streams.iter().find(|s| {
            matches!(s.kind, Kind::Video(_)) && call.video_mid.as_deref() == Some(s.mid.as_str())
        });
        let audio_in = streams
            .iter()
            .any(|s| matches!(s.kind, Kind::Audio(_)) && s.receiving);
        let video_in = video.is_some_and(|v| v.receiving);
        let (session, room, display) = (call.session, call.room.clone(), call.display.clone());
        if video_in != call.video_in {
            if let Some(m) = self.media.get_mut(&room) {
                let input = video.filter(|_| video_in).and_then(|v| match v.kind {
                    Kind::Video(codec) => Some((codec, v.pt)),
                    Kind::Audio(_) => None,
                });
                if let Err(e) = m.set_video(session.0, &display, input) {
                    huddle_sdk::warn!(host, "room {room}: tile of {display} not swapped: {}", e.0);
                }
            }
            if let Some(call) = self.calls.get_mut(call_id) {
                call.video_in = video_in;
            }
            if let (true, Some(v)) = (video_in, video) {
                let _ = host.request_keyframe(session, &v.mid);
            }
        }
        self.rooms.set_media(&room, session.0, audio_in, video_in);
        self.room_changed(host, &room);
        Ok(())
    }

    fn drop_participant(&mut self, room: &str, session: MediaSessionId) {
        if let Some(m) = self.media.get_mut(room) {
            m.leave(session.0, session);
        }
        if self.rooms.leave(room, session.0) {
            self.media.remove(room);
        }
    }

    /// A participant left (BYE either way): out of the mix, out of the store, subscribers told.
    fn left(&mut self, host: &Host, call: Call) {
        let who = self
            .rooms
            .get(&call.room)
            .and_then(|r| r.participants.get(&call.session.0))
            .cloned();
        self.drop_participant(&call.room, call.session);
        if let Some(p) = who {
            admin::left(
                self,
                host,
                &call.room,
                call.session.0,
                &p.entity,
                &p.display,
            );
        }
        if let Some(user) = &call.entity {
            // Another call of theirs may still be in a room: only remove our own marker.
            let still = self.calls.values().any(|c| c.entity.as_ref() == Some(user));
            if !still {
                let _ = host.store().delete(format!("in-meeting/{user}").as_bytes());
            }
        }
        huddle_sdk::info!(host, "a participant left room {}", call.room);
        self.room_changed(host, &call.room);
    }

    /// Keeps the statistics timer running while any room is live.
    fn arm_stats(&mut self, host: &Host) {
        if self.stats_timer.is_none() && !self.media.is_empty() {
            self.stats_timer = host.set_timer(self.stats_interval, STATS_TIMER).ok();
        }
    }

    /// Writes the room's store record and notifies its subscribers.
    /// Reads every presentation record of the relay again and follows what changed.
    fn rescan_screens(&mut self, host: &Host) {
        let records = match host
            .namespace(&self.screens_ns)
            .scan_all(screens::PRESENTATIONS.as_bytes())
        {
            Ok(r) => r,
            Err(e) => {
                huddle_sdk::warn!(host, "cannot read {}: {e}", self.screens_ns);
                return;
            }
        };
        let now = records
            .iter()
            .filter_map(|(k, v)| match screens::parse(k, v)? {
                (room, Ok(screen)) => Some((room, screen)),
                (_, Err(_)) => None,
            })
            .collect();
        let changes = self.screens.reset(now);
        self.apply_screens(host, changes);
    }

    /// Taps and shows, or untaps and hides, shared screens.
    fn apply_screens(&mut self, host: &Host, changes: Vec<screens::ScreenChange>) {
        for change in changes {
            match change {
                screens::ScreenChange::Show(room, screen) => {
                    if let Err(e) = host.tap_stream(screen.session, &screen.mid, true) {
                        // Gone already (its record goes next), or a host without taps.
                        huddle_sdk::warn!(host, "room {room}: cannot tap the shared screen: {e}");
                        continue;
                    }
                    huddle_sdk::info!(host, "room {room}: {} shares a screen", screen.display);
                    if self.media.contains_key(&room) {
                        self.show_screen(host, &room, &screen);
                    }
                }
                screens::ScreenChange::Hide(room, screen) => {
                    // The tap is gone already when the presenter's session ended.
                    let _ = host.tap_stream(screen.session, &screen.mid, false);
                    if let Some(m) = self.media.get_mut(&room) {
                        m.hide_screen();
                        huddle_sdk::info!(host, "room {room}: the screen share ended");
                        self.room_changed(host, &room);
                    }
                }
            }
        }
    }

    /// Puts the tapped `screen` on `room`'s canvas and asks the presenter for a key frame, so
    /// the screen appears at once rather than at the presenter's next periodic key frame.
    fn show_screen(&mut self, host: &Host, room: &str, screen: &screens::Screen) {
        let Some(m) = self.media.get_mut(room) else {
            return;
        };
        if let Err(e) = m.show_screen(screen.session, &screen.display, screen.codec) {
            huddle_sdk::error!(host, "room {room}: cannot show the shared screen: {}", e.0);
            return;
        }
        let _ = host.request_keyframe(screen.session, &screen.mid);
        self.room_changed(host, room);
    }

    fn room_changed(&mut self, host: &Host, room: &str) {
        let key = format!("rooms/{room}");
        match self.rooms.get(room) {
            Some(live) => {
                let layout = self.media.get(room).map_or("grid", |m| m.shown_layout());
                let _ = host
                    .store()
                    .put(key.as_bytes(), events::room_record(live, layout).as_bytes());
                for p in live.participants.values() {
                    if !p.entity.starts_with("guest:") {
                        let _ = host.store().put(
                            format!("in-meeting/{}", p.entity).as_bytes(),
                            room.as_bytes(),
                        );
                    }
                }
            }
            None => {
                let _ = host.store().delete(key.as_bytes());
                let _ = host.store().delete(format!("stats/{room}").as_bytes());
            }
        }
        let ids: Vec<String> = self
            .subs
            .iter()
            .filter(|(_, s)| s.room == room)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.notify(host, &id, false);
        }
    }

    fn subscribe(&mut self, host: &Host, request: Request, call_id: String) -> Result<()> {
        let in_dialog = dialog::is_in_dialog(&request);
        let expires = request
            .header("Expires")
            .and_then(|e| e.trim().parse::<u32>().ok())
            .unwrap_or(600)
            .min(self.max_sub);
        if in_dialog {
            let Some(sub) = self.subs.get_mut(&call_id) else {
                return host.reply(&request, 481, "Subscription Does Not Exist");
            };
            sub.expires_at = Instant::now() + Duration::from_secs(u64::from(expires));
            let response = request
                .response(202, "Accepted")
                .header("Expires", &expires.to_string())
                .build();
            host.respond(
                request.transaction().ok_or(Error::UnknownTransaction)?,
                &response,
            )?;
            self.notify(host, &call_id, expires == 0);
            return Ok(());
        }
        let Some(room) = request.uri_user().map(str::to_owned) else {
            return host.reply(&request, 404, "Not Found - No Such Room");
        };
        let Some(settings) = self.rooms.settings(&room) else {
            return host.reply(&request, 404, "Not Found - No Such Room");
        };
        if request.info().auth_user.is_none() && !settings.public {
            return host.reply(&request, 403, "Forbidden - Members Only");
        }
        self.subs.retain(|_, s| s.expires_at > Instant::now());
        if self.subs.len() >= self.max_subs {
            let response = request
                .response(503, "Service Unavailable - Too Many Subscriptions")
                .header("Retry-After", "60")
                .build();
            return host.respond(
                request.transaction().ok_or(Error::UnknownTransaction)?,
                &response,
            );
        }
        let sub_dialog = UasDialog::accept(&request);
        let domain = sub_dialog
            .local_uri
            .split('@')
            .nth(1)
            .unwrap_or("")
            .to_owned();
        let response = request
            .response(200, "OK")
            .header("Expires", &expires.to_string())
            .header("Contact", &format!("<{}>", sub_dialog.local_uri))
            .build();
        host.respond(
            request.transaction().ok_or(Error::UnknownTransaction)?,
            &response,
        )?;
        let sub = Subscription {
            room,
            domain,
            dialog: sub_dialog,
            version: 0,
            expires_at: Instant::now() + Duration::from_secs(u64::from(expires)),
        };
        self.subs.insert(call_id.clone(), sub);
        self.notify(host, &call_id, expires == 0);
        Ok(())
    }

    /// Sends subscription `call_id` a full-state NOTIFY (the last one when `last`).
    fn notify(&mut self, host: &Host, call_id: &str, last: bool) {
        let now = Instant::now();
        let Some(sub) = self.subs.get_mut(call_id) else {
            return;
        };
        let expired = !last && sub.expires_at <= now;
        let last = last || expired;
        sub.version += 1;
        let body = events::conference_info(
            &sub.dialog.local_uri,
            &sub.domain,
            self.rooms.get(&sub.room),
            sub.version,
        );
        let state = if expired {
            "terminated;reason=timeout".to_owned()
        } else if last {
            // The subscriber unsubscribed (Expires: 0): no reason to give (RFC 6665 §4.1.3).
            "terminated".to_owned()
        } else {
            format!(
                "active;expires={}",
                sub.expires_at.saturating_duration_since(now).as_secs()
            )
        };
        let contact = format!("<{}>", sub.dialog.local_uri);
        let req = sub
            .dialog
            .request(Method::Notify)
            .header("Event", "conference")
            .header("Subscription-State", &state)
            .header("Contact", &contact)
            .body("application/conference-info+xml", body.as_bytes())
            .build();
        match host.send_request(&req) {
            Ok(id) => {
                self.notifies.insert(id, call_id.to_owned());
            }
            Err(e) => huddle_sdk::debug!(host, "NOTIFY for {call_id} not sent: {e}"),
        }
        if last {
            self.subs.remove(call_id);
        }
    }
}

huddle_sdk::export_plugin!(
    Conference,
    "conference",
    env!("CARGO_PKG_VERSION"),
    Capabilities::SEND_REQUEST
        .with(Capabilities::MEDIA)
        .with(Capabilities::STORE)
        .with(Capabilities::TIMERS)
);

#[cfg(test)]
mod tests {
    //! SIP-level unit tests through the FakeHost (no GStreamer pipeline runs in them: every
    //! request here is refused before media, or is a subscription).

    use super::*;
    use huddle_sdk::fake::FakeHost;

    const CONFIG: &str = "on_demand_prefix = \"meet-\"\n\
        [[rooms]]\nname = \"board\"\npin = \"1234\"\n\
        [[rooms]]\nname = \"lobby\"\npublic = true\n\
        [[rooms]]\nname = \"team\"\n\
        [[rooms]]\nname = \"stage\"\npublic = true\n\
        video = { width = 320, height = 180, fps = 15, bitrate_kbps = 300, keyframe_interval_secs = 3600 }\n\
        lower_profiles = [{ width = 160, height = 90, fps = 10, bitrate_kbps = 100, keyframe_interval_secs = 3600 }]\n";

    fn start() -> (FakeHost, huddle_sdk::fake::FakePlugin) {
        let host = FakeHost::with_capabilities(Capabilities::ALL);
        let plugin = host
            .start(&huddle_plugin_export::entry(), CONFIG)
            .expect("conference starts");
        (host, plugin)
    }

    fn invite(uri: &str, extra: &str) -> String {
        let body = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=rtpmap:0 PCMU/8000\r\n";
        format!(
            "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/WS h.invalid;branch=z9hG4bKinv1\r\n\
             Max-Forwards: 70\r\nFrom: \"Zed\" <sip:zed@elsewhere.test>;tag=z1\r\nTo: <{uri}>\r\n\
             Call-ID: call-1\r\nCSeq: 1 INVITE\r\nContact: <sip:zed@x.invalid;transport=ws>\r\n\
             {extra}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    #[test]
    fn claims_rooms_and_the_on_demand_prefix() {
        let (_, plugin) = start();
        let claims = plugin.claims();
        assert!(claims.contains(&Claim::method("INVITE").with_user("board")));
        // Only the public room admits callers who did not log in.
        assert!(claims.contains(&Claim::method("INVITE").with_user("lobby").open_to_guests()));
        let open: Vec<_> = claims
            .iter()
            .filter(|c| c.admits_guests())
            .filter_map(|c| c.user_pattern())
            .collect();
        assert_eq!(open, ["lobby", "lobby", "stage", "stage"]);
        assert!(claims.contains(&Claim::method("INVITE").with_user("meet-*")));
        assert!(claims.contains(
            &Claim::method("SUBSCRIBE")
                .with_event("conference")
                .with_user("lobby")
                .open_to_guests()
        ));
        assert!(claims.contains(
            &Claim::method("SUBSCRIBE")
                .with_event("conference")
                .with_user("team")
        ));
    }

    #[test]
    fn refusals_are_precise() {
        let (host, mut plugin) = start();
        // Unclaimed names never reach the plugin (the proxy answers them).
        assert!(!plugin.claims_request(invite("sip:nope@example.test", "").as_bytes()));
        let cases = [
            ("sip:team@example.test", "", 403),
            ("sip:meet-x@example.test", "", 403),
        ];
        for (uri, extra, status) in cases {
            let txn = plugin.request(invite(uri, extra)).unwrap();
            assert_eq!(host.final_response(txn).unwrap().status(), status, "{uri}");
        }
        // A member: the PIN is checked (URI parameter or TP-BridgePin header).
        let member =
            huddle_sdk::RequestInfo::new(huddle_sdk::Transport::Ws, None).authenticated("bob");
        for (uri, extra, reason) in [
            ("sip:board@example.test", "", "Forbidden - PIN Required"),
            ("sip:board@example.test;pin=9", "", "Forbidden - Wrong PIN"),
            (
                "sip:board@example.test",
                "TP-BridgePin: 12\r\n",
                "Forbidden - Wrong PIN",
            ),
        ] {
            let txn = plugin.request_with(invite(uri, extra), &member).unwrap();
            let answer = host.final_response(txn).unwrap();
            assert_eq!(answer.status(), 403, "{uri}");
            assert_eq!(answer.message.reason(), Some(reason), "{uri}");
        }
    }

    fn in_dialog(method: &str, uri: &str, to_tag: &str, call_id: &str, extra: &str) -> String {
        format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/WS h.invalid;branch=z9hG4bK{method}{call_id}\r\n\
             Max-Forwards: 70\r\nFrom: \"Zed\" <sip:zed@elsewhere.test>;tag=z1\r\nTo: <{uri}>;tag={to_tag}\r\n\
             Call-ID: {call_id}\r\nCSeq: 2 {method}\r\nContact: <sip:zed@x.invalid;transport=ws>\r\n\
             {extra}Content-Length: 0\r\n\r\n"
        )
    }

    /// Polls `what` until it holds, for at most 10 s: the composite comes from GStreamer's
    /// threads, at their pace.
    fn eventually(what: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if what() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// The whole guest path with real pipelines (GStreamer must be installed): a caller who
    /// did not log in joins the public room under their display name, receives the
    /// composite, is listed to a subscriber and in the store, and the room ends when they
    /// leave.
    #[test]
    fn a_guest_joins_a_public_room_sees_the_composite_and_the_room_ends_when_they_leave() {
        let (host, mut plugin) = start();
        let uri = "sip:lobby@example.test";
        let txn = plugin.request(invite(uri, "")).unwrap();
        let ok = host.final_response(txn).expect("answered");
        assert_eq!(ok.status(), 200);
        let to_tag = ok.message.to_header().unwrap().tag().unwrap().to_owned();
        let record = host.get("", b"rooms/lobby").expect("room record");
        assert!(String::from_utf8_lossy(&record).contains("\"entity\":\"guest:Zed\""));
        let session = host
            .media_calls()
            .iter()
            .find_map(|c| match c {
                huddle_sdk::fake::MediaCall::Answer { session, .. } => Some(*session),
                _ => None,
            })
            .expect("a media session");
        plugin.media_ready(session).unwrap();
        // The composite reaches the guest on the answer's video mid, VP8 payload type 96.
        assert!(
            eventually(|| {
                host.media_calls().iter().any(|c| matches!(c,
                huddle_sdk::fake::MediaCall::Rtp { mid, packet, .. } if mid == "1" && packet[1] & 0x7f == 96))
            }),
            "composite RTP sent"
        );
        // The statistics timer writes what the room's media has cost so far.
        let (timer, delay, _) = host.timers()[0];
        assert_eq!(delay, Duration::from_secs(10));
        plugin.fire_timer(timer).unwrap();
        let stats = host.get("", b"stats/lobby").expect("stats record");
        let stats = String::from_utf8_lossy(&stats).into_owned();
        let cpu: f64 = stats
            .split("\"mixer_cpu_seconds\":")
            .nth(1)
            .and_then(|v| v.trim_end_matches('}').parse().ok())
            .expect("mixer_cpu_seconds");
        assert!(cpu > 0.0, "the room's pipelines were charged: {stats}");
        assert_eq!(host.timers().len(), 1, "re-armed while the room lives");

        // A subscriber to the room sees the guest.
        let sub = format!(
            "SUBSCRIBE {uri} SIP/2.0\r\nVia: SIP/2.0/WS h.invalid;branch=z9hG4bKsub1\r\n\
             Max-Forwards: 70\r\nFrom: <sip:watch@elsewhere.test>;tag=w1\r\nTo: <{uri}>\r\n\
             Call-ID: sub-1\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:watch@w.invalid;transport=ws>\r\n\
             Event: conference\r\nExpires: 60\r\nContent-Length: 0\r\n\r\n"
        );
        let txn = plugin.request(&sub).unwrap();
        assert_eq!(host.final_response(txn).unwrap().status(), 200);
        let notify = host
            .sent_requests()
            .into_iter()
            .find(|r| r.message.method() == Some(&Method::Notify))
            .expect("a NOTIFY");
        let body = String::from_utf8_lossy(notify.message.body()).into_owned();
        assert!(body.contains("<user-count>1</user-count>"), "{body}");
        assert!(body.contains("<display-text>Zed</display-text>"), "{body}");

        let txn = plugin
            .request(in_dialog("BYE", uri, &to_tag, "call-1", ""))
            .unwrap();
        assert_eq!(host.final_response(txn).unwrap().status(), 200);
        assert_eq!(host.get("", b"rooms/lobby"), None, "the room ended");
        assert_eq!(host.get("", b"stats/lobby"), None, "its statistics too");
        let notifies = host
            .sent_requests()
            .into_iter()
            .filter(|r| r.message.method() == Some(&Method::Notify))
            .count();
        assert_eq!(notifies, 2, "subscribers told of the leave");
    }

    /// An audio+video offer from guest `who` (call `call_id`), asking for `kbps` of video.
    fn invite_av(uri: &str, who: &str, call_id: &str, kbps: u32) -> String {
        let body = format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\nb=AS:{kbps}\r\na=rtpmap:96 VP8/90000\r\n"
        );
        format!(
            "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/WS h.invalid;branch=z9hG4bK{call_id}\r\n\
             Max-Forwards: 70\r\nFrom: \"{who}\" <sip:{who}@elsewhere.test>;tag={call_id}\r\nTo: <{uri}>\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:{who}@x.invalid;transport=ws>\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    /// A video-only offer that sends (a shared screen) from guest `who`, call `call_id`.
    fn invite_screen(uri: &str, who: &str, call_id: &str) -> String {
        let av = invite_av(uri, who, call_id, 500);
        let (head, body) = av.split_once("\r\n\r\n").unwrap();
        let video = &body[body.find("m=video").unwrap()..];
        let screen = format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n{}a=sendrecv\r\n",
            video
        );
        let head = head.replace(
            &format!("Content-Length: {}", body.len()),
            &format!("Content-Length: {}", screen.len()),
        );
        format!("{head}\r\n\r\n{screen}")
    }

    /// A participant's second, video-only call to the room goes to the relay's screen URI
    /// (retargeted), when the relay publishes it; someone not in the room, or any call when
    /// no relay runs, joins as a participant.
    #[test]
    fn a_participants_screen_call_to_the_room_is_retargeted_to_the_relay() {
        let (host, mut plugin) = start();
        host.allow_namespace("plugin/screenshare");
        host.put(
            "plugin/screenshare",
            b"about",
            br#"{"v":1,"screen_user":"screen-{room}"}"#,
        );
        let uri = "sip:stage@example.test";
        join_av(&host, &mut plugin, uri, "Zed", 300);
        // Only answers count: the room's media threads send RTP and key-frame requests to
        // the fake host meanwhile, whenever they run.
        let answers = |host: &FakeHost| {
            host.media_calls()
                .iter()
                .filter(|c| matches!(c, huddle_sdk::fake::MediaCall::Answer { .. }))
                .count()
        };
        let joined = answers(&host);

        let txn = plugin
            .request(invite_screen(uri, "Zed", "zed-screen"))
            .unwrap();
        assert_eq!(
            host.retargets(),
            [(txn, "sip:screen-stage@example.test".to_owned())]
        );
        assert!(host.final_response(txn).is_none(), "the relay answers it");
        assert_eq!(answers(&host), joined, "no media session for it");
        let record = String::from_utf8_lossy(&host.get("", b"rooms/stage").unwrap()).into_owned();
        assert_eq!(record.matches("\"entity\"").count(), 1, "{record}");

        // Yan is not in the room: a video-only participant.
        let txn = plugin
            .request(invite_screen(uri, "Yan", "yan-screen"))
            .unwrap();
        assert_eq!(host.final_response(txn).unwrap().status(), 200);
        assert_eq!(host.retargets().len(), 1);

        // No relay (its record is gone): Zed's screen call joins too.
        host.delete("plugin/screenshare", b"about");
        let txn = plugin
            .request(invite_screen(uri, "Zed", "zed-screen-2"))
            .unwrap();
        assert_eq!(host.final_response(txn).unwrap().status(), 200);
        assert_eq!(host.retargets().len(), 1);
    }

    /// Joins `who` to `uri` and returns their media session (the FakeHost's newest answer).
    fn join_av(
        host: &FakeHost,
        plugin: &mut huddle_sdk::fake::FakePlugin,
        uri: &str,
        who: &str,
        kbps: u32,
    ) -> MediaSessionId {
        let txn = plugin.request(invite_av(uri, who, who, kbps)).unwrap();
        assert_eq!(host.final_response(txn).unwrap().status(), 200, "{who}");
        let session = host
            .media_calls()
            .iter()
            .rev()
            .find_map(|c| match c {
                huddle_sdk::fake::MediaCall::Answer { session, .. } => Some(*session),
                _ => None,
            })
            .expect("a media session");
        plugin.media_ready(session).unwrap();
        session
    }

    /// Whether an RTP packet carries the start of a VP8 key frame (RFC 7741 §4.2–4.3).
    fn vp8_key_frame_start(packet: &[u8]) -> bool {
        let Some(desc) = packet.get(12..) else {
            return false;
        };
        let first = desc[0];
        let (extended, start, partition) = (first & 0x80 != 0, first & 0x10 != 0, first & 0x07);
        let mut at = 1;
        if extended {
            let x = desc.get(1).copied().unwrap_or(0);
            at = 2;
            if x & 0x80 != 0 {
                at += if desc.get(at).is_some_and(|b| b & 0x80 != 0) {
                    2
                } else {
                    1
                };
            }
            if x & 0x40 != 0 {
                at += 1;
            }
            if x & 0x30 != 0 {
                at += 1;
            }
        }
        start && partition == 0 && desc.get(at).is_some_and(|b| b & 0x01 == 0)
    }

    /// VP8 packets sent to `session` from position `from` of the FakeHost's media log:
    /// (packets, frames, key frames).
    fn composite_to(
        host: &FakeHost,
        session: MediaSessionId,
        from: usize,
    ) -> (usize, usize, usize) {
        let mut out = (0, 0, 0);
        for c in host.media_calls().iter().skip(from) {
            if let huddle_sdk::fake::MediaCall::Rtp {
                session: s,
                mid,
                packet,
            } = c
            {
                if *s == session && mid == "1" {
                    out.0 += 1;
                    out.1 += usize::from(packet[1] & 0x80 != 0);
                    out.2 += usize::from(vp8_key_frame_start(packet));
                }
            }
        }
        out
    }

    /// Complete VP8 frames sent to `session` since the last key frame began.
    fn frames_since_key(host: &FakeHost, session: MediaSessionId) -> usize {
        let mut frames = 0;
        for c in host.media_calls().iter() {
            if let huddle_sdk::fake::MediaCall::Rtp {
                session: s,
                mid,
                packet,
            } = c
            {
                if *s == session && mid == "1" {
                    if vp8_key_frame_start(packet) {
                        frames = 0;
                    }
                    frames += usize::from(packet[1] & 0x80 != 0);
                }
            }
        }
        frames
    }

    /// Encoded once per profile: a receiver whose offer asks for little bandwidth gets the lower
    /// profile; a PLI from it brings a key frame in its profile only (the other receiver's
    /// stream goes on without one); and a participant who sent video and then went silent (a
    /// frozen uplink) does not stop the composite. Real GStreamer pipelines.
    #[test]
    fn profiles_key_frames_and_a_frozen_uplink() {
        let (host, mut plugin) = start();
        let uri = "sip:stage@example.test";
        let big = join_av(&host, &mut plugin, uri, "big", 2000);
        let small = join_av(&host, &mut plugin, uri, "small", 150);
        // Both get the composite, each its own profile: one packet stream per profile, told
        // apart by the size of their key frames' picture (VP8 frame header: width/height).
        assert!(
            eventually(|| composite_to(&host, big, 0).2 > 0 && composite_to(&host, small, 0).2 > 0),
            "key frames reach both receivers"
        );
        let size_of_key = |session| {
            host.media_calls().iter().find_map(|c| match c {
                huddle_sdk::fake::MediaCall::Rtp {
                    session: s, packet, ..
                } if *s == session && vp8_key_frame_start(packet) => {
                    // Descriptor (3 bytes with a 15-bit picture id), then the 10-byte key frame
                    // header whose bytes 6..10 are the width and height (14 bits each).
                    let f = packet.get(12 + 4..)?;
                    let w = u16::from_le_bytes([f[6], f[7]]) & 0x3fff;
                    let h = u16::from_le_bytes([f[8], f[9]]) & 0x3fff;
                    Some((w, h))
                }
                _ => None,
            })
        };
        assert_eq!(size_of_key(big), Some((320, 180)), "the canvas profile");
        assert_eq!(size_of_key(small), Some((160, 90)), "the lower profile");

        // The join key frames are out once each stream has gone on for a few frames after its
        // last key frame (the first frames of a new encoder are key frames anyway, and the one
        // forced at join can follow them a frame or two later: under load, after the first
        // key frame seen above). A PLI from the lower-profile receiver now.
        assert!(
            eventually(|| frames_since_key(&host, big) >= 5 && frames_since_key(&host, small) >= 5),
            "both streams settle after their join key frames"
        );
        let mark = host.media_calls().len();
        plugin
            .incoming_rtcp(small, &[0x81, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2])
            .unwrap();
        assert!(
            eventually(|| composite_to(&host, small, mark).2 > 0),
            "a key frame for the receiver that asked"
        );
        // The other profile keeps flowing (frames rising) with no key frame forced into it.
        assert!(eventually(|| composite_to(&host, big, mark).1 >= 10));
        assert_eq!(
            composite_to(&host, big, mark).2,
            0,
            "the other profile is not disturbed"
        );

        // A frozen uplink: `big` sends a few real VP8 frames, then nothing. The composite keeps
        // coming to `small`.
        let packets = vp8_rtp_packets(10);
        for p in &packets {
            plugin.incoming_rtp(big, "1", p).unwrap();
        }
        let after = host.media_calls().len();
        assert!(
            eventually(|| composite_to(&host, small, after).1 >= 10),
            "the canvas keeps ticking after the sender froze"
        );
    }

    /// A composite frame goes to every receiver of its profile in one `send_rtp_batch` (the
    /// host then advances each receiver's leg once per frame, not once per packet): no more
    /// batches than frames, the same packets to each receiver in the same order, each in its
    /// own unbroken numbering.
    #[test]
    fn a_composite_frame_goes_to_all_its_receivers_in_one_batch() {
        let (host, mut plugin) = start();
        let uri = "sip:stage@example.test";
        let a = join_av(&host, &mut plugin, uri, "a", 2000);
        let b = join_av(&host, &mut plugin, uri, "b", 2000);
        assert!(
            eventually(|| composite_to(&host, a, 0).1 >= 3 && composite_to(&host, b, 0).1 >= 3),
            "both receive the canvas"
        );
        // Noise on `a`'s tile, so that a key frame of the canvas takes several packets.
        let snow = rtp_packets_from(
            "videotestsrc pattern=snow num-buffers=5 ! video/x-raw,width=160,height=90,framerate=15/1 \
             ! vp8enc deadline=1 cpu-used=-8 ! rtpvp8pay pt=96",
        );
        for p in &snow {
            plugin.incoming_rtp(a, "1", p).unwrap();
        }
        // The log first, then the count: a batch counted here has all its packets in the log
        // (the fake records a batch whole, under one lock), and one logged before `mark` is
        // not counted in `batches` below.
        let mark = host.media_calls().len();
        let before = host.rtp_batches();
        // A key frame of the noisy canvas (asked for by `b`'s PLI) among the frames counted.
        plugin
            .incoming_rtcp(b, &[0x81, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2])
            .unwrap();
        assert!(
            eventually(|| {
                let (_, frames, keys) = composite_to(&host, a, mark);
                keys > 0 && frames >= 10
            }),
            "the canvas goes on, with a key frame"
        );
        let batches = host.rtp_batches() - before;
        let calls = host.media_calls();
        let to = |session| -> Vec<Vec<u8>> {
            calls
                .iter()
                .skip(mark)
                .filter_map(|c| match c {
                    huddle_sdk::fake::MediaCall::Rtp {
                        session: s,
                        mid,
                        packet,
                    } if *s == session && mid == "1" => Some(packet.clone()),
                    _ => None,
                })
                .collect()
        };
        let (to_a, to_b) = (to(a), to(b));
        let frames = to_a.iter().filter(|p| p[1] & 0x80 != 0).count();
        assert!(batches >= 1, "sent in batches");
        assert!(
            batches <= frames,
            "{batches} batches for {frames} frames: one batch per frame at most"
        );
        assert!(
            batches < to_a.len(),
            "{batches} batches for {} packets: a frame's packets go together",
            to_a.len()
        );
        // Payloads (after the fixed header) match one for one; sequence numbers run on.
        let payloads = |v: &[Vec<u8>]| v.iter().map(|p| p[12..].to_vec()).collect::<Vec<_>>();
        assert_eq!(to_a.len(), to_b.len(), "the same packets to both");
        assert_eq!(payloads(&to_a), payloads(&to_b), "in the same order");
        for packets in [&to_a, &to_b] {
            let seqs: Vec<u16> = packets
                .iter()
                .map(|p| u16::from_be_bytes([p[2], p[3]]))
                .collect();
            assert!(
                seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
                "unbroken numbering: {seqs:?}"
            );
        }
    }

    /// `frames` frames of 160x90 VP8 as RTP (payload type 96), from GStreamer's encoder.
    fn vp8_rtp_packets(frames: i32) -> Vec<Vec<u8>> {
        let out = rtp_packets_from(&format!(
            "videotestsrc num-buffers={frames} ! video/x-raw,width=160,height=90,framerate=15/1 \
             ! vp8enc deadline=1 cpu-used=-8 ! rtpvp8pay pt=96"
        ));
        assert!(!out.is_empty());
        out
    }

    /// Every RTP packet a `gst-launch` description (ending in a payloader) produces until EOS.
    fn rtp_packets_from(description: &str) -> Vec<Vec<u8>> {
        use gstreamer::prelude::*;
        gstreamer::init().unwrap();
        let pipeline =
            gstreamer::parse::launch(&format!("{description} ! appsink name=out sync=false"))
                .unwrap()
                .downcast::<gstreamer::Pipeline>()
                .unwrap();
        let sink = pipeline
            .by_name("out")
            .unwrap()
            .downcast::<gstreamer_app::AppSink>()
            .unwrap();
        pipeline.set_state(gstreamer::State::Playing).unwrap();
        let mut out = Vec::new();
        while let Ok(sample) = sink.pull_sample() {
            if let Some(map) = sample.buffer().and_then(|b| b.map_readable().ok()) {
                out.push(map.to_vec());
            }
        }
        pipeline.set_state(gstreamer::State::Null).unwrap();
        out
    }

    /// A presentation record of the relay for `room`: presenter session `session`, mid `0`.
    fn presentation(room: &str, session: u64) -> Vec<u8> {
        presentation_in(room, session, "vp8")
    }

    /// The same in `codec`.
    fn presentation_in(room: &str, session: u64, codec: &str) -> Vec<u8> {
        format!(
            "{{\"v\":1,\"room\":\"{room}\",\"presenter\":\"carol\",\"display\":\"Carol\",\
             \"screen_uri\":\"sip:{room}-screen@example.test\",\"started\":1,\
             \"session\":{session},\"video_mid\":\"0\",\"codec\":\"{codec}\"}}"
        )
        .into_bytes()
    }

    /// `frames` white frames of 160x90 H.264 (Constrained Baseline, packetization-mode 1, as
    /// browsers send it) as RTP on payload type `pt`, from openh264's encoder.
    fn h264_rtp_packets(frames: i32, pt: u8) -> Vec<Vec<u8>> {
        let out = rtp_packets_from(&format!(
            "videotestsrc num-buffers={frames} pattern=white \
             ! video/x-raw,width=160,height=90,framerate=15/1 ! openh264enc \
             ! rtph264pay pt={pt} config-interval=-1"
        ));
        assert!(
            out.len() >= frames as usize,
            "one packet per frame at least"
        );
        out
    }

    /// The last picture of the VP8 composite sent to `session` from position `from` of the
    /// FakeHost's media log, decoded by GStreamer: its width and its luma plane (rows of
    /// `width` bytes).
    fn last_composite_picture(
        host: &FakeHost,
        session: MediaSessionId,
        from: usize,
    ) -> Option<(usize, Vec<u8>)> {
        use gstreamer::prelude::*;
        let pipeline = gstreamer::parse::launch(
            "appsrc name=in format=time \
             caps=application/x-rtp,media=video,encoding-name=VP8,clock-rate=90000,payload=96 \
             ! rtpvp8depay ! vp8dec ! videoconvert ! video/x-raw,format=GRAY8 \
             ! appsink name=out sync=false",
        )
        .unwrap()
        .downcast::<gstreamer::Pipeline>()
        .unwrap();
        let src = pipeline
            .by_name("in")
            .unwrap()
            .downcast::<gstreamer_app::AppSrc>()
            .unwrap();
        let sink = pipeline
            .by_name("out")
            .unwrap()
            .downcast::<gstreamer_app::AppSink>()
            .unwrap();
        pipeline.set_state(gstreamer::State::Playing).unwrap();
        for c in host.media_calls().iter().skip(from) {
            if let huddle_sdk::fake::MediaCall::Rtp {
                session: s,
                mid,
                packet,
            } = c
            {
                if *s == session && mid == "1" {
                    let mut p = packet.clone();
                    p[1] = (p[1] & 0x80) | 96;
                    src.push_buffer(gstreamer::Buffer::from_mut_slice(p))
                        .unwrap();
                }
            }
        }
        src.end_of_stream().unwrap();
        let mut last = None;
        while let Ok(sample) = sink.pull_sample() {
            let width = sample
                .caps()
                .and_then(|c| c.structure(0)?.get::<i32>("width").ok())
                .and_then(|w| usize::try_from(w).ok());
            let info = sample
                .caps()
                .and_then(|c| gstreamer_video::VideoInfo::from_caps(c).ok());
            if let (Some(width), Some(info), Some(buffer)) = (width, info, sample.buffer()) {
                let map = buffer.map_readable().ok()?;
                let stride = info.stride()[0] as usize;
                let rows = map.len() / stride;
                let luma = (0..rows)
                    .flat_map(|r| map[r * stride..r * stride + width].to_vec())
                    .collect();
                last = Some((width, luma));
            }
        }
        pipeline.set_state(gstreamer::State::Null).unwrap();
        last
    }

    /// Every tile's name is on the composite, drawn at the size the tile is shown, in its
    /// bottom-left corner, also before any picture came (the tiles are black here); at 4 and 9
    /// participants on a 1280x720 canvas. (The FakeHost answers every offer with audio and
    /// video, so the placeholders' centred names are checked in `layout`'s tests.) With
    /// `CONFERENCE_TEST_PICTURES=<dir>` the decoded composites are saved there (PGM) to look at.
    #[test]
    fn names_are_drawn_on_the_canvas_on_every_tile_at_its_size() {
        for n in [4, 9] {
            names_on_every_tile(n);
        }
    }

    fn names_on_every_tile(n: usize) {
        let host = FakeHost::with_capabilities(Capabilities::ALL);
        let mut plugin = host
            .start(
                &huddle_plugin_export::entry(),
                "[[rooms]]\nname = \"hall\"\npublic = true\n\
                 video = { width = 1280, height = 720, fps = 15, bitrate_kbps = 2000, keyframe_interval_secs = 3600 }\n",
            )
            .expect("conference starts");
        let uri = "sip:hall@example.test";
        let viewer = join_av(&host, &mut plugin, uri, "Viewer", 3000);
        for i in 1..n {
            join_av(&host, &mut plugin, uri, &format!("Guest{i}"), 3000);
        }
        // The names are rendered on the room's label thread and show from the frame after:
        // look at the latest picture until every tile has its name.
        let tiles = layout::tiles(layout::LayoutKind::Grid, n, 1280, 720, None);
        let check = || -> Result<(), String> {
            let (width, luma) = last_composite_picture(&host, viewer, 0).ok_or("no picture yet")?;
            if width != 1280 {
                return Err(format!("width {width}"));
            }
            if let Some(dir) = std::env::var_os("CONFERENCE_TEST_PICTURES") {
                let mut pgm = format!("P5 {width} {} 255\n", luma.len() / width).into_bytes();
                pgm.extend_from_slice(&luma);
                let _ = std::fs::write(
                    std::path::Path::new(&dir).join(format!("names-{n}.pgm")),
                    pgm,
                );
            }
            // Text pixels (white) in a part of the canvas.
            let bright = |x0: u32, y0: u32, x1: u32, y1: u32| {
                (y0..y1)
                    .flat_map(|y| (x0..x1).map(move |x| (x, y)))
                    .filter(|&(x, y)| luma[y as usize * width + x as usize] > 200)
                    .count()
            };
            for (i, tile) in tiles.iter().enumerate() {
                let t = tile.ok_or(format!("tile {i} has no place"))?;
                let (mid_x, mid_y) = (t.x + t.w / 2, t.y + t.h / 2);
                let corner = bright(t.x, mid_y, mid_x, t.y + t.h);
                if corner <= 20 {
                    return Err(format!("tile {i}: no name bottom-left ({corner} px)"));
                }
                let rest =
                    bright(t.x, t.y, t.x + t.w, mid_y) + bright(mid_x, mid_y, t.x + t.w, t.y + t.h);
                if rest != 0 {
                    return Err(format!("tile {i}: {rest} bright px outside the name"));
                }
            }
            Ok(())
        };
        assert!(eventually(|| check().is_ok()), "n={n}: {:?}", check());
    }

    /// A screen shared in H.264 (the relay negotiated it) is decoded and mixed like a VP8
    /// one: real H.264 RTP from openh264 into the tapped stream, and the white screen shows
    /// in its place on the composite that alice decodes. Real GStreamer pipelines.
    #[test]
    fn a_screen_shared_in_h264_is_decoded_into_the_composite() {
        h264_screen_into_the_composite(true);
    }

    /// The same on a host without RTP sinks (before ABI 1.7): `incoming_rtp` feeds the same
    /// routes.
    #[test]
    fn without_an_rtp_sink_incoming_rtp_feeds_the_same_routes() {
        h264_screen_into_the_composite(false);
    }

    /// Two participants, then a screen shared in H.264: the screen shows in the composite.
    /// Incoming RTP through the plugin's RTP sink (`sinks`) or through `incoming_rtp`.
    fn h264_screen_into_the_composite(sinks: bool) {
        let host = FakeHost::with_capabilities(Capabilities::ALL);
        host.set_rtp_sinks(sinks);
        host.allow_namespace("plugin/screenshare");
        let mut plugin = host
            .start(&huddle_plugin_export::entry(), CONFIG)
            .expect("conference starts");
        assert_eq!(host.has_rtp_sink(), sinks);
        let uri = "sip:stage@example.test";
        let alice = join_av(&host, &mut plugin, uri, "alice", 1000);
        let _bob = join_av(&host, &mut plugin, uri, "bob", 1000);
        let mark = host.media_calls().len();
        assert!(eventually(|| composite_to(&host, alice, mark).1 >= 5));

        let presenter = MediaSessionId(4242);
        host.put(
            "plugin/screenshare",
            b"presentations/stage",
            &presentation_in("stage", presenter.0, "h264"),
        );
        plugin.deliver_changes().unwrap();
        assert_eq!(layout_of(&host, "stage"), "presenter");
        assert!(
            !host.logged(huddle_sdk::Level::Warn, "cannot be shown"),
            "H.264 is not refused"
        );
        let shown = host.media_calls().len();
        for p in h264_rtp_packets(15, 102) {
            plugin.incoming_rtp(presenter, "0", &p).unwrap();
        }
        let fed = host.media_calls().len();
        assert!(
            eventually(|| composite_to(&host, alice, fed).1 >= 10),
            "the canvas keeps coming"
        );
        // The screen's place (the stage canvas is 320x180, two participants as thumbnails):
        // its upper middle, clear of the label, is white; the canvas's background is black
        // and the placeholders are dark.
        let screen = layout::arrange(layout::LayoutKind::Grid, 2, 320, 180, None, true)
            .screen
            .expect("a screen place");
        let (width, luma) = last_composite_picture(&host, alice, shown).expect("a picture");
        assert_eq!(width, 320);
        let (x0, x1) = (screen.x + screen.w / 4, screen.x + screen.w * 3 / 4);
        let (y0, y1) = (screen.y + screen.h / 8, screen.y + screen.h / 2);
        let mut sum = 0u64;
        let mut n = 0u64;
        for y in y0..y1 {
            for x in x0..x1 {
                sum += u64::from(luma[y as usize * width + x as usize]);
                n += 1;
            }
        }
        let mean = sum / n;
        assert!(mean > 200, "the H.264 screen shows (mean luma {mean})");
        // Beside it (the canvas's left edge, letterboxed) it is not white.
        assert!(screen.x > 0, "the screen is letterboxed: {screen:?}");
        let rows = screen.y as usize..(screen.y + screen.h) as usize;
        let outside = rows
            .clone()
            .map(|y| u64::from(luma[y * width]))
            .sum::<u64>()
            / rows.len() as u64;
        assert!(
            outside < 120,
            "only the screen is white (edge luma {outside})"
        );
    }

    fn layout_of(host: &FakeHost, room: &str) -> String {
        let record = host
            .get("", format!("rooms/{room}").as_bytes())
            .expect("room record");
        let v: serde_json::Value = serde_json::from_slice(&record).unwrap();
        v["layout"].as_str().unwrap_or_default().to_owned()
    }

    /// The relay's presentation record starts and ends the presenter layout: the conference
    /// taps the presenter's stream (a session that is not its own), asks it for a key frame,
    /// mixes its packets (any payload type), and the canvas keeps coming when the screen
    /// freezes; the record's removal untaps it and brings the room's layout back. Real
    /// GStreamer pipelines.
    #[test]
    fn a_shared_screen_switches_the_room_to_the_presenter_layout_and_back() {
        let host = FakeHost::with_capabilities(Capabilities::ALL);
        host.allow_namespace("plugin/screenshare");
        let mut plugin = host
            .start(&huddle_plugin_export::entry(), CONFIG)
            .expect("conference starts");
        let uri = "sip:stage@example.test";
        let alice = join_av(&host, &mut plugin, uri, "alice", 1000);
        let _bob = join_av(&host, &mut plugin, uri, "bob", 1000);
        assert_eq!(layout_of(&host, "stage"), "grid");
        // A live room (a screen is shared into a room whose canvas runs already).
        let mark = host.media_calls().len();
        assert!(eventually(|| composite_to(&host, alice, mark).1 >= 5));

        let presenter = MediaSessionId(4242);
        host.put(
            "plugin/screenshare",
            b"presentations/stage",
            &presentation("stage", presenter.0),
        );
        plugin.deliver_changes().unwrap();
        let calls = host.media_calls();
        assert!(calls.contains(&huddle_sdk::fake::MediaCall::Tap {
            session: presenter,
            mid: "0".into(),
            on: true
        }));
        assert!(
            calls.contains(&huddle_sdk::fake::MediaCall::Keyframe {
                session: presenter,
                mid: "0".into()
            }),
            "the screen's first picture is asked for at once"
        );
        assert_eq!(layout_of(&host, "stage"), "presenter");

        // The screen's packets (the relay chose payload type 100), then nothing: a frozen
        // screen. The composite keeps coming to alice.
        for mut p in vp8_rtp_packets(10) {
            p[1] = (p[1] & 0x80) | 100;
            plugin.incoming_rtp(presenter, "0", &p).unwrap();
        }
        let mark = host.media_calls().len();
        assert!(
            eventually(|| composite_to(&host, alice, mark).1 >= 10),
            "the canvas does not freeze with the screen"
        );

        // The presentation ends: untapped, the room's own layout again.
        host.delete("plugin/screenshare", b"presentations/stage");
        plugin.deliver_changes().unwrap();
        assert!(host
            .media_calls()
            .contains(&huddle_sdk::fake::MediaCall::Tap {
                session: presenter,
                mid: "0".into(),
                on: false
            }));
        assert_eq!(layout_of(&host, "stage"), "grid");
        // Packets from the old presenter are ignored now.
        plugin
            .incoming_rtp(
                presenter,
                "0",
                &[0x80, 100, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9, 0],
            )
            .unwrap();

        // Changes lost: a rescan finds a presentation that started meanwhile.
        host.put(
            "plugin/screenshare",
            b"presentations/stage",
            &presentation("stage", 4343),
        );
        let watch = host.watches()[0].0;
        host.lag_watch(watch);
        plugin.deliver_changes().unwrap();
        assert_eq!(layout_of(&host, "stage"), "presenter");
        assert!(host
            .media_calls()
            .contains(&huddle_sdk::fake::MediaCall::Tap {
                session: MediaSessionId(4343),
                mid: "0".into(),
                on: true
            }));
    }

    /// Video fed from the room's first moment (a participant's, or a screen already shared
    /// when the first participant joins) does not freeze the canvas: the room's pipeline is
    /// playing before any tile is fed (it reaches PLAYING asynchronously, and tiles fed before
    /// then froze it). Real GStreamer pipelines.
    #[test]
    fn video_fed_from_the_rooms_first_moment_does_not_freeze_the_canvas() {
        let host = FakeHost::with_capabilities(Capabilities::ALL);
        host.allow_namespace("plugin/screenshare");
        let mut plugin = host
            .start(&huddle_plugin_export::entry(), CONFIG)
            .expect("conference starts");
        // carol presents (by role) into the empty room: tapped, nothing to show yet.
        let presenter = MediaSessionId(4242);
        host.put(
            "plugin/screenshare",
            b"presentations/stage",
            &presentation("stage", presenter.0),
        );
        plugin.deliver_changes().unwrap();
        let packets = vp8_rtp_packets(10);
        let uri = "sip:stage@example.test";
        let alice = join_av(&host, &mut plugin, uri, "alice", 1000);
        assert_eq!(
            layout_of(&host, "stage"),
            "presenter",
            "shown as the room starts"
        );
        assert!(host
            .media_calls()
            .contains(&huddle_sdk::fake::MediaCall::Keyframe {
                session: presenter,
                mid: "0".into()
            }));
        let bob = join_av(&host, &mut plugin, uri, "bob", 1000);
        for p in &packets {
            plugin.incoming_rtp(presenter, "0", p).unwrap();
            plugin.incoming_rtp(alice, "1", p).unwrap();
        }
        let mark = host.media_calls().len();
        assert!(
            eventually(|| composite_to(&host, bob, mark).1 >= 10),
            "the canvas keeps coming"
        );
        let host = plugin.stop();
        assert!(
            host.media_calls()
                .contains(&huddle_sdk::fake::MediaCall::Tap {
                    session: presenter,
                    mid: "0".into(),
                    on: false
                }),
            "untapped at shutdown"
        );
    }

    #[test]
    fn a_bad_config_fails_start_up() {
        let host = FakeHost::with_capabilities(Capabilities::ALL);
        let bad = "[[rooms]]\nname = \"x\"\nmax_participants = 0\n";
        assert!(host.start(&huddle_plugin_export::entry(), bad).is_err());
        assert!(host.logged(huddle_sdk::Level::Warn, "max_participants"));
    }
}
