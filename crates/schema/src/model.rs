//! Keyspace, table and column definitions, their options, and the
//! structural checks Cassandra makes on a table.

use std::collections::BTreeMap;
use std::fmt;

use gyre_cql::CqlType;
use gyre_storage::TableId;

use crate::error::{Result, SchemaError};

pub(crate) const SIMPLE_STRATEGY: &str = "org.apache.cassandra.locator.SimpleStrategy";
pub(crate) const NTS_STRATEGY: &str = "org.apache.cassandra.locator.NetworkTopologyStrategy";
pub(crate) const LOCAL_STRATEGY: &str = "org.apache.cassandra.locator.LocalStrategy";

/// How a keyspace's data is replicated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replication {
    Simple {
        replication_factor: u32,
    },
    /// Replication factor per datacenter.
    NetworkTopology(BTreeMap<String, u32>),
    /// Node-local data (the `system` and `system_schema` keyspaces).
    Local,
}

impl Replication {
    /// The replication map as `system_schema.keyspaces.replication` shows it.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        match self {
            Replication::Simple { replication_factor } => {
                m.insert("class".into(), SIMPLE_STRATEGY.into());
                m.insert("replication_factor".into(), replication_factor.to_string());
            }
            Replication::NetworkTopology(dcs) => {
                m.insert("class".into(), NTS_STRATEGY.into());
                for (dc, rf) in dcs {
                    m.insert(dc.clone(), rf.to_string());
                }
            }
            Replication::Local => {
                m.insert("class".into(), LOCAL_STRATEGY.into());
            }
        }
        m
    }

    /// Parses and validates a replication map (CQL `WITH replication = {...}`),
    /// accepting short and full class names. NetworkTopologyStrategy's
    /// `replication_factor` needs the datacenters: see
    /// [`Replication::from_map_in`].
    pub fn from_map(keyspace: &str, map: &BTreeMap<String, String>) -> Result<Self> {
        Self::from_map_in(keyspace, map, None, &[])
    }

    /// [`Replication::from_map`] for a CREATE or ALTER KEYSPACE in a
    /// cluster whose datacenters are `datacenters`, replacing `previous`.
    ///
    /// As Cassandra 4.0+ does, NetworkTopologyStrategy's
    /// `replication_factor` is the factor of every datacenter not given
    /// explicitly; on ALTER the datacenters the keyspace already has keep
    /// their factors (Cassandra's safety rule), a bare NTS class after
    /// SimpleStrategy takes its factor, and datacenters at 0 are dropped.
    /// The expanded map is what is stored and described.
    pub fn from_map_in(
        keyspace: &str,
        map: &BTreeMap<String, String>,
        previous: Option<&Replication>,
        datacenters: &[String],
    ) -> Result<Self> {
        let class = map
            .get("class")
            .ok_or_else(|| SchemaError::invalid("Missing replication strategy class"))?;
        let short = class
            .strip_prefix("org.apache.cassandra.locator.")
            .unwrap_or(class);
        let options = map.iter().filter(|(k, _)| k.as_str() != "class");
        match short {
            "SimpleStrategy" => {
                let mut rf = None;
                for (k, v) in options {
                    if k != "replication_factor" {
                        return Err(SchemaError::invalid(format!(
                            "Unrecognized strategy option {{{k}}} passed to SimpleStrategy for keyspace {keyspace}"
                        )));
                    }
                    rf = Some(parse_rf(v)?);
                }
                let replication_factor = rf.ok_or_else(|| {
                    SchemaError::invalid(
                        "SimpleStrategy requires a replication_factor strategy option.",
                    )
                })?;
                Ok(Replication::Simple { replication_factor })
            }
            "NetworkTopologyStrategy" => {
                let mut dcs = BTreeMap::new();
                let mut default_rf = None;
                for (k, v) in options {
                    if k == "replication_factor" {
                        default_rf = Some(parse_rf(v)?);
                    } else {
                        dcs.insert(k.clone(), parse_rf(v)?);
                    }
                }
                match previous {
                    // A bare class after SimpleStrategy keeps its factor.
                    Some(Replication::Simple { replication_factor })
                        if default_rf.is_none() && dcs.is_empty() =>
                    {
                        default_rf = Some(*replication_factor);
                    }
                    Some(Replication::NetworkTopology(old)) if default_rf.is_some() => {
                        for (dc, rf) in old {
                            dcs.entry(dc.clone()).or_insert(*rf);
                        }
                    }
                    _ => {}
                }
                if let Some(rf) = default_rf {
                    if datacenters.is_empty() {
                        return Err(SchemaError::invalid(
                            "replication_factor for NetworkTopologyStrategy needs the cluster's datacenters: give a replication factor per datacenter",
                        ));
                    }
                    for dc in datacenters {
                        dcs.entry(dc.clone()).or_insert(rf);
                    }
                }
                dcs.retain(|_, rf| *rf != 0);
                Ok(Replication::NetworkTopology(dcs))
            }
            "LocalStrategy" => Err(SchemaError::invalid(
                "LocalStrategy is only for internal use",
            )),
            _ => Err(SchemaError::invalid(format!(
                "Unable to find replication strategy class '{}'",
                if class.contains('.') {
                    class.clone()
                } else {
                    format!("org.apache.cassandra.locator.{class}")
                }
            ))),
        }
    }
}

