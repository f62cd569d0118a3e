//! What a location holds: its backups by service, complete (a manifest) or not, and the
//! retention that deletes the ones nobody needs.
//!
//! The location is the truth: listing reads it, not a cluster's record, so a location
//! whose cluster is gone still lists and restores. A backup directory without a manifest
//! is `incomplete`: being written, or abandoned by a run that failed or whose node died.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::BackupError;
use crate::format::{self, Kind, Manifest};
use crate::location::Location;

/// One backup found in a location.
#[derive(Clone, Debug, Serialize)]
pub struct Listed {
    /// Its service.
    pub service: String,
    /// Its id (directory name).
    pub id: String,
    /// `complete` or `incomplete`.
    pub state: &'static str,
    /// Bytes of its objects.
    pub bytes: u64,
    /// Its manifest, when complete.
    pub manifest: Option<Manifest>,
}

impl Listed {
    /// When it started (from its manifest, or its id).
    pub fn created_unix_ms(&self) -> u64 {
        self.manifest
            .as_ref()
            .map_or_else(|| self.id.split('-').next().and_then(|t| t.parse().ok()).unwrap_or(0), |m| m.created_unix_ms)
    }
}

/// The backups in `loc` (of `service` only, when given), oldest first within a service.
/// A manifest that does not parse is an error naming it.
pub async fn list(loc: &Location, service: Option<&str>) -> Result<Vec<Listed>, BackupError> {
    let objects = loc.list(service.unwrap_or("")).await?;
    let mut dirs: BTreeMap<(String, String), (u64, bool)> = BTreeMap::new();
    for (name, size) in objects {
        let mut parts = name.splitn(3, '/');
        let (Some(svc), Some(id), Some(file)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let d = dirs.entry((svc.to_string(), id.to_string())).or_default();
        d.0 += size;
        d.1 |= file == format::MANIFEST;
    }
    let mut out = Vec::with_capacity(dirs.len());
    for ((svc, id), (bytes, complete)) in dirs {
        let manifest = if complete {
            let name = format!("{}/{}/{}", loc.url(), format::dir(&svc, &id), format::MANIFEST);
            let m =
                Manifest::parse(&loc.get(&format!("{}/{}", format::dir(&svc, &id), format::MANIFEST)).await?, &name)?;
            if m.service != svc || m.id != id {
                return Err(BackupError::Corrupt(format!(
                    "{name}: names backup {} of service {}, but lies in {svc}/{id}",
                    m.id, m.service
                )));
            }
            Some(m)
        } else {
            None
        };
        let state = if complete { "complete" } else { "incomplete" };
        out.push(Listed { service: svc, id, state, bytes, manifest });
    }
    Ok(out)
}

/// The newest complete backup of `service` in `loc`, with how many incremental backups
/// have followed the last full one up to it (0 when it is full).
pub async fn newest_complete(loc: &Location, service: &str) -> Result<Option<(Manifest, u32)>, BackupError> {
    let all: Vec<Manifest> = list(loc, Some(service)).await?.into_iter().filter_map(|l| l.manifest).collect();
    let Some(newest) = all.last().cloned() else { return Ok(None) };
    let chain = all.iter().rev().take_while(|m| m.kind != Kind::Full).count() as u32;
    Ok(Some((newest, chain)))
}

/// How long and how many backups a schedule keeps.
#[derive(Clone, Copy, Debug, Default)]
pub struct Retention {
    /// At least the newest this many complete backups (0: none by count).
    pub keep: u32,
    /// Every complete backup younger than this many milliseconds (0: none by age).
    pub keep_for_ms: u64,
    /// An incomplete backup is deleted only once it started this long ago (a run still
    /// writing is never deleted under it: the schedule's run limit).
    pub abandoned_after_ms: u64,
}

/// The ids of `service`'s backups that `retention` lets go at `now_ms`: complete backups
/// neither kept nor needed by a kept one's chain (the newest is always kept), and
/// incomplete ones that started before the newest complete backup and longer ago than
/// `abandoned_after_ms` (a run may still be writing a younger one). A directory whose
/// name is not a backup id is never touched. With neither count nor age set, nothing goes.
pub fn expired(all: &[Listed], retention: Retention, now_ms: u64) -> Vec<String> {
    if retention.keep == 0 && retention.keep_for_ms == 0 {
        return Vec::new();
    }
    let complete: Vec<&Manifest> = all.iter().filter_map(|l| l.manifest.as_ref()).collect();
    let mut kept: BTreeSet<&str> = BTreeSet::new();
    for (i, m) in complete.iter().rev().enumerate() {
        let by_count = i == 0 || (i as u32) < retention.keep;
        let by_age = retention.keep_for_ms > 0 && now_ms.saturating_sub(m.created_unix_ms) < retention.keep_for_ms;
        if by_count || by_age {
            kept.insert(&m.id);
        }
    }
    // Everything a kept backup's chain reaches.
    let by_id: BTreeMap<&str, &Manifest> = complete.iter().map(|m| (m.id.as_str(), *m)).collect();
    let mut needed: BTreeSet<&str> = BTreeSet::new();
    let mut todo: Vec<&str> = kept.iter().copied().collect();
    while let Some(id) = todo.pop() {
        if !needed.insert(id) {
            continue;
        }
        if let Some(m) = by_id.get(id) {
            todo.extend(m.directly_needs());
        }
    }
    let newest_complete = complete.last().map_or(0, |m| m.created_unix_ms);
    all.iter()
        .filter(|l| match &l.manifest {
            Some(m) => !needed.contains(m.id.as_str()),
            None => format::id_time(&l.id).is_some_and(|started| {
                started < newest_complete && now_ms.saturating_sub(started) >= retention.abandoned_after_ms
            }),
        })
        .map(|l| l.id.clone())
        .collect()
}

/// Deletes `service`'s backups that `retention` lets go; returns their ids.
pub async fn apply_retention(
    loc: &Location,
    service: &str,
    retention: Retention,
    now_ms: u64,
) -> Result<Vec<String>, BackupError> {
    let all = list(loc, Some(service)).await?;
    let gone = expired(&all, retention, now_ms);
    for id in &gone {
        let dir = format::dir(service, id);
        // The manifest first: a backup half deleted reads as incomplete, never as whole.
        loc.delete(&format!("{dir}/{}", format::MANIFEST)).await?;
        for (name, _) in loc.list(&dir).await? {
            loc.delete(&name).await?;
        }
        tracing::info!(service, id, "backup deleted by retention");
    }
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::PartitionEntry;

    fn backup(id: u64, previous: Option<u64>) -> Listed {
        let kind = if previous.is_some() { Kind::Changes } else { Kind::Full };
        let entry = PartitionEntry {
            index: 0,
            partition: 1,
            incarnation: 0,
            low: 0,
            high: u64::MAX,
            kind,
            after: 0,
            through: id,
            previous: previous.map(|p| format!("{p:015}-0000")),
            file: format::file_name(0, kind),
            bytes: 1,
            crc32c: 0,
        };
        let m = Manifest {
            format: format::FORMAT,
            id: format!("{id:015}-0000"),
            service: "s".into(),
            cluster_id: "c".into(),
            created_unix_ms: id,
            finished_unix_ms: id,
            map_version: 1,
            kind,
            partitions: vec![entry],
        };
        Listed { service: "s".into(), id: m.id.clone(), state: "complete", bytes: 1, manifest: Some(m) }
    }

    fn ids(v: Vec<String>) -> Vec<u64> {
        v.iter().map(|s| s[..15].parse().expect("id")).collect()
    }

    #[test]
    fn retention_keeps_the_newest_and_every_link_they_need() {
        // Full at 1 and 4; changes chain 1 <- 2 <- 3 and 4 <- 5 <- 6.
        let all = vec![
            backup(1, None),
            backup(2, Some(1)),
            backup(3, Some(2)),
            backup(4, None),
            backup(5, Some(4)),
            backup(6, Some(5)),
        ];
        let keep =
            |keep, keep_for_ms, now| ids(expired(&all, Retention { keep, keep_for_ms, abandoned_after_ms: 0 }, now));
        assert_eq!(keep(1, 0, 100), [1, 2, 3], "6 needs 5 and 4");
        assert_eq!(keep(4, 0, 100), Vec::<u64>::new(), "3 needs 2 and 1");
        assert_eq!(keep(0, 0, 100), Vec::<u64>::new(), "no retention keeps everything");
        assert_eq!(keep(0, 3, 7), [1, 2, 3], "younger than 3 ms at 7: 5 and 6, which need 4");
        assert_eq!(keep(0, 1, 100), [1, 2, 3], "none young enough: the newest stays all the same");
        assert_eq!(keep(1, 10, 7), Vec::<u64>::new(), "either rule keeps");
    }

    #[test]
    fn an_incomplete_backup_goes_only_once_a_newer_one_is_complete() {
        let mut all = vec![backup(1, None), backup(3, None)];
        let stale = Listed {
            service: "s".into(),
            id: format!("{:015}-0000", 2),
            state: "incomplete",
            bytes: 1,
            manifest: None,
        };
        let running = Listed {
            service: "s".into(),
            id: format!("{:015}-0000", 4),
            state: "incomplete",
            bytes: 1,
            manifest: None,
        };
        all.insert(1, stale);
        all.push(running);
        assert_eq!(ids(expired(&all, Retention { keep: 1, keep_for_ms: 0, abandoned_after_ms: 0 }, 10)), [1, 2]);
        let young = Retention { keep: 1, keep_for_ms: 0, abandoned_after_ms: 9 };
        assert_eq!(ids(expired(&all, young, 10)), [1], "2 started 8 ms ago: it may still be written");
        let mut foreign = all.clone();
        foreign.insert(
            0,
            Listed { service: "s".into(), id: "notes".into(), state: "incomplete", bytes: 1, manifest: None },
        );
        assert_eq!(ids(expired(&foreign, Retention { keep: 1, keep_for_ms: 0, abandoned_after_ms: 0 }, 10)), [1, 2]);
    }
}
