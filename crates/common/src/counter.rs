//! Counters as Cassandra 2.1+ stores them: a counter column holds one
//! shard per replica host that led increments of it, each (clock, count).
//! A shard is an ordinary cell under the column with the host id as its
//! path and the clock as its timestamp, so [`crate::lww`] keeps, per host,
//! the shard with the highest clock; the counter's value is the sum of the
//! shards. Increments travel from the coordinator to a leader replica as
//! delta cells (empty path, the delta as the value), which the leader turns
//! into its own next shard.

use bytes::Bytes;

use crate::{Cell, CellName, LocalTime, Row};

/// A shard's cell value: clock then count, big-endian.
pub fn shard_value(clock: i64, count: i64) -> Bytes {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&clock.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    Bytes::from(out)
}

/// (clock, count) of a shard value.
pub fn parse_shard(v: &[u8]) -> Option<(i64, i64)> {
    let clock = i64::from_be_bytes(v.get(..8)?.try_into().ok()?);
    let count = i64::from_be_bytes(v.get(8..16)?.try_into().ok()?);
    Some((clock, count))
}

/// A delta cell's value (8 bytes, big-endian).
pub fn delta_value(delta: i64) -> Bytes {
    Bytes::copy_from_slice(&delta.to_be_bytes())
}

pub fn parse_delta(v: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(v.get(..8)?.try_into().ok()?))
}

/// The value of counter `column` in `row`: the sum of its live shards, or
/// `None` when it has none.
pub fn total(row: &Row, column: &[u8], now: LocalTime) -> Option<i64> {
    let start = CellName::simple(Bytes::copy_from_slice(column));
    let mut sum: Option<i64> = None;
    for (_, cell) in row
        .cells
        .range(start..)
        .take_while(|(n, _)| n.column.as_ref() == column)
        .filter(|(n, _)| !n.path.is_empty())
    {
        if let Some((_, count)) = cell.value_at(now).and_then(|v| parse_shard(v)) {
            sum = Some(sum.unwrap_or(0).wrapping_add(count));
        }
    }
    sum
}

/// The next shard of a leader whose current shard is `old` (clock, count):
/// clock = max(now, old clock + 1), count = old count + delta, as a cell.
pub fn next_shard(old: Option<(i64, i64)>, delta: i64, now_micros: i64) -> Cell {
    let (clock, count) = match old {
        Some((c, n)) => (now_micros.max(c + 1), n.wrapping_add(delta)),
        None => (now_micros, delta),
    };
    Cell::live(clock, shard_value(clock, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_sum_per_host_highest_clock_wins() {
        let mut row = Row::default();
        let name = |h: &'static [u8]| CellName::element(Bytes::from_static(b"c"), h);
        row.cells.insert(name(b"h1"), next_shard(None, 5, 10));
        let next = next_shard(Some((10, 5)), 3, 10);
        assert_eq!(next.timestamp, 11);
        crate::lww::reconcile_into(row.cells.get_mut(&name(b"h1")).expect("cell"), next);
        row.cells.insert(name(b"h2"), next_shard(None, -2, 7));
        assert_eq!(total(&row, b"c", 0), Some(6));
        assert_eq!(total(&row, b"d", 0), None);
    }
}
