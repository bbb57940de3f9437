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
    /// A host's file is sealed and a new one started past this size.
    pub max_file_bytes: u64,
}

impl Default for HintConfig {
    fn default() -> Self {
        HintConfig {
            max_hint_window: Duration::from_secs(3 * 3600),
            max_file_bytes: 32 << 20,
        }
    }
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
/// skipped (logged), a torn or implausible length ends the file.
fn decode_records(path: &Path, buf: &[u8]) -> Vec<Hint> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let Some(header) = buf.get(pos..pos + HEADER) else {
            tracing::warn!(file = %path.display(), offset = pos, "torn hint record header, ignoring the tail");
            break;
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let end = pos + HEADER + len;
        if len > MAX_RECORD || end > buf.len() {
            tracing::error!(file = %path.display(), offset = pos, len, "hint record length runs past the file, ignoring the rest");
            break;
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
    out
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
        };
        let max = store.list()?.iter().map(|f| f.seq + 1).max().unwrap_or(0);
        store.next_seq.store(max, Ordering::SeqCst);
        Ok(store)
    }

    pub fn config(&self) -> &HintConfig {
        &self.config
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
    /// (nothing stored) when that is past the hint window.
    pub fn store_for_down_host(&self, hint: Hint, down_for: Duration) -> Result<bool> {
        if !self.within_window(down_for) {
            tracing::info!(target = %hint.target, ?down_for, "node down past the hint window, not hinting");
            return Ok(false);
        }
        self.store(std::slice::from_ref(&hint))?;
        Ok(true)
    }

    /// Appends a batch of hints (any targets) and fsyncs each touched file
    /// once before returning.
    pub fn store(&self, hints: &[Hint]) -> Result<()> {
        let mut writers = self.writers.lock();
        let mut touched: Vec<HostId> = Vec::new();
        for h in hints {
            let rec = encode_hint(h);
            let w = self.writer(&mut writers, h.target)?;
            w.file.write_all(&rec).map_err(|e| {
                CoordinatorError::io(format!("appending to {}", w.id.file_name()), e)
            })?;
            w.bytes += rec.len() as u64;
            if !touched.contains(&h.target) {
                touched.push(h.target);
            }
        }
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
        Ok(())
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
        let cutoff = {
            let mut writers = self.writers.lock();
            writers.remove(&host);
            // Files opened after this point (seq >= cutoff) may still be
            // appended to: they wait for the next replay.
            self.next_seq.load(Ordering::SeqCst)
        };
        let files = self
            .list()?
            .into_iter()
            .filter(|f| f.host == host && f.seq < cutoff)
            .collect();
        Ok(HintReplay { store: self, files })
    }

    /// Reads one file's intact hints (corrupt records skipped and logged).
    pub fn read_file(&self, id: &HintFileId) -> Result<Vec<Hint>> {
        let path = self.path(id);
        let buf = fs::read(&path)
            .map_err(|e| CoordinatorError::io(format!("reading {}", path.display()), e))?;
        Ok(decode_records(&path, &buf))
    }

    /// Deletes a replayed file: every hint in it was delivered.
    pub fn acknowledge(&self, id: &HintFileId) -> Result<()> {
        let path = self.path(id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
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
}
