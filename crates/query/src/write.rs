//! INSERT, UPDATE, DELETE and BATCH: statements to partition updates.

use bytes::Bytes;
use gyre_common::{Cell, CellName, DecoratedKey, Deletion, LocalTime, Partition, Timestamp};
use gyre_cql::{Assignment, CqlType, Delete, Insert, InsertValues, Statement, Update, Using};
use gyre_protocol::Consistency;
use gyre_schema::{encode_clustering_key, ColumnDef, ColumnKind, TableDef};
use gyre_storage::{ClusteringFilter, ColumnFilter, ReadFilter, TableId};

use crate::collections::{
    elements, field_path, is_multicell, key_path, prepend_elements, udt_fields,
};
use crate::error::{QueryError, Result};
use crate::processor::{
    analyze, clustering, partition_keys, Clustering, QueryParams, QueryProcessor,
};
use crate::values::{is_unset, term_bytes, term_i64};

/// Cassandra's TTL ceiling (20 years).
const MAX_TTL: i64 = 20 * 365 * 86_400;

/// Timestamp, TTL, "now" and consistency level of one write.
pub(crate) struct WriteTime {
    ts: Timestamp,
    ttl: u32,
    now: LocalTime,
    cl: Consistency,
}

/// One change to one column of one row.
enum Op {
    /// Replace the value (null deletes it).
    Set(Option<Bytes>),
    /// Add the elements of a collection value (`c = c + ...`).
    Add(Bytes),
    /// Remove set elements or map keys, given as a set value.
    Remove(Bytes),
    /// `m[key] = value` (null deletes the entry); `DELETE m[key]`.
    SetElement(Bytes, Option<Bytes>),
    /// `l = [..] + l`: the elements of a list value, before the others.
    Prepend(Bytes),
    /// `l = l - [..]`: every element equal to one of a list value's.
    RemoveValues(Bytes),
    /// `l[i] = value` (null deletes it); `DELETE l[i]`.
    SetIndex(i32, Option<Bytes>),
    /// `c = c + n` / `c = c - n` on a counter: a delta cell for the leader.
    Counter(i64),
    /// `u.field = value` (null deletes it); `DELETE u.field`: one field of
    /// a non-frozen user type, by position.
    SetField(usize, Option<Bytes>),
}

impl WriteTime {
    pub(crate) fn cell(&self, value: Option<Bytes>) -> Cell {
        match value {
            None => Cell::tombstone(self.ts, self.now),
            Some(v) if self.ttl > 0 => Cell::expiring(self.ts, v, self.ttl, self.now),
            Some(v) => Cell::live(self.ts, v),
        }
    }

    pub(crate) fn deletion(&self) -> Deletion {
        Deletion::new(self.ts, self.now)
    }
}

impl QueryProcessor {
    pub(crate) async fn modify(
        &self,
        stmt: &Statement,
        params: &QueryParams,
    ) -> Result<crate::processor::QueryResult> {
        if crate::cas::is_conditional(stmt) {
            return self.modify_conditional(stmt, params).await;
        }
        check_write_consistency(params.consistency)?;
        let started = std::time::Instant::now();
        let mut updates: Vec<(TableId, Partition)> = Vec::new();
        self.collect_updates(stmt, params, &mut updates).await?;
        self.plan.record(started.elapsed());
        let logged = match stmt {
            Statement::Batch(b) => Some(b.kind == gyre_cql::BatchKind::Logged),
            _ => None,
        };
        self.apply_updates(updates, params.consistency, logged)
            .await?;
        Ok(crate::processor::QueryResult::Void)
    }

