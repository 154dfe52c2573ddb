//! A typed key-value service, server and client in one process over Noise.
//!
//! ```text
//! cargo run -p netproto-daemon --example typed_kv
//! ```
//!
//! The server registers `kv.get.v1` and `kv.put.v1` (defined with
//! [`service!`]) on its dispatcher and listens on loopback with a fresh
//! Noise key; the client pins that key and calls them through
//! [`Client::typed`]. It checks what it gets back (puts then gets, a missing
//! key as a typed error, a deadline that passes on the server) and exits 0,
//! or fails with the first thing that was not as expected.
#![allow(clippy::print_stdout)] // printing the calls is this example's job

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use futures::StreamExt;
use netproto_daemon::service::{
    CallOptions, Context, HandlerError, register, register_stream, service,
};
use netproto_daemon::{Client, Dispatcher, NetworkConfig, SecurityMode, Server};
use serde::{Deserialize, Serialize};

/// A write: a key and its new value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Put {
    /// The key.
    key: String,
    /// Its new value.
    value: Vec<u8>,
}

/// Why a read has no value: an error the client matches on, not a text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum KvError {
    /// The key has no value.
    NotFound {
        /// The key asked for.
        key: String,
    },
}

/// A read's answer.
type GetResult = Result<Vec<u8>, KvError>;

service! {
    /// A key-value store.
    service Kv {
        /// Reads a key: its value, or [`KvError::NotFound`].
        KvGet = "kv.get.v1": String => GetResult, nested(KvError, GetResult);
        /// Writes a key; answers its previous value.
        KvPut = "kv.put.v1": Put => Option<Vec<u8>>;
        /// Watches a key, as a server stream: its value now (if any), then
        /// every write to it.
        KvWatch = "kv.watch.v1": String => Put;
    }
}

/// Keys under this prefix are read from a stand-in for a slow backend.
const SLOW_PREFIX: &str = "slow/";
/// How long the slow backend takes.
const SLOW_READ: Duration = Duration::from_millis(300);

/// The values, and the writes as they happen (for watchers).
#[derive(Clone)]
struct Store {
    values: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    writes: tokio::sync::broadcast::Sender<Put>,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            values: Arc::default(),
            writes: tokio::sync::broadcast::channel(64).0,
        }
    }
}

