//! Scale: 10,000 concurrent idle plain-TCP connections to a real
//! `netproto serve` child process. Measures the server's memory per
//! connection (target: at most 16 KiB) and checks that the server still
//! answers a legitimate client while they are open.
//!
//! It runs in `cargo xtask stress` (built only with the `stress` feature):
//! `cargo test --release -p netproto-daemon --features stress --test scale -- --nocapture`
//! prints the figures (14.5 KiB per connection measured). It skips itself,
//! saying why, when `NETPROTO_SCALE=0` is set, and when the open-file limit
//! cannot be raised high enough for 10,000 sockets on each side.

// Memory and sockets are read from /proc, and connections come from several
// 127.0.0.x addresses: Linux only.
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

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use netproto_daemon::Client;
use netproto_wire::{Message, PrefaceStatus, SecurityMode};
use support::{ServerProcess, Settings, connect_from, preface, serial};
use tokio::task::JoinSet;

const CONNECTIONS: usize = 10_000;
/// Source addresses the connections come from (all loopback), so that no
/// single address passes the per-IP limit (1,000 by default).
const SOURCES: usize = 20;
/// Connections opened at once: 10 from each source, below
/// `max_pending_per_ip` (64 by default).
const BATCH: usize = 200;
/// Target memory per idle plain-TCP connection: 16 KiB (measured 14.5 KiB
/// since the serving loop's rare paths are boxed and the metrics wrapper no
/// longer holds the serving future twice; 17.2 KiB before).
const PER_CONNECTION: u64 = 16 << 10;
/// Sockets and descriptors each process needs besides the connections.
const SPARE_FILES: u64 = 256;

#[test]
fn ten_thousand_idle_connections() {
    if std::env::var_os("NETPROTO_SCALE").is_some_and(|v| v == "0") {
        println!("skipped: NETPROTO_SCALE=0");
        return;
    }
    let _serial = serial();
    let limit = support::raise_file_limit();
    if limit < CONNECTIONS as u64 + SPARE_FILES {
        println!(
            "skipped: the open-file limit is {limit} and cannot be raised to {} (raise the hard limit, e.g. `ulimit -Hn 20000`, and run `cargo test --release -p netproto-daemon --features stress --test scale -- --nocapture`)",
            CONNECTIONS as u64 + SPARE_FILES
        );
        return;
    }
    let settings = Settings::default()
        .set("server", "max_connections", "10100")
        // 500 connections from each source, opened as fast as they can be:
        // far past the default handshake rates, which this test is not about.
        .set("server", "handshake_rate_per_ip", "1000000")
        .set("server", "handshake_rate_per_prefix", "1000000")
        // No heartbeat traffic while the connections sit idle.
        .set("server", "heartbeat_interval", "\"60s\"");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut server = ServerProcess::start("plain", &settings);
        let client = Client::connect(server.client_config()).await.unwrap();
        let echo = Message::Echo("before".into());
        assert_eq!(client.request(&echo).await.unwrap(), echo);
        let sockets_before = server.open_sockets();
        let rss_before = server.rss();
        let opening = Instant::now();
        let mut streams = Vec::with_capacity(CONNECTIONS);
        while streams.len() < CONNECTIONS {
            let mut batch = JoinSet::new();
            for i in streams.len()..(streams.len() + BATCH).min(CONNECTIONS) {
                let addr = server.addr;
                let source = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1 + (i % SOURCES) as u8));
                batch.spawn(async move {
                    let mut stream = connect_from(addr, Some(source)).await.unwrap();
                    let status = preface(&mut stream, SecurityMode::Plain).await.unwrap();
                    assert_eq!(status, PrefaceStatus::Accept, "connection {i} refused");
                    stream
                });
            }
            while let Some(stream) = batch.join_next().await {
                streams.push(stream.unwrap());
            }
        }
        let opened_in = opening.elapsed();
        // Let the server settle: every connection's tasks have started,
        // after the server waited 1 s for a first frame that does not come.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let sockets = server.open_sockets();
        let rss_with = server.rss();
        let per_connection = rss_with.saturating_sub(rss_before) / CONNECTIONS as u64;
        // The server still answers, with every connection open.
        let mut slowest = Duration::ZERO;
        for i in 0..20 {
            let echo = Message::Echo(format!("with {CONNECTIONS} open: {i}"));
            let started = Instant::now();
            let reply = tokio::time::timeout(Duration::from_secs(5), client.request(&echo))
                .await
                .expect("the server answers while 10,000 connections are open")
                .unwrap();
            assert_eq!(reply, echo);
            slowest = slowest.max(started.elapsed());
        }
        println!(
            "scale: {CONNECTIONS} idle plain-TCP connections opened in {opened_in:?}; server sockets {sockets_before} -> {sockets}; RSS {:.1} MiB -> {:.1} MiB: {per_connection} bytes ({:.1} KiB) per connection (target {} KiB); slowest of 20 requests meanwhile {slowest:?}",
            rss_before as f64 / f64::from(1 << 20),
            rss_with as f64 / f64::from(1 << 20),
            per_connection as f64 / 1024.0,
            PER_CONNECTION / 1024,
        );
        assert!(sockets >= sockets_before + CONNECTIONS, "the server holds {sockets} sockets");
        assert!(
            per_connection <= PER_CONNECTION,
            "{per_connection} bytes per idle connection, target {PER_CONNECTION}"
        );
        drop(streams);
        let left = server
            .wait_sockets_at_most(sockets_before, Duration::from_secs(10))
            .await;
        assert!(left <= sockets_before, "the server still holds {left} sockets");
        client.close().await.unwrap();
        server.assert_healthy();
    });
}
