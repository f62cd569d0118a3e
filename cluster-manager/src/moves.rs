//! One replica move as a state machine: which step it takes next, from what the manager
//! observed. Pure; the live manager (`weft-node`'s `manager::reconcile`) observes over
//! the network and carries each step out.
//!
//! A move adds a replica (`to`), removes one (`replaces`), or both (a replacement). Its
//! phases, in order:
//! 1. [`Phase::Open`]: check the target node and open the new replica there. A target node
//!    that hosts another *member* of the partition means the move was planned from a late
//!    report: it is dropped ([`Step::Drop`]). Any other replica of the partition there
//!    (left by an earlier move, or by an incarnation the group replaced) is no member and
//!    stands where the target must open: it is closed first ([`Step::CloseStray`]); the
//!    stray collector never reaches it while the move is pending. A target opened before that its node no longer
//!    hosts went with a restart of its node; the group may know its id, so it is never
//!    opened again empty: the move gets a fresh id ([`Step::FreshId`]). Before the first
//!    open the map records that it was opened ([`Step::Open`]'s `first`), so a retry knows.
//! 2. [`Phase::Learner`]: add it to the group as a learner.
//! 3. [`Phase::CatchUp`]: wait until it has applied what the primary had applied when the
//!    wait began. A target whose progress stands still for the stall limit is given up
//!    ([`Step::Abandon`]), unless it is an upgrade's stand-in, whose wait starts over
//!    ([`Step::KeepWaiting`]): giving it up would take its UD down one replica short.
//! 4. [`Phase::Transfer`]: if the replica leaving is the primary, hand the primary away.
//! 5. [`Phase::Voters`]: make the new voters the group's whole membership.
//! 6. [`Phase::Record`]: record the result in the map.
//! 7. [`Phase::Close`]: close the replica that left.
//!
//! Every step is idempotent, so a round that fails midway is simply run again from
//! [`Move::first_phase`]. The stall count runs across those rounds ([`MoveClock`]), so a
//! target whose node stopped answering is given up the same way as one that answers and
//! stalls ([`on_failure`]).

use std::time::{Duration, Instant};

use crate::model::NodeId;
use crate::walk::ReplicaAt;

/// A move as the cluster map records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    /// Partition.
    pub partition: u64,
    /// The replica being added, if any.
    pub to: Option<ReplicaAt>,
    /// The replica leaving, if any.
    pub replaces: Option<ReplicaAt>,
    /// The target has been opened at least once.
    pub opened: bool,
    /// The target is an upgrade walk's stand-in (never given up).
    pub stand_in: bool,
    /// The partition's replicas as the map lists them.
    pub members: Vec<ReplicaAt>,
}

impl Move {
    /// Where a round starts: a move that adds a replica opens it; a removal starts at the
    /// primary hand-off.
    pub fn first_phase(&self) -> Phase {
        if self.to.is_some() { Phase::Open } else { Phase::Transfer }
    }

    /// The voters once the move is done: the members but the one leaving, and the new one.
    pub fn voters(&self) -> Vec<u64> {
        self.members
            .iter()
            .filter(|r| self.replaces.is_none_or(|o| o.replica != r.replica))
            .map(|r| r.replica)
            .chain(self.to.map(|t| t.replica))
            .collect()
    }

    /// The partition's replicas once the move is recorded: the leaving one replaced by the
    /// new one (or removed), or the new one added.
    pub fn recorded(&self) -> Vec<ReplicaAt> {
        let mut replicas = self.members.clone();
        match (self.replaces, self.to) {
            (Some(old), Some(to)) => {
                for r in replicas.iter_mut().filter(|r| r.replica == old.replica) {
                    *r = to;
                }
            }
            (Some(old), None) => replicas.retain(|r| r.replica != old.replica),
            (None, Some(to)) => replicas.push(to),
            (None, None) => {}
        }
        replicas
    }
}

