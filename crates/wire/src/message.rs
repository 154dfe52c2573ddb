//! Message envelopes, and the typed messages built into the protocol.

use alloc::string::String;
use core::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::varint::{put_varint, varint_len};
use crate::{Compression, Data, DataFlags, Encoder, Error, Frame, Headers};

/// Longest message type name, in bytes.
pub const MAX_TYPE_LEN: usize = 255;

/// A message type name: 1 to [`MAX_TYPE_LEN`] bytes of UTF-8.
///
/// Handlers are registered by this name. Decoding slices it out of the
/// received frame, so it costs no allocation.
#[derive(Clone)]
pub struct MessageType(Repr);

/// Longest name kept inline (no allocation, no shared reference count).
const INLINE: usize = 30;

#[derive(Clone)]
enum Repr {
    Static(&'static str),
    Inline { len: u8, bytes: [u8; INLINE] },
    Shared(Bytes),
}

impl PartialEq for MessageType {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for MessageType {}

impl core::hash::Hash for MessageType {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for MessageType {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for MessageType {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        // UTF-8 bytes sort as their text does.
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl MessageType {
    /// The type of [`Message::Ping`].
    pub const PING: Self = Self::from_static("PING");
    /// The type of [`Message::Pong`].
    pub const PONG: Self = Self::from_static("PONG");
    /// The type of [`Message::Echo`].
    pub const ECHO: Self = Self::from_static("ECHO");
    /// The type of [`Message::Unknown`].
    pub const UNKNOWN: Self = Self::from_static("UNKNOWN");

    /// The names reserved for the built-in messages.
    pub const RESERVED: [&'static str; 4] = ["PING", "PONG", "ECHO", "UNKNOWN"];

    /// A type name from a string literal, checked at compile time in constants.
    ///
    /// # Panics
    ///
    /// When `name` is empty or longer than [`MAX_TYPE_LEN`]: a programming
    /// error, caught at compile time when used in a `const`.
    pub const fn from_static(name: &'static str) -> Self {
        assert!(
            !name.is_empty() && name.len() <= MAX_TYPE_LEN,
            "message type names have 1 to 255 bytes"
        );
        Self(Repr::Static(name))
    }

    /// A type name from any string.
    ///
    /// # Errors
    ///
    /// [`Error::BadTypeName`] when `name` is empty or too long.
    pub fn new(name: impl Into<String>) -> Result<Self, Error> {
        let name: String = name.into();
        check_type_len(name.len())?;
        Ok(Self::from_checked(&name)
            .unwrap_or_else(|| Self(Repr::Shared(Bytes::from(name.into_bytes())))))
    }

    /// A short name copied inline; `None` when it is too long for that.
    fn from_checked(name: &str) -> Option<Self> {
        let len = u8::try_from(name.len()).ok()?;
        let mut bytes = [0; INLINE];
        bytes
            .get_mut(..name.len())?
            .copy_from_slice(name.as_bytes());
        Some(Self(Repr::Inline { len, bytes }))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        if let Repr::Static(name) = &self.0 {
            return name;
        }
        // Every constructor checks UTF-8, so the fallback is never taken.
        core::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// The name's bytes (its UTF-8 text), without checking them again:
    /// cheaper than [`as_str`](Self::as_str) to compare names.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Static(name) => name.as_bytes(),
            Repr::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            Repr::Shared(bytes) => bytes,
        }
    }

    /// Whether this is one of the [`RESERVED`](Self::RESERVED) names.
    pub fn is_reserved(&self) -> bool {
        Self::RESERVED.contains(&self.as_str())
    }
}

impl fmt::Debug for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<&str> for MessageType {
    type Error = Error;

    fn try_from(name: &str) -> Result<Self, Error> {
        Self::new(name)
    }
}

fn check_type_len(len: usize) -> Result<(), Error> {
    if (1..=MAX_TYPE_LEN).contains(&len) {
        Ok(())
    } else {
        Err(Error::BadTypeName(len))
    }
}

/// The postcard-encoded head of an envelope; the payload follows it unencoded.
#[derive(Serialize, Deserialize)]
struct Head<'a> {
    request_id: u64,
    #[serde(borrow)]
    msg_type: &'a str,
}

/// A message as carried in a data frame: request id, type name, payload,
/// and the flags of its frame.
///
/// Layout: the postcard encoding of `(request_id: u64, msg_type: &str)` (a
/// varint, then a varint length and the UTF-8 bytes), then the payload up to
/// the end of the frame body. The flags travel in the frame's header, not in
/// the body: the frame encoders here write them, and a receiver gives them
/// back to the envelope it decodes with
/// [`decode_with_flags`](Self::decode_with_flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Correlates a response with its request; 0 means one-way (no response).
    pub request_id: u64,
    /// The message type name, used to route the message to its handler.
    pub msg_type: MessageType,
    /// What the data frame says about the envelope: with
    /// [`DataFlags::HEADERS`] the payload begins with a header block
    /// (see [`take_headers`](Self::take_headers)); with
    /// [`DataFlags::STREAM`] the message is one item of a server stream.
    pub flags: DataFlags,
    /// Application bytes (after a header block, when the flags say so).
    pub payload: Bytes,
}

impl Envelope {
    /// An envelope, without flags.
    pub const fn new(request_id: u64, msg_type: MessageType, payload: Bytes) -> Self {
        Self {
            request_id,
            msg_type,
            flags: DataFlags::NONE,
            payload,
        }
    }

