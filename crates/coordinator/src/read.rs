//! The read path as a state machine (Cassandra's `DigestResolver`,
//! `DataResolver`, blocking read repair and short-read protection), free of
//! sockets and timers.
//!
//! 1. One contacted replica is asked for the data, the others for a
//!    [`Digest`] of their result. Once the level's worth of replicas has
//!    answered (the data replica among them) and every digest matches, the
//!    data is the answer.
//! 2. On a mismatch every contacted replica is asked for its data. The
//!    responses are merged with [`gyre_common::lww`], and each responder gets
//!    a repair mutation holding exactly what it lacks of the merged result
//!    ([`repair_diff`]). The answer is returned once enough repairs are
//!    acknowledged that a level's worth of replicas hold it (blocking read
//!    repair: a later read at the same level cannot see older data).
//!
//! **Short reads.** With a row limit each replica returns at most `limit`
//! live rows of *its* data. After merging, rows one replica returned may be
//! deleted by another's tombstones, so the merged result can hold fewer than
//! `limit` live rows although more exist; and rows past the last one a
//! limited replica returned are unconfirmed (that replica may hold a
//! tombstone for them it never sent). So the result is trusted only up to
//! the earliest "last row" among replicas that hit their limit. When fewer
//! than `limit` live rows fall inside that bound, the replicas that hit their
//! limit are asked again with a larger limit (doubling), until the bound
//! holds `limit` live rows or no replica is cut short. Cassandra continues
//! from the last clustering instead of re-reading the prefix; re-reading is
//! simpler and costs only bandwidth.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use gyre_cluster::{HostId, ReplicationStrategy};
use gyre_common::{codec, lww, LocalTime, Partition, Row};
use gyre_storage::ReadFilter;

use crate::consistency::{AckCounter, ConsistencyLevel, ConsistencyRules, Replica};
use crate::error::{CoordinatorError, Result};

/// After this many short-read rounds the result is cut at the confirmed
/// bound instead of asking again.
const MAX_SHORT_READ_ROUNDS: usize = 8;

/// A stable hash of a replica's read result: equal results give equal
/// digests on every node and version (FNV-1a 64 over the codec encoding,
/// range tombstones in a canonical order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Digest(pub u64);

impl Digest {
    pub fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    pub fn from_bytes(b: &[u8]) -> Option<Digest> {
        let a: [u8; 8] = b.try_into().ok()?;
        Some(Digest(u64::from_be_bytes(a)))
    }
}

fn fnv1a(h: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *h ^= u64::from(*b);
        *h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
}

/// The digest of a read result (`None`: the replica has nothing).
pub fn digest(result: Option<&Partition>) -> Digest {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    match result {
        None => fnv1a(&mut h, &[0]),
        Some(p) => {
            fnv1a(&mut h, &[1]);
            // Replicas may hold the same range tombstones in another order.
            let mut rts: Vec<Vec<u8>> = p
                .range_tombstones
                .iter()
                .map(|rt| {
                    let mut b = Vec::new();
                    codec::put_slice(&mut b, &rt.slice);
                    codec::put_deletion(&mut b, &rt.deletion);
                    b
                })
                .collect();
            rts.sort_unstable();
            let mut canon = p.clone();
            canon.range_tombstones.clear();
            let mut buf = Vec::new();
            codec::encode_partition(&mut buf, &canon);
            fnv1a(&mut h, &buf);
            for rt in rts {
                fnv1a(&mut h, &rt);
            }
        }
    }
    Digest(h)
}

fn diff_row(merged: &Row, replica: Option<&Row>) -> Row {
    let mut out = Row::default();
    if merged.deletion.is_some() && merged.deletion != replica.and_then(|r| r.deletion) {
        out.deletion = merged.deletion;
    }
    for (name, cell) in &merged.cells {
        if replica.and_then(|r| r.cells.get(name)) != Some(cell) {
            out.cells.insert(name.clone(), cell.clone());
        }
    }
    out
}

