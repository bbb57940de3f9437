//! Anti-entropy repair of one token range of one table: every replica
//! builds the Merkle leaves of its data there (REPAIR_TREE; see
//! [`crate::repair`]), and for each leaf where they differ the coordinator
//! reads that slice from every replica (READ_RANGE pages), merges each
//! partition (last write wins, tombstones included) and writes to each
//! replica exactly what it lacks, through the normal MUTATION path. Both
//! directions: the coordinator's own replica is repaired like the others.
//!
//! A mismatching leaf that holds more than a few partitions is refined
//! first: every replica builds the leaves of just that slice, deep enough
//! for about one partition per leaf, and only the sub-slices that still
//! differ are read. So the data read and written stays near the data that
//! differs whatever the range's size (a fixed depth read ~20 partitions
//! per differing one on a million-row table).

use std::collections::BTreeMap;

use gyre_common::lww;
use gyre_storage::{ScanRequest, ScanStart};

use super::*;
use crate::repair::{MerkleLeaves, TreeRequest, MAX_DEPTH};

/// How long a replica may take to build its leaves of a range.
const TREE_TIMEOUT: Duration = Duration::from_secs(600);
/// Rows per READ_RANGE page while repairing a slice.
const PAGE_ROWS: usize = 1000;
/// A mismatching leaf with more partitions than this (on some replica) is
/// refined by a second, deeper tree of its slice before any data is read.
const REFINE_ABOVE: u64 = 2;

/// What repairing one range did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeRepair {
    /// Partitions the replicas' trees covered (summed over replicas).
    pub partitions_compared: u64,
    /// Leaves where the replicas disagreed.
    pub mismatched_leaves: u64,
    /// Partitions that differed on at least one replica.
    pub partitions_differing: u64,
    /// Repair writes sent (one per partition and replica that lacked data).
    pub mutations_sent: u64,
    /// Bytes of those writes (encoded mutations).
    pub bytes_sent: u64,
    /// Bytes of partitions other replicas sent (read in mismatching
    /// slices).
    pub bytes_received: u64,
    /// Bytes of the trees other replicas sent.
    pub tree_bytes: u64,
}

impl RangeRepair {
    pub fn add(&mut self, o: &RangeRepair) {
        self.partitions_compared += o.partitions_compared;
        self.mismatched_leaves += o.mismatched_leaves;
        self.partitions_differing += o.partitions_differing;
        self.mutations_sent += o.mutations_sent;
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.tree_bytes += o.tree_bytes;
    }
}

/// Builds `req`'s leaves from the local engine (scans the range).
pub(super) fn build_tree(
    storage: &dyn StorageEngine,
    req: &TreeRequest,
) -> std::result::Result<MerkleLeaves, String> {
    let mut tree = MerkleLeaves::new(req.start, req.end, req.depth);
    for (start, end) in unwrapped(req.start, req.end) {
        let mut request = ScanRequest {
            start: ScanStart::Token(start),
            end,
            filter: ReadFilter::all(),
            max_rows: PAGE_ROWS,
            index: None,
        };
        loop {
            let page = storage
                .scan(req.table, &request, req.now)
                .map_err(|e| e.to_string())?;
            for p in &page.partitions {
                tree.add(p.key.token, &p.key.key, digest(Some(p)).0);
            }
            match page.resume {
                Some(next) => request.start = next,
                None => break,
            }
        }
    }
    Ok(tree)
}

/// `(start, end]` as scan bounds, split in two where it wraps around the
/// ring (`start >= end`; `start == end` is the whole ring).
fn unwrapped(start: Token, end: Token) -> Vec<(Bound<Token>, Bound<Token>)> {
    if start < end {
        vec![(Bound::Excluded(start), Bound::Included(end))]
    } else {
        vec![
            (Bound::Excluded(start), Bound::Unbounded),
            (Bound::Unbounded, Bound::Included(end)),
        ]
    }
}

impl Coordinator {
    /// The token ranges `(start, end]` of `table` this node replicates
    /// (only those it is the primary owner of, with `primary_only`).
    pub fn repair_ranges(&self, table: TableId, primary_only: bool) -> Result<Vec<(Token, Token)>> {
        let ring: Vec<(Token, HostId)> = self.inner.ring.read().ring().to_vec();
        let mut out = Vec::new();
        for (i, (end, owner)) in ring.iter().enumerate() {
            let start = ring[(i + ring.len() - 1) % ring.len()].0;
            let mine = if primary_only {
                *owner == self.local()
            } else {
                let (_, natural, _) = self.plan(table, *end)?;
                natural.iter().any(|t| t.replica.host == self.local())
            };
            if mine {
                out.push((start, *end));
            }
        }
        Ok(out)
    }

