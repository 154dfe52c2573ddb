//! netproto behind a real HAProxy (Debian's `haproxy`), all on loopback:
//! `netproto serve` processes behind one HAProxy, in the four ways users run
//! it.
//!
//! - TCP mode with `send-proxy-v2` in front of three Noise servers: two
//!   clients bound to 127.0.0.2 and 127.0.0.3 are seen under their own
//!   addresses, and the per-address connection limit applies to each alone
//!   (both reach HAProxy's backends from 127.0.0.1).
//! - TCP mode routing TLS by the SNI and ALPN of the ClientHello
//!   (`req.ssl_sni`, `req.ssl_alpn`) to three TLS servers, encrypted end to
//!   end: each name reaches the server whose certificate carries it, and a
//!   ClientHello without `netproto/1` reaches none.
//! - One of three servers killed (`kill -9`) while clients run requests,
//!   HAProxy checking `/readyz`: every request gets a reply or a clear
//!   error, and retrying the failed ones (they are idempotent) succeeds on
//!   the servers left.
//! - One of three servers draining (SIGTERM with a `drain_delay`): its
//!   `/readyz` fails, HAProxy sends it no new connection, its established
//!   connections are served until its goaway, and it exits 0.
//!
//! Needs `haproxy` (`cargo xtask ci` installs it as root); without it each
//! test says so and checks nothing. HAProxy cannot listen on port 0 and say
//! where: its frontends take ports the test has just found free, and a
//! start that loses that race is retried on others.

// Integration test: a failed unwrap, expect, panic or index is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stdout
)]

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use netproto_crypto::{Keypair, PublicKey};
use netproto_daemon::{Client, NetworkConfig, SecurityMode};
use netproto_transport::tls::TlsConnector;
use netproto_transport::{
    ClientSecurity, ConnectionConfig, Connector, Error as TransportError, NoiseConfig,
};
use netproto_wire::{Envelope, Message, MessageType, PrefaceStatus};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use support::{ServerProcess, Settings};
use tokio::net::TcpSocket;

/// Every wait in these tests ends by this.
const LIMIT: Duration = Duration::from_secs(30);

/// The `haproxy` child process, killed by its id when dropped.
struct Haproxy {
    child: Child,
    dir: PathBuf,
}

