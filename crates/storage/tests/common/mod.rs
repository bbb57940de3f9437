//! Set-up shared by the storage tests.

use gyre_storage::{CompactionOptions, LsmConfig, LsmEngine, StorageEngine, TableId, TableOptions};

/// An engine opened with `config`, holding `table` with compaction only
/// on request (so a test decides when SSTables merge).
pub fn engine_without_compaction(config: LsmConfig, table: TableId) -> LsmEngine {
    let engine = LsmEngine::open(config).expect("open");
    engine
        .create_table(
            table,
            TableOptions {
                compaction: CompactionOptions::None,
                ..Default::default()
            },
        )
        .expect("create");
    engine
}
