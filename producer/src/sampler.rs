//! Per-topic telemetry sampling: the latest value of each topic, at most at
//! its rate — `producer.rates` if configured, else the rate the topic
//! declares, else `producer.telemetry_rate_hz` (the precedence lives in
//! [`ProducerConfig::rate_hz`]) — and only when it changed since the last
//! sample. A pure state machine: the caller passes `now`.

use meridian_config::ProducerConfig;
use meridian_proto::{Category, TopicSchema};
use meridian_sim::{LatestTelemetry, Published};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Which telemetry value of each topic is sent, and when.
pub struct Sampler {
    period: HashMap<String, Duration>,
    next_due: HashMap<String, Instant>,
    seen: HashMap<String, u64>,
    tick: Duration,
    changed: Vec<Published>,
}

impl Sampler {
    pub fn new(schemas: &[TopicSchema], config: &ProducerConfig) -> Sampler {
        let mut period = HashMap::new();
        for t in schemas.iter().filter(|t| t.category == Category::Telemetry) {
            let hz = config.rate_hz(&t.name, t.rate_hz);
            period.insert(t.name.clone(), Duration::from_secs_f64(1.0 / hz));
        }
        let tick = period.values().min().copied().unwrap_or(Duration::from_secs(1));
        Sampler {
            period,
            next_due: HashMap::new(),
            seen: HashMap::new(),
            tick,
            changed: Vec::new(),
        }
    }

    /// How often [`Sampler::sample`] should run: the fastest topic's period.
    pub fn tick(&self) -> Duration {
        self.tick
    }

    /// The sampling period of `topic`, if it is a telemetry topic.
    pub fn period(&self, topic: &str) -> Option<Duration> {
        self.period.get(topic).copied()
    }

    /// Values due at `now`: changed since last taken and past their topic's period.
    pub fn sample(&mut self, latest: &LatestTelemetry, now: Instant, out: &mut Vec<Published>) {
        latest.changed_since(&mut self.seen, &mut self.changed);
        for p in self.changed.drain(..) {
            let Some(period) = self.period.get(&p.topic) else {
                continue;
            };
            let due = self.next_due.entry(p.topic.clone()).or_insert(now);
            if *due <= now {
                // Keep the cadence, but never owe more than one period.
                *due = (*due + *period).max(now);
                out.push(p);
            } else {
                // Not due: forget we saw it so the next tick takes the newest value.
                if let Some(g) = self.seen.get_mut(&p.topic) {
                    *g -= 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_proto::Value;

    fn telemetry(name: &str, rate_hz: Option<f32>) -> TopicSchema {
        TopicSchema {
            name: name.into(),
            category: Category::Telemetry,
            rate_hz,
            fields: Vec::new(),
        }
    }

    fn value(topic: &str, n: i64) -> Published {
        Published {
            salindex: 0,
            topic: topic.into(),
            category: Category::Telemetry,
            source_ts: n as f64,
            fields: vec![("n".into(), Value::Int(n))],
        }
    }

    #[test]
    fn override_then_declared_rate_then_default() {
        let schemas = [
            telemetry("forces", Some(50.0)),
            telemetry("slow", Some(2.0)),
            telemetry("undeclared", None),
            telemetry("overridden", Some(50.0)),
            telemetry("nonsense", Some(f32::NAN)),
            telemetry("too_fast", Some(5000.0)),
        ];
        let mut config = ProducerConfig::default();
        config.rates.insert("overridden".into(), 5.0);
        let sampler = Sampler::new(&schemas, &config);
        let hz = |topic: &str| 1.0 / sampler.period(topic).unwrap().as_secs_f64();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
        assert!(close(hz("forces"), 50.0), "declared rate: {}", hz("forces"));
        assert!(
            close(hz("slow"), 2.0),
            "declared below the default: {}",
            hz("slow")
        );
        assert!(close(hz("undeclared"), config.telemetry_rate_hz));
        assert!(close(hz("overridden"), 5.0), "producer.rates wins");
        assert!(close(hz("nonsense"), config.telemetry_rate_hz));
        assert!(close(hz("too_fast"), 1000.0));
        assert_eq!(
            sampler.tick(),
            Duration::from_millis(1),
            "the fastest topic sets the tick"
        );
    }

    /// Virtual time: every topic changes at every tick for 10 s, and each is
    /// sampled exactly at its own rate, not at the fastest one or the default.
    #[test]
    fn each_topic_is_sampled_at_its_declared_rate() {
        let rates = [("forces", 50.0), ("mirror", 20.0), ("weather", 1.0)];
        let schemas: Vec<_> = rates.iter().map(|&(t, hz)| telemetry(t, Some(hz))).collect();
        let mut sampler = Sampler::new(&schemas, &ProducerConfig::default());
        let latest = LatestTelemetry::default();
        let start = Instant::now();
        let mut counts: HashMap<String, usize> = HashMap::new();
        let mut out = Vec::new();
        let ticks = (10.0 / sampler.tick().as_secs_f64()).round() as u32;
        for k in 0..ticks {
            for (topic, _) in rates {
                latest.publish(value(topic, i64::from(k)));
            }
            sampler.sample(&latest, start + sampler.tick() * k, &mut out);
            for p in out.drain(..) {
                *counts.entry(p.topic).or_default() += 1;
            }
        }
        for (topic, hz) in rates {
            assert_eq!(counts[topic], (hz * 10.0) as usize, "{topic} over 10 s");
        }
    }
}
