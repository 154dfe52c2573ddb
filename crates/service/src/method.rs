//! The [`Method`] trait: a versioned name with a request and a response type.

use netproto_wire::{MAX_TYPE_LEN, MessageType};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_reflection::Tracer;

/// A typed method: a message type name that carries a version, and the
/// serde types of its request and its response (PROTOCOL.md Part III §5).
///
/// Implement it on a marker type, by hand or with [`service!`](crate::service):
///
/// ```
/// use netproto_service::Method;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Get {
///     key: String,
/// }
///
/// struct KvGet;
///
/// impl Method for KvGet {
///     const NAME: &'static str = "kv.get.v1";
///     type Request = Get;
///     type Response = Option<String>;
/// }
/// ```
///
/// The name is checked when the program is compiled, wherever the method is
/// registered or called: it must be a valid message type name (1 to 255
/// bytes), not one of the built-in names (`PING`, `PONG`, `ECHO`,
/// `UNKNOWN`), and end with its version, `.v` and a number (`kv.get.v1`).
/// A name that breaks these rules fails the build with an error naming the
/// rule:
///
/// ```compile_fail
/// # use netproto_dispatch::{Dispatcher, HandlerError};
/// # use netproto_service::{Context, Method, register};
/// struct NoVersion;
/// impl Method for NoVersion {
///     const NAME: &'static str = "kv.get";
///     type Request = ();
///     type Response = ();
/// }
///
/// let dispatcher = Dispatcher::default();
/// register::<NoVersion, _, _>(&dispatcher, |_: Context, (): ()| async { Ok::<_, HandlerError>(()) });
/// ```
///
/// Changing a method's types in a way its peers cannot read is changing
/// the method: give it a new version (`kv.get.v2`) and keep serving the old
/// one while clients move.
pub trait Method: 'static {
    /// The message type name requests of this method travel under, with its
    /// version: by convention `service.method.vN`.
    const NAME: &'static str;
    /// What the client sends.
    type Request: Serialize + DeserializeOwned + Send + 'static;
    /// What the server answers.
    type Response: Serialize + DeserializeOwned + Send + 'static;

    /// Traces, for the [`fingerprint`](crate::fingerprint), the enums
    /// nested in the request and response types, before those types are
    /// traced. The default traces none.
    ///
    /// [`serde_reflection`] sees every variant of an enum it traces on its
    /// own, and of an enum that is the request or response type itself, but
    /// only the first variant of an enum found inside another type; the
    /// others, and the types only they contain, are left out of the
    /// fingerprint (a warning is logged). Name such enums here, or in the
    /// `nested(..)` clause of [`service!`](crate::service).
    ///
    /// # Errors
    ///
    /// What tracing returns: the fingerprint then falls back to the types'
    /// Rust names.
    ///
    /// # Examples
    ///
    /// ```
    /// use netproto_service::Method;
    /// use netproto_service::serde_reflection::{Error, Tracer};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// enum Consistency {
    ///     Any,
    ///     Quorum { replicas: u8 },
    /// }
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Get {
    ///     key: String,
    ///     consistency: Consistency,
    /// }
    ///
    /// struct KvGet;
    ///
    /// impl Method for KvGet {
    ///     const NAME: &'static str = "kv.get.v1";
    ///     type Request = Get;
    ///     type Response = Option<String>;
    ///
    ///     fn trace_nested(tracer: &mut Tracer) -> Result<(), Error> {
    ///         tracer.trace_simple_type::<Consistency>()?;
    ///         Ok(())
    ///     }
    /// }
    /// ```
    fn trace_nested(tracer: &mut Tracer) -> Result<(), serde_reflection::Error> {
        let _ = tracer;
        Ok(())
    }
}

/// The message type of `M`, its name checked at compile time (see [`Method`]).
pub(crate) fn msg_type<M: Method>() -> MessageType {
    const { MessageType::from_static(checked_name(M::NAME)) }
}

/// `name` if it is a valid method name; otherwise a panic, which in a
/// constant is a compile-time error.
const fn checked_name(name: &'static str) -> &'static str {
    let bytes = name.as_bytes();
    assert!(
        !bytes.is_empty() && bytes.len() <= MAX_TYPE_LEN,
        "a method name has 1 to 255 bytes"
    );
    let mut reserved: &[&str] = &MessageType::RESERVED;
    while let Some((first, rest)) = reserved.split_first() {
        assert!(
            !eq(bytes, first.as_bytes()),
            "a method name cannot be a built-in message type"
        );
        reserved = rest;
    }
    assert!(
        has_version(bytes),
        "a method name ends with its version: `.v` and a number, as in `kv.get.v1`"
    );
    name
}

/// Whether `name` ends with `.v` and one or more ASCII digits.
const fn has_version(mut name: &[u8]) -> bool {
    let mut digits = 0;
    while let Some((last, rest)) = name.split_last() {
        if !last.is_ascii_digit() {
            break;
        }
        name = rest;
        digits += 1;
    }
    digits > 0 && matches!(name, [.., b'.', b'v'])
}

/// Byte-wise equality, usable in constants.
const fn eq(mut a: &[u8], mut b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    while let (Some((x, a_rest)), Some((y, b_rest))) = (a.split_first(), b.split_first()) {
        if *x != *y {
            return false;
        }
        a = a_rest;
        b = b_rest;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_recognised() {
        for good in ["kv.get.v1", "a.v0", "svc.do.v12", ".v3"] {
            assert!(has_version(good.as_bytes()), "{good}");
        }
        for bad in ["kv.get", "kv.get.v", "kv.getv1", "v1", "kv.get.v1x", ""] {
            assert!(!has_version(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn checked_names_pass_through() {
        assert_eq!(checked_name("kv.get.v1"), "kv.get.v1");
        assert!(eq(b"PING", b"PING") && !eq(b"PING", b"PONG") && !eq(b"PING", b"PIN"));
    }

    #[test]
    fn reserved_and_unversioned_names_are_refused() {
        for bad in ["PING", "kv.get", ""] {
            let result = std::panic::catch_unwind(|| checked_name(bad));
            assert!(result.is_err(), "{bad:?} was accepted");
        }
    }
}
