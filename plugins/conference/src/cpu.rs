//! CPU time spent on one room's media: the threads of its GStreamer pipelines and its mixer.
//!
//! A GStreamer streaming thread comes from a pool and can serve another room later, so a
//! thread's lifetime CPU is not the room's. Each thread is charged only between the moment it
//! enters a task of this room's pipelines and the moment it leaves it (the `ENTER`/`LEAVE`
//! stream-status messages, which the thread posts itself). Thread CPU comes from
//! `/proc/<pid>/task/<tid>/schedstat` (nanoseconds on CPU; Linux with scheduler statistics,
//! which every mainstream kernel has). Not counted: worker threads a codec library starts by
//! itself, which no pipeline owns (the VP8 encoders run with one thread, so they start none;
//! openh264 may).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Per-thread charging, without the operating system: the CPU readings are passed in.
#[derive(Debug, Default)]
pub struct CpuLedger {
    /// CPU of threads that have left this room's tasks.
    settled: Duration,
    /// Threads now working for the room, with their CPU reading when they entered.
    working: HashMap<u32, Duration>,
}

impl CpuLedger {
    /// Thread `tid` starts working for the room; `cpu` is its CPU time now. A second enter
    /// without a leave (a task restarted on the same thread) keeps the first reading.
    pub fn enter(&mut self, tid: u32, cpu: Duration) {
        self.working.entry(tid).or_insert(cpu);
    }

    /// Thread `tid` stops working for the room; `cpu` is its CPU time now.
    pub fn leave(&mut self, tid: u32, cpu: Duration) {
        if let Some(start) = self.working.remove(&tid) {
            self.settled += cpu.saturating_sub(start);
        }
    }

    /// Everything charged so far, reading working threads with `now_of` (`None`: the thread
    /// is gone without leaving, and is settled at nothing more).
    pub fn total(&mut self, mut now_of: impl FnMut(u32) -> Option<Duration>) -> Duration {
        let mut total = self.settled;
        let mut gone = Vec::new();
        for (&tid, &start) in &self.working {
            match now_of(tid) {
                Some(now) => total += now.saturating_sub(start),
                None => gone.push(tid),
            }
        }
        for tid in gone {
            self.working.remove(&tid);
        }
        total
    }
}

/// A room's ledger, charged from the room's own threads.
#[derive(Debug, Default)]
pub struct RoomCpu {
    ledger: Mutex<CpuLedger>,
}

impl RoomCpu {
    /// The calling thread starts working for the room.
    pub fn enter_current(&self) {
        if let Some((tid, cpu)) = current_thread() {
            self.lock().enter(tid, cpu);
        }
    }

    /// The calling thread stops working for the room.
    pub fn leave_current(&self) {
        if let Some((tid, cpu)) = current_thread() {
            self.lock().leave(tid, cpu);
        }
    }

    /// CPU time the room has used so far.
    pub fn total(&self) -> Duration {
        self.lock().total(thread_cpu)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CpuLedger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The calling thread's id and CPU time.
fn current_thread() -> Option<(u32, Duration)> {
    // `/proc/thread-self` links to `<pid>/task/<tid>`.
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    let tid: u32 = link.file_name()?.to_str()?.parse().ok()?;
    Some((tid, thread_cpu(tid)?))
}

/// CPU time of thread `tid` of this process; `None` when it has exited.
fn thread_cpu(tid: u32) -> Option<Duration> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    parse_schedstat(&text)
}

/// The first field of a `schedstat` line: nanoseconds spent on a CPU.
fn parse_schedstat(text: &str) -> Option<Duration> {
    let ns: u64 = text.split_ascii_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_thread_is_charged_only_while_it_works_for_the_room() {
        let mut ledger = CpuLedger::default();
        // Thread 7 already has 500 ms from another room when it enters.
        ledger.enter(7, ms(500));
        assert_eq!(ledger.total(|_| Some(ms(530))), ms(30));
        ledger.leave(7, ms(540));
        // After leaving, its later CPU belongs to someone else.
        assert_eq!(ledger.total(|_| Some(ms(9000))), ms(40));
        ledger.enter(8, ms(0));
        ledger.enter(8, ms(5));
        assert_eq!(ledger.total(|_| Some(ms(10))), ms(50));
    }

    #[test]
    fn a_thread_that_exited_without_leaving_stops_counting() {
        let mut ledger = CpuLedger::default();
        ledger.enter(1, ms(10));
        ledger.leave(2, ms(99)); // never entered: nothing
        assert_eq!(ledger.total(|_| None), Duration::ZERO);
        assert_eq!(ledger.total(|_| Some(ms(50))), Duration::ZERO);
    }

    #[test]
    fn schedstat_lines_parse() {
        assert_eq!(
            parse_schedstat("71856 68582 2\n"),
            Some(Duration::from_nanos(71856))
        );
        assert_eq!(parse_schedstat(""), None);
        assert_eq!(parse_schedstat("x 1 2"), None);
    }

    #[test]
    fn a_busy_thread_of_the_room_is_charged_from_proc() {
        let cpu = std::sync::Arc::new(RoomCpu::default());
        let worker = {
            let cpu = cpu.clone();
            std::thread::spawn(move || {
                cpu.enter_current();
                // Burn CPU until the kernel has charged some to this thread.
                let start = thread_cpu_self();
                let mut x = 0u64;
                while thread_cpu_self() <= start + ms(5) {
                    for i in 0..10_000u64 {
                        x = x.wrapping_mul(31).wrapping_add(i);
                    }
                }
                cpu.leave_current();
                x
            })
        };
        let _ = worker.join();
        assert!(cpu.total() >= ms(5), "charged {:?}", cpu.total());
    }

    fn thread_cpu_self() -> Duration {
        current_thread().map(|(_, cpu)| cpu).unwrap_or_default()
    }
}
