//! Consistency levels and the `[option]` type descriptions of column specs.

use bytes::{BufMut, BytesMut};

use crate::error::{Error, Result};
use crate::frame::ProtocolVersion;
use crate::wire::{put_string, Reader};

/// A `[consistency]` level (spec section 3): the one type every layer
/// uses, from `gyre-common`.
pub use gyre_common::Consistency;

/// Reads a `[consistency]`.
pub(crate) fn read_consistency(r: &mut Reader) -> Result<Consistency> {
    let code = r.u16()?;
    Consistency::from_code(code)
        .ok_or_else(|| Error::protocol(format!("unknown consistency level 0x{code:04x}")))
}

/// Writes a `[consistency]`.
pub(crate) fn write_consistency(c: Consistency, dst: &mut BytesMut) {
    dst.put_u16(c.code());
}

/// Class name under which protocol v4 carries `duration` (it has no native
/// id before v5, so Cassandra sends it as a custom type).
pub const DURATION_CLASS: &str = "org.apache.cassandra.db.marshal.DurationType";

/// Class names under which protocol v3 carries the types v4 added.
const V3_CLASSES: [(&str, u16); 4] = [
    ("org.apache.cassandra.db.marshal.SimpleDateType", 0x0011),
    ("org.apache.cassandra.db.marshal.TimeType", 0x0012),
    ("org.apache.cassandra.db.marshal.ShortType", 0x0013),
    ("org.apache.cassandra.db.marshal.ByteType", 0x0014),
];

/// Nesting limit for decoded type options: deeper input is rejected rather
/// than recursing towards a stack overflow (the parser's limit too).
const MAX_TYPE_DEPTH: usize = gyre_common::MAX_TYPE_NESTING;

/// A column or bind-marker type: the `[option]` of a column spec.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ColumnType {
    /// 0x0000 with a Java class name.
    Custom(String),
    Ascii,
    Bigint,
    Blob,
    Boolean,
    Counter,
    Decimal,
    Double,
    Float,
    Int,
    Timestamp,
    Uuid,
    /// `text` and `varchar` are the same type (0x000D).
    Varchar,
    Varint,
    Timeuuid,
    Inet,
    Date,
    Time,
    Smallint,
    Tinyint,
    /// Sent before v5 as [`ColumnType::Custom`] with [`DURATION_CLASS`],
    /// in v5 as its native id.
    Duration,
    List(Box<ColumnType>),
    Map(Box<ColumnType>, Box<ColumnType>),
    Set(Box<ColumnType>),
    Udt {
        keyspace: String,
        name: String,
        fields: Vec<(String, ColumnType)>,
    },
    Tuple(Vec<ColumnType>),
    /// Cassandra 5's `vector<T, n>`: carried as the custom type
    /// [`VECTOR_CLASS`]`(element class, n)`, the only form drivers know.
    Vector(Box<ColumnType>, u32),
}

/// Class name of Cassandra 5's vector type.
pub const VECTOR_CLASS: &str = "org.apache.cassandra.db.marshal.VectorType";

const MARSHAL: &str = "org.apache.cassandra.db.marshal.";

/// Marshal class names of the types without parameters.
const SIMPLE_CLASSES: [(&str, ColumnType); 21] = [
    ("AsciiType", ColumnType::Ascii),
    ("LongType", ColumnType::Bigint),
    ("BytesType", ColumnType::Blob),
    ("BooleanType", ColumnType::Boolean),
    ("CounterColumnType", ColumnType::Counter),
    ("DecimalType", ColumnType::Decimal),
    ("DoubleType", ColumnType::Double),
    ("FloatType", ColumnType::Float),
    ("Int32Type", ColumnType::Int),
    ("TimestampType", ColumnType::Timestamp),
    ("UUIDType", ColumnType::Uuid),
    ("UTF8Type", ColumnType::Varchar),
    ("IntegerType", ColumnType::Varint),
    ("TimeUUIDType", ColumnType::Timeuuid),
    ("InetAddressType", ColumnType::Inet),
    ("SimpleDateType", ColumnType::Date),
    ("TimeType", ColumnType::Time),
    ("ShortType", ColumnType::Smallint),
    ("ByteType", ColumnType::Tinyint),
    ("DurationType", ColumnType::Duration),
    // Cassandra's legacy name for timestamp.
    ("DateType", ColumnType::Timestamp),
];

