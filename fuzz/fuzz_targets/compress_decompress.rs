//! Arbitrary bytes as compressed bodies: decompression never panics, never
//! produces more than the limit, and what decompresses re-compresses and
//! round-trips.

#![no_main]

use libfuzzer_sys::fuzz_target;
use netproto_compress::{Codec, Config};
use netproto_wire::Compression;

fuzz_target!(|data: &[u8]| {
    let Some((selector, body)) = data.split_first() else {
        return;
    };
    let algorithm = if selector & 1 == 0 {
        Compression::Lz4
    } else {
        Compression::Zstd
    };
    let mut config = Config::default();
    config.max_decompressed_len = 1 << 20;
    let mut codec = Codec::new(config);
    if let Ok(out) = codec.decompress_body(algorithm, body) {
        assert!(out.len() <= 1 << 20);
        let mut again = bytes::BytesMut::new();
        codec
            .compress_into(algorithm, &out, &mut again)
            .expect("compresses");
        assert_eq!(
            codec
                .decompress_body(algorithm, &again)
                .expect("round-trips"),
            out
        );
    }
});
