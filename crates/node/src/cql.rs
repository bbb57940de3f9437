//! The node's CQL request handler: QUERY, EXECUTE and BATCH are awaited on
//! the connection's task through the [`QueryProcessor`] (whose data access
//! goes through the coordinator); schema changes run on the blocking pool.
//! PREPARE keeps statements per node, evicted when their table changes,
//! with a plan for the keyed INSERT/UPDATE/DELETE/SELECT that drivers
//! prepare ([`gyre_query::PreparedPlan`]): their EXECUTE does not plan again.
//! SELECTs on the `system` / `system_schema` keyspaces are answered by
//! [`crate::system_tables`] from the node's own state.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use gyre_cluster::AppStateKey;
use gyre_cql::{Parsed, Statement};
use gyre_protocol::{
    async_trait, Batch, BatchStatementKind, ColumnSpec, ColumnType, ConnectionState, CqlResult,
    CqlValue, ErrorKind, Event, EventSender, HandlerRequest, Prepared, PreparedMetadata,
    QueryParameters, RequestHandler, Response, Rows, RowsMetadata, Value, Values,
};
use gyre_query::{QueryError, QueryParams, QueryProcessor, QueryResult};
use gyre_schema::TableDef;
use parking_lot::Mutex;
use tracing::{debug, info};

use crate::auth::Auth;
use crate::node::Shared;
use crate::system_tables::{self, LocalInfo, PeerInfo};

/// Prepared statements kept per node; the oldest is evicted first (FIFO).
/// A driver whose statement was evicted gets Unprepared and re-prepares.
const PREPARED_CACHE_ENTRIES: usize = 10_000;

/// A prepared statement.
struct Stmt {
    keyspace: Option<String>,
    /// Shared, so an EXECUTE does not copy the statement.
    parsed: Arc<Parsed>,
    /// Bind-marker names, for named values.
    bind_names: Vec<String>,
    /// The table it was prepared against (`(keyspace, name)` and its
    /// definition then): when it is altered or dropped, EXECUTE answers
    /// Unprepared so the driver re-prepares with fresh metadata.
    table: Option<(String, String, Arc<TableDef>)>,
    /// The schema epoch the definition was last checked at.
    checked_at: AtomicU64,
    /// v5: the id of the result metadata sent in PREPARED; an EXECUTE
    /// holding another gets its rows with METADATA_CHANGED and this id.
    result_metadata_id: Bytes,
    /// The plan of a keyed INSERT/UPDATE/DELETE/SELECT (`None`: the
    /// statement is planned on every EXECUTE), made from `table`'s
    /// definition, so it is dropped with the statement when that changes.
    plan: Option<gyre_query::PreparedPlan>,
    /// The result metadata sent in PREPARED, answered with a plan's rows.
    result_metadata: RowsMetadata,
}

#[derive(Default)]
struct PreparedCache {
    map: HashMap<Bytes, Arc<Stmt>>,
    order: VecDeque<Bytes>,
}

impl PreparedCache {
    /// Forgets a statement (rare: its table changed).
    fn remove(&mut self, id: &Bytes) {
        if self.map.remove(id).is_some() {
            self.order.retain(|x| x != id);
        }
    }

