//! The manager's control loop and the operations it drives: the executor of the pure
//! decisions in [`weft_cluster_manager::reconcile`], [`weft_cluster_manager::moves`] and
//! [`weft_cluster_manager::walk`]. This module observes (the map, heartbeats, node-admin
//! answers) and acts; it decides nothing those modules decide.
//!
//! Every tick on the manager's node:
//! 1. nodes silent past the grace period are marked down ([`reconcile::silent`]); a seed
//!    that lost its map replica gets a new one (`map_group`);
//! 2. partitions not yet created are created in one batch at a time ([`Manager::create_batch`]:
//!    replicas opened and the default table made [`CREATE_CONCURRENCY`] partitions at a
//!    time, those built meanwhile recorded in one map update, so a service of thousands of
//!    partitions costs a few map writes, not one each); partitions with a move pending get
//!    a driver task (one per partition, at most [`MAX_OPS`] at a time);
//! 3. replicas an up node no longer reports are suspected ([`reconcile::suspects`]) and
//!    replaced only once their node confirms it lost them; [`reconcile::plan_moves`] picks
//!    replacements and moves off draining nodes, around nodes where a move stalled; each
//!    becomes a pending move in the map, so a new manager resumes it;
//! 4. replicas that nodes report but the map no longer lists are closed;
//! 5. an upgrade walk in the map takes its next step (`upgrade`, [`weft_cluster_manager::walk::next`]);
//! 6. every `balance_every`, when nothing is moving, [`weft_cluster_manager::balance::plan`] evens out replica
//!    counts past the threshold (at most [`MAX_OPS`] moves a round).
//!
//! A move is driven by [`weft_cluster_manager::moves`]: that state machine decides each
//! step (open, learner, catch-up, hand-off, voters, record, close; drop, fresh id, abandon)
//! from what this module observes, and this module carries the steps out over node-admin
//! calls. Every step is idempotent, so a driver that dies midway is simply run again. A
//! learner that makes no progress for `move_stall` (default 120 s, `weft node
//! --move-stall-s`) has its move given up ([`Manager::abandon`]), except an upgrade's
//! stand-in, which is waited on; the count runs across the rounds that retry a failed
//! step, so a target whose node stopped answering is given up the same way.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::{Code, Response, Status};
use weft_cluster_manager::moves::{self, Failure, Hosted, Move, MoveClock, Phase, Progress, Seen, Step, Target};
use weft_cluster_manager::reconcile::{self, Heard};
use weft_cluster_manager::repair;
use weft_cluster_manager::walk::ReplicaAt;
use weft_proto::v1 as pb;
use weft_proto::v1::node_admin_client::NodeAdminClient;
use weft_replica::Replica;
use weft_security::AuthChannel;

use super::{Manager, clock, map};
use weft_client::client::{Client, ClientConfig, ClientError};

/// Most partitions with an operation in flight at once.
pub(super) const MAX_OPS: usize = reconcile::MOVES_AT_ONCE;
/// Partitions a creation batch builds at once (each: its replicas opened one by one, then
/// its default table created through its new primary: mostly waiting on an election).
/// Every group being built is awake (heartbeats, ticks) until it quiesces: at 2,500
/// partitions on 2 cores, 256 at once took 81 s and 128 took 61 s and 59 s (`weft bench
/// density`), with fewer elections timing out.
const CREATE_CONCURRENCY: usize = 128;
/// Partitions in one creation batch, and at most what one map update records as created.
const CREATE_BATCH_MAX: usize = 1024;
/// Time one node-admin step may take (a learner's catch-up has its own, longer one).
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(600);
/// How often a learner's catch-up is polled.
const CATCH_UP_POLL: Duration = Duration::from_millis(250);
/// Time a node may take to confirm that it lost a replica its report missed.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(2);
/// Each partition's primary node as `reports` (reporting node, status) say: the replica
/// that reports itself primary, the highest term winning when a deposed one still does.
/// The one rule for "the primary" the manager acts on and `GetMap` answers.
pub(super) fn primaries<'a>(
    reports: impl Iterator<Item = (u64, &'a pb::ReplicaStatus)>,
) -> std::collections::BTreeMap<u64, u64> {
    let mut best: std::collections::BTreeMap<u64, (u64, u64)> = Default::default();
    for (node, s) in reports.filter(|(_, s)| s.role == pb::Role::Primary as i32) {
        let e = best.entry(s.partition).or_insert((s.term, node));
        if s.term > e.0 {
            *e = (s.term, node);
        }
    }
    best.into_iter().map(|(partition, (_, node))| (partition, node)).collect()
}

/// A node where a move stalled is avoided for that partition this many stall periods.
const STALLED_AVOID_FACTOR: u32 = 10;

/// The table every partition of a service starts with.
pub const DEFAULT_TABLE: &str = "default";

