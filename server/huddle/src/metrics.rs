//! Prometheus metrics: the counters the SIP core and the plugin host bump, and the text
//! exposition served at `/metrics` by the admin API.
//!
//! Hand-rolled on atomics rather than the `prometheus-client` crate: its labelled families
//! take a read lock and hash the label set on every increment, and the SIP thread must not
//! pay for a lock. The label values we use are few and known (SIP methods, status codes
//! 100–699), so a fixed table of atomics holds every series: bounded memory, one relaxed
//! `fetch_add` per increment, no allocation. Gauges that other parts already track
//! (registrations, plugin queues, media legs) are read at scrape time instead of being
//! maintained on the hot path.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use huddle_sip::Method;

/// The methods with a series of their own; anything else is `OTHER`.
const METHODS: [&str; 15] = [
    "ACK",
    "BYE",
    "CANCEL",
    "INFO",
    "INVITE",
    "MESSAGE",
    "NOTIFY",
    "OPTIONS",
    "PRACK",
    "PUBLISH",
    "REFER",
    "REGISTER",
    "SUBSCRIBE",
    "UPDATE",
    "OTHER",
];

/// Final statuses 200–699, one slot each.
const STATUSES: usize = 500;

fn method_index(method: Option<&Method>) -> usize {
    match method {
        Some(Method::Ack) => 0,
        Some(Method::Bye) => 1,
        Some(Method::Cancel) => 2,
        Some(Method::Info) => 3,
        Some(Method::Invite) => 4,
        Some(Method::Message) => 5,
        Some(Method::Notify) => 6,
        Some(Method::Options) => 7,
        Some(Method::Prack) => 8,
        Some(Method::Publish) => 9,
        Some(Method::Refer) => 10,
        Some(Method::Register) => 11,
        Some(Method::Subscribe) => 12,
        Some(Method::Update) => 13,
        _ => 14,
    }
}

/// The process's counters. Cheap to bump from any thread.
#[derive(Debug)]
pub struct Metrics {
    /// `[method][status - 200]`: server transactions answered with a final response.
    transactions: Box<[AtomicU64]>,
    /// New requests refused because the server is draining.
    drain_refused: AtomicU64,
    /// The transaction layer's own counters (it lives on the SIP thread; copied after each
    /// input).
    sip_retransmitted: AtomicU64,
    sip_absorbed: AtomicU64,
    /// Webhook events by outcome: delivered, dropped, expired.
    webhook_outcomes: [AtomicU64; 3],
    /// Webhook attempts that failed (and were retried or gave up).
    webhook_failures: AtomicU64,
    /// Stream connections open, by transport (the transports bump it).
    pub connections: ConnectionGauges,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            transactions: (0..METHODS.len() * STATUSES)
                .map(|_| AtomicU64::new(0))
                .collect(),
            drain_refused: AtomicU64::new(0),
            sip_retransmitted: AtomicU64::new(0),
            sip_absorbed: AtomicU64::new(0),
            webhook_outcomes: Default::default(),
            webhook_failures: AtomicU64::new(0),
            connections: ConnectionGauges::default(),
        }
    }
}

/// Open stream connections per transport, shared with the transports (they hold a clone in
/// their config and bump it where a flow is registered and removed).
#[derive(Debug, Clone, Default)]
pub struct ConnectionGauges(Arc<[AtomicI64; 5]>);

impl PartialEq for ConnectionGauges {
    /// Gauges are run-time state, not configuration: any two compare equal.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl ConnectionGauges {
    /// A connection over transport `index` (`Transport::ALL` order) opened (+1) or closed (-1).
    pub fn add(&self, index: usize, delta: i64) {
        if let Some(g) = self.0.get(index) {
            g.fetch_add(delta, Ordering::Relaxed);
        }
    }

    /// Open connections over transport `index`.
    pub fn get(&self, index: usize) -> i64 {
        self.0.get(index).map_or(0, |g| g.load(Ordering::Relaxed))
    }
}

/// Media engine totals, read at scrape time.
#[derive(Debug, Default, Clone, Copy)]
pub struct MediaTotals {
    /// UDP datagrams received / sent on the media socket (STUN, DTLS, SRTP, SRTCP).
    pub packets_in: u64,
    /// Datagrams sent.
    pub packets_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// NACKs sent to peers (asking for lost packets) / received from peers.
    pub nacks_sent: u64,
    /// NACKs received.
    pub nacks_received: u64,
    /// PLIs sent to peers (asking for a key frame) / received from peers.
    pub plis_sent: u64,
    /// PLIs received.
    pub plis_received: u64,
    /// UDP segmentation offload: sends that carried several datagrams (one `UDP_SEGMENT` send).
    pub gso_sends: u64,
    /// Datagrams those sends carried.
    pub gso_datagrams: u64,
    /// Groups the kernel refused as one send, sent again one datagram at a time.
    pub gso_fallbacks: u64,
}

