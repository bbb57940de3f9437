//! Hinted handoff storage: mutations a replica missed, kept on the
//! coordinator until the replica is back (Cassandra's `HintsService`).
//!
//! One directory; per target host a sequence of append-only files named
//! `<host id>-<sequence>.hints`. Each record is
//! `[len u32 LE][crc32 u32 LE of payload][payload]`, the payload being the
//! target host id (16 bytes), table id (16 bytes), write time (i64 BE,
//! microseconds) and the mutation in [`gyre_common::codec`]. A batch is
//! fsynced once. Replay seals the host's current file first so replayed
//! files never change under the reader, and a file is deleted only when the
//! caller acknowledges that all of it was delivered.
//!
//! Bounded: hints for a host stop (counted, logged) once its files reach
//! `max_bytes_per_host`, and for every host once all files reach
//! `max_total_bytes`; a torn tail found when a file is read (a crash mid
//! append) is truncated back to the last intact record.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gyre_cluster::HostId;
use gyre_common::{codec, Partition, Timestamp};
use gyre_storage::TableId;
use parking_lot::Mutex;

use crate::error::{CoordinatorError, Result};

/// Records longer than this are taken as a corrupt length.
const MAX_RECORD: usize = 256 << 20;
const HEADER: usize = 8;

/// One hinted mutation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hint {
    pub target: HostId,
    pub table: TableId,
    pub mutation: Partition,
    /// When the coordinator accepted the write (microseconds).
    pub write_time: Timestamp,
}

/// Hint store settings.
#[derive(Clone, Debug)]
pub struct HintConfig {
    /// A node down longer than this gets no new hints (repair must fix it):
    /// hints would grow without bound and their replay take too long.
    pub max_hint_window: Duration,
    /// A host's file is sealed and a new one started past this size
    /// (Cassandra's `max_hints_file_size`).
    pub max_file_bytes: u64,
    /// No more hints for a host whose files hold this much (Cassandra's
    /// `max_hints_size_per_host`).
    pub max_bytes_per_host: u64,
    /// No more hints for any host once all files hold this much.
    pub max_total_bytes: u64,
}

impl Default for HintConfig {
    fn default() -> Self {
        HintConfig {
            max_hint_window: Duration::from_secs(3 * 3600),
            max_file_bytes: 32 << 20,
            max_bytes_per_host: 1 << 30,
            max_total_bytes: 4 << 30,
        }
    }
}

/// Counters of the hint store, for /metrics.
#[derive(Debug, Default)]
pub struct HintStats {
    pub stored: AtomicU64,
    pub delivered: AtomicU64,
    /// Not stored: the host's or the store's size cap was reached.
    pub dropped_over_cap: AtomicU64,
    /// Not stored: too many hint writes already in flight.
    pub dropped_overloaded: AtomicU64,
    /// Dropped at replay: they can never be delivered (their table is
    /// gone, or the replica refuses them for good).
    pub dropped_undeliverable: AtomicU64,
    /// Hint files whose torn tail was cut off.
    pub torn_files: AtomicU64,
}

/// What one host's hints occupy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostHints {
    pub host: HostId,
    pub files: usize,
    pub bytes: u64,
}

/// One sealed or open hint file of a host.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HintFileId {
    pub host: HostId,
    pub seq: u64,
}

impl HintFileId {
    fn file_name(&self) -> String {
        format!("{}-{:020}.hints", self.host, self.seq)
    }

