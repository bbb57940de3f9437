//! The commitlog: every mutation is appended here before it is applied to a
//! memtable, so that a restart can replay what was not yet flushed.
//!
//! Layout: numbered segment files `CommitLog-<id>.log`, each a header (magic,
//! segment id, CRC) and records `[len u32][crc(len) u32][payload][crc u32]`.
//! Appends go to an in-memory buffer under a mutex; a syncer thread writes the
//! buffer out and fsyncs it according to the [`SyncMode`]. Async writers
//! await their durability as a future ([`CommitLog::durable`]) instead of
//! parking a thread: each waits in a queue ordered by position, and an fsync
//! wakes exactly the writes it made durable (a broadcast would wake every
//! waiter on every fsync, most of them to wait again for the next group).
//! Blocking callers use [`CommitLog::wait_durable`].
//!
//! Segments are allocated to their full size when created (`fallocate`),
//! so an `fdatasync` after an append has no file size or block allocation
//! to journal (on this project's ext4 disk: about 110 instead of 145 µs),
//! and once the active segment is half full a preparer thread creates the
//! next one, so a roll takes a ready file instead of creating and fsyncing
//! one under the append lock. Replay reads a run of zeros (what the
//! unwritten part of a segment reads as) as the end of a segment. A failed write or
//! fsync poisons the log: every later append fails, and nothing is retried
//! blindly (the kernel may have dropped the dirty pages).

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BTreeMap, BinaryHeap};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

use crate::config::SyncMode;
use crate::error::IoContext;
use crate::{Error, Result, TableId};

const MAGIC: &[u8; 8] = b"GYRECL01";
const HEADER_LEN: u64 = 20;
/// In periodic mode the buffer goes to the kernel this often.
const PERIODIC_WRITE_OUT: std::time::Duration = std::time::Duration::from_millis(10);
/// Write the buffer out without waiting for the syncer once it is this big.
const MAX_BUFFER: usize = 8 << 20;

/// Failpoint in front of every commitlog fsync (segments and the directory);
/// see the crate docs.
pub const FSYNC_FAILPOINT: &str = "commitlog::fsync";

/// A buffer on its way to its segment file (see [`Shared::take_out`]).
struct Outgoing<'a> {
    io: parking_lot::MutexGuard<'a, Vec<u8>>,
    file: Arc<File>,
    segment: u64,
    at: u64,
    buf: Vec<u8>,
}

/// A position in the commitlog; orders all records ever written.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

struct Active {
    segment: u64,
    file: Arc<File>,
    /// Bytes of the segment already handed to the file.
    written: u64,
    buf: Vec<u8>,
    /// The table of the previous append in this segment: consecutive writes
    /// to one table skip the dirty-set update.
    last_table: Option<TableId>,
    /// Finished segments not yet fsynced: the syncer syncs them before the
    /// active one, so a roll never fsyncs on the appending thread (in
    /// periodic mode that could be a whole segment, stalling every writer).
    rolled: Vec<(u64, Arc<File>)>,
    /// The next segment, created ahead by the preparer under its spare
    /// name; a roll renames it into place.
    spare: Option<(u64, File)>,
    /// A roll renamed a segment into place: the syncer fsyncs the directory
    /// before anything in it counts as synced.
    dir_unsynced: bool,
    /// The preparer was asked for the segment after this one.
    spare_asked: bool,
}

struct SyncState {
    synced: Position,
    error: Option<String>,
    /// Async writers not yet durable, the lowest position on top.
    waiters: BinaryHeap<Waiter>,
}

/// An async writer waiting for its position to be synced; dropping the
/// sender without sending tells it the log failed or closed.
struct Waiter {
    pos: Position,
    tx: tokio::sync::oneshot::Sender<()>,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        self.pos == other.pos
    }
}
impl Eq for Waiter {}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiter {
    /// Reversed, so the max-heap yields the lowest position first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other.pos.cmp(&self.pos)
    }
}

