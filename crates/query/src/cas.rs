//! Conditional statements (lightweight transactions): `INSERT ... IF NOT
//! EXISTS`, `UPDATE` / `DELETE ... IF EXISTS` or `IF` conditions, and
//! conditional BATCHes on one partition. The statements become one update
//! as usual; [`DataAccess::cas`] (Paxos in a cluster) reads the partition,
//! the conditions are checked here on what it read, and the update is
//! committed at the ballot's timestamp if they hold. The result is
//! Cassandra's `buildCasResultSet`: `[applied]`, and when not applied the
//! current values (the whole row for IF [NOT] EXISTS, the condition
//! columns otherwise, the primary key first in a batch).

use std::cmp::Ordering;
use std::collections::BTreeSet;

use bytes::Bytes;
use gyre_common::{CellName, LocalTime, Partition, Row, Timestamp};
use gyre_cql::{
    Condition, Conditions, CqlType, InValues, Modification, Operator, Predicate, Statement, Term,
};
use gyre_protocol::{ColumnType, Consistency, Value};
use gyre_schema::{
    decode_clustering_key, encode_clustering, ClusteringOrder, ColumnDef, ColumnKind, TableDef,
};
use gyre_storage::{ClusteringFilter, ColumnFilter, ReadFilter, TableId};

use crate::collections::{assemble, is_multicell, key_path};
use crate::data::CasDecide;
use crate::error::{QueryError, Result};
use crate::processor::{QueryParams, QueryProcessor, QueryResult};
use crate::values::{column_type, term_bytes};

/// What a statement's condition asks of one row (or the static row).
#[derive(Clone, Debug)]
enum Check {
    NotExists,
    Exists,
    /// Column conditions, already typed: column, element key (for
    /// `c[k]`), the operator and the values (one, or the IN list).
    Columns(Vec<ColumnCheck>),
}

#[derive(Clone, Debug)]
struct ColumnCheck {
    column: ColumnDef,
    element: Option<Element>,
    op: CheckOp,
}

#[derive(Clone, Debug)]
enum Element {
    /// A map key (or set element), as its cell path.
    Key(Bytes),
    /// A list index.
    Index(i32),
    /// A field of a user type value, by position.
    Field(usize),
}

#[derive(Clone, Debug)]
enum CheckOp {
    Compare(Operator, Option<Bytes>),
    In(Vec<Option<Bytes>>),
}

/// One conditional row: `None` is the static row.
#[derive(Clone, Debug)]
struct RowCheck {
    ck: Option<Bytes>,
    check: Check,
}

/// True for statements that need Paxos.
pub(crate) fn is_conditional(stmt: &Statement) -> bool {
    match stmt {
        Statement::Insert(i) => i.if_not_exists,
        Statement::Update(u) => u.conditions.is_some(),
        Statement::Delete(d) => d.conditions.is_some(),
        Statement::Batch(b) => b.statements.iter().any(modification_is_conditional),
        _ => false,
    }
}

fn modification_is_conditional(m: &Modification) -> bool {
    match m {
        Modification::Insert(i) => i.if_not_exists,
        Modification::Update(u) => u.conditions.is_some(),
        Modification::Delete(d) => d.conditions.is_some(),
    }
}

fn as_modification(stmt: &Statement) -> Option<Modification> {
    Some(match stmt {
        Statement::Insert(i) => Modification::Insert(i.clone()),
        Statement::Update(u) => Modification::Update(u.clone()),
        Statement::Delete(d) => Modification::Delete(d.clone()),
        _ => return None,
    })
}

