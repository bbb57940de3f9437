//! Lightweight transactions, the replica side and what both sides share:
//! ballots (time-based UUIDs), the durable per-partition Paxos state in the
//! internal `system.paxos` table, and the PAXOS_* message encodings.
//!
//! The state of one partition of one table is one row of `system.paxos`
//! (partition key = table id ++ partition key): the highest ballot
//! promised, the proposal accepted and not yet known committed (ballot and
//! update), and the highest ballot committed. Every change is a mutation of
//! the node's engine, so it goes through the commitlog; a replica answers
//! only once it is durable. A commit applies the update to the data table
//! first and records the commit after: a crash in between leaves the
//! accepted proposal in place, which the next proposer finds newer than the
//! last commit and commits again (same update, same timestamp), so a
//! proposal is never half-applied across a restart.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

use bytes::Bytes;
use gyre_common::{codec, Cell, CellName, DecoratedKey, LocalTime, Partition, Timestamp};
use gyre_storage::{
    ClusteringFilter, ColumnFilter, Mutation, ReadFilter, StorageEngine, TableId, TableOptions,
    WriteFuture,
};
use parking_lot::Mutex;
use uuid::Uuid;

use crate::error::Result;
use crate::timestamp::{SystemMicrosClock, TimestampGenerator};

/// The fixed id of the internal `system.paxos` table.
pub const PAXOS_TABLE: TableId =
    TableId(Uuid::from_u128(0x6779_7265_0000_4000_8000_0000_5041_5853));

/// Paxos state expires this long after it was written: the table's
/// gc_grace_seconds, at least 3 hours (Cassandra's `paxosTtlSec`), so a
/// committed instance is purged once past gc_grace.
const MIN_STATE_TTL: u32 = 3 * 3600;

/// How long a table's gc_grace_seconds is taken as read (an ALTER TABLE
/// reaches the Paxos state written after this at the latest).
const TTL_REFRESH: std::time::Duration = std::time::Duration::from_secs(10);

const PROMISED: &str = "promised";
const ACCEPTED: &str = "accepted";
const COMMITTED: &str = "committed";

/// 100 ns intervals between the UUID epoch (1582-10-15) and the Unix epoch.
const UUID_EPOCH_OFFSET: u64 = 0x01B2_1DD2_1381_4000;

/// A Paxos ballot: a version 1 (time-based) UUID. Ordered by its time, then
/// by clock sequence and node, so two coordinators never share one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ballot(pub Uuid);

impl Ballot {
    /// The ballot of `micros` (since the Unix epoch) from `node`.
    pub fn new(micros: i64, node: u64, seq: u16) -> Ballot {
        let t = (micros.max(0) as u64) * 10 + UUID_EPOCH_OFFSET;
        let time_low = (t & 0xffff_ffff) as u32;
        let time_mid = ((t >> 32) & 0xffff) as u16;
        let time_hi = (((t >> 48) & 0x0fff) as u16) | 0x1000;
        let cs = (seq & 0x3fff) | 0x8000;
        let n = node.to_be_bytes();
        let tail = [
            (cs >> 8) as u8,
            cs as u8,
            n[2],
            n[3],
            n[4],
            n[5],
            n[6],
            n[7],
        ];
        Ballot(Uuid::from_fields(time_low, time_mid, time_hi, &tail))
    }

    /// The time in 100 ns intervals since the UUID epoch.
    fn uuid_time(&self) -> u64 {
        let (low, mid, hi, _) = self.0.as_fields();
        (u64::from(hi & 0x0fff) << 48) | (u64::from(mid) << 32) | u64::from(low)
    }

    /// The ballot's time in microseconds since the Unix epoch: the write
    /// timestamp of the update it commits.
    pub fn micros(&self) -> Timestamp {
        (self.uuid_time().saturating_sub(UUID_EPOCH_OFFSET) / 10) as i64
    }

