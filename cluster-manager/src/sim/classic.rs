//! The `classic` policy: the upgrade walk of the platform the reference case ran on (Service
//! Fabric as of 2015-2016), rule by rule, each switchable ([`ClassicRules`]). Sources, read
//! in `microsoft/service-fabric` (the March 2018 code drop, `src/prod/src/Reliability/
//! Failover/`) and `MicrosoftDocs/azure-docs` (`articles/service-fabric/`), are cited in
//! `docs/cluster.md` ("The classic walk").
//!
//! Replicas here are replica *records*, as the failover manager keeps them: a record is live
//! (active, in build, or held as a standby), down (its node is down, still in the
//! configuration) or dropped (kept for [`SimConfig::dropped_keep_s`] under rule 5). The
//! reference's chart of one service's "replica count" is read as a count of these records.
//!
//! Placement of every new replica is weft's own [`placement::choose`] (the same code the
//! live manager places with): on up nodes, fewest replicas first, preferring a UD that holds
//! none of the partition's replicas. Only the rules of when to build, when to drop and when
//! the walk moves on are the reference's.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use super::{SimConfig, SimReport, doubled, empty_report};
use crate::model::{Node, NodeId, NodeStatus};
use crate::placement;
use crate::repair::quorum;
use crate::walk::Placed;

/// The reference platform's rules, each switchable (all on by default: the 2016 platform).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassicRules {
    /// Rule 1: a volatile (in-memory) replica whose node goes down is replaced at once; the
    /// replica-restart wait ([`SimConfig::restart_wait_s`]) applies only to persisted
    /// services (`FailoverUnit.cpp` `OnReplicaDown`; `StatefulServiceDescription.cs`). Off:
    /// every replica waits.
    pub volatile_replaced_at_once: bool,
    /// Rule 2: "maximum difference": no two UDs may differ by more than one replica of a
    /// partition. When a walked UD is back and a partition's layout breaks the rule (a
    /// replacement doubled up while the UD was down), a replica is built in the emptiest UD
    /// and one in the fullest dropped once it is built.
    pub max_difference: bool,
    /// Rule 3: `RestoreReplicaLocationAfterUpgrade` (true until August 2018,
    /// `FailoverConfig.h`; `StateUpdateTask.cpp`): once a UD is back, each replica replaced
    /// while it was down is placed back on its original node (a volatile one is built
    /// again there; a persisted one catches up) and its temporary replacement is dropped.
    pub restore_after_upgrade: bool,
    /// Rule 4: the next UD goes down while volatile replicas are still being built: the
    /// upgrade safety check waits for in-build replicas only of persisted services
    /// (`FailoverUnit::IsSafeToCloseReplica`). Off: the walk waits for every build.
    pub next_ud_during_volatile_builds: bool,
    /// Rule 5: dropped replica records are kept (for [`SimConfig::dropped_keep_s`]) and
    /// counted in the service's replica count. Off: a dropped replica is forgotten.
    pub keep_dropped_records: bool,
}

impl Default for ClassicRules {
    fn default() -> Self {
        ClassicRules {
            volatile_replaced_at_once: true,
            max_difference: true,
            restore_after_upgrade: true,
            next_ud_during_volatile_builds: true,
            keep_dropped_records: true,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Caught up and in the configuration.
    Active,
    /// On a down node, still in the configuration.
    Down,
    /// Being built; in the configuration once done.
    Building,
    /// Persisted, replaced while down, back on an up node, outside the configuration
    /// (holds memory until it expires or is brought back).
    Standby,
    /// Dropped: a record only (kept under rule 5).
    Dropped,
}

/// What a finished build does to another record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Then {
    Nothing,
    /// A restore (rule 3): drop this record, the temporary it supersedes.
    Restore(usize),
    /// A max-difference move (rule 2): drop this record, the replica it moves away from.
    Move(usize),
}

impl Then {
    /// The record this build drops when it is done.
    fn drops(self) -> Option<usize> {
        match self {
            Then::Nothing => None,
            Then::Restore(j) | Then::Move(j) => Some(j),
        }
    }
}

#[derive(Clone, Debug)]
struct Rep {
    partition: usize,
    node: NodeId,
    state: State,
    /// Down: since when. Building: when its copy starts (after the builds queued before it).
    at: f64,
    /// Down: the build that replaces it.
    replaced_by: Option<usize>,
    /// A replacement build: the down record it replaces.
    replaces: Option<usize>,
    then: Then,
    /// Builds: the generation, so a lost build's completion is ignored.
    epoch: u64,
    /// Builds: the node's build slot it holds, and when it finishes there.
    slot: (usize, f64),
    /// Whether the record exists at all (a dropped record past its keep is gone).
    alive: bool,
}

impl Rep {
    /// Counts toward the partition's configuration (its replica count and its layout).
    fn configured(&self) -> bool {
        self.alive
            && match self.state {
                State::Active | State::Building => true,
                State::Down => self.replaced_by.is_none(),
                State::Standby | State::Dropped => false,
            }
    }

