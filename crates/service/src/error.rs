//! The errors of this crate: [`Error`] for encoding and decoding,
//! [`CallError`] for a typed call.

use netproto_wire::ErrorCode;

/// A value that could not be encoded or decoded.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Postcard could not encode the value.
    #[error("value cannot be encoded")]
    Encode(#[source] postcard::Error),
    /// The bytes are not a value of the expected type.
    #[error("bytes do not decode as the expected type")]
    Decode(#[source] postcard::Error),
    /// A value of the expected type ended before the bytes did.
    #[error("{len} bytes left over after the value")]
    TrailingBytes {
        /// How many bytes were left.
        len: usize,
    },
}

/// Why a typed call failed.
///
/// The variants tell apart an answer from the server ([`Remote`](Self::Remote)),
/// an answer that is not what the method returns ([`Decode`](Self::Decode),
/// [`UnexpectedType`](Self::UnexpectedType)), and a request that got no
/// answer ([`Connection`](Self::Connection)); the predicates sort them for
/// retry and timeout decisions without matching.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The request value could not be encoded; nothing was sent.
    #[error("{method}: the request cannot be encoded")]
    Encode {
        /// The method called.
        method: &'static str,
        /// Why.
        #[source]
        source: Error,
    },
    /// The server answered with an error frame. Its code says why:
    /// `NO_HANDLER` (3) for a method the server does not serve (or not in
    /// this version), `BAD_MESSAGE` (9) for a request that does not decode
    /// as the server's request type, `SCHEMA_MISMATCH` (12) for types whose
    /// fingerprints differ, `TIMEOUT` (7) or `DEADLINE_EXCEEDED` (10) when
    /// the handler ran out of time, `OVERLOADED` (5), `SHUTTING_DOWN` (6),
    /// or the handler's own code: `HANDLER_FAILED` (4) by default, a common
    /// application code such as `NOT_FOUND` (1000), or one of the
    /// application's (2000 and up).
    ///
    /// The text is the server's; it is shown escaped.
    #[error("{method}: {} (code {}): {message:?}", describe(*code), code.0)]
    Remote {
        /// The method called.
        method: &'static str,
        /// The request the error answers.
        request_id: u64,
        /// The server's code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The answer does not decode as the method's response type: the
    /// server's type differs. No value is returned from it.
    #[error("{method}: the answer does not decode as the response type")]
    Decode {
        /// The method called.
        method: &'static str,
        /// Why.
        #[source]
        source: Error,
    },
    /// The answer came under another message type than the method's: the
    /// server registered something else under that name.
    #[error("{method}: the answer has message type {got:?}")]
    UnexpectedType {
        /// The method called.
        method: &'static str,
        /// The answer's message type.
        got: String,
    },
    /// No answer arrived: the request timed out on this side (its deadline
    /// or the correlator's request timeout passed), the
    /// connection was lost or closed, the server is going away, or the
    /// request is larger than the server accepts. The source says which.
    #[error("{method}: no answer")]
    Connection {
        /// The method called.
        method: &'static str,
        /// Why.
        #[source]
        source: netproto_dispatch::Error,
    },
}

/// What an error code means for the caller, in a few words.
fn describe(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::NO_HANDLER => "unknown method",
        ErrorCode::BAD_MESSAGE => "request rejected as undecodable",
        ErrorCode::SCHEMA_MISMATCH => "schema mismatch",
        ErrorCode::TIMEOUT => "timed out on the server",
        ErrorCode::DEADLINE_EXCEEDED => "deadline exceeded",
        ErrorCode::OVERLOADED => "server overloaded",
        ErrorCode::SHUTTING_DOWN => "server shutting down",
        ErrorCode::TOO_LARGE => "too large",
        ErrorCode::HANDLER_FAILED => "handler failed",
        ErrorCode::NOT_FOUND => "not found",
        ErrorCode::INVALID_ARGUMENT => "invalid argument",
        ErrorCode::PERMISSION_DENIED => "permission denied",
        ErrorCode::UNAVAILABLE => "unavailable",
        code if code.is_application() => "application error",
        _ => "failed remotely",
    }
}

