//! Where rows come from and go to. The query layer only talks to
//! [`DataAccess`], so the coordinator can later replace the local engine
//! with replicated reads and writes at a consistency level.

use std::sync::Arc;

use gyre_common::{DecoratedKey, LocalTime, Partition, Timestamp};
use gyre_protocol::Consistency;
use gyre_storage::{ReadFilter, ScanPage, ScanRequest, StorageEngine, TableId, TableOptions};

use crate::error::{QueryError, Result};

/// A lightweight transaction's decision: given the partition's current
/// data (under the CAS filter) and the Paxos ballot's timestamp, the update
/// to commit (written at that timestamp), or `None` when the conditions do
/// not hold. An `Err` is an invalid request.
pub type CasDecide<'a> = Box<
    dyn FnMut(Option<&Partition>, Timestamp) -> std::result::Result<Option<Partition>, String>
        + Send
        + 'a,
>;

/// What a compare-and-set did: applied or not, and the data its
/// conditions were checked against.
#[derive(Clone, Debug, PartialEq)]
pub struct CasResult {
    pub applied: bool,
    pub current: Option<Partition>,
}

/// Storage as the query layer sees it: tables, partition writes, partition
/// reads and token-ordered scans, each at a consistency level. A replicated
/// implementation reports unavailable replicas and timeouts as
/// [`crate::QueryError::Cluster`].
#[async_trait::async_trait]
pub trait DataAccess: Send + Sync {
    fn create_table(&self, table: TableId, options: TableOptions) -> Result<()>;
    fn drop_table(&self, table: TableId) -> Result<()>;
    async fn truncate_table(&self, table: TableId) -> Result<()>;
    async fn apply(&self, table: TableId, update: Partition, cl: Consistency) -> Result<()>;
    /// A batch's mutations, one per partition; a `logged` batch must be
    /// applied in full eventually (the coordinator's batchlog).
    async fn apply_batch(
        &self,
        updates: Vec<(TableId, Partition)>,
        cl: Consistency,
        logged: bool,
    ) -> Result<()> {
        let _ = logged;
        for (table, update) in updates {
            self.apply(table, update, cl).await?;
        }
        Ok(())
    }
    async fn read(
        &self,
        table: TableId,
        key: &DecoratedKey,
        filter: &ReadFilter,
        now: LocalTime,
        cl: Consistency,
    ) -> Result<Option<Partition>>;
    async fn scan(
        &self,
        table: TableId,
        request: &ScanRequest,
        now: LocalTime,
        cl: Consistency,
    ) -> Result<ScanPage>;
    /// Counter increments: `deltas` holds cells with an empty path whose
    /// value is the delta ([`gyre_common::counter`]); a leader replica turns
    /// them into its shards.
    async fn apply_counter(&self, table: TableId, deltas: Partition, cl: Consistency)
        -> Result<()>;
    /// A compare-and-set on one partition: `filter` reads what the
    /// conditions need, `decide` turns it into the update (if any), which
    /// is committed at `commit`; `serial` is SERIAL or LOCAL_SERIAL.
    #[allow(clippy::too_many_arguments)]
    async fn cas(
        &self,
        table: TableId,
        key: &DecoratedKey,
        filter: &ReadFilter,
        now: LocalTime,
        serial: Consistency,
        commit: Consistency,
        decide: CasDecide<'_>,
    ) -> Result<CasResult>;
}

/// [`DataAccess`] over this node's engine; the consistency level is moot.
pub struct LocalData {
    engine: Arc<dyn StorageEngine>,
    /// Serializes compare-and-sets (one engine: no Paxos needed).
    cas_lock: parking_lot::Mutex<()>,
}

impl LocalData {
    pub fn new(engine: Arc<dyn StorageEngine>) -> Self {
        LocalData {
            engine,
            cas_lock: parking_lot::Mutex::new(()),
        }
    }
}