    fn insert(&mut self, id: Bytes, stmt: Arc<Stmt>) {
        if self.map.insert(id.clone(), stmt).is_none() {
            self.order.push_back(id);
            while self.order.len() > PREPARED_CACHE_ENTRIES {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }
}

pub(crate) struct CqlHandler {
    qp: Arc<QueryProcessor>,
    shared: Arc<Shared>,
    auth: Arc<Auth>,
    events: EventSender,
    prepared: Mutex<PreparedCache>,
}

/// Cassandra's prepared id: MD5 of keyspace + query text, so every node
/// computes the same id.
fn prepared_id(keyspace: Option<&str>, query: &str) -> Bytes {
    let mut input = keyspace.unwrap_or_default().as_bytes().to_vec();
    input.extend_from_slice(query.as_bytes());
    Bytes::copy_from_slice(&gyre_schema::md5(&input))
}

/// The v5 result metadata id: an MD5 of the result columns (their tables,
/// names and types), equal on every node for the same metadata.
fn result_metadata_id(metadata: &RowsMetadata) -> Bytes {
    let text = format!("{:?}", metadata.columns);
    Bytes::copy_from_slice(&gyre_schema::md5(text.as_bytes()))
}

fn error(e: QueryError) -> Response {
    Response::Error(e.to_cql_error())
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Positional values, resolving named ones against the marker names. Unset
/// values pass through: the executor leaves their columns untouched.
fn bind_values(values: &Values, names: &[String]) -> Result<Vec<Value>, QueryError> {
    match values {
        Values::Positional(v) => Ok(v.clone()),
        Values::Named(pairs) => names
            .iter()
            .map(|n| {
                pairs
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(n))
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| QueryError::Invalid(format!("No value for bind marker {n}")))
            })
            .collect(),
    }
}

/// Values for the virtual tables, which take null and bytes only: an unset
/// value in their WHERE clause reads as null (and is refused there).
fn nullable(values: &[Value]) -> Vec<Option<Bytes>> {
    values
        .iter()
        .map(|v| match v {
            Value::Bytes(b) => Some(b.clone()),
            Value::Null | Value::Unset => None,
        })
        .collect()
}

fn marker_names(parsed: &Parsed) -> Vec<String> {
    parsed
        .bind_markers
        .iter()
        .map(|m| m.name.clone().unwrap_or_default())
        .collect()
}

impl CqlHandler {
    /// Refuses query text over `limits.max_query_length_kb` before it is
    /// tokenized (a frame of tiny tokens would multiply in memory).
    fn check_query_length(&self, request: &HandlerRequest) -> Option<Response> {
        let max = self.shared.cfg.limits.max_query_length_kb << 10;
        let longest = match request {
            HandlerRequest::Query(q) => q.query.len(),
            HandlerRequest::Prepare(p) => p.query.len(),
            HandlerRequest::Batch(b) => b
                .statements
                .iter()
                .map(|s| match &s.statement {
                    BatchStatementKind::Query(q) => q.len(),
                    BatchStatementKind::Prepared(_) => 0,
                })
                .max()
                .unwrap_or(0),
            HandlerRequest::Execute(_) => 0,
        };
        (longest > max).then(|| {
            error(QueryError::Invalid(format!(
                "Query of {longest} bytes exceeds the limit of {max} bytes (limits.max_query_length_kb)"
            )))
        })
    }

    pub(crate) fn new(
        qp: Arc<QueryProcessor>,
        shared: Arc<Shared>,
        auth: Arc<Auth>,
        events: EventSender,
    ) -> Self {
        CqlHandler {
            qp,
            shared,
            auth,
            events,
            prepared: Mutex::new(PreparedCache::default()),
        }
    }

    /// The node's view for the system tables.
    fn local_info(&self) -> LocalInfo {
        let cfg = &self.shared.cfg;
        let core = self.shared.core.lock();
        let g = &core.gossiper;
        let local = self.shared.local;
        let peers = g
            .endpoint_states()
            // Ring members only, as Cassandra: a joining or replacing node
            // is not a peer until it is NORMAL (drivers would route requests
            // to it), nor is a node still starting (no status yet) or
            // shut down.
            .filter(|(ep, st)| {
                use gyre_cluster::NodeStatus as S;
                **ep != local && matches!(st.status(), Some(S::Normal | S::Leaving))
            })
            .map(|(ep, st)| PeerInfo {
                peer: ep.ip(),
                peer_port: ep.port(),
                data_center: st.dc().unwrap_or("dc1").to_owned(),
                rack: st.rack().unwrap_or("rack1").to_owned(),
                host_id: st.host_id(),
                release_version: st.release_version().map(str::to_owned),
                native: st.native_address(),
                schema_version: st.schema(),
                tokens: st.tokens().unwrap_or_default(),
            })
            .collect();
        LocalInfo {
            cluster_name: cfg.cluster.name.clone(),
            data_center: cfg.cluster.datacenter.clone(),
            rack: cfg.cluster.rack.clone(),
            host_id: self.shared.host_id,
            listen: local,
            native: cfg.network.cql_addr(),
            tokens: g.local_state().and_then(|s| s.tokens()).unwrap_or_default(),
            generation: i32::try_from(g.generation()).unwrap_or(i32::MAX),
            release_version: crate::node::RELEASE_VERSION.to_owned(),
            peers,
        }
    }

    /// The keyspace of a SELECT on a virtual table, if it is one.
    fn virtual_keyspace(parsed: &Parsed, keyspace: Option<&str>) -> Option<String> {
        let Statement::Select(s) = &parsed.statement else {
            return None;
        };
        let ks = s.table.keyspace.as_deref().or(keyspace)?;
        system_tables::is_virtual_keyspace(ks).then(|| ks.to_owned())
    }

