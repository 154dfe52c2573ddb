//! Server-streaming methods (PROTOCOL.md Part III §4): a [`Method`] whose
//! handler answers with a stream of `M::Response` items.

use futures_core::Stream;
use futures_util::{StreamExt, TryFutureExt, future, stream};
use netproto_dispatch::{Dispatcher, HandlerError};
use netproto_wire::{Envelope, ErrorCode};

use crate::client::encode;
use crate::method::msg_type;
use crate::server::{check_fingerprint, decode_request};
use crate::{
    CallError, CallOptions, Context, Method, TypedClient, fingerprint, from_bytes, to_bytes,
};

/// The credit [`TypedClient::call_stream`] grants: items buffered per
/// stream at most.
pub const DEFAULT_STREAM_CREDIT: u32 = 1024;

/// Registers `handler` as the server-stream handler of method `M` on
/// `dispatcher`, replacing any handler registered under
/// [`M::NAME`](Method::NAME).
///
/// A streaming method is a [`Method`] whose `Response` is the type of each
/// item (its [`fingerprint`] covers the request and item types); any
/// method, one of [`service!`](crate::service) too, can be served so. Each
/// request is decoded and checked as for [`register`](crate::register)
/// (a fingerprint mismatch or a payload that does not decode is the
/// stream's error, the handler not called); the handler's items are encoded
/// and sent within the caller's credit (a caller that stops reading stops
/// the stream: the handler's stream is polled only when an item may be
/// sent); an `Err` item ends the stream with that error. The request's
/// deadline and the caller's cancel drop the handler's stream. A request
/// that does not ask for a stream (a plain [`call`](TypedClient::call)) is
/// answered [`ErrorCode::BAD_MESSAGE`].
///
/// # Examples
///
/// ```
/// use netproto_dispatch::{Dispatcher, HandlerError};
/// use netproto_service::{Context, Method, register_stream};
///
/// struct Countdown;
/// impl Method for Countdown {
///     const NAME: &'static str = "time.countdown.v1";
///     type Request = u32;
///     type Response = u32;
/// }
///
/// let dispatcher = Dispatcher::default();
/// register_stream::<Countdown, _, _>(&dispatcher, |_context: Context, from: u32| {
///     futures::stream::iter((0..=from).rev().map(Ok::<_, HandlerError>))
/// });
/// assert!(dispatcher.is_registered("time.countdown.v1"));
/// ```
pub fn register_stream<M, F, S>(dispatcher: &Dispatcher, handler: F)
where
    M: Method,
    F: Fn(Context, M::Request) -> S + Send + Sync + 'static,
    S: Stream<Item = Result<M::Response, HandlerError>> + Send + 'static,
{
    let ours = fingerprint::<M>();
    let name = msg_type::<M>();
    dispatcher.register_stream(name.as_str(), move |request, envelope: Envelope| {
        let started = check_fingerprint::<M>(request.fingerprint, ours)
            .and_then(|()| decode_request::<M>(&envelope.payload))
            .map(|value| handler(Context::from_request::<M>(&request), value));
        match started {
            Ok(items) => items
                .map(|item| item.and_then(|value| encode_item::<M>(&value)))
                .left_stream(),
            Err(error) => stream::once(future::ready(Err(error))).right_stream(),
        }
    });
}

/// The payload of an item of `M`.
fn encode_item<M: Method>(value: &M::Response) -> Result<bytes::Bytes, HandlerError> {
    to_bytes(value).map_err(|error| {
        tracing::debug!(method = M::NAME, %error, "stream item cannot be encoded");
        HandlerError::new(
            ErrorCode::INTERNAL,
            format!("{}: a stream item cannot be encoded", M::NAME),
        )
    })
}

impl TypedClient {
    /// Calls the server-streaming method `M` with `request` (see
    /// [`register_stream`]), granting [`DEFAULT_STREAM_CREDIT`] items: the
    /// items as they arrive, decoded, each an `M::Response`.
    ///
    /// The request is sent when the stream is first polled, once the
    /// in-flight budget has room; the stream holds that room until it ends
    /// or is dropped. Dropping it before its end cancels the server's
    /// stream.
    ///
    /// # Errors
    ///
    /// Items are [`CallError`]s as for [`call`](Self::call): the server's
    /// error frame ends the stream ([`Remote`](CallError::Remote)), so does
    /// a lost connection ([`Connection`](CallError::Connection)); an item
    /// that does not decode is a [`Decode`](CallError::Decode) error.
    pub fn call_stream<M: Method>(
        &self,
        request: M::Request,
    ) -> impl Stream<Item = Result<M::Response, CallError>> + Send + use<M> {
        self.call_stream_with::<M>(request, &CallOptions::default(), DEFAULT_STREAM_CREDIT)
    }

    /// As [`call_stream`](Self::call_stream), with a deadline or a trace
    /// context, and `credit` items of credit (between 1 and
    /// [`MAX_STREAM_CREDIT`](netproto_dispatch::MAX_STREAM_CREDIT)): the
    /// most items buffered on this side, and sent ahead by the server.
    /// The deadline bounds the whole stream, on both sides.
    ///
    /// # Errors
    ///
    /// As [`call_stream`](Self::call_stream); a credit out of range is a
    /// [`Connection`](CallError::Connection) error with
    /// [`netproto_dispatch::Error::Config`].
    pub fn call_stream_with<M: Method>(
        &self,
        request: M::Request,
        options: &CallOptions,
        credit: u32,
    ) -> impl Stream<Item = Result<M::Response, CallError>> + Send + use<M> {
        let client = self.clone();
        let options = options.request::<M>();
        let payload = encode::<M>(&request);
        let open = async move {
            let payload = payload?;
            let permit = client.acquire().await;
            let items = client
                .correlator()
                .request_stream(msg_type::<M>(), payload, &options, credit)
                .await
                .map_err(|error| CallError::from_dispatch(M::NAME, error))?;
            Ok(items.map(move |item| {
                let _permit = &permit;
                let bytes = item.map_err(|error| CallError::from_dispatch(M::NAME, error))?;
                from_bytes(&bytes).map_err(|source| CallError::Decode {
                    method: M::NAME,
                    source,
                })
            }))
        };
        open.try_flatten_stream()
    }
}