    /// Holds memory on its node.
    fn resident(&self) -> bool {
        self.alive && matches!(self.state, State::Active | State::Building | State::Standby)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    // In this order within one millisecond: a build that finishes as its node goes down is
    // done, and a UD is back before the next one goes down.
    BuildDone(usize, u64),
    UdUp(usize),
    UdDown(usize),
    Check,
    StandbyExpires(usize),
    RecordExpires(usize),
}

/// The classic walk on a simulated clock (milliseconds).
pub(super) struct Classic<'a> {
    cfg: &'a SimConfig,
    rules: ClassicRules,
    build_s: f64,
    nodes: Vec<Node>,
    parts: Vec<Placed>,
    uds: Vec<String>,
    reps: Vec<Rep>,
    /// Per partition: its records (indexes into `reps`).
    of_part: Vec<Vec<usize>>,
    /// Each node's UD.
    ud_of: BTreeMap<NodeId, String>,
    /// When each of a node's build slots is free ([`SimConfig::builds_per_node`] each).
    free_at: BTreeMap<NodeId, Vec<f64>>,
    queue: BinaryHeap<Reverse<(u64, Event)>>,
    now: f64,
    epoch: u64,
    /// Per partition: since when it has been below a write quorum.
    below_since: Vec<Option<f64>>,
    at_risk: Vec<bool>,
    /// Per partition: a max-difference move is under way.
    moving: Vec<bool>,
    /// The UD the walk takes down once no build it waits for is left.
    waiting: Option<usize>,
    report: SimReport,
}

fn ms(t: f64) -> u64 {
    (t * 1000.0).round() as u64
}

impl<'a> Classic<'a> {
    pub(super) fn new(nodes: Vec<Node>, parts: Vec<Placed>, uds: &[String], cfg: &'a SimConfig, build_s: f64) -> Self {
        let reps: Vec<Rep> = parts
            .iter()
            .enumerate()
            .flat_map(|(i, p)| {
                p.replicas.iter().map(move |n| Rep {
                    partition: i,
                    node: *n,
                    state: State::Active,
                    at: 0.0,
                    replaced_by: None,
                    replaces: None,
                    then: Then::Nothing,
                    epoch: 0,
                    slot: (0, 0.0),
                    alive: true,
                })
            })
            .collect();
        let n = parts.len();
        let mut of_part = vec![Vec::new(); n];
        for (i, r) in reps.iter().enumerate() {
            of_part[r.partition].push(i);
        }
        let ud_of = nodes.iter().map(|n| (n.id, n.ud.clone())).collect();
        Classic {
            cfg,
            rules: cfg.classic,
            build_s,
            nodes,
            parts,
            uds: uds.to_vec(),
            reps,
            of_part,
            ud_of,
            free_at: BTreeMap::new(),
            queue: BinaryHeap::new(),
            now: 0.0,
            epoch: 0,
            below_since: vec![None; n],
            at_risk: vec![false; n],
            moving: vec![false; n],
            waiting: None,
            report: empty_report(),
        }
    }

