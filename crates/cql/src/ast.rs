//! The typed syntax tree. Names are already normalized: unquoted identifiers
//! are lower-cased, quoted ones keep their case. Nothing here is checked
//! against a schema.

/// `[keyspace.]name`, used for tables, types, functions and indexes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QualifiedName {
    pub keyspace: Option<String>,
    pub name: String,
}

impl QualifiedName {
    pub fn new(keyspace: Option<&str>, name: &str) -> Self {
        QualifiedName {
            keyspace: keyspace.map(str::to_owned),
            name: name.to_owned(),
        }
    }
}

/// A CQL data type as written in DDL or a cast.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CqlType {
    Ascii,
    Bigint,
    Blob,
    Boolean,
    Counter,
    Date,
    Decimal,
    Double,
    Duration,
    Float,
    Inet,
    Int,
    Smallint,
    /// `text` and its alias `varchar`.
    Text,
    Time,
    Timestamp,
    Timeuuid,
    Tinyint,
    Uuid,
    Varint,
    List(Box<CqlType>),
    Set(Box<CqlType>),
    Map(Box<CqlType>, Box<CqlType>),
    Tuple(Vec<CqlType>),
    Frozen(Box<CqlType>),
    /// Cassandra 5 `vector<T, n>`.
    Vector(Box<CqlType>, u32),
    /// A user-defined type referenced by name.
    Udt(QualifiedName),
    /// A user-defined type resolved against the schema (never produced by
    /// the parser): its fields, themselves resolved. Prints as its name.
    UserType(std::sync::Arc<UserType>),
    /// A custom type given as a Java class name string.
    Custom(String),
}

impl CqlType {
    /// The native type named `name` (lower-case), if any.
    pub fn native(name: &str) -> Option<CqlType> {
        Some(match name {
            "ascii" => CqlType::Ascii,
            "bigint" => CqlType::Bigint,
            "blob" => CqlType::Blob,
            "boolean" => CqlType::Boolean,
            "counter" => CqlType::Counter,
            "date" => CqlType::Date,
            "decimal" => CqlType::Decimal,
            "double" => CqlType::Double,
            "duration" => CqlType::Duration,
            "float" => CqlType::Float,
            "inet" => CqlType::Inet,
            "int" => CqlType::Int,
            "smallint" => CqlType::Smallint,
            "text" | "varchar" => CqlType::Text,
            "time" => CqlType::Time,
            "timestamp" => CqlType::Timestamp,
            "timeuuid" => CqlType::Timeuuid,
            "tinyint" => CqlType::Tinyint,
            "uuid" => CqlType::Uuid,
            "varint" => CqlType::Varint,
            _ => return None,
        })
    }
}

/// A resolved user-defined type: keyspace, name and fields in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserType {
    pub keyspace: String,
    pub name: String,
    pub fields: Vec<(String, CqlType)>,
}

impl UserType {
    /// The position and type of a field.
    pub fn field(&self, name: &str) -> Option<(usize, &CqlType)> {
        self.fields
            .iter()
            .enumerate()
            .find(|(_, (n, _))| n == name)
            .map(|(i, (_, t))| (i, t))
    }
}

/// A duration literal: months, days and nanoseconds, all of the same sign,
/// as Cassandra stores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Duration {
    pub months: i32,
    pub days: i32,
    pub nanos: i64,
}

/// A constant. Numbers keep their source text because only the target column
/// type decides whether `1` is an int, a varint or a decimal.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Null,
    Bool(bool),
    /// Decimal digits with an optional leading `-`.
    Integer(String),
    /// A float's source text; also `NaN`, `Infinity` and `-Infinity`.
    Float(String),
    String(String),
    Blob(Vec<u8>),
    Uuid(u128),
    Duration(Duration),
}

/// A `?` or `:name` bind marker. `index` is its position among the markers
/// of the statement (named markers get their own index per occurrence, as in
/// Cassandra).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BindMarker {
    pub index: usize,
    pub name: Option<String>,
}

/// A value expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Term {
    Literal(Literal),
    Bind(BindMarker),
    List(Vec<Term>),
    Set(Vec<Term>),
    /// Also what `{}` parses to: the empty map, usable as an empty set.
    Map(Vec<(Term, Term)>),
    Tuple(Vec<Term>),
    /// A user-defined-type literal `{field: term, ...}`.
    Udt(Vec<(String, Term)>),
    Function {
        name: QualifiedName,
        args: Vec<Term>,
    },
    /// `(type) term`.
    TypeHint {
        ty: CqlType,
        term: Box<Term>,
    },
}

