//! PREPARE: the types of a statement's bind markers and of its result
//! columns, for the PREPARED response. Execution does not depend on it.

use gyre_cql::{
    Assignment, CqlType, InValues, Modification, Operator, Parsed, Predicate, Relation, Statement,
    Term, Using,
};
use gyre_protocol::ColumnType;
use gyre_schema::TableDef;

use crate::error::{QueryError, Result};
use crate::processor::{QueryParams, QueryProcessor};
use crate::values::column_type;

/// What a client learns when it prepares a statement.
#[derive(Clone, Debug, PartialEq)]
pub struct PreparedInfo {
    /// The (first) table the statement uses, as `(keyspace, table)`.
    pub table: Option<(String, String)>,
    /// Per bind marker, in marker order: the name drivers show and the type.
    pub bind_columns: Vec<(String, ColumnType)>,
    /// Result columns of a SELECT; empty otherwise.
    pub result_columns: Vec<(String, ColumnType)>,
}

impl QueryProcessor {
    /// Types the bind markers (and a SELECT's result columns) of a parsed
    /// statement against the current schema.
    pub fn prepare(&self, parsed: &Parsed, keyspace: Option<&str>) -> Result<PreparedInfo> {
        let params = QueryParams {
            keyspace: keyspace.map(str::to_owned),
            ..Default::default()
        };
        let mut marks: Vec<Option<(String, ColumnType)>> = vec![None; parsed.bind_markers.len()];
        let mut info = PreparedInfo {
            table: None,
            bind_columns: Vec::new(),
            result_columns: Vec::new(),
        };
        let modification = |m: &Modification, marks: &mut Vec<_>| -> Result<TableDef> {
            let (name, using) = match m {
                Modification::Insert(i) => (&i.table, &i.using),
                Modification::Update(u) => (&u.table, &u.using),
                Modification::Delete(d) => (&d.table, &d.using),
            };
            let t = self.table(name, &params)?;
            using_marks(using, marks);
            match m {
                Modification::Insert(i) => match &i.values {
                    gyre_cql::InsertValues::Columns { columns, values } => {
                        check_insert_columns(&t, columns, values.len())?;
                        for (c, v) in columns.iter().zip(values) {
                            if let Some(col) = t.column(c) {
                                term_marks(v, &col.ty, c, marks);
                            }
                        }
                    }
                    gyre_cql::InsertValues::Json { json, .. } => {
                        term_marks(json, &CqlType::Text, "[json]", marks);
                    }
                },
                Modification::Update(u) => {
                    for a in &u.assignments {
                        assignment_marks(&t, a, marks);
                    }
                    where_marks(&t, &u.where_clause, marks);
                    condition_marks(&t, u.conditions.as_ref(), marks);
                }
                Modification::Delete(d) => {
                    for del in &d.columns {
                        if let gyre_cql::Deletion::Element { column, key } = del {
                            match t.column(column).map(|c| &c.ty) {
                                Some(CqlType::Set(k) | CqlType::Map(k, _)) => {
                                    term_marks(key, k, column, marks);
                                }
                                Some(CqlType::List(_)) => {
                                    let name = format!("idx({column})");
                                    term_marks(key, &CqlType::Int, &name, marks);
                                }
                                _ => {}
                            }
                        }
                    }
                    where_marks(&t, &d.where_clause, marks);
                    condition_marks(&t, d.conditions.as_ref(), marks);
                }
            }
            Ok(t)
        };
        let first = match &parsed.statement {
            Statement::Select(s) => {
                let t = self.table(&s.table, &params)?;
                if let gyre_cql::Selection::Items(items) = &s.selection {
                    items
                        .iter()
                        .for_each(|i| selector_marks(&t, &i.selector, &mut marks));
                }
                where_marks(&t, &s.where_clause, &mut marks);
                if let Some((col, term)) = &s.ann {
                    if let Some(c) = t.column(col) {
                        term_marks(term, &c.ty, col, &mut marks);
                    }
                }
                for (term, name) in [
                    (&s.per_partition_limit, "[per_partition_limit]"),
                    (&s.limit, "[limit]"),
                ] {
                    if let Some(term) = term {
                        term_marks(term, &CqlType::Int, name, &mut marks);
                    }
                }
                info.result_columns = crate::select::result_columns(&t, s)?;
                Some(t)
            }
            Statement::Insert(i) => {
                Some(modification(&Modification::Insert(i.clone()), &mut marks)?)
            }
            Statement::Update(u) => {
                Some(modification(&Modification::Update(u.clone()), &mut marks)?)
            }
            Statement::Delete(d) => {
                Some(modification(&Modification::Delete(d.clone()), &mut marks)?)
            }
            Statement::Batch(b) => {
                using_marks(&b.using, &mut marks);
                let mut first = None;
                for m in &b.statements {
                    let t = modification(m, &mut marks)?;
                    first.get_or_insert(t);
                }
                first
            }
            _ => None,
        };
        info.table = first.map(|t| (t.keyspace, t.name));
        info.bind_columns = marks
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                m.ok_or_else(|| {
                    QueryError::invalid(format!("Cannot determine the type of bind marker {i}"))
                })
            })
            .collect::<Result<_>>()?;
        Ok(info)
    }
}