struct Shared {
    dir: PathBuf,
    mode: SyncMode,
    segment_bytes: u64,
    active: Mutex<Active>,
    /// Held while a buffer taken out of `active` is written to its file
    /// (taken before `active` is released, so writes go out in offset
    /// order); holds the spare buffer the next take swaps in.
    io: Mutex<Vec<u8>>,
    sync: Mutex<SyncState>,
    synced_cv: Condvar,
    /// Wakes the syncer.
    pending_cv: Condvar,
    /// Wakes the segment preparer: `Some(id)` asks it for segment `id`.
    prepare: Mutex<Option<u64>>,
    prepare_cv: Condvar,
    pending: Mutex<bool>,
    shutdown: AtomicBool,
    poisoned: AtomicBool,
    /// Per segment, the tables with unflushed data in it. A table stays
    /// dirty in the segment its last flush ended in until a later flush:
    /// tracking exact offsets would cost a map update on every append.
    dirty: Mutex<BTreeMap<u64, Vec<TableId>>>,
    bytes_written: AtomicU64,
    syncs: AtomicU64,
    /// Records appended; with `syncs`, the writes each fsync carried.
    records: AtomicU64,
    /// Segments on disk that are still needed (the active one included).
    live_segments: AtomicU64,
}

/// The commitlog of one engine.
pub struct CommitLog {
    shared: Arc<Shared>,
    syncer: Mutex<Option<JoinHandle<()>>>,
    preparer: Mutex<Option<JoinHandle<()>>>,
}

/// A record found on replay.
pub struct Replayed {
    pub position: Position,
    pub payload: bytes::Bytes,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("CommitLog-{id}.log"))
}

/// Lists segment ids in a directory, oldest first.
pub fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut ids = Vec::new();
    for e in fs::read_dir(dir).ctx(|| format!("listing {}", dir.display()))? {
        let e = e.ctx(|| format!("listing {}", dir.display()))?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if let Some(id) = name
            .strip_prefix("CommitLog-")
            .and_then(|s| s.strip_suffix(".log"))
        {
            if let Ok(id) = id.parse() {
                ids.push(id);
            }
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// With the `failpoints` feature, fails like a disk whose fsync returns EIO
/// while the failpoint `point` is set to `return`; compiled out otherwise.
fn fsync_failpoint(point: &'static str) -> io::Result<()> {
    let _ = point; // unused when failpoints are compiled out
    fail::fail_point!(point, |_| Err(io::Error::other(format!(
        "injected fsync failure (failpoint {point})"
    ))));
    Ok(())
}

/// `fdatasync` behind the failpoint `point`: every data fsync of the engine
/// goes through here (or [`sync_all`]) so fault tests reach them all.
pub(crate) fn sync_data(file: &File, point: &'static str) -> io::Result<()> {
    fsync_failpoint(point)?;
    file.sync_data()
}

/// `fsync` behind the failpoint `point`.
pub(crate) fn sync_all(file: &File, point: &'static str) -> io::Result<()> {
    fsync_failpoint(point)?;
    file.sync_all()
}

/// Syncs a directory (after creating, renaming or deleting files in it).
/// Metadata paths (table files, compaction) use this, without a failpoint.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(|| format!("syncing directory {}", dir.display()))
}

/// Syncs a directory behind the failpoint `point`.
pub(crate) fn fsync_dir_at(dir: &Path, point: &'static str) -> Result<()> {
    File::open(dir)
        .and_then(|d| sync_all(&d, point))
        .ctx(|| format!("syncing directory {}", dir.display()))
}

fn create_segment(dir: &Path, id: u64, size: u64) -> Result<File> {
    let f = create_segment_file(&segment_path(dir, id), id, size)?;
    fsync_dir_at(dir, FSYNC_FAILPOINT)?;
    Ok(f)
}

/// Where the preparer builds segment `id` before a roll renames it into
/// place (not a `.log` name, so replay never sees a half-made one).
fn spare_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("CommitLog-{id}.log.spare"))
}

