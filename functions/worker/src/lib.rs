//! The worker: triggered by the requests table's stream, it matches each received
//! request against the supplier's members, connects matched users, and reports the
//! status to Concur.
//!
//! Per record (a new request or a requeue, i.e. a new image in state `received`):
//! 1. **Claim** the attempt with a conditional update (`received` → `working`, with a
//!    lease ending before the Lambda deadline). A duplicate delivery finds the attempt
//!    claimed (busy: retried later, by when the lease has expired), decided (the same
//!    status is re-sent) or reported (nothing to do).
//! 2. **Match** (`triplink_shared::matching`), with bounded retries of the directory.
//! 3. On a match, **exchange** the request token and **store** the connection.
//! 4. **Record the decision** (`working` → `decided`) before sending it: a crash after
//!    this line re-sends the same status, never another one.
//! 5. **PUT** the status; on 204 **record it reported** (history, TTL, personal data
//!    removed). A PUT that keeps failing is a batch item failure, so Lambda retries the
//!    record from there (the stream checkpoint is the lowest failed sequence number);
//!    after the configured retries it goes to the dead-letter queue.

pub mod decision;
pub mod directory;

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use lambda_runtime::LambdaEvent;
use secrecy::SecretString;
use serde_json::{json, Map};
use tokio::time::Instant;
use tracing::{error, info, warn};
use triplink_shared::concur::retry::{Decision as RetryDecision, RetryPolicy};
use triplink_shared::concur::{ConcurClient, ConcurError, UserTokens};
use triplink_shared::config::{ConfigError, Env};
use triplink_shared::matching::{MatchOutcome, MatchPolicy};
use triplink_shared::members::{match_request, MemberDirectory};
use triplink_shared::model::{ConnectionRequest, ConnectionStatus};
use triplink_shared::store::layout::{RequestItem, RequestState, DEFAULT_RETENTION_DAYS};
use triplink_shared::store::{Claim, Decision, StoreError, WorkStore};
use triplink_shared::telemetry::{Metrics, Unit};
use triplink_shared::vault::{Encryptor, TokenVault, VaultError};

use decision::TechnicalFailure;

/// The worker's knobs, from the environment.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// `WORKER_CONCURRENCY`: requests processed at once (default 8).
    pub concurrency: usize,
    /// `WORKER_DEADLINE_MARGIN_MS`: stop starting work this long before the Lambda
    /// deadline; leases end half of it before the deadline (default 3000).
    pub deadline_margin: Duration,
    /// `WORKER_STEP_ATTEMPTS`: attempts of a directory lookup or connection write (default 3).
    pub step_retry: RetryPolicy,
    /// `FINISHED_RETENTION_DAYS`: TTL of a reported request's record (default 30).
    pub retention_days: i64,
    /// `MATCH_FIRST_NAME`: also compare first names (default false, as Concur recommends).
    pub policy: MatchPolicy,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            concurrency: 8,
            deadline_margin: Duration::from_secs(3),
            step_retry: RetryPolicy {
                max_attempts: 3,
                base_delay: Duration::from_millis(100),
                max_delay: Duration::from_secs(1),
            },
            retention_days: DEFAULT_RETENTION_DAYS,
            policy: MatchPolicy::default(),
        }
    }
}

impl WorkerSettings {
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let concurrency: usize = env.parsed("WORKER_CONCURRENCY", defaults.concurrency)?;
        let attempts: u32 = env.parsed("WORKER_STEP_ATTEMPTS", defaults.step_retry.max_attempts)?;
        let retention_days: i64 = env.parsed("FINISHED_RETENTION_DAYS", defaults.retention_days)?;
        for (key, ok, value) in [
            (
                "WORKER_CONCURRENCY",
                concurrency >= 1,
                concurrency.to_string(),
            ),
            ("WORKER_STEP_ATTEMPTS", attempts >= 1, attempts.to_string()),
            (
                "FINISHED_RETENTION_DAYS",
                retention_days >= 1,
                retention_days.to_string(),
            ),
        ] {
            if !ok {
                return Err(ConfigError::Invalid {
                    key,
                    value,
                    reason: "must be at least 1".into(),
                });
            }
        }
        Ok(Self {
            concurrency,
            deadline_margin: Duration::from_millis(env.parsed(
                "WORKER_DEADLINE_MARGIN_MS",
                defaults.deadline_margin.as_millis() as u64,
            )?),
            step_retry: RetryPolicy {
                max_attempts: attempts,
                ..defaults.step_retry
            },
            retention_days,
            policy: MatchPolicy {
                compare_first_name: env.parsed("MATCH_FIRST_NAME", false)?,
            },
        })
    }
}

