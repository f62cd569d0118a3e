//! How the CLI's client commands (`weft kv`, `weft ctl`, `weft bench kv --endpoints`) find
//! their credentials: `--certs-dir` (or `WEFT_CERTS_DIR`) holds `ca.crt` and
//! `client.USER.crt`/`.key`; `--user` (or `WEFT_USER`) picks USER, `root` by default; a
//! bearer token (`--token` or `WEFT_TOKEN`) replaces the client certificate, and then only
//! `ca.crt` is read. Without a certificate directory the commands speak plaintext, which
//! only `--insecure` nodes accept (a secure node refuses with a message saying so).

use anyhow::Context;
use clap::Args;
use weft::client::ClientConfig;
use weft_security::{ClientSecurity, Credentials, Holder};

#[derive(Args, Clone, Debug)]
pub struct ClientArgs {
    /// Directory with ca.crt and client.USER.crt/.key (CockroachDB's layout).
    #[arg(long, global = true, env = "WEFT_CERTS_DIR")]
    certs_dir: Option<std::path::PathBuf>,
    /// The user to act as: its certificate is client.USER.crt.
    #[arg(long, global = true, env = "WEFT_USER", default_value = weft_security::identity::DEFAULT_USER)]
    user: String,
    /// A bearer token to present instead of a client certificate (needs --certs-dir for
    /// ca.crt).
    #[arg(long, global = true, env = "WEFT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Present the node certificate of --certs-dir instead of a user's: for commands a
    /// node's own container runs (its health check, its pre-stop hand-off). node.crt, or
    /// where a directory holds several nodes' (node-N.crt), this host's (N from the host
    /// name, a StatefulSet pod's ordinal plus one).
    #[arg(long, global = true, conflicts_with = "token")]
    as_node: bool,
}

impl ClientArgs {
    /// The certificate directory given, if any.
    /// The client security these flags describe.
    pub fn security(&self) -> anyhow::Result<ClientSecurity> {
        let Some(dir) = &self.certs_dir else {
            if self.as_node {
                anyhow::bail!("--as-node needs --certs-dir (or WEFT_CERTS_DIR) with the node's certificate");
            }
            if self.token.is_some() {
                anyhow::bail!("a token needs --certs-dir (or WEFT_CERTS_DIR) for ca.crt, to verify the nodes");
            }
            return Ok(ClientSecurity::insecure());
        };
        if self.as_node {
            let id = if dir.join("node.crt").exists() {
                None
            } else {
                Some(crate::node::id_from_hostname(&crate::node::hostname())?)
            };
            let creds = Credentials::load(dir, Holder::Node { id })
                .with_context(|| format!("loading this node's certificate from {}", dir.display()))?;
            return Ok(ClientSecurity::tls(creds));
        }
        let user = if self.token.is_some() { None } else { Some(self.user.clone()) };
        let creds = Credentials::load(dir, Holder::Client { user })
            .with_context(|| format!("loading client credentials from {}", dir.display()))?;
        let security = ClientSecurity::tls(creds);
        Ok(match &self.token {
            Some(t) => security.with_token(t.as_str()),
            None => security,
        })
    }

    /// Default client settings with these credentials.
    pub fn config(&self) -> anyhow::Result<ClientConfig> {
        Ok(ClientConfig::secured(self.security()?))
    }
}

/// How long [`reachable`] waits for a TCP connection.
const REACH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Fails at once, saying so, when nothing accepts a TCP connection at `endpoint`: a
/// wrong or stopped endpoint would otherwise cost a call's whole retry deadline before it
/// said anything.
pub async fn reachable(endpoint: &str) -> anyhow::Result<()> {
    match tokio::time::timeout(REACH_WAIT, tokio::net::TcpStream::connect(endpoint)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => {
            anyhow::bail!("cannot connect to {endpoint}: {e} (is a weft node listening there? see --endpoint)")
        }
        Err(_) => anyhow::bail!(
            "cannot connect to {endpoint}: no answer within {}s (is a weft node listening there? see --endpoint)",
            REACH_WAIT.as_secs()
        ),
    }
}
