//! From the CQL syntax tree to schema changes, with Cassandra's checks and
//! messages. `IF [NOT] EXISTS` turns a would-be error into "no change".

use std::collections::BTreeMap;

use gyre_cql::{
    AlterTableAction, Literal, Order, Property, PropertyValue, QualifiedName, Statement,
};
use gyre_storage::TableId;

use crate::error::{Result, SchemaError};
use crate::model::{
    check_name, ClusteringOrder, ColumnDef, ColumnKind, KeyspaceDef, Replication, TableDef,
    TableOptions, OTHER_OPTIONS,
};
use crate::schema::{
    is_replicated_system_keyspace, is_system_keyspace, Schema, SchemaChange, TableAlteration,
};

/// Turns a DDL statement into the change it asks for against `schema`.
///
/// `Ok(None)` means nothing to do (`IF NOT EXISTS` on an existing object,
/// `IF EXISTS` on a missing one). Statements other than keyspace and table
/// DDL are an `InvalidRequest`. A new table gets a fresh random id.
pub fn statement_to_change(
    statement: &Statement,
    schema: &Schema,
    current_keyspace: Option<&str>,
) -> Result<Option<SchemaChange>> {
    statement_to_change_in(statement, schema, current_keyspace, &[])
}

/// [`statement_to_change`] in a cluster whose datacenters are
/// `datacenters`, which NetworkTopologyStrategy's `replication_factor`
/// expands to (see [`Replication::from_map_in`]).
pub fn statement_to_change_in(
    statement: &Statement,
    schema: &Schema,
    current_keyspace: Option<&str>,
    datacenters: &[String],
) -> Result<Option<SchemaChange>> {
    match statement {
        Statement::CreateKeyspace(ck) => {
            check_name("Keyspace", &ck.name)?;
            if schema.keyspace(&ck.name).is_some() {
                return if ck.if_not_exists {
                    Ok(None)
                } else {
                    Err(SchemaError::AlreadyExists {
                        keyspace: ck.name.clone(),
                        table: None,
                    })
                };
            }
            let def = keyspace_from_properties(&ck.name, &ck.properties, None, datacenters)?;
            Ok(Some(SchemaChange::CreateKeyspace(def)))
        }
        Statement::AlterKeyspace(ak) => {
            if is_system_keyspace(&ak.name) && !is_replicated_system_keyspace(&ak.name) {
                return Err(SchemaError::Unauthorized(format!(
                    "Cannot alter system keyspace {}",
                    ak.name
                )));
            }
            let Some(current) = schema.keyspace(&ak.name) else {
                return missing_keyspace(&ak.name, ak.if_exists);
            };
            let def =
                keyspace_from_properties(&ak.name, &ak.properties, Some(current), datacenters)?;
            Ok(Some(SchemaChange::AlterKeyspace(def)))
        }
        Statement::DropKeyspace { name, if_exists } => {
            if is_system_keyspace(name) {
                return Err(SchemaError::Unauthorized(format!(
                    "Cannot drop system keyspace {name}"
                )));
            }
            if schema.keyspace(name).is_none() {
                return missing_keyspace(name, *if_exists);
            }
            Ok(Some(SchemaChange::DropKeyspace(name.clone())))
        }
        Statement::CreateTable(ct) => {
            let ks = keyspace_of(&ct.name, current_keyspace)?;
            if is_system_keyspace(&ks) {
                return Err(SchemaError::Unauthorized(format!(
                    "Cannot alter system keyspace {ks}"
                )));
            }
            if schema.keyspace(&ks).is_none() {
                return missing_keyspace(&ks, false);
            }
            if schema.table(&ks, &ct.name.name).is_some() {
                return if ct.if_not_exists {
                    Ok(None)
                } else {
                    Err(SchemaError::AlreadyExists {
                        keyspace: ks,
                        table: Some(ct.name.name.clone()),
                    })
                };
            }
            Ok(Some(SchemaChange::CreateTable(table_from_create(
                ct, &ks, schema,
            )?)))
        }
        Statement::AlterTable(at) => {
            let ks = keyspace_of(&at.name, current_keyspace)?;
            if is_system_keyspace(&ks) {
                return Err(SchemaError::Unauthorized(format!(
                    "Cannot alter system keyspace {ks}"
                )));
            }
            if schema.keyspace(&ks).is_none() {
                return missing_keyspace(&ks, at.if_exists);
            }
            let Some(def) = schema.table(&ks, &at.name.name) else {
                return missing_table(&ks, &at.name.name, at.if_exists);
            };
            let alteration = match alteration(def, &at.action, schema)? {
                Some(a) => a,
                None => return Ok(None),
            };
            Ok(Some(SchemaChange::AlterTable {
                keyspace: ks,
                table: at.name.name.clone(),
                alteration,
            }))
        }
        Statement::DropTable { name, if_exists } => {
            let ks = keyspace_of(name, current_keyspace)?;
            if is_system_keyspace(&ks) {
                return Err(SchemaError::Unauthorized(format!(
                    "Cannot alter system keyspace {ks}"
                )));
            }
            if schema.keyspace(&ks).is_none() {
                return missing_keyspace(&ks, *if_exists);
            }
            if schema.table(&ks, &name.name).is_none() {
                return missing_table(&ks, &name.name, *if_exists);
            }
            Ok(Some(SchemaChange::DropTable {
                keyspace: ks,
                table: name.name.clone(),
            }))
        }
        Statement::CreateIndex(ci) => {
            let ks = keyspace_of(&ci.table, current_keyspace)?;
            if is_system_keyspace(&ks) {
                return Err(SchemaError::Unauthorized(format!(
                    "Cannot alter system keyspace {ks}"
                )));
            }
            Ok(
                crate::index::create_index(ci, schema, current_keyspace)?.map(
                    |(keyspace, table, index)| SchemaChange::CreateIndex {
                        keyspace,
                        table,
                        index,
                    },
                ),
            )
        }
        Statement::DropIndex { name, if_exists } => {
            let ks = keyspace_of(name, current_keyspace)?;
            if is_system_keyspace(&ks) {
                return Err(SchemaError::Unauthorized(format!(
                    "Cannot alter system keyspace {ks}"
                )));
            }
            if schema.keyspace(&ks).is_none() {
                return missing_keyspace(&ks, *if_exists);
            }
            let table = schema
                .tables_in(&ks)
                .find(|t| t.index(&name.name).is_some())
                .map(|t| t.name.clone());
            match table {
                Some(table) => Ok(Some(SchemaChange::DropIndex {
                    keyspace: ks.clone(),
                    table,
                    index: name.name.clone(),
                })),
                None if *if_exists => Ok(None),
                None => Err(SchemaError::invalid(format!(
                    "Index '{ks}.{}' doesn't exist",
                    name.name
                ))),
            }
        }
        Statement::CreateType(ct) => {
            let ks = keyspace_of(&ct.name, current_keyspace)?;
            if is_system_keyspace(&ks) {
                return Err(SchemaError::Unauthorized(format!(
                    "Cannot alter system keyspace {ks}"
                )));
            }
            if schema.keyspace(&ks).is_none() {
                return Err(SchemaError::invalid(format!(
                    "Keyspace '{ks}' doesn't exist"
                )));
            }
            if schema.user_type(&ks, &ct.name.name).is_some() {
                return if ct.if_not_exists {
                    Ok(None)
                } else {
                    Err(SchemaError::invalid(format!(
                        "A user type with name '{}' already exists",
                        ct.name.name
                    )))
                };
            }
            let fields =
                crate::types::create_fields(&ks, &ct.name.name, &ct.fields, schema.types_in(&ks))?;
            Ok(Some(SchemaChange::CreateType {
                keyspace: ks,
                name: ct.name.name.clone(),
                fields,
            }))
        }
        Statement::AlterType(at) => {
            let ks = keyspace_of(&at.name, current_keyspace)?;
            if is_system_keyspace(&ks) {
                return Err(SchemaError::Unauthorized(format!(
                    "Cannot alter system keyspace {ks}"
                )));
            }
            let Some(current) = schema.user_type(&ks, &at.name.name) else {
                if at.if_exists {
                    return Ok(None);
                }
                return Err(SchemaError::invalid(format!(
                    "Type {ks}.{} doesn't exist",
                    at.name.name
                )));
            };
            let in_partition_key: Vec<String> = schema
                .tables_in(&ks)
                .filter(|t| {
                    t.partition_key()
                        .iter()
                        .any(|c| crate::types::references(&c.ty, &current.name))
                })
                .map(|t| t.name.clone())
                .collect();
            let Some(fields) = crate::types::alter_fields(
                &ks,
                current,
                &at.action,
                schema.types_in(&ks),
                &in_partition_key,
            )?
            else {
                return Ok(None);
            };
            Ok(Some(SchemaChange::AlterType {
                keyspace: ks,
                name: at.name.name.clone(),
                fields,
            }))
        }
        Statement::DropType { name, if_exists } => {
            let ks = keyspace_of(name, current_keyspace)?;
            if is_system_keyspace(&ks) {
                return Err(SchemaError::Unauthorized(format!(
                    "Cannot alter system keyspace {ks}"
                )));
            }
            if schema.user_type(&ks, &name.name).is_none() {
                if *if_exists {
                    return Ok(None);
                }
                return Err(SchemaError::invalid(format!(
                    "Type '{ks}.{}' doesn't exist",
                    name.name
                )));
            }
            Ok(Some(SchemaChange::DropType {
                keyspace: ks,
                name: name.name.clone(),
            }))
        }
        _ => Err(SchemaError::invalid(
            "Only CREATE/ALTER/DROP KEYSPACE, TABLE, INDEX and TYPE statements change the schema",
        )),
    }
}

