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

/// The reasons a request may be parked for (`--reason`).
pub const PARK_REASONS: [&str; 4] = [
    "redrives_exhausted",
    "decision_too_old",
    "dry_run",
    "duplicate_loyalty_number",
];

/// How many parked requests `retry --all-parked` re-arms at most by default.
pub const DEFAULT_BULK_MAX: usize = 500;

/// What `retry --all-parked` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BulkRetryReport {
    pub table: String,
    /// Only requests parked for this reason (all parked requests when absent).
    pub reason: Option<String>,
    pub max: usize,
    /// Parked requests found (at most `max`).
    pub found: u64,
    /// Sent back to `received` with their re-drive count reset.
    pub rearmed: u64,
    /// Re-armed, by the reason they had been parked for.
    pub rearmed_by_reason: std::collections::BTreeMap<String, u64>,
    /// No longer parked (or changed) when re-read: left as they are.
    pub skipped: u64,
    /// Could not be re-armed (store errors).
    pub failed: u64,
    pub errors: Vec<String>,
    /// More parked requests match than `max`: run again.
    pub more: bool,
    /// The ids re-armed.
    pub rearmed_ids: Vec<String>,
}

impl Render for BulkRetryReport {
    fn render(&self) -> String {
        let mut out = fields(&[
            ("table", self.table.clone()),
            (
                "parked for",
                self.reason.clone().unwrap_or_else(|| "any reason".into()),
            ),
            ("found", self.found.to_string()),
            ("re-armed", self.rearmed.to_string()),
            ("skipped (no longer parked)", self.skipped.to_string()),
            ("failed", self.failed.to_string()),
        ]);
        for (reason, count) in &self.rearmed_by_reason {
            out.push_str(&format!("  re-armed, parked for {reason}: {count}\n"));
        }
        for error in &self.errors {
            out.push_str(&format!("error: {error}\n"));
        }
        if self.more {
            out.push_str(&format!(
                "More than {} parked requests match: run the command again.\n",
                self.max
            ));
        }
        out
    }
}

/// Ids of parked, unfinished requests (optionally only those parked for `reason`): at
/// most `max`, and whether more match.
pub async fn parked_ids(
    store: &DynamoRequestStore,
    reason: Option<&str>,
    max: usize,
) -> Result<(Vec<String>, bool), CliError> {
    use aws_sdk_dynamodb::types::AttributeValue;
    use triplink_shared::store::layout::attr;
    let table = store.table();
    let mut ids = Vec::new();
    let mut start = None;
    loop {
        let mut filter =
            "attribute_exists(#pk) AND #s IN (:received, :working, :decided)".to_owned();
        let mut scan = store
            .client()
            .scan()
            .table_name(table)
            .projection_expression("#id")
            .expression_attribute_names("#id", attr::REQUEST_ID)
            .expression_attribute_names("#pk", attr::PARKED_AT)
            .expression_attribute_names("#s", attr::STATE)
            .expression_attribute_values(":received", AttributeValue::S("received".into()))
            .expression_attribute_values(":working", AttributeValue::S("working".into()))
            .expression_attribute_values(":decided", AttributeValue::S("decided".into()));
        if let Some(reason) = reason {
            filter.push_str(" AND #pr = :reason");
            scan = scan
                .expression_attribute_names("#pr", attr::PARKED_REASON)
                .expression_attribute_values(":reason", AttributeValue::S(reason.to_owned()));
        }
        let output = scan
            .filter_expression(filter)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| {
                CliError(format!(
                    "cannot scan the requests table {table}: {}",
                    crate::aws::describe(&e)
                ))
            })?;
        for item in output.items.unwrap_or_default() {
            if let Some(id) = item.get(attr::REQUEST_ID).and_then(|v| v.as_s().ok()) {
                if ids.len() == max {
                    return Ok((ids, true));
                }
                ids.push(id.clone());
            }
        }
        match output.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return Ok((ids, false)),
        }
    }
}

/// `triplink retry --all-parked [--reason R]`: re-arm every parked request (at most
/// `max`) by the same life-cycle write as `retry ID` (`SweepStore::rearm` with the
/// re-drive count reset). Each item is read again first and re-armed only if it is
/// still parked (for `reason`, when given), so a request that moved on is left alone.
pub async fn retry_parked(
    store: &DynamoRequestStore,
    reason: Option<&str>,
    max: usize,
) -> Result<BulkRetryReport, CliError> {
    if let Some(reason) = reason {
        if !PARK_REASONS.contains(&reason) {
            return Err(CliError(format!(
                "unknown park reason {reason:?}; expected one of {}",
                PARK_REASONS.join(", ")
            )));
        }
    }
    let max = max.max(1);
    let (ids, more) = parked_ids(store, reason, max).await?;
    let mut report = BulkRetryReport {
        table: store.table().to_owned(),
        reason: reason.map(str::to_owned),
        max,
        found: ids.len() as u64,
        more,
        ..BulkRetryReport::default()
    };
    for id in ids {
        let item = match SweepStore::get_item(store, &id).await {
            Ok(item) => item,
            Err(e) => {
                report.failed += 1;
                report.errors.push(format!(
                    "cannot read request {id}: {}",
                    crate::aws::concise(&e.to_string())
                ));
                continue;
            }
        };
        let Some(item) = item.filter(|item| {
            item.parked_at.is_some()
                && matches!(
                    item.state,
                    RequestState::Received | RequestState::Working | RequestState::Decided
                )
                && reason.is_none_or(|r| item.parked_reason.as_deref() == Some(r))
        }) else {
            report.skipped += 1;
            continue;
        };
        match store.rearm(&item, true, Utc::now()).await {
            Ok(true) => {
                report.rearmed += 1;
                *report
                    .rearmed_by_reason
                    .entry(
                        item.parked_reason
                            .clone()
                            .unwrap_or_else(|| "unknown".into()),
                    )
                    .or_default() += 1;
                report.rearmed_ids.push(id);
            }
            Ok(false) => report.skipped += 1,
            Err(e) => {
                report.failed += 1;
                report.errors.push(format!(
                    "cannot re-arm request {id}: {}",
                    crate::aws::concise(&e.to_string())
                ));
            }
        }
    }
    Ok(report)
}
