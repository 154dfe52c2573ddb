//! The reader task: matches what arrives to pending requests and streams.

use std::sync::Arc;

use netproto_transport::{Incoming, Receiver, Sender};
use netproto_wire::{Envelope, GoAway};
use tokio::sync::mpsc;

use super::state::{Closed, Shared};
use crate::Error;

/// The reader task: matches what arrives to pending requests.
pub(super) struct Reader {
    pub(super) shared: Arc<Shared>,
    pub(super) sender: Sender,
    pub(super) unsolicited: Option<mpsc::Sender<Incoming>>,
}

impl Reader {
    pub(super) async fn run(mut self, mut receiver: Receiver) {
        let cause = loop {
            match receiver.recv().await {
                Ok(Some(Incoming::Message(envelope))) => self.response(envelope).await,
                Ok(Some(Incoming::Error(error))) if error.request_id != 0 => {
                    let request_id = error.request_id;
                    let remote = Error::Remote {
                        request_id,
                        code: error.code,
                        message: error.message,
                    };
                    if !self.complete(request_id, Err(remote)) {
                        tracing::debug!(request_id, "error frame for no pending request");
                    }
                }
                Ok(Some(Incoming::GoAway(goaway))) => {
                    self.goaway(&goaway);
                    self.forward(Incoming::GoAway(goaway)).await;
                }
                Ok(Some(other)) => self.forward(other).await,
                Ok(None) => break netproto_transport::Error::PeerClosed,
                Err(error) => break error,
            }
        };
        tracing::debug!(error = %cause, "connection ended");
        let cause = Arc::new(cause);
        {
            let mut state = self.shared.lock();
            if state.closed.is_none() {
                state.closed = Some(Closed::Lost(cause.clone()));
            }
        }
        for waiter in self.shared.take_all(|_| true) {
            let _ = waiter.send(Err(Error::Disconnected(cause.clone())));
        }
        // The peer will read nothing more: close our side too.
        let _ = self.sender.close().await;
    }

    async fn response(&mut self, envelope: Envelope) {
        let request_id = envelope.request_id;
        if request_id == 0 {
            self.forward(Incoming::Message(envelope)).await;
        } else if !self.complete(request_id, Ok(envelope)) {
            tracing::debug!(
                request_id,
                "response to no pending request (timed out or cancelled)"
            );
        }
    }

    /// Hands the answer to request `id`; false when nobody waits for it.
    fn complete(&self, id: u64, result: Result<Envelope, Error>) -> bool {
        match self.shared.take(id) {
            // A waiter gone since is a caller that stopped waiting.
            Some(waiter) => waiter.send(result).is_ok(),
            None => false,
        }
    }

    /// Records the peer's goaway and fails the requests it will not process.
    fn goaway(&self, goaway: &GoAway) {
        tracing::debug!(
            last_request_id = goaway.last_request_id,
            code = goaway.code.0,
            "peer is going away"
        );
        let code = goaway.code;
        let (last, abandoned) = {
            let mut state = self.shared.lock();
            // A second goaway may only lower the bound.
            let last = state.goaway.map_or(goaway.last_request_id, |(earlier, _)| {
                earlier.min(goaway.last_request_id)
            });
            state.goaway = Some((last, code));
            drop(state);
            (last, self.shared.take_all(|id| id > last))
        };
        for waiter in abandoned {
            let _ = waiter.send(Err(Error::GoingAway {
                last_request_id: last,
                code,
            }));
        }
    }

    /// Queues an unsolicited item, waiting while the queue is full.
    async fn forward(&mut self, item: Incoming) {
        if let Some(tx) = &self.unsolicited {
            if tx.send(item).await.is_ok() {
                return;
            }
            self.unsolicited = None;
        }
        tracing::debug!("unsolicited message discarded: its queue was dropped");
    }
}
