//! Lightweight transactions: compare-and-set and SERIAL reads over Paxos,
//! with Cassandra 4.1's v2 round trips: PREPARE carries the read (each
//! promise returns the replica's data and any accepted, uncommitted
//! proposal, which the proposer finishes first, committing it with its
//! next prepare), then PROPOSE, then COMMIT to every replica, awaited at
//! the statement's consistency level only: the coordinator's own replica
//! commits in-process, so at ONE / LOCAL_ONE / ANY an uncontended write is
//! two network round trips. When the coordinator's replica and any other
//! make a quorum, PROPOSE and COMMIT are one round trip
//! ([`Coordinator::propose_and_commit`]). The replica side is in
//! [`crate::paxos`]; its handlers are registered here.

use gyre_common::Timestamp;
use rand::Rng;

use super::handlers::respond;
use super::*;
use crate::messages::{PAXOS_COMMIT, PAXOS_PREPARE, PAXOS_PROPOSE, PAXOS_PROPOSE_COMMIT};
use crate::paxos::{
    decode_accept, decode_prepare, decode_promise, decode_proposal, encode_accept, encode_prepare,
    encode_promise, encode_proposal, Agreed, Ballot, PaxosReplica, Promise,
};

/// The result of a compare-and-set.
#[derive(Clone, Debug, PartialEq)]
pub struct CasOutcome {
    /// Whether the conditions held and the update was committed.
    pub applied: bool,
    /// The partition's data (under the request's filter) that the
    /// conditions were checked against, reconciled from a quorum.
    pub current: Option<Partition>,
}

/// Decides a CAS: given the current data and the ballot's timestamp (the
/// write timestamp of whatever it commits), the update to commit, or
/// `None` when the conditions do not hold. An `Err` is an invalid request.
pub type CasDecide<'a> = Box<
    dyn FnMut(Option<&Partition>, Timestamp) -> std::result::Result<Option<Partition>, String>
        + Send
        + 'a,
>;

enum Round<T> {
    Done(T),
    /// A replica promised a higher ballot (which, if it said).
    Rejected(Option<Ballot>),
    /// Too few answers in time: how many came.
    Timeout(usize),
    /// A proposal accepted by some replicas (how many) and refused by
    /// others: a later proposer may still commit it.
    Partial(usize, Option<Ballot>),
}

/// A replica's answer in [`Coordinator::propose_and_commit`]: its host,
/// true for a PAXOS_PROPOSE_COMMIT answer (false: a PAXOS_COMMIT's), the
/// answer.
type Answer = (HostId, bool, std::result::Result<Bytes, String>);

/// Longest pause between two attempts under contention.
const MAX_BACKOFF: Duration = Duration::from_millis(100);

/// How long a Paxos round waits for the quorum it asked before it asks the
/// other live replicas too (a replica paused or dead but not yet known
/// down): well above a round's usual latency, well below the timeouts.
const SPECULATE_AFTER: Duration = Duration::from_millis(100);

