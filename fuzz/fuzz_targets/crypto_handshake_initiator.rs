//! Arbitrary bytes as the responder's side of the stream to a netproto initiator.
//!
//! Input: one selector byte (bit 0 picks AES-256-GCM over ChaCha20-Poly1305),
//! then what the "responder" sends: its handshake message, then records.
//!
//! The initiator must never panic. When it finishes the handshake, the session
//! must work: a real responder with fixed key and randomness replays the
//! exchange; if the initiator accepted exactly that responder's message, both
//! sessions talk to each other; if it accepted anything else, the real
//! responder must refuse the initiator's last message (an attacker cannot
//! splice itself into a handshake).

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use netproto_crypto::fuzzing::FuzzRng;
use netproto_crypto::{
    CipherAlgorithm, Keypair, ReplayCache, Responder, SessionBuilder, SessionConfig,
};

/// Both sides' clock; seeds use the same time.
const NOW_MS: u64 = 1_700_000_000_000;
/// The prologue both sides use.
const PROLOGUE: &[u8] = b"netproto fuzz";
/// Seeds of the deterministic RNGs (initiator, responder).
const INITIATOR_RNG: u64 = 3;
const RESPONDER_RNG: u64 = 1;

fn config(selector: u8) -> SessionConfig {
    let mut config = SessionConfig::default();
    if selector & 1 == 1 {
        config.cipher = CipherAlgorithm::Aes256Gcm;
    }
    config
}

fn real_responder(selector: u8) -> Responder {
    SessionBuilder::new(Keypair::from_secret_bytes([2; 32]))
        .config(config(selector))
        .prologue(PROLOGUE)
        .build_responder(&mut FuzzRng(RESPONDER_RNG))
        .expect("responder builds")
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    let Ok(mut initiator) = SessionBuilder::new(Keypair::from_secret_bytes([1; 32]))
        .config(config(selector))
        .prologue(PROLOGUE)
        .build_initiator(&mut FuzzRng(INITIATOR_RNG))
    else {
        return;
    };
    let mut input = BytesMut::from(stream);
    let mut to_responder = BytesMut::new();
    // The framed responder messages the initiator accepted.
    let mut accepted = Vec::new();
    while !initiator.is_finished() {
        if initiator.wants_write() {
            if initiator.write_message(NOW_MS, &mut to_responder).is_err() {
                return;
            }
            continue;
        }
        let before = input.len();
        let offset = stream.len() - before;
        match initiator.read_message(&mut input) {
            Ok(true) => accepted.extend_from_slice(&stream[offset..offset + before - input.len()]),
            Ok(false) => {
                assert_eq!(
                    input.len(),
                    before,
                    "an incomplete message consumes nothing"
                );
                return;
            }
            Err(_) => {
                // A failed handshake stays failed.
                assert!(!initiator.wants_write());
                assert!(initiator.read_message(&mut BytesMut::new()).is_err());
                return;
            }
        }
    }
    let mut session = initiator
        .into_session()
        .expect("finished handshake yields a session");
    assert!(
        session.peer_static().is_some(),
        "XX reveals the responder's key"
    );

    // Replay the exchange against the real responder.
    let mut responder = real_responder(selector);
    let mut replay = ReplayCache::new(16);
    assert!(
        responder
            .read_message(&mut to_responder, NOW_MS, &mut replay)
            .expect("the real responder accepts our first message")
    );
    let mut genuine = BytesMut::new();
    responder
        .write_message(NOW_MS, &mut genuine)
        .expect("the real responder answers");
    let last = responder.read_message(&mut to_responder, NOW_MS, &mut replay);
    if accepted != genuine[..] {
        assert!(
            last.is_err(),
            "the initiator finished on a forged responder message the real responder cannot follow"
        );
        return;
    }
    assert!(last.expect("the real responder accepts our last message"));
    let mut peer = responder
        .into_session()
        .expect("the real responder has a session");
    assert_eq!(session.handshake_hash(), peer.handshake_hash());
    assert_eq!(session.cipher(), peer.cipher());

    // Both directions work.
    let mut wire = BytesMut::new();
    session.sealer().seal(b"request", &mut wire).expect("seal");
    let opened = peer.opener().open(&mut wire).expect("open our record");
    assert_eq!(opened.as_deref(), Some(&b"request"[..]));
    peer.sealer().seal(b"reply", &mut wire).expect("seal");
    let opened = session.opener().open(&mut wire).expect("open the reply");
    assert_eq!(opened.as_deref(), Some(&b"reply"[..]));

    // Whatever followed the handshake message is records for our opener:
    // each opens or fails without advancing the nonce, and a failure poisons.
    let mut opener = session.into_split().1;
    loop {
        let before = opener.nonce();
        match opener.open(&mut input) {
            Ok(Some(_)) => assert_eq!(opener.nonce(), before + 1),
            Ok(None) => break,
            Err(_) => {
                assert_eq!(opener.nonce(), before);
                assert!(opener.is_poisoned());
                break;
            }
        }
    }
});
