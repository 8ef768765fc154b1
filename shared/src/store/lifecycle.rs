//! The request life cycle: the one place that states what a requests-table item may be,
//! which move is allowed from where, and when an item is re-driven. The poller, the
//! worker and the operator tool call these rules and the store's conditional writes
//! built on them; none of them holds life-cycle logic of its own.
//!
//! ```text
//!            poll (new)                 claim (lease)             record_decision
//!  Concur ─────────────▶ received ───────────────────▶ working ──────────────────▶ decided
//!                          ▲   ▲                          │  ▲                        │  ▲
//!                          │   │ re-arm (sweep):          │  │ claim after             │  │ claim after re-arm
//!                          │   │ due_at passed,           │  │ lease expiry            │  │ (the decision is kept)
//!                          │   └──── redrives < max ──────┘  │                         │  │
//!                          │                                                           │  │
//!                          │          re-arm keeping the decision: received + decided_status
//!                          │                                                           │
//!                          │  poll after our report                         PUT 204 / 404
//!                          │  (requeue: attempt n + 1)                                 ▼
//!                          └──────────────────────────────────────────────────── reported
//!
//!  a page item that cannot be read ─▶ quarantined ─(read fine later)─▶ received
//!  redrives == max, or a decision too old to re-send ─▶ parked (same state, out of the sweep, alarm)
//! ```
//!
//! ## Invariants
//! 1. **One status per attempt.** A decision is written once per attempt
//!    (`attribute_not_exists(decided_status)`), is never changed or cleared before the
//!    attempt is reported, and only the lease holder of an attempt with a recorded
//!    decision sends it. A re-arm of a decided attempt keeps its decision, so a re-send
//!    is always the same status.
//! 2. **One live lease.** A lease ends [`LEASE_SKEW`] after its holder's invocation
//!    deadline ([`lease_until`]): Lambda stops a function at its deadline, so an expired
//!    lease has no living holder. Every write of a holder is fenced by `lease_owner`.
//! 3. **Nothing stuck.** Every item that is not `reported` or `quarantined` carries
//!    `due_at` (epoch ms), or is parked. [`sweep`] (run by the poller) re-arms every item
//!    whose `due_at` passed, so the table's stream delivers it again, at most
//!    [`MAX_REDRIVES`] times per attempt; beyond that the item is parked and counted (an
//!    alarm). A holder that fails and survives releases its lease at once with a backoff
//!    ([`release_backoff`]) instead of waiting for its deadline.
//! 4. **A requeue is a fact.** The poller starts attempt `n + 1` only when the page that
//!    shows the request was *requested after* attempt `n` was recorded reported
//!    ([`plan_poll_write`]): a page fetched before our PUT popped the request is a stale
//!    view, whatever time its write lands.
//! 5. **A request token is submitted once.** `exchange_started_at` is recorded before the
//!    grant is called and cleared only when a different token is stored; a claimer that
//!    finds it set never submits that token again ([`exchange_plan`]).
//! 6. **Quarantined items hold no personal data** and expire with the retention TTL.

use chrono::{DateTime, Duration, Utc};

use super::layout::{RequestItem, RequestState};
use crate::model::ConnectionRequest;

/// How long after its holder's deadline a lease still counts (clock skew between hosts).
pub const LEASE_SKEW: Duration = Duration::seconds(2);

/// Automatic re-arms of one attempt before it is parked for an operator.
pub const MAX_REDRIVES: u32 = 8;

/// A `received` item not claimed within this time is re-armed (its stream record may
/// have been dropped, dead-lettered or filtered).
pub const RECEIVED_GRACE: Duration = Duration::minutes(5);

/// A decided status is re-sent only this long after it was decided. Concur requeues a
/// popped request after one hour at the earliest (`CRRET`), so within this window a
/// request still listed is the same attempt; beyond it an unacknowledged decision is
/// parked for an operator rather than sent to what may be a later attempt.
pub const RESEND_WINDOW: Duration = Duration::minutes(45);

