//! Read-only virtual tables of the `system` and `system_schema` keyspaces,
//! built in memory from the schema and the node's gossip view on each
//! request, and answered by a general SELECT (projection, `=` / `IN` on any
//! column, LIMIT): drivers send these queries in many spellings.

use std::collections::BTreeMap;
use std::net::IpAddr;

use bytes::Bytes;
use gyre_cql::{
    InValues, Literal, Operator, Predicate, Relation, Select, Selection, Selector, Term,
};
use gyre_protocol::{ColumnType, CqlValue};
use gyre_query::QueryError;
use gyre_schema::{ClusteringOrder, ColumnKind, Schema};
use uuid::Uuid;

/// Keyspaces whose tables are virtual: any table not served here is an
/// Invalid request (0x2200), which drivers expect for unknown system tables.
pub fn is_virtual_keyspace(ks: &str) -> bool {
    matches!(ks, "system" | "system_schema" | "system_virtual_schema")
}

/// One other node, as gossip describes it.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub peer: IpAddr,
    pub peer_port: u16,
    pub data_center: String,
    pub rack: String,
    pub host_id: Option<Uuid>,
    pub release_version: Option<String>,
    pub native: Option<std::net::SocketAddr>,
    pub schema_version: Option<Uuid>,
    pub tokens: Vec<i64>,
}

/// Node-specific state the virtual tables show.
#[derive(Clone, Debug)]
pub struct LocalInfo {
    pub cluster_name: String,
    pub data_center: String,
    pub rack: String,
    pub host_id: Uuid,
    pub listen: std::net::SocketAddr,
    pub native: std::net::SocketAddr,
    pub tokens: Vec<i64>,
    pub generation: i32,
    pub release_version: String,
    pub peers: Vec<PeerInfo>,
}