fn parse_rf(v: &str) -> Result<u32> {
    match v.trim().parse::<i64>() {
        Ok(n) if n < 0 => Err(SchemaError::invalid(format!(
            "Replication factor must be non-negative; found {v}"
        ))),
        Ok(n) => u32::try_from(n)
            .map_err(|_| SchemaError::invalid(format!("Replication factor too large; found {v}"))),
        Err(_) => Err(SchemaError::invalid(format!(
            "Replication factor must be numeric; found {v}"
        ))),
    }
}

/// A keyspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyspaceDef {
    pub name: String,
    pub replication: Replication,
    pub durable_writes: bool,
}

/// Clustering order of one clustering column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum ClusteringOrder {
    #[default]
    Asc,
    Desc,
}

/// What role a column plays in its table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ColumnKind {
    /// Position in the partition key, from 0.
    PartitionKey(u32),
    /// Position among the clustering columns, from 0, and the order.
    Clustering(u32, ClusteringOrder),
    Regular,
    Static,
}

impl ColumnKind {
    pub fn is_primary_key(&self) -> bool {
        matches!(
            self,
            ColumnKind::PartitionKey(_) | ColumnKind::Clustering(..)
        )
    }
}

/// A column: name, CQL type and role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnDef {
    pub name: String,
    pub ty: CqlType,
    pub kind: ColumnKind,
}

/// Table options, with Cassandra's names and defaults. Maps hold option
/// values as text, as `system_schema.tables` does.
#[derive(Clone, Debug, PartialEq)]
pub struct TableOptions {
    pub gc_grace_seconds: u32,
    pub default_time_to_live: u32,
    pub comment: String,
    pub compaction: BTreeMap<String, String>,
    pub compression: BTreeMap<String, String>,
    pub caching: BTreeMap<String, String>,
    pub bloom_filter_fp_chance: f64,
    pub speculative_retry: String,
    /// Every other recognised option (`crc_check_chance`, `read_repair`, ...)
    /// as its canonical text.
    pub other: BTreeMap<String, String>,
}

fn string_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions {
            gc_grace_seconds: 864_000,
            default_time_to_live: 0,
            comment: String::new(),
            compaction: string_map(&[
                (
                    "class",
                    "org.apache.cassandra.db.compaction.SizeTieredCompactionStrategy",
                ),
                ("max_threshold", "32"),
                ("min_threshold", "4"),
            ]),
            compression: string_map(&[
                ("chunk_length_in_kb", "16"),
                ("class", "org.apache.cassandra.io.compress.LZ4Compressor"),
            ]),
            caching: string_map(&[("keys", "ALL"), ("rows_per_partition", "NONE")]),
            bloom_filter_fp_chance: 0.01,
            speculative_retry: "99p".into(),
            other: BTreeMap::new(),
        }
    }
}

/// Options Cassandra knows that Gyre keeps but does not interpret.
pub(crate) const OTHER_OPTIONS: &[&str] = &[
    "additional_write_policy",
    "cdc",
    "crc_check_chance",
    "extensions",
    "max_index_interval",
    "memtable",
    "memtable_flush_period_in_ms",
    "min_index_interval",
    "read_repair",
    "dclocal_read_repair_chance",
    "read_repair_chance",
];

