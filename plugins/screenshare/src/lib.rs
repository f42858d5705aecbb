//! `screenshare`: the screen-share relay. A room participant's screen goes to everyone who wants
//! it at full fidelity, relayed as-is by the host's forwarding fast path: no decode, no encode.
//!
//! # How a call reaches the relay rather than the conference
//!
//! Each room has a *screen URI* next to its own: `sip:screen-<room>@<domain>` by default
//! (`screen_user = "screen-{room}"`; any template with one `{room}` and a fixed prefix or
//! suffix, such as `"{room}-screen"`). The relay claims INVITE and BYE to that pattern; the
//! conference plugin claims the rooms themselves. The two plugins never call each other:
//!
//! * **Presenter**: a video-only INVITE to the screen URI whose video the caller sends
//!   (`a=sendonly`, or `a=sendrecv`: JsSIP/SIP.js with a `getDisplayMedia` track, SIPml5's
//!   `call-screenshare` with a page that supplies `getDisplayMedia`). It is admitted when the
//!   caller is logged in and is in the room according to the conference plugin's shared record
//!   (`rooms/<room>` in namespace `conference_namespace`, default `plugin/conference`), or is
//!   listed in `presenters` (a presenter role that needs no seat in the room). The relay
//!   answers `recvonly`: it sends nothing back.
//! * **Viewer**: a video-only INVITE to the same URI with `a=recvonly`. Admitted while a
//!   presentation runs, for participants of the room (guests of a public room by their display
//!   name, as the conference plugin lists them) or anyone (`viewers = "anyone"`); without a
//!   presentation → 480.
//!
//! * **A second call to the room itself**: a participant who makes a second, video-only call
//!   to the *room* URI (what SIPml5's `call-screenshare` does when the page dials the room)
//!   reaches the conference plugin, which claims the room; when the caller is in the room and
//!   the offer sends video only, the conference retargets the INVITE here (ABI 1.4,
//!   `Host::retarget`: the host routes it again with our screen URI as its Request-URI, every
//!   other byte as sent). It then arrives as a presenter's call to the screen URI and is
//!   admitted, refused or takes over exactly as one: no policy lives in the conference, which
//!   learns where we listen from `about` (below). A guest of a public room whose screen call
//!   is retargeted gets `403 Forbidden - Log In To Present`, as at the screen URI: a guest is
//!   known only by a display name anyone can type, and a presentation replaces what the whole
//!   room sees, so presenting stays for logged-in users (watching, which shows the guest
//!   what they can already see in the composite, is open to guests in the room).
//!
//! Claims of two plugins must not overlap (the server refuses to start): the conference
//! plugin's on-demand prefix `room-` claims `room-*`, which the default `screen-*` cannot
//! match; a suffix form (`"{room}-screen"`, claiming `*-screen`) overlaps it, so use one only
//! with on-demand rooms off or under another prefix.
//!
//! # A presentation
//!
//! One presenter per room. A second presenter gets `403 Forbidden - <user> Is Presenting In
//! <room>` (`second_presenter = "refuse"`, the default), or takes over (`"take_over"`: the
//! previous presenter's call is ended with a BYE and every viewer is switched to the new
//! screen; the host's rewriter keeps their stream continuous and asks the new presenter for a
//! key frame). The presentation ends when the presenter's call ends (BYE, or its media leg
//! fails) or when the presenter leaves the room (a watch on the conference record); then every
//! viewer's call is ended with a BYE — a clean end the viewer's client shows.
//!
//! `about` in this plugin's namespace holds `{"v":1,"screen_user":"<template>"}` from start-up
//! until shutdown, for clients (the host's demo page) to learn the screen URIs and for the
//! conference plugin to know that a relay runs and where to retarget a screen call.
//!
//! While it runs, `presentations/<room>` in this plugin's namespace (`plugin/screenshare/`)
//! holds a JSON record `{"v":1,"room","presenter","display","screen_uri","started","session",
//! "video_mid","codec"}` (started: Unix seconds; session and video_mid: the presenter's stream,
//! which the conference plugin taps for its presenter layout, `Host::tap_stream`). Records
//! are removed when the presentation ends and at start-up and shutdown.
//!
//! # Operations
//!
//! * Webhooks ([`events`], when the host takes events): `presentation.started` and
//!   `presentation.stopped` with the reason (`hangup`, `media_failure`, `left_room`,
//!   `taken_over`) and the duration.
//! * Admin state (`POST /plugins/<name>/admin` with `{"command": "presentations"}`): each
//!   running presentation and its viewers' loss as their RTCP receiver reports tell it
//!   ([`loss`], from `incoming_rtcp`); a viewer crossing `loss_warn_percent` is logged (warn),
//!   and again (info) when it recovers below half of it. The server's media engine (str0m)
//!   consumes receiver reports itself and, as of this writing, hands a plugin's
//!   `incoming_rtcp` none of them, so against that host the counts stay at zero (`reports`
//!   says so) until the host passes them on.
//!
//! # Media
//!
//! Every leg is narrowed to one codec (`codec`, default VP8) before the host answers it, so that
//! the presenter's packets are decodable by every viewer as they are. The presenter's stream is
//! forwarded by the host ([`Host::forward_stream`]) into each viewer's stream: the host rewrites
//! SSRC, sequence numbers and timestamps per viewer, answers viewers' NACKs from its own send
//! buffer, and passes their key-frame requests (PLI/FIR) back to the presenter. A viewer whose
//! leg connects gets a key frame requested at once ([`Plugin::media_ready`]), so a late joiner
//! sees the screen without waiting for the next periodic key frame. The presenter's bitrate is
//! governed by its own link to the server (the host's congestion feedback to the presenter
//! reflects only that leg); a slow viewer loses packets on its own leg and never slows the
//! presenter: the host terminates each viewer's receiver reports and REMB/TWCC on the viewer's
//! leg (they shape only what that leg sends), and passes back key-frame requests alone. The
//! viewer's loss is reported, not acted on (see Operations).

pub mod events;
pub mod loss;
pub mod presentation;
pub mod sdp;

