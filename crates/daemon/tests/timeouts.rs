//! A request the client stops waiting for stops on the server too: its
//! timeout sends a cancel frame and its deadline travels with it, so the
//! handler's future is dropped (observed through a guard it holds) and a
//! graceful shutdown has nothing left to wait for. A request that finds
//! no room in a full send queue within `client.operation_timeout` fails
//! there, not sent.

// Integration test: a failed unwrap, expect, panic or index is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use netproto_daemon::{Client, Dispatcher, Message, NetworkConfig, Server};
use netproto_wire::MessageType;
use tokio::sync::mpsc;
use tokio::time::Instant;

const LIMIT: Duration = Duration::from_secs(60);

const HANG: MessageType = MessageType::from_static("hang");

/// Reports on `dropped` when the handler holding it is dropped.
struct Guard(mpsc::UnboundedSender<()>);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// A server whose `hang` handler never answers and reports when it is
/// dropped; and a client of it with a 300 ms response timeout.
async fn start() -> (
    Client,
    netproto_daemon::ServerHandle,
    tokio::task::JoinHandle<()>,
    mpsc::UnboundedReceiver<()>,
) {
    let (dropped_tx, dropped) = mpsc::unbounded_channel();
    let dispatcher = Arc::new(Dispatcher::default());
    dispatcher.register_async("hang", move |_message| {
        let guard = Guard(dropped_tx.clone());
        async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            Ok(Message::Pong)
        }
    });
    let mut config = NetworkConfig::default();
    config.server.address = "127.0.0.1:0".into();
    let server = Server::bind(config.clone(), dispatcher).await.unwrap();
    config.client.address = server.local_addr();
    config.client.server_key = server.public_key().copied();
    config.client.response_timeout = Duration::from_millis(300);
    let handle = server.handle();
    let task = tokio::spawn(async move { server.run().await.unwrap() });
    let client = Client::connect(config).await.unwrap();
    (client, handle, task, dropped)
}

fn hang() -> Message {
    Message::custom_static(HANG, &b""[..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_timeout_stops_the_servers_handler() {
    let case = async {
        let (client, handle, task, mut dropped) = start().await;
        let error = client.request(&hang()).await.unwrap_err();
        assert!(error.is_timeout(), "{error:?}");
        // The cancel frame reached the server, which dropped the handler.
        tokio::time::timeout(Duration::from_secs(10), dropped.recv())
            .await
            .expect("the handler is dropped after the client's timeout")
            .unwrap();

        // A deadline of its own: the server drops the handler at it.
        let error = client
            .request_within(&hang(), Duration::from_millis(150))
            .await
            .unwrap_err();
        assert!(error.is_deadline_exceeded(), "{error:?}");
        assert!(!error.is_timeout(), "{error:?}");
        tokio::time::timeout(Duration::from_secs(10), dropped.recv())
            .await
            .expect("the handler is dropped at the request's deadline")
            .unwrap();

        // Nothing runs on for a request nobody waits for, so the graceful
        // shutdown has nothing to wait for: it ends well within its bound.
        let started = Instant::now();
        handle.shutdown(Some(Duration::from_secs(20))).await;
        task.await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "shutdown took {:?}",
            started.elapsed()
        );
    };
    tokio::time::timeout(LIMIT, case).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_request_stops_the_servers_handler() {
    let case = async {
        let (client, handle, task, mut dropped) = start().await;
        // The caller's own timeout drops the request's future.
        let request = hang();
        let gave_up = tokio::time::timeout(Duration::from_millis(100), client.request(&request));
        assert!(gave_up.await.is_err());
        tokio::time::timeout(Duration::from_secs(10), dropped.recv())
            .await
            .expect("the handler is dropped when its request is")
            .unwrap();
        // The connection is still good.
        let echo = Message::Echo("still here".into());
        let error = client.request(&echo).await.unwrap_err();
        assert!(error.is_remote(), "no ECHO handler: {error:?}");
        handle.shutdown(Some(Duration::from_secs(20))).await;
        task.await.unwrap();
    };
    tokio::time::timeout(LIMIT, case).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_finds_no_room_to_be_sent_fails_unsent_at_the_operation_timeout() {
    let case = async {
        let dispatcher = Arc::new(Dispatcher::default());
        dispatcher.register_async("hang", |_message| async {
            std::future::pending::<()>().await;
            Ok(Message::Pong)
        });
        let mut config = NetworkConfig::default();
        config.server.address = "127.0.0.1:0".into();
        // One handler at a time and one frame queued: the server reads
        // nothing more while the first request hangs, so the socket buffers
        // and then the client's send queue fill up.
        config.server.max_in_flight = 1;
        config.transport.inbound_limit = 1;
        let server = Server::bind(config.clone(), dispatcher).await.unwrap();
        config.client.address = server.local_addr();
        config.client.server_key = server.public_key().copied();
        config.client.response_timeout = Duration::from_secs(3);
        config.client.operation_timeout = Duration::from_millis(200);
        config.client.backpressure_limit = 1;
        let handle = server.handle();
        let task = tokio::spawn(async move { server.run().await.unwrap() });
        let client = Arc::new(Client::connect(config).await.unwrap());
        // 64 requests of 1 MiB: far more than loopback's socket buffers hold.
        let big = Message::custom_static(HANG, vec![0u8; 1 << 20]);
        let mut requests = tokio::task::JoinSet::new();
        for _ in 0..64 {
            let (client, big) = (client.clone(), big.clone());
            requests.spawn(async move { client.request(&big).await });
        }
        let (mut unsent, mut unanswered) = (0, 0);
        while let Some(done) = requests.join_next().await {
            match done.unwrap() {
                Err(netproto_daemon::Error::Dispatch(netproto_dispatch::Error::QueueFull(d))) => {
                    assert_eq!(d, Duration::from_millis(200));
                    unsent += 1;
                }
                Err(error) if error.is_timeout() => unanswered += 1,
                other => panic!("{other:?}"),
            }
        }
        assert!(unsent > 0, "{unsent} unsent, {unanswered} unanswered");
        // The error says what a caller needs: time ran out here, and the
        // request may be sent again.
        let error = netproto_daemon::Error::Dispatch(netproto_dispatch::Error::QueueFull(
            Duration::from_millis(200),
        ));
        assert!(error.is_timeout() && error.is_retryable(), "{error}");
        handle.shutdown(Some(Duration::from_secs(1))).await;
        task.await.unwrap();
    };
    tokio::time::timeout(LIMIT, case).await.unwrap();
}
