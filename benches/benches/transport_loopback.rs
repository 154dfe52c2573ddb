//! Loopback throughput of netproto connections against raw tokio baselines.
//!
//! `cargo bench -p netproto-benches --bench transport_loopback`
//!
//! Everything runs over real loopback TCP (127.0.0.1, port 0) on one
//! multi-thread tokio runtime with 2 workers. Connecting and handshakes happen
//! once per row, outside the timed part. A timed iteration tells a long-lived
//! sending task to send one fixed batch and ends when the long-lived receiving
//! task has all of it; every wait is bounded by [`ITERATION_LIMIT`].
//!
//! Groups (each compares rows measured in the same run):
//! - `transport_oneway_64B`: 10,000 messages of 64 payload bytes, one way
//!   (messages/s).
//! - `transport_echo_64B`: the client sends 10,000 messages of 64 bytes while
//!   concurrently receiving the 10,000 echoes (echoes/s).
//! - `transport_bulk_64KiB`: 256 messages of 64 KiB, one way (bytes/s).
//!
//! Rows:
//! - `netproto_plain`, `netproto_noise` (default RustCrypto backend),
//!   `netproto_noise_ring` (ring backend): netproto connections with the
//!   default [`ConnectionConfig`]; the application sends with `Sender::send`
//!   and receives with `Receiver::recv`. A message is an `Envelope` with a
//!   one-byte type name and the payload, so a frame carries a few more bytes
//!   than the raw rows.
//! - `netproto_tls`: netproto's TLS security mode (`ClientSecurity::Tls`,
//!   `ServerSecurity::Tls`) with a self-signed certificate from
//!   `netproto_transport::tls::self_signed`.
//! - `raw_ldc`: tokio-util's `LengthDelimitedCodec` over the split
//!   `TcpStream`, batched like our writer (`feed` every message, one `flush`
//!   per batch; the echo server `forward`s, which flushes when its input
//!   runs dry).
//! - `raw_rustls_ldc`: the same inside tokio-rustls.
//! - `raw_rustls` (bulk only): `write_all` of 64 KiB chunks through
//!   tokio-rustls, read into a 64 KiB buffer by the other side.
//! - `raw_rustls_chacha` (bulk only): the same restricted to
//!   TLS13_CHACHA20_POLY1305_SHA256, the AEAD Noise uses.
//!
//! Raw TLS rows use TLS 1.3 with rustls's ring provider and a self-signed
//! rcgen certificate; the suite they negotiate by default is printed once.
//!
//! Acceptance ratios (same run): `netproto_plain / raw_ldc` one-way 64 B
//! ≥ 0.5; `netproto_noise / raw_ldc` one-way 64 B ≥ 0.3; `netproto_noise /
//! raw_rustls` bulk 64 KiB ≥ 0.8.
//!
//! Copy-heavy rows (bulk) can be bimodal on machines where glibc copies
//! buffers whose addresses differ by a few bytes modulo 4096 slowly.

// Benchmark: setup failures abort the run; no library code here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![allow(missing_docs)] // criterion_group! generates undocumented functions

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{
    BenchmarkGroup, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
    measurement::WallTime,
};
use futures::{SinkExt, StreamExt, TryStreamExt};
use netproto_crypto::{Keypair, provider};
use netproto_transport::{
    AcceptLimits, Acceptor, ClientSecurity, Connection, ConnectionConfig, Connector, Incoming, Io,
    NoiseConfig, Receiver, Sender, ServerSecurity, connect_tcp, tls,
};
use netproto_wire::{Envelope, MessageType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

/// Payload bytes of a small message.
const SMALL: usize = 64;
/// Small messages per timed iteration.
const SMALL_BATCH: u64 = 10_000;
/// Bytes of a bulk message (or raw chunk).
const BULK: usize = 64 * 1024;
/// Bulk messages per timed iteration.
const BULK_BATCH: u64 = 256;
/// Longest wait for one connection set-up or one batch; exceeding it is a bug.
const ITERATION_LIMIT: Duration = Duration::from_secs(30);
/// Samples per row: iterations take milliseconds, so 20 flat samples fit the
/// measurement time.
const SAMPLES: usize = 20;

/// What carries the messages of one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stack {
    NetprotoPlain,
    NetprotoNoise,
    NetprotoNoiseRing,
    NetprotoNoiseAesGcm,
    NetprotoTls,
    RawLdc,
    RawRustlsLdc,
    RawRustls,
    RawRustlsChacha,
}

