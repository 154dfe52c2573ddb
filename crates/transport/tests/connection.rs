//! Framed connections over in-memory pipes: backpressure, timeouts,
//! heartbeat, and the Noise and plain data paths. Time is paused where
//! timeouts are measured, so the tests are fast and exact.

// Integration test: a failed unwrap, expect, panic or index is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use netproto_crypto::Keypair;
use netproto_transport::{
    Acceptor, ClientSecurity, Connection, ConnectionConfig, Connector, Error, Incoming,
    NoiseConfig, ServerSecurity, SetupError, TimeoutKind,
};
use netproto_wire::{
    Credit, DataFlags, Decoder, Envelope, Frame, Headers, Message, MessageType, Preface,
    PrefaceAnswer, SecurityMode, Traceparent,
};
use support::{new_acceptor, new_connector};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::Instant;

const HANDSHAKE: Duration = Duration::from_secs(5);

fn keypair() -> Keypair {
    Keypair::generate(&mut rand::rngs::OsRng)
}

async fn pair(
    client: ClientSecurity,
    server: ServerSecurity,
    config: ConnectionConfig,
    pipe: usize,
) -> (Connection, Connection) {
    let server_config = config.clone();
    pair_with(client, server, config, server_config, pipe).await
}

/// As [`pair`], with a configuration of its own for the server.
async fn pair_with(
    client: ClientSecurity,
    server: ServerSecurity,
    config: ConnectionConfig,
    server_config: ConnectionConfig,
    pipe: usize,
) -> (Connection, Connection) {
    let (a, b) = tokio::io::duplex(pipe);
    let server = tokio::spawn(async move {
        new_acceptor(server.clone(), &server_config, HANDSHAKE)
            .accept(b)
            .await
    });
    let client = new_connector(client.clone(), &config, HANDSHAKE)
        .connect(a)
        .await
        .unwrap();
    (client, server.await.unwrap().unwrap())
}

async fn plain_pair(config: ConnectionConfig) -> (Connection, Connection) {
    pair(
        ClientSecurity::Plain,
        ServerSecurity::Plain,
        config,
        64 * 1024,
    )
    .await
}

async fn noise_pair(config: ConnectionConfig) -> (Connection, Connection) {
    pair(
        ClientSecurity::noise(NoiseConfig::new(keypair())),
        ServerSecurity::noise(NoiseConfig::new(keypair())),
        config,
        64 * 1024,
    )
    .await
}

fn echo(id: u64, text: &str) -> Envelope {
    Message::Echo(text.into()).to_envelope(id)
}

