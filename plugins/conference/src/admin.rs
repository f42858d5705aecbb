//! The conference's admin commands (ABI 1.2 `admin_request`, reached through the host's admin
//! HTTP API at `/rooms`) and its webhook events.
//!
//! Commands, JSON objects with a `command` field; answers are JSON, failures
//! `{"error": {"code", "message"}}` (codes `not_found`, `bad_request`, `conflict`):
//!
//! * `{"command": "list"}` → `{"rooms": [{"name", "participants", "locked", "layout",
//!   "on_demand"}]}`: the live rooms.
//! * `{"command": "participants", "room"}` → `{"room", "locked", "layout", "participants":
//!   [{"id", "entity", "display", "audio", "video", "muted"}]}`. `id` names the participant
//!   in the commands below.
//! * `{"command": "mute", "room", "participant", "muted": bool}`: a muted participant's audio
//!   is dropped before the mixer, so nobody hears them; their own mix is unchanged.
//! * `{"command": "kick", "room", "participant"}`: the participant's call ends with a BYE from
//!   the room, they leave the mix, subscribers are notified.
//! * `{"command": "lock", "room", "locked": bool}`: a locked room refuses new callers with
//!   `403 Forbidden - Room Locked`; those inside stay. A room that ends is unlocked.
//! * `{"command": "layout", "room", "layout": "grid" | "speaker"}`: the composite's layout.
//!
//! Events (through `emit_event`, when the host takes them): `room.created`, `room.ended`,
//! `participant.joined`, `participant.left`, each with `room` and, for participants, their
//! `id`, `entity` and `display`.

use std::collections::HashSet;

use huddle_sdk::serde::Deserialize;
use huddle_sdk::{Error, Host, MediaSessionId, Method, Result};

use crate::events::json_escape;
use crate::layout::LayoutKind;
use crate::Conference;

/// What the admin commands changed that the rest of the plugin consults.
#[derive(Debug, Default)]
pub struct AdminState {
    locked: HashSet<String>,
    muted: HashSet<u64>,
    /// Layouts changed at run time, until the room ends.
    layouts: std::collections::HashMap<String, LayoutKind>,
}

impl AdminState {
    /// Whether new callers to `room` are refused.
    pub fn is_locked(&self, room: &str) -> bool {
        self.locked.contains(room)
    }

    /// Whether participant `id`'s audio is kept out of the mix.
    pub fn is_muted(&self, id: u64) -> bool {
        self.muted.contains(&id)
    }

    /// The layout `room` shows: as changed by the admin, else its settings'.
    pub fn layout(&self, room: &str, configured: LayoutKind) -> LayoutKind {
        self.layouts.get(room).copied().unwrap_or(configured)
    }

    /// Forgets what belonged to a participant who left and, if their room ended, the room.
    fn forget(&mut self, id: u64, room: &str, ended: bool) {
        self.muted.remove(&id);
        if ended {
            self.locked.remove(room);
            self.layouts.remove(room);
        }
    }
}

/// The SIP answer to a caller of a locked room.
pub const LOCKED: (u16, &str) = (403, "Forbidden - Room Locked");

#[derive(Debug, Deserialize)]
#[serde(
    crate = "huddle_sdk::serde",
    tag = "command",
    rename_all = "snake_case"
)]
enum Command {
    List,
    Participants {
        room: String,
    },
    Mute {
        room: String,
        participant: u64,
        muted: bool,
    },
    Kick {
        room: String,
        participant: u64,
    },
    Lock {
        room: String,
        locked: bool,
    },
    Layout {
        room: String,
        layout: LayoutKind,
    },
}

fn error(code: &str, message: &str) -> String {
    format!(
        "{{\"error\":{{\"code\":\"{code}\",\"message\":\"{}\"}}}}",
        json_escape(message)
    )
}

fn layout_name(layout: LayoutKind) -> &'static str {
    match layout {
        LayoutKind::Grid => "grid",
        LayoutKind::Speaker => "speaker",
    }
}

