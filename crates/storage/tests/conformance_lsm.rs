//! The shared conformance suite run against the native LSM engine.

use std::path::Path;
use std::sync::Arc;

use gyre_storage::conformance::{self, Op};
use gyre_storage::{LsmConfig, LsmEngine, ManualClock, StorageEngine, SyncMode};

fn open(dir: &Path, clock: Arc<ManualClock>) -> gyre_storage::Result<Box<dyn StorageEngine>> {
    let config = LsmConfig {
        sync: SyncMode::Periodic { period_ms: 50 },
        // Small memtables and blocks: background flushes and partitions that
        // span several blocks happen even in short sequences.
        memtable_space_bytes: 64 << 10,
        block_bytes: 256,
        segment_bytes: 16 << 10,
        ..LsmConfig::in_dir(dir)
    };
    Ok(Box::new(LsmEngine::open_with_clock(config, clock)?))
}

#[test]
fn model_test() {
    conformance::run_model_test(&open, 400, 80);
}

#[test]
fn empty_sequence_reads_nothing() {
    conformance::run_ops(&open, &[Op::Flush, Op::Restart]).expect("passes");
}

#[test]
fn regression_row_deletion_survives_restart() {
    use conformance::Op::*;
    let ops = [
        DeleteRow {
            key: 0,
            row: (1, 0),
            ts_skew: 28289,
        },
        Restart,
        Write {
            key: 0,
            row: Some((1, 0)),
            column: 0,
            path: None,
            value: 0,
            ts_skew: 10000,
            ttl: None,
        },
    ];
    conformance::run_ops(&open, &ops).expect("passes");
}
