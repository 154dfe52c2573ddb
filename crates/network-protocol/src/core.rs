//! Frames and the codec: the `netproto-wire` crate, sans-IO.
//!
//! Everything of `netproto-wire` is here; [`codec`] and [`packet`] group it
//! as the original crate did. Use it alone to frame messages over any byte
//! pipe. The byte layouts are specified in `docs/PROTOCOL.md`.

pub use netproto_wire::*;

/// The codec: [`Decoder`] (bytes in, frames out, the length checked against
/// the limit when the header arrives) and [`Encoder`].
pub mod codec {
    pub use netproto_wire::{DEFAULT_MAX_FRAME_LEN, Decoder, Encoder, HEADER_LEN, READ_CHUNK};
}

/// The frame structure: header, kinds, data and control frames, and the
/// connection preface.
pub mod packet {
    pub use netproto_wire::{
        Compression, Data, ErrorCode, ErrorFrame, Frame, FrameKind, GoAway, Header,
        MAX_CONTROL_BODY, Preface, PrefaceAnswer, PrefaceStatus, SecurityMode,
    };
}
