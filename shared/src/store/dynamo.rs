//! The requests store on DynamoDB: conditional writes make every operation safe to run
//! twice and safe to run concurrently.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use tracing::debug;

use super::layout::{attr, expiry, timestamp, RequestItem, RequestState, BY_DUE};
use super::lifecycle::{self, ParkReason, SweepStore};
use super::{
    plan_poll_write, Claim, Decision, Lease, PollPlan, PollWrite, QuarantineWrite, ReportResult,
    RequestStore, StoreError, WorkStore,
};
use crate::model::ConnectionRequest;

/// How many read-decide-write rounds a contended write gets before giving up.
const MAX_ROUNDS: u32 = 5;

/// The requests table on DynamoDB.
#[derive(Clone)]
pub struct DynamoRequestStore {
    client: Client,
    table: String,
    retention_days: i64,
    unseen_days: i64,
}

/// A write that failed either on its condition or for another reason.
pub(crate) enum WriteError {
    ConditionFailed,
    Other(StoreError),
}

pub(crate) fn sdk_error<E, R>(op: &'static str, error: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let transient = matches!(
        error,
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_)
    ) || {
        let text = format!("{}", DisplayErrorContext(&error));
        text.contains("ProvisionedThroughputExceeded")
            || text.contains("ThrottlingException")
            || text.contains("RequestLimitExceeded")
            || text.contains("InternalServerError")
            || text.contains("TransactionConflict")
    };
    StoreError::Backend {
        op,
        // A validation message may quote part of the request (an item's values).
        message: crate::privacy::without_values(&format!("{}", DisplayErrorContext(&error))),
        transient,
    }
}

pub(crate) fn is_condition_failure<E, R>(error: &SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    error
        .as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "ConditionalCheckFailedException")
}

/// A conditional write's result: `Ok(true)` written, `Ok(false)` its condition failed.
fn conditional<O, E, R>(
    op: &'static str,
    result: Result<O, SdkError<E, R>>,
) -> Result<bool, StoreError>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match result {
        Ok(_) => Ok(true),
        Err(e) if is_condition_failure(&e) => Ok(false),
        Err(e) => Err(sdk_error(op, e)),
    }
}

/// The same, for the poller's writes, which read the item again when the condition fails.
fn write<O, E, R>(op: &'static str, result: Result<O, SdkError<E, R>>) -> Result<(), WriteError>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match conditional(op, result) {
        Ok(true) => Ok(()),
        Ok(false) => Err(WriteError::ConditionFailed),
        Err(e) => Err(WriteError::Other(e)),
    }
}

fn to_item(item: &RequestItem) -> Result<HashMap<String, AttributeValue>, StoreError> {
    serde_dynamo::to_item(item).map_err(|e| StoreError::Corrupt {
        id: item.request_id.clone(),
        message: crate::privacy::dynamo_error(&e),
    })
}

