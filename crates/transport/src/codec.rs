//! A [`tokio_util::codec`] for netproto frames, for users who bring their own
//! stream.
//!
//! [`FrameCodec`] turns any `AsyncRead + AsyncWrite` into a `Stream` and
//! `Sink` of [`Frame`]s with [`Framed`](tokio_util::codec::Framed), using the
//! sans-IO [`netproto_wire::Decoder`] and [`netproto_wire::Encoder`]. It does
//! the framing and the limits only: no preface, no security handshake, no
//! heartbeat, no decompression, no request ids. A [`Connection`](crate::Connection)
//! does all of those; the codec is for a stream whose other end speaks bare
//! frames (the plain mode after its preface, or inside a channel that is
//! already secured). A data frame's body is an
//! [`Envelope`](netproto_wire::Envelope): decode it with
//! [`Envelope::decode_with_flags`](netproto_wire::Envelope::decode_with_flags),
//! which gives it the frame's flags.
//!
//! # Examples
//!
//! ```
//! use futures::{SinkExt, StreamExt};
//! use netproto_transport::codec::FrameCodec;
//! use netproto_wire::Frame;
//! use tokio_util::codec::Framed;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), netproto_transport::Error> {
//! let (a, b) = tokio::io::duplex(64 * 1024);
//! let mut a = Framed::new(a, FrameCodec::new());
//! let mut b = Framed::new(b, FrameCodec::new());
//! a.send(Frame::Ping(7)).await?;
//! assert_eq!(b.next().await.transpose()?, Some(Frame::Ping(7)));
//! # Ok(())
//! # }
//! ```

use bytes::BytesMut;
use netproto_wire::{DEFAULT_MAX_FRAME_LEN, Frame};

use crate::Error;

/// Decodes and encodes netproto [`Frame`]s for
/// [`tokio_util::codec::Framed`], [`FramedRead`](tokio_util::codec::FramedRead)
/// and [`FramedWrite`](tokio_util::codec::FramedWrite).
///
/// A data frame whose body is longer than the limit is refused in both
/// directions ([`Error::Protocol`] with
/// [`FrameTooLarge`](netproto_wire::Error::FrameTooLarge) when decoding,
/// [`EncodeTooLarge`](netproto_wire::Error::EncodeTooLarge) when encoding);
/// a refused header is reported as soon as its six bytes arrive, and no
/// memory is reserved for a body the peer has only declared. After a decode
/// error the stream is out of sync: drop it.
///
/// Errors are [`Error`]s, which convert into [`std::io::Error`] for callers
/// that want one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameCodec {
    decoder: netproto_wire::Decoder,
    encoder: netproto_wire::Encoder,
}

impl Default for FrameCodec {
    /// A codec with the default 16 MiB body limit.
    fn default() -> Self {
        Self::new()
    }
}

impl FrameCodec {
    /// A codec with the default 16 MiB body limit
    /// ([`DEFAULT_MAX_FRAME_LEN`]).
    pub fn new() -> Self {
        Self::with_max_frame_len(DEFAULT_MAX_FRAME_LEN)
    }

    /// A codec that refuses data bodies longer than `max_frame_len` bytes,
    /// received or sent. Both sides should use the same limit.
    pub fn with_max_frame_len(max_frame_len: u32) -> Self {
        Self {
            decoder: netproto_wire::Decoder::new(max_frame_len),
            encoder: netproto_wire::Encoder::new(max_frame_len),
        }
    }

    /// The body-length limit.
    pub fn max_frame_len(&self) -> u32 {
        self.decoder.max_frame_len()
    }
}

impl tokio_util::codec::Decoder for FrameCodec {
    type Item = Frame;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        Ok(self.decoder.decode(src)?)
    }
}

impl tokio_util::codec::Encoder<Frame> for FrameCodec {
    type Error = Error;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), Error> {
        self.encode(&frame, dst)
    }
}

