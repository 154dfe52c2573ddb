//! A client whose server dies, or stops answering, fails fast and says so:
//! the `netproto serve` child process is killed (`SIGKILL`) or stopped
//! (`SIGSTOP`) under load, on loopback.
//!
//! - Requests in flight fail at once with the lost connection; against a
//!   stopped server, at their response timeout.
//! - Every request that needs the connection meanwhile waits for one shared
//!   reconnection round, which follows the configured backoff and attempts
//!   and ends in one clear error; no request waits longer than its timeout.
//! - `netproto bench` ends within its duration plus one response timeout
//!   (plus a margin for starting processes), and accounts for every request
//!   it sent: answered, or failed by kind.

// Integration test: a failed unwrap, expect, panic or index is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stdout
)]

mod support;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netproto_daemon::{Client, Error, NetworkConfig};
use netproto_wire::Message;
use support::{ServerProcess, Settings, serial};

/// Margin for starting the bench process and connecting (debug build, two
/// cores shared with other tests).
const SLACK: Duration = Duration::from_secs(5);

/// A client configuration for `server`, reconnecting `attempts` times with
/// backoff from `delay`, each request within `timeout`.
fn client_config(
    server: &ServerProcess,
    attempts: u32,
    delay: Duration,
    timeout: Duration,
) -> NetworkConfig {
    let mut config = server.client_config();
    config.client.auto_reconnect = true;
    config.client.max_reconnect_attempts = attempts;
    config.client.reconnect_delay = delay;
    config.client.response_timeout = timeout;
    config
}

/// Sends `n` echo requests at once; returns their results and when each
/// ended.
async fn burst(client: &Arc<Client>, n: usize) -> Vec<(Result<Message, Error>, Instant)> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let result = client.request(&Message::Echo(format!("r{i}"))).await;
                (result, Instant::now())
            })
        })
        .collect();
    let mut results = Vec::with_capacity(n);
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

/// Runs `test` on a runtime of its own, one test at a time.
fn run(test: impl Future<Output = ()>) {
    let _serial = serial();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(test);
}

#[test]
fn requests_fail_at_once_when_the_server_dies_and_reconnection_gives_up_once() {
    run(server_dies());
}

