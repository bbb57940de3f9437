//! Canonical CQL text for the AST. Parsing the output gives back the same
//! tree, which the golden tests check; DESCRIBE can build on it.

use std::fmt::{self, Display, Formatter, Write};

use crate::ast::*;
use crate::lexer::parse_iso_duration;
use crate::parser::is_reserved_keyword;

/// An identifier as CQL text: bare when it would read back unchanged,
/// double-quoted otherwise.
pub fn quote_identifier(name: &str) -> String {
    let bare = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !is_reserved_keyword(name)
        && parse_iso_duration(name).is_none();
    if bare {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// A string as a single-quoted CQL literal.
pub fn quote_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

struct Ident<'a>(&'a str);

impl Display for Ident<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(&quote_identifier(self.0))
    }
}

/// Writes items separated by `", "`.
fn comma<T>(
    f: &mut Formatter<'_>,
    items: &[T],
    mut each: impl FnMut(&mut Formatter<'_>, &T) -> fmt::Result,
) -> fmt::Result {
    for (k, item) in items.iter().enumerate() {
        if k > 0 {
            f.write_str(", ")?;
        }
        each(f, item)?;
    }
    Ok(())
}

fn idents(f: &mut Formatter<'_>, names: &[String]) -> fmt::Result {
    comma(f, names, |f, n| write!(f, "{}", Ident(n)))
}

fn displays<T: Display>(f: &mut Formatter<'_>, items: &[T]) -> fmt::Result {
    comma(f, items, |f, t| write!(f, "{t}"))
}

impl Display for QualifiedName {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if let Some(ks) = &self.keyspace {
            write!(f, "{}.", Ident(ks))?;
        }
        write!(f, "{}", Ident(&self.name))
    }
}

/// A function name; `quote_special` forces quotes on names the parser
/// would otherwise read as a built-in form (`writetime(c)`, `count(1)`).
fn function_name(f: &mut Formatter<'_>, name: &QualifiedName, quote_special: bool) -> fmt::Result {
    if name.keyspace.is_none() {
        if name.name == "token" {
            return f.write_str("token");
        }
        if quote_special {
            return write!(f, "\"{}\"", name.name);
        }
    }
    write!(f, "{name}")
}

/// Words with a meaning of their own where a type is expected.
fn is_type_word(name: &str) -> bool {
    CqlType::native(name).is_some()
        || matches!(name, "list" | "set" | "map" | "frozen" | "tuple" | "vector")
}

/// Words with a meaning of their own right after DESCRIBE.
fn is_describe_word(name: &str) -> bool {
    matches!(
        name,
        "cluster"
            | "keyspaces"
            | "tables"
            | "types"
            | "functions"
            | "aggregates"
            | "type"
            | "function"
            | "aggregate"
            | "only"
    )
}

impl Display for CqlType {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let simple = match self {
            CqlType::Ascii => "ascii",
            CqlType::Bigint => "bigint",
            CqlType::Blob => "blob",
            CqlType::Boolean => "boolean",
            CqlType::Counter => "counter",
            CqlType::Date => "date",
            CqlType::Decimal => "decimal",
            CqlType::Double => "double",
            CqlType::Duration => "duration",
            CqlType::Float => "float",
            CqlType::Inet => "inet",
            CqlType::Int => "int",
            CqlType::Smallint => "smallint",
            CqlType::Text => "text",
            CqlType::Time => "time",
            CqlType::Timestamp => "timestamp",
            CqlType::Timeuuid => "timeuuid",
            CqlType::Tinyint => "tinyint",
            CqlType::Uuid => "uuid",
            CqlType::Varint => "varint",
            CqlType::List(t) => return write!(f, "list<{t}>"),
            CqlType::Set(t) => return write!(f, "set<{t}>"),
            CqlType::Map(k, v) => return write!(f, "map<{k}, {v}>"),
            CqlType::Frozen(t) => return write!(f, "frozen<{t}>"),
            CqlType::Vector(t, n) => return write!(f, "vector<{t}, {n}>"),
            CqlType::Tuple(ts) => {
                f.write_str("tuple<")?;
                displays(f, ts)?;
                return f.write_str(">");
            }
            CqlType::Udt(name) if name.keyspace.is_none() && is_type_word(&name.name) => {
                return write!(f, "\"{}\"", name.name)
            }
            CqlType::Udt(name) => return write!(f, "{name}"),
            CqlType::UserType(u) => return write!(f, "{}", Ident(&u.name)),
            CqlType::Custom(class) => return f.write_str(&quote_string(class)),
        };
        f.write_str(simple)
    }
}

