//! The plugin host: loading the libraries listed in `[[plugins]]`, starting one instance per
//! entry, and everything that runs on the plugins' side of the boundary. The core's side
//! (routing requests to plugins, answering for them, sending their requests) is
//! `core::plugins`.
//!
//! It owns:
//!
//! * **Loading** ([`load`]): each entry's library is opened with the SDK's loader, which
//!   checks it completely before anything runs (the only `unsafe` call in the server) and
//!   never unloads it. A library that does not fit stops start-up with an error naming the
//!   `[[plugins]]` entry, the file and the mismatch.
//! * **Starting** ([`start`]): the instance gets its host table ([`services::Services`]) and
//!   its `init` runs with the entry's `config` table as TOML text. Its claims are what `init`
//!   declared, or the entry's `claims` list when there is one. Claims of different instances
//!   that could match one request stop start-up, naming both.
//! * **Running** ([`worker`]): each instance has its own OS thread fed by a bounded
//!   [`mailbox::Mailbox`]. The core pushes without waiting (a full queue: 503 with
//!   Retry-After), so a slow or stuck plugin never stalls the SIP core.
//! * **The host table** ([`services`]): `respond` and `send_request` go to the core through a
//!   bounded command channel that its select loop drains ([`HostCommand`]); the store is
//!   called directly through scoped views (`plugin/<name>/` read-write, `location/` and other
//!   plugins' namespaces read-only); timers and watches are tokio tasks feeding the mailbox;
//!   logs go to `tracing` tagged `plugin = <name>`.
//! * **Listing** ([`list`]): `huddle plugins list` loads each library and runs a dry `init`
//!   against a host that accepts and discards every call ([`dry`]), to show what each entry
//!   would claim without starting a server.
//!
//! Instance names: an entry's `name`, or the plugin's own name. The name tags the logs and
//! names the store namespace `plugin/<name>/`, so one library listed twice under two names
//! gets two independent instances.

mod dry;
mod load;
pub(crate) mod mailbox;
mod outbox;
pub(crate) mod services;
mod worker;

use std::path::PathBuf;
use std::sync::{Arc, LazyLock};

use huddle_sdk::hosting::{PluginInfo, PluginInstance, StartError};
use huddle_sdk::loader::LoadError;
use huddle_sdk::{Claim, Error, Level, Message, RequestId};
use huddle_sip::message::HeaderName;
use tokio::sync::mpsc;

use crate::config::{Config, OnPanic, PluginConfig};
use crate::store::{Namespace, Store, StoreError};
use services::{host_capabilities, PluginShared, Services};

/// Commands from plugin instances to the core, buffered at most this many.
const COMMAND_QUEUE: usize = 65_536;

/// What a plugin instance asks of the core. Sent with `try_send` from host functions (a full
/// channel is [`Error::Busy`] for the plugin) or from the instance's thread.
#[derive(Debug)]
pub(crate) enum HostCommand {
    /// Send a response on a transaction handed to the plugin (checked: open, same call).
    Respond {
        plugin: usize,
        txn: u64,
        response: Message,
    },
    /// (ABI 1.12) Answer a transaction handed to the plugin (checked: open; the parts by the
    /// SDK) finally, written from the request the core holds.
    Answer {
        plugin: usize,
        txn: u64,
        answer: StatusAnswer,
    },
    /// The callback for `txn` failed without a final response: answer it for the plugin.
    Fail {
        plugin: usize,
        txn: u64,
        error: Error,
    },
    /// The instance is disabled and `txn` was still queued: answer it 503.
    Disabled { plugin: usize, txn: u64 },
    /// (ABI 1.4) The plugin gave up `txn` (checked: open, out of dialog, `uri` a SIP URI):
    /// route its request again as if its Request-URI were `uri`.
    Retarget {
        plugin: usize,
        txn: u64,
        uri: String,
    },
    /// Route and send a request the plugin built (checked: a request without Via).
    Send {
        plugin: usize,
        id: RequestId,
        request: Message,
        /// The control fields, when they were taken out of the request before it was written
        /// (a request given in parts); `None`: they are among the request's header fields,
        /// to be read there and dropped before sending (a request given as bytes).
        control: Option<SendControl>,
    },
}

/// (ABI 1.12) A final response a plugin gave by status (`respond_status`): what the core adds
/// to the request it holds to write it. The SDK checked the parts (final status, no line
/// breaks, no field the core writes).
#[derive(Debug)]
pub(crate) struct StatusAnswer {
    status: u16,
    reason: Box<str>,
    /// Extra header fields (name, value), usually none.
    fields: Vec<(Box<str>, Box<str>)>,
}

