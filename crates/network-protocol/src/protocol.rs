//! Messages and their routing.

/// Routes messages to handlers registered by type name: the
/// `netproto-dispatch` crate.
///
/// Handlers return `Result<Message, HandlerError>`; a handler's error, an
/// unknown type or a panic becomes an error answer to the client, never a
/// dropped request.
pub mod dispatcher {
    pub use netproto_dispatch::*;
}

/// The messages: [`Message`](message::Message) (`Ping`, `Pong`,
/// `Echo(String)`, `Custom { msg_type, data }`, `Unknown`) and the
/// [`Envelope`](message::Envelope) they travel in.
///
/// The original crate's `Message::Custom(Vec<u8>)` carried no type name; ours
/// names the application type, so that the dispatcher can route it:
/// `Message::custom("DATA_PROCESS", vec![1u8, 0, 1])?`.
pub mod message {
    pub use netproto_wire::{Envelope, MAX_TYPE_LEN, Message, MessageType};
}
