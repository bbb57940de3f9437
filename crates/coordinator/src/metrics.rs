//! Where a request's time goes inside the coordinator and on this node as a
//! replica: lock-free histograms, rendered by the node's `/metrics`.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use gyre_common::metrics::{render_histogram, Histogram};
use gyre_storage::{Mutation, StorageEngine};

/// The coordinator's stages.
#[derive(Debug, Default)]
pub struct CoordinatorMetrics {
    /// A client write at its consistency level, from planning to answer.
    pub write: Histogram,
    /// A client partition read at its consistency level.
    pub read: Histogram,
    /// A client range read (one page).
    pub range: Histogram,
    /// Applying a mutation on this replica: validation, commitlog append
    /// and memtable merge (CPU work).
    pub replica_apply: Histogram,
    /// From a mutation's apply on this replica until the commitlog has it
    /// durable (the group fsync; nothing in periodic mode).
    pub durability_wait: Histogram,
}

impl CoordinatorMetrics {
    /// Appends every histogram to `out`, named `{prefix}{stage}_seconds`.
    pub fn render_prometheus(&self, prefix: &str, out: &mut String) {
        for (stage, help, h) in [
            (
                "write",
                "A client write through the coordinator.",
                &self.write,
            ),
            (
                "read",
                "A client partition read through the coordinator.",
                &self.read,
            ),
            (
                "range",
                "A page of a client range read through the coordinator.",
                &self.range,
            ),
            (
                "replica_apply",
                "Applying a mutation on this replica (commitlog append, memtable merge).",
                &self.replica_apply,
            ),
            (
                "durability_wait",
                "From a mutation's apply on this replica until its commitlog sync.",
                &self.durability_wait,
            ),
        ] {
            render_histogram(
                out,
                &format!("{prefix}{stage}_seconds"),
                help,
                &h.snapshot(),
            );
        }
    }
}

/// Applies `m` to the local engine now and returns the wait for its
/// durability, recording both stages.
pub(crate) fn apply_local(
    storage: &dyn StorageEngine,
    metrics: &Arc<CoordinatorMetrics>,
    m: Mutation,
) -> impl Future<Output = gyre_storage::Result<()>> + Send + 'static {
    let started = Instant::now();
    let durable = storage.apply_mutation(m);
    let applied = Instant::now();
    metrics.replica_apply.record(applied - started);
    let metrics = metrics.clone();
    async move {
        let res = durable.await;
        metrics.durability_wait.record(applied.elapsed());
        res
    }
}