    /// Executes a protocol BATCH: each statement with its own values, all
    /// applied as one batch (`logged`: through the batchlog). A batch with
    /// conditions is one lightweight transaction (`serial`: its serial
    /// consistency) and returns its `[applied]` rows.
    pub async fn execute_batch(
        &self,
        statements: &[(gyre_cql::Parsed, QueryParams)],
        consistency: gyre_protocol::Consistency,
        serial: Option<gyre_protocol::Consistency>,
        kind: gyre_cql::BatchKind,
    ) -> Result<crate::processor::QueryResult> {
        let logged = kind == gyre_cql::BatchKind::Logged;
        if statements
            .iter()
            .any(|(p, _)| crate::cas::is_conditional(&p.statement))
        {
            let mut stmts = Vec::with_capacity(statements.len());
            for (parsed, params) in statements {
                if params.values.len() < parsed.bind_markers.len() {
                    return Err(QueryError::invalid(format!(
                        "There were {} markers(?) in CQL but {} bound variables",
                        parsed.bind_markers.len(),
                        params.values.len()
                    )));
                }
                let m = match &parsed.statement {
                    Statement::Insert(i) => gyre_cql::Modification::Insert(i.clone()),
                    Statement::Update(u) => gyre_cql::Modification::Update(u.clone()),
                    Statement::Delete(d) => gyre_cql::Modification::Delete(d.clone()),
                    _ => {
                        return Err(QueryError::invalid(
                            "Only INSERT, UPDATE and DELETE statements are allowed in a BATCH",
                        ))
                    }
                };
                stmts.push((m, params));
            }
            return self
                .execute_conditional(&stmts, true, consistency, serial)
                .await;
        }
        check_write_consistency(consistency)?;
        let mut tables = Vec::with_capacity(statements.len());
        for (parsed, params) in statements {
            let name = match &parsed.statement {
                Statement::Insert(i) => &i.table,
                Statement::Update(u) => &u.table,
                Statement::Delete(d) => &d.table,
                _ => continue,
            };
            tables.push(self.table(name, params)?);
        }
        check_batch_kind(kind, &tables)?;
        let started = std::time::Instant::now();
        let mut updates: Vec<(TableId, Partition)> = Vec::new();
        for (parsed, params) in statements {
            if params.values.len() < parsed.bind_markers.len() {
                return Err(QueryError::invalid(format!(
                    "There were {} markers(?) in CQL but {} bound variables",
                    parsed.bind_markers.len(),
                    params.values.len()
                )));
            }
            if !matches!(
                parsed.statement,
                Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_)
            ) {
                return Err(QueryError::invalid(
                    "Only INSERT, UPDATE and DELETE statements are allowed in a BATCH",
                ));
            }
            self.collect_updates(&parsed.statement, params, &mut updates)
                .await?;
        }
        self.plan.record(started.elapsed());
        self.apply_updates(updates, consistency, Some(logged))
            .await?;
        Ok(crate::processor::QueryResult::Void)
    }

    async fn collect_updates(
        &self,
        stmt: &Statement,
        params: &QueryParams,
        updates: &mut Vec<(TableId, Partition)>,
    ) -> Result<()> {
        match stmt {
            Statement::Insert(i) => self.insert(i, params, None, updates).await?,
            Statement::Update(u) => self.update(u, params, None, updates).await?,
            Statement::Delete(d) => self.delete(d, params, None, updates).await?,
            Statement::Batch(b) => {
                let tables = b
                    .statements
                    .iter()
                    .map(|m| self.table(modification_table(m), params))
                    .collect::<Result<Vec<_>>>()?;
                check_batch_kind(b.kind, &tables)?;
                if b.using.ttl.is_some() {
                    return Err(QueryError::invalid("A BATCH cannot have a TTL"));
                }
                // Every statement of a batch shares one timestamp unless it has its own.
                let ts = match &b.using.timestamp {
                    Some(t) => term_i64(t, "timestamp", &params.values)?,
                    None => None,
                }
                .or(params.timestamp)
                .unwrap_or_else(|| self.next_micros());
                for m in &b.statements {
                    match m {
                        gyre_cql::Modification::Insert(i) => {
                            self.insert(i, params, Some(ts), updates).await?
                        }
                        gyre_cql::Modification::Update(u) => {
                            self.update(u, params, Some(ts), updates).await?
                        }
                        gyre_cql::Modification::Delete(d) => {
                            self.delete(d, params, Some(ts), updates).await?
                        }
                    }
                }
            }
            _ => return Err(QueryError::invalid("not a modification statement")),
        }
        Ok(())
    }

    /// Applies the updates of one statement or batch (`logged`: `None`
    /// for a single statement, else the batch kind).
    async fn apply_updates(
        &self,
        updates: Vec<(TableId, Partition)>,
        consistency: gyre_protocol::Consistency,
        logged: Option<bool>,
    ) -> Result<()> {
        // One mutation per partition, as Cassandra does with a batch: fewer
        // round trips, and each partition's part applies atomically.
        let mut merged: Vec<(TableId, Partition)> = Vec::with_capacity(updates.len());
        // Nothing to send for a statement whose values were all unset.
        for (table, update) in updates.into_iter().filter(|(_, p)| !p.is_empty()) {
            match merged
                .iter_mut()
                .find(|(t, p)| *t == table && p.key == update.key)
            {
                Some((_, into)) => gyre_common::lww::merge_partitions(into, update),
                None => merged.push((table, update)),
            }
        }
        // Counter increments go through a leader replica each.
        let counter_tables: Vec<TableId> = merged
            .iter()
            .map(|(t, _)| *t)
            .filter(|t| self.is_counter_table(*t))
            .collect();
        if !counter_tables.is_empty() {
            let (counters, rest): (Vec<_>, Vec<_>) = merged.into_iter().partition(|(t, p)| {
                counter_tables.contains(t)
                    && p.cells()
                        .any(|(_, c)| !matches!(c.value, gyre_common::CellValue::Tombstone { .. }))
            });
            merged = rest;
            for (table, deltas) in counters {
                self.data.apply_counter(table, deltas, consistency).await?;
            }
        }
        if merged.is_empty() {
            return Ok(());
        }
        self.check_guardrails(&merged, logged.is_some())?;
        match logged {
            Some(logged) => self.data.apply_batch(merged, consistency, logged).await,
            None => {
                for (table, update) in merged {
                    self.data.apply(table, update, consistency).await?;
                }
                Ok(())
            }
        }
    }

    /// Mutation size on every write, batch size on batches, before
    /// anything is sent.
    pub(crate) fn check_guardrails(
        &self,
        merged: &[(TableId, Partition)],
        batch: bool,
    ) -> Result<()> {
        let guardrails = self.guardrails.read();
        let max = guardrails.max_mutation_size_bytes;
        let mut total = 0;
        for (table, update) in merged {
            let size = update.size_estimate();
            total += size;
            if size > max {
                let ks = self
                    .schema
                    .read()
                    .table_by_id(*table)
                    .map_or_else(|| "?".to_owned(), |d| d.keyspace.clone());
                guardrails.check_mutation(&ks, update)?;
            }
        }
        if batch && merged.len() > 1 && total > guardrails.batch_size_warn_threshold_bytes {
            let schema = self.schema.read();
            let mut tables: Vec<String> = merged
                .iter()
                .map(|(t, _)| {
                    schema
                        .table_by_id(*t)
                        .map_or_else(|| "?".to_owned(), |d| format!("{}.{}", d.keyspace, d.name))
                })
                .collect();
            tables.sort();
            tables.dedup();
            guardrails.check_batch(&tables, merged.len(), total)?;
        }
        Ok(())
    }

    pub(crate) fn write_time(
        &self,
        table: &TableDef,
        using: &Using,
        params: &QueryParams,
        batch_ts: Option<Timestamp>,
    ) -> Result<WriteTime> {
        let client_ts = match &using.timestamp {
            Some(t) => term_i64(t, "timestamp", &params.values)?,
            None => None,
        }
        .or(batch_ts)
        .or(params.timestamp);
        let ts = match client_ts {
            Some(ts) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as i64);
                self.guardrails.read().check_timestamp(ts, now)?;
                ts
            }
            None => self.next_micros(),
        };
        let ttl = match &using.ttl {
            Some(t) => term_i64(t, "TTL", &params.values)?,
            None => None,
        }
        .unwrap_or(i64::from(table.options.default_time_to_live));
        if ttl < 0 {
            return Err(QueryError::invalid(format!(
                "A TTL must be greater or equal to 0, but was {ttl}"
            )));
        }
        if ttl > MAX_TTL {
            return Err(QueryError::invalid(format!(
                "ttl is too large. requested ({ttl}) maximum ({MAX_TTL})"
            )));
        }
        Ok(WriteTime {
            ts,
            ttl: ttl as u32,
            now: self.now_for(params),
            cl: params.consistency,
        })
    }

    pub(crate) async fn insert(
        &self,
        ins: &Insert,
        params: &QueryParams,
        batch_ts: Option<Timestamp>,
        out: &mut Vec<(TableId, Partition)>,
    ) -> Result<()> {
        let table = self.table(&ins.table, params)?;
        if table.is_counter() {
            return Err(QueryError::invalid(
                "INSERT statements are not allowed on counter tables, use UPDATE instead",
            ));
        }
        let binds = &params.values;
        let wt = self.write_time(&table, &ins.using, params, batch_ts)?;
        // The columns written; an unset value leaves its column out.
        let mut assigned: Vec<(&ColumnDef, Option<Bytes>)> = Vec::new();
        match &ins.values {
            InsertValues::Columns { columns, values } => {
                if columns.len() != values.len() {
                    return Err(QueryError::invalid("Unmatched column names/values"));
                }
                let mut seen: Vec<&str> = Vec::new();
                for (name, term) in columns.iter().zip(values) {
                    let col = column_def(&table, name)?;
                    if seen.contains(&col.name.as_str()) {
                        return Err(QueryError::invalid("The column names contains duplicates"));
                    }
                    seen.push(&col.name);
                    if !col.kind.is_primary_key() && is_unset(term, binds) {
                        continue;
                    }
                    assigned.push((col, term_bytes(term, &col.ty, name, binds)?));
                }
            }
            InsertValues::Json { json, default } => {
                let text = match term_bytes(json, &CqlType::Text, "[json]", binds)? {
                    Some(b) => String::from_utf8(b.to_vec())
                        .map_err(|_| QueryError::invalid("Invalid UTF-8 in INSERT JSON value"))?,
                    None => return Err(QueryError::invalid("Got null for INSERT JSON values")),
                };
                assigned = crate::json::insert_values(&table, &text, *default)?;
            }
        }
        let get = |col: &ColumnDef| -> Result<Bytes> {
            match assigned.iter().find(|(c, _)| c.name == col.name) {
                Some((_, Some(v))) => Ok(v.clone()),
                Some((_, None)) => Err(QueryError::invalid(format!(
                    "Invalid null value in condition for column {}",
                    col.name
                ))),
                None => Err(QueryError::invalid(format!(
                    "Some {} key parts are missing: {}",
                    if matches!(col.kind, ColumnKind::PartitionKey(_)) {
                        "partition"
                    } else {
                        "clustering"
                    },
                    col.name
                ))),
            }
        };
        let pk: Vec<Bytes> = table
            .partition_key()
            .into_iter()
            .map(get)
            .collect::<Result<_>>()?;
        // Cassandra checks the serialized key: a component of a composite
        // key may be empty, a one-column key may not.
        if let [only] = pk.as_slice() {
            if only.is_empty() {
                return Err(QueryError::invalid("Key may not be empty"));
            }
        }
        let parts: Vec<&[u8]> = pk.iter().map(|b| b.as_ref()).collect();
        let key = DecoratedKey::new(gyre_schema::encode_partition_key(&parts));
        let ck_cols = table.clustering();
        // Only static columns and no clustering values: a partition-level write, no row.
        let static_only = !ck_cols.is_empty()
            && ck_cols
                .iter()
                .all(|c| !assigned.iter().any(|(a, _)| a.name == c.name))
            && assigned.iter().any(|(c, _)| c.kind == ColumnKind::Static)
            && assigned
                .iter()
                .all(|(c, _)| matches!(c.kind, ColumnKind::Static | ColumnKind::PartitionKey(_)));
        if static_only {
            let mut p = Partition::new(key);
            for (col, v) in assigned {
                if col.kind == ColumnKind::Static {
                    p = self
                        .apply_op(&table, p, None, col, &Op::Set(v), &wt)
                        .await?;
                }
            }
            out.push((table.id, p));
            return Ok(());
        }
        let ck_vals: Vec<Bytes> = ck_cols.iter().map(|c| get(c)).collect::<Result<_>>()?;
        let ck = encode_ck(&ck_cols, &ck_vals)?;
        // The row marker keeps the row alive with only its key columns.
        let mut p = Partition::new(key).set(
            ck.clone(),
            CellName::simple(Bytes::new()),
            wt.cell(Some(Bytes::new())),
        );
        for (col, v) in assigned {
            if col.kind.is_primary_key() {
                continue;
            }
            let target = (col.kind != ColumnKind::Static).then_some(&ck);
            p = self
                .apply_op(&table, p, target, col, &Op::Set(v), &wt)
                .await?;
        }
        out.push((table.id, p));
        Ok(())
    }

    pub(crate) async fn update(
        &self,
        upd: &Update,
        params: &QueryParams,
        batch_ts: Option<Timestamp>,
        out: &mut Vec<(TableId, Partition)>,
    ) -> Result<()> {
        let table = self.table(&upd.table, params)?;
        if table.is_counter() {
            check_counter_using(&upd.using)?;
        }
        let wt = self.write_time(&table, &upd.using, params, batch_ts)?;
        let binds = &params.values;
        let mut ops: Vec<(&ColumnDef, Op)> = Vec::new();
        for a in &upd.assignments {
            // An unset value leaves the column (or element) untouched.
            match a {
                Assignment::Set { value, .. }
                | Assignment::Add { value, .. }
                | Assignment::Subtract { value, .. }
                | Assignment::SetElement { value, .. }
                | Assignment::SetField { value, .. }
                    if is_unset(value, binds) =>
                {
                    continue
                }
                _ => {}
            }
            let (column, op) = match a {
                Assignment::Set { column, value } => {
                    let col = column_def(&table, column)?;
                    if col.ty == CqlType::Counter {
                        return Err(QueryError::invalid(format!(
                            "Cannot set the value of counter column {column} (counters can only be incremented/decremented, not set)"
                        )));
                    }
                    (col, Op::Set(term_bytes(value, &col.ty, column, binds)?))
                }
                Assignment::Add { column, value } | Assignment::Subtract { column, value }
                    if table
                        .column(column)
                        .is_some_and(|c| c.ty == CqlType::Counter) =>
                {
                    let col = column_def(&table, column)?;
                    let v = non_null(term_bytes(value, &CqlType::Counter, column, binds)?, column)?;
                    let d = gyre_common::counter::parse_delta(&v).ok_or_else(|| {
                        QueryError::invalid(format!("Invalid counter value for {column}"))
                    })?;
                    let d = if matches!(a, Assignment::Subtract { .. }) {
                        d.checked_neg().ok_or_else(|| {
                            QueryError::invalid(format!("Invalid counter value for {column}"))
                        })?
                    } else {
                        d
                    };
                    (col, Op::Counter(d))
                }
                Assignment::Add { column, value } => {
                    let col = column_def(&table, column)?;
                    if !matches!(
                        crate::values::unfrozen(&col.ty),
                        CqlType::List(_) | CqlType::Set(_) | CqlType::Map(..)
                    ) {
                        return Err(QueryError::invalid(format!(
                            "Invalid operation ({column} = {column} + ?) for non counter column {column}"
                        )));
                    }
                    if !is_multicell(&col.ty) {
                        return Err(QueryError::invalid(format!(
                            "Invalid operation (+) for non-collection column {column}"
                        )));
                    }
                    let v = non_null(term_bytes(value, &col.ty, column, binds)?, column)?;
                    (col, Op::Add(v))
                }
                Assignment::Subtract { column, value } => {
                    let col = column_def(&table, column)?;
                    let keys_ty = match &col.ty {
                        CqlType::Set(_) | CqlType::List(_) => col.ty.clone(),
                        CqlType::Map(k, _) => CqlType::Set(k.clone()),
                        _ => {
                            return Err(QueryError::invalid(format!(
                                "Invalid operation (-) for column {column}: only non-frozen collections are supported"
                            )))
                        }
                    };
                    let v = non_null(term_bytes(value, &keys_ty, column, binds)?, column)?;
                    if matches!(col.ty, CqlType::List(_)) {
                        (col, Op::RemoveValues(v))
                    } else {
                        (col, Op::Remove(v))
                    }
                }
                Assignment::SetElement { column, key, value } => {
                    let col = column_def(&table, column)?;
                    match &col.ty {
                        CqlType::Map(kt, vt) => {
                            let k = non_null(term_bytes(key, kt, column, binds)?, column)?;
                            (
                                col,
                                Op::SetElement(k, term_bytes(value, vt, column, binds)?),
                            )
                        }
                        CqlType::List(et) => {
                            let i = list_index(key, column, binds)?;
                            (col, Op::SetIndex(i, term_bytes(value, et, column, binds)?))
                        }
                        _ => {
                            return Err(QueryError::invalid(format!(
                                "Element assignment is only supported on non-frozen lists and maps ({column})"
                            )))
                        }
                    }
                }
                Assignment::Prepend { column, value } => {
                    let col = column_def(&table, column)?;
                    if !matches!(col.ty, CqlType::List(_)) {
                        return Err(QueryError::invalid(format!(
                            "Invalid operation (prepend) for non-list column {column}"
                        )));
                    }
                    let v = non_null(term_bytes(value, &col.ty, column, binds)?, column)?;
                    (col, Op::Prepend(v))
                }
                Assignment::SetField {
                    column,
                    field,
                    value,
                } => {
                    let col = column_def(&table, column)?;
                    let (i, ft) = udt_field_of(col, field, "assignment")?;
                    (col, Op::SetField(i, term_bytes(value, ft, column, binds)?))
                }
            };
            if column.kind.is_primary_key() {
                return Err(QueryError::invalid(format!(
                    "PRIMARY KEY part {} found in SET part",
                    column.name
                )));
            }
            ops.push((column, op));
        }
        let w = analyze(&table, &upd.where_clause, binds)?;
        self.guardrails.read().check_cartesian(&w)?;
        check_where_for_write(&w)?;
        let keys = required_keys(&table, &w)?;
        let only_static = ops.iter().all(|(c, _)| c.kind == ColumnKind::Static);
        let rows = target_rows(&table, &w, only_static)?;
        for key in keys {
            let mut p = Partition::new(DecoratedKey::new(key));
            for (col, op) in &ops {
                if col.kind == ColumnKind::Static {
                    p = self.apply_op(&table, p, None, col, op, &wt).await?;
                } else {
                    for ck in &rows {
                        p = self.apply_op(&table, p, Some(ck), col, op, &wt).await?;
                    }
                }
            }
            out.push((table.id, p));
        }
        Ok(())
    }

    pub(crate) async fn delete(
        &self,
        del: &Delete,
        params: &QueryParams,
        batch_ts: Option<Timestamp>,
        out: &mut Vec<(TableId, Partition)>,
    ) -> Result<()> {
        let table = self.table(&del.table, params)?;
        if del.using.ttl.is_some() {
            return Err(QueryError::invalid("A DELETE cannot have a TTL"));
        }
        let wt = self.write_time(&table, &del.using, params, batch_ts)?;
        let mut ops: Vec<(&ColumnDef, Op)> = Vec::new();
        for d in &del.columns {
            let (col, op) = match d {
                gyre_cql::Deletion::Column(name) => (column_def(&table, name)?, Op::Set(None)),
                gyre_cql::Deletion::Element { column, key } => {
                    let col = column_def(&table, column)?;
                    match &col.ty {
                        CqlType::Set(kt) | CqlType::Map(kt, _) => {
                            let k =
                                non_null(term_bytes(key, kt, column, &params.values)?, column)?;
                            (col, Op::SetElement(k, None))
                        }
                        CqlType::List(_) => {
                            (col, Op::SetIndex(list_index(key, column, &params.values)?, None))
                        }
                        _ => {
                            return Err(QueryError::invalid(format!(
                                "Element deletion is only supported on non-frozen collections ({column})"
                            )))
                        }
                    }
                }
                gyre_cql::Deletion::Field { column, field } => {
                    let col = column_def(&table, column)?;
                    let (i, _) = udt_field_of(col, field, "deletion")?;
                    (col, Op::SetField(i, None))
                }
            };
            if col.kind.is_primary_key() {
                return Err(QueryError::invalid(format!(
                    "Invalid identifier {} for deletion (should not be a PRIMARY KEY part)",
                    col.name
                )));
            }
            ops.push((col, op));
        }
        let w = analyze(&table, &del.where_clause, &params.values)?;
        self.guardrails.read().check_cartesian(&w)?;
        check_where_for_write(&w)?;
        let keys = required_keys(&table, &w)?;
        let sel = clustering(&table, &w)?;
        let only_static = !ops.is_empty() && ops.iter().all(|(c, _)| c.kind == ColumnKind::Static);
        let rows = if ops.is_empty() {
            Vec::new()
        } else {
            target_rows(&table, &w, only_static)?
        };
        for key in keys {
            let mut p = Partition::new(DecoratedKey::new(key));
            if ops.is_empty() {
                p = match &sel {
                    Clustering::All => p.delete_partition(wt.deletion()),
                    Clustering::Rows(rows) => rows
                        .iter()
                        .fold(p, |p, ck| p.delete_row(ck.clone(), wt.deletion())),
                    Clustering::Slices(slices) => slices
                        .iter()
                        .fold(p, |p, s| p.delete_range(s.clone(), wt.deletion())),
                };
            }
            for (col, op) in &ops {
                if col.kind == ColumnKind::Static {
                    p = self.apply_op(&table, p, None, col, op, &wt).await?;
                } else {
                    for ck in &rows {
                        p = self.apply_op(&table, p, Some(ck), col, op, &wt).await?;
                    }
                }
            }
            out.push((table.id, p));
        }
        Ok(())
    }

    /// Adds one column change of one row (`ck`, or the static row when
    /// `None`) to the partition update.
    async fn apply_op(
        &self,
        table: &TableDef,
        mut p: Partition,
        ck: Option<&Bytes>,
        col: &ColumnDef,
        op: &Op,
        wt: &WriteTime,
    ) -> Result<Partition> {
        let name =
            |path: Bytes| CellName::element(Bytes::copy_from_slice(col.name.as_bytes()), path);
        let multicell = is_multicell(&col.ty);
        match op {
            Op::Counter(d) => Ok(put(
                p,
                ck,
                cell_name(col),
                Cell::live(wt.ts, gyre_common::counter::delta_value(*d)),
            )),
            Op::Set(v) if !multicell => Ok(put(p, ck, cell_name(col), wt.cell(v.clone()))),
            Op::Set(v) if matches!(col.ty, CqlType::UserType(_)) => {
                // Every field is written (null ones as tombstones), so no
                // read is needed. A whole deletion wins ties; a new value's
                // nulls shadow older fields just below its timestamp, like
                // a collection's replacement.
                for (path, value) in udt_fields(&col.ty, v.as_deref())? {
                    let cell = match value {
                        Some(value) => wt.cell(Some(value)),
                        None if v.is_some() => Cell::tombstone(wt.ts - 1, wt.now),
                        None => Cell::tombstone(wt.ts, wt.now),
                    };
                    p = put(p, ck, name(path), cell);
                }
                Ok(p)
            }
            Op::SetField(i, v) => Ok(put(p, ck, name(field_path(*i)), wt.cell(v.clone()))),
            Op::Set(v) => {
                // The engine has no column-level deletion: replacing a
                // collection tombstones the elements stored now (read first).
                // Just below the write's timestamp, so the new elements win;
                // at it for a delete (ties go to the tombstone).
                let ts = if v.is_some() { wt.ts - 1 } else { wt.ts };
                for path in self.stored_paths(table, &p, ck, col, wt).await? {
                    p = put(p, ck, name(path), Cell::tombstone(ts, wt.now));
                }
                if let Some(v) = v {
                    for (path, value) in elements(&col.ty, v, wt.ts)? {
                        p = put(p, ck, name(path), wt.cell(Some(value)));
                    }
                }
                Ok(p)
            }
            Op::Add(v) => {
                for (path, value) in elements(&col.ty, v, wt.ts)? {
                    p = put(p, ck, name(path), wt.cell(Some(value)));
                }
                Ok(p)
            }
            Op::Remove(v) => {
                let kt = match &col.ty {
                    CqlType::Set(t) | CqlType::Map(t, _) => t.clone(),
                    _ => return Err(QueryError::invalid("not a set or map")),
                };
                for (path, _) in elements(&CqlType::Set(kt), v, wt.ts)? {
                    p = put(p, ck, name(path), Cell::tombstone(wt.ts, wt.now));
                }
                Ok(p)
            }
            Op::SetElement(k, v) => {
                let path = key_path(&col.ty, k)?;
                Ok(put(p, ck, name(path), wt.cell(v.clone())))
            }
            Op::Prepend(v) => {
                for (path, value) in prepend_elements(&col.ty, v, wt.ts)? {
                    p = put(p, ck, name(path), wt.cell(Some(value)));
                }
                Ok(p)
            }
            Op::RemoveValues(v) => {
                // Lists remove by value: find the stored elements (read first).
                let gone: Vec<Bytes> = elements(&col.ty, v, wt.ts)?
                    .into_iter()
                    .map(|(_, value)| value)
                    .collect();
                for (path, value) in self.stored_elements(table, &p, ck, col, wt).await? {
                    if gone.contains(&value) {
                        p = put(p, ck, name(path), Cell::tombstone(wt.ts, wt.now));
                    }
                }
                Ok(p)
            }
            Op::SetIndex(i, v) => {
                let stored = self.stored_elements(table, &p, ck, col, wt).await?;
                let (path, _) = usize::try_from(*i)
                    .ok()
                    .and_then(|i| stored.get(i))
                    .ok_or_else(|| {
                        QueryError::invalid(format!(
                            "Invalid index {i}, list has size {}",
                            stored.len()
                        ))
                    })?;
                Ok(put(p, ck, name(path.clone()), wt.cell(v.clone())))
            }
        }
    }

    /// The element paths stored for a collection column of one row.
    async fn stored_paths(
        &self,
        table: &TableDef,
        p: &Partition,
        ck: Option<&Bytes>,
        col: &ColumnDef,
        wt: &WriteTime,
    ) -> Result<Vec<Bytes>> {
        Ok(self
            .stored_elements(table, p, ck, col, wt)
            .await?
            .into_iter()
            .map(|(path, _)| path)
            .collect())
    }

    /// The live element cells (path, value) stored for a collection column
    /// of one row, in path (= list) order.
    async fn stored_elements(
        &self,
        table: &TableDef,
        p: &Partition,
        ck: Option<&Bytes>,
        col: &ColumnDef,
        wt: &WriteTime,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        let column = Bytes::copy_from_slice(col.name.as_bytes());
        let filter = ReadFilter {
            clustering: match ck {
                Some(ck) => ClusteringFilter::Names([ck.clone()].into_iter().collect()),
                None => ClusteringFilter::all(),
            },
            columns: ColumnFilter::Columns([column.clone()].into_iter().collect()),
            limit: None,
            reversed: false,
        };
        let Some(stored) = self
            .data
            .read(table.id, &p.key, &filter, wt.now, wt.cl)
            .await?
        else {
            return Ok(Vec::new());
        };
        let row = match ck {
            Some(ck) => stored.rows.get(ck),
            None => stored.static_row.as_ref(),
        };
        Ok(row
            .map(|r| {
                r.cells
                    .iter()
                    .filter(|(n, _)| n.column == column && !n.path.is_empty())
                    .filter_map(|(n, c)| c.value_at(wt.now).map(|v| (n.path.clone(), v.clone())))
                    .collect()
            })
            .unwrap_or_default())
    }
}

