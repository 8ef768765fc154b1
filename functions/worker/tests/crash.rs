//! The crash-point matrix: the worker is stopped dead at each step of an attempt (its
//! future dropped, as SIGKILL or a Lambda timeout would: nothing after that line runs),
//! then Lambda's real behaviour follows: the batch is retried at once by a new
//! invocation, then later invocations get what the poller's sweep re-arms once the dead
//! invocation's lease has expired. Every run ends with the audit, through the sandbox's
//! own history: one status per attempt, no refused PUT, no request token submitted
//! twice, every seeded request reported with its expected status, nothing left in the
//! table that is not `reported`.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use common::*;
use secrecy::SecretString;
use tokio::sync::Notify;
use tokio::time::Instant;
use triplink_shared::concur::{ConcurError, UserTokens};
use triplink_shared::model::{ConnectionRequest, ConnectionStatus};
use triplink_shared::store::layout::{RequestItem, RequestState};
use triplink_shared::store::lifecycle::{self, ParkReason};
use triplink_shared::store::{Claim, Decision, Lease, ReportResult, StoreError, WorkStore};
use triplink_shared::testing;
use triplink_shared::vault::VaultError;
use worker::{ConcurPort, ConnectionSink, Worker};

/// Where the worker dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Point {
    AfterClaim,
    AfterExchangeRecorded,
    AfterTokenExchange,
    AfterVaultWrite,
    AfterDecisionRecorded,
    AfterPutCounted,
    AfterPutAcknowledged,
    BeforeBatchResponse,
}

/// Stops the worker dead the first time it passes `point`.
struct Crash {
    point: Point,
    armed: AtomicBool,
    hit: Notify,
}

impl Crash {
    fn new(point: Point) -> Arc<Self> {
        Arc::new(Self {
            point,
            armed: AtomicBool::new(true),
            hit: Notify::new(),
        })
    }

    /// After the step `at` completed: die here if this is the point.
    async fn after(&self, at: Point) {
        if self.point == at && self.armed.swap(false, Ordering::SeqCst) {
            self.hit.notify_one();
            std::future::pending::<()>().await;
        }
    }

    fn happened(&self) -> bool {
        !self.armed.load(Ordering::SeqCst)
    }
}

struct CrashStore<'a> {
    inner: &'a triplink_shared::store::DynamoRequestStore,
    crash: Arc<Crash>,
}

impl WorkStore for CrashStore<'_> {
    async fn claim(
        &self,
        id: &str,
        attempt: u32,
        owner: &str,
        lease_until_ms: i64,
        now: DateTime<Utc>,
    ) -> Result<Claim, StoreError> {
        let claim = self
            .inner
            .claim(id, attempt, owner, lease_until_ms, now)
            .await?;
        if matches!(claim, Claim::Claimed(_)) {
            self.crash.after(Point::AfterClaim).await;
        }
        Ok(claim)
    }
    async fn record_exchange_started(
        &self,
        lease: Lease<'_>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let done = self.inner.record_exchange_started(lease, now).await?;
        self.crash.after(Point::AfterExchangeRecorded).await;
        Ok(done)
    }
    async fn record_fresh_token(
        &self,
        lease: Lease<'_>,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.inner.record_fresh_token(lease, token, now).await
    }
    async fn record_decision(
        &self,
        lease: Lease<'_>,
        decision: &Decision,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let done = self.inner.record_decision(lease, decision, now).await?;
        self.crash.after(Point::AfterDecisionRecorded).await;
        Ok(done)
    }
    async fn record_put_sent(
        &self,
        lease: Lease<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<u32>, StoreError> {
        let sent = self.inner.record_put_sent(lease, now).await?;
        self.crash.after(Point::AfterPutCounted).await;
        Ok(sent)
    }
    async fn record_decision_and_put_sent(
        &self,
        lease: Lease<'_>,
        decision: &Decision,
        now: DateTime<Utc>,
    ) -> Result<Option<u32>, StoreError> {
        // One write leaves the attempt decided with its PUT counted: dying "after the
        // decision" and "after the count" are the same state on this path.
        let sent = self
            .inner
            .record_decision_and_put_sent(lease, decision, now)
            .await?;
        self.crash.after(Point::AfterDecisionRecorded).await;
        self.crash.after(Point::AfterPutCounted).await;
        Ok(sent)
    }
    async fn record_reported(
        &self,
        lease: Lease<'_>,
        decided: &RequestItem,
        result: ReportResult,
        now: DateTime<Utc>,
        retention_days: i64,
    ) -> Result<bool, StoreError> {
        self.inner
            .record_reported(lease, decided, result, now, retention_days)
            .await
    }
    async fn release(
        &self,
        lease: Lease<'_>,
        due_at_ms: i64,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.inner.release(lease, due_at_ms, now).await
    }
    async fn park(
        &self,
        lease: Lease<'_>,
        reason: ParkReason,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        WorkStore::park(self.inner, lease, reason, now).await
    }
    async fn record_dry_run(
        &self,
        lease: Lease<'_>,
        decision: &Decision,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.inner.record_dry_run(lease, decision, now).await
    }
}

