//! Shared screens, as the screen-share relay publishes them: its presentation records
//! (`presentations/<room>` in its namespace, `plugin/screenshare` by default), read and watched
//! here, turned into what the mixer must do — tap a presenter's stream and show it, or stop.
//! Pure: records in, [`ScreenChange`]s out, unit-tested without a host.
//!
//! The conference never reaches into the relay: it reads the relay's documented record (only the
//! fields below; others are ignored) and taps the presenter's stream through the host
//! (`Host::tap_stream`), so either plugin can be changed or left out without the other.

use std::collections::BTreeMap;

use huddle_sdk::serde::Deserialize;
use huddle_sdk::MediaSessionId;

use crate::sdp::VideoCodec;

/// The prefix of presentation records in the relay's namespace.
pub const PRESENTATIONS: &str = "presentations/";

/// A presentation record as the conference reads it. Unknown fields are ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(crate = "huddle_sdk::serde")]
struct Record {
    v: u32,
    room: String,
    #[serde(default)]
    display: String,
    #[serde(default)]
    session: u64,
    #[serde(default)]
    video_mid: String,
    #[serde(default)]
    codec: String,
}

/// A screen being shared in a room: the presenter's media session and video stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Screen {
    /// The presenter's media session (the relay's, not ours).
    pub session: MediaSessionId,
    /// Its video stream.
    pub mid: String,
    /// Who presents, for the tile's label.
    pub display: String,
    /// The codec the relay negotiated (VP8 or H.264; both decoded).
    pub codec: VideoCodec,
}

/// Why a record cannot be shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    /// Not JSON of record version 1.
    NotARecord,
    /// Written by a relay that does not say where the stream is (before the tap).
    NoStream,
    /// A codec the mixer does not decode.
    Codec(String),
}

/// Reads the record stored at `key` (relative to the relay's namespace): its room and screen.
/// `None` for keys that are not presentations.
pub fn parse(key: &[u8], value: &[u8]) -> Option<(String, Result<Screen, Unusable>)> {
    let room = std::str::from_utf8(key).ok()?.strip_prefix(PRESENTATIONS)?;
    if room.is_empty() {
        return None;
    }
    let screen = match serde_json::from_slice::<Record>(value) {
        Ok(r) if r.v == 1 && r.room == room => {
            if r.session == 0 || r.video_mid.is_empty() {
                Err(Unusable::NoStream)
            } else if let Some(codec) = VideoCodec::from_name(&r.codec) {
                Ok(Screen {
                    session: MediaSessionId(r.session),
                    mid: r.video_mid,
                    display: r.display,
                    codec,
                })
            } else {
                Err(Unusable::Codec(r.codec))
            }
        }
        _ => Err(Unusable::NotARecord),
    };
    Some((room.to_owned(), screen))
}

/// The room of a presentation record's key (`presentations/<room>`).
pub fn room_of(key: &[u8]) -> Option<&str> {
    std::str::from_utf8(key)
        .ok()?
        .strip_prefix(PRESENTATIONS)
        .filter(|r| !r.is_empty())
}

/// What the mixer must do for one room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScreenChange {
    /// Tap this screen and show it (presenter layout).
    Show(String, Screen),
    /// Untap this screen and go back to the room's layout.
    Hide(String, Screen),
}

/// The screens shared now, by room.
#[derive(Debug, Default)]
pub struct Screens {
    by_room: BTreeMap<String, Screen>,
}

impl Screens {
    /// Room `room` now shares `screen` (`None`: nothing). A new presenter (a take-over) is a
    /// hide of the old screen then a show of the new one; the same screen again changes nothing.
    pub fn set(&mut self, room: &str, screen: Option<Screen>) -> Vec<ScreenChange> {
        let old = match &screen {
            Some(s) => self.by_room.insert(room.to_owned(), s.clone()),
            None => self.by_room.remove(room),
        };
        if old == screen {
            return Vec::new();
        }
        old.map(|o| ScreenChange::Hide(room.to_owned(), o))
            .into_iter()
            .chain(screen.map(|s| ScreenChange::Show(room.to_owned(), s)))
            .collect()
    }

    /// Replaces everything with `now` (a rescan after lost changes).
    pub fn reset(&mut self, now: BTreeMap<String, Screen>) -> Vec<ScreenChange> {
        let rooms: Vec<String> = self
            .by_room
            .keys()
            .chain(now.keys())
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut now = now;
        rooms
            .iter()
            .flat_map(|room| {
                let screen = now.remove(room);
                self.set(room, screen)
            })
            .collect()
    }

