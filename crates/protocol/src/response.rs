//! Response messages (spec section 4.2), error bodies (section 9) and
//! response frames.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use bytes::{BufMut, Bytes, BytesMut};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::frame::{
    flags, lz4_compress, lz4_compress_into, Compression, Frame, Opcode, ProtocolVersion,
};
use crate::types::{
    has_global_spec, read_col_specs, read_consistency, write_col_specs, write_consistency,
    ColumnSpec, Consistency,
};
use crate::wire::{
    put_bytes, put_bytes_map, put_inet, put_ip, put_short_bytes, put_string, put_string_list,
    put_string_multimap, put_uuid, Reader,
};

/// The `<writeType>` of write timeouts and failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteType {
    Simple,
    Batch,
    UnloggedBatch,
    Counter,
    BatchLog,
    Cas,
    View,
    Cdc,
    /// A type this crate does not know, kept verbatim.
    Other(String),
}

impl WriteType {
    pub fn as_str(&self) -> &str {
        match self {
            WriteType::Simple => "SIMPLE",
            WriteType::Batch => "BATCH",
            WriteType::UnloggedBatch => "UNLOGGED_BATCH",
            WriteType::Counter => "COUNTER",
            WriteType::BatchLog => "BATCH_LOG",
            WriteType::Cas => "CAS",
            WriteType::View => "VIEW",
            WriteType::Cdc => "CDC",
            WriteType::Other(s) => s,
        }
    }

    fn parse(s: String) -> Self {
        match s.as_str() {
            "SIMPLE" => WriteType::Simple,
            "BATCH" => WriteType::Batch,
            "UNLOGGED_BATCH" => WriteType::UnloggedBatch,
            "COUNTER" => WriteType::Counter,
            "BATCH_LOG" => WriteType::BatchLog,
            "CAS" => WriteType::Cas,
            "VIEW" => WriteType::View,
            "CDC" => WriteType::Cdc,
            _ => WriteType::Other(s),
        }
    }
}

/// The code-specific part of an ERROR (spec section 9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// 0x0000: a server-side bug.
    ServerError,
    /// 0x000A.
    Protocol,
    /// 0x0100.
    AuthenticationError,
    /// 0x1000.
    Unavailable {
        consistency: Consistency,
        required: i32,
        alive: i32,
    },
    /// 0x1001.
    Overloaded,
    /// 0x1002.
    IsBootstrapping,
    /// 0x1003.
    Truncate,
    /// 0x1100.
    WriteTimeout {
        consistency: Consistency,
        received: i32,
        block_for: i32,
        write_type: WriteType,
    },
    /// 0x1200.
    ReadTimeout {
        consistency: Consistency,
        received: i32,
        block_for: i32,
        data_present: bool,
    },
    /// 0x1300. v4 sends `num_failures`, v5 the `reasons` (each failed
    /// replica's address and failure code).
    ReadFailure {
        consistency: Consistency,
        received: i32,
        block_for: i32,
        num_failures: i32,
        reasons: Vec<(IpAddr, u16)>,
        data_present: bool,
    },
    /// 0x1400.
    FunctionFailure {
        keyspace: String,
        function: String,
        arg_types: Vec<String>,
    },
    /// 0x1500, with failures as in `ReadFailure`.
    WriteFailure {
        consistency: Consistency,
        received: i32,
        block_for: i32,
        num_failures: i32,
        reasons: Vec<(IpAddr, u16)>,
        write_type: WriteType,
    },
    /// 0x1600 (v5; v4 clients get a WriteFailure of type CDC).
    CdcWriteFailure,
    /// 0x1700 (v5): a contended CAS may or may not have been applied. v4
    /// clients get a WriteTimeout of type CAS, as Cassandra sends them.
    CasWriteUnknown {
        consistency: Consistency,
        received: i32,
        block_for: i32,
    },
    /// 0x2000.
    Syntax,
    /// 0x2100.
    Unauthorized,
    /// 0x2200.
    Invalid,
    /// 0x2300.
    ConfigError,
    /// 0x2400: `table` is empty for a keyspace.
    AlreadyExists { keyspace: String, table: String },
    /// 0x2500: carries the unknown prepared id so drivers re-prepare.
    Unprepared { id: Bytes },
    /// A code this crate does not know (decoding only).
    Other(i32),
}

impl ErrorKind {
    /// The wire error code.
    pub fn code(&self) -> i32 {
        match self {
            ErrorKind::ServerError => 0x0000,
            ErrorKind::Protocol => 0x000A,
            ErrorKind::AuthenticationError => 0x0100,
            ErrorKind::Unavailable { .. } => 0x1000,
            ErrorKind::Overloaded => 0x1001,
            ErrorKind::IsBootstrapping => 0x1002,
            ErrorKind::Truncate => 0x1003,
            ErrorKind::WriteTimeout { .. } => 0x1100,
            ErrorKind::ReadTimeout { .. } => 0x1200,
            ErrorKind::ReadFailure { .. } => 0x1300,
            ErrorKind::FunctionFailure { .. } => 0x1400,
            ErrorKind::WriteFailure { .. } => 0x1500,
            ErrorKind::CdcWriteFailure => 0x1600,
            ErrorKind::CasWriteUnknown { .. } => 0x1700,
            ErrorKind::Syntax => 0x2000,
            ErrorKind::Unauthorized => 0x2100,
            ErrorKind::Invalid => 0x2200,
            ErrorKind::ConfigError => 0x2300,
            ErrorKind::AlreadyExists { .. } => 0x2400,
            ErrorKind::Unprepared { .. } => 0x2500,
            ErrorKind::Other(code) => *code,
        }
    }
}

