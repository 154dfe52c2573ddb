//! The header block a request's payload may begin with (PROTOCOL.md Part III
//! §2): deadline, trace context, type fingerprint, stream credit.

use core::fmt;

use bytes::{Buf, Bytes, BytesMut};

use crate::Error;
use crate::varint::{put_varint, take_varint, varint_len};

/// Key of the `deadline` field.
const DEADLINE: u64 = 1;
/// Key of the `traceparent` field.
const TRACEPARENT: u64 = 2;
/// Key of the `fingerprint` field.
const FINGERPRINT: u64 = 3;
/// Key of the `stream` field.
const STREAM: u64 = 4;

/// The header block of a request: what a data frame with the
/// [`HEADERS`](crate::DataFlags::HEADERS) flag carries at the front of its
/// envelope's payload.
///
/// On the wire (PROTOCOL.md Part III §2) the block is a varint length, then
/// that many bytes of fields, each a varint key, a varint length and the
/// value; the keys increase from field to field. Fields whose key this
/// version does not know are skipped.
///
/// Build one by changing a default, then [`encode`](Self::encode) it in front
/// of the payload; a receiver takes it off with
/// [`Envelope::take_headers`](crate::Envelope::take_headers).
///
/// # Examples
///
/// ```
/// use bytes::{BufMut, BytesMut};
/// use netproto_wire::{DataFlags, Envelope, Headers, MessageType};
///
/// let mut headers = Headers::default();
/// headers.deadline = Some(1500);
/// headers.stream = Some(16);
/// let mut payload = BytesMut::new();
/// headers.encode(&mut payload);
/// payload.put_slice(b"request");
/// let mut envelope = Envelope::new(1, MessageType::new("kv.watch.v1")?, payload.freeze())
///     .with_flags(DataFlags::HEADERS);
///
/// // The receiver.
/// assert_eq!(envelope.take_headers()?, Some(headers));
/// assert_eq!(&envelope.payload[..], b"request");
/// assert_eq!(envelope.flags, DataFlags::NONE);
/// # Ok::<(), netproto_wire::Error>(())
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Headers {
    /// Key 1: the time the requester still gives the request when it sends
    /// it, in milliseconds; 0 has already expired.
    pub deadline: Option<u64>,
    /// Key 2: the W3C trace context the request belongs to. A malformed
    /// value on the wire is ignored (read as `None`).
    pub traceparent: Option<Traceparent>,
    /// Key 3: the schema fingerprint of the method's request and response
    /// types (8 bytes, big-endian, on the wire).
    pub fingerprint: Option<u64>,
    /// Key 4: the request asks for a server stream, granting this many items
    /// of credit to begin with.
    pub stream: Option<u32>,
}

impl Headers {
    /// Whether no field is set: such a block is worth leaving out, sending
    /// the envelope without [`HEADERS`](crate::DataFlags::HEADERS).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Length of the encoded block, its own length prefix included.
    pub fn encoded_len(&self) -> usize {
        let fields = self.fields_len();
        varint_len(fields as u64) + fields
    }

    /// Length of the fields, without the block's length prefix.
    fn fields_len(&self) -> usize {
        let field = |key: u64, len: usize| varint_len(key) + varint_len(len as u64) + len;
        self.deadline
            .map_or(0, |ms| field(DEADLINE, varint_len(ms)))
            + self
                .traceparent
                .map_or(0, |_| field(TRACEPARENT, Traceparent::LEN))
            + self.fingerprint.map_or(0, |_| field(FINGERPRINT, 8))
            + self
                .stream
                .map_or(0, |items| field(STREAM, varint_len(items.into())))
    }

