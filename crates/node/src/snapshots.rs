//! Snapshot routes of the admin endpoint, as `nodetool snapshot`,
//! `listsnapshots`, `clearsnapshot` and `refresh`:
//!
//! - `POST /snapshot` `{"keyspace"?, "table"?, "tag"?}`: flushes and
//!   hard-links the SSTables of one table, a keyspace's tables or every
//!   table; the tag defaults to the time in milliseconds. A tag that any of
//!   those tables has already is refused (409) before anything is taken.
//! - `GET /snapshots`: every snapshot on this node, dropped tables' too.
//! - `POST /snapshots/clear` `{"tag"?, "all"?, "keyspace"?, "table"?}`:
//!   removes snapshots by tag (or all, which must be said), optionally of
//!   one keyspace or table (by the name the snapshot recorded).
//! - `POST /import` `{"keyspace", "table", "tag"?}`: loads the SSTables
//!   copied into the table's `import/` directory, live; with a tag, first
//!   links there the files of that snapshot of the table by that name (a
//!   dropped table's, typically).
//!
//! Like the other admin routes, they take no file system path from the
//! request: tables are resolved through the schema, tags must be plain
//! names, and imports read only the table's own `import/` directory.

use std::time::{SystemTime, UNIX_EPOCH};

use gyre_storage::{Error as StorageError, SnapshotInfo, TableId};
use serde::{Deserialize, Serialize};

use crate::http::Response;
use crate::node::Shared;

/// The body of the snapshot routes.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyspace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Clearing: every snapshot (Cassandra's `--all`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
}

fn json<T: Serialize>(v: &T) -> Response {
    match serde_json::to_vec_pretty(v) {
        Ok(body) => Response::json(200, body),
        Err(e) => Response::text(500, e.to_string()),
    }
}

fn storage_error(e: &StorageError) -> Response {
    let status = match e {
        StorageError::SnapshotExists(_) => 409,
        StorageError::InvalidArgument(_) => 400,
        StorageError::Unsupported(_) => 501,
        _ => 500,
    };
    Response::text(status, format!("{e}\n"))
}

fn parse(body: &[u8]) -> Result<SnapshotRequest, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(SnapshotRequest::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| Response::text(400, format!("invalid snapshot request: {e}\n")))
}

/// The tables a request names: one, a keyspace's, or every table.
fn tables(shared: &Shared, r: &SnapshotRequest) -> Result<Vec<(TableId, String)>, Response> {
    let qp = shared
        .qp
        .get()
        .ok_or_else(|| Response::text(503, "the node is still starting\n"))?;
    let schema = qp.schema();
    let name = |t: &gyre_schema::TableDef| (t.id, format!("{}.{}", t.keyspace, t.name));
    match (&r.keyspace, &r.table) {
        (Some(ks), Some(t)) => schema
            .table(ks, t)
            .map(|d| vec![name(d)])
            .ok_or_else(|| Response::text(400, format!("unknown table {ks}.{t}\n"))),
        (Some(ks), None) => {
            if schema.keyspace(ks).is_none() {
                return Err(Response::text(400, format!("unknown keyspace {ks}\n")));
            }
            Ok(schema.tables_in(ks).map(name).collect())
        }
        (None, Some(_)) => Err(Response::text(400, "a table needs its keyspace\n")),
        (None, None) => Ok(schema.tables().values().map(name).collect()),
    }
}

/// `POST /snapshot`.
pub(crate) fn take(shared: &Shared, body: &[u8]) -> Response {
    let r = match parse(body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let targets = match tables(shared, &r) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let tag = r.tag.clone().unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
            .to_string()
    });
    if let Err(e) = gyre_storage::snapshot::validate_tag(&tag) {
        return storage_error(&e);
    }
    // Refuse an existing tag before taking anything.
    match shared.engine.list_snapshots() {
        Ok(existing) => {
            if existing
                .iter()
                .any(|s| s.tag == tag && targets.iter().any(|(id, _)| *id == s.table))
            {
                return storage_error(&StorageError::SnapshotExists(tag));
            }
        }
        Err(e) => return storage_error(&e),
    }
    let mut taken: Vec<SnapshotInfo> = Vec::new();
    for (id, name) in &targets {
        match shared.engine.snapshot(*id, &tag) {
            Ok(info) => taken.push(info),
            Err(e) => {
                tracing::error!(table = %name, tag, error = %e, "snapshot failed");
                return storage_error(&e);
            }
        }
    }
    tracing::info!(tag, tables = taken.len(), "snapshot taken");
    json(&taken)
}

/// `GET /snapshots`.
pub(crate) fn list(shared: &Shared) -> Response {
    match shared.engine.list_snapshots() {
        Ok(s) => json(&s),
        Err(e) => storage_error(&e),
    }
}

/// `POST /snapshots/clear`.
pub(crate) fn clear(shared: &Shared, body: &[u8]) -> Response {
    let r = match parse(body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if r.tag.is_none() && !r.all {
        return Response::text(
            400,
            "Specify snapshot name or --all (a tag, or \"all\": true)\n",
        );
    }
    if r.tag.is_some() && r.all {
        return Response::text(400, "Specify only one of snapshot name or --all\n");
    }
    if r.table.is_some() && r.keyspace.is_none() {
        return Response::text(400, "a table needs its keyspace\n");
    }
    let existing = match shared.engine.list_snapshots() {
        Ok(s) => s,
        Err(e) => return storage_error(&e),
    };
    let matches = |s: &SnapshotInfo| {
        let (ks, t) = s.name.split_once('.').unwrap_or((s.name.as_str(), ""));
        r.tag.as_ref().is_none_or(|tag| *tag == s.tag)
            && r.keyspace.as_ref().is_none_or(|k| k == ks)
            && r.table.as_ref().is_none_or(|tt| tt == t)
    };
    let mut removed = Vec::new();
    for s in existing.iter().filter(|s| matches(s)) {
        match shared.engine.clear_snapshots(Some(&s.tag), Some(s.table)) {
            Ok(r) => removed.extend(r),
            Err(e) => return storage_error(&e),
        }
    }
    tracing::info!(snapshots = removed.len(), "snapshots cleared");
    json(&removed)
}

/// `POST /import`.
pub(crate) fn import(shared: &Shared, body: &[u8]) -> Response {
    let r = match parse(body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if r.keyspace.is_none() || r.table.is_none() {
        return Response::text(400, "an import needs a keyspace and a table\n");
    }
    let targets = match tables(shared, &r) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let Some((id, name)) = targets.first() else {
        return Response::text(400, "no such table\n");
    };
    let result = match &r.tag {
        None => shared.engine.import_sstables(*id),
        Some(tag) => {
            // The snapshot of the table by that name: the current table's,
            // or a dropped one's.
            let sources: std::collections::BTreeSet<TableId> = match shared.engine.list_snapshots()
            {
                Ok(all) => all
                    .into_iter()
                    .filter(|s| s.tag == *tag && s.name == *name)
                    .map(|s| s.table)
                    .collect(),
                Err(e) => return storage_error(&e),
            };
            match sources.len() {
                0 => return Response::text(400, format!("no snapshot {tag} of {name}\n")),
                1 => {}
                _ => {
                    return Response::text(
                        400,
                        format!("several tables named {name} have a snapshot {tag}\n"),
                    )
                }
            }
            let from = sources.into_iter().next().unwrap_or(*id);
            shared.engine.restore_snapshot(*id, from, tag)
        }
    };
    match result {
        Ok(report) => {
            tracing::info!(table = %name, files = report.files, "SSTables imported");
            json(&report)
        }
        Err(e) => storage_error(&e),
    }
}
