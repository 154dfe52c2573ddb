//! Shared by the process suites (attacks, scale, drain, fail-fast, TLS
//! first, HAProxy): the `netproto` server as a child process (its address,
//! metrics address, memory, open sockets, log, signals and exit), a
//! legitimate client that measures its latency on its own thread, and raw
//! sockets for crafting attacks byte by byte.
#![allow(dead_code)] // each test binary uses a different part
#![allow(clippy::print_stdout)] // the suites print their figures

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use netproto_crypto::{Keypair, Opener, PublicKey, Sealer, SessionBuilder};
use netproto_daemon::{Client, NetworkConfig};
use netproto_wire::{
    Encoder, Frame, Message, PREFACE_LEN, Preface, PrefaceAnswer, PrefaceStatus, SecurityMode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Time the server binary gets to start listening.
const START_LIMIT: Duration = Duration::from_secs(30);

/// Runs one test at a time: every case measures latency and memory, which
/// another case running beside it on the same two cores would disturb.
pub(crate) fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Raises this process's open-file limit to its hard limit; returns the new
/// soft limit.
pub(crate) fn raise_file_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0)
}

/// Moves the calling thread to the `SCHED_IDLE` scheduling class (nice 19
/// when that fails), so that a test's attacker takes only the CPU the server
/// and the legitimate client leave idle, as if it ran on another machine;
/// prints why when it cannot.
///
/// Nice 19 alone is not enough on 2 cores: the scheduler places a woken
/// thread on a core that runs only `SCHED_IDLE` threads as if it were idle,
/// but it leaves a niced attacker a core to itself while both serving
/// threads queue on the other (seen for up to 7 ms at a time with `perf
/// sched timehist` in the never-reads case).
pub(crate) fn lower_thread_priority() {
    let tid = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let Some(tid) = tid else {
        println!("cannot lower the attacker's priority: no /proc/thread-self");
        return;
    };
    let run = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
    };
    match run("chrt", &["--idle", "-p", "0", &tid]) {
        Ok(status) if status.success() => return,
        other => println!("cannot move the attacker to SCHED_IDLE ({other:?}): nice 19 instead"),
    }
    match run("renice", &["-n", "19", "-p", &tid]) {
        Ok(status) if status.success() => {}
        other => println!("cannot lower the attacker's priority: {other:?}"),
    }
}

/// The `netproto serve` child process; killed when dropped, also on panic.
pub(crate) struct ServerProcess {
    child: Child,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// Its Noise public key (hex), in Noise mode.
    pub(crate) public_key: Option<String>,
    /// Where it serves metrics and health checks, with
    /// `server.metrics_address` set.
    pub(crate) metrics: Option<SocketAddr>,
    /// Its process id, for `/proc`.
    pub(crate) pid: u32,
    /// Its security mode.
    pub(crate) mode: String,
    log: Arc<Mutex<Vec<String>>>,
    dir: PathBuf,
}

/// Server settings, written to a TOML file: `(section, field)` → TOML value.
#[derive(Clone, Debug, Default)]
pub(crate) struct Settings(BTreeMap<(&'static str, &'static str), String>);

impl Settings {
    /// Short timeouts and small limits, so that attacks end quickly and
    /// memory bounds are meaningful.
    pub(crate) fn attack_defaults() -> Self {
        Self::default()
            .set("server", "connection_timeout", "\"2s\"")
            .set("server", "heartbeat_interval", "\"1s\"")
            .set("server", "backpressure_limit", "64")
            .set("transport", "max_frame_len", "1048576")
            .set("transport", "inbound_limit", "64")
            .set("transport", "idle_timeout", "\"3s\"")
            .set("transport", "write_timeout", "\"2s\"")
            .set("transport", "heartbeat_misses", "2")
            // Most cases attack from one address in waves, far past the
            // default handshake rates, which the cases of their own test.
            .set("server", "handshake_rate_per_ip", "1000000")
            .set("server", "handshake_rate_per_prefix", "1000000")
    }

    /// Sets one field; `value` is TOML (`"2s"` with its quotes, `64`).
    pub(crate) fn set(mut self, section: &'static str, field: &'static str, value: &str) -> Self {
        self.0.insert((section, field), value.to_owned());
        self
    }

