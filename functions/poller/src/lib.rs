//! The poller: drains Concur's queue of pending connection requests into the requests
//! table, page by page, until `NextPage` is null, the page cap is reached, or the
//! Lambda deadline (less a safety margin) comes near.
//!
//! * Re-reading a request never duplicates it: the store's conditional writes decide
//!   between new, requeue, token refresh and unchanged by the rules of
//!   `triplink_shared::store::lifecycle` (a requeue only from a page requested after our
//!   report landed).
//! * An item that cannot be read is quarantined (its id and a reason, no personal
//!   data), counted and logged; the rest of the page and the queue behind it are read.
//! * Each run first sweeps the table: attempts whose lease expired or that waited too
//!   long are re-armed so the stream delivers them again (bounded; then parked with an
//!   alarm). This is how a crashed worker's requests finish without an operator.
//! * Reading and writing run side by side: the pages read wait in a short queue
//!   ([`WRITE_AHEAD_PAGES`]) for their writes, so a run costs about the sum of the page
//!   round-trips or of the writes, whichever is larger, not the slower of each pair.
//! * Nothing is popped here (the poller never PUTs): a crash at any point leaves every
//!   request at Concur, and the next run stores what this one did not.
//! * The worker pops requests concurrently, which shifts Concur's offsets (Scenario 2 of
//!   the API page): a request skipped that way is still pending and the next run gets it.
//! * A 503 or a list call without an answer in time ends the run at once (stop reason
//!   `concur_paused`): the HTTP status codes page asks for five minutes before the next
//!   try, so the runs of the next five minutes skip Concur (the sweep still runs). The
//!   pause is held in memory: it survives warm invocations, not a cold start.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::eventbridge::EventBridgeEvent;
use chrono::Utc;
use futures::StreamExt;
use lambda_runtime::LambdaEvent;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::time::Instant;
use tracing::{error, info, warn};
use triplink_shared::concur::{
    ConcurClient, ConcurError, ForeignNextPage, Page, CONCUR_PAUSE, MAX_PAGE_LIMIT,
};
use triplink_shared::config::{ConcurSettings, ConfigError, Env};
use triplink_shared::store::lifecycle::{self, SweepStore, SweepSummary};
use triplink_shared::store::{
    DynamoRequestStore, PollWrite, QuarantineWrite, RequestStore, StoreError,
};
use triplink_shared::telemetry::{Metrics, Unit};
use triplink_shared::vault::{
    KeepAlive, KeepAliveRun, KeepAliveSettings, KmsEncryptor, TokenVault,
};

/// The poller's knobs, from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollerSettings {
    /// `POLL_PAGE_LIMIT`: requests per page, 1..=10 (default 10).
    pub page_limit: u32,
    /// `POLL_MAX_PAGES`: pages per run at most (default 50).
    pub max_pages: u32,
    /// `POLL_DEADLINE_MARGIN_MS`: stop paging this long before the Lambda deadline
    /// (default 5000).
    pub deadline_margin: Duration,
    /// `POLL_WRITE_CONCURRENCY`: store writes in flight at once (default 10).
    pub write_concurrency: usize,
    /// `UNSEEN_RETENTION_DAYS`: an unfinished request (with its personal data) expires
    /// this long after the poller last saw it in Concur's queue (default 30, at least 2).
    pub unseen_retention_days: i64,
}

impl Default for PollerSettings {
    fn default() -> Self {
        Self {
            page_limit: MAX_PAGE_LIMIT,
            max_pages: 50,
            deadline_margin: Duration::from_secs(5),
            write_concurrency: 10,
            unseen_retention_days: triplink_shared::store::layout::DEFAULT_UNSEEN_RETENTION_DAYS,
        }
    }
}

