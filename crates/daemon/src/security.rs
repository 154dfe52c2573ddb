//! Turning the security section of the configuration into transport settings:
//! identities, pins, known hosts, TLS acceptors and connectors.

use netproto_transport::sync::lock;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use netproto_crypto::{Keypair, PublicKey};
use netproto_transport::tls::{TlsAcceptor, TlsConnector, TlsServerConfig};
use netproto_transport::{ClientSecurity, NoiseConfig, ServerSecurity};

use crate::config::{SecurityConfig, SecurityMode};
use crate::{Error, Result};

/// The key pair in `key_file`, or a fresh one (which lives as long as the
/// process) when there is no file.
///
/// # Errors
///
/// [`Error::KeyFile`] when the file cannot be read or parsed.
pub fn load_or_generate_identity(key_file: Option<&Path>) -> Result<Keypair> {
    match key_file {
        Some(path) => Keypair::read_key_file(path).map_err(|source| Error::KeyFile {
            path: path.to_owned(),
            source,
        }),
        None => Ok(Keypair::generate(&mut rand::rngs::OsRng)),
    }
}

/// The configured cipher and backend, on a Noise configuration.
fn apply_noise_settings(noise: &mut NoiseConfig, security: &SecurityConfig) {
    noise.session.cipher = security.noise_cipher.into();
    noise.provider = Some(security.noise_backend.provider());
}

/// The server side of the configured security mode, and the Noise public
/// key clients should pin (in Noise mode).
pub(crate) fn server_security(
    security: &SecurityConfig,
) -> Result<(ServerSecurity, Option<PublicKey>)> {
    match security.mode {
        SecurityMode::Noise => {
            let identity = load_or_generate_identity(security.key_file.as_deref())?;
            let public = *identity.public();
            let mut noise = NoiseConfig::new(identity);
            apply_noise_settings(&mut noise, security);
            if !security.allowed_peers.is_empty() {
                noise.allowed_peers = Some(security.allowed_peers.clone());
            }
            Ok((ServerSecurity::noise(noise), Some(public)))
        }
        SecurityMode::Tls => {
            let (Some(cert), Some(key)) = (&security.tls_cert, &security.tls_key) else {
                return Err(Error::Invalid(
                    "tls mode needs security.tls_cert and security.tls_key (create a development pair with `netproto certgen`)".into(),
                ));
            };
            let mut tls = TlsServerConfig::default();
            tls.cert_path.clone_from(cert);
            tls.key_path.clone_from(key);
            tls.client_ca_path.clone_from(&security.tls_ca);
            tls.require_client_auth = security.tls_ca.is_some();
            Ok((ServerSecurity::Tls(TlsAcceptor::new(&tls)?), None))
        }
        SecurityMode::Plain => Ok((ServerSecurity::Plain, None)),
    }
}

/// How the client authenticates the server in Noise mode.
#[derive(Debug)]
pub(crate) enum ServerTrust {
    /// A configured Noise pin: the handshake itself refuses another key.
    Pinned(PublicKey),
    /// TLS: the certificate is verified (and its pins checked) in the
    /// handshake.
    Certificate,
    /// Trust on first use, with a known-hosts file.
    KnownHosts(KnownHosts),
    /// Nothing: the server is not authenticated.
    None,
}

