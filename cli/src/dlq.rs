//! `triplink dlq redrive`: the worker's Lambda on-failure destination is an SQS queue;
//! each message describes a failed batch of the requests table's stream
//! (`DDBStreamBatchInfo`: shard, first and last sequence numbers, stream ARN). The
//! batch's records are read again from the stream, the request ids they name are
//! collected, [`crate::retry::retry`] is applied to each, and the message is deleted.
//! A message whose records are gone from the stream (DynamoDB keeps them 24 hours), or
//! whose requests could not all be sent back, is left in the queue and reported.

use std::collections::HashSet;

use aws_sdk_dynamodbstreams::error::ProvideErrorMetadata;
use aws_sdk_dynamodbstreams::types::{AttributeValue, ShardIteratorType};
use serde::{Deserialize, Serialize};

use crate::output::{Render, Table};
use crate::retry::{retry, RetryReport, RetryStore};
use crate::CliError;

/// GetRecords calls per batch at most (a batch is at most 10,000 records).
const MAX_GET_RECORDS_CALLS: usize = 200;
/// Consecutive empty GetRecords answers after which the shard is taken as read.
const MAX_EMPTY_READS: usize = 3;
/// How long received messages stay invisible to other consumers while handled.
const VISIBILITY_TIMEOUT_SECONDS: i32 = 300;

/// Lambda's on-failure record for a DynamoDB stream batch (the fields used).
#[derive(Debug, Clone, Deserialize)]
pub struct FailureRecord {
    #[serde(rename = "DDBStreamBatchInfo")]
    pub batch: Option<BatchInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchInfo {
    pub shard_id: String,
    pub start_sequence_number: String,
    pub end_sequence_number: String,
    pub stream_arn: String,
    #[serde(default)]
    pub batch_size: Option<u64>,
}

/// DynamoDB sequence numbers are decimal strings of varying length: compare as numbers.
pub fn sequence_order(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// The request ids of one batch, in stream order, each once.
#[derive(Debug, Default)]
pub struct BatchRecords {
    pub records: usize,
    pub request_ids: Vec<String>,
}

/// Why a batch cannot be read.
#[derive(Debug)]
pub enum ReadError {
    /// The records are no longer in the stream (trimmed, or the stream is gone).
    Gone(String),
    /// Another failure (network, permissions): worth trying again later.
    Failed(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Gone(m) => write!(f, "the batch's records are no longer in the stream: {m}"),
            Self::Failed(m) => write!(f, "the stream could not be read: {m}"),
        }
    }
}

fn classify<E, R>(op: &str, error: aws_sdk_dynamodbstreams::error::SdkError<E, R>) -> ReadError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let code = error
        .as_service_error()
        .and_then(|e| e.code())
        .unwrap_or("")
        .to_owned();
    let message = format!("{op}: {}", crate::aws::describe(&error));
    match code.as_str() {
        "TrimmedDataAccessException" | "ResourceNotFoundException" | "ExpiredIteratorException" => {
            ReadError::Gone(message)
        }
        _ => ReadError::Failed(message),
    }
}

