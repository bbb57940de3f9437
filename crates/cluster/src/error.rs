use gyre_common::Token;

use crate::ring::HostId;

/// Everything that can go wrong when changing ring membership.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("token {token} is already owned by {owner}")]
    TokenConflict { token: Token, owner: HostId },
    #[error("node {0} has no tokens")]
    NoTokens(HostId),
    #[error("node {0} is not in the ring")]
    UnknownNode(HostId),
    #[error("node {0} is already a normal member of the ring")]
    AlreadyNormal(HostId),
}

pub type Result<T> = std::result::Result<T, Error>;