/// What the worker needs from Concur.
pub trait ConcurPort: Send + Sync {
    fn exchange(
        &self,
        user_id: &str,
        request_token: &SecretString,
        deadline: Instant,
    ) -> impl Future<Output = Result<UserTokens, ConcurError>> + Send;
    fn report(
        &self,
        id: &str,
        status: ConnectionStatus,
        deadline: Instant,
    ) -> impl Future<Output = Result<(), ConcurError>> + Send;
}

impl ConcurPort for ConcurClient {
    async fn exchange(
        &self,
        user_id: &str,
        request_token: &SecretString,
        deadline: Instant,
    ) -> Result<UserTokens, ConcurError> {
        self.exchange_request_token(user_id, request_token, deadline)
            .await
    }
    async fn report(
        &self,
        id: &str,
        status: ConnectionStatus,
        deadline: Instant,
    ) -> Result<(), ConcurError> {
        self.update_status(id, status, deadline).await
    }
}

impl<T: ConcurPort> ConcurPort for &T {
    fn exchange(
        &self,
        user_id: &str,
        request_token: &SecretString,
        deadline: Instant,
    ) -> impl Future<Output = Result<UserTokens, ConcurError>> + Send {
        T::exchange(self, user_id, request_token, deadline)
    }
    fn report(
        &self,
        id: &str,
        status: ConnectionStatus,
        deadline: Instant,
    ) -> impl Future<Output = Result<(), ConcurError>> + Send {
        T::report(self, id, status, deadline)
    }
}

/// Where connections are stored.
pub trait ConnectionSink: Send + Sync {
    fn store_connection(
        &self,
        member_id: &str,
        request_id: &str,
        tokens: &UserTokens,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), VaultError>> + Send;
}

impl<E: Encryptor> ConnectionSink for TokenVault<E> {
    async fn store_connection(
        &self,
        member_id: &str,
        request_id: &str,
        tokens: &UserTokens,
        now: DateTime<Utc>,
    ) -> Result<(), VaultError> {
        TokenVault::store_connection(self, member_id, request_id, tokens, now).await
    }
}

impl<T: ConnectionSink> ConnectionSink for &T {
    fn store_connection(
        &self,
        member_id: &str,
        request_id: &str,
        tokens: &UserTokens,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), VaultError>> + Send {
        T::store_connection(self, member_id, request_id, tokens, now)
    }
}

/// How one stream record ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordOutcome {
    /// Not a received attempt (the worker's own updates, removals, stale records).
    Ignored(&'static str),
    /// This attempt was reported already.
    AlreadyDone,
    /// The status was sent and acknowledged.
    Reported {
        status: ConnectionStatus,
        resent: bool,
    },
    /// Another worker took the lease over; it finishes the attempt.
    LeaseLost,
}

/// A record that must be retried by Lambda (a batch item failure).
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("another worker holds the lease until {lease_until_ms}")]
    Busy { lease_until_ms: i64 },
    #[error("the status could not be sent to Concur: {0}")]
    Report(#[source] ConcurError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the stream record cannot be read: {0}")]
    BadRecord(String),
    #[error("too close to the Lambda deadline to start")]
    OutOfTime,
}

