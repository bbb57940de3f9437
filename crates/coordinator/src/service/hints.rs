//! Hint delivery: replaying a host's stored hints once it is back.

use super::*;

impl Coordinator {
    /// Delivers `host`'s hints in order, deleting each file once all of it
    /// was acknowledged; stops at the first failure (the rest stays).
    /// Returns the number delivered. Throttling (see
    /// [`crate::RateLimiter`]) and scheduling are the caller's.
    pub async fn deliver_hints(&self, host: HostId) -> Result<usize> {
        self.deliver(host, None).await
    }

    /// [`Coordinator::deliver_hints`] at the pace `limiter` allows
    /// (its units are bytes of encoded mutation).
    pub async fn deliver_hints_throttled(
        &self,
        host: HostId,
        limiter: &mut crate::hints::RateLimiter,
    ) -> Result<usize> {
        self.deliver(host, Some(limiter)).await
    }

    /// Hosts that have hints waiting.
    pub fn hinted_hosts(&self) -> Result<Vec<HostId>> {
        match &self.inner.hints {
            Some(store) => store.hosts(),
            None => Ok(Vec::new()),
        }
    }

    /// Drops every hint for `host` (it left the cluster).
    pub fn drop_hints(&self, host: HostId) -> Result<usize> {
        match &self.inner.hints {
            Some(store) => store.delete_host(host),
            None => Ok(0),
        }
    }

    pub(super) async fn deliver(
        &self,
        host: HostId,
        mut limiter: Option<&mut crate::hints::RateLimiter>,
    ) -> Result<usize> {
        let Some(store) = self.inner.hints.clone() else {
            return Ok(0);
        };
        let addr = self
            .inner
            .ring
            .read()
            .node(&host)
            .map(|n| n.address)
            .ok_or_else(|| CoordinatorError::InvalidRequest(format!("unknown host {host}")))?;
        let s = store.clone();
        let files = self
            .inner
            .runtime
            .spawn_blocking(move || s.replay_files(host))
            .await
            .map_err(join_error)??;
        // Tables that still exist: a hint for a dropped one is discarded.
        let tables: std::collections::HashSet<TableId> = self
            .inner
            .storage
            .tables()
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        let max_frame = gyre_net::DEFAULT_MAX_FRAME_SIZE;
        let mut delivered = 0;
        // One file in memory at a time.
        for id in files {
            let (s, file) = (store.clone(), id.clone());
            let hints = self
                .inner
                .runtime
                .spawn_blocking(move || s.read_file(&file))
                .await
                .map_err(join_error)??;
            for h in hints {
                if !tables.contains(&h.table) {
                    store.note_undeliverable();
                    tracing::info!(%host, table = %h.table.0, "discarding a hint for a dropped table");
                    continue;
                }
                let m = Mutation::new(h.table, h.mutation);
                if m.encoded().len() + 1024 > max_frame {
                    store.note_undeliverable();
                    tracing::warn!(%host, bytes = m.encoded().len(), "discarding a hint larger than an internode message");
                    continue;
                }
                if let Some(l) = limiter.as_deref_mut() {
                    let wait = l.acquire(m.encoded().len() as u64, std::time::Instant::now());
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                }
                match self.deliver_one(host, addr, &m).await {
                    Delivery::Done => delivered += 1,
                    Delivery::Refused(why) => {
                        store.note_undeliverable();
                        tracing::warn!(%host, error = %why, "the replica refuses a hint for good: discarding it");
                    }
                    // The rest of this file, and the later ones, stay.
                    Delivery::Later => {
                        store.note_delivered(delivered as u64);
                        return Ok(delivered);
                    }
                }
            }
            store.acknowledge(&id)?;
        }
        store.note_delivered(delivered as u64);
        Ok(delivered)
    }

    /// Sends one hinted mutation to its replica.
    async fn deliver_one(&self, host: HostId, addr: SocketAddr, m: &Mutation) -> Delivery {
        let timeout = self.inner.config.write_timeout;
        let payload = m.encoded().clone();
        match self
            .inner
            .messenger
            .request(addr, MUTATION, payload, timeout)
            .await
        {
            Ok(_) => Delivery::Done,
            // The replica does not know the table (dropped there too):
            // retrying would never succeed.
            Err(gyre_net::Error::Remote { message, .. }) if message.contains("unknown table") => {
                Delivery::Refused(message)
            }
            Err(e) => {
                tracing::debug!(%host, error = %e, "hint not delivered; will retry");
                Delivery::Later
            }
        }
    }
}

/// How one hint's delivery went.
enum Delivery {
    Done,
    /// Refused in a way that will not change: drop the hint.
    Refused(String),
    /// Not now (timeout, replica down or busy): keep it for the next replay.
    Later,
}
