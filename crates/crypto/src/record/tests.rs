//! Unit tests of the record layer.

use super::*;

fn pair(interval: u64) -> (Sealer, Opener) {
    let config = RecordConfig {
        rekey_interval: interval,
    };
    let key = [0x42; KEY_LEN];
    (
        Sealer::from_key(provider::rust_crypto(), &key, &config).unwrap(),
        Opener::from_key(provider::rust_crypto(), &key, &config).unwrap(),
    )
}

#[test]
fn large_plaintext_spans_records() {
    let (mut sealer, mut opener) = pair(0);
    let plaintext: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    let mut wire = BytesMut::new();
    sealer.seal(&plaintext, &mut wire).unwrap();
    assert_eq!(sealer.nonce(), 4);
    assert_eq!(wire.len(), plaintext.len() + 4 * 18);
    let mut got = Vec::new();
    while let Some(chunk) = opener.open(&mut wire).unwrap() {
        assert!(chunk.len() <= MAX_RECORD_PLAINTEXT);
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got, plaintext);
    assert!(wire.is_empty());
}

#[test]
fn empty_plaintext_is_one_record() {
    let (mut sealer, mut opener) = pair(0);
    let mut wire = BytesMut::new();
    sealer.seal(b"", &mut wire).unwrap();
    assert_eq!(&wire[..2], &[0, 16]);
    assert_eq!(wire.len(), 18);
    assert_eq!(opener.open(&mut wire).unwrap().unwrap().len(), 0);
}

#[test]
fn partial_records_wait_for_more_bytes() {
    let (mut sealer, mut opener) = pair(0);
    let mut wire = BytesMut::new();
    sealer.seal(b"abc", &mut wire).unwrap();
    let full = wire.clone();
    for cut in 0..full.len() {
        let mut partial = BytesMut::from(&full[..cut]);
        assert_eq!(opener.open(&mut partial).unwrap(), None);
        assert_eq!(partial.len(), cut);
    }
    assert_eq!(opener.open(&mut wire).unwrap().unwrap(), &b"abc"[..]);
}

#[test]
fn nonce_two_to_the_64_minus_one_is_never_used() {
    let (mut sealer, mut opener) = pair(0);
    sealer.0.nonce = u64::MAX - 2;
    opener.0.nonce = u64::MAX - 2;
    let mut wire = BytesMut::new();
    sealer.seal(b"last", &mut wire).unwrap();
    assert_eq!(sealer.nonce(), u64::MAX - 1);
    assert!(matches!(
        sealer.seal(b"x", &mut wire),
        Err(Error::NonceExhausted)
    ));
    assert_eq!(wire.len(), 2 + 4 + 16, "nothing appended on error");
    assert_eq!(opener.open(&mut wire).unwrap().unwrap(), &b"last"[..]);
    assert!(matches!(opener.open(&mut wire), Err(Error::NonceExhausted)));
    // A multi-record seal that would cross the limit appends nothing.
    sealer.0.nonce = u64::MAX - 2;
    let mut wire = BytesMut::new();
    let big = vec![0u8; MAX_RECORD_PLAINTEXT + 1];
    assert!(matches!(
        sealer.seal(&big, &mut wire),
        Err(Error::NonceExhausted)
    ));
    assert!(wire.is_empty());
}

#[test]
fn rekey_happens_on_both_sides_at_the_interval() {
    let (mut sealer, mut opener) = pair(3);
    let mut wire = BytesMut::new();
    for i in 0..10u8 {
        sealer.seal(&[i], &mut wire).unwrap();
        assert_eq!(opener.open(&mut wire).unwrap().unwrap(), &[i][..]);
    }
    // The first three records match a sealer that never rekeys; the fourth differs.
    let (mut a, _) = pair(3);
    let (mut b, _) = pair(0);
    let (mut wa, mut wb) = (BytesMut::new(), BytesMut::new());
    for i in 0..4u8 {
        wa.clear();
        wb.clear();
        a.seal(&[i], &mut wa).unwrap();
        b.seal(&[i], &mut wb).unwrap();
        assert_eq!(wa == wb, i < 3, "record {i}");
    }
}

#[test]
fn short_record_poisons() {
    let (_, mut opener) = pair(0);
    let mut wire = BytesMut::from(&[0u8, 15][..]);
    assert!(matches!(
        opener.open(&mut wire),
        Err(Error::RecordTooShort(15))
    ));
    assert!(opener.is_poisoned());
    assert!(matches!(
        opener.open(&mut BytesMut::new()),
        Err(Error::Poisoned)
    ));
    assert_eq!(opener.nonce(), 0);
}

