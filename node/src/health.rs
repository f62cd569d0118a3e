//! Whether this node is ready, and the three places that say so: the standard gRPC health
//! protocol (`grpc.health.v1.Health`, through `tonic-health`) on the node's port, and
//! `/readyz` and `/livez` on its metrics port for load balancers and Kubernetes probes.
//!
//! Ready means all of:
//! - it is not stopping (a graceful stop turns it not ready before it hands its primaries
//!   off, so that balancers stop sending to it first);
//! - none of its replicas has failed (a failed replica stops the node: fail-stop);
//! - in a cluster (a node with seeds), the cluster manager has answered one of its
//!   heartbeats and it has read the cluster map (its users and grants). A standalone node
//!   (no seeds) has no map to reach. Once reached, the manager going quiet does not make
//!   the node unready: its replicas serve without the manager, and during a manager
//!   failover every node would otherwise leave every balancer at once.
//!
//! Ready does not wait for replicas the cluster manager places on the node later (a
//! restarted volatile node's replicas are rebuilt while it serves; a durable node reopens
//! its own before it listens).
//!
//! Live means the process answers at all: `/livez` says `ok` for as long as the metrics
//! port serves. Kubernetes restarts a pod that is not live, and only stops routing to one
//! that is not ready; a node that lost the cluster manager is not ready but must not be
//! restarted for it.
//!
//! The gRPC health protocol answers for the whole node (`""`) and for each client-facing
//! service by its gRPC name (`weft.v1.Store`, `weft.v1.Cluster`), all with the node's
//! readiness; any known caller may ask (see `weft_security::access`). `/readyz` and
//! `/livez` answer anyone who connects, certificate or not, as etcd's and Kubernetes' own
//! health endpoints do: probes carry no client certificate, and the answer holds nothing
//! but `ok` or why the node is not ready.
//!
//! Depends on the replica host and the cluster manager's view of itself; never on the
//! services it reports on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use weft_replica::Host;

use crate::manager::Manager;

/// How often the gRPC health statuses are brought up to date.
const REPORT_EVERY: Duration = Duration::from_millis(250);

/// The client-facing gRPC services: the health protocol answers for them (besides `""`)
/// and server reflection lists them.
pub(crate) const SERVICES: [&str; 2] = ["weft.v1.Store", "weft.v1.Cluster"];

/// One node's readiness inputs, and the loop that publishes them.
pub struct Health {
    host: Arc<Host>,
    manager: Arc<Manager>,
    stopping: AtomicBool,
    /// Wakes the publishing loop at once (the node is stopping).
    wake: tokio::sync::Notify,
    /// What the loop last published: `Some(true)` serving. `None` until it runs.
    published: tokio::sync::watch::Sender<Option<bool>>,
}

impl Health {
    pub(crate) fn new(host: Arc<Host>, manager: Arc<Manager>) -> Arc<Self> {
        Arc::new(Health {
            host,
            manager,
            stopping: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            published: tokio::sync::watch::channel(None).0,
        })
    }

    /// The node is stopping: from now on it is not ready, and (when it serves) health
    /// watchers have heard `NOT_SERVING` when this returns.
    pub async fn stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.wake.notify_one();
        let mut published = self.published.subscribe();
        if published.borrow().is_none() {
            return;
        }
        let _ = tokio::time::timeout(STOPPING_WAIT, published.wait_for(|p| *p == Some(false))).await;
    }

    /// `Ok` when ready, else why not (one line, for an operator).
    pub fn ready(&self) -> Result<(), String> {
        if self.stopping.load(Ordering::SeqCst) {
            return Err("this node is stopping".into());
        }
        if let Some((partition, reason)) = self.host.list().iter().find_map(|r| r.failed().map(|e| (r.partition(), e)))
        {
            return Err(format!("the replica of partition {partition} failed: {reason}"));
        }
        self.manager.reached()
    }

    /// Keeps `reporter`'s statuses equal to the node's readiness until the task is
    /// aborted (the only writer of them); logs each change.
    pub(crate) async fn report(self: Arc<Self>, reporter: HealthReporter) {
        let mut tick = tokio::time::interval(REPORT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last: Option<Result<(), String>> = None;
        loop {
            let now = self.ready();
            if last.as_ref() != Some(&now) {
                match &now {
                    Ok(()) => tracing::info!("ready"),
                    Err(why) => tracing::info!(why = %why, "not ready"),
                }
                let status = if now.is_ok() { ServingStatus::Serving } else { ServingStatus::NotServing };
                set_all(&reporter, status).await;
                self.published.send_replace(Some(now.is_ok()));
                last = Some(now);
            }
            tokio::select! {
                _ = tick.tick() => {}
                () = self.wake.notified() => {}
            }
        }
    }
}

/// How long [`Health::stopping`] waits for the statuses to say so.
const STOPPING_WAIT: Duration = Duration::from_secs(1);

/// Sets the whole node's status and each service's.
pub(crate) async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for s in SERVICES {
        reporter.set_service_status(s, status).await;
    }
}
