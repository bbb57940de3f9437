use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::error::{Error, Result};
use crate::messenger::Messenger;
use crate::transport::{InboundSink, Message, NodeAddr, SendOptions, Transport, TransportStats};

/// Messages waiting for one simulated node's receive task.
const NODE_QUEUE: usize = 10_000;

struct SimState {
    /// Receive queue of each running node, tagged with its transport's id.
    nodes: HashMap<NodeAddr, (u64, mpsc::Sender<Message>)>,
    /// Unordered pairs that cannot talk (stored both ways).
    blocked: HashSet<(NodeAddr, NodeAddr)>,
    isolated: HashSet<NodeAddr>,
    drop_probability: f64,
    delay: (Duration, Duration),
    rng: StdRng,
}

struct SimInner {
    state: Mutex<SimState>,
    delivered: AtomicU64,
    dropped: AtomicU64,
    next_id: AtomicU64,
}

/// Counters of the whole simulated network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    pub delivered: u64,
    pub dropped: u64,
}

/// An in-process network for running a whole cluster in one test: every
/// node is a [`Messenger`] over a [`SimTransport`]. Tests can drop messages
/// (seeded RNG), delay them, partition nodes, and heal. Delivery order
/// between two nodes is FIFO unless a delay range makes it random.
#[derive(Clone)]
pub struct SimNetwork {
    inner: Arc<SimInner>,
}

impl SimNetwork {
    pub fn new(seed: u64) -> Self {
        SimNetwork {
            inner: Arc::new(SimInner {
                state: Mutex::new(SimState {
                    nodes: HashMap::new(),
                    blocked: HashSet::new(),
                    isolated: HashSet::new(),
                    drop_probability: 0.0,
                    delay: (Duration::ZERO, Duration::ZERO),
                    rng: StdRng::seed_from_u64(seed),
                }),
                delivered: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                next_id: AtomicU64::new(0),
            }),
        }
    }

    /// A transport for a node at `addr` (not yet reachable until a messenger starts it).
    pub fn transport(&self, addr: NodeAddr) -> SimTransport {
        SimTransport {
            addr,
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            net: self.inner.clone(),
            token: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }
    }

    /// A running messenger for a node at `addr`.
    pub fn messenger(&self, addr: NodeAddr) -> Result<Messenger> {
        Messenger::new(Arc::new(self.transport(addr)))
    }

    /// Each message is dropped with probability `p` (clamped to `[0, 1]`).
    pub fn set_drop_probability(&self, p: f64) {
        let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
        self.inner.state.lock().drop_probability = p;
    }

    /// Each message is delayed by a uniformly random time in `[min, max]`.
    pub fn set_delay(&self, min: Duration, max: Duration) {
        self.inner.state.lock().delay = (min, max.max(min));
    }

    /// Blocks traffic both ways between `a` and `b`.
    pub fn partition(&self, a: NodeAddr, b: NodeAddr) {
        let mut st = self.inner.state.lock();
        st.blocked.insert((a, b));
        st.blocked.insert((b, a));
    }

    /// Blocks every pair with one node in `side_a` and the other in `side_b`.
    pub fn partition_sets(&self, side_a: &[NodeAddr], side_b: &[NodeAddr]) {
        for a in side_a {
            for b in side_b {
                self.partition(*a, *b);
            }
        }
    }

    /// Cuts `node` off from everyone.
    pub fn isolate(&self, node: NodeAddr) {
        self.inner.state.lock().isolated.insert(node);
    }

    pub fn heal_pair(&self, a: NodeAddr, b: NodeAddr) {
        let mut st = self.inner.state.lock();
        st.blocked.remove(&(a, b));
        st.blocked.remove(&(b, a));
    }

    /// Removes all partitions and isolations (drop probability and delay stay).
    pub fn heal(&self) {
        let mut st = self.inner.state.lock();
        st.blocked.clear();
        st.isolated.clear();
    }

    pub fn stats(&self) -> SimStats {
        SimStats {
            delivered: self.inner.delivered.load(Ordering::Relaxed),
            dropped: self.inner.dropped.load(Ordering::Relaxed),
        }
    }
}

/// One node's attachment to a [`SimNetwork`].
pub struct SimTransport {
    addr: NodeAddr,
    id: u64,
    net: Arc<SimInner>,
    token: CancellationToken,
    tasks: TaskTracker,
}

impl SimTransport {
    fn drop_msg(&self) {
        self.net.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Unregisters this node, unless a restarted node already took the address.
    fn unregister(&self) {
        let mut st = self.net.state.lock();
        if st
            .nodes
            .get(&self.addr)
            .is_some_and(|(id, _)| *id == self.id)
        {
            st.nodes.remove(&self.addr);
        }
    }
}

#[async_trait]
impl Transport for SimTransport {
    fn local_addr(&self) -> NodeAddr {
        self.addr
    }

    fn start(&self, sink: InboundSink) -> Result<()> {
        let (tx, mut rx) = mpsc::channel::<Message>(NODE_QUEUE);
        self.net.state.lock().nodes.insert(self.addr, (self.id, tx));
        let token = self.token.clone();
        let net = self.net.clone();
        self.tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    m = rx.recv() => match m {
                        Some(m) => {
                            net.delivered.fetch_add(1, Ordering::Relaxed);
                            sink(m);
                        }
                        None => return,
                    },
                }
            }
        });
        Ok(())
    }

    fn send(&self, to: NodeAddr, mut msg: Message, _opts: SendOptions) -> Result<()> {
        if self.token.is_cancelled() {
            return Err(Error::Shutdown);
        }
        msg.from = self.addr;
        let (target, delay) = {
            let mut st = self.net.state.lock();
            let cut = st.blocked.contains(&(self.addr, to))
                || st.isolated.contains(&self.addr)
                || st.isolated.contains(&to);
            let p = st.drop_probability;
            if cut || (p > 0.0 && st.rng.gen::<f64>() < p) {
                drop(st);
                self.drop_msg();
                return Ok(());
            }
            let (min, max) = st.delay;
            let delay = if max > min {
                st.rng.gen_range(min..=max)
            } else {
                min
            };
            (st.nodes.get(&to).map(|(_, tx)| tx.clone()), delay)
        };
        // An unknown or stopped node behaves like an unreachable host: the message is lost.
        let Some(target) = target else {
            debug!(from = %self.addr, %to, "no such simulated node, dropping");
            self.drop_msg();
            return Ok(());
        };
        if delay.is_zero() {
            return match target.try_send(msg) {
                Ok(()) => Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.drop_msg();
                    Err(Error::QueueFull { peer: to })
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.drop_msg();
                    Ok(())
                }
            };
        }
        let net = self.net.clone();
        self.tasks.spawn(async move {
            tokio::time::sleep(delay).await;
            if target.try_send(msg).is_err() {
                net.dropped.fetch_add(1, Ordering::Relaxed);
            }
        });
        Ok(())
    }

    fn shutdown(&self) {
        self.token.cancel();
        self.unregister();
    }

    async fn wait_closed(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    fn stats(&self) -> TransportStats {
        TransportStats {
            // Network-wide: the simulation does not attribute drops to a node.
            network_dropped: self.net.dropped.load(Ordering::Relaxed),
            ..TransportStats::default()
        }
    }
}
