//! The server side: typed handlers and tower services registered on a
//! [`Dispatcher`].

use std::future::Future;
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use netproto_dispatch::{Dispatcher, HandlerError};
use netproto_wire::{Envelope, ErrorCode};
use tower::load_shed::error::Overloaded;
use tower::timeout::error::Elapsed;
use tower::{BoxError, Service, ServiceExt};

use crate::method::msg_type;
use crate::{Context, Error, Method, Request, fingerprint, from_bytes, to_bytes};

/// Registers `handler` for method `M` on `dispatcher`, replacing any handler
/// registered under [`M::NAME`](Method::NAME).
///
/// Each request's payload is decoded as `M::Request` and handed to the
/// handler with its [`Context`]; the response is encoded and sent back
/// under the request's id, or the handler's [`HandlerError`] as an error
/// frame. A request whose schema fingerprint (its `fingerprint` header) is
/// not the method's is answered [`ErrorCode::SCHEMA_MISMATCH`], naming
/// both, without decoding it; one without a fingerprint is decoded as it
/// is. A payload that does not decode as `M::Request`, or has bytes left
/// over after it, is answered with [`ErrorCode::BAD_MESSAGE`] and a text
/// naming the method, without calling the handler. The request's deadline
/// drops the handler when it passes. The dispatcher's request
/// timeout and panic containment apply as for any async handler.
///
/// The method's [`fingerprint`] is computed here, once, so that types it
/// cannot trace are reported (a warning) when the server starts.
///
/// # Examples
///
/// ```
/// use netproto_dispatch::{Dispatcher, HandlerError};
/// use netproto_service::{Context, Method, register};
///
/// struct Double;
/// impl Method for Double {
///     const NAME: &'static str = "math.double.v1";
///     type Request = u32;
///     type Response = u64;
/// }
///
/// let dispatcher = Dispatcher::default();
/// register::<Double, _, _>(&dispatcher, |_context: Context, n: u32| async move {
///     Ok::<_, HandlerError>(u64::from(n) * 2)
/// });
/// assert!(dispatcher.is_registered("math.double.v1"));
/// ```
pub fn register<M, F, Fut>(dispatcher: &Dispatcher, handler: F)
where
    M: Method,
    F: Fn(Context, M::Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<M::Response, HandlerError>> + Send + 'static,
{
    let ours = fingerprint::<M>();
    let name = msg_type::<M>();
    dispatcher.register_with_context(name.as_str(), move |request, envelope: Envelope| {
        let running = check_fingerprint::<M>(request.fingerprint, ours)
            .and_then(|()| decode_request::<M>(&envelope.payload))
            .map(|value| handler(Context::from_request::<M>(&request), value));
        async move {
            let response = running?.await?;
            let payload = to_bytes(&response).map_err(|error| {
                tracing::debug!(method = M::NAME, %error, "response cannot be encoded");
                HandlerError::new(
                    ErrorCode::INTERNAL,
                    format!("{}: the response cannot be encoded", M::NAME),
                )
            })?;
            // The dispatcher sends it under the request's id.
            Ok(Envelope::new(0, msg_type::<M>(), payload))
        }
    });
}

/// Registers a [`tower::Service`] as the handler of method `M` on
/// `dispatcher`, replacing any handler registered under
/// [`M::NAME`](Method::NAME).
///
/// The service gets a [`Request`] (the [`Context`] and the decoded value)
/// and answers `M::Response`; each request is served by a clone of it,
/// driven to readiness first, so tower's layers (timeout, concurrency limit,
/// rate limit, load shedding, ...) work as usual. Decoding and encoding are
/// as for [`register`]. Its errors become error frames:
///
/// - a [`HandlerError`] keeps its code and text;
/// - tower's timeout ([`Elapsed`]) becomes [`ErrorCode::TIMEOUT`];
/// - tower's load shedding ([`Overloaded`]) becomes [`ErrorCode::OVERLOADED`];
/// - anything else becomes [`ErrorCode::HANDLER_FAILED`] with the error's
///   text (which the client sees: keep secrets out of it).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use netproto_dispatch::{Dispatcher, HandlerError};
/// use netproto_service::{Method, Request, register_service};
/// use tower::ServiceBuilder;
///
/// struct Double;
/// impl Method for Double {
///     const NAME: &'static str = "math.double.v1";
///     type Request = u32;
///     type Response = u64;
/// }
///
/// let service = ServiceBuilder::new()
///     .load_shed()
///     .concurrency_limit(64)
///     .timeout(Duration::from_secs(1))
///     .service_fn(|request: Request<Double>| async move {
///         Ok::<_, HandlerError>(u64::from(*request.value()) * 2)
///     });
/// let dispatcher = Dispatcher::default();
/// register_service::<Double, _>(&dispatcher, service);
/// assert!(dispatcher.is_registered("math.double.v1"));
/// ```
pub fn register_service<M, S>(dispatcher: &Dispatcher, service: S)
where
    M: Method,
    S: Service<Request<M>, Response = M::Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    // The dispatcher shares its handlers between tasks, and a service need
    // not be `Sync`: each request clones it out of the mutex.
    let service = Mutex::new(service);
    register::<M, _, _>(dispatcher, move |context, value| {
        let service = service
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        async move {
            service
                .oneshot(Request::new(context, value))
                .await
                .map_err(|error| handler_error::<M>(error.into()))
        }
    });
}

/// Refuses a request whose fingerprint is not `ours`, before decoding it.
pub(crate) fn check_fingerprint<M: Method>(
    theirs: Option<u64>,
    ours: u64,
) -> Result<(), HandlerError> {
    match theirs {
        Some(theirs) if theirs != ours => {
            tracing::debug!(
                method = M::NAME,
                theirs,
                ours,
                "schema fingerprint mismatch"
            );
            Err(HandlerError::new(
                ErrorCode::SCHEMA_MISMATCH,
                format!(
                    "{}: the request's schema fingerprint {theirs:016x} is not the server's {ours:016x}",
                    M::NAME
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// Decodes a request payload, or the error frame answering it.
pub(crate) fn decode_request<M: Method>(payload: &Bytes) -> Result<M::Request, HandlerError> {
    from_bytes(payload).map_err(|error| {
        tracing::debug!(method = M::NAME, %error, "request does not decode");
        let detail = match &error {
            Error::Decode(source) => format!("{error}: {source}"),
            other => other.to_string(),
        };
        HandlerError::new(
            ErrorCode::BAD_MESSAGE,
            format!(
                "{}: request does not decode as its request type ({detail})",
                M::NAME
            ),
        )
    })
}

/// The error frame for a service's error.
fn handler_error<M: Method>(error: BoxError) -> HandlerError {
    let error = match error.downcast::<HandlerError>() {
        Ok(handler) => return *handler,
        Err(other) => other,
    };
    if error.is::<Elapsed>() {
        HandlerError::new(
            ErrorCode::TIMEOUT,
            format!("{}: the handler took longer than its timeout", M::NAME),
        )
    } else if error.is::<Overloaded>() {
        HandlerError::new(
            ErrorCode::OVERLOADED,
            format!("{}: the service is overloaded", M::NAME),
        )
    } else {
        HandlerError::failed(error.to_string())
    }
}
