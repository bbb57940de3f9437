//! The load loop of `--driver native` (the wire side is
//! `gyre_stress::native`).
//!
//! `--connections` tasks, each an event loop that owns one connection to
//! every node and an equal share of the `--concurrency` slots. A free slot
//! takes the next operation, encodes it into the output buffer of the
//! connection to the key's primary replica, and is freed by the response
//! with its stream id. One loop turn writes every connection's buffer once
//! and reads every ready socket once, so requests and responses travel in
//! batches, with no task, channel or oneshot per request.
//!
//! Not a full driver: no reconnection (a broken connection fails its
//! requests, and later keys of that node go to another node), no retries,
//! no speculative execution. Runs with faults use the scylla driver.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use gyre_protocol::{
    decode_frame, Compression, CqlResult, CqlValue, Prepare, Query, QueryParameters, Request,
    RequestFrame, Response, ResponseFrame, DEFAULT_MAX_FRAME_BYTES,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use gyre_stress::config::Mode;
use gyre_stress::native::{
    begin_execute, consistency_code, finish_frame, push_value, read_result, Outcome, Ring,
    OPCODE_ERROR, OPCODE_RESULT,
};
use gyre_stress::workload::{value_into, OpKind, SplitMix64};

use crate::{Phase, Workload};

/// Stream ids a connection hands out to slots (0 is for set-up requests).
const MAX_STREAMS: usize = 32_768;
/// How often busy slots are checked against `--timeout`.
const TIMEOUT_CHECK: Duration = Duration::from_millis(100);

#[derive(Clone, Copy)]
enum Stream {
    Free,
    Slot(u32),
    /// Its request timed out; the id is reused once the late answer comes.
    Orphan,
}

/// One connection, set up (STARTUP, both statements prepared).
pub struct Conn {
    node: SocketAddr,
    sock: TcpStream,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    /// Bytes of `wbuf` already written.
    sent: usize,
    insert_id: Vec<u8>,
    select_id: Vec<u8>,
    streams: Vec<Stream>,
    free: Vec<i16>,
    alive: bool,
}

impl Conn {
    async fn connect(
        node: SocketAddr,
        statements: &[String; 2],
        timeout: Duration,
    ) -> Result<Conn> {
        let sock = tokio::time::timeout(timeout, TcpStream::connect(node))
            .await
            .with_context(|| format!("connecting to {node}: timed out"))?
            .with_context(|| format!("connecting to {node}"))?;
        sock.set_nodelay(true)?;
        let mut c = Conn {
            node,
            sock,
            rbuf: BytesMut::with_capacity(64 << 10),
            wbuf: Vec::with_capacity(64 << 10),
            sent: 0,
            insert_id: Vec::new(),
            select_id: Vec::new(),
            streams: vec![Stream::Free; MAX_STREAMS],
            free: (1..=i16::MAX).rev().collect(),
            alive: true,
        };
        let options = BTreeMap::from([("CQL_VERSION".to_string(), "3.0.0".to_string())]);
        match c.request(Request::Startup(options), timeout).await? {
            Response::Ready => {}
            other => bail!("{node}: STARTUP answered {other:?} (authentication is not supported by --driver native)"),
        }
        let mut ids = Vec::new();
        for cql in statements {
            let prepare = Request::Prepare(Prepare {
                query: cql.clone(),
                keyspace: None,
            });
            match c.request(prepare, timeout).await? {
                Response::Result(CqlResult::Prepared(p)) => ids.push(p.id.to_vec()),
                other => bail!("{node}: preparing {cql}: {other:?}"),
            }
        }
        c.select_id = ids.pop().unwrap_or_default();
        c.insert_id = ids.pop().unwrap_or_default();
        Ok(c)
    }