    fn at(&mut self, t: f64, e: Event) {
        self.queue.push(Reverse((ms(t), e)));
    }

    fn node_up(&self, id: NodeId) -> bool {
        self.nodes.iter().any(|n| n.id == id && n.status == NodeStatus::Up)
    }

    /// How long a replica that went down waits before it is replaced.
    fn restart_wait(&self) -> f64 {
        if !self.cfg.durable && self.rules.volatile_replaced_at_once { 0.0 } else { self.cfg.restart_wait_s }
    }

    /// Drops record `i`: kept as a record under rule 5, forgotten otherwise.
    fn drop_rep(&mut self, i: usize) {
        let r = &mut self.reps[i];
        if !r.alive || r.state == State::Dropped {
            return;
        }
        if r.state == State::Building {
            // What an abandoned build copied so far; its slot frees now (or, not started
            // yet, when the build before it ends) unless another build queued behind it.
            let done = ((self.now - r.at) / self.build_s.max(1e-9)).clamp(0.0, 1.0);
            self.report.bytes_copied += (self.parts[r.partition].bytes as f64 * done) as u64;
            let (slot, until) = r.slot;
            let free = r.at.max(self.now);
            if let Some(s) = self.free_at.get_mut(&r.node).and_then(|slots| slots.get_mut(slot))
                && *s == until
            {
                *s = free;
            }
        }
        let r = &mut self.reps[i];
        if self.rules.keep_dropped_records {
            r.state = State::Dropped;
            let until = self.now + self.cfg.dropped_keep_s;
            self.at(until, Event::RecordExpires(i));
        } else {
            r.alive = false;
        }
    }

    /// Starts a build of partition `p` on `to`; returns its record.
    fn build(&mut self, p: usize, to: NodeId, replaces: Option<usize>, then: Then) -> usize {
        let slots = self.free_at.entry(to).or_insert_with(|| vec![0.0; self.cfg.builds_per_node.max(1) as usize]);
        // The slot that frees first takes the build.
        let (slot, free) = slots.iter().copied().enumerate().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap_or((0, 0.0));
        let start = free.max(self.now);
        let done = start + self.build_s;
        if let Some(s) = slots.get_mut(slot) {
            *s = done;
        }
        self.epoch += 1;
        let epoch = self.epoch;
        self.reps.push(Rep {
            partition: p,
            node: to,
            state: State::Building,
            at: start,
            replaced_by: None,
            replaces,
            then,
            epoch,
            slot: (slot, done),
            alive: true,
        });
        let i = self.reps.len() - 1;
        self.of_part[p].push(i);
        self.at(done, Event::BuildDone(i, epoch));
        self.report.moves += 1;
        i
    }

    pub(super) fn run(mut self) -> SimReport {
        self.report.replica_records_baseline = self.reps.len() as u64;
        self.report.replica_records_peak = self.reps.len() as u64;
        if !self.uds.is_empty() {
            self.at(0.0, Event::UdDown(0));
        }
        while let Some(Reverse((t, e))) = self.queue.pop() {
            self.now = t as f64 / 1000.0;
            self.handle(e);
            // Everything due at this same moment first, then one look at the cluster.
            while let Some(Reverse((t2, _))) = self.queue.peek()
                && *t2 == t
            {
                let Some(Reverse((_, e))) = self.queue.pop() else { break };
                self.handle(e);
            }
            self.replace();
            self.settle_layout();
            self.advance();
            self.observe();
        }
        // A partition still below a quorum when nothing is left to happen never recovers:
        // its minutes count up to the walk's end, and it counts as short.
        let end = self.report.walk_s;
        for since in self.below_since.iter().flatten() {
            self.report.quorum_loss_partition_minutes += (end - since).max(0.0) / 60.0;
        }
        self.report.partitions_short_at_end = (0..self.parts.len())
            .filter(|p| {
                let active = self.counted(*p).into_iter().filter(|i| self.reps[*i].state == State::Active).count();
                active < self.cfg.replicas
            })
            .count() as u64;
        self.report.doubled_partitions = (0..self.parts.len())
            .filter(|p| {
                let members = self.of_part[*p].iter().map(|i| &self.reps[*i]).filter(|r| r.configured());
                doubled(&self.nodes, members.map(|r| r.node))
            })
            .count() as u64;
        self.report
    }

