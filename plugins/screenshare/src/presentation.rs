//! The pure parts of the relay: the screen URI naming scheme, the conference plugin's room
//! record as the relay reads it, who may present or watch, and the presentation record the relay
//! writes. No host calls here; everything is unit-tested with values.

use huddle_sdk::serde::{Deserialize, Serialize};

/// The user part of a room's screen URI: a template with exactly one `{room}` and a non-empty
/// fixed part around it (`{room}-screen`, `screen-{room}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScreenName {
    prefix: String,
    suffix: String,
}

/// Characters allowed in the fixed part of the template (a subset of RFC 3261 `unreserved`
/// that is also safe in a claim pattern: no `*`).
fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '!')
}

impl ScreenName {
    /// Parses a template; the error says what is wrong with it.
    pub fn parse(template: &str) -> Result<ScreenName, String> {
        let Some((prefix, suffix)) = template.split_once("{room}") else {
            return Err(format!(
                "screen_user {template:?} must contain {{room}}, e.g. \"{{room}}-screen\""
            ));
        };
        if suffix.contains("{room}") {
            return Err(format!("screen_user {template:?} has {{room}} twice"));
        }
        if prefix.is_empty() && suffix.is_empty() {
            return Err(
                "screen_user \"{room}\" would take every room's own URI: add a prefix or suffix"
                    .to_owned(),
            );
        }
        if !prefix.chars().chain(suffix.chars()).all(name_char) {
            return Err(format!(
                "screen_user {template:?}: only letters, digits and - _ . ~ ! around {{room}}"
            ));
        }
        Ok(ScreenName {
            prefix: prefix.to_owned(),
            suffix: suffix.to_owned(),
        })
    }

    /// The claim pattern: `{room}` as `*`.
    pub fn pattern(&self) -> String {
        format!("{}*{}", self.prefix, self.suffix)
    }

    /// The room a Request-URI user names, if it is a screen URI of a non-empty room name.
    pub fn room_of<'a>(&self, user: &'a str) -> Option<&'a str> {
        let room = user
            .strip_prefix(self.prefix.as_str())?
            .strip_suffix(self.suffix.as_str())?;
        (!room.is_empty()).then_some(room)
    }

    /// The screen URI user of `room`.
    pub fn user_of(&self, room: &str) -> String {
        format!("{}{room}{}", self.prefix, self.suffix)
    }
}

/// One participant of the conference plugin's room record (`rooms/<room>` in its namespace,
/// written by `plugins/conference/src/events.rs`): `entity` is the authenticated user, or
/// `guest:<display name>` for a guest of a public room.
#[derive(Debug, Clone, Deserialize)]
#[serde(crate = "huddle_sdk::serde")]
pub struct Participant {
    /// `alice`, or `guest:Zed Q`.
    pub entity: String,
}

/// The conference plugin's record of a live room. Unknown fields are ignored, so that the
/// conference plugin may add some (a presenter layout flag, for example) without breaking us.
#[derive(Debug, Clone, Deserialize)]
#[serde(crate = "huddle_sdk::serde")]
pub struct RoomRecord {
    /// Record version (1).
    pub v: u32,
    /// Who is in the room.
    pub participants: Vec<Participant>,
}

impl RoomRecord {
    /// Parses a record; `None` when it is not one we understand (another version, not JSON).
    pub fn parse(bytes: &[u8]) -> Option<RoomRecord> {
        serde_json::from_slice::<RoomRecord>(bytes)
            .ok()
            .filter(|r| r.v == 1)
    }

    /// Whether the authenticated `user` is in the room.
    pub fn has_member(&self, user: &str) -> bool {
        self.participants.iter().any(|p| p.entity == user)
    }

    /// Whether a guest with this display name is in the room.
    pub fn has_guest(&self, display: &str) -> bool {
        self.participants
            .iter()
            .any(|p| p.entity.strip_prefix("guest:") == Some(display))
    }
}

