//! Prepared plans (issue 12, item 3): what PREPARE can decide once for the
//! common prepared statements, so that EXECUTE only checks and places the
//! bound values.
//!
//! Covered: INSERT of values (not JSON); UPDATE setting simple columns;
//! DELETE of a row, a partition or simple columns; SELECT of columns (also
//! `writetime` / `ttl` / `token`) from one partition, with an optional
//! `LIMIT`. Every key column is given by `=` with a bind marker or a
//! literal, the clustering key whole (or not at all where that names one
//! partition). No conditions (`IF`), no functions in values (`now()` must
//! be evaluated per request), no counters, no non-frozen collections (whose
//! writes read first). Anything else has no plan and runs through
//! [`QueryProcessor::execute_parsed`], which plans on every request.
//!
//! A plan holds the table's definition as it was at PREPARE (shared, never
//! copied per request), one slot per value with the protocol type its bytes
//! are checked against ([`gyre_protocol::CqlValue::validate`]: length and
//! format, no decoding, since the bytes are stored as they are), the
//! partition and clustering key composition, the cell names, and a SELECT's
//! selection and result columns. Whoever keeps plans must drop them when
//! the table changes: the node's prepared-statement cache compares the
//! definition whenever the schema epoch moved and answers UNPREPARED.
//! Errors are the ones the general path gives for the same values.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use gyre_common::{CellName, DecoratedKey, Partition};
use gyre_cql::{
    Assignment, CqlType, Deletion, InsertValues, Operator, Parsed, Predicate, Relation, Selection,
    Statement, Term, Using,
};
use gyre_protocol::{ColumnType, CqlValue, Value};
use gyre_schema::{ClusteringOrder, ColumnDef, ColumnKind, TableDef};
use gyre_storage::ClusteringFilter;

use crate::collections::is_multicell;
use crate::error::{QueryError, Result};
use crate::processor::{QueryParams, QueryProcessor, QueryResult};
use crate::values::{column_type, term_bytes};

/// A statement planned at PREPARE (see the module docs).
#[derive(Debug)]
pub struct PreparedPlan {
    table: Arc<TableDef>,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Write(WritePlan),
    Read(ReadPlan),
}

/// Where one value comes from.
#[derive(Debug, Clone)]
enum Slot {
    /// Bind marker `index`, its bytes checked against `ty`; `column` names
    /// it in messages.
    Marker {
        index: usize,
        ty: ColumnType,
        column: String,
    },
    /// A literal, encoded at PREPARE (`None`: null).
    Const(Option<Bytes>),
}

impl Slot {
    /// A slot for `term` as a value of `ty`; `None` for terms a plan does
    /// not cover (functions, collection literals, type hints).
    fn new(term: &Term, ty: &CqlType, column: &str) -> Option<Slot> {
        match term {
            Term::Bind(m) => Some(Slot::Marker {
                index: m.index,
                ty: column_type(ty),
                column: column.to_owned(),
            }),
            // An invalid literal: the general path reports it.
            Term::Literal(_) => term_bytes(term, ty, column, &[]).ok().map(Slot::Const),
            _ => None,
        }
    }

    /// The value: `None` when unset, `Some(None)` when null.
    fn get(&self, values: &[Value]) -> Result<Option<Option<Bytes>>> {
        match self {
            Slot::Const(v) => Ok(Some(v.clone())),
            Slot::Marker { index, ty, column } => match values.get(*index) {
                None => Err(QueryError::invalid(format!(
                    "There were {} markers(?) in CQL but {} bound variables",
                    index + 1,
                    values.len()
                ))),
                Some(Value::Null) => Ok(Some(None)),
                Some(Value::Unset) => Ok(None),
                Some(Value::Bytes(b)) => {
                    CqlValue::validate(ty, b).map_err(|e| {
                        QueryError::invalid(format!("Invalid value for column {column}: {e}"))
                    })?;
                    Ok(Some(Some(b.clone())))
                }
            },
        }
    }