/// Items the sweep re-arms at most per run (the rest wait for the next run).
pub const SWEEP_LIMIT: usize = 200;

/// The lease of a claim made by an invocation that must end by `deadline`.
pub fn lease_until(deadline: DateTime<Utc>) -> i64 {
    (deadline + LEASE_SKEW).timestamp_millis()
}

/// When a holder that failed and released its lease should be re-armed: `base` doubled
/// with each re-drive (30 s, 1 min, 2 min, ... by default), capped at 10 min, and at
/// least `at_least` (e.g. the five minutes Concur asks for after a 503).
pub fn release_backoff(redrives: u32, base: Duration, at_least: Duration) -> Duration {
    let doubled = base * 2i32.saturating_pow(redrives.min(5));
    doubled.min(Duration::minutes(10)).max(at_least)
}

/// `due_at` of an item newly `received` at `now`.
pub fn received_due(now: DateTime<Utc>) -> i64 {
    (now + RECEIVED_GRACE).timestamp_millis()
}

/// What to do with a polled request whose id is already stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollPlan {
    /// Attempt `n` was reported before the page was requested: Concur re-offered it,
    /// this is attempt `n + 1`.
    Requeue,
    /// The attempt is still in progress and Concur issued another token: store it.
    RefreshToken,
    /// A quarantined request now reads fine: store it as received.
    Recover,
    /// Nothing new (including a page requested before our report landed).
    Unchanged,
}

/// The rule for a request read again from Concur's queue (invariant 4).
///
/// `fetched_at` is when the GET of the page was sent (before any retry): Concur served
/// the page at or after it. If that is after attempt `n` was recorded reported (which
/// happens after Concur acknowledged the PUT), Concur's answer reflects the pop, and a
/// request still listed was requeued. Otherwise the page may predate the pop.
pub fn plan_poll_write(
    existing: &RequestItem,
    polled: &ConnectionRequest,
    fetched_at: DateTime<Utc>,
) -> PollPlan {
    match existing.state {
        RequestState::Reported => {
            let reported_at = existing
                .reported_at
                .as_deref()
                .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
                .map(|at| at.with_timezone(&Utc));
            match reported_at {
                Some(reported_at) if fetched_at > reported_at => PollPlan::Requeue,
                _ => PollPlan::Unchanged,
            }
        }
        RequestState::Quarantined => PollPlan::Recover,
        RequestState::Received | RequestState::Working | RequestState::Decided => {
            match polled.request_token_secret() {
                Some(token) if existing.request_token.as_deref() != Some(token) => {
                    PollPlan::RefreshToken
                }
                _ => PollPlan::Unchanged,
            }
        }
    }
}

/// Should a poll that found `existing` unchanged move its TTL backstop on to `backstop`
/// (epoch s)? Only for an unfinished attempt, and only when it would move by more than a
/// day (one write per item per day, not one per poll).
pub fn backstop_due(existing: &RequestItem, backstop: i64) -> bool {
    let unfinished = matches!(
        existing.state,
        RequestState::Received | RequestState::Working | RequestState::Decided
    );
    unfinished && existing.expires_at.is_none_or(|at| at < backstop - 86_400)
}

/// What a claimer of a matched request does about the request token (invariant 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangePlan {
    /// The stored token was never submitted: record the start, then exchange it.
    Exchange,
    /// It was submitted by an earlier holder that did not finish. If the vault holds a
    /// connection made from this request since then, the exchange succeeded; otherwise
    /// a fresh token must be read from Concur before any exchange.
    AlreadySubmitted { since: DateTime<Utc> },
}

pub fn exchange_plan(item: &RequestItem) -> ExchangePlan {
    match item
        .exchange_started_at
        .as_deref()
        .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
    {
        Some(since) => ExchangePlan::AlreadySubmitted {
            since: since.with_timezone(&Utc),
        },
        None => ExchangePlan::Exchange,
    }
}