/// What to do with a second presenter while a presentation runs (`second_presenter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(crate = "huddle_sdk::serde", rename_all = "snake_case")]
pub enum SecondPresenter {
    /// 403, naming who is presenting.
    #[default]
    Refuse,
    /// The new presenter takes over; the old presenter's call is ended with a BYE.
    TakeOver,
}

/// Who may watch (`viewers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(crate = "huddle_sdk::serde", rename_all = "snake_case")]
pub enum ViewerPolicy {
    /// Participants of the room (per the conference plugin's record) and presenters by role.
    #[default]
    Participants,
    /// Anyone who can reach the screen URI.
    Anyone,
}

/// The caller as the relay sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user the host authenticated, if any.
    pub user: Option<String>,
    /// The display name of their From.
    pub display: String,
}

/// The rules the configuration sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Users who may present (and watch) in any room without being in it.
    pub presenters: Vec<String>,
    /// A second presenter's fate.
    pub second_presenter: SecondPresenter,
    /// Who may watch.
    pub viewers: ViewerPolicy,
}

/// The running presentation of a room, as far as admission cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current<'a> {
    /// The presenter's user.
    pub user: &'a str,
    /// The presenter's Call-ID.
    pub call_id: &'a str,
}

/// The outcome of an INVITE to a screen URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The caller's video becomes the room's presentation.
    Present,
    /// As `Present`, after ending the presentation of the call with this Call-ID.
    TakeOver(String),
    /// The caller receives the presentation.
    View,
    /// Refused with this status and reason phrase.
    Refuse(u16, String),
}

impl Policy {
    fn by_role(&self, caller: &Caller) -> bool {
        caller
            .user
            .as_ref()
            .is_some_and(|u| self.presenters.iter().any(|p| p == u))
    }

    /// Decides whether `caller` may present in `room`, whose conference record is `record`
    /// (`None`: the room is not live) and whose presentation is `current`.
    pub fn admit_presenter(
        &self,
        room: &str,
        caller: &Caller,
        record: Option<&RoomRecord>,
        current: Option<Current<'_>>,
    ) -> Admission {
        let Some(user) = caller.user.as_deref() else {
            return Admission::Refuse(403, "Forbidden - Log In To Present".to_owned());
        };
        let in_room = record.is_some_and(|r| r.has_member(user));
        if !in_room && !self.by_role(caller) {
            return Admission::Refuse(403, format!("Forbidden - Join Room {room} To Present"));
        }
        match current {
            None => Admission::Present,
            Some(c) => match self.second_presenter {
                SecondPresenter::TakeOver => Admission::TakeOver(c.call_id.to_owned()),
                SecondPresenter::Refuse => Admission::Refuse(
                    403,
                    format!("Forbidden - {} Is Presenting In {room}", c.user),
                ),
            },
        }
    }

    /// Decides whether `caller` may watch the presentation of `room`.
    pub fn admit_viewer(
        &self,
        room: &str,
        caller: &Caller,
        record: Option<&RoomRecord>,
        current: Option<Current<'_>>,
    ) -> Admission {
        let allowed = match self.viewers {
            ViewerPolicy::Anyone => true,
            ViewerPolicy::Participants => {
                self.by_role(caller)
                    || record.is_some_and(|r| match caller.user.as_deref() {
                        Some(user) => r.has_member(user),
                        None => r.has_guest(&caller.display),
                    })
            }
        };
        if !allowed {
            return Admission::Refuse(403, format!("Forbidden - Join Room {room} To Watch"));
        }
        if current.is_none() {
            return Admission::Refuse(
                480,
                format!("Temporarily Unavailable - No Presentation In {room}"),
            );
        }
        Admission::View
    }
}