    /// A value that may be null but not unset (keys, WHERE).
    fn get_set(&self, values: &[Value]) -> Result<Option<Bytes>> {
        self.get(values)?.ok_or_else(|| {
            let column = match self {
                Slot::Marker { column, .. } => column.as_str(),
                Slot::Const(_) => "",
            };
            QueryError::invalid(format!("Invalid unset value for column {column}"))
        })
    }
}

/// The primary key's composition.
#[derive(Debug)]
struct KeyPlan {
    /// Partition key columns in key order: the slot and the column name.
    partition: Vec<(Slot, String)>,
    /// Every clustering column in order (empty: none given, or the table
    /// has none).
    clustering: Vec<(Slot, String, CqlType, ClusteringOrder)>,
}

impl KeyPlan {
    /// From `column = term` relations on every partition key column and on
    /// all or none of the clustering columns, and nothing else.
    fn from_where(table: &TableDef, relations: &[Relation]) -> Option<KeyPlan> {
        let mut given: Vec<(&ColumnDef, &Term)> = Vec::with_capacity(relations.len());
        for r in relations {
            let Relation::Column {
                column,
                predicate: Predicate::Compare(Operator::Eq, term),
            } = r
            else {
                return None;
            };
            let col = table.column(column)?;
            if !col.kind.is_primary_key() || given.iter().any(|(c, _)| c.name == col.name) {
                return None;
            }
            given.push((col, term));
        }
        let find = |c: &ColumnDef| given.iter().find(|(g, _)| g.name == c.name).map(|g| g.1);
        let partition = table
            .partition_key()
            .into_iter()
            .map(|c| Some((Slot::new(find(c)?, &c.ty, &c.name)?, c.name.clone())))
            .collect::<Option<Vec<_>>>()?;
        let ck_cols = table.clustering();
        let clustering = if given.len() == partition.len() {
            Vec::new()
        } else {
            ck_cols
                .iter()
                .map(|c| clustering_slot(c, find(c)?, &c.name))
                .collect::<Option<Vec<_>>>()?
        };
        if given.len() != partition.len() + clustering.len() {
            return None;
        }
        Some(KeyPlan {
            partition,
            clustering,
        })
    }

    /// The partition key from its slots (null, unset and empty refused
    /// as the general path does).
    fn partition_key(&self, values: &[Value]) -> Result<DecoratedKey> {
        let null = |name: &str| {
            QueryError::invalid(format!("Invalid null value in condition for column {name}"))
        };
        if let [(slot, name)] = self.partition.as_slice() {
            let key = slot.get_set(values)?.ok_or_else(|| null(name))?;
            if key.is_empty() {
                return Err(QueryError::invalid("Key may not be empty"));
            }
            // One column: the key is the value's bytes.
            return Ok(DecoratedKey::new(key));
        }
        let parts = self
            .partition
            .iter()
            .map(|(slot, name)| slot.get_set(values)?.ok_or_else(|| null(name)))
            .collect::<Result<Vec<Bytes>>>()?;
        // A component of a composite key may be empty (Cassandra checks the
        // serialized key, which is not).
        let parts: Vec<&[u8]> = parts.iter().map(|b| b.as_ref()).collect();
        Ok(DecoratedKey::new(gyre_schema::encode_partition_key(&parts)))
    }

    /// The clustering key from its slots (`Bytes::new()` when none).
    fn clustering_key(&self, values: &[Value]) -> Result<Bytes> {
        if self.clustering.is_empty() {
            return Ok(Bytes::new());
        }
        let mut out = Vec::new();
        for (slot, name, ty, order) in &self.clustering {
            let v = slot.get_set(values)?.ok_or_else(|| {
                QueryError::invalid(format!("Invalid null value in condition for column {name}"))
            })?;
            out.extend(gyre_schema::encode_clustering(ty, &v, *order)?);
        }
        Ok(Bytes::from(out))
    }
}

