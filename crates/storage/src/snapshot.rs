//! Snapshots: hard links to a table's SSTables (and their index components,
//! `sst-N.sai`) under `<table dir>/snapshots/<tag>/`, with a
//! `manifest.json` naming the table.
//!
//! A snapshot costs no space until compaction deletes the SSTables it links
//! to. It outlives DROP TABLE (the dropped table's directory keeps only its
//! `snapshots/`) until it is cleared. Restoring is the operator's copy of the
//! snapshot's `sst-*` files into a table's `import/` directory and an
//! import ([`crate::StorageEngine::import_sstables`]), as Cassandra's
//! `nodetool refresh`.

use std::fs;
use std::path::{Path, PathBuf};

use gyre_common::LocalTime;
use serde::{Deserialize, Serialize};

use crate::commitlog::fsync_dir;
use crate::error::IoContext;
use crate::{Error, Result, TableId};

/// The subdirectory of a table directory holding its snapshots.
pub const SNAPSHOTS_DIR: &str = "snapshots";
/// The subdirectory of a table directory that imports load SSTables from.
pub const IMPORT_DIR: &str = "import";
const MANIFEST: &str = "manifest.json";

/// One table's snapshot on disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub tag: String,
    pub table: TableId,
    /// The table's name as its options gave it (`keyspace.table`), kept so
    /// that a snapshot of a dropped table still says what it was.
    pub name: String,
    /// When it was taken (seconds since the Unix epoch, engine clock).
    pub created_at: LocalTime,
    /// The SSTable files in it.
    pub files: Vec<String>,
    /// Their total size (shared with the live table until compaction).
    pub bytes: u64,
    /// Where it is (empty in the manifest file itself).
    #[serde(default)]
    pub dir: PathBuf,
}

/// Checks a snapshot tag: it becomes a directory name, so only letters,
/// digits, `-`, `_` and `.` (not first), at most 200 of them.
pub fn validate_tag(tag: &str) -> Result<()> {
    let ok = !tag.is_empty()
        && tag.len() <= 200
        && !tag.starts_with('.')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "invalid snapshot tag {tag:?}: use 1 to 200 letters, digits, '-', '_' or '.' (not first)"
        )))
    }
}

/// The directory of snapshot `tag` of the table in `table_dir`.
pub fn snapshot_dir(table_dir: &Path, tag: &str) -> PathBuf {
    table_dir.join(SNAPSHOTS_DIR).join(tag)
}

