//! Request messages (spec section 4.1) and request frames.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{Error, Result};
use crate::frame::{flags, lz4_compress, Compression, Frame, Opcode, VERSION_REQUEST};
use crate::response::EventType;
use crate::types::{read_consistency, write_consistency, Consistency};
use crate::wire::{
    put_bytes, put_bytes_map, put_long_string, put_short_bytes, put_string, put_string_list,
    put_string_map, put_value, Reader, Value,
};

/// Query-parameter flag bits (spec section 4.1.4).
mod qflags {
    pub const VALUES: u8 = 0x01;
    pub const SKIP_METADATA: u8 = 0x02;
    pub const PAGE_SIZE: u8 = 0x04;
    pub const PAGING_STATE: u8 = 0x08;
    pub const SERIAL_CONSISTENCY: u8 = 0x10;
    pub const DEFAULT_TIMESTAMP: u8 = 0x20;
    pub const NAMES_FOR_VALUES: u8 = 0x40;
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
        }
    }
}

impl QueryParameters {
    fn read(r: &mut Reader) -> Result<Self> {
        let consistency = read_consistency(r)?;
        let f = r.u8()?;
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
        Ok(QueryParameters {
            consistency,
            values,
            skip_metadata: f & qflags::SKIP_METADATA != 0,
            page_size,
            paging_state,
            serial_consistency,
            default_timestamp,
        })
    }

    fn write(&self, dst: &mut BytesMut) {
        write_consistency(self.consistency, dst);
        let mut f = 0u8;
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
        dst.put_u8(f);
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
    }
}

/// QUERY: a CQL string with parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub query: String,
    pub params: QueryParameters,
}

/// PREPARE: a CQL string to prepare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepare {
    pub query: String,
}

/// EXECUTE: a prepared statement id with parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execute {
    pub id: Bytes,
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
}

impl Batch {
    fn read(r: &mut Reader) -> Result<Self> {
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
        let f = r.u8()?;
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
        Ok(Batch {
            batch_type,
            statements,
            consistency,
            serial_consistency,
            default_timestamp,
        })
    }

    fn write(&self, dst: &mut BytesMut) {
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
        let mut f = 0u8;
        if self.serial_consistency.is_some() {
            f |= qflags::SERIAL_CONSISTENCY;
        }
        if self.default_timestamp.is_some() {
            f |= qflags::DEFAULT_TIMESTAMP;
        }
        dst.put_u8(f);
        if let Some(c) = self.serial_consistency {
            write_consistency(c, dst);
        }
        if let Some(t) = self.default_timestamp {
            dst.put_i64(t);
        }
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

    /// Decodes a message body (after any custom payload). Trailing bytes are
    /// ignored, as the spec asks, to allow future extensions.
    pub fn decode(opcode: u8, body: Bytes) -> Result<Self> {
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
                    params: QueryParameters::read(&mut r)?,
                })
            }
            Opcode::Prepare => Request::Prepare(Prepare {
                query: r.long_string()?,
            }),
            Opcode::Execute => {
                let id = r.short_bytes()?;
                Request::Execute(Execute {
                    id,
                    params: QueryParameters::read(&mut r)?,
                })
            }
            Opcode::Batch => Request::Batch(Batch::read(&mut r)?),
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

    /// Appends the message body to `dst`.
    pub fn encode_body(&self, dst: &mut BytesMut) {
        match self {
            Request::Startup(opts) => put_string_map(dst, opts),
            Request::AuthResponse(token) => put_bytes(dst, token.as_deref()),
            Request::Options => {}
            Request::Query(q) => {
                put_long_string(dst, &q.query);
                q.params.write(dst);
            }
            Request::Prepare(p) => put_long_string(dst, &p.query),
            Request::Execute(e) => {
                put_short_bytes(dst, &e.id);
                e.params.write(dst);
            }
            Request::Batch(b) => b.write(dst),
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
            stream,
            tracing: false,
            custom_payload: None,
            request,
        }
    }

    /// Decodes a raw frame, undoing compression first.
    pub fn decode(frame: &Frame, compression: Compression, max_frame_bytes: usize) -> Result<Self> {
        let body = frame.decompressed_body(compression, max_frame_bytes)?;
        let mut r = Reader::new(body);
        let custom_payload = if frame.flags & flags::CUSTOM_PAYLOAD != 0 {
            Some(r.bytes_map()?)
        } else {
            None
        };
        let request = Request::decode(frame.opcode, r.rest())?;
        Ok(RequestFrame {
            stream: frame.stream,
            tracing: frame.flags & flags::TRACING != 0,
            custom_payload,
            request,
        })
    }

    /// Builds the raw frame. STARTUP is never compressed (spec section 5).
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
        self.request.encode_body(&mut body);
        let mut body = body.freeze();
        if compression == Compression::Lz4 && !matches!(self.request, Request::Startup(_)) {
            body = lz4_compress(&body);
            f |= flags::COMPRESSION;
        }
        Frame {
            version: VERSION_REQUEST,
            flags: f,
            stream: self.stream,
            opcode: self.request.opcode() as u8,
            body,
        }
    }
}
