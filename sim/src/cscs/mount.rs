//! `MTMount`: the main telescope mount. Azimuth and elevation follow
//! `moveToTarget` with the real axes' speed limits (azimuth 10.5°/s,
//! elevation 5.25°/s) and publish position, velocity and demand at 20 Hz;
//! the command completes when both axes are in position.

use super::axis::Axis;
use crate::csc::{param_f64, Behaviour, Ctx, Outcome, STEP_HZ};
use meridian_proto::{Fields, Value};

pub struct Mount {
    azimuth: Axis,
    elevation: Axis,
    /// The running `moveToTarget`, finished when both axes arrive.
    moving: Option<u64>,
    in_position: (bool, bool),
}

impl Mount {
    pub fn new() -> Mount {
        Mount {
            azimuth: Axis::new(0.0, 10.5, 5.25, 1e-4),
            elevation: Axis::new(80.0, 5.25, 5.25, 1e-4),
            moving: None,
            in_position: (true, true),
        }
    }
}

impl Default for Mount {
    fn default() -> Self {
        Self::new()
    }
}

fn write_axis(fields: &mut Fields, axis: &Axis, ctx: &mut Ctx) {
    let jitter = 1e-5 * ctx.rng.noise();
    for (name, value) in fields.iter_mut() {
        let v = match name.as_str() {
            "actualPosition" => axis.position + jitter,
            "actualVelocity" => axis.velocity,
            "actualAcceleration" => axis.acceleration,
            "demandPosition" => axis.target,
            "demandVelocity" => axis.velocity,
            _ => continue,
        };
        *value = Value::Float(v);
    }
}

impl Behaviour for Mount {
    fn telemetry(&mut self, topic: &str, fields: &mut Fields, ctx: &mut Ctx) {
        match topic {
            "azimuth" => write_axis(fields, &self.azimuth, ctx),
            "elevation" => write_axis(fields, &self.elevation, ctx),
            _ => {}
        }
    }

    fn command(&mut self, name: &str, params: &Fields, token: u64, ctx: &mut Ctx) -> Outcome {
        match name {
            "moveToTarget" => {
                let (Some(az), Some(el)) = (param_f64(params, "azimuth"), param_f64(params, "elevation"))
                else {
                    return Outcome::Failed("moveToTarget needs azimuth and elevation".into());
                };
                if !(-270.0..=270.0).contains(&az) {
                    return Outcome::Failed(format!("azimuth {az} outside the limits -270..270 deg"));
                }
                if !(15.0..=90.0).contains(&el) {
                    return Outcome::Failed(format!("elevation {el} outside the limits 15..90 deg"));
                }
                if let Some(previous) = self.moving.replace(token) {
                    ctx.complete(previous, Err("superseded by a new moveToTarget".into()));
                }
                self.azimuth.target = az;
                self.elevation.target = el;
                ctx.event(
                    "target",
                    &[("azimuth", Value::Float(az)), ("elevation", Value::Float(el))],
                );
                ctx.log(
                    crate::csc::log_level::INFO,
                    &format!("moving to az={az:.3} el={el:.3}"),
                );
                Outcome::Running
            }
            "stop" | "stopTracking" => {
                self.on_disable(ctx);
                Outcome::Done("Done".into())
            }
            _ => Outcome::Done("Done".into()),
        }
    }

    fn step(&mut self, ctx: &mut Ctx) {
        let dt = 1.0 / STEP_HZ;
        self.azimuth.step(dt);
        self.elevation.step(dt);
        let now = (self.azimuth.in_position(), self.elevation.in_position());
        if now.0 != self.in_position.0 {
            ctx.event("azimuthInPosition", &[("inPosition", Value::Bool(now.0))]);
        }
        if now.1 != self.in_position.1 {
            ctx.event("elevationInPosition", &[("inPosition", Value::Bool(now.1))]);
        }
        self.in_position = now;
        if now.0 && now.1 {
            if let Some(token) = self.moving.take() {
                ctx.complete(token, Ok("Done".into()));
            }
        }
    }

    fn on_disable(&mut self, ctx: &mut Ctx) {
        self.azimuth.stop();
        self.elevation.stop();
        if let Some(token) = self.moving.take() {
            ctx.complete(token, Err("motion stopped".into()));
        }
    }
}
