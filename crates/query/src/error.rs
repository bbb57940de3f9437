//! The crate's one error type, with the CQL error code each variant answers.

use gyre_protocol::{CqlError, ErrorKind};
use gyre_schema::SchemaError;

/// Why a statement failed. [`QueryError::code`] is the native-protocol error
/// code to send back.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The text does not parse; the message starts with `line L:C`.
    #[error("{0}")]
    Syntax(String),
    /// Cassandra's `INVALID` (0x2200): the statement is wrong for the schema
    /// or uses something this node does not support.
    #[error("{0}")]
    Invalid(String),
    /// `ALREADY_EXISTS` (0x2400); `table` is empty for a keyspace.
    #[error("{message}")]
    AlreadyExists {
        keyspace: String,
        table: String,
        message: String,
    },
    /// `UNAUTHORIZED` (0x2100), e.g. changing a system keyspace.
    #[error("{0}")]
    Unauthorized(String),
    /// `SERVER_ERROR` (0x0000): storage or schema persistence failed.
    #[error("{0}")]
    Server(String),
    /// An error a replicated [`crate::DataAccess`] reports as is: unavailable,
    /// read/write timeouts and failures, overloaded.
    #[error("{message}")]
    Cluster { kind: ErrorKind, message: String },
}

impl QueryError {
    /// The CQL native protocol error code.
    pub fn code(&self) -> i32 {
        self.kind().code()
    }

    /// The protocol error kind (code and code-specific fields).
    pub fn kind(&self) -> ErrorKind {
        match self {
            QueryError::Syntax(_) => ErrorKind::Syntax,
            QueryError::Invalid(_) => ErrorKind::Invalid,
            QueryError::AlreadyExists {
                keyspace, table, ..
            } => ErrorKind::AlreadyExists {
                keyspace: keyspace.clone(),
                table: table.clone(),
            },
            QueryError::Unauthorized(_) => ErrorKind::Unauthorized,
            QueryError::Server(_) => ErrorKind::ServerError,
            QueryError::Cluster { kind, .. } => kind.clone(),
        }
    }

    /// The ERROR message body to send.
    pub fn to_cql_error(&self) -> CqlError {
        CqlError::new(self.kind(), self.to_string())
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        QueryError::Invalid(msg.into())
    }
}

impl From<gyre_cql::ParseError> for QueryError {
    fn from(e: gyre_cql::ParseError) -> Self {
        QueryError::Syntax(e.to_string())
    }
}

impl From<gyre_storage::Error> for QueryError {
    fn from(e: gyre_storage::Error) -> Self {
        QueryError::Server(format!("storage: {e}"))
    }
}

impl From<SchemaError> for QueryError {
    fn from(e: SchemaError) -> Self {
        let message = e.to_string();
        match e {
            SchemaError::AlreadyExists { keyspace, table } => QueryError::AlreadyExists {
                keyspace,
                table: table.unwrap_or_default(),
                message,
            },
            SchemaError::InvalidRequest(m) => QueryError::Invalid(m),
            SchemaError::Encoding(_) => QueryError::Invalid(message),
            SchemaError::Unauthorized(m) => QueryError::Unauthorized(m),
            SchemaError::Corrupt(_) | SchemaError::Storage(_) => QueryError::Server(message),
        }
    }
}

pub type Result<T> = std::result::Result<T, QueryError>;
