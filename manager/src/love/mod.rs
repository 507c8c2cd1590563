//! Compatibility with the replaced system (LOVE), so its browser client,
//! its producers and its ScriptQueue panel keep working while a site moves
//! over (`shared/reference/love-protocol.md`, summary in `docs/protocol.md`).
//!
//! Everything here reads and writes what the native pipeline stores; nothing
//! in the native pipeline knows about it. The frontend mounts [`router`];
//! the manager runs [`ScriptQueueDeriver`] beside its ingest. Dependencies
//! point one way: this folder uses the frontend's hub and inbox and the
//! store, never the ingest, and no frontend module imports from here except
//! to mount the router.
//!
//! Layout:
//! - `endpoint`: the WebSocket endpoint at `/manager[/<pool>]/ws/subscription[/]`
//!   ([`router`]) and one connection's session.
//! - `group`: the replaced protocol's groups, what each delivers, CSC heartbeats.
//! - `encode`: its messages (data in three flavours, heartbeats, replies)
//!   and the field schemas they describe.
//! - `publish`: the replaced system's producers writing to the store.
//! - `script_log`: a Script's last log messages on joining its group.
//! - `heartbeat`: the manager heartbeat and the components' heartbeats.
//! - `time`: the time service (`get_time_data`).
//! - [`script_queue`]: the ScriptQueue pseudo-CSCs derived from stored events.

mod encode;
mod endpoint;
mod group;
mod heartbeat;
mod publish;
mod script_log;
pub mod script_queue;
mod time;

pub use endpoint::router;
pub use script_queue::ScriptQueueDeriver;