/// Hard-links `files` into a new snapshot directory and writes its
/// manifest. Built under a temporary name and renamed, so a snapshot is
/// either complete or absent; refuses a tag that exists.
pub(crate) fn create(
    table_dir: &Path,
    tag: &str,
    mut info: SnapshotInfo,
    files: &[PathBuf],
) -> Result<SnapshotInfo> {
    validate_tag(tag)?;
    let dir = snapshot_dir(table_dir, tag);
    if dir.exists() {
        return Err(Error::SnapshotExists(tag.to_string()));
    }
    let parent = table_dir.join(SNAPSHOTS_DIR);
    let tmp = parent.join(format!(".tmp-{tag}"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).ctx(|| format!("removing {}", tmp.display()))?;
    }
    fs::create_dir_all(&tmp).ctx(|| format!("creating {}", tmp.display()))?;
    let res = (|| -> Result<()> {
        for f in files {
            let name = f
                .file_name()
                .ok_or_else(|| Error::InvalidArgument(format!("{} is no file", f.display())))?;
            let link = tmp.join(name);
            fs::hard_link(f, &link).ctx(|| format!("linking {}", link.display()))?;
            info.bytes += fs::metadata(&link)
                .ctx(|| format!("reading {}", link.display()))?
                .len();
            info.files.push(name.to_string_lossy().into_owned());
        }
        let body = serde_json::to_vec_pretty(&info).map_err(|e| Error::Config(e.to_string()))?;
        let manifest = tmp.join(MANIFEST);
        fs::write(&manifest, body).ctx(|| format!("writing {}", manifest.display()))?;
        fs::File::open(&manifest)
            .and_then(|f| f.sync_all())
            .ctx(|| format!("syncing {}", manifest.display()))?;
        fsync_dir(&tmp)?;
        fs::rename(&tmp, &dir).ctx(|| format!("renaming {}", tmp.display()))?;
        fsync_dir(&parent)
    })();
    if let Err(e) = res {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    info.dir = dir;
    Ok(info)
}

/// Links (or, across file systems, copies) a snapshot's SSTables into an
/// import directory, refusing to overwrite a file there.
pub(crate) fn stage(info: &SnapshotInfo, import: &Path) -> Result<()> {
    fs::create_dir_all(import).ctx(|| format!("creating {}", import.display()))?;
    for name in &info.files {
        let plain = Path::new(name)
            .file_name()
            .is_some_and(|n| n == name.as_str());
        if !plain || !(name.ends_with(".db") || name.ends_with(".sai")) {
            return Err(Error::Corruption {
                file: info.dir.join(MANIFEST),
                offset: 0,
                detail: format!("{name:?} is not an SSTable or index component file name"),
            });
        }
        let src = info.dir.join(name);
        let dest = import.join(format!("{}-{name}", info.tag));
        if dest.exists() {
            return Err(Error::InvalidArgument(format!(
                "{} exists already; import or remove it first",
                dest.display()
            )));
        }
        if fs::hard_link(&src, &dest).is_err() {
            fs::copy(&src, &dest)
                .ctx(|| format!("copying {} to {}", src.display(), dest.display()))?;
        }
    }
    fsync_dir(import)
}

/// The snapshots of every table directory under `data_dir`, including
/// those of dropped tables, by tag then table name.
pub(crate) fn list(data_dir: &Path) -> Result<Vec<SnapshotInfo>> {
    let mut out = Vec::new();
    for table in read_dir(data_dir)? {
        let snaps = table.join(SNAPSHOTS_DIR);
        if !snaps.is_dir() {
            continue;
        }
        for dir in read_dir(&snaps)? {
            let hidden = dir
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            let manifest = dir.join(MANIFEST);
            if hidden || !manifest.exists() {
                continue;
            }
            let body = fs::read(&manifest).ctx(|| format!("reading {}", manifest.display()))?;
            let mut info: SnapshotInfo =
                serde_json::from_slice(&body).map_err(|e| Error::Corruption {
                    file: manifest.clone(),
                    offset: 0,
                    detail: e.to_string(),
                })?;
            info.dir = dir;
            out.push(info);
        }
    }
    out.sort_by(|a, b| (&a.tag, &a.name).cmp(&(&b.tag, &b.name)));
    Ok(out)
}

/// Removes the snapshots with `tag` (all when `None`) of `table` (all when
/// `None`), and the directories of dropped tables left with none.
pub(crate) fn clear(
    data_dir: &Path,
    tag: Option<&str>,
    table: Option<TableId>,
) -> Result<Vec<SnapshotInfo>> {
    let mut removed = Vec::new();
    for info in list(data_dir)? {
        if tag.is_some_and(|t| t != info.tag) || table.is_some_and(|t| t != info.table) {
            continue;
        }
        fs::remove_dir_all(&info.dir).ctx(|| format!("removing {}", info.dir.display()))?;
        removed.push(info);
    }
    // A dropped table's directory lives on only for its snapshots.
    for table_dir in read_dir(data_dir)? {
        let snaps = table_dir.join(SNAPSHOTS_DIR);
        if snaps.is_dir() && !table_dir.join("table.json").exists() && read_dir(&snaps)?.is_empty()
        {
            fs::remove_dir_all(&table_dir).ctx(|| format!("removing {}", table_dir.display()))?;
        }
    }
    fsync_dir(data_dir)?;
    Ok(removed)
}

/// The subdirectories of `dir`.
fn read_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).ctx(|| format!("listing {}", dir.display()))? {
        let path = e.ctx(|| format!("listing {}", dir.display()))?.path();
        if path.is_dir() {
            out.push(path);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_plain_names() {
        for good in ["t1", "before-upgrade", "2026.12.06_x"] {
            assert!(validate_tag(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            ".hidden",
            "a b",
            &"x".repeat(201),
        ] {
            assert!(validate_tag(bad).is_err(), "{bad}");
        }
    }
}
