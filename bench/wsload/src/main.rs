//! `wsload`: SIP-over-WebSocket load client for `bench/run.sh`, shaped like SIPml5 browsers.
//!
//! It opens `--connections` WebSockets (subprotocol `sip`) in bounded batches, registers one user
//! per connection with MD5 digest (`qop=auth`), then drives one phase at `--rate` operations/s
//! spread evenly over the connections, open loop (a late send goes out late, it is not skipped):
//!
//! * `register`: REGISTER refreshes with pre-emptive credentials (`nc` + 1), as SIPml5 refreshes.
//! * `message`: user i sends MESSAGE to user i+1 over the server; the receiving connection
//!   answers 200. Each sender takes the 407 round once (before the measured run) and then
//!   sends pre-emptive Proxy-Authorization with `nc` + 1; a new challenge is answered once.
//!
//! Latency is send → final response in microseconds per successful operation. The summary is one
//! `key=value` line on stdout. With `--sync` it prints `wsload ready` after set-up and warm-up and
//! waits for a stdin line before the measured run, then prints the summary and `wsload done` and
//! waits again before unregistering and closing, so a caller can read server CPU around exactly
//! the measured run.

mod digest;
mod ua;

use std::collections::BTreeMap;
use std::io::{BufRead as _, Write as _};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Parser, ValueEnum};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{timeout, timeout_at, Instant};

use ua::{Identity, Report, Settings, Stage, Stats};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Phase {
    Register,
    Message,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Register => "register",
            Phase::Message => "message",
        }
    }
}

