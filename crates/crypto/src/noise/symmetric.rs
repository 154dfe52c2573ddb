//! Noise `CipherState` and `SymmetricState` (Noise rev 34, sections 5.1 and 5.2).

use std::sync::Arc;

use zeroize::Zeroizing;

use crate::provider::{self, Cipher, CipherAlgorithm, Hash, KEY_LEN, Provider, TAG_LEN};
use crate::{Error, Result};

pub(crate) struct SymmetricState {
    provider: Arc<dyn Provider>,
    algorithm: CipherAlgorithm,
    hash: Box<dyn Hash>,
    ck: Zeroizing<[u8; KEY_LEN]>,
    h: [u8; KEY_LEN],
    cipher: Option<Box<dyn Cipher>>,
    n: u64,
}

impl SymmetricState {
    /// `InitializeSymmetric(protocol_name)`; `algorithm` must be the cipher
    /// the protocol name names.
    pub(crate) fn new(
        provider: Arc<dyn Provider>,
        algorithm: CipherAlgorithm,
        protocol_name: &str,
    ) -> Result<Self> {
        let hash = provider::hash(provider.as_ref())?;
        let name = protocol_name.as_bytes();
        let h = if name.len() <= KEY_LEN {
            let mut h = [0u8; KEY_LEN];
            let (prefix, _) = h.split_at_mut(name.len());
            prefix.copy_from_slice(name);
            h
        } else {
            hash.hash(&[name])
        };
        Ok(Self {
            provider,
            algorithm,
            hash,
            ck: Zeroizing::new(h),
            h,
            cipher: None,
            n: 0,
        })
    }

    pub(crate) const fn handshake_hash(&self) -> &[u8; KEY_LEN] {
        &self.h
    }

    pub(crate) const fn has_key(&self) -> bool {
        self.cipher.is_some()
    }

    pub(crate) fn mix_hash(&mut self, data: &[u8]) {
        self.h = self.hash.hash(&[&self.h, data]);
    }

    pub(crate) fn mix_key(&mut self, ikm: &[u8]) -> Result<()> {
        let mut out = Zeroizing::new([[0u8; KEY_LEN]; 2]);
        self.hash.hkdf(&self.ck, ikm, out.as_mut())?;
        let [ck, k] = &*out;
        self.ck.copy_from_slice(ck);
        self.set_key(k)
    }

    pub(crate) fn mix_key_and_hash(&mut self, ikm: &[u8]) -> Result<()> {
        let mut out = Zeroizing::new([[0u8; KEY_LEN]; 3]);
        self.hash.hkdf(&self.ck, ikm, out.as_mut())?;
        let [ck, h, k] = &*out;
        self.ck.copy_from_slice(ck);
        self.mix_hash(h);
        self.set_key(k)
    }

    fn set_key(&mut self, key: &[u8; KEY_LEN]) -> Result<()> {
        self.cipher = Some(provider::cipher(
            self.provider.as_ref(),
            self.algorithm,
            key,
        )?);
        self.n = 0;
        Ok(())
    }

    fn next_nonce(&mut self) -> Result<u64> {
        let n = self.n;
        if n == u64::MAX {
            return Err(Error::NonceExhausted);
        }
        self.n = n + 1;
        Ok(n)
    }

    /// `EncryptAndHash(plaintext)`, appending the result to `out`.
    pub(crate) fn encrypt_and_hash(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let start = out.len();
        out.extend_from_slice(plaintext);
        if self.cipher.is_some() {
            let n = self.next_nonce()?;
            let (_, in_out) = out.split_at_mut(start);
            let tag = match &self.cipher {
                Some(cipher) => cipher.encrypt_in_place(n, &self.h, in_out)?,
                None => return Err(Error::HandshakeFailed),
            };
            out.extend_from_slice(&tag);
        }
        let (_, ciphertext) = out.split_at(start);
        self.h = self.hash.hash(&[&self.h, ciphertext]);
        Ok(())
    }

    /// `DecryptAndHash(ciphertext)`, appending the plaintext to `out`.
    pub(crate) fn decrypt_and_hash(&mut self, ciphertext: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let start = out.len();
        if self.cipher.is_some() {
            let (body, tag) = ciphertext
                .split_last_chunk::<TAG_LEN>()
                .ok_or(Error::Truncated)?;
            let n = self.next_nonce()?;
            out.extend_from_slice(body);
            let (_, in_out) = out.split_at_mut(start);
            let opened = match &self.cipher {
                Some(cipher) => cipher.decrypt_in_place(n, &self.h, in_out, tag),
                None => Err(Error::HandshakeFailed),
            };
            if let Err(err) = opened {
                out.truncate(start);
                return Err(err);
            }
        } else {
            out.extend_from_slice(ciphertext);
        }
        self.mix_hash(ciphertext);
        Ok(())
    }

    /// `Split()`: the initiator-to-responder key, then the responder-to-initiator key.
    pub(crate) fn split(&self) -> Result<Zeroizing<[[u8; KEY_LEN]; 2]>> {
        let mut out = Zeroizing::new([[0u8; KEY_LEN]; 2]);
        self.hash.hkdf(&self.ck, &[], out.as_mut())?;
        Ok(out)
    }

    pub(crate) fn provider(&self) -> &Arc<dyn Provider> {
        &self.provider
    }

    pub(crate) const fn algorithm(&self) -> CipherAlgorithm {
        self.algorithm
    }
}
