//! PROTOCOL.md Part III on the dispatcher: header blocks taken off and
//! handed to context handlers, deadlines and cancel frames dropping the
//! handler's future, observed through a drop guard in the handler.

// Integration test: a failed unwrap, expect, panic or index is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use netproto_dispatch::{
    Correlator, CorrelatorConfig, Dispatcher, Error, RequestContext, RequestOptions, ServeConfig,
    ServeReport,
};
use netproto_transport::{
    Acceptor, ClientSecurity, Connection, ConnectionConfig, Connector, Incoming, ServerSecurity,
};
use netproto_wire::{DataFlags, Envelope, ErrorCode, Headers, MessageType, Traceparent};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Sends its name when dropped: the handler's future is gone.
struct DropGuard(mpsc::UnboundedSender<&'static str>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        let _ = self.0.send("dropped");
    }
}

/// A dispatcher whose `STUCK` handler records its context, says it started,
/// and never finishes; `ECHO` echoes with its context.
fn stuck_dispatcher(
    events: &mpsc::UnboundedSender<&'static str>,
    seen: &Arc<Mutex<Vec<RequestContext>>>,
) -> Arc<Dispatcher> {
    let dispatcher = Arc::new(Dispatcher::default());
    let (events, seen) = (events.clone(), seen.clone());
    dispatcher.register_with_context("STUCK", move |context, envelope: Envelope| {
        seen.lock().unwrap().push(context);
        let guard = DropGuard(events.clone());
        let _ = events.send("started");
        async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            Ok(envelope)
        }
    });
    dispatcher.register_with_context("ECHO", |context, envelope: Envelope| async move {
        let text = format!(
            "{:?} {:?}",
            context.traceparent.map(|t| t.to_string()),
            context.fingerprint
        );
        Ok(Envelope::new(0, envelope.msg_type, Bytes::from(text)))
    });
    dispatcher
}

async fn pair() -> (Connection, Connection) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let acceptor = Acceptor::new(ServerSecurity::Plain, ConnectionConfig::default()).unwrap();
    let connector = Connector::new(ClientSecurity::Plain, ConnectionConfig::default()).unwrap();
    let server = tokio::spawn(async move { acceptor.accept(b).await });
    let client = connector.connect(a).await.unwrap();
    (client, server.await.unwrap().unwrap())
}

fn serve(
    dispatcher: &Arc<Dispatcher>,
    conn: Connection,
) -> (watch::Sender<bool>, JoinHandle<Result<ServeReport, Error>>) {
    let (stop, shutdown) = watch::channel(false);
    let dispatcher = dispatcher.clone();
    let server = tokio::spawn(async move {
        dispatcher
            .serve(conn, &ServeConfig::default(), shutdown)
            .await
    });
    (stop, server)
}

fn with_headers(id: u64, name: &str, headers: &Headers, payload: &[u8]) -> Envelope {
    let mut body = BytesMut::new();
    headers.encode(&mut body);
    body.extend_from_slice(payload);
    Envelope::new(id, MessageType::new(name).unwrap(), body.freeze()).with_flags(DataFlags::HEADERS)
}

async fn next_event(events: &mut mpsc::UnboundedReceiver<&'static str>) -> &'static str {
    tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("an event within 5 s")
        .expect("the handler's channel is open")
}

#[tokio::test(start_paused = true)]
async fn a_deadline_expires_on_the_server_and_drops_the_handler() {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let dispatcher = stuck_dispatcher(&events_tx, &seen);
    let (mut client, server_conn) = pair().await;
    let (stop, server) = serve(&dispatcher, server_conn);

    // A raw request, so that only the server's deadline can end it.
    let mut headers = Headers::default();
    headers.deadline = Some(250);
    headers.traceparent = Traceparent::parse(TRACE.as_bytes());
    let sent = Instant::now();
    client
        .send(with_headers(7, "STUCK", &headers, b"x"))
        .await
        .unwrap();
    assert_eq!(next_event(&mut events).await, "started");
    let answer = client.recv().await.unwrap().unwrap();
    let Incoming::Error(error) = answer else {
        panic!("expected an error frame, got {answer:?}");
    };
    assert_eq!(
        (error.request_id, error.code),
        (7, ErrorCode::DEADLINE_EXCEEDED)
    );
    let waited = sent.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(300),
        "{waited:?}"
    );
    assert_eq!(next_event(&mut events).await, "dropped");
    {
        let seen = seen.lock().unwrap();
        let context = &seen[0];
        assert_eq!(context.request_id, 7);
        assert_eq!(context.traceparent.unwrap().as_str(), TRACE);
        let deadline = context.deadline.expect("the context has the deadline");
        assert!(deadline >= sent + Duration::from_millis(250));
        assert!(deadline <= sent + Duration::from_millis(260));
    }

    // A deadline of 0 has expired on arrival: the handler is never called.
    headers.deadline = Some(0);
    client
        .send(with_headers(9, "STUCK", &headers, b"x"))
        .await
        .unwrap();
    let Incoming::Error(error) = client.recv().await.unwrap().unwrap() else {
        panic!("expected an error frame");
    };
    assert_eq!(
        (error.request_id, error.code),
        (9, ErrorCode::DEADLINE_EXCEEDED)
    );
    assert_eq!(seen.lock().unwrap().len(), 1);

    stop.send_replace(true);
    let report = server.await.unwrap().unwrap();
    assert_eq!((report.errors, report.deadlines_exceeded), (2, 2));
    assert_eq!(report.cancelled, 0);
}

