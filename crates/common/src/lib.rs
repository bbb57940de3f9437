//! Gyre's shared data model.
//!
//! The types every layer speaks: partition tokens (Cassandra's Murmur3
//! partitioner), cells with timestamps, TTLs and tombstones, deletions at
//! every level, partition updates, and the last-write-wins rule in [`lww`]
//! that the storage engines and the coordinator share; and [`metrics`], the
//! lock-free latency histograms every layer records its stage in.
//!
//! It is not a CQL type system: values are bytes, encoded by the CQL layer.
//!
//! ```
//! use gyre_common::{lww, Cell, CellName, Deletion, Partition};
//!
//! let update = Partition::with_key("user-1")
//!     .set("row-a", CellName::simple("name"), Cell::live(10, "ada"))
//!     .delete_row("row-b", Deletion::new(10, 0));
//! let visible = lww::live_view(&update, 0);
//! assert_eq!(visible.rows.len(), 1);
//! ```

pub mod codec;
mod consistency;
pub mod counter;
pub mod lww;
pub mod metrics;
mod model;
mod token;
pub mod trace;

pub use consistency::Consistency;
pub use model::{
    Cell, CellName, CellValue, DecoratedKey, Deletion, LocalTime, Partition, RangeTombstone, Row,
    Slice, SliceBound, Timestamp,
};
pub use token::{compose_partition_key, token_of, Token, MIN_TOKEN};

/// How deeply CQL types may nest (`list<frozen<map<int, list<...>>>>`),
/// one limit for the CQL parser and the protocol decoder, so a type one
/// accepts the other can always carry.
pub const MAX_TYPE_NESTING: usize = 32;