    /// The envelope with `flags` in place of its own, to send it with them.
    #[must_use]
    pub const fn with_flags(mut self, flags: DataFlags) -> Self {
        self.flags = flags;
        self
    }

    /// Removes the header block from the front of the payload when the flags
    /// have [`DataFlags::HEADERS`], and clears that flag: the envelope is
    /// then what it would be had it been sent without the block, so a second
    /// call returns `Ok(None)`. Without the flag, returns `Ok(None)` at the
    /// cost of a test of a bit (the method is inlined).
    ///
    /// The payload left is a slice of the same buffer: nothing is copied.
    ///
    /// # Errors
    ///
    /// [`Error::BadHeaders`] (see [`Headers::split_from`]); the envelope is
    /// then left as it was. PROTOCOL.md Part III §2 makes this a
    /// `BAD_MESSAGE` error that ends the connection, as a malformed envelope
    /// does.
    #[inline]
    pub fn take_headers(&mut self) -> Result<Option<Headers>, Error> {
        if !self.flags.contains(DataFlags::HEADERS) {
            return Ok(None);
        }
        let headers = Headers::split_from(&mut self.payload)?;
        self.flags = self.flags.difference(DataFlags::HEADERS);
        Ok(Some(headers))
    }

    /// Decodes an envelope from an uncompressed data-frame body, without
    /// flags; [`decode_with_flags`](Self::decode_with_flags) gives it those
    /// of its frame.
    ///
    /// The type name and the payload are slices of `body`: nothing is copied.
    ///
    /// # Errors
    ///
    /// [`Error::BadEnvelope`] when the head is malformed or not UTF-8,
    /// [`Error::BadTypeName`] when the type name is empty or too long.
    #[inline]
    pub fn decode(body: Bytes) -> Result<Self, Error> {
        Self::decode_with_flags(body, DataFlags::NONE)
    }

    /// Decodes an envelope from an uncompressed data-frame body, with the
    /// `flags` of its frame ([`Data::flags`]). The header block the flags
    /// may announce stays at the front of the payload, for
    /// [`take_headers`](Self::take_headers).
    ///
    /// The type name and the payload are slices of `body`: nothing is copied,
    /// and the flags cost nothing more (setting them afterwards, with
    /// [`with_flags`](Self::with_flags), moves the envelope once more).
    ///
    /// # Errors
    ///
    /// As [`decode`](Self::decode).
    pub fn decode_with_flags(body: Bytes, flags: DataFlags) -> Result<Self, Error> {
        let (head, rest) = postcard::take_from_bytes::<Head<'_>>(&body).map_err(|e| match e {
            postcard::Error::DeserializeBadUtf8 => Error::InvalidUtf8("message type"),
            _ => Error::BadEnvelope,
        })?;
        check_type_len(head.msg_type.len())?;
        // Short names are copied inline, longer ones sliced out of the body;
        // the payload is the body itself, advanced past the head: no copy,
        // and no extra reference-count traffic per message.
        let msg_type = MessageType::from_checked(head.msg_type)
            .unwrap_or_else(|| MessageType(Repr::Shared(body.slice_ref(head.msg_type.as_bytes()))));
        let request_id = head.request_id;
        let consumed = body.len() - rest.len();
        let mut payload = body;
        payload.advance(consumed);
        Ok(Self {
            request_id,
            msg_type,
            flags,
            payload,
        })
    }

    /// Length of the encoded envelope, which is the data frame's body length.
    pub fn encoded_len(&self) -> usize {
        let type_len = self.msg_type.as_str().len();
        varint_len(self.request_id) + varint_len(type_len as u64) + type_len + self.payload.len()
    }

    /// Appends the encoded envelope (the data frame's body) to `dst`; the
    /// flags are not part of it, but of the frame's header.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(self.encoded_len());
        self.put_head(dst);
        dst.put_slice(&self.payload);
    }

    /// The head: postcard's encoding of `Head`, written directly: a varint
    /// request id, then the type name as a varint length and its bytes
    /// (checked against postcard in the tests).
    fn put_head(&self, dst: &mut BytesMut) {
        let msg_type = self.msg_type.as_str().as_bytes();
        put_varint(dst, self.request_id);
        put_varint(dst, msg_type.len() as u64);
        dst.put_slice(msg_type);
    }