    fn to_bytes(self) -> [u8; 16] {
        *self.0.as_bytes()
    }

    fn from_slice(b: &[u8]) -> Option<Ballot> {
        Uuid::from_slice(b).ok().map(Ballot)
    }
}

impl Ord for Ballot {
    fn cmp(&self, other: &Self) -> Ordering {
        self.uuid_time()
            .cmp(&other.uuid_time())
            .then_with(|| self.0.as_bytes()[8..].cmp(&other.0.as_bytes()[8..]))
    }
}

impl PartialOrd for Ballot {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// What a replica knows of one partition's Paxos instance.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct PaxosState {
    pub promised: Option<Ballot>,
    /// Accepted, not known to be committed: ballot and update.
    pub accepted: Option<(Ballot, Partition)>,
    pub committed: Option<Ballot>,
}

/// A replica's answer to PAXOS_PREPARE.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Promise {
    /// False: a higher ballot was promised (`promised` says which).
    pub ok: bool,
    pub promised: Option<Ballot>,
    pub accepted: Option<(Ballot, Partition)>,
    pub committed: Option<Ballot>,
    /// The replica's current data for the request's filter (v2: the
    /// prepare carries the read).
    pub data: Option<Partition>,
}

/// Partitions whose state each lock shard keeps in memory.
const CACHED_PER_SHARD: usize = 64;

/// One lock shard: the lock that serializes the read-modify-write of the
/// Paxos state of its partitions, and a write-through cache of the state
/// of the partitions it saw last (as Cassandra 4.1's Paxos state cache):
/// an uncontended LWT touches its partition's state three times, and
/// without the cache each would be an engine read of `system.paxos`.
/// Every change goes through the shard under its lock, so the cache never
/// disagrees with what this replica stored.
#[derive(Default)]
struct Shard {
    cache: std::collections::HashMap<Bytes, PaxosState>,
    /// Insertion order, for eviction (oldest first).
    order: std::collections::VecDeque<Bytes>,
}

impl Shard {
    fn put(&mut self, key: Bytes, state: PaxosState) {
        if self.cache.insert(key.clone(), state).is_none() {
            self.order.push_back(key);
            while self.order.len() > CACHED_PER_SHARD {
                if let Some(old) = self.order.pop_front() {
                    self.cache.remove(&old);
                }
            }
        }
    }
}

/// Serializes the read-modify-write of Paxos state per partition on a
/// replica (sharded: locks are held only for the read and the in-memory
/// apply, never across a wait for durability).
pub(crate) struct PaxosReplica {
    shards: Vec<Mutex<Shard>>,
    timestamps: TimestampGenerator<SystemMicrosClock>,
    /// Each table's state TTL and when it was read.
    ttls: Mutex<std::collections::HashMap<TableId, (u32, std::time::Instant)>>,
}

impl Default for PaxosReplica {
    fn default() -> Self {
        PaxosReplica {
            shards: (0..256).map(|_| Mutex::new(Shard::default())).collect(),
            timestamps: TimestampGenerator::new(SystemMicrosClock),
            ttls: Mutex::default(),
        }
    }
}

pub(crate) fn create_table(engine: &dyn StorageEngine) -> Result<()> {
    Ok(engine.create_table(PAXOS_TABLE, TableOptions::default())?)
}

fn state_key(table: TableId, key: &DecoratedKey) -> Bytes {
    let mut k = Vec::with_capacity(16 + key.key.len());
    k.extend_from_slice(table.0.as_bytes());
    k.extend_from_slice(&key.key);
    Bytes::from(k)
}

fn ballot_bytes(b: Ballot) -> Bytes {
    Bytes::copy_from_slice(&b.to_bytes())
}

fn decode_update(b: &Bytes) -> std::result::Result<Partition, codec::DecodeError> {
    codec::decode_partition(&mut codec::Reader::new(b))
}

