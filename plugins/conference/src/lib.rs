//! `conference`: Huddle's video group chat, an MCU.
//!
//! Call `sip:<room>@<domain>` (SIPml5 `call-audiovideo`, JsSIP, SIP.js, a SIP phone) and you
//! receive one audio stream — everyone but yourself — and one composited video of the room:
//! the only way a single-stream client sees a group.
//!
//! * [`room`]: which rooms exist (configured, or on demand under a prefix), PINs (`;pin=` in
//!   the Request-URI or a `TP-BridgePin` header → 403 when wrong or missing), seats, members
//!   versus guests (public rooms admit callers who did not log in, under their display name).
//! * [`sdp`]: the offer narrowed to what the mixer decodes (Opus/PCMU/PCMA, VP8) before the
//!   host's media engine answers it.
//! * [`media`]: GStreamer pipelines (decode, composite, encode once per room) and the mixer
//!   thread; [`mix`] and [`layout`] are its pure parts.
//! * [`events`]: RFC 4575 conference-info for `SUBSCRIBE Event: conference` to a room, and the
//!   room record in the store (`plugin/conference/rooms/<room>`, plus
//!   `plugin/conference/in-meeting/<user>` per member) so presence can show "in a meeting".
//!
//! The SIP side follows `plugins/echo` (the template): the host answers SDP, adds ICE/DTLS, and
//! Record-Routes; our 200 carries the room URI as Contact so in-dialog requests come back here.
//! Callbacks run one at a time on the plugin's thread; media threads (GStreamer's and the
//! mixer's) only touch what `media.rs` shares with them.

pub mod admin;
pub mod events;
pub mod layout;
pub mod media;
pub mod mix;
pub mod room;
pub mod sdp;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use huddle_sdk::sip::headers::NameAddr;
use huddle_sdk::{
    Capabilities, Claim, Claims, Config, Error, HangupReason, HeaderName, Host, MediaSessionId,
    Method, NewRequest, Plugin, Request, RequestId, Response, Result,
};

use media::{LegSpec, RoomMedia};
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
}

impl Default for ConferenceConfig {
    fn default() -> Self {
        ConferenceConfig {
            rooms: Vec::new(),
            on_demand_prefix: "room-".to_owned(),
            on_demand: RoomSettings::default(),
            max_subscription_secs: 3600,
            max_subscriptions: 1000,
        }
    }
}

/// One participant's dialog.
#[derive(Debug)]
struct Call {
    session: MediaSessionId,
    room: String,
    entity: Option<String>,
    local_tag: String,
    remote: String,
    local_uri: String,
    remote_target: String,
    routes: Vec<String>,
    local_cseq: u32,
    audio_mid: Option<String>,
    video_mid: Option<String>,
    video_in: bool,
    display: String,
}

/// One `Event: conference` subscription.
#[derive(Debug)]
struct Subscription {
    room: String,
    room_uri: String,
    domain: String,
    local_tag: String,
    remote: String,
    remote_target: String,
    routes: Vec<String>,
    cseq: u32,
    version: u32,
    expires_at: Instant,
}