/// Runs one replica-side Paxos request on `storage` (the same code for a
/// remote request and the coordinator's own replica, `own`): the state is
/// read and changed now, the future resolves with the answer once durable.
///
/// Except the coordinator's own promise (a prepare that commits nothing):
/// it is answered at once and made durable in the background. It is
/// answered to this process's proposer only, which a crash that loses the
/// promise ends too; the proposer's next step here, the accept, is
/// appended after the promise and awaited, so an accepted proposal never
/// rests on a lost promise. A promise lost in a crash can only have been
/// one of a round that wrote nothing (a SERIAL read, conditions not met),
/// and a lower ballot this replica then accepts was concurrent with that
/// round: any write chosen in between would have left a durable promise
/// above it on a quorum. This spares an LWT waiting for the later of two
/// fsyncs (its own and the other replica's) in the prepare round.
fn serve_paxos(
    storage: &dyn StorageEngine,
    paxos: &PaxosReplica,
    verb: gyre_net::Verb,
    payload: &Bytes,
    own: bool,
) -> BoxFuture<'static, std::result::Result<Bytes, String>> {
    let now = SystemClock.now();
    let mut background: Option<gyre_storage::WriteFuture> = None;
    let res = match verb {
        PAXOS_PREPARE => decode_prepare(payload).and_then(|(c, ballot, agreed)| {
            // Commit-and-prepare: an agreed proposal the proposer finished
            // is committed before the promise (and the read) are made.
            let committed = match agreed {
                Some((b, update)) => Some(paxos.commit(storage, c.table, b, update, now)?),
                None => None,
            };
            paxos
                .prepare(storage, c.table, &c.key, ballot, &c.filter, c.now)
                .map(|(p, durable)| {
                    let durable: Option<gyre_storage::WriteFuture> = match (committed, durable) {
                        (Some(c), Some(d)) => Some(Box::pin(async move {
                            c.await?;
                            d.await
                        })),
                        (None, Some(d)) if own => {
                            background = Some(d);
                            None
                        }
                        (c, d) => c.or(d),
                    };
                    (encode_promise(&p), durable)
                })
        }),
        PAXOS_PROPOSE => decode_proposal(payload).and_then(|(table, ballot, update)| {
            paxos
                .propose(
                    storage,
                    table,
                    ballot,
                    &update,
                    Bytes::copy_from_slice(&payload[16..]),
                    now,
                )
                .map(|(ok, promised, durable)| (encode_accept(ok, promised), durable))
        }),
        PAXOS_PROPOSE_COMMIT => decode_proposal(payload).and_then(|(table, ballot, update)| {
            paxos
                .propose_commit(storage, table, ballot, update, now)
                .map(|(ok, promised, durable)| (encode_accept(ok, promised), durable))
        }),
        PAXOS_COMMIT => decode_proposal(payload).and_then(|(table, ballot, update)| {
            paxos
                .commit(storage, table, ballot, update, now)
                .map(|durable| (Bytes::new(), Some(durable)))
        }),
        _ => Err(format!("not a paxos verb: {verb}")),
    };
    async move {
        if let Some(mut d) = background {
            // Usually still waiting for its fsync (over the memtable limit
            // it may also have to be appended): finished by a task.
            if futures::poll!(&mut d).is_pending() {
                tokio::spawn(async move {
                    if let Err(e) = d.await {
                        tracing::warn!(error = %e, "paxos promise record failed");
                    }
                });
            }
        }
        let (answer, durable) = res?;
        if let Some(d) = durable {
            d.await.map_err(|e| e.to_string())?;
        }
        Ok(answer)
    }
    .boxed()
}

pub(super) fn register_handlers(
    messenger: &Messenger,
    storage: Arc<dyn StorageEngine>,
    paxos: Arc<PaxosReplica>,
    stage: Arc<ReplicaStage>,
) {
    for verb in [
        PAXOS_PREPARE,
        PAXOS_PROPOSE,
        PAXOS_PROPOSE_COMMIT,
        PAXOS_COMMIT,
    ] {
        let (s, p, st) = (storage.clone(), paxos.clone(), stage.clone());
        messenger.register(verb, move |msg: Inbound| {
            let Some(msg) = st.admit(verb, msg) else {
                return;
            };
            let Some(responder) = msg.responder else {
                return;
            };
            let answer = serve_paxos(s.as_ref(), &p, verb, &msg.payload, false);
            tokio::spawn(async move { respond(responder, answer.await, verb) });
        });
    }
}

/// A 48-bit node id for ballots, from the host id.
fn ballot_node(host: HostId) -> u64 {
    let b = host.as_bytes();
    u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]])
}

fn cas_timeout(cl: ConsistencyLevel, received: usize, block_for: usize) -> CoordinatorError {
    CoordinatorError::WriteTimeout {
        consistency: cl,
        received,
        block_for,
        write_type: WriteType::Cas,
    }
}

impl Coordinator {
    /// A ballot above `above` and above every timestamp this coordinator
    /// gave out.
    fn next_ballot(&self, above: Option<Ballot>) -> Ballot {
        let mut micros = self.inner.timestamps.next();
        if let Some(a) = above {
            micros = micros.max(a.micros() + 1);
        }
        Ballot::new(
            micros,
            ballot_node(self.local()),
            rand::thread_rng().gen::<u16>(),
        )
    }