impl tokio_util::codec::Encoder<&Frame> for FrameCodec {
    type Error = Error;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), Error> {
        Ok(self.encoder.encode(frame, dst)?)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use futures::{SinkExt, StreamExt};
    use netproto_wire::{Data, ErrorCode, GoAway};
    use tokio::io::AsyncWriteExt;
    use tokio_util::codec::{Encoder as _, Framed, FramedRead};

    use super::*;

    fn frames() -> Vec<Frame> {
        vec![
            Frame::Ping(1),
            Frame::Data(Data::plain(Bytes::from_static(b"hello"))),
            Frame::Data(Data::plain(Bytes::from(vec![7; 100_000]))),
            Frame::Pong(1),
            Frame::GoAway(GoAway::new(9, ErrorCode::NO_ERROR, "bye")),
        ]
    }

    #[tokio::test]
    async fn frames_round_trip_over_framed() {
        let (a, b) = tokio::io::duplex(4096);
        let mut a = Framed::new(a, FrameCodec::new());
        let mut b = Framed::new(b, FrameCodec::new());
        let sent = frames();
        let writer = {
            let sent = sent.clone();
            tokio::spawn(async move {
                for frame in sent {
                    a.send(frame).await.unwrap();
                }
                a
            })
        };
        for want in sent {
            assert_eq!(b.next().await.unwrap().unwrap(), want);
        }
        drop(writer.await.unwrap());
        assert!(b.next().await.is_none(), "clean end of stream");
    }

    #[tokio::test]
    async fn a_frame_split_across_reads_is_decoded_once_whole() {
        let mut wire = BytesMut::new();
        let mut codec = FrameCodec::new();
        for frame in frames() {
            codec.encode(&frame, &mut wire).unwrap();
        }
        let (mut writer, reader) = tokio::io::duplex(64);
        let mut reader = FramedRead::new(reader, FrameCodec::new());
        let feed = tokio::spawn(async move {
            // Odd-sized pieces, each flushed on its own, so headers and
            // bodies are cut in the middle.
            for piece in wire.chunks(7) {
                writer.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        for want in frames() {
            assert_eq!(reader.next().await.unwrap().unwrap(), want);
        }
        feed.await.unwrap();
        assert!(reader.next().await.is_none());
    }

    #[tokio::test]
    async fn an_oversized_frame_is_refused_both_ways() {
        let big = Frame::Data(Data::plain(Bytes::from(vec![0; 1025])));
        // Encoding: refused before anything is written.
        let mut dst = BytesMut::new();
        let err = FrameCodec::with_max_frame_len(1024)
            .encode(&big, &mut dst)
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Protocol(netproto_wire::Error::EncodeTooLarge { .. })
            ),
            "{err:?}"
        );
        assert!(dst.is_empty());
        // Decoding: refused from the header alone, before the body arrives.
        let mut wire = BytesMut::new();
        FrameCodec::new().encode(&big, &mut wire).unwrap();
        let (mut writer, reader) = tokio::io::duplex(64 * 1024);
        writer
            .write_all(wire.get(..netproto_wire::HEADER_LEN).unwrap())
            .await
            .unwrap();
        let mut reader = FramedRead::new(reader, FrameCodec::with_max_frame_len(1024));
        let err = reader.next().await.unwrap().unwrap_err();
        assert!(
            matches!(
                err,
                Error::Protocol(netproto_wire::Error::FrameTooLarge {
                    len: 1025,
                    max: 1024
                })
            ),
            "{err:?}"
        );
        assert!(err.is_protocol());
        assert_eq!(
            std::io::Error::from(err).kind(),
            std::io::ErrorKind::InvalidData
        );
    }

    #[tokio::test]
    async fn a_stream_ending_inside_a_frame_is_an_error() {
        let mut wire = BytesMut::new();
        FrameCodec::new()
            .encode(&Frame::Ping(3), &mut wire)
            .unwrap();
        let (mut writer, reader) = tokio::io::duplex(1024);
        writer.write_all(wire.get(..4).unwrap()).await.unwrap();
        drop(writer);
        let mut reader = FramedRead::new(reader, FrameCodec::new());
        let err = reader.next().await.unwrap().unwrap_err();
        assert!(matches!(err, Error::Io(_)), "{err:?}");
    }
}