    /// A numeric field (panics if absent or not a number).
    pub(crate) fn number(&self, section: &'static str, field: &'static str) -> u64 {
        self.0[&(section, field)].parse().unwrap()
    }

    /// A duration field written in whole seconds (`"2s"`).
    pub(crate) fn duration(&self, section: &'static str, field: &'static str) -> Duration {
        let text = &self.0[&(section, field)];
        Duration::from_secs(
            text.trim_matches('"')
                .trim_end_matches('s')
                .parse()
                .unwrap(),
        )
    }

    /// The settings as TOML, leaving out the `section.field` names listed
    /// in `NETPROTO_STRESS_OMIT` (comma-separated): settings an older build
    /// run with `NETPROTO_STRESS_SERVER` does not know, and would refuse.
    fn to_toml(&self) -> String {
        let omit = std::env::var("NETPROTO_STRESS_OMIT").unwrap_or_default();
        let omitted: Vec<&str> = omit.split(',').map(str::trim).collect();
        let mut text = String::new();
        let mut current = "";
        for ((section, field), value) in &self.0 {
            if omitted.contains(&format!("{section}.{field}").as_str()) {
                continue;
            }
            if *section != current {
                text.push_str(&format!("\n[{section}]\n"));
                current = section;
            }
            text.push_str(&format!("{field} = {value}\n"));
        }
        text
    }
}