impl PaxosReplica {
    fn lock(&self, table: TableId, key: &DecoratedKey) -> parking_lot::MutexGuard<'_, Shard> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        table.hash(&mut h);
        key.key.hash(&mut h);
        self.shards[(h.finish() % self.shards.len() as u64) as usize].lock()
    }

    /// The state of one partition, from the shard's cache or the engine
    /// (the caller holds the shard's lock).
    fn cached(
        &self,
        shard: &mut Shard,
        engine: &dyn StorageEngine,
        table: TableId,
        key: &DecoratedKey,
        now: LocalTime,
    ) -> std::result::Result<PaxosState, String> {
        if let Some(s) = shard.cache.get(&state_key(table, key)) {
            return Ok(s.clone());
        }
        let state = self.load(engine, table, key, now)?;
        shard.put(state_key(table, key), state.clone());
        Ok(state)
    }

    /// The stored state of one partition.
    pub(crate) fn load(
        &self,
        engine: &dyn StorageEngine,
        table: TableId,
        key: &DecoratedKey,
        now: LocalTime,
    ) -> std::result::Result<PaxosState, String> {
        let filter = ReadFilter {
            clustering: ClusteringFilter::all(),
            columns: ColumnFilter::All,
            limit: None,
            reversed: false,
        };
        let Some(p) = engine
            .read(
                PAXOS_TABLE,
                &DecoratedKey::new(state_key(table, key)),
                &filter,
                now,
            )
            .map_err(|e| e.to_string())?
        else {
            return Ok(PaxosState::default());
        };
        let Some(row) = p.rows.get(&Bytes::new()) else {
            return Ok(PaxosState::default());
        };
        let get = |name: &str| {
            row.cells
                .get(&CellName::simple(Bytes::copy_from_slice(name.as_bytes())))
                .and_then(|c| c.value_at(now))
        };
        let ballot = |name: &str| get(name).and_then(|b| Ballot::from_slice(b));
        let accepted = match get(ACCEPTED) {
            Some(b) if b.len() > 16 => {
                let ballot = Ballot::from_slice(&b[..16]).ok_or("bad accepted ballot")?;
                let update = decode_update(&b.slice(16..)).map_err(|e| e.to_string())?;
                Some((ballot, update))
            }
            _ => None,
        };
        Ok(PaxosState {
            promised: ballot(PROMISED),
            accepted,
            committed: ballot(COMMITTED),
        })
    }

    /// The TTL of `table`'s Paxos state (see [`MIN_STATE_TTL`]).
    fn state_ttl(&self, engine: &dyn StorageEngine, table: TableId) -> u32 {
        let mut ttls = self.ttls.lock();
        if let Some((ttl, at)) = ttls.get(&table) {
            if at.elapsed() < TTL_REFRESH {
                return *ttl;
            }
        }
        let gc_grace = engine
            .tables()
            .into_iter()
            .find(|(id, _)| *id == table)
            .map_or(TableOptions::default().gc_grace_seconds, |(_, o)| {
                o.gc_grace_seconds
            });
        let ttl = gc_grace.max(MIN_STATE_TTL);
        ttls.insert(table, (ttl, std::time::Instant::now()));
        ttl
    }

    /// Writes some of a partition's state cells (`None` value: deleted).
    fn store(
        &self,
        engine: &dyn StorageEngine,
        table: TableId,
        key: &DecoratedKey,
        cells: &[(&str, Option<Bytes>)],
        now: LocalTime,
    ) -> WriteFuture {
        // Strictly increasing local timestamps: under the partition's lock
        // each change supersedes the previous one whatever the ballots' clocks.
        let ts = self.timestamps.next();
        let ttl = self.state_ttl(engine, table);
        let mut p = Partition::with_key(state_key(table, key));
        for (name, value) in cells {
            let cell = match value {
                Some(v) => Cell::expiring(ts, v.clone(), ttl, now),
                None => Cell::tombstone(ts, now),
            };
            p = p.set(Bytes::new(), CellName::simple(name.to_string()), cell);
        }
        engine.apply_mutation(Mutation::new(PAXOS_TABLE, p))
    }

    /// PREPARE: promise `ballot` if it is above every ballot promised, and
    /// answer with the state and the data read under `filter`. The future
    /// resolves once the promise is durable.
    pub(crate) fn prepare(
        &self,
        engine: &dyn StorageEngine,
        table: TableId,
        key: &DecoratedKey,
        ballot: Ballot,
        filter: &ReadFilter,
        now: LocalTime,
    ) -> std::result::Result<(Promise, Option<WriteFuture>), String> {
        let mut shard = self.lock(table, key);
        let state = self.cached(&mut shard, engine, table, key, now)?;
        let ok = state.promised.is_none_or(|p| ballot > p);
        let durable = ok.then(|| {
            shard.put(
                state_key(table, key),
                PaxosState {
                    promised: Some(ballot),
                    ..state.clone()
                },
            );
            self.store(
                engine,
                table,
                key,
                &[(PROMISED, Some(ballot_bytes(ballot)))],
                now,
            )
        });
        let data = if ok {
            engine
                .read(table, key, filter, now)
                .map_err(|e| e.to_string())?
        } else {
            None
        };
        Ok((
            Promise {
                ok,
                promised: if ok { Some(ballot) } else { state.promised },
                accepted: state.accepted,
                committed: state.committed,
                data,
            },
            durable,
        ))
    }

    /// PROPOSE: accept `update` under `ballot` unless a higher ballot was
    /// promised. `Err(promised)`-like answers are `(false, promised)`.
    /// `encoded` is the ballot then the update as [`encode_proposal`]
    /// wrote them (the stored accepted value: the proposal is not encoded
    /// again).
    pub(crate) fn propose(
        &self,
        engine: &dyn StorageEngine,
        table: TableId,
        ballot: Ballot,
        update: &Partition,
        encoded: Bytes,
        now: LocalTime,
    ) -> std::result::Result<(bool, Option<Ballot>, Option<WriteFuture>), String> {
        let mut shard = self.lock(table, &update.key);
        let state = self.cached(&mut shard, engine, table, &update.key, now)?;
        if state.promised.is_some_and(|p| p > ballot) {
            return Ok((false, state.promised, None));
        }
        shard.put(
            state_key(table, &update.key),
            PaxosState {
                promised: Some(ballot),
                accepted: Some((ballot, update.clone())),
                committed: state.committed,
            },
        );
        let durable = self.store(
            engine,
            table,
            &update.key,
            &[
                (PROMISED, Some(ballot_bytes(ballot))),
                (ACCEPTED, Some(encoded)),
            ],
            now,
        );
        Ok((true, Some(ballot), Some(durable)))
    }

    /// PROPOSE_COMMIT: accept `update` under `ballot` unless a higher
    /// ballot was promised, and since the proposer's own replica already
    /// accepted it durably and the two make a quorum (the proposer asks
    /// only then), the proposal is chosen: apply it at once, as a commit
    /// would. The state record keeps the promise and the commit (a later
    /// prepare finds this replica committed, not merely accepted). Both
    /// records are awaited: the acceptance must be durable before it is
    /// acknowledged.
    pub(crate) fn propose_commit(
        &self,
        engine: &dyn StorageEngine,
        table: TableId,
        ballot: Ballot,
        update: Partition,
        now: LocalTime,
    ) -> std::result::Result<(bool, Option<Ballot>, Option<WriteFuture>), String> {
        let key = update.key.clone();
        let mut shard = self.lock(table, &key);
        let mut state = self.cached(&mut shard, engine, table, &key, now)?;
        if state.promised.is_some_and(|p| p > ballot) {
            return Ok((false, state.promised, None));
        }
        // The data first: a crash between the two leaves no commit record
        // without its data.
        let data = engine.apply_mutation(Mutation::new(table, update));
        let mut cells: Vec<(&str, Option<Bytes>)> = vec![(PROMISED, Some(ballot_bytes(ballot)))];
        state.promised = Some(ballot);
        if state.committed.is_none_or(|c| ballot > c) {
            cells.push((COMMITTED, Some(ballot_bytes(ballot))));
            state.committed = Some(ballot);
        }
        if state.accepted.as_ref().is_some_and(|(a, _)| *a <= ballot) {
            cells.push((ACCEPTED, None));
            state.accepted = None;
        }
        shard.put(state_key(table, &key), state);
        let record = self.store(engine, table, &key, &cells, now);
        Ok((
            true,
            Some(ballot),
            Some(Box::pin(async move {
                data.await?;
                record.await
            })),
        ))
    }

    /// COMMIT: applies `update` to the table, then records the commit
    /// (and forgets an accepted proposal it supersedes). The future
    /// resolves once the data is durable: the commit record, appended
    /// after it, is not awaited (it usually shares the data's commitlog
    /// sync; when it misses it, waiting would cost a second fsync). Lost
    /// in a crash, it leaves the accepted proposal newer than the last
    /// commit, which the next proposer commits again (same update, same
    /// timestamps), as after a crash between the two records; the next
    /// promise or accept on this replica is appended after it, so no
    /// later state is acknowledged before it is durable.
    pub(crate) fn commit(
        &self,
        engine: &dyn StorageEngine,
        table: TableId,
        ballot: Ballot,
        update: Partition,
        now: LocalTime,
    ) -> std::result::Result<WriteFuture, String> {
        let key = update.key.clone();
        let mut shard = self.lock(table, &key);
        let mut state = self.cached(&mut shard, engine, table, &key, now)?;
        let data = engine.apply_mutation(Mutation::new(table, update));
        let mut cells: Vec<(&str, Option<Bytes>)> = Vec::new();
        if state.committed.is_none_or(|c| ballot > c) {
            cells.push((COMMITTED, Some(ballot_bytes(ballot))));
            state.committed = Some(ballot);
        }
        if state.accepted.as_ref().is_some_and(|(a, _)| *a <= ballot) {
            cells.push((ACCEPTED, None));
            state.accepted = None;
        }
        if !cells.is_empty() {
            shard.put(state_key(table, &key), state);
        }
        let record = (!cells.is_empty()).then(|| self.store(engine, table, &key, &cells, now));
        Ok(Box::pin(async move {
            data.await?;
            if let Some(mut r) = record {
                match futures::poll!(&mut r) {
                    std::task::Poll::Ready(Ok(())) => {}
                    std::task::Poll::Ready(Err(e)) => {
                        tracing::warn!(error = %e, "paxos commit record failed");
                    }
                    std::task::Poll::Pending => {
                        // Finished in the background (over the memtable
                        // limit the future still has to append it).
                        let finish = async move {
                            if let Err(e) = r.await {
                                tracing::warn!(error = %e, "paxos commit record failed");
                            }
                        };
                        match tokio::runtime::Handle::try_current() {
                            Ok(rt) => drop(rt.spawn(finish)),
                            Err(_) => finish.await,
                        }
                    }
                }
            }
            Ok(())
        }))
    }
}