fn missing_keyspace<T>(name: &str, if_exists: bool) -> Result<Option<T>> {
    if if_exists {
        Ok(None)
    } else {
        Err(SchemaError::invalid(format!(
            "Keyspace '{name}' does not exist"
        )))
    }
}

fn missing_table<T>(ks: &str, table: &str, if_exists: bool) -> Result<Option<T>> {
    if if_exists {
        Ok(None)
    } else {
        Err(SchemaError::invalid(format!(
            "Table '{ks}.{table}' doesn't exist"
        )))
    }
}

fn keyspace_of(name: &QualifiedName, current: Option<&str>) -> Result<String> {
    name.keyspace
        .as_deref()
        .or(current)
        .map(str::to_owned)
        .ok_or_else(|| {
            SchemaError::invalid(
                "No keyspace has been specified. USE a keyspace, or explicitly specify keyspace.tablename",
            )
        })
}

/// A literal as option text.
fn literal_text(l: &Literal) -> Result<String> {
    Ok(match l {
        Literal::String(s) | Literal::Integer(s) | Literal::Float(s) => s.clone(),
        Literal::Bool(b) => b.to_string(),
        other => {
            return Err(SchemaError::invalid(format!(
                "Invalid value {other:?} for a property"
            )))
        }
    })
}

