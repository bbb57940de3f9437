//! Request messages (spec section 4.1) and request frames.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{Error, Result};
use crate::frame::{flags, lz4_compress, Compression, Frame, Opcode, ProtocolVersion};
use crate::response::EventType;
use crate::types::{read_consistency, write_consistency, Consistency};
use crate::wire::{
    put_bytes, put_bytes_map, put_long_string, put_short_bytes, put_string, put_string_list,
    put_string_map, put_value, Reader, Value,
};

/// Query-parameter flag bits (spec section 4.1.4): a `[byte]` in v4, an
/// `[int]` from v5 on.
mod qflags {
    pub const VALUES: u32 = 0x01;
    pub const SKIP_METADATA: u32 = 0x02;
    pub const PAGE_SIZE: u32 = 0x04;
    pub const PAGING_STATE: u32 = 0x08;
    pub const SERIAL_CONSISTENCY: u32 = 0x10;
    pub const DEFAULT_TIMESTAMP: u32 = 0x20;
    pub const NAMES_FOR_VALUES: u32 = 0x40;
    /// v5.
    pub const WITH_KEYSPACE: u32 = 0x80;
    /// v5.
    pub const NOW_IN_SECONDS: u32 = 0x100;
}

/// PREPARE flag (v5): a keyspace follows the query.
const PREPARE_WITH_KEYSPACE: u32 = 0x01;

fn read_flags(r: &mut Reader, version: ProtocolVersion) -> Result<u32> {
    if version.is_v5() {
        Ok(r.i32()? as u32)
    } else {
        Ok(u32::from(r.u8()?))
    }
}

fn write_flags(dst: &mut BytesMut, f: u32, version: ProtocolVersion) {
    if version.is_v5() {
        dst.put_u32(f);
    } else {
        dst.put_u8(f as u8);
    }
}

/// The v5 fields that follow a QUERY's, EXECUTE's or BATCH's timestamp.
fn read_v5_tail(r: &mut Reader, f: u32) -> Result<(Option<String>, Option<i32>)> {
    let keyspace = if f & qflags::WITH_KEYSPACE != 0 {
        Some(r.string()?)
    } else {
        None
    };
    let now = if f & qflags::NOW_IN_SECONDS != 0 {
        Some(r.i32()?)
    } else {
        None
    };
    Ok((keyspace, now))
}

/// Bound values of a statement, positional or by marker name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Values {
    Positional(Vec<Value>),
    Named(Vec<(String, Value)>),
}

impl Default for Values {
    fn default() -> Self {
        Values::Positional(Vec::new())
    }
}

impl Values {
    pub fn len(&self) -> usize {
        match self {
            Values::Positional(v) => v.len(),
            Values::Named(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn is_named(&self) -> bool {
        matches!(self, Values::Named(_))
    }

    fn read(r: &mut Reader, named: bool) -> Result<Self> {
        let n = r.count_u16(4, "value count")?;
        if named {
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                let name = r.string()?;
                out.push((name, r.value()?));
            }
            Ok(Values::Named(out))
        } else {
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                out.push(r.value()?);
            }
            Ok(Values::Positional(out))
        }
    }

    fn write(&self, dst: &mut BytesMut) {
        let n = self.len().min(usize::from(u16::MAX));
        dst.put_u16(n as u16);
        match self {
            Values::Positional(v) => v.iter().take(n).for_each(|v| put_value(dst, v)),
            Values::Named(v) => v.iter().take(n).for_each(|(name, v)| {
                put_string(dst, name);
                put_value(dst, v);
            }),
        }
    }
}

/// `<query_parameters>` of QUERY and EXECUTE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryParameters {
    pub consistency: Consistency,
    pub values: Values,
    /// Ask for Rows results without column metadata.
    pub skip_metadata: bool,
    pub page_size: Option<i32>,
    pub paging_state: Option<Bytes>,
    pub serial_consistency: Option<Consistency>,
    /// Client-side write timestamp in microseconds.
    pub default_timestamp: Option<i64>,
    /// v5: the keyspace of the request, over the connection's (QUERY only;
    /// ignored on EXECUTE, whose statement has its keyspace).
    pub keyspace: Option<String>,
    /// v5: "now" for the request, in seconds since the epoch: TTL expiry of
    /// reads and local deletion times of writes (for testing).
    pub now_in_seconds: Option<i32>,
}

