//! CQL values: column types for result metadata, literals and bound values
//! to wire bytes, checked against the column type.

use bytes::Bytes;
use gyre_cql::{CqlType, Literal, QualifiedName, Term};
use gyre_protocol::{
    date_from_days, ColumnType, CqlDecimal, CqlDuration, CqlValue, CqlVarint, Value,
};

use crate::error::{QueryError, Result};
use crate::functions;

/// The protocol type of a schema type (user types are resolved by the
/// schema; an unresolved name cannot reach here).
pub(crate) fn column_type(ty: &CqlType) -> ColumnType {
    match ty {
        CqlType::Ascii => ColumnType::Ascii,
        CqlType::Bigint => ColumnType::Bigint,
        CqlType::Blob => ColumnType::Blob,
        CqlType::Boolean => ColumnType::Boolean,
        CqlType::Counter => ColumnType::Counter,
        CqlType::Date => ColumnType::Date,
        CqlType::Decimal => ColumnType::Decimal,
        CqlType::Double => ColumnType::Double,
        CqlType::Duration => ColumnType::Duration,
        CqlType::Float => ColumnType::Float,
        CqlType::Inet => ColumnType::Inet,
        CqlType::Int => ColumnType::Int,
        CqlType::Smallint => ColumnType::Smallint,
        CqlType::Text => ColumnType::Varchar,
        CqlType::Time => ColumnType::Time,
        CqlType::Timestamp => ColumnType::Timestamp,
        CqlType::Timeuuid => ColumnType::Timeuuid,
        CqlType::Tinyint => ColumnType::Tinyint,
        CqlType::Uuid => ColumnType::Uuid,
        CqlType::Varint => ColumnType::Varint,
        CqlType::List(t) => ColumnType::List(Box::new(column_type(t))),
        CqlType::Set(t) => ColumnType::Set(Box::new(column_type(t))),
        CqlType::Map(k, v) => ColumnType::Map(Box::new(column_type(k)), Box::new(column_type(v))),
        CqlType::Tuple(ts) => ColumnType::Tuple(ts.iter().map(column_type).collect()),
        CqlType::Frozen(t) => column_type(t),
        CqlType::Vector(t, n) => ColumnType::Vector(Box::new(column_type(t)), *n),
        CqlType::UserType(u) => ColumnType::Udt {
            keyspace: u.keyspace.clone(),
            name: u.name.clone(),
            fields: u
                .fields
                .iter()
                .map(|(f, t)| (f.clone(), column_type(t)))
                .collect(),
        },
        CqlType::Custom(class) => ColumnType::Custom(class.clone()),
        CqlType::Udt(_) => ColumnType::Custom(format!("{ty:?}")),
    }
}

/// Strips `frozen<...>`.
pub(crate) fn unfrozen(ty: &CqlType) -> &CqlType {
    match ty {
        CqlType::Frozen(t) => unfrozen(t),
        t => t,
    }
}

/// True when `term` is a bind marker bound to "unset": a write leaves the
/// column alone (protocol v4).
pub(crate) fn is_unset(term: &Term, binds: &[Value]) -> bool {
    matches!(term, Term::Bind(m) if matches!(binds.get(m.index), Some(Value::Unset)))
}

