//! TLS handshakes over real loopback TCP: server authentication, mutual TLS,
//! SPKI pinning, self-signed certificates, name checks and TLS 1.2.
//!
//! Every test binds `127.0.0.1:0` and is bounded by a timeout.

// Integration test: a failed unwrap, expect, panic or index is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use netproto_transport::Error;
use netproto_transport::tls::{
    self, CertificateAuthority, CertificateDer, GeneratedCert, TlsAcceptor, TlsConnector,
    TlsServerConfig,
};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use rustls::{CertificateError, ProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tracing::Instrument;

const LIMIT: Duration = Duration::from_secs(10);
const MESSAGE: &[u8] = b"ping over tls";

/// Runs `test` under [`LIMIT`], so a stuck handshake fails instead of hanging.
async fn bounded<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, test)
        .await
        .expect("test timed out")
}

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|&n| n.to_owned()).collect()
}

/// What the server saw: the client's certificate, if any, once a message was
/// echoed.
type ServerResult = Result<Option<CertificateDer<'static>>, Error>;

/// Accepts one connection on a fresh loopback listener, performs the TLS
/// handshake and echoes one message.
async fn spawn_echo_server(acceptor: TlsAcceptor) -> (SocketAddr, JoinHandle<ServerResult>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(
        async move {
            let (tcp, _peer) = listener.accept().await?;
            let mut tls = acceptor.accept(tcp).await?;
            let client_cert = tls::client_certificate(&tls).cloned();
            let mut buf = vec![0; MESSAGE.len()];
            tls.read_exact(&mut buf).await?;
            tls.write_all(&buf).await?;
            tls.shutdown().await?;
            Ok(client_cert)
        }
        .instrument(tracing::error_span!("server")),
    );
    (addr, task)
}

/// Connects to `addr`, performs the TLS handshake for `server_name` and
/// round-trips one message. Returns the negotiated protocol version.
async fn echo_client(
    connector: &TlsConnector,
    server_name: &str,
    addr: SocketAddr,
) -> Result<ProtocolVersion, Error> {
    async {
        let tcp = TcpStream::connect(addr).await?;
        let mut tls = connector.connect(server_name, tcp).await?;
        let version = tls.get_ref().1.protocol_version();
        tls.write_all(MESSAGE).await?;
        let mut buf = vec![0; MESSAGE.len()];
        tls.read_exact(&mut buf).await?;
        assert_eq!(buf, MESSAGE);
        Ok(version.expect("negotiated after the handshake"))
    }
    .instrument(tracing::error_span!("client"))
    .await
}

/// The server result, once its task has finished.
async fn server_result(task: JoinHandle<ServerResult>) -> ServerResult {
    task.await.expect("server task panicked")
}

fn acceptor(cert: &GeneratedCert, client_ca: Option<&str>, require: bool) -> TlsAcceptor {
    TlsAcceptor::from_pem(
        cert.cert_pem().as_bytes(),
        cert.key_pem().as_bytes(),
        client_ca.map(str::as_bytes),
        require,
    )
    .unwrap()
}

fn is_unknown_issuer(err: &Error) -> bool {
    matches!(
        err,
        Error::Tls(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer
        ))
    )
}

/// A connector trusting `ca_pem` that authenticates with `client`.
fn client_connector(ca_pem: &str, client: &GeneratedCert) -> TlsConnector {
    TlsConnector::builder()
        .ca_pem(ca_pem)
        .client_auth_pem(client.cert_pem(), client.key_pem())
        .build()
        .unwrap()
}

#[tokio::test]
async fn server_auth_with_ca_issued_certificate() {
    bounded(async {
        let ca = CertificateAuthority::new("server ca").unwrap();
        let server_cert = ca.issue_server_cert(&names(&["localhost"])).unwrap();
        let (addr, server) = spawn_echo_server(acceptor(&server_cert, None, false)).await;
        let connector = TlsConnector::builder()
            .ca_pem(ca.cert_pem())
            .build()
            .unwrap();
        let version = echo_client(&connector, "localhost", addr).await.unwrap();
        assert_eq!(version, ProtocolVersion::TLSv1_3);
        assert_eq!(server_result(server).await.unwrap(), None);
    })
    .await;
}

