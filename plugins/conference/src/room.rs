//! The room model, without I/O: which rooms exist, who may enter them, who is in them.
//!
//! A room is `sip:<name>@<domain>`. Rooms come from the config (`[[plugins.config.rooms]]`) or
//! are made on demand when a caller dials a name under `on_demand_prefix` (with the
//! `[plugins.config.on_demand]` settings); an on-demand room ends when its last participant
//! leaves, a configured room merely empties. Admission rules, in the order they are checked
//! (each refusal names the SIP answer it causes, see [`Refusal::status`]):
//!
//! 1. the room exists or may be made (else 404);
//! 2. the caller is a member (the host authenticated them) or the room is public (guests are
//!    admitted under the display name they sent; else 403 "Members Only");
//! 3. the PIN matches when the room has one (missing or wrong → 403);
//! 4. there is a free seat (else 486 Busy Here, "Room Full").
//!
//! Everything here is plain data: the plugin glue (`lib.rs`) feeds it requests and turns its
//! answers into SIP and GStreamer calls, and the unit tests drive it directly.

use std::collections::BTreeMap;

use huddle_sdk::serde::Deserialize;

use crate::layout::LayoutKind;

/// The video a room sends: one composite of this size and rate, encoded once, shared by all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(crate = "huddle_sdk::serde", default, deny_unknown_fields)]
pub struct VideoProfile {
    /// Canvas width in pixels (even, 64..=1920).
    pub width: u32,
    /// Canvas height in pixels (even, 64..=1080).
    pub height: u32,
    /// Frames per second (1..=30).
    pub fps: u32,
    /// Target bitrate of the composite, kbit/s (50..=4000).
    pub bitrate_kbps: u32,
    /// Longest time between two key frames nobody asked for, seconds (1..=3600): what a
    /// receiver that lost the picture and cannot ask (no RTCP feedback) waits at worst.
    pub keyframe_interval_secs: u32,
}

impl Default for VideoProfile {
    fn default() -> Self {
        VideoProfile {
            width: 640,
            height: 360,
            fps: 15,
            bitrate_kbps: 600,
            keyframe_interval_secs: 10,
        }
    }
}

impl VideoProfile {
    fn check(&self, room: &str) -> Result<(), String> {
        let ok = (64..=1920).contains(&self.width)
            && (64..=1080).contains(&self.height)
            && self.width.is_multiple_of(2)
            && self.height.is_multiple_of(2)
            && (1..=30).contains(&self.fps)
            && (50..=4000).contains(&self.bitrate_kbps)
            && (1..=3600).contains(&self.keyframe_interval_secs);
        if ok {
            Ok(())
        } else {
            Err(format!(
                "room {room}: video must be even 64..=1920 x 64..=1080, fps 1..=30, bitrate_kbps 50..=4000, keyframe_interval_secs 1..=3600"
            ))
        }
    }
}

/// Settings of one room (a configured one, or the template of on-demand rooms).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(crate = "huddle_sdk::serde", default, deny_unknown_fields)]
pub struct RoomSettings {
    /// The room's user part (`sip:<name>@<domain>`); empty for the on-demand template.
    pub name: String,
    /// Digits (or any text) a caller must present; none = no PIN.
    pub pin: Option<String>,
    /// Seats (1..=64).
    pub max_participants: usize,
    /// `grid` or `speaker`.
    pub layout: LayoutKind,
    /// Whether callers that did not log in are admitted (as guests).
    pub public: bool,
    /// The composite: the canvas's size and rate, and the first (largest) output profile.
    pub video: VideoProfile,
    /// Further output profiles of the same composite, scaled down (at most 3, each no larger
    /// and no faster than `video`). Each is encoded once; a receiver gets the largest its
    /// offer's bandwidth (`b=AS`/`b=TIAS`) and later the host's estimate fit.
    pub lower_profiles: Vec<VideoProfile>,
}

impl Default for RoomSettings {
    fn default() -> Self {
        RoomSettings {
            name: String::new(),
            pin: None,
            max_participants: 16,
            layout: LayoutKind::Grid,
            public: false,
            video: VideoProfile::default(),
            lower_profiles: Vec::new(),
        }
    }
}

