//! What a client's errors tell its user: authentication failures that are
//! final (a wrong pin, an untrusted TLS certificate: one attempt, both keys
//! in the message), and the predicates that tell the client's timeout, the
//! server's timeout and a passed deadline apart, over loopback against a
//! server in this process.

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

use netproto_crypto::{Keypair, PublicKey};
use netproto_daemon::{Client, Error, NetworkConfig, Server, ServerHandle};
use netproto_dispatch::{Dispatcher, HandlerError};
use netproto_wire::{ErrorCode, Message, MessageType};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Bound on each case, far above what it needs.
const LIMIT: Duration = Duration::from_secs(60);

/// The client's `connection_timeout` in the authentication cases: a
/// failure that returns before it cannot have waited for a timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

const SLOW: MessageType = MessageType::from_static("slow");
const SERVER_TIMEOUT: MessageType = MessageType::from_static("server.timeout");
const SERVER_DEADLINE: MessageType = MessageType::from_static("server.deadline");
const REFUSE: MessageType = MessageType::from_static("refuse");

fn dispatcher() -> Arc<Dispatcher> {
    let dispatcher = Arc::new(Dispatcher::default());
    dispatcher.register("ECHO", |msg| Ok(msg.clone()));
    dispatcher.register_async("slow", |msg| async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(msg)
    });
    dispatcher.register("server.timeout", |_| {
        Err(HandlerError::new(ErrorCode::TIMEOUT, "backend too slow"))
    });
    dispatcher.register("server.deadline", |_| {
        Err(HandlerError::new(
            ErrorCode::DEADLINE_EXCEEDED,
            "deadline passed",
        ))
    });
    dispatcher.register("refuse", |_| Err("no such key".into()));
    dispatcher
}

/// A server in this process.
struct Running {
    handle: ServerHandle,
    task: JoinHandle<()>,
    /// Its Noise key (none in TLS mode).
    key: Option<PublicKey>,
}

impl Running {
    async fn stop(self) {
        self.handle.shutdown(Some(Duration::from_secs(2))).await;
        self.task.await.unwrap();
    }
}

/// Starts a server; returns it and the client configuration that reaches
/// it (without any pin).
async fn start(mut config: NetworkConfig) -> (Running, NetworkConfig) {
    config.server.address = "127.0.0.1:0".into();
    let server = Server::bind(config.clone(), dispatcher()).await.unwrap();
    let key = server.public_key().copied();
    config.client.address = server.local_addr();
    config.client.connection_timeout = CONNECT_TIMEOUT;
    config.client.auto_reconnect = true;
    config.client.max_reconnect_attempts = 5;
    config.client.reconnect_delay = Duration::from_millis(200);
    let handle = server.handle();
    let task = tokio::spawn(async move { server.run().await.unwrap() });
    (Running { handle, task, key }, config)
}

/// A TCP relay that counts the connections it accepts (the client's
/// connection attempts) and passes them on to its target.
struct Relay {
    address: String,
    attempts: Arc<AtomicUsize>,
    target: Arc<Mutex<String>>,
    task: JoinHandle<()>,
}

