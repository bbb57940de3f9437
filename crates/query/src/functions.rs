//! Cassandra's native functions: scalar functions usable as terms (INSERT,
//! UPDATE, WHERE) and as selectors, and the aggregates count, min, max,
//! sum and avg, which fold the selected rows into one.
//!
//! Functions are resolved by name and argument types as Cassandra does:
//! `toTimestamp` has a `timeuuid` and a `date` overload, so a bind marker
//! argument is ambiguous there and needs a type hint.

use std::cmp::Ordering;

use bytes::Bytes;
use gyre_cql::{CqlType, Literal, QualifiedName, Term};
use gyre_protocol::{date_from_days, date_to_days, CqlDecimal, CqlValue, CqlVarint};

use crate::error::{QueryError, Result};
use crate::values::column_type;

/// 100 ns intervals between the Gregorian epoch (1582-10-15) and 1970.
const UUID_EPOCH_OFFSET: i64 = 0x01B2_1DD2_1381_4000;
const MS_PER_DAY: i64 = 86_400_000;

/// A resolved scalar function.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Scalar {
    /// Cassandra's lower-case name, e.g. `totimestamp`.
    pub name: String,
    pub args: Vec<CqlType>,
    pub ret: CqlType,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Now,
    RandomUuid,
    CurrentTimestamp,
    CurrentDate,
    CurrentTime,
    /// Converts between the time types (by argument and return type).
    TimeConversion,
    MinTimeuuid,
    MaxTimeuuid,
    /// `blobAsX` (validated) and `xAsBlob`: the bytes are unchanged.
    BlobConversion,
    /// `similarity_cosine` / `_euclidean` / `_dot_product` of two float
    /// vectors of one dimension.
    Similarity(Similarity),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Similarity {
    Cosine,
    Euclidean,
    DotProduct,
}

/// True for the vector similarity functions, whose signature depends on
/// the dimension of the vector they are called on (see [`similarity`]).
pub(crate) fn is_similarity(name: &str) -> bool {
    similarity_kind(name).is_some()
}

fn similarity_kind(name: &str) -> Option<Similarity> {
    Some(match name {
        "similarity_cosine" => Similarity::Cosine,
        "similarity_euclidean" => Similarity::Euclidean,
        "similarity_dot_product" => Similarity::DotProduct,
        _ => return None,
    })
}

/// The similarity function `name` over two vectors of type `ty`, which
/// must be `vector<float, n>` as in Cassandra.
pub(crate) fn similarity(name: &str, ty: &CqlType) -> Result<Scalar> {
    let kind = similarity_kind(name)
        .ok_or_else(|| QueryError::invalid(format!("Unknown function '{name}'")))?;
    let ty = crate::values::unfrozen(ty);
    if !matches!(ty, CqlType::Vector(e, _) if **e == CqlType::Float) {
        return Err(QueryError::invalid(format!(
            "Function system.{name} requires a float vector argument, but found argument of type {ty}"
        )));
    }
    Ok(Scalar {
        name: name.to_owned(),
        args: vec![ty.clone(), ty.clone()],
        ret: CqlType::Float,
        kind: Kind::Similarity(kind),
    })
}

/// Cassandra's (Lucene's) similarity scores, each mapped into [0, 1].
fn similarity_score(kind: Similarity, a: &[f32], b: &[f32]) -> Option<f32> {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    Some(match kind {
        Similarity::Cosine => {
            let na: f32 = a.iter().map(|x| x * x).sum();
            let nb: f32 = b.iter().map(|x| x * x).sum();
            if na == 0.0 || nb == 0.0 {
                return None;
            }
            (1.0 + dot / (na * nb).sqrt()) / 2.0
        }
        Similarity::Euclidean => {
            let d: f32 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
            1.0 / (1.0 + d)
        }
        Similarity::DotProduct => (1.0 + dot) / 2.0,
    })
}

