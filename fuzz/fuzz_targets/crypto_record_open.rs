//! Arbitrary bytes as a record stream to an opener, and a seal/open round trip.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use netproto_crypto::{Opener, RecordConfig, Sealer, provider};

/// The key the seeds were sealed with.
const KEY: [u8; 32] = [0x42; 32];

fuzz_target!(|data: &[u8]| {
    let mut config = RecordConfig::default();
    config.rekey_interval = 2;
    let mut opener =
        Opener::from_key(provider::rust_crypto(), &KEY, &config).expect("provider has chacha");
    let mut input = BytesMut::from(data);
    loop {
        let before = opener.nonce();
        match opener.open(&mut input) {
            Ok(Some(plaintext)) => {
                assert!(plaintext.len() <= 65535 - 16);
                assert_eq!(opener.nonce(), before + 1);
            }
            Ok(None) => break,
            Err(_) => {
                // A failed record never advances the nonce and poisons the opener.
                assert_eq!(opener.nonce(), before);
                assert!(opener.is_poisoned());
                assert!(opener.open(&mut BytesMut::new()).is_err());
                break;
            }
        }
    }

    // Whatever we seal, we open back byte for byte.
    let mut sealer = Sealer::from_key(provider::rust_crypto(), &[7; 32], &config).expect("sealer");
    let mut opener = Opener::from_key(provider::rust_crypto(), &[7; 32], &config).expect("opener");
    let mut wire = BytesMut::new();
    sealer.seal(data, &mut wire).expect("seal");
    sealer.seal(data, &mut wire).expect("seal");
    let mut out = Vec::new();
    while let Some(chunk) = opener.open(&mut wire).expect("open what we sealed") {
        out.extend_from_slice(&chunk);
    }
    assert!(wire.is_empty());
    assert_eq!(out.len(), 2 * data.len());
    assert_eq!(&out[..data.len()], data);
    assert_eq!(&out[data.len()..], data);
});
