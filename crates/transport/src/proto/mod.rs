//! The connection protocol without I/O: what a connection does with the
//! bytes it reads, the frames it is asked to send and the passing of time.
//!
//! Nothing here touches a socket, a runtime or a clock. The connection's
//! tokio tasks (in `connection/`) move bytes and instants in and act on what
//! comes out, as `quinn` drives `quinn-proto`; the tests in `tests/` drive
//! two of these cores against each other with neither.
//!
//! - [`Deframer`]: record opening and frame decoding over one read buffer;
//! - [`Inflow`]: frames to [`Event`]s (messages, control frames, pongs to
//!   send), with decompression;
//! - [`Outflow`]: batches of encoded frames to the bytes to write (Noise
//!   records, or the frames as they are);
//! - [`Heartbeat`] and [`Watchdog`]: the heartbeat, dead-peer and idle timers;
//! - [`Policy`]: which bodies are compressed;
//! - [`closing_frame`]: the error frame that tells a peer why we close.

mod closing;
mod compression;
mod deframe;
mod inflow;
mod liveness;
mod outflow;
pub(crate) mod recv_pool;
#[cfg(test)]
mod tests;

pub(crate) use closing::closing_frame;
pub(crate) use compression::{Policy, decompress_config};
pub(crate) use deframe::Deframer;
pub(crate) use inflow::{Event, Inflow, message};
pub(crate) use liveness::{Heartbeat, Watchdog};
pub(crate) use outflow::Outflow;