// ---- messages ----

fn put_ballot(out: &mut Vec<u8>, b: Option<Ballot>) {
    match b {
        None => out.push(0),
        Some(b) => {
            out.push(1);
            out.extend_from_slice(&b.to_bytes());
        }
    }
}

fn get_ballot(r: &mut codec::Reader<'_>) -> std::result::Result<Option<Ballot>, String> {
    match r.u8().map_err(|e| e.to_string())? {
        0 => Ok(None),
        _ => {
            let mut b = [0u8; 16];
            for x in &mut b {
                *x = r.u8().map_err(|e| e.to_string())?;
            }
            Ok(Some(Ballot(Uuid::from_bytes(b))))
        }
    }
}

fn put_partition(out: &mut Vec<u8>, p: Option<&Partition>) {
    match p {
        None => out.push(0),
        Some(p) => {
            out.push(1);
            codec::encode_partition(out, p);
        }
    }
}

fn get_partition(r: &mut codec::Reader<'_>) -> std::result::Result<Option<Partition>, String> {
    match r.u8().map_err(|e| e.to_string())? {
        0 => Ok(None),
        _ => Ok(Some(codec::decode_partition(r).map_err(|e| e.to_string())?)),
    }
}

/// A proposal agreed by a quorum that the replica commits before it
/// promises (Cassandra v2's commit-and-prepare): ballot and update.
pub(crate) type Agreed = (Ballot, Partition);

