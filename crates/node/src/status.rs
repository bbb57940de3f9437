//! The JSON of `GET /status`: one node's view of the cluster. Shared with
//! `gyrectl`, which deserializes it.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub cluster_name: String,
    pub host_id: String,
    /// This node's internode (gossip) address.
    pub address: String,
    pub generation: u64,
    /// Every known endpoint, this node included, sorted by address.
    pub endpoints: Vec<EndpointReport>,
    /// Hints this node holds for other nodes, per target host.
    #[serde(default)]
    pub hints: Vec<HintsReport>,
    /// The keyspace whose replication the endpoints' `effective_ownership`
    /// is computed for (`GET /status/KEYSPACE`, or without one the keyspace
    /// every non-system keyspace's replication equals, as nodetool); `null`
    /// when there is none (then `ownership_note` says why).
    #[serde(default)]
    pub ownership_keyspace: Option<String>,
    /// nodetool's note when effective ownership is not shown.
    #[serde(default)]
    pub ownership_note: Option<String>,
}

/// Hints pending for one target host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HintsReport {
    pub host_id: String,
    pub files: usize,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointReport {
    pub address: String,
    pub host_id: Option<String>,
    pub dc: Option<String>,
    pub rack: Option<String>,
    /// The STATUS state: `NORMAL`, `BOOT`, `LEAVING`, `LEFT`, `shutdown`; `null` if not yet known.
    pub status: Option<String>,
    /// `UP` or `DOWN`, as this node's failure detector sees it.
    pub state: String,
    pub generation: u64,
    pub heartbeat: u64,
    pub tokens: Vec<i64>,
    /// Bytes on disk, as gossiped by the node.
    pub load: Option<f64>,
    /// Fraction of the ring this node owns as primary (0 when not in the ring).
    pub ownership: f64,
    /// Share of `ownership_keyspace`'s data this node replicates (nodetool's
    /// `Owns (effective)`): it sums to the replication factor over the nodes
    /// (per datacenter for NetworkTopologyStrategy). `null` when there is no
    /// such keyspace or the node is not in the ring.
    #[serde(default)]
    pub effective_ownership: Option<f64>,
    pub native_address: Option<String>,
    pub release_version: Option<String>,
    pub schema: Option<String>,
    pub is_local: bool,
}

impl EndpointReport {
    pub fn is_up(&self) -> bool {
        self.state == "UP"
    }

    pub fn is_normal(&self) -> bool {
        self.status.as_deref() == Some("NORMAL")
    }

    /// nodetool's two letters: `U`/`D`, then `N`ormal, `J`oining, `L`eaving
    /// (a gracefully shut down node keeps its tokens: it shows as `DN`).
    pub fn state_code(&self) -> String {
        let ud = if self.is_up() { 'U' } else { 'D' };
        let s = match self.status.as_deref() {
            Some("NORMAL") | Some("shutdown") => 'N',
            Some(s) if s == "BOOT" || s.starts_with("BOOT_REPLACE") => 'J',
            Some("LEAVING") | Some("LEFT") => 'L',
            _ => '?',
        };
        format!("{ud}{s}")
    }
}
