//! Full Noise protocol names (Noise rev 34, section 8).

use core::fmt;

use super::Pattern;
use crate::provider::CipherAlgorithm;
use crate::{Error, Result};

/// A Noise protocol this crate runs: `Noise_<pattern>_25519_<cipher>_SHA256`.
///
/// The DH function (25519) and hash (SHA256) are fixed; the cipher is
/// `ChaChaPoly` or `AESGCM`. The whole name is hashed into the handshake, so
/// peers that disagree on any part of it fail the handshake.
///
/// ```
/// use netproto_crypto::noise::{Pattern, Protocol};
/// use netproto_crypto::provider::CipherAlgorithm;
///
/// # fn main() -> Result<(), netproto_crypto::Error> {
/// let protocol = Protocol::from_name("Noise_XX_25519_AESGCM_SHA256")?;
/// assert_eq!(protocol.pattern, Pattern::xx());
/// assert_eq!(protocol.cipher, CipherAlgorithm::Aes256Gcm);
/// assert_eq!(protocol.to_string(), "Noise_XX_25519_AESGCM_SHA256");
/// # Ok(())
/// # }
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    /// The handshake pattern.
    pub pattern: Pattern,
    /// The cipher function, used in the handshake and for transport messages.
    pub cipher: CipherAlgorithm,
}

impl Protocol {
    /// The protocol of `pattern` with `cipher`.
    pub const fn new(pattern: Pattern, cipher: CipherAlgorithm) -> Self {
        Self { pattern, cipher }
    }

    /// Parses `Noise_<pattern>_25519_<ChaChaPoly|AESGCM>_SHA256`.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedProtocol`] for another DH, cipher or hash, else as
    /// [`Pattern::from_name`].
    pub fn from_name(name: &str) -> Result<Self> {
        let rest = name
            .strip_prefix("Noise_")
            .and_then(|rest| rest.strip_suffix("_SHA256"))
            .ok_or(Error::UnsupportedProtocol)?;
        let (rest, cipher) = rest.rsplit_once('_').ok_or(Error::UnsupportedProtocol)?;
        let cipher = CipherAlgorithm::from_noise_name(cipher).ok_or(Error::UnsupportedProtocol)?;
        let pattern = rest
            .strip_suffix("_25519")
            .ok_or(Error::UnsupportedProtocol)?;
        Ok(Self::new(Pattern::from_name(pattern)?, cipher))
    }

    /// The full protocol name hashed into the handshake.
    pub fn name(&self) -> String {
        protocol_name(&self.pattern, self.cipher)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// `Noise_<pattern>_25519_<cipher>_SHA256`.
pub(crate) fn protocol_name(pattern: &Pattern, cipher: CipherAlgorithm) -> String {
    format!(
        "Noise_{}_25519_{}_SHA256",
        pattern.name(),
        cipher.noise_name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in [
            "Noise_XX_25519_ChaChaPoly_SHA256",
            "Noise_XX_25519_AESGCM_SHA256",
            "Noise_IKpsk2_25519_AESGCM_SHA256",
            "Noise_NNpsk0+psk2_25519_ChaChaPoly_SHA256",
        ] {
            let protocol = Protocol::from_name(name).unwrap();
            assert_eq!(protocol.name(), name);
            assert_eq!(protocol.to_string(), name);
        }
        assert_eq!(
            Protocol::new(Pattern::xx(), CipherAlgorithm::ChaCha20Poly1305).name(),
            Pattern::xx().protocol_name()
        );
    }

    #[test]
    fn other_suites_are_refused() {
        for name in [
            "Noise_XX_448_AESGCM_SHA256",
            "Noise_XX_25519_AESGCM_BLAKE2s",
            "Noise_XX_25519_AESGCM_SHA512",
            "Noise_XX_25519_AES_SHA256",
            "Noise_XX_25519_SHA256",
            "Noise__25519_AESGCM_SHA256",
            "XX_25519_AESGCM_SHA256",
            "",
        ] {
            assert!(Protocol::from_name(name).is_err(), "{name}");
        }
        assert!(matches!(
            Protocol::from_name("Noise_ZZ_25519_AESGCM_SHA256"),
            Err(Error::InvalidPattern)
        ));
    }
}
