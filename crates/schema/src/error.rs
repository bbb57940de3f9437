//! The crate's one error type, worded as Cassandra words its answers.

/// Why a schema change, a merge, a key encoding or the schema store failed.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The keyspace (table `None`) or table already exists. Cassandra
    /// answers `ALREADY_EXISTS` with both names.
    #[error("{}", already_exists_message(.keyspace, .table.as_deref()))]
    AlreadyExists {
        keyspace: String,
        table: Option<String>,
    },
    /// Cassandra's `INVALID` error (code 0x2200) with its message.
    #[error("{0}")]
    InvalidRequest(String),
    /// Cassandra's `UNAUTHORIZED` for changes to system keyspaces.
    #[error("{0}")]
    Unauthorized(String),
    /// A value that cannot be encoded or bytes that cannot be decoded as a
    /// clustering key.
    #[error("invalid key encoding: {0}")]
    Encoding(String),
    /// Schema rows read from disk or received from a peer that make no sense.
    #[error("corrupt schema row: {0}")]
    Corrupt(String),
    #[error("schema storage: {0}")]
    Storage(#[from] gyre_storage::Error),
}

fn already_exists_message(keyspace: &str, table: Option<&str>) -> String {
    match table {
        None => format!("Keyspace {keyspace} already exists"),
        Some(t) => format!("Table {keyspace}.{t} already exists"),
    }
}

impl SchemaError {
    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        SchemaError::InvalidRequest(msg.into())
    }
}

pub type Result<T> = std::result::Result<T, SchemaError>;
