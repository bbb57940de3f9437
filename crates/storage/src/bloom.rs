//! A bloom filter over partition keys, so reads skip SSTables that cannot
//! hold a partition.

use gyre_common::DecoratedKey;

pub struct Bloom {
    words: Vec<u64>,
    k: u32,
}

/// Two independent hashes for double hashing: the partition token is
/// already a good 64-bit hash; FNV-1a of the key gives the second.
pub(crate) fn hashes(key: &DecoratedKey) -> (u64, u64) {
    let mut h2: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.key.iter() {
        h2 ^= u64::from(*b);
        h2 = h2.wrapping_mul(0x0100_0000_01b3);
    }
    (key.token as u64, h2 | 1)
}

impl Bloom {
    #[cfg(test)]
    pub fn build<'a>(
        keys: impl ExactSizeIterator<Item = &'a DecoratedKey>,
        bits_per_key: usize,
    ) -> Bloom {
        let mut bloom = Bloom::with_capacity(keys.len(), bits_per_key);
        for key in keys {
            bloom.insert(key);
        }
        bloom
    }

    /// An empty filter sized for `n` keys.
    pub fn with_capacity(n: usize, bits_per_key: usize) -> Bloom {
        let n = n.max(1);
        let nbits = n.saturating_mul(bits_per_key.max(1)).max(64);
        let words = nbits.div_ceil(64);
        // k = ln 2 * bits per key, the optimum.
        let k = ((bits_per_key as f64) * 0.69).round().clamp(1.0, 30.0) as u32;
        Bloom {
            words: vec![0; words],
            k,
        }
    }

    /// A filter over keys given by their [`hashes`].
    pub fn from_hashes(hashes: &[(u64, u64)], bits_per_key: usize) -> Bloom {
        let mut bloom = Bloom::with_capacity(hashes.len(), bits_per_key);
        for &h in hashes {
            bloom.insert_hashes(h);
        }
        bloom
    }

    /// Heap bytes held.
    pub fn memory_bytes(&self) -> usize {
        self.words.len() * 8
    }

    fn nbits(&self) -> u64 {
        self.words.len() as u64 * 64
    }

    pub fn insert(&mut self, key: &DecoratedKey) {
        self.insert_hashes(hashes(key));
    }

    fn insert_hashes(&mut self, (h1, h2): (u64, u64)) {
        let n = self.nbits();
        for i in 0..u64::from(self.k) {
            let bit = h1.wrapping_add(i.wrapping_mul(h2)) % n;
            self.words[(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }

    pub fn may_contain(&self, key: &DecoratedKey) -> bool {
        let (h1, h2) = hashes(key);
        let n = self.nbits();
        (0..u64::from(self.k)).all(|i| {
            let bit = h1.wrapping_add(i.wrapping_mul(h2)) % n;
            self.words[(bit / 64) as usize] & (1 << (bit % 64)) != 0
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.k.to_le_bytes());
        out.extend_from_slice(&(self.words.len() as u64).to_le_bytes());
        for w in &self.words {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }

    pub fn decode(b: &[u8]) -> Option<Bloom> {
        let k = u32::from_le_bytes(b.get(0..4)?.try_into().ok()?);
        let n = u64::from_le_bytes(b.get(4..12)?.try_into().ok()?) as usize;
        let body = b.get(12..)?;
        if body.len() != n.checked_mul(8)? || n == 0 || k == 0 {
            return None;
        }
        let words = body
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        Some(Bloom { words, k })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let keys: Vec<DecoratedKey> = (0..10_000u32)
            .map(|i| DecoratedKey::new(i.to_be_bytes().to_vec()))
            .collect();
        let b = Bloom::build(keys.iter(), 10);
        assert!(keys.iter().all(|k| b.may_contain(k)));
        let fp = (10_000..20_000u32)
            .filter(|i| b.may_contain(&DecoratedKey::new(i.to_be_bytes().to_vec())))
            .count();
        assert!(fp < 300, "false positive rate too high: {fp}/10000");
        let mut enc = Vec::new();
        b.encode(&mut enc);
        let d = Bloom::decode(&enc).expect("decodes");
        assert!(keys.iter().all(|k| d.may_contain(k)));
    }
}
