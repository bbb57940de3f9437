//! The processor: statement dispatch, DDL, and the WHERE-clause analysis
//! that reads and writes share.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use gyre_common::metrics::Histogram;
use gyre_common::{LocalTime, Slice, SliceBound, Timestamp};
use gyre_cql::{InValues, Operator, Parsed, Predicate, QualifiedName, Relation, Statement, Term};
use gyre_protocol::{
    ColumnType, Consistency, CqlValue, SchemaChange as Change, SchemaChangeTarget,
    SchemaChangeType, Value,
};
use gyre_schema::{
    encode_clustering, encode_partition_key, ColumnDef, ColumnKind, Replication, Schema,
    SchemaChange, SchemaRows, SchemaStore, TableDef,
};
use gyre_storage::{Clock, TableId};
use parking_lot::RwLock;
use std::sync::OnceLock;
use uuid::Uuid;

use crate::data::DataAccess;
use crate::error::{QueryError, Result};
use crate::values::{column_type, term_bytes};

/// Per-request parameters, as a QUERY or EXECUTE message carries them.
#[derive(Clone, Debug)]
pub struct QueryParams {
    /// Bound values in wire form, by marker position: bytes, null, or
    /// unset (a write leaves the column untouched; an error elsewhere).
    pub values: Vec<Value>,
    /// The connection's current keyspace (`USE`).
    pub keyspace: Option<String>,
    pub consistency: Consistency,
    /// The serial consistency of a conditional write (SERIAL when `None`).
    pub serial_consistency: Option<Consistency>,
    /// The client-supplied default timestamp (microseconds).
    pub timestamp: Option<i64>,
    /// Rows per page for scans; `None` returns everything.
    pub page_size: Option<usize>,
    /// Where to resume, from a previous result's `paging_state`.
    pub paging_state: Option<Bytes>,
    /// "Now" in seconds since the epoch instead of the clock's (protocol
    /// v5 `now_in_seconds`): TTL expiry of reads, local deletion time and
    /// expiry of writes.
    pub now_in_seconds: Option<LocalTime>,
}

impl Default for QueryParams {
    fn default() -> Self {
        QueryParams {
            values: Vec::new(),
            keyspace: None,
            consistency: Consistency::One,
            serial_consistency: None,
            timestamp: None,
            page_size: None,
            paging_state: None,
            now_in_seconds: None,
        }
    }
}

/// What a statement returns.
#[derive(Clone, Debug, PartialEq)]
pub enum QueryResult {
    Void,
    Rows {
        columns: Vec<(String, ColumnType)>,
        /// Values in wire form; `None` is null.
        rows: Vec<Vec<Option<Bytes>>>,
        /// Present when there may be more rows: pass it back to continue.
        paging_state: Option<Bytes>,
    },
    SetKeyspace(String),
    SchemaChange(Change),
}

/// Told of every schema change this node's DDL made: the rows it wrote
/// (to push to peers) and the new schema version.
pub type SchemaListener = Box<dyn Fn(&SchemaRows, Uuid) + Send + Sync>;

/// Lists the cluster's datacenters (the node's own and its peers').
pub type DatacenterSource = Box<dyn Fn() -> Vec<String> + Send + Sync>;

/// Executes statements on one node. Shared by all connections.
pub struct QueryProcessor {
    pub(crate) schema: RwLock<Schema>,
    store: Option<SchemaStore>,
    pub(crate) data: Arc<dyn DataAccess>,
    clock: Arc<dyn Clock>,
    last_micros: AtomicI64,
    /// Added to the wall clock for write timestamps: a testing knob to
    /// show what last-write-wins does with a skewed clock.
    clock_offset_micros: AtomicI64,
    listener: OnceLock<SchemaListener>,
    /// The cluster's datacenters, for NetworkTopologyStrategy's
    /// `replication_factor` (the node sets it; alone, `["dc1"]`).
    datacenters: OnceLock<DatacenterSource>,
    /// Bumped on every schema change, so prepared statements notice cheaply
    /// that their table may have changed.
    schema_epoch: AtomicU64,
    /// Turning a write statement into mutations (checks, key and value
    /// encoding), before the data access.
    pub(crate) plan: Histogram,
    /// Limits on what one statement may ask ([`Guardrails`]).
    pub(crate) guardrails: parking_lot::RwLock<crate::Guardrails>,
    /// Why secondary indexes are refused on this node (its storage engine
    /// does not serve them), if they are.
    pub(crate) indexes_refused: OnceLock<String>,
}

impl std::fmt::Debug for QueryProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryProcessor").finish_non_exhaustive()
    }
}

impl QueryProcessor {
    /// `store`, when given, persists every schema change. `clock` gives
    /// "now" in seconds for TTL expiry and deletion times.
    pub fn new(
        schema: Schema,
        store: Option<SchemaStore>,
        data: Arc<dyn DataAccess>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        QueryProcessor {
            schema: RwLock::new(schema),
            store,
            data,
            clock,
            last_micros: AtomicI64::new(0),
            clock_offset_micros: AtomicI64::new(0),
            listener: OnceLock::new(),
            datacenters: OnceLock::new(),
            schema_epoch: AtomicU64::new(0),
            plan: Histogram::default(),
            guardrails: parking_lot::RwLock::new(crate::Guardrails::default()),
            indexes_refused: OnceLock::new(),
        }
    }

    /// Refuses CREATE INDEX and queries that an index would serve, with
    /// `why` (the node sets it when its storage engine serves no indexes).
    pub fn refuse_indexes(&self, why: impl Into<String>) {
        let _ = self.indexes_refused.set(why.into());
    }