impl QueryProcessor {
    /// Executes a conditional statement, or a batch (a CQL BATCH or the
    /// protocol's, `statements` with their own parameters) with at least
    /// one condition.
    pub(crate) async fn execute_conditional(
        &self,
        statements: &[(Modification, &QueryParams)],
        batch: bool,
        consistency: Consistency,
        serial: Option<Consistency>,
    ) -> Result<QueryResult> {
        let serial = serial.unwrap_or(Consistency::Serial);
        if !serial.is_serial() {
            return Err(QueryError::invalid(
                "Invalid consistency for conditional update. Must be one of SERIAL or LOCAL_SERIAL",
            ));
        }
        if consistency.is_serial() {
            return Err(QueryError::invalid(format!(
                "{consistency} is not supported as conditional update commit consistency. Use ANY if you mean \"make sure it is accepted but I don't care how many replicas commit it for non-SERIAL reads\""
            )));
        }
        // A placeholder timestamp: the update is shifted to the ballot's.
        let base = self.next_micros();
        let mut table: Option<TableDef> = None;
        let mut key = None;
        let mut checks: Vec<RowCheck> = Vec::new();
        let mut updates: Vec<(TableId, Partition)> = Vec::new();
        let mut now: LocalTime = 0;
        for (m, params) in statements {
            let (name, using) = match m {
                Modification::Insert(i) => (&i.table, &i.using),
                Modification::Update(u) => (&u.table, &u.using),
                Modification::Delete(d) => (&d.table, &d.using),
            };
            let t = self.table(name, params)?;
            if t.is_counter() {
                return Err(QueryError::invalid(
                    "Conditional updates are not supported on counter tables",
                ));
            }
            if using.timestamp.is_some() {
                return Err(QueryError::invalid(if batch {
                    "Cannot provide custom timestamp for conditional BATCH"
                } else {
                    "Cannot provide custom timestamp for conditional updates"
                }));
            }
            if let Some(prev) = &table {
                if prev.id != t.id {
                    return Err(QueryError::invalid(
                        "Batch with conditions cannot span multiple tables",
                    ));
                }
            }
            now = self.now_for(params);
            let mut out = Vec::new();
            let check = match m {
                Modification::Insert(i) => {
                    self.insert(i, params, Some(base), &mut out).await?;
                    i.if_not_exists.then_some(Check::NotExists)
                }
                Modification::Update(u) => {
                    let check = match &u.conditions {
                        Some(c) => Some(conditions(&t, c, &params.values)?),
                        None => None,
                    };
                    self.update(u, params, Some(base), &mut out).await?;
                    check
                }
                Modification::Delete(d) => {
                    let check = match &d.conditions {
                        Some(c) => Some(conditions(&t, c, &params.values)?),
                        None => None,
                    };
                    self.delete(d, params, Some(base), &mut out).await?;
                    check
                }
            };
            if out.len() != 1 {
                return Err(QueryError::invalid(
                    "IN on the partition key is not supported with conditional updates",
                ));
            }
            let (_, p) = &out[0];
            match &key {
                Some(k) if *k != p.key => {
                    return Err(QueryError::invalid(
                        "Batch with conditions cannot span multiple partitions",
                    ))
                }
                _ => key = Some(p.key.clone()),
            }
            if let Some(check) = check {
                checks.push(RowCheck {
                    ck: target_row(&t, p, &check)?,
                    check,
                });
            }
            table = Some(t);
            updates.extend(out);
        }
        let (Some(table), Some(key)) = (table, key) else {
            return Err(QueryError::invalid("Empty conditional batch"));
        };
        check_mixing(&checks)?;
        // The read: the rows the conditions are about (the static row
        // comes with any clustering filter).
        let names: BTreeSet<Bytes> = checks.iter().filter_map(|c| c.ck.clone()).collect();
        let filter = ReadFilter {
            clustering: if names.is_empty() {
                ClusteringFilter::Names(BTreeSet::from([Bytes::new()]))
            } else {
                ClusteringFilter::Names(names)
            },
            columns: ColumnFilter::All,
            limit: None,
            reversed: false,
        };
        let mut merged: Option<Partition> = None;
        for (_, u) in updates {
            match merged.as_mut() {
                Some(m) => gyre_common::lww::merge_partitions(m, u),
                None => merged = Some(u),
            }
        }
        let update = merged.unwrap_or_else(|| Partition::new(key.clone()));
        let decide_checks = checks.clone();
        let decide_table = table.clone();
        let decide: CasDecide<'_> = Box::new(move |current, ts| {
            for c in &decide_checks {
                if !holds(&decide_table, current, c, now).map_err(|e| e.to_string())? {
                    return Ok(None);
                }
            }
            Ok(Some(shift_timestamps(update.clone(), ts - base)))
        });
        let res = self
            .data
            .cas(table.id, &key, &filter, now, serial, consistency, decide)
            .await?;
        Ok(result_set(
            &table,
            &checks,
            batch,
            res.applied,
            res.current.as_ref(),
            now,
        ))
    }

    /// A single conditional statement.
    pub(crate) async fn modify_conditional(
        &self,
        stmt: &Statement,
        params: &QueryParams,
    ) -> Result<QueryResult> {
        match stmt {
            Statement::Batch(b) => {
                if b.kind == gyre_cql::BatchKind::Counter {
                    return Err(QueryError::invalid(
                        "Cannot include non-counter statement in a counter batch",
                    ));
                }
                if b.using.timestamp.is_some() {
                    return Err(QueryError::invalid(
                        "Cannot provide custom timestamp for conditional BATCH",
                    ));
                }
                if b.using.ttl.is_some() {
                    return Err(QueryError::invalid("A BATCH cannot have a TTL"));
                }
                let stmts: Vec<(Modification, &QueryParams)> =
                    b.statements.iter().map(|m| (m.clone(), params)).collect();
                self.execute_conditional(
                    &stmts,
                    true,
                    params.consistency,
                    params.serial_consistency,
                )
                .await
            }
            other => {
                let m = as_modification(other)
                    .ok_or_else(|| QueryError::invalid("not a modification statement"))?;
                self.execute_conditional(
                    &[(m, params)],
                    false,
                    params.consistency,
                    params.serial_consistency,
                )
                .await
            }
        }
    }
}

