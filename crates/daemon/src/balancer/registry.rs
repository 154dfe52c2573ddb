//! The endpoints of a balancer as discovery reports them, and the changes
//! that each balance over them follows.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::convert::Infallible;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use netproto_transport::sync::lock;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tower::BoxError;
use tower::discover::Change;
use tower::load::{CompleteOnResponse, PendingRequests};

use super::EndpointView;
use super::endpoint::{Endpoint, EndpointService, Make, Settings};
use crate::client::Dialer;
use crate::config::{ClientConfig, SecurityConfig, TransportConfig};
use crate::{PeerAddress, Result};

/// An endpoint as a balance holds it: its service, with its requests in
/// flight as its load.
pub(crate) type Balanced<S> = PendingRequests<EndpointService<S>, CompleteOnResponse>;

/// The changes a balance follows, keyed by endpoint number.
pub(crate) type Changes<S> =
    Pin<Box<dyn Stream<Item = Result<Change<u64, Balanced<S>>, Infallible>> + Send>>;

/// The endpoints now, by number (in the order they were discovered).
type Endpoints = BTreeMap<u64, Arc<Endpoint>>;

/// The endpoints of a balancer and their connection tasks.
#[derive(Debug)]
pub(crate) struct Registry {
    endpoints: watch::Sender<Endpoints>,
    tasks: Mutex<HashMap<u64, AbortHandle>>,
    /// Bumped on every change of an endpoint's state and of the set.
    changed: Arc<watch::Sender<u64>>,
}

impl Registry {
    pub(crate) fn new() -> Self {
        Self {
            endpoints: watch::channel(BTreeMap::new()).0,
            tasks: Mutex::new(HashMap::new()),
            changed: Arc::new(watch::channel(0).0),
        }
    }

    fn insert(&self, id: u64, endpoint: Arc<Endpoint>, task: AbortHandle) {
        lock(&self.tasks).insert(id, task);
        self.endpoints.send_modify(|endpoints| {
            endpoints.insert(id, endpoint);
        });
        self.changed.send_modify(|version| *version += 1);
    }

    /// Stops endpoint `id`: no new requests; those in flight finish.
    fn remove(&self, id: u64) {
        if let Some(task) = lock(&self.tasks).remove(&id) {
            task.abort();
        }
        self.endpoints.send_modify(|endpoints| {
            if let Some(endpoint) = endpoints.remove(&id) {
                endpoint.stop();
            }
        });
        self.changed.send_modify(|version| *version += 1);
    }

    pub(crate) fn views(&self) -> Vec<EndpointView> {
        self.endpoints.borrow().values().map(|e| e.view()).collect()
    }

    /// How many endpoints are known.
    pub(crate) fn len(&self) -> usize {
        self.endpoints.borrow().len()
    }

    /// How many endpoints take new requests now.
    pub(crate) fn ready(&self) -> usize {
        self.endpoints
            .borrow()
            .values()
            .filter(|e| e.is_ready())
            .count()
    }

    pub(crate) fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The endpoints as a stream of tower changes: every endpoint known now
    /// is inserted, then each one discovered later, and each one removed
    /// is removed. Its services are those `make` builds on each
    /// connection. It ends when the registry is dropped.
    pub(crate) fn changes<S: Send + 'static>(&self, make: Make<S>) -> Changes<S> {
        let state = (
            self.endpoints.subscribe(),
            BTreeSet::new(),
            VecDeque::new(),
            true,
        );
        let stream = futures::stream::unfold(
            state,
            move |(mut endpoints, mut known, mut queue, mut first)| async move {
                loop {
                    if let Some(change) = queue.pop_front() {
                        return Some((Ok(change), (endpoints, known, queue, first)));
                    }
                    if !first && endpoints.changed().await.is_err() {
                        return None;
                    }
                    first = false;
                    let now: Endpoints = endpoints.borrow_and_update().clone();
                    for gone in known.iter().filter(|id| !now.contains_key(id)) {
                        queue.push_back(Change::Remove(*gone));
                    }
                    for (id, endpoint) in now.iter().filter(|(id, _)| !known.contains(*id)) {
                        let service = EndpointService::new(endpoint.clone(), make);
                        let balanced = PendingRequests::new(service, CompleteOnResponse::default());
                        queue.push_back(Change::Insert(*id, balanced));
                    }
                    known = now.into_keys().collect();
                }
            },
        );
        Box::pin(stream)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        for task in lock(&self.tasks).values() {
            task.abort();
        }
        for endpoint in self.endpoints.borrow().values() {
            endpoint.stop();
        }
    }
}

/// What starting an endpoint needs: the connection settings of every
/// endpoint, and how its health is watched.
#[derive(Debug, Clone)]
pub(crate) struct Factory {
    pub(crate) client: ClientConfig,
    pub(crate) transport: TransportConfig,
    pub(crate) security: SecurityConfig,
    pub(crate) settings: Settings,
}

impl Factory {
    /// Starts the connection task of the endpoint at `peer`.
    fn start(
        &self,
        peer: &PeerAddress,
        registry: &Registry,
    ) -> Result<(Arc<Endpoint>, AbortHandle)> {
        let mut security = self.security.clone();
        if let Some(key) = peer.key {
            security.server_key = Some(key);
        }
        let dialer = Dialer::new(&self.client, &self.transport, &security, &peer.address)?;
        let endpoint = Arc::new(Endpoint::new(
            peer.address.clone(),
            registry.changed.clone(),
        ));
        let task = tokio::spawn(endpoint.clone().run(dialer, self.settings.clone()));
        Ok((endpoint, task.abort_handle()))
    }
}

/// Follows `discovery` into `registry` until it ends: an endpoint starts
/// for each insert (replacing the one under the same key, if any) and
/// stops for each remove. Errors of the stream are logged and skipped.
pub(crate) async fn follow<K, E, D>(discovery: D, registry: Arc<Registry>, factory: Factory)
where
    D: Stream<Item = Result<Change<K, PeerAddress>, E>>,
    K: Hash + Eq,
    E: Into<BoxError>,
{
    let mut discovery = std::pin::pin!(discovery);
    let mut ids = HashMap::new();
    let mut next_id = 0u64;
    while let Some(change) = discovery.next().await {
        match change {
            Ok(Change::Insert(key, peer)) => match factory.start(&peer, &registry) {
                Ok((endpoint, task)) => {
                    tracing::debug!(peer = %peer.address, "endpoint discovered");
                    next_id += 1;
                    if let Some(old) = ids.insert(key, next_id) {
                        registry.remove(old);
                    }
                    registry.insert(next_id, endpoint, task);
                }
                Err(error) => {
                    tracing::warn!(peer = %peer.address, %error, "discovered endpoint not usable");
                }
            },
            Ok(Change::Remove(key)) => {
                if let Some(id) = ids.remove(&key) {
                    registry.remove(id);
                }
            }
            Err(error) => {
                let error: BoxError = error.into();
                tracing::warn!(%error, "discovery failed; keeping the endpoints known so far");
            }
        }
    }
    tracing::debug!("discovery ended; keeping the endpoints known so far");
}