#[async_trait::async_trait]
impl DataAccess for LocalData {
    fn create_table(&self, table: TableId, options: TableOptions) -> Result<()> {
        Ok(self.engine.create_table(table, options)?)
    }

    fn drop_table(&self, table: TableId) -> Result<()> {
        Ok(self.engine.drop_table(table)?)
    }

    async fn truncate_table(&self, table: TableId) -> Result<()> {
        Ok(self.engine.truncate_table(table)?)
    }

    async fn apply(&self, table: TableId, update: Partition, _cl: Consistency) -> Result<()> {
        Ok(self.engine.apply_deferred(table, update).await?)
    }

    async fn read(
        &self,
        table: TableId,
        key: &DecoratedKey,
        filter: &ReadFilter,
        now: LocalTime,
        _cl: Consistency,
    ) -> Result<Option<Partition>> {
        Ok(self.engine.read(table, key, filter, now)?)
    }

    async fn scan(
        &self,
        table: TableId,
        request: &ScanRequest,
        now: LocalTime,
        _cl: Consistency,
    ) -> Result<ScanPage> {
        Ok(self.engine.scan(table, request, now)?)
    }

    async fn apply_counter(
        &self,
        table: TableId,
        deltas: Partition,
        _cl: Consistency,
    ) -> Result<()> {
        use gyre_common::counter::{next_shard, parse_delta, parse_shard};
        use gyre_common::CellName;
        // One engine: its shards under the nil host id, serialized.
        let host = bytes::Bytes::copy_from_slice(uuid::Uuid::nil().as_bytes());
        let durable = {
            let _guard = self.cas_lock.lock();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as i64);
            let filter = ReadFilter {
                clustering: gyre_storage::ClusteringFilter::all(),
                columns: gyre_storage::ColumnFilter::All,
                limit: None,
                reversed: false,
            };
            let local = now.div_euclid(1_000_000);
            let stored = self.engine.read(table, &deltas.key, &filter, local)?;
            let mut shards = Partition::new(deltas.key.clone());
            let rows = deltas
                .static_row
                .iter()
                .map(|r| (None, r))
                .chain(deltas.rows.iter().map(|(ck, r)| (Some(ck), r)));
            for (ck, row) in rows {
                for (name, cell) in row.cells.iter().filter(|(n, _)| n.path.is_empty()) {
                    let Some(delta) = cell.value_at(local).and_then(|v| parse_delta(v)) else {
                        continue;
                    };
                    let shard_name = CellName::element(name.column.clone(), host.clone());
                    let old = stored
                        .as_ref()
                        .and_then(|p| match ck {
                            Some(ck) => p.rows.get(ck),
                            None => p.static_row.as_ref(),
                        })
                        .and_then(|r| r.cells.get(&shard_name))
                        .and_then(|c| c.value_at(local))
                        .and_then(|v| parse_shard(v));
                    let c = next_shard(old, delta, now);
                    shards = match ck {
                        Some(ck) => shards.set(ck.clone(), shard_name, c),
                        None => shards.set_static(shard_name, c),
                    };
                }
            }
            self.engine.apply_deferred(table, shards)
        };
        Ok(durable.await?)
    }

    async fn cas(
        &self,
        table: TableId,
        key: &DecoratedKey,
        filter: &ReadFilter,
        now: LocalTime,
        _serial: Consistency,
        _commit: Consistency,
        mut decide: CasDecide<'_>,
    ) -> Result<CasResult> {
        let (current, durable) = {
            let _guard = self.cas_lock.lock();
            let current = self.engine.read(table, key, filter, now)?;
            let ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as i64);
            let update = decide(current.as_ref(), ts).map_err(QueryError::Invalid)?;
            let durable = update.map(|u| self.engine.apply_deferred(table, u));
            (current, durable)
        };
        let applied = durable.is_some();
        if let Some(d) = durable {
            d.await?;
        }
        Ok(CasResult { applied, current })
    }
}