    fn parse(name: &str) -> Option<HintFileId> {
        let stem = name.strip_suffix(".hints")?;
        // A uuid is 36 characters, then '-'.
        let (host, seq) = (stem.get(..36)?, stem.get(37..)?);
        Some(HintFileId {
            host: HostId::parse_str(host).ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

struct Writer {
    id: HintFileId,
    file: File,
    bytes: u64,
}

/// Durable hints, per target host.
pub struct HintStore {
    dir: PathBuf,
    config: HintConfig,
    writers: Mutex<HashMap<HostId, Writer>>,
    next_seq: AtomicU64,
    /// Bytes in each host's files, and their sum: checked against the caps.
    sizes: Mutex<HashMap<HostId, u64>>,
    total: AtomicU64,
    /// Hosts already logged as over their cap (logged once per replay).
    capped: Mutex<std::collections::HashSet<HostId>>,
    stats: HintStats,
}

impl std::fmt::Debug for HintStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HintStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn encode_hint(h: &Hint) -> Vec<u8> {
    let mut payload = Vec::with_capacity(64 + h.mutation.size_estimate());
    payload.extend_from_slice(h.target.as_bytes());
    payload.extend_from_slice(h.table.0.as_bytes());
    payload.extend_from_slice(&h.write_time.to_be_bytes());
    codec::encode_partition(&mut payload, &h.mutation);
    let mut rec = Vec::with_capacity(HEADER + payload.len());
    rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    rec.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    rec.extend_from_slice(&payload);
    rec
}

fn decode_hint(payload: &[u8]) -> std::result::Result<Hint, String> {
    let uuid = |b: &[u8]| -> std::result::Result<uuid::Uuid, String> {
        uuid::Uuid::from_slice(b).map_err(|e| e.to_string())
    };
    let target = uuid(payload.get(..16).ok_or("short payload")?)?;
    let table = TableId(uuid(payload.get(16..32).ok_or("short payload")?)?);
    let ts: [u8; 8] = payload
        .get(32..40)
        .and_then(|b| b.try_into().ok())
        .ok_or("short payload")?;
    let rest = Bytes::copy_from_slice(payload.get(40..).ok_or("short payload")?);
    let mutation =
        codec::decode_partition(&mut codec::Reader::new(&rest)).map_err(|e| e.to_string())?;
    Ok(Hint {
        target,
        table,
        mutation,
        write_time: i64::from_be_bytes(ts),
    })
}

/// Decodes every intact record of a hint file's bytes; corrupt records are
/// skipped (logged), a torn or implausible length ends the file. Returns the
/// hints and, when the file ends in a tear, the length of its intact part.
fn decode_records(path: &Path, buf: &[u8]) -> (Vec<Hint>, Option<usize>) {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let Some(header) = buf.get(pos..pos + HEADER) else {
            tracing::warn!(file = %path.display(), offset = pos, "torn hint record header, cutting the tail off");
            return (out, Some(pos));
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let end = pos + HEADER + len;
        if len > MAX_RECORD || end > buf.len() {
            tracing::warn!(file = %path.display(), offset = pos, len, "hint record runs past the end of its file (torn), cutting the tail off");
            return (out, Some(pos));
        }
        let payload = &buf[pos + HEADER..end];
        if crc32fast::hash(payload) != crc {
            tracing::error!(file = %path.display(), offset = pos, "hint record fails its checksum, skipping it");
        } else {
            match decode_hint(payload) {
                Ok(h) => out.push(h),
                Err(e) => {
                    tracing::error!(file = %path.display(), offset = pos, error = %e, "undecodable hint record, skipping it")
                }
            }
        }
        pos = end;
    }
    (out, None)
}

impl HintStore {
    /// Opens (creating) the hint directory; existing files are kept for replay.
    pub fn open(dir: impl Into<PathBuf>, config: HintConfig) -> Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir)
            .map_err(|e| CoordinatorError::io(format!("creating {}", dir.display()), e))?;
        let store = HintStore {
            dir,
            config,
            writers: Mutex::new(HashMap::new()),
            next_seq: AtomicU64::new(0),
            sizes: Mutex::new(HashMap::new()),
            total: AtomicU64::new(0),
            capped: Mutex::new(Default::default()),
            stats: HintStats::default(),
        };
        let files = store.list()?;
        let max = files.iter().map(|f| f.seq + 1).max().unwrap_or(0);
        store.next_seq.store(max, Ordering::SeqCst);
        {
            let mut sizes = store.sizes.lock();
            for f in &files {
                let len = fs::metadata(store.path(f)).map(|m| m.len()).unwrap_or(0);
                *sizes.entry(f.host).or_default() += len;
                store.total.fetch_add(len, Ordering::Relaxed);
            }
        }
        Ok(store)
    }

    pub fn config(&self) -> &HintConfig {
        &self.config
    }

    pub fn stats(&self) -> &HintStats {
        &self.stats
    }

    /// Per host with hints: its files and their bytes.
    pub fn pending(&self) -> Result<Vec<HostHints>> {
        let sizes = self.sizes.lock().clone();
        let mut out: Vec<HostHints> = Vec::new();
        for f in self.list()? {
            match out.last_mut() {
                Some(h) if h.host == f.host => h.files += 1,
                _ => out.push(HostHints {
                    host: f.host,
                    files: 1,
                    bytes: sizes.get(&f.host).copied().unwrap_or(0),
                }),
            }
        }
        Ok(out)
    }

    /// Bytes of every hint file.
    pub fn total_bytes(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Counts a hint not stored because too many hint writes were in flight.
    pub fn note_overloaded(&self) {
        self.stats
            .dropped_overloaded
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a hint dropped at replay because it can never be delivered.
    pub fn note_undeliverable(&self) {
        self.stats
            .dropped_undeliverable
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts delivered hints.
    pub fn note_delivered(&self, n: u64) {
        self.stats.delivered.fetch_add(n, Ordering::Relaxed);
    }

    /// Whether `len` more bytes for `host` stay within both caps; logs (once
    /// per host until its hints are replayed) and counts when not.
    fn admit(&self, host: HostId, host_bytes: u64, len: u64) -> bool {
        let total = self.total.load(Ordering::Relaxed);
        let over_host = host_bytes + len > self.config.max_bytes_per_host;
        let over_total = total + len > self.config.max_total_bytes;
        if !over_host && !over_total {
            return true;
        }
        self.stats.dropped_over_cap.fetch_add(1, Ordering::Relaxed);
        if self.capped.lock().insert(host) {
            tracing::warn!(
                %host,
                host_bytes,
                total,
                "hint store full ({}): not hinting this node any more until its hints are replayed; repair must fix what it misses",
                if over_host { "the node's cap" } else { "the store's cap" }
            );
        }
        false
    }

    /// True when a node down for `down_for` may still get hints.
    pub fn within_window(&self, down_for: Duration) -> bool {
        down_for <= self.config.max_hint_window
    }

    fn list(&self) -> Result<Vec<HintFileId>> {
        let rd = fs::read_dir(&self.dir)
            .map_err(|e| CoordinatorError::io(format!("listing {}", self.dir.display()), e))?;
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry
                .map_err(|e| CoordinatorError::io(format!("listing {}", self.dir.display()), e))?;
            if let Some(id) = entry.file_name().to_str().and_then(HintFileId::parse) {
                out.push(id);
            }
        }
        out.sort();
        Ok(out)
    }

    fn path(&self, id: &HintFileId) -> PathBuf {
        self.dir.join(id.file_name())
    }

    /// Stores hints for a target that has been down for `down_for`: `false`
    /// (nothing stored) when that is past the hint window or a cap.
    pub fn store_for_down_host(&self, hint: Hint, down_for: Duration) -> Result<bool> {
        if !self.within_window(down_for) {
            tracing::info!(target = %hint.target, ?down_for, "node down past the hint window, not hinting");
            return Ok(false);
        }
        Ok(self.store(std::slice::from_ref(&hint))? == 1)
    }

    /// Appends a batch of hints (any targets) and fsyncs each touched file
    /// once before returning; hints over a cap are left out. Returns how
    /// many were stored.
    pub fn store(&self, hints: &[Hint]) -> Result<usize> {
        let mut writers = self.writers.lock();
        let mut touched: Vec<HostId> = Vec::new();
        let mut stored = 0;
        for h in hints {
            let rec = encode_hint(h);
            let len = rec.len() as u64;
            let host_bytes = self.sizes.lock().get(&h.target).copied().unwrap_or(0);
            if !self.admit(h.target, host_bytes, len) {
                continue;
            }
            let w = self.writer(&mut writers, h.target)?;
            w.file.write_all(&rec).map_err(|e| {
                CoordinatorError::io(format!("appending to {}", w.id.file_name()), e)
            })?;
            w.bytes += len;
            *self.sizes.lock().entry(h.target).or_default() += len;
            self.total.fetch_add(len, Ordering::Relaxed);
            stored += 1;
            if !touched.contains(&h.target) {
                touched.push(h.target);
            }
        }
        self.stats
            .stored
            .fetch_add(stored as u64, Ordering::Relaxed);
        for host in touched {
            if let Some(w) = writers.get_mut(&host) {
                w.file.sync_data().map_err(|e| {
                    CoordinatorError::io(format!("syncing {}", w.id.file_name()), e)
                })?;
                if w.bytes >= self.config.max_file_bytes {
                    writers.remove(&host);
                }
            }
        }
        Ok(stored)
    }

    fn writer<'a>(
        &self,
        writers: &'a mut HashMap<HostId, Writer>,
        host: HostId,
    ) -> Result<&'a mut Writer> {
        if let std::collections::hash_map::Entry::Vacant(e) = writers.entry(host) {
            let id = HintFileId {
                host,
                seq: self.next_seq.fetch_add(1, Ordering::SeqCst),
            };
            let path = self.path(&id);
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|err| CoordinatorError::io(format!("creating {}", path.display()), err))?;
            // Make the new file's name durable too.
            if let Ok(d) = File::open(&self.dir) {
                let _ = d.sync_all();
            }
            e.insert(Writer { id, file, bytes: 0 });
        }
        writers
            .get_mut(&host)
            .ok_or_else(|| CoordinatorError::InvalidRequest("hint writer vanished".into()))
    }

    /// Hosts that have hints waiting.
    pub fn hosts(&self) -> Result<Vec<HostId>> {
        let mut hosts: Vec<HostId> = self.list()?.into_iter().map(|f| f.host).collect();
        hosts.dedup();
        Ok(hosts)
    }

    /// Replays `host`'s hints file by file, oldest first. The host's open
    /// file is sealed first; hints stored meanwhile go to a new file.
    pub fn replay(&self, host: HostId) -> Result<HintReplay<'_>> {
        let files = self.replay_files(host)?.into();
        Ok(HintReplay { store: self, files })
    }