/// A materialised table: column names and types, rows of values.
struct Table {
    keyspace: &'static str,
    name: &'static str,
    columns: Vec<(&'static str, ColumnType)>,
    rows: Vec<Vec<Option<CqlValue>>>,
}

use ColumnType as T;

fn text() -> ColumnType {
    T::Varchar
}
fn set_text() -> ColumnType {
    T::Set(Box::new(T::Varchar))
}
fn list_text() -> ColumnType {
    T::List(Box::new(T::Varchar))
}
fn map_text() -> ColumnType {
    T::Map(Box::new(T::Varchar), Box::new(T::Varchar))
}
fn s(v: impl Into<String>) -> Option<CqlValue> {
    Some(CqlValue::Text(v.into()))
}
fn text_set<I: IntoIterator<Item = String>>(items: I) -> Option<CqlValue> {
    Some(CqlValue::Set(
        items.into_iter().map(CqlValue::Text).collect(),
    ))
}
fn text_map(m: &BTreeMap<String, String>) -> Option<CqlValue> {
    Some(CqlValue::Map(
        m.iter()
            .map(|(k, v)| (CqlValue::Text(k.clone()), CqlValue::Text(v.clone())))
            .collect(),
    ))
}

/// A virtual table's keyspace, name and columns.
type Layout = (&'static str, &'static str, Vec<(&'static str, ColumnType)>);

/// Result or bind columns: names and types.
pub type Columns = Vec<(String, ColumnType)>;

/// Column layouts of every virtual table, as Cassandra 5 names them.
fn layouts() -> Vec<Layout> {
    let table_options = || {
        vec![
            ("additional_write_policy", text()),
            ("bloom_filter_fp_chance", T::Double),
            ("caching", map_text()),
            ("cdc", T::Boolean),
            ("comment", text()),
            ("compaction", map_text()),
            ("compression", map_text()),
            ("crc_check_chance", T::Double),
            ("default_time_to_live", T::Int),
            (
                "extensions",
                T::Map(Box::new(T::Varchar), Box::new(T::Blob)),
            ),
            ("gc_grace_seconds", T::Int),
            ("id", T::Uuid),
            ("max_index_interval", T::Int),
            ("memtable_flush_period_in_ms", T::Int),
            ("min_index_interval", T::Int),
            ("read_repair", text()),
            ("speculative_retry", text()),
        ]
    };
    let mut tables = vec![("keyspace_name", text()), ("table_name", text())];
    tables.extend(table_options());
    tables.push(("flags", set_text()));
    let mut views = vec![
        ("keyspace_name", text()),
        ("view_name", text()),
        ("base_table_id", T::Uuid),
        ("base_table_name", text()),
        ("include_all_columns", T::Boolean),
        ("where_clause", text()),
    ];
    views.extend(table_options());
    vec![
        (
            "system",
            "local",
            vec![
                ("key", text()),
                ("bootstrapped", text()),
                ("broadcast_address", T::Inet),
                ("broadcast_port", T::Int),
                ("cluster_name", text()),
                ("cql_version", text()),
                ("data_center", text()),
                ("gossip_generation", T::Int),
                ("host_id", T::Uuid),
                ("listen_address", T::Inet),
                ("listen_port", T::Int),
                ("native_protocol_version", text()),
                ("partitioner", text()),
                ("rack", text()),
                ("release_version", text()),
                ("rpc_address", T::Inet),
                ("rpc_port", T::Int),
                ("schema_version", T::Uuid),
                ("tokens", set_text()),
                ("truncated_at", T::Map(Box::new(T::Uuid), Box::new(T::Blob))),
            ],
        ),
        (
            "system",
            "peers",
            vec![
                ("peer", T::Inet),
                ("data_center", text()),
                ("host_id", T::Uuid),
                ("preferred_ip", T::Inet),
                ("rack", text()),
                ("release_version", text()),
                ("rpc_address", T::Inet),
                ("schema_version", T::Uuid),
                ("tokens", set_text()),
            ],
        ),
        (
            "system",
            "peers_v2",
            vec![
                ("peer", T::Inet),
                ("peer_port", T::Int),
                ("data_center", text()),
                ("host_id", T::Uuid),
                ("native_address", T::Inet),
                ("native_port", T::Int),
                ("preferred_ip", T::Inet),
                ("preferred_port", T::Int),
                ("rack", text()),
                ("release_version", text()),
                ("schema_version", T::Uuid),
                ("tokens", set_text()),
            ],
        ),
        (
            "system_schema",
            "keyspaces",
            vec![
                ("keyspace_name", text()),
                ("durable_writes", T::Boolean),
                ("replication", map_text()),
            ],
        ),
        ("system_schema", "tables", tables),
        (
            "system_schema",
            "columns",
            vec![
                ("keyspace_name", text()),
                ("table_name", text()),
                ("column_name", text()),
                ("clustering_order", text()),
                ("column_name_bytes", T::Blob),
                ("kind", text()),
                ("position", T::Int),
                ("type", text()),
            ],
        ),
        (
            "system_schema",
            "types",
            vec![
                ("keyspace_name", text()),
                ("type_name", text()),
                ("field_names", list_text()),
                ("field_types", list_text()),
            ],
        ),
        (
            "system_schema",
            "functions",
            vec![
                ("keyspace_name", text()),
                ("function_name", text()),
                ("argument_types", list_text()),
                ("argument_names", list_text()),
                ("body", text()),
                ("called_on_null_input", T::Boolean),
                ("language", text()),
                ("return_type", text()),
            ],
        ),
        (
            "system_schema",
            "aggregates",
            vec![
                ("keyspace_name", text()),
                ("aggregate_name", text()),
                ("argument_types", list_text()),
                ("final_func", text()),
                ("initcond", text()),
                ("return_type", text()),
                ("state_func", text()),
                ("state_type", text()),
            ],
        ),
        (
            "system_schema",
            "triggers",
            vec![
                ("keyspace_name", text()),
                ("table_name", text()),
                ("trigger_name", text()),
                ("options", map_text()),
            ],
        ),
        (
            "system_schema",
            "indexes",
            vec![
                ("keyspace_name", text()),
                ("table_name", text()),
                ("index_name", text()),
                ("kind", text()),
                ("options", map_text()),
            ],
        ),
        ("system_schema", "views", views),
    ]
}

/// The CQL type text of a column type (for `system_schema.columns.type`).
fn type_text(t: &ColumnType) -> String {
    match t {
        T::Custom(c) => format!("'{c}'"),
        T::Ascii => "ascii".into(),
        T::Bigint => "bigint".into(),
        T::Blob => "blob".into(),
        T::Boolean => "boolean".into(),
        T::Counter => "counter".into(),
        T::Decimal => "decimal".into(),
        T::Double => "double".into(),
        T::Float => "float".into(),
        T::Int => "int".into(),
        T::Timestamp => "timestamp".into(),
        T::Uuid => "uuid".into(),
        T::Varchar => "text".into(),
        T::Varint => "varint".into(),
        T::Timeuuid => "timeuuid".into(),
        T::Inet => "inet".into(),
        T::Date => "date".into(),
        T::Time => "time".into(),
        T::Smallint => "smallint".into(),
        T::Tinyint => "tinyint".into(),
        T::Duration => "duration".into(),
        T::List(e) => format!("frozen<list<{}>>", type_text(e)),
        T::Set(e) => format!("frozen<set<{}>>", type_text(e)),
        T::Map(k, v) => format!("frozen<map<{}, {}>>", type_text(k), type_text(v)),
        T::Tuple(items) => format!(
            "frozen<tuple<{}>>",
            items.iter().map(type_text).collect::<Vec<_>>().join(", ")
        ),
        T::Udt { name, .. } => format!("frozen<{name}>"),
        T::Vector(e, n) => format!("vector<{}, {n}>", type_text(e)),
    }
}

fn tokens_value(tokens: &[i64]) -> Option<CqlValue> {
    text_set(tokens.iter().map(|t| t.to_string()))
}

fn build(keyspace: &str, name: &str, local: &LocalInfo, schema: &Schema) -> Option<Table> {
    let (ks, tn, columns) = layouts()
        .into_iter()
        .find(|(k, n, _)| *k == keyspace && *n == name)?;
    let width = columns.len();
    let named = |pairs: Vec<(&str, Option<CqlValue>)>| -> Vec<Option<CqlValue>> {
        let mut row = vec![None; width];
        for (col, v) in pairs {
            if let Some(i) = columns.iter().position(|(c, _)| *c == col) {
                row[i] = v;
            }
        }
        row
    };
    let schema_version = schema.version();
    let mut rows = Vec::new();
    match (ks, tn) {
        ("system", "local") => rows.push(named(vec![
            ("key", s("local")),
            ("bootstrapped", s("COMPLETED")),
            ("broadcast_address", Some(CqlValue::Inet(local.listen.ip()))),
            (
                "broadcast_port",
                Some(CqlValue::Int(local.listen.port().into())),
            ),
            ("cluster_name", s(&local.cluster_name)),
            ("cql_version", s("3.4.7")),
            ("data_center", s(&local.data_center)),
            ("gossip_generation", Some(CqlValue::Int(local.generation))),
            ("host_id", Some(CqlValue::Uuid(local.host_id))),
            ("listen_address", Some(CqlValue::Inet(local.listen.ip()))),
            (
                "listen_port",
                Some(CqlValue::Int(local.listen.port().into())),
            ),
            // The newest version served, as Cassandra reports it.
            ("native_protocol_version", s("5")),
            (
                "partitioner",
                s("org.apache.cassandra.dht.Murmur3Partitioner"),
            ),
            ("rack", s(&local.rack)),
            ("release_version", s(&local.release_version)),
            ("rpc_address", Some(CqlValue::Inet(local.native.ip()))),
            ("rpc_port", Some(CqlValue::Int(local.native.port().into()))),
            ("schema_version", Some(CqlValue::Uuid(schema_version))),
            ("tokens", tokens_value(&local.tokens)),
        ])),
        ("system", "peers") | ("system", "peers_v2") => {
            for p in &local.peers {
                let native = p.native.map(|a| a.ip()).unwrap_or(p.peer);
                let port = p.native.map_or(local.native.port(), |a| a.port());
                rows.push(named(vec![
                    ("peer", Some(CqlValue::Inet(p.peer))),
                    ("peer_port", Some(CqlValue::Int(p.peer_port.into()))),
                    ("data_center", s(&p.data_center)),
                    ("host_id", p.host_id.map(CqlValue::Uuid)),
                    ("rack", s(&p.rack)),
                    (
                        "release_version",
                        p.release_version.clone().map(CqlValue::Text),
                    ),
                    ("rpc_address", Some(CqlValue::Inet(native))),
                    ("native_address", Some(CqlValue::Inet(native))),
                    ("native_port", Some(CqlValue::Int(port.into()))),
                    ("schema_version", p.schema_version.map(CqlValue::Uuid)),
                    ("tokens", tokens_value(&p.tokens)),
                ]));
            }
        }
        ("system_schema", "keyspaces") => {
            for k in schema.keyspaces().values() {
                rows.push(named(vec![
                    ("keyspace_name", s(&k.name)),
                    ("durable_writes", Some(CqlValue::Boolean(k.durable_writes))),
                    ("replication", text_map(&k.replication.to_map())),
                ]));
            }
        }
        ("system_schema", "tables") => {
            for t in schema.tables().values() {
                let o = &t.options;
                rows.push(named(vec![
                    ("keyspace_name", s(&t.keyspace)),
                    ("table_name", s(&t.name)),
                    (
                        "bloom_filter_fp_chance",
                        Some(CqlValue::Double(o.bloom_filter_fp_chance)),
                    ),
                    ("caching", text_map(&o.caching)),
                    ("comment", s(&o.comment)),
                    ("compaction", text_map(&o.compaction)),
                    ("compression", text_map(&o.compression)),
                    (
                        "default_time_to_live",
                        Some(CqlValue::Int(o.default_time_to_live as i32)),
                    ),
                    (
                        "gc_grace_seconds",
                        Some(CqlValue::Int(o.gc_grace_seconds as i32)),
                    ),
                    ("id", Some(CqlValue::Uuid(t.id.0))),
                    ("speculative_retry", s(&o.speculative_retry)),
                    ("flags", text_set(["compound".to_string()])),
                ]));
            }
            // The virtual tables describe themselves too, so that cqlsh
            // can SELECT from them.
            for (k, n, _) in layouts() {
                rows.push(named(vec![
                    ("keyspace_name", s(k)),
                    ("table_name", s(n)),
                    ("comment", s("")),
                    ("id", Some(CqlValue::Uuid(virtual_id(k, n)))),
                    ("flags", text_set(["compound".to_string()])),
                ]));
            }
        }
        ("system_schema", "types") => {
            let list =
                |v: Vec<String>| Some(CqlValue::List(v.into_iter().map(CqlValue::Text).collect()));
            for (ks, types) in schema.types() {
                for t in types.values() {
                    rows.push(named(vec![
                        ("keyspace_name", s(ks)),
                        ("type_name", s(&t.name)),
                        (
                            "field_names",
                            list(t.fields.iter().map(|(f, _)| f.clone()).collect()),
                        ),
                        (
                            "field_types",
                            list(t.fields.iter().map(|(_, ty)| ty.to_string()).collect()),
                        ),
                    ]));
                }
            }
        }
        ("system_schema", "indexes") => {
            for t in schema.tables().values() {
                for i in &t.indexes {
                    rows.push(named(vec![
                        ("keyspace_name", s(&t.keyspace)),
                        ("table_name", s(&t.name)),
                        ("index_name", s(&i.name)),
                        ("kind", s(i.kind())),
                        ("options", text_map(&i.system_options())),
                    ]));
                }
            }
        }
        ("system_schema", "columns") => {
            for t in schema.tables().values() {
                for c in &t.columns {
                    let (kind, position, order) = match c.kind {
                        ColumnKind::PartitionKey(p) => ("partition_key", p as i32, "none"),
                        ColumnKind::Clustering(p, o) => (
                            "clustering",
                            p as i32,
                            if o == ClusteringOrder::Desc {
                                "desc"
                            } else {
                                "asc"
                            },
                        ),
                        ColumnKind::Regular => ("regular", -1, "none"),
                        ColumnKind::Static => ("static", -1, "none"),
                    };
                    rows.push(named(vec![
                        ("keyspace_name", s(&t.keyspace)),
                        ("table_name", s(&t.name)),
                        ("column_name", s(&c.name)),
                        ("clustering_order", s(order)),
                        (
                            "column_name_bytes",
                            Some(CqlValue::Blob(Bytes::from(c.name.clone()))),
                        ),
                        ("kind", s(kind)),
                        ("position", Some(CqlValue::Int(position))),
                        ("type", s(c.ty.to_string())),
                    ]));
                }
            }
            for (k, n, cols) in layouts() {
                for (i, (c, ty)) in cols.iter().enumerate() {
                    // The first column is the partition key, as in Cassandra.
                    let (kind, position) = if i == 0 {
                        ("partition_key", 0)
                    } else {
                        ("regular", -1)
                    };
                    rows.push(named(vec![
                        ("keyspace_name", s(k)),
                        ("table_name", s(n)),
                        ("column_name", s(*c)),
                        ("clustering_order", s("none")),
                        ("column_name_bytes", Some(CqlValue::Blob(Bytes::from(*c)))),
                        ("kind", s(kind)),
                        ("position", Some(CqlValue::Int(position))),
                        ("type", s(type_text(ty))),
                    ]));
                }
            }
        }
        _ => {}
    }
    Some(Table {
        keyspace: ks,
        name: tn,
        columns,
        rows,
    })
}

/// A stable id for a virtual table (same on every node).
fn virtual_id(ks: &str, name: &str) -> Uuid {
    uuid::Builder::from_md5_bytes(gyre_schema::md5(format!("{ks}.{name}").as_bytes())).into_uuid()
}

/// The answer to a SELECT on a virtual table.
pub struct Answer {
    pub keyspace: String,
    pub table: String,
    pub columns: Columns,
    pub rows: Vec<Vec<Option<Bytes>>>,
}

/// A restriction on one column of a system table.
enum Filter {
    /// `=` or `IN`: one of these values.
    In(Vec<Option<CqlValue>>),
    /// `<`, `<=`, `>`, `>=`, `!=` against a value (null matches nothing).
    Compare(Operator, Option<CqlValue>),
}

impl Filter {
    fn accepts(&self, v: Option<&CqlValue>) -> bool {
        match self {
            Filter::In(vals) => vals.iter().any(|x| x.is_some() && x.as_ref() == v),
            Filter::Compare(op, Some(x)) => {
                let Some(ord) = v.and_then(|v| compare(v, x)) else {
                    return false;
                };
                match op {
                    Operator::Lt => ord.is_lt(),
                    Operator::Lte => ord.is_le(),
                    Operator::Gt => ord.is_gt(),
                    Operator::Gte => ord.is_ge(),
                    Operator::Neq => ord.is_ne(),
                    _ => false,
                }
            }
            Filter::Compare(_, None) => false,
        }
    }
}

/// The order of two values of the types system tables hold.
fn compare(a: &CqlValue, b: &CqlValue) -> Option<std::cmp::Ordering> {
    use CqlValue as V;
    Some(match (a, b) {
        (V::Int(a), V::Int(b)) => a.cmp(b),
        (V::Bigint(a), V::Bigint(b)) => a.cmp(b),
        (V::Double(a), V::Double(b)) => a.partial_cmp(b)?,
        (V::Boolean(a), V::Boolean(b)) => a.cmp(b),
        (V::Text(a) | V::Ascii(a), V::Text(b) | V::Ascii(b)) => a.cmp(b),
        (V::Uuid(a) | V::Timeuuid(a), V::Uuid(b) | V::Timeuuid(b)) => a.cmp(b),
        (V::Inet(a), V::Inet(b)) => a.cmp(b),
        (V::Timestamp(a), V::Timestamp(b)) => a.cmp(b),
        _ => return None,
    })
}

/// Result rows in wire form.
type WireRows = Vec<Vec<Option<Bytes>>>;

/// Marks a paging state of a system table: the rows already sent follow.
const PAGING_MAGIC: &[u8; 4] = b"gyvt";

/// One page of a system table's rows: `page_size` rows from where
/// `paging_state` (from the previous page) stopped, and the state of the
/// next page when rows remain (the table is rebuilt per page, as
/// Cassandra's virtual tables are).
pub fn page(
    mut rows: WireRows,
    page_size: Option<usize>,
    paging_state: Option<&Bytes>,
) -> Result<(WireRows, Option<Bytes>), QueryError> {
    let start = match paging_state {
        None => 0,
        Some(b) => match b.strip_prefix(PAGING_MAGIC.as_slice()) {
            Some(rest) if rest.len() == 8 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(rest);
                usize::try_from(u64::from_be_bytes(n))
                    .map_err(|_| invalid("Invalid paging state"))?
            }
            _ => return Err(invalid("Invalid paging state")),
        },
    };
    let start = start.min(rows.len());
    rows.drain(..start);
    let Some(size) = page_size else {
        return Ok((rows, None));
    };
    if rows.len() <= size {
        return Ok((rows, None));
    }
    rows.truncate(size);
    let mut next = PAGING_MAGIC.to_vec();
    next.extend_from_slice(&((start + size) as u64).to_be_bytes());
    Ok((rows, Some(Bytes::from(next))))
}

fn invalid(msg: impl Into<String>) -> QueryError {
    QueryError::Invalid(msg.into())
}

/// Result columns and the bind-marker types of a SELECT on a virtual table
/// (for PREPARE), in marker order.
pub fn describe(
    keyspace: &str,
    select: &Select,
    marker_count: usize,
    local: &LocalInfo,
    schema: &Schema,
) -> Result<(Columns, Columns), QueryError> {
    let table = lookup(keyspace, &select.table.name, local, schema)?;
    let (_, columns) = projection(&table, &select.selection)?;
    let mut binds = vec![None; marker_count];
    for rel in &select.where_clause {
        if let Relation::Column { column, predicate } = rel {
            let ty = table
                .columns
                .iter()
                .find(|(c, _)| c == column)
                .map(|(_, t)| t.clone())
                .ok_or_else(|| invalid(format!("Undefined column name {column}")))?;
            match predicate {
                Predicate::Compare(_, Term::Bind(m)) => {
                    if let Some(slot) = binds.get_mut(m.index) {
                        *slot = Some((column.clone(), ty));
                    }
                }
                Predicate::In(InValues::List(terms)) => {
                    for t in terms {
                        if let Term::Bind(m) = t {
                            if let Some(slot) = binds.get_mut(m.index) {
                                *slot = Some((column.clone(), ty.clone()));
                            }
                        }
                    }
                }
                Predicate::In(InValues::Marker(m)) => {
                    if let Some(slot) = binds.get_mut(m.index) {
                        *slot = Some((column.clone(), T::List(Box::new(ty))));
                    }
                }
                _ => {}
            }
        }
    }
    if let Some(Term::Bind(m)) = &select.limit {
        if let Some(slot) = binds.get_mut(m.index) {
            *slot = Some(("[limit]".into(), T::Int));
        }
    }
    let binds = binds
        .into_iter()
        .enumerate()
        .map(|(i, b)| b.ok_or_else(|| invalid(format!("Cannot type bind marker {i}"))))
        .collect::<Result<_, _>>()?;
    Ok((columns, binds))
}

fn lookup(
    keyspace: &str,
    name: &str,
    local: &LocalInfo,
    schema: &Schema,
) -> Result<Table, QueryError> {
    build(keyspace, name, local, schema)
        .ok_or_else(|| invalid(format!("table {keyspace}.{name} does not exist")))
}

/// Column indexes and (name, type) of the selection.
fn projection(table: &Table, selection: &Selection) -> Result<(Vec<usize>, Columns), QueryError> {
    match selection {
        Selection::Wildcard => Ok((
            (0..table.columns.len()).collect(),
            table
                .columns
                .iter()
                .map(|(c, t)| ((*c).to_owned(), t.clone()))
                .collect(),
        )),
        Selection::Items(items) => {
            let mut idx = Vec::new();
            let mut cols = Vec::new();
            for item in items {
                let Selector::Column(c) = &item.selector else {
                    return Err(invalid(
                        "only plain columns can be selected from system tables",
                    ));
                };
                let i = table
                    .columns
                    .iter()
                    .position(|(n, _)| n == c)
                    .ok_or_else(|| invalid(format!("Undefined column name {c}")))?;
                idx.push(i);
                cols.push((
                    item.alias.clone().unwrap_or_else(|| c.clone()),
                    table.columns[i].1.clone(),
                ));
            }
            Ok((idx, cols))
        }
    }
}

/// A term's value for comparison with a column of type `ty`.
fn term_value(
    term: &Term,
    ty: &ColumnType,
    binds: &[Option<Bytes>],
) -> Result<Option<CqlValue>, QueryError> {
    match term {
        Term::Bind(m) => match binds.get(m.index) {
            Some(Some(b)) => CqlValue::decode(ty, b)
                .map(Some)
                .map_err(|e| invalid(format!("bad bound value: {e}"))),
            _ => Ok(None),
        },
        Term::Literal(Literal::String(v)) => Ok(Some(match ty {
            T::Inet => CqlValue::Inet(
                v.parse()
                    .map_err(|_| invalid(format!("invalid inet literal '{v}'")))?,
            ),
            T::Ascii => CqlValue::Ascii(v.clone()),
            _ => CqlValue::Text(v.clone()),
        })),
        Term::Literal(Literal::Uuid(u)) => Ok(Some(CqlValue::Uuid(Uuid::from_u128(*u)))),
        Term::Literal(Literal::Integer(i)) => Ok(Some(CqlValue::Int(
            i.parse().map_err(|_| invalid(format!("invalid int {i}")))?,
        ))),
        Term::Literal(Literal::Bool(b)) => Ok(Some(CqlValue::Boolean(*b))),
        Term::Literal(Literal::Null) => Ok(None),
        _ => Err(invalid("unsupported term in a system table condition")),
    }
}

/// Runs a SELECT over a virtual table.
pub fn select(
    keyspace: &str,
    select: &Select,
    binds: &[Option<Bytes>],
    local: &LocalInfo,
    schema: &Schema,
) -> Result<Answer, QueryError> {
    let table = lookup(keyspace, &select.table.name, local, schema)?;
    let (idx, columns) = projection(&table, &select.selection)?;
    // Per restricted column: the accepted values, or a comparison (the
    // ALLOW FILTERING restrictions drivers send, e.g. `position >= ?`).
    let mut filters: Vec<(usize, Filter)> = Vec::new();
    for rel in &select.where_clause {
        let Relation::Column { column, predicate } = rel else {
            return Err(invalid("unsupported condition on a system table"));
        };
        let i = table
            .columns
            .iter()
            .position(|(n, _)| n == column)
            .ok_or_else(|| invalid(format!("Undefined column name {column}")))?;
        let ty = &table.columns[i].1;
        let filter = match predicate {
            Predicate::Compare(Operator::Eq, t) => Filter::In(vec![term_value(t, ty, binds)?]),
            Predicate::Compare(
                op @ (Operator::Lt | Operator::Lte | Operator::Gt | Operator::Gte | Operator::Neq),
                t,
            ) => Filter::Compare(*op, term_value(t, ty, binds)?),
            Predicate::In(InValues::List(ts)) => Filter::In(
                ts.iter()
                    .map(|t| term_value(t, ty, binds))
                    .collect::<Result<_, _>>()?,
            ),
            Predicate::In(InValues::Marker(m)) => {
                let list_ty = T::List(Box::new(ty.clone()));
                Filter::In(match binds.get(m.index) {
                    Some(Some(b)) => match CqlValue::decode(&list_ty, b) {
                        Ok(CqlValue::List(items)) => items.into_iter().map(Some).collect(),
                        _ => return Err(invalid(format!("Invalid IN list for {column}"))),
                    },
                    _ => Vec::new(),
                })
            }
            _ => {
                return Err(invalid(
                    "only =, IN, <, <=, >, >= and != are supported on system tables",
                ))
            }
        };
        filters.push((i, filter));
    }
    let limit = match &select.limit {
        None => usize::MAX,
        Some(t) => match term_value(t, &T::Int, binds)? {
            Some(CqlValue::Int(n)) if n > 0 => n as usize,
            _ => return Err(invalid("LIMIT must be strictly positive")),
        },
    };
    let rows = table
        .rows
        .iter()
        .filter(|row| filters.iter().all(|(i, f)| f.accepts(row[*i].as_ref())))
        .take(limit)
        .map(|row| {
            idx.iter()
                .map(|i| row[*i].as_ref().map(CqlValue::encode))
                .collect()
        })
        .collect();
    Ok(Answer {
        keyspace: table.keyspace.to_owned(),
        table: table.name.to_owned(),
        columns,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> LocalInfo {
        LocalInfo {
            cluster_name: "c".into(),
            data_center: "dc1".into(),
            rack: "rack1".into(),
            host_id: Uuid::from_u128(7),
            listen: "127.0.0.1:7000".parse().expect("addr"),
            native: "127.0.0.1:9042".parse().expect("addr"),
            tokens: vec![-5, 9],
            generation: 3,
            release_version: "5.0.0".into(),
            peers: vec![PeerInfo {
                peer: "127.0.0.2".parse().expect("ip"),
                peer_port: 7000,
                data_center: "dc1".into(),
                rack: "rack1".into(),
                host_id: Some(Uuid::from_u128(8)),
                release_version: Some("5.0.0".into()),
                native: Some("127.0.0.2:9042".parse().expect("addr")),
                schema_version: None,
                tokens: vec![1],
            }],
        }
    }

    fn schema() -> Schema {
        let mut schema = Schema::new();
        for (ts, cql) in [
            (1, "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"),
            (2, "CREATE TABLE ks.t (k int, c text, v blob, PRIMARY KEY (k, c)) WITH CLUSTERING ORDER BY (c DESC)"),
        ] {
            let stmt = gyre_cql::parse_statement(cql).expect("parses");
            let change = gyre_schema::statement_to_change(&stmt, &schema, None)
                .expect("valid")
                .expect("a change");
            schema.apply_change(change, ts).expect("applies");
        }
        schema
    }

    fn run(cql: &str, binds: &[Option<Bytes>]) -> Result<Answer, QueryError> {
        let parsed = gyre_cql::parse(cql).expect("parses");
        let gyre_cql::Statement::Select(s) = &parsed.statement else {
            panic!("a select")
        };
        let ks = s.table.keyspace.clone().expect("qualified");
        select(&ks, s, binds, &info(), &schema())
    }

    fn texts(a: &Answer, col: usize) -> Vec<String> {
        a.rows
            .iter()
            .map(|r| String::from_utf8(r[col].clone().expect("non-null").to_vec()).expect("utf8"))
            .collect()
    }

    #[test]
    fn local_projection_and_where() {
        let a = run(
            "SELECT cluster_name, release_version AS v FROM system.local WHERE key = 'local'",
            &[],
        )
        .expect("ok");
        assert_eq!(a.columns[1].0, "v");
        assert_eq!(texts(&a, 0), ["c"]);
        assert_eq!(texts(&a, 1), ["5.0.0"]);
        let all = run("SELECT * FROM system.local", &[]).expect("ok");
        assert_eq!(all.rows.len(), 1);
        assert_eq!(all.columns.len(), 20);
        let none = run("SELECT key FROM system.local WHERE key = 'other'", &[]).expect("ok");
        assert!(none.rows.is_empty());
    }

    #[test]
    fn schema_tables_filter_with_in_binds_and_limit() {
        let a = run(
            "SELECT column_name, kind, position, clustering_order FROM system_schema.columns WHERE keyspace_name = ? AND table_name IN ('t', 'x')",
            &[Some(Bytes::from("ks"))],
        )
        .expect("ok");
        assert_eq!(texts(&a, 0), ["k", "c", "v"]);
        assert_eq!(texts(&a, 1), ["partition_key", "clustering", "regular"]);
        assert_eq!(texts(&a, 3), ["none", "desc", "none"]);
        let ks = run("SELECT keyspace_name FROM system_schema.keyspaces", &[]).expect("ok");
        assert!(texts(&ks, 0).contains(&"ks".to_string()));
        assert!(texts(&ks, 0).contains(&"system_schema".to_string()));
        let sys = run(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = 'system' LIMIT 2",
            &[],
        )
        .expect("ok");
        assert_eq!(texts(&sys, 0), ["local", "peers"]);
        let empty = run(
            "SELECT * FROM system_schema.views WHERE keyspace_name = 'ks' AND view_name = 't'",
            &[],
        )
        .expect("ok");
        assert!(empty.rows.is_empty());
    }

    #[test]
    fn peers_and_errors() {
        let a = run("SELECT peer, rpc_address, tokens FROM system.peers", &[]).expect("ok");
        assert_eq!(a.rows.len(), 1);
        let e = run("SELECT * FROM system.nope", &[]).err().expect("error");
        assert_eq!(e.code(), 0x2200);
        let e = run("SELECT nope FROM system.local", &[])
            .err()
            .expect("error");
        assert_eq!(e.code(), 0x2200);
        let e = run("SELECT * FROM system_virtual_schema.tables", &[])
            .err()
            .expect("error");
        assert_eq!(e.code(), 0x2200);
    }

    #[test]
    fn range_restrictions_filter_rows() {
        let all = run(
            "SELECT column_name FROM system_schema.columns WHERE keyspace_name = 'ks' ALLOW FILTERING",
            &[],
        )
        .expect("ok");
        let some = run(
            "SELECT column_name, position FROM system_schema.columns WHERE keyspace_name = 'ks' AND position >= 0 ALLOW FILTERING",
            &[],
        )
        .expect("ok");
        assert!(!all.rows.is_empty());
        // Regular columns have position -1.
        assert!(
            some.rows.len() < all.rows.len(),
            "{} {}",
            some.rows.len(),
            all.rows.len()
        );
        for row in &some.rows {
            let pos =
                CqlValue::decode(&ColumnType::Int, row[1].as_ref().expect("test")).expect("test");
            assert!(matches!(pos, CqlValue::Int(p) if p >= 0), "{pos:?}");
        }
        let none = run(
            "SELECT column_name FROM system_schema.columns WHERE keyspace_name = 'ks' AND position > 100 ALLOW FILTERING",
            &[],
        )
        .expect("ok");
        assert!(none.rows.is_empty());
    }

    #[test]
    fn pages_resume_where_the_last_stopped() {
        let rows: Vec<Vec<Option<Bytes>>> =
            (0u8..5).map(|i| vec![Some(Bytes::from(vec![i]))]).collect();
        let mut seen = Vec::new();
        let mut state = None;
        loop {
            let (page, next) = page(rows.clone(), Some(2), state.as_ref()).expect("page");
            assert!(page.len() <= 2);
            seen.extend(page);
            match next {
                Some(n) => state = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, rows);
        let (all, next) = page(rows.clone(), None, None).expect("page");
        assert_eq!((all.len(), next), (5, None));
        let bad = Bytes::from_static(b"nonsense");
        assert!(page(rows, Some(2), Some(&bad)).is_err());
    }
}