/// May a decided status still be sent for this item (invariant 1 and [`RESEND_WINDOW`])?
pub fn may_send_decision(item: &RequestItem, now: DateTime<Utc>) -> bool {
    let decided_at = item
        .decided_at
        .as_deref()
        .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
        .map(|at| at.with_timezone(&Utc));
    match decided_at {
        Some(at) => now - at <= RESEND_WINDOW,
        None => false,
    }
}

/// How a 404 answer to our PUT is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportResult {
    /// 204: Concur took the status.
    Accepted,
    /// 404 after an earlier PUT of the same status may have been taken (its answer was
    /// lost): the status is taken as reported.
    AckLost,
    /// 404 on our first PUT of this attempt: the request was not outstanding (popped by
    /// another actor, or an id Concur does not know). Nothing of ours was taken.
    NotOutstanding,
}

impl ReportResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::AckLost => "ack_lost",
            Self::NotOutstanding => "not_outstanding",
        }
    }

    /// A 404 after `earlier_sends` PUTs of this attempt were sent before this one.
    pub fn for_not_found(earlier_sends: u32) -> Self {
        if earlier_sends > 0 {
            Self::AckLost
        } else {
            Self::NotOutstanding
        }
    }
}

/// What the sweep should do with one due item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RearmPlan {
    /// Send it back to `received` (keeping any decision) so the stream delivers it.
    Rearm,
    /// Leave it to an operator and raise the alarm.
    Park(ParkReason),
    /// Not due (any more): nothing to do.
    Skip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParkReason {
    /// [`MAX_REDRIVES`] re-arms did not finish the attempt.
    RedrivesExhausted,
    /// The decision is older than [`RESEND_WINDOW`] and was never acknowledged.
    DecisionTooOld,
    /// Dry-run mode: the decision was recorded, not sent (`triplink dry-run` lists them;
    /// `triplink retry --parked` hands them to the live worker).
    DryRun,
    /// Several members carry the request's loyalty number and last name: the
    /// supplier's data must be fixed first (`triplink_shared::matching`, *Ambiguity*).
    DuplicateLoyaltyNumber,
}

impl ParkReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RedrivesExhausted => "redrives_exhausted",
            Self::DecisionTooOld => "decision_too_old",
            Self::DryRun => "dry_run",
            Self::DuplicateLoyaltyNumber => "duplicate_loyalty_number",
        }
    }
}

/// The re-drive rule (invariant 3), for an item read consistently.
pub fn plan_rearm(item: &RequestItem, now: DateTime<Utc>) -> RearmPlan {
    let due = item.due_at.is_some_and(|due| due <= now.timestamp_millis());
    if !due || item.parked_at.is_some() {
        return RearmPlan::Skip;
    }
    match item.state {
        RequestState::Reported | RequestState::Quarantined => RearmPlan::Skip,
        RequestState::Working | RequestState::Decided
            if item
                .lease_until
                .is_some_and(|until| until > now.timestamp_millis()) =>
        {
            RearmPlan::Skip
        }
        _ if item.decided_status.is_some() && !may_send_decision(item, now) => {
            RearmPlan::Park(ParkReason::DecisionTooOld)
        }
        _ if item.redrives >= MAX_REDRIVES => RearmPlan::Park(ParkReason::RedrivesExhausted),
        _ => RearmPlan::Rearm,
    }
}

/// Was `item` left held by an invocation that died? A claim sets `due_at` to the lease's
/// end and a release moves `lease_until` back to the release time, before `due_at`; so
/// an item still `working` or `decided` whose lease ends at or after its `due_at` was
/// never released: its holder crashed, timed out or ran out of memory.
pub fn held_past_lease(item: &RequestItem) -> bool {
    matches!(item.state, RequestState::Working | RequestState::Decided)
        && matches!((item.lease_until, item.due_at), (Some(until), Some(due)) if until >= due)
}

