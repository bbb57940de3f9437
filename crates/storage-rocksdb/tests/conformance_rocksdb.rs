//! The shared conformance suite run against the RocksDB engine, unchanged.
#![cfg(feature = "rocksdb")]

use std::path::Path;
use std::sync::Arc;

use gyre_storage::conformance;
use gyre_storage::{ManualClock, StorageEngine, SyncMode};
use gyre_storage_rocksdb::{RocksConfig, RocksEngine};

fn open(dir: &Path, clock: Arc<ManualClock>) -> gyre_storage::Result<Box<dyn StorageEngine>> {
    Ok(Box::new(RocksEngine::open_with_clock(
        RocksConfig {
            sync: SyncMode::Periodic { period_ms: 50 },
            ..RocksConfig::in_dir(dir.join("rocks"))
        },
        clock,
    )?))
}

#[test]
fn model_test() {
    conformance::run_model_test(&open, 200, 80);
}
