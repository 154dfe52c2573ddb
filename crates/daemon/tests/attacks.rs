//! The attack suite: a real `netproto serve` child process under hostile
//! input, with two legitimate clients measuring their latency throughout:
//! one that keeps an established connection, and one that opens a fresh
//! connection for every request (preface, handshake, one request), from
//! addresses no attacker uses.
//!
//! It runs as part of `cargo xtask stress` (built only with the `stress`
//! feature), not under `cargo test`: its latency criteria depend on the
//! machine's timing. Each case runs [`RUNS`] times (and [`MORE_RUNS`] more
//! when the median of those misses the latency criterion), each against a new
//! server. Every run checks what does not depend on timing:
//!
//! - the server is still running afterwards and its log has no panic;
//! - every attacking connection is closed by the server within its timeout;
//! - the server's resident memory stays within the bound its configuration
//!   implies for what the attacker makes it hold (stated in each case);
//! - the established client lost no request; the fresh client's attempts
//!   succeeded as the case requires (all of them, or at least 99.5 %).
//!
//! The latency criterion is judged on the median of the runs: the p99 of
//! each legitimate client during the attack is at most 3 times its quiet
//! p99 (measured before and after the attack). Every run's figures are
//! printed. A debug build adds an allowance for its unoptimised crypto and
//! compression (see `debug_build_allowance`); `cargo xtask stress` builds
//! optimised.
//!
//! The attacker runs in this process, in the `SCHED_IDLE` scheduling class:
//! on the machine it shares with the server, it takes only the CPU the
//! server and the legitimate clients leave idle, as if it ran on another
//! machine.
//!
//! `cargo test --release -p netproto-daemon --features stress --test attacks
//! -- --nocapture --test-threads 1`

// Memory and sockets are read from /proc, and connections come from several
// 127.x.y.z addresses: Linux only.
#![cfg(target_os = "linux")]
// Integration test: a failed unwrap, expect, panic or index is a failed
// test; the figures each case measures are printed for the closing note.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stdout
)]

mod support;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use netproto_compress::{Codec, Config as CompressConfig};
use netproto_crypto::{Keypair, PublicKey, SessionBuilder};
use netproto_wire::{
    Compression, Data, DataFlags, Decoder, Frame, FrameKind, Header, Preface, PrefaceStatus,
    READ_CHUNK, SecurityMode,
};
use rand::{Rng, SeedableRng};
use support::{
    End, Latency, Probe, Prober, RawNoise, ServerProcess, Settings, connect_from, echo_frame,
    frame_bytes, now_ms, preface, serial, wait_closed,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

/// Runs of each case; the latency criterion is judged on their median.
const RUNS: usize = 3;
/// Runs added when the median of the first [`RUNS`] misses the latency
/// criterion: single runs of a case swing by a factor of two on a shared
/// machine (the tampered-records case gave established-client ratios from
/// 1.4 to 3.6 in single runs, for the build before the architecture change
/// as for the one after), so a borderline median is judged on five.
const MORE_RUNS: usize = 2;
/// The established client sends one request this often.
const PROBE_EVERY: Duration = Duration::from_millis(1);
/// The fresh client opens one connection this often, from each of
/// [`fresh_sources`] in turn: about 16 handshakes a second from each
/// address, under the default `server.handshake_rate_per_ip` (20), and 500
/// from their /24, under `server.handshake_rate_per_prefix` (1,000).
const FRESH_EVERY: Duration = Duration::from_millis(2);
/// Requests of the established client measured before the attack, and after it.
const QUIET_BEFORE: usize = 1000;
const QUIET_AFTER: usize = 800;
/// Requests the attack window must hold for a stable p99.
const ATTACK_SAMPLES: usize = 1500;
/// How long attacks made of repeated waves go on.
const WAVES_FOR: Duration = Duration::from_millis(1500);
/// Allowed slowdown of each legitimate client's p99.
const P99_FACTOR: u32 = 3;
/// Wave attacks go on past [`WAVES_FOR`] until the legitimate client made
/// [`ATTACK_SAMPLES`] requests, but never longer than this.
const WAVES_AT_MOST: Duration = Duration::from_secs(20);
/// Failed attempts of the fresh client allowed where some may fail: 0.5 %.
const FRESH_FAILURES: f64 = 0.005;

/// Where the fresh client connects from: a /24 no attacker uses.
fn fresh_sources() -> Vec<IpAddr> {
    (1..=32)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 1, 0, i)))
        .collect()
}

/// The `i`-th of 64 attacking addresses, each in a /24 of its own (so that
/// the per-prefix limits are no stronger than the per-address ones).
fn attacker(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 10, (i % 64) as u8, 1))
}

/// Latency the legitimate client's p99 may have on top of `P99_FACTOR` x its
/// quiet p99. None in an optimised build: the criterion as stated. A debug
/// build's crypto and compression cost the server 10 to 100 times more CPU
/// for each attacking connection, which its latency measures instead of the
/// server's design; it gets 100 ms, unless `NETPROTO_ATTACK_STRICT=1`.
fn debug_build_allowance() -> Duration {
    let strict = std::env::var_os("NETPROTO_ATTACK_STRICT").is_some_and(|v| v == "1");
    if cfg!(debug_assertions) && !strict {
        Duration::from_millis(100)
    } else {
        Duration::ZERO
    }
}
/// Memory the server may use beyond the connections' buffers: allocator
/// arenas, runtime and log buffers.
const SLACK: u64 = 16 << 20;
/// Per-connection cost the configuration does not name: the task, the
/// socket and the connection's state (the 10,000-connection target).
const TASK: u64 = 16 << 10;
/// An established connection that sends nothing holds the task, the
/// reader's reserved read chunk and the writer's batch buffer.
const IDLE_CONNECTION: u64 = TASK + 2 * READ_CHUNK as u64;
/// Margin on every closing deadline, for scheduling on a loaded machine.
const MARGIN: Duration = Duration::from_millis(1500);
/// No attack may take longer than this.
const CASE_LIMIT: Duration = Duration::from_secs(45);

/// Whether the suite runs against another build of the server
/// (`NETPROTO_STRESS_SERVER`, to measure before and after a change): its
/// checks then print what fails and go on, so that every case gives its
/// figures.
fn comparing() -> bool {
    std::env::var_os("NETPROTO_STRESS_SERVER").is_some()
}

