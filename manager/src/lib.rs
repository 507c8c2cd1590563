//! The manager: the two roles between producers and browsers.
//!
//! - *Ingest* accepts producers over QUIC and appends their samples to the store.
//! - *Frontend* reads each watched stream once and streams it to browsers over WebSocket.
//!
//! They scale apart; `meridian manager --role all` runs both in one process.
//! This crate must not know about CSC simulators: what it stores comes only
//! from the wire.
//!
//! Both roles reach the store through `meridian_store::Store` (the
//! `meridian-store` crate), opened once per process.
//!
//! Layout:
//! - [`ingest`]: QUIC endpoint, producer connections, batched store writer.
//! - [`frontend`]: WebSocket endpoint, browser connections, the shared stream reader (hub).
//! - [`love`]: compatibility with the replaced system: its WebSocket endpoint (mounted by the
//!   frontend) and its ScriptQueue pseudo-CSCs derived from stored events (run beside the ingest).

pub mod frontend;
pub mod ingest;
pub mod love;

use meridian_config::Config;
use meridian_proto::metrics::Observe;
use meridian_quic::tls;
use meridian_store::Store;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Which roles a manager process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Ingest,
    Frontend,
    All,
}

/// Why a manager could not run.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("store: {0}")]
    Store(#[from] meridian_store::StoreError),
    #[error("ingest: {0}")]
    Ingest(#[from] ingest::IngestError),
    #[error("frontend: {0}")]
    Frontend(#[from] frontend::FrontendError),
}

/// Runs `role` with the store and endpoints of `config` until `shutdown`.
pub async fn run(config: &Config, role: Role, shutdown: CancellationToken) -> Result<(), ManagerError> {
    Manager::bind(config, role).await?.run(shutdown).await
}

/// A manager whose roles are bound (store opened, endpoints listening) but
/// not yet serving, so the caller can read their observers first.
pub struct Manager {
    ingest: Option<ingest::Ingest>,
    frontend: Option<frontend::Frontend>,
    /// Runs beside the ingest (same roles, same shutdown), not inside it.
    script_queue: Option<love::ScriptQueueDeriver>,
}

impl Manager {
    /// Opens the store and binds the endpoints of `role`.
    pub async fn bind(config: &Config, role: Role) -> Result<Manager, ManagerError> {
        let store: Arc<dyn Store> = meridian_store::open(&config.store).await?;
        Manager::bind_with(config, role, store, None).await
    }

    /// Binds the endpoints of `role` on `store`; the ingest presents
    /// `identity`, or the one `tls` configures.
    pub async fn bind_with(
        config: &Config,
        role: Role,
        store: Arc<dyn Store>,
        identity: Option<tls::Identity>,
    ) -> Result<Manager, ManagerError> {
        let ingest = match role {
            Role::Ingest | Role::All => {
                let identity = match identity {
                    Some(identity) => identity,
                    None => tls::Identity::from_config(&config.tls).map_err(ingest::IngestError::from)?,
                };
                Some(ingest::Ingest::bind(config, store.clone(), identity)?)
            }
            Role::Frontend => None,
        };
        let frontend = match role {
            Role::Frontend | Role::All => Some(frontend::Frontend::bind(config, store.clone()).await?),
            Role::Ingest => None,
        };
        let script_queue = match role {
            Role::Ingest | Role::All => love::ScriptQueueDeriver::new(config, store.clone()),
            Role::Frontend => None,
        };
        Ok(Manager {
            ingest,
            frontend,
            script_queue,
        })
    }

    /// What the process's metrics listener serves: one observer per role.
    pub fn observers(&self) -> Vec<Arc<dyn Observe>> {
        let mut roles: Vec<Arc<dyn Observe>> = Vec::new();
        if let Some(i) = &self.ingest {
            roles.push(i.observer());
        }
        if let Some(f) = &self.frontend {
            roles.push(f.observer());
        }
        roles
    }

    /// The ingest role, if bound (its address and counters).
    pub fn ingest(&self) -> Option<&ingest::Ingest> {
        self.ingest.as_ref()
    }

    /// The frontend role, if bound (its address, hub and counters).
    pub fn frontend(&self) -> Option<&frontend::Frontend> {
        self.frontend.as_ref()
    }

    /// Serves until `shutdown`; one role failing stops the other. The
    /// ingest drains into the store before the frontend closes, the
    /// pipeline's order.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ManagerError> {
        // One role failing stops the other: a half-running manager would look healthy.
        let stop = shutdown.child_token();
        let frontend_stop = CancellationToken::new();
        let ingest_task = async {
            let ran = match self.ingest {
                Some(i) => i.run(stop.clone()).await.map_err(ManagerError::from),
                None => {
                    stop.cancelled().await;
                    Ok(())
                }
            }
            .inspect_err(|_| stop.cancel());
            frontend_stop.cancel();
            ran
        };
        let frontend_task = async {
            match self.frontend {
                Some(f) => f.run(frontend_stop.clone()).await.map_err(ManagerError::from),
                None => Ok(()),
            }
            .inspect_err(|_| stop.cancel())
        };
        let script_queue_task = async {
            if let Some(d) = self.script_queue {
                d.run(stop.clone()).await
            }
        };
        let (a, b, ()) = tokio::join!(ingest_task, frontend_task, script_queue_task);
        a.and(b)
    }
}
