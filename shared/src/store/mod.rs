//! The requests store: where connection requests wait between the poller and the worker.
//!
//! [`RequestStore`] (the poller), [`WorkStore`] (the worker) and
//! [`lifecycle::SweepStore`] (the sweep) are the small traits the functions are generic
//! over; [`dynamo`] is the DynamoDB implementation; [`layout`] owns the table layout;
//! [`lifecycle`] owns the request life cycle; [`tables`] creates tables for local runs and
//! tests.

pub mod dynamo;
pub mod image;
pub mod layout;
pub mod lifecycle;
pub mod tables;

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::model::ConnectionRequest;
pub use dynamo::DynamoRequestStore;
pub use layout::{AttemptRecord, RequestItem, RequestState};
pub use lifecycle::{plan_poll_write, PollPlan, ReportResult};

/// What recording one polled request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "write")]
pub enum PollWrite {
    /// First time seen: stored as attempt 1, `received`.
    New,
    /// Re-offered by Concur after its last attempt was reported: a new attempt.
    Requeued { attempt: u32 },
    /// Still being worked on: only the request token changed.
    TokenRefreshed,
    /// A quarantined request that now reads fine: stored as `received`.
    Recovered,
    /// Nothing new (including a page requested before our report landed).
    Unchanged,
}

/// What recording an unreadable page item did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuarantineWrite {
    /// Recorded as quarantined (first time, or again after it expired).
    Quarantined,
    /// Already quarantined, or stored as a readable request: nothing written.
    Known,
}

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("DynamoDB {op} failed: {message}")]
    Backend {
        op: &'static str,
        message: String,
        transient: bool,
    },
    #[error("stored item {id} cannot be read: {message}")]
    Corrupt { id: String, message: String },
    #[error("request {id}: gave up after {tries} conflicting concurrent writes")]
    Contention { id: String, tries: u32 },
}

impl StoreError {
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Backend { transient, .. } => *transient,
            Self::Contention { .. } => true,
            Self::Corrupt { .. } => false,
        }
    }
}

/// The requests table as the functions see it.
pub trait RequestStore: Send + Sync {
    /// Record a request read from Concur's queue so that reading it again never
    /// duplicates it (see [`plan_poll_write`]); `fetched_at` is when the page's GET was
    /// sent. Safe under concurrent pollers and workers.
    fn record_polled(
        &self,
        request: &ConnectionRequest,
        fetched_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<PollWrite, StoreError>> + Send;

    /// Record a page item that could not be read (see [`RequestItem::quarantined`]),
    /// unless that id is already stored.
    fn record_quarantined(
        &self,
        id: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<QuarantineWrite, StoreError>> + Send;

    /// One item, read consistently.
    fn get(&self, id: &str)
        -> impl Future<Output = Result<Option<RequestItem>, StoreError>> + Send;
}

/// What a worker's claim on one attempt found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// This worker now holds the attempt (`working`, under its lease): decide it.
    Claimed(RequestItem),
    /// This worker now holds an attempt whose status was decided earlier but not
    /// acknowledged (`decided`, under its lease): send the same status.
    Decided(RequestItem),
    /// Another worker holds a live lease on this attempt.
    Busy { lease_until: i64 },
    /// This attempt was reported already: nothing to do.
    Done,
    /// The item has moved on to a later attempt, is gone, parked or quarantined: this
    /// record is stale.
    Stale,
}

/// A decision to record before the status is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub status: crate::model::ConnectionStatus,
    /// Why (no personal data): `matched`, `not_found`, `directory_unavailable`, ...
    pub reason: String,
}

/// One worker's hold on one attempt: every write below is fenced by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease<'a> {
    pub id: &'a str,
    pub attempt: u32,
    pub owner: &'a str,
}