/// A term's value for a column of type `ty` (`None` is null). Unset is an
/// error here: callers that allow it check [`is_unset`] first.
pub(crate) fn term_bytes(
    term: &Term,
    ty: &CqlType,
    column: &str,
    binds: &[Value],
) -> Result<Option<Bytes>> {
    match term {
        Term::Bind(m) => match binds.get(m.index) {
            None => Err(QueryError::invalid(format!(
                "There were {} markers(?) in CQL but {} bound variables",
                m.index + 1,
                binds.len()
            ))),
            Some(Value::Null) => Ok(None),
            Some(Value::Unset) => Err(QueryError::invalid(format!(
                "Invalid unset value for column {column}"
            ))),
            Some(Value::Bytes(b)) => {
                // Validate: the engine stores bytes blindly.
                CqlValue::validate(&column_type(ty), b).map_err(|e| {
                    QueryError::invalid(format!("Invalid value for column {column}: {e}"))
                })?;
                Ok(Some(b.clone()))
            }
        },
        Term::TypeHint { term, .. } => term_bytes(term, ty, column, binds),
        Term::Literal(Literal::Null) => Ok(None),
        Term::Function { name, args }
            if functions::function_name(name)? == "fromjson" && args.len() == 1 =>
        {
            // Typed by where it is used, so not a regular function.
            let Some(text) = term_bytes(&args[0], &CqlType::Text, column, binds)? else {
                return Ok(None);
            };
            let text = std::str::from_utf8(&text)
                .map_err(|_| QueryError::invalid("Invalid UTF-8 in fromJson() argument"))?;
            let term = crate::json::from_json(text, ty, column)?;
            term_bytes(&term, ty, column, &[])
        }
        Term::Function { name, args } => {
            let (ret, value) = call(name, args, binds)?;
            if !functions::assignable(ty, &ret) {
                return Err(QueryError::invalid(format!(
                    "Type error: cannot assign result of function system.{} (type {ret}) to {column} (type {ty})",
                    name.name
                )));
            }
            Ok(value)
        }
        _ => Ok(Some(term_value(term, ty, column, binds)?.encode())),
    }
}

/// Evaluates a native function call in a term: its result type and value.
pub(crate) fn call(
    name: &QualifiedName,
    args: &[Term],
    binds: &[Value],
) -> Result<(CqlType, Option<Bytes>)> {
    let f = resolve_call(name, args)?;
    let values = args
        .iter()
        .zip(&f.args)
        .map(|(a, ty)| term_bytes(a, ty, &format!("argument of {}", f.name), binds))
        .collect::<Result<Vec<_>>>()?;
    Ok((f.ret.clone(), f.apply(&values)?))
}

/// Resolves a function call in a term by the static types of its arguments.
pub(crate) fn resolve_call(name: &QualifiedName, args: &[Term]) -> Result<functions::Scalar> {
    let fname = functions::function_name(name)?;
    if functions::is_aggregate(fname) {
        return Err(QueryError::invalid(format!(
            "Aggregate function {fname} is only allowed in the selection of a SELECT"
        )));
    }
    // Nested calls first, so that their own errors show.
    for a in args {
        if let Term::Function { name, args } = a {
            resolve_call(name, args)?;
        }
    }
    functions::resolve(fname, args.len(), |i, ty| {
        args.get(i)
            .is_some_and(|a| functions::term_fits(a, ty).unwrap_or(false))
    })
}

fn bad(column: &str, ty: &CqlType, what: &str) -> QueryError {
    QueryError::invalid(format!(
        "Invalid {what} for column {column} of type {}",
        type_name(ty)
    ))
}

fn type_name(ty: &CqlType) -> String {
    ty.to_string()
}