/// Every provider this build has, with each AEAD it offers.
fn openers_and_sealers() -> Vec<(String, Sealer, Opener)> {
    #[cfg_attr(not(feature = "ring"), allow(unused_mut))]
    let mut providers = vec![("rust_crypto", provider::rust_crypto())];
    #[cfg(feature = "ring")]
    providers.push(("ring", provider::ring()));
    let key = [0x17; KEY_LEN];
    let config = RecordConfig::default();
    let mut out = Vec::new();
    for (name, p) in providers {
        for cipher in [
            CipherAlgorithm::ChaCha20Poly1305,
            CipherAlgorithm::Aes256Gcm,
        ] {
            let sealer = Sealer::from_key_with_cipher(p.clone(), cipher, &key, &config);
            let opener = Opener::from_key_with_cipher(p.clone(), cipher, &key, &config);
            if let (Ok(sealer), Ok(opener)) = (sealer, opener) {
                out.push((format!("{name} {cipher:?}"), sealer, opener));
            }
        }
    }
    assert!(out.len() >= 2, "at least ChaCha and AES-GCM of RustCrypto");
    out
}

#[test]
fn open_within_keeps_the_plaintext_contiguous_over_the_gaps() {
    for (name, mut sealer, mut opener) in openers_and_sealers() {
        // Three records of different sizes, behind 5 bytes of earlier plaintext.
        let plaintext: Vec<u8> = (0..150_000u32).map(|i| (i * 7) as u8).collect();
        let mut wire = BytesMut::new();
        sealer.seal(&plaintext[..1000], &mut wire).unwrap();
        sealer.seal(&plaintext[1000..], &mut wire).unwrap();
        let mut buf = b"head:".to_vec();
        buf.extend_from_slice(&wire);
        let (mut end, mut gap) = (5, 0);
        while let Some((n, record_end)) = opener.open_within(&mut buf[end..], gap).unwrap() {
            end += n;
            gap = record_end - n;
        }
        assert_eq!(gap, 4 * (LENGTH_LEN + TAG_LEN), "{name}");
        assert_eq!(end + gap, buf.len(), "{name}: everything opened");
        assert_eq!(&buf[..5], b"head:", "{name}");
        assert_eq!(&buf[5..end], &plaintext[..], "{name}");
    }
}

#[test]
fn open_within_waits_for_a_whole_record_and_poisons_on_a_bad_one() {
    for (name, mut sealer, mut opener) in openers_and_sealers() {
        let mut wire = BytesMut::new();
        sealer.seal(b"abcdef", &mut wire).unwrap();
        let mut buf = vec![0xEE; 3];
        buf.extend_from_slice(&wire);
        for cut in 0..buf.len() {
            let mut partial = buf[..cut].to_vec();
            assert_eq!(
                opener.open_within(&mut partial, 3).unwrap(),
                None,
                "{name} {cut}"
            );
            assert_eq!(partial, buf[..cut], "{name}: nothing touched");
        }
        let mut good = buf.clone();
        assert_eq!(
            opener.open_within(&mut good, 3).unwrap(),
            Some((6, buf.len()))
        );
        assert_eq!(&good[..6], b"abcdef", "{name}");

        // The next record, with one ciphertext bit flipped.
        let mut wire = BytesMut::new();
        sealer.seal(b"ghijkl", &mut wire).unwrap();
        let mut bad = wire.to_vec();
        bad[4] ^= 1;
        assert!(
            matches!(opener.open_within(&mut bad, 0), Err(Error::Decrypt)),
            "{name}"
        );
        assert!(opener.is_poisoned(), "{name}");
        assert_eq!(opener.nonce(), 1, "{name}: the nonce stays");
        assert!(matches!(
            opener.open_within(&mut wire.to_vec(), 0),
            Err(Error::Poisoned)
        ));
    }
}

#[test]
fn sealing_parts_gives_the_records_of_the_joined_plaintext() {
    let plaintext: Vec<u8> = (0..200_000u32).map(|i| (i * 13) as u8).collect();
    for cuts in [
        vec![],
        vec![0, 0, 5],
        vec![1, 65_519, 65_520, 131_000],
        vec![100_000],
    ] {
        let (mut joined, _) = pair(0);
        let (mut split, mut opener) = pair(0);
        let mut expected = BytesMut::new();
        joined.seal(&plaintext, &mut expected).unwrap();
        let mut bounds = vec![0];
        bounds.extend(&cuts);
        bounds.push(plaintext.len());
        let parts: Vec<&[u8]> = bounds.windows(2).map(|w| &plaintext[w[0]..w[1]]).collect();
        let mut got = BytesMut::new();
        split.seal_parts(parts.iter().copied(), &mut got).unwrap();
        assert_eq!(got, expected, "cuts {cuts:?}");
        assert_eq!(split.nonce(), 4);
        let mut opened = Vec::new();
        while let Some(chunk) = opener.open(&mut got).unwrap() {
            opened.extend_from_slice(&chunk);
        }
        assert_eq!(opened, plaintext);
    }
    let (mut sealer, _) = pair(0);
    let mut out = BytesMut::new();
    sealer.seal_parts([&b""[..], b""], &mut out).unwrap();
    assert_eq!(
        out.len(),
        LENGTH_LEN + TAG_LEN,
        "nothing at all is one empty record"
    );
}