    /// Executes one statement and builds the RESULT.
    async fn run(
        &self,
        user: Option<&str>,
        parsed: Arc<Parsed>,
        params: QueryParams,
        skip_metadata: bool,
    ) -> Result<CqlResult, QueryError> {
        self.auth
            .authorize(user, &parsed.statement, params.keyspace.as_deref())
            .await?;
        if let Statement::Describe(d) = &parsed.statement {
            if d.target == gyre_cql::DescribeTarget::Cluster {
                return Ok(self.describe_cluster(params.keyspace.as_deref(), skip_metadata));
            }
        }
        if let (Some(ks), Statement::Select(s)) = (
            Self::virtual_keyspace(&parsed, params.keyspace.as_deref()),
            &parsed.statement,
        ) {
            let answer = system_tables::select(
                &ks,
                s,
                &nullable(&params.values),
                &self.local_info(),
                &self.qp.schema(),
            )?;
            let specs = answer
                .columns
                .into_iter()
                .map(|(n, t)| ColumnSpec::new(&answer.keyspace, &answer.table, n, t))
                .collect();
            let (rows, paging_state) =
                system_tables::page(answer.rows, params.page_size, params.paging_state.as_ref())?;
            return Ok(rows_result(specs, rows, paging_state, skip_metadata));
        }
        // Table spec of the result columns: the SELECT's table (or a
        // conditional write's, for its [applied] rows).
        let (spec_ks, spec_table) = match statement_table(&parsed.statement, &params) {
            Some(t) => t,
            None => (
                params.keyspace.clone().unwrap_or_else(|| "system".into()),
                "describe".to_owned(),
            ),
        };
        let is_select = matches!(parsed.statement, Statement::Select(_));
        let result = if QueryProcessor::is_schema_change(&parsed.statement) {
            // Schema changes write the schema table and wait for peers to
            // merge it: rare, blocking, kept off the async workers.
            let qp = self.qp.clone();
            let (parsed, params) = (parsed.clone(), params.clone());
            tokio::task::spawn_blocking(move || qp.execute_schema_change(&parsed, &params))
                .await
                .map_err(|e| QueryError::Server(format!("execution task failed: {e}")))??
        } else {
            // Everything else runs on this task: the coordinator awaits
            // replicas and the commitlog's durability as futures.
            self.qp.execute_parsed(&parsed, &params).await?
        };
        Ok(match result {
            QueryResult::Void => CqlResult::Void,
            QueryResult::SetKeyspace(ks) => CqlResult::SetKeyspace(ks),
            QueryResult::Rows {
                columns,
                rows,
                paging_state,
            } => {
                let specs = columns
                    .into_iter()
                    .map(|(n, t)| ColumnSpec::new(&spec_ks, &spec_table, n, t))
                    .collect();
                // A conditional write's rows vary with its outcome: their
                // metadata is always sent.
                let skip = skip_metadata && is_select;
                rows_result(specs, rows, paging_state, skip)
            }
            QueryResult::SchemaChange(change) => {
                self.after_schema_change();
                if let Err(e) = self
                    .auth
                    .grant_to_creator(user, &parsed.statement, params.keyspace.as_deref())
                    .await
                {
                    tracing::warn!(error = %e, "granting the creator's permissions failed");
                }
                if let Err(e) = self
                    .auth
                    .revoke_on_drop(&parsed.statement, params.keyspace.as_deref())
                    .await
                {
                    tracing::warn!(error = %e, "revoking the permissions on a dropped resource failed");
                }
                self.events.send(Event::SchemaChange(change.clone()));
                CqlResult::SchemaChange(change)
            }
        })
    }

    /// `DESCRIBE CLUSTER` (cql-compat.md section 6). The node answers it,
    /// not the query processor: it needs the cluster name and the ring.
    fn describe_cluster(&self, keyspace: Option<&str>, skip_metadata: bool) -> CqlResult {
        let ownership = keyspace.and_then(|ks| {
            let schema = self.qp.schema();
            let strategy = crate::replication::strategy_of(&schema.keyspace(ks)?.replication)?;
            // A copy, so that no ring lock is held while placing replicas.
            let ring = self.shared.ring_view.read().clone();
            Some(
                ring.ring()
                    .iter()
                    .map(|(token, _)| {
                        let replicas = ring
                            .replicas_for_token(&strategy, *token)
                            .iter()
                            .filter_map(|h| ring.node(h).map(|n| n.address))
                            .collect();
                        (*token, replicas)
                    })
                    .collect(),
            )
        });
        let (columns, row) = describe_cluster_row(&self.shared.cfg.cluster.name, ownership);
        let specs = columns
            .into_iter()
            .map(|(n, t)| ColumnSpec::new("system", "describe", n, t))
            .collect();
        rows_result(specs, vec![row], None, skip_metadata)
    }

    /// Gossips the new schema version so peers and drivers see agreement.
    fn after_schema_change(&self) {
        let version = self.qp.schema().version();
        info!(%version, "schema changed");
        self.shared
            .set_local_state(AppStateKey::Schema, version.to_string());
    }