/// An ERROR response: what went wrong and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CqlError {
    pub kind: ErrorKind,
    pub message: String,
}

impl CqlError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        CqlError {
            kind,
            message: message.into(),
        }
    }

    fn read(r: &mut Reader, version: ProtocolVersion) -> Result<Self> {
        let code = r.i32()?;
        let message = r.string()?;
        let kind = match code {
            0x0000 => ErrorKind::ServerError,
            0x000A => ErrorKind::Protocol,
            0x0100 => ErrorKind::AuthenticationError,
            0x1000 => ErrorKind::Unavailable {
                consistency: read_consistency(r)?,
                required: r.i32()?,
                alive: r.i32()?,
            },
            0x1001 => ErrorKind::Overloaded,
            0x1002 => ErrorKind::IsBootstrapping,
            0x1003 => ErrorKind::Truncate,
            0x1100 => ErrorKind::WriteTimeout {
                consistency: read_consistency(r)?,
                received: r.i32()?,
                block_for: r.i32()?,
                write_type: WriteType::parse(r.string()?),
            },
            0x1200 => ErrorKind::ReadTimeout {
                consistency: read_consistency(r)?,
                received: r.i32()?,
                block_for: r.i32()?,
                data_present: r.u8()? != 0,
            },
            0x1300 => {
                let consistency = read_consistency(r)?;
                let received = r.i32()?;
                let block_for = r.i32()?;
                let (num_failures, reasons) = read_failures(r, version)?;
                ErrorKind::ReadFailure {
                    consistency,
                    received,
                    block_for,
                    num_failures,
                    reasons,
                    data_present: r.u8()? != 0,
                }
            }
            0x1400 => ErrorKind::FunctionFailure {
                keyspace: r.string()?,
                function: r.string()?,
                arg_types: r.string_list()?,
            },
            0x1500 => {
                let consistency = read_consistency(r)?;
                let received = r.i32()?;
                let block_for = r.i32()?;
                let (num_failures, reasons) = read_failures(r, version)?;
                ErrorKind::WriteFailure {
                    consistency,
                    received,
                    block_for,
                    num_failures,
                    reasons,
                    write_type: WriteType::parse(r.string()?),
                }
            }
            0x1600 => ErrorKind::CdcWriteFailure,
            0x1700 => ErrorKind::CasWriteUnknown {
                consistency: read_consistency(r)?,
                received: r.i32()?,
                block_for: r.i32()?,
            },
            0x2000 => ErrorKind::Syntax,
            0x2100 => ErrorKind::Unauthorized,
            0x2200 => ErrorKind::Invalid,
            0x2300 => ErrorKind::ConfigError,
            0x2400 => ErrorKind::AlreadyExists {
                keyspace: r.string()?,
                table: r.string()?,
            },
            0x2500 => ErrorKind::Unprepared {
                id: r.short_bytes()?,
            },
            other => ErrorKind::Other(other),
        };
        Ok(CqlError { kind, message })
    }

    fn write(&self, dst: &mut BytesMut, version: ProtocolVersion) {
        let older = older_kind(&self.kind, version);
        let kind = older.as_ref().unwrap_or(&self.kind);
        dst.put_i32(kind.code());
        put_string(dst, &self.message);
        match kind {
            ErrorKind::Unavailable {
                consistency,
                required,
                alive,
            } => {
                write_consistency(*consistency, dst);
                dst.put_i32(*required);
                dst.put_i32(*alive);
            }
            ErrorKind::WriteTimeout {
                consistency,
                received,
                block_for,
                write_type,
            } => {
                write_consistency(*consistency, dst);
                dst.put_i32(*received);
                dst.put_i32(*block_for);
                put_string(dst, write_type.as_str());
            }
            ErrorKind::ReadTimeout {
                consistency,
                received,
                block_for,
                data_present,
            } => {
                write_consistency(*consistency, dst);
                dst.put_i32(*received);
                dst.put_i32(*block_for);
                dst.put_u8(u8::from(*data_present));
            }
            ErrorKind::ReadFailure {
                consistency,
                received,
                block_for,
                num_failures,
                reasons,
                data_present,
            } => {
                write_consistency(*consistency, dst);
                dst.put_i32(*received);
                dst.put_i32(*block_for);
                write_failures(dst, *num_failures, reasons, version);
                dst.put_u8(u8::from(*data_present));
            }
            ErrorKind::FunctionFailure {
                keyspace,
                function,
                arg_types,
            } => {
                put_string(dst, keyspace);
                put_string(dst, function);
                put_string_list(dst, arg_types);
            }
            ErrorKind::WriteFailure {
                consistency,
                received,
                block_for,
                num_failures,
                reasons,
                write_type,
            } => {
                write_consistency(*consistency, dst);
                dst.put_i32(*received);
                dst.put_i32(*block_for);
                write_failures(dst, *num_failures, reasons, version);
                put_string(dst, write_type.as_str());
            }
            ErrorKind::CasWriteUnknown {
                consistency,
                received,
                block_for,
            } => {
                write_consistency(*consistency, dst);
                dst.put_i32(*received);
                dst.put_i32(*block_for);
            }
            ErrorKind::AlreadyExists { keyspace, table } => {
                put_string(dst, keyspace);
                put_string(dst, table);
            }
            ErrorKind::Unprepared { id } => put_short_bytes(dst, id),
            _ => {}
        }
    }
}