impl TableOptions {
    /// The options as (name, canonical text) pairs: the form they take as
    /// schema cells, so that concurrent changes of different options merge.
    pub fn to_cells(&self) -> BTreeMap<String, String> {
        let json = |m: &BTreeMap<String, String>| serde_json::to_string(m).unwrap_or_default();
        let mut out = BTreeMap::new();
        out.insert("gc_grace_seconds".into(), self.gc_grace_seconds.to_string());
        out.insert(
            "default_time_to_live".into(),
            self.default_time_to_live.to_string(),
        );
        out.insert("comment".into(), self.comment.clone());
        out.insert("compaction".into(), json(&self.compaction));
        out.insert("compression".into(), json(&self.compression));
        out.insert("caching".into(), json(&self.caching));
        out.insert(
            "bloom_filter_fp_chance".into(),
            self.bloom_filter_fp_chance.to_string(),
        );
        out.insert("speculative_retry".into(), self.speculative_retry.clone());
        for (k, v) in &self.other {
            out.insert(k.clone(), v.clone());
        }
        out
    }

    /// Sets one option from its canonical text (as [`to_cells`] produced it).
    ///
    /// [`to_cells`]: TableOptions::to_cells
    pub fn set_cell(&mut self, name: &str, value: &str) -> Result<()> {
        let bad = || SchemaError::Corrupt(format!("table option {name} = {value:?}"));
        let map = || serde_json::from_str::<BTreeMap<String, String>>(value).map_err(|_| bad());
        match name {
            "gc_grace_seconds" => self.gc_grace_seconds = value.parse().map_err(|_| bad())?,
            "default_time_to_live" => {
                self.default_time_to_live = value.parse().map_err(|_| bad())?
            }
            "comment" => self.comment = value.to_owned(),
            "compaction" => self.compaction = map()?,
            "compression" => self.compression = map()?,
            "caching" => self.caching = map()?,
            "bloom_filter_fp_chance" => {
                self.bloom_filter_fp_chance = value.parse().map_err(|_| bad())?
            }
            "speculative_retry" => self.speculative_retry = value.to_owned(),
            _ => {
                self.other.insert(name.to_owned(), value.to_owned());
            }
        }
        Ok(())
    }
}

/// A column dropped from a table: cells of that column written at or
/// before `dropped_at` are dead even if the column is added again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DroppedColumn {
    pub ty: CqlType,
    pub dropped_at: gyre_common::Timestamp,
}

/// A table: its stable id, columns (partition key, clustering, then the
/// rest by name) and options.
#[derive(Clone, Debug, PartialEq)]
pub struct TableDef {
    pub keyspace: String,
    pub name: String,
    pub id: TableId,
    pub columns: Vec<ColumnDef>,
    pub options: TableOptions,
    /// Dropped columns by name.
    pub dropped_columns: BTreeMap<String, DroppedColumn>,
    /// Secondary indexes, by name.
    pub indexes: Vec<crate::index::IndexDef>,
}

impl TableDef {
    pub fn column(&self, name: &str) -> Option<&ColumnDef> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The secondary index of this name, if the table has it.
    pub fn index(&self, name: &str) -> Option<&crate::index::IndexDef> {
        self.indexes.iter().find(|i| i.name == name)
    }

    /// Partition key columns in key order.
    pub fn partition_key(&self) -> Vec<&ColumnDef> {
        let mut v: Vec<_> = self
            .columns
            .iter()
            .filter_map(|c| match c.kind {
                ColumnKind::PartitionKey(p) => Some((p, c)),
                _ => None,
            })
            .collect();
        v.sort_by_key(|(p, _)| *p);
        v.into_iter().map(|(_, c)| c).collect()
    }

    /// Clustering columns in key order.
    pub fn clustering(&self) -> Vec<&ColumnDef> {
        let mut v: Vec<_> = self
            .columns
            .iter()
            .filter_map(|c| match c.kind {
                ColumnKind::Clustering(p, _) => Some((p, c)),
                _ => None,
            })
            .collect();
        v.sort_by_key(|(p, _)| *p);
        v.into_iter().map(|(_, c)| c).collect()
    }

    /// Puts columns in Cassandra's order: partition key, clustering, then
    /// static and regular columns by name.
    pub(crate) fn sort_columns(&mut self) {
        self.columns.sort_by(|a, b| {
            let rank = |c: &ColumnDef| match c.kind {
                ColumnKind::PartitionKey(p) => (0, p),
                ColumnKind::Clustering(p, _) => (1, p),
                ColumnKind::Static | ColumnKind::Regular => (2, 0),
            };
            rank(a).cmp(&rank(b)).then_with(|| a.name.cmp(&b.name))
        });
    }

