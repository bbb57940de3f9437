//! The coordinator's one error type; each variant is one CQL error code.

use std::fmt;

use crate::consistency::ConsistencyLevel;

/// What kind of write timed out (CQL `WriteType`, sent with `WriteTimeout`
/// so drivers can decide whether a retry is safe).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WriteType {
    Simple,
    Batch,
    UnloggedBatch,
    Counter,
    BatchLog,
    Cas,
    View,
    Cdc,
}

impl WriteType {
    /// The name the CQL protocol sends.
    pub fn as_cql(&self) -> &'static str {
        match self {
            WriteType::Simple => "SIMPLE",
            WriteType::Batch => "BATCH",
            WriteType::UnloggedBatch => "UNLOGGED_BATCH",
            WriteType::Counter => "COUNTER",
            WriteType::BatchLog => "BATCH_LOG",
            WriteType::Cas => "CAS",
            WriteType::View => "VIEW",
            WriteType::Cdc => "CDC",
        }
    }
}

impl fmt::Display for WriteType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_cql())
    }
}

/// Everything a coordinated request can fail with. Variants map one-to-one
/// to CQL error codes: `Unavailable` (0x1000), `WriteTimeout` (0x1100),
/// `ReadTimeout` (0x1200), `InvalidRequest` (0x2200), and `Storage` to
/// `ServerError` (0x0000).
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// Not enough replicas are alive to even try (nothing was sent).
    #[error("cannot achieve consistency level {consistency}: {required} replicas required, {alive} alive")]
    Unavailable {
        consistency: ConsistencyLevel,
        required: usize,
        alive: usize,
    },
    /// Too few replicas acknowledged in time. The write may still have been
    /// applied on some replicas.
    #[error("{write_type} write timed out at consistency {consistency}: {received} of {block_for} replicas acknowledged")]
    WriteTimeout {
        consistency: ConsistencyLevel,
        received: usize,
        block_for: usize,
        write_type: WriteType,
    },
    /// Too few replicas answered in time; `data_present` tells whether the
    /// replica asked for the full data was among them.
    #[error("read timed out at consistency {consistency}: {received} of {block_for} replicas answered (data present: {data_present})")]
    ReadTimeout {
        consistency: ConsistencyLevel,
        received: usize,
        block_for: usize,
        data_present: bool,
    },
    /// Too many replicas answered with a failure for `block_for` to be
    /// reached; `failures` holds each one's address and Cassandra's
    /// failure reason code (e.g. [`INDEX_NOT_AVAILABLE`]).
    #[error("read failed at consistency {consistency}: {received} of {block_for} replicas answered, {} failed", failures.len())]
    ReadFailure {
        consistency: ConsistencyLevel,
        received: usize,
        block_for: usize,
        failures: Vec<(std::net::IpAddr, u16)>,
        data_present: bool,
    },
    /// The request cannot be served as asked (e.g. ANY for a read).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The local storage engine or the hint store failed.
    #[error("storage error: {0}")]
    Storage(#[from] gyre_storage::Error),
}

impl CoordinatorError {
    /// Wraps an I/O error of the coordinator's own files (hints).
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        CoordinatorError::Storage(gyre_storage::Error::Io {
            context: context.into(),
            source,
        })
    }
}

pub type Result<T, E = CoordinatorError> = std::result::Result<T, E>;

/// Cassandra's `RequestFailureReason.INDEX_NOT_AVAILABLE`: a replica's
/// index is still being built.
pub const INDEX_NOT_AVAILABLE: u16 = 6;

/// Cassandra's `RequestFailureReason.READ_TOO_MANY_TOMBSTONES`: a replica
/// walked over more tombstones than its `tombstone_failure_threshold`.
pub const READ_TOO_MANY_TOMBSTONES: u16 = 1;

/// In a replica's error text when it aborted a read for its tombstones (the
/// coordinator turns it back into [`READ_TOO_MANY_TOMBSTONES`]).
pub(crate) const TOMBSTONES_TEXT: &str = "tombstones during query";

/// The replica side of `tombstone_failure_threshold`: `Err` with Cassandra's
/// log text when a read walked over more tombstones than `threshold`.
pub(crate) fn check_tombstones(
    threshold: usize,
    table: gyre_storage::TableId,
    scanned: usize,
) -> std::result::Result<(), String> {
    if scanned <= threshold {
        return Ok(());
    }
    let message = format!(
        "Scanned over {threshold} {TOMBSTONES_TEXT} on table {table} ({scanned} scanned); query aborted"
    );
    tracing::error!("{message}");
    Err(message)
}