impl Manager {
    pub(super) async fn reconcile_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(reconcile::ROUND_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Some(leader) = self.leading()
                && let Err(e) = self.reconcile(&leader).await
            {
                tracing::debug!(error = %e.message(), "reconcile tick failed; retrying");
            }
        }
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn reconcile(self: &Arc<Self>, leader: &Replica) -> Result<(), Status> {
        let Some((m, _)) = map::read(leader, &self.decoded).await? else {
            return map::create(leader).await;
        };
        if !m.users_initialized || m.cluster_id.is_empty() {
            self.update(|m| Ok(map::init_users(m) | map::init_cluster_id(m))).await?;
            return Ok(());
        }
        // 0. Scheduled backups that are due start now and run beside the rest.
        self.start_due_backups(&m);
        // 1. Liveness.
        let now = clock::now();
        let silent = {
            let soft = self.soft.lock();
            let nodes = m.nodes.values().map(|n| (n.id, n.state == pb::NodeState::Down as i32));
            reconcile::silent(nodes, &heard(&soft), soft.since.unwrap_or(now), now, self.cfg.down_grace)
        };
        if !silent.is_empty() {
            self.update(|m| {
                for id in &silent {
                    if let Some(n) = m.nodes.get_mut(id) {
                        n.state = pb::NodeState::Down as i32;
                    }
                }
                Ok(())
            })
            .await?;
            tracing::warn!(nodes = ?silent, grace = ?self.cfg.down_grace, "nodes down: silent past the grace period");
            return Ok(());
        }
        // 1b. The map's own group, before anything that needs it.
        if self.heal_map_group(leader, &m).await? {
            return Ok(());
        }
        // 2. Operations to drive: creations in batches; moves, at most MAX_OPS at a time.
        let uncreated: Vec<pb::PartitionInfo> = {
            let ops = self.ops.lock();
            let free = |p: &&pb::PartitionInfo| !p.created && !ops.contains(&p.id);
            m.partitions.values().filter(free).take(CREATE_BATCH_MAX).cloned().collect()
        };
        if !uncreated.is_empty() {
            self.spawn_creations(&m, uncreated);
        }
        for p in m.partitions.values().filter(|p| p.created && p.pending.is_some()) {
            if self.ops.lock().len() >= MAX_OPS {
                break;
            }
            self.spawn_op(p.id);
        }
        // 3. Repairs and drains.
        let reported = self.reported();
        let nodes = map::model(&m, &reported);
        // Partitions with a stand-in belong to the upgrade walk until it removes it.
        let walking: Vec<u64> = m.upgrade.iter().flat_map(|u| u.stand_ins.iter().map(|s| s.partition)).collect();
        let settled: Vec<&pb::PartitionInfo> =
            m.partitions.values().filter(|p| p.created && p.pending.is_none() && !walking.contains(&p.id)).collect();
        let mut plan_input: Vec<repair::Partition> = Vec::with_capacity(settled.len());
        // Indexed once per pass: each partition looks itself up (a scan of every report per
        // partition cost the manager most of a core at thousands of partitions).
        let bytes = map::partition_bytes(&reported);
        let heard_now = heard(&self.soft.lock());
        for p in &settled {
            plan_input.push(repair::Partition {
                id: p.id,
                replicas: p.replicas.iter().map(|r| r.node).collect(),
                lost: self.confirm_lost(&m, p, self.lost(&heard_now, p)).await,
                bytes: bytes.get(&p.id).copied().unwrap_or(0),
            });
        }
        let budget = MAX_OPS.saturating_sub(self.ops.lock().len());
        let keep = self.cfg.move_stall.saturating_mul(STALLED_AVOID_FACTOR);
        let avoid = self.soft.lock().stalls.avoid(now, keep);
        let (moves, alarm_texts) = reconcile::plan_moves(&nodes, &plan_input, &avoid, budget);
        self.raise(alarm_texts);
        if !moves.is_empty() {
            self.update(|m| {
                for mv in &moves {
                    let replica = m.next_replica;
                    let Some(p) = m.partitions.get_mut(&mv.partition).filter(|p| p.pending.is_none()) else { continue };
                    p.pending = Some(pb::PendingMove {
                        to: Some(pb::ReplicaPlacement { node: mv.to, replica }),
                        replaces: p.replicas.iter().find(|r| r.node == mv.from).cloned(),
                        reason: mv.reason.text(mv.from),
                        opened: false,
                    });
                    m.next_replica += 1;
                }
                Ok(())
            })
            .await?;
            for mv in &moves {
                tracing::info!(partition = mv.partition, from = mv.from, to = mv.to, reason = %mv.reason.text(mv.from), "replica move planned");
                self.spawn_op(mv.partition);
            }
        }
        // 4. Garbage.
        self.collect_garbage(&m).await;
        // 5. Balancing, on its period, when nothing else is moving.
        // 6. The upgrade walk, one step per tick.
        if let Some(u) = &m.upgrade
            && !u.paused
        {
            self.drive_upgrade(&m).await?;
        }
        let quiet =
            moves.is_empty() && m.upgrade.is_none() && m.partitions.values().all(|p| p.created && p.pending.is_none());
        if let Some(every) = self.cfg.balance_every
            && quiet
        {
            let due = {
                let mut soft = self.soft.lock();
                let last = *soft.balanced.get_or_insert(now);
                let due = now.duration_since(last) >= every;
                if due {
                    soft.balanced = Some(now);
                }
                due
            };
            if due {
                let req = pb::RebalanceRequest { dry_run: false, threshold: 0.0, max_moves: MAX_OPS as u32 };
                self.rebalance(req).await?;
            }
        }
        Ok(())
    }