struct CrashConcur<'a> {
    inner: &'a triplink_shared::concur::ConcurClient,
    crash: Arc<Crash>,
}

impl ConcurPort for CrashConcur<'_> {
    async fn exchange(
        &self,
        user_id: &str,
        token: &SecretString,
        deadline: Instant,
    ) -> Result<UserTokens, ConcurError> {
        let tokens = self.inner.exchange(user_id, token, deadline).await?;
        self.crash.after(Point::AfterTokenExchange).await;
        Ok(tokens)
    }
    async fn report(
        &self,
        id: &str,
        status: ConnectionStatus,
        deadline: Instant,
    ) -> Result<(), ConcurError> {
        self.inner.report(id, status, deadline).await?;
        self.crash.after(Point::AfterPutAcknowledged).await;
        Ok(())
    }
    async fn fetch_request(
        &self,
        id: &str,
        deadline: Instant,
    ) -> Result<ConnectionRequest, ConcurError> {
        self.inner.fetch_request(id, deadline).await
    }
}

struct CrashVault<'a> {
    inner: &'a triplink_shared::vault::TokenVault<triplink_shared::vault::KmsEncryptor>,
    crash: Arc<Crash>,
}

impl ConnectionSink for CrashVault<'_> {
    async fn store_connection(
        &self,
        member_id: &str,
        request_id: &str,
        tokens: &UserTokens,
        now: DateTime<Utc>,
    ) -> Result<(), VaultError> {
        self.inner
            .store_connection(member_id, request_id, tokens, now)
            .await?;
        self.crash.after(Point::AfterVaultWrite).await;
        Ok(())
    }
    async fn connected_since(
        &self,
        member_id: &str,
        request_id: &str,
        since: DateTime<Utc>,
    ) -> Result<bool, VaultError> {
        self.inner
            .connected_since(member_id, request_id, since)
            .await
    }
}

/// The table's `received` items as the stream would deliver them now.
fn received(items: &[RequestItem]) -> Vec<RequestItem> {
    items
        .iter()
        .filter(|i| i.state == RequestState::Received)
        .cloned()
        .collect()
}

