//! SELECT: partition reads and paged scans, turned into result rows.

use std::collections::BTreeSet;
use std::ops::Bound;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use gyre_common::{
    CellName, CellValue, DecoratedKey, LocalTime, Partition, Row, Slice, SliceBound,
};
use gyre_cql::{
    CqlType, Operator, Order, Select, SelectItem, Selection, Selector, TimestampFunction,
};
use gyre_protocol::Consistency;
use gyre_protocol::{ColumnType, Value};
use gyre_schema::{decode_clustering_key, ClusteringOrder, ColumnDef, ColumnKind, TableDef};
use gyre_storage::{ClusteringFilter, ReadFilter, ScanRequest, ScanStart};

use crate::collections::{assemble, is_multicell};
use crate::error::{QueryError, Result};
use crate::functions::{self, function_name, Aggregate, Scalar};
use crate::processor::{
    analyze, clustering, partition_keys, Clustering, Filter, QueryParams, QueryProcessor,
    QueryResult, Restriction,
};
use crate::values::{column_type, term_bytes, term_i64};

const FILTERING: &str = "Cannot execute this query as it might involve data filtering and thus may have unpredictable performance. If you want to execute this query despite the performance unpredictability, use ALLOW FILTERING";

/// Rows fetched per internal scan page when the client does not page.
const INTERNAL_PAGE: usize = 10_000;

#[derive(Debug, Clone)]
pub(crate) enum Item {
    Column(ColumnDef),
    WriteTime(ColumnDef),
    Ttl(ColumnDef),
    /// Cassandra 5.0's `writetime` / `ttl` / `maxwritetime` of a non-frozen
    /// collection or user type (one value per element or field), or of a
    /// field (`path`: positions) of a user type value (`value`: that field,
    /// whose timestamp is null when it is null).
    Timestamps {
        function: TimestampFunction,
        column: ColumnDef,
        path: Vec<usize>,
        value: Box<Item>,
    },
    /// `token(pk...)`: the partition's token.
    Token,
    /// A constant function argument (evaluated once).
    Const(Option<Bytes>),
    /// A scalar function of other items.
    Scalar(Scalar, Vec<Item>),
    /// `toJson(item)`: the item's value as JSON text.
    ToJson(Box<Item>, ColumnType),
    /// `count(*)`.
    Count,
    /// An aggregate of one item (its argument's type).
    Aggregate(Aggregate, CqlType, Box<Item>),
    /// A field (by position) of a user type value.
    Field(Box<Item>, usize),
}

impl Item {
    fn is_aggregate(&self) -> bool {
        matches!(self, Item::Count | Item::Aggregate(..))
    }
}

/// Everything needed to turn stored rows into result rows.
pub(crate) struct Plan<'a> {
    pub(crate) table: &'a TableDef,
    pub(crate) items: &'a [Item],
    /// `=` / `IN` filters applied after the read (ALLOW FILTERING).
    pub(crate) filters: Vec<(ColumnDef, Filter)>,
    /// Whether a partition with only static data yields a row: only when
    /// no clustering restriction could have excluded it.
    pub(crate) static_only_rows: bool,
    pub(crate) now: LocalTime,
    /// What the reads walked over, for `tombstone_warn_threshold`.
    pub(crate) tally: ReadTally,
}

/// Live rows and tombstones a SELECT's reads returned (atomics: the plan is
/// shared across the awaits of its reads).
#[derive(Default)]
pub(crate) struct ReadTally {
    live_rows: std::sync::atomic::AtomicUsize,
    tombstones: std::sync::atomic::AtomicUsize,
}

impl ReadTally {
    fn note(&self, p: &Partition, now: LocalTime) {
        use std::sync::atomic::Ordering::Relaxed;
        let live = p.rows.values().filter(|r| r.is_live(now)).count();
        self.live_rows.fetch_add(live, Relaxed);
        self.tombstones.fetch_add(p.tombstones(now), Relaxed);
    }
}

impl Plan<'_> {
    /// Warns once per statement when its reads walked over more tombstones
    /// than `tombstone_warn_threshold`.
    pub(crate) fn warn_tombstones(&self, guardrails: &crate::Guardrails) {
        use std::sync::atomic::Ordering::Relaxed;
        guardrails.check_tombstones(
            &format!("{}.{}", self.table.keyspace, self.table.name),
            self.tally.live_rows.load(Relaxed),
            self.tally.tombstones.load(Relaxed),
        );
    }
}

/// How a read of given partitions is ordered and limited.
pub(crate) struct Keyed {
    pub(crate) reversed: bool,
    pub(crate) limit: Option<usize>,
    pub(crate) per_partition: Option<usize>,
    /// Aggregates: every row is read, unpaged.
    pub(crate) counting: bool,
}