    /// The ring's ranges that `(start, end]` overlaps, cut to it.
    pub fn split_by_ring(&self, start: Token, end: Token) -> Vec<(Token, Token)> {
        let tokens: Vec<Token> = self.inner.ring.read().ring().iter().map(|r| r.0).collect();
        let in_range = |t: Token| {
            let w = end.wrapping_sub(start) as u64;
            let p = t.wrapping_sub(start) as u64;
            w == 0 || (p >= 1 && p <= w)
        };
        let mut cuts: Vec<Token> = tokens
            .into_iter()
            .filter(|t| in_range(*t) && *t != end)
            .collect();
        // In walking order from start.
        cuts.sort_by_key(|t| t.wrapping_sub(start) as u64);
        let mut out = Vec::new();
        let mut from = start;
        for c in cuts {
            out.push((from, c));
            from = c;
        }
        out.push((from, end));
        out
    }

    /// Repairs `table` over `(start, end]`, which must lie inside one range
    /// of the ring (see [`Coordinator::split_by_ring`]). Fails, naming it,
    /// when a replica of the range is down.
    pub async fn repair_range(
        &self,
        table: TableId,
        start: Token,
        end: Token,
        depth: u8,
    ) -> Result<RangeRepair> {
        let (_, natural, _) = self.plan(table, end)?;
        if let Some(dead) = natural.iter().find(|t| !t.alive) {
            return Err(CoordinatorError::InvalidRequest(format!(
                "cannot repair range ({start}, {end}]: replica {} ({}) is down",
                dead.replica.host, dead.addr
            )));
        }
        let now = self.inner.clock.now();
        let req = TreeRequest {
            table,
            start,
            end,
            depth,
            now,
        };
        let trees = self.trees(&natural, &req).await?;
        let mut out = RangeRepair {
            partitions_compared: trees.iter().map(MerkleLeaves::partitions).sum(),
            tree_bytes: self.remote_tree_bytes(&natural, &trees),
            ..RangeRepair::default()
        };
        let Some(first) = trees.first() else {
            return Ok(out);
        };
        for leaf in MerkleLeaves::mismatches(&trees) {
            out.mismatched_leaves += 1;
            let (from, to) = first.leaf_range(leaf);
            if from == to {
                // An empty slice ((t, t] would mean the whole ring).
                continue;
            }
            let most = trees.iter().filter_map(|t| t.counts.get(leaf)).max();
            let slices = match most {
                Some(&most) if most > REFINE_ABOVE => {
                    // About one partition per leaf of the slice (a
                    // leaf costs 16 bytes of tree per replica, so
                    // deeper trades tree bytes for fewer neighbours read).
                    let depth = (64 - most.leading_zeros()).min(u32::from(MAX_DEPTH)) as u8;
                    let sub = TreeRequest {
                        start: from,
                        end: to,
                        depth,
                        ..req.clone()
                    };
                    let subtrees = self.trees(&natural, &sub).await?;
                    out.tree_bytes += self.remote_tree_bytes(&natural, &subtrees);
                    let Some(s0) = subtrees.first() else { continue };
                    MerkleLeaves::mismatches(&subtrees)
                        .into_iter()
                        .map(|i| (s0.leaf_range(i), self.sources(&natural, &subtrees, i)))
                        .filter(|((a, b), _)| a != b)
                        .collect()
                }
                _ => vec![((from, to), self.sources(&natural, &trees, leaf))],
            };
            for ((a, b), sources) in slices {
                let slice = self
                    .repair_slice(table, &natural, &sources, a, b, now)
                    .await?;
                out.add(&slice);
            }
        }
        tracing::info!(
            table = %table.0, start, end, replicas = natural.len(),
            compared = out.partitions_compared, mismatched_leaves = out.mismatched_leaves,
            differing = out.partitions_differing, sent = out.bytes_sent,
            "repair session for range finished"
        );
        Ok(out)
    }

    /// Every replica's leaves for `req`, in `natural`'s order.
    async fn trees(&self, natural: &[Target], req: &TreeRequest) -> Result<Vec<MerkleLeaves>> {
        futures::future::try_join_all(natural.iter().map(|t| self.tree_of(t, req))).await
    }

    /// For each replica, the replica whose copy of leaf `i` is read in its
    /// place: replicas whose leaf hashes are equal hold the same data
    /// there, so one copy of each version is read, this node's own where
    /// it has that version.
    fn sources(&self, natural: &[Target], trees: &[MerkleLeaves], i: usize) -> Vec<usize> {
        let hash = |r: usize| trees.get(r).and_then(|t| t.hashes.get(i));
        let local = natural.iter().position(|t| t.replica.host == self.local());
        (0..natural.len())
            .map(|r| match local {
                Some(l) if hash(l) == hash(r) => l,
                _ => (0..=r).find(|&q| hash(q) == hash(r)).unwrap_or(r),
            })
            .collect()
    }

    /// Bytes of the trees that came over the network.
    fn remote_tree_bytes(&self, natural: &[Target], trees: &[MerkleLeaves]) -> u64 {
        natural
            .iter()
            .zip(trees)
            .filter(|(t, _)| t.replica.host != self.local())
            .map(|(_, tree)| 17 + 16 * tree.hashes.len() as u64)
            .sum()
    }