/// The store operations the sweep needs.
pub trait SweepStore: Send + Sync {
    /// Ids of items in `state` whose `due_at` is at or before `now` (oldest first), at
    /// most `limit`.
    fn due(
        &self,
        state: RequestState,
        now: DateTime<Utc>,
        limit: usize,
    ) -> impl std::future::Future<Output = Result<Vec<String>, super::StoreError>> + Send;

    /// One item, read consistently.
    fn get_item(
        &self,
        id: &str,
    ) -> impl std::future::Future<Output = Result<Option<RequestItem>, super::StoreError>> + Send;

    /// Re-arm `read` (fenced on its state, attempt, `due_at` and `redrives`): state
    /// `received`, lease removed, `redrives + 1` (or 0 with `reset`), `due_at` renewed.
    /// `Ok(false)`: the item moved on meanwhile.
    fn rearm(
        &self,
        read: &RequestItem,
        reset: bool,
        now: DateTime<Utc>,
    ) -> impl std::future::Future<Output = Result<bool, super::StoreError>> + Send;

    /// Park `read` (same fence): `due_at` removed, `parked_at` and the reason set.
    fn park(
        &self,
        read: &RequestItem,
        reason: ParkReason,
        now: DateTime<Utc>,
    ) -> impl std::future::Future<Output = Result<bool, super::StoreError>> + Send;
}

impl<T: SweepStore> SweepStore for &T {
    fn due(
        &self,
        state: RequestState,
        now: DateTime<Utc>,
        limit: usize,
    ) -> impl std::future::Future<Output = Result<Vec<String>, super::StoreError>> + Send {
        T::due(self, state, now, limit)
    }
    fn get_item(
        &self,
        id: &str,
    ) -> impl std::future::Future<Output = Result<Option<RequestItem>, super::StoreError>> + Send
    {
        T::get_item(self, id)
    }
    fn rearm(
        &self,
        read: &RequestItem,
        reset: bool,
        now: DateTime<Utc>,
    ) -> impl std::future::Future<Output = Result<bool, super::StoreError>> + Send {
        T::rearm(self, read, reset, now)
    }
    fn park(
        &self,
        read: &RequestItem,
        reason: ParkReason,
        now: DateTime<Utc>,
    ) -> impl std::future::Future<Output = Result<bool, super::StoreError>> + Send {
        T::park(self, read, reason, now)
    }
}

/// What one sweep did (no personal data).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SweepSummary {
    /// Due items looked at.
    pub due: u32,
    /// Sent back to `received` (the stream delivers them again).
    pub rearmed: u32,
    /// Parked for an operator (alarm).
    pub parked: u32,
    /// Moved on between the read and the write, or not due after all.
    pub skipped: u32,
    /// Store errors (the next sweep tries again).
    pub failed: u32,
    /// Of the re-armed and parked: items whose holder died with them
    /// ([`held_past_lease`]); metric `StuckPastLease`.
    pub past_lease: u32,
}

