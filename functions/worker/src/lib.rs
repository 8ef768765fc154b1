//! The worker: triggered by the requests table's stream, it matches each received
//! request against the supplier's members, connects matched users, and reports the
//! status to Concur.
//!
//! Per record (a new request, a requeue or a re-armed attempt: a new image in state
//! `received`), following `triplink_shared::store::lifecycle`:
//! 1. **Claim** the attempt with a conditional update (a lease that ends just after
//!    this invocation's deadline). A duplicate delivery finds the attempt held (left to
//!    its holder, or to the sweep if the holder died), decided (the same status is
//!    re-sent) or reported (nothing to do).
//! 2. **Match** (`triplink_shared::matching`), with bounded retries of the directory.
//! 3. On a match, record that the token is being submitted, **exchange** it and
//!    **store** the connection. A token an earlier holder submitted is never submitted
//!    again: its connection is looked up in the vault, or a fresh token is read.
//! 4. **Record the decision** (`working` → `decided`) before sending it, in the same
//!    write as the count of the PUT about to send it: a crash after this line re-sends
//!    the same status, never another one, once Concur shows it did not take the first.
//! 5. **PUT** the status, and **record it reported** with how Concur took it (accepted,
//!    a lost acknowledgement, or not outstanding). A re-sent decision counts its PUT in
//!    a write of its own first.
//!
//! A failure the process survives releases the lease with a backoff (no status is
//! spent on it); a crash leaves the lease to expire. Either way the poller's sweep
//! re-arms the attempt. Only store failures and unreadable records are batch item
//! failures.

pub mod breaker;
pub mod decision;
pub mod directory;
pub mod unlink;

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use aws_lambda_events::eventbridge::EventBridgeEvent;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use lambda_runtime::LambdaEvent;
use secrecy::ExposeSecret;
use secrecy::SecretString;
use serde_json::{json, Map};
use tokio::time::Instant;
use tracing::{error, info, warn, Instrument};
use triplink_shared::concur::retry::{Decision as RetryDecision, RetryPolicy};
use triplink_shared::concur::{ConcurClient, ConcurError, OAuthErrorKind, UserTokens};
use triplink_shared::config::{ConcurSettings, ConfigError, Env};
use triplink_shared::matching::{MatchOutcome, MatchPolicy};
use triplink_shared::members::{match_request, HealthGate, MemberDirectory, Readiness};
use triplink_shared::model::{ConnectionRequest, ConnectionStatus};
use triplink_shared::store::layout::{RequestItem, RequestState, DEFAULT_RETENTION_DAYS};
use triplink_shared::store::lifecycle::{self, ExchangePlan, ParkReason};
use triplink_shared::store::{
    Claim, Decision, DynamoRequestStore, Lease, ReportResult, StoreError, WorkStore,
};
use triplink_shared::telemetry::{Metrics, Unit};
use triplink_shared::vault::{Encryptor, KmsEncryptor, TokenVault, VaultError};