impl QueryProcessor {
    pub(crate) async fn select(
        &self,
        table: &TableDef,
        s: &Select,
        params: &QueryParams,
    ) -> Result<QueryResult> {
        let binds = &params.values;
        let (mut items, columns) = projection(table, &s.selection, Some(binds))?;
        // Aggregates read every selected row and return one (unpaged);
        // GROUP BY reads them all too and returns a row per group.
        let grouping = !s.group_by.is_empty();
        let counting = grouping || items.iter().any(Item::is_aggregate);
        let positive = |t: &gyre_cql::Term, what: &str| -> Result<Option<usize>> {
            match term_i64(t, what, binds)? {
                Some(n) if n > 0 => Ok(Some(n as usize)),
                Some(_) => Err(QueryError::invalid(format!(
                    "{what} must be strictly positive"
                ))),
                None => Ok(None),
            }
        };
        let limit = s
            .limit
            .as_ref()
            .map(|t| positive(t, "LIMIT"))
            .transpose()?
            .flatten();
        let per_partition = s
            .per_partition_limit
            .as_ref()
            .map(|t| positive(t, "PER PARTITION LIMIT"))
            .transpose()?
            .flatten();
        // DISTINCT: one row per partition, showing only partition-level columns.
        let per_partition = if s.distinct {
            let partition_level = |i: &Item| {
                matches!(i, Item::Token)
                    || matches!(i, Item::Column(c) if matches!(c.kind, ColumnKind::PartitionKey(_) | ColumnKind::Static))
            };
            if !items.iter().all(partition_level) || s.where_clause.iter().any(|r| {
                matches!(r, gyre_cql::Relation::Column { column, .. }
                    if table.column(column).is_some_and(|c| !matches!(c.kind, ColumnKind::PartitionKey(_))))
            }) {
                return Err(QueryError::invalid(
                    "SELECT DISTINCT queries must only request partition key columns and/or static columns, and restrict only partition key columns",
                ));
            }
            Some(1)
        } else {
            per_partition
        };

        let mut w = analyze(table, &s.where_clause, binds)?;
        self.guardrails.read().check_cartesian(&w)?;
        // The group key's columns ride as hidden items after the selection.
        let visible = items.len();
        if grouping {
            for c in group_columns(table, s, &w)? {
                items.push(Item::Column(c));
            }
        }
        let keys = partition_keys(table, &w)?;
        let mut needs_filtering = false;
        if keys.is_none() {
            // Partition key restrictions that do not pin partitions are filters.
            for col in table.partition_key() {
                match w.keys.remove(&col.name) {
                    Some(Restriction::Values(v)) => {
                        w.others.push((col.clone(), Filter::In(v)));
                    }
                    Some(Restriction::Range { .. }) => {
                        return Err(QueryError::invalid(
                            "Only EQ and IN relation are supported on the partition key (unless you use the token() function)",
                        ))
                    }
                    None => {}
                }
            }
        }
        unsliced_clustering_to_filters(table, &mut w, s.allow_filtering)?;
        let ck = clustering(table, &w)?;
        // Without the partition key, clustering restrictions select rows
        // of every partition: served by indexes on their columns, else
        // filtering (a multi-column slice always is).
        let mut planned = w.others.clone();
        if keys.is_none() {
            if w.tuple.is_some() {
                needs_filtering = true;
            }
            for col in table.clustering() {
                if let Some(r) = w.keys.get(&col.name) {
                    for f in restriction_filters(col, r)? {
                        planned.push((col.clone(), f));
                    }
                }
            }
        }
        if keys.is_some() && (w.token_start.is_some() || w.token_end.is_some()) {
            return Err(QueryError::invalid(
                "Token relations cannot be combined with partition key restrictions",
            ));
        }
        // Filters served by secondary indexes need no ALLOW FILTERING.
        let (index, all_indexed) = crate::index::plan(table, &planned, &s.where_clause, binds)?;
        if !all_indexed {
            needs_filtering = true;
        }
        let ann = match &s.ann {
            Some((col, term)) => {
                let a = crate::index::ann_plan(table, col, term, binds, limit)?;
                // ANN narrows by indexes only (Cassandra), never by filtering.
                if needs_filtering {
                    return Err(QueryError::invalid(
                        crate::index::ANN_REQUIRES_INDEXED_FILTERING,
                    ));
                }
                if !s.order_by.is_empty() {
                    return Err(QueryError::invalid(
                        "ANN ordering does not support any other ordering",
                    ));
                }
                Some(a)
            }
            None => None,
        };
        // With the partition given, the partition is read and filtered.
        let mut index = index.filter(|_| keys.is_none());
        let ann_scan = ann.is_some() && keys.is_none();
        if self.indexes_refused.get().is_some() && (index.is_some() || ann_scan) {
            // An engine that serves no indexes: a scan filtered by the
            // query layer when ALLOW FILTERING asks for one, else refused.
            if ann_scan || !s.allow_filtering {
                self.check_indexes_served()?;
            }
            index = None;
        }
        if needs_filtering && !s.allow_filtering {
            return Err(QueryError::invalid(FILTERING));
        }
        let reversed = order_by(table, &s.order_by, keys.is_some())?;
        let static_only_rows = ck == Clustering::All;
        let clustering_filter = match ck {
            Clustering::All => ClusteringFilter::all(),
            Clustering::Rows(r) => ClusteringFilter::Names(r.into_iter().collect::<BTreeSet<_>>()),
            Clustering::Slices(s) => ClusteringFilter::Slices(s),
        };
        let plan = Plan {
            table,
            items: &items,
            filters: std::mem::take(&mut w.others),
            static_only_rows,
            now: self.now_for(params),
            tally: ReadTally::default(),
        };
        let mut rows = Vec::new();
        let mut paging_state = None;
        if let Some(a) = &ann {
            // One page: the k best rows of all replicas, best first. As in
            // Cassandra, a smaller page size is raised to the LIMIT.
            if let Some(p) = params.page_size.filter(|p| *p > 0 && *p < a.k) {
                gyre_protocol::client_warn::warn(format!(
                    "Top-K queries do not support paging and the page size is set to {p}, \
                     which is less than LIMIT {k}. The page size has been set to {k} to match the LIMIT.",
                    k = a.k
                ));
            }
            rows = self
                .ann_rows(&plan, keys, a, index, &w, clustering_filter, params)
                .await?;
        } else if let Some(keys) = keys {
            paging_state = self
                .read_keyed(
                    &plan,
                    &keys,
                    &clustering_filter,
                    Keyed {
                        reversed,
                        limit,
                        per_partition,
                        counting,
                    },
                    params,
                    &mut rows,
                )
                .await?;
        } else {
            let filter = ReadFilter {
                clustering: clustering_filter,
                columns: Default::default(),
                limit: per_partition,
                reversed: false,
            };
            let (mut start, mut returned) = match &params.paging_state {
                Some(state) if !counting => decode_paging_state(state)?,
                _ => (
                    ScanStart::Token(w.token_start.unwrap_or(Bound::Unbounded)),
                    0,
                ),
            };
            let within_over = matches!(&start, ScanStart::Within { returned: r, .. }
                if per_partition.is_some_and(|p| *r > p));
            if within_over || limit.is_some_and(|l| returned > l) {
                return Err(QueryError::invalid("Invalid paging state"));
            }
            let end = w.token_end.unwrap_or(Bound::Unbounded);
            let page = if counting {
                None
            } else {
                params.page_size.filter(|n| *n > 0)
            };
            loop {
                let want = page
                    .unwrap_or(INTERNAL_PAGE)
                    .min(limit.map_or(usize::MAX, |l| l.saturating_sub(returned)));
                if want == 0 {
                    break;
                }
                let request = ScanRequest {
                    start: start.clone(),
                    end,
                    filter: filter.clone(),
                    max_rows: want,
                    index: index.clone(),
                };
                let got = self
                    .data
                    .scan(table.id, &request, plan.now, params.consistency)
                    .await?;
                // Replica filtering protection: a replica whose newer
                // version no longer matches sends nothing for the row, so
                // the merged page may hold another replica's stale match.
                // Each matched partition is read again at the consistency
                // level (reconciled and repaired like any read); the filters
                // then judge the current rows.
                let reread;
                let partitions: &[Partition] = if index.is_some()
                    && !matches!(
                        params.consistency,
                        Consistency::One | Consistency::LocalOne | Consistency::Any
                    ) {
                    let mut fresh = Vec::with_capacity(got.partitions.len());
                    for p in &got.partitions {
                        let names: BTreeSet<Bytes> = p.rows.keys().cloned().collect();
                        let clustering = if names.is_empty() {
                            filter.clustering.clone()
                        } else {
                            ClusteringFilter::Names(names)
                        };
                        let f = ReadFilter {
                            clustering,
                            ..ReadFilter::default()
                        };
                        if let Some(p) = self
                            .data
                            .read(table.id, &p.key, &f, plan.now, params.consistency)
                            .await?
                        {
                            fresh.push(p);
                        }
                    }
                    reread = fresh;
                    &reread
                } else {
                    &got.partitions
                };
                let before = rows.len();
                let mut cks = Vec::new();
                for p in partitions {
                    plan.emit(
                        p,
                        false,
                        per_partition,
                        plan.static_only_rows,
                        &mut rows,
                        &mut cks,
                    )?;
                }
                if let Some(l) = limit.filter(|_| !counting) {
                    rows.truncate(before + l.saturating_sub(returned));
                }
                returned += rows.len() - before;
                let Some(next) = got.resume else { break };
                if limit.is_some_and(|l| returned >= l) && !counting {
                    break;
                }
                start = next;
                if page.is_some() {
                    paging_state = Some(encode_paging_state(&start, returned));
                    break;
                }
            }
        }
        plan.warn_tombstones(&self.guardrails.read());
        if grouping {
            let groups = group(plan.items, visible, &rows)?;
            (rows, paging_state) = page_groups(groups, limit, params)?;
        } else {
            if let Some(l) = limit {
                rows.truncate(l);
            }
            if counting {
                rows = vec![aggregate(plan.items, &rows)?];
            }
        }
        if s.json {
            let json = rows
                .iter()
                .map(|r| crate::json::row_json(&columns, r).map(|j| Some(Bytes::from(j))))
                .collect::<Result<Vec<_>>>()?;
            return Ok(QueryResult::Rows {
                columns: json_columns(),
                rows: json.into_iter().map(|j| vec![j]).collect(),
                paging_state,
            });
        }
        Ok(QueryResult::Rows {
            columns,
            rows,
            paging_state,
        })
    }
}

