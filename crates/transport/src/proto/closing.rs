//! What a connection tells its peer before it closes on the peer's error.

use netproto_wire::{ErrorCode, ErrorFrame, Frame};

use crate::Error;

/// The error frame (request id 0) that explains `error` to the peer, when
/// `error` is the peer's doing and the peer can still read what we send: a
/// malformed frame, a body that does not decompress, an envelope that does
/// not decode. `None` for every other end (a record that fails to open, a
/// timeout, an I/O error), after which nothing is sent.
///
/// The message is the error's text, which PROTOCOL.md fixes for each case
/// (for example `unknown frame flags 0x10`).
pub(crate) fn closing_frame(error: &Error) -> Option<Frame> {
    use netproto_compress::Error as C;
    use netproto_wire::Error as W;
    let code = match error {
        // A frame too large to send is this side's doing.
        Error::Protocol(W::EncodeTooLarge { .. }) => return None,
        Error::Protocol(W::FrameTooLarge { .. } | W::ControlTooLarge(_))
        | Error::Compression(C::TooLarge { .. }) => ErrorCode::TOO_LARGE,
        Error::Protocol(
            W::BadEnvelope | W::BadTypeName(_) | W::InvalidUtf8("message type") | W::BadHeaders,
        ) => ErrorCode::BAD_MESSAGE,
        Error::Protocol(_) | Error::Compression(_) => ErrorCode::PROTOCOL,
        _ => return None,
    };
    let message = match error {
        Error::Protocol(wire) => wire.to_string(),
        Error::Compression(compression) => compression.to_string(),
        _ => error.to_string(),
    };
    Some(Frame::Error(ErrorFrame::new(0, code, message)))
}