/// PAXOS_PREPARE: the ballot, the length of the agreed proposal to commit
/// first (0: none) and that proposal (ballot, update), then the read
/// command (table, key, filter, now).
pub(crate) fn encode_prepare(
    read: &crate::messages::ReadCommand,
    ballot: Ballot,
    commit: Option<&Agreed>,
) -> Bytes {
    let mut out = ballot.to_bytes().to_vec();
    let mut agreed = Vec::new();
    if let Some((b, u)) = commit {
        agreed.extend_from_slice(&b.to_bytes());
        codec::encode_partition(&mut agreed, u);
    }
    out.extend_from_slice(&(agreed.len() as u32).to_be_bytes());
    out.extend_from_slice(&agreed);
    out.extend_from_slice(&crate::messages::encode_read(read));
    Bytes::from(out)
}

pub(crate) fn decode_prepare(
    b: &Bytes,
) -> std::result::Result<(crate::messages::ReadCommand, Ballot, Option<Agreed>), String> {
    if b.len() < 20 {
        return Err("short prepare".into());
    }
    let ballot = Ballot::from_slice(&b[..16]).ok_or("bad ballot")?;
    let len = u32::from_be_bytes([b[16], b[17], b[18], b[19]]) as usize;
    let end = 20usize
        .checked_add(len)
        .filter(|e| *e <= b.len())
        .ok_or("short prepare")?;
    let commit = if len == 0 {
        None
    } else if len <= 16 {
        return Err("short agreed proposal".into());
    } else {
        let cb = Ballot::from_slice(&b[20..36]).ok_or("bad ballot")?;
        let update = decode_update(&b.slice(36..end)).map_err(|e| e.to_string())?;
        Some((cb, update))
    };
    let read = crate::messages::decode_read(&b.slice(end..)).map_err(|e| e.to_string())?;
    Ok((read, ballot, commit))
}

