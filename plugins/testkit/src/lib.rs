//! `testkit`: **a plugin for the server's tests only — never deploy it.** It lets the
//! end-to-end tests in `tests/tests/plugin_*.rs` drive every host service through a real
//! server: each instance claims `MESSAGE sip:<user>@<domain>` and treats the body as a
//! command, answering `200 OK` with the result as a `text/plain` body.
//!
//! Configuration (`[plugins.config]`):
//!
//! * `user` (default `"kit"`): the Request-URI user it claims;
//! * `panic_on`: a body that makes `handle_request` panic (fault injection);
//! * `hold_file`: `handle_request` waits until this file exists (a slow plugin that the test
//!   releases when it has seen what happens meanwhile);
//! * `invite` (default false): also claim `INVITE` to the user — the body `answer` gets a 200
//!   (its ACK is recorded), anything else a 180 and then nothing until a CANCEL (answered
//!   `487` on the INVITE, recorded). Every INVITE is recorded as `invite RURI user=USER
//!   body=BODY` (`-` for no authenticated user).
//! * `guests` (default false): the INVITE claim is open to guests (no 407 for a local caller
//!   without credentials).
//!
//! An INVITE whose body is `retarget WHO URI REST…` is retargeted (ABI 1.4, `Host::retarget`)
//! to `URI` by the instance whose user is `WHO` (or by every instance, for `*`), recorded as
//! `retarget URI ok` or `retarget URI error: …` (then answered `500`); any other instance
//! treats `REST` as the body (`answer`, or ringing). An INVITE whose body is
//! `retarget-on-cancel URI` rings, and its CANCEL is met with a retarget to `URI` instead of
//! a 487 (recorded as `retarget-on-cancel URI ok`).
//!
//! Commands (words separated by spaces; `-` names the own namespace):
//!
//! | body | does | answers |
//! |---|---|---|
//! | `ping` | nothing | `pong` |
//! | `put KEY VALUE` | writes its own namespace | `ok` or `error: …` |
//! | `delete KEY` | deletes in its own namespace | `ok`, `absent` or `error: …` |
//! | `get NS KEY` | reads a namespace | `value: …`, `none` or `error: …` |
//! | `scan NS PREFIX` | scans a namespace | one `key=value` per line |
//! | `watch NS PREFIX` | watches a prefix | `watch ID` |
//! | `timer MS TOKEN` | arms a timer | `timer ID` |
//! | `send URI TEXT…` | sends a MESSAGE | `sent ID` |
//! | `bogus-respond` | responds on a transaction that does not exist | the error |
//! | `fail` / `busy` | returns `Error::Plugin` / `Error::Busy` without answering | (the host answers 500 / 503) |
//! | `events` | — | what happened since start, one line each |
//!
//! Events recorded: `change put KEY=VALUE`, `change delete KEY`, `change lagged`,
//! `timer TOKEN`, `registration online|offline|updated AOR BINDINGS`, `response ID STATUS`,
//! `ack`, `cancel`.

use std::collections::HashMap;
use std::time::Duration;

use huddle_sdk::{
    Capabilities, Claim, Claims, Config, Error, Host, Method, NewRequest, Plugin,
    RegistrationEvent, RegistrationKind, Request, Response, Result, StoreChange, TimerId,
    TransactionId,
};

/// See the [crate docs](crate).
#[derive(Debug, Default, huddle_sdk::serde::Deserialize)]
#[serde(crate = "huddle_sdk::serde", default, deny_unknown_fields)]
pub struct KitConfig {
    /// The claimed Request-URI user (`kit` when empty).
    pub user: String,
    /// A body that makes `handle_request` panic.
    pub panic_on: Option<String>,
    /// `handle_request` waits until this file exists.
    pub hold_file: Option<String>,
    /// Also claim INVITE.
    pub invite: bool,
    /// The INVITE claim is open to guests.
    pub guests: bool,
}

/// One instance.
#[derive(Debug)]
pub struct Kit {
    user: String,
    panic_on: Option<String>,
    hold_file: Option<std::path::PathBuf>,
    events: Vec<String>,
    /// INVITEs waiting (answered 180), by transaction.
    ringing: HashMap<TransactionId, Request>,
}

