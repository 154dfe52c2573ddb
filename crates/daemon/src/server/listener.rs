//! The listening socket: TCP (with a long accept queue) or a Unix socket,
//! and its move to the handshake threads' runtime.

use std::net::SocketAddr;

use super::stream::Stream;
use crate::Result;

pub(super) enum Listener {
    Tcp(tokio::net::TcpListener),
    #[cfg(unix)]
    Unix(tokio::net::UnixListener, SocketFile),
}

/// A Unix socket's file, removed when the listener goes.
#[cfg(unix)]
pub(super) struct SocketFile(std::path::PathBuf);

#[cfg(unix)]
impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Listener {
    pub(super) async fn bind(address: &str) -> Result<Self> {
        #[cfg(unix)]
        if let Some(path) = address.strip_prefix("unix:") {
            let path = std::path::PathBuf::from(path);
            // A stale socket file from a previous run would make bind fail.
            if path.exists() {
                std::fs::remove_file(&path)?;
            }
            let listener = tokio::net::UnixListener::bind(&path)?;
            return Ok(Self::Unix(listener, SocketFile(path)));
        }
        Ok(Self::Tcp(listen_tcp(address).await?))
    }

    /// The same listener, registered with the current runtime's driver: the
    /// sockets it accepts are registered there too.
    pub(super) fn rehome(self) -> std::io::Result<Self> {
        Ok(match self {
            Self::Tcp(listener) => {
                Self::Tcp(tokio::net::TcpListener::from_std(listener.into_std()?)?)
            }
            #[cfg(unix)]
            Self::Unix(listener, file) => Self::Unix(
                tokio::net::UnixListener::from_std(listener.into_std()?)?,
                file,
            ),
        })
    }

    pub(super) async fn accept(&self) -> std::io::Result<(Stream, Option<SocketAddr>)> {
        match self {
            Self::Tcp(listener) => {
                let (stream, peer) = listener.accept().await?;
                stream.set_nodelay(true)?;
                Ok((Stream::Tcp(stream), Some(peer)))
            }
            #[cfg(unix)]
            Self::Unix(listener, _) => {
                let (stream, _) = listener.accept().await?;
                Ok((Stream::Unix(stream), None))
            }
        }
    }

    pub(super) fn local_addr(&self) -> String {
        match self {
            Self::Tcp(listener) => listener
                .local_addr()
                .map_or_else(|_| "?".into(), |a| a.to_string()),
            #[cfg(unix)]
            Self::Unix(_, file) => format!("unix:{}", file.0.display()),
        }
    }
}

/// Connections the kernel queues for `accept` (capped by
/// `net.core.somaxconn`). Tokio's default of 128 is too small for a burst:
/// past it the kernel drops the clients' handshakes and they retry a second
/// or more later, delaying legitimate clients and the server's own timeouts.
const LISTEN_BACKLOG: u32 = 4096;

/// As `TcpListener::bind`, with a [`LISTEN_BACKLOG`] long accept queue.
async fn listen_tcp(address: &str) -> std::io::Result<tokio::net::TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(address).await? {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        #[cfg(not(windows))]
        socket.set_reuseaddr(true)?;
        match socket
            .bind(addr)
            .and_then(|()| socket.listen(LISTEN_BACKLOG))
        {
            Ok(listener) => return Ok(listener),
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the address resolved to nothing",
        )
    }))
}
