//! `netproto bench`: a load generator with a latency histogram.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use netproto_daemon::Client;
use netproto_daemon::metrics::Samples;
use netproto_wire::MessageType;
use tokio::time::Instant;

use crate::TargetArgs;

mod tally;

use tally::{ErrorKind, Tally, histogram};

/// Time the connections get to close at the end of the run.
const CLOSE_LIMIT: Duration = Duration::from_secs(1);

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
    /// How long to send requests, e.g. `10s` or `500ms` (5s without
    /// --count; with --count, the longest the run sends). Requests still in
    /// flight then get the rest of their `client.response_timeout`.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
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

/// What every worker of a run shares.
struct Plan {
    /// Requests in flight on each connection.
    in_flight: usize,
    payload: Bytes,
    /// Requests issued so far, over all workers (one more per worker once
    /// `limit` is reached).
    issued: Arc<AtomicU64>,
    /// No request is issued once `issued` reaches it.
    limit: u64,
    /// The end of the window: no request is issued after it.
    deadline: Option<Instant>,
    /// The deadline plus one response timeout: requests still unanswered
    /// then are counted as timed out (the client fails each at its
    /// timeout; this only makes sure the run ends).
    hard_stop: Option<Instant>,
}

impl Plan {
    /// Whether one more request may be issued now.
    fn may_issue(&self) -> bool {
        self.deadline
            .is_none_or(|deadline| Instant::now() < deadline)
            && self.issued.fetch_add(1, Ordering::Relaxed) < self.limit
    }
}

/// Keeps `in_flight` requests going on one connection until the plan says
/// stop, then waits for those in flight (until the hard stop at most).
async fn worker(client: Arc<Client>, plan: Arc<Plan>) -> anyhow::Result<Tally> {
    let mut tally = Tally::new()?;
    let issue = || {
        let client = client.clone();
        let payload = plan.payload.clone();
        async move {
            let sent = Instant::now();
            let reply = client.request_raw(MessageType::ECHO, payload).await;
            (sent, reply)
        }
    };
    let hard_stop = tokio::time::sleep_until(plan.hard_stop.unwrap_or_else(Instant::now));
    tokio::pin!(hard_stop);
    let mut running = FuturesUnordered::new();
    let mut issuing = true;
    loop {
        while issuing && running.len() < plan.in_flight {
            issuing = plan.may_issue();
            if issuing {
                tally.sent += 1;
                running.push(issue());
            }
        }
        tokio::select! {
            biased;
            next = running.next() => {
                let Some((sent, reply)) = next else { break };
                match reply {
                    Ok(reply) if reply.payload.len() == plan.payload.len() => {
                        let now = Instant::now();
                        let in_window = plan.deadline.is_none_or(|deadline| now <= deadline);
                        tally.answered(now - sent, in_window);
                    }
                    Ok(_) => tally.failed(ErrorKind::Other, 1),
                    Err(error) => tally.failed(ErrorKind::of(&error), 1),
                }
            }
            () = &mut hard_stop, if plan.hard_stop.is_some() => {
                tally.failed(ErrorKind::Timeout, running.len() as u64);
                break;
            }
        }
    }
    Ok(tally)
}

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let mut config = args.target.load()?;
    netproto_daemon::init_logging(Some("warn"), None)?;
    crate::default_trust(&mut config);
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    anyhow::ensure!(args.in_flight > 0, "--in-flight must be at least 1");
    config.transport.inbound_limit = config.transport.inbound_limit.max(args.in_flight);
    let response_timeout = config.client.response_timeout;
    let duration = match args.count {
        Some(_) => args.duration,
        None => Some(args.duration.unwrap_or(Duration::from_secs(5))),
    };
    let before = scrape(&args).await?;

    let mut clients = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        clients.push(Arc::new(
            Client::connect(config.clone())
                .await
                .context("connecting to the server")?,
        ));
    }
    let start = Instant::now();
    let deadline = duration.map(|duration| start + duration);
    let plan = Arc::new(Plan {
        in_flight: args.in_flight,
        payload: Bytes::from(vec![b'x'; args.size]),
        issued: Arc::new(AtomicU64::new(0)),
        limit: args.count.unwrap_or(u64::MAX),
        deadline,
        hard_stop: deadline.map(|deadline| deadline + response_timeout),
    });
    // One task per connection keeps `in_flight` requests going on it, and
    // counts them.
    let mut workers = tokio::task::JoinSet::new();
    for client in &clients {
        workers.spawn(worker(client.clone(), plan.clone()));
    }
    let progress = Progress::start(&args, duration, start, plan.issued.clone());
    let mut total = Tally::new()?;
    while let Some(result) = workers.join_next().await {
        let tally = result.context("a bench worker panicked")??;
        total.add(&tally)?;
    }
    let end = Instant::now();
    progress.finish();
    let closing = futures::future::join_all(clients.iter().map(|client| client.close()));
    if tokio::time::timeout(CLOSE_LIMIT, closing).await.is_err() {
        tracing::warn!("the connections did not close in time; dropping them");
    }
    drop(clients);
    let server = match before {
        Some(before) => server_after(&args, &before).await,
        None => None,
    };
    let baseline = if args.baseline {
        Some(raw_tcp_ping_pong(args.size, 20_000).await?)
    } else {
        None
    };
    let window = deadline.map_or(end, |deadline| deadline.min(end)) - start;
    let times = Times {
        window,
        wall: end - start,
    };
    report(&args, &total, times, baseline.as_ref(), server.as_ref());
    Ok(())
}