pub(crate) fn from_item(
    id: &str,
    item: HashMap<String, AttributeValue>,
) -> Result<RequestItem, StoreError> {
    super::image::decode(item).map_err(|e| StoreError::Corrupt {
        id: id.to_owned(),
        message: e.to_string(),
    })
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// Is `placeholder` used in `text` (not merely as the prefix of a longer one)?
fn uses(text: &str, placeholder: &str) -> bool {
    text.match_indices(placeholder).any(|(i, _)| {
        text[i + placeholder.len()..]
            .chars()
            .next()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
    })
}

/// The placeholders of attribute names any life-cycle write may use.
const NAMES: &[(&str, &str)] = &[
    ("#state", attr::STATE),
    ("#attempt", attr::ATTEMPT),
    ("#owner", attr::LEASE_OWNER),
    ("#until", attr::LEASE_UNTIL),
    ("#updated", attr::UPDATED_AT),
    ("#due", attr::DUE_AT),
    ("#status", attr::DECIDED_STATUS),
    ("#parked", attr::PARKED_AT),
    ("#parked_reason", attr::PARKED_REASON),
    ("#redrives", attr::REDRIVES),
    ("#started", attr::EXCHANGE_STARTED_AT),
    ("#token", attr::REQUEST_TOKEN),
];

/// Set an update's expression and condition, with exactly the names and values they
/// use (DynamoDB refuses unused ones): every update of the requests and connections
/// tables is built here. `names` is the table's placeholder list (unused ones are
/// left out), `values` the values the caller may use.
pub(crate) fn update_expressions<'n>(
    mut update: UpdateItemFluentBuilder,
    expression: &str,
    condition: Option<&str>,
    names: impl IntoIterator<Item = &'n (&'n str, &'n str)>,
    values: Vec<(&str, AttributeValue)>,
) -> UpdateItemFluentBuilder {
    let text = format!("{expression} {}", condition.unwrap_or_default());
    for (placeholder, name) in names {
        if uses(&text, placeholder) {
            update = update.expression_attribute_names(*placeholder, *name);
        }
    }
    for (placeholder, value) in values {
        if uses(&text, placeholder) {
            update = update.expression_attribute_values(placeholder, value);
        }
    }
    update = update.update_expression(expression);
    match condition {
        Some(condition) => update.condition_expression(condition),
        None => update,
    }
}

/// [`update_expressions`] for the requests table: its [`NAMES`] and `names`.
fn expressions(
    update: UpdateItemFluentBuilder,
    expression: &str,
    condition: &str,
    names: &[(&str, &str)],
    values: Vec<(&str, AttributeValue)>,
) -> UpdateItemFluentBuilder {
    update_expressions(
        update,
        expression,
        Some(condition),
        NAMES.iter().chain(names),
        values,
    )
}

fn state(value: RequestState) -> AttributeValue {
    s(value.as_str())
}