/// The columns a GROUP BY groups on, with Cassandra's rules: primary key
/// columns in their declared order (columns restricted by `=` may be left
/// out), the whole partition key, then a clustering prefix.
fn group_columns(
    table: &TableDef,
    s: &Select,
    w: &crate::processor::Where,
) -> Result<Vec<ColumnDef>> {
    const ORDER: &str = "Group by currently only support groups of columns following their declared order in the PRIMARY KEY";
    let pk: Vec<&ColumnDef> = table
        .partition_key()
        .into_iter()
        .chain(table.clustering())
        .collect();
    let mut next = 0;
    let mut clustering_prefix = 0;
    for name in &s.group_by {
        let def = table
            .column(name)
            .ok_or_else(|| QueryError::invalid(format!("Undefined column name {name}")))?;
        if !def.kind.is_primary_key() {
            return Err(QueryError::invalid(format!(
                "Group by is currently only supported on the columns of the PRIMARY KEY, got {name}"
            )));
        }
        loop {
            let col = pk.get(next).ok_or_else(|| QueryError::invalid(ORDER))?;
            next += 1;
            if matches!(col.kind, ColumnKind::Clustering(..)) {
                clustering_prefix += 1;
            }
            if col.name == def.name {
                break;
            }
            let by_eq =
                matches!(w.keys.get(&col.name), Some(Restriction::Values(v)) if v.len() == 1);
            if !by_eq {
                return Err(QueryError::invalid(ORDER));
            }
        }
    }
    if pk
        .get(next)
        .is_some_and(|c| matches!(c.kind, ColumnKind::PartitionKey(_)))
    {
        return Err(QueryError::invalid(
            "Group by is not supported on only a part of the partition key",
        ));
    }
    if clustering_prefix > 0 && s.distinct {
        return Err(QueryError::invalid(
            "Grouping on clustering columns is not allowed for SELECT DISTINCT queries",
        ));
    }
    let key_len = table.partition_key().len() + clustering_prefix;
    Ok(pk.into_iter().take(key_len).cloned().collect())
}

/// Rows (in partition and clustering order, the group key in the columns
/// after `visible`) folded into one row per group: aggregates over the
/// group, other selectors from its first row (as Cassandra).
fn group(
    items: &[Item],
    visible: usize,
    rows: &[Vec<Option<Bytes>>],
) -> Result<Vec<Vec<Option<Bytes>>>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < rows.len() {
        let key = &rows[start][visible..];
        let end = rows[start..]
            .iter()
            .position(|r| &r[visible..] != key)
            .map_or(rows.len(), |n| start + n);
        let mut row = aggregate(items, &rows[start..end])?;
        row.truncate(visible);
        out.push(row);
        start = end;
    }
    Ok(out)
}

/// Result rows in wire form.
type WireRows = Vec<Vec<Option<Bytes>>>;

/// Marks a GROUP BY paging state: the number of groups already sent follows.
const GROUP_PAGING_MAGIC: &[u8; 4] = b"gygb";

/// One page of groups (LIMIT counts groups). Every page is computed from
/// every row again and resumes after the groups already sent.
fn page_groups(
    mut groups: WireRows,
    limit: Option<usize>,
    params: &QueryParams,
) -> Result<(WireRows, Option<Bytes>)> {
    if let Some(l) = limit {
        groups.truncate(l);
    }
    let page = params.page_size.filter(|n| *n > 0);
    let sent = match (&params.paging_state, page) {
        (Some(state), Some(_)) => match state.strip_prefix(GROUP_PAGING_MAGIC.as_slice()) {
            Some(n) if n.len() == 8 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(n);
                usize::try_from(u64::from_be_bytes(b))
                    .ok()
                    .filter(|n| *n <= groups.len())
                    .ok_or_else(|| QueryError::invalid("Invalid paging state"))?
            }
            _ => return Err(QueryError::invalid("Invalid paging state")),
        },
        _ => 0,
    };
    groups.drain(..sent);
    match page {
        Some(size) if groups.len() > size => {
            groups.truncate(size);
            let mut state = GROUP_PAGING_MAGIC.to_vec();
            state.extend_from_slice(&((sent + size) as u64).to_be_bytes());
            Ok((groups, Some(Bytes::from(state))))
        }
        _ => Ok((groups, None)),
    }
}

impl QueryProcessor {
    /// `ORDER BY v ANN OF [..] LIMIT k`: with the partition key given, the
    /// partitions are read and their rows scored; otherwise every token
    /// range's replicas return their best k rows (from their index
    /// graphs, re-scored on the live rows) and the coordinator merges
    /// them. Above ONE each returned partition is read again at the
    /// consistency level (replica filtering protection), then every row is
    /// scored on its reconciled vector and the best k are kept.
    #[allow(clippy::too_many_arguments)]
    async fn ann_rows(
        &self,
        plan: &Plan<'_>,
        keys: Option<Vec<Bytes>>,
        a: &crate::index::AnnPlan,
        index: Option<gyre_storage::sai::IndexQuery>,
        w: &crate::processor::Where,
        clustering_filter: ClusteringFilter,
        params: &QueryParams,
    ) -> Result<Vec<Vec<Option<Bytes>>>> {
        let table = &plan.table;
        let mut parts: Vec<Partition> = Vec::new();
        let filter = ReadFilter {
            clustering: clustering_filter,
            ..ReadFilter::default()
        };
        if let Some(keys) = keys {
            for key in keys {
                let dk = DecoratedKey::new(key);
                if let Some(p) = self
                    .data
                    .read(table.id, &dk, &filter, plan.now, params.consistency)
                    .await?
                {
                    parts.push(p);
                }
            }
        } else {
            let query = gyre_storage::sai::IndexQuery {
                clauses: index.map(|q| q.clauses).unwrap_or_default(),
                ann: Some(gyre_storage::sai::AnnQuery {
                    index: a.index.clone(),
                    vector: a.raw.clone(),
                    k: a.k,
                }),
            };
            let request = ScanRequest {
                start: ScanStart::Token(w.token_start.unwrap_or(Bound::Unbounded)),
                end: w.token_end.unwrap_or(Bound::Unbounded),
                filter: filter.clone(),
                max_rows: a.k,
                index: Some(query),
            };
            let got = self
                .data
                .scan(table.id, &request, plan.now, params.consistency)
                .await?;
            if matches!(
                params.consistency,
                Consistency::One | Consistency::LocalOne | Consistency::Any
            ) {
                parts = got.partitions;
            } else {
                for p in &got.partitions {
                    let names: BTreeSet<Bytes> = p.rows.keys().cloned().collect();
                    let f = ReadFilter {
                        clustering: ClusteringFilter::Names(names),
                        ..ReadFilter::default()
                    };
                    if let Some(p) = self
                        .data
                        .read(table.id, &p.key, &f, plan.now, params.consistency)
                        .await?
                    {
                        parts.push(p);
                    }
                }
            }
        }
        let mut scored: Vec<(f32, Partition)> = Vec::new();
        for p in parts {
            for (ck, row) in &p.rows {
                let Some(score) = gyre_storage::sai::vector_score(&a.spec, row, plan.now, &a.query)
                else {
                    continue;
                };
                let mut one = Partition::new(p.key.clone());
                one.static_row = p.static_row.clone();
                one.rows.insert(ck.clone(), row.clone());
                scored.push((score, one));
            }
        }
        scored.sort_by(|x, y| y.0.total_cmp(&x.0));
        let mut rows = Vec::new();
        let mut cks = Vec::new();
        for (_, p) in &scored {
            if rows.len() >= a.k {
                break;
            }
            plan.emit(p, false, None, false, &mut rows, &mut cks)?;
        }
        rows.truncate(a.k);
        Ok(rows)
    }
}

