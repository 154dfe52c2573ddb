//! A connection that closes on its peer's error says why first: a raw plain
//! peer, written byte by byte from PROTOCOL.md, breaks the protocol in each
//! way the spec lists and reads back the error frame (request id 0, its code
//! and the spec's text), then a clean end of stream, not a reset; answers to
//! requests sent before the error arrive before the error frame.

// Integration test: a failed unwrap, expect, panic or index is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::time::Duration;

use bytes::BytesMut;
use netproto_transport::{
    Acceptor, ConnectionConfig, Error, Incoming, ServerSecurity, StartOptions,
};
use netproto_wire::{Decoder, ErrorCode, Frame};
use support::new_acceptor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LIMIT: Duration = Duration::from_secs(10);
const HANDSHAKE: Duration = Duration::from_secs(5);

/// A frame header: body length, kind, flags.
fn header(len: u32, kind: u8, flags: u8) -> Vec<u8> {
    let mut bytes = len.to_be_bytes().to_vec();
    bytes.extend([kind, flags]);
    bytes
}

/// A data frame holding the envelope (request `id`, type `ECHO`, `text`).
fn echo_request(id: u8, text: &[u8]) -> Vec<u8> {
    let mut body = vec![id, 4];
    body.extend(b"ECHO");
    body.extend(text);
    let mut frame = header(u32::try_from(body.len()).unwrap(), 1, 0);
    frame.extend(body);
    frame
}

/// Connects in plain mode: the preface, and its answer checked.
async fn raw_plain(addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"NETP\x01\x00\x00\x00").await.unwrap();
    let mut answer = [0; 8];
    stream.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"NETP\x01\x00\x00\x00");
    stream
}

/// Reads frames until the end of the stream; a reset fails the test.
async fn frames_until_end(stream: &mut TcpStream) -> Vec<Frame> {
    let mut buf = BytesMut::new();
    loop {
        let n = stream
            .read_buf(&mut buf)
            .await
            .expect("the stream ended with an error (a reset?), not a clean end");
        if n == 0 {
            break;
        }
    }
    let mut frames = Vec::new();
    let mut decoder = Decoder::new(16 * 1024 * 1024);
    while let Some(frame) = decoder.decode(&mut buf).unwrap() {
        frames.push(frame);
    }
    assert!(buf.is_empty(), "bytes after the last frame: {buf:?}");
    frames
}

/// A plain echo server for one connection on a fresh loopback port: its
/// address, and the task that returns how the connection ended.
async fn spawn_echo_server() -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<Result<(), Error>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = new_acceptor(
        ServerSecurity::Plain,
        &ConnectionConfig::default(),
        HANDSHAKE,
    );
    (addr, tokio::spawn(echo_server(acceptor, listener)))
}

/// An echo server on one connection; returns how it ended.
async fn echo_server(acceptor: Acceptor, listener: TcpListener) -> Result<(), Error> {
    let (stream, _) = listener.accept().await.unwrap();
    let mut conn = acceptor.accept(stream).await?;
    while let Some(item) = conn.recv().await? {
        if let Incoming::Message(envelope) = item {
            // A send after the connection began closing fails: fine.
            let _ = conn.send(envelope).await;
        }
    }
    Ok(())
}