use std::collections::{BTreeSet, HashMap};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use huddle_sdk::dialog::{refuse_offer, strip_params, UasDialog};
use huddle_sdk::{
    Capabilities, Claim, Claims, Config, Error, HangupReason, HeaderName, Host, MediaSessionId,
    Method, Plugin, Request, Response, Result, StoreChange, WatchId,
};

use events::{Presenting, StopReason};
use loss::{Crossing, ViewerLoss};
use presentation::{
    Admission, Caller, Current, Policy, PresentationRecord, RoomRecord, ScreenName,
    SecondPresenter, ViewerPolicy,
};
use sdp::Role;

/// Codecs a presentation may use (what the host's engine can answer).
const CODECS: [&str; 4] = ["vp8", "h264", "vp9", "av1"];
/// The prefix of the conference plugin's room records in its namespace.
const ROOMS: &str = "rooms/";
/// The prefix of our presentation records.
const PRESENTATIONS: &str = "presentations/";
/// Our `{"v":1,"screen_user"}` record: the screen URI template, for clients to present and
/// watch where the relay listens.
const ABOUT: &str = "about";

/// The plugin's configuration (`[plugins.config]`).
#[derive(Debug, huddle_sdk::serde::Deserialize)]
#[serde(crate = "huddle_sdk::serde", default, deny_unknown_fields)]
pub struct ScreenshareConfig {
    /// The user part of a room's screen URI, with `{room}` for the room (`{room}-screen`).
    pub screen_user: String,
    /// Users who may present (and watch) in any room without being in it.
    pub presenters: Vec<String>,
    /// `"refuse"` (403) or `"take_over"`.
    pub second_presenter: SecondPresenter,
    /// `"participants"` of the room, or `"anyone"`.
    pub viewers: ViewerPolicy,
    /// Where the conference plugin's room records are (`plugin/<its instance name>`).
    pub conference_namespace: String,
    /// The one video codec of every leg: `vp8`, `h264`, `vp9` or `av1`.
    pub codec: String,
    /// A viewer whose receiver reports say it lost at least this share of the packets
    /// (percent, 1..=100) is logged, and again when it recovers below half of it.
    pub loss_warn_percent: u32,
}

impl Default for ScreenshareConfig {
    fn default() -> Self {
        ScreenshareConfig {
            screen_user: "screen-{room}".to_owned(),
            presenters: Vec::new(),
            second_presenter: SecondPresenter::Refuse,
            viewers: ViewerPolicy::Participants,
            conference_namespace: "plugin/conference".to_owned(),
            codec: "vp8".to_owned(),
            loss_warn_percent: 5,
        }
    }
}

/// One call to a screen URI.
#[derive(Debug)]
struct Call {
    session: MediaSessionId,
    room: String,
    role: Role,
    /// The video stream of the leg.
    mid: String,
    dialog: UasDialog,
    /// The caller's user, or their display name when they did not log in.
    who: String,
    /// A viewer's reception per its receiver reports.
    loss: ViewerLoss,
}

/// A room's running presentation.
#[derive(Debug)]
struct Presentation {
    /// The presenter's Call-ID.
    call_id: String,
    user: String,
    /// The presenter's display name.
    display: String,
    screen_uri: String,
    /// When it started (for the duration in `presentation.stopped`).
    since: Instant,
    /// Whether the presenter is allowed by `presenters` (then leaving the room ends nothing).
    by_role: bool,
    session: MediaSessionId,
    mid: String,
    /// The viewers' Call-IDs.
    viewers: BTreeSet<String>,
}

/// The plugin instance.
#[derive(Debug)]
pub struct Screenshare {
    names: ScreenName,
    policy: Policy,
    conference_ns: String,
    codec: String,
    /// `loss_warn_percent` in 1/256.
    loss_threshold: u8,
    calls: HashMap<String, Call>,
    by_session: HashMap<MediaSessionId, String>,
    /// Running presentations by room.
    presentations: HashMap<String, Presentation>,
    rooms_watch: WatchId,
}