/// What `replica` lacks of `merged` (the reconciliation of every response,
/// `replica`'s included, so any difference is a version `replica` lost to):
/// deletions it does not have and cells whose winning version differs.
/// `None` when it lacks nothing.
pub fn repair_diff(merged: &Partition, replica: Option<&Partition>) -> Option<Partition> {
    let mut out = Partition::new(merged.key.clone());
    if merged.deletion.is_some() && merged.deletion != replica.and_then(|r| r.deletion) {
        out.deletion = merged.deletion;
    }
    for rt in &merged.range_tombstones {
        if !replica.is_some_and(|r| r.range_tombstones.contains(rt)) {
            out.range_tombstones.push(rt.clone());
        }
    }
    if let Some(s) = &merged.static_row {
        let d = diff_row(s, replica.and_then(|r| r.static_row.as_ref()));
        if !d.is_empty() {
            out.static_row = Some(d);
        }
    }
    for (ck, row) in &merged.rows {
        let d = diff_row(row, replica.and_then(|r| r.rows.get(ck)));
        if !d.is_empty() {
            out.rows.insert(ck.clone(), d);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// A replica's answer to a read request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadResponse {
    Data(Option<Partition>),
    Digest(Digest),
    /// The replica refused the read, with Cassandra's failure reason code
    /// (e.g. [`crate::READ_TOO_MANY_TOMBSTONES`]).
    Failed(u16),
}

/// What the caller must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadAction {
    /// Wait for more responses (or the timeout).
    Wait,
    /// Ask these replicas for their full data with these filters; feed the
    /// answers to [`ReadTracker::on_response`].
    RequestData(Vec<(HostId, ReadFilter)>),
    /// Send these repair mutations; feed acknowledgements to
    /// [`ReadTracker::repair_acked`].
    Repair(Vec<(HostId, Partition)>),
    /// The answer, in storage read-result form (tombstones in the selection
    /// kept; [`lww::live_view`] gives what a client sees).
    Done(Option<Partition>),
    /// Too many replicas failed for the level to be reached: each failed
    /// replica with its reason code (the read fails with ReadFailure).
    Failed(Vec<(HostId, u16)>),
}

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    Digest,
    Data,
    Repair,
    Done,
    /// Failed replicas made the level unreachable.
    Failed,
}

/// Tracks one partition read at one consistency level.
#[derive(Debug)]
pub struct ReadTracker {
    cl: ConsistencyLevel,
    strategy: ReplicationStrategy,
    local_dc: String,
    filter: ReadFilter,
    now: LocalTime,
    contacted: Vec<Replica>,
    phase: Phase,
    responded: HashSet<HostId>,
    digests: HashMap<HostId, Digest>,
    data: HashMap<HostId, Option<Partition>>,
    counter: AckCounter,
    /// The row limit each replica's current data response was read with.
    limits: HashMap<HostId, Option<usize>>,
    /// Replicas a short-read round still waits for.
    awaiting: HashSet<HostId>,
    rounds: usize,
    result: Option<Option<Partition>>,
    /// Replicas that refused the read, with their reason codes.
    failures: Vec<(HostId, u16)>,
}

impl ReadTracker {
    /// `contacted` are the replicas the read goes to (see
    /// [`ConsistencyLevel::filter_for_read`]); the first gets the data
    /// request, the others digest requests.
    pub fn new(
        cl: ConsistencyLevel,
        strategy: &ReplicationStrategy,
        local_dc: &str,
        contacted: Vec<Replica>,
        filter: ReadFilter,
        now: LocalTime,
    ) -> Result<Self> {
        cl.validate_for_read()?;
        if contacted.is_empty() {
            return Err(CoordinatorError::InvalidRequest(
                "a read needs at least one replica".into(),
            ));
        }
        Ok(ReadTracker {
            cl,
            strategy: strategy.clone(),
            local_dc: local_dc.to_string(),
            filter,
            now,
            counter: AckCounter::new(cl, strategy, local_dc, &[]),
            contacted,
            phase: Phase::Digest,
            responded: HashSet::new(),
            digests: HashMap::new(),
            data: HashMap::new(),
            limits: HashMap::new(),
            awaiting: HashSet::new(),
            rounds: 0,
            result: None,
            failures: Vec::new(),
        })
    }

    /// Adds a replica to a read still in its digest phase (speculative
    /// retry: one contacted replica is slow). Its answer, data or digest,
    /// counts like any other. False when nothing was added (a later phase,
    /// or the replica is already contacted).
    pub fn speculate(&mut self, extra: Replica) -> bool {
        if self.phase != Phase::Digest || self.contacted.iter().any(|r| r.host == extra.host) {
            return false;
        }
        self.contacted.push(extra);
        true
    }

    pub fn data_replica(&self) -> HostId {
        self.contacted[0].host
    }

    pub fn digest_replicas(&self) -> Vec<HostId> {
        self.contacted[1..].iter().map(|r| r.host).collect()
    }

    pub fn filter(&self) -> &ReadFilter {
        &self.filter
    }

    pub fn block_for(&self) -> usize {
        self.counter.block_for()
    }

    fn dc_of(&self, host: HostId) -> Option<String> {
        self.contacted
            .iter()
            .find(|r| r.host == host)
            .map(|r| r.dc.clone())
    }

