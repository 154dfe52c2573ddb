//! The schema fingerprint of a method (PROTOCOL.md Part III §5).

use std::any::{TypeId, type_name};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{OnceLock, PoisonError, RwLock};

use serde_reflection::{Format, Tracer, TracerConfig};
use sha2::{Digest, Sha256};

use crate::Method;

/// The 64-bit schema fingerprint of `M`'s request and response types.
///
/// Two programs built from the same type definitions compute the same
/// fingerprint, wherever the types are defined; a field added, removed,
/// renamed or retyped, a variant added, or a renamed type (serde's
/// container name, which postcard does not send but
/// [`serde_reflection`] records) changes it. The method's name and
/// version are not part of it.
///
/// It is computed as PROTOCOL.md Part III §5 says: one
/// [`serde_reflection::Tracer`] (default configuration) traces the enums
/// [`Method::trace_nested`] names, then the request type, then the response
/// type; the text `{request:?}{response:?}{registry:?}` (the two types'
/// formats and the registry of the named containers they reach) is hashed
/// with SHA-256, and the first 8 bytes of the hash, read big-endian, are
/// the fingerprint. A struct's format is only its name: its fields are in
/// the registry. An enum nested in the types and not named by
/// `trace_nested` counts with its first variant only (a warning is logged).
///
/// Types that [`serde_reflection`] cannot trace (a `Deserialize` that
/// validates its input or needs self-describing data, such as
/// `#[serde(untagged)]` enums, which postcard cannot decode either) get a
/// fingerprint of their Rust type names instead, which changes when a type
/// moves to another module; a warning is logged when that happens.
///
/// Computed once per method and process, then taken from a cache.
///
/// [`TypedClient`](crate::TypedClient) sends it with every request (the
/// `fingerprint` header of Part III §2), and [`register`](crate::register)
/// answers a request with another one `SCHEMA_MISMATCH`, without decoding
/// it, even when its bytes would decode.
///
/// # Examples
///
/// ```
/// use netproto_service::{Method, fingerprint};
///
/// struct Add;
/// impl Method for Add {
///     const NAME: &'static str = "calc.add.v1";
///     type Request = (u32, u32);
///     type Response = u64;
/// }
///
/// struct Sub;
/// impl Method for Sub {
///     const NAME: &'static str = "calc.sub.v1";
///     type Request = (u32, u32);
///     type Response = u64;
/// }
///
/// struct Add2;
/// impl Method for Add2 {
///     const NAME: &'static str = "calc.add.v2";
///     type Request = (u64, u64);
///     type Response = u64;
/// }
///
/// // The same types give the same fingerprint, other types another one.
/// assert_eq!(fingerprint::<Add>(), fingerprint::<Sub>());
/// assert_ne!(fingerprint::<Add>(), fingerprint::<Add2>());
/// ```
pub fn fingerprint<M: Method>() -> u64 {
    // Every call reads it: a per-thread copy first, so that threads calling
    // at once do not contend on the shared cache's lock.
    thread_local! {
        static LOCAL: RefCell<HashMap<TypeId, u64>> = RefCell::default();
    }
    static CACHE: OnceLock<RwLock<HashMap<TypeId, u64>>> = OnceLock::new();
    let key = TypeId::of::<M>();
    if let Some(known) = LOCAL.with_borrow(|local| local.get(&key).copied()) {
        return known;
    }
    let cache = CACHE.get_or_init(RwLock::default);
    let known = cache
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
        .copied();
    let value = known.unwrap_or_else(|| {
        let computed = hash(&schema::<M>());
        cache
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, computed);
        computed
    });
    LOCAL.with_borrow_mut(|local| local.insert(key, value));
    value
}

/// The text the fingerprint of `M` hashes.
pub(crate) fn schema<M: Method>() -> String {
    traced::<M>().unwrap_or_else(|error| {
        tracing::warn!(
            method = M::NAME,
            %error,
            "types cannot be traced: their fingerprint is taken from their rust names"
        );
        format!(
            "untraced {} {}",
            type_name::<M::Request>(),
            type_name::<M::Response>()
        )
    })
}

/// The formats of both types and their registry, in their `Debug` form.
fn traced<M: Method>() -> Result<String, serde_reflection::Error> {
    let (request, response, tracer) = trace::<M>()?;
    let registry = match tracer.registry() {
        Ok(registry) => registry,
        Err(error) => {
            tracing::warn!(
                method = M::NAME,
                %error,
                "the fingerprint covers only the enum variants seen: trace the enums nested in the method's types in Method::trace_nested"
            );
            // Tracing is deterministic: a second run gives the same partial
            // registry, which `registry()` would not hand out.
            let (_, _, tracer) = trace::<M>()?;
            tracer.registry_unchecked()
        }
    };
    Ok(format!("{request:?}{response:?}{registry:?}"))
}

/// Traces the nested enums `M` names, then its request and response types.
fn trace<M: Method>() -> Result<(Format, Format, Tracer), serde_reflection::Error> {
    let mut tracer = Tracer::new(TracerConfig::default());
    M::trace_nested(&mut tracer)?;
    let request = tracer.trace_simple_type::<M::Request>()?.0;
    let response = tracer.trace_simple_type::<M::Response>()?.0;
    Ok((request, response, tracer))
}

/// The first 8 bytes of the SHA-256 of `text`, big-endian.
fn hash(text: &str) -> u64 {
    Sha256::digest(text.as_bytes())
        .first_chunk::<8>()
        .copied()
        .map(u64::from_be_bytes)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
