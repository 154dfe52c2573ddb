//! `ring` 0.17 backend.

use ring::aead::{
    AES_256_GCM, Aad, Algorithm, CHACHA20_POLY1305, LessSafeKey, Nonce, Tag, UnboundKey,
};
use ring::{digest, hmac};

use super::{Backend, Cipher, Hash, KEY_LEN, TAG_LEN, aesgcm_nonce, chacha_nonce};
use crate::{Error, Result};

/// `ring` provider.
pub(super) const RING: Backend = Backend {
    name: "Ring",
    chacha20_poly1305: |key| cipher::<CHACHA>(&CHACHA20_POLY1305, key),
    aes_256_gcm: |key| cipher::<AESGCM>(&AES_256_GCM, key),
    sha256: || Box::new(RingSha256),
};

/// A ring AEAD for `algorithm`, whose Noise nonce layout is `BIG_ENDIAN`.
fn cipher<const BIG_ENDIAN: bool>(
    algorithm: &'static Algorithm,
    key: &[u8; KEY_LEN],
) -> Option<Box<dyn Cipher>> {
    let key = UnboundKey::new(algorithm, key).ok()?;
    Some(Box::new(RingAead::<BIG_ENDIAN>(LessSafeKey::new(key))))
}

/// The `BIG_ENDIAN` parameter of [`RingAead`] for ChaCha20-Poly1305 (little-endian counter).
const CHACHA: bool = false;
/// The `BIG_ENDIAN` parameter of [`RingAead`] for AES-256-GCM (big-endian counter).
const AESGCM: bool = true;

/// A ring AEAD with Noise's nonce layout for its algorithm, chosen at
/// compile time so that sealing costs no extra branch.
struct RingAead<const BIG_ENDIAN: bool>(LessSafeKey);

impl<const BIG_ENDIAN: bool> RingAead<BIG_ENDIAN> {
    fn nonce(n: u64) -> Nonce {
        Nonce::assume_unique_for_key(if BIG_ENDIAN {
            aesgcm_nonce(n)
        } else {
            chacha_nonce(n)
        })
    }
}

impl<const BIG_ENDIAN: bool> Cipher for RingAead<BIG_ENDIAN> {
    fn encrypt_in_place(&self, nonce: u64, ad: &[u8], in_out: &mut [u8]) -> Result<[u8; TAG_LEN]> {
        let nonce = Self::nonce(nonce);
        let tag = self
            .0
            .seal_in_place_separate_tag(nonce, Aad::from(ad), in_out)
            .map_err(|_| Error::Encrypt)?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    fn decrypt_in_place(
        &self,
        nonce: u64,
        ad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<()> {
        self.decrypt_shifted(nonce, ad, in_out, 0, tag)
    }

    fn decrypt_shifted(
        &self,
        nonce: u64,
        ad: &[u8],
        in_out: &mut [u8],
        src: usize,
        tag: &[u8; TAG_LEN],
    ) -> Result<()> {
        // ring reads the ciphertext at `src` and writes the plaintext at 0 in
        // the same pass: the move costs nothing.
        let nonce = Self::nonce(nonce);
        let tag = Tag::from(*tag);
        self.0
            .open_in_place_separate_tag(nonce, Aad::from(ad), tag, in_out, src..)
            .map(|_| ())
            .map_err(|_| Error::Decrypt)
    }
}

struct RingSha256;

impl Hash for RingSha256 {
    fn hash(&self, parts: &[&[u8]]) -> [u8; KEY_LEN] {
        let mut ctx = digest::Context::new(&digest::SHA256);
        for part in parts {
            ctx.update(part);
        }
        let mut out = [0u8; KEY_LEN];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }

    fn hkdf(
        &self,
        chaining_key: &[u8; KEY_LEN],
        ikm: &[u8],
        outputs: &mut [[u8; KEY_LEN]],
    ) -> Result<()> {
        if outputs.len() > 255 {
            return Err(Error::MissingPrimitive("hkdf output of that length"));
        }
        // RFC 5869: PRK = HMAC(salt, IKM); T(i) = HMAC(PRK, T(i-1) || info || i), info empty.
        let prk = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, chaining_key), ikm);
        let prk = hmac::Key::new(hmac::HMAC_SHA256, prk.as_ref());
        let mut previous: Option<zeroize::Zeroizing<[u8; KEY_LEN]>> = None;
        for (counter, output) in (1u8..).zip(outputs.iter_mut()) {
            let mut ctx = hmac::Context::with_key(&prk);
            if let Some(previous) = &previous {
                ctx.update(previous.as_ref());
            }
            ctx.update(&[counter]);
            output.copy_from_slice(ctx.sign().as_ref());
            previous = Some(zeroize::Zeroizing::new(*output));
        }
        Ok(())
    }
}