impl StatusAnswer {
    pub(crate) fn new(status: u16, reason: &str, fields: &[(&str, &str)]) -> Self {
        // The core writes these as they are: only text the SDK's checks passed may get here.
        debug_assert!(huddle_sdk::hosting::check_status_response(
            u32::from(status),
            reason,
            fields
        )
        .is_ok());
        StatusAnswer {
            status,
            reason: reason.into(),
            fields: fields
                .iter()
                .map(|(name, value)| ((*name).into(), (*value).into()))
                .collect(),
        }
    }

    /// Calls `f` with the status, the reason and the fields as the core's answer takes them.
    pub(crate) fn with_parts<R>(&self, f: impl FnOnce(u16, &str, &[(&str, &str)]) -> R) -> R {
        // On the stack for the few fields a plugin adds (the 202 has none); more on the heap.
        let mut small = [("", ""); 4];
        let mut large = Vec::new();
        let fields: &mut [(&str, &str)] = if self.fields.len() <= small.len() {
            &mut small[..self.fields.len()]
        } else {
            large.resize(self.fields.len(), ("", ""));
            &mut large
        };
        for (field, (name, value)) in fields.iter_mut().zip(&self.fields) {
            *field = (name, value);
        }
        f(self.status, &self.reason, fields)
    }
}

/// The header by which a plugin pins a request it sends to one binding (`core::plugins`
/// module docs); never forwarded.
pub const BINDING_HEADER: &str = "Huddle-Binding";
/// The header by which a plugin asks to hear only failures of a request it sends (module docs,
/// value [`REPORT_FAILURES`]); never forwarded.
pub const REPORT_HEADER: &str = "Huddle-Report";
/// [`REPORT_HEADER`]'s value: no response for a 2xx, the final response for a failure.
pub const REPORT_FAILURES: &str = "failures";
/// The header by which a plugin has the host answer one of its transactions `200 OK` when the
/// request it sends succeeds (module docs; ABI 1.6); never forwarded.
pub const ANSWER_HEADER: &str = huddle_sdk::abi::HUDDLE_ANSWER_HEADER;

/// What a plugin's control fields ([`BINDING_HEADER`], [`REPORT_HEADER`], [`ANSWER_HEADER`])
/// ask of the host for a request it sends. The first field of each name counts, read as a
/// parser reads a value (white space around it left out).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SendControl {
    /// The `location/` key of the one binding the request goes to.
    pub(crate) binding: Option<String>,
    /// `Huddle-Report: failures`: a 2xx is not delivered.
    pub(crate) failures_only: bool,
    /// The plugin's transaction the host answers `200 OK` on a 2xx.
    pub(crate) answer: Option<u64>,
    /// Which names were seen (bits: binding, report, answer), for "the first counts" and for
    /// whether the request carries fields to drop.
    seen: u8,
}

// `SendControl::take`'s length test: the shortest and the longest control name.
const _: () = assert!(
    REPORT_HEADER.len() == ANSWER_HEADER.len() && REPORT_HEADER.len() < BINDING_HEADER.len()
);

impl SendControl {
    const BINDING: u8 = 1;
    const REPORT: u8 = 2;
    const ANSWER: u8 = 4;

    /// Takes field `name: value` when it is a control field (true), recording it unless one of
    /// its name came before; false for any other field.
    #[inline]
    pub(crate) fn take(&mut self, name: &str, value: &str) -> bool {
        // Asked about every field of every request sent in parts: the lengths of the three
        // names (13 and 14) and their first letter tell almost every other field apart here.
        let n = name.as_bytes();
        if !(REPORT_HEADER.len()..=BINDING_HEADER.len()).contains(&n.len())
            || !n[0].eq_ignore_ascii_case(&b'h')
        {
            return false;
        }
        self.take_named(name, value)
    }

    fn take_named(&mut self, name: &str, value: &str) -> bool {
        let bit = if name.eq_ignore_ascii_case(BINDING_HEADER) {
            Self::BINDING
        } else if name.eq_ignore_ascii_case(REPORT_HEADER) {
            Self::REPORT
        } else if name.eq_ignore_ascii_case(ANSWER_HEADER) {
            Self::ANSWER
        } else {
            return false;
        };
        if self.seen & bit == 0 {
            self.seen |= bit;
            self.set(bit, value.trim_matches([' ', '\t']));
        }
        true
    }

    fn set(&mut self, bit: u8, value: &str) {
        match bit {
            Self::BINDING => self.binding = Some(value.to_owned()),
            Self::REPORT => self.failures_only = value.trim().eq_ignore_ascii_case(REPORT_FAILURES),
            _ => self.answer = value.trim().parse::<u64>().ok(),
        }
    }

