//! The cluster manager's pure decision logic (`weft-cluster-manager`).
//!
//! - [`keyspace`]: which partition of a service holds a key.
//! - [`model`]: nodes with their upgrade and fault domains, capacities and load.
//! - [`placement`]: where a new replica of a partition goes.
//! - [`repair`]: which replicas on down nodes to replace; which partitions lost quorum.
//! - [`reconcile`]: the manager's round: down nodes, lost replicas, the moves to plan.
//! - [`walk`]: what must happen before an upgrade domain goes down, and the walk's steps.
//! - [`moves`]: one replica move's phases and the step each takes next.
//! - [`sim`]: the upgrade-walk simulator (careful and classic policies).
//! - [`balance`]: which replicas to move so that replica counts even out.
//!
//! Everything here is a function of its inputs: no I/O, no clock, no randomness, so the
//! same code drives the live cluster manager and the simulator, and tests it without a
//! network.

pub mod balance;
pub mod keyspace;
pub mod model;
pub mod moves;
pub mod placement;
pub mod reconcile;
pub mod repair;
pub mod sim;
#[cfg(test)]
mod testkit;
pub mod walk;