/// Markers in IF conditions: the column's type, or its elements' for
/// `c[k]` (the key's type for the key); `IN ?` a list of them.
fn condition_marks(
    t: &TableDef,
    conditions: Option<&gyre_cql::Conditions>,
    marks: &mut [Option<(String, ColumnType)>],
) {
    let Some(gyre_cql::Conditions::List(list)) = conditions else {
        return;
    };
    for c in list {
        let (column, key, field, predicate) = match c {
            gyre_cql::Condition::Column { column, predicate } => (column, None, None, predicate),
            gyre_cql::Condition::Element {
                column,
                key,
                predicate,
            } => (column, Some(key), None, predicate),
            gyre_cql::Condition::Field {
                column,
                field,
                predicate,
            } => (column, None, Some(field), predicate),
        };
        let Some(col) = t.column(column) else {
            continue;
        };
        let ty = match (key, crate::values::unfrozen(&col.ty)) {
            (None, CqlType::UserType(u)) if field.is_some() => {
                match field.and_then(|f| u.field(f)) {
                    Some((_, ft)) => ft.clone(),
                    None => continue,
                }
            }
            (None, _) => col.ty.clone(),
            (Some(k), CqlType::Map(kt, vt)) => {
                term_marks(k, kt, &format!("key({column})"), marks);
                (**vt).clone()
            }
            (Some(k), CqlType::List(vt)) => {
                term_marks(k, &CqlType::Int, &format!("idx({column})"), marks);
                (**vt).clone()
            }
            _ => continue,
        };
        match predicate {
            gyre_cql::Predicate::Compare(_, term) => term_marks(term, &ty, column, marks),
            gyre_cql::Predicate::In(gyre_cql::InValues::List(terms)) => {
                terms
                    .iter()
                    .for_each(|term| term_marks(term, &ty, column, marks));
            }
            gyre_cql::Predicate::In(gyre_cql::InValues::Marker(m)) => {
                let n = m.name.clone().unwrap_or_else(|| format!("in({column})"));
                mark(
                    marks,
                    m.index,
                    &n,
                    column_type(&CqlType::List(Box::new(ty))),
                );
            }
        }
    }
}

fn mark(marks: &mut [Option<(String, ColumnType)>], index: usize, name: &str, ty: ColumnType) {
    if let Some(slot) = marks.get_mut(index) {
        *slot = Some((name.to_owned(), ty));
    }
}

fn using_marks(using: &Using, marks: &mut [Option<(String, ColumnType)>]) {
    if let Some(Term::Bind(m)) = &using.ttl {
        mark(marks, m.index, "[ttl]", ColumnType::Int);
    }
    if let Some(Term::Bind(m)) = &using.timestamp {
        mark(marks, m.index, "[timestamp]", ColumnType::Bigint);
    }
}

