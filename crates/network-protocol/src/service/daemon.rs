//! The server: `daemon::new_with_config(config, dispatcher)`, then
//! [`Server::run`] and [`Server::shutdown`].
//!
//! A [`Server`] is a cheap handle (clone it to shut the server down from
//! another task). Nothing happens until it is bound: [`Server::run`] binds
//! the address, or call [`Server::bind`] first to learn the bound address
//! and the Noise public key clients should pin.
//!
//! # Examples
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use network_protocol::protocol::dispatcher::Dispatcher;
//! use network_protocol::service::daemon::{self, ServerConfig};
//!
//! # async fn run() -> network_protocol::error::Result<()> {
//! let dispatcher = Arc::new(Dispatcher::default());
//! dispatcher.register("ECHO", |msg| Ok(msg.clone()));
//! let mut config = ServerConfig::default();
//! config.address = "127.0.0.1:0".into();
//! let server = daemon::new_with_config(config, dispatcher);
//! server.bind().await?;
//! println!("listening on {:?}, key {:?}", server.local_addr(), server.public_key());
//! let handle = server.clone();
//! tokio::spawn(async move {
//!     tokio::time::sleep(Duration::from_secs(60)).await;
//!     handle.shutdown(Some(Duration::from_secs(5))).await;
//! });
//! server.run().await
//! # }
//! ```

use netproto_transport::sync::lock;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use netproto_crypto::PublicKey;
use netproto_dispatch::Dispatcher;

use crate::config::NetworkConfig;
pub use crate::config::ServerConfig;
use crate::error::{ProtocolError, Result};

/// Creates a server from the original crate's [`ServerConfig`]: Noise
/// security with a key generated when the server is bound, and the daemon's
/// defaults for everything else. Nothing is bound yet.
pub fn new_with_config(config: ServerConfig, dispatcher: Arc<Dispatcher>) -> Server {
    Server::new(config.to_daemon(), dispatcher)
}

/// Creates a server from a full [`NetworkConfig`]: security mode, key file,
/// client allow-list, TLS files, transport limits. Nothing is bound yet.
pub fn new_with_network_config(config: NetworkConfig, dispatcher: Arc<Dispatcher>) -> Server {
    Server::new(config.to_daemon(), dispatcher)
}

/// Creates a server from the daemon's own configuration. Nothing is bound
/// yet.
pub fn new_with_daemon_config(
    config: netproto_daemon::NetworkConfig,
    dispatcher: Arc<Dispatcher>,
) -> Server {
    Server::new(config, dispatcher)
}

/// Where a server is in its life.
enum State {
    /// Created; nothing bound.
    Idle,
    /// Bound, not yet running.
    Bound(Box<netproto_daemon::Server>),
    /// Running; the handle stops it.
    Running(netproto_daemon::ServerHandle),
    /// Shut down, or finished running.
    Stopped,
}

/// What a bound server tells about itself.
#[derive(Clone, Default)]
struct Bound {
    local_addr: Option<String>,
    public_key: Option<PublicKey>,
}

struct Shared {
    config: netproto_daemon::NetworkConfig,
    dispatcher: Arc<Dispatcher>,
    state: tokio::sync::Mutex<State>,
    bound: Mutex<Bound>,
}

/// A server created by [`new_with_config`] and its siblings (or by
/// [`tls_daemon`](super::tls_daemon)): a cheap, cloneable handle.
///
/// It wraps [`netproto_daemon::Server`]: connection limits (total, per IP,
/// handshakes in progress), backpressure, heartbeats and graceful shutdown
/// with a goaway to every client.
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("address", &self.shared.config.server.address)
            .field("mode", &self.shared.config.security.mode)
            .finish_non_exhaustive()
    }
}

impl Server {
    fn new(config: netproto_daemon::NetworkConfig, dispatcher: Arc<Dispatcher>) -> Self {
        Self {
            shared: Arc::new(Shared {
                config,
                dispatcher,
                state: tokio::sync::Mutex::new(State::Idle),
                bound: Mutex::new(Bound::default()),
            }),
        }
    }

    /// The daemon configuration this server runs with.
    pub fn config(&self) -> &netproto_daemon::NetworkConfig {
        &self.shared.config
    }