impl PollerSettings {
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let settings = Self {
            page_limit: env.parsed("POLL_PAGE_LIMIT", defaults.page_limit)?,
            max_pages: env.parsed("POLL_MAX_PAGES", defaults.max_pages)?,
            deadline_margin: Duration::from_millis(env.parsed(
                "POLL_DEADLINE_MARGIN_MS",
                defaults.deadline_margin.as_millis() as u64,
            )?),
            write_concurrency: env.parsed("POLL_WRITE_CONCURRENCY", defaults.write_concurrency)?,
            unseen_retention_days: env
                .parsed("UNSEEN_RETENTION_DAYS", defaults.unseen_retention_days)?,
        };
        let invalid = |key: &'static str, value: String, reason: &str| ConfigError::Invalid {
            key,
            value,
            reason: reason.into(),
        };
        if !(1..=MAX_PAGE_LIMIT).contains(&settings.page_limit) {
            return Err(invalid(
                "POLL_PAGE_LIMIT",
                settings.page_limit.to_string(),
                "must be 1 to 10 (Concur serves at most 10 per page)",
            ));
        }
        if settings.unseen_retention_days < 2 {
            return Err(invalid(
                "UNSEEN_RETENTION_DAYS",
                settings.unseen_retention_days.to_string(),
                "must be at least 2 (the backstop moves on once a day)",
            ));
        }
        if settings.max_pages == 0 {
            return Err(invalid("POLL_MAX_PAGES", "0".into(), "must be at least 1"));
        }
        if settings.write_concurrency == 0 {
            return Err(invalid(
                "POLL_WRITE_CONCURRENCY",
                "0".into(),
                "must be at least 1",
            ));
        }
        Ok(settings)
    }
}

/// Where pending requests come from: Concur's list call.
pub trait PendingSource: Send + Sync {
    fn list_page(
        &self,
        limit: u32,
        offset: Option<&str>,
        deadline: Instant,
    ) -> impl std::future::Future<Output = Result<Page, ConcurError>> + Send;
}

impl PendingSource for ConcurClient {
    async fn list_page(
        &self,
        limit: u32,
        offset: Option<&str>,
        deadline: Instant,
    ) -> Result<Page, ConcurError> {
        ConcurClient::list_page(self, limit, offset, deadline).await
    }
}

impl<T: PendingSource> PendingSource for &T {
    async fn list_page(
        &self,
        limit: u32,
        offset: Option<&str>,
        deadline: Instant,
    ) -> Result<Page, ConcurError> {
        T::list_page(self, limit, offset, deadline).await
    }
}

impl<T: PendingSource> PendingSource for std::sync::Arc<T> {
    async fn list_page(
        &self,
        limit: u32,
        offset: Option<&str>,
        deadline: Instant,
    ) -> Result<Page, ConcurError> {
        T::list_page(self, limit, offset, deadline).await
    }
}

/// Why a run stopped paging (logged and published as its snake_case name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// `NextPage` was null: the queue is drained.
    #[default]
    Drained,
    /// `POLL_MAX_PAGES` pages were read.
    PageCap,
    /// The Lambda deadline (less the margin) came near.
    Deadline,
    /// Concur failed (after the client's retries).
    ConcurError,
    /// Concur answered 503 or not in time: it asked for a five-minute pause, taken
    /// before the next call (by this run, and by the runs that start within it).
    ConcurPaused,
}

impl StopReason {
    /// The name in logs and metrics, the same as in the JSON summary.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Drained => "drained",
            Self::PageCap => "page_cap",
            Self::Deadline => "deadline",
            Self::ConcurError => "concur_error",
            Self::ConcurPaused => "concur_paused",
        }
    }
}

/// A run's summary as one log line: the same fields (snake_case values) whatever the
/// level.
macro_rules! log_summary {
    ($level:expr, $summary:expr, $message:literal) => {
        tracing::event!(
            $level,
            pages = $summary.pages,
            seen = $summary.seen,
            new = $summary.new,
            requeued = $summary.requeued,
            token_refreshed = $summary.token_refreshed,
            unchanged = $summary.unchanged,
            recovered = $summary.recovered,
            quarantined = $summary.quarantined,
            degraded = $summary.degraded,
            failed = $summary.failed,
            stop_reason = $summary.stop_reason.as_str(),
            error = $summary.error.as_deref().unwrap_or(""),
            duration_ms = $summary.duration_ms,
            $message
        )
    };
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One run's summary: logged, returned, and published as metrics. No personal data.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PollSummary {
    pub pages: u32,
    pub seen: u32,
    pub new: u32,
    pub requeued: u32,
    pub token_refreshed: u32,
    pub unchanged: u32,
    /// Quarantined items that now read fine.
    pub recovered: u32,
    /// Items that could not be read (set aside, not processed).
    pub quarantined: u32,
    /// Items read with an unknown `status` or unreadable `lastModified` ignored.
    pub degraded: u32,
    pub failed: u32,
    pub stop_reason: StopReason,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
}

