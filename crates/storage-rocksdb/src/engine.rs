use std::collections::HashMap;
use std::ffi::CString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use gyre_common::codec::{self, Reader};
use gyre_common::{lww, DecoratedKey, LocalTime, Partition};
use gyre_storage::{
    assemble_scan_page, finish_read, scan_start_bound, validate_update, Clock, EngineStats, Error,
    ReadFilter, Result, ScanPage, ScanRequest, StorageEngine, SyncMode, SystemClock, TableId,
    TableOptions, TableStats,
};
use parking_lot::{Mutex, RwLock};
use rocksdb::{
    BlockBasedOptions, BottommostLevelCompaction, ColumnFamilyDescriptor, CompactOptions,
    DBWithThreadMode, Direction, IteratorMode, MergeOperands, MultiThreaded, Options, ReadOptions,
    SliceTransform, WriteBatch, WriteOptions,
};

use crate::purge::{PurgeFilterFactory, PurgeState};

/// Multi-threaded mode: column families are created and dropped through
/// `&self` while other threads read and write.
type DB = DBWithThreadMode<MultiThreaded>;

const META_CF: &str = "gyre_meta";
const HEADER: u8 = 0x00;
const ROW: u8 = 0x01;
const END: u8 = 0x02;

/// Settings of a [`RocksEngine`].
#[derive(Clone, Debug)]
pub struct RocksConfig {
    pub dir: PathBuf,
    pub sync: SyncMode,
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    /// Size of one memtable of a table (RocksDB's `write_buffer_size`).
    pub memtable_bytes: usize,
}

impl RocksConfig {
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        RocksConfig {
            dir: dir.into(),
            sync: SyncMode::default(),
            max_key_bytes: u16::MAX as usize,
            max_value_bytes: 64 << 20,
            memtable_bytes: 64 << 20,
        }
    }
}

fn rocks_err(context: &str) -> impl Fn(rocksdb::Error) -> Error + '_ {
    move |e| Error::Io {
        context: context.to_string(),
        source: std::io::Error::other(e.into_string()),
    }
}

/// Appends `b` so that byte order of the escaped form is the order of `b`
/// and the result is prefix-free.
fn escape(out: &mut Vec<u8>, b: &[u8]) {
    escape_unterminated(out, b);
    out.extend_from_slice(&[0, 0]);
}

/// The escaped form of `b` without its terminator: it sorts before the
/// escaped form of every key that starts with `b` and after every smaller
/// one, so it is where an iteration over keys `>= b` starts.
fn escape_unterminated(out: &mut Vec<u8>, b: &[u8]) {
    for &x in b {
        out.push(x);
        if x == 0 {
            out.push(0xff);
        }
    }
}

/// Reads an escaped string from `b`; returns it and the bytes consumed.
fn unescape(b: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == 0 {
            match b.get(i + 1)? {
                0 => return Some((out, i + 2)),
                0xff => out.push(0),
                _ => return None,
            }
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    None
}

fn token_bytes(token: i64) -> [u8; 8] {
    ((token as u64) ^ (1 << 63)).to_be_bytes()
}

fn partition_prefix(key: &DecoratedKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + key.key.len());
    out.extend_from_slice(&token_bytes(key.token));
    escape(&mut out, &key.key);
    out
}

/// Splits a record key: the length of its partition prefix (token and
/// escaped partition key) and whether it is a row (else the header).
pub(crate) fn split_key(k: &[u8]) -> Option<(usize, bool)> {
    let rest = k.get(8..)?;
    let mut i = 0;
    loop {
        match (rest.get(i)?, rest.get(i + 1)?) {
            (0, 0) => break,
            (0, _) => i += 2,
            _ => i += 1,
        }
    }
    let prefix_len = 8 + i + 2;
    match *k.get(prefix_len)? {
        HEADER => Some((prefix_len, false)),
        ROW => Some((prefix_len, true)),
        _ => None,
    }
}

fn decode_key(k: &[u8]) -> Option<(DecoratedKey, Option<Bytes>)> {
    let token = (u64::from_be_bytes(k.get(..8)?.try_into().ok()?) ^ (1 << 63)) as i64;
    let (pk, used) = unescape(&k[8..])?;
    let rest = &k[8 + used..];
    let ck = match *rest.first()? {
        HEADER => None,
        ROW => Some(Bytes::from(unescape(&rest[1..])?.0)),
        _ => return None,
    };
    Some((
        DecoratedKey {
            token,
            key: Bytes::from(pk),
        },
        ck,
    ))
}