    /// The error of a refused index statement or query, if refused.
    pub(crate) fn check_indexes_served(&self) -> Result<()> {
        match self.indexes_refused.get() {
            Some(why) => Err(QueryError::invalid(why.clone())),
            None => Ok(()),
        }
    }

    /// Replaces the guardrails (the node sets them from its configuration).
    pub fn set_guardrails(&self, guardrails: crate::Guardrails) {
        *self.guardrails.write() = guardrails;
    }

    /// Sets where the cluster's datacenters come from (once).
    pub fn set_datacenters(&self, source: DatacenterSource) {
        if self.datacenters.set(source).is_err() {
            tracing::error!("datacenter source set twice; keeping the first");
        }
    }

    fn datacenters(&self) -> Vec<String> {
        match self.datacenters.get() {
            Some(source) => source(),
            None => vec!["dc1".to_owned()],
        }
    }

    /// Sets the listener told of local schema changes (once).
    pub fn set_schema_listener(&self, listener: SchemaListener) {
        if self.listener.set(listener).is_err() {
            tracing::error!("schema listener set twice; keeping the first");
        }
    }

    /// The replication of the keyspace `table` belongs to.
    pub fn replication_of(&self, table: TableId) -> Option<Replication> {
        let schema = self.schema.read();
        let t = schema.table_by_id(table)?;
        Some(schema.keyspace(&t.keyspace)?.replication.clone())
    }

    /// One of a table's options, by id.
    pub fn table_option<T>(
        &self,
        table: TableId,
        f: impl FnOnce(&gyre_schema::TableOptions) -> T,
    ) -> Option<T> {
        self.schema.read().table_by_id(table).map(|t| f(&t.options))
    }

    /// The current schema version.
    pub fn schema_version(&self) -> Uuid {
        self.schema.read().version()
    }

    /// Merges schema rows from a peer (a pushed change or a pulled whole
    /// schema): persists them, creates, alters or drops storage tables to
    /// match, and returns the changes as CQL `SCHEMA_CHANGE`s (empty when
    /// nothing was new).
    pub fn merge_schema(&self, rows: SchemaRows) -> Result<Vec<Change>> {
        let mut schema = self.schema.write();
        let mut next = schema.clone();
        if !next.merge(rows.clone()) {
            return Ok(Vec::new());
        }
        if let Some(store) = &self.store {
            store.save(&rows)?;
        }
        let mut changes = Vec::new();
        for (name, ks) in next.keyspaces() {
            match schema.keyspace(name) {
                None => changes.push((
                    SchemaChangeType::Created,
                    SchemaChangeTarget::Keyspace(name.clone()),
                )),
                Some(old) if old != ks => changes.push((
                    SchemaChangeType::Updated,
                    SchemaChangeTarget::Keyspace(name.clone()),
                )),
                Some(_) => {}
            }
        }
        for (ks, types) in next.types() {
            for (name, t) in types {
                match schema.user_type(ks, name) {
                    None => changes.push((SchemaChangeType::Created, type_target(ks, name))),
                    Some(old) if old != t => {
                        changes.push((SchemaChangeType::Updated, type_target(ks, name)))
                    }
                    Some(_) => {}
                }
            }
        }
        for (ks, types) in schema.types() {
            for name in types.keys() {
                if next.user_type(ks, name).is_none() && next.keyspace(ks).is_some() {
                    changes.push((SchemaChangeType::Dropped, type_target(ks, name)));
                }
            }
        }
        for (key, t) in next.tables() {
            match schema.tables().get(key) {
                Some(old) if old == t => {}
                old => {
                    if let Some(old) = old.filter(|o| o.id != t.id) {
                        self.data.drop_table(old.id)?;
                    }
                    self.data.create_table(t.id, t.storage_options())?;
                    let kind = if old.is_some() {
                        SchemaChangeType::Updated
                    } else {
                        SchemaChangeType::Created
                    };
                    changes.push((kind, table_target(&t.keyspace, &t.name)));
                }
            }
        }
        for (key, t) in schema.tables() {
            if !next.tables().contains_key(key) {
                self.data.drop_table(t.id)?;
                changes.push((
                    SchemaChangeType::Dropped,
                    table_target(&t.keyspace, &t.name),
                ));
            }
        }
        for name in schema.keyspaces().keys() {
            if next.keyspace(name).is_none() {
                changes.push((
                    SchemaChangeType::Dropped,
                    SchemaChangeTarget::Keyspace(name.clone()),
                ));
            }
        }
        tracing::info!(version = %next.version(), changes = changes.len(), "schema merged from a peer");
        *schema = next;
        self.schema_epoch.fetch_add(1, Ordering::AcqRel);
        Ok(changes
            .into_iter()
            .map(|(change, target)| Change { change, target })
            .collect())
    }

    /// Creates (or updates the options of) the storage table of every
    /// table in the schema: for start-up, after loading the schema.
    pub fn ensure_tables(&self) -> Result<()> {
        let schema = self.schema.read();
        for t in schema.tables().values() {
            self.data.create_table(t.id, t.storage_options())?;
        }
        // The built-in system_auth (roles) and system_traces tables, not
        // listed by tables().
        for t in gyre_schema::built_in_replicated_tables() {
            self.data.create_table(t.id, t.storage_options())?;
        }
        Ok(())
    }

    /// A copy of the current schema.
    /// A counter of schema changes on this node (not a version: it only
    /// tells that something changed since it was last read).
    pub fn schema_epoch(&self) -> u64 {
        self.schema_epoch.load(Ordering::Acquire)
    }