async fn next_message(conn: &mut Connection) -> Envelope {
    match conn.recv().await.unwrap() {
        Some(Incoming::Message(envelope)) => envelope,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// Sends `count` messages of every size class both ways and checks them all.
async fn exchange(client: &mut Connection, server: &mut Connection, count: u64) {
    let sizes = [0usize, 1, 63, 600, 70_000, 200_000];
    let sender = client.sender().clone();
    let send = tokio::spawn(async move {
        for id in 1..=count {
            let size = sizes[(id as usize) % sizes.len()];
            let payload = Bytes::from(vec![(id % 251) as u8; size]);
            let msg = Envelope::new(id, MessageType::new("BLOB").unwrap(), payload);
            sender.send(msg).await.unwrap();
        }
    });
    for id in 1..=count {
        let got = next_message(server).await;
        assert_eq!(got.request_id, id);
        let size = sizes[(id as usize) % sizes.len()];
        assert_eq!(got.payload.len(), size);
        assert!(got.payload.iter().all(|b| *b == (id % 251) as u8));
        server.send(got).await.unwrap();
    }
    for id in 1..=count {
        assert_eq!(next_message(client).await.request_id, id);
    }
    send.await.unwrap();
}

#[tokio::test]
async fn plain_round_trips_every_size() {
    let (mut client, mut server) = plain_pair(ConnectionConfig::default()).await;
    exchange(&mut client, &mut server, 60).await;
}

#[tokio::test]
async fn noise_round_trips_every_size_and_knows_the_peer() {
    let client_key = keypair();
    let server_key = keypair();
    let (mut client, mut server) = pair(
        ClientSecurity::noise(NoiseConfig::new(client_key.clone())),
        ServerSecurity::noise(NoiseConfig::new(server_key.clone())),
        ConnectionConfig::default(),
        64 * 1024,
    )
    .await;
    assert_eq!(client.info().peer_static, Some(*server_key.public()));
    assert_eq!(server.info().peer_static, Some(*client_key.public()));
    exchange(&mut client, &mut server, 60).await;
}

#[tokio::test]
async fn noise_rekeys_across_many_records() {
    let mut config = ConnectionConfig::default();
    let mut client_noise = NoiseConfig::new(keypair());
    client_noise.session.record.rekey_interval = 3;
    let mut server_noise = NoiseConfig::new(keypair());
    server_noise.session.record.rekey_interval = 3;
    config.write_batch_bytes = 4096;
    let (mut client, mut server) = pair(
        ClientSecurity::noise(client_noise),
        ServerSecurity::noise(server_noise),
        config,
        8 * 1024,
    )
    .await;
    exchange(&mut client, &mut server, 40).await;
}

#[tokio::test]
async fn noise_frames_spanning_many_records_arrive_whole_between_small_ones() {
    // A 4 MiB message spans 65 records, whose spent headers and tags pile up
    // behind its plaintext until the reader squeezes them out; small messages
    // before and after share records with its first and last bytes.
    let (client, mut server) = noise_pair(ConnectionConfig::default()).await;
    let big: Bytes = (0..4u32 << 20)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    let sender = client.sender().clone();
    let sent = big.clone();
    let send = tokio::spawn(async move {
        for id in 0..3u64 {
            let payload = if id == 1 {
                sent.clone()
            } else {
                Bytes::from_static(b"tiny")
            };
            let msg = Envelope::new(id, MessageType::new("BLOB").unwrap(), payload);
            sender.send(msg).await.unwrap();
        }
    });
    assert_eq!(next_message(&mut server).await.payload, &b"tiny"[..]);
    let got = next_message(&mut server).await;
    assert_eq!(got.request_id, 1);
    assert!(got.payload == big, "the 4 MiB payload arrived changed");
    assert_eq!(next_message(&mut server).await.payload, &b"tiny"[..]);
    send.await.unwrap();
}

#[tokio::test]
async fn compression_is_used_when_both_sides_support_it() {
    let mut config = ConnectionConfig::default();
    config.compression = netproto_wire::Compression::Zstd;
    let (client, mut server) = noise_pair(config).await;
    assert_eq!(client.info().compression, netproto_wire::Compression::Zstd);
    let big = Bytes::from(vec![b'z'; 100_000]);
    let msg = Envelope::new(7, MessageType::new("BIG").unwrap(), big.clone());
    client.send(msg).await.unwrap();
    assert_eq!(next_message(&mut server).await.payload, big);
    let stats = client.stats().snapshot();
    assert!(stats.compress_input_bytes > 100_000, "{stats:?}");
    let ratio = stats.compression_ratio().unwrap();
    assert!(ratio > 0.0 && ratio < 0.01, "{ratio}");
}

#[tokio::test]
async fn stats_count_frames_and_bytes_both_ways() {
    for noise in [false, true] {
        let mut config = ConnectionConfig::default();
        config.heartbeat_interval = None;
        let (client, mut server) = if noise {
            noise_pair(config).await
        } else {
            plain_pair(config).await
        };
        let sender = client.sender().clone();
        for id in 1..=25 {
            sender.send(echo(id, "counted")).await.unwrap();
        }
        for _ in 0..25 {
            next_message(&mut server).await;
        }
        let sent = client.stats().snapshot();
        let received = server.stats().snapshot();
        assert_eq!(sent.frames_out, 25, "noise={noise} {sent:?}");
        assert_eq!(received.frames_in, 25, "noise={noise} {received:?}");
        assert_eq!(sent.bytes_out, received.bytes_in, "noise={noise}");
        // Frames are at least header + envelope; records add their tags.
        assert!(sent.bytes_out >= 25 * 6, "{sent:?}");
        assert_eq!((received.frames_out, sent.frames_in), (0, 0));
        // The counters outlive the connection.
        drop(client);
        assert_eq!(sender.stats().snapshot(), sent);
    }
}

#[tokio::test]
async fn wrong_pin_fails_the_noise_handshake() {
    let mut client_noise = NoiseConfig::new(keypair());
    client_noise.remote_static = Some(*keypair().public());
    let server_identity = keypair();
    let server_key = *server_identity.public();
    let (a, b) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(async move {
        new_acceptor(
            ServerSecurity::noise(NoiseConfig::new(server_identity)),
            &ConnectionConfig::default(),
            HANDSHAKE,
        )
        .accept(b)
        .await
    });
    let err = new_connector(
        ClientSecurity::noise(client_noise),
        &ConnectionConfig::default(),
        HANDSHAKE,
    )
    .connect(a)
    .await
    .unwrap_err();
    // The error names the key the server presented.
    assert!(
        matches!(err, Error::UnknownPeer { presented } if presented == server_key),
        "{err:?}"
    );
    assert!(err.to_string().contains(&server_key.to_string()), "{err}");
    assert!(err.is_authentication() && !err.is_retryable());
    assert!(server.await.unwrap().is_err());
}

#[tokio::test]
async fn a_client_key_off_the_allow_list_is_named_on_the_server() {
    let client_identity = keypair();
    let client_key = *client_identity.public();
    let mut server_noise = NoiseConfig::new(keypair());
    server_noise.allowed_peers = Some(vec![*keypair().public()]);
    let (a, b) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(async move {
        new_acceptor(
            ServerSecurity::noise(server_noise),
            &ConnectionConfig::default(),
            HANDSHAKE,
        )
        .accept(b)
        .await
    });
    let client = new_connector(
        ClientSecurity::noise(NoiseConfig::new(client_identity)),
        &ConnectionConfig::default(),
        HANDSHAKE,
    )
    .connect(a)
    .await;
    let err = server.await.unwrap().unwrap_err();
    assert!(
        matches!(err, Error::UnknownPeer { presented } if presented == client_key),
        "{err:?}"
    );
    drop(client);
}

#[tokio::test]
async fn mode_mismatch_is_refused_with_a_clear_error() {
    let (a, b) = tokio::io::duplex(1024);
    let server = tokio::spawn(async move {
        new_acceptor(
            ServerSecurity::noise(NoiseConfig::new(keypair())),
            &ConnectionConfig::default(),
            HANDSHAKE,
        )
        .accept(b)
        .await
    });
    let err = new_connector(
        ClientSecurity::Plain,
        &ConnectionConfig::default(),
        HANDSHAKE,
    )
    .connect(a)
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Refused {
                mode: SecurityMode::Noise,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(matches!(
        server.await.unwrap(),
        Err(Error::ModeMismatch {
            asked: SecurityMode::Plain,
            offered: SecurityMode::Noise
        })
    ));
}

#[tokio::test]
async fn zero_or_absurd_configuration_is_an_error_not_a_panic() {
    let mut config = ConnectionConfig::default();
    config.backpressure_limit = 0;
    let err = Connector::new(ClientSecurity::Plain, config.clone()).unwrap_err();
    assert!(matches!(err, SetupError::Config(_)), "{err:?}");
    let err = Acceptor::new(ServerSecurity::Plain, config.clone()).unwrap_err();
    assert!(matches!(err, SetupError::Config(_)), "{err:?}");
    let err = Connector::builder(ClientSecurity::Plain, ConnectionConfig::default())
        .handshake_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(matches!(err, SetupError::Config(_)), "{err:?}");
    // The lower-level function checks its arguments on every call.
    let (a, _b) = tokio::io::duplex(1024);
    let err = netproto_transport::connect(a, &ClientSecurity::Plain, &config, HANDSHAKE)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Setup(SetupError::Config(_))),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

/// A raw peer that answers the preface, then does whatever the test says.
async fn raw_server(mut io: DuplexStream) -> DuplexStream {
    let mut preface = [0; 8];
    io.read_exact(&mut preface).await.unwrap();
    let preface = Preface::parse(&preface).unwrap().unwrap();
    let answer = PrefaceAnswer::to(preface, SecurityMode::Plain);
    io.write_all(&answer.to_bytes()).await.unwrap();
    io
}

#[tokio::test(start_paused = true)]
async fn handshake_timeout_when_the_server_never_answers() {
    let (a, _b) = tokio::io::duplex(1024);
    let start = Instant::now();
    let err = new_connector(
        ClientSecurity::Plain,
        &ConnectionConfig::default(),
        Duration::from_secs(3),
    )
    .connect(a)
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Timeout {
                kind: TimeoutKind::Handshake,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(start.elapsed().as_secs(), 3);
}

#[tokio::test(start_paused = true)]
async fn silent_peer_is_declared_dead_within_the_configured_time() {
    let mut config = ConnectionConfig::default();
    config.heartbeat_interval = Some(Duration::from_secs(2));
    config.heartbeat_misses = 3;
    config.idle_timeout = None;
    let (a, b) = tokio::io::duplex(64 * 1024);
    // The peer reads (so our pings go out) but never answers.
    let peer = tokio::spawn(async move {
        let mut io = raw_server(b).await;
        let mut sink = vec![0; 4096];
        let mut pings = 0;
        let mut decoder = Decoder::default();
        let mut buf = BytesMut::new();
        while let Ok(n) = io.read(&mut sink).await {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&sink[..n]);
            while let Ok(Some(frame)) = decoder.decode(&mut buf) {
                if matches!(frame, Frame::Ping(_)) {
                    pings += 1;
                }
            }
        }
        pings
    });
    let mut conn = new_connector(ClientSecurity::Plain, &config, HANDSHAKE)
        .connect(a)
        .await
        .unwrap();
    let start = Instant::now();
    let err = conn.recv().await.unwrap_err();
    let took = start.elapsed();
    assert!(
        matches!(err, Error::Timeout { kind: TimeoutKind::Heartbeat, after } if after == Duration::from_secs(6)),
        "{err:?}"
    );
    assert!(
        took >= Duration::from_secs(6) && took <= Duration::from_secs(8),
        "{took:?}"
    );
    // Resources freed: the connection closed its end, so the peer's read ended.
    let pings = peer.await.unwrap();
    assert!(pings >= 2, "pings sent while waiting: {pings}");
    assert!(conn.sender().is_closed() || conn.send(echo(1, "x")).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn answering_peer_stays_alive_until_idle_timeout() {
    let mut config = ConnectionConfig::default();
    config.heartbeat_interval = Some(Duration::from_secs(1));
    config.heartbeat_misses = 2;
    config.idle_timeout = Some(Duration::from_secs(30));
    // Only the client has an idle timeout, so that it is the one to notice.
    let mut server_config = config.clone();
    server_config.idle_timeout = None;
    let (a, b) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(async move {
        new_acceptor(ServerSecurity::Plain, &server_config, HANDSHAKE)
            .accept(b)
            .await
    });
    let mut client = new_connector(ClientSecurity::Plain, &config, HANDSHAKE)
        .connect(a)
        .await
        .unwrap();
    let mut server = server.await.unwrap().unwrap();
    client.send(echo(1, "hello")).await.unwrap();
    next_message(&mut server).await;
    let start = Instant::now();
    // Heartbeats keep both alive well past 2 s; only idleness ends it.
    let err = client.recv().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Timeout {
                kind: TimeoutKind::Idle,
                ..
            }
        ),
        "{err:?}"
    );
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(29) && took <= Duration::from_secs(40),
        "{took:?}"
    );
    drop(server);
}

/// A client (heartbeat every `client_heartbeat`) and a server (every
/// `server_heartbeat`), in Noise or plain mode.
async fn heartbeat_pair(
    noise: bool,
    client_heartbeat: Option<Duration>,
    server_heartbeat: Option<Duration>,
) -> (Connection, Connection) {
    let mut config = ConnectionConfig::default();
    config.heartbeat_interval = client_heartbeat;
    config.heartbeat_misses = 3;
    config.idle_timeout = None;
    let mut server_config = config.clone();
    server_config.heartbeat_interval = server_heartbeat;
    let (client, server) = if noise {
        (
            ClientSecurity::noise(NoiseConfig::new(keypair())),
            ServerSecurity::noise(NoiseConfig::new(keypair())),
        )
    } else {
        (ClientSecurity::Plain, ServerSecurity::Plain)
    };
    pair_with(client, server, config, server_config, 64 * 1024).await
}

/// Sends `count` messages of `size` bytes from `client` and checks that the
/// server got them all.
async fn burst(
    client: &Connection,
    server: &mut Connection,
    first_id: u64,
    count: u64,
    size: usize,
) {
    let payload = Bytes::from(vec![7u8; size]);
    let msg_type = MessageType::new("BULK").unwrap();
    let sender = client.sender().clone();
    let sending = tokio::spawn(async move {
        for id in first_id..first_id + count {
            let msg = Envelope::new(id, msg_type.clone(), payload.clone());
            sender.send(msg).await.unwrap();
        }
    });
    for id in first_id..first_id + count {
        let msg = next_message(server).await;
        assert_eq!((msg.request_id, msg.payload.len()), (id, size));
    }
    sending.await.unwrap();
}

fn send_buffer(conn: &Connection) -> u64 {
    conn.stats().snapshot().send_buffer_bytes
}

#[tokio::test(start_paused = true)]
async fn send_buffers_grown_by_a_burst_are_given_back_when_idle() {
    let second = Some(Duration::from_secs(1));
    let (client, mut server) = heartbeat_pair(true, second, second).await;
    burst(&client, &mut server, 1, 1, 1 << 20).await;
    let held = send_buffer(&client);
    assert!(held >= 1 << 20, "the sealed 1 MiB message: {held} bytes");
    // One heartbeat interval without a large batch: the buffers shrink.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let idle = send_buffer(&client);
    assert!(idle <= 64 * 1024, "still holding {idle} bytes when idle");
    // And grow again for the next burst.
    burst(&client, &mut server, 2, 1, 1 << 20).await;
    assert!(send_buffer(&client) >= 1 << 20);
}

#[tokio::test(start_paused = true)]
async fn send_buffers_shrink_while_the_side_only_answers_pings() {
    // The server pings every 300 ms, so the client writes pongs all the
    // time and its own heartbeat never comes due; small frames (queued by
    // copy, not by reference) grow the encoded-frame buffers this time.
    let (client, mut server) = heartbeat_pair(
        false,
        Some(Duration::from_secs(1)),
        Some(Duration::from_millis(300)),
    )
    .await;
    burst(&client, &mut server, 1, 400, 4096).await;
    let held = send_buffer(&client);
    assert!(held >= 512 * 1024, "a batch of small frames: {held} bytes");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let idle = send_buffer(&client);
    assert!(
        idle <= 3 * 64 * 1024,
        "still holding {idle} bytes when idle"
    );
    assert!(
        client.stats().snapshot().frames_out > 400,
        "the client answered pings meanwhile"
    );
}

#[tokio::test(start_paused = true)]
async fn send_buffers_are_given_back_without_heartbeats_too() {
    let (client, mut server) = heartbeat_pair(true, None, None).await;
    burst(&client, &mut server, 1, 1, 1 << 20).await;
    assert!(send_buffer(&client) >= 1 << 20);
    // Kept a while for the next burst...
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(send_buffer(&client) >= 1 << 20);
    // ...then given back.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let idle = send_buffer(&client);
    assert!(idle <= 64 * 1024, "still holding {idle} bytes when idle");
}

#[tokio::test]
async fn a_batch_over_four_times_the_batch_size_keeps_no_buffers() {
    let mut config = ConnectionConfig::default();
    config.write_batch_bytes = 64 * 1024;
    let (client, mut server) = noise_pair(config).await;
    // 1 MiB sealed at once is over 4 x 64 KiB: given back after its write.
    burst(&client, &mut server, 1, 1, 1 << 20).await;
    let held = send_buffer(&client);
    assert!(held <= 64 * 1024, "still holding {held} bytes");
}

/// A plain connection whose peer answers the preface, then holds the pipe
/// (`pipe` bytes of buffer) open without ever reading from it; abort the
/// returned task to let it go.
async fn connect_to_a_peer_that_never_reads(
    config: &ConnectionConfig,
    pipe: usize,
) -> (Connection, tokio::task::JoinHandle<()>) {
    let (a, b) = tokio::io::duplex(pipe);
    let peer = tokio::spawn(async move {
        let io = raw_server(b).await;
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(io);
    });
    let conn = new_connector(ClientSecurity::Plain, config, HANDSHAKE)
        .connect(a)
        .await
        .unwrap();
    (conn, peer)
}

#[tokio::test(start_paused = true)]
async fn write_timeout_when_the_peer_never_reads() {
    let mut config = ConnectionConfig::default();
    config.write_timeout = Duration::from_secs(4);
    config.heartbeat_interval = None;
    let (mut conn, peer) = connect_to_a_peer_that_never_reads(&config, 16 * 1024).await;
    let payload = Bytes::from(vec![0u8; 64 * 1024]);
    conn.send(Envelope::new(1, MessageType::new("BIG").unwrap(), payload))
        .await
        .unwrap();
    let err = conn.recv().await.unwrap_err();
    assert!(
        matches!(err, Error::Timeout { kind: TimeoutKind::Write, after } if after == Duration::from_secs(4)),
        "{err:?}"
    );
    peer.abort();
}

#[tokio::test]
async fn a_peer_that_never_reads_meets_backpressure_not_growth() {
    let mut config = ConnectionConfig::default();
    config.backpressure_limit = 16;
    config.heartbeat_interval = None;
    let (conn, peer) = connect_to_a_peer_that_never_reads(&config, 8 * 1024).await;
    let payload = Bytes::from(vec![1u8; 1000]);
    let msg = Envelope::new(1, MessageType::new("DATA").unwrap(), payload);
    let mut accepted = 0;
    let mut refused = 0;
    for _ in 0..10_000 {
        match conn.sender().try_send(msg.clone()) {
            Ok(()) => accepted += 1,
            Err(Error::Backpressure) => refused += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
        tokio::task::yield_now().await;
    }
    // What was accepted is what the queue, one write batch and the pipe hold:
    // bounded by configuration, not by how much the application tried to send.
    let pipe_and_batch = (8 * 1024 + config.write_batch_bytes) / 1000 + 2;
    assert!(
        accepted <= config.backpressure_limit + pipe_and_batch,
        "{accepted}"
    );
    assert!(refused >= 10_000 - accepted);
    assert_eq!(conn.sender().capacity(), 0);
    assert_eq!(
        conn.stats().snapshot().backpressure_refusals,
        refused as u64
    );
    // An async send waits instead of failing.
    let waiting = tokio::time::timeout(Duration::from_millis(100), conn.send(msg)).await;
    assert!(waiting.is_err(), "send must wait while the queue is full");
    assert_eq!(conn.stats().snapshot().backpressure_waits, 1);
    peer.abort();
}

#[tokio::test]
async fn large_payloads_queued_by_reference_still_count_against_the_byte_bound() {
    let mut config = ConnectionConfig::default();
    config.backpressure_limit = 1000;
    config.heartbeat_interval = None;
    let (conn, peer) = connect_to_a_peer_that_never_reads(&config, 8 * 1024).await;
    let payload = Bytes::from(vec![7u8; 64 * 1024]);
    let msg = Envelope::new(1, MessageType::new("BIG").unwrap(), payload);
    let mut accepted = 0usize;
    for _ in 0..200 {
        if conn.sender().try_send(msg.clone()).is_ok() {
            accepted += 1;
        }
        tokio::task::yield_now().await;
    }
    // The frame bound (1000) is far off: what stops the sender is the byte
    // bound, queue and write in progress, one message past each.
    let bound = 2 * (config.write_batch_bytes / (64 * 1024) + 1) + 1;
    assert!(accepted <= bound, "{accepted} > {bound}");
    assert!(accepted >= 2, "{accepted}");
    peer.abort();
}

#[tokio::test]
async fn full_inbound_queue_stops_reading_and_resumes() {
    let mut config = ConnectionConfig::default();
    config.inbound_limit = 4;
    config.heartbeat_interval = None;
    let (client, mut server) = plain_pair(config).await;
    let sender = client.sender().clone();
    // 2,000 messages of 1 KiB: far more than the queues and the 64 KiB pipe hold.
    let send = tokio::spawn(async move {
        for id in 1..=2000u64 {
            let msg = Envelope::new(
                id,
                MessageType::new("DATA").unwrap(),
                vec![0u8; 1024].into(),
            );
            sender.send(msg).await.unwrap();
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !send.is_finished(),
        "the sender must be held back while nobody reads"
    );
    for id in 1..=2000u64 {
        assert_eq!(next_message(&mut server).await.request_id, id);
    }
    send.await.unwrap();
}

#[tokio::test]
async fn clean_close_delivers_everything_then_ends() {
    let (client, mut server) = plain_pair(ConnectionConfig::default()).await;
    for id in 1..=100 {
        client.send(echo(id, "bye")).await.unwrap();
    }
    client.sender().close().await.unwrap();
    for id in 1..=100 {
        assert_eq!(next_message(&mut server).await.request_id, id);
    }
    assert_eq!(server.recv().await.unwrap(), None);
    assert_eq!(server.recv().await.unwrap(), None);
}

#[tokio::test]
async fn protocol_violation_is_reported_and_closes() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let peer = tokio::spawn(async move {
        let mut io = raw_server(b).await;
        // A header declaring a body over the 16 MiB limit.
        let mut junk = BytesMut::new();
        junk.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x01, 0x00]);
        io.write_all(&junk).await.unwrap();
        let mut rest = Vec::new();
        let _ = io.read_to_end(&mut rest).await;
    });
    let mut conn = new_connector(
        ClientSecurity::Plain,
        &ConnectionConfig::default(),
        HANDSHAKE,
    )
    .connect(a)
    .await
    .unwrap();
    let err = conn.recv().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Protocol(netproto_wire::Error::FrameTooLarge { .. })
        ),
        "{err:?}"
    );
    tokio::time::timeout(Duration::from_secs(5), peer)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn goaway_and_error_frames_reach_the_application() {
    let (client, mut server) = plain_pair(ConnectionConfig::default()).await;
    let goaway = netproto_wire::GoAway::new(9, netproto_wire::ErrorCode::SHUTTING_DOWN, "restart");
    client
        .sender()
        .send_frame(Frame::GoAway(goaway.clone()))
        .await
        .unwrap();
    let error = netproto_wire::ErrorFrame::new(3, netproto_wire::ErrorCode::NO_HANDLER, "no FOO");
    client
        .sender()
        .send_frame(Frame::Error(error.clone()))
        .await
        .unwrap();
    assert_eq!(server.recv().await.unwrap(), Some(Incoming::GoAway(goaway)));
    assert_eq!(server.recv().await.unwrap(), Some(Incoming::Error(error)));
}

/// `len` bytes of 16 values in an irregular order: Zstd halves them, so a
/// large one stays large (a segment) once compressed.
fn half_compressible(len: usize, seed: u64) -> Bytes {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            b'a' + (state % 16) as u8
        })
        .collect()
}

