//! Secondary indexes in the schema: their definition, Cassandra's checks
//! on CREATE INDEX, the `system_schema.indexes` form, and what the storage
//! engine indexes for each (every index is storage-attached, see
//! [`gyre_storage::sai`]).

use std::collections::BTreeMap;

use gyre_cql::{CqlType, IndexTarget, Literal, PropertyValue};
use gyre_storage::ann::Similarity;
use gyre_storage::sai::{
    IndexSpec, IndexedPart, KeyLayout, KeyPart, TermOrder, TextAnalysis, VectorIndex,
};

use crate::error::{Result, SchemaError};
use crate::model::{ColumnKind, TableDef};
use crate::schema::Schema;

/// The class name `system_schema.indexes` shows for SAI.
pub const SAI_CLASS: &str = "org.apache.cassandra.index.sai.StorageAttachedIndex";

/// A secondary index of a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexDef {
    pub name: String,
    pub target: IndexTarget,
    /// Created with `CREATE CUSTOM INDEX ... USING`: kind `CUSTOM`, and
    /// `class_name` among the options; otherwise kind `COMPOSITES`.
    pub custom: bool,
    /// The SAI options given (`case_sensitive`, `similarity_function`, ...).
    pub options: BTreeMap<String, String>,
}

impl IndexDef {
    /// `system_schema.indexes.kind`.
    pub fn kind(&self) -> &'static str {
        if self.custom {
            "CUSTOM"
        } else {
            "COMPOSITES"
        }
    }

    /// The target as Cassandra stores it: `c`, `keys(c)`, `values(c)`, ...
    pub fn target_text(&self) -> String {
        let q = gyre_cql::quote_identifier;
        match &self.target {
            IndexTarget::Column(c) => q(c),
            IndexTarget::Keys(c) => format!("keys({})", q(c)),
            IndexTarget::Values(c) => format!("values({})", q(c)),
            IndexTarget::Entries(c) => format!("entries({})", q(c)),
            IndexTarget::Full(c) => format!("full({})", q(c)),
        }
    }

    /// `system_schema.indexes.options`: the target, the class of a custom
    /// index and its options.
    pub fn system_options(&self) -> BTreeMap<String, String> {
        let mut m = self.options.clone();
        m.insert("target".into(), self.target_text());
        if self.custom {
            m.insert("class_name".into(), SAI_CLASS.into());
        }
        m
    }

    /// `CREATE [CUSTOM] INDEX ...;` as DESCRIBE shows it.
    pub fn to_cql(&self, table: &TableDef) -> String {
        let q = gyre_cql::quote_identifier;
        let head = if self.custom {
            "CREATE CUSTOM INDEX"
        } else {
            "CREATE INDEX"
        };
        let mut out = format!(
            "{head} {} ON {}.{} ({})",
            q(&self.name),
            q(&table.keyspace),
            q(&table.name),
            self.target_text()
        );
        if self.custom {
            out.push_str(" USING 'StorageAttachedIndex'");
            if !self.options.is_empty() {
                let items: Vec<String> = self
                    .options
                    .iter()
                    .map(|(k, v)| {
                        format!(
                            "{}: {}",
                            gyre_cql::quote_string(k),
                            gyre_cql::quote_string(v)
                        )
                    })
                    .collect();
                out.push_str(&format!(" WITH OPTIONS = {{{}}}", items.join(", ")));
            }
        }
        out.push(';');
        out
    }

    /// Parses the stored form (target text, kind, options).
    pub(crate) fn from_stored(
        name: &str,
        target: &str,
        custom: bool,
        options: BTreeMap<String, String>,
    ) -> Result<IndexDef> {
        let stmt = gyre_cql::parse_statement(&format!("CREATE INDEX i ON t ({target})"))
            .map_err(|e| SchemaError::Corrupt(format!("index target {target:?}: {e}")))?;
        let gyre_cql::Statement::CreateIndex(ci) = stmt else {
            return Err(SchemaError::Corrupt(format!("index target {target:?}")));
        };
        let target = ci
            .targets
            .into_iter()
            .next()
            .ok_or_else(|| SchemaError::Corrupt(format!("index target {target:?}")))?;
        Ok(IndexDef {
            name: name.to_owned(),
            target,
            custom,
            options,
        })
    }

    /// What the storage engine indexes for this index of `table`.
    pub fn storage_spec(&self, table: &TableDef) -> Option<IndexSpec> {
        let col = table.column(self.target.column())?;
        if col.kind.is_primary_key() {
            return self.key_spec(table, col);
        }
        let base = match &col.ty {
            CqlType::Frozen(t) => &**t,
            t => t,
        };
        let (part, elem) = match (&self.target, base) {
            (IndexTarget::Keys(_), CqlType::Map(k, _)) => (IndexedPart::Keys, &**k),
            (IndexTarget::Values(_) | IndexTarget::Column(_), CqlType::Set(t))
                if !matches!(col.ty, CqlType::Frozen(_)) =>
            {
                (IndexedPart::Keys, &**t)
            }
            (
                IndexTarget::Values(_) | IndexTarget::Column(_),
                CqlType::List(t) | CqlType::Map(_, t),
            ) if !matches!(col.ty, CqlType::Frozen(_)) => (IndexedPart::Values, &**t),
            (IndexTarget::Entries(_), CqlType::Map(..)) => (IndexedPart::Entries, base),
            _ => (IndexedPart::Value, &col.ty),
        };
        // Cell paths (map keys, set elements) are already byte-comparable.
        let order = if part == IndexedPart::Keys || part == IndexedPart::Entries {
            TermOrder::Bytes
        } else {
            term_order(elem)
        };
        Some(IndexSpec {
            name: self.name.clone(),
            column: col.name.clone(),
            part,
            order,
            is_static: col.kind == ColumnKind::Static,
            vector: self.vector(table),
            text: self.text_analysis(),
            key: None,
        })
    }

    /// The spec of an index on a primary key column: a component of a
    /// composite partition key, or a clustering column. Its terms come
    /// from the keys. `None` (restrictions filtered instead) for the only
    /// column of a partition key (refused at CREATE INDEX anyway) and for
    /// text options that change terms, which keys do not support.
    fn key_spec(&self, table: &TableDef, col: &crate::model::ColumnDef) -> Option<IndexSpec> {
        if !self.text_analysis().is_identity() || !matches!(self.target, IndexTarget::Column(_)) {
            return None;
        }
        let (key, order) = match col.kind {
            ColumnKind::PartitionKey(i) if table.partition_key().len() > 1 => {
                (KeyPart::Partition(i as usize), term_order(&col.ty))
            }
            ColumnKind::Clustering(i, _) => {
                let mut layouts = Vec::new();
                for c in table.clustering().into_iter().take(i as usize + 1) {
                    let ColumnKind::Clustering(_, o) = c.kind else {
                        return None;
                    };
                    layouts.push(KeyLayout {
                        desc: o == crate::model::ClusteringOrder::Desc,
                        shape: crate::encoding::key_shape(&c.ty)?,
                    });
                }
                (KeyPart::Clustering(layouts), TermOrder::Bytes)
            }
            _ => return None,
        };
        Some(IndexSpec {
            name: self.name.clone(),
            column: col.name.clone(),
            part: IndexedPart::Value,
            order,
            is_static: false,
            vector: None,
            text: TextAnalysis::default(),
            key: Some(key),
        })
    }

    /// SAI's text options of this index (all off unless given).
    pub fn text_analysis(&self) -> TextAnalysis {
        let is = |k: &str, v: &str| self.options.get(k).is_some_and(|x| x == v);
        TextAnalysis {
            case_insensitive: is("case_sensitive", "false"),
            normalize: is("normalize", "true"),
            ascii: is("ascii", "true"),
        }
    }

    /// The ANN side of an index on a `vector<float, n>` column (cosine
    /// unless `similarity_function` says otherwise, as in Cassandra).
    pub fn vector(&self, table: &TableDef) -> Option<VectorIndex> {
        let col = table.column(self.target.column())?;
        let CqlType::Vector(elem, dim) = &col.ty else {
            return None;
        };
        if **elem != CqlType::Float || !matches!(self.target, IndexTarget::Column(_)) {
            return None;
        }
        let similarity = self
            .options
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("similarity_function"))
            .and_then(|(_, v)| Similarity::from_option(v))
            .unwrap_or(Similarity::Cosine);
        Some(VectorIndex {
            dim: *dim as usize,
            similarity,
        })
    }

    /// Whether ranges (`<`, `>`, ...) on the indexed values can be served:
    /// SAI's numeric, date and time types.
    pub fn supports_ranges(&self, table: &TableDef) -> bool {
        let Some(col) = table.column(self.target.column()) else {
            return false;
        };
        matches!(self.target, IndexTarget::Column(_))
            && matches!(
                col.ty,
                CqlType::Int
                    | CqlType::Bigint
                    | CqlType::Smallint
                    | CqlType::Tinyint
                    | CqlType::Timestamp
                    | CqlType::Time
                    | CqlType::Date
                    | CqlType::Float
                    | CqlType::Double
            )
    }
}

