//! Hooks for in-process benchmarks (`layer-ladder` in gyre-benches), which
//! measure a request at each layer of a started [`Node`] without its socket.
//! Hidden from the docs and not a stable API: nothing else should call them.

use std::sync::Arc;

use gyre_protocol::RequestHandler;
use gyre_query::QueryProcessor;
use gyre_storage::StorageEngine;

use crate::cql::CqlHandler;
use crate::node::Node;

impl Node {
    /// A CQL request handler over this node's state: the one its CQL server
    /// calls per request, minus the socket and the frame codec. It has its
    /// own prepared-statement cache (PREPARE through it before EXECUTE).
    #[doc(hidden)]
    pub fn cql_handler_for_bench(&self) -> Arc<dyn RequestHandler> {
        let qp = self.query_processor_for_bench();
        let auth = Arc::new(crate::auth::Auth::new(
            qp.clone(),
            self.shared.cfg.auth.clone(),
        ));
        Arc::new(CqlHandler::new(
            qp,
            self.shared.clone(),
            auth,
            self.shared.events.clone(),
        ))
    }

    /// The node's query processor, whose data access is the coordinator.
    #[doc(hidden)]
    pub fn query_processor_for_bench(&self) -> Arc<QueryProcessor> {
        self.shared
            .qp
            .get()
            .cloned()
            .expect("Node::start sets the query processor before returning")
    }

    /// The node's storage engine (for its commitlog counters).
    #[doc(hidden)]
    pub fn engine_for_bench(&self) -> Arc<dyn StorageEngine> {
        self.shared.engine.clone()
    }
}
