//! Waiting helpers shared by the service and PROXY protocol suites.

use std::time::Duration;

use tokio::io::AsyncReadExt;

/// Waits (bounded) until `done` holds.
pub(crate) async fn eventually(done: impl Fn() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not reached within 5 s");
}

/// Whether the server closed `stream` (end of stream or reset), waiting at
/// most `limit`.
pub(crate) async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    let mut byte = [0; 1];
    matches!(
        tokio::time::timeout(limit, stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}