fn property_text(p: &Property) -> Result<String> {
    match &p.value {
        PropertyValue::Constant(l) => literal_text(l),
        PropertyValue::Identifier(s) => Ok(s.clone()),
        PropertyValue::Map(_) => Err(SchemaError::invalid(format!(
            "Invalid value for property '{}'. It should be a string",
            p.name
        ))),
    }
}

fn property_map(p: &Property) -> Result<BTreeMap<String, String>> {
    match &p.value {
        PropertyValue::Map(pairs) => pairs
            .iter()
            .map(|(k, v)| Ok((literal_text(k)?, literal_text(v)?)))
            .collect(),
        _ => Err(SchemaError::invalid(format!(
            "Invalid value for property '{}'. It should be a map.",
            p.name
        ))),
    }
}

fn check_duplicates(props: &[Property]) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for p in props {
        if !seen.insert(p.name.as_str()) {
            return Err(SchemaError::invalid(format!(
                "Multiple definitions for property '{}'",
                p.name
            )));
        }
    }
    Ok(())
}

fn keyspace_from_properties(
    name: &str,
    props: &[Property],
    current: Option<&KeyspaceDef>,
    datacenters: &[String],
) -> Result<KeyspaceDef> {
    check_duplicates(props)?;
    let mut replication: Option<Replication> = current.map(|c| c.replication.clone());
    let mut durable_writes = current.is_none_or(|c| c.durable_writes);
    for p in props {
        match p.name.as_str() {
            "replication" => {
                replication = Some(Replication::from_map_in(
                    name,
                    &property_map(p)?,
                    current.map(|c| &c.replication),
                    datacenters,
                )?)
            }
            "durable_writes" => {
                durable_writes = match property_text(p)?.to_ascii_lowercase().as_str() {
                    "true" => true,
                    "false" => false,
                    v => {
                        return Err(SchemaError::invalid(format!(
                            "Invalid boolean value {v} for 'durable_writes'"
                        )))
                    }
                }
            }
            other => {
                return Err(SchemaError::invalid(format!("Unknown property '{other}'")));
            }
        }
    }
    let replication = replication
        .ok_or_else(|| SchemaError::invalid("Missing mandatory replication strategy class"))?;
    Ok(KeyspaceDef {
        name: name.to_owned(),
        replication,
        durable_writes,
    })
}

