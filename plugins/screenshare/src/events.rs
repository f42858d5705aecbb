//! The relay's webhook events (raised with `Host::emit_event`, ABI 1.2) and their JSON bodies:
//!
//! * `presentation.started`: `{"room", "presenter", "display", "screen_uri"}`;
//! * `presentation.stopped`: the same and `"reason"` (`hangup`: the presenter hung up;
//!   `media_failure`: the presenter's media leg failed or went silent; `left_room`: the
//!   presenter left the conference room; `taken_over`: another presenter took over) and
//!   `"duration_ms"`.
//!
//! Pure values here; the plugin raises them.

use std::time::Duration;

use huddle_sdk::serde::Serialize;

/// Why a presentation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(crate = "huddle_sdk::serde", rename_all = "snake_case")]
pub enum StopReason {
    /// The presenter hung up (BYE).
    Hangup,
    /// The presenter's media leg failed (ICE, DTLS, silence).
    MediaFailure,
    /// The presenter left the conference room.
    LeftRoom,
    /// Another presenter took over (`second_presenter = "take_over"`).
    TakenOver,
}

impl StopReason {
    /// The words of the log line.
    pub fn describe(self) -> &'static str {
        match self {
            StopReason::Hangup => "the presenter hung up",
            StopReason::MediaFailure => "the presenter's media failed",
            StopReason::LeftRoom => "the presenter left the room",
            StopReason::TakenOver => "another presenter took over",
        }
    }
}

/// Who presents where: the part both events share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(crate = "huddle_sdk::serde")]
pub struct Presenting<'a> {
    /// The room.
    pub room: &'a str,
    /// The presenter's user.
    pub presenter: &'a str,
    /// The presenter's display name.
    pub display: &'a str,
    /// The URI viewers call.
    pub screen_uri: &'a str,
}

#[derive(Serialize)]
#[serde(crate = "huddle_sdk::serde")]
struct Stopped<'a> {
    #[serde(flatten)]
    who: &'a Presenting<'a>,
    reason: StopReason,
    duration_ms: u64,
}

/// The body of `presentation.started`.
pub fn started(who: &Presenting<'_>) -> String {
    // Strings and integers always serialize.
    serde_json::to_string(who).unwrap_or_default()
}

/// The body of `presentation.stopped`.
pub fn stopped(who: &Presenting<'_>, reason: StopReason, lasted: Duration) -> String {
    serde_json::to_string(&Stopped {
        who,
        reason,
        duration_ms: u64::try_from(lasted.as_millis()).unwrap_or(u64::MAX),
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_json_objects_with_the_reason_in_snake_case() {
        let who = Presenting {
            room: "team",
            presenter: "alice",
            display: "Alice \"A\"",
            screen_uri: "sip:screen-team@d",
        };
        let v: serde_json::Value = serde_json::from_str(&started(&who)).unwrap();
        assert_eq!(v["room"], "team");
        assert_eq!(v["display"], "Alice \"A\"");
        assert_eq!(v["screen_uri"], "sip:screen-team@d");
        let v: serde_json::Value = serde_json::from_str(&stopped(
            &who,
            StopReason::TakenOver,
            Duration::from_millis(1500),
        ))
        .unwrap();
        assert_eq!(v["presenter"], "alice");
        assert_eq!(v["reason"], "taken_over");
        assert_eq!(v["duration_ms"], 1500);
        for (r, s) in [
            (StopReason::Hangup, "hangup"),
            (StopReason::MediaFailure, "media_failure"),
            (StopReason::LeftRoom, "left_room"),
        ] {
            let v: serde_json::Value =
                serde_json::from_str(&stopped(&who, r, Duration::ZERO)).unwrap();
            assert_eq!(v["reason"], s);
        }
    }
}