pub(crate) fn encode_fragment(p: &Partition) -> Vec<u8> {
    let mut out = Vec::new();
    codec::encode_partition(&mut out, p);
    out
}

pub(crate) fn decode_fragment(v: &[u8]) -> Option<Partition> {
    let b = Bytes::copy_from_slice(v);
    codec::decode_partition(&mut Reader::new(&b)).ok()
}

/// RocksDB's merge operator: reconciles fragments with the shared LWW rule.
fn merge_fragments(
    _key: &[u8],
    existing: Option<&[u8]>,
    operands: &MergeOperands,
) -> Option<Vec<u8>> {
    let mut acc: Option<Partition> = existing.and_then(decode_fragment);
    for op in operands {
        let Some(p) = decode_fragment(op) else {
            tracing::error!("undecodable merge operand");
            continue;
        };
        match &mut acc {
            None => acc = Some(p),
            Some(a) => lww::merge_partitions(a, p),
        }
    }
    acc.map(|p| encode_fragment(&p))
}

fn table_options(config: &RocksConfig, purge: &Arc<PurgeState>) -> Options {
    let mut o = Options::default();
    o.set_write_buffer_size(config.memtable_bytes);
    o.set_merge_operator_associative("gyre_lww", merge_fragments);
    o.set_compaction_filter_factory(PurgeFilterFactory {
        state: purge.clone(),
        name: CString::from(c"gyre_purge"),
    });
    o.set_compression_type(rocksdb::DBCompressionType::Lz4);
    // Reads are iterations over one partition, never point gets: a bloom
    // filter on the token (the first 8 key bytes) lets them skip files.
    let mut table = BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    table.set_whole_key_filtering(false);
    o.set_block_based_table_factory(&table);
    o.set_prefix_extractor(SliceTransform::create_fixed_prefix(8));
    o
}

/// Read options for iterations across partitions (past the token prefix
/// the bloom filters are keyed on).
fn total_order() -> ReadOptions {
    let mut ro = ReadOptions::default();
    ro.set_total_order_seek(true);
    ro
}

/// The RocksDB engine.
pub struct RocksEngine {
    db: Arc<DB>,
    config: RocksConfig,
    tables: Mutex<Vec<(TableId, TableOptions)>>,
    /// Per-table purge state, shared with that table's compaction filters;
    /// kept across truncation (the column family is recreated).
    purge: RwLock<HashMap<TableId, Arc<PurgeState>>>,
    clock: Arc<dyn Clock>,
    /// One `compact` at a time: a second one's reset would reopen the
    /// first one's purge window on unflushed writes.
    compacting: Mutex<()>,
    stop: Arc<AtomicBool>,
    syncer: Mutex<Option<JoinHandle<()>>>,
}

impl RocksEngine {
    /// Opens (or creates) an engine with the wall clock.
    pub fn open(config: RocksConfig) -> Result<RocksEngine> {
        Self::open_with_clock(config, Arc::new(SystemClock))
    }

