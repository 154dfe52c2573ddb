//! Typed calls end to end: a served dispatcher and a typed client over a
//! framed connection on an in-memory pipe. Time is paused where timeouts
//! decide the outcome.

// Integration test: a failed unwrap, expect, panic or index is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use netproto_dispatch::{Correlator, CorrelatorConfig, Dispatcher, HandlerError, ServeConfig};
use netproto_service::{
    CallError, CallOptions, Context, Error, Method, Request, TypedClient, fingerprint, register,
    register_service, service, to_bytes,
};
use netproto_transport::{Acceptor, ClientSecurity, ConnectionConfig, Connector, ServerSecurity};
use netproto_wire::{Envelope, ErrorCode, MessageType};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tower::{Service, ServiceBuilder, ServiceExt};

/// A typed client on one end of a pipe, `dispatcher` serving the other.
struct Setup {
    client: TypedClient,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
}

impl Setup {
    async fn new(dispatcher: &Arc<Dispatcher>, config: &CorrelatorConfig) -> Self {
        let (client_io, server_io) = tokio::io::duplex(256 * 1024);
        let acceptor = Acceptor::new(ServerSecurity::Plain, ConnectionConfig::default()).unwrap();
        let connector = Connector::new(ClientSecurity::Plain, ConnectionConfig::default()).unwrap();
        let (stop, shutdown) = watch::channel(false);
        let dispatcher = dispatcher.clone();
        let server = tokio::spawn(async move {
            let conn = acceptor.accept(server_io).await.unwrap();
            dispatcher
                .serve(conn, &ServeConfig::default(), shutdown)
                .await
                .unwrap();
        });
        let conn = connector.connect(client_io).await.unwrap();
        let (correlator, _unsolicited) = Correlator::new(conn, config).unwrap();
        let client = TypedClient::new(Arc::new(correlator));
        Self {
            client,
            stop,
            server,
        }
    }

    async fn plain(dispatcher: &Arc<Dispatcher>) -> Self {
        Self::new(dispatcher, &CorrelatorConfig::default()).await
    }

    async fn finish(self) {
        self.stop.send_replace(true);
        drop(self.client);
        tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .expect("the server stops")
            .unwrap();
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Put {
    key: String,
    value: Vec<u8>,
}

service! {
    /// The key-value service of these tests, as the server defines it.
    service Kv {
        /// Reads a key.
        Get = "kv.get.v1": String => Option<Vec<u8>>;
        /// Writes a key; answers the previous value.
        PutKey = "kv.put.v1": Put => Option<Vec<u8>>;
        /// Sleeps for the given milliseconds, then answers them.
        Sleep = "kv.sleep.v1": u64 => u64;
    }
}

/// A dispatcher serving `Kv` from a map, recording the contexts it saw.
fn kv_server(contexts: &Arc<Mutex<Vec<Context>>>) -> Arc<Dispatcher> {
    let dispatcher = Arc::new(Dispatcher::default());
    let store = Arc::new(Mutex::new(HashMap::<String, Vec<u8>>::new()));
    let (seen, map) = (contexts.clone(), store.clone());
    register::<Get, _, _>(&dispatcher, move |context, key: String| {
        seen.lock().unwrap().push(context);
        let value = map.lock().unwrap().get(&key).cloned();
        async move { Ok(value) }
    });
    let (seen, map) = (contexts.clone(), store);
    register::<PutKey, _, _>(&dispatcher, move |context, put: Put| {
        seen.lock().unwrap().push(context);
        let previous = map.lock().unwrap().insert(put.key, put.value);
        async move { Ok(previous) }
    });
    dispatcher
}

#[tokio::test]
async fn a_typed_call_round_trips_with_its_context() {
    let contexts = Arc::new(Mutex::new(Vec::new()));
    let setup = Setup::plain(&kv_server(&contexts)).await;
    let client = &setup.client;

    assert_eq!(client.call::<Get>("a".into()).await.unwrap(), None);
    let put = Put {
        key: "a".into(),
        value: vec![1, 2, 3],
    };
    assert_eq!(client.call::<PutKey>(put).await.unwrap(), None);
    assert_eq!(
        client.call::<Get>("a".into()).await.unwrap(),
        Some(vec![1, 2, 3])
    );
    // Through the per-method tower service too.
    let answer = client.method::<Get>().oneshot("a".into()).await.unwrap();
    assert_eq!(answer, Some(vec![1, 2, 3]));

    let contexts = contexts.lock().unwrap().clone();
    let seen: Vec<(u64, &str)> = contexts
        .iter()
        .map(|c| (c.request_id(), c.method()))
        .collect();
    assert_eq!(
        seen,
        [
            (1, "kv.get.v1"),
            (2, "kv.put.v1"),
            (3, "kv.get.v1"),
            (4, "kv.get.v1")
        ]
    );
    assert!(
        contexts
            .iter()
            .all(|c| c.deadline().is_none() && c.traceparent().is_none())
    );
    assert_eq!(
        client.available(),
        CorrelatorConfig::default().max_in_flight
    );
    setup.finish().await;
}

/// The client's own definitions: methods the server does not serve, or
/// serves with other types.
mod client_side {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize)]
    pub(crate) struct Put {
        pub(crate) key: String,
        pub(crate) value: Vec<u8>,
        pub(crate) ttl: u32,
    }

