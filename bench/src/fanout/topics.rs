//! The topics of a fan-out run: MTM1M3's 50 Hz telemetry topics, with the
//! simulator's values, spread over instances 1, 2, … until there are enough.

use super::args::CSC;
use anyhow::{bail, Context};
use meridian_proto::{unix_now, Category, CscId, Fields, TopicId, TopicSchema};
use meridian_sim::interface::Interface;
use meridian_sim::signal::{Rng, TopicSignal};
use std::time::SystemTime;

/// One topic the producers publish and the clients subscribe to.
pub(super) struct Topic {
    pub(super) id: TopicId,
    pub(super) schema: TopicSchema,
    /// One sample's fields from the simulator, sent every period.
    pub(super) fields: Fields,
    /// The fields as the ingest stores them (JSON), for the bare baseline's frames.
    pub(super) json: String,
}

/// MTM1M3's telemetry topics of at least 50 Hz, repeated over instances 1,
/// 2, … until there are `count`: each schema with its salindex and one
/// sample's fields from the simulator. `meridian-bench love` publishes the same
/// topics, so both benches load the servers alike.
pub fn fast_topics(count: usize) -> anyhow::Result<Vec<(TopicSchema, u32, Fields)>> {
    let interface = Interface::builtin(CSC).context("the simulator has no MTM1M3 interface")?;
    let fast: Vec<&TopicSchema> = interface
        .telemetry
        .iter()
        .filter(|t| t.rate_hz.is_some_and(|hz| hz >= 50.0))
        .collect();
    if fast.is_empty() {
        bail!("MTM1M3's interface has no 50 Hz telemetry topic");
    }
    let now = unix_now(SystemTime::now());
    Ok((0..count)
        .map(|i| {
            let schema = fast[i % fast.len()].clone();
            let salindex = 1 + (i / fast.len()) as u32;
            let fields = TopicSignal::new(&schema, &Rng::new(1)).sample(1.0, now);
            (schema, salindex, fields)
        })
        .collect())
}

/// The topics of a run: [`fast_topics`] with their ids and stored JSON.
pub(super) fn plan(count: usize) -> anyhow::Result<Vec<Topic>> {
    fast_topics(count)?
        .into_iter()
        .map(|(schema, salindex, fields)| {
            let json = meridian_proto::value::fields_to_json(&fields);
            let id = TopicId::new(CscId::new(CSC, salindex)?, Category::Telemetry, &schema.name)?;
            Ok(Topic {
                id,
                schema,
                fields,
                json,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::browsers::subscribe_request;
    use super::*;

    #[test]
    fn the_plan_spreads_m1m3_topics_over_instances() {
        let topics = plan(50).unwrap();
        assert_eq!(topics.len(), 50);
        let instances: std::collections::HashSet<u32> = topics.iter().map(|t| t.id.csc.salindex).collect();
        assert!(instances.len() > 1 && instances.contains(&1));
        assert!(topics.iter().all(|t| t.json.starts_with('{')));
        // The request parses as the frontend parses it.
        let request = subscribe_request(&format!("{}/{}", topics[0].id.csc, topics[0].id.topic)).unwrap();
        assert!(matches!(
            meridian_proto::browser::ClientRequest::parse(&request),
            Ok(meridian_proto::browser::ClientRequest::Subscribe(_))
        ));
    }
}
