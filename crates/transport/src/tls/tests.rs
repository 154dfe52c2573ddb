//! Unit tests: SPKI extraction, PEM loading errors, certificate generation.
//! They generate their certificates, so they need the `certgen` feature.
#![cfg(feature = "certgen")]

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{CertificateParams, KeyPair, PublicKeyData};
use rustls::CertificateError;
use rustls_pki_types::pem;
use sha2::{Digest, Sha256};

use super::spki::spki_der;
use super::*;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let name = format!(
            "netproto-tls-unit-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        );
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir(&path).unwrap();
        Self(path)
    }

    fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn server_config(cert: &Path, key: &Path) -> TlsServerConfig {
    TlsServerConfig {
        cert_path: cert.to_path_buf(),
        key_path: key.to_path_buf(),
        ..TlsServerConfig::default()
    }
}

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|&n| n.to_owned()).collect()
}

fn is_bad_encoding(err: &SetupError) -> bool {
    matches!(
        err,
        SetupError::Tls(rustls::Error::InvalidCertificate(
            CertificateError::BadEncoding
        ))
    )
}

#[test]
fn spki_matches_rcgen_public_key_for_each_algorithm() {
    for alg in [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ED25519,
    ] {
        let key = KeyPair::generate_for(alg).unwrap();
        let cert = CertificateParams::new(names(&["localhost"]))
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let expected = key.subject_public_key_info();
        assert_eq!(spki_der(cert.der()), Some(&expected[..]), "{alg:?}");
        let hash: [u8; 32] = Sha256::digest(&expected).into();
        assert_eq!(spki_sha256(cert.der()).unwrap(), hash, "{alg:?}");
    }
}

#[test]
fn spki_of_ca_issued_certificates_is_the_leaf_key() {
    let ca = CertificateAuthority::new("test ca").unwrap();
    let server = ca.issue_server_cert(&names(&["localhost"])).unwrap();
    let client = ca.issue_client_cert("client").unwrap();
    assert_eq!(
        spki_sha256(server.cert_der()).unwrap(),
        server.spki_sha256()
    );
    assert_ne!(server.spki_sha256(), client.spki_sha256());
    assert_ne!(
        spki_sha256(ca.cert_der()).unwrap(),
        server.spki_sha256(),
        "the pin is the leaf's, not the issuer's"
    );
    let key = KeyPair::from_pem(server.key_pem()).unwrap();
    let hash: [u8; 32] = Sha256::digest(key.subject_public_key_info()).into();
    assert_eq!(server.spki_sha256(), hash);
}

#[test]
fn spki_rejects_every_truncation_and_garbage_without_panicking() {
    let cert = self_signed(&names(&["localhost"])).unwrap();
    let der: &[u8] = cert.cert_der();
    for len in 0..der.len() {
        let truncated = CertificateDer::from(&der[..len]);
        assert!(
            is_bad_encoding(&spki_sha256(&truncated).unwrap_err()),
            "len {len}"
        );
    }
    let mut trailing = der.to_vec();
    trailing.push(0);
    assert!(spki_der(&trailing).is_none(), "trailing bytes");
    for garbage in [
        &b""[..],
        b"\x30",
        b"\x30\x80",                     // indefinite length
        b"\x30\x85\x01\x00\x00\x00\x00", // five length bytes
        b"\x30\x84\xff\xff\xff\xff",     // length far beyond the input
        b"\x31\x00",                     // SET, not SEQUENCE
        b"\x30\x02\x30\x00",             // empty tbsCertificate
        b"\x30\x04\x30\x02\xa0\x00",     // version only
    ] {
        assert!(spki_der(garbage).is_none(), "{garbage:02x?}");
    }
    // Every single-byte corruption either still finds an element or fails
    // cleanly.
    for i in 0..der.len() {
        for flip in [0x01, 0x80, 0xff] {
            let mut bytes = der.to_vec();
            bytes[i] ^= flip;
            let _ = spki_der(&bytes);
        }
    }
}

#[test]
fn spki_without_version_field() {
    // A v1 certificate omits the [0] version: hand-build the minimal shape.
    let spki = b"\x30\x03\x02\x01\x07";
    let mut tbs = Vec::new();
    tbs.extend_from_slice(b"\x02\x01\x01"); // serial
    for _ in 0..4 {
        tbs.extend_from_slice(b"\x30\x00"); // sigalg, issuer, validity, subject
    }
    tbs.extend_from_slice(spki);
    let mut cert = vec![0x30, u8::try_from(tbs.len() + 2).unwrap(), 0x30];
    cert.push(u8::try_from(tbs.len()).unwrap());
    cert.extend_from_slice(&tbs);
    assert_eq!(spki_der(&cert), Some(&spki[..]));
}

