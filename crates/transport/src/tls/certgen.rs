//! Certificate generation for development and tests, with rcgen.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::CertificateDer;
use zeroize::Zeroizing;

use super::spki_sha256;
use crate::SetupError;

/// A generated certificate and its private key.
///
/// The key is wiped from memory on drop and left out of `Debug`.
pub struct GeneratedCert {
    cert_pem: String,
    key_pem: Zeroizing<String>,
    cert_der: CertificateDer<'static>,
    spki_sha256: [u8; 32],
}

impl GeneratedCert {
    fn new(cert: &rcgen::Certificate, key: &KeyPair) -> Result<Self, SetupError> {
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(key.serialize_pem()),
            cert_der: cert.der().clone(),
            spki_sha256: spki_sha256(cert.der())?,
        })
    }

    /// The certificate, PEM encoded.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The private key, PEM encoded (PKCS#8). Secret.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The certificate, DER encoded.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The SHA-256 of the certificate's SubjectPublicKeyInfo: its pin for
    /// [`TlsConnectorBuilder::pin`](super::TlsConnectorBuilder::pin).
    pub fn spki_sha256(&self) -> [u8; 32] {
        self.spki_sha256
    }

    /// Writes the certificate and the key as PEM files, replacing existing
    /// files. On Unix the key file is made readable by its owner only (0600)
    /// before the key is written.
    ///
    /// # Errors
    ///
    /// [`SetupError::Io`] if a file cannot be created or written.
    pub fn write_pem_files(&self, cert_path: &Path, key_path: &Path) -> Result<(), SetupError> {
        write_file(key_path, self.key_pem.as_bytes(), true)?;
        write_file(cert_path, self.cert_pem.as_bytes(), false)?;
        Ok(())
    }
}

impl fmt::Debug for GeneratedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[secret key elided]")
            .field("spki_sha256", &self.spki_sha256)
            .finish_non_exhaustive()
    }
}

/// Writes `data` to `path`, truncating it; a `secret` file gets mode 0600 on
/// Unix, set before any byte is written (also when the file already existed).
fn write_file(path: &Path, data: &[u8], secret: bool) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    let _ = secret;
    file.write_all(data)?;
    file.sync_all()
}

/// Certificate parameters for an end-entity certificate with these subject
/// alternative names (DNS names or IP addresses) and the first as its common
/// name.
fn leaf_params(
    subject_alt_names: &[String],
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertificateParams, SetupError> {
    let Some(first) = subject_alt_names.first() else {
        return Err(SetupError::Config(
            "a server certificate needs at least one subject alternative name",
        ));
    };
    let mut params = CertificateParams::new(subject_alt_names.to_vec())?;
    params
        .distinguished_name
        .push(DnType::CommonName, first.as_str());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    Ok(params)
}

/// Generates a self-signed certificate (ECDSA P-256) for development, valid
/// for `subject_alt_names` (DNS names or IP addresses; at least one).
///
/// A client accepts it only if it trusts the certificate itself as a root
/// (see [`TlsConnectorBuilder::ca_pem`](super::TlsConnectorBuilder::ca_pem)),
/// optionally pinned with [`GeneratedCert::spki_sha256`].
///
/// The certificate uses rcgen's default validity (1975 to 4096): it is meant
/// for development, not production.
///
/// # Errors
///
/// [`SetupError::Config`] if `subject_alt_names` is empty, [`SetupError::CertGen`] if a
/// name is not a valid DNS name or IP address, or generation fails.
///
/// # Examples
///
/// ```
/// let cert = netproto_transport::tls::self_signed(&["localhost".to_owned(), "127.0.0.1".to_owned()])?;
/// assert!(cert.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
/// # Ok::<(), netproto_transport::SetupError>(())
/// ```
pub fn self_signed(subject_alt_names: &[String]) -> Result<GeneratedCert, SetupError> {
    let params = leaf_params(subject_alt_names, ExtendedKeyUsagePurpose::ServerAuth)?;
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    GeneratedCert::new(&cert, &key)
}

/// Generates a self-signed certificate like [`self_signed`] and writes it to
/// `cert_path` and its key to `key_path` (0600 on Unix), replacing existing
/// files.
///
/// # Errors
///
/// As [`self_signed`], and [`SetupError::Io`] if a file cannot be written.
pub fn write_self_signed(
    subject_alt_names: &[String],
    cert_path: &Path,
    key_path: &Path,
) -> Result<GeneratedCert, SetupError> {
    let cert = self_signed(subject_alt_names)?;
    cert.write_pem_files(cert_path, key_path)?;
    Ok(cert)
}

/// A certificate authority that issues server and client certificates: a
/// **development and test helper**, for setting up mutual TLS without
/// external tools.
///
/// The CA key lives only in memory and is lost on drop; certificates use
/// rcgen's default validity (1975 to 4096). This is not a production PKI.
///
/// # Examples
///
/// ```
/// use netproto_transport::tls::{CertificateAuthority, TlsAcceptor, TlsConnector};
///
/// let ca = CertificateAuthority::new("netproto dev ca")?;
/// let server = ca.issue_server_cert(&["localhost".to_owned()])?;
/// let client = ca.issue_client_cert("client-1")?;
/// let acceptor = TlsAcceptor::from_pem(
///     server.cert_pem().as_bytes(),
///     server.key_pem().as_bytes(),
///     Some(ca.cert_pem().as_bytes()),
///     true,
/// )?;
/// let connector = TlsConnector::builder()
///     .ca_pem(ca.cert_pem())
///     .client_auth_pem(client.cert_pem(), client.key_pem())
///     .build()?;
/// # Ok::<(), netproto_transport::SetupError>(())
/// ```
pub struct CertificateAuthority {
    issuer: CertifiedIssuer<'static, KeyPair>,
    cert_pem: String,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Generates a CA (ECDSA P-256) with a self-signed certificate whose
    /// common name is `common_name`.
    ///
    /// # Errors
    ///
    /// [`SetupError::CertGen`] if generation fails.
    pub fn new(common_name: &str) -> Result<Self, SetupError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        let cert_pem = issuer.pem();
        Ok(Self { issuer, cert_pem })
    }

    /// The CA certificate, PEM encoded: the trust root to give clients
    /// ([`TlsConnectorBuilder::ca_pem`](super::TlsConnectorBuilder::ca_pem))
    /// or servers (the client CA).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER encoded.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        self.issuer.der()
    }

    /// Issues a server certificate (ECDSA P-256, new key) for
    /// `subject_alt_names` (DNS names or IP addresses; at least one).
    ///
    /// # Errors
    ///
    /// [`SetupError::Config`] if `subject_alt_names` is empty, [`SetupError::CertGen`]
    /// if a name is not a valid DNS name or IP address, or signing fails.
    pub fn issue_server_cert(
        &self,
        subject_alt_names: &[String],
    ) -> Result<GeneratedCert, SetupError> {
        let mut params = leaf_params(subject_alt_names, ExtendedKeyUsagePurpose::ServerAuth)?;
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        GeneratedCert::new(&cert, &key)
    }

    /// Issues a client certificate (ECDSA P-256, new key) with common name
    /// `common_name`, for mutual TLS.
    ///
    /// # Errors
    ///
    /// [`SetupError::CertGen`] if signing fails.
    pub fn issue_client_cert(&self, common_name: &str) -> Result<GeneratedCert, SetupError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        GeneratedCert::new(&cert, &key)
    }
}