async fn run_with_a_crash_at(point: Point) {
    let env = setup(12).await;
    let crash = Crash::new(point);
    let dying = Worker {
        concur: CrashConcur {
            inner: &env.concur,
            crash: crash.clone(),
        },
        directory: &env.members,
        store: CrashStore {
            inner: &env.store,
            crash: crash.clone(),
        },
        vault: CrashVault {
            inner: &env.vault,
            crash: crash.clone(),
        },
        settings: settings(),
        metrics: triplink_shared::telemetry::Metrics::disabled("worker"),
        safety: Default::default(),
    };
    let batch = records(&testing::scan_requests(&env.store).await);
    // Invocation 1 has 5 s left: its leases end 2 s after that.
    let deadline_1 = Utc::now().timestamp_millis() + 5_000;
    let mut sequence = 1_000;
    if point == Point::BeforeBatchResponse {
        let response = dying.process_batch(&batch, "inv-1", deadline_1).await;
        assert!(response.batch_item_failures.is_empty());
        // ... and the process dies before Lambda gets the response.
    } else {
        tokio::select! {
            _ = crash.hit.notified() => {}
            _ = dying.process_batch(&batch, "inv-1", deadline_1) => {}
        }
        assert!(crash.happened(), "{point:?} was never reached");
    }
    drop(dying);

    // Lambda retries the whole batch at once, in a new execution environment.
    let alive = worker(&env, &env.concur, &env.members);
    let retry = alive
        .process_batch(&batch, "inv-2", lambda_deadline_ms())
        .await;
    assert!(
        retry.batch_item_failures.is_empty(),
        "{point:?}: a dead holder's lease is not a reason to fail the batch (it would end in the DLQ)"
    );

    // Later invocations: the poller's sweep re-arms what the dead invocation left once
    // its lease has expired, and the stream delivers the re-armed items.
    tokio::time::sleep(std::time::Duration::from_millis(
        (deadline_1 + 2_100 - Utc::now().timestamp_millis()).max(0) as u64,
    ))
    .await;
    let mut past_lease = 0;
    for round in 0..5 {
        let sweep = lifecycle::sweep(&env.store, Utc::now() + chrono::Duration::minutes(6)).await;
        assert_eq!(sweep.failed, 0, "{point:?}: {sweep:?}");
        assert!(
            sweep.past_lease <= sweep.rearmed + sweep.parked,
            "{sweep:?}"
        );
        past_lease += sweep.past_lease;
        let ready = received(&testing::scan_requests(&env.store).await);
        if ready.is_empty() {
            break;
        }
        assert!(round < 4, "{point:?}: still not finished: {ready:?}");
        let deliveries: Vec<_> = ready
            .iter()
            .map(|item| {
                sequence += 1;
                record(item, "MODIFY", sequence)
            })
            .collect();
        let later = alive
            .process_batch(
                &deliveries,
                &format!("inv-{}", 3 + round),
                lambda_deadline_ms(),
            )
            .await;
        assert!(later.batch_item_failures.is_empty(), "{point:?}");
    }
    // The dead invocation's held request is what the `stuck-past-lease` alarm counts
    // (the other requests of the table were only due, never held).
    if point == Point::BeforeBatchResponse {
        assert_eq!(past_lease, 0, "{point:?}: nothing was left held");
    } else {
        assert!(
            past_lease >= 1,
            "{point:?}: the held request was not counted"
        );
    }

    let audit = audit(&env).await;
    println!("{point:?}: {audit:?}");
    // (A grant cut off by the crash may have succeeded at Concur; such a request is
    // connected with a fresh token, so `extra_exchanges` may list it. Never with the
    // same token: `token_reused` is empty.)
    audit.assert_clean();
    // Every connected member is in the vault exactly once.
    let connected = testing::scan_requests(&env.store)
        .await
        .iter()
        .filter(|i| i.history.last().map(|h| h.status) == Some(ConnectionStatus::Connected))
        .count();
    assert_eq!(env.vault_count().await, connected, "{point:?}");
}

#[tokio::test]
async fn crash_after_claim() {
    run_with_a_crash_at(Point::AfterClaim).await;
}

#[tokio::test]
async fn crash_after_the_exchange_start_is_recorded() {
    run_with_a_crash_at(Point::AfterExchangeRecorded).await;
}

#[tokio::test]
async fn crash_after_the_token_exchange() {
    run_with_a_crash_at(Point::AfterTokenExchange).await;
}

#[tokio::test]
async fn crash_after_the_vault_write() {
    run_with_a_crash_at(Point::AfterVaultWrite).await;
}

#[tokio::test]
async fn crash_after_the_decision_is_recorded() {
    run_with_a_crash_at(Point::AfterDecisionRecorded).await;
}

#[tokio::test]
async fn crash_after_the_put_is_counted_before_it_is_sent() {
    run_with_a_crash_at(Point::AfterPutCounted).await;
}

#[tokio::test]
async fn crash_after_concur_acknowledged_the_put() {
    run_with_a_crash_at(Point::AfterPutAcknowledged).await;
}

#[tokio::test]
async fn crash_before_the_batch_response() {
    run_with_a_crash_at(Point::BeforeBatchResponse).await;
}