pub(crate) fn encode_promise(p: &Promise) -> Bytes {
    let mut out = vec![u8::from(p.ok)];
    put_ballot(&mut out, p.promised);
    match &p.accepted {
        None => out.push(0),
        Some((b, u)) => {
            out.push(1);
            out.extend_from_slice(&b.to_bytes());
            codec::encode_partition(&mut out, u);
        }
    }
    put_ballot(&mut out, p.committed);
    put_partition(&mut out, p.data.as_ref());
    Bytes::from(out)
}

pub(crate) fn decode_promise(b: &Bytes) -> std::result::Result<Promise, String> {
    let mut r = codec::Reader::new(b);
    let ok = r.u8().map_err(|e| e.to_string())? != 0;
    let promised = get_ballot(&mut r)?;
    let accepted = match get_ballot(&mut r)? {
        None => None,
        Some(ballot) => Some((
            ballot,
            codec::decode_partition(&mut r).map_err(|e| e.to_string())?,
        )),
    };
    let committed = get_ballot(&mut r)?;
    let data = get_partition(&mut r)?;
    Ok(Promise {
        ok,
        promised,
        accepted,
        committed,
        data,
    })
}

/// PAXOS_PROPOSE and PAXOS_COMMIT: table id, ballot, the update (so that
/// the bytes after the table id are the accepted value a replica stores).
pub(crate) fn encode_proposal(table: TableId, ballot: Ballot, update: &Partition) -> Bytes {
    let mut out = table.0.as_bytes().to_vec();
    out.extend_from_slice(&ballot.to_bytes());
    codec::encode_partition(&mut out, update);
    Bytes::from(out)
}