/// A move's phase within one round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Check the target and open it.
    Open,
    /// Add it as a learner.
    Learner,
    /// Wait for it to catch up.
    CatchUp,
    /// Hand the primary away from the leaving replica.
    Transfer,
    /// Change the voters.
    Voters,
    /// Record the result in the map.
    Record,
    /// Close the replica that left.
    Close,
    /// Nothing left to do.
    Done,
}

/// A target replica's progress as its status shows it: last log index, applied index,
/// snapshot bytes received, snapshots installed. Any change is progress.
pub type Progress = (u64, u64, u64, u64);

/// What the target's node answered about the partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// It did not answer (unreachable, timed out): nothing is known.
    Silent,
    /// Its answer: the replica of the partition it hosts, or none.
    Hosts(Option<Hosted>),
}

/// The replica of the partition a node hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hosted {
    /// Its id.
    pub replica: u64,
    /// Its progress.
    pub progress: Progress,
}

/// What the manager observed for a move's current phase (fields a phase does not use may
/// be left at their defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// Open, CatchUp: the target node's answer.
    pub target: Target,
    /// CatchUp: what the primary had applied when the wait began (`None`: not known yet).
    pub goal: Option<u64>,
    /// CatchUp: how long the target has gone without progress ([`MoveClock`]).
    pub stalled_for: Duration,
    /// Transfer: the node whose replica reports itself primary.
    pub primary: Option<NodeId>,
}

impl Default for Seen {
    fn default() -> Self {
        Seen { target: Target::Silent, goal: None, stalled_for: Duration::ZERO, primary: None }
    }
}

/// The one thing a move does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The target node hosts this member of the partition: the move was planned from a
    /// late report; drop it (the next round plans from fresh reports).
    Drop {
        /// The member found there.
        member: u64,
    },
    /// The target, opened before, is gone with a restart of its node: give the move a
    /// fresh replica id and end the round.
    FreshId,
    /// Open the target replica; when `first`, record in the map that it was opened
    /// before opening it.
    Open {
        /// The first open of this target.
        first: bool,
    },
    /// Add the target to the group as a learner.
    AddLearner,
    /// The target node does not answer: end the round and try again ([`on_failure`]).
    Unreachable,
    /// The target was lost while it caught up: end the round (the next gets a fresh id).
    Lost,
    /// Poll the catch-up again shortly.
    Wait,
    /// The target made no progress for the stall limit: give the move up.
    Abandon,
    /// A stand-in made no progress for the stall limit: restart its stall count and wait.
    KeepWaiting,
    /// Hand the primary to this replica.
    Transfer(u64),
    /// Make these replicas the group's voters (and its whole membership).
    SetVoters(Vec<u64>),
    /// Record [`Move::recorded`] in the map and clear the move.
    Record,
    /// Close this replica, which left.
    Close(ReplicaAt),
    /// Close this replica of the partition on the target's node: it is no member, and a
    /// node hosts one replica of a partition, so the target cannot open beside it.
    CloseStray {
        /// The stray's id.
        replica: u64,
    },
    /// The move is complete.
    Done,
}

