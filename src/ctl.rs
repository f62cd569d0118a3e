//! `weft ctl`: the operator's view of the cluster and the commands that change it.
//! Every node answers (it forwards to the cluster manager).

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
        name: String,
        #[arg(long)]
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
    },
    /// Lets a drained node take replicas again.
    Activate { node: u64 },
    /// Forgets a node that is gone for good: refused while it still hosts a replica the
    /// cluster needs (drain it, or wait for a down node's replicas to be replaced), while
    /// it is a seed, and while it still heartbeats.
    RemoveNode { node: u64 },
    /// Backs up a service: each partition's snapshot, from its primary, into a new
    /// directory under --dir (one Avro file per partition and a manifest).
    Backup {
        service: String,
        /// Where backups are kept.
        #[arg(long)]
        dir: std::path::PathBuf,
    },
    /// Lists the backups under --dir.
    Backups {
        /// Where backups are kept.
        #[arg(long)]
        dir: std::path::PathBuf,
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
    /// Restores a backup (a directory `ctl backup` made) into a new service.
    Restore {
        /// The backup's directory.
        backup: std::path::PathBuf,
        /// The new service's name.
        #[arg(long)]
        service: String,
        /// Replicas per partition (default: the cluster's, 4).
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
        return print_json(&serde_json::json!({ "lines": resp.lines, "map_version": resp.map_version }));
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
    config: &ClientConfig,
    endpoint: &str,
    done: impl Fn(&[view::PartitionView]) -> Option<T>,
) -> anyhow::Result<(T, f64)> {
    let started = Instant::now();
    loop {
        let m = ServiceClient::fetch_map(config, &[endpoint.to_string()], Duration::from_secs(5)).await?;
        if let Some(t) = done(&view::partitions(&m, None)) {
            return Ok((t, started.elapsed().as_secs_f64()));
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("moves still running after 10 minutes; `weft ctl partitions` shows where they stand");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn run(a: CtlArgs) -> anyhow::Result<()> {
    let json = a.json;
    let config = a.creds.config()?;
    let map = || async {
        Ok::<_, anyhow::Error>(
            ServiceClient::fetch_map(&config, std::slice::from_ref(&a.endpoint), Duration::from_secs(5)).await?,
        )
    };
    let mut out = std::io::stdout().lock();
    match a.cmd {
        Ctl::Status => {
            let m = map().await?;
            let nodes = view::nodes(&m);
            let parts = view::partitions(&m, None);
            let count = |s: &str| nodes.iter().filter(|n| n.state == s).count();
            let leaderless = parts.iter().filter(|p| !p.replicas.iter().any(|r| r.role == "primary")).count();
            let moving = parts.iter().filter(|p| p.moving.is_some()).count();
            let services = m.map.as_ref().map_or(0, |x| x.services.len());
            let mut insecure: Vec<u64> = m
                .map
                .iter()
                .flat_map(|x| x.nodes.values())
                .filter(|n| n.insecure && n.state != pb::NodeState::Down as i32)
                .map(|n| n.id)
                .collect();
            insecure.sort_unstable();
            if json {
                return print_json(&serde_json::json!({
                    "manager_node": m.manager_node,
                    "map_version": m.version,
                    "insecure_nodes": insecure,
                    "nodes": { "up": count("up"), "draining": count("draining"), "down": count("down") },
                    "services": services,
                    "partitions": parts.len(),
                    "partitions_without_primary": leaderless,
                    "moves_in_flight": moving,
                    "alarms": m.alarms,
                }));
            }
            writeln!(out, "cluster manager   node {} (map version {})", m.manager_node, m.version)?;
            writeln!(
                out,
                "nodes             {} up, {} draining, {} down",
                count("up"),
                count("draining"),
                count("down")
            )?;
            writeln!(out, "services          {services}")?;
            writeln!(
                out,
                "partitions        {} ({leaderless} without a primary, {moving} moving a replica)",
                parts.len()
            )?;
            if insecure.is_empty() {
                writeln!(out, "security          TLS and authentication on every node")?;
            } else {
                writeln!(
                    out,
                    "security          INSECURE: nodes {insecure:?} run --insecure (no TLS, no authentication: \
                     anyone who reaches them may read, write and reconfigure the cluster)"
                )?;
            }
            if m.alarms.is_empty() {
                writeln!(out, "alarms            none")?;
            }
            for alarm in &m.alarms {
                writeln!(out, "ALARM             {alarm}")?;
            }
        }
        Ctl::Nodes => {
            let nodes = view::nodes(&map().await?);
            if json {
                return print_json(&nodes);
            }
            writeln!(
                out,
                "{:>4}  {:<21} {:<8} {:<8} {:<9} {:>8} {:>9} {:>12} {:>9}  MAP",
                "ID", "ADDRESS", "UD", "FD", "STATE", "REPLICAS", "PRIMARIES", "MEMORY", "REQ/S"
            )?;
            for n in nodes {
                let map_role = if n.map_role.is_empty() { "-" } else { &n.map_role };
                writeln!(
                    out,
                    "{:>4}  {:<21} {:<8} {:<8} {:<9} {:>8} {:>9} {:>12} {:>9.1}  {map_role}",
                    n.id, n.addr, n.ud, n.fd, n.state, n.replicas, n.primaries, n.memory_bytes, n.requests_per_s
                )?;
            }
            writeln!(
                out,
                "(REPLICAS counts services' replicas; PRIMARIES and MEMORY include the cluster map's, whose role is MAP)"
            )?;
        }
        Ctl::Services => {
            let m = map().await?;
            let mut services: Vec<_> = m.map.map(|x| x.services.into_values().collect()).unwrap_or_default();
            services.sort_by(|a: &pb::ServiceInfo, b| a.name.cmp(&b.name));
            if json {
                let v: Vec<_> = services
                    .iter()
                    .map(|s| serde_json::json!({ "name": s.name, "partitions": s.partitions, "replicas": s.replicas, "partition_ids": s.partition_ids }))
                    .collect();
                return print_json(&v);
            }
            writeln!(out, "{:<24} {:>10} {:>8}", "SERVICE", "PARTITIONS", "REPLICAS")?;
            for s in services {
                writeln!(out, "{:<24} {:>10} {:>8}", s.name, s.partitions, s.replicas)?;
            }
        }
        Ctl::Partitions { service } => {
            let m = map().await?;
            if let Some(s) = &service {
                anyhow::ensure!(m.map.as_ref().is_some_and(|c| c.services.contains_key(s)), "no service {s}");
            }
            let parts = view::partitions(&m, service.as_deref());
            if json {
                return print_json(&parts);
            }
            writeln!(out, "{:>5}  {:<16} {:<37}  REPLICAS (node/ud/fd role)", "ID", "SERVICE", "HASH RANGE")?;
            for p in parts {
                let replicas: Vec<String> =
                    p.replicas.iter().map(|r| format!("{}/{}/{} {}", r.node, r.ud, r.fd, r.role)).collect();
                let range = format!("{:016x}..={:016x}", p.low, p.high);
                let note = p.moving.map(|m| format!("  [moving: {m}]")).unwrap_or_default();
                let name = format!("{}/{}", p.service, p.index);
                writeln!(out, "{:>5}  {:<16} {range:<37}  {}{note}", p.id, name, replicas.join(", "))?;
            }
        }
        Ctl::CreateService { name, partitions, replicas } => {
            // 0 on the wire asks for the cluster's default.
            let req = pb::CreateServiceRequest { name, partitions, replicas: replicas.unwrap_or(0) };
            say(cluster(&config, &a.endpoint)?.create_service(req).await.map_err(grpc)?.into_inner(), json)?;
        }
        Ctl::DeleteService { name } => {
            let req = pb::DeleteServiceRequest { name };
            say(cluster(&config, &a.endpoint)?.delete_service(req).await.map_err(grpc)?.into_inner(), json)?;
        }
        Ctl::Drain { node, force } => {
            let req = pb::NodeRequest { node, force };
            say(cluster(&config, &a.endpoint)?.drain(req).await.map_err(grpc)?.into_inner(), json)?;
        }
        Ctl::Backup { service, dir } => {
            let endpoints = std::slice::from_ref(&a.endpoint);
            let (path, m) = weft::backup::backup(&config, endpoints, &service, &dir).await?;
            if json {
                print_json(&serde_json::json!({ "path": path, "manifest": m }))?;
            } else {
                let mut out = std::io::stdout().lock();
                writeln!(
                    out,
                    "backed up {} ({} partitions, {} bytes) to {}",
                    m.service,
                    m.partitions.len(),
                    m.bytes(),
                    path.display()
                )?;
            }
        }
        Ctl::Backups { dir } => {
            let all = weft::backup::list(&dir)?;
            if json {
                let v: Vec<_> = all.iter().map(|(p, m)| serde_json::json!({ "path": p, "manifest": m })).collect();
                print_json(&v)?;
            } else {
                let mut out = std::io::stdout().lock();
                writeln!(
                    out,
                    "{:<40} {:<16} {:>10} {:>14} {:>15}",
                    "backup", "service", "partitions", "bytes", "created (ms)"
                )?;
                for (p, m) in &all {
                    let name =
                        p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned());
                    writeln!(
                        out,
                        "{:<40} {:<16} {:>10} {:>14} {:>15}",
                        name,
                        m.service,
                        m.partitions.len(),
                        m.bytes(),
                        m.created_unix_ms
                    )?;
                }
            }
        }
        Ctl::Restore { backup, service, replicas } => {
            let endpoints = std::slice::from_ref(&a.endpoint);
            let r = weft::backup::restore(&config, endpoints, &backup, &service, replicas.unwrap_or(0)).await?;
            if json {
                print_json(&r)?;
            } else {
                let mut out = std::io::stdout().lock();
                writeln!(
                    out,
                    "restored {} partitions, {} tables, {} records into service {}",
                    r.partitions, r.tables, r.records, r.service
                )?;
            }
        }
        Ctl::User(UserCmd::Add { name, with_token }) => {
            let r = cluster(&config, &a.endpoint)?
                .add_user(pb::AddUserRequest { name, token: with_token })
                .await
                .map_err(grpc)?
                .into_inner();
            if json {
                return print_json(
                    &serde_json::json!({ "lines": r.lines, "token": r.token, "map_version": r.map_version }),
                );
            }
            for l in &r.lines {
                writeln!(out, "{l}")?;
            }
            if !r.token.is_empty() {
                writeln!(out, "token (shown this once; weft ... --token, or WEFT_TOKEN): {}", r.token)?;
            }
        }
        Ctl::User(UserCmd::Remove { name }) => {
            let req = pb::RemoveUserRequest { name };
            say(cluster(&config, &a.endpoint)?.remove_user(req).await.map_err(grpc)?.into_inner(), json)?;
        }
        Ctl::User(UserCmd::List) => {
            let users = cluster(&config, &a.endpoint)?
                .list_users(pb::ListUsersRequest {})
                .await
                .map_err(grpc)?
                .into_inner()
                .users;
            let roles = |u: &pb::UserView| -> Vec<String> {
                u.grants
                    .iter()
                    .map(|g| if g.service.is_empty() { g.role.clone() } else { format!("{} on {}", g.role, g.service) })
                    .collect()
            };
            if json {
                let v: Vec<_> = users
                    .iter()
                    .map(|u| serde_json::json!({ "name": u.name, "token": u.has_token, "roles": roles(u) }))
                    .collect();
                return print_json(&v);
            }
            writeln!(out, "{:<24} {:<6} ROLES", "USER", "TOKEN")?;
            for u in &users {
                let r = roles(u);
                let r = if r.is_empty() { "-".to_string() } else { r.join(", ") };
                writeln!(out, "{:<24} {:<6} {r}", u.name, if u.has_token { "yes" } else { "no" })?;
            }
        }
        Ctl::Grant { grantee, role, service } => {
            let req = pb::GrantRequest { user: grantee, role, service: service.unwrap_or_default() };
            say(cluster(&config, &a.endpoint)?.grant(req).await.map_err(grpc)?.into_inner(), json)?;
        }
        Ctl::Revoke { grantee, role, service } => {
            let req = pb::GrantRequest { user: grantee, role, service: service.unwrap_or_default() };
            say(cluster(&config, &a.endpoint)?.revoke(req).await.map_err(grpc)?.into_inner(), json)?;
        }
        Ctl::Activate { node } => {
            let req = pb::NodeRequest { node, force: false };
            say(cluster(&config, &a.endpoint)?.activate(req).await.map_err(grpc)?.into_inner(), json)?;
        }
        Ctl::RemoveNode { node } => {
            let req = pb::NodeRequest { node, force: false };
            say(cluster(&config, &a.endpoint)?.remove_node(req).await.map_err(grpc)?.into_inner(), json)?;
        }
        Ctl::MovePrimary { partition, to, force } => {
            let req = pb::MovePrimaryRequest { partition, to_node: to.unwrap_or(0), force };
            say(cluster(&config, &a.endpoint)?.move_primary(req).await.map_err(grpc)?.into_inner(), json)?;
        }
        Ctl::Upgrade { apply, dry_run: _, pause, resume, abort, status, no_wait } => {
            let action = if apply {
                pb::UpgradeAction::Apply
            } else if pause {
                pb::UpgradeAction::Pause
            } else if resume {
                pb::UpgradeAction::Resume
            } else if abort {
                pb::UpgradeAction::Abort
            } else if status {
                pb::UpgradeAction::Status
            } else {
                pb::UpgradeAction::DryRun
            };
            let req = pb::UpgradeRequest { action: action as i32 };
            let resp = cluster(&config, &a.endpoint)?.upgrade(req).await.map_err(grpc)?.into_inner();
            if !apply || no_wait || json {
                return say(resp, json);
            }
            for l in &resp.lines {
                writeln!(out, "{l}")?;
            }
            let started = Instant::now();
            let mut last = String::new();
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let status = pb::UpgradeRequest { action: pb::UpgradeAction::Status as i32 };
                // The node answering may itself be restarting: ask again.
                let Ok(mut c) = cluster(&config, &a.endpoint) else { continue };
                let Ok(r) = c.upgrade(status).await else { continue };
                let line = r.into_inner().lines.join("; ");
                if line.starts_with("no upgrade walk") {
                    writeln!(out, "upgrade walk complete in {:.1} s", started.elapsed().as_secs_f64())?;
                    return Ok(());
                }
                if line != last {
                    writeln!(out, "[{:>6.1} s] {line}", started.elapsed().as_secs_f64())?;
                    last = line;
                }
                if started.elapsed() > Duration::from_secs(3600) {
                    bail!("the walk has not finished after an hour; `weft ctl upgrade --status` shows where it stands");
                }
            }
        }
        Ctl::Rebalance { dry_run, threshold, max_moves, no_wait } => {
            let req = pb::RebalanceRequest {
                dry_run,
                threshold: threshold.unwrap_or(0.0),
                max_moves: max_moves.unwrap_or(0),
            };
            let resp = cluster(&config, &a.endpoint)?.rebalance(req).await.map_err(grpc)?.into_inner();
            if dry_run || no_wait || json {
                return say(resp, json);
            }
            for l in &resp.lines {
                writeln!(out, "{l}")?;
            }
            let ((), secs) =
                until_moves_settle(&config, &a.endpoint, |ps| ps.iter().all(|p| p.moving.is_none()).then_some(()))
                    .await?;
            writeln!(out, "done in {secs:.1} s")?;
        }
        Ctl::MoveSecondary { partition, from, to, force, no_wait } => {
            let req = pb::MoveSecondaryRequest { partition, from_node: from, to_node: to.unwrap_or(0), force };
            let resp = cluster(&config, &a.endpoint)?.move_secondary(req).await.map_err(grpc)?.into_inner();
            if no_wait {
                return say(resp, json);
            }
            if !json {
                for l in &resp.lines {
                    writeln!(out, "{l}")?;
                }
            }
            let (nodes, secs) = until_moves_settle(&config, &a.endpoint, |ps| {
                let p = ps.iter().find(|p| p.id == partition && p.moving.is_none())?;
                Some(p.replicas.iter().map(|r| r.node).collect::<Vec<u64>>())
            })
            .await?;
            if nodes.contains(&from) {
                anyhow::bail!(
                    "partition {partition} still has its replica on node {from} after {secs:.1} s: the move was \
                     abandoned (its new replica made no progress; the cluster manager's log says why)"
                );
            }
            if json {
                return print_json(&serde_json::json!({ "partition": partition, "nodes": nodes, "seconds": secs }));
            }
            writeln!(out, "done in {secs:.1} s: partition {partition} now on nodes {nodes:?}")?;
        }
    }
    Ok(())
}
