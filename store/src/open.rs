//! Opening the store a configuration names: the one place that knows every
//! backend, so the roles and the commander hold only an `Arc<dyn Store>`.

use crate::cluster::ClusterStore;
use crate::contract::{Store, StoreError};
use crate::memory::MemoryStore;
use crate::redis::RedisStore;
use meridian_config::{StoreBackend, StoreConfig};
use std::sync::Arc;

/// Opens the store `config` names: Redis or a Redis Cluster (checked with a
/// first command, so a wrong URL fails at start with the URL in the
/// message) or a new in-memory store.
pub async fn open(config: &StoreConfig) -> Result<Arc<dyn Store>, StoreError> {
    let (store, key, urls): (Arc<dyn Store>, _, _) = match config.backend {
        StoreBackend::Memory => return Ok(Arc::new(MemoryStore::new())),
        StoreBackend::Redis => (
            Arc::new(RedisStore::connect(&config.redis_url).await?),
            "store.redis_url",
            config.redis_url.clone(),
        ),
        StoreBackend::Cluster => {
            let urls = config.cluster_nodes.join(", ");
            let store = ClusterStore::connect(&config.cluster_nodes, config.cluster_replica_acks)
                .await
                .map_err(|e| match e {
                    StoreError::Unavailable(reason) => {
                        StoreError::Unavailable(format!("store.cluster_nodes = [{urls}]: {reason}"))
                    }
                    other => other,
                })?;
            (Arc::new(store), "store.cluster_nodes", urls)
        }
    };
    store
        .len(meridian_proto::keys::STORE_PROBE)
        .await
        .map_err(|e| match e {
            StoreError::Unavailable(reason) => StoreError::Unavailable(format!("{key} = {urls}: {reason}")),
            other => other,
        })?;
    Ok(store)
}
