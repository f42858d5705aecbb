//! The call side of echo: a SIP user agent server whose media is the caller's own, sent back.
//!
//! * **INVITE** with an SDP offer: the host's media engine answers it
//!   ([`Host::media_answer`]; the host adds ICE, DTLS, BUNDLE and rtcp-mux), and the plugin
//!   sends `200 OK` with the answer. A refused offer is answered with the status and reason
//!   the host gives (400 for malformed SDP, 488 with a `Warning` for a plain RTP phone), an
//!   INVITE without an offer with 488.
//! * **re-INVITE** in the dialog (hold with `a=sendonly`, resume with `a=sendrecv`, video
//!   added): the same media session is renegotiated and answered with the same To tag.
//! * **BYE** from the caller: `200 OK`, and the media session is closed.
//! * **The media session ends first** (`media_hangup` with `Transport`: ICE or DTLS never
//!   completed, or connectivity was lost): the plugin ends the dialog with a BYE of its own.
//!
//! Media flows one of two ways ([`MediaPath`]):
//! * `forward` (default): each received stream is forwarded by the host into the same stream
//!   of the same session ([`Host::forward_stream`]): no packet enters the plugin, and the host
//!   rewrites SSRC/sequence/timestamps and passes the caller's key-frame requests back to the
//!   caller. This is the SFU primitive.
//! * `plugin`: every packet comes to [`Calls::incoming_rtp`] and goes back with
//!   [`Host::send_rtp`]; key-frame requests arrive as RTCP and are turned into
//!   [`Host::request_keyframe`]. Slower, but shows the whole packet API.
//!
//! The dialog is kept minimal on purpose: echo sends no Record-Route in its 200 and uses its
//! own Request-URI as Contact, so the caller's in-dialog requests come straight back here. The
//! Record-Route values the host added (its address and the caller's connection) become the
//! route set of the BYE echo sends, which is how that BYE finds a browser whose Contact is
//! `*.invalid`.

use std::collections::HashMap;

use huddle_sdk::dialog::{self, UasDialog};
use huddle_sdk::{Error, HangupReason, Host, MediaSessionId, Method, Request, Response, Result};

/// How echoed media flows (`media` in the plugin's config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, huddle_sdk::serde::Deserialize)]
#[serde(crate = "huddle_sdk::serde", rename_all = "snake_case")]
pub enum MediaPath {
    /// The host forwards each stream back into itself (no packet enters the plugin).
    #[default]
    Forward,
    /// Every packet passes through the plugin.
    Plugin,
}

/// One call: the dialog as the plugin needs it to answer re-INVITEs and to send a BYE.
#[derive(Debug)]
struct Call {
    session: MediaSessionId,
    /// The dialog: our tag, the caller's target and the route set of our BYE.
    dialog: UasDialog,
    /// The media streams (mid, is video) of the last answer.
    streams: Vec<(String, bool)>,
}

/// Every call of one echo instance.
#[derive(Debug)]
pub struct Calls {
    path: MediaPath,
    by_call_id: HashMap<String, Call>,
    by_session: HashMap<MediaSessionId, String>,
}

impl Calls {
    /// No calls yet.
    pub fn new(path: MediaPath) -> Calls {
        Calls {
            path,
            by_call_id: HashMap::new(),
            by_session: HashMap::new(),
        }
    }

    /// How many calls are up.
    pub fn len(&self) -> usize {
        self.by_call_id.len()
    }

    /// True when no call is up.
    pub fn is_empty(&self) -> bool {
        self.by_call_id.is_empty()
    }

    /// INVITE, re-INVITE, BYE, ACK and CANCEL for our user.
    pub fn handle_request(&mut self, host: &Host, request: Request) -> Result<()> {
        let call_id = request.message().call_id().unwrap_or_default().to_owned();
        match request.method() {
            Method::Invite => self.invite(host, request, call_id),
            Method::Bye => {
                if let Some(call) = self.by_call_id.remove(&call_id) {
                    self.by_session.remove(&call.session);
                    // `media_hangup(Normal)` follows; the call is already gone then.
                    let _ = host.close_media(call.session);
                    host.reply(&request, 200, "OK")
                } else {
                    host.reply(&request, 481, "Call/Transaction Does Not Exist")
                }
            }
            // ACK for our 2xx: nothing to do. CANCEL: we answer INVITEs at once, so it always
            // comes too late; the caller sends BYE next.
            Method::Ack | Method::Cancel => Ok(()),
            _ => host.reply(&request, 405, "Method Not Allowed"),
        }
    }

