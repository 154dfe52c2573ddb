//! The flags byte of a frame header: a data body's compression (Part I §4.1)
//! and the data frame flags of Part III §1.

use core::fmt;
use core::ops::{BitOr, BitOrAssign};

use crate::Error;

/// Mask of the flag bits that select a compression algorithm.
pub(crate) const COMPRESSION_MASK: u8 = 0b0000_0011;

/// The compression algorithm a data frame's body is compressed with.
///
/// Encoded in the low two bits of the flags byte. A compressed body starts
/// with its uncompressed length; `netproto-compress` produces and checks it.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// The body is the envelope itself.
    #[default]
    None,
    /// The body is LZ4 block-compressed.
    Lz4,
    /// The body is a Zstandard frame.
    Zstd,
}

impl Compression {
    /// The flag bits of this algorithm.
    pub const fn to_flags(self) -> u8 {
        match self {
            Self::None => 0,
            Self::Lz4 => 1,
            Self::Zstd => 2,
        }
    }

    /// The algorithm named by the compression bits of `flags`.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownFlags`] when the bits hold the reserved value 3.
    pub const fn from_flags(flags: u8) -> Result<Self, Error> {
        match flags & COMPRESSION_MASK {
            0 => Ok(Self::None),
            1 => Ok(Self::Lz4),
            2 => Ok(Self::Zstd),
            _ => Err(Error::UnknownFlags(flags)),
        }
    }
}

/// The flags of a data frame beyond its compression (PROTOCOL.md Part III
/// §1): what the frame says about the envelope it carries.
///
/// They travel in bits 2-3 of the flags byte and apply to the envelope,
/// compressed or not; a control frame has none. The other bits of the byte
/// are the [`Compression`] (bits 0-1) and reserved bits (4-7), which are
/// errors when set.
///
/// # Examples
///
/// ```
/// use netproto_wire::DataFlags;
///
/// let flags = DataFlags::HEADERS | DataFlags::STREAM;
/// assert!(flags.contains(DataFlags::STREAM));
/// assert_eq!(flags.bits(), 0x0c);
/// assert_eq!(flags.difference(DataFlags::HEADERS), DataFlags::STREAM);
/// assert_eq!(DataFlags::from_bits(0x10), None);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DataFlags(u8);

impl DataFlags {
    /// No flag: a plain envelope.
    pub const NONE: Self = Self(0);
    /// `0x04`: the envelope's payload begins with a header block
    /// ([`Headers`](crate::Headers)).
    pub const HEADERS: Self = Self(0x04);
    /// `0x08`: the frame is one item of a server stream.
    pub const STREAM: Self = Self(0x08);

    /// Every bit a data frame may have besides its compression.
    pub(crate) const MASK: u8 = Self::HEADERS.0 | Self::STREAM.0;

    /// The bits of these flags, as they stand in the flags byte.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// The flags of `bits`; `None` when a bit other than
    /// [`HEADERS`](Self::HEADERS) or [`STREAM`](Self::STREAM) is set.
    pub const fn from_bits(bits: u8) -> Option<Self> {
        if bits & !Self::MASK == 0 {
            Some(Self(bits))
        } else {
            None
        }
    }

    /// The data flags in a whole flags byte, the other bits ignored.
    pub(crate) const fn from_flags_byte(flags: u8) -> Self {
        Self(flags & Self::MASK)
    }

    /// Whether every flag of `other` is set in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The flags set in either.
    #[must_use]
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// The flags of `self` without those of `other`.
    #[must_use]
    pub const fn difference(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }
}

impl BitOr for DataFlags {
    type Output = Self;

    fn bitor(self, other: Self) -> Self {
        self.union(other)
    }
}

impl BitOrAssign for DataFlags {
    fn bitor_assign(&mut self, other: Self) {
        *self = self.union(other);
    }
}

impl fmt::Debug for DataFlags {
    /// `DataFlags(HEADERS | STREAM)`, `DataFlags(NONE)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataFlags(")?;
        let mut names = [(Self::HEADERS, "HEADERS"), (Self::STREAM, "STREAM")]
            .into_iter()
            .filter(|(flag, _)| self.contains(*flag))
            .map(|(_, name)| name);
        match names.next() {
            None => f.write_str("NONE")?,
            Some(first) => {
                f.write_str(first)?;
                for name in names {
                    write!(f, " | {name}")?;
                }
            }
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_combine_and_print() {
        let both = DataFlags::HEADERS | DataFlags::STREAM;
        assert_eq!(format!("{both:?}"), "DataFlags(HEADERS | STREAM)");
        assert_eq!(format!("{:?}", DataFlags::NONE), "DataFlags(NONE)");
        assert!(both.contains(DataFlags::HEADERS) && both.contains(DataFlags::NONE));
        assert!(!DataFlags::STREAM.contains(both));
        let mut flags = DataFlags::default();
        assert!(flags.is_empty());
        flags |= DataFlags::STREAM;
        assert_eq!(flags, DataFlags::STREAM);
        assert_eq!(both.difference(DataFlags::STREAM), DataFlags::HEADERS);
        for bits in 0..=u8::MAX {
            let known = bits & !DataFlags::MASK == 0;
            assert_eq!(DataFlags::from_bits(bits).is_some(), known, "{bits:#04x}");
            assert_eq!(DataFlags::from_flags_byte(bits).bits(), bits & 0x0c);
        }
    }
}
