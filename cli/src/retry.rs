//! `triplink retry ID`: send a request back for processing, by the life cycle's own
//! re-arm (`triplink_shared::store::lifecycle`): the same write the poller's sweep makes,
//! with the re-drive count reset, so the table's stream delivers the request to the
//! worker again.
//!
//! * `received`, `working` or `decided` (a held lease only with `--force`), parked or
//!   not: re-armed. A decided status is kept and re-sent by the worker as is (never
//!   re-decided, so an attempt never gets two statuses), with a fresh re-send window.
//! * `reported`: nothing to retry (Concur re-offers it if it wants another attempt).
//! * `quarantined`: nothing to retry (the poller stores it again once it reads fine).

use chrono::{DateTime, Utc};
use serde::Serialize;
use triplink_shared::store::layout::{timestamp, RequestState};
use triplink_shared::store::lifecycle::SweepStore;
use triplink_shared::store::{DynamoRequestStore, RequestStore};

use crate::output::{fields, Render};
use crate::CliError;

/// Read-decide-write rounds before giving up on a request that keeps changing.
const MAX_ROUNDS: u32 = 3;

/// The requests table as `retry` needs it.
pub trait RetryStore: RequestStore + SweepStore {}

impl RetryStore for DynamoRequestStore {}

/// What `retry` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Sent back to `received` (keeping a decided status): the worker takes it again.
    Rearmed,
    /// Already reported, or quarantined: nothing to retry.
    NothingToRetry,
    /// A worker holds a live lease; not re-driven (use --force).
    Busy,
    /// No such request in the table.
    NotFound,
}

impl Action {
    /// Whether the request is now on its way (or needs nothing more).
    pub fn is_done(self) -> bool {
        !matches!(self, Self::Busy)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RetryReport {
    pub request_id: String,
    /// The state found (absent when the request is not in the table).
    pub state: Option<&'static str>,
    pub attempt: Option<u32>,
    pub action: Action,
    /// The decided status the worker will re-send, for a request that has one.
    pub status: Option<String>,
    pub message: String,
}

impl Render for RetryReport {
    fn render(&self) -> String {
        let mut out = fields(&[
            ("request id", self.request_id.clone()),
            ("state found", self.state.unwrap_or("-").to_owned()),
            (
                "attempt",
                self.attempt.map(|a| a.to_string()).unwrap_or("-".into()),
            ),
            ("action", format!("{:?}", self.action).to_lowercase()),
        ]);
        out.push_str(&self.message);
        out.push('\n');
        out
    }
}

/// Send one request back for processing (see the module documentation). `Busy` and
/// `NotFound` are reported, not errors; store failures are errors.
pub async fn retry<S: RetryStore>(
    store: &S,
    id: &str,
    force: bool,
) -> Result<RetryReport, CliError> {
    let report = |item_state: Option<RequestState>,
                  attempt: Option<u32>,
                  action: Action,
                  status: Option<String>,
                  message: String| RetryReport {
        request_id: id.to_owned(),
        state: item_state.map(RequestState::as_str),
        attempt,
        action,
        status,
        message,
    };
    for _ in 0..MAX_ROUNDS {
        let Some(item) = RequestStore::get(store, id)
            .await
            .map_err(|e| CliError(format!("cannot read request {id}: {e}")))?
        else {
            return Ok(report(
                None,
                None,
                Action::NotFound,
                None,
                format!("request {id} is not in the requests table"),
            ));
        };
        let (state, attempt) = (Some(item.state), Some(item.attempt));
        let now = Utc::now();
        match item.state {
            RequestState::Reported => {
                let last = item
                    .history
                    .last()
                    .map(|h| h.status.as_str())
                    .unwrap_or("-");
                return Ok(report(
                    state,
                    attempt,
                    Action::NothingToRetry,
                    None,
                    format!(
                        "attempt {} was already reported to Concur ({last}): nothing to retry",
                        item.attempt
                    ),
                ));
            }
            RequestState::Quarantined => {
                return Ok(report(
                    state,
                    attempt,
                    Action::NothingToRetry,
                    None,
                    format!(
                        "the request could not be read from Concur ({}); the poller stores it again once it reads fine",
                        item.quarantine_reason.as_deref().unwrap_or("unknown reason")
                    ),
                ));
            }
            RequestState::Received | RequestState::Working | RequestState::Decided => {}
        }
        let live = item
            .lease_until
            .filter(|until| *until > now.timestamp_millis())
            .filter(|_| item.state != RequestState::Received);
        if let (Some(until), false) = (live, force) {
            let until = DateTime::from_timestamp_millis(until)
                .map(timestamp)
                .unwrap_or_else(|| until.to_string());
            return Ok(report(
                state,
                attempt,
                Action::Busy,
                None,
                format!(
                    "a worker holds the lease on attempt {} until {until}; not re-armed (use --force to re-arm it anyway)",
                    item.attempt
                ),
            ));
        }
        if store
            .rearm(&item, true, now)
            .await
            .map_err(|e| CliError(format!("cannot re-arm request {id}: {e}")))?
        {
            let status = item.decided_status.map(|s| s.as_str().to_owned());
            let what = match &status {
                Some(status) => format!("; the worker re-sends its decided status {status} as is"),
                None => String::new(),
            };
            return Ok(report(
                state,
                attempt,
                Action::Rearmed,
                status,
                format!("attempt {} sent back to received{what}", item.attempt),
            ));
        }
        // The item changed between the read and the write: read it again.
    }
    Err(CliError(format!(
        "request {id} kept changing while it was being retried; try again"
    )))
}

/// `triplink retry ID`: like [`retry`], with `Busy` and `NotFound` as errors.
pub async fn retry_command<S: RetryStore>(
    store: &S,
    id: &str,
    force: bool,
) -> Result<RetryReport, CliError> {
    let report = retry(store, id, force).await?;
    match report.action {
        Action::Busy | Action::NotFound => Err(CliError(report.message)),
        _ => Ok(report),
    }
}
