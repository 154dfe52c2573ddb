//! Opening the stream a connection runs over: TCP, Unix sockets, pipes.

use std::path::Path;
use std::time::Duration;

use tokio::net::{TcpStream, ToSocketAddrs};

use crate::config::check_duration;
use crate::{Error, TimeoutKind};

/// Opens a TCP connection with `TCP_NODELAY` on (the writer coalesces
/// frames itself, so Nagle's algorithm would only add delay).
///
/// The lower-level form of [`Connector::connect_tcp`](crate::Connector::connect_tcp),
/// which also runs the handshake.
///
/// # Errors
///
/// [`Error::Setup`] for a timeout out of range; [`Error::Timeout`] with
/// [`TimeoutKind::Connect`], or the I/O error.
pub async fn connect_tcp(addr: impl ToSocketAddrs, timeout: Duration) -> Result<TcpStream, Error> {
    check_duration(timeout, "connect timeout must be between 1 ms and one day")?;
    tcp(addr, timeout).await
}

/// [`connect_tcp`] with the timeout already checked.
pub(crate) async fn tcp(addr: impl ToSocketAddrs, timeout: Duration) -> Result<TcpStream, Error> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(stream) => stream?,
        Err(_) => {
            return Err(Error::Timeout {
                kind: TimeoutKind::Connect,
                after: timeout,
            });
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Opens a Unix domain socket connection.
///
/// The lower-level form of [`Connector::connect_unix`](crate::Connector::connect_unix),
/// which also runs the handshake.
///
/// # Errors
///
/// [`Error::Setup`] for a timeout out of range; [`Error::Timeout`] with
/// [`TimeoutKind::Connect`], or the I/O error.
#[cfg(unix)]
pub async fn connect_unix(
    path: impl AsRef<Path>,
    timeout: Duration,
) -> Result<tokio::net::UnixStream, Error> {
    check_duration(timeout, "connect timeout must be between 1 ms and one day")?;
    unix(path, timeout).await
}

/// [`connect_unix`] with the timeout already checked.
#[cfg(unix)]
pub(crate) async fn unix(
    path: impl AsRef<Path>,
    timeout: Duration,
) -> Result<tokio::net::UnixStream, Error> {
    match tokio::time::timeout(timeout, tokio::net::UnixStream::connect(path)).await {
        Ok(stream) => Ok(stream?),
        Err(_) => Err(Error::Timeout {
            kind: TimeoutKind::Connect,
            after: timeout,
        }),
    }
}

/// Opens a Windows named pipe, which stands in for a Unix socket there.
///
/// # Errors
///
/// The I/O error.
#[cfg(windows)]
pub async fn connect_pipe(
    name: impl AsRef<std::ffi::OsStr>,
) -> Result<tokio::net::windows::named_pipe::NamedPipeClient, Error> {
    Ok(tokio::net::windows::named_pipe::ClientOptions::new().open(name)?)
}
