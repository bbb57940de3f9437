//! Gyre's CQL front end: a hand-written lexer and recursive-descent parser
//! that turn Cassandra 4/5 CQL text, as real drivers, cqlsh and load tools
//! send it, into a typed [`Statement`] tree.
//!
//! What it is: syntax only. Identifiers are normalized (unquoted ones
//! lower-cased, quoted ones kept), literals are kept in a form that does not
//! lose information (numbers keep their text, since only the column type
//! decides between int, varint and decimal), and bind markers are numbered in
//! source order so a PREPARE can count them and map them to columns.
//!
//! What it is not: there is no schema and no semantic checking here. Unknown
//! tables, type mismatches, a missing primary key, `COMPACT STORAGE`,
//! statements Gyre does not implement ([`Statement::Unsupported`]) are all for
//! the caller to reject. No I/O.
//!
//! Errors carry a 1-based line and column and Cassandra-like wording:
//!
//! ```
//! use gyre_cql::{parse, parse_statement, Statement};
//!
//! let stmt = parse_statement("SELECT a, b FROM ks.t WHERE token(a) > ? AND token(a) <= ?;").unwrap();
//! assert!(matches!(stmt, Statement::Select(_)));
//!
//! let parsed = parse("INSERT INTO t (k, v) VALUES (:k, ?)").unwrap();
//! assert_eq!(parsed.bind_markers.len(), 2);
//! assert_eq!(parsed.bind_markers[0].name.as_deref(), Some("k"));
//!
//! let err = parse_statement("SELECT * FORM t").unwrap_err();
//! assert_eq!(err.to_string(), "line 1:10 mismatched input 'FORM' expecting FROM");
//! ```
//!
//! Every AST type implements `Display`, printing canonical CQL that parses
//! back to the same tree.

mod ast;
mod display;
mod error;
mod lexer;
mod parser;

pub use crate::{
    ast::{
        AlterKeyspace, AlterTable, AlterTableAction, AlterType, AlterTypeAction, Assignment, Batch,
        BatchKind, BindMarker, ColumnDef, Condition, Conditions, CqlType, CreateIndex,
        CreateKeyspace, CreateTable, CreateType, Delete, Deletion, Describe, DescribeTarget,
        Duration, InValues, IndexTarget, Insert, InsertValues, JsonDefault, Literal, Modification,
        Operator, Order, Parsed, Predicate, Property, PropertyValue, QualifiedName, Relation,
        Select, SelectItem, Selection, Selector, Statement, TableOptions, Term, TimestampFunction,
        Update, UserType, Using,
    },
    display::{quote_identifier, quote_string},
    error::{ParseError, Position},
    parser::is_reserved_keyword,
};

/// Result of parsing.
pub type Result<T> = std::result::Result<T, ParseError>;

/// Parses exactly one statement (a trailing `;` is allowed) with its bind
/// markers.
pub fn parse(cql: &str) -> Result<Parsed> {
    parser::parse_one(cql)
}

/// Parses exactly one statement (a trailing `;` is allowed).
pub fn parse_statement(cql: &str) -> Result<Statement> {
    parse(cql).map(|p| p.statement)
}

/// Parses any number of `;`-separated statements, each with its own bind
/// marker numbering.
pub fn parse_all(cql: &str) -> Result<Vec<Parsed>> {
    parser::parse_all(cql)
}

/// Parses any number of `;`-separated statements.
pub fn parse_statements(cql: &str) -> Result<Vec<Statement>> {
    parse_all(cql).map(|v| v.into_iter().map(|p| p.statement).collect())
}

/// A duration written as a string (`1h30m`, `-2d`, `P1DT2H`), as Cassandra
/// reads one from JSON or a string literal.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let d = lexer::parse_unit_duration(body)
        .or_else(|| lexer::parse_iso_duration(body))
        .or_else(|| lexer::parse_iso_alternative(body))?;
    Some(if negative {
        Duration {
            months: -d.months,
            days: -d.days,
            nanos: -d.nanos,
        }
    } else {
        d
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_from_strings() {
        let d = parse_duration("1h30m").unwrap_or_default();
        assert_eq!(d.nanos, 90 * 60 * 1_000_000_000);
        let d = parse_duration("-2d").unwrap_or_default();
        assert_eq!(d.days, -2);
        let d = parse_duration("P1Y2D").unwrap_or_default();
        assert_eq!((d.months, d.days), (12, 2));
        assert!(parse_duration("soon").is_none());
    }
}