    #[derive(Debug, Serialize, Deserialize)]
    pub(crate) struct Renamed {
        pub(crate) name: String,
        pub(crate) bytes: Vec<u8>,
    }

    netproto_service::service! {
        /// The key-value service as an out-of-date client defines it.
        pub(crate) service Kv {
            /// A method the server never had.
            Delete = "kv.delete.v1": String => bool;
            /// A version the server does not serve.
            GetV2 = "kv.get.v2": String => Option<Vec<u8>>;
            /// `kv.put.v1` with a field more: trailing bytes for the server.
            PutWithTtl = "kv.put.v1": Put => Option<Vec<u8>>;
            /// `kv.get.v1` with a response of another type.
            GetCount = "kv.get.v1": String => u64;
            /// `kv.put.v1` with the fields renamed: it still decodes.
            PutRenamed = "kv.put.v1": Renamed => Option<Vec<u8>>;
            /// `kv.sleep.v1` with a request that does not decode as a u64.
            SleepText = "kv.sleep.v1": Vec<u8> => u64;
        }
    }
}

#[tokio::test]
async fn an_unknown_method_or_version_is_a_clear_error() {
    let setup = Setup::plain(&kv_server(&Arc::default())).await;
    for error in [
        setup
            .client
            .call::<client_side::Delete>("a".into())
            .await
            .unwrap_err(),
        setup
            .client
            .call::<client_side::GetV2>("a".into())
            .await
            .unwrap_err(),
    ] {
        assert!(error.is_unknown_method(), "{error:?}");
        assert!(error.is_remote() && !error.is_type_mismatch() && !error.is_retryable());
        assert_eq!(error.code(), Some(ErrorCode::NO_HANDLER));
        let text = error.to_string();
        assert!(text.starts_with(&format!("{}: unknown method (code 3)", error.method())));
        assert!(text.contains(error.method()), "{text}");
    }
    setup.finish().await;
}

