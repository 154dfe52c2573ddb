//! Arbitrary bytes as the initiator's handshake messages to a netproto responder.
//!
//! The responder's key and randomness are fixed, so a seed can carry a full
//! valid XX handshake (messages 1 and 3) and the fuzzer can mutate from there.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use netproto_crypto::fuzzing::FuzzRng;
use netproto_crypto::{Keypair, ReplayCache, SessionBuilder};

/// The responder's clock; seeds use the same time.
const NOW_MS: u64 = 1_700_000_000_000;

fuzz_target!(|data: &[u8]| {
    let mut replay = ReplayCache::new(16);
    let Ok(mut responder) = SessionBuilder::new(Keypair::from_secret_bytes([2; 32]))
        .prologue(b"netproto fuzz")
        .build_responder(&mut FuzzRng(1))
    else {
        return;
    };
    let mut input = BytesMut::from(data);
    let mut output = BytesMut::new();
    loop {
        if responder.wants_write() {
            if responder.write_message(NOW_MS, &mut output).is_err() {
                return;
            }
            continue;
        }
        match responder.read_message(&mut input, NOW_MS, &mut replay) {
            Ok(true) if responder.is_finished() => break,
            Ok(true) => {}
            Ok(false) | Err(_) => return,
        }
    }
    // A finished handshake must give a working session.
    let mut session = responder
        .into_session()
        .expect("finished handshake yields a session");
    assert!(session.peer_static().is_some());
    let mut wire = BytesMut::new();
    session
        .sealer()
        .seal(b"reply", &mut wire)
        .expect("seal after handshake");
});