impl QueryProcessor {
    /// Reads the partitions `keys` in order into `rows`, paged as the
    /// request asks; returns the paging state when more rows may follow.
    pub(crate) async fn read_keyed(
        &self,
        plan: &Plan<'_>,
        keys: &[Bytes],
        clustering_filter: &ClusteringFilter,
        keyed: Keyed,
        params: &QueryParams,
        rows: &mut Vec<Vec<Option<Bytes>>>,
    ) -> Result<Option<Bytes>> {
        let Keyed {
            reversed,
            limit,
            per_partition,
            counting,
        } = keyed;
        let table = plan.table;
        let mut paging_state = None;
        // Pages cut inside partitions; PER PARTITION LIMIT reads are not paged.
        let page = if counting || per_partition.is_some() {
            None
        } else {
            params.page_size.filter(|n| *n > 0)
        };
        let (mut ki, mut after, returned) = match (&params.paging_state, page) {
            (Some(state), Some(_)) => decode_keyed_state(state)?,
            _ => (0, None, 0),
        };
        // A client's paging state is not trusted: its counters must fit
        // this query.
        if ki > keys.len() || limit.is_some_and(|l| returned > l) {
            return Err(QueryError::invalid("Invalid paging state"));
        }
        let limit_left = limit
            .filter(|_| !counting)
            .map(|l| l.saturating_sub(returned));
        while ki < keys.len() {
            let room = min_opt(page, limit_left).map(|r| r.saturating_sub(rows.len()));
            if room == Some(0) {
                break;
            }
            let filter = ReadFilter {
                clustering: resume_filter(clustering_filter, after.as_ref(), reversed),
                columns: Default::default(),
                // Filters may drop rows after the engine counted them: no push-down then.
                limit: if plan.filters.is_empty() && !counting {
                    min_opt(room, per_partition)
                } else {
                    None
                },
                reversed,
            };
            let dk = DecoratedKey::new(keys[ki].clone());
            let before = rows.len();
            let mut cks = Vec::new();
            if let Some(p) = self
                .data
                .read(table.id, &dk, &filter, plan.now, params.consistency)
                .await?
            {
                let static_only = plan.static_only_rows && after.is_none();
                plan.emit(&p, reversed, per_partition, static_only, rows, &mut cks)?;
            }
            if let Some(room) = room.filter(|r| rows.len() - before >= *r) {
                rows.truncate(before + room);
                let total = returned + rows.len();
                if page.is_some() && limit.is_none_or(|l| total < l) {
                    // Resume after the last row returned (past a static-only row: the next partition).
                    let (next_ki, next_after) = match cks.get(room - 1) {
                        Some(Some(ck)) => (ki, Some(ck.clone())),
                        _ => (ki + 1, None),
                    };
                    paging_state = Some(encode_keyed_state(next_ki, next_after.as_ref(), total));
                }
                break;
            }
            ki += 1;
            after = None;
        }
        Ok(paging_state)
    }
}

/// The one row of an aggregate query: each aggregate folded over the rows,
/// other selectors from the first row (null when there are no rows).
fn aggregate(items: &[Item], rows: &[Vec<Option<Bytes>>]) -> Result<Vec<Option<Bytes>>> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Item::Count => Ok(Some(Bytes::copy_from_slice(
                &(rows.len() as i64).to_be_bytes(),
            ))),
            Item::Aggregate(agg, ty, _) => {
                agg.fold(ty, rows.iter().map(|r| r.get(i).and_then(Option::as_ref)))
            }
            _ => Ok(rows.first().and_then(|r| r.get(i).cloned().flatten())),
        })
        .collect()
}

fn min_opt(a: Option<usize>, b: Option<usize>) -> Option<usize> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// True when ORDER BY asks for the reverse of the clustering order.
fn order_by(table: &TableDef, order: &[(String, Order)], keyed: bool) -> Result<bool> {
    if order.is_empty() {
        return Ok(false);
    }
    if !keyed {
        return Err(QueryError::invalid(
            "ORDER BY is only supported when the partition key is restricted by an EQ or an IN.",
        ));
    }
    let cols = table.clustering();
    let mut reversed = None;
    for (i, (name, o)) in order.iter().enumerate() {
        let col = cols.get(i).filter(|c| &c.name == name).ok_or_else(|| {
            QueryError::invalid(format!(
                "Order by currently only supports the ordering of columns following their declared order in the PRIMARY KEY ({name})"
            ))
        })?;
        let ColumnKind::Clustering(_, declared) = col.kind else {
            return Err(QueryError::invalid(format!(
                "Order by on unknown column {name}"
            )));
        };
        let rev = (declared == ClusteringOrder::Desc) != (*o == Order::Desc);
        if reversed.is_some_and(|r| r != rev) {
            return Err(QueryError::invalid("Unsupported order by relation"));
        }
        reversed = Some(rev);
    }
    Ok(reversed.unwrap_or(false))
}

/// The result columns a SELECT returns (for PREPARE).
pub(crate) fn result_columns(table: &TableDef, s: &Select) -> Result<Columns> {
    let (_, columns) = projection(table, &s.selection, None)?;
    Ok(if s.json { json_columns() } else { columns })
}

/// `SELECT JSON` returns one text column named `[json]`.
fn json_columns() -> Columns {
    vec![("[json]".to_owned(), ColumnType::Varchar)]
}

/// Result columns: name and type.
type Columns = Vec<(String, ColumnType)>;

/// The items and result columns of a selection. `binds` evaluates constant
/// function arguments; PREPARE passes none and only gets the types.
pub(crate) fn projection(
    table: &TableDef,
    sel: &Selection,
    binds: Option<&[Value]>,
) -> Result<(Vec<Item>, Columns)> {
    let mut items = Vec::new();
    let mut columns = Vec::new();
    match sel {
        Selection::Wildcard => {
            let mut rest: Vec<&ColumnDef> = table
                .columns
                .iter()
                .filter(|c| !c.kind.is_primary_key())
                .collect();
            rest.sort_by(|a, b| a.name.cmp(&b.name));
            for c in table
                .partition_key()
                .into_iter()
                .chain(table.clustering())
                .chain(rest)
            {
                columns.push((c.name.clone(), column_type(&c.ty)));
                items.push(Item::Column(c.clone()));
            }
        }
        Selection::Items(list) => {
            for SelectItem { selector, alias } in list {
                let (item, name, ty) = selector_item(table, selector, binds, true)?;
                columns.push((alias.clone().unwrap_or(name), column_type(&ty)));
                items.push(item);
            }
        }
    }
    Ok((items, columns))
}

