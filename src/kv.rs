//! `weft kv`: put, get, delete, scan and watch records of a service, routed by the
//! cluster map.

use std::io::Write;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use weft::routing::ServiceClient;

#[derive(Args)]
pub struct KvArgs {
    /// Any node of the cluster.
    #[arg(long, global = true, default_value = "127.0.0.1:7100")]
    endpoint: String,
    /// Print one JSON document and nothing else on stdout. Keys and values are text when
    /// their bytes are UTF-8; otherwise they are `key_base64` / `value_base64` (standard
    /// base64) instead. Text output escapes bytes that are not UTF-8 (`\xff`).
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    creds: crate::creds::ClientArgs,
    #[command(subcommand)]
    cmd: Kv,
}

#[derive(Args)]
struct Target {
    /// Service name.
    #[arg(long)]
    service: String,
    /// Table within each partition.
    #[arg(long, default_value = weft::node::DEFAULT_TABLE)]
    table: String,
}

#[derive(Subcommand)]
enum Kv {
    /// Writes KEY = VALUE (acknowledged once a quorum has it).
    Put {
        #[command(flatten)]
        target: Target,
        key: String,
        /// The value; without it, standard input to its end (any bytes, as etcdctl reads it).
        value: Option<String>,
    },
    /// Prints KEY's value alone; a missing key exits non-zero with "not found".
    Get {
        #[command(flatten)]
        target: Target,
        key: String,
    },
    /// Deletes KEY.
    Delete {
        #[command(flatten)]
        target: Target,
        key: String,
    },
    /// Lists records in key order over every partition.
    Scan {
        #[command(flatten)]
        target: Target,
        /// Most records to print.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Prints changes as they commit, one line each (`PARTITION VERSION put KEY VALUE`,
    /// `... delete KEY`, `... table-created` or `... table-dropped`, with the table before
    /// the key when every table is watched; with --json one JSON document per line), in
    /// commit order per partition, until interrupted. Survives primary changes and node
    /// restarts; a version the replicas no longer keep exits non-zero with the oldest kept.
    Watch {
        /// Service name.
        #[arg(long)]
        service: String,
        /// Only this table's changes (every table when not given).
        #[arg(long)]
        table: Option<String>,
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// The first version to print in each partition (0: what commits from now on).
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Exit after printing this many changes.
        #[arg(long)]
        count: Option<u64>,
    },
}

/// Bytes as text: as they are when they are UTF-8, else with every byte outside printable
/// ASCII escaped (`\xff`), so that nothing is replaced silently.
fn text(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(_) => b.escape_ascii().to_string(),
    }
}

/// Sets a key or value on a JSON object: `name` holds the text when the bytes are UTF-8;
/// otherwise `name_base64` holds them in standard base64 and `name` is absent, so a reader
/// never gets altered bytes.
fn set_bytes(v: &mut serde_json::Value, name: &str, b: &[u8]) {
    use base64::Engine;
    match std::str::from_utf8(b) {
        Ok(s) => v[name] = s.into(),
        Err(_) => v[format!("{name}_base64")] = base64::engine::general_purpose::STANDARD.encode(b).into(),
    }
}

/// A record as `--json` prints it: key, value (see [`set_bytes`]) and version.
fn record_json(r: &weft::proto::Record) -> serde_json::Value {
    let mut v = serde_json::json!({ "version": r.version });
    set_bytes(&mut v, "key", &r.key);
    set_bytes(&mut v, "value", &r.value);
    v
}

/// One change as `weft kv watch` prints it.
fn change_line(partition: u64, c: &weft::proto::Change, all_tables: bool, json: bool) -> String {
    use weft::proto::change::Kind;
    let (op, key, value): (_, Option<&[u8]>, Option<&[u8]>) = match &c.kind {
        Some(Kind::Put(r)) => ("put", Some(&r.key), Some(&r.value)),
        Some(Kind::Delete(k)) => ("delete", Some(k), None),
        Some(Kind::TableCreated(_)) => ("table-created", None, None),
        Some(Kind::TableDropped(_)) => ("table-dropped", None, None),
        None => ("unknown", None, None),
    };
    if json {
        // DESIGN.md's contract: key, value or deleted, version.
        let mut v = serde_json::json!({ "partition": partition, "version": c.version, "table": c.table, "op": op });
        if let Some(k) = key {
            set_bytes(&mut v, "key", k);
        }
        match (&c.kind, value) {
            (_, Some(val)) => set_bytes(&mut v, "value", val),
            (Some(Kind::Delete(_)), None) => v["deleted"] = true.into(),
            _ => {}
        }
        return v.to_string();
    }
    let (key, value) = (key.map(text), value.map(text));
    let mut line = format!("{partition}\t{}\t{op}", c.version);
    if all_tables || key.is_none() {
        line.push('\t');
        line.push_str(&c.table);
    }
    for field in [key, value].into_iter().flatten() {
        line.push('\t');
        line.push_str(&field);
    }
    line
}

pub async fn run(a: KvArgs) -> anyhow::Result<()> {
    crate::creds::reachable(&a.endpoint).await?;
    let c = ServiceClient::new(vec![a.endpoint.clone()], a.creds.config()?);
    let mut out = std::io::stdout().lock();
    match a.cmd {
        Kv::Put { target, key, value } => {
            let value = match value {
                Some(v) => v.into_bytes(),
                None => {
                    let mut v = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut v)
                        .context("reading the value from standard input")?;
                    v
                }
            };
            let version = c.put(&target.service, &target.table, key.as_bytes(), &value).await?;
            if a.json {
                writeln!(out, "{}", serde_json::json!({ "key": key, "version": version }))?;
            } else {
                writeln!(out, "ok (version {version})")?;
            }
        }
        Kv::Get { target, key } => {
            let Some(r) = c.get(&target.service, &target.table, key.as_bytes()).await? else {
                bail!("not found: {key}");
            };
            if a.json {
                writeln!(out, "{}", record_json(&r))?;
            } else {
                out.write_all(&r.value)?;
                writeln!(out)?;
            }
        }
        Kv::Delete { target, key } => {
            let version = c.delete(&target.service, &target.table, key.as_bytes()).await?;
            if a.json {
                writeln!(out, "{}", serde_json::json!({ "key": key, "version": version }))?;
            } else {
                writeln!(out, "ok (version {version})")?;
            }
        }
        Kv::Watch { service, table, prefix, from, count } => {
            use futures::StreamExt;
            let all_tables = table.is_none();
            let options = weft::watch::WatchOptions {
                table: table.unwrap_or_default(),
                prefix: prefix.into_bytes(),
                from,
                resume: Default::default(),
            };
            let mut changes = c.watch(&service, &options).await.context("watch")?;
            let mut printed = 0u64;
            while count.is_none_or(|n| printed < n) {
                let Some(m) = changes.next().await else { bail!("the watch ended") };
                let m = m.context("watch")?;
                for ch in &m.changes {
                    if count.is_some_and(|n| printed >= n) {
                        break;
                    }
                    writeln!(out, "{}", change_line(m.partition, ch, all_tables, a.json))?;
                    printed += 1;
                }
                out.flush()?;
            }
        }
        Kv::Scan { target, limit } => {
            let records = c.scan(&target.service, &target.table, limit).await.context("scan")?;
            if a.json {
                let v: Vec<_> = records.iter().map(record_json).collect();
                writeln!(out, "{}", serde_json::Value::Array(v))?;
            } else {
                for r in &records {
                    writeln!(out, "{}\t{}", text(&r.key), text(&r.value))?;
                }
            }
        }
    }
    Ok(())
}
