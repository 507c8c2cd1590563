//! The Redis commands both Redis backends send, built in one place, and the
//! time bounds they put on them: the `redis` backend pipelines them to one
//! server, `cluster` groups them by hash slot first.
//!
//! Builders only build: each returns a [`redis::Cmd`] (or `None` when
//! nothing needs asking); the replies are read by the `reply` module.

use crate::contract::Append;
use meridian_proto::StreamId;
use std::time::Duration;

/// How long establishing one TCP connection to Redis may take: Redis on the
/// same network answers in milliseconds, so longer means it is not there.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a short command (a batch of XADD, XRANGE, XLEN) may wait for its
/// reply before the connection is declared broken. Generous against a busy
/// Redis, short enough that ingest notices an outage within seconds.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// How much longer than its `BLOCK` an `XREAD` may take before the reader
/// declares its connection broken (a silent network partition would
/// otherwise hang the reader forever).
pub(crate) const READ_REPLY_GRACE: Duration = Duration::from_secs(5);

/// How many keys one `SCAN` step looks at: large enough that listing a
/// database of a few hundred thousand keys takes few round trips, small
/// enough that each step blocks Redis for well under a millisecond.
const SCAN_COUNT: usize = 1000;

/// `XREVRANGE key + - COUNT count`: the newest `count` entries; `None` for
/// a count of 0 (nothing to ask). Its reply goes through `reply::oldest_first`.
pub(crate) fn xrevrange_newest(key: &str, count: usize) -> Option<redis::Cmd> {
    if count == 0 {
        return None;
    }
    let mut cmd = redis::cmd("XREVRANGE");
    cmd.arg(key).arg("+").arg("-").arg("COUNT").arg(count);
    Some(cmd)
}

/// `XRANGE key (after until COUNT count` (`until` defaults to `+`): up to
/// `count` entries after `after`; `None` when nothing can be (a count of 0,
/// or `after` the largest id, on which Redis refuses `(`).
pub(crate) fn xrange_after(
    key: &str,
    after: StreamId,
    until: Option<StreamId>,
    count: usize,
) -> Option<redis::Cmd> {
    if count == 0 || after == StreamId::new(u64::MAX, u64::MAX) {
        return None;
    }
    let until = until.map_or_else(|| "+".to_string(), |id| id.to_string());
    let mut cmd = redis::cmd("XRANGE");
    cmd.arg(key)
        .arg(format!("({after}"))
        .arg(until)
        .arg("COUNT")
        .arg(count);
    Some(cmd)
}

/// `XADD key MAXLEN ~ maxlen * field value ...`, sized up front: one
/// allocation for its arguments and one for its bytes, none as they are
/// added (the hot path of ingest).
pub(crate) fn xadd(append: &Append) -> redis::Cmd {
    let args = 6 + 2 * append.fields.len();
    let bytes = "XADDMAXLEN~20*".len()
        + append.key.len()
        + append
            .fields
            .iter()
            .map(|(f, v)| f.len() + v.len())
            .sum::<usize>();
    let mut cmd = redis::Cmd::with_capacity(args, bytes);
    cmd.arg("XADD")
        .arg(&append.key)
        .arg("MAXLEN")
        .arg("~")
        .arg(append.maxlen)
        .arg("*");
    for (field, value) in &append.fields {
        cmd.arg(field).arg(value);
    }
    cmd
}

/// `XREAD COUNT c [BLOCK ms] STREAMS key ... id ...` for non-empty
/// `cursors`: `count` 0 is read as 1, since `XREAD COUNT 0` would mean "no
/// limit"; a `block` of zero does not wait (Redis would read `BLOCK 0` as
/// "forever"); a non-zero `block` under a millisecond waits 1 ms.
pub(crate) fn xread(cursors: &[(String, StreamId)], count: usize, block: Duration) -> redis::Cmd {
    let mut cmd = redis::cmd("XREAD");
    cmd.arg("COUNT").arg(count.max(1));
    if !block.is_zero() {
        // Redis refuses timeouts that overflow its clock: a year is forever enough.
        let ms = u64::try_from(block.as_millis())
            .unwrap_or(u64::MAX)
            .clamp(1, 365 * 86_400_000);
        cmd.arg("BLOCK").arg(ms);
    }
    cmd.arg("STREAMS");
    for (key, _) in cursors {
        cmd.arg(key);
    }
    for (_, after) in cursors {
        cmd.arg(after.to_string());
    }
    cmd
}

/// `PEXPIRE key ms`, or `PERSIST key` without a TTL: each leaves a missing
/// key missing, and works on a key of any type.
pub(crate) fn expire_cmd(key: &str, ms: Option<u64>) -> redis::Cmd {
    match ms {
        Some(ms) => {
            let mut cmd = redis::cmd("PEXPIRE");
            cmd.arg(key).arg(ms);
            cmd
        }
        None => {
            let mut cmd = redis::cmd("PERSIST");
            cmd.arg(key);
            cmd
        }
    }
}

/// `XTRIM key MINID id`: drops the entries of `key` older than `min_id`
/// (exact, not `~`), for `Store::trim_before`.
pub(crate) fn xtrim_before(key: &str, min_id: StreamId) -> redis::Cmd {
    let mut cmd = redis::cmd("XTRIM");
    cmd.arg(key).arg("MINID").arg(min_id.to_string());
    cmd
}

/// `SCAN cursor MATCH pattern COUNT 1000`: one step of listing the keys
/// that match `pattern` (see [`prefix_pattern`]).
pub(crate) fn scan(cursor: &str, pattern: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("SCAN");
    cmd.arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(SCAN_COUNT);
    cmd
}

/// The `SCAN MATCH` pattern of the keys starting with `prefix`: the prefix
/// with glob characters escaped, then `*`.
pub(crate) fn prefix_pattern(prefix: &str) -> String {
    format!("{}*", escape_glob(prefix))
}

/// `prefix` with SCAN's glob characters (`* ? [ ] \`) escaped, so it
/// matches itself literally.
fn escape_glob(prefix: &str) -> String {
    let mut escaped = String::with_capacity(prefix.len() + 8);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_in_a_prefix_are_escaped() {
        assert_eq!(
            escape_glob("meridian:{Script}:state:"),
            "meridian:{Script}:state:"
        );
        assert_eq!(escape_glob(r"a*b?c[d]e\f"), r"a\*b\?c\[d\]e\\f");
    }
}