#[tokio::test]
async fn a_request_of_another_type_is_refused_before_the_handler() {
    let contexts = Arc::new(Mutex::new(Vec::new()));
    let dispatcher = kv_server(&contexts);
    let sleeps = Arc::new(AtomicUsize::new(0));
    let counted = sleeps.clone();
    register::<Sleep, _, _>(&dispatcher, move |_, ms: u64| {
        counted.fetch_add(1, Ordering::Relaxed);
        async move { Ok(ms) }
    });
    let setup = Setup::plain(&dispatcher).await;

    // One byte more than the server's `Put`: trailing bytes.
    let put = client_side::Put {
        key: "k".into(),
        value: vec![1],
        ttl: 60,
    };
    let payload = to_bytes(&put).unwrap();
    let error = setup
        .client
        .call::<client_side::PutWithTtl>(put)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::SCHEMA_MISMATCH), "{error:?}");
    assert!(error.is_type_mismatch() && error.is_remote());

    // Without a fingerprint (an untyped requester), the payload is decoded,
    // and refused: one byte more than the server's `Put`.
    let raw = |name: &str, payload: Bytes| {
        let correlator = setup.client.correlator().clone();
        let name = MessageType::new(name).unwrap();
        async move { correlator.request_raw(name, payload).await.unwrap_err() }
    };
    let netproto_dispatch::Error::Remote { code, message, .. } = raw("kv.put.v1", payload).await
    else {
        panic!("an error frame");
    };
    assert_eq!(code, ErrorCode::BAD_MESSAGE);
    assert!(
        message.starts_with("kv.put.v1: request does not decode as its request type"),
        "{message}"
    );
    assert!(message.contains("bytes left over"), "{message}");

    // Bytes that are no u64 varint at all (eleven 0xff).
    let error = raw("kv.sleep.v1", Bytes::from(vec![0xff; 11])).await;
    assert_eq!(error.code(), Some(ErrorCode::BAD_MESSAGE), "{error:?}");
    assert!(error.to_string().contains("kv.sleep.v1"), "{error}");

    // The handlers never ran.
    assert!(contexts.lock().unwrap().is_empty());
    assert_eq!(sleeps.load(Ordering::Relaxed), 0);
    // And the connection goes on.
    assert_eq!(setup.client.call::<Sleep>(5).await.unwrap(), 5);
    setup.finish().await;
}

#[tokio::test]
async fn a_response_of_another_type_is_a_decode_error_never_a_value() {
    // A server that checks no fingerprint (not this crate's `register`).
    let dispatcher = Arc::new(Dispatcher::default());
    dispatcher.register_envelope("kv.get.v1", |request: Envelope| async move {
        let answer = to_bytes(&Some(b"hello".to_vec())).unwrap();
        Ok(Envelope::new(0, request.msg_type, answer))
    });
    let setup = Setup::plain(&dispatcher).await;
    // The server answers `Some(b"hello")`, 01 05 68 65 6c 6c 6f: a u64 of 1
    // and six bytes left over.
    let error = setup
        .client
        .call::<client_side::GetCount>("k".into())
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            CallError::Decode {
                method: "kv.get.v1",
                source: Error::TrailingBytes { len: 6 }
            }
        ),
        "{error:?}"
    );
    assert!(error.is_type_mismatch() && !error.is_remote() && error.code().is_none());
    setup.finish().await;
}

#[tokio::test]
async fn an_answer_under_another_message_type_is_refused() {
    let dispatcher = Arc::new(Dispatcher::default());
    dispatcher.register_envelope("kv.get.v1", |_| async {
        Ok(Envelope::new(
            0,
            MessageType::new("something.else").unwrap(),
            Bytes::from_static(&[0]),
        ))
    });
    let setup = Setup::plain(&dispatcher).await;
    let error = setup.client.call::<Get>("k".into()).await.unwrap_err();
    assert!(
        matches!(&error, CallError::UnexpectedType { got, .. } if got == "something.else"),
        "{error:?}"
    );
    assert!(error.is_type_mismatch());
    setup.finish().await;
}