    /// Opens an engine whose compactions take "now" (TTL expiry, gc grace)
    /// from `clock`.
    pub fn open_with_clock(config: RocksConfig, clock: Arc<dyn Clock>) -> Result<RocksEngine> {
        std::fs::create_dir_all(&config.dir).map_err(|e| Error::Io {
            context: format!("creating {}", config.dir.display()),
            source: e,
        })?;
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        // One filter per compaction sees its keys in order (the filter
        // relies on a partition's header coming before its rows).
        db_opts.set_max_subcompactions(1);
        let existing = DB::list_cf(&db_opts, &config.dir).unwrap_or_default();
        let mut purge = HashMap::new();
        let mut cfs: Vec<ColumnFamilyDescriptor> = Vec::new();
        for name in &existing {
            if name == "default" || name == META_CF {
                continue;
            }
            let Ok(id) = uuid::Uuid::parse_str(name) else {
                tracing::warn!(column_family = %name, "ignoring an unknown column family");
                continue;
            };
            let state = PurgeState::new(clock.clone());
            cfs.push(ColumnFamilyDescriptor::new(
                name,
                table_options(&config, &state),
            ));
            purge.insert(TableId(id), state);
        }
        cfs.push(ColumnFamilyDescriptor::new(META_CF, Options::default()));
        let db = DB::open_cf_descriptors(&db_opts, &config.dir, cfs)
            .map_err(rocks_err("opening RocksDB"))?;
        let db = Arc::new(db);
        let mut tables = Vec::new();
        if let Some(meta) = db.cf_handle(META_CF) {
            for item in db.iterator_cf(&meta, IteratorMode::Start) {
                let (k, v) = item.map_err(rocks_err("reading table metadata"))?;
                let id = uuid::Uuid::from_slice(&k).map_err(|e| Error::Config(e.to_string()))?;
                let opts: TableOptions =
                    serde_json::from_slice(&v).map_err(|e| Error::Config(e.to_string()))?;
                if let Some(state) = purge.get(&TableId(id)) {
                    state.set_gc_grace(opts.gc_grace_seconds);
                }
                tables.push((TableId(id), opts));
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let syncer = match config.sync {
            SyncMode::Periodic { period_ms } => {
                let (db, stop) = (db.clone(), stop.clone());
                Some(
                    std::thread::Builder::new()
                        .name("rocks-wal-sync".into())
                        .spawn(move || {
                            while !stop.load(Ordering::Acquire) {
                                std::thread::sleep(Duration::from_millis(period_ms.min(100)));
                                if let Err(e) = db.flush_wal(true) {
                                    tracing::error!(error = %e, "syncing the RocksDB WAL");
                                }
                            }
                        })
                        .map_err(|e| Error::Io {
                            context: "starting the WAL syncer".into(),
                            source: e,
                        })?,
                )
            }
            _ => None,
        };
        Ok(RocksEngine {
            db,
            config,
            tables: Mutex::new(tables),
            purge: RwLock::new(purge),
            clock,
            compacting: Mutex::new(()),
            stop,
            syncer: Mutex::new(syncer),
        })
    }

    fn cf(&self, table: TableId) -> Result<Arc<rocksdb::BoundColumnFamily<'_>>> {
        self.db
            .cf_handle(&table.to_string())
            .ok_or(Error::UnknownTable(table))
    }

    fn purge_state(&self, table: TableId) -> Result<Arc<PurgeState>> {
        self.purge
            .read()
            .get(&table)
            .cloned()
            .ok_or(Error::UnknownTable(table))
    }

    /// Counts the records stored for `table` (header and row keys), for
    /// tests and diagnostics of what compaction dropped.
    #[doc(hidden)]
    pub fn record_count(&self, table: TableId) -> Result<u64> {
        let cf = self.cf(table)?;
        let mut n = 0;
        for item in self
            .db
            .iterator_cf_opt(&cf, total_order(), IteratorMode::Start)
        {
            item.map_err(rocks_err("counting records"))?;
            n += 1;
        }
        Ok(n)
    }

    fn write_options(&self) -> WriteOptions {
        let mut w = WriteOptions::default();
        w.set_sync(!matches!(self.config.sync, SyncMode::Periodic { .. }));
        w
    }

    /// Reads every fragment of one partition (header and rows in the
    /// filter) and merges them.
    fn read_raw(
        &self,
        table: TableId,
        key: &DecoratedKey,
        clustering: &gyre_storage::ClusteringFilter,
    ) -> Result<Option<Partition>> {
        let cf = self.cf(table)?;
        let prefix = partition_prefix(key);
        let mut upper = prefix.clone();
        upper.push(END);
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(upper);
        ro.set_prefix_same_as_start(true);
        let decode = |v: &[u8]| {
            decode_fragment(v).ok_or_else(|| Error::Corruption {
                file: self.config.dir.clone(),
                offset: 0,
                detail: "undecodable RocksDB value".into(),
            })
        };
        let mut out: Option<Partition> = None;
        // A slice that starts inside the partition: the header (deletion,
        // static row, range tombstones) by key, then the rows from the
        // slice's first clustering key on, instead of stepping over every
        // row before it.
        let seek = clustering.seek_key();
        let from = if seek.is_empty() {
            prefix.clone()
        } else {
            let mut header = prefix.clone();
            header.push(HEADER);
            if let Some(v) = self
                .db
                .get_pinned_cf(&cf, &header)
                .map_err(rocks_err("reading a partition header"))?
            {
                out = Some(decode(&v)?);
            }
            let mut from = prefix.clone();
            from.push(ROW);
            escape_unterminated(&mut from, &seek);
            from
        };
        let it = self
            .db
            .iterator_cf_opt(&cf, ro, IteratorMode::From(&from, Direction::Forward));
        for item in it {
            let (k, v) = item.map_err(rocks_err("reading a partition"))?;
            let Some((_, ck)) = decode_key(&k) else {
                continue;
            };
            if let Some(ck) = &ck {
                if clustering.is_past_end(ck) {
                    break;
                }
                if !clustering.contains(ck) {
                    continue;
                }
            }
            let frag = decode(&v)?;
            match &mut out {
                None => out = Some(frag),
                Some(a) => lww::merge_partitions(a, frag),
            }
        }
        Ok(out)
    }
}

impl Drop for RocksEngine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.syncer.lock().take() {
            let _ = h.join();
        }
        if let Err(e) = self.db.flush_wal(true) {
            tracing::error!(error = %e, "syncing the RocksDB WAL at close");
        }
    }
}

