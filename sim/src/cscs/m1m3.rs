//! `MTM1M3`: the primary/tertiary mirror support, the heaviest publisher —
//! force-actuator arrays of 156 values at 50 Hz, with hardpoint, inertial,
//! inclinometer and power topics on the same tick. Raising and lowering
//! the mirror take a few seconds and walk `detailedState`.

use crate::csc::{Behaviour, Ctx, Outcome};
use meridian_proto::{Fields, Value};

/// `detailedState` values used here (the interface's DetailedState enumeration).
pub mod detailed_state {
    pub const PARKED: i64 = 5;
    pub const RAISING: i64 = 6;
    pub const ACTIVE: i64 = 7;
    pub const LOWERING: i64 = 8;
}

/// Seconds a raise or lower takes in the simulation.
pub const RAISE_SECONDS: f64 = 3.0;

#[derive(Default)]
pub struct M1M3 {
    /// (command token, detailed state when done, time it completes).
    motion: Option<(u64, i64, f64)>,
}

impl Behaviour for M1M3 {
    fn on_start(&mut self, ctx: &mut Ctx) {
        ctx.event(
            "detailedState",
            &[("detailedState", Value::Int(detailed_state::PARKED))],
        );
    }

    fn command(&mut self, name: &str, _params: &Fields, token: u64, ctx: &mut Ctx) -> Outcome {
        let (during, after) = match name {
            "raiseM1M3" => (detailed_state::RAISING, detailed_state::ACTIVE),
            "lowerM1M3" => (detailed_state::LOWERING, detailed_state::PARKED),
            _ => return Outcome::Done("Done".into()),
        };
        if self.motion.is_some() {
            return Outcome::Failed(format!("{name} refused: the mirror is already moving"));
        }
        ctx.event("detailedState", &[("detailedState", Value::Int(during))]);
        self.motion = Some((token, after, ctx.t + RAISE_SECONDS));
        Outcome::Running
    }

    fn step(&mut self, ctx: &mut Ctx) {
        if let Some((token, after, until)) = self.motion {
            if ctx.t >= until {
                self.motion = None;
                ctx.event("detailedState", &[("detailedState", Value::Int(after))]);
                ctx.complete(token, Ok("Done".into()));
            }
        }
    }

    fn on_disable(&mut self, ctx: &mut Ctx) {
        if let Some((token, _, _)) = self.motion.take() {
            ctx.complete(token, Err("aborted: the CSC left ENABLED".into()));
        }
    }
}
