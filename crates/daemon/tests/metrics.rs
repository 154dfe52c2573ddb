//! The Prometheus endpoint on loopback: known traffic in, the scraped
//! counters must match it.

// Integration test: a failed unwrap, expect, panic or index is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use netproto_daemon::{Client, NetworkConfig, Server};
use netproto_dispatch::Dispatcher;
use netproto_wire::MessageType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: Duration = Duration::from_secs(30);
const CLIENTS: usize = 3;
const REQUESTS: usize = 40;
const SIZE: usize = 1_000;

/// `GET /metrics` over a raw TCP connection; the body of a 200 answer.
async fn scrape(address: SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let length = format!("Content-Length: {}\r\n", body.len());
    assert!(head.contains(&length), "{head}");
    body.to_owned()
}

/// Series (as written, labels included) to values; checks every sample
/// line has a `# TYPE` line for its metric before it.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut typed = Vec::new();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.push(rest.split(' ').next().unwrap().to_owned());
            continue;
        }
        // Blank lines separate metric families.
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let name = series.split('{').next().unwrap();
        assert!(
            typed.iter().any(|t| name.starts_with(t.as_str())),
            "{line} has no # TYPE"
        );
        samples.insert(series.to_owned(), value.parse::<f64>().unwrap());
    }
    samples
}

fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("{series} missing in {samples:?}"))
}

/// Scrapes until `series` reads `want`, or fails after about two seconds.
async fn wait_for(address: SocketAddr, series: &str, want: f64) -> HashMap<String, f64> {
    let mut samples = parse(&scrape(address).await);
    for _ in 0..100 {
        if value(&samples, series) == want {
            return samples;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        samples = parse(&scrape(address).await);
    }
    panic!("{series} never reached {want}: {samples:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_counters_match_the_traffic_sent() {
    tokio::time::timeout(LIMIT, traffic_and_scrape())
        .await
        .unwrap();
}

async fn traffic_and_scrape() {
    let mut config = NetworkConfig::default();
    config.server.address = "127.0.0.1:0".into();
    config.server.metrics_address = Some("127.0.0.1:0".into());
    config.server.max_connections = CLIENTS;
    config.transport.compression = netproto_daemon::Compression::Lz4;
    config.client.auto_reconnect = false;
    let dispatcher = Arc::new(Dispatcher::default());
    dispatcher.register("ECHO", |msg| Ok(msg.clone()));
    let server = Server::bind(config.clone(), dispatcher).await.unwrap();
    let metrics = server.metrics_addr().expect("a metrics address");
    assert_ne!(metrics.port(), 0);
    config.client.address = server.local_addr();
    config.security.server_key = server.public_key().copied();
    let handle = server.handle();
    let task = tokio::spawn(async move { server.run().await.unwrap() });

    // Everything is there from the start, at zero.
    let start = parse(&scrape(metrics).await);
    for series in [
        "netproto_connections_open",
        "netproto_handshakes_completed_total",
        "netproto_connections_refused_total{reason=\"max_connections\"}",
        "netproto_handshakes_failed_total{reason=\"preface\"}",
        "netproto_connection_errors_total{kind=\"timeout_idle\"}",
        "netproto_requests_total{outcome=\"reply\"}",
        "netproto_request_duration_seconds_count",
        "netproto_bytes_received_total",
        "netproto_backpressure_waits_total",
    ] {
        assert_eq!(value(&start, series), 0.0, "{series}");
    }

    // One failed handshake: an HTTP request where a preface belongs.
    let mut stray = tokio::net::TcpStream::connect(config.client.address.as_str())
        .await
        .unwrap();
    stray.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut rest = Vec::new();
    let _ = stray.read_to_end(&mut rest).await;
    wait_for(
        metrics,
        "netproto_handshakes_failed_total{reason=\"preface\"}",
        1.0,
    )
    .await;

    // CLIENTS connections, REQUESTS echo requests of SIZE bytes on each,
    // random text so that they do not compress.
    let text: Vec<u8> =
        rand::Rng::sample_iter(rand::thread_rng(), &rand::distributions::Alphanumeric)
            .take(SIZE)
            .collect();
    let payload = Bytes::from(text);
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(Client::connect(config.clone()).await.unwrap());
    }
    for client in &clients {
        for _ in 0..REQUESTS {
            let reply = client
                .request_raw(MessageType::ECHO, payload.clone())
                .await
                .unwrap();
            assert_eq!(reply.payload, payload);
        }
    }
    // One more connection is over the limit.
    Client::connect(config.clone()).await.unwrap_err();

    let requests = (CLIENTS * REQUESTS) as f64;
    let live = parse(&scrape(metrics).await);
    for (series, want) in [
        ("netproto_connections_open", CLIENTS as f64),
        ("netproto_handshakes_completed_total", CLIENTS as f64),
        (
            "netproto_connections_refused_total{reason=\"max_connections\"}",
            1.0,
        ),
        (
            "netproto_connections_refused_total{reason=\"max_connections_per_ip\"}",
            0.0,
        ),
        ("netproto_handshakes_failed_total{reason=\"preface\"}", 1.0),
        ("netproto_handshakes_failed_total{reason=\"timeout\"}", 0.0),
        ("netproto_requests_total{outcome=\"reply\"}", requests),
        ("netproto_requests_total{outcome=\"error\"}", 0.0),
        ("netproto_request_duration_seconds_count", requests),
        (
            "netproto_request_duration_seconds_bucket{le=\"+Inf\"}",
            requests,
        ),
    ] {
        assert_eq!(value(&live, series), want, "{series}");
    }
    assert_eq!(handle.stats().accepted(), CLIENTS as u64);
    assert_eq!(handle.stats().refused(), 1);
    assert_eq!(handle.stats().handshake_failures(), 1);
    // The in-process rendering agrees with the endpoint.
    let rendered = parse(&handle.metrics().unwrap());
    assert_eq!(
        value(&rendered, "netproto_requests_total{outcome=\"reply\"}"),
        requests
    );

    // Traffic is folded in when a connection ends (and once a second before).
    for client in clients {
        client.close().await.unwrap();
    }
    wait_for(metrics, "netproto_connections_open", 0.0).await;
    // A scrape reads the series one after another, counters before gauges:
    // the one that saw the gauge at 0 may have read the byte counters just
    // before the last connection's traffic was folded in. A scrape begun
    // after it sees everything.
    let end = parse(&scrape(metrics).await);
    let total = requests * SIZE as f64;
    for series in [
        "netproto_bytes_received_total",
        "netproto_bytes_sent_total",
        "netproto_compression_input_bytes_total",
    ] {
        assert!(value(&end, series) >= total, "{series}: {end:?}");
    }
    for series in [
        "netproto_frames_received_total",
        "netproto_frames_sent_total",
    ] {
        assert!(value(&end, series) >= requests, "{series}: {end:?}");
    }
    // Random bytes do not shrink.
    assert!(
        value(&end, "netproto_compression_output_bytes_total") >= total,
        "{end:?}"
    );
    let errors: f64 = end
        .iter()
        .filter(|(series, _)| series.starts_with("netproto_connection_errors_total"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(errors, 0.0, "clean closes are not errors: {end:?}");
    assert_eq!(
        value(&end, "netproto_requests_total{outcome=\"reply\"}"),
        requests
    );

    handle.shutdown(Some(Duration::from_secs(2))).await;
    task.await.unwrap();
    // The endpoint goes away with the server.
    let gone = tokio::net::TcpStream::connect(metrics).await;
    assert!(gone.is_err(), "metrics endpoint still up after shutdown");
}
