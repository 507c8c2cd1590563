//! The night's browsers, in the bench process: each subscribes to every
//! CSC with one wildcard request per name, counts samples by category and
//! records every sample's lag per hop into bounded histograms.

use crate::hops::hops;
use crate::measure::LagHistogram;
use futures_util::{SinkExt, StreamExt};
use meridian_proto::unix_now;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// What each browser subscribes to, one wildcard request per CSC name
/// (every index, category and topic, including topics declared later):
/// the night's CSCs, the Scripts the ScriptQueue runs, and the pseudo-CSCs
/// the ingest derives from the queue.
pub(super) const WATCHED: &[&str] = &[
    "MTM1M3",
    "MTMount",
    "ATDome",
    "ScriptQueue",
    "Script",
    "Test",
    "ScriptQueueState",
    "ScriptHeartbeats",
];

/// The pseudo-CSCs the ingest derives from a ScriptQueue's events: their
/// events reach the browsers but are not in the ingest's stored counter.
const DERIVED: &[&str] = &["ScriptQueueState", "ScriptHeartbeats"];

/// What each sample object of a batch frame starts with.
const SAMPLE_START: &str = r#"{"type":"sample","csc":"#;

/// The browsers' shared counters.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) telemetry: AtomicU64,
    pub(super) events: AtomicU64,
    pub(super) derived: AtomicU64,
    pub(super) closed: AtomicU64,
    pub(super) lost: AtomicU64,
    pub(super) subscribed: AtomicU64,
    pub(super) connected: AtomicU64,
}

/// One sample of a batch frame: its category and its four lags, seconds.
#[derive(Debug, PartialEq)]
pub struct Timed {
    pub event: bool,
    /// Of a pseudo-CSC the ingest derives ([`DERIVED`]).
    pub derived: bool,
    /// End to end, source → ingest, ingest → frontend, frontend → browser.
    pub lags: [f64; 4],
}

/// Every sample of a native batch frame received at `now` (Unix seconds),
/// with its category and lags. JSON strings escape their quotes, so the
/// sample's opening keys cannot occur inside a field's value.
pub fn scan_samples(frame: &str, now: f64, out: &mut Vec<Timed>) {
    let mut rest = frame;
    while let Some(at) = rest.find(SAMPLE_START) {
        rest = &rest[at + SAMPLE_START.len()..];
        let derived = DERIVED.iter().any(|d| {
            rest.strip_prefix('"')
                .is_some_and(|r| r.starts_with(&format!("{d}\"")))
        });
        let Some(cat_at) = rest.find(r#""category":""#) else {
            return;
        };
        let event = rest[cat_at + 12..].starts_with("event\"");
        let Some(ts_at) = rest.find(r#""source_ts":"#) else {
            return;
        };
        let after = &rest[ts_at + 12..];
        let Some((lags, after)) = hops(after, now) else {
            continue;
        };
        rest = after;
        out.push(Timed { event, derived, lags });
    }
}

/// Lag histograms of one browser: telemetry's four hops, then events'.
pub(super) type Hists = [LagHistogram; 8];

/// One browser: connect, subscribe to every CSC of [`WATCHED`], count
/// every sample, and record the lags while `recording`; returns its
/// histograms when `stop` fires.
pub(super) async fn browser(
    url: String,
    tally: Arc<Tally>,
    recording: Arc<AtomicBool>,
    stop: CancellationToken,
) -> Hists {
    let mut hists: Hists = Default::default();
    let connected = tokio::select! {
        c = tokio_tungstenite::connect_async(url.as_str()) => c,
        _ = stop.cancelled() => return hists,
    };
    let Ok((ws, _)) = connected else {
        tally.closed.fetch_add(1, Ordering::Relaxed);
        return hists;
    };
    tally.connected.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut incoming) = ws.split();
    for csc in WATCHED {
        let request = format!(r#"{{"op":"subscribe","csc":"{csc}"}}"#);
        if sink.feed(Message::Text(request.into())).await.is_err() {
            tally.closed.fetch_add(1, Ordering::Relaxed);
            return hists;
        }
    }
    if sink.flush().await.is_err() {
        tally.closed.fetch_add(1, Ordering::Relaxed);
        return hists;
    }
    let mut timed = Vec::new();
    loop {
        let message = tokio::select! {
            m = incoming.next() => m,
            _ = stop.cancelled() => break,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                tally.closed.fetch_add(1, Ordering::Relaxed);
                break;
            }
            Some(Ok(_)) => continue,
        };
        let text = text.as_str();
        if text.starts_with(r#"{"type":"batch""#) {
            timed.clear();
            scan_samples(text, unix_now(SystemTime::now()), &mut timed);
            let events = timed.iter().filter(|t| t.event && !t.derived).count() as u64;
            let derived = timed.iter().filter(|t| t.derived).count() as u64;
            tally.events.fetch_add(events, Ordering::Relaxed);
            tally.derived.fetch_add(derived, Ordering::Relaxed);
            tally
                .telemetry
                .fetch_add(timed.len() as u64 - events - derived, Ordering::Relaxed);
            if text.contains(r#""lost":[{"#) {
                tally.lost.fetch_add(1, Ordering::Relaxed);
            }
            if recording.load(Ordering::Relaxed) {
                for t in &timed {
                    let base = if t.event { 4 } else { 0 };
                    for (k, lag) in t.lags.iter().enumerate() {
                        hists[base + k].record(*lag);
                    }
                }
            }
        } else if text.starts_with(r#"{"type":"subscribed""#) {
            tally.subscribed.fetch_add(1, Ordering::Relaxed);
        }
    }
    hists
}

#[cfg(test)]
mod tests {
    use super::*;

    use meridian_proto::{Category, CscId, StreamId, TopicId};

    #[test]
    fn samples_are_told_apart_by_category_and_timed_per_hop() {
        let event = TopicId::new(CscId::new("Test", 1).unwrap(), Category::Event, "scalars").unwrap();
        let tel = TopicId::new(CscId::new("MTM1M3", 0).unwrap(), Category::Telemetry, "gyroData").unwrap();
        // A field value that looks like a sample's keys stays inside its (escaped) string.
        let a = meridian_proto::browser::sample_message(
            &event,
            StreamId::new(1, 0),
            10.0,
            10.5,
            11.0,
            r#"{"string0":"\"category\":\"telemetry\",\"source_ts\":1"}"#,
        );
        let b = meridian_proto::browser::sample_message(&tel, StreamId::new(2, 0), 20.0, 20.25, 20.5, "{}");
        let frame = meridian_proto::browser::batch_frame([a.as_str(), b.as_str()].into_iter(), &[]);
        let mut out = Vec::new();
        scan_samples(&frame, 21.0, &mut out);
        let derived_topic = TopicId::new(
            CscId::new("ScriptQueueState", 1).unwrap(),
            Category::Event,
            "stream",
        )
        .unwrap();
        let c =
            meridian_proto::browser::sample_message(&derived_topic, StreamId::new(3, 0), 1.0, 1.0, 1.0, "{}");
        let frame = meridian_proto::browser::batch_frame([c.as_str()].into_iter(), &[]);
        let mut derived = Vec::new();
        scan_samples(&frame, 2.0, &mut derived);
        assert!(derived[0].derived && derived[0].event);
        assert_eq!(
            out,
            [
                Timed {
                    event: true,
                    derived: false,
                    lags: [11.0, 0.5, 0.5, 10.0]
                },
                Timed {
                    event: false,
                    derived: false,
                    lags: [1.0, 0.25, 0.25, 0.5]
                }
            ]
        );
    }
}
