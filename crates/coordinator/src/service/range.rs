//! Range reads: the ring walked in token order, replicas' pages merged
//! and repaired, a page resumed exactly where it stopped.

use super::*;
use crate::error::{
    check_tombstones, INDEX_NOT_AVAILABLE, READ_TOO_MANY_TOMBSTONES, TOMBSTONES_TEXT,
};

impl Coordinator {
    /// Reads a page of a token range at `cl`: walks the ring from
    /// `request.start` in token order, asks each range's replicas (as many
    /// as `cl` needs) for a page, reconciles their answers, repairs the
    /// replicas that were behind, and goes on to the next range until
    /// `request.max_rows` live rows are collected or `request.end` is
    /// reached. The resume position continues exactly where the answer
    /// stops.
    pub async fn scan(
        &self,
        table: TableId,
        request: ScanRequest,
        now: LocalTime,
        cl: ConsistencyLevel,
    ) -> Result<ScanPage> {
        let _timer = self.inner.metrics.range.start_timer();
        cl.validate_for_read()?;
        let strategy =
            self.inner.strategies.strategy(table).ok_or_else(|| {
                CoordinatorError::InvalidRequest(format!("unknown table {table}"))
            })?;
        // An ANN query asks every range for its best k (the query layer
        // keeps the best k of all): no stop after max_rows.
        let ann = request.index.as_ref().is_some_and(|q| q.ann.is_some());
        let mut out: Vec<Partition> = Vec::new();
        let mut live = 0usize;
        let mut start = request.start.clone();
        loop {
            if past_end(&start, &request.end) {
                return Ok(ScanPage {
                    partitions: out,
                    resume: None,
                });
            }
            let (group_end, targets) = self.plan_range(&strategy, &start);
            let end = min_end(group_end, request.end);
            let sub = ScanRequest {
                start: start.clone(),
                end,
                filter: request.filter.clone(),
                max_rows: if ann {
                    request.max_rows
                } else {
                    request.max_rows.saturating_sub(live).max(1)
                },
                index: request.index.clone(),
            };
            let page = self
                .scan_replicas(table, &strategy, cl, targets, sub, now)
                .await?;
            for p in page.partitions {
                live += live_row_count(&p, now);
                append_partition(&mut out, p);
            }
            let next = match page.resume {
                Some(cut) => cut,
                None => match end {
                    Bound::Unbounded => {
                        return Ok(ScanPage {
                            partitions: out,
                            resume: None,
                        })
                    }
                    Bound::Included(t) => ScanStart::Token(Bound::Excluded(t)),
                    Bound::Excluded(t) => ScanStart::Token(Bound::Included(t)),
                },
            };
            if live >= request.max_rows && !ann {
                let resume = (!past_end(&next, &request.end)).then_some(next);
                return Ok(ScanPage {
                    partitions: out,
                    resume,
                });
            }
            start = next;
        }
    }

    /// The end of the ring segment a scan from `start` asks in one request
    /// (consecutive vnode ranges with the same replicas; with as many
    /// replicas as nodes, the whole rest of the ring) and its replicas.
    pub(super) fn plan_range(
        &self,
        strategy: &ReplicationStrategy,
        start: &ScanStart,
    ) -> (Bound<Token>, Vec<Target>) {
        let ring = self.inner.ring.read();
        let tokens = ring.ring();
        let (t, excluded) = start_token(start);
        let first = if excluded {
            tokens.partition_point(|(x, _)| *x <= t)
        } else {
            tokens.partition_point(|(x, _)| *x < t)
        };
        let replicas_of = |tok: Token| -> Vec<HostId> {
            let mut r = ring.replicas_for_token(strategy, tok);
            r.sort();
            r
        };
        let (end, hosts) = if tokens.is_empty() {
            (Bound::Unbounded, Vec::new())
        } else if first == tokens.len() {
            // Past the last token: the wrap-around range, owned like the first.
            (Bound::Unbounded, replicas_of(tokens[0].0))
        } else {
            let hosts = replicas_of(tokens[first].0);
            let mut i = first;
            while i + 1 < tokens.len() && replicas_of(tokens[i + 1].0) == hosts {
                i += 1;
            }
            let end = if i + 1 == tokens.len() && replicas_of(tokens[0].0) == hosts {
                Bound::Unbounded
            } else {
                Bound::Included(tokens[i].0)
            };
            (end, hosts)
        };
        let mut targets: Vec<Target> = hosts
            .into_iter()
            .filter_map(|h| {
                let info = ring.node(&h)?;
                Some(Target {
                    replica: Replica::new(h, info.dc.clone()),
                    addr: info.address,
                    alive: false,
                })
            })
            .collect();
        drop(ring);
        self.set_liveness(&mut targets);
        (end, targets)
    }