    /// The time after which a report is sure to reflect `partition`'s last placement change
    /// (a report older than that may miss a replica just opened); `None` before this node's
    /// reign has heard anything.
    fn reports_settle_after(&self, soft: &super::Soft, partition: u64) -> Option<Instant> {
        let since = soft.since?;
        Some(soft.changed.get(&partition).copied().unwrap_or(since).max(since) + self.cfg.heartbeat * 2)
    }

    /// Nodes of `p` that are up and, in a report newer than the partition's last change,
    /// no longer host their replica ([`reconcile::suspects`]).
    /// `heard` is [`heard`] of the manager's soft state, taken once per pass.
    fn lost(&self, heard: &BTreeMap<u64, Heard>, p: &pb::PartitionInfo) -> Vec<u64> {
        let settled = self.reports_settle_after(&self.soft.lock(), p.id);
        let replicas: Vec<ReplicaAt> =
            p.replicas.iter().map(|r| ReplicaAt { node: r.node, replica: r.replica }).collect();
        reconcile::suspects(p.id, &replicas, heard, settled)
    }

    /// Of `suspects` (nodes whose report misses their replica of `p`), those whose node
    /// confirms it: asked now, it answers that it does not host that replica. A report is
    /// only a hint: one built before a move opened a replica and delivered late (a slow
    /// link, a forward through another seed) misses a replica that is alive, and replacing
    /// it would move a healthy replica (or aim a move at a node hosting a member, the
    /// `weft chaos` seed-11 stop). A node that does not answer within
    /// [`CONFIRM_TIMEOUT`] confirms nothing; the next round asks again.
    async fn confirm_lost(&self, m: &pb::ClusterMap, p: &pb::PartitionInfo, suspects: Vec<u64>) -> Vec<u64> {
        let mut lost = Vec::with_capacity(suspects.len());
        for node in suspects {
            let Some(r) = p.replicas.iter().find(|r| r.node == node) else { continue };
            let Ok(addr) = Self::addr_of(m, node) else { continue };
            match tokio::time::timeout(CONFIRM_TIMEOUT, self.hosted(&addr, p.id, r.replica)).await {
                Ok(Ok(None)) => lost.push(node),
                Ok(Ok(Some(_))) => {
                    tracing::info!(
                        partition = p.id,
                        node,
                        replica = r.replica,
                        "a report missed a replica its node still hosts; not replaced"
                    );
                }
                Ok(Err(_)) | Err(_) => {}
            }
        }
        lost
    }

    /// Replaces the standing alarms with `texts`; logs each one once, when it starts.
    fn raise(&self, texts: Vec<String>) {
        let mut soft = self.soft.lock();
        for t in &texts {
            if !soft.alarms.contains(t) {
                tracing::error!(alarm = %t, "cluster alarm");
            }
        }
        soft.alarms = texts.into_iter().collect();
    }

    /// The alarms standing now.
    pub(super) fn alarms(&self) -> Vec<String> {
        let mut v: Vec<String> = self.soft.lock().alarms.iter().cloned().collect();
        v.sort();
        v
    }

