//! TLS over any stream, with tokio-rustls and the ring provider.
//!
//! - [`TlsAcceptor`] is the server side: a certificate chain and private key,
//!   and optionally a client CA for mutual TLS (client certificates required
//!   or optional).
//! - [`TlsConnector`] is the client side: trust roots from a CA PEM, an
//!   optional client certificate for mutual TLS, and optional SHA-256 pins of
//!   the server's SubjectPublicKeyInfo ([`spki_sha256`]).
//! - `self_signed`, `write_self_signed` and `CertificateAuthority`
//!   generate certificates for development and tests (with the `certgen`
//!   feature, on by default).
//!
//! Both sides speak TLS 1.3 and TLS 1.2 only, with rustls's default cipher
//! suites from the ring provider (all AEAD with ephemeral key exchange), and
//! name the application protocol [`ALPN`] (`netproto/1`): a server refuses a
//! client that does not offer it, a client a server that does not select it. There are no system roots: a client trusts
//! exactly the CA certificates it is given. A self-signed server certificate
//! is trusted by adding the certificate itself as a root.
//!
//! Pins are checked **in addition to** full chain, name and signature
//! verification, never instead: a certificate that does not chain to a
//! trusted root is rejected whatever its pin, and a valid certificate whose
//! key matches no pin fails with [`Error::PinMismatch`].
//!
//! This module does not apply timeouts; the caller bounds
//! [`TlsAcceptor::accept`] and [`TlsConnector::connect`] (the connection layer
//! does, with its handshake timeout). It does not check revocation (no CRL or
//! OCSP).
//!
//! # Examples
//!
//! A handshake over an in-memory pipe, with a freshly generated self-signed
//! certificate that the client trusts and pins:
//!
//! ```
//! use netproto_transport::tls::{self, TlsAcceptor, TlsConnector};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[cfg(feature = "certgen")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cert = tls::self_signed(&["localhost".to_owned()])?;
//! let acceptor = TlsAcceptor::from_pem(
//!     cert.cert_pem().as_bytes(),
//!     cert.key_pem().as_bytes(),
//!     None,  // no client CA: server authentication only
//!     false, // (client auth only matters with a client CA)
//! )?;
//! let connector = TlsConnector::builder()
//!     .ca_pem(cert.cert_pem())
//!     .pin(cert.spki_sha256())
//!     .build()?;
//!
//! let runtime = tokio::runtime::Builder::new_current_thread().build()?;
//! runtime.block_on(async {
//!     let (client_io, server_io) = tokio::io::duplex(16 * 1024);
//!     let server = async {
//!         let mut tls = acceptor.accept(server_io).await?;
//!         let mut buf = [0; 5];
//!         tls.read_exact(&mut buf).await?;
//!         tls.write_all(&buf).await?;
//!         tls.flush().await?;
//!         Ok::<_, netproto_transport::Error>(())
//!     };
//!     let client = async {
//!         let mut tls = connector.connect("localhost", client_io).await?;
//!         tls.write_all(b"hello").await?;
//!         let mut buf = [0; 5];
//!         tls.read_exact(&mut buf).await?;
//!         assert_eq!(&buf, b"hello");
//!         Ok::<_, netproto_transport::Error>(())
//!     };
//!     let (server, client) = tokio::join!(server, client);
//!     server?;
//!     client
//! })?;
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "certgen"))]
//! # fn main() {}
//! ```
//!
//! Over TCP, with files:
//!
//! ```no_run
//! use netproto_transport::tls::{TlsAcceptor, TlsConnector, TlsServerConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = TlsServerConfig::default();
//! config.cert_path = "server.pem".into();
//! config.key_path = "server.key".into();
//! config.client_ca_path = Some("clients-ca.pem".into());
//! let acceptor = TlsAcceptor::new(&config)?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7000").await?;
//! let (tcp, _peer) = listener.accept().await?;
//! let tls = acceptor.accept(tcp).await?;
//! let client_cert = netproto_transport::tls::client_certificate(&tls);
//!
//! let connector = TlsConnector::builder()
//!     .ca_file("ca.pem")
//!     .client_auth_files("client.pem", "client.key")
//!     .build()?;
//! let tcp = tokio::net::TcpStream::connect("127.0.0.1:7000").await?;
//! let tls = connector.connect("localhost", tcp).await?;
//! # Ok(())
//! # }
//! ```

