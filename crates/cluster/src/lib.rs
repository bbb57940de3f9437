//! Gyre's cluster logic, as pure state machines.
//!
//! - [`TokenMetadata`]: the Murmur3 token ring (vnodes, primary owners,
//!   joining/leaving nodes) and token allocation for new nodes that keeps
//!   replicated ownership balanced (Cassandra 4's replication-aware one).
//! - [`ReplicationStrategy`]: Cassandra's `SimpleStrategy` and
//!   `NetworkTopologyStrategy` replica placement, pending replicas during
//!   joins and leaves, and a per-range cache ([`ReplicaPlan`]).
//! - Range movements: what a joining node fetches from whom
//!   ([`bootstrap_sources`]) and what a leaving node hands to whom
//!   ([`leave_targets`], refused by [`check_leave`]).
//! - [`Gossiper`]: Cassandra's SYN/ACK/ACK2 gossip with generations,
//!   versioned application states, seeds, graceful shutdown and membership
//!   events, driven by [`Gossiper::tick`] and [`Gossiper::step`].
//! - [`FailureDetector`]: the phi-accrual failure detector gossip uses.
//!
//! It is not a transport and has no clock: no sockets, no timers, no
//! threads. The caller passes time in as milliseconds, delivers received
//! messages and sends the [`Outgoing`] messages it gets back, which makes
//! every behaviour reproducible in deterministic simulations.

mod error;
mod failure_detector;
mod gossip;
mod movement;
mod placement;
mod ring;

pub use error::{Error, Result};
pub use failure_detector::{FailureDetector, FailureDetectorConfig, PHI_FACTOR};
pub use gossip::{
    encode_tokens, AppStateKey, Endpoint, EndpointState, GossipConfig, GossipDigest, GossipMessage,
    Gossiper, MembershipEvent, NodeStatus, Outgoing, VersionedValue,
};
pub use movement::{bootstrap_sources, check_leave, leave_targets, replace_sources, RangeMove};
pub use placement::{PlannedRange, ReplicaPlan, ReplicationStrategy};
pub use ring::{range_width, HostId, NodeInfo, TokenMetadata, DEFAULT_NUM_TOKENS};
