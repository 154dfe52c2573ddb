//! Plain-Noise interoperability with `snow`: handshakes in both roles for XX
//! and IK, with the ChaChaPoly and AESGCM ciphers, then transport messages in
//! both directions across several rekeys.

// Integration test: a failed unwrap, expect, panic or index is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use bytes::BytesMut;
use netproto_crypto::noise::{HandshakeBuilder, HandshakeState, Pattern};
use netproto_crypto::provider::CipherAlgorithm;
use netproto_crypto::{Keypair, Opener, RecordConfig, Sealer, provider};

const MESSAGES: usize = 1_050;
const REKEY_INTERVAL: u64 = 100;
const PROLOGUE: &[u8] = b"netproto interop prologue";

struct Keys {
    ours: Keypair,
    theirs: Keypair,
}

fn keys() -> Keys {
    let mut rng = rand::rngs::OsRng;
    Keys {
        ours: Keypair::generate(&mut rng),
        theirs: Keypair::generate(&mut rng),
    }
}

/// Which cipher and which of our providers a test runs with.
#[derive(Clone, Copy)]
struct Suite {
    cipher: CipherAlgorithm,
    ring: bool,
}

const CHACHA: Suite = Suite {
    cipher: CipherAlgorithm::ChaCha20Poly1305,
    ring: false,
};
const AESGCM: Suite = Suite {
    cipher: CipherAlgorithm::Aes256Gcm,
    ring: false,
};

fn ours(
    pattern: &str,
    initiator: bool,
    keys: &Keys,
    know_remote: bool,
    suite: Suite,
) -> HandshakeState {
    let ring = suite.ring;
    let mut builder = HandshakeBuilder::new(Pattern::from_name(pattern).unwrap())
        .cipher(suite.cipher)
        .prologue(PROLOGUE)
        .local_static(keys.ours.clone());
    if ring {
        #[cfg(feature = "ring")]
        {
            builder = builder.provider(provider::ring());
        }
    } else {
        builder = builder.provider(provider::rust_crypto());
    }
    if know_remote {
        builder = builder.remote_static(*keys.theirs.public());
    }
    let mut rng = rand::rngs::OsRng;
    if initiator {
        builder.build_initiator(&mut rng)
    } else {
        builder.build_responder(&mut rng)
    }
    .unwrap()
}

fn snow(
    pattern: &str,
    initiator: bool,
    keys: &Keys,
    know_remote: bool,
    cipher: CipherAlgorithm,
) -> snow::HandshakeState {
    let name = format!("Noise_{pattern}_25519_{}_SHA256", cipher.noise_name());
    let secret = keys.theirs.secret_bytes();
    let mut builder = snow::Builder::new(name.parse().unwrap())
        .prologue(PROLOGUE)
        .local_private_key(&secret[..]);
    let remote = *keys.ours.public();
    if know_remote {
        builder = builder.remote_public_key(remote.as_bytes());
    }
    if initiator {
        builder.build_initiator()
    } else {
        builder.build_responder()
    }
    .unwrap()
}

/// Runs the handshake; returns our record halves and snow's transport state.
fn handshake(
    pattern: &str,
    we_initiate: bool,
    suite: Suite,
) -> (Sealer, Opener, snow::TransportState) {
    let keys = keys();
    // In IK the initiator knows the responder's key in advance.
    let ik = pattern == "IK";
    let mut us = ours(pattern, we_initiate, &keys, ik && we_initiate, suite);
    let mut them = snow(
        pattern,
        !we_initiate,
        &keys,
        ik && !we_initiate,
        suite.cipher,
    );
    let mut buf = vec![0u8; 65535];
    let mut index = 0;
    while !us.is_finished() {
        let payload = format!("handshake payload {index}").into_bytes();
        if us.is_my_turn() {
            let mut msg = Vec::new();
            us.write_message(&payload, &mut msg).unwrap();
            let n = them.read_message(&msg, &mut buf).unwrap();
            assert_eq!(&buf[..n], &payload[..]);
        } else {
            let n = them.write_message(&payload, &mut buf).unwrap();
            let mut got = Vec::new();
            us.read_message(&buf[..n], &mut got).unwrap();
            assert_eq!(got, payload);
        }
        index += 1;
    }
    assert!(them.is_handshake_finished());
    assert_eq!(&us.handshake_hash()[..], them.get_handshake_hash());
    assert_eq!(us.remote_static(), Some(keys.theirs.public()));
    assert_eq!(
        them.get_remote_static(),
        Some(&keys.ours.public().as_bytes()[..])
    );
    let mut config = RecordConfig::default();
    config.rekey_interval = REKEY_INTERVAL;
    let (sealer, opener) = us.into_split(&config).unwrap();
    assert_eq!(sealer.cipher(), suite.cipher);
    assert_eq!(opener.cipher(), suite.cipher);
    (sealer, opener, them.into_transport_mode().unwrap())
}

fn message(i: usize) -> Vec<u8> {
    (0..(i % 300) + 1).map(|j| (i + j) as u8).collect()
}