/// Read the records of one batch: from `startSequenceNumber` until past
/// `endSequenceNumber` (or `batchSize` records, or the end of the shard).
pub async fn read_batch(
    streams: &aws_sdk_dynamodbstreams::Client,
    batch: &BatchInfo,
) -> Result<BatchRecords, ReadError> {
    let mut iterator = streams
        .get_shard_iterator()
        .stream_arn(&batch.stream_arn)
        .shard_id(&batch.shard_id)
        .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
        .sequence_number(&batch.start_sequence_number)
        .send()
        .await
        .map_err(|e| classify("GetShardIterator", e))?
        .shard_iterator;
    let mut out = BatchRecords::default();
    let mut seen = HashSet::new();
    let mut empty = 0;
    let limit = batch.batch_size.unwrap_or(u64::MAX);
    'read: for _ in 0..MAX_GET_RECORDS_CALLS {
        let Some(current) = iterator.take() else {
            break;
        };
        let output = streams
            .get_records()
            .shard_iterator(current)
            .send()
            .await
            .map_err(|e| classify("GetRecords", e))?;
        let records = output.records.unwrap_or_default();
        if records.is_empty() {
            empty += 1;
            if empty >= MAX_EMPTY_READS {
                break;
            }
        } else {
            empty = 0;
        }
        for record in records {
            let Some(data) = record.dynamodb else {
                continue;
            };
            let sequence = data.sequence_number.unwrap_or_default();
            if sequence_order(&sequence, &batch.start_sequence_number).is_lt() {
                continue;
            }
            if sequence_order(&sequence, &batch.end_sequence_number).is_gt() {
                break 'read;
            }
            out.records += 1;
            if let Some(AttributeValue::S(id)) = data
                .keys
                .as_ref()
                .and_then(|k| k.get(triplink_shared::store::layout::attr::REQUEST_ID))
            {
                if seen.insert(id.clone()) {
                    out.request_ids.push(id.clone());
                }
            }
            if out.records as u64 >= limit
                || sequence_order(&sequence, &batch.end_sequence_number).is_eq()
            {
                break 'read;
            }
        }
        iterator = output.next_shard_iterator;
    }
    if out.records == 0 {
        return Err(ReadError::Gone(format!(
            "no record between sequence numbers {} and {} in shard {}",
            batch.start_sequence_number, batch.end_sequence_number, batch.shard_id
        )));
    }
    Ok(out)
}

/// One message, handled.
#[derive(Debug, Clone, Serialize)]
pub struct MessageReport {
    pub message_id: String,
    pub batch: Option<BatchInfo>,
    pub records_read: usize,
    pub results: Vec<RetryReport>,
    pub deleted: bool,
    /// Why the message was left in the queue.
    pub problem: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DlqReport {
    pub queue_url: String,
    pub messages: usize,
    pub deleted: usize,
    pub left: usize,
    pub requests: usize,
    pub details: Vec<MessageReport>,
}

/// What `dlq redrive` works with.
pub struct Redriver<'a, S> {
    pub sqs: aws_sdk_sqs::Client,
    pub streams: aws_sdk_dynamodbstreams::Client,
    pub store: &'a S,
}

impl<S: RetryStore> Redriver<'_, S> {
    /// Handle at most `max` messages of the queue.
    pub async fn redrive(&self, queue_url: &str, max: usize) -> Result<DlqReport, CliError> {
        let mut report = DlqReport {
            queue_url: queue_url.to_owned(),
            messages: 0,
            deleted: 0,
            left: 0,
            requests: 0,
            details: Vec::new(),
        };
        let mut seen = HashSet::new();
        while report.messages < max {
            let wanted = (max - report.messages).min(10) as i32;
            let output = self
                .sqs
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages(wanted)
                .visibility_timeout(VISIBILITY_TIMEOUT_SECONDS)
                .wait_time_seconds(1)
                .send()
                .await
                .map_err(|e| {
                    CliError(format!(
                        "cannot receive from the queue {queue_url}: {}",
                        crate::aws::describe(&e)
                    ))
                })?;
            let messages = output.messages.unwrap_or_default();
            if messages.is_empty() {
                break;
            }
            let mut fresh = 0;
            for message in messages {
                let id = message.message_id.clone().unwrap_or_default();
                if !seen.insert(id.clone()) || report.messages >= max {
                    continue;
                }
                fresh += 1;
                report.messages += 1;
                let handled = self.handle(queue_url, message).await?;
                report.requests += handled.results.len();
                if handled.deleted {
                    report.deleted += 1;
                } else {
                    report.left += 1;
                }
                report.details.push(handled);
            }
            if fresh == 0 {
                break;
            }
        }
        Ok(report)
    }

    async fn handle(
        &self,
        queue_url: &str,
        message: aws_sdk_sqs::types::Message,
    ) -> Result<MessageReport, CliError> {
        let mut report = MessageReport {
            message_id: message.message_id.clone().unwrap_or_default(),
            batch: None,
            records_read: 0,
            results: Vec::new(),
            deleted: false,
            problem: None,
        };
        let body = message.body.as_deref().unwrap_or("");
        let batch = match serde_json::from_str::<FailureRecord>(body) {
            Ok(FailureRecord { batch: Some(batch) }) => batch,
            Ok(FailureRecord { batch: None }) => {
                report.problem =
                    Some("not a DynamoDB stream failure record (no DDBStreamBatchInfo); left in the queue".into());
                return Ok(report);
            }
            Err(e) => {
                report.problem = Some(format!(
                    "the message body is not JSON ({e}); left in the queue"
                ));
                return Ok(report);
            }
        };
        report.batch = Some(batch.clone());
        let records = match read_batch(&self.streams, &batch).await {
            Ok(records) => records,
            Err(e) => {
                report.problem = Some(format!("{e}; left in the queue"));
                return Ok(report);
            }
        };
        report.records_read = records.records;
        let mut failures = Vec::new();
        for id in &records.request_ids {
            match retry(self.store, id, false).await {
                Ok(result) => {
                    if !result.action.is_done() {
                        failures.push(format!("{id}: {}", result.message));
                    }
                    report.results.push(result);
                }
                Err(e) => failures.push(format!("{id}: {}", crate::aws::concise(&e.to_string()))),
            }
        }
        if !failures.is_empty() {
            report.problem = Some(format!(
                "not every request could be sent back ({}); left in the queue",
                failures.join("; ")
            ));
            return Ok(report);
        }
        let Some(receipt) = message.receipt_handle else {
            report.problem = Some("the message has no receipt handle; left in the queue".into());
            return Ok(report);
        };
        self.sqs
            .delete_message()
            .queue_url(queue_url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| {
                CliError(format!(
                    "requests re-driven, but message {} could not be deleted: {}",
                    report.message_id,
                    crate::aws::describe(&e)
                ))
            })?;
        report.deleted = true;
        Ok(report)
    }
}

