//! The audit log: one entry per request to send a command, whatever its
//! outcome, in the store stream [`keys::AUDIT`] (a Redis stream in
//! production, the in-memory store in `meridian up`), trimmed by age to
//! `commander.audit_retention_days` (at most once per [`TRIM_INTERVAL`],
//! as entries are written) and to about `commander.audit_maxlen` entries.
//! Requests without a valid token are only sampled into it (see
//! [`crate::refusal`]), so a flood cannot push accepted commands out.
//!
//! An entry says who (token name, the caller's `identity`, peer address),
//! what (CSC, command, parameters), how it ended ([`Outcome`], HTTP status,
//! the CSC's result or the refusal's reason) and when (received, total
//! duration, time the CSC took). It is written before the caller gets the
//! outcome, so what a caller was told is in the log. If the store cannot
//! take it, the entry is logged at ERROR in full instead: an operator can
//! still find it.
//!
//! Entries are read back by the time they were written (their stream id,
//! Unix milliseconds), oldest first, a page at a time.

use crate::error::RequestError;
use meridian_proto::stored::AUDIT_ENTRY;
use meridian_proto::{keys, StreamId};
use meridian_store::{Append, Store, StoreError};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Entries older than the retention are removed at most this often.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(60);

/// Most entries one read returns (`limit`).
pub const MAX_PAGE: usize = 1000;

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The CSC completed the command.
    Complete,
    /// The CSC refused the command or it failed; `result` is its reason.
    Failed,
    /// No final acknowledgement within the command's timeout.
    Timeout,
    /// Refused before reaching the CSC (401, 403, 400, 404, 429, 503);
    /// `status` says why, `result` how.
    Refused,
}

/// One audited request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When the request arrived, Unix milliseconds.
    pub received_unix_ms: u64,
    /// The route it came on: `/cmd/` or `/v1/commands`.
    pub route: String,
    /// The peer's IP address.
    pub peer: String,
    /// The token's name (`commander.tokens[].name`); `None` if no known
    /// token was presented. Never the token itself.
    pub token: Option<String>,
    /// The caller's own claim of who they are (`user@host`), unverified.
    pub identity: Option<String>,
    pub csc: Option<String>,
    pub salindex: Option<u32>,
    /// Without the `cmd_` prefix.
    pub command: Option<String>,
    /// The parameters as sent; not recorded without a known token (so an
    /// unauthenticated caller cannot fill the log with large bodies).
    pub params: Option<serde_json::Value>,
    pub outcome: Outcome,
    /// The HTTP status the caller got (200 for a completed command, also
    /// on the streaming route).
    pub status: u16,
    /// The CSC's final result (`"Done"`), its failure reason, or why the
    /// request was refused.
    pub result: String,
    /// From arrival to outcome, milliseconds.
    pub duration_ms: u64,
    /// From sending to the CSC to its final acknowledgement (or the
    /// timeout), milliseconds; `None` if nothing was sent.
    pub csc_ms: Option<u64>,
    /// The timeout the command was given, milliseconds; `None` if nothing
    /// was sent.
    pub timeout_ms: Option<u64>,
}

impl AuditEntry {
    /// The outcome for a request refused with `error`.
    pub fn refuse(&mut self, error: &RequestError) {
        self.outcome = match error {
            RequestError::Refused(_) => Outcome::Failed,
            RequestError::Timeout(_) => Outcome::Timeout,
            _ => Outcome::Refused,
        };
        self.status = error.status().as_u16();
        self.result = error.to_string();
    }