/// Runs one admin command (see the [module docs](self)).
pub fn handle(conf: &mut Conference, host: &Host, request: &str) -> Result<String> {
    let command: Command = match serde_json::from_str(request) {
        Ok(c) => c,
        Err(e) => {
            return Ok(error(
                "bad_request",
                &format!("not a conference command: {e}"),
            ))
        }
    };
    let room_of = |conf: &Conference, room: &str| conf.rooms.get(room).is_some();
    match command {
        Command::List => {
            let rooms: Vec<String> = conf
                .rooms
                .live_names()
                .filter_map(|name| conf.rooms.get(name).map(|r| (name, r)))
                .map(|(name, r)| {
                    format!(
                        "{{\"name\":\"{}\",\"participants\":{},\"locked\":{},\"layout\":\"{}\",\"on_demand\":{}}}",
                        json_escape(name),
                        r.participants.len(),
                        conf.admin.is_locked(name),
                        layout_name(conf.admin.layout(name, r.settings.layout)),
                        r.on_demand
                    )
                })
                .collect();
            Ok(format!("{{\"rooms\":[{}]}}", rooms.join(",")))
        }
        Command::Participants { room } => {
            let Some(live) = conf.rooms.get(&room) else {
                return Ok(no_room(&room));
            };
            let people: Vec<String> = live
                .participants
                .iter()
                .map(|(id, p)| {
                    format!(
                        "{{\"id\":{id},\"entity\":\"{}\",\"display\":\"{}\",\"audio\":{},\"video\":{},\"muted\":{}}}",
                        json_escape(&p.entity),
                        json_escape(&p.display),
                        p.audio,
                        p.video,
                        conf.admin.is_muted(*id)
                    )
                })
                .collect();
            Ok(format!(
                "{{\"room\":\"{}\",\"locked\":{},\"layout\":\"{}\",\"participants\":[{}]}}",
                json_escape(&room),
                conf.admin.is_locked(&room),
                layout_name(conf.admin.layout(&room, live.settings.layout)),
                people.join(",")
            ))
        }
        Command::Mute {
            room,
            participant,
            muted,
        } => {
            if !in_room(conf, &room, participant) {
                return Ok(no_participant(&room, participant));
            }
            if muted {
                conf.admin.muted.insert(participant);
            } else {
                conf.admin.muted.remove(&participant);
            }
            // Participant ids are their media sessions': what the RTP routes are keyed by.
            conf.ingress.set_muted(participant, muted);
            huddle_sdk::info!(
                host,
                "room {room}: participant {participant} muted={muted} (admin)"
            );
            Ok(format!(
                "{{\"room\":\"{}\",\"participant\":{participant},\"muted\":{muted}}}",
                json_escape(&room)
            ))
        }
        Command::Kick { room, participant } => {
            if !in_room(conf, &room, participant) {
                return Ok(no_participant(&room, participant));
            }
            kick(conf, host, participant)?;
            huddle_sdk::info!(
                host,
                "room {room}: participant {participant} kicked (admin)"
            );
            Ok(format!(
                "{{\"room\":\"{}\",\"participant\":{participant},\"kicked\":true}}",
                json_escape(&room)
            ))
        }
        Command::Lock { room, locked } => {
            if !room_of(conf, &room) {
                return Ok(no_room(&room));
            }
            if locked {
                conf.admin.locked.insert(room.clone());
            } else {
                conf.admin.locked.remove(&room);
            }
            huddle_sdk::info!(host, "room {room}: locked={locked} (admin)");
            Ok(format!(
                "{{\"room\":\"{}\",\"locked\":{locked}}}",
                json_escape(&room)
            ))
        }
        Command::Layout { room, layout } => {
            if !room_of(conf, &room) {
                return Ok(no_room(&room));
            }
            conf.admin.layouts.insert(room.clone(), layout);
            if let Some(m) = conf.media.get(&room) {
                m.set_layout(layout);
                conf.room_changed(host, &room);
            }
            huddle_sdk::info!(host, "room {room}: layout {} (admin)", layout_name(layout));
            Ok(format!(
                "{{\"room\":\"{}\",\"layout\":\"{}\"}}",
                json_escape(&room),
                layout_name(layout)
            ))
        }
    }
}