/// One selector as an item, with its result column name and type;
/// aggregates only at the `top` of a selector.
fn selector_item(
    table: &TableDef,
    selector: &Selector,
    binds: Option<&[Value]>,
    top: bool,
) -> Result<(Item, String, CqlType)> {
    let col = |name: &str| {
        table
            .column(name)
            .cloned()
            .ok_or_else(|| QueryError::invalid(format!("Undefined column name {name}")))
    };
    Ok(match selector {
        Selector::Column(n) => {
            let c = col(n)?;
            let ty = c.ty.clone();
            (Item::Column(c), n.clone(), ty)
        }
        Selector::Timestamps {
            function,
            column,
            fields,
        } => timestamps_item(col(column)?, *function, fields)?,
        Selector::WriteTime(n) | Selector::Ttl(n) => {
            let c = col(n)?;
            let wt = matches!(selector, Selector::WriteTime(_));
            let f = if wt { "writetime" } else { "ttl" };
            if c.kind.is_primary_key() {
                return Err(QueryError::invalid(format!(
                    "Cannot use selection function {f} on PRIMARY KEY part {n}"
                )));
            }
            if is_multicell(&c.ty) {
                // Cassandra 5.0 (CASSANDRA-8877): one value per element or field.
                let function = if wt {
                    TimestampFunction::WriteTime
                } else {
                    TimestampFunction::Ttl
                };
                return timestamps_item(c, function, &[]);
            }
            if wt {
                (
                    Item::WriteTime(c),
                    format!("writetime({n})"),
                    CqlType::Bigint,
                )
            } else {
                (Item::Ttl(c), format!("ttl({n})"), CqlType::Int)
            }
        }
        Selector::CountRows if top => (Item::Count, "count".to_owned(), CqlType::Bigint),
        Selector::Function { name, args } => {
            let fname = function_name(name)?;
            let arg_items = args
                .iter()
                .map(|a| selector_item(table, a, binds, false))
                .collect::<Result<Vec<_>>>()?;
            let arg_names: Vec<&str> = arg_items.iter().map(|(_, n, _)| n.as_str()).collect();
            let display = format!("system.{fname}({})", arg_names.join(", "));
            if fname == "token" {
                let pk: Vec<&str> = table
                    .partition_key()
                    .into_iter()
                    .map(|c| c.name.as_str())
                    .collect();
                if arg_names != pk {
                    return Err(QueryError::invalid(format!(
                        "The token function must be called on the partition key columns in order ({})",
                        pk.join(", ")
                    )));
                }
                return Ok((Item::Token, display, CqlType::Bigint));
            }
            match (fname, arg_items.as_slice()) {
                ("tojson", [(arg, _, ty)]) => {
                    let item = Item::ToJson(Box::new(arg.clone()), column_type(ty));
                    return Ok((item, display, CqlType::Text));
                }
                ("fromjson", _) => {
                    return Err(QueryError::invalid(
                        "fromJson() cannot be used in the selection clause of a SELECT statement",
                    ))
                }
                _ => {}
            }
            if let Some(agg) = Aggregate::from_name(fname) {
                if !top {
                    return Err(QueryError::invalid(format!(
                        "Aggregate function {fname} cannot be used as an argument of another function"
                    )));
                }
                let Ok([(arg, _, arg_ty)]) = <[_; 1]>::try_from(arg_items) else {
                    return Err(QueryError::invalid(format!(
                        "Invalid number of arguments in call to function system.{fname}: 1 required"
                    )));
                };
                let ty = agg.result_type(fname, &arg_ty)?;
                return Ok((Item::Aggregate(agg, arg_ty, Box::new(arg)), display, ty));
            }
            let f = if functions::is_similarity(fname) {
                // Typed by its vector argument(s): vector<float, n> for any n.
                if args.len() != 2 {
                    return Err(QueryError::invalid(format!(
                        "Invalid number of arguments for function system.{fname}: 2 required"
                    )));
                }
                let typed: Vec<&CqlType> = args
                    .iter()
                    .zip(&arg_items)
                    .filter(|(a, _)| !matches!(a, Selector::Term(_)))
                    .map(|(_, (_, _, ty))| ty)
                    .collect();
                let Some(ty) = typed.first() else {
                    return Err(QueryError::invalid(format!(
                        "Cannot infer the type of the arguments of system.{fname}: at least one must be a vector column"
                    )));
                };
                if typed
                    .iter()
                    .any(|t| crate::values::unfrozen(t) != crate::values::unfrozen(ty))
                {
                    return Err(QueryError::invalid(format!(
                        "All arguments of system.{fname} must be vectors of the same type and dimension"
                    )));
                }
                functions::similarity(fname, ty)?
            } else {
                functions::resolve(fname, args.len(), |i, want| {
                    match (args.get(i), arg_items.get(i)) {
                        (Some(Selector::Term(t)), _) => {
                            functions::term_fits(t, want).unwrap_or(false)
                        }
                        (_, Some((_, _, ty))) => functions::assignable(want, ty),
                        _ => false,
                    }
                })?
            };
            // Constants are typed by the function's parameter.
            let mut items = Vec::with_capacity(args.len());
            for ((a, (item, _, _)), ty) in args.iter().zip(arg_items).zip(&f.args) {
                items.push(match (a, binds) {
                    (Selector::Term(t), Some(binds)) => {
                        Item::Const(term_bytes(t, ty, &format!("argument of {fname}"), binds)?)
                    }
                    _ => item,
                });
            }
            let ret = f.ret.clone();
            (Item::Scalar(f, items), display, ret)
        }
        // A constant is only meaningful as a function argument; its type
        // comes from the function (or its own hint).
        Selector::Term(t) if !top => {
            let ty = match t {
                gyre_cql::Term::TypeHint { ty, .. } => ty.clone(),
                gyre_cql::Term::Function { name, args } => {
                    crate::values::resolve_call(name, args)?.ret
                }
                _ => CqlType::Blob,
            };
            (Item::Const(None), t.to_string(), ty)
        }
        Selector::Term(_) => {
            return Err(QueryError::invalid(
                "Constants can only be selected as function arguments",
            ))
        }
        Selector::CountRows => {
            return Err(QueryError::invalid(
                "count(*) cannot be used as an argument of another function",
            ))
        }
        Selector::Cast { .. } => {
            return Err(QueryError::invalid("CAST in a selection is not supported"))
        }
        Selector::Field { selector, field } => {
            let (item, name, ty) = selector_item(table, selector, binds, false)?;
            let CqlType::UserType(u) = crate::values::unfrozen(&ty) else {
                return Err(QueryError::invalid(format!(
                    "Invalid field selection: {name} of type {ty} is not a user type"
                )));
            };
            let Some((i, ft)) = u.field(field) else {
                return Err(QueryError::invalid(format!(
                    "{name} of type {ty} has no field {field}"
                )));
            };
            let ft = ft.clone();
            (
                Item::Field(Box::new(item), i),
                format!("{name}.{}", gyre_cql::quote_identifier(field)),
                ft,
            )
        }
    })
}