use decision::{Leave, TechnicalFailure};

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
    /// `WORKER_RELEASE_BACKOFF_MS`: how long a request left pending after a failure waits
    /// before the sweep re-arms it, doubled with each re-drive (default 30000).
    pub release_backoff: Duration,
    /// `DRY_RUN`: decide, record the decision and park the request (reason `dry_run`),
    /// but exchange no token and send no status (default false).
    pub dry_run: bool,
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
            release_backoff: Duration::from_secs(30),
            dry_run: false,
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
            release_backoff: Duration::from_millis(env.parsed(
                "WORKER_RELEASE_BACKOFF_MS",
                defaults.release_backoff.as_millis() as u64,
            )?),
            dry_run: env.parsed("DRY_RUN", false)?,
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
    /// The request as Concur holds it now (with a freshly issued request token).
    fn fetch_request(
        &self,
        id: &str,
        deadline: Instant,
    ) -> impl Future<Output = Result<ConnectionRequest, ConcurError>> + Send;
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
    async fn fetch_request(
        &self,
        id: &str,
        deadline: Instant,
    ) -> Result<ConnectionRequest, ConcurError> {
        self.get(id, deadline).await
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
    fn fetch_request(
        &self,
        id: &str,
        deadline: Instant,
    ) -> impl Future<Output = Result<ConnectionRequest, ConcurError>> + Send {
        T::fetch_request(self, id, deadline)
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

    /// Does `member_id` hold a connection made from `request_id` at or after `since`?
    /// (Positive evidence that an earlier holder's exchange succeeded and was stored.)
    fn connected_since(
        &self,
        member_id: &str,
        request_id: &str,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, VaultError>> + Send;
}

impl<E: Encryptor> ConnectionSink for TokenVault<E> {
    async fn store_connection(
        &self,
        member_id: &str,
        request_id: &str,
        tokens: &UserTokens,
        now: DateTime<Utc>,
    ) -> Result<(), VaultError> {
        TokenVault::store_connection(self, member_id, request_id, tokens, now)
            .await
            .map(|_replaced| ())
    }
    async fn connected_since(
        &self,
        member_id: &str,
        request_id: &str,
        since: DateTime<Utc>,
    ) -> Result<bool, VaultError> {
        let Some(connection) = self.get(member_id).await? else {
            return Ok(false);
        };
        let connected_at = connection
            .connected_at
            .as_deref()
            .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
            .map(|at| at.with_timezone(&Utc));
        Ok(connection.request_id.as_deref() == Some(request_id)
            && connected_at.is_some_and(|at| at >= since - chrono::Duration::seconds(1)))
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
    fn connected_since(
        &self,
        member_id: &str,
        request_id: &str,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, VaultError>> + Send {
        T::connected_since(self, member_id, request_id, since)
    }
}

/// How one stream record ended. None of these is a batch item failure: the table,
/// not the stream, holds what is left to do (see `triplink_shared::store::lifecycle`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordOutcome {
    /// Not a received attempt (the worker's own updates, removals, stale records).
    Ignored(&'static str),
    /// This attempt was reported already.
    AlreadyDone,
    /// Another worker holds a live lease: it finishes the attempt, or, if it died, the
    /// sweep re-arms the attempt once the lease expired.
    Busy { lease_until_ms: i64 },
    /// The status was sent and Concur answered.
    Reported {
        status: ConnectionStatus,
        resent: bool,
        result: ReportResult,
    },
    /// No status could be earned or sent now: the lease was released and the sweep
    /// re-arms the attempt after a backoff. No attempt of the user's was spent.
    Released { reason: Leave },
    /// Left to an operator (alarm).
    Parked { reason: ParkReason },
    /// Dry-run mode: the decision was recorded and the request parked; nothing sent.
    DryRun { status: ConnectionStatus },
    /// Another worker took the lease over; it finishes the attempt.
    LeaseLost,
}

impl RecordOutcome {
    /// The outcome's snake_case name in logs (a reported one is its status code).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Ignored(_) => "ignored",
            Self::AlreadyDone => "already_done",
            Self::Busy { .. } => "busy",
            Self::Reported { status, .. } => status.as_str(),
            Self::Released { .. } => "released",
            Self::Parked { .. } => "parked",
            Self::DryRun { .. } => "dry_run",
            Self::LeaseLost => "lease_lost",
        }
    }
}

/// A record that must be retried by Lambda (a batch item failure).
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the stream record cannot be read: {0}")]
    BadRecord(String),
    #[error("too close to the Lambda deadline to start")]
    OutOfTime,
}

/// The result of deciding a claimed attempt.
enum Step {
    Decide(Decision),
    /// Dry-run mode: record this decision, send nothing.
    DryRun(Decision),
    /// Leave the attempt to an operator, no status.
    Park(ParkReason),
    Leave(Leave),
    LeaseLost,
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
    /// State kept across the invocations of one execution environment.
    pub safety: Safety,
}

/// What one execution environment remembers between invocations to keep statuses safe:
/// the directory health gate and the circuit breaker.
#[derive(Default)]
pub struct Safety {
    pub health: HealthGate,
    pub breaker: breaker::Breaker,
}

/// The worker as deployed: DynamoDB tables, KMS, the Concur client and the configured
/// member directory.
pub type DeployedWorker =
    Worker<ConcurClient, directory::AnyDirectory, DynamoRequestStore, TokenVault<KmsEncryptor>>;

/// The worker's configuration, read and checked at cold start with no network call
/// (a mistake is an init error, `triplink_shared::lambda_init`); [`WorkerInit::build`]
/// fetches the secrets and completes the worker on the first invocation.
pub struct WorkerInit {
    concur: ConcurSettings,
    directory: directory::DirectorySpec,
    settings: WorkerSettings,
    requests_table: String,
    connections_table: String,
    kms_key_id: String,
    renew_after: chrono::Duration,
    namespace: String,
    aws: aws_config::SdkConfig,
}

impl WorkerInit {
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        Ok(Self {
            concur: ConcurSettings::for_functions(env)?,
            directory: directory::DirectorySpec::from_env(env)?,
            settings: WorkerSettings::from_env(env)?,
            requests_table: env.required("REQUESTS_TABLE")?,
            connections_table: env.required("CONNECTIONS_TABLE")?,
            kms_key_id: env.required("KMS_KEY_ID")?,
            renew_after: triplink_shared::vault::renew_after_from_env(env)?,
            namespace: env
                .get("METRICS_NAMESPACE")
                .unwrap_or_else(|| "TripLink".into()),
            aws: triplink_shared::config::lambda_sdk_config(env)?,
        })
    }

    /// The deployed worker: fetches the client secret and the member service's
    /// credentials (Secrets Manager in the cloud).
    pub async fn build(&self, env: &impl Env) -> Result<DeployedWorker, ConfigError> {
        let dynamo = aws_sdk_dynamodb::Client::new(&self.aws);
        Ok(Worker {
            concur: self.concur.client(&self.aws, env).await?,
            directory: self.directory.build(env, &self.aws).await?,
            store: DynamoRequestStore::new(dynamo.clone(), self.requests_table.clone()),
            vault: TokenVault::new(
                dynamo,
                self.connections_table.clone(),
                KmsEncryptor::new(aws_sdk_kms::Client::new(&self.aws), self.kms_key_id.clone()),
            )
            .with_metrics(Metrics::new(self.namespace.clone(), "vault"))
            .with_renew_after(self.renew_after),
            settings: self.settings.clone(),
            metrics: Metrics::new(self.namespace.clone(), "worker"),
            safety: Safety::default(),
        })
    }
}