/// Comparison operators of relations and conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    Eq,
    Lt,
    Lte,
    Gt,
    Gte,
    Neq,
    Contains,
    ContainsKey,
    Like,
}

/// The right side of an `IN`.
#[derive(Debug, Clone, PartialEq)]
pub enum InValues {
    /// `IN (t1, t2, ...)`; for tuple relations each element is a tuple or
    /// a marker.
    List(Vec<Term>),
    /// `IN ?` / `IN :name`: the whole list is bound.
    Marker(BindMarker),
}

/// What a relation or condition tests.
#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    Compare(Operator, Term),
    In(InValues),
}

/// One conjunct of a WHERE clause.
#[derive(Debug, Clone, PartialEq)]
pub enum Relation {
    /// `c op term`, `c IN ...`.
    Column {
        column: String,
        predicate: Predicate,
    },
    /// `token(a, b) op term`.
    Token {
        columns: Vec<String>,
        predicate: Predicate,
    },
    /// `(c1, c2) op (t1, t2)`, `(c1, c2) IN ((..), (..))`.
    Tuple {
        columns: Vec<String>,
        predicate: Predicate,
    },
    /// `c IS NOT NULL` (materialized views).
    IsNotNull { column: String },
    /// `m[key] = value`: a map entry (served by an `entries(m)` index).
    Element {
        column: String,
        key: Term,
        predicate: Predicate,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Order {
    Asc,
    Desc,
}

/// The selection functions on a cell's timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimestampFunction {
    WriteTime,
    Ttl,
    MaxWriteTime,
}

impl TimestampFunction {
    /// The name Cassandra prints (result column names, messages).
    pub fn name(self) -> &'static str {
        match self {
            TimestampFunction::WriteTime => "writetime",
            TimestampFunction::Ttl => "ttl",
            TimestampFunction::MaxWriteTime => "maxwritetime",
        }
    }
}