    /// The files [`HintStore::replay`] goes through, to read one at a time
    /// with [`HintStore::read_file`].
    pub fn replay_files(&self, host: HostId) -> Result<Vec<HintFileId>> {
        let cutoff = {
            let mut writers = self.writers.lock();
            writers.remove(&host);
            // Files opened after this point (seq >= cutoff) may still be
            // appended to: they wait for the next replay.
            self.next_seq.load(Ordering::SeqCst)
        };
        self.capped.lock().remove(&host);
        Ok(self
            .list()?
            .into_iter()
            .filter(|f| f.host == host && f.seq < cutoff)
            .collect())
    }

    /// Reads one sealed file's intact hints (corrupt records skipped and
    /// logged); a torn tail is cut off the file.
    pub fn read_file(&self, id: &HintFileId) -> Result<Vec<Hint>> {
        let path = self.path(id);
        let buf = fs::read(&path)
            .map_err(|e| CoordinatorError::io(format!("reading {}", path.display()), e))?;
        let (hints, torn_at) = decode_records(&path, &buf);
        if let Some(good) = torn_at {
            self.stats.torn_files.fetch_add(1, Ordering::Relaxed);
            let cut = OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(good as u64).and_then(|()| f.sync_all()));
            match cut {
                Ok(()) => self.forget_bytes(id.host, (buf.len() - good) as u64),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot cut a torn hint file")
                }
            }
        }
        Ok(hints)
    }

    fn forget_bytes(&self, host: HostId, len: u64) {
        if let Some(b) = self.sizes.lock().get_mut(&host) {
            *b = b.saturating_sub(len);
        }
        let _ = self
            .total
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_sub(len))
            });
    }

    /// Deletes a replayed file: every hint in it was delivered.
    pub fn acknowledge(&self, id: &HintFileId) -> Result<()> {
        let path = self.path(id);
        let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        match fs::remove_file(&path) {
            Ok(()) => {
                self.forget_bytes(id.host, len);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CoordinatorError::io(
                format!("deleting {}", path.display()),
                e,
            )),
        }
    }

    /// Deletes every hint for a host removed from the cluster.
    pub fn delete_host(&self, host: HostId) -> Result<usize> {
        self.writers.lock().remove(&host);
        let files: Vec<HintFileId> = self
            .list()?
            .into_iter()
            .filter(|f| f.host == host)
            .collect();
        for f in &files {
            self.acknowledge(f)?;
        }
        tracing::info!(%host, files = files.len(), "deleted hints of a removed node");
        Ok(files.len())
    }
}

