//! Batches: logged batches through the batchlog of two other nodes,
//! unlogged ones written partition by partition; batchlog replay.

use super::*;

impl Coordinator {
    /// Applies a batch of mutations at `cl`. A logged batch is first stored
    /// in the batchlog of up to two other live nodes of this datacenter
    /// (this node's own when it is alone), so that it is applied in full
    /// eventually even if this coordinator dies half-way; its entries are
    /// removed once every mutation reached `cl`.
    pub async fn write_batch(
        &self,
        mutations: Vec<(TableId, Partition)>,
        cl: ConsistencyLevel,
        logged: bool,
    ) -> Result<()> {
        if !logged || mutations.len() <= 1 {
            let wt = if logged {
                WriteType::Batch
            } else {
                WriteType::UnloggedBatch
            };
            return self.write_all(mutations, cl, wt).await;
        }
        cl.validate_for_write()?;
        let id = uuid::Uuid::new_v4();
        let payload = messages::encode_batch(id, &mutations);
        let ts = self.inner.timestamps.next();
        let holders = self.batchlog_holders();
        let timeout = self.inner.config.write_timeout;
        if holders.is_empty() {
            batchlog::store_deferred(self.inner.storage.as_ref(), id, payload.clone(), ts).await?;
        } else {
            // The holders store it at this coordinator's timestamp, so the
            // removal (a later timestamp from here) always shadows it.
            let mut msg = ts.to_be_bytes().to_vec();
            msg.extend_from_slice(&payload);
            let msg = Bytes::from(msg);
            let mut acks = FuturesUnordered::new();
            for addr in &holders {
                let m = self.inner.messenger.clone();
                let (addr, p) = (*addr, msg.clone());
                acks.push(async move { m.request(addr, BATCH_STORE, p, timeout).await });
            }
            let mut received = 0;
            while let Some(r) = acks.next().await {
                match r {
                    Ok(_) => received += 1,
                    Err(e) => tracing::debug!(error = %e, "batchlog store failed"),
                }
            }
            if received < holders.len() {
                return Err(CoordinatorError::WriteTimeout {
                    consistency: ConsistencyLevel::One,
                    received,
                    block_for: holders.len(),
                    write_type: WriteType::BatchLog,
                });
            }
        }
        self.write_all(mutations, cl, WriteType::Batch).await?;
        // Applied: forget the batch (best effort; a leftover is replayed,
        // which is harmless: mutations are idempotent).
        let remove_ts = self.inner.timestamps.next();
        if holders.is_empty() {
            let removed =
                batchlog::remove_deferred(self.inner.storage.as_ref(), id, remove_ts).await;
            if let Err(e) = removed {
                tracing::debug!(error = %e, "batchlog remove failed");
            }
        } else {
            let mut body = id.as_bytes().to_vec();
            body.extend_from_slice(&remove_ts.to_be_bytes());
            for addr in holders {
                if let Err(e) =
                    self.inner
                        .messenger
                        .send_oneway(addr, BATCH_REMOVE, Bytes::from(body.clone()))
                {
                    tracing::debug!(%addr, error = %e, "batchlog remove not sent");
                }
            }
        }
        Ok(())
    }

    /// Writes every mutation concurrently; the first failure is the answer.
    pub(super) async fn write_all(
        &self,
        mutations: Vec<(TableId, Partition)>,
        cl: ConsistencyLevel,
        write_type: WriteType,
    ) -> Result<()> {
        let mut writes: FuturesUnordered<_> = mutations
            .into_iter()
            .map(|(t, p)| self.write_with_type(t, p, cl, write_type))
            .collect();
        let mut first_err = None;
        while let Some(r) = writes.next().await {
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Up to two live nodes of this datacenter other than this one, for a
    /// logged batch's batchlog.
    pub(super) fn batchlog_holders(&self) -> Vec<SocketAddr> {
        let candidates: Vec<(HostId, SocketAddr)> = self
            .inner
            .ring
            .read()
            .nodes()
            .filter(|n| n.host_id != self.local() && n.dc == self.dc())
            .map(|n| (n.host_id, n.address))
            .collect();
        let mut v: Vec<(HostId, SocketAddr)> = candidates
            .into_iter()
            .filter(|(h, _)| self.inner.liveness.is_alive(*h))
            .collect();
        // A different pair per batch spreads the load.
        let shift = (self.inner.timestamps.next() as usize) % v.len().max(1);
        v.rotate_left(shift);
        v.into_iter().take(2).map(|(_, a)| a).collect()
    }

    /// Stores a batch in this node's own batchlog without applying it:
    /// what a batchlog holder does for another coordinator. For tests of
    /// the replay path.
    #[doc(hidden)]
    pub async fn store_in_batchlog(
        &self,
        mutations: &[(TableId, Partition)],
    ) -> Result<uuid::Uuid> {
        let id = uuid::Uuid::new_v4();
        let payload = messages::encode_batch(id, mutations);
        let ts = self.inner.timestamps.next();
        batchlog::store_deferred(self.inner.storage.as_ref(), id, payload, ts).await?;
        Ok(id)
    }

    /// Replays this node's batchlog entries older than `older_than`
    /// (Cassandra: twice the write timeout): their coordinator did not
    /// remove them, so it may have died before applying them. Each is
    /// written at ONE (replicas that miss it get hints) and removed once
    /// written. Returns the number of batches replayed.
    pub async fn replay_batchlog(&self, older_than: Duration) -> Result<usize> {
        let now = self.inner.timestamps.next();
        let before = now - older_than.as_micros() as i64;
        let storage = self.inner.storage.clone();
        let due = self
            .inner
            .runtime
            .spawn_blocking(move || batchlog::due(storage.as_ref(), before))
            .await
            .map_err(join_error)??;
        let mut replayed = 0;
        for (id, written, payload) in due {
            let mutations = match messages::decode_batch(&payload) {
                Ok((_, m)) => m,
                Err(e) => {
                    tracing::error!(%id, error = %e, "undecodable batchlog entry; dropped");
                    Vec::new()
                }
            };
            // Tables dropped since are skipped.
            let mutations: Vec<_> = mutations
                .into_iter()
                .filter(|(t, _)| self.inner.strategies.strategy(*t).is_some())
                .collect();
            if let Err(e) = self
                .write_all(mutations, ConsistencyLevel::One, WriteType::Batch)
                .await
            {
                tracing::warn!(%id, error = %e, "batchlog replay failed; will retry");
                continue;
            }
            let ts = self.inner.timestamps.next().max(written + 1);
            let storage = self.inner.storage.clone();
            self.inner
                .runtime
                .spawn_blocking(move || batchlog::remove(storage.as_ref(), id, ts))
                .await
                .map_err(join_error)??;
            tracing::info!(%id, "replayed a batch from the batchlog");
            replayed += 1;
        }
        Ok(replayed)
    }
}
