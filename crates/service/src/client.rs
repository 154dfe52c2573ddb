//! The client side: typed calls over a [`Correlator`], and a
//! [`tower::Service`] per method.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, ready};

use std::time::Duration;

use bytes::Bytes;
use netproto_dispatch::{Correlator, RequestOptions};
use netproto_wire::Traceparent;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::PollSemaphore;
use tower::Service;

use crate::method::msg_type;
use crate::{CallError, Context, Method, fingerprint, from_bytes, to_bytes};

/// What a typed call carries besides its value, for
/// [`TypedClient::call_with`]: a deadline and a trace context. Every call
/// carries its method's [`fingerprint`] too.
///
/// # Examples
///
/// A handler's own call inherits what is left of its deadline and its
/// trace context:
///
/// ```
/// use std::time::Duration;
/// use netproto_service::{CallOptions, Context, Method};
///
/// struct Get;
/// impl Method for Get {
///     const NAME: &'static str = "kv.get.v1";
///     type Request = String;
///     type Response = Option<Vec<u8>>;
/// }
///
/// let context = Context::new::<Get>(1).with_deadline(Duration::from_secs(2));
/// let options = CallOptions::within(&context);
/// assert!(options.deadline.is_some_and(|left| left <= Duration::from_secs(2)));
/// let options = CallOptions::default().deadline(Duration::from_millis(300));
/// assert_eq!(options.deadline, Some(Duration::from_millis(300)));
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallOptions {
    /// The time the call has: sent to the server, which drops the handler
    /// when it passes (`DEADLINE_EXCEEDED`), and the local timeout when it
    /// is shorter than the correlator's.
    pub deadline: Option<Duration>,
    /// The W3C trace context the call belongs to. Without one, a call
    /// made with the `otel` feature sends the current span's
    /// OpenTelemetry context, when it has one.
    pub traceparent: Option<Traceparent>,
}

impl CallOptions {
    /// Options inheriting what is left of `context`'s deadline and its
    /// trace context: for the calls a handler makes while serving.
    pub fn within(context: &Context) -> Self {
        Self {
            deadline: context.remaining(),
            traceparent: context.trace_context(),
        }
    }

    /// These options with a deadline `budget` from now.
    #[must_use]
    pub fn deadline(mut self, budget: Duration) -> Self {
        self.deadline = Some(budget);
        self
    }

    /// These options with a trace context.
    #[must_use]
    pub fn traceparent(mut self, traceparent: Traceparent) -> Self {
        self.traceparent = Some(traceparent);
        self
    }

    /// The correlator's options for a call of `M`.
    pub(crate) fn request<M: Method>(&self) -> RequestOptions {
        let mut options = RequestOptions::default().fingerprint(fingerprint::<M>());
        options.deadline = self.deadline;
        options.traceparent = self.traceparent.or_else(crate::trace::current);
        options
    }
}

/// Typed calls over one connection's [`Correlator`].
///
/// Cheap to clone. Every call waits for room in the connection's in-flight
/// budget ([`Correlator::capacity`], set by the correlator's
/// [`max_in_flight`](netproto_dispatch::CorrelatorConfig::max_in_flight)),
/// shared by every typed client and [`MethodClient`] of the connection.
/// Timeouts, goaways and lost connections are the correlator's (see its
/// documentation); they come back as [`CallError::Connection`].
#[derive(Debug, Clone)]
pub struct TypedClient {
    correlator: Arc<Correlator>,
}

impl TypedClient {
    /// Typed calls over `correlator`.
    pub fn new(correlator: Arc<Correlator>) -> Self {
        Self { correlator }
    }

    /// The correlator the calls go through.
    pub fn correlator(&self) -> &Arc<Correlator> {
        &self.correlator
    }

    /// Calls that could start now without waiting for the in-flight budget.
    pub fn available(&self) -> usize {
        self.correlator.capacity().available_permits()
    }

    /// Calls method `M` with `request` and waits for its response, first
    /// waiting for room in the in-flight budget.
    ///
    /// # Errors
    ///
    /// A [`CallError`]: the server's error frame
    /// ([`Remote`](CallError::Remote)), an answer that does not decode as
    /// `M::Response` ([`Decode`](CallError::Decode)), or no answer
    /// ([`Connection`](CallError::Connection)).
    pub async fn call<M: Method>(&self, request: M::Request) -> Result<M::Response, CallError> {
        self.call_with::<M>(request, &CallOptions::default()).await
    }

