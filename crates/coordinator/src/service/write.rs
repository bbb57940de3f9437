//! Writes: a mutation to every replica of its key, hints for the ones
//! that miss it, the answer at the consistency level.

use super::*;

impl Coordinator {
    /// Sends `m` to one replica (this node: applied now, on this worker,
    /// since commitlog buffer and memtable are CPU work; the future only
    /// awaits durability). Remote replicas get the encoding made once for
    /// every replica. True once acknowledged.
    pub(super) fn send_mutation(
        &self,
        host: HostId,
        addr: SocketAddr,
        m: &Mutation,
    ) -> BoxFuture<'static, bool> {
        if host == self.local() {
            trace::event(|| "Appending to commitlog; adding to memtable (local replica)");
            let durable = apply_local(self.inner.storage.as_ref(), &self.inner.metrics, m.clone());
            return async move {
                match durable.await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(error = %e, "local mutation failed");
                        false
                    }
                }
            }
            .boxed();
        }
        let messenger = self.inner.messenger.clone();
        let timeout = self.inner.config.write_timeout;
        let payload = m.encoded().clone();
        async move {
            trace::event(|| format!("Sending MUTATION message to /{}", addr.ip()));
            match messenger.request(addr, MUTATION, payload, timeout).await {
                Ok(_) => {
                    trace::event(|| format!("MUTATION response received from /{}", addr.ip()));
                    true
                }
                Err(e) => {
                    tracing::debug!(%host, error = %e, "mutation not acknowledged");
                    false
                }
            }
        }
        .boxed()
    }

    /// Stores a hint for `target` if there is a hint store and the target
    /// is inside the hint window. True when stored.
    pub(super) async fn hint(&self, target: HostId, table: TableId, mutation: Partition) -> bool {
        let Some(store) = self.inner.hints.clone() else {
            return false;
        };
        let Ok(permit) = self.inner.hint_permits.clone().try_acquire_owned() else {
            store.note_overloaded();
            tracing::debug!(%target, "too many hint writes in flight: not hinting");
            return false;
        };
        let down_for = self.inner.liveness.down_for(target).unwrap_or_default();
        let hint = Hint {
            target,
            table,
            mutation,
            write_time: self.inner.timestamps.next(),
        };
        let task = self.inner.runtime.spawn_blocking(move || {
            let _permit = permit;
            store.store_for_down_host(hint, down_for)
        });
        match task.await {
            Ok(Ok(stored)) => stored,
            Ok(Err(e)) => {
                tracing::error!(%target, error = %e, "could not store hint");
                false
            }
            Err(e) => {
                join_error(e);
                false
            }
        }
    }

    /// Writes `update` to every replica of its key and waits for `cl`.
    pub async fn write(
        &self,
        table: TableId,
        update: Partition,
        cl: ConsistencyLevel,
    ) -> Result<()> {
        self.write_with_type(table, update, cl, WriteType::Simple)
            .await
    }

    pub async fn write_with_type(
        &self,
        table: TableId,
        update: Partition,
        cl: ConsistencyLevel,
        write_type: WriteType,
    ) -> Result<()> {
        let _timer = self.inner.metrics.write.start_timer();
        cl.validate_for_write()?;
        trace::event(|| "Determining replicas for mutation");
        let (strategy, natural, pending) = self.plan(table, update.key.token)?;
        // A node replacing a dead replica gets the writes of its ranges but
        // neither raises nor meets the level: the replica it replaces is
        // down, so the natural replicas alone keep the level's guarantee in
        // the old and the new replica set (a joining node's acks are only
        // information: it may still fail), and QUORUM stays as available
        // as before the replace.
        let (pending, replacing): (Vec<Target>, Vec<Target>) = {
            let ring = self.inner.ring.read();
            pending
                .into_iter()
                .partition(|t| !ring.replacing().any(|(n, _)| *n == t.replica.host))
        };
        cl.assure_sufficient_live(&strategy, self.dc(), &live(&natural), &live(&pending))?;
        // Fast path: this node is the only replica (and none is pending):
        // apply and await durability, no tracker, timer or task.
        if pending.is_empty() && replacing.is_empty() {
            if let [only] = natural.as_slice() {
                if only.replica.host == self.local() {
                    let durable = apply_local(
                        self.inner.storage.as_ref(),
                        &self.inner.metrics,
                        Mutation::new(table, update),
                    );
                    return Ok(durable.await?);
                }
            }
        }
        let mut tracker = WriteTracker::new(
            cl,
            &strategy,
            self.dc(),
            natural.iter().map(|t| t.replica.clone()).collect(),
            pending.iter().map(|t| t.replica.clone()).collect(),
            write_type,
        )?;
        let deadline = Instant::now() + self.inner.config.write_timeout;
        // Encoded once: the same bytes go to every replica's commitlog.
        let m = Mutation::new(table, update);
        let inflight: Inflight = FuturesUnordered::new();
        let mut dead = Vec::new();
        for t in natural.iter().chain(&pending).chain(&replacing) {
            let host = t.replica.host;
            if t.alive {
                inflight.push(
                    self.send_mutation(host, t.addr, &m)
                        .map(move |ok| Event::WriteAck(host, ok))
                        .boxed(),
                );
            } else {
                dead.push(host);
            }
        }
        let mut inflight = inflight;
        for host in dead {
            if self.hint(host, table, m.update().clone()).await {
                tracker.hint_stored(host);
            }
        }
        while !tracker.is_complete() {
            match timeout_at(deadline, inflight.next()).await {
                Ok(Some(Event::WriteAck(host, true))) => {
                    tracker.ack(host);
                }
                Ok(Some(Event::WriteAck(host, false))) => {
                    if self.hint(host, table, m.update().clone()).await {
                        tracker.hint_stored(host);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        let outcome = if tracker.is_complete() {
            WriteOutcome::Success
        } else {
            tracker.timeout()
        };
        if let WriteOutcome::Timeout(e) = &outcome {
            tracing::debug!(error = %e, "write timed out");
        }
        // Replicas still owing an answer: hint those that fail or time out.
        if !inflight.is_empty() {
            let this = self.clone();
            tokio::spawn(async move {
                while let Some(ev) = inflight.next().await {
                    if let Event::WriteAck(host, false) = ev {
                        this.hint(host, table, m.update().clone()).await;
                    }
                }
            });
        }
        outcome.into_result()
    }
}

/// The live ones of `targets`, for the consistency level's availability
/// check.
pub(super) fn live(targets: &[Target]) -> Vec<Replica> {
    targets
        .iter()
        .filter(|t| t.alive)
        .map(|t| t.replica.clone())
        .collect()
}
