//! The requests store on DynamoDB: conditional writes make every operation safe to run
//! twice and safe to run concurrently.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use tracing::debug;

use super::layout::{attr, expiry, timestamp, RequestItem, RequestState};
use super::{
    plan_poll_write, Claim, Decision, PollPlan, PollWrite, RequestStore, StoreError, WorkStore,
};
use crate::model::ConnectionRequest;

/// How many read-decide-write rounds a contended write gets before giving up.
const MAX_ROUNDS: u32 = 5;

/// The requests table on DynamoDB.
#[derive(Clone)]
pub struct DynamoRequestStore {
    client: Client,
    table: String,
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
        message: format!("{}", DisplayErrorContext(&error)),
        transient,
    }
}

fn is_condition_failure<E, R>(error: &SdkError<E, R>) -> bool
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
        message: e.to_string(),
    })
}

pub(crate) fn from_item(
    id: &str,
    item: HashMap<String, AttributeValue>,
) -> Result<RequestItem, StoreError> {
    serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt {
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

impl DynamoRequestStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
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

    /// Replace a reported attempt by the next one, if the item is still exactly the
    /// reported attempt that was read.
    async fn put_requeued(&self, next: &RequestItem, read_attempt: u32) -> Result<(), WriteError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(next).map_err(WriteError::Other)?))
            .condition_expression("#state = :reported AND #attempt = :attempt")
            .expression_attribute_names("#state", attr::STATE)
            .expression_attribute_names("#attempt", attr::ATTEMPT)
            .expression_attribute_values(":reported", s(RequestState::Reported.as_str()))
            .expression_attribute_values(":attempt", n(read_attempt))
            .send()
            .await;
        write("PutItem", result)
    }

    /// Store a newer request token on an attempt still in progress.
    async fn refresh_token(
        &self,
        id: &str,
        token: &str,
        read_attempt: u32,
        now: DateTime<Utc>,
    ) -> Result<(), WriteError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::REQUEST_ID, s(id))
            .update_expression(
                "SET #token = :token, #updated = :now, #polled = if_not_exists(#polled, :zero) + :one",
            )
            .condition_expression("#attempt = :attempt AND #state <> :reported")
            .expression_attribute_names("#token", attr::REQUEST_TOKEN)
            .expression_attribute_names("#updated", attr::UPDATED_AT)
            .expression_attribute_names("#polled", attr::TIMES_POLLED)
            .expression_attribute_names("#attempt", attr::ATTEMPT)
            .expression_attribute_names("#state", attr::STATE)
            .expression_attribute_values(":token", s(token))
            .expression_attribute_values(":now", s(timestamp(now)))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":attempt", n(read_attempt))
            .expression_attribute_values(":reported", s(RequestState::Reported.as_str()))
            .send()
            .await;
        write("UpdateItem", result)
    }
}