    fn paxos_send(
        &self,
        t: &Target,
        verb: gyre_net::Verb,
        payload: Bytes,
    ) -> BoxFuture<'static, std::result::Result<Bytes, String>> {
        if t.replica.host == self.local() {
            return serve_paxos(
                self.inner.storage.as_ref(),
                &self.inner.paxos,
                verb,
                &payload,
                true,
            );
        }
        let (messenger, addr) = (self.inner.messenger.clone(), t.addr);
        let timeout = self.inner.config.write_timeout;
        async move {
            messenger
                .request(addr, verb, payload, timeout)
                .await
                .map_err(|e| e.to_string())
        }
        .boxed()
    }

    /// One Paxos request to `t`, answered with the replica's host.
    fn paxos_ask(
        &self,
        t: &Target,
        verb: gyre_net::Verb,
        payload: Bytes,
    ) -> BoxFuture<'static, (HostId, std::result::Result<Bytes, String>)> {
        let host = t.replica.host;
        self.paxos_send(t, verb, payload)
            .map(move |r| (host, r))
            .boxed()
    }

    /// Sends `payload` to the first `first` targets (at least `required`)
    /// and collects `required` answers that `accept` takes (`Ok(Ok)`); an
    /// `Ok(Err)` answer is a rejection naming the replica's promised
    /// ballot. The other targets are asked as soon as one asked fails or
    /// refuses, or after [`SPECULATE_AFTER`] without a quorum: any quorum
    /// is a Paxos quorum, and asking only one suffices in the common case
    /// (this saves the third replica's read, state record and messages of
    /// each round). A prepare ends at the first rejection. A proposal
    /// (`partial_is_unknown`) is only `Rejected` when every target
    /// answered and none accepted: accepted by some but not enough, it
    /// may still be committed by a later proposer, so the outcome is
    /// unknown (a CAS timeout, as in Cassandra).
    #[allow(clippy::too_many_arguments)]
    async fn paxos_round<T: Send + 'static>(
        &self,
        targets: &[&Target],
        first: usize,
        required: usize,
        verb: gyre_net::Verb,
        payload: Bytes,
        partial_is_unknown: bool,
        accept: impl Fn(&Bytes) -> std::result::Result<std::result::Result<T, Option<Ballot>>, String>,
    ) -> Round<Vec<(HostId, T)>> {
        let first = first.max(required).min(targets.len());
        let (asked, spares) = targets.split_at(first);
        let mut inflight: FuturesUnordered<_> = asked
            .iter()
            .map(|t| self.paxos_ask(t, verb, payload.clone()))
            .collect();
        let started = Instant::now();
        let deadline = started + self.inner.config.write_timeout;
        let speculate_at = started + SPECULATE_AFTER.min(self.inner.config.write_timeout);
        let mut spared = spares.is_empty();
        let mut got = Vec::with_capacity(required);
        let mut failed = 0;
        let mut rejected: Option<Option<Ballot>> = None;
        while got.len() < required {
            let wake = if spared {
                deadline
            } else {
                speculate_at.min(deadline)
            };
            let mut ask_rest = false;
            match timeout_at(wake, inflight.next()).await {
                Ok(Some((host, Ok(bytes)))) => match accept(&bytes) {
                    Ok(Ok(v)) => got.push((host, v)),
                    Ok(Err(higher)) => {
                        if !partial_is_unknown {
                            return Round::Rejected(higher);
                        }
                        rejected = Some(rejected.flatten().max(higher));
                        ask_rest = true;
                    }
                    Err(e) => {
                        tracing::warn!(%host, error = %e, ?verb, "malformed paxos answer");
                        failed += 1;
                        ask_rest = true;
                    }
                },
                Ok(Some((host, Err(e)))) => {
                    tracing::debug!(%host, error = %e, ?verb, "paxos request failed");
                    failed += 1;
                    ask_rest = true;
                }
                Ok(None) if spared => break,
                Err(_) if spared || Instant::now() >= deadline => break,
                Ok(None) | Err(_) => ask_rest = true,
            }
            if ask_rest && !spared {
                spared = true;
                for t in spares {
                    inflight.push(self.paxos_ask(t, verb, payload.clone()));
                }
            }
            if rejected.is_none() && targets.len() - failed < required {
                break;
            }
        }
        if got.len() >= required {
            return Round::Done(got);
        }
        match rejected {
            Some(higher) if got.is_empty() && failed == 0 && inflight.is_empty() => {
                Round::Rejected(higher)
            }
            Some(higher) => Round::Partial(got.len(), higher),
            None => Round::Timeout(got.len()),
        }
    }

    /// Commits `update` under `ballot` on every replica (natural and
    /// pending, all datacenters) and waits for `cl`. `payload` is the
    /// proposal as proposed ([`encode_proposal`]): the commit carries the
    /// same bytes.
    async fn paxos_commit(
        &self,
        table: TableId,
        update: &Partition,
        payload: Bytes,
        cl: ConsistencyLevel,
    ) -> Result<()> {
        let (strategy, natural, pending) = self.plan(table, update.key.token)?;
        let mut tracker = WriteTracker::new(
            cl,
            &strategy,
            self.dc(),
            natural.iter().map(|t| t.replica.clone()).collect(),
            pending.iter().map(|t| t.replica.clone()).collect(),
            WriteType::Simple,
        )?;
        let mut inflight = FuturesUnordered::new();
        let mut dead = Vec::new();
        for t in natural.iter().chain(&pending) {
            let host = t.replica.host;
            if t.alive {
                inflight.push(
                    self.paxos_send(t, PAXOS_COMMIT, payload.clone())
                        .map(move |r| (host, r.is_ok())),
                );
            } else {
                dead.push(host);
            }
        }
        for host in dead {
            if self.hint(host, table, update.clone()).await {
                tracker.hint_stored(host);
            }
        }
        let deadline = Instant::now() + self.inner.config.write_timeout;
        while !tracker.is_complete() {
            match timeout_at(deadline, inflight.next()).await {
                Ok(Some((host, true))) => {
                    tracker.ack(host);
                }
                Ok(Some((host, false))) => {
                    if self.hint(host, table, update.clone()).await {
                        tracker.hint_stored(host);
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        if !inflight.is_empty() {
            // The rest commit in the background (a later prepare repairs
            // any that miss it).
            tokio::spawn(async move { while inflight.next().await.is_some() {} });
        }
        if tracker.is_complete() {
            Ok(())
        } else {
            tracker.timeout().into_result()
        }
    }

    /// Compare-and-set on one partition: Paxos among the replicas that
    /// `serial` counts (SERIAL: all; LOCAL_SERIAL: this datacenter's),
    /// `decide` run on the data read by the prepare, the update (if any)
    /// proposed and committed at `commit`. Retries with randomized backoff
    /// under contention; past `cas_contention_timeout` a WriteTimeout of
    /// type CAS, whose outcome is unknown (the proposal may yet commit).
    pub async fn cas(
        &self,
        table: TableId,
        key: &DecoratedKey,
        filter: ReadFilter,
        serial: ConsistencyLevel,
        commit: ConsistencyLevel,
        mut decide: CasDecide<'_>,
    ) -> Result<CasOutcome> {
        if !serial.is_serial() {
            return Err(CoordinatorError::InvalidRequest(
                "Invalid consistency for conditional update. Must be one of SERIAL or LOCAL_SERIAL"
                    .into(),
            ));
        }
        if commit.is_serial() {
            return Err(CoordinatorError::InvalidRequest(format!(
                "{commit} is not supported as conditional update commit consistency. Use ANY if you mean \"make sure it is accepted but I don't care how many replicas commit it for non-SERIAL reads\""
            )));
        }
        let (strategy, natural, pending) = self.plan(table, key.token)?;
        let local_only = serial == ConsistencyLevel::LocalSerial;
        let in_scope = |t: &&Target| !local_only || t.replica.dc == self.dc();
        let nat: Vec<&Target> = natural.iter().filter(in_scope).collect();
        let pend: Vec<&Target> = pending.iter().filter(in_scope).collect();
        let required = nat.len() / 2 + 1 + pend.len();
        if pend.len() > 1 {
            // Cassandra: "Cannot perform LWT operation as there is more
            // than one pending range movement".
            return Err(CoordinatorError::Unavailable {
                consistency: serial,
                required,
                alive: 0,
            });
        }
        // This node's replica first: a round asks a quorum first (see
        // `paxos_round`), and its own answer costs no network hop.
        let mut live: Vec<&Target> = nat
            .iter()
            .chain(&pend)
            .filter(|t| t.alive)
            .copied()
            .collect();
        live.sort_by_key(|t| t.replica.host != self.local());
        if live.len() < required {
            return Err(CoordinatorError::Unavailable {
                consistency: serial,
                required,
                alive: live.len(),
            });
        }
        let now = self.inner.clock.now();
        let deadline = Instant::now() + self.inner.config.cas_contention_timeout;
        let mut above: Option<Ballot> = None;
        let mut first = true;
        // An earlier proposal this round re-proposed and got accepted by a
        // quorum: committed by the next prepare (Cassandra's
        // PaxosCommitAndPrepare), which saves a round trip.
        let mut agreed: Option<Agreed> = None;
        loop {
            if !first && agreed.is_none() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(cas_timeout(serial, 0, required));
                }
                let pause = rand::thread_rng().gen_range(0..MAX_BACKOFF.as_micros() as u64);
                tokio::time::sleep(Duration::from_micros(pause).min(left)).await;
            }
            first = false;
            let ballot = self.next_ballot(above);
            let read = messages::ReadCommand {
                table,
                key: key.clone(),
                filter: filter.clone(),
                now,
            };
            // A prepare that commits an agreed proposal goes to every live
            // replica (the others were left to it by `commit_beyond`).
            let first = if agreed.is_some() {
                live.len()
            } else {
                required
            };
            let promises = match self
                .paxos_round(
                    &live,
                    first,
                    required,
                    PAXOS_PREPARE,
                    encode_prepare(&read, ballot, agreed.take().as_ref()),
                    false,
                    |b| {
                        let p: Promise = decode_promise(b)?;
                        Ok(if p.ok { Ok(p) } else { Err(p.promised) })
                    },
                )
                .await
            {
                Round::Done(p) => p,
                Round::Rejected(higher) | Round::Partial(_, higher) => {
                    above = above.max(higher);
                    continue;
                }
                Round::Timeout(n) => return Err(cas_timeout(serial, n, required)),
            };
            // The proposal goes to the replicas that promised first.
            let promisers: Vec<&Target> = live
                .iter()
                .filter(|t| promises.iter().any(|(h, _)| *h == t.replica.host))
                .chain(
                    live.iter()
                        .filter(|t| promises.iter().all(|(h, _)| *h != t.replica.host)),
                )
                .copied()
                .collect();
            let max_commit = promises.iter().filter_map(|(_, p)| p.committed).max();
            // Our update is written at the ballot's time: it must be later
            // than the last commit's, not just a higher ballot of the same
            // microsecond (LWW would then tie).
            if let Some(c) = max_commit.filter(|c| c.micros() >= ballot.micros()) {
                above = above.max(Some(c));
                continue;
            }
            let in_progress = promises
                .iter()
                .filter_map(|(_, p)| p.accepted.as_ref())
                .filter(|(b, _)| Some(*b) > max_commit)
                .max_by_key(|(b, _)| *b)
                .map(|(_, u)| u.clone());
            if let Some(update) = in_progress {
                // Finish the earlier proposal under our ballot (keeping its
                // timestamps), then start over: the next prepare commits it
                // on the replicas polled; the others get it in the
                // background.
                match self
                    .propose(
                        &promisers,
                        required,
                        encode_proposal(table, ballot, &update),
                    )
                    .await
                {
                    Round::Done(()) => {
                        self.commit_beyond(table, ballot, &update, &live);
                        agreed = Some((ballot, update));
                    }
                    // Someone else's proposal: whoever outbid us finishes it.
                    Round::Rejected(higher) | Round::Partial(_, higher) => {
                        above = above.max(higher)
                    }
                    Round::Timeout(n) => return Err(cas_timeout(serial, n, required)),
                }
                continue;
            }
            let mut current: Option<Partition> = None;
            let mut lagging = Vec::new();
            for (host, p) in promises {
                if p.committed < max_commit {
                    lagging.push(host);
                }
                if let Some(d) = p.data {
                    match current.as_mut() {
                        Some(c) => gyre_common::lww::merge_partitions(c, d),
                        None => current = Some(d),
                    }
                }
            }
            // Replicas that missed the last commit get the quorum's data
            // first, so that any quorum read later sees it.
            if let (false, Some(data)) = (lagging.is_empty(), current.as_ref()) {
                let m = Mutation::new(table, data.clone());
                let acks = lagging.iter().filter_map(|h| {
                    live.iter()
                        .find(|t| t.replica.host == *h)
                        .map(|t| self.send_mutation(*h, t.addr, &m))
                });
                if !futures::future::join_all(acks)
                    .await
                    .into_iter()
                    .all(|ok| ok)
                {
                    continue;
                }
            }
            let update = decide(current.as_ref(), ballot.micros())
                .map_err(CoordinatorError::InvalidRequest)?;
            let Some(update) = update else {
                return Ok(CasOutcome {
                    applied: false,
                    current,
                });
            };
            let proposal = encode_proposal(table, ballot, &update);
            // Two acceptors are a quorum and this node is one of them: it
            // accepts first, then the others accept and commit at once.
            let fast = required == 2
                && pending.is_empty()
                && nat.len() == natural.len()
                && live.first().is_some_and(|t| t.replica.host == self.local());
            if fast {
                match self
                    .propose_and_commit(&strategy, &natural, table, &update, proposal, commit)
                    .await
                {
                    Round::Done(r) => {
                        r?;
                        return Ok(CasOutcome {
                            applied: true,
                            current,
                        });
                    }
                    Round::Rejected(higher) => {
                        above = above.max(higher);
                        continue;
                    }
                    Round::Partial(n, _) | Round::Timeout(n) => {
                        return Err(cas_timeout(serial, n, required))
                    }
                }
            }
            match self.propose(&promisers, required, proposal.clone()).await {
                Round::Done(()) => {}
                Round::Rejected(higher) => {
                    above = above.max(higher);
                    continue;
                }
                // Accepted by some: it may yet be committed, outcome unknown.
                Round::Partial(n, _) | Round::Timeout(n) => {
                    return Err(cas_timeout(serial, n, required))
                }
            }
            self.paxos_commit(table, &update, proposal, commit).await?;
            return Ok(CasOutcome {
                applied: true,
                current,
            });
        }
    }

    /// Commits an agreed proposal in the background on the replicas (all
    /// datacenters, pending included) outside `polled`: a dead one gets a
    /// hint.
    fn commit_beyond(
        &self,
        table: TableId,
        ballot: Ballot,
        update: &Partition,
        polled: &[&Target],
    ) {
        let Ok((_, natural, pending)) = self.plan(table, update.key.token) else {
            return;
        };
        let rest: Vec<Target> = natural
            .into_iter()
            .chain(pending)
            .filter(|t| polled.iter().all(|p| p.replica.host != t.replica.host))
            .collect();
        if rest.is_empty() {
            return;
        }
        let (me, update) = (self.clone(), update.clone());
        let payload = encode_proposal(table, ballot, &update);
        tokio::spawn(async move {
            for t in rest {
                let host = t.replica.host;
                let ok = t.alive
                    && me
                        .paxos_send(&t, PAXOS_COMMIT, payload.clone())
                        .await
                        .is_ok();
                if !ok {
                    me.hint(host, table, update.clone()).await;
                }
            }
        });
    }

    /// Phase 2 and the commit when this node's replica and any other make
    /// a quorum (every replica in the serial scope, none pending): the own
    /// replica accepts `proposal` first (durably); then every other live
    /// replica gets PAXOS_PROPOSE_COMMIT, which accepts and, the proposal
    /// being chosen with the first acceptance, applies it. Saves the
    /// separate commit round trip (the commit is awaited at `cl` as in
    /// [`Self::paxos_commit`]: acceptances are commits there, this
    /// replica commits once one came, replicas that refused or failed get
    /// the commit or a hint). `Rejected`: the own replica refused (nobody
    /// else was asked); `Partial` / `Timeout`: no other replica accepted,
    /// so the outcome is unknown (the own replica's acceptance may yet be
    /// finished by a later proposer). `Done(Err)`: chosen, but the commit
    /// did not reach `cl`.
    async fn propose_and_commit(
        &self,
        strategy: &ReplicationStrategy,
        natural: &[Target],
        table: TableId,
        update: &Partition,
        proposal: Bytes,
        cl: ConsistencyLevel,
    ) -> Round<Result<()>> {
        let me = self.local();
        match serve_paxos(
            self.inner.storage.as_ref(),
            &self.inner.paxos,
            PAXOS_PROPOSE,
            &proposal,
            true,
        )
        .await
        .and_then(|b| decode_accept(&b))
        {
            Ok((true, _)) => {}
            Ok((false, promised)) => return Round::Rejected(promised),
            Err(e) => {
                tracing::warn!(error = %e, "own replica failed to accept a proposal");
                return Round::Timeout(0);
            }
        }
        let mut tracker = match WriteTracker::new(
            cl,
            strategy,
            self.dc(),
            natural.iter().map(|t| t.replica.clone()).collect(),
            Vec::new(),
            WriteType::Simple,
        ) {
            Ok(t) => t,
            Err(e) => return Round::Done(Err(e)),
        };
        let mut inflight: FuturesUnordered<BoxFuture<'static, Answer>> = FuturesUnordered::new();
        let mut dead = Vec::new();
        for t in natural.iter().filter(|t| t.replica.host != me) {
            if t.alive {
                inflight.push(
                    self.paxos_ask(t, PAXOS_PROPOSE_COMMIT, proposal.clone())
                        .map(|(h, r)| (h, true, r))
                        .boxed(),
                );
            } else {
                dead.push(t.replica.host);
            }
        }
        let commit_to = |t: &Target| {
            self.paxos_send(t, PAXOS_COMMIT, proposal.clone())
                .map({
                    let h = t.replica.host;
                    move |r| (h, false, r)
                })
                .boxed()
        };
        let target = |h: HostId| natural.iter().find(|t| t.replica.host == h);
        let deadline = Instant::now() + self.inner.config.write_timeout;
        let mut chosen = false;
        // Before the proposal is chosen: replicas that refused it (they
        // get the commit then) or failed (hinted then).
        let (mut refused_by, mut failed_on): (Vec<HostId>, Vec<HostId>) = (Vec::new(), Vec::new());
        let mut higher: Option<Ballot> = None;
        while !(chosen && tracker.is_complete()) {
            let (host, proposing, res) = match timeout_at(deadline, inflight.next()).await {
                Ok(Some(ev)) => ev,
                Ok(None) | Err(_) => break,
            };
            let accepted = match (&res, proposing) {
                (Ok(b), true) => match decode_accept(b) {
                    Ok((ok, promised)) => {
                        if !ok {
                            higher = higher.max(promised);
                        }
                        Some(ok)
                    }
                    Err(e) => {
                        tracing::warn!(%host, error = %e, "malformed paxos answer");
                        None
                    }
                },
                (Ok(_), false) => Some(true),
                (Err(e), _) => {
                    tracing::debug!(%host, error = %e, proposing, "paxos request failed");
                    None
                }
            };
            match accepted {
                Some(true) => {
                    if !chosen {
                        chosen = true;
                        // This replica commits now; those that refused get
                        // the commit, the failed and the dead a hint.
                        let own = natural.iter().find(|t| t.replica.host == me);
                        for t in own
                            .into_iter()
                            .chain(refused_by.iter().filter_map(|h| target(*h)))
                        {
                            inflight.push(commit_to(t));
                        }
                        for h in failed_on.drain(..).chain(dead.drain(..)) {
                            if self.hint(h, table, update.clone()).await {
                                tracker.hint_stored(h);
                            }
                        }
                    }
                    tracker.ack(host);
                }
                Some(false) if chosen => {
                    if let Some(t) = target(host) {
                        inflight.push(commit_to(t));
                    }
                }
                Some(false) => refused_by.push(host),
                None if chosen => {
                    if self.hint(host, table, update.clone()).await {
                        tracker.hint_stored(host);
                    }
                }
                None => failed_on.push(host),
            }
        }
        if !chosen {
            // Accepted here only: a later proposer may still finish it.
            return if refused_by.is_empty() {
                Round::Timeout(1)
            } else {
                Round::Partial(1, higher)
            };
        }
        if !inflight.is_empty() {
            // The rest commit in the background (a later prepare repairs
            // any that miss it).
            tokio::spawn(async move { while inflight.next().await.is_some() {} });
        }
        Round::Done(if tracker.is_complete() {
            Ok(())
        } else {
            tracker.timeout().into_result()
        })
    }

    /// Proposes `proposal` ([`encode_proposal`]) to a quorum of `live`.
    async fn propose(&self, live: &[&Target], required: usize, proposal: Bytes) -> Round<()> {
        match self
            .paxos_round(
                live,
                required,
                required,
                PAXOS_PROPOSE,
                proposal,
                true,
                |b| {
                    let (ok, promised) = decode_accept(b)?;
                    Ok(if ok { Ok(()) } else { Err(promised) })
                },
            )
            .await
        {
            Round::Done(_) => Round::Done(()),
            Round::Rejected(b) => Round::Rejected(b),
            Round::Timeout(n) => Round::Timeout(n),
            Round::Partial(n, b) => Round::Partial(n, b),
        }
    }

    /// A read at SERIAL / LOCAL_SERIAL: a Paxos round that finishes any
    /// proposal in progress and returns the data a quorum holds. Timeouts
    /// are ReadTimeouts.
    pub async fn serial_read(
        &self,
        table: TableId,
        key: &DecoratedKey,
        filter: ReadFilter,
        serial: ConsistencyLevel,
    ) -> Result<Option<Partition>> {
        let commit = if serial == ConsistencyLevel::LocalSerial {
            ConsistencyLevel::LocalQuorum
        } else {
            ConsistencyLevel::Quorum
        };
        match self
            .cas(
                table,
                key,
                filter,
                serial,
                commit,
                Box::new(|_, _| Ok(None)),
            )
            .await
        {
            Ok(o) => Ok(o.current),
            Err(CoordinatorError::WriteTimeout {
                consistency,
                received,
                block_for,
                ..
            }) => Err(CoordinatorError::ReadTimeout {
                consistency,
                received,
                block_for,
                data_present: false,
            }),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use gyre_storage::{
        EngineStats, LsmConfig, LsmEngine, ScanPage, ScanRequest, TableOptions, TableStats,
        WriteFuture,
    };

    /// An engine whose Paxos promise records (a `system.paxos` write of
    /// the promised ballot alone) never become durable.
    struct PromisesNeverDurable(LsmEngine);

    impl StorageEngine for PromisesNeverDurable {
        fn create_table(&self, id: TableId, o: TableOptions) -> gyre_storage::Result<()> {
            self.0.create_table(id, o)
        }
        fn drop_table(&self, id: TableId) -> gyre_storage::Result<()> {
            self.0.drop_table(id)
        }
        fn truncate_table(&self, id: TableId) -> gyre_storage::Result<()> {
            self.0.truncate_table(id)
        }
        fn tables(&self) -> Vec<(TableId, TableOptions)> {
            self.0.tables()
        }
        fn apply(&self, table: TableId, update: Partition) -> gyre_storage::Result<()> {
            self.0.apply(table, update)
        }
        fn apply_mutation(&self, m: Mutation) -> WriteFuture {
            let promise_only = m.table() == crate::paxos::PAXOS_TABLE
                && m.update().rows.values().all(|r| {
                    r.cells.len() == 1 && r.cells.keys().all(|n| n.column.as_ref() == b"promised")
                });
            let durable = self.0.apply_mutation(m);
            if promise_only {
                Box::pin(futures::future::pending())
            } else {
                durable
            }
        }
        fn read(
            &self,
            table: TableId,
            key: &DecoratedKey,
            filter: &ReadFilter,
            now: LocalTime,
        ) -> gyre_storage::Result<Option<Partition>> {
            self.0.read(table, key, filter, now)
        }
        fn scan(
            &self,
            table: TableId,
            request: &ScanRequest,
            now: LocalTime,
        ) -> gyre_storage::Result<ScanPage> {
            self.0.scan(table, request, now)
        }
        fn flush(&self, table: Option<TableId>) -> gyre_storage::Result<()> {
            self.0.flush(table)
        }
        fn compact(&self, table: TableId) -> gyre_storage::Result<()> {
            self.0.compact(table)
        }
        fn table_stats(&self, table: TableId) -> gyre_storage::Result<TableStats> {
            self.0.table_stats(table)
        }
        fn engine_stats(&self) -> EngineStats {
            self.0.engine_stats()
        }
    }

    #[tokio::test]
    async fn only_the_coordinators_own_promise_is_answered_before_it_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let engine = PromisesNeverDurable(LsmEngine::open(LsmConfig::in_dir(dir.path())).unwrap());
        let table = TableId(uuid::Uuid::from_u128(42));
        engine.create_table(table, TableOptions::default()).unwrap();
        crate::paxos::create_table(&engine).unwrap();
        let paxos = PaxosReplica::default();
        let prepare = |key: &'static str, ballot: Ballot| {
            let read = messages::ReadCommand {
                table,
                key: DecoratedKey::new(key),
                filter: ReadFilter::all(),
                now: 0,
            };
            encode_prepare(&read, ballot, None)
        };
        let wait = Duration::from_millis(300);
        // Own: answered although its record is not durable.
        let own = serve_paxos(
            &engine,
            &paxos,
            PAXOS_PREPARE,
            &prepare("a", Ballot::new(10, 1, 0)),
            true,
        );
        let promise = decode_promise(&tokio::time::timeout(wait, own).await.unwrap().unwrap());
        assert!(promise.unwrap().ok);
        // Another coordinator's: answered only once durable.
        let remote = serve_paxos(
            &engine,
            &paxos,
            PAXOS_PREPARE,
            &prepare("b", Ballot::new(10, 1, 0)),
            false,
        );
        assert!(tokio::time::timeout(wait, remote).await.is_err());
    }
}