    /// Appends the block to `dst`: its length, then the fields that are set,
    /// in key order, every varint in its shortest form.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(self.encoded_len());
        put_varint(dst, self.fields_len() as u64);
        if let Some(ms) = self.deadline {
            put_key(dst, DEADLINE, varint_len(ms));
            put_varint(dst, ms);
        }
        if let Some(traceparent) = &self.traceparent {
            put_key(dst, TRACEPARENT, Traceparent::LEN);
            dst.extend_from_slice(traceparent.as_bytes());
        }
        if let Some(fingerprint) = self.fingerprint {
            put_key(dst, FINGERPRINT, 8);
            dst.extend_from_slice(&fingerprint.to_be_bytes());
        }
        if let Some(items) = self.stream {
            put_key(dst, STREAM, varint_len(items.into()));
            put_varint(dst, items.into());
        }
    }

    /// Reads the block at the front of `payload` and removes it from there,
    /// leaving the application payload that follows (a slice of the same
    /// buffer: nothing is copied).
    ///
    /// # Errors
    ///
    /// [`Error::BadHeaders`] when the block runs past `payload`, its fields
    /// do not end exactly at its length, its keys do not increase (a key
    /// appears twice, say), or a field this version knows has a value of the
    /// wrong shape (a `deadline` or `stream` that is not one varint filling
    /// its value, a `stream` over `u32::MAX`, a `fingerprint` of other than
    /// 8 bytes). `payload` is then left as it was.
    pub fn split_from(payload: &mut Bytes) -> Result<Self, Error> {
        let (len, rest) = take_varint(payload).ok_or(Error::BadHeaders)?;
        let fields = usize::try_from(len)
            .ok()
            .and_then(|len| rest.get(..len))
            .ok_or(Error::BadHeaders)?;
        let headers = Self::parse(fields)?;
        let consumed = payload.len() - rest.len() + fields.len();
        payload.advance(consumed);
        Ok(headers)
    }

    /// The headers in `fields`, the bytes of a block after its length.
    fn parse(mut fields: &[u8]) -> Result<Self, Error> {
        let mut headers = Self::default();
        let mut previous = None;
        while !fields.is_empty() {
            let (key, rest) = take_varint(fields).ok_or(Error::BadHeaders)?;
            if previous.is_some_and(|previous| key <= previous) {
                return Err(Error::BadHeaders);
            }
            previous = Some(key);
            let (len, rest) = take_varint(rest).ok_or(Error::BadHeaders)?;
            let (value, rest) = usize::try_from(len)
                .ok()
                .and_then(|len| rest.split_at_checked(len))
                .ok_or(Error::BadHeaders)?;
            match key {
                DEADLINE => headers.deadline = Some(whole_varint(value)?),
                TRACEPARENT => headers.traceparent = Traceparent::parse(value),
                FINGERPRINT => {
                    let bytes = value.try_into().map_err(|_| Error::BadHeaders)?;
                    headers.fingerprint = Some(u64::from_be_bytes(bytes));
                }
                STREAM => {
                    let items = whole_varint(value)?;
                    headers.stream = Some(u32::try_from(items).map_err(|_| Error::BadHeaders)?);
                }
                _ => {}
            }
            fields = rest;
        }
        Ok(headers)
    }
}

/// Appends a field's key and value length.
fn put_key(dst: &mut BytesMut, key: u64, len: usize) {
    put_varint(dst, key);
    put_varint(dst, len as u64);
}

/// The varint that is the whole of `value`.
fn whole_varint(value: &[u8]) -> Result<u64, Error> {
    match take_varint(value) {
        Some((value, [])) => Ok(value),
        _ => Err(Error::BadHeaders),
    }
}

/// A W3C Trace Context `traceparent` of version `00`: the trace a request
/// belongs to, and the id of its parent span.
///
/// Always well formed: the 55 ASCII bytes `00-` + 32 lowercase hex digits
/// (the trace id, not all zero) + `-` + 16 (the parent id, not all zero) +
/// `-` + 2 (the trace flags).
///
/// # Examples
///
/// ```
/// use netproto_wire::Traceparent;
///
/// let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// let traceparent = Traceparent::parse(text.as_bytes()).unwrap();
/// assert_eq!(traceparent.trace_id(), 0x4bf92f3577b34da6a3ce929d0e0e4736);
/// assert_eq!(traceparent.parent_id(), 0x00f067aa0ba902b7);
/// assert_eq!(traceparent.trace_flags(), 1);
/// assert_eq!(Traceparent::new(traceparent.trace_id(), 0xf067aa0ba902b7, 1), Some(traceparent));
/// assert_eq!(traceparent.as_str(), text);
/// assert_eq!(Traceparent::parse(b"00-0-0-01"), None);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Traceparent([u8; Self::LEN]);

