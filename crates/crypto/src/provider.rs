//! The pluggable crypto backend: AEAD and hash (DH is always x25519-dalek).
//!
//! A [`Provider`] hands out [`Cipher`] and [`Hash`] objects for the
//! algorithms of the `25519_ChaChaPoly_SHA256` and `25519_AESGCM_SHA256`
//! suites, returning `None` for anything it does not implement (in the manner
//! of rustls's `CryptoProvider` and snow's `CryptoResolver`). [`rust_crypto()`]
//! is the default; `ring()` is available with the `ring` cargo feature. Both
//! implement every [`CipherAlgorithm`]; for AES-256-GCM, ring's is the faster
//! (hardware AES and carry-less multiply where the CPU has them).

use std::sync::Arc;

use crate::Result;

#[cfg(feature = "ring")]
mod ring;
mod rust_crypto;

/// Length of an AEAD authentication tag.
pub const TAG_LEN: usize = 16;
/// Length of a ChaCha20-Poly1305 or AES-256-GCM key, a SHA-256 digest and an X25519 key.
pub const KEY_LEN: usize = 32;

/// AEAD algorithms a [`Provider`] may implement: the Noise cipher functions
/// (Noise rev 34, section 12).
///
/// The default is [`ChaCha20Poly1305`](Self::ChaCha20Poly1305).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum CipherAlgorithm {
    /// Noise `ChaChaPoly` (section 12.3): ChaCha20-Poly1305 (RFC 8439) with
    /// a 96-bit nonce of four zero bytes, then the 64-bit counter
    /// little-endian.
    #[default]
    ChaCha20Poly1305,
    /// Noise `AESGCM` (section 12.4): AES-256-GCM (NIST SP 800-38D) with a
    /// 128-bit tag and a 96-bit nonce of four zero bytes, then the 64-bit
    /// counter **big-endian**. Fast where the CPU has AES instructions.
    Aes256Gcm,
}

impl CipherAlgorithm {
    /// The cipher's name in a Noise protocol name: `ChaChaPoly` or `AESGCM`.
    pub const fn noise_name(self) -> &'static str {
        match self {
            Self::ChaCha20Poly1305 => "ChaChaPoly",
            Self::Aes256Gcm => "AESGCM",
        }
    }

    /// The algorithm whose [`noise_name`](Self::noise_name) is `name`, if any.
    pub fn from_noise_name(name: &str) -> Option<Self> {
        match name {
            "ChaChaPoly" => Some(Self::ChaCha20Poly1305),
            "AESGCM" => Some(Self::Aes256Gcm),
            _ => None,
        }
    }

    /// The 96-bit AEAD nonce for Noise counter `n`, laid out as this
    /// cipher's Noise definition says.
    pub const fn nonce(self, n: u64) -> [u8; 12] {
        match self {
            Self::ChaCha20Poly1305 => chacha_nonce(n),
            Self::Aes256Gcm => aesgcm_nonce(n),
        }
    }

    /// A lowercase name for errors and logs.
    pub(crate) const fn label(self) -> &'static str {
        match self {
            Self::ChaCha20Poly1305 => "chacha20-poly1305",
            Self::Aes256Gcm => "aes-256-gcm",
        }
    }
}

impl core::fmt::Display for CipherAlgorithm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.noise_name())
    }
}

/// Hash algorithms a [`Provider`] may implement.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlgorithm {
    /// SHA-256, with HMAC-SHA-256 for Noise's HKDF.
    Sha256,
}

/// A crypto backend.
pub trait Provider: Send + Sync + core::fmt::Debug {
    /// A keyed AEAD for `algorithm`, or `None` if this provider lacks it.
    fn cipher(&self, algorithm: CipherAlgorithm, key: &[u8; KEY_LEN]) -> Option<Box<dyn Cipher>>;

    /// A hash for `algorithm`, or `None` if this provider lacks it.
    fn hash(&self, algorithm: HashAlgorithm) -> Option<Box<dyn Hash>>;
}

/// A keyed AEAD that works in place, with a detached tag and a 64-bit counter nonce.
pub trait Cipher: Send + Sync {
    /// Encrypts `in_out` in place and returns the tag.
    ///
    /// # Errors
    ///
    /// Only if the backend refuses the input (e.g. longer than the AEAD allows).
    fn encrypt_in_place(&self, nonce: u64, ad: &[u8], in_out: &mut [u8]) -> Result<[u8; TAG_LEN]>;

    /// Checks `tag` and decrypts `in_out` in place.
    ///
    /// # Errors
    ///
    /// [`Error::Decrypt`](crate::Error::Decrypt) if authentication fails; `in_out`
    /// is then unspecified.
    fn decrypt_in_place(
        &self,
        nonce: u64,
        ad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<()>;

    /// Checks `tag` and decrypts the ciphertext `in_out[src..]`, writing the
    /// plaintext to the front of `in_out` (over the first `src` bytes).
    ///
    /// The default decrypts in place, then moves the plaintext; a backend
    /// whose AEAD reads and writes at different offsets overrides it to do
    /// both in one pass.
    ///
    /// # Errors
    ///
    /// [`Error::Decrypt`](crate::Error::Decrypt) if authentication fails or
    /// `src` is past the end; `in_out` is then unspecified.
    fn decrypt_shifted(
        &self,
        nonce: u64,
        ad: &[u8],
        in_out: &mut [u8],
        src: usize,
        tag: &[u8; TAG_LEN],
    ) -> Result<()> {
        let ciphertext = in_out.get_mut(src..).ok_or(crate::Error::Decrypt)?;
        self.decrypt_in_place(nonce, ad, ciphertext, tag)?;
        in_out.copy_within(src.., 0);
        Ok(())
    }
}

/// A hash function with the HKDF that Noise derives from it.
pub trait Hash: Send + Sync {
    /// The digest of the concatenation of `parts`.
    fn hash(&self, parts: &[&[u8]]) -> [u8; KEY_LEN];