impl CallError {
    /// Sorts an error of the correlator: an error frame becomes
    /// [`Remote`](Self::Remote), anything else [`Connection`](Self::Connection).
    pub(crate) fn from_dispatch(method: &'static str, error: netproto_dispatch::Error) -> Self {
        match error {
            netproto_dispatch::Error::Remote {
                request_id,
                code,
                message,
            } => Self::Remote {
                method,
                request_id,
                code,
                message,
            },
            source => Self::Connection { method, source },
        }
    }

    /// The method whose call failed.
    pub fn method(&self) -> &'static str {
        match self {
            Self::Encode { method, .. }
            | Self::Remote { method, .. }
            | Self::Decode { method, .. }
            | Self::UnexpectedType { method, .. }
            | Self::Connection { method, .. } => method,
        }
    }

    /// The protocol error code behind the failure, when there is one: the
    /// server's code for [`Remote`](Self::Remote); for
    /// [`Connection`](Self::Connection), `TIMEOUT` when no answer came in
    /// time and the goaway's code when the server is going away.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Remote { code, .. } => Some(*code),
            Self::Connection { source, .. } => source.code(),
            _ => None,
        }
    }

    /// Whether the server answered with an error frame.
    pub fn is_remote(&self) -> bool {
        matches!(self, Self::Remote { .. })
    }

    /// Whether time ran out: the server's handler took too long (`TIMEOUT`,
    /// `DEADLINE_EXCEEDED`), or no answer came in time on this side (the
    /// request timeout or the call's deadline). Tell a deadline from the
    /// other timeouts with [`is_deadline_exceeded`](Self::is_deadline_exceeded).
    pub fn is_timeout(&self) -> bool {
        match self {
            Self::Remote { code, .. } => {
                matches!(*code, ErrorCode::TIMEOUT | ErrorCode::DEADLINE_EXCEEDED)
            }
            Self::Connection { source, .. } => source.is_timeout(),
            _ => false,
        }
    }

    /// Whether the call's deadline passed, on the server
    /// (`DEADLINE_EXCEEDED`: its handler was dropped) or here before the
    /// answer came.
    pub fn is_deadline_exceeded(&self) -> bool {
        match self {
            Self::Remote { code, .. } => *code == ErrorCode::DEADLINE_EXCEEDED,
            Self::Connection { source, .. } => source.is_deadline_exceeded(),
            _ => false,
        }
    }

    /// Whether the server has the method under another schema fingerprint
    /// (`SCHEMA_MISMATCH`): it refused the request without decoding it.
    pub fn is_schema_mismatch(&self) -> bool {
        self.is_remote() && self.code() == Some(ErrorCode::SCHEMA_MISMATCH)
    }

    /// Whether the server does not know the method (`NO_HANDLER`): it serves
    /// no such name, or not this version of it.
    pub fn is_unknown_method(&self) -> bool {
        self.is_remote() && self.code() == Some(ErrorCode::NO_HANDLER)
    }

    /// Whether the client's and the server's types for the method differ:
    /// the server could not decode the request (`BAD_MESSAGE`) or saw
    /// another fingerprint (`SCHEMA_MISMATCH`), or the answer did not decode
    /// here. Sending it again cannot succeed.
    pub fn is_type_mismatch(&self) -> bool {
        match self {
            Self::Remote { code, .. } => {
                matches!(*code, ErrorCode::BAD_MESSAGE | ErrorCode::SCHEMA_MISMATCH)
            }
            Self::Decode { .. } | Self::UnexpectedType { .. } => true,
            _ => false,
        }
    }

    /// Whether sending the request again, on this connection or another,
    /// may succeed and cannot run the handler twice: the server refused it
    /// without handling it (`OVERLOADED`, `SHUTTING_DOWN`), or it was never
    /// processed (closed here before it was sent, or above the server's
    /// goaway). A timeout or a lost connection is not retryable in this
    /// sense: the handler may have run; retry those only for idempotent
    /// methods.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Remote { code, .. } => {
                matches!(*code, ErrorCode::OVERLOADED | ErrorCode::SHUTTING_DOWN)
            }
            Self::Connection { source, .. } => source.is_unprocessed(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests;
