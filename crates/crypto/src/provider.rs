//! The pluggable crypto backend: AEAD and hash (DH is always x25519-dalek).
//!
//! A [`Provider`] hands out [`Cipher`] and [`Hash`] objects for the
//! algorithms of the `25519_ChaChaPoly_SHA256` suite, returning `None` for
//! anything it does not implement (in the manner of rustls's `CryptoProvider`
//! and snow's `CryptoResolver`). [`rust_crypto()`] is the default;
//! `ring()` is available with the `ring` cargo feature.

use std::sync::Arc;

use crate::Result;

#[cfg(feature = "ring")]
mod ring;
mod rust_crypto;

/// Length of an AEAD authentication tag.
pub const TAG_LEN: usize = 16;
/// Length of a ChaCha20-Poly1305 key, a SHA-256 digest and an X25519 key.
pub const KEY_LEN: usize = 32;

/// AEAD algorithms a [`Provider`] may implement.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CipherAlgorithm {
    /// ChaCha20-Poly1305 (RFC 8439) with Noise's nonce encoding:
    /// four zero bytes, then the 64-bit counter little-endian.
    ChaCha20Poly1305,
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
    Arc::new(rust_crypto::RustCrypto)
}

/// The `ring` 0.17 provider (ChaCha20-Poly1305 and SHA-256), usually faster.
#[cfg(feature = "ring")]
pub fn ring() -> Arc<dyn Provider> {
    Arc::new(ring::Ring)
}

/// The provider used when none is given: [`rust_crypto()`].
///
/// Enabling the `ring` feature does not change this default; pass
/// `provider::ring()` explicitly.
pub fn default_provider() -> Arc<dyn Provider> {
    rust_crypto()
}

/// Noise's 96-bit ChaCha20-Poly1305 nonce: 32 zero bits, then `n` little-endian.
pub(crate) fn chacha_nonce(n: u64) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    let (_, counter) = nonce.split_at_mut(4);
    counter.copy_from_slice(&n.to_le_bytes());
    nonce
}

/// Gets a cipher or reports the missing primitive.
pub(crate) fn cipher(provider: &dyn Provider, key: &[u8; KEY_LEN]) -> Result<Box<dyn Cipher>> {
    provider
        .cipher(CipherAlgorithm::ChaCha20Poly1305, key)
        .ok_or(crate::Error::MissingPrimitive("chacha20-poly1305"))
}

/// Gets a hash or reports the missing primitive.
pub(crate) fn hash(provider: &dyn Provider) -> Result<Box<dyn Hash>> {
    provider
        .hash(HashAlgorithm::Sha256)
        .ok_or(crate::Error::MissingPrimitive("sha-256"))
}