impl PollSummary {
    fn stored(&self) -> u32 {
        self.new + self.requeued + self.token_refreshed + self.unchanged + self.recovered
    }
}

/// A run that could do nothing at all.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("no page could be read from Concur: {0}")]
    Concur(#[source] ConcurError),
    #[error("no request could be stored: {0}")]
    Store(#[source] StoreError),
}

impl From<PollError> for lambda_runtime::Diagnostic {
    fn from(error: PollError) -> Self {
        let error_type = match &error {
            PollError::Concur(_) => "ConcurUnavailable",
            PollError::Store(_) => "StoreUnavailable",
        };
        Self {
            error_type: error_type.into(),
            error_message: error.to_string(),
        }
    }
}

/// A page as fetched: its items and when its GET was sent.
/// Pages read and waiting for their writes, at most (besides the one being written).
pub const WRITE_AHEAD_PAGES: usize = 2;

struct Fetched {
    page: Page,
    fetched_at: chrono::DateTime<Utc>,
}

async fn store_page<S: RequestStore>(
    store: &S,
    fetched: Fetched,
    concurrency: usize,
) -> Vec<(String, Result<Option<PollWrite>, StoreError>)> {
    let Fetched { page, fetched_at } = fetched;
    for degraded in &page.degraded {
        warn!(
            request_id = %degraded.id,
            ignored = ?degraded.ignored,
            "request read with unreadable fields ignored"
        );
    }
    let quarantined = page.quarantined.into_iter().map(|q| async move {
        let result = store
            .record_quarantined(&q.key, q.reason, Utc::now())
            .await
            .map(|write| {
                if write == QuarantineWrite::Quarantined {
                    error!(
                        request_id = %q.key,
                        reason = q.reason,
                        "a page item cannot be read; quarantined (not processed)"
                    );
                }
                None
            });
        (q.key, result)
    });
    let stored = page.items.into_iter().map(|request| async move {
        let result = store
            .record_polled(&request, fetched_at, Utc::now())
            .await
            .map(Some);
        (request.id, result)
    });
    // `None`: a quarantine write (counted from the page).
    let mut results: Vec<(String, Result<Option<PollWrite>, StoreError>)> =
        futures::stream::iter(quarantined)
            .buffer_unordered(concurrency)
            .collect()
            .await;
    results.extend(
        futures::stream::iter(stored)
            .buffer_unordered(concurrency)
            .collect::<Vec<_>>()
            .await,
    );
    results
}

/// Drain the queue into the store until `NextPage` is null, the page cap, or
/// `deadline - margin`. Returns an error only when nothing at all could be done.
pub async fn poll<C: PendingSource, S: RequestStore>(
    concur: &C,
    store: &S,
    settings: &PollerSettings,
    deadline: Instant,
) -> Result<PollSummary, PollError> {
    let started = Instant::now();
    let stop_at = deadline
        .checked_sub(settings.deadline_margin)
        .unwrap_or(started);
    let mut summary = PollSummary::default();
    let mut offset: Option<String> = None;
    let mut stop: Option<StopReason> = None;
    let mut concur_error: Option<ConcurError> = None;
    // A NextPage naming another host: logged once per run, with the pages that did.
    let mut foreign_next_page: Option<(ForeignNextPage, u32)> = None;
    // Reading and writing run side by side: the pages read wait in a short queue for
    // their writes, so a slow page of writes does not hold the next read back, nor a
    // slow read the writes (each side paces itself on its own average, not on the
    // slower of each pair). At most WRITE_AHEAD_PAGES read pages wait.
    let (pages, mut to_write) = tokio::sync::mpsc::channel::<Fetched>(WRITE_AHEAD_PAGES);
    let read = async {
        loop {
            if stop.is_none() {
                if summary.pages >= settings.max_pages {
                    stop = Some(StopReason::PageCap);
                } else if Instant::now() >= stop_at {
                    stop = Some(StopReason::Deadline);
                }
            }
            if stop.is_some() {
                break;
            }
            let fetched_at = Utc::now();
            let fetched = concur
                .list_page(settings.page_limit, offset.as_deref(), stop_at)
                .await
                .map(|page| Fetched { page, fetched_at });
            match fetched {
                Ok(mut fetched) => {
                    summary.pages += 1;
                    summary.seen += fetched.page.items.len() as u32;
                    summary.quarantined += fetched.page.quarantined.len() as u32;
                    summary.degraded += fetched.page.degraded.len() as u32;
                    if let Some(foreign) = fetched.page.foreign_next_page.take() {
                        foreign_next_page.get_or_insert((foreign, 0)).1 += 1;
                    }
                    match fetched.page.next_offset.take() {
                        Some(next) => offset = Some(next),
                        None => stop = Some(StopReason::Drained),
                    }
                    if pages.send(fetched).await.is_err() {
                        break;
                    }
                }
                // A call cut short by the deadline is the deadline, not a Concur failure.
                Err(e)
                    if matches!(e, ConcurError::DeadlineExceeded { .. })
                        || (matches!(e, ConcurError::Timeout { .. })
                            && Instant::now() >= stop_at) =>
                {
                    stop = Some(StopReason::Deadline)
                }
                Err(e) => {
                    error!(
                        error = %e,
                        error_kind = e.kind(),
                        correlation_id = e.correlation_id().unwrap_or(""),
                        pages_done = summary.pages,
                        "Concur failed while paging; stopping this run"
                    );
                    summary.error = Some(format!("{}: {e}", e.kind()));
                    stop = Some(if e.pause().is_some() {
                        StopReason::ConcurPaused
                    } else {
                        StopReason::ConcurError
                    });
                    concur_error = Some(e);
                }
            }
        }
        // Closing the queue lets the writes finish the pages already read.
        drop(pages);
    };
    let write = async {
        let mut written = PollSummary::default();
        let mut store_error: Option<StoreError> = None;
        while let Some(fetched) = to_write.recv().await {
            for (request_id, result) in store_page(store, fetched, settings.write_concurrency).await
            {
                match result {
                    Ok(None) => {}
                    Ok(Some(PollWrite::New)) => written.new += 1,
                    Ok(Some(PollWrite::Requeued { attempt })) => {
                        info!(request_id = %request_id, attempt, "requeued request stored as a new attempt");
                        written.requeued += 1
                    }
                    Ok(Some(PollWrite::TokenRefreshed)) => written.token_refreshed += 1,
                    Ok(Some(PollWrite::Recovered)) => written.recovered += 1,
                    Ok(Some(PollWrite::Unchanged)) => written.unchanged += 1,
                    Err(e) => {
                        error!(request_id = %request_id, error = %e, "could not store a polled request");
                        written.failed += 1;
                        store_error.get_or_insert(e);
                    }
                }
            }
        }
        (written, store_error)
    };
    let ((), (written, store_error)) = tokio::join!(read, write);
    summary.new = written.new;
    summary.requeued = written.requeued;
    summary.token_refreshed = written.token_refreshed;
    summary.recovered = written.recovered;
    summary.unchanged = written.unchanged;
    summary.failed = written.failed;
    if let Some((foreign, pages)) = foreign_next_page {
        warn!(
            next_page_host = %foreign.next_page_host,
            api_host = %foreign.api_host,
            pages,
            "NextPage names another host; only its offset is used"
        );
    }
    summary.stop_reason = stop.unwrap_or_default();
    summary.duration_ms = started.elapsed().as_millis() as u64;
    if summary.pages == 0 {
        if let Some(e) = concur_error {
            return Err(PollError::Concur(e));
        }
    }
    if summary.failed > 0 && summary.stored() == 0 {
        if let Some(e) = store_error {
            return Err(PollError::Store(e));
        }
    }
    Ok(summary)
}

/// Until when Concur is left alone after it asked for a pause (held across warm
/// invocations of one execution environment).
#[derive(Debug, Default)]
pub struct ConcurPause(Mutex<Option<Instant>>);

impl ConcurPause {
    /// Leave Concur alone for `pause` from now (a longer pause already set is kept).
    pub fn start(&self, pause: Duration) {
        let until = Instant::now() + pause;
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none_or(|current| current < until) {
            *guard = Some(until);
        }
    }

    /// What is left of the pause, if one is running.
    pub fn left(&self) -> Option<Duration> {
        let guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .map(|until| until.saturating_duration_since(Instant::now()))
            .filter(|left| !left.is_zero())
    }
}

/// The poller function: its dependencies, built once per cold start.
pub struct Poller<C, S> {
    pub concur: C,
    pub store: S,
    pub settings: PollerSettings,
    pub metrics: Metrics,
    /// A pause Concur asked for (503, no answer in time), kept across warm invocations.
    pub pause: ConcurPause,
    /// The refresh-token keep-alive run after the poll (`None`: not configured).
    pub keep_alive: Option<Box<dyn KeepAliveRun>>,
}

/// Time a keep-alive needs left in the run to start: one whole refresh call and the
/// write of its rotated token (a refresh cut short by the deadline may lose its answer).
pub const KEEP_ALIVE_MIN_LEFT: Duration = Duration::from_secs(20);

/// The poller as deployed: the Concur client and the requests table.
pub type DeployedPoller = Poller<Arc<ConcurClient>, DynamoRequestStore>;

/// The keep-alive's knobs: `TOKEN_KEEPALIVE_BATCH` (members renewed per run, default
/// 25; 0 turns it off) and `TOKEN_RENEW_AFTER_DAYS`
/// (`triplink_shared::vault::renew_after_from_env`).
pub fn keep_alive_settings(env: &impl Env) -> Result<KeepAliveSettings, ConfigError> {
    let defaults = KeepAliveSettings::default();
    Ok(KeepAliveSettings {
        batch: env.parsed("TOKEN_KEEPALIVE_BATCH", defaults.batch)?,
        renew_after: triplink_shared::vault::renew_after_from_env(env)?,
        ..defaults
    })
}

/// The poller's configuration, read and checked at cold start with no network call
/// (a mistake is an init error, `triplink_shared::lambda_init`); [`PollerInit::build`]
/// fetches the client secret and completes the poller on the first invocation.
pub struct PollerInit {
    concur: ConcurSettings,
    settings: PollerSettings,
    requests_table: String,
    keep_alive: KeepAliveSettings,
    /// The connections table and KMS key, when the keep-alive runs.
    connections: Option<(String, String)>,
    namespace: String,
    aws: triplink_shared::config::SdkConfig,
}

impl PollerInit {
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let keep_alive = keep_alive_settings(env)?;
        let connections = match (env.get("CONNECTIONS_TABLE"), env.get("KMS_KEY_ID")) {
            (Some(table), Some(key)) if keep_alive.batch > 0 => Some((table, key)),
            _ => None,
        };
        Ok(Self {
            concur: ConcurSettings::for_functions(env)?,
            settings: PollerSettings::from_env(env)?,
            requests_table: env.required("REQUESTS_TABLE")?,
            keep_alive,
            connections,
            namespace: env
                .get("METRICS_NAMESPACE")
                .unwrap_or_else(|| "TripLink".into()),
            aws: triplink_shared::config::lambda_sdk_config(env)?,
        })
    }

    /// The deployed poller: fetches the client secret (Secrets Manager in the cloud).
    pub async fn build(&self, env: &impl Env) -> Result<DeployedPoller, ConfigError> {
        let dynamo = aws_sdk_dynamodb::Client::new(&self.aws);
        let concur = Arc::new(self.concur.client(&self.aws, env).await?);
        let keep_alive = self.connections.clone().map(|(table, key)| {
            Box::new(KeepAlive {
                vault: TokenVault::new(
                    dynamo.clone(),
                    table,
                    KmsEncryptor::from_sdk_config(&self.aws, key),
                )
                .with_metrics(Metrics::new(self.namespace.clone(), "vault"))
                .with_renew_after(self.keep_alive.renew_after),
                concur: concur.clone(),
                settings: self.keep_alive.clone(),
                owner: format!("keep-alive-{}", uuid_like()),
            }) as Box<dyn KeepAliveRun>
        });
        Ok(Poller {
            concur,
            store: DynamoRequestStore::new(dynamo, self.requests_table.clone())
                .with_unseen_retention_days(self.settings.unseen_retention_days),
            settings: self.settings.clone(),
            metrics: Metrics::new(self.namespace.clone(), "poller"),
            pause: ConcurPause::default(),
            keep_alive,
        })
    }
}

