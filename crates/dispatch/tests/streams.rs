//! Server streams (PROTOCOL.md Part III §4) over loopback TCP: items in
//! order, credit-based flow control observed on the producer, a stalled
//! consumer blocking only its own stream, cancel, errors and deadlines.

// Integration test: a failed unwrap, expect, panic or index is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stdout
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use netproto_dispatch::{
    Correlator, CorrelatorConfig, Dispatcher, Error, HandlerError, RequestOptions, ServeConfig,
    ServeReport, ServerStream,
};
use netproto_transport::{
    Acceptor, ClientSecurity, Connection, ConnectionConfig, Connector, Incoming, Receiver,
    ServerSecurity,
};
use netproto_wire::{DataFlags, Envelope, ErrorCode, ErrorFrame, Message, MessageType};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Sends "dropped" when dropped: the producer is gone.
struct DropGuard(mpsc::UnboundedSender<&'static str>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        let _ = self.0.send("dropped");
    }
}

/// A server on loopback TCP serving one connection with `dispatcher`, and a
/// correlator connected to it.
async fn connect(
    dispatcher: &Arc<Dispatcher>,
) -> (
    Arc<Correlator>,
    watch::Sender<bool>,
    JoinHandle<Result<ServeReport, Error>>,
) {
    let (addr, stop, server) = serve_one(dispatcher).await;
    let (client, _unsolicited) =
        Correlator::new(dial(addr).await, &CorrelatorConfig::default()).unwrap();
    (Arc::new(client), stop, server)
}

/// A server on loopback TCP serving one connection with `dispatcher`.
async fn serve_one(
    dispatcher: &Arc<Dispatcher>,
) -> (
    SocketAddr,
    watch::Sender<bool>,
    JoinHandle<Result<ServeReport, Error>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, shutdown) = watch::channel(false);
    let dispatcher = dispatcher.clone();
    let server = tokio::spawn(async move {
        let conn = accept(&listener).await;
        dispatcher
            .serve(conn, &ServeConfig::default(), shutdown)
            .await
    });
    (addr, stop, server)
}

/// The next connection on `listener`, in plain mode.
async fn accept(listener: &TcpListener) -> Connection {
    let (tcp, _) = listener.accept().await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let acceptor = Acceptor::new(ServerSecurity::Plain, ConnectionConfig::default()).unwrap();
    acceptor.accept(tcp).await.unwrap()
}

/// A plain-mode connection to `addr`.
async fn dial(addr: SocketAddr) -> Connection {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let connector = Connector::new(ClientSecurity::Plain, ConnectionConfig::default()).unwrap();
    connector.connect(tcp).await.unwrap()
}

/// The next error frame `receiver` gets, within 10 s; other frames are
/// skipped.
async fn next_error(receiver: &mut Receiver) -> ErrorFrame {
    loop {
        let incoming = tokio::time::timeout(Duration::from_secs(10), receiver.recv())
            .await
            .expect("an error frame within 10 s");
        match incoming {
            Ok(Some(Incoming::Error(frame))) => return frame,
            Ok(Some(_)) => {}
            other => panic!("the connection ended without an error frame: {other:?}"),
        }
    }
}

fn name(name: &str) -> MessageType {
    MessageType::new(name).unwrap()
}

/// `COUNT` streams the big-endian u64s from 0 to the request's u64,
/// counting what it produced in `produced`.
fn counting(produced: &Arc<AtomicU64>) -> Arc<Dispatcher> {
    let dispatcher = Arc::new(Dispatcher::default());
    dispatcher.register("ECHO", |msg| Ok(msg.clone()));
    let produced = produced.clone();
    dispatcher.register_stream("COUNT", move |_context, request| {
        let n = u64::from_be_bytes(request.payload[..8].try_into().unwrap());
        let produced = produced.clone();
        futures::stream::iter(0..n).map(move |i| {
            produced.fetch_add(1, Ordering::Relaxed);
            Ok::<_, HandlerError>(Bytes::copy_from_slice(&i.to_be_bytes()))
        })
    });
    dispatcher
}

async fn count(client: &Correlator, n: u64, credit: u32) -> ServerStream {
    let payload = Bytes::copy_from_slice(&n.to_be_bytes());
    client
        .request_stream(name("COUNT"), payload, &RequestOptions::default(), credit)
        .await
        .unwrap()
}