/// The fence of a lease holder's write: same attempt, same owner, in one of `states`.
fn lease_fence(
    lease: &Lease<'_>,
    states: &[RequestState],
) -> (String, Vec<(&'static str, AttributeValue)>) {
    const STATE_VALUES: [&str; 2] = [":fence_state0", ":fence_state1"];
    let mut values = vec![
        (":fence_attempt", n(lease.attempt)),
        (":fence_owner", s(lease.owner)),
    ];
    let alternatives: Vec<&str> = states
        .iter()
        .zip(STATE_VALUES)
        .map(|(st, placeholder)| {
            values.push((placeholder, state(*st)));
            placeholder
        })
        .collect();
    let states = alternatives
        .iter()
        .map(|p| format!("#state = {p}"))
        .collect::<Vec<_>>()
        .join(" OR ");
    (
        format!("#attempt = :fence_attempt AND #owner = :fence_owner AND ({states})"),
        values,
    )
}

impl DynamoRequestStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            retention_days: super::layout::DEFAULT_RETENTION_DAYS,
            unseen_days: super::layout::DEFAULT_UNSEEN_RETENTION_DAYS,
        }
    }

    /// The TTL backstop of a request not yet reported: it expires this long after the
    /// poller last saw it in Concur's queue (`UNSEEN_RETENTION_DAYS`).
    pub fn with_unseen_retention_days(mut self, days: i64) -> Self {
        self.unseen_days = days;
        self
    }

    /// How long quarantined items are kept (`FINISHED_RETENTION_DAYS`).
    pub fn with_retention_days(mut self, days: i64) -> Self {
        self.retention_days = days;
        self
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// An update of item `id`.
    fn update(&self, id: &str) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key(attr::REQUEST_ID, s(id))
    }

    /// A lease holder's write: `set` (and `remove`) if the lease still holds in `states`.
    async fn leased_write(
        &self,
        lease: &Lease<'_>,
        states: &[RequestState],
        expression: &str,
        extra_condition: Option<&str>,
        names: &[(&str, &str)],
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<bool, StoreError> {
        let (fence, mut all_values) = lease_fence(lease, states);
        let condition = match extra_condition {
            Some(extra) => format!("{fence} AND {extra}"),
            None => fence,
        };
        all_values.extend(values);
        let update = expressions(
            self.update(lease.id),
            expression,
            &condition,
            names,
            all_values,
        );
        conditional("UpdateItem", update.send().await)
    }

    async fn put_if_absent(&self, item: &RequestItem) -> Result<(), WriteError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(item).map_err(WriteError::Other)?))
            .condition_expression("attribute_not_exists(#id)")
            .expression_attribute_names("#id", attr::REQUEST_ID)
            .send()
            .await;
        write("PutItem", result)
    }

    /// Replace `read` (a reported attempt, or a quarantined item) by `next`, if the item
    /// is still exactly what was read.
    async fn replace(&self, next: &RequestItem, read: &RequestItem) -> Result<(), WriteError> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(next).map_err(WriteError::Other)?))
            .expression_attribute_names("#state", attr::STATE)
            .expression_attribute_names("#attempt", attr::ATTEMPT)
            .expression_attribute_names("#updated", attr::UPDATED_AT)
            .expression_attribute_values(":state", state(read.state))
            .expression_attribute_values(":attempt", n(read.attempt))
            .expression_attribute_values(":updated", s(read.updated_at.clone()));
        put = put.condition_expression(
            "#state = :state AND #attempt = :attempt AND #updated = :updated",
        );
        write("PutItem", put.send().await)
    }

    /// Store a newer request token on an attempt still in progress.
    async fn refresh_token(
        &self,
        id: &str,
        token: &str,
        read: &RequestItem,
        backstop: i64,
        now: DateTime<Utc>,
    ) -> Result<(), WriteError> {
        let update = expressions(
            self.update(id),
            "SET #token = :token, #updated = :now, #polled = if_not_exists(#polled, :zero) + :one, \
             #expires = :expires",
            "#attempt = :attempt AND (#state = :received OR #state = :working OR #state = :decided)",
            &[("#polled", attr::TIMES_POLLED), ("#expires", attr::EXPIRES_AT)],
            vec![
                (":expires", n(backstop)),
                (":token", s(token)),
                (":now", s(timestamp(now))),
                (":zero", n(0)),
                (":one", n(1)),
                (":attempt", n(read.attempt)),
                (":received", state(RequestState::Received)),
                (":working", state(RequestState::Working)),
                (":decided", state(RequestState::Decided)),
            ],
        );
        write("UpdateItem", update.send().await)
    }
}

impl DynamoRequestStore {
    /// Move the TTL backstop of an unfinished attempt to `backstop` (never of a
    /// reported or quarantined one, whose TTL is their retention).
    async fn extend_backstop(
        &self,
        read: &RequestItem,
        backstop: i64,
        now: DateTime<Utc>,
    ) -> Result<(), WriteError> {
        let update = expressions(
            self.update(&read.request_id),
            "SET #expires = :expires, #updated = :now",
            "#attempt = :attempt AND (#state = :received OR #state = :working OR #state = :decided)",
            &[("#expires", attr::EXPIRES_AT)],
            vec![
                (":expires", n(backstop)),
                (":now", s(timestamp(now))),
                (":attempt", n(read.attempt)),
                (":received", state(RequestState::Received)),
                (":working", state(RequestState::Working)),
                (":decided", state(RequestState::Decided)),
            ],
        );
        write("UpdateItem", update.send().await)
    }
}