/// Creates a segment file at `path` with its header, allocated to `size`
/// bytes where the filesystem can (`fallocate`; else it grows as written),
/// fsynced. On failure the file is removed.
fn create_segment_file(path: &Path, id: u64, size: u64) -> Result<File> {
    let f = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(path)
        .ctx(|| format!("creating {}", path.display()))?;
    let fill = || -> io::Result<()> {
        let mut header = Vec::with_capacity(HEADER_LEN as usize);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&id.to_le_bytes());
        header.extend_from_slice(&crc32fast::hash(&header).to_le_bytes());
        f.write_all_at(&header, 0)?;
        if size > HEADER_LEN {
            let allocated = rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, size);
            if let Err(e) = allocated {
                tracing::debug!(error = %e, "fallocate of a commitlog segment");
            }
        }
        sync_all(&f, FSYNC_FAILPOINT)
    };
    if let Err(e) = fill() {
        let _ = fs::remove_file(path);
        return Err(e).ctx(|| format!("writing {}", path.display()));
    }
    Ok(f)
}

/// Frames a payload as a commitlog record.
pub fn frame_record(payload: &[u8], out: &mut Vec<u8>) {
    let len = (payload.len() as u32).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc32fast::hash(&len).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
}

impl CommitLog {
    /// Starts a new segment numbered after every existing one. Replay must
    /// have happened before (see [`replay_segment`]).
    pub fn open(
        dir: &Path,
        mode: SyncMode,
        segment_bytes: u64,
        first_segment: u64,
    ) -> Result<CommitLog> {
        // Spares a crash left behind (never renamed into place: unused).
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().ends_with(".log.spare") {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        let file = Arc::new(create_segment(dir, first_segment, segment_bytes)?);
        let first = Position {
            segment: first_segment,
            offset: HEADER_LEN,
        };
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            mode,
            segment_bytes,
            io: Mutex::new(Vec::new()),
            active: Mutex::new(Active {
                segment: first_segment,
                file,
                written: HEADER_LEN,
                buf: Vec::with_capacity(1 << 20),
                last_table: None,
                rolled: Vec::new(),
                spare: None,
                spare_asked: false,
                dir_unsynced: false,
            }),
            sync: Mutex::new(SyncState {
                synced: first,
                error: None,
                waiters: BinaryHeap::new(),
            }),
            synced_cv: Condvar::new(),
            pending_cv: Condvar::new(),
            pending: Mutex::new(false),
            prepare: Mutex::new(None),
            prepare_cv: Condvar::new(),
            shutdown: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
            dirty: Mutex::new(BTreeMap::new()),
            bytes_written: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            records: AtomicU64::new(0),
            live_segments: AtomicU64::new(1),
        });
        let s = shared.clone();
        let syncer = std::thread::Builder::new()
            .name("commitlog-sync".into())
            .spawn(move || s.run_syncer())
            .ctx(|| "starting the commitlog syncer".into())?;
        let s = shared.clone();
        let preparer = std::thread::Builder::new()
            .name("gyre-cl-prepare".into())
            .spawn(move || s.run_preparer())
            .ctx(|| "starting the commitlog segment preparer".into())?;
        Ok(CommitLog {
            shared,
            syncer: Mutex::new(Some(syncer)),
            preparer: Mutex::new(Some(preparer)),
        })
    }

    /// Appends a record for `table`; returns the position just past it. The
    /// record is durable once [`CommitLog::wait_durable`] returns for it.
    pub fn append(&self, table: TableId, payload: &[u8]) -> Result<Position> {
        let sh = &self.shared;
        if sh.poisoned.load(Ordering::Acquire) {
            return Err(Error::Poisoned(sh.error_text()));
        }
        let rec_len = payload.len() as u64 + 12;
        let mut a = sh.active.lock();
        let mut end = a.written + a.buf.len() as u64;
        if end + rec_len > sh.segment_bytes && end > HEADER_LEN {
            sh.roll(&mut a)?;
            end = HEADER_LEN;
        }
        frame_record(payload, &mut a.buf);
        let pos = Position {
            segment: a.segment,
            offset: end + rec_len,
        };
        if !a.spare_asked && pos.offset > sh.segment_bytes / 2 {
            a.spare_asked = true;
            *sh.prepare.lock() = Some(a.segment + 1);
            sh.prepare_cv.notify_one();
        }
        if a.last_table != Some(table) {
            a.last_table = Some(table);
            let mut dirty = sh.dirty.lock();
            let tables = dirty.entry(a.segment).or_default();
            if !tables.contains(&table) {
                tables.push(table);
            }
        }
        if a.buf.len() >= MAX_BUFFER {
            sh.write_out(&mut a)?;
        }
        drop(a);
        sh.records.fetch_add(1, Ordering::Relaxed);
        if sh.mode.waits_for_sync() {
            let mut p = sh.pending.lock();
            if !*p {
                *p = true;
                sh.pending_cv.notify_one();
            }
        }
        Ok(pos)
    }

    /// Blocks until `pos` is fsynced, when the sync mode acknowledges only
    /// synced writes.
    pub fn wait_durable(&self, pos: Position) -> Result<()> {
        let sh = &self.shared;
        if !sh.mode.waits_for_sync() {
            return Ok(());
        }
        let mut s = sh.sync.lock();
        loop {
            if let Some(e) = &s.error {
                return Err(Error::Poisoned(e.clone()));
            }
            if s.synced >= pos {
                return Ok(());
            }
            sh.synced_cv.wait(&mut s);
        }
    }

    /// Resolves once `pos` is fsynced, when the sync mode acknowledges only
    /// synced writes (at once otherwise): the async form of
    /// [`CommitLog::wait_durable`], so a waiting write holds no thread.
    pub fn durable(&self, pos: Position) -> impl std::future::Future<Output = Result<()>> + Send {
        let sh = self.shared.clone();
        // Registered now, under the lock that publishes the synced position,
        // so an fsync that finishes before the first poll is not missed.
        let wait = sh.mode.waits_for_sync().then(|| {
            let mut s = sh.sync.lock();
            if let Some(e) = &s.error {
                Err(e.clone())
            } else if s.synced >= pos {
                Ok(None)
            } else {
                let (tx, rx) = tokio::sync::oneshot::channel();
                s.waiters.push(Waiter { pos, tx });
                Ok(Some(rx))
            }
        });
        async move {
            match wait {
                None | Some(Ok(None)) => Ok(()),
                Some(Err(e)) => Err(Error::Poisoned(e)),
                Some(Ok(Some(rx))) => rx
                    .await
                    // Dropped unsent: the log failed or closed first.
                    .map_err(|_| Error::Poisoned(sh.error_text())),
            }
        }
    }

    /// The position the next record will start at: every record before it
    /// belongs to memtables that existed when this was called.
    pub fn current_position(&self) -> Position {
        let a = self.shared.active.lock();
        Position {
            segment: a.segment,
            offset: a.written + a.buf.len() as u64,
        }
    }

    /// Records that every write to `table` before `upto` is on disk in
    /// SSTables, and deletes segments nothing depends on any more.
    pub fn mark_flushed(&self, table: TableId, upto: Position) -> Result<()> {
        let active = self.shared.active.lock().segment;
        let mut removable = Vec::new();
        {
            let mut dirty = self.shared.dirty.lock();
            for (seg, tables) in dirty.iter_mut() {
                if *seg >= upto.segment {
                    break;
                }
                tables.retain(|t| *t != table);
            }
            let segs: Vec<u64> = dirty.keys().copied().collect();
            for seg in segs {
                if seg < active && dirty.get(&seg).is_some_and(|t| t.is_empty()) {
                    dirty.remove(&seg);
                    removable.push(seg);
                }
            }
        }
        self.shared
            .live_segments
            .fetch_sub(removable.len() as u64, Ordering::Relaxed);
        for seg in removable {
            let path = segment_path(&self.shared.dir, seg);
            fs::remove_file(&path).ctx(|| format!("deleting {}", path.display()))?;
        }
        Ok(())
    }

    /// Forgets a dropped table, so its records no longer keep segments.
    pub fn forget_table(&self, table: TableId) -> Result<()> {
        self.mark_flushed(
            table,
            Position {
                segment: u64::MAX,
                offset: u64::MAX,
            },
        )?;
        self.shared.active.lock().last_table = None;
        Ok(())
    }

    /// When the live segments exceed `limit` bytes, the tables holding the
    /// oldest one back: flushing them lets it go (Cassandra's
    /// `commitlog_total_space`). Empty when under the limit.
    pub fn tables_pinning_oldest(&self, limit: u64) -> Vec<TableId> {
        // Checked on every write: the atomic keeps the common case lock-free.
        let live = self.shared.live_segments.load(Ordering::Relaxed);
        if live.saturating_mul(self.shared.segment_bytes) <= limit {
            return Vec::new();
        }
        self.shared
            .dirty
            .lock()
            .values()
            .next()
            .cloned()
            .unwrap_or_default()
    }

    /// Why the log refuses writes (a write or fsync failed; only a restart,
    /// which replays what reached the disk, clears it), or `None`.
    pub fn failure(&self) -> Option<String> {
        self.shared
            .poisoned
            .load(Ordering::Acquire)
            .then(|| self.shared.error_text())
    }

    pub fn bytes_written(&self) -> u64 {
        self.shared.bytes_written.load(Ordering::Relaxed)
    }

    pub fn syncs(&self) -> u64 {
        self.shared.syncs.load(Ordering::Relaxed)
    }

    /// Records appended since the log was opened.
    pub fn records(&self) -> u64 {
        self.shared.records.load(Ordering::Relaxed)
    }

    /// Writes out and syncs everything appended so far, then stops the syncer.
    pub fn close(&self) -> Result<()> {
        self.shared.shutdown.store(true, Ordering::Release);
        {
            let _p = self.shared.pending.lock();
            self.shared.pending_cv.notify_one();
        }
        if let Some(h) = self.syncer.lock().take() {
            let _ = h.join();
        }
        {
            let _p = self.shared.prepare.lock();
            self.shared.prepare_cv.notify_one();
        }
        if let Some(h) = self.preparer.lock().take() {
            let _ = h.join();
        }
        if let Some((id, _)) = self.shared.active.lock().spare.take() {
            let _ = fs::remove_file(spare_path(&self.shared.dir, id));
        }
        let res = self.shared.sync_now();
        // Nothing syncs after this: release any waiter left (with an error).
        self.shared.sync.lock().waiters.clear();
        res
    }

    /// Marks the log failed, as after an fsync error (used by fault tests).
    pub fn poison(&self, why: &str) {
        self.shared.fail(why.to_string());
    }
}

