//! Every store key Meridian uses, in one place: nothing else spells a key.
//!
//! Keys of one CSC instance carry the Redis Cluster hash tag of that
//! instance, [`hash_tag`] (`{CSC:salindex}`, or `{CSC}` for an aggregated
//! CSC such as Scripts), so a pipeline of one producer's batch stays on one
//! shard. The keys shared by every role (catalog, schemas, locks, loads,
//! audit) have no tag: they are each one key, and no command spans them.
//!
//! What an entry of a topic stream holds is [`crate::stored`]. The byte
//! values here are what deployed stores hold: changing one orphans data.

use crate::topic::{Csc, CscId, TopicId, AGGREGATED_CSCS};

/// The Redis Cluster hash tag of an instance's keys: `{CSC:salindex}`, or
/// `{CSC}` for an aggregated CSC (every instance shares one set of streams).
pub fn hash_tag(csc: &CscId) -> String {
    if csc.is_aggregated() {
        format!("{{{}}}", csc.csc)
    } else {
        format!("{{{}:{}}}", csc.csc, csc.salindex)
    }
}

/// Stream of one topic's samples ([`crate::stored::StoredSample`] entries):
/// `meridian:{CSC:idx}:<category>:<topic>` (`meridian:{CSC}:…` for an aggregated CSC); tag of its instance.
/// The derived streams (the ScriptQueue pseudo-CSCs) and those of the
/// replaced system's producers are topic streams too.
pub fn stream(topic: &TopicId) -> String {
    format!(
        "meridian:{}:{}:{}",
        hash_tag(&topic.csc),
        topic.category.as_str(),
        topic.topic
    )
}

/// Whether `key` is a [`stream`] (or any key) shared by every instance of an aggregated CSC.
pub fn is_aggregated(key: &str) -> bool {
    AGGREGATED_CSCS.iter().any(|c| {
        key.strip_prefix("meridian:{")
            .and_then(|k| k.strip_prefix(c))
            .is_some_and(|k| k.starts_with("}:"))
    })
}

/// Prefix of every key of one instance (of every instance, for an aggregated
/// CSC): its streams, exactly-once marks and state hashes, `meridian:{CSC:idx}:`.
pub fn instance_keys_prefix(csc: &CscId) -> String {
    format!("meridian:{}:", hash_tag(csc))
}

/// Hash of one instance of an aggregated CSC (a Script's latest state,
/// [`crate::stored::InstanceState`]), expiring after the instance ends:
/// `meridian:{CSC}:instance:<salindex>`; tag of the CSC.
pub fn instance(csc: &CscId) -> String {
    format!("meridian:{}:instance:{}", hash_tag(csc), csc.salindex)
}

/// Prefix of every [`instance`] hash of the aggregated CSC `csc`, for the sweeper's scan.
pub fn instance_prefix(csc: &Csc) -> String {
    format!("meridian:{{{csc}}}:instance:")
}

/// String: the highest sequence number of one producer's `stream` (`events`)
/// written, for exactly-once writes: `meridian:{CSC:idx}:dedup:<producer id, 16 hex>:<stream>`; tag of the instance.
pub fn dedup(csc: &CscId, producer_id: u64, stream: &str) -> String {
    format!("meridian:{}:dedup:{producer_id:016x}:{stream}", hash_tag(csc))
}

/// Hash of every topic producers have declared: field
/// [`TopicId::catalog_field`], value the nominal rate in Hz ("" for events); no tag.
/// Frontends resolve wildcard subscriptions ("every topic of MTM1M3") with it.
pub const CATALOG: &str = "meridian:catalog";

/// Hash of every declared topic's field schema, written next to the
/// [`CATALOG`]: field [`TopicId::catalog_field`], value the JSON array of its
/// [`crate::FieldSchema`]s (`[{"name","kind","count","units"}]`) or, for a
/// topic the replaced system's producers send without field wrappers,
/// `{"raw":true,"list":bool}`; no tag. The compatibility endpoint describes fields with it.
pub const SCHEMAS: &str = "meridian:schemas";

/// Prefix of the [`load`] hashes, for a frontend's scan of its peers.
pub const LOAD_PREFIX: &str = "meridian:frontend:";

/// Hash of one frontend manager's load (`clients`, `deliveries_per_s`, `cpu`), expiring
/// after three publishing intervals: `meridian:frontend:<server>`; no tag.
pub fn load(server: &str) -> String {
    format!("{LOAD_PREFIX}{server}")
}

/// String lock held by the one ingest manager that sweeps stale [`instance`] hashes; no tag.
pub const SWEEPER_LOCK: &str = "meridian:sweeper:lock";

/// String lock held by the one ingest manager that derives the ScriptQueue pseudo-CSCs; no tag.
pub const DERIVER_LOCK: &str = "meridian:derive:ScriptQueue:lock";

/// Stream of the commander's audit log (one `entry` field of JSON per
/// request, [`crate::stored::AUDIT_ENTRY`]), shared by every commander replica; no tag.
pub const AUDIT: &str = "meridian:commander:audit";