impl ServerProcess {
    /// Starts `netproto serve` in `mode` (plain or noise) on 127.0.0.1 port
    /// 0, with `settings` in a configuration file and its key, home and
    /// files in a fresh temporary directory; waits until it listens.
    pub(crate) fn start(mode: &str, settings: &Settings) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "netproto-attack-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let config_file = dir.join("netproto.toml");
        std::fs::write(&config_file, settings.to_toml()).unwrap();
        // Another build of the server (an older one, to measure before and
        // after a change side by side) when NETPROTO_STRESS_SERVER names it.
        let program = std::env::var_os("NETPROTO_STRESS_SERVER")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_netproto").into());
        let mut command = Command::new(program);
        command
            .arg("serve")
            .arg("--config")
            .arg(&config_file)
            .args(["--address", "127.0.0.1:0", "--mode", mode])
            .env_remove("RUST_LOG")
            .env("HOME", &dir)
            // The environment layer of the configuration, over the file.
            .env("NETPROTO__LOGGING__FORMAT", "json")
            .env(
                "NETPROTO__LOGGING__LEVEL",
                settings
                    .0
                    .get(&("logging", "level"))
                    .map_or("info", |level| level.trim_matches('"')),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if mode == "noise" && !settings.0.contains_key(&("security", "key_file")) {
            command.arg("--ephemeral-key");
        }
        let mut child = command.spawn().unwrap();
        let pid = child.id();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (found, wait) = mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            let mut key = None;
            let mut metrics = None;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) {
                    let fields = &json["fields"];
                    if let Some(k) = fields["public_key"].as_str() {
                        key = Some(k.to_owned());
                    }
                    let message = fields["message"].as_str().unwrap_or_default();
                    let address = fields["address"].as_str().unwrap_or_default().to_owned();
                    if message.starts_with("metrics at") {
                        metrics = address.parse().ok();
                    }
                    if message == "listening" {
                        let _ = found.send((address, key.clone(), metrics));
                    }
                }
                lines.lock().unwrap().push(line);
            }
        });
        let mut server = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_key: None,
            metrics: None,
            pid,
            mode: mode.to_owned(),
            log,
            dir,
        };
        let Ok((address, key, metrics)) = wait.recv_timeout(START_LIMIT) else {
            panic!("the server did not start: {:?}", server.log_lines());
        };
        server.addr = address.parse().unwrap();
        server.public_key = key;
        server.metrics = metrics;
        server
    }

    /// A client configuration that reaches this server (pinning its key).
    pub(crate) fn client_config(&self) -> NetworkConfig {
        let mut config = NetworkConfig::default();
        config.security.mode = self.mode.parse().unwrap();
        config.security.server_key = self.public_key.as_deref().map(|k| k.parse().unwrap());
        config.client.address = self.addr.to_string();
        config.client.auto_reconnect = false;
        config.client.response_timeout = Duration::from_secs(10);
        config
    }

    /// Sends the process the signal `name` (`TERM`, `KILL`, `STOP`, ...).
    /// After `STOP`, returns once every thread of it has stopped (the
    /// signal is delivered asynchronously: a thread on another core may
    /// still answer a request meanwhile).
    pub(crate) fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} {}: {status}", self.pid);
        if name == "STOP" {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !self.all_threads_stopped() {
                assert!(Instant::now() < deadline, "the server did not stop");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// Whether every thread of the process is stopped (state `T` in
    /// `/proc/<pid>/task/<tid>/stat`).
    fn all_threads_stopped(&self) -> bool {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid)) else {
            return false;
        };
        tasks.flatten().all(|task| {
            std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
                // The state follows the command name in parentheses.
                stat.rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
            })
        })
    }

    /// Waits up to `limit` for the process to exit; its status, if it did.
    pub(crate) fn exit_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's log so far.
    pub(crate) fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Panics unless the server is still running and its log has no panic.
    pub(crate) fn assert_healthy(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the server exited: {:?}",
            self.log_lines()
        );
        let log = self.log_lines();
        let panics: Vec<_> = log.iter().filter(|l| l.contains("panicked")).collect();
        assert!(panics.is_empty(), "the server panicked: {panics:?}");
    }

    /// A field of `/proc/<pid>/status`, in KiB (VmRSS, VmHWM).
    pub(crate) fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    /// Resident memory now, in bytes.
    pub(crate) fn rss(&self) -> u64 {
        self.status_kib("VmRSS") * 1024
    }

    /// Peak resident memory since the server started, in bytes.
    pub(crate) fn hwm(&self) -> u64 {
        self.status_kib("VmHWM") * 1024
    }

    /// Sockets the server has open (listener and connections).
    pub(crate) fn open_sockets(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .map(|dir| {
                dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                    .filter(|target| target.to_string_lossy().starts_with("socket:"))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Waits (at most `limit`) until the server holds at most `sockets`
    /// sockets; returns how many it holds at the end.
    pub(crate) async fn wait_sockets_at_most(&self, sockets: usize, limit: Duration) -> usize {
        let end = Instant::now() + limit;
        loop {
            let open = self.open_sockets();
            if open <= sockets || Instant::now() >= end {
                return open;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Samples the resident memory every 5 ms until the sampler is stopped.
    pub(crate) fn sample_memory(&self) -> MemorySampler {
        let stop = Arc::new(AtomicBool::new(false));
        let pid = self.pid;
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    let rss = status
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
                        .unwrap_or(0);
                    peak = peak.max(rss * 1024);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        });
        MemorySampler {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The peak of a process's resident memory over a period.
pub(crate) struct MemorySampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl MemorySampler {
    /// Stops sampling; the peak resident memory seen, in bytes.
    pub(crate) fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for MemorySampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One request of the legitimate client.
#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Instant,
    took: Duration,
    ok: bool,
}

/// Latency of the legitimate client over a window.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Latency {
    /// Requests sent in the window.
    pub(crate) requests: usize,
    /// Requests without their correct reply.
    pub(crate) lost: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Slowest.
    pub(crate) max: Duration,
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests, {} lost, p50 {:?}, p99 {:?}, max {:?}",
            self.requests, self.lost, self.p50, self.p99, self.max
        )
    }
}

/// What a legitimate client does each time it measures.
pub(crate) enum Probe {
    /// Keeps one connection (a [`Client`]) and sends a request on it.
    Established(Box<NetworkConfig>),
    /// Opens a fresh connection from each of `sources` in turn: preface,
    /// handshake (Noise when `key` is set, pinning it), one ECHO request,
    /// close; measured from connect to reply.
    Fresh {
        /// The server.
        addr: SocketAddr,
        /// The server's key, in Noise mode.
        key: Option<PublicKey>,
        /// Source addresses, used in turn.
        sources: Vec<IpAddr>,
    },
}

/// A legitimate client on its own thread and runtime, measuring one
/// [`Probe`] every `every` and recording each latency and whether the right
/// reply came.
pub(crate) struct Prober {
    stop: Arc<AtomicBool>,
    count: Arc<AtomicUsize>,
    samples: Arc<Mutex<Vec<Sample>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Prober {
    /// Starts measuring (an established probe connects first, and panics
    /// if it cannot).
    pub(crate) fn start(probe: Probe, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::with_capacity(8192)));
        let (ready, connected) = mpsc::channel();
        let count = Arc::new(AtomicUsize::new(0));
        let (flag, record, counter) = (stop.clone(), samples.clone(), count.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut n = 0u64;
                match probe {
                    Probe::Established(config) => {
                        let client = match Client::connect(*config).await {
                            Ok(client) => client,
                            Err(error) => {
                                let _ = ready.send(Err(error.to_string()));
                                return;
                            }
                        };
                        let _ = ready.send(Ok(()));
                        while !flag.load(Ordering::Relaxed) {
                            tick.tick().await;
                            n += 1;
                            let text = format!("probe {n}");
                            let message = Message::Echo(text.clone());
                            measure(&record, &counter, async {
                                let reply = client.request(&message).await;
                                matches!(reply, Ok(Message::Echo(back)) if back == text)
                            })
                            .await;
                        }
                        let _ = client.close().await;
                    }
                    Probe::Fresh { addr, key, sources } => {
                        let _ = ready.send(Ok(()));
                        while !flag.load(Ordering::Relaxed) {
                            tick.tick().await;
                            n += 1;
                            let source = sources[n as usize % sources.len()];
                            measure(&record, &counter, fresh_echo(addr, source, key, n)).await;
                        }
                    }
                }
            });
        });
        match connected.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(())) => {}
            other => panic!("the legitimate client cannot connect: {other:?}"),
        }
        Self {
            stop,
            count,
            samples,
            thread: Some(thread),
        }
    }

    /// The number of requests sent so far, updated as they are.
    pub(crate) fn counter(&self) -> Arc<AtomicUsize> {
        self.count.clone()
    }

    /// Requests sent since `from`.
    pub(crate) fn count_since(&self, from: Instant) -> usize {
        self.samples
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.at >= from)
            .count()
    }

    /// Waits (at most 30 s) until `n` requests were sent since `from`.
    pub(crate) async fn wait_for(&self, from: Instant, n: usize) {
        let end = Instant::now() + Duration::from_secs(30);
        while self.count_since(from) < n && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Latency of the requests sent in the windows `[from, to)`.
    pub(crate) fn windows(&self, windows: &[(Instant, Instant)]) -> Latency {
        let samples = self.samples.lock().unwrap();
        let inside: Vec<Sample> = samples
            .iter()
            .filter(|s| windows.iter().any(|(from, to)| s.at >= *from && s.at < *to))
            .copied()
            .collect();
        let mut taken: Vec<Duration> = inside.iter().map(|s| s.took).collect();
        taken.sort_unstable();
        let at = |q: f64| {
            let i = ((taken.len() as f64 * q).ceil() as usize).saturating_sub(1);
            taken.get(i).copied().unwrap_or_default()
        };
        Latency {
            requests: taken.len(),
            lost: inside.iter().filter(|s| !s.ok).count(),
            p50: at(0.50),
            p99: at(0.99),
            max: taken.last().copied().unwrap_or_default(),
        }
    }

    /// Every request ever sent that got no correct reply.
    pub(crate) fn lost(&self) -> usize {
        self.samples
            .lock()
            .unwrap()
            .iter()
            .filter(|s| !s.ok)
            .count()
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs one measurement of a [`Prober`] (at most 10 s) and records how
/// long it took and whether the right reply came.
async fn measure(
    record: &Mutex<Vec<Sample>>,
    counter: &AtomicUsize,
    probe: impl Future<Output = bool>,
) {
    let at = Instant::now();
    let ok = tokio::time::timeout(Duration::from_secs(10), probe)
        .await
        .unwrap_or(false);
    record.lock().unwrap().push(Sample {
        at,
        took: at.elapsed(),
        ok,
    });
    counter.fetch_add(1, Ordering::Relaxed);
}

/// One fresh connection from `source`: preface, handshake (Noise when
/// `key` is set), an ECHO request and its reply; whether it all worked.
pub(crate) async fn fresh_echo(
    addr: SocketAddr,
    source: IpAddr,
    key: Option<PublicKey>,
    n: u64,
) -> bool {
    let started = Instant::now();
    match fresh_echo_or_why(addr, source, key, n).await {
        Ok(()) => true,
        Err(why) => {
            // Rare, and what the closing note needs: printed every time.
            println!(
                "fresh client {n} from {source} failed after {:?}: {why}",
                started.elapsed()
            );
            false
        }
    }
}

async fn fresh_echo_or_why(
    addr: SocketAddr,
    source: IpAddr,
    key: Option<PublicKey>,
    n: u64,
) -> Result<(), String> {
    let text = format!("fresh {n}");
    let request = echo_frame(1, &text);
    let started = Instant::now();
    let mut stream = connect_from(addr, Some(source))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let connected = started.elapsed();
    let reply = match key {
        None => {
            let status = preface(&mut stream, SecurityMode::Plain)
                .await
                .map_err(|e| format!("preface: {e}"))?;
            if status != PrefaceStatus::Accept {
                return Err(format!("preface answered {status:?}"));
            }
            let mut reply = vec![0; request.len()];
            stream
                .write_all(&request)
                .await
                .map_err(|e| format!("request: {e}"))?;
            stream
                .read_exact(&mut reply)
                .await
                .map_err(|e| format!("reply: {e}"))?;
            BytesMut::from(&reply[..])
        }
        Some(key) => {
            let mut session = RawNoise::handshake(stream, key).await?;
            let handshaken = started.elapsed();
            if std::env::var_os("NETPROTO_STRESS_DEBUG").is_some()
                && handshaken > Duration::from_millis(4)
            {
                println!(
                    "fresh client {n}: slow: connected after {connected:?}, preface answered {:?} later, handshake done after {handshaken:?}",
                    session.answered_after
                );
            }
            let record = session.seal(&request);
            session
                .stream
                .write_all(&record)
                .await
                .map_err(|e| format!("request: {e}"))?;
            session
                .read_plaintext(request.len(), Duration::from_secs(10))
                .await
                .0
        }
    };
    if reply == request {
        Ok(())
    } else {
        Err(format!("wrong reply: {} bytes", reply.len()))
    }
}

/// Opens a TCP connection to `addr` from `source` (any 127.x.y.z address
/// works on Linux loopback), or from the default address.
pub(crate) async fn connect_from(
    addr: SocketAddr,
    source: Option<IpAddr>,
) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Sends the client preface for `mode` and reads the server's answer.
pub(crate) async fn preface(
    stream: &mut TcpStream,
    mode: SecurityMode,
) -> std::io::Result<PrefaceStatus> {
    stream.write_all(&Preface::new(mode).to_bytes()).await?;
    let mut answer = [0; PREFACE_LEN];
    stream.read_exact(&mut answer).await?;
    let parsed = PrefaceAnswer::parse(&answer)
        .ok()
        .flatten()
        .ok_or_else(|| std::io::Error::other("bad preface answer"))?;
    Ok(parsed.status)
}

/// How a connection ended, seen from the attacker's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// The server closed it (end of stream or reset) after this long.
    Closed(Duration),
    /// Still open when the limit was reached.
    Open,
}

/// Reads (and discards) until the server closes the connection, at most
/// `limit`; returns also how many bytes arrived.
pub(crate) async fn wait_closed(stream: &mut TcpStream, limit: Duration) -> (End, usize) {
    let start = Instant::now();
    let mut buf = vec![0; 64 * 1024];
    let mut received = 0;
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received += n,
            }
        }
    };
    let end = match tokio::time::timeout(limit, read).await {
        Ok(()) => End::Closed(start.elapsed()),
        Err(_) => End::Open,
    };
    (end, received)
}

