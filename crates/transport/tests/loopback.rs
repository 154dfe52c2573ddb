//! Every transport over real loopback sockets: TCP on 127.0.0.1 and ::1, and
//! Unix domain sockets. Each test is bounded in time and stops by itself.

// Integration test: a failed unwrap, expect, panic or index is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use netproto_crypto::Keypair;
use netproto_transport::{
    ClientSecurity, Connection, ConnectionConfig, Error, HandshakeProgress, Incoming, NoiseConfig,
    ServerSecurity, TimeoutKind, connect_tcp,
};
use netproto_wire::{Envelope, MessageType};
use support::{new_acceptor, new_connector};
use tokio::net::TcpListener;

const HANDSHAKE: Duration = Duration::from_secs(5);
const LIMIT: Duration = Duration::from_secs(30);

fn keypair() -> Keypair {
    Keypair::generate(&mut rand::rngs::OsRng)
}

/// Echoes every message back until the client closes.
async fn echo_server(mut conn: Connection) -> Result<u64, Error> {
    let mut echoed = 0;
    while let Some(item) = conn.recv().await? {
        if let Incoming::Message(envelope) = item {
            conn.send(envelope).await?;
            echoed += 1;
        }
    }
    Ok(echoed)
}

/// Sends `count` requests with up to all of them in flight and checks every echo.
async fn run_client(conn: Connection, count: u64) {
    let (sender, mut receiver, _info) = conn.split();
    let send = tokio::spawn(async move {
        for id in 1..=count {
            let size = [8usize, 64, 1500, 20_000][id as usize % 4];
            let payload = Bytes::from(vec![(id % 256) as u8; size]);
            let env = Envelope::new(id, MessageType::new("BLOB").unwrap(), payload);
            sender.send(env).await.unwrap();
        }
        sender
    });
    for id in 1..=count {
        match receiver.recv().await.unwrap() {
            Some(Incoming::Message(env)) => {
                assert_eq!(env.request_id, id);
                assert!(env.payload.iter().all(|b| *b == (id % 256) as u8));
            }
            other => panic!("expected echo {id}, got {other:?}"),
        }
    }
    let sender = send.await.unwrap();
    sender.close().await.unwrap();
}