/// The client side of the configured security mode, for the server at
/// `address`, pinning `security.server_key`, else `pin`
/// (`client.server_key`).
pub(crate) fn client_security(
    security: &SecurityConfig,
    pin: Option<PublicKey>,
    address: &str,
) -> Result<(ClientSecurity, ServerTrust)> {
    match security.mode {
        SecurityMode::Noise => {
            let identity = load_or_generate_identity(security.key_file.as_deref())?;
            let mut noise = NoiseConfig::new(identity);
            apply_noise_settings(&mut noise, security);
            let trust = if let Some(key) = security.server_key.or(pin) {
                noise.remote_static = Some(key);
                ServerTrust::Pinned(key)
            } else if let Some(path) = &security.known_hosts {
                ServerTrust::KnownHosts(KnownHosts::new(path.clone()))
            } else {
                tracing::warn!(
                    address,
                    "the server's key is neither pinned nor remembered: it is not authenticated, and a man in the middle would not be noticed (set client.server_key or security.known_hosts)"
                );
                ServerTrust::None
            };
            Ok((ClientSecurity::noise(noise), trust))
        }
        SecurityMode::Tls => {
            let Some(ca) = &security.tls_ca else {
                return Err(Error::Invalid(
                    "tls mode needs security.tls_ca: the CA (or self-signed certificate) the server's certificate must chain to".into(),
                ));
            };
            let mut builder = TlsConnector::builder().ca_file(ca.clone());
            if let (Some(cert), Some(key)) = (&security.tls_cert, &security.tls_key) {
                builder = builder.client_auth_files(cert.clone(), key.clone());
            }
            for pin in &security.tls_pins {
                builder = builder.pin(*pin);
            }
            let server_name = security
                .server_name
                .clone()
                .unwrap_or_else(|| host_of(address).to_owned());
            Ok((
                ClientSecurity::Tls {
                    connector: builder.build()?,
                    server_name,
                },
                ServerTrust::Certificate,
            ))
        }
        SecurityMode::Plain => Ok((ClientSecurity::Plain, ServerTrust::None)),
    }
}

/// The host part of `host:port` or `[v6]:port`.
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// A known-hosts file: one `address public-key-hex` line per server.
///
/// The first time a client meets a server it remembers the key; later it
/// refuses a different key loudly, as SSH does.
#[derive(Debug)]
pub struct KnownHosts {
    path: PathBuf,
    lock: Mutex<()>,
}

impl KnownHosts {
    /// A known-hosts file at `path` (created on first use).
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            lock: Mutex::new(()),
        }
    }

    /// Checks `key` for `address`, remembering it if the address is new.
    ///
    /// Returns `true` when the key was new and has been remembered.
    ///
    /// # Errors
    ///
    /// [`Error::KeyChanged`] when another key is remembered for `address`;
    /// I/O errors reading or writing the file.
    pub fn check(&self, address: &str, key: &PublicKey) -> Result<bool> {
        let _guard = lock(&self.lock);
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e.into()),
        };
        for line in text.lines() {
            let mut fields = line.split_whitespace();
            if let (Some(addr), Some(known)) = (fields.next(), fields.next())
                && addr == address
            {
                let presented = key.to_string();
                if known.eq_ignore_ascii_case(&presented) {
                    return Ok(false);
                }
                return Err(Error::KeyChanged {
                    address: address.to_owned(),
                    presented,
                    known: known.to_owned(),
                    file: self.path.clone(),
                });
            }
        }
        if let Some(dir) = self.path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        writeln!(file, "{address} {key}")?;
        tracing::info!(address, key = %key, file = %self.path.display(), "remembered a new server key");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hosts_remembers_then_refuses_a_changed_key() {
        let dir = std::env::temp_dir().join(format!("netproto-kh-{}", rand::random::<u64>()));
        let hosts = KnownHosts::new(dir.join("known_hosts"));
        let a = *Keypair::generate(&mut rand::rngs::OsRng).public();
        let b = *Keypair::generate(&mut rand::rngs::OsRng).public();
        assert!(hosts.check("127.0.0.1:9000", &a).unwrap());
        assert!(!hosts.check("127.0.0.1:9000", &a).unwrap());
        assert!(hosts.check("127.0.0.1:9001", &b).unwrap());
        let err = hosts.check("127.0.0.1:9000", &b).unwrap_err();
        assert!(matches!(err, Error::KeyChanged { .. }), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn host_of_strips_port_and_brackets() {
        assert_eq!(host_of("example.com:443"), "example.com");
        assert_eq!(host_of("[::1]:9000"), "::1");
        assert_eq!(host_of("127.0.0.1:9000"), "127.0.0.1");
    }
}