impl Plugin for Screenshare {
    fn init(host: &Host, config: &Config, claims: &mut Claims) -> Result<Self> {
        let config: ScreenshareConfig = config.parse()?;
        let invalid = |msg: String| {
            huddle_sdk::warn!(host, "bad configuration: {msg}");
            Error::InvalidArgument
        };
        let names = ScreenName::parse(&config.screen_user).map_err(invalid)?;
        let codec = config.codec.to_ascii_lowercase();
        if !CODECS.contains(&codec.as_str()) {
            return Err(invalid(format!(
                "codec {:?} is not one of {}",
                config.codec,
                CODECS.join(", ")
            )));
        }
        let loss_threshold = loss::threshold_of(config.loss_warn_percent).map_err(invalid)?;
        if !config.conference_namespace.starts_with("plugin/") {
            return Err(invalid(format!(
                "conference_namespace {:?} must be plugin/<conference instance name>",
                config.conference_namespace
            )));
        }
        let rooms_watch = host
            .namespace(&config.conference_namespace)
            .watch(ROOMS.as_bytes())
            .map_err(|e| {
                invalid(format!(
                    "cannot watch {}/{ROOMS}: {e}",
                    config.conference_namespace
                ))
            })?;
        // Presentations of a previous run ended with it.
        for (key, _) in host.store().scan_all(PRESENTATIONS.as_bytes())? {
            host.store().delete(&key)?;
        }
        // Where clients find the screen URIs: the host's demo page reads this.
        let about = serde_json::json!({"v": 1, "screen_user": config.screen_user});
        host.store()
            .put(ABOUT.as_bytes(), about.to_string().as_bytes())?;
        let pattern = names.pattern();
        claims.add(Claim::method("INVITE").with_user(&pattern));
        claims.add(Claim::method("BYE").with_user(&pattern));
        huddle_sdk::info!(
            host,
            "screen share: present or watch at sip:{pattern}@<domain> ({codec}, rooms from {})",
            config.conference_namespace
        );
        Ok(Screenshare {
            names,
            policy: Policy {
                presenters: config.presenters,
                second_presenter: config.second_presenter,
                viewers: config.viewers,
            },
            conference_ns: config.conference_namespace,
            codec,
            loss_threshold,
            calls: HashMap::new(),
            by_session: HashMap::new(),
            presentations: HashMap::new(),
            rooms_watch,
        })
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
                    self.ended(host, &call_id, call, StopReason::Hangup);
                    Ok(())
                }
                None => host.reply(&request, 481, "Call/Transaction Does Not Exist"),
            },
            // ACK for our 2xx; CANCEL comes too late (INVITEs are answered at once).
            Method::Ack | Method::Cancel => Ok(()),
            _ => host.reply(&request, 405, "Method Not Allowed"),
        }
    }

    fn handle_response(&mut self, host: &Host, response: Response) -> Result<()> {
        // Only our BYEs get responses; nothing depends on them.
        if response.is_final() && response.status() >= 300 {
            huddle_sdk::debug!(host, "BYE answered {}", response.status());
        }
        Ok(())
    }

    fn media_ready(&mut self, host: &Host, session: MediaSessionId) -> Result<()> {
        let Some(call) = self.call_of(session) else {
            return Ok(());
        };
        // A viewer is connected: the presenter's next key frame is its first picture. Without
        // this it would wait for the presenter's periodic key frame (or its own PLI after
        // failing to decode), seconds for a screen encoder.
        if let Some(p) = self.presentations.get(&call.room) {
            if call.role == Role::View || !p.viewers.is_empty() {
                let _ = host.request_keyframe(p.session, &p.mid);
            }
        }
        Ok(())
    }

    fn media_bitrate(&mut self, host: &Host, session: MediaSessionId, bps: u64) -> Result<()> {
        // Reported, not acted on: the presenter's encoder follows its own link only.
        if let Some(call) = self.call_of(session) {
            huddle_sdk::trace!(
                host,
                "{:?} in {}: estimate towards the peer {bps} bit/s",
                call.role,
                call.room
            );
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
        self.ended(host, &call_id, call, StopReason::MediaFailure);
        sent
    }

    fn incoming_rtcp(&mut self, host: &Host, session: MediaSessionId, packet: &[u8]) -> Result<()> {
        // Only viewers' reports are accounted: they describe the viewer's own leg and are never
        // turned into pressure on the presenter (the relay forwards what arrives).
        let threshold = self.loss_threshold;
        let Some(call) = self
            .by_session
            .get(&session)
            .and_then(|id| self.calls.get_mut(id))
            .filter(|c| c.role == Role::View)
        else {
            return Ok(());
        };
        match call.loss.observe(packet, threshold) {
            Some(Crossing::Above) => huddle_sdk::warn!(
                host,
                "viewer {} in {} loses {}% of the screen's packets ({} lost so far)",
                call.who,
                call.room,
                call.loss.percent(),
                call.loss.cumulative_lost
            ),
            Some(Crossing::Below) => huddle_sdk::info!(
                host,
                "viewer {} in {} recovered: {}% lost now",
                call.who,
                call.room,
                call.loss.percent()
            ),
            None => {}
        }
        Ok(())
    }

    fn admin_request(&mut self, _host: &Host, request: &str) -> Result<String> {
        Ok(admin_answer(&self.presentations, &self.calls, request))
    }

    fn on_store_change(&mut self, host: &Host, change: StoreChange) -> Result<()> {
        if change.watch() != self.rooms_watch {
            return Ok(());
        }
        let rooms: Vec<String> = match &change {
            StoreChange::Put { key, .. } | StoreChange::Delete { key, .. } => {
                match std::str::from_utf8(key)
                    .ok()
                    .and_then(|k| k.strip_prefix(ROOMS))
                {
                    Some(room) => vec![room.to_owned()],
                    None => return Ok(()),
                }
            }
            // Changes were lost: check every presentation against the current records.
            StoreChange::Lagged { .. } => self.presentations.keys().cloned().collect(),
        };
        for room in rooms {
            self.check_presenter_in_room(host, &room);
        }
        Ok(())
    }

    fn shutdown(&mut self, host: &Host) {
        for room in self.presentations.keys() {
            let _ = host
                .store()
                .delete(format!("{PRESENTATIONS}{room}").as_bytes());
        }
        // No relay, no screen URIs: the conference stops handing screen calls over.
        let _ = host.store().delete(ABOUT.as_bytes());
    }
}

impl Screenshare {
    fn call_of(&self, session: MediaSessionId) -> Option<&Call> {
        self.by_session
            .get(&session)
            .and_then(|id| self.calls.get(id))
    }

    /// The conference plugin's record of `room`, if the room is live.
    fn room_record(&self, host: &Host, room: &str) -> Option<RoomRecord> {
        host.namespace(&self.conference_ns)
            .get(format!("{ROOMS}{room}").as_bytes())
            .ok()
            .flatten()
            .and_then(|bytes| RoomRecord::parse(&bytes))
    }

