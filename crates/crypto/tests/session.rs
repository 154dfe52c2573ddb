//! The netproto session layer, driven in memory: handshake checks, pinning,
//! capability negotiation, cipher selection and record-stream failures.

// Integration test: a failed unwrap, expect, panic or index is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use bytes::{Bytes, BytesMut};
use netproto_crypto::noise::Pattern;
use netproto_crypto::provider::{self, CipherAlgorithm};
use netproto_crypto::{
    Capabilities, CompressionSet, Error, Initiator, Keypair, Opener, PublicKey, ReplayCache,
    Responder, Sealer, Session, SessionBuilder, SessionConfig,
};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

const NOW: u64 = 1_700_000_000_000;
const PREFACE: &[u8] = b"NETP\x01\x01\x00\x00";

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn keypair(seed: u8) -> Keypair {
    Keypair::from_secret_bytes([seed; 32])
}

struct Pair {
    client: Initiator,
    server: Responder,
    replay: ReplayCache,
    to_server: BytesMut,
    to_client: BytesMut,
    client_now: u64,
    server_now: u64,
}

impl Pair {
    fn new(client: SessionBuilder, server: SessionBuilder) -> Self {
        Self::with_seed(client, server, 1)
    }

    fn with_seed(client: SessionBuilder, server: SessionBuilder, seed: u64) -> Self {
        Self {
            client: client.build_initiator(&mut rng(seed)).unwrap(),
            server: server.build_responder(&mut rng(seed + 1000)).unwrap(),
            replay: ReplayCache::default(),
            to_server: BytesMut::new(),
            to_client: BytesMut::new(),
            client_now: NOW,
            server_now: NOW,
        }
    }

    /// Moves messages until both sides finish or one fails.
    fn run(&mut self) -> Result<(), Error> {
        while !(self.client.is_finished() && self.server.is_finished()) {
            if self.client.wants_write() {
                self.client
                    .write_message(self.client_now, &mut self.to_server)?;
                assert!(self.server.read_message(
                    &mut self.to_server,
                    self.server_now,
                    &mut self.replay
                )?);
            } else {
                self.server
                    .write_message(self.server_now, &mut self.to_client)?;
                assert!(self.client.read_message(&mut self.to_client)?);
            }
        }
        Ok(())
    }

    fn finish(mut self) -> (Session, Session) {
        self.run().unwrap();
        (
            self.client.into_session().unwrap(),
            self.server.into_session().unwrap(),
        )
    }
}

fn builder(seed: u8) -> SessionBuilder {
    SessionBuilder::new(keypair(seed)).prologue(PREFACE)
}

#[test]
fn xx_session_agrees_on_keys_identities_and_capabilities() {
    let mut client_config = SessionConfig::default();
    client_config.capabilities = Capabilities::new(1 << 20, CompressionSet::ALL);
    let mut server_config = SessionConfig::default();
    server_config.capabilities = Capabilities::new(1 << 24, CompressionSet::ZSTD);
    let (mut client, mut server) = Pair::new(
        builder(1).config(client_config),
        builder(2).config(server_config),
    )
    .finish();

    assert_eq!(client.peer_static(), Some(keypair(2).public()));
    assert_eq!(server.peer_static(), Some(keypair(1).public()));
    assert_eq!(client.handshake_hash(), server.handshake_hash());
    let agreed = Capabilities::new(1 << 20, CompressionSet::ZSTD);
    assert_eq!(*client.capabilities(), agreed);
    assert_eq!(*server.capabilities(), agreed);

    let mut wire = BytesMut::new();
    client.sealer().seal(b"ping", &mut wire).unwrap();
    assert_eq!(
        server.opener().open(&mut wire).unwrap().unwrap(),
        &b"ping"[..]
    );
    server.sealer().seal(b"pong", &mut wire).unwrap();
    assert_eq!(
        client.opener().open(&mut wire).unwrap().unwrap(),
        &b"pong"[..]
    );
}

#[test]
fn ik_session_works_with_a_known_server_key() {
    let mut config = SessionConfig::default();
    config.pattern = Pattern::ik();
    let server_key = *keypair(2).public();
    let client = builder(1).config(config.clone()).remote_static(server_key);
    let (client, server) = Pair::new(client, builder(2).config(config)).finish();
    assert_eq!(client.peer_static(), Some(&server_key));
    assert_eq!(server.peer_static(), Some(keypair(1).public()));
    // IK without the server's key cannot start.
    let mut config = SessionConfig::default();
    config.pattern = Pattern::ik();
    assert!(matches!(
        builder(1).config(config).build_initiator(&mut rng(1)),
        Err(Error::MissingKey("remote static key"))
    ));
}