async fn tcp_case(bind: &str, client: ClientSecurity, server: ServerSecurity) {
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ConnectionConfig::default();
    let server_task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        stream.set_nodelay(true).unwrap();
        let conn = new_acceptor(server.clone(), &ConnectionConfig::default(), HANDSHAKE)
            .accept(stream)
            .await
            .unwrap();
        echo_server(conn).await
    });
    let conn = new_connector(client.clone(), &config, HANDSHAKE)
        .connect_tcp(addr)
        .await
        .unwrap();
    run_client(conn, 400).await;
    assert_eq!(server_task.await.unwrap().unwrap(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_over_tcp_v4() {
    tokio::time::timeout(
        LIMIT,
        tcp_case("127.0.0.1:0", ClientSecurity::Plain, ServerSecurity::Plain),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noise_over_tcp_v4() {
    let case = tcp_case(
        "127.0.0.1:0",
        ClientSecurity::noise(NoiseConfig::new(keypair())),
        ServerSecurity::noise(NoiseConfig::new(keypair())),
    );
    tokio::time::timeout(LIMIT, case).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noise_over_tcp_v6_when_available() {
    if TcpListener::bind("[::1]:0").await.is_err() {
        eprintln!("skipping: no IPv6 loopback on this machine");
        return;
    }
    let case = tcp_case(
        "[::1]:0",
        ClientSecurity::noise(NoiseConfig::new(keypair())),
        ServerSecurity::noise(NoiseConfig::new(keypair())),
    );
    tokio::time::timeout(LIMIT, case).await.unwrap();
}

#[cfg(unix)]
async fn unix_case(client: ClientSecurity, server: ServerSecurity) {
    let dir = std::env::temp_dir().join(format!(
        "netproto-test-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let server_task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let conn = new_acceptor(server.clone(), &ConnectionConfig::default(), HANDSHAKE)
            .accept(stream)
            .await
            .unwrap();
        echo_server(conn).await
    });
    let conn = new_connector(client, &ConnectionConfig::default(), HANDSHAKE)
        .connect_unix(&path)
        .await
        .unwrap();
    run_client(conn, 400).await;
    assert_eq!(server_task.await.unwrap().unwrap(), 400);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_over_unix_socket() {
    tokio::time::timeout(
        LIMIT,
        unix_case(ClientSecurity::Plain, ServerSecurity::Plain),
    )
    .await
    .unwrap();
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noise_over_unix_socket() {
    let case = unix_case(
        ClientSecurity::noise(NoiseConfig::new(keypair())),
        ServerSecurity::noise(NoiseConfig::new(keypair())),
    );
    tokio::time::timeout(LIMIT, case).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noise_server_requires_allowed_client_key() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let allowed = keypair();
    let mut server_noise = NoiseConfig::new(keypair());
    server_noise.allowed_peers = Some(vec![*allowed.public()]);
    let server = ServerSecurity::noise(server_noise);
    let server_task = tokio::spawn(async move {
        let mut results = Vec::new();
        for _ in 0..2 {
            let (stream, _) = listener.accept().await.unwrap();
            results.push(
                new_acceptor(server.clone(), &ConnectionConfig::default(), HANDSHAKE)
                    .accept(stream)
                    .await
                    .map(|c| c.info().peer_static),
            );
        }
        results
    });
    let stranger = keypair();
    let stranger_key = *stranger.public();
    let refused = new_connector(
        ClientSecurity::noise(NoiseConfig::new(stranger)),
        &ConnectionConfig::default(),
        HANDSHAKE,
    )
    .connect_tcp(addr)
    .await;
    // The stranger's handshake completes on its side at best; the server refuses it.
    let ok = new_connector(
        ClientSecurity::noise(NoiseConfig::new(allowed.clone())),
        &ConnectionConfig::default(),
        HANDSHAKE,
    )
    .connect_tcp(addr)
    .await;
    assert!(ok.is_ok());
    let results = tokio::time::timeout(LIMIT, server_task)
        .await
        .unwrap()
        .unwrap();
    // Refused as an unknown peer, naming the key it presented.
    assert!(
        matches!(&results[0], Err(Error::UnknownPeer { presented }) if *presented == stranger_key),
        "{:?}",
        results[0]
    );
    assert_eq!(results[1].as_ref().unwrap(), &Some(*allowed.public()));
    drop(refused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_against_a_full_backlog() {
    // A listener that never accepts, with a backlog of one: once it is full,
    // the kernel drops further connection attempts and they hang.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    let mut timed_out = false;
    for _ in 0..16 {
        match connect_tcp(addr, Duration::from_millis(300)).await {
            Ok(stream) => held.push(stream),
            Err(Error::Timeout {
                kind: TimeoutKind::Connect,
                ..
            }) => {
                timed_out = true;
                break;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        timed_out,
        "no connect timed out after {} connections",
        held.len()
    );
}

/// What [`first_header_case`]'s server saw: the handshake's and first
/// header's result, then (when they succeeded) the echo server's.
type FirstHeaderResult = Result<Result<u64, Error>, Error>;

/// A plain server that accepts one connection, waits up to `wait` for its
/// first header, and (when that succeeds) echoes until the client closes;
/// returns the client's side, connected with `client`, and the server's task.
async fn first_header_case(
    server: ConnectionConfig,
    client: ConnectionConfig,
    wait: Duration,
) -> (Connection, tokio::task::JoinHandle<FirstHeaderResult>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut accepted = new_acceptor(ServerSecurity::Plain, &server, HANDSHAKE)
            .accept_handshake(stream, &HandshakeProgress::default())
            .await?;
        accepted.first_header(wait).await?;
        // A second call is harmless: what it reads stays in order.
        accepted.first_header(wait).await?;
        Ok(echo_server(accepted.start()).await)
    });
    let conn = new_connector(ClientSecurity::Plain, &client, HANDSHAKE)
        .connect_tcp(addr)
        .await
        .unwrap();
    (conn, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_header_keeps_what_it_read_for_the_connection() {
    let case = async {
        let config = ConnectionConfig::default();
        let (conn, server) = first_header_case(config.clone(), config, LIMIT).await;
        // Many requests at once: the first read takes several frames, and
        // part of one, before the connection starts.
        run_client(conn, 400).await;
        assert_eq!(server.await.unwrap().unwrap().unwrap(), 400);
    };
    tokio::time::timeout(LIMIT, case).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_header_refuses_a_header_over_the_limit() {
    let case = async {
        let mut server_config = ConnectionConfig::default();
        server_config.max_frame_len = 1024;
        let client_config = ConnectionConfig::default();
        let (conn, server) = first_header_case(server_config, client_config, LIMIT).await;
        let payload = Bytes::from(vec![7; 4096]);
        let big = Envelope::new(1, MessageType::new("BLOB").unwrap(), payload);
        conn.send(big).await.unwrap();
        // Refused by the check, before any connection started.
        let result = server.await.unwrap();
        assert!(
            matches!(
                result,
                Err(Error::Protocol(netproto_wire::Error::FrameTooLarge { .. }))
            ),
            "{result:?}"
        );
    };
    tokio::time::timeout(LIMIT, case).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_header_lets_a_quiet_peer_through_after_the_wait() {
    let case = async {
        let config = ConnectionConfig::default();
        let wait = Duration::from_millis(200);
        let (conn, server) = first_header_case(config.clone(), config, wait).await;
        // Quiet past the wait, then an ordinary client.
        tokio::time::sleep(wait * 2).await;
        run_client(conn, 10).await;
        assert_eq!(server.await.unwrap().unwrap().unwrap(), 10);
    };
    tokio::time::timeout(LIMIT, case).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_header_reports_a_peer_that_closed_before_a_header() {
    let case = async {
        let config = ConnectionConfig::default();
        let (conn, server) = first_header_case(config.clone(), config, LIMIT).await;
        let (sender, _receiver, _) = conn.split();
        sender.close().await.unwrap();
        let result = server.await.unwrap();
        assert!(matches!(result, Err(Error::PeerClosed)), "{result:?}");
    };
    tokio::time::timeout(LIMIT, case).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_header_does_not_wait_on_noise_connections() {
    let case = async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (checked_tx, checked_rx) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let security = ServerSecurity::noise(NoiseConfig::new(keypair()));
            let config = ConnectionConfig::default();
            let mut accepted = new_acceptor(security.clone(), &config, HANDSHAKE)
                .accept_handshake(stream, &HandshakeProgress::default())
                .await
                .unwrap();
            // A wait far past the test's limit: only returning at once passes.
            accepted.first_header(LIMIT * 10).await.unwrap();
            checked_tx.send(()).unwrap();
            echo_server(accepted.start()).await
        });
        let conn = new_connector(
            ClientSecurity::noise(NoiseConfig::new(keypair())),
            &ConnectionConfig::default(),
            HANDSHAKE,
        )
        .connect_tcp(addr)
        .await
        .unwrap();
        // The client sends nothing until the server is past the check.
        checked_rx.await.unwrap();
        run_client(conn, 10).await;
        assert_eq!(server.await.unwrap().unwrap(), 10);
    };
    tokio::time::timeout(LIMIT, case).await.unwrap();
}

#[cfg(feature = "certgen")]
mod tls {
    use super::*;
    use netproto_transport::tls::{CertificateAuthority, TlsAcceptor, TlsConnector, self_signed};

    fn names() -> Vec<String> {
        vec!["localhost".into(), "127.0.0.1".into()]
    }

    /// Runs the echo case over TLS and returns the server's view of the client certificate.
    async fn tls_case(connector: TlsConnector, acceptor: TlsAcceptor) -> Result<(), Error> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server_task = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let conn = new_acceptor(
                ServerSecurity::Tls(acceptor),
                &ConnectionConfig::default(),
                HANDSHAKE,
            )
            .accept(stream)
            .await?;
            echo_server(conn).await
        });
        let security = ClientSecurity::Tls {
            connector,
            server_name: "localhost".into(),
        };
        let conn = new_connector(security, &ConnectionConfig::default(), HANDSHAKE)
            .connect_tcp(addr)
            .await?;
        // With TLS 1.3 a refused client certificate shows up after the handshake.
        let (sender, mut receiver, _) = conn.split();
        sender
            .send(Envelope::new(
                1,
                MessageType::new("PING_ME").unwrap(),
                Bytes::from_static(b"x"),
            ))
            .await?;
        match receiver.recv().await? {
            Some(Incoming::Message(env)) => assert_eq!(env.request_id, 1),
            None => return Err(Error::PeerClosed),
            Some(other) => panic!("unexpected {other:?}"),
        }
        sender.close().await?;
        let echoed = tokio::time::timeout(LIMIT, server_task)
            .await
            .unwrap()
            .unwrap()?;
        assert_eq!(echoed, 1);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_server_auth_only() {
        let ca = CertificateAuthority::new("netproto test ca").unwrap();
        let server = ca.issue_server_cert(&names()).unwrap();
        let acceptor = TlsAcceptor::from_pem(
            server.cert_pem().as_bytes(),
            server.key_pem().as_bytes(),
            None,
            false,
        )
        .unwrap();
        let connector = TlsConnector::builder()
            .ca_pem(ca.cert_pem())
            .build()
            .unwrap();
        tokio::time::timeout(LIMIT, tls_case(connector, acceptor))
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_mutual_auth_accepts_a_known_client_and_refuses_others() {
        let ca = CertificateAuthority::new("netproto test ca").unwrap();
        let client_ca = CertificateAuthority::new("netproto client ca").unwrap();
        let server = ca.issue_server_cert(&names()).unwrap();
        let acceptor = TlsAcceptor::from_pem(
            server.cert_pem().as_bytes(),
            server.key_pem().as_bytes(),
            Some(client_ca.cert_pem().as_bytes()),
            true,
        )
        .unwrap();
        let client = client_ca.issue_client_cert("client-1").unwrap();
        let with_cert = TlsConnector::builder()
            .ca_pem(ca.cert_pem())
            .client_auth_pem(client.cert_pem(), client.key_pem())
            .build()
            .unwrap();
        tokio::time::timeout(LIMIT, tls_case(with_cert, acceptor.clone()))
            .await
            .unwrap()
            .unwrap();
        let without_cert = TlsConnector::builder()
            .ca_pem(ca.cert_pem())
            .build()
            .unwrap();
        let err = tokio::time::timeout(LIMIT, tls_case(without_cert, acceptor))
            .await
            .unwrap()
            .unwrap_err();
        // With TLS 1.3 the refusal arrives after the client's handshake: the
        // client sees it as a TLS alert, a reset, the end of the stream, or a
        // send on the connection the refusal already closed.
        assert!(
            matches!(
                err,
                Error::Tls(_) | Error::Io(_) | Error::PeerClosed | Error::Closed
            ),
            "{err:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_pins_apply_on_top_of_verification() {
        let ca = CertificateAuthority::new("netproto test ca").unwrap();
        let server = ca.issue_server_cert(&names()).unwrap();
        let acceptor = TlsAcceptor::from_pem(
            server.cert_pem().as_bytes(),
            server.key_pem().as_bytes(),
            None,
            false,
        )
        .unwrap();
        let pinned = TlsConnector::builder()
            .ca_pem(ca.cert_pem())
            .pin(server.spki_sha256())
            .build()
            .unwrap();
        tokio::time::timeout(LIMIT, tls_case(pinned, acceptor.clone()))
            .await
            .unwrap()
            .unwrap();
        let wrong_pin = TlsConnector::builder()
            .ca_pem(ca.cert_pem())
            .pin([7; 32])
            .build()
            .unwrap();
        let err = tokio::time::timeout(LIMIT, tls_case(wrong_pin, acceptor))
            .await
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, Error::PinMismatch), "{err:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_untrusted_self_signed_is_rejected_even_when_pinned() {
        let rogue = self_signed(&names()).unwrap();
        let acceptor = TlsAcceptor::from_pem(
            rogue.cert_pem().as_bytes(),
            rogue.key_pem().as_bytes(),
            None,
            false,
        )
        .unwrap();
        let ca = CertificateAuthority::new("the real ca").unwrap();
        let connector = TlsConnector::builder()
            .ca_pem(ca.cert_pem())
            .pin(rogue.spki_sha256())
            .build()
            .unwrap();
        let err = tokio::time::timeout(LIMIT, tls_case(connector, acceptor))
            .await
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, Error::Tls(_)), "{err:?}");
    }

    /// A one-way flood through TLS, with the reader and the writer task
    /// sharing the TLS stream, neither stalls nor loses a message.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_one_way_flood_does_not_stall() {
        let ca = CertificateAuthority::new("netproto test ca").unwrap();
        let server = ca.issue_server_cert(&names()).unwrap();
        let acceptor = TlsAcceptor::from_pem(
            server.cert_pem().as_bytes(),
            server.key_pem().as_bytes(),
            None,
            false,
        )
        .unwrap();
        let connector = TlsConnector::builder()
            .ca_pem(ca.cert_pem())
            .build()
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        const COUNT: u64 = 50_000;
        let server_task = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut conn = new_acceptor(
                ServerSecurity::Tls(acceptor),
                &ConnectionConfig::default(),
                HANDSHAKE,
            )
            .accept(stream)
            .await
            .unwrap();
            let mut received = 0u64;
            while let Some(item) = conn.recv().await.unwrap() {
                if let Incoming::Message(_) = item {
                    received += 1;
                }
            }
            received
        });
        let security = ClientSecurity::Tls {
            connector,
            server_name: "localhost".into(),
        };
        let conn = new_connector(security, &ConnectionConfig::default(), HANDSHAKE)
            .connect_tcp(addr)
            .await
            .unwrap();
        let flood = async {
            for id in 1..=COUNT {
                let env = Envelope::new(
                    id,
                    MessageType::new("X").unwrap(),
                    Bytes::from_static(&[7; 64]),
                );
                conn.send(env).await.unwrap();
            }
            conn.sender().close().await.unwrap();
            server_task.await.unwrap()
        };
        let received = tokio::time::timeout(LIMIT, flood)
            .await
            .expect("the flood stalled");
        assert_eq!(received, COUNT);
    }

    /// TLS from the first byte meets the other modes: a client that sends a
    /// preface in the clear is answered "mode not offered" in the clear, and
    /// a TLS client at a listener of another mode fails at once, both sides
    /// saying why.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_and_the_preface_modes_refuse_each_other_clearly() {
        let cert = self_signed(&names()).unwrap();
        let acceptor = TlsAcceptor::from_pem(
            cert.cert_pem().as_bytes(),
            cert.key_pem().as_bytes(),
            None,
            false,
        )
        .unwrap();
        let connector = TlsConnector::builder()
            .ca_pem(cert.cert_pem())
            .build()
            .unwrap();
        let tls_client = ClientSecurity::Tls {
            connector,
            server_name: "localhost".into(),
        };
        let cases = [
            (ClientSecurity::Plain, ServerSecurity::Tls(acceptor.clone())),
            (
                ClientSecurity::noise(NoiseConfig::new(keypair())),
                ServerSecurity::Tls(acceptor),
            ),
            (tls_client.clone(), ServerSecurity::Plain),
            (
                tls_client,
                ServerSecurity::noise(NoiseConfig::new(keypair())),
            ),
        ];
        for (client, server) in cases {
            let case = format!("{:?} client, {:?} server", client.mode(), server.mode());
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server_mode = server.mode();
            let server_task = tokio::spawn(async move {
                let (stream, _) = listener.accept().await.unwrap();
                new_acceptor(server, &ConnectionConfig::default(), HANDSHAKE)
                    .accept(stream)
                    .await
                    .map(drop)
            });
            let connector = new_connector(client.clone(), &ConnectionConfig::default(), HANDSHAKE);
            let err = tokio::time::timeout(LIMIT, connector.connect_tcp(addr))
                .await
                .unwrap()
                .unwrap_err();
            let server_err = tokio::time::timeout(LIMIT, server_task)
                .await
                .unwrap()
                .unwrap()
                .unwrap_err();
            if server_mode == netproto_wire::SecurityMode::Tls {
                assert!(
                    matches!(
                        err,
                        Error::Refused {
                            status: netproto_wire::PrefaceStatus::ModeNotOffered,
                            mode: netproto_wire::SecurityMode::Tls,
                            ..
                        }
                    ),
                    "{case}: {err:?}"
                );
                assert!(
                    matches!(server_err, Error::ModeMismatch { asked, .. } if asked == client.mode()),
                    "{case}: {server_err:?}"
                );
            } else {
                // The ClientHello cannot begin the preface magic: the server
                // closes at its first byte, and the client's handshake ends.
                assert!(server_err.is_protocol(), "{case}: {server_err:?}");
                assert!(
                    matches!(err, Error::Io(_) | Error::PeerClosed | Error::Tls(_)),
                    "{case}: {err:?}"
                );
            }
        }
    }
}