/// Where the trace id's digits are.
const TRACE_ID: core::ops::Range<usize> = 3..35;
/// Where the parent id's digits are.
const PARENT_ID: core::ops::Range<usize> = 36..52;
/// Where the trace flags' digits are.
const TRACE_FLAGS: core::ops::Range<usize> = 53..55;

impl Traceparent {
    /// Length of a `traceparent` of version `00`, in bytes.
    pub const LEN: usize = 55;

    /// The traceparent `value` holds; `None` unless it is well formed.
    pub fn parse(value: &[u8]) -> Option<Self> {
        let bytes: [u8; Self::LEN] = value.try_into().ok()?;
        let dashes = [2, TRACE_ID.end, PARENT_ID.end]
            .into_iter()
            .all(|at| bytes.get(at) == Some(&b'-'));
        let well_formed = bytes.starts_with(b"00")
            && dashes
            && hex_value(value.get(TRACE_ID)?)? != 0
            && hex_value(value.get(PARENT_ID)?)? != 0
            && hex_value(value.get(TRACE_FLAGS)?).is_some();
        well_formed.then_some(Self(bytes))
    }

    /// The traceparent of a span `parent_id` in trace `trace_id`; `None` when
    /// either id is 0, which W3C Trace Context reserves as invalid.
    pub fn new(trace_id: u128, parent_id: u64, trace_flags: u8) -> Option<Self> {
        if trace_id == 0 || parent_id == 0 {
            return None;
        }
        let text = b"00-"
            .iter()
            .copied()
            .chain(hex_digits(trace_id, TRACE_ID.len()))
            .chain([b'-'])
            .chain(hex_digits(parent_id.into(), PARENT_ID.len()))
            .chain([b'-'])
            .chain(hex_digits(trace_flags.into(), TRACE_FLAGS.len()));
        let mut bytes = [0; Self::LEN];
        for (slot, byte) in bytes.iter_mut().zip(text) {
            *slot = byte;
        }
        Some(Self(bytes))
    }

    /// The trace id.
    pub fn trace_id(&self) -> u128 {
        self.field(TRACE_ID)
    }

    /// The id of the parent span.
    pub fn parent_id(&self) -> u64 {
        self.field(PARENT_ID) as u64
    }

    /// The trace flags (bit 0: sampled).
    pub fn trace_flags(&self) -> u8 {
        self.field(TRACE_FLAGS) as u8
    }

    /// The 55 bytes as text.
    pub fn as_str(&self) -> &str {
        // Checked ASCII by every constructor: the fallback is never taken.
        core::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The 55 bytes, as they travel.
    pub const fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }

    /// The value of the hex digits at `range` (checked when built).
    fn field(&self, range: core::ops::Range<usize>) -> u128 {
        self.0.get(range).and_then(hex_value).unwrap_or_default()
    }
}

impl fmt::Debug for Traceparent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Traceparent").field(&self.as_str()).finish()
    }
}

impl fmt::Display for Traceparent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The value of lowercase hex `digits` (at most 32 of them); `None` for any
/// other byte.
fn hex_value(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |value, &digit| {
        let nibble = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => return None,
        };
        Some(value << 4 | u128::from(nibble))
    })
}

/// The last `count` hex digits of `value`, lowercase, most significant first.
fn hex_digits(value: u128, count: usize) -> impl Iterator<Item = u8> {
    (0..count).rev().map(move |i| {
        let nibble = (value >> (4 * i)) as u8 & 0xf;
        if nibble < 10 {
            b'0' + nibble
        } else {
            b'a' + nibble - 10
        }
    })
}

#[cfg(test)]
mod tests;