impl ColumnType {
    /// The serialized size when every value of the type has the same
    /// length (Cassandra's `valueLengthIfFixed`, as the drivers' vector
    /// codecs assume): such vector elements carry no length prefix.
    pub fn fixed_size(&self) -> Option<usize> {
        match self {
            ColumnType::Boolean => Some(1),
            ColumnType::Int | ColumnType::Float => Some(4),
            ColumnType::Bigint
            | ColumnType::Counter
            | ColumnType::Double
            | ColumnType::Timestamp => Some(8),
            ColumnType::Uuid | ColumnType::Timeuuid => Some(16),
            ColumnType::Vector(t, n) => t
                .fixed_size()
                .and_then(|s| s.checked_mul(usize::try_from(*n).ok()?)),
            _ => None,
        }
    }

    /// Cassandra's marshal class string for the type, e.g.
    /// `org.apache.cassandra.db.marshal.VectorType(org.apache.cassandra.db.marshal.FloatType, 3)`.
    pub fn class_name(&self) -> String {
        let list = |ts: &[&ColumnType]| {
            ts.iter()
                .map(|t| t.class_name())
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            ColumnType::Custom(class) => class.clone(),
            ColumnType::List(t) => format!("{MARSHAL}ListType({})", t.class_name()),
            ColumnType::Set(t) => format!("{MARSHAL}SetType({})", t.class_name()),
            ColumnType::Map(k, v) => format!("{MARSHAL}MapType({})", list(&[k, v])),
            ColumnType::Tuple(ts) => {
                format!(
                    "{MARSHAL}TupleType({})",
                    list(&ts.iter().collect::<Vec<_>>())
                )
            }
            ColumnType::Udt {
                keyspace,
                name,
                fields,
            } => {
                // UserType(keyspace,hex(name),hex(field):class,...).
                let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
                let mut out = format!("{MARSHAL}UserType({keyspace},{}", hex(name));
                for (f, t) in fields {
                    out.push_str(&format!(",{}:{}", hex(f), t.class_name()));
                }
                out.push(')');
                out
            }
            // The element is frozen, which Cassandra spells out for the
            // types that could otherwise be multi-cell.
            ColumnType::Vector(t, n) => match **t {
                ColumnType::List(_)
                | ColumnType::Set(_)
                | ColumnType::Map(..)
                | ColumnType::Udt { .. } => {
                    format!(
                        "{VECTOR_CLASS}({MARSHAL}FrozenType({}), {n})",
                        t.class_name()
                    )
                }
                _ => format!("{VECTOR_CLASS}({}, {n})", t.class_name()),
            },
            simple => SIMPLE_CLASSES
                .iter()
                .find(|(_, t)| t == simple)
                .map(|(c, _)| format!("{MARSHAL}{c}"))
                .unwrap_or_default(),
        }
    }

    /// Parses a marshal class string back into a type (`None` when it is
    /// not one Gyre knows, so the caller keeps it as [`ColumnType::Custom`]).
    fn from_class(class: &str, depth: usize) -> Option<ColumnType> {
        if depth > MAX_TYPE_DEPTH {
            return None;
        }
        let class = class.trim();
        let (name, params) = match class.find('(') {
            Some(i) => (&class[..i], Some(class[i + 1..].strip_suffix(')')?)),
            None => (class, None),
        };
        let name = name.strip_prefix(MARSHAL).unwrap_or(name);
        let d = depth + 1;
        let Some(params) = params else {
            return SIMPLE_CLASSES
                .iter()
                .find(|(c, _)| *c == name)
                .map(|(_, t)| t.clone());
        };
        let args = split_params(params);
        let arg = |i: usize| -> Option<ColumnType> { Self::from_class(args.get(i)?, d) };
        Some(match (name, args.len()) {
            ("FrozenType", 1) => arg(0)?,
            ("ListType", 1) => ColumnType::List(Box::new(arg(0)?)),
            ("SetType", 1) => ColumnType::Set(Box::new(arg(0)?)),
            ("MapType", 2) => ColumnType::Map(Box::new(arg(0)?), Box::new(arg(1)?)),
            ("TupleType", _) => ColumnType::Tuple(
                args.iter()
                    .map(|a| Self::from_class(a, d))
                    .collect::<Option<_>>()?,
            ),
            ("VectorType", 2) => {
                ColumnType::Vector(Box::new(arg(0)?), args[1].trim().parse().ok()?)
            }
            _ => return None,
        })
    }

    pub(crate) fn read(r: &mut Reader) -> Result<Self> {
        Self::read_depth(r, 0)
    }