/// What an error code that `version` lacks becomes there, as Cassandra
/// sends it: CAS_WRITE_UNKNOWN and CDC_WRITE_FAILURE (v5) a write timeout
/// or failure; in v3, read and write failures timeouts and a function
/// failure an invalid request. `None` when the kind exists in `version`.
fn older_kind(kind: &ErrorKind, version: ProtocolVersion) -> Option<ErrorKind> {
    let older = match kind {
        ErrorKind::CasWriteUnknown {
            consistency,
            received,
            block_for,
        } if !version.is_v5() => ErrorKind::WriteTimeout {
            consistency: *consistency,
            received: *received,
            block_for: *block_for,
            write_type: WriteType::Cas,
        },
        ErrorKind::CdcWriteFailure if !version.is_v5() => ErrorKind::WriteFailure {
            consistency: Consistency::One,
            received: 0,
            block_for: 1,
            num_failures: 1,
            reasons: Vec::new(),
            write_type: WriteType::Cdc,
        },
        ErrorKind::ReadFailure {
            consistency,
            received,
            block_for,
            data_present,
            ..
        } if version.is_v3() => ErrorKind::ReadTimeout {
            consistency: *consistency,
            received: *received,
            block_for: *block_for,
            data_present: *data_present,
        },
        ErrorKind::WriteFailure {
            consistency,
            received,
            block_for,
            write_type,
            ..
        } if version.is_v3() => ErrorKind::WriteTimeout {
            consistency: *consistency,
            received: *received,
            block_for: *block_for,
            write_type: write_type.clone(),
        },
        ErrorKind::FunctionFailure { .. } if version.is_v3() => ErrorKind::Invalid,
        _ => return None,
    };
    // A v5 kind may map to one v3 lacks too (CDC: a write failure).
    Some(older_kind(&older, version).unwrap_or(older))
}

/// `<numfailures>` (v4) or `<reasonmap>` (v5) of a read or write failure.
fn read_failures(r: &mut Reader, version: ProtocolVersion) -> Result<(i32, Vec<(IpAddr, u16)>)> {
    if !version.is_v5() {
        return Ok((r.i32()?, Vec::new()));
    }
    // Each entry is at least a 4-byte address with its size byte and a code.
    let n = r.count_i32(7, "failure reason count")?;
    let mut reasons = Vec::with_capacity(n);
    for _ in 0..n {
        let len = r.u8()?;
        let ip = r.ip_of_len(usize::from(len))?;
        reasons.push((ip, r.u16()?));
    }
    Ok((n as i32, reasons))
}

/// Writes failures for `version`; v5 has no count without addresses, so a
/// count above the known reasons is not representable there.
fn write_failures(
    dst: &mut BytesMut,
    num_failures: i32,
    reasons: &[(IpAddr, u16)],
    version: ProtocolVersion,
) {
    if !version.is_v5() {
        dst.put_i32(num_failures.max(reasons.len().min(i32::MAX as usize) as i32));
        return;
    }
    dst.put_i32(reasons.len().min(i32::MAX as usize) as i32);
    for (ip, code) in reasons {
        dst.put_u8(if ip.is_ipv4() { 4 } else { 16 });
        put_ip(dst, ip);
        dst.put_u16(*code);
    }
}

impl fmt::Display for CqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error 0x{:04X}: {}", self.kind.code(), self.message)
    }
}

/// Rows-metadata flag bits (spec section 4.2.5.2).
mod mflags {
    pub const GLOBAL_TABLES_SPEC: i32 = 0x0001;
    pub const HAS_MORE_PAGES: i32 = 0x0002;
    pub const NO_METADATA: i32 = 0x0004;
    /// v5: a new result metadata id and the full metadata follow.
    pub const METADATA_CHANGED: i32 = 0x0008;
}

