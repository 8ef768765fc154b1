//! `triplink retry ID`: send a request back for processing, according to its state.
//!
//! * `working` with an expired lease (or `--force`): [`WorkStore::redrive`] back to
//!   `received`; the table's stream triggers the worker again.
//! * `received`: touched (a conditional update of `updated_at`, same state and attempt),
//!   so the stream emits a new record and the worker takes it.
//! * `decided`: the decided status is re-sent to Concur as is — never re-decided, so an
//!   attempt never gets two statuses — then [`WorkStore::record_reported`]. Concur's 404
//!   means the request is no longer outstanding (an earlier PUT was accepted): recorded
//!   as reported too.
//! * `reported`: nothing to retry.

use std::future::Future;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::OnceCell;
use triplink_shared::concur::{ConcurClient, ConcurError};
use triplink_shared::config::{ConcurSettings, Env};
use triplink_shared::model::ConnectionStatus;
use triplink_shared::store::layout::{attr, timestamp, RequestState};
use triplink_shared::store::{DynamoRequestStore, RequestStore, WorkStore};

use crate::output::{fields, Render};
use crate::CliError;

/// How long re-sending one status may take, retries included.
const SEND_DEADLINE: Duration = Duration::from_secs(60);

/// Read-decide-write rounds before giving up on a request that keeps changing.
const MAX_ROUNDS: u32 = 3;

/// The requests table as `retry` needs it.
pub trait RetryStore: RequestStore + WorkStore {
    /// Rewrite `updated_at` of attempt `attempt` if it is still `received`, so the
    /// table's stream emits a new record. `Ok(false)`: the item moved on.
    fn touch(
        &self,
        id: &str,
        attempt: u32,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, CliError>> + Send;
}

impl RetryStore for DynamoRequestStore {
    async fn touch(&self, id: &str, attempt: u32, now: DateTime<Utc>) -> Result<bool, CliError> {
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .key(attr::REQUEST_ID, AttributeValue::S(id.to_owned()))
            .update_expression("SET #updated = :now")
            .condition_expression("#attempt = :attempt AND #state = :received")
            .expression_attribute_names("#updated", attr::UPDATED_AT)
            .expression_attribute_names("#attempt", attr::ATTEMPT)
            .expression_attribute_names("#state", attr::STATE)
            .expression_attribute_values(":now", AttributeValue::S(timestamp(now)))
            .expression_attribute_values(":attempt", AttributeValue::N(attempt.to_string()))
            .expression_attribute_values(
                ":received",
                AttributeValue::S(RequestState::Received.as_str().to_owned()),
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(CliError(format!(
                "cannot touch request {id}: DynamoDB UpdateItem failed: {}",
                crate::aws::describe(&e)
            ))),
        }
    }
}

impl<T: RetryStore> RetryStore for &T {
    fn touch(
        &self,
        id: &str,
        attempt: u32,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, CliError>> + Send {
        T::touch(self, id, attempt, now)
    }
}

/// What Concur said to a re-sent status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// 204: accepted.
    Accepted,
    /// 404: the request is no longer outstanding (an earlier PUT was accepted).
    NotOutstanding,
}

/// Sends a decided status to Concur.
pub trait StatusSender: Send + Sync {
    fn send_status(
        &self,
        id: &str,
        status: ConnectionStatus,
    ) -> impl Future<Output = Result<Sent, CliError>> + Send;
}

impl<T: StatusSender> StatusSender for &T {
    fn send_status(
        &self,
        id: &str,
        status: ConnectionStatus,
    ) -> impl Future<Output = Result<Sent, CliError>> + Send {
        T::send_status(self, id, status)
    }
}

/// The Concur client, built from the same environment as the functions
/// (`ConcurSettings::from_env`), on first use only: commands that never re-send a
/// status do not need the Concur settings.
pub struct ConcurSender<E> {
    aws: SdkConfig,
    env: E,
    client: OnceCell<ConcurClient>,
}

impl<E: Env + Sync> ConcurSender<E> {
    pub fn new(aws: SdkConfig, env: E) -> Self {
        Self {
            aws,
            env,
            client: OnceCell::new(),
        }
    }

