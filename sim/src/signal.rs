//! Plausible values: smooth, seeded signals with a little noise, so a plot
//! in a browser looks like a telescope and not like random numbers, and the
//! same seed gives the same night.

use meridian_proto::{FieldSchema, Fields, TopicSchema, Value, ValueKind};

/// A small, fast, seedable generator (SplitMix64); statistical quality is
/// plenty for simulated noise, and it needs no dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A generator for one named thing, independent of every other name.
    pub fn derive(&self, name: &str) -> Rng {
        Rng(self.0 ^ hash(name))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Roughly normal noise with standard deviation 1 (sum of uniforms).
    pub fn noise(&mut self) -> f64 {
        (self.unit() + self.unit() + self.unit() - 1.5) * 2.0
    }
}

/// FNV-1a: a stable hash of a name, the same on every machine and run.
pub fn hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The shape of one simulated value: a slow sine around an offset, plus noise.
#[derive(Debug, Clone, Copy)]
struct Wave {
    offset: f64,
    amplitude: f64,
    period_s: f64,
    phase: f64,
    noise: f64,
}

impl Wave {
    fn new(rng: &mut Rng) -> Wave {
        let offset = (rng.unit() * 200.0 - 100.0).round();
        let amplitude = 1.0 + rng.unit() * 20.0;
        Wave {
            offset,
            amplitude,
            period_s: 20.0 + rng.unit() * 280.0,
            phase: rng.unit() * std::f64::consts::TAU,
            noise: amplitude * 0.02,
        }
    }

    fn at(&self, t: f64, rng: &mut Rng) -> f64 {
        self.offset
            + self.amplitude * (std::f64::consts::TAU * t / self.period_s + self.phase).sin()
            + self.noise * rng.noise()
    }
}

/// Generates every field of one telemetry topic: each float element follows
/// its own wave; timestamps are the publication time; counters count.
#[derive(Debug, Clone)]
pub struct TopicSignal {
    fields: Vec<(FieldSchema, Vec<Wave>)>,
    rng: Rng,
    ticks: i64,
}

impl TopicSignal {
    pub fn new(topic: &TopicSchema, seed: &Rng) -> TopicSignal {
        let mut rng = seed.derive(&topic.name);
        let fields = topic
            .fields
            .iter()
            .map(|f| {
                let n = f.count.unwrap_or(1) as usize;
                let mut field_rng = rng.derive(&f.name);
                (f.clone(), (0..n).map(|_| Wave::new(&mut field_rng)).collect())
            })
            .collect();
        let _ = rng.next_u64();
        TopicSignal {
            fields,
            rng,
            ticks: 0,
        }
    }

    /// The values at `t` seconds into the run, published at Unix time `now`.
    pub fn sample(&mut self, t: f64, now: f64) -> Fields {
        self.ticks += 1;
        let mut out = Vec::with_capacity(self.fields.len());
        for (field, waves) in &self.fields {
            let is_time = field.name == "timestamp" || field.name.ends_with("Timestamp");
            let value = match (field.kind, field.count) {
                (ValueKind::Float, None) if is_time => Value::Float(now),
                (ValueKind::Float, None) => Value::Float(waves[0].at(t, &mut self.rng)),
                (ValueKind::Float, Some(_)) => {
                    Value::Floats(waves.iter().map(|w| w.at(t, &mut self.rng)).collect())
                }
                (ValueKind::Int, None) => Value::Int(self.ticks),
                (ValueKind::Int, Some(n)) => Value::Ints((0..n as i64).map(|i| self.ticks + i).collect()),
                (ValueKind::Bool, None) => Value::Bool(false),
                (ValueKind::Bool, Some(n)) => Value::Bools(vec![false; n as usize]),
                (ValueKind::Str, _) => Value::Str(String::new()),
            };
            out.push((field.name.clone(), value));
        }
        out
    }
}

/// Every field of `topic` at its zero value, with `set` replacing named
/// fields. Fields `set` names that the schema lacks are dropped: a message
/// never carries a field its schema does not declare.
pub fn fields_for(topic: &TopicSchema, set: &[(&str, Value)]) -> Fields {
    topic
        .fields
        .iter()
        .map(|f| {
            let value = set
                .iter()
                .find(|(name, _)| *name == f.name)
                .map(|(_, v)| v.clone());
            (f.name.clone(), value.unwrap_or_else(|| zero(f)))
        })
        .collect()
}

/// The zero value of a field: 0, 0.0, false, "" or an array of them.
pub fn zero(field: &FieldSchema) -> Value {
    match (field.kind, field.count) {
        (ValueKind::Bool, None) => Value::Bool(false),
        (ValueKind::Int, None) => Value::Int(0),
        (ValueKind::Float, None) => Value::Float(0.0),
        (ValueKind::Str, _) => Value::Str(String::new()),
        (ValueKind::Bool, Some(n)) => Value::Bools(vec![false; n as usize]),
        (ValueKind::Int, Some(n)) => Value::Ints(vec![0; n as usize]),
        (ValueKind::Float, Some(n)) => Value::Floats(vec![0.0; n as usize]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_proto::Category;

    fn topic() -> TopicSchema {
        let f = |name: &str, kind, count| FieldSchema {
            name: name.into(),
            kind,
            count,
            units: "N".into(),
        };
        TopicSchema {
            name: "forceActuatorData".into(),
            category: Category::Telemetry,
            rate_hz: Some(50.0),
            fields: vec![
                f("zForce", ValueKind::Float, Some(156)),
                f("timestamp", ValueKind::Float, None),
            ],
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_values_and_another_seed_does_not() {
        let a = TopicSignal::new(&topic(), &Rng::new(7)).sample(1.0, 5.0);
        let b = TopicSignal::new(&topic(), &Rng::new(7)).sample(1.0, 5.0);
        let c = TopicSignal::new(&topic(), &Rng::new(8)).sample(1.0, 5.0);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a[1], ("timestamp".to_string(), Value::Float(5.0)));
    }

    #[test]
    fn signals_are_smooth_not_random() {
        // Between two samples 20 ms apart, every element moves by far less
        // than its range: a plot shows curves, not static.
        let mut s = TopicSignal::new(&topic(), &Rng::new(1));
        let (a, b) = (s.sample(10.0, 0.0), s.sample(10.02, 0.0));
        let (Value::Floats(a), Value::Floats(b)) = (&a[0].1, &b[0].1) else {
            panic!()
        };
        assert_eq!(a.len(), 156);
        let max_step = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
        let spread = a.iter().fold(f64::MIN, |m, v| m.max(*v)) - a.iter().fold(f64::MAX, |m, v| m.min(*v));
        assert!(max_step < spread / 10.0, "step {max_step} vs spread {spread}");
    }

    #[test]
    fn fields_for_fills_the_schema_and_drops_unknown_names() {
        let f = fields_for(
            &topic(),
            &[("timestamp", Value::Float(3.0)), ("nope", Value::Int(1))],
        );
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].1, Value::Floats(vec![0.0; 156]));
        assert_eq!(f[1].1, Value::Float(3.0));
    }
}
