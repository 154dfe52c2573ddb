//! From batches of encoded frames to the bytes written to the stream.

use bytes::{Bytes, BytesMut};
use netproto_crypto::Sealer;

use crate::Error;

/// The sending side's protection: Noise records, or the frames as they are
/// (plain mode, and inside TLS, which protects the stream itself).
#[derive(Debug)]
pub(crate) struct Outflow {
    sealer: Option<Box<Sealer>>,
}

impl Outflow {
    /// Seals with `sealer` when there is one.
    pub(crate) fn new(sealer: Option<Box<Sealer>>) -> Self {
        Self { sealer }
    }

    /// Whether batches must go through [`seal`](Self::seal); otherwise the
    /// encoded frames are written as they are.
    pub(crate) fn seals(&self) -> bool {
        self.sealer.is_some()
    }

    /// Appends to `out` the records carrying `segments`, then `frames`.
    ///
    /// Records span the parts: a 64 KiB message with its small head takes
    /// two records, not three. Does nothing without a sealer, or with
    /// nothing to send.
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] when the sealer cannot go on (nonces exhausted).
    pub(crate) fn seal(
        &mut self,
        segments: &[Bytes],
        frames: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), Error> {
        let Some(sealer) = self.sealer.as_deref_mut() else {
            return Ok(());
        };
        if segments.is_empty() && frames.is_empty() {
            return Ok(());
        }
        let parts = segments.iter().map(|segment| &segment[..]);
        sealer.seal_parts(parts.chain([frames]), out)?;
        Ok(())
    }
}