impl Haproxy {
    /// Starts HAProxy with `frontends` (name, body) and `backends` (name,
    /// body), each frontend on a free loopback port; returns it with the
    /// frontends' addresses, in order.
    fn start(frontends: &[(&str, String)], backends: &[(&str, String)]) -> (Self, Vec<SocketAddr>) {
        for attempt in 1..=5 {
            let addrs: Vec<SocketAddr> = frontends.iter().map(|_| free_port()).collect();
            let mut config = String::from(
                "global\n    maxconn 4096\n\ndefaults\n    mode tcp\n    timeout connect 2s\n    timeout client 60s\n    timeout server 60s\n    retries 3\n    option redispatch\n",
            );
            for ((name, body), addr) in frontends.iter().zip(&addrs) {
                config.push_str(&format!("\nfrontend {name}\n    bind {addr}\n{body}"));
            }
            for (name, body) in backends {
                config.push_str(&format!("\nbackend {name}\n{body}"));
            }
            let dir = temp_dir("haproxy");
            let file = dir.join("haproxy.cfg");
            std::fs::write(&file, &config).unwrap();
            let child = Command::new("haproxy")
                .arg("-db")
                .arg("-f")
                .arg(&file)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut haproxy = Self { child, dir };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(status) = haproxy.child.try_wait().unwrap() {
                    let mut err = String::new();
                    if let Some(mut stderr) = haproxy.child.stderr.take() {
                        use std::io::Read;
                        let _ = stderr.read_to_string(&mut err);
                    }
                    println!("haproxy exited ({status}), attempt {attempt}: {err}");
                    break;
                }
                if addrs
                    .iter()
                    .all(|addr| std::net::TcpStream::connect(addr).is_ok())
                {
                    return (haproxy, addrs);
                }
                assert!(
                    Instant::now() < deadline,
                    "haproxy did not listen:\n{config}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("haproxy did not start in five attempts");
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback address with a port that was free a moment ago.
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn temp_dir(what: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "netproto-{what}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Whether HAProxy is installed; says so when it is not.
fn haproxy_available(test: &str) -> bool {
    let found = Command::new("haproxy")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        println!("SKIPPED {test}: haproxy is not installed (`cargo xtask ci` installs it as root)");
    }
    found
}

/// Runs `netproto` with `args`, which must succeed.
fn netproto(args: &[&str]) {
    let status = Command::new(env!("CARGO_BIN_EXE_netproto"))
        .args(args)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "netproto {args:?}: {status}");
}

/// A TOML string of a path.
fn toml_path(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

fn echo(text: &str) -> Envelope {
    Envelope::new(
        1,
        MessageType::new("ECHO").unwrap(),
        Bytes::from(text.to_owned()),
    )
}

/// Connects a transport client from `local` (an address of 127.0.0.0/8) to
/// `to`, then runs the preface and the handshake with `security`.
async fn connect_from(
    local: &str,
    to: SocketAddr,
    security: ClientSecurity,
) -> Result<netproto_transport::Connection, TransportError> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(to).await?;
    let connector = Connector::new(security, ConnectionConfig::default()).unwrap();
    connector.connect(stream).await
}

/// Sends one ECHO on `conn` and checks the answer.
async fn round_trip(conn: &mut netproto_transport::Connection, text: &str) {
    conn.send(echo(text)).await.unwrap();
    match tokio::time::timeout(LIMIT, conn.recv()).await.unwrap() {
        Ok(Some(netproto_transport::Incoming::Message(reply))) => {
            assert_eq!(reply.payload, text.as_bytes());
        }
        other => panic!("no echo: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_proxy_v2_shows_each_client_under_its_own_address() {
    if !haproxy_available("send_proxy_v2") {
        return;
    }
    let dir = temp_dir("proxied-noise");
    let key_file = dir.join("server.key");
    netproto(&["keygen", "--out", key_file.to_str().unwrap()]);
    let settings = Settings::default()
        .set("security", "key_file", &toml_path(&key_file))
        .set("server", "proxy_protocol", "true")
        .set("server", "trusted_proxies", "[\"127.0.0.1\"]")
        .set("server", "max_connections_per_ip", "1")
        .set("logging", "level", "\"debug\"");
    let servers: Vec<ServerProcess> = (0..3)
        .map(|_| ServerProcess::start("noise", &settings))
        .collect();
    let server_key: PublicKey = servers[0].public_key.as_deref().unwrap().parse().unwrap();
    let lines: String = servers
        .iter()
        .enumerate()
        .map(|(i, s)| format!("    server n{i} {} send-proxy-v2\n", s.addr))
        .collect();
    let (_haproxy, addrs) = Haproxy::start(
        &[("proxied", "    default_backend noise\n".to_owned())],
        &[("noise", format!("    balance source\n{lines}"))],
    );
    let noise = || {
        let mut config = NoiseConfig::new(Keypair::generate(&mut rand::rngs::OsRng));
        config.remote_static = Some(server_key);
        ClientSecurity::noise(config)
    };
    // One connection each from 127.0.0.2 and 127.0.0.3: both served,
    // although HAProxy reaches the servers from 127.0.0.1 for both.
    let mut second = connect_from("127.0.0.2", addrs[0], noise()).await.unwrap();
    let mut third = connect_from("127.0.0.3", addrs[0], noise()).await.unwrap();
    round_trip(&mut second, "from 127.0.0.2").await;
    round_trip(&mut third, "from 127.0.0.3").await;
    // A second connection from 127.0.0.2 (the same server: `balance
    // source`) is over its address's limit of one.
    let err = connect_from("127.0.0.2", addrs[0], noise())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::Refused {
                status: PrefaceStatus::Busy,
                ..
            }
        ),
        "{err:?}"
    );
    // ... and 127.0.0.3's connection still works.
    round_trip(&mut third, "still from 127.0.0.3").await;
    // The servers logged the clients' own addresses.
    let logs: Vec<String> = servers.iter().flat_map(ServerProcess::log_lines).collect();
    for address in ["127.0.0.2:", "127.0.0.3:"] {
        assert!(
            logs.iter().any(|line| line.contains(address)),
            "no server logged {address}"
        );
    }
    drop((second, third));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_routed_by_sni_and_alpn_end_to_end() {
    if !haproxy_available("tls_routing") {
        return;
    }
    let dir = temp_dir("sni");
    let names = ["a.netproto.test", "b.netproto.test", "c.netproto.test"];
    let mut servers = Vec::new();
    let mut certs = BTreeMap::new();
    for name in names {
        let (cert, key) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        netproto(&[
            "certgen",
            "--name",
            name,
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ]);
        let settings = Settings::default()
            .set("security", "tls_cert", &toml_path(&cert))
            .set("security", "tls_key", &toml_path(&key));
        servers.push(ServerProcess::start("tls", &settings));
        certs.insert(name, cert);
    }
    let mut rules = String::from(
        "    tcp-request inspect-delay 5s\n    tcp-request content accept if { req.ssl_hello_type 1 }\n",
    );
    let mut backends = Vec::new();
    for (i, (name, server)) in names.iter().zip(&servers).enumerate() {
        rules.push_str(&format!(
            "    use_backend tls{i} if {{ req.ssl_sni -i {name} }} {{ req.ssl_alpn netproto/1 }}\n"
        ));
        backends.push((
            ["tls0", "tls1", "tls2"][i],
            format!("    server s{i} {}\n", server.addr),
        ));
    }
    let (_haproxy, addrs) = Haproxy::start(&[("sni", rules)], &backends);
    for name in names {
        // Each client trusts only its name's certificate: an answer proves
        // HAProxy routed it to that server, through TLS it did not end.
        let connector = TlsConnector::builder()
            .ca_file(certs[name].clone())
            .build()
            .unwrap();
        let security = ClientSecurity::Tls {
            connector,
            server_name: name.to_owned(),
        };
        let mut conn = connect_from("127.0.0.1", addrs[0], security).await.unwrap();
        assert_eq!(conn.info().mode, netproto_wire::SecurityMode::Tls);
        round_trip(&mut conn, name).await;
        println!("{name}: routed by SNI and ALPN, echoed end to end");
    }
    // A ClientHello without netproto/1, or with a name HAProxy does not
    // route, reaches no server.
    let stray = async {
        let stream = tokio::net::TcpStream::connect(addrs[0]).await.unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs.values() {
            for der in CertificateDer::pem_file_iter(cert).unwrap() {
                roots.add(der.unwrap()).unwrap();
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(names[0]).unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, stream)
            .await
    };
    assert!(
        tokio::time::timeout(LIMIT, stray).await.unwrap().is_err(),
        "a ClientHello without the ALPN was routed"
    );
    let unknown = TlsConnector::builder()
        .ca_file(certs[names[0]].clone())
        .build()
        .unwrap();
    let security = ClientSecurity::Tls {
        connector: unknown,
        server_name: "unknown.netproto.test".to_owned(),
    };
    assert!(connect_from("127.0.0.1", addrs[0], security).await.is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Three plain servers with health checks on their metrics address, behind
/// one HAProxy frontend that checks `/readyz` every 100 ms.
struct Pool {
    servers: Vec<ServerProcess>,
    haproxy: Haproxy,
    addr: SocketAddr,
}

impl Pool {
    fn start(drain_delay: &str) -> Self {
        let settings = Settings::default()
            .set("server", "metrics_address", "\"127.0.0.1:0\"")
            .set("server", "drain_delay", drain_delay)
            .set("server", "shutdown_timeout", "\"3s\"");
        let servers: Vec<ServerProcess> = (0..3)
            .map(|_| ServerProcess::start("plain", &settings))
            .collect();
        let lines: String = servers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let metrics = s.metrics.expect("the server has a metrics address");
                format!(
                    "    server p{i} {} check addr 127.0.0.1 port {} inter 100ms fall 1 rise 2\n",
                    s.addr,
                    metrics.port()
                )
            })
            .collect();
        let (haproxy, addrs) = Haproxy::start(
            &[("pool", "    default_backend pool\n".to_owned())],
            &[(
                "pool",
                format!(
                    "    balance roundrobin\n    option httpchk GET /readyz\n    http-check expect status 200\n{lines}"
                ),
            )],
        );
        Self {
            servers,
            haproxy,
            addr: addrs[0],
        }
    }

    /// A client of the pool through HAProxy, reconnecting when its
    /// connection is lost.
    async fn client(&self) -> Client {
        let mut config = NetworkConfig::default();
        config.security.mode = SecurityMode::Plain;
        config.client.address = self.addr.to_string();
        config.client.auto_reconnect = true;
        config.client.max_reconnect_attempts = 3;
        config.client.reconnect_delay = Duration::from_millis(100);
        config.client.response_timeout = Duration::from_secs(5);
        Client::connect(config).await.unwrap()
    }

    /// A counter of server `i`, from its metrics.
    async fn counter(&self, i: usize, name: &str) -> f64 {
        let metrics = self.servers[i].metrics.unwrap().to_string();
        let text = netproto_daemon::metrics::scrape(&metrics).await.unwrap();
        netproto_daemon::metrics::Samples::parse(&text).sum(name)
    }
}

/// How the requests of a run ended, by kind.
#[derive(Debug, Default)]
struct Outcomes {
    replies: u64,
    /// First attempts that failed, by the error's text.
    failures: BTreeMap<String, u64>,
    /// Requests whose retries all failed too.
    lost: u64,
}

/// Sends ECHO requests until `until`; a failed request is retried up to 5
/// times (ECHO is idempotent). Each attempt ends by the response timeout.
async fn run_requests(client: Client, until: Instant, tag: usize) -> Outcomes {
    let mut outcomes = Outcomes::default();
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let text = format!("client {tag} request {n}");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = Instant::now();
            let result = client.request(&Message::Echo(text.clone())).await;
            assert!(
                started.elapsed() < Duration::from_secs(6),
                "an attempt outlived the response timeout"
            );
            match result {
                Ok(Message::Echo(reply)) => {
                    assert_eq!(reply, text);
                    outcomes.replies += 1;
                    break;
                }
                Ok(other) => panic!("not an echo: {other:?}"),
                Err(error) => {
                    if attempt == 1 {
                        *outcomes.failures.entry(error.to_string()).or_default() += 1;
                    }
                    if attempt > 5 {
                        outcomes.lost += 1;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_under_load_costs_no_request() {
    if !haproxy_available("killed_under_load") {
        return;
    }
    let mut pool = Pool::start("\"0s\"");
    let until = Instant::now() + Duration::from_secs(4);
    let mut runs = Vec::new();
    for tag in 0..6 {
        let client = pool.client().await;
        runs.push(tokio::spawn(run_requests(client, until, tag)));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    pool.servers[1].signal("KILL");
    let mut total = Outcomes::default();
    for run in runs {
        let outcomes = tokio::time::timeout(LIMIT, run).await.unwrap().unwrap();
        total.replies += outcomes.replies;
        total.lost += outcomes.lost;
        for (kind, count) in outcomes.failures {
            *total.failures.entry(kind).or_default() += count;
        }
    }
    println!("killed one of three under load: {total:?}");
    assert!(total.replies > 0);
    assert_eq!(total.lost, 0, "requests failed on every retry: {total:?}");
    // Whichever clients were on the killed server saw their connection
    // lost (reported, not hidden), and their retries were served.
    assert!(
        pool.servers[1].exit_within(LIMIT).is_some(),
        "the killed server is still running"
    );
    drop(pool.haproxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_server_gets_no_new_connection_and_finishes_its_own() {
    if !haproxy_available("draining") {
        return;
    }
    let mut pool = Pool::start("\"3s\"");
    // Let HAProxy see every server up (rise 2 at 100 ms).
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Six established clients: two on each server (round robin).
    let mut established = Vec::new();
    for _ in 0..6 {
        let client = pool.client().await;
        client.request(&Message::Ping).await.unwrap();
        established.push(client);
    }
    let before = pool.counter(0, "netproto_handshakes_completed_total").await;
    assert!(before >= 2.0, "server 0 has {before} connections");
    let signalled = Instant::now();
    pool.servers[0].signal("TERM");
    // Its readiness fails; HAProxy sees it within a check or two.
    let metrics = pool.servers[0].metrics.unwrap().to_string();
    loop {
        let (status, _) = netproto_daemon::metrics::http_get(&metrics, "/readyz")
            .await
            .unwrap();
        if status == 503 {
            break;
        }
        assert!(signalled.elapsed() < LIMIT, "readyz never failed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    // During the delay: new clients are all served, by the other two...
    for _ in 0..9 {
        let client = pool.client().await;
        client.request(&Message::Ping).await.unwrap();
    }
    let after = pool.counter(0, "netproto_handshakes_completed_total").await;
    assert_eq!(
        after, before,
        "HAProxy sent the draining server a new connection"
    );
    // ... and the established ones, on it too, keep working.
    assert!(
        signalled.elapsed() < Duration::from_millis(2500),
        "too slow to check in the delay"
    );
    for client in &established {
        client.request(&Message::Ping).await.unwrap();
    }
    // Then its goaway: it exits 0 within the delay and its shutdown timeout.
    let status = pool.servers[0]
        .exit_within(Duration::from_secs(3 + 3 + 5))
        .expect("the draining server did not exit");
    assert!(status.success(), "exit status {status}");
    println!(
        "drained: exit {status} {:.2} s after SIGTERM",
        signalled.elapsed().as_secs_f64()
    );
    // Its clients move on: a request gets a reply (after a reconnection
    // through HAProxy) or a clear error, never a hang.
    for client in &established {
        let result = tokio::time::timeout(LIMIT, client.request(&Message::Ping)).await;
        assert!(result.is_ok(), "a request outlived its timeout");
    }
}