impl RoomSettings {
    /// Checks the bounds, naming the room and the key at fault.
    pub fn check(&self) -> Result<(), String> {
        let room = if self.name.is_empty() {
            "on_demand"
        } else {
            &self.name
        };
        if !(1..=64).contains(&self.max_participants) {
            return Err(format!("room {room}: max_participants must be 1..=64"));
        }
        if !self.name.is_empty() && !valid_user(&self.name) {
            return Err(format!(
                "room {room}: name must be letters, digits, '-', '_' or '.'"
            ));
        }
        self.video.check(room)?;
        if self.lower_profiles.len() > 3 {
            return Err(format!("room {room}: at most 3 lower_profiles"));
        }
        for p in &self.lower_profiles {
            p.check(room)?;
            if p.width > self.video.width || p.height > self.video.height || p.fps > self.video.fps
            {
                return Err(format!(
                    "room {room}: each of lower_profiles must be no larger and no faster than video"
                ));
            }
        }
        Ok(())
    }

    /// Every output profile, the canvas's first.
    pub fn profiles(&self) -> Vec<VideoProfile> {
        std::iter::once(self.video)
            .chain(self.lower_profiles.iter().copied())
            .collect()
    }
}

/// A receiver's profile (an index into `profiles`, largest first) for the bandwidth it has,
/// kbit/s. Without a figure: the first. Otherwise the first profile whose bitrate fits, else the
/// last; when `current` is given, the change must be clear — up only with 25 % headroom above
/// the new profile's bitrate, down only when below 80 % of the current one — so an estimate
/// wobbling around a boundary does not flip a receiver (and force key frames) back and forth.
pub fn profile_for(profiles: &[VideoProfile], kbps: Option<u32>, current: Option<usize>) -> usize {
    let Some(kbps) = kbps else {
        return current.unwrap_or(0);
    };
    let last = profiles.len().saturating_sub(1);
    let fits = profiles
        .iter()
        .position(|p| p.bitrate_kbps <= kbps)
        .unwrap_or(last);
    match current {
        None => fits,
        Some(cur) if fits < cur => {
            let headroom = u64::from(profiles[fits].bitrate_kbps) * 5 / 4;
            if u64::from(kbps) >= headroom {
                fits
            } else {
                cur
            }
        }
        Some(cur) if fits > cur => {
            let floor = u64::from(profiles[cur].bitrate_kbps) * 4 / 5;
            if u64::from(kbps) < floor {
                fits
            } else {
                cur
            }
        }
        Some(cur) => cur,
    }
}

/// Whether `name` is a plain SIP user part we accept as a room name.
fn valid_user(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Who is asking to join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user the host authenticated; `None` for a guest.
    pub member: Option<String>,
    /// The display name to show (From display name, else the user part).
    pub display: String,
    /// The PIN the caller presented, if any.
    pub pin: Option<String>,
}

/// Why a caller was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No such room, and the name is not under the on-demand prefix.
    NoSuchRoom,
    /// A guest calling a members-only room.
    MembersOnly,
    /// The room has a PIN and none was given.
    PinMissing,
    /// The room has a PIN and another was given.
    PinWrong,
    /// Every seat is taken.
    Full,
}

impl Refusal {
    /// The SIP status and reason phrase to answer with.
    pub fn status(self) -> (u16, &'static str) {
        match self {
            Refusal::NoSuchRoom => (404, "Not Found - No Such Room"),
            Refusal::MembersOnly => (403, "Forbidden - Members Only"),
            Refusal::PinMissing => (403, "Forbidden - PIN Required"),
            Refusal::PinWrong => (403, "Forbidden - Wrong PIN"),
            Refusal::Full => (486, "Busy Here - Room Full"),
        }
    }
}

/// A participant's identity in the room (the key the glue uses: its media session id).
pub type ParticipantId = u64;

/// One person in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    /// Who they are: the member's user name, or `guest:<display>`.
    pub entity: String,
    /// Name shown on their tile and in conference NOTIFYs.
    pub display: String,
    /// Whether they send audio / video.
    pub audio: bool,
    /// Whether they send video.
    pub video: bool,
}

/// A room that has (or just had) participants.
#[derive(Debug, Clone)]
pub struct Room {
    /// Its settings.
    pub settings: RoomSettings,
    /// Participants by id, in join order of their ids.
    pub participants: BTreeMap<ParticipantId, Participant>,
    /// Whether it was made on demand (ends when empty) or configured.
    pub on_demand: bool,
    /// Bumped on every change: the RFC 4575 `version` of its conference-info.
    pub version: u32,
}

/// Every room of one plugin instance.
#[derive(Debug)]
pub struct Rooms {
    configured: BTreeMap<String, RoomSettings>,
    on_demand_prefix: Option<String>,
    on_demand: RoomSettings,
    live: BTreeMap<String, Room>,
}

