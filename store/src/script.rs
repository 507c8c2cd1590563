//! The Lua scripts for what must be atomic on Redis (`APPEND_ONCE`,
//! `HASH_SET`, `LOCK`, `UNLOCK`; each documents its `KEYS`/`ARGV`), the
//! calls that fill them in, the `SCRIPT LOAD`/`EVALSHA`/`EVAL` commands
//! that carry them, and the reading of their replies. When to load a script
//! and how calls are pipelined is the backend's: one pipeline on the `redis`
//! backend (reloading on `NOSCRIPT`), one per slot on `cluster` (`EVAL` on a
//! master that does not know the script).

use crate::check::ttl_millis;
use crate::contract::{OnceBatch, StoreError};
use crate::reply::{integer, text, unexpected};
use redis::Value;
use std::sync::OnceLock;
use std::time::Duration;

/// A Lua script run with `EVALSHA`. It is loaded with `SCRIPT LOAD` on first
/// use, and again whenever Redis answers `NOSCRIPT` (after a restart or a
/// `SCRIPT FLUSH`: Redis does not persist loaded scripts). A `NOSCRIPT`
/// reply means the script did not run, so the retry cannot write twice.
pub(crate) struct LuaScript {
    pub(crate) name: &'static str,
    pub(crate) source: &'static str,
    /// The script's SHA1 as Redis computed it: a function of `source` only,
    /// so one process-wide cache serves stores of every server.
    pub(crate) sha: OnceLock<String>,
}

impl LuaScript {
    /// `SCRIPT LOAD source`; [`LuaScript::loaded`] reads its reply.
    pub(crate) fn load_cmd(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("SCRIPT");
        cmd.arg("LOAD").arg(self.source);
        cmd
    }

    /// Remembers the SHA1 that answered [`LuaScript::load_cmd`] and returns it.
    pub(crate) fn loaded(&self, reply: &Value) -> Result<String, StoreError> {
        let sha = text(reply).ok_or_else(|| unexpected("reply to SCRIPT LOAD", reply))?;
        // Another call may have loaded it at the same time: same SHA1.
        let _ = self.sha.set(sha.clone());
        Ok(sha)
    }
}

/// One call of a script: its `KEYS` and `ARGV`.
pub(crate) struct ScriptCall {
    pub(crate) keys: Vec<String>,
    pub(crate) args: Vec<String>,
}

impl ScriptCall {
    /// `EVALSHA sha n keys... args...`: the call of the script Redis knows as `sha`.
    pub(crate) fn evalsha(&self, sha: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(sha);
        self.keys_and_args(cmd)
    }

    /// `EVAL source n keys... args...`: the call with the script's source,
    /// for a server that does not know it yet (which also caches it there).
    pub(crate) fn eval(&self, script: &LuaScript) -> redis::Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(script.source);
        self.keys_and_args(cmd)
    }

    fn keys_and_args(&self, mut cmd: redis::Cmd) -> redis::Cmd {
        cmd.arg(self.keys.len()).arg(&self.keys).arg(&self.args);
        cmd
    }
}

