//! `weft ctl backup | backup schedule | backups | restore`, through `weft::backup`.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use weft::backup::{self as b, Location};
use weft::proto as pb;

use super::{Ctx, grpc, print_json, say};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(super) struct BackupCmd {
    #[command(subcommand)]
    sub: Option<BackupSub>,
    /// The service.
    #[arg(required = true)]
    service: Option<String>,
    /// Where to (a directory or a URL).
    #[arg(long, required = true)]
    to: Option<String>,
    /// Copy every partition whole, even where the changes since the last backup would do.
    #[arg(long)]
    full: bool,
    /// Read each partition no faster than this many MB/s (default: as fast as it comes).
    #[arg(long)]
    rate_mb: Option<u64>,
}

#[derive(Subcommand)]
enum BackupSub {
    /// Has the cluster manager back SERVICE up every --every into --to, keeping --keep
    /// backups and every one younger than --keep-for (older ones no kept backup needs are
    /// deleted). The manager's node does the copying: the location's credentials must be
    /// in the seed nodes' environment.
    Schedule {
        service: String,
        /// The period: 30s, 10m, 1h, 1d.
        #[arg(long, value_parser = parse_duration)]
        every: Duration,
        /// Where to (a URL; a directory must be the same one on every seed node).
        #[arg(long)]
        to: String,
        /// Keep at least the newest N backups.
        #[arg(long, default_value_t = 0)]
        keep: u32,
        /// Keep every backup younger than this (7d, 12h).
        #[arg(long, value_parser = parse_duration)]
        keep_for: Option<Duration>,
        /// A full backup after this many incremental ones (default 11).
        #[arg(long, default_value_t = 0)]
        full_every: u32,
        /// Read each partition no faster than this many MB/s (default 20), so that a
        /// backup leaves the primaries' CPU to the writes.
        #[arg(long)]
        rate_mb: Option<u64>,
    },
    /// Stops the cluster manager's backups of SERVICE (the backups taken stay).
    Unschedule { service: String },
}

/// `30s`, `10m`, `2h`, `7d`, or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("{s:?}: a number and a unit (30s, 10m, 2h, 7d)"))?;
    let secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: the unit is s, m, h or d")),
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

pub(super) async fn backup(cx: &Ctx, cmd: BackupCmd) -> anyhow::Result<()> {
    match cmd.sub {
        Some(BackupSub::Schedule { service, every, to, keep, keep_for, full_every, rate_mb }) => {
            let schedule = pb::BackupSchedule {
                service,
                url: to,
                every_ms: every.as_millis() as u64,
                keep,
                keep_for_ms: keep_for.map_or(0, |d| d.as_millis() as u64),
                full_every,
                rate_bytes_per_s: rate_mb.unwrap_or(0).saturating_mul(1_000_000),
                ..Default::default()
            };
            return set_schedule(cx, schedule).await;
        }
        // A schedule of period 0 is no schedule.
        Some(BackupSub::Unschedule { service }) => {
            return set_schedule(cx, pb::BackupSchedule { service, ..Default::default() }).await;
        }
        None => {}
    }
    let (Some(service), Some(to)) = (cmd.service, cmd.to) else { bail!("backup SERVICE --to URL") };
    let loc = Location::parse(&to)?;
    let endpoints = std::slice::from_ref(&cx.endpoint);
    let bar = crate::progress::Progress::new(format!("backup of {service}"), "partitions", 0, cx.json);
    let on = |done: usize, total: usize, bytes: u64| {
        bar.set_total(total as u64);
        bar.set(done as u64, &format!("{bytes} bytes"));
    };
    let opts = b::Options {
        full_every: if cmd.full { 0 } else { b::take::FULL_EVERY_DEFAULT },
        rate_bytes_per_s: cmd.rate_mb.unwrap_or(0).saturating_mul(1_000_000),
    };
    let m = b::take::take_via(&cx.config, endpoints, &service, &loc, opts, &on).await?;
    if cx.json {
        print_json(&serde_json::json!({ "location": to, "manifest": m }))?;
    } else {
        writeln!(
            std::io::stdout(),
            "backed up {} ({} partitions, {:?}, {} bytes) to {to} as {}",
            m.service,
            m.partitions.len(),
            m.kind,
            m.bytes(),
            m.id
        )?;
    }
    Ok(())
}

/// Sets (or, with period 0, removes) a service's schedule through the cluster manager.
async fn set_schedule(cx: &Ctx, schedule: pb::BackupSchedule) -> anyhow::Result<()> {
    let req = pb::ScheduleBackupRequest { schedule: Some(schedule) };
    let resp = cx.cluster()?.schedule_backup(req).await.map_err(grpc)?;
    say(resp.into_inner(), cx.json)
}

/// The highest log index a backup holds, over its partitions.
fn through(m: &b::Manifest) -> u64 {
    m.partitions.iter().map(|p| p.through).max().unwrap_or(0)
}

