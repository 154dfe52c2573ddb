//! The encoding of typed values: postcard, with nothing left over.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;

/// Encodes `value` with postcard, as a request or response payload
/// (PROTOCOL.md Part III §5).
///
/// # Errors
///
/// [`Error::Encode`] when the value cannot be represented in postcard (for
/// example a sequence whose serializer does not know its length).
///
/// # Examples
///
/// ```
/// let bytes = netproto_service::to_bytes(&(300_u32, "hi"))?;
/// assert_eq!(&bytes[..], &[0xac, 0x02, 2, b'h', b'i']);
/// let back: (u32, String) = netproto_service::from_bytes(&bytes)?;
/// assert_eq!(back, (300, "hi".to_owned()));
/// # Ok::<(), netproto_service::Error>(())
/// ```
pub fn to_bytes<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, Error> {
    postcard::serialize_with_flavor(value, Buffer(BytesMut::with_capacity(INITIAL)))
        .map_err(Error::Encode)
}

/// What [`to_bytes`] reserves first: most payloads fit, so most encodings
/// allocate once (postcard's own `Vec` grows from nothing, and its `Vec` then
/// becomes `Bytes` with a second allocation).
const INITIAL: usize = 128;

/// A postcard output writing into a [`BytesMut`] and frozen into [`Bytes`].
struct Buffer(BytesMut);

impl postcard::ser_flavors::Flavor for Buffer {
    type Output = Bytes;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.put_u8(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Bytes> {
        Ok(self.0.freeze())
    }
}

/// Decodes a postcard payload as a `T`, refusing bytes left over after it.
///
/// # Errors
///
/// [`Error::Decode`] when the bytes are not a `T`; [`Error::TrailingBytes`]
/// when a `T` ends before the bytes do (the sender's type has more to it).
///
/// # Examples
///
/// ```
/// use netproto_service::{Error, from_bytes};
///
/// assert_eq!(from_bytes::<u8>(&[7])?, 7);
/// assert!(matches!(from_bytes::<u8>(&[7, 8]), Err(Error::TrailingBytes { len: 1 })));
/// assert!(matches!(from_bytes::<bool>(&[2]), Err(Error::Decode(_))));
/// # Ok::<(), Error>(())
/// ```
pub fn from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(Error::Decode)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(Error::TrailingBytes { len: rest.len() })
    }
}