/// The native types that have `blobAsX` / `xAsBlob` conversions.
const NATIVE: &[&str] = &[
    "ascii",
    "bigint",
    "boolean",
    "date",
    "decimal",
    "double",
    "duration",
    "float",
    "inet",
    "int",
    "smallint",
    "text",
    "varchar",
    "time",
    "timestamp",
    "timeuuid",
    "tinyint",
    "uuid",
    "varint",
];

/// Every signature of a scalar function name, or `None` when it is not one.
fn signatures(name: &str) -> Option<Vec<Scalar>> {
    use CqlType::*;
    let f = |args: Vec<CqlType>, ret: CqlType, kind: Kind| Scalar {
        name: name.to_owned(),
        args,
        ret,
        kind,
    };
    let conv = |from: Vec<CqlType>, ret: CqlType| {
        from.into_iter()
            .map(|a| f(vec![a], ret.clone(), Kind::TimeConversion))
            .collect()
    };
    Some(match name {
        "now" | "currenttimeuuid" => vec![f(vec![], Timeuuid, Kind::Now)],
        "uuid" => vec![f(vec![], Uuid, Kind::RandomUuid)],
        "currenttimestamp" => vec![f(vec![], Timestamp, Kind::CurrentTimestamp)],
        "currentdate" => vec![f(vec![], Date, Kind::CurrentDate)],
        "currenttime" => vec![f(vec![], Time, Kind::CurrentTime)],
        "totimestamp" => conv(vec![Timeuuid, Date], Timestamp),
        "todate" => conv(vec![Timeuuid, Timestamp], Date),
        "tounixtimestamp" => conv(vec![Timeuuid, Timestamp, Date], Bigint),
        "dateof" => conv(vec![Timeuuid], Timestamp),
        "unixtimestampof" => conv(vec![Timeuuid], Bigint),
        "mintimeuuid" => vec![f(vec![Timestamp], Timeuuid, Kind::MinTimeuuid)],
        "maxtimeuuid" => vec![f(vec![Timestamp], Timeuuid, Kind::MaxTimeuuid)],
        _ => {
            if let Some(ty) = name.strip_prefix("blobas").filter(|t| NATIVE.contains(t)) {
                let ty = CqlType::native(ty)?;
                vec![f(vec![Blob], ty, Kind::BlobConversion)]
            } else if let Some(ty) = name.strip_suffix("asblob").filter(|t| NATIVE.contains(t)) {
                let ty = CqlType::native(ty)?;
                vec![f(vec![ty], Blob, Kind::BlobConversion)]
            } else {
                return None;
            }
        }
    })
}

/// The function's name without the optional `system.` keyspace.
pub(crate) fn function_name(name: &QualifiedName) -> Result<&str> {
    match name.keyspace.as_deref() {
        None | Some("system") => Ok(&name.name),
        Some(ks) => Err(QueryError::invalid(format!(
            "Unknown function {ks}.{}: user-defined functions are not supported",
            name.name
        ))),
    }
}

/// True for the aggregate names (count, min, max, sum, avg).
pub(crate) fn is_aggregate(name: &str) -> bool {
    Aggregate::from_name(name).is_some()
}