    fn params(p: &QueryParameters, values: Vec<Value>, keyspace: Option<String>) -> QueryParams {
        QueryParams {
            values,
            keyspace,
            consistency: p.consistency,
            serial_consistency: p.serial_consistency,
            timestamp: p.default_timestamp,
            page_size: p.page_size.filter(|n| *n > 0).map(|n| n as usize),
            paging_state: p.paging_state.clone(),
            now_in_seconds: p.now_in_seconds.map(i64::from),
        }
    }

    async fn query(&self, conn: &ConnectionState, q: gyre_protocol::Query) -> Response {
        let parsed = match gyre_cql::parse(&q.query) {
            Ok(p) => p,
            Err(e) => return error(e.into()),
        };
        let values = match bind_values(&q.params.values, &marker_names(&parsed)) {
            Ok(v) => v,
            Err(e) => return error(e),
        };
        // v5: the request's keyspace takes precedence over the connection's.
        let keyspace = q.params.keyspace.clone().or_else(|| conn.keyspace());
        let user = conn.user();
        if let Statement::Unsupported { kind } = &parsed.statement {
            if crate::auth::is_auth_statement(kind) {
                return match self
                    .auth
                    .execute(user.as_deref(), &q.query, keyspace.as_deref())
                    .await
                {
                    Ok(QueryResult::Rows { columns, rows, .. }) => {
                        let specs = columns
                            .into_iter()
                            .map(|(n, t)| ColumnSpec::new("system_auth", "roles", n, t))
                            .collect();
                        Response::Result(rows_result(specs, rows, None, false))
                    }
                    Ok(_) => Response::void(),
                    Err(e) => error(e),
                };
            }
        }
        let params = Self::params(&q.params, values, keyspace);
        match self
            .run(
                user.as_deref(),
                Arc::new(parsed),
                params,
                q.params.skip_metadata,
            )
            .await
        {
            Ok(r) => Response::Result(r),
            Err(e) => {
                debug!(query = %q.query, error = %e, "query failed");
                error(e)
            }
        }
    }

    fn prepare(
        &self,
        conn: &ConnectionState,
        query: &str,
        request_keyspace: Option<String>,
    ) -> Result<Prepared, QueryError> {
        // Read before the schema is: a change in between is then noticed.
        let epoch = self.qp.schema_epoch();
        let keyspace = request_keyspace.or_else(|| conn.keyspace());
        let parsed = gyre_cql::parse(query)?;
        let id = prepared_id(keyspace.as_deref(), query);
        let mut plan = None;
        let (table, binds, result) = if let (Some(ks), Statement::Select(s)) = (
            Self::virtual_keyspace(&parsed, keyspace.as_deref()),
            &parsed.statement,
        ) {
            let (result, binds) = system_tables::describe(
                &ks,
                s,
                parsed.bind_markers.len(),
                &self.local_info(),
                &self.qp.schema(),
            )?;
            (Some((ks, s.table.name.clone())), binds, Some(result))
        } else {
            let info = self.qp.prepare(&parsed, keyspace.as_deref())?;
            plan = self.qp.plan(&parsed, keyspace.as_deref());
            let result =
                matches!(parsed.statement, Statement::Select(_)).then_some(info.result_columns);
            (info.table, info.bind_columns, result)
        };
        let (tks, tname) = table.clone().unwrap_or_default();
        let spec = |(n, t): (String, ColumnType)| ColumnSpec::new(&tks, &tname, n, t);
        let bind_names: Vec<String> = binds.iter().map(|(n, _)| n.clone()).collect();
        // pk_indexes: the marker of each partition-key column, in key order,
        // so that drivers can route by token; empty unless all are bound.
        let pk_indexes = table
            .as_ref()
            .and_then(|(k, t)| {
                let schema = self.qp.schema();
                let def = schema.table(k, t)?;
                def.partition_key()
                    .iter()
                    .map(|c| key_marker(&parsed.statement, &c.name))
                    .collect::<Option<Vec<u16>>>()
            })
            .unwrap_or_default();
        let metadata = PreparedMetadata {
            pk_indexes,
            columns: binds.into_iter().map(spec).collect(),
        };
        let result_metadata = match result {
            Some(cols) => RowsMetadata::new(cols.into_iter().map(spec).collect()),
            None => RowsMetadata::empty(),
        };
        let metadata_id = result_metadata_id(&result_metadata);
        // The definition the plan was made from, so both go stale together.
        let def = table.as_ref().and_then(|(k, t)| {
            let def = match &plan {
                Some(p) => p.table().clone(),
                None => Arc::new(self.qp.table_def(k, t)?),
            };
            Some((k.clone(), t.clone(), def))
        });
        self.prepared.lock().insert(
            id.clone(),
            Arc::new(Stmt {
                keyspace,
                bind_names,
                parsed: Arc::new(parsed),
                table: def,
                checked_at: AtomicU64::new(epoch),
                result_metadata_id: metadata_id.clone(),
                plan,
                result_metadata: result_metadata.clone(),
            }),
        );
        Ok(Prepared {
            id,
            result_metadata_id: metadata_id,
            metadata,
            result_metadata,
        })
    }