impl StorageEngine for RocksEngine {
    fn create_table(&self, id: TableId, options: TableOptions) -> Result<()> {
        let state = self
            .purge
            .write()
            .entry(id)
            .or_insert_with(|| PurgeState::new(self.clock.clone()))
            .clone();
        state.set_gc_grace(options.gc_grace_seconds);
        if self.db.cf_handle(&id.to_string()).is_none() {
            self.db
                .create_cf(id.to_string(), &table_options(&self.config, &state))
                .map_err(rocks_err("creating a column family"))?;
        }
        let meta = self.db.cf_handle(META_CF).ok_or(Error::UnknownTable(id))?;
        let body = serde_json::to_vec(&options).map_err(|e| Error::Config(e.to_string()))?;
        self.db
            .put_cf_opt(&meta, id.0.as_bytes(), body, &self.write_options())
            .map_err(rocks_err("saving table options"))?;
        let mut tables = self.tables.lock();
        tables.retain(|(t, _)| *t != id);
        tables.push((id, options));
        Ok(())
    }

    fn drop_table(&self, id: TableId) -> Result<()> {
        if self.db.cf_handle(&id.to_string()).is_some() {
            self.db
                .drop_cf(&id.to_string())
                .map_err(rocks_err("dropping a column family"))?;
        }
        if let Some(meta) = self.db.cf_handle(META_CF) {
            self.db
                .delete_cf_opt(&meta, id.0.as_bytes(), &self.write_options())
                .map_err(rocks_err("removing table options"))?;
        }
        self.tables.lock().retain(|(t, _)| *t != id);
        self.purge.write().remove(&id);
        Ok(())
    }

    fn truncate_table(&self, id: TableId) -> Result<()> {
        self.cf(id)?;
        let state = self.purge_state(id)?;
        self.db
            .drop_cf(&id.to_string())
            .map_err(rocks_err("truncating"))?;
        self.db
            .create_cf(id.to_string(), &table_options(&self.config, &state))
            .map_err(rocks_err("truncating"))?;
        Ok(())
    }

    fn tables(&self) -> Vec<(TableId, TableOptions)> {
        self.tables.lock().clone()
    }

    fn apply(&self, table: TableId, update: Partition) -> Result<()> {
        validate_update(
            &update,
            self.config.max_key_bytes,
            self.config.max_value_bytes,
        )?;
        let cf = self.cf(table)?;
        let purge = self.purge_state(table)?;
        let lowest = update
            .timestamp_range()
            .map_or(gyre_common::Timestamp::MIN, |(lo, _)| lo);
        let prefix = partition_prefix(&update.key);
        let mut batch = WriteBatch::default();
        let Partition {
            key,
            deletion,
            range_tombstones,
            static_row,
            rows,
        } = update;
        if deletion.is_some() || !range_tombstones.is_empty() || static_row.is_some() {
            let header = Partition {
                key: key.clone(),
                deletion,
                range_tombstones,
                static_row,
                rows: Default::default(),
            };
            let mut k = prefix.clone();
            k.push(HEADER);
            batch.merge_cf(&cf, k, encode_fragment(&header));
        }
        for (ck, row) in rows {
            let mut k = prefix.clone();
            k.push(ROW);
            escape(&mut k, &ck);
            let mut frag = Partition::new(key.clone());
            frag.rows.insert(ck, row);
            batch.merge_cf(&cf, k, encode_fragment(&frag));
        }
        // The purge state learns the timestamps before RocksDB holds them.
        purge.note_write(lowest, || {
            self.db
                .write_opt(batch, &self.write_options())
                .map_err(rocks_err("writing a mutation"))
        })
    }

    fn read(
        &self,
        table: TableId,
        key: &DecoratedKey,
        filter: &ReadFilter,
        now: LocalTime,
    ) -> Result<Option<Partition>> {
        Ok(self
            .read_raw(table, key, &filter.clustering)?
            .and_then(|p| finish_read(p, filter, now)))
    }