/// `<metadata>` of a Rows result (also a Prepared result's result metadata).
///
/// The global-table-spec flag is not stored: the encoder uses it whenever
/// all columns share one keyspace and table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RowsMetadata {
    /// Number of columns in each row; equals `columns.len()` unless
    /// `no_metadata` is set.
    pub columns_count: usize,
    /// Column specs; empty when `no_metadata` is set.
    pub columns: Vec<ColumnSpec>,
    /// Set when the client asked to skip metadata (or for non-SELECT
    /// prepared statements).
    pub no_metadata: bool,
    /// Present iff more pages follow (Has_more_pages).
    pub paging_state: Option<Bytes>,
    /// v5: set when the client's result metadata id of the prepared
    /// statement is stale: the Metadata_changed flag, with this new id and
    /// the full metadata (even if the client asked to skip it). Not sent
    /// in v4.
    pub new_metadata_id: Option<Bytes>,
}

impl RowsMetadata {
    /// Metadata describing `columns`.
    pub fn new(columns: Vec<ColumnSpec>) -> Self {
        RowsMetadata {
            columns_count: columns.len(),
            columns,
            no_metadata: false,
            paging_state: None,
            new_metadata_id: None,
        }
    }

    /// The empty metadata of a non-SELECT prepared statement.
    pub fn empty() -> Self {
        RowsMetadata {
            columns_count: 0,
            columns: Vec::new(),
            no_metadata: true,
            paging_state: None,
            new_metadata_id: None,
        }
    }

    /// The same shape without column specs (for Skip_metadata requests).
    pub fn without_specs(mut self) -> Self {
        self.columns_count = if self.no_metadata {
            self.columns_count
        } else {
            self.columns.len()
        };
        self.columns.clear();
        self.no_metadata = true;
        self
    }

    fn read(r: &mut Reader, version: ProtocolVersion) -> Result<Self> {
        let f = r.i32()?;
        let n = r.count_i32(0, "column count")?;
        let paging_state = if f & mflags::HAS_MORE_PAGES != 0 {
            r.bytes()?
        } else {
            None
        };
        let new_metadata_id = if version.is_v5() && f & mflags::METADATA_CHANGED != 0 {
            Some(r.short_bytes()?)
        } else {
            None
        };
        if f & mflags::NO_METADATA != 0 {
            return Ok(RowsMetadata {
                columns_count: n,
                columns: Vec::new(),
                no_metadata: true,
                paging_state,
                new_metadata_id,
            });
        }
        // Each spec is at least a name string and a type id.
        r.check_min(n, 4, "column count")?;
        let columns = read_col_specs(r, f & mflags::GLOBAL_TABLES_SPEC != 0, n)?;
        Ok(RowsMetadata {
            columns_count: n,
            columns,
            no_metadata: false,
            paging_state,
            new_metadata_id,
        })
    }

    fn write(&self, dst: &mut BytesMut, version: ProtocolVersion) {
        let global = !self.no_metadata && has_global_spec(&self.columns);
        let changed = self.new_metadata_id.as_ref().filter(|_| version.is_v5());
        let mut f = 0;
        if changed.is_some() {
            f |= mflags::METADATA_CHANGED;
        }
        if global {
            f |= mflags::GLOBAL_TABLES_SPEC;
        }
        if self.paging_state.is_some() {
            f |= mflags::HAS_MORE_PAGES;
        }
        if self.no_metadata {
            f |= mflags::NO_METADATA;
        }
        dst.put_i32(f);
        let n = if self.no_metadata {
            self.columns_count
        } else {
            self.columns.len()
        };
        dst.put_i32(n.min(i32::MAX as usize) as i32);
        if let Some(p) = &self.paging_state {
            put_bytes(dst, Some(p));
        }
        if let Some(id) = changed {
            put_short_bytes(dst, id);
        }
        if !self.no_metadata {
            write_col_specs(dst, global, &self.columns, version);
        }
    }
}

/// A Rows result: metadata and rows of serialized values (`None` = null).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rows {
    pub metadata: RowsMetadata,
    pub rows: Vec<Vec<Option<Bytes>>>,
}

/// Most rows a zero-column result may claim: such rows take no bytes, so
/// the count is the only bound on the allocation.
const MAX_EMPTY_ROWS: usize = 1 << 16;

impl Rows {
    fn read(r: &mut Reader, version: ProtocolVersion) -> Result<Self> {
        let metadata = RowsMetadata::read(r, version)?;
        let cols = metadata.columns_count;
        let count = r.i32()?;
        let count = usize::try_from(count)
            .map_err(|_| Error::protocol(format!("negative row count {count}")))?;
        if cols == 0 && count > MAX_EMPTY_ROWS {
            return Err(Error::protocol(format!("{count} rows without columns")));
        }
        r.check_min(count.saturating_mul(cols), 4, "row values")?;
        let mut rows = Vec::with_capacity(count);
        for _ in 0..count {
            let mut row = Vec::with_capacity(cols);
            for _ in 0..cols {
                row.push(r.bytes()?);
            }
            rows.push(row);
        }
        Ok(Rows { metadata, rows })
    }

