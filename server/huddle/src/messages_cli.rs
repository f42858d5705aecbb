//! `huddle messages list USER [--with PEER] [--since T]`: the messaging plugin's history, read
//! from the store (the server must be stopped: the store is opened exclusively).
//!
//! The plugin documents its keyspace (`plugins/messaging/src/lib.rs`): under
//! `plugin/<instance>/h/<unix ms, 16 hex>-<seq>` a record (format byte 1, JSON) holding a list
//! of entries `{seq, ts_ms, from, to, content_type, body: {"text": …} | {"hex": …}}`. Keys sort
//! by time, so `--since` starts the scan there.

use anyhow::{bail, Context as _};
use huddle::store::{scan_pages, Record, Store};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Entry {
    ts_ms: u64,
    from: String,
    to: String,
    #[serde(default)]
    content_type: String,
    body: Body,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Body {
    Text(String),
    Hex(String),
}

/// One printed line per message of `user`'s conversations (with `peer` only, if given) since
/// `since_ms`, in time order.
pub fn list(
    store: &dyn Store,
    instance: &str,
    user: &str,
    peer: Option<&str>,
    since_ms: u64,
) -> anyhow::Result<Vec<String>> {
    let prefix = format!("plugin/{instance}/h/");
    let mut lines = Vec::new();
    for page in scan_pages(store, prefix.as_bytes(), 1024) {
        let page = page.context("reading the message history")?;
        for (key, value) in page {
            // A batch key names its first entry's time; later entries of an earlier batch
            // may still be in range, so the key only filters whole batches written before it.
            let Ok(batch) = Record::decode::<Vec<Entry>>(&value) else {
                eprintln!(
                    "warning: unreadable history record {}",
                    String::from_utf8_lossy(&key)
                );
                continue;
            };
            for e in batch {
                let (from, to) = (user_of(&e.from), user_of(&e.to));
                let mine = from == user || to == user;
                let with = peer.is_none_or(|p| {
                    (from == user && to == user_of(p)) || (to == user && from == user_of(p))
                });
                if mine && with && e.ts_ms >= since_ms {
                    lines.push((e.ts_ms, line(&e)));
                }
            }
        }
    }
    lines.sort_by_key(|(t, _)| *t);
    Ok(lines.into_iter().map(|(_, l)| l).collect())
}

fn line(e: &Entry) -> String {
    let body = match &e.body {
        Body::Text(t) => t
            .replace('\\', "\\\\")
            .replace('\n', "\\n")
            .replace('\r', "\\r"),
        Body::Hex(h) => format!("<{} bytes, hex {h}>", h.len() / 2),
    };
    format!(
        "{}  {} -> {}  [{}]  {body}",
        rfc3339(e.ts_ms),
        e.from,
        e.to,
        e.content_type
    )
}

/// The user part of `sip:user@host` (or the text itself when it names a bare user).
fn user_of(uri: &str) -> &str {
    let s = uri.trim();
    let s = s
        .strip_prefix("sips:")
        .or_else(|| s.strip_prefix("sip:"))
        .unwrap_or(s);
    s.split(['@', ';']).next().unwrap_or(s)
}

/// `--since`: unix seconds, or RFC 3339 UTC (`2026-11-26T10:00:00Z`, fraction allowed).
pub fn parse_since(text: &str) -> anyhow::Result<u64> {
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(secs.saturating_mul(1000));
    }
    let t = text.trim();
    let bad = || format!("--since {t:?}: expected unix seconds or YYYY-MM-DDTHH:MM:SSZ");
    let t = t
        .strip_suffix('Z')
        .or_else(|| t.strip_suffix('z'))
        .with_context(bad)?;
    let (date, time) = t.split_once(['T', 't', ' ']).with_context(bad)?;
    let d: Vec<i64> = date.split('-').filter_map(|p| p.parse().ok()).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let h: Vec<i64> = hms.split(':').filter_map(|p| p.parse().ok()).collect();
    let ([y, mo, da], [hh, mi, ss]) = (d.as_slice(), h.as_slice()) else {
        bail!(bad());
    };
    if !(1..=12).contains(mo) || !(1..=31).contains(da) || *hh > 23 || *mi > 59 || *ss > 60 {
        bail!(bad());
    }
    let ms: i64 = format!("{frac:0<3}")
        .get(..3)
        .and_then(|f| f.parse().ok())
        .unwrap_or(0);
    let days = days_from_civil(*y, *mo, *da);
    let total = ((days * 86_400 + hh * 3600 + mi * 60 + ss) * 1000 + ms).max(0);
    Ok(total as u64)
}

/// Howard Hinnant's `days_from_civil`.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn rfc3339(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // civil_from_days
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_parses_both_forms_and_round_trips() {
        assert_eq!(parse_since("1795688400").unwrap(), 1_795_688_400_000);
        assert_eq!(
            parse_since("2026-11-26T10:20:00Z").unwrap(),
            1_795_688_400_000
        );
        assert_eq!(
            parse_since("2026-11-26T10:20:00.5Z").unwrap(),
            1_795_688_400_500
        );
        assert_eq!(rfc3339(1_795_688_400_500), "2026-11-26T10:20:00.500Z");
        assert!(parse_since("yesterday").is_err());
        assert!(parse_since("2026-13-01T00:00:00Z").is_err());
    }

    #[test]
    fn users_of_uris() {
        assert_eq!(user_of("sip:bob@example.test"), "bob");
        assert_eq!(user_of("bob"), "bob");
        assert_eq!(user_of("sips:carol@x;transport=tls"), "carol");
    }
}