mod alpn;
#[cfg(feature = "certgen")]
mod certgen;
mod pem;
mod spki;
mod verifier;

#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::{PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_rustls::server::{StartHandshake, TlsStream as ServerTlsStream};
use zeroize::Zeroizing;

use crate::{Error, SetupError};
use pem::Source;

pub use alpn::ALPN;
pub(crate) use alpn::HANDSHAKE_RECORD;
#[cfg(feature = "certgen")]
pub use certgen::{CertificateAuthority, GeneratedCert, self_signed, write_self_signed};
pub use rustls_pki_types::CertificateDer;
pub use spki::spki_sha256;

/// The protocol versions both sides offer, most preferred first.
static VERSIONS: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The ring provider with rustls's default cipher suites and key exchanges.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Files for a TLS server: its certificate and key, and optionally a client CA
/// for mutual TLS.
///
/// All files are PEM. Build a [`TlsAcceptor`] from it with
/// [`TlsAcceptor::new`].
#[non_exhaustive]
#[derive(Debug, Clone)]
pub struct TlsServerConfig {
    /// The server's certificate chain: the end-entity certificate first, then
    /// any intermediates. Required.
    pub cert_path: PathBuf,
    /// The private key of the end-entity certificate (PKCS#8, PKCS#1 or SEC1).
    /// Required.
    pub key_path: PathBuf,
    /// CA certificates that issue client certificates. `None` (the default)
    /// turns mutual TLS off: clients are not asked for a certificate.
    pub client_ca_path: Option<PathBuf>,
    /// With a client CA: `true` (the default) rejects clients without a
    /// certificate; `false` accepts them, and only verifies a certificate if
    /// one is presented. Ignored without a client CA.
    pub require_client_auth: bool,
}

impl Default for TlsServerConfig {
    fn default() -> Self {
        Self {
            cert_path: PathBuf::new(),
            key_path: PathBuf::new(),
            client_ca_path: None,
            require_client_auth: true,
        }
    }
}

/// The server side of TLS: performs handshakes on accepted streams.
///
/// Cheap to clone; clones share one configuration.
#[derive(Clone)]
pub struct TlsAcceptor {
    inner: tokio_rustls::TlsAcceptor,
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor").finish_non_exhaustive()
    }
}

impl TlsAcceptor {
    /// Builds an acceptor from the PEM files named in `config`.
    ///
    /// # Errors
    ///
    /// [`SetupError::Config`] if `cert_path` or `key_path` is empty,
    /// [`SetupError::Pem`] if a file cannot be read or holds no certificate or
    /// key, [`SetupError::Tls`] if a certificate or the key is malformed or
    /// they do not match.
    pub fn new(config: &TlsServerConfig) -> Result<Self, SetupError> {
        if config.cert_path.as_os_str().is_empty() {
            return Err(SetupError::Config("tls server certificate path is not set"));
        }
        if config.key_path.as_os_str().is_empty() {
            return Err(SetupError::Config("tls server private key path is not set"));
        }
        let chain = Source::File(&config.cert_path).certs("certificate chain")?;
        let key = Source::File(&config.key_path).private_key()?;
        let client_roots = match &config.client_ca_path {
            Some(path) => Some(Source::File(path).roots("client ca certificates")?),
            None => None,
        };
        Self::from_parts(chain, key, client_roots, config.require_client_auth)
    }