    fn write(&self, dst: &mut BytesMut, version: ProtocolVersion) {
        self.metadata.write(dst, version);
        dst.put_i32(self.rows.len().min(i32::MAX as usize) as i32);
        for row in &self.rows {
            for v in row {
                put_bytes(dst, v.as_deref());
            }
        }
    }
}

/// `<metadata>` of a Prepared result: the bind markers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PreparedMetadata {
    /// For each partition-key column in key order, the index of its bind
    /// marker; empty if some key column is not bound by a plain marker.
    pub pk_indexes: Vec<u16>,
    /// One spec per bind marker, named after the marker or its column.
    pub columns: Vec<ColumnSpec>,
}

impl PreparedMetadata {
    fn read(r: &mut Reader, version: ProtocolVersion) -> Result<Self> {
        let f = r.i32()?;
        let n = r.count_i32(4, "bind marker count")?;
        // v3 has no partition key indexes.
        let pk = if version.is_v3() {
            0
        } else {
            r.count_i32(2, "pk index count")?
        };
        let mut pk_indexes = Vec::with_capacity(pk);
        for _ in 0..pk {
            pk_indexes.push(r.u16()?);
        }
        let columns = read_col_specs(r, f & mflags::GLOBAL_TABLES_SPEC != 0, n)?;
        Ok(PreparedMetadata {
            pk_indexes,
            columns,
        })
    }

    fn write(&self, dst: &mut BytesMut, version: ProtocolVersion) {
        let global = has_global_spec(&self.columns);
        dst.put_i32(if global {
            mflags::GLOBAL_TABLES_SPEC
        } else {
            0
        });
        dst.put_i32(self.columns.len().min(i32::MAX as usize) as i32);
        if !version.is_v3() {
            dst.put_i32(self.pk_indexes.len().min(i32::MAX as usize) as i32);
            for i in &self.pk_indexes {
                dst.put_u16(*i);
            }
        }
        write_col_specs(dst, global, &self.columns, version);
    }
}

/// A Prepared result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The statement id; must be identical on every node for the same
    /// keyspace and query text.
    pub id: Bytes,
    /// v5: identifies `result_metadata` (Cassandra: an MD5 of it); clients
    /// send it back in EXECUTE. Not sent in v4.
    pub result_metadata_id: Bytes,
    pub metadata: PreparedMetadata,
    pub result_metadata: RowsMetadata,
}

/// `<change_type>` of a schema change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaChangeType {
    Created,
    Updated,
    Dropped,
}

impl SchemaChangeType {
    fn as_str(self) -> &'static str {
        match self {
            SchemaChangeType::Created => "CREATED",
            SchemaChangeType::Updated => "UPDATED",
            SchemaChangeType::Dropped => "DROPPED",
        }
    }
}

/// `<target><options>` of a schema change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaChangeTarget {
    Keyspace(String),
    Table {
        keyspace: String,
        name: String,
    },
    Type {
        keyspace: String,
        name: String,
    },
    Function {
        keyspace: String,
        name: String,
        arg_types: Vec<String>,
    },
    Aggregate {
        keyspace: String,
        name: String,
        arg_types: Vec<String>,
    },
}

/// A Schema_change result, or the body of a SCHEMA_CHANGE event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaChange {
    pub change: SchemaChangeType,
    pub target: SchemaChangeTarget,
}

impl SchemaChange {
    fn read(r: &mut Reader) -> Result<Self> {
        let change = match r.string()?.as_str() {
            "CREATED" => SchemaChangeType::Created,
            "UPDATED" => SchemaChangeType::Updated,
            "DROPPED" => SchemaChangeType::Dropped,
            other => {
                return Err(Error::protocol(format!(
                    "unknown schema change type {other:?}"
                )))
            }
        };
        let target = match r.string()?.as_str() {
            "KEYSPACE" => SchemaChangeTarget::Keyspace(r.string()?),
            "TABLE" => SchemaChangeTarget::Table {
                keyspace: r.string()?,
                name: r.string()?,
            },
            "TYPE" => SchemaChangeTarget::Type {
                keyspace: r.string()?,
                name: r.string()?,
            },
            "FUNCTION" => SchemaChangeTarget::Function {
                keyspace: r.string()?,
                name: r.string()?,
                arg_types: r.string_list()?,
            },
            "AGGREGATE" => SchemaChangeTarget::Aggregate {
                keyspace: r.string()?,
                name: r.string()?,
                arg_types: r.string_list()?,
            },
            other => {
                return Err(Error::protocol(format!(
                    "unknown schema change target {other:?}"
                )))
            }
        };
        Ok(SchemaChange { change, target })
    }

