//! Which WHERE restrictions a table's secondary indexes serve, turned into
//! the index query the storage engines answer (see
//! [`gyre_storage::sai`]). A served restriction needs no ALLOW FILTERING;
//! rows are still checked against every restriction after the read, so an
//! index only ever narrows what is read.

use std::ops::Bound;

use bytes::Bytes;
use gyre_cql::{CqlType, IndexTarget, Operator, Predicate, Relation};
use gyre_protocol::Value;
use gyre_schema::{ColumnDef, ColumnKind, IndexDef, TableDef};
use gyre_storage::sai::{IndexClause, IndexQuery, IndexSpec, TermOp, TextAnalysis, MAX_ANN_K};

use crate::collections::key_path;
use crate::error::{QueryError, Result};
use crate::processor::Filter;
use crate::values::term_bytes;

/// The index of `col` that holds its whole value. An index on a primary
/// key column (a component of a composite partition key, a clustering
/// column) serves when the engine can index it from the keys (see
/// `IndexDef::storage_spec`); otherwise its restrictions are filtered.
fn value_index<'a>(table: &'a TableDef, col: &ColumnDef) -> Option<&'a IndexDef> {
    table
        .indexes
        .iter()
        .find(
            |i| matches!(&i.target, IndexTarget::Column(c) | IndexTarget::Full(c) if *c == col.name),
        )
        .filter(|i| !col.kind.is_primary_key() || i.storage_spec(table).is_some())
}

/// A clustering column's index takes values in the column's ascending
/// key encoding (its terms), other indexes raw values.
fn index_value(col: &ColumnDef, v: &Bytes) -> Result<Bytes> {
    match col.kind {
        ColumnKind::Clustering(..) => Ok(Bytes::from(gyre_schema::encode_clustering(
            &col.ty,
            v,
            gyre_schema::ClusteringOrder::Asc,
        )?)),
        _ => Ok(v.clone()),
    }
}

/// Whether an index serves this one restriction (so it needs no ALLOW
/// FILTERING).
pub(crate) fn serves(table: &TableDef, col: &ColumnDef, f: &Filter) -> bool {
    plan(table, &[(col.clone(), f.clone())], &[], &[]).is_ok_and(|(_, all)| all)
}

/// The text analysis of the index serving `col`'s whole value, when its
/// SAI text options change terms (`case_sensitive: false`, ...).
pub(crate) fn text_analysis(table: &TableDef, col: &ColumnDef) -> Option<TextAnalysis> {
    value_index(table, col)
        .map(IndexDef::text_analysis)
        .filter(|a| !a.is_identity())
}

fn index_on<'a>(
    table: &'a TableDef,
    col: &ColumnDef,
    want: fn(&IndexTarget) -> bool,
) -> Option<&'a IndexDef> {
    table
        .indexes
        .iter()
        .find(|i| i.target.column() == col.name && want(&i.target))
}

/// The index query for the served filters, and whether every filter is
/// served.
pub(crate) fn plan(
    table: &TableDef,
    filters: &[(ColumnDef, Filter)],
    relations: &[Relation],
    binds: &[Value],
) -> Result<(Option<IndexQuery>, bool)> {
    let mut clauses = Vec::new();
    let mut all = true;
    let mut ranged: Vec<&str> = Vec::new();
    for (col, f) in filters {
        if vector_index(table, &col.name).is_some() {
            return Err(QueryError::invalid(VECTOR_INDEXES_ANN_ONLY));
        }
        let clause = match f {
            Filter::In(values) if values.len() == 1 => match value_index(table, col) {
                Some(i) => Some(IndexClause {
                    index: i.name.clone(),
                    op: TermOp::Eq(index_value(col, &values[0])?),
                }),
                None => None,
            },
            Filter::Contains(v) => {
                match index_on(table, col, |t| {
                    matches!(t, IndexTarget::Values(_) | IndexTarget::Column(_))
                }) {
                    // A set's elements are its cell paths, in the key encoding.
                    Some(i) if matches!(col.ty, CqlType::Set(_)) => Some(IndexClause {
                        index: i.name.clone(),
                        op: TermOp::Eq(key_path(&col.ty, v)?),
                    }),
                    Some(i) => Some(IndexClause {
                        index: i.name.clone(),
                        op: TermOp::Eq(v.clone()),
                    }),
                    None => None,
                }
            }
            Filter::ContainsKey(k) => {
                match index_on(table, col, |t| matches!(t, IndexTarget::Keys(_))) {
                    Some(i) => Some(IndexClause {
                        index: i.name.clone(),
                        op: TermOp::Eq(key_path(&col.ty, k)?),
                    }),
                    None => None,
                }
            }
            Filter::Compare(op, bound) => {
                match value_index(table, col).filter(|i| i.supports_ranges(table)) {
                    // The bound is in the ascending key encoding: the term.
                    Some(i) if matches!(col.kind, ColumnKind::Clustering(..)) => {
                        let b = || bound.clone();
                        let (lo, hi) = match op {
                            Operator::Gt => (Bound::Excluded(b()), Bound::Unbounded),
                            Operator::Gte => (Bound::Included(b()), Bound::Unbounded),
                            Operator::Lt => (Bound::Unbounded, Bound::Excluded(b())),
                            Operator::Lte => (Bound::Unbounded, Bound::Included(b())),
                            _ => {
                                all = false;
                                continue;
                            }
                        };
                        Some(IndexClause {
                            index: i.name.clone(),
                            op: TermOp::Range { lo, hi },
                        })
                    }
                    Some(_) => {
                        if !ranged.contains(&col.name.as_str()) {
                            ranged.push(&col.name);
                        }
                        continue;
                    }
                    None => None,
                }
            }
            Filter::Entry(k, v) => {
                match index_on(table, col, |t| matches!(t, IndexTarget::Entries(_))) {
                    Some(i) => Some(IndexClause {
                        index: i.name.clone(),
                        op: TermOp::Eq(Bytes::from(gyre_storage::sai::entry_value(
                            &key_path(&col.ty, k)?,
                            v,
                        ))),
                    }),
                    None => None,
                }
            }
            Filter::In(values) => match value_index(table, col) {
                Some(i) => Some(IndexClause {
                    index: i.name.clone(),
                    op: TermOp::In(
                        values
                            .iter()
                            .map(|v| index_value(col, v))
                            .collect::<Result<_>>()?,
                    ),
                }),
                None => None,
            },
        };
        match clause {
            Some(c) => clauses.push(c),
            None => all = false,
        }
    }
    // Ranges from the relations themselves: the filters hold their bounds
    // in the clustering encoding, the engine wants raw values.
    for name in ranged {
        let Some(col) = table.column(name) else {
            continue;
        };
        let Some(index) = value_index(table, col) else {
            continue;
        };
        for r in relations {
            let Relation::Column {
                column,
                predicate: Predicate::Compare(op, term),
            } = r
            else {
                continue;
            };
            if column != name {
                continue;
            }
            let Some(v) = term_bytes(term, &col.ty, name, binds)? else {
                continue;
            };
            let (lo, hi) = match op {
                Operator::Gt => (Bound::Excluded(v), Bound::Unbounded),
                Operator::Gte => (Bound::Included(v), Bound::Unbounded),
                Operator::Lt => (Bound::Unbounded, Bound::Excluded(v)),
                Operator::Lte => (Bound::Unbounded, Bound::Included(v)),
                _ => continue,
            };
            clauses.push(IndexClause {
                index: index.name.clone(),
                op: TermOp::Range { lo, hi },
            });
        }
    }
    let query = (!clauses.is_empty()).then_some(IndexQuery { clauses, ann: None });
    Ok((query, all))
}