/// The server's dispatcher with the service's handlers.
fn dispatcher(store: &Store) -> Arc<Dispatcher> {
    let dispatcher = Arc::new(Dispatcher::default());
    let reads = store.clone();
    register::<KvGet, _, _>(&dispatcher, move |_context: Context, key: String| {
        let store = reads.clone();
        async move {
            if key.starts_with(SLOW_PREFIX) {
                // Dropped by the server when the caller's deadline passes.
                tokio::time::sleep(SLOW_READ).await;
            }
            let value = store
                .values
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&key)
                .cloned();
            Ok(value.ok_or(KvError::NotFound { key }))
        }
    });
    let writes = store.clone();
    register::<KvPut, _, _>(&dispatcher, move |_context: Context, put: Put| {
        let store = writes.clone();
        async move {
            let previous = store
                .values
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(put.key.clone(), put.value.clone());
            // No watcher is not an error.
            let _ = store.writes.send(put);
            Ok(previous)
        }
    });
    let watched = store.clone();
    register_stream::<KvWatch, _, _>(&dispatcher, move |_context: Context, key: String| {
        // Subscribed before the current value is read: no write falls
        // between the two.
        let writes = watched.writes.subscribe();
        let now = watched
            .values
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .map(|value| Put {
                key: key.clone(),
                value: value.clone(),
            });
        let later = futures::stream::unfold((writes, key), |(mut writes, key)| async move {
            loop {
                match writes.recv().await {
                    Ok(put) if put.key == key => return Some((Ok(put), (writes, key))),
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        return Some((
                            Err(HandlerError::failed("the watcher fell behind")),
                            (writes, key),
                        ));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        futures::stream::iter(now.map(Ok)).chain(later)
    });
    dispatcher
}

/// The whole run takes far less; past this it has hung, and fails.
const RUN_LIMIT: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tokio::time::timeout(RUN_LIMIT, run())
        .await
        .context("typed_kv did not finish in time")?
}

async fn run() -> anyhow::Result<()> {
    let mut config = NetworkConfig::default();
    config.server.address = "127.0.0.1:0".into();
    config.security.mode = SecurityMode::Noise;

    let store = Store::default();
    let server = Server::bind(config.clone(), dispatcher(&store)).await?;
    // The client pins the server's key: no known-hosts file is read or written.
    config.client.address = server.local_addr();
    config.client.server_key = Some(*server.public_key().context("no Noise key")?);
    let handle = server.handle();
    let serving = tokio::spawn(server.run());

    let client = Client::connect(config).await?;
    let kv = client.typed().await?;
    println!("connected over Noise, the server's key pinned");

    for (key, value) in [
        ("alpha", "1"),
        ("beta", "2"),
        ("alpha", "3"),
        ("slow/gamma", "4"),
    ] {
        let put = Put {
            key: key.into(),
            value: value.into(),
        };
        let previous = kv.call::<KvPut>(put).await?;
        println!("kv.put.v1 {key}={value} -> previous {previous:?}");
    }
    let previous = kv
        .call::<KvPut>(Put {
            key: "beta".into(),
            value: b"20".to_vec(),
        })
        .await?;
    ensure!(
        previous.as_deref() == Some(&b"2"[..]),
        "put answered {previous:?}"
    );

    for (key, expected) in [("alpha", "3"), ("beta", "20")] {
        let value = kv.call::<KvGet>(key.into()).await?;
        println!("kv.get.v1 {key} -> {value:?}");
        ensure!(
            value.as_deref() == Ok(expected.as_bytes()),
            "{key}: {value:?}"
        );
    }

    // A watcher of alpha gets its value now, then the writes made after.
    let mut watch = Box::pin(kv.call_stream::<KvWatch>("alpha".into()));
    let first = watch.next().await.context("the watch ended")??;
    ensure!(first.value == b"3", "watch started with {first:?}");
    for value in ["5", "6"] {
        kv.call::<KvPut>(Put {
            key: "alpha".into(),
            value: value.into(),
        })
        .await?;
        let seen = watch.next().await.context("the watch ended")??;
        println!(
            "kv.watch.v1 alpha -> {}",
            String::from_utf8_lossy(&seen.value)
        );
        ensure!(seen.value == value.as_bytes(), "watch saw {seen:?}");
    }
    // Dropping the stream cancels it on the server.
    drop(watch);

    let missing = kv.call::<KvGet>("delta".into()).await?;
    println!("kv.get.v1 delta -> {missing:?}");
    let expected: GetResult = Err(KvError::NotFound {
        key: "delta".into(),
    });
    ensure!(missing == expected, "a missing key gave {missing:?}");

    // The slow read takes longer than this deadline: the server drops the
    // handler and answers DEADLINE_EXCEEDED.
    let short = CallOptions::default().deadline(SLOW_READ / 4);
    match kv.call_with::<KvGet>("slow/gamma".into(), &short).await {
        Err(error) if error.is_deadline_exceeded() => {
            println!("kv.get.v1 slow/gamma within {:?} -> {error}", SLOW_READ / 4);
        }
        other => bail!("a passed deadline gave {other:?}"),
    }
    let long = CallOptions::default().deadline(SLOW_READ * 10);
    let value = kv.call_with::<KvGet>("slow/gamma".into(), &long).await?;
    println!(
        "kv.get.v1 slow/gamma within {:?} -> {value:?}",
        SLOW_READ * 10
    );
    ensure!(value.as_deref() == Ok(&b"4"[..]), "slow/gamma: {value:?}");

    client.close().await?;
    handle.shutdown(Some(Duration::from_secs(2))).await;
    serving.await??;
    println!("typed_kv: all checks passed");
    Ok(())
}