    fn write(&self, dst: &mut BytesMut) {
        put_string(dst, self.change.as_str());
        match &self.target {
            SchemaChangeTarget::Keyspace(ks) => {
                put_string(dst, "KEYSPACE");
                put_string(dst, ks);
            }
            SchemaChangeTarget::Table { keyspace, name } => {
                put_string(dst, "TABLE");
                put_string(dst, keyspace);
                put_string(dst, name);
            }
            SchemaChangeTarget::Type { keyspace, name } => {
                put_string(dst, "TYPE");
                put_string(dst, keyspace);
                put_string(dst, name);
            }
            SchemaChangeTarget::Function {
                keyspace,
                name,
                arg_types,
            } => {
                put_string(dst, "FUNCTION");
                put_string(dst, keyspace);
                put_string(dst, name);
                put_string_list(dst, arg_types);
            }
            SchemaChangeTarget::Aggregate {
                keyspace,
                name,
                arg_types,
            } => {
                put_string(dst, "AGGREGATE");
                put_string(dst, keyspace);
                put_string(dst, name);
                put_string_list(dst, arg_types);
            }
        }
    }
}

/// The body of a RESULT response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CqlResult {
    Void,
    Rows(Rows),
    /// The answer to `USE ks`; the server records the keyspace.
    SetKeyspace(String),
    Prepared(Prepared),
    SchemaChange(SchemaChange),
}

impl CqlResult {
    fn read(r: &mut Reader, version: ProtocolVersion) -> Result<Self> {
        Ok(match r.i32()? {
            0x0001 => CqlResult::Void,
            0x0002 => CqlResult::Rows(Rows::read(r, version)?),
            0x0003 => CqlResult::SetKeyspace(r.string()?),
            0x0004 => {
                let id = r.short_bytes()?;
                let result_metadata_id = if version.is_v5() {
                    r.short_bytes()?
                } else {
                    Bytes::new()
                };
                let metadata = PreparedMetadata::read(r, version)?;
                let result_metadata = RowsMetadata::read(r, version)?;
                CqlResult::Prepared(Prepared {
                    id,
                    result_metadata_id,
                    metadata,
                    result_metadata,
                })
            }
            0x0005 => CqlResult::SchemaChange(SchemaChange::read(r)?),
            k => return Err(Error::protocol(format!("unknown result kind {k}"))),
        })
    }

    fn write(&self, dst: &mut BytesMut, version: ProtocolVersion) {
        match self {
            CqlResult::Void => dst.put_i32(0x0001),
            CqlResult::Rows(rows) => {
                dst.put_i32(0x0002);
                rows.write(dst, version);
            }
            CqlResult::SetKeyspace(ks) => {
                dst.put_i32(0x0003);
                put_string(dst, ks);
            }
            CqlResult::Prepared(p) => {
                dst.put_i32(0x0004);
                put_short_bytes(dst, &p.id);
                if version.is_v5() {
                    put_short_bytes(dst, &p.result_metadata_id);
                }
                p.metadata.write(dst, version);
                p.result_metadata.write(dst, version);
            }
            CqlResult::SchemaChange(sc) => {
                dst.put_i32(0x0005);
                sc.write(dst);
            }
        }
    }
}

/// Event types a connection can REGISTER for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    TopologyChange,
    StatusChange,
    SchemaChange,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::TopologyChange => "TOPOLOGY_CHANGE",
            EventType::StatusChange => "STATUS_CHANGE",
            EventType::SchemaChange => "SCHEMA_CHANGE",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self> {
        match s {
            "TOPOLOGY_CHANGE" => Ok(EventType::TopologyChange),
            "STATUS_CHANGE" => Ok(EventType::StatusChange),
            "SCHEMA_CHANGE" => Ok(EventType::SchemaChange),
            other => Err(Error::protocol(format!("unknown event type {other:?}"))),
        }
    }
}

/// `<change>` of a TOPOLOGY_CHANGE event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopologyChangeType {
    NewNode,
    RemovedNode,
    /// Sent by Cassandra 3+ though not in the v4 text; drivers accept it.
    MovedNode,
}

/// `<change>` of a STATUS_CHANGE event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusChangeType {
    Up,
    Down,
}

/// A server-pushed EVENT (always on stream -1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    TopologyChange {
        change: TopologyChangeType,
        addr: SocketAddr,
    },
    StatusChange {
        change: StatusChangeType,
        addr: SocketAddr,
    },
    SchemaChange(SchemaChange),
}

impl Event {
    pub fn event_type(&self) -> EventType {
        match self {
            Event::TopologyChange { .. } => EventType::TopologyChange,
            Event::StatusChange { .. } => EventType::StatusChange,
            Event::SchemaChange(_) => EventType::SchemaChange,
        }
    }

    fn read(r: &mut Reader) -> Result<Self> {
        let t = EventType::parse(&r.string()?)?;
        Ok(match t {
            EventType::TopologyChange => {
                let change = match r.string()?.as_str() {
                    "NEW_NODE" => TopologyChangeType::NewNode,
                    "REMOVED_NODE" => TopologyChangeType::RemovedNode,
                    "MOVED_NODE" => TopologyChangeType::MovedNode,
                    other => {
                        return Err(Error::protocol(format!(
                            "unknown topology change {other:?}"
                        )))
                    }
                };
                Event::TopologyChange {
                    change,
                    addr: r.inet()?,
                }
            }
            EventType::StatusChange => {
                let change = match r.string()?.as_str() {
                    "UP" => StatusChangeType::Up,
                    "DOWN" => StatusChangeType::Down,
                    other => {
                        return Err(Error::protocol(format!("unknown status change {other:?}")))
                    }
                };
                Event::StatusChange {
                    change,
                    addr: r.inet()?,
                }
            }
            EventType::SchemaChange => Event::SchemaChange(SchemaChange::read(r)?),
        })
    }