fn value(item: &Bytes) -> u64 {
    u64::from_be_bytes(item[..].try_into().unwrap())
}

async fn stop_server(
    stop: &watch::Sender<bool>,
    server: JoinHandle<Result<ServeReport, Error>>,
) -> ServeReport {
    stop.send_replace(true);
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn a_stream_of_n_items_arrives_in_order_and_ends() {
    let produced = Arc::new(AtomicU64::new(0));
    let (client, stop, server) = connect(&counting(&produced)).await;
    for credit in [1, 7, 64] {
        let stream = count(&client, 1000, credit).await;
        let items: Vec<u64> = stream.map(|item| value(&item.unwrap())).collect().await;
        assert_eq!(items, (0..1000).collect::<Vec<_>>(), "credit {credit}");
    }
    // An empty stream ends at once.
    let empty = count(&client, 0, 4).await;
    assert_eq!(empty.count().await, 0);
    let report = stop_server(&stop, server).await;
    assert_eq!((report.replies, report.errors), (4, 0));
}

#[tokio::test]
async fn a_stalled_consumer_blocks_only_its_stream() {
    const CREDIT: u32 = 32;
    let produced = Arc::new(AtomicU64::new(0));
    let (client, stop, server) = connect(&counting(&produced)).await;
    let echo = Message::Echo("x".repeat(64));
    let latencies = |label: &'static str| {
        let client = client.clone();
        let echo = echo.clone();
        async move {
            let mut times = Vec::with_capacity(200);
            for _ in 0..200 {
                let started = Instant::now();
                assert_eq!(client.request(&echo).await.unwrap(), echo);
                times.push(started.elapsed());
            }
            times.sort();
            let (p50, max) = (times[100], times[199]);
            println!("unary echo {label}: p50 {p50:?}, max {max:?}");
            max
        }
    };
    let _before = latencies("before the stall").await;

    let mut stream = count(&client, u64::MAX, CREDIT).await;
    for i in 0..10 {
        assert_eq!(value(&stream.next().await.unwrap().unwrap()), i);
    }
    // The consumer stalls: the producer stops within the credit.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stalled_at = produced.load(Ordering::Relaxed);
    let during = latencies("during the stall").await;
    let after = produced.load(Ordering::Relaxed);
    println!("produced {stalled_at} items for 10 consumed (credit {CREDIT}), {after} after");
    assert!(
        stalled_at <= 10 + u64::from(CREDIT),
        "{stalled_at} produced"
    );
    assert_eq!(after, stalled_at, "the producer went on while stalled");
    assert!(
        during < Duration::from_millis(100),
        "head-of-line blocking: {during:?}"
    );

    // Reading again resumes the stream where it stopped.
    for i in 10..1000 {
        assert_eq!(value(&stream.next().await.unwrap().unwrap()), i);
    }
    drop(stream);
    let report = stop_server(&stop, server).await;
    assert_eq!(report.cancelled, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_items_keep_memory_bounded() {
    const ITEMS: u64 = 1_000_000;
    const CREDIT: u32 = 256;
    let consumed = Arc::new(AtomicU64::new(0));
    let most_ahead = Arc::new(AtomicU64::new(0));
    let dispatcher = Arc::new(Dispatcher::default());
    {
        let (consumed, most_ahead) = (consumed.clone(), most_ahead.clone());
        dispatcher.register_stream("MANY", move |_context, _request| {
            let (consumed, most_ahead) = (consumed.clone(), most_ahead.clone());
            futures::stream::iter(0..ITEMS).map(move |i| {
                // Items produced (this one included) minus items consumed.
                let ahead = (i + 1).saturating_sub(consumed.load(Ordering::Acquire));
                most_ahead.fetch_max(ahead, Ordering::Relaxed);
                Ok::<_, HandlerError>(Bytes::copy_from_slice(&i.to_be_bytes()))
            })
        });
    }
    let (client, stop, server) = connect(&dispatcher).await;
    let rss_before = vm_rss_kib();
    let started = Instant::now();
    let mut stream = client
        .request_stream(
            name("MANY"),
            Bytes::new(),
            &RequestOptions::default(),
            CREDIT,
        )
        .await
        .unwrap();
    let mut next = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    while let Some(item) = tokio::time::timeout_at(deadline, stream.next())
        .await
        .unwrap()
    {
        assert_eq!(value(&item.unwrap()), next);
        next += 1;
        consumed.store(next, Ordering::Release);
    }
    let elapsed = started.elapsed();
    assert_eq!(next, ITEMS);
    let ahead = most_ahead.load(Ordering::Relaxed);
    println!(
        "{ITEMS} items in {elapsed:?}; at most {ahead} produced ahead of the consumer \
         (credit {CREDIT}); VmRSS {rss_before:?} KiB before, {:?} KiB after",
        vm_rss_kib()
    );
    assert!(ahead <= u64::from(CREDIT), "{ahead} items in flight");
    stop_server(&stop, server).await;
}

#[tokio::test]
async fn dropping_the_stream_cancels_the_producer() {
    let (events, mut dropped) = mpsc::unbounded_channel();
    let dispatcher = Arc::new(Dispatcher::default());
    dispatcher.register_stream("FOREVER", move |_context, _request| {
        let guard = DropGuard(events.clone());
        futures::stream::repeat(Bytes::from_static(b"tick")).map(move |item| {
            let _guard = &guard;
            Ok::<_, HandlerError>(item)
        })
    });
    let (client, stop, server) = connect(&dispatcher).await;
    let mut stream = client
        .request_stream(name("FOREVER"), Bytes::new(), &RequestOptions::default(), 8)
        .await
        .unwrap();
    for _ in 0..20 {
        assert_eq!(&stream.next().await.unwrap().unwrap()[..], b"tick");
    }
    drop(stream);
    let event = tokio::time::timeout(Duration::from_secs(5), dropped.recv()).await;
    assert_eq!(event.unwrap(), Some("dropped"));
    assert_eq!(client.cancelled(), 1);
    let report = stop_server(&stop, server).await;
    assert_eq!((report.cancelled, report.unanswered), (1, 0));
}

#[tokio::test]
async fn an_item_error_ends_the_stream_with_it() {
    let dispatcher = Arc::new(Dispatcher::default());
    dispatcher.register_stream("FAILS", |_context, _request| {
        let items = (0..5_u8).map(|i| match i {
            3 => Err(HandlerError::new(
                ErrorCode::HANDLER_FAILED,
                "third time unlucky",
            )),
            _ => Ok(Bytes::from(vec![i])),
        });
        futures::stream::iter(items)
    });
    let (client, stop, server) = connect(&dispatcher).await;
    let stream = client
        .request_stream(name("FAILS"), Bytes::new(), &RequestOptions::default(), 2)
        .await
        .unwrap();
    let items: Vec<Result<Bytes, Error>> = stream.collect().await;
    assert_eq!(items.len(), 4, "{items:?}");
    for (i, item) in items[..3].iter().enumerate() {
        assert_eq!(item.as_ref().unwrap()[..], [u8::try_from(i).unwrap()]);
    }
    let Err(Error::Remote { code, message, .. }) = &items[3] else {
        panic!("{:?}", items[3]);
    };
    assert_eq!(
        (*code, message.as_str()),
        (ErrorCode::HANDLER_FAILED, "third time unlucky")
    );
    let report = stop_server(&stop, server).await;
    assert_eq!((report.replies, report.errors), (0, 1));
}

#[tokio::test]
async fn a_deadline_ends_a_stream_and_drops_its_producer() {
    let (events, mut dropped) = mpsc::unbounded_channel();
    let dispatcher = Arc::new(Dispatcher::default());
    dispatcher.register_stream("SLOW", move |_context, _request| {
        let guard = DropGuard(events.clone());
        futures::stream::unfold(guard, |guard| async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Some((Ok::<_, HandlerError>(Bytes::from_static(b".")), guard))
        })
    });
    let (client, stop, server) = connect(&dispatcher).await;
    let options = RequestOptions::default().deadline(Duration::from_millis(300));
    let started = Instant::now();
    let stream = client
        .request_stream(name("SLOW"), Bytes::new(), &options, 4)
        .await
        .unwrap();
    let items: Vec<Result<Bytes, Error>> = stream.collect().await;
    let (last, items) = items.split_last().unwrap();
    assert!(!items.is_empty() && items.iter().all(Result::is_ok));
    assert!(
        last.as_ref().unwrap_err().is_deadline_exceeded(),
        "{last:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(290));
    let event = tokio::time::timeout(Duration::from_secs(5), dropped.recv()).await;
    assert_eq!(event.unwrap(), Some("dropped"));
    stop_server(&stop, server).await;
}

#[tokio::test]
async fn a_stream_method_without_the_stream_header_is_refused() {
    let produced = Arc::new(AtomicU64::new(0));
    let (client, stop, server) = connect(&counting(&produced)).await;
    let payload = Bytes::copy_from_slice(&3_u64.to_be_bytes());
    let error = client
        .request_raw(name("COUNT"), payload)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::BAD_MESSAGE), "{error}");
    assert_eq!(produced.load(Ordering::Relaxed), 0);
    // A unary method asked for a stream answers plainly: a stream of one.
    let echo = Message::Echo("plain".into()).to_envelope(0);
    let stream = client
        .request_stream(
            echo.msg_type,
            echo.payload.clone(),
            &RequestOptions::default(),
            4,
        )
        .await
        .unwrap();
    let items: Vec<Bytes> = stream.map(Result::unwrap).collect().await;
    assert_eq!(items, [echo.payload]);
    assert_eq!(client.cancelled(), 0);
    stop_server(&stop, server).await;
}

