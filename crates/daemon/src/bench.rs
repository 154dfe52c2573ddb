//! `netproto bench`: a load generator with a latency histogram.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use netproto_daemon::Client;
use netproto_daemon::metrics::Samples;
use netproto_wire::MessageType;

use crate::TargetArgs;

#[derive(Args, Debug)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Connections to open.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Requests in flight on each connection.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Payload bytes of each ECHO request.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// How long to run, e.g. `10s` or `500ms` (ignored with --count).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    duration: Duration,
    /// Stop after this many requests instead of after a duration.
    #[arg(long)]
    count: Option<u64>,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
    /// Also measure a raw tokio TCP ping-pong of the same size on loopback
    /// (an in-process echo server, one message in flight), as a baseline
    /// for the round-trip latency, in the same run.
    #[arg(long)]
    baseline: bool,
    /// The server's metrics address (`serve --metrics`): scrape it before and
    /// after the run and print the server's view (counter deltas and its
    /// handler-time quantiles).
    #[arg(long, value_name = "ADDRESS")]
    server_metrics: Option<String>,
}

/// Scrapes the server's metrics, if asked to.
async fn scrape(args: &BenchArgs) -> anyhow::Result<Option<Samples>> {
    let Some(address) = &args.server_metrics else {
        return Ok(None);
    };
    let text = netproto_daemon::metrics::scrape(address)
        .await
        .with_context(|| format!("scraping http://{address}/metrics"))?;
    Ok(Some(Samples::parse(&text)))
}

/// What the server counted during the run, from two scrapes.
fn server_view(before: &Samples, after: &Samples) -> serde_json::Value {
    use netproto_daemon::metrics as m;
    let delta = after.since(before);
    let n = |name: &str| delta.sum(name);
    let reqs = |outcome: &str| {
        delta
            .get(&format!("{}{{outcome=\"{outcome}\"}}", m::REQUESTS))
            .unwrap_or(0.0)
    };
    let quantile = |q| delta.quantile(m::REQUEST_DURATION, q).map(|s| s * 1e6);
    let series = |suffix: &str| delta.get(&format!("{}{suffix}", m::REQUEST_DURATION));
    let mean = match (series("_sum"), series("_count")) {
        (Some(sum), Some(count)) if count > 0.0 => Some(sum / count * 1e6),
        _ => None,
    };
    serde_json::json!({
        "requests_replied": reqs("reply"),
        "requests_errors": reqs("error"),
        "requests_refused": reqs("refused"),
        "handshakes_completed": n(m::HANDSHAKES_COMPLETED),
        "handshakes_failed": n(m::HANDSHAKES_FAILED),
        "connections_refused": n(m::CONNECTIONS_REFUSED),
        "connection_errors": n(m::CONNECTION_ERRORS),
        "frames_in": n(m::FRAMES_RECEIVED),
        "frames_out": n(m::FRAMES_SENT),
        "bytes_in": n(m::BYTES_RECEIVED),
        "bytes_out": n(m::BYTES_SENT),
        "backpressure_waits": n(m::BACKPRESSURE_WAITS),
        "handler_us": {
            "mean": mean, "p50": quantile(0.5), "p90": quantile(0.9), "p99": quantile(0.99),
        },
    })
}

