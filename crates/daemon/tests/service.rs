//! The service end to end over loopback: every transport, graceful shutdown,
//! connection limits, reconnection, configuration layering.

// Integration test: a failed unwrap, expect, panic or index is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{closed_within, eventually};
use netproto_daemon::{
    Client, Error, NetworkConfig, NoiseBackend, NoiseCipher, Server, ServerHandle,
};
use netproto_dispatch::Dispatcher;
use netproto_wire::Message;

mod common;

const LIMIT: Duration = Duration::from_secs(60);

fn dispatcher() -> Arc<Dispatcher> {
    let dispatcher = Arc::new(Dispatcher::default());
    dispatcher.register("ECHO", |msg| Ok(msg.clone()));
    dispatcher.register("PING", |_| Ok(Message::Pong));
    dispatcher.register_async("SLOW", |msg| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(msg)
    });
    dispatcher
}

fn base_config(mode: &str) -> NetworkConfig {
    let mut config = NetworkConfig::default();
    config.server.address = "127.0.0.1:0".into();
    config.security.mode = mode.parse().unwrap();
    config.client.reconnect_delay = Duration::from_millis(50);
    config
}

/// Starts a server; returns its handle, the client configuration that
/// reaches it, and the task running it.
async fn start(
    mut config: NetworkConfig,
) -> (ServerHandle, NetworkConfig, tokio::task::JoinHandle<()>) {
    let server = Server::bind(config.clone(), dispatcher()).await.unwrap();
    config.client.address = server.local_addr();
    if let Some(key) = server.public_key() {
        config.security.server_key = Some(*key);
    }
    let handle = server.handle();
    let task = tokio::spawn(async move { server.run().await.unwrap() });
    (handle, config, task)
}