pub(crate) fn put(p: Partition, ck: Option<&Bytes>, name: CellName, cell: Cell) -> Partition {
    match ck {
        Some(ck) => p.set(ck.clone(), name, cell),
        None => p.set_static(name, cell),
    }
}

/// SERIAL levels are for Paxos (conditional) writes only.
pub(crate) fn check_write_consistency(cl: Consistency) -> Result<()> {
    if cl.is_serial() {
        return Err(QueryError::invalid(
            "You must use conditional updates for serializable writes",
        ));
    }
    Ok(())
}

fn modification_table(m: &gyre_cql::Modification) -> &gyre_cql::QualifiedName {
    match m {
        gyre_cql::Modification::Insert(i) => &i.table,
        gyre_cql::Modification::Update(u) => &u.table,
        gyre_cql::Modification::Delete(d) => &d.table,
    }
}

/// Cassandra's rules for counters in batches.
fn check_batch_kind(kind: gyre_cql::BatchKind, tables: &[TableDef]) -> Result<()> {
    let counters = tables.iter().filter(|t| t.is_counter()).count();
    match kind {
        gyre_cql::BatchKind::Counter if counters < tables.len() => Err(QueryError::invalid(
            "Cannot include non-counter statement in a counter batch",
        )),
        gyre_cql::BatchKind::Logged if counters > 0 => Err(QueryError::invalid(
            "Cannot include a counter statement in a logged batch",
        )),
        gyre_cql::BatchKind::Unlogged if counters > 0 && counters < tables.len() => Err(
            QueryError::invalid("Counter and non-counter mutations cannot exist in the same batch"),
        ),
        _ => Ok(()),
    }
}