    /// The room whose shared screen comes from `session`.
    pub fn room_of_session(&self, session: MediaSessionId) -> Option<&str> {
        self.by_room
            .iter()
            .find(|(_, s)| s.session == session)
            .map(|(r, _)| r.as_str())
    }

    /// The screen shared in `room`.
    pub fn get(&self, room: &str) -> Option<&Screen> {
        self.by_room.get(room)
    }

    /// Every screen shared now.
    pub fn all(&self) -> impl Iterator<Item = (&String, &Screen)> {
        self.by_room.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(room: &str, session: u64, codec: &str) -> Vec<u8> {
        format!(
            "{{\"v\":1,\"room\":\"{room}\",\"presenter\":\"alice\",\"display\":\"Alice\",\
             \"screen_uri\":\"sip:{room}-screen@d\",\"started\":1,\"session\":{session},\
             \"video_mid\":\"0\",\"codec\":\"{codec}\",\"later\":true}}"
        )
        .into_bytes()
    }

    fn screen(session: u64) -> Screen {
        Screen {
            session: MediaSessionId(session),
            mid: "0".to_owned(),
            display: "Alice".to_owned(),
            codec: VideoCodec::Vp8,
        }
    }

    #[test]
    fn records_are_read_and_unusable_ones_say_why() {
        assert_eq!(
            parse(b"presentations/team", &record("team", 7, "vp8")),
            Some(("team".to_owned(), Ok(screen(7))))
        );
        let h264 = Screen {
            codec: VideoCodec::H264,
            ..screen(7)
        };
        assert_eq!(
            parse(b"presentations/team", &record("team", 7, "H264")),
            Some(("team".to_owned(), Ok(h264)))
        );
        assert_eq!(
            parse(b"presentations/team", &record("team", 7, "vp9")),
            Some(("team".to_owned(), Err(Unusable::Codec("vp9".to_owned()))))
        );
        assert_eq!(
            parse(b"presentations/team", &record("team", 0, "vp8")),
            Some(("team".to_owned(), Err(Unusable::NoStream))),
            "a record of a relay before the tap"
        );
        assert_eq!(
            parse(b"presentations/team", b"{not json"),
            Some(("team".to_owned(), Err(Unusable::NotARecord)))
        );
        assert_eq!(
            parse(b"presentations/team", &record("other", 7, "vp8")),
            Some(("team".to_owned(), Err(Unusable::NotARecord))),
            "a record under another room's key"
        );
        assert_eq!(parse(b"rooms/team", &record("team", 7, "vp8")), None);
        assert_eq!(room_of(b"presentations/team"), Some("team"));
        assert_eq!(room_of(b"presentations/"), None);
    }

    #[test]
    fn a_presentation_shows_a_take_over_swaps_and_the_end_hides() {
        let mut s = Screens::default();
        assert_eq!(
            s.set("team", Some(screen(7))),
            [ScreenChange::Show("team".into(), screen(7))]
        );
        assert_eq!(s.room_of_session(MediaSessionId(7)), Some("team"));
        assert!(s.set("team", Some(screen(7))).is_empty(), "a rewrite");
        assert_eq!(
            s.set("team", Some(screen(9))),
            [
                ScreenChange::Hide("team".into(), screen(7)),
                ScreenChange::Show("team".into(), screen(9))
            ]
        );
        assert_eq!(s.room_of_session(MediaSessionId(7)), None);
        assert_eq!(
            s.set("team", None),
            [ScreenChange::Hide("team".into(), screen(9))]
        );
        assert!(s.set("team", None).is_empty());
        assert_eq!(s.get("team"), None);
    }

    #[test]
    fn a_rescan_shows_new_screens_and_hides_gone_ones() {
        let mut s = Screens::default();
        s.set("a", Some(screen(1)));
        s.set("b", Some(screen(2)));
        let now = BTreeMap::from([("b".to_owned(), screen(2)), ("c".to_owned(), screen(3))]);
        assert_eq!(
            s.reset(now),
            [
                ScreenChange::Hide("a".into(), screen(1)),
                ScreenChange::Show("c".into(), screen(3))
            ]
        );
        assert_eq!(s.all().count(), 2);
    }
}