/// A data frame carrying an ECHO request, as bytes.
pub(crate) fn echo_frame(request_id: u64, text: &str) -> BytesMut {
    let mut buf = BytesMut::new();
    Message::Echo(text.into())
        .to_envelope(request_id)
        .encode_frame(&Encoder::default(), &mut buf)
        .unwrap();
    buf
}

/// A frame as bytes.
pub(crate) fn frame_bytes(frame: &Frame) -> BytesMut {
    let mut buf = BytesMut::new();
    Encoder::default().encode(frame, &mut buf).unwrap();
    buf
}

/// Unix time in milliseconds, as the handshake payload carries it.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A Noise session established by hand over a raw socket: what the
/// initiator sent during the handshake (preface included), and the record
/// halves.
pub(crate) struct RawNoise {
    /// The connection.
    pub(crate) stream: TcpStream,
    /// Every byte this side sent during the preface and handshake.
    pub(crate) sent: Vec<u8>,
    /// Seals records to the server.
    pub(crate) sealer: Sealer,
    /// Opens the server's records.
    pub(crate) opener: Opener,
    /// Record bytes received and not yet opened.
    pub(crate) input: BytesMut,
    /// How long the server took to answer the preface.
    pub(crate) answered_after: Duration,
}

impl RawNoise {
    /// Runs the preface and a full XX handshake as the initiator; panics
    /// if either fails.
    pub(crate) async fn connect(addr: SocketAddr, server_key: PublicKey) -> Self {
        let stream = connect_from(addr, None).await.unwrap();
        Self::handshake(stream, server_key).await.unwrap()
    }

