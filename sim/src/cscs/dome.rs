//! `ATDome`: the auxiliary telescope's dome. Slow: the azimuth turns at
//! about 2°/s and the shutter doors open in about 20 s; `position`
//! telemetry at 4 Hz. `moveAzimuth`, `openShutter` and `closeShutter`
//! complete when the motion ends.

use super::axis::Axis;
use crate::csc::{param_f64, Behaviour, Ctx, Outcome, STEP_HZ};
use meridian_proto::{Fields, Value};

pub struct Dome {
    azimuth: Axis,
    /// Main door opening, percent.
    door: Axis,
    moving_azimuth: Option<u64>,
    moving_door: Option<u64>,
}

impl Dome {
    pub fn new() -> Dome {
        let mut azimuth = Axis::new(0.0, 2.0, 1.0, 0.05);
        azimuth.wraps = true;
        Dome {
            azimuth,
            door: Axis::new(0.0, 5.0, 5.0, 0.1),
            moving_azimuth: None,
            moving_door: None,
        }
    }
}

impl Default for Dome {
    fn default() -> Self {
        Self::new()
    }
}

impl Behaviour for Dome {
    fn telemetry(&mut self, topic: &str, fields: &mut Fields, ctx: &mut Ctx) {
        if topic != "position" {
            return;
        }
        for (name, value) in fields.iter_mut() {
            *value = match name.as_str() {
                "azimuthPosition" => Value::Float(self.azimuth.position),
                "azimuthEncoderPosition" => Value::Int((self.azimuth.position * 1000.0) as i64),
                "mainDoorOpeningPercentage" => Value::Float(self.door.position),
                "dropoutDoorOpeningPercentage" => Value::Float(self.door.position),
                "azimuthPositionCommanded" | "azimuthCommandedPosition" => Value::Float(self.azimuth.target),
                _ => continue,
            };
        }
        let _ = ctx;
    }

    fn command(&mut self, name: &str, params: &Fields, token: u64, ctx: &mut Ctx) -> Outcome {
        match name {
            "moveAzimuth" => {
                let Some(az) = param_f64(params, "azimuth") else {
                    return Outcome::Failed("moveAzimuth needs azimuth".into());
                };
                if let Some(previous) = self.moving_azimuth.replace(token) {
                    ctx.complete(previous, Err("superseded by a new moveAzimuth".into()));
                }
                self.azimuth.target = az.rem_euclid(360.0);
                ctx.event("azimuthCommandedState", &[("azimuth", Value::Float(az))]);
                ctx.event("azimuthInPosition", &[("inPosition", Value::Bool(false))]);
                Outcome::Running
            }
            "openShutter" | "closeShutter" => {
                if let Some(previous) = self.moving_door.replace(token) {
                    ctx.complete(previous, Err(format!("superseded by {name}")));
                }
                self.door.target = if name == "openShutter" { 100.0 } else { 0.0 };
                ctx.event("shutterInPosition", &[("inPosition", Value::Bool(false))]);
                Outcome::Running
            }
            "stopMotion" => {
                self.on_disable(ctx);
                Outcome::Done("Done".into())
            }
            _ => Outcome::Done("Done".into()),
        }
    }

    fn step(&mut self, ctx: &mut Ctx) {
        let dt = 1.0 / STEP_HZ;
        self.azimuth.step(dt);
        self.door.step(dt);
        if self.azimuth.in_position() {
            if let Some(token) = self.moving_azimuth.take() {
                ctx.event("azimuthInPosition", &[("inPosition", Value::Bool(true))]);
                ctx.complete(token, Ok("Done".into()));
            }
        }
        if self.door.in_position() {
            if let Some(token) = self.moving_door.take() {
                ctx.event("shutterInPosition", &[("inPosition", Value::Bool(true))]);
                ctx.complete(token, Ok("Done".into()));
            }
        }
    }

    fn on_disable(&mut self, ctx: &mut Ctx) {
        self.azimuth.stop();
        self.door.stop();
        for token in [self.moving_azimuth.take(), self.moving_door.take()]
            .into_iter()
            .flatten()
        {
            ctx.complete(token, Err("motion stopped".into()));
        }
    }
}
