//! Simulated observatory devices (CSCs) behind a middleware boundary.
//!
//! The producer and the commander talk to CSCs only through the
//! [`Middleware`] trait, the way they would talk to the observatory's real
//! middleware: subscribe to a CSC's telemetry and events, send a command and
//! await its acknowledgements. [`SimMiddleware`] is the implementation that
//! runs simulated CSCs in-process; a real middleware adapter can be added
//! later without touching producer or commander code.
//!
//! Layout, each module depending only on those above it:
//! - [`idl`]: a field's type as the site declares it ([`idl::IdlType`]) and the values it holds.
//! - [`interface`]: topics and commands of each CSC (builtin compact definitions).
//! - [`xml`]: the site's XML definitions read into an [`interface::Interface`].
//! - [`middleware`]: the trait, what it delivers ([`Published`], [`CscFeed`], [`LatestTelemetry`]) and acknowledgements.
//! - [`signal`]: smooth, seeded values.
//! - [`csc`]: what every CSC shares: summary state machine, generic events, acks, the telemetry
//!   schedule, and the [`csc::Registry`] of the CSCs running in a process.
//! - [`cscs`]: what makes MTM1M3, MTMount, ATDome, ScriptQueue (and its Scripts) and Test themselves.
//! - [`sim`]: [`SimMiddleware`], which starts simulated CSCs and routes to them.

pub mod csc;
pub mod cscs;
pub mod idl;
pub mod interface;
pub mod middleware;
pub mod signal;
pub mod sim;
pub mod xml;

pub use csc::SimOptions;
pub use middleware::{
    Ack, AckState, CommandAcks, CscFeed, LatestTelemetry, Middleware, MiddlewareError, Published,
};
pub use sim::{SimError, SimMiddleware};