/// What only the fingerprint catches: the same encoding under other field
/// names would decode; the server refuses it before decoding.
#[tokio::test]
async fn a_mismatch_that_decodes_is_caught_by_the_fingerprint() {
    let contexts = Arc::default();
    let setup = Setup::plain(&kv_server(&contexts)).await;
    let renamed = client_side::Renamed {
        name: "k".into(),
        bytes: vec![7],
    };
    let error = setup
        .client
        .call::<client_side::PutRenamed>(renamed)
        .await
        .unwrap_err();
    assert!(
        error.is_schema_mismatch() && error.is_type_mismatch(),
        "{error:?}"
    );
    assert_eq!(error.code(), Some(ErrorCode::SCHEMA_MISMATCH));
    let (theirs, ours) = (
        fingerprint::<client_side::PutRenamed>(),
        fingerprint::<PutKey>(),
    );
    assert_ne!(theirs, ours);
    let text = error.to_string();
    assert!(
        text.contains(&format!("{theirs:016x}")) && text.contains(&format!("{ours:016x}")),
        "{text}"
    );
    // Never decoded: the handler did not run, nothing was stored.
    assert_eq!(setup.client.call::<Get>("k".into()).await.unwrap(), None);
    assert_eq!(contexts.lock().unwrap().len(), 1);
    setup.finish().await;
}

#[tokio::test]
async fn handler_errors_keep_their_code_and_unencodable_requests_are_not_sent() {
    let dispatcher = Arc::new(Dispatcher::default());
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    register::<Sleep, _, _>(&dispatcher, move |_, _| {
        counted.fetch_add(1, Ordering::Relaxed);
        async { Err::<u64, _>(HandlerError::new(ErrorCode::OVERLOADED, "busy")) }
    });
    let setup = Setup::plain(&dispatcher).await;
    let error = setup.client.call::<Sleep>(1).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::OVERLOADED));
    assert!(error.is_retryable() && !error.is_timeout());
    assert_eq!(
        error.to_string(),
        "kv.sleep.v1: server overloaded (code 5): \"busy\""
    );

    /// A value whose serialization fails.
    struct Unencodable;
    impl Serialize for Unencodable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("no"))
        }
    }
    impl<'de> Deserialize<'de> for Unencodable {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            <()>::deserialize(d).map(|()| Self)
        }
    }
    struct SleepBadly;
    impl Method for SleepBadly {
        const NAME: &'static str = "kv.sleep.v1";
        type Request = Unencodable;
        type Response = u64;
    }
    let error = setup
        .client
        .call::<SleepBadly>(Unencodable)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            CallError::Encode {
                source: Error::Encode(_),
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        calls.load(Ordering::Relaxed),
        1,
        "the unencodable request was not sent"
    );
    setup.finish().await;
}

/// A handler that waits for a permit of `gate` before answering, and
/// reports each start on `started`.
fn gated_sleep(
    dispatcher: &Dispatcher,
    gate: &Arc<Semaphore>,
    started: mpsc::UnboundedSender<u64>,
) {
    let gate = gate.clone();
    let service = ServiceBuilder::new()
        .load_shed()
        .concurrency_limit(1)
        .service_fn(move |request: Request<Sleep>| {
            let gate = gate.clone();
            let started = started.clone();
            async move {
                started.send(*request.value()).unwrap();
                gate.acquire().await.unwrap().forget();
                Ok::<_, HandlerError>(*request.value())
            }
        });
    register_service::<Sleep, _>(dispatcher, service);
}

#[tokio::test]
async fn server_side_load_shedding_over_a_concurrency_limit_answers_overloaded() {
    let dispatcher = Arc::new(Dispatcher::default());
    let gate = Arc::new(Semaphore::new(0));
    let (started_tx, mut started) = mpsc::unbounded_channel();
    gated_sleep(&dispatcher, &gate, started_tx);
    let setup = Setup::plain(&dispatcher).await;

    let first = tokio::spawn({
        let client = setup.client.clone();
        async move { client.call::<Sleep>(1).await }
    });
    assert_eq!(started.recv().await, Some(1));
    // The limit of one is taken: the second is shed, not queued.
    let error = setup.client.call::<Sleep>(2).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::OVERLOADED), "{error:?}");
    assert!(error.is_retryable());
    assert!(
        error.to_string().contains("the service is overloaded"),
        "{error}"
    );

    gate.add_permits(1);
    assert_eq!(first.await.unwrap().unwrap(), 1);
    gate.add_permits(1);
    assert_eq!(setup.client.call::<Sleep>(3).await.unwrap(), 3);
    assert_eq!(
        started.recv().await,
        Some(3),
        "the shed request never started"
    );
    setup.finish().await;
}

