//! Typed server streams: `register_stream` and `TypedClient::call_stream`
//! over loopback TCP.

// Integration test: a failed unwrap, expect, panic or index is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use netproto_dispatch::{Correlator, CorrelatorConfig, Dispatcher, HandlerError, ServeConfig};
use netproto_service::{CallError, CallOptions, Context, TypedClient, register_stream, service};
use netproto_transport::{Acceptor, ClientSecurity, ConnectionConfig, Connector, ServerSecurity};
use netproto_wire::ErrorCode;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Event {
    seq: u64,
    key: String,
}

service! {
    /// Watches keys.
    service Watch {
        /// Every change of the keys with a prefix, `n` of them.
        WatchPrefix = "kv.watch.v1": (String, u64) => Event;
        /// The same name and request with another item type.
        WatchOther = "kv.watch.v1": (String, u64) => u64;
    }
}

/// A server on loopback TCP serving one connection, and a typed client.
async fn connect(dispatcher: &Arc<Dispatcher>) -> (TypedClient, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, shutdown) = watch::channel(false);
    let dispatcher = dispatcher.clone();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let acceptor = Acceptor::new(ServerSecurity::Plain, ConnectionConfig::default()).unwrap();
        let conn = acceptor.accept(tcp).await.unwrap();
        let _ = dispatcher
            .serve(conn, &ServeConfig::default(), shutdown)
            .await;
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let connector = Connector::new(ClientSecurity::Plain, ConnectionConfig::default()).unwrap();
    let conn = connector.connect(tcp).await.unwrap();
    let (correlator, _unsolicited) = Correlator::new(conn, &CorrelatorConfig::default()).unwrap();
    (TypedClient::new(Arc::new(correlator)), stop)
}

/// `kv.watch.v1` yields `n` events, then fails when the prefix is "fail";
/// `dropped` hears when a stream is dropped, `produced` counts items.
fn watcher(dropped: mpsc::UnboundedSender<()>, produced: Arc<AtomicU64>) -> Arc<Dispatcher> {
    struct Guard(mpsc::UnboundedSender<()>);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.send(());
        }
    }
    let dispatcher = Arc::new(Dispatcher::default());
    register_stream::<WatchPrefix, _, _>(&dispatcher, move |_context: Context, (prefix, n)| {
        let guard = Guard(dropped.clone());
        let produced = produced.clone();
        let fail = prefix == "fail";
        futures::stream::iter(0..n)
            .map(move |seq| {
                let _guard = &guard;
                produced.fetch_add(1, Ordering::Relaxed);
                Ok(Event {
                    seq,
                    key: format!("{prefix}/{seq}"),
                })
            })
            .chain(futures::stream::iter(
                fail.then(|| Err(HandlerError::failed("watch failed"))),
            ))
    });
    dispatcher
}

#[tokio::test]
async fn a_typed_stream_arrives_in_order_and_ends() {
    let (dropped, _events) = mpsc::unbounded_channel();
    let (client, stop) = connect(&watcher(dropped, Arc::default())).await;
    let events: Vec<Event> = client
        .call_stream::<WatchPrefix>(("a".into(), 2000))
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(events.len(), 2000);
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.seq, u64::try_from(i).unwrap());
        assert_eq!(event.key, format!("a/{i}"));
    }
    // A small credit, and the error that ends a stream.
    let items: Vec<Result<Event, CallError>> = client
        .call_stream_with::<WatchPrefix>(("fail".into(), 3), &CallOptions::default(), 1)
        .collect()
        .await;
    assert_eq!(items.len(), 4);
    assert!(items[..3].iter().all(Result::is_ok));
    let error = items[3].as_ref().unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::HANDLER_FAILED), "{error}");
    assert!(error.to_string().contains("watch failed"));
    stop.send_replace(true);
}

#[tokio::test]
async fn a_dropped_typed_stream_cancels_and_mismatches_are_refused() {
    let (dropped, mut events) = mpsc::unbounded_channel();
    let produced = Arc::new(AtomicU64::new(0));
    let (client, stop) = connect(&watcher(dropped, produced.clone())).await;
    let mut stream = Box::pin(client.call_stream_with::<WatchPrefix>(
        ("b".into(), u64::MAX),
        &CallOptions::default(),
        16,
    ));
    for i in 0..5 {
        assert_eq!(stream.next().await.unwrap().unwrap().seq, i);
    }
    drop(stream);
    let heard = tokio::time::timeout(Duration::from_secs(5), events.recv()).await;
    assert_eq!(heard.unwrap(), Some(()), "the producer was not dropped");
    assert!(produced.load(Ordering::Relaxed) <= 5 + 16);

    // Another item type: refused by fingerprint, before the handler runs.
    let before = produced.load(Ordering::Relaxed);
    let mut other = Box::pin(client.call_stream::<WatchOther>(("c".into(), 3)));
    let error = other.next().await.unwrap().unwrap_err();
    assert!(error.is_schema_mismatch(), "{error}");
    assert!(other.next().await.is_none());
    // A plain call of a stream method is refused.
    let error = client
        .call::<WatchPrefix>(("d".into(), 1))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::BAD_MESSAGE), "{error}");
    assert_eq!(produced.load(Ordering::Relaxed), before);
    stop.send_replace(true);
}
