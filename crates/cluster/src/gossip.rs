//! Cassandra-style gossip as a deterministic state machine.
//!
//! The caller owns the transport and the clock: it calls [`Gossiper::tick`]
//! about once per gossip interval and [`Gossiper::step`] for every received
//! message, and sends the returned [`Outgoing`] messages. Randomness comes from
//! a seeded RNG so simulations replay exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use gyre_common::Token;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::failure_detector::{FailureDetector, FailureDetectorConfig};
use crate::ring::HostId;

/// A gossip participant, named by its internode (gossip) address.
pub type Endpoint = SocketAddr;

/// Keys of the versioned application states a node publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AppStateKey {
    Status,
    Tokens,
    Dc,
    Rack,
    HostId,
    NativeAddress,
    Schema,
    Load,
    ReleaseVersion,
}

/// A node's lifecycle status (the STATUS application state).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NodeStatus {
    Bootstrapping,
    /// Joining in place of a dead node, taking over its tokens (Cassandra's
    /// BOOT_REPLACE; the STATUS value also names the replaced host id).
    Replacing,
    Normal,
    Leaving,
    Left,
    /// Taken out of the ring by `removenode` (Cassandra's REMOVED_TOKEN),
    /// published by the remover on the removed node's own state with a
    /// newer version, so no peer can gossip the node back in.
    Removed,
    Shutdown,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bootstrapping => "BOOT",
            Self::Replacing => "BOOT_REPLACE",
            Self::Normal => "NORMAL",
            Self::Leaving => "LEAVING",
            Self::Left => "LEFT",
            Self::Removed => "removed",
            Self::Shutdown => "shutdown",
        }
    }

    /// Statuses of nodes that are not serving: never marked UP from gossip.
    pub fn is_dead(self) -> bool {
        matches!(self, Self::Left | Self::Removed | Self::Shutdown)
    }
}

impl fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NodeStatus {
    type Err = ();
    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        Ok(match s {
            "BOOT" => Self::Bootstrapping,
            "BOOT_REPLACE" => Self::Replacing,
            "NORMAL" => Self::Normal,
            "LEAVING" => Self::Leaving,
            "LEFT" => Self::Left,
            "removed" => Self::Removed,
            "shutdown" => Self::Shutdown,
            _ => return Err(()),
        })
    }
}

/// Encodes tokens for the TOKENS state (comma-separated decimals).
pub fn encode_tokens(tokens: &[Token]) -> String {
    tokens
        .iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// A value with the version it was published at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionedValue {
    pub value: String,
    pub version: u64,
}

/// Everything gossip knows about one endpoint.
///
/// Heartbeat and application states share one per-node version counter, so
/// `max_version` summarises the state (Cassandra's VersionGenerator).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointState {
    /// Set by the node at start-up; larger after every restart.
    pub generation: u64,
    /// Version of the latest heartbeat.
    pub heartbeat: u64,
    pub states: BTreeMap<AppStateKey, VersionedValue>,
}

impl EndpointState {
    pub fn new(generation: u64, heartbeat: u64) -> Self {
        Self {
            generation,
            heartbeat,
            states: BTreeMap::new(),
        }
    }

    pub fn max_version(&self) -> u64 {
        self.states
            .values()
            .map(|v| v.version)
            .max()
            .unwrap_or(0)
            .max(self.heartbeat)
    }

    pub fn get(&self, key: AppStateKey) -> Option<&str> {
        self.states.get(&key).map(|v| v.value.as_str())
    }

    /// The STATUS state's status (what comes before any `,`).
    pub fn status(&self) -> Option<NodeStatus> {
        self.get(AppStateKey::Status)
            .and_then(|s| s.split(',').next())
            .and_then(|s| s.parse().ok())
    }

    /// The host a BOOT_REPLACE node replaces (`BOOT_REPLACE,<host id>`).
    pub fn replacing(&self) -> Option<HostId> {
        let (status, host) = self.get(AppStateKey::Status)?.split_once(',')?;
        (status == NodeStatus::Replacing.as_str())
            .then(|| host.parse().ok())
            .flatten()
    }

    /// The TOKENS state; `None` if absent or malformed.
    pub fn tokens(&self) -> Option<Vec<Token>> {
        let s = self.get(AppStateKey::Tokens)?;
        if s.is_empty() {
            return Some(Vec::new());
        }
        s.split(',').map(|t| t.parse().ok()).collect()
    }