    /// How long write statements take to become mutations (`/metrics`).
    pub fn plan_metrics(&self) -> &Histogram {
        &self.plan
    }

    /// The current definition of a table, if it exists.
    pub fn table_def(&self, keyspace: &str, table: &str) -> Option<TableDef> {
        self.schema.read().table(keyspace, table).cloned()
    }

    pub fn schema(&self) -> Schema {
        self.schema.read().clone()
    }

    /// Parses and executes one statement.
    pub async fn execute(&self, cql: &str, params: &QueryParams) -> Result<QueryResult> {
        let parsed = gyre_cql::parse(cql)?;
        self.execute_parsed(&parsed, params).await
    }

    /// Executes an already parsed statement (e.g. a prepared one).
    pub async fn execute_parsed(
        &self,
        parsed: &Parsed,
        params: &QueryParams,
    ) -> Result<QueryResult> {
        if params.values.len() < parsed.bind_markers.len() {
            return Err(QueryError::invalid(format!(
                "There were {} markers(?) in CQL but {} bound variables",
                parsed.bind_markers.len(),
                params.values.len()
            )));
        }
        match &parsed.statement {
            Statement::Select(s) => {
                let table = self.table(&s.table, params)?;
                self.select(&table, s, params).await
            }
            Statement::Insert(_)
            | Statement::Update(_)
            | Statement::Delete(_)
            | Statement::Batch(_) => self.modify(&parsed.statement, params).await,
            Statement::Use(ks) => {
                self.schema.read().require_keyspace(ks)?;
                Ok(QueryResult::SetKeyspace(ks.clone()))
            }
            Statement::Truncate(name) => {
                let table = self.table(name, params)?;
                self.data.truncate_table(table.id).await?;
                Ok(QueryResult::Void)
            }
            Statement::CreateKeyspace(_)
            | Statement::AlterKeyspace(_)
            | Statement::DropKeyspace { .. }
            | Statement::CreateTable(_)
            | Statement::AlterTable(_)
            | Statement::DropTable { .. }
            | Statement::CreateIndex(_)
            | Statement::DropIndex { .. }
            | Statement::CreateType(_)
            | Statement::AlterType(_)
            | Statement::DropType { .. } => self.ddl(&parsed.statement, params),
            Statement::Describe(d) => self.describe(d, params.keyspace.as_deref()),
            Statement::Unsupported { kind } => {
                Err(QueryError::invalid(format!("{kind} is not supported")))
            }
        }
    }

    /// Whether `stmt` changes the schema. Such statements do disk I/O and
    /// wait for peers (the schema listener) synchronously: callers on an
    /// async runtime run them with [`QueryProcessor::execute_schema_change`]
    /// on a blocking thread, off the data path.
    pub fn is_schema_change(stmt: &Statement) -> bool {
        matches!(
            stmt,
            Statement::CreateKeyspace(_)
                | Statement::AlterKeyspace(_)
                | Statement::DropKeyspace { .. }
                | Statement::CreateTable(_)
                | Statement::AlterTable(_)
                | Statement::DropTable { .. }
                | Statement::CreateIndex(_)
                | Statement::DropIndex { .. }
                | Statement::CreateType(_)
                | Statement::AlterType(_)
                | Statement::DropType { .. }
        )
    }

    /// Executes a schema change (see [`QueryProcessor::is_schema_change`]),
    /// blocking.
    pub fn execute_schema_change(
        &self,
        parsed: &Parsed,
        params: &QueryParams,
    ) -> Result<QueryResult> {
        if !Self::is_schema_change(&parsed.statement) {
            return Err(QueryError::Server("not a schema change".into()));
        }
        self.ddl(&parsed.statement, params)
    }

    fn ddl(&self, stmt: &Statement, params: &QueryParams) -> Result<QueryResult> {
        if matches!(stmt, Statement::CreateIndex(_)) {
            self.check_indexes_served()?;
        }
        // One writer at a time: check, apply, persist and create storage
        // as one step so concurrent DDL cannot interleave.
        let datacenters = self.datacenters();
        let mut schema = self.schema.write();
        let Some(change) = gyre_schema::statement_to_change_in(
            stmt,
            &schema,
            params.keyspace.as_deref(),
            &datacenters,
        )?
        else {
            return Ok(QueryResult::Void);
        };
        // Tables to drop from storage, looked up before the schema forgets them.
        let dropped: Vec<_> = match &change {
            SchemaChange::DropKeyspace(ks) => schema.tables_in(ks).map(|t| t.id).collect(),
            SchemaChange::DropTable { keyspace, table } => schema
                .table(keyspace, table)
                .map(|t| t.id)
                .into_iter()
                .collect(),
            _ => Vec::new(),
        };
        let ts = schema.next_timestamp(self.next_micros());
        // Applied to a copy that replaces the schema only once persisted.
        let mut next = schema.clone();
        let rows = next.apply_change(change.clone(), ts)?;
        if let Some(store) = &self.store {
            store.save(&rows)?;
        }
        for id in dropped {
            self.data.drop_table(id)?;
        }
        let (kind, target) = match &change {
            SchemaChange::CreateKeyspace(d) => (
                SchemaChangeType::Created,
                SchemaChangeTarget::Keyspace(d.name.clone()),
            ),
            SchemaChange::AlterKeyspace(d) => (
                SchemaChangeType::Updated,
                SchemaChangeTarget::Keyspace(d.name.clone()),
            ),
            SchemaChange::DropKeyspace(n) => (
                SchemaChangeType::Dropped,
                SchemaChangeTarget::Keyspace(n.clone()),
            ),
            SchemaChange::CreateTable(d) => {
                self.data.create_table(d.id, d.storage_options())?;
                (
                    SchemaChangeType::Created,
                    table_target(&d.keyspace, &d.name),
                )
            }
            SchemaChange::AlterTable {
                keyspace, table, ..
            }
            | SchemaChange::CreateIndex {
                keyspace, table, ..
            }
            | SchemaChange::DropIndex {
                keyspace, table, ..
            } => {
                if let Some(t) = next.table(keyspace, table) {
                    // Re-creating an existing table updates its options.
                    self.data.create_table(t.id, t.storage_options())?;
                }
                (SchemaChangeType::Updated, table_target(keyspace, table))
            }
            SchemaChange::DropTable { keyspace, table } => {
                (SchemaChangeType::Dropped, table_target(keyspace, table))
            }
            SchemaChange::CreateType { keyspace, name, .. } => {
                (SchemaChangeType::Created, type_target(keyspace, name))
            }
            SchemaChange::AlterType { keyspace, name, .. } => {
                // Tables using the type now carry its new fields.
                for t in next.tables_in(keyspace) {
                    if schema.tables().get(&(t.keyspace.clone(), t.name.clone())) != Some(t) {
                        self.data.create_table(t.id, t.storage_options())?;
                    }
                }
                (SchemaChangeType::Updated, type_target(keyspace, name))
            }
            SchemaChange::DropType { keyspace, name } => {
                (SchemaChangeType::Dropped, type_target(keyspace, name))
            }
        };
        let version = next.version();
        *schema = next;
        self.schema_epoch.fetch_add(1, Ordering::AcqRel);
        drop(schema);
        if let Some(listener) = self.listener.get() {
            listener(&rows, version);
        }
        Ok(QueryResult::SchemaChange(Change {
            change: kind,
            target,
        }))
    }

