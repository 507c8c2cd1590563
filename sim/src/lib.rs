//! Simulated observatory devices (CSCs) behind a middleware boundary.
//!
//! The producer and the commander talk to CSCs only through the
//! [`Middleware`] trait, the way they would talk to the observatory's real
//! middleware: subscribe to a CSC's telemetry and events, send a command and
//! await its acknowledgement. [`SimMiddleware`] is the implementation that
//! runs simulated CSCs in-process; a real middleware adapter can be added
//! later without touching producer or commander code.
//!
//! Layout:
//! - [`middleware`]: the trait, what it delivers ([`Published`], [`CscFeed`], [`LatestTelemetry`]) and acknowledgements.
//! - [`csc`]: behaviour every simulated CSC shares: summary state machine, publishing.
//! - [`test_csc`]: the small `Test` CSC used by unit and end-to-end tests.
//! - [`sim`]: [`SimMiddleware`], which starts simulated CSCs and routes to them.

pub mod csc;
pub mod middleware;
pub mod sim;
pub mod test_csc;

pub use middleware::{Ack, AckState, CscFeed, LatestTelemetry, Middleware, MiddlewareError, Published};
pub use sim::SimMiddleware;
