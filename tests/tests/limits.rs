//! Limits and guardrails on a real node (issue 15): hostile frames and
//! connections on raw sockets, and the statement guardrails through the
//! Python driver (`tests/python/limits.py`), which must see the batch
//! warning in `future.warnings` and Cassandra's refusals.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use gyre_tests::cluster::TestCluster;
use gyre_tests::cqlsh;

/// A v4 request header: QUERY on stream 1 with a body of `len` bytes.
fn header(len: u32) -> Vec<u8> {
    let mut h = vec![0x04, 0x00, 0x00, 0x01, 0x07];
    h.extend_from_slice(&len.to_be_bytes());
    h
}

fn startup_frame() -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&1u16.to_be_bytes());
    for s in ["CQL_VERSION", "3.0.0"] {
        body.extend_from_slice(&(s.len() as u16).to_be_bytes());
        body.extend_from_slice(s.as_bytes());
    }
    let mut f = vec![0x04, 0x00, 0x00, 0x00, 0x01];
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(&body);
    f
}

/// Connects from `from` (a loopback address of this test) to `to`.
fn connect(from: &str, to: SocketAddr) -> TcpStream {
    let local: SocketAddr = format!("{from}:0").parse().expect("addr");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let s = rt
        .block_on(async {
            let sock = tokio::net::TcpSocket::new_v4()?;
            sock.bind(local)?;
            sock.connect(to).await?.into_std()
        })
        .expect("connect from a test address");
    s.set_nonblocking(false).expect("blocking");
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    s
}

/// Reads one response frame: (opcode, body).
fn read_frame(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 9];
    s.read_exact(&mut h)?;
    let len = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    Ok((h[4], body))
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Reads until the server closes the connection (or the read timeout).
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let t0 = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return t0.elapsed() <= limit,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return t0.elapsed() <= limit
            }
            Err(_) => return false,
        }
    }
}

#[test]
fn hostile_frames_connections_and_statements_are_bounded() {
    let c = TestCluster::new(1, 72);
    c.up_with(&[
        "--set",
        "limits.native_transport_max_concurrent_connections_per_ip=5",
        "--set",
        "limits.native_transport_startup_timeout_ms=1000",
        "--set",
        "limits.maximum_timestamp_fail_threshold_s=3600",
    ]);
    let addr = c.cql(1);
    let pid = c.pid(1).expect("node pid");

    // A header claiming 256 MiB, then nothing: refused at once (over the
    // 16 MiB frame limit) and the node's memory does not move.
    let before = rss_kib(pid);
    let mut s = connect("127.0.72.200", addr);
    s.write_all(&header(256 << 20)).expect("send");
    let (op, body) = read_frame(&mut s).expect("an error reply");
    assert_eq!(op, 0x00, "ERROR");
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("exceeds the limit of 16777216"), "{text}");
    // Headers claiming 15 MiB (under the limit) on five connections, with
    // a little of each body: the buffers grow with what arrives only.
    let mut partial = Vec::new();
    for _ in 0..5 {
        let mut p = connect("127.0.72.201", addr);
        p.write_all(&startup_frame()).expect("startup");
        let (op, _) = read_frame(&mut p).expect("READY");
        assert_eq!(op, 0x02, "READY");
        p.write_all(&header(15 << 20)).expect("header");
        p.write_all(&[0u8; 4096]).expect("some body");
        partial.push(p);
    }
    // A sixth connection from that address is one too many.
    let mut sixth = connect("127.0.72.201", addr);
    sixth.write_all(&startup_frame()).expect("send");
    let (op, body) = read_frame(&mut sixth).expect("an Overloaded reply");
    assert_eq!(op, 0x00, "ERROR");
    assert!(
        String::from_utf8_lossy(&body).contains("too many connections from this client"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    // Another address is not affected.
    let mut other = connect("127.0.72.202", addr);
    other.write_all(&startup_frame()).expect("send");
    assert_eq!(read_frame(&mut other).expect("READY").0, 0x02);
    let grown = rss_kib(pid).saturating_sub(before);
    assert!(
        grown < 32 * 1024,
        "RSS grew by {grown} KiB for headers claiming 256 MiB and 5 x 15 MiB"
    );
    drop(partial);

    // A connection that never sends STARTUP is closed after the deadline.
    let mut silent = connect("127.0.72.203", addr);
    assert!(
        closed_within(&mut silent, Duration::from_secs(10)),
        "a silent connection was not closed by the 1 s STARTUP deadline"
    );

    // The statement guardrails, as the Python driver sees them.
    cqlsh::cqlsh();
    let python = cqlsh::venv_dir().join("bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/limits.py");
    let out = cqlsh::run(
        Command::new(&python)
            .arg(&script)
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string()),
    );
    eprintln!("{}{}", out.stdout, out.stderr);
    assert!(
        out.ok && out.stdout.contains("\nOK"),
        "limits.py failed:\n{}{}\nnode logs:\n{}",
        out.stdout,
        out.stderr,
        c.logs()
    );
}