/// Counter updates take neither a TTL nor a client timestamp.
fn check_counter_using(using: &Using) -> Result<()> {
    if using.timestamp.is_some() {
        return Err(QueryError::invalid(
            "Cannot provide custom timestamp for counter updates",
        ));
    }
    if using.ttl.is_some() {
        return Err(QueryError::invalid(
            "Cannot provide custom TTL for counter updates",
        ));
    }
    Ok(())
}

fn column_def<'a>(table: &'a TableDef, name: &str) -> Result<&'a ColumnDef> {
    table
        .column(name)
        .ok_or_else(|| QueryError::invalid(format!("Undefined column name {name}")))
}

/// A list index (`l[i]`): a non-null int.
/// The position and type of a field of a non-frozen user type column,
/// or Cassandra's refusal (frozen column, not a user type, no such field).
fn udt_field_of<'a>(col: &'a ColumnDef, field: &str, what: &str) -> Result<(usize, &'a CqlType)> {
    match &col.ty {
        CqlType::UserType(u) => u.field(field).ok_or_else(|| {
            QueryError::invalid(format!(
                "UDT column {} does not have a field named {field}",
                col.name
            ))
        }),
        CqlType::Frozen(t) if matches!(**t, CqlType::UserType(_)) => {
            Err(QueryError::invalid(if what == "deletion" {
                format!(
                    "Frozen UDT column {} does not support field deletion",
                    col.name
                )
            } else {
                format!(
                    "Invalid operation ({}.{field} = ?) for frozen UDT column {}",
                    col.name, col.name
                )
            }))
        }
        _ => Err(QueryError::invalid(format!(
            "Invalid field {what} ({}.{field}) for non-UDT column {}",
            col.name, col.name
        ))),
    }
}