impl Default for QueryParameters {
    fn default() -> Self {
        QueryParameters {
            consistency: Consistency::One,
            values: Values::default(),
            skip_metadata: false,
            page_size: None,
            paging_state: None,
            serial_consistency: None,
            default_timestamp: None,
            keyspace: None,
            now_in_seconds: None,
        }
    }
}

impl QueryParameters {
    fn read(r: &mut Reader, version: ProtocolVersion) -> Result<Self> {
        let consistency = read_consistency(r)?;
        let f = read_flags(r, version)?;
        let values = if f & qflags::VALUES != 0 {
            Values::read(r, f & qflags::NAMES_FOR_VALUES != 0)?
        } else {
            Values::default()
        };
        let page_size = if f & qflags::PAGE_SIZE != 0 {
            Some(r.i32()?)
        } else {
            None
        };
        let paging_state = if f & qflags::PAGING_STATE != 0 {
            r.bytes()?
        } else {
            None
        };
        let serial_consistency = if f & qflags::SERIAL_CONSISTENCY != 0 {
            Some(read_consistency(r)?)
        } else {
            None
        };
        let default_timestamp = if f & qflags::DEFAULT_TIMESTAMP != 0 {
            Some(r.i64()?)
        } else {
            None
        };
        let (keyspace, now_in_seconds) = if version.is_v5() {
            read_v5_tail(r, f)?
        } else {
            (None, None)
        };
        Ok(QueryParameters {
            consistency,
            values,
            skip_metadata: f & qflags::SKIP_METADATA != 0,
            page_size,
            paging_state,
            serial_consistency,
            default_timestamp,
            keyspace,
            now_in_seconds,
        })
    }

    fn write(&self, dst: &mut BytesMut, version: ProtocolVersion) {
        write_consistency(self.consistency, dst);
        let mut f = 0u32;
        if !self.values.is_empty() {
            f |= qflags::VALUES;
            if self.values.is_named() {
                f |= qflags::NAMES_FOR_VALUES;
            }
        }
        if self.skip_metadata {
            f |= qflags::SKIP_METADATA;
        }
        if self.page_size.is_some() {
            f |= qflags::PAGE_SIZE;
        }
        if self.paging_state.is_some() {
            f |= qflags::PAGING_STATE;
        }
        if self.serial_consistency.is_some() {
            f |= qflags::SERIAL_CONSISTENCY;
        }
        if self.default_timestamp.is_some() {
            f |= qflags::DEFAULT_TIMESTAMP;
        }
        if version.is_v5() {
            if self.keyspace.is_some() {
                f |= qflags::WITH_KEYSPACE;
            }
            if self.now_in_seconds.is_some() {
                f |= qflags::NOW_IN_SECONDS;
            }
        }
        write_flags(dst, f, version);
        if !self.values.is_empty() {
            self.values.write(dst);
        }
        if let Some(p) = self.page_size {
            dst.put_i32(p);
        }
        if let Some(s) = &self.paging_state {
            put_bytes(dst, Some(s));
        }
        if let Some(c) = self.serial_consistency {
            write_consistency(c, dst);
        }
        if let Some(t) = self.default_timestamp {
            dst.put_i64(t);
        }
        write_v5_tail(dst, &self.keyspace, self.now_in_seconds, version);
    }
}

fn write_v5_tail(
    dst: &mut BytesMut,
    keyspace: &Option<String>,
    now: Option<i32>,
    version: ProtocolVersion,
) {
    if version.is_v5() {
        if let Some(ks) = keyspace {
            put_string(dst, ks);
        }
        if let Some(n) = now {
            dst.put_i32(n);
        }
    }
}