/// The move's next step in `phase`, and the phase to go on with once the step succeeded.
pub fn next(mv: &Move, phase: Phase, seen: &Seen, stall: Duration) -> (Step, Phase) {
    match phase {
        Phase::Open => {
            let Some(to) = mv.to else { return (Step::Done, Phase::Transfer) };
            let hosted = match seen.target {
                Target::Silent => return (Step::Unreachable, Phase::Open),
                Target::Hosts(h) => h,
            };
            if let Some(h) = hosted
                && h.replica != to.replica
                && mv.members.iter().any(|r| r.replica == h.replica)
            {
                return (Step::Drop { member: h.replica }, Phase::Done);
            }
            if let Some(h) = hosted
                && h.replica != to.replica
            {
                return (Step::CloseStray { replica: h.replica }, Phase::Open);
            }
            if mv.opened && hosted.is_none_or(|h| h.replica != to.replica) {
                return (Step::FreshId, Phase::Done);
            }
            (Step::Open { first: !mv.opened }, Phase::Learner)
        }
        Phase::Learner => (Step::AddLearner, Phase::CatchUp),
        Phase::CatchUp => {
            let Some(to) = mv.to else { return (Step::Done, Phase::Transfer) };
            let h = match seen.target {
                Target::Silent => return (Step::Unreachable, Phase::CatchUp),
                Target::Hosts(Some(h)) if h.replica == to.replica => h,
                Target::Hosts(_) => return (Step::Lost, Phase::Done),
            };
            if seen.goal.is_some_and(|g| h.progress.1 >= g) {
                return transfer(mv, seen);
            }
            if seen.stalled_for > stall {
                return if mv.stand_in { (Step::KeepWaiting, Phase::CatchUp) } else { (Step::Abandon, Phase::Done) };
            }
            (Step::Wait, Phase::CatchUp)
        }
        Phase::Transfer => transfer(mv, seen),
        Phase::Voters => (Step::SetVoters(mv.voters()), Phase::Record),
        Phase::Record => (Step::Record, Phase::Close),
        Phase::Close => match mv.replaces {
            Some(old) => (Step::Close(old), Phase::Done),
            None => (Step::Done, Phase::Done),
        },
        Phase::Done => (Step::Done, Phase::Done),
    }
}

/// The hand-off when the leaving replica is the primary, else straight to the voters.
fn transfer(mv: &Move, seen: &Seen) -> (Step, Phase) {
    if let Some(old) = mv.replaces
        && seen.primary == Some(old.node)
        && let Some(next) = mv.members.iter().find(|r| r.replica != old.replica)
    {
        return (Step::Transfer(next.replica), Phase::Voters);
    }
    (Step::SetVoters(mv.voters()), Phase::Record)
}

/// What a round that failed (any step's error) does to the move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Try again next round.
    Retry,
    /// The target has gone without progress past the stall limit over every round that
    /// tried: give the move up, as a target that answers and stalls is.
    Abandon,
    /// As `Abandon`, but the target is a stand-in: restart the count and keep trying.
    KeepWaiting,
}

/// What a failed round means for `mv`, whose target has gone `stalled_for` without
/// progress (counted across rounds by [`MoveClock`]).
pub fn on_failure(mv: &Move, stalled_for: Duration, stall: Duration) -> Failure {
    match mv.to {
        Some(_) if stalled_for > stall && mv.stand_in => Failure::KeepWaiting,
        Some(_) if stalled_for > stall => Failure::Abandon,
        _ => Failure::Retry,
    }
}

/// How long a move's target has gone without progress, across rounds. It counts per
/// target node, not per replica id: a target that never opens gets fresh ids round after
/// round ([`Step::FreshId`]), and a fresh id is no progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MoveClock {
    node: NodeId,
    progress: Option<Progress>,
    since: Instant,
}

impl MoveClock {
    /// A count for a target on `node` starting at `now`.
    pub fn new(node: NodeId, progress: Option<Progress>, now: Instant) -> Self {
        MoveClock { node, progress, since: now }
    }