fn term_marks(term: &Term, ty: &CqlType, name: &str, marks: &mut [Option<(String, ColumnType)>]) {
    let ty = crate::values::unfrozen(ty);
    match (term, ty) {
        (Term::Bind(m), _) => {
            let n = m.name.as_deref().unwrap_or(name);
            mark(marks, m.index, n, column_type(ty));
        }
        (Term::TypeHint { term, .. }, _) => term_marks(term, ty, name, marks),
        (
            Term::List(items) | Term::Set(items),
            CqlType::List(e) | CqlType::Set(e) | CqlType::Vector(e, _),
        ) => {
            items.iter().for_each(|t| term_marks(t, e, name, marks));
        }
        (Term::Map(entries), CqlType::Map(k, v)) => {
            for (kt, vt) in entries {
                term_marks(kt, k, name, marks);
                term_marks(vt, v, name, marks);
            }
        }
        (Term::Tuple(items), CqlType::Tuple(types)) => {
            for (t, et) in items.iter().zip(types) {
                term_marks(t, et, name, marks);
            }
        }
        (Term::Udt(fields), CqlType::UserType(u)) => {
            for (f, t) in fields {
                if let Some((_, ft)) = u.field(f) {
                    term_marks(t, ft, f, marks);
                }
            }
        }
        // A function's markers take its parameter types, when the
        // overloads agree (Cassandra asks for a type hint otherwise).
        (Term::Function { name: f, args }, _) => {
            let types = crate::functions::function_name(f).ok().and_then(|f| {
                if f == "fromjson" {
                    Some(vec![CqlType::Text])
                } else {
                    crate::functions::arg_types(f, args.len())
                }
            });
            if let Some(types) = types {
                for (i, (t, et)) in args.iter().zip(&types).enumerate() {
                    let arg = format!("arg{i}({})", f.name);
                    term_marks(t, et, &arg, marks);
                }
            }
        }
        _ => {}
    }
}

/// Markers that are function arguments in a selection take the
/// function's parameter types.
fn selector_marks(
    t: &TableDef,
    sel: &gyre_cql::Selector,
    marks: &mut [Option<(String, ColumnType)>],
) {
    let gyre_cql::Selector::Function { name, args } = sel else {
        return;
    };
    let types = crate::functions::function_name(name).ok().and_then(|f| {
        if crate::functions::is_similarity(f) {
            // Both arguments take the type of the vector column given.
            let ty = args.iter().find_map(|a| match a {
                gyre_cql::Selector::Column(c) => t.column(c).map(|c| c.ty.clone()),
                _ => None,
            })?;
            Some(vec![ty.clone(), ty])
        } else {
            crate::functions::arg_types(f, args.len())
        }
    });
    for (i, arg) in args.iter().enumerate() {
        match (arg, types.as_ref().and_then(|t| t.get(i))) {
            (gyre_cql::Selector::Term(term), Some(ty)) => {
                term_marks(term, ty, &format!("arg{i}({})", name.name), marks);
            }
            (other, _) => selector_marks(t, other, marks),
        }
    }
}

fn assignment_marks(t: &TableDef, a: &Assignment, marks: &mut [Option<(String, ColumnType)>]) {
    match a {
        Assignment::Set { column, value } | Assignment::Add { column, value } => {
            if let Some(c) = t.column(column) {
                term_marks(value, &c.ty, column, marks);
            }
        }
        Assignment::Subtract { column, value } => match t.column(column).map(|c| &c.ty) {
            Some(CqlType::Map(k, _)) => term_marks(value, &CqlType::Set(k.clone()), column, marks),
            Some(ty) => term_marks(value, ty, column, marks),
            None => {}
        },
        Assignment::SetElement { column, key, value } => match t.column(column).map(|c| &c.ty) {
            Some(CqlType::Map(k, v)) => {
                term_marks(key, k, column, marks);
                term_marks(value, v, column, marks);
            }
            Some(CqlType::List(v)) => {
                term_marks(key, &CqlType::Int, &format!("idx({column})"), marks);
                term_marks(value, v, column, marks);
            }
            _ => {}
        },
        Assignment::Prepend { column, value } => {
            if let Some(c) = t.column(column) {
                term_marks(value, &c.ty, column, marks);
            }
        }
        Assignment::SetField {
            column,
            field,
            value,
        } => {
            if let Some(CqlType::UserType(u)) = t.column(column).map(|c| &c.ty) {
                if let Some((_, ft)) = u.field(field) {
                    term_marks(value, ft, field, marks);
                }
            }
        }
    }
}