    /// The prepared statement `id`, or Unprepared when it is unknown or its
    /// table changed since it was prepared (Cassandra evicts a table's
    /// statements on ALTER and DROP; the driver then re-prepares and gets
    /// the new metadata).
    fn lookup(&self, id: &Bytes) -> Result<Arc<Stmt>, Box<Response>> {
        let unprepared = || {
            Box::new(Response::error(
                ErrorKind::Unprepared { id: id.clone() },
                format!(
                    "Prepared query with ID {} not found",
                    id.iter().map(|b| format!("{b:02x}")).collect::<String>()
                ),
            ))
        };
        let stmt = self
            .prepared
            .lock()
            .map
            .get(id)
            .cloned()
            .ok_or_else(unprepared)?;
        let epoch = self.qp.schema_epoch();
        if stmt.checked_at.load(Ordering::Acquire) != epoch {
            if let Some((ks, t, def)) = &stmt.table {
                if self.qp.table_def(ks, t).as_ref() != Some(def.as_ref()) {
                    debug!(keyspace = %ks, table = %t, "table changed: prepared statement evicted");
                    self.prepared.lock().remove(id);
                    return Err(unprepared());
                }
            }
            stmt.checked_at.store(epoch, Ordering::Release);
        }
        Ok(stmt)
    }

    async fn execute(&self, conn: &ConnectionState, e: gyre_protocol::Execute) -> Response {
        let stmt = match self.lookup(&e.id) {
            Ok(s) => s,
            Err(r) => return *r,
        };
        let values = match bind_values(&e.params.values, &stmt.bind_names) {
            Ok(v) => v,
            Err(err) => return error(err),
        };
        // Unqualified names resolve against the keyspace at PREPARE time.
        let keyspace = stmt.keyspace.clone().or_else(|| conn.keyspace());
        let params = Self::params(&e.params, values, keyspace);
        // v5: a client holding another result metadata id than ours gets
        // the full metadata and our id (Metadata_changed).
        let stale = e
            .result_metadata_id
            .as_ref()
            .is_some_and(|id| *id != stmt.result_metadata_id);
        let skip_metadata = e.params.skip_metadata && !stale;
        let user = conn.user();
        if let Some(plan) = &stmt.plan {
            return self
                .execute_plan(user.as_deref(), &stmt, plan, params, skip_metadata, stale)
                .await;
        }
        match Box::pin(self.run(user.as_deref(), stmt.parsed.clone(), params, skip_metadata)).await
        {
            Ok(CqlResult::Rows(mut rows)) if stale => {
                rows.metadata.new_metadata_id = Some(stmt.result_metadata_id.clone());
                Response::Result(CqlResult::Rows(rows))
            }
            Ok(r) => Response::Result(r),
            Err(err) => error(err),
        }
    }

    /// EXECUTE of a planned statement: authorized like any other, then run
    /// without planning; a SELECT's rows get the metadata made at PREPARE.
    async fn execute_plan(
        &self,
        user: Option<&str>,
        stmt: &Stmt,
        plan: &gyre_query::PreparedPlan,
        params: QueryParams,
        skip_metadata: bool,
        stale: bool,
    ) -> Response {
        if let Err(e) = self
            .auth
            .authorize(user, &stmt.parsed.statement, params.keyspace.as_deref())
            .await
        {
            return error(e);
        }
        match self
            .qp
            .execute_plan(plan, stmt.parsed.bind_markers.len(), &params)
            .await
        {
            Ok(QueryResult::Rows {
                rows, paging_state, ..
            }) => {
                let mut metadata = if skip_metadata {
                    RowsMetadata {
                        columns_count: stmt.result_metadata.columns.len(),
                        columns: Vec::new(),
                        no_metadata: true,
                        paging_state: None,
                        new_metadata_id: None,
                    }
                } else {
                    stmt.result_metadata.clone()
                };
                metadata.paging_state = paging_state;
                if stale {
                    metadata.new_metadata_id = Some(stmt.result_metadata_id.clone());
                }
                Response::Result(CqlResult::Rows(Rows { metadata, rows }))
            }
            Ok(_) => Response::void(),
            Err(e) => error(e),
        }
    }