impl Display for Duration {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if self.months < 0 || self.days < 0 || self.nanos < 0 {
            f.write_char('-')?;
        }
        let months = self.months.unsigned_abs();
        let days = self.days.unsigned_abs();
        let mut nanos = self.nanos.unsigned_abs();
        let mut out = String::new();
        let mut put = |n: u64, unit: &str| {
            if n > 0 {
                // Writing to a String cannot fail.
                let _ = write!(out, "{n}{unit}");
            }
        };
        put(u64::from(months / 12), "y");
        put(u64::from(months % 12), "mo");
        put(u64::from(days), "d");
        for (unit, size) in [
            ("h", 3_600_000_000_000u64),
            ("m", 60_000_000_000),
            ("s", 1_000_000_000),
            ("ms", 1_000_000),
            ("us", 1_000),
            ("ns", 1),
        ] {
            put(nanos / size, unit);
            nanos %= size;
        }
        if out.is_empty() {
            out.push_str("0s");
        }
        f.write_str(&out)
    }
}

impl Display for Literal {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Null => f.write_str("null"),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Integer(s) | Literal::Float(s) => f.write_str(s),
            Literal::String(s) => f.write_str(&quote_string(s)),
            Literal::Blob(b) => {
                f.write_str("0x")?;
                b.iter().try_for_each(|x| write!(f, "{x:02x}"))
            }
            Literal::Uuid(u) => {
                let h = format!("{u:032x}");
                write!(
                    f,
                    "{}-{}-{}-{}-{}",
                    &h[..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..]
                )
            }
            Literal::Duration(d) => write!(f, "{d}"),
        }
    }
}

impl Display for BindMarker {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match &self.name {
            None => f.write_str("?"),
            Some(n) => write!(f, ":{}", Ident(n)),
        }
    }
}

impl Display for Term {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Term::Literal(l) => write!(f, "{l}"),
            Term::Bind(m) => write!(f, "{m}"),
            Term::List(items) => {
                f.write_str("[")?;
                displays(f, items)?;
                f.write_str("]")
            }
            Term::Set(items) => {
                f.write_str("{")?;
                displays(f, items)?;
                f.write_str("}")
            }
            Term::Map(entries) => {
                f.write_str("{")?;
                comma(f, entries, |f, (k, v)| write!(f, "{k}: {v}"))?;
                f.write_str("}")
            }
            Term::Tuple(items) => {
                f.write_str("(")?;
                displays(f, items)?;
                f.write_str(")")
            }
            Term::Udt(fields) => {
                f.write_str("{")?;
                comma(f, fields, |f, (k, v)| write!(f, "{}: {v}", Ident(k)))?;
                f.write_str("}")
            }
            Term::Function { name, args } => {
                function_name(f, name, false)?;
                f.write_str("(")?;
                displays(f, args)?;
                f.write_str(")")
            }
            Term::TypeHint { ty, term } => write!(f, "({ty}) {term}"),
        }
    }
}

impl Display for Operator {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operator::Eq => "=",
            Operator::Lt => "<",
            Operator::Lte => "<=",
            Operator::Gt => ">",
            Operator::Gte => ">=",
            Operator::Neq => "!=",
            Operator::Contains => "CONTAINS",
            Operator::ContainsKey => "CONTAINS KEY",
            Operator::Like => "LIKE",
        })
    }
}