impl Drop for CommitLog {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "closing the commitlog");
        }
    }
}

impl Shared {
    fn error_text(&self) -> String {
        self.sync
            .lock()
            .error
            .clone()
            .unwrap_or_else(|| "commitlog failed".into())
    }

    fn fail(&self, why: String) {
        tracing::error!(error = %why, "commitlog failed: refusing further writes");
        self.poisoned.store(true, Ordering::Release);
        let mut s = self.sync.lock();
        if s.error.is_none() {
            s.error = Some(why);
        }
        self.synced_cv.notify_all();
        // Dropping the senders fails every async waiter.
        let waiters = std::mem::take(&mut s.waiters);
        drop(s);
        drop(waiters);
    }

    /// Hands the buffer to the file (no fsync), holding `active`.
    fn write_out(&self, a: &mut Active) -> Result<()> {
        let out = self.take_out(a);
        self.finish_out(out)
    }

    /// Takes the buffer out of `active` (swapping in the spare), to be
    /// written by [`Shared::finish_out`] after `active` is released: the
    /// syncer's periodic write-out would otherwise hold every appending
    /// writer for the length of a write of up to 10 ms of records.
    fn take_out<'a>(&'a self, a: &mut Active) -> Outgoing<'a> {
        // Waits for an earlier take's write: offsets reach the file in order.
        let mut io = self.io.lock();
        let spare = std::mem::take(&mut *io);
        let buf = std::mem::replace(&mut a.buf, spare);
        let at = a.written;
        a.written += buf.len() as u64;
        Outgoing {
            io,
            file: a.file.clone(),
            segment: a.segment,
            at,
            buf,
        }
    }

    /// Writes a taken buffer at its offset; keeps it as the next spare.
    fn finish_out(&self, mut out: Outgoing<'_>) -> Result<()> {
        if out.buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = out.file.write_all_at(&out.buf, out.at) {
            let msg = format!("writing commitlog segment {}: {e}", out.segment);
            self.fail(msg.clone());
            return Err(Error::Poisoned(msg));
        }
        self.bytes_written
            .fetch_add(out.buf.len() as u64, Ordering::Relaxed);
        out.buf.clear();
        *out.io = out.buf;
        Ok(())
    }

    /// Finishes the active segment (written out; the syncer fsyncs it
    /// before anything after it counts as synced) and starts the next.
    fn roll(&self, a: &mut Active) -> Result<()> {
        self.write_out(a)?;
        a.rolled.push((a.segment, a.file.clone()));
        let next = a.segment + 1;
        let file = match a.spare.take() {
            Some((id, f)) if id == next => {
                let from = spare_path(&self.dir, id);
                let to = segment_path(&self.dir, id);
                fs::rename(&from, &to)
                    .ctx(|| format!("renaming {} to {}", from.display(), to.display()))
                    .inspect_err(|e| self.fail(e.to_string()))?;
                a.dir_unsynced = true;
                f
            }
            // Not prepared in time (or a stale one): create it here.
            stale => {
                if let Some((id, _)) = stale {
                    let _ = fs::remove_file(spare_path(&self.dir, id));
                }
                create_segment(&self.dir, next, self.segment_bytes)
                    .inspect_err(|e| self.fail(e.to_string()))?
            }
        };
        a.segment = next;
        a.file = Arc::new(file);
        a.written = HEADER_LEN;
        a.last_table = None;
        a.spare_asked = false;
        self.dirty.lock().entry(next).or_default();
        self.live_segments.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn advance_synced(&self, to: Position) {
        let mut s = self.sync.lock();
        if to > s.synced {
            s.synced = to;
        }
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.synced_cv.notify_all();
        let mut ready = Vec::new();
        while s.waiters.peek().is_some_and(|w| w.pos <= s.synced) {
            if let Some(w) = s.waiters.pop() {
                ready.push(w.tx);
            }
        }
        drop(s);
        // Woken outside the lock, so new writers can register meanwhile.
        for tx in ready {
            let _ = tx.send(());
        }
    }

    /// Writes the buffer out and fsyncs it; the fsync runs outside the lock
    /// so appends continue meanwhile (they join the next group).
    fn sync_now(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(Error::Poisoned(self.error_text()));
        }
        let (out, file, pos, rolled, dir_unsynced) = {
            let mut a = self.active.lock();
            let out = self.take_out(&mut a);
            (
                out,
                a.file.clone(),
                Position {
                    segment: a.segment,
                    offset: a.written,
                },
                std::mem::take(&mut a.rolled),
                std::mem::take(&mut a.dir_unsynced),
            )
        };
        self.finish_out(out)?;
        // Segments finished by a roll first: nothing after them may count
        // as synced before they are.
        for (segment, f) in rolled {
            if let Err(e) = sync_data(&f, FSYNC_FAILPOINT) {
                let msg = format!("syncing commitlog segment {segment}: {e}");
                self.fail(msg.clone());
                return Err(Error::Poisoned(msg));
            }
        }
        if dir_unsynced {
            if let Err(e) = fsync_dir_at(&self.dir, FSYNC_FAILPOINT) {
                let msg = format!("syncing the commitlog directory: {e}");
                self.fail(msg.clone());
                return Err(Error::Poisoned(msg));
            }
        }
        if pos <= self.sync.lock().synced {
            return Ok(());
        }
        if let Err(e) = sync_data(&file, FSYNC_FAILPOINT) {
            let msg = format!("syncing commitlog segment {}: {e}", pos.segment);
            self.fail(msg.clone());
            return Err(Error::Poisoned(msg));
        }
        self.advance_synced(pos);
        Ok(())
    }

    fn run_syncer(&self) {
        let window = self.mode.window();
        // When the last fsync started (`None`: never, so the log is idle).
        let mut last_sync: Option<std::time::Instant> = None;
        loop {
            if self.mode.waits_for_sync() {
                // Group commit: sleep only while idle. Writes that arrive
                // during an fsync set `pending` and form the next group, so
                // an idle log fsyncs at once and a busy one back to back.
                let mut p = self.pending.lock();
                while !*p && !self.shutdown.load(Ordering::Acquire) {
                    self.pending_cv.wait(&mut p);
                }
                *p = false;
            } else {
                let mut p = self.pending.lock();
                if !self.shutdown.load(Ordering::Acquire) {
                    self.pending_cv
                        .wait_for(&mut p, PERIODIC_WRITE_OUT.min(window));
                }
            }
            if self.shutdown.load(Ordering::Acquire) {
                return;
            }
            if self.mode.waits_for_sync() {
                // An optional spacing (`window_ms`, default 0): under load,
                // fsyncs start at least that far apart; an idle log (last
                // fsync longer ago than the window) never waits.
                if let Some(since) = last_sync.map(|t| t.elapsed()) {
                    if since < window {
                        std::thread::sleep(window - since);
                    }
                }
            } else if last_sync
                .get_or_insert_with(std::time::Instant::now)
                .elapsed()
                < window
            {
                // Periodic: hand the buffer to the kernel often, so a process
                // crash loses at most a few milliseconds; fsync every period.
                let out = self.take_out(&mut self.active.lock());
                if self.finish_out(out).is_err() {
                    return;
                }
                continue;
            }
            last_sync = Some(std::time::Instant::now());
            if self.sync_now().is_err() {
                return;
            }
        }
    }
}

