//! Anti-entropy repair of one token range of one table: every replica
//! builds the Merkle leaves of its data there (REPAIR_TREE; see
//! [`crate::repair`]), and for each leaf where they differ the coordinator
//! reads that slice from every replica (READ_RANGE pages), merges each
//! partition (last write wins, tombstones included) and writes to each
//! replica exactly what it lacks, through the normal MUTATION path. Both
//! directions: the coordinator's own replica is repaired like the others.
//!
//! A mismatching leaf that holds more than a few partitions is refined
//! first, a step at a time: the replicas holding its distinct versions
//! (one per version: replicas whose hashes agreed hold the same data
//! there) build 2^REFINE_DEPTH leaves of just that slice, and only the
//! sub-slices that still differ go on, until each holds about one
//! partition. Each step sends all of a range's slices in one request per
//! replica, and a leaf costs ~9 bytes (hash and varint count), so the tree
//! bytes grow with the differing partitions (about log4 of a leaf's
//! partitions steps of 4 leaves each), not with the table; the data read
//! and written stays near the data that differs.

use std::collections::BTreeMap;

use gyre_common::lww;
use gyre_storage::{ScanRequest, ScanStart};

use super::*;
use crate::repair::{MerkleLeaves, TreeRequest, TreeSlice, MAX_LEAVES, MAX_SLICES};

/// How long a replica may take to build its leaves of a range.
const TREE_TIMEOUT: Duration = Duration::from_secs(600);
/// Rows per READ_RANGE page while repairing a slice.
const PAGE_ROWS: usize = 1000;
/// A mismatching slice with more partitions than this (on some replica) is
/// refined before any data is read.
const REFINE_ABOVE: u64 = 2;
/// Each refinement step cuts a slice into 2^REFINE_DEPTH sub-slices. On
/// 1M rows with 1% differing (scripts/bench-repair.sh) steps of 4 sent
/// 1.79 MiB of trees for 1.57 MiB of differing data, where one deep step
/// from every replica (~2 leaves of 16 bytes per partition of the slice)
/// sent 11.55 MiB.
const REFINE_DEPTH: u8 = 2;
/// Partitions a leaf of a range's first tree aims at (fewer leaves keep
/// agreeing replicas' trees small; refinement splits the mismatching ones).
const TOP_LEAF_PARTITIONS: u128 = 32;
/// Differing slices repaired at once.
const SLICES_IN_FLIGHT: usize = 8;

/// A slice where the replicas' versions differ.
struct Differing {
    from: Token,
    to: Token,
    /// Per replica, the replica whose copy stands for its own (the same
    /// version); `sources[i] == i` for one replica per version.
    sources: Vec<usize>,
    /// The most partitions a version holds there.
    most: u64,
    /// The fewest.
    least: u64,
}

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
    /// Bytes of the Merkle tree requests sent to other replicas and of the
    /// leaves they answered.
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

/// Builds the leaves of every slice of `req` from the local engine (scans
/// each slice).
pub(super) fn build_trees(
    storage: &dyn StorageEngine,
    req: &TreeRequest,
) -> std::result::Result<Vec<MerkleLeaves>, String> {
    req.slices
        .iter()
        .map(|s| build_tree(storage, req.table, req.now, s))
        .collect()
}