    pub fn dc(&self) -> Option<&str> {
        self.get(AppStateKey::Dc)
    }

    pub fn rack(&self) -> Option<&str> {
        self.get(AppStateKey::Rack)
    }

    pub fn host_id(&self) -> Option<HostId> {
        self.get(AppStateKey::HostId).and_then(|s| s.parse().ok())
    }

    /// The CQL (native protocol) address.
    pub fn native_address(&self) -> Option<SocketAddr> {
        self.get(AppStateKey::NativeAddress)
            .and_then(|s| s.parse().ok())
    }

    pub fn schema(&self) -> Option<uuid::Uuid> {
        self.get(AppStateKey::Schema).and_then(|s| s.parse().ok())
    }

    pub fn load(&self) -> Option<f64> {
        self.get(AppStateKey::Load).and_then(|s| s.parse().ok())
    }

    pub fn release_version(&self) -> Option<&str> {
        self.get(AppStateKey::ReleaseVersion)
    }

    /// True for SHUTDOWN and LEFT: such a node is never marked UP.
    pub fn is_dead_state(&self) -> bool {
        self.status().is_some_and(NodeStatus::is_dead)
    }

    /// The part of this state newer than `version` (heartbeat always included).
    fn newer_than(&self, version: u64) -> EndpointState {
        EndpointState {
            generation: self.generation,
            heartbeat: self.heartbeat,
            states: self
                .states
                .iter()
                .filter(|(_, v)| v.version > version)
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
        }
    }
}

/// Summary of what a node knows about one endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipDigest {
    pub endpoint: Endpoint,
    pub generation: u64,
    pub max_version: u64,
}

/// Gossip wire messages; the transport serializes them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum GossipMessage {
    /// Round start: the initiator's digests of everything it knows.
    Syn {
        cluster_name: String,
        digests: Vec<GossipDigest>,
    },
    /// Reply: states the receiver has newer (or the initiator did not
    /// mention), and digests of states it wants (version = what it has).
    Ack {
        digests: Vec<GossipDigest>,
        states: Vec<(Endpoint, EndpointState)>,
    },
    /// The initiator's answer to the Ack's requests.
    Ack2 {
        states: Vec<(Endpoint, EndpointState)>,
    },
    /// The sender is shutting down gracefully; its final state.
    Shutdown {
        state: EndpointState,
    },
    /// Liveness probe sent before marking a node UP.
    Echo,
    EchoReply,
}

/// A message for the caller to send.
#[derive(Clone, Debug, PartialEq)]
pub struct Outgoing {
    pub to: Endpoint,
    pub msg: GossipMessage,
}

/// Membership changes, drained by the caller with [`Gossiper::drain_events`].
#[derive(Clone, Debug, PartialEq)]
pub enum MembershipEvent {
    /// First time this endpoint is seen (or seen again after removal).
    Joined {
        endpoint: Endpoint,
        state: EndpointState,
    },
    /// The endpoint restarted: its state was replaced by a newer generation.
    Restarted {
        endpoint: Endpoint,
        generation: u64,
    },
    Up(Endpoint),
    Down(Endpoint),
    StatusChanged {
        endpoint: Endpoint,
        status: Option<NodeStatus>,
    },
    /// An application state other than STATUS changed.
    StateChanged {
        endpoint: Endpoint,
        key: AppStateKey,
        value: String,
    },
    Removed(Endpoint),
}

#[derive(Clone, Debug)]
pub struct GossipConfig {
    /// SYNs from another cluster are rejected.
    pub cluster_name: String,
    /// This node's gossip address.
    pub local: Endpoint,
    /// Seed addresses (may include `local`).
    pub seeds: Vec<Endpoint>,
    /// Gossip round and heartbeat period.
    pub interval_ms: u64,
    pub failure_detector: FailureDetectorConfig,
    /// How long a removed endpoint is ignored so stale gossip cannot revive it.
    pub quarantine_ms: u64,
}

impl GossipConfig {
    pub fn new(cluster_name: impl Into<String>, local: Endpoint, seeds: Vec<Endpoint>) -> Self {
        Self {
            cluster_name: cluster_name.into(),
            local,
            seeds,
            interval_ms: 1000,
            failure_detector: FailureDetectorConfig::default(),
            quarantine_ms: 60_000,
        }
    }
}