pub(super) async fn list(cx: &Ctx, service: Option<String>, from: Option<String>) -> anyhow::Result<()> {
    let schedule = match (&service, &from) {
        (Some(s), None) => {
            let map = cx.map().await?;
            let sched = map.map.and_then(|m| m.backups.get(s).cloned());
            Some(sched.with_context(|| format!("{s} has no backup schedule: name a location with --from URL"))?)
        }
        (None, None) => bail!("backups --service S, or --from URL"),
        _ => None,
    };
    let url = from.or_else(|| schedule.as_ref().map(|s| s.url.clone())).unwrap_or_default();
    let loc = Location::parse(&url)?;
    let all = b::catalog::list(&loc, service.as_deref()).await?;
    if cx.json {
        let backups: Vec<_> = all
            .iter()
            .map(|l| {
                serde_json::json!({
                    "service": l.service,
                    "id": l.id,
                    "state": l.state,
                    "created_unix_ms": l.created_unix_ms(),
                    "kind": l.manifest.as_ref().map(|m| m.kind),
                    "log_index": l.manifest.as_ref().map(through),
                    "bytes": l.bytes,
                    "manifest": l.manifest,
                })
            })
            .collect();
        let schedule = schedule.map(|s| {
            serde_json::json!({
                "url": s.url, "every_ms": s.every_ms, "keep": s.keep, "keep_for_ms": s.keep_for_ms,
                "last_started_unix_ms": s.last_started_unix_ms, "last_done_unix_ms": s.last_done_unix_ms,
                "last_backup": s.last_backup, "last_error": s.last_error, "runs": s.runs, "failures": s.failures,
            })
        });
        return print_json(&serde_json::json!({ "location": url, "schedule": schedule, "backups": backups }));
    }
    let mut out = std::io::stdout().lock();
    if let Some(s) = &schedule {
        writeln!(
            out,
            "schedule: every {} s to {} (keep {}, keep for {} s); {} runs, {} failed{}",
            s.every_ms / 1000,
            s.url,
            s.keep,
            s.keep_for_ms / 1000,
            s.runs,
            s.failures,
            if s.last_error.is_empty() { String::new() } else { format!("; last error: {}", s.last_error) }
        )?;
    }
    writeln!(
        out,
        "{:<16} {:<21} {:<10} {:<8} {:>24} {:>10} {:>14}",
        "service", "backup", "state", "kind", "time (UTC)", "log index", "bytes"
    )?;
    for l in &all {
        let kind = l.manifest.as_ref().map_or("-", |m| if m.kind == b::Kind::Full { "full" } else { "changes" });
        let when = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(l.created_unix_ms()) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default();
        let index = l.manifest.as_ref().map_or_else(|| "-".to_string(), |m| through(m).to_string());
        writeln!(
            out,
            "{:<16} {:<21} {:<10} {:<8} {:>24} {:>10} {:>14}",
            l.service, l.id, l.state, kind, when, index, l.bytes
        )?;
    }
    Ok(())
}

pub(super) async fn restore(
    cx: &Ctx,
    from: String,
    service: Option<String>,
    partition: Option<u32>,
    at: Option<String>,
    replicas: Option<u32>,
) -> anyhow::Result<()> {
    let at = at.map(|t| b::parse_time(&t)).transpose()?;
    let chosen = b::restore::choose(&from, at).await?;
    let target = match (service, partition) {
        (Some(name), None) => b::Target::NewService { name, replicas: replicas.unwrap_or(0) },
        (None, Some(index)) => b::Target::Partition { index },
        _ => bail!("restore --service NEW or --partition P"),
    };
    let endpoints = std::slice::from_ref(&cx.endpoint);
    let bar = crate::progress::Progress::new(format!("restore of {}", chosen.manifest.id), "backup bytes", 0, cx.json);
    // Called after every batch: shown when a partition is done or another 1% of the
    // bytes is, so a large restore on a pipe prints about a hundred lines, not one a batch.
    let shown = std::sync::Mutex::new(None::<b::RestoreProgress>);
    let on = |p: b::RestoreProgress| {
        let mut last = shown.lock().unwrap_or_else(|e| e.into_inner());
        let step = (p.bytes / 100).max(1);
        let due = last.is_none_or(|l| {
            l.partitions_done != p.partitions_done || p.bytes_done >= l.bytes_done.saturating_add(step)
        });
        if due {
            *last = Some(p);
            bar.set_total(p.bytes);
            bar.set(p.bytes_done, &format!("{}/{} partitions", p.partitions_done, p.partitions));
        }
    };
    let r = b::restore::restore(&cx.config, endpoints, &chosen, &target, &on).await?;
    if cx.json {
        print_json(&r)?;
    } else {
        writeln!(
            std::io::stdout(),
            "restored backup {} of {} ({} partitions, {} tables, {} records) into service {}",
            r.backup,
            chosen.manifest.service,
            r.partitions,
            r.tables,
            r.records,
            r.service
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_with_their_unit() {
        assert_eq!(super::parse_duration("90").ok(), Some(std::time::Duration::from_secs(90)));
        assert_eq!(super::parse_duration("10m").ok(), Some(std::time::Duration::from_secs(600)));
        assert_eq!(super::parse_duration("7d").ok(), Some(std::time::Duration::from_secs(7 * 86_400)));
        assert!(super::parse_duration("10 minutes").is_err());
    }
}