/// Fails the case unless `holds`; against another build, prints instead.
fn expect(holds: bool, what: impl FnOnce() -> String) {
    if holds {
        return;
    }
    let what = what();
    if comparing() {
        println!("NOT MET by this build: {what}");
    } else {
        panic!("{what}");
    }
}

/// What an attack gets: the server's address and key, and its settings.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    key: Option<PublicKey>,
    settings: Settings,
    /// Requests of the established client so far, and when the attack began.
    probes: Arc<AtomicUsize>,
    probes_before: usize,
}

impl Target {
    /// Whether a wave attack begun at `started` should go on.
    fn keep_going(&self, started: Instant) -> bool {
        let sampled = self.probes.load(Ordering::Relaxed) - self.probes_before;
        started.elapsed() < WAVES_FOR
            || (sampled < ATTACK_SAMPLES + 20 && started.elapsed() < WAVES_AT_MOST)
    }

    /// A duration setting, or its default when the case leaves it unset.
    fn duration(&self, section: &'static str, field: &'static str) -> Duration {
        self.settings.duration(section, field)
    }
}

/// What a case requires of the fresh-connection client.
#[derive(Clone, Copy, Debug)]
enum Fresh {
    /// Every attempt succeeds, and its p99 stays within the criterion.
    NoFailure,
    /// At least 99.5 % of attempts succeed, and its p99 stays within the
    /// criterion.
    Criterion,
    /// Measured and printed, not judged: the reason.
    Measured(&'static str),
}

/// One attack case.
struct Case {
    name: &'static str,
    /// `plain` or `noise`; the fresh client handshakes in this mode.
    mode: &'static str,
    settings: Settings,
    /// The extra memory the configuration allows the attack to cost
    /// (without [`SLACK`]).
    bound: u64,
    /// How `bound` follows from the settings.
    explain: &'static str,
    fresh: Fresh,
    /// Where the fresh client connects from.
    fresh_sources: Vec<IpAddr>,
    /// How often the fresh client connects.
    fresh_every: Duration,
}

impl Case {
    fn new(name: &'static str, mode: &'static str, settings: Settings) -> Self {
        Self {
            name,
            mode,
            settings,
            bound: 0,
            explain: "",
            fresh: Fresh::Criterion,
            fresh_sources: fresh_sources(),
            fresh_every: FRESH_EVERY,
        }
    }

    fn bound(mut self, bound: u64, explain: &'static str) -> Self {
        self.bound = bound;
        self.explain = explain;
        self
    }