/// `writetime` / `ttl` / `maxwritetime` of a column or of a field of a user
/// type value in it, as Cassandra 5.0 types and names them: a list (one
/// value per element or field) of a non-frozen collection or user type
/// (`maxwritetime`: their maximum), one value otherwise.
fn timestamps_item(
    c: ColumnDef,
    function: TimestampFunction,
    fields: &[String],
) -> Result<(Item, String, CqlType)> {
    let f = function.name();
    if c.kind.is_primary_key() {
        return Err(QueryError::invalid(format!(
            "Cannot use selection function {f} on PRIMARY KEY part {}",
            c.name
        )));
    }
    let mut name = c.name.clone();
    let mut ty = c.ty.clone();
    let mut value = Item::Column(c.clone());
    let mut path = Vec::with_capacity(fields.len());
    for field in fields {
        let CqlType::UserType(u) = crate::values::unfrozen(&ty) else {
            return Err(QueryError::invalid(format!(
                "Invalid field selection: {name} of type {ty} is not a user type"
            )));
        };
        let Some((i, ft)) = u.field(field) else {
            return Err(QueryError::invalid(format!(
                "{name} of type {ty} has no field {field}"
            )));
        };
        let ft = ft.clone();
        name = format!("{name}.{}", gyre_cql::quote_identifier(field));
        ty = ft;
        path.push(i);
        value = Item::Field(Box::new(value), i);
    }
    let multi = path.is_empty() && is_multicell(&c.ty);
    let ret = match function {
        TimestampFunction::WriteTime if multi => CqlType::List(Box::new(CqlType::Bigint)),
        TimestampFunction::Ttl if multi => CqlType::List(Box::new(CqlType::Int)),
        TimestampFunction::Ttl => CqlType::Int,
        TimestampFunction::WriteTime | TimestampFunction::MaxWriteTime => CqlType::Bigint,
    };
    let item = Item::Timestamps {
        function,
        column: c,
        path,
        value: Box::new(value),
    };
    Ok((item, format!("{f}({name})"), ret))
}

/// The timestamps (or TTLs) of one column of a row, as Cassandra collects
/// them: none (no cell), one (a single-cell column), or one per element of
/// a non-frozen collection or per field of a non-frozen user type (a null
/// where a field has no cell).
enum Times {
    None,
    One(Option<i64>),
    Many(Vec<Option<i64>>),
}

impl Plan<'_> {
    /// Live, and not written before its column was dropped (a re-added
    /// column must not show the old data).
    fn visible(&self, column: &str, cell: &gyre_common::Cell) -> bool {
        cell.is_live(self.now)
            && self
                .table
                .dropped_columns
                .get(column)
                .is_none_or(|d| cell.timestamp > d.dropped_at)
    }

    /// A row is live when one of its cells is visible.
    fn live(&self, row: &Row) -> bool {
        row.cells
            .iter()
            .any(|(n, c)| match std::str::from_utf8(&n.column) {
                Ok(name) => self.visible(name, c),
                Err(_) => c.is_live(self.now),
            })
    }

    /// Appends the live rows of a partition (read or scanned) in order.
    fn emit(
        &self,
        p: &Partition,
        reversed: bool,
        per_partition: Option<usize>,
        static_only: bool,
        out: &mut Vec<Vec<Option<Bytes>>>,
        cks: &mut Vec<Option<Bytes>>,
    ) -> Result<()> {
        self.tally.note(p, self.now);
        let pk = split_partition_key(&p.key.key, self.table.partition_key().len());
        let static_row = p.static_row.as_ref();
        let ck_cols: Vec<(&gyre_cql::CqlType, ClusteringOrder)> = self
            .table
            .clustering()
            .into_iter()
            .map(|c| match c.kind {
                ColumnKind::Clustering(_, o) => (&c.ty, o),
                _ => (&c.ty, ClusteringOrder::Asc),
            })
            .collect();
        let rows: Box<dyn Iterator<Item = (&Bytes, &Row)>> = if reversed {
            Box::new(p.rows.iter().rev())
        } else {
            Box::new(p.rows.iter())
        };
        let mut emitted = 0;
        for (ck, row) in rows {
            if per_partition.is_some_and(|l| emitted >= l) {
                break;
            }
            if !self.live(row) {
                continue;
            }
            let Ok(ckv) = decode_clustering_key(&ck_cols, ck) else {
                tracing::warn!(table = %self.table.name, "undecodable clustering key skipped");
                continue;
            };
            if let Some(r) = self.row(&p.key.key, &pk, &ckv, Some(row), static_row)? {
                out.push(r);
                cks.push(Some(ck.clone()));
                emitted += 1;
            }
        }
        // A partition with only static data shows as one row with null clustering.
        if emitted == 0
            && static_only
            && p.rows.values().all(|r| !self.live(r))
            && static_row.is_some_and(|r| self.live(r))
        {
            if let Some(r) = self.row(&p.key.key, &pk, &[], None, static_row)? {
                out.push(r);
                cks.push(None);
            }
        }
        Ok(())
    }

    fn row(
        &self,
        key: &Bytes,
        pk: &[Bytes],
        ck: &[Vec<u8>],
        row: Option<&Row>,
        static_row: Option<&Row>,
    ) -> Result<Option<Vec<Option<Bytes>>>> {
        let cell = |c: &ColumnDef| {
            let r = if c.kind == ColumnKind::Static {
                static_row
            } else {
                row
            };
            r.and_then(|r| {
                r.cells
                    .get(&CellName::simple(Bytes::copy_from_slice(c.name.as_bytes())))
            })
            .filter(|cell| self.visible(&c.name, cell))
        };
        let value = |c: &ColumnDef| -> Option<Bytes> {
            match c.kind {
                ColumnKind::PartitionKey(i) => pk.get(i as usize).cloned(),
                ColumnKind::Clustering(i, _) => {
                    ck.get(i as usize).map(|v| Bytes::copy_from_slice(v))
                }
                _ if c.ty == gyre_cql::CqlType::Counter => {
                    // The sum of the per-host shards.
                    let r = if c.kind == ColumnKind::Static {
                        static_row
                    } else {
                        row
                    };
                    r.and_then(|r| gyre_common::counter::total(r, c.name.as_bytes(), self.now))
                        .map(|n| Bytes::copy_from_slice(&n.to_be_bytes()))
                }
                _ if is_multicell(&c.ty) => {
                    let r = if c.kind == ColumnKind::Static {
                        static_row
                    } else {
                        row
                    };
                    let name = CellName::simple(Bytes::copy_from_slice(c.name.as_bytes()));
                    let cells = r.into_iter().flat_map(|r| {
                        r.cells
                            .range(name.clone()..)
                            .take_while(|(n, _)| n.column == name.column)
                            .filter(|(n, _)| !n.path.is_empty())
                            .filter(|(_, cell)| self.visible(&c.name, cell))
                            .filter_map(|(n, cell)| cell.value_at(self.now).map(|v| (&n.path, v)))
                    });
                    assemble(&c.ty, cells)
                }
                _ => cell(c).and_then(|c| c.value_at(self.now).cloned()),
            }
        };
        // The live cells of a non-frozen collection or user type: path and cell.
        let cells = |c: &ColumnDef| -> Vec<(&Bytes, &gyre_common::Cell)> {
            let r = if c.kind == ColumnKind::Static {
                static_row
            } else {
                row
            };
            let name = CellName::simple(Bytes::copy_from_slice(c.name.as_bytes()));
            r.into_iter()
                .flat_map(|r| {
                    r.cells
                        .range(name.clone()..)
                        .take_while(|(n, _)| n.column == name.column)
                        .filter(|(n, _)| !n.path.is_empty())
                        .filter(|(_, cell)| self.visible(&c.name, cell))
                        .filter(|(_, cell)| cell.value_at(self.now).is_some())
                        .map(|(n, cell)| (&n.path, cell))
                })
                .collect()
        };
        for (c, filter) in &self.filters {
            let Some(v) = value(c) else {
                return Ok(None);
            };
            // An index with SAI's text options matches analysed terms.
            let ok = match (crate::index::text_analysis(self.table, c), filter) {
                (Some(a), Filter::In(values)) => {
                    let t = a.analyze(&v);
                    values.iter().any(|x| a.analyze(x) == t)
                }
                _ => filter.matches(&c.ty, &v),
            };
            if !ok {
                return Ok(None);
            }
        }
        let eval = Eval {
            key,
            now: self.now,
            value: &value,
            cell: &cell,
            cells: &cells,
        };
        self.items
            .iter()
            .map(|item| eval.item(item))
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }
}