/// Cassandra refuses IF EXISTS, IF NOT EXISTS and column conditions mixed
/// on one row.
fn check_mixing(checks: &[RowCheck]) -> Result<()> {
    for (i, a) in checks.iter().enumerate() {
        for b in &checks[i + 1..] {
            if a.ck != b.ck {
                continue;
            }
            let msg = match (&a.check, &b.check) {
                (Check::NotExists, Check::Exists) | (Check::Exists, Check::NotExists) => {
                    "Cannot mix IF EXISTS and IF NOT EXISTS conditions for the same row"
                }
                (Check::NotExists, Check::Columns(_)) | (Check::Columns(_), Check::NotExists) => {
                    "Cannot mix IF conditions and IF NOT EXISTS for the same row"
                }
                (Check::Exists, Check::Columns(_)) | (Check::Columns(_), Check::Exists) => {
                    "Cannot mix IF conditions and IF EXISTS for the same row"
                }
                _ => continue,
            };
            return Err(QueryError::invalid(msg));
        }
    }
    Ok(())
}

/// The row a statement's condition is about: its clustering key, or the
/// static row when the conditions are all on static columns (or the table
/// has no clustering columns and ... always a row then).
fn target_row(table: &TableDef, p: &Partition, check: &Check) -> Result<Option<Bytes>> {
    let static_only = match check {
        Check::Columns(cs) => cs.iter().all(|c| c.column.kind == ColumnKind::Static),
        _ => false,
    };
    let mut rows = p.rows.keys();
    match (rows.next(), rows.next()) {
        (_, Some(_)) => Err(QueryError::invalid(
            "IN on the clustering key columns is not supported with conditional updates",
        )),
        (Some(ck), None) if !static_only => Ok(Some(ck.clone())),
        (None, None) if !static_only && !table.clustering().is_empty() => {
            // A partition or range deletion, or a static-only write.
            if p.static_row.is_some() && !matches!(check, Check::Columns(_)) {
                return Ok(None);
            }
            Err(QueryError::invalid(
                "DELETE statements must restrict all PRIMARY KEY columns with equality relations in order to use IF conditions",
            ))
        }
        (None, None) if !static_only => Ok(Some(Bytes::new())),
        _ => Ok(None),
    }
}

