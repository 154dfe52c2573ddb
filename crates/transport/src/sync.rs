//! Two synchronisation patterns the connection and the layers above it use
//! everywhere, each written once.

use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::Notify;

/// Locks `mutex`, ignoring poisoning.
///
/// Every mutex in netproto guards state that each critical section leaves
/// consistent before anything in it can panic (counters, queues swapped or
/// appended whole), so a panic elsewhere while holding it does not make the
/// state unusable; failing every later caller would only spread the panic.
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Locks `lock` for reading, ignoring poisoning (see [`lock`]).
pub fn read<T: ?Sized>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Locks `lock` for writing, ignoring poisoning (see [`lock`]).
pub fn write<T: ?Sized>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// Waits until `ready` returns a value, checking it again each time `notify`
/// is notified.
///
/// Interest in `notify` is registered before each check, so a notification
/// sent between the check and the wait is not lost (the `enable`-then-
/// recheck pattern of [`Notify::notified`]); `notify_waiters` and
/// `notify_one` both wake it.
pub async fn wait_until<T>(notify: &Notify, mut ready: impl FnMut() -> Option<T>) -> T {
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(value) = ready() {
            return value;
        }
        notified.await;
    }
}

/// As [`wait_until`], but gives up with `None` once `cancel` completes.
pub async fn wait_until_or<T>(
    notify: &Notify,
    ready: impl FnMut() -> Option<T>,
    cancel: impl Future<Output = ()>,
) -> Option<T> {
    tokio::select! {
        value = wait_until(notify, ready) => Some(value),
        () = cancel => None,
    }
}