/// A request with a header block in front of `payload`, flagged HEADERS and `extra`.
fn with_headers(id: u64, payload: &[u8], extra: DataFlags) -> (Envelope, Headers) {
    let mut headers = Headers::default();
    headers.deadline = Some(1500);
    headers.stream = Some(32);
    headers.traceparent = Traceparent::new(0x4bf9_2f35_77b3_4da6, 0x00f0_67aa_0ba9_02b7, 1);
    let mut body = BytesMut::new();
    headers.encode(&mut body);
    body.extend_from_slice(payload);
    let envelope = Envelope::new(id, MessageType::new("kv.watch.v1").unwrap(), body.freeze())
        .with_flags(DataFlags::HEADERS | extra);
    (envelope, headers)
}

/// An item without its payload, for failure messages.
fn brief(item: &Incoming) -> String {
    match item {
        Incoming::Message(envelope) => format!(
            "message {} {:?} with {} bytes",
            envelope.request_id,
            envelope.flags,
            envelope.payload.len()
        ),
        other => format!("{other:?}"),
    }
}

/// What crosses a connection for Part III: the data flags on every send
/// path (in line, a payload queued by reference, compressed in line and as
/// a segment, decompressed in line and aside), the header block inside the
/// compressed envelope, and cancel, credit and end frames, all in the order
/// sent; the receiver echoes the messages and the flags come back as well.
#[tokio::test]
async fn flags_headers_and_stream_control_frames_cross_in_order() {
    for noise in [false, true] {
        let mut config = ConnectionConfig::default();
        if noise {
            config.compression = netproto_wire::Compression::Zstd;
        }
        let (mut client, mut server) = if noise {
            noise_pair(config).await
        } else {
            plain_pair(config).await
        };
        let (small, small_headers) = with_headers(1, b"get", DataFlags::NONE);
        let (big, big_headers) = with_headers(2, &vec![b'w'; 100_000], DataFlags::STREAM);
        let items = [
            Envelope::new(2, MessageType::ECHO, Bytes::from_static(b"item")),
            Envelope::new(2, MessageType::ECHO, half_compressible(100_000, 2)),
            Envelope::new(2, MessageType::ECHO, half_compressible(20_000, 3)),
        ]
        .map(|item| item.with_flags(DataFlags::STREAM));
        let sender = client.sender().clone();
        sender.send(small.clone()).await.unwrap();
        sender.send(big.clone()).await.unwrap();
        sender
            .send_frame(Frame::Credit(Credit::new(2, 8)))
            .await
            .unwrap();
        for item in &items {
            sender.send(item.clone()).await.unwrap();
        }
        sender.send_frame(Frame::End(2)).await.unwrap();
        sender.send_frame(Frame::Cancel(1)).await.unwrap();
        let mut messages = vec![small, big];
        messages.extend(items);
        let mut want: Vec<Incoming> = messages.iter().cloned().map(Incoming::Message).collect();
        want.insert(2, Incoming::Credit(Credit::new(2, 8)));
        want.extend([Incoming::End(2), Incoming::Cancel(1)]);
        let mut headers = [small_headers, big_headers].into_iter();
        for (i, expected) in want.iter().enumerate() {
            let got = server.recv().await.unwrap();
            // Not assert_eq: the payloads are 100 KB.
            assert!(
                got.as_ref() == Some(expected),
                "noise {noise}, item {i}: {:?} instead of {:?}",
                got.as_ref().map(brief),
                brief(expected)
            );
            if let Some(Incoming::Message(envelope)) = got {
                if envelope.flags.contains(DataFlags::HEADERS) {
                    let mut request = envelope.clone();
                    assert_eq!(request.take_headers().unwrap(), headers.next());
                }
                server.send(envelope).await.unwrap();
            }
        }
        assert_eq!(headers.next(), None);
        for sent in &messages {
            let echoed = Incoming::Message(next_message(&mut client).await);
            assert!(
                echoed == Incoming::Message(sent.clone()),
                "noise {noise}: {:?} came back",
                brief(&echoed)
            );
        }
        if noise {
            let stats = client.stats().snapshot();
            assert!(stats.compress_input_bytes > 200_000, "{stats:?}");
        }
    }
}