/// Retry a step's transient failures with the policy, within the deadline.
async fn with_retries<T, E, F, Fut>(
    policy: &RetryPolicy,
    deadline: Instant,
    is_transient: impl Fn(&E) -> bool,
    mut step: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        match step().await {
            Ok(value) => return Ok(value),
            Err(e) if is_transient(&e) => {
                match policy.decide(attempt, None, Instant::now(), deadline, &mut rand::rng()) {
                    RetryDecision::RetryAfter(wait) => {
                        tokio::time::sleep(wait).await;
                        attempt += 1;
                    }
                    RetryDecision::GiveUp => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// The worker function: its dependencies, built once per cold start.
pub struct Worker<C, D, S, V> {
    pub concur: C,
    pub directory: D,
    pub store: S,
    pub vault: V,
    pub settings: WorkerSettings,
    pub metrics: Metrics,
}

/// Read a stream record's new image as a requests-table item.
pub fn new_image(record: &EventRecord) -> Result<Option<RequestItem>, RecordError> {
    if record.change.new_image.is_empty() {
        return Ok(None);
    }
    serde_dynamo::from_item(record.change.new_image.clone())
        .map(Some)
        .map_err(|e| RecordError::BadRecord(e.to_string()))
}

impl<C, D, S, V> Worker<C, D, S, V>
where
    C: ConcurPort,
    D: MemberDirectory,
    S: WorkStore,
    V: ConnectionSink,
{
    /// Decide the status of a claimed attempt (match, and on a match connect).
    async fn decide(&self, item: &RequestItem, deadline: Instant) -> Decision {
        let request: ConnectionRequest = item.to_request();
        let outcome = with_retries(
            &self.settings.step_retry,
            deadline,
            |e: &triplink_shared::members::DirectoryError| e.is_transient(),
            || match_request(&self.directory, &request, &self.settings.policy),
        )
        .await;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                warn!(request_id = %item.request_id, error = %e, "member directory failed");
                return decision::technical(TechnicalFailure::DirectoryUnavailable);
            }
        };
        if let Some(decision) = decision::for_outcome(&outcome) {
            return decision;
        }
        let MatchOutcome::Matched { member_id } = outcome else {
            return decision::technical(TechnicalFailure::DirectoryUnavailable);
        };
        let Some(user_id) = request.user_id.as_deref() else {
            return decision::technical(TechnicalFailure::NoUserId);
        };
        let Some(token) = request.request_token.as_ref() else {
            return decision::technical(TechnicalFailure::NoRequestToken);
        };
        let tokens = match self.concur.exchange(user_id, token, deadline).await {
            Ok(tokens) => tokens,
            Err(e) => {
                warn!(
                    request_id = %item.request_id,
                    error = %e,
                    error_kind = e.kind(),
                    correlation_id = e.correlation_id().unwrap_or(""),
                    "request token exchange failed"
                );
                return decision::technical(TechnicalFailure::TokenExchangeFailed(e.kind()));
            }
        };
        let stored = with_retries(
            &self.settings.step_retry,
            deadline,
            VaultError::is_transient,
            || {
                self.vault
                    .store_connection(&member_id, &item.request_id, &tokens, Utc::now())
            },
        )
        .await;
        match stored {
            Ok(()) => decision::connected(),
            Err(e) => {
                error!(request_id = %item.request_id, error = %e, "connection could not be stored");
                decision::technical(TechnicalFailure::ConnectionStoreFailed)
            }
        }
    }

    /// Send the decided status and record that Concur acknowledged it.
    async fn report(
        &self,
        item: &RequestItem,
        status: ConnectionStatus,
        deadline: Instant,
    ) -> Result<(), RecordError> {
        match self.concur.report(&item.request_id, status, deadline).await {
            Ok(()) => {}
            // Not outstanding at Concur: a previous PUT of this status was accepted and
            // only its acknowledgement was lost.
            Err(ConcurError::NotFound { info }) => warn!(
                request_id = %item.request_id,
                correlation_id = info.correlation_id.as_deref().unwrap_or(""),
                "Concur no longer has the request outstanding; taking the status as reported"
            ),
            Err(e) => return Err(RecordError::Report(e)),
        }
        self.store
            .record_reported(
                &item.request_id,
                item.attempt,
                Utc::now(),
                self.settings.retention_days,
            )
            .await?;
        Ok(())
    }

    /// One stream record, start to end.
    pub async fn process(
        &self,
        record: &EventRecord,
        owner: &str,
        lease_until_ms: i64,
        deadline: Instant,
    ) -> Result<RecordOutcome, RecordError> {
        if record.event_name == "REMOVE" {
            return Ok(RecordOutcome::Ignored("removed"));
        }
        let Some(image) = new_image(record)? else {
            return Ok(RecordOutcome::Ignored("no new image"));
        };
        if image.state != RequestState::Received {
            return Ok(RecordOutcome::Ignored("not received"));
        }
        let claim = self
            .store
            .claim(
                &image.request_id,
                image.attempt,
                owner,
                lease_until_ms,
                Utc::now(),
            )
            .await?;
        let (item, decided, resent) = match claim {
            Claim::Claimed(item) => {
                let decided = self.decide(&item, deadline).await;
                if !self
                    .store
                    .record_decision(&item.request_id, item.attempt, owner, &decided, Utc::now())
                    .await?
                {
                    warn!(request_id = %item.request_id, "lease lost before the decision was recorded");
                    return Ok(RecordOutcome::LeaseLost);
                }
                (item, decided.status, false)
            }
            Claim::Decided(item) => {
                let Some(status) = item.decided_status else {
                    return Err(RecordError::BadRecord("decided without a status".into()));
                };
                (item, status, true)
            }
            Claim::Busy { lease_until } => {
                return Err(RecordError::Busy {
                    lease_until_ms: lease_until,
                })
            }
            Claim::Done => return Ok(RecordOutcome::AlreadyDone),
            Claim::Stale => return Ok(RecordOutcome::Ignored("stale")),
        };
        self.report(&item, decided, deadline).await?;
        Ok(RecordOutcome::Reported {
            status: decided,
            resent,
        })
    }

    fn log_and_measure(
        &self,
        record: &EventRecord,
        request_id: &str,
        started: Instant,
        result: &Result<RecordOutcome, RecordError>,
    ) {
        let latency_ms = started.elapsed().as_millis() as f64;
        let mut properties = Map::new();
        properties.insert("request_id".into(), json!(request_id));
        match result {
            Ok(RecordOutcome::Reported { status, resent }) => {
                info!(
                    request_id,
                    outcome = status.as_str(),
                    resent,
                    latency_ms,
                    "request reported"
                );
                properties.insert("outcome".into(), json!(status.as_str()));
                self.metrics.emit(
                    &[
                        (decision::metric_name(*status), 1.0, Unit::Count),
                        ("RequestLatencyMs", latency_ms, Unit::Milliseconds),
                    ],
                    properties,
                );
            }
            Ok(other) => info!(request_id, outcome = ?other, "record needs no report"),
            Err(e) => {
                error!(
                    request_id,
                    sequence_number = record.change.sequence_number.as_deref().unwrap_or(""),
                    error = %e,
                    "record failed; Lambda will retry it"
                );
                properties.insert("outcome".into(), json!("error"));
                self.metrics
                    .emit(&[("WorkerErrors", 1.0, Unit::Count)], properties);
            }
        }
    }

    /// A batch: records of one request in stream order, different requests at once
    /// (bounded). Returns the batch item failure to report: the lowest failed sequence
    /// number, from where Lambda retries (records after it are safe to redo).
    pub async fn process_batch(
        &self,
        records: &[EventRecord],
        owner: &str,
        lambda_deadline_ms: i64,
    ) -> DynamoDbEventResponse {
        let now_ms = Utc::now().timestamp_millis();
        let margin = self.settings.deadline_margin.as_millis() as i64;
        let lease_until_ms = lambda_deadline_ms - margin / 2;
        let deadline = Instant::now()
            + Duration::from_millis((lambda_deadline_ms - margin - now_ms).max(0) as u64);

        let mut groups: Vec<(String, Vec<&EventRecord>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for record in records {
            let key = record
                .change
                .keys
                .get("request_id")
                .and_then(|v| match v {
                    serde_dynamo::AttributeValue::S(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            match index.get(&key) {
                Some(&i) => groups[i].1.push(record),
                None => {
                    index.insert(key.clone(), groups.len());
                    groups.push((key, vec![record]));
                }
            }
        }

        let failures: Vec<String> = futures::stream::iter(groups)
            .map(|(request_id, group)| async move {
                for record in group {
                    let started = Instant::now();
                    let result = if Instant::now() >= deadline {
                        Err(RecordError::OutOfTime)
                    } else {
                        self.process(record, owner, lease_until_ms, deadline).await
                    };
                    self.log_and_measure(record, &request_id, started, &result);
                    if result.is_err() {
                        // Later records of this request are retried from here anyway.
                        return record.change.sequence_number.clone();
                    }
                }
                None
            })
            .buffer_unordered(self.settings.concurrency)
            .filter_map(|failed| async move { failed })
            .collect()
            .await;

        let lowest = failures.into_iter().min_by(|a, b| sequence_order(a, b));
        let mut response = DynamoDbEventResponse::default();
        if let Some(sequence_number) = lowest {
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = Some(sequence_number);
            response.batch_item_failures.push(failure);
        }
        response
    }

    /// The Lambda handler for a DynamoDB stream batch.
    pub async fn handle(
        &self,
        event: LambdaEvent<Event>,
    ) -> Result<DynamoDbEventResponse, lambda_runtime::Error> {
        let deadline_ms = event.context.deadline as i64;
        Ok(self
            .process_batch(
                &event.payload.records,
                &event.context.request_id,
                deadline_ms,
            )
            .await)
    }
}

/// DynamoDB sequence numbers are decimal strings of varying length: compare as numbers.
pub fn sequence_order(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        let mut seqs = vec!["1000", "999", "20000000000000000000001", "0100"];
        seqs.sort_by(|a, b| sequence_order(a, b));
        assert_eq!(seqs, ["0100", "999", "1000", "20000000000000000000001"]);
    }
}
