//! A typed 64-byte echo against the untyped `Custom` echo, side by side in
//! one run: one `netproto-daemon` server (Noise, loopback), 4 client
//! connections × 64 requests in flight, rounds of 3 s alternating typed and
//! untyped; prints each round and the medians, and the ratio (issue 17's
//! criterion: typed ≥ 0.9 × untyped).
//!
//! `cargo bench -p netproto-benches --bench typed_echo` (optionally
//! `-- ROUNDS SECONDS`). Not a criterion bench: the figure wanted is the
//! ratio of two throughputs measured under the same conditions.

#![allow(
    missing_docs,
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use netproto_daemon::service::{Context, TypedClient, register, service};
use netproto_daemon::{Client, NetworkConfig, SecurityMode, Server};
use netproto_dispatch::Dispatcher;
use netproto_wire::MessageType;
use serde::{Deserialize, Serialize};

/// A payload serialized as one byte string (length, then the bytes).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Blob(Bytes);

service! {
    /// The benchmark's one method.
    service Bench {
        /// Answers its request.
        Echo = "bench.echo.v1": Blob => Blob;
    }
}

const CONNECTIONS: usize = 4;
const IN_FLIGHT: usize = 64;
const SIZE: usize = 64;

/// Requests answered by all workers of a round within `run_for`.
async fn round(typed: bool, clients: &[(Arc<Client>, TypedClient)], run_for: Duration) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + run_for;
    let raw_type = MessageType::new("RAW_ECHO").unwrap();
    let mut workers = Vec::new();
    for (client, typed_client) in clients {
        for _ in 0..IN_FLIGHT {
            let (client, typed_client, done, raw_type) = (
                client.clone(),
                typed_client.clone(),
                done.clone(),
                raw_type.clone(),
            );
            workers.push(tokio::spawn(async move {
                let payload = Bytes::from(vec![7u8; SIZE]);
                while Instant::now() < until {
                    if typed {
                        let reply = typed_client
                            .call::<Echo>(Blob(payload.clone()))
                            .await
                            .unwrap();
                        assert_eq!(reply.0.len(), SIZE);
                    } else {
                        let reply = client
                            .request_raw(raw_type.clone(), payload.clone())
                            .await
                            .unwrap();
                        assert_eq!(reply.payload.len(), SIZE);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    let started = Instant::now();
    for worker in workers {
        worker.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or_default()
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let seconds: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3.0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dispatcher = Arc::new(Dispatcher::default());
        dispatcher.register("RAW_ECHO", |message| Ok(message.clone()));
        register::<Echo, _, _>(&dispatcher, |_context: Context, blob: Blob| async move { Ok(blob) });
        let mut config = NetworkConfig::default();
        config.server.address = "127.0.0.1:0".into();
        config.security.mode = SecurityMode::Noise;
        config.security.key_file = None;
        let server = Server::bind(config.clone(), dispatcher).await.unwrap();
        config.client.address = server.local_addr();
        config.security.server_key = server.public_key().copied();
        let handle = server.handle();
        let serving = tokio::spawn(server.run());
        let mut clients = Vec::new();
        for _ in 0..CONNECTIONS {
            let client = Arc::new(Client::connect(config.clone()).await.unwrap());
            let typed = client.typed().await.unwrap();
            clients.push((client, typed));
        }
        // Warm both paths up.
        round(true, &clients, Duration::from_millis(500)).await;
        round(false, &clients, Duration::from_millis(500)).await;
        let run_for = Duration::from_secs_f64(seconds);
        let (mut typed, mut untyped) = (Vec::new(), Vec::new());
        for r in 1..=rounds {
            let t = round(true, &clients, run_for).await;
            let u = round(false, &clients, run_for).await;
            println!("round {r}: typed {:.0} req/s, untyped {:.0} req/s, ratio {:.3}", t, u, t / u);
            typed.push(t);
            untyped.push(u);
        }
        let (t, u) = (median(&mut typed), median(&mut untyped));
        println!(
            "typed 64-byte echo, {CONNECTIONS} connections x {IN_FLIGHT} in flight: median {t:.0} req/s; untyped Custom echo: median {u:.0} req/s; typed / untyped {:.3}",
            t / u
        );
        handle.shutdown(Some(Duration::from_secs(2))).await;
        serving.await.unwrap().unwrap();
    });
}