/// The cases of PROTOCOL.md that end a connection: the bytes sent after one
/// good request, the code and the text of the error frame that must come back.
fn cases() -> Vec<(&'static str, Vec<u8>, ErrorCode, &'static str)> {
    vec![
        (
            "reserved flag bit",
            header(8, 2, 0x04),
            ErrorCode::PROTOCOL,
            "unknown frame flags 0x04",
        ),
        (
            "compression bits 3",
            header(8, 1, 0x03),
            ErrorCode::PROTOCOL,
            "unknown frame flags 0x03",
        ),
        (
            "unknown kind",
            header(0, 0x0a, 0),
            ErrorCode::PROTOCOL,
            "unknown frame kind 0x0a",
        ),
        (
            "reserved data flag bit",
            header(8, 1, 0x10),
            ErrorCode::PROTOCOL,
            "unknown frame flags 0x10",
        ),
        (
            "credit of the wrong length",
            header(8, 0x07, 0),
            ErrorCode::PROTOCOL,
            "credit frame body of 8 bytes is malformed",
        ),
        (
            "data frame over the limit",
            header(16 * 1024 * 1024 + 1, 1, 0),
            ErrorCode::TOO_LARGE,
            "frame of 16777217 bytes exceeds limit of 16777216",
        ),
        (
            "compressed control frame",
            header(8, 2, 0x01),
            ErrorCode::PROTOCOL,
            "compressed control frame",
        ),
        (
            "envelope with a truncated varint",
            [header(1, 1, 0), vec![0x80]].concat(),
            ErrorCode::BAD_MESSAGE,
            "malformed message envelope",
        ),
        (
            "lz4 body without its length",
            [header(2, 1, 0x01), vec![0, 0]].concat(),
            ErrorCode::PROTOCOL,
            "compressed body of 2 bytes has no length prefix",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_is_told_why_after_the_answers_it_was_owed() {
    for (case, bad, code, text) in cases() {
        let (addr, server) = spawn_echo_server().await;
        let run = async {
            let mut stream = raw_plain(addr).await;
            // A request answered first, then the error: the answer comes
            // before the error frame, and nothing is lost to a reset.
            let request = echo_request(1, b"before the error");
            stream.write_all(&request).await.unwrap();
            let mut reply = vec![0; request.len()];
            stream.read_exact(&mut reply).await.unwrap();
            assert_eq!(reply, request, "{case}");
            stream.write_all(&bad).await.unwrap();
            let frames = frames_until_end(&mut stream).await;
            let [Frame::Error(error)] = frames.as_slice() else {
                panic!("{case}: expected one error frame, got {frames:?}");
            };
            assert_eq!(
                (error.request_id, error.code, error.message.as_str()),
                (0, code, text),
                "{case}"
            );
        };
        tokio::time::timeout(LIMIT, run).await.expect(case);
        let ended = tokio::time::timeout(LIMIT, server).await.unwrap().unwrap();
        assert!(
            ended.as_ref().is_err_and(Error::is_protocol),
            "{case}: {ended:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_the_same_write_as_the_error_get_the_error_frame_last() {
    let (addr, server) = spawn_echo_server().await;
    let run = async {
        let mut stream = raw_plain(addr).await;
        let mut bytes = Vec::new();
        for id in 1..=3 {
            bytes.extend(echo_request(id, b"pipelined"));
        }
        bytes.extend(header(0, 0x0a, 0));
        // More bytes after the error, which the server never reads: its
        // close must still not reset the connection.
        bytes.extend(vec![0xee; 64 * 1024]);
        stream.write_all(&bytes).await.unwrap();
        let frames = frames_until_end(&mut stream).await;
        let (last, answers) = frames.split_last().expect("no frame came back");
        assert!(
            matches!(last, Frame::Error(e) if e.code == ErrorCode::PROTOCOL && e.request_id == 0),
            "{frames:?}"
        );
        // Which answers the application queued before the error frame is a
        // race; those that came are the echoes, in order.
        for (frame, id) in answers.iter().zip(1u64..) {
            let Frame::Data(data) = frame else {
                panic!("not an answer: {frame:?}");
            };
            let envelope = netproto_wire::Envelope::decode(data.body.clone()).unwrap();
            assert_eq!(envelope.request_id, id);
        }
    };
    tokio::time::timeout(LIMIT, run).await.unwrap();
    tokio::time::timeout(LIMIT, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_header_refused_before_the_start_is_answered_too() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut options = StartOptions::default();
    options.first_header_within = Some(Duration::from_secs(2));
    let acceptor = Acceptor::builder(ServerSecurity::Plain, ConnectionConfig::default())
        .start_options(options)
        .build()
        .unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        acceptor.accept(stream).await.map(drop)
    });
    let run = async {
        let mut stream = raw_plain(addr).await;
        stream.write_all(&header(0, 0x09, 0)).await.unwrap();
        let frames = frames_until_end(&mut stream).await;
        let [Frame::Error(error)] = frames.as_slice() else {
            panic!("expected one error frame, got {frames:?}");
        };
        assert_eq!(error.code, ErrorCode::PROTOCOL);
        assert_eq!(error.message, "unknown frame kind 0x09");
    };
    tokio::time::timeout(LIMIT, run).await.unwrap();
    let err = tokio::time::timeout(LIMIT, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(err.is_protocol(), "{err:?}");
}

/// A Noise client built on the crypto crate alone announces a frame limit of
/// 0 (which would make every message an error): the server refuses the
/// session as soon as the handshake tells it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_announcing_a_frame_limit_below_the_minimum_is_refused() {
    use netproto_crypto::{Capabilities, CompressionSet, Keypair, SessionBuilder, SessionConfig};
    use netproto_transport::NoiseConfig;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_key = Keypair::generate(&mut rand::rngs::OsRng);
    let acceptor = new_acceptor(
        ServerSecurity::noise(NoiseConfig::new(server_key)),
        &ConnectionConfig::default(),
        HANDSHAKE,
    );
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        acceptor.accept(stream).await.map(drop)
    });
    let client = async {
        let preface = b"NETP\x01\x01\x00\x00";
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(preface).await.unwrap();
        let mut answer = [0; 8];
        stream.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"NETP\x01\x01\x00\x00");
        let mut config = SessionConfig::default();
        config.capabilities = Capabilities::new(0, CompressionSet::ALL);
        let mut initiator = SessionBuilder::new(Keypair::generate(&mut rand::rngs::OsRng))
            .prologue(preface)
            .config(config)
            .build_initiator(&mut rand::rngs::OsRng)
            .unwrap();
        let (mut input, mut out) = (BytesMut::new(), BytesMut::new());
        let now = || {
            u64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis(),
            )
            .unwrap()
        };
        while !initiator.is_finished() {
            if initiator.wants_write() {
                out.clear();
                initiator.write_message(now(), &mut out).unwrap();
                stream.write_all(&out).await.unwrap();
            } else {
                while !initiator.read_message(&mut input).unwrap() {
                    assert!(stream.read_buf(&mut input).await.unwrap() > 0);
                }
            }
        }
        // The server closes without a frame.
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
    };
    tokio::time::timeout(LIMIT, client).await.unwrap();
    let err = tokio::time::timeout(LIMIT, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Protocol(netproto_wire::Error::PeerLimitTooSmall(0))
        ),
        "{err:?}"
    );
}

