//! The nemesis: faults injected into a running local cluster and healed.
//!
//! Process faults go through signals ([`LocalCluster`]); network faults are
//! fault rules in every node's messaging layer (the admin endpoint's
//! `/faults`), so they need no privileges: a node drops what it would send
//! to a peer it must not reach, and what it receives from it. Storage faults
//! are failpoints (`/failpoints`), in binaries built with the `failpoints`
//! feature.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use gyre_net::{FaultRules, LinkFaults};
use rand::Rng;

use crate::{Error, LocalCluster, Result};

const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// kill -9 one node, restart it at heal.
    Kill,
    /// kill -9 every node at once, restart them at heal: with `batch` or
    /// `group` commitlog sync nothing acknowledged may be lost.
    KillAll,
    /// SIGSTOP one node (a hung process), SIGCONT at heal.
    Pause,
    /// Graceful stop of one node, start at heal.
    Restart,
    /// One node cut off from every other.
    Isolate,
    /// The cluster split into two halves.
    Halves,
    /// Two halves that share one node (which reaches both).
    Bridge,
    /// 50 ms extra latency and 5% message loss on every link.
    Slow,
    /// Flush and major compaction on every node, mid-workload.
    FlushCompact,
    /// One node's write clock 5 s ahead (reset at heal): shows what
    /// last-write-wins does with skew. Not in the default set: its
    /// anomalies are expected.
    Clock,
    /// One node's disk fails every fsync (the `commitlog::fsync` and
    /// `sstable::fsync` failpoints): its commitlog refuses writes until the
    /// node restarts, so heal clears the failpoints and restarts it (kill -9,
    /// start). Not in the default set: it needs a gyre binary built with the
    /// `failpoints` feature (as `cargo test --workspace` builds it).
    Fsync,
    /// A change of the cluster's membership while the clients run, in
    /// turn: a new node joins (bootstrap streaming), a node is killed and
    /// removed (`removenode`), a node joins, a node is decommissioned
    /// (streams its data away). Never below the replication factor (then
    /// it joins), never the first member (every node's seed). Not in the
    /// default set: it changes the cluster's layout for good.
    Membership,
}

impl FaultKind {
    pub const ALL: [FaultKind; 9] = [
        FaultKind::Kill,
        FaultKind::KillAll,
        FaultKind::Pause,
        FaultKind::Restart,
        FaultKind::Isolate,
        FaultKind::Halves,
        FaultKind::Bridge,
        FaultKind::Slow,
        FaultKind::FlushCompact,
    ];

    /// Faults run only when asked for by name.
    pub const OPT_IN: [FaultKind; 3] = [FaultKind::Clock, FaultKind::Fsync, FaultKind::Membership];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::KillAll => "kill-all",
            FaultKind::Pause => "pause",
            FaultKind::Restart => "restart",
            FaultKind::Isolate => "isolate",
            FaultKind::Halves => "halves",
            FaultKind::Bridge => "bridge",
            FaultKind::Slow => "slow",
            FaultKind::FlushCompact => "flush-compact",
            FaultKind::Clock => "clock",
            FaultKind::Fsync => "fsync",
            FaultKind::Membership => "membership",
        }
    }
}

impl FromStr for FaultKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        FaultKind::ALL
            .into_iter()
            .chain(FaultKind::OPT_IN)
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = FaultKind::ALL
                    .iter()
                    .chain(&FaultKind::OPT_IN)
                    .map(|k| k.name())
                    .collect();
                format!("unknown fault {s:?}; one of {}", names.join(", "))
            })
    }
}

/// Which nodes each of `nodes` must not reach, for a partition into
/// groups (a node reaches every node it shares a group with).
pub fn blocked_peers(nodes: &[usize], groups: &[Vec<usize>]) -> BTreeMap<usize, Vec<usize>> {
    nodes
        .iter()
        .map(|&a| {
            let blocked = nodes
                .iter()
                .copied()
                .filter(|b| *b != a && !groups.iter().any(|g| g.contains(&a) && g.contains(b)))
                .collect();
            (a, blocked)
        })
        .collect()
}