    /// The control fields of a request given as bytes, read from its header fields.
    pub(crate) fn of(request: &Message) -> SendControl {
        let mut control = SendControl::default();
        for (bit, name) in CONTROL_NAMES.iter() {
            if let Some(value) = request.header(name) {
                control.seen |= bit;
                control.set(*bit, value);
            }
        }
        control
    }

    /// Whether any control field was given.
    pub(crate) fn any(&self) -> bool {
        self.seen != 0
    }

    /// The names of the control fields given, to drop from a request that carries them.
    pub(crate) fn names(&self) -> impl Iterator<Item = &'static HeaderName> + '_ {
        CONTROL_NAMES
            .iter()
            .filter(|(bit, _)| self.seen & bit != 0)
            .map(|(_, name)| name)
    }
}

/// The control fields' names, resolved once (each lookup used to resolve and allocate them).
static CONTROL_NAMES: LazyLock<[(u8, HeaderName); 3]> = LazyLock::new(|| {
    [
        (SendControl::BINDING, HeaderName::parse(BINDING_HEADER)),
        (SendControl::REPORT, HeaderName::parse(REPORT_HEADER)),
        (SendControl::ANSWER, HeaderName::parse(ANSWER_HEADER)),
    ]
});

/// One started instance, as the core routes to it.
#[derive(Debug)]
pub(crate) struct PluginHandle {
    pub(crate) shared: Arc<PluginShared>,
    pub(crate) info: PluginInfo,
    pub(crate) claims: Vec<Claim>,
}

impl PluginHandle {
    pub(crate) fn name(&self) -> &str {
        &self.shared.name
    }

    /// Whether the plugin asked for registration events.
    pub(crate) fn wants_registrations(&self) -> bool {
        self.info
            .capabilities
            .contains(huddle_sdk::Capabilities::REGISTRATION_EVENTS)
    }
}

/// The core's end of the plugin host: the instances and the command channel.
#[derive(Debug)]
pub struct CorePlugins {
    pub(crate) handles: Vec<PluginHandle>,
    pub(crate) commands: mpsc::Receiver<HostCommand>,
    /// Kept so that `commands` never reports "closed" while the core runs.
    pub(crate) _commands_tx: mpsc::Sender<HostCommand>,
}

impl CorePlugins {
    /// No plugins.
    pub fn none() -> CorePlugins {
        let (tx, rx) = mpsc::channel(1);
        CorePlugins {
            handles: Vec::new(),
            commands: rx,
            _commands_tx: tx,
        }
    }

    /// How many instances run.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// True when none run.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }
}

/// How long a graceful stop lets plugins work through what was queued for them (answers to
/// their requests, events) before the rest is dropped.
pub const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The instances' threads, stopped at shutdown after the core.
#[derive(Debug, Default)]
pub struct Workers {
    threads: Vec<(Arc<PluginShared>, std::thread::JoinHandle<()>)>,
}

impl Workers {
    /// Each instance's shared state (the admin API reads its counters).
    pub(crate) fn shared(&self) -> Vec<Arc<PluginShared>> {
        self.threads.iter().map(|(s, _)| s.clone()).collect()
    }

    /// Closes every mailbox to new work, stops timers and watches, lets each thread handle
    /// what was queued (for up to [`STOP_GRACE`]) and waits for it to destroy its instance.
    /// Blocks: call it from a blocking context.
    pub fn stop(self) {
        let deadline = std::time::Instant::now() + STOP_GRACE;
        for (shared, _) in &self.threads {
            shared.shut_after_queued(deadline);
        }
        for (shared, thread) in self.threads {
            if thread.join().is_err() {
                tracing::error!(plugin = %shared.name, "plugin thread ended abnormally");
            }
        }
    }
}

