//! The simulated CSCs: what makes each one itself. Generic behaviour
//! (states, heartbeats, acknowledgements, telemetry schedule) is in
//! [`crate::csc`]; topics and commands come from [`crate::interface`].

mod axis;
pub mod dome;
pub mod m1m3;
pub mod mount;
pub mod script_queue;
pub mod test;

use crate::csc::Behaviour;

/// The behaviour of a CSC that can be started on its own; `None` for CSCs
/// that are not simulated or only run under another one (`Script`, started
/// by a ScriptQueue).
pub fn behaviour_for(csc: &str) -> Option<Box<dyn Behaviour>> {
    Some(match csc {
        "Test" => Box::new(test::TestCsc::default()),
        "MTMount" => Box::new(mount::Mount::new()),
        "ATDome" => Box::new(dome::Dome::new()),
        "MTM1M3" => Box::new(m1m3::M1M3::default()),
        "ScriptQueue" => Box::new(script_queue::ScriptQueue::default()),
        _ => return None,
    })
}

/// CSCs `meridian sim` can start on their own.
pub const STARTABLE: &[&str] = &["ATDome", "MTM1M3", "MTMount", "ScriptQueue", "Test"];