    /// The log line of a finished request: INFO when completed or refused
    /// (the caller was told why), WARN when the CSC failed it or timed out
    /// (an operator may need to look at the CSC).
    pub fn emit(&self) {
        let csc = match (&self.csc, self.salindex) {
            (Some(csc), Some(index)) => format!("{csc}:{index}"),
            (Some(csc), None) => csc.clone(),
            _ => String::new(),
        };
        let command = self.command.as_deref().unwrap_or("");
        let token = self.token.as_deref().unwrap_or("");
        match self.outcome {
            Outcome::Complete | Outcome::Refused => tracing::info!(
                %csc, command, token, outcome = ?self.outcome, status = self.status,
                result = %self.result, duration_ms = self.duration_ms, "command request"
            ),
            Outcome::Failed | Outcome::Timeout => tracing::warn!(
                %csc, command, token, outcome = ?self.outcome, status = self.status,
                result = %self.result, duration_ms = self.duration_ms, "command request"
            ),
        }
    }
}

/// An entry read back, with its id (when it was written).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEntry {
    pub id: String,
    #[serde(flatten)]
    pub entry: AuditEntry,
}

/// Which entries to read: written at `since..=until` (Unix ms), after the
/// entry `after` (for the next page), at most `limit`.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditQuery {
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    pub after: Option<StreamId>,
    pub limit: usize,
}

/// Writes and reads the audit stream.
pub struct AuditLog {
    store: Arc<dyn Store>,
    maxlen: usize,
    retention: Duration,
    /// When entries were last trimmed by age.
    trimmed: Mutex<Option<Instant>>,
}

impl AuditLog {
    pub fn new(store: Arc<dyn Store>, maxlen: usize, retention: Duration) -> AuditLog {
        AuditLog {
            store,
            maxlen,
            retention,
            trimmed: Mutex::new(None),
        }
    }

    /// Removes the entries written more than the retention before
    /// `now_unix_ms`; how many.
    pub async fn trim(&self, now_unix_ms: u64) -> Result<usize, StoreError> {
        let oldest_kept = now_unix_ms.saturating_sub(self.retention.as_millis() as u64);
        self.store
            .trim_before(keys::AUDIT, StreamId::new(oldest_kept, 0))
            .await
    }