impl Stack {
    fn name(self) -> &'static str {
        match self {
            Self::NetprotoPlain => "netproto_plain",
            Self::NetprotoNoise => "netproto_noise",
            Self::NetprotoNoiseRing => "netproto_noise_ring",
            Self::NetprotoNoiseAesGcm => "netproto_noise_aesgcm",
            Self::NetprotoTls => "netproto_tls",
            Self::RawLdc => "raw_ldc",
            Self::RawRustlsLdc => "raw_rustls_ldc",
            Self::RawRustls => "raw_rustls",
            Self::RawRustlsChacha => "raw_rustls_chacha",
        }
    }
}

/// How the messages of one row flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pattern {
    /// Client to server only.
    OneWay,
    /// Client to server and back; the client counts the echoes.
    Echo,
}

/// One running row: a sending task started by `go`, a counting task that
/// reports on `done` after every batch, and whatever must stay alive.
struct Rig {
    go: mpsc::Sender<()>,
    done: mpsc::Receiver<()>,
    tasks: Vec<JoinHandle<()>>,
    _keep: Vec<Box<dyn Any + Send>>,
}

impl Rig {
    /// Runs `iters` batches and returns the time they took.
    async fn run(&mut self, iters: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..iters {
            self.go.send(()).await.expect("the sending task stopped");
            tokio::time::timeout(ITERATION_LIMIT, self.done.recv())
                .await
                .expect("a batch took longer than the iteration limit")
                .expect("the receiving task stopped");
        }
        start.elapsed()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn bounded<T>(what: &str, work: impl Future<Output = T>) -> T {
    match tokio::time::timeout(ITERATION_LIMIT, work).await {
        Ok(value) => value,
        Err(_) => panic!("{what} took longer than {ITERATION_LIMIT:?}"),
    }
}

/// A connected loopback TCP pair (client, server), `TCP_NODELAY` on both.
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    let (client, server) = bounded("TCP connect", async {
        tokio::join!(connect_tcp(addr, ITERATION_LIMIT), listener.accept())
    })
    .await;
    let client = client.expect("connect");
    let (server, _) = server.expect("accept");
    server.set_nodelay(true).expect("nodelay");
    (client, server)
}

/// rustls configurations trusting one fresh self-signed certificate; TLS 1.3
/// with the ring provider, optionally restricted to ChaCha20-Poly1305.
fn tls_configs(chacha_only: bool) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let cert: CertificateDer<'static> = cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing_key.serialize_der()));
    let mut ring = rustls::crypto::ring::default_provider();
    if chacha_only {
        ring.cipher_suites
            .retain(|s| s.suite() == rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
    }
    let ring = Arc::new(ring);
    let server = ServerConfig::builder_with_provider(ring.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .expect("server certificate");
    let mut roots = RootCertStore::empty();
    roots.add(cert).expect("root");
    let client = ClientConfig::builder_with_provider(ring)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

type ClientTls = tokio_rustls::client::TlsStream<TcpStream>;
type ServerTls = tokio_rustls::server::TlsStream<TcpStream>;

/// A TLS 1.3 pair over a fresh loopback TCP pair.
async fn tls_pair(chacha_only: bool) -> (ClientTls, ServerTls) {
    let (client_tcp, server_tcp) = tcp_pair().await;
    let (server_config, client_config) = tls_configs(chacha_only);
    let name = ServerName::try_from("localhost").expect("server name");
    let (client, server) = bounded("TLS handshake", async {
        tokio::join!(
            TlsConnector::from(client_config).connect(name, client_tcp),
            TlsAcceptor::from(server_config).accept(server_tcp),
        )
    })
    .await;
    (client.expect("TLS connect"), server.expect("TLS accept"))
}

/// A netproto connection pair (client, server) over `client_io`/`server_io`.
async fn netproto_over<C: Io, S: Io>(
    client_io: C,
    server_io: S,
    client: ClientSecurity,
    server: ServerSecurity,
) -> (Connection, Connection) {
    let connector = Connector::builder(client, ConnectionConfig::default())
        .handshake_timeout(ITERATION_LIMIT)
        .build()
        .expect("connector");
    let acceptor = Acceptor::builder(server, ConnectionConfig::default())
        .limits(AcceptLimits::new(ITERATION_LIMIT, ITERATION_LIMIT))
        .build()
        .expect("acceptor");
    let (client, server) = bounded("netproto handshake", async {
        tokio::join!(connector.connect(client_io), acceptor.accept(server_io))
    })
    .await;
    (client.expect("connect"), server.expect("accept"))
}

async fn netproto_pair(stack: Stack) -> (Connection, Connection) {
    let noise = |ring: bool| {
        let mut config = NoiseConfig::new(Keypair::generate(&mut rand::rngs::OsRng));
        if ring {
            config.provider = Some(provider::ring());
        }
        config
    };
    match stack {
        Stack::NetprotoTls => {
            let cert = tls::self_signed(&["localhost".to_owned()]).expect("certificate");
            let acceptor = tls::TlsAcceptor::from_pem(
                cert.cert_pem().as_bytes(),
                cert.key_pem().as_bytes(),
                None,
                false,
            )
            .expect("acceptor");
            let connector = tls::TlsConnector::builder()
                .ca_pem(cert.cert_pem())
                .build()
                .expect("connector");
            let client = ClientSecurity::Tls {
                connector,
                server_name: "localhost".to_owned(),
            };
            let (c, s) = tcp_pair().await;
            netproto_over(c, s, client, ServerSecurity::Tls(acceptor)).await
        }
        Stack::NetprotoNoise | Stack::NetprotoNoiseRing => {
            let ring = stack == Stack::NetprotoNoiseRing;
            let (c, s) = tcp_pair().await;
            netproto_over(
                c,
                s,
                ClientSecurity::noise(noise(ring)),
                ServerSecurity::noise(noise(ring)),
            )
            .await
        }
        Stack::NetprotoNoiseAesGcm => {
            // Noise_XX_25519_AESGCM_SHA256 on ring: the cipher TLS negotiates here.
            let aes = || {
                let mut config = noise(true);
                config.session.cipher = netproto_crypto::CipherAlgorithm::Aes256Gcm;
                config
            };
            let (c, s) = tcp_pair().await;
            netproto_over(
                c,
                s,
                ClientSecurity::noise(aes()),
                ServerSecurity::noise(aes()),
            )
            .await
        }
        _ => {
            let (c, s) = tcp_pair().await;
            netproto_over(c, s, ClientSecurity::Plain, ServerSecurity::Plain).await
        }
    }
}

/// Sends `batch` envelopes of `payload` for every `go`.
async fn netproto_send(sender: Sender, mut go: mpsc::Receiver<()>, payload: Bytes, batch: u64) {
    let msg_type = MessageType::from_static("X");
    let mut id = 0u64;
    while go.recv().await.is_some() {
        for _ in 0..batch {
            id += 1;
            let envelope = Envelope::new(id, msg_type.clone(), payload.clone());
            sender.send(envelope).await.expect("netproto send");
        }
    }
}

/// Counts received messages and reports every `batch`.
async fn netproto_count(mut receiver: Receiver, done: mpsc::Sender<()>, batch: u64) {
    let mut count = 0;
    while let Some(item) = receiver.recv().await.expect("netproto receive") {
        if let Incoming::Message(_) = item {
            count += 1;
            if count == batch {
                count = 0;
                if done.send(()).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Sends every message back.
async fn netproto_echo(sender: Sender, mut receiver: Receiver) {
    while let Ok(Some(item)) = receiver.recv().await {
        if let Incoming::Message(envelope) = item
            && sender.send(envelope).await.is_err()
        {
            return;
        }
    }
}

async fn netproto_rig(stack: Stack, pattern: Pattern, size: usize, batch: u64) -> Rig {
    let (client, server) = netproto_pair(stack).await;
    let (go_tx, go_rx) = mpsc::channel(1);
    let (done_tx, done_rx) = mpsc::channel(1);
    let payload = Bytes::from(vec![0xa5; size]);
    let (client_tx, client_rx, _) = client.split();
    let (server_tx, server_rx, _) = server.split();
    let mut tasks = vec![tokio::spawn(netproto_send(
        client_tx, go_rx, payload, batch,
    ))];
    let mut keep: Vec<Box<dyn Any + Send>> = Vec::new();
    match pattern {
        Pattern::OneWay => {
            tasks.push(tokio::spawn(netproto_count(server_rx, done_tx, batch)));
            // Dropping the server's sender would close the connection.
            keep.push(Box::new(server_tx));
            keep.push(Box::new(client_rx));
        }
        Pattern::Echo => {
            tasks.push(tokio::spawn(netproto_echo(server_tx, server_rx)));
            tasks.push(tokio::spawn(netproto_count(client_rx, done_tx, batch)));
        }
    }
    Rig {
        go: go_tx,
        done: done_rx,
        tasks,
        _keep: keep,
    }
}

/// Feeds `batch` frames of `payload` for every `go`, then flushes once.
async fn ldc_send<W: AsyncWrite + Unpin>(
    mut sink: FramedWrite<W, LengthDelimitedCodec>,
    mut go: mpsc::Receiver<()>,
    payload: Bytes,
    batch: u64,
) {
    while go.recv().await.is_some() {
        for _ in 0..batch {
            sink.feed(payload.clone()).await.expect("codec feed");
        }
        SinkExt::<Bytes>::flush(&mut sink)
            .await
            .expect("codec flush");
    }
}

/// Counts received frames and reports every `batch`.
async fn ldc_count<R: AsyncRead + Unpin>(
    mut stream: FramedRead<R, LengthDelimitedCodec>,
    done: mpsc::Sender<()>,
    batch: u64,
) {
    let mut count = 0;
    while let Some(frame) = stream.next().await {
        frame.expect("codec receive");
        count += 1;
        if count == batch {
            count = 0;
            if done.send(()).await.is_err() {
                return;
            }
        }
    }
}

/// Frames every message back; `forward` flushes whenever the input runs dry.
async fn ldc_echo<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(read: R, write: W) {
    let stream = FramedRead::new(read, LengthDelimitedCodec::new()).map_ok(BytesMut::freeze);
    let _ = stream
        .forward(FramedWrite::new(write, LengthDelimitedCodec::new()))
        .await;
}

/// The client and server halves of one stream pair.
struct Halves<CR, CW, SR, SW> {
    client_read: CR,
    client_write: CW,
    server_read: SR,
    server_write: SW,
}

fn ldc_rig<CR, CW, SR, SW>(
    halves: Halves<CR, CW, SR, SW>,
    pattern: Pattern,
    size: usize,
    batch: u64,
) -> Rig
where
    CR: AsyncRead + Unpin + Send + 'static,
    CW: AsyncWrite + Unpin + Send + 'static,
    SR: AsyncRead + Unpin + Send + 'static,
    SW: AsyncWrite + Unpin + Send + 'static,
{
    let (go_tx, go_rx) = mpsc::channel(1);
    let (done_tx, done_rx) = mpsc::channel(1);
    let payload = Bytes::from(vec![0xa5; size]);
    let sink = FramedWrite::new(halves.client_write, LengthDelimitedCodec::new());
    let mut tasks = vec![tokio::spawn(ldc_send(sink, go_rx, payload, batch))];
    let mut keep: Vec<Box<dyn Any + Send>> = Vec::new();
    match pattern {
        Pattern::OneWay => {
            let stream = FramedRead::new(halves.server_read, LengthDelimitedCodec::new());
            tasks.push(tokio::spawn(ldc_count(stream, done_tx, batch)));
            keep.push(Box::new(halves.server_write));
            keep.push(Box::new(halves.client_read));
        }
        Pattern::Echo => {
            tasks.push(tokio::spawn(ldc_echo(
                halves.server_read,
                halves.server_write,
            )));
            let stream = FramedRead::new(halves.client_read, LengthDelimitedCodec::new());
            tasks.push(tokio::spawn(ldc_count(stream, done_tx, batch)));
        }
    }
    Rig {
        go: go_tx,
        done: done_rx,
        tasks,
        _keep: keep,
    }
}

/// Writes `batch` chunks for every `go`, then flushes.
async fn bytes_send<W: AsyncWrite + Unpin>(
    mut io: W,
    mut go: mpsc::Receiver<()>,
    chunk: Bytes,
    batch: u64,
) {
    while go.recv().await.is_some() {
        for _ in 0..batch {
            io.write_all(&chunk).await.expect("write");
        }
        io.flush().await.expect("flush");
    }
}

/// Reads into a chunk-sized buffer and reports every `per_batch` bytes.
async fn bytes_count<R: AsyncRead + Unpin>(mut io: R, done: mpsc::Sender<()>, per_batch: u64) {
    let mut buf = vec![0u8; BULK];
    let mut count = 0u64;
    loop {
        let n = io.read(&mut buf).await.expect("read");
        if n == 0 {
            return;
        }
        count += n as u64;
        if count >= per_batch {
            count -= per_batch;
            if done.send(()).await.is_err() {
                return;
            }
        }
    }
}

async fn rustls_bytes_rig(chacha_only: bool, batch: u64) -> Rig {
    let (client, server) = tls_pair(chacha_only).await;
    let (go_tx, go_rx) = mpsc::channel(1);
    let (done_tx, done_rx) = mpsc::channel(1);
    let chunk = Bytes::from(vec![0xa5; BULK]);
    let tasks = vec![
        tokio::spawn(bytes_send(client, go_rx, chunk, batch)),
        tokio::spawn(bytes_count(server, done_tx, batch * BULK as u64)),
    ];
    Rig {
        go: go_tx,
        done: done_rx,
        tasks,
        _keep: Vec::new(),
    }
}

async fn rig(stack: Stack, pattern: Pattern, size: usize, batch: u64) -> Rig {
    match stack {
        Stack::NetprotoPlain
        | Stack::NetprotoNoise
        | Stack::NetprotoNoiseRing
        | Stack::NetprotoNoiseAesGcm
        | Stack::NetprotoTls => netproto_rig(stack, pattern, size, batch).await,
        Stack::RawLdc => {
            let (client, server) = tcp_pair().await;
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let halves = Halves {
                client_read,
                client_write,
                server_read,
                server_write,
            };
            ldc_rig(halves, pattern, size, batch)
        }
        Stack::RawRustlsLdc => {
            let (client, server) = tls_pair(false).await;
            let (client_read, client_write) = tokio::io::split(client);
            let (server_read, server_write) = tokio::io::split(server);
            let halves = Halves {
                client_read,
                client_write,
                server_read,
                server_write,
            };
            ldc_rig(halves, pattern, size, batch)
        }
        Stack::RawRustls | Stack::RawRustlsChacha => {
            assert_eq!(pattern, Pattern::OneWay, "raw byte rows are one-way");
            assert_eq!(size, BULK, "raw byte rows write {BULK}-byte chunks");
            rustls_bytes_rig(stack == Stack::RawRustlsChacha, batch).await
        }
    }
}

fn row(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    stack: Stack,
    pattern: Pattern,
    size: usize,
    batch: u64,
) {
    let mut rig = rt.block_on(rig(stack, pattern, size, batch));
    group.bench_function(stack.name(), |b| {
        b.iter_custom(|iters| rt.block_on(rig.run(iters)));
    });
    drop(rig);
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group.sample_size(SAMPLES);
    group.sampling_mode(SamplingMode::Flat);
}

/// Prints the suite rustls negotiates by default on this machine, once.
fn print_default_suite(rt: &Runtime) {
    let (client, _server) = rt.block_on(tls_pair(false));
    let suite = client.get_ref().1.negotiated_cipher_suite();
    eprintln!("raw_rustls default negotiated suite: {suite:?}");
}

const SMALL_ROWS: [Stack; 6] = [
    Stack::RawLdc,
    Stack::NetprotoPlain,
    Stack::NetprotoNoise,
    Stack::NetprotoNoiseRing,
    Stack::RawRustlsLdc,
    Stack::NetprotoTls,
];

fn oneway_small(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("transport_oneway_64B");
    configure(&mut group);
    group.throughput(Throughput::Elements(SMALL_BATCH));
    for stack in SMALL_ROWS {
        row(&mut group, &rt, stack, Pattern::OneWay, SMALL, SMALL_BATCH);
    }
    group.finish();
}

fn echo_small(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("transport_echo_64B");
    configure(&mut group);
    group.throughput(Throughput::Elements(SMALL_BATCH));
    for stack in SMALL_ROWS {
        row(&mut group, &rt, stack, Pattern::Echo, SMALL, SMALL_BATCH);
    }
    group.finish();
}

fn bulk(c: &mut Criterion) {
    let rt = runtime();
    print_default_suite(&rt);
    let mut group = c.benchmark_group("transport_bulk_64KiB");
    configure(&mut group);
    group.throughput(Throughput::Bytes(BULK_BATCH * BULK as u64));
    for stack in [
        Stack::RawLdc,
        Stack::NetprotoPlain,
        Stack::RawRustls,
        Stack::RawRustlsChacha,
        Stack::NetprotoNoise,
        Stack::NetprotoNoiseRing,
        Stack::NetprotoNoiseAesGcm,
        Stack::NetprotoTls,
    ] {
        row(&mut group, &rt, stack, Pattern::OneWay, BULK, BULK_BATCH);
    }
    group.finish();
}

criterion_group!(benches, oneway_small, echo_small, bulk);
criterion_main!(benches);