/// Round trips of a raw tokio TCP ping-pong: `size` bytes each way, one in
/// flight, against an in-process echo server on 127.0.0.1.
async fn raw_tcp_ping_pong(size: usize, count: u64) -> anyhow::Result<Histogram<u64>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let mut buf = vec![0u8; size.max(1)];
        loop {
            if stream.read_exact(&mut buf).await.is_err() {
                return anyhow::Ok(());
            }
            stream.write_all(&buf).await?;
        }
    });
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let out = vec![b'x'; size.max(1)];
    let mut back = vec![0u8; size.max(1)];
    let mut hist = histogram()?;
    for _ in 0..count {
        let sent = Instant::now();
        stream.write_all(&out).await?;
        stream.read_exact(&mut back).await?;
        let ns = u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX);
        hist.saturating_record(ns.max(1));
    }
    drop(stream);
    server.await??;
    Ok(hist)
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((text, "s"), |i| text.split_at(i));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 5s or 500ms"))?;
    let secs = match unit {
        "ms" => value / 1e3,
        "s" | "" => value,
        "m" => value * 60.0,
        _ => return Err(format!("{text:?}: use ms, s or m")),
    };
    if !(secs > 0.0 && secs <= 86_400.0) {
        return Err(format!("{text:?} must be between 1 ms and one day"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Latencies are recorded in nanoseconds, 1 ns to 60 s, 3 significant digits.
fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000_000, 3)?)
}

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let mut config = args.target.load()?;
    netproto_daemon::init_logging(Some("warn"), None)?;
    crate::default_trust(&mut config);
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    anyhow::ensure!(args.in_flight > 0, "--in-flight must be at least 1");
    config.transport.inbound_limit = config.transport.inbound_limit.max(args.in_flight);
    let payload = Bytes::from(vec![b'x'; args.size]);
    let before = scrape(&args).await?;

    let mut clients = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        clients.push(Arc::new(
            Client::connect(config.clone())
                .await
                .context("connecting to the server")?,
        ));
    }
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let limit = args.count.unwrap_or(u64::MAX);
    let start = Instant::now();
    let deadline = start + args.duration;
    // One task per connection keeps `in_flight` requests going on it, and
    // one histogram per connection records them.
    let mut workers = tokio::task::JoinSet::new();
    for client in &clients {
        let client = client.clone();
        let payload = payload.clone();
        let (done, errors, stop) = (done.clone(), errors.clone(), stop.clone());
        let count_mode = args.count.is_some();
        let in_flight = args.in_flight;
        workers.spawn(async move {
            let mut hist = histogram()?;
            let issue = || {
                let client = client.clone();
                let payload = payload.clone();
                async move {
                    let sent = Instant::now();
                    let reply = client.request_raw(MessageType::ECHO, payload).await;
                    (sent, reply)
                }
            };
            let mut running = FuturesUnordered::new();
            let mut issuing = true;
            loop {
                while issuing && running.len() < in_flight {
                    if stop.load(Ordering::Relaxed)
                        || (!count_mode && Instant::now() >= deadline)
                        || done.fetch_add(1, Ordering::Relaxed) >= limit
                    {
                        issuing = false;
                    } else {
                        running.push(issue());
                    }
                }
                let Some((sent, reply)) = running.next().await else {
                    break;
                };
                match reply {
                    Ok(reply) if reply.payload.len() == payload.len() => {
                        let ns = u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX);
                        hist.saturating_record(ns.max(1));
                    }
                    Ok(_) | Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            anyhow::Ok(hist)
        });
    }
    let progress =
        indicatif::ProgressBar::new(args.count.unwrap_or(args.duration.as_millis() as u64));
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if args.json {
        progress.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let ticker = {
        let progress = progress.clone();
        let done = done.clone();
        let count_mode = args.count.is_some();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let n = done.load(Ordering::Relaxed);
                let elapsed = start.elapsed();
                progress.set_position(if count_mode {
                    n.min(limit)
                } else {
                    elapsed.as_millis() as u64
                });
                progress.set_message(format!(
                    "{:.0} req/s",
                    n as f64 / elapsed.as_secs_f64().max(1e-9)
                ));
            }
        })
    };
    let mut total = histogram()?;
    while let Some(result) = workers.join_next().await {
        let hist = result.context("a bench worker panicked")??;
        total.add(&hist)?;
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed();
    ticker.abort();
    progress.finish_and_clear();
    for client in &clients {
        let _ = client.close().await;
    }
    let server = match before {
        Some(before) => {
            // The server folds a connection's traffic in when it ends: wait
            // (briefly) until the bench's connections are gone.
            let open = |s: &Samples| s.sum(netproto_daemon::metrics::CONNECTIONS_OPEN);
            let mut after = scrape(&args).await?.unwrap_or_default();
            for _ in 0..20 {
                if open(&after) <= open(&before) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                after = scrape(&args).await?.unwrap_or_default();
            }
            Some(server_view(&before, &after))
        }
        None => None,
    };
    let baseline = if args.baseline {
        Some(raw_tcp_ping_pong(args.size, 20_000).await?)
    } else {
        None
    };
    report(
        &args,
        &total,
        errors.load(Ordering::Relaxed),
        elapsed,
        baseline.as_ref(),
        server.as_ref(),
    );
    Ok(())
}