    fn invite(&mut self, host: &Host, request: Request, call_id: String) -> Result<()> {
        let in_dialog = dialog::is_in_dialog(&request);
        let existing = self.by_call_id.get(&call_id).map(|c| c.session);
        if in_dialog && existing.is_none() {
            return host.reply(&request, 481, "Call/Transaction Does Not Exist");
        }
        if request.body().is_empty() {
            // Offer-less INVITE (offer in our 200, answer in the ACK): not supported.
            return host.reply(&request, 488, "Not Acceptable Here - SDP Offer Required");
        }
        let (session, answer) = match host.media_answer(existing, request.body()) {
            Ok(answered) => answered,
            Err(e) => return dialog::refuse_offer(host, &request, e),
        };
        let answer_text = String::from_utf8_lossy(&answer).into_owned();
        let streams = streams_of(&answer_text);
        let contact = format!("<{}>", dialog::strip_params(request.uri()));
        let response = request
            .response(200, "OK")
            .header("Contact", &contact)
            .header("Allow", "INVITE, ACK, BYE, CANCEL")
            .body("application/sdp", &answer)
            .build();
        host.respond(
            request.transaction().ok_or(Error::UnknownTransaction)?,
            &response,
        )?;

        if self.path == MediaPath::Forward {
            for (mid, _) in &streams {
                // Each stream back into itself: the host's fast path does the echo.
                host.forward_stream(session, mid, session, mid)?;
            }
        }
        match self.by_call_id.get_mut(&call_id) {
            Some(call) => {
                // A re-INVITE may add streams (video added) or refresh the caller's target.
                call.streams = streams;
                call.dialog.refresh_target(&request);
                huddle_sdk::debug!(host, "call {call_id} renegotiated");
            }
            None => {
                let call = Call {
                    session,
                    dialog: UasDialog::accept(&request),
                    streams,
                };
                huddle_sdk::info!(
                    host,
                    "call {call_id} from {} answered",
                    request.from_uri().unwrap_or("?")
                );
                self.by_session.insert(session, call_id.clone());
                self.by_call_id.insert(call_id, call);
            }
        }
        Ok(())
    }

    /// Responses to the BYEs we send: nothing to do either way.
    pub fn handle_response(&mut self, host: &Host, response: Response) -> Result<()> {
        if response.is_final() && response.status() >= 300 {
            huddle_sdk::debug!(host, "BYE answered {}", response.status());
        }
        Ok(())
    }

    /// ICE and DTLS are up.
    pub fn media_ready(&mut self, host: &Host, session: MediaSessionId) -> Result<()> {
        huddle_sdk::debug!(host, "media session {} connected", session.0);
        Ok(())
    }

    /// A packet of the caller's, straight back on the same stream (`media = "plugin"`).
    pub fn incoming_rtp(
        &mut self,
        host: &Host,
        session: MediaSessionId,
        mid: &str,
        packet: &[u8],
    ) -> Result<()> {
        match host.send_rtp(session, mid, packet) {
            // A full queue drops the packet, as a congested network would.
            Err(Error::Busy) => Ok(()),
            other => other,
        }
    }

    /// A key-frame request (PLI/FIR) for the video we send back: it comes from the caller's
    /// decoder, and only the caller's encoder can answer it. Receiver reports (the host's
    /// summary of what the caller got of a forwarded stream) need nothing from us.
    pub fn incoming_rtcp(
        &mut self,
        host: &Host,
        session: MediaSessionId,
        packet: &[u8],
    ) -> Result<()> {
        if !huddle_sdk::rtcp::asks_for_keyframe(packet) {
            return Ok(());
        }
        let Some(call) = self
            .by_session
            .get(&session)
            .and_then(|id| self.by_call_id.get(id))
        else {
            return Ok(());
        };
        for (mid, video) in &call.streams {
            if *video {
                host.request_keyframe(session, mid)?;
            }
        }
        Ok(())
    }

    /// The media session ended. If the call is still up, the transport failed (or the host is
    /// stopping): end the dialog with a BYE.
    pub fn media_hangup(
        &mut self,
        host: &Host,
        session: MediaSessionId,
        reason: HangupReason,
    ) -> Result<()> {
        let Some(call_id) = self.by_session.remove(&session) else {
            return Ok(());
        };
        let Some(mut call) = self.by_call_id.remove(&call_id) else {
            return Ok(());
        };
        huddle_sdk::info!(
            host,
            "call {call_id}: media ended ({reason:?}); sending BYE"
        );
        call.dialog.send_bye(host)
    }
}

/// The streams of an SDP: (mid, is video) per m-line that has a mid.
fn streams_of(sdp: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut video = false;
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            video = m.starts_with("video");
        } else if let Some(mid) = line.strip_prefix("a=mid:") {
            out.push((mid.to_owned(), video));
        }
    }
    out
}