fn clustering_slot(
    c: &ColumnDef,
    term: &Term,
    name: &str,
) -> Option<(Slot, String, CqlType, ClusteringOrder)> {
    let ColumnKind::Clustering(_, order) = c.kind else {
        return None;
    };
    Some((
        Slot::new(term, &c.ty, name)?,
        c.name.clone(),
        c.ty.clone(),
        order,
    ))
}

/// What a write does to its row.
#[derive(Debug, PartialEq)]
enum WriteKind {
    /// INSERT: a row marker, then the cells.
    Insert,
    /// UPDATE, or DELETE of columns: the cells (tombstones for DELETE).
    Cells,
    /// DELETE of the row (clustering given) or the whole partition.
    DeleteRow,
}

#[derive(Debug)]
struct WritePlan {
    kind: WriteKind,
    using: Using,
    key: KeyPlan,
    /// Regular and static cells written, in statement order.
    cells: Vec<CellPlan>,
}

#[derive(Debug)]
struct CellPlan {
    /// `None`: a DELETE's tombstone.
    slot: Option<Slot>,
    name: CellName,
    is_static: bool,
}

impl CellPlan {
    fn new(col: &ColumnDef, slot: Option<Slot>) -> CellPlan {
        CellPlan {
            slot,
            name: CellName::simple(Bytes::copy_from_slice(col.name.as_bytes())),
            is_static: col.kind == ColumnKind::Static,
        }
    }
}

/// A column a write plan may set: simple (one cell), not a key column.
fn plain_column<'a>(table: &'a TableDef, name: &str) -> Option<&'a ColumnDef> {
    table
        .column(name)
        .filter(|c| !c.kind.is_primary_key() && !is_multicell(&c.ty))
}

#[derive(Debug)]
struct ReadPlan {
    key: KeyPlan,
    items: Vec<crate::select::Item>,
    columns: Vec<(String, ColumnType)>,
    limit: Option<Term>,
}

impl QueryProcessor {
    /// Plans a parsed statement against the current schema, if it is one a
    /// plan covers (module docs); `None` otherwise, and also when the
    /// statement is invalid (the general path then reports why).
    pub fn plan(&self, parsed: &Parsed, keyspace: Option<&str>) -> Option<PreparedPlan> {
        let name = match &parsed.statement {
            Statement::Select(s) => &s.table,
            Statement::Insert(i) => &i.table,
            Statement::Update(u) => &u.table,
            Statement::Delete(d) => &d.table,
            _ => return None,
        };
        let ks = name.keyspace.as_deref().or(keyspace)?;
        let table = Arc::new(self.schema.read().table(ks, &name.name)?.clone());
        if table.is_counter() {
            return None;
        }
        let kind = match &parsed.statement {
            Statement::Insert(i) => Kind::Write(insert_plan(&table, i)?),
            Statement::Update(u) => Kind::Write(update_plan(&table, u)?),
            Statement::Delete(d) => Kind::Write(delete_plan(&table, d)?),
            Statement::Select(s) => Kind::Read(select_plan(&table, s)?),
            _ => return None,
        };
        Some(PreparedPlan { table, kind })
    }

    /// Executes a plan with the request's values. A SELECT's rows come
    /// without their columns ([`PreparedPlan::result_columns`] has them).
    pub async fn execute_plan(
        &self,
        plan: &PreparedPlan,
        markers: usize,
        params: &QueryParams,
    ) -> Result<QueryResult> {
        if params.values.len() < markers {
            return Err(QueryError::invalid(format!(
                "There were {markers} markers(?) in CQL but {} bound variables",
                params.values.len()
            )));
        }
        match &plan.kind {
            Kind::Write(w) => self.execute_write_plan(&plan.table, w, params).await,
            Kind::Read(r) => self.execute_read_plan(&plan.table, r, params).await,
        }
    }

