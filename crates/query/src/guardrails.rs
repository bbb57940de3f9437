//! Guardrails: limits on what one statement may ask of the cluster, with
//! Cassandra's names and messages (`in_select_cartesian_product_*`,
//! `batch_size_*_threshold`, `max_mutation_size`,
//! `maximum_timestamp_*_threshold`). The node sets them from its
//! configuration; the defaults refuse what would hurt a node and warn
//! about what would hurt a cluster.

use std::time::Duration;

use gyre_common::Partition;

use crate::error::{QueryError, Result};
use crate::processor::{Restriction, Where};

/// Limits checked while turning a statement into reads or mutations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guardrails {
    /// Most primary keys an `IN` restriction (the product of every key
    /// column's `IN` list) may select.
    pub in_select_cartesian_product_fail_threshold: usize,
    /// A multi-partition batch over this many bytes of mutations gets a
    /// client warning.
    pub batch_size_warn_threshold_bytes: usize,
    /// ... and over this many it is refused.
    pub batch_size_fail_threshold_bytes: usize,
    /// Largest mutation (one partition's update) accepted: never more than
    /// internode messaging carries, so everything accepted replicates.
    pub max_mutation_size_bytes: usize,
    /// Client timestamps (`USING TIMESTAMP`, the protocol's default
    /// timestamp) further than this into the future are refused: one bad
    /// clock would otherwise win every later write. `None`: unchecked.
    pub maximum_timestamp_fail_threshold: Option<Duration>,
    /// A SELECT that walked over more tombstones than this gets a client
    /// warning and a log line (Cassandra's `tombstone_warn_threshold`; the
    /// failure threshold is each replica's, in the coordinator).
    pub tombstone_warn_threshold: usize,
}

/// Internode messaging's frame limit less room for the message envelope.
pub const DEFAULT_MAX_MUTATION_SIZE: usize = (16 << 20) - (256 << 10);

impl Default for Guardrails {
    fn default() -> Self {
        Guardrails {
            in_select_cartesian_product_fail_threshold: 10_000,
            batch_size_warn_threshold_bytes: 5 << 10,
            batch_size_fail_threshold_bytes: 640 << 10,
            max_mutation_size_bytes: DEFAULT_MAX_MUTATION_SIZE,
            maximum_timestamp_fail_threshold: None,
            tombstone_warn_threshold: 1000,
        }
    }
}

impl Guardrails {
    /// Refuses a WHERE clause whose `IN` lists multiply into more keys
    /// than allowed, before any of them is built.
    pub(crate) fn check_cartesian(&self, w: &Where) -> Result<()> {
        let product = w.keys.values().fold(1usize, |acc, r| match r {
            Restriction::Values(v) => acc.saturating_mul(v.len().max(1)),
            _ => acc,
        });
        let max = self.in_select_cartesian_product_fail_threshold;
        if product > max {
            return Err(QueryError::invalid(format!(
                "Guardrail in_select_cartesian_product violated: The query cartesian product size ({product}) is greater than the fail threshold of {max}"
            )));
        }
        Ok(())
    }

    /// Refuses a mutation larger than internode messaging carries.
    pub(crate) fn check_mutation(&self, keyspace: &str, update: &Partition) -> Result<()> {
        let size = update.size_estimate();
        let max = self.max_mutation_size_bytes;
        if size > max {
            return Err(QueryError::invalid(format!(
                "Rejected an oversized mutation ({size}/{max}) for keyspace: {keyspace}"
            )));
        }
        Ok(())
    }

    /// Warns about, or refuses, a batch spanning several partitions by
    /// its total size (single-partition batches are exempt, as in
    /// Cassandra: they apply as one mutation).
    pub(crate) fn check_batch(
        &self,
        tables: &[String],
        partitions: usize,
        size: usize,
    ) -> Result<()> {
        if partitions <= 1 {
            return Ok(());
        }
        let (warn, fail) = (
            self.batch_size_warn_threshold_bytes,
            self.batch_size_fail_threshold_bytes,
        );
        if size > fail {
            tracing::error!(
                size,
                fail,
                ?tables,
                "batch refused: over batch_size_fail_threshold"
            );
            return Err(QueryError::invalid(format!(
                "Batch too large: {} for [{}] is over the batch_size_fail_threshold of {}",
                kib(size),
                tables.join(", "),
                kib(fail)
            )));
        }
        if size > warn {
            gyre_protocol::client_warn::warn(format!(
                "Batch for [{}] is of size {}, exceeding specified threshold of {} by {}.",
                tables.join(", "),
                kib(size),
                kib(warn),
                kib(size - warn)
            ));
        }
        Ok(())
    }