    /// The engine options this table's schema options translate to.
    pub fn storage_options(&self) -> gyre_storage::TableOptions {
        let mut o = gyre_storage::TableOptions {
            gc_grace_seconds: self.options.gc_grace_seconds,
            name: format!("{}.{}", self.keyspace, self.name),
            indexes: self
                .indexes
                .iter()
                .filter_map(|i| i.storage_spec(self))
                .collect(),
            ..Default::default()
        };
        let class = self.options.compression.get("class").map(String::as_str);
        let enabled = self.options.compression.get("enabled").map(String::as_str);
        o.compression = match (class, enabled) {
            (_, Some("false")) => gyre_storage::Compression::None,
            (Some(c), _) if c.ends_with("ZstdCompressor") => gyre_storage::Compression::Zstd,
            (None, _) => gyre_storage::Compression::None,
            _ => gyre_storage::Compression::Lz4,
        };
        // Options were validated when the statement was executed; a table
        // stored by an older version with options it did not check keeps
        // the default strategy.
        match gyre_storage::CompactionOptions::from_cql(&self.options.compaction) {
            Ok(c) => o.compaction = c,
            Err(e) => {
                tracing::warn!(table = %self.name, error = %e, "ignoring invalid compaction options")
            }
        }
        o
    }

    /// Cassandra's structural checks on a table definition.
    pub fn validate(&self) -> Result<()> {
        check_name("Table", &self.name)?;
        let mut seen = std::collections::BTreeSet::new();
        for c in &self.columns {
            if !seen.insert(c.name.as_str()) {
                return Err(SchemaError::invalid(format!(
                    "Multiple definition of identifier {}",
                    c.name
                )));
            }
            check_type(&c.ty, c.kind.is_primary_key(), &c.name)?;
        }
        let pk = self.partition_key();
        if pk.is_empty() {
            return Err(SchemaError::invalid(format!(
                "No PRIMARY KEY specifed for table '{}' (exactly one required)",
                self.name
            )));
        }
        let ck = self.clustering();
        let positions_ok = |v: &[&ColumnDef], key: fn(&ColumnKind) -> Option<u32>| {
            v.iter()
                .enumerate()
                .all(|(i, c)| key(&c.kind) == Some(i as u32))
        };
        if !positions_ok(&pk, |k| match k {
            ColumnKind::PartitionKey(p) => Some(*p),
            _ => None,
        }) || !positions_ok(&ck, |k| match k {
            ColumnKind::Clustering(p, _) => Some(*p),
            _ => None,
        }) {
            return Err(SchemaError::invalid(
                "Primary key column positions must be 0, 1, 2, ...",
            ));
        }
        if ck.is_empty() && self.columns.iter().any(|c| c.kind == ColumnKind::Static) {
            return Err(SchemaError::invalid(
                "Static columns are only useful (and thus allowed) if the table has at least one clustering column",
            ));
        }
        let values = || self.columns.iter().filter(|c| !c.kind.is_primary_key());
        if self.is_counter() {
            if values().any(|c| c.ty != CqlType::Counter) {
                return Err(SchemaError::invalid(
                    "Cannot mix counter and non counter columns in the same table",
                ));
            }
            if self.options.default_time_to_live > 0 {
                return Err(SchemaError::invalid(
                    "Cannot set default_time_to_live on a table with counters",
                ));
            }
        }
        Ok(())
    }

    /// A counter table: its non-key columns are counters.
    pub fn is_counter(&self) -> bool {
        self.columns
            .iter()
            .any(|c| !c.kind.is_primary_key() && c.ty == CqlType::Counter)
    }
}

/// Cassandra's rule for keyspace and table names.
pub(crate) fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 48
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(SchemaError::invalid(format!(
            "{what} name must not be empty, more than 48 characters long, or contain non-alphanumeric-underscore characters (got '{name}')"
        )))
    }
}