/// Appends one [`OnceBatch`] exactly once; returns how many entries it wrote.
///
/// `KEYS = [dedup_key, stream of entry 1, ..., stream of entry n]`;
/// `ARGV = [mark_ttl_ms, then per entry: seq, maxlen, field count, field,
/// value, ...]`, with n ≥ 1. First checks, writing nothing if one fails: the
/// mark (`GET`, missing reads as 0) is a canonical decimal number, and every
/// stream key holds a stream or nothing. Then `XADD key MAXLEN ~ maxlen *`
/// for each entry whose seq is above the mark, in order, moving the mark to
/// it; then `SET dedup_key mark PX mark_ttl_ms`, so the TTL is refreshed
/// even when every entry was a duplicate. Sequence numbers are compared as
/// decimal strings (longer is larger, then by bytes), exact for all of u64
/// where Lua's doubles are not.
///
/// In a Redis Cluster all `KEYS` of one call must hash to one slot: callers
/// give the mark and the streams of a producer one hash tag.
pub(crate) static APPEND_ONCE: LuaScript = LuaScript {
    name: "append_once",
    source: r#"
local function above(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
local mark = redis.call('GET', KEYS[1]) or '0'
if #mark > 20 or not (mark == '0' or string.match(mark, '^[1-9]%d*$')) then
  return redis.error_reply('ERR dedup mark ' .. KEYS[1] .. ' holds "' .. mark .. '", not a sequence number')
end
for i = 2, #KEYS do
  local kind = redis.call('TYPE', KEYS[i]).ok
  if kind ~= 'stream' and kind ~= 'none' then
    return redis.error_reply('WRONGTYPE key ' .. KEYS[i] .. ' holds a ' .. kind .. ', not a stream')
  end
end
local written = 0
local at = 2
for i = 2, #KEYS do
  local seq, maxlen, count = ARGV[at], ARGV[at + 1], tonumber(ARGV[at + 2])
  if above(seq, mark) then
    local xadd = {'XADD', KEYS[i], 'MAXLEN', '~', maxlen, '*'}
    for j = at + 3, at + 2 + 2 * count do
      xadd[#xadd + 1] = ARGV[j]
    end
    redis.call(unpack(xadd))
    mark = seq
    written = written + 1
  end
  at = at + 3 + 2 * count
end
redis.call('SET', KEYS[1], mark, 'PX', ARGV[1])
return written
"#,
    sha: OnceLock::new(),
};

/// Sets fields of a hash and its TTL in one atomic step that changes
/// nothing if the key holds another type (a `MULTI` would still apply the
/// TTL after `HSET` failed).
///
/// `KEYS = [key]`; `ARGV = [ttl_ms, or "" for none, field, value, ...]`.
/// With no fields, only the TTL of an existing key (of any type) changes.
/// `HSET` goes in chunks of 100 pairs, under Lua's `unpack` limit.
pub(crate) static HASH_SET: LuaScript = LuaScript {
    name: "hash_set",
    source: r#"
if #ARGV > 1 then
  local kind = redis.call('TYPE', KEYS[1]).ok
  if kind ~= 'hash' and kind ~= 'none' then
    return redis.error_reply('WRONGTYPE key ' .. KEYS[1] .. ' holds a ' .. kind .. ', not a hash')
  end
  for i = 2, #ARGV, 200 do
    redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 199, #ARGV)))
  end
end
if ARGV[1] == '' then
  redis.call('PERSIST', KEYS[1])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 1
"#,
    sha: OnceLock::new(),
};

/// Takes or renews a lock: 1 if `holder` holds it afterwards, else 0.
///
/// `KEYS = [lock]`; `ARGV = [holder, ttl_ms]`. The holder's own lock gets
/// its TTL renewed (`PEXPIRE`); a free one is taken with `SET NX PX`.
pub(crate) static LOCK: LuaScript = LuaScript {
    name: "lock",
    source: r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
"#,
    sha: OnceLock::new(),
};

/// Releases a lock only if `holder` holds it: 1 if it did, else 0.
///
/// `KEYS = [lock]`; `ARGV = [holder]`.
pub(crate) static UNLOCK: LuaScript = LuaScript {
    name: "unlock",
    source: r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#,
    sha: OnceLock::new(),
};

/// The `APPEND_ONCE` calls of `batches`, one per non-empty batch (an empty
/// one has nothing to write); [`written_counts`] reads their replies.
pub(crate) fn append_once_calls(batches: &[OnceBatch]) -> Result<Vec<ScriptCall>, StoreError> {
    batches
        .iter()
        .filter(|b| !b.entries.is_empty())
        .map(append_once_call)
        .collect()
}

/// The `APPEND_ONCE` call of one non-empty batch.
fn append_once_call(batch: &OnceBatch) -> Result<ScriptCall, StoreError> {
    let mut keys = Vec::with_capacity(1 + batch.entries.len());
    keys.push(batch.dedup_key.clone());
    let mut args = vec![ttl_millis("mark_ttl", batch.mark_ttl)?.to_string()];
    for (seq, append) in &batch.entries {
        keys.push(append.key.clone());
        args.push(seq.to_string());
        args.push(append.maxlen.to_string());
        args.push(append.fields.len().to_string());
        for (field, value) in &append.fields {
            args.push(field.clone());
            args.push(value.clone());
        }
    }
    Ok(ScriptCall { keys, args })
}

/// The `HASH_SET` call.
pub(crate) fn hash_set_call(
    key: &str,
    fields: &[(String, String)],
    ttl: Option<Duration>,
) -> Result<ScriptCall, StoreError> {
    let ttl = match ttl {
        Some(ttl) => ttl_millis("ttl", ttl)?.to_string(),
        None => String::new(),
    };
    let mut args = Vec::with_capacity(1 + 2 * fields.len());
    args.push(ttl);
    for (field, value) in fields {
        args.push(field.clone());
        args.push(value.clone());
    }
    Ok(ScriptCall {
        keys: vec![key.to_string()],
        args,
    })
}

/// The `LOCK` call.
pub(crate) fn lock_call(name: &str, holder: &str, ttl: Duration) -> Result<ScriptCall, StoreError> {
    Ok(ScriptCall {
        keys: vec![name.to_string()],
        args: vec![holder.to_string(), ttl_millis("lock ttl", ttl)?.to_string()],
    })
}

/// The `UNLOCK` call.
pub(crate) fn unlock_call(name: &str, holder: &str) -> ScriptCall {
    ScriptCall {
        keys: vec![name.to_string()],
        args: vec![holder.to_string()],
    }
}

/// Per batch of `batches`, how many entries `append_once` wrote: 0 for an
/// empty batch, else from the reply to its call of [`append_once_calls`]
/// (`replies` in the order of the calls).
pub(crate) fn written_counts(batches: &[OnceBatch], replies: Vec<Value>) -> Result<Vec<usize>, StoreError> {
    let mut replies = replies.into_iter();
    batches
        .iter()
        .map(|batch| match batch.entries.is_empty() {
            true => Ok(0),
            false => written_count(&replies.next().unwrap_or(Value::Nil)),
        })
        .collect()
}

/// The count of entries `append_once` wrote for one batch, from its script reply.
fn written_count(reply: &Value) -> Result<usize, StoreError> {
    let n = integer(APPEND_ONCE.name, reply)?;
    usize::try_from(n).map_err(|_| unexpected("count from append_once", reply))
}