    /// Runs the preface and a full XX handshake as the initiator over
    /// `stream`, pinning `server_key`; says what failed.
    pub(crate) async fn handshake(
        mut stream: TcpStream,
        server_key: PublicKey,
    ) -> Result<Self, String> {
        let prologue = Preface::new(SecurityMode::Noise).to_bytes();
        let mut sent = prologue.to_vec();
        let started = Instant::now();
        let status = preface(&mut stream, SecurityMode::Noise)
            .await
            .map_err(|e| format!("preface: {e}"))?;
        if status != PrefaceStatus::Accept {
            return Err(format!("preface answered {status:?}"));
        }
        let answered_after = started.elapsed();
        let mut initiator = SessionBuilder::new(Keypair::generate(&mut rand::rngs::OsRng))
            .prologue(&prologue)
            .allowed_peers([server_key])
            .build_initiator(&mut rand::rngs::OsRng)
            .map_err(|e| e.to_string())?;
        let mut input = BytesMut::new();
        let mut out = BytesMut::new();
        while !initiator.is_finished() {
            if initiator.wants_write() {
                out.clear();
                initiator
                    .write_message(now_ms(), &mut out)
                    .map_err(|e| e.to_string())?;
                stream.write_all(&out).await.map_err(|e| e.to_string())?;
                sent.extend_from_slice(&out);
            } else {
                while !initiator
                    .read_message(&mut input)
                    .map_err(|e| e.to_string())?
                {
                    input.reserve(4096);
                    match stream.read_buf(&mut input).await {
                        Ok(0) => return Err("closed during the handshake".into()),
                        Ok(_) => {}
                        Err(e) => return Err(format!("handshake: {e}")),
                    }
                }
            }
        }
        let (sealer, opener) = initiator
            .into_session()
            .map_err(|e| e.to_string())?
            .into_split();
        Ok(Self {
            stream,
            sent,
            sealer,
            opener,
            input,
            answered_after,
        })
    }

    /// Seals `plaintext` into one record.
    pub(crate) fn seal(&mut self, plaintext: &[u8]) -> BytesMut {
        let mut record = BytesMut::new();
        self.sealer.seal(plaintext, &mut record).unwrap();
        record
    }

    /// Reads and opens records until `want` bytes of plaintext arrived,
    /// the server closed the connection (or a record failed to open), or
    /// `limit` passed; returns the plaintext and whether the connection ended.
    pub(crate) async fn read_plaintext(
        &mut self,
        want: usize,
        limit: Duration,
    ) -> (BytesMut, bool) {
        let mut plain = BytesMut::new();
        let read = async {
            loop {
                loop {
                    match self.opener.open(&mut self.input) {
                        Ok(Some(record)) => plain.extend_from_slice(&record),
                        Ok(None) => break,
                        Err(_) => return true,
                    }
                }
                if plain.len() >= want {
                    return false;
                }
                self.input.reserve(4096);
                match self.stream.read_buf(&mut self.input).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => {}
                }
            }
        };
        let closed = tokio::time::timeout(limit, read).await.unwrap_or(false);
        (plain, closed)
    }
}
