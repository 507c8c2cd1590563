//! One request to send a command, from its arrival to its audit entry.
//!
//! [`process`] runs as a task of its own (tracked for shutdown), not in the
//! HTTP handler: a caller that disconnects does not cancel a command that
//! was sent, and its outcome is still audited. It tells the handler what
//! happens through a channel of [`Event`]s: either one `Rejected` (nothing
//! was sent), or the [`Progress`] of the command, ending with a final one.
//!
//! The steps, each refusing with its own status: token (401), rate (429),
//! body (413, 400), scope (403), CSC and command (404, 400), parameters
//! against the schema (400), then the middleware (503 if the CSC is busy).
//! Then acknowledgements are relayed until a final one or the command's
//! timeout (`commander.timeouts_ms`, else `commander.command_timeout_ms`).

use crate::audit::{AuditEntry, Outcome};
use crate::auth::Caller;
use crate::error::RequestError;
use crate::request::{self, Dialect, Received};
use crate::state::AppState;
use axum::body::Bytes;
use axum::http::HeaderMap;
use meridian_proto::Fields;
use meridian_sim::{Ack, AckState, MiddlewareError};
use serde::Serialize;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

/// What the handler is told.
#[derive(Debug)]
pub enum Event {
    /// Refused before anything was sent; nothing follows.
    Rejected(RequestError),
    /// The command's progress; the last one is final.
    Progress(Progress),
}

/// One line of the native route's stream (`{"state": …}`), in order:
/// `sent`, zero or more `in_progress`, then one of `complete`, `failed`,
/// `timeout`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Progress {
    /// The middleware took the command; acknowledgements follow.
    Sent {
        csc: String,
        command: String,
        timeout_ms: u64,
    },
    /// The CSC acknowledged and is working on it.
    InProgress { result: String },
    /// Final: the CSC completed it; `result` is its text (`"Done"`).
    Complete {
        result: String,
        elapsed_ms: u64,
        audit_id: Option<String>,
    },
    /// Final: the CSC refused or failed it; `reason` is the CSC's own.
    Failed {
        reason: String,
        elapsed_ms: u64,
        audit_id: Option<String>,
    },
    /// Final: no final acknowledgement within the timeout.
    Timeout {
        reason: String,
        elapsed_ms: u64,
        audit_id: Option<String>,
    },
}

/// A request as the handler received it.
pub struct Submission {
    pub dialect: Dialect,
    pub route: &'static str,
    pub peer: IpAddr,
    pub headers: HeaderMap,
    /// The body, or why it could not be read (too large).
    pub body: Result<Bytes, RequestError>,
    pub arrived: Instant,
}

/// A request admitted to be sent.
struct Admitted {
    request: request::CommandRequest,
    fields: Fields,
    timeout: Duration,
}

/// The replaced system's timeout texts.
fn timeout_text(last: Option<&Ack>) -> String {
    match last {
        None => "Command time out. No ack received from component.".to_string(),
        Some(ack) => format!("Command time out. Last ack received {}.", sal_ack_name(ack.state)),
    }
}