/// Resolves a scalar function call with `arity` arguments; `fits(i, ty)`
/// says whether argument `i` can be of type `ty` (a bind marker fits
/// anything, a string literal a text or time type, ...).
pub(crate) fn resolve(
    name: &str,
    arity: usize,
    fits: impl Fn(usize, &CqlType) -> bool,
) -> Result<Scalar> {
    let sigs = signatures(name)
        .ok_or_else(|| QueryError::invalid(format!("Unknown function '{name}'")))?;
    let sigs: Vec<Scalar> = sigs.into_iter().filter(|s| s.args.len() == arity).collect();
    if sigs.is_empty() {
        return Err(QueryError::invalid(format!(
            "Invalid number of arguments in call to function system.{name}: {arity} given"
        )));
    }
    let signature = |s: &Scalar| {
        format!(
            "system.{name}({})",
            s.args.iter().map(type_name).collect::<Vec<_>>().join(", ")
        )
    };
    let matching: Vec<&Scalar> = sigs
        .iter()
        .filter(|s| s.args.iter().enumerate().all(|(i, ty)| fits(i, ty)))
        .collect();
    match matching.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(QueryError::invalid(format!(
            "Type error: the arguments given do not match {}",
            sigs.iter().map(signature).collect::<Vec<_>>().join(" or ")
        ))),
        several => Err(QueryError::invalid(format!(
            "Ambiguous call to function system.{name} (can be matched by following signatures: {}): use type casts to disambiguate",
            several.iter().map(|s| signature(s)).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// The argument types of `name` when every overload of that arity agrees
/// (to type bind markers at PREPARE).
pub(crate) fn arg_types(name: &str, arity: usize) -> Option<Vec<CqlType>> {
    let sigs: Vec<Scalar> = signatures(name)?
        .into_iter()
        .filter(|s| s.args.len() == arity)
        .collect();
    match sigs.as_slice() {
        [one] => Some(one.args.clone()),
        _ => None,
    }
}

/// Whether a term could be a value of type `ty`, judged from its form
/// alone (a bind marker or null fits anything).
pub(crate) fn term_fits(term: &Term, ty: &CqlType) -> Result<bool> {
    use CqlType::*;
    let ty = crate::values::unfrozen(ty);
    Ok(match term {
        Term::Function { name, args } => {
            assignable(ty, &crate::values::resolve_call(name, args)?.ret)
        }
        Term::TypeHint { ty: hint, .. } => assignable(ty, hint),
        Term::Literal(l) => match l {
            Literal::Null => true,
            Literal::String(_) => {
                matches!(ty, Text | Ascii | Timestamp | Date | Time | Inet | Duration)
            }
            Literal::Integer(_) => matches!(
                ty,
                Tinyint
                    | Smallint
                    | Int
                    | Bigint
                    | Counter
                    | Varint
                    | Float
                    | Double
                    | Decimal
                    | Timestamp
                    | Date
                    | Time
            ),
            Literal::Float(_) => matches!(ty, Float | Double | Decimal),
            Literal::Bool(_) => ty == &Boolean,
            Literal::Blob(_) => ty == &Blob,
            Literal::Uuid(_) => matches!(ty, Uuid | Timeuuid),
            Literal::Duration(_) => ty == &Duration,
        },
        Term::List(_) | Term::Set(_) => matches!(ty, List(_) | Set(_)),
        Term::Map(_) => matches!(ty, Map(..) | Set(_)),
        Term::Tuple(_) => matches!(ty, Tuple(_)),
        Term::Udt(_) => false,
        Term::Bind(_) => true,
    })
}

/// Whether a value of type `from` may be used where `to` is expected.
pub(crate) fn assignable(to: &CqlType, from: &CqlType) -> bool {
    let (to, from) = (crate::values::unfrozen(to), crate::values::unfrozen(from));
    to == from
        || matches!(
            (to, from),
            (CqlType::Uuid, CqlType::Timeuuid) | (CqlType::Text, CqlType::Ascii)
        )
}

pub(crate) fn type_name(ty: &CqlType) -> String {
    ty.to_string()
}

impl Scalar {
    /// The result for the argument values (wire form; `None` is null).
    /// Conversions of null return null, as in Cassandra.
    pub(crate) fn apply(&self, args: &[Option<Bytes>]) -> Result<Option<Bytes>> {
        let now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
        };
        let enc = |v: CqlValue| Ok(Some(v.encode()));
        match self.kind {
            Kind::Now => return enc(CqlValue::Timeuuid(now_timeuuid())),
            Kind::RandomUuid => return enc(CqlValue::Uuid(uuid::Uuid::new_v4())),
            Kind::CurrentTimestamp => {
                return enc(CqlValue::Timestamp(now().as_millis() as i64));
            }
            Kind::CurrentDate => {
                let days = (now().as_millis() as i64).div_euclid(MS_PER_DAY);
                return enc(CqlValue::Date(date_from_days(days as i32)));
            }
            Kind::CurrentTime => {
                let nanos = now().as_nanos() % (86_400 * 1_000_000_000);
                return enc(CqlValue::Time(nanos as i64));
            }
            Kind::Similarity(kind) => return self.similarity(kind, args),
            _ => {}
        }
        let (Some(arg), Some(ty)) = (args.first(), self.args.first()) else {
            return Err(QueryError::invalid(format!(
                "Invalid number of arguments in call to function system.{}",
                self.name
            )));
        };
        let Some(arg) = arg else {
            return Ok(None);
        };
        let value = CqlValue::decode(&column_type(ty), arg).map_err(|e| {
            QueryError::invalid(format!(
                "In call to function system.{}, value 0x{} is not a valid binary representation for type {}: {e}",
                self.name,
                hex(arg),
                type_name(ty)
            ))
        })?;
        match self.kind {
            Kind::BlobConversion => {
                // blobAsX: the blob must be a valid X.
                CqlValue::decode(&column_type(&self.ret), arg).map_err(|_| {
                    QueryError::invalid(format!(
                        "In call to function system.{}, value 0x{} is not a valid binary representation for type {}",
                        self.name,
                        hex(arg),
                        type_name(&self.ret)
                    ))
                })?;
                Ok(Some(arg.clone()))
            }
            Kind::MinTimeuuid | Kind::MaxTimeuuid => {
                let CqlValue::Timestamp(ms) = value else {
                    return Err(self.bad_arg());
                };
                // The smallest / largest timeuuid of that millisecond, in
                // Cassandra's order (low bytes compare as signed).
                let (lsb, last_tick): (u64, i64) = if self.kind == Kind::MinTimeuuid {
                    (0x8080_8080_8080_8080, 0)
                } else {
                    (0x7f7f_7f7f_7f7f_7f7f, 9_999)
                };
                let ticks = ms
                    .saturating_mul(10_000)
                    .saturating_add(last_tick)
                    .saturating_add(UUID_EPOCH_OFFSET);
                enc(CqlValue::Timeuuid(timeuuid(ticks as u64, lsb)))
            }
            Kind::TimeConversion => {
                let ms = match value {
                    CqlValue::Timeuuid(u) => timeuuid_millis(&u)?,
                    CqlValue::Timestamp(ms) => ms,
                    CqlValue::Date(d) => i64::from(date_to_days(d)) * MS_PER_DAY,
                    _ => return Err(self.bad_arg()),
                };
                enc(match self.ret {
                    CqlType::Timestamp => CqlValue::Timestamp(ms),
                    CqlType::Bigint => CqlValue::Bigint(ms),
                    CqlType::Date => {
                        let days = i32::try_from(ms.div_euclid(MS_PER_DAY)).map_err(|_| {
                            QueryError::invalid(format!("{} is out of the date range", self.name))
                        })?;
                        CqlValue::Date(date_from_days(days))
                    }
                    _ => return Err(self.bad_arg()),
                })
            }
            _ => Err(self.bad_arg()),
        }
    }

    fn similarity(&self, kind: Similarity, args: &[Option<Bytes>]) -> Result<Option<Bytes>> {
        let (Some(a), Some(b), Some(ty)) = (args.first(), args.get(1), self.args.first()) else {
            return Err(self.bad_arg());
        };
        let (Some(a), Some(b)) = (a, b) else {
            return Ok(None);
        };
        let floats = |bytes: &Bytes| -> Result<Vec<f32>> {
            match CqlValue::decode(&column_type(ty), bytes) {
                Ok(CqlValue::Vector(items)) => items
                    .into_iter()
                    .map(|v| match v {
                        CqlValue::Float(f) => Ok(f),
                        _ => Err(self.bad_arg()),
                    })
                    .collect(),
                _ => Err(QueryError::invalid(format!(
                    "In call to function system.{}, value 0x{} is not a valid binary representation for type {}",
                    self.name,
                    hex(bytes),
                    type_name(ty)
                ))),
            }
        };
        let score = similarity_score(kind, &floats(a)?, &floats(b)?).ok_or_else(|| {
            QueryError::invalid(format!(
                "Function system.{} doesn't support all-zero vectors",
                self.name
            ))
        })?;
        Ok(Some(CqlValue::Float(score).encode()))
    }

    fn bad_arg(&self) -> QueryError {
        QueryError::invalid(format!("Invalid argument to function system.{}", self.name))
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A version 1 uuid for the current time (built by hand: uuid's `v1`
/// feature is off).
pub(crate) fn now_timeuuid() -> uuid::Uuid {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let ticks = (d.as_nanos() / 100) as u64 + UUID_EPOCH_OFFSET as u64;
    let clock_seq = (d.subsec_nanos() & 0x3fff) as u64 | 0x8000;
    timeuuid(
        ticks,
        (clock_seq << 48) | u64::from_be_bytes(*b"\0\0gyre01"),
    )
}

/// A version 1 uuid from 100 ns ticks since 1582 and its low 64 bits.
fn timeuuid(ticks: u64, lsb: u64) -> uuid::Uuid {
    let msb = ((ticks & 0xffff_ffff) << 32)
        | (((ticks >> 32) & 0xffff) << 16)
        | 0x1000
        | ((ticks >> 48) & 0x0fff);
    uuid::Uuid::from_u64_pair(msb, lsb)
}

/// The unix milliseconds of a version 1 uuid.
fn timeuuid_millis(u: &uuid::Uuid) -> Result<i64> {
    if u.get_version_num() != 1 {
        return Err(QueryError::invalid(format!("{u} is not a timeuuid")));
    }
    let (msb, _) = u.as_u64_pair();
    let ticks = ((msb & 0x0fff) << 48) | (((msb >> 16) & 0xffff) << 32) | (msb >> 32);
    Ok((ticks as i64 - UUID_EPOCH_OFFSET).div_euclid(10_000))
}

/// The aggregates, folded over the selected rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Aggregate {
    Count,
    Min,
    Max,
    Sum,
    Avg,
}

impl Aggregate {
    pub(crate) fn from_name(name: &str) -> Option<Aggregate> {
        Some(match name {
            "count" => Aggregate::Count,
            "min" => Aggregate::Min,
            "max" => Aggregate::Max,
            "sum" => Aggregate::Sum,
            "avg" => Aggregate::Avg,
            _ => return None,
        })
    }

    /// The result type for an argument of type `arg`, as Cassandra types
    /// it: sum and avg keep the numeric type (avg of ints is an int).
    pub(crate) fn result_type(self, name: &str, arg: &CqlType) -> Result<CqlType> {
        let numeric = matches!(
            crate::values::unfrozen(arg),
            CqlType::Tinyint
                | CqlType::Smallint
                | CqlType::Int
                | CqlType::Bigint
                | CqlType::Counter
                | CqlType::Varint
                | CqlType::Float
                | CqlType::Double
                | CqlType::Decimal
        );
        match self {
            Aggregate::Count => Ok(CqlType::Bigint),
            Aggregate::Min | Aggregate::Max => Ok(arg.clone()),
            Aggregate::Sum | Aggregate::Avg if numeric => Ok(arg.clone()),
            Aggregate::Sum | Aggregate::Avg => Err(QueryError::invalid(format!(
                "Invalid call to function system.{name}: no overload for argument of type {}",
                type_name(arg)
            ))),
        }
    }

    /// Folds the values of one column (null ones included) into the
    /// aggregate's value.
    pub(crate) fn fold<'a>(
        self,
        ty: &CqlType,
        values: impl Iterator<Item = Option<&'a Bytes>>,
    ) -> Result<Option<Bytes>> {
        let values: Vec<&Bytes> = values.flatten().collect();
        match self {
            Aggregate::Count => Ok(Some(Bytes::copy_from_slice(
                &(values.len() as i64).to_be_bytes(),
            ))),
            Aggregate::Min | Aggregate::Max => {
                let key = |b: &Bytes| {
                    gyre_schema::encode_clustering(ty, b, gyre_schema::ClusteringOrder::Asc)
                        .unwrap_or_else(|_| b.to_vec())
                };
                let mut best: Option<(Vec<u8>, &Bytes)> = None;
                for v in values {
                    let k = key(v);
                    let better = match &best {
                        None => true,
                        Some((bk, _)) => {
                            let ord = k.cmp(bk);
                            if self == Aggregate::Min {
                                ord == Ordering::Less
                            } else {
                                ord == Ordering::Greater
                            }
                        }
                    };
                    if better {
                        best = Some((k, v));
                    }
                }
                Ok(best.map(|(_, v)| v.clone()))
            }
            Aggregate::Sum | Aggregate::Avg => {
                let decoded: Vec<CqlValue> = values
                    .iter()
                    .map(|b| CqlValue::decode(&column_type(ty), b))
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|e| QueryError::Server(format!("undecodable stored value: {e}")))?;
                numeric_fold(self, crate::values::unfrozen(ty), &decoded).map(|v| Some(v.encode()))
            }
        }
    }
}

/// sum or avg of numeric values, in the column's type. Integer sums wrap
/// at the type's width like Cassandra's (Java) arithmetic.
fn numeric_fold(agg: Aggregate, ty: &CqlType, values: &[CqlValue]) -> Result<CqlValue> {
    let n = values.len() as i128;
    let overflow = || QueryError::invalid("Arithmetic overflow in aggregate");
    let int_total = || -> Result<i128> {
        values.iter().try_fold(0i128, |acc, v| {
            let x = match v {
                CqlValue::Tinyint(x) => i128::from(*x),
                CqlValue::Smallint(x) => i128::from(*x),
                CqlValue::Int(x) => i128::from(*x),
                CqlValue::Bigint(x) | CqlValue::Counter(x) => i128::from(*x),
                CqlValue::Varint(x) => x.to_i128().ok_or_else(overflow)?,
                _ => 0,
            };
            acc.checked_add(x).ok_or_else(overflow)
        })
    };
    let int_result = |total: i128| {
        if agg == Aggregate::Avg && n > 0 {
            total / n
        } else if agg == Aggregate::Avg {
            0
        } else {
            total
        }
    };
    let float_total = || {
        values
            .iter()
            .map(|v| match v {
                CqlValue::Float(x) => f64::from(*x),
                CqlValue::Double(x) => *x,
                _ => 0.0,
            })
            .sum::<f64>()
    };
    let float_result = |total: f64| {
        if agg == Aggregate::Avg && n > 0 {
            total / n as f64
        } else if agg == Aggregate::Avg {
            0.0
        } else {
            total
        }
    };
    // Truncating casts: Java's narrowing of an overflowing int sum.
    Ok(match ty {
        CqlType::Tinyint => CqlValue::Tinyint(int_result(int_total()?) as i8),
        CqlType::Smallint => CqlValue::Smallint(int_result(int_total()?) as i16),
        CqlType::Int => CqlValue::Int(int_result(int_total()?) as i32),
        CqlType::Bigint => CqlValue::Bigint(int_result(int_total()?) as i64),
        CqlType::Counter => CqlValue::Counter(int_result(int_total()?) as i64),
        CqlType::Varint => CqlValue::Varint(CqlVarint::from_i128(int_result(int_total()?))),
        CqlType::Float => CqlValue::Float(float_result(float_total()) as f32),
        CqlType::Double => CqlValue::Double(float_result(float_total())),
        CqlType::Decimal => {
            let mut scale = 0i32;
            for v in values {
                if let CqlValue::Decimal(d) = v {
                    scale = scale.max(d.scale);
                }
            }
            let mut total = 0i128;
            for v in values {
                if let CqlValue::Decimal(d) = v {
                    let unscaled = d.unscaled.to_i128().ok_or_else(overflow)?;
                    let up = 10i128
                        .checked_pow(u32::try_from(scale - d.scale).map_err(|_| overflow())?)
                        .ok_or_else(overflow)?;
                    total = unscaled
                        .checked_mul(up)
                        .and_then(|x| total.checked_add(x))
                        .ok_or_else(overflow)?;
                }
            }
            if agg == Aggregate::Avg {
                total = if n > 0 { div_half_even(total, n) } else { 0 };
            }
            CqlValue::Decimal(CqlDecimal {
                unscaled: CqlVarint::from_i128(total),
                scale,
            })
        }
        other => {
            return Err(QueryError::invalid(format!(
                "sum and avg are not defined for {}",
                type_name(other)
            )))
        }
    })
}

/// Integer division rounding half to even (BigDecimal's HALF_EVEN).
fn div_half_even(a: i128, b: i128) -> i128 {
    let q = a / b;
    let r = a % b;
    let twice = (r.abs() * 2).cmp(&b.abs());
    let away = match twice {
        Ordering::Greater => true,
        Ordering::Equal => q % 2 != 0,
        Ordering::Less => false,
    };
    if !away {
        q
    } else if (a < 0) != (b < 0) {
        q - 1
    } else {
        q + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeuuid_round_trips_its_time() {
        let u = timeuuid(
            1_000 * 10_000 + UUID_EPOCH_OFFSET as u64,
            0x8080_8080_8080_8080,
        );
        assert_eq!(u.get_version_num(), 1);
        assert_eq!(timeuuid_millis(&u).ok(), Some(1_000));
        let now = now_timeuuid();
        assert_eq!(now.get_version_num(), 1);
        let ms = timeuuid_millis(&now).unwrap_or_default();
        assert!(ms > 1_600_000_000_000, "{ms}");
    }

    #[test]
    fn rounding_is_half_even() {
        assert_eq!(div_half_even(5, 2), 2);
        assert_eq!(div_half_even(7, 2), 4);
        assert_eq!(div_half_even(-5, 2), -2);
        assert_eq!(div_half_even(10, 3), 3);
    }

    #[test]
    fn similarity_scores_match_cassandra() {
        let (a, b, z) = ([1.0f32, 0.0], [0.0f32, 1.0], [0.0f32, 0.0]);
        assert_eq!(similarity_score(Similarity::Cosine, &a, &a), Some(1.0));
        assert_eq!(similarity_score(Similarity::Cosine, &a, &b), Some(0.5));
        assert_eq!(similarity_score(Similarity::Cosine, &a, &z), None);
        assert_eq!(
            similarity_score(Similarity::Euclidean, &a, &b),
            Some(1.0 / 3.0)
        );
        assert_eq!(similarity_score(Similarity::DotProduct, &a, &a), Some(1.0));
        let v = CqlType::Vector(Box::new(CqlType::Float), 2);
        let f = similarity("similarity_cosine", &v).expect("float vector");
        let enc = |x: [f32; 2]| {
            Some(CqlValue::Vector(x.iter().map(|f| CqlValue::Float(*f)).collect()).encode())
        };
        assert_eq!(
            f.apply(&[enc([3.0, 4.0]), enc([3.0, 4.0])])
                .expect("scores"),
            Some(CqlValue::Float(1.0).encode())
        );
        assert_eq!(f.apply(&[enc([3.0, 4.0]), None]).expect("null"), None);
        assert!(f.apply(&[enc([0.0, 0.0]), enc([1.0, 1.0])]).is_err());
        let ints = CqlType::Vector(Box::new(CqlType::Int), 2);
        assert!(similarity("similarity_dot_product", &ints).is_err());
    }

    #[test]
    fn overloads_resolve_by_argument_type() {
        let date = |_: usize, t: &CqlType| t == &CqlType::Date;
        let f = resolve("totimestamp", 1, date).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.ret, CqlType::Timestamp);
        assert!(resolve("totimestamp", 1, |_, _| true).is_err());
        assert!(resolve("totimestamp", 2, |_, _| true).is_err());
        assert_eq!(arg_types("blobasint", 1), Some(vec![CqlType::Blob]));
        assert!(resolve("nosuchfunction", 0, |_, _| true).is_err());
    }
}
