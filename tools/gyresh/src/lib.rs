//! gyresh: an interactive CQL shell for Gyre, built on the `scylla` driver.
//!
//! The binary (`main.rs`) does the I/O: the line editor, the driver session,
//! printing. This library holds the parts that can be tested without a
//! server:
//!
//! - [`format`]: cqlsh-style rendering of CQL values (timestamps in ISO form,
//!   blobs as `0x..`, collections as `{..}`/`[..]`).
//! - [`input`]: splitting typed or sourced text into complete statements
//!   ended by `;`, aware of quotes and comments.
//! - [`command`]: recognising the shell's own commands (`EXPAND`, `PAGING`,
//!   `CONSISTENCY`, `SOURCE`, ...) as opposed to CQL sent to the server.
//! - [`complete`]: tab-completion candidates.
//! - [`render`]: result tables (aligned or expanded).
//! - [`route`]: the load-balancing policy that sends every request to the
//!   node the shell was started on, as cqlsh does.

pub mod command;
pub mod complete;
pub mod format;
pub mod input;
pub mod render;
pub mod route;
