//! `Dispatcher::serve` and `Correlator` over real framed connections on
//! in-memory pipes. Time is paused where timeouts are measured.

// Integration test: a failed unwrap, expect, panic or index is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use netproto_crypto::Keypair;
use netproto_dispatch::{
    Correlator, CorrelatorConfig, Dispatcher, Error, HandlerError, RequestOptions, ServeConfig,
    ServeReport, Unsolicited,
};
use netproto_transport::{
    AcceptLimits, Acceptor, ClientSecurity, Connection, ConnectionConfig, Connector, Incoming,
    NoiseConfig, ServerSecurity,
};
use netproto_wire::{Envelope, ErrorCode, ErrorFrame, Frame, Message, MessageType};
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::Instrument;

const HANDSHAKE: Duration = Duration::from_secs(5);

async fn pair_with(
    client: ClientSecurity,
    server: ServerSecurity,
    config: ConnectionConfig,
) -> (Connection, Connection) {
    let (a, b) = tokio::io::duplex(256 * 1024);
    let acceptor = Acceptor::builder(server, config.clone())
        .limits(AcceptLimits::new(HANDSHAKE, HANDSHAKE))
        .build()
        .unwrap();
    let connector = Connector::builder(client, config)
        .handshake_timeout(HANDSHAKE)
        .build()
        .unwrap();
    let server = tokio::spawn(async move { acceptor.accept(b).await });
    let client = connector.connect(a).await.unwrap();
    (client, server.await.unwrap().unwrap())
}

async fn plain_pair() -> (Connection, Connection) {
    pair_with(
        ClientSecurity::Plain,
        ServerSecurity::Plain,
        ConnectionConfig::default(),
    )
    .await
}

/// A client correlator and a server running `serve` on the other end.
struct Setup {
    client: Arc<Correlator>,
    unsolicited: Unsolicited,
    server: JoinHandle<Result<ServeReport, Error>>,
    stop: watch::Sender<bool>,
}

fn serve_on(
    client_conn: Connection,
    server_conn: Connection,
    dispatcher: &Arc<Dispatcher>,
    serve: ServeConfig,
    correlate: CorrelatorConfig,
) -> Setup {
    let (stop, shutdown) = watch::channel(false);
    let dispatcher = dispatcher.clone();
    let server = tokio::spawn(
        async move { dispatcher.serve(server_conn, &serve, shutdown).await }
            .instrument(tracing::error_span!("server")),
    );
    let (client, unsolicited) = Correlator::new(client_conn, &correlate).unwrap();
    Setup {
        client: Arc::new(client),
        unsolicited,
        server,
        stop,
    }
}

async fn setup(dispatcher: &Arc<Dispatcher>, serve: ServeConfig) -> Setup {
    let (client, server) = plain_pair().await;
    serve_on(
        client,
        server,
        dispatcher,
        serve,
        CorrelatorConfig::default(),
    )
}

fn custom(name: &str, data: impl Into<Bytes>) -> Message {
    Message::custom(name, data).unwrap()
}

/// Deterministic, scattered delays, so that replies complete out of order.
fn delay_for(data: &[u8]) -> Duration {
    let seed = data.iter().fold(7u64, |acc, b| {
        acc.wrapping_mul(31).wrapping_add(u64::from(*b))
    });
    Duration::from_millis(seed.wrapping_mul(2_654_435_761) % 50)
}

/// Handlers used by several tests.
fn standard_dispatcher() -> Arc<Dispatcher> {
    let dispatcher = Arc::new(Dispatcher::default());
    dispatcher.register("PING", |_| Ok(Message::Pong));
    dispatcher.register("ECHO", |msg| Ok(msg.clone()));
    dispatcher.register("FAIL", |_| Err("refused by handler".into()));
    dispatcher.register("PANIC", |_| panic!("handler bug"));
    dispatcher.register_async("SLOW_ECHO", |msg: Message| async move {
        if let Message::Custom { data, .. } = &msg {
            tokio::time::sleep(delay_for(data)).await;
        }
        Ok(msg)
    });
    dispatcher
}