/// How the terms of raw values of `ty` sort (see [`TermOrder`]).
fn term_order(ty: &CqlType) -> TermOrder {
    match ty {
        CqlType::Int
        | CqlType::Bigint
        | CqlType::Smallint
        | CqlType::Tinyint
        | CqlType::Timestamp
        | CqlType::Time => TermOrder::Signed,
        CqlType::Float | CqlType::Double => TermOrder::Float,
        _ => TermOrder::Bytes,
    }
}

fn is_collection(ty: &CqlType) -> bool {
    matches!(ty, CqlType::List(_) | CqlType::Set(_) | CqlType::Map(..))
}

fn contains_duration(ty: &CqlType) -> bool {
    match ty {
        CqlType::Duration => true,
        CqlType::List(t) | CqlType::Set(t) | CqlType::Frozen(t) | CqlType::Vector(t, _) => {
            contains_duration(t)
        }
        CqlType::Map(k, v) => contains_duration(k) || contains_duration(v),
        CqlType::Tuple(ts) => ts.iter().any(contains_duration),
        _ => false,
    }
}

/// The options of a CUSTOM index's `WITH OPTIONS = {...}`, checked as SAI
/// does for the indexed column's type.
fn sai_options(
    properties: &[gyre_cql::Property],
    ty: &CqlType,
    column: &str,
) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for p in properties {
        if p.name != "options" {
            return Err(SchemaError::invalid(format!(
                "Unknown property '{}'",
                p.name
            )));
        }
        let PropertyValue::Map(entries) = &p.value else {
            return Err(SchemaError::invalid("OPTIONS must be a map"));
        };
        for (k, v) in entries {
            let text = |l: &Literal| match l {
                Literal::String(s) => s.clone(),
                Literal::Bool(b) => b.to_string(),
                Literal::Integer(s) | Literal::Float(s) => s.clone(),
                other => format!("{other:?}"),
            };
            out.insert(text(k).to_ascii_lowercase(), text(v));
        }
    }
    let text_type = matches!(ty, CqlType::Text | CqlType::Ascii);
    for (k, v) in &mut out {
        match k.as_str() {
            "case_sensitive" | "normalize" | "ascii" => {
                if !text_type {
                    return Err(SchemaError::invalid(format!(
                        "{k} is only supported on text columns (column {column} is {ty})"
                    )));
                }
                if v != "true" && v != "false" {
                    return Err(SchemaError::invalid(format!(
                        "Illegal value for boolean option '{k}': {v}"
                    )));
                }
            }
            "similarity_function" => {
                if !matches!(ty, CqlType::Vector(..)) {
                    return Err(SchemaError::invalid(format!(
                        "similarity_function is only supported on vector columns (column {column} is {ty})"
                    )));
                }
                let up = v.to_ascii_uppercase();
                if !["COSINE", "EUCLIDEAN", "DOT_PRODUCT"].contains(&up.as_str()) {
                    return Err(SchemaError::invalid(format!(
                        "Invalid similarity function: {v}. Valid values are COSINE, EUCLIDEAN, DOT_PRODUCT"
                    )));
                }
                *v = up;
            }
            _ => {
                return Err(SchemaError::invalid(format!(
                    "Illegal index option '{k}' for StorageAttachedIndex"
                )))
            }
        }
    }
    Ok(out)
}

