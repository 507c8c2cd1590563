//! The `Test` CSC: predictable values for unit and end-to-end tests.
//! Telemetry tick `n` (counting from 1) carries `int0 = n`,
//! `double0 = n / 10`, `string0 = "tick n"`, `boolean0 = (n is even)`, and
//! the arrays `int0 = [n, n+1, …]`; every [`EVENT_EVERY_TICKS`] ticks the
//! `scalars` event repeats the telemetry's scalars.

use crate::csc::{param_f64, Behaviour, Ctx, Outcome};
use meridian_proto::{Fields, Value};

/// Every how many `scalars` telemetry ticks the `scalars` event is published.
pub const EVENT_EVERY_TICKS: i64 = 10;

#[derive(Default)]
pub struct TestCsc {
    ticks: i64,
    /// A running `wait` command: (token, time it completes).
    waiting: Vec<(u64, f64)>,
}

fn set(fields: &mut Fields, name: &str, value: Value) {
    if let Some(slot) = fields.iter_mut().find(|(k, _)| k == name) {
        slot.1 = value;
    }
}

impl Behaviour for TestCsc {
    fn telemetry(&mut self, topic: &str, fields: &mut Fields, ctx: &mut Ctx) {
        match topic {
            "scalars" => {
                self.ticks += 1;
                let n = self.ticks;
                set(fields, "boolean0", Value::Bool(n % 2 == 0));
                set(fields, "int0", Value::Int(n));
                set(fields, "double0", Value::Float(n as f64 / 10.0));
                set(fields, "string0", Value::Str(format!("tick {n}")));
                if n % EVENT_EVERY_TICKS == 0 {
                    let scalars: Vec<(&str, Value)> =
                        fields.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
                    ctx.event("scalars", &scalars);
                }
            }
            "arrays" => {
                let n = self.ticks.max(1);
                if let Some((_, Value::Ints(v))) = fields.iter_mut().find(|(k, _)| k == "int0") {
                    for (i, x) in v.iter_mut().enumerate() {
                        *x = n + i as i64;
                    }
                }
            }
            _ => {}
        }
    }

    fn command(&mut self, name: &str, params: &Fields, token: u64, ctx: &mut Ctx) -> Outcome {
        match name {
            "setScalars" | "setArrays" => {
                let topic = if name == "setScalars" { "scalars" } else { "arrays" };
                let values: Vec<(&str, Value)> =
                    params.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
                ctx.event(topic, &values);
                Outcome::Done("Done".into())
            }
            "fault" => {
                ctx.fault(1, "fault commanded");
                Outcome::Done("Done".into())
            }
            "wait" => {
                let duration = param_f64(params, "duration").unwrap_or(0.0);
                self.waiting.push((token, ctx.t + duration));
                Outcome::Running
            }
            other => Outcome::Failed(format!("{other} is not simulated by the Test CSC")),
        }
    }

    fn step(&mut self, ctx: &mut Ctx) {
        let now = ctx.t;
        self.waiting.retain(|(token, until)| {
            if *until <= now {
                ctx.complete(*token, Ok("Done".into()));
                false
            } else {
                true
            }
        });
    }

    fn on_disable(&mut self, ctx: &mut Ctx) {
        for (token, _) in self.waiting.drain(..) {
            ctx.complete(token, Err("aborted: the CSC left ENABLED".into()));
        }
    }
}
