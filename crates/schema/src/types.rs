//! User-defined types: resolving type names against a keyspace's types,
//! and Cassandra's rules for CREATE / ALTER / DROP TYPE and for where a
//! user type may appear.
//!
//! Types are stored as `RowKey::Type` rows (field names and field types as
//! JSON lists of text, like `system_schema.types`) and resolved when the
//! schema is derived: every `CqlType::Udt(name)` in a table's columns or
//! another type's fields becomes a [`CqlType::UserType`] carrying the
//! fields, so the query layer never looks a type up.

use std::collections::BTreeMap;
use std::sync::Arc;

use gyre_cql::{AlterTypeAction, CqlType, UserType};

use crate::error::{Result, SchemaError};

/// The user types of one keyspace, resolved, by name.
pub type KeyspaceTypes = BTreeMap<String, Arc<UserType>>;

/// Resolves the user type names in `ty` against the types of keyspace `ks`.
pub(crate) fn resolve(ty: &CqlType, ks: &str, types: &KeyspaceTypes) -> Result<CqlType> {
    let r = |t: &CqlType| resolve(t, ks, types).map(Box::new);
    Ok(match ty {
        CqlType::Udt(name) => {
            if let Some(other) = name.keyspace.as_deref().filter(|k| *k != ks) {
                return Err(SchemaError::invalid(format!(
                    "Statement on keyspace {ks} cannot refer to a user type in keyspace {other}; user types can only be used in the keyspace they are defined in"
                )));
            }
            let t = types
                .get(&name.name)
                .ok_or_else(|| SchemaError::invalid(format!("Unknown type {ks}.{}", name.name)))?;
            CqlType::UserType(t.clone())
        }
        CqlType::List(t) => CqlType::List(r(t)?),
        CqlType::Set(t) => CqlType::Set(r(t)?),
        CqlType::Frozen(t) => CqlType::Frozen(r(t)?),
        CqlType::Vector(t, n) => CqlType::Vector(r(t)?, *n),
        CqlType::Map(k, v) => CqlType::Map(r(k)?, r(v)?),
        CqlType::Tuple(ts) => CqlType::Tuple(
            ts.iter()
                .map(|t| resolve(t, ks, types))
                .collect::<Result<_>>()?,
        ),
        CqlType::Custom(class) => custom_type(class)?,
        other => other.clone(),
    })
}

const MARSHAL: &str = "org.apache.cassandra.db.marshal.";

/// A type given as a class name (`'org.apache.cassandra.db.marshal.X'`),
/// as Cassandra resolves it: a native type's class is that type (shown
/// as it afterwards); CompositeType, DynamicCompositeType and
/// LexicalUUIDType are kept as custom types whose values are opaque
/// bytes (blob literals, any bound bytes) under their fully qualified
/// class name, which result metadata carries; other classes are refused.
pub(crate) fn custom_type(class: &str) -> Result<CqlType> {
    // Fully qualified names, no spaces: how Cassandra prints the class.
    fn flush(token: &mut String, out: &mut String) {
        if !token.contains('.')
            && token.ends_with("Type")
            && token.starts_with(|c: char| c.is_ascii_uppercase())
        {
            out.push_str(MARSHAL);
        }
        out.push_str(token);
        token.clear();
    }
    let mut canonical = String::with_capacity(class.len() + MARSHAL.len());
    let mut token = String::new();
    for c in class.chars().filter(|c| !c.is_whitespace()) {
        if "(),=>:".contains(c) {
            flush(&mut token, &mut canonical);
            canonical.push(c);
        } else {
            token.push(c);
        }
    }
    flush(&mut token, &mut canonical);
    let base = canonical.split('(').next().unwrap_or_default();
    let Some(short) = base.strip_prefix(MARSHAL) else {
        return Err(SchemaError::invalid(format!(
            "Unable to find abstract-type class '{base}'"
        )));
    };
    let args = canonical.len() > base.len();
    let native = match short {
        "AsciiType" => CqlType::Ascii,
        "LongType" => CqlType::Bigint,
        "BytesType" => CqlType::Blob,
        "BooleanType" => CqlType::Boolean,
        "CounterColumnType" => CqlType::Counter,
        "SimpleDateType" => CqlType::Date,
        "DecimalType" => CqlType::Decimal,
        "DoubleType" => CqlType::Double,
        "DurationType" => CqlType::Duration,
        "FloatType" => CqlType::Float,
        "InetAddressType" => CqlType::Inet,
        "Int32Type" => CqlType::Int,
        "ShortType" => CqlType::Smallint,
        "UTF8Type" => CqlType::Text,
        "TimeType" => CqlType::Time,
        "TimestampType" => CqlType::Timestamp,
        "TimeUUIDType" => CqlType::Timeuuid,
        "ByteType" => CqlType::Tinyint,
        "UUIDType" => CqlType::Uuid,
        "IntegerType" => CqlType::Varint,
        "CompositeType" | "DynamicCompositeType" if args => {
            return Ok(CqlType::Custom(canonical));
        }
        "LexicalUUIDType" if !args => return Ok(CqlType::Custom(canonical)),
        _ => {
            return Err(SchemaError::invalid(format!(
                "Custom type {canonical} is not supported: give it as a CQL type \
                 (CompositeType, DynamicCompositeType and LexicalUUIDType are stored as blobs)"
            )))
        }
    };
    if args {
        return Err(SchemaError::invalid(format!(
            "Unable to find abstract-type class '{canonical}'"
        )));
    }
    Ok(native)
}