impl Display for Predicate {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Predicate::Compare(op, t) => write!(f, "{op} {t}"),
            Predicate::In(InValues::Marker(m)) => write!(f, "IN {m}"),
            Predicate::In(InValues::List(items)) => {
                f.write_str("IN (")?;
                displays(f, items)?;
                f.write_str(")")
            }
        }
    }
}

impl Display for Relation {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Relation::Column { column, predicate } => write!(f, "{} {predicate}", Ident(column)),
            Relation::Token { columns, predicate } => {
                f.write_str("token(")?;
                idents(f, columns)?;
                write!(f, ") {predicate}")
            }
            Relation::Tuple { columns, predicate } => {
                f.write_str("(")?;
                idents(f, columns)?;
                write!(f, ") {predicate}")
            }
            Relation::IsNotNull { column } => write!(f, "{} IS NOT NULL", Ident(column)),
            Relation::Element {
                column,
                key,
                predicate,
            } => write!(f, "{}[{key}] {predicate}", Ident(column)),
        }
    }
}

fn relations(f: &mut Formatter<'_>, rels: &[Relation]) -> fmt::Result {
    for (k, r) in rels.iter().enumerate() {
        f.write_str(if k == 0 { " WHERE " } else { " AND " })?;
        write!(f, "{r}")?;
    }
    Ok(())
}

impl Display for Order {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Order::Asc => "ASC",
            Order::Desc => "DESC",
        })
    }
}

fn orderings(f: &mut Formatter<'_>, items: &[(String, Order)]) -> fmt::Result {
    comma(f, items, |f, (c, o)| write!(f, "{} {o}", Ident(c)))
}

impl Display for Selector {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Column(c) => write!(f, "{}", Ident(c)),
            Selector::Term(t) => write!(f, "{t}"),
            Selector::CountRows => f.write_str("count(*)"),
            Selector::WriteTime(c) => write!(f, "writetime({})", Ident(c)),
            Selector::Ttl(c) => write!(f, "ttl({})", Ident(c)),
            Selector::Timestamps {
                function,
                column,
                fields,
            } => {
                write!(f, "{}({}", function.name(), Ident(column))?;
                for field in fields {
                    write!(f, ".{}", Ident(field))?;
                }
                f.write_str(")")
            }
            Selector::Function { name, args } => {
                let special = match name.name.as_str() {
                    "writetime" | "ttl" | "maxwritetime" | "cast" => true,
                    "count" => matches!(
                        args.as_slice(),
                        [Selector::Term(Term::Literal(Literal::Integer(n)))] if !n.starts_with('-')
                    ),
                    _ => false,
                };
                function_name(f, name, special)?;
                f.write_str("(")?;
                displays(f, args)?;
                f.write_str(")")
            }
            Selector::Cast { selector, ty } => write!(f, "cast({selector} AS {ty})"),
            Selector::Field { selector, field } => write!(f, "{selector}.{}", Ident(field)),
        }
    }
}

impl Display for SelectItem {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.selector)?;
        if let Some(a) = &self.alias {
            write!(f, " AS {}", Ident(a))?;
        }
        Ok(())
    }
}

impl Display for Select {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str("SELECT ")?;
        if self.json {
            f.write_str("JSON ")?;
        }
        if self.distinct {
            f.write_str("DISTINCT ")?;
        }
        match &self.selection {
            Selection::Wildcard => f.write_str("*")?,
            Selection::Items(items) => displays(f, items)?,
        }
        write!(f, " FROM {}", self.table)?;
        relations(f, &self.where_clause)?;
        if !self.group_by.is_empty() {
            f.write_str(" GROUP BY ")?;
            idents(f, &self.group_by)?;
        }
        if !self.order_by.is_empty() {
            f.write_str(" ORDER BY ")?;
            orderings(f, &self.order_by)?;
        }
        if let Some((col, v)) = &self.ann {
            let sep = if self.order_by.is_empty() {
                " ORDER BY "
            } else {
                ", "
            };
            write!(f, "{sep}{} ANN OF {v}", Ident(col))?;
        }
        if let Some(l) = &self.per_partition_limit {
            write!(f, " PER PARTITION LIMIT {l}")?;
        }
        if let Some(l) = &self.limit {
            write!(f, " LIMIT {l}")?;
        }
        if self.allow_filtering {
            f.write_str(" ALLOW FILTERING")?;
        }
        Ok(())
    }
}