impl Rooms {
    /// Rooms from config; `on_demand_prefix` empty disables on-demand rooms.
    pub fn new(
        configured: Vec<RoomSettings>,
        on_demand_prefix: &str,
        on_demand: RoomSettings,
    ) -> Result<Rooms, String> {
        let mut map = BTreeMap::new();
        for room in configured {
            room.check()?;
            let name = room.name.clone();
            if map.insert(name.clone(), room).is_some() {
                return Err(format!("room {name} is configured twice"));
            }
        }
        on_demand.check()?;
        if !on_demand_prefix.is_empty() && !valid_user(on_demand_prefix) {
            return Err("on_demand_prefix must be letters, digits, '-', '_' or '.'".to_owned());
        }
        Ok(Rooms {
            configured: map,
            on_demand_prefix: (!on_demand_prefix.is_empty()).then(|| on_demand_prefix.to_owned()),
            on_demand,
            live: BTreeMap::new(),
        })
    }

    /// Configured room names.
    pub fn configured_names(&self) -> impl Iterator<Item = &str> {
        self.configured.keys().map(String::as_str)
    }

    /// The Request-URI user patterns the plugin claims, each with whether its rooms are public:
    /// every configured room, and `<prefix>*` for on-demand rooms.
    pub fn user_patterns(&self) -> Vec<(String, bool)> {
        let mut patterns: Vec<(String, bool)> = self
            .configured
            .values()
            .map(|s| (s.name.clone(), s.public))
            .collect();
        if let Some(prefix) = &self.on_demand_prefix {
            patterns.push((format!("{prefix}*"), self.on_demand.public));
        }
        patterns
    }

    /// The on-demand prefix, if on-demand rooms are enabled.
    pub fn on_demand_prefix(&self) -> Option<&str> {
        self.on_demand_prefix.as_deref()
    }

    /// The settings a room has or would have; `None` when it cannot exist.
    pub fn settings(&self, room: &str) -> Option<&RoomSettings> {
        if let Some(live) = self.live.get(room) {
            return Some(&live.settings);
        }
        if let Some(s) = self.configured.get(room) {
            return Some(s);
        }
        let prefix = self.on_demand_prefix.as_deref()?;
        (room.len() > prefix.len() && room.starts_with(prefix) && valid_user(room))
            .then_some(&self.on_demand)
    }

    /// A live room.
    pub fn get(&self, room: &str) -> Option<&Room> {
        self.live.get(room)
    }

    /// Checks whether `caller` may join `room`, without joining.
    pub fn check(&self, room: &str, caller: &Caller) -> Result<(), Refusal> {
        let settings = self.settings(room).ok_or(Refusal::NoSuchRoom)?;
        if caller.member.is_none() && !settings.public {
            return Err(Refusal::MembersOnly);
        }
        if let Some(pin) = &settings.pin {
            match &caller.pin {
                None => return Err(Refusal::PinMissing),
                Some(given) if !constant_time_eq(given.as_bytes(), pin.as_bytes()) => {
                    return Err(Refusal::PinWrong)
                }
                Some(_) => {}
            }
        }
        let seated = self.live.get(room).map_or(0, |r| r.participants.len());
        if seated >= settings.max_participants {
            return Err(Refusal::Full);
        }
        Ok(())
    }

    /// Admits `caller` as participant `id` (after [`Rooms::check`] passes); returns whether the
    /// room was started by this join.
    pub fn join(
        &mut self,
        room: &str,
        id: ParticipantId,
        caller: &Caller,
        audio: bool,
        video: bool,
    ) -> Result<bool, Refusal> {
        self.check(room, caller)?;
        let started = !self.live.contains_key(room);
        if started {
            let settings = self.settings(room).cloned().ok_or(Refusal::NoSuchRoom)?;
            let on_demand = !self.configured.contains_key(room);
            let mut settings = settings;
            settings.name = room.to_owned();
            self.live.insert(
                room.to_owned(),
                Room {
                    settings,
                    participants: BTreeMap::new(),
                    on_demand,
                    version: 0,
                },
            );
        }
        let live = self.live.get_mut(room).ok_or(Refusal::NoSuchRoom)?;
        let entity = match &caller.member {
            Some(user) => user.clone(),
            None => format!("guest:{}", caller.display),
        };
        live.participants.insert(
            id,
            Participant {
                entity,
                display: caller.display.clone(),
                audio,
                video,
            },
        );
        live.version += 1;
        Ok(started)
    }