    /// RFC 5869 HKDF with salt = `chaining_key`, IKM = `ikm` and empty info,
    /// filling `outputs` with consecutive 32-byte blocks (Noise's `HKDF()`).
    ///
    /// # Errors
    ///
    /// Only if more output is asked for than HKDF can produce.
    fn hkdf(
        &self,
        chaining_key: &[u8; KEY_LEN],
        ikm: &[u8],
        outputs: &mut [[u8; KEY_LEN]],
    ) -> Result<()>;
}

/// The default provider: RustCrypto's `chacha20poly1305`, `sha2` and `hkdf`.
pub fn rust_crypto() -> Arc<dyn Provider> {
    Arc::new(rust_crypto::RUST_CRYPTO)
}

/// The `ring` 0.17 provider (ChaCha20-Poly1305, AES-256-GCM and SHA-256), usually faster.
#[cfg(feature = "ring")]
pub fn ring() -> Arc<dyn Provider> {
    Arc::new(ring::RING)
}

/// A built-in provider: one backend's constructor for each algorithm, so
/// that the dispatch on the algorithm is written once for all backends.
struct Backend {
    /// What `Debug` shows.
    name: &'static str,
    chacha20_poly1305: fn(&[u8; KEY_LEN]) -> Option<Box<dyn Cipher>>,
    aes_256_gcm: fn(&[u8; KEY_LEN]) -> Option<Box<dyn Cipher>>,
    sha256: fn() -> Box<dyn Hash>,
}

impl Provider for Backend {
    fn cipher(&self, algorithm: CipherAlgorithm, key: &[u8; KEY_LEN]) -> Option<Box<dyn Cipher>> {
        match algorithm {
            CipherAlgorithm::ChaCha20Poly1305 => (self.chacha20_poly1305)(key),
            CipherAlgorithm::Aes256Gcm => (self.aes_256_gcm)(key),
        }
    }

    fn hash(&self, algorithm: HashAlgorithm) -> Option<Box<dyn Hash>> {
        match algorithm {
            HashAlgorithm::Sha256 => Some((self.sha256)()),
        }
    }
}

impl core::fmt::Debug for Backend {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name)
    }
}

/// The provider used when none is given: [`rust_crypto()`].
///
/// Enabling the `ring` feature does not change this default; pass
/// `provider::ring()` explicitly.
pub fn default_provider() -> Arc<dyn Provider> {
    rust_crypto()
}

/// Noise's 96-bit ChaCha20-Poly1305 nonce: 32 zero bits, then `n` little-endian.
pub(crate) const fn chacha_nonce(n: u64) -> [u8; 12] {
    let c = n.to_le_bytes();
    [0, 0, 0, 0, c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]
}

/// Noise's 96-bit AES-256-GCM nonce: 32 zero bits, then `n` big-endian.
pub(crate) const fn aesgcm_nonce(n: u64) -> [u8; 12] {
    let c = n.to_be_bytes();
    [0, 0, 0, 0, c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]
}

/// Gets a cipher or reports the missing primitive.
pub(crate) fn cipher(
    provider: &dyn Provider,
    algorithm: CipherAlgorithm,
    key: &[u8; KEY_LEN],
) -> Result<Box<dyn Cipher>> {
    provider
        .cipher(algorithm, key)
        .ok_or_else(|| crate::Error::MissingPrimitive(algorithm.label()))
}

/// Gets a hash or reports the missing primitive.
pub(crate) fn hash(provider: &dyn Provider) -> Result<Box<dyn Hash>> {
    provider
        .hash(HashAlgorithm::Sha256)
        .ok_or(crate::Error::MissingPrimitive("sha-256"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_layouts() {
        let n = 0x0102_0304_0506_0708;
        assert_eq!(
            CipherAlgorithm::ChaCha20Poly1305.nonce(n),
            [0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1]
        );
        assert_eq!(
            CipherAlgorithm::Aes256Gcm.nonce(n),
            [0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]
        );
        for algorithm in [
            CipherAlgorithm::ChaCha20Poly1305,
            CipherAlgorithm::Aes256Gcm,
        ] {
            assert_eq!(
                CipherAlgorithm::from_noise_name(algorithm.noise_name()),
                Some(algorithm)
            );
        }
        assert_eq!(CipherAlgorithm::from_noise_name("AESGCM256"), None);
        assert_eq!(
            CipherAlgorithm::default(),
            CipherAlgorithm::ChaCha20Poly1305
        );
    }

    #[test]
    fn providers_debug_as_their_backend() {
        assert_eq!(format!("{:?}", rust_crypto()), "RustCrypto");
        #[cfg(feature = "ring")]
        assert_eq!(format!("{:?}", ring()), "Ring");
    }
}