/// True when `ty` mentions the user type `name` (of its own keyspace),
/// at any depth, by name or resolved.
pub(crate) fn references(ty: &CqlType, name: &str) -> bool {
    match ty {
        CqlType::Udt(n) => n.name == name,
        CqlType::UserType(u) => u.name == name || u.fields.iter().any(|(_, t)| references(t, name)),
        CqlType::List(t) | CqlType::Set(t) | CqlType::Frozen(t) | CqlType::Vector(t, _) => {
            references(t, name)
        }
        CqlType::Map(k, v) => references(k, name) || references(v, name),
        CqlType::Tuple(ts) => ts.iter().any(|t| references(t, name)),
        _ => false,
    }
}

/// Cassandra's checks on a field type of a user type (CREATE TYPE and
/// ALTER TYPE ADD), before resolution.
fn check_field_type(ty: &CqlType) -> Result<()> {
    if *ty == CqlType::Counter {
        return Err(SchemaError::invalid("A user type cannot contain counters"));
    }
    if matches!(ty, CqlType::Udt(_)) {
        return Err(SchemaError::invalid(
            "A user type cannot contain non-frozen UDTs",
        ));
    }
    Ok(())
}

/// Most fields a type may have: a non-frozen value's cell path is the
/// field's position as a 16-bit number (a Java short in Cassandra).
pub const MAX_FIELDS: usize = i16::MAX as usize;

fn check_field_count(name: &str, n: usize) -> Result<()> {
    if n > MAX_FIELDS {
        return Err(SchemaError::invalid(format!(
            "User type {name} cannot have more than {MAX_FIELDS} fields (got {n})"
        )));
    }
    Ok(())
}

/// The fields of a new type, checked and resolved.
pub(crate) fn create_fields(
    ks: &str,
    name: &str,
    fields: &[(String, CqlType)],
    types: &KeyspaceTypes,
) -> Result<Vec<(String, CqlType)>> {
    crate::model::check_name("Type", name)?;
    if CqlType::native(name).is_some() {
        return Err(SchemaError::invalid(format!(
            "Cannot create a user type named after the native type {name}"
        )));
    }
    check_field_count(name, fields.len())?;
    let mut seen = std::collections::BTreeSet::new();
    for (f, _) in fields {
        if !seen.insert(f.as_str()) {
            return Err(SchemaError::invalid(format!(
                "Duplicate field name '{f}' in type '{name}'"
            )));
        }
    }
    fields
        .iter()
        .map(|(f, t)| {
            check_field_type(t)?;
            let t = resolve(t, ks, types)?;
            crate::model::check_type(&t, false, f)?;
            Ok((f.clone(), t))
        })
        .collect()
}