/// One node's gossip state machine.
pub struct Gossiper {
    cfg: GossipConfig,
    /// Seeds other than this node.
    seeds: Vec<Endpoint>,
    version: u64,
    states: BTreeMap<Endpoint, EndpointState>,
    live: BTreeSet<Endpoint>,
    /// Known endpoints that are not live, with the time they became so.
    unreachable: BTreeMap<Endpoint, u64>,
    fd: FailureDetector<Endpoint>,
    rng: StdRng,
    events: Vec<MembershipEvent>,
    next_round_at: u64,
    /// Echo requests in flight, with their send time.
    pending_echo: BTreeMap<Endpoint, u64>,
    quarantine: BTreeMap<Endpoint, u64>,
    rounds_without_live_seed: u64,
    rejected_syns: u64,
    stopped: bool,
}

impl Gossiper {
    /// A gossiper whose local state has `generation` (must grow across
    /// restarts, e.g. seconds since the epoch) and no application state yet.
    pub fn new(cfg: GossipConfig, generation: u64, rng_seed: u64, now: u64) -> Self {
        let seeds = cfg
            .seeds
            .iter()
            .copied()
            .filter(|s| *s != cfg.local)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut g = Self {
            fd: FailureDetector::new(cfg.failure_detector.clone()),
            seeds,
            version: 0,
            states: BTreeMap::new(),
            live: BTreeSet::new(),
            unreachable: BTreeMap::new(),
            rng: StdRng::seed_from_u64(rng_seed),
            events: Vec::new(),
            next_round_at: now,
            pending_echo: BTreeMap::new(),
            quarantine: BTreeMap::new(),
            rounds_without_live_seed: 0,
            rejected_syns: 0,
            stopped: false,
            cfg,
        };
        let heartbeat = g.next_version();
        g.states
            .insert(g.cfg.local, EndpointState::new(generation, heartbeat));
        g
    }

