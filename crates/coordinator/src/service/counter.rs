//! Counter writes, Cassandra 2.1+'s way: the coordinator sends the deltas
//! to one live replica, the leader (itself when it is a replica), which
//! under a per-counter lock reads its own shard, writes clock = max(now,
//! old + 1) and count = old + delta ([`gyre_common::counter`]), and sends
//! the resulting shard to every replica as an ordinary mutation at the
//! statement's consistency level. Timeouts are WriteTimeouts of type
//! COUNTER; an increment is not idempotent (a timed-out one may or may not
//! have been applied), so it is never retried here.

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};

use gyre_common::counter::{next_shard, parse_delta, parse_shard};
use gyre_common::{CellName, Row};
use gyre_storage::{ClusteringFilter, ColumnFilter};

use super::handlers::respond;
use super::*;
use crate::messages::COUNTER_MUTATION;

fn counter_timeout(cl: ConsistencyLevel) -> CoordinatorError {
    CoordinatorError::WriteTimeout {
        consistency: cl,
        received: 0,
        block_for: 1,
        write_type: WriteType::Counter,
    }
}

fn micros_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

impl Coordinator {
    /// Serves COUNTER_MUTATION (this node as the leader). Call once the
    /// coordinator is fully built (it keeps a weak reference to it).
    pub fn register_counter_handler(&self) {
        let weak = Arc::downgrade(&self.inner);
        self.inner
            .messenger
            .register(COUNTER_MUTATION, move |msg: Inbound| {
                let Some(responder) = msg.responder else {
                    return;
                };
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                let this = Coordinator { inner };
                tokio::spawn(async move {
                    let res = async {
                        let cl = msg
                            .payload
                            .first()
                            .and_then(|c| ConsistencyLevel::from_code(u16::from(*c)))
                            .ok_or_else(|| "bad consistency".to_string())?;
                        let m = Mutation::decode(&msg.payload[1..]).map_err(|e| e.to_string())?;
                        this.lead_counter(m.table(), m.into_update(), cl)
                            .await
                            .map_err(|e| e.to_string())?;
                        Ok(Bytes::new())
                    }
                    .await;
                    respond(responder, res, COUNTER_MUTATION);
                });
            });
    }

    /// Applies counter deltas (cells with an empty path whose value is
    /// the delta) through a leader replica, at `cl`.
    pub async fn counter_write(
        &self,
        table: TableId,
        deltas: Partition,
        cl: ConsistencyLevel,
    ) -> Result<()> {
        cl.validate_for_write()?;
        let (strategy, natural, pending) = self.plan(table, deltas.key.token)?;
        // Refused here rather than by the leader, as Cassandra does: an
        // Unavailable must mean nothing was applied anywhere.
        cl.assure_sufficient_live(&strategy, self.dc(), &live(&natural), &live(&pending))?;
        let leader = natural
            .iter()
            .find(|t| t.replica.host == self.local())
            .or_else(|| {
                natural
                    .iter()
                    .find(|t| t.alive && t.replica.dc == self.dc())
            })
            .or_else(|| natural.iter().find(|t| t.alive));
        let Some(leader) = leader else {
            return Err(CoordinatorError::Unavailable {
                consistency: cl,
                required: 1,
                alive: 0,
            });
        };
        if leader.replica.host == self.local() {
            return self.lead_counter(table, deltas, cl).await;
        }
        let mut payload = vec![cl.code() as u8];
        payload.extend_from_slice(Mutation::new(table, deltas).encoded());
        // The leader waits up to the write timeout for its replicas.
        let timeout = self.inner.config.write_timeout * 2;
        match self
            .inner
            .messenger
            .request(leader.addr, COUNTER_MUTATION, Bytes::from(payload), timeout)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::debug!(leader = %leader.replica.host, error = %e, "counter write failed");
                Err(counter_timeout(cl))
            }
        }
    }

    /// This node as the leader: deltas become its next shards, applied
    /// here under the counter's lock, then written to every replica.
    async fn lead_counter(
        &self,
        table: TableId,
        deltas: Partition,
        cl: ConsistencyLevel,
    ) -> Result<()> {
        // Checked before the shard is applied here: once applied, the
        // increment counts whatever the replicas do, so the client must
        // not be told Unavailable (nothing applied) after that point.
        let (strategy, natural, pending) = self.plan(table, deltas.key.token)?;
        cl.assure_sufficient_live(&strategy, self.dc(), &live(&natural), &live(&pending))?;
        let host = Bytes::copy_from_slice(self.local().as_bytes());
        let shards = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            table.hash(&mut h);
            deltas.key.key.hash(&mut h);
            let locks = &self.inner.counter_locks;
            let _guard = locks[(h.finish() % locks.len() as u64) as usize].lock();
            let now = self.inner.clock.now();
            let mut shards = Partition::new(deltas.key.clone());
            let convert = |ck: Option<&Bytes>, row: &Row, shards: &mut Partition| -> Result<()> {
                for (name, cell) in row.cells.iter().filter(|(n, _)| n.path.is_empty()) {
                    let Some(delta) = cell.value_at(now).and_then(|v| parse_delta(v)) else {
                        continue;
                    };
                    let filter = ReadFilter {
                        clustering: match ck {
                            Some(ck) => ClusteringFilter::Names(BTreeSet::from([ck.clone()])),
                            None => ClusteringFilter::all(),
                        },
                        columns: ColumnFilter::Columns(BTreeSet::from([name.column.clone()])),
                        limit: None,
                        reversed: false,
                    };
                    let shard_name = CellName::element(name.column.clone(), host.clone());
                    let stored = self.inner.storage.read(table, &deltas.key, &filter, now)?;
                    let old = stored
                        .as_ref()
                        .and_then(|p| match ck {
                            Some(ck) => p.rows.get(ck),
                            None => p.static_row.as_ref(),
                        })
                        .and_then(|r| r.cells.get(&shard_name))
                        .and_then(|c| c.value_at(now))
                        .and_then(|v| parse_shard(v));
                    let cell = next_shard(old, delta, micros_now());
                    let s = std::mem::replace(shards, Partition::new(deltas.key.clone()));
                    *shards = match ck {
                        Some(ck) => s.set(ck.clone(), shard_name, cell),
                        None => s.set_static(shard_name, cell),
                    };
                }
                Ok(())
            };
            if let Some(r) = &deltas.static_row {
                convert(None, r, &mut shards)?;
            }
            for (ck, r) in &deltas.rows {
                convert(Some(ck), r, &mut shards)?;
            }
            // Applied here before the lock is released, so the next
            // increment of this counter reads this shard.
            let durable = apply_local(
                self.inner.storage.as_ref(),
                &self.inner.metrics,
                Mutation::new(table, shards.clone()),
            );
            drop(durable);
            shards
        };
        self.write_with_type(table, shards, cl, WriteType::Counter)
            .await
    }
}