    async fn batch(&self, conn: &ConnectionState, b: Batch) -> Response {
        // One timestamp for the whole batch, as in Cassandra.
        let timestamp = b.default_timestamp.unwrap_or_else(now_micros);
        let mut work = Vec::with_capacity(b.statements.len());
        for s in &b.statements {
            let (parsed, keyspace) = match &s.statement {
                BatchStatementKind::Query(q) => match gyre_cql::parse(q) {
                    Ok(p) => (p, b.keyspace.clone().or_else(|| conn.keyspace())),
                    Err(e) => return error(e.into()),
                },
                BatchStatementKind::Prepared(id) => match self.lookup(id) {
                    Ok(stmt) => (
                        Parsed::clone(&stmt.parsed),
                        stmt.keyspace
                            .clone()
                            .or_else(|| b.keyspace.clone())
                            .or_else(|| conn.keyspace()),
                    ),
                    Err(r) => return *r,
                },
            };
            if !matches!(
                parsed.statement,
                Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_)
            ) {
                return error(QueryError::Invalid(
                    "Only INSERT, UPDATE and DELETE statements are allowed in a BATCH".into(),
                ));
            }
            if let Err(e) = self
                .auth
                .authorize(
                    conn.user().as_deref(),
                    &parsed.statement,
                    keyspace.as_deref(),
                )
                .await
            {
                return error(e);
            }
            let params = QueryParams {
                values: s.values.clone(),
                keyspace,
                consistency: b.consistency,
                serial_consistency: b.serial_consistency,
                timestamp: Some(timestamp),
                page_size: None,
                paging_state: None,
                now_in_seconds: b.now_in_seconds.map(i64::from),
            };
            work.push((parsed, params));
        }
        let kind = match b.batch_type {
            gyre_protocol::BatchType::Logged => gyre_cql::BatchKind::Logged,
            gyre_protocol::BatchType::Unlogged => gyre_cql::BatchKind::Unlogged,
            gyre_protocol::BatchType::Counter => gyre_cql::BatchKind::Counter,
        };
        let cl = b.consistency;
        match self
            .qp
            .execute_batch(&work, cl, b.serial_consistency, kind)
            .await
        {
            Ok(QueryResult::Rows { columns, rows, .. }) => {
                // A conditional batch: its [applied] rows, on its table.
                let (ks, table) = work
                    .first()
                    .and_then(|(p, params)| statement_table(&p.statement, params))
                    .unwrap_or_default();
                let specs = columns
                    .into_iter()
                    .map(|(n, t)| ColumnSpec::new(&ks, &table, n, t))
                    .collect();
                Response::Result(rows_result(specs, rows, None, false))
            }
            Ok(_) => Response::void(),
            Err(e) => error(e),
        }
    }
}

/// The keyspace and table a statement's result rows belong to.
fn statement_table(stmt: &Statement, params: &QueryParams) -> Option<(String, String)> {
    let name = match stmt {
        Statement::Select(s) => &s.table,
        Statement::Insert(i) => &i.table,
        Statement::Update(u) => &u.table,
        Statement::Delete(d) => &d.table,
        Statement::Batch(b) => match b.statements.first()? {
            gyre_cql::Modification::Insert(i) => &i.table,
            gyre_cql::Modification::Update(u) => &u.table,
            gyre_cql::Modification::Delete(d) => &d.table,
        },
        _ => return None,
    };
    Some((
        name.keyspace
            .clone()
            .or_else(|| params.keyspace.clone())
            .unwrap_or_default(),
        name.name.clone(),
    ))
}

/// The index of the bind marker that alone gives `column`'s value
/// (`column = ?` in WHERE, or the INSERT value), if there is one.
fn key_marker(stmt: &Statement, column: &str) -> Option<u16> {
    use gyre_cql::{InsertValues, Operator, Predicate, Relation, Term};
    let in_where = |rels: &[Relation]| {
        rels.iter().find_map(|r| match r {
            Relation::Column {
                column: c,
                predicate: Predicate::Compare(Operator::Eq, Term::Bind(m)),
            } if c == column => Some(m.index),
            _ => None,
        })
    };
    let index = match stmt {
        Statement::Select(s) => in_where(&s.where_clause),
        Statement::Update(u) => in_where(&u.where_clause),
        Statement::Delete(d) => in_where(&d.where_clause),
        Statement::Insert(i) => match &i.values {
            InsertValues::Columns { columns, values } => {
                columns.iter().zip(values).find_map(|(c, v)| match v {
                    Term::Bind(m) if c == column => Some(m.index),
                    _ => None,
                })
            }
            _ => None,
        },
        _ => None,
    }?;
    u16::try_from(index).ok()
}