/// Re-arm every due item (invariant 3), at most [`SWEEP_LIMIT`] per run. Safe to run
/// concurrently with workers, pollers and other sweeps: every write is fenced on what
/// was read.
pub async fn sweep<S: SweepStore>(store: &S, now: DateTime<Utc>) -> SweepSummary {
    let mut summary = SweepSummary::default();
    let mut budget = SWEEP_LIMIT;
    for state in [
        RequestState::Working,
        RequestState::Decided,
        RequestState::Received,
    ] {
        if budget == 0 {
            break;
        }
        let ids = match store.due(state, now, budget).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!(state = state.as_str(), error = %e, "sweep could not list due items");
                summary.failed += 1;
                continue;
            }
        };
        budget = budget.saturating_sub(ids.len());
        for id in ids {
            summary.due += 1;
            let item = match store.get_item(&id).await {
                Ok(Some(item)) => item,
                Ok(None) => {
                    summary.skipped += 1;
                    continue;
                }
                Err(e) => {
                    tracing::error!(request_id = %id, error = %e, "sweep could not read an item");
                    summary.failed += 1;
                    continue;
                }
            };
            let abandoned = held_past_lease(&item);
            let result = match plan_rearm(&item, now) {
                RearmPlan::Skip => Ok(false),
                RearmPlan::Rearm => store.rearm(&item, false, now).await.inspect(|done| {
                    if *done {
                        tracing::info!(
                            request_id = %id,
                            attempt = item.attempt,
                            from = item.state.as_str(),
                            redrives = item.redrives + 1,
                            past_lease = abandoned,
                            "re-armed a request that was due"
                        );
                        summary.rearmed += 1;
                        summary.past_lease += u32::from(abandoned);
                    }
                }),
                RearmPlan::Park(reason) => store.park(&item, reason, now).await.inspect(|done| {
                    if *done {
                        tracing::error!(
                            request_id = %id,
                            attempt = item.attempt,
                            state = item.state.as_str(),
                            reason = reason.as_str(),
                            past_lease = abandoned,
                            "request parked: it needs an operator (triplink retry --force)"
                        );
                        summary.parked += 1;
                        summary.past_lease += u32::from(abandoned);
                    }
                }),
            };
            match result {
                Ok(true) => {}
                Ok(false) => summary.skipped += 1,
                Err(e) => {
                    tracing::error!(request_id = %id, error = %e, "sweep could not re-arm an item");
                    summary.failed += 1;
                }
            }
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::json;
    use crate::store::layout::timestamp;

    fn polled(token: &str) -> ConnectionRequest {
        ConnectionRequest::from_wire(
            json::parse_request(&format!(r#"{{"ID":"r1","requestToken":"{token}"}}"#)).unwrap(),
        )
        .unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_poll_rule() {
        let now = at("2026-01-01T10:00:00Z");
        let mut item = RequestItem::received(&polled("t1"), now);
        for state in [
            RequestState::Received,
            RequestState::Working,
            RequestState::Decided,
        ] {
            item.state = state;
            assert_eq!(
                plan_poll_write(&item, &polled("t1"), now),
                PollPlan::Unchanged,
                "{state:?}"
            );
            assert_eq!(
                plan_poll_write(&item, &polled("t2"), now),
                PollPlan::RefreshToken,
                "{state:?}"
            );
        }
        item.state = RequestState::Reported;
        item.request_token = None;
        item.reported_at = Some(timestamp(at("2026-01-01T10:00:05Z")));
        // A page requested before the report landed shows the request still pending: not a requeue.
        assert_eq!(
            plan_poll_write(&item, &polled("t1"), at("2026-01-01T10:00:04.999Z")),
            PollPlan::Unchanged
        );
        assert_eq!(
            plan_poll_write(&item, &polled("t9"), at("2026-01-01T10:00:05Z")),
            PollPlan::Unchanged,
            "same instant: not after"
        );
        assert_eq!(
            plan_poll_write(&item, &polled("t9"), at("2026-01-01T11:00:05Z")),
            PollPlan::Requeue
        );
        item.reported_at = None;
        assert_eq!(
            plan_poll_write(&item, &polled("t9"), at("2026-01-02T00:00:00Z")),
            PollPlan::Unchanged,
            "no report time: no evidence"
        );
        item.state = RequestState::Quarantined;
        assert_eq!(
            plan_poll_write(&item, &polled("t9"), now),
            PollPlan::Recover
        );
    }

    #[test]
    fn leases_and_backoff() {
        let deadline = at("2026-01-01T10:02:00Z");
        assert_eq!(
            lease_until(deadline),
            at("2026-01-01T10:02:02Z").timestamp_millis()
        );
        let base = Duration::seconds(30);
        assert_eq!(release_backoff(0, base, Duration::zero()), base);
        assert_eq!(
            release_backoff(1, base, Duration::zero()),
            Duration::seconds(60)
        );
        assert_eq!(
            release_backoff(20, base, Duration::zero()),
            Duration::minutes(10)
        );
        assert_eq!(
            release_backoff(0, base, Duration::minutes(5)),
            Duration::minutes(5)
        );
        assert_eq!(ReportResult::for_not_found(0), ReportResult::NotOutstanding);
        assert_eq!(ReportResult::for_not_found(1), ReportResult::AckLost);
    }

    #[test]
    fn a_dead_holder_is_told_from_a_release() {
        let now = at("2026-01-01T10:00:00Z");
        let lease_end = (now - Duration::seconds(5)).timestamp_millis();
        let mut item = RequestItem::received(&polled("t1"), now - Duration::minutes(10));
        assert!(!held_past_lease(&item), "received: nobody held it");
        for state in [RequestState::Working, RequestState::Decided] {
            // Claimed: the lease's end is also when it falls due; nobody released it.
            item.state = state;
            item.lease_until = Some(lease_end);
            item.due_at = Some(lease_end);
            assert!(held_past_lease(&item), "{state:?}");
            // Released: the lease moved back to the release, the due time after a backoff.
            item.lease_until = Some(lease_end - 60_000);
            item.due_at = Some(lease_end);
            assert!(!held_past_lease(&item), "{state:?} released");
        }
        item.state = RequestState::Reported;
        item.lease_until = Some(lease_end);
        item.due_at = Some(lease_end);
        assert!(!held_past_lease(&item));
        item.state = RequestState::Working;
        item.due_at = None;
        assert!(!held_past_lease(&item), "no due time: not for the sweep");
    }

    #[test]
    fn the_rearm_rule() {
        let now = at("2026-01-01T10:00:00Z");
        let mut item = RequestItem::received(&polled("t1"), now - Duration::minutes(10));
        // Received, due passed.
        assert_eq!(plan_rearm(&item, now), RearmPlan::Rearm);
        item.due_at = Some((now + Duration::seconds(1)).timestamp_millis());
        assert_eq!(plan_rearm(&item, now), RearmPlan::Skip, "not due yet");
        // Working under a live lease is never re-armed, even if due.
        item.state = RequestState::Working;
        item.due_at = Some(now.timestamp_millis());
        item.lease_until = Some(now.timestamp_millis() + 1);
        assert_eq!(plan_rearm(&item, now), RearmPlan::Skip);
        item.lease_until = Some(now.timestamp_millis() - 1);
        assert_eq!(plan_rearm(&item, now), RearmPlan::Rearm);
        item.redrives = MAX_REDRIVES;
        assert_eq!(
            plan_rearm(&item, now),
            RearmPlan::Park(ParkReason::RedrivesExhausted)
        );
        item.redrives = 0;
        // Decided: re-sent within the window, parked beyond it.
        item.state = RequestState::Decided;
        item.decided_status = Some(crate::model::ConnectionStatus::AccountNotFound);
        item.decided_at = Some(timestamp(now - Duration::minutes(5)));
        assert_eq!(plan_rearm(&item, now), RearmPlan::Rearm);
        item.decided_at = Some(timestamp(now - RESEND_WINDOW - Duration::seconds(1)));
        assert_eq!(
            plan_rearm(&item, now),
            RearmPlan::Park(ParkReason::DecisionTooOld)
        );
        // Parked, reported and quarantined items are never re-armed.
        item.decided_at = Some(timestamp(now));
        item.parked_at = Some(timestamp(now));
        assert_eq!(plan_rearm(&item, now), RearmPlan::Skip);
        item.parked_at = None;
        for state in [RequestState::Reported, RequestState::Quarantined] {
            item.state = state;
            assert_eq!(plan_rearm(&item, now), RearmPlan::Skip);
        }
    }

    #[test]
    fn a_started_exchange_is_never_planned_again() {
        let now = at("2026-01-01T10:00:00Z");
        let mut item = RequestItem::received(&polled("t1"), now);
        assert_eq!(exchange_plan(&item), ExchangePlan::Exchange);
        item.exchange_started_at = Some(timestamp(now));
        assert_eq!(
            exchange_plan(&item),
            ExchangePlan::AlreadySubmitted { since: now }
        );
    }
}