    async fn client(&self) -> Result<&ConcurClient, CliError> {
        self.client
            .get_or_try_init(|| async {
                let settings = ConcurSettings::from_env(&self.env).map_err(|e| {
                    CliError(format!("cannot re-send a decided status to Concur: {e}"))
                })?;
                settings.client(&self.aws, &self.env).await.map_err(|e| {
                    CliError(format!("cannot re-send a decided status to Concur: {e}"))
                })
            })
            .await
    }
}

impl<E: Env + Sync + Send> StatusSender for ConcurSender<E> {
    async fn send_status(&self, id: &str, status: ConnectionStatus) -> Result<Sent, CliError> {
        let client = self.client().await?;
        let deadline = tokio::time::Instant::now() + SEND_DEADLINE;
        match client.update_status(id, status, deadline).await {
            Ok(()) => Ok(Sent::Accepted),
            Err(ConcurError::NotFound { .. }) => Ok(Sent::NotOutstanding),
            Err(e) => Err(CliError(format!(
                "Concur did not take status {status} for request {id}: {e}"
            ))),
        }
    }
}

/// What `retry` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// `working` → `received`: the worker takes it again.
    Redriven,
    /// `received`, touched: the stream triggers the worker again.
    Touched,
    /// The decided status was sent to Concur and recorded as reported.
    Resent,
    /// Concur no longer had the request outstanding; recorded as reported.
    RecordedNotOutstanding,
    /// Already reported: nothing to retry.
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
    /// The status re-sent, for a `decided` request.
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
/// `NotFound` are reported, not errors; store and Concur failures are errors.
pub async fn retry<S: RetryStore, C: StatusSender>(
    store: &S,
    sender: &C,
    id: &str,
    force: bool,
    retention_days: i64,
) -> Result<RetryReport, CliError> {
    let report = |item_state: Option<RequestState>,
                  attempt: Option<u32>,
                  action: Action,
                  status: Option<ConnectionStatus>,
                  message: String| RetryReport {
        request_id: id.to_owned(),
        state: item_state.map(RequestState::as_str),
        attempt,
        action,
        status: status.map(|s| s.as_str().to_owned()),
        message,
    };
    for _ in 0..MAX_ROUNDS {
        let Some(item) = store
            .get(id)
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
            RequestState::Working => {
                let live = item
                    .lease_until
                    .filter(|until| *until > now.timestamp_millis());
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
                            "a worker holds the lease on attempt {} until {until}; not re-driven (use --force to re-drive it anyway)",
                            item.attempt
                        ),
                    ));
                }
                if store.redrive(id, item.attempt, now).await? {
                    return Ok(report(
                        state,
                        attempt,
                        Action::Redriven,
                        None,
                        format!(
                            "attempt {} sent back to received; the worker will take it again",
                            item.attempt
                        ),
                    ));
                }
            }
            RequestState::Received => {
                if store.touch(id, item.attempt, now).await? {
                    return Ok(report(
                        state,
                        attempt,
                        Action::Touched,
                        None,
                        format!(
                            "attempt {} is received; touched it so the stream triggers the worker again",
                            item.attempt
                        ),
                    ));
                }
            }
            RequestState::Decided => {
                let status = item.decided_status.ok_or_else(|| {
                    CliError(format!(
                        "request {id} is decided but has no decided status; the item needs a look"
                    ))
                })?;
                let sent = sender.send_status(id, status).await?;
                let recorded = store
                    .record_reported(id, item.attempt, Utc::now(), retention_days)
                    .await?;
                let (action, what) = match sent {
                    Sent::Accepted => (
                        Action::Resent,
                        format!("re-sent the decided status {status} to Concur (accepted)"),
                    ),
                    Sent::NotOutstanding => (
                        Action::RecordedNotOutstanding,
                        format!(
                            "Concur no longer has the request outstanding (404): the decided status {status} was taken earlier"
                        ),
                    ),
                };
                let recorded = if recorded {
                    "recorded as reported"
                } else {
                    "it had been recorded as reported meanwhile"
                };
                return Ok(report(
                    state,
                    attempt,
                    action,
                    Some(status),
                    format!("{what}; {recorded}"),
                ));
            }
        }
        // The item changed between the read and the write: read it again.
    }
    Err(CliError(format!(
        "request {id} kept changing while it was being retried; try again"
    )))
}

/// `triplink retry ID`: like [`retry`], with `Busy` and `NotFound` as errors.
pub async fn retry_command<S: RetryStore, C: StatusSender>(
    store: &S,
    sender: &C,
    id: &str,
    force: bool,
    retention_days: i64,
) -> Result<RetryReport, CliError> {
    let report = retry(store, sender, id, force, retention_days).await?;
    match report.action {
        Action::Busy | Action::NotFound => Err(CliError(report.message)),
        _ => Ok(report),
    }
}