/// SIP-over-WebSocket load client (SIPml5-shaped REGISTER refreshes or MESSAGE relay).
#[derive(Debug, Parser)]
#[command(name = "wsload")]
struct Args {
    /// Server WebSocket URL, e.g. ws://127.0.0.1:8080
    #[arg(long)]
    url: String,
    /// SIP domain and digest realm of the users.
    #[arg(long, default_value = "example.test")]
    domain: String,
    /// Users available (connection i uses user first_user + i).
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    #[arg(long, default_value_t = 0)]
    first_user: usize,
    #[arg(long, default_value = "u")]
    user_prefix: String,
    /// Zero-padded width of the user number (u0001).
    #[arg(long, default_value_t = 4)]
    user_digits: usize,
    /// Password = user name + this.
    #[arg(long, default_value = "-pw")]
    password_suffix: String,
    #[arg(long, default_value_t = 100)]
    connections: usize,
    #[arg(long, value_enum)]
    phase: Phase,
    /// Operations per second, all connections together.
    #[arg(long)]
    rate: u32,
    /// Measured seconds.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Unmeasured seconds of the same load before the measured run.
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    /// Connections being opened and registered at once during ramp-up.
    #[arg(long, default_value_t = 100)]
    ramp_batch: usize,
    #[arg(long, default_value_t = 5000)]
    connect_timeout_ms: u64,
    /// A request without a final response after this long counts as failed ("timeout").
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Bound on opening and registering every connection.
    #[arg(long, default_value_t = 120)]
    setup_timeout: u64,
    /// First remove each user's earlier bindings (REGISTER `Contact: *`, `Expires: 0`), so
    /// MESSAGEs reach only this run's connections, not contacts left by other tools.
    #[arg(long)]
    clear_bindings: bool,
    /// Contact expires of the registrations.
    #[arg(long, default_value_t = 600)]
    expires: u32,
    /// Runtime worker threads (1: a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Handshake on stdin/stdout around the measured run (see the crate documentation).
    #[arg(long)]
    sync: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match start(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wsload: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn start(args: Args) -> anyhow::Result<()> {
    if args.connections == 0 || args.rate == 0 || args.duration == 0 {
        bail!("--connections, --rate and --duration must be at least 1");
    }
    if args.connections > args.users {
        bail!(
            "--connections ({}) exceeds --users ({}): one user per connection",
            args.connections,
            args.users
        );
    }
    if args.phase == Phase::Message && args.connections < 2 {
        bail!("the message phase needs at least 2 connections");
    }
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    let result = runtime.block_on(run(args));
    // Connection tasks were closed or aborted in `run`; do not wait for a stuck one.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// `host:port` of a `ws://` URL, for the TCP connect.
fn host_port(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("ws://")
        .context("only ws:// URLs are supported")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    if authority.is_empty() {
        bail!("no host in {url}");
    }
    Ok(if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    })
}

/// Lines from stdin, read on a plain thread (a blocking read cannot be cancelled; the process
/// exits without it).
fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(4);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

async fn run(args: Args) -> anyhow::Result<()> {
    let n = args.connections;
    let response_timeout = Duration::from_millis(args.timeout_ms);
    let settings = Arc::new(Settings {
        host_port: host_port(&args.url)?,
        url: args.url.clone(),
        domain: args.domain.clone(),
        connect_timeout: Duration::from_millis(args.connect_timeout_ms),
        response_timeout,
        expires: args.expires,
        message_phase: args.phase == Phase::Message,
        clear_bindings: args.clear_bindings,
        run_tag: format!(
            "{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() % 0xffff_ffff)
        ),
    });
    let user = |i: usize| {
        format!(
            "{}{:0width$}",
            args.user_prefix,
            args.first_user + i,
            width = args.user_digits
        )
    };
    let (stage_tx, stage_rx) = watch::channel(Stage::Idle);
    // At most one Setup, Primed and two Ran reports per connection: sends never wait.
    let (report_tx, mut reports) = mpsc::channel(n * 4 + 16);
    let mut sync = args.sync.then(stdin_lines);

    // Ramp-up: at most `ramp_batch` connections connecting or registering at once.
    let t0 = Instant::now();
    let setup_deadline = t0 + Duration::from_secs(args.setup_timeout);
    let permits = Arc::new(Semaphore::new(args.ramp_batch.max(1)));
    let mut tasks = JoinSet::new();
    let mut setup_failures = BTreeMap::<String, u64>::new();
    let (mut alive, mut heard) = (0usize, 0usize);
    for i in 0..n {
        let Ok(Ok(permit)) = timeout_at(setup_deadline, permits.clone().acquire_owned()).await
        else {
            break;
        };
        let name = user(i);
        let id = Identity {
            idx: i,
            password: format!("{name}{}", args.password_suffix),
            user: name,
            peer: user((i + 1) % n),
        };
        tasks.spawn(ua::run(
            id,
            settings.clone(),
            permit,
            stage_rx.clone(),
            report_tx.clone(),
        ));
        // Drain as we go so the summary of failures is available early.
        while let Ok(report) = reports.try_recv() {
            if let Report::Setup(r) = report {
                heard += 1;
                count_setup(r, &mut alive, &mut setup_failures);
            }
        }
    }
    let spawned = tasks.len();
    while heard < spawned {
        match timeout_at(setup_deadline, reports.recv()).await {
            Ok(Some(Report::Setup(r))) => {
                heard += 1;
                count_setup(r, &mut alive, &mut setup_failures);
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    if spawned < n || heard < spawned {
        *setup_failures.entry("setup timeout".into()).or_default() += (n - heard) as u64;
    }
    eprintln!(
        "wsload: {alive}/{n} connections registered in {} ms{}",
        t0.elapsed().as_millis(),
        failure_list(&setup_failures, ", failed: ")
    );
    if alive == 0 {
        close(&stage_tx, &mut tasks, response_timeout).await;
        bail!("no connection could register");
    }

    if args.phase == Phase::Message {
        // One 407 round per sender, spread out, before anything is measured.
        let spacing = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1000)));
        let start = Instant::now() + Duration::from_millis(10);
        let _ = stage_tx.send(Stage::Prime { start, spacing });
        let deadline = start + spacing * n as u32 + response_timeout * 2 + Duration::from_secs(1);
        let (mut ok, mut failures) = (0usize, BTreeMap::<String, u64>::new());
        let mut heard = 0;
        while heard < alive {
            match timeout_at(deadline, reports.recv()).await {
                Ok(Some(Report::Primed(r))) => {
                    heard += 1;
                    count_setup(r, &mut ok, &mut failures);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        eprintln!(
            "wsload: {ok}/{alive} senders authenticated a first MESSAGE{}",
            failure_list(&failures, ", failed: ")
        );
    }

    let run_load = |id: u32, secs: u64| {
        let start = Instant::now() + Duration::from_millis(10);
        // Each connection sends every alive/rate seconds; connection i starts i/n of a period
        // late, so the total is `rate` evenly spaced sends per second.
        let period = Duration::from_secs_f64(alive as f64 / f64::from(args.rate));
        let end = start + Duration::from_secs(secs);
        let _ = stage_tx.send(Stage::Run {
            id,
            start,
            period,
            end,
            connections: n,
        });
        (start, end)
    };
    if args.warmup > 0 {
        let (_, end) = run_load(1, args.warmup);
        let (stats, _) = collect_run(&mut reports, 1, alive, end, response_timeout).await;
        eprintln!(
            "wsload: warm-up {} s: sent={} ok={} failed={}{}",
            args.warmup,
            stats.sent,
            stats.ok,
            stats.failed,
            failure_list(&stats.failures, " ")
        );
    }
    if let Some(lines) = &mut sync {
        ready("wsload ready")?;
        // The caller reads its CPU counters, then says go; don't wait forever for it.
        let _ = timeout(Duration::from_secs(300), lines.recv()).await;
    }
    let (start, end) = run_load(2, args.duration);
    let (mut stats, last) = collect_run(&mut reports, 2, alive, end, response_timeout).await;
    let elapsed = last.saturating_duration_since(start);
    stats.latency_us.sort_unstable();
    let secs = elapsed.as_secs_f64().max(1e-9);
    println!(
        "wsload phase={} sent={} ok={} failed={} retries={} stale={} p50_us={} p99_us={} max_us={} \
         connections={alive} rate={} duration_ms={} ok_per_s={:.0}{}",
        args.phase.as_str(),
        stats.sent,
        stats.ok,
        stats.failed,
        stats.retries,
        stats.stale,
        percentile(&stats.latency_us, 0.50),
        percentile(&stats.latency_us, 0.99),
        stats
            .latency_us
            .last()
            .map_or_else(|| "-".to_owned(), u32::to_string),
        args.rate,
        elapsed.as_millis(),
        stats.ok as f64 / secs,
        failure_list(&stats.failures, " ")
    );
    if let Some(lines) = &mut sync {
        ready("wsload done")?;
        let _ = timeout(Duration::from_secs(300), lines.recv()).await;
    }
    close(&stage_tx, &mut tasks, response_timeout).await;
    Ok(())
}

fn ready(line: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

fn count_setup(r: Result<(), String>, ok: &mut usize, failures: &mut BTreeMap<String, u64>) {
    match r {
        Ok(()) => *ok += 1,
        Err(e) => *failures.entry(e).or_default() += 1,
    }
}

/// ` fail_408=2 fail_timeout=1` style list (spaces in reasons become `_`).
fn failure_list(failures: &BTreeMap<String, u64>, lead: &str) -> String {
    if failures.is_empty() {
        return String::new();
    }
    let items: Vec<String> = failures
        .iter()
        .map(|(k, v)| {
            format!(
                "fail_{}={v}",
                k.replace(|c: char| c.is_whitespace() || c == '=', "_")
            )
        })
        .collect();
    format!("{lead}{}", items.join(" "))
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[u32], p: f64) -> String {
    if sorted.is_empty() {
        return "-".to_owned();
    }
    let rank = ((sorted.len() as f64) * p).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1].to_string()
}

/// Merges the `Ran(id)` reports of `alive` connections; each finishes within the response
/// timeout (twice, for a challenge round) after `end`. Returns the stats and when the last
/// report arrived.
async fn collect_run(
    reports: &mut mpsc::Receiver<Report>,
    id: u32,
    alive: usize,
    end: Instant,
    response_timeout: Duration,
) -> (Stats, Instant) {
    let deadline = end + response_timeout * 2 + Duration::from_secs(2);
    let mut stats = Stats::default();
    let (mut heard, mut last) = (0, end);
    while heard < alive {
        match timeout_at(deadline, reports.recv()).await {
            Ok(Some(Report::Ran(got, s))) if got == id => {
                heard += 1;
                last = Instant::now();
                stats.merge(s);
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    if heard < alive {
        // Their counts are lost; say so rather than under-report silently.
        *stats
            .failures
            .entry("unreported_connections".into())
            .or_default() += (alive - heard) as u64;
        last = Instant::now();
    }
    (stats, last)
}

/// Unregisters and closes every connection, bounded; stragglers are aborted.
async fn close(
    stage: &watch::Sender<Stage>,
    tasks: &mut JoinSet<bool>,
    response_timeout: Duration,
) {
    let _ = stage.send(Stage::Close);
    let t0 = Instant::now();
    let deadline = t0 + response_timeout * 2 + Duration::from_secs(3);
    let (mut closed, mut unregistered) = (0, 0);
    while let Ok(Some(done)) = timeout_at(deadline, tasks.join_next()).await {
        closed += 1;
        unregistered += usize::from(done.unwrap_or(false));
    }
    eprintln!(
        "wsload: {closed} connections closed ({unregistered} unregistered first), {} aborted, in {} ms",
        tasks.len(),
        t0.elapsed().as_millis()
    );
    tasks.abort_all();
}