impl RequestStore for DynamoRequestStore {
    async fn record_polled(
        &self,
        request: &ConnectionRequest,
        fetched_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<PollWrite, StoreError> {
        let mut fresh = RequestItem::received(request, now);
        let backstop = expiry(now, self.unseen_days);
        fresh.expires_at = Some(backstop);
        for round in 1..=MAX_ROUNDS {
            match self.put_if_absent(&fresh).await {
                Ok(()) => return Ok(PollWrite::New),
                Err(WriteError::Other(e)) => return Err(e),
                Err(WriteError::ConditionFailed) => {}
            }
            let Some(existing) = self.get(&request.id).await? else {
                // Deleted (TTL) between the two calls: try the insert again.
                continue;
            };
            let outcome = match plan_poll_write(&existing, request, fetched_at) {
                PollPlan::Unchanged => {
                    // Seen again: push the backstop on, at most once a day per item.
                    if lifecycle::backstop_due(&existing, backstop) {
                        match self.extend_backstop(&existing, backstop, now).await {
                            Ok(()) | Err(WriteError::ConditionFailed) => {}
                            Err(WriteError::Other(e)) => return Err(e),
                        }
                    }
                    return Ok(PollWrite::Unchanged);
                }
                PollPlan::Requeue => {
                    let mut next = fresh.clone();
                    next.attempt = existing.attempt + 1;
                    next.history = existing.history.clone();
                    next.times_polled = existing.times_polled + 1;
                    self.replace(&next, &existing)
                        .await
                        .map(|()| PollWrite::Requeued {
                            attempt: next.attempt,
                        })
                }
                PollPlan::Recover => {
                    let mut next = fresh.clone();
                    next.times_polled = existing.times_polled + 1;
                    self.replace(&next, &existing)
                        .await
                        .map(|()| PollWrite::Recovered)
                }
                PollPlan::RefreshToken => {
                    let token = request.request_token_secret().unwrap_or_default();
                    self.refresh_token(&request.id, token, &existing, backstop, now)
                        .await
                        .map(|()| PollWrite::TokenRefreshed)
                }
            };
            match outcome {
                Ok(write) => return Ok(write),
                Err(WriteError::Other(e)) => return Err(e),
                Err(WriteError::ConditionFailed) => {
                    debug!(request_id = %request.id, round, "concurrent write, reading again");
                }
            }
        }
        Err(StoreError::Contention {
            id: request.id.clone(),
            tries: MAX_ROUNDS,
        })
    }

    async fn record_quarantined(
        &self,
        id: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<QuarantineWrite, StoreError> {
        let item = RequestItem::quarantined(id, reason, now, self.retention_days);
        match self.put_if_absent(&item).await {
            Ok(()) => Ok(QuarantineWrite::Quarantined),
            Err(WriteError::ConditionFailed) => Ok(QuarantineWrite::Known),
            Err(WriteError::Other(e)) => Err(e),
        }
    }

    async fn get(&self, id: &str) -> Result<Option<RequestItem>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::REQUEST_ID, s(id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?;
        output.item.map(|item| from_item(id, item)).transpose()
    }
}

impl DynamoRequestStore {
    /// The write of a decision (fenced: our lease, still `working`, no decision yet), and
    /// with `put` the count of the PUT about to send it in the same write.
    fn decision_update(
        &self,
        lease: &Lease<'_>,
        decision: &Decision,
        now: DateTime<Utc>,
        put: bool,
    ) -> UpdateItemFluentBuilder {
        let (fence, mut values) = lease_fence(lease, &[RequestState::Working]);
        values.extend([
            (":decided", state(RequestState::Decided)),
            (":status", s(decision.status.as_str())),
            (":reason", s(decision.reason.clone())),
            (":now", s(timestamp(now))),
            (":one", n(1)),
        ]);
        let expression = if put {
            "SET #state = :decided, #status = :status, #decided_at = :now, #reason = :reason, \
             #updated = :now ADD #puts :one"
        } else {
            "SET #state = :decided, #status = :status, #decided_at = :now, #reason = :reason, #updated = :now"
        };
        expressions(
            self.update(lease.id),
            expression,
            &format!("{fence} AND attribute_not_exists(#status)"),
            &[
                ("#decided_at", attr::DECIDED_AT),
                ("#reason", attr::DECISION_REASON),
                ("#puts", attr::PUTS_SENT),
            ],
            values,
        )
    }
}

/// The PUTs counted before a write that added one (its `UPDATED_OLD` answer); `None`
/// when the write's lease fence failed.
fn puts_before<E, R>(
    result: Result<aws_sdk_dynamodb::operation::update_item::UpdateItemOutput, SdkError<E, R>>,
) -> Result<Option<u32>, StoreError>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match result {
        Ok(output) => Ok(Some(
            output
                .attributes
                .and_then(|old| old.get(attr::PUTS_SENT).cloned())
                .and_then(|v| v.as_n().ok().and_then(|n| n.parse().ok()))
                .unwrap_or(0),
        )),
        Err(e) if is_condition_failure(&e) => Ok(None),
        Err(e) => Err(sdk_error("UpdateItem", e)),
    }
}

/// One conditional claim write: the attempt taken from `read_state` into `target` (with
/// a lease), if `condition` still holds.
struct ClaimWrite<'a> {
    id: &'a str,
    attempt: u32,
    owner: &'a str,
    lease_until_ms: i64,
    now: DateTime<Utc>,
    read_state: RequestState,
    target: RequestState,
    condition: &'static str,
}