#[tokio::test(start_paused = true)]
async fn a_correlator_deadline_is_sent_and_is_the_local_timeout() {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let dispatcher = stuck_dispatcher(&events_tx, &seen);
    let (client_conn, server_conn) = pair().await;
    let (stop, server) = serve(&dispatcher, server_conn);
    let (client, _unsolicited) =
        Correlator::new(client_conn, &CorrelatorConfig::default()).unwrap();

    let options = RequestOptions::default().deadline(Duration::from_millis(100));
    let start = Instant::now();
    let error = client
        .request_raw_with(MessageType::new("STUCK").unwrap(), Bytes::new(), &options)
        .await
        .unwrap_err();
    assert!(
        error.is_deadline_exceeded() && error.is_timeout(),
        "{error:?}"
    );
    assert_eq!(error.code(), Some(ErrorCode::DEADLINE_EXCEEDED));
    assert!(start.elapsed() < Duration::from_millis(150));
    assert_eq!(next_event(&mut events).await, "started");
    // The server's own deadline drops the handler.
    assert_eq!(next_event(&mut events).await, "dropped");
    let deadline = seen.lock().unwrap()[0].deadline.unwrap();
    assert!(deadline <= start + Duration::from_millis(100));

    // Traceparent and fingerprint reach the handler; without options no
    // header block is sent and the context has none.
    let traceparent = Traceparent::parse(TRACE.as_bytes()).unwrap();
    let options = RequestOptions::default()
        .traceparent(traceparent)
        .fingerprint(0x0123_4567_89ab_cdef);
    let echo = MessageType::new("ECHO").unwrap();
    let reply = client
        .request_raw_with(echo.clone(), Bytes::new(), &options)
        .await
        .unwrap();
    let expected = format!("Some({TRACE:?}) Some({})", 0x0123_4567_89ab_cdef_u64);
    assert_eq!(reply.payload, Bytes::from(expected));
    let reply = client.request_raw(echo, Bytes::new()).await.unwrap();
    assert_eq!(reply.payload, Bytes::from_static(b"None None"));
    assert_eq!(client.cancelled(), 0);

    stop.send_replace(true);
    let report = server.await.unwrap().unwrap();
    assert_eq!((report.replies, report.deadlines_exceeded), (2, 1));
}

#[tokio::test]
async fn a_dropped_request_cancels_its_handler_and_is_counted() {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let dispatcher = stuck_dispatcher(&events_tx, &seen);
    let (client_conn, server_conn) = pair().await;
    let (stop, server) = serve(&dispatcher, server_conn);
    let (client, _unsolicited) =
        Correlator::new(client_conn, &CorrelatorConfig::default()).unwrap();
    let client = Arc::new(client);

    // A plain request, without any header block.
    let call = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .request_raw(MessageType::new("STUCK").unwrap(), Bytes::new())
                .await
        }
    });
    assert_eq!(next_event(&mut events).await, "started");
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    // The cancel frame reaches the server, which drops the handler.
    assert_eq!(next_event(&mut events).await, "dropped");
    assert_eq!(client.cancelled(), 1);
    assert_eq!(client.pending(), 0);

    // The connection goes on; a cancel for no running request is ignored.
    let echo = client.request_raw(MessageType::new("ECHO").unwrap(), Bytes::new());
    assert!(
        tokio::time::timeout(Duration::from_secs(5), echo)
            .await
            .unwrap()
            .is_ok()
    );

    stop.send_replace(true);
    let report = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (report.requests, report.cancelled, report.replies),
        (2, 1, 1)
    );
    assert_eq!((report.errors, report.unanswered), (0, 0));
}

#[tokio::test]
async fn a_malformed_header_block_ends_the_connection() {
    let (events_tx, _events) = mpsc::unbounded_channel();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let dispatcher = stuck_dispatcher(&events_tx, &seen);
    let (mut client, server_conn) = pair().await;
    let (_stop, server) = serve(&dispatcher, server_conn);

    // The block claims 9 bytes; 2 follow.
    let envelope = Envelope::new(
        3,
        MessageType::new("ECHO").unwrap(),
        Bytes::from_static(&[9, 1, 0]),
    )
    .with_flags(DataFlags::HEADERS);
    client.send(envelope).await.unwrap();
    let Incoming::Error(error) = client.recv().await.unwrap().unwrap() else {
        panic!("expected an error frame");
    };
    assert_eq!((error.request_id, error.code), (0, ErrorCode::BAD_MESSAGE));
    let result = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(result, Err(Error::Wire(_))), "{result:?}");
    assert!(seen.lock().unwrap().is_empty());
}
