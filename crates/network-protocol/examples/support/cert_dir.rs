//! Where the TLS examples find their certificates, so that they run on a
//! fresh clone.
//!
//! The directory is the first command-line argument, else
//! `NETPROTO_EXAMPLE_CERT_DIR`, else `netproto-example-certs` in the system's
//! temporary directory. A CA, a server certificate (valid for `localhost`,
//! `example.com`, `127.0.0.1` and `::1`) and a client certificate are
//! generated there unless all five files already exist. The example then
//! switches into the directory, so that the README's relative file names
//! (`server_cert.pem`, `ca_cert.pem`, ...) work as written.

use std::path::PathBuf;

use network_protocol::error::Result;
use network_protocol::utils::certs;

/// The environment variable naming the certificate directory.
pub(crate) const CERT_DIR_VAR: &str = "NETPROTO_EXAMPLE_CERT_DIR";

/// Makes sure the development certificates exist, and changes into their
/// directory. Returns the directory.
///
/// # Errors
///
/// If the certificates cannot be generated or the directory entered.
pub(crate) fn enter_cert_dir() -> Result<PathBuf> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os(CERT_DIR_VAR).map(PathBuf::from))
        .unwrap_or_else(|| std::env::temp_dir().join("netproto-example-certs"));
    certs::ensure_dev_certs(&dir)?;
    std::env::set_current_dir(&dir)?;
    Ok(dir)
}