impl Display for Using {
    /// Empty, or ` USING ...` with a leading space.
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let mut items = [("TTL", &self.ttl), ("TIMESTAMP", &self.timestamp)];
        // Keep bind markers in source order so they renumber identically.
        if let (Some(Term::Bind(ttl)), Some(Term::Bind(ts))) = (&self.ttl, &self.timestamp) {
            if ts.index < ttl.index {
                items.swap(0, 1);
            }
        }
        let mut sep = " USING ";
        for (kw, value) in items {
            if let Some(t) = value {
                write!(f, "{sep}{kw} {t}")?;
                sep = " AND ";
            }
        }
        Ok(())
    }
}

impl Display for Insert {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "INSERT INTO {}", self.table)?;
        match &self.values {
            InsertValues::Columns { columns, values } => {
                f.write_str(" (")?;
                idents(f, columns)?;
                f.write_str(") VALUES (")?;
                displays(f, values)?;
                f.write_str(")")?;
            }
            InsertValues::Json { json, default } => {
                write!(f, " JSON {json}")?;
                if *default == JsonDefault::Unset {
                    f.write_str(" DEFAULT UNSET")?;
                }
            }
        }
        if self.if_not_exists {
            f.write_str(" IF NOT EXISTS")?;
        }
        write!(f, "{}", self.using)
    }
}

impl Display for Assignment {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Assignment::Set { column, value } => write!(f, "{} = {value}", Ident(column)),
            Assignment::SetElement { column, key, value } => {
                write!(f, "{}[{key}] = {value}", Ident(column))
            }
            Assignment::SetField {
                column,
                field,
                value,
            } => write!(f, "{}.{} = {value}", Ident(column), Ident(field)),
            Assignment::Add { column, value } => {
                write!(f, "{c} = {c} + {value}", c = Ident(column))
            }
            Assignment::Prepend { column, value } => {
                write!(f, "{c} = {value} + {c}", c = Ident(column))
            }
            Assignment::Subtract { column, value } => {
                write!(f, "{c} = {c} - {value}", c = Ident(column))
            }
        }
    }
}

impl Display for Condition {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Condition::Column { column, predicate } => write!(f, "{} {predicate}", Ident(column)),
            Condition::Element {
                column,
                key,
                predicate,
            } => write!(f, "{}[{key}] {predicate}", Ident(column)),
            Condition::Field {
                column,
                field,
                predicate,
            } => write!(f, "{}.{} {predicate}", Ident(column), Ident(field)),
        }
    }
}

fn conditions(f: &mut Formatter<'_>, c: &Option<Conditions>) -> fmt::Result {
    match c {
        None => Ok(()),
        Some(Conditions::Exists) => f.write_str(" IF EXISTS"),
        Some(Conditions::List(items)) => {
            for (k, c) in items.iter().enumerate() {
                f.write_str(if k == 0 { " IF " } else { " AND " })?;
                write!(f, "{c}")?;
            }
            Ok(())
        }
    }
}

impl Display for Update {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "UPDATE {}{} SET ", self.table, self.using)?;
        displays(f, &self.assignments)?;
        relations(f, &self.where_clause)?;
        conditions(f, &self.conditions)
    }
}

