//! Replicas cached per table, for one ring version and one version of the
//! table's replication: a request looks its token up in a precomputed
//! [`ReplicaPlan`] (natural and pending replicas per range) instead of
//! rebuilding the strategy and walking the ring. A ring change (join,
//! leave, move, a node's address or rack) or a schema change gives new
//! versions, and the next request rebuilds the table's routes.

use std::collections::HashMap;

use gyre_cluster::ReplicaPlan;

use super::*;

/// One table's replicas for a ring version and a replication version.
pub(super) struct Routes {
    ring_version: u64,
    strategy_version: u64,
    pub(super) strategy: ReplicationStrategy,
    plan: ReplicaPlan,
    /// Datacenter and address of every node in the ring.
    hosts: HashMap<HostId, (String, SocketAddr)>,
}

impl Routes {
    /// The natural and pending replicas of `token` (liveness not set).
    pub(super) fn targets(&self, token: Token) -> (Vec<Target>, Vec<Target>) {
        let to_targets = |hosts: &[HostId]| -> Vec<Target> {
            hosts
                .iter()
                .filter_map(|h| {
                    let Some((dc, addr)) = self.hosts.get(h) else {
                        tracing::warn!(host = %h, "replica missing from token metadata");
                        return None;
                    };
                    Some(Target {
                        replica: Replica::new(*h, dc.clone()),
                        addr: *addr,
                        alive: false,
                    })
                })
                .collect()
        };
        (
            to_targets(self.plan.natural(token)),
            to_targets(self.plan.pending(token)),
        )
    }
}

/// The routes of every table coordinated so far.
#[derive(Default)]
pub(super) struct RouteCache(RwLock<HashMap<TableId, Arc<Routes>>>);

impl Coordinator {
    /// `table`'s routes for the current ring and replication; `None` when
    /// the strategy provider cannot tell when a strategy changes (then
    /// nothing is cached).
    pub(super) fn routes(&self, table: TableId) -> Result<Option<Arc<Routes>>> {
        // Read before the strategy itself: a change in between leaves an
        // entry tagged with the old version, rebuilt on the next request.
        let Some(strategy_version) = self.inner.strategies.version(table) else {
            return Ok(None);
        };
        let ring_version = self.inner.ring.read().version();
        if let Some(r) = self.inner.routes.0.read().get(&table) {
            if r.ring_version == ring_version && r.strategy_version == strategy_version {
                return Ok(Some(r.clone()));
            }
        }
        let strategy =
            self.inner.strategies.strategy(table).ok_or_else(|| {
                CoordinatorError::InvalidRequest(format!("unknown table {table}"))
            })?;
        let routes = {
            let ring = self.inner.ring.read();
            Arc::new(Routes {
                ring_version: ring.version(),
                strategy_version,
                plan: ReplicaPlan::build(&ring, &strategy),
                strategy,
                hosts: ring
                    .nodes()
                    .map(|n| (n.host_id, (n.dc.clone(), n.address)))
                    .collect(),
            })
        };
        tracing::debug!(%table, ring_version = routes.ring_version, strategy_version, "replica routes rebuilt");
        self.inner.routes.0.write().insert(table, routes.clone());
        Ok(Some(routes))
    }
}
