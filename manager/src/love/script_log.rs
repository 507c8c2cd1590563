//! A Script's log for the replaced browser client's current-script panel.
//!
//! The panel joins `event-Script-<index>-logMessage`. The replaced
//! system's ScriptQueue producer keeps the last [`SCRIPT_LOG_REPLAY`] log
//! messages of each Script in its queue and, when a browser joins that
//! group (its `initial_state` request), sends the current Script's buffer
//! again, to every member of the group (`love-research.md` §5.2). Its
//! client keeps a Script's messages newest first and drops one whose
//! `private_sndStamp` it already shows.
//!
//! Meridian has the messages in the store already: every Script shares one
//! `logMessage` stream, each entry naming its Script (`salindex`). Joining
//! the group starts the subscription just before the Script's last
//! [`SCRIPT_LOG_REPLAY`] messages, so the joining browser alone gets them,
//! oldest first, then the live ones with no gap and no repeat; the other
//! members get nothing twice. It works for any Script still in the stream's
//! retention (a finished one too, where the replaced producer replays only
//! the current Script's), and whichever producer published the messages.

use crate::frontend::hub::Start;
use meridian_proto::{Category, StoredSample, StreamId, TopicId};
use meridian_store::Entry;

/// Log messages of a Script sent when a browser joins its `logMessage`
/// group: as many as the replaced producer keeps per Script.
pub const SCRIPT_LOG_REPLAY: usize = 20;

/// Newest entries of the shared Script `logMessage` stream searched for one
/// Script's messages (at most half of `frontend.max_replay`, so the replay
/// that follows is never cut short by that bound). Older messages of a
/// Script whose log is buried deeper are not replayed.
pub const SCRIPT_LOG_SCAN: usize = 1000;

/// The event whose group replays a Script's log.
pub const LOG_TOPIC: &str = "logMessage";

/// Whether joining the group of `t` replays a Script's log.
pub fn is_script_log(t: &TopicId) -> bool {
    t.csc.is_aggregated() && t.category == Category::Event && t.topic == LOG_TOPIC
}

/// How many entries to read for [`replay_start`] given `frontend.max_replay`;
/// 0 when that bound leaves no room (then only the last value is sent).
pub fn scan_len(max_replay: usize) -> usize {
    SCRIPT_LOG_SCAN.min(max_replay / 2)
}

/// Where to start a subscription to Script `salindex`'s log so that its
/// last [`SCRIPT_LOG_REPLAY`] messages come first: after the entry just
/// before the oldest of them. `newest` are the stream's newest entries,
/// oldest first, as read with a count of `scanned + 1`; `scanned` 0 or no
/// message of that Script in them: the topic's last value only.
pub fn replay_start(newest: &[Entry], salindex: u32, scanned: usize) -> Start {
    if scanned == 0 {
        return Start::Last;
    }
    // A full read's oldest entry only marks where the search ends: its
    // predecessor is unknown, so the replay cannot start before it.
    let first = usize::from(newest.len() > scanned);
    let own: Vec<usize> = (first..newest.len())
        .filter(|&i| StoredSample::from_fields(&newest[i].fields).is_ok_and(|s| s.salindex == Some(salindex)))
        .collect();
    let Some(&oldest) = own.get(own.len().saturating_sub(SCRIPT_LOG_REPLAY)) else {
        return Start::Last;
    };
    match oldest {
        // The stream's oldest entry: replay from its start.
        0 => Start::After(StreamId::ZERO),
        i => Start::After(newest[i - 1].id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(scripts: &[u32]) -> Vec<Entry> {
        scripts
            .iter()
            .enumerate()
            .map(|(i, s)| Entry {
                id: StreamId::new(1000 + i as u64, 0),
                fields: StoredSample {
                    seq: Some(1),
                    source_ts: 1.0,
                    ingest_ts: 1.0,
                    salindex: Some(*s),
                    upto: None,
                    fields: "{}".into(),
                }
                .into_fields(),
            })
            .collect()
    }

    fn after(start: Start) -> Option<StreamId> {
        match start {
            Start::After(id) => Some(id),
            Start::Last => None,
        }
    }

    #[test]
    fn the_replay_starts_before_the_scripts_last_twenty_messages() {
        // 30 messages of Script 1 interleaved with Script 2's.
        let mut scripts = Vec::new();
        for _ in 0..30 {
            scripts.extend([1, 2]);
        }
        let stream = entries(&scripts);
        // Script 1's 11th message (index 20) is the oldest replayed: start after index 19.
        assert_eq!(
            after(replay_start(&stream, 1, 1000)),
            Some(StreamId::new(1019, 0))
        );
        // Script 2 has 30 too; Script 3 has none.
        assert_eq!(
            after(replay_start(&stream, 2, 1000)),
            Some(StreamId::new(1020, 0))
        );
        assert_eq!(after(replay_start(&stream, 3, 1000)), None);
    }

    #[test]
    fn few_messages_replay_from_the_streams_start_or_the_searched_window() {
        let stream = entries(&[5, 7, 5]);
        // The whole stream was read (3 < scanned + 1): from its start.
        assert_eq!(after(replay_start(&stream, 5, 10)), Some(StreamId::ZERO));
        assert_eq!(after(replay_start(&stream, 7, 10)), Some(StreamId::new(1000, 0)));
        // A full read of 2 + 1: the oldest entry only bounds the search.
        assert_eq!(after(replay_start(&stream, 5, 2)), Some(StreamId::new(1001, 0)));
        assert_eq!(after(replay_start(&stream, 5, 0)), None);
        assert_eq!(scan_len(100_000), SCRIPT_LOG_SCAN);
        assert_eq!(scan_len(1), 0);
    }

    #[test]
    fn only_script_log_groups_replay() {
        let topic = |csc: &str, category, name: &str| {
            TopicId::new(format!("{csc}:100001").parse().unwrap(), category, name).unwrap()
        };
        assert!(is_script_log(&topic("Script", Category::Event, "logMessage")));
        assert!(!is_script_log(&topic("Script", Category::Event, "state")));
        assert!(!is_script_log(&topic("ATDome", Category::Event, "logMessage")));
    }
}
