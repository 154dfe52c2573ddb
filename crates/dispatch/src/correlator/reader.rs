//! The reader task: matches what arrives to pending requests and streams.

use std::io;
use std::sync::Arc;

use netproto_transport::{Incoming, Receiver, Sender};
use netproto_wire::{DataFlags, Envelope, ErrorCode, ErrorFrame, Frame, GoAway};
use tokio::sync::mpsc;

use super::state::{Closed, Shared};
use super::stream::BeyondCredit;
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
                Ok(Some(Incoming::Message(envelope))) => {
                    if let Err(cause) = self.response(envelope).await {
                        break cause;
                    }
                }
                Ok(Some(Incoming::Error(error))) if error.request_id != 0 => {
                    let request_id = error.request_id;
                    let remote = Error::Remote {
                        request_id,
                        code: error.code,
                        message: error.message,
                    };
                    match self.shared.take(request_id) {
                        Some(waiter) => {
                            let _ = waiter.send(Err(remote));
                        }
                        None if self.shared.stream_end(request_id, Some(Err(remote))) => {}
                        None => tracing::debug!(request_id, "error frame for no pending request"),
                    }
                }
                Ok(Some(Incoming::End(request_id))) => {
                    if !self.shared.stream_end(request_id, None) {
                        tracing::debug!(request_id, "end frame for no stream in flight");
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
        self.shared
            .streams_fail(|_| true, || Error::Disconnected(cause.clone()));
        // The peer will read nothing more: close our side too.
        let _ = self.sender.close().await;
    }

    /// Routes a message: a response, a stream item, or an unsolicited
    /// message. A stream item beyond its credit ends the connection
    /// (PROTOCOL.md Part III §4): the error is why.
    async fn response(&mut self, envelope: Envelope) -> Result<(), netproto_transport::Error> {
        let request_id = envelope.request_id;
        if request_id == 0 {
            self.forward(Incoming::Message(envelope)).await;
        } else if envelope.flags.contains(DataFlags::STREAM) {
            if let Err(BeyondCredit(id)) = self.shared.stream_item(request_id, envelope.payload) {
                return Err(self.beyond_credit(id).await);
            }
        } else if let Some(waiter) = self.shared.take(request_id) {
            // A waiter gone since is a caller that stopped waiting.
            let _ = waiter.send(Ok(envelope));
        } else if !self
            .shared
            .stream_end(request_id, Some(Ok(envelope.payload)))
        {
            tracing::debug!(
                request_id,
                "response to no pending request (timed out or cancelled)"
            );
        }
        Ok(())
    }

    /// Tells the peer that it sent a stream item beyond its credit, and
    /// returns the cause the connection ends with.
    async fn beyond_credit(&self, id: u64) -> netproto_transport::Error {
        const WHY: &str = "stream item beyond its credit";
        tracing::debug!(request_id = id, "{WHY}");
        let frame = ErrorFrame::new(0, ErrorCode::PROTOCOL, WHY);
        let _ = self.sender.send_frame(Frame::Error(frame)).await;
        netproto_transport::Error::Io(io::Error::new(io::ErrorKind::InvalidData, WHY))
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
        self.shared.streams_fail(
            |id| id > last,
            || Error::GoingAway {
                last_request_id: last,
                code,
            },
        );
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
