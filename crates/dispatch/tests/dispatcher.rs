//! `Dispatcher::dispatch` on its own: routing, the three handler kinds, and
//! every way a request is answered with an error frame.

// Integration test: a failed unwrap, expect, panic or index is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use netproto_dispatch::{Dispatcher, HandlerError, Outcome};
use netproto_wire::{Encoder, Envelope, ErrorCode, ErrorFrame, Frame, Message, MessageType};
use tracing::info;

fn reply(outcome: Outcome) -> Envelope {
    match outcome {
        Outcome::Reply(envelope) => envelope,
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn error(outcome: Outcome) -> ErrorFrame {
    match outcome {
        Outcome::Error(frame) => frame,
        other => panic!("expected an error frame, got {other:?}"),
    }
}

/// The handler examples of the original crate's README, as written there
/// (the `DATA_PROCESS` one adapted to `Message::Custom { msg_type, data }`,
/// which is a struct variant here).
#[tokio::test]
async fn readme_handlers_compile_and_answer() {
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

    // The quick-start server's handler.
    dispatcher.register("ECHO", |msg| {
        info!(message_type = "ECHO", "Processing echo request");
        Ok(msg.clone())
    });

    // Custom message type handler with complex processing
    dispatcher.register("DATA_PROCESS", |msg| {
        if let Message::Custom { data, .. } = msg {
            info!(bytes = data.len(), "Processing custom data");
            if data.len() > 100 {
                Ok(Message::custom("DATA_PROCESS", vec![1, 0, 1])?) // Success code
            } else {
                Ok(Message::custom("DATA_PROCESS", vec![0, 0, 1])?) // Error code
            }
        } else {
            info!("Received incorrect message type for DATA_PROCESS");
            Ok(Message::Unknown)
        }
    });

    let pong = reply(dispatcher.dispatch(Message::Ping.to_envelope(1)).await);
    assert_eq!(pong.request_id, 1);
    assert_eq!(Message::try_from(pong).unwrap(), Message::Pong);

    let echo = reply(
        dispatcher
            .dispatch(Message::Echo("hello".into()).to_envelope(2))
            .await,
    );
    assert_eq!(echo.request_id, 2);
    assert_eq!(
        Message::try_from(echo).unwrap(),
        Message::Echo("hello".into())
    );

    let big = Message::custom("DATA_PROCESS", vec![7u8; 101]).unwrap();
    let answer = reply(dispatcher.dispatch(big.to_envelope(3)).await);
    assert_eq!(&answer.payload[..], &[1, 0, 1]);
    let small = Message::custom("DATA_PROCESS", vec![7u8; 3]).unwrap();
    let answer = reply(dispatcher.dispatch(small.to_envelope(4)).await);
    assert_eq!(&answer.payload[..], &[0, 0, 1]);
}

#[tokio::test]
async fn async_and_envelope_handlers_answer_under_the_request_id() {
    let dispatcher = Dispatcher::default();
    dispatcher.register_async("SLOW", |msg: Message| async move {
        tokio::task::yield_now().await;
        Ok(msg)
    });
    let seen = Arc::new(std::sync::Mutex::new(Bytes::new()));
    let keep = seen.clone();
    dispatcher.register_envelope("RAW", move |envelope: Envelope| {
        *keep.lock().unwrap() = envelope.payload.clone();
        async move {
            // The reply's own request id is ignored.
            Ok(Envelope::new(
                999,
                MessageType::new("RAW_OK")?,
                envelope.payload,
            ))
        }
    });

    let slow = Message::custom("SLOW", &b"abc"[..]).unwrap();
    let answer = reply(dispatcher.dispatch(slow.to_envelope(41)).await);
    assert_eq!(answer.request_id, 41);
    assert_eq!(Message::try_from(answer).unwrap(), slow);

    // The raw handler sees a zero-copy slice of the decoded frame body.
    let mut body = BytesMut::new();
    Envelope::new(
        42,
        MessageType::new("RAW").unwrap(),
        Bytes::from_static(b"xyz"),
    )
    .encode(&mut body);
    let body = body.freeze();
    let envelope = Envelope::decode(body.clone()).unwrap();
    let answer = reply(dispatcher.dispatch(envelope).await);
    assert_eq!(answer.request_id, 42);
    assert_eq!(answer.msg_type.as_str(), "RAW_OK");
    assert_eq!(&answer.payload[..], b"xyz");
    let payload = seen.lock().unwrap().clone();
    assert!(body.as_ptr_range().contains(&payload.as_ptr()));
}

#[tokio::test]
async fn requests_without_a_handler_get_no_handler() {
    let dispatcher = Dispatcher::default();
    // Nothing is built in: not even PING.
    let frame = error(dispatcher.dispatch(Message::Ping.to_envelope(5)).await);
    assert_eq!(frame.request_id, 5);
    assert_eq!(frame.code, ErrorCode::NO_HANDLER);
    assert!(frame.message.contains("PING"), "{}", frame.message);

    // A one-way message is never answered.
    assert_eq!(
        dispatcher.dispatch(Message::Ping.to_envelope(0)).await,
        Outcome::NoReply
    );
}

#[tokio::test]
async fn handler_errors_become_error_frames() {
    let dispatcher = Dispatcher::default();
    dispatcher.register("FAIL", |_| Err("no such key".into()));
    dispatcher.register("BUSY", |_| {
        Err(HandlerError::new(ErrorCode::OVERLOADED, "try later"))
    });
    dispatcher.register_async("AFAIL", |_msg: Message| async {
        Err(HandlerError::failed(String::from("async failure")))
    });
    dispatcher.register("MISSING", |_| Err(HandlerError::not_found("no key alpha")));
    dispatcher.register("QUOTA", |_| {
        Err(HandlerError::new(ErrorCode(2001), "quota exceeded"))
    });

    let fail = Message::custom("FAIL", Bytes::new()).unwrap();
    let frame = error(dispatcher.dispatch(fail.to_envelope(1)).await);
    assert_eq!(
        frame,
        ErrorFrame::new(1, ErrorCode::HANDLER_FAILED, "no such key")
    );

    let busy = Message::custom("BUSY", Bytes::new()).unwrap();
    let frame = error(dispatcher.dispatch(busy.to_envelope(2)).await);
    assert_eq!(
        frame,
        ErrorFrame::new(2, ErrorCode::OVERLOADED, "try later")
    );

    let afail = Message::custom("AFAIL", Bytes::new()).unwrap();
    let frame = error(dispatcher.dispatch(afail.to_envelope(3)).await);
    assert_eq!(
        frame,
        ErrorFrame::new(3, ErrorCode::HANDLER_FAILED, "async failure")
    );

    // Application codes, common or an application's own, go out as they are.
    let missing = Message::custom("MISSING", Bytes::new()).unwrap();
    let frame = error(dispatcher.dispatch(missing.to_envelope(4)).await);
    assert_eq!(
        frame,
        ErrorFrame::new(4, ErrorCode::NOT_FOUND, "no key alpha")
    );
    assert_eq!(frame.code.0, 1000);
    let quota = Message::custom("QUOTA", Bytes::new()).unwrap();
    let frame = error(dispatcher.dispatch(quota.to_envelope(5)).await);
    assert_eq!(frame, ErrorFrame::new(5, ErrorCode(2001), "quota exceeded"));

    // A failed one-way message is not answered either.
    assert_eq!(
        dispatcher.dispatch(fail.to_envelope(0)).await,
        Outcome::NoReply
    );
}

#[tokio::test]
async fn undecodable_payloads_get_bad_message() {
    let dispatcher = Dispatcher::default();
    let called = Arc::new(AtomicUsize::new(0));
    let count = called.clone();
    dispatcher.register("ECHO", move |msg| {
        count.fetch_add(1, Ordering::Relaxed);
        Ok(msg.clone())
    });
    dispatcher.register_async("PING", |_msg: Message| async { Ok(Message::Pong) });

    let bad_echo = Envelope::new(8, MessageType::ECHO, Bytes::from_static(b"\xff\xfe"));
    let frame = error(dispatcher.dispatch(bad_echo).await);
    assert_eq!(frame.request_id, 8);
    assert_eq!(frame.code, ErrorCode::BAD_MESSAGE);

    let ping_with_payload = Envelope::new(9, MessageType::PING, Bytes::from_static(b"x"));
    let frame = error(dispatcher.dispatch(ping_with_payload).await);
    assert_eq!(frame.code, ErrorCode::BAD_MESSAGE);
    assert_eq!(called.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn panics_become_handler_failed() {
    let dispatcher = Dispatcher::default();
    dispatcher.register("SYNC_PANIC", |_| panic!("sync handler bug"));
    dispatcher.register_async("CALL_PANIC", |_msg: Message| -> std::future::Ready<_> {
        panic!("panic before the future exists")
    });
    dispatcher.register_async("POLL_PANIC", |_msg: Message| async {
        tokio::task::yield_now().await;
        if true {
            panic!("panic in a later poll");
        }
        Ok(Message::Pong)
    });
    dispatcher.register_envelope("RAW_PANIC", |_envelope: Envelope| async {
        if true {
            panic!("raw handler bug");
        }
        Err(HandlerError::failed("unreachable"))
    });

    for (id, name) in ["SYNC_PANIC", "CALL_PANIC", "POLL_PANIC", "RAW_PANIC"]
        .into_iter()
        .enumerate()
    {
        let id = id as u64 + 1;
        let msg = Message::custom(name, Bytes::new()).unwrap();
        let frame = error(dispatcher.dispatch(msg.to_envelope(id)).await);
        assert_eq!(frame.request_id, id, "{name}");
        assert_eq!(frame.code, ErrorCode::HANDLER_FAILED, "{name}");
        // The panic text is not sent to the peer.
        assert_eq!(frame.message, "handler panicked", "{name}");
    }
}

#[tokio::test]
async fn one_way_messages_run_the_handler_without_reply() {
    let dispatcher = Dispatcher::default();
    let called = Arc::new(AtomicUsize::new(0));
    let count = called.clone();
    dispatcher.register_async("NOTE", move |_msg: Message| {
        let count = count.clone();
        async move {
            count.fetch_add(1, Ordering::Relaxed);
            Ok(Message::Unknown)
        }
    });
    let note = Message::custom("NOTE", Bytes::new()).unwrap();
    assert_eq!(
        dispatcher.dispatch(note.to_envelope(0)).await,
        Outcome::NoReply
    );
    assert_eq!(called.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn registering_again_replaces_and_unregister_removes() {
    let dispatcher = Dispatcher::default();
    dispatcher.register("PING", |_| Ok(Message::Unknown));
    dispatcher.register("PING", |_| Ok(Message::Pong));
    assert!(dispatcher.is_registered("PING"));
    let answer = reply(dispatcher.dispatch(Message::Ping.to_envelope(1)).await);
    assert_eq!(Message::try_from(answer).unwrap(), Message::Pong);
    assert!(format!("{dispatcher:?}").contains("PING"));

    assert!(dispatcher.unregister("PING"));
    assert!(!dispatcher.unregister("PING"));
    let frame = error(dispatcher.dispatch(Message::Ping.to_envelope(2)).await);
    assert_eq!(frame.code, ErrorCode::NO_HANDLER);
}

#[tokio::test]
async fn long_error_texts_still_fit_an_error_frame() {
    let dispatcher = Dispatcher::default();
    dispatcher.register("LONG", |_| Err("é".repeat(10_000).into()));
    let msg = Message::custom("LONG", Bytes::new()).unwrap();
    let frame = error(dispatcher.dispatch(msg.to_envelope(1)).await);
    assert!(frame.message.len() < 4096);
    assert!(frame.message.starts_with('é'));
    let mut wire = BytesMut::new();
    Encoder::default()
        .encode(&Frame::Error(frame), &mut wire)
        .expect("the error frame fits the control-frame limit");
}

#[tokio::test(start_paused = true)]
async fn dispatch_itself_applies_no_timeout() {
    let dispatcher = Dispatcher::default();
    dispatcher.register_async("NAP", |_msg: Message| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(Message::Unknown)
    });
    let start = tokio::time::Instant::now();
    let msg = Message::custom("NAP", Bytes::new()).unwrap();
    let answer = reply(dispatcher.dispatch(msg.to_envelope(1)).await);
    assert_eq!(Message::try_from(answer).unwrap(), Message::Unknown);
    assert_eq!(start.elapsed(), Duration::from_secs(3600));
}