/// Why the plugins could not be started. Every variant names the `[[plugins]]` entry (counted
/// from 1, in file order) or the instance, and the file where there is one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// The library was refused by the loader (the error names the file and the mismatch).
    #[error("[[plugins]] entry {}: {source}", index + 1)]
    Load {
        index: usize,
        #[source]
        source: LoadError,
    },
    /// Two entries would be the same instance name (and share a store namespace).
    #[error(
        "[[plugins]] entry {} ({}): the instance name `{name}` is already used by entry {}; \
         set `name` to tell them apart",
        index + 1,
        path.display(),
        other + 1
    )]
    DuplicateName {
        index: usize,
        other: usize,
        name: String,
        path: PathBuf,
    },
    /// The instance name cannot name a store namespace.
    #[error("[[plugins]] entry {} ({}): {source}", index + 1, path.display())]
    Name {
        index: usize,
        path: PathBuf,
        #[source]
        source: StoreError,
    },
    /// `init` failed, or the plugin needs what this host lacks.
    #[error("plugin `{name}` ({}): {source}", path.display())]
    Start {
        name: String,
        path: PathBuf,
        #[source]
        source: StartError,
    },
    /// Claims of two instances could both match one request.
    #[error(
        "plugins `{a}` and `{b}` claim overlapping requests (`{a}`: {}; `{b}`: {}); \
         narrow one of them, for example with `claims = [...]` in its [[plugins]] table",
        claims[0],
        claims[1]
    )]
    Conflict {
        a: String,
        b: String,
        /// `a`'s claim, then `b`'s.
        claims: Box<[Claim; 2]>,
    },
    /// The instance's thread could not be started.
    #[error("plugin `{name}`: cannot start its thread: {source}")]
    Thread {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// The instance name of entry `index`: its `name`, or the plugin's own.
fn instance_name(entry: &PluginConfig, info: &PluginInfo) -> String {
    entry.name.clone().unwrap_or_else(|| info.name.clone())
}

/// The TOML text `init` gets.
fn config_text(entry: &PluginConfig) -> String {
    toml::to_string(&entry.config).unwrap_or_default()
}

/// The entry's claims when it overrides the plugin's (validated by the config already).
fn configured_claims(entry: &PluginConfig) -> Option<Vec<Claim>> {
    entry
        .claims
        .as_ref()
        .map(|list| list.iter().filter_map(|c| c.to_claim().ok()).collect())
}

/// The first pair of overlapping claims of two different instances.
fn find_conflict<'a>(
    instances: impl IntoIterator<Item = (&'a str, &'a [Claim])>,
) -> Option<PluginError> {
    let instances: Vec<_> = instances.into_iter().collect();
    for (i, (a, a_claims)) in instances.iter().enumerate() {
        for (b, b_claims) in &instances[i + 1..] {
            for a_claim in a_claims.iter() {
                if let Some(b_claim) = b_claims.iter().find(|c| a_claim.overlaps(c)) {
                    return Some(PluginError::Conflict {
                        a: (*a).to_owned(),
                        b: (*b).to_owned(),
                        claims: Box::new([a_claim.clone(), b_claim.clone()]),
                    });
                }
            }
        }
    }
    None
}

/// An instance between `init` and its thread.
struct Started {
    shared: Arc<PluginShared>,
    instance: PluginInstance,
    info: PluginInfo,
    claims: Vec<Claim>,
    on_panic: OnPanic,
}

/// Loads and starts every `[[plugins]]` entry, checks their claims against each other, and
/// starts one thread per instance. Blocking (libraries are opened, `init` may use the store):
/// call it from a blocking context, with a handle of the runtime the server runs on (timers
/// and watches are tasks there). On error every instance already started is destroyed.
pub fn start(
    config: &Config,
    store: Arc<dyn Store>,
    runtime: tokio::runtime::Handle,
    media: Option<crate::media::MediaEngine>,
) -> Result<(CorePlugins, Workers), PluginError> {
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let mut started: Vec<Started> = Vec::with_capacity(config.plugins.len());
    let mut names: Vec<(String, usize)> = Vec::new();
    for (index, entry) in config.plugins.iter().enumerate() {
        let loaded = load::load_library(&entry.path, host_capabilities(media.is_some()))
            .map_err(|source| PluginError::Load { index, source })?;
        let info = loaded.info().clone();
        let name = instance_name(entry, &info);
        if let Some((_, other)) = names.iter().find(|(n, _)| *n == name) {
            return Err(PluginError::DuplicateName {
                index,
                other: *other,
                name,
                path: entry.path.clone(),
            });
        }
        names.push((name.clone(), index));
        let shared = Arc::new(PluginShared::new(name.clone(), entry.queue_len));
        shared.disable_on_panic.store(
            entry.on_panic == OnPanic::Disable,
            std::sync::atomic::Ordering::Relaxed,
        );
        let services = Services::new(
            index,
            shared.clone(),
            store.clone(),
            tx.clone(),
            runtime.clone(),
            config.limits.transport.max_message_size,
            media.clone(),
        )
        .map_err(|source| PluginError::Name {
            index,
            path: entry.path.clone(),
            source,
        })?
        .with_ops(config.ops.clone())
        .with_batch_limit(
            config.store.plugin_batch_max_ops,
            config.store.plugin_batch_max_bytes,
        );
        let instance =
            PluginInstance::start(loaded.entry(), Arc::new(services), &config_text(entry))
                .map_err(|source| {
                    shared.shut();
                    PluginError::Start {
                        name: name.clone(),
                        path: entry.path.clone(),
                        source,
                    }
                })?;
        let claims = configured_claims(entry).unwrap_or_else(|| instance.claims().to_vec());
        tracing::info!(
            plugin = %name,
            version = %info.version,
            path = %entry.path.display(),
            claims = %claims.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
            "plugin started"
        );
        started.push(Started {
            shared,
            instance,
            info,
            claims,
            on_panic: entry.on_panic,
        });
    }
    let conflict = find_conflict(
        started
            .iter()
            .map(|s| (s.shared.name.as_str(), s.claims.as_slice())),
    );
    if let Some(error) = conflict {
        for s in &started {
            s.shared.shut();
        }
        return Err(error);
    }
    let mut handles = Vec::with_capacity(started.len());
    let mut workers = Workers::default();
    let mut pending = started.into_iter();
    for (index, s) in pending.by_ref().enumerate() {
        let Started {
            shared,
            instance,
            info,
            claims,
            on_panic,
        } = s;
        let thread_shared = shared.clone();
        let commands = tx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("plugin-{}", shared.name))
            .spawn(move || worker::run(index, instance, thread_shared, commands, on_panic));
        match spawned {
            Ok(thread) => workers.threads.push((shared.clone(), thread)),
            Err(source) => {
                let name = shared.name.clone();
                shared.shut();
                for rest in pending {
                    rest.shared.shut();
                }
                workers.stop();
                return Err(PluginError::Thread { name, source });
            }
        }
        handles.push(PluginHandle {
            shared,
            info,
            claims,
        });
    }
    Ok((
        CorePlugins {
            handles,
            commands: rx,
            _commands_tx: tx,
        },
        workers,
    ))
}