    /// Appends the header of an uncompressed data frame carrying this
    /// envelope (with its flags) and the envelope's head to `dst`, but not
    /// the payload: the
    /// caller sends [`payload`](Self::payload) right after these bytes (a
    /// vectored write, say) and the frame is complete, without the payload
    /// being copied.
    ///
    /// # Errors
    ///
    /// [`Error::EncodeTooLarge`] when the envelope exceeds the encoder's limit.
    pub fn encode_frame_head(&self, encoder: &Encoder, dst: &mut BytesMut) -> Result<(), Error> {
        encoder.encode_data_header(Compression::None, self.flags, self.encoded_len(), dst)?;
        self.put_head(dst);
        Ok(())
    }

    /// Appends a whole uncompressed data frame carrying this envelope (with
    /// its flags) to `dst`, without building the body separately.
    ///
    /// # Errors
    ///
    /// [`Error::EncodeTooLarge`] when the envelope exceeds the encoder's limit.
    pub fn encode_frame(&self, encoder: &Encoder, dst: &mut BytesMut) -> Result<(), Error> {
        let len = self.encoded_len();
        encoder.encode_data_header(Compression::None, self.flags, len, dst)?;
        dst.reserve(len);
        self.put_head(dst);
        dst.put_slice(&self.payload);
        Ok(())
    }

    /// The envelope as an uncompressed data frame with its flags (copies it
    /// into a new body).
    pub fn to_data(&self) -> Data {
        let mut body = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut body);
        Data {
            flags: self.flags,
            ..Data::plain(body.freeze())
        }
    }

    /// The envelope as an uncompressed [`Frame`].
    pub fn to_frame(&self) -> Frame {
        Frame::Data(self.to_data())
    }
}

/// The messages built into the protocol, plus application messages.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// An application-level ping (`PING`, empty payload).
    Ping,
    /// The answer to [`Message::Ping`] (`PONG`, empty payload).
    Pong,
    /// Text to be sent back (`ECHO`, UTF-8 payload).
    Echo(String),
    /// An application message: its type name and its bytes.
    Custom {
        /// The type name; not one of [`MessageType::RESERVED`].
        msg_type: MessageType,
        /// The payload.
        data: Bytes,
    },
    /// A message of no known meaning (`UNKNOWN`, empty payload); handlers
    /// may answer with it when a request makes no sense to them.
    Unknown,
}

impl Message {
    /// An application message, its type name checked now.
    ///
    /// This checks the name on every call. For a type known when the
    /// program is written, make the type once, as a constant checked at
    /// compile time, and use [`custom_static`](Self::custom_static), which
    /// checks nothing and allocates nothing per message.
    ///
    /// # Errors
    ///
    /// [`Error::BadTypeName`] for an empty or too long name,
    /// [`Error::ReservedTypeName`] for a built-in name.
    pub fn custom(msg_type: impl Into<String>, data: impl Into<Bytes>) -> Result<Self, Error> {
        let msg_type = MessageType::new(msg_type)?;
        if msg_type.is_reserved() {
            return Err(Error::ReservedTypeName);
        }
        Ok(Self::Custom {
            msg_type,
            data: data.into(),
        })
    }

    /// An application message of a type made beforehand, typically a
    /// constant from [`MessageType::from_static`] (checked at compile time):
    /// no check and no allocation per message.
    ///
    /// Give it an application type: a built-in one
    /// ([`MessageType::RESERVED`]) makes a message the peer reads as that
    /// built-in message (use [`Message::Echo`] and the others for those).
    ///
    /// # Examples
    ///
    /// ```
    /// use netproto_wire::{Message, MessageType};
    ///
    /// const KV_GET: MessageType = MessageType::from_static("kv.get");
    ///
    /// let request = Message::custom_static(KV_GET, &b"color"[..]);
    /// assert_eq!(request.message_type(), "kv.get");
    /// assert_eq!(Message::custom("kv.get", &b"color"[..]), Ok(request));
    /// ```
    pub fn custom_static(msg_type: MessageType, data: impl Into<Bytes>) -> Self {
        Self::Custom {
            msg_type,
            data: data.into(),
        }
    }

    /// The type name this message travels under.
    pub fn message_type(&self) -> &str {
        match self {
            Self::Ping => "PING",
            Self::Pong => "PONG",
            Self::Echo(_) => "ECHO",
            Self::Custom { msg_type, .. } => msg_type.as_str(),
            Self::Unknown => "UNKNOWN",
        }
    }