    /// Binds the address and loads or generates the keys and certificates,
    /// without accepting connections yet. Does nothing if already bound.
    ///
    /// # Errors
    ///
    /// Configuration errors (a bad value, a missing key or certificate
    /// file), bind errors, and [`ProtocolError::ShutDown`] after a shutdown.
    pub async fn bind(&self) -> Result<()> {
        let mut state = self.shared.state.lock().await;
        self.bind_locked(&mut state).await
    }

    async fn bind_locked(&self, state: &mut State) -> Result<()> {
        match state {
            State::Idle => {
                let server = netproto_daemon::Server::bind(
                    self.shared.config.clone(),
                    self.shared.dispatcher.clone(),
                )
                .await?;
                *lock(&self.shared.bound) = Bound {
                    local_addr: Some(server.local_addr()),
                    public_key: server.public_key().copied(),
                };
                *state = State::Bound(Box::new(server));
                Ok(())
            }
            State::Bound(_) | State::Running(_) => Ok(()),
            State::Stopped => Err(ProtocolError::ShutDown),
        }
    }

    /// The bound address (`host:port` with the real port, or `unix:path`),
    /// once [`bind`](Self::bind) or [`run`](Self::run) has bound it.
    pub fn local_addr(&self) -> Option<String> {
        lock(&self.shared.bound).local_addr.clone()
    }

    /// The server's Noise public key, once bound in Noise mode: give it to
    /// clients to pin
    /// ([`client::connect_pinned`](super::client::connect_pinned)).
    pub fn public_key(&self) -> Option<PublicKey> {
        lock(&self.shared.bound).public_key
    }

    /// Binds (unless already bound), then accepts and serves connections
    /// until [`shutdown`](Self::shutdown). Returns `Ok(())` at once if the
    /// server was shut down before it ran.
    ///
    /// # Errors
    ///
    /// As [`bind`](Self::bind) (except after a shutdown), and
    /// [`ProtocolError::AlreadyRunning`] if another call is running it.
    /// Errors of single connections are logged, never returned.
    pub async fn run(&self) -> Result<()> {
        let mut state = self.shared.state.lock().await;
        if matches!(*state, State::Stopped) {
            return Ok(());
        }
        if matches!(*state, State::Running(_)) {
            return Err(ProtocolError::AlreadyRunning);
        }
        self.bind_locked(&mut state).await?;
        // bind_locked leaves an idle server bound, and the other states
        // returned above; were that ever broken, the server is stopped.
        let State::Bound(server) = std::mem::replace(&mut *state, State::Stopped) else {
            return Err(ProtocolError::ShutDown);
        };
        let handle = server.handle();
        let mut running = pin!((*server).run());
        // Poll the server once before anyone can ask it to stop: it
        // subscribes to its shutdown signal on its first poll, and a signal
        // sent before that would be missed.
        let first = poll_fn(|cx| Poll::Ready(running.as_mut().poll(cx))).await;
        if let Poll::Ready(result) = first {
            return Ok(result?);
        }
        *state = State::Running(handle);
        drop(state);
        let result = running.await;
        *self.shared.state.lock().await = State::Stopped;
        Ok(result?)
    }

    /// Shuts the server down gracefully and waits until it has stopped: no
    /// new connections, a goaway to every client, requests in flight get
    /// `timeout` to finish (the configured `shutdown_timeout` when `None`),
    /// then every connection is closed.
    ///
    /// A server that is not running yet is closed and will not run. Calling
    /// it again does nothing.
    pub async fn shutdown(&self, timeout: Option<Duration>) {
        let handle = {
            let mut state = self.shared.state.lock().await;
            match std::mem::replace(&mut *state, State::Stopped) {
                State::Running(handle) => {
                    *state = State::Running(handle.clone());
                    handle
                }
                State::Idle | State::Bound(_) | State::Stopped => return,
            }
        };
        handle.shutdown(timeout).await;
    }

    /// Runs until `signal` completes, then shuts down gracefully with the
    /// configured `shutdown_timeout`.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run).
    pub async fn run_until(&self, signal: impl Future<Output = ()>) -> Result<()> {
        let mut running = pin!(self.run());
        tokio::select! {
            result = &mut running => return result,
            () = signal => {}
        }
        let (result, ()) = tokio::join!(running, self.shutdown(None));
        result
    }
}