/// What `huddle plugins list` shows of one entry.
#[derive(Debug)]
pub struct Listing {
    /// The configured library.
    pub path: PathBuf,
    /// What the plugin logged during the dry `init`.
    pub logs: Vec<(Level, String)>,
    /// The plugin, or why it cannot be loaded or started.
    pub outcome: Result<Listed, PluginError>,
}

/// A plugin that loaded and passed a dry `init`.
#[derive(Debug)]
pub struct Listed {
    /// The instance name.
    pub name: String,
    /// Name, version, ABI and required capabilities, from the descriptor.
    pub info: PluginInfo,
    /// The claims it would route by.
    pub claims: Vec<Claim>,
    /// True when the claims come from the entry's `claims` list rather than from `init`.
    pub claims_from_config: bool,
}

/// Loads every `[[plugins]]` entry and runs a dry `init` with its config against a host that
/// accepts and discards every call (no store, no network, no timers), then destroys it: what
/// each entry would claim, without a server. [`conflict`] checks the claims against each other.
pub fn list(config: &Config) -> Vec<Listing> {
    config
        .plugins
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let (logs, outcome) = dry::list_one(index, entry, config.media.enabled);
            Listing {
                path: entry.path.clone(),
                logs,
                outcome,
            }
        })
        .collect()
}

/// The first conflict between the claims of the listed instances that loaded.
pub fn conflict(listings: &[Listing]) -> Option<PluginError> {
    find_conflict(
        listings
            .iter()
            .filter_map(|l| l.outcome.as_ref().ok())
            .map(|l| (l.name.as_str(), l.claims.as_slice())),
    )
}

/// Checks that an instance name can name a namespace (used by the dry run too).
fn check_name(index: usize, path: &std::path::Path, name: &str) -> Result<(), PluginError> {
    Namespace::plugin(name)
        .map(drop)
        .map_err(|source| PluginError::Name {
            index,
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_name_both_instances_and_claims() {
        let echo = [Claim::method("MESSAGE").with_user("echo")];
        let kit = [Claim::method("OPTIONS"), Claim::user("ec*")];
        let room = [Claim::method("INVITE").with_user("room-*")];
        assert!(find_conflict([("echo", &echo[..]), ("room", &room[..])]).is_none());
        let err = find_conflict([("echo", &echo[..]), ("room", &room[..]), ("kit", &kit[..])])
            .expect("echo and kit overlap")
            .to_string();
        assert!(
            err.contains("`echo` and `kit`")
                && err.contains("method=MESSAGE user=echo")
                && err.contains("user=ec*"),
            "{err}"
        );
        // One instance's own claims may overlap each other.
        assert!(find_conflict([("kit", &kit[..])]).is_none());
    }
}