/// Never written: the ingest's `/readyz` asks whether it exists, to see that the store answers.
pub const READY_PROBE: &str = "meridian:readyz";

/// Never written: a store client reads its length on connecting, to see that the store answers.
pub const STORE_PROBE: &str = "meridian:probe";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::Category;

    fn topic(csc: &str, category: Category, name: &str) -> TopicId {
        TopicId::new(csc.parse().unwrap(), category, name).unwrap()
    }

    /// The byte value of every key, as deployed stores hold them: a change here orphans data.
    #[test]
    fn every_key_keeps_its_deployed_spelling() {
        let m1m3: CscId = "MTM1M3:0".parse().unwrap();
        let script: CscId = "Script:100001".parse().unwrap();
        assert_eq!(hash_tag(&m1m3), "{MTM1M3:0}");
        assert_eq!(hash_tag(&script), "{Script}");
        assert_eq!(
            stream(&topic("MTM1M3:0", Category::Telemetry, "forceActuatorData")),
            "meridian:{MTM1M3:0}:telemetry:forceActuatorData"
        );
        assert_eq!(
            stream(&topic("MTM1M3:0", Category::Event, "heartbeat")),
            "meridian:{MTM1M3:0}:event:heartbeat"
        );
        assert_eq!(
            stream(&topic("ScriptQueueState:1", Category::Event, "stateStream")),
            "meridian:{ScriptQueueState:1}:event:stateStream"
        );
        assert_eq!(
            stream(&topic("Script:100001", Category::Event, "state")),
            "meridian:{Script}:event:state"
        );
        assert_eq!(instance(&script), "meridian:{Script}:instance:100001");
        assert_eq!(instance_prefix(&script.csc), "meridian:{Script}:instance:");
        assert_eq!(instance_keys_prefix(&m1m3), "meridian:{MTM1M3:0}:");
        assert_eq!(instance_keys_prefix(&script), "meridian:{Script}:");
        assert_eq!(
            dedup(&script, 255, "events"),
            "meridian:{Script}:dedup:00000000000000ff:events"
        );
        assert_eq!(
            dedup(&m1m3, 0x0123_4567_89ab_cdef, "events"),
            "meridian:{MTM1M3:0}:dedup:0123456789abcdef:events"
        );
        assert_eq!(CATALOG, "meridian:catalog");
        assert_eq!(SCHEMAS, "meridian:schemas");
        assert_eq!(LOAD_PREFIX, "meridian:frontend:");
        assert_eq!(load("host-8080-12-ff"), "meridian:frontend:host-8080-12-ff");
        assert_eq!(SWEEPER_LOCK, "meridian:sweeper:lock");
        assert_eq!(DERIVER_LOCK, "meridian:derive:ScriptQueue:lock");
        assert_eq!(AUDIT, "meridian:commander:audit");
        assert_eq!(READY_PROBE, "meridian:readyz");
        assert_eq!(STORE_PROBE, "meridian:probe");
    }

    #[test]
    fn stream_keys_share_one_hash_tag_per_csc_instance() {
        let csc: CscId = "MTM1M3:0".parse().unwrap();
        let a = TopicId::new(csc.clone(), Category::Telemetry, "forceActuatorData").unwrap();
        let b = TopicId::new(csc.clone(), Category::Event, "heartbeat").unwrap();
        assert_eq!(stream(&a), "meridian:{MTM1M3:0}:telemetry:forceActuatorData");
        assert_eq!(stream(&b), "meridian:{MTM1M3:0}:event:heartbeat");
        for key in [stream(&a), stream(&b), dedup(&csc, 7, "events")] {
            assert!(key.starts_with(&format!("meridian:{}:", hash_tag(&csc))), "{key}");
            assert!(key.starts_with(&instance_keys_prefix(&csc)), "{key}");
        }
    }

    #[test]
    fn every_script_shares_one_stream_per_topic() {
        let a = TopicId::new("Script:100001".parse().unwrap(), Category::Event, "state").unwrap();
        let b = TopicId::new("Script:100002".parse().unwrap(), Category::Event, "state").unwrap();
        assert_eq!(stream(&a), "meridian:{Script}:event:state");
        assert_eq!(stream(&a), stream(&b));
        assert_eq!(instance(&a.csc), "meridian:{Script}:instance:100001");
        assert!(instance(&a.csc).starts_with(&instance_prefix(&a.csc.csc)));
        assert_eq!(
            dedup(&a.csc, 255, "events"),
            "meridian:{Script}:dedup:00000000000000ff:events"
        );
        assert!(is_aggregated(&stream(&a)));
        assert!(!is_aggregated(&stream(&topic(
            "ScriptQueue:1",
            Category::Event,
            "queue"
        ))));
        assert!(!is_aggregated(&stream(&topic(
            "Scripts:1",
            Category::Event,
            "state"
        ))));
    }
}