impl Kit {
    fn command(&mut self, host: &Host, body: &str) -> Result<String> {
        let words: Vec<&str> = body.split_whitespace().collect();
        let ns = |w: &str| {
            if w == "-" {
                String::new()
            } else {
                w.to_owned()
            }
        };
        let shown = |r: Result<String>| r.unwrap_or_else(|e| format!("error: {e}"));
        Ok(match words.as_slice() {
            ["ping"] => "pong".to_owned(),
            ["put", key, value] => shown(
                host.store()
                    .put(key.as_bytes(), value.as_bytes())
                    .map(|()| "ok".to_owned()),
            ),
            ["delete", key] => shown(
                host.store()
                    .delete(key.as_bytes())
                    .map(|present| if present { "ok" } else { "absent" }.to_owned()),
            ),
            ["get", space, key] => {
                let space = ns(space);
                let value = if space.is_empty() {
                    host.store().get(key.as_bytes())
                } else {
                    host.namespace(&space).get(key.as_bytes())
                };
                shown(value.map(|v| match v {
                    Some(v) => format!("value: {}", String::from_utf8_lossy(&v)),
                    None => "none".to_owned(),
                }))
            }
            ["scan", space, prefix] => {
                let space = ns(space);
                let entries = if space.is_empty() {
                    host.store().scan_all(prefix.as_bytes())
                } else {
                    host.namespace(&space).scan_all(prefix.as_bytes())
                };
                shown(entries.map(|entries| {
                    entries
                        .iter()
                        .map(|(k, v)| {
                            format!(
                                "{}={}",
                                String::from_utf8_lossy(k),
                                String::from_utf8_lossy(v)
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                }))
            }
            ["watch", space, prefix] => {
                let space = ns(space);
                let id = if space.is_empty() {
                    host.store().watch(prefix.as_bytes())
                } else {
                    host.namespace(&space).watch(prefix.as_bytes())
                };
                shown(id.map(|id| format!("watch {id}")))
            }
            ["timer", ms, token] => {
                let (Ok(ms), Ok(token)) = (ms.parse::<u64>(), token.parse::<u64>()) else {
                    return Ok("error: timer MS TOKEN".to_owned());
                };
                shown(
                    host.set_timer(Duration::from_millis(ms), token)
                        .map(|id| format!("timer {id}")),
                )
            }
            ["send", uri, text @ ..] => {
                let from = format!("<sip:{}@huddle.invalid>", self.user);
                let request = NewRequest::new(Method::Message, uri)
                    .from(&from)
                    .body("text/plain", text.join(" ").as_bytes())
                    .build();
                shown(host.send_request(&request).map(|id| format!("sent {id}")))
            }
            ["bogus-respond"] => {
                let bogus = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP x;branch=z9hG4bKx\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: none\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n";
                match host.respond(TransactionId(u64::MAX), bogus) {
                    Ok(()) => "accepted?!".to_owned(),
                    Err(e) => format!("error: {e}"),
                }
            }
            ["fail"] => return Err(Error::Plugin),
            ["busy"] => return Err(Error::Busy),
            ["events"] => self.events.join("\n"),
            _ => "ok".to_owned(),
        })
    }
}

impl Plugin for Kit {
    fn init(host: &Host, config: &Config, claims: &mut Claims) -> Result<Self> {
        let config: KitConfig = config.parse()?;
        let user = if config.user.is_empty() {
            "kit".to_owned()
        } else {
            config.user
        };
        claims.add(Claim::method("MESSAGE").with_user(&user));
        if config.invite {
            let invite = Claim::method("INVITE").with_user(&user);
            claims.add(if config.guests {
                invite.open_to_guests()
            } else {
                invite
            });
        }
        huddle_sdk::info!(host, "testkit answering sip:{user}@<domain>");
        Ok(Kit {
            user,
            panic_on: config.panic_on,
            hold_file: config.hold_file.map(Into::into),
            events: Vec::new(),
            ringing: HashMap::new(),
        })
    }

    fn handle_request(&mut self, host: &Host, request: Request) -> Result<()> {
        let body = String::from_utf8_lossy(request.body()).into_owned();
        if self.panic_on.as_deref() == Some(body.as_str()) {
            panic!("testkit: panic on cue");
        }
        if let Some(release) = &self.hold_file {
            // A plugin stuck in its own work; the file is the test's signal, not a clock.
            while !release.exists() {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        match request.method() {
            Method::Ack => {
                self.events.push("ack".to_owned());
                return Ok(());
            }
            Method::Cancel => {
                self.events.push("cancel".to_owned());
                if let Some(invite) = request
                    .info()
                    .related
                    .and_then(|txn| self.ringing.remove(&txn))
                {
                    let words: Vec<String> = String::from_utf8_lossy(invite.body())
                        .split_whitespace()
                        .map(str::to_owned)
                        .collect();
                    match (words.first().map(String::as_str), words.get(1)) {
                        (Some("retarget-on-cancel"), Some(uri)) => {
                            let txn = invite.transaction().ok_or(Error::UnknownTransaction)?;
                            let outcome = match host.retarget(txn, uri) {
                                Ok(()) => "ok".to_owned(),
                                Err(e) => format!("error: {e}"),
                            };
                            self.events
                                .push(format!("retarget-on-cancel {uri} {outcome}"));
                        }
                        _ => host.reply(&invite, 487, "Request Terminated")?,
                    }
                }
                return Ok(());
            }
            Method::Invite => {
                let contact = format!("<sip:{}@{}>", self.user, "127.0.0.1");
                let txn = request.transaction().ok_or(Error::UnknownTransaction)?;
                self.events.push(format!(
                    "invite {} user={} body={body}",
                    request.uri(),
                    request.info().auth_user.as_deref().unwrap_or("-")
                ));
                let words: Vec<&str> = body.split_whitespace().collect();
                let body = match words.as_slice() {
                    ["retarget", who, uri, ..] if *who == "*" || *who == self.user => {
                        match host.retarget(txn, uri) {
                            Ok(()) => {
                                self.events.push(format!("retarget {uri} ok"));
                                return Ok(());
                            }
                            Err(e) => {
                                self.events.push(format!("retarget {uri} error: {e}"));
                                let failed = request
                                    .response(500, "Server Internal Error - Retarget Failed")
                                    .body("text/plain", format!("error: {e}").as_bytes())
                                    .build();
                                return host.respond(txn, &failed);
                            }
                        }
                    }
                    ["retarget", _, _, rest @ ..] => rest.join(" "),
                    _ => body,
                };
                if body == "answer" {
                    let ok = request
                        .response(200, "OK")
                        .header("Contact", &contact)
                        .build();
                    return host.respond(txn, &ok);
                }
                host.respond(txn, &request.response(180, "Ringing").build())?;
                self.ringing.insert(txn, request);
                return Ok(());
            }
            _ => {}
        }
        let answer = self.command(host, &body)?;
        let response = request
            .response(200, "OK")
            .body("text/plain", answer.as_bytes())
            .build();
        host.respond(
            request.transaction().ok_or(Error::UnknownTransaction)?,
            &response,
        )
    }

    fn handle_response(&mut self, _host: &Host, response: Response) -> Result<()> {
        self.events.push(format!(
            "response {} {}",
            response.request_id(),
            response.status()
        ));
        Ok(())
    }

    fn on_timer(&mut self, _host: &Host, _timer: TimerId, token: u64) -> Result<()> {
        self.events.push(format!("timer {token}"));
        Ok(())
    }

    fn on_store_change(&mut self, _host: &Host, change: StoreChange) -> Result<()> {
        self.events.push(match change {
            StoreChange::Put { key, value, .. } => format!(
                "change put {}={}",
                String::from_utf8_lossy(&key),
                String::from_utf8_lossy(&value)
            ),
            StoreChange::Delete { key, .. } => {
                format!("change delete {}", String::from_utf8_lossy(&key))
            }
            StoreChange::Lagged { .. } => "change lagged".to_owned(),
        });
        Ok(())
    }

    fn on_registration(&mut self, _host: &Host, event: RegistrationEvent) -> Result<()> {
        let kind = match event.kind {
            RegistrationKind::Online => "online",
            RegistrationKind::Offline => "offline",
            RegistrationKind::Updated => "updated",
            RegistrationKind::Other(_) => "other",
        };
        self.events.push(format!(
            "registration {kind} {} {}",
            event.aor, event.bindings
        ));
        Ok(())
    }
}

huddle_sdk::export_plugin!(
    Kit,
    "testkit",
    env!("CARGO_PKG_VERSION"),
    Capabilities::STORE
        .with(Capabilities::STORE_WATCH)
        .with(Capabilities::LOCATION)
        .with(Capabilities::REGISTRATION_EVENTS)
        .with(Capabilities::SEND_REQUEST)
        .with(Capabilities::TIMERS)
);

#[cfg(test)]
mod tests {
    use super::*;
    use huddle_sdk::fake::{sample_request, FakeHost};

    #[test]
    fn commands_reach_the_host_services() {
        let host = FakeHost::new();
        let mut kit = host
            .start(&huddle_plugin_export::entry(), "user = \"kit\"")
            .unwrap();
        let mut ask = |body: &str| {
            let txn = kit
                .request(sample_request("MESSAGE", "sip:kit@example.test", body))
                .unwrap();
            String::from_utf8(host.final_response(txn).unwrap().message.body().to_vec()).unwrap()
        };
        assert_eq!(ask("ping"), "pong");
        assert!(ask("watch - w/").starts_with("watch "));
        assert_eq!(ask("put w/a 1"), "ok");
        assert_eq!(ask("get - w/a"), "value: 1");
        assert_eq!(ask("get credentials x"), "error: permission denied");
        assert!(ask("bogus-respond").contains("unknown or finished transaction"));
        assert_eq!(ask("events"), "change put w/a=1");
    }
}