    /// The table a statement names, resolved against the current keyspace.
    pub(crate) fn table(&self, name: &QualifiedName, params: &QueryParams) -> Result<TableDef> {
        let ks = name
            .keyspace
            .as_deref()
            .or(params.keyspace.as_deref())
            .ok_or_else(|| {
                QueryError::invalid(
                    "No keyspace has been specified. USE a keyspace, or explicitly specify keyspace.tablename",
                )
            })?;
        Ok(self.schema.read().require_table(ks, &name.name)?.clone())
    }

    /// Whether table `id` is a counter table.
    pub(crate) fn is_counter_table(&self, id: TableId) -> bool {
        self.schema
            .read()
            .table_by_id(id)
            .is_some_and(|t| t.is_counter())
    }

    /// "Now" in seconds, for expiry and deletion times.
    pub(crate) fn now(&self) -> LocalTime {
        self.clock.now()
    }

    /// The request's "now": its `now_in_seconds` if given, else the clock's.
    pub(crate) fn now_for(&self, params: &QueryParams) -> LocalTime {
        params.now_in_seconds.unwrap_or_else(|| self.now())
    }

    /// Skews this node's write timestamps by `offset_micros` (testing:
    /// the chaos clock fault). Timestamps stay strictly increasing, so
    /// going back to 0 holds them until the wall clock catches up.
    pub fn set_clock_offset(&self, offset_micros: i64) {
        self.clock_offset_micros
            .store(offset_micros, Ordering::Relaxed);
    }

    /// A write timestamp: wall-clock microseconds, strictly increasing so
    /// two writes from this node never tie.
    pub(crate) fn next_micros(&self) -> Timestamp {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64)
            .saturating_add(self.clock_offset_micros.load(Ordering::Relaxed));
        let mut last = self.last_micros.load(Ordering::Relaxed);
        loop {
            let next = wall.max(last + 1);
            match self.last_micros.compare_exchange_weak(
                last,
                next,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(cur) => last = cur,
            }
        }
    }
}

fn type_target(keyspace: &str, name: &str) -> SchemaChangeTarget {
    SchemaChangeTarget::Type {
        keyspace: keyspace.to_owned(),
        name: name.to_owned(),
    }
}

fn table_target(keyspace: &str, name: &str) -> SchemaChangeTarget {
    SchemaChangeTarget::Table {
        keyspace: keyspace.to_owned(),
        name: name.to_owned(),
    }
}

/// One column's restriction in a WHERE clause.
#[derive(Debug, Clone)]
pub enum Restriction {
    /// `=` (one value) or `IN` (several).
    Values(Vec<Bytes>),
    /// Range bounds on the value: (value, inclusive).
    Range {
        lo: Option<(Bytes, bool)>,
        hi: Option<(Bytes, bool)>,
    },
}

/// A restriction checked row by row (ALLOW FILTERING).
#[derive(Debug, Clone)]
pub(crate) enum Filter {
    /// `=` / `IN`: the value is one of these.
    In(Vec<Bytes>),
    /// `<`, `<=`, `>`, `>=` against a value in the clustering encoding.
    Compare(Operator, Bytes),
    /// `CONTAINS`: a list or set element, or a map value.
    Contains(Bytes),
    /// `CONTAINS KEY`: a map key.
    ContainsKey(Bytes),
    /// `m[key] = value`: the map has this entry (key, value).
    Entry(Bytes, Bytes),
}

/// The elements of a serialized collection (for a map: keys and values
/// alternate); `None` when the bytes are not a collection.
fn collection_items(value: &[u8], is_map: bool) -> Option<Vec<&[u8]>> {
    fn take_i32(rest: &mut &[u8]) -> Option<i32> {
        let (head, tail) = rest.split_at_checked(4)?;
        *rest = tail;
        Some(i32::from_be_bytes(head.try_into().ok()?))
    }
    let mut rest = value;
    let n = usize::try_from(take_i32(&mut rest)?).ok()?;
    let per = if is_map { 2 } else { 1 };
    let mut out = Vec::new();
    for _ in 0..n.saturating_mul(per) {
        let len = usize::try_from(take_i32(&mut rest)?).ok()?;
        let (item, tail) = rest.split_at_checked(len)?;
        out.push(item);
        rest = tail;
    }
    Some(out)
}

