//! The PROXY protocol on loopback: clients behind a trusted proxy are
//! counted, limited and logged under the address their header carries;
//! other sources are served as without it; a trusted source without a
//! valid header is closed and counted.

// Integration test: a failed unwrap, expect, panic or index is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{closed_within, eventually};
use netproto_daemon::{NetworkConfig, Server, ServerHandle};
use netproto_dispatch::Dispatcher;
use netproto_transport::{ClientSecurity, Connection, ConnectionConfig, Connector, Incoming, Io};
use netproto_wire::{Message, PrefaceStatus};
use ppp::v2::{Builder, Command, Protocol, Type, Version};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

mod common;

const LIMIT: Duration = Duration::from_secs(60);

/// What every test's server logs, at debug level: the global subscriber
/// sees the handshake threads too.
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs: &'static Mutex<Vec<u8>> = Box::leak(Box::default());
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || Capture(logs))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        logs
    })
}

struct Capture(&'static Mutex<Vec<u8>>);

impl std::io::Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The logged lines that contain `text`.
fn logged(text: &str) -> Vec<String> {
    let logs = logs().lock().unwrap();
    String::from_utf8_lossy(&logs)
        .lines()
        .filter(|line| line.contains(text))
        .map(str::to_owned)
        .collect()
}

/// A plain-mode server behind a trusted proxy at 127.0.0.1, with a
/// metrics registry.
fn config() -> NetworkConfig {
    let mut config = NetworkConfig::default();
    config.server.address = "127.0.0.1:0".into();
    config.server.metrics_address = Some("127.0.0.1:0".into());
    config.security.mode = "plain".parse().unwrap();
    config.server.proxy_protocol = true;
    config.server.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    config
}

/// Starts a server whose `ECHO` handler logs what it echoes; its handle,
/// address and task.
async fn start(config: NetworkConfig) -> (ServerHandle, String, tokio::task::JoinHandle<()>) {
    logs();
    let dispatcher = Arc::new(Dispatcher::default());
    dispatcher.register("ECHO", |msg| {
        if let Message::Echo(text) = msg {
            tracing::info!(%text, "echo handled");
        }
        Ok(msg.clone())
    });
    let server = Server::bind(config, dispatcher).await.unwrap();
    let address = server.local_addr();
    let handle = server.handle();
    let task = tokio::spawn(async move { server.run().await.unwrap() });
    (handle, address, task)
}

async fn stop(handle: ServerHandle, task: tokio::task::JoinHandle<()>) {
    handle.shutdown(Some(Duration::from_secs(2))).await;
    task.await.unwrap();
}

/// Sends `header` on `io`, then connects over it in plain mode.
async fn connect_over<I: Io>(
    mut io: I,
    header: &[u8],
) -> Result<Connection, netproto_transport::Error> {
    io.write_all(header).await.unwrap();
    Connector::new(ClientSecurity::Plain, ConnectionConfig::default())
        .unwrap()
        .connect(io)
        .await
}

/// Connects to `address` from 127.0.0.1, `header` first.
async fn connect(address: &str, header: &[u8]) -> Result<Connection, netproto_transport::Error> {
    connect_over(TcpStream::connect(address).await.unwrap(), header).await
}

/// `text` echoed over `conn`.
async fn echo(conn: &mut Connection, text: &str) {
    let message = Message::Echo(text.into());
    conn.send(message.to_envelope(1)).await.unwrap();
    match conn.recv().await.unwrap() {
        Some(Incoming::Message(envelope)) => {
            assert_eq!(Message::try_from(envelope).unwrap(), message);
        }
        other => panic!("{other:?}"),
    }
}

fn v1(client: &str) -> Vec<u8> {
    let client: SocketAddr = client.parse().unwrap();
    format!(
        "PROXY TCP4 {} 127.0.0.1 {} 9000\r\n",
        client.ip(),
        client.port()
    )
    .into_bytes()
}

fn v2(command: Command, client: &str) -> Builder {
    let client: SocketAddr = client.parse().unwrap();
    // Both addresses of one family, as the protocol requires.
    let proxy = if client.is_ipv4() {
        "127.0.0.1:9000"
    } else {
        "[::1]:9000"
    };
    let addresses = (client, proxy.parse::<SocketAddr>().unwrap());
    Builder::with_addresses(Version::Two | command, Protocol::Stream, addresses)
}

fn is_busy(result: &Result<Connection, netproto_transport::Error>) -> bool {
    matches!(
        result,
        Err(netproto_transport::Error::Refused {
            status: PrefaceStatus::Busy,
            ..
        })
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_behind_a_trusted_proxy_are_limited_and_logged_by_their_own_address() {
    let case = async {
        let mut config = config();
        config.server.max_connections_per_ip = 1;
        let (handle, address, task) = start(config).await;
        // Both come from 127.0.0.1, one connection per address allowed:
        // each counts under the address its header carries.
        let mut first = connect(&address, &v1("192.0.2.1:40001")).await.unwrap();
        echo(&mut first, "from the v1 client").await;
        let header = v2(Command::Proxy, "[2001:db8::2]:40002")
            .write_tlv(Type::UniqueId, b"conn-42")
            .unwrap()
            .build()
            .unwrap();
        let mut second = connect(&address, &header).await.unwrap();
        echo(&mut second, "from the v2 client").await;
        // A second connection from the first client's address is refused.
        let header = v2(Command::Proxy, "192.0.2.1:40003").build().unwrap();
        let third = connect(&address, &header).await;
        assert!(is_busy(&third), "{third:?}");
        let metrics = handle.metrics().unwrap();
        assert!(
            metrics.contains(
                "netproto_connections_refused_total{reason=\"max_connections_per_ip\"} 1"
            ),
            "{metrics}"
        );
        assert_eq!(handle.stats().proxy_header_errors(), 0);
        // The handler's log lines carry the client's address, and the
        // proxy's beside it.
        for (text, client) in [
            ("from the v1 client", "peer=Some(192.0.2.1:40001)"),
            ("from the v2 client", "peer=Some([2001:db8::2]:40002)"),
        ] {
            let lines = logged(text);
            assert_eq!(lines.len(), 1, "{lines:?}");
            assert!(
                lines[0].contains(client) && lines[0].contains("proxy=Some(127.0.0.1:"),
                "{lines:?}"
            );
        }
        drop((first, second));
        stop(handle, task).await;
    };
    tokio::time::timeout(LIMIT, case).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_source_is_served_as_without_the_protocol() {
    let case = async {
        let (handle, address, task) = start(config()).await;
        let from_untrusted = || async {
            let socket = TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            socket.connect(address.parse().unwrap()).await.unwrap()
        };
        // 127.0.0.2 is not trusted: no header is read from it.
        let mut direct = connect_over(from_untrusted().await, b"").await.unwrap();
        echo(&mut direct, "from an untrusted source").await;
        let lines = logged("from an untrusted source");
        assert!(
            lines.len() == 1 && lines[0].contains("peer=Some(127.0.0.2:"),
            "{lines:?}"
        );
        // A header from it is not honoured: it fails the preface.
        let spoofed = connect_over(from_untrusted().await, &v1("192.0.2.9:1")).await;
        assert!(spoofed.is_err(), "{spoofed:?}");
        let stats = handle.stats();
        eventually(|| stats.handshake_failures() == 1).await;
        let metrics = handle.metrics().unwrap();
        assert!(
            metrics.contains("netproto_handshakes_failed_total{reason=\"preface\"} 1"),
            "{metrics}"
        );
        assert_eq!(stats.proxy_header_errors(), 0);
        assert!(logged("192.0.2.9").is_empty());
        drop(direct);
        stop(handle, task).await;
    };
    tokio::time::timeout(LIMIT, case).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_source_without_a_valid_header_is_closed_and_counted() {
    let case = async {
        let mut config = config();
        config.server.proxy_timeout = Duration::from_millis(300);
        config.server.proxy_header_max = 232;
        let (handle, address, task) = start(config).await;
        let preface = netproto_wire::Preface::new(netproto_wire::SecurityMode::Plain).to_bytes();
        let oversized = v2(Command::Proxy, "192.0.2.1:1")
            .write_tlv(Type::NoOp, &[0; 1000])
            .unwrap()
            .build()
            .unwrap();
        let cases: [(&[u8], &str); 4] = [
            (&preface, "missing"),
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "missing"),
            (b"PROXY TCP4 192.0.2.300 127.0.0.1 1 2\r\n", "malformed"),
            (&oversized, "too_large"),
        ];
        for (sent, reason) in cases {
            let mut stream = TcpStream::connect(&address).await.unwrap();
            stream.write_all(sent).await.unwrap();
            assert!(
                closed_within(&mut stream, Duration::from_secs(5)).await,
                "{reason}"
            );
        }
        // Dribbled slower than the timeout allows: closed mid-header.
        let mut slow = TcpStream::connect(&address).await.unwrap();
        let mut dribbled = 0;
        for byte in v1("192.0.2.1:1") {
            if slow.write_all(&[byte]).await.is_err() {
                break;
            }
            dribbled += 1;
            if closed_within(&mut slow, Duration::from_millis(100)).await {
                break;
            }
        }
        assert!(
            dribbled < v1("192.0.2.1:1").len(),
            "the whole header went through"
        );
        // Cut short: the peer closes within the header.
        let mut cut = TcpStream::connect(&address).await.unwrap();
        cut.write_all(b"PROXY TCP4 192.0").await.unwrap();
        cut.shutdown().await.unwrap();
        assert!(closed_within(&mut cut, Duration::from_secs(5)).await);
        let stats = handle.stats();
        eventually(|| stats.proxy_header_errors() == 6).await;
        let metrics = handle.metrics().unwrap();
        for (reason, count) in [
            ("missing", 2),
            ("malformed", 1),
            ("too_large", 1),
            ("timeout", 1),
            ("closed", 1),
            ("io", 0),
        ] {
            let series =
                format!("netproto_proxy_header_errors_total{{reason=\"{reason}\"}} {count}\n");
            assert!(metrics.contains(&series), "{series}{metrics}");
        }
        // None of them reached the preface or a handshake.
        assert_eq!((stats.accepted(), stats.handshake_failures()), (0, 0));
        eventually(|| stats.active() == 0).await;
        stop(handle, task).await;
    };
    tokio::time::timeout(LIMIT, case).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_without_a_client_address_keeps_the_socket_address() {
    let case = async {
        let mut config = config();
        config.server.max_connections_per_ip = 1;
        let (handle, address, task) = start(config).await;
        // A health check (v2 LOCAL) counts as the proxy's own connection.
        let local = v2(Command::Local, "0.0.0.0:0").build().unwrap();
        let mut check = connect(&address, &local).await.unwrap();
        echo(&mut check, "a health check").await;
        let lines = logged("a health check");
        assert!(
            lines.len() == 1 && lines[0].contains("peer=Some(127.0.0.1:"),
            "{lines:?}"
        );
        // So the proxy's address is now at its limit, for v1 UNKNOWN too...
        let second = connect(&address, &local).await;
        assert!(is_busy(&second), "{second:?}");
        let unknown = connect(&address, b"PROXY UNKNOWN\r\n").await;
        assert!(is_busy(&unknown), "{unknown:?}");
        // ...while its clients are not.
        let mut client = connect(&address, &v1("192.0.2.7:4000")).await.unwrap();
        echo(&mut client, "a client meanwhile").await;
        assert_eq!(handle.stats().refused(), 2);
        drop((check, client));
        stop(handle, task).await;
    };
    tokio::time::timeout(LIMIT, case).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxied_client_refused_at_accept_is_answered_busy_after_its_header() {
    let case = async {
        let mut config = config();
        config.server.max_connections = 1;
        let (handle, address, task) = start(config).await;
        let mut first = connect(&address, &v1("192.0.2.1:1")).await.unwrap();
        echo(&mut first, "holding the only place").await;
        // Refused at accept (`max_connections`), before its header was
        // read: the refusal reads it before it answers the preface.
        let second = connect(&address, &v1("192.0.2.2:2")).await;
        assert!(is_busy(&second), "{second:?}");
        let metrics = handle.metrics().unwrap();
        assert!(
            metrics.contains("netproto_connections_refused_total{reason=\"max_connections\"} 1"),
            "{metrics}"
        );
        assert_eq!(handle.stats().proxy_header_errors(), 0);
        drop(first);
        stop(handle, task).await;
    };
    tokio::time::timeout(LIMIT, case).await.unwrap();
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_peer_of_a_unix_socket_must_send_a_header() {
    let dir = std::env::temp_dir().join(format!("netproto-proxy-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sock");
    let case = async {
        let mut config = config();
        config.server.address = format!("unix:{}", path.display());
        config.server.trusted_proxies.clear();
        let (handle, _, task) = start(config).await;
        let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
        let mut conn = connect_over(stream, &v1("192.0.2.5:5000")).await.unwrap();
        echo(&mut conn, "over a unix socket").await;
        let lines = logged("over a unix socket");
        assert!(
            lines.len() == 1 && lines[0].contains("peer=Some(192.0.2.5:5000)"),
            "{lines:?}"
        );
        let without = tokio::net::UnixStream::connect(&path).await.unwrap();
        assert!(connect_over(without, b"").await.is_err());
        let stats = handle.stats();
        eventually(|| stats.proxy_header_errors() == 1).await;
        drop(conn);
        stop(handle, task).await;
    };
    tokio::time::timeout(LIMIT, case).await.unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}