#[tokio::test]
async fn server_auth_by_ip_address() {
    bounded(async {
        let ca = CertificateAuthority::new("server ca").unwrap();
        let server_cert = ca.issue_server_cert(&names(&["127.0.0.1"])).unwrap();
        let (addr, server) = spawn_echo_server(acceptor(&server_cert, None, false)).await;
        let connector = TlsConnector::builder()
            .ca_pem(ca.cert_pem())
            .build()
            .unwrap();
        echo_client(&connector, "127.0.0.1", addr).await.unwrap();
        server_result(server).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn server_certificate_is_visible_to_the_client() {
    bounded(async {
        let ca = CertificateAuthority::new("server ca").unwrap();
        let server_cert = ca.issue_server_cert(&names(&["localhost"])).unwrap();
        let (addr, server) = spawn_echo_server(acceptor(&server_cert, None, false)).await;
        let connector = TlsConnector::builder()
            .ca_pem(ca.cert_pem())
            .build()
            .unwrap();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut tls = connector.connect("localhost", tcp).await.unwrap();
        let seen = tls::server_certificate(&tls).unwrap();
        assert_eq!(seen, server_cert.cert_der());
        tls.write_all(MESSAGE).await.unwrap();
        let mut buf = vec![0; MESSAGE.len()];
        tls.read_exact(&mut buf).await.unwrap();
        server_result(server).await.unwrap();
    })
    .await;
}

struct Mtls {
    server_ca: CertificateAuthority,
    client_ca: CertificateAuthority,
    server_cert: GeneratedCert,
}

fn mtls() -> Mtls {
    let server_ca = CertificateAuthority::new("server ca").unwrap();
    let client_ca = CertificateAuthority::new("client ca").unwrap();
    let server_cert = server_ca.issue_server_cert(&names(&["localhost"])).unwrap();
    Mtls {
        server_ca,
        client_ca,
        server_cert,
    }
}

#[tokio::test]
async fn mutual_tls_client_with_certificate_from_client_ca() {
    bounded(async {
        let m = mtls();
        let client_cert = m.client_ca.issue_client_cert("client-1").unwrap();
        let acceptor = acceptor(&m.server_cert, Some(m.client_ca.cert_pem()), true);
        let (addr, server) = spawn_echo_server(acceptor).await;
        let connector = client_connector(m.server_ca.cert_pem(), &client_cert);
        echo_client(&connector, "localhost", addr).await.unwrap();
        let seen = server_result(server).await.unwrap().expect("a client cert");
        assert_eq!(&seen, client_cert.cert_der());
        assert_eq!(tls::spki_sha256(&seen).unwrap(), client_cert.spki_sha256());
    })
    .await;
}

#[tokio::test]
async fn mutual_tls_client_without_certificate_fails() {
    bounded(async {
        let m = mtls();
        let acceptor = acceptor(&m.server_cert, Some(m.client_ca.cert_pem()), true);
        let (addr, server) = spawn_echo_server(acceptor).await;
        let connector = TlsConnector::builder()
            .ca_pem(m.server_ca.cert_pem())
            .build()
            .unwrap();
        // With TLS 1.3 the client learns of the rejection on its first read.
        assert!(echo_client(&connector, "localhost", addr).await.is_err());
        let err = server_result(server).await.unwrap_err();
        assert!(
            matches!(err, Error::Tls(rustls::Error::NoCertificatesPresented)),
            "{err:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn mutual_tls_client_with_certificate_from_another_ca_fails() {
    bounded(async {
        let m = mtls();
        let other_ca = CertificateAuthority::new("other ca").unwrap();
        let client_cert = other_ca.issue_client_cert("intruder").unwrap();
        let acceptor = acceptor(&m.server_cert, Some(m.client_ca.cert_pem()), true);
        let (addr, server) = spawn_echo_server(acceptor).await;
        let connector = client_connector(m.server_ca.cert_pem(), &client_cert);
        assert!(echo_client(&connector, "localhost", addr).await.is_err());
        let err = server_result(server).await.unwrap_err();
        assert!(is_unknown_issuer(&err), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn mutual_tls_optional_accepts_clients_without_certificate() {
    bounded(async {
        let m = mtls();
        let acceptor = acceptor(&m.server_cert, Some(m.client_ca.cert_pem()), false);

        let (addr, server) = spawn_echo_server(acceptor.clone()).await;
        let anonymous = TlsConnector::builder()
            .ca_pem(m.server_ca.cert_pem())
            .build()
            .unwrap();
        echo_client(&anonymous, "localhost", addr).await.unwrap();
        assert_eq!(server_result(server).await.unwrap(), None);

        // A presented certificate is still verified.
        let client_cert = m.client_ca.issue_client_cert("client-2").unwrap();
        let (addr, server) = spawn_echo_server(acceptor.clone()).await;
        let authenticated = client_connector(m.server_ca.cert_pem(), &client_cert);
        echo_client(&authenticated, "localhost", addr)
            .await
            .unwrap();
        assert_eq!(
            server_result(server).await.unwrap().as_ref(),
            Some(client_cert.cert_der())
        );

        let other_ca = CertificateAuthority::new("other ca").unwrap();
        let bad_cert = other_ca.issue_client_cert("intruder").unwrap();
        let (addr, server) = spawn_echo_server(acceptor).await;
        let intruder = client_connector(m.server_ca.cert_pem(), &bad_cert);
        assert!(echo_client(&intruder, "localhost", addr).await.is_err());
        let err = server_result(server).await.unwrap_err();
        assert!(is_unknown_issuer(&err), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn pin_match_succeeds() {
    bounded(async {
        let ca = CertificateAuthority::new("server ca").unwrap();
        let server_cert = ca.issue_server_cert(&names(&["localhost"])).unwrap();
        let (addr, server) = spawn_echo_server(acceptor(&server_cert, None, false)).await;
        // Any one of several pins matching is enough.
        let connector = TlsConnector::builder()
            .ca_pem(ca.cert_pem())
            .pins([[7; 32], server_cert.spki_sha256(), [9; 32]])
            .build()
            .unwrap();
        echo_client(&connector, "localhost", addr).await.unwrap();
        server_result(server).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn pin_mismatch_fails_with_pin_mismatch() {
    bounded(async {
        let ca = CertificateAuthority::new("server ca").unwrap();
        let server_cert = ca.issue_server_cert(&names(&["localhost"])).unwrap();
        let other = ca.issue_server_cert(&names(&["localhost"])).unwrap();
        let (addr, server) = spawn_echo_server(acceptor(&server_cert, None, false)).await;
        // The chain is valid for the name; only the pin is wrong. The CA's
        // own key is not a pin for its leaf either.
        let connector = TlsConnector::builder()
            .ca_pem(ca.cert_pem())
            .pin(other.spki_sha256())
            .pin(tls::spki_sha256(ca.cert_der()).unwrap())
            .build()
            .unwrap();
        let err = echo_client(&connector, "localhost", addr)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::PinMismatch), "{err:?}");
        // The server sees the client's alert.
        assert!(server_result(server).await.is_err());
    })
    .await;
}

#[tokio::test]
async fn untrusted_self_signed_certificate_is_rejected_even_when_pinned() {
    bounded(async {
        let server_cert = tls::self_signed(&names(&["localhost"])).unwrap();
        let unrelated_ca = CertificateAuthority::new("unrelated ca").unwrap();
        let (addr, server) = spawn_echo_server(acceptor(&server_cert, None, false)).await;
        let connector = TlsConnector::builder()
            .ca_pem(unrelated_ca.cert_pem())
            .pin(server_cert.spki_sha256())
            .build()
            .unwrap();
        let err = echo_client(&connector, "localhost", addr)
            .await
            .unwrap_err();
        assert!(is_unknown_issuer(&err), "{err:?}");
        assert!(server_result(server).await.is_err());
    })
    .await;
}

#[tokio::test]
async fn self_signed_certificate_as_root_and_pinned_works() {
    bounded(async {
        let server_cert = tls::self_signed(&names(&["localhost", "127.0.0.1"])).unwrap();
        let acceptor = acceptor(&server_cert, None, false);

        let (addr, server) = spawn_echo_server(acceptor.clone()).await;
        let pinned = TlsConnector::builder()
            .ca_pem(server_cert.cert_pem())
            .pin(server_cert.spki_sha256())
            .build()
            .unwrap();
        echo_client(&pinned, "127.0.0.1", addr).await.unwrap();
        server_result(server).await.unwrap();

        // Pins still apply on top of a self-signed root.
        let (addr, server) = spawn_echo_server(acceptor).await;
        let wrong_pin = TlsConnector::builder()
            .ca_pem(server_cert.cert_pem())
            .pin([0; 32])
            .build()
            .unwrap();
        let err = echo_client(&wrong_pin, "localhost", addr)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::PinMismatch), "{err:?}");
        assert!(server_result(server).await.is_err());
    })
    .await;
}

#[tokio::test]
async fn wrong_server_name_fails() {
    bounded(async {
        let ca = CertificateAuthority::new("server ca").unwrap();
        let server_cert = ca.issue_server_cert(&names(&["localhost"])).unwrap();
        let (addr, server) = spawn_echo_server(acceptor(&server_cert, None, false)).await;
        // Pinning the right key does not excuse the wrong name.
        let connector = TlsConnector::builder()
            .ca_pem(ca.cert_pem())
            .pin(server_cert.spki_sha256())
            .build()
            .unwrap();
        let err = echo_client(&connector, "other.example", addr)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Tls(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                        | CertificateError::NotValidForNameContext { .. }
                ))
            ),
            "{err:?}"
        );
        assert!(server_result(server).await.is_err());
    })
    .await;
}

#[tokio::test]
async fn invalid_server_name_is_refused_before_the_handshake() {
    bounded(async {
        let cert = tls::self_signed(&names(&["localhost"])).unwrap();
        let connector = TlsConnector::builder()
            .ca_pem(cert.cert_pem())
            .build()
            .unwrap();
        for bad in ["", "not a name", "bad..name", "[::1]"] {
            let (client_io, _server_io) = tokio::io::duplex(1024);
            let err = connector.connect(bad, client_io).await.unwrap_err();
            assert!(
                matches!(&err, Error::InvalidServerName(name) if name == bad),
                "{bad:?}: {err:?}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn tls12_only_client_still_connects() {
    bounded(async {
        let ca = CertificateAuthority::new("server ca").unwrap();
        let server_cert = ca.issue_server_cert(&names(&["localhost"])).unwrap();
        let (addr, server) = spawn_echo_server(acceptor(&server_cert, None, false)).await;

        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der().clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![tls::ALPN.to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        assert_eq!(
            tls.get_ref().1.protocol_version(),
            Some(ProtocolVersion::TLSv1_2)
        );
        tls.write_all(MESSAGE).await.unwrap();
        let mut buf = vec![0; MESSAGE.len()];
        tls.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, MESSAGE);
        server_result(server).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn tls12_mutual_tls_and_pins() {
    // A TLS 1.2-only server: the same client, pins and client certificate
    // work over TLS 1.2, and a pin mismatch is still told apart.
    bounded(async {
        let m = mtls();
        let client_cert = m.client_ca.issue_client_cert("client-3").unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut client_roots = rustls::RootCertStore::empty();
        client_roots.add(m.client_ca.cert_der().clone()).unwrap();
        let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(client_roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let key = PrivateKeyDer::from_pem_slice(m.server_cert.key_pem().as_bytes()).unwrap();
        let mut server_config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(vec![m.server_cert.cert_der().clone()], key)
            .unwrap();
        server_config.alpn_protocols = vec![tls::ALPN.to_vec()];
        let tls12_acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));

        for (pin, expect_ok) in [(m.server_cert.spki_sha256(), true), ([1; 32], false)] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let acceptor = tls12_acceptor.clone();
            let server = tokio::spawn(async move {
                let (tcp, _) = listener.accept().await?;
                let mut tls = acceptor.accept(tcp).await?;
                let mut buf = vec![0; MESSAGE.len()];
                tls.read_exact(&mut buf).await?;
                tls.write_all(&buf).await?;
                tls.shutdown().await?;
                Ok::<_, std::io::Error>(())
            });
            let connector = TlsConnector::builder()
                .ca_pem(m.server_ca.cert_pem())
                .client_auth_pem(client_cert.cert_pem(), client_cert.key_pem())
                .pin(pin)
                .build()
                .unwrap();
            let result = echo_client(&connector, "localhost", addr).await;
            if expect_ok {
                assert_eq!(result.unwrap(), ProtocolVersion::TLSv1_2);
                server.await.unwrap().unwrap();
            } else {
                let err = result.unwrap_err();
                assert!(matches!(err, Error::PinMismatch), "{err:?}");
                assert!(server.await.unwrap().is_err());
            }
        }
    })
    .await;
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!(
            "netproto-tls-it-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn mutual_tls_from_pem_files() {
    bounded(async {
        let dir = TempDir::new();
        let path = |name: &str| dir.0.join(name);
        let m = mtls();
        let client_cert = m.client_ca.issue_client_cert("file-client").unwrap();
        m.server_cert
            .write_pem_files(&path("server.pem"), &path("server.key"))
            .unwrap();
        client_cert
            .write_pem_files(&path("client.pem"), &path("client.key"))
            .unwrap();
        std::fs::write(path("server-ca.pem"), m.server_ca.cert_pem()).unwrap();
        std::fs::write(path("client-ca.pem"), m.client_ca.cert_pem()).unwrap();

        let mut config = TlsServerConfig::default();
        config.cert_path = path("server.pem");
        config.key_path = path("server.key");
        config.client_ca_path = Some(path("client-ca.pem"));
        let (addr, server) = spawn_echo_server(TlsAcceptor::new(&config).unwrap()).await;
        let connector = TlsConnector::builder()
            .ca_file(path("server-ca.pem"))
            .client_auth_files(path("client.pem"), path("client.key"))
            .pin(m.server_cert.spki_sha256())
            .build()
            .unwrap();
        echo_client(&connector, "localhost", addr).await.unwrap();
        assert_eq!(
            server_result(server).await.unwrap().as_ref(),
            Some(client_cert.cert_der())
        );
    })
    .await;
}

/// A rustls client trusting `ca` that offers `alpn` (nothing when empty).
fn rustls_client(ca: &CertificateAuthority, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|name| name.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn a_client_without_the_netproto_alpn_is_refused_with_an_alert() {
    bounded(async {
        let ca = CertificateAuthority::new("server ca").unwrap();
        let server_cert = ca.issue_server_cert(&names(&["localhost"])).unwrap();
        for offered in [&[][..], &[&b"h2"[..], b"http/1.1"][..]] {
            let (addr, server) = spawn_echo_server(acceptor(&server_cert, None, false)).await;
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let err = rustls_client(&ca, offered)
                .connect(name, tcp)
                .await
                .unwrap_err();
            let alert = err
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>());
            assert!(
                matches!(
                    alert,
                    Some(rustls::Error::AlertReceived(
                        rustls::AlertDescription::NoApplicationProtocol
                    ))
                ),
                "offering {offered:?}: {err:?}"
            );
            let err = server_result(server).await.unwrap_err();
            assert!(
                matches!(err, Error::Tls(rustls::Error::NoApplicationProtocol)),
                "offering {offered:?}: {err:?}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn the_server_selects_netproto_alpn_and_sees_the_dns_name_as_sni() {
    bounded(async {
        let ca = CertificateAuthority::new("server ca").unwrap();
        let server_cert = ca
            .issue_server_cert(&names(&["localhost", "127.0.0.1"]))
            .unwrap();
        let connector = TlsConnector::builder()
            .ca_pem(ca.cert_pem())
            .build()
            .unwrap();
        // A DNS name travels as SNI; an IP address never does (RFC 6066).
        for (dialled, sni) in [("localhost", Some("localhost")), ("127.0.0.1", None)] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let acceptor = acceptor(&server_cert, None, false);
            let server = tokio::spawn(async move {
                let (tcp, _) = listener.accept().await?;
                let tls = acceptor.accept(tcp).await?;
                let (_, session) = tls.get_ref();
                Ok::<_, Error>((
                    session.server_name().map(str::to_owned),
                    session.alpn_protocol().map(<[u8]>::to_vec),
                ))
            });
            let tcp = TcpStream::connect(addr).await.unwrap();
            let tls = connector.connect(dialled, tcp).await.unwrap();
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(tls::ALPN));
            let (seen_sni, seen_alpn) = server.await.unwrap().unwrap();
            assert_eq!(seen_sni.as_deref(), sni, "dialling {dialled}");
            assert_eq!(seen_alpn.as_deref(), Some(tls::ALPN));
        }
    })
    .await;
}

#[tokio::test]
async fn a_server_that_selects_no_alpn_is_refused_by_the_client() {
    bounded(async {
        let ca = CertificateAuthority::new("server ca").unwrap();
        let server_cert = ca.issue_server_cert(&names(&["localhost"])).unwrap();
        let key = PrivateKeyDer::from_pem_slice(server_cert.key_pem().as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![server_cert.cert_der().clone()], key)
        .unwrap();
        let plain_tls = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let mut tls = plain_tls.accept(tcp).await?;
            let mut buf = [0; 1];
            // The client gives up after its handshake: nothing arrives.
            let n = tls.read(&mut buf).await.unwrap_or(0);
            Ok::<_, std::io::Error>(n)
        });
        let connector = TlsConnector::builder()
            .ca_pem(ca.cert_pem())
            .build()
            .unwrap();
        let err = echo_client(&connector, "localhost", addr)
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Tls(rustls::Error::NoApplicationProtocol)),
            "{err:?}"
        );
        assert_eq!(server.await.unwrap().unwrap(), 0);
    })
    .await;
}