/// The element type CONTAINS compares with, and whether the column is a
/// map (whose items alternate keys and values).
pub(crate) fn contained_type(ty: &gyre_cql::CqlType) -> Option<(&gyre_cql::CqlType, bool)> {
    use gyre_cql::CqlType as T;
    match ty {
        T::Frozen(t) => contained_type(t),
        T::List(t) | T::Set(t) => Some((t, false)),
        T::Map(_, v) => Some((v, true)),
        _ => None,
    }
}

impl Filter {
    pub(crate) fn matches(&self, ty: &gyre_cql::CqlType, value: &Bytes) -> bool {
        match self {
            Filter::In(values) => values.contains(value),
            Filter::Compare(op, bound) => {
                let Ok(v) = encode_clustering(ty, value, gyre_schema::ClusteringOrder::Asc) else {
                    return false;
                };
                let v = v.as_slice();
                match op {
                    Operator::Lt => v < bound.as_ref(),
                    Operator::Lte => v <= bound.as_ref(),
                    Operator::Gt => v > bound.as_ref(),
                    Operator::Gte => v >= bound.as_ref(),
                    _ => false,
                }
            }
            Filter::Entry(k, v) => collection_items(value, true).is_some_and(|items| {
                items
                    .chunks(2)
                    .any(|kv| kv.first() == Some(&k.as_ref()) && kv.get(1) == Some(&v.as_ref()))
            }),
            Filter::Contains(x) | Filter::ContainsKey(x) => {
                let is_map = contained_type(ty).is_some_and(|(_, m)| m);
                let Some(items) = collection_items(value, is_map) else {
                    return false;
                };
                let keys = matches!(self, Filter::ContainsKey(_));
                if !is_map {
                    return !keys && items.contains(&x.as_ref());
                }
                items
                    .chunks(2)
                    .any(|kv| kv.get(usize::from(!keys)) == Some(&x.as_ref()))
            }
        }
    }
}

/// A WHERE clause checked against the table.
#[derive(Debug, Default)]
pub struct Where {
    /// Primary-key columns by name.
    pub keys: BTreeMap<String, Restriction>,
    /// Restrictions on regular and static columns (need ALLOW FILTERING).
    pub others: Vec<(ColumnDef, Filter)>,
    pub token_start: Option<Bound<i64>>,
    pub token_end: Option<Bound<i64>>,
    /// A multi-column slice `(c1, c2) > (1, 2)` on consecutive clustering
    /// columns.
    pub tuple: Option<TupleSlice>,
}

/// Bounds of a multi-column slice: one value per column, and whether the
/// bound is inclusive.
#[derive(Debug, Clone, Default)]
pub struct TupleSlice {
    pub columns: Vec<String>,
    pub lo: Option<(Vec<Bytes>, bool)>,
    pub hi: Option<(Vec<Bytes>, bool)>,
}

pub(crate) fn analyze(table: &TableDef, relations: &[Relation], binds: &[Value]) -> Result<Where> {
    let mut w = Where::default();
    for rel in relations {
        match rel {
            Relation::Column { column, predicate } => {
                let col = table.column(column).ok_or_else(|| {
                    QueryError::invalid(format!("Undefined column name {column}"))
                })?;
                analyze_column(col, predicate, binds, &mut w)?;
            }
            Relation::Token { predicate, .. } => {
                let Predicate::Compare(op, term) = predicate else {
                    return Err(QueryError::invalid("IN is not supported on token()"));
                };
                let t = match term {
                    // `token(k) > token(5)`: the token of a key given by value.
                    Term::Function { name, args }
                        if crate::functions::function_name(name)? == "token" =>
                    {
                        key_token(table, args, binds)?
                    }
                    _ => crate::values::term_i64(term, "token", binds)?
                        .ok_or_else(|| QueryError::invalid("Invalid null value for token"))?,
                };
                match op {
                    Operator::Gt => w.token_start = Some(Bound::Excluded(t)),
                    Operator::Gte => w.token_start = Some(Bound::Included(t)),
                    Operator::Lt => w.token_end = Some(Bound::Excluded(t)),
                    Operator::Lte => w.token_end = Some(Bound::Included(t)),
                    Operator::Eq => {
                        w.token_start = Some(Bound::Included(t));
                        w.token_end = Some(Bound::Included(t));
                    }
                    _ => return Err(QueryError::invalid("Unsupported operator on token()")),
                }
            }
            Relation::Element {
                column,
                key,
                predicate,
            } => {
                let col = table.column(column).ok_or_else(|| {
                    QueryError::invalid(format!("Undefined column name {column}"))
                })?;
                let gyre_cql::CqlType::Map(kt, vt) = crate::values::unfrozen(&col.ty) else {
                    return Err(QueryError::invalid(format!(
                        "Column {column} cannot be used as a map"
                    )));
                };
                let Predicate::Compare(Operator::Eq, value) = predicate else {
                    return Err(QueryError::invalid(format!(
                        "Only EQ is supported on map entry restrictions of {column}"
                    )));
                };
                let null = || {
                    QueryError::invalid(format!(
                        "Invalid null value in condition for column {column}"
                    ))
                };
                let k = term_bytes(key, kt, column, binds)?.ok_or_else(null)?;
                let v = term_bytes(value, vt, column, binds)?.ok_or_else(null)?;
                w.others.push((col.clone(), Filter::Entry(k, v)));
            }
            Relation::Tuple { columns, predicate } => {
                analyze_tuple(table, columns, predicate, binds, &mut w)?;
            }
            Relation::IsNotNull { .. } => {
                return Err(QueryError::invalid(
                    "IS NOT NULL relations are not supported",
                ))
            }
        }
    }
    Ok(w)
}