    fn read_depth(r: &mut Reader, depth: usize) -> Result<Self> {
        if depth > MAX_TYPE_DEPTH {
            return Err(Error::protocol("type option nested too deeply"));
        }
        let id = r.u16()?;
        let d = depth + 1;
        Ok(match id {
            0x0000 => {
                let class = r.string()?;
                match V3_CLASSES.iter().find(|(c, _)| *c == class) {
                    _ if class == DURATION_CLASS => ColumnType::Duration,
                    Some((_, 0x0011)) => ColumnType::Date,
                    Some((_, 0x0012)) => ColumnType::Time,
                    Some((_, 0x0013)) => ColumnType::Smallint,
                    Some(_) => ColumnType::Tinyint,
                    None if class.starts_with(VECTOR_CLASS) => {
                        Self::from_class(&class, depth).unwrap_or(ColumnType::Custom(class))
                    }
                    None => ColumnType::Custom(class),
                }
            }
            0x0001 => ColumnType::Ascii,
            0x0002 => ColumnType::Bigint,
            0x0003 => ColumnType::Blob,
            0x0004 => ColumnType::Boolean,
            0x0005 => ColumnType::Counter,
            0x0006 => ColumnType::Decimal,
            0x0007 => ColumnType::Double,
            0x0008 => ColumnType::Float,
            0x0009 => ColumnType::Int,
            // 0x000A was `text` in v1; clients still understand it as varchar.
            0x000A | 0x000D => ColumnType::Varchar,
            0x000B => ColumnType::Timestamp,
            0x000C => ColumnType::Uuid,
            0x000E => ColumnType::Varint,
            0x000F => ColumnType::Timeuuid,
            0x0010 => ColumnType::Inet,
            0x0011 => ColumnType::Date,
            0x0012 => ColumnType::Time,
            0x0013 => ColumnType::Smallint,
            0x0014 => ColumnType::Tinyint,
            // v5's native duration id.
            0x0015 => ColumnType::Duration,
            0x0020 => ColumnType::List(Box::new(Self::read_depth(r, d)?)),
            0x0021 => {
                let k = Self::read_depth(r, d)?;
                let v = Self::read_depth(r, d)?;
                ColumnType::Map(Box::new(k), Box::new(v))
            }
            0x0022 => ColumnType::Set(Box::new(Self::read_depth(r, d)?)),
            0x0030 => {
                let keyspace = r.string()?;
                let name = r.string()?;
                let n = r.count_u16(4, "UDT field count")?;
                let mut fields = Vec::with_capacity(n);
                for _ in 0..n {
                    let fname = r.string()?;
                    fields.push((fname, Self::read_depth(r, d)?));
                }
                ColumnType::Udt {
                    keyspace,
                    name,
                    fields,
                }
            }
            0x0031 => {
                let n = r.count_u16(2, "tuple arity")?;
                let mut types = Vec::with_capacity(n);
                for _ in 0..n {
                    types.push(Self::read_depth(r, d)?);
                }
                ColumnType::Tuple(types)
            }
            other => {
                return Err(Error::protocol(format!(
                    "unknown type option id 0x{other:04x}"
                )))
            }
        })
    }

