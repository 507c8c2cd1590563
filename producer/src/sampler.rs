//! Per-topic telemetry sampling: the latest value of each topic, at most at
//! its rate — `producer.rates` if configured, else the rate the topic
//! declares, else `producer.telemetry_rate_hz` — and only when it changed
//! since the last sample.

use meridian_config::ProducerConfig;
use meridian_proto::{Category, TopicSchema};
use meridian_sim::{LatestTelemetry, Published};
use std::collections::HashMap;
use std::time::{Duration, Instant};

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
            let hz = config
                .rates
                .get(&t.name)
                .copied()
                .unwrap_or(config.telemetry_rate_hz);
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
