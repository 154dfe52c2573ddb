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
