//! Where rows come from and go to. The query layer only talks to
//! [`DataAccess`], so the coordinator can later replace the local engine
//! with replicated reads and writes at a consistency level.

use std::sync::Arc;

use gyre_common::{DecoratedKey, LocalTime, Partition};
use gyre_protocol::Consistency;
use gyre_storage::{ReadFilter, ScanPage, ScanRequest, StorageEngine, TableId, TableOptions};

use crate::error::Result;

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
}

/// [`DataAccess`] over this node's engine; the consistency level is moot.
pub struct LocalData {
    engine: Arc<dyn StorageEngine>,
}

impl LocalData {
    pub fn new(engine: Arc<dyn StorageEngine>) -> Self {
        LocalData { engine }
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
}