    /// Removes a participant; returns whether the room ended (it was the last one).
    pub fn leave(&mut self, room: &str, id: ParticipantId) -> bool {
        let Some(live) = self.live.get_mut(room) else {
            return false;
        };
        if live.participants.remove(&id).is_none() {
            return false;
        }
        live.version += 1;
        if live.participants.is_empty() {
            self.live.remove(room);
            return true;
        }
        false
    }

    /// Marks what a participant sends (a re-INVITE may stop or start video).
    pub fn set_media(&mut self, room: &str, id: ParticipantId, audio: bool, video: bool) {
        if let Some(p) = self
            .live
            .get_mut(room)
            .and_then(|r| r.participants.get_mut(&id))
        {
            p.audio = audio;
            p.video = video;
        }
        if let Some(r) = self.live.get_mut(room) {
            r.version += 1;
        }
    }

    /// Live room names.
    pub fn live_names(&self) -> impl Iterator<Item = &str> {
        self.live.keys().map(String::as_str)
    }
}

/// Compares without an early exit, so the time taken does not tell how much of a PIN matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The PIN a request carries: a `;pin=` parameter of the Request-URI, else a `TP-BridgePin`
/// (or `X-Pin`) header.
pub fn pin_of(request_uri: &str, header: Option<&str>) -> Option<String> {
    let params = request_uri.split_once(';').map(|(_, p)| p).unwrap_or("");
    for param in params.split(';') {
        if let Some((k, v)) = param.split_once('=') {
            if k.trim().eq_ignore_ascii_case("pin") {
                return Some(v.trim().to_owned());
            }
        }
    }
    header.map(|h| h.trim().to_owned())
}