fn build_tree(
    storage: &dyn StorageEngine,
    table: TableId,
    now: LocalTime,
    slice: &TreeSlice,
) -> std::result::Result<MerkleLeaves, String> {
    let mut tree = MerkleLeaves::new(slice.start, slice.end, slice.depth);
    for (start, end) in unwrapped(slice.start, slice.end) {
        let mut request = ScanRequest {
            start: ScanStart::Token(start),
            end,
            filter: ReadFilter::all(),
            max_rows: PAGE_ROWS,
            index: None,
        };
        loop {
            let page = storage
                .scan(table, &request, now)
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
        let mut out = RangeRepair::default();
        let everyone: Vec<usize> = (0..natural.len()).collect();
        let top = TreeSlice {
            start,
            end,
            depth: self.top_depth(table, &natural, start, end, depth),
        };
        let mut trees = self
            .slice_trees(table, now, &natural, &[(top, everyone.clone())], &mut out)
            .await?;
        let top_trees = trees.pop().unwrap_or_default();
        out.partitions_compared = top_trees
            .iter()
            .flatten()
            .map(MerkleLeaves::partitions)
            .sum();
        let mut frontier = self.differing(&natural, &everyone, &top_trees);
        out.mismatched_leaves = frontier.len() as u64;
        let mut to_read = Vec::new();
        while !frontier.is_empty() {
            // Refining pays where versions share partitions: not where one
            // is empty there (all of the others' partitions differ).
            let (refine, read): (Vec<Differing>, Vec<Differing>) =
                frontier.into_iter().partition(|d| {
                    d.most > REFINE_ABOVE
                        && d.least > 0
                        && d.to.wrapping_sub(d.from) as u64 >= 1 << REFINE_DEPTH
                });
            to_read.extend(read);
            let requests: Vec<(TreeSlice, Vec<usize>)> = refine
                .iter()
                .map(|d| {
                    let slice = TreeSlice {
                        start: d.from,
                        end: d.to,
                        depth: REFINE_DEPTH,
                    };
                    let own = (0..natural.len()).filter(|&r| d.sources[r] == r).collect();
                    (slice, own)
                })
                .collect();
            let trees = self
                .slice_trees(table, now, &natural, &requests, &mut out)
                .await?;
            frontier = refine
                .iter()
                .zip(&trees)
                .flat_map(|(d, t)| self.differing(&natural, &d.sources, t))
                .collect();
        }
        let natural = &natural;
        let mut repairs = futures::stream::iter(to_read.into_iter().map(|d| async move {
            self.repair_slice(table, natural, &d.sources, d.from, d.to, now)
                .await
        }))
        .buffer_unordered(SLICES_IN_FLIGHT);
        while let Some(slice) = repairs.next().await {
            out.add(&slice?);
        }
        tracing::info!(
            table = %table.0, start, end, replicas = natural.len(),
            compared = out.partitions_compared, mismatched_leaves = out.mismatched_leaves,
            differing = out.partitions_differing, sent = out.bytes_sent,
            tree_bytes = out.tree_bytes, "repair session for range finished"
        );
        Ok(out)
    }

    /// The depth of `(start, end]`'s first tree: about
    /// [`TOP_LEAF_PARTITIONS`] partitions a leaf by this node's estimate of
    /// its partitions there, at most `max` (`max` when this node is no
    /// replica of the range and has no estimate).
    fn top_depth(
        &self,
        table: TableId,
        natural: &[Target],
        start: Token,
        end: Token,
        max: u8,
    ) -> u8 {
        if !natural.iter().any(|t| t.replica.host == self.local()) {
            return max;
        }
        let (Ok(stats), Ok(ranges)) = (
            self.inner.storage.table_stats(table),
            self.repair_ranges(table, false),
        ) else {
            return max;
        };
        // The local partitions spread over the ranges this node replicates.
        let replicated: u128 = ranges
            .iter()
            .map(|&(s, e)| crate::repair::width(s, e))
            .sum();
        if replicated == 0 {
            return max;
        }
        let estimate = (u128::from(stats.estimated_partitions) * crate::repair::width(start, end))
            .div_ceil(replicated);
        let leaves = estimate.div_ceil(TOP_LEAF_PARTITIONS).max(1);
        let depth = 128 - (leaves - 1).leading_zeros();
        depth.min(u32::from(max)) as u8
    }

    /// The leaves of each slice, built by the replicas listed with it:
    /// per slice, per replica (`None` for those not asked). One request per
    /// replica for up to [`MAX_SLICES`] slices; the bytes exchanged with
    /// other replicas are added to `out.tree_bytes`.
    async fn slice_trees(
        &self,
        table: TableId,
        now: LocalTime,
        natural: &[Target],
        slices: &[(TreeSlice, Vec<usize>)],
        out: &mut RangeRepair,
    ) -> Result<Vec<Vec<Option<MerkleLeaves>>>> {
        let per_replica = natural.iter().enumerate().map(|(r, t)| async move {
            let mine: Vec<usize> = (0..slices.len())
                .filter(|&k| slices[k].1.contains(&r))
                .collect();
            let mut got = Vec::with_capacity(mine.len());
            let mut bytes = 0u64;
            let mut rest = &mine[..];
            while !rest.is_empty() {
                // Up to MAX_SLICES slices and MAX_LEAVES leaves a request.
                let (mut n, mut leaves) = (0, 0usize);
                while n < rest.len() && n < MAX_SLICES {
                    let more = 1usize << slices[rest[n]].0.depth;
                    if n > 0 && leaves + more > MAX_LEAVES {
                        break;
                    }
                    leaves += more;
                    n += 1;
                }
                let req = TreeRequest {
                    table,
                    now,
                    slices: rest[..n].iter().map(|&k| slices[k].0).collect(),
                };
                let (trees, b) = self.tree_of(t, &req).await?;
                bytes += b;
                got.extend(rest[..n].iter().copied().zip(trees));
                rest = &rest[n..];
            }
            Ok::<_, CoordinatorError>((r, got, bytes))
        });
        let mut result: Vec<Vec<Option<MerkleLeaves>>> =
            vec![vec![None; natural.len()]; slices.len()];
        for (r, got, bytes) in futures::future::try_join_all(per_replica).await? {
            out.tree_bytes += bytes;
            for (k, tree) in got {
                result[k][r] = Some(tree);
            }
        }
        Ok(result)
    }

    /// The leaves of a slice where versions differ. `parent` gives, per
    /// replica, the replica whose tree stands for its version (`trees`
    /// holds those); each differing leaf gets its own sources: one replica
    /// per distinct version, this node's own where it has that version.
    fn differing(
        &self,
        natural: &[Target],
        parent: &[usize],
        trees: &[Option<MerkleLeaves>],
    ) -> Vec<Differing> {
        let Some(first) = trees.iter().flatten().next() else {
            return Vec::new();
        };
        let tree = |r: usize| parent.get(r).and_then(|&p| trees.get(p)?.as_ref());
        let local = natural.iter().position(|t| t.replica.host == self.local());
        let mut out = Vec::new();
        for i in 0..first.hashes.len() {
            let hash = |r: usize| tree(r).and_then(|t| t.hashes.get(i).copied());
            if (0..natural.len()).all(|r| hash(r) == hash(0)) {
                continue;
            }
            let (from, to) = first.leaf_range(i);
            if from == to {
                // An empty slice ((t, t] would mean the whole ring).
                continue;
            }
            let sources: Vec<usize> = (0..natural.len())
                .map(|r| match local {
                    Some(l) if hash(l) == hash(r) => l,
                    _ => (0..=r).find(|&q| hash(q) == hash(r)).unwrap_or(r),
                })
                .collect();
            let counts = || (0..natural.len()).filter_map(|r| tree(r)?.counts.get(i).copied());
            out.push(Differing {
                from,
                to,
                sources,
                most: counts().max().unwrap_or(0),
                least: counts().min().unwrap_or(0),
            });
        }
        out
    }

    /// Replica `t`'s leaves for `req`, and the bytes that crossed the
    /// network for them (0 for this node's own).
    async fn tree_of(&self, t: &Target, req: &TreeRequest) -> Result<(Vec<MerkleLeaves>, u64)> {
        if t.replica.host == self.local() {
            let (storage, req) = (self.inner.storage.clone(), req.clone());
            let trees = self
                .inner
                .runtime
                .spawn_blocking(move || build_trees(storage.as_ref(), &req))
                .await
                .map_err(join_error)?
                .map_err(CoordinatorError::InvalidRequest)?;
            return Ok((trees, 0));
        }
        // A tree of a large range takes long to build, so the request
        // waits long; but a replica that dies meanwhile fails the repair
        // as soon as the failure detector says so.
        let body = req.encode();
        let sent = body.len() as u64;
        let request = self
            .inner
            .messenger
            .request(t.addr, REPAIR_TREE, body, TREE_TIMEOUT);
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
        let received = reply.len() as u64;
        let trees = req.decode_reply(reply).map_err(|e| {
            CoordinatorError::InvalidRequest(format!(
                "repair: replica {} answered a bad tree: {e}",
                t.replica.host
            ))
        })?;
        Ok((trees, sent + received))
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
