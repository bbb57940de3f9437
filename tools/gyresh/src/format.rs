//! cqlsh-style rendering of CQL values.
//!
//! Top-level text is printed bare; inside collections, text is quoted
//! (`['a', 'b']`) as cqlsh does, so that the structure stays readable.

use scylla::value::{CqlDuration, CqlValue};

/// How a null cell is shown.
pub const NULL: &str = "null";

/// Formats a cell (`None` is a null) for a result table.
pub fn format_cell(value: Option<&CqlValue>) -> String {
    match value {
        None => NULL.to_string(),
        Some(v) => format_value(v, false),
    }
}

/// Formats one value; `nested` is true inside a collection, tuple or UDT.
pub fn format_value(value: &CqlValue, nested: bool) -> String {
    match value {
        CqlValue::Ascii(s) | CqlValue::Text(s) => {
            if nested {
                quote(s)
            } else {
                s.clone()
            }
        }
        CqlValue::Boolean(b) => if *b { "True" } else { "False" }.to_string(),
        CqlValue::Blob(b) => format_blob(b),
        CqlValue::Counter(c) => c.0.to_string(),
        CqlValue::Decimal(d) => {
            let (bytes, scale) = d.as_signed_be_bytes_slice_and_exponent();
            format_decimal(&varint_to_string(bytes), scale)
        }
        CqlValue::Date(d) => format_date(i64::from(d.0) - (1i64 << 31)),
        CqlValue::Double(f) => format_float(*f),
        CqlValue::Float(f) => format_float(f64::from(*f)),
        CqlValue::Duration(d) => format_duration(d),
        CqlValue::Empty => String::new(),
        CqlValue::Int(i) => i.to_string(),
        CqlValue::BigInt(i) => i.to_string(),
        CqlValue::SmallInt(i) => i.to_string(),
        CqlValue::TinyInt(i) => i.to_string(),
        CqlValue::Varint(v) => varint_to_string(v.as_signed_bytes_be_slice()),
        CqlValue::Timestamp(t) => format_timestamp(t.0),
        CqlValue::Time(t) => format_time(t.0),
        CqlValue::Inet(ip) => ip.to_string(),
        CqlValue::Uuid(u) => u.to_string(),
        CqlValue::Timeuuid(u) => u.to_string(),
        CqlValue::List(items) | CqlValue::Vector(items) => {
            format!("[{}]", join(items.iter().map(|v| format_value(v, true))))
        }
        CqlValue::Set(items) => {
            format!("{{{}}}", join(items.iter().map(|v| format_value(v, true))))
        }
        CqlValue::Map(pairs) => format!(
            "{{{}}}",
            join(pairs.iter().map(|(k, v)| format!(
                "{}: {}",
                format_value(k, true),
                format_value(v, true)
            )))
        ),
        CqlValue::Tuple(items) => format!(
            "({})",
            join(items.iter().map(|v| format_nested_cell(v.as_ref())))
        ),
        CqlValue::UserDefinedType { fields, .. } => format!(
            "{{{}}}",
            join(
                fields
                    .iter()
                    .map(|(k, v)| format!("{k}: {}", format_nested_cell(v.as_ref())))
            )
        ),
        // CqlValue is non-exhaustive; show anything new in debug form
        // rather than refusing the whole row.
        #[allow(unreachable_patterns)]
        other => format!("{other:?}"),
    }
}

fn format_nested_cell(value: Option<&CqlValue>) -> String {
    value.map_or_else(|| NULL.to_string(), |v| format_value(v, true))
}