/// `(c1, c2) op (v1, v2)` with Cassandra's rules: clustering columns only,
/// in their PRIMARY KEY order. `=` restricts each column; `<`, `<=`, `>`,
/// `>=` make one slice over the columns' combined order.
fn analyze_tuple(
    table: &TableDef,
    columns: &[String],
    predicate: &Predicate,
    binds: &[Value],
    w: &mut Where,
) -> Result<()> {
    let clustering = table.clustering();
    let mut defs = Vec::with_capacity(columns.len());
    for name in columns {
        let col = table
            .column(name)
            .ok_or_else(|| QueryError::invalid(format!("Undefined column name {name}")))?;
        if !matches!(col.kind, ColumnKind::Clustering(..)) {
            return Err(QueryError::invalid(format!(
                "Multi-column relations can only be applied to clustering columns but was applied to: {name}"
            )));
        }
        defs.push(col.clone());
    }
    let first = clustering
        .iter()
        .position(|c| c.name == defs[0].name)
        .unwrap_or(usize::MAX);
    let in_order = defs
        .iter()
        .enumerate()
        .all(|(i, d)| clustering.get(first + i).is_some_and(|c| c.name == d.name));
    if !in_order {
        return Err(QueryError::invalid(
            "Clustering columns must appear in the PRIMARY KEY order in multi-column relations",
        ));
    }
    let Predicate::Compare(op, term) = predicate else {
        return Err(QueryError::invalid(
            "IN on multi-column relations is not supported by Gyre",
        ));
    };
    let Term::Tuple(terms) = term else {
        return Err(QueryError::invalid(
            "A multi-column relation needs a tuple literal such as (1, 2) or (?, ?)",
        ));
    };
    if terms.len() != defs.len() {
        return Err(QueryError::invalid(format!(
            "Expected {} elements in value tuple, but got {}: {term}",
            defs.len(),
            terms.len()
        )));
    }
    let mut values = Vec::with_capacity(terms.len());
    for (t, d) in terms.iter().zip(&defs) {
        let v = term_bytes(t, &d.ty, &d.name, binds)?.ok_or_else(|| {
            QueryError::invalid(format!(
                "Invalid null value in condition for column {}",
                d.name
            ))
        })?;
        values.push(v);
    }
    if *op == Operator::Eq {
        for (d, v) in defs.iter().zip(values) {
            w.keys.insert(d.name.clone(), Restriction::Values(vec![v]));
        }
        return Ok(());
    }
    let slice = w.tuple.get_or_insert_with(|| TupleSlice {
        columns: columns.to_vec(),
        ..TupleSlice::default()
    });
    if slice.columns != columns {
        return Err(QueryError::invalid(
            "Multi-column slices on different column lists are not supported by Gyre",
        ));
    }
    let (bound, inclusive) = match op {
        Operator::Gt => (&mut slice.lo, false),
        Operator::Gte => (&mut slice.lo, true),
        Operator::Lt => (&mut slice.hi, false),
        Operator::Lte => (&mut slice.hi, true),
        _ => {
            return Err(QueryError::invalid(format!(
                "Unsupported operator {op:?} on a multi-column relation"
            )))
        }
    };
    if bound.is_some() {
        return Err(QueryError::invalid(
            "More than one restriction was found for the same bound of a multi-column slice",
        ));
    }
    *bound = Some((values, inclusive));
    Ok(())
}