fn list_index(term: &gyre_cql::Term, column: &str, binds: &[gyre_protocol::Value]) -> Result<i32> {
    let b = term_bytes(term, &CqlType::Int, column, binds)?.ok_or_else(|| {
        QueryError::invalid(format!("Invalid null value for list index of {column}"))
    })?;
    let b: [u8; 4] = b
        .as_ref()
        .try_into()
        .map_err(|_| QueryError::invalid(format!("Invalid list index for {column}")))?;
    Ok(i32::from_be_bytes(b))
}

fn non_null(v: Option<Bytes>, column: &str) -> Result<Bytes> {
    v.ok_or_else(|| QueryError::invalid(format!("Invalid null value for {column}")))
}

/// The rows a column change applies to: every clustering column fixed, or
/// none for a table without clustering columns or a static-only change.
fn target_rows(
    table: &TableDef,
    w: &crate::processor::Where,
    only_static: bool,
) -> Result<Vec<Bytes>> {
    match clustering(table, w)? {
        Clustering::Rows(r) => Ok(r),
        Clustering::All if table.clustering().is_empty() => Ok(vec![Bytes::new()]),
        Clustering::All if only_static => Ok(Vec::new()),
        _ => Err(QueryError::invalid(format!(
            "Some clustering keys are missing: {}",
            missing_clustering(table, w)
        ))),
    }
}

