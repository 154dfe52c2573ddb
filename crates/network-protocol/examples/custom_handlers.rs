//! The original README's "Custom Message Handlers", exercised in-process:
//! each message goes through the dispatcher exactly as a server would route
//! it, and the answers are printed.

// Example: short error handling keeps the point visible; no library code here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
// Changed: this example prints its results.
#![allow(clippy::print_stdout)]

use network_protocol::error::Result;
use network_protocol::protocol::dispatcher::{Dispatcher, Outcome};
use network_protocol::protocol::message::Message;
use std::sync::Arc;
use tracing::info;

// Changed: the README's statements stand outside any function; they are the
// body of `main` here, and the dispatcher is then exercised.
#[tokio::main]
async fn main() -> Result<()> {
    network_protocol::utils::logging::init_logging(Some("info"), None)?;

    // Create a dispatcher (typically shared between connections)
    let dispatcher = Arc::new(Dispatcher::default());

    // Basic handlers for built-in message types
    dispatcher.register("PING", |_| {
        info!("Ping received, sending pong");
        Ok(Message::Pong)
    });

    dispatcher.register("ECHO", |msg| {
        info!(content = ?msg, "Echo request received");
        Ok(msg.clone())
    });

    // Custom message type handler with complex processing
    dispatcher.register("DATA_PROCESS", |msg| {
        // Changed: our `Message::Custom` is a struct variant that also
        // carries the type name (`msg_type`), which the dispatcher routes on.
        if let Message::Custom { data, .. } = msg {
            // Process custom data
            info!(bytes = data.len(), "Processing custom data");

            // Return a response based on processing outcome
            // Changed: `Message::Custom(vec![..])` becomes
            // `Message::custom(type, bytes)?`, which checks the type name
            // (`?` turns a bad name into an error answer); `1u8` because the
            // bytes are generic (`impl Into<Bytes>`).
            if data.len() > 100 {
                Ok(Message::custom("DATA_PROCESS", vec![1u8, 0, 1])?) // Success code
            } else {
                Ok(Message::custom("DATA_PROCESS", vec![0u8, 0, 1])?) // Error code
            }
        } else {
            // Handle unexpected message type
            info!("Received incorrect message type for DATA_PROCESS");
            Ok(Message::Unknown)
        }
    });

    // Added: route a few requests through the handlers, as a server would.
    let requests = [
        Message::Ping,
        Message::Echo("hello".into()),
        Message::custom("DATA_PROCESS", vec![7u8; 128])?,
        Message::custom("DATA_PROCESS", vec![7u8; 3])?,
        Message::custom("NO_SUCH_TYPE", vec![1u8])?,
    ];
    for (id, request) in (1..).zip(requests) {
        let described = describe(&request);
        match dispatcher.dispatch(request.to_envelope(id)).await {
            Outcome::Reply(reply) => {
                let reply = Message::try_from(reply)?;
                println!("{described} -> {}", describe(&reply));
            }
            Outcome::Error(error) => println!("{described} -> error {error:?}"),
            other => println!("{described} -> {other:?}"),
        }
    }
    Ok(())
}

/// A short description: custom payloads by length and first bytes.
fn describe(message: &Message) -> String {
    match message {
        Message::Custom { msg_type, data } if data.len() > 8 => {
            format!("{msg_type} ({} bytes)", data.len())
        }
        Message::Custom { msg_type, data } => format!("{msg_type} {:?}", &data[..]),
        other => format!("{other:?}"),
    }
}
