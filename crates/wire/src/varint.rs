//! Varints as postcard writes them (unsigned LEB128, PROTOCOL.md Part I §5),
//! for the envelope head and the header block.

use bytes::{BufMut, BytesMut};

/// Appends `value` as an unsigned LEB128 varint, as postcard writes it: the
/// shortest form.
pub(crate) fn put_varint(dst: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        dst.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    dst.put_u8(value as u8);
}

/// Bytes of postcard's varint (LEB128) encoding of `value`.
pub(crate) const fn varint_len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Reads a varint off the front of `bytes`, as postcard reads a `u64`: a
/// longer form than needed is read for its value, within ten bytes. Returns
/// the value and the bytes after it; `None` when the varint is truncated or
/// overlong.
pub(crate) fn take_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    postcard::take_from_bytes::<u64>(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_len_matches_postcard() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let encoded = postcard::to_allocvec(&v).unwrap();
            assert_eq!(varint_len(v), encoded.len(), "{v}");
            let mut written = BytesMut::new();
            put_varint(&mut written, v);
            assert_eq!(&written[..], &encoded[..], "{v}");
            assert_eq!(take_varint(&encoded), Some((v, &[][..])), "{v}");
        }
    }

    #[test]
    fn varints_are_read_as_part_i_says() {
        // A longer form than needed is read for its value.
        assert_eq!(take_varint(&[0x81, 0x00, 7]), Some((1, &[7][..])));
        // Truncated, a tenth byte above 01, an eleventh byte.
        assert_eq!(take_varint(&[0x80]), None);
        assert_eq!(take_varint(&[]), None);
        let mut ten = [0xff; 10];
        ten[9] = 0x02;
        assert_eq!(take_varint(&ten), None);
        ten[9] = 0x01;
        assert_eq!(take_varint(&ten), Some((u64::MAX, &[][..])));
        assert_eq!(take_varint(&[0xff; 11]), None);
    }
}
