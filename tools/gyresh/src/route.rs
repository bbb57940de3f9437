//! Where the shell sends its requests: to the node it was started on, as
//! cqlsh does (its `WhiteListRoundRobinPolicy` of the one contact host).
//!
//! The driver's default policy is token-aware and round-robin: an
//! `INSERT` would be coordinated by a replica of its key and the next
//! `SELECT` by whichever node comes next, so at CL ONE a shell user could
//! miss the row they had just written (the write reaches the other
//! replicas a moment later). With one coordinator, a CL ONE read goes to
//! that node's own replica first and sees its own writes. The driver's
//! default plan stays as the fallback, for a contact address the cluster
//! knows under another name (a port-forward, address translation) and for
//! when the contact node fails.

use std::net::SocketAddr;
use std::sync::Arc;

use scylla::cluster::{ClusterState, NodeRef};
use scylla::policies::load_balancing::{
    DefaultPolicy, FallbackPlan, LoadBalancingPolicy, RoutingInfo,
};
use scylla::routing::Shard;

/// Sends every request to the node at `contact` while the cluster
/// metadata lists it, else as the driver's default policy would.
#[derive(Debug)]
pub struct ContactNode {
    contact: SocketAddr,
    default: Arc<dyn LoadBalancingPolicy>,
}

impl ContactNode {
    /// The policy for a shell connected to `contact`.
    pub fn policy(contact: SocketAddr) -> Arc<dyn LoadBalancingPolicy> {
        Arc::new(ContactNode {
            contact,
            default: DefaultPolicy::builder().build(),
        })
    }

    fn contact<'a>(&self, cluster: &'a ClusterState) -> Option<NodeRef<'a>> {
        cluster
            .get_nodes_info()
            .iter()
            .find(|n| SocketAddr::new(n.address.ip(), n.address.port()) == self.contact)
    }
}

impl LoadBalancingPolicy for ContactNode {
    fn pick<'a>(
        &'a self,
        request: &'a RoutingInfo<'_>,
        cluster: &'a ClusterState,
    ) -> Option<(NodeRef<'a>, Option<Shard>)> {
        match self.contact(cluster) {
            Some(node) => Some((node, None)),
            None => self.default.pick(request, cluster),
        }
    }

    /// The default plan (the driver's plan skips the node `pick` chose).
    fn fallback<'a>(
        &'a self,
        request: &'a RoutingInfo<'_>,
        cluster: &'a ClusterState,
    ) -> FallbackPlan<'a> {
        self.default.fallback(request, cluster)
    }

    fn name(&self) -> String {
        "ContactNode".to_string()
    }
}