impl RequestStore for DynamoRequestStore {
    async fn record_polled(
        &self,
        request: &ConnectionRequest,
        now: DateTime<Utc>,
    ) -> Result<PollWrite, StoreError> {
        let fresh = RequestItem::received(request, now);
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
            let outcome = match plan_poll_write(&existing, request) {
                PollPlan::Unchanged => return Ok(PollWrite::Unchanged),
                PollPlan::Requeue => {
                    let mut next = fresh.clone();
                    next.attempt = existing.attempt + 1;
                    next.history = existing.history.clone();
                    next.times_polled = existing.times_polled + 1;
                    self.put_requeued(&next, existing.attempt)
                        .await
                        .map(|()| PollWrite::Requeued {
                            attempt: next.attempt,
                        })
                }
                PollPlan::RefreshToken => {
                    let token = request.request_token_secret().unwrap_or_default();
                    self.refresh_token(&request.id, token, existing.attempt, now)
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
    /// What a failed claim ran into, read consistently.
    async fn claim_obstacle(
        &self,
        id: &str,
        attempt: u32,
        now: DateTime<Utc>,
    ) -> Result<Option<Claim>, StoreError> {
        let Some(item) = self.get(id).await? else {
            return Ok(Some(Claim::Stale));
        };
        if item.attempt != attempt {
            return Ok(Some(Claim::Stale));
        }
        Ok(match item.state {
            RequestState::Reported => Some(Claim::Done),
            RequestState::Decided => Some(Claim::Decided(item)),
            RequestState::Working => match item.lease_until {
                Some(until) if until > now.timestamp_millis() => {
                    Some(Claim::Busy { lease_until: until })
                }
                // The lease expired between the two calls: claim again.
                _ => None,
            },
            // Received again (e.g. a concurrent re-drive): claim again.
            RequestState::Received => None,
        })
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
        for _ in 0..MAX_ROUNDS {
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .key(attr::REQUEST_ID, s(id))
                .update_expression(
                    "SET #state = :working, #owner = :owner, #until = :until, #updated = :now",
                )
                .condition_expression(
                    "#attempt = :attempt AND (#state = :received OR (#state = :working AND #until < :now_ms))",
                )
                .expression_attribute_names("#state", attr::STATE)
                .expression_attribute_names("#owner", attr::LEASE_OWNER)
                .expression_attribute_names("#until", attr::LEASE_UNTIL)
                .expression_attribute_names("#updated", attr::UPDATED_AT)
                .expression_attribute_names("#attempt", attr::ATTEMPT)
                .expression_attribute_values(":working", s(RequestState::Working.as_str()))
                .expression_attribute_values(":received", s(RequestState::Received.as_str()))
                .expression_attribute_values(":owner", s(owner))
                .expression_attribute_values(":until", n(lease_until_ms))
                .expression_attribute_values(":now", s(timestamp(now)))
                .expression_attribute_values(":now_ms", n(now.timestamp_millis()))
                .expression_attribute_values(":attempt", n(attempt))
                .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
                .send()
                .await;
            match result {
                Ok(output) => {
                    let item = output.attributes.ok_or_else(|| StoreError::Corrupt {
                        id: id.to_owned(),
                        message: "claim returned no item".into(),
                    })?;
                    return Ok(Claim::Claimed(from_item(id, item)?));
                }
                Err(e) if is_condition_failure(&e) => {
                    if let Some(obstacle) = self.claim_obstacle(id, attempt, now).await? {
                        return Ok(obstacle);
                    }
                }
                Err(e) => return Err(sdk_error("UpdateItem", e)),
            }
        }
        Err(StoreError::Contention {
            id: id.to_owned(),
            tries: MAX_ROUNDS,
        })
    }

    async fn record_decision(
        &self,
        id: &str,
        attempt: u32,
        owner: &str,
        decision: &Decision,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::REQUEST_ID, s(id))
            .update_expression(
                "SET #state = :decided, #status = :status, #decided_at = :now, #reason = :reason, #updated = :now",
            )
            .condition_expression("#attempt = :attempt AND #state = :working AND #owner = :owner")
            .expression_attribute_names("#state", attr::STATE)
            .expression_attribute_names("#status", attr::DECIDED_STATUS)
            .expression_attribute_names("#decided_at", attr::DECIDED_AT)
            .expression_attribute_names("#reason", attr::DECISION_REASON)
            .expression_attribute_names("#updated", attr::UPDATED_AT)
            .expression_attribute_names("#attempt", attr::ATTEMPT)
            .expression_attribute_names("#owner", attr::LEASE_OWNER)
            .expression_attribute_values(":decided", s(RequestState::Decided.as_str()))
            .expression_attribute_values(":working", s(RequestState::Working.as_str()))
            .expression_attribute_values(":status", s(decision.status.as_str()))
            .expression_attribute_values(":reason", s(decision.reason.clone()))
            .expression_attribute_values(":now", s(timestamp(now)))
            .expression_attribute_values(":attempt", n(attempt))
            .expression_attribute_values(":owner", s(owner))
            .send()
            .await;
        conditional("UpdateItem", result)
    }

    async fn record_reported(
        &self,
        id: &str,
        attempt: u32,
        now: DateTime<Utc>,
        retention_days: i64,
    ) -> Result<bool, StoreError> {
        let Some(item) = self.get(id).await? else {
            return Ok(false);
        };
        if item.attempt != attempt || item.state != RequestState::Decided {
            return Ok(false);
        }
        let status = item.decided_status.ok_or_else(|| StoreError::Corrupt {
            id: id.to_owned(),
            message: "decided without a status".into(),
        })?;
        let record = super::AttemptRecord {
            attempt,
            status,
            decided_at: item.decided_at.clone().unwrap_or_else(|| timestamp(now)),
            reported_at: Some(timestamp(now)),
            reason: item.decision_reason.clone(),
        };
        let record =
            serde_dynamo::to_attribute_value(&record).map_err(|e| StoreError::Corrupt {
                id: id.to_owned(),
                message: e.to_string(),
            })?;
        let remove = attr::PERSONAL
            .iter()
            .chain([attr::LEASE_OWNER, attr::LEASE_UNTIL].iter())
            .enumerate()
            .map(|(i, _)| format!("#p{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::REQUEST_ID, s(id))
            .update_expression(format!(
                "SET #state = :reported, #reported_at = :now, #updated = :now, #expires = :expires, \
                 #history = list_append(if_not_exists(#history, :empty), :record) REMOVE {remove}"
            ))
            .condition_expression("#attempt = :attempt AND #state = :decided")
            .expression_attribute_names("#state", attr::STATE)
            .expression_attribute_names("#reported_at", attr::REPORTED_AT)
            .expression_attribute_names("#updated", attr::UPDATED_AT)
            .expression_attribute_names("#expires", attr::EXPIRES_AT)
            .expression_attribute_names("#history", attr::HISTORY)
            .expression_attribute_names("#attempt", attr::ATTEMPT)
            .expression_attribute_values(":reported", s(RequestState::Reported.as_str()))
            .expression_attribute_values(":decided", s(RequestState::Decided.as_str()))
            .expression_attribute_values(":now", s(timestamp(now)))
            .expression_attribute_values(":expires", n(expiry(now, retention_days)))
            .expression_attribute_values(":empty", AttributeValue::L(Vec::new()))
            .expression_attribute_values(":record", AttributeValue::L(vec![record]))
            .expression_attribute_values(":attempt", n(attempt));
        for (i, name) in attr::PERSONAL
            .iter()
            .chain([attr::LEASE_OWNER, attr::LEASE_UNTIL].iter())
            .enumerate()
        {
            update = update.expression_attribute_names(format!("#p{i}"), *name);
        }
        conditional("UpdateItem", update.send().await)
    }

    async fn redrive(
        &self,
        id: &str,
        attempt: u32,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::REQUEST_ID, s(id))
            .update_expression(
                "SET #state = :received, #updated = :now REMOVE #owner, #until, #status, #decided_at, #reason",
            )
            .condition_expression("#attempt = :attempt AND #state = :working")
            .expression_attribute_names("#state", attr::STATE)
            .expression_attribute_names("#updated", attr::UPDATED_AT)
            .expression_attribute_names("#owner", attr::LEASE_OWNER)
            .expression_attribute_names("#until", attr::LEASE_UNTIL)
            .expression_attribute_names("#status", attr::DECIDED_STATUS)
            .expression_attribute_names("#decided_at", attr::DECIDED_AT)
            .expression_attribute_names("#reason", attr::DECISION_REASON)
            .expression_attribute_names("#attempt", attr::ATTEMPT)
            .expression_attribute_values(":received", s(RequestState::Received.as_str()))
            .expression_attribute_values(":working", s(RequestState::Working.as_str()))
            .expression_attribute_values(":now", s(timestamp(now)))
            .expression_attribute_values(":attempt", n(attempt))
            .send()
            .await;
        conditional("UpdateItem", result)
    }
}