fn remote_code(result: Result<Message, Error>) -> ErrorCode {
    match result {
        Err(Error::Remote { code, .. }) => code,
        other => panic!("expected a remote error, got {other:?}"),
    }
}

#[test]
fn serve_and_request_futures_are_send() {
    fn is_send<T: Send>(_: &T) {}
    let dispatcher = Arc::new(Dispatcher::default());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, server) = plain_pair().await;
        let (_stop, shutdown) = watch::channel(false);
        let serve_config = ServeConfig::default();
        let serve = dispatcher.serve(server, &serve_config, shutdown);
        is_send(&serve);
        let (client, _unsolicited) = Correlator::new(client, &CorrelatorConfig::default()).unwrap();
        let request = client.request(&Message::Ping);
        is_send(&request);
    });
}

#[tokio::test]
async fn sync_and_async_handlers_answer_and_errors_are_clear() {
    let dispatcher = standard_dispatcher();
    let s = setup(&dispatcher, ServeConfig::default()).await;
    let client = &s.client;

    assert_eq!(client.request(&Message::Ping).await.unwrap(), Message::Pong);
    let echo = Message::Echo("héllo".into());
    assert_eq!(client.request(&echo).await.unwrap(), echo);
    let slow = custom("SLOW_ECHO", &b"payload"[..]);
    assert_eq!(client.request(&slow).await.unwrap(), slow);

    // No handler.
    let error = client.request(&custom("NOBODY", Bytes::new())).await;
    assert_eq!(remote_code(error), ErrorCode::NO_HANDLER);
    // Handler error, with its text.
    match client.request(&custom("FAIL", Bytes::new())).await {
        Err(Error::Remote {
            code,
            message,
            request_id,
        }) => {
            assert_eq!(code, ErrorCode::HANDLER_FAILED);
            assert_eq!(message, "refused by handler");
            assert!(request_id > 0);
        }
        other => panic!("expected a remote error, got {other:?}"),
    }
    // ECHO whose payload is not UTF-8.
    let bad = client
        .request_raw(MessageType::ECHO, Bytes::from_static(b"\xc3\x28"))
        .await;
    match bad {
        Err(error) => assert_eq!(error.code(), Some(ErrorCode::BAD_MESSAGE), "{error}"),
        Ok(reply) => panic!("unexpected reply {reply:?}"),
    }
    assert_eq!(client.pending(), 0);

    client.close().await.unwrap();
    let report = s.server.await.unwrap().unwrap();
    assert_eq!(report.requests, 6);
    assert_eq!(report.replies, 3);
    assert_eq!(report.errors, 3);
    assert_eq!(report.unanswered, 0);
}