    fn handle(&mut self, e: Event) {
        match e {
            Event::UdDown(u) => self.ud_down(u),
            Event::UdUp(u) => self.ud_up(u),
            Event::Check => {}
            Event::BuildDone(i, epoch) => {
                let r = &self.reps[i];
                if !(r.alive && r.epoch == epoch && r.state == State::Building) {
                    return;
                }
                self.reps[i].state = State::Active;
                self.report.bytes_copied += self.parts[self.reps[i].partition].bytes;
                self.report.walk_s = self.report.walk_s.max(self.now);
                let then = self.reps[i].then;
                if let Some(j) = then.drops() {
                    self.drop_rep(j);
                }
                if matches!(then, Then::Move(_)) {
                    self.moving[self.reps[i].partition] = false;
                }
            }
            Event::StandbyExpires(i) => {
                if self.reps[i].state == State::Standby {
                    self.drop_rep(i);
                }
            }
            Event::RecordExpires(i) => {
                if self.reps[i].state == State::Dropped {
                    self.reps[i].alive = false;
                }
            }
        }
    }

    fn ud_down(&mut self, u: usize) {
        let ud = self.uds[u].clone();
        let now = self.now;
        for n in self.nodes.iter_mut().filter(|n| n.ud == ud) {
            n.status = NodeStatus::Down;
        }
        let down: Vec<NodeId> = self.nodes.iter().filter(|n| n.ud == ud).map(|n| n.id).collect();
        let mut went_down = Vec::new();
        for i in 0..self.reps.len() {
            let r = self.reps[i].clone();
            if !r.alive || !down.contains(&r.node) {
                continue;
            }
            match r.state {
                State::Active => {
                    self.reps[i].state = State::Down;
                    self.reps[i].at = now;
                    went_down.push(i);
                }
                // A build on a node going down is lost (its original is due again); a
                // standby there is gone.
                State::Building => {
                    if let Some(orig) = r.replaces {
                        self.reps[orig].replaced_by = None;
                    }
                    if matches!(r.then, Then::Move(_)) {
                        self.moving[r.partition] = false;
                    }
                    self.drop_rep(i);
                }
                State::Standby => self.drop_rep(i),
                State::Down | State::Dropped => {}
            }
        }
        // A persisted standby of the partition on an up node is brought back instead of
        // building anew (what standbys are kept for).
        for i in went_down {
            let p = self.reps[i].partition;
            let standby = self.of_part[p].iter().copied().find(|j| {
                let r = &self.reps[*j];
                r.alive && r.state == State::Standby && !down.contains(&r.node)
            });
            if let Some(j) = standby {
                self.reps[j].state = State::Active;
                self.reps[i].replaced_by = Some(j);
            }
        }
        self.at(now + self.cfg.upgrade_s, Event::UdUp(u));
        let wait = self.restart_wait();
        self.at(now + wait, Event::Check);
    }

