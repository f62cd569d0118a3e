//! `weft cert`: a cluster CA, node and client certificates in CockroachDB's layout, and
//! what a directory holds (`weft_security::issue` does the work).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use weft_security::issue;

#[derive(Args)]
pub struct Common {
    /// The certificate directory (ca.crt, node.crt/node.key, client.NAME.crt/.key).
    #[arg(long)]
    certs_dir: PathBuf,
    /// The CA's key (default: CERTS_DIR/ca.key; keep it elsewhere in production).
    #[arg(long)]
    ca_key: Option<PathBuf>,
    /// Days the certificate is valid (default: 3650 for a CA, 1825 otherwise).
    #[arg(long)]
    lifetime_days: Option<u32>,
    /// Replace files that exist.
    #[arg(long)]
    overwrite: bool,
}

#[derive(Subcommand)]
pub enum Cert {
    /// A new cluster CA: CERTS_DIR/ca.crt and its key.
    CreateCa(Common),
    /// A node's certificate (server and client), signed by the CA: CERTS_DIR/node.crt, .key.
    CreateNode {
        #[command(flatten)]
        common: Common,
        /// The node's id (its certificate names it; heartbeats are checked against it).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        id: u64,
        /// A host name or IP address the node is reached at (repeat for several).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
    },
    /// A user's client certificate, signed by the CA: CERTS_DIR/client.NAME.crt, .key.
    CreateClient {
        #[command(flatten)]
        common: Common,
        /// The user's name (the certificate's common name).
        name: String,
    },
    /// Every certificate in a directory: subject, kind, names and expiry.
    List {
        /// The directory.
        dir: PathBuf,
        /// Print one JSON document and nothing else on stdout.
        #[arg(long)]
        json: bool,
    },
}

fn wrote(paths: &[PathBuf]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for p in paths {
        writeln!(out, "wrote {}", p.display())?;
    }
    Ok(())
}

pub fn run(c: Cert) -> anyhow::Result<()> {
    match c {
        Cert::CreateCa(c) => {
            let days = c.lifetime_days.unwrap_or(issue::CA_DAYS);
            wrote(&issue::create_ca(&c.certs_dir, c.ca_key.as_deref(), days, c.overwrite)?)
        }
        Cert::CreateNode { common: c, id, hosts } => {
            let days = c.lifetime_days.unwrap_or(issue::LEAF_DAYS);
            wrote(&issue::create_node(&c.certs_dir, c.ca_key.as_deref(), id, &hosts, days, c.overwrite)?)
        }
        Cert::CreateClient { common: c, name } => {
            let days = c.lifetime_days.unwrap_or(issue::LEAF_DAYS);
            wrote(&issue::create_client(&c.certs_dir, c.ca_key.as_deref(), &name, days, c.overwrite)?)
        }
        Cert::List { dir, json } => list(&dir, json),
    }
}

fn list(dir: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let all = issue::list(dir).with_context(|| format!("reading {}", dir.display()))?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let when = |unix: i64| {
        time::OffsetDateTime::from_unix_timestamp(unix)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_else(|| unix.to_string())
    };
    let mut out = std::io::stdout().lock();
    if json {
        let v: Vec<_> = all
            .iter()
            .map(|(p, i)| {
                serde_json::json!({
                    "file": p.file_name().map(|n| n.to_string_lossy().into_owned()),
                    "subject": i.subject,
                    "kind": i.kind.to_string(),
                    "names": i.names,
                    "not_after": when(i.not_after_unix),
                    "expired": i.not_after_unix < now,
                    "serial": i.serial,
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::Value::Array(v))?;
        return Ok(());
    }
    writeln!(out, "{:<24} {:<16} {:<14} {:<22} NAMES", "FILE", "SUBJECT", "KIND", "EXPIRES")?;
    for (p, i) in &all {
        let file = p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned());
        let expires =
            if i.not_after_unix < now { format!("EXPIRED {}", when(i.not_after_unix)) } else { when(i.not_after_unix) };
        writeln!(out, "{file:<24} {:<16} {:<14} {expires:<22} {}", i.subject, i.kind.to_string(), i.names.join(","))?;
    }
    Ok(())
}