    /// As [`call`](Self::call), with a deadline or a trace context.
    ///
    /// The deadline counts from now, the wait for the in-flight budget
    /// included.
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call); when the deadline passes, a [`CallError`]
    /// whose [`is_deadline_exceeded`](CallError::is_deadline_exceeded) is
    /// true.
    pub async fn call_with<M: Method>(
        &self,
        request: M::Request,
        options: &CallOptions,
    ) -> Result<M::Response, CallError> {
        let payload = encode::<M>(&request)?;
        let Some(budget) = options.deadline else {
            let _permit = self.acquire().await;
            return self.exchange::<M>(payload, options).await;
        };
        let started = tokio::time::Instant::now();
        let permit = tokio::time::timeout(budget, self.acquire()).await;
        let _permit = permit.map_err(|_| CallError::Connection {
            method: M::NAME,
            source: netproto_dispatch::Error::DeadlineExceeded(budget),
        })?;
        let left = budget.saturating_sub(started.elapsed());
        let result = self.exchange::<M>(payload, &options.deadline(left)).await;
        // Report the deadline the caller set, not what was left of it.
        result.map_err(|error| match error {
            CallError::Connection {
                method,
                source: netproto_dispatch::Error::DeadlineExceeded(_),
            } => CallError::Connection {
                method,
                source: netproto_dispatch::Error::DeadlineExceeded(budget),
            },
            other => other,
        })
    }

    /// A handle calling method `M` only, which is a [`tower::Service`].
    pub fn method<M: Method>(&self) -> MethodClient<M> {
        MethodClient {
            client: self.clone(),
            semaphore: PollSemaphore::new(self.correlator.capacity().clone()),
            permit: None,
            method: PhantomData,
        }
    }

    /// Room for one call. The semaphore is never closed, so `None` cannot
    /// happen; the call then goes ahead without a permit.
    pub(crate) async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        let capacity = self.correlator.capacity().clone();
        match capacity.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => capacity.acquire_owned().await.ok(),
        }
    }

    /// Sends one encoded request and decodes its answer.
    async fn exchange<M: Method>(
        &self,
        payload: Bytes,
        options: &CallOptions,
    ) -> Result<M::Response, CallError> {
        let reply = self
            .correlator
            .request_raw_with(msg_type::<M>(), payload, &options.request::<M>())
            .await
            .map_err(|error| CallError::from_dispatch(M::NAME, error))?;
        if reply.msg_type.as_bytes() != M::NAME.as_bytes() {
            return Err(CallError::UnexpectedType {
                method: M::NAME,
                got: reply.msg_type.as_str().to_owned(),
            });
        }
        from_bytes(&reply.payload).map_err(|source| CallError::Decode {
            method: M::NAME,
            source,
        })
    }
}

/// The payload of a request of `M`.
pub(crate) fn encode<M: Method>(request: &M::Request) -> Result<Bytes, CallError> {
    to_bytes(request).map_err(|source| CallError::Encode {
        method: M::NAME,
        source,
    })
}

/// A [`TypedClient`] for one method: a [`tower::Service`] taking
/// `M::Request` and answering `M::Response`.
///
/// `poll_ready` reflects the connection: it fails when the connection
/// takes no more requests (closed, lost, or going away: a balancer then
/// drops this endpoint), is pending while the connection's in-flight budget
/// ([`Correlator::capacity`], shared with every typed call on it) is spent,
/// and is ready otherwise, reserving that room for the next `call`. A clone
/// starts without a reservation. A `call` without a ready poll first waits
/// for room itself.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use netproto_service::{Method, MethodClient};
/// use tower::ServiceBuilder;
///
/// struct Double;
/// impl Method for Double {
///     const NAME: &'static str = "math.double.v1";
///     type Request = u32;
///     type Response = u64;
/// }
///
/// fn layered(
///     double: MethodClient<Double>,
/// ) -> impl tower::Service<u32, Response = u64, Error = tower::BoxError> {
///     ServiceBuilder::new()
///         .timeout(Duration::from_secs(1))
///         .concurrency_limit(8)
///         .service(double)
/// }
/// ```
pub struct MethodClient<M> {
    client: TypedClient,
    semaphore: PollSemaphore,
    permit: Option<OwnedSemaphorePermit>,
    method: PhantomData<fn() -> M>,
}

impl<M> Clone for MethodClient<M> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            semaphore: self.semaphore.clone(),
            permit: None,
            method: PhantomData,
        }
    }
}

impl<M: Method> fmt::Debug for MethodClient<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MethodClient")
            .field("method", &M::NAME)
            .field("ready", &self.permit.is_some())
            .finish_non_exhaustive()
    }
}

impl<M: Method> Service<M::Request> for MethodClient<M> {
    type Response = M::Response;
    type Error = CallError;
    type Future = Pin<Box<dyn Future<Output = Result<M::Response, CallError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), CallError>> {
        if let Err(error) = self.client.correlator.check_open() {
            self.permit = None;
            return Poll::Ready(Err(CallError::from_dispatch(M::NAME, error)));
        }
        if self.permit.is_none() {
            // `None` only for a closed semaphore, which ours never is.
            self.permit = ready!(self.semaphore.poll_acquire(cx));
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: M::Request) -> Self::Future {
        let permit = self.permit.take();
        let client = self.client.clone();
        let payload = encode::<M>(&request);
        Box::pin(async move {
            let payload = payload?;
            let _permit = match permit {
                Some(permit) => Some(permit),
                None => client.acquire().await,
            };
            client.exchange::<M>(payload, &CallOptions::default()).await
        })
    }
}