    async fn execute_write_plan(
        &self,
        table: &TableDef,
        w: &WritePlan,
        params: &QueryParams,
    ) -> Result<QueryResult> {
        crate::write::check_write_consistency(params.consistency)?;
        let started = std::time::Instant::now();
        let values = &params.values;
        let wt = self.write_time(table, &w.using, params, None)?;
        // Values are checked before the key, as the general path does.
        let mut cells = Vec::with_capacity(w.cells.len());
        for c in &w.cells {
            match &c.slot {
                None => cells.push((c, None)),
                Some(slot) => {
                    if let Some(v) = slot.get(values)? {
                        cells.push((c, v));
                    }
                }
            }
        }
        let key = w.key.partition_key(values)?;
        let ck = w.key.clustering_key(values)?;
        let mut p = Partition::new(key);
        match w.kind {
            WriteKind::Insert => {
                // The row marker keeps the row alive with only its key columns.
                p = p.set(
                    ck.clone(),
                    CellName::simple(Bytes::new()),
                    wt.cell(Some(Bytes::new())),
                );
            }
            WriteKind::DeleteRow if w.key.clustering.is_empty() => {
                p = p.delete_partition(wt.deletion());
            }
            WriteKind::DeleteRow => p = p.delete_row(ck.clone(), wt.deletion()),
            WriteKind::Cells => {}
        }
        for (c, v) in cells {
            let target = (!c.is_static).then_some(&ck);
            p = crate::write::put(p, target, c.name.clone(), wt.cell(v));
        }
        self.plan.record(started.elapsed());
        if p.is_empty() {
            // Every value unset: nothing to write.
            return Ok(QueryResult::Void);
        }
        let update = [(table.id, p)];
        self.check_guardrails(&update, false)?;
        let [(id, p)] = update;
        self.data.apply(id, p, params.consistency).await?;
        Ok(QueryResult::Void)
    }

    async fn execute_read_plan(
        &self,
        table: &TableDef,
        r: &ReadPlan,
        params: &QueryParams,
    ) -> Result<QueryResult> {
        let values = &params.values;
        let limit = match &r.limit {
            Some(t) => match crate::values::term_i64(t, "LIMIT", values)? {
                Some(n) if n > 0 => Some(n as usize),
                Some(_) => return Err(QueryError::invalid("LIMIT must be strictly positive")),
                None => None,
            },
            None => None,
        };
        let key = r.key.partition_key(values)?;
        let clustering = if r.key.clustering.is_empty() {
            ClusteringFilter::all()
        } else {
            ClusteringFilter::Names(BTreeSet::from([r.key.clustering_key(values)?]))
        };
        let rows_plan = crate::select::Plan {
            table,
            items: &r.items,
            filters: Vec::new(),
            static_only_rows: r.key.clustering.is_empty(),
            now: self.now_for(params),
            tally: Default::default(),
        };
        let mut rows = Vec::new();
        let paging_state = self
            .read_keyed(
                &rows_plan,
                std::slice::from_ref(&key.key),
                &clustering,
                crate::select::Keyed {
                    reversed: false,
                    limit,
                    per_partition: None,
                    counting: false,
                },
                params,
                &mut rows,
            )
            .await?;
        rows_plan.warn_tombstones(&self.guardrails.read());
        if let Some(l) = limit {
            rows.truncate(l);
        }
        Ok(QueryResult::Rows {
            columns: Vec::new(),
            rows,
            paging_state,
        })
    }
}

impl PreparedPlan {
    /// The table's definition the plan was made with.
    pub fn table(&self) -> &Arc<TableDef> {
        &self.table
    }

    /// A SELECT's result columns (empty for writes).
    pub fn result_columns(&self) -> &[(String, ColumnType)] {
        match &self.kind {
            Kind::Read(r) => &r.columns,
            Kind::Write(_) => &[],
        }
    }

    /// True for a SELECT.
    pub fn is_read(&self) -> bool {
        matches!(self.kind, Kind::Read(_))
    }
}