/// The column type checks Gyre can make without user-defined types.
pub(crate) fn check_type(ty: &CqlType, primary_key: bool, column: &str) -> Result<()> {
    check_type_inner(ty, false)?;
    if primary_key {
        match ty {
            // Stored as bytes, they would not sort by the class's order.
            CqlType::Custom(class) => {
                return Err(SchemaError::invalid(format!(
                    "Custom type {class} is not supported in the PRIMARY KEY (column {column})"
                )))
            }
            CqlType::List(_) | CqlType::Set(_) | CqlType::Map(..) => {
                return Err(SchemaError::invalid(format!(
                    "Invalid non-frozen collection type {ty} for PRIMARY KEY component {column}"
                )))
            }
            CqlType::Duration => {
                return Err(SchemaError::invalid(format!(
                    "duration type is not supported for PRIMARY KEY column '{column}'"
                )))
            }
            CqlType::Vector(..) => {
                return Err(SchemaError::invalid(format!(
                    "vector type is not supported for PRIMARY KEY column '{column}'"
                )))
            }
            CqlType::UserType(_) => {
                return Err(SchemaError::invalid(format!(
                "Invalid non-frozen user-defined type \"{ty}\" for PRIMARY KEY column '{column}'"
            )))
            }
            _ => {}
        }
        if contains_duration(ty) {
            return Err(SchemaError::invalid(format!(
                "duration type is not supported for PRIMARY KEY column '{column}'"
            )));
        }
        if ty == &CqlType::Counter {
            return Err(SchemaError::invalid(format!(
                "counter type is not supported for PRIMARY KEY column '{column}'"
            )));
        }
    }
    Ok(())
}

fn contains_duration(ty: &CqlType) -> bool {
    match ty {
        CqlType::Duration => true,
        CqlType::List(t) | CqlType::Set(t) | CqlType::Frozen(t) | CqlType::Vector(t, _) => {
            contains_duration(t)
        }
        CqlType::Map(k, v) => contains_duration(k) || contains_duration(v),
        CqlType::Tuple(ts) => ts.iter().any(contains_duration),
        CqlType::UserType(u) => u.fields.iter().any(|(_, t)| contains_duration(t)),
        _ => false,
    }
}

fn check_type_inner(ty: &CqlType, frozen: bool) -> Result<()> {
    let sub = |t: &CqlType| -> Result<()> {
        if t == &CqlType::Counter {
            return Err(SchemaError::invalid(
                "Counters are not allowed inside collections",
            ));
        }
        if !frozen && matches!(t, CqlType::List(_) | CqlType::Set(_) | CqlType::Map(..)) {
            return Err(SchemaError::invalid(format!(
                "Non-frozen collections are not allowed inside collections: {ty}"
            )));
        }
        if !frozen && matches!(t, CqlType::UserType(_)) {
            return Err(SchemaError::invalid(format!(
                "Non-frozen UDTs are not allowed inside collections: {ty}"
            )));
        }
        check_type_inner(t, frozen)
    };
    match ty {
        CqlType::Counter => Ok(()),
        // Its fields were checked when the type was created.
        CqlType::UserType(_) => Ok(()),
        CqlType::Udt(name) => Err(SchemaError::invalid(format!("Unknown type {name}"))),
        // Resolved by types::custom_type: opaque bytes.
        CqlType::Custom(_) => Ok(()),
        CqlType::List(t) => sub(t),
        CqlType::Set(t) => {
            if **t == CqlType::Duration {
                return Err(SchemaError::invalid("Durations are not allowed inside sets"));
            }
            sub(t)
        }
        CqlType::Map(k, v) => {
            if **k == CqlType::Duration {
                return Err(SchemaError::invalid("Durations are not allowed as map keys"));
            }
            sub(k)?;
            sub(v)
        }
        CqlType::Tuple(ts) => ts.iter().try_for_each(|t| check_type_inner(t, true)),
        CqlType::Vector(t, n) => {
            if *n == 0 {
                return Err(SchemaError::invalid("vectors may only have positive dimensions"));
            }
            sub(t)
        }
        CqlType::Frozen(t) => match &**t {
            CqlType::List(_) | CqlType::Set(_) | CqlType::Map(..) | CqlType::Tuple(_) | CqlType::Udt(_) | CqlType::UserType(_) => {
                check_type_inner(t, true)
            }
            other => Err(SchemaError::invalid(format!(
                "frozen<> is only allowed on collections, tuples, and user-defined types (got {other})"
            ))),
        },
        _ => Ok(()),
    }
}

impl fmt::Display for ClusteringOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClusteringOrder::Asc => "ASC",
            ClusteringOrder::Desc => "DESC",
        })
    }
}
