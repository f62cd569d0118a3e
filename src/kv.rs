//! `weft kv`: put, get, delete and scan records of a service, routed by the cluster map.

use std::io::Write;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use weft::routing::ServiceClient;

#[derive(Args)]
pub struct KvArgs {
    /// Any node of the cluster.
    #[arg(long, global = true, default_value = "127.0.0.1:7100")]
    endpoint: String,
    /// Print one JSON document and nothing else on stdout.
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
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub async fn run(a: KvArgs) -> anyhow::Result<()> {
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
                let v = serde_json::json!({ "key": text(&r.key), "value": text(&r.value), "version": r.version });
                writeln!(out, "{v}")?;
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
        Kv::Scan { target, limit } => {
            let records = c.scan(&target.service, &target.table, limit).await.context("scan")?;
            if a.json {
                let v: Vec<_> = records
                    .iter()
                    .map(|r| serde_json::json!({ "key": text(&r.key), "value": text(&r.value), "version": r.version }))
                    .collect();
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
