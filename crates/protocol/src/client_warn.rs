//! Warnings for the client, gathered while a request executes (Cassandra's
//! `ClientWarn`): code anywhere below the handler calls [`warn`], and the
//! server sends what was gathered in the response's warnings (flag 0x08),
//! which drivers expose (`ResultSet.response_future.warnings` in Python).
//!
//! The list lives in a task-local scope around the request's future, so
//! it follows the request across awaits and tasks it does not spawn, and
//! costs nothing when no warning is raised.

use std::cell::RefCell;
use std::future::Future;

/// Warnings one response carries at most; later ones are dropped.
const MAX_WARNINGS: usize = 16;

tokio::task_local! {
    static WARNINGS: RefCell<Vec<String>>;
}

/// Adds a warning to the response of the request being executed (a no-op
/// outside one, e.g. in a background task).
pub fn warn(message: impl Into<String>) {
    let message = message.into();
    tracing::warn!(%message, "client warning");
    let _ = WARNINGS.try_with(|w| {
        let mut w = w.borrow_mut();
        if w.len() < MAX_WARNINGS {
            w.push(message);
        }
    });
}

/// Runs `fut` gathering the warnings it raises.
pub async fn collect<F: Future>(fut: F) -> (F::Output, Vec<String>) {
    WARNINGS
        .scope(RefCell::new(Vec::new()), async move {
            let out = fut.await;
            let warnings = WARNINGS.with(|w| std::mem::take(&mut *w.borrow_mut()));
            (out, warnings)
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn warnings_follow_the_request_across_awaits() {
        let (out, warnings) = collect(async {
            warn("first");
            tokio::task::yield_now().await;
            warn("second");
            7
        })
        .await;
        assert_eq!(out, 7);
        assert_eq!(warnings, ["first", "second"]);
        // Outside a scope nothing is gathered and nothing fails.
        warn("nobody listens");
        let (_, none) = collect(async {}).await;
        assert!(none.is_empty());
    }

    #[tokio::test]
    async fn warnings_are_bounded() {
        let (_, warnings) = collect(async {
            for i in 0..100 {
                warn(format!("w{i}"));
            }
        })
        .await;
        assert_eq!(warnings.len(), MAX_WARNINGS);
    }
}