    /// Builds an acceptor from PEM data in memory.
    ///
    /// `cert_pem` holds the chain, end-entity certificate first; `key_pem` its
    /// private key. With `client_ca_pem`, clients are asked for a certificate
    /// issued by one of those CAs, and `require_client_auth` decides whether
    /// clients without one are rejected (`true`) or accepted (`false`).
    ///
    /// # Errors
    ///
    /// [`SetupError::PemData`] if the data holds no certificate or key or is
    /// not PEM, [`SetupError::Tls`] if a certificate or the key is malformed or
    /// they do not match.
    pub fn from_pem(
        cert_pem: &[u8],
        key_pem: &[u8],
        client_ca_pem: Option<&[u8]>,
        require_client_auth: bool,
    ) -> Result<Self, SetupError> {
        let chain = Source::Data(cert_pem).certs("certificate chain")?;
        let key = Source::Data(key_pem).private_key()?;
        let client_roots = match client_ca_pem {
            Some(pem) => Some(Source::Data(pem).roots("client ca certificates")?),
            None => None,
        };
        Self::from_parts(chain, key, client_roots, require_client_auth)
    }

    fn from_parts(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        client_roots: Option<RootCertStore>,
        require_client_auth: bool,
    ) -> Result<Self, SetupError> {
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(VERSIONS)?;
        let builder = match client_roots {
            None => builder.with_no_client_auth(),
            Some(roots) => {
                let mut verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                if !require_client_auth {
                    verifier = verifier.allow_unauthenticated();
                }
                builder
                    .with_client_cert_verifier(verifier.build().map_err(verifier::verifier_error)?)
            }
        };
        let mut config = builder.with_single_cert(chain, key)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(Self {
            inner: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Performs the server side of the handshake on `stream`.
    ///
    /// The client must offer the ALPN protocol [`ALPN`]; a ClientHello
    /// without it is answered with the fatal alert `no_application_protocol`.
    /// With mutual TLS, the client's certificate is then available through
    /// [`client_certificate`].
    ///
    /// # Errors
    ///
    /// [`Error::Tls`] if the handshake fails (including a rejected client
    /// certificate, and `rustls::Error::NoApplicationProtocol` for a client
    /// that does not offer [`ALPN`]), [`Error::Io`] if the stream fails or
    /// closes. The failure is logged at `debug`.
    pub async fn accept<S>(&self, stream: S) -> Result<ServerTlsStream<S>, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let hello = self
            .client_hello(rustls::server::Acceptor::default(), stream)
            .await?;
        self.complete(hello).await
    }

    /// Reads the client's ClientHello, into `started` (which may hold its
    /// first bytes already).
    pub(crate) async fn client_hello<S>(
        &self,
        started: rustls::server::Acceptor,
        stream: S,
    ) -> Result<StartHandshake<S>, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        tokio_rustls::LazyConfigAcceptor::new(started, stream)
            .await
            .map_err(handshake_error)
    }

    /// Finishes the handshake [`client_hello`](Self::client_hello) began:
    /// refuses a client that does not offer [`ALPN`], then answers.
    pub(crate) async fn complete<S>(
        &self,
        mut hello: StartHandshake<S>,
    ) -> Result<ServerTlsStream<S>, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if !alpn::offers_netproto(&hello.client_hello()) {
            tracing::debug!("tls client did not offer the netproto/1 application protocol");
            // The refusal is best effort: the connection ends either way.
            if hello
                .io
                .write_all(&alpn::NO_APPLICATION_PROTOCOL_ALERT)
                .await
                .is_ok()
            {
                let _ = hello.io.shutdown().await;
            }
            return Err(Error::Tls(rustls::Error::NoApplicationProtocol));
        }
        hello
            .into_stream(self.inner.config().clone())
            .await
            .map_err(handshake_error)
    }
}

/// The certificate the client presented, after a handshake with mutual TLS.
///
/// `None` if mutual TLS is off, or if it is optional and the client sent no
/// certificate. A returned certificate has been verified against the client
/// CA.
pub fn client_certificate<S>(
    stream: &tokio_rustls::server::TlsStream<S>,
) -> Option<&CertificateDer<'static>> {
    stream.get_ref().1.peer_certificates()?.first()
}