/// A non-bind, non-null term as a typed value.
fn term_value(term: &Term, ty: &CqlType, column: &str, binds: &[Value]) -> Result<CqlValue> {
    let ty = unfrozen(ty);
    let elem = |t: &Term, et: &CqlType| -> Result<CqlValue> {
        match term_bytes(t, et, column, binds)? {
            Some(b) => CqlValue::decode(&column_type(et), &b)
                .map_err(|e| QueryError::invalid(format!("Invalid value for {column}: {e}"))),
            None => Err(QueryError::invalid(format!(
                "null is not supported inside collections ({column})"
            ))),
        }
    };
    match (term, ty) {
        (Term::Literal(l), _) => literal_value(l, ty, column),
        (Term::List(items), CqlType::List(et)) | (Term::Set(items), CqlType::List(et)) => Ok(
            CqlValue::List(items.iter().map(|t| elem(t, et)).collect::<Result<_>>()?),
        ),
        (Term::Set(items), CqlType::Set(et)) | (Term::List(items), CqlType::Set(et)) => {
            // Sets are stored sorted and de-duplicated by serialized form.
            let mut v: Vec<(Bytes, CqlValue)> = items
                .iter()
                .map(|t| elem(t, et).map(|v| (order_key(et, &v), v)))
                .collect::<Result<_>>()?;
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v.dedup_by(|a, b| a.0 == b.0);
            Ok(CqlValue::Set(v.into_iter().map(|(_, v)| v).collect()))
        }
        // `{}` parses as an empty map or set.
        (Term::Map(entries), CqlType::Set(_)) if entries.is_empty() => Ok(CqlValue::Set(vec![])),
        (Term::Map(entries), CqlType::Map(kt, vt)) => {
            let mut v: Vec<(Bytes, CqlValue, CqlValue)> = entries
                .iter()
                .map(|(k, v)| {
                    let k = elem(k, kt)?;
                    Ok((order_key(kt, &k), k, elem(v, vt)?))
                })
                .collect::<Result<_>>()?;
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v.dedup_by(|a, b| a.0 == b.0);
            Ok(CqlValue::Map(
                v.into_iter().map(|(_, k, v)| (k, v)).collect(),
            ))
        }
        (Term::Set(items), CqlType::Map(..)) if items.is_empty() => Ok(CqlValue::Map(vec![])),
        (Term::List(items), CqlType::Vector(et, n)) => {
            if items.len() != *n as usize {
                return Err(QueryError::invalid(format!(
                    "Invalid vector literal for {column} of type {ty}; expected {n} elements, but given {}",
                    items.len()
                )));
            }
            Ok(CqlValue::Vector(
                items.iter().map(|t| elem(t, et)).collect::<Result<_>>()?,
            ))
        }
        (Term::Tuple(items), CqlType::Tuple(types)) if items.len() <= types.len() => {
            let mut out = Vec::new();
            for (t, et) in items.iter().zip(types) {
                out.push(match term_bytes(t, et, column, binds)? {
                    Some(b) => Some(CqlValue::decode(&column_type(et), &b).map_err(|e| {
                        QueryError::invalid(format!("Invalid value for {column}: {e}"))
                    })?),
                    None => None,
                });
            }
            Ok(CqlValue::Tuple(out))
        }
        (Term::Udt(given), CqlType::UserType(u)) => {
            let mut out: Vec<(String, Option<CqlValue>)> =
                u.fields.iter().map(|(f, _)| (f.clone(), None)).collect();
            for (name, t) in given {
                let Some((i, ft)) = u.field(name) else {
                    return Err(QueryError::invalid(format!(
                        "Unknown field '{name}' in value of user defined type {}",
                        u.name
                    )));
                };
                out[i].1 = match term_bytes(t, ft, column, binds)? {
                    Some(b) => Some(CqlValue::decode(&column_type(ft), &b).map_err(|e| {
                        QueryError::invalid(format!("Invalid value for {column}: {e}"))
                    })?),
                    None => None,
                };
            }
            Ok(CqlValue::Udt(out))
        }
        _ => Err(bad(column, ty, "value")),
    }
}

/// Sets and maps are kept in their element type's order, which the
/// byte-comparable clustering encoding gives.
fn order_key(ty: &CqlType, v: &CqlValue) -> Bytes {
    let raw = v.encode();
    gyre_schema::encode_clustering(ty, &raw, gyre_schema::ClusteringOrder::Asc)
        .map_or(raw, Bytes::from)
}