impl DynamoRequestStore {
    /// The claim write; `None` when its condition failed (the item is not as assumed).
    async fn try_claim(&self, write: &ClaimWrite<'_>) -> Result<Option<Claim>, StoreError> {
        // The target matches what is stored: `decided` only with a decision, `working`
        // only without one.
        let decision_fence = match write.target {
            RequestState::Decided => "attribute_exists(#status)",
            _ => "attribute_not_exists(#status)",
        };
        let result = expressions(
            self.update(write.id),
            "SET #state = :target, #owner = :owner, #until = :until, #due = :until, #updated = :now",
            &format!(
                "#attempt = :attempt AND attribute_not_exists(#parked) AND {decision_fence} AND {}",
                write.condition
            ),
            &[],
            vec![
                (":target", state(write.target)),
                (":read_state", state(write.read_state)),
                (":owner", s(write.owner)),
                (":until", n(write.lease_until_ms)),
                (":now", s(timestamp(write.now))),
                (":now_ms", n(write.now.timestamp_millis())),
                (":attempt", n(write.attempt)),
            ],
        )
        .return_values(ReturnValue::AllNew)
        .send()
        .await;
        match result {
            Ok(output) => {
                let item = output.attributes.ok_or_else(|| StoreError::Corrupt {
                    id: write.id.to_owned(),
                    message: "claim returned no item".into(),
                })?;
                let item = from_item(write.id, item)?;
                Ok(Some(match write.target {
                    RequestState::Decided => Claim::Decided(item),
                    _ => Claim::Claimed(item),
                }))
            }
            Err(e) if is_condition_failure(&e) => Ok(None),
            Err(e) => Err(sdk_error("UpdateItem", e)),
        }
    }
}