/// Read a stream record's new image as a requests-table item.
pub fn new_image(record: &EventRecord) -> Result<Option<RequestItem>, RecordError> {
    if record.change.new_image.is_empty() {
        return Ok(None);
    }
    triplink_shared::store::image::decode(record.change.new_image.clone())
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
    async fn decide(&self, item: &RequestItem, lease: Lease<'_>, deadline: Instant) -> Step {
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
                return Step::Leave(Leave::DirectoryUnavailable);
            }
        };
        if let MatchOutcome::DuplicateLoyaltyNumber { members } = outcome {
            error!(
                request_id = %item.request_id,
                members,
                "several members carry this loyalty number and last name: parked until the directory is fixed"
            );
            return Step::Park(ParkReason::DuplicateLoyaltyNumber);
        }
        if let Some(decision) = decision::for_outcome(&outcome) {
            // "No such member" is evidence only from a directory known to hold members.
            if let Readiness::NotReady(why) = self.safety.health.check(&self.directory).await {
                warn!(
                    request_id = %item.request_id,
                    would_be = decision.status.as_str(),
                    directory = why.as_str(),
                    advice = why.advice(),
                    "member directory not ready: no CREU status decided"
                );
                return Step::Leave(Leave::DirectoryNotReady);
            }
            return if self.settings.dry_run {
                Step::DryRun(decision)
            } else {
                Step::Decide(decision)
            };
        }
        let MatchOutcome::Matched { member_id } = outcome else {
            return Step::Leave(Leave::DirectoryUnavailable);
        };
        if self.settings.dry_run {
            return Step::DryRun(decision::dry_run_match());
        }
        let Some(user_id) = request.user_id.as_deref() else {
            return Step::Decide(decision::technical(TechnicalFailure::NoUserId));
        };
        let token = match lifecycle::exchange_plan(item) {
            ExchangePlan::Exchange => match request.request_token.clone() {
                Some(token) => token,
                None => return Step::Decide(decision::technical(TechnicalFailure::NoRequestToken)),
            },
            ExchangePlan::AlreadySubmitted { since } => {
                match self
                    .after_unfinished_exchange(item, lease, &member_id, since, deadline)
                    .await
                {
                    Ok(token) => token,
                    Err(step) => return step,
                }
            }
        };
        let tokens = match self
            .exchange_token(item, lease, user_id, token, deadline)
            .await
        {
            Ok(tokens) => tokens,
            Err(step) => return step,
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
            Ok(()) => Step::Decide(decision::connected()),
            Err(e) => {
                error!(request_id = %item.request_id, error = %e, "connection could not be stored");
                Step::Leave(Leave::ConnectionStoreFailed)
            }
        }
    }

    /// An earlier holder submitted the stored token and did not finish. If its
    /// connection is in the vault, the attempt is connected; otherwise the stored token
    /// is never submitted again: a fresh one is read from Concur.
    async fn after_unfinished_exchange(
        &self,
        item: &RequestItem,
        lease: Lease<'_>,
        member_id: &str,
        since: DateTime<Utc>,
        deadline: Instant,
    ) -> Result<SecretString, Step> {
        match self
            .vault
            .connected_since(member_id, &item.request_id, since)
            .await
        {
            Ok(true) => {
                info!(request_id = %item.request_id, "an earlier holder's exchange succeeded and was stored");
                return Err(Step::Decide(decision::connected()));
            }
            Ok(false) => {}
            Err(e) => {
                warn!(request_id = %item.request_id, error = %e, "vault unreadable");
                return Err(Step::Leave(Leave::ConnectionStoreFailed));
            }
        }
        let fresh = match self.concur.fetch_request(&item.request_id, deadline).await {
            Ok(fresh) => fresh,
            Err(e) => {
                warn!(
                    request_id = %item.request_id,
                    error = %e,
                    correlation_id = e.correlation_id().unwrap_or(""),
                    "could not read a fresh request token"
                );
                return Err(Step::Leave(Leave::after(
                    &e,
                    Leave::FreshTokenUnavailable {
                        pause: e.pause().is_some(),
                    },
                )));
            }
        };
        match fresh.request_token {
            Some(token) if Some(token.expose_secret()) != item.request_token.as_deref() => {
                match self
                    .store
                    .record_fresh_token(lease, token.expose_secret(), Utc::now())
                    .await
                {
                    Ok(true) => Ok(token),
                    Ok(false) => Err(Step::LeaseLost),
                    Err(e) => {
                        warn!(request_id = %item.request_id, error = %e, "could not store a fresh token");
                        Err(Step::Leave(Leave::FreshTokenUnavailable { pause: false }))
                    }
                }
            }
            _ => Err(Step::Decide(decision::technical(
                TechnicalFailure::TokenSpent,
            ))),
        }
    }

    /// Submit a request token, marked as submitted first. A refusal of the token itself
    /// (OAuth 103, 136) may only mean that our read was superseded (a later GET issued
    /// a new token): the request is read again by id, once per attempt, and the token
    /// Concur holds now, if it is another, is recorded (fenced by the lease) and
    /// submitted instead. A `CRRET` is never spent on our own stale read.
    async fn exchange_token(
        &self,
        item: &RequestItem,
        lease: Lease<'_>,
        user_id: &str,
        mut token: SecretString,
        deadline: Instant,
    ) -> Result<UserTokens, Step> {
        let mut reread = false;
        loop {
            match self.store.record_exchange_started(lease, Utc::now()).await {
                Ok(true) => {}
                Ok(false) => return Err(Step::LeaseLost),
                Err(e) => {
                    warn!(request_id = %item.request_id, error = %e, "could not record the exchange start");
                    return Err(Step::Leave(Leave::TokenExchangeUnanswered { pause: false }));
                }
            }
            let e = match self.concur.exchange(user_id, &token, deadline).await {
                Ok(tokens) => return Ok(tokens),
                Err(e) => e,
            };
            warn!(
                request_id = %item.request_id,
                error = %e,
                error_kind = e.kind(),
                correlation_id = e.correlation_id().unwrap_or(""),
                reread,
                "request token exchange failed"
            );
            // No answer that proves the grant was refused: the token may be spent.
            if e.is_transient() || matches!(e, ConcurError::DeadlineExceeded { .. }) {
                return Err(Step::Leave(Leave::after(
                    &e,
                    Leave::TokenExchangeUnanswered {
                        pause: e.pause().is_some(),
                    },
                )));
            }
            // Concur refused the app, not this traveller's token: not their problem.
            if decision::is_app_problem(&e) {
                return Err(Step::Leave(Leave::AppCredentialsRejected));
            }
            let for_the_token = matches!(
                e.oauth_kind(),
                Some(OAuthErrorKind::CodeBadOrExpired | OAuthErrorKind::AuthTokenNotIssuedForYou)
            );
            if for_the_token && !reread {
                reread = true;
                if let Some(current) = self.current_token(item, lease, &token, deadline).await? {
                    info!(request_id = %item.request_id, "the token read at claim time was superseded; submitting the current one");
                    token = current;
                    continue;
                }
            }
            return Err(Step::Decide(decision::technical(
                TechnicalFailure::TokenExchangeFailed(e.kind()),
            )));
        }
    }

    /// The request token Concur holds now for this request, when it is not `refused`
    /// (recorded, fenced by the lease, before it is submitted); `None` when Concur
    /// holds no other token.
    async fn current_token(
        &self,
        item: &RequestItem,
        lease: Lease<'_>,
        refused: &SecretString,
        deadline: Instant,
    ) -> Result<Option<SecretString>, Step> {
        let now = match self.concur.fetch_request(&item.request_id, deadline).await {
            Ok(now) => now,
            Err(e) => {
                warn!(
                    request_id = %item.request_id,
                    error = %e,
                    correlation_id = e.correlation_id().unwrap_or(""),
                    "could not re-read the request after a refused token"
                );
                return Err(Step::Leave(Leave::after(
                    &e,
                    Leave::FreshTokenUnavailable {
                        pause: e.pause().is_some(),
                    },
                )));
            }
        };
        let Some(current) = now.request_token else {
            return Ok(None);
        };
        if current.expose_secret() == refused.expose_secret() {
            return Ok(None);
        }
        match self
            .store
            .record_fresh_token(lease, current.expose_secret(), Utc::now())
            .await
        {
            Ok(true) => Ok(Some(current)),
            Ok(false) => Err(Step::LeaseLost),
            Err(e) => {
                warn!(request_id = %item.request_id, error = %e, "could not store a fresh token");
                Err(Step::Leave(Leave::FreshTokenUnavailable { pause: false }))
            }
        }
    }

    /// Give the lease up after a failure the process survived (invariant 3 of the
    /// life cycle): the sweep re-arms the attempt after the backoff.
    async fn leave(
        &self,
        item: &RequestItem,
        lease: Lease<'_>,
        reason: Leave,
    ) -> Result<RecordOutcome, RecordError> {
        let now = Utc::now();
        let base = chrono::Duration::from_std(self.settings.release_backoff)
            .unwrap_or(chrono::Duration::seconds(30));
        let due = now + lifecycle::release_backoff(item.redrives, base, reason.at_least());
        if self
            .store
            .release(lease, due.timestamp_millis(), now)
            .await?
        {
            Ok(RecordOutcome::Released { reason })
        } else {
            Ok(RecordOutcome::LeaseLost)
        }
    }

    /// A fenced write found the lease not ours. If it still is (the write met a spurious
    /// conflict), release it now so the sweep need not wait for its expiry; if another
    /// worker holds it, the release is fenced off and changes nothing.
    async fn lease_lost(&self, item: &RequestItem, lease: Lease<'_>) -> RecordOutcome {
        let now = Utc::now();
        if let Ok(true) = self.store.release(lease, now.timestamp_millis(), now).await {
            warn!(request_id = %item.request_id, "a write was refused though the lease was ours; released");
        }
        RecordOutcome::LeaseLost
    }

    /// Send the recorded decision of an attempt this worker holds, and record Concur's
    /// answer.
    async fn send_decided(
        &self,
        item: &RequestItem,
        lease: Lease<'_>,
        status: ConnectionStatus,
        resent: bool,
        deadline: Instant,
    ) -> Result<RecordOutcome, RecordError> {
        if resent && !lifecycle::may_send_decision(item, Utc::now()) {
            let reason = ParkReason::DecisionTooOld;
            error!(request_id = %item.request_id, attempt = item.attempt, "decision too old to re-send; parked");
            self.store.park(lease, reason, Utc::now()).await?;
            return Ok(RecordOutcome::Parked { reason });
        }
        if item.puts_sent > 0 {
            match self.taken_already(item, deadline).await {
                // An earlier holder's PUT was taken and only its answer was lost: sending
                // again would only be refused.
                Ok(true) => {
                    return self
                        .record(item, lease, status, resent, ReportResult::AckLost)
                        .await
                }
                Ok(false) => {}
                Err(reason) => return self.leave(item, lease, reason).await,
            }
        }
        let Some(earlier_sends) = self.store.record_put_sent(lease, Utc::now()).await? else {
            return Ok(self.lease_lost(item, lease).await);
        };
        self.put_and_record(item, lease, status, resent, earlier_sends, deadline)
            .await
    }

    /// Send the status whose PUT was just counted (`earlier_sends`: the PUTs counted
    /// before it), and record Concur's answer.
    async fn put_and_record(
        &self,
        item: &RequestItem,
        lease: Lease<'_>,
        status: ConnectionStatus,
        resent: bool,
        earlier_sends: u32,
        deadline: Instant,
    ) -> Result<RecordOutcome, RecordError> {
        let result = match self.concur.report(&item.request_id, status, deadline).await {
            Ok(()) => ReportResult::Accepted,
            // Not outstanding at Concur: either an earlier PUT of ours was taken and only
            // its answer was lost, or (on our very first PUT) someone else popped it.
            Err(ConcurError::NotFound { info }) => {
                let earlier = earlier_sends + info.send.saturating_sub(1);
                let result = ReportResult::for_not_found(earlier);
                warn!(
                    request_id = %item.request_id,
                    correlation_id = info.correlation_id.as_deref().unwrap_or(""),
                    result = result.as_str(),
                    earlier_sends = earlier,
                    "Concur no longer has the request outstanding"
                );
                result
            }
            Err(e) => {
                warn!(
                    request_id = %item.request_id,
                    error = %e,
                    correlation_id = e.correlation_id().unwrap_or(""),
                    "the status could not be sent; it will be re-sent after a backoff"
                );
                let pause = e.pause().is_some();
                let reason = Leave::after(&e, Leave::ReportFailed { pause });
                return self.leave(item, lease, reason).await;
            }
        };
        self.record(item, lease, status, resent, result).await
    }

    /// Has Concur already taken a status for this attempt (the request is no longer
    /// outstanding)? Asked only when an earlier PUT of ours may have been taken. A
    /// Concur that asks for a pause (503, no answer in time) is left alone: no PUT now.
    async fn taken_already(&self, item: &RequestItem, deadline: Instant) -> Result<bool, Leave> {
        match self.concur.fetch_request(&item.request_id, deadline).await {
            Ok(now) => Ok(!matches!(
                now.status,
                None | Some(ConnectionStatus::Pending | ConnectionStatus::Processing)
            )),
            Err(ConcurError::NotFound { .. }) => Ok(true),
            Err(e) if e.pause().is_some() => {
                warn!(
                    request_id = %item.request_id,
                    error = %e,
                    correlation_id = e.correlation_id().unwrap_or(""),
                    "Concur asks for a pause; the status is re-sent later"
                );
                Err(Leave::ReportFailed { pause: true })
            }
            // Unknown: send, and read a 404 as the lost acknowledgement it then is.
            Err(_) => Ok(false),
        }
    }

    /// Record how Concur took the status.
    async fn record(
        &self,
        item: &RequestItem,
        lease: Lease<'_>,
        status: ConnectionStatus,
        resent: bool,
        result: ReportResult,
    ) -> Result<RecordOutcome, RecordError> {
        if !self
            .store
            .record_reported(
                lease,
                item,
                result,
                Utc::now(),
                self.settings.retention_days,
            )
            .await?
        {
            warn!(request_id = %item.request_id, "lease lost before the report was recorded");
        }
        Ok(RecordOutcome::Reported {
            status,
            resent,
            result,
        })
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
        let (item, status, resent) = match claim {
            Claim::Claimed(item) => {
                let lease = Lease {
                    id: &item.request_id,
                    attempt: item.attempt,
                    owner,
                };
                if self.safety.breaker.open(Utc::now()).is_some() {
                    return self.leave(&item, lease, Leave::BreakerOpen).await;
                }
                let decided = match self.decide(&item, lease, deadline).await {
                    Step::Decide(decided) => decided,
                    Step::Park(reason) => {
                        return if self.store.park(lease, reason, Utc::now()).await? {
                            Ok(RecordOutcome::Parked { reason })
                        } else {
                            Ok(self.lease_lost(&item, lease).await)
                        };
                    }
                    Step::DryRun(would) => {
                        return if self.store.record_dry_run(lease, &would, Utc::now()).await? {
                            Ok(RecordOutcome::DryRun {
                                status: would.status,
                            })
                        } else {
                            Ok(self.lease_lost(&item, lease).await)
                        };
                    }
                    Step::Leave(reason) => return self.leave(&item, lease, reason).await,
                    Step::LeaseLost => return Ok(self.lease_lost(&item, lease).await),
                };
                let now = Utc::now();
                // The attempt as it is once the decision is recorded.
                let mut decided_item = item.clone();
                decided_item.decided_status = Some(decided.status);
                decided_item.decided_at = Some(triplink_shared::store::layout::timestamp(now));
                decided_item.decision_reason = Some(decided.reason.clone());
                if self.safety.breaker.open(now).is_some() || item.puts_sent > 0 {
                    // Recorded alone: kept decided, and sent (once the breaker closes) by
                    // the re-send path with its checks.
                    if !self.store.record_decision(lease, &decided, now).await? {
                        warn!(request_id = %item.request_id, "lease lost before the decision was recorded");
                        return Ok(self.lease_lost(&item, lease).await);
                    }
                    (decided_item, decided.status, false)
                } else {
                    // The decision and the count of the PUT that sends it, in one write.
                    let Some(earlier_sends) = self
                        .store
                        .record_decision_and_put_sent(lease, &decided, now)
                        .await?
                    else {
                        warn!(request_id = %item.request_id, "lease lost before the decision was recorded");
                        return Ok(self.lease_lost(&item, lease).await);
                    };
                    return self
                        .put_and_record(
                            &decided_item,
                            lease,
                            decided.status,
                            false,
                            earlier_sends,
                            deadline,
                        )
                        .await;
                }
            }
            Claim::Decided(item) => {
                let Some(status) = item.decided_status else {
                    return Err(RecordError::BadRecord("decided without a status".into()));
                };
                (item, status, true)
            }
            Claim::Busy { lease_until } => {
                return Ok(RecordOutcome::Busy {
                    lease_until_ms: lease_until,
                })
            }
            Claim::Done => return Ok(RecordOutcome::AlreadyDone),
            Claim::Stale => return Ok(RecordOutcome::Ignored("stale")),
        };
        let lease = Lease {
            id: &item.request_id,
            attempt: item.attempt,
            owner,
        };
        if self.safety.breaker.open(Utc::now()).is_some() {
            // Kept decided: the same status is sent once the breaker closes.
            return self.leave(&item, lease, Leave::BreakerOpen).await;
        }
        self.send_decided(&item, lease, status, resent, deadline)
            .await
    }

    /// Tell the breaker how a record ended; log and count an opening.
    fn observe(&self, result: &Result<RecordOutcome, RecordError>) {
        let outcome = match result {
            Ok(RecordOutcome::Reported { .. } | RecordOutcome::DryRun { .. }) => {
                breaker::Outcome::Success
            }
            Ok(RecordOutcome::Released { reason }) => match reason.cause() {
                Some(cause) => breaker::Outcome::Systemic(cause),
                None => breaker::Outcome::Neutral,
            },
            Err(RecordError::Store(_)) => breaker::Outcome::Systemic(breaker::Cause::Store),
            _ => breaker::Outcome::Neutral,
        };
        if let Some(opened) = self.safety.breaker.record(Utc::now(), outcome) {
            error!(
                cause = opened.cause.as_str(),
                until = %opened.until.to_rfc3339(),
                openings = opened.openings,
                "circuit breaker opened: requests stay pending until it closes"
            );
            let mut properties = Map::new();
            properties.insert("cause".into(), json!(opened.cause.as_str()));
            self.metrics
                .emit(&[("BreakerOpened", 1.0, Unit::Count)], properties);
        }
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
            Ok(RecordOutcome::Reported {
                status,
                resent,
                result,
            }) => {
                info!(
                    request_id,
                    outcome = status.as_str(),
                    resent,
                    report_result = result.as_str(),
                    latency_ms,
                    "request reported"
                );
                properties.insert("outcome".into(), json!(status.as_str()));
                properties.insert("report_result".into(), json!(result.as_str()));
                let mut metrics = vec![
                    (decision::metric_name(*status), 1.0, Unit::Count),
                    ("RequestLatencyMs", latency_ms, Unit::Milliseconds),
                ];
                match result {
                    ReportResult::Accepted => {}
                    ReportResult::AckLost => metrics.push(("ReportAckLost", 1.0, Unit::Count)),
                    ReportResult::NotOutstanding => {
                        metrics.push(("ReportNotOutstanding", 1.0, Unit::Count))
                    }
                }
                self.metrics.emit(&metrics, properties);
            }
            Ok(RecordOutcome::Released { reason }) => {
                warn!(
                    request_id,
                    reason = reason.as_str(),
                    "no status sent; the request stays pending and is tried again after a backoff"
                );
                properties.insert("reason".into(), json!(reason.as_str()));
                let mut metrics = vec![("Released", 1.0, Unit::Count)];
                if *reason == Leave::DirectoryNotReady {
                    // Alarm `directory-not-ready`: no CREU* is decided until it is.
                    metrics.push(("DirectoryNotReady", 1.0, Unit::Count));
                }
                if *reason == Leave::AppCredentialsRejected {
                    // Alarm `app-credentials-rejected`: Concur's token endpoint refused
                    // the app itself; nothing is connected until its secret is fixed.
                    metrics.push(("AppCredentialsRejected", 1.0, Unit::Count));
                }
                self.metrics.emit(&metrics, properties);
            }
            Ok(RecordOutcome::DryRun { status }) => {
                info!(
                    request_id,
                    would_send = status.as_str(),
                    "dry run: decision recorded, nothing sent"
                );
                properties.insert("would_send".into(), json!(status.as_str()));
                self.metrics
                    .emit(&[("DryRunDecided", 1.0, Unit::Count)], properties);
            }
            Ok(RecordOutcome::Parked { reason }) => {
                properties.insert("reason".into(), json!(reason.as_str()));
                self.metrics
                    .emit(&[("Parked", 1.0, Unit::Count)], properties);
            }
            Ok(other) => info!(
                request_id,
                outcome = other.as_str(),
                why = match other {
                    RecordOutcome::Ignored(why) => why,
                    _ => "",
                },
                "record needs no report"
            ),
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
        // The lease outlives everything this invocation can still do (life-cycle invariant 2).
        let lease_until_ms = DateTime::from_timestamp_millis(lambda_deadline_ms)
            .map(lifecycle::lease_until)
            .unwrap_or(lambda_deadline_ms);
        let deadline = self.work_deadline(lambda_deadline_ms, now_ms);

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
            .map(|(request_id, group)| {
                // Every line logged while a request is handled (the store's, the vault's,
                // the Concur client's with its correlation ids) carries its request_id, and
                // the invocation's (the lease owner: Lambda's request id), which the
                // runtime's own span would show outside this one.
                let span = tracing::info_span!(
                    "request",
                    request_id = %request_id,
                    aws_request_id = %owner
                );
                async move {
                    for record in group {
                        let started = Instant::now();
                        let result = if Instant::now() >= deadline {
                            Err(RecordError::OutOfTime)
                        } else {
                            self.process(record, owner, lease_until_ms, deadline).await
                        };
                        self.log_and_measure(record, &request_id, started, &result);
                        self.observe(&result);
                        if result.is_err() {
                            // Later records of this request are retried from here anyway.
                            return record.change.sequence_number.clone();
                        }
                    }
                    None
                }
                .instrument(span)
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

    /// When this invocation stops starting work: `WORKER_DEADLINE_MARGIN_MS` before
    /// Lambda's deadline (epoch ms), as an instant of this process's clock.
    fn work_deadline(&self, lambda_deadline_ms: i64, now_ms: i64) -> Instant {
        let margin = self.settings.deadline_margin.as_millis() as i64;
        Instant::now() + Duration::from_millis((lambda_deadline_ms - margin - now_ms).max(0) as u64)
    }

    /// The Lambda handler: a batch of the requests table's stream, or the supplier's
    /// unlink hook ([`unlink`]). Answers the stream's batch item failures, or the unlink's
    /// result; an unlink that did not revoke is an error (the event is retried).
    pub async fn handle_event(
        &self,
        event: LambdaEvent<Box<serde_json::value::RawValue>>,
        revoker: &impl unlink::Revoker,
    ) -> Result<serde_json::Value, lambda_runtime::Error> {
        let deadline_ms = event.context.deadline as i64;
        let request_id = event.context.request_id;
        match WorkerEvent::parse(event.payload.get())? {
            WorkerEvent::Stream(batch) => {
                let response = self
                    .process_batch(&batch.records, &request_id, deadline_ms)
                    .await;
                Ok(serde_json::to_value(response)?)
            }
            WorkerEvent::Unlink(detail) => {
                let deadline = self.work_deadline(deadline_ms, Utc::now().timestamp_millis());
                let result = unlink::unlink(revoker, &detail, &request_id, deadline).await;
                self.metrics.emit(
                    &[(
                        if result.is_ok() {
                            "Unlinked"
                        } else {
                            "UnlinkFailed"
                        },
                        1.0,
                        Unit::Count,
                    )],
                    Map::new(),
                );
                Ok(serde_json::to_value(result?)?)
            }
        }
    }
}

impl DeployedWorker {
    /// What the deployed worker revokes connections with (the unlink hook).
    pub fn revoker(&self) -> unlink::VaultRevoker<'_, KmsEncryptor> {
        unlink::VaultRevoker {
            vault: &self.vault,
            concur: &self.concur,
        }
    }
}

/// What the worker function is invoked with.
#[derive(Debug)]
pub enum WorkerEvent {
    /// A batch of the requests table's stream (the event source mapping).
    Stream(Event),
    /// The supplier's unlink hook: an EventBridge event of [`unlink::DETAIL_TYPE`].
    Unlink(unlink::UnlinkDetail),
}

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error(
        "unrecognised event: the worker takes a DynamoDB stream batch (\"Records\") or an \
         EventBridge event with detail-type \"{}\"",
        unlink::DETAIL_TYPE
    )]
    Unrecognised,
    /// serde's message is left out: it may quote a record's values.
    #[error("unreadable {what}: not shaped as AWS sends it ({category:?} error)")]
    Unreadable {
        what: &'static str,
        category: serde_json::error::Category,
    },
    #[error(transparent)]
    Unlink(#[from] unlink::UnlinkError),
}