/// A lease owner name unique enough for one execution environment.
fn uuid_like() -> String {
    format!(
        "{:x}-{:x}",
        Utc::now().timestamp_nanos_opt().unwrap_or_default(),
        std::process::id()
    )
}

/// The Lambda deadline as a tokio instant.
pub fn deadline_from_context(deadline_epoch_ms: u64) -> Instant {
    let now_ms = Utc::now().timestamp_millis().max(0) as u64;
    Instant::now() + Duration::from_millis(deadline_epoch_ms.saturating_sub(now_ms))
}

impl<C: PendingSource, S: RequestStore + SweepStore> Poller<C, S> {
    /// One run: the sweep, then the poll; logged as summary lines and published as EMF
    /// metrics.
    pub async fn run(&self, deadline: Instant) -> Result<PollSummary, PollError> {
        let sweep = lifecycle::sweep(&self.store, Utc::now()).await;
        self.publish_sweep(&sweep);
        if let Some(left) = self.pause.left() {
            warn!(
                pause_left_s = left.as_secs(),
                "Concur asked for a pause (503 or no answer in time); not polling this run"
            );
            let summary = PollSummary {
                stop_reason: StopReason::ConcurPaused,
                ..PollSummary::default()
            };
            self.publish(&summary, 0);
            return Ok(summary);
        }
        let result = poll(&self.concur, &self.store, &self.settings, deadline).await;
        let pause = match &result {
            Ok(summary) if summary.stop_reason == StopReason::ConcurPaused => Some(CONCUR_PAUSE),
            Err(PollError::Concur(e)) => e.pause(),
            _ => None,
        };
        if let Some(pause) = pause {
            self.pause.start(pause);
        }
        match &result {
            Ok(summary) => {
                if matches!(
                    summary.stop_reason,
                    StopReason::ConcurError | StopReason::ConcurPaused
                ) || summary.failed > 0
                {
                    log_summary!(
                        tracing::Level::WARN,
                        summary,
                        "poll run finished with errors"
                    );
                } else {
                    log_summary!(tracing::Level::INFO, summary, "poll run finished");
                }
                self.publish(summary, 0);
            }
            Err(e) => {
                error!(error = %e, "poll run failed: nothing could be done");
                self.publish(&PollSummary::default(), 1);
            }
        }
        if pause.is_none() {
            self.keep_alive(deadline).await;
        }
        result
    }

