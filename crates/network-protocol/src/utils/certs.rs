//! Development certificates for mutual TLS, written under the file names of
//! the original crate's README.
//!
//! **For development and tests only**: the CA's private key is discarded
//! once the certificates are issued, and the certificates use rcgen's
//! default validity. For a single self-signed server certificate, the
//! `netproto certgen` command does the same job.

use std::path::{Path, PathBuf};

use netproto_transport::tls::CertificateAuthority;

use crate::error::Result;

/// The names the development server certificate is valid for.
pub const DEV_SERVER_NAMES: &[&str] = &["localhost", "example.com", "127.0.0.1", "::1"];

/// The files of a development PKI.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevCerts {
    /// `ca_cert.pem`: the CA that issued both certificates; the server's
    /// client CA and the client's trust root.
    pub ca_cert: PathBuf,
    /// `server_cert.pem`: valid for [`DEV_SERVER_NAMES`].
    pub server_cert: PathBuf,
    /// `server_key.pem` (0600 on Unix).
    pub server_key: PathBuf,
    /// `client_cert.pem`: a client certificate for mutual TLS.
    pub client_cert: PathBuf,
    /// `client_key.pem` (0600 on Unix).
    pub client_key: PathBuf,
}

impl DevCerts {
    /// The file names in `dir`, whether or not they exist.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca_cert: dir.join("ca_cert.pem"),
            server_cert: dir.join("server_cert.pem"),
            server_key: dir.join("server_key.pem"),
            client_cert: dir.join("client_cert.pem"),
            client_key: dir.join("client_key.pem"),
        }
    }

    fn all(&self) -> [&Path; 5] {
        [
            &self.ca_cert,
            &self.server_cert,
            &self.server_key,
            &self.client_cert,
            &self.client_key,
        ]
    }
}

/// Generates a CA, a server certificate and a client certificate into `dir`
/// (created if needed), replacing existing files.
///
/// # Errors
///
/// [`ProtocolError::Io`](crate::error::ProtocolError::Io) if the directory
/// cannot be created,
/// [`ProtocolError::TransportSetup`](crate::error::ProtocolError::TransportSetup)
/// if generation or writing fails.
pub fn write_dev_certs(dir: &Path) -> Result<DevCerts> {
    std::fs::create_dir_all(dir)?;
    let files = DevCerts::in_dir(dir);
    let ca = CertificateAuthority::new("network-protocol development ca")?;
    let names: Vec<String> = DEV_SERVER_NAMES.iter().map(|&n| n.to_owned()).collect();
    ca.issue_server_cert(&names)?
        .write_pem_files(&files.server_cert, &files.server_key)?;
    ca.issue_client_cert("network-protocol development client")?
        .write_pem_files(&files.client_cert, &files.client_key)?;
    // The CA certificate last: its presence marks a complete set.
    std::fs::write(&files.ca_cert, ca.cert_pem())?;
    Ok(files)
}

/// The development certificates in `dir`, generated with
/// [`write_dev_certs`] unless all five files are already there.
///
/// # Errors
///
/// As [`write_dev_certs`].
pub fn ensure_dev_certs(dir: &Path) -> Result<DevCerts> {
    let files = DevCerts::in_dir(dir);
    if files.all().iter().all(|path| path.is_file()) {
        return Ok(files);
    }
    write_dev_certs(dir)
}