fn where_marks(t: &TableDef, relations: &[Relation], marks: &mut [Option<(String, ColumnType)>]) {
    for r in relations {
        match r {
            Relation::Column { column, predicate } => {
                let Some(col) = t.column(column) else {
                    continue;
                };
                match predicate {
                    Predicate::Compare(Operator::Contains, term) => {
                        if let Some((elem, _)) = crate::processor::contained_type(&col.ty) {
                            term_marks(term, elem, column, marks);
                        }
                    }
                    Predicate::Compare(Operator::ContainsKey, term) => {
                        if let CqlType::Map(k, _) = crate::values::unfrozen(&col.ty) {
                            term_marks(term, k, column, marks);
                        }
                    }
                    Predicate::Compare(_, term) => term_marks(term, &col.ty, column, marks),
                    Predicate::In(InValues::List(terms)) => {
                        terms
                            .iter()
                            .for_each(|term| term_marks(term, &col.ty, column, marks));
                    }
                    Predicate::In(InValues::Marker(m)) => mark(
                        marks,
                        m.index,
                        column,
                        ColumnType::List(Box::new(column_type(&col.ty))),
                    ),
                }
            }
            Relation::Element {
                column,
                key,
                predicate: Predicate::Compare(_, value),
            } => {
                if let Some(CqlType::Map(k, v)) =
                    t.column(column).map(|c| crate::values::unfrozen(&c.ty))
                {
                    term_marks(key, k, column, marks);
                    term_marks(value, v, column, marks);
                }
            }
            Relation::Token {
                predicate: Predicate::Compare(_, Term::Function { name, args }),
                ..
            } if name.name == "token" => {
                // `token(k) > token(?)`: markers typed by the key columns.
                for (c, a) in t.partition_key().into_iter().zip(args) {
                    term_marks(a, &c.ty, &c.name, marks);
                }
            }
            Relation::Token {
                predicate: Predicate::Compare(_, term),
                ..
            } => {
                term_marks(term, &CqlType::Bigint, "partition key token", marks);
            }
            // `(c1, c2) > (?, ?)`: each element typed by its column.
            Relation::Tuple {
                columns,
                predicate: Predicate::Compare(_, Term::Tuple(terms)),
            } => {
                for (name, term) in columns.iter().zip(terms) {
                    if let Some(c) = t.column(name) {
                        term_marks(term, &c.ty, name, marks);
                    }
                }
            }
            _ => {}
        }
    }
}

/// What Cassandra refuses when an INSERT is prepared: names and values that
/// do not pair up, and a primary key that is not whole (clustering columns
/// may be left out only when every other column written is static).
fn check_insert_columns(t: &TableDef, columns: &[String], values: usize) -> Result<()> {
    if columns.len() != values {
        return Err(QueryError::invalid("Unmatched column names/values"));
    }
    let named = |c: &gyre_schema::ColumnDef| {
        columns
            .iter()
            .any(|n| t.column(n).is_some_and(|d| d.name == c.name))
    };
    let missing = |cols: Vec<&gyre_schema::ColumnDef>| -> Vec<String> {
        cols.into_iter()
            .filter(|c| !named(c))
            .map(|c| c.name.clone())
            .collect()
    };
    let pk = missing(t.partition_key());
    if !pk.is_empty() {
        return Err(QueryError::invalid(format!(
            "Some partition key parts are missing: {}",
            pk.join(", ")
        )));
    }
    let ck = missing(t.clustering());
    let only_static = columns.iter().all(|n| {
        t.column(n).is_none_or(|c| {
            matches!(c.kind, gyre_schema::ColumnKind::PartitionKey(_))
                || c.kind == gyre_schema::ColumnKind::Static
        })
    });
    if !ck.is_empty() && (ck.len() < t.clustering().len() || !only_static) {
        return Err(QueryError::invalid(format!(
            "Some clustering keys are missing: {}",
            ck.join(", ")
        )));
    }
    Ok(())
}