/// The fields of a type after an ALTER TYPE; `None` when `IF [NOT] EXISTS`
/// makes it a no-op.
pub(crate) fn alter_fields(
    ks: &str,
    current: &UserType,
    action: &AlterTypeAction,
    types: &KeyspaceTypes,
    tables_with_type_in_partition_key: &[String],
) -> Result<Option<Vec<(String, CqlType)>>> {
    let qualified = format!("{ks}.{}", current.name);
    let mut fields = current.fields.clone();
    match action {
        AlterTypeAction::Add {
            if_not_exists,
            field,
            ty,
        } => {
            check_field_type(ty)?;
            if current.field(field).is_some() {
                if *if_not_exists {
                    return Ok(None);
                }
                return Err(SchemaError::invalid(format!(
                    "Cannot add field {field} to type {qualified}: a field with name {field} already exists"
                )));
            }
            if references(ty, &current.name) {
                return Err(SchemaError::invalid(format!(
                    "Cannot add new field {field} of type {ty} to user type {qualified} as it would create a circular reference"
                )));
            }
            let resolved = resolve(ty, ks, types)?;
            if references(&resolved, &current.name) {
                return Err(SchemaError::invalid(format!(
                    "Cannot add new field {field} of type {ty} to user type {qualified} as it would create a circular reference"
                )));
            }
            if !tables_with_type_in_partition_key.is_empty() {
                return Err(SchemaError::invalid(format!(
                    "Cannot add new field {field} of type {ty} to user type {qualified} as the type is being used in partition key by the following tables: {}",
                    tables_with_type_in_partition_key.join(", ")
                )));
            }
            crate::model::check_type(&resolved, false, field)?;
            check_field_count(&qualified, fields.len() + 1)?;
            fields.push((field.clone(), resolved));
        }
        AlterTypeAction::Rename { if_exists, renames } => {
            for (from, to) in renames {
                match fields.iter_mut().find(|(n, _)| n == from) {
                    Some((n, _)) => *n = to.clone(),
                    None if *if_exists => {}
                    // Cassandra's wording, typo and all.
                    None => {
                        return Err(SchemaError::invalid(format!(
                            "Unkown field {from} in user type {ks}"
                        )))
                    }
                }
            }
            for (i, (n, _)) in fields.iter().enumerate() {
                if fields[..i].iter().any(|(m, _)| m == n) {
                    return Err(SchemaError::invalid(format!(
                        "Duplicate field name {n} in type {ks}"
                    )));
                }
            }
            if fields == current.fields {
                return Ok(None);
            }
        }
        AlterTypeAction::AlterField { .. } => {
            return Err(SchemaError::invalid(
                "Alterting field types is no longer supported",
            ))
        }
    }
    Ok(Some(fields))
}

/// Resolves raw type definitions (field types as parsed from their text)
/// into user types, each after the types it uses. Definitions that name
/// unknown types or form a cycle (only a confused peer could send them)
/// are skipped with a warning.
pub(crate) fn resolve_all(
    ks: &str,
    raw: &BTreeMap<String, Vec<(String, CqlType)>>,
) -> KeyspaceTypes {
    let mut done = KeyspaceTypes::new();
    loop {
        let mut progress = false;
        for (name, fields) in raw {
            if done.contains_key(name) {
                continue;
            }
            let ready = fields.iter().all(|(_, t)| {
                raw.keys()
                    .all(|other| !references(t, other) || done.contains_key(other))
            });
            if !ready {
                continue;
            }
            match fields
                .iter()
                .map(|(f, t)| Ok((f.clone(), resolve(t, ks, &done)?)))
                .collect::<Result<Vec<_>>>()
            {
                Ok(fields) => {
                    done.insert(
                        name.clone(),
                        Arc::new(UserType {
                            keyspace: ks.to_owned(),
                            name: name.clone(),
                            fields,
                        }),
                    );
                    progress = true;
                }
                Err(e) => {
                    tracing::warn!(keyspace = %ks, r#type = %name, error = %e, "skipping user type");
                }
            }
        }
        if !progress {
            break;
        }
    }
    for name in raw.keys().filter(|n| !done.contains_key(*n)) {
        tracing::warn!(keyspace = %ks, r#type = %name, "skipping user type with unresolvable fields");
    }
    done
}

/// The types of a keyspace in an order where each comes after the types
/// it uses (for DESCRIBE).
pub fn dependency_order(types: &KeyspaceTypes) -> Vec<Arc<UserType>> {
    let mut out: Vec<Arc<UserType>> = Vec::new();
    fn visit(t: &Arc<UserType>, types: &KeyspaceTypes, out: &mut Vec<Arc<UserType>>, depth: usize) {
        if depth > gyre_common::MAX_TYPE_NESTING || out.iter().any(|o| o.name == t.name) {
            return;
        }
        for other in types.values() {
            if other.name != t.name && t.fields.iter().any(|(_, ft)| references(ft, &other.name)) {
                visit(other, types, out, depth + 1);
            }
        }
        if !out.iter().any(|o| o.name == t.name) {
            out.push(t.clone());
        }
    }
    for t in types.values() {
        visit(t, types, &mut out, 0);
    }
    out
}

/// `CREATE TYPE ks.name (\n    f type,\n    ...\n);` as DESCRIBE prints it.
pub fn type_to_cql(t: &UserType) -> String {
    let q = gyre_cql::quote_identifier;
    let fields = t
        .fields
        .iter()
        .map(|(f, ty)| format!("    {} {ty}", q(f)))
        .collect::<Vec<_>>()
        .join(",\n");
    format!(
        "CREATE TYPE {}.{} (\n{fields}\n);",
        q(&t.keyspace),
        q(&t.name)
    )
}