impl WorkStore for DynamoRequestStore {
    async fn claim(
        &self,
        id: &str,
        attempt: u32,
        owner: &str,
        lease_until_ms: i64,
        now: DateTime<Utc>,
    ) -> Result<Claim, StoreError> {
        let now_ms = now.timestamp_millis();
        // The stream delivers `received` items, and almost all are claimed as they are: one
        // conditional write, no read. If its condition fails, the item is read and the
        // claim decided on what it holds.
        let fast = ClaimWrite {
            id,
            attempt,
            owner,
            lease_until_ms,
            now,
            read_state: RequestState::Received,
            target: RequestState::Working,
            condition: "#state = :read_state",
        };
        if let Some(claim) = self.try_claim(&fast).await? {
            return Ok(claim);
        }
        for _ in 0..MAX_ROUNDS {
            let Some(read) = self.get(id).await? else {
                return Ok(Claim::Stale);
            };
            if read.attempt != attempt || read.parked_at.is_some() {
                return Ok(Claim::Stale);
            }
            let live_lease = read.lease_until.filter(|until| *until > now_ms);
            let condition = match (read.state, live_lease) {
                (RequestState::Reported, _) => return Ok(Claim::Done),
                (RequestState::Quarantined, _) => return Ok(Claim::Stale),
                // Our own claim whose answer was lost (the SDK retried it): it is ours.
                (RequestState::Working | RequestState::Decided, Some(_))
                    if read.lease_owner.as_deref() == Some(owner) =>
                {
                    return Ok(if read.decided_status.is_some() {
                        Claim::Decided(read)
                    } else {
                        Claim::Claimed(read)
                    })
                }
                (RequestState::Working | RequestState::Decided, Some(until)) => {
                    return Ok(Claim::Busy { lease_until: until })
                }
                (RequestState::Received, _) => "#state = :read_state",
                (RequestState::Working | RequestState::Decided, None) => {
                    "#state = :read_state AND (attribute_not_exists(#until) OR #until <= :now_ms)"
                }
            };
            // An attempt with a recorded decision is claimed to re-send it, never to decide again.
            let target = match read.decided_status {
                Some(_) => RequestState::Decided,
                None => RequestState::Working,
            };
            let write = ClaimWrite {
                id,
                attempt,
                owner,
                lease_until_ms,
                now,
                read_state: read.state,
                target,
                condition,
            };
            match self.try_claim(&write).await? {
                Some(claim) => return Ok(claim),
                None => debug!(request_id = %id, "claim raced another write, reading again"),
            }
        }
        Err(StoreError::Contention {
            id: id.to_owned(),
            tries: MAX_ROUNDS,
        })
    }

    async fn record_exchange_started(
        &self,
        lease: Lease<'_>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        // Fenced by the lease only: the poller may store a newer token meanwhile (the one
        // being submitted stays valid), and the mark stays until a fresh token is stored.
        self.leased_write(
            &lease,
            &[RequestState::Working],
            "SET #started = :now, #updated = :now",
            None,
            &[("#started", attr::EXCHANGE_STARTED_AT)],
            vec![(":now", s(timestamp(now)))],
        )
        .await
    }