impl Display for Deletion {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Deletion::Column(c) => write!(f, "{}", Ident(c)),
            Deletion::Element { column, key } => write!(f, "{}[{key}]", Ident(column)),
            Deletion::Field { column, field } => write!(f, "{}.{}", Ident(column), Ident(field)),
        }
    }
}

impl Display for Delete {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str("DELETE ")?;
        if !self.columns.is_empty() {
            displays(f, &self.columns)?;
            f.write_str(" ")?;
        }
        write!(f, "FROM {}{}", self.table, self.using)?;
        relations(f, &self.where_clause)?;
        conditions(f, &self.conditions)
    }
}

impl Display for Modification {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Modification::Insert(s) => write!(f, "{s}"),
            Modification::Update(s) => write!(f, "{s}"),
            Modification::Delete(s) => write!(f, "{s}"),
        }
    }
}

impl Display for Batch {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            BatchKind::Logged => "BEGIN BATCH",
            BatchKind::Unlogged => "BEGIN UNLOGGED BATCH",
            BatchKind::Counter => "BEGIN COUNTER BATCH",
        })?;
        write!(f, "{}", self.using)?;
        for s in &self.statements {
            write!(f, " {s};")?;
        }
        f.write_str(" APPLY BATCH")
    }
}

impl Display for PropertyValue {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            PropertyValue::Constant(l) => write!(f, "{l}"),
            PropertyValue::Identifier(i) => write!(f, "{}", Ident(i)),
            PropertyValue::Map(entries) => {
                f.write_str("{")?;
                comma(f, entries, |f, (k, v)| write!(f, "{k}: {v}"))?;
                f.write_str("}")
            }
        }
    }
}

impl Display for Property {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {}", Ident(&self.name), self.value)
    }
}

fn properties(f: &mut Formatter<'_>, props: &[Property]) -> fmt::Result {
    for (k, p) in props.iter().enumerate() {
        f.write_str(if k == 0 { " WITH " } else { " AND " })?;
        write!(f, "{p}")?;
    }
    Ok(())
}

impl Display for ColumnDef {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", Ident(&self.name), self.ty)?;
        if self.is_static {
            f.write_str(" STATIC")?;
        }
        Ok(())
    }
}

impl Display for IndexTarget {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            IndexTarget::Column(c) => write!(f, "{}", Ident(c)),
            IndexTarget::Keys(c) => write!(f, "KEYS({})", Ident(c)),
            IndexTarget::Values(c) => write!(f, "VALUES({})", Ident(c)),
            IndexTarget::Entries(c) => write!(f, "ENTRIES({})", Ident(c)),
            IndexTarget::Full(c) => write!(f, "FULL({})", Ident(c)),
        }
    }
}

impl Display for CreateIndex {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(if self.custom {
            "CREATE CUSTOM INDEX "
        } else {
            "CREATE INDEX "
        })?;
        if self.if_not_exists {
            f.write_str("IF NOT EXISTS ")?;
        }
        if let Some(n) = &self.name {
            write!(f, "{} ", Ident(n))?;
        }
        write!(f, "ON {} (", self.table)?;
        displays(f, &self.targets)?;
        f.write_str(")")?;
        if let Some(c) = &self.class {
            write!(f, " USING {}", Literal::String(c.clone()))?;
        }
        properties(f, &self.properties)
    }
}

impl Display for CreateTable {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str("CREATE TABLE ")?;
        if self.if_not_exists {
            f.write_str("IF NOT EXISTS ")?;
        }
        write!(f, "{} (", self.name)?;
        displays(f, &self.columns)?;
        if !self.partition_key.is_empty() {
            if !self.columns.is_empty() {
                f.write_str(", ")?;
            }
            f.write_str("PRIMARY KEY (")?;
            if self.partition_key.len() == 1 {
                idents(f, &self.partition_key)?;
            } else {
                f.write_str("(")?;
                idents(f, &self.partition_key)?;
                f.write_str(")")?;
            }
            for c in &self.clustering_columns {
                write!(f, ", {}", Ident(c))?;
            }
            f.write_str(")")?;
        }
        f.write_str(")")?;
        let o = &self.options;
        let mut sep = " WITH ";
        if !o.clustering_order.is_empty() {
            write!(f, "{sep}CLUSTERING ORDER BY (")?;
            orderings(f, &o.clustering_order)?;
            f.write_str(")")?;
            sep = " AND ";
        }
        if o.compact_storage {
            write!(f, "{sep}COMPACT STORAGE")?;
            sep = " AND ";
        }
        for p in &o.properties {
            write!(f, "{sep}{p}")?;
            sep = " AND ";
        }
        Ok(())
    }
}