fn canonical_class(class: &str, package: &str) -> String {
    if class.contains('.') {
        class.to_owned()
    } else {
        format!("{package}.{class}")
    }
}

/// Checks table properties and returns them as canonical option cells.
pub(crate) fn table_option_cells(props: &[Property]) -> Result<BTreeMap<String, String>> {
    check_duplicates(props)?;
    let mut o = BTreeMap::new();
    for p in props {
        let name = p.name.as_str();
        let int_in = |lo: i64, hi: i64| -> Result<String> {
            let t = property_text(p)?;
            let n: i64 = t.parse().map_err(|_| {
                SchemaError::invalid(format!("Invalid integer value {t} for '{name}'"))
            })?;
            if n < lo {
                return Err(SchemaError::invalid(format!(
                    "{name} must be greater than or equal to {lo} (got {n})"
                )));
            }
            if n > hi {
                return Err(SchemaError::invalid(format!(
                    "{name} must be less than or equal to {hi} (got {n})"
                )));
            }
            Ok(n.to_string())
        };
        let json = |m: &BTreeMap<String, String>| serde_json::to_string(m).unwrap_or_default();
        let value = match name {
            "gc_grace_seconds" => int_in(0, i64::from(i32::MAX))?,
            // Cassandra's cap: 20 years.
            "default_time_to_live" => int_in(0, 630_720_000)?,
            "comment" | "speculative_retry" => property_text(p)?,
            "bloom_filter_fp_chance" => {
                let t = property_text(p)?;
                let f: f64 = t.parse().map_err(|_| {
                    SchemaError::invalid(format!("Invalid double value {t} for '{name}'"))
                })?;
                if !(f > 0.0 && f <= 1.0) {
                    return Err(SchemaError::invalid(format!(
                        "bloom_filter_fp_chance must be larger than 0 and less than or equal to 1.0 (got {f})"
                    )));
                }
                f.to_string()
            }
            "compaction" => {
                let mut m = property_map(p)?;
                let class = m.get("class").cloned().ok_or_else(|| {
                    SchemaError::invalid("Missing sub-option 'class' for the 'compaction' option.")
                })?;
                m.insert(
                    "class".into(),
                    canonical_class(&class, "org.apache.cassandra.db.compaction"),
                );
                // Refuses an unknown strategy or option, or a bad value,
                // with Cassandra's message.
                gyre_storage::CompactionOptions::from_cql(&m).map_err(SchemaError::invalid)?;
                json(&m)
            }
            "compression" => {
                let mut m = property_map(p)?;
                let disabled = m.is_empty()
                    || m.get("enabled")
                        .is_some_and(|v| v.eq_ignore_ascii_case("false"));
                if disabled {
                    // Cassandra: `{}` and `{'enabled': 'false'}` turn
                    // compression off, stored and described as the latter.
                    if m.len() > 1 {
                        return Err(SchemaError::invalid(
                            "If the 'enabled' option is set to false no other options must be specified",
                        ));
                    }
                    m = BTreeMap::from([("enabled".to_owned(), "false".to_owned())]);
                } else if let Some(class) = m.get("class").cloned() {
                    m.insert(
                        "class".into(),
                        canonical_class(&class, "org.apache.cassandra.io.compress"),
                    );
                } else {
                    return Err(SchemaError::invalid(
                        "Missing sub-option 'class' for the 'compression' option.",
                    ));
                }
                json(&m)
            }
            "caching" => json(&property_map(p)?),
            other if OTHER_OPTIONS.contains(&other) => match &p.value {
                PropertyValue::Map(_) => json(&property_map(p)?),
                _ => property_text(p)?,
            },
            other => return Err(SchemaError::invalid(format!("Unknown property '{other}'"))),
        };
        o.insert(name.to_owned(), value);
    }
    Ok(o)
}