    /// Notes what was seen of the target on `node` at `now` and returns how long it has
    /// gone without progress. A different `progress` (the target moved) restarts the
    /// count; so does a target on another node. `None` (nothing known: the node did not
    /// answer, or the target is not open) changes nothing, so silence counts as no progress.
    pub fn observe(&mut self, node: NodeId, progress: Option<Progress>, now: Instant) -> Duration {
        if self.node != node {
            *self = MoveClock::new(node, progress, now);
        } else if progress.is_some() && progress != self.progress {
            self.progress = progress;
            self.since = now;
        }
        now.saturating_duration_since(self.since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALL: Duration = Duration::from_secs(120);

    fn at(node: NodeId, replica: u64) -> ReplicaAt {
        ReplicaAt { node, replica }
    }

    /// A replacement of replica 11 on node 1 by replica 50 on node 5.
    fn replacement() -> Move {
        Move {
            partition: 3,
            to: Some(at(5, 50)),
            replaces: Some(at(1, 11)),
            opened: false,
            stand_in: false,
            members: vec![at(1, 11), at(2, 12), at(3, 13), at(4, 14)],
        }
    }

    fn hosts(replica: u64, applied: u64) -> Target {
        Target::Hosts(Some(Hosted { replica, progress: (applied, applied, 0, 0) }))
    }

    fn seen(target: Target) -> Seen {
        Seen { target, ..Seen::default() }
    }

    /// Runs `mv` from its first phase, answering each phase with `world`, until `Done`
    /// or a step that ends the round; returns the steps taken.
    fn run(mv: &mut Move, world: impl Fn(Phase) -> Seen) -> Vec<Step> {
        let mut phase = mv.first_phase();
        let mut steps = Vec::new();
        for _ in 0..20 {
            let (step, then) = next(mv, phase, &world(phase), STALL);
            if step == (Step::Open { first: true }) {
                mv.opened = true;
            }
            let end = matches!(
                step,
                Step::Done
                    | Step::Drop { .. }
                    | Step::FreshId
                    | Step::Unreachable
                    | Step::Lost
                    | Step::Wait
                    | Step::Abandon
                    | Step::KeepWaiting
            );
            steps.push(step);
            if end {
                break;
            }
            phase = then;
        }
        steps
    }

    #[test]
    fn a_replacement_walks_every_phase_in_order() {
        let mut mv = replacement();
        let steps = run(&mut mv, |phase| Seen {
            target: if phase == Phase::Open { Target::Hosts(None) } else { hosts(50, 9) },
            goal: Some(9),
            primary: Some(1),
            ..Seen::default()
        });
        assert_eq!(
            steps,
            vec![
                Step::Open { first: true },
                Step::AddLearner,
                Step::Transfer(12),
                Step::SetVoters(vec![12, 13, 14, 50]),
                Step::Record,
                Step::Close(at(1, 11)),
                Step::Done,
            ]
        );
        assert_eq!(mv.recorded(), vec![at(5, 50), at(2, 12), at(3, 13), at(4, 14)]);
    }

    #[test]
    fn a_removal_starts_at_the_hand_off_and_skips_it_for_a_secondary() {
        let mut mv = Move { to: None, ..replacement() };
        let steps = run(&mut mv, |_| Seen { primary: Some(2), ..Seen::default() });
        assert_eq!(steps, vec![Step::SetVoters(vec![12, 13, 14]), Step::Record, Step::Close(at(1, 11)), Step::Done]);
        assert_eq!(mv.recorded(), vec![at(2, 12), at(3, 13), at(4, 14)]);
    }

    /// `weft chaos` seed 11: a repair planned from a report built before a move opened a
    /// replica aimed at a node that hosts a live member; its open would fail forever.
    #[test]
    fn a_move_planned_from_a_late_report_is_dropped_not_retried() {
        let mv = replacement();
        let (step, _) = next(&mv, Phase::Open, &seen(hosts(13, 5)), STALL);
        assert_eq!(step, Step::Drop { member: 13 });
        // A stray replica that is no member is no reason to drop: it is closed, then the
        // target opens.
        let (step, _) = next(&mv, Phase::Open, &seen(hosts(77, 5)), STALL);
        assert_eq!(step, Step::CloseStray { replica: 77 });
        let (step, _) = next(&mv, Phase::Open, &seen(Target::Hosts(None)), STALL);
        assert_eq!(step, Step::Open { first: true });
    }

    /// A target opened, then lost with a volatile restart of its node: the group may know
    /// its id, so it is never opened again empty.
    #[test]
    fn a_target_lost_to_a_restart_gets_a_fresh_id() {
        let mv = Move { opened: true, ..replacement() };
        assert_eq!(next(&mv, Phase::Open, &seen(Target::Hosts(None)), STALL).0, Step::FreshId);
        assert_eq!(next(&mv, Phase::Open, &seen(hosts(50, 0)), STALL).0, Step::Open { first: false }, "still there");
        assert_eq!(next(&mv, Phase::Open, &seen(Target::Silent), STALL).0, Step::Unreachable, "only its node's word");
        // Lost during the catch-up wait: the round ends; the next one gets the fresh id.
        assert_eq!(next(&mv, Phase::CatchUp, &seen(Target::Hosts(None)), STALL).0, Step::Lost);
    }

    #[test]
    fn a_stalled_target_is_given_up_but_a_stand_in_is_waited_on() {
        let mv = Move { opened: true, ..replacement() };
        let stalled = Seen { target: hosts(50, 3), goal: Some(9), stalled_for: STALL * 2, primary: None };
        assert_eq!(next(&mv, Phase::CatchUp, &stalled, STALL).0, Step::Abandon);
        let fresh = Seen { stalled_for: STALL / 2, ..stalled };
        assert_eq!(next(&mv, Phase::CatchUp, &fresh, STALL).0, Step::Wait);
        let stand_in = Move { stand_in: true, replaces: None, ..mv };
        assert_eq!(next(&stand_in, Phase::CatchUp, &stalled, STALL).0, Step::KeepWaiting);
    }

    /// A move to a node that stopped answering was retried every 0.3 s for over 15
    /// minutes: silence must count as no progress, across rounds.
    #[test]
    fn a_target_that_never_answers_is_given_up_after_the_stall_limit() {
        let t0 = Instant::now();
        let mut clock = MoveClock::new(5, None, t0);
        let mv = replacement();
        let mut t = t0;
        let mut failures = Vec::new();
        while t < t0 + STALL * 2 {
            t += Duration::from_millis(300);
            failures.push(on_failure(&mv, clock.observe(5, None, t), STALL));
        }
        let first = failures.iter().position(|f| *f == Failure::Abandon).expect("given up");
        let given_up_after = Duration::from_millis(300) * (first as u32 + 1);
        assert!(given_up_after > STALL && given_up_after <= STALL + Duration::from_secs(1), "{given_up_after:?}");
        assert_eq!(on_failure(&Move { stand_in: true, ..mv.clone() }, STALL * 2, STALL), Failure::KeepWaiting);
        assert_eq!(on_failure(&Move { to: None, ..mv }, STALL * 2, STALL), Failure::Retry, "a removal has no target");
    }

    #[test]
    fn the_stall_count_restarts_on_progress_and_on_a_new_target() {
        let t0 = Instant::now();
        let mut c = MoveClock::new(5, Some((1, 1, 0, 0)), t0);
        assert_eq!(c.observe(5, Some((1, 1, 0, 0)), t0 + STALL), STALL);
        assert_eq!(c.observe(5, None, t0 + STALL * 2), STALL * 2, "silence is no progress");
        assert_eq!(c.observe(5, Some((1, 1, 4096, 0)), t0 + STALL * 3), Duration::ZERO, "snapshot bytes count");
        assert_eq!(c.observe(6, Some((1, 1, 4096, 0)), t0 + STALL * 4), Duration::ZERO, "another node starts over");
    }

    /// Simulated chaos, durable seed 7 (an upgrade walk after power cuts): the target node
    /// still hosted an old replica of the partition that was no member. Its open was
    /// refused ("already has replica"), the next round saw a target that was not there
    /// and gave it a fresh id, whose open was refused again: for as long as the run lasted,
    /// since the stray collector skips partitions with a move pending and each fresh id
    /// restarted the stall count. The stray is closed first now; and the stall count is
    /// kept per target node (`MoveClock` takes no replica id), so fresh ids on one node are
    /// given up as `a_target_that_never_answers_is_given_up_after_the_stall_limit` shows.
    #[test]
    fn a_stray_on_the_target_node_is_closed_before_the_target_opens() {
        let opened = Move { opened: true, ..replacement() };
        for mv in [replacement(), opened] {
            let (step, then) = next(&mv, Phase::Open, &seen(hosts(77, 5)), STALL);
            assert_eq!((step, then), (Step::CloseStray { replica: 77 }, Phase::Open), "{mv:?}");
        }
    }
}
