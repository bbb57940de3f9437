use std::io;

/// Everything that can stop a node from starting or serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration in {origin}: {message}")]
    ConfigParse { origin: String, message: String },
    #[error("invalid configuration: `{key}` {message}")]
    InvalidConfig { key: String, message: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("node state file {path}: {message}")]
    State { path: String, message: String },
    #[error("storage: {0}")]
    Storage(#[from] gyre_storage::Error),
    #[error("messaging: {0}")]
    Net(#[from] gyre_net::Error),
    #[error("start-up: {0}")]
    Startup(String),
    #[error("http: {0}")]
    Http(String),
}

pub type Result<T> = std::result::Result<T, Error>;