impl Relay {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let attempts = Arc::new(AtomicUsize::new(0));
        let target = Arc::new(Mutex::new(target));
        let task = tokio::spawn(relay(listener, attempts.clone(), target.clone()));
        Self {
            address,
            attempts,
            target,
            task,
        }
    }

    fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(listener: TcpListener, count: Arc<AtomicUsize>, target: Arc<Mutex<String>>) {
    // Bounded: the relay is aborted when dropped, and no case makes more
    // than a handful of attempts.
    for _ in 0..100 {
        let Ok((mut inbound, _)) = listener.accept().await else {
            return;
        };
        count.fetch_add(1, Ordering::SeqCst);
        let target = target.lock().unwrap().clone();
        tokio::spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

/// Connects through a counting relay; returns the error, the number of
/// connection attempts and the time it took.
async fn refused(mut config: NetworkConfig) -> (Error, usize, Duration) {
    let relay = Relay::start(config.client.address.clone()).await;
    config.client.address.clone_from(&relay.address);
    let started = tokio::time::Instant::now();
    let error = Client::connect(config).await.unwrap_err();
    (error, relay.attempts(), started.elapsed())
}

fn other_key() -> PublicKey {
    *Keypair::generate(&mut rand::rngs::OsRng).public()
}

/// Checks the error of a wrong pin: final, once, both keys shown.
fn assert_wrong_pin(
    (error, attempts, elapsed): (Error, usize, Duration),
    server_key: PublicKey,
    pin: PublicKey,
) {
    match &error {
        Error::ServerKeyMismatch {
            presented, pinned, ..
        } => {
            assert_eq!(*presented, server_key);
            assert_eq!(*pinned, pin);
        }
        other => panic!("not a key mismatch: {other:?}"),
    }
    let text = error.to_string();
    assert!(text.contains(&server_key.to_string()), "{text}");
    assert!(text.contains(&pin.to_string()), "{text}");
    assert!(error.is_authentication(), "{error:?}");
    assert!(!error.is_retryable(), "{error:?}");
    assert_eq!(attempts, 1, "a wrong pin was retried: {error}");
    // A correctness bound, not a speed target: the client did not wait for
    // a timeout or a backoff.
    assert!(elapsed < CONNECT_TIMEOUT, "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pin_fails_at_once_with_both_keys() {
    let case = async {
        let (server, config) = start(NetworkConfig::default()).await;
        let server_key = server.key.unwrap();
        let pin = other_key();

        // The pin beside the address, under [client].
        let mut pinned = config.clone();
        pinned.client.server_key = Some(pin);
        assert_wrong_pin(refused(pinned).await, server_key, pin);

        // The pin under its older name, security.server_key.
        let mut pinned = config.clone();
        pinned.security.server_key = Some(pin);
        assert_wrong_pin(refused(pinned).await, server_key, pin);

        // The right pin connects.
        let mut pinned = config;
        pinned.client.server_key = Some(server_key);
        let client = Client::connect(pinned).await.unwrap();
        assert_eq!(client.server_key(), Some(server_key));
        client.close().await.unwrap();
        server.stop().await;
    };
    tokio::time::timeout(LIMIT, case).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_another_key_fails_every_waiting_request_at_once() {
    let case = async {
        let (first, mut config) = start(NetworkConfig::default()).await;
        let pin = first.key.unwrap();
        config.client.server_key = Some(pin);
        let relay = Relay::start(config.client.address.clone()).await;
        config.client.address.clone_from(&relay.address);
        let client = Client::connect(config).await.unwrap();
        let echo = Message::Echo("first".into());
        assert_eq!(client.request(&echo).await.unwrap(), echo);
        assert_eq!(relay.attempts(), 1);

        // The address now leads to a server with another key.
        let (second, other) = start(NetworkConfig::default()).await;
        *relay.target.lock().unwrap() = other.client.address;
        first.stop().await;
        // The first request after the goaway learns that the connection is
        // lost (or already meets the new key).
        let error = client.request(&echo).await.unwrap_err();
        assert!(
            error.is_retryable() || matches!(error, Error::ServerKeyMismatch { .. }),
            "{error:?}"
        );
        // Requests that need the connection share one reconnection round,
        // of one attempt, and each gets the mismatch with both keys.
        let before = relay.attempts();
        let requests = (0..4).map(|_| client.request(&echo));
        for result in futures::future::join_all(requests).await {
            let error = result.unwrap_err();
            assert!(
                matches!(
                    &error,
                    Error::ServerKeyMismatch { presented, pinned, .. }
                        if *pinned == pin && Some(*presented) == second.key
                ),
                "{error:?}"
            );
        }
        assert_eq!(relay.attempts(), before + 1);
        second.stop().await;
    };
    tokio::time::timeout(LIMIT, case).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_tls_certificate_is_not_retried() {
    use netproto_transport::tls::self_signed;
    let case = async {
        let dir = std::env::temp_dir().join(format!("netproto-auth-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = |name: &str| dir.join(name);
        let names = ["localhost".to_owned(), "127.0.0.1".to_owned()];
        let served = self_signed(&names).unwrap();
        served
            .write_pem_files(&path("server.pem"), &path("server.key"))
            .unwrap();
        // The client trusts another certificate only.
        let trusted = self_signed(&names).unwrap();
        trusted
            .write_pem_files(&path("trusted.pem"), &path("trusted.key"))
            .unwrap();
        let mut config = NetworkConfig::default();
        config.security.mode = "tls".parse().unwrap();
        config.security.tls_cert = Some(path("server.pem"));
        config.security.tls_key = Some(path("server.key"));
        let (server, mut config) = start(config).await;
        config.security.tls_cert = None;
        config.security.tls_key = None;
        config.security.tls_ca = Some(path("trusted.pem"));
        config.security.server_name = Some("localhost".into());

        let (error, attempts, elapsed) = refused(config.clone()).await;
        assert!(
            matches!(
                &error,
                Error::Transport(netproto_transport::Error::Tls(
                    rustls::Error::InvalidCertificate(_)
                ))
            ),
            "{error:?}"
        );
        assert!(error.is_authentication(), "{error:?}");
        assert!(!error.is_retryable(), "{error:?}");
        assert_eq!(attempts, 1, "an untrusted certificate was retried: {error}");
        assert!(elapsed < CONNECT_TIMEOUT, "{elapsed:?}");

        // Trusting the server's certificate connects.
        config.security.tls_ca = Some(path("server.pem"));
        let client = Client::connect(config).await.unwrap();
        let echo = Message::Echo("tls".into());
        assert_eq!(client.request(&echo).await.unwrap(), echo);
        client.close().await.unwrap();
        server.stop().await;
        std::fs::remove_dir_all(dir).unwrap();
    };
    tokio::time::timeout(LIMIT, case).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_call_tells_each_kind_of_failure_apart() {
    let case = async {
        let (server, mut config) = start(NetworkConfig::default()).await;
        config.client.server_key = server.key;
        config.client.response_timeout = Duration::from_millis(300);
        let client = Client::connect(config).await.unwrap();
        let request = |msg_type| Message::custom_static(msg_type, &b"x"[..]);

        // This client gave up waiting.
        let error = client.request(&request(SLOW)).await.unwrap_err();
        assert!(error.is_timeout(), "{error:?}");
        assert!(!error.is_server_timeout() && !error.is_deadline_exceeded());
        assert!(!error.is_remote() && !error.is_authentication());
        assert!(error.is_retryable());
        assert_eq!(error.code(), Some(ErrorCode::TIMEOUT));

        // The server gave up.
        let error = client.request(&request(SERVER_TIMEOUT)).await.unwrap_err();
        assert!(error.is_server_timeout() && error.is_remote(), "{error:?}");
        assert!(!error.is_timeout() && !error.is_deadline_exceeded());
        assert_eq!(error.code(), Some(ErrorCode::TIMEOUT));

        // The request's deadline passed on the server.
        let error = client.request(&request(SERVER_DEADLINE)).await.unwrap_err();
        assert!(
            error.is_deadline_exceeded() && error.is_remote(),
            "{error:?}"
        );
        assert!(!error.is_timeout() && !error.is_server_timeout());
        assert_eq!(error.code(), Some(ErrorCode::DEADLINE_EXCEEDED));

        // The request's deadline passed here.
        let local = Error::Dispatch(netproto_dispatch::Error::DeadlineExceeded(
            Duration::from_millis(5),
        ));
        assert!(local.is_deadline_exceeded() && !local.is_remote());
        assert!(!local.is_timeout() && !local.is_server_timeout());

        // The server refused the request.
        let error = client.request(&request(REFUSE)).await.unwrap_err();
        assert!(error.is_remote(), "{error:?}");
        assert_eq!(error.code(), Some(ErrorCode::HANDLER_FAILED));
        assert!(!error.is_timeout() && !error.is_server_timeout());
        assert!(!error.is_deadline_exceeded() && !error.is_retryable());
        assert!(error.to_string().contains("no such key"), "{error}");

        client.close().await.unwrap();
        server.stop().await;
    };
    tokio::time::timeout(LIMIT, case).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_and_recv_need_no_arc() {
    let case = async {
        let (server, mut config) = start(NetworkConfig::default()).await;
        config.client.server_key = server.key;
        // A plain `Client`, not an `Arc<Client>`.
        let client = Client::connect(config).await.unwrap();
        for i in 0..3 {
            client.send(Message::Echo(format!("m{i}"))).await.unwrap();
        }
        for i in 0..3 {
            assert_eq!(client.recv().await.unwrap(), Message::Echo(format!("m{i}")));
        }
        client.close().await.unwrap();
        server.stop().await;
    };
    tokio::time::timeout(LIMIT, case).await.unwrap();
}