fn literal_value(l: &Literal, ty: &CqlType, column: &str) -> Result<CqlValue> {
    let e = |what: &str| bad(column, ty, what);
    let int = |s: &str| s.parse::<i128>().map_err(|_| e("integer"));
    Ok(match (l, unfrozen(ty)) {
        (Literal::Integer(s), CqlType::Int) => {
            CqlValue::Int(i32::try_from(int(s)?).map_err(|_| e("int"))?)
        }
        (Literal::Integer(s), CqlType::Bigint) => {
            CqlValue::Bigint(i64::try_from(int(s)?).map_err(|_| e("bigint"))?)
        }
        (Literal::Integer(s), CqlType::Counter) => {
            CqlValue::Counter(i64::try_from(int(s)?).map_err(|_| e("counter"))?)
        }
        (Literal::Integer(s), CqlType::Smallint) => {
            CqlValue::Smallint(i16::try_from(int(s)?).map_err(|_| e("smallint"))?)
        }
        (Literal::Integer(s), CqlType::Tinyint) => {
            CqlValue::Tinyint(i8::try_from(int(s)?).map_err(|_| e("tinyint"))?)
        }
        (Literal::Integer(s), CqlType::Varint) => {
            CqlValue::Varint(varint_from_str(s).ok_or_else(|| e("varint"))?)
        }
        (Literal::Integer(s) | Literal::Float(s), CqlType::Double) => {
            CqlValue::Double(parse_float(s).ok_or_else(|| e("double"))?)
        }
        (Literal::Integer(s) | Literal::Float(s), CqlType::Float) => {
            CqlValue::Float(parse_float(s).ok_or_else(|| e("float"))? as f32)
        }
        (Literal::Integer(s) | Literal::Float(s), CqlType::Decimal) => {
            CqlValue::Decimal(parse_decimal(s).ok_or_else(|| e("decimal"))?)
        }
        (Literal::String(s), CqlType::Text) => CqlValue::Text(s.clone()),
        (Literal::String(s), CqlType::Ascii) if s.is_ascii() => CqlValue::Ascii(s.clone()),
        (Literal::Blob(b), CqlType::Blob) => CqlValue::Blob(Bytes::copy_from_slice(b)),
        // A class-name type's values are opaque bytes, given as blobs.
        (Literal::Blob(b), CqlType::Custom(_)) => CqlValue::Custom(Bytes::copy_from_slice(b)),
        (Literal::Bool(b), CqlType::Boolean) => CqlValue::Boolean(*b),
        (Literal::Uuid(u), CqlType::Uuid) => CqlValue::Uuid(uuid::Uuid::from_u128(*u)),
        (Literal::Uuid(u), CqlType::Timeuuid) => {
            let u = uuid::Uuid::from_u128(*u);
            if u.get_version_num() != 1 {
                return Err(e("timeuuid (not a version 1 uuid)"));
            }
            CqlValue::Timeuuid(u)
        }
        (Literal::Integer(s), CqlType::Timestamp) => {
            CqlValue::Timestamp(i64::try_from(int(s)?).map_err(|_| e("timestamp"))?)
        }
        // Cassandra reads a string of digits as milliseconds.
        (Literal::String(s), CqlType::Timestamp) if is_integer(s) => {
            CqlValue::Timestamp(s.parse().map_err(|_| e("timestamp string"))?)
        }
        (Literal::String(s), CqlType::Timestamp) => {
            CqlValue::Timestamp(parse_timestamp(s).ok_or_else(|| e("timestamp string"))?)
        }
        // ... and a date's digits as its raw value (days with the epoch at
        // 2^31), as SimpleDateSerializer does.
        (Literal::String(s), CqlType::Date) if is_integer(s) => {
            CqlValue::Date(s.parse::<u32>().map_err(|_| e("date string"))?)
        }
        (Literal::String(s), CqlType::Date) => {
            let days = parse_date(s).ok_or_else(|| e("date string"))?;
            CqlValue::Date(date_from_days(i32::try_from(days).map_err(|_| e("date"))?))
        }
        (Literal::Integer(s), CqlType::Date) => {
            CqlValue::Date(u32::try_from(int(s)?).map_err(|_| e("date"))?)
        }
        (Literal::String(s), CqlType::Time) => {
            CqlValue::Time(parse_time(s).ok_or_else(|| e("time string"))?)
        }
        (Literal::Integer(s), CqlType::Time) => {
            CqlValue::Time(i64::try_from(int(s)?).map_err(|_| e("time"))?)
        }
        (Literal::String(s), CqlType::Inet) => {
            CqlValue::Inet(s.parse().map_err(|_| e("inet string"))?)
        }
        (Literal::Duration(d), CqlType::Duration) => CqlValue::Duration(CqlDuration {
            months: d.months,
            days: d.days,
            nanos: d.nanos,
        }),
        _ => return Err(e("literal")),
    })
}

