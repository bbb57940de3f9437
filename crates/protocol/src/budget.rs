//! Per-client bounds: connections per client IP, and request bytes in
//! flight node-wide and per client IP (Cassandra's
//! `native_transport_max_concurrent_connections_per_ip` and
//! `native_transport_max_request_data_in_flight[_per_ip]`).
//!
//! A request's frame holds its bytes from the moment it is read until its
//! response is queued. When either budget is spent the reader of that
//! connection waits before dispatching the next frame, so the client's
//! sends back up in TCP instead of in the node's memory (Cassandra pauses
//! reading the same way).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Largest budget a semaphore holds in one `acquire_many` (u32 permits).
const MAX_BUDGET: usize = u32::MAX as usize;

pub(crate) struct ClientBudgets {
    max_connections_per_ip: usize,
    per_ip_bytes: usize,
    global_bytes: usize,
    global: Arc<Semaphore>,
    clients: Mutex<HashMap<IpAddr, Client>>,
}

struct Client {
    connections: usize,
    bytes: Arc<Semaphore>,
}

impl ClientBudgets {
    pub(crate) fn new(
        max_connections_per_ip: usize,
        global_bytes: usize,
        per_ip_bytes: usize,
    ) -> Arc<Self> {
        let global_bytes = global_bytes.clamp(1, MAX_BUDGET);
        Arc::new(ClientBudgets {
            max_connections_per_ip: max_connections_per_ip.max(1),
            per_ip_bytes: per_ip_bytes.clamp(1, MAX_BUDGET),
            global_bytes,
            global: Arc::new(Semaphore::new(global_bytes)),
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// Registers a connection from `ip`; `None` when that client already
    /// holds its maximum of connections.
    pub(crate) fn connect(self: &Arc<Self>, ip: IpAddr) -> Option<ClientGuard> {
        let mut clients = self.clients.lock();
        let client = clients.entry(ip).or_insert_with(|| Client {
            connections: 0,
            bytes: Arc::new(Semaphore::new(self.per_ip_bytes)),
        });
        if client.connections >= self.max_connections_per_ip {
            return None;
        }
        client.connections += 1;
        Some(ClientGuard {
            budgets: self.clone(),
            ip,
            bytes: client.bytes.clone(),
        })
    }
}

/// One connection's membership of its client's budget; dropping it
/// releases the connection slot.
pub(crate) struct ClientGuard {
    budgets: Arc<ClientBudgets>,
    ip: IpAddr,
    bytes: Arc<Semaphore>,
}

/// Request bytes held until the response is queued.
pub(crate) struct BytesPermit {
    _global: OwnedSemaphorePermit,
    _client: OwnedSemaphorePermit,
}

impl ClientGuard {
    /// Waits until `len` bytes fit in both budgets (a frame larger than a
    /// whole budget takes all of it, so it waits for the others to finish
    /// rather than forever). The global budget is taken first, always in
    /// that order, so two connections never hold each other's halves.
    pub(crate) async fn acquire(&self, len: usize) -> Option<BytesPermit> {
        let global = len.clamp(1, self.budgets.global_bytes) as u32;
        let client = len.clamp(1, self.budgets.per_ip_bytes) as u32;
        // `try_` first: it takes no cooperative-scheduling budget, which
        // the reader needs for the requests it completes inline.
        let g = match self.budgets.global.clone().try_acquire_many_owned(global) {
            Ok(p) => p,
            Err(_) => self
                .budgets
                .global
                .clone()
                .acquire_many_owned(global)
                .await
                .ok()?,
        };
        let c = match self.bytes.clone().try_acquire_many_owned(client) {
            Ok(p) => p,
            Err(_) => self.bytes.clone().acquire_many_owned(client).await.ok()?,
        };
        Some(BytesPermit {
            _global: g,
            _client: c,
        })
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        let mut clients = self.budgets.clients.lock();
        if let Some(client) = clients.get_mut(&self.ip) {
            client.connections -= 1;
            if client.connections == 0 {
                clients.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

    #[test]
    fn connections_are_counted_per_ip_and_released() {
        let b = ClientBudgets::new(2, 1000, 100);
        let a1 = b.connect(A).expect("test value");
        let _a2 = b.connect(A).expect("test value");
        assert!(b.connect(A).is_none(), "third connection from one IP");
        let _b1 = b.connect(B).expect("another IP has its own count");
        drop(a1);
        assert!(b.connect(A).is_some(), "a closed connection frees its slot");
    }

    #[tokio::test]
    async fn bytes_wait_for_the_per_ip_budget() {
        let b = ClientBudgets::new(10, 1000, 100);
        let a = b.connect(A).expect("test value");
        let held = a.acquire(80).await.expect("test value");
        let blocked = tokio::time::timeout(Duration::from_millis(50), a.acquire(30)).await;
        assert!(blocked.is_err(), "80 + 30 bytes exceed the 100-byte budget");
        // Another client is not held up by A's budget.
        let other = b.connect(B).expect("test value");
        let o = other.acquire(90).await.expect("test value");
        drop(held);
        let _p = tokio::time::timeout(Duration::from_secs(5), a.acquire(30))
            .await
            .expect("released bytes let the request through")
            .expect("test value");
        // A frame larger than the whole budget takes all of it, once the
        // others are done.
        drop(_p);
        drop(o);
        let _all = tokio::time::timeout(Duration::from_secs(5), a.acquire(10_000))
            .await
            .expect("an oversized frame is clamped to the budget")
            .expect("test value");
    }

    #[tokio::test]
    async fn the_global_budget_bounds_all_clients() {
        let b = ClientBudgets::new(10, 100, 100);
        let a = b.connect(A).expect("test value");
        let other = b.connect(B).expect("test value");
        let _held = a.acquire(70).await.expect("test value");
        let blocked = tokio::time::timeout(Duration::from_millis(50), other.acquire(40)).await;
        assert!(
            blocked.is_err(),
            "70 + 40 bytes exceed the node's 100 bytes"
        );
    }
}
