//! The original README's programs, run in-process against each other on
//! 127.0.0.1 with ports picked by the system: the echo server and client
//! with the README's config literals, configuration from a TOML file and
//! from the environment, mutual TLS with generated certificates, and the
//! custom handlers.

// Integration test: a failed unwrap, expect, panic or index is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use network_protocol::config::NetworkConfig;
use network_protocol::error::{ProtocolError, Result};
use network_protocol::protocol::dispatcher::Dispatcher;
use network_protocol::protocol::message::Message;
use network_protocol::service::client::{self, ClientConfig, TlsClientConfig};
use network_protocol::service::daemon::{self, Server, ServerConfig};
use network_protocol::service::tls_daemon::{self, TlsConfig};
use network_protocol::utils::certs;

/// Every test finishes well within this, or fails.
const LIMIT: Duration = Duration::from_secs(60);

async fn bounded<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, test)
        .await
        .expect("test timed out")
}

/// A fresh directory under the system's temporary directory.
fn temp_dir(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "network-protocol-{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The README's server dispatcher: `ECHO` answers with the same message.
fn echo_dispatcher() -> Arc<Dispatcher> {
    let dispatcher = Arc::new(Dispatcher::default());
    dispatcher.register("ECHO", |msg| Ok(msg.clone()));
    dispatcher
}

/// The README's server configuration, on a port the system picks.
fn readme_server_config() -> ServerConfig {
    ServerConfig {
        address: "127.0.0.1:0".to_string(),
        backpressure_limit: 100,
        connection_timeout: Duration::from_secs(30),
        heartbeat_interval: Duration::from_secs(15),
        shutdown_timeout: Duration::from_secs(10),
        max_connections: 1000,
    }
}

/// The README's client configuration, to `address`.
fn readme_client_config(address: String) -> ClientConfig {
    ClientConfig {
        address,
        connection_timeout: Duration::from_secs(5),
        operation_timeout: Duration::from_secs(3),
        response_timeout: Duration::from_secs(30),
        heartbeat_interval: Duration::from_secs(15),
        auto_reconnect: true,
        max_reconnect_attempts: 3,
        reconnect_delay: Duration::from_secs(1),
    }
}

/// Binds `server` and runs it in a task; returns the bound address.
async fn start(server: &Server) -> (String, tokio::task::JoinHandle<Result<()>>) {
    server.bind().await.unwrap();
    let address = server.local_addr().expect("a bound server has an address");
    let running = tokio::spawn({
        let server = server.clone();
        async move { server.run().await }
    });
    (address, running)
}

async fn stop(server: &Server, running: tokio::task::JoinHandle<Result<()>>) {
    server.shutdown(Some(Duration::from_secs(2))).await;
    running.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_server_and_client_as_in_the_readme() {
    bounded(async {
        let server = daemon::new_with_config(readme_server_config(), echo_dispatcher());
        let (address, running) = start(&server).await;

        // The client of the README: unpinned (it logs a warning), with
        // timeouts around each step.
        let config = readme_client_config(address.clone());
        let mut conn =
            tokio::time::timeout(Duration::from_secs(5), client::connect_with_config(config))
                .await
                .map_err(|_| ProtocolError::Timeout)
                .unwrap()
                .unwrap();
        tokio::time::timeout(
            Duration::from_secs(3),
            conn.secure_send(Message::Echo("hello".into())),
        )
        .await
        .unwrap()
        .unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(3), conn.secure_recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reply, Message::Echo("hello".into()));
        // The server's key is learnt on connection, for pinning next time.
        assert_eq!(conn.server_key(), server.public_key());

        // Several sent before any is received: answers come back in order.
        for i in 0..5 {
            conn.send(Message::Echo(format!("m{i}"))).await.unwrap();
        }
        for i in 0..5 {
            assert_eq!(
                conn.receive().await.unwrap(),
                Message::Echo(format!("m{i}"))
            );
        }
        // No handler for PING on this server: an error answer, not a hang.
        let err = conn.request(&Message::Ping).await.unwrap_err();
        assert!(err.to_string().contains("no handler"), "{err}");
        conn.close().await.unwrap();

        // Pinned: the authenticated way.
        let key = server.public_key().expect("noise mode has a key");
        let mut pinned = client::connect_pinned(readme_client_config(address), key)
            .await
            .unwrap();
        assert_eq!(
            pinned
                .request(&Message::Echo("pinned".into()))
                .await
                .unwrap(),
            Message::Echo("pinned".into())
        );
        pinned.close().await.unwrap();

        stop(&server, running).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pin_is_refused() {
    bounded(async {
        let server = daemon::new_with_config(readme_server_config(), echo_dispatcher());
        let (address, running) = start(&server).await;
        let other = network_protocol::layers::daemon::load_or_generate_identity(None).unwrap();
        let mut config = readme_client_config(address);
        config.max_reconnect_attempts = 1;
        let err = client::connect_pinned(config, *other.public())
            .await
            .unwrap_err();
        assert!(matches!(err, ProtocolError::Daemon(_)), "{err:?}");
        stop(&server, running).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_from_a_toml_file() {
    bounded(async {
        let dir = temp_dir("toml");
        let path = dir.join("config.toml");
        std::fs::write(
            &path,
            r#"
[server]
address = "127.0.0.1:0"
backpressure_limit = 100
connection_timeout = "30s"
heartbeat_interval = "15s"
shutdown_timeout = "10s"
max_connections = 1000

[client]
response_timeout = "20s"
max_reconnect_attempts = 2
reconnect_delay = "100ms"
"#,
        )
        .unwrap();

        // As in the README: `NetworkConfig::from_file("config.toml")?.server`.
        let config = NetworkConfig::from_file(&path).unwrap().server;
        assert_eq!(config, readme_server_config());
        let server = daemon::new_with_config(config, echo_dispatcher());
        let (address, running) = start(&server).await;

        let mut config = NetworkConfig::from_file(&path).unwrap().client;
        assert_eq!(config.response_timeout, Duration::from_secs(20));
        assert_eq!(config.max_reconnect_attempts, 2);
        config.address = address;
        let mut conn = client::connect_with_config(config).await.unwrap();
        conn.secure_send(Message::Echo("from toml".into()))
            .await
            .unwrap();
        assert_eq!(
            conn.secure_recv().await.unwrap(),
            Message::Echo("from toml".into())
        );
        conn.close().await.unwrap();
        stop(&server, running).await;

        // Unknown fields are errors, not silently ignored.
        std::fs::write(&path, "[server]\nadress = \"127.0.0.1:0\"\n").unwrap();
        assert!(NetworkConfig::from_file(&path).is_err());
        assert!(NetworkConfig::from_file(dir.join("missing.toml")).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_from_the_environment() {
    bounded(async {
        // The process environment of a test run holds no NETPROTO__
        // variables: `from_env` gives the defaults.
        let defaults = NetworkConfig::from_env().unwrap();
        assert_eq!(defaults.server, ServerConfig::default());
        assert_eq!(defaults.client, ClientConfig::default());

        // The same loader with an explicit environment (setting process
        // variables would race with other tests).
        let env: HashMap<String, String> = [
            ("NETPROTO__SERVER__ADDRESS", "127.0.0.1:0"),
            ("NETPROTO__SERVER__BACKPRESSURE_LIMIT", "100"),
            ("NETPROTO__SERVER__MAX_CONNECTIONS", "7"),
            ("NETPROTO__CLIENT__RESPONSE_TIMEOUT", "5s"),
            ("NETPROTO__CLIENT__AUTO_RECONNECT", "false"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let config = NetworkConfig::load(None, Some(env)).unwrap();
        assert_eq!(config.server.backpressure_limit, 100);
        assert_eq!(config.server.max_connections, 7);
        assert_eq!(config.client.response_timeout, Duration::from_secs(5));
        assert!(!config.client.auto_reconnect);

        let server = daemon::new_with_config(config.server.clone(), echo_dispatcher());
        let (address, running) = start(&server).await;

        // The full configuration pins the server's key.
        let mut full = config;
        full.client.address = address;
        full.security.server_key = server.public_key();
        let mut conn = client::connect_with_network_config(full).await.unwrap();
        assert_eq!(
            conn.request(&Message::Echo("from env".into()))
                .await
                .unwrap(),
            Message::Echo("from env".into())
        );
        conn.close().await.unwrap();
        stop(&server, running).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_as_in_the_readme() {
    bounded(async {
        let dir = temp_dir("tls");
        let files = certs::ensure_dev_certs(&dir).unwrap();
        let path = |p: &PathBuf| p.to_str().expect("a UTF-8 temporary path").to_owned();
        let (ca, server_cert, server_key) = (
            path(&files.ca_cert),
            path(&files.server_cert),
            path(&files.server_key),
        );
        let (client_cert, client_key) = (path(&files.client_cert), path(&files.client_key));

        let cert_config = TlsConfig {
            cert_path: &server_cert,
            key_path: &server_key,
            ca_path: Some(&ca), // For mTLS
            verify_client: true,
        };
        let server =
            tls_daemon::new_with_config("127.0.0.1:0", cert_config, tls_daemon::echo_dispatcher())
                .unwrap();
        let (address, running) = start(&server).await;
        assert_eq!(server.public_key(), None, "no noise key in tls mode");

        let tls_config = TlsClientConfig {
            cert_path: Some(&client_cert),
            key_path: Some(&client_key),
            ca_path: Some(&ca),
            server_name: "example.com",
        };
        let mut conn = client::connect_tls(&address, tls_config).await.unwrap();
        conn.send(Message::Echo("secure message".into()))
            .await
            .unwrap();
        assert_eq!(
            conn.receive().await.unwrap(),
            Message::Echo("secure message".into())
        );
        assert_eq!(conn.request(&Message::Ping).await.unwrap(), Message::Pong);
        conn.close().await.unwrap();

        // Without a client certificate the server refuses the client (with
        // TLS 1.3, possibly only after the client's handshake completed).
        let mut no_cert = ClientConfig::default();
        no_cert.address.clone_from(&address);
        no_cert.auto_reconnect = false;
        let anonymous = TlsClientConfig {
            cert_path: None,
            key_path: None,
            ca_path: Some(&ca),
            server_name: "example.com",
        };
        let refused = match client::connect_tls_with_config(no_cert.clone(), anonymous).await {
            Err(_) => true,
            Ok(conn) => conn.request(&Message::Ping).await.is_err(),
        };
        assert!(refused, "a client without a certificate was served");

        // A name the certificate does not carry fails verification.
        let wrong_name = TlsClientConfig {
            server_name: "wrong.example",
            ..tls_config
        };
        assert!(
            client::connect_tls_with_config(no_cert, wrong_name)
                .await
                .is_err()
        );

        stop(&server, running).await;

        // `start_until` (what `start` does until ctrl-c) stops cleanly.
        tls_daemon::start_until(
            "127.0.0.1:0",
            cert_config,
            tokio::time::sleep(Duration::from_millis(200)),
        )
        .await
        .unwrap();

        // verify_client without a CA is refused before anything starts.
        let no_ca = TlsConfig {
            ca_path: None,
            ..cert_config
        };
        assert!(matches!(
            tls_daemon::new_with_config("127.0.0.1:0", no_ca, tls_daemon::echo_dispatcher()),
            Err(ProtocolError::Config(_))
        ));
        std::fs::remove_dir_all(dir).unwrap();
    })
    .await;
}

/// The README's custom handlers, with the adaptation the example explains.
fn custom_dispatcher() -> Arc<Dispatcher> {
    let dispatcher = Arc::new(Dispatcher::default());
    dispatcher.register("PING", |_| Ok(Message::Pong));
    dispatcher.register("ECHO", |msg| Ok(msg.clone()));
    dispatcher.register("DATA_PROCESS", |msg| {
        if let Message::Custom { data, .. } = msg {
            if data.len() > 100 {
                Ok(Message::custom("DATA_PROCESS", vec![1u8, 0, 1])?)
            } else {
                Ok(Message::custom("DATA_PROCESS", vec![0u8, 0, 1])?)
            }
        } else {
            Ok(Message::Unknown)
        }
    });
    dispatcher
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_handlers_over_a_connection() {
    bounded(async {
        let server = daemon::new_with_config(readme_server_config(), custom_dispatcher());
        let (address, running) = start(&server).await;
        let key = server.public_key().unwrap();
        let conn = client::connect_pinned(readme_client_config(address), key)
            .await
            .unwrap();

        assert_eq!(conn.request(&Message::Ping).await.unwrap(), Message::Pong);
        assert_eq!(
            conn.request(&Message::Echo("x".into())).await.unwrap(),
            Message::Echo("x".into())
        );
        let big = Message::custom("DATA_PROCESS", vec![9u8; 101]).unwrap();
        assert_eq!(
            conn.request(&big).await.unwrap(),
            Message::custom("DATA_PROCESS", vec![1u8, 0, 1]).unwrap()
        );
        let small = Message::custom("DATA_PROCESS", vec![9u8; 100]).unwrap();
        assert_eq!(
            conn.request(&small).await.unwrap(),
            Message::custom("DATA_PROCESS", vec![0u8, 0, 1]).unwrap()
        );
        let unknown = Message::custom("NOT_REGISTERED", vec![1u8]).unwrap();
        let err = conn.request(&unknown).await.unwrap_err();
        assert!(matches!(err, ProtocolError::Daemon(_)), "{err:?}");

        stop(&server, running).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_lifecycle() {
    bounded(async {
        // Shut down before it ran: run returns at once, bind refuses.
        let server = daemon::new_with_config(readme_server_config(), echo_dispatcher());
        server.bind().await.unwrap();
        server.shutdown(None).await;
        server.run().await.unwrap();
        assert!(matches!(server.bind().await, Err(ProtocolError::ShutDown)));

        // Running twice at once is an error; shutting down twice is not.
        let server = daemon::new_with_config(readme_server_config(), echo_dispatcher());
        let (_address, running) = start(&server).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(matches!(
            server.run().await,
            Err(ProtocolError::AlreadyRunning)
        ));
        stop(&server, running).await;
        server.shutdown(None).await;

        // A shutdown racing the start of `run` is never lost.
        for _ in 0..20 {
            let server = daemon::new_with_config(readme_server_config(), echo_dispatcher());
            let running = tokio::spawn({
                let server = server.clone();
                async move { server.run().await }
            });
            tokio::task::yield_now().await;
            server.shutdown(Some(Duration::from_millis(100))).await;
            tokio::time::timeout(Duration::from_secs(5), running)
                .await
                .expect("the server stopped")
                .unwrap()
                .unwrap();
        }

        // A bad address is reported by run.
        let mut config = readme_server_config();
        config.address = "not an address".into();
        let server = daemon::new_with_config(config, echo_dispatcher());
        assert!(server.run().await.is_err());
    })
    .await;
}

#[test]
fn config_structs_match_the_daemon_defaults_and_errors_convert() {
    let daemon_defaults = netproto_daemon_defaults();
    assert_eq!(ServerConfig::default(), daemon_defaults.server);
    assert_eq!(ClientConfig::default(), daemon_defaults.client);
    // The README's ServerConfig converts with Noise security.
    let full = readme_server_config().to_daemon();
    assert_eq!(full.security.mode, netproto_daemon::SecurityMode::Noise);
    assert_eq!(full.server.backpressure_limit, 100);

    fn bad_name() -> Result<Message> {
        Ok(Message::custom("", vec![1u8])?)
    }
    assert!(matches!(bad_name(), Err(ProtocolError::Wire(_))));
    assert_eq!(ProtocolError::Timeout.to_string(), "operation timed out");
}

fn netproto_daemon_defaults() -> NetworkConfig {
    network_protocol::layers::daemon::NetworkConfig::default().into()
}
