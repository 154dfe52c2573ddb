//! The client's server-certificate verifier: webpki first, then SPKI pins.

use std::fmt;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::Digest;

use super::spki::spki_der;
use crate::SetupError;

/// Runs the normal webpki verification (chain to a trusted root, validity
/// period, name, key usage) and then, if any pins are set, requires the
/// end-entity certificate's SPKI hash to be one of them.
///
/// Signature checks delegate to the webpki verifier unchanged.
#[derive(Debug)]
pub(super) struct PinnedServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    /// SHA-256 of accepted SubjectPublicKeyInfos; empty means no pinning.
    pins: Vec<[u8; 32]>,
}

impl PinnedServerVerifier {
    pub(super) fn new(
        roots: Arc<RootCertStore>,
        provider: Arc<CryptoProvider>,
        pins: Vec<[u8; 32]>,
    ) -> Result<Self, SetupError> {
        let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(verifier_error)?;
        Ok(Self { inner, pins })
    }
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Full verification first, always: a pin never replaces it.
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        if self.pins.is_empty() {
            return Ok(verified);
        }
        let spki = spki_der(end_entity).ok_or(rustls::Error::InvalidCertificate(
            CertificateError::BadEncoding,
        ))?;
        let hash: [u8; 32] = sha2::Sha256::digest(spki).into();
        if self.pins.contains(&hash) {
            Ok(verified)
        } else {
            Err(pin_mismatch())
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

/// Marks a pin failure inside `rustls::Error`, so that
/// [`is_pin_mismatch`] can tell it apart from every other certificate error.
/// Only this verifier creates it; a peer cannot.
#[derive(Debug)]
struct PinMismatch;

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("server certificate matches no configured pin")
    }
}

impl std::error::Error for PinMismatch {}

/// The error the verifier returns on a pin failure. rustls answers it with a
/// `bad_certificate` alert.
fn pin_mismatch() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(PinMismatch))))
}

/// Whether `err` is the verifier's pin failure.
pub(super) fn is_pin_mismatch(err: &rustls::Error) -> bool {
    matches!(
        err,
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner)))
            if inner.downcast_ref::<PinMismatch>().is_some()
    )
}

/// Maps a verifier configuration error (which is not a `rustls::Error`).
pub(super) fn verifier_error(err: rustls::server::VerifierBuilderError) -> SetupError {
    match err {
        rustls::server::VerifierBuilderError::NoRootAnchors => {
            SetupError::Config("no usable trust anchors in the ca certificates")
        }
        _ => SetupError::Config("invalid certificate verifier configuration"),
    }
}