    /// Writes the type option as `version` has it.
    pub(crate) fn write_versioned(&self, dst: &mut BytesMut, version: ProtocolVersion) {
        let v3_id = match self {
            ColumnType::Date => Some(0x0011),
            ColumnType::Time => Some(0x0012),
            ColumnType::Smallint => Some(0x0013),
            ColumnType::Tinyint => Some(0x0014),
            _ => None,
        };
        if let (true, Some(id)) = (version.is_v3(), v3_id) {
            if let Some((class, _)) = V3_CLASSES.iter().find(|(_, i)| *i == id) {
                dst.put_u16(0x0000);
                put_string(dst, class);
                return;
            }
        }
        match self {
            ColumnType::Duration if version.is_v5() => dst.put_u16(0x0015),
            ColumnType::Custom(class) => {
                dst.put_u16(0x0000);
                put_string(dst, class);
            }
            ColumnType::Ascii => dst.put_u16(0x0001),
            ColumnType::Bigint => dst.put_u16(0x0002),
            ColumnType::Blob => dst.put_u16(0x0003),
            ColumnType::Boolean => dst.put_u16(0x0004),
            ColumnType::Counter => dst.put_u16(0x0005),
            ColumnType::Decimal => dst.put_u16(0x0006),
            ColumnType::Double => dst.put_u16(0x0007),
            ColumnType::Float => dst.put_u16(0x0008),
            ColumnType::Int => dst.put_u16(0x0009),
            ColumnType::Timestamp => dst.put_u16(0x000B),
            ColumnType::Uuid => dst.put_u16(0x000C),
            ColumnType::Varchar => dst.put_u16(0x000D),
            ColumnType::Varint => dst.put_u16(0x000E),
            ColumnType::Timeuuid => dst.put_u16(0x000F),
            ColumnType::Inet => dst.put_u16(0x0010),
            ColumnType::Date => dst.put_u16(0x0011),
            ColumnType::Time => dst.put_u16(0x0012),
            ColumnType::Smallint => dst.put_u16(0x0013),
            ColumnType::Tinyint => dst.put_u16(0x0014),
            ColumnType::Duration => {
                dst.put_u16(0x0000);
                put_string(dst, DURATION_CLASS);
            }
            ColumnType::Vector(..) => {
                dst.put_u16(0x0000);
                put_string(dst, &self.class_name());
            }
            ColumnType::List(t) => {
                dst.put_u16(0x0020);
                t.write_versioned(dst, version);
            }
            ColumnType::Map(k, v) => {
                dst.put_u16(0x0021);
                k.write_versioned(dst, version);
                v.write_versioned(dst, version);
            }
            ColumnType::Set(t) => {
                dst.put_u16(0x0022);
                t.write_versioned(dst, version);
            }
            ColumnType::Udt {
                keyspace,
                name,
                fields,
            } => {
                dst.put_u16(0x0030);
                put_string(dst, keyspace);
                put_string(dst, name);
                let n = fields.len().min(usize::from(u16::MAX));
                dst.put_u16(n as u16);
                for (fname, t) in &fields[..n] {
                    put_string(dst, fname);
                    t.write_versioned(dst, version);
                }
            }
            ColumnType::Tuple(types) => {
                dst.put_u16(0x0031);
                let n = types.len().min(usize::from(u16::MAX));
                dst.put_u16(n as u16);
                for t in &types[..n] {
                    t.write_versioned(dst, version);
                }
            }
        }
    }
}

/// Splits `a,b(c,d),e` at its top-level commas.
fn split_params(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut level, mut start) = (0usize, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => level += 1,
            ')' => level = level.saturating_sub(1),
            ',' if level == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// One column of a result set, or one bind marker of a prepared statement.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ColumnSpec {
    pub keyspace: String,
    pub table: String,
    pub name: String,
    pub typ: ColumnType,
}

impl ColumnSpec {
    pub fn new(
        keyspace: impl Into<String>,
        table: impl Into<String>,
        name: impl Into<String>,
        typ: ColumnType,
    ) -> Self {
        ColumnSpec {
            keyspace: keyspace.into(),
            table: table.into(),
            name: name.into(),
            typ,
        }
    }
}

/// Reads `<global_table_spec>?<col_spec_1>...<col_spec_n>` given the flags.
pub(crate) fn read_col_specs(r: &mut Reader, global: bool, n: usize) -> Result<Vec<ColumnSpec>> {
    let table_spec = if global {
        Some((r.string()?, r.string()?))
    } else {
        None
    };
    let mut cols = Vec::with_capacity(n);
    for _ in 0..n {
        let (keyspace, table) = match &table_spec {
            Some((k, t)) => (k.clone(), t.clone()),
            None => (r.string()?, r.string()?),
        };
        let name = r.string()?;
        let typ = ColumnType::read(r)?;
        cols.push(ColumnSpec {
            keyspace,
            table,
            name,
            typ,
        });
    }
    Ok(cols)
}

/// True when every column shares one keyspace and table, so the compact
/// global-table-spec form can be used.
pub(crate) fn has_global_spec(cols: &[ColumnSpec]) -> bool {
    match cols.first() {
        Some(first) => cols
            .iter()
            .all(|c| c.keyspace == first.keyspace && c.table == first.table),
        None => false,
    }
}

