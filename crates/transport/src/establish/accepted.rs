//! A connection past its handshake, not started yet.

use std::time::Duration;

use bytes::BytesMut;
use netproto_wire::{Decoder, Encoder, HEADER_LEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::connection::{ConnectionInfo, Protection};
use crate::proto::closing_frame;
use crate::{Connection, ConnectionConfig, Error, Io};

/// How long [`Accepted::first_header`] spends telling a peer why its first
/// header is refused.
const TELL_WITHIN: Duration = Duration::from_millis(100);

/// A server connection whose preface and security handshake are done, and
/// whose reader and writer tasks are not started yet: see
/// [`Acceptor::accept_handshake`](crate::Acceptor::accept_handshake).
///
/// A server can run handshakes (the costly public-key work a stranger can
/// make it do) on threads of their own, and start the established
/// connections ([`Accepted::start`]) where its requests are served, so that a
/// flood of handshakes does not delay the clients already connected.
pub struct Accepted<I> {
    pub(super) stream: AcceptedStream<I>,
    pub(super) protection: Protection,
    pub(super) leftover: BytesMut,
    pub(super) info: ConnectionInfo,
    pub(super) config: ConnectionConfig,
    pub(super) offload: Option<tokio::runtime::Handle>,
}

pub(crate) enum AcceptedStream<I> {
    /// The stream as accepted, plain or Noise: the connection itself seals
    /// its frames into Noise records, or sends them as they are.
    Raw(I),
    /// TLS: frames go straight into the TLS stream.
    Tls(Box<tokio_rustls::server::TlsStream<I>>),
}

impl<I: Io> Accepted<I> {
    /// What the handshake established: mode, peer key or certificate,
    /// capabilities.
    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// The socket under the connection (under TLS, in TLS mode): to set an
    /// option on it, or to move it to another runtime's I/O driver before
    /// the connection starts.
    pub fn get_mut(&mut self) -> &mut I {
        match &mut self.stream {
            AcceptedStream::Raw(io) => io,
            AcceptedStream::Tls(stream) => stream.get_mut().0,
        }
    }

    /// Runs the connection's costly work on `runtime`'s blocking threads
    /// instead of the current runtime's: decompressing large bodies (64 KiB
    /// and more), milliseconds of CPU a peer can ask for with a few bytes. A
    /// server gives it threads of lower priority, so that this work waits
    /// while other connections are served.
    ///
    /// The lower-level form of [`StartOptions::offload`](crate::StartOptions::offload),
    /// which an [`Acceptor`](crate::Acceptor) applies to every connection.
    #[must_use]
    pub fn offload_to(mut self, runtime: tokio::runtime::Handle) -> Self {
        self.offload = Some(runtime);
        self
    }

    /// Waits up to `wait` for the peer's first frame header and checks it
    /// against the connection's limits, before the connection is started.
    ///
    /// Clients send their first request as soon as they are connected, and a
    /// stranger's cheapest attacks (garbage, a header declaring a body over
    /// the limit, a connection closed right away) show in their first bytes.
    /// A server that calls this where it runs handshakes turns those away
    /// there, so that the threads serving established connections never see
    /// them: the idea of `TCP_DEFER_ACCEPT` and of accept filters. A quiet
    /// peer is not an error: after `wait` the connection starts as it is.
    /// The bytes read are kept for the connection.
    ///
    /// Only plain connections are checked: Noise records and TLS are opened
    /// once the connection runs, and for them this returns `Ok` at once. A
    /// refused header is answered with an error frame (request id 0, code
    /// `PROTOCOL` or `TOO_LARGE`) before this returns, as the connection
    /// would.
    ///
    /// The lower-level form of
    /// [`StartOptions::first_header_within`](crate::StartOptions::first_header_within),
    /// which an [`Acceptor`](crate::Acceptor) applies to every connection.
    ///
    /// # Errors
    ///
    /// A header the connection would refuse ([`Error::Protocol`]), the peer
    /// closing before a whole header ([`Error::PeerClosed`]), or a read
    /// error.
    pub async fn first_header(&mut self, wait: Duration) -> Result<(), Error> {
        let (AcceptedStream::Raw(io), Protection::ByStream) = (&mut self.stream, &self.protection)
        else {
            return Ok(());
        };
        // Only the header is read here, into no allocation of its own: a
        // quiet peer waits at the cost of its task alone. Bytes already kept
        // (by an earlier call) count towards it.
        let need = HEADER_LEN.saturating_sub(self.leftover.len());
        let mut header = [0; HEADER_LEN];
        let mut got = 0;
        let read = async {
            while got < need {
                let n = io
                    .read(header.get_mut(got..need).unwrap_or_default())
                    .await?;
                if n == 0 {
                    return Err(Error::PeerClosed);
                }
                got += n;
            }
            Ok(())
        };
        let read = tokio::time::timeout(wait, read).await;
        self.leftover
            .extend_from_slice(header.get(..got).unwrap_or_default());
        match read {
            Ok(read) => read?,
            Err(_) => return Ok(()),
        }
        let Err(error) = Decoder::new(self.config.max_frame_len).peek_header(&self.leftover) else {
            return Ok(());
        };
        let error = Error::from(error);
        // Tell the peer why, as the connection would (best effort, briefly:
        // this is where a stranger's garbage ends).
        if let Some(frame) = closing_frame(&error) {
            let mut bytes = BytesMut::new();
            if Encoder::new(self.info.peer_max_frame_len)
                .encode(&frame, &mut bytes)
                .is_ok()
            {
                let tell = async {
                    io.write_all(&bytes).await?;
                    io.shutdown().await
                };
                let _ = tokio::time::timeout(wait.min(TELL_WITHIN), tell).await;
            }
        }
        Err(error)
    }

    /// Sets or clears the runtime of [`offload_to`](Self::offload_to).
    pub(crate) fn set_offload(&mut self, runtime: Option<tokio::runtime::Handle>) {
        self.offload = runtime;
    }

    /// Starts the connection's reader and writer tasks on the current tokio
    /// runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as `tokio::spawn` does.
    pub fn start(self) -> Connection {
        let Self {
            stream,
            protection,
            leftover,
            info,
            config,
            offload,
        } = self;
        match stream {
            AcceptedStream::Raw(io) => {
                Connection::spawn(io, protection, leftover, info, &config, offload)
            }
            AcceptedStream::Tls(stream) => {
                Connection::spawn(*stream, protection, leftover, info, &config, offload)
            }
        }
    }
}

impl<I> std::fmt::Debug for Accepted<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accepted")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}