#[test]
fn spki_long_form_lengths() {
    // The same minimal certificate with two-byte (0x82) lengths everywhere.
    let spki = b"\x30\x82\x00\x03\x02\x01\x07";
    let mut tbs = b"\x02\x01\x01".to_vec();
    for _ in 0..4 {
        tbs.extend_from_slice(b"\x30\x00");
    }
    tbs.extend_from_slice(spki);
    let tbs_len = u16::try_from(tbs.len()).unwrap().to_be_bytes();
    let mut inner = vec![0x30, 0x82, tbs_len[0], tbs_len[1]];
    inner.extend_from_slice(&tbs);
    let inner_len = u16::try_from(inner.len()).unwrap().to_be_bytes();
    let mut cert = vec![0x30, 0x82, inner_len[0], inner_len[1]];
    cert.extend_from_slice(&inner);
    assert_eq!(spki_der(&cert), Some(&spki[..]));
}

#[test]
fn pin_mismatch_marker_is_recognised_and_nothing_else_is() {
    assert!(verifier::is_pin_mismatch(&verifier_pin_mismatch()));
    for other in [
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure),
        rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
            io::Error::other("x"),
        )))),
        rustls::Error::General("server certificate matches no configured pin".to_owned()),
    ] {
        assert!(!verifier::is_pin_mismatch(&other), "{other:?}");
    }
    let wrapped = io::Error::new(io::ErrorKind::InvalidData, verifier_pin_mismatch());
    assert!(matches!(handshake_error(wrapped), Error::PinMismatch));
    let wrapped = io::Error::new(
        io::ErrorKind::InvalidData,
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
    );
    assert!(matches!(
        handshake_error(wrapped),
        Error::Tls(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer
        ))
    ));
    let plain = io::Error::from(io::ErrorKind::UnexpectedEof);
    assert!(matches!(handshake_error(plain), Error::Io(_)));
}

/// The verifier's pin failure, obtained through a real verification.
fn verifier_pin_mismatch() -> rustls::Error {
    use rustls::client::danger::ServerCertVerifier;
    let cert = self_signed(&names(&["localhost"])).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(cert.cert_der().clone()).unwrap();
    let verifier =
        verifier::PinnedServerVerifier::new(roots.into(), provider(), vec![[0; 32]]).unwrap();
    verifier
        .verify_server_cert(
            cert.cert_der(),
            &[],
            &ServerName::try_from("localhost").unwrap(),
            &[],
            rustls_pki_types::UnixTime::now(),
        )
        .unwrap_err()
}

fn assert_pem_file_error(
    err: SetupError,
    want_what: &str,
    want_path: &Path,
    want: fn(&pem::Error) -> bool,
) {
    match err {
        SetupError::Pem { what, path, source } => {
            assert_eq!(what, want_what);
            assert_eq!(path, want_path);
            assert!(want(&source), "{source:?}");
        }
        other => panic!("expected SetupError::Pem, got {other:?}"),
    }
}

#[test]
fn pem_missing_file() {
    let dir = TempDir::new();
    let missing = dir.path("missing.pem");
    let err = TlsAcceptor::new(&server_config(&missing, &missing)).unwrap_err();
    assert_pem_file_error(
        err,
        "certificate chain",
        &missing,
        |e| matches!(e, pem::Error::Io(io) if io.kind() == io::ErrorKind::NotFound),
    );
    let err = TlsConnector::builder()
        .ca_file(&missing)
        .build()
        .unwrap_err();
    assert_pem_file_error(err, "ca certificates", &missing, |e| {
        matches!(e, pem::Error::Io(_))
    });
}

#[test]
fn pem_empty_and_garbage_files() {
    let dir = TempDir::new();
    let cert = self_signed(&names(&["localhost"])).unwrap();
    let empty = dir.file("empty.pem", b"");
    let garbage = dir.file("garbage.pem", b"this is not pem\n\x00\xff\n");
    let bad_base64 = dir.file(
        "bad.pem",
        b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    );
    let unterminated = dir.file("open.pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n");
    let key = dir.file("key.pem", cert.key_pem().as_bytes());
    let cert_file = dir.file("cert.pem", cert.cert_pem().as_bytes());

    for (file, check) in [
        (
            &empty,
            (|e| matches!(e, pem::Error::NoItemsFound)) as fn(&pem::Error) -> bool,
        ),
        (&garbage, |e| matches!(e, pem::Error::NoItemsFound)),
        (&bad_base64, |e| matches!(e, pem::Error::Base64Decode(_))),
        (&unterminated, |e| {
            matches!(e, pem::Error::MissingSectionEnd { .. })
        }),
        // A key file is not a certificate file.
        (&key, |e| matches!(e, pem::Error::NoItemsFound)),
    ] {
        let err = TlsAcceptor::new(&server_config(file, &key)).unwrap_err();
        assert_pem_file_error(err, "certificate chain", file, check);
    }

    // A certificate file is not a key file.
    let mut config = server_config(&cert_file, &cert_file);
    let err = TlsAcceptor::new(&config).unwrap_err();
    assert_pem_file_error(err, "private key", &cert_file, |e| {
        matches!(e, pem::Error::NoItemsFound)
    });

    // An empty client CA file.
    config.key_path = key.clone();
    config.client_ca_path = Some(empty.clone());
    let err = TlsAcceptor::new(&config).unwrap_err();
    assert_pem_file_error(err, "client ca certificates", &empty, |e| {
        matches!(e, pem::Error::NoItemsFound)
    });

    // And the happy path from the same files.
    config.client_ca_path = Some(cert_file.clone());
    TlsAcceptor::new(&config).unwrap();
}