/// A host's hint files, oldest first. Each item is one file's hints; call
/// [`HintStore::acknowledge`] with its id once all were delivered, or stop
/// (the file stays for the next replay).
pub struct HintReplay<'a> {
    store: &'a HintStore,
    files: VecDeque<HintFileId>,
}

impl Iterator for HintReplay<'_> {
    type Item = Result<(HintFileId, Vec<Hint>)>;

    fn next(&mut self) -> Option<Self::Item> {
        let id = self.files.pop_front()?;
        Some(self.store.read_file(&id).map(|h| (id, h)))
    }
}

/// A token bucket: `rate` tokens (e.g. bytes) per second, at most `burst`
/// saved up. Hint delivery uses it so a returning node is not flooded.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    pub fn new(rate_per_sec: u64, burst: u64, now: Instant) -> Self {
        let burst = burst.max(1) as f64;
        RateLimiter {
            rate: rate_per_sec.max(1) as f64,
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.last = self.last.max(now);
    }

    /// Takes `n` tokens if they are there.
    pub fn try_acquire(&mut self, n: u64, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= n as f64 {
            self.tokens -= n as f64;
            true
        } else {
            false
        }
    }

    /// Takes `n` tokens, going into debt if needed, and returns how long to
    /// wait before acting (zero when they were there).
    pub fn acquire(&mut self, n: u64, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use gyre_common::{Cell, CellName};

    fn hint(target: HostId, i: i64) -> Hint {
        Hint {
            target,
            table: TableId(uuid::Uuid::from_u128(7)),
            mutation: Partition::with_key(format!("k{i}")).set(
                "r",
                CellName::simple("v"),
                Cell::live(i, format!("v{i}")),
            ),
            write_time: i,
        }
    }

    #[test]
    fn store_replay_acknowledge_in_order_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let a = HostId::new_v4();
        let b = HostId::new_v4();
        {
            let s = HintStore::open(dir.path(), HintConfig::default()).unwrap();
            s.store(&[hint(a, 1), hint(b, 2), hint(a, 3)]).unwrap();
            s.store(&[hint(a, 4)]).unwrap();
        }
        let s = HintStore::open(dir.path(), HintConfig::default()).unwrap();
        s.store(&[hint(a, 5)]).unwrap();
        let mut hosts = s.hosts().unwrap();
        hosts.sort();
        let mut want = vec![a, b];
        want.sort();
        assert_eq!(hosts, want);
        let mut got = Vec::new();
        for item in s.replay(a).unwrap() {
            let (id, hints) = item.unwrap();
            got.extend(hints.iter().map(|h| h.write_time));
            s.acknowledge(&id).unwrap();
        }
        assert_eq!(got, vec![1, 3, 4, 5]);
        assert_eq!(s.hosts().unwrap(), vec![b]);
        // New hints after replay land in a new file and replay next time.
        s.store(&[hint(a, 6)]).unwrap();
        let again: Vec<i64> = s
            .replay(a)
            .unwrap()
            .flat_map(|r| r.unwrap().1)
            .map(|h| h.write_time)
            .collect();
        assert_eq!(again, vec![6]);
        assert_eq!(s.delete_host(a).unwrap(), 1);
        assert_eq!(s.hosts().unwrap(), vec![b]);
        let hb: Vec<Hint> = s.replay(b).unwrap().flat_map(|r| r.unwrap().1).collect();
        assert_eq!(hb, vec![hint(b, 2)]);
    }

    #[test]
    fn corrupt_records_are_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let a = HostId::new_v4();
        let s = HintStore::open(dir.path(), HintConfig::default()).unwrap();
        s.store(&[hint(a, 1), hint(a, 2), hint(a, 3)]).unwrap();
        drop(s);
        let path = fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut bytes = fs::read(&path).unwrap();
        let first_len = u32::from_le_bytes(bytes[0..4].try_into().unwrap()) as usize;
        // Flip a payload byte of the second record.
        let second = HEADER + first_len;
        bytes[second + HEADER + 20] ^= 0xff;
        // And tear the tail.
        bytes.extend_from_slice(&[1, 2, 3]);
        fs::write(&path, &bytes).unwrap();
        let s = HintStore::open(dir.path(), HintConfig::default()).unwrap();
        let got: Vec<i64> = s
            .replay(a)
            .unwrap()
            .flat_map(|r| r.unwrap().1)
            .map(|h| h.write_time)
            .collect();
        assert_eq!(got, vec![1, 3]);
        // Garbage of every length never panics.
        for n in 0..64 {
            let junk: Vec<u8> = (0..n).map(|i| (i * 37 % 256) as u8).collect();
            let _ = decode_records(&path, &junk);
        }
    }

    #[test]
    fn hint_window_is_respected() {
        let dir = tempfile::tempdir().unwrap();
        let a = HostId::new_v4();
        let s = HintStore::open(dir.path(), HintConfig::default()).unwrap();
        assert!(s
            .store_for_down_host(hint(a, 1), Duration::from_secs(60))
            .unwrap());
        assert!(!s
            .store_for_down_host(hint(a, 2), Duration::from_secs(3 * 3600 + 1))
            .unwrap());
        let n: usize = s.replay(a).unwrap().map(|r| r.unwrap().1.len()).sum();
        assert_eq!(n, 1);
    }

    #[test]
    fn files_roll_over_at_size() {
        let dir = tempfile::tempdir().unwrap();
        let a = HostId::new_v4();
        let cfg = HintConfig {
            max_file_bytes: 1,
            ..HintConfig::default()
        };
        let s = HintStore::open(dir.path(), cfg).unwrap();
        for i in 0..3 {
            s.store(&[hint(a, i)]).unwrap();
        }
        let files: Vec<_> = s.replay(a).unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(files.len(), 3);
        assert!(files.windows(2).all(|w| w[0].0.seq < w[1].0.seq));
    }

    #[test]
    fn token_bucket() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(100, 50, t0);
        assert!(r.try_acquire(50, t0));
        assert!(!r.try_acquire(1, t0));
        assert!(r.try_acquire(10, t0 + Duration::from_millis(100)));
        let wait = r.acquire(100, t0 + Duration::from_millis(100));
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-6, "{wait:?}");
        // Never more than the burst saved up.
        assert!(!r.try_acquire(51, t0 + Duration::from_secs(100)));
    }

    fn one_record_len() -> u64 {
        encode_hint(&hint(HostId::from_u128(1), 1)).len() as u64
    }

    #[test]
    fn a_host_over_its_cap_or_the_store_over_its_cap_gets_no_more_hints() {
        let dir = tempfile::tempdir().unwrap();
        let rec = one_record_len();
        let config = HintConfig {
            max_bytes_per_host: 3 * rec,
            max_total_bytes: 5 * rec,
            ..HintConfig::default()
        };
        let (a, b) = (HostId::from_u128(1), HostId::from_u128(2));
        let s = HintStore::open(dir.path(), config.clone()).unwrap();
        let batch: Vec<Hint> = (1..=5).map(|i| hint(a, i)).collect();
        assert_eq!(s.store(&batch).unwrap(), 3, "capped per host");
        assert_eq!(s.stats().dropped_over_cap.load(Ordering::Relaxed), 2);
        // b fits 2 more before the store's total (5 records) is reached.
        let batch: Vec<Hint> = (1..=3).map(|i| hint(b, i)).collect();
        assert_eq!(s.store(&batch).unwrap(), 2, "capped in total");
        assert_eq!(s.total_bytes(), 5 * rec);
        let pending = s.pending().unwrap();
        assert_eq!(
            pending
                .iter()
                .map(|h| (h.host, h.bytes))
                .collect::<Vec<_>>(),
            vec![(a, 3 * rec), (b, 2 * rec)]
        );
        // Sizes survive a restart; replaying a's hints frees its room.
        drop(s);
        let s = HintStore::open(dir.path(), config).unwrap();
        assert_eq!(s.total_bytes(), 5 * rec);
        assert!(!s.store_for_down_host(hint(a, 9), Duration::ZERO).unwrap());
        for item in s.replay(a).unwrap() {
            s.acknowledge(&item.unwrap().0).unwrap();
        }
        assert_eq!(s.total_bytes(), 2 * rec);
        assert!(s.store_for_down_host(hint(a, 9), Duration::ZERO).unwrap());
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_every_record_before_it_replays() {
        let dir = tempfile::tempdir().unwrap();
        let a = HostId::from_u128(1);
        let s = HintStore::open(dir.path(), HintConfig::default()).unwrap();
        s.store(&(1..=4).map(|i| hint(a, i)).collect::<Vec<_>>())
            .unwrap();
        drop(s);
        let path = fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let good = fs::metadata(&path).unwrap().len();
        // A crash mid-append: a header that promises more than was written.
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(&200u32.to_le_bytes());
        bytes.extend_from_slice(&[0xaa; 4 + 50]);
        fs::write(&path, &bytes).unwrap();
        let s = HintStore::open(dir.path(), HintConfig::default()).unwrap();
        let got: Vec<i64> = s
            .replay(a)
            .unwrap()
            .flat_map(|r| r.unwrap().1)
            .map(|h| h.write_time)
            .collect();
        assert_eq!(got, vec![1, 2, 3, 4]);
        assert_eq!(fs::metadata(&path).unwrap().len(), good, "tail cut off");
        assert_eq!(s.stats().torn_files.load(Ordering::Relaxed), 1);
        assert_eq!(s.total_bytes(), good);
    }
}
