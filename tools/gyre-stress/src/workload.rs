//! What each operation does: which key, which value, when, and whether it
//! writes or reads. Everything is a pure function of the operation index
//! and a per-worker random stream, so runs are cheap and reproducible.

use std::time::Duration;

/// How keys are picked from the population `0..keys`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Distribution {
    Uniform,
    /// Zipf with this exponent: key 0 the hottest.
    Zipf(f64),
    /// Operation i uses key i mod keys: a write of N ops over N keys
    /// writes every key once, which `read --validate` relies on.
    Seq,
}

/// Relative weights of writes and reads in `mixed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    pub write: u32,
    pub read: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    Write,
    Read,
}

impl OpKind {
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Write => "write",
            OpKind::Read => "read",
        }
    }
}

impl Mix {
    /// Picks the kind of an operation from a random number.
    pub fn pick(&self, random: u64) -> OpKind {
        let total = u64::from(self.write) + u64::from(self.read);
        if random % total.max(1) < u64::from(self.write) {
            OpKind::Write
        } else {
            OpKind::Read
        }
    }
}

/// SplitMix64: tiny, fast, good enough for load generation, and seedable
/// so that values can be recomputed from the key alone.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The value of column `column` of row `key`: `size` bytes that depend
/// only on (key, column).
pub fn value_for(key: u64, column: usize, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 8);
    value_into(key, column, size, &mut out);
    out
}

/// [`value_for`] into a reused buffer (cleared first).
pub fn value_into(key: u64, column: usize, size: usize, out: &mut Vec<u8>) {
    let mut rng = SplitMix64::new(key.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ (column as u64) << 48);
    out.clear();
    while out.len() < size {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(size);
}

/// Zipf over `1..=n` by rejection-inversion (Hörmann and Derflinger), the
/// method rand_distr uses: O(1) per sample, no table of size n.
#[derive(Debug, Clone)]
pub struct Zipf {
    s: f64,
    t: f64,
    q: f64,
}

impl Zipf {
    pub fn new(n: u64, s: f64) -> Self {
        let n = n.max(1) as f64;
        let t = if s == 1.0 {
            1.0 + n.ln()
        } else {
            (n.powf(1.0 - s) - s) / (1.0 - s)
        };
        let q = if s == 1.0 { 0.0 } else { 1.0 / (1.0 - s) };
        Self { s, t, q }
    }

    fn inv_cdf(&self, p: f64) -> f64 {
        let pt = p * self.t;
        if pt <= 1.0 {
            pt
        } else if self.s == 1.0 {
            (pt - 1.0).exp()
        } else {
            (pt * (1.0 - self.s) + self.s).powf(self.q)
        }
    }

    /// A rank in `1..=n`.
    pub fn sample(&self, rng: &mut SplitMix64) -> u64 {
        loop {
            let inv_b = self.inv_cdf(rng.next_f64());
            let x = (inv_b + 1.0).floor();
            let mut ratio = x.powf(-self.s);
            if x > 1.0 {
                ratio *= inv_b.powf(self.s);
            }
            if rng.next_f64() < ratio {
                return x as u64;
            }
        }
    }
}

/// Picks the key of operation `op`.
#[derive(Debug, Clone)]
pub struct KeyChooser {
    keys: u64,
    dist: Distribution,
    zipf: Option<Zipf>,
}

impl KeyChooser {
    pub fn new(keys: u64, dist: Distribution) -> Self {
        let zipf = match dist {
            Distribution::Zipf(s) => Some(Zipf::new(keys, s)),
            _ => None,
        };
        Self {
            keys: keys.max(1),
            dist,
            zipf,
        }
    }

    pub fn key(&self, op: u64, rng: &mut SplitMix64) -> u64 {
        match (&self.dist, &self.zipf) {
            (Distribution::Seq, _) => op % self.keys,
            (Distribution::Zipf(_), Some(z)) => (z.sample(rng) - 1).min(self.keys - 1),
            _ => rng.next_u64() % self.keys,
        }
    }
}

/// The open-loop schedule of `--rate`: operation i is due `i / rate`
/// seconds after the start, whatever happened to earlier operations.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    nanos_per_op: f64,
}

impl Schedule {
    pub fn new(rate: f64) -> Self {
        Self {
            nanos_per_op: 1e9 / rate,
        }
    }

    /// When operation `op` is due, from the start of the run.
    pub fn due(&self, op: u64) -> Duration {
        Duration::from_nanos((op as f64 * self.nanos_per_op) as u64)
    }

    /// How many operations are due within `d` (for --duration runs).
    pub fn ops_within(&self, d: Duration) -> u64 {
        (d.as_nanos() as f64 / self.nanos_per_op).ceil() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_depend_only_on_key_and_column() {
        assert_eq!(value_for(7, 0, 100), value_for(7, 0, 100));
        assert_ne!(value_for(7, 0, 100), value_for(8, 0, 100));
        assert_ne!(value_for(7, 0, 100), value_for(7, 1, 100));
        assert_eq!(value_for(7, 0, 13).len(), 13);
        assert!(value_for(7, 0, 0).is_empty());
    }

    #[test]
    fn seq_visits_every_key_once() {
        let k = KeyChooser::new(10, Distribution::Seq);
        let mut rng = SplitMix64::new(1);
        let keys: Vec<u64> = (0..10).map(|op| k.key(op, &mut rng)).collect();
        assert_eq!(keys, (0..10).collect::<Vec<_>>());
        assert_eq!(k.key(12, &mut rng), 2);
    }

    #[test]
    fn uniform_and_zipf_stay_in_range_and_zipf_is_skewed() {
        let mut rng = SplitMix64::new(42);
        let u = KeyChooser::new(1000, Distribution::Uniform);
        let z = KeyChooser::new(1000, Distribution::Zipf(1.1));
        let mut hot = 0;
        for op in 0..20_000 {
            assert!(u.key(op, &mut rng) < 1000);
            let k = z.key(op, &mut rng);
            assert!(k < 1000);
            if k < 10 {
                hot += 1;
            }
        }
        // Zipf(1.1) over 1000 keys puts roughly half the mass on the top 10.
        assert!(hot > 8_000, "top-10 share {hot}/20000");
        let z1 = Zipf::new(100, 1.0);
        for _ in 0..1000 {
            let x = z1.sample(&mut rng);
            assert!((1..=100).contains(&x));
        }
    }

    #[test]
    fn schedule_spaces_ops_evenly() {
        let s = Schedule::new(2000.0);
        assert_eq!(s.due(0), Duration::ZERO);
        assert_eq!(s.due(1), Duration::from_micros(500));
        assert_eq!(s.due(2000), Duration::from_secs(1));
        assert_eq!(s.ops_within(Duration::from_secs(5)), 10_000);
    }

    #[test]
    fn mix_follows_weights() {
        let m = Mix { write: 1, read: 3 };
        let mut rng = SplitMix64::new(3);
        let writes = (0..40_000)
            .filter(|_| m.pick(rng.next_u64()) == OpKind::Write)
            .count();
        assert!((9_000..11_000).contains(&writes), "{writes}");
        let only_reads = Mix { write: 0, read: 1 };
        assert_eq!(only_reads.pick(12345), OpKind::Read);
    }
}