async fn echo_round_trip(config: NetworkConfig) {
    let (handle, client_config, task) = start(config).await;
    let client = Client::connect(client_config).await.unwrap();
    for i in 0..50 {
        let text = format!("hello {i}");
        assert_eq!(
            client.request(&Message::Echo(text.clone())).await.unwrap(),
            Message::Echo(text)
        );
    }
    assert_eq!(client.request(&Message::Ping).await.unwrap(), Message::Pong);
    let err = client
        .request(&Message::custom("NOPE", &b"x"[..]).unwrap())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no handler"), "{err}");
    client.close().await.unwrap();
    handle.shutdown(Some(Duration::from_secs(2))).await;
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_noise_tcp() {
    tokio::time::timeout(LIMIT, echo_round_trip(base_config("noise")))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_handshake_threads_the_serving_threads_do_the_handshakes() {
    let mut config = base_config("noise");
    config.server.handshake_threads = 0;
    tokio::time::timeout(LIMIT, echo_round_trip(config.clone()))
        .await
        .unwrap();
    // Refusals run there too.
    config.server.max_connections = 1;
    config.client.auto_reconnect = false;
    let refusal = async {
        let (handle, client_config, task) = start(config).await;
        let first = Client::connect(client_config.clone()).await.unwrap();
        let err = Client::connect(client_config).await.unwrap_err();
        assert!(
            matches!(&err, Error::GaveUp { last, .. } if matches!(**last, Error::Transport(netproto_transport::Error::Refused { status: netproto_wire::PrefaceStatus::Busy, .. }))),
            "{err:?}"
        );
        assert_eq!(handle.stats().refused(), 1);
        first.close().await.unwrap();
        handle.shutdown(Some(Duration::from_secs(2))).await;
        task.await.unwrap();
    };
    tokio::time::timeout(LIMIT, refusal).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_first_header_is_turned_away_before_it_is_served() {
    use netproto_wire::{
        Compression, DataFlags, FrameKind, Header, PREFACE_LEN, Preface, SecurityMode,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let case = async {
        let mut config = base_config("plain");
        config.server.metrics_address = Some("127.0.0.1:0".into());
        let (handle, client_config, task) = start(config).await;
        let mut stream = tokio::net::TcpStream::connect(&client_config.client.address)
            .await
            .unwrap();
        let preface = Preface::new(SecurityMode::Plain).to_bytes();
        stream.write_all(&preface).await.unwrap();
        let mut answer = [0; PREFACE_LEN];
        stream.read_exact(&mut answer).await.unwrap();
        let header = Header {
            len: u32::MAX,
            kind: FrameKind::Data,
            compression: Compression::None,
            flags: DataFlags::NONE,
        };
        stream.write_all(&header.to_bytes()).await.unwrap();
        // The server says why in an error frame, then closes.
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
        let mut rest = bytes::BytesMut::from(&rest[..]);
        let frame = netproto_wire::Decoder::new(1 << 20)
            .decode(&mut rest)
            .unwrap();
        assert!(
            matches!(&frame, Some(netproto_wire::Frame::Error(error))
                if error.request_id == 0 && error.code == netproto_wire::ErrorCode::TOO_LARGE),
            "{frame:?}"
        );
        assert!(rest.is_empty(), "{} more bytes answered", rest.len());
        let stats = handle.stats();
        eventually(|| stats.handshake_failures() == 1).await;
        // Turned away where handshakes run: the serving threads never
        // started it.
        assert_eq!(stats.accepted(), 0);
        let metrics = handle.metrics().unwrap();
        assert!(
            metrics.contains("netproto_handshakes_failed_total{reason=\"first_header\"} 1"),
            "{metrics}"
        );
        // A client that stays quiet longer than the server waits for a first
        // header is served all the same.
        let client = Client::connect(client_config).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let text = Message::Echo("after a pause".into());
        assert_eq!(client.request(&text).await.unwrap(), text);
        assert_eq!(stats.accepted(), 1);
        assert_eq!(stats.handshake_failures(), 1);
        client.close().await.unwrap();
        handle.shutdown(Some(Duration::from_secs(2))).await;
        task.await.unwrap();
    };
    tokio::time::timeout(LIMIT, case).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noise_backends_interoperate_and_the_cipher_must_match() {
    tokio::time::timeout(LIMIT, async {
        let mut server_config = base_config("noise");
        server_config.security.noise_backend = NoiseBackend::RustCrypto;
        let (handle, mut client_config, task) = start(server_config).await;
        // Another implementation of the same protocol: works.
        client_config.security.noise_backend = NoiseBackend::Ring;
        let client = Client::connect(client_config.clone()).await.unwrap();
        let reply = client.request(&Message::Echo("hi".into())).await.unwrap();
        assert_eq!(reply, Message::Echo("hi".into()));
        client.close().await.unwrap();
        // Another protocol (the cipher is in the Noise protocol name): refused.
        client_config.security.noise_cipher = NoiseCipher::AesGcm;
        client_config.client.auto_reconnect = false;
        let err = Client::connect(client_config).await.unwrap_err();
        // The handshake's first encrypted payload does not decrypt.
        assert!(
            matches!(
                &err,
                Error::GaveUp { last, .. } if matches!(
                    **last,
                    Error::Transport(netproto_transport::Error::Crypto(_))
                )
            ),
            "{err:?}"
        );
        handle.shutdown(Some(Duration::from_secs(2))).await;
        task.await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_noise_aesgcm() {
    let mut config = base_config("noise");
    config.security.noise_cipher = NoiseCipher::AesGcm;
    tokio::time::timeout(LIMIT, echo_round_trip(config))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_plain_tcp() {
    tokio::time::timeout(LIMIT, echo_round_trip(base_config("plain")))
        .await
        .unwrap();
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_noise_unix() {
    let dir = std::env::temp_dir().join(format!("netproto-svc-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = base_config("noise");
    config.server.address = format!("unix:{}", dir.join("sock").display());
    tokio::time::timeout(LIMIT, echo_round_trip(config))
        .await
        .unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_tls_with_mutual_auth() {
    use netproto_transport::tls::CertificateAuthority;
    let dir = std::env::temp_dir().join(format!("netproto-tls-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = CertificateAuthority::new("test ca").unwrap();
    let server_cert = ca
        .issue_server_cert(&["localhost".into(), "127.0.0.1".into()])
        .unwrap();
    let client_cert = ca.issue_client_cert("client").unwrap();
    let path = |name: &str| dir.join(name);
    std::fs::write(path("ca.pem"), ca.cert_pem()).unwrap();
    server_cert
        .write_pem_files(&path("server.pem"), &path("server.key"))
        .unwrap();
    client_cert
        .write_pem_files(&path("client.pem"), &path("client.key"))
        .unwrap();
    let mut server_config = base_config("tls");
    server_config.security.tls_cert = Some(path("server.pem"));
    server_config.security.tls_key = Some(path("server.key"));
    server_config.security.tls_ca = Some(path("ca.pem"));
    let (handle, mut client_config, task) = start(server_config).await;
    client_config.security.tls_cert = Some(path("client.pem"));
    client_config.security.tls_key = Some(path("client.key"));
    client_config.security.tls_pins = vec![server_cert.spki_sha256()];
    let client = Client::connect(client_config).await.unwrap();
    assert_eq!(
        client.request(&Message::Echo("tls".into())).await.unwrap(),
        Message::Echo("tls".into())
    );
    client.close().await.unwrap();
    handle.shutdown(Some(Duration::from_secs(2))).await;
    task.await.unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_answers_or_refuses_every_request() {
    let case = async {
        let mut config = base_config("noise");
        config.server.max_in_flight = 2_000;
        config.client.auto_reconnect = false;
        config.transport.inbound_limit = 2_000;
        let (handle, client_config, task) = start(config).await;
        let client = Arc::new(Client::connect(client_config).await.unwrap());
        let answered = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let mut requests = tokio::task::JoinSet::new();
        for i in 0..1_000 {
            let client = client.clone();
            let (answered, refused) = (answered.clone(), refused.clone());
            requests.spawn(async move {
                let text = format!("r{i}");
                match client
                    .request(&Message::custom("SLOW", text.clone().into_bytes()).unwrap())
                    .await
                {
                    Ok(reply) => {
                        assert_eq!(reply, Message::custom("SLOW", text.into_bytes()).unwrap());
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => {
                        // Refused with a clear reason: shutting down or going away.
                        let text = error.to_string();
                        assert!(
                            text.contains("going away")
                                || text.contains("code 6")
                                || text.contains("connection"),
                            "unclear error: {text}"
                        );
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        // Let the requests get in flight, then shut down.
        tokio::time::sleep(Duration::from_millis(100)).await;
        handle.shutdown(Some(Duration::from_secs(10))).await;
        while let Some(result) = requests.join_next().await {
            result.unwrap();
        }
        let (a, r) = (
            answered.load(Ordering::Relaxed),
            refused.load(Ordering::Relaxed),
        );
        eprintln!("graceful shutdown: {a} answered, {r} refused");
        assert_eq!(a + r, 1_000, "every request is answered or refused");
        assert!(a > 0, "requests in flight at shutdown finish");
        task.await.unwrap();
    };
    tokio::time::timeout(LIMIT, case).await.unwrap();
}

/// Opens `n` TCP connections to `address` that send nothing.
async fn silent_sockets(address: &str, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        sockets.push(tokio::net::TcpStream::connect(address).await.unwrap());
    }
    sockets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_are_evicted_for_new_clients() {
    let case = async {
        // A budget of 16, as max_pending and as max_connections.
        for (max_pending, max_connections, reason) in
            [(16, 10_000, "max_pending"), (8192, 16, "max_connections")]
        {
            let mut config = base_config("noise");
            config.server.max_pending = max_pending;
            config.server.max_connections = max_connections;
            config.server.metrics_address = Some("127.0.0.1:0".into());
            let (handle, client_config, task) = start(config).await;
            // Four times the budget of sockets that never send a byte.
            let mut silent = silent_sockets(&client_config.client.address, 64).await;
            let stats = handle.stats();
            eventually(|| stats.evicted() >= 48).await;
            // Every new client still gets in, in place of a silent socket.
            for i in 0..5 {
                let client = Client::connect(client_config.clone()).await.unwrap();
                let text = Message::Echo(format!("past the silent sockets at {reason}, {i}"));
                assert_eq!(client.request(&text).await.unwrap(), text);
                client.close().await.unwrap();
            }
            assert_eq!(stats.refused(), 0);
            assert!(stats.evicted() >= 49, "{} evicted", stats.evicted());
            // The oldest were evicted: closed by the server, unanswered.
            for stream in silent.iter_mut().take(40) {
                assert!(closed_within(stream, Duration::from_secs(1)).await);
            }
            let metrics = handle.metrics().unwrap();
            assert!(
                metrics.contains(&format!(
                    "netproto_connections_evicted_total{{reason=\"{reason}\"}} {}",
                    stats.evicted()
                )),
                "{metrics}"
            );
            handle.shutdown(Some(Duration::from_secs(2))).await;
            task.await.unwrap();
        }
    };
    tokio::time::timeout(LIMIT, case).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_past_its_pending_budget_is_refused_busy() {
    let case = async {
        let mut config = base_config("noise");
        config.server.max_pending_per_ip = 5;
        config.server.metrics_address = Some("127.0.0.1:0".into());
        config.client.auto_reconnect = false;
        let (handle, client_config, task) = start(config).await;
        let silent = silent_sockets(&client_config.client.address, 5).await;
        let stats = handle.stats();
        eventually(|| stats.active() == 5).await;
        // Its own silent sockets are not evicted for it: it is refused.
        let error = Client::connect(client_config.clone()).await.unwrap_err();
        assert!(
            matches!(&error, Error::GaveUp { last, .. } if matches!(**last, Error::Transport(netproto_transport::Error::Refused { status: netproto_wire::PrefaceStatus::Busy, .. }))),
            "{error:?}"
        );
        assert_eq!(stats.evicted(), 0);
        let metrics = handle.metrics().unwrap();
        assert!(
            metrics.contains("netproto_connections_refused_total{reason=\"max_pending_per_ip\"} 1"),
            "{metrics}"
        );
        // Once they go, the address is admitted again.
        drop(silent);
        let mut admitted = None;
        for _ in 0..50 {
            if let Ok(client) = Client::connect(client_config.clone()).await {
                admitted = Some(client);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        admitted.expect("admitted once its pending sockets closed");
        handle.shutdown(Some(Duration::from_secs(2))).await;
        task.await.unwrap();
    };
    tokio::time::timeout(LIMIT, case).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_without_a_preface_is_closed_at_the_preface_timeout() {
    let case = async {
        let mut config = base_config("noise");
        config.server.preface_timeout = Duration::from_millis(300);
        config.server.metrics_address = Some("127.0.0.1:0".into());
        let (handle, client_config, task) = start(config).await;
        let mut silent = silent_sockets(&client_config.client.address, 3).await;
        // Closed by the preface timeout (the reason below), long before the
        // handshake timeout (10 s) would.
        for stream in &mut silent {
            assert!(closed_within(stream, Duration::from_secs(5)).await);
        }
        let stats = handle.stats();
        eventually(|| stats.handshake_failures() == 3).await;
        let metrics = handle.metrics().unwrap();
        assert!(
            metrics.contains("netproto_handshakes_failed_total{reason=\"preface_timeout\"} 3"),
            "{metrics}"
        );
        handle.shutdown(Some(Duration::from_secs(2))).await;
        task.await.unwrap();
    };
    tokio::time::timeout(LIMIT, case).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_past_an_address_rate_are_refused_busy() {
    let case = async {
        let mut config = base_config("noise");
        config.server.handshake_rate_per_ip = 3;
        config.server.metrics_address = Some("127.0.0.1:0".into());
        config.client.auto_reconnect = false;
        let (handle, client_config, task) = start(config).await;
        let mut refused = None;
        let mut admitted = 0;
        for _ in 0..10 {
            match Client::connect(client_config.clone()).await {
                Ok(client) => {
                    admitted += 1;
                    client.close().await.unwrap();
                }
                Err(error) => {
                    refused = Some(error);
                    break;
                }
            }
        }
        // The bucket holds one second's worth: 3, and one more for each
        // third of a second the handshakes took meanwhile.
        assert!((3..=6).contains(&admitted), "{admitted} admitted");
        let error = refused.expect("a handshake past the rate is refused");
        assert!(
            matches!(&error, Error::GaveUp { last, .. } if matches!(**last, Error::Transport(netproto_transport::Error::Refused { status: netproto_wire::PrefaceStatus::Busy, .. }))),
            "{error:?}"
        );
        let metrics = handle.metrics().unwrap();
        assert!(
            metrics
                .contains("netproto_connections_refused_total{reason=\"handshake_rate_per_ip\"} 1"),
            "{metrics}"
        );
        // The bucket refills: the address is admitted again.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let client = Client::connect(client_config).await.unwrap();
        client.close().await.unwrap();
        handle.shutdown(Some(Duration::from_secs(2))).await;
        task.await.unwrap();
    };
    tokio::time::timeout(LIMIT, case).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_refuse_with_a_clear_error() {
    let case = async {
        for (limit_total, limit_ip) in [(2, 100), (100, 2)] {
            let mut config = base_config("noise");
            config.server.max_connections = limit_total;
            config.server.max_connections_per_ip = limit_ip;
            config.client.auto_reconnect = false;
            let (handle, client_config, task) = start(config).await;
            let a = Client::connect(client_config.clone()).await.unwrap();
            let b = Client::connect(client_config.clone()).await.unwrap();
            let err = Client::connect(client_config.clone()).await.unwrap_err();
            let text = format!("{err:#}");
            assert!(
                matches!(&err, Error::GaveUp { last, .. } if matches!(**last, Error::Transport(netproto_transport::Error::Refused { status: netproto_wire::PrefaceStatus::Busy, .. }))),
                "{text}: {err:?}"
            );
            assert_eq!(handle.stats().refused(), 1);
            // A slot frees up when a client leaves.
            a.close().await.unwrap();
            drop(a);
            let mut admitted = None;
            for _ in 0..50 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if let Ok(c) = Client::connect(client_config.clone()).await {
                    admitted = Some(c);
                    break;
                }
            }
            assert!(admitted.is_some(), "a freed slot admits a new client");
            drop(b);
            handle.shutdown(Some(Duration::from_secs(2))).await;
            task.await.unwrap();
        }
    };
    tokio::time::timeout(LIMIT, case).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reconnects_after_a_server_restart() {
    let case = async {
        let mut config = base_config("noise");
        let key_dir = std::env::temp_dir().join(format!("netproto-key-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&key_dir).unwrap();
        let key_file = key_dir.join("server.key");
        netproto_crypto::Keypair::generate(&mut rand::rngs::OsRng)
            .write_key_file(&key_file)
            .unwrap();
        config.security.key_file = Some(key_file);
        let (handle, client_config, task) = start(config.clone()).await;
        let client = Client::connect(client_config.clone()).await.unwrap();
        assert_eq!(client.request(&Message::Ping).await.unwrap(), Message::Pong);
        handle.shutdown(Some(Duration::from_secs(1))).await;
        task.await.unwrap();
        // The server is gone: the request fails with a clear error.
        let err = client.request(&Message::Ping).await.unwrap_err();
        eprintln!("while the server is down: {err:#}");
        // Same address, same key: the client reconnects by itself.
        config
            .server
            .address
            .clone_from(&client_config.client.address);
        let (handle, _, task) = start(config).await;
        let mut ok = false;
        for _ in 0..20 {
            if client.request(&Message::Ping).await.is_ok() {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ok, "requests succeed again after the restart");
        handle.shutdown(Some(Duration::from_secs(1))).await;
        task.await.unwrap();
        std::fs::remove_dir_all(key_dir).unwrap();
    };
    tokio::time::timeout(LIMIT, case).await.unwrap();
}

#[test]
fn environment_overrides_the_file() {
    let dir = std::env::temp_dir().join(format!("netproto-cfg-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("netproto.toml");
    std::fs::write(
        &file,
        "[server]\naddress = \"0.0.0.0:7000\"\nmax_connections = 50\nshutdown_timeout = \"3s\"\n\n[transport]\ncompression = \"lz4\"\n",
    )
    .unwrap();
    let only_file = NetworkConfig::load(Some(&file), Some(HashMap::new())).unwrap();
    assert_eq!(only_file.server.address, "0.0.0.0:7000");
    assert_eq!(only_file.server.max_connections, 50);
    assert_eq!(only_file.server.shutdown_timeout, Duration::from_secs(3));
    assert_eq!(
        only_file.transport.compression,
        netproto_daemon::Compression::Lz4
    );
    assert_eq!(only_file.client, netproto_daemon::ClientConfig::default());
    let env = HashMap::from([
        (
            "NETPROTO__SERVER__MAX_CONNECTIONS".to_owned(),
            "7".to_owned(),
        ),
        (
            "NETPROTO__CLIENT__RESPONSE_TIMEOUT".to_owned(),
            "250ms".to_owned(),
        ),
        ("NETPROTO__LOGGING__FORMAT".to_owned(), "json".to_owned()),
        (
            "NETPROTO__TRANSPORT__WRITE_BATCH_BYTES".to_owned(),
            "1048576".to_owned(),
        ),
    ]);
    let layered = NetworkConfig::load(Some(&file), Some(env.clone())).unwrap();
    assert_eq!(layered.server.address, "0.0.0.0:7000", "file value kept");
    assert_eq!(layered.server.max_connections, 7, "environment wins");
    assert_eq!(layered.client.response_timeout, Duration::from_millis(250));
    assert_eq!(layered.logging.format, netproto_daemon::LogFormat::Json);
    assert_eq!(layered.transport.write_batch_bytes, 1 << 20);
    assert_eq!(only_file.transport.write_batch_bytes, 512 << 10, "default");
    let only_env = NetworkConfig::load(None, Some(env)).unwrap();
    assert_eq!(only_env.server.address, "127.0.0.1:9000");
    assert_eq!(only_env.server.max_connections, 7);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let cases = [
        (
            "NETPROTO__SERVER__SHUTDOWN_TIMEOUT",
            "0s",
            "server.shutdown_timeout must not be 0",
        ),
        (
            "NETPROTO__SERVER__MAX_CONNECTIONS",
            "0",
            "server.max_connections must not be 0",
        ),
        (
            "NETPROTO__SECURITY__KEY_FILE",
            "/nonexistent/netproto.key",
            "does not exist",
        ),
        (
            "NETPROTO__SECURITY__MODE",
            "rot13",
            "unknown variant `rot13`, expected one of `noise`, `tls`, `plain`",
        ),
        (
            "NETPROTO__TRANSPORT__COMPRESSION",
            "gzip",
            "expected one of `none`, `lz4`, `zstd`",
        ),
        (
            "NETPROTO__SECURITY__NOISE_CIPHER",
            "rc4",
            "expected `chachapoly` or `aesgcm`",
        ),
        (
            "NETPROTO__SECURITY__NOISE_BACKEND",
            "openssl",
            "expected `ring` or `rustcrypto`",
        ),
        (
            "NETPROTO__TRANSPORT__WRITE_BATCH_BYTES",
            "100",
            "transport.write_batch_bytes must be 4 KiB to 64 MiB, not 100",
        ),
    ];
    for (key, value, expected) in cases {
        let env = HashMap::from([(key.to_owned(), value.to_owned())]);
        let err = NetworkConfig::load(None, Some(env)).unwrap_err();
        // Names are typed when loaded: a bad one is a load error, whose
        // source says what is allowed.
        let source = std::error::Error::source(&err).map(ToString::to_string);
        let message = format!("{err}: {}", source.unwrap_or_default());
        assert!(message.contains(expected), "{key}={value}: {message}");
    }
    let err = NetworkConfig::from_file("/nonexistent/netproto.toml").unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[test]
fn configuration_text_parses_and_prints_back() {
    let mut config = base_config("noise");
    config.transport.compression = netproto_daemon::Compression::Zstd;
    config.client.response_timeout = Duration::from_millis(1_500);
    let text = config.to_toml().unwrap();
    assert_eq!(NetworkConfig::from_toml_str(&text).unwrap(), config);
    let partial = NetworkConfig::from_toml_str("[server]\nmax_in_flight = 7\n").unwrap();
    assert_eq!(partial.server.max_in_flight, 7);
    assert_eq!(partial.client, NetworkConfig::default().client);
    for (text, expected) in [
        (
            "[server]\nmax_in_flight = 0\n",
            "server.max_in_flight must not be 0",
        ),
        (
            "[server]\nhandshake_threads = 65\n",
            "server.handshake_threads must be at most 64",
        ),
        ("[server]\nunknown = 1\n", "unknown field"),
        ("[server", "TOML"),
    ] {
        let err = NetworkConfig::from_toml_str(text).unwrap_err();
        let source = std::error::Error::source(&err).map(ToString::to_string);
        let message = format!("{err}: {}", source.unwrap_or_default());
        assert!(message.contains(expected), "{text:?}: {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_asked_before_run_is_not_lost() {
    let server = Server::bind(base_config("plain"), dispatcher())
        .await
        .unwrap();
    let handle = server.handle();
    let stopper = tokio::spawn(async move { handle.shutdown(Some(Duration::from_secs(1))).await });
    // The shutdown is asked for before `run` is first polled.
    tokio::time::sleep(Duration::from_millis(50)).await;
    tokio::time::timeout(Duration::from_secs(5), server.run())
        .await
        .expect("run must see the earlier shutdown")
        .unwrap();
    stopper.await.unwrap();
}