impl Display for AlterTable {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str("ALTER TABLE ")?;
        if self.if_exists {
            f.write_str("IF EXISTS ")?;
        }
        write!(f, "{}", self.name)?;
        match &self.action {
            AlterTableAction::Add {
                if_not_exists,
                columns,
            } => {
                f.write_str(" ADD ")?;
                if *if_not_exists {
                    f.write_str("IF NOT EXISTS ")?;
                }
                f.write_str("(")?;
                displays(f, columns)?;
                f.write_str(")")
            }
            AlterTableAction::Drop {
                if_exists,
                columns,
                timestamp,
            } => {
                f.write_str(" DROP ")?;
                if *if_exists {
                    f.write_str("IF EXISTS ")?;
                }
                f.write_str("(")?;
                idents(f, columns)?;
                f.write_str(")")?;
                if let Some(t) = timestamp {
                    write!(f, " USING TIMESTAMP {t}")?;
                }
                Ok(())
            }
            AlterTableAction::Rename { if_exists, renames } => {
                f.write_str(" RENAME ")?;
                if *if_exists {
                    f.write_str("IF EXISTS ")?;
                }
                for (k, (from, to)) in renames.iter().enumerate() {
                    if k > 0 {
                        f.write_str(" AND ")?;
                    }
                    write!(f, "{} TO {}", Ident(from), Ident(to))?;
                }
                Ok(())
            }
            AlterTableAction::AlterType { column, ty } => {
                write!(f, " ALTER {} TYPE {ty}", Ident(column))
            }
            AlterTableAction::With(props) => properties(f, props),
        }
    }
}

impl Display for CreateType {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str("CREATE TYPE ")?;
        if self.if_not_exists {
            f.write_str("IF NOT EXISTS ")?;
        }
        write!(f, "{} (", self.name)?;
        comma(f, &self.fields, |f, (n, t)| write!(f, "{} {t}", Ident(n)))?;
        f.write_str(")")
    }
}

impl Display for AlterType {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str("ALTER TYPE ")?;
        if self.if_exists {
            f.write_str("IF EXISTS ")?;
        }
        write!(f, "{}", self.name)?;
        match &self.action {
            AlterTypeAction::Add {
                if_not_exists,
                field,
                ty,
            } => {
                f.write_str(" ADD ")?;
                if *if_not_exists {
                    f.write_str("IF NOT EXISTS ")?;
                }
                write!(f, "{} {ty}", Ident(field))
            }
            AlterTypeAction::Rename { if_exists, renames } => {
                f.write_str(" RENAME ")?;
                if *if_exists {
                    f.write_str("IF EXISTS ")?;
                }
                for (k, (from, to)) in renames.iter().enumerate() {
                    if k > 0 {
                        f.write_str(" AND ")?;
                    }
                    write!(f, "{} TO {}", Ident(from), Ident(to))?;
                }
                Ok(())
            }
            AlterTypeAction::AlterField { field, ty } => {
                write!(f, " ALTER {} TYPE {ty}", Ident(field))
            }
        }
    }
}