fn table_from_create(ct: &gyre_cql::CreateTable, ks: &str, schema: &Schema) -> Result<TableDef> {
    check_name("Table", &ct.name.name)?;
    if ct.options.compact_storage {
        return Err(SchemaError::invalid(
            "Compact tables are not allowed in Cassandra starting with 4.0 version.",
        ));
    }
    let mut options = TableOptions::default();
    for (name, value) in table_option_cells(&ct.options.properties)? {
        options.set_cell(&name, &value)?;
    }
    let mut seen = std::collections::BTreeSet::new();
    for c in &ct.columns {
        if !seen.insert(c.name.as_str()) {
            return Err(SchemaError::invalid(format!(
                "Multiple definition of identifier {}",
                c.name
            )));
        }
    }
    if ct.partition_key.is_empty() {
        return Err(SchemaError::invalid(format!(
            "No PRIMARY KEY specifed for table '{}' (exactly one required)",
            ct.name.name
        )));
    }
    let mut key_seen = std::collections::BTreeSet::new();
    for k in ct.partition_key.iter().chain(&ct.clustering_columns) {
        if !seen.contains(k.as_str()) {
            return Err(SchemaError::invalid(format!(
                "Unknown definition {k} referenced in PRIMARY KEY"
            )));
        }
        if !key_seen.insert(k.as_str()) {
            return Err(SchemaError::invalid(format!(
                "Multiple definition of identifier {k}"
            )));
        }
    }
    // CLUSTERING ORDER must name clustering columns, in their order.
    let order = &ct.options.clustering_order;
    for (name, _) in order {
        if !ct.clustering_columns.contains(name) {
            return Err(SchemaError::invalid(format!(
                "Only clustering key columns can be defined in CLUSTERING ORDER directive: {name} is not a clustering column"
            )));
        }
    }
    if !order.is_empty() {
        let named: Vec<&String> = order.iter().map(|(n, _)| n).collect();
        let expected: Vec<&String> = ct.clustering_columns.iter().take(named.len()).collect();
        if named != expected {
            return Err(SchemaError::invalid(
                "The order of columns in the CLUSTERING ORDER directive must match that of the clustering columns",
            ));
        }
    }
    let mut columns = Vec::new();
    for c in &ct.columns {
        let kind = if let Some(p) = ct.partition_key.iter().position(|k| k == &c.name) {
            ColumnKind::PartitionKey(p as u32)
        } else if let Some(p) = ct.clustering_columns.iter().position(|k| k == &c.name) {
            let o =
                order
                    .iter()
                    .find(|(n, _)| n == &c.name)
                    .map_or(ClusteringOrder::Asc, |(_, o)| match o {
                        Order::Asc => ClusteringOrder::Asc,
                        Order::Desc => ClusteringOrder::Desc,
                    });
            ColumnKind::Clustering(p as u32, o)
        } else if c.is_static {
            ColumnKind::Static
        } else {
            ColumnKind::Regular
        };
        if c.is_static && kind.is_primary_key() {
            return Err(SchemaError::invalid(format!(
                "Static column {} cannot be part of the PRIMARY KEY",
                c.name
            )));
        }
        columns.push(ColumnDef {
            name: c.name.clone(),
            ty: schema.resolve_type(ks, &c.ty)?,
            kind,
        });
    }
    let mut def = TableDef {
        keyspace: ks.to_owned(),
        name: ct.name.name.clone(),
        id: TableId::random(),
        columns,
        options,
        dropped_columns: BTreeMap::new(),
        indexes: Vec::new(),
    };
    def.sort_columns();
    def.validate()?;
    Ok(def)
}