    pub(super) fn spawn_op(self: &Arc<Self>, partition: u64) {
        if !self.ops.lock().insert(partition) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.drive(partition).await {
                tracing::warn!(partition, error = %e.message(), "partition operation interrupted; will retry");
            }
            me.ops.lock().remove(&partition);
        });
    }

    /// Creates `parts` (not yet created, none with an operation under way) in one task:
    /// see [`Manager::create_batch`].
    fn spawn_creations(self: &Arc<Self>, m: &pb::ClusterMap, parts: Vec<pb::PartitionInfo>) {
        let ids: Vec<u64> = parts.iter().map(|p| p.id).collect();
        self.ops.lock().extend(ids.iter().copied());
        let (me, m) = (self.clone(), m.clone());
        tokio::spawn(async move {
            if let Err(e) = me.create_batch(&m, parts).await {
                tracing::warn!(error = %e.message(), "partition creations interrupted; will retry");
            }
            let mut ops = me.ops.lock();
            for id in ids {
                ops.remove(&id);
            }
        });
    }

    /// Opens the replicas and creates the default table of each of `parts`,
    /// [`CREATE_CONCURRENCY`] at a time, and records those built as created: one map update
    /// for all that finished while the previous update was being written, so the updates
    /// batch themselves. One that failed stays uncreated, and the next round tries it
    /// again (every step is idempotent).
    async fn create_batch(&self, m: &pb::ClusterMap, parts: Vec<pb::PartitionInfo>) -> Result<(), Status> {
        use futures::StreamExt;
        let mut built = futures::stream::iter(parts)
            .map(|p| async move {
                match self.create_partition(m, &p).await {
                    Ok(()) => Some(p.id),
                    // A partition being restored waits for its state to be staged: expected
                    // (the node's `NotStaged`; any other refusal is worth a warning).
                    Err(e)
                        if p.restoring
                            && e.code() == Code::FailedPrecondition
                            && e.message().contains("no restored state is staged") =>
                    {
                        tracing::debug!(partition = p.id, error = %e.message(), "partition waits for its restored state");
                        None
                    }
                    Err(e) => {
                        tracing::warn!(partition = p.id, error = %e.message(), "partition not created yet; will retry");
                        None
                    }
                }
            })
            .buffer_unordered(CREATE_CONCURRENCY)
            .filter_map(std::future::ready)
            .ready_chunks(CREATE_BATCH_MAX);
        while let Some(built) = built.next().await {
            self.update(|m| {
                for id in &built {
                    if let Some(q) = m.partitions.get_mut(id) {
                        q.created = true;
                        q.restoring = false;
                    }
                }
                Ok(())
            })
            .await?;
            let now = clock::now();
            let mut soft = self.soft.lock();
            for id in &built {
                soft.changed.insert(*id, now);
            }
            tracing::info!(created = built.len(), "partitions created");
        }
        Ok(())
    }

    /// Drives `pid`'s move one step (its log lines carry the partition: the span).
    #[tracing::instrument(level = "info", name = "move", skip(self), fields(partition = pid))]
    async fn drive(self: &Arc<Self>, pid: u64) -> Result<(), Status> {
        let leader = self.leading().ok_or_else(|| Status::unavailable("not the cluster manager"))?;
        let Some((m, _)) = map::read(&leader, &self.decoded).await? else { return Ok(()) };
        let Some(p) = m.partitions.get(&pid).cloned() else { return Ok(()) };
        if !p.created {
            // Creations are batched (`create_batch`); a move waits for its partition.
            return Ok(());
        }
        let Some(pending) = p.pending.clone() else { return Ok(()) };
        let mv = move_of(&m, &p, &pending);
        let done = self.finish_move(&m, &p, &pending, mv.clone()).await;
        match (&done, mv.to) {
            (Ok(()), _) => {
                self.soft.lock().move_clocks.remove(&pid);
                self.moves_done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            // `ABORTED` means the move is already dropped or abandoned.
            (Err(e), Some(to)) if e.code() != Code::Aborted => {
                match moves::on_failure(&mv, self.stalled_for(pid, to.node, None), self.cfg.move_stall) {
                    Failure::Retry => {}
                    Failure::Abandon => return self.abandon(&m, &p, &pending, to).await,
                    Failure::KeepWaiting => return self.keep_waiting(pid, to),
                }
            }
            _ => {}
        }
        done
    }

    /// How long the target of `partition`'s move on `node` has gone without progress,
    /// counted across rounds ([`MoveClock`]).
    fn stalled_for(&self, partition: u64, node: u64, progress: Option<Progress>) -> Duration {
        let now = clock::now();
        let mut soft = self.soft.lock();
        soft.move_clocks
            .entry(partition)
            .or_insert_with(|| MoveClock::new(node, progress, now))
            .observe(node, progress, now)
    }

    pub(super) fn addr_of(m: &pb::ClusterMap, node: u64) -> Result<String, Status> {
        m.nodes
            .get(&node)
            .map(|n| n.addr.clone())
            .ok_or_else(|| Status::not_found(format!("no node {node} in the map")))
    }

    /// Opens `p`'s replicas (followers first, then the one that initializes the group) and
    /// creates its default table; recording it as created is the caller's. A partition
    /// being restored opens the first replica first, from the state a restore staged on its
    /// node (FAILED_PRECONDITION until it has: nothing opens before), and has the tables of
    /// that state, no default one of its own.
    async fn create_partition(&self, m: &pb::ClusterMap, p: &pb::PartitionInfo) -> Result<(), Status> {
        let addrs: Vec<String> = p.replicas.iter().map(|r| Self::addr_of(m, r.node)).collect::<Result<_, _>>()?;
        let members = pb::Membership {
            configs: vec![pb::ReplicaSet { ids: p.replicas.iter().map(|r| r.replica).collect() }],
            nodes: p.replicas.iter().zip(&addrs).map(|(r, a)| (r.replica, a.clone())).collect(),
        };
        let mut order: Vec<usize> = (0..p.replicas.len()).rev().collect();
        if p.restoring {
            order.reverse();
        }
        for i in order {
            let (r, addr) = (&p.replicas[i], &addrs[i]);
            let initial = (i == 0).then(|| members.clone());
            let staged = i == 0 && p.restoring;
            let req = pb::OpenReplicaRequest { partition: p.id, replica: r.replica, mode: 0, initial, staged };
            step(self.admin(addr)?.open_replica(req)).await?;
        }
        if p.restoring {
            tracing::debug!(partition = p.id, service = %p.service, index = p.index, "partition built from a restored state");
            return Ok(());
        }
        let client = Client::new(addrs, ClientConfig::secured(self.host.peers().config().security.clone()));
        match client.create_table(p.id, DEFAULT_TABLE).await {
            Ok(_) => {}
            Err(ClientError::Refused { code: pb::ErrorCode::TableExists, .. }) => {}
            Err(e) => return Err(Status::unavailable(format!("creating table {DEFAULT_TABLE}: {e}"))),
        }
        tracing::debug!(partition = p.id, service = %p.service, index = p.index, "partition built");
        Ok(())
    }

    /// Runs one round of a move: [`moves::next`] decides each step from what this observes
    /// ([`Manager::observe_move`]), this carries it out.
    async fn finish_move(
        &self,
        m: &pb::ClusterMap,
        p: &pb::PartitionInfo,
        pending: &pb::PendingMove,
        mut mv: Move,
    ) -> Result<(), Status> {
        let mut pending = pending.clone();
        let to_addr = match mv.to {
            Some(to) => Some(Self::addr_of(m, to.node)?),
            None => None,
        };
        let deadline = clock::now() + CATCH_UP_TIMEOUT;
        let mut goal = None;
        let mut phase = mv.first_phase();
        loop {
            let seen = self.observe_move(m, p, &mv, phase, to_addr.as_deref(), &mut goal).await;
            let (next, then) = moves::next(&mv, phase, &seen, self.cfg.move_stall);
            let target = |what: &str| match mv.to {
                Some(to) => format!("replica {} of partition {} on node {} {what}", to.replica, p.id, to.node),
                None => format!("partition {}'s move {what}", p.id),
            };
            match next {
                Step::Done => return Ok(()),
                Step::Unreachable => return Err(Status::unavailable(target("did not answer; next round"))),
                Step::Drop { member } => {
                    self.amend_pending(p.id, &pending, |x, _| *x = None).await?;
                    let node = mv.to.map_or(0, |t| t.node);
                    tracing::warn!(partition = p.id, node, member, reason = %pending.reason, "a move's target node already hosts a member of the partition; the move is dropped");
                    return Err(Status::aborted(format!(
                        "node {node} already hosts replica {member} of partition {}; the move ({}) was dropped",
                        p.id, pending.reason
                    )));
                }
                Step::FreshId => {
                    let node = mv.to.map_or(0, |t| t.node);
                    self.amend_pending(p.id, &pending, |x, next_replica| {
                        if let Some(x) = x.as_mut() {
                            x.to = Some(pb::ReplicaPlacement { node, replica: *next_replica });
                            x.opened = false;
                            *next_replica += 1;
                        }
                    })
                    .await?;
                    tracing::warn!(partition = p.id, node, "a move's target was lost; it gets a fresh replica id");
                    return Err(Status::unavailable(target("was lost; retrying with a fresh id")));
                }
                Step::Open { first } => {
                    let (Some(to), Some(addr)) = (mv.to, &to_addr) else { return Err(Status::internal("no target")) };
                    if first {
                        // Recorded before the first open, so a retry after any failure knows.
                        self.amend_pending(p.id, &pending, |x, _| {
                            if let Some(x) = x.as_mut() {
                                x.opened = true;
                            }
                        })
                        .await?;
                        pending.opened = true;
                        mv.opened = true;
                    }
                    let open = pb::OpenReplicaRequest {
                        partition: p.id,
                        replica: to.replica,
                        mode: 0,
                        initial: None,
                        staged: false,
                    };
                    step(self.admin(addr)?.open_replica(open)).await?;
                }
                Step::CloseStray { replica } => {
                    let Some(addr) = &to_addr else { return Err(Status::internal("no target")) };
                    let node = mv.to.map_or(0, |t| t.node);
                    // The map says it is no member; the group must say so too before it is
                    // closed, or a voter the map lost track of would go.
                    let members = self.primary_status(m, p).await.and_then(|(_, st)| st.membership);
                    let Some(members) = members else {
                        return Err(Status::unavailable(target("waits for a primary to confirm a stray")));
                    };
                    if members.nodes.contains_key(&replica) {
                        self.amend_pending(p.id, &pending, |x, _| *x = None).await?;
                        tracing::error!(partition = p.id, node, replica, reason = %pending.reason, "the group has a member the map does not list; the move is dropped");
                        return Err(Status::aborted(format!(
                            "replica {replica} of partition {} on node {node} is a member of the group but not in the map; the move ({}) was dropped",
                            p.id, pending.reason
                        )));
                    }
                    tracing::info!(
                        partition = p.id,
                        node,
                        replica,
                        "closing a replica that is no member where a move's target must open"
                    );
                    step(self.admin(addr)?.close_replica(pb::CloseReplicaRequest {
                        partition: p.id,
                        replica,
                        partition_gone: false,
                    }))
                    .await?;
                }
                Step::AddLearner => {
                    let (Some(to), Some(addr)) = (mv.to, &to_addr) else { return Err(Status::internal("no target")) };
                    let learner = pb::AddLearnerRequest {
                        partition: p.id,
                        replica: to.replica,
                        addr: addr.clone(),
                        blocking: false,
                    };
                    self.on_primary(m, p, STEP_TIMEOUT, |mut c| {
                        let req = learner.clone();
                        async move { c.add_learner(req).await.map(|_| ()) }
                    })
                    .await?;
                }
                Step::Lost => {
                    tracing::warn!(partition = p.id, reason = %pending.reason, "a move's target was lost while it caught up");
                    return Err(Status::unavailable(target("was lost while it caught up")));
                }
                Step::Wait => {
                    if clock::now() > deadline {
                        return Err(Status::deadline_exceeded(target(&format!(
                            "did not catch up within {CATCH_UP_TIMEOUT:?}"
                        ))));
                    }
                    tokio::time::sleep(CATCH_UP_POLL).await;
                }
                Step::Abandon => {
                    let Some(to) = mv.to else { return Err(Status::internal("no target")) };
                    return self.abandon(m, p, &pending, to).await;
                }
                Step::KeepWaiting => {
                    let Some(to) = mv.to else { return Err(Status::internal("no target")) };
                    return self.keep_waiting(p.id, to);
                }
                Step::Transfer(next) => self.transfer_primary(m, p, next).await?,
                Step::SetVoters(voters) => self.set_voters(m, p, voters).await?,
                Step::Record => {
                    let recorded: Vec<pb::ReplicaPlacement> = mv
                        .recorded()
                        .iter()
                        .map(|r| pb::ReplicaPlacement { node: r.node, replica: r.replica })
                        .collect();
                    let mut written = false;
                    self.update(|m| {
                        if let Some(q) = m.partitions.get_mut(&p.id)
                            && q.pending.as_ref() == Some(&pending)
                        {
                            q.replicas = recorded.clone();
                            q.pending = None;
                            written = true;
                        }
                        Ok(())
                    })
                    .await?;
                    if !written {
                        // Only this move's own steps may change its pending record; if
                        // anything else did, the group's voters are now what the map does
                        // not say. Loud, so that it is never taken for a finished move.
                        tracing::error!(partition = p.id, reason = %pending.reason, ?recorded, "a move's pending record changed under it: its result is not in the map");
                        return Err(Status::aborted(format!(
                            "partition {}'s pending move changed while it ran; its voters {recorded:?} were not recorded",
                            p.id
                        )));
                    }
                    self.soft.lock().changed.insert(p.id, clock::now());
                    tracing::info!(partition = p.id, to = ?mv.to.map(|t| t.node), leaving = ?mv.replaces.map(|o| o.node), reason = %pending.reason, "replica move done");
                }
                Step::Close(old) => {
                    if let Ok(addr) = Self::addr_of(m, old.node)
                        && let Ok(mut admin) = self.admin(&addr)
                    {
                        let req =
                            pb::CloseReplicaRequest { partition: p.id, replica: old.replica, partition_gone: false };
                        // Best effort: a node that is down is cleaned up when it reports again.
                        let _ = step(admin.close_replica(req)).await;
                    }
                }
            }
            phase = then;
        }
    }

    /// What [`moves::next`] needs in `phase`: the target node's answer (open, catch-up),
    /// the catch-up goal and stall count, the reported primary (hand-off). `goal` is what
    /// the primary had applied when the catch-up wait began, asked once.
    async fn observe_move(
        &self,
        m: &pb::ClusterMap,
        p: &pb::PartitionInfo,
        mv: &Move,
        phase: Phase,
        to_addr: Option<&str>,
        goal: &mut Option<u64>,
    ) -> Seen {
        let mut seen = Seen::default();
        match (phase, mv.to, to_addr) {
            (Phase::Open | Phase::CatchUp, Some(to), Some(addr)) => {
                if phase == Phase::CatchUp && goal.is_none() {
                    *goal = self.primary_status(m, p).await.map(|(_, st)| st.applied_index);
                }
                seen.goal = *goal;
                seen.target = match self.hosted_any(addr, p.id).await {
                    Ok(Some(st)) => {
                        let progress = (st.last_log_index, st.applied_index, st.snapshot_bytes, st.snapshots_installed);
                        if st.replica == to.replica {
                            seen.stalled_for = self.stalled_for(p.id, to.node, Some(progress));
                        }
                        Target::Hosts(Some(Hosted { replica: st.replica, progress }))
                    }
                    Ok(None) => Target::Hosts(None),
                    Err(e) => {
                        tracing::debug!(partition = p.id, %addr, error = %e.message(), "a move's target node did not answer");
                        Target::Silent
                    }
                };
            }
            (Phase::Transfer, _, _) => seen.primary = self.primary_node(p.id),
            _ => {}
        }
        seen
    }

    /// An upgrade stand-in made no progress for `move_stall`: it is not given up (the walk
    /// would take its UD down one replica short); its count starts over, one warning per
    /// stall period. Pausing or aborting the walk is the operator's call.
    fn keep_waiting(&self, partition: u64, to: ReplicaAt) -> Result<(), Status> {
        let stall = self.cfg.move_stall;
        self.soft.lock().move_clocks.remove(&partition);
        tracing::warn!(
            partition,
            node = to.node,
            replica = to.replica,
            ?stall,
            "an upgrade stand-in made no progress; still waiting"
        );
        Err(Status::deadline_exceeded(format!(
            "stand-in {} of partition {partition} on node {} made no progress for {stall:?}",
            to.replica, to.node
        )))
    }

    /// Gives up a move whose new replica made no progress for `move_stall` (its node
    /// unreachable, or reachable with the primary's stream to it not: a one-way network
    /// fault, a node too loaded to apply). The learner leaves the group (a membership
    /// change to the voters the map lists, which removes leftover learners), its replica
    /// is closed, and the pending move is cleared: a repair or drain is planned afresh
    /// next round, around that node; an operator's move is dropped, and
    /// `ctl move-secondary` says so.
    async fn abandon(
        &self,
        m: &pb::ClusterMap,
        p: &pb::PartitionInfo,
        pending: &pb::PendingMove,
        to: ReplicaAt,
    ) -> Result<(), Status> {
        let stall = self.cfg.move_stall;
        self.set_voters(m, p, p.replicas.iter().map(|r| r.replica).collect()).await?;
        self.amend_pending(p.id, pending, |x, _| *x = None).await?;
        {
            let mut soft = self.soft.lock();
            soft.changed.insert(p.id, clock::now());
            soft.stalls.record(p.id, to.node, clock::now());
        }
        if let Ok(addr) = Self::addr_of(m, to.node)
            && let Ok(mut admin) = self.admin(&addr)
        {
            // Best effort: a replica left behind is closed as a stray.
            let _ = step(admin.close_replica(pb::CloseReplicaRequest {
                partition: p.id,
                replica: to.replica,
                partition_gone: false,
            }))
            .await;
        }
        tracing::warn!(partition = p.id, node = to.node, replica = to.replica, ?stall, reason = %pending.reason, "a move's new replica made no progress; the move was abandoned");
        Err(Status::aborted(format!(
            "replica {} of partition {} on node {} made no progress for {stall:?}; the move ({}) was abandoned",
            to.replica, p.id, to.node, pending.reason
        )))
    }

    /// Makes `voters` the whole membership of `p`'s group, through its primary: removed
    /// voters and any other learner leave (`retain: false`).
    async fn set_voters(&self, m: &pb::ClusterMap, p: &pb::PartitionInfo, voters: Vec<u64>) -> Result<(), Status> {
        let change = pb::ChangeMembershipRequest { partition: p.id, voters, retain: false };
        self.on_primary(m, p, STEP_TIMEOUT, |mut c| {
            let req = change.clone();
            async move { c.change_membership(req).await.map(|_| ()) }
        })
        .await
    }

    /// Applies `edit` to `partition`'s pending move (and the map's next replica id) if the
    /// move is still `expected`: another round may have finished or replaced it meanwhile.
    async fn amend_pending(
        &self,
        partition: u64,
        expected: &pb::PendingMove,
        mut edit: impl FnMut(&mut Option<pb::PendingMove>, &mut u64),
    ) -> Result<(), Status> {
        self.update(|m| {
            if let Some(q) = m.partitions.get_mut(&partition)
                && q.pending.as_ref() == Some(expected)
            {
                edit(&mut q.pending, &mut m.next_replica);
            }
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// The status of `replica` of `partition` on the node at `addr`, or `None` when the
    /// node answers that it does not host it (not at all, or under another id: it
    /// restarted empty). Only the node's own answer counts: any other failure (an
    /// unreachable node) is an error, and the caller asks again later.
    async fn hosted(&self, addr: &str, partition: u64, replica: u64) -> Result<Option<pb::ReplicaStatus>, Status> {
        Ok(self.hosted_any(addr, partition).await?.filter(|st| st.replica == replica))
    }

    /// The status of whichever replica of `partition` the node at `addr` hosts, or `None`
    /// when it answers that it hosts none; other failures are errors, as in
    /// [`Manager::hosted`].
    async fn hosted_any(&self, addr: &str, partition: u64) -> Result<Option<pb::ReplicaStatus>, Status> {
        match step(self.admin(addr)?.status(pb::ReplicaStatusRequest { partition })).await {
            Ok(st) => Ok(Some(st)),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(s),
        }
    }

    /// The node whose report says it is `partition`'s primary ([`primaries`]' rule).
    pub(super) fn primary_node(&self, partition: u64) -> Option<u64> {
        self.primary_nodes().get(&partition).copied()
    }

    /// [`Self::primary_node`] of every partition, in one pass over the reports.
    pub(super) fn primary_nodes(&self) -> BTreeMap<u64, u64> {
        let soft = self.soft.lock();
        primaries(soft.seen.iter().flat_map(|(node, s)| s.replicas.values().map(move |r| (*node, &**r))))
    }

    /// The address of the replica that says it is `p`'s primary now (highest term wins).
    async fn current_primary(&self, m: &pb::ClusterMap, p: &pb::PartitionInfo) -> Option<String> {
        self.primary_status(m, p).await.map(|(addr, _)| addr)
    }

    /// [`Manager::current_primary`] with the status it answered (highest term wins).
    async fn primary_status(&self, m: &pb::ClusterMap, p: &pb::PartitionInfo) -> Option<(String, pb::ReplicaStatus)> {
        let mut best: Option<(String, pb::ReplicaStatus)> = None;
        for r in &p.replicas {
            let Ok(addr) = Self::addr_of(m, r.node) else { continue };
            let Ok(mut admin) = self.admin(&addr) else { continue };
            let asked = tokio::time::timeout(
                Duration::from_millis(500),
                admin.status(pb::ReplicaStatusRequest { partition: p.id }),
            );
            if let Ok(Ok(s)) = asked.await {
                let s = s.into_inner();
                if s.role == pb::Role::Primary as i32 && best.as_ref().is_none_or(|(_, b)| s.term > b.term) {
                    best = Some((addr, s));
                }
            }
        }
        best
    }

    /// Asks `p`'s primary to hand leadership to replica `to`.
    pub(super) async fn transfer_primary(
        &self,
        m: &pb::ClusterMap,
        p: &pb::PartitionInfo,
        to: u64,
    ) -> Result<(), Status> {
        let req = pb::TransferLeaderToRequest { partition: p.id, to };
        self.on_primary(m, p, STEP_TIMEOUT, |mut c| async move { c.transfer_leader(req).await.map(|_| ()) }).await
    }

    /// Runs a node-admin call on the partition's primary: the reported one first, then
    /// every replica's node, following a not-primary answer's hint.
    pub(super) async fn on_primary<F, Fut>(
        &self,
        m: &pb::ClusterMap,
        p: &pb::PartitionInfo,
        timeout: Duration,
        f: F,
    ) -> Result<(), Status>
    where
        F: Fn(NodeAdminClient<AuthChannel>) -> Fut,
        Fut: Future<Output = Result<(), Status>>,
    {
        // Ask the replicas who leads now (reports can be half a second old), so calls go to
        // the primary first instead of making followers refuse them.
        let mut addrs: Vec<String> = self.current_primary(m, p).await.into_iter().collect();
        addrs.extend(self.primary_node(p.id).and_then(|n| Self::addr_of(m, n).ok()));
        addrs.extend(p.replicas.iter().filter_map(|r| Self::addr_of(m, r.node).ok()));
        addrs.dedup();
        let mut last = Status::unavailable(format!("partition {} has no reachable primary", p.id));
        let mut i = 0;
        while i < addrs.len() && i < 16 {
            let addr = addrs[i].clone();
            i += 1;
            let admin = match self.admin(&addr) {
                Ok(a) => a,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            match tokio::time::timeout(timeout, f(admin)).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(s)) if matches!(s.code(), Code::Unavailable | Code::NotFound | Code::Unknown) => {
                    tracing::debug!(partition = p.id, %addr, error = %s.message(), "not the primary here");
                    if let Some(hint) = weft_client::client::leader_hint(&s) {
                        addrs.insert(i, hint);
                    }
                    last = s;
                }
                Ok(Err(s)) => return Err(s),
                Err(_) => last = Status::deadline_exceeded(format!("{addr} did not finish in {timeout:?}")),
            }
        }
        Err(last)
    }

    /// Closes replicas that nodes report but the map does not list (a deleted service, a
    /// replaced replica on a node that was down when it was replaced), [`CLOSES_AT_ONCE`]
    /// at a time. A replica whose partition is gone closes without handing its group on:
    /// the whole group goes (one at a time, with each primary's hand-off waiting on
    /// followers already closed, a deleted service of 2,500 partitions took minutes).
    async fn collect_garbage(&self, m: &pb::ClusterMap) {
        use futures::StreamExt;
        let stray: Vec<(u64, u64, u64, bool)> = {
            let soft = self.soft.lock();
            soft.seen
                .iter()
                .flat_map(|(node, s)| s.replicas.values().map(move |r| (*node, s.at, r)))
                .filter_map(|(node, at, r)| {
                    let settled = self.reports_settle_after(&soft, r.partition).is_some_and(|t| at > t);
                    if r.partition == map::MAP_PARTITION || !settled {
                        return None;
                    }
                    let gone = match m.partitions.get(&r.partition) {
                        None if r.partition < m.next_partition => true,
                        None => return None,
                        Some(p)
                            if p.created
                                && p.pending.is_none()
                                && !p.replicas.iter().any(|x| x.replica == r.replica) =>
                        {
                            false
                        }
                        Some(_) => return None,
                    };
                    Some((node, r.partition, r.replica, gone))
                })
                .collect()
        };
        futures::stream::iter(stray)
            .for_each_concurrent(CLOSES_AT_ONCE, |(node, partition, replica, gone)| async move {
                let Ok(addr) = Self::addr_of(m, node) else { return };
                let Ok(mut admin) = self.admin(&addr) else { return };
                let req = pb::CloseReplicaRequest { partition, replica, partition_gone: gone };
                match step(admin.close_replica(req)).await {
                    Ok(_) => tracing::info!(node, partition, replica, gone, "closed a replica the map no longer lists"),
                    Err(e) => {
                        tracing::debug!(node, partition, replica, error = %e.message(), "closing a stray replica")
                    }
                }
            })
            .await;
    }
}

/// Stray replicas closed at once by [`Manager::collect_garbage`].
const CLOSES_AT_ONCE: usize = 32;

/// One node-admin call under [`STEP_TIMEOUT`].
pub(super) async fn step<T>(call: impl Future<Output = Result<Response<T>, Status>>) -> Result<T, Status> {
    match tokio::time::timeout(STEP_TIMEOUT, call).await {
        Ok(r) => r.map(Response::into_inner),
        Err(_) => Err(Status::deadline_exceeded(format!("node-admin call took over {STEP_TIMEOUT:?}"))),
    }
}

/// The map's pending move of `p` as [`moves::next`] takes it.
fn move_of(m: &pb::ClusterMap, p: &pb::PartitionInfo, pending: &pb::PendingMove) -> Move {
    let at = |r: &pb::ReplicaPlacement| ReplicaAt { node: r.node, replica: r.replica };
    Move {
        partition: p.id,
        to: pending.to.as_ref().map(at),
        replaces: pending.replaces.as_ref().map(at),
        opened: pending.opened,
        stand_in: m.upgrade.iter().flat_map(|u| &u.stand_ins).any(|s| s.partition == p.id && s.stand_in == pending.to),
        members: p.replicas.iter().map(at).collect(),
    }
}

/// What each node last told the manager, as [`reconcile`] takes it.
fn heard(soft: &super::Soft) -> BTreeMap<u64, Heard> {
    soft.seen
        .iter()
        .map(|(node, s)| {
            (*node, Heard { at: s.at, hosted: s.replicas.values().map(|r| (r.partition, r.replica)).collect() })
        })
        .collect()
}