/// The groups of a network fault on the member nodes `all` (`None`: not
/// a partition). `pick` is the node singled out.
pub fn partition_groups(kind: FaultKind, all: &[usize], pick: usize) -> Option<Vec<Vec<usize>>> {
    let nodes = all.len();
    match kind {
        FaultKind::Isolate => Some(vec![
            vec![pick],
            all.iter().copied().filter(|n| *n != pick).collect(),
        ]),
        FaultKind::Halves => {
            let half = nodes / 2;
            Some(vec![all[..half].to_vec(), all[half..].to_vec()])
        }
        FaultKind::Bridge => {
            // Two halves sharing the middle node.
            let mid = nodes.div_ceil(2);
            Some(vec![all[..mid].to_vec(), all[mid - 1..].to_vec()])
        }
        _ => None,
    }
}

fn post_faults(admin: SocketAddr, rules: &FaultRules) -> Result<()> {
    let body = serde_json::to_vec(rules).map_err(|e| Error::Cluster(e.to_string()))?;
    match gyre_node::http::request(admin, "POST", "/faults", Some(&body), ADMIN_TIMEOUT)? {
        (200, _) => Ok(()),
        (s, b) => Err(Error::Cluster(format!(
            "{admin}/faults: HTTP {s}: {}",
            b.trim()
        ))),
    }
}

fn admin_post(admin: SocketAddr, path: &str) -> Result<()> {
    admin_post_body(admin, path, None)
}

fn admin_post_body(admin: SocketAddr, path: &str, body: Option<&[u8]>) -> Result<()> {
    match gyre_node::http::request(admin, "POST", path, body, Duration::from_secs(120))? {
        (200, _) => Ok(()),
        (s, b) => Err(Error::Cluster(format!(
            "{admin}{path}: HTTP {s}: {}",
            b.trim()
        ))),
    }
}

/// The storage failpoints of the `fsync` fault.
const FSYNC_FAILPOINTS: [&str; 2] = [
    gyre_node::failpoints::COMMITLOG_FSYNC,
    gyre_node::failpoints::SSTABLE_FSYNC,
];

/// Makes every fsync of one node fail. A binary without failpoints answers
/// 501: an error, so that the run does not pass having injected nothing.
fn fail_fsync(admin: SocketAddr) -> Result<()> {
    for name in FSYNC_FAILPOINTS {
        let body = serde_json::json!({ "name": name, "actions": "return" }).to_string();
        match gyre_node::http::request(
            admin,
            "POST",
            "/failpoints",
            Some(body.as_bytes()),
            ADMIN_TIMEOUT,
        )? {
            (200, _) => {}
            (501, b) => {
                return Err(Error::Cluster(format!(
                    "the fsync fault needs failpoints, but {admin} says: {}",
                    b.trim()
                )))
            }
            (s, b) => {
                return Err(Error::Cluster(format!(
                    "{admin}/failpoints: HTTP {s}: {}",
                    b.trim()
                )))
            }
        }
    }
    Ok(())
}

/// Clears every node's fault rules and failpoints (nodes that do not answer
/// are skipped: a restarted node starts without either).
pub fn clear_faults(c: &LocalCluster) {
    for n in c.members() {
        if let Ok(a) = c.layout.admin_addr(n) {
            let _ = gyre_node::http::request(a, "DELETE", "/faults", None, ADMIN_TIMEOUT);
            let _ = gyre_node::http::request(a, "DELETE", "/failpoints", None, ADMIN_TIMEOUT);
        }
    }
}

/// Applies a partition into `groups` (see [`blocked_peers`]).
pub fn partition(c: &LocalCluster, groups: &[Vec<usize>]) -> Result<()> {
    for (node, blocked) in blocked_peers(&c.members(), groups) {
        let mut rules = FaultRules::default();
        for b in blocked {
            rules.peers.insert(
                c.layout.internode_addr(b)?,
                LinkFaults {
                    drop_all: true,
                    ..LinkFaults::default()
                },
            );
        }
        post_faults(c.layout.admin_addr(node)?, &rules)?;
    }
    Ok(())
}

/// What one window of the membership fault does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    Join,
    /// Kill a node, then `removenode` it from another.
    Remove,
    Decommission,
}

/// The change of membership window `step` (0, 1, ...) on a cluster of
/// `members` nodes with replication factor `rf`: join, remove, join,
/// decommission, in turn; a join whenever a node leaving would leave fewer
/// than `rf` nodes (or only the seed would be left to take out).
pub fn membership_plan(step: usize, members: usize, rf: usize) -> MembershipChange {
    const TURN: [MembershipChange; 4] = [
        MembershipChange::Join,
        MembershipChange::Remove,
        MembershipChange::Join,
        MembershipChange::Decommission,
    ];
    if members <= rf.max(1) {
        MembershipChange::Join
    } else {
        TURN[step % TURN.len()]
    }
}

