//! A minimal HTTP/1.1 responder for `GET /metrics`, and the matching scraper.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::{Registry, UPKEEP_INTERVAL};

/// Time a scraper has to send its request, and then to read the answer.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest request head accepted, in bytes.
pub const MAX_REQUEST: usize = 8 * 1024;

/// Scrapes answered at once; more connections are closed unanswered.
const MAX_SCRAPES: usize = 16;

/// Largest answer a scraper reads, in bytes.
const MAX_ANSWER: u64 = 64 * 1024 * 1024;

/// Serves `GET /metrics` on `listener` until the task is dropped: one
/// request per connection, answered and closed. Meanwhile runs the
/// registry's upkeep every [`UPKEEP_INTERVAL`].
pub(crate) async fn serve(listener: TcpListener, registry: Registry) {
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
        tokio::spawn(async move {
            if let Err(error) = respond(stream, &registry).await {
                tracing::debug!(%peer, %error, "metrics request failed");
            }
            drop(slot);
        });
    }
}

/// Reads one request head and answers it: the metrics for `GET /metrics`,
/// an error status for anything else. Then closes.
pub(crate) async fn respond<S>(mut stream: S, registry: &Registry) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let head = tokio::time::timeout(HTTP_TIMEOUT, read_head(&mut stream)).await;
    let (status, body) = match head {
        Err(_) => ("408 Request Timeout", String::new()),
        Ok(Err(error)) => return Err(error),
        Ok(Ok(Err(reason))) => ("400 Bad Request", format!("{reason}\n")),
        Ok(Ok(Ok(head))) => route(&head, registry),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tokio::time::timeout(HTTP_TIMEOUT, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await
    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

fn route(head: &str, registry: &Registry) -> (&'static str, String) {
    let mut parts = head.lines().next().unwrap_or_default().split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return ("400 Bad Request", "malformed request line\n".into());
    };
    if !version.starts_with("HTTP/1.") {
        return ("400 Bad Request", "HTTP/1.x only\n".into());
    }
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET", "/metrics") => ("200 OK", registry.render()),
        (_, "/metrics") => ("405 Method Not Allowed", "GET only\n".into()),
        _ => ("404 Not Found", "try /metrics\n".into()),
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
/// I/O errors, a timeout after [`HTTP_TIMEOUT`], or a status other than 200
/// ([`std::io::ErrorKind::InvalidData`]).
pub async fn scrape(address: &str) -> std::io::Result<String> {
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        let request =
            format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.take(MAX_ANSWER).read_to_end(&mut answer).await?;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let (head, body) = answer
            .split_once("\r\n\r\n")
            .ok_or_else(|| invalid("no http header"))?;
        if !head.starts_with("HTTP/1.1 200") {
            let status = head.lines().next().unwrap_or_default();
            return Err(invalid(&format!("metrics endpoint answered {status:?}")));
        }
        Ok(body.to_owned())
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

    use super::{MAX_REQUEST, Registry, respond};

    async fn ask(request: &[u8]) -> String {
        let registry = Registry::new();
        metrics::Recorder::register_counter(
            &registry,
            &metrics::Key::from_name("x_total"),
            &metrics::Metadata::new("t", metrics::Level::INFO, None),
        )
        .increment(7);
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move { respond(server, &registry).await });
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
        let server = tokio::spawn(async move { respond(server, &registry).await });
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
        server.await.unwrap().unwrap();
    }
}
