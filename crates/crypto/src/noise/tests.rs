use super::*;

fn pair(pattern: Pattern) -> (HandshakeState, HandshakeState) {
    let mut rng = rand::rngs::OsRng;
    let i = HandshakeBuilder::new(pattern.clone())
        .local_static(Keypair::from_secret_bytes([1; 32]))
        .build_initiator(&mut rng)
        .unwrap();
    let r = HandshakeBuilder::new(pattern)
        .local_static(Keypair::from_secret_bytes([2; 32]))
        .build_responder(&mut rng)
        .unwrap();
    (i, r)
}

#[test]
fn oversized_messages_are_refused() {
    let (mut i, _) = pair(Pattern::xx());
    let mut out = Vec::new();
    // A payload that alone exceeds the limit is refused up front; the handshake goes on.
    assert!(matches!(
        i.write_message(&vec![0; 65536], &mut out),
        Err(Error::MessageTooLarge(65536))
    ));
    assert!(out.is_empty());
    // One that only overflows with the `e` token aborts the handshake.
    assert!(matches!(
        i.write_message(&vec![0; 65535 - 31], &mut out),
        Err(Error::MessageTooLarge(65536))
    ));
    assert!(out.is_empty());
    assert!(matches!(
        i.write_message(b"", &mut out),
        Err(Error::HandshakeFailed)
    ));
    let (_, mut r) = pair(Pattern::xx());
    assert!(matches!(
        r.read_message(&vec![0; 65536], &mut out),
        Err(Error::MessageTooLarge(65536))
    ));
}

#[test]
fn a_responder_computes_its_ephemeral_public_key_only_to_send_it() {
    let (mut i, mut r) = pair(Pattern::xx());
    assert!(r.e.keypair.is_none(), "not at build");
    let mut msg = Vec::new();
    i.write_message(b"", &mut msg).unwrap();
    r.read_message(&msg, &mut Vec::new()).unwrap();
    assert!(r.e.keypair.is_none(), "not to read the first message");
    let mut reply = Vec::new();
    r.write_message(b"", &mut reply).unwrap();
    let public = *r.e.keypair.as_ref().unwrap().public();
    assert_eq!(&reply[..KEY_LEN], public.as_bytes(), "the key it sent");
    assert_eq!(
        public,
        *Keypair::from_secret_bytes(*r.e.secret).public(),
        "derived from the secret drawn at build"
    );
}

#[test]
fn low_order_ephemeral_keys_are_rejected() {
    let (_, mut r) = pair(Pattern::xx());
    let mut payload = Vec::new();
    r.read_message(&[0; 32], &mut payload).unwrap();
    assert!(matches!(
        r.write_message(b"", &mut Vec::new()),
        Err(Error::WeakKey)
    ));
}

#[test]
fn truncated_messages_fail() {
    let (mut i, mut r) = pair(Pattern::xx());
    let mut msg = Vec::new();
    i.write_message(b"", &mut msg).unwrap();
    assert!(matches!(
        r.read_message(&msg[..31], &mut Vec::new()),
        Err(Error::Truncated)
    ));
    assert!(matches!(
        r.read_message(&msg, &mut Vec::new()),
        Err(Error::HandshakeFailed)
    ));
}

/// The default provider without AES-256-GCM.
#[derive(Debug)]
struct NoAes;

impl Provider for NoAes {
    fn cipher(
        &self,
        algorithm: CipherAlgorithm,
        key: &[u8; KEY_LEN],
    ) -> Option<Box<dyn provider::Cipher>> {
        match algorithm {
            CipherAlgorithm::Aes256Gcm => None,
            other => provider::rust_crypto().cipher(other, key),
        }
    }

    fn hash(&self, algorithm: provider::HashAlgorithm) -> Option<Box<dyn provider::Hash>> {
        provider::rust_crypto().hash(algorithm)
    }
}

#[test]
fn a_missing_cipher_is_refused_at_build() {
    let mut rng = rand::rngs::OsRng;
    let mut build = |cipher| {
        HandshakeBuilder::new(Pattern::xx())
            .provider(Arc::new(NoAes))
            .cipher(cipher)
            .local_static(Keypair::from_secret_bytes([1; 32]))
            .build_initiator(&mut rng)
    };
    assert!(matches!(
        build(CipherAlgorithm::Aes256Gcm),
        Err(Error::MissingPrimitive("aes-256-gcm"))
    ));
    assert!(build(CipherAlgorithm::ChaCha20Poly1305).is_ok());
}

#[test]
fn builder_checks_keys_and_psks() {
    let mut rng = rand::rngs::OsRng;
    let missing_static = HandshakeBuilder::new(Pattern::xx()).build_initiator(&mut rng);
    assert!(matches!(
        missing_static,
        Err(Error::MissingKey("local static key"))
    ));
    let missing_psk =
        HandshakeBuilder::new(Pattern::from_name("NNpsk0").unwrap()).build_initiator(&mut rng);
    assert!(matches!(
        missing_psk,
        Err(Error::MissingKey("pre-shared key"))
    ));
    let (i, _) = pair(Pattern::xx());
    assert!(matches!(
        i.into_split(&RecordConfig::default()),
        Err(Error::HandshakeState(_))
    ));
}