#[tokio::test(start_paused = true)]
async fn a_server_side_timeout_layer_answers_timeout_and_drops_the_handler() {
    let dispatcher = Arc::new(Dispatcher::default());
    let dropped = Arc::new(AtomicUsize::new(0));
    let counted = dropped.clone();
    let service = ServiceBuilder::new()
        .timeout(Duration::from_millis(50))
        .service_fn(move |request: Request<Sleep>| {
            let guard = DropCounter(counted.clone());
            async move {
                tokio::time::sleep(Duration::from_millis(*request.value())).await;
                drop(guard);
                Ok::<_, HandlerError>(*request.value())
            }
        });
    register_service::<Sleep, _>(&dispatcher, service);
    let setup = Setup::plain(&dispatcher).await;

    assert_eq!(setup.client.call::<Sleep>(10).await.unwrap(), 10);
    let error = setup.client.call::<Sleep>(10_000).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::TIMEOUT), "{error:?}");
    assert!(error.is_timeout() && error.is_remote());
    assert!(
        error.to_string().contains("took longer than its timeout"),
        "{error}"
    );
    // The first finished (dropping its guard at the end); the second's
    // future was dropped by the timeout, which dropped its guard too.
    assert_eq!(dropped.load(Ordering::Relaxed), 2);
    setup.finish().await;
}

/// Counts its drops.
struct DropCounter(Arc<AtomicUsize>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// A dispatcher whose `kv.sleep.v1` waits for `gate`, counting the
/// handlers running at once and the most seen.
fn gated_counting(
    gate: &Arc<Semaphore>,
    peak: &Arc<(AtomicUsize, AtomicUsize)>,
) -> Arc<Dispatcher> {
    let dispatcher = Arc::new(Dispatcher::default());
    let (gate, peak) = (gate.clone(), peak.clone());
    register::<Sleep, _, _>(&dispatcher, move |_, value: u64| {
        let (gate, peak) = (gate.clone(), peak.clone());
        async move {
            let now = peak.0.fetch_add(1, Ordering::SeqCst) + 1;
            peak.1.fetch_max(now, Ordering::SeqCst);
            gate.acquire().await.unwrap().forget();
            peak.0.fetch_sub(1, Ordering::SeqCst);
            Ok(value)
        }
    });
    dispatcher
}

#[tokio::test]
async fn a_client_side_concurrency_limit_holds_calls_back() {
    let gate = Arc::new(Semaphore::new(0));
    let peak = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
    let setup = Setup::plain(&gated_counting(&gate, &peak)).await;

    let limited = ServiceBuilder::new()
        .concurrency_limit(2)
        .service(setup.client.method::<Sleep>());
    let calls: Vec<_> = (0..6)
        .map(|i| tokio::spawn(limited.clone().oneshot(i)))
        .collect();
    // Two reach the server; the others wait in the layer, not on the wire.
    wait_for(|| peak.0.load(Ordering::SeqCst) == 2).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(setup.client.correlator().pending(), 2);

    gate.add_permits(6);
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.unwrap().unwrap());
    }
    assert_eq!(answers, [0, 1, 2, 3, 4, 5]);
    assert_eq!(peak.1.load(Ordering::SeqCst), 2, "at most two ran at once");
    setup.finish().await;
}