impl Render for DlqReport {
    fn render(&self) -> String {
        let mut out = format!(
            "{} message(s) from {}: {} deleted, {} left in the queue; {} request(s) handled\n",
            self.messages, self.queue_url, self.deleted, self.left, self.requests
        );
        let mut table = Table::new(["message", "request", "state found", "action"]);
        for message in &self.details {
            if message.results.is_empty() {
                table.row([
                    message.message_id.clone(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ]);
            }
            for result in &message.results {
                table.row([
                    message.message_id.clone(),
                    result.request_id.clone(),
                    result.state.unwrap_or("-").to_owned(),
                    format!("{:?}", result.action).to_lowercase(),
                ]);
            }
        }
        if !table.is_empty() {
            out.push('\n');
            out.push_str(&table.render());
        }
        let problems: Vec<_> = self
            .details
            .iter()
            .filter_map(|m| m.problem.as_ref().map(|p| format!("{}: {p}", m.message_id)))
            .collect();
        if !problems.is_empty() {
            out.push_str("\nLeft in the queue:\n");
            for problem in problems {
                out.push_str(&format!("  {problem}\n"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambda_failure_records_parse() {
        let body = r#"{
            "requestContext": {"requestId": "r", "functionArn": "arn:aws:lambda:us-east-1:1:function:w",
                               "condition": "RetryAttemptsExhausted", "approximateInvokeCount": 3},
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "version": "1.0", "timestamp": "2026-01-01T00:00:00.000Z",
            "DDBStreamBatchInfo": {"shardId": "shardId-1", "startSequenceNumber": "100",
                "endSequenceNumber": "102", "approximateArrivalOfFirstRecord": "2026-01-01T00:00:00Z",
                "approximateArrivalOfLastRecord": "2026-01-01T00:00:00Z", "batchSize": 3,
                "streamArn": "arn:aws:dynamodb:us-east-1:1:table/t/stream/2026"}
        }"#;
        let record: FailureRecord = serde_json::from_str(body).unwrap();
        let batch = record.batch.unwrap();
        assert_eq!(batch.shard_id, "shardId-1");
        assert_eq!(batch.batch_size, Some(3));
        assert!(sequence_order("999", "1000").is_lt());
    }
}