/// The typed conditions of an UPDATE or DELETE.
fn conditions(table: &TableDef, c: &Conditions, binds: &[Value]) -> Result<Check> {
    let list = match c {
        Conditions::Exists => return Ok(Check::Exists),
        Conditions::List(l) => l,
    };
    let mut out = Vec::with_capacity(list.len());
    for cond in list {
        let (name, key, field, predicate) = match cond {
            Condition::Column { column, predicate } => (column, None, None, predicate),
            Condition::Element {
                column,
                key,
                predicate,
            } => (column, Some(key), None, predicate),
            Condition::Field {
                column,
                field,
                predicate,
            } => (column, None, Some(field), predicate),
        };
        let col = table
            .column(name)
            .ok_or_else(|| QueryError::invalid(format!("Undefined column name {name}")))?
            .clone();
        if col.kind.is_primary_key() {
            return Err(QueryError::invalid(format!(
                "PRIMARY KEY column '{name}' cannot have IF conditions"
            )));
        }
        if col.ty == CqlType::Counter {
            return Err(QueryError::invalid(
                "Conditions on counters are not supported",
            ));
        }
        // The type the compared values have: the column's, or its elements'.
        let (element, value_ty) = match (key, field) {
            (None, Some(f)) => match crate::values::unfrozen(&col.ty) {
                CqlType::UserType(u) => {
                    let (i, ft) = u.field(f).ok_or_else(|| {
                        QueryError::invalid(format!(
                            "Unknown field {f} for column {name} of type {}",
                            col.ty
                        ))
                    })?;
                    (Some(Element::Field(i)), ft.clone())
                }
                _ => {
                    return Err(QueryError::invalid(format!(
                        "Invalid field access for non-UDT column {name}"
                    )))
                }
            },
            (None, None) => (None, col.ty.clone()),
            (Some(k), _) => match crate::values::unfrozen(&col.ty) {
                CqlType::Map(kt, vt) => {
                    let kb = term_bytes(k, kt, name, binds)?.ok_or_else(|| {
                        QueryError::invalid(format!("Invalid null value for {name} element"))
                    })?;
                    let path = if is_multicell(&col.ty) {
                        key_path(&col.ty, &kb)?
                    } else {
                        kb
                    };
                    (Some(Element::Key(path)), (**vt).clone())
                }
                CqlType::List(vt) => {
                    let b = term_bytes(k, &CqlType::Int, name, binds)?.ok_or_else(|| {
                        QueryError::invalid(format!("Invalid null value for list index of {name}"))
                    })?;
                    let i: [u8; 4] = b.as_ref().try_into().map_err(|_| {
                        QueryError::invalid(format!("Invalid list index for {name}"))
                    })?;
                    (Some(Element::Index(i32::from_be_bytes(i))), (**vt).clone())
                }
                _ => {
                    return Err(QueryError::invalid(format!(
                        "Invalid element access syntax for non-collection column {name}"
                    )))
                }
            },
        };
        let op = match predicate {
            Predicate::Compare(op, term) => {
                if matches!(
                    op,
                    Operator::Contains | Operator::ContainsKey | Operator::Like
                ) {
                    return Err(QueryError::invalid(format!(
                        "Unsupported operator in IF condition on {name}"
                    )));
                }
                let v = term_bytes(term, &value_ty, name, binds)?;
                if v.is_none() && !matches!(op, Operator::Eq | Operator::Neq) {
                    return Err(QueryError::invalid(format!(
                        "Invalid comparison with null for operator \"{}\"",
                        op_text(*op)
                    )));
                }
                CheckOp::Compare(*op, v)
            }
            Predicate::In(InValues::List(terms)) => CheckOp::In(
                terms
                    .iter()
                    .map(|t| term_bytes(t, &value_ty, name, binds))
                    .collect::<Result<_>>()?,
            ),
            Predicate::In(InValues::Marker(m)) => {
                let list = term_bytes(
                    &Term::Bind(m.clone()),
                    &CqlType::List(Box::new(value_ty.clone())),
                    name,
                    binds,
                )?;
                let values = match list {
                    None => Vec::new(),
                    Some(b) => crate::collections::elements(
                        &CqlType::List(Box::new(value_ty.clone())),
                        &b,
                        0,
                    )?
                    .into_iter()
                    .map(|(_, v)| Some(v))
                    .collect(),
                };
                CheckOp::In(values)
            }
        };
        out.push(ColumnCheck {
            column: col,
            element,
            op,
        });
    }
    Ok(Check::Columns(out))
}