impl Shared {
    /// Creates each segment asked for (see [`CommitLog::append`]) ahead of
    /// its roll.
    fn run_preparer(&self) {
        loop {
            let id = {
                let mut p = self.prepare.lock();
                while p.is_none() && !self.shutdown.load(Ordering::Acquire) {
                    self.prepare_cv.wait(&mut p);
                }
                if self.shutdown.load(Ordering::Acquire) {
                    return;
                }
                p.take()
            };
            let Some(id) = id else { continue };
            let path = spare_path(&self.dir, id);
            let _ = fs::remove_file(&path); // left by a crash
            match create_segment_file(&path, id, self.segment_bytes) {
                Ok(f) => {
                    let mut a = self.active.lock();
                    if a.segment + 1 == id && a.spare.is_none() {
                        a.spare = Some((id, f));
                    } else {
                        // The roll came first and created it itself.
                        drop(a);
                        let _ = fs::remove_file(&path);
                    }
                }
                // Not fatal: the roll creates the segment itself.
                Err(e) => tracing::warn!(error = %e, "preparing commitlog segment {id}"),
            }
        }
    }
}

/// What replaying one segment found.
pub struct SegmentReplay {
    pub records: Vec<Replayed>,
    /// Set when the segment ended in a torn record that was cut off.
    pub truncated_at: Option<u64>,
}