pub(crate) const ANN_REQUIRES_INDEX: &str =
    "ANN ordering by vector requires the column to be indexed";
pub(crate) const ANN_ONLY_ON_VECTOR: &str =
    "ANN ordering is only supported on float vector indexes";
pub(crate) const ANN_REQUIRES_INDEXED_FILTERING: &str =
    "ANN ordering by vector requires all restricted column(s) to be indexed";
const VECTOR_INDEXES_ANN_ONLY: &str = "Vector indexes only support ANN queries";

/// The vector (ANN) index on column `name`, if any.
fn vector_index<'a>(table: &'a TableDef, name: &str) -> Option<&'a IndexDef> {
    table
        .indexes
        .iter()
        .find(|i| i.target.column() == name && i.vector(table).is_some())
}

/// `ORDER BY v ANN OF [..] LIMIT k`, checked as Cassandra checks it.
#[derive(Debug, Clone)]
pub(crate) struct AnnPlan {
    pub index: String,
    pub spec: IndexSpec,
    /// The query vector: raw CQL bytes (sent to replicas) and floats.
    pub raw: Bytes,
    pub query: Vec<f32>,
    pub k: usize,
}

pub(crate) fn ann_plan(
    table: &TableDef,
    column: &str,
    term: &gyre_cql::Term,
    binds: &[Value],
    limit: Option<usize>,
) -> Result<AnnPlan> {
    let col = table
        .column(column)
        .ok_or_else(|| QueryError::invalid(format!("Undefined column name {column}")))?;
    let dim = match crate::values::unfrozen(&col.ty) {
        CqlType::Vector(e, n) if **e == CqlType::Float => *n as usize,
        _ => return Err(QueryError::invalid(ANN_ONLY_ON_VECTOR)),
    };
    let index =
        vector_index(table, column).ok_or_else(|| QueryError::invalid(ANN_REQUIRES_INDEX))?;
    let spec = index
        .storage_spec(table)
        .ok_or_else(|| QueryError::invalid(ANN_REQUIRES_INDEX))?;
    let k = match limit {
        Some(k) if k <= MAX_ANN_K => k,
        other => {
            let was = other.map_or_else(|| "NO LIMIT".to_owned(), |n| n.to_string());
            return Err(QueryError::invalid(format!(
                "Use of ANN OF in an ORDER BY clause requires a LIMIT that is not greater than {MAX_ANN_K}. LIMIT was {was}"
            )));
        }
    };
    let raw = term_bytes(term, &col.ty, column, binds)?.ok_or_else(|| {
        QueryError::invalid(format!(
            "Unsupported null value for ANN ordering on {column}"
        ))
    })?;
    let query = gyre_storage::ann::decode_vector(&raw, dim).ok_or_else(|| {
        QueryError::invalid(format!("Invalid vector for ANN ordering on {column}"))
    })?;
    if query.iter().any(|x| !x.is_finite()) {
        return Err(QueryError::invalid(format!(
            "Invalid vector for ANN ordering on {column}: elements must be finite"
        )));
    }
    let cosine = spec
        .vector
        .is_some_and(|v| v.similarity == gyre_storage::ann::Similarity::Cosine);
    if cosine && query.iter().all(|x| *x == 0.0) {
        return Err(QueryError::invalid(
            "Zero and near-zero vectors cannot be indexed or queried with cosine similarity",
        ));
    }
    Ok(AnnPlan {
        index: index.name.clone(),
        spec,
        raw,
        query,
        k,
    })
}
