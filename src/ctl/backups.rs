//! `weft ctl backup | backups | restore`, through `weft::backup`.

use std::io::Write;
use std::path::PathBuf;

use super::{Ctx, print_json};

pub(super) async fn backup(cx: &Ctx, service: String, dir: PathBuf) -> anyhow::Result<()> {
    let endpoints = std::slice::from_ref(&cx.endpoint);
    let bar = crate::progress::Progress::new(format!("backup of {service}"), "partitions", 0, cx.json);
    let on = |done: usize, total: usize, bytes: u64| {
        bar.set_total(total as u64);
        bar.set(done as u64, &format!("{bytes} bytes"));
    };
    let (path, m) = weft::backup::backup(&cx.config, endpoints, &service, &dir, &on).await?;
    if cx.json {
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
    Ok(())
}

pub(super) async fn list(cx: &Ctx, dir: PathBuf) -> anyhow::Result<()> {
    let all = weft::backup::list(&dir)?;
    if cx.json {
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
            let name = p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned());
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
    Ok(())
}

pub(super) async fn restore(cx: &Ctx, backup: PathBuf, service: String, replicas: Option<u32>) -> anyhow::Result<()> {
    let endpoints = std::slice::from_ref(&cx.endpoint);
    let bar = crate::progress::Progress::new(format!("restore into {service}"), "partitions", 0, cx.json);
    let on = |done: usize, total: usize, records: u64| {
        bar.set_total(total as u64);
        bar.set(done as u64, &format!("{records} records"));
    };
    let r = weft::backup::restore(&cx.config, endpoints, &backup, &service, replicas.unwrap_or(0), &on).await?;
    if cx.json {
        print_json(&r)?;
    } else {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "restored {} partitions, {} tables, {} records into service {}",
            r.partitions, r.tables, r.records, r.service
        )?;
    }
    Ok(())
}