fn parse_float(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

/// `-12.50e3` as unscaled digits and a scale.
fn parse_decimal(s: &str) -> Option<CqlDecimal> {
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], s[i + 1..].parse::<i32>().ok()?),
        None => (s, 0),
    };
    let (int_part, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int_part}{frac}");
    let unscaled = varint_from_str(&digits)?;
    let scale = i32::try_from(frac.len()).ok()?.checked_sub(exp)?;
    Some(CqlDecimal { unscaled, scale })
}

/// Digits a varint (or a decimal's unscaled value) literal may have: far
/// beyond any real number, and bounding the quadratic conversion.
const MAX_VARINT_DIGITS: usize = 4096;

/// `[+-]digits` of any size as a varint (minimal two's complement, as
/// Java's BigInteger): Cassandra takes integers past 128 bits.
fn varint_from_str(s: &str) -> Option<CqlVarint> {
    if let Ok(v) = s.parse::<i128>() {
        return Some(CqlVarint::from_i128(v));
    }
    let (negative, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if digits.is_empty()
        || digits.len() > MAX_VARINT_DIGITS
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    // The magnitude, little-endian base 256.
    let mut bytes: Vec<u8> = vec![0];
    for d in digits.bytes() {
        let mut carry = u32::from(d - b'0');
        for byte in bytes.iter_mut() {
            let v = u32::from(*byte) * 10 + carry;
            *byte = (v & 0xff) as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            bytes.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    bytes.push(0); // room for the sign bit
    if negative {
        let mut carry = 1u16;
        for byte in bytes.iter_mut() {
            let v = u16::from(!*byte) + carry;
            *byte = (v & 0xff) as u8;
            carry = v >> 8;
        }
    }
    bytes.reverse();
    // Drop leading bytes that only extend the sign of the next one.
    let mut start = 0;
    while start + 1 < bytes.len()
        && ((bytes[start] == 0 && bytes[start + 1] & 0x80 == 0)
            || (bytes[start] == 0xff && bytes[start + 1] & 0x80 != 0))
    {
        start += 1;
    }
    Some(CqlVarint(Bytes::copy_from_slice(&bytes[start..])))
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `-?digits`: the numeric forms of timestamp and date strings.
fn is_integer(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `[+-]yyyy-mm-dd` (any number of year digits, as Cassandra's date range
/// needs: -5877641-06-23 to 5881580-07-11) as days since the epoch.
fn parse_date(s: &str) -> Option<i64> {
    let (sign, s) = match s.as_bytes().first() {
        Some(b'-') => (-1, &s[1..]),
        Some(b'+') => (1, &s[1..]),
        _ => (1, s),
    };
    let mut it = s.splitn(3, '-');
    let y: i64 = sign * it.next()?.parse::<i64>().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let d: u32 = it.next()?.parse().ok()?;
    // Bounded so the millisecond arithmetic cannot overflow.
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || !(-9_999_999..=9_999_999).contains(&y) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

/// `HH:MM[:SS[.fraction]]` as nanoseconds since midnight.
fn parse_time(s: &str) -> Option<i64> {
    let (hms, frac) = s.split_once('.').unwrap_or((s, ""));
    let mut it = hms.split(':');
    let h: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let sec: i64 = it.next().map_or(Some(0), |x| x.parse().ok())?;
    let digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
    if it.next().is_some()
        || !(0..=23).contains(&h)
        || !(0..=59).contains(&m)
        || !(0..=59).contains(&sec)
        || frac.len() > 9
        || !digits(frac)
    {
        return None;
    }
    let mut nanos = 0i64;
    if !frac.is_empty() {
        nanos = frac.parse::<i64>().ok()? * 10i64.pow(9 - frac.len() as u32);
    }
    Some(((h * 60 + m) * 60 + sec) * 1_000_000_000 + nanos)
}

/// Cassandra's timestamp strings: `yyyy-mm-dd[( |T)HH:MM[:SS[.fff]]][Z|±HH[:]MM]`,
/// as milliseconds since the epoch (UTC when no zone is given).
fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, rest) = match s.find([' ', 'T']) {
        Some(i) => (&s[..i], s[i + 1..].trim()),
        None => (s, ""),
    };
    let days = parse_date(date)?;
    let mut offset_ms = 0i64;
    let mut time = rest;
    if let Some(t) = rest.strip_suffix('Z') {
        time = t;
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let zone = rest[i + 1..].replace(':', "");
        if zone.len() != 4 || !zone.is_ascii() {
            return None;
        }
        let hh: i64 = zone[..2].parse().ok()?;
        let mm: i64 = zone[2..].parse().ok()?;
        let sign = if &rest[i..=i] == "-" { -1 } else { 1 };
        offset_ms = sign * (hh * 60 + mm) * 60_000;
        time = rest[..i].trim();
    }
    let nanos = if time.is_empty() {
        0
    } else {
        parse_time(time)?
    };
    Some(days * 86_400_000 + nanos / 1_000_000 - offset_ms)
}

/// Decodes an integer-valued term (TTL, timestamp, LIMIT). Null and unset
/// give `None`: the default (as Cassandra treats an unset TTL, timestamp or
/// LIMIT).
pub(crate) fn term_i64(term: &Term, what: &str, binds: &[Value]) -> Result<Option<i64>> {
    match term {
        Term::Literal(Literal::Integer(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| QueryError::invalid(format!("Invalid {what}: {s}"))),
        Term::Bind(m) => match binds.get(m.index) {
            Some(Value::Bytes(b)) => match b.len() {
                4 => Ok(Some(i64::from(i32::from_be_bytes([
                    b[0], b[1], b[2], b[3],
                ])))),
                8 => Ok(Some(i64::from_be_bytes([
                    b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
                ]))),
                _ => Err(QueryError::invalid(format!("Invalid value for {what}"))),
            },
            Some(Value::Null | Value::Unset) => Ok(None),
            None => Err(QueryError::invalid(format!(
                "Missing bound value for {what}"
            ))),
        },
        Term::Literal(Literal::Null) => Ok(None),
        _ => Err(QueryError::invalid(format!("Invalid {what}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse() {
        assert_eq!(parse_timestamp("1970-01-01"), Some(0));
        assert_eq!(parse_timestamp("1970-01-02 00:00:01"), Some(86_401_000));
        assert_eq!(
            parse_timestamp("2011-02-03T04:05:00.123Z"),
            Some(1_296_705_900_123)
        );
        assert_eq!(
            parse_timestamp("2011-02-03 04:05+0100"),
            Some(1_296_702_300_000)
        );
        assert_eq!(parse_date("2000-03-01"), Some(11_017));
        assert_eq!(parse_time("01:00:00.5"), Some(3_600_500_000_000));
        assert_eq!(parse_timestamp("2011-02-03 04:05+aé1"), None);
        assert_eq!(parse_timestamp("99999999999-01-01"), None);
        assert_eq!(parse_time("1:2:3.1234567890"), None);
        // Varints past 128 bits, in BigInteger's encoding.
        let big = varint_from_str("340282366920938463463374607431768211456").expect("2^128");
        assert_eq!(
            &big.0[..],
            &[1u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..]
        );
        let neg = varint_from_str("-340282366920938463463374607431768211456").expect("-2^128");
        assert_eq!(
            &neg.0[..],
            &[0xffu8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..]
        );
        let neg1 = varint_from_str("-340282366920938463463374607431768211457").expect("-2^128-1");
        assert_eq!(neg1.0.len(), 17);
        assert_eq!(neg1.0[0], 0xfe);
        assert_eq!(
            varint_from_str("12").map(|v| v.0),
            Some(Bytes::from_static(&[12]))
        );
        assert!(varint_from_str("1x").is_none() && varint_from_str("-").is_none());
        // Cassandra's extreme dates.
        assert_eq!(parse_date("-5877641-06-23"), Some(-2_147_483_648));
        assert_eq!(parse_date("5881580-07-11"), Some(2_147_483_647));
        assert!(
            is_integer("2147483648") && is_integer("-0") && !is_integer("-") && !is_integer("1e3")
        );
    }
}