pub(crate) fn decode_proposal(
    b: &Bytes,
) -> std::result::Result<(TableId, Ballot, Partition), String> {
    if b.len() < 32 {
        return Err("short proposal".into());
    }
    let table = TableId(Uuid::from_slice(&b[..16]).map_err(|e| e.to_string())?);
    let ballot = Ballot::from_slice(&b[16..32]).ok_or("bad ballot")?;
    let update = decode_update(&b.slice(32..)).map_err(|e| e.to_string())?;
    Ok((table, ballot, update))
}

/// PAXOS_PROPOSE's answer: accepted, and the replica's promised ballot.
pub(crate) fn encode_accept(ok: bool, promised: Option<Ballot>) -> Bytes {
    let mut out = vec![u8::from(ok)];
    put_ballot(&mut out, promised);
    Bytes::from(out)
}

pub(crate) fn decode_accept(b: &Bytes) -> std::result::Result<(bool, Option<Ballot>), String> {
    let mut r = codec::Reader::new(b);
    let ok = r.u8().map_err(|e| e.to_string())? != 0;
    Ok((ok, get_ballot(&mut r)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ballots_order_by_time_then_node() {
        let a = Ballot::new(1_000_000, 1, 0);
        let b = Ballot::new(1_000_001, 0, 0);
        let c = Ballot::new(1_000_001, 2, 0);
        assert!(a < b && b < c);
        assert_eq!(a.micros(), 1_000_000);
        assert_eq!(a.0.get_version_num(), 1);
    }

    #[test]
    fn promise_round_trips() {
        let u = Partition::with_key(Bytes::from_static(b"k")).set(
            Bytes::new(),
            CellName::simple("v"),
            Cell::live(5, Bytes::from_static(b"x")),
        );
        let p = Promise {
            ok: true,
            promised: Some(Ballot::new(7, 1, 2)),
            accepted: Some((Ballot::new(6, 1, 2), u.clone())),
            committed: None,
            data: Some(u),
        };
        assert_eq!(decode_promise(&encode_promise(&p)).expect("decodes"), p);
        assert!(decode_promise(&Bytes::from_static(&[1, 1])).is_err());
    }

    #[test]
    fn prepare_round_trips_with_and_without_a_commit() {
        let u = Partition::with_key(Bytes::from_static(b"k")).set(
            Bytes::new(),
            CellName::simple("v"),
            Cell::live(5, Bytes::from_static(b"x")),
        );
        let read = crate::messages::ReadCommand {
            table: TableId(Uuid::from_u128(7)),
            key: DecoratedKey::new(Bytes::from_static(b"k")),
            filter: ReadFilter {
                clustering: ClusteringFilter::all(),
                columns: ColumnFilter::All,
                limit: None,
                reversed: false,
            },
            now: 42,
        };
        let b = Ballot::new(9, 1, 2);
        let agreed = (Ballot::new(8, 1, 2), u);
        for commit in [None, Some(&agreed)] {
            let (r, got, c) = decode_prepare(&encode_prepare(&read, b, commit)).expect("decodes");
            assert_eq!((r.key, r.now, got), (read.key.clone(), 42, b));
            assert_eq!(c.as_ref(), commit);
        }
        let enc = encode_prepare(&read, b, Some(&agreed));
        assert!(decode_prepare(&enc.slice(..30)).is_err());
    }
}
