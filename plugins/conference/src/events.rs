//! RFC 4575 conference state: the `application/conference-info+xml` body of the NOTIFYs sent
//! to `Event: conference` subscribers, and the JSON record kept in the store for presence.

use crate::room::Room;

/// Escapes text for XML content and attribute values.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Escapes text for a JSON string.
pub fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// A participant's entity URI: members as `sip:<user>@<domain>`, guests under the room.
fn entity_uri(entity: &str, domain: &str) -> String {
    match entity.strip_prefix("guest:") {
        Some(name) => {
            let user: String = name
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect();
            format!("sip:guest-{user}@{domain}")
        }
        None => format!("sip:{entity}@{domain}"),
    }
}

/// A full-state conference-info document for `room` (or an empty one when it is not live).
pub fn conference_info(room_uri: &str, domain: &str, room: Option<&Room>, version: u32) -> String {
    let mut xml = String::new();
    xml.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    xml.push_str(&format!(
        "<conference-info xmlns=\"urn:ietf:params:xml:ns:conference-info\" entity=\"{}\" state=\"full\" version=\"{version}\">\n",
        xml_escape(room_uri)
    ));
    let name = room.map(|r| r.settings.name.as_str()).unwrap_or("");
    xml.push_str(&format!(
        "  <conference-description><display-text>{}</display-text></conference-description>\n",
        xml_escape(name)
    ));
    let count = room.map_or(0, |r| r.participants.len());
    xml.push_str(&format!(
        "  <conference-state><user-count>{count}</user-count><active>{}</active></conference-state>\n",
        count > 0
    ));
    xml.push_str("  <users>\n");
    for p in room.iter().flat_map(|r| r.participants.values()) {
        let uri = xml_escape(&entity_uri(&p.entity, domain));
        xml.push_str(&format!(
            "    <user entity=\"{uri}\" state=\"full\">\n      <display-text>{}</display-text>\n      <roles><entry>{}</entry></roles>\n      <endpoint entity=\"{uri}\">\n        <status>connected</status>\n        <joining-method>dialed-in</joining-method>\n",
            xml_escape(&p.display),
            if p.entity.starts_with("guest:") { "guest" } else { "participant" }
        ));
        xml.push_str(&format!(
            "        <media id=\"audio\"><type>audio</type><status>{}</status></media>\n",
            if p.audio { "sendrecv" } else { "recvonly" }
        ));
        xml.push_str(&format!(
            "        <media id=\"video\"><type>video</type><status>{}</status></media>\n",
            if p.video { "sendrecv" } else { "recvonly" }
        ));
        xml.push_str("      </endpoint>\n    </user>\n");
    }
    xml.push_str("  </users>\n</conference-info>\n");
    xml
}

/// The store record of a live room (`rooms/<name>`), read by presence to show "in a meeting"
/// and by the screen-share relay to see who is in the room; `layout` is the layout the
/// composite shows now (`grid`, `speaker`, or `presenter` while a screen is shared).
pub fn room_record(room: &Room, layout: &str) -> String {
    let people: Vec<String> = room
        .participants
        .values()
        .map(|p| {
            format!(
                "{{\"entity\":\"{}\",\"display\":\"{}\",\"audio\":{},\"video\":{}}}",
                json_escape(&p.entity),
                json_escape(&p.display),
                p.audio,
                p.video
            )
        })
        .collect();
    format!(
        "{{\"v\":1,\"room\":\"{}\",\"layout\":\"{}\",\"participants\":[{}]}}",
        json_escape(&room.settings.name),
        json_escape(layout),
        people.join(",")
    )
}

/// The `plugin/conference/stats/<room>` record: what the room's media has cost so far
/// (`mixer_cpu_seconds`: see [`crate::cpu`] for what is counted). Rewritten every
/// `stats_interval_secs` while the room lives, deleted when it ends; the host's `/metrics`
/// reads it.
pub fn stats_record(room: &str, cpu: std::time::Duration) -> String {
    format!(
        "{{\"v\":1,\"room\":\"{}\",\"mixer_cpu_seconds\":{:.3}}}",
        json_escape(room),
        cpu.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::{Caller, RoomSettings, Rooms};

    #[test]
    fn conference_info_lists_participants_escaped() {
        let mut rooms = Rooms::new(
            vec![RoomSettings {
                name: "team".to_owned(),
                public: true,
                ..RoomSettings::default()
            }],
            "",
            RoomSettings::default(),
        )
        .unwrap();
        let alice = Caller {
            member: Some("alice".to_owned()),
            display: "Alice <A&B>".to_owned(),
            pin: None,
        };
        let guest = Caller {
            member: None,
            display: "Zed Q".to_owned(),
            pin: None,
        };
        rooms.join("team", 1, &alice, true, true).unwrap();
        rooms.join("team", 2, &guest, true, false).unwrap();
        let room = rooms.get("team");
        let xml = conference_info("sip:team@d", "d", room, 3);
        assert!(xml.contains("version=\"3\""));
        assert!(xml.contains("<user-count>2</user-count>"));
        assert!(xml.contains("entity=\"sip:alice@d\""));
        assert!(xml.contains("Alice &lt;A&amp;B&gt;"));
        assert!(xml.contains("entity=\"sip:guest-Zed-Q@d\""));
        let json = room_record(room.unwrap(), "presenter");
        assert!(json.contains("\"entity\":\"guest:Zed Q\""), "{json}");
        assert!(json.contains("\"layout\":\"presenter\""), "{json}");
        let empty = conference_info("sip:team@d", "d", None, 4);
        assert!(empty.contains("<user-count>0</user-count>"));
    }
}