    /// One range request to the replicas `cl` needs, reconciled, with the
    /// stale ones repaired before answering.
    pub(super) async fn scan_replicas(
        &self,
        table: TableId,
        strategy: &ReplicationStrategy,
        cl: ConsistencyLevel,
        targets: Vec<Target>,
        request: ScanRequest,
        now: LocalTime,
    ) -> Result<ScanPage> {
        let mut live: Vec<&Target> = targets.iter().filter(|t| t.alive).collect();
        self.by_proximity(&mut live);
        let live_replicas: Vec<Replica> = live.iter().map(|t| t.replica.clone()).collect();
        let contacted = cl.filter_for_read(strategy, self.dc(), &live_replicas)?;
        let block_for = contacted.len();
        let addr_of = |h: HostId| targets.iter().find(|t| t.replica.host == h).map(|t| t.addr);
        let cmd = RangeCommand {
            table,
            request,
            now,
        };
        let mut inflight: FuturesUnordered<BoxFuture<'static, (HostId, RangeReply)>> =
            FuturesUnordered::new();
        for r in &contacted {
            if let Some(a) = addr_of(r.host) {
                inflight.push(self.send_range(r.host, a, cmd.clone()));
            }
        }
        let deadline = Instant::now() + self.inner.config.read_timeout;
        let mut pages: Vec<(HostId, ScanPage)> = Vec::new();
        let mut failures: Vec<(std::net::IpAddr, u16)> = Vec::new();
        while pages.len() < block_for {
            match timeout_at(deadline, inflight.next()).await {
                Ok(Some((h, RangeReply::Page(p)))) => pages.push((h, p)),
                Ok(Some((h, RangeReply::Failed(code)))) => {
                    if let Some(a) = addr_of(h) {
                        failures.push((a.ip(), code));
                    }
                    // Cassandra answers ReadFailure as soon as block_for
                    // can no longer be reached.
                    if contacted.len() - failures.len() < block_for {
                        return Err(CoordinatorError::ReadFailure {
                            consistency: cl,
                            received: pages.len(),
                            block_for,
                            failures,
                            data_present: !pages.is_empty(),
                        });
                    }
                }
                Ok(Some((_, RangeReply::None))) => {}
                Ok(None) | Err(_) => {
                    return Err(CoordinatorError::ReadTimeout {
                        consistency: cl,
                        received: pages.len(),
                        block_for,
                        data_present: !pages.is_empty(),
                    })
                }
            }
        }
        let hosts: Vec<HostId> = pages.iter().map(|(h, _)| *h).collect();
        let merged = merge_range_pages(pages.into_iter().map(|(_, p)| p).collect());
        let mut repairs: Inflight = FuturesUnordered::new();
        for (i, muts) in merged.repairs {
            let h = hosts[i];
            let Some(a) = addr_of(h) else { continue };
            for m in muts {
                tracing::debug!(host = %h, "range read repair");
                repairs.push(
                    self.send_mutation(h, a, &Mutation::new(table, m))
                        .map(move |ok| Event::RepairAck(h, ok))
                        .boxed(),
                );
            }
        }
        // Blocking read repair: the answer is only given once the replicas
        // that were behind hold it (or the timeout passed; then they are
        // repaired by the next read).
        while let Ok(Some(_)) = timeout_at(deadline, repairs.next()).await {}
        Ok(ScanPage {
            partitions: merged.partitions,
            resume: merged.cut,
        })
    }

    pub(super) fn send_range(
        &self,
        host: HostId,
        addr: SocketAddr,
        cmd: RangeCommand,
    ) -> BoxFuture<'static, (HostId, RangeReply)> {
        if host == self.local() {
            trace::event(|| "Executing range read (local replica)");
            // Inline, like point reads: a page is bounded by its row limit.
            let threshold = self.inner.config.tombstone_failure_threshold;
            let page = match self.inner.storage.scan(cmd.table, &cmd.request, cmd.now) {
                Ok(p)
                    if check_tombstones(threshold, cmd.table, page_tombstones(&p, cmd.now))
                        .is_err() =>
                {
                    RangeReply::Failed(READ_TOO_MANY_TOMBSTONES)
                }
                Ok(p) => RangeReply::Page(p),
                Err(gyre_storage::Error::IndexNotAvailable(i)) => {
                    tracing::debug!(index = %i, "range read on an index being built");
                    RangeReply::Failed(INDEX_NOT_AVAILABLE)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "local range read failed");
                    RangeReply::None
                }
            };
            return futures::future::ready((host, page)).boxed();
        }
        let messenger = self.inner.messenger.clone();
        let timeout = self.inner.config.read_timeout;
        let payload = encode_range(&cmd);
        async move {
            trace::event(|| format!("Sending READ_RANGE message to /{}", addr.ip()));
            match messenger.request(addr, READ_RANGE, payload, timeout).await {
                Ok(b) => match decode_page(&b) {
                    Ok(p) => (host, RangeReply::Page(p)),
                    Err(e) => {
                        tracing::warn!(%host, error = %e, "malformed range response");
                        (host, RangeReply::None)
                    }
                },
                // The replica's error text is its storage error's: an index
                // still building is a failure the client is told about.
                Err(gyre_net::Error::Remote { message, .. })
                    if message.contains(INDEX_NOT_BUILT_TEXT) =>
                {
                    (host, RangeReply::Failed(INDEX_NOT_AVAILABLE))
                }
                Err(gyre_net::Error::Remote { message, .. })
                    if message.contains(TOMBSTONES_TEXT) =>
                {
                    (host, RangeReply::Failed(READ_TOO_MANY_TOMBSTONES))
                }
                Err(e) => {
                    tracing::debug!(%host, error = %e, "range request failed");
                    (host, RangeReply::None)
                }
            }
        }
        .boxed()
    }
}

/// What one replica did with a range request.
pub(super) enum RangeReply {
    Page(ScanPage),
    /// A failure with Cassandra's reason code.
    Failed(u16),
    /// No answer (timeout, connection, other errors).
    None,
}

/// In the message of `gyre_storage::Error::IndexNotAvailable`.
const INDEX_NOT_BUILT_TEXT: &str = "is not yet available";

/// The tombstones a range page walked over, for the failure threshold.
pub(super) fn page_tombstones(page: &ScanPage, now: LocalTime) -> usize {
    page.partitions.iter().map(|p| p.tombstones(now)).sum()
}