fn cell_name(col: &ColumnDef) -> CellName {
    CellName::simple(Bytes::copy_from_slice(col.name.as_bytes()))
}

fn encode_ck(cols: &[&ColumnDef], vals: &[Bytes]) -> Result<Bytes> {
    let mut comps = Vec::with_capacity(cols.len());
    for (c, v) in cols.iter().zip(vals) {
        let ColumnKind::Clustering(_, order) = c.kind else {
            continue;
        };
        comps.push((&c.ty, v.as_ref(), order));
    }
    Ok(Bytes::from(encode_clustering_key(&comps)?))
}

fn check_where_for_write(w: &crate::processor::Where) -> Result<()> {
    if let Some((col, _)) = w.others.first() {
        return Err(QueryError::invalid(format!(
            "Non PRIMARY KEY columns found in where clause: {}",
            col.name
        )));
    }
    if w.token_start.is_some() || w.token_end.is_some() {
        return Err(QueryError::invalid(
            "The token function cannot be used in WHERE clauses for UPDATE and DELETE statements",
        ));
    }
    Ok(())
}

fn required_keys(table: &TableDef, w: &crate::processor::Where) -> Result<Vec<Bytes>> {
    partition_keys(table, w)?.ok_or_else(|| {
        let missing: Vec<&str> = table
            .partition_key()
            .into_iter()
            .filter(|c| !w.keys.contains_key(&c.name))
            .map(|c| c.name.as_str())
            .collect();
        QueryError::invalid(format!(
            "Some partition key parts are missing: {}",
            missing.join(", ")
        ))
    })
}

fn missing_clustering(table: &TableDef, w: &crate::processor::Where) -> String {
    table
        .clustering()
        .into_iter()
        .filter(|c| {
            !matches!(
                w.keys.get(&c.name),
                Some(crate::processor::Restriction::Values(_))
            )
        })
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
