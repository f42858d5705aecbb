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
use std::sync::atomic::{AtomicU64, Ordering};

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
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            transactions: (0..METHODS.len() * STATUSES)
                .map(|_| AtomicU64::new(0))
                .collect(),
            drain_refused: AtomicU64::new(0),
        }
    }
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
        Ok(())
    }
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
}
