//! How the fan-out browsers count and time the samples of a batch frame,
//! JSON or MessagePack, without a full parse per frame (which would make
//! the browsers, not the server, the bottleneck).

use crate::hops::hops;

/// What each sample object of a batch frame carries once; counting it counts samples.
pub(super) const SAMPLE_MARKER: &str = "\"source_ts\":";

/// Appends, for each sample of a batch frame received at `now`, its lag and
/// the hops from its `source_ts`, `ingest_ts` and `frontend_ts` (seconds).
pub fn time_samples(frame: &str, now: f64, out: &mut Vec<[f64; 4]>) {
    let mut rest = frame;
    while let Some(at) = rest.find(SAMPLE_MARKER) {
        rest = &rest[at + SAMPLE_MARKER.len()..];
        let Some((lags, after)) = hops(rest, now) else {
            continue;
        };
        rest = after;
        out.push(lags);
    }
}

/// [`time_samples`] for a MessagePack batch frame.
pub(super) fn time_binary_samples(frame: &[u8], now: f64, out: &mut Vec<[f64; 4]>) {
    let Ok(batch) = meridian_proto::msgpack::decode(frame) else {
        return;
    };
    for sample in batch
        .get("samples")
        .and_then(|s| s.as_array())
        .unwrap_or_default()
    {
        let time = |key| sample.get(key).and_then(|v| v.as_f64());
        if let (Some(source), Some(ingest), Some(frontend)) =
            (time("source_ts"), time("ingest_ts"), time("frontend_ts"))
        {
            out.push([now - source, ingest - source, frontend - ingest, now - frontend]);
        }
    }
}

/// The number of samples of a MessagePack batch frame, read from its
/// header without decoding the samples: the frame is the map
/// `{"type":"batch","samples":[…],…}` written in that order.
pub(super) fn binary_batch_len(frame: &[u8]) -> Option<usize> {
    const HEAD: &[u8] = b"\x83\xa4type\xa5batch\xa7samples";
    let rest = frame.strip_prefix(HEAD)?;
    match *rest.first()? {
        b @ 0x90..=0x9f => Some((b & 0x0f) as usize),
        0xdc => Some(u16::from_be_bytes([*rest.get(1)?, *rest.get(2)?]) as usize),
        0xdd => Some(u32::from_be_bytes(rest.get(1..5)?.try_into().ok()?) as usize),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::args::CSC;
    use super::*;
    use meridian_proto::{Category, CscId, StreamId, TopicId};

    #[test]
    fn samples_of_a_batch_frame_are_timed_per_hop() {
        let topic = TopicId::new(CscId::new(CSC, 1).unwrap(), Category::Telemetry, "gyroData").unwrap();
        let a = meridian_proto::browser::sample_message(
            &topic,
            StreamId::new(1, 0),
            10.0,
            10.5,
            11.0,
            "{\"x\":1}",
        );
        let b = meridian_proto::browser::sample_message(&topic, StreamId::new(2, 0), 20.0, 20.25, 20.5, "{}");
        let frame = meridian_proto::browser::batch_frame([a.as_str(), b.as_str()].into_iter(), &[]);
        let mut out = Vec::new();
        time_samples(&frame, 21.0, &mut out);
        assert_eq!(out, [[11.0, 0.5, 0.5, 10.0], [1.0, 0.25, 0.25, 0.5]]);
        assert_eq!(frame.matches(SAMPLE_MARKER).count(), 2);
    }

    #[test]
    fn binary_batch_frames_are_counted_from_their_header_and_timed_per_hop() {
        let topic = TopicId::new(CscId::new(CSC, 1).unwrap(), Category::Telemetry, "gyroData").unwrap();
        for n in [0, 1, 15, 16, 300] {
            let samples: Vec<Vec<u8>> = (0..n)
                .map(|i| {
                    let t = 10.0 + i as f64;
                    meridian_proto::msgpack::sample_message(
                        &topic,
                        StreamId::new(1, i),
                        t,
                        t + 0.5,
                        t + 1.0,
                        "{}",
                    )
                    .0
                })
                .collect();
            let frame = meridian_proto::msgpack::batch_frame(samples.iter().map(Vec::as_slice), &[]);
            assert_eq!(binary_batch_len(&frame), Some(n as usize));
            let mut out = Vec::new();
            time_binary_samples(&frame, 20.0, &mut out);
            assert_eq!(out.len(), n as usize);
            if n > 0 {
                assert_eq!(out[0], [10.0, 0.5, 0.5, 9.0]);
            }
        }
        assert_eq!(binary_batch_len(b"\x81\xa4type"), None);
    }
}
