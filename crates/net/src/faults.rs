use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Faults on the link to one peer (or to every peer, as [`FaultRules::all_peers`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkFaults {
    /// Partition: drop every message to and from the peer.
    pub drop_all: bool,
    /// Chance in `[0, 1]` that a message either way is dropped.
    pub drop_probability: f64,
    /// Delay added to every message either way.
    pub extra_latency_ms: u64,
}

impl LinkFaults {
    fn is_noop(&self) -> bool {
        !self.drop_all && self.drop_probability <= 0.0 && self.extra_latency_ms == 0
    }
}

/// Fault-injection rules applied by a running messenger to its outgoing and
/// incoming messages (chaos testing). Serializable so an admin endpoint can
/// take them as JSON, e.g.
/// `{"peers": {"127.0.0.2:7000": {"drop_all": true}}, "all_peers": {"extra_latency_ms": 5}}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultRules {
    /// Applies to peers not listed in `peers`.
    pub all_peers: LinkFaults,
    /// Per-peer rules; they replace `all_peers` for that peer.
    pub peers: BTreeMap<SocketAddr, LinkFaults>,
    /// Seed for drop decisions, for reproducible runs. `None` seeds from entropy.
    pub seed: Option<u64>,
}

impl FaultRules {
    /// Partition this node from `peers`.
    pub fn partition(peers: impl IntoIterator<Item = SocketAddr>) -> Self {
        let link = LinkFaults {
            drop_all: true,
            ..LinkFaults::default()
        };
        FaultRules {
            peers: peers.into_iter().map(|p| (p, link.clone())).collect(),
            ..FaultRules::default()
        }
    }

    /// Drop a fraction of all messages to peers without their own rule.
    pub fn with_drop_probability(mut self, p: f64) -> Self {
        self.all_peers.drop_probability = p;
        self
    }

    /// Delay all messages to peers without their own rule.
    pub fn with_extra_latency(mut self, d: Duration) -> Self {
        self.all_peers.extra_latency_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self
    }

    pub fn with_peer(mut self, peer: SocketAddr, link: LinkFaults) -> Self {
        self.peers.insert(peer, link);
        self
    }

    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    pub fn validate(&self) -> Result<()> {
        let check = |l: &LinkFaults| {
            if !(0.0..=1.0).contains(&l.drop_probability) {
                return Err(Error::InvalidFaults(format!(
                    "drop_probability {} is not within [0, 1]",
                    l.drop_probability
                )));
            }
            Ok(())
        };
        check(&self.all_peers)?;
        self.peers.values().try_for_each(check)
    }

    fn link(&self, peer: SocketAddr) -> &LinkFaults {
        self.peers.get(&peer).unwrap_or(&self.all_peers)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FaultAction {
    Deliver,
    Drop,
    Delay(Duration),
}

/// The live rules of one messenger plus the RNG its drop decisions use.
/// Every message reads the rules, so they are an atomically swapped
/// snapshot; the RNG's lock is only taken when a drop probability is set.
pub(crate) struct FaultState {
    rules: ArcSwapOption<FaultRules>,
    rng: Mutex<StdRng>,
}

impl FaultState {
    pub(crate) fn new() -> Self {
        FaultState {
            rules: ArcSwapOption::empty(),
            rng: Mutex::new(StdRng::from_entropy()),
        }
    }

    pub(crate) fn set(&self, rules: FaultRules) -> Result<()> {
        rules.validate()?;
        *self.rng.lock() = match rules.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        let empty = rules.all_peers.is_noop() && rules.peers.values().all(LinkFaults::is_noop);
        self.rules
            .store(if empty { None } else { Some(Arc::new(rules)) });
        Ok(())
    }

    pub(crate) fn clear(&self) {
        self.rules.store(None);
    }

    pub(crate) fn get(&self) -> FaultRules {
        self.rules
            .load_full()
            .map(|r| FaultRules::clone(&r))
            .unwrap_or_default()
    }

    /// What to do with one message to or from `peer`.
    pub(crate) fn decide(&self, peer: SocketAddr) -> FaultAction {
        let rules = self.rules.load();
        let Some(rules) = rules.as_deref() else {
            return FaultAction::Deliver;
        };
        let link = rules.link(peer);
        if link.drop_all {
            return FaultAction::Drop;
        }
        if link.drop_probability > 0.0 && self.rng.lock().gen::<f64>() < link.drop_probability {
            return FaultAction::Drop;
        }
        if link.extra_latency_ms > 0 {
            return FaultAction::Delay(Duration::from_millis(link.extra_latency_ms));
        }
        FaultAction::Deliver
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn json_roundtrip_and_defaults() {
        let rules = FaultRules::partition([addr("127.0.0.2:7000")])
            .with_drop_probability(0.25)
            .with_extra_latency(Duration::from_millis(5))
            .with_seed(3);
        let json = serde_json::to_string(&rules).unwrap();
        let back: FaultRules = serde_json::from_str(&json).unwrap();
        assert_eq!(back, rules);

        let partial: FaultRules =
            serde_json::from_str(r#"{"peers": {"127.0.0.3:7000": {"drop_all": true}}}"#).unwrap();
        assert!(partial.peers[&addr("127.0.0.3:7000")].drop_all);
        assert_eq!(partial.all_peers, LinkFaults::default());
        assert!(serde_json::from_str::<FaultRules>(r#"{"nope": 1}"#).is_err());
    }

    #[test]
    fn decisions() {
        let state = FaultState::new();
        let a = addr("127.0.0.2:7000");
        let b = addr("127.0.0.3:7000");
        assert_eq!(state.decide(a), FaultAction::Deliver);
        state
            .set(FaultRules::partition([a]).with_extra_latency(Duration::from_millis(7)))
            .unwrap();
        assert_eq!(state.decide(a), FaultAction::Drop);
        assert_eq!(
            state.decide(b),
            FaultAction::Delay(Duration::from_millis(7))
        );
        state
            .set(
                FaultRules::default()
                    .with_drop_probability(0.5)
                    .with_seed(1),
            )
            .unwrap();
        let drops = (0..1000)
            .filter(|_| state.decide(b) == FaultAction::Drop)
            .count();
        assert!((350..650).contains(&drops), "{drops}");
        assert!(state
            .set(FaultRules::default().with_drop_probability(1.5))
            .is_err());
        assert!(state
            .set(FaultRules::default().with_drop_probability(f64::NAN))
            .is_err());
        state.clear();
        assert_eq!(state.decide(a), FaultAction::Deliver);
    }
}
