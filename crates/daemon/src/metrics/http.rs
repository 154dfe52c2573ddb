//! A minimal HTTP/1.1 responder for `GET /metrics`, `GET /healthz` and
//! `GET /readyz`, and the matching client.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use super::{Registry, UPKEEP_INTERVAL};

/// Time a scraper has to send its request, and then to read the answer.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest request head accepted, in bytes.
pub const MAX_REQUEST: usize = 8 * 1024;

/// Scrapes and health checks answered at once; more connections are
/// closed unanswered.
const MAX_SCRAPES: usize = 16;

/// Largest answer a scraper reads, in bytes.
const MAX_ANSWER: u64 = 64 * 1024 * 1024;

/// The content type of the Prometheus text format.
const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The content type of every other answer.
const TEXT_TYPE: &str = "text/plain; charset=utf-8";

/// What `/readyz` reports: the server's shutdown, as its handle sets it.
#[derive(Clone, Debug)]
pub(crate) struct Health {
    draining: watch::Receiver<bool>,
    stopping: watch::Receiver<bool>,
}

impl Health {
    /// Readiness from the server's two shutdown steps: `draining` (the
    /// drain delay has begun) and `stopping` (the goaway has been sent).
    pub(crate) fn new(draining: watch::Receiver<bool>, stopping: watch::Receiver<bool>) -> Self {
        Self { draining, stopping }
    }

    /// Why the server is not ready (`draining`, `shutting down`), or `None`
    /// when it is.
    pub(crate) fn unready(&self) -> Option<&'static str> {
        if *self.stopping.borrow() {
            Some("shutting down")
        } else if *self.draining.borrow() {
            Some("draining")
        } else {
            None
        }
    }
}

/// One answer: status line, content type and body.
struct Answer {
    status: &'static str,
    content_type: &'static str,
    body: String,
}

impl Answer {
    fn text(status: &'static str, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: TEXT_TYPE,
            body: body.into(),
        }
    }
}

/// Serves `GET /metrics`, `/healthz` and `/readyz` on `listener` until the
/// task is dropped: one request per connection, answered and closed.
/// Meanwhile runs the registry's upkeep every [`UPKEEP_INTERVAL`].
pub(crate) async fn serve(listener: TcpListener, registry: Registry, health: Health) {
    let slots = Arc::new(Semaphore::new(MAX_SCRAPES));
    let mut upkeep = tokio::time::interval(UPKEEP_INTERVAL);
    upkeep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = upkeep.tick() => {
                registry.upkeep();
                continue;
            }
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                tracing::warn!(%error, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many metrics scrapes at once");
            continue;
        };
        let registry = registry.clone();
        let health = health.clone();
        tokio::spawn(async move {
            if let Err(error) = respond(stream, &registry, &health).await {
                tracing::debug!(%peer, %error, "metrics request failed");
            }
            drop(slot);
        });
    }
}

/// Reads one request head and answers it: the metrics for `GET /metrics`,
/// liveness for `GET /healthz`, readiness for `GET /readyz`, an error
/// status for anything else. Then closes.
pub(crate) async fn respond<S>(
    mut stream: S,
    registry: &Registry,
    health: &Health,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let head = tokio::time::timeout(HTTP_TIMEOUT, read_head(&mut stream)).await;
    let answer = match head {
        Err(_) => Answer::text("408 Request Timeout", ""),
        Ok(Err(error)) => return Err(error),
        Ok(Ok(Err(reason))) => Answer::text("400 Bad Request", format!("{reason}\n")),
        Ok(Ok(Ok(head))) => route(&head, registry, health),
    };
    let Answer {
        status,
        content_type,
        body,
    } = answer;
    let allow = if status.starts_with("405") {
        "Allow: GET\r\n"
    } else {
        ""
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\n{allow}Connection: close\r\n\r\n{body}",
        body.len()
    );
    tokio::time::timeout(HTTP_TIMEOUT, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await
    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

fn route(head: &str, registry: &Registry, health: &Health) -> Answer {
    let mut parts = head.lines().next().unwrap_or_default().split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Answer::text("400 Bad Request", "malformed request line\n");
    };
    if !version.starts_with("HTTP/1.") {
        return Answer::text("400 Bad Request", "HTTP/1.x only\n");
    }
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET", "/metrics") => Answer {
            status: "200 OK",
            content_type: METRICS_TYPE,
            body: registry.render(),
        },
        ("GET", "/healthz") => Answer::text("200 OK", "ok\n"),
        ("GET", "/readyz") => match health.unready() {
            None => Answer::text("200 OK", "ready\n"),
            Some(reason) => Answer::text("503 Service Unavailable", format!("{reason}\n")),
        },
        (_, "/metrics" | "/healthz" | "/readyz") => {
            Answer::text("405 Method Not Allowed", "GET only\n")
        }
        _ => Answer::text("404 Not Found", "try /metrics, /healthz or /readyz\n"),
    }
}

/// The request head up to the blank line, or why there is none: it
/// exceeds [`MAX_REQUEST`], or the peer closed before the blank line.
async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> std::io::Result<Result<String, &'static str>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Err("incomplete request head"));
        }
        head.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok(Ok(String::from_utf8_lossy(&head).into_owned()));
        }
        if head.len() > MAX_REQUEST {
            return Ok(Err("request head too large"));
        }
    }
}