/// QUERY: a CQL string with parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub query: String,
    pub params: QueryParameters,
}

/// PREPARE: a CQL string to prepare.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Prepare {
    pub query: String,
    /// v5: the keyspace to prepare in, over the connection's.
    pub keyspace: Option<String>,
}

/// EXECUTE: a prepared statement id with parameters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Execute {
    pub id: Bytes,
    /// v5: the result metadata id the client holds for the statement (from
    /// PREPARED or a METADATA_CHANGED result); `None` in v4.
    pub result_metadata_id: Option<Bytes>,
    pub params: QueryParameters,
}

/// BATCH `<type>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchType {
    Logged,
    Unlogged,
    Counter,
}

/// One statement of a BATCH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchStatementKind {
    Query(String),
    Prepared(Bytes),
}

/// A statement of a BATCH with its positional values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchStatement {
    pub statement: BatchStatementKind,
    pub values: Vec<Value>,
}

/// BATCH: several DML statements applied together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub batch_type: BatchType,
    pub statements: Vec<BatchStatement>,
    pub consistency: Consistency,
    pub serial_consistency: Option<Consistency>,
    pub default_timestamp: Option<i64>,
    /// v5: the keyspace of unqualified statements, over the connection's.
    pub keyspace: Option<String>,
    /// v5: "now" in seconds (see [`QueryParameters::now_in_seconds`]).
    pub now_in_seconds: Option<i32>,
}

impl Batch {
    fn read(r: &mut Reader, version: ProtocolVersion) -> Result<Self> {
        let batch_type = match r.u8()? {
            0 => BatchType::Logged,
            1 => BatchType::Unlogged,
            2 => BatchType::Counter,
            t => return Err(Error::protocol(format!("unknown batch type {t}"))),
        };
        let n = r.count_u16(3, "batch statement count")?;
        let mut statements = Vec::with_capacity(n);
        for _ in 0..n {
            let statement = match r.u8()? {
                0 => BatchStatementKind::Query(r.long_string()?),
                1 => BatchStatementKind::Prepared(r.short_bytes()?),
                k => return Err(Error::protocol(format!("unknown batch statement kind {k}"))),
            };
            let count = r.count_u16(4, "batch value count")?;
            let mut values = Vec::with_capacity(count);
            for _ in 0..count {
                values.push(r.value()?);
            }
            statements.push(BatchStatement { statement, values });
        }
        let consistency = read_consistency(r)?;
        let f = read_flags(r, version)?;
        // The names flag follows the values it would describe, so they could
        // not be parsed; the spec calls it unimplementable and Cassandra
        // rejects it the same way.
        if f & qflags::NAMES_FOR_VALUES != 0 {
            return Err(Error::protocol(
                "names for values are not supported in BATCH",
            ));
        }
        let serial_consistency = if f & qflags::SERIAL_CONSISTENCY != 0 {
            Some(read_consistency(r)?)
        } else {
            None
        };
        let default_timestamp = if f & qflags::DEFAULT_TIMESTAMP != 0 {
            Some(r.i64()?)
        } else {
            None
        };
        let (keyspace, now_in_seconds) = if version.is_v5() {
            read_v5_tail(r, f)?
        } else {
            (None, None)
        };
        Ok(Batch {
            batch_type,
            statements,
            consistency,
            serial_consistency,
            default_timestamp,
            keyspace,
            now_in_seconds,
        })
    }