fn op_text(op: Operator) -> &'static str {
    match op {
        Operator::Eq => "=",
        Operator::Lt => "<",
        Operator::Lte => "<=",
        Operator::Gt => ">",
        Operator::Gte => ">=",
        Operator::Neq => "!=",
        Operator::Contains => "CONTAINS",
        Operator::ContainsKey => "CONTAINS KEY",
        Operator::Like => "LIKE",
    }
}

fn row_of<'a>(p: Option<&'a Partition>, ck: Option<&Bytes>) -> Option<&'a Row> {
    let p = p?;
    match ck {
        Some(ck) => p.rows.get(ck),
        None => p.static_row.as_ref(),
    }
}

/// The live value of a column in a row (collections assembled).
fn column_value(row: Option<&Row>, col: &ColumnDef, now: LocalTime) -> Option<Bytes> {
    let row = row?;
    let name = CellName::simple(Bytes::copy_from_slice(col.name.as_bytes()));
    if is_multicell(&col.ty) {
        let cells = row
            .cells
            .range(name.clone()..)
            .take_while(|(n, _)| n.column == name.column)
            .filter(|(n, _)| !n.path.is_empty())
            .filter_map(|(n, c)| c.value_at(now).map(|v| (&n.path, v)));
        return assemble(&col.ty, cells);
    }
    row.cells.get(&name).and_then(|c| c.value_at(now).cloned())
}

fn element_value(row: Option<&Row>, c: &ColumnCheck, now: LocalTime) -> Option<Bytes> {
    let el = c.element.as_ref()?;
    let row = row?;
    if let Element::Field(i) = el {
        return column_value(Some(row), &c.column, now)
            .and_then(|v| crate::collections::udt_field(&v, *i));
    }
    let column = Bytes::copy_from_slice(c.column.name.as_bytes());
    if is_multicell(&c.column.ty) {
        let mut live = row
            .cells
            .range(CellName::simple(column.clone())..)
            .take_while(|(n, _)| n.column == column)
            .filter(|(n, _)| !n.path.is_empty())
            .filter_map(|(n, cell)| cell.value_at(now).map(|v| (&n.path, v)));
        return match el {
            Element::Key(path) => live.find(|(p, _)| *p == path).map(|(_, v)| v.clone()),
            Element::Index(i) => usize::try_from(*i)
                .ok()
                .and_then(|i| live.nth(i))
                .map(|(_, v)| v.clone()),
            Element::Field(_) => None,
        };
    }
    // A frozen collection: decode the whole value.
    let whole = column_value(Some(row), &c.column, now)?;
    let ty = crate::values::unfrozen(&c.column.ty).clone();
    let multi = match &ty {
        CqlType::Map(k, v) => CqlType::Map(k.clone(), v.clone()),
        CqlType::List(v) => CqlType::List(v.clone()),
        _ => return None,
    };
    let elems = crate::collections::elements(&multi, &whole, 0).ok()?;
    match el {
        Element::Key(k) => {
            let path = key_path(&multi, k).ok()?;
            elems.into_iter().find(|(p, _)| *p == path).map(|(_, v)| v)
        }
        Element::Index(i) => usize::try_from(*i)
            .ok()
            .and_then(|i| elems.into_iter().nth(i))
            .map(|(_, v)| v),
        Element::Field(_) => None,
    }
}

