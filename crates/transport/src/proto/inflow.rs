//! From frames to what the application and the writer must see.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use netproto_compress::Codec;
use netproto_crypto::Opener;
use netproto_wire::{Data, DataFlags, Envelope, Frame};

use super::Deframer;
use super::compression::decompress_aside;
use crate::{ConnectionConfig, Error, Incoming};

/// What a received frame asks of the driver, beyond delivering it.
#[derive(Debug)]
pub(crate) enum Event {
    /// Send this frame to the peer (the pong answering a ping).
    Reply(Frame),
    /// A compressed body large enough to decompress aside (see
    /// [`Inflow::take_codec`]); its bytes then go to [`message`], with the
    /// frame's flags.
    DecompressAside(Data),
}

/// The receiving side of a connection: deframing, decompression and the
/// handling of control frames.
#[derive(Debug)]
pub(crate) struct Inflow {
    deframer: Deframer,
    codec: Codec,
    /// Frames decoded since the last [`take_counts`](Self::take_counts).
    frames: u64,
    /// Whether one of them was a data frame.
    data: bool,
}

impl Inflow {
    /// The receiving side of a connection configured by `config`; `opener`
    /// opens its records in Noise mode, `leftover` holds bytes read past the
    /// handshake.
    pub(crate) fn new(
        config: &ConnectionConfig,
        opener: Option<Box<Opener>>,
        leftover: BytesMut,
    ) -> Self {
        Self {
            deframer: Deframer::new(config.max_frame_len, opener, leftover),
            codec: Codec::new(super::decompress_config(config)),
            frames: 0,
            data: false,
        }
    }

    /// The deframer, to read into.
    pub(crate) fn deframer(&mut self) -> &mut Deframer {
        &mut self.deframer
    }

    /// Decodes what was received: messages (with their frame's flags),
    /// goaway, error, cancel, credit and end frames go to the end of
    /// `deliver`, for the application; returns the first frame that needs
    /// the driver, or `None` when more bytes are needed.
    ///
    /// Pongs (which only prove the peer alive, as any bytes do) and frame
    /// kinds added to the wire format later are consumed without an event.
    /// (Delivered items go straight to `deliver`, not through an event:
    /// at millions of small messages a second, each move of a message
    /// counts.)
    ///
    /// # Errors
    ///
    /// Every way received bytes can be wrong: a record that fails to open, a
    /// malformed frame, a body that does not decompress, a malformed message
    /// envelope. The connection cannot go on after any of them.
    pub(crate) fn poll_event(
        &mut self,
        deliver: &mut VecDeque<Incoming>,
    ) -> Result<Option<Event>, Error> {
        // Counted in locals and stored once: this loop runs per frame.
        let mut frames = 0;
        let mut data = false;
        let result = loop {
            let frame = match self.deframer.poll_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break Ok(None),
                Err(error) => break Err(error),
            };
            frames += 1;
            match frame {
                Frame::Data(body) => {
                    data = true;
                    if decompress_aside(&body) {
                        break Ok(Some(Event::DecompressAside(body)));
                    }
                    let flags = body.flags;
                    let envelope = self
                        .codec
                        .decompress(body)
                        .map_err(Error::from)
                        .and_then(|body| message(body, flags));
                    match envelope {
                        Ok(envelope) => deliver.push_back(envelope),
                        Err(error) => break Err(error),
                    }
                }
                Frame::Ping(token) => break Ok(Some(Event::Reply(Frame::Pong(token)))),
                Frame::GoAway(goaway) => deliver.push_back(Incoming::GoAway(goaway)),
                Frame::Error(error) => deliver.push_back(Incoming::Error(error)),
                Frame::Cancel(id) => deliver.push_back(Incoming::Cancel(id)),
                Frame::Credit(credit) => deliver.push_back(Incoming::Credit(credit)),
                Frame::End(id) => deliver.push_back(Incoming::End(id)),
                _ => {}
            }
        };
        self.frames += frames;
        self.data |= data;
        result
    }

    /// Frames decoded since the last call, and whether any was a data frame.
    pub(crate) fn take_counts(&mut self) -> (u64, bool) {
        let counts = (self.frames, self.data);
        self.frames = 0;
        self.data = false;
        counts
    }

    /// Lends the decompression context out, for a body to decompress aside;
    /// give it back with [`put_codec`](Self::put_codec).
    pub(crate) fn take_codec(&mut self) -> Codec {
        std::mem::take(&mut self.codec)
    }

    /// Takes the decompression context back.
    pub(crate) fn put_codec(&mut self, codec: Codec) {
        self.codec = codec;
    }
}

/// The message a data frame's (decompressed) body carries, with the frame's
/// `flags`.
///
/// # Errors
///
/// [`Error::Protocol`] for a malformed envelope.
#[inline]
pub(crate) fn message(body: Bytes, flags: DataFlags) -> Result<Incoming, Error> {
    Ok(Incoming::Message(Envelope::decode_with_flags(body, flags)?))
}
