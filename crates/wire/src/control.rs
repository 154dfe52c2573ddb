//! The bodies of control frames, and the error codes they carry.

use alloc::string::String;

/// Well-known error codes carried by [`GoAway`] and [`ErrorFrame`].
///
/// Codes not listed here are valid on the wire and must be passed through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode(pub u16);

impl ErrorCode {
    /// No error: a plain graceful close.
    pub const NO_ERROR: Self = Self(0);
    /// The peer broke the protocol (a malformed frame, a bad sequence).
    pub const PROTOCOL: Self = Self(1);
    /// The sender hit an internal error.
    pub const INTERNAL: Self = Self(2);
    /// No handler is registered for the request's message type.
    pub const NO_HANDLER: Self = Self(3);
    /// The handler of the request failed.
    pub const HANDLER_FAILED: Self = Self(4);
    /// The sender is overloaded and refused the request.
    pub const OVERLOADED: Self = Self(5);
    /// The sender is shutting down and will not process the request.
    pub const SHUTTING_DOWN: Self = Self(6);
    /// The request took longer than the sender allows.
    pub const TIMEOUT: Self = Self(7);
    /// A frame or message exceeded a limit of the sender.
    pub const TOO_LARGE: Self = Self(8);
    /// The message could not be decoded.
    pub const BAD_MESSAGE: Self = Self(9);
    /// The request's deadline (its `deadline` header) passed before its answer.
    pub const DEADLINE_EXCEEDED: Self = Self(10);
    /// The request was cancelled (reported locally by a requester; a
    /// responder need not send it).
    pub const CANCELLED: Self = Self(11);
    /// The request's type fingerprint (its `fingerprint` header) is not the
    /// responder's for that method.
    pub const SCHEMA_MISMATCH: Self = Self(12);
}

/// A goaway frame: the sender stops taking new requests.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoAway {
    /// The highest request id the sender has taken and will still answer.
    pub last_request_id: u64,
    /// Why the sender is going away.
    pub code: ErrorCode,
    /// Human-readable reason, for logs.
    pub reason: String,
}

impl GoAway {
    /// A goaway frame.
    pub fn new(last_request_id: u64, code: ErrorCode, reason: impl Into<String>) -> Self {
        Self {
            last_request_id,
            code,
            reason: reason.into(),
        }
    }
}

/// An error frame: a request failed, or the connection is about to close.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFrame {
    /// The request this error answers; 0 for the connection as a whole.
    pub request_id: u64,
    /// What went wrong.
    pub code: ErrorCode,
    /// Human-readable text, for logs and callers.
    pub message: String,
}

impl ErrorFrame {
    /// An error frame.
    pub fn new(request_id: u64, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            request_id,
            code,
            message: message.into(),
        }
    }
}

/// A credit frame (PROTOCOL.md Part III §4): the requester of a server
/// stream lets the responder send `items` more items of it.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Credit {
    /// The request whose stream gets the credit.
    pub request_id: u64,
    /// Items added to the stream's credit (the sum saturates at `u32::MAX`).
    pub items: u32,
}

impl Credit {
    /// A credit frame.
    pub const fn new(request_id: u64, items: u32) -> Self {
        Self { request_id, items }
    }
}