    /// A set-up request on stream 0, awaited.
    async fn request(&mut self, request: Request, timeout: Duration) -> Result<Response> {
        let bytes = RequestFrame::new(0, request)
            .to_frame(Compression::None)
            .to_bytes();
        self.sock.write_all(&bytes).await?;
        loop {
            if let Some(f) = decode_frame(&mut self.rbuf, DEFAULT_MAX_FRAME_BYTES)? {
                let rf = ResponseFrame::decode(&f, Compression::None, DEFAULT_MAX_FRAME_BYTES)?;
                if rf.stream == 0 {
                    return Ok(rf.response);
                }
                continue; // an event
            }
            let n = tokio::time::timeout(timeout, self.sock.read_buf(&mut self.rbuf))
                .await
                .with_context(|| format!("{}: no answer within {timeout:?}", self.node))??;
            if n == 0 {
                bail!("{}: connection closed", self.node);
            }
        }
    }

    /// Writes what the buffer holds without waiting; false if broken.
    fn flush(&mut self) -> bool {
        while self.sent < self.wbuf.len() {
            match self.sock.try_write(&self.wbuf[self.sent..]) {
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
        self.wbuf.clear();
        self.sent = 0;
        true
    }

    /// Reads what the socket has without waiting; false if broken.
    fn fill(&mut self) -> bool {
        loop {
            self.rbuf.reserve(64 << 10);
            match self.sock.try_read_buf(&mut self.rbuf) {
                Ok(0) => return false,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
    }
}

/// The connections of every task, made once and reused by each phase.
pub struct NativePool {
    sets: Mutex<Vec<Vec<Conn>>>,
    ring: Ring,
}

/// Finds the cluster's nodes and tokens through the first contact point,
/// then opens `connections` connections to every node.
pub async fn connect(w: &Workload, contact: &str, statements: [String; 2]) -> Result<NativePool> {
    let o = &w.cli.opts;
    let first: SocketAddr = tokio::net::lookup_host(contact)
        .await?
        .next()
        .with_context(|| format!("resolving {contact}"))?;
    let mut c = Conn::connect(first, &statements, o.timeout).await?;
    let mut nodes: Vec<(SocketAddr, Vec<i64>)> = Vec::new();
    for table in ["system.local", "system.peers"] {
        let q = Request::Query(Query {
            query: format!("SELECT rpc_address, tokens FROM {table}"),
            params: QueryParameters::default(),
        });
        let Response::Result(CqlResult::Rows(rows)) = c.request(q, o.timeout).await? else {
            bail!("reading {table} from {first}: not rows");
        };
        let types: Vec<_> = rows
            .metadata
            .columns
            .iter()
            .map(|s| s.typ.clone())
            .collect();
        for row in &rows.rows {
            let cell = |i: usize| -> Option<CqlValue> {
                let b = row.get(i)?.as_ref()?;
                CqlValue::decode(types.get(i)?, b).ok()
            };
            let ip = match cell(0) {
                Some(CqlValue::Inet(ip)) => ip,
                _ if table == "system.local" => first.ip(),
                _ => continue,
            };
            let tokens = match cell(1) {
                Some(CqlValue::Set(ts)) => ts
                    .iter()
                    .filter_map(|t| match t {
                        CqlValue::Text(s) | CqlValue::Ascii(s) => s.parse().ok(),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            // A node listening on every address announces 0.0.0.0.
            let ip = if ip.is_unspecified() { first.ip() } else { ip };
            nodes.push((SocketAddr::new(ip, first.port()), tokens));
        }
    }
    drop(c);
    if o.coordinator_only {
        nodes = vec![(first, Vec::new())];
    }
    if nodes.is_empty() {
        nodes.push((first, Vec::new()));
    }
    let ring = Ring::new(&nodes.iter().map(|(_, t)| t.clone()).collect::<Vec<_>>());
    let mut sets = Vec::new();
    for _ in 0..o.connections.min(o.concurrency) {
        let mut set = Vec::new();
        for (addr, _) in &nodes {
            set.push(Conn::connect(*addr, &statements, o.timeout).await?);
        }
        sets.push(set);
    }
    Ok(NativePool {
        sets: Mutex::new(sets),
        ring,
    })
}

#[derive(Clone, Copy)]
enum Slot {
    Idle,
    /// Its operation is due later (open loop).
    Waiting {
        op: u64,
        due: Instant,
    },
    Busy {
        kind: OpKind,
        key: u64,
        intended: Instant,
        sent: Instant,
        node: usize,
        stream: i16,
    },
    /// No more operations for this slot in this phase.
    Done,
}

/// Runs one phase on the pool's connections.
pub async fn run_workers(w: &Arc<Workload>, phase: &Arc<Phase>, pool: &Arc<NativePool>) {
    let sets: Vec<Vec<Conn>> =
        std::mem::take(&mut *pool.sets.lock().unwrap_or_else(|e| e.into_inner()));
    let tasks = sets.len().max(1);
    let concurrency = w.cli.opts.concurrency;
    let mut handles = Vec::new();
    for (i, conns) in sets.into_iter().enumerate() {
        let slots = concurrency / tasks + usize::from(i < concurrency % tasks);
        let (w, phase, pool) = (w.clone(), phase.clone(), pool.clone());
        handles.push(tokio::spawn(async move {
            let mut l = Loop::new(i as u64, conns, slots, &w, &phase, &pool.ring);
            l.run().await;
            l.conns
        }));
    }
    let mut back = Vec::new();
    for h in handles {
        match h.await {
            Ok(conns) => back.push(conns),
            Err(e) => tracing::error!("native load task failed: {e}"),
        }
    }
    *pool.sets.lock().unwrap_or_else(|e| e.into_inner()) = back;
}

struct Loop<'a> {
    conns: Vec<Conn>,
    slots: Vec<Slot>,
    busy: usize,
    w: &'a Workload,
    phase: &'a Phase,
    ring: &'a Ring,
    rng: SplitMix64,
    consistency: u16,
    value: Vec<u8>,
}

impl<'a> Loop<'a> {
    fn new(
        id: u64,
        conns: Vec<Conn>,
        slots: usize,
        w: &'a Workload,
        phase: &'a Phase,
        ring: &'a Ring,
    ) -> Self {
        Loop {
            conns,
            slots: vec![Slot::Idle; slots],
            busy: 0,
            w,
            phase,
            ring,
            rng: SplitMix64::new(0x5eed ^ (id << 32) ^ u64::from(phase.record)),
            consistency: consistency_code(w.cli.opts.cl),
            value: Vec::new(),
        }
    }

    async fn run(&mut self) {
        let mut timer = Box::pin(tokio::time::sleep(TIMEOUT_CHECK));
        let mut next_check = Instant::now() + TIMEOUT_CHECK;
        loop {
            let now = Instant::now();
            let wake = self.start_ops(now);
            for c in self.conns.iter_mut().filter(|c| c.alive) {
                if !c.flush() {
                    c.alive = false;
                }
            }
            self.fail_broken();
            if self.busy == 0 && self.slots.iter().all(|s| matches!(s, Slot::Done)) {
                return;
            }
            if now >= next_check {
                self.time_out(now);
                next_check = now + TIMEOUT_CHECK;
            }
            let until = wake.map_or(next_check, |t| t.min(next_check));
            timer.as_mut().reset(until);
            let conns = &self.conns;
            std::future::poll_fn(|cx| {
                let mut ready = timer.as_mut().poll(cx).is_ready();
                for c in conns.iter().filter(|c| c.alive) {
                    ready |= c.sock.poll_read_ready(cx).is_ready();
                    if c.sent < c.wbuf.len() {
                        ready |= c.sock.poll_write_ready(cx).is_ready();
                    }
                }
                if ready {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
            self.read_responses();
        }
    }

    /// Gives every free slot its next operation; returns when the earliest
    /// waiting one is due.
    fn start_ops(&mut self, now: Instant) -> Option<Instant> {
        let mut wake: Option<Instant> = None;
        for i in 0..self.slots.len() {
            let op = match self.slots[i] {
                Slot::Idle => {
                    if self.phase.stop.load(Ordering::Relaxed) {
                        self.slots[i] = Slot::Done;
                        continue;
                    }
                    let op = self.phase.next_op.fetch_add(1, Ordering::Relaxed);
                    if self.phase.limit.is_some_and(|n| op >= n)
                        || self.phase.deadline.is_some_and(|d| now >= d)
                    {
                        self.slots[i] = Slot::Done;
                        continue;
                    }
                    let due = match &self.w.schedule {
                        Some(s) => self.phase.start + s.due(op),
                        None => now,
                    };
                    if due > now {
                        self.slots[i] = Slot::Waiting { op, due };
                        wake = Some(wake.map_or(due, |t| t.min(due)));
                        continue;
                    }
                    (op, due)
                }
                Slot::Waiting { op, due } if due <= now => (op, due),
                Slot::Waiting { due, .. } => {
                    wake = Some(wake.map_or(due, |t| t.min(due)));
                    continue;
                }
                Slot::Busy { .. } | Slot::Done => continue,
            };
            self.issue(i, op.0, op.1, now);
        }
        wake
    }

    fn issue(&mut self, slot: usize, op: u64, intended: Instant, now: Instant) {
        let o = &self.w.cli.opts;
        let kind = match self.w.plan.mode {
            Mode::Write => OpKind::Write,
            Mode::Read => OpKind::Read,
            Mode::Mixed => o.ratio.pick(self.rng.next_u64()),
        };
        let key = self.w.chooser.key(op, &mut self.rng);
        let owner = self.ring.node_of(key);
        let n = self.conns.len();
        let Some(node) = (0..n).map(|d| (owner + d) % n).find(|&j| {
            let c = &self.conns[j];
            c.alive && !c.free.is_empty()
        }) else {
            self.slots[slot] = Slot::Idle;
            self.finish(kind, intended, Err("NoConnection"));
            return;
        };
        let c = &mut self.conns[node];
        let Some(stream) = c.free.pop() else {
            return;
        };
        c.streams[stream as usize] = Stream::Slot(slot as u32);
        let key_bytes = (key as i64).to_be_bytes();
        match kind {
            OpKind::Write => {
                let start = begin_execute(
                    &mut c.wbuf,
                    stream,
                    &c.insert_id,
                    self.consistency,
                    1 + o.columns as u16,
                );
                push_value(&mut c.wbuf, &key_bytes);
                for col in 0..o.columns {
                    value_into(key, col, o.value_size, &mut self.value);
                    push_value(&mut c.wbuf, &self.value);
                }
                finish_frame(&mut c.wbuf, start);
            }
            OpKind::Read => {
                let start = begin_execute(&mut c.wbuf, stream, &c.select_id, self.consistency, 1);
                push_value(&mut c.wbuf, &key_bytes);
                finish_frame(&mut c.wbuf, start);
            }
        }
        self.slots[slot] = Slot::Busy {
            kind,
            key,
            intended,
            sent: now,
            node,
            stream,
        };
        self.busy += 1;
    }

    fn read_responses(&mut self) {
        for node in 0..self.conns.len() {
            if !self.conns[node].alive {
                continue;
            }
            if !self.conns[node].fill() {
                self.conns[node].alive = false;
            }
            loop {
                let frame = match decode_frame(&mut self.conns[node].rbuf, DEFAULT_MAX_FRAME_BYTES)
                {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!("{}: {e}", self.conns[node].node);
                        self.conns[node].alive = false;
                        break;
                    }
                };
                if frame.stream <= 0 {
                    continue; // an event, or a set-up answer
                }
                let c = &mut self.conns[node];
                let Some(s) = c.streams.get(frame.stream as usize).copied() else {
                    continue;
                };
                if matches!(s, Stream::Free) {
                    continue;
                }
                c.streams[frame.stream as usize] = Stream::Free;
                c.free.push(frame.stream);
                let Stream::Slot(slot) = s else {
                    continue; // the late answer of a timed-out request
                };
                self.complete(slot as usize, &frame);
            }
        }
        self.fail_broken();
    }

    fn complete(&mut self, slot: usize, frame: &gyre_protocol::Frame) {
        let Slot::Busy {
            kind,
            key,
            intended,
            ..
        } = self.slots[slot]
        else {
            return;
        };
        self.slots[slot] = Slot::Idle;
        self.busy -= 1;
        let o = &self.w.cli.opts;
        let result = match frame.opcode {
            OPCODE_RESULT => {
                let validate = o.validate && self.phase.record;
                match read_result(&frame.body, validate) {
                    Some(Outcome::Rows { count, first }) if kind == OpKind::Read => {
                        self.check_read(key, count, first);
                        Ok(())
                    }
                    Some(_) => Ok(()),
                    None => Err("Other"),
                }
            }
            OPCODE_ERROR => {
                let name = ResponseFrame::decode(frame, Compression::None, DEFAULT_MAX_FRAME_BYTES)
                    .ok()
                    .and_then(|rf| match rf.response {
                        Response::Error(e) => Some(format!("{:?}", e.kind)),
                        _ => None,
                    })
                    .unwrap_or_else(|| "Other".into());
                let name = name
                    .split(|c: char| !c.is_alphanumeric())
                    .next()
                    .unwrap_or("Other")
                    .to_string();
                self.finish_named(kind, intended, Err(name));
                return;
            }
            _ => Err("Other"),
        };
        self.finish(kind, intended, result);
    }

    fn check_read(&mut self, key: u64, count: usize, first: Option<Vec<Option<bytes::Bytes>>>) {
        if !self.phase.record {
            return;
        }
        let r = &self.phase.recorder;
        let o = &self.w.cli.opts;
        if count == 0 {
            r.not_found.fetch_add(1, Ordering::Relaxed);
            if o.validate {
                r.checked.fetch_add(1, Ordering::Relaxed);
                r.missing.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        if !o.validate {
            return;
        }
        r.checked.fetch_add(1, Ordering::Relaxed);
        let ok = first.is_some_and(|cells| {
            cells.len() == o.columns
                && cells.iter().enumerate().all(|(col, cell)| {
                    value_into(key, col, o.value_size, &mut self.value);
                    cell.as_deref() == Some(&self.value[..])
                })
        });
        if !ok {
            r.wrong.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("key {key}: wrong value");
        }
    }

    fn finish(&self, kind: OpKind, intended: Instant, result: Result<(), &'static str>) {
        self.finish_named(kind, intended, result.map_err(str::to_string));
    }

    fn finish_named(&self, kind: OpKind, intended: Instant, result: Result<(), String>) {
        if !self.phase.record {
            return;
        }
        match result {
            // From the intended start, as the scylla workers measure.
            Ok(()) => self.phase.recorder.record(kind, intended.elapsed()),
            Err(e) => {
                let n = self.phase.recorder.error(kind, &e);
                let max = self.w.cli.opts.max_errors;
                if max > 0 && n >= max {
                    let mut reason = self
                        .phase
                        .stop_reason
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    reason.get_or_insert_with(|| format!("{n} errors (--max-errors); last: {e}"));
                    self.phase.stop.store(true, Ordering::Relaxed);
                }
            }
        }
    }

    /// Fails the requests of connections found broken.
    fn fail_broken(&mut self) {
        for node in 0..self.conns.len() {
            let c = &mut self.conns[node];
            if c.alive || c.streams.is_empty() {
                continue;
            }
            tracing::warn!("{}: connection lost", c.node);
            let streams = std::mem::take(&mut c.streams);
            c.free.clear();
            for s in streams {
                if let Stream::Slot(slot) = s {
                    if let Slot::Busy { kind, intended, .. } = self.slots[slot as usize] {
                        self.slots[slot as usize] = Slot::Idle;
                        self.busy -= 1;
                        self.finish(kind, intended, Err("BrokenConnection"));
                    }
                }
            }
        }
    }

    /// Fails requests older than `--timeout`; their stream ids wait for
    /// the late answer before reuse.
    fn time_out(&mut self, now: Instant) {
        let timeout = self.w.cli.opts.timeout;
        for i in 0..self.slots.len() {
            if let Slot::Busy {
                kind,
                intended,
                sent,
                node,
                stream,
                ..
            } = self.slots[i]
            {
                if now.duration_since(sent) >= timeout {
                    if let Some(s) = self.conns[node].streams.get_mut(stream as usize) {
                        *s = Stream::Orphan;
                    }
                    self.slots[i] = Slot::Idle;
                    self.busy -= 1;
                    self.finish(kind, intended, Err("ClientTimeout"));
                }
            }
        }
    }
}