    fn write(&self, dst: &mut BytesMut, version: ProtocolVersion) {
        dst.put_u8(match self.batch_type {
            BatchType::Logged => 0,
            BatchType::Unlogged => 1,
            BatchType::Counter => 2,
        });
        let n = self.statements.len().min(usize::from(u16::MAX));
        dst.put_u16(n as u16);
        for s in &self.statements[..n] {
            match &s.statement {
                BatchStatementKind::Query(q) => {
                    dst.put_u8(0);
                    put_long_string(dst, q);
                }
                BatchStatementKind::Prepared(id) => {
                    dst.put_u8(1);
                    put_short_bytes(dst, id);
                }
            }
            let count = s.values.len().min(usize::from(u16::MAX));
            dst.put_u16(count as u16);
            s.values.iter().take(count).for_each(|v| put_value(dst, v));
        }
        write_consistency(self.consistency, dst);
        let mut f = 0u32;
        if self.serial_consistency.is_some() {
            f |= qflags::SERIAL_CONSISTENCY;
        }
        if self.default_timestamp.is_some() {
            f |= qflags::DEFAULT_TIMESTAMP;
        }
        if version.is_v5() {
            if self.keyspace.is_some() {
                f |= qflags::WITH_KEYSPACE;
            }
            if self.now_in_seconds.is_some() {
                f |= qflags::NOW_IN_SECONDS;
            }
        }
        write_flags(dst, f, version);
        if let Some(c) = self.serial_consistency {
            write_consistency(c, dst);
        }
        if let Some(t) = self.default_timestamp {
            dst.put_i64(t);
        }
        write_v5_tail(dst, &self.keyspace, self.now_in_seconds, version);
    }
}

/// Any request message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// STARTUP options (`CQL_VERSION`, `COMPRESSION`, driver keys...).
    Startup(BTreeMap<String, String>),
    /// AUTH_RESPONSE token. Gyre has no authenticator and rejects it.
    AuthResponse(Option<Bytes>),
    Options,
    Query(Query),
    Prepare(Prepare),
    Execute(Execute),
    Batch(Batch),
    Register(Vec<EventType>),
}

impl Request {
    pub fn opcode(&self) -> Opcode {
        match self {
            Request::Startup(_) => Opcode::Startup,
            Request::AuthResponse(_) => Opcode::AuthResponse,
            Request::Options => Opcode::Options,
            Request::Query(_) => Opcode::Query,
            Request::Prepare(_) => Opcode::Prepare,
            Request::Execute(_) => Opcode::Execute,
            Request::Batch(_) => Opcode::Batch,
            Request::Register(_) => Opcode::Register,
        }
    }

    /// Decodes a v4 message body (after any custom payload). Trailing bytes
    /// are ignored, as the spec asks, to allow future extensions.
    pub fn decode(opcode: u8, body: Bytes) -> Result<Self> {
        Self::decode_versioned(opcode, body, ProtocolVersion::V4)
    }

