//! The bodies of control frames, and the error codes they carry.

use alloc::string::String;
use core::ops::RangeInclusive;

/// The error code carried by [`GoAway`] and [`ErrorFrame`]: a `u16` in
/// three ranges (PROTOCOL.md Part I §4.4).
///
/// | codes | for |
/// |---|---|
/// | [`PROTOCOL_CODES`](Self::PROTOCOL_CODES), 0-999 | the protocol: [`NO_ERROR`](Self::NO_ERROR) to [`SCHEMA_MISMATCH`](Self::SCHEMA_MISMATCH), the rest reserved for its later versions |
/// | [`COMMON_CODES`](Self::COMMON_CODES), 1000-1999 | application errors with one meaning for every application: [`NOT_FOUND`](Self::NOT_FOUND), [`INVALID_ARGUMENT`](Self::INVALID_ARGUMENT), [`PERMISSION_DENIED`](Self::PERMISSION_DENIED), [`UNAVAILABLE`](Self::UNAVAILABLE), the rest reserved for more |
/// | [`CUSTOM_CODES`](Self::CUSTOM_CODES), 2000-65535 | each application's own codes |
///
/// A handler answers with a protocol code whose meaning fits
/// ([`HANDLER_FAILED`](Self::HANDLER_FAILED) by default), a common code, or
/// one of its own; it gives no meaning of its own to a code below 2000.
/// Every value is valid on the wire, and one not named here is passed to
/// the application unchanged.
///
/// # Examples
///
/// ```
/// use netproto_wire::ErrorCode;
///
/// assert!(ErrorCode::NOT_FOUND.is_application());
/// assert!(ErrorCode::DEADLINE_EXCEEDED.is_protocol());
/// // An application's own code: anything from 2000 up.
/// let quota_exceeded = ErrorCode(2001);
/// assert!(ErrorCode::CUSTOM_CODES.contains(&quota_exceeded.0));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode(pub u16);

impl ErrorCode {
    /// The protocol's codes: those named up to
    /// [`SCHEMA_MISMATCH`](Self::SCHEMA_MISMATCH), and the rest reserved for
    /// later versions of the protocol.
    pub const PROTOCOL_CODES: RangeInclusive<u16> = 0..=999;
    /// Application errors with one meaning for every application:
    /// [`NOT_FOUND`](Self::NOT_FOUND) and the three after it, the rest
    /// reserved for more such codes.
    pub const COMMON_CODES: RangeInclusive<u16> = 1000..=1999;
    /// Codes each application defines for itself.
    pub const CUSTOM_CODES: RangeInclusive<u16> = 2000..=u16::MAX;

    /// Whether the code is the protocol's ([`PROTOCOL_CODES`](Self::PROTOCOL_CODES)).
    pub const fn is_protocol(self) -> bool {
        self.0 <= *Self::PROTOCOL_CODES.end()
    }

    /// Whether the code is an application's: a common code
    /// ([`COMMON_CODES`](Self::COMMON_CODES)) or its own
    /// ([`CUSTOM_CODES`](Self::CUSTOM_CODES)).
    pub const fn is_application(self) -> bool {
        !self.is_protocol()
    }

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

    /// What the request names does not exist (a key, a record, a file).
    pub const NOT_FOUND: Self = Self(1000);
    /// The request decoded, but its values are not acceptable, whatever the
    /// state of the responder (an empty name, a negative count). A request
    /// that does not decode is [`BAD_MESSAGE`](Self::BAD_MESSAGE).
    pub const INVALID_ARGUMENT: Self = Self(1001);
    /// The requester may not do this: the peer's key or credentials do not
    /// allow it.
    pub const PERMISSION_DENIED: Self = Self(1002);
    /// Something the handler needs (a database, another service) is out of
    /// reach for now; the same request may succeed later. The handler ran:
    /// retry only a request that may run twice.
    pub const UNAVAILABLE: Self = Self(1003);
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

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn ranges_split_every_code_without_overlap() {
        for code in 0..=u16::MAX {
            let in_ranges = [
                ErrorCode::PROTOCOL_CODES.contains(&code),
                ErrorCode::COMMON_CODES.contains(&code),
                ErrorCode::CUSTOM_CODES.contains(&code),
            ];
            assert_eq!(
                in_ranges.iter().filter(|&&inside| inside).count(),
                1,
                "{code}"
            );
            let code = ErrorCode(code);
            assert_eq!(code.is_application(), !code.is_protocol());
            assert_eq!(code.is_protocol(), in_ranges[0]);
        }
    }

    #[test]
    fn named_codes_sit_in_their_ranges() {
        for code in [
            ErrorCode::NO_ERROR,
            ErrorCode::HANDLER_FAILED,
            ErrorCode::SCHEMA_MISMATCH,
        ] {
            assert!(code.is_protocol(), "{code:?}");
        }
        for code in [
            ErrorCode::NOT_FOUND,
            ErrorCode::INVALID_ARGUMENT,
            ErrorCode::PERMISSION_DENIED,
            ErrorCode::UNAVAILABLE,
        ] {
            assert!(ErrorCode::COMMON_CODES.contains(&code.0), "{code:?}");
            assert!(code.is_application(), "{code:?}");
        }
        assert!(ErrorCode(2000).is_application() && ErrorCode(u16::MAX).is_application());
        assert!(ErrorCode(999).is_protocol() && !ErrorCode(1000).is_protocol());
    }
}