/// A display name from a From header value: the quoted (or bare) display name, else the URI's
/// user part; at most 32 characters, control characters dropped, so it is safe on a tile and
/// in XML after escaping.
pub fn display_name_of(from: &str) -> String {
    let from = from.trim();
    let name = if let Some(rest) = from.strip_prefix('"') {
        rest.split('"').next().unwrap_or("").to_owned()
    } else if let Some((before, _)) = from.split_once('<') {
        before.trim().to_owned()
    } else {
        String::new()
    };
    let name = if name.is_empty() {
        let uri = from
            .split_once('<')
            .map(|(_, r)| r.split('>').next().unwrap_or(""))
            .unwrap_or(from);
        let uri = uri.split(';').next().unwrap_or(uri);
        let user = uri
            .strip_prefix("sips:")
            .or_else(|| uri.strip_prefix("sip:"))
            .unwrap_or(uri);
        user.split('@').next().unwrap_or("").to_owned()
    } else {
        name
    };
    let clean: String = name.chars().filter(|c| !c.is_control()).take(32).collect();
    if clean.is_empty() {
        "guest".to_owned()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomSettings {
        RoomSettings {
            name: name.to_owned(),
            ..RoomSettings::default()
        }
    }

    fn member(name: &str) -> Caller {
        Caller {
            member: Some(name.to_owned()),
            display: name.to_owned(),
            pin: None,
        }
    }

    fn guest(name: &str) -> Caller {
        Caller {
            member: None,
            display: name.to_owned(),
            pin: None,
        }
    }

    fn rooms() -> Rooms {
        let mut pinned = room("board");
        pinned.pin = Some("1234".to_owned());
        let mut public = room("lobby");
        public.public = true;
        public.max_participants = 2;
        Rooms::new(
            vec![pinned, public, room("team")],
            "meet-",
            RoomSettings::default(),
        )
        .unwrap()
    }

    #[test]
    fn unknown_rooms_are_404_and_the_prefix_makes_rooms_on_demand() {
        let r = rooms();
        assert_eq!(r.check("nope", &member("a")), Err(Refusal::NoSuchRoom));
        assert_eq!(r.check("meet-", &member("a")), Err(Refusal::NoSuchRoom));
        assert_eq!(r.check("meet-x", &member("a")), Ok(()));
        assert_eq!(r.check("team", &member("a")), Ok(()));
    }

    #[test]
    fn pins_are_required_and_checked() {
        let r = rooms();
        assert_eq!(r.check("board", &member("a")), Err(Refusal::PinMissing));
        let mut c = member("a");
        c.pin = Some("9999".to_owned());
        assert_eq!(r.check("board", &c), Err(Refusal::PinWrong));
        c.pin = Some("1234".to_owned());
        assert_eq!(r.check("board", &c), Ok(()));
        assert_eq!(Refusal::PinWrong.status().0, 403);
    }

    #[test]
    fn guests_only_reach_public_rooms() {
        let r = rooms();
        assert_eq!(r.check("team", &guest("Zed")), Err(Refusal::MembersOnly));
        assert_eq!(r.check("meet-x", &guest("Zed")), Err(Refusal::MembersOnly));
        assert_eq!(r.check("lobby", &guest("Zed")), Ok(()));
    }

    #[test]
    fn seats_are_bounded_and_rooms_end_when_empty() {
        let mut r = rooms();
        assert_eq!(r.join("lobby", 1, &guest("A"), true, true), Ok(true));
        assert_eq!(r.join("lobby", 2, &member("b"), true, false), Ok(false));
        assert_eq!(
            r.join("lobby", 3, &member("c"), true, true),
            Err(Refusal::Full)
        );
        let live = r.get("lobby").unwrap();
        assert_eq!(live.participants[&1].entity, "guest:A");
        assert_eq!(live.version, 2);
        assert!(!r.leave("lobby", 1));
        assert!(!r.leave("lobby", 1), "leaving twice is harmless");
        assert!(r.leave("lobby", 2), "the last one out ends it");
        assert!(r.get("lobby").is_none());
        assert_eq!(r.join("meet-q", 5, &member("a"), true, true), Ok(true));
        assert!(r.get("meet-q").unwrap().on_demand);
    }

    #[test]
    fn bad_config_is_refused_naming_the_room() {
        let mut bad = room("x");
        bad.max_participants = 0;
        let err = Rooms::new(vec![bad], "", RoomSettings::default()).unwrap_err();
        assert!(err.contains("room x"), "{err}");
        let mut bad = room("y");
        bad.video.width = 641;
        assert!(Rooms::new(vec![bad], "", RoomSettings::default()).is_err());
        assert!(Rooms::new(vec![room("a"), room("a")], "", RoomSettings::default()).is_err());
        assert!(Rooms::new(vec![room("a b")], "", RoomSettings::default()).is_err());
    }

    #[test]
    fn receivers_get_the_largest_profile_their_bandwidth_fits_without_flapping() {
        let p = |w, h, fps, kbps| VideoProfile {
            width: w,
            height: h,
            fps,
            bitrate_kbps: kbps,
            keyframe_interval_secs: 10,
        };
        let profiles = [p(1280, 720, 30, 1500), p(640, 360, 15, 500)];
        assert_eq!(profile_for(&profiles, None, None), 0);
        assert_eq!(profile_for(&profiles, Some(2000), None), 0);
        assert_eq!(profile_for(&profiles, Some(800), None), 1);
        assert_eq!(
            profile_for(&profiles, Some(100), None),
            1,
            "the smallest, whatever"
        );
        // An estimate just under 1500 does not drop a 720p receiver; under 1200 does.
        assert_eq!(profile_for(&profiles, Some(1400), Some(0)), 0);
        assert_eq!(profile_for(&profiles, Some(1100), Some(0)), 1);
        // Up again only with headroom (1875 for 1500).
        assert_eq!(profile_for(&profiles, Some(1600), Some(1)), 1);
        assert_eq!(profile_for(&profiles, Some(1900), Some(1)), 0);

        let mut s = room("x");
        s.lower_profiles = vec![p(1920, 1080, 30, 2000)];
        assert!(s.check().unwrap_err().contains("no larger"));
        s.lower_profiles = vec![p(320, 180, 15, 200)];
        assert_eq!(s.profiles().len(), 2);
        assert!(s.check().is_ok());
    }

    #[test]
    fn pin_from_uri_parameter_or_header() {
        assert_eq!(
            pin_of("sip:board@d;pin=1234", None).as_deref(),
            Some("1234")
        );
        assert_eq!(
            pin_of("sip:board@d;transport=ws;PIN=42", Some("7")).as_deref(),
            Some("42")
        );
        assert_eq!(pin_of("sip:board@d", Some(" 7 ")).as_deref(), Some("7"));
        assert_eq!(pin_of("sip:board@d", None), None);
    }

    #[test]
    fn display_names_from_from_headers() {
        assert_eq!(display_name_of("\"Ann B\" <sip:ann@d>;tag=1"), "Ann B");
        assert_eq!(display_name_of("Ann <sip:ann@d>;tag=1"), "Ann");
        assert_eq!(display_name_of("<sip:bob@d>;tag=1"), "bob");
        assert_eq!(display_name_of("sip:carl@d;tag=1"), "carl");
        assert_eq!(display_name_of("\"\" <sip:@d>"), "guest");
    }
}