    fn ud_up(&mut self, u: usize) {
        let ud = self.uds[u].clone();
        let now = self.now;
        for n in self.nodes.iter_mut().filter(|n| n.ud == ud) {
            n.status = NodeStatus::Up;
        }
        self.report.walk_s = self.report.walk_s.max(now);
        let up: Vec<NodeId> = self.nodes.iter().filter(|n| n.ud == ud).map(|n| n.id).collect();
        let keep = self.cfg.standby_keep_s;
        for i in 0..self.reps.len() {
            let r = self.reps[i].clone();
            if !(r.alive && r.state == State::Down && up.contains(&r.node)) {
                continue;
            }
            // The temporary replacement, if one was started and still exists.
            let temp = r.replaced_by.filter(|t| self.reps[*t].configured());
            if !self.cfg.durable {
                // Volatile: the node came back empty; the old replica is gone.
                self.drop_rep(i);
                match temp {
                    Some(t) if self.rules.restore_after_upgrade => {
                        self.build(r.partition, r.node, None, Then::Restore(t));
                    }
                    Some(_) => {}
                    // Not replaced yet (the wait outlasted the upgrade): built again here.
                    None => {
                        self.build(r.partition, r.node, None, Then::Nothing);
                    }
                }
            } else {
                match temp {
                    None => self.reps[i].state = State::Active,
                    // Persisted: the replica catches up in place (no copy); the temporary goes.
                    Some(t) if self.rules.restore_after_upgrade => {
                        self.reps[i].state = State::Active;
                        self.reps[i].replaced_by = None;
                        self.drop_rep(t);
                    }
                    Some(_) if keep <= 0.0 => self.drop_rep(i),
                    Some(_) => {
                        self.reps[i].state = State::Standby;
                        self.at(now + keep, Event::StandbyExpires(i));
                    }
                }
            }
        }
        if u + 1 < self.uds.len() {
            if !self.cfg.durable && self.rules.next_ud_during_volatile_builds {
                self.at(now, Event::UdDown(u + 1));
            } else {
                self.waiting = Some(u + 1);
            }
        }
    }

    /// Takes the next UD down once no build is left (the walk waits for builds unless rule
    /// 4 lets a volatile walk go on).
    fn advance(&mut self) {
        let Some(u) = self.waiting else { return };
        if self.reps.iter().any(|r| r.alive && r.state == State::Building) {
            return;
        }
        self.waiting = None;
        let now = self.now;
        self.at(now, Event::UdDown(u));
    }

    /// Replaces replicas down past the restart wait, one build per missing replica.
    fn replace(&mut self) {
        let wait = self.restart_wait();
        let now = self.now;
        let due: Vec<usize> = (0..self.reps.len())
            .filter(|i| {
                let r = &self.reps[*i];
                r.alive && r.state == State::Down && r.replaced_by.is_none() && now - r.at >= wait - 1e-9
            })
            .collect();
        if due.is_empty() {
            return;
        }
        let mut view = self.view();
        for i in due {
            let p = self.reps[i].partition;
            let configured = self.counted(p).len();
            // Past its full count (a replacement of an earlier down replica already counts).
            if configured > self.cfg.replicas {
                continue;
            }
            let hosting = self.hosting(p);
            let bytes = self.parts[p].bytes;
            let Ok(to) = placement::choose(&view, &hosting, bytes) else { continue };
            placement::count_replica(&mut view, to, bytes);
            let b = self.build(p, to, Some(i), Then::Nothing);
            self.reps[i].replaced_by = Some(b);
        }
    }

    /// A partition with fewer replicas than its count and none down builds one; one with
    /// more drops one from its fullest UD (as the platform's balancer drops extras). Rule 2: a partition whose UDs differ by more than
    /// one replica moves one from the fullest UD into the emptiest (built first, then the
    /// other dropped). Only into up nodes, and one move per partition at a time.
    fn settle_layout(&mut self) {
        let mut view: Option<Vec<Node>> = None;
        for p in 0..self.parts.len() {
            if self.moving[p] {
                continue;
            }
            let mut per_ud: BTreeMap<&str, Vec<usize>> = self.uds.iter().map(|u| (u.as_str(), Vec::new())).collect();
            for i in self.counted(p) {
                if let Some(ud) = self.ud_of.get(&self.reps[i].node) {
                    per_ud.entry(ud.as_str()).or_default().push(i);
                }
            }
            let total: usize = per_ud.values().map(Vec::len).sum();
            // Fewer than its count with nothing down to wait for (a restore or an in-place
            // build lost with its node): the failover manager builds one more.
            if total < self.cfg.replicas {
                let hosting = self.hosting(p);
                let bytes = self.parts[p].bytes;
                let all = view.get_or_insert_with(|| self.view());
                if let Ok(to) = placement::choose(all, &hosting, bytes) {
                    placement::count_replica(all, to, bytes);
                    self.build(p, to, None, Then::Nothing);
                }
                continue;
            }
            let Some(most) = per_ud.values().max_by_key(|v| v.len()) else { continue };
            // The replica to move away: an active one (not one in build) of the fullest UD,
            // a temporary replacement before an original.
            let active = || most.iter().copied().filter(|i| self.reps[*i].state == State::Active);
            let Some(from) = active().find(|i| self.reps[*i].replaces.is_some()).or_else(|| active().next_back())
            else {
                continue;
            };
            // More replicas than the partition's count, none of them on its way out (a
            // temporary replaced while down, then superseded by a restore that dropped
            // it, leaves its own replacement): the extra one goes.
            if total > self.cfg.replicas {
                self.drop_rep(from);
                continue;
            }
            let Some((empty, least)) = per_ud.iter().min_by_key(|(_, v)| v.len()) else { continue };
            if !self.rules.max_difference || most.len() <= least.len() + 1 {
                continue;
            }
            let empty = empty.to_string();
            let hosting = self.hosting(p);
            let bytes = self.parts[p].bytes;
            let all = view.get_or_insert_with(|| self.view());
            let Ok(to) = placement::choose(&placement::closed_to_new(all, |n| n.ud != empty), &hosting, bytes) else {
                continue;
            };
            placement::count_replica(all, to, bytes);
            self.moving[p] = true;
            self.build(p, to, None, Then::Move(from));
        }
    }