/// CREATE INDEX against the schema: the table it goes on (keyspace,
/// table) and the new index, `None` for IF NOT EXISTS on an existing one.
pub(crate) fn create_index(
    ci: &gyre_cql::CreateIndex,
    schema: &Schema,
    current_keyspace: Option<&str>,
) -> Result<Option<(String, String, IndexDef)>> {
    let ks = ci
        .table
        .keyspace
        .as_deref()
        .or(current_keyspace)
        .ok_or_else(|| {
            SchemaError::invalid(
                "No keyspace has been specified. USE a keyspace, or explicitly specify keyspace.tablename",
            )
        })?;
    schema
        .keyspace(ks)
        .ok_or_else(|| SchemaError::invalid(format!("Keyspace '{ks}' doesn't exist")))?;
    let table = schema
        .table(ks, &ci.table.name)
        .ok_or_else(|| SchemaError::invalid(format!("Table '{}' doesn't exist", ci.table.name)))?;
    if ci.custom && ci.class.is_none() {
        return Err(SchemaError::invalid(
            "Must specify index implementation via USING",
        ));
    }
    if let Some(class) = &ci.class {
        let short = class.rsplit('.').next().unwrap_or(class);
        if !short.eq_ignore_ascii_case("StorageAttachedIndex") && !short.eq_ignore_ascii_case("sai")
        {
            return Err(SchemaError::invalid(format!(
                "Unable to find custom indexer class '{class}'"
            )));
        }
    }
    if ci.targets.len() != 1 {
        return Err(SchemaError::invalid(if ci.custom {
            "Only one column per index is supported"
        } else {
            "Only CUSTOM indexes support multiple columns"
        }));
    }
    let mut target = ci.targets[0].clone();
    let column = target.column().to_owned();
    let col = table
        .column(&column)
        .ok_or_else(|| SchemaError::invalid(format!("Column '{column}' doesn't exist")))?;
    if col.ty == CqlType::Counter || table.columns.iter().any(|c| c.ty == CqlType::Counter) {
        return Err(SchemaError::invalid(
            "Secondary indexes on counter tables aren't supported",
        ));
    }
    if col.ty == CqlType::Duration {
        return Err(SchemaError::invalid(
            "Secondary indexes are not supported on duration columns",
        ));
    }
    if contains_duration(&col.ty) {
        return Err(SchemaError::invalid(
            "Secondary indexes are not supported on collections containing durations",
        ));
    }
    if matches!(col.kind, ColumnKind::PartitionKey(_)) && table.partition_key().len() == 1 {
        return Err(SchemaError::invalid(format!(
            "Cannot create secondary index on the only partition key column {column}"
        )));
    }
    let frozen = matches!(col.ty, CqlType::Frozen(_));
    let collection = is_collection(&col.ty);
    match &target {
        IndexTarget::Column(_) if collection => target = IndexTarget::Values(column.clone()),
        IndexTarget::Column(_) if frozen => target = IndexTarget::Full(column.clone()),
        IndexTarget::Full(_) if !frozen => {
            return Err(SchemaError::invalid(
                "full() indexes can only be created on frozen collections",
            ))
        }
        IndexTarget::Keys(_) | IndexTarget::Values(_) | IndexTarget::Entries(_) if frozen => {
            let kind = match &target {
                IndexTarget::Keys(_) => "keys",
                IndexTarget::Values(_) => "values",
                _ => "entries",
            };
            return Err(SchemaError::invalid(format!(
                "Cannot create {kind}() index on frozen column {column}. Frozen collections are immutable and must be fully indexed by using the 'full({column})' modifier"
            )));
        }
        IndexTarget::Keys(_) | IndexTarget::Values(_) | IndexTarget::Entries(_) if !collection => {
            let kind = match &target {
                IndexTarget::Keys(_) => "keys",
                IndexTarget::Values(_) => "values",
                _ => "entries",
            };
            return Err(SchemaError::invalid(format!(
                "Cannot create {kind}() index on {column}. Non-collection columns only support simple indexes"
            )));
        }
        IndexTarget::Keys(_) | IndexTarget::Entries(_) if !matches!(col.ty, CqlType::Map(..)) => {
            let kind = if matches!(target, IndexTarget::Keys(_)) {
                "keys"
            } else {
                "entries"
            };
            return Err(SchemaError::invalid(format!(
                "Cannot create index on {kind} of column {column} with non-map type"
            )));
        }
        _ => {}
    }
    if matches!(col.ty, CqlType::Vector(..)) && !ci.custom {
        return Err(SchemaError::invalid(format!(
            "Cannot create secondary index on vector column {column}: use CREATE CUSTOM INDEX ... USING 'StorageAttachedIndex'"
        )));
    }
    if matches!(col.ty, CqlType::Blob | CqlType::Custom(_) | CqlType::Udt(_)) && ci.custom {
        return Err(SchemaError::invalid(format!(
            "Unsupported type {} for StorageAttachedIndex on column {column}",
            col.ty
        )));
    }
    let options = if ci.custom {
        sai_options(&ci.properties, &col.ty, &column)?
    } else {
        if !ci.properties.is_empty() {
            return Err(SchemaError::invalid(
                "Cannot specify index class for a non-CUSTOM index",
            ));
        }
        BTreeMap::new()
    };
    let name = match &ci.name {
        Some(n) => {
            check_index_name(n)?;
            n.clone()
        }
        None => default_name(schema, ks, &table.name, &column),
    };
    let index = IndexDef {
        name: name.clone(),
        target,
        custom: ci.custom,
        options,
    };
    if schema.tables_in(ks).any(|t| t.index(&name).is_some()) {
        return if ci.if_not_exists {
            Ok(None)
        } else {
            Err(SchemaError::invalid(format!(
                "Index '{name}' already exists"
            )))
        };
    }
    if let Some(dup) = table.indexes.iter().find(|i| i.target == index.target) {
        return if ci.if_not_exists {
            Ok(None)
        } else {
            Err(SchemaError::invalid(format!(
                "Index {name} is a duplicate of existing index {}",
                dup.name
            )))
        };
    }
    Ok(Some((ks.to_owned(), table.name.clone(), index)))
}

fn check_index_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 222
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(SchemaError::invalid(format!(
            "Index name must not be empty, or contain non-alphanumeric-underscore characters (got \"{name}\")"
        )))
    }
}

/// Cassandra's default name, `<table>_<column>_idx`, made unique in the
/// keyspace with `_1`, `_2`, ...
fn default_name(schema: &Schema, ks: &str, table: &str, column: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let base = format!("{}_{}_idx", clean(table), clean(column));
    let taken = |n: &str| schema.tables_in(ks).any(|t| t.index(n).is_some());
    if !taken(&base) {
        return base;
    }
    (1..)
        .map(|i| format!("{base}_{i}"))
        .find(|n| !taken(n))
        .unwrap_or(base)
}
