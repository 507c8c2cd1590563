//! The `meridian` library: how the binary's roles are wired, for the binary
//! (`src/main.rs`, `meridian up`) and the test harness alike.
//!
//! Layout:
//! - [`roles`]: binds the roles a process runs, serves them, stops them in
//!   the pipeline's order, and reports the first that fails.

pub mod roles;