    /// The envelope carrying this message under `request_id` (0 = one-way).
    pub fn to_envelope(&self, request_id: u64) -> Envelope {
        let (msg_type, payload) = match self {
            Self::Ping => (MessageType::PING, Bytes::new()),
            Self::Pong => (MessageType::PONG, Bytes::new()),
            Self::Echo(text) => (MessageType::ECHO, Bytes::from(text.clone().into_bytes())),
            Self::Custom { msg_type, data } => (msg_type.clone(), data.clone()),
            Self::Unknown => (MessageType::UNKNOWN, Bytes::new()),
        };
        Envelope::new(request_id, msg_type, payload)
    }
}

impl TryFrom<Envelope> for Message {
    type Error = Error;

    /// Reads a typed message out of an envelope.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUtf8`] for an `ECHO` payload that is not UTF-8,
    /// [`Error::BadEnvelope`] for a `PING`, `PONG` or `UNKNOWN` with a payload.
    fn try_from(envelope: Envelope) -> Result<Self, Error> {
        let empty = |message: Self| {
            if envelope.payload.is_empty() {
                Ok(message)
            } else {
                Err(Error::BadEnvelope)
            }
        };
        match envelope.msg_type.as_str() {
            "PING" => empty(Self::Ping),
            "PONG" => empty(Self::Pong),
            "UNKNOWN" => empty(Self::Unknown),
            "ECHO" => core::str::from_utf8(&envelope.payload)
                .map(|text| Self::Echo(text.into()))
                .map_err(|_| Error::InvalidUtf8("echo payload")),
            _ => Ok(Self::Custom {
                msg_type: envelope.msg_type,
                data: envelope.payload,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_varint_longer_than_needed_is_read_for_its_value() {
        // Request id 1 written in two bytes (81 00), type length 1 in two
        // (81 00): accepted as 1 and "A", as postcard reads them.
        let body = Bytes::from_static(&[0x81, 0x00, 0x81, 0x00, b'A', b'!']);
        let envelope = Envelope::decode(body).unwrap();
        assert_eq!(envelope.request_id, 1);
        assert_eq!(envelope.msg_type.as_str(), "A");
        assert_eq!(&envelope.payload[..], b"!");
    }

    #[test]
    fn head_is_written_as_postcard_writes_it() {
        let long = "T".repeat(MAX_TYPE_LEN);
        for request_id in [0, 1, 127, 128, 16_384, u64::from(u32::MAX), u64::MAX] {
            for msg_type in ["X", "ECHO", long.as_str()] {
                let head = Head {
                    request_id,
                    msg_type,
                };
                let mut expected = postcard::to_allocvec(&head).unwrap();
                expected.extend_from_slice(b"payload");
                let envelope = Envelope::new(
                    request_id,
                    MessageType::new(msg_type).unwrap(),
                    Bytes::from_static(b"payload"),
                );
                let mut written = BytesMut::new();
                envelope.encode(&mut written);
                assert_eq!(&written[..], &expected[..], "{request_id} {msg_type:?}");
                assert_eq!(envelope.encoded_len(), expected.len());
                // The head alone, then the payload: the same frame.
                let encoder = Encoder::default();
                let mut whole = BytesMut::new();
                envelope.encode_frame(&encoder, &mut whole).unwrap();
                let mut split = BytesMut::new();
                envelope.encode_frame_head(&encoder, &mut split).unwrap();
                split.extend_from_slice(&envelope.payload);
                assert_eq!(split, whole);
            }
        }
    }

    #[test]
    fn envelope_slices_without_copy() {
        let env = Envelope::new(300, MessageType::ECHO, Bytes::from_static(b"abc"));
        let mut buf = BytesMut::new();
        env.encode(&mut buf);
        assert_eq!(buf.len(), env.encoded_len());
        let body = buf.freeze();
        let decoded = Envelope::decode(body.clone()).unwrap();
        assert_eq!(decoded, env);
        let range = body.as_ptr_range();
        assert!(range.contains(&decoded.payload.as_ptr()));
    }

    #[test]
    fn reserved_names_are_refused_for_custom() {
        assert_eq!(
            Message::custom("ECHO", Bytes::new()),
            Err(Error::ReservedTypeName)
        );
        assert_eq!(
            Message::custom("", Bytes::new()),
            Err(Error::BadTypeName(0))
        );
        let long = "x".repeat(256);
        assert_eq!(
            Message::custom(long, Bytes::new()),
            Err(Error::BadTypeName(256))
        );
    }

    #[test]
    fn builtin_messages_round_trip() {
        let custom = Message::custom("DATA", &b"\x00\x01"[..]).unwrap();
        for msg in [
            Message::Ping,
            Message::Pong,
            Message::Echo("héllo".into()),
            custom,
            Message::Unknown,
        ] {
            let env = msg.to_envelope(9);
            assert_eq!(env.msg_type.as_str(), msg.message_type());
            assert_eq!(Message::try_from(env).unwrap(), msg);
        }
    }
}
