//! What a node must remember across restarts: its host id, its last gossip
//! generation and its tokens (`<data_dir>/node_state.json`).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use gyre_common::Token;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};

const FILE: &str = "node_state.json";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeState {
    pub host_id: Uuid,
    /// The gossip generation of the last start.
    pub generation: u64,
    /// Empty until tokens were chosen.
    #[serde(default)]
    pub tokens: Vec<Token>,
    /// False while a bootstrap (streaming the node's ranges) has not
    /// finished: a restart bootstraps again. Files from before bootstrap
    /// existed belong to complete nodes.
    #[serde(default = "complete")]
    pub bootstrapped: bool,
    /// Set when the node left the ring by decommission: it never starts
    /// again on this data (Cassandra refuses the same way).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub decommissioned: bool,
}

fn complete() -> bool {
    true
}

impl NodeState {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(FILE)
    }

    /// The stored state, or a fresh one (new host id, generation 0).
    pub fn load_or_new(data_dir: &Path) -> Result<Self> {
        let path = Self::path(data_dir);
        match fs::read(&path) {
            Ok(body) => serde_json::from_slice(&body).map_err(|e| Error::State {
                path: path.display().to_string(),
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self {
                host_id: Uuid::new_v4(),
                generation: 0,
                tokens: Vec::new(),
                bootstrapped: true,
                decommissioned: false,
            }),
            Err(source) => Err(Error::Io {
                context: format!("reading {}", path.display()),
                source,
            }),
        }
    }

    /// The generation for this start: larger than every previous one, and
    /// normally the wall clock in seconds as in Cassandra.
    pub fn next_generation(&self, unix_secs: u64) -> u64 {
        (self.generation + 1).max(unix_secs)
    }

    /// Atomically replaces the file (write, fsync, rename, fsync dir).
    pub fn save(&self, data_dir: &Path) -> Result<()> {
        let io = |context: String| move |source| Error::Io { context, source };
        fs::create_dir_all(data_dir).map_err(io(format!("creating {}", data_dir.display())))?;
        let path = Self::path(data_dir);
        let tmp = data_dir.join(format!("{FILE}.tmp"));
        let body = serde_json::to_vec_pretty(self).map_err(|e| Error::State {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let mut f = fs::File::create(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
        f.write_all(&body)
            .and_then(|_| f.sync_all())
            .map_err(io(format!("writing {}", tmp.display())))?;
        fs::rename(&tmp, &path).map_err(io(format!("renaming to {}", path.display())))?;
        if let Ok(d) = fs::File::open(data_dir) {
            // Makes the rename durable; failure only weakens crash safety.
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// The ring members (other than this node) as this node last saw them,
/// in `<data_dir>/peers.json`: a restarted node places them in its ring
/// before it serves clients (Cassandra's `loadRingState` from
/// `system.peers`), so it never coordinates on a ring holding only the
/// peers gossip has reached so far.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedPeer {
    pub address: std::net::SocketAddr,
    pub host_id: Uuid,
    pub dc: String,
    pub rack: String,
    pub tokens: Vec<Token>,
    /// Its CQL address (`system.peers.native_address`), when gossip had it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native: Option<std::net::SocketAddr>,
}

const PEERS_FILE: &str = "peers.json";

/// Replaces `peers.json` (write, rename; not synced: a lost update only
/// means a restart learns the change from gossip, as without the file).
pub fn save_peers(data_dir: &Path, peers: &[SavedPeer]) -> std::io::Result<()> {
    let path = data_dir.join(PEERS_FILE);
    let tmp = data_dir.join(format!("{PEERS_FILE}.tmp"));
    fs::write(
        &tmp,
        serde_json::to_vec(peers).map_err(std::io::Error::other)?,
    )?;
    fs::rename(&tmp, &path)
}

/// The saved peers; none when the file is missing or unreadable.
pub fn load_peers(data_dir: &Path) -> Vec<SavedPeer> {
    match fs::read(data_dir.join(PEERS_FILE)) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "unreadable peers.json; learning the ring from gossip");
            Vec::new()
        }),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_peers_round_trip() {
        let dir = tempfile::tempdir().expect("ok");
        assert!(load_peers(dir.path()).is_empty());
        let p = SavedPeer {
            address: "127.0.0.2:7000".parse().expect("ok"),
            host_id: Uuid::new_v4(),
            dc: "dc2".into(),
            rack: "r1".into(),
            tokens: vec![-5, 7],
            native: Some("127.0.0.2:9042".parse().expect("ok")),
        };
        save_peers(dir.path(), std::slice::from_ref(&p)).expect("ok");
        assert_eq!(load_peers(dir.path()), vec![p]);
        fs::write(dir.path().join(PEERS_FILE), b"{not json").expect("ok");
        assert!(load_peers(dir.path()).is_empty());
    }

    #[test]
    fn round_trip_and_generation_grows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = NodeState::load_or_new(dir.path()).expect("new");
        assert_eq!(s.generation, 0);
        let s = NodeState {
            generation: s.next_generation(1000),
            tokens: vec![-5, 7],
            ..s
        };
        assert_eq!(s.generation, 1000);
        s.save(dir.path()).expect("save");
        let back = NodeState::load_or_new(dir.path()).expect("load");
        assert_eq!(back, s);
        // A clock that went backwards still yields a larger generation.
        assert_eq!(back.next_generation(10), 1001);
    }

    #[test]
    fn corrupt_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(NodeState::path(dir.path()), b"{nope").expect("write");
        assert!(NodeState::load_or_new(dir.path()).is_err());
    }
}