/// The server's end-entity certificate, after a handshake.
pub fn server_certificate<S>(
    stream: &tokio_rustls::client::TlsStream<S>,
) -> Option<&CertificateDer<'static>> {
    stream.get_ref().1.peer_certificates()?.first()
}

/// The client side of TLS: performs handshakes on connected streams.
///
/// Build one with [`TlsConnector::builder`]. Cheap to clone; clones share one
/// configuration and session cache.
#[derive(Clone)]
pub struct TlsConnector {
    inner: tokio_rustls::TlsConnector,
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector").finish_non_exhaustive()
    }
}

impl TlsConnector {
    /// Starts building a connector. At least one trusted CA is required.
    pub fn builder() -> TlsConnectorBuilder {
        TlsConnectorBuilder::default()
    }

    /// Performs the client side of the handshake on `stream`, verifying the
    /// server's certificate for `server_name` (a DNS name or an IP address).
    ///
    /// The chain must lead to a configured root and be valid for
    /// `server_name`; then, if pins are configured, the end-entity
    /// certificate's key must match one of them.
    ///
    /// The client offers the ALPN protocol [`ALPN`] and requires the server
    /// to select it. It sends `server_name` as SNI when it is a DNS name; an
    /// IP address is never sent there (RFC 6066 §3), and the certificate is
    /// then checked for that address.
    ///
    /// With TLS 1.3 the client finishes its handshake before the server has
    /// checked the client certificate, so a server rejecting it shows up as
    /// an error on the first read rather than here.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidServerName`] if `server_name` is neither a DNS name nor
    /// an IP address, [`Error::PinMismatch`] if the certificate is valid but
    /// matches no pin, [`Error::Tls`] for any other handshake failure (for
    /// example an untrusted certificate, a name mismatch, or
    /// `rustls::Error::NoApplicationProtocol` from a server that does not
    /// select [`ALPN`]), [`Error::Io`] if
    /// the stream fails or closes. The failure is logged at `debug`.
    pub async fn connect<S>(
        &self,
        server_name: &str,
        stream: S,
    ) -> Result<tokio_rustls::client::TlsStream<S>, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| Error::InvalidServerName(server_name.to_owned()))?;
        let stream = self
            .inner
            .connect(name, stream)
            .await
            .map_err(handshake_error)?;
        // rustls goes on when the server selects no protocol: a server that
        // does not speak netproto/1 over TLS is refused here.
        if stream.get_ref().1.alpn_protocol() != Some(ALPN) {
            tracing::debug!("tls server did not select the netproto/1 application protocol");
            return Err(Error::Tls(rustls::Error::NoApplicationProtocol));
        }
        Ok(stream)
    }
}

/// Builds a [`TlsConnector`]: trust roots, an optional client certificate and
/// optional SPKI pins.
///
/// Setters only record their input; files and PEM data are read and checked
/// by [`build`](Self::build).
#[derive(Default)]
pub struct TlsConnectorBuilder {
    roots: Vec<OwnedSource>,
    client_auth: Option<(OwnedSource, OwnedSource)>,
    pins: Vec<[u8; 32]>,
}

impl fmt::Debug for TlsConnectorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnectorBuilder")
            .field("roots", &self.roots.len())
            .field("client_auth", &self.client_auth.is_some())
            .field("pins", &self.pins.len())
            .finish()
    }
}

/// PEM input recorded by the builder. Data is wiped on drop, since it may be
/// a private key.
enum OwnedSource {
    File(PathBuf),
    Data(Zeroizing<Vec<u8>>),
}

impl OwnedSource {
    fn borrow(&self) -> Source<'_> {
        match self {
            Self::File(path) => Source::File(path),
            Self::Data(data) => Source::Data(data),
        }
    }
}