/// The presentation record, `presentations/<room>` in the relay's namespace
/// (`plugin/screenshare/` by default): what the conference plugin reads to switch its layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(crate = "huddle_sdk::serde")]
pub struct PresentationRecord {
    /// Record version (1).
    pub v: u32,
    /// The room.
    pub room: String,
    /// The presenter's user.
    pub presenter: String,
    /// The presenter's display name.
    pub display: String,
    /// The URI viewers call.
    pub screen_uri: String,
    /// When the presentation started, seconds since the Unix epoch.
    pub started: u64,
    /// The presenter's media session (a host id), for a plugin that taps the screen
    /// (`Host::tap_stream`, as the conference mixer does); 0 in records written before it.
    #[serde(default)]
    pub session: u64,
    /// The mid of the presenter's video stream in that session.
    #[serde(default)]
    pub video_mid: String,
    /// The screen's codec (`vp8`, `h264`, …: the relay's `codec`).
    #[serde(default)]
    pub codec: String,
}

impl PresentationRecord {
    /// The JSON bytes stored.
    pub fn to_bytes(&self) -> Vec<u8> {
        // A struct of strings and integers always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The display name of a From/To value (`"Alice" <sip:alice@d>` → `Alice`); the user part when
/// there is none.
pub fn display_name_of(from: &str) -> String {
    let from = from.trim();
    if let Some(rest) = from.strip_prefix('"') {
        if let Some(end) = rest.find('"') {
            return rest[..end].to_owned();
        }
    }
    if let Some(lt) = from.find('<') {
        let name = from[..lt].trim();
        if !name.is_empty() {
            return name.to_owned();
        }
    }
    let uri = from
        .trim_start_matches('<')
        .split(['>', ';'])
        .next()
        .unwrap_or("");
    uri.split_once(':')
        .map(|(_, rest)| rest)
        .unwrap_or(uri)
        .split('@')
        .next()
        .unwrap_or("")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn screen_names_from_the_template() {
        let n = ScreenName::parse("{room}-screen").unwrap();
        assert_eq!(n.pattern(), "*-screen");
        assert_eq!(n.room_of("team-screen"), Some("team"));
        assert_eq!(n.room_of("room-1-screen"), Some("room-1"));
        assert_eq!(n.room_of("-screen"), None);
        assert_eq!(n.room_of("team"), None);
        assert_eq!(n.user_of("team"), "team-screen");
        let p = ScreenName::parse("screen-{room}").unwrap();
        assert_eq!(p.pattern(), "screen-*");
        assert_eq!(p.room_of("screen-team"), Some("team"));
        for bad in ["{room}", "screen", "{room}-{room}", "a*{room}", "{room}@x"] {
            assert!(ScreenName::parse(bad).is_err(), "{bad}");
        }
    }

    const RECORD: &[u8] = br#"{"v":1,"room":"team","participants":[{"entity":"alice","display":"Alice","audio":true,"video":true},{"entity":"guest:Zed Q","display":"Zed Q","audio":true,"video":false}]}"#;

    fn alice() -> Caller {
        Caller {
            user: Some("alice".to_owned()),
            display: "Alice".to_owned(),
        }
    }

    fn policy(second: SecondPresenter) -> Policy {
        Policy {
            presenters: vec!["host".to_owned()],
            second_presenter: second,
            viewers: ViewerPolicy::Participants,
        }
    }

    #[test]
    fn the_conference_record_is_read_as_conference_writes_it() {
        let r = RoomRecord::parse(RECORD).unwrap();
        assert!(r.has_member("alice"));
        assert!(!r.has_member("bob"));
        assert!(r.has_guest("Zed Q"));
        assert!(!r.has_member("guest:Zed Q") || r.has_guest("Zed Q"));
        assert!(RoomRecord::parse(b"{\"v\":2,\"participants\":[]}").is_none());
        assert!(RoomRecord::parse(b"garbage").is_none());
    }

    #[test]
    fn participants_and_presenters_by_role_may_present() {
        let record = RoomRecord::parse(RECORD).unwrap();
        let p = policy(SecondPresenter::Refuse);
        assert_eq!(
            p.admit_presenter("team", &alice(), Some(&record), None),
            Admission::Present
        );
        let bob = Caller {
            user: Some("bob".to_owned()),
            display: "Bob".to_owned(),
        };
        assert_eq!(
            p.admit_presenter("team", &bob, Some(&record), None),
            Admission::Refuse(403, "Forbidden - Join Room team To Present".to_owned())
        );
        assert_eq!(
            p.admit_presenter("team", &bob, None, None),
            Admission::Refuse(403, "Forbidden - Join Room team To Present".to_owned())
        );
        let host = Caller {
            user: Some("host".to_owned()),
            display: "H".to_owned(),
        };
        assert_eq!(
            p.admit_presenter("team", &host, None, None),
            Admission::Present
        );
        let guest = Caller {
            user: None,
            display: "Zed Q".to_owned(),
        };
        assert_eq!(
            p.admit_presenter("team", &guest, Some(&record), None),
            Admission::Refuse(403, "Forbidden - Log In To Present".to_owned())
        );
    }

    #[test]
    fn a_second_presenter_is_refused_or_takes_over() {
        let record = RoomRecord::parse(RECORD).unwrap();
        let current = Current {
            user: "host",
            call_id: "c1",
        };
        assert_eq!(
            policy(SecondPresenter::Refuse).admit_presenter(
                "team",
                &alice(),
                Some(&record),
                Some(current.clone())
            ),
            Admission::Refuse(403, "Forbidden - host Is Presenting In team".to_owned())
        );
        assert_eq!(
            policy(SecondPresenter::TakeOver).admit_presenter(
                "team",
                &alice(),
                Some(&record),
                Some(current)
            ),
            Admission::TakeOver("c1".to_owned())
        );
    }

    #[test]
    fn viewers_are_participants_unless_anyone_may_watch() {
        let record = RoomRecord::parse(RECORD).unwrap();
        let current = Current {
            user: "alice",
            call_id: "c1",
        };
        let p = policy(SecondPresenter::Refuse);
        let guest = Caller {
            user: None,
            display: "Zed Q".to_owned(),
        };
        assert_eq!(
            p.admit_viewer("team", &guest, Some(&record), Some(current.clone())),
            Admission::View
        );
        let stranger = Caller {
            user: Some("mallory".to_owned()),
            display: "M".to_owned(),
        };
        assert_eq!(
            p.admit_viewer("team", &stranger, Some(&record), Some(current.clone())),
            Admission::Refuse(403, "Forbidden - Join Room team To Watch".to_owned())
        );
        assert_eq!(
            p.admit_viewer("team", &alice(), Some(&record), None),
            Admission::Refuse(
                480,
                "Temporarily Unavailable - No Presentation In team".to_owned()
            )
        );
        let anyone = Policy {
            viewers: ViewerPolicy::Anyone,
            ..p
        };
        assert_eq!(
            anyone.admit_viewer("team", &stranger, None, Some(current)),
            Admission::View
        );
    }

    #[test]
    fn display_names() {
        assert_eq!(
            display_name_of("\"Alice A\" <sip:alice@d>;tag=1"),
            "Alice A"
        );
        assert_eq!(display_name_of("Bob <sip:bob@d>"), "Bob");
        assert_eq!(display_name_of("<sip:carol@d>;tag=x"), "carol");
        assert_eq!(display_name_of("sip:dave@d"), "dave");
    }

    #[test]
    fn the_presentation_record_is_json() {
        let r = PresentationRecord {
            v: 1,
            room: "team".to_owned(),
            presenter: "alice".to_owned(),
            display: "Alice \"A\"".to_owned(),
            screen_uri: "sip:team-screen@d".to_owned(),
            started: 1_700_000_000,
            session: 7,
            video_mid: "0".to_owned(),
            codec: "vp8".to_owned(),
        };
        let bytes = r.to_bytes();
        let back: PresentationRecord = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, r);
    }
}
