//! Accepted sockets that can move from one runtime's I/O driver to another's.
//!
//! A tokio socket stays registered with the driver of the runtime it was
//! made on: its readiness events are read by that runtime's threads. The
//! server accepts and runs handshakes on its handshake runtime, whose threads
//! run at a lower priority, and serves established connections on the main
//! runtime; an established socket is therefore taken off the handshake
//! runtime's driver ([`Stream::detach`]) and registered again with the
//! driver of the first runtime that polls it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A TCP or Unix stream, registered with a runtime's driver or detached.
pub(crate) enum Stream {
    Tcp(tokio::net::TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
    /// Off every driver: registered again when next polled.
    Detached(Detached),
    /// What is left when detaching or attaching failed.
    Gone,
}

/// A socket off every driver.
pub(crate) enum Detached {
    Tcp(std::net::TcpStream),
    #[cfg(unix)]
    Unix(std::os::unix::net::UnixStream),
}

impl Stream {
    /// Takes the socket off its runtime's driver; the next poll registers it
    /// with the runtime of the task that polls it.
    ///
    /// # Errors
    ///
    /// The system's, when it refuses to deregister the socket; the stream is
    /// then unusable.
    pub(crate) fn detach(&mut self) -> io::Result<()> {
        *self = match std::mem::replace(self, Self::Gone) {
            Self::Tcp(stream) => Self::Detached(Detached::Tcp(stream.into_std()?)),
            #[cfg(unix)]
            Self::Unix(stream) => Self::Detached(Detached::Unix(stream.into_std()?)),
            other => other,
        };
        Ok(())
    }

    /// Registers a detached socket with the current runtime's driver.
    fn attach(&mut self) -> io::Result<()> {
        if !matches!(self, Self::Detached(_)) {
            return Ok(());
        }
        *self = match std::mem::replace(self, Self::Gone) {
            Self::Detached(Detached::Tcp(stream)) => {
                Self::Tcp(tokio::net::TcpStream::from_std(stream)?)
            }
            #[cfg(unix)]
            Self::Detached(Detached::Unix(stream)) => {
                Self::Unix(tokio::net::UnixStream::from_std(stream)?)
            }
            other => other,
        };
        Ok(())
    }

    /// The attached stream, attaching it first if needed.
    fn io(&mut self) -> io::Result<Pin<&mut (dyn Attached + '_)>> {
        self.attach()?;
        match self {
            Self::Tcp(stream) => Ok(Pin::new(stream)),
            #[cfg(unix)]
            Self::Unix(stream) => Ok(Pin::new(stream)),
            Self::Detached(_) | Self::Gone => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the socket could not move between runtimes",
            )),
        }
    }
}

/// What an attached stream is.
trait Attached: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Attached for T {}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().io() {
            Ok(io) => io.poll_read(cx, buf),
            Err(error) => Poll::Ready(Err(error)),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().io() {
            Ok(io) => io.poll_write(cx, buf),
            Err(error) => Poll::Ready(Err(error)),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().io() {
            Ok(io) => io.poll_write_vectored(cx, bufs),
            Err(error) => Poll::Ready(Err(error)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        // Both kinds of socket write vectors, attached or not yet.
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().io() {
            Ok(io) => io.poll_flush(cx),
            Err(error) => Poll::Ready(Err(error)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().io() {
            Ok(io) => io.poll_shutdown(cx),
            Err(error) => Poll::Ready(Err(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A runtime of its own, as the server's handshake threads are.
    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_detached_socket_serves_on_the_runtime_that_polls_it() {
        let first = runtime();
        let (mut ours, mut peer) = first.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let peer = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
            let (peer, accepted) = tokio::join!(peer, listener.accept());
            (Stream::Tcp(accepted.unwrap().0), peer.unwrap())
        });
        ours.detach().unwrap();
        assert!(matches!(ours, Stream::Detached(_)));
        // The first runtime is gone: only a registration with the second
        // one can make the socket's readiness known.
        drop(first);
        let second = runtime();
        let echoed = second.block_on(async move {
            let serve = async {
                let mut buf = [0; 5];
                ours.read_exact(&mut buf).await.unwrap();
                ours.write_all(&buf).await.unwrap();
                ours
            };
            let ask = async {
                // The peer's own socket came from the first runtime too.
                peer = tokio::net::TcpStream::from_std(peer.into_std().unwrap()).unwrap();
                peer.write_all(b"hello").await.unwrap();
                let mut buf = [0; 5];
                peer.read_exact(&mut buf).await.unwrap();
                buf
            };
            let timeout = std::time::Duration::from_secs(10);
            tokio::time::timeout(timeout, async { tokio::join!(serve, ask) })
                .await
                .unwrap()
        });
        assert!(matches!(echoed.0, Stream::Tcp(_)));
        assert_eq!(&echoed.1, b"hello");
    }

    #[test]
    fn a_socket_lost_between_runtimes_fails_every_use_clearly() {
        runtime().block_on(async {
            let mut gone = Stream::Gone;
            let mut buf = [0; 1];
            let read = gone.read(&mut buf).await.unwrap_err();
            assert_eq!(read.kind(), io::ErrorKind::NotConnected);
            let write = gone.write(b"x").await.unwrap_err();
            assert_eq!(write.kind(), io::ErrorKind::NotConnected);
            assert!(gone.detach().is_ok(), "nothing left to detach");
        });
    }
}
