//! A minimal blocking CQL client on Gyre's own protocol codec: one
//! connection to one node, one request at a time, so the caller (the chaos
//! workloads, the cluster tests) decides exactly which node coordinates a
//! request and at which consistency level; real drivers balance and retry
//! on their own.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use gyre_protocol::{
    decode_frame, Compression, Consistency, CqlError, CqlResult, Query, QueryParameters, Request,
    RequestFrame, Response, ResponseFrame, Value, Values, DEFAULT_MAX_FRAME_BYTES,
};

/// What a statement returned.
#[derive(Debug)]
pub enum Outcome {
    /// Rows (values in wire form) and the paging state, if more follow.
    Rows(Vec<Vec<Option<Bytes>>>, Option<Bytes>),
    /// Any other successful result.
    Done,
    /// An ERROR response.
    Error(CqlError),
}

impl Outcome {
    /// The rows; panics on anything else.
    pub fn rows(self) -> Vec<Vec<Option<Bytes>>> {
        match self {
            Outcome::Rows(r, _) => r,
            other => panic!("expected rows, got {other:?}"),
        }
    }

    /// Panics unless successful.
    pub fn ok(self) -> Self {
        if let Outcome::Error(e) = &self {
            panic!("request failed: {e:?}");
        }
        self
    }
}

/// One CQL connection.
pub struct CqlClient {
    stream: TcpStream,
    buf: BytesMut,
}

impl CqlClient {
    /// Connects and sends STARTUP.
    pub fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        Self::connect_with(addr, Duration::from_secs(30))
    }

    /// Connects with `timeout` for connecting and for each answer.
    pub fn connect_with(addr: SocketAddr, timeout: Duration) -> std::io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, timeout.min(Duration::from_secs(5)))?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        let mut c = CqlClient {
            stream,
            buf: BytesMut::new(),
        };
        let opts = BTreeMap::from([("CQL_VERSION".to_string(), "3.4.6".to_string())]);
        match c.request(Request::Startup(opts))? {
            Response::Ready => Ok(c),
            other => Err(std::io::Error::other(format!(
                "unexpected STARTUP answer {other:?}"
            ))),
        }
    }

    fn request(&mut self, request: Request) -> std::io::Result<Response> {
        let frame = RequestFrame::new(1, request).to_frame(Compression::None);
        self.stream.write_all(&frame.to_bytes())?;
        loop {
            let decoded = decode_frame(&mut self.buf, DEFAULT_MAX_FRAME_BYTES)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            if let Some(frame) = decoded {
                let resp =
                    ResponseFrame::decode(&frame, Compression::None, DEFAULT_MAX_FRAME_BYTES)
                        .map_err(|e| std::io::Error::other(e.to_string()))?;
                if matches!(resp.response, Response::Event(_)) {
                    continue;
                }
                return Ok(resp.response);
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = self.stream.read(&mut chunk[..])?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Runs `cql` at `cl` with positional `values`, one page of
    /// `page_size` rows from `paging_state`.
    pub fn query_page(
        &mut self,
        cql: &str,
        cl: Consistency,
        values: Vec<Option<Bytes>>,
        page_size: Option<i32>,
        paging_state: Option<Bytes>,
    ) -> std::io::Result<Outcome> {
        let params = QueryParameters {
            consistency: cl,
            values: Values::Positional(
                values
                    .into_iter()
                    .map(|v| v.map_or(Value::Null, Value::Bytes))
                    .collect(),
            ),
            page_size,
            paging_state,
            ..QueryParameters::default()
        };
        let resp = self.request(Request::Query(Query {
            query: cql.to_string(),
            params,
        }))?;
        Ok(match resp {
            Response::Result(CqlResult::Rows(r)) => Outcome::Rows(r.rows, r.metadata.paging_state),
            Response::Result(_) => Outcome::Done,
            Response::Error(e) => Outcome::Error(e),
            other => {
                return Err(std::io::Error::other(format!(
                    "unexpected answer {other:?}"
                )))
            }
        })
    }

    /// Runs `cql` at `cl` (no values, no paging).
    pub fn query(&mut self, cql: &str, cl: Consistency) -> std::io::Result<Outcome> {
        self.query_page(cql, cl, Vec::new(), None, None)
    }
}