#[tokio::test]
async fn oversized_message_is_refused_at_send() {
    let mut config = ConnectionConfig::default();
    config.max_frame_len = 1024;
    let (client, _server) = noise_pair(config).await;
    let msg = Envelope::new(1, MessageType::new("BIG").unwrap(), vec![0u8; 2000].into());
    let err = client.send(msg).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Protocol(netproto_wire::Error::EncodeTooLarge { .. })
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn half_close_lets_the_other_side_still_answer() {
    let (client, mut server) = plain_pair(ConnectionConfig::default()).await;
    let (client_sender, mut client_receiver, _) = client.split();
    for id in 1..=10 {
        client_sender.send(echo(id, "q")).await.unwrap();
    }
    client_sender.close().await.unwrap();
    // The server sees every request, then the end of the client's stream...
    let mut requests = Vec::new();
    while let Some(item) = server.recv().await.unwrap() {
        let Incoming::Message(env) = item else {
            panic!("unexpected {item:?}")
        };
        requests.push(env);
    }
    assert_eq!(requests.len(), 10);
    // ...and can still answer all of them.
    for env in requests {
        server.send(env).await.unwrap();
    }
    server.sender().close().await.unwrap();
    for id in 1..=10 {
        match client_receiver.recv().await.unwrap() {
            Some(Incoming::Message(env)) => assert_eq!(env.request_id, id),
            other => panic!("expected reply {id}, got {other:?}"),
        }
    }
    assert_eq!(client_receiver.recv().await.unwrap(), None);
}

#[tokio::test]
async fn oversized_control_frames_are_refused_at_send() {
    let (client, _server) = plain_pair(ConnectionConfig::default()).await;
    let text = "x".repeat(5000);
    let frame = Frame::Error(netproto_wire::ErrorFrame::new(
        1,
        netproto_wire::ErrorCode::INTERNAL,
        text,
    ));
    let err = client.sender().send_frame(frame).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Protocol(netproto_wire::Error::EncodeTooLarge { .. })
        ),
        "{err:?}"
    );
    // The connection is still usable.
    client.send(echo(1, "still here")).await.unwrap();
}