    fn write(&self, dst: &mut BytesMut) {
        put_string(dst, self.event_type().as_str());
        match self {
            Event::TopologyChange { change, addr } => {
                put_string(
                    dst,
                    match change {
                        TopologyChangeType::NewNode => "NEW_NODE",
                        TopologyChangeType::RemovedNode => "REMOVED_NODE",
                        TopologyChangeType::MovedNode => "MOVED_NODE",
                    },
                );
                put_inet(dst, addr);
            }
            Event::StatusChange { change, addr } => {
                put_string(
                    dst,
                    match change {
                        StatusChangeType::Up => "UP",
                        StatusChangeType::Down => "DOWN",
                    },
                );
                put_inet(dst, addr);
            }
            Event::SchemaChange(sc) => sc.write(dst),
        }
    }
}

/// Any response message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Error(CqlError),
    Ready,
    /// AUTHENTICATE with the authenticator class name (never sent by Gyre).
    Authenticate(String),
    /// SUPPORTED: option name to supported values.
    Supported(BTreeMap<String, Vec<String>>),
    Result(CqlResult),
    Event(Event),
    AuthChallenge(Option<Bytes>),
    AuthSuccess(Option<Bytes>),
}

impl Response {
    /// An ERROR response.
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Self {
        Response::Error(CqlError::new(kind, message))
    }

    /// A RESULT Void.
    pub fn void() -> Self {
        Response::Result(CqlResult::Void)
    }

    pub fn opcode(&self) -> Opcode {
        match self {
            Response::Error(_) => Opcode::Error,
            Response::Ready => Opcode::Ready,
            Response::Authenticate(_) => Opcode::Authenticate,
            Response::Supported(_) => Opcode::Supported,
            Response::Result(_) => Opcode::Result,
            Response::Event(_) => Opcode::Event,
            Response::AuthChallenge(_) => Opcode::AuthChallenge,
            Response::AuthSuccess(_) => Opcode::AuthSuccess,
        }
    }

    /// Decodes a v4 message body. Trailing bytes are ignored (spec 4.2).
    pub fn decode(opcode: u8, body: Bytes) -> Result<Self> {
        Self::decode_versioned(opcode, body, ProtocolVersion::V4)
    }

    /// [`Response::decode`] for a protocol version.
    pub fn decode_versioned(opcode: u8, body: Bytes, version: ProtocolVersion) -> Result<Self> {
        let mut r = Reader::new(body);
        Ok(match Opcode::try_from(opcode)? {
            Opcode::Error => Response::Error(CqlError::read(&mut r, version)?),
            Opcode::Ready => Response::Ready,
            Opcode::Authenticate => Response::Authenticate(r.string()?),
            Opcode::Supported => Response::Supported(r.string_multimap()?),
            Opcode::Result => Response::Result(CqlResult::read(&mut r, version)?),
            Opcode::Event => Response::Event(Event::read(&mut r)?),
            Opcode::AuthChallenge => Response::AuthChallenge(r.bytes()?),
            Opcode::AuthSuccess => Response::AuthSuccess(r.bytes()?),
            other => {
                return Err(Error::protocol(format!(
                    "{other:?} is not a response opcode"
                )))
            }
        })
    }

    /// Appends the v4 message body to `dst`.
    pub fn encode_body(&self, dst: &mut BytesMut) {
        self.encode_body_versioned(dst, ProtocolVersion::V4);
    }

    /// Appends the message body in `version`'s form to `dst`.
    pub fn encode_body_versioned(&self, dst: &mut BytesMut, version: ProtocolVersion) {
        match self {
            Response::Error(e) => e.write(dst, version),
            Response::Ready => {}
            Response::Authenticate(class) => put_string(dst, class),
            Response::Supported(map) => put_string_multimap(dst, map),
            Response::Result(r) => r.write(dst, version),
            Response::Event(e) => e.write(dst),
            Response::AuthChallenge(t) | Response::AuthSuccess(t) => put_bytes(dst, t.as_deref()),
        }
    }
}

/// A response with its frame-level envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseFrame {
    /// The protocol version of the envelope (v4 unless set).
    pub version: ProtocolVersion,
    pub stream: i16,
    /// Tracing session id (flag 0x02).
    pub tracing_id: Option<Uuid>,
    /// Server warnings (flag 0x08).
    pub warnings: Vec<String>,
    /// Custom payload (flag 0x04).
    pub custom_payload: Option<BTreeMap<String, Option<Bytes>>>,
    pub response: Response,
}