    /// Renew a bounded batch of refresh tokens due for renewal, with what is left of the
    /// run (at least [`KEEP_ALIVE_MIN_LEFT`]); counts are logged and published.
    async fn keep_alive(&self, deadline: Instant) {
        let Some(keep_alive) = &self.keep_alive else {
            return;
        };
        let deadline = deadline
            .checked_sub(self.settings.deadline_margin)
            .unwrap_or(deadline);
        if deadline.saturating_duration_since(Instant::now()) < KEEP_ALIVE_MIN_LEFT {
            info!("no time left for the refresh token keep-alive this run");
            return;
        }
        let summary = keep_alive.run(deadline).await;
        if summary.due > 0 || summary.failed > 0 || summary.replaced_revoked > 0 {
            info!(
                due = summary.due,
                renewed = summary.renewed,
                expired = summary.expired,
                busy = summary.busy,
                failed = summary.failed,
                not_reached = summary.not_reached,
                replaced_revoked = summary.replaced_revoked,
                "refresh token keep-alive finished"
            );
        }
        let count = |v: u32| f64::from(v);
        self.metrics.emit(
            &[
                ("TokensRenewed", count(summary.renewed), Unit::Count),
                ("TokensExpired", count(summary.expired), Unit::Count),
                ("TokenRenewFailed", count(summary.failed), Unit::Count),
            ],
            Map::new(),
        );
    }