/// The columns and the one row of `DESCRIBE CLUSTER`, as Cassandra 4
/// answers it: cluster, partitioner, snitch, and with a keyspace in use,
/// `range_ownership`: each ring token (a range's end) with the addresses
/// of the keyspace's replicas for that range.
fn describe_cluster_row(
    cluster: &str,
    ownership: Option<Vec<(gyre_common::Token, Vec<std::net::SocketAddr>)>>,
) -> (Vec<(String, ColumnType)>, Vec<Option<Bytes>>) {
    let text = |s: &str| Some(CqlValue::Text(s.to_owned()).encode());
    let mut columns = vec![
        ("cluster".to_owned(), ColumnType::Varchar),
        ("partitioner".to_owned(), ColumnType::Varchar),
        ("snitch".to_owned(), ColumnType::Varchar),
    ];
    let mut row = vec![
        text(cluster),
        text("org.apache.cassandra.dht.Murmur3Partitioner"),
        // Each node's DC and rack come from its own configuration and
        // travel by gossip, as with Cassandra's GossipingPropertyFileSnitch.
        text("org.apache.cassandra.locator.GossipingPropertyFileSnitch"),
    ];
    if let Some(ranges) = ownership {
        columns.push((
            "range_ownership".to_owned(),
            ColumnType::Map(
                Box::new(ColumnType::Varchar),
                Box::new(ColumnType::List(Box::new(ColumnType::Varchar))),
            ),
        ));
        let entries = ranges
            .into_iter()
            .map(|(token, replicas)| {
                (
                    CqlValue::Text(token.to_string()),
                    CqlValue::List(
                        replicas
                            .iter()
                            .map(|a| CqlValue::Text(a.to_string()))
                            .collect(),
                    ),
                )
            })
            .collect();
        row.push(Some(CqlValue::Map(entries).encode()));
    }
    (columns, row)
}

fn rows_result(
    specs: Vec<ColumnSpec>,
    rows: Vec<Vec<Option<Bytes>>>,
    paging_state: Option<Bytes>,
    skip_metadata: bool,
) -> CqlResult {
    let mut metadata = RowsMetadata::new(specs);
    metadata.paging_state = paging_state;
    if skip_metadata {
        metadata = metadata.without_specs();
    }
    CqlResult::Rows(Rows { metadata, rows })
}

#[async_trait]
impl RequestHandler for CqlHandler {
    async fn handle(&self, conn: &ConnectionState, request: HandlerRequest) -> Response {
        if let Some(refused) = self.check_query_length(&request) {
            return refused;
        }
        let requested = gyre_protocol::client_warn::tracing_requested();
        // The rarer paths (traced requests, QUERY, BATCH, unplanned
        // EXECUTE) are boxed on their own: inline, the largest of them sets
        // the size of this future, which async_trait moves into its box on
        // every request (a memcpy that was a third of a request's cost).
        if requested || self.shared.tracer.sample() {
            return Box::pin(self.traced(conn, request, requested)).await;
        }
        self.dispatch(conn, request).await
    }
}

impl CqlHandler {
    async fn dispatch(&self, conn: &ConnectionState, request: HandlerRequest) -> Response {
        match request {
            HandlerRequest::Query(q) => Box::pin(self.query(conn, q)).await,
            HandlerRequest::Prepare(p) => match self.prepare(conn, &p.query, p.keyspace) {
                Ok(prepared) => Response::Result(CqlResult::Prepared(prepared)),
                Err(e) => error(e),
            },
            HandlerRequest::Execute(e) => self.execute(conn, e).await,
            HandlerRequest::Batch(b) => Box::pin(self.batch(conn, b)).await,
        }
    }