    /// The records that count toward partition `p`'s replicas and layout: in its
    /// configuration and not on their way out (a restore or a move under way drops them
    /// when it is built).
    fn counted(&self, p: usize) -> Vec<usize> {
        let leaving: Vec<usize> = self.of_part[p]
            .iter()
            .map(|i| &self.reps[*i])
            .filter(|r| r.alive && r.state == State::Building)
            .filter_map(|r| r.then.drops())
            .collect();
        self.of_part[p].iter().copied().filter(|i| self.reps[*i].configured() && !leaving.contains(i)).collect()
    }

    /// Nodes holding a record of partition `p` other than a dropped one: no second
    /// replica goes there.
    fn hosting(&self, p: usize) -> Vec<NodeId> {
        self.of_part[p]
            .iter()
            .map(|i| &self.reps[*i])
            .filter(|r| r.alive && r.state != State::Dropped)
            .map(|r| r.node)
            .collect()
    }

    /// The nodes with their resident replica counts (builds and standbys included).
    fn view(&self) -> Vec<Node> {
        let mut counts: BTreeMap<NodeId, u32> = BTreeMap::new();
        for r in self.reps.iter().filter(|r| r.resident()) {
            *counts.entry(r.node).or_default() += 1;
        }
        self.nodes
            .iter()
            .cloned()
            .map(|mut n| {
                n.load.replicas = counts.get(&n.id).copied().unwrap_or(0);
                n
            })
            .collect()
    }

    fn observe(&mut self) {
        let view = self.view();
        let peak = view.iter().filter(|n| n.status == NodeStatus::Up).map(|n| n.load.replicas).max().unwrap_or(0);
        self.report.peak_replicas_per_node = self.report.peak_replicas_per_node.max(peak);
        let records = self.reps.iter().filter(|r| r.alive).count() as u64;
        self.report.replica_records_peak = self.report.replica_records_peak.max(records);
        let q = quorum(self.cfg.replicas);
        let mut live = vec![0usize; self.parts.len()];
        for r in self.reps.iter().filter(|r| r.alive && r.state == State::Active) {
            if self.node_up(r.node) {
                live[r.partition] += 1;
            }
        }
        let now = self.now;
        for (p, l) in live.into_iter().enumerate() {
            match (l < q, self.below_since[p]) {
                (true, None) => {
                    self.report.quorum_loss_events += 1;
                    self.below_since[p] = Some(now);
                }
                (false, Some(since)) => {
                    self.report.quorum_loss_partition_minutes += (now - since) / 60.0;
                    self.below_since[p] = None;
                }
                _ => {}
            }
            let risk = l == q;
            if risk && !self.at_risk[p] {
                self.report.quorum_at_risk_events += 1;
            }
            self.at_risk[p] = risk;
        }
    }
}