/// The conference plugin's rooms, read at scrape time from its documented keyspace.
#[derive(Debug, Default, Clone)]
pub struct RoomTotals {
    /// Participants per live room.
    pub rooms: Vec<(String, u64)>,
    /// CPU seconds each live room's media has used (pipelines and mixer).
    pub mixer_cpu_seconds: Vec<(String, f64)>,
}

/// Values read at scrape time from the parts that own them.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Live bindings (registered contacts).
    pub registrations: u64,
    /// Addresses-of-record with at least one live binding.
    pub registered_users: u64,
    /// Per plugin instance: (name, queued requests, panics caught, disabled).
    pub plugins: Vec<(String, u64, u64, bool)>,
    /// Media legs alive, when the media engine runs.
    pub media_legs: Option<u64>,
    /// 1 while draining.
    pub draining: bool,
    /// Media engine totals, when the engine runs.
    pub media: Option<MediaTotals>,
    /// Rooms, when a conference plugin is loaded.
    pub rooms: Option<RoomTotals>,
    /// Transport names in `Transport::ALL` order (the gauges' labels).
    pub transports: Vec<&'static str>,
}

impl Metrics {
    /// A server transaction for a request of `method` got the final `status`.
    pub fn final_response(&self, method: Option<&Method>, status: u16) {
        let Some(slot) = usize::from(status).checked_sub(200) else {
            return;
        };
        if slot >= STATUSES {
            return;
        }
        if let Some(c) = self
            .transactions
            .get(method_index(method) * STATUSES + slot)
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A new request was refused because the server drains.
    pub fn drain_refused(&self) {
        self.drain_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// The transaction layer's counters after its latest input.
    pub fn transaction_layer(&self, stats: huddle_sip::transaction::LayerStats) {
        self.sip_retransmitted
            .store(stats.retransmitted, Ordering::Relaxed);
        self.sip_absorbed.store(stats.absorbed, Ordering::Relaxed);
    }

    /// What became of one webhook event at one URL.
    pub fn webhook_outcome(&self, outcome: crate::webhooks::WebhookOutcome) {
        use crate::webhooks::WebhookOutcome as O;
        let i = match outcome {
            O::Delivered => 0,
            O::Dropped => 1,
            O::Expired => 2,
        };
        self.webhook_outcomes[i].fetch_add(1, Ordering::Relaxed);
    }

    /// A webhook attempt failed.
    pub fn webhook_retry(&self) {
        self.webhook_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition (format 0.0.4) of every metric.
    pub fn render(&self, snap: &Snapshot) -> String {
        let mut out = String::with_capacity(4096);
        // `write!` to a String cannot fail.
        let _ = self.write(&mut out, snap);
        out
    }

    fn write(&self, out: &mut String, snap: &Snapshot) -> std::fmt::Result {
        writeln!(out, "# HELP huddle_sip_transactions_total SIP server transactions by request method and final status sent.")?;
        writeln!(out, "# TYPE huddle_sip_transactions_total counter")?;
        for (m, name) in METHODS.iter().enumerate() {
            for s in 0..STATUSES {
                let v = self.transactions[m * STATUSES + s].load(Ordering::Relaxed);
                if v > 0 {
                    writeln!(
                        out,
                        "huddle_sip_transactions_total{{method=\"{name}\",status=\"{}\"}} {v}",
                        s + 200
                    )?;
                }
            }
        }
        writeln!(
            out,
            "# HELP huddle_drain_refused_requests_total New requests answered 503 while draining."
        )?;
        writeln!(out, "# TYPE huddle_drain_refused_requests_total counter")?;
        writeln!(
            out,
            "huddle_drain_refused_requests_total {}",
            self.drain_refused.load(Ordering::Relaxed)
        )?;
        writeln!(
            out,
            "# HELP huddle_registrations Registered contacts (bindings) alive."
        )?;
        writeln!(out, "# TYPE huddle_registrations gauge")?;
        writeln!(out, "huddle_registrations {}", snap.registrations)?;
        writeln!(
            out,
            "# HELP huddle_registered_users Addresses-of-record with a live binding."
        )?;
        writeln!(out, "# TYPE huddle_registered_users gauge")?;
        writeln!(out, "huddle_registered_users {}", snap.registered_users)?;
        writeln!(out, "# HELP huddle_draining 1 while the server drains.")?;
        writeln!(out, "# TYPE huddle_draining gauge")?;
        writeln!(out, "huddle_draining {}", u8::from(snap.draining))?;
        writeln!(
            out,
            "# HELP huddle_plugin_queue_depth Requests waiting in a plugin instance's mailbox."
        )?;
        writeln!(out, "# TYPE huddle_plugin_queue_depth gauge")?;
        for (name, depth, _, _) in &snap.plugins {
            writeln!(
                out,
                "huddle_plugin_queue_depth{{plugin=\"{}\"}} {depth}",
                escape(name)
            )?;
        }
        writeln!(
            out,
            "# HELP huddle_plugin_panics_total Panics caught at a plugin instance's boundary."
        )?;
        writeln!(out, "# TYPE huddle_plugin_panics_total counter")?;
        for (name, _, panics, _) in &snap.plugins {
            writeln!(
                out,
                "huddle_plugin_panics_total{{plugin=\"{}\"}} {panics}",
                escape(name)
            )?;
        }
        writeln!(
            out,
            "# HELP huddle_plugin_disabled 1 when a plugin instance was disabled after a panic."
        )?;
        writeln!(out, "# TYPE huddle_plugin_disabled gauge")?;
        for (name, _, _, disabled) in &snap.plugins {
            writeln!(
                out,
                "huddle_plugin_disabled{{plugin=\"{}\"}} {}",
                escape(name),
                u8::from(*disabled)
            )?;
        }
        if let Some(legs) = snap.media_legs {
            writeln!(out, "# HELP huddle_media_legs WebRTC media legs alive.")?;
            writeln!(out, "# TYPE huddle_media_legs gauge")?;
            writeln!(out, "huddle_media_legs {legs}")?;
        }
        self.write_more(out, snap)
    }

    /// The metrics added with issue 9 (kept apart so that hunks stay additive).
    fn write_more(&self, out: &mut String, snap: &Snapshot) -> std::fmt::Result {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        family(
            out,
            "huddle_sip_retransmissions_total",
            "counter",
            "SIP messages re-sent by the transaction layer because a timer fired (A, E, G: UDP).",
        )?;
        writeln!(
            out,
            "huddle_sip_retransmissions_total {}",
            load(&self.sip_retransmitted)
        )?;
        family(
            out,
            "huddle_sip_absorbed_retransmissions_total",
            "counter",
            "Retransmitted requests received and absorbed by a live server transaction.",
        )?;
        writeln!(
            out,
            "huddle_sip_absorbed_retransmissions_total {}",
            load(&self.sip_absorbed)
        )?;
        family(
            out,
            "huddle_connections",
            "gauge",
            "Stream connections open (TCP, TLS, WebSocket), by transport.",
        )?;
        for (i, name) in snap.transports.iter().enumerate() {
            if *name != "udp" {
                writeln!(
                    out,
                    "huddle_connections{{transport=\"{name}\"}} {}",
                    self.connections.get(i)
                )?;
            }
        }
        family(out, "huddle_webhook_events_total", "counter",
            "Webhook events per URL by outcome: delivered (2xx), dropped (queue full), expired (retry budget spent).")?;
        for (i, outcome) in ["delivered", "dropped", "expired"].iter().enumerate() {
            writeln!(
                out,
                "huddle_webhook_events_total{{outcome=\"{outcome}\"}} {}",
                load(&self.webhook_outcomes[i])
            )?;
        }
        family(
            out,
            "huddle_webhook_failed_attempts_total",
            "counter",
            "Webhook POSTs that failed (no connection, timeout, non-2xx).",
        )?;
        writeln!(
            out,
            "huddle_webhook_failed_attempts_total {}",
            load(&self.webhook_failures)
        )?;
        if let Some(m) = snap.media {
            family(
                out,
                "huddle_media_packets_total",
                "counter",
                "UDP datagrams on the media socket (STUN, DTLS, SRTP, SRTCP), by direction.",
            )?;
            writeln!(
                out,
                "huddle_media_packets_total{{direction=\"in\"}} {}",
                m.packets_in
            )?;
            writeln!(
                out,
                "huddle_media_packets_total{{direction=\"out\"}} {}",
                m.packets_out
            )?;
            family(
                out,
                "huddle_media_bytes_total",
                "counter",
                "Bytes of UDP payload on the media socket, by direction.",
            )?;
            writeln!(
                out,
                "huddle_media_bytes_total{{direction=\"in\"}} {}",
                m.bytes_in
            )?;
            writeln!(
                out,
                "huddle_media_bytes_total{{direction=\"out\"}} {}",
                m.bytes_out
            )?;
            family(
                out,
                "huddle_media_nacks_total",
                "counter",
                "RTCP NACKs (lost-packet requests): sent to peers, received from peers.",
            )?;
            writeln!(
                out,
                "huddle_media_nacks_total{{direction=\"sent\"}} {}",
                m.nacks_sent
            )?;
            writeln!(
                out,
                "huddle_media_nacks_total{{direction=\"received\"}} {}",
                m.nacks_received
            )?;
            family(
                out,
                "huddle_media_plis_total",
                "counter",
                "RTCP PLIs (key-frame requests): sent to peers, received from peers.",
            )?;
            writeln!(
                out,
                "huddle_media_plis_total{{direction=\"sent\"}} {}",
                m.plis_sent
            )?;
            writeln!(
                out,
                "huddle_media_plis_total{{direction=\"received\"}} {}",
                m.plis_received
            )?;
            family(
                out,
                "huddle_media_gso_sends_total",
                "counter",
                "Media sends that carried several datagrams as one (UDP segmentation offload).",
            )?;
            writeln!(out, "huddle_media_gso_sends_total {}", m.gso_sends)?;
            family(
                out,
                "huddle_media_gso_datagrams_total",
                "counter",
                "Datagrams sent within those offloaded sends (also in huddle_media_packets_total).",
            )?;
            writeln!(out, "huddle_media_gso_datagrams_total {}", m.gso_datagrams)?;
            family(
                out,
                "huddle_media_gso_fallbacks_total",
                "counter",
                "Offloaded sends the kernel refused, sent again one datagram at a time.",
            )?;
            writeln!(out, "huddle_media_gso_fallbacks_total {}", m.gso_fallbacks)?;
        }
        if let Some(rooms) = &snap.rooms {
            family(
                out,
                "huddle_rooms",
                "gauge",
                "Conference rooms with participants.",
            )?;
            writeln!(out, "huddle_rooms {}", rooms.rooms.len())?;
            family(
                out,
                "huddle_room_participants",
                "gauge",
                "Participants per conference room.",
            )?;
            for (room, n) in &rooms.rooms {
                writeln!(
                    out,
                    "huddle_room_participants{{room=\"{}\"}} {n}",
                    escape(room)
                )?;
            }
            family(
                out,
                "huddle_participants",
                "gauge",
                "Participants in every conference room.",
            )?;
            writeln!(
                out,
                "huddle_participants {}",
                rooms.rooms.iter().map(|(_, n)| n).sum::<u64>()
            )?;
            family(
                out,
                "huddle_room_mixer_cpu_seconds_total",
                "counter",
                "CPU time of a room's media pipelines and mixer thread (codec-internal worker threads not included); resets when the room ends.",
            )?;
            for (room, secs) in &rooms.mixer_cpu_seconds {
                writeln!(
                    out,
                    "huddle_room_mixer_cpu_seconds_total{{room=\"{}\"}} {secs}",
                    escape(room)
                )?;
            }
        }
        Ok(())
    }
}

/// The `# HELP` and `# TYPE` lines of a family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) -> std::fmt::Result {
    writeln!(out, "# HELP {name} {help}")?;
    writeln!(out, "# TYPE {name} {kind}")
}

/// Escapes a label value (Prometheus text format: backslash, quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_method_and_status() {
        let m = Metrics::default();
        m.final_response(Some(&Method::Register), 200);
        m.final_response(Some(&Method::Register), 200);
        m.final_response(None, 699);
        m.final_response(None, 100);
        m.final_response(None, 700);
        let text = m.render(&Snapshot::default());
        assert!(
            text.contains("huddle_sip_transactions_total{method=\"REGISTER\",status=\"200\"} 2\n")
        );
        assert!(text.contains("huddle_sip_transactions_total{method=\"OTHER\",status=\"699\"} 1\n"));
        assert!(!text.contains("status=\"100\""));
    }

    #[test]
    fn media_totals_include_the_segmentation_offload_counters() {
        let m = Metrics::default();
        assert!(!m.render(&Snapshot::default()).contains("huddle_media_gso"));
        let snap = Snapshot {
            media: Some(MediaTotals {
                gso_sends: 3,
                gso_datagrams: 17,
                gso_fallbacks: 1,
                ..MediaTotals::default()
            }),
            ..Snapshot::default()
        };
        let text = m.render(&snap);
        assert!(text.contains("\nhuddle_media_gso_sends_total 3\n"));
        assert!(text.contains("\nhuddle_media_gso_datagrams_total 17\n"));
        assert!(text.contains("\nhuddle_media_gso_fallbacks_total 1\n"));
        assert!(text.contains("# TYPE huddle_media_gso_fallbacks_total counter\n"));
    }
}