/// Fetches `http://{address}/metrics` and returns the body.
///
/// # Errors
///
/// As [`http_get`], and a status other than 200
/// ([`std::io::ErrorKind::InvalidData`]).
pub async fn scrape(address: &str) -> std::io::Result<String> {
    let (status, body) = http_get(address, "/metrics").await?;
    if status != 200 {
        return Err(invalid(&format!("metrics endpoint answered {status}")));
    }
    Ok(body)
}

/// Sends `GET {path}` to `http://{address}` (one request, then the
/// connection closes) and returns the answer's status code and body, as
/// a health check would: `http_get(address, "/readyz")`.
///
/// # Errors
///
/// I/O errors, a timeout after [`HTTP_TIMEOUT`], or an answer that is not
/// HTTP/1.x ([`std::io::ErrorKind::InvalidData`]).
pub async fn http_get(address: &str, path: &str) -> std::io::Result<(u16, String)> {
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.take(MAX_ANSWER).read_to_end(&mut answer).await?;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let (head, body) = answer
            .split_once("\r\n\r\n")
            .ok_or_else(|| invalid("no http header"))?;
        let mut status_line = head.lines().next().unwrap_or_default().split(' ');
        let status = match (status_line.next(), status_line.next()) {
            (Some(version), Some(code)) if version.starts_with("HTTP/1.") => code.parse().ok(),
            _ => None,
        }
        .ok_or_else(|| invalid("no http status"))?;
        Ok((status, body.to_owned()))
    };
    tokio::time::timeout(HTTP_TIMEOUT, fetch)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

fn invalid(text: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, text.to_owned())
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::watch;

    use super::{Health, MAX_REQUEST, Registry, respond};

    /// The health of a server at one of its steps: draining, stopping.
    fn health(draining: bool, stopping: bool) -> Health {
        Health::new(watch::channel(draining).1, watch::channel(stopping).1)
    }

    async fn ask(request: &[u8]) -> String {
        ask_when(request, health(false, false)).await
    }

    async fn ask_when(request: &[u8], health: Health) -> String {
        let registry = Registry::new();
        metrics::Recorder::register_counter(
            &registry,
            &metrics::Key::from_name("x_total"),
            &metrics::Metadata::new("t", metrics::Level::INFO, None),
        )
        .increment(7);
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move { respond(server, &registry, &health).await });
        // A peer that stops reading at the limit gets its answer anyway.
        let _ = client.write_all(request).await;
        let _ = client.shutdown().await;
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        server.await.unwrap().unwrap();
        answer
    }

    #[tokio::test]
    async fn answers_get_metrics_and_rejects_the_rest() {
        let ok = ask(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        let body = "# TYPE x_total counter\nx_total 7\n\n";
        assert!(ok.ends_with(&format!("\r\n\r\n{body}")), "{ok}");
        assert!(
            ok.contains(&format!("Content-Length: {}\r\n", body.len())),
            "{ok}"
        );
        for (request, status) in [
            (&b"POST /metrics HTTP/1.1\r\n\r\n"[..], "405"),
            (b"HEAD /readyz HTTP/1.1\r\n\r\n", "405"),
            (b"DELETE /healthz HTTP/1.1\r\n\r\n", "405"),
            (b"GET /secret HTTP/1.1\r\n\r\n", "404"),
            (b"GET /metrics SMTP/2\r\n\r\n", "400"),
            (b"\x16\x03\x01 hello\r\n\r\n", "400"),
            (b"GET /metrics\r\n\r\n", "400"),
            (b"GET /metrics HTTP/1.1\r\n", "400"),
        ] {
            let answer = ask(request).await;
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status} ")),
                "{request:?}: {answer}"
            );
            assert!(!answer.contains("x_total"), "{answer}");
        }
        let huge = vec![b'a'; MAX_REQUEST * 2];
        let answer = ask(&huge).await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_times_out() {
        let (mut client, server) = tokio::io::duplex(1024);
        let registry = Registry::new();
        let health = health(false, false);
        let server = tokio::spawn(async move { respond(server, &registry, &health).await });
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn health_stays_up_and_readiness_fails_from_the_drain_on() {
        let body = |answer: &str| answer.split_once("\r\n\r\n").unwrap().1.to_owned();
        for (draining, stopping, ready, reason) in [
            (false, false, "200 OK", "ready\n"),
            (true, false, "503 Service Unavailable", "draining\n"),
            (true, true, "503 Service Unavailable", "shutting down\n"),
        ] {
            let when = || health(draining, stopping);
            let readyz = ask_when(b"GET /readyz HTTP/1.1\r\n\r\n", when()).await;
            assert!(
                readyz.starts_with(&format!("HTTP/1.1 {ready}\r\n")),
                "{readyz}"
            );
            assert_eq!(body(&readyz), reason);
            let healthz = ask_when(b"GET /healthz?verbose HTTP/1.0\r\n\r\n", when()).await;
            assert!(healthz.starts_with("HTTP/1.1 200 OK\r\n"), "{healthz}");
            assert_eq!(body(&healthz), "ok\n");
            for answer in [&readyz, &healthz] {
                assert!(
                    answer.contains("\r\nContent-Type: text/plain; charset=utf-8\r\n")
                        && answer.contains("\r\nCache-Control: no-store\r\n"),
                    "{answer}"
                );
            }
        }
        let refused = ask(b"POST /readyz HTTP/1.1\r\n\r\n").await;
        assert!(refused.contains("\r\nAllow: GET\r\n"), "{refused}");
        let unknown = ask(b"GET /ready HTTP/1.1\r\n\r\n").await;
        assert!(unknown.starts_with("HTTP/1.1 404 "), "{unknown}");
    }
}