#[tokio::test]
async fn noise_connection_round_trips() {
    let keys = || Keypair::generate(&mut rand::rngs::OsRng);
    let (client, server) = pair_with(
        ClientSecurity::noise(NoiseConfig::new(keys())),
        ServerSecurity::noise(NoiseConfig::new(keys())),
        ConnectionConfig::default(),
    )
    .await;
    let dispatcher = standard_dispatcher();
    let s = serve_on(
        client,
        server,
        &dispatcher,
        ServeConfig::default(),
        CorrelatorConfig::default(),
    );
    let mut tasks = JoinSet::new();
    for i in 0..100u32 {
        let client = s.client.clone();
        tasks.spawn(async move {
            let msg = custom("SLOW_ECHO", i.to_be_bytes().to_vec());
            assert_eq!(client.request(&msg).await.unwrap(), msg);
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    assert!(s.client.info().peer_static.is_some());
    s.client.close().await.unwrap();
    let report = s.server.await.unwrap().unwrap();
    assert_eq!(report.replies, 100);
}

/// A context handler that answers with the requester's key as its
/// context gives it (64 hex digits, or "none").
fn key_dispatcher() -> Arc<Dispatcher> {
    let dispatcher = Arc::new(Dispatcher::default());
    dispatcher.register_with_context("WHO", |context, envelope: Envelope| async move {
        let key = context
            .peer_key
            .map_or_else(|| "none".to_owned(), |key| key.to_string());
        Ok::<_, HandlerError>(Envelope {
            payload: Bytes::from(key),
            ..envelope
        })
    });
    dispatcher
}

/// What `WHO` answers over this pair of connections.
async fn who(client: Connection, server: Connection) -> Message {
    let s = serve_on(
        client,
        server,
        &key_dispatcher(),
        ServeConfig::default(),
        CorrelatorConfig::default(),
    );
    let answer = s.client.request(&custom("WHO", Vec::new())).await.unwrap();
    s.client.close().await.unwrap();
    s.server.await.unwrap().unwrap();
    answer
}

#[tokio::test]
async fn a_context_handler_sees_the_noise_key_of_its_requester() {
    let client_keys = Keypair::generate(&mut rand::rngs::OsRng);
    let client_key = *client_keys.public();
    let (client, server) = pair_with(
        ClientSecurity::noise(NoiseConfig::new(client_keys)),
        ServerSecurity::noise(NoiseConfig::new(Keypair::generate(&mut rand::rngs::OsRng))),
        ConnectionConfig::default(),
    )
    .await;
    let expected = custom("WHO", client_key.to_string().into_bytes());
    assert_eq!(who(client, server).await, expected);
    // Without Noise there is no key to give.
    let (client, server) = plain_pair().await;
    assert_eq!(who(client, server).await, custom("WHO", b"none".to_vec()));
}

#[tokio::test]
async fn a_panicking_handler_does_not_stop_the_connection() {
    let dispatcher = standard_dispatcher();
    dispatcher.register_async("ASYNC_PANIC", |_msg: Message| async {
        tokio::task::yield_now().await;
        if true {
            panic!("async handler bug");
        }
        Ok(Message::Unknown)
    });
    let s = setup(&dispatcher, ServeConfig::default()).await;
    for round in 0..3 {
        let error = s.client.request(&custom("PANIC", Bytes::new())).await;
        assert_eq!(remote_code(error), ErrorCode::HANDLER_FAILED, "{round}");
        let error = s.client.request(&custom("ASYNC_PANIC", Bytes::new())).await;
        assert_eq!(remote_code(error), ErrorCode::HANDLER_FAILED, "{round}");
        assert_eq!(
            s.client.request(&Message::Ping).await.unwrap(),
            Message::Pong
        );
    }
    s.client.close().await.unwrap();
    let report = s.server.await.unwrap().unwrap();
    assert_eq!((report.replies, report.errors), (3, 6));
}

#[tokio::test(start_paused = true)]
async fn a_thousand_requests_in_flight_are_matched_by_id() {
    thousand_in_flight().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_requests_in_flight_on_two_threads() {
    thousand_in_flight().await;
}

async fn thousand_in_flight() {
    let dispatcher = standard_dispatcher();
    let finished = Arc::new(Mutex::new(Vec::new()));
    let order = finished.clone();
    dispatcher.register_async("TAGGED", move |msg: Message| {
        let order = order.clone();
        async move {
            let Message::Custom { data, .. } = &msg else {
                return Err(HandlerError::failed("wrong message"));
            };
            tokio::time::sleep(delay_for(data)).await;
            order.lock().unwrap().push(data.clone());
            Ok(msg)
        }
    });
    let mut serve = ServeConfig::default();
    serve.max_in_flight = 1000;
    let s = setup(&dispatcher, serve).await;

    let mut tasks = JoinSet::new();
    for i in 0..1000u32 {
        let client = s.client.clone();
        tasks.spawn(async move {
            let msg = custom("TAGGED", format!("request {i}").into_bytes());
            let reply = client.request(&msg).await.unwrap();
            assert_eq!(reply, msg, "request {i} got another request's reply");
            i
        });
    }
    let mut seen = vec![false; 1000];
    while let Some(done) = tasks.join_next().await {
        seen[done.unwrap() as usize] = true;
    }
    assert!(seen.iter().all(|s| *s));
    assert_eq!(s.client.pending(), 0);

    // The handlers really did finish out of order.
    let finished = std::mem::take(&mut *finished.lock().unwrap());
    assert_eq!(finished.len(), 1000);
    let in_order = (0..1000u32).map(|i| Bytes::from(format!("request {i}")));
    assert!(finished.into_iter().ne(in_order));

    s.client.close().await.unwrap();
    let report = s.server.await.unwrap().unwrap();
    assert_eq!(report.requests, 1000);
    assert_eq!(report.replies, 1000);
}

#[tokio::test]
async fn a_disconnect_fails_every_pending_request() {
    let (client, mut server) = plain_pair().await;
    let (client, mut unsolicited) = Correlator::new(client, &CorrelatorConfig::default()).unwrap();
    let client = Arc::new(client);
    let mut tasks = JoinSet::new();
    for i in 0..500u32 {
        let client = client.clone();
        tasks.spawn(async move {
            client
                .request(&custom("ANY", i.to_be_bytes().to_vec()))
                .await
        });
    }
    // The server reads every request, answers none, and goes away abruptly.
    for _ in 0..500 {
        match server.recv().await.unwrap() {
            Some(Incoming::Message(envelope)) => assert_ne!(envelope.request_id, 0),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(client.pending(), 500);
    drop(server);

    let mut disconnected = 0;
    while let Some(done) = tasks.join_next().await {
        match done.unwrap() {
            Err(Error::Disconnected(cause)) => {
                assert!(matches!(*cause, netproto_transport::Error::PeerClosed));
                disconnected += 1;
            }
            other => panic!("expected a disconnect, got {other:?}"),
        }
    }
    assert_eq!(disconnected, 500);
    assert_eq!(client.pending(), 0);
    // Later requests fail at once, the same way.
    let later = client.request(&Message::Ping).await;
    assert!(matches!(later, Err(Error::Disconnected(_))), "{later:?}");
    let error = later.unwrap_err();
    assert!(std::error::Error::source(&error).is_some());
    // The unsolicited queue ends with the connection.
    assert!(unsolicited.recv().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn graceful_shutdown_answers_or_refuses_every_request() {
    let dispatcher = standard_dispatcher();
    let started = Arc::new(AtomicUsize::new(0));
    let reached = Arc::new(Notify::new());
    {
        let started = started.clone();
        let reached = reached.clone();
        dispatcher.register_async("WORK", move |msg: Message| {
            let n = started.fetch_add(1, Ordering::SeqCst) + 1;
            if n == 100 {
                reached.notify_one();
            }
            async move {
                if let Message::Custom { data, .. } = &msg {
                    tokio::time::sleep(Duration::from_millis(10) + delay_for(data)).await;
                }
                Ok(msg)
            }
        });
    }
    let s = setup(&dispatcher, ServeConfig::default()).await;
    let mut tasks = JoinSet::new();
    for i in 0..1000u32 {
        let client = s.client.clone();
        tasks.spawn(async move {
            let msg = custom("WORK", i.to_be_bytes().to_vec());
            let result = client.request(&msg).await;
            if let Ok(reply) = &result {
                assert_eq!(reply, &msg);
            }
            result
        });
    }
    reached.notified().await;
    s.stop.send_replace(true);

    let (mut answered, mut going_away, mut refused) = (0u64, 0u64, 0u64);
    while let Some(done) = tasks.join_next().await {
        match done.unwrap() {
            Ok(_) => answered += 1,
            Err(Error::GoingAway {
                code: ErrorCode::SHUTTING_DOWN,
                ..
            }) => going_away += 1,
            Err(Error::Remote {
                code: ErrorCode::SHUTTING_DOWN,
                ..
            }) => refused += 1,
            Err(other) => panic!("unclear or lost request: {other:?}"),
        }
    }
    assert_eq!(answered + going_away + refused, 1000);
    assert!(answered >= 100, "{answered}");
    assert!(going_away + refused > 0, "nothing was refused");

    let report = s.server.await.unwrap().unwrap();
    assert_eq!(report.replies, answered);
    assert_eq!(report.requests, answered);
    assert_eq!(report.errors, 0);
    assert_eq!(report.unanswered, 0);
    // Every request reached the server: taken, refused there, or arrived
    // after its sending side closed.
    assert_eq!(report.requests + report.refused + report.dropped, 1000);
    assert!(report.refused >= refused);

    // New requests fail with a clear error too.
    let later = s.client.request(&Message::Ping).await;
    assert!(
        matches!(later, Err(Error::Disconnected(_) | Error::GoingAway { .. })),
        "{later:?}"
    );
}

#[tokio::test]
async fn after_goaway_new_requests_fail_and_taken_ones_complete() {
    let dispatcher = standard_dispatcher();
    let gate = Arc::new(Notify::new());
    let entered = Arc::new(Notify::new());
    {
        let gate = gate.clone();
        let entered = entered.clone();
        dispatcher.register_async("BLOCK", move |msg: Message| {
            let gate = gate.clone();
            entered.notify_one();
            async move {
                gate.notified().await;
                Ok(msg)
            }
        });
    }
    let mut s = setup(&dispatcher, ServeConfig::default()).await;
    let client = s.client.clone();
    let blocked = tokio::spawn(async move { client.request(&custom("BLOCK", Bytes::new())).await });
    entered.notified().await;

    s.stop.send_replace(true);
    match s.unsolicited.recv().await {
        Some(Incoming::GoAway(goaway)) => {
            assert_eq!(goaway.code, ErrorCode::SHUTTING_DOWN);
            assert_eq!(goaway.last_request_id, 1);
        }
        other => panic!("expected the goaway, got {other:?}"),
    }
    let refused = s.client.request(&Message::Ping).await;
    assert!(
        matches!(
            refused,
            Err(Error::GoingAway {
                last_request_id: 1,
                ..
            })
        ),
        "{refused:?}"
    );

    gate.notify_one();
    let reply = blocked.await.unwrap().unwrap();
    assert_eq!(reply, custom("BLOCK", Bytes::new()));
    let report = s.server.await.unwrap().unwrap();
    assert_eq!((report.requests, report.replies), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn slow_handlers_get_a_timeout_error() {
    let dispatcher = standard_dispatcher();
    dispatcher.register_async("STUCK", |_msg: Message| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(Message::Unknown)
    });
    let mut serve = ServeConfig::default();
    serve.request_timeout = Duration::from_secs(2);
    let s = setup(&dispatcher, serve).await;

    let start = Instant::now();
    let error = s.client.request(&custom("STUCK", Bytes::new())).await;
    assert_eq!(remote_code(error), ErrorCode::TIMEOUT);
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_millis(2100),
        "{elapsed:?}"
    );
    // The connection keeps serving.
    assert_eq!(
        s.client.request(&Message::Ping).await.unwrap(),
        Message::Pong
    );
    s.client.close().await.unwrap();
    let report = s.server.await.unwrap().unwrap();
    assert_eq!((report.replies, report.errors), (1, 1));
}

/// The standard handlers plus `LATE`, which echoes after 5 s.
fn dispatcher_with_late_handler() -> Arc<Dispatcher> {
    let dispatcher = standard_dispatcher();
    dispatcher.register_async("LATE", |msg: Message| async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok(msg)
    });
    dispatcher
}

#[tokio::test(start_paused = true)]
async fn requests_time_out_on_the_client_and_late_replies_are_discarded() {
    let dispatcher = dispatcher_with_late_handler();
    let (client, server) = plain_pair().await;
    let mut correlate = CorrelatorConfig::default();
    correlate.request_timeout = Duration::from_secs(1);
    let s = serve_on(
        client,
        server,
        &dispatcher,
        ServeConfig::default(),
        correlate,
    );

    let start = Instant::now();
    let late = s.client.request(&custom("LATE", Bytes::new())).await;
    assert!(
        matches!(late, Err(Error::Timeout(d)) if d == Duration::from_secs(1)),
        "{late:?}"
    );
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(s.client.pending(), 0);

    // A per-request timeout overrides the default.
    let msg = custom("LATE", &b"patient"[..]);
    let reply = s
        .client
        .request_with_timeout(&msg, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(reply, msg);
    // The late reply to the first request went nowhere, and the connection
    // still works.
    assert_eq!(
        s.client.request(&Message::Ping).await.unwrap(),
        Message::Pong
    );
}

#[tokio::test(start_paused = true)]
async fn a_short_timeout_fires_on_time_behind_a_long_one() {
    let dispatcher = dispatcher_with_late_handler();
    let (client, server) = plain_pair().await;
    let s = serve_on(
        client,
        server,
        &dispatcher,
        ServeConfig::default(),
        CorrelatorConfig::default(),
    );
    let client = Arc::new(s.client);
    let start = Instant::now();
    // A request with a long timeout arms the sweeper for its deadline...
    let patient = {
        let client = client.clone();
        tokio::spawn(async move {
            let msg = custom("LATE", &b"patient"[..]);
            client
                .request_with_timeout(&msg, Duration::from_secs(60))
                .await
        })
    };
    tokio::task::yield_now().await;
    // ...and a later one with a shorter timeout must still fail on time.
    let hasty = client
        .request_with_timeout(&custom("LATE", Bytes::new()), Duration::from_secs(2))
        .await;
    assert!(
        matches!(hasty, Err(Error::Timeout(d)) if d == Duration::from_secs(2)),
        "{hasty:?}"
    );
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    let patient = patient.await.unwrap().unwrap();
    assert_eq!(patient, custom("LATE", &b"patient"[..]));
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert_eq!(client.pending(), 0);
}

#[tokio::test(start_paused = true)]
async fn max_in_flight_is_respected() {
    let dispatcher = Arc::new(Dispatcher::default());
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    {
        let running = running.clone();
        let peak = peak.clone();
        dispatcher.register_async("COUNTED", move |msg: Message| {
            let running = running.clone();
            let peak = peak.clone();
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(msg)
            }
        });
    }
    let mut serve = ServeConfig::default();
    serve.max_in_flight = 8;
    let s = setup(&dispatcher, serve).await;
    let mut tasks = JoinSet::new();
    for i in 0..200u32 {
        let client = s.client.clone();
        tasks.spawn(async move {
            let msg = custom("COUNTED", i.to_be_bytes().to_vec());
            assert_eq!(client.request(&msg).await.unwrap(), msg);
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    assert_eq!(peak.load(Ordering::SeqCst), 8);
    assert_eq!(running.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn one_way_messages_are_handled_without_reply() {
    let dispatcher = Arc::new(Dispatcher::default());
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    dispatcher.register("NOTE", move |msg| {
        tx.try_send(msg.clone()).map_err(|_| "full")?;
        Ok(Message::Unknown)
    });
    dispatcher.register("PING", |_| Ok(Message::Pong));
    let s = setup(&dispatcher, ServeConfig::default()).await;
    let note = custom("NOTE", &b"fyi"[..]);
    s.client.send_oneway(&note).await.unwrap();
    // An unknown one-way type is ignored quietly too.
    s.client
        .send_oneway(&custom("NOBODY", Bytes::new()))
        .await
        .unwrap();
    assert_eq!(rx.recv().await.unwrap(), note);
    assert_eq!(
        s.client.request(&Message::Ping).await.unwrap(),
        Message::Pong
    );
    s.client.close().await.unwrap();
    let report = s.server.await.unwrap().unwrap();
    assert_eq!(report.one_way, 2);
    assert_eq!((report.requests, report.replies, report.errors), (1, 1, 0));
}

#[tokio::test]
async fn unsolicited_messages_are_delivered_not_dropped() {
    let (client, server) = plain_pair().await;
    let (client, mut unsolicited) = Correlator::new(client, &CorrelatorConfig::default()).unwrap();
    server
        .send(Message::Echo("news".into()).to_envelope(0))
        .await
        .unwrap();
    server
        .sender()
        .send_frame(Frame::Error(ErrorFrame::new(
            0,
            ErrorCode::OVERLOADED,
            "slow down",
        )))
        .await
        .unwrap();
    // A reply to a request nobody sent is discarded (and logged).
    server.send(Message::Pong.to_envelope(12345)).await.unwrap();
    server
        .send(Message::Echo("more".into()).to_envelope(0))
        .await
        .unwrap();
    match unsolicited.recv().await {
        Some(Incoming::Message(envelope)) => {
            assert_eq!(envelope.request_id, 0);
            assert_eq!(
                Message::try_from(envelope).unwrap(),
                Message::Echo("news".into())
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    match unsolicited.recv().await {
        Some(Incoming::Error(error)) => assert_eq!(error.code, ErrorCode::OVERLOADED),
        other => panic!("unexpected {other:?}"),
    }
    match unsolicited.recv().await {
        Some(Incoming::Message(envelope)) => assert_eq!(&envelope.payload[..], b"more"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(unsolicited.try_recv().is_none());
    drop(client);
}

#[tokio::test]
async fn close_lets_pending_requests_complete() {
    let dispatcher = standard_dispatcher();
    let s = setup(&dispatcher, ServeConfig::default()).await;
    let mut tasks = JoinSet::new();
    for i in 0..50u32 {
        let client = s.client.clone();
        tasks.spawn(async move {
            let msg = custom("SLOW_ECHO", i.to_be_bytes().to_vec());
            client.request(&msg).await.map(|reply| (reply, msg))
        });
    }
    while s.client.pending() < 50 {
        tokio::task::yield_now().await;
    }
    // Closing waits for the pending requests; new ones fail at once.
    let client = s.client.clone();
    let closing = tokio::spawn(async move { client.close().await });
    tokio::task::yield_now().await;
    let closed = s.client.request(&Message::Ping).await;
    assert!(matches!(closed, Err(Error::Closed)), "{closed:?}");
    closing.await.unwrap().unwrap();
    assert_eq!(s.client.pending(), 0);
    while let Some(done) = tasks.join_next().await {
        let (reply, msg) = done.unwrap().unwrap();
        assert_eq!(reply, msg);
    }
    let report = s.server.await.unwrap().unwrap();
    assert_eq!(report.replies, 50);
}

#[tokio::test]
async fn replies_too_large_for_the_peer_become_too_large_errors() {
    let mut config = ConnectionConfig::default();
    config.max_frame_len = 1024;
    let (client, server) = pair_with(ClientSecurity::Plain, ServerSecurity::Plain, config).await;
    let dispatcher = Arc::new(Dispatcher::default());
    dispatcher.register("BIG", |_| Ok(Message::custom("BIG", vec![0u8; 4096])?));
    dispatcher.register_envelope("RAW_BIG", |envelope: Envelope| async move {
        Ok(Envelope::new(
            0,
            envelope.msg_type,
            Bytes::from(vec![1u8; 4096]),
        ))
    });
    let s = serve_on(
        client,
        server,
        &dispatcher,
        ServeConfig::default(),
        CorrelatorConfig::default(),
    );
    for name in ["BIG", "RAW_BIG"] {
        let error = s.client.request(&custom(name, Bytes::new())).await;
        assert_eq!(remote_code(error), ErrorCode::TOO_LARGE, "{name}");
    }
    s.client.close().await.unwrap();
    let report = s.server.await.unwrap().unwrap();
    assert_eq!((report.replies, report.errors), (0, 2));
}

#[tokio::test]
async fn invalid_configurations_are_refused() {
    let (client, server) = plain_pair().await;
    let dispatcher = Arc::new(Dispatcher::default());
    let (_stop, shutdown) = watch::channel(false);
    let mut serve = ServeConfig::default();
    serve.max_in_flight = 0;
    let refused = dispatcher.serve(server, &serve, shutdown).await;
    assert!(matches!(refused, Err(Error::Config(_))), "{refused:?}");

    let mut correlate = CorrelatorConfig::default();
    correlate.unsolicited_limit = 0;
    assert!(matches!(
        Correlator::new(client, &correlate),
        Err(Error::Config(_))
    ));
    let mut correlate = CorrelatorConfig::default();
    correlate.request_timeout = Duration::ZERO;
    assert!(correlate.validate().is_err());
}

#[tokio::test]
async fn serve_reports_a_failed_connection() {
    let (client, server) = plain_pair().await;
    let dispatcher = standard_dispatcher();
    let (_stop, shutdown) = watch::channel(false);
    let serve_config = ServeConfig::default();
    let serving =
        tokio::spawn(async move { dispatcher.serve(server, &serve_config, shutdown).await });
    // A peer that breaks the protocol: a data frame that is no envelope.
    client
        .sender()
        .send_frame(Frame::Data(netproto_wire::Data::plain(Bytes::from_static(
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        ))))
        .await
        .unwrap();
    let result = serving.await.unwrap();
    assert!(
        matches!(
            result,
            Err(Error::Transport(netproto_transport::Error::Protocol(_)))
        ),
        "{result:?}"
    );
    drop(client);
}

/// A correlator with `correlate`'s settings on a connection whose server
/// never reads (kept alive in the second half), with small queues: after a
/// few 64 KiB requests the pipe, the server's inbound queue and the
/// client's send queue are full, and later requests wait to be queued. It
/// starts `count` such requests.
async fn stalled(
    correlate: &CorrelatorConfig,
    count: usize,
) -> (Arc<Correlator>, Connection, JoinSet<Result<Message, Error>>) {
    let mut config = ConnectionConfig::default();
    config.backpressure_limit = 2;
    config.inbound_limit = 1;
    config.heartbeat_interval = None;
    let (client, server) = pair_with(ClientSecurity::Plain, ServerSecurity::Plain, config).await;
    let (client, _unsolicited) = Correlator::new(client, correlate).unwrap();
    let client = Arc::new(client);
    let mut tasks = JoinSet::new();
    for _ in 0..count {
        let client = client.clone();
        tasks.spawn(async move { client.request(&custom("ANY", vec![0; 64 * 1024])).await });
    }
    (client, server, tasks)
}

#[tokio::test(start_paused = true)]
async fn with_a_queue_timeout_messages_behind_a_full_send_queue_fail_unsent_at_it() {
    let mut correlate = CorrelatorConfig::default();
    correlate.request_timeout = Duration::from_secs(5);
    correlate.queue_timeout = Some(Duration::from_millis(300));
    // Every message waiting for room gives up at the queue timeout, not at
    // the request timeout.
    let start = Instant::now();
    let (client, server, mut tasks) = stalled(&correlate, 32).await;
    let (mut unsent, mut timed_out) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        match done.unwrap() {
            Err(error @ Error::QueueFull(d)) if d == Duration::from_millis(300) => {
                assert!(error.is_unprocessed() && error.is_timeout());
                unsent += 1;
            }
            // Queued before the queue filled: no answer, the request timeout.
            Err(Error::Timeout(d)) if d == Duration::from_secs(5) => timed_out += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(unsent > 0, "{unsent} unsent, {timed_out} timed out");
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert_eq!(client.pending(), 0);
    // A one-way message waits no longer either.
    let start = Instant::now();
    let sent = client.send_oneway(&custom("ANY", vec![0; 64 * 1024])).await;
    assert!(matches!(sent, Err(Error::QueueFull(_))), "{sent:?}");
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    // Out of range.
    for out_of_range in [
        Duration::ZERO,
        netproto_transport::MAX_DURATION + Duration::from_secs(1),
    ] {
        correlate.queue_timeout = Some(out_of_range);
        assert!(matches!(correlate.validate(), Err(Error::Config(_))));
    }
    drop(server);
}

#[tokio::test(start_paused = true)]
async fn requests_behind_a_full_send_queue_time_out_on_time() {
    let mut correlate = CorrelatorConfig::default();
    correlate.request_timeout = Duration::from_secs(1);
    let start = Instant::now();
    let (client, server, mut tasks) = stalled(&correlate, 32).await;
    while let Some(done) = tasks.join_next().await {
        let result = done.unwrap();
        assert!(
            matches!(result, Err(Error::Timeout(d)) if d == Duration::from_secs(1)),
            "{result:?}"
        );
    }
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(client.pending(), 0);
    // A stream request waits for room no longer than a request does, or
    // than its deadline.
    let envelope = custom("ANY", vec![0; 64 * 1024]).to_envelope(0);
    let stream = client
        .request_stream(
            envelope.msg_type.clone(),
            envelope.payload.clone(),
            &RequestOptions::default(),
            8,
        )
        .await;
    assert!(matches!(stream, Err(Error::Timeout(_))), "{stream:?}");
    let options = RequestOptions::default().deadline(Duration::from_millis(300));
    let stream = client
        .request_stream(envelope.msg_type, envelope.payload, &options, 8)
        .await;
    assert!(
        matches!(stream, Err(Error::DeadlineExceeded(_))),
        "{stream:?}"
    );
    assert_eq!(start.elapsed(), Duration::from_millis(2300));
    drop(server);
}