impl WorkerEvent {
    /// Tell the two apart by their shapes: a stream batch has `Records`, an EventBridge
    /// event `detail-type`.
    ///
    /// The payload is read twice from its text, never through a `serde_json::Value`: a
    /// batch of 1,000 records as a `Value` tree takes several times its size in memory.
    /// First a probe that allocates nothing for the records (`IgnoredAny`), then the
    /// typed event.
    pub fn parse(payload: &str) -> Result<Self, EventError> {
        #[derive(serde::Deserialize)]
        struct Probe {
            #[serde(rename = "Records")]
            records: Option<serde::de::IgnoredAny>,
            #[serde(rename = "detail-type")]
            detail_type: Option<String>,
        }
        let unreadable = |what| {
            move |e: serde_json::Error| EventError::Unreadable {
                what,
                category: e.classify(),
            }
        };
        let probe: Probe = serde_json::from_str(payload).map_err(unreadable("event"))?;
        if probe.records.is_some() {
            return serde_json::from_str(payload)
                .map(Self::Stream)
                .map_err(unreadable("DynamoDB stream batch"));
        }
        match probe.detail_type.as_deref() {
            Some(unlink::DETAIL_TYPE) => {
                let event: EventBridgeEvent<serde_json::Value> =
                    serde_json::from_str(payload).map_err(unreadable("EventBridge event"))?;
                Ok(Self::Unlink(unlink::UnlinkDetail::parse(event.detail)?))
            }
            _ => Err(EventError::Unrecognised),
        }
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

    mod images {
        use std::collections::HashMap;

        use aws_lambda_events::event::dynamodb::EventRecord;
        use proptest::prelude::*;
        use serde_dynamo::AttributeValue;

        use super::*;

        /// Values no error text contains by chance: `Zq` then letters and digits, or a
        /// number of at least seven digits.
        fn secret() -> impl Strategy<Value = String> {
            prop_oneof!["Zq[a-zA-Z0-9@.]{6,12}", "[1-9][0-9]{6,12}"]
        }

        fn value() -> impl Strategy<Value = AttributeValue> {
            let leaf = prop_oneof![
                secret().prop_map(AttributeValue::S),
                secret().prop_map(AttributeValue::N),
                any::<bool>().prop_map(AttributeValue::Bool),
                Just(AttributeValue::Null(true)),
                secret().prop_map(|s| AttributeValue::B(s.into_bytes())),
                prop::collection::vec(secret(), 1..3).prop_map(AttributeValue::Ss),
            ];
            leaf.prop_recursive(3, 12, 3, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..3).prop_map(AttributeValue::L),
                    prop::collection::hash_map("[a-z_]{1,8}", inner, 0..3)
                        .prop_map(AttributeValue::M),
                ]
            })
        }

        use triplink_shared::testing::received_image as valid_image;

        fn record(image: HashMap<String, AttributeValue>) -> EventRecord {
            let mut record = EventRecord::default();
            record.change.new_image = image.into();
            record
        }

        fn values(value: &AttributeValue, out: &mut Vec<String>) {
            match value {
                AttributeValue::S(s) | AttributeValue::N(s) => out.push(s.clone()),
                AttributeValue::B(b) => out.push(String::from_utf8_lossy(b).into_owned()),
                AttributeValue::Ss(v) | AttributeValue::Ns(v) => out.extend(v.iter().cloned()),
                AttributeValue::M(m) => m.values().for_each(|v| values(v, out)),
                AttributeValue::L(l) => l.iter().for_each(|v| values(v, out)),
                AttributeValue::Bool(_) | AttributeValue::Null(_) | AttributeValue::Bs(_) => {}
            }
        }

        proptest! {
            /// A stream image of arbitrary attributes: decoded or refused, never a panic,
            /// and a refusal never quotes a value.
            #[test]
            fn arbitrary_images_never_panic_nor_quote_values(
                image in prop::collection::hash_map("[a-z_]{1,16}", value(), 0..12)
            ) {
                let mut secrets = Vec::new();
                image.values().for_each(|v| values(v, &mut secrets));
                if let Err(error) = new_image(&record(image)) {
                    let shown = format!("{error} / {error:?}");
                    for secret in secrets.iter().filter(|s| s.len() >= 7) {
                        prop_assert!(!shown.contains(secret.as_str()), "{} leaked in {}", secret, shown);
                    }
                }
            }

            /// One attribute of a valid image replaced by a value of another shape: the
            /// error, when there is one, names that attribute and not its value.
            #[test]
            fn a_bad_attribute_is_named_without_its_value(
                pick in any::<prop::sample::Index>(),
                bad in value(),
            ) {
                let mut image = valid_image();
                let mut names: Vec<String> = image.keys().cloned().collect();
                names.sort();
                let name = pick.get(&names).clone();
                let mut secrets = Vec::new();
                values(&bad, &mut secrets);
                image.insert(name.clone(), bad);
                if let Err(error) = new_image(&record(image)) {
                    let shown = format!("{error} / {error:?}");
                    prop_assert!(shown.contains(&format!("attribute {name}")), "{}: {}", name, shown);
                    for secret in &secrets {
                        prop_assert!(!shown.contains(secret.as_str()), "{} leaked in {}", secret, shown);
                    }
                }
            }
        }

        #[test]
        fn the_valid_image_decodes() {
            let item = new_image(&record(valid_image())).unwrap().unwrap();
            assert_eq!(item.request_id, "r-1");
        }
    }
}
