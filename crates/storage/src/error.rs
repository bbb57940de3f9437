use std::path::PathBuf;

use crate::TableId;

/// Errors of the storage engines. Variants that callers act on are their own.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Stored data failed a checksum or could not be decoded; the engine
    /// does not serve it.
    #[error("corruption in {file} at offset {offset}: {detail}")]
    Corruption {
        file: PathBuf,
        offset: u64,
        detail: String,
    },
    /// The commitlog could not be written or synced: the engine refuses all
    /// further writes rather than risk losing acknowledged ones.
    #[error("storage refuses writes after a failed commitlog write or sync: {0}")]
    Poisoned(String),
    /// A flush failed (for example the disk is full); writes resume after a
    /// flush succeeds.
    #[error("writes are suspended because a flush failed: {0}")]
    WritesSuspended(String),
    #[error("mutation rejected: {0}")]
    LimitExceeded(String),
    /// A mutation received from another node could not be decoded.
    #[error("malformed mutation: {0}")]
    Malformed(String),
    #[error("unknown table {0}")]
    UnknownTable(TableId),
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A snapshot with this tag exists already (Cassandra's words).
    #[error("Snapshot {0} already exists.")]
    SnapshotExists(String),
    /// A bad argument to an operation (a snapshot tag, ...).
    #[error("{0}")]
    InvalidArgument(String),
    /// The engine does not implement the operation.
    #[error("not supported by this engine: {0}")]
    Unsupported(String),
    /// A storage-attached index is still being built on this node.
    #[error("The secondary index '{0}' is not yet available")]
    IndexNotAvailable(String),
    /// A compaction did not start: its output may not fit (Cassandra's
    /// message). It is retried later, like one that hit a full disk.
    #[error(
        "Not enough space for compaction, estimated sstables = {estimated_sstables}, \
         expected write size = {expected_bytes} ({available_bytes} bytes available)"
    )]
    NotEnoughSpace {
        estimated_sstables: u64,
        expected_bytes: u64,
        available_bytes: u64,
    },
    #[error("the engine is shut down")]
    Closed,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Whether this is the disk running out of space (ENOSPC, EDQUOT):
    /// work waits for space rather than stopping writes.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Error::NotEnoughSpace { .. })
            || matches!(self, Error::Io { source, .. }
            if source.kind() == std::io::ErrorKind::StorageFull
                || matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)))
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Adds a context string to I/O results.
pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(context(), e))
    }
}