    fn fresh(mut self, fresh: Fresh) -> Self {
        self.fresh = fresh;
        self
    }
}

/// What one run of a case measured.
struct Run {
    established_ratio: f64,
    fresh_ratio: f64,
    fresh: Latency,
}

/// Runs `case` [`RUNS`] times, each against a new server: measures both
/// legitimate clients quiet, runs `attack`, checks every pass condition
/// that does not depend on timing, then judges the latency criterion on
/// the median of the runs.
fn run_case<F, Fut>(case: Case, attack: F)
where
    F: Fn(Target) -> Fut + Sync,
    Fut: Future<Output = ()>,
{
    let _serial = serial();
    support::raise_file_limit();
    let name = case.name;
    let mut runs: Vec<Run> = (1..=RUNS)
        .map(|run| {
            println!("{name}: run {run} of {RUNS}");
            run_once(&case, &attack)
        })
        .collect();
    let median = |runs: &[Run], ratio: fn(&Run) -> f64| {
        let mut all: Vec<f64> = runs.iter().map(ratio).collect();
        all.sort_by(f64::total_cmp);
        all[all.len() / 2]
    };
    let allowance = debug_build_allowance();
    let factor = f64::from(P99_FACTOR);
    let fresh_judged = !matches!(case.fresh, Fresh::Measured(_));
    let misses = |runs: &[Run]| {
        median(runs, |r| r.established_ratio) > factor
            || (fresh_judged && median(runs, |r| r.fresh_ratio) > factor)
    };
    if misses(&runs) {
        for run in RUNS + 1..=RUNS + MORE_RUNS {
            println!(
                "{name}: borderline median: run {run} of {}",
                RUNS + MORE_RUNS
            );
            runs.push(run_once(&case, &attack));
        }
    }
    let established = median(&runs, |r| r.established_ratio);
    let fresh = median(&runs, |r| r.fresh_ratio);
    let show = |ratio: fn(&Run) -> f64| {
        runs.iter()
            .map(|r| format!("{:.1}", ratio(r)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "{name}: p99 attack / quiet, established client: {} (median {established:.1}); fresh client: {} (median {fresh:.1}); criterion {P99_FACTOR}{}",
        show(|r| r.established_ratio),
        show(|r| r.fresh_ratio),
        if allowance.is_zero() {
            String::new()
        } else {
            format!(" plus {allowance:?} for a debug build")
        }
    );
    let failed: usize = runs.iter().map(|r| r.fresh.lost).sum();
    let attempts: usize = runs.iter().map(|r| r.fresh.requests).sum();
    println!("{name}: fresh client failed {failed} of {attempts} attempts during the attacks");
    let mut unmet = Vec::new();
    if established > factor {
        unmet.push(format!(
            "the established client's median p99 ratio {established:.2} > {P99_FACTOR}"
        ));
    }
    if fresh > factor && fresh_judged {
        unmet.push(format!(
            "the fresh client's median p99 ratio {fresh:.2} > {P99_FACTOR}"
        ));
    }
    for line in &unmet {
        println!("{name}: LATENCY CRITERION NOT MET: {line}");
    }
    if allowance.is_zero() {
        expect(unmet.is_empty(), || format!("{name}: {}", unmet.join("; ")));
    }
}

/// One run of `case`; asserts the conditions that do not depend on timing.
fn run_once<F, Fut>(case: &Case, attack: &F) -> Run
where
    F: Fn(Target) -> Fut + Sync,
    Fut: Future<Output = ()>,
{
    let name = case.name;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let mut server = ServerProcess::start(case.mode, &case.settings);
        let key: Option<PublicKey> = server.public_key.as_deref().map(|k| k.parse().unwrap());
        let prober = Prober::start(
            Probe::Established(Box::new(server.client_config())),
            PROBE_EVERY,
        );
        let fresh_prober = Prober::start(
            Probe::Fresh {
                addr: server.addr,
                key,
                sources: case.fresh_sources.clone(),
            },
            case.fresh_every,
        );
        let warm = Instant::now();
        prober.wait_for(warm, 100).await;
        let before_from = Instant::now();
        prober.wait_for(before_from, QUIET_BEFORE).await;
        let before_to = Instant::now();
        let sockets = server.open_sockets();
        let rss_before = server.rss();
        let sampler = server.sample_memory();
        let target = Target {
            addr: server.addr,
            key,
            settings: case.settings.clone(),
            probes: prober.counter(),
            probes_before: prober.counter().load(Ordering::Relaxed),
        };
        let attack_from = Instant::now();
        std::thread::scope(|scope| {
            let attacker = scope.spawn(|| {
                // The attacker takes only the CPU the server and the
                // legitimate clients leave idle, as if it ran on another
                // machine.
                support::lower_thread_priority();
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async { tokio::time::timeout(CASE_LIMIT, attack(target)).await })
            });
            match attacker.join() {
                Ok(Ok(())) => {}
                Ok(Err(_)) => panic!("{name}: the attack did not finish in {CASE_LIMIT:?}"),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        });
        let attack_to = Instant::now();
        let peak = sampler.stop().max(rss_before);
        // Attack sockets the attacker already saw closed must be gone on
        // the server's side too (the refusal tasks hold theirs a moment).
        let left = server.wait_sockets_at_most(sockets, Duration::from_secs(5)).await;
        let rss_after = server.rss();
        let after_from = Instant::now();
        prober.wait_for(after_from, QUIET_AFTER).await;
        let after_to = Instant::now();
        // The quiet baseline brackets the attack, so that load from outside
        // the test weighs on both sides of the comparison alike.
        let quiet_windows = [(before_from, before_to), (after_from, after_to)];
        let quiet = prober.windows(&quiet_windows);
        let during = prober.windows(&[(attack_from, attack_to)]);
        let fresh_quiet = fresh_prober.windows(&quiet_windows);
        let fresh_during = fresh_prober.windows(&[(attack_from, attack_to)]);
        let lost = prober.lost();
        drop(prober);
        drop(fresh_prober);
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        let established_ratio = during.p99.as_secs_f64() / quiet.p99.as_secs_f64();
        let fresh_ratio = fresh_during.p99.as_secs_f64() / fresh_quiet.p99.as_secs_f64();
        println!(
            "{name}: established quiet {quiet}\n{name}: established attack {during}\n{name}: fresh quiet {fresh_quiet}\n{name}: fresh attack {fresh_during}\n{name}: p99 attack / quiet: established {established_ratio:.1}, fresh {fresh_ratio:.1}\n{name}: server RSS before {:.1} MiB, peak {:.1} MiB (+{:.1}), after {:.1} MiB, VmHWM {:.1} MiB; bound +{:.1} MiB = {} + {:.0} MiB slack; attack took {:?}",
            mib(rss_before),
            mib(peak),
            mib(peak - rss_before),
            mib(rss_after),
            mib(server.hwm()),
            mib(case.bound + SLACK),
            case.explain,
            mib(SLACK),
            attack_to - attack_from,
        );
        server.assert_healthy();
        expect(lost == 0, || format!("{name}: the established client lost {lost} requests"));
        expect(during.requests >= ATTACK_SAMPLES, || {
            format!("{name}: only {} requests during the attack", during.requests)
        });
        match case.fresh {
            Fresh::NoFailure => expect(fresh_during.lost == 0, || {
                format!("{name}: fresh connections failed during the attack: {fresh_during}")
            }),
            Fresh::Criterion => expect(
                fresh_during.lost as f64 <= FRESH_FAILURES * fresh_during.requests as f64,
                || format!("{name}: too many fresh connections failed during the attack: {fresh_during}"),
            ),
            Fresh::Measured(why) => println!("{name}: fresh client measured only: {why}"),
        }
        // A measured-only case's limits may still weigh on the fresh client
        // after the attack (a shared address's handshake rate in debt).
        expect(
            fresh_quiet.lost == 0 || matches!(case.fresh, Fresh::Measured(_)),
            || format!("{name}: fresh connections failed while quiet: {fresh_quiet}"),
        );
        expect(peak - rss_before <= case.bound + SLACK, || {
            format!(
                "{name}: server memory grew by {} bytes, bound {}",
                peak - rss_before,
                case.bound + SLACK
            )
        });
        // The fresh client may hold one connection at either count.
        expect(left <= sockets + 1, || {
            format!("{name}: the server still holds {left} sockets, {sockets} before the attack")
        });
        Run {
            established_ratio,
            fresh_ratio,
            fresh: fresh_during,
        }
    })
}

/// Closing deadlines checked for a batch of attacking connections.
#[derive(Default)]
struct Closures {
    count: usize,
    slowest: Duration,
    open: usize,
}

impl Closures {
    fn add(&mut self, end: End) {
        self.count += 1;
        match end {
            End::Closed(after) => self.slowest = self.slowest.max(after),
            End::Open => self.open += 1,
        }
    }

