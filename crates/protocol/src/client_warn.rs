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

/// What a request's response carries besides its message.
#[derive(Default)]
struct Extras {
    warnings: Vec<String>,
    /// The request frame had the tracing flag (0x02).
    tracing_requested: bool,
    /// The trace session the handler opened for it.
    tracing_id: Option<uuid::Uuid>,
}

tokio::task_local! {
    static WARNINGS: RefCell<Extras>;
}

/// True when the client asked to trace the request being executed.
pub fn tracing_requested() -> bool {
    WARNINGS
        .try_with(|w| w.borrow().tracing_requested)
        .unwrap_or(false)
}

/// Sends `id` as the response's tracing session id (flag 0x02): only for
/// a request whose client asked for tracing.
pub fn set_tracing_id(id: uuid::Uuid) {
    let _ = WARNINGS.try_with(|w| {
        let mut w = w.borrow_mut();
        if w.tracing_requested {
            w.tracing_id = Some(id);
        }
    });
}

/// Adds a warning to the response of the request being executed (a no-op
/// outside one, e.g. in a background task).
pub fn warn(message: impl Into<String>) {
    let message = message.into();
    tracing::warn!(%message, "client warning");
    let _ = WARNINGS.try_with(|w| {
        let w = &mut w.borrow_mut().warnings;
        if w.len() < MAX_WARNINGS {
            w.push(message);
        }
    });
}

/// Runs `fut` gathering the warnings it raises.
pub async fn collect<F: Future>(fut: F) -> (F::Output, Vec<String>) {
    let (out, warnings, _) = collect_traced(false, fut).await;
    (out, warnings)
}

/// Runs `fut` gathering its warnings and, when `tracing` (the client asked
/// for it), the trace session id the handler sets.
pub async fn collect_traced<F: Future>(
    tracing: bool,
    fut: F,
) -> (F::Output, Vec<String>, Option<uuid::Uuid>) {
    let extras = Extras {
        tracing_requested: tracing,
        ..Extras::default()
    };
    WARNINGS
        .scope(RefCell::new(extras), async move {
            let out = fut.await;
            let (warnings, id) = WARNINGS.with(|w| {
                let mut w = w.borrow_mut();
                (std::mem::take(&mut w.warnings), w.tracing_id.take())
            });
            (out, warnings, id)
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