#[test]
fn session_halves_are_send() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<Sealer>();
    assert_send::<Opener>();
    assert_send::<Session>();
    assert_send::<Initiator>();
    assert_send::<Responder>();
}

#[test]
fn replayed_first_message_is_rejected() {
    let mut replay = ReplayCache::default();
    let mut client = builder(1).build_initiator(&mut rng(5)).unwrap();
    let mut first = BytesMut::new();
    client.write_message(NOW, &mut first).unwrap();

    let mut server = builder(2).build_responder(&mut rng(6)).unwrap();
    assert!(
        server
            .read_message(&mut first.clone(), NOW, &mut replay)
            .unwrap()
    );
    assert_eq!(replay.len(), 1);

    // The same bytes to a fresh responder sharing the cache, a second later.
    let mut again = builder(2).build_responder(&mut rng(7)).unwrap();
    let err = again
        .read_message(&mut first.clone(), NOW + 1000, &mut replay)
        .unwrap_err();
    assert!(matches!(err, Error::Replay), "{err}");
    // The failed handshake stays failed.
    assert!(matches!(
        again.write_message(NOW, &mut BytesMut::new()),
        Err(Error::HandshakeFailed)
    ));
    assert!(!again.wants_write());

    // A different client nonce is fine.
    let mut other = builder(1).build_initiator(&mut rng(8)).unwrap();
    let mut msg = BytesMut::new();
    other.write_message(NOW, &mut msg).unwrap();
    let mut server = builder(2).build_responder(&mut rng(9)).unwrap();
    assert!(server.read_message(&mut msg, NOW, &mut replay).unwrap());
}

#[test]
fn skewed_timestamps_are_rejected_and_the_limit_is_configurable() {
    for (skew, ok) in [
        (0i64, true),
        (5_000, true),
        (-5_000, true),
        (5_001, false),
        (-5_001, false),
        (-3_600_000, false),
    ] {
        let mut pair = Pair::with_seed(builder(1), builder(2), 10 + skew.unsigned_abs());
        pair.client_now = NOW.checked_add_signed(skew).unwrap();
        let result = pair.run();
        if ok {
            result.unwrap();
        } else {
            match result {
                Err(Error::ClockSkew {
                    skew_ms,
                    max_ms: 5_000,
                }) => assert_eq!(skew_ms, skew),
                other => panic!("skew {skew}: {other:?}"),
            }
            assert!(pair.replay.is_empty(), "a rejected nonce is not cached");
        }
    }
    let mut config = SessionConfig::default();
    config.max_clock_skew_ms = 60_000;
    let mut pair = Pair::new(builder(1), builder(2).config(config));
    pair.client_now = NOW + 59_000;
    pair.run().unwrap();
}

#[test]
fn unknown_static_keys_are_rejected_with_an_allow_list() {
    // Server pins clients.
    let mut pair = Pair::new(builder(1), builder(2).allowed_peers([*keypair(3).public()]));
    assert!(matches!(pair.run(), Err(Error::UnknownPeer)));
    // Client pins the server: it aborts on message 2, before revealing its key.
    let mut pair = Pair::new(builder(1).allowed_peers([*keypair(3).public()]), builder(2));
    pair.client.write_message(NOW, &mut pair.to_server).unwrap();
    pair.server
        .read_message(&mut pair.to_server, NOW, &mut pair.replay)
        .unwrap();
    pair.server.write_message(NOW, &mut pair.to_client).unwrap();
    assert!(matches!(
        pair.client.read_message(&mut pair.to_client),
        Err(Error::UnknownPeer)
    ));
    assert!(matches!(
        pair.client.write_message(NOW, &mut pair.to_server),
        Err(Error::HandshakeFailed)
    ));
    // Pinned keys that match succeed on both sides.
    let (client, _) = Pair::new(
        builder(1).allowed_peers([*keypair(2).public()]),
        builder(2).allowed_peers([*keypair(1).public()]),
    )
    .finish();
    assert_eq!(client.peer_static(), Some(keypair(2).public()));
    // An IK initiator given a key outside its own allow-list fails at build time.
    let mut config = SessionConfig::default();
    config.pattern = Pattern::ik();
    let built = builder(1)
        .config(config)
        .remote_static(*keypair(2).public())
        .allowed_peers([*keypair(3).public()])
        .build_initiator(&mut rng(1));
    assert!(matches!(built, Err(Error::UnknownPeer)));
}

