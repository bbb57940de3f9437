//! Partition reads: data and digest requests, speculative retry, read
//! repair and short-read protection around the `ReadTracker`.

use super::*;
use crate::error::{check_tombstones, READ_TOO_MANY_TOMBSTONES, TOMBSTONES_TEXT};

/// Why this node could not serve its own replica's part of a read.
pub(super) enum LocalRead {
    Storage(gyre_storage::Error),
    /// More tombstones than `tombstone_failure_threshold` (logged).
    Tombstones,
}

impl Coordinator {
    /// Reads this node's replica of a partition, held to the tombstone
    /// failure threshold as every replica is.
    pub(super) fn read_local(
        &self,
        table: TableId,
        key: &DecoratedKey,
        filter: &ReadFilter,
        now: LocalTime,
    ) -> std::result::Result<Option<Partition>, LocalRead> {
        let p = self
            .inner
            .storage
            .read(table, key, filter, now)
            .map_err(LocalRead::Storage)?;
        let scanned = p.as_ref().map_or(0, |p| p.tombstones(now));
        check_tombstones(
            self.inner.config.tombstone_failure_threshold,
            table,
            scanned,
        )
        .map_err(|_| LocalRead::Tombstones)?;
        Ok(p)
    }

    pub(super) fn send_read(
        &self,
        host: HostId,
        addr: SocketAddr,
        cmd: ReadCommand,
        want_digest: bool,
    ) -> BoxFuture<'static, Event> {
        if host == self.local() {
            // Read inline: memtables and page-cached SSTables are CPU work.
            trace::event(|| "Executing single-partition query (local replica)");
            let resp = match self.read_local(cmd.table, &cmd.key, &cmd.filter, cmd.now) {
                Err(LocalRead::Tombstones) => Some(ReadResponse::Failed(READ_TOO_MANY_TOMBSTONES)),
                Err(LocalRead::Storage(e)) => {
                    tracing::warn!(error = %e, "local read failed");
                    None
                }
                Ok(p) if want_digest => Some(ReadResponse::Digest(digest(p.as_ref()))),
                Ok(p) => Some(ReadResponse::Data(p)),
            };
            return futures::future::ready(Event::Read(host, resp)).boxed();
        }
        let messenger = self.inner.messenger.clone();
        let timeout = self.inner.config.read_timeout;
        let payload = encode_read(&cmd);
        let verb = if want_digest { READ_DIGEST } else { READ_DATA };
        let name = if want_digest {
            "READ_DIGEST"
        } else {
            "READ_DATA"
        };
        async move {
            trace::event(|| format!("Sending {name} message to /{}", addr.ip()));
            let resp = match messenger.request(addr, verb, payload, timeout).await {
                Ok(b) if want_digest => decode_digest(&b).map(ReadResponse::Digest),
                Ok(b) => match decode_data(&b) {
                    Ok(p) => Some(ReadResponse::Data(p)),
                    Err(e) => {
                        tracing::warn!(%host, error = %e, "malformed read response");
                        None
                    }
                },
                Err(gyre_net::Error::Remote { message, .. })
                    if message.contains(TOMBSTONES_TEXT) =>
                {
                    Some(ReadResponse::Failed(READ_TOO_MANY_TOMBSTONES))
                }
                Err(e) => {
                    tracing::debug!(%host, error = %e, "read request failed");
                    None
                }
            };
            if resp.is_some() {
                trace::event(|| format!("{name} response received from /{}", addr.ip()));
            }
            Event::Read(host, resp)
        }
        .boxed()
    }

    /// Reads one partition at `cl`: digest reads, full reads and blocking
    /// read repair on a mismatch, short-read protection with a row limit.
    /// The result is in storage read-result form (tombstones in the
    /// selection kept; `gyre_common::lww::live_view` gives the client view).
    pub async fn read(
        &self,
        table: TableId,
        key: &DecoratedKey,
        filter: ReadFilter,
        cl: ConsistencyLevel,
    ) -> Result<Option<Partition>> {
        let _timer = self.inner.metrics.read.start_timer();
        cl.validate_for_read()?;
        let (strategy, natural, _) = self.plan(table, key.token)?;
        let mut live: Vec<&Target> = natural.iter().filter(|t| t.alive).collect();
        // Proximity: this node first (no network hop), then its DC.
        self.by_proximity(&mut live);
        let live_replicas: Vec<Replica> = live.iter().map(|t| t.replica.clone()).collect();
        let contacted = cl.filter_for_read(&strategy, self.dc(), &live_replicas)?;
        let now = self.inner.clock.now();
        trace::event(|| {
            format!(
                "Reading from {} of {} live replicas",
                contacted.len(),
                live_replicas.len()
            )
        });
        // Fast path: one replica asked, and it is this node (CL ONE /
        // LOCAL_ONE on a replica): no tracker, timer, digest or task.
        if let [only] = contacted.as_slice() {
            if only.host == self.local() {
                trace::event(|| "Executing single-partition query (local replica)");
                return match self.read_local(table, key, &filter, now) {
                    Ok(p) => Ok(p),
                    Err(LocalRead::Storage(e)) => Err(e.into()),
                    Err(LocalRead::Tombstones) => Err(CoordinatorError::ReadFailure {
                        consistency: cl,
                        received: 0,
                        block_for: 1,
                        failures: vec![(
                            self.inner.messenger.local_addr().ip(),
                            READ_TOO_MANY_TOMBSTONES,
                        )],
                        data_present: false,
                    }),
                };
            }
        }
        let addr_of = |h: HostId| natural.iter().find(|t| t.replica.host == h).map(|t| t.addr);
        let mut tracker =
            ReadTracker::new(cl, &strategy, self.dc(), contacted, filter.clone(), now)?;
        let cmd = ReadCommand {
            table,
            key: key.clone(),
            filter,
            now,
        };
        let mut inflight: Inflight = FuturesUnordered::new();
        let data = tracker.data_replica();
        if let Some(a) = addr_of(data) {
            inflight.push(self.send_read(data, a, cmd.clone(), false));
        }
        for h in tracker.digest_replicas() {
            if let Some(a) = addr_of(h) {
                inflight.push(self.send_read(h, a, cmd.clone(), true));
            }
        }
        let started = Instant::now();
        let deadline = started + self.inner.config.read_timeout;
        // Speculative retry: a live replica not asked yet, asked once the
        // read is slower than the table's threshold.
        let policy = self.inner.strategies.speculative_retry(table);
        let mut spare = live
            .iter()
            .find(|t| {
                !tracker.digest_replicas().contains(&t.replica.host) && t.replica.host != data
            })
            .map(|t| (t.replica.clone(), t.addr));
        let mut speculate_at = self
            .inner
            .latency
            .threshold(policy)
            .filter(|_| spare.is_some())
            .map(|d| started + d);
        let result = loop {
            let wake = speculate_at.map_or(deadline, |s| s.min(deadline));
            let action = match timeout_at(wake, inflight.next()).await {
                Err(_) if Instant::now() < deadline => {
                    speculate_at = None;
                    if let Some((r, a)) = spare.take() {
                        let h = r.host;
                        if tracker.speculate(r) {
                            tracing::debug!(host = %h, "speculative read");
                            inflight.push(self.send_read(h, a, cmd.clone(), false));
                        }
                    }
                    continue;
                }
                Ok(Some(Event::Read(h, Some(resp)))) => {
                    if h != self.local() {
                        self.inner.latency.record(started.elapsed());
                        self.record_latency(h, started.elapsed());
                    }
                    tracker.on_response(h, resp)
                }
                Ok(Some(Event::RepairAck(h, true))) => tracker.repair_acked(h),
                Ok(Some(Event::RepairAck(h, false))) => {
                    // A live replica not contacted yet takes the merged
                    // result instead, so one slow replica does not fail the
                    // read (Cassandra 4's additional repair writes).
                    let contacted: Vec<HostId> = tracker.contacted().collect();
                    let extra = live
                        .iter()
                        .find(|t| !contacted.contains(&t.replica.host))
                        .map(|t| t.replica.clone());
                    tracing::debug!(host = %h, extra = ?extra.as_ref().map(|r| r.host), "read repair write failed");
                    tracker.repair_failed(h, extra)
                }
                Ok(Some(_)) => ReadAction::Wait,
                Ok(None) | Err(_) => break tracker.timeout(),
            };
            match action {
                ReadAction::Wait => {}
                ReadAction::Done(p) => break Ok(p),
                ReadAction::Failed(failed) => {
                    break Err(CoordinatorError::ReadFailure {
                        consistency: cl,
                        received: tracker.received(),
                        block_for: tracker.block_for(),
                        failures: failed
                            .iter()
                            .filter_map(|(h, r)| addr_of(*h).map(|a| (a.ip(), *r)))
                            .collect(),
                        data_present: tracker.data_present(),
                    })
                }
                ReadAction::RequestData(reqs) => {
                    for (h, f) in reqs {
                        if let Some(a) = addr_of(h) {
                            let c = ReadCommand {
                                filter: f,
                                ..cmd.clone()
                            };
                            inflight.push(self.send_read(h, a, c, false));
                        }
                    }
                }
                ReadAction::Repair(repairs) => {
                    for (h, m) in repairs {
                        if let Some(a) = addr_of(h) {
                            tracing::debug!(host = %h, "sending read repair");
                            inflight.push(
                                self.send_mutation(h, a, &Mutation::new(table, m))
                                    .map(move |ok| Event::RepairAck(h, ok))
                                    .boxed(),
                            );
                        }
                    }
                    if let Some(answer) = tracker.answer() {
                        break Ok(answer);
                    }
                }
            }
        };
        // Let outstanding repairs go out even though the answer is known.
        if !inflight.is_empty() {
            tokio::spawn(async move { while inflight.next().await.is_some() {} });
        }
        result
    }
}