/// The progress bar, updated five times a second (hidden with `--json`).
struct Progress {
    bar: indicatif::ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

impl Progress {
    fn start(
        args: &BenchArgs,
        duration: Option<Duration>,
        start: Instant,
        issued: Arc<AtomicU64>,
    ) -> Self {
        let count = args.count;
        let length = count.unwrap_or_else(|| duration.unwrap_or_default().as_millis() as u64);
        let bar = indicatif::ProgressBar::new(length);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        if args.json {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let progress = bar.clone();
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let n = issued.load(Ordering::Relaxed);
                let elapsed = start.elapsed();
                progress.set_position(match count {
                    Some(limit) => n.min(limit),
                    None => elapsed.as_millis() as u64,
                });
                progress.set_message(format!(
                    "{:.0} req/s",
                    n as f64 / elapsed.as_secs_f64().max(1e-9)
                ));
            }
        });
        Self { bar, ticker }
    }

    fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

/// The server's view of the run: a second scrape, once the bench's
/// connections are gone (the server folds a connection's traffic in when it
/// ends), waiting for that briefly. `None` (and a warning) when the server
/// cannot be scraped any more.
async fn server_after(args: &BenchArgs, before: &Samples) -> Option<serde_json::Value> {
    let open = |s: &Samples| s.sum(netproto_daemon::metrics::CONNECTIONS_OPEN);
    let mut tries = 0;
    loop {
        let after = match scrape(args).await {
            Ok(after) => after.unwrap_or_default(),
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "no server metrics after the run"
                );
                return None;
            }
        };
        tries += 1;
        if open(&after) <= open(before) || tries > 20 {
            return Some(server_view(before, &after));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How long the run took.
#[derive(Clone, Copy)]
struct Times {
    /// The window over which throughput is computed: from the first request
    /// to the end of `--duration` (or to the last answer, if earlier).
    window: Duration,
    /// From the first request to the last answer or failure.
    wall: Duration,
}

/// Prints the result. Every request sent is counted once: answered (`ok`,
/// also `requests`) or failed (`errors`, by kind). The throughput is the
/// answers that arrived within the window, over the window.
#[allow(clippy::print_stdout)] // printing results is the CLI's job
fn report(
    args: &BenchArgs,
    tally: &Tally,
    times: Times,
    baseline: Option<&Histogram<u64>>,
    server: Option<&serde_json::Value>,
) {
    let hist = &tally.latency;
    let (ok, errors) = (tally.ok(), tally.errors());
    let rate = tally.ok_in_window as f64 / times.window.as_secs_f64().max(1e-9);
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1e3;
    let base_p50 = baseline.map(|b| b.value_at_quantile(0.5) as f64 / 1e3);
    if args.json {
        let by_kind: serde_json::Map<String, serde_json::Value> = tally
            .by_kind()
            .map(|(kind, n)| (kind.name().to_owned(), n.into()))
            .collect();
        let json = serde_json::json!({
            "raw_tcp_ping_pong_p50_us": base_p50,
            "p50_vs_raw_tcp": base_p50.map(|b| us(0.5) / b),
            "connections": args.connections,
            "in_flight_per_connection": args.in_flight,
            "payload_bytes": args.size,
            "sent": tally.sent,
            "ok": ok,
            "requests": ok,
            "errors": errors,
            "errors_by_kind": by_kind,
            "seconds": times.window.as_secs_f64(),
            "wall_seconds": times.wall.as_secs_f64(),
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
        "{ok} requests in {:.2} s over {} connections x {} in flight, {errors} errors",
        times.window.as_secs_f64(),
        args.connections,
        args.in_flight,
    );
    let kinds: Vec<String> = tally
        .by_kind()
        .filter(|(_, n)| *n > 0)
        .map(|(kind, n)| format!("{} {n}", kind.name()))
        .collect();
    println!(
        "sent {}: {ok} answered, {errors} failed{}; the run took {:.2} s",
        tally.sent,
        if kinds.is_empty() {
            String::new()
        } else {
            format!(" ({})", kinds.join(", "))
        },
        times.wall.as_secs_f64()
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