/// A responder that sends one item more than the credit granted: the
/// requester ends the connection (PROTOCOL.md Part III §4), with an error
/// frame saying why, and the stream fails after the items it had room for.
#[tokio::test]
async fn an_item_beyond_the_credit_ends_the_connection() {
    const CREDIT: u32 = 2;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let responder = tokio::spawn(async move {
        let (sender, mut receiver, _info) = accept(&listener).await.split();
        let Ok(Some(Incoming::Message(request))) = receiver.recv().await else {
            panic!("a request first");
        };
        for i in 0..=u64::from(CREDIT) {
            let item = Envelope::new(
                request.request_id,
                request.msg_type.clone(),
                Bytes::copy_from_slice(&i.to_be_bytes()),
            )
            .with_flags(DataFlags::STREAM);
            sender.send(item).await.unwrap();
        }
        next_error(&mut receiver).await
    });
    let (client, _unsolicited) =
        Correlator::new(dial(addr).await, &CorrelatorConfig::default()).unwrap();
    // Nothing is read from the stream until the responder has its answer,
    // so no credit is granted again meanwhile.
    let stream = count(&client, 10, CREDIT).await;
    let frame = responder.await.unwrap();
    assert_eq!(frame.request_id, 0);
    assert_eq!(frame.code, ErrorCode::PROTOCOL);
    assert_eq!(frame.message, "stream item beyond its credit");
    let items: Vec<Result<Bytes, Error>> =
        tokio::time::timeout(Duration::from_secs(10), stream.collect())
            .await
            .unwrap();
    assert!(items.len() <= CREDIT as usize + 1, "{items:?}");
    let (last, kept) = items.split_last().unwrap();
    for (i, item) in kept.iter().enumerate() {
        assert_eq!(value(item.as_ref().unwrap()), i as u64);
    }
    let error = last.as_ref().unwrap_err();
    assert!(error.is_connection_lost(), "{error}");
}

/// A data frame with the `STREAM` flag from the requester (a client
/// stream, reserved) ends the connection with `PROTOCOL`.
#[tokio::test]
async fn a_stream_item_from_the_requester_ends_the_connection() {
    let produced = Arc::new(AtomicU64::new(0));
    let (addr, _stop, server) = serve_one(&counting(&produced)).await;
    let (sender, mut receiver, _info) = dial(addr).await.split();
    let item =
        Envelope::new(1, name("ECHO"), Bytes::from_static(b"item")).with_flags(DataFlags::STREAM);
    sender.send(item).await.unwrap();
    let frame = next_error(&mut receiver).await;
    assert_eq!((frame.request_id, frame.code), (0, ErrorCode::PROTOCOL));
    assert_eq!(frame.message, "client stream items are not supported");
    let ended = tokio::time::timeout(Duration::from_secs(10), receiver.recv()).await;
    assert!(matches!(ended, Ok(Ok(None) | Err(_))), "{ended:?}");
    let served = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(served, Err(Error::Wire(netproto_wire::Error::ClientStream))),
        "{served:?}"
    );
}

/// The resident set of this process, in KiB (Linux only).
fn vm_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