    fn scan(&self, table: TableId, req: &ScanRequest, now: LocalTime) -> Result<ScanPage> {
        let Some(start) = scan_start_bound(&req.start) else {
            return Ok(ScanPage {
                partitions: Vec::new(),
                resume: None,
            });
        };
        let cf = self.cf(table)?;
        let from = match &start {
            std::ops::Bound::Unbounded => Vec::new(),
            std::ops::Bound::Included(k) | std::ops::Bound::Excluded(k) => partition_prefix(k),
        };
        let mut it = self
            .db
            .iterator_cf_opt(
                &cf,
                total_order(),
                IteratorMode::From(&from, Direction::Forward),
            )
            .peekable();
        let clustering = req.filter.clustering.clone();
        let next = || -> Result<Option<Partition>> {
            let mut current: Option<Partition> = None;
            loop {
                let Some(item) = it.peek() else {
                    return Ok(current);
                };
                let (k, v) = item
                    .as_ref()
                    .map_err(|e| rocks_err("scanning")(e.clone()))?;
                let Some((dk, ck)) = decode_key(k) else {
                    it.next();
                    continue;
                };
                let before_start = match &start {
                    std::ops::Bound::Excluded(s) => dk <= *s,
                    std::ops::Bound::Included(s) => dk < *s,
                    std::ops::Bound::Unbounded => false,
                };
                if before_start {
                    it.next();
                    continue;
                }
                if current.as_ref().is_some_and(|c| c.key != dk) {
                    return Ok(current);
                }
                let wanted = ck.as_ref().is_none_or(|c| clustering.contains(c));
                if wanted {
                    let frag = decode_fragment(v).ok_or_else(|| Error::Corruption {
                        file: self.config.dir.clone(),
                        offset: 0,
                        detail: "undecodable RocksDB value".into(),
                    })?;
                    match &mut current {
                        None => current = Some(frag),
                        Some(c) => lww::merge_partitions(c, frag),
                    }
                } else if current.is_none() {
                    current = Some(Partition::new(dk));
                }
                it.next();
            }
        };
        assemble_scan_page(req, now, next)
    }

    fn flush(&self, table: Option<TableId>) -> Result<()> {
        let ids: Vec<TableId> = match table {
            Some(t) => vec![t],
            None => self.tables.lock().iter().map(|(t, _)| *t).collect(),
        };
        for id in ids {
            let cf = self.cf(id)?;
            self.db.flush_cf(&cf).map_err(rocks_err("flushing"))?;
        }
        Ok(())
    }

    /// A major compaction in two passes. The first (after a flush) turns
    /// every key's merge operands into one value at the bottom level; the
    /// second runs inside the purge window, where the compaction filter may
    /// drop tombstones past gc grace (see `purge.rs` for the rules).
    fn compact(&self, table: TableId) -> Result<()> {
        let _one = self.compacting.lock();
        let cf = self.cf(table)?;
        let purge = self.purge_state(table)?;
        purge.reset_written();
        self.db.flush_cf(&cf).map_err(rocks_err("flushing"))?;
        let mut o = CompactOptions::default();
        o.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
        self.db
            .compact_range_cf_opt(&cf, None::<&[u8]>, None::<&[u8]>, &o);
        purge.open_window();
        self.db
            .compact_range_cf_opt(&cf, None::<&[u8]>, None::<&[u8]>, &o);
        purge.close_window();
        Ok(())
    }

    fn table_stats(&self, table: TableId) -> Result<TableStats> {
        let cf = self.cf(table)?;
        let prop = |name: &str| -> u64 {
            self.db
                .property_int_value_cf(&cf, name)
                .ok()
                .flatten()
                .unwrap_or(0)
        };
        // SST files per level (RocksDB's default has 7 levels); a string
        // property, not an integer one.
        let sstables_per_level: Vec<usize> = (0..7)
            .map(|l| {
                self.db
                    .property_value_cf(&cf, format!("rocksdb.num-files-at-level{l}").as_str())
                    .ok()
                    .flatten()
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0)
            })
            .collect();
        Ok(TableStats {
            sstable_count: sstables_per_level.iter().sum(),
            sstables_per_level,
            compaction_pending: prop("rocksdb.compaction-pending") > 0
                || prop("rocksdb.num-running-compactions") > 0,
            pending_compaction_bytes: prop("rocksdb.estimate-pending-compaction-bytes"),
            disk_bytes: prop("rocksdb.total-sst-files-size"),
            memtable_bytes: prop("rocksdb.cur-size-all-mem-tables"),
            estimated_partitions: prop("rocksdb.estimate-num-keys"),
            ..Default::default()
        })
    }

    fn engine_stats(&self) -> EngineStats {
        EngineStats {
            tables: self.tables.lock().len(),
            ..Default::default()
        }
    }
}