#[test]
fn allow_list_with_a_pattern_that_hides_the_peer_fails() {
    let mut config = SessionConfig::default();
    config.pattern = Pattern::from_name("NN").unwrap();
    let mut pair = Pair::new(
        builder(1).config(config.clone()),
        builder(2).config(config).allowed_peers([]),
    );
    pair.run().unwrap();
    assert!(matches!(
        pair.server.into_session(),
        Err(Error::UnknownPeer)
    ));
}

fn with_cipher(builder: SessionBuilder, cipher: CipherAlgorithm) -> SessionBuilder {
    let mut config = SessionConfig::default();
    config.cipher = cipher;
    builder.config(config)
}

fn round_trips(client: &mut Session, server: &mut Session) {
    let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    for message in [&b""[..], b"ping", &big] {
        let mut wire = BytesMut::new();
        client.sealer().seal(message, &mut wire).unwrap();
        let mut got = Vec::new();
        while let Some(chunk) = server.opener().open(&mut wire).unwrap() {
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, message);
        server.sealer().seal(message, &mut wire).unwrap();
        let mut got = Vec::new();
        while let Some(chunk) = client.opener().open(&mut wire).unwrap() {
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, message);
    }
}

#[test]
fn aesgcm_sessions_work_with_every_provider() {
    let providers = [
        provider::rust_crypto(),
        #[cfg(feature = "ring")]
        provider::ring(),
    ];
    for (i, client_provider) in providers.iter().enumerate() {
        for server_provider in &providers {
            let mut config = SessionConfig::default();
            config.cipher = CipherAlgorithm::Aes256Gcm;
            config.record.rekey_interval = 3;
            let client = builder(1)
                .provider(client_provider.clone())
                .config(config.clone());
            let server = builder(2).provider(server_provider.clone()).config(config);
            let (mut client, mut server) = Pair::with_seed(client, server, i as u64).finish();
            assert_eq!(client.cipher(), CipherAlgorithm::Aes256Gcm);
            assert_eq!(server.cipher(), CipherAlgorithm::Aes256Gcm);
            assert_eq!(client.handshake_hash(), server.handshake_hash());
            // Six records each way (1 + 1 + 4): two rekeys per direction.
            round_trips(&mut client, &mut server);
            assert_eq!(client.sealer().nonce(), 6);
            assert_eq!(client.opener().nonce(), 6);
        }
    }
}

#[test]
fn chachapoly_is_the_default_cipher() {
    let (mut client, mut server) = Pair::new(builder(1), builder(2)).finish();
    assert_eq!(client.cipher(), CipherAlgorithm::ChaCha20Poly1305);
    round_trips(&mut client, &mut server);
    // The same keys and seeds under AESGCM give another transcript.
    let aes = Pair::new(
        with_cipher(builder(1), CipherAlgorithm::Aes256Gcm),
        with_cipher(builder(2), CipherAlgorithm::Aes256Gcm),
    )
    .finish();
    assert_ne!(aes.0.handshake_hash(), client.handshake_hash());
}

#[test]
fn peers_with_different_ciphers_fail_the_handshake() {
    use CipherAlgorithm::{Aes256Gcm, ChaCha20Poly1305};
    for (client_cipher, server_cipher) in
        [(ChaCha20Poly1305, Aes256Gcm), (Aes256Gcm, ChaCha20Poly1305)]
    {
        let mut pair = Pair::new(
            with_cipher(builder(1), client_cipher),
            with_cipher(builder(2), server_cipher),
        );
        // The responder's first message is encrypted under a key from another
        // protocol name: the initiator cannot open it, and nobody gets a session.
        assert!(
            matches!(pair.run(), Err(Error::Decrypt)),
            "{client_cipher} vs {server_cipher}"
        );
        assert!(matches!(
            pair.client.write_message(NOW, &mut BytesMut::new()),
            Err(Error::HandshakeFailed)
        ));
        assert!(pair.client.into_session().is_err());
        assert!(pair.server.into_session().is_err());
    }
}

#[test]
fn a_different_prologue_makes_the_handshake_fail() {
    let tampered = SessionBuilder::new(keypair(2)).prologue(b"NETP\x01\x00\x00\x00");
    let mut pair = Pair::new(builder(1), tampered);
    assert!(matches!(pair.run(), Err(Error::Decrypt)));
}

