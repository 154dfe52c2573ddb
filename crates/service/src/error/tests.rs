use std::sync::Arc;
use std::time::Duration;

use super::*;

fn remote(code: ErrorCode) -> CallError {
    CallError::from_dispatch(
        "kv.get.v1",
        netproto_dispatch::Error::Remote {
            request_id: 7,
            code,
            message: "why".into(),
        },
    )
}

fn local(source: netproto_dispatch::Error) -> CallError {
    CallError::from_dispatch("kv.get.v1", source)
}

#[test]
fn remote_errors_keep_the_code_and_say_what_it_means() {
    let unknown = remote(ErrorCode::NO_HANDLER);
    assert!(unknown.is_remote() && unknown.is_unknown_method());
    assert_eq!(unknown.code(), Some(ErrorCode::NO_HANDLER));
    assert_eq!(unknown.method(), "kv.get.v1");
    assert_eq!(
        unknown.to_string(),
        "kv.get.v1: unknown method (code 3): \"why\""
    );
    assert!(remote(ErrorCode::SCHEMA_MISMATCH).is_type_mismatch());
    assert!(remote(ErrorCode::BAD_MESSAGE).is_type_mismatch());
    assert!(
        remote(ErrorCode::SCHEMA_MISMATCH)
            .to_string()
            .contains("schema mismatch (code 12)")
    );
    assert!(
        remote(ErrorCode(999))
            .to_string()
            .contains("failed remotely")
    );
    let missing = remote(ErrorCode::NOT_FOUND);
    assert_eq!(missing.code(), Some(ErrorCode::NOT_FOUND));
    assert!(missing.is_remote() && !missing.is_retryable() && !missing.is_timeout());
    assert_eq!(
        missing.to_string(),
        "kv.get.v1: not found (code 1000): \"why\""
    );
    assert!(
        remote(ErrorCode(2001))
            .to_string()
            .contains("application error (code 2001)")
    );
}

#[test]
fn predicates_sort_timeouts_and_retries() {
    assert!(remote(ErrorCode::TIMEOUT).is_timeout());
    let deadline = remote(ErrorCode::DEADLINE_EXCEEDED);
    assert!(deadline.is_timeout() && deadline.is_deadline_exceeded());
    assert!(remote(ErrorCode::SCHEMA_MISMATCH).is_schema_mismatch());
    assert!(!remote(ErrorCode::BAD_MESSAGE).is_schema_mismatch());
    let local_deadline = local(netproto_dispatch::Error::DeadlineExceeded(
        Duration::from_secs(1),
    ));
    assert!(local_deadline.is_timeout() && local_deadline.is_deadline_exceeded());
    assert!(!local_deadline.is_remote());
    assert!(!remote(ErrorCode::HANDLER_FAILED).is_timeout());
    let timed_out = local(netproto_dispatch::Error::Timeout(Duration::from_secs(1)));
    assert!(timed_out.is_timeout() && !timed_out.is_remote() && !timed_out.is_retryable());
    assert_eq!(timed_out.code(), Some(ErrorCode::TIMEOUT));
    assert!(
        !timed_out.is_deadline_exceeded() && !remote(ErrorCode::TIMEOUT).is_deadline_exceeded()
    );

    assert!(remote(ErrorCode::OVERLOADED).is_retryable());
    assert!(remote(ErrorCode::SHUTTING_DOWN).is_retryable());
    assert!(!remote(ErrorCode::HANDLER_FAILED).is_retryable());
    assert!(!remote(ErrorCode::BAD_MESSAGE).is_retryable());
    assert!(local(netproto_dispatch::Error::Closed).is_retryable());
    let going = local(netproto_dispatch::Error::GoingAway {
        last_request_id: 1,
        code: ErrorCode::SHUTTING_DOWN,
    });
    assert!(going.is_retryable() && !going.is_remote());
    let lost = local(netproto_dispatch::Error::Disconnected(Arc::new(
        netproto_transport::Error::PeerClosed,
    )));
    assert!(!lost.is_retryable() && !lost.is_timeout() && lost.code().is_none());
}

#[test]
fn decode_failures_are_type_mismatches_without_a_code() {
    let decode = CallError::Decode {
        method: "kv.get.v1",
        source: Error::TrailingBytes { len: 2 },
    };
    assert!(decode.is_type_mismatch() && !decode.is_remote() && decode.code().is_none());
    assert_eq!(
        decode.to_string(),
        "kv.get.v1: the answer does not decode as the response type"
    );
}