    /// Runs a request as a trace session (Cassandra's `Tracing`): its
    /// events, here and on the replicas it asks (the session id rides on
    /// the internode requests), and its session row go to `system_traces`;
    /// the client that asked gets the session id in the response.
    async fn traced(
        &self,
        conn: &ConnectionState,
        request: HandlerRequest,
        requested: bool,
    ) -> Response {
        use gyre_common::trace;
        let id = trace::next_timeuuid();
        let started_at = trace::timeuuid_millis(&id);
        let coordinator = self.shared.local;
        let state = trace::TraceState::new(id, coordinator.ip());
        let (request_name, first_event, parameters) = match &request {
            HandlerRequest::Query(q) => (
                "Execute CQL3 query",
                format!("Parsing {}", q.query),
                vec![
                    ("query".to_owned(), q.query.clone()),
                    (
                        "consistency_level".to_owned(),
                        q.params.consistency.to_string(),
                    ),
                ],
            ),
            HandlerRequest::Prepare(p) => (
                "Preparing CQL3 query",
                format!("Preparing {}", p.query),
                vec![("query".to_owned(), p.query.clone())],
            ),
            HandlerRequest::Execute(e) => (
                "Execute CQL3 prepared query",
                "Executing prepared statement".to_owned(),
                vec![(
                    "consistency_level".to_owned(),
                    e.params.consistency.to_string(),
                )],
            ),
            HandlerRequest::Batch(b) => (
                "Execute batch of CQL3 queries",
                format!("Executing batch of {} statements", b.statements.len()),
                vec![("consistency_level".to_owned(), b.consistency.to_string())],
            ),
        };
        state.event(first_event);
        let response = state.clone().scope(self.dispatch(conn, request)).await;
        trace::finish_session(trace::TraceSession {
            session_id: id,
            client: conn.peer().ip(),
            command: "QUERY".to_owned(),
            coordinator: coordinator.ip(),
            coordinator_port: i32::from(coordinator.port()),
            duration: state.elapsed_micros(),
            parameters,
            request: request_name.to_owned(),
            started_at,
        });
        if requested {
            gyre_protocol::client_warn::set_tracing_id(id);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepared_id_is_md5_of_keyspace_and_query() {
        let id = prepared_id(Some("ks"), "SELECT * FROM t");
        assert_eq!(id.len(), 16);
        assert_eq!(id, prepared_id(Some("ks"), "SELECT * FROM t"));
        assert_ne!(id, prepared_id(None, "SELECT * FROM t"));
        // MD5("") as a sanity check of the digest itself.
        assert_eq!(
            prepared_id(None, "").to_vec(),
            [
                0xd4, 0x1d, 0x8c, 0xd9, 0x8f, 0x00, 0xb2, 0x04, 0xe9, 0x80, 0x09, 0x98, 0xec, 0xf8,
                0x42, 0x7e
            ]
        );
    }

    #[test]
    fn pk_markers_follow_key_order() {
        let parsed = |q: &str| gyre_cql::parse(q).expect("parses").statement;
        let ins = parsed("INSERT INTO t (v, b, a) VALUES (:x, :y, :z)");
        assert_eq!(key_marker(&ins, "a"), Some(2));
        assert_eq!(key_marker(&ins, "b"), Some(1));
        let sel = parsed("SELECT * FROM t WHERE b = ? AND a = ?");
        assert_eq!(key_marker(&sel, "a"), Some(1));
        assert_eq!(
            key_marker(&parsed("SELECT * FROM t WHERE a IN ?"), "a"),
            None
        );
    }

    #[test]
    fn describe_cluster_row_as_cqlsh_reads_it() {
        let (cols, row) = describe_cluster_row("c1", None);
        let names: Vec<&str> = cols.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["cluster", "partitioner", "snitch"]);
        assert_eq!(row.len(), 3);
        assert_eq!(row[0].as_deref(), Some(&b"c1"[..]));
        assert_eq!(
            row[1].as_deref(),
            Some(&b"org.apache.cassandra.dht.Murmur3Partitioner"[..])
        );

        let a: std::net::SocketAddr = "127.0.0.1:7000".parse().expect("addr");
        let b: std::net::SocketAddr = "127.0.0.2:7000".parse().expect("addr");
        let (cols, row) = describe_cluster_row("c1", Some(vec![(-5, vec![a, b]), (9, vec![b])]));
        assert_eq!(cols.len(), 4);
        assert_eq!(cols[3].0, "range_ownership");
        let ty = cols[3].1.clone();
        let map = CqlValue::decode(&ty, row[3].as_deref().expect("value")).expect("decodes");
        assert_eq!(
            map,
            CqlValue::Map(vec![
                (
                    CqlValue::Text("-5".into()),
                    CqlValue::List(vec![
                        CqlValue::Text("127.0.0.1:7000".into()),
                        CqlValue::Text("127.0.0.2:7000".into())
                    ])
                ),
                (
                    CqlValue::Text("9".into()),
                    CqlValue::List(vec![CqlValue::Text("127.0.0.2:7000".into())])
                ),
            ])
        );
    }

    #[test]
    fn cache_evicts_oldest() {
        let mut c = PreparedCache::default();
        let stmt = || {
            Arc::new(Stmt {
                keyspace: None,
                parsed: Arc::new(gyre_cql::parse("SELECT * FROM system.local").expect("parses")),
                bind_names: Vec::new(),
                table: None,
                checked_at: AtomicU64::new(0),
                result_metadata_id: Bytes::new(),
                plan: None,
                result_metadata: RowsMetadata::empty(),
            })
        };
        for i in 0..PREPARED_CACHE_ENTRIES + 5 {
            c.insert(Bytes::from(i.to_string()), stmt());
        }
        assert_eq!(c.map.len(), PREPARED_CACHE_ENTRIES);
        assert!(!c.map.contains_key(&Bytes::from("0")));
        assert!(c.map.contains_key(&Bytes::from("5")));
    }
}