    fn next_version(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    fn local_mut(&mut self) -> &mut EndpointState {
        let local = self.cfg.local;
        self.states
            .entry(local)
            .or_insert_with(|| EndpointState::new(0, 0))
    }

    // ---- local state -------------------------------------------------

    /// Publishes a local application state at a new version.
    pub fn set_local_state(&mut self, key: AppStateKey, value: impl Into<String>) {
        let version = self.next_version();
        self.local_mut().states.insert(
            key,
            VersionedValue {
                value: value.into(),
                version,
            },
        );
    }

    pub fn set_status(&mut self, status: NodeStatus) {
        self.set_local_state(AppStateKey::Status, status.as_str());
    }

    /// STATUS=BOOT_REPLACE,<old>: this node takes over `old`'s tokens.
    pub fn set_replacing(&mut self, old: HostId) {
        let value = format!("{},{old}", NodeStatus::Replacing.as_str());
        self.set_local_state(AppStateKey::Status, value);
    }

    pub fn set_tokens(&mut self, tokens: &[Token]) {
        self.set_local_state(AppStateKey::Tokens, encode_tokens(tokens));
    }

    pub fn local_endpoint(&self) -> Endpoint {
        self.cfg.local
    }

    pub fn config(&self) -> &GossipConfig {
        &self.cfg
    }

    pub fn local_state(&self) -> Option<&EndpointState> {
        self.states.get(&self.cfg.local)
    }

    pub fn generation(&self) -> u64 {
        self.local_state().map_or(0, |s| s.generation)
    }

    // ---- queries -----------------------------------------------------

    pub fn endpoint_state(&self, ep: &Endpoint) -> Option<&EndpointState> {
        self.states.get(ep)
    }

    /// Every known endpoint's state, this node included.
    pub fn endpoint_states(&self) -> impl Iterator<Item = (&Endpoint, &EndpointState)> {
        self.states.iter()
    }

    /// True for live peers and for this node.
    pub fn is_alive(&self, ep: &Endpoint) -> bool {
        *ep == self.cfg.local || self.live.contains(ep)
    }

    /// Peers currently considered UP (this node excluded).
    pub fn live_members(&self) -> impl Iterator<Item = &Endpoint> {
        self.live.iter()
    }

    /// Known peers currently considered DOWN.
    pub fn unreachable_members(&self) -> impl Iterator<Item = &Endpoint> {
        self.unreachable.keys()
    }

    /// Current phi of a peer, for diagnostics.
    pub fn phi(&self, ep: &Endpoint, now: u64) -> Option<f64> {
        self.fd.phi(ep, now)
    }

    /// True when there are seeds other than this node and none is UP: the
    /// node keeps sending SYNs to seeds every round and should log this.
    pub fn waiting_for_seeds(&self) -> bool {
        !self.seeds.is_empty() && !self.seeds.iter().any(|s| self.live.contains(s))
    }

    /// Consecutive rounds in which no seed was UP.
    pub fn rounds_without_live_seed(&self) -> u64 {
        self.rounds_without_live_seed
    }

    /// SYNs rejected because they came from another cluster.
    pub fn rejected_syns(&self) -> u64 {
        self.rejected_syns
    }

    /// True after [`announce_shutdown`](Self::announce_shutdown).
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    pub fn drain_events(&mut self) -> Vec<MembershipEvent> {
        std::mem::take(&mut self.events)
    }

    // ---- driving -----------------------------------------------------

    /// Advances time: convicts silent peers and, once per interval, beats the
    /// heart and starts a gossip round. Call it at least once per interval
    /// (more often is fine).
    pub fn tick(&mut self, now: u64) -> Vec<Outgoing> {
        let mut out = Vec::new();
        if self.stopped {
            return out;
        }
        self.status_check(now);
        // Rounds follow a fixed schedule; a tick arriving a little early
        // (timer jitter) still runs the round instead of skipping a period.
        let interval = self.cfg.interval_ms.max(1);
        if now + interval / 4 < self.next_round_at {
            return out;
        }
        self.next_round_at = if self.next_round_at + interval <= now {
            now + interval
        } else {
            self.next_round_at + interval
        };
        let hb = self.next_version();
        self.local_mut().heartbeat = hb;
        self.gossip_round(&mut out);
        if self.waiting_for_seeds() {
            self.rounds_without_live_seed += 1;
        } else {
            self.rounds_without_live_seed = 0;
        }
        out
    }

    fn gossip_round(&mut self, out: &mut Vec<Outgoing>) {
        // Saved states (generation 0) stay local: see `add_saved_endpoint`.
        let mut digests: Vec<GossipDigest> = self
            .states
            .iter()
            .filter(|(_, s)| s.generation > 0)
            .map(|(ep, s)| GossipDigest {
                endpoint: *ep,
                generation: s.generation,
                max_version: s.max_version(),
            })
            .collect();
        digests.shuffle(&mut self.rng);
        let mut targets: Vec<Endpoint> = Vec::new();

        // Gossiper.doGossipToLiveMember
        let live: Vec<Endpoint> = self.live.iter().copied().collect();
        let mut gossiped_to_seed = false;
        if let Some(ep) = live.choose(&mut self.rng) {
            gossiped_to_seed = self.seeds.contains(ep);
            targets.push(*ep);
        }
        // Gossiper.maybeGossipToUnreachableMember
        if !self.unreachable.is_empty() {
            let p = self.unreachable.len() as f64 / (live.len() + 1) as f64;
            if self.rng.gen::<f64>() < p {
                let unreachable: Vec<Endpoint> = self.unreachable.keys().copied().collect();
                if let Some(ep) = unreachable.choose(&mut self.rng) {
                    targets.push(*ep);
                }
            }
        }
        // Gossiper.maybeGossipToSeed
        if (!gossiped_to_seed || live.len() < self.seeds.len()) && !self.seeds.is_empty() {
            let send = if live.is_empty() {
                true
            } else {
                let p = self.seeds.len() as f64 / (live.len() + self.unreachable.len()) as f64;
                self.rng.gen::<f64>() <= p
            };
            if send {
                if let Some(ep) = self.seeds.choose(&mut self.rng) {
                    targets.push(*ep);
                }
            }
        }

        let mut sent = BTreeSet::new();
        for to in targets {
            if sent.insert(to) {
                let msg = GossipMessage::Syn {
                    cluster_name: self.cfg.cluster_name.clone(),
                    digests: digests.clone(),
                };
                out.push(Outgoing { to, msg });
            }
        }
    }

    fn status_check(&mut self, now: u64) {
        let convicted: Vec<Endpoint> = self
            .live
            .iter()
            .filter(|ep| self.fd.interpret(ep, now))
            .copied()
            .collect();
        for ep in convicted {
            tracing::info!(endpoint = %ep, phi = ?self.fd.phi(&ep, now), "convicting unresponsive endpoint");
            self.mark_dead(ep, now);
        }
        self.quarantine.retain(|_, until| *until > now);
    }

    /// Handles one received message.
    pub fn step(&mut self, from: Endpoint, msg: GossipMessage, now: u64) -> Vec<Outgoing> {
        let mut out = Vec::new();
        if self.stopped || from == self.cfg.local {
            return out;
        }
        match msg {
            GossipMessage::Syn {
                cluster_name,
                digests,
            } => {
                if cluster_name != self.cfg.cluster_name {
                    self.rejected_syns += 1;
                    tracing::warn!(%from, %cluster_name, "rejecting gossip from another cluster");
                    return out;
                }
                let msg = self.examine_syn(&digests);
                out.push(Outgoing { to: from, msg });
            }
            GossipMessage::Ack { digests, states } => {
                self.apply_states(states, now, &mut out);
                let states: Vec<(Endpoint, EndpointState)> = digests
                    .iter()
                    .filter_map(|d| {
                        let local = self.states.get(&d.endpoint)?;
                        if local.generation != d.generation {
                            Some((d.endpoint, local.clone()))
                        } else if local.max_version() > d.max_version {
                            Some((d.endpoint, local.newer_than(d.max_version)))
                        } else {
                            None
                        }
                    })
                    .collect();
                if !states.is_empty() {
                    out.push(Outgoing {
                        to: from,
                        msg: GossipMessage::Ack2 { states },
                    });
                }
            }
            GossipMessage::Ack2 { states } => self.apply_states(states, now, &mut out),
            GossipMessage::Shutdown { state } => {
                self.apply_state(from, state, now, &mut out);
                // Even if the state was stale, the sender said it is going away.
                if self.states.contains_key(&from) {
                    self.mark_dead(from, now);
                }
            }
            GossipMessage::Echo => out.push(Outgoing {
                to: from,
                msg: GossipMessage::EchoReply,
            }),
            GossipMessage::EchoReply => {
                if self.pending_echo.remove(&from).is_some() {
                    let alive_state = self.states.get(&from).is_some_and(|s| !s.is_dead_state());
                    if alive_state {
                        self.mark_alive(from);
                    }
                }
            }
        }
        out
    }

    /// Gossiper.examineGossiper: what to send back and what to ask for.
    fn examine_syn(&self, digests: &[GossipDigest]) -> GossipMessage {
        let mut wanted = Vec::new();
        let mut states = Vec::new();
        let mut mentioned = BTreeSet::new();
        for d in digests {
            mentioned.insert(d.endpoint);
            if self.quarantine.contains_key(&d.endpoint) {
                continue;
            }
            match self.states.get(&d.endpoint) {
                None => wanted.push(GossipDigest {
                    max_version: 0,
                    ..*d
                }),
                Some(local) if d.generation > local.generation => {
                    wanted.push(GossipDigest {
                        max_version: 0,
                        ..*d
                    });
                }
                Some(local) if d.generation < local.generation => {
                    states.push((d.endpoint, local.clone()))
                }
                Some(local) => {
                    let mine = local.max_version();
                    if d.max_version > mine {
                        wanted.push(GossipDigest {
                            max_version: mine,
                            ..*d
                        });
                    } else if d.max_version < mine {
                        states.push((d.endpoint, local.newer_than(d.max_version)));
                    }
                }
            }
        }
        // Unlike Cassandra, also volunteer endpoints the initiator does not
        // know at all: a new node learns the whole cluster in one exchange.
        for (ep, s) in &self.states {
            if !mentioned.contains(ep) && s.generation > 0 {
                states.push((*ep, s.clone()));
            }
        }
        GossipMessage::Ack {
            digests: wanted,
            states,
        }
    }

    fn apply_states(
        &mut self,
        states: Vec<(Endpoint, EndpointState)>,
        now: u64,
        out: &mut Vec<Outgoing>,
    ) {
        for (ep, st) in states {
            self.apply_state(ep, st, now, out);
        }
    }

    /// Gossiper.applyStateLocally plus the failure detector notification.
    fn apply_state(
        &mut self,
        ep: Endpoint,
        remote: EndpointState,
        now: u64,
        out: &mut Vec<Outgoing>,
    ) {
        if ep == self.cfg.local || self.quarantine.contains_key(&ep) {
            return;
        }
        let Some(local) = self.states.get_mut(&ep) else {
            self.fd.report(&ep, now);
            let dead = remote.is_dead_state();
            self.states.insert(ep, remote.clone());
            self.unreachable.insert(ep, now);
            self.events.push(MembershipEvent::Joined {
                endpoint: ep,
                state: remote,
            });
            if !dead {
                self.request_alive(ep, now, out);
            }
            return;
        };
        if remote.generation > local.generation {
            tracing::info!(endpoint = %ep, generation = remote.generation, "endpoint restarted");
            let old = std::mem::replace(local, remote);
            self.fd.remove(&ep);
            self.fd.report(&ep, now);
            let generation = self.states.get(&ep).map_or(0, |s| s.generation);
            self.events.push(MembershipEvent::Restarted {
                endpoint: ep,
                generation,
            });
            let changed: Vec<(AppStateKey, String)> = self
                .states
                .get(&ep)
                .map(|new| {
                    new.states
                        .iter()
                        .filter(|(k, v)| old.states.get(k).map(|o| &o.value) != Some(&v.value))
                        .map(|(k, v)| (*k, v.value.clone()))
                        .collect()
                })
                .unwrap_or_default();
            self.emit_changes(ep, changed);
        } else if remote.generation == local.generation
            && remote.max_version() > local.max_version()
        {
            local.heartbeat = local.heartbeat.max(remote.heartbeat);
            let mut changed = Vec::new();
            for (k, v) in remote.states {
                let newer = local
                    .states
                    .get(&k)
                    .is_none_or(|mine| v.version > mine.version);
                if newer {
                    let differs = local.states.get(&k).map(|o| &o.value) != Some(&v.value);
                    if differs {
                        changed.push((k, v.value.clone()));
                    }
                    local.states.insert(k, v);
                }
            }
            self.fd.report(&ep, now);
            self.emit_changes(ep, changed);
        } else {
            return;
        }
        let dead = self
            .states
            .get(&ep)
            .is_some_and(EndpointState::is_dead_state);
        if dead {
            self.mark_dead(ep, now);
        } else if !self.live.contains(&ep) {
            self.request_alive(ep, now, out);
        }
    }

    fn emit_changes(&mut self, ep: Endpoint, changed: Vec<(AppStateKey, String)>) {
        for (key, value) in changed {
            let ev = if key == AppStateKey::Status {
                MembershipEvent::StatusChanged {
                    endpoint: ep,
                    status: value.split(',').next().and_then(|s| s.parse().ok()),
                }
            } else {
                MembershipEvent::StateChanged {
                    endpoint: ep,
                    key,
                    value,
                }
            };
            self.events.push(ev);
        }
    }

    /// Cassandra marks a node UP only after it answers an echo, so a node
    /// we hear about second-hand is not UP unless we can reach it.
    fn request_alive(&mut self, ep: Endpoint, now: u64, out: &mut Vec<Outgoing>) {
        let recent = self
            .pending_echo
            .get(&ep)
            .is_some_and(|sent| now < sent + self.cfg.interval_ms);
        if !recent {
            self.pending_echo.insert(ep, now);
            out.push(Outgoing {
                to: ep,
                msg: GossipMessage::Echo,
            });
        }
    }

    fn mark_alive(&mut self, ep: Endpoint) {
        self.unreachable.remove(&ep);
        if self.live.insert(ep) {
            tracing::info!(endpoint = %ep, "endpoint is now UP");
            self.events.push(MembershipEvent::Up(ep));
        }
    }

    fn mark_dead(&mut self, ep: Endpoint, now: u64) {
        self.pending_echo.remove(&ep);
        self.unreachable.entry(ep).or_insert(now);
        if self.live.remove(&ep) {
            tracing::info!(endpoint = %ep, "endpoint is now DOWN");
            self.events.push(MembershipEvent::Down(ep));
        }
    }

    /// Graceful shutdown: publishes STATUS=SHUTDOWN and returns a
    /// [`GossipMessage::Shutdown`] for every live peer. The gossiper is
    /// stopped afterwards (tick and step do nothing).
    pub fn announce_shutdown(&mut self, _now: u64) -> Vec<Outgoing> {
        if self.stopped {
            return Vec::new();
        }
        self.set_status(NodeStatus::Shutdown);
        let hb = self.next_version();
        self.local_mut().heartbeat = hb;
        self.stopped = true;
        let Some(state) = self.local_state().cloned() else {
            return Vec::new();
        };
        self.live
            .iter()
            .map(|ep| Outgoing {
                to: *ep,
                msg: GossipMessage::Shutdown {
                    state: state.clone(),
                },
            })
            .collect()
    }

    /// `removenode`: publishes STATUS=removed,<host> on the dead `ep`'s own
    /// state, one version above what it had, so that it reaches every peer
    /// by gossip and outranks any stale copy of its old state. False when
    /// `ep` is unknown or alive.
    pub fn advertise_removed(&mut self, ep: Endpoint, host: HostId, now: u64) -> bool {
        if ep == self.cfg.local || self.live.contains(&ep) {
            return false;
        }
        let Some(st) = self.states.get_mut(&ep) else {
            return false;
        };
        if st.status() == Some(NodeStatus::Removed) {
            return true;
        }
        let version = st.max_version() + 1;
        let value = format!("{},{host}", NodeStatus::Removed.as_str());
        st.states.insert(
            AppStateKey::Status,
            VersionedValue {
                value: value.clone(),
                version,
            },
        );
        self.mark_dead(ep, now);
        self.emit_changes(ep, vec![(AppStateKey::Status, value)]);
        true
    }

    /// Cassandra's `addSavedEndpoint`: a peer this node knew before it
    /// restarted, with the application states it last saw (its ring
    /// membership), so that the ring is whole before the node serves
    /// clients. The state has generation 0: whatever the peer or anyone
    /// gossips about it replaces it. It is unreachable until heard from,
    /// and it stays local (never offered in digests or volunteered), so a
    /// stale saved state cannot spread.
    pub fn add_saved_endpoint(
        &mut self,
        ep: Endpoint,
        states: Vec<(AppStateKey, String)>,
        now: u64,
    ) {
        if ep == self.cfg.local || self.states.contains_key(&ep) {
            return;
        }
        let mut st = EndpointState::new(0, 0);
        for (i, (key, value)) in states.into_iter().enumerate() {
            st.states.insert(
                key,
                VersionedValue {
                    value,
                    version: i as u64 + 1,
                },
            );
        }
        self.states.insert(ep, st.clone());
        self.unreachable.insert(ep, now);
        self.events.push(MembershipEvent::Joined {
            endpoint: ep,
            state: st,
        });
    }

    /// Forgets a peer (e.g. after it LEFT) and ignores gossip about it for
    /// the quarantine period.
    pub fn remove_endpoint(&mut self, ep: Endpoint, now: u64) {
        if ep == self.cfg.local {
            return;
        }
        let known = self.states.remove(&ep).is_some();
        self.live.remove(&ep);
        self.unreachable.remove(&ep);
        self.pending_echo.remove(&ep);
        self.fd.remove(&ep);
        self.quarantine.insert(ep, now + self.cfg.quarantine_ms);
        if known {
            self.events.push(MembershipEvent::Removed(ep));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(i: u8) -> Endpoint {
        SocketAddr::from(([127, 0, 0, i], 7000))
    }

    #[test]
    fn rejects_other_cluster() {
        let mut g = Gossiper::new(GossipConfig::new("a", ep(1), vec![ep(1)]), 1, 0, 0);
        let out = g.step(
            ep(2),
            GossipMessage::Syn {
                cluster_name: "b".into(),
                digests: vec![],
            },
            0,
        );
        assert!(out.is_empty());
        assert_eq!(g.rejected_syns(), 1);
        let out = g.step(
            ep(2),
            GossipMessage::Syn {
                cluster_name: "a".into(),
                digests: vec![],
            },
            0,
        );
        assert!(matches!(
            out.as_slice(),
            [Outgoing {
                msg: GossipMessage::Ack { .. },
                ..
            }]
        ));
    }

    /// A saved peer (before a restart) is in the state table, unreachable,
    /// never offered to others, and replaced by the peer's real state.
    #[test]
    fn saved_endpoints_stay_local_until_the_real_state_arrives() {
        let mut g = Gossiper::new(GossipConfig::new("a", ep(1), vec![ep(1)]), 5, 0, 0);
        let saved = vec![
            (AppStateKey::Status, "NORMAL".to_string()),
            (AppStateKey::Tokens, "10,20".to_string()),
        ];
        g.add_saved_endpoint(ep(2), saved, 0);
        assert!(matches!(
            g.drain_events().as_slice(),
            [MembershipEvent::Joined { .. }]
        ));
        assert_eq!(
            g.endpoint_state(&ep(2)).and_then(|s| s.tokens()),
            Some(vec![10, 20])
        );
        assert!(!g.is_alive(&ep(2)));
        // Not in this node's digests, not volunteered to a peer.
        for o in g.tick(0) {
            if let GossipMessage::Syn { digests, .. } = &o.msg {
                assert!(digests.iter().all(|d| d.endpoint != ep(2)), "{digests:?}");
            }
        }
        let out = g.step(
            ep(3),
            GossipMessage::Syn {
                cluster_name: "a".into(),
                digests: vec![],
            },
            0,
        );
        for o in &out {
            if let GossipMessage::Ack { states, .. } = &o.msg {
                assert!(states.iter().all(|(e, _)| *e != ep(2)), "{states:?}");
            }
        }
        // The real state (any generation) replaces it.
        let mut real = EndpointState::new(7, 1);
        real.states.insert(
            AppStateKey::Tokens,
            VersionedValue {
                value: "30".into(),
                version: 1,
            },
        );
        g.step(
            ep(3),
            GossipMessage::Ack2 {
                states: vec![(ep(2), real)],
            },
            0,
        );
        assert_eq!(g.endpoint_state(&ep(2)).map(|s| s.generation), Some(7));
        assert_eq!(
            g.endpoint_state(&ep(2)).and_then(|s| s.tokens()),
            Some(vec![30])
        );
        // A known endpoint is never overwritten by a saved one.
        g.add_saved_endpoint(ep(2), vec![(AppStateKey::Tokens, "1".into())], 0);
        assert_eq!(g.endpoint_state(&ep(2)).map(|s| s.generation), Some(7));
    }

    #[test]
    fn lone_node_keeps_calling_seeds() {
        let mut g = Gossiper::new(GossipConfig::new("a", ep(3), vec![ep(1), ep(2)]), 1, 7, 0);
        for round in 0..5u64 {
            let out = g.tick(round * 1000);
            assert!(
                out.iter().any(|o| o.to == ep(1) || o.to == ep(2)),
                "round {round}: {out:?}"
            );
        }
        assert!(g.waiting_for_seeds());
        assert_eq!(g.rounds_without_live_seed(), 5);
    }

    #[test]
    fn rounds_keep_cadence_despite_jitter() {
        let mut g = Gossiper::new(GossipConfig::new("a", ep(3), vec![ep(1)]), 1, 7, 0);
        let rounds: Vec<u64> = (0..10_000u64)
            .step_by(100)
            .filter(|t| !g.tick(*t).is_empty())
            .collect();
        assert!(
            rounds.windows(2).skip(1).all(|w| w[1] - w[0] == 1000),
            "{rounds:?}"
        );
        // Early ticks from a 1 s timer still gossip every time.
        let mut g = Gossiper::new(GossipConfig::new("a", ep(3), vec![ep(1)]), 1, 7, 0);
        let sent = (0..10u64).filter(|k| !g.tick(k * 999).is_empty()).count();
        assert_eq!(sent, 10);
    }

    #[test]
    fn state_accessors_and_serde() {
        let mut g = Gossiper::new(GossipConfig::new("a", ep(1), vec![]), 5, 0, 0);
        g.set_status(NodeStatus::Normal);
        g.set_tokens(&[-5, 7]);
        g.set_local_state(AppStateKey::NativeAddress, "127.0.0.1:9042");
        let s = g.local_state().expect("local").clone();
        assert_eq!(s.status(), Some(NodeStatus::Normal));
        assert_eq!(s.tokens(), Some(vec![-5, 7]));
        assert_eq!(
            s.native_address(),
            Some(SocketAddr::from(([127, 0, 0, 1], 9042)))
        );
        assert_eq!(s.max_version(), 4);
        let msg = GossipMessage::Ack2 {
            states: vec![(ep(1), s)],
        };
        let json = serde_json::to_string(&msg).expect("serialize");
        assert_eq!(
            serde_json::from_str::<GossipMessage>(&json).expect("deserialize"),
            msg
        );
    }
}
