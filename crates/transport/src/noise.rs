//! The Noise handshake over a stream, after the preface.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use netproto_crypto::{
    Keypair, Provider, PublicKey, ReplayCache, Session, SessionBuilder, SessionConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Error, HandshakeProgress, HandshakeStage, Io};

/// Largest framed handshake message: 2 length bytes and 65535 bytes.
const MAX_HANDSHAKE_MESSAGE: usize = 2 + 65_535;

/// Noise settings of one side.
#[non_exhaustive]
#[derive(Debug, Clone)]
pub struct NoiseConfig {
    /// This side's static key pair.
    pub identity: Keypair,
    /// Pattern, clock skew, rekey interval. Capabilities are filled in from
    /// the connection configuration.
    pub session: SessionConfig,
    /// The peer's static key when known in advance: a pin for XX (the
    /// handshake fails if the peer presents another key), required for IK.
    pub remote_static: Option<PublicKey>,
    /// When set, only these peer static keys are accepted.
    pub allowed_peers: Option<Vec<PublicKey>>,
    /// Crypto backend; RustCrypto when `None`.
    pub provider: Option<Arc<dyn Provider>>,
}

impl NoiseConfig {
    /// Settings with the default session (XX) for `identity`.
    pub fn new(identity: Keypair) -> Self {
        Self {
            identity,
            session: SessionConfig::default(),
            remote_static: None,
            allowed_peers: None,
            provider: None,
        }
    }

    fn builder(
        &self,
        prologue: &[u8],
        capabilities: netproto_crypto::Capabilities,
    ) -> SessionBuilder {
        let mut session = self.session.clone();
        session.capabilities = capabilities;
        let mut builder = SessionBuilder::new(self.identity.clone())
            .config(session)
            .prologue(prologue);
        if let Some(provider) = &self.provider {
            builder = builder.provider(provider.clone());
        }
        if let Some(key) = self.remote_static {
            builder = builder.remote_static(key);
            if self.allowed_peers.is_none() {
                builder = builder.allowed_peers([key]);
            }
        }
        if let Some(keys) = &self.allowed_peers {
            builder = builder.allowed_peers(keys.iter().copied());
        }
        builder
    }
}

/// Unix time in milliseconds; 0 if the clock is before 1970.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Runs the initiator's side. Returns the session and any record bytes that
/// arrived behind the last handshake message.
pub(crate) async fn client<I: Io>(
    io: &mut I,
    prologue: &[u8],
    config: &NoiseConfig,
    capabilities: netproto_crypto::Capabilities,
) -> Result<(Session, BytesMut), Error> {
    let mut initiator = config
        .builder(prologue, capabilities)
        .build_initiator(&mut rand::rngs::OsRng)?;
    let mut input = BytesMut::new();
    let mut out = BytesMut::new();
    while !initiator.is_finished() {
        if initiator.wants_write() {
            out.clear();
            initiator.write_message(now_ms(), &mut out)?;
            io.write_all(&out).await?;
            io.flush().await?;
        } else {
            loop {
                match initiator.read_message(&mut input) {
                    Ok(true) => break,
                    Ok(false) => read_more(io, &mut input).await?,
                    Err(error) => return Err(refused_key(error, initiator.peer_static())),
                }
            }
        }
    }
    Ok((checked(initiator.into_session()?)?, input))
}

/// Runs the responder's side, checking replays against the shared cache.
pub(crate) async fn server<I: Io>(
    io: &mut I,
    prologue: &[u8],
    config: &NoiseConfig,
    capabilities: netproto_crypto::Capabilities,
    replay: &Mutex<ReplayCache>,
    progress: &HandshakeProgress,
) -> Result<(Session, BytesMut), Error> {
    let mut responder = config
        .builder(prologue, capabilities)
        .build_responder(&mut rand::rngs::OsRng)?;
    let mut input = BytesMut::new();
    let mut out = BytesMut::new();
    while !responder.is_finished() {
        if responder.wants_write() {
            out.clear();
            responder.write_message(now_ms(), &mut out)?;
            io.write_all(&out).await?;
            io.flush().await?;
        } else {
            loop {
                let done = {
                    // A poisoned lock only means another handshake panicked
                    // mid-insert; the cache itself stays consistent.
                    let mut cache = crate::sync::lock(replay);
                    responder.read_message(&mut input, now_ms(), &mut cache)
                }
                .map_err(|error| refused_key(error, responder.peer_static()))?;
                if done {
                    progress.reached(HandshakeStage::Handshake);
                    break;
                }
                read_more(io, &mut input).await?;
            }
        }
    }
    Ok((checked(responder.into_session()?)?, input))
}

/// The peer's key in the error when the handshake refused it
/// ([`netproto_crypto::Error::UnknownPeer`] once the key is known), so that
/// the error can show the key that was presented.
fn refused_key(error: netproto_crypto::Error, presented: Option<&PublicKey>) -> Error {
    match (error, presented) {
        (netproto_crypto::Error::UnknownPeer, Some(key)) => Error::UnknownPeer { presented: *key },
        (error, _) => Error::Crypto(error),
    }
}

/// Refuses a session whose peer announced a frame limit below the
/// protocol's minimum (no message would fit; 0 would make every one an
/// error). The agreed limit is the smaller of the two, and ours is at least
/// the minimum.
fn checked(session: Session) -> Result<Session, Error> {
    let limit = session.capabilities().max_frame_len;
    if limit < netproto_wire::MIN_MAX_FRAME_LEN {
        return Err(netproto_wire::Error::PeerLimitTooSmall(limit).into());
    }
    Ok(session)
}

async fn read_more<I: Io>(io: &mut I, input: &mut BytesMut) -> Result<(), Error> {
    // The engine takes a message as soon as it is whole, so the buffer never
    // holds more than one framed message (at most 65537 bytes) plus one read.
    input.reserve(4096.min(MAX_HANDSHAKE_MESSAGE));
    if io.read_buf(input).await? == 0 {
        return Err(Error::PeerClosed);
    }
    Ok(())
}