impl ResponseFrame {
    pub fn new(stream: i16, response: Response) -> Self {
        ResponseFrame {
            version: ProtocolVersion::V4,
            stream,
            tracing_id: None,
            warnings: Vec::new(),
            custom_payload: None,
            response,
        }
    }

    /// Decodes a raw frame, undoing compression first.
    pub fn decode(frame: &Frame, compression: Compression, max_frame_bytes: usize) -> Result<Self> {
        let body = frame.decompressed_body(compression, max_frame_bytes)?;
        let mut r = Reader::new(body);
        let tracing_id = if frame.flags & flags::TRACING != 0 {
            Some(r.uuid()?)
        } else {
            None
        };
        let warnings = if frame.flags & flags::WARNING != 0 {
            r.string_list()?
        } else {
            Vec::new()
        };
        let custom_payload = if frame.flags & flags::CUSTOM_PAYLOAD != 0 {
            Some(r.bytes_map()?)
        } else {
            None
        };
        let version = frame.protocol_version();
        let response = Response::decode_versioned(frame.opcode, r.rest(), version)?;
        Ok(ResponseFrame {
            version,
            stream: frame.stream,
            tracing_id,
            warnings,
            custom_payload,
            response,
        })
    }

    /// Builds the raw frame; with lz4 negotiated, non-empty bodies are
    /// compressed.
    pub fn to_frame(&self, compression: Compression) -> Frame {
        let mut body = BytesMut::new();
        let mut f = self.write_body(&mut body);
        let mut body = body.freeze();
        if compression == Compression::Lz4 && !body.is_empty() && !self.version.is_v5() {
            body = lz4_compress(&body);
            f |= flags::COMPRESSION;
        }
        Frame {
            version: self.version.response_byte(),
            flags: f,
            stream: self.stream,
            opcode: self.response.opcode() as u8,
            body,
        }
    }

    /// Appends the whole encoded frame (what [`ResponseFrame::to_frame`]
    /// then [`Frame::encode`] produce) straight to `dst`, typically a
    /// connection's output buffer, and returns the body's length. With lz4
    /// the uncompressed body goes through `scratch` first.
    pub fn encode_into(
        &self,
        compression: Compression,
        dst: &mut BytesMut,
        scratch: &mut BytesMut,
    ) -> usize {
        let start = dst.len();
        dst.put_u8(self.version.response_byte());
        dst.put_u8(0);
        dst.put_i16(self.stream);
        dst.put_u8(self.response.opcode() as u8);
        dst.put_u32(0);
        let body_start = dst.len();
        let mut f = if compression == Compression::Lz4 {
            scratch.clear();
            let f = self.write_body(scratch);
            if !scratch.is_empty() {
                lz4_compress_into(scratch, dst);
            }
            f
        } else {
            self.write_body(dst)
        };
        if compression == Compression::Lz4 && dst.len() > body_start {
            f |= flags::COMPRESSION;
        }
        let len = dst.len() - body_start;
        dst[start + 1] = f;
        dst[start + 5..body_start].copy_from_slice(&(len as u32).to_be_bytes());
        len
    }

    /// Appends the uncompressed body (envelope fields, then the message)
    /// and returns the frame flags it needs.
    fn write_body(&self, body: &mut BytesMut) -> u8 {
        let mut f = 0u8;
        if let Some(id) = &self.tracing_id {
            f |= flags::TRACING;
            put_uuid(body, id);
        }
        // v3 has neither warnings nor custom payloads: they are left out.
        if !self.warnings.is_empty() && !self.version.is_v3() {
            f |= flags::WARNING;
            put_string_list(body, &self.warnings);
        }
        if let (Some(p), false) = (&self.custom_payload, self.version.is_v3()) {
            f |= flags::CUSTOM_PAYLOAD;
            put_bytes_map(body, p);
        }
        self.response.encode_body_versioned(body, self.version);
        f
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn encode_into_matches_to_frame() {
        let mut with_envelope = ResponseFrame::new(
            7,
            Response::error(ErrorKind::Overloaded, "Server is in overloaded state"),
        );
        with_envelope.warnings = vec!["w".into()];
        let frames = [
            ResponseFrame::new(-1, Response::Ready),
            ResponseFrame::new(3, Response::void()),
            ResponseFrame::new(
                300,
                Response::Result(CqlResult::SetKeyspace("ks".repeat(100))),
            ),
            with_envelope,
        ];
        let mut out = BytesMut::from(&b"prefix"[..]);
        let mut scratch = BytesMut::new();
        let mut expected = b"prefix".to_vec();
        for compression in [Compression::None, Compression::Lz4] {
            for rf in &frames {
                let frame = rf.to_frame(compression);
                expected.extend_from_slice(&frame.to_bytes());
                let n = rf.encode_into(compression, &mut out, &mut scratch);
                assert_eq!(n, frame.body.len());
            }
        }
        assert_eq!(&out[..], &expected[..]);
    }
}
