//! RustCrypto backend.

use aes_gcm::Aes256Gcm;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Tag};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};

use super::{
    Cipher, CipherAlgorithm, Hash, HashAlgorithm, KEY_LEN, Provider, TAG_LEN, aesgcm_nonce,
    chacha_nonce,
};
use crate::{Error, Result};

/// RustCrypto provider (`chacha20poly1305`, `aes-gcm`, `sha2`, `hkdf`).
#[derive(Debug)]
pub(super) struct RustCrypto;

impl Provider for RustCrypto {
    fn cipher(&self, algorithm: CipherAlgorithm, key: &[u8; KEY_LEN]) -> Option<Box<dyn Cipher>> {
        match algorithm {
            CipherAlgorithm::ChaCha20Poly1305 => {
                Some(Box::new(ChaChaPoly(ChaCha20Poly1305::new(key.into()))))
            }
            CipherAlgorithm::Aes256Gcm => Some(Box::new(AesGcm(Aes256Gcm::new(key.into())))),
        }
    }

    fn hash(&self, algorithm: HashAlgorithm) -> Option<Box<dyn Hash>> {
        match algorithm {
            HashAlgorithm::Sha256 => Some(Box::new(Sha256Hash)),
        }
    }
}

/// The key is zeroized on drop by `chacha20poly1305` itself.
struct ChaChaPoly(ChaCha20Poly1305);

impl Cipher for ChaChaPoly {
    fn encrypt_in_place(&self, nonce: u64, ad: &[u8], in_out: &mut [u8]) -> Result<[u8; TAG_LEN]> {
        let tag = self
            .0
            .encrypt_in_place_detached(&chacha_nonce(nonce).into(), ad, in_out)
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
        self.0
            .decrypt_in_place_detached(
                &chacha_nonce(nonce).into(),
                ad,
                in_out,
                Tag::from_slice(tag),
            )
            .map_err(|_| Error::Decrypt)
    }
}

/// `aes-gcm` picks AES-NI and CLMUL at run time where the CPU has them.
/// (Its AES key schedule is not zeroized on drop, as with ring.)
struct AesGcm(Aes256Gcm);

impl Cipher for AesGcm {
    fn encrypt_in_place(&self, nonce: u64, ad: &[u8], in_out: &mut [u8]) -> Result<[u8; TAG_LEN]> {
        let tag = self
            .0
            .encrypt_in_place_detached(&aesgcm_nonce(nonce).into(), ad, in_out)
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
        self.0
            .decrypt_in_place_detached(
                &aesgcm_nonce(nonce).into(),
                ad,
                in_out,
                aes_gcm::Tag::from_slice(tag),
            )
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
