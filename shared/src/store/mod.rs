//! The requests store: where connection requests wait between the poller and the worker.
//!
//! [`RequestStore`] is the small trait the functions are generic over; [`dynamo`] is the
//! DynamoDB implementation; [`layout`] owns the table layout; [`tables`] creates tables
//! for local runs and tests.

pub mod dynamo;
pub mod layout;
pub mod tables;

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::model::ConnectionRequest;
pub use dynamo::DynamoRequestStore;
pub use layout::{AttemptRecord, RequestItem, RequestState};

/// What recording one polled request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "write")]
pub enum PollWrite {
    /// First time seen: stored as attempt 1, `received`.
    New,
    /// Seen again after its last attempt was reported: a new attempt, back to `received`.
    Requeued { attempt: u32 },
    /// Still being worked on: only the request token changed.
    TokenRefreshed,
    /// Still being worked on, same token: nothing written.
    Unchanged,
}

/// What to do with a polled request whose id is already stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollPlan {
    /// The last attempt was reported to Concur: this is a requeue, attempt `n + 1`.
    Requeue,
    /// The attempt is still in progress and Concur issued another token: store it.
    RefreshToken,
    /// Nothing new.
    Unchanged,
}

/// The rule for a request read again from Concur's queue (the one place it is decided).
/// A requeued request comes back with the same `ID` and a new token: it is a new
/// attempt once the previous attempt was reported; before that it is the same attempt.
pub fn plan_poll_write(existing: &RequestItem, polled: &ConnectionRequest) -> PollPlan {
    if existing.state == RequestState::Reported {
        return PollPlan::Requeue;
    }
    match polled.request_token_secret() {
        Some(token) if existing.request_token.as_deref() != Some(token) => PollPlan::RefreshToken,
        _ => PollPlan::Unchanged,
    }
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
    /// duplicates it (see [`plan_poll_write`]). Safe under concurrent pollers.
    fn record_polled(
        &self,
        request: &ConnectionRequest,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<PollWrite, StoreError>> + Send;

    /// One item, read consistently.
    fn get(&self, id: &str)
        -> impl Future<Output = Result<Option<RequestItem>, StoreError>> + Send;
}

/// What a worker's claim on one attempt found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// This worker now holds the attempt (`working`, under its lease).
    Claimed(RequestItem),
    /// The status was decided but Concur has not acknowledged it: send the same status.
    Decided(RequestItem),
    /// Another worker holds a live lease on this attempt.
    Busy { lease_until: i64 },
    /// This attempt was reported already: nothing to do.
    Done,
    /// The item has moved on to a later attempt, or is gone: this record is stale.
    Stale,
}

/// A decision to record before the status is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub status: crate::model::ConnectionStatus,
    /// Why (no personal data): `matched`, `not_found`, `directory_unavailable`, ...
    pub reason: String,
}

/// The requests table as the worker sees it. Every write is conditional on the attempt
/// (and the state it moves from), so a stale or duplicated record can never overwrite a
/// later one, and no attempt ever gets two different statuses.
pub trait WorkStore: Send + Sync {
    /// Move attempt `attempt` from `received` (or `working` with an expired lease) to
    /// `working` under `owner`'s lease until `lease_until_ms` (epoch ms).
    fn claim(
        &self,
        id: &str,
        attempt: u32,
        owner: &str,
        lease_until_ms: i64,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send;

    /// Record the decided status (`working` → `decided`) while `owner` holds the lease.
    /// `Ok(false)`: the lease was lost, nothing was written.
    fn record_decision(
        &self,
        id: &str,
        attempt: u32,
        owner: &str,
        decision: &Decision,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Concur acknowledged the status: `decided` → `reported`, history appended, personal
    /// data and token removed, TTL set. `Ok(false)`: already reported (a retry).
    fn record_reported(
        &self,
        id: &str,
        attempt: u32,
        now: DateTime<Utc>,
        retention_days: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Operator re-drive: send a stuck `working` attempt back to `received` (conditional
    /// on the attempt), so the worker takes it again. A `decided` attempt is never sent
    /// back (that could give it a second status): its decided status is re-sent instead.
    /// `Ok(false)`: nothing to re-drive.
    fn redrive(
        &self,
        id: &str,
        attempt: u32,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

impl<T: RequestStore> RequestStore for &T {
    fn record_polled(
        &self,
        request: &ConnectionRequest,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<PollWrite, StoreError>> + Send {
        T::record_polled(self, request, now)
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
    fn record_decision(
        &self,
        id: &str,
        attempt: u32,
        owner: &str,
        decision: &Decision,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        T::record_decision(self, id, attempt, owner, decision, now)
    }
    fn record_reported(
        &self,
        id: &str,
        attempt: u32,
        now: DateTime<Utc>,
        retention_days: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        T::record_reported(self, id, attempt, now, retention_days)
    }
    fn redrive(
        &self,
        id: &str,
        attempt: u32,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        T::redrive(self, id, attempt, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::json;

    fn polled(token: &str) -> ConnectionRequest {
        ConnectionRequest::from_wire(
            json::parse_request(&format!(r#"{{"ID":"r1","requestToken":"{token}"}}"#)).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn the_poll_rule() {
        let mut item = RequestItem::received(&polled("t1"), Utc::now());
        for state in [
            RequestState::Received,
            RequestState::Working,
            RequestState::Decided,
        ] {
            item.state = state;
            assert_eq!(
                plan_poll_write(&item, &polled("t1")),
                PollPlan::Unchanged,
                "{state:?}"
            );
            assert_eq!(
                plan_poll_write(&item, &polled("t2")),
                PollPlan::RefreshToken,
                "{state:?}"
            );
        }
        item.state = RequestState::Reported;
        item.request_token = None;
        assert_eq!(plan_poll_write(&item, &polled("t1")), PollPlan::Requeue);
    }
}