    /// Warns (client warning and log) about a SELECT on `table` that read
    /// `live_rows` rows and walked over `tombstones` tombstones, past
    /// `tombstone_warn_threshold`, in Cassandra's words.
    pub(crate) fn check_tombstones(&self, table: &str, live_rows: usize, tombstones: usize) {
        if tombstones <= self.tombstone_warn_threshold {
            return;
        }
        let message = format!(
            "Read {live_rows} live rows and {tombstones} tombstone cells for query on {table} (see tombstone_warn_threshold)"
        );
        tracing::warn!("{message}");
        gyre_protocol::client_warn::warn(message);
    }

    /// Refuses a client timestamp too far ahead of `now_micros`.
    pub(crate) fn check_timestamp(&self, ts: i64, now_micros: i64) -> Result<()> {
        let Some(max) = self.maximum_timestamp_fail_threshold else {
            return Ok(());
        };
        let limit = now_micros.saturating_add(i64::try_from(max.as_micros()).unwrap_or(i64::MAX));
        if ts > limit {
            return Err(QueryError::invalid(format!(
                "Guardrail maximum_timestamp violated: The timestamp {ts} is more than {}s in the future",
                max.as_secs()
            )));
        }
        Ok(())
    }
}

fn kib(bytes: usize) -> String {
    format!("{:.1}KiB", bytes as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn where_in(lists: &[usize]) -> Where {
        let mut w = Where::default();
        for (i, n) in lists.iter().enumerate() {
            let vals = (0..*n).map(|v| Bytes::from(v.to_string())).collect();
            w.keys.insert(format!("k{i}"), Restriction::Values(vals));
        }
        w
    }

    #[test]
    fn cartesian_product_is_checked_before_it_is_built() {
        let g = Guardrails {
            in_select_cartesian_product_fail_threshold: 100,
            ..Guardrails::default()
        };
        assert!(g.check_cartesian(&where_in(&[10, 10])).is_ok());
        let err = g
            .check_cartesian(&where_in(&[10, 11]))
            .expect_err("110 > 100");
        assert!(
            err.to_string().contains("cartesian product size (110)"),
            "{err}"
        );
        // Saturates instead of overflowing (2^72 keys).
        assert!(g.check_cartesian(&where_in(&[1 << 12; 6])).is_err());
    }

    #[test]
    fn batches_warn_then_fail_and_single_partitions_are_exempt() {
        let g = Guardrails {
            batch_size_warn_threshold_bytes: 100,
            batch_size_fail_threshold_bytes: 1000,
            ..Guardrails::default()
        };
        let t = vec!["ks.t".to_string()];
        let (r, warnings) =
            futures::executor::block_on(gyre_protocol::client_warn::collect(async {
                g.check_batch(&t, 2, 500)
            }));
        assert!(r.is_ok());
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].starts_with("Batch for [ks.t] is of size 0.5KiB"),
            "{warnings:?}"
        );
        assert!(g.check_batch(&t, 2, 1001).is_err());
        assert!(g.check_batch(&t, 1, 1_000_000).is_ok());
    }

    #[test]
    fn tombstones_past_the_threshold_warn() {
        let g = Guardrails {
            tombstone_warn_threshold: 10,
            ..Guardrails::default()
        };
        let warnings = |n| {
            futures::executor::block_on(gyre_protocol::client_warn::collect(async {
                g.check_tombstones("ks.t", 3, n)
            }))
            .1
        };
        assert!(warnings(10).is_empty());
        assert_eq!(
            warnings(11),
            vec!["Read 3 live rows and 11 tombstone cells for query on ks.t (see tombstone_warn_threshold)".to_string()]
        );
    }

    #[test]
    fn timestamps_far_in_the_future_are_refused_when_enabled() {
        let mut g = Guardrails::default();
        assert!(g.check_timestamp(i64::MAX, 0).is_ok());
        g.maximum_timestamp_fail_threshold = Some(Duration::from_secs(60));
        assert!(g.check_timestamp(59_000_000, 0).is_ok());
        assert!(g.check_timestamp(61_000_000, 0).is_err());
    }
}