    /// [`Request::decode`] for a protocol version.
    pub fn decode_versioned(opcode: u8, body: Bytes, version: ProtocolVersion) -> Result<Self> {
        let mut r = Reader::new(body);
        let op = Opcode::try_from(opcode)?;
        Ok(match op {
            Opcode::Startup => Request::Startup(r.string_map()?),
            Opcode::AuthResponse => Request::AuthResponse(r.bytes()?),
            Opcode::Options => Request::Options,
            Opcode::Query => {
                let query = r.long_string()?;
                Request::Query(Query {
                    query,
                    params: QueryParameters::read(&mut r, version)?,
                })
            }
            Opcode::Prepare => {
                let query = r.long_string()?;
                let keyspace = if version.is_v5() && r.i32()? as u32 & PREPARE_WITH_KEYSPACE != 0 {
                    Some(r.string()?)
                } else {
                    None
                };
                Request::Prepare(Prepare { query, keyspace })
            }
            Opcode::Execute => {
                let id = r.short_bytes()?;
                let result_metadata_id = if version.is_v5() {
                    Some(r.short_bytes()?)
                } else {
                    None
                };
                Request::Execute(Execute {
                    id,
                    result_metadata_id,
                    params: QueryParameters::read(&mut r, version)?,
                })
            }
            Opcode::Batch => Request::Batch(Batch::read(&mut r, version)?),
            Opcode::Register => {
                let names = r.string_list()?;
                let types = names
                    .iter()
                    .map(|n| EventType::parse(n))
                    .collect::<Result<_>>()?;
                Request::Register(types)
            }
            other => {
                return Err(Error::protocol(format!(
                    "{other:?} is not a request opcode"
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
            Request::Startup(opts) => put_string_map(dst, opts),
            Request::AuthResponse(token) => put_bytes(dst, token.as_deref()),
            Request::Options => {}
            Request::Query(q) => {
                put_long_string(dst, &q.query);
                q.params.write(dst, version);
            }
            Request::Prepare(p) => {
                put_long_string(dst, &p.query);
                if version.is_v5() {
                    match &p.keyspace {
                        Some(ks) => {
                            dst.put_u32(PREPARE_WITH_KEYSPACE);
                            put_string(dst, ks);
                        }
                        None => dst.put_u32(0),
                    }
                }
            }
            Request::Execute(e) => {
                put_short_bytes(dst, &e.id);
                if version.is_v5() {
                    put_short_bytes(dst, e.result_metadata_id.as_deref().unwrap_or_default());
                }
                e.params.write(dst, version);
            }
            Request::Batch(b) => b.write(dst, version),
            Request::Register(types) => {
                let names: Vec<String> = types.iter().map(|t| t.as_str().to_string()).collect();
                put_string_list(dst, &names);
            }
        }
    }
}

/// A request with its frame-level envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFrame {
    /// The protocol version of the envelope (v4 unless set).
    pub version: ProtocolVersion,
    pub stream: i16,
    /// The client asked for tracing (flag 0x02).
    pub tracing: bool,
    /// Custom payload (flag 0x04), ignored by Gyre but parsed.
    pub custom_payload: Option<BTreeMap<String, Option<Bytes>>>,
    pub request: Request,
}

impl RequestFrame {
    pub fn new(stream: i16, request: Request) -> Self {
        RequestFrame {
            version: ProtocolVersion::V4,
            stream,
            tracing: false,
            custom_payload: None,
            request,
        }
    }

    /// Decodes a raw frame (an envelope in v5), undoing v4 compression
    /// first; the version comes from the frame's version byte.
    pub fn decode(frame: &Frame, compression: Compression, max_frame_bytes: usize) -> Result<Self> {
        let version = frame.protocol_version();
        let body = frame.decompressed_body(compression, max_frame_bytes)?;
        let mut r = Reader::new(body);
        let custom_payload = if frame.flags & flags::CUSTOM_PAYLOAD != 0 {
            Some(r.bytes_map()?)
        } else {
            None
        };
        let request = Request::decode_versioned(frame.opcode, r.rest(), version)?;
        Ok(RequestFrame {
            version,
            stream: frame.stream,
            tracing: frame.flags & flags::TRACING != 0,
            custom_payload,
            request,
        })
    }

    /// Builds the raw frame (the envelope in v5, where `compression` must
    /// be `None`: v5 compresses whole frames). STARTUP is never compressed
    /// (spec section 5).
    pub fn to_frame(&self, compression: Compression) -> Frame {
        let mut body = BytesMut::new();
        let mut f = 0u8;
        if self.tracing {
            f |= flags::TRACING;
        }
        if let Some(p) = &self.custom_payload {
            f |= flags::CUSTOM_PAYLOAD;
            put_bytes_map(&mut body, p);
        }
        self.request.encode_body_versioned(&mut body, self.version);
        let mut body = body.freeze();
        if compression == Compression::Lz4
            && !self.version.is_v5()
            && !matches!(self.request, Request::Startup(_))
        {
            body = lz4_compress(&body);
            f |= flags::COMPRESSION;
        }
        Frame {
            version: self.version.request_byte(),
            flags: f,
            stream: self.stream,
            opcode: self.request.opcode() as u8,
            body,
        }
    }
}