async fn server_dies() {
    let server = ServerProcess::start("plain", &Settings::default());
    let config = client_config(
        &server,
        3,
        Duration::from_millis(100),
        Duration::from_secs(10),
    );
    let client = Arc::new(Client::connect(config.clone()).await.unwrap());
    // A client whose timeout is shorter than its reconnection backoff.
    let mut impatient = config.clone();
    impatient.client.response_timeout = Duration::from_millis(300);
    impatient.client.reconnect_delay = Duration::from_secs(5);
    let impatient = Client::connect(impatient).await.unwrap();
    let hello = Message::Echo("hello".into());
    assert_eq!(client.request(&hello).await.unwrap(), hello);
    assert_eq!(impatient.request(&hello).await.unwrap(), hello);

    // Stopped, the server reads nothing: the requests stay in flight.
    server.signal("STOP");
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { burst(&client, 32).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = Instant::now();
    drop(server); // SIGKILL, and waits for the process to end
    let results = tokio::time::timeout(Duration::from_secs(20), in_flight)
        .await
        .unwrap()
        .unwrap();
    for (result, at) in &results {
        assert!(
            matches!(
                result,
                Err(Error::Dispatch(netproto_dispatch::Error::Disconnected(_)))
            ),
            "{result:?}"
        );
        // At once, not at the 10 s response timeout.
        let after = at.saturating_duration_since(killed);
        assert!(
            after < Duration::from_secs(5),
            "failed {after:?} after the kill"
        );
    }

    // The requests that need the connection now share one reconnection
    // round: three attempts, refused, with backoff between them.
    let start = Instant::now();
    let results = burst(&client, 16).await;
    let round = start.elapsed();
    let mut lasts = Vec::new();
    for (result, _) in results {
        match result {
            Err(Error::GaveUp { attempts, last }) => {
                assert_eq!(attempts, 3);
                assert!(
                    matches!(&*last, Error::Transport(netproto_transport::Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused),
                    "{last:?}"
                );
                lasts.push(last);
            }
            other => panic!("expected the reconnection to give up: {other:?}"),
        }
    }
    assert!(
        lasts.iter().all(|last| Arc::ptr_eq(last, &lasts[0])),
        "the requests did not share one reconnection"
    );
    // Waits of 100 ms and 200 ms (and jitter) between the three attempts.
    assert!(round >= Duration::from_millis(300), "{round:?}");
    // The request after that starts a new round.
    match client.request(&hello).await {
        Err(Error::GaveUp { attempts: 3, last }) => assert!(!Arc::ptr_eq(&last, &lasts[0])),
        other => panic!("expected a new round to give up: {other:?}"),
    }

    // The impatient client learns that its connection is gone, then waits
    // for a reconnection no longer than its response timeout.
    let lost = impatient.request(&hello).await;
    assert!(
        matches!(
            lost,
            Err(Error::Dispatch(netproto_dispatch::Error::Disconnected(_)))
        ),
        "{lost:?}"
    );
    let start = Instant::now();
    let waited = impatient.request(&hello).await;
    assert!(
        matches!(waited, Err(Error::Dispatch(netproto_dispatch::Error::Timeout(t))) if t == Duration::from_millis(300)),
        "{waited:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // Closing stops the round under way.
    impatient.close().await.unwrap();
}

#[test]
fn requests_to_a_stopped_server_fail_at_their_timeout() {
    run(server_stops());
}

async fn server_stops() {
    let server = ServerProcess::start("plain", &Settings::default());
    let timeout = Duration::from_secs(1);
    let config = client_config(&server, 1, Duration::from_millis(100), timeout);
    let client = Arc::new(Client::connect(config).await.unwrap());
    server.signal("STOP");
    let start = Instant::now();
    let results = burst(&client, 16).await;
    for (result, at) in &results {
        assert!(
            matches!(result, Err(Error::Dispatch(netproto_dispatch::Error::Timeout(t))) if *t == timeout),
            "{result:?}"
        );
        let after = at.duration_since(start);
        assert!(after >= timeout && after < timeout + SLACK, "{after:?}");
    }
    server.signal("CONT");
    drop(server);
}

/// Runs `netproto bench --json` against a new server for `duration` with
/// `timeout` as the response timeout, sending `signal_name` to the server
/// (`KILL`: killing it) after `after`. Checks that the bench ended within
/// its duration plus one timeout (and [`SLACK`]), and that it counted every
/// request it sent once, over the window asked for; returns its errors by
/// kind.
fn bench_while(
    signal_name: &str,
    duration: Duration,
    timeout: Duration,
    after: Duration,
) -> serde_json::Map<String, serde_json::Value> {
    let server = ServerProcess::start("plain", &Settings::default());
    bench_against(server, signal_name, duration, timeout, after, &[]).kinds
}

/// What [`bench_against`] saw.
struct BenchRun {
    /// The bench's errors by kind.
    kinds: serde_json::Map<String, serde_json::Value>,
    /// The server, unless it was killed.
    server: Option<ServerProcess>,
    /// When the server was signalled.
    signalled: Instant,
    /// When the server was seen to have exited, if it did during the run.
    exited: Option<Instant>,
}

/// [`bench_while`] against `server`, with `env` for the bench.
fn bench_against(
    server: ServerProcess,
    signal_name: &str,
    duration: Duration,
    timeout: Duration,
    after: Duration,
    env: &[(&str, &str)],
) -> BenchRun {
    let limit = duration + timeout + SLACK;
    let start = Instant::now();
    let mut bench = Command::new(env!("CARGO_BIN_EXE_netproto"))
        .args(["bench", "--json", "--mode", "plain", "--connections", "2"])
        .args(["--in-flight", "16", "--address"])
        .arg(server.addr.to_string())
        .arg("--duration")
        .arg(format!("{}ms", duration.as_millis()))
        .env_remove("RUST_LOG")
        .env(
            "NETPROTO__CLIENT__RESPONSE_TIMEOUT",
            format!("{}ms", timeout.as_millis()),
        )
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read as it comes: a full pipe would stop the bench at its next line.
    let mut stderr_pipe = bench.stderr.take().unwrap();
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr_pipe, &mut text);
        text
    });
    std::thread::sleep(after);
    let signalled = Instant::now();
    let mut server = if signal_name == "KILL" {
        drop(server);
        None
    } else {
        server.signal(signal_name);
        Some(server)
    };
    let mut ran = None;
    let mut exited = None;
    while start.elapsed() < limit + Duration::from_secs(60) {
        if let Some(server) = &mut server
            && exited.is_none()
            && server.exit_within(Duration::ZERO).is_some()
        {
            exited = Some(Instant::now());
        }
        if bench.try_wait().unwrap().is_some() {
            ran = Some(start.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if ran.is_none() {
        let _ = bench.kill();
    }
    let output = bench.wait_with_output().unwrap();
    if let Some(server) = &server
        && signal_name == "STOP"
    {
        server.signal("CONT");
    }
    let stderr = stderr_reader.join().unwrap();
    let Some(ran) = ran else {
        panic!("the bench still ran after {limit:?} and a minute: {stderr}");
    };
    assert!(output.status.success(), "bench failed: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {:?} {stderr}", output.stdout));
    println!("the bench ran {ran:?}: {report}");
    assert!(ran <= limit, "the bench ran {ran:?}: {report}");

    let n = |key: &str| report[key].as_u64().unwrap();
    let kinds = report["errors_by_kind"].as_object().unwrap().clone();
    let by_kind: u64 = kinds.values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(n("sent"), n("ok") + n("errors"), "{report}");
    assert_eq!(n("errors"), by_kind, "{report}");
    assert_eq!(n("ok"), n("requests"), "{report}");
    assert!(n("ok") > 0, "{report}");
    // The window is the duration asked for, whatever the wall time.
    let window = report["seconds"].as_f64().unwrap();
    assert!((window - duration.as_secs_f64()).abs() < 1e-6, "{report}");
    BenchRun {
        kinds,
        server,
        signalled,
        exited,
    }
}

#[test]
fn bench_ends_on_time_and_counts_every_request_when_the_server_is_killed() {
    let _serial = serial();
    let kinds = bench_while(
        "KILL",
        Duration::from_secs(4),
        Duration::from_secs(2),
        Duration::from_millis(1500),
    );
    let lost = kinds["connection_lost"].as_u64().unwrap() + kinds["refused"].as_u64().unwrap();
    assert!(lost > 0, "{kinds:?}");
}

#[test]
fn bench_ends_on_time_and_counts_every_request_when_the_server_stops() {
    let _serial = serial();
    let kinds = bench_while(
        "STOP",
        Duration::from_secs(2),
        Duration::from_secs(1),
        Duration::from_millis(1000),
    );
    assert!(kinds["timeout"].as_u64().unwrap() > 0, "{kinds:?}");
}

#[test]
fn sigterm_under_bench_load_drains_then_exits_0_and_every_request_ends_clearly() {
    let _serial = serial();
    let (drain, shutdown) = (Duration::from_secs(1), Duration::from_secs(2));
    let settings = Settings::default()
        .set("server", "drain_delay", "\"1s\"")
        .set("server", "shutdown_timeout", "\"2s\"");
    let server = ServerProcess::start("plain", &settings);
    // Requests issued once the server is gone fail when their one
    // reconnection attempt is refused, within the run.
    let run = bench_against(
        server,
        "TERM",
        Duration::from_secs(4),
        Duration::from_secs(2),
        Duration::from_millis(1500),
        &[("NETPROTO__CLIENT__MAX_RECONNECT_ATTEMPTS", "1")],
    );
    let kinds = run.kinds;
    let mut server = run.server.unwrap();
    let status = server.exit_within(SLACK).expect("the server did not exit");
    let took = run.exited.unwrap_or_else(Instant::now) - run.signalled;
    println!("SIGTERM under bench: exit {status} after {took:?}; errors {kinds:?}");
    assert!(status.success(), "exit status {status}");
    assert!(took <= drain + shutdown, "the server took {took:?} to exit");
    // Readiness failed first, then the goaway, then the end.
    let log = server.log_lines();
    let at = |text: &str| {
        log.iter()
            .position(|line| line.contains(text))
            .unwrap_or_else(|| panic!("no {text:?} in the log: {log:?}"))
    };
    assert!(at("draining: not ready") < at("\"message\":\"shutting down\""));
    assert!(at("\"message\":\"shutting down\"") < at("\"message\":\"stopped\""));
    // Nothing the bench sent timed out or vanished: a request got its
    // answer, or a clear going-away (or, once the server was gone, a
    // refused reconnection).
    let count = |kind: &str| {
        kinds
            .get(kind)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    for kind in ["timeout", "connection_lost", "remote", "other"] {
        assert_eq!(count(kind), 0, "{kind}: {kinds:?}");
    }
}
