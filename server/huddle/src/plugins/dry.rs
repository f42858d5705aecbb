//! The dry run behind `huddle plugins list`: a plugin's `init` runs with its configuration
//! against [`DryServices`], a host table that accepts every call and does nothing (reads find
//! nothing, writes and sends vanish, timers never fire), so listing touches no store, no
//! network and no clock. The instance is destroyed right after.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use huddle_sdk::hosting::{HostServices, PluginInstance};
use huddle_sdk::{
    Capabilities, Error, Level, RequestId, Result, ScanPage, TimerId, TransactionId, WatchId,
};

use super::services::{host_capabilities, lock};
use super::{check_name, config_text, configured_claims, instance_name, load, Listed, PluginError};
use crate::config::PluginConfig;

#[derive(Debug, Default)]
struct DryServices {
    logs: Mutex<Vec<(Level, String)>>,
    /// Whether the server would offer media (`[media] enabled`).
    media: bool,
    next_id: AtomicU64,
}

impl DryServices {
    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }
}

impl HostServices for DryServices {
    fn capabilities(&self) -> Capabilities {
        host_capabilities(self.media)
    }

    fn log(&self, level: Level, message: &str) {
        lock(&self.logs).push((level, message.to_owned()));
    }

    fn respond(&self, _txn: TransactionId, _response: &[u8]) -> Result<()> {
        Err(Error::UnknownTransaction)
    }

    fn respond_status(
        &self,
        _txn: TransactionId,
        _status: u16,
        _reason: &str,
        _headers: &[(&str, &str)],
    ) -> Result<()> {
        Err(Error::UnknownTransaction)
    }

    fn send_request(&self, _request: &[u8]) -> Result<RequestId> {
        Ok(RequestId(self.id()))
    }

    fn store_get(&self, _ns: &str, _key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    fn store_put(&self, _key: &[u8], _value: &[u8]) -> Result<()> {
        Ok(())
    }

    fn store_delete(&self, _key: &[u8]) -> Result<bool> {
        Ok(false)
    }

    fn store_compare_and_swap(
        &self,
        _key: &[u8],
        _expected: Option<&[u8]>,
        _new: Option<&[u8]>,
    ) -> Result<std::result::Result<(), Option<Vec<u8>>>> {
        Ok(Ok(()))
    }

    fn store_scan(
        &self,
        _ns: &str,
        _prefix: &[u8],
        _start_after: Option<&[u8]>,
        _limit: usize,
    ) -> Result<ScanPage> {
        Ok(ScanPage::default())
    }

    fn store_watch(&self, _ns: &str, _prefix: &[u8]) -> Result<WatchId> {
        Ok(WatchId(self.id()))
    }

    fn store_unwatch(&self, _watch: WatchId) -> Result<()> {
        Ok(())
    }

    fn set_timer(&self, _delay: Duration, _token: u64) -> Result<TimerId> {
        Ok(TimerId(self.id()))
    }

    fn cancel_timer(&self, _timer: TimerId) -> Result<()> {
        Ok(())
    }
}

/// Loads entry `index`, runs the dry `init`, and reports what it claimed, with what the plugin
/// logged meanwhile (why `init` failed, typically).
pub(super) fn list_one(
    index: usize,
    entry: &PluginConfig,
    media: bool,
) -> (
    Vec<(Level, String)>,
    std::result::Result<Listed, PluginError>,
) {
    let mut logs = Vec::new();
    let outcome = start_dry(index, entry, media, &mut logs);
    (logs, outcome)
}

fn start_dry(
    index: usize,
    entry: &PluginConfig,
    media: bool,
    logs: &mut Vec<(Level, String)>,
) -> std::result::Result<Listed, PluginError> {
    let loaded = load::load_library(&entry.path, host_capabilities(media))
        .map_err(|source| PluginError::Load { index, source })?;
    let info = loaded.info().clone();
    let name = instance_name(entry, &info);
    check_name(index, &entry.path, &name)?;
    let services = Arc::new(DryServices {
        media,
        ..DryServices::default()
    });
    let started = PluginInstance::start(loaded.entry(), services.clone(), &config_text(entry));
    *logs = std::mem::take(&mut *lock(&services.logs));
    let instance = started.map_err(|source| PluginError::Start {
        name: name.clone(),
        path: entry.path.clone(),
        source,
    })?;
    let configured = configured_claims(entry);
    let claims_from_config = configured.is_some();
    let claims = configured.unwrap_or_else(|| instance.claims().to_vec());
    drop(instance);
    Ok(Listed {
        name,
        info,
        claims,
        claims_from_config,
    })
}
