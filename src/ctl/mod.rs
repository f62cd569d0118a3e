//! `weft ctl`: the operator's view of the cluster and the commands that change it.
//! Every node answers (it forwards to the cluster manager). This module holds the command
//! line and what every command shares; one module per family does the work: `views`,
//! `services`, `nodes`, `backups`, `users`.

mod backups;
mod nodes;
mod services;
mod users;
mod views;

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Args, Subcommand};
use weft::client::ClientConfig;
use weft::node::view;
use weft::proto as pb;
use weft::proto::cluster_client::ClusterClient;
use weft::routing::ServiceClient;
use weft_security::AuthChannel;

#[derive(Args)]
pub struct CtlArgs {
    /// Any node of the cluster.
    #[arg(long, global = true, default_value = "127.0.0.1:7100")]
    endpoint: String,
    /// Print one JSON document and nothing else on stdout.
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    creds: crate::creds::ClientArgs,
    #[command(subcommand)]
    cmd: Ctl,
}

#[derive(Subcommand)]
enum Ctl {
    /// The manager, node and partition health, alarms.
    Status,
    /// Every node with its domains, state and load.
    Nodes,
    /// Every service.
    Services,
    /// Partitions with each replica's node, UD, FD and role.
    Partitions {
        /// Only this service's.
        #[arg(long)]
        service: Option<String>,
    },
    /// Creates a service of P partitions with R replicas each.
    CreateService {
        /// The service's name: 1 to 64 letters, digits, '-', '_' or '.'.
        name: String,
        /// Partitions: the key hash space is split evenly among them, one raft group each.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        partitions: u32,
        /// Replicas per partition (default: the cluster's, 4).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        replicas: Option<u32>,
    },
    /// Deletes a service and closes its replicas.
    DeleteService { name: String },
    /// Moves a partition's primary to another of its replicas.
    MovePrimary {
        partition: u64,
        /// Target node (default: the secondary whose node leads fewest partitions).
        #[arg(long)]
        to: Option<u64>,
        /// Allow a target that is draining.
        #[arg(long)]
        force: bool,
    },
    /// Moves one replica of a partition to another node (build, catch up, swap, close).
    MoveSecondary {
        partition: u64,
        /// The node whose replica moves.
        #[arg(long)]
        from: u64,
        /// Target node (default: placement picks).
        #[arg(long)]
        to: Option<u64>,
        /// Allow moving the primary's replica or breaking domain spread.
        #[arg(long)]
        force: bool,
        /// Return once the move is planned instead of following it to the end.
        #[arg(long)]
        no_wait: bool,
    },
    /// Evens out replica counts and memory (moving replicas) and primaries (by request
    /// load over 200 requests/s, else by count, through leader transfers).
    Rebalance {
        /// Print the plan and predicted imbalance; move nothing.
        #[arg(long)]
        dry_run: bool,
        /// Act above this most/least replica-count ratio (default: the manager's, 1.5).
        #[arg(long)]
        threshold: Option<f64>,
        /// Most moves (default 16).
        #[arg(long)]
        max_moves: Option<u32>,
        /// Return once the moves are planned instead of following them to the end.
        #[arg(long)]
        no_wait: bool,
    },
    /// The upgrade-domain walk: dry run (default) prints each UD's moves and predicted
    /// density; --apply starts it and follows it to the end.
    Upgrade {
        /// Start the walk and follow it.
        #[arg(long, group = "action")]
        apply: bool,
        /// Print the plan only (the default).
        #[arg(long, group = "action")]
        dry_run: bool,
        /// Stop the walk between steps.
        #[arg(long, group = "action")]
        pause: bool,
        /// Continue a paused walk.
        #[arg(long, group = "action")]
        resume: bool,
        /// Forget the walk (stand-ins already built stay).
        #[arg(long, group = "action")]
        abort: bool,
        /// Where the walk stands.
        #[arg(long, group = "action")]
        status: bool,
        /// With --apply: return once started instead of following it.
        #[arg(long)]
        no_wait: bool,
    },
    /// Empties a node: its replicas move elsewhere and it takes no new ones.
    Drain {
        node: u64,
        /// Drain even when the other nodes cannot take every replica.
        #[arg(long)]
        force: bool,
        /// Follow the drain: say how many replicas the node still holds as they leave, and
        /// return once it holds none (with --json, one document at the end).
        #[arg(long)]
        wait: bool,
    },
    /// Hands every primary on a node to another of its partition's replicas and waits until
    /// it holds none, keeping its replicas: what a node about to stop for a moment needs
    /// (a Kubernetes pre-stop hook, a rolling update). With --this-host, the node the host
    /// name gives (a StatefulSet pod's ordinal plus one).
    Handoff {
        #[arg(required_unless_present = "this_host")]
        node: Option<u64>,
        #[arg(long, conflicts_with = "node")]
        this_host: bool,
        /// Seconds to wait for the primaries to leave.
        #[arg(long, default_value_t = 30.0)]
        wait_s: f64,
    },
    /// Lets a drained node take replicas again.
    Activate { node: u64 },
    /// Forgets a node that is gone for good: refused while it still hosts a replica the
    /// cluster needs (drain it, or wait for a down node's replicas to be replaced), while
    /// it is a seed, and while it still heartbeats.
    RemoveNode { node: u64 },
    /// Backs a service up now into a location (a directory, file:///..., s3://bucket/prefix,
    /// az://container/prefix, gs://bucket/prefix; credentials from the AWS_*, AZURE_* or
    /// GOOGLE_* variables): each partition's snapshot, or its changes since the location's
    /// last backup of the service, from its primary. `backup schedule` has the cluster
    /// manager do it on a period.
    Backup(backups::BackupCmd),
    /// A service's backups: its schedule and last run from the cluster, and what its
    /// location holds (time, log index, size, state). --from lists any location, even one
    /// no cluster knows.
    Backups {
        /// The service.
        #[arg(long)]
        service: Option<String>,
        /// The location to list (default: the service's schedule's).
        #[arg(long)]
        from: Option<String>,
    },
    /// Users of the cluster: add (with a bearer token if asked), remove, list.
    #[command(subcommand)]
    User(UserCmd),
    /// Gives USER the role ROLE (reader, writer or operator), cluster-wide or on one service.
    Grant {
        #[arg(value_name = "USER")]
        grantee: String,
        role: String,
        /// Only on this service.
        #[arg(long)]
        service: Option<String>,
    },
    /// Takes ROLE (as granted, cluster-wide or on --service) back from USER.
    Revoke {
        #[arg(value_name = "USER")]
        grantee: String,
        role: String,
        /// The service it was granted on.
        #[arg(long)]
        service: Option<String>,
    },
    /// Restores a backup: into a new service (--service NEW), or in place into partition P
    /// of the backed-up service after it lost every replica (--partition P). --from names a
    /// location, a service's directory in it, or one backup; the newest complete backup
    /// is taken, or the newest at or before --at.
    Restore {
        /// Where the backup is.
        #[arg(long)]
        from: String,
        /// The new service's name.
        #[arg(long, conflicts_with = "partition", required_unless_present = "partition")]
        service: Option<String>,
        /// The partition (its index in the service) to restore in place.
        #[arg(long)]
        partition: Option<u32>,
        /// The newest backup at or before this time (RFC 3339, or milliseconds since 1970).
        #[arg(long)]
        at: Option<String>,
        /// Replicas per partition of the new service (default: the cluster's, 4).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        replicas: Option<u32>,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// A new user, with no role until one is granted. Its client certificate is made with
    /// `weft cert create-client NAME`.
    Add {
        name: String,
        /// Also make it a bearer token (printed once; only its SHA-256 is kept), for a
        /// client that cannot hold a certificate. For an existing user, replaces its token.
        #[arg(long)]
        with_token: bool,
    },
    /// Removes a user: its certificate and token are refused from the next request on.
    Remove { name: String },
    /// Every user with its roles.
    List,
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    writeln!(std::io::stdout(), "{}", serde_json::to_string(v)?)?;
    Ok(())
}

fn cluster(config: &ClientConfig, endpoint: &str) -> anyhow::Result<ClusterClient<AuthChannel>> {
    Ok(ClusterClient::new(weft_testkit::local::channel(&config.security, endpoint)?))
}

fn grpc(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", weft::client::status_text(&s))
}

fn say(resp: pb::CtlResponse, json: bool) -> anyhow::Result<()> {
    if json {
        let mut v = serde_json::json!({ "lines": resp.lines, "map_version": resp.map_version });
        if let Some(p) = &resp.rebalance {
            let moves: Vec<_> = p
                .moves
                .iter()
                .map(|m| serde_json::json!({ "partition": m.partition, "from": m.from, "to": m.to, "bytes": m.bytes }))
                .collect();
            let transfers: Vec<_> = p
                .transfers
                .iter()
                .map(|t| serde_json::json!({ "partition": t.partition, "from": t.from, "to": t.to }))
                .collect();
            v["imbalance_before"] = p.imbalance_before.into();
            v["imbalance_after"] = p.imbalance_after.into();
            v["threshold"] = p.threshold.into();
            v["moves"] = moves.into();
            v["primary_load_ratio"] = p.primary_load_ratio.into();
            v["primary_transfers"] = transfers.into();
            v["started"] = p.started.into();
        }
        if let Some(p) = &resp.upgrade_plan {
            let uds: Vec<_> = p
                .uds
                .iter()
                .map(|u| {
                    let builds: Vec<_> = u
                        .builds
                        .iter()
                        .map(|b| {
                            serde_json::json!({
                                "partition": b.partition, "to": b.to, "stands_in_for": b.stands_in_for, "bytes": b.bytes,
                            })
                        })
                        .collect();
                    serde_json::json!({
                        "ud": u.ud, "primary_moves": u.primary_moves, "stand_ins": builds, "blocked": u.blocked,
                        "quorum_at_risk": u.quorum_at_risk, "peak_replicas_per_node": u.peak_replicas_per_node,
                        "peak_ratio": u.peak_ratio,
                    })
                })
                .collect();
            v["baseline_replicas_per_node"] = p.baseline_replicas_per_node.into();
            v["uds"] = uds.into();
            v["refusals"] = p.refusals.clone().into();
            v["started"] = p.started.into();
        }
        if let Some(w) = &resp.upgrade_walk {
            v["walk"] = serde_json::json!({
                "uds": w.uds, "walked": w.walked, "phase": w.phase, "paused": w.paused, "waiting": w.waiting,
                "stand_ins": w.stand_ins,
            });
        }
        return print_json(&v);
    }
    let mut out = std::io::stdout().lock();
    for l in resp.lines {
        writeln!(out, "{l}")?;
    }
    Ok(())
}

/// Polls the map every 200 ms until `done` says the moves it waits for have settled;
/// returns its answer and the seconds it took. Gives up after 10 minutes.
async fn until_moves_settle<T>(
    cx: &Ctx,
    done: impl Fn(&[view::PartitionView]) -> Option<T>,
) -> anyhow::Result<(T, f64)> {
    let started = Instant::now();
    loop {
        let m = cx.map().await?;
        if let Some(t) = done(&view::partitions(&m, None)) {
            return Ok((t, started.elapsed().as_secs_f64()));
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("moves still running after 10 minutes; `weft ctl partitions` shows where they stand");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How one `weft ctl` command reaches the cluster and prints.
pub(super) struct Ctx {
    config: ClientConfig,
    endpoint: String,
    json: bool,
}

impl Ctx {
    /// The cluster map, from the endpoint.
    async fn map(&self) -> anyhow::Result<pb::GetMapResponse> {
        Ok(ServiceClient::fetch_map(&self.config, std::slice::from_ref(&self.endpoint), Duration::from_secs(5)).await?)
    }

    /// The `Cluster` service at the endpoint.
    fn cluster(&self) -> anyhow::Result<ClusterClient<AuthChannel>> {
        cluster(&self.config, &self.endpoint)
    }
}

pub async fn run(a: CtlArgs) -> anyhow::Result<()> {
    let cx = Ctx { config: a.creds.config()?, endpoint: a.endpoint, json: a.json };
    // Listing a backup location is the one command that needs no cluster.
    if !matches!(a.cmd, Ctl::Backups { from: Some(_), .. }) {
        crate::creds::reachable(&cx.endpoint).await?;
    }
    match a.cmd {
        Ctl::Status => views::status(&cx).await,
        Ctl::Nodes => views::nodes(&cx).await,
        Ctl::Services => views::services(&cx).await,
        Ctl::Partitions { service } => views::partitions(&cx, service).await,
        Ctl::CreateService { name, partitions, replicas } => services::create(&cx, name, partitions, replicas).await,
        Ctl::DeleteService { name } => services::delete(&cx, name).await,
        Ctl::MovePrimary { partition, to, force } => services::move_primary(&cx, partition, to, force).await,
        Ctl::MoveSecondary { partition, from, to, force, no_wait } => {
            services::move_secondary(&cx, partition, from, to, force, no_wait).await
        }
        Ctl::Rebalance { dry_run, threshold, max_moves, no_wait } => {
            services::rebalance(&cx, dry_run, threshold, max_moves, no_wait).await
        }
        Ctl::Drain { node, force, wait } => nodes::drain(&cx, node, force, wait).await,
        Ctl::Activate { node } => nodes::activate(&cx, node).await,
        Ctl::Handoff { node, this_host: _, wait_s } => {
            let node = match node {
                Some(n) => n,
                None => crate::node::id_from_hostname(&crate::node::hostname())?,
            };
            nodes::handoff(&cx, node, wait_s).await
        }
        Ctl::RemoveNode { node } => nodes::remove(&cx, node).await,
        Ctl::Upgrade { apply, dry_run: _, pause, resume, abort, status, no_wait } => {
            nodes::upgrade(&cx, apply, pause, resume, abort, status, no_wait).await
        }
        Ctl::Backup(cmd) => backups::backup(&cx, cmd).await,
        Ctl::Backups { service, from } => backups::list(&cx, service, from).await,
        Ctl::Restore { from, service, partition, at, replicas } => {
            backups::restore(&cx, from, service, partition, at, replicas).await
        }
        Ctl::User(UserCmd::Add { name, with_token }) => users::add(&cx, name, with_token).await,
        Ctl::User(UserCmd::Remove { name }) => users::remove(&cx, name).await,
        Ctl::User(UserCmd::List) => users::list(&cx).await,
        Ctl::Grant { grantee, role, service } => users::grant(&cx, grantee, role, service).await,
        Ctl::Revoke { grantee, role, service } => users::revoke(&cx, grantee, role, service).await,
    }
}
