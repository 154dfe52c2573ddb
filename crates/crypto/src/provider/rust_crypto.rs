//! RustCrypto backend.

use aes_gcm::Aes256Gcm;
use chacha20poly1305::ChaCha20Poly1305;
use chacha20poly1305::aead::consts::{U12, U16};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};

use super::{Backend, Cipher, Hash, KEY_LEN, TAG_LEN, aesgcm_nonce, chacha_nonce};
use crate::{Error, Result};

/// RustCrypto provider (`chacha20poly1305`, `aes-gcm`, `sha2`, `hkdf`).
pub(super) const RUST_CRYPTO: Backend = Backend {
    name: "RustCrypto",
    chacha20_poly1305: |key| {
        Some(Box::new(Aead {
            aead: ChaCha20Poly1305::new(key.into()),
            nonce: chacha_nonce,
        }))
    },
    aes_256_gcm: |key| {
        Some(Box::new(Aead {
            aead: Aes256Gcm::new(key.into()),
            nonce: aesgcm_nonce,
        }))
    },
    sha256: || Box::new(Sha256Hash),
};

/// A RustCrypto AEAD with the nonce layout of its Noise cipher.
///
/// `chacha20poly1305` zeroizes its key on drop; `aes-gcm` (which picks
/// AES-NI and CLMUL at run time) does not zeroize its key schedule, as with ring.
struct Aead<A> {
    aead: A,
    nonce: fn(u64) -> [u8; 12],
}

impl<A> Cipher for Aead<A>
where
    A: AeadInPlace<NonceSize = U12, TagSize = U16> + Send + Sync,
{
    fn encrypt_in_place(&self, nonce: u64, ad: &[u8], in_out: &mut [u8]) -> Result<[u8; TAG_LEN]> {
        let tag = self
            .aead
            .encrypt_in_place_detached(&(self.nonce)(nonce).into(), ad, in_out)
            .map_err(|_| Error::Encrypt)?;
        Ok(tag.into())
    }

    fn decrypt_in_place(
        &self,
        nonce: u64,
        ad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<()> {
        self.aead
            .decrypt_in_place_detached(&(self.nonce)(nonce).into(), ad, in_out, tag.into())
            .map_err(|_| Error::Decrypt)
    }
}

struct Sha256Hash;

impl Hash for Sha256Hash {
    fn hash(&self, parts: &[&[u8]]) -> [u8; KEY_LEN] {
        let mut hasher = Sha256::new();
        for part in parts {
            hasher.update(part);
        }
        hasher.finalize().into()
    }

    fn hkdf(
        &self,
        chaining_key: &[u8; KEY_LEN],
        ikm: &[u8],
        outputs: &mut [[u8; KEY_LEN]],
    ) -> Result<()> {
        Hkdf::<Sha256>::new(Some(chaining_key), ikm)
            .expand(&[], outputs.as_flattened_mut())
            .map_err(|_| Error::MissingPrimitive("hkdf output of that length"))
    }
}