fn alteration(
    def: &TableDef,
    action: &AlterTableAction,
    schema: &Schema,
) -> Result<Option<TableAlteration>> {
    Ok(Some(match action {
        AlterTableAction::Add {
            if_not_exists,
            columns,
        } => {
            let mut add = Vec::new();
            for c in columns {
                if def.column(&c.name).is_some() || add.iter().any(|a: &ColumnDef| a.name == c.name)
                {
                    if *if_not_exists {
                        continue;
                    }
                    return Err(SchemaError::invalid(format!(
                        "Invalid column name {} because it conflicts with an existing column",
                        c.name
                    )));
                }
                if c.is_static && def.clustering().is_empty() {
                    return Err(SchemaError::invalid(
                        "Static columns are only useful (and thus allowed) if the table has at least one clustering column",
                    ));
                }
                if def.columns.iter().any(|c| !c.kind.is_primary_key()) {
                    let counter = c.ty == gyre_cql::CqlType::Counter;
                    if def.is_counter() && !counter {
                        return Err(SchemaError::invalid(format!(
                            "Cannot add a non counter column ({}) in a counter column family",
                            c.name
                        )));
                    }
                    if !def.is_counter() && counter {
                        return Err(SchemaError::invalid(format!(
                            "Cannot add a counter column ({}) in a non counter column family",
                            c.name
                        )));
                    }
                }
                add.push(ColumnDef {
                    name: c.name.clone(),
                    ty: schema.resolve_type(&def.keyspace, &c.ty)?,
                    kind: if c.is_static {
                        ColumnKind::Static
                    } else {
                        ColumnKind::Regular
                    },
                });
            }
            if add.is_empty() {
                return Ok(None);
            }
            TableAlteration::AddColumns(add)
        }
        AlterTableAction::Drop {
            if_exists,
            columns,
            timestamp,
        } => {
            if timestamp.is_some() {
                return Err(SchemaError::invalid(
                    "ALTER TABLE DROP ... USING TIMESTAMP is not supported yet",
                ));
            }
            let mut drop = Vec::new();
            for n in columns {
                match def.column(n) {
                    None if *if_exists => continue,
                    None => {
                        return Err(SchemaError::invalid(format!(
                            "Column {n} was not found in table {}",
                            def.name
                        )))
                    }
                    Some(c) if c.kind.is_primary_key() => {
                        return Err(SchemaError::invalid(format!(
                            "Cannot drop PRIMARY KEY column {n}"
                        )))
                    }
                    Some(_) => drop.push(n.clone()),
                }
            }
            if drop.is_empty() {
                return Ok(None);
            }
            TableAlteration::DropColumns(drop)
        }
        AlterTableAction::Rename { if_exists, renames } => {
            let mut out = Vec::new();
            for (from, to) in renames {
                match def.column(from) {
                    None if *if_exists => continue,
                    None => {
                        return Err(SchemaError::invalid(format!(
                            "Cannot rename unknown column {from} in table {}.{}",
                            def.keyspace, def.name
                        )))
                    }
                    Some(c) if !c.kind.is_primary_key() => {
                        return Err(SchemaError::invalid(format!(
                            "Cannot rename non PRIMARY KEY column {from}"
                        )))
                    }
                    Some(_) => out.push((from.clone(), to.clone())),
                }
            }
            if out.is_empty() {
                return Ok(None);
            }
            TableAlteration::RenameColumns(out)
        }
        AlterTableAction::AlterType { .. } => {
            return Err(SchemaError::invalid(
                "Altering column types is no longer supported",
            ))
        }
        AlterTableAction::With(props) => TableAlteration::SetOptions(table_option_cells(props)?),
    }))
}