#[test]
fn tampered_handshake_messages_fail() {
    for message in 0..3 {
        let mut pair = Pair::new(builder(1), builder(2));
        let result = (|| {
            for i in 0..3u32 {
                let (out, last_byte) = if i.is_multiple_of(2) {
                    pair.client.write_message(NOW, &mut pair.to_server)?;
                    (&mut pair.to_server, i == message)
                } else {
                    pair.server.write_message(NOW, &mut pair.to_client)?;
                    (&mut pair.to_client, i == message)
                };
                if last_byte {
                    let last = out.len() - 1;
                    out[last] ^= 0x01;
                }
                if i.is_multiple_of(2) {
                    pair.server
                        .read_message(&mut pair.to_server, NOW, &mut pair.replay)?;
                } else {
                    pair.client.read_message(&mut pair.to_client)?;
                }
            }
            Ok::<_, Error>(())
        })();
        // Message 0's payload is in clear in XX: tampering shows at message 1.
        assert!(result.is_err(), "tampered message {message} went unnoticed");
    }
}

#[test]
fn handshake_messages_are_length_framed_and_wait_for_whole_messages() {
    let mut client = builder(1).build_initiator(&mut rng(1)).unwrap();
    let mut server = builder(2).build_responder(&mut rng(2)).unwrap();
    let mut replay = ReplayCache::default();
    // Out-of-turn calls are refused without aborting the handshake.
    assert!(matches!(
        client.read_message(&mut BytesMut::new()),
        Err(Error::OutOfTurn)
    ));
    assert!(matches!(
        server.write_message(NOW, &mut BytesMut::new()),
        Err(Error::OutOfTurn)
    ));
    let mut wire = BytesMut::new();
    client.write_message(NOW, &mut wire).unwrap();
    let len = usize::from(u16::from_be_bytes([wire[0], wire[1]]));
    assert_eq!(wire.len(), 2 + len);
    assert!(
        !client.read_message(&mut BytesMut::new()).unwrap(),
        "waits for message 2"
    );
    let full = wire.split();
    for cut in 0..full.len() {
        let mut partial = BytesMut::from(&full[..cut]);
        assert!(!server.read_message(&mut partial, NOW, &mut replay).unwrap());
        assert_eq!(partial.len(), cut);
    }
    assert!(replay.is_empty());
    let mut rest = full;
    assert!(server.read_message(&mut rest, NOW, &mut replay).unwrap());
    assert!(rest.is_empty());
    assert!(matches!(
        server.into_session(),
        Err(Error::HandshakeState(_))
    ));
}

#[test]
fn records_pipelined_after_the_last_handshake_message_stay_for_the_opener() {
    let mut pair = Pair::new(builder(1), builder(2));
    pair.client.write_message(NOW, &mut pair.to_server).unwrap();
    pair.server
        .read_message(&mut pair.to_server, NOW, &mut pair.replay)
        .unwrap();
    pair.server.write_message(NOW, &mut pair.to_client).unwrap();
    pair.client.read_message(&mut pair.to_client).unwrap();
    pair.client.write_message(NOW, &mut pair.to_server).unwrap();
    let mut client = pair.client.into_session().unwrap();
    client
        .sealer()
        .seal(b"early data", &mut pair.to_server)
        .unwrap();
    // Message 2 and the record arrive in one read.
    assert!(
        pair.server
            .read_message(&mut pair.to_server, NOW, &mut pair.replay)
            .unwrap()
    );
    let mut server = pair.server.into_session().unwrap();
    assert_eq!(
        server.opener().open(&mut pair.to_server).unwrap().unwrap(),
        &b"early data"[..]
    );
}

fn sessions() -> (Sealer, Opener) {
    let (client, server) = Pair::new(builder(1), builder(2)).finish();
    (client.into_split().0, server.into_split().1)
}

fn records(sealer: &mut Sealer, count: usize) -> Vec<BytesMut> {
    (0..count)
        .map(|i| {
            let mut wire = BytesMut::new();
            sealer
                .seal(format!("record {i}").as_bytes(), &mut wire)
                .unwrap();
            wire
        })
        .collect()
}

fn assert_poisoned(opener: &mut Opener, mut next: BytesMut) {
    assert!(opener.is_poisoned());
    assert!(matches!(opener.open(&mut next), Err(Error::Poisoned)));
}

#[test]
fn replayed_record_fails() {
    let (mut sealer, mut opener) = sessions();
    let recs = records(&mut sealer, 3);
    assert!(opener.open(&mut recs[0].clone()).unwrap().is_some());
    assert!(matches!(
        opener.open(&mut recs[0].clone()),
        Err(Error::Decrypt)
    ));
    assert_eq!(opener.nonce(), 1, "nonce not advanced by a failure");
    assert_poisoned(&mut opener, recs[1].clone());
}