    fn invite(&mut self, host: &Host, request: Request, call_id: String) -> Result<()> {
        let in_dialog = request
            .message()
            .to_header()
            .ok()
            .and_then(|t| t.tag())
            .is_some();
        if in_dialog {
            return self.reinvite(host, request, &call_id);
        }
        if self.calls.contains_key(&call_id) {
            // A retransmission the host did not absorb: answered already.
            return Ok(());
        }
        let Some(room) = request
            .uri_user()
            .and_then(|u| self.names.room_of(u))
            .map(str::to_owned)
        else {
            return host.reply(&request, 404, "Not Found - No Such Room");
        };
        if request.body().is_empty() {
            return host.reply(&request, 488, "Not Acceptable Here - SDP Offer Required");
        }
        let offer = String::from_utf8_lossy(request.body()).into_owned();
        let role = match sdp::role_of(&offer) {
            Ok(role) => role,
            Err(e) => return host.reply(&request, 488, e.reason()),
        };
        let from = request
            .message()
            .header(&HeaderName::From)
            .unwrap_or_default()
            .to_owned();
        let caller = Caller {
            user: request.info().auth_user.clone(),
            display: presentation::display_name_of(&from),
        };
        let record = self.room_record(host, &room);
        let current = self.presentations.get(&room).map(|p| Current {
            user: &p.user,
            call_id: &p.call_id,
        });
        let admission = match role {
            Role::Present => self
                .policy
                .admit_presenter(&room, &caller, record.as_ref(), current),
            Role::View => self
                .policy
                .admit_viewer(&room, &caller, record.as_ref(), current),
        };
        if let Admission::Refuse(status, reason) = &admission {
            huddle_sdk::info!(
                host,
                "{} refused ({:?}) in room {room}: {reason}",
                caller.display,
                role
            );
            return host.reply(&request, *status, reason);
        }
        let narrowed = match sdp::narrow_offer(&offer, &self.codec) {
            Ok(n) => n,
            Err(e) => return host.reply(&request, 488, e.reason()),
        };
        let (session, answer) = match host.media_answer(None, narrowed.as_bytes()) {
            Ok(a) => a,
            Err(e) => return refuse_offer(host, &request, e),
        };
        let Some(mid) = sdp::video_mid(&String::from_utf8_lossy(&answer)) else {
            let _ = host.close_media(session);
            return host.reply(&request, 488, sdp::OfferError::NoCodec.reason());
        };
        let local_uri = strip_params(request.uri()).to_owned();
        let response = request
            .response(200, "OK")
            .header("Contact", &format!("<{local_uri}>"))
            .header("Allow", "INVITE, ACK, BYE, CANCEL")
            .body("application/sdp", &answer)
            .build();
        host.respond(
            request.transaction().ok_or(Error::UnknownTransaction)?,
            &response,
        )?;
        let call = Call {
            session,
            room: room.clone(),
            role,
            mid: mid.clone(),
            dialog: UasDialog::accept(&request),
            who: caller
                .user
                .clone()
                .unwrap_or_else(|| caller.display.clone()),
            loss: ViewerLoss::default(),
        };
        self.by_session.insert(session, call_id.clone());
        self.calls.insert(call_id.clone(), call);
        match admission {
            Admission::View => {
                if let Some(p) = self.presentations.get_mut(&room) {
                    p.viewers.insert(call_id.clone());
                    host.forward_stream(p.session, &p.mid, session, &mid)?;
                }
                huddle_sdk::info!(
                    host,
                    "{} watches the presentation in {room}",
                    caller.display
                );
            }
            Admission::Present | Admission::TakeOver(_) => {
                let mut viewers = BTreeSet::new();
                if let Admission::TakeOver(old) = &admission {
                    viewers = self.take_over(host, &room, old);
                }
                let user = caller.user.clone().unwrap_or_default();
                let by_role = self.policy.presenters.contains(&user)
                    && !record.as_ref().is_some_and(|r| r.has_member(&user));
                for viewer in &viewers {
                    if let Some(v) = self.calls.get(viewer) {
                        host.forward_stream(session, &mid, v.session, &v.mid)?;
                    }
                }
                let domain = strip_params(request.uri())
                    .rsplit('@')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let screen_uri = format!("sip:{}@{domain}", self.names.user_of(&room));
                let record = PresentationRecord {
                    v: 1,
                    room: room.clone(),
                    presenter: user.clone(),
                    display: caller.display.clone(),
                    screen_uri: screen_uri.clone(),
                    started: SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                    session: session.0,
                    video_mid: mid.clone(),
                    codec: self.codec.clone(),
                };
                host.store().put(
                    format!("{PRESENTATIONS}{room}").as_bytes(),
                    &record.to_bytes(),
                )?;
                emit(
                    host,
                    "presentation.started",
                    &events::started(&Presenting {
                        room: &room,
                        presenter: &user,
                        display: &caller.display,
                        screen_uri: &screen_uri,
                    }),
                );
                self.presentations.insert(
                    room.clone(),
                    Presentation {
                        call_id,
                        user,
                        display: caller.display.clone(),
                        screen_uri,
                        since: Instant::now(),
                        by_role,
                        session,
                        mid,
                        viewers,
                    },
                );
                huddle_sdk::info!(host, "{} presents in {room}", caller.display);
            }
            Admission::Refuse(..) => {}
        }
        Ok(())
    }

    /// Ends the presentation of call `old` in `room` (its presenter gets a BYE) and returns its
    /// viewers, who stay for the new presenter.
    fn take_over(&mut self, host: &Host, room: &str, old: &str) -> BTreeSet<String> {
        let Some(p) = self.presentations.remove(room) else {
            return BTreeSet::new();
        };
        if let Some(mut call) = self.calls.remove(old) {
            self.by_session.remove(&call.session);
            huddle_sdk::info!(host, "{} loses the presentation in {room}", p.user);
            let _ = call.dialog.send_bye(host);
            let _ = host.close_media(call.session);
        }
        p.emit_stopped(host, room, StopReason::TakenOver);
        p.viewers
    }

    /// A re-INVITE (ICE restart, a refreshed offer): renegotiated on the same session with the
    /// same codec. The role stays what the call started as.
    fn reinvite(&mut self, host: &Host, request: Request, call_id: &str) -> Result<()> {
        let Some(call) = self.calls.get(call_id) else {
            return host.reply(&request, 481, "Call/Transaction Does Not Exist");
        };
        if request.body().is_empty() {
            return host.reply(&request, 488, "Not Acceptable Here - SDP Offer Required");
        }
        let offer = String::from_utf8_lossy(request.body()).into_owned();
        // Still one video stream and nothing else; `inactive` (held) is fine in a re-INVITE.
        let shape = match sdp::role_of(&offer) {
            Err(sdp::OfferError::Inactive) => Ok(()),
            other => other.map(drop),
        };
        let narrowed = match shape.and_then(|()| sdp::narrow_offer(&offer, &self.codec)) {
            Ok(n) => n,
            Err(e) => return host.reply(&request, 488, e.reason()),
        };
        let answer = match host.media_answer(Some(call.session), narrowed.as_bytes()) {
            Ok((_, a)) => a,
            Err(e) => return refuse_offer(host, &request, e),
        };
        let response = request
            .response(200, "OK")
            .header("Contact", &format!("<{}>", call.dialog.local_uri))
            .body("application/sdp", &answer)
            .build();
        host.respond(
            request.transaction().ok_or(Error::UnknownTransaction)?,
            &response,
        )
    }

    /// A call is gone (BYE either way, or its media failed): a presenter's end ends the
    /// presentation; a viewer just leaves it.
    fn ended(&mut self, host: &Host, call_id: &str, call: Call, reason: StopReason) {
        match call.role {
            Role::View => {
                if let Some(p) = self.presentations.get_mut(&call.room) {
                    p.viewers.remove(call_id);
                }
            }
            Role::Present => {
                let ours = self
                    .presentations
                    .get(&call.room)
                    .is_some_and(|p| p.call_id == call_id);
                if ours {
                    self.end_presentation(host, &call.room, reason);
                }
            }
        }
    }