fn transport(mut sealer: Sealer, mut opener: Opener, mut them: snow::TransportState) {
    let mut buf = vec![0u8; 65535];
    for i in 0..MESSAGES {
        // Ours to snow: a record is a 2-byte length plus one Noise transport message.
        let mut wire = BytesMut::new();
        sealer.seal(&message(i), &mut wire).unwrap();
        assert_eq!(
            usize::from(u16::from_be_bytes([wire[0], wire[1]])),
            wire.len() - 2
        );
        let n = them.read_message(&wire[2..], &mut buf).unwrap();
        assert_eq!(&buf[..n], &message(i)[..], "to snow {i}");
        if (i as u64 + 1).is_multiple_of(REKEY_INTERVAL) {
            them.rekey_incoming();
        }

        // Snow to ours.
        let n = them.write_message(&message(i + 7), &mut buf).unwrap();
        if (i as u64 + 1).is_multiple_of(REKEY_INTERVAL) {
            them.rekey_outgoing();
        }
        let mut wire = BytesMut::with_capacity(n + 2);
        wire.extend_from_slice(&u16::try_from(n).unwrap().to_be_bytes());
        wire.extend_from_slice(&buf[..n]);
        let got = opener.open(&mut wire).unwrap().unwrap();
        assert_eq!(&got[..], &message(i + 7)[..], "from snow {i}");
        assert!(wire.is_empty());
    }
    assert_eq!(sealer.nonce(), MESSAGES as u64);
    assert_eq!(opener.nonce(), MESSAGES as u64);
}

#[test]
fn xx_snow_initiator_our_responder() {
    let (s, o, t) = handshake("XX", false, CHACHA);
    transport(s, o, t);
}

#[test]
fn xx_our_initiator_snow_responder() {
    let (s, o, t) = handshake("XX", true, CHACHA);
    transport(s, o, t);
}

#[test]
fn ik_snow_initiator_our_responder() {
    let (s, o, t) = handshake("IK", false, CHACHA);
    transport(s, o, t);
}

#[test]
fn ik_our_initiator_snow_responder() {
    let (s, o, t) = handshake("IK", true, CHACHA);
    transport(s, o, t);
}

#[test]
fn xx_aesgcm_snow_initiator_our_responder() {
    let (s, o, t) = handshake("XX", false, AESGCM);
    transport(s, o, t);
}

#[test]
fn xx_aesgcm_our_initiator_snow_responder() {
    let (s, o, t) = handshake("XX", true, AESGCM);
    transport(s, o, t);
}

#[test]
fn ik_aesgcm_both_roles() {
    for we_initiate in [true, false] {
        let (s, o, t) = handshake("IK", we_initiate, AESGCM);
        transport(s, o, t);
    }
}

#[cfg(feature = "ring")]
#[test]
fn xx_and_ik_with_ring_provider() {
    for cipher in [
        CipherAlgorithm::ChaCha20Poly1305,
        CipherAlgorithm::Aes256Gcm,
    ] {
        for pattern in ["XX", "IK"] {
            for we_initiate in [true, false] {
                let suite = Suite { cipher, ring: true };
                let (s, o, t) = handshake(pattern, we_initiate, suite);
                transport(s, o, t);
            }
        }
    }
}

/// A snow peer speaking the other cipher fails the handshake in either role.
#[test]
fn snow_with_the_other_cipher_fails_the_handshake() {
    for (ours_cipher, theirs) in [
        (
            CipherAlgorithm::ChaCha20Poly1305,
            CipherAlgorithm::Aes256Gcm,
        ),
        (
            CipherAlgorithm::Aes256Gcm,
            CipherAlgorithm::ChaCha20Poly1305,
        ),
    ] {
        for we_initiate in [true, false] {
            let keys = keys();
            let suite = Suite {
                cipher: ours_cipher,
                ring: false,
            };
            let mut us = ours("XX", we_initiate, &keys, false, suite);
            let mut them = snow("XX", !we_initiate, &keys, false, theirs);
            let mut buf = vec![0u8; 65535];
            let mut failed = false;
            while !us.is_finished() && !failed {
                if us.is_my_turn() {
                    let mut msg = Vec::new();
                    us.write_message(b"", &mut msg).unwrap();
                    failed = them.read_message(&msg, &mut buf).is_err();
                } else {
                    let n = them.write_message(b"", &mut buf).unwrap();
                    failed = us.read_message(&buf[..n], &mut Vec::new()).is_err();
                }
            }
            assert!(failed, "{ours_cipher} against snow {theirs}");
        }
    }
}

/// The rekey really changes keys: a snow peer that skips it cannot read on.
#[test]
fn skipping_the_rekey_breaks_the_stream() {
    for suite in [CHACHA, AESGCM] {
        skip_rekey(suite);
    }
}

fn skip_rekey(suite: Suite) {
    let (mut sealer, _, mut them) = handshake("XX", true, suite);
    let mut buf = vec![0u8; 65535];
    for i in 0..REKEY_INTERVAL {
        let mut wire = BytesMut::new();
        sealer.seal(b"x", &mut wire).unwrap();
        assert!(
            them.read_message(&wire[2..], &mut buf).is_ok(),
            "record {i}"
        );
    }
    let mut wire = BytesMut::new();
    sealer.seal(b"x", &mut wire).unwrap();
    assert!(them.read_message(&wire[2..], &mut buf).is_err());
}