    /// Feeds one replica's answer in.
    pub fn on_response(&mut self, from: HostId, response: ReadResponse) -> ReadAction {
        let Some(dc) = self.dc_of(from) else {
            tracing::debug!(%from, "read response from a replica that was not contacted");
            return ReadAction::Wait;
        };
        if let ReadResponse::Failed(reason) = response {
            return self.on_failure(from, reason);
        }
        match self.phase {
            Phase::Digest => {
                match response {
                    ReadResponse::Data(p) => {
                        // A digest only matters when another replica's
                        // answer will be compared with it.
                        if self.contacted.len() > 1 {
                            self.digests.insert(from, digest(p.as_ref()));
                        }
                        self.limits.insert(from, self.filter.limit);
                        self.data.insert(from, p);
                    }
                    ReadResponse::Digest(d) => {
                        self.digests.insert(from, d);
                    }
                    ReadResponse::Failed(_) => return ReadAction::Wait, // handled above
                }
                if self.responded.insert(from) {
                    self.counter.add(&dc);
                }
                if !self.counter.satisfied() || self.data.is_empty() {
                    return ReadAction::Wait;
                }
                let mut ds = self.digests.values();
                let first = ds.next().copied();
                if ds.all(|d| Some(*d) == first) {
                    let result = self.data.values().next().cloned().flatten();
                    return self.finish(result);
                }
                tracing::debug!(cl = %self.cl, "digest mismatch, reading full data");
                self.phase = Phase::Data;
                self.counter = AckCounter::new(self.cl, &self.strategy, &self.local_dc, &[]);
                self.responded.clear();
                let have: Vec<HostId> = self.data.keys().copied().collect();
                for h in have {
                    self.responded.insert(h);
                    if let Some(dc) = self.dc_of(h) {
                        self.counter.add(&dc);
                    }
                }
                let requests: Vec<(HostId, ReadFilter)> = self
                    .contacted
                    .iter()
                    .filter(|r| !self.data.contains_key(&r.host))
                    .map(|r| (r.host, self.filter.clone()))
                    .collect();
                if self.counter.satisfied() {
                    // Only possible with one contacted replica; resolve now.
                    return self.resolve();
                }
                ReadAction::RequestData(requests)
            }
            Phase::Data => {
                let ReadResponse::Data(p) = response else {
                    return ReadAction::Wait; // a late digest
                };
                if self.rounds == 0 {
                    self.limits.insert(from, self.filter.limit);
                    self.data.insert(from, p);
                    if self.responded.insert(from) {
                        self.counter.add(&dc);
                    }
                    if self.counter.satisfied() {
                        return self.resolve();
                    }
                } else if self.awaiting.remove(&from) {
                    self.data.insert(from, p);
                    if self.awaiting.is_empty() {
                        return self.resolve();
                    }
                }
                ReadAction::Wait
            }
            Phase::Repair | Phase::Done | Phase::Failed => ReadAction::Wait,
        }
    }

    /// Merges the data responses; asks for more on a short read, else
    /// computes repairs.
    fn resolve(&mut self) -> ReadAction {
        let mut merged: Option<Partition> = None;
        for p in self.data.values().flatten() {
            match &mut merged {
                None => merged = Some(p.clone()),
                Some(m) => lww::merge_partitions(m, p.clone()),
            }
        }
        let Some(mut merged) = merged else {
            return self.finish(None);
        };
        lww::purge_shadowed(&mut merged);
        if let Some(limit) = self.filter.limit {
            if let Some(more) = self.short_read_check(&mut merged, limit) {
                return more;
            }
        }
        let result = gyre_storage::finish_read(merged, &self.filter, self.now);
        let mut repairs = Vec::new();
        let mut counter = AckCounter::new(self.cl, &self.strategy, &self.local_dc, &[]);
        for r in &self.contacted {
            let Some(resp) = self.data.get(&r.host) else {
                continue;
            };
            let diff = match &result {
                Some(m) => repair_diff(m, resp.as_ref()),
                None => None,
            };
            match diff {
                Some(d) => repairs.push((r.host, d)),
                None => counter.add(&r.dc),
            }
        }
        if repairs.is_empty() || counter.satisfied() {
            // Enough replicas already agree; repairs go out without waiting.
            self.result = Some(result.clone());
            self.phase = Phase::Done;
            if repairs.is_empty() {
                return ReadAction::Done(result);
            }
        } else {
            self.phase = Phase::Repair;
            self.result = Some(result);
        }
        self.counter = counter;
        self.awaiting = repairs.iter().map(|(h, _)| *h).collect();
        ReadAction::Repair(repairs)
    }

    /// `Some(RequestData)` when replicas must be asked for more rows;
    /// otherwise cuts `merged` to the confirmed bound when needed.
    fn short_read_check(&mut self, merged: &mut Partition, limit: usize) -> Option<ReadAction> {
        let reversed = self.filter.reversed;
        let now = self.now;
        let mut cut_short: Vec<(HostId, usize, Bytes)> = Vec::new();
        for (h, resp) in &self.data {
            let asked = self.limits.get(h).copied().flatten().unwrap_or(limit);
            let Some(p) = resp else { continue };
            let live = p.rows.values().filter(|r| r.is_live(now)).count();
            let last = if reversed {
                p.rows.keys().next()
            } else {
                p.rows.keys().next_back()
            };
            if let (true, Some(last)) = (live >= asked, last) {
                cut_short.push((*h, asked, last.clone()));
            }
        }
        let bound = if reversed {
            cut_short.iter().map(|c| &c.2).max()
        } else {
            cut_short.iter().map(|c| &c.2).min()
        }?
        .clone();
        let inside = |ck: &Bytes| if reversed { *ck >= bound } else { *ck <= bound };
        let live = merged
            .rows
            .iter()
            .filter(|(ck, r)| inside(ck) && r.is_live(now))
            .count();
        if live >= limit {
            return None;
        }
        if self.rounds >= MAX_SHORT_READ_ROUNDS {
            tracing::warn!(
                rounds = self.rounds,
                "short read: giving up, returning the confirmed rows"
            );
            merged.rows.retain(|ck, _| inside(ck));
            return None;
        }
        self.rounds += 1;
        self.phase = Phase::Data;
        let mut requests = Vec::new();
        self.awaiting.clear();
        for (h, asked, _) in cut_short {
            let more = (asked * 2).max(asked + (limit - live));
            let mut f = self.filter.clone();
            f.limit = Some(more);
            self.limits.insert(h, Some(more));
            self.awaiting.insert(h);
            requests.push((h, f));
        }
        tracing::debug!(
            live,
            limit,
            round = self.rounds,
            "short read, asking for more rows"
        );
        Some(ReadAction::RequestData(requests))
    }