    /// Ends `room`'s presentation: its record goes, every viewer gets a BYE.
    fn end_presentation(&mut self, host: &Host, room: &str, why: StopReason) {
        let Some(p) = self.presentations.remove(room) else {
            return;
        };
        let _ = host
            .store()
            .delete(format!("{PRESENTATIONS}{room}").as_bytes());
        huddle_sdk::info!(
            host,
            "presentation in {room} by {} ended: {}; {} viewer(s) hung up",
            p.user,
            why.describe(),
            p.viewers.len()
        );
        p.emit_stopped(host, room, why);
        for viewer in p.viewers {
            if let Some(mut call) = self.calls.remove(&viewer) {
                self.by_session.remove(&call.session);
                let _ = call.dialog.send_bye(host);
                let _ = host.close_media(call.session);
            }
        }
    }

    /// The conference record of `room` changed: a presenter who is no longer in the room (and
    /// not a presenter by role) loses the presentation, and their screen call is ended.
    fn check_presenter_in_room(&mut self, host: &Host, room: &str) {
        let Some(p) = self.presentations.get(room) else {
            return;
        };
        if p.by_role {
            return;
        }
        let record = self.room_record(host, room);
        if record.is_some_and(|r| r.has_member(&p.user)) {
            return;
        }
        let presenter = p.call_id.clone();
        if let Some(mut call) = self.calls.remove(&presenter) {
            self.by_session.remove(&call.session);
            let _ = call.dialog.send_bye(host);
            let _ = host.close_media(call.session);
        }
        self.end_presentation(host, room, StopReason::LeftRoom);
    }
}

impl Presentation {
    fn emit_stopped(&self, host: &Host, room: &str, reason: StopReason) {
        let who = Presenting {
            room,
            presenter: &self.user,
            display: &self.display,
            screen_uri: &self.screen_uri,
        };
        emit(
            host,
            "presentation.stopped",
            &events::stopped(&who, reason, self.since.elapsed()),
        );
    }
}

/// Raises a webhook event when the host takes events (ABI 1.2 and `EVENTS`); best effort.
fn emit(host: &Host, kind: &str, details: &str) {
    match host.emit_event(kind, details) {
        Ok(()) | Err(Error::NotSupported) => {}
        Err(e) => huddle_sdk::debug!(host, "event {kind} not raised: {e}"),
    }
}

/// The admin command (ABI 1.2 `admin_request`, `POST /plugins/<name>/admin`):
/// `{"command": "presentations"}` → `{"presentations": [{"room", "presenter", "display",
/// "screen_uri", "duration_ms", "viewers": [{"call_id", "viewer", "fraction_lost_percent",
/// "cumulative_lost", "reports", "lossy"}]}]}`, rooms in name order. Anything else is a
/// `bad_request` error object.
fn admin_answer(
    presentations: &HashMap<String, Presentation>,
    calls: &HashMap<String, Call>,
    request: &str,
) -> String {
    use serde_json::{json, Value};
    let command = serde_json::from_str::<Value>(request)
        .ok()
        .and_then(|v| v.get("command").and_then(Value::as_str).map(str::to_owned));
    if command.as_deref() != Some("presentations") {
        return json!({"error": {"code": "bad_request",
            "message": "commands: {\"command\": \"presentations\"}"}})
        .to_string();
    }
    let mut rooms: Vec<_> = presentations.iter().collect();
    rooms.sort_by(|a, b| a.0.cmp(b.0));
    let list: Vec<Value> = rooms
        .into_iter()
        .map(|(room, p)| {
            let viewers: Vec<Value> = p
                .viewers
                .iter()
                .filter_map(|id| calls.get(id).map(|c| (id, c)))
                .map(|(id, c)| {
                    json!({
                        "call_id": id,
                        "viewer": c.who,
                        "fraction_lost_percent": c.loss.percent(),
                        "cumulative_lost": c.loss.cumulative_lost,
                        "reports": c.loss.reports,
                        "lossy": c.loss.lossy,
                    })
                })
                .collect();
            json!({
                "room": room,
                "presenter": p.user,
                "display": p.display,
                "screen_uri": p.screen_uri,
                "duration_ms": u64::try_from(p.since.elapsed().as_millis()).unwrap_or(u64::MAX),
                "viewers": viewers,
            })
        })
        .collect();
    json!({ "presentations": list }).to_string()
}

huddle_sdk::export_plugin!(
    Screenshare,
    "screenshare",
    env!("CARGO_PKG_VERSION"),
    Capabilities::SEND_REQUEST
        .with(Capabilities::MEDIA)
        .with(Capabilities::STORE)
        .with(Capabilities::STORE_WATCH)
);

#[cfg(test)]
mod tests {
    //! The relay through the real C ABI with no server (FakeHost): who may present and watch,
    //! what is forwarded where, key frames for newcomers, and how presentations end.

    use super::*;
    use huddle_sdk::fake::{FakeHost, FakePlugin, MediaCall};
    use huddle_sdk::{Level, RequestInfo, Transport};

    const CONF: &str = "plugin/conference";
    const PRESENT: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 97 102\r\na=mid:0\r\na=sendrecv\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\na=rtpmap:102 H264/90000\r\n";

    fn view_offer() -> String {
        PRESENT.replace("a=sendrecv", "a=recvonly")
    }

    fn start(config: &str) -> (FakeHost, FakePlugin) {
        let host = FakeHost::with_capabilities(Capabilities::ALL.with(Capabilities::EVENTS));
        host.allow_namespace(CONF);
        let plugin = host
            .start(&huddle_plugin_export::entry(), config)
            .expect("screenshare starts");
        (host, plugin)
    }

    /// The conference plugin's record of room `team` with these members.
    fn seat(host: &FakeHost, members: &[&str]) {
        let people: Vec<String> = members
            .iter()
            .map(|m| {
                format!("{{\"entity\":\"{m}\",\"display\":\"{m}\",\"audio\":true,\"video\":true}}")
            })
            .collect();
        let record = format!(
            "{{\"v\":1,\"room\":\"team\",\"participants\":[{}]}}",
            people.join(",")
        );
        host.put(CONF, b"rooms/team", record.as_bytes());
    }