/// A peer that neither reads to the end nor closes: the server still gets
/// its error frame and FIN out, stops draining after its linger (1 s), and
/// the connection ends on its side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_after_an_error_ends_by_itself_when_the_peer_never_closes() {
    let (addr, server) = spawn_echo_server().await;
    let mut stream = raw_plain(addr).await;
    stream.write_all(&header(0, 0x0a, 0)).await.unwrap();
    let started = std::time::Instant::now();
    // The error frame and the server's FIN come at once: read them first,
    // before a reset could destroy them.
    let frames = frames_until_end(&mut stream).await;
    assert!(
        matches!(frames.as_slice(), [Frame::Error(e)] if e.code == ErrorCode::PROTOCOL),
        "{frames:?}"
    );
    // The peer keeps its socket open and sends more, never closing, until
    // a write fails: the server has closed its socket.
    let keep_sending = async {
        for _ in 0..100 {
            if stream.write_all(&[0xee; 64]).await.is_err() {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    };
    let (ended, closed_after) = tokio::join!(
        async { tokio::time::timeout(LIMIT, server).await.unwrap().unwrap() },
        keep_sending
    );
    assert!(ended.as_ref().is_err_and(Error::is_protocol), "{ended:?}");
    // The drain stopped by itself after its linger of 1 s (and not at
    // once: the peer's bytes were read and dropped meanwhile).
    let closed_after = closed_after.expect("the server never closed its socket");
    assert!(
        closed_after >= Duration::from_millis(900) && closed_after < Duration::from_secs(4),
        "{closed_after:?}"
    );
}