/// Runs the membership fault's window `step` on the cluster (updating its
/// layout): waits until every member is UP and NORMAL (a join or leave is
/// refused while a source is down), then joins a node, kills and removes
/// one, or decommissions one (never the first member, every node's seed).
/// Returns what it did.
pub fn membership_change(
    c: &mut LocalCluster,
    step: usize,
    rf: usize,
    gyre_bin: &Path,
    rng: &mut impl Rng,
    timeout: Duration,
) -> Result<String> {
    c.wait_for(
        "every node UP and NORMAL before a membership change",
        Duration::from_secs(120),
        &[],
        |c| c.all_up_normal(),
    )?;
    let members = c.members();
    let change = membership_plan(step, members.len(), rf);
    let others = &members[1.min(members.len())..];
    // Never empty when a node is to leave: `membership_plan` joins instead.
    let pick = others.get(rng.gen_range(0..others.len().max(1))).copied();
    Ok(match change {
        MembershipChange::Join => {
            let n = c.add_node(gyre_bin, timeout)?;
            format!("node {n} joined")
        }
        MembershipChange::Remove => {
            let n = pick.ok_or_else(|| Error::Cluster("no node to remove".into()))?;
            c.kill_node(n)?;
            c.removenode(n, timeout)?;
            format!("node {n} killed and removed (removenode)")
        }
        MembershipChange::Decommission => {
            let n = pick.ok_or_else(|| Error::Cluster("no node to decommission".into()))?;
            c.decommission(n, timeout)?;
            format!("node {n} decommissioned")
        }
    })
}

/// A fault in progress, remembered so that [`Active::heal`] undoes it.
#[derive(Debug)]
pub struct Active {
    pub kind: FaultKind,
    pub node: usize,
}

impl Active {
    /// Starts `kind` on the cluster (one random node where it matters).
    pub fn start(
        kind: FaultKind,
        c: &LocalCluster,
        gyre_bin: &Path,
        rng: &mut impl Rng,
    ) -> Result<Active> {
        let _ = gyre_bin;
        let members = c.members();
        if members.is_empty() {
            return Err(Error::Cluster("the cluster has no member".into()));
        }
        let node = members[rng.gen_range(0..members.len())];
        match kind {
            FaultKind::Kill => {
                c.kill_node(node)?;
            }
            FaultKind::KillAll => {
                for &n in &members {
                    c.kill_node(n)?;
                }
            }
            FaultKind::Pause => {
                c.signal_node(node, libc::SIGSTOP)?;
            }
            FaultKind::Restart => {
                c.stop_node(node, Duration::from_secs(30))?;
            }
            FaultKind::Isolate | FaultKind::Halves | FaultKind::Bridge => {
                let groups = partition_groups(kind, &members, node)
                    .ok_or_else(|| Error::Cluster("not a partition".into()))?;
                partition(c, &groups)?;
            }
            FaultKind::Slow => {
                let rules = FaultRules {
                    all_peers: LinkFaults {
                        drop_probability: 0.05,
                        extra_latency_ms: 50,
                        ..LinkFaults::default()
                    },
                    ..FaultRules::default()
                };
                for &n in &members {
                    post_faults(c.layout.admin_addr(n)?, &rules)?;
                }
            }
            FaultKind::FlushCompact => {
                for &n in &members {
                    admin_post(c.layout.admin_addr(n)?, "/flush")?;
                    admin_post(c.layout.admin_addr(n)?, "/compact")?;
                }
            }
            FaultKind::Clock => {
                admin_post_body(c.layout.admin_addr(node)?, "/clock", Some(b"5000"))?;
            }
            FaultKind::Fsync => {
                fail_fsync(c.layout.admin_addr(node)?)?;
            }
            FaultKind::Membership => {
                return Err(Error::Cluster(
                    "the membership fault runs through `membership_change`".into(),
                ))
            }
        }
        Ok(Active { kind, node })
    }

