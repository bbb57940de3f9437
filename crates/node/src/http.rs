//! A deliberately tiny HTTP/1.1 server and client for the admin endpoint:
//! one request per connection (`Connection: close`), `Content-Length`
//! bodies only. Enough for `curl`, Prometheus and `gyrectl`, without pulling
//! a web framework into every build.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::error::{Error, Result};

const MAX_HEAD: usize = 16 << 10;
const MAX_BODY: usize = 1 << 20;
const IO_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
    /// The `Host` header, if any.
    pub host: Option<String>,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, body: Vec<u8>) -> Self {
        Self {
            status,
            content_type: "application/json",
            body,
        }
    }

    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        421 => "Misdirected Request",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

/// Serves `handler` on `listener` until `stop` turns true.
pub async fn serve<F>(listener: TcpListener, handler: Arc<F>, mut stop: watch::Receiver<bool>)
where
    F: Fn(Request) -> Response + Send + Sync + 'static,
{
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let handler = handler.clone();
                    tokio::spawn(async move {
                        if let Err(e) = tokio::time::timeout(IO_TIMEOUT, handle(stream, &*handler)).await
                            .map_err(|_| Error::Http("timed out".into()))
                            .and_then(|r| r)
                        {
                            tracing::debug!(error = %e, "admin http connection failed");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "admin http accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = stop.changed() => return,
        }
    }
}

async fn handle<F>(mut stream: TcpStream, handler: &F) -> Result<()>
where
    F: Fn(Request) -> Response,
{
    let io = |e: std::io::Error| Error::Http(e.to_string());
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return respond(&mut stream, Response::text(413, "request head too large")).await;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.map_err(io)?;
        if n == 0 {
            return Err(Error::Http("connection closed mid-request".into()));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split_whitespace();
    let (Some(method), Some(target)) = (first.next(), first.next()) else {
        return respond(&mut stream, Response::text(400, "malformed request line")).await;
    };
    let mut content_length = 0usize;
    let (mut host, mut content_type, mut authorization) = (None, None, None);
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            let k = k.trim();
            if k.eq_ignore_ascii_case("host") {
                host = Some(v.trim().to_string());
            } else if k.eq_ignore_ascii_case("content-type") {
                content_type = Some(v.trim().to_string());
            } else if k.eq_ignore_ascii_case("authorization") {
                authorization = Some(v.trim().to_string());
            } else if k.eq_ignore_ascii_case("content-length") {
                match v.trim().parse() {
                    Ok(n) => content_length = n,
                    Err(_) => {
                        return respond(&mut stream, Response::text(400, "bad content-length"))
                            .await
                    }
                }
            }
        }
    }
    if content_length > MAX_BODY {
        return respond(&mut stream, Response::text(413, "body too large")).await;
    }
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < content_length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.map_err(io)?;
        if n == 0 {
            return Err(Error::Http("connection closed mid-body".into()));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(content_length);
    let path = target.split('?').next().unwrap_or(target).to_string();
    let req = Request {
        method: method.to_string(),
        path,
        body,
        host,
        content_type,
        authorization,
    };
    // Handlers may block (flush, compaction): keep them off the workers.
    let resp = tokio::task::block_in_place(|| handler(req));
    respond(&mut stream, resp).await
}

async fn respond(stream: &mut TcpStream, r: Response) -> Result<()> {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    );
    let io = |e: std::io::Error| Error::Http(e.to_string());
    stream.write_all(head.as_bytes()).await.map_err(io)?;
    stream.write_all(&r.body).await.map_err(io)?;
    stream.shutdown().await.map_err(io)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

static CLIENT_TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Makes every later [`request`] of this process carry
/// `Authorization: Bearer <token>` (`admin.token`); set once, by a tool's
/// `main` from its `--admin-token` flag. A second call is ignored.
pub fn set_client_token(token: String) {
    let _ = CLIENT_TOKEN.set(token);
}

/// Blocking client: sends one request and returns the status and body.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<(u16, String)> {
    let io = |e: std::io::Error| Error::Http(format!("{addr}: {e}"));
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.set_write_timeout(Some(timeout)).map_err(io)?;
    let body = body.unwrap_or_default();
    let auth = CLIENT_TOKEN
        .get()
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).map_err(io)?;
    s.write_all(body).map_err(io)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(io)?;
    let end = find(&out, b"\r\n\r\n")
        .ok_or_else(|| Error::Http(format!("{addr}: truncated response")))?;
    let head = String::from_utf8_lossy(&out[..end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Http(format!("{addr}: malformed status line")))?;
    Ok((
        status,
        String::from_utf8_lossy(&out[end + 4..]).into_owned(),
    ))
}

/// `GET path`, failing unless the status is 200.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<String> {
    match request(addr, "GET", path, None, timeout)? {
        (200, body) => Ok(body),
        (status, body) => Err(Error::Http(format!(
            "{addr}{path}: HTTP {status}: {}",
            body.trim()
        ))),
    }
}
