//! Sans-IO frames, messages and limits of the netproto protocol.
//!
//! This crate turns messages into bytes and bytes into messages, and does
//! nothing else: it contains no networking code, no clock reads and no
//! runtime. Use it alone to speak netproto over any byte pipe (an embedded
//! UART, a WebAssembly host's socket, a custom runtime), or let
//! `netproto-transport` drive it over TCP, Unix sockets, TLS or Noise.
//!
//! Without its default `std` feature it builds as `no_std` with `alloc`.
//!
//! The byte layouts are specified normatively in `docs/PROTOCOL.md`.
//!
//! # Examples
//!
//! ```
//! use bytes::BytesMut;
//! use netproto_wire::{Decoder, Encoder, Envelope, Frame, Message};
//!
//! // Sender: a request with id 1.
//! let mut wire = BytesMut::new();
//! let envelope = Message::Echo("hello".into()).to_envelope(1);
//! Encoder::default().encode(&Frame::Data(envelope.to_data()), &mut wire)?;
//!
//! // Receiver: bytes may arrive in any pieces.
//! let mut decoder = Decoder::default();
//! let Some(Frame::Data(data)) = decoder.decode(&mut wire)? else {
//!     unreachable!("a whole data frame is in the buffer");
//! };
//! let envelope = Envelope::decode(data.body)?;
//! assert_eq!(envelope.request_id, 1);
//! assert_eq!(Message::try_from(envelope)?, Message::Echo("hello".into()));
//! # Ok::<(), netproto_wire::Error>(())
//! ```
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

mod control;
mod decoder;
mod error;
mod flags;
mod frame;
mod headers;
mod message;
mod preface;
mod varint;

pub use control::{Credit, ErrorCode, ErrorFrame, GoAway};
pub use decoder::{Decoder, READ_CHUNK};
pub use error::Error;
pub use flags::{Compression, DataFlags};
pub use frame::{
    DEFAULT_MAX_FRAME_LEN, Data, Encoder, Frame, FrameKind, HEADER_LEN, Header, MAX_CONTROL_BODY,
    MIN_MAX_FRAME_LEN,
};
pub use headers::{Headers, Traceparent};
pub use message::{Envelope, MAX_TYPE_LEN, Message, MessageType};
pub use preface::{
    MAGIC, PREFACE_LEN, PROTOCOL_VERSION, Preface, PrefaceAnswer, PrefaceStatus, SecurityMode,
};

/// Re-exported so that users name the same `Bytes` types as this crate.
pub use bytes;