/// The SAL name of an acknowledgement code, as the replaced system printed it.
fn sal_ack_name(state: AckState) -> &'static str {
    match state {
        AckState::InProgress => "CMD_INPROGRESS",
        AckState::Complete => "CMD_COMPLETE",
        AckState::Failed => "CMD_FAILED",
        AckState::Timeout => "CMD_TIMEOUT",
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn ms(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

/// Runs one request to the end (see the module doc).
pub async fn process(state: Arc<AppState>, submission: Submission, events: mpsc::Sender<Event>) {
    let span = tracing::Span::current();
    let mut entry = AuditEntry {
        received_unix_ms: unix_ms(
            SystemTime::now()
                .checked_sub(submission.arrived.elapsed())
                .unwrap_or_else(SystemTime::now),
        ),
        route: submission.route.to_string(),
        peer: submission.peer.to_string(),
        token: None,
        identity: None,
        csc: None,
        salindex: None,
        command: None,
        params: None,
        outcome: Outcome::Refused,
        status: 0,
        result: String::new(),
        duration_ms: 0,
        csc_ms: None,
        timeout_ms: None,
    };
    let mut received = Received::default();
    let mut refusal = None;
    let admitted = admit(&state, &submission, &mut entry, &mut received, &mut refusal);
    entry.identity = received.identity.take();
    entry.csc = received.csc.take();
    entry.salindex = received.salindex;
    entry.command = received.command.take();
    // Parameters are recorded for known tokens only: an unauthenticated
    // caller must not be able to fill the log with large bodies.
    entry.params = received.params.take().filter(|_| entry.token.is_some());
    if let Some(token) = &entry.token {
        span.record("token", token.as_str());
    }
    if let Some(csc) = &entry.csc {
        match entry.salindex {
            Some(index) => span.record("csc", format!("{csc}:{index}")),
            None => span.record("csc", csc.as_str()),
        };
    }
    if let Some(command) = &entry.command {
        span.record("command", command.as_str());
    }
    let admitted = match admitted {
        Ok(admitted) => admitted,
        Err(error) => {
            // Without a valid token: counted, and audited sampled (see `refusal`).
            let sampled = refusal.is_none_or(|reason| state.refusals.record(reason, Instant::now()));
            if !sampled {
                state.stats.record(Outcome::Refused, None);
                let _ = events.send(Event::Rejected(error)).await;
                return;
            }
            return reject(&state, entry, submission.arrived, error, &events).await;
        }
    };

    let Admitted {
        request,
        fields,
        timeout,
    } = admitted;
    entry.timeout_ms = Some(ms(timeout));
    let sent = Instant::now();
    let acks = state
        .middleware
        .command(&request.csc, &request.command, fields, timeout)
        .await;
    let mut acks = match acks {
        Ok(acks) => acks,
        Err(e) => {
            let error = match e {
                MiddlewareError::UnknownCsc(_) => RequestError::UnknownCsc(e.to_string()),
                MiddlewareError::BadCommand(_) => RequestError::field("params", e),
                MiddlewareError::Busy(_) => RequestError::Busy(e.to_string()),
            };
            return reject(&state, entry, submission.arrived, error, &events).await;
        }
    };
    let _ = events
        .send(Event::Progress(Progress::Sent {
            csc: request.csc.to_string(),
            command: request.command.clone(),
            timeout_ms: ms(timeout),
        }))
        .await;

    // Relay acknowledgements until a final one, or the deadline (also
    // enforced here, whatever the middleware does with its timeout).
    let deadline = tokio::time::Instant::from_std(sent) + timeout;
    let mut last: Option<Ack> = None;
    let final_ack = loop {
        match tokio::time::timeout_at(deadline, acks.next()).await {
            Ok(Some(ack)) if ack.state == AckState::InProgress => {
                let _ = events
                    .send(Event::Progress(Progress::InProgress {
                        result: ack.result.clone(),
                    }))
                    .await;
                last = Some(ack);
            }
            Ok(Some(ack)) => break ack,
            Ok(None) => {
                break Ack {
                    state: AckState::Failed,
                    result: "the middleware ended the command without a final acknowledgement".into(),
                }
            }
            Err(_) => {
                break Ack {
                    state: AckState::Timeout,
                    result: String::new(),
                }
            }
        }
    };
    entry.csc_ms = Some(ms(sent.elapsed()));
    let love = submission.dialect == Dialect::Love;
    let (outcome, status, text) = match final_ack.state {
        AckState::Complete => (Outcome::Complete, 200, final_ack.result),
        AckState::Failed => (Outcome::Failed, if love { 409 } else { 200 }, final_ack.result),
        AckState::Timeout | AckState::InProgress => (
            Outcome::Timeout,
            if love { 504 } else { 200 },
            timeout_text(last.as_ref()),
        ),
    };
    entry.outcome = outcome;
    state.stats.record(outcome, Some(sent.elapsed()));
    entry.status = status;
    entry.result = text.clone();
    entry.duration_ms = ms(submission.arrived.elapsed());
    let audit_id = state.audit.append(&entry).await.map(|id| id.to_string());
    let elapsed_ms = entry.duration_ms;
    let progress = match outcome {
        Outcome::Complete => Progress::Complete {
            result: text,
            elapsed_ms,
            audit_id,
        },
        Outcome::Failed => Progress::Failed {
            reason: text,
            elapsed_ms,
            audit_id,
        },
        Outcome::Timeout | Outcome::Refused => Progress::Timeout {
            reason: text,
            elapsed_ms,
            audit_id,
        },
    };
    let _ = events.send(Event::Progress(progress)).await;
}

/// Audits a refusal, then tells the handler.
async fn reject(
    state: &AppState,
    mut entry: AuditEntry,
    arrived: Instant,
    error: RequestError,
    events: &mpsc::Sender<Event>,
) {
    entry.refuse(&error);
    state.stats.record(Outcome::Refused, None);
    entry.duration_ms = ms(arrived.elapsed());
    state.audit.append(&entry).await;
    let _ = events.send(Event::Rejected(error)).await;
}

/// Every check before sending, in order; fills `entry.token` and `received`.
fn admit(
    state: &AppState,
    submission: &Submission,
    entry: &mut AuditEntry,
    received: &mut Received,
    refusal: &mut Option<crate::refusal::Refusal>,
) -> Result<Admitted, RequestError> {
    // Read the body first, so even an unauthenticated attempt is audited
    // with what it tried; but report a bad token before a bad body.
    let parsed = submission
        .body
        .clone()
        .and_then(|body| request::parse(submission.dialect, &body, received));
    let caller: Arc<Caller> =
        state
            .authenticate(submission.peer, &submission.headers)
            .map_err(|(reason, error)| {
                *refusal = Some(reason);
                error
            })?;
    entry.token = Some(caller.name.clone());
    state.take_rate(&caller)?;
    let request = parsed?;
    caller.authorize(&request.csc, &request.command)?;
    let command_field = match submission.dialect {
        Dialect::Love => "cmd",
        Dialect::Native => "command",
    };
    let schema = state
        .middleware
        .command_schema(&request.csc, &request.command)
        .map_err(|e| match e {
            MiddlewareError::UnknownCsc(_) => RequestError::UnknownCsc(e.to_string()),
            MiddlewareError::BadCommand(_) => RequestError::field(command_field, e),
            MiddlewareError::Busy(_) => RequestError::Busy(e.to_string()),
        })?;
    let fields = crate::params::check(&schema, &request.params)?;
    let timeout = Duration::from_millis(
        state
            .config
            .timeout_ms(request.csc.csc.as_str(), &request.command),
    );
    Ok(Admitted {
        request,
        fields,
        timeout,
    })
}