    async fn tree_of(&self, t: &Target, req: &TreeRequest) -> Result<MerkleLeaves> {
        if t.replica.host == self.local() {
            let (storage, req) = (self.inner.storage.clone(), req.clone());
            return self
                .inner
                .runtime
                .spawn_blocking(move || build_tree(storage.as_ref(), &req))
                .await
                .map_err(join_error)?
                .map_err(CoordinatorError::InvalidRequest);
        }
        // A tree of a large range takes long to build, so the request
        // waits long; but a replica that dies meanwhile fails the repair
        // as soon as the failure detector says so.
        let request = self
            .inner
            .messenger
            .request(t.addr, REPAIR_TREE, req.encode(), TREE_TIMEOUT);
        let host = t.replica.host;
        let down = async {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if !self.inner.liveness.is_alive(host) {
                    break;
                }
            }
        };
        futures::pin_mut!(request, down);
        let reply = match futures::future::select(request, down).await {
            futures::future::Either::Left((reply, _)) => reply.map_err(|e| {
                CoordinatorError::InvalidRequest(format!(
                    "repair: replica {} ({}) did not build its tree: {e}",
                    t.replica.host, t.addr
                ))
            })?,
            futures::future::Either::Right(_) => {
                return Err(CoordinatorError::InvalidRequest(format!(
                    "repair: replica {} ({}) went down during the repair",
                    t.replica.host, t.addr
                )))
            }
        };
        let tree = MerkleLeaves::decode(reply).map_err(CoordinatorError::InvalidRequest)?;
        if (tree.start, tree.end, tree.depth) != (req.start, req.end, req.depth) {
            return Err(CoordinatorError::InvalidRequest(format!(
                "repair: replica {} answered a tree of another range",
                t.replica.host
            )));
        }
        Ok(tree)
    }

    /// Reads `(from, to]` from the replicas that are their own source
    /// (`sources[i] == i`), merges each partition and writes every replica
    /// what its source's copy lacks.
    async fn repair_slice(
        &self,
        table: TableId,
        replicas: &[Target],
        sources: &[usize],
        from: Token,
        to: Token,
        now: LocalTime,
    ) -> Result<RangeRepair> {
        let mut out = RangeRepair::default();
        let n = replicas.len();
        let mut versions: BTreeMap<(Token, Bytes), Vec<Option<Partition>>> = BTreeMap::new();
        for (i, t) in replicas.iter().enumerate() {
            if sources.get(i) != Some(&i) {
                continue;
            }
            let remote = t.replica.host != self.local();
            for p in self.read_slice(t, table, from, to, now).await? {
                if remote {
                    out.bytes_received += p.size_estimate() as u64;
                }
                let slot = versions
                    .entry((p.key.token, p.key.key.clone()))
                    .or_insert_with(|| vec![None; n]);
                slot[i] = Some(p);
            }
        }
        let mut writes = Vec::new();
        for vs in versions.into_values() {
            let mut merged: Option<Partition> = None;
            for v in vs.iter().flatten() {
                match &mut merged {
                    None => merged = Some(v.clone()),
                    Some(m) => lww::merge_partitions(m, v.clone()),
                }
            }
            let Some(mut merged) = merged else { continue };
            lww::purge_shadowed(&mut merged);
            let mut differs = false;
            for (i, t) in replicas.iter().enumerate() {
                let copy = vs[sources.get(i).copied().unwrap_or(i)].as_ref();
                if let Some(diff) = crate::read::repair_diff(&merged, copy) {
                    differs = true;
                    let m = Mutation::new(table, diff);
                    out.mutations_sent += 1;
                    out.bytes_sent += m.encoded().len() as u64;
                    let host = t.replica.host;
                    writes.push(
                        self.send_mutation(host, t.addr, &m)
                            .map(move |ok| (host, ok)),
                    );
                }
            }
            out.partitions_differing += u64::from(differs);
        }
        for (host, ok) in futures::future::join_all(writes).await {
            if !ok {
                return Err(CoordinatorError::InvalidRequest(format!(
                    "repair: a write to replica {host} failed"
                )));
            }
        }
        Ok(out)
    }

    /// Every partition (tombstones included) a replica holds in `(from, to]`.
    async fn read_slice(
        &self,
        t: &Target,
        table: TableId,
        from: Token,
        to: Token,
        now: LocalTime,
    ) -> Result<Vec<Partition>> {
        let mut out = Vec::new();
        for (start, end) in unwrapped(from, to) {
            let mut request = ScanRequest {
                start: ScanStart::Token(start),
                end,
                filter: ReadFilter::all(),
                max_rows: PAGE_ROWS,
                index: None,
            };
            loop {
                let cmd = RangeCommand {
                    table,
                    request: request.clone(),
                    now,
                };
                let (_, reply) = self.send_range(t.replica.host, t.addr, cmd).await;
                let super::range::RangeReply::Page(page) = reply else {
                    return Err(CoordinatorError::InvalidRequest(format!(
                        "repair: replica {} ({}) did not answer a range read",
                        t.replica.host, t.addr
                    )));
                };
                out.extend(page.partitions);
                match page.resume {
                    Some(next) => request.start = next,
                    None => break,
                }
            }
        }
        Ok(out)
    }
}