    fn finish(&mut self, result: Option<Partition>) -> ReadAction {
        self.phase = Phase::Done;
        self.result = Some(result.clone());
        ReadAction::Done(result)
    }

    /// Records a repair acknowledgement; `Done` once enough replicas hold
    /// the result.
    pub fn repair_acked(&mut self, from: HostId) -> ReadAction {
        if !self.awaiting.remove(&from) {
            return ReadAction::Wait;
        }
        if self.phase != Phase::Repair {
            return ReadAction::Wait;
        }
        if let Some(dc) = self.dc_of(from) {
            self.counter.add(&dc);
        }
        if self.counter.satisfied() {
            let result = self.result.take().flatten();
            return self.finish(result);
        }
        ReadAction::Wait
    }

    /// A repair write to `from` failed or timed out. Cassandra 4 does not
    /// let one slow replica fail the read then: the merged result goes to
    /// `extra` (a live replica not contacted yet, when there is one), whose
    /// acknowledgement counts instead. `Repair` with that one write, else
    /// `Wait` (the read times out if no other repair completes it).
    pub fn repair_failed(&mut self, from: HostId, extra: Option<Replica>) -> ReadAction {
        if self.phase != Phase::Repair || !self.awaiting.remove(&from) {
            return ReadAction::Wait;
        }
        let (Some(extra), Some(Some(result))) = (extra, self.result.as_ref()) else {
            return ReadAction::Wait;
        };
        if self.dc_of(extra.host).is_some() {
            return ReadAction::Wait; // already contacted
        }
        let write = (extra.host, result.clone());
        self.awaiting.insert(extra.host);
        self.contacted.push(extra);
        ReadAction::Repair(vec![write])
    }

    /// A replica refused the read. As Cassandra's `ReadCallback.onFailure`:
    /// the read fails once the replicas that have not failed cannot reach
    /// the level; a replica a short-read round waits for fails it at once.
    fn on_failure(&mut self, from: HostId, reason: u16) -> ReadAction {
        if matches!(self.phase, Phase::Done | Phase::Failed)
            || self.failures.iter().any(|(h, _)| *h == from)
        {
            return ReadAction::Wait;
        }
        self.failures.push((from, reason));
        let awaited = self.awaiting.remove(&from);
        if awaited || self.failures.len() + self.counter.block_for() > self.contacted.len() {
            self.phase = Phase::Failed;
            return ReadAction::Failed(self.failures.clone());
        }
        ReadAction::Wait
    }

    /// How many replicas answered (for a ReadFailure's `received`).
    pub fn received(&self) -> usize {
        self.counter.received()
    }

    /// True when the data replica answered (for a ReadFailure).
    pub fn data_present(&self) -> bool {
        !self.data.is_empty()
    }