impl TlsConnectorBuilder {
    /// Trusts the CA certificates in `pem` (one or more). A self-signed
    /// server certificate can be trusted by passing it here.
    ///
    /// May be called several times; all the CAs are trusted.
    pub fn ca_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.roots
            .push(OwnedSource::Data(Zeroizing::new(pem.as_ref().to_vec())));
        self
    }

    /// Trusts the CA certificates in the PEM file at `path`.
    ///
    /// May be called several times; all the CAs are trusted.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.roots.push(OwnedSource::File(path.into()));
        self
    }

    /// Presents this client certificate chain (end-entity first) and proves
    /// possession of `key_pem`, for servers that ask for mutual TLS.
    ///
    /// Replaces an earlier client certificate.
    pub fn client_auth_pem(
        mut self,
        cert_pem: impl AsRef<[u8]>,
        key_pem: impl AsRef<[u8]>,
    ) -> Self {
        self.client_auth = Some((
            OwnedSource::Data(Zeroizing::new(cert_pem.as_ref().to_vec())),
            OwnedSource::Data(Zeroizing::new(key_pem.as_ref().to_vec())),
        ));
        self
    }

    /// Like [`client_auth_pem`](Self::client_auth_pem), reading PEM files.
    pub fn client_auth_files(
        mut self,
        cert_path: impl Into<PathBuf>,
        key_path: impl Into<PathBuf>,
    ) -> Self {
        self.client_auth = Some((
            OwnedSource::File(cert_path.into()),
            OwnedSource::File(key_path.into()),
        ));
        self
    }

    /// Accepts the server only if its end-entity certificate's
    /// SubjectPublicKeyInfo has this SHA-256 (see [`spki_sha256`]).
    ///
    /// May be called several times: any one pin matching is enough (list the
    /// next key's pin before rotating). Pins apply on top of normal
    /// verification, never instead of it.
    pub fn pin(mut self, spki_sha256: [u8; 32]) -> Self {
        self.pins.push(spki_sha256);
        self
    }

    /// Adds several pins; see [`pin`](Self::pin).
    pub fn pins(mut self, pins: impl IntoIterator<Item = [u8; 32]>) -> Self {
        self.pins.extend(pins);
        self
    }

    /// Reads the configured files and PEM data and builds the connector.
    ///
    /// # Errors
    ///
    /// [`SetupError::Config`] if no CA was given, [`SetupError::Pem`] or
    /// [`SetupError::PemData`] if a file cannot be read or holds no
    /// certificate or key, [`SetupError::Tls`] if a certificate or key is
    /// malformed or the client certificate and key do not match.
    pub fn build(self) -> Result<TlsConnector, SetupError> {
        if self.roots.is_empty() {
            return Err(SetupError::Config(
                "tls client needs at least one trusted ca certificate",
            ));
        }
        let mut roots = RootCertStore::empty();
        for source in &self.roots {
            source.borrow().add_roots("ca certificates", &mut roots)?;
        }
        let provider = provider();
        let verifier =
            verifier::PinnedServerVerifier::new(Arc::new(roots), provider.clone(), self.pins)?;
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(VERSIONS)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        let mut config = match &self.client_auth {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = cert.borrow().certs("client certificate chain")?;
                let key = key.borrow().private_key()?;
                builder.with_client_auth_cert(chain, key)?
            }
        };
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(TlsConnector {
            inner: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }
}

/// Turns the `io::Error` tokio-rustls returns from a handshake back into a
/// typed error, and logs it.
///
/// tokio-rustls wraps a `rustls::Error` in an `io::Error`; a pin failure from
/// our verifier becomes [`Error::PinMismatch`], other rustls errors
/// [`Error::Tls`], and genuine I/O errors stay [`Error::Io`].
fn handshake_error(err: io::Error) -> Error {
    tracing::debug!(error = %err, "tls handshake failed");
    match err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) if verifier::is_pin_mismatch(tls) => Error::PinMismatch,
        Some(tls) => Error::Tls(tls.clone()),
        None => Error::Io(err),
    }
}
