//! The SHA-256 of a certificate's SubjectPublicKeyInfo, found by a minimal
//! DER walk.
//!
//! ```text
//! Certificate ::= SEQUENCE {
//!     tbsCertificate SEQUENCE {
//!         version              [0] EXPLICIT INTEGER OPTIONAL,
//!         serialNumber         INTEGER,
//!         signature            AlgorithmIdentifier (SEQUENCE),
//!         issuer               Name (SEQUENCE),
//!         validity             SEQUENCE,
//!         subject              Name (SEQUENCE),
//!         subjectPublicKeyInfo SEQUENCE,   <- hashed, tag and length included
//!         ... },
//!     signatureAlgorithm, signatureValue }
//! ```
//!
//! Only the framing (tags and lengths) on the path to the SPKI is checked; the
//! certificate is not otherwise validated. In the client verifier the walk
//! runs only after webpki has fully parsed and verified the certificate.

use rustls::CertificateError;
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};

use crate::SetupError;

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
/// `[0]`, constructed, context-specific: the explicit version tag.
const VERSION: u8 = 0xa0;

/// Computes the SHA-256 of the SubjectPublicKeyInfo DER (tag and length
/// included) of `cert`: the value [`TlsConnectorBuilder::pin`] expects.
///
/// The pin stays the same when a certificate is renewed with the same key.
///
/// [`TlsConnectorBuilder::pin`]: super::TlsConnectorBuilder::pin
///
/// # Errors
///
/// [`SetupError::Tls`] with [`CertificateError::BadEncoding`] if `cert` is not a
/// DER X.509 certificate.
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "certgen")] {
/// let cert = netproto_transport::tls::self_signed(&["localhost".to_owned()])?;
/// let pin = netproto_transport::tls::spki_sha256(cert.cert_der())?;
/// assert_eq!(pin, cert.spki_sha256());
/// # }
/// # Ok::<(), netproto_transport::SetupError>(())
/// ```
pub fn spki_sha256(cert: &CertificateDer<'_>) -> Result<[u8; 32], SetupError> {
    let spki = spki_der(cert).ok_or(SetupError::Tls(rustls::Error::InvalidCertificate(
        CertificateError::BadEncoding,
    )))?;
    Ok(Sha256::digest(spki).into())
}

/// The SubjectPublicKeyInfo element of a DER certificate, or `None` if the
/// framing is broken.
pub(super) fn spki_der(cert: &[u8]) -> Option<&[u8]> {
    let (certificate, trailing) = expect(cert, SEQUENCE)?;
    if !trailing.is_empty() {
        return None;
    }
    let (tbs, _signature) = expect(certificate.content, SEQUENCE)?;
    let mut rest = tbs.content;
    if rest.first() == Some(&VERSION) {
        rest = expect(rest, VERSION)?.1;
    }
    // serialNumber, signature, issuer, validity, subject.
    for tag in [INTEGER, SEQUENCE, SEQUENCE, SEQUENCE, SEQUENCE] {
        rest = expect(rest, tag)?.1;
    }
    let (spki, _extensions) = expect(rest, SEQUENCE)?;
    Some(spki.whole)
}

/// One DER element.
struct Element<'a> {
    /// Tag, length and content.
    whole: &'a [u8],
    /// The content alone.
    content: &'a [u8],
}

/// Reads one element with tag `tag` from the front of `input`; returns it and
/// what follows.
fn expect(input: &[u8], tag: u8) -> Option<(Element<'_>, &[u8])> {
    let (&found, after_tag) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, after_len) = after_tag.split_first()?;
    let (len, content_and_rest) = if first < 0x80 {
        (usize::from(first), after_len)
    } else {
        // Long form: the low bits count the length bytes. 0x80 (indefinite
        // length) is not DER; more than four bytes is not a certificate.
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let (len_bytes, content_and_rest) = after_len.split_at_checked(count)?;
        let len = len_bytes.iter().try_fold(0usize, |acc, &b| {
            acc.checked_mul(256)?.checked_add(usize::from(b))
        })?;
        (len, content_and_rest)
    };
    let (content, rest) = content_and_rest.split_at_checked(len)?;
    let header_len = input.len().checked_sub(content_and_rest.len())?;
    let whole = input.get(..header_len.checked_add(len)?)?;
    Some((Element { whole, content }, rest))
}