/// Reads every record of a segment. A torn tail in the last segment (a crash
/// mid-write) is cut off with a warning; any other damage is an error naming
/// file and offset, unless `skip_corrupt` asks to log it and go on.
pub fn replay_segment(
    dir: &Path,
    id: u64,
    is_last: bool,
    skip_corrupt: bool,
) -> Result<SegmentReplay> {
    let path = segment_path(dir, id);
    let data = fs::read(&path).ctx(|| format!("reading {}", path.display()))?;
    let corrupt = |offset: u64, detail: &str| Error::Corruption {
        file: path.clone(),
        offset,
        detail: detail.to_string(),
    };
    let mut out = SegmentReplay {
        records: Vec::new(),
        truncated_at: None,
    };
    let header_ok = data.len() >= HEADER_LEN as usize
        && &data[..8] == MAGIC
        && data[8..16] == id.to_le_bytes()
        && data[16..20] == crc32fast::hash(&data[..16]).to_le_bytes();
    if !header_ok {
        if is_last && data.len() < HEADER_LEN as usize {
            tracing::warn!(file = %path.display(), "commitlog segment with a torn header: ignoring it");
            out.truncated_at = Some(0);
            return Ok(out);
        }
        return Err(corrupt(0, "bad segment header"));
    }
    let data = bytes::Bytes::from(data);
    let mut off = HEADER_LEN as usize;
    let rest_is_zero = |from: usize| data[from..].iter().all(|b| *b == 0);
    while off < data.len() {
        // Classify damage: a torn tail only ever happens at the end of the
        // last segment; anything followed by more data is corruption.
        let torn_or = |detail: &str, tail: bool| -> Result<bool> {
            if is_last && tail {
                Ok(true)
            } else if skip_corrupt {
                tracing::error!(file = %path.display(), offset = off, detail, "skipping corrupt commitlog data");
                Ok(false)
            } else {
                Err(corrupt(off as u64, detail))
            }
        };
        // Zeros to the end: the unwritten part of an allocated segment.
        if data[off..(off + 8).min(data.len())].iter().all(|b| *b == 0) && rest_is_zero(off) {
            break;
        }
        if data.len() - off < 8 {
            if torn_or("truncated record header", true)? {
                out.truncated_at = Some(off as u64);
            }
            break;
        }
        let len_bytes = &data[off..off + 4];
        let len =
            u32::from_le_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]) as usize;
        let len_crc =
            u32::from_le_bytes([data[off + 4], data[off + 5], data[off + 6], data[off + 7]]);
        if crc32fast::hash(len_bytes) != len_crc {
            if torn_or("bad record length checksum", rest_is_zero(off))? {
                out.truncated_at = Some(off as u64);
            }
            break; // the length cannot be trusted: nothing after it can be found
        }
        let end = off + 8 + len + 4;
        if end > data.len() {
            if torn_or("record runs past the end of the segment", true)? {
                out.truncated_at = Some(off as u64);
            }
            break;
        }
        let payload = data.slice(off + 8..off + 8 + len);
        let crc = u32::from_le_bytes([data[end - 4], data[end - 3], data[end - 2], data[end - 1]]);
        if crc32fast::hash(&payload) != crc {
            let tail = end == data.len() || rest_is_zero(end);
            if torn_or("bad record checksum", tail)? {
                out.truncated_at = Some(off as u64);
                break;
            }
            off = end;
            continue;
        }
        out.records.push(Replayed {
            position: Position {
                segment: id,
                offset: end as u64,
            },
            payload,
        });
        off = end;
    }
    if let Some(at) = out.truncated_at {
        tracing::warn!(file = %path.display(), offset = at, "torn commitlog tail (crash mid-write): truncating");
        let f = OpenOptions::new()
            .write(true)
            .open(&path)
            .ctx(|| format!("opening {}", path.display()))?;
        f.set_len(at.max(HEADER_LEN))
            .ctx(|| format!("truncating {}", path.display()))?;
        sync_all(&f, FSYNC_FAILPOINT).ctx(|| format!("syncing {}", path.display()))?;
    }
    Ok(out)
}

/// Deletes replayed segments once their data is safely in SSTables.
pub fn delete_segments(dir: &Path, ids: &[u64]) -> Result<()> {
    for id in ids {
        let path = segment_path(dir, *id);
        fs::remove_file(&path).ctx(|| format!("deleting {}", path.display()))?;
    }
    if !ids.is_empty() {
        fsync_dir_at(dir, FSYNC_FAILPOINT)?;
    }
    Ok(())
}