    /// The replicas contacted so far (extra repair targets included).
    pub fn contacted(&self) -> impl Iterator<Item = HostId> + '_ {
        self.contacted.iter().map(|r| r.host)
    }

    /// True when the answer is known.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The answer, once known. After [`ReadAction::Repair`] it may already
    /// be known (enough replicas agreed without repair): send the repairs
    /// without waiting for them then.
    pub fn answer(&self) -> Option<Option<Partition>> {
        if self.phase == Phase::Done {
            self.result.clone()
        } else {
            None
        }
    }

    /// The deadline passed (or no request is outstanding): the answer if it
    /// is known, else `ReadTimeout`.
    pub fn timeout(&mut self) -> Result<Option<Partition>> {
        if self.phase == Phase::Done {
            return Ok(self.result.clone().flatten());
        }
        let data_present = match self.phase {
            Phase::Digest => !self.data.is_empty(),
            _ => true,
        };
        Err(CoordinatorError::ReadTimeout {
            consistency: self.cl,
            received: self.counter.received(),
            block_for: self.counter.block_for(),
            data_present,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gyre_common::{Cell, CellName, Deletion, Slice};
    use ConsistencyLevel::*;

    fn reps(n: usize) -> Vec<Replica> {
        (0..n)
            .map(|_| Replica::new(HostId::new_v4(), "dc1"))
            .collect()
    }

    fn tracker(cl: ConsistencyLevel, r: &[Replica], filter: ReadFilter) -> ReadTracker {
        ReadTracker::new(
            cl,
            &ReplicationStrategy::simple(3),
            "dc1",
            r.to_vec(),
            filter,
            0,
        )
        .expect("valid")
    }

    fn replica_read(full: &Partition, filter: &ReadFilter) -> Option<Partition> {
        gyre_storage::finish_read(full.clone(), filter, 0)
    }

    fn cell(ts: i64, v: &str) -> Cell {
        Cell::live(ts, v.to_string())
    }

    #[test]
    fn digest_is_canonical() {
        let a = Partition::with_key("k")
            .set("r", CellName::simple("c"), cell(1, "v"))
            .delete_range(Slice::prefix("a"), Deletion::new(1, 1))
            .delete_range(Slice::prefix("b"), Deletion::new(2, 1));
        let mut b = a.clone();
        b.range_tombstones.reverse();
        assert_eq!(digest(Some(&a)), digest(Some(&b)));
        let c = a.clone().set("r", CellName::simple("c"), cell(2, "v"));
        assert_ne!(digest(Some(&a)), digest(Some(&c)));
        assert_ne!(digest(None), digest(Some(&Partition::with_key("k"))));
        assert_eq!(
            Digest::from_bytes(&digest(Some(&a)).to_bytes()),
            Some(digest(Some(&a)))
        );
    }

    #[test]
    fn matching_digests_answer_without_repair() {
        let r = reps(2);
        let p = Partition::with_key("k").set("r", CellName::simple("c"), cell(1, "v"));
        let mut t = tracker(Quorum, &r, ReadFilter::all());
        assert_eq!(t.data_replica(), r[0].host);
        assert_eq!(
            t.on_response(r[1].host, ReadResponse::Digest(digest(Some(&p)))),
            ReadAction::Wait
        );
        assert_eq!(
            t.on_response(r[0].host, ReadResponse::Data(Some(p.clone()))),
            ReadAction::Done(Some(p))
        );
    }

    #[test]
    fn a_failed_replica_fails_the_read_once_the_level_is_out_of_reach() {
        let r = reps(3);
        let p = Partition::with_key("k").set("r", CellName::simple("c"), cell(1, "v"));
        // QUORUM of RF 3 asks two: one failure leaves one, too few.
        let mut t = tracker(Quorum, &r[..2], ReadFilter::all());
        assert_eq!(
            t.on_response(
                r[1].host,
                ReadResponse::Failed(crate::READ_TOO_MANY_TOMBSTONES)
            ),
            ReadAction::Failed(vec![(r[1].host, crate::READ_TOO_MANY_TOMBSTONES)])
        );
        // Later answers change nothing, and the deadline does not turn the
        // failure into an answer.
        assert_eq!(
            t.on_response(r[0].host, ReadResponse::Data(Some(p.clone()))),
            ReadAction::Wait
        );
        assert!(t.answer().is_none());
        assert!(matches!(
            t.timeout(),
            Err(CoordinatorError::ReadTimeout { .. })
        ));
        // A third (speculative) replica leaves room for one failure.
        let mut t = tracker(Quorum, &r[..2], ReadFilter::all());
        assert!(t.speculate(r[2].clone()));
        assert_eq!(
            t.on_response(
                r[1].host,
                ReadResponse::Failed(crate::READ_TOO_MANY_TOMBSTONES)
            ),
            ReadAction::Wait
        );
        assert_eq!(
            t.on_response(r[2].host, ReadResponse::Data(Some(p.clone()))),
            ReadAction::Wait
        );
        assert_eq!(
            t.on_response(r[0].host, ReadResponse::Data(Some(p.clone()))),
            ReadAction::Done(Some(p))
        );
    }

    #[test]
    fn missing_data_replica_times_out_without_data() {
        let r = reps(2);
        let mut t = tracker(Quorum, &r, ReadFilter::all());
        t.on_response(r[1].host, ReadResponse::Digest(digest(None)));
        match t.timeout() {
            Err(CoordinatorError::ReadTimeout {
                consistency,
                received,
                block_for,
                data_present,
            }) => assert_eq!(
                (consistency, received, block_for, data_present),
                (Quorum, 1, 2, false)
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mismatch_reads_data_merges_and_repairs() {
        let r = reps(2);
        let newer = Partition::with_key("k")
            .set("r1", CellName::simple("c"), cell(5, "new"))
            .delete_row("r2", Deletion::new(4, 1));
        let older = Partition::with_key("k")
            .set("r1", CellName::simple("c"), cell(1, "old"))
            .set("r2", CellName::simple("c"), cell(1, "gone"))
            .set("r3", CellName::simple("c"), cell(1, "only-here"));
        let mut t = tracker(Quorum, &r, ReadFilter::all());
        assert_eq!(
            t.on_response(r[0].host, ReadResponse::Data(Some(newer.clone()))),
            ReadAction::Wait
        );
        let act = t.on_response(r[1].host, ReadResponse::Digest(digest(Some(&older))));
        assert_eq!(
            act,
            ReadAction::RequestData(vec![(r[1].host, ReadFilter::all())])
        );
        let act = t.on_response(r[1].host, ReadResponse::Data(Some(older.clone())));
        let ReadAction::Repair(repairs) = act else {
            panic!("{act:?}")
        };
        assert!(!t.is_done());
        let to0 = repairs.iter().find(|(h, _)| *h == r[0].host).expect("r0");
        let to1 = repairs.iter().find(|(h, _)| *h == r[1].host).expect("r1");
        // r0 lacks only r3; r1 lacks the new r1 value and r2's deletion.
        assert_eq!(
            to0.1.rows.keys().collect::<Vec<_>>(),
            vec![&Bytes::from("r3")]
        );
        assert_eq!(
            to1.1
                .rows
                .get(&Bytes::from("r1"))
                .and_then(|r| r.cells.get(&CellName::simple("c"))),
            Some(&cell(5, "new"))
        );
        assert_eq!(
            to1.1.rows.get(&Bytes::from("r2")).and_then(|r| r.deletion),
            Some(Deletion::new(4, 1))
        );
        assert!(!to1.1.rows.contains_key(&Bytes::from("r3")));
        assert_eq!(t.repair_acked(r[0].host), ReadAction::Wait);
        let ReadAction::Done(Some(result)) = t.repair_acked(r[1].host) else {
            panic!("not done")
        };
        let live = lww::live_view(&result, 0);
        assert_eq!(live.rows.len(), 2);
        assert_eq!(
            live.rows[&Bytes::from("r1")].cells[&CellName::simple("c")],
            cell(5, "new")
        );
        // Applying the repairs makes both replicas equal to the result.
        for (full, (_, rep)) in [(&newer, to0), (&older, to1)] {
            let mut fixed = full.clone();
            lww::merge_partitions(&mut fixed, rep.clone());
            let fixed = replica_read(&fixed, &ReadFilter::all());
            assert_eq!(digest(fixed.as_ref()), digest(Some(&result)));
        }
    }

    #[test]
    fn a_failed_repair_write_goes_to_an_extra_replica_instead() {
        let r = reps(3);
        let a = Partition::with_key("k").set("r", CellName::simple("c"), cell(2, "a"));
        let b = Partition::with_key("k").set("r", CellName::simple("c"), cell(1, "b"));
        // QUORUM of RF 3 contacts two; the third is the spare.
        let mut t = tracker(Quorum, &r[..2], ReadFilter::all());
        t.on_response(r[0].host, ReadResponse::Data(Some(a.clone())));
        let act = t.on_response(r[1].host, ReadResponse::Digest(digest(Some(&b))));
        assert!(matches!(act, ReadAction::RequestData(_)));
        let act = t.on_response(r[1].host, ReadResponse::Data(Some(b)));
        assert!(matches!(act, ReadAction::Repair(ref v) if v.len() == 1 && v[0].0 == r[1].host));
        // The stale replica's repair fails: the result goes to r[2].
        let act = t.repair_failed(r[1].host, Some(r[2].clone()));
        let ReadAction::Repair(extra) = act else {
            panic!("{act:?}")
        };
        assert_eq!(extra.len(), 1);
        assert_eq!(extra[0].0, r[2].host);
        assert_eq!(
            digest(replica_read(&extra[0].1, &ReadFilter::all()).as_ref()),
            digest(Some(&a)),
            "the whole merged result"
        );
        assert_eq!(t.contacted().count(), 3);
        // A late ack from the failed one does not count twice; r[2]'s does.
        assert_eq!(t.repair_acked(r[1].host), ReadAction::Wait);
        let ReadAction::Done(Some(result)) = t.repair_acked(r[2].host) else {
            panic!("not done")
        };
        assert_eq!(digest(Some(&result)), digest(Some(&a)));
        // Without a spare, a failed repair leaves the read to time out.
        let mut t = tracker(All, &r, ReadFilter::all());
        t.on_response(r[0].host, ReadResponse::Data(Some(a.clone())));
        t.on_response(r[1].host, ReadResponse::Data(Some(a.clone())));
        t.on_response(r[2].host, ReadResponse::Data(None));
        assert_eq!(t.repair_failed(r[2].host, None), ReadAction::Wait);
        assert!(t.timeout().is_err());
    }

    #[test]
    fn repair_timeout_is_a_read_timeout_with_data() {
        let r = reps(3);
        let a = Partition::with_key("k").set("r", CellName::simple("c"), cell(2, "a"));
        let b = Partition::with_key("k").set("r", CellName::simple("c"), cell(1, "b"));
        let mut t = tracker(All, &r, ReadFilter::all());
        t.on_response(r[0].host, ReadResponse::Data(Some(a.clone())));
        t.on_response(r[1].host, ReadResponse::Digest(digest(Some(&b))));
        let act = t.on_response(r[2].host, ReadResponse::Digest(digest(Some(&a))));
        assert!(matches!(act, ReadAction::RequestData(ref v) if v.len() == 2));
        t.on_response(r[1].host, ReadResponse::Data(Some(b)));
        let act = t.on_response(r[2].host, ReadResponse::Data(Some(a)));
        assert!(matches!(act, ReadAction::Repair(ref v) if v.len() == 1));
        assert!(matches!(
            t.timeout(),
            Err(CoordinatorError::ReadTimeout {
                data_present: true,
                block_for: 3,
                received: 2,
                ..
            })
        ));
    }

    #[test]
    fn repair_not_awaited_when_enough_replicas_agree() {
        let r = reps(3);
        let a = Partition::with_key("k").set("r", CellName::simple("c"), cell(2, "a"));
        let mut t = tracker(Quorum, &r, ReadFilter::all());
        // Data replica stale (nothing), two up to date replicas in data phase.
        t.on_response(r[0].host, ReadResponse::Data(None));
        let act = t.on_response(r[1].host, ReadResponse::Digest(digest(Some(&a))));
        assert!(matches!(act, ReadAction::RequestData(_)));
        t.on_response(r[1].host, ReadResponse::Data(Some(a.clone())));
        // r0 (empty) and r1 answered: r0 needs repair, only r1 agrees: wait.
        assert!(!t.is_done());
        let act = t.on_response(r[2].host, ReadResponse::Data(Some(a.clone())));
        // Late third answer is ignored in this phase.
        assert_eq!(act, ReadAction::Wait);
        assert_eq!(t.repair_acked(r[0].host), ReadAction::Done(Some(a)));
    }

    fn limited(limit: usize) -> ReadFilter {
        ReadFilter {
            limit: Some(limit),
            ..ReadFilter::all()
        }
    }

    /// Drives a tracker to its answer, serving requests from full replica data.
    fn drive(t: &mut ReadTracker, r: &[Replica], full: &[Partition]) -> (Option<Partition>, usize) {
        let f = t.filter().clone();
        let data = t.data_replica();
        let mut actions = Vec::new();
        for (i, rep) in r.iter().enumerate() {
            let resp = replica_read(&full[i], &f);
            actions.push(if rep.host == data {
                t.on_response(rep.host, ReadResponse::Data(resp))
            } else {
                t.on_response(rep.host, ReadResponse::Digest(digest(resp.as_ref())))
            });
        }
        let mut rounds = 0;
        let mut queue: Vec<ReadAction> = actions;
        while let Some(a) = queue.pop() {
            match a {
                ReadAction::Wait => {}
                ReadAction::Done(p) => return (p, rounds),
                ReadAction::Failed(f) => panic!("no replica fails here: {f:?}"),
                ReadAction::RequestData(reqs) => {
                    rounds += 1;
                    for (h, f) in reqs {
                        let i = r.iter().position(|x| x.host == h).expect("known");
                        queue
                            .push(t.on_response(h, ReadResponse::Data(replica_read(&full[i], &f))));
                    }
                }
                ReadAction::Repair(reps) => {
                    for (h, _) in reps {
                        queue.push(t.repair_acked(h));
                    }
                }
            }
        }
        (t.answer().flatten(), rounds)
    }

    fn live_keys(p: &Option<Partition>) -> Vec<String> {
        p.as_ref()
            .map(|p| {
                lww::live_view(p, 0)
                    .rows
                    .keys()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn short_read_fetches_more_when_tombstones_elsewhere_hide_rows() {
        let r = reps(2);
        let c = CellName::simple("c");
        let a = Partition::with_key("k")
            .set("1", c.clone(), cell(1, "x"))
            .set("2", c.clone(), cell(1, "x"))
            .set("3", c.clone(), cell(1, "x"))
            .set("4", c.clone(), cell(1, "x"));
        let b = Partition::with_key("k")
            .delete_row("1", Deletion::new(2, 0))
            .delete_row("2", Deletion::new(2, 0))
            .set("3", c.clone(), cell(1, "x"))
            .set("4", c.clone(), cell(1, "x"));
        let mut t = tracker(Quorum, &r, limited(2));
        let (got, rounds) = drive(&mut t, &r, &[a, b]);
        assert_eq!(live_keys(&got), vec!["3", "4"]);
        assert!(rounds >= 2, "needed a short-read round");
    }

    #[test]
    fn rows_past_a_limited_replica_are_not_trusted() {
        let r = reps(2);
        let c = CellName::simple("c");
        let a = Partition::with_key("k")
            .set("1", c.clone(), cell(1, "x"))
            .set("2", c.clone(), cell(1, "x"))
            .delete_row("3", Deletion::new(5, 0));
        let b = Partition::with_key("k").set("3", c.clone(), cell(1, "x"));
        for limit in [2, 3, 5] {
            let mut t = tracker(Quorum, &r, limited(limit));
            let (got, _) = drive(&mut t, &r, &[a.clone(), b.clone()]);
            assert_eq!(live_keys(&got), vec!["1", "2"], "limit {limit}");
        }
        // A stops at row 2 (its limit) before its deletion of row 3; B's
        // row 3 must not be returned on B's word alone.
        let a = Partition::with_key("k")
            .set("1", c.clone(), cell(1, "x"))
            .set("2", c.clone(), cell(1, "x"))
            .delete_row("3", Deletion::new(5, 0));
        let b = Partition::with_key("k")
            .delete_row("1", Deletion::new(5, 0))
            .set("3", c.clone(), cell(1, "x"));
        let mut t = tracker(Quorum, &r, limited(2));
        let (got, rounds) = drive(&mut t, &r, &[a, b]);
        assert_eq!(live_keys(&got), vec!["2"]);
        assert!(rounds >= 2, "needed a short-read round");
        // Reversed: the limited replica's earliest row is the bound.
        let rev = ReadFilter {
            reversed: true,
            ..limited(1)
        };
        let a2 = Partition::with_key("k")
            .set("5", c.clone(), cell(1, "x"))
            .delete_row("1", Deletion::new(5, 0));
        let b2 = Partition::with_key("k").set("1", c.clone(), cell(1, "x"));
        let mut t = tracker(Quorum, &r, rev);
        let (got, _) = drive(&mut t, &r, &[a2, b2]);
        assert_eq!(live_keys(&got), vec!["5"]);
    }

    fn random_partition(rng: &mut impl rand::Rng) -> Partition {
        let mut p = Partition::with_key("k");
        let keys = ["a", "b", "c", "d"];
        let cols = ["x", "y"];
        for _ in 0..rng.gen_range(0..8) {
            let ck = keys[rng.gen_range(0..keys.len())];
            let col = CellName::simple(cols[rng.gen_range(0..cols.len())]);
            let ts = rng.gen_range(1..10);
            let c = match rng.gen_range(0..4) {
                0 => Cell::tombstone(ts, 100),
                1 => Cell::expiring(ts, "e", 1000, 0),
                _ => Cell::live(ts, format!("v{}", rng.gen_range(0..3))),
            };
            p = p.set(ck, col, c);
        }
        if rng.gen_bool(0.3) {
            let ck = keys[rng.gen_range(0..keys.len())];
            p = p.delete_row(ck, Deletion::new(rng.gen_range(1..10), 100));
        }
        if rng.gen_bool(0.2) {
            let ck = keys[rng.gen_range(0..keys.len())];
            p = p.delete_range(Slice::prefix(ck), Deletion::new(rng.gen_range(1..10), 100));
        }
        if rng.gen_bool(0.1) {
            p = p.delete_partition(Deletion::new(rng.gen_range(1..6), 100));
        }
        if rng.gen_bool(0.3) {
            p = p.set_static(CellName::simple("s"), Cell::live(rng.gen_range(1..10), "s"));
        }
        p
    }

    /// Applying each replica's repair to its data makes every replica read
    /// back exactly the resolved result.
    #[test]
    fn repairs_converge_every_replica_to_the_result() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let f = ReadFilter::all();
        for _ in 0..500 {
            let stores: Vec<Partition> = (0..3).map(|_| random_partition(&mut rng)).collect();
            let responses: Vec<Option<Partition>> =
                stores.iter().map(|s| replica_read(s, &f)).collect();
            let mut merged = Partition::with_key("k");
            for r in responses.iter().flatten() {
                lww::merge_partitions(&mut merged, r.clone());
            }
            let result = replica_read(&merged, &f);
            for (store, resp) in stores.iter().zip(&responses) {
                let mut fixed = store.clone();
                if let Some(m) = &result {
                    if let Some(d) = repair_diff(m, resp.as_ref()) {
                        lww::merge_partitions(&mut fixed, d);
                    }
                }
                let after = replica_read(&fixed, &f);
                assert_eq!(
                    digest(after.as_ref()),
                    digest(result.as_ref()),
                    "store {store:?}\nafter {after:?}\nresult {result:?}"
                );
            }
        }
    }

    /// With row limits, the coordinated answer is exactly the first `limit`
    /// live rows of the merged truth, whatever each replica held back.
    #[test]
    fn limited_reads_match_the_merged_truth() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let r = reps(3);
        for _ in 0..500 {
            let stores: Vec<Partition> = (0..3).map(|_| random_partition(&mut rng)).collect();
            let filter = ReadFilter {
                limit: Some(rng.gen_range(1..4)),
                reversed: rng.gen_bool(0.5),
                ..ReadFilter::all()
            };
            let mut truth = Partition::with_key("k");
            for s in &stores {
                lww::merge_partitions(&mut truth, s.clone());
            }
            let want = live_keys(&replica_read(&truth, &filter));
            let mut t = tracker(All, &r, filter.clone());
            let (got, _) = drive(&mut t, &r, &stores);
            assert_eq!(live_keys(&got), want, "filter {filter:?} stores {stores:?}");
        }
    }

    #[test]
    fn any_read_is_invalid() {
        let r = reps(1);
        assert!(ReadTracker::new(
            Any,
            &ReplicationStrategy::simple(3),
            "dc1",
            r,
            ReadFilter::all(),
            0
        )
        .is_err());
    }
}