    /// [`AuditLog::trim`] now, if the last was [`TRIM_INTERVAL`] ago.
    async fn trim_when_due(&self) {
        let now = Instant::now();
        {
            let mut last = self.trimmed.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| now.saturating_duration_since(t) < TRIM_INTERVAL) {
                return;
            }
            *last = Some(now);
        }
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        if let Err(e) = self.trim(now_ms).await {
            tracing::warn!(error = %e, "old audit entries not trimmed; retrying in a minute");
        }
    }

    /// Appends `entry` and logs it; its id, or `None` if the store failed
    /// (the entry is then logged at ERROR in full).
    pub async fn append(&self, entry: &AuditEntry) -> Option<StreamId> {
        entry.emit();
        let json = match serde_json::to_string(entry) {
            Ok(json) => json,
            Err(e) => {
                tracing::error!(error = %e, ?entry, "audit entry could not be encoded; it is only in this log");
                return None;
            }
        };
        let append = Append {
            key: keys::AUDIT.to_string(),
            maxlen: self.maxlen,
            fields: vec![(AUDIT_ENTRY.to_string(), json.clone())],
        };
        self.trim_when_due().await;
        match self.store.append(std::slice::from_ref(&append)).await {
            Ok(ids) => ids.first().copied(),
            Err(e) => {
                tracing::error!(error = %e, entry = %json, "audit entry not stored; it is only in this log");
                None
            }
        }
    }

    /// Entries matching `query`, oldest first.
    pub async fn read(&self, query: &AuditQuery) -> Result<Vec<StoredEntry>, StoreError> {
        // Ids are `<ms>-<seq>`: the range by time is a range by id.
        let since = match query.since_ms {
            None | Some(0) => StreamId::ZERO,
            Some(ms) => StreamId::new(ms - 1, u64::MAX),
        };
        let after = query.after.map_or(since, |after| after.max(since));
        let until = query.until_ms.map(|ms| StreamId::new(ms, u64::MAX));
        let entries = self
            .store
            .range(keys::AUDIT, after, until, query.limit.min(MAX_PAGE))
            .await?;
        Ok(entries
            .into_iter()
            .filter_map(|e| {
                let json = e.field(AUDIT_ENTRY)?;
                match serde_json::from_str(json) {
                    Ok(entry) => Some(StoredEntry {
                        id: e.id.to_string(),
                        entry,
                    }),
                    Err(err) => {
                        tracing::warn!(id = %e.id, error = %err, "unreadable audit entry skipped");
                        None
                    }
                }
            })
            .collect())
    }

    /// Whether the store answers (for `/readyz`).
    pub async fn reachable(&self) -> Result<(), StoreError> {
        self.store.len(keys::AUDIT).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_store::{memory::MemoryStore, TRIM_SLACK};

    fn entry(n: u64) -> AuditEntry {
        AuditEntry {
            received_unix_ms: n,
            route: "/cmd/".into(),
            peer: "127.0.0.1".into(),
            token: Some("ops".into()),
            identity: None,
            csc: Some("Test".into()),
            salindex: Some(1),
            command: Some("start".into()),
            params: Some(serde_json::json!({})),
            outcome: Outcome::Complete,
            status: 200,
            result: "Done".into(),
            duration_ms: 1,
            csc_ms: Some(1),
            timeout_ms: Some(10_000),
        }
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[tokio::test]
    async fn entries_older_than_the_retention_are_trimmed() {
        let store = Arc::new(MemoryStore::new());
        let log = AuditLog::new(store.clone(), 1000, DAY);
        let first = log.append(&entry(0)).await.unwrap();
        log.append(&entry(1)).await.unwrap();
        // Within the retention nothing goes.
        assert_eq!(log.trim(first.ms + 1).await.unwrap(), 0);
        assert_eq!(store.len(keys::AUDIT).await.unwrap(), 2);
        // A day and a bit later both go.
        let later = first.ms + DAY.as_millis() as u64 + 60_000;
        assert_eq!(log.trim(later).await.unwrap(), 2);
        assert_eq!(store.len(keys::AUDIT).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn retention_is_bounded_by_audit_maxlen() {
        let store = Arc::new(MemoryStore::new());
        let log = AuditLog::new(store.clone(), 10, DAY);
        for n in 0..500 {
            log.append(&entry(n)).await.unwrap();
        }
        let len = store.len(keys::AUDIT).await.unwrap();
        assert!((10..=10 + TRIM_SLACK).contains(&len), "{len}");
        // The newest are kept.
        let all = log
            .read(&AuditQuery {
                since_ms: None,
                until_ms: None,
                after: None,
                limit: MAX_PAGE,
            })
            .await
            .unwrap();
        assert_eq!(all.last().unwrap().entry.received_unix_ms, 499);
    }

    #[tokio::test]
    async fn reads_select_by_write_time_and_page_after_an_id() {
        let store = Arc::new(MemoryStore::new());
        let log = AuditLog::new(store, 1000, DAY);
        let mut ids = Vec::new();
        for n in 0..5 {
            ids.push(log.append(&entry(n)).await.unwrap());
        }
        let query = |since_ms, until_ms, after, limit| AuditQuery {
            since_ms,
            until_ms,
            after,
            limit,
        };
        let read = |q: AuditQuery| {
            let log = &log;
            async move {
                let entries = log.read(&q).await.unwrap();
                entries
                    .iter()
                    .map(|e| e.entry.received_unix_ms)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(read(query(None, None, None, 2)).await, [0, 1]);
        assert_eq!(read(query(None, None, Some(ids[1]), 100)).await, [2, 3, 4]);
        // since/until are inclusive, by the millisecond of the id.
        let (first, last) = (ids[0].ms, ids[4].ms);
        assert_eq!(read(query(Some(first), Some(last), None, 100)).await.len(), 5);
        assert!(read(query(Some(last + 1), None, None, 100)).await.is_empty());
        assert!(read(query(None, Some(first - 1), None, 100)).await.is_empty());
        // `after` before `since` does not widen the range.
        assert!(read(query(Some(last + 1), None, Some(ids[0]), 100))
            .await
            .is_empty());
    }
}
