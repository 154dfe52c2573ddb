//! Your own service: a typed user directory, server and client in one
//! program over Noise, with `netproto-daemon` as the only netproto
//! dependency (plus `tokio` and `serde`).
//!
//! ```text
//! cargo run -p netproto-daemon --example quickstart
//! ```
//!
//! The client pins the server's key, stores and reads 320 users with 32
//! calls in flight, gets `NOT_FOUND` for a user that does not exist, sees a
//! deadline pass on a slow method, and has a call in flight answered while
//! the server shuts down gracefully. It asserts every result, and exits 0
//! only when all are as expected.
#![allow(clippy::print_stdout)] // printing the steps is this example's job

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use netproto_daemon::service::{CallError, CallOptions, Context, register, service};
use netproto_daemon::{Client, Dispatcher, ErrorCode, HandlerError, NetworkConfig, Server};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the service stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct User {
    id: u32,
    name: String,
}

service! {
    /// A directory of users.
    service Users {
        /// Stores a user; answers whether it replaced one.
        PutUser = "users.put.v1": User => bool;
        /// Reads a user: `NOT_FOUND` when there is none.
        GetUser = "users.get.v1": u32 => User;
        /// Reads a user from a slow backend.
        GetUserSlow = "users.get_slow.v1": u32 => User;
    }
}

/// How long the slow backend takes.
const SLOW: Duration = Duration::from_millis(300);
/// Tasks calling at once, and the users each one stores and reads.
const TASKS: u32 = 32;
const USERS_PER_TASK: u32 = 10;

/// The server's state, shared by its handlers.
#[derive(Default)]
struct Store {
    users: Mutex<HashMap<u32, User>>,
    /// Counts the slow reads begun, so that `run` knows one is in flight.
    slow_reads: watch::Sender<u32>,
}

impl Store {
    fn users(&self) -> MutexGuard<'_, HashMap<u32, User>> {
        self.users.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, id: u32) -> Result<User, HandlerError> {
        let user = self.users().get(&id).cloned();
        user.ok_or_else(|| HandlerError::not_found(format!("no user {id}")))
    }
}

/// The handlers, on the dispatcher the server is given.
fn dispatcher(store: &Arc<Store>) -> Arc<Dispatcher> {
    let dispatcher = Arc::new(Dispatcher::default());
    let s = store.clone();
    register::<PutUser, _, _>(&dispatcher, move |_: Context, user: User| {
        let replaced = s.users().insert(user.id, user).is_some();
        async move { Ok(replaced) }
    });
    let s = store.clone();
    register::<GetUser, _, _>(&dispatcher, move |_: Context, id| {
        std::future::ready(s.get(id))
    });
    let s = store.clone();
    register::<GetUserSlow, _, _>(&dispatcher, move |_: Context, id| {
        let store = s.clone();
        async move {
            store.slow_reads.send_modify(|begun| *begun += 1);
            // The server drops this future when the caller's deadline passes.
            tokio::time::sleep(SLOW).await;
            store.get(id)
        }
    });
    dispatcher
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // The run takes well under a second; past a minute it has hung.
    tokio::time::timeout(Duration::from_secs(60), run()).await?
}

async fn run() -> Result<(), BoxError> {
    // Server: Noise (the default mode) on a free loopback port, fresh key.
    let mut config = NetworkConfig::default();
    config.server.address = "127.0.0.1:0".into();
    let store = Arc::new(Store::default());
    let server = Server::bind(config.clone(), dispatcher(&store)).await?;
    let handle = server.handle();
    // Client: pins the server's key, so that no one else can pose as it.
    config.client.address = server.local_addr();
    config.client.server_key = Some(*server.public_key().ok_or("no Noise key")?);
    let serving = tokio::spawn(server.run());
    let client = Client::connect(config.clone()).await?;
    assert_eq!(client.server_key(), config.client.server_key);
    let users = client.typed().await?;

    // 32 tasks, each storing then reading its users: 32 calls in flight.
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let users = users.clone();
        tasks.spawn(async move {
            for id in task * USERS_PER_TASK..(task + 1) * USERS_PER_TASK {
                let user = User {
                    id,
                    name: format!("user {id}"),
                };
                assert!(!users.call::<PutUser>(user.clone()).await?);
                assert_eq!(users.call::<GetUser>(id).await?, user);
            }
            Ok::<_, CallError>(())
        });
    }
    while let Some(task) = tasks.join_next().await {
        task??;
    }
    let renamed = User {
        id: 7,
        name: "Ada".into(),
    };
    assert!(
        users.call::<PutUser>(renamed.clone()).await?,
        "user 7 replaced"
    );
    assert_eq!(users.call::<GetUser>(7).await?, renamed);
    println!(
        "stored and read {} users, {TASKS} calls at a time",
        TASKS * USERS_PER_TASK
    );

    // An application error: the handler's NOT_FOUND, with its text.
    let Err(missing) = users.call::<GetUser>(9999).await else {
        return Err("user 9999 was found".into());
    };
    assert_eq!(missing.code(), Some(ErrorCode::NOT_FOUND));
    println!("users.get.v1 9999 -> {missing}");

    // A per-request deadline, shorter than the slow method takes.
    let short = CallOptions::default().deadline(SLOW / 10);
    let Err(late) = users.call_with::<GetUserSlow>(7, &short).await else {
        return Err("the slow read beat its deadline".into());
    };
    assert!(late.is_deadline_exceeded(), "{late}");
    // Passed on the server (its answer says so), or here first (the source says so).
    let cause = late.source().map(|source| format!(": {source}"));
    let cause = cause.unwrap_or_default();
    println!("users.get_slow.v1 within {:?} -> {late}{cause}", SLOW / 10);

    // Graceful shutdown: the server takes no new calls, and answers the
    // one in flight before it closes.
    let mut slow_reads = store.slow_reads.subscribe();
    let in_flight = tokio::spawn({
        let users = users.clone();
        async move { users.call::<GetUserSlow>(7).await }
    });
    slow_reads.changed().await?; // the server is running it
    handle.shutdown(Some(Duration::from_secs(5))).await;
    assert_eq!(in_flight.await??, renamed);
    serving.await??;
    assert!(
        users.call::<GetUser>(7).await.is_err(),
        "served after shutdown"
    );
    println!("shut down gracefully, the call in flight answered");
    println!("quickstart: all checks passed");
    Ok(())
}