/// One stored row's values, as the selection's items see them.
struct Eval<'a> {
    /// The stored partition key (for `token()`).
    key: &'a Bytes,
    now: LocalTime,
    value: &'a dyn Fn(&ColumnDef) -> Option<Bytes>,
    cell: &'a dyn Fn(&ColumnDef) -> Option<&'a gyre_common::Cell>,
    cells: &'a dyn Fn(&ColumnDef) -> Vec<(&'a Bytes, &'a gyre_common::Cell)>,
}

impl Eval<'_> {
    /// An item's value; an aggregate gives its argument's value (folded
    /// over the rows later).
    fn item(&self, item: &Item) -> Result<Option<Bytes>> {
        Ok(match item {
            Item::Column(c) => (self.value)(c),
            Item::WriteTime(c) => {
                (self.cell)(c).map(|cell| Bytes::copy_from_slice(&cell.timestamp.to_be_bytes()))
            }
            Item::Ttl(c) => (self.cell)(c).and_then(|cell| match cell.value {
                CellValue::Expiring { expires_at, .. } => {
                    let left = (expires_at - self.now).clamp(0, i64::from(i32::MAX)) as i32;
                    Some(Bytes::copy_from_slice(&left.to_be_bytes()))
                }
                _ => None,
            }),
            Item::Timestamps {
                function,
                column,
                path,
                value,
            } => self.timestamps(*function, column, path, value)?,
            Item::Token => Some(Bytes::copy_from_slice(
                &gyre_common::token_of(self.key).to_be_bytes(),
            )),
            Item::Const(v) => v.clone(),
            Item::Scalar(f, args) => {
                let values = args
                    .iter()
                    .map(|a| self.item(a))
                    .collect::<Result<Vec<_>>>()?;
                f.apply(&values)?
            }
            Item::ToJson(arg, ty) => {
                let v = self.item(arg)?;
                Some(Bytes::from(crate::json::value_json(ty, v.as_ref())?))
            }
            Item::Count => None,
            Item::Aggregate(_, _, arg) => self.item(arg)?,
            Item::Field(arg, i) => self
                .item(arg)?
                .and_then(|v| crate::collections::udt_field(&v, *i)),
        })
    }
}

impl Eval<'_> {
    /// A cell's writetime, or its TTL left (`None` when it has none).
    fn time_of(&self, function: TimestampFunction, cell: &gyre_common::Cell) -> Option<i64> {
        match function {
            TimestampFunction::WriteTime | TimestampFunction::MaxWriteTime => Some(cell.timestamp),
            TimestampFunction::Ttl => match cell.value {
                CellValue::Expiring { expires_at, .. } => {
                    Some((expires_at - self.now).clamp(0, i64::from(i32::MAX)))
                }
                _ => None,
            },
        }
    }

    /// [`Item::Timestamps`]: Cassandra 5.0's `ColumnTimestamps` rules.
    fn timestamps(
        &self,
        function: TimestampFunction,
        column: &ColumnDef,
        path: &[usize],
        value: &Item,
    ) -> Result<Option<Bytes>> {
        let times = if is_multicell(&column.ty) {
            let cells = (self.cells)(column);
            if cells.is_empty() {
                Times::None
            } else if let CqlType::UserType(u) = &column.ty {
                let mut fields = vec![None; u.fields.len()];
                for (p, cell) in cells {
                    let Ok(i) = <[u8; 2]>::try_from(&p[..]).map(u16::from_be_bytes) else {
                        continue;
                    };
                    if let Some(slot) = fields.get_mut(usize::from(i)) {
                        *slot = self.time_of(function, cell);
                    }
                }
                Times::Many(fields)
            } else {
                Times::Many(
                    cells
                        .into_iter()
                        .map(|(_, cell)| self.time_of(function, cell))
                        .collect(),
                )
            }
        } else {
            match (self.cell)(column) {
                Some(cell) => Times::One(self.time_of(function, cell)),
                None => Times::None,
            }
        };
        // A field: the whole value's time (frozen), or its own cell's; none
        // when the field is null.
        let times = match path.first() {
            None => times,
            Some(_) if self.item(value)?.is_none() => Times::None,
            Some(&i) => match times {
                Times::Many(v) => Times::One(v.get(i).copied().flatten()),
                t => t,
            },
        };
        let scalar = |t: i64| match function {
            TimestampFunction::Ttl => Bytes::copy_from_slice(&(t as i32).to_be_bytes()),
            _ => Bytes::copy_from_slice(&t.to_be_bytes()),
        };
        Ok(match times {
            Times::None | Times::One(None) => None,
            Times::One(Some(t)) => Some(scalar(t)),
            Times::Many(v) if function == TimestampFunction::MaxWriteTime => {
                v.into_iter().flatten().max().map(scalar)
            }
            Times::Many(v) => {
                // A list with null elements where a field has no time.
                let mut out = BytesMut::new();
                out.put_i32(v.len() as i32);
                for t in v {
                    match t {
                        Some(t) => {
                            let b = scalar(t);
                            out.put_i32(b.len() as i32);
                            out.put_slice(&b);
                        }
                        None => out.put_i32(-1),
                    }
                }
                Some(out.freeze())
            }
        })
    }
}

/// A clustering column's restriction as row filters (range bounds in the
/// ascending key encoding, as [`Filter::Compare`] compares).
fn restriction_filters(col: &ColumnDef, r: &Restriction) -> Result<Vec<Filter>> {
    let enc = |v: &Bytes| -> Result<Bytes> {
        Ok(Bytes::from(gyre_schema::encode_clustering(
            &col.ty,
            v,
            gyre_schema::ClusteringOrder::Asc,
        )?))
    };
    Ok(match r {
        Restriction::Values(v) => vec![Filter::In(v.clone())],
        Restriction::Range { lo, hi } => {
            let mut out = Vec::new();
            if let Some((v, inclusive)) = lo {
                let op = if *inclusive {
                    Operator::Gte
                } else {
                    Operator::Gt
                };
                out.push(Filter::Compare(op, enc(v)?));
            }
            if let Some((v, inclusive)) = hi {
                let op = if *inclusive {
                    Operator::Lte
                } else {
                    Operator::Lt
                };
                out.push(Filter::Compare(op, enc(v)?));
            }
            out
        }
    })
}