    fn publish_sweep(&self, sweep: &SweepSummary) {
        if sweep.due > 0 || sweep.failed > 0 {
            info!(
                due = sweep.due,
                rearmed = sweep.rearmed,
                parked = sweep.parked,
                skipped = sweep.skipped,
                failed = sweep.failed,
                past_lease = sweep.past_lease,
                "sweep finished"
            );
        }
        let count = |v: u32| f64::from(v);
        self.metrics.emit(
            &[
                ("Rearmed", count(sweep.rearmed), Unit::Count),
                ("Parked", count(sweep.parked), Unit::Count),
                ("SweepFailed", count(sweep.failed), Unit::Count),
                // Alarm `stuck-past-lease`: a worker invocation died holding these.
                ("StuckPastLease", count(sweep.past_lease), Unit::Count),
            ],
            Map::new(),
        );
    }

    fn publish(&self, summary: &PollSummary, failed_runs: u32) {
        let mut properties = Map::new();
        properties.insert("stop_reason".into(), summary.stop_reason.as_str().into());
        let count = |v: u32| f64::from(v);
        self.metrics.emit(
            &[
                ("Polled", count(summary.seen), Unit::Count),
                ("New", count(summary.new), Unit::Count),
                ("Requeued", count(summary.requeued), Unit::Count),
                ("Quarantined", count(summary.quarantined), Unit::Count),
                ("Degraded", count(summary.degraded), Unit::Count),
                (
                    "Unchanged",
                    count(summary.unchanged + summary.token_refreshed),
                    Unit::Count,
                ),
                ("StoreFailed", count(summary.failed), Unit::Count),
                ("PollFailed", count(failed_runs), Unit::Count),
                ("Pages", count(summary.pages), Unit::Count),
                (
                    "PollDurationMs",
                    summary.duration_ms as f64,
                    Unit::Milliseconds,
                ),
            ],
            properties,
        );
    }