    fn check(&self, what: &str, limit: Duration) {
        println!(
            "{what}: {} connections, slowest closed after {:?} (limit {limit:?})",
            self.count, self.slowest
        );
        assert!(self.count > 0, "{what}: no connection was made");
        expect(self.open == 0, || {
            format!(
                "{what}: {} connections still open after {limit:?}",
                self.open
            )
        });
    }
}

/// Attacks in waves of `per_wave` connections, `connection(wave, i)` each,
/// with a short pause between waves, for as long as [`Target::keep_going`]
/// says; returns how the connections ended.
async fn waves<F, Fut>(target: &Target, per_wave: usize, connection: F) -> Closures
where
    F: Fn(usize, usize) -> Fut,
    Fut: Future<Output = End> + Send + 'static,
{
    let started = Instant::now();
    let mut closures = Closures::default();
    let mut wave_no = 0;
    while target.keep_going(started) {
        let mut wave = JoinSet::new();
        for i in 0..per_wave {
            wave.spawn(connection(wave_no, i));
        }
        while let Some(joined) = wave.join_next().await {
            closures.add(joined.unwrap());
        }
        wave_no += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    closures
}

fn addr_v4(last: u8) -> Option<IpAddr> {
    Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
}

/// Slowloris from one address: 1,000 sockets that connect and send
/// nothing, and 200 that dribble the preface one byte a second. At most
/// `max_pending_per_ip` (64) of them are pending at once: each newcomer
/// evicts the oldest, and the preface timeout (2 s) closes the rest.
#[test]
fn slowloris() {
    let settings = Settings::attack_defaults();
    // Every socket costs at most a task and its socket, and far fewer are
    // pending at once.
    let bound = 1200 * TASK;
    run_case(
        Case::new("slowloris", "plain", settings).bound(bound, "1,200 sockets x 16 KiB"),
        |target| async move {
            let handshake = target.duration("server", "connection_timeout");
            let limit = handshake + MARGIN;
            let mut tasks = JoinSet::new();
            for i in 0..1200 {
                let addr = target.addr;
                tasks.spawn(async move {
                    let mut stream = connect_from(addr, None).await.unwrap();
                    let start = Instant::now();
                    let dribble = i >= 1000;
                    let preface = Preface::new(SecurityMode::Plain).to_bytes();
                    let mut sent = 0;
                    let mut buf = [0; 64];
                    let end = loop {
                        let wait = if dribble {
                            Duration::from_secs(1)
                        } else {
                            limit
                        };
                        match tokio::time::timeout(wait, stream.read(&mut buf)).await {
                            Ok(Ok(0) | Err(_)) => break End::Closed(start.elapsed()),
                            Ok(Ok(_)) => panic!("the server answered a preface it never got"),
                            Err(_) if start.elapsed() >= limit => break End::Open,
                            Err(_) => {
                                if let Some(byte) = preface.get(sent) {
                                    if stream.write_all(&[*byte]).await.is_err() {
                                        break End::Closed(start.elapsed());
                                    }
                                    sent += 1;
                                }
                            }
                        }
                    };
                    (dribble, end)
                });
            }
            let (mut silent, mut dribbling) = (Closures::default(), Closures::default());
            while let Some(joined) = tasks.join_next().await {
                let (dribble, end) = joined.unwrap();
                if dribble {
                    dribbling.add(end)
                } else {
                    silent.add(end)
                }
            }
            silent.check("slowloris silent", limit);
            dribbling.check("slowloris dribbling", limit);
        },
    );
}

/// A connection flood past `max_connections` (100) and past
/// `max_connections_per_ip` (40): the connections over a limit get the
/// `busy` answer and are closed; once the flood ends, new connections are
/// accepted again.
#[test]
fn connection_flood() {
    let settings = Settings::attack_defaults()
        .set("server", "max_connections", "100")
        .set("server", "max_connections_per_ip", "40");
    // 100 established idle connections, and refusals in progress.
    let bound = 100 * IDLE_CONNECTION + 1000 * TASK;
    let explain = "100 idle connections x 144 KiB + 1,000 refusals x 16 KiB";
    run_case(
        Case::new("connection flood", "plain", settings)
            .bound(bound, explain)
            .fresh(Fresh::Measured(
                "the attack holds the server at max_connections on purpose",
            )),
        |target| async move {
            let addr = target.addr;
            let started = Instant::now();
            // Past the per-IP limit: 60 connections from 127.0.0.2.
            let mut held = Vec::new();
            let mut refused = Vec::new();
            for _ in 0..60 {
                let mut stream = connect_from(addr, addr_v4(2)).await.unwrap();
                match preface(&mut stream, SecurityMode::Plain).await.unwrap() {
                    PrefaceStatus::Accept => held.push(stream),
                    status => {
                        assert_eq!(status, PrefaceStatus::Busy);
                        refused.push(stream);
                    }
                }
            }
            assert_eq!(held.len(), 40, "per-IP limit");
            // Past max_connections: 30 more from each of four other addresses
            // (the legitimate client holds one connection).
            let mut busy = 0;
            for i in 0..120 {
                let mut stream = connect_from(addr, addr_v4(3 + (i % 4) as u8))
                    .await
                    .unwrap();
                match preface(&mut stream, SecurityMode::Plain).await.unwrap() {
                    PrefaceStatus::Accept => held.push(stream),
                    status => {
                        assert_eq!(status, PrefaceStatus::Busy);
                        busy += 1;
                        refused.push(stream);
                    }
                }
            }
            assert_eq!(held.len(), 99, "max_connections");
            assert_eq!(busy, 61);
            let mut closures = Closures::default();
            for mut stream in refused {
                closures.add(wait_closed(&mut stream, MARGIN).await.0);
            }
            closures.check("flood refused", MARGIN);
            // Churn while at the limit: connect, read the answer, go.
            let mut churn = Closures::default();
            let mut statuses = [0usize; 2];
            while target.keep_going(started) {
                let mut wave = JoinSet::new();
                for _ in 0..20 {
                    wave.spawn(async move {
                        let mut stream = connect_from(addr, addr_v4(7)).await.unwrap();
                        let status = preface(&mut stream, SecurityMode::Plain).await.unwrap();
                        if status == PrefaceStatus::Busy {
                            (true, wait_closed(&mut stream, MARGIN).await.0)
                        } else {
                            (false, End::Closed(Duration::ZERO))
                        }
                    });
                }
                while let Some(joined) = wave.join_next().await {
                    let (was_busy, end) = joined.unwrap();
                    statuses[usize::from(was_busy)] += 1;
                    churn.add(end);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            println!(
                "flood churn: {} accepted, {} busy",
                statuses[0], statuses[1]
            );
            churn.check("flood churn", MARGIN);
            drop(held);
            // Recovery: a new connection is accepted again.
            let recovered = async {
                loop {
                    let mut stream = connect_from(addr, addr_v4(2)).await.unwrap();
                    if preface(&mut stream, SecurityMode::Plain).await.unwrap()
                        == PrefaceStatus::Accept
                    {
                        stream
                            .write_all(&echo_frame(1, "after the flood"))
                            .await
                            .unwrap();
                        let mut reply = [0; 6];
                        stream.read_exact(&mut reply).await.unwrap();
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            tokio::time::timeout(Duration::from_secs(3), recovered)
                .await
                .expect("the server accepts connections again after the flood");
        },
    );
}

/// Connections that send garbage, before or after a valid preface.
#[test]
fn garbage_bytes() {
    let settings = Settings::attack_defaults();
    let bound = 20 * (IDLE_CONNECTION + (1 << 20));
    run_case(
        Case::new("garbage", "plain", settings)
            .bound(bound, "20 connections x (144 KiB + a 1 MiB frame)"),
        |target| async move {
            // Garbage that parses as a frame header of an allowed size waits
            // for its body: the heartbeat (2 x 1 s) or idle timeout (3 s) ends it.
            let limit = target.duration("transport", "idle_timeout") + MARGIN;
            let addr = target.addr;
            let closures = waves(&target, 20, |wave, i| async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64((wave * 100 + i) as u64);
                let mut garbage = vec![0u8; 4096];
                rng.fill(&mut garbage[..]);
                let mut stream = connect_from(addr, None).await.unwrap();
                if i % 2 == 1 {
                    let status = preface(&mut stream, SecurityMode::Plain).await.unwrap();
                    assert_eq!(status, PrefaceStatus::Accept);
                }
                // The server may close before reading it all.
                let _ = stream.write_all(&garbage).await;
                wait_closed(&mut stream, limit).await.0
            })
            .await;
            closures.check("garbage", limit);
        },
    );
}

/// Frame headers declaring a body over the limit (data frame over
/// `max_frame_len`, control frame over 4 KiB): closed at the header,
/// without reserving memory for the declared body.
#[test]
fn header_over_the_limit() {
    let settings = Settings::attack_defaults();
    let max = settings.number("transport", "max_frame_len") as u32;
    let bound = 20 * IDLE_CONNECTION;
    run_case(
        Case::new("oversized header", "plain", settings)
            .bound(bound, "20 idle connections x 144 KiB"),
        |target| async move {
            let headers: Vec<[u8; 6]> = vec![
                Header {
                    len: max + 1,
                    kind: FrameKind::Data,
                    compression: Compression::None,
                    flags: DataFlags::NONE,
                }
                .to_bytes(),
                Header {
                    len: u32::MAX,
                    kind: FrameKind::Data,
                    compression: Compression::None,
                    flags: DataFlags::NONE,
                }
                .to_bytes(),
                Header {
                    len: 5000,
                    kind: FrameKind::Ping,
                    compression: Compression::None,
                    flags: DataFlags::NONE,
                }
                .to_bytes(),
                Header {
                    len: 8192,
                    kind: FrameKind::Error,
                    compression: Compression::None,
                    flags: DataFlags::NONE,
                }
                .to_bytes(),
            ];
            let addr = target.addr;
            let closures = waves(&target, 20, |_, i| {
                let header = headers[i % headers.len()];
                async move {
                    let mut stream = connect_from(addr, None).await.unwrap();
                    preface(&mut stream, SecurityMode::Plain).await.unwrap();
                    let _ = stream.write_all(&header).await;
                    // Some body bytes, as a real sender would start sending.
                    let _ = stream.write_all(&[0; 1024]).await;
                    wait_closed(&mut stream, MARGIN).await.0
                }
            })
            .await;
            closures.check("oversized header", MARGIN);
        },
    );
}

/// A frame cut short, then silence: closed by the heartbeat (the server
/// pings every 1 s and gives up after 2 silent intervals) or the idle
/// timeout (3 s), whichever comes first.
#[test]
fn truncated_frame_then_silence() {
    let settings = Settings::attack_defaults();
    let bound = 100 * (IDLE_CONNECTION + 1000);
    run_case(
        Case::new("truncated frame", "plain", settings)
            .bound(bound, "100 idle connections x 145 KiB"),
        |target| async move {
            let limit = target.duration("transport", "idle_timeout") + MARGIN;
            let mut tasks = JoinSet::new();
            for i in 0..100 {
                let addr = target.addr;
                tasks.spawn(async move {
                    let mut stream = connect_from(addr, None).await.unwrap();
                    preface(&mut stream, SecurityMode::Plain).await.unwrap();
                    let frame = echo_frame(i + 1, &"x".repeat(1000));
                    // The header and part of the body, then nothing.
                    stream
                        .write_all(&frame[..10 + (i as usize % 500)])
                        .await
                        .unwrap();
                    wait_closed(&mut stream, limit).await.0
                });
            }
            let mut closures = Closures::default();
            while let Some(joined) = tasks.join_next().await {
                closures.add(joined.unwrap());
            }
            closures.check("truncated frame", limit);
        },
    );
}

/// A compressed data frame whose body is `compressed` with its declared
/// length replaced by `declared`.
fn bomb(algorithm: Compression, expanded: usize, declared: u32) -> Bytes {
    let mut codec = Codec::new(CompressConfig::default());
    let mut body = BytesMut::new();
    codec
        .compress_into(algorithm, &vec![0; expanded], &mut body)
        .unwrap();
    body[..4].copy_from_slice(&declared.to_be_bytes());
    let frame = Frame::Data(Data {
        compression: algorithm,
        ..Data::plain(body.freeze())
    });
    frame_bytes(&frame).freeze()
}

/// Decompression bombs: tiny compressed bodies that expand past what they
/// declare, or declare more than `max_frame_len`. The server decompresses
/// into exactly the declared length, at most its limit, and closes.
#[test]
fn decompression_bomb() {
    let settings = Settings::attack_defaults();
    let max = settings.number("transport", "max_frame_len") as u32;
    // Each connection holds at most its frame in progress (1 MiB + a read
    // chunk) and one decompression buffer (the declared length, at most 1 MiB).
    let bound = 10 * (IDLE_CONNECTION + 3 * (1 << 20));
    let explain = "10 connections x (144 KiB + 1 MiB frame + 1 MiB output + 1 MiB spare)";
    let bombs = [
        bomb(Compression::Zstd, 64 << 20, max),
        bomb(Compression::Zstd, 16 << 20, 64),
        bomb(Compression::Zstd, 1 << 20, u32::MAX),
        bomb(Compression::Lz4, 16 << 20, max),
        bomb(Compression::Lz4, 1 << 20, max + 1),
    ];
    for b in &bombs {
        assert!(
            b.len() < 128 << 10,
            "a bomb must be small: {} bytes",
            b.len()
        );
    }
    run_case(
        Case::new("decompression bomb", "plain", settings).bound(bound, explain),
        |target| {
            let bombs = bombs.clone();
            async move {
                // The server does decompress: a valid compressed request is answered.
                {
                    let mut stream = connect_from(target.addr, None).await.unwrap();
                    preface(&mut stream, SecurityMode::Plain).await.unwrap();
                    let text = "compressible ".repeat(200);
                    let plain = echo_frame(1, &text);
                    let mut codec = Codec::new(CompressConfig::default());
                    let data = codec
                        .compress(Compression::Zstd, Bytes::copy_from_slice(&plain[6..]))
                        .unwrap();
                    assert_eq!(data.compression, Compression::Zstd);
                    stream
                        .write_all(&frame_bytes(&Frame::Data(data)))
                        .await
                        .unwrap();
                    let mut reply = vec![0; plain.len()];
                    stream.read_exact(&mut reply).await.unwrap();
                    assert_eq!(reply, plain[..]);
                }
                let addr = target.addr;
                let closures = waves(&target, 10, |_, i| {
                    let bomb = bombs[i % bombs.len()].clone();
                    async move {
                        let mut stream = connect_from(addr, None).await.unwrap();
                        preface(&mut stream, SecurityMode::Plain).await.unwrap();
                        let _ = stream.write_all(&bomb).await;
                        let (end, received) = wait_closed(&mut stream, MARGIN).await;
                        // Nothing is answered (at most an error frame).
                        assert!(received < 4096 + 6, "{received} bytes answered to a bomb");
                        end
                    }
                })
                .await;
                closures.check("decompression bomb", MARGIN);
            }
        },
    );
}

/// Replayed handshakes sent at once. The server refuses a replayed first
/// message before it computes anything expensive (its ephemeral public key is
/// derived only when sent), on its handshake thread; a debug build still pays
/// milliseconds per connection for its unoptimised dependencies, where 20 at
/// once would only measure the debug build.
const REPLAYS_PER_WAVE: usize = if cfg!(debug_assertions) { 2 } else { 20 };

/// A recorded Noise handshake replayed verbatim: the server's replay cache
/// rejects the first message, so it never answers it.
#[test]
fn replayed_noise_handshake() {
    let settings = Settings::attack_defaults();
    let bound = 20 * (IDLE_CONNECTION + 70_000);
    run_case(
        Case::new("replayed handshake", "noise", settings).bound(
            bound,
            "20 connections x (144 KiB + a 64 KiB handshake message)",
        ),
        |target| async move {
            let key = target.key.unwrap();
            let mut genuine = RawNoise::connect(target.addr, key).await;
            let record = genuine.seal(&echo_frame(1, "genuine"));
            genuine.stream.write_all(&record).await.unwrap();
            let (reply, _) = genuine
                .read_plaintext(echo_frame(1, "genuine").len(), MARGIN)
                .await;
            assert_eq!(reply, echo_frame(1, "genuine"));
            let recorded = genuine.sent.clone();
            drop(genuine);
            let addr = target.addr;
            let closures = waves(&target, REPLAYS_PER_WAVE, |_, _| {
                let recorded = recorded.clone();
                async move {
                    let mut stream = connect_from(addr, None).await.unwrap();
                    let _ = stream.write_all(&recorded).await;
                    let (end, received) = wait_closed(&mut stream, MARGIN).await;
                    // The preface answer, and nothing of the handshake.
                    assert!(received <= 8, "the server answered a replayed handshake");
                    end
                }
            })
            .await;
            closures.check("replayed handshake", MARGIN);
        },
    );
}

/// Whether `plaintext` holds a data frame (an answer).
fn has_data_frame(plaintext: &BytesMut) -> bool {
    let mut buf = plaintext.clone();
    let mut decoder = Decoder::default();
    while let Ok(Some(frame)) = decoder.decode(&mut buf) {
        if matches!(frame, Frame::Data(_)) {
            return true;
        }
    }
    false
}

/// Bit-flipped, replayed and reordered Noise records on established
/// sessions: the first bad record ends the connection, unanswered.
#[test]
fn tampered_noise_records() {
    let settings = Settings::attack_defaults();
    let bound = 30 * (IDLE_CONNECTION + 2 * 70_000);
    run_case(
        Case::new("tampered records", "noise", settings)
            .bound(bound, "30 connections x (144 KiB + two 64 KiB records)"),
        |target| async move {
            let key = target.key.unwrap();
            let addr = target.addr;
            // Each wave: one bit-flipped, one replayed, one reordered.
            let closures = waves(&target, 3, |flip_at, kind| async move {
                let mut s = RawNoise::connect(addr, key).await;
                let first = echo_frame(1, "first");
                let r0 = s.seal(&first);
                let r1 = s.seal(&echo_frame(2, "second"));
                match kind {
                    // A valid record, answered; then a bit flipped in the next.
                    0 => {
                        s.stream.write_all(&r0).await.unwrap();
                        let (reply, _) = s.read_plaintext(first.len(), MARGIN).await;
                        assert!(has_data_frame(&reply), "no answer to a valid record");
                        let mut bad = r1.clone();
                        let at = 2 + flip_at % (bad.len() - 2);
                        bad[at] ^= 1 << (flip_at % 8);
                        let _ = s.stream.write_all(&bad).await;
                    }
                    // A valid record, answered; then the same record again.
                    1 => {
                        s.stream.write_all(&r0).await.unwrap();
                        let (reply, _) = s.read_plaintext(first.len(), MARGIN).await;
                        assert!(has_data_frame(&reply), "no answer to a valid record");
                        let _ = s.stream.write_all(&r0).await;
                    }
                    // Two records in the wrong order.
                    _ => {
                        let _ = s.stream.write_all(&r1).await;
                        let _ = s.stream.write_all(&r0).await;
                    }
                }
                let start = Instant::now();
                let (after, closed) = s.read_plaintext(usize::MAX, MARGIN).await;
                assert!(
                    !has_data_frame(&after),
                    "a tampered record was answered (case {kind})"
                );
                if closed {
                    End::Closed(start.elapsed())
                } else {
                    End::Open
                }
            })
            .await;
            closures.check("tampered records", MARGIN);
        },
    );
}

/// The default configuration, as the server has it.
fn defaults() -> netproto_daemon::ServerConfig {
    netproto_daemon::NetworkConfig::default().server
}

/// Keeps `sockets` attacking connections open for the whole case (at least
/// `at_least`), from the 64 addresses of [`attacker`] in turn (or from
/// `from` when given), each replaced at once when the server closes it:
/// `connection(stream)` does what one attacking connection does, until the
/// server closes it.
async fn hold<F, Fut>(
    target: &Target,
    sockets: usize,
    from: Option<IpAddr>,
    at_least: Duration,
    connection: F,
) -> Closures
where
    F: Fn(tokio::net::TcpStream) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = End> + Send + 'static,
{
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..sockets {
        let target = target.clone();
        let connection = connection.clone();
        tasks.spawn(async move {
            let mut closures = Closures::default();
            while started.elapsed() < at_least || target.keep_going(started) {
                let source = from.unwrap_or_else(|| attacker(i));
                let Ok(stream) = connect_from(target.addr, Some(source)).await else {
                    // Out of local ports or descriptors for a moment.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let end = connection(stream).await;
                closures.add(end);
                if end == End::Open {
                    break;
                }
            }
            closures
        });
    }
    let mut all = Closures::default();
    while let Some(joined) = tasks.join_next().await {
        let closures = joined.unwrap();
        all.count += closures.count;
        all.open += closures.open;
        all.slowest = all.slowest.max(closures.slowest);
    }
    all
}

/// A connection that sends nothing, until the server closes it (at most
/// `limit`).
async fn silent(mut stream: tokio::net::TcpStream, limit: Duration) -> End {
    let (end, received) = wait_closed(&mut stream, limit).await;
    expect(received == 0, || {
        "the server answered a preface it never got".into()
    });
    end
}

/// 5,000 sockets that connect and send nothing, from 64 addresses, each
/// replaced at once when closed (for at least two preface timeouts), with
/// the default configuration: they fit in `max_pending` (8,192) and an
/// address's `max_pending_per_ip` (128), so each costs a task and a socket
/// until the preface timeout (2 s) closes it, and the fresh client, which
/// sends its preface at once, gets in beside them.
#[test]
fn silent_sockets() {
    let bound = 5000 * TASK;
    run_case(
        Case::new("silent sockets", "noise", Settings::default())
            .bound(bound, "5,000 pending sockets x 16 KiB")
            .fresh(Fresh::NoFailure),
        |target| async move {
            let limit = defaults().preface_timeout + MARGIN;
            let replaced_twice = defaults().preface_timeout * 2 + Duration::from_secs(1);
            let closures = hold(&target, 5000, None, replaced_twice, move |stream| {
                silent(stream, limit)
            })
            .await;
            closures.check("silent sockets", limit);
        },
    );
}

/// 1,000 sockets that dribble the preface one byte a second, from 64
/// addresses, each replaced at once when closed (for at least two preface
/// timeouts), with the default configuration: the preface timeout (2 s)
/// closes each after 2 bytes.
#[test]
fn dribbling_sockets() {
    let bound = 1000 * TASK;
    run_case(
        Case::new("dribbling sockets", "noise", Settings::default())
            .bound(bound, "1,000 pending sockets x 16 KiB")
            .fresh(Fresh::NoFailure),
        |target| async move {
            let limit = defaults().preface_timeout + MARGIN;
            let replaced_twice = defaults().preface_timeout * 2 + Duration::from_secs(1);
            let closures = hold(
                &target,
                1000,
                None,
                replaced_twice,
                move |mut stream| async move {
                    let start = Instant::now();
                    let preface = Preface::new(SecurityMode::Noise).to_bytes();
                    let mut buf = [0; 64];
                    for byte in preface {
                        if stream.write_all(&[byte]).await.is_err() {
                            return End::Closed(start.elapsed());
                        }
                        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf))
                            .await
                        {
                            Ok(Ok(0) | Err(_)) => return End::Closed(start.elapsed()),
                            Ok(Ok(_)) => {
                                expect(false, || {
                                    "the server answered a preface it never got whole".into()
                                });
                                return End::Closed(start.elapsed());
                            }
                            Err(_) if start.elapsed() >= limit => return End::Open,
                            Err(_) => {}
                        }
                    }
                    panic!("a preface dribbled over 8 s was not closed");
                },
            )
            .await;
            closures.check("dribbling sockets", limit);
        },
    );
}

/// The preface and the first Noise handshake message, then silence: the
/// server has answered with its own message (its Diffie-Hellman work done)
/// and waits for the third.
async fn half_open(mut stream: tokio::net::TcpStream, limit: Duration) -> End {
    let start = Instant::now();
    let prologue = Preface::new(SecurityMode::Noise).to_bytes();
    match preface(&mut stream, SecurityMode::Noise).await {
        Ok(PrefaceStatus::Accept) => {}
        Ok(status) => {
            expect(false, || {
                format!("a half-open handshake was refused at the preface: {status:?}")
            });
            return End::Closed(start.elapsed());
        }
        Err(_) => return End::Closed(start.elapsed()),
    }
    let mut initiator = SessionBuilder::new(Keypair::generate(&mut rand::rngs::OsRng))
        .prologue(&prologue)
        .build_initiator(&mut rand::rngs::OsRng)
        .unwrap();
    let mut out = BytesMut::new();
    initiator.write_message(now_ms(), &mut out).unwrap();
    if stream.write_all(&out).await.is_err() {
        return End::Closed(start.elapsed());
    }
    match wait_closed(&mut stream, limit).await.0 {
        End::Closed(_) => End::Closed(start.elapsed()),
        End::Open => End::Open,
    }
}

/// 2,000 half-open Noise handshakes (message 0 sent, message 2 never) from
/// 64 addresses, held until the server closes them, with the default
/// configuration: each costs the server the Diffie-Hellman work of its
/// answer on the handshake thread, and a task and a socket until the
/// handshake timeout (10 s) closes it. Past `max_pending` they would evict
/// each other, the longest stalled first (the unit tests of admission and
/// `silent_sockets_are_evicted_for_new_clients` check eviction).
#[test]
fn half_open_noise_handshakes() {
    let bound = 2000 * TASK;
    run_case(
        Case::new("half-open handshakes", "noise", Settings::default())
            .bound(bound, "2,000 pending handshakes x 16 KiB"),
        |target| async move {
            let limit = defaults().connection_timeout + MARGIN;
            let closures = hold(&target, 2000, None, Duration::ZERO, move |stream| {
                half_open(stream, limit)
            })
            .await;
            closures.check("half-open handshakes", limit);
        },
    );
}

/// Complete Noise handshakes, each followed by a close, as fast as 4
/// attacking tasks can make them, from 4 addresses, with the default
/// configuration: past `handshake_rate_per_ip` (20 a second) each address
/// is refused "busy", answered only once its bucket has a token again, so
/// that looping on refusals gains the attacker nothing.
#[test]
fn complete_handshake_flood() {
    run_case(
        Case::new("complete handshakes", "noise", Settings::default())
            .bound(4 * IDLE_CONNECTION, "4 connections x 144 KiB"),
        |target| async move {
            let counts = complete_handshakes(
                &target,
                &[attacker(0), attacker(1), attacker(2), attacker(3)],
            )
            .await;
            println!(
                "complete handshakes: {} completed, {} refused busy",
                counts.0, counts.1
            );
            assert!(counts.0 > 0, "no attacking handshake completed");
            expect(counts.1 > 0, || {
                "no attacking handshake was refused past the rate".into()
            });
        },
    );
}

/// One task per address in `from`, each completing Noise handshakes (and
/// closing) as fast as it can until the case ends; returns how many
/// completed and how many were refused.
async fn complete_handshakes(target: &Target, from: &[IpAddr]) -> (usize, usize) {
    let key = target.key.unwrap();
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for source in from.iter().copied() {
        let target = target.clone();
        tasks.spawn(async move {
            let (mut completed, mut refused) = (0, 0);
            while target.keep_going(started) {
                let Ok(stream) = connect_from(target.addr, Some(source)).await else {
                    continue;
                };
                // Refused "busy" past the rate; from a shared address, also
                // evicted or closed while its pending place was taken.
                match RawNoise::handshake(stream, key).await {
                    Ok(_) => completed += 1,
                    Err(_) => refused += 1,
                }
            }
            (completed, refused)
        });
    }
    let mut total = (0, 0);
    while let Some(joined) = tasks.join_next().await {
        let (completed, refused) = joined.unwrap();
        total.0 += completed;
        total.1 += refused;
    }
    total
}

/// An attacker on the fresh client's own address: 300 silent sockets,
/// replaced when closed, and 2 tasks completing handshakes as fast as they
/// can. Measured, not judged: the address's limits are the attacker's too.
/// Past its `max_pending_per_ip` (128) the address's newcomers are refused
/// "busy" (a refusal waits for the preface, so the silent ones are held up
/// to the preface timeout instead of churning), and its handshakes count
/// against one rate.
#[test]
fn attacker_sharing_the_clients_address() {
    let shared = IpAddr::V4(Ipv4Addr::new(127, 1, 0, 1));
    let mut case = Case::new("shared address", "noise", Settings::default())
        .bound(
            300 * TASK + 2 * IDLE_CONNECTION,
            "300 pending sockets x 16 KiB + 2 connections x 144 KiB",
        )
        .fresh(Fresh::Measured(
            "the attacker shares its address, and so its limits",
        ));
    case.fresh_sources = vec![shared];
    // 10 a second, within the address's handshake rate while it is quiet.
    case.fresh_every = Duration::from_millis(100);
    run_case(case, |target| async move {
        let limit = defaults().preface_timeout + MARGIN;
        let sources = [shared, shared];
        let handshakes = complete_handshakes(&target, &sources);
        let silent = hold(&target, 300, Some(shared), Duration::ZERO, move |stream| {
            silent(stream, limit)
        });
        let ((completed, refused), closures) = tokio::join!(handshakes, silent);
        println!(
            "shared address: {completed} attacking handshakes completed, {refused} refused busy"
        );
        closures.check("shared address silent sockets", limit);
    });
}

/// Peers that send requests and never read the answers: the server's send
/// queue and inbound queue fill, it stops reading, and the write timeout
/// (2 s) closes the connection.
#[test]
fn peer_that_never_reads() {
    let settings = Settings::attack_defaults()
        .set("server", "backpressure_limit", "16")
        .set("transport", "inbound_limit", "16");
    // inbound_limit x max_frame_len + write batch (512 KiB, the default
    // write_batch_bytes) and one frame + the frame in progress and a read
    // chunk, per connection.
    let per_connection =
        TASK + 16 * (1 << 20) + (512 << 10) + (1 << 20) + (1 << 20) + READ_CHUNK as u64;
    let bound = 4 * per_connection;
    let explain =
        "4 connections x (16 x 1 MiB inbound + 512 KiB + 1 MiB send + 1 MiB + 64 KiB read)";
    run_case(
        Case::new("never reads", "plain", settings).bound(bound, explain),
        |target| async move {
            let write_timeout = target.duration("transport", "write_timeout");
            let limit = write_timeout + MARGIN;
            let mut tasks = JoinSet::new();
            for c in 0..4u64 {
                let addr = target.addr;
                tasks.spawn(async move {
                    let mut stream = connect_from(addr, None).await.unwrap();
                    preface(&mut stream, SecurityMode::Plain).await.unwrap();
                    let payload = "y".repeat(60 << 10);
                    // When the last stall began: the server's writer stalled
                    // before ours (its answers fill our receive buffer first).
                    let mut stalled: Option<Instant> = None;
                    let mut sent = 0u64;
                    loop {
                        let frame = echo_frame(c * 1_000_000 + sent + 1, &payload);
                        let write = stream.write_all(&frame);
                        tokio::pin!(write);
                        loop {
                            tokio::select! {
                                written = &mut write => match written {
                                    Ok(()) => {
                                        sent += 1;
                                        stalled = None;
                                        break;
                                    }
                                    // Reset by the server: closed.
                                    Err(_) => {
                                        let after = stalled.map_or(Duration::ZERO, |s| s.elapsed());
                                        return (sent, End::Closed(after));
                                    }
                                },
                                () = tokio::time::sleep(Duration::from_millis(200)) => {
                                    let since = *stalled.get_or_insert_with(Instant::now);
                                    if since.elapsed() >= limit {
                                        return (sent, End::Open);
                                    }
                                }
                            }
                        }
                    }
                });
            }
            let mut closures = Closures::default();
            while let Some(joined) = tasks.join_next().await {
                let (sent, end) = joined.unwrap();
                println!("never reads: {sent} requests of 60 KiB sent before the stall");
                closures.add(end);
            }
            closures.check("never reads (after the stall)", limit);
        },
    );
}

/// Not an attack on the server: a control. The attacker churns connections
/// as the connection-heavy cases do (waves of 20 connects and closes), but
/// against a listener of its own, so that the server never sees them. What
/// this does to the legitimate client's latency is what the machine's kernel
/// and scheduler cost by themselves when attacker and server share its
/// cores; the cases above add the server's work on top.
#[test]
fn control_churn_the_server_never_sees() {
    run_case(
        Case::new("control churn", "plain", Settings::attack_defaults())
            .bound(0, "nothing: the server is not involved"),
        |target| async move {
            let own = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let own_addr = own.local_addr().unwrap();
            let accepted = Arc::new(AtomicUsize::new(0));
            let counting = accepted.clone();
            let accepting = tokio::spawn(async move {
                while let Ok((stream, _)) = own.accept().await {
                    counting.fetch_add(1, Ordering::Relaxed);
                    drop(stream);
                }
            });
            let closures = waves(&target, 20, move |_, _| async move {
                let mut stream = connect_from(own_addr, None).await.unwrap();
                let _ = stream.write_all(b"not for the server").await;
                wait_closed(&mut stream, MARGIN).await.0
            })
            .await;
            accepting.abort();
            closures.check("control churn", MARGIN);
            assert_eq!(
                accepted.load(Ordering::Relaxed),
                closures.count,
                "the attacker's own listener took every connection"
            );
        },
    );
}