/// Restrictions on clustering columns that cannot be part of a slice (a
/// column after an unrestricted one, or after a range) become row filters
/// when an index on the column serves them or with ALLOW FILTERING, as in
/// Cassandra; otherwise they stay for [`clustering`] to refuse.
fn unsliced_clustering_to_filters(
    table: &TableDef,
    w: &mut crate::processor::Where,
    allow_filtering: bool,
) -> Result<()> {
    let mut sliced = true;
    for col in table.clustering() {
        let Some(r) = w.keys.get(&col.name) else {
            sliced = false;
            continue;
        };
        if sliced {
            if matches!(r, Restriction::Range { .. }) {
                sliced = false;
            }
            // A multi-column slice ends the slice too.
            if w.tuple
                .as_ref()
                .is_some_and(|t| t.columns.contains(&col.name))
            {
                sliced = false;
            }
            continue;
        }
        let filters = restriction_filters(col, r)?;
        if allow_filtering || filters.iter().all(|f| crate::index::serves(table, col, f)) {
            w.keys.remove(&col.name);
            w.others
                .extend(filters.into_iter().map(|f| (col.clone(), f)));
        }
    }
    Ok(())
}

/// Splits a stored partition key into its column values (the inverse of
/// `encode_partition_key`).
fn split_partition_key(key: &Bytes, n: usize) -> Vec<Bytes> {
    if n <= 1 {
        return vec![key.clone()];
    }
    let mut out = Vec::with_capacity(n);
    let mut rest = key.clone();
    while rest.len() >= 2 && out.len() < n {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        if rest.len() < 2 + len + 1 {
            break;
        }
        out.push(rest.slice(2..2 + len));
        rest = rest.slice(3 + len..);
    }
    out
}

/// The clustering filter of a resumed page: only rows past `after` (before
/// it when reversed).
fn resume_filter(f: &ClusteringFilter, after: Option<&Bytes>, reversed: bool) -> ClusteringFilter {
    let Some(after) = after else {
        return f.clone();
    };
    let past = |k: &[u8]| {
        if reversed {
            k < after.as_ref()
        } else {
            k > after.as_ref()
        }
    };
    match f {
        ClusteringFilter::Names(n) => {
            ClusteringFilter::Names(n.iter().filter(|k| past(k)).cloned().collect())
        }
        ClusteringFilter::Slices(slices) => ClusteringFilter::Slices(
            slices
                .iter()
                .filter_map(|s| {
                    let cut = SliceBound::Exclusive(after.clone());
                    if !reversed {
                        if !s.before_end(after) {
                            None
                        } else if s.after_start(after) {
                            Some(Slice::new(cut, s.end.clone()))
                        } else {
                            Some(s.clone())
                        }
                    } else if !s.after_start(after) {
                        None
                    } else if s.before_end(after) {
                        Some(Slice::new(s.start.clone(), cut))
                    } else {
                        Some(s.clone())
                    }
                })
                .filter(|s| !s.is_empty())
                .collect(),
        ),
    }
}

// Paging state: rows returned so far (u64), then the engine's resume point:
// a tag and its fields. Opaque to clients.
const TAG_UNBOUNDED: u8 = 0;
const TAG_INCLUDED: u8 = 1;
const TAG_EXCLUDED: u8 = 2;
const TAG_AFTER: u8 = 3;
const TAG_WITHIN: u8 = 4;
/// A partition-key query: the index of the key, then the last clustering
/// key returned from it (if any).
const TAG_KEYED: u8 = 5;

fn encode_keyed_state(ki: usize, after: Option<&Bytes>, returned: usize) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u64(returned as u64);
    b.put_u8(TAG_KEYED);
    b.put_u32(ki as u32);
    if let Some(a) = after {
        b.put_u8(1);
        b.put_u32(a.len() as u32);
        b.put_slice(a);
    } else {
        b.put_u8(0);
    }
    b.freeze()
}

fn decode_keyed_state(state: &Bytes) -> Result<(usize, Option<Bytes>, usize)> {
    let bad = || QueryError::invalid("Invalid paging state");
    let mut b = state.clone();
    if b.remaining() < 14 {
        return Err(bad());
    }
    let returned = b.get_u64() as usize;
    if b.get_u8() != TAG_KEYED {
        return Err(bad());
    }
    let ki = b.get_u32() as usize;
    let after = match b.get_u8() {
        0 => None,
        1 => {
            if b.remaining() < 4 {
                return Err(bad());
            }
            let n = b.get_u32() as usize;
            if b.remaining() != n {
                return Err(bad());
            }
            Some(b.split_to(n))
        }
        _ => return Err(bad()),
    };
    if b.has_remaining() {
        return Err(bad());
    }
    Ok((ki, after, returned))
}

fn encode_paging_state(start: &ScanStart, returned: usize) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u64(returned as u64);
    let put_key = |b: &mut BytesMut, k: &[u8]| {
        b.put_u32(k.len() as u32);
        b.put_slice(k);
    };
    match start {
        ScanStart::Token(Bound::Unbounded) => b.put_u8(TAG_UNBOUNDED),
        ScanStart::Token(Bound::Included(t)) => {
            b.put_u8(TAG_INCLUDED);
            b.put_i64(*t);
        }
        ScanStart::Token(Bound::Excluded(t)) => {
            b.put_u8(TAG_EXCLUDED);
            b.put_i64(*t);
        }
        ScanStart::After(k) => {
            b.put_u8(TAG_AFTER);
            put_key(&mut b, &k.key);
        }
        ScanStart::Within {
            key,
            after,
            returned,
        } => {
            b.put_u8(TAG_WITHIN);
            put_key(&mut b, &key.key);
            put_key(&mut b, after);
            b.put_u64(*returned as u64);
        }
    }
    b.freeze()
}

fn decode_paging_state(state: &Bytes) -> Result<(ScanStart, usize)> {
    let bad = || QueryError::invalid("Invalid paging state");
    let mut b = state.clone();
    let need = |b: &Bytes, n: usize| {
        if b.remaining() < n {
            Err(bad())
        } else {
            Ok(())
        }
    };
    need(&b, 9)?;
    let returned = b.get_u64() as usize;
    let get_key = |b: &mut Bytes| -> Result<Bytes> {
        need(b, 4)?;
        let n = b.get_u32() as usize;
        need(b, n)?;
        Ok(b.split_to(n))
    };
    let start = match b.get_u8() {
        TAG_UNBOUNDED => ScanStart::Token(Bound::Unbounded),
        TAG_INCLUDED | TAG_EXCLUDED => {
            need(&b, 8)?;
            let t = b.get_i64();
            if state[8] == TAG_INCLUDED {
                ScanStart::Token(Bound::Included(t))
            } else {
                ScanStart::Token(Bound::Excluded(t))
            }
        }
        TAG_AFTER => ScanStart::After(DecoratedKey::new(get_key(&mut b)?)),
        TAG_WITHIN => {
            let key = DecoratedKey::new(get_key(&mut b)?);
            let after = get_key(&mut b)?;
            need(&b, 8)?;
            ScanStart::Within {
                key,
                after,
                returned: b.get_u64() as usize,
            }
        }
        _ => return Err(bad()),
    };
    if b.has_remaining() {
        return Err(bad());
    }
    Ok((start, returned))
}
