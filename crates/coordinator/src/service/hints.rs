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
            .spawn_blocking(move || s.replay(host)?.collect::<Result<Vec<_>>>())
            .await
            .map_err(join_error)??;
        let mut delivered = 0;
        for (id, hints) in files {
            for h in hints {
                if let Some(l) = limiter.as_deref_mut() {
                    let wait =
                        l.acquire(h.mutation.size_estimate() as u64, std::time::Instant::now());
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                }
                if !self
                    .send_mutation(host, addr, &Mutation::new(h.table, h.mutation))
                    .await
                {
                    return Ok(delivered);
                }
                delivered += 1;
            }
            store.acknowledge(&id)?;
        }
        Ok(delivered)
    }
}