impl Display for Describe {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str("DESCRIBE ")?;
        match &self.target {
            DescribeTarget::Cluster => f.write_str("CLUSTER")?,
            DescribeTarget::Schema { full } => {
                f.write_str(if *full { "FULL SCHEMA" } else { "SCHEMA" })?
            }
            DescribeTarget::Keyspaces => f.write_str("KEYSPACES")?,
            DescribeTarget::Keyspace { only, name } => {
                f.write_str(if *only { "ONLY KEYSPACE" } else { "KEYSPACE" })?;
                if let Some(n) = name {
                    write!(f, " {}", Ident(n))?;
                }
            }
            DescribeTarget::Tables => f.write_str("TABLES")?,
            DescribeTarget::Table(n) => write!(f, "TABLE {n}")?,
            DescribeTarget::Index(n) => write!(f, "INDEX {n}")?,
            DescribeTarget::MaterializedView(n) => write!(f, "MATERIALIZED VIEW {n}")?,
            DescribeTarget::Types => f.write_str("TYPES")?,
            DescribeTarget::Type(n) => write!(f, "TYPE {n}")?,
            DescribeTarget::Functions => f.write_str("FUNCTIONS")?,
            DescribeTarget::Function(n) => write!(f, "FUNCTION {n}")?,
            DescribeTarget::Aggregates => f.write_str("AGGREGATES")?,
            DescribeTarget::Aggregate(n) => write!(f, "AGGREGATE {n}")?,
            DescribeTarget::Generic(n) if n.keyspace.is_none() && is_describe_word(&n.name) => {
                write!(f, "\"{}\"", n.name)?
            }
            DescribeTarget::Generic(n) => write!(f, "{n}")?,
        }
        if self.with_internals {
            f.write_str(" WITH INTERNALS")?;
        }
        Ok(())
    }
}

impl Display for Statement {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Statement::Select(s) => write!(f, "{s}"),
            Statement::Insert(s) => write!(f, "{s}"),
            Statement::Update(s) => write!(f, "{s}"),
            Statement::Delete(s) => write!(f, "{s}"),
            Statement::Batch(s) => write!(f, "{s}"),
            Statement::Use(ks) => write!(f, "USE {}", Ident(ks)),
            Statement::CreateKeyspace(s) => {
                f.write_str("CREATE KEYSPACE ")?;
                if s.if_not_exists {
                    f.write_str("IF NOT EXISTS ")?;
                }
                write!(f, "{}", Ident(&s.name))?;
                properties(f, &s.properties)
            }
            Statement::AlterKeyspace(s) => {
                f.write_str("ALTER KEYSPACE ")?;
                if s.if_exists {
                    f.write_str("IF EXISTS ")?;
                }
                write!(f, "{}", Ident(&s.name))?;
                properties(f, &s.properties)
            }
            Statement::DropKeyspace { name, if_exists } => {
                let ie = if *if_exists { "IF EXISTS " } else { "" };
                write!(f, "DROP KEYSPACE {ie}{}", Ident(name))
            }
            Statement::CreateTable(s) => write!(f, "{s}"),
            Statement::AlterTable(s) => write!(f, "{s}"),
            Statement::DropTable { name, if_exists } => {
                let ie = if *if_exists { "IF EXISTS " } else { "" };
                write!(f, "DROP TABLE {ie}{name}")
            }
            Statement::Truncate(name) => write!(f, "TRUNCATE {name}"),
            Statement::CreateIndex(s) => write!(f, "{s}"),
            Statement::DropIndex { name, if_exists } => {
                let ie = if *if_exists { "IF EXISTS " } else { "" };
                write!(f, "DROP INDEX {ie}{name}")
            }
            Statement::CreateType(s) => write!(f, "{s}"),
            Statement::AlterType(s) => write!(f, "{s}"),
            Statement::DropType { name, if_exists } => {
                f.write_str("DROP TYPE ")?;
                if *if_exists {
                    f.write_str("IF EXISTS ")?;
                }
                write!(f, "{name}")
            }
            Statement::Describe(d) => write!(f, "{d}"),
            Statement::Unsupported { kind } => f.write_str(kind),
        }
    }
}