pub(crate) fn write_col_specs(
    dst: &mut BytesMut,
    global: bool,
    cols: &[ColumnSpec],
    version: ProtocolVersion,
) {
    if global {
        if let Some(first) = cols.first() {
            put_string(dst, &first.keyspace);
            put_string(dst, &first.table);
        }
    }
    for c in cols {
        if !global {
            put_string(dst, &c.keyspace);
            put_string(dst, &c.table);
        }
        put_string(dst, &c.name);
        c.typ.write_versioned(dst, version);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn consistency_codes_round_trip() {
        for c in Consistency::ALL_LEVELS {
            assert_eq!(Consistency::from_code(c.code()).unwrap(), c);
        }
        assert!(Consistency::from_code(0x000B).is_none());
        assert_eq!(Consistency::LocalOne.code(), 0x000A);
    }

    #[test]
    fn nested_type_round_trip() {
        let t = ColumnType::Map(
            Box::new(ColumnType::Varchar),
            Box::new(ColumnType::List(Box::new(ColumnType::Tuple(vec![
                ColumnType::Int,
                ColumnType::Duration,
                ColumnType::Udt {
                    keyspace: "ks".into(),
                    name: "addr".into(),
                    fields: vec![("street".into(), ColumnType::Varchar)],
                },
            ])))),
        );
        for version in [
            ProtocolVersion::V3,
            ProtocolVersion::V4,
            ProtocolVersion::V5,
        ] {
            let mut b = BytesMut::new();
            t.write_versioned(&mut b, version);
            assert_eq!(&b[..4], &[0x00, 0x21, 0x00, 0x0D]);
            assert_eq!(ColumnType::read(&mut Reader::new(b.freeze())).unwrap(), t);
        }
        // v3 carries v4's types as custom class names, v5 duration natively.
        let mut b = BytesMut::new();
        ColumnType::Smallint.write_versioned(&mut b, ProtocolVersion::V3);
        assert_eq!(&b[..2], &[0, 0]);
        assert!(b.ends_with(b"org.apache.cassandra.db.marshal.ShortType"));
        let mut b = BytesMut::new();
        ColumnType::Duration.write_versioned(&mut b, ProtocolVersion::V5);
        assert_eq!(&b[..], &[0x00, 0x15]);
        let mut b = BytesMut::new();
        ColumnType::Duration.write_versioned(&mut b, ProtocolVersion::V4);
        assert!(b.ends_with(DURATION_CLASS.as_bytes()));
    }

    #[test]
    fn vectors_are_custom_vector_type_classes() {
        let t = ColumnType::Vector(Box::new(ColumnType::Int), 3);
        let class = "org.apache.cassandra.db.marshal.VectorType(org.apache.cassandra.db.marshal.Int32Type, 3)";
        assert_eq!(t.class_name(), class);
        let nested = ColumnType::Vector(
            Box::new(ColumnType::Map(
                Box::new(ColumnType::Varchar),
                Box::new(ColumnType::List(Box::new(ColumnType::Float))),
            )),
            2,
        );
        for version in [
            ProtocolVersion::V3,
            ProtocolVersion::V4,
            ProtocolVersion::V5,
        ] {
            for t in [&t, &nested] {
                let mut b = BytesMut::new();
                t.write_versioned(&mut b, version);
                assert_eq!(&b[..2], &[0, 0]);
                assert_eq!(ColumnType::read(&mut Reader::new(b.freeze())).unwrap(), *t);
            }
        }
        let mut b = BytesMut::new();
        t.write_versioned(&mut b, ProtocolVersion::V4);
        assert!(b.ends_with(class.as_bytes()));
        // Collection elements are frozen, as Cassandra names them.
        assert_eq!(
            ColumnType::Vector(Box::new(ColumnType::List(Box::new(ColumnType::Int))), 2).class_name(),
            "org.apache.cassandra.db.marshal.VectorType(org.apache.cassandra.db.marshal.FrozenType(org.apache.cassandra.db.marshal.ListType(org.apache.cassandra.db.marshal.Int32Type)), 2)"
        );
        // Frozen wrappers are dropped; unknown classes stay custom.
        assert_eq!(
            ColumnType::from_class(
                "org.apache.cassandra.db.marshal.VectorType(org.apache.cassandra.db.marshal.FrozenType(org.apache.cassandra.db.marshal.SetType(org.apache.cassandra.db.marshal.UUIDType)),4)",
                0
            ),
            Some(ColumnType::Vector(Box::new(ColumnType::Set(Box::new(ColumnType::Uuid))), 4))
        );
        assert_eq!(ColumnType::from_class("com.example.Nope(1, 2)", 0), None);
        assert_eq!(t.fixed_size(), Some(12));
        assert_eq!(nested.fixed_size(), None);
        assert_eq!(ColumnType::Smallint.fixed_size(), None);
    }

    #[test]
    fn deep_nesting_is_rejected() {
        let mut b = BytesMut::new();
        for _ in 0..10_000 {
            b.put_u16(0x0020);
        }
        b.put_u16(0x0009);
        assert!(ColumnType::read(&mut Reader::new(b.freeze())).is_err());
    }
}