#[tokio::test]
async fn poll_ready_waits_for_the_connections_in_flight_budget() {
    let gate = Arc::new(Semaphore::new(0));
    let peak = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
    let mut config = CorrelatorConfig::default();
    config.max_in_flight = 2;
    let setup = Setup::new(&gated_counting(&gate, &peak), &config).await;
    let sleep = setup.client.method::<Sleep>();

    // Two calls take the whole budget: one direct, one through the service.
    let direct = tokio::spawn({
        let client = setup.client.clone();
        async move { client.call::<Sleep>(1).await }
    });
    let through = tokio::spawn(sleep.clone().oneshot(2));
    wait_for(|| peak.0.load(Ordering::SeqCst) == 2).await;
    assert_eq!(setup.client.available(), 0);

    let mut waiting = sleep.clone();
    let mut cx = TaskContext::from_waker(Waker::noop());
    assert!(waiting.poll_ready(&mut cx).is_pending(), "no budget left");
    // Load shedding turns the pending readiness into an immediate refusal.
    let error = ServiceBuilder::new()
        .load_shed()
        .service(sleep.clone())
        .oneshot(3)
        .await
        .unwrap_err();
    assert!(error.is::<tower::load_shed::error::Overloaded>(), "{error}");

    gate.add_permits(2);
    assert_eq!(direct.await.unwrap().unwrap(), 1);
    assert_eq!(through.await.unwrap().unwrap(), 2);
    assert!(matches!(waiting.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    assert_eq!(setup.client.available(), 1, "the ready handle holds one");
    gate.add_permits(1);
    assert_eq!(waiting.call(4).await.unwrap(), 4);
    assert_eq!(setup.client.available(), 2);
    // Another typed client of the same connection shares its budget.
    let other = TypedClient::new(setup.client.correlator().clone());
    let _held = other.method::<Sleep>().ready_oneshot().await.unwrap();
    assert_eq!(setup.client.available(), 1);
    drop(_held);
    // A closed connection fails readiness at once: a balancer drops it.
    setup.client.correlator().close().await.unwrap();
    let error = waiting.poll_ready(&mut cx);
    let Poll::Ready(Err(error)) = error else {
        panic!("a closed connection is not ready: {error:?}");
    };
    assert!(matches!(error, CallError::Connection { .. }), "{error}");
    setup.finish().await;
}

#[tokio::test(start_paused = true)]
async fn a_client_side_timeout_layer_gives_up_and_forgets_the_request() {
    let gate = Arc::new(Semaphore::new(0));
    let peak = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
    let setup = Setup::plain(&gated_counting(&gate, &peak)).await;

    let error = ServiceBuilder::new()
        .timeout(Duration::from_millis(100))
        .service(setup.client.method::<Sleep>())
        .oneshot(1)
        .await
        .unwrap_err();
    assert!(error.is::<tower::timeout::error::Elapsed>(), "{error}");
    assert_eq!(setup.client.correlator().pending(), 0);
    assert_eq!(
        setup.client.available(),
        CorrelatorConfig::default().max_in_flight
    );
    gate.add_permits(2);
    assert_eq!(setup.client.call::<Sleep>(2).await.unwrap(), 2);
    setup.finish().await;
}

/// Polls `done` until it holds, for at most 10 s.
async fn wait_for(done: impl Fn() -> bool) {
    for _ in 0..10_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("condition not reached within 10 s");
}

/// Sends on its channel when dropped.
struct DropSignal(mpsc::UnboundedSender<u64>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send(0);
    }
}

/// `kv.sleep.v1` sleeping its value in milliseconds, signalling the drop of
/// its future.
fn sleeping_server(dropped: &mpsc::UnboundedSender<u64>) -> Arc<Dispatcher> {
    let dispatcher = Arc::new(Dispatcher::default());
    let dropped = dropped.clone();
    register::<Sleep, _, _>(&dispatcher, move |_, ms: u64| {
        let guard = DropSignal(dropped.clone());
        async move {
            let _guard = guard;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(ms)
        }
    });
    dispatcher
}

#[tokio::test(start_paused = true)]
async fn a_deadline_drops_the_handler_and_is_deadline_exceeded() {
    let (dropped_tx, mut dropped) = mpsc::unbounded_channel();
    let setup = Setup::plain(&sleeping_server(&dropped_tx)).await;
    let options = CallOptions::default().deadline(Duration::from_millis(100));
    let start = tokio::time::Instant::now();
    let error = setup
        .client
        .call_with::<Sleep>(60_000, &options)
        .await
        .unwrap_err();
    assert!(
        error.is_deadline_exceeded() && error.is_timeout(),
        "{error:?}"
    );
    assert!(start.elapsed() < Duration::from_millis(150));
    // The server's deadline dropped the handler's future, long before its
    // sleep of a minute.
    let signal = tokio::time::timeout(Duration::from_secs(1), dropped.recv()).await;
    assert_eq!(signal.unwrap(), Some(0));
    assert!(start.elapsed() < Duration::from_secs(1));
    // Within its deadline, a call succeeds.
    let options = CallOptions::default().deadline(Duration::from_secs(5));
    assert_eq!(
        setup.client.call_with::<Sleep>(10, &options).await.unwrap(),
        10
    );
    setup.finish().await;
}

#[tokio::test]
async fn a_dropped_typed_call_cancels_its_handler() {
    let (dropped_tx, mut dropped) = mpsc::unbounded_channel();
    let setup = Setup::plain(&sleeping_server(&dropped_tx)).await;
    let call = tokio::spawn({
        let client = setup.client.clone();
        async move { client.call::<Sleep>(60_000).await }
    });
    wait_for(|| setup.client.correlator().pending() == 1).await;
    call.abort();
    let signal = tokio::time::timeout(Duration::from_secs(5), dropped.recv()).await;
    assert_eq!(signal.expect("the handler is dropped within 5 s"), Some(0));
    assert_eq!(setup.client.correlator().cancelled(), 1);
    setup.finish().await;
}

service! {
    /// A front method calling `kv.sleep.v1` within its own deadline.
    service Front {
        /// Calls `kv.sleep.v1` with its value.
        Relay = "front.relay.v1": u64 => u64;
    }
}

#[tokio::test(start_paused = true)]
async fn a_handlers_call_inherits_what_is_left_of_its_deadline() {
    let dispatcher = Arc::new(Dispatcher::default());
    let deadlines = Arc::new(Mutex::new(Vec::new()));
    let seen = deadlines.clone();
    register::<Sleep, _, _>(&dispatcher, move |context: Context, ms: u64| {
        seen.lock().unwrap().push(("inner", context.deadline()));
        async move { Ok(ms) }
    });
    let inner_client = Arc::new(Mutex::new(None::<TypedClient>));
    let (seen, client) = (deadlines.clone(), inner_client.clone());
    register::<Relay, _, _>(&dispatcher, move |context: Context, ms: u64| {
        seen.lock().unwrap().push(("outer", context.deadline()));
        let client = client.lock().unwrap().clone().unwrap();
        async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            let options = CallOptions::within(&context);
            client
                .call_with::<Sleep>(ms, &options)
                .await
                .map_err(|error| HandlerError::failed(error.to_string()))
        }
    });
    let setup = Setup::plain(&dispatcher).await;
    *inner_client.lock().unwrap() = Some(setup.client.clone());

    let options = CallOptions::default().deadline(Duration::from_millis(500));
    assert_eq!(
        setup.client.call_with::<Relay>(3, &options).await.unwrap(),
        3
    );
    let deadlines = deadlines.lock().unwrap().clone();
    let [("outer", Some(outer)), ("inner", Some(inner))] = deadlines[..] else {
        panic!("both handlers see a deadline: {deadlines:?}");
    };
    assert!(inner <= outer, "{inner:?} > {outer:?}");
    // What is left, not the whole budget again: 30 ms went by.
    assert!(
        outer - inner < Duration::from_millis(40),
        "{:?}",
        outer - inner
    );
    setup.finish().await;
}