    /// Undoes the fault: restarts killed or stopped nodes, resumes paused
    /// ones, clears fault rules.
    pub fn heal(&self, c: &LocalCluster, gyre_bin: &Path) -> Result<()> {
        match self.kind {
            FaultKind::Kill | FaultKind::Restart => {
                c.start_node(self.node, gyre_bin)?;
            }
            FaultKind::KillAll => {
                for n in c.members() {
                    c.start_node(n, gyre_bin)?;
                }
            }
            FaultKind::Pause => {
                c.signal_node(self.node, libc::SIGCONT)?;
            }
            FaultKind::Isolate | FaultKind::Halves | FaultKind::Bridge | FaultKind::Slow => {
                clear_faults(c);
            }
            FaultKind::FlushCompact | FaultKind::Membership => {}
            FaultKind::Clock => {
                admin_post_body(c.layout.admin_addr(self.node)?, "/clock", Some(b"0"))?;
            }
            FaultKind::Fsync => {
                let admin = c.layout.admin_addr(self.node)?;
                let _ =
                    gyre_node::http::request(admin, "DELETE", "/failpoints", None, ADMIN_TIMEOUT);
                // The commitlog refuses writes after a failed fsync until the
                // process restarts (the page cache can no longer be trusted).
                c.kill_node(self.node)?;
                c.start_node(self.node, gyre_bin)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn partitions_block_the_right_links() {
        let iso = partition_groups(FaultKind::Isolate, &[1, 2, 3], 2).unwrap();
        let b = blocked_peers(&[1, 2, 3], &iso);
        assert_eq!(b[&2], vec![1, 3]);
        assert_eq!(b[&1], vec![2]);
        let halves = partition_groups(FaultKind::Halves, &[1, 2, 3, 4], 1).unwrap();
        assert_eq!(halves, vec![vec![1, 2], vec![3, 4]]);
        let bridge = partition_groups(FaultKind::Bridge, &[1, 2, 3, 4, 5], 1).unwrap();
        assert_eq!(bridge, vec![vec![1, 2, 3], vec![3, 4, 5]]);
        let b = blocked_peers(&[1, 2, 3, 4, 5], &bridge);
        assert_eq!(b[&3], Vec::<usize>::new());
        assert_eq!(b[&1], vec![4, 5]);
        // Members after node 2 left and node 5 joined: only they take part.
        let halves = partition_groups(FaultKind::Halves, &[1, 3, 4, 5], 1).unwrap();
        assert_eq!(halves, vec![vec![1, 3], vec![4, 5]]);
        let b = blocked_peers(&[1, 3, 4, 5], &halves);
        assert_eq!(b.keys().copied().collect::<Vec<_>>(), vec![1, 3, 4, 5]);
        assert_eq!(b[&1], vec![4, 5]);
        assert_eq!("membership".parse::<FaultKind>(), Ok(FaultKind::Membership));
        use MembershipChange::*;
        let turns: Vec<_> = (0..5).map(|i| membership_plan(i, 4, 3)).collect();
        assert_eq!(turns, vec![Join, Remove, Join, Decommission, Join]);
        // Never below the replication factor: a join instead.
        assert_eq!(membership_plan(1, 3, 3), Join);
        assert_eq!(membership_plan(3, 3, 3), Join);
        assert_eq!(membership_plan(1, 1, 0), Join);
        assert!(!FaultKind::ALL.contains(&FaultKind::Membership));
        assert_eq!("kill-all".parse::<FaultKind>(), Ok(FaultKind::KillAll));
        assert!("nope".parse::<FaultKind>().is_err());
        assert_eq!("fsync".parse::<FaultKind>(), Ok(FaultKind::Fsync));
        assert!(!FaultKind::ALL.contains(&FaultKind::Fsync));
    }

    /// A node built without failpoints answers 501: the fault must fail,
    /// not pass having injected nothing.
    #[test]
    fn fsync_fault_fails_on_a_binary_without_failpoints() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            // The whole request (headers, then Content-Length bytes): closing
            // with unread bytes would reset the connection under the reply.
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = s.read(&mut buf).unwrap();
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req).to_ascii_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len: usize = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if req.len() >= end + 4 + len {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            let body = "this gyre binary was built without the `failpoints` feature\n";
            write!(
                s,
                "HTTP/1.1 501 Not Implemented\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
        });
        let err = fail_fsync(addr).unwrap_err().to_string();
        server.join().unwrap();
        assert!(err.contains("needs failpoints"), "{err}");
        assert!(err.contains("without the `failpoints` feature"), "{err}");
    }
}
