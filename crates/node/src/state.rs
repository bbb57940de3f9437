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

#[cfg(test)]
mod tests {
    use super::*;

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
