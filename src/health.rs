//! `weft health`: asks one node the standard gRPC health question (`grpc.health.v1`),
//! for a container's or a supervisor's health check where no `grpcurl` is installed (the
//! image holds the `weft` binary alone). Exits 0 when the node answers SERVING, 1 when it
//! answers anything else or cannot be asked, printing the answer or why.
//!
//! The caller must be known to the node (health answers any authenticated caller, see
//! `weft_node::health`): a client certificate as for `weft kv`, or, with `--as-node`
//! (`crate::creds`), the node certificate, so a node's container checks itself with the
//! files it already has.

use clap::Args;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::creds::ClientArgs;

#[derive(Args)]
pub(crate) struct HealthArgs {
    /// The node to ask.
    #[arg(long, default_value = "127.0.0.1:7100")]
    endpoint: String,
    /// The service to ask about: "" is the whole node; `weft.v1.Store` and
    /// `weft.v1.Cluster` are the client-facing ones.
    #[arg(long, default_value = "")]
    service: String,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3.0)]
    timeout_s: f64,
    #[command(flatten)]
    creds: ClientArgs,
}

/// Asks, prints the answer, and says whether it was SERVING.
pub(crate) async fn run(a: HealthArgs) -> anyhow::Result<bool> {
    if !(a.timeout_s.is_finite() && a.timeout_s > 0.0) {
        anyhow::bail!("--timeout-s must be a positive number of seconds");
    }
    let security = a.creds.security()?;
    let wait = std::time::Duration::from_secs_f64(a.timeout_s);
    let channels = weft_security::Channels::new(security, wait);
    let mut client = HealthClient::new(channels.channel(&a.endpoint).map_err(|s| anyhow::anyhow!("{}", s.message()))?);
    let answer = tokio::time::timeout(wait, client.check(HealthCheckRequest { service: a.service.clone() }))
        .await
        .map_err(|_| anyhow::anyhow!("{}: no answer within {:?}", a.endpoint, wait))?
        .map_err(|s| anyhow::anyhow!("{}: {}", a.endpoint, weft::client::status_text(&s)))?;
    let status = answer.into_inner().status();
    let what = if a.service.is_empty() { "node".to_string() } else { a.service.clone() };
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{} {what}: {}", a.endpoint, status.as_str_name());
    Ok(status == tonic_health::pb::health_check_response::ServingStatus::Serving)
}