fn in_room(conf: &Conference, room: &str, participant: u64) -> bool {
    conf.rooms
        .get(room)
        .is_some_and(|r| r.participants.contains_key(&participant))
}

fn no_room(room: &str) -> String {
    error("not_found", &format!("no live room {room}"))
}

fn no_participant(room: &str, participant: u64) -> String {
    error(
        "not_found",
        &format!("room {room} has no participant {participant}"),
    )
}

/// Ends participant `id`'s call from the room's side: BYE in their dialog, out of the room.
fn kick(conf: &mut Conference, host: &Host, id: u64) -> Result<()> {
    let session = MediaSessionId(id);
    let Some(call_id) = conf.by_session.remove(&session) else {
        return Err(Error::NotFound);
    };
    let Some(mut call) = conf.calls.remove(&call_id) else {
        return Err(Error::NotFound);
    };
    let bye = call.dialog.request(Method::Bye).header(
        "Reason",
        "SIP;cause=200;text=\"Removed by the room's administrator\"",
    );
    let sent = host.send_request(&bye.build());
    // The leg's hang-up that follows finds no call any more and sends nothing.
    let _ = host.close_media(session);
    conf.left(host, call);
    sent.map(|_| ())
}

/// Raises `kind` with `details` (a JSON object) when the host takes events.
fn emit(host: &Host, kind: &str, details: &str) {
    match host.emit_event(kind, details) {
        Ok(()) | Err(Error::NotSupported) => {}
        Err(e) => huddle_sdk::debug!(host, "event {kind} not raised: {e}"),
    }
}

fn participant_json(room: &str, id: u64, entity: &str, display: &str) -> String {
    format!(
        "{{\"room\":\"{}\",\"id\":{id},\"entity\":\"{}\",\"display\":\"{}\"}}",
        json_escape(room),
        json_escape(entity),
        json_escape(display)
    )
}

/// Hook: participant `id` joined `room` (which `started` with them).
pub fn joined(conf: &Conference, host: &Host, room: &str, id: u64, started: bool) {
    if started {
        emit(
            host,
            "room.created",
            &format!("{{\"room\":\"{}\"}}", json_escape(room)),
        );
    }
    if let Some(p) = conf.rooms.get(room).and_then(|r| r.participants.get(&id)) {
        emit(
            host,
            "participant.joined",
            &participant_json(room, id, &p.entity, &p.display),
        );
    }
}

/// Hook: participant `id` (`entity`, `display`) left `room`; it ended if nobody is left.
pub fn left(conf: &mut Conference, host: &Host, room: &str, id: u64, entity: &str, display: &str) {
    let ended = conf.rooms.get(room).is_none();
    conf.admin.forget(id, room, ended);
    emit(
        host,
        "participant.left",
        &participant_json(room, id, entity, display),
    );
    if ended {
        emit(
            host,
            "room.ended",
            &format!("{{\"room\":\"{}\"}}", json_escape(room)),
        );
    }
}

#[cfg(test)]
mod tests {
    //! Through the FakeHost and the real ABI (GStreamer pipelines run for the joins).

    use huddle_sdk::fake::{FakeHost, MediaCall};
    use huddle_sdk::{Capabilities, Method};

    const CONFIG: &str = "on_demand_prefix = \"\"\n[[rooms]]\nname = \"lobby\"\npublic = true\n";