#[test]
fn pem_errors_from_memory() {
    let cert = self_signed(&names(&["localhost"])).unwrap();
    let key = cert.key_pem().as_bytes();
    let err = TlsAcceptor::from_pem(b"", key, None, false).unwrap_err();
    assert!(
        matches!(
            err,
            SetupError::PemData {
                what: "certificate chain",
                source: pem::Error::NoItemsFound
            }
        ),
        "{err:?}"
    );
    let err =
        TlsAcceptor::from_pem(cert.cert_pem().as_bytes(), b"garbage", None, false).unwrap_err();
    assert!(
        matches!(
            err,
            SetupError::PemData {
                what: "private key",
                ..
            }
        ),
        "{err:?}"
    );
    let err = TlsConnector::builder()
        .ca_pem("no pem here")
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            SetupError::PemData {
                what: "ca certificates",
                ..
            }
        ),
        "{err:?}"
    );
    // Valid PEM framing around bytes that are not a certificate.
    let not_der = "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n";
    let err = TlsConnector::builder().ca_pem(not_der).build().unwrap_err();
    assert!(matches!(err, SetupError::Tls(_)), "{err:?}");
}

#[test]
fn mismatched_key_and_certificate_are_refused() {
    let a = self_signed(&names(&["localhost"])).unwrap();
    let b = self_signed(&names(&["localhost"])).unwrap();
    let err = TlsAcceptor::from_pem(a.cert_pem().as_bytes(), b.key_pem().as_bytes(), None, false)
        .unwrap_err();
    assert!(matches!(err, SetupError::Tls(_)), "{err:?}");
    let err = TlsConnector::builder()
        .ca_pem(a.cert_pem())
        .client_auth_pem(a.cert_pem(), b.key_pem())
        .build()
        .unwrap_err();
    assert!(matches!(err, SetupError::Tls(_)), "{err:?}");
}

#[test]
fn config_errors() {
    let err = TlsAcceptor::new(&TlsServerConfig::default()).unwrap_err();
    assert!(matches!(err, SetupError::Config(_)), "{err:?}");
    let err = TlsConnector::builder().pin([0; 32]).build().unwrap_err();
    assert!(matches!(err, SetupError::Config(_)), "{err:?}");
    let err = self_signed(&[]).unwrap_err();
    assert!(matches!(err, SetupError::Config(_)), "{err:?}");
    let err = self_signed(&names(&["bücher.example"])).unwrap_err();
    assert!(matches!(err, SetupError::CertGen(_)), "{err:?}");
}

#[test]
fn debug_output_hides_private_keys() {
    let cert = self_signed(&names(&["localhost"])).unwrap();
    let key_body = cert
        .key_pem()
        .lines()
        .nth(1)
        .expect("a PEM body line")
        .to_owned();
    let builder = TlsConnector::builder()
        .ca_pem(cert.cert_pem())
        .client_auth_pem(cert.cert_pem(), cert.key_pem());
    let ca = CertificateAuthority::new("ca").unwrap();
    for debug in [
        format!("{cert:?}"),
        format!("{builder:?}"),
        format!("{ca:?}"),
    ] {
        assert!(!debug.contains(&key_body), "{debug}");
        assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    }
}

#[test]
fn write_self_signed_files_round_trip() {
    let dir = TempDir::new();
    let cert_path = dir.path("cert.pem");
    let key_path = dir.path("key.pem");
    // An existing, world-readable key file is replaced and tightened.
    std::fs::write(&key_path, b"old").unwrap();
    let cert =
        write_self_signed(&names(&["localhost", "127.0.0.1"]), &cert_path, &key_path).unwrap();
    assert_eq!(
        std::fs::read_to_string(&cert_path).unwrap(),
        cert.cert_pem()
    );
    assert_eq!(std::fs::read_to_string(&key_path).unwrap(), cert.key_pem());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    TlsAcceptor::new(&server_config(&cert_path, &key_path)).unwrap();
    TlsConnector::builder()
        .ca_file(cert_path)
        .pin(cert.spki_sha256())
        .build()
        .unwrap();
}