/// The requests table as the worker sees it. Every write is conditional on the attempt
/// and the lease owner (see [`lifecycle`]), so a stale or duplicated record can never
/// overwrite a later one, and no attempt ever gets two different statuses.
pub trait WorkStore: Send + Sync {
    /// Take the lease on attempt `attempt` until `lease_until_ms` (epoch ms): from
    /// `received`, or from `working`/`decided` whose lease expired.
    fn claim(
        &self,
        id: &str,
        attempt: u32,
        owner: &str,
        lease_until_ms: i64,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send;

    /// Record that a request token of this attempt is being submitted to the grant (the
    /// poller may store a newer one meanwhile: the mark stays until the worker stores a
    /// fresh token it read itself). `Ok(false)`: the lease was lost; nothing was written.
    fn record_exchange_started(
        &self,
        lease: Lease<'_>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Store a fresh request token read from Concur (clears `exchange_started_at`).
    fn record_fresh_token(
        &self,
        lease: Lease<'_>,
        token: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Record the decided status (`working` → `decided`, once per attempt) while the
    /// lease is held. `Ok(false)`: the lease was lost, nothing was written.
    fn record_decision(
        &self,
        lease: Lease<'_>,
        decision: &Decision,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Count a PUT about to be sent. `Ok(Some(n))`: `n` PUTs were sent before this one;
    /// `Ok(None)`: the lease was lost (send nothing).
    fn record_put_sent(
        &self,
        lease: Lease<'_>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<u32>, StoreError>> + Send;

    /// [`WorkStore::record_decision`] and [`WorkStore::record_put_sent`] in one write, for a
    /// decision sent at once: the PUTs counted before (`None`: the lease is not ours).
    fn record_decision_and_put_sent(
        &self,
        lease: Lease<'_>,
        decision: &Decision,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<u32>, StoreError>> + Send;

    /// Concur answered the PUT: `decided` → `reported`, history appended, personal data
    /// and token removed, TTL set. `decided` is the attempt as the lease holder holds it
    /// (its decision, when and why): the history is written from it without a read,
    /// fenced on the stored status being the same. `Ok(false)`: the lease was lost or it
    /// was reported.
    fn record_reported(
        &self,
        lease: Lease<'_>,
        decided: &RequestItem,
        result: ReportResult,
        now: DateTime<Utc>,
        retention_days: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Give the lease up after a failure the process survived: the lease ends now and
    /// the sweep re-arms the item once `due_at_ms` has passed. The state (and any
    /// decision) is kept.
    fn release(
        &self,
        lease: Lease<'_>,
        due_at_ms: i64,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Leave the attempt to an operator: lease and `due_at` removed, `parked_at` set.
    fn park(
        &self,
        lease: Lease<'_>,
        reason: lifecycle::ParkReason,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Dry-run mode: record the decision the worker would send (`dry_run_status`,
    /// `dry_run_reason`) and park the attempt with reason `dry_run`, in one write. The
    /// state stays `working`, so nothing is ever sent from it. `Ok(false)`: lease lost.
    fn record_dry_run(
        &self,
        lease: Lease<'_>,
        decision: &Decision,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

impl<T: RequestStore> RequestStore for &T {
    fn record_polled(
        &self,
        request: &ConnectionRequest,
        fetched_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<PollWrite, StoreError>> + Send {
        T::record_polled(self, request, fetched_at, now)
    }
    fn record_quarantined(
        &self,
        id: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<QuarantineWrite, StoreError>> + Send {
        T::record_quarantined(self, id, reason, now)
    }
    fn get(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<RequestItem>, StoreError>> + Send {
        T::get(self, id)
    }
}

impl<T: WorkStore> WorkStore for &T {
    fn claim(
        &self,
        id: &str,
        attempt: u32,
        owner: &str,
        lease_until_ms: i64,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send {
        T::claim(self, id, attempt, owner, lease_until_ms, now)
    }
    fn record_exchange_started(
        &self,
        lease: Lease<'_>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        T::record_exchange_started(self, lease, now)
    }
    fn record_fresh_token(
        &self,
        lease: Lease<'_>,
        token: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        T::record_fresh_token(self, lease, token, now)
    }
    fn record_decision(
        &self,
        lease: Lease<'_>,
        decision: &Decision,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        T::record_decision(self, lease, decision, now)
    }
    fn record_put_sent(
        &self,
        lease: Lease<'_>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<u32>, StoreError>> + Send {
        T::record_put_sent(self, lease, now)
    }
    fn record_decision_and_put_sent(
        &self,
        lease: Lease<'_>,
        decision: &Decision,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<u32>, StoreError>> + Send {
        T::record_decision_and_put_sent(self, lease, decision, now)
    }
    fn record_reported(
        &self,
        lease: Lease<'_>,
        decided: &RequestItem,
        result: ReportResult,
        now: DateTime<Utc>,
        retention_days: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        T::record_reported(self, lease, decided, result, now, retention_days)
    }
    fn release(
        &self,
        lease: Lease<'_>,
        due_at_ms: i64,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        T::release(self, lease, due_at_ms, now)
    }
    fn park(
        &self,
        lease: Lease<'_>,
        reason: lifecycle::ParkReason,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        T::park(self, lease, reason, now)
    }
    fn record_dry_run(
        &self,
        lease: Lease<'_>,
        decision: &Decision,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        T::record_dry_run(self, lease, decision, now)
    }
}