    fn invite(call_id: &str, display: &str) -> String {
        let uri = "sip:lobby@example.test";
        let body = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=rtpmap:0 PCMU/8000\r\n";
        format!(
            "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/WS h.invalid;branch=z9hG4bK{call_id}\r\n\
             Max-Forwards: 70\r\nFrom: \"{display}\" <sip:{display}@elsewhere.test>;tag=t{call_id}\r\nTo: <{uri}>\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:{display}@x.invalid;transport=ws>\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    fn json(text: &str) -> serde_json::Value {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    #[test]
    fn commands_list_lock_mute_kick_and_raise_events() {
        let host = FakeHost::with_capabilities(Capabilities::ALL.with(Capabilities::EVENTS));
        let mut plugin = host
            .start(&crate::huddle_plugin_export::entry(), CONFIG)
            .expect("conference starts");
        assert_eq!(
            json(&plugin.admin_request(r#"{"command":"list"}"#).unwrap()),
            serde_json::json!({"rooms": []})
        );
        let bad = json(&plugin.admin_request(r#"{"command":"explode"}"#).unwrap());
        assert_eq!(bad["error"]["code"], "bad_request", "{bad}");
        let none = json(
            &plugin
                .admin_request(r#"{"command":"lock","room":"lobby","locked":true}"#)
                .unwrap(),
        );
        assert_eq!(none["error"]["code"], "not_found", "{none}");

        let txn = plugin.request(invite("c1", "Zed")).unwrap();
        assert_eq!(host.final_response(txn).unwrap().status(), 200);
        let room = json(
            &plugin
                .admin_request(r#"{"command":"participants","room":"lobby"}"#)
                .unwrap(),
        );
        let people = room["participants"].as_array().expect("a list");
        assert_eq!(people.len(), 1, "{room}");
        assert_eq!(people[0]["entity"], "guest:Zed");
        let id = people[0]["id"].as_u64().expect("an id");

        // Locked: the next caller is refused, the one inside stays.
        let locked = json(
            &plugin
                .admin_request(r#"{"command":"lock","room":"lobby","locked":true}"#)
                .unwrap(),
        );
        assert_eq!(locked["locked"], true);
        let txn = plugin.request(invite("c2", "Amy")).unwrap();
        let refused = host.final_response(txn).unwrap();
        assert_eq!(refused.status(), 403);
        assert_eq!(refused.message.reason(), Some("Forbidden - Room Locked"));

        let muted = json(
            &plugin
                .admin_request(&format!(
                    r#"{{"command":"mute","room":"lobby","participant":{id},"muted":true}}"#
                ))
                .unwrap(),
        );
        assert_eq!(muted["muted"], true);
        let layout = json(
            &plugin
                .admin_request(r#"{"command":"layout","room":"lobby","layout":"speaker"}"#)
                .unwrap(),
        );
        assert_eq!(layout["layout"], "speaker");
        let listed = json(&plugin.admin_request(r#"{"command":"list"}"#).unwrap());
        assert_eq!(listed["rooms"][0]["layout"], "speaker", "{listed}");
        assert_eq!(listed["rooms"][0]["locked"], true, "{listed}");

        // Kick: a BYE goes to the participant, the media leg is closed, the room ends.
        let kicked = json(
            &plugin
                .admin_request(&format!(
                    r#"{{"command":"kick","room":"lobby","participant":{id}}}"#
                ))
                .unwrap(),
        );
        assert_eq!(kicked["kicked"], true, "{kicked}");
        let bye = host
            .sent_requests()
            .into_iter()
            .find(|r| r.message.method() == Some(&Method::Bye))
            .expect("a BYE to the kicked participant");
        assert_eq!(bye.message.call_id(), Some("c1"));
        assert!(host
            .media_calls()
            .iter()
            .any(|c| matches!(c, MediaCall::Close { session } if session.0 == id)));
        assert_eq!(
            json(&plugin.admin_request(r#"{"command":"list"}"#).unwrap())["rooms"],
            serde_json::json!([])
        );
        let kinds: Vec<String> = host.events().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            kinds,
            [
                "room.created",
                "participant.joined",
                "participant.left",
                "room.ended"
            ],
            "{:?}",
            host.events()
        );
        // The room ended, so it is unlocked: a new caller gets in.
        let txn = plugin.request(invite("c3", "Amy")).unwrap();
        assert_eq!(host.final_response(txn).unwrap().status(), 200);
    }
}
