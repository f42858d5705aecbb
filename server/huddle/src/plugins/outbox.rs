//! What one plugin instance sends the core (responses, requests, retargets), on their way to
//! the core's command channel. While the instance's own thread works through a batch of jobs
//! its commands are held and sent together when the batch ends (or [`MAX_HELD`] are held):
//! each send that finds the core idle wakes it (an eventfd write and a context switch on the
//! SIP thread), and a PUBLISH answered 200 followed by its NOTIFYs used to wake it more than
//! once per job. The channel slot of a held command is reserved when the plugin makes the
//! call, so "the channel is full" is still reported to the plugin at once ([`Error::Busy`]).
//!
//! Order is kept: commands leave in the order they were made, across threads too. A command
//! from another thread (a plugin's writer thread answering 202 once its write is durable)
//! first sends what the instance's thread holds, then itself, so nothing a plugin did before
//! handing work to its own thread reaches the core after that work's result.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::ThreadId;

use huddle_sdk::{Error, Result};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::{OwnedPermit, Sender};

use super::HostCommand;

/// Commands held at most before they are sent anyway: a NOTIFY fan-out to thousands of
/// watchers, all made in one job, still reaches the core in slices while the rest is built.
pub(crate) const MAX_HELD: usize = 32;

#[derive(Debug, Default)]
struct Held {
    /// The thread whose commands are held (the instance's thread, while it runs).
    holder: Option<ThreadId>,
    commands: Vec<(OwnedPermit<HostCommand>, HostCommand)>,
}

impl Held {
    fn release(&mut self) {
        for (permit, command) in self.commands.drain(..) {
            permit.send(command);
        }
    }
}

/// See the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    held: Mutex<Held>,
}

impl Outbox {
    // Only pushes and drains of owned values happen under this lock, never plugin code.
    fn lock(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// From now on the calling thread's commands are held until [`Outbox::release`].
    pub(crate) fn hold_this_thread(&self) {
        self.lock().holder = Some(std::thread::current().id());
    }

    /// Sends what is held and stops holding.
    pub(crate) fn stop_holding(&self) {
        let mut held = self.lock();
        held.release();
        held.holder = None;
    }

    /// Sends what is held (the holding thread's batch ended, or it is about to wait).
    pub(crate) fn release(&self) {
        self.lock().release();
    }

    /// Sends `command` to the core through `tx`, or, on the holding thread, reserves its slot
    /// and holds it. [`Error::Busy`] when the channel is full, [`Error::BadState`] once the
    /// core is gone (the command is dropped).
    pub(crate) fn send(&self, tx: &Sender<HostCommand>, command: HostCommand) -> Result<()> {
        let mut held = self.lock();
        let refused = if held.holder == Some(std::thread::current().id()) {
            match tx.clone().try_reserve_owned() {
                Ok(permit) => {
                    held.commands.push((permit, command));
                    if held.commands.len() >= MAX_HELD {
                        held.release();
                    }
                    return Ok(());
                }
                Err(TrySendError::Full(_)) => true,
                Err(TrySendError::Closed(_)) => false,
            }
        } else {
            held.release();
            match tx.try_send(command) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(_)) => true,
                Err(TrySendError::Closed(_)) => false,
            }
        };
        Err(if refused {
            Error::Busy
        } else {
            Error::BadState
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use huddle_sdk::RequestId;

    fn command(txn: u64) -> HostCommand {
        HostCommand::Fail {
            plugin: 0,
            txn,
            error: Error::Internal,
        }
    }

    fn txn_of(command: HostCommand) -> u64 {
        match command {
            HostCommand::Fail { txn, .. } => txn,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn the_holding_threads_commands_wait_for_release_and_keep_their_order() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let outbox = Outbox::default();
        outbox.hold_this_thread();
        for txn in 1..=3 {
            outbox.send(&tx, command(txn)).unwrap();
        }
        assert!(rx.try_recv().is_err(), "held, not sent");
        outbox.release();
        let got: Vec<u64> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(txn_of)
            .collect();
        assert_eq!(got, vec![1, 2, 3]);
        outbox.stop_holding();
        outbox.send(&tx, command(4)).unwrap();
        assert_eq!(rx.try_recv().map(txn_of).ok(), Some(4), "not held any more");
    }

    #[test]
    fn a_full_channel_is_reported_when_the_call_is_made() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        let outbox = Outbox::default();
        outbox.hold_this_thread();
        outbox.send(&tx, command(1)).unwrap();
        outbox.send(&tx, command(2)).unwrap();
        let refused = outbox.send(&tx, command(3));
        assert_eq!(
            refused,
            Err(Error::Busy),
            "both slots are reserved by held commands"
        );
        outbox.release();
        assert_eq!(rx.try_recv().map(txn_of).ok(), Some(1));
        assert_eq!(rx.try_recv().map(txn_of).ok(), Some(2));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn holding_is_bounded() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(MAX_HELD * 2);
        let outbox = Outbox::default();
        outbox.hold_this_thread();
        for txn in 0..MAX_HELD as u64 {
            outbox.send(&tx, command(txn)).unwrap();
        }
        let got = std::iter::from_fn(|| rx.try_recv().ok()).count();
        assert_eq!(got, MAX_HELD, "sent once MAX_HELD were held");
    }

    #[test]
    fn another_threads_command_goes_after_what_is_held() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let outbox = std::sync::Arc::new(Outbox::default());
        outbox.hold_this_thread();
        outbox.send(&tx, command(1)).unwrap();
        let other = {
            let (outbox, tx) = (outbox.clone(), tx.clone());
            std::thread::spawn(move || {
                outbox
                    .send(
                        &tx,
                        HostCommand::Send {
                            plugin: 0,
                            id: RequestId(9),
                            request: huddle_sdk::Message::parse(bytes::Bytes::from_static(
                                b"OPTIONS sip:a@example.test SIP/2.0\r\nContent-Length: 0\r\n\r\n",
                            ))
                            .unwrap(),
                            control: None,
                        },
                    )
                    .unwrap();
            })
        };
        other.join().unwrap();
        assert_eq!(
            rx.try_recv().map(txn_of).ok(),
            Some(1),
            "the held one first"
        );
        assert!(matches!(
            rx.try_recv(),
            Ok(HostCommand::Send {
                id: RequestId(9),
                ..
            })
        ));
        assert!(rx.try_recv().is_err());
    }
}