    async fn record_fresh_token(
        &self,
        lease: Lease<'_>,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.leased_write(
            &lease,
            &[RequestState::Working],
            "SET #token = :token, #updated = :now REMOVE #started",
            None,
            &[
                ("#started", attr::EXCHANGE_STARTED_AT),
                ("#token", attr::REQUEST_TOKEN),
            ],
            vec![(":now", s(timestamp(now))), (":token", s(token))],
        )
        .await
    }

    async fn record_decision(
        &self,
        lease: Lease<'_>,
        decision: &Decision,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        conditional(
            "UpdateItem",
            self.decision_update(&lease, decision, now, false)
                .send()
                .await,
        )
    }

    async fn record_decision_and_put_sent(
        &self,
        lease: Lease<'_>,
        decision: &Decision,
        now: DateTime<Utc>,
    ) -> Result<Option<u32>, StoreError> {
        puts_before(
            self.decision_update(&lease, decision, now, true)
                .return_values(ReturnValue::UpdatedOld)
                .send()
                .await,
        )
    }

    async fn record_put_sent(
        &self,
        lease: Lease<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<u32>, StoreError> {
        let (fence, mut values) = lease_fence(&lease, &[RequestState::Decided]);
        values.extend([(":now", s(timestamp(now))), (":one", n(1))]);
        puts_before(
            expressions(
                self.update(lease.id),
                "SET #updated = :now ADD #puts :one",
                &fence,
                &[("#puts", attr::PUTS_SENT)],
                values,
            )
            .return_values(ReturnValue::UpdatedOld)
            .send()
            .await,
        )
    }

    async fn record_reported(
        &self,
        lease: Lease<'_>,
        decided: &RequestItem,
        result: ReportResult,
        now: DateTime<Utc>,
        retention_days: i64,
    ) -> Result<bool, StoreError> {
        let id = lease.id;
        // No read: the lease holder holds the decision it reports (it recorded it, or read
        // it with its claim); the write is fenced on the lease and on that status.
        let status = decided.decided_status.ok_or_else(|| StoreError::Corrupt {
            id: id.to_owned(),
            message: "decided without a status".into(),
        })?;
        let record = super::AttemptRecord {
            attempt: lease.attempt,
            status,
            decided_at: decided.decided_at.clone().unwrap_or_else(|| timestamp(now)),
            reported_at: Some(timestamp(now)),
            reason: decided.decision_reason.clone(),
            result: Some(result),
        };
        let record =
            serde_dynamo::to_attribute_value(&record).map_err(|e| StoreError::Corrupt {
                id: id.to_owned(),
                message: crate::privacy::dynamo_error(&e),
            })?;
        let removed: Vec<&str> = attr::PERSONAL
            .iter()
            .copied()
            .chain([attr::LEASE_UNTIL, attr::DUE_AT, attr::EXCHANGE_STARTED_AT])
            .collect();
        let placeholders: Vec<(String, &str)> = removed
            .iter()
            .enumerate()
            .map(|(i, name)| (format!("#p{i}"), *name))
            .collect();
        let remove = placeholders
            .iter()
            .map(|(p, _)| p.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let names: Vec<(&str, &str)> = placeholders
            .iter()
            .map(|(p, name)| (p.as_str(), *name))
            .chain([
                ("#reported_at", attr::REPORTED_AT),
                ("#result", attr::REPORT_RESULT),
                ("#expires", attr::EXPIRES_AT),
                ("#history", attr::HISTORY),
            ])
            .collect();
        self.leased_write(
            &lease,
            &[RequestState::Decided],
            &format!(
                "SET #state = :reported, #reported_at = :now, #updated = :now, #result = :result, \
                 #expires = :expires, #history = list_append(if_not_exists(#history, :empty), :record) \
                 REMOVE {remove}"
            ),
            Some("#status = :decided_status"),
            &names,
            vec![
                (":reported", state(RequestState::Reported)),
                (":decided_status", s(status.as_str())),
                (":now", s(timestamp(now))),
                (":result", s(result.as_str())),
                (":expires", n(expiry(now, retention_days))),
                (":empty", AttributeValue::L(Vec::new())),
                (":record", AttributeValue::L(vec![record])),
            ],
        )
        .await
    }

    async fn release(
        &self,
        lease: Lease<'_>,
        due_at_ms: i64,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.leased_write(
            &lease,
            &[RequestState::Working, RequestState::Decided],
            "SET #until = :now_ms, #due = :due, #updated = :now",
            None,
            &[],
            vec![
                (":now_ms", n(now.timestamp_millis())),
                (":due", n(due_at_ms)),
                (":now", s(timestamp(now))),
            ],
        )
        .await
    }

    async fn park(
        &self,
        lease: Lease<'_>,
        reason: ParkReason,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.leased_write(
            &lease,
            &[RequestState::Working, RequestState::Decided],
            "SET #parked = :now, #parked_reason = :reason, #updated = :now REMOVE #due, #until",
            None,
            &[
                ("#parked", attr::PARKED_AT),
                ("#parked_reason", attr::PARKED_REASON),
            ],
            vec![(":now", s(timestamp(now))), (":reason", s(reason.as_str()))],
        )
        .await
    }

    async fn record_dry_run(
        &self,
        lease: Lease<'_>,
        decision: &Decision,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.leased_write(
            &lease,
            &[RequestState::Working],
            "SET #dry_status = :status, #dry_reason = :dry_reason, #parked = :now, \
             #parked_reason = :reason, #updated = :now REMOVE #due, #until",
            None,
            &[
                ("#dry_status", attr::DRY_RUN_STATUS),
                ("#dry_reason", attr::DRY_RUN_REASON),
                ("#parked", attr::PARKED_AT),
                ("#parked_reason", attr::PARKED_REASON),
            ],
            vec![
                (":status", s(decision.status.as_str())),
                (":dry_reason", s(decision.reason.clone())),
                (":now", s(timestamp(now))),
                (":reason", s(ParkReason::DryRun.as_str())),
            ],
        )
        .await
    }
}

impl DynamoRequestStore {
    /// The fence of a sweep's or an operator's write on `read`: same attempt and state,
    /// and (unless `reset`) the same `due_at` and `redrives`, not parked.
    fn read_fence(
        read: &RequestItem,
        reset: bool,
    ) -> (String, Vec<(&'static str, AttributeValue)>) {
        let mut condition = "#attempt = :attempt AND #state = :read_state".to_owned();
        let mut values = vec![
            (":attempt", n(read.attempt)),
            (":read_state", state(read.state)),
        ];
        if !reset {
            condition.push_str(" AND attribute_not_exists(#parked)");
            match read.due_at {
                Some(due) => {
                    condition.push_str(" AND #due = :read_due");
                    values.push((":read_due", n(due)));
                }
                None => condition.push_str(" AND attribute_not_exists(#due)"),
            }
            if read.redrives == 0 {
                condition.push_str(
                    " AND (attribute_not_exists(#redrives) OR #redrives = :read_redrives)",
                );
            } else {
                condition.push_str(" AND #redrives = :read_redrives");
            }
            values.push((":read_redrives", n(read.redrives)));
        }
        (condition, values)
    }
}

impl SweepStore for DynamoRequestStore {
    async fn due(
        &self,
        state_: RequestState,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        // Bounded: at most `limit` ids, and a page holds at least one unless it is the last.
        for _ in 0..=limit {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(BY_DUE)
                .key_condition_expression("#state = :state AND #due <= :now_ms")
                .expression_attribute_names("#state", attr::STATE)
                .expression_attribute_names("#due", attr::DUE_AT)
                .expression_attribute_values(":state", state(state_))
                .expression_attribute_values(":now_ms", n(now.timestamp_millis()))
                .limit(i32::try_from(limit - ids.len()).unwrap_or(i32::MAX).max(1))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error("Query", e))?;
            ids.extend(
                output
                    .items
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|item| item.get(attr::REQUEST_ID)?.as_s().ok().cloned()),
            );
            start = output.last_evaluated_key.filter(|key| !key.is_empty());
            if start.is_none() || ids.len() >= limit {
                break;
            }
        }
        ids.truncate(limit);
        Ok(ids)
    }

    async fn get_item(&self, id: &str) -> Result<Option<RequestItem>, StoreError> {
        self.get(id).await
    }

    async fn rearm(
        &self,
        read: &RequestItem,
        reset: bool,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let (condition, fence_values) = Self::read_fence(read, reset);
        let redrives = if reset { 0 } else { read.redrives + 1 };
        // An operator's re-arm of a decision opens a new re-send window.
        let expression = if reset && read.decided_status.is_some() {
            "SET #state = :received, #redrives = :redrives, #due = :due, #updated = :now, #decided_at = :now \
             REMOVE #owner, #until, #parked, #parked_reason"
        } else {
            "SET #state = :received, #redrives = :redrives, #due = :due, #updated = :now \
             REMOVE #owner, #until, #parked, #parked_reason"
        };
        let mut values = fence_values;
        values.extend([
            (":received", state(RequestState::Received)),
            (":redrives", n(redrives)),
            (":due", n(lifecycle::received_due(now))),
            (":now", s(timestamp(now))),
        ]);
        let update = expressions(
            self.update(&read.request_id),
            expression,
            &condition,
            &[("#decided_at", attr::DECIDED_AT)],
            values,
        );
        conditional("UpdateItem", update.send().await)
    }

    async fn park(
        &self,
        read: &RequestItem,
        reason: ParkReason,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let (condition, mut values) = Self::read_fence(read, false);
        values.extend([(":now", s(timestamp(now))), (":reason", s(reason.as_str()))]);
        let update = expressions(
            self.update(&read.request_id),
            "SET #parked = :now, #parked_reason = :reason, #updated = :now REMOVE #due",
            &condition,
            &[],
            values,
        );
        conditional("UpdateItem", update.send().await)
    }
}
