use super::*;

fn compressible(len: usize) -> Bytes {
    (0..len)
        .map(|i| b"netproto "[i % 9])
        .collect::<Vec<u8>>()
        .into()
}

#[test]
fn both_algorithms_round_trip() {
    let mut codec = Codec::default();
    for algorithm in [Compression::Lz4, Compression::Zstd] {
        for len in [512, 4096, 1 << 20] {
            let body = compressible(len);
            let data = codec.compress(algorithm, body.clone()).unwrap();
            assert_eq!(data.compression, algorithm, "{algorithm:?} {len}");
            assert!(data.body.len() < len / 4);
            assert_eq!(codec.decompress(data).unwrap(), body);
        }
    }
}

#[test]
fn below_threshold_or_incompressible_stays_plain() {
    let mut codec = Codec::default();
    let small = compressible(DEFAULT_THRESHOLD - 1);
    let data = codec.compress(Compression::Zstd, small.clone()).unwrap();
    assert_eq!(data, Data::plain(small));
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let random: Bytes = (0..4096)
        .map(|_| {
            // xorshift64: incompressible enough for LZ4.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect::<Vec<_>>()
        .into();
    let data = codec.compress(Compression::Lz4, random.clone()).unwrap();
    assert_eq!(data.compression, Compression::None);
    assert_eq!(data.body, random);
}

#[test]
fn declared_length_over_limit_is_refused_before_decompressing() {
    let mut codec = Codec::new(Config {
        max_decompressed_len: 1024,
        ..Config::default()
    });
    let mut body = BytesMut::new();
    body.put_u32(u32::MAX);
    body.put_slice(&[0; 16]);
    for algorithm in [Compression::Lz4, Compression::Zstd] {
        let err = codec.decompress_body(algorithm, &body).unwrap_err();
        assert!(
            matches!(
                err,
                Error::TooLarge {
                    declared: u32::MAX,
                    max: 1024
                }
            ),
            "{err}"
        );
    }
}

#[test]
fn bomb_expanding_past_declared_length_is_corrupt() {
    // 1 MiB of zeros compresses to a few hundred bytes; declare only 1 KiB.
    let mut codec = Codec::default();
    let zeros = vec![0u8; 1 << 20];
    for algorithm in [Compression::Lz4, Compression::Zstd] {
        let mut body = BytesMut::new();
        codec.compress_into(algorithm, &zeros, &mut body).unwrap();
        assert!(body.len() < 5000, "{algorithm:?}: {}", body.len());
        body[..4].copy_from_slice(&1024u32.to_be_bytes());
        let err = codec.decompress_body(algorithm, &body).unwrap_err();
        assert!(
            matches!(err, Error::Corrupt { declared: 1024, .. }),
            "{err}"
        );
    }
}

#[test]
fn short_output_is_corrupt() {
    let mut codec = Codec::default();
    for algorithm in [Compression::Lz4, Compression::Zstd] {
        let mut body = BytesMut::new();
        codec
            .compress_into(algorithm, &compressible(1000), &mut body)
            .unwrap();
        body[..4].copy_from_slice(&2000u32.to_be_bytes());
        assert!(matches!(
            codec.decompress_body(algorithm, &body),
            Err(Error::Corrupt { declared: 2000, .. })
        ));
    }
}

#[test]
fn missing_prefix_is_an_error() {
    let mut codec = Codec::default();
    assert!(matches!(
        codec.decompress_body(Compression::Lz4, &[1, 2]),
        Err(Error::MissingLength(2))
    ));
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..2048), zstd: bool) {
        let mut codec = Codec::new(Config { max_decompressed_len: 1 << 16, ..Config::default() });
        let algorithm = if zstd { Compression::Zstd } else { Compression::Lz4 };
        if let Ok(out) = codec.decompress_body(algorithm, &body) {
            // Whatever decodes has exactly the declared length.
            proptest::prop_assert_eq!(out.len() as u32, u32::from_be_bytes(body[..4].try_into().unwrap()));
        }
    }

    #[test]
    fn compress_round_trips(body in proptest::collection::vec(0u8..4, 0..8192), zstd: bool) {
        let mut codec = Codec::default();
        let algorithm = if zstd { Compression::Zstd } else { Compression::Lz4 };
        let body = Bytes::from(body);
        let data = codec.compress(algorithm, body.clone()).unwrap();
        proptest::prop_assert_eq!(codec.decompress(data).unwrap(), body);
    }
}