fn join(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

/// CQL string literal: single quotes, embedded quotes doubled.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `0x` followed by lowercase hex, as cqlsh prints blobs.
pub fn format_blob(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 + bytes.len() * 2);
    out.push_str("0x");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Floats: integral values keep a `.0`-free cqlsh look (`1.5`, `2`, `NaN`).
pub fn format_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_string()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.to_string()
    } else {
        format!("{f}")
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `YYYY-MM-DD` for days since the epoch.
pub fn format_date(days_since_epoch: i64) -> String {
    let (y, m, d) = civil_from_days(days_since_epoch);
    format!("{y:04}-{m:02}-{d:02}")
}

/// cqlsh's timestamp form: `2024-01-02 03:04:05.000000+0000` (UTC).
pub fn format_timestamp(millis: i64) -> String {
    let days = millis.div_euclid(86_400_000);
    let ms_of_day = millis.rem_euclid(86_400_000);
    let (h, rem) = (ms_of_day / 3_600_000, ms_of_day % 3_600_000);
    let (min, rem) = (rem / 60_000, rem % 60_000);
    let (s, ms) = (rem / 1000, rem % 1000);
    format!(
        "{} {h:02}:{min:02}:{s:02}.{:06}+0000",
        format_date(days),
        ms * 1000
    )
}

/// `HH:MM:SS.nnnnnnnnn` for nanoseconds since midnight.
pub fn format_time(nanos: i64) -> String {
    let secs = nanos.div_euclid(1_000_000_000);
    let frac = nanos.rem_euclid(1_000_000_000);
    format!(
        "{:02}:{:02}:{:02}.{frac:09}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// Cassandra's duration form: `1y2mo3d4h5m6s7ms8us9ns`, zero parts omitted.
pub fn format_duration(d: &CqlDuration) -> String {
    let negative = d.months < 0 || d.days < 0 || d.nanoseconds < 0;
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    let months = i64::from(d.months).unsigned_abs();
    let days = i64::from(d.days).unsigned_abs();
    let mut nanos = d.nanoseconds.unsigned_abs();
    let mut push = |n: u64, unit: &str| {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    };
    push(months / 12, "y");
    push(months % 12, "mo");
    push(days, "d");
    for (unit, size) in [
        ("h", 3_600_000_000_000u64),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1000),
        ("ns", 1),
    ] {
        push(nanos / size, unit);
        nanos %= size;
    }
    if out.is_empty() || out == "-" {
        "0s".to_string()
    } else {
        out
    }
}

/// Decimal string of a two's-complement big-endian integer of any length.
pub fn varint_to_string(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "0".to_string();
    }
    let negative = bytes[0] & 0x80 != 0;
    // Magnitude in big-endian bytes: negate two's complement if needed.
    let mut mag: Vec<u8> = bytes.to_vec();
    if negative {
        let mut carry = true;
        for b in mag.iter_mut().rev() {
            *b = !*b;
            if carry {
                let (v, c) = b.overflowing_add(1);
                *b = v;
                carry = c;
            }
        }
    }
    // Repeated division by 10 of the base-256 number.
    let mut digits = Vec::new();
    while mag.iter().any(|&b| b != 0) {
        let mut rem = 0u32;
        for b in mag.iter_mut() {
            let cur = (rem << 8) | u32::from(*b);
            *b = (cur / 10) as u8;
            rem = cur % 10;
        }
        digits.push(b'0' + rem as u8);
    }
    if digits.is_empty() {
        return "0".to_string();
    }
    if negative {
        digits.push(b'-');
    }
    digits.reverse();
    String::from_utf8_lossy(&digits).into_owned()
}

/// Places the decimal point `scale` digits from the right of `unscaled`.
pub fn format_decimal(unscaled: &str, scale: i32) -> String {
    let (sign, digits) = match unscaled.strip_prefix('-') {
        Some(d) => ("-", d),
        None => ("", unscaled),
    };
    if scale <= 0 {
        let zeros = if digits == "0" {
            0
        } else {
            scale.unsigned_abs()
        };
        return format!("{sign}{digits}{}", "0".repeat(zeros as usize));
    }
    let scale = scale as usize;
    let padded = if digits.len() <= scale {
        format!("{}{digits}", "0".repeat(scale - digits.len() + 1))
    } else {
        digits.to_string()
    };
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use scylla::value::{CqlDate, CqlTime, CqlTimestamp, CqlVarint};

    #[test]
    fn timestamps_are_iso_utc_with_microseconds() {
        assert_eq!(format_timestamp(0), "1970-01-01 00:00:00.000000+0000");
        // 2024-01-02 03:04:05.678 UTC
        assert_eq!(
            format_timestamp(1_704_164_645_678),
            "2024-01-02 03:04:05.678000+0000"
        );
        assert_eq!(format_timestamp(-1), "1969-12-31 23:59:59.999000+0000");
        assert_eq!(
            format_value(&CqlValue::Timestamp(CqlTimestamp(1_704_164_645_000)), false),
            "2024-01-02 03:04:05.000000+0000"
        );
    }

    #[test]
    fn dates_and_times() {
        assert_eq!(
            format_value(&CqlValue::Date(CqlDate((1 << 31) + 19_724)), false),
            "2024-01-02"
        );
        assert_eq!(format_date(-1), "1969-12-31");
        assert_eq!(
            format_value(&CqlValue::Time(CqlTime(3_723_000_000_005)), false),
            "01:02:03.000000005"
        );
    }

    #[test]
    fn blobs_uuids_booleans() {
        assert_eq!(format_blob(&[0xca, 0xfe, 0x01]), "0xcafe01");
        assert_eq!(format_blob(&[]), "0x");
        assert_eq!(format_value(&CqlValue::Boolean(true), false), "True");
        let u = "550e8400-e29b-41d4-a716-446655440000";
        assert_eq!(
            format_value(&CqlValue::Uuid(u.parse().unwrap_or_default()), false),
            u
        );
    }

    #[test]
    fn collections_quote_nested_text() {
        let list = CqlValue::List(vec![
            CqlValue::Text("a".into()),
            CqlValue::Text("it's".into()),
        ]);
        assert_eq!(format_value(&list, false), "['a', 'it''s']");
        let set = CqlValue::Set(vec![CqlValue::Int(1), CqlValue::Int(2)]);
        assert_eq!(format_value(&set, false), "{1, 2}");
        let map = CqlValue::Map(vec![(CqlValue::Text("k".into()), CqlValue::BigInt(7))]);
        assert_eq!(format_value(&map, false), "{'k': 7}");
        let tuple = CqlValue::Tuple(vec![Some(CqlValue::Int(1)), None]);
        assert_eq!(format_value(&tuple, false), "(1, null)");
        assert_eq!(format_cell(None), "null");
        assert_eq!(format_cell(Some(&CqlValue::Text("x".into()))), "x");
    }

    #[test]
    fn varints_and_decimals() {
        assert_eq!(varint_to_string(&[0x00]), "0");
        assert_eq!(varint_to_string(&[0x7f]), "127");
        assert_eq!(varint_to_string(&[0xff]), "-1");
        assert_eq!(varint_to_string(&[0x80]), "-128");
        assert_eq!(varint_to_string(&[0x01, 0x00]), "256");
        // 2^64 = 18446744073709551616
        assert_eq!(
            varint_to_string(&[0x01, 0, 0, 0, 0, 0, 0, 0, 0]),
            "18446744073709551616"
        );
        let v = CqlValue::Varint(CqlVarint::from_signed_bytes_be(vec![0xfe, 0x0c]));
        assert_eq!(format_value(&v, false), "-500");
        assert_eq!(format_decimal("12345", 2), "123.45");
        assert_eq!(format_decimal("-5", 3), "-0.005");
        assert_eq!(format_decimal("7", 0), "7");
        assert_eq!(format_decimal("7", -2), "700");
    }

    #[test]
    fn floats_and_durations() {
        assert_eq!(format_float(1.5), "1.5");
        assert_eq!(format_float(2.0), "2");
        assert_eq!(format_float(f64::NAN), "NaN");
        let d = CqlDuration {
            months: 14,
            days: 3,
            nanoseconds: 3_600_000_000_000 + 1_000_000,
        };
        assert_eq!(format_duration(&d), "1y2mo3d1h1ms");
        let zero = CqlDuration {
            months: 0,
            days: 0,
            nanoseconds: 0,
        };
        assert_eq!(format_duration(&zero), "0s");
    }
}