#[test]
fn reordered_record_fails() {
    let (mut sealer, mut opener) = sessions();
    let recs = records(&mut sealer, 3);
    assert!(matches!(
        opener.open(&mut recs[1].clone()),
        Err(Error::Decrypt)
    ));
    assert_poisoned(&mut opener, recs[0].clone());
}

#[test]
fn dropped_record_fails() {
    let (mut sealer, mut opener) = sessions();
    let recs = records(&mut sealer, 3);
    assert!(opener.open(&mut recs[0].clone()).unwrap().is_some());
    assert!(matches!(
        opener.open(&mut recs[2].clone()),
        Err(Error::Decrypt)
    ));
    assert_poisoned(&mut opener, recs[1].clone());
}

#[test]
fn every_bit_flip_fails() {
    let (mut sealer, _) = sessions();
    let rec = records(&mut sealer, 1).remove(0);
    for bit in 16..rec.len() * 8 {
        let (_, mut opener) = sessions();
        let mut flipped = rec.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        // Ciphertext and tag flips fail authentication; length flips either fail
        // or leave the record incomplete, never yielding plaintext.
        match opener.open(&mut flipped) {
            Err(Error::Decrypt) => assert!(opener.is_poisoned()),
            other => panic!("bit {bit}: {other:?}"),
        }
    }
    for bit in 0..16 {
        let (_, mut opener) = sessions();
        let mut flipped = rec.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        assert!(
            !matches!(opener.open(&mut flipped), Ok(Some(_))),
            "length bit {bit}"
        );
    }
}

#[test]
fn many_small_frames_share_one_record() {
    let (mut sealer, mut opener) = sessions();
    let frames: Vec<u8> = (0..1000)
        .flat_map(|i: u32| [i.to_be_bytes().as_slice(), &[0xaa; 60]].concat())
        .collect();
    let mut wire = BytesMut::new();
    sealer.seal(&frames, &mut wire).unwrap();
    assert_eq!(sealer.nonce(), 1, "64,000 bytes fit one record");
    assert_eq!(wire.len(), frames.len() + 18);
    let got: Bytes = opener.open(&mut wire).unwrap().unwrap();
    assert_eq!(got, frames);
}

#[test]
fn config_rejects_unsuitable_patterns() {
    for name in ["N", "XXpsk3"] {
        let mut config = SessionConfig::default();
        config.pattern = Pattern::from_name(name).unwrap();
        assert!(
            matches!(
                builder(1).config(config).build_responder(&mut rng(1)),
                Err(Error::Config(_))
            ),
            "{name}"
        );
    }
}

#[test]
fn errors_never_show_keys() {
    let key: PublicKey = *keypair(2).public();
    let hex = key.to_string();
    let mut pair = Pair::new(builder(1), builder(2).allowed_peers([*keypair(3).public()]));
    let err = pair.run().unwrap_err();
    assert!(!err.to_string().contains(&hex[..16]));
    assert!(!format!("{err:?}").contains(&hex[..16]));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic_the_responder(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..4)) {
        let mut server = builder(2).build_responder(&mut rng(1)).unwrap();
        let mut replay = ReplayCache::default();
        for chunk in chunks {
            let mut input = BytesMut::from(&chunk[..]);
            if server.read_message(&mut input, NOW, &mut replay).is_err() {
                break;
            }
            if server.wants_write() {
                let _ = server.write_message(NOW, &mut BytesMut::new());
            }
        }
    }

    #[test]
    fn records_survive_any_delivery_split(
        writes in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..2000), 1..8),
        cuts in proptest::collection::vec(1usize..500, 1..40),
    ) {
        let (mut sealer, mut opener) = sessions();
        let mut wire = BytesMut::new();
        for w in &writes {
            sealer.seal(w, &mut wire).unwrap();
        }
        let expected: Vec<u8> = writes.concat();
        // Deliver the wire bytes in arbitrary pieces, opening whatever is complete.
        let mut input = BytesMut::new();
        let mut got = Vec::new();
        let mut cuts = cuts.into_iter().cycle();
        while !wire.is_empty() {
            let n = cuts.next().unwrap().min(wire.len());
            input.extend_from_slice(&wire.split_to(n));
            while let Some(chunk) = opener.open(&mut input).unwrap() {
                got.extend_from_slice(&chunk);
            }
        }
        prop_assert!(input.is_empty());
        prop_assert_eq!(got, expected);
        prop_assert_eq!(opener.nonce(), writes.len() as u64);
    }

    #[test]
    fn arbitrary_bytes_never_open(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let (_, mut opener) = sessions();
        let mut input = BytesMut::from(&bytes[..]);
        let result = opener.open(&mut input);
        prop_assert!(!matches!(result, Ok(Some(_))));
    }
}