/// The token of the partition key whose column values are `args`.
fn key_token(table: &TableDef, args: &[Term], binds: &[Value]) -> Result<i64> {
    let pk = table.partition_key();
    if args.len() != pk.len() {
        return Err(QueryError::invalid(format!(
            "Invalid number of arguments in call to function token: {} required but {} provided",
            pk.len(),
            args.len()
        )));
    }
    let parts = pk
        .iter()
        .zip(args)
        .map(|(c, t)| {
            term_bytes(t, &c.ty, &c.name, binds)?.ok_or_else(|| {
                QueryError::invalid(format!(
                    "Invalid null value for partition key part {}",
                    c.name
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let parts: Vec<&[u8]> = parts.iter().map(|b| b.as_ref()).collect();
    Ok(gyre_common::token_of(&encode_partition_key(&parts)))
}

fn analyze_column(
    col: &ColumnDef,
    predicate: &Predicate,
    binds: &[Value],
    w: &mut Where,
) -> Result<()> {
    let name = &col.name;
    let value = |term: &Term| -> Result<Bytes> {
        term_bytes(term, &col.ty, name, binds)?.ok_or_else(|| {
            QueryError::invalid(format!("Invalid null value in condition for column {name}"))
        })
    };
    let values: Vec<Bytes> = match predicate {
        Predicate::Compare(Operator::Eq, term) => vec![value(term)?],
        Predicate::In(InValues::List(terms)) => terms.iter().map(value).collect::<Result<_>>()?,
        Predicate::In(InValues::Marker(m)) => {
            let list_ty = ColumnType::List(Box::new(column_type(&col.ty)));
            match binds.get(m.index) {
                Some(Value::Bytes(b)) => match CqlValue::decode(&list_ty, b) {
                    Ok(CqlValue::List(items)) => items.iter().map(CqlValue::encode).collect(),
                    _ => return Err(QueryError::invalid(format!("Invalid IN list for {name}"))),
                },
                Some(Value::Unset) => {
                    return Err(QueryError::invalid(format!(
                        "Invalid unset value for column {name}"
                    )))
                }
                _ => {
                    return Err(QueryError::invalid(format!(
                        "Invalid null value for IN restriction on {name}"
                    )))
                }
            }
        }
        Predicate::Compare(
            op @ (Operator::Lt | Operator::Lte | Operator::Gt | Operator::Gte),
            term,
        ) => {
            if let ColumnKind::PartitionKey(_) = col.kind {
                return Err(QueryError::invalid(
                    "Only EQ and IN relation are supported on the partition key (unless you use the token() function)",
                ));
            }
            let v = value(term)?;
            if !matches!(col.kind, ColumnKind::Clustering(..)) {
                // Compared in the byte-comparable key encoding, which orders as CQL does.
                let key = encode_clustering(&col.ty, &v, gyre_schema::ClusteringOrder::Asc)?;
                w.others
                    .push((col.clone(), Filter::Compare(*op, Bytes::from(key))));
                return Ok(());
            }
            let entry = w
                .keys
                .entry(name.clone())
                .or_insert(Restriction::Range { lo: None, hi: None });
            let Restriction::Range { lo, hi } = entry else {
                return Err(QueryError::invalid(format!(
                    "Column \"{name}\" cannot be restricted by both an equality and an inequality relation"
                )));
            };
            let slot = if matches!(op, Operator::Gt | Operator::Gte) {
                lo
            } else {
                hi
            };
            if slot.is_some() {
                return Err(QueryError::invalid(format!(
                    "More than one restriction was found for the {} bound on {name}",
                    if matches!(op, Operator::Gt | Operator::Gte) {
                        "start"
                    } else {
                        "end"
                    }
                )));
            }
            *slot = Some((v, matches!(op, Operator::Gte | Operator::Lte)));
            return Ok(());
        }
        Predicate::Compare(op @ (Operator::Contains | Operator::ContainsKey), term) => {
            let keys = *op == Operator::ContainsKey;
            let elem = match (contained_type(&col.ty), &col.ty) {
                (Some((_, true)), gyre_cql::CqlType::Map(k, _)) if keys => &**k,
                (Some((_, true)), gyre_cql::CqlType::Frozen(f)) if keys => match &**f {
                    gyre_cql::CqlType::Map(k, _) => &**k,
                    _ => {
                        return Err(QueryError::invalid(format!(
                            "Cannot use CONTAINS KEY on non-map column {name}"
                        )))
                    }
                },
                (Some(_), _) if keys => {
                    return Err(QueryError::invalid(format!(
                        "Cannot use CONTAINS KEY on non-map column {name}"
                    )))
                }
                (Some((t, _)), _) => t,
                (None, _) => {
                    return Err(QueryError::invalid(format!(
                        "Cannot use CONTAINS on non-collection column {name}"
                    )))
                }
            };
            let v = term_bytes(term, elem, name, binds)?.ok_or_else(|| {
                QueryError::invalid(format!("Invalid null value in condition for column {name}"))
            })?;
            w.others.push((
                col.clone(),
                if keys {
                    Filter::ContainsKey(v)
                } else {
                    Filter::Contains(v)
                },
            ));
            return Ok(());
        }
        Predicate::Compare(op, _) => {
            return Err(QueryError::invalid(format!(
                "Unsupported restriction {op:?} on {name}"
            )))
        }
    };
    if col.kind.is_primary_key() {
        if w.keys
            .insert(name.clone(), Restriction::Values(values))
            .is_some()
        {
            return Err(QueryError::invalid(format!(
                "{name} cannot be restricted by more than one relation if it includes an Equal"
            )));
        }
    } else {
        w.others.push((col.clone(), Filter::In(values)));
    }
    Ok(())
}

/// The partition keys an `=` / `IN` restriction on every partition key
/// column selects; `None` when some partition key column is not so
/// restricted.
pub(crate) fn partition_keys(table: &TableDef, w: &Where) -> Result<Option<Vec<Bytes>>> {
    let mut combos: Vec<Vec<Bytes>> = vec![Vec::new()];
    let pk = table.partition_key();
    // Cassandra checks the serialized key: a component of a composite key
    // may be empty, a one-column key may not.
    let composite = pk.len() > 1;
    for col in pk {
        let Some(Restriction::Values(vals)) = w.keys.get(&col.name) else {
            return Ok(None);
        };
        if !composite && vals.iter().any(Bytes::is_empty) {
            return Err(QueryError::invalid("Key may not be empty"));
        }
        combos = product(&combos, vals);
    }
    let mut keys: Vec<Bytes> = combos
        .iter()
        .map(|c| {
            let parts: Vec<&[u8]> = c.iter().map(|b| b.as_ref()).collect();
            Bytes::from(encode_partition_key(&parts))
        })
        .collect();
    // IN may repeat a key: keep the first, in the order given.
    let mut seen = std::collections::HashSet::new();
    keys.retain(|k| seen.insert(k.clone()));
    Ok(Some(keys))
}

fn product(prefixes: &[Vec<Bytes>], vals: &[Bytes]) -> Vec<Vec<Bytes>> {
    let mut out = Vec::with_capacity(prefixes.len() * vals.len());
    for p in prefixes {
        for v in vals {
            let mut n = p.clone();
            n.push(v.clone());
            out.push(n);
        }
    }
    out
}

/// Which rows of a partition the clustering restrictions select.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Clustering {
    /// No restriction.
    All,
    /// Every clustering column fixed: these full keys (sorted).
    Rows(Vec<Bytes>),
    /// Prefixes, possibly with a range on the next column (sorted,
    /// non-overlapping).
    Slices(Vec<Slice>),
}

pub(crate) fn clustering(table: &TableDef, w: &Where) -> Result<Clustering> {
    let cols = table.clustering();
    let mut prefixes: Vec<Vec<u8>> = vec![Vec::new()];
    let mut fixed = 0;
    let mut range = None;
    let mut stop: Option<(&str, bool)> = None; // (column, restricted by a range)
    for col in &cols {
        let r = w.keys.get(&col.name);
        let tuple = w
            .tuple
            .as_ref()
            .filter(|t| t.columns.first() == Some(&col.name));
        if let Some((prev, by_range)) = stop {
            if r.is_some() || tuple.is_some() {
                return Err(QueryError::invalid(if by_range {
                    format!("Clustering column \"{}\" cannot be restricted (preceding column \"{prev}\" is restricted by a non-EQ relation)", col.name)
                } else {
                    format!("PRIMARY KEY column \"{}\" cannot be restricted as preceding column \"{prev}\" is not restricted", col.name)
                }));
            }
            continue;
        }
        let ColumnKind::Clustering(_, order) = col.kind else {
            continue;
        };
        let enc = |v: &Bytes| encode_clustering(&col.ty, v, order).map_err(QueryError::from);
        if tuple.is_some() && r.is_some() {
            return Err(QueryError::invalid(format!(
                "Column \"{}\" cannot be restricted by both a multi-column and a single-column relation",
                col.name
            )));
        }
        if let Some(t) = tuple {
            // The tuple's columns in their combined encoding: a bound on
            // the prefix (c1, c2) orders like the pair.
            let defs: Vec<&ColumnDef> = cols
                .iter()
                .skip_while(|c| c.name != col.name)
                .take(t.columns.len())
                .copied()
                .collect();
            let orders: Vec<_> = defs
                .iter()
                .filter_map(|d| match d.kind {
                    ColumnKind::Clustering(_, o) => Some(o),
                    _ => None,
                })
                .collect();
            if orders.iter().any(|o| *o != order) {
                return Err(QueryError::invalid(
                    "Multi-column slices over clustering columns of mixed orders are not supported by Gyre",
                ));
            }
            let encode = |b: &Option<(Vec<Bytes>, bool)>| -> Result<Option<(Vec<u8>, bool)>> {
                let Some((vals, inc)) = b else {
                    return Ok(None);
                };
                let mut e = Vec::new();
                for (d, v) in defs.iter().zip(vals) {
                    let ColumnKind::Clustering(_, o) = d.kind else {
                        continue;
                    };
                    e.extend_from_slice(&encode_clustering(&d.ty, v, o)?);
                }
                Ok(Some((e, *inc)))
            };
            let (lo, hi) = (encode(&t.lo)?, encode(&t.hi)?);
            range = Some(if order == gyre_schema::ClusteringOrder::Desc {
                (hi, lo)
            } else {
                (lo, hi)
            });
            stop = Some((&col.name, true));
            continue;
        }
        match r {
            Some(Restriction::Values(vals)) => {
                let encoded: Vec<Vec<u8>> = vals.iter().map(enc).collect::<Result<_>>()?;
                let mut next = Vec::with_capacity(prefixes.len() * encoded.len());
                for p in &prefixes {
                    for e in &encoded {
                        let mut n = p.clone();
                        n.extend_from_slice(e);
                        next.push(n);
                    }
                }
                prefixes = next;
                fixed += 1;
            }
            Some(Restriction::Range { lo, hi }) => {
                let lo = lo
                    .as_ref()
                    .map(|(v, inc)| enc(v).map(|e| (e, *inc)))
                    .transpose()?;
                let hi = hi
                    .as_ref()
                    .map(|(v, inc)| enc(v).map(|e| (e, *inc)))
                    .transpose()?;
                // A DESC column's encoding is inverted: value bounds swap ends.
                range = Some(if order == gyre_schema::ClusteringOrder::Desc {
                    (hi, lo)
                } else {
                    (lo, hi)
                });
                stop = Some((&col.name, true));
            }
            None => stop = Some((&col.name, false)),
        }
    }
    prefixes.sort();
    prefixes.dedup();
    if fixed == cols.len() && !cols.is_empty() {
        return Ok(Clustering::Rows(
            prefixes.into_iter().map(Bytes::from).collect(),
        ));
    }
    if fixed == 0 && range.is_none() {
        return Ok(Clustering::All);
    }
    let slices = prefixes
        .into_iter()
        .map(|p| {
            let whole = |p: &Vec<u8>| {
                if p.is_empty() {
                    SliceBound::Unbounded
                } else {
                    SliceBound::Inclusive(Bytes::from(p.clone()))
                }
            };
            let bound = |b: &Option<(Vec<u8>, bool)>| match b {
                None => whole(&p),
                Some((e, inclusive)) => {
                    let mut k = p.clone();
                    k.extend_from_slice(e);
                    if *inclusive {
                        SliceBound::Inclusive(Bytes::from(k))
                    } else {
                        SliceBound::Exclusive(Bytes::from(k))
                    }
                }
            };
            match &range {
                None => Slice::new(whole(&p), whole(&p)),
                Some((start, end)) => Slice::new(bound(start), bound(end)),
            }
        })
        .filter(|s| !s.is_empty())
        .collect();
    Ok(Clustering::Slices(slices))
}
