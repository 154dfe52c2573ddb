//! When an example server stops: on ctrl-c, or once the time in
//! `NETPROTO_EXAMPLE_RUN_FOR` (`5s`, `500ms`, `2m`, or plain seconds) has
//! passed, so that CI can run the examples unattended.

use std::time::Duration;

/// The environment variable that bounds how long an example server runs.
pub(crate) const RUN_FOR_VAR: &str = "NETPROTO_EXAMPLE_RUN_FOR";

/// Parses `5s`, `500ms`, `2m` or `5` (seconds).
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: u64 = number.parse().ok()?;
    match unit.trim() {
        "ms" => Some(Duration::from_millis(value)),
        "s" => Some(Duration::from_secs(value)),
        "m" => Some(Duration::from_secs(value.checked_mul(60)?)),
        _ => None,
    }
}

/// Completes on ctrl-c, or when `NETPROTO_EXAMPLE_RUN_FOR` has elapsed.
///
/// # Errors
///
/// A message if the variable is set but is not a duration.
pub(crate) fn stop_signal() -> Result<impl Future<Output = ()>, String> {
    let run_for = match std::env::var(RUN_FOR_VAR) {
        Ok(text) => Some(
            parse_duration(&text)
                .ok_or_else(|| format!("{RUN_FOR_VAR}={text:?} is not a duration like 5s"))?,
        ),
        Err(_) => None,
    };
    Ok(async move {
        let ctrl_c = async {
            if tokio::signal::ctrl_c().await.is_err() {
                // No signal handler: only the timer can stop the server.
                std::future::pending::<()>().await;
            }
        };
        let timer = async {
            match run_for {
                Some(limit) => tokio::time::sleep(limit).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = ctrl_c => {}
            () = timer => {}
        }
    })
}