    fn invite(user: &str, call_id: &str, body: &str) -> String {
        format!(
            "INVITE sip:screen-team@example.test;transport=ws SIP/2.0\r\n\
             Via: SIP/2.0/WS h.invalid;branch=z9hG4bK{call_id}\r\nMax-Forwards: 70\r\n\
             From: \"{user}\" <sip:{user}@example.test>;tag=t-{call_id}\r\nTo: <sip:screen-team@example.test>\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:{user}@x.invalid;transport=ws>\r\n\
             Record-Route: <sip:127.0.0.1:5060;transport=ws;lr;ftok={user}>\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    fn bye(call_id: &str, to_tag: &str) -> String {
        format!(
            "BYE sip:screen-team@example.test SIP/2.0\r\nVia: SIP/2.0/WS h.invalid;branch=z9hG4bKbye{call_id}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:x@example.test>;tag=t-{call_id}\r\nTo: <sip:screen-team@example.test>;tag={to_tag}\r\n\
             Call-ID: {call_id}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
        )
    }

    /// Sends an INVITE as `user` (authenticated); returns the final status, its reason and our
    /// To tag.
    fn call(
        host: &FakeHost,
        plugin: &mut FakePlugin,
        user: &str,
        call_id: &str,
        body: &str,
    ) -> (u16, String, String) {
        let info = RequestInfo::new(Transport::Ws, None).authenticated(user);
        let txn = plugin
            .request_with(invite(user, call_id, body), &info)
            .unwrap();
        let r = host.final_response(txn).expect("answered");
        let reason = r.message.reason().unwrap_or_default().to_owned();
        let tag = r
            .message
            .to_header()
            .ok()
            .and_then(|t| t.tag().map(str::to_owned))
            .unwrap_or_default();
        (r.status(), reason, tag)
    }

    fn sessions(host: &FakeHost) -> Vec<MediaSessionId> {
        host.media_calls()
            .into_iter()
            .filter_map(|c| match c {
                MediaCall::Answer { session, .. } => Some(session),
                _ => None,
            })
            .collect()
    }

    fn byes_to(host: &FakeHost) -> Vec<String> {
        host.sent_requests()
            .iter()
            .filter(|r| r.message.method() == Some(&Method::Bye))
            .filter_map(|r| r.message.call_id().map(str::to_owned))
            .collect()
    }

    #[test]
    fn claims_the_screen_uris_and_checks_its_config() {
        let (host, plugin) = start("");
        assert_eq!(
            plugin.claims(),
            &[
                Claim::method("INVITE").with_user("screen-*"),
                Claim::method("BYE").with_user("screen-*")
            ],
            "the default cannot overlap the conference's on-demand prefix room-"
        );
        let about: serde_json::Value =
            serde_json::from_slice(&host.get("", b"about").expect("about")).unwrap();
        assert_eq!(
            about["screen_user"], "screen-{room}",
            "clients learn the template"
        );
        let host = plugin.stop();
        assert_eq!(
            host.get("", b"about"),
            None,
            "a stopped relay takes no screens: the conference stops handing them over"
        );
        let (_, plugin) = start("screen_user = \"{room}-screen\"");
        assert!(plugin
            .claims()
            .contains(&Claim::method("INVITE").with_user("*-screen")));
        for (bad, says) in [
            ("screen_user = \"{room}\"", "prefix or suffix"),
            ("codec = \"theora\"", "theora"),
            ("conference_namespace = \"location\"", "plugin/"),
            ("loss_warn_percent = 0", "loss_warn_percent"),
        ] {
            let host = FakeHost::with_capabilities(Capabilities::ALL);
            host.allow_namespace(CONF);
            assert!(
                host.start(&huddle_plugin_export::entry(), bad).is_err(),
                "{bad}"
            );
            assert!(host.logged(Level::Warn, says), "{bad}: {:?}", host.logs());
        }
    }

    #[test]
    fn a_participant_presents_and_a_viewer_gets_the_stream_and_a_key_frame() {
        let (host, mut plugin) = start("");
        seat(&host, &["alice", "bob"]);
        let (status, _, _) = call(&host, &mut plugin, "alice", "p1", PRESENT);
        assert_eq!(status, 200);
        let presenter = sessions(&host)[0];
        // The host saw the offer narrowed to VP8 and its RTX, and sendonly.
        let MediaCall::Answer { offer, .. } = &host.media_calls()[0] else {
            panic!("an answer first");
        };
        let offer = String::from_utf8_lossy(offer);
        assert!(
            offer.contains("m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\n"),
            "{offer}"
        );
        assert!(offer.contains("a=sendonly"), "{offer}");
        let record = host.get("", b"presentations/team").expect("record");
        let record: PresentationRecord = serde_json::from_slice(&record).unwrap();
        assert_eq!(record.presenter, "alice");
        assert_eq!(record.screen_uri, "sip:screen-team@example.test");
        assert_eq!(
            (
                record.session,
                record.video_mid.as_str(),
                record.codec.as_str()
            ),
            (presenter.0, "1", "vp8"),
            "where a tapper finds the screen"
        );

        let (status, _, _) = call(&host, &mut plugin, "bob", "v1", &view_offer());
        assert_eq!(status, 200);
        let viewer = sessions(&host)[1];
        assert!(host.media_calls().contains(&MediaCall::Forward {
            src: presenter,
            src_mid: "1".into(),
            dst: viewer,
            dst_mid: "1".into()
        }));
        plugin.media_ready(viewer).unwrap();
        assert_eq!(
            host.media_calls().last(),
            Some(&MediaCall::Keyframe {
                session: presenter,
                mid: "1".into()
            }),
            "the late joiner's first picture is asked for at once"
        );
    }

    #[test]
    fn strangers_audio_and_viewers_without_a_presentation_are_refused() {
        let (host, mut plugin) = start("");
        seat(&host, &["alice"]);
        let (status, reason, _) = call(&host, &mut plugin, "mallory", "m1", PRESENT);
        assert_eq!(
            (status, reason.as_str()),
            (403, "Forbidden - Join Room team To Present")
        );
        let (status, reason, _) = call(&host, &mut plugin, "alice", "v0", &view_offer());
        assert_eq!(
            (status, reason.as_str()),
            (480, "Temporarily Unavailable - No Presentation In team")
        );
        let with_audio = PRESENT.replace(
            "m=video",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:a\r\nm=video",
        );
        let (status, reason, _) = call(&host, &mut plugin, "alice", "a1", &with_audio);
        assert_eq!(
            (status, reason.as_str()),
            (488, "Not Acceptable Here - Screen Share Is Video Only")
        );
        assert!(sessions(&host).is_empty(), "no media session for a refusal");
        // By role: `presenters` need no seat.
        let (host, mut plugin) = start("presenters = [\"mallory\"]");
        assert_eq!(call(&host, &mut plugin, "mallory", "m2", PRESENT).0, 200);
    }

    fn reinvite(call_id: &str, to_tag: &str, body: &str) -> String {
        invite("x", call_id, body)
            .replace(
                "To: <sip:screen-team@example.test>",
                &format!("To: <sip:screen-team@example.test>;tag={to_tag}"),
            )
            .replace("CSeq: 1 INVITE", "CSeq: 2 INVITE")
    }

    #[test]
    fn a_reinvite_renegotiates_the_same_leg_and_may_hold_but_not_add_audio() {
        let (host, mut plugin) = start("");
        seat(&host, &["alice"]);
        let (_, _, tag) = call(&host, &mut plugin, "alice", "p1", PRESENT);
        let session = sessions(&host)[0];
        let held = PRESENT.replace("a=sendrecv", "a=inactive");
        let txn = plugin.request(reinvite("p1", &tag, &held)).unwrap();
        assert_eq!(host.final_response(txn).unwrap().status(), 200);
        assert_eq!(sessions(&host), [session, session], "the same session");
        let with_audio = PRESENT.replace(
            "m=video",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:a\r\nm=video",
        );
        let txn = plugin.request(reinvite("p1", &tag, &with_audio)).unwrap();
        assert_eq!(host.final_response(txn).unwrap().status(), 488);
        let txn = plugin.request(reinvite("nope", "x", PRESENT)).unwrap();
        assert_eq!(host.final_response(txn).unwrap().status(), 481);
    }

    #[test]
    fn a_second_presenter_is_refused_by_default() {
        let (host, mut plugin) = start("");
        seat(&host, &["alice", "bob"]);
        assert_eq!(call(&host, &mut plugin, "alice", "p1", PRESENT).0, 200);
        let (status, reason, _) = call(&host, &mut plugin, "bob", "p2", PRESENT);
        assert_eq!(
            (status, reason.as_str()),
            (403, "Forbidden - alice Is Presenting In team")
        );
        assert!(byes_to(&host).is_empty());
    }

    #[test]
    fn a_second_presenter_takes_over_when_configured_and_viewers_follow() {
        let (host, mut plugin) = start("second_presenter = \"take_over\"");
        seat(&host, &["alice", "bob", "carol"]);
        assert_eq!(call(&host, &mut plugin, "alice", "p1", PRESENT).0, 200);
        assert_eq!(
            call(&host, &mut plugin, "carol", "v1", &view_offer()).0,
            200
        );
        assert_eq!(call(&host, &mut plugin, "bob", "p2", PRESENT).0, 200);
        let [alice, viewer, bob] = sessions(&host)[..] else {
            panic!("three sessions");
        };
        assert_eq!(byes_to(&host), ["p1"], "alice's screen call is ended");
        assert!(host
            .media_calls()
            .contains(&MediaCall::Close { session: alice }));
        assert!(host.media_calls().contains(&MediaCall::Forward {
            src: bob,
            src_mid: "1".into(),
            dst: viewer,
            dst_mid: "1".into()
        }));
        let record: PresentationRecord =
            serde_json::from_slice(&host.get("", b"presentations/team").unwrap()).unwrap();
        assert_eq!(record.presenter, "bob");
    }

    #[test]
    fn the_presenter_hanging_up_ends_the_viewers_calls_and_the_record() {
        let (host, mut plugin) = start("");
        seat(&host, &["alice", "bob"]);
        let (_, _, tag) = call(&host, &mut plugin, "alice", "p1", PRESENT);
        call(&host, &mut plugin, "bob", "v1", &view_offer());
        let [presenter, viewer] = sessions(&host)[..] else {
            panic!("two sessions");
        };
        let txn = plugin.request(bye("p1", &tag)).unwrap();
        assert_eq!(host.final_response(txn).unwrap().status(), 200);
        assert_eq!(byes_to(&host), ["v1"]);
        let bye = &host.sent_requests()[0].message;
        assert_eq!(bye.request_uri(), Some("sip:bob@x.invalid;transport=ws"));
        assert_eq!(
            bye.header(&HeaderName::Route),
            Some("<sip:127.0.0.1:5060;transport=ws;lr;ftok=bob>")
        );
        for s in [presenter, viewer] {
            assert!(host
                .media_calls()
                .contains(&MediaCall::Close { session: s }));
        }
        assert_eq!(host.get("", b"presentations/team"), None);
        // The room is free again.
        assert_eq!(call(&host, &mut plugin, "bob", "p3", PRESENT).0, 200);
    }

    #[test]
    fn the_presenter_leaving_the_room_ends_the_presentation() {
        let (host, mut plugin) = start("");
        seat(&host, &["alice", "bob"]);
        call(&host, &mut plugin, "alice", "p1", PRESENT);
        call(&host, &mut plugin, "bob", "v1", &view_offer());
        // bob leaving changes nothing for the presentation.
        seat(&host, &["alice"]);
        plugin.deliver_changes().unwrap();
        assert!(byes_to(&host).is_empty());
        seat(&host, &["bob"]);
        plugin.deliver_changes().unwrap();
        let mut byes = byes_to(&host);
        byes.sort();
        assert_eq!(byes, ["p1", "v1"]);
        assert_eq!(host.get("", b"presentations/team"), None);
        // The room emptied entirely: nothing left to end, nothing breaks.
        host.delete(CONF, b"rooms/team");
        plugin.deliver_changes().unwrap();
    }

    #[test]
    fn a_failed_presenter_leg_ends_the_presentation_and_stale_records_are_cleared() {
        let host = FakeHost::with_capabilities(Capabilities::ALL);
        host.allow_namespace(CONF);
        host.put("", b"presentations/old", b"{}");
        let mut plugin = host.start(&huddle_plugin_export::entry(), "").unwrap();
        assert_eq!(host.get("", b"presentations/old"), None, "cleared at start");
        seat(&host, &["alice", "bob"]);
        call(&host, &mut plugin, "alice", "p1", PRESENT);
        call(&host, &mut plugin, "bob", "v1", &view_offer());
        let presenter = sessions(&host)[0];
        plugin
            .media_hangup(presenter, HangupReason::Transport)
            .unwrap();
        let mut byes = byes_to(&host);
        byes.sort();
        assert_eq!(byes, ["p1", "v1"]);
        assert_eq!(host.get("", b"presentations/team"), None);
    }

    /// The (kind, reason or presenter) of every event raised so far, in order.
    fn events_of(host: &FakeHost) -> Vec<(String, String)> {
        host.events()
            .into_iter()
            .map(|(kind, body)| {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(v["room"], "team", "{body}");
                let what = if kind == "presentation.stopped" {
                    assert!(v["duration_ms"].is_u64(), "{body}");
                    format!(
                        "{} {}",
                        v["presenter"].as_str().unwrap(),
                        v["reason"].as_str().unwrap()
                    )
                } else {
                    assert_eq!(v["screen_uri"], "sip:screen-team@example.test", "{body}");
                    v["presenter"].as_str().unwrap().to_owned()
                };
                (kind, what)
            })
            .collect()
    }

    fn started(who: &str) -> (String, String) {
        ("presentation.started".to_owned(), who.to_owned())
    }

    fn stopped(who_why: &str) -> (String, String) {
        ("presentation.stopped".to_owned(), who_why.to_owned())
    }

    #[test]
    fn every_way_a_presentation_ends_raises_its_event_with_the_reason() {
        let (host, mut plugin) = start("second_presenter = \"take_over\"");
        seat(&host, &["alice", "bob"]);
        // Hang-up.
        let (_, _, tag) = call(&host, &mut plugin, "alice", "p1", PRESENT);
        let txn = plugin.request(bye("p1", &tag)).unwrap();
        assert_eq!(host.final_response(txn).unwrap().status(), 200);
        // Taken over, then the new presenter's media fails.
        call(&host, &mut plugin, "alice", "p2", PRESENT);
        call(&host, &mut plugin, "bob", "p3", PRESENT);
        let bobs = *sessions(&host).last().unwrap();
        plugin.media_hangup(bobs, HangupReason::Transport).unwrap();
        // Left the room.
        call(&host, &mut plugin, "alice", "p4", PRESENT);
        seat(&host, &["bob"]);
        plugin.deliver_changes().unwrap();
        assert_eq!(
            events_of(&host),
            [
                started("alice"),
                stopped("alice hangup"),
                started("alice"),
                stopped("alice taken_over"),
                started("bob"),
                stopped("bob media_failure"),
                started("alice"),
                stopped("alice left_room"),
            ]
        );
    }

    /// A viewer's receiver report saying it lost `fraction`/256 of the packets.
    fn receiver_report(fraction: u8, cumulative: u32) -> Vec<u8> {
        use rtcp_types::{ReceiverReport, ReportBlock, RtcpPacketWriterExt};
        let rr = ReceiverReport::builder(7).add_report_block(
            ReportBlock::builder(9)
                .fraction_lost(fraction)
                .cumulative_lost(cumulative),
        );
        let mut buf = vec![0; 64];
        let n = rr.write_into(&mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn viewers_loss_is_in_the_admin_state_and_logged_when_it_crosses_the_threshold() {
        let (host, mut plugin) = start("loss_warn_percent = 10");
        seat(&host, &["alice", "bob", "carol"]);
        call(&host, &mut plugin, "alice", "p1", PRESENT);
        call(&host, &mut plugin, "bob", "v1", &view_offer());
        call(&host, &mut plugin, "carol", "v2", &view_offer());
        let [presenter, bob, carol] = sessions(&host)[..] else {
            panic!("three sessions");
        };
        let before = host.media_calls().len();
        plugin
            .incoming_rtcp(bob, &receiver_report(64, 120))
            .unwrap();
        plugin.incoming_rtcp(carol, &receiver_report(0, 0)).unwrap();
        // The presenter's own reports are not a viewer's loss.
        plugin
            .incoming_rtcp(presenter, &receiver_report(200, 9))
            .unwrap();
        assert!(
            host.logged(Level::Warn, "viewer bob in team loses 25%"),
            "{:?}",
            host.logs()
        );
        assert!(!host.logged(Level::Warn, "carol"));
        assert_eq!(
            host.media_calls().len(),
            before,
            "reports cause nothing on the media path (no pressure on the presenter)"
        );
        let answer: serde_json::Value = serde_json::from_str(
            &plugin
                .admin_request(r#"{"command":"presentations"}"#)
                .unwrap(),
        )
        .unwrap();
        let p = &answer["presentations"][0];
        assert_eq!(p["room"], "team");
        assert_eq!(p["presenter"], "alice");
        let viewers = p["viewers"].as_array().unwrap();
        assert_eq!(viewers.len(), 2, "{answer}");
        let bob_state = viewers.iter().find(|v| v["viewer"] == "bob").unwrap();
        assert_eq!(bob_state["fraction_lost_percent"], 25);
        assert_eq!(bob_state["cumulative_lost"], 120);
        assert_eq!(bob_state["lossy"], true);
        let carol_state = viewers.iter().find(|v| v["viewer"] == "carol").unwrap();
        assert_eq!(carol_state["lossy"], false);
        assert_eq!(carol_state["reports"], 1);
        // bob recovers.
        plugin.incoming_rtcp(bob, &receiver_report(3, 121)).unwrap();
        assert!(host.logged(Level::Info, "viewer bob in team recovered"));
        let wrong = plugin.admin_request(r#"{"command":"kick"}"#).unwrap();
        assert!(wrong.contains("bad_request"), "{wrong}");
    }
}
