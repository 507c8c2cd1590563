//! `meridian sim --list`: what a simulation would publish, and the load it
//! puts on producers, before anything runs.

use meridian_config::SimConfig;
use meridian_proto::{encode_frame, unix_now, CscId, ProducerFrame, Sample};
use meridian_sim::signal::{Rng, TopicSignal};

/// Prints each CSC's topics with rate and encoded sample size, and the totals.
pub fn print(config: &SimConfig) -> anyhow::Result<()> {
    let sim = meridian::roles::simulator(config);
    let (mut total_rate, mut total_bytes) = (0.0, 0.0);
    for csc in &config.cscs {
        let id: CscId = csc.parse()?;
        let interface = sim.interface(id.csc.as_str())?;
        let (mut rate, mut bytes) = (0.0, 0.0);
        println!(
            "{id}: {} telemetry topics, {} events, {} commands",
            interface.telemetry.len(),
            interface.events.len(),
            interface.commands.len()
        );
        for topic in &interface.telemetry {
            let hz = f64::from(topic.rate_hz.unwrap_or(1.0)) * config.rate_multiplier;
            let size = encoded_size(topic, config.seed);
            println!(
                "  telemetry {:<32} {:>7.1} Hz {:>6} B/sample {:>4} fields",
                topic.name,
                hz,
                size,
                topic.fields.len()
            );
            rate += hz;
            bytes += hz * size as f64;
        }
        for event in &interface.events {
            println!("  event     {}", event.name);
        }
        let commands: Vec<&str> = interface.commands.iter().map(|c| c.name.as_str()).collect();
        println!("  commands  {}", commands.join(", "));
        println!(
            "  telemetry load: {rate:.0} samples/s, {:.1} KiB/s",
            bytes / 1024.0
        );
        total_rate += rate;
        total_bytes += bytes;
    }
    println!(
        "total telemetry: {total_rate:.0} samples/s, {:.2} MiB/s (bincode frames; events and Scripts add a few per second)",
        total_bytes / (1024.0 * 1024.0)
    );
    Ok(())
}

/// Bytes of one sample of `topic` as a producer frames it.
fn encoded_size(topic: &meridian_proto::TopicSchema, seed: u64) -> usize {
    let now = unix_now(std::time::SystemTime::now());
    let fields = TopicSignal::new(topic, &Rng::new(seed)).sample(1.0, now);
    let sample = Sample {
        salindex: None,
        topic: topic.name.clone(),
        category: topic.category,
        seq: 1,
        source_ts: now,
        fields,
    };
    let mut buf = Vec::new();
    match encode_frame(&ProducerFrame::Batch(vec![sample]), &mut buf) {
        Ok(()) => buf.len(),
        Err(_) => 0,
    }
}
