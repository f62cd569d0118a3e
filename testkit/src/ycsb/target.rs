//! What `weft bench kv` drives: a weft service through the routing client, or (with the
//! `etcd` feature) an etcd cluster through the `etcd-client` crate. Both answer the same
//! four calls, so the load generator has one code path.
//!
//! On etcd a scan is a range from the key with a limit (`WithFromKey` + `WithLimit`, as
//! go-ycsb's etcd binding does it); on weft it is [`ServiceClient::scan_from`], which asks
//! every partition at once because keys are hash-partitioned.

use std::sync::Arc;

use weft_client::routing::ServiceClient;

use crate::Error;

/// A store under load. Cloning is cheap; clones share connections.
#[derive(Clone)]
pub enum Target {
    /// One table of a weft service.
    Weft {
        /// The routing client.
        client: Arc<ServiceClient>,
        /// The service.
        service: Arc<str>,
        /// The table in each partition.
        table: Arc<str>,
    },
    /// An etcd cluster's key space.
    #[cfg(feature = "etcd")]
    Etcd(Box<etcd_client::KvClient>),
}

impl Target {
    /// The default table of `service`, reached through any of `endpoints` (weft nodes).
    pub fn weft(endpoints: Vec<String>, service: &str, config: weft_client::client::ClientConfig) -> Target {
        let client = ServiceClient::new(endpoints, config);
        Target::Weft { client: Arc::new(client), service: service.into(), table: weft_node::DEFAULT_TABLE.into() }
    }

    /// The key space of the etcd cluster at `endpoints` (`http://host:port`, or `https://`
    /// with `tls`).
    #[cfg(feature = "etcd")]
    pub async fn etcd(endpoints: &[String], tls: Option<etcd_client::TlsOptions>) -> Result<Target, Error> {
        let options = tls.map(|t| etcd_client::ConnectOptions::new().with_tls(t));
        let client = etcd_client::Client::connect(endpoints, options).await?;
        Ok(Target::Etcd(Box::new(client.kv_client())))
    }

    /// Reads one record (linearizable); true if it exists.
    pub async fn read(&self, key: &[u8]) -> Result<bool, Error> {
        match self {
            Target::Weft { client, service, table } => Ok(client.get(service, table, key).await?.is_some()),
            #[cfg(feature = "etcd")]
            Target::Etcd(kv) => Ok(!kv.as_ref().clone().get(key, None).await?.kvs().is_empty()),
        }
    }

    /// Writes one record, acknowledged once a quorum has it.
    pub async fn write(&self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        match self {
            Target::Weft { client, service, table } => {
                client.put(service, table, key, value).await?;
                Ok(())
            }
            #[cfg(feature = "etcd")]
            Target::Etcd(kv) => {
                kv.as_ref().clone().put(key, value, None).await?;
                Ok(())
            }
        }
    }

    /// Reads up to `len` records in key order from `from` (inclusive); returns how many.
    pub async fn scan(&self, from: &[u8], len: usize) -> Result<usize, Error> {
        match self {
            Target::Weft { client, service, table } => Ok(client.scan_from(service, table, from, len).await?.len()),
            #[cfg(feature = "etcd")]
            Target::Etcd(kv) => {
                let opts = etcd_client::GetOptions::new().with_from_key().with_limit(len as i64);
                Ok(kv.as_ref().clone().get(from, Some(opts)).await?.kvs().len())
            }
        }
    }
}