#[allow(clippy::print_stdout)] // printing results is the CLI's job
fn report(
    args: &BenchArgs,
    hist: &Histogram<u64>,
    errors: u64,
    elapsed: Duration,
    baseline: Option<&Histogram<u64>>,
    server: Option<&serde_json::Value>,
) {
    let ok = hist.len();
    let rate = ok as f64 / elapsed.as_secs_f64();
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1e3;
    let base_p50 = baseline.map(|b| b.value_at_quantile(0.5) as f64 / 1e3);
    if args.json {
        let json = serde_json::json!({
            "raw_tcp_ping_pong_p50_us": base_p50,
            "p50_vs_raw_tcp": base_p50.map(|b| us(0.5) / b),
            "connections": args.connections,
            "in_flight_per_connection": args.in_flight,
            "payload_bytes": args.size,
            "requests": ok,
            "errors": errors,
            "seconds": elapsed.as_secs_f64(),
            "requests_per_second": rate,
            "latency_us": {
                "p50": us(0.5), "p90": us(0.9), "p99": us(0.99), "p99_9": us(0.999),
                "max": hist.max() as f64 / 1e3, "mean": hist.mean() / 1e3,
            },
            "server": server,
        });
        println!("{json}");
        return;
    }
    println!(
        "{ok} requests in {:.2} s over {} connections x {} in flight, {} errors",
        elapsed.as_secs_f64(),
        args.connections,
        args.in_flight,
        errors
    );
    println!("throughput: {rate:.0} requests/s");
    println!(
        "latency (us): p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
        us(0.5),
        us(0.9),
        us(0.99),
        us(0.999),
        hist.max() as f64 / 1e3
    );
    if let Some(base) = base_p50 {
        println!(
            "raw tokio TCP ping-pong p50 {base:.1} us; netproto p50 is {:.2}x that",
            us(0.5) / base
        );
    }
    if let Some(server) = server {
        print_server_view(server);
    }
}

#[allow(clippy::print_stdout)] // printing results is the CLI's job
fn print_server_view(v: &serde_json::Value) {
    let n = |key: &str| {
        v.get(key)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0)
    };
    println!(
        "server: {} replied, {} errors, {} refused; {} handshakes ({} failed, {} refused); {} connection errors",
        n("requests_replied"),
        n("requests_errors"),
        n("requests_refused"),
        n("handshakes_completed"),
        n("handshakes_failed"),
        n("connections_refused"),
        n("connection_errors"),
    );
    println!(
        "server: {} frames in, {} out; {} bytes in, {} out; {} backpressure waits",
        n("frames_in"),
        n("frames_out"),
        n("bytes_in"),
        n("bytes_out"),
        n("backpressure_waits"),
    );
    let q = |key: &str| {
        v.pointer(&format!("/handler_us/{key}"))
            .and_then(serde_json::Value::as_f64)
            .map_or_else(|| "-".to_owned(), |us| format!("{us:.1}"))
    };
    println!(
        "server handler time (us; quantiles interpolated in histogram buckets): mean {}  p50 {}  p90 {}  p99 {}",
        q("mean"),
        q("p50"),
        q("p90"),
        q("p99")
    );
}
