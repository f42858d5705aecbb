//! The thread of one plugin instance: it owns the [`PluginInstance`], takes jobs from the
//! instance's mailbox and calls the plugin with them one at a time, in order (the ABI's "one
//! call per instance at a time"). A slow plugin therefore only slows its own queue; the SIP
//! core never waits. It takes everything queued under one lock and sleeps again only once
//! that batch is done, so a busy instance costs no wake-up per job; what the plugin sends the
//! core from this thread during a batch is held until the batch is done ([`super::outbox`]),
//! so the core, too, is woken at most once per batch.
//!
//! When a request's callback fails (an error, or a panic the SDK caught) and the plugin has
//! not sent a final response, this thread asks the core to answer it: 503 with `Retry-After`
//! for [`Error::Busy`], 500 otherwise. With `on_panic = "disable"` a panic takes the instance
//! out of service: from then on the core answers its requests 503 and this thread only
//! drains the queue (answering the requests still in it) until shutdown.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use huddle_sdk::hosting::PluginInstance;
use huddle_sdk::{Error, MediaSessionId, TransactionId};
use tokio::sync::mpsc;

use super::mailbox::{Job, MediaJob};
use super::services::PluginShared;
use super::HostCommand;
use crate::config::OnPanic;

/// Runs until the mailbox is closed, then destroys the instance (dropping it calls the
/// plugin's `destroy`).
pub(crate) fn run(
    index: usize,
    mut instance: PluginInstance,
    shared: Arc<PluginShared>,
    commands: mpsc::Sender<HostCommand>,
    on_panic: OnPanic,
) {
    let name = shared.name.clone();
    let mut batch = VecDeque::new();
    // What the plugin sends from this thread goes to the core when the batch is done (or
    // before this thread waits for anything), so the core wakes once per batch.
    shared.outbox.hold_this_thread();
    while let Some(job) = shared.mailbox.next_batch(&mut batch) {
        if shared.is_disabled() {
            drain_disabled(index, &shared, &commands, job);
        } else {
            call(index, &mut instance, &shared, &commands, on_panic, job);
        }
        if batch.is_empty() {
            shared.outbox.release();
        }
    }
    // `destroy` may still send; nothing holds it any more.
    shared.outbox.stop_holding();
    // No RTP sink call (ABI 1.7) from the media thread once `destroy` starts: this waits for a
    // delivery in progress.
    shared.set_rtp_sink(None);
    drop(instance);
    tracing::debug!(plugin = %name, "plugin instance destroyed");
}

/// Calls the plugin with one job and logs a failed callback.
fn call(
    index: usize,
    instance: &mut PluginInstance,
    shared: &PluginShared,
    commands: &mpsc::Sender<HostCommand>,
    on_panic: OnPanic,
    job: Job,
) {
    let name = &shared.name;
    let (callback, result) = match job {
        Job::Request {
            txn, request, info, ..
        } => {
            let result = instance.handle_message(txn, &request, &info);
            if let (Err(error), Some(txn)) = (&result, txn) {
                answer_failure(index, shared, commands, txn, error.clone());
            }
            ("handle_request", result)
        }
        Job::Response {
            id,
            bytes,
            is_final,
        } => {
            if is_final {
                shared.in_flight.fetch_sub(1, Ordering::Relaxed);
            }
            ("handle_response", instance.handle_response(id, &bytes))
        }
        Job::Timer { id, token } => ("on_timer", instance.on_timer(id, token)),
        Job::StoreChange(change) => {
            let result = instance.on_store_change(&change);
            shared.watch_credit.add_permits(1);
            ("on_store_change", result)
        }
        Job::Registration(event) => ("on_registration", instance.on_registration(&event)),
        Job::Media { job, .. } => media(instance, job),
        Job::Admin { request, reply } => {
            let answer = instance.admin_request(&request);
            // "Takes no admin requests" is an answer, not a failure of the callback.
            let result = match &answer {
                Err(Error::NotSupported) => Ok(()),
                Err(e) => Err(e.clone()),
                Ok(_) => Ok(()),
            };
            // The API may have given up waiting; nothing to do then.
            let _ = reply.send(answer);
            ("admin_request", result)
        }
    };
    match result {
        Ok(()) => {}
        Err(Error::Panic) => {
            shared.panics.fetch_add(1, Ordering::Relaxed);
            tracing::error!(plugin = %name, callback, "the plugin panicked (caught at the boundary)");
            if on_panic == OnPanic::Disable {
                shared.disabled.store(true, Ordering::Relaxed);
                tracing::error!(
                    plugin = %name,
                    "plugin disabled after a panic (on_panic = \"disable\"); its requests are answered 503 until restart"
                );
            }
        }
        Err(error) => {
            tracing::warn!(plugin = %name, callback, %error, "plugin callback failed");
        }
    }
}

/// Delivers one media event; returns the callback's name for the log and its result.
fn media(instance: &mut PluginInstance, job: MediaJob) -> (&'static str, huddle_sdk::Result<()>) {
    match job {
        MediaJob::Ready { session } => {
            ("media_ready", instance.media_ready(MediaSessionId(session)))
        }
        MediaJob::Rtp {
            session,
            mid,
            packet,
        } => (
            "incoming_rtp",
            instance.incoming_rtp(MediaSessionId(session), &mid, &packet),
        ),
        MediaJob::Rtcp { session, packet } => (
            "incoming_rtcp",
            instance.incoming_rtcp(MediaSessionId(session), &packet),
        ),
        MediaJob::Hangup { session, reason } => (
            "media_hangup",
            instance.media_hangup(MediaSessionId(session), reason),
        ),
        MediaJob::Bitrate { session, bps } => (
            "media_bitrate",
            // Absent in plugins built before ABI 1.1: not an error.
            match instance.media_bitrate(MediaSessionId(session), bps) {
                Err(Error::NotSupported) => Ok(()),
                other => other,
            },
        ),
    }
}

/// Asks the core to answer `txn` for a failed callback, unless the plugin answered it finally.
fn answer_failure(
    index: usize,
    shared: &PluginShared,
    commands: &mpsc::Sender<HostCommand>,
    txn: TransactionId,
    error: Error,
) {
    if shared.close_txn(txn.0) {
        // After what the callback sent. This thread is not a runtime thread and may wait for
        // room; the core never waits for it.
        shared.outbox.release();
        let _ = commands.blocking_send(HostCommand::Fail {
            plugin: index,
            txn: txn.0,
            error,
        });
    }
}

/// A job for a disabled instance: requests are answered 503, everything else is dropped.
fn drain_disabled(
    index: usize,
    shared: &PluginShared,
    commands: &mpsc::Sender<HostCommand>,
    job: Job,
) {
    match job {
        Job::Request { txn: Some(txn), .. } => refuse_disabled(index, shared, commands, txn),
        Job::Response { is_final: true, .. } => {
            shared.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        Job::StoreChange(_) => shared.watch_credit.add_permits(1),
        Job::Admin { reply, .. } => {
            let _ = reply.send(Err(Error::Busy));
        }
        _ => {}
    }
}

/// Asks the core to answer `txn` 503 for a disabled instance, unless it was answered.
fn refuse_disabled(
    index: usize,
    shared: &PluginShared,
    commands: &mpsc::Sender<HostCommand>,
    txn: TransactionId,
) {
    if shared.close_txn(txn.0) {
        shared.outbox.release();
        let _ = commands.blocking_send(HostCommand::Disabled {
            plugin: index,
            txn: txn.0,
        });
    }
}