/// Compares two values of `ty` as CQL orders them.
fn compare(ty: &CqlType, a: &[u8], b: &[u8]) -> Ordering {
    match (
        encode_clustering(ty, a, ClusteringOrder::Asc),
        encode_clustering(ty, b, ClusteringOrder::Asc),
    ) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

fn holds(
    table: &TableDef,
    current: Option<&Partition>,
    rc: &RowCheck,
    now: LocalTime,
) -> Result<bool> {
    let row = row_of(current, rc.ck.as_ref());
    let exists = row.is_some_and(|r| r.is_live(now));
    let _ = table;
    Ok(match &rc.check {
        Check::NotExists => !exists,
        Check::Exists => exists,
        Check::Columns(cs) => cs.iter().all(|c| {
            let (actual, ty) = match &c.element {
                None => (column_value(row, &c.column, now), c.column.ty.clone()),
                Some(_) => (
                    element_value(row, c, now),
                    match crate::values::unfrozen(&c.column.ty) {
                        CqlType::Map(_, v) | CqlType::List(v) => (**v).clone(),
                        other => other.clone(),
                    },
                ),
            };
            match &c.op {
                CheckOp::Compare(op, want) => match (actual.as_ref(), want.as_ref()) {
                    (None, None) => matches!(op, Operator::Eq),
                    (Some(_), None) | (None, Some(_)) => matches!(op, Operator::Neq),
                    (Some(a), Some(w)) => {
                        let ord = compare(&ty, a, w);
                        match op {
                            Operator::Eq => ord == Ordering::Equal,
                            Operator::Neq => ord != Ordering::Equal,
                            Operator::Lt => ord == Ordering::Less,
                            Operator::Lte => ord != Ordering::Greater,
                            Operator::Gt => ord == Ordering::Greater,
                            Operator::Gte => ord != Ordering::Less,
                            _ => false,
                        }
                    }
                },
                CheckOp::In(list) => list.iter().any(|w| match (actual.as_ref(), w.as_ref()) {
                    (None, None) => true,
                    (Some(a), Some(w)) => compare(&ty, a, w) == Ordering::Equal,
                    _ => false,
                }),
            }
        }),
    })
}

/// Moves every timestamp of `p` by `delta` (to the ballot's time; the
/// relative order inside the update, e.g. a collection's tombstone just
/// below its new elements, is kept).
fn shift_timestamps(mut p: Partition, delta: Timestamp) -> Partition {
    let shift_row = |r: &mut Row| {
        if let Some(d) = r.deletion.as_mut() {
            d.timestamp += delta;
        }
        for c in r.cells.values_mut() {
            c.timestamp += delta;
        }
    };
    if let Some(d) = p.deletion.as_mut() {
        d.timestamp += delta;
    }
    for rt in &mut p.range_tombstones {
        rt.deletion.timestamp += delta;
    }
    if let Some(r) = p.static_row.as_mut() {
        shift_row(r);
    }
    for r in p.rows.values_mut() {
        shift_row(r);
    }
    p
}

/// Cassandra's CAS result set.
fn result_set(
    table: &TableDef,
    checks: &[RowCheck],
    batch: bool,
    applied: bool,
    current: Option<&Partition>,
    now: LocalTime,
) -> QueryResult {
    let applied_col = ("[applied]".to_owned(), ColumnType::Boolean);
    let flag = |b: bool| Some(Bytes::from_static(if b { &[1] } else { &[0] }));
    if applied {
        return QueryResult::Rows {
            columns: vec![applied_col],
            rows: vec![vec![flag(true)]],
            paging_state: None,
        };
    }
    // Which columns: the whole row for IF [NOT] EXISTS, else the condition
    // columns (table order), with the primary key first in a batch.
    let whole = checks
        .iter()
        .any(|c| matches!(c.check, Check::Exists | Check::NotExists));
    let mut cols: Vec<&ColumnDef> = Vec::new();
    let ordered = table_order(table);
    if whole {
        cols = ordered;
    } else {
        let named: BTreeSet<&str> = checks
            .iter()
            .flat_map(|c| match &c.check {
                Check::Columns(cs) => cs.iter().map(|c| c.column.name.as_str()).collect(),
                _ => Vec::new(),
            })
            .collect();
        for c in ordered {
            if (batch && c.kind.is_primary_key()) || named.contains(c.name.as_str()) {
                cols.push(c);
            }
        }
    }
    let mut rows = Vec::new();
    if let Some(p) = current {
        let pk = split_key(&p.key.key, table.partition_key().len());
        let ck_cols: Vec<(&CqlType, ClusteringOrder)> = table
            .clustering()
            .into_iter()
            .map(|c| match c.kind {
                ColumnKind::Clustering(_, o) => (&c.ty, o),
                _ => (&c.ty, ClusteringOrder::Asc),
            })
            .collect();
        let mut seen = BTreeSet::new();
        for rc in checks {
            if !seen.insert(rc.ck.clone()) {
                continue;
            }
            let row = row_of(Some(p), rc.ck.as_ref());
            if !row.is_some_and(|r| r.is_live(now)) {
                continue;
            }
            let ckv = match &rc.ck {
                Some(ck) if !ck_cols.is_empty() => {
                    decode_clustering_key(&ck_cols, ck).unwrap_or_default()
                }
                _ => Vec::new(),
            };
            let mut out = vec![flag(false)];
            for c in &cols {
                out.push(match c.kind {
                    ColumnKind::PartitionKey(i) => pk.get(i as usize).cloned(),
                    ColumnKind::Clustering(i, _) => {
                        ckv.get(i as usize).map(|v| Bytes::copy_from_slice(v))
                    }
                    ColumnKind::Static => column_value(p.static_row.as_ref(), c, now),
                    _ => column_value(row, c, now),
                });
            }
            rows.push(out);
        }
    }
    if rows.is_empty() {
        return QueryResult::Rows {
            columns: vec![applied_col],
            rows: vec![vec![flag(false)]],
            paging_state: None,
        };
    }
    let mut columns = vec![applied_col];
    columns.extend(cols.iter().map(|c| (c.name.clone(), column_type(&c.ty))));
    QueryResult::Rows {
        columns,
        rows,
        paging_state: None,
    }
}

/// `SELECT *` order: partition key, clustering, then the rest by name.
fn table_order(table: &TableDef) -> Vec<&ColumnDef> {
    let mut rest: Vec<&ColumnDef> = table
        .columns
        .iter()
        .filter(|c| !c.kind.is_primary_key())
        .collect();
    rest.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = table.partition_key();
    out.extend(table.clustering());
    out.extend(rest);
    out
}

/// Splits a stored partition key into its column values (as `SELECT`
/// does: 2-byte length, value, one end byte per component).
fn split_key(key: &Bytes, n: usize) -> Vec<Bytes> {
    if n <= 1 {
        return vec![key.clone()];
    }
    let mut out = Vec::with_capacity(n);
    let mut rest = key.clone();
    while rest.len() >= 2 && out.len() < n {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        if rest.len() < 2 + len + 1 {
            break;
        }
        out.push(rest.slice(2..2 + len));
        rest = rest.slice(3 + len..);
    }
    out
}