fn insert_plan(table: &TableDef, i: &gyre_cql::Insert) -> Option<WritePlan> {
    if i.if_not_exists {
        return None;
    }
    let InsertValues::Columns { columns, values } = &i.values else {
        return None;
    };
    if columns.len() != values.len() {
        return None;
    }
    let mut seen: Vec<&str> = Vec::with_capacity(columns.len());
    let mut cells = Vec::new();
    let mut keys: Vec<(&ColumnDef, &Term, &str)> = Vec::new();
    for (name, term) in columns.iter().zip(values) {
        let col = table.column(name)?;
        if seen.contains(&col.name.as_str()) {
            return None;
        }
        seen.push(&col.name);
        if col.kind.is_primary_key() {
            keys.push((col, term, name));
            continue;
        }
        if is_multicell(&col.ty) {
            return None;
        }
        cells.push(CellPlan::new(col, Some(Slot::new(term, &col.ty, name)?)));
    }
    let find = |c: &ColumnDef| keys.iter().find(|(k, _, _)| k.name == c.name);
    let partition = table
        .partition_key()
        .into_iter()
        .map(|c| {
            let (_, term, name) = find(c)?;
            Some((Slot::new(term, &c.ty, name)?, c.name.clone()))
        })
        .collect::<Option<Vec<_>>>()?;
    // Every clustering column given (a static-only INSERT is not planned).
    let clustering = table
        .clustering()
        .into_iter()
        .map(|c| {
            let (_, term, name) = find(c)?;
            clustering_slot(c, term, name)
        })
        .collect::<Option<Vec<_>>>()?;
    Some(WritePlan {
        kind: WriteKind::Insert,
        using: i.using.clone(),
        key: KeyPlan {
            partition,
            clustering,
        },
        cells,
    })
}

/// The row a write targets: the whole clustering key, or a table without
/// clustering columns.
fn row_key(table: &TableDef, relations: &[Relation]) -> Option<KeyPlan> {
    let key = KeyPlan::from_where(table, relations)?;
    (key.clustering.len() == table.clustering().len()).then_some(key)
}

fn update_plan(table: &TableDef, u: &gyre_cql::Update) -> Option<WritePlan> {
    if u.conditions.is_some() {
        return None;
    }
    let cells = u
        .assignments
        .iter()
        .map(|a| match a {
            Assignment::Set { column, value } => {
                let col = plain_column(table, column)?;
                Some(CellPlan::new(col, Some(Slot::new(value, &col.ty, column)?)))
            }
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    Some(WritePlan {
        kind: WriteKind::Cells,
        using: u.using.clone(),
        key: row_key(table, &u.where_clause)?,
        cells,
    })
}

fn delete_plan(table: &TableDef, d: &gyre_cql::Delete) -> Option<WritePlan> {
    if d.conditions.is_some() || d.using.ttl.is_some() {
        return None;
    }
    if d.columns.is_empty() {
        // The row when the clustering key is given, else the partition.
        return Some(WritePlan {
            kind: WriteKind::DeleteRow,
            using: d.using.clone(),
            key: KeyPlan::from_where(table, &d.where_clause)?,
            cells: Vec::new(),
        });
    }
    let cells = d
        .columns
        .iter()
        .map(|del| match del {
            Deletion::Column(name) => Some(CellPlan::new(plain_column(table, name)?, None)),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    Some(WritePlan {
        kind: WriteKind::Cells,
        using: d.using.clone(),
        key: row_key(table, &d.where_clause)?,
        cells,
    })
}

fn select_plan(table: &TableDef, s: &gyre_cql::Select) -> Option<ReadPlan> {
    if s.json
        || s.distinct
        || !s.group_by.is_empty()
        || !s.order_by.is_empty()
        || s.ann.is_some()
        || s.per_partition_limit.is_some()
    {
        return None;
    }
    if let Selection::Items(items) = &s.selection {
        let plain = items.iter().all(|i| {
            matches!(
                i.selector,
                gyre_cql::Selector::Column(_)
                    | gyre_cql::Selector::WriteTime(_)
                    | gyre_cql::Selector::Ttl(_)
            )
        });
        if !plain {
            return None;
        }
    }
    let (items, columns) = crate::select::projection(table, &s.selection, None).ok()?;
    Some(ReadPlan {
        key: KeyPlan::from_where(table, &s.where_clause)?,
        items,
        columns,
        limit: s.limit.clone(),
    })
}