    /// The Lambda handler: a scheduled EventBridge event in, the run's summary out.
    pub async fn handle(
        &self,
        event: LambdaEvent<EventBridgeEvent<Value>>,
    ) -> Result<PollSummary, PollError> {
        let deadline = deadline_from_context(event.context.deadline);
        self.run(deadline).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn settings_have_defaults_and_checks() {
        let empty: HashMap<String, String> = HashMap::new();
        assert_eq!(
            PollerSettings::from_env(&empty).unwrap(),
            PollerSettings::default()
        );
        for (key, value) in [
            ("POLL_PAGE_LIMIT", "11"),
            ("POLL_PAGE_LIMIT", "0"),
            ("POLL_MAX_PAGES", "0"),
            ("POLL_DEADLINE_MARGIN_MS", "-5"),
            ("POLL_WRITE_CONCURRENCY", "many"),
        ] {
            let env = HashMap::from([(key.to_string(), value.to_string())]);
            let err = PollerSettings::from_env(&env).unwrap_err().to_string();
            assert!(err.contains(key), "{key}={value}: {err}");
        }
    }

    #[test]
    fn stop_reasons_read_the_same_in_logs_and_in_the_summary() {
        for reason in [
            StopReason::Drained,
            StopReason::PageCap,
            StopReason::Deadline,
            StopReason::ConcurError,
            StopReason::ConcurPaused,
        ] {
            assert_eq!(
                serde_json::to_value(reason).unwrap(),
                serde_json::Value::from(reason.as_str())
            );
        }
    }

    #[test]
    fn the_deadline_comes_from_the_context() {
        let in_ten_s = Utc::now().timestamp_millis() as u64 + 10_000;
        let deadline = deadline_from_context(in_ten_s);
        let left = deadline - Instant::now();
        assert!(
            left > Duration::from_secs(9) && left <= Duration::from_secs(10),
            "{left:?}"
        );
        assert!(deadline_from_context(0) <= Instant::now());
    }
}