/// The plugin instance.
#[derive(Debug)]
pub struct Conference {
    rooms: Rooms,
    media: HashMap<String, RoomMedia>,
    calls: HashMap<String, Call>,
    by_session: HashMap<MediaSessionId, String>,
    subs: HashMap<String, Subscription>,
    notifies: HashMap<RequestId, String>,
    max_sub: u32,
    max_subs: usize,
    admin: admin::AdminState,
}

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
        gstreamer::init().map_err(|e| invalid(format!("GStreamer: {e}")))?;
        let mut users: Vec<String> = rooms.configured_names().map(str::to_owned).collect();
        if let Some(prefix) = rooms.on_demand_prefix() {
            users.push(format!("{prefix}*"));
        }
        for user in &users {
            claims.add(Claim::method("INVITE").with_user(user));
            claims.add(Claim::method("BYE").with_user(user));
            claims.add(
                Claim::method("SUBSCRIBE")
                    .with_event("conference")
                    .with_user(user),
            );
        }
        huddle_sdk::info!(host, "conference rooms: {}", users.join(", "));
        Ok(Conference {
            rooms,
            media: HashMap::new(),
            calls: HashMap::new(),
            by_session: HashMap::new(),
            subs: HashMap::new(),
            notifies: HashMap::new(),
            max_sub: config.max_subscription_secs,
            max_subs: config.max_subscriptions,
            admin: admin::AdminState::default(),
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
            m.force_keyframe();
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
        let Some(call) = self
            .by_session
            .get(&session)
            .and_then(|c| self.calls.get(c))
        else {
            return Ok(());
        };
        if let Some(m) = self.media.get(&call.room) {
            let audio = call.audio_mid.as_deref() == Some(mid);
            if audio && self.admin.is_muted(session.0) {
                return Ok(());
            }
            if audio || call.video_mid.as_deref() == Some(mid) {
                m.rtp(session.0, audio, packet);
            }
        }
        Ok(())
    }

    fn incoming_rtcp(
        &mut self,
        _host: &Host,
        session: MediaSessionId,
        _packet: &[u8],
    ) -> Result<()> {
        // What reaches a plugin as RTCP is a key-frame request for what it sends: the composite.
        if let Some(m) = self
            .by_session
            .get(&session)
            .and_then(|c| self.calls.get(c))
            .and_then(|call| self.media.get(&call.room))
        {
            m.force_keyframe();
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
        call.local_cseq += 1;
        let mut bye = NewRequest::new(Method::Bye, &call.remote_target)
            .from(&format!("<{}>;tag={}", call.local_uri, call.local_tag))
            .to(&call.remote)
            .call_id(&call_id)
            .cseq(call.local_cseq);
        for route in &call.routes {
            bye = bye.header("Route", route);
        }
        let sent = host.send_request(&bye.build());
        self.left(host, call);
        sent.map(|_| ())
    }

    fn admin_request(&mut self, host: &Host, request: &str) -> Result<String> {
        admin::handle(self, host, request)
    }

    fn shutdown(&mut self, _host: &Host) {
        // Stops every pipeline and mixer thread (RoomMedia's Drop).
        self.media.clear();
    }
}

impl Conference {
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
        let (session, answer) = match host.media_answer(None, offer.as_bytes()) {
            Ok(a) => a,
            Err(e) => return refuse_media(host, &request, e),
        };
        let streams = sdp::answer_streams(&String::from_utf8_lossy(&answer));
        let audio = streams.iter().find(|s| matches!(s.kind, Kind::Audio(_)));
        let video = streams.iter().find(|s| s.kind == Kind::Video);
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
                match RoomMedia::start(host, &room, s.video, s.layout) {
                    Ok(m) => {
                        self.media.insert(room.clone(), m);
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
        let spec = LegSpec {
            session,
            display: caller.display.clone(),
            audio: audio.and_then(|a| match a.kind {
                Kind::Audio(codec) => Some((a.mid.clone(), codec, a.pt)),
                Kind::Video => None,
            }),
            video: video.map(|v| (v.mid.clone(), v.pt, v.receiving)),
        };
        let joined = self
            .media
            .get_mut(&room)
            .map(|m| m.join(session.0, &spec))
            .unwrap_or_else(|| Err(media::MediaError("room has no mixer".to_owned())));
        if let Err(e) = joined {
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

        let local_uri = strip_params(request.uri()).to_owned();
        let response = request
            .response(200, "OK")
            .header("Contact", &format!("<{local_uri}>;isfocus"))
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
            local_tag: request.local_tag().to_owned(),
            remote: from,
            local_uri,
            remote_target: contact_uri(&request).unwrap_or_default(),
            routes: request
                .message()
                .header_list(&HeaderName::RecordRoute)
                .map(str::to_owned)
                .collect(),
            local_cseq: 0,
            audio_mid: spec.audio.as_ref().map(|a| a.0.clone()),
            video_mid: spec.video.as_ref().map(|v| v.0.clone()),
            video_in: sends_video,
            display: caller.display.clone(),
        };
        self.by_session.insert(session, call_id.clone());
        self.calls.insert(call_id, call);
        self.room_changed(host, &room);
        admin::joined(self, host, &room, session.0, started);
        Ok(())
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
            Err(e) => return refuse_media(host, &request, e),
        };
        let response = request
            .response(200, "OK")
            .header("Contact", &format!("<{}>;isfocus", call.local_uri))
            .body("application/sdp", &answer)
            .build();
        host.respond(
            request.transaction().ok_or(Error::UnknownTransaction)?,
            &response,
        )?;
        // Video stopped (a=recvonly/inactive: camera off) or started again: swap their tile
        // between the decoded picture and the named placeholder, and tell subscribers.
        let streams = sdp::answer_streams(&String::from_utf8_lossy(&answer));
        let video = streams
            .iter()
            .find(|s| s.kind == Kind::Video && call.video_mid.as_deref() == Some(s.mid.as_str()));
        let audio_in = streams
            .iter()
            .any(|s| matches!(s.kind, Kind::Audio(_)) && s.receiving);
        let video_in = video.is_some_and(|v| v.receiving);
        let (session, room, display) = (call.session, call.room.clone(), call.display.clone());
        if video_in != call.video_in {
            if let Some(m) = self.media.get_mut(&room) {
                let pt = video.map(|v| v.pt).filter(|_| video_in);
                if let Err(e) = m.set_video(session.0, &display, pt) {
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

    /// Writes the room's store record and notifies its subscribers.
    fn room_changed(&mut self, host: &Host, room: &str) {
        let key = format!("rooms/{room}");
        match self.rooms.get(room) {
            Some(live) => {
                let _ = host
                    .store()
                    .put(key.as_bytes(), events::room_record(live).as_bytes());
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
        let in_dialog = request
            .message()
            .to_header()
            .ok()
            .and_then(|t| t.tag())
            .is_some();
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
        let room_uri = strip_params(request.uri()).to_owned();
        let domain = room_uri.split('@').nth(1).unwrap_or("").to_owned();
        let local_tag = request.local_tag().to_owned();
        let response = request
            .response(200, "OK")
            .header("Expires", &expires.to_string())
            .header("Contact", &format!("<{room_uri}>"))
            .build();
        host.respond(
            request.transaction().ok_or(Error::UnknownTransaction)?,
            &response,
        )?;
        let sub = Subscription {
            room,
            room_uri,
            domain,
            local_tag,
            remote: request
                .message()
                .header(&HeaderName::From)
                .unwrap_or_default()
                .to_owned(),
            remote_target: contact_uri(&request).unwrap_or_default(),
            routes: request
                .message()
                .header_list(&HeaderName::RecordRoute)
                .map(str::to_owned)
                .collect(),
            cseq: 0,
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
        sub.cseq += 1;
        sub.version += 1;
        let body = events::conference_info(
            &sub.room_uri,
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
        let mut req = NewRequest::new(Method::Notify, &sub.remote_target)
            .from(&format!("<{}>;tag={}", sub.room_uri, sub.local_tag))
            .to(&sub.remote)
            .call_id(call_id)
            .cseq(sub.cseq)
            .header("Event", "conference")
            .header("Subscription-State", &state)
            .header("Contact", &format!("<{}>", sub.room_uri));
        for route in &sub.routes {
            req = req.header("Route", route);
        }
        let req = req
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

/// Answers a failed `media_answer` as echo does: the host's status, reason and Warning.
fn refuse_media(host: &Host, request: &Request, e: Error) -> Result<()> {
    let txn = request.transaction().ok_or(Error::UnknownTransaction)?;
    match e {
        Error::Sdp(refusal) => {
            let mut response = request.response(refusal.status, &refusal.reason);
            let warning;
            if let Some(w) = &refusal.warning {
                warning = format!("399 huddle \"{}\"", w.replace('"', "'"));
                response = response.header("Warning", &warning);
            }
            host.respond(txn, &response.build())
        }
        Error::Busy => {
            let response = request
                .response(503, "Service Unavailable - Media Busy")
                .header("Retry-After", "5")
                .build();
            host.respond(txn, &response)
        }
        e => Err(e),
    }
}

/// The URI of the request's Contact.
fn contact_uri(request: &Request) -> Option<String> {
    let value = request.message().header(&HeaderName::Contact)?;
    NameAddr::parse(value).ok().map(|a| a.uri.to_owned())
}

/// A URI without its parameters.
fn strip_params(uri: &str) -> &str {
    uri.split(';').next().unwrap_or(uri)
}

huddle_sdk::export_plugin!(
    Conference,
    "conference",
    env!("CARGO_PKG_VERSION"),
    Capabilities::SEND_REQUEST
        .with(Capabilities::MEDIA)
        .with(Capabilities::STORE)
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
        [[rooms]]\nname = \"team\"\n";

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
        assert!(claims.contains(&Claim::method("INVITE").with_user("meet-*")));
        assert!(claims.contains(
            &Claim::method("SUBSCRIBE")
                .with_event("conference")
                .with_user("lobby")
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
        let notifies = host
            .sent_requests()
            .into_iter()
            .filter(|r| r.message.method() == Some(&Method::Notify))
            .count();
        assert_eq!(notifies, 2, "subscribers told of the leave");
    }

    #[test]
    fn a_bad_config_fails_start_up() {
        let host = FakeHost::with_capabilities(Capabilities::ALL);
        let bad = "[[rooms]]\nname = \"x\"\nmax_participants = 0\n";
        assert!(host.start(&huddle_plugin_export::entry(), bad).is_err());
        assert!(host.logged(huddle_sdk::Level::Warn, "max_participants"));
    }
}