/// One item of a SELECT list, before its alias.
#[derive(Debug, Clone, PartialEq)]
pub enum Selector {
    Column(String),
    /// A constant or bind marker.
    Term(Term),
    /// `count(*)` or `count(1)`.
    CountRows,
    WriteTime(String),
    Ttl(String),
    /// Cassandra 5.0's forms beyond `writetime(c)` / `ttl(c)`: a field of a
    /// user type value (`writetime(a.f)`, `ttl(a.f.g)`) and
    /// `maxwritetime(c)`. Never built for a plain `writetime(c)`/`ttl(c)`.
    Timestamps {
        function: TimestampFunction,
        column: String,
        fields: Vec<String>,
    },
    Function {
        name: QualifiedName,
        args: Vec<Selector>,
    },
    Cast {
        selector: Box<Selector>,
        ty: CqlType,
    },
    /// `selector.field`: a field of a user-defined type value.
    Field {
        selector: Box<Selector>,
        field: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct SelectItem {
    pub selector: Selector,
    pub alias: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    Wildcard,
    Items(Vec<SelectItem>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Select {
    pub json: bool,
    pub distinct: bool,
    pub selection: Selection,
    pub table: QualifiedName,
    pub where_clause: Vec<Relation>,
    pub group_by: Vec<String>,
    pub order_by: Vec<(String, Order)>,
    /// `ORDER BY v ANN OF [..]`: the vector column and the query vector.
    pub ann: Option<(String, Term)>,
    pub per_partition_limit: Option<Term>,
    pub limit: Option<Term>,
    pub allow_filtering: bool,
}

/// `USING TTL x AND TIMESTAMP y`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Using {
    pub ttl: Option<Term>,
    pub timestamp: Option<Term>,
}

impl Using {
    pub fn is_empty(&self) -> bool {
        self.ttl.is_none() && self.timestamp.is_none()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JsonDefault {
    Null,
    Unset,
}

#[derive(Debug, Clone, PartialEq)]
pub enum InsertValues {
    Columns {
        columns: Vec<String>,
        values: Vec<Term>,
    },
    Json {
        json: Term,
        default: JsonDefault,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Insert {
    pub table: QualifiedName,
    pub values: InsertValues,
    pub if_not_exists: bool,
    pub using: Using,
}

/// One `SET` item of an UPDATE.
#[derive(Debug, Clone, PartialEq)]
pub enum Assignment {
    /// `c = term`.
    Set { column: String, value: Term },
    /// `c[key] = term`.
    SetElement {
        column: String,
        key: Term,
        value: Term,
    },
    /// `c.field = term`.
    SetField {
        column: String,
        field: String,
        value: Term,
    },
    /// `c = c + term` or `c += term`.
    Add { column: String, value: Term },
    /// `c = term + c` (list prepend).
    Prepend { column: String, value: Term },
    /// `c = c - term` or `c -= term`.
    Subtract { column: String, value: Term },
}

/// One `IF` condition of a lightweight transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Column {
        column: String,
        predicate: Predicate,
    },
    Element {
        column: String,
        key: Term,
        predicate: Predicate,
    },
    Field {
        column: String,
        field: String,
        predicate: Predicate,
    },
}

/// The `IF` clause of an UPDATE or DELETE.
#[derive(Debug, Clone, PartialEq)]
pub enum Conditions {
    Exists,
    List(Vec<Condition>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub table: QualifiedName,
    pub using: Using,
    pub assignments: Vec<Assignment>,
    pub where_clause: Vec<Relation>,
    pub conditions: Option<Conditions>,
}

/// What a DELETE removes; an empty list deletes whole rows.
#[derive(Debug, Clone, PartialEq)]
pub enum Deletion {
    Column(String),
    Element { column: String, key: Term },
    Field { column: String, field: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Delete {
    pub columns: Vec<Deletion>,
    pub table: QualifiedName,
    pub using: Using,
    pub where_clause: Vec<Relation>,
    pub conditions: Option<Conditions>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BatchKind {
    Logged,
    Unlogged,
    Counter,
}

/// A statement allowed inside a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Modification {
    Insert(Insert),
    Update(Update),
    Delete(Delete),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub kind: BatchKind,
    pub using: Using,
    pub statements: Vec<Modification>,
}

/// The value of a `WITH name = value` option.
#[derive(Debug, Clone, PartialEq)]
pub enum PropertyValue {
    Constant(Literal),
    /// A bare word such as `NONE`; kept lower-cased like any identifier.
    Identifier(String),
    Map(Vec<(Literal, Literal)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Property {
    pub name: String,
    pub value: PropertyValue,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CreateKeyspace {
    pub name: String,
    pub if_not_exists: bool,
    pub properties: Vec<Property>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AlterKeyspace {
    pub name: String,
    pub if_exists: bool,
    pub properties: Vec<Property>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ColumnDef {
    pub name: String,
    pub ty: CqlType,
    pub is_static: bool,
}

/// Everything after `WITH` in CREATE TABLE.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TableOptions {
    pub properties: Vec<Property>,
    pub clustering_order: Vec<(String, Order)>,
    /// Parsed so that it can be rejected with a clear message downstream.
    pub compact_storage: bool,
}

impl TableOptions {
    pub fn is_empty(&self) -> bool {
        self.properties.is_empty() && self.clustering_order.is_empty() && !self.compact_storage
    }
}

/// CREATE TABLE. The key comes from either an inline `PRIMARY KEY` or the
/// `PRIMARY KEY (...)` clause; an empty `partition_key` means none was
/// given, which is for the caller to reject.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateTable {
    pub name: QualifiedName,
    pub if_not_exists: bool,
    pub columns: Vec<ColumnDef>,
    pub partition_key: Vec<String>,
    pub clustering_columns: Vec<String>,
    pub options: TableOptions,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AlterTableAction {
    Add {
        if_not_exists: bool,
        columns: Vec<ColumnDef>,
    },
    Drop {
        if_exists: bool,
        columns: Vec<String>,
        timestamp: Option<Term>,
    },
    Rename {
        if_exists: bool,
        renames: Vec<(String, String)>,
    },
    /// `ALTER c TYPE t` (rejected by Cassandra 4, parsed for a clear error).
    AlterType {
        column: String,
        ty: CqlType,
    },
    With(Vec<Property>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct AlterTable {
    pub name: QualifiedName,
    pub if_exists: bool,
    pub action: AlterTableAction,
}

/// What a DESCRIBE asks for, as cqlsh sends it to the server.
#[derive(Debug, Clone, PartialEq)]
pub enum DescribeTarget {
    Cluster,
    Schema {
        full: bool,
    },
    Keyspaces,
    /// `DESCRIBE [ONLY] KEYSPACE [ks]`; no name means the current one.
    Keyspace {
        only: bool,
        name: Option<String>,
    },
    Tables,
    Table(QualifiedName),
    Index(QualifiedName),
    MaterializedView(QualifiedName),
    Types,
    Type(QualifiedName),
    Functions,
    Function(QualifiedName),
    Aggregates,
    Aggregate(QualifiedName),
    /// `DESCRIBE name` / `DESCRIBE ks.name`: a keyspace or any object.
    Generic(QualifiedName),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Describe {
    pub target: DescribeTarget,
    pub with_internals: bool,
}

/// What an index covers: a column, or the keys, values or entries of a
/// collection, or a frozen collection whole.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IndexTarget {
    /// `(c)`: the column's value (for a non-frozen collection Cassandra
    /// reads this as `values(c)`).
    Column(String),
    Keys(String),
    Values(String),
    Entries(String),
    Full(String),
}

impl IndexTarget {
    pub fn column(&self) -> &str {
        match self {
            IndexTarget::Column(c)
            | IndexTarget::Keys(c)
            | IndexTarget::Values(c)
            | IndexTarget::Entries(c)
            | IndexTarget::Full(c) => c,
        }
    }
}

/// `CREATE [CUSTOM] INDEX [IF NOT EXISTS] [name] ON t (target) [USING 'class'
/// [WITH OPTIONS = {...}]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateIndex {
    pub name: Option<String>,
    pub table: QualifiedName,
    pub if_not_exists: bool,
    pub targets: Vec<IndexTarget>,
    pub custom: bool,
    /// The `USING` class.
    pub class: Option<String>,
    /// `WITH OPTIONS = {...}` (and any other property, for a clear error).
    pub properties: Vec<Property>,
}

/// `CREATE TYPE [IF NOT EXISTS] [ks.]name (field type, ...)`.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateType {
    pub name: QualifiedName,
    pub if_not_exists: bool,
    pub fields: Vec<(String, CqlType)>,
}

/// What an ALTER TYPE changes.
#[derive(Debug, Clone, PartialEq)]
pub enum AlterTypeAction {
    /// `ADD [IF NOT EXISTS] field type`.
    Add {
        if_not_exists: bool,
        field: String,
        ty: CqlType,
    },
    /// `RENAME [IF EXISTS] a TO b AND c TO d`.
    Rename {
        if_exists: bool,
        renames: Vec<(String, String)>,
    },
    /// `ALTER field TYPE t` (refused as in Cassandra 4+, parsed for a
    /// clear error).
    AlterField { field: String, ty: CqlType },
}

/// `ALTER TYPE [IF EXISTS] [ks.]name ...`.
#[derive(Debug, Clone, PartialEq)]
pub struct AlterType {
    pub name: QualifiedName,
    pub if_exists: bool,
    pub action: AlterTypeAction,
}

/// One CQL statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    Select(Select),
    Insert(Insert),
    Update(Update),
    Delete(Delete),
    Batch(Batch),
    Use(String),
    CreateKeyspace(CreateKeyspace),
    AlterKeyspace(AlterKeyspace),
    DropKeyspace {
        name: String,
        if_exists: bool,
    },
    CreateTable(CreateTable),
    AlterTable(AlterTable),
    DropTable {
        name: QualifiedName,
        if_exists: bool,
    },
    Truncate(QualifiedName),
    CreateIndex(CreateIndex),
    /// `DROP INDEX [IF EXISTS] [ks.]name`.
    DropIndex {
        name: QualifiedName,
        if_exists: bool,
    },
    CreateType(CreateType),
    AlterType(AlterType),
    /// `DROP TYPE [IF EXISTS] [ks.]name`.
    DropType {
        name: QualifiedName,
        if_exists: bool,
    },
    Describe(Describe),
    /// A statement Cassandra accepts but Gyre does not implement (CREATE
    /// FUNCTION, materialized views, roles, ...). `kind` names it, e.g.
    /// `CREATE FUNCTION`; the rest of the statement is skipped unchecked.
    Unsupported {
        kind: String,
    },
}

/// A parsed statement with its bind markers in source order.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub statement: Statement,
    pub bind_markers: Vec<BindMarker>,
}
