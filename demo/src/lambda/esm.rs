//! A DynamoDB stream event source mapping, as Lambda runs one, configured from the
//! template's `Type: DynamoDB` event of a function.
//!
//! Per shard, records are read in order (polled four times a second, from
//! `StartingPosition`), matched against the `FilterCriteria` (records that match no
//! filter are dropped: the checkpoint moves past them), gathered into batches of
//! `BatchSize` or whatever arrived within `MaximumBatchingWindowInSeconds` (the window
//! starts when the previous invocation ends), and sent to the function one batch at a
//! time (`ParallelizationFactor` 1), in events shaped as Lambda shapes them.
//!
//! How a batch ends:
//! * success without `batchItemFailures` → checkpoint after the batch;
//! * with `ReportBatchItemFailures`, failures reported → the records before the lowest
//!   reported sequence number are checkpointed and the batch is retried from it (a
//!   retry); an empty, null or unknown `itemIdentifier`, or a response that is not an
//!   event response, fails the whole batch (retried whole, a retry);
//! * a function error (an error response, a crash, a timeout, a failed init) → with
//!   `BisectBatchOnFunctionError` a batch of two or more records is split in two halves
//!   retried in order, which does not count as a retry (the halves keep the retry count
//!   of the batch); a single record, or any batch without bisection, is retried whole
//!   (a retry);
//! * when a batch that failed has used `MaximumRetryAttempts` retries, or before an
//!   invocation for its records older than `MaximumRecordAgeInSeconds`, the records are
//!   discarded: an invocation record goes to the `OnFailure` destination (an SQS queue)
//!   and the checkpoint moves past them.
//!
//! Retries follow at once (`retry_delay`, zero unless a caller sets one).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodbstreams::types::{AttributeValue, ShardIteratorType};
use axum::body::Bytes;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use super::filter::FilterCriteria;
use super::lock;
use super::process::{LambdaFunction, Outcome};
use super::template::FunctionSpec;

#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error("event {event} of {function}: {message}")]
    Config {
        function: String,
        event: String,
        message: String,
    },
    #[error("DynamoDB Streams: {0}")]
    Stream(String),
    #[error("dead-letter queue: {0}")]
    DeadLetter(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartingPosition {
    TrimHorizon,
    Latest,
}

/// The mapping's settings.
#[derive(Debug, Clone)]
pub struct MappingConfig {
    pub function_arn: String,
    pub stream_arn: String,
    pub starting_position: StartingPosition,
    pub batch_size: usize,
    pub batching_window: Duration,
    /// `None`: retried until the record expires (`-1`).
    pub max_retry_attempts: Option<u64>,
    /// `None`: no age limit (`-1`).
    pub max_record_age: Option<Duration>,
    pub bisect_on_function_error: bool,
    pub report_batch_item_failures: bool,
    pub filters: FilterCriteria,
    /// `DestinationConfig.OnFailure.Destination` (an SQS queue ARN).
    pub on_failure: Option<String>,
    /// How often an idle shard is polled (Lambda: four times a second).
    pub poll_interval: Duration,
    /// Pause before a retry (Lambda retries at once).
    pub retry_delay: Duration,
}

impl MappingConfig {
    /// The `Type: DynamoDB` event `event` of a function, as the stack evaluates it.
    pub fn from_template(spec: &FunctionSpec, event: &str) -> Result<Self, MappingError> {
        let fail = |message: String| MappingError::Config {
            function: spec.logical_id.clone(),
            event: event.to_owned(),
            message,
        };
        let declared = spec
            .events
            .get(event)
            .ok_or_else(|| fail("no such event".into()))?;
        if declared.kind != "DynamoDB" {
            return Err(fail(format!("a {} event, not DynamoDB", declared.kind)));
        }
        let p = &declared.properties;
        let number = |key: &str, default: i64| -> Result<i64, MappingError> {
            match p.get(key) {
                None => Ok(default),
                Some(Value::Number(n)) => n.as_i64().ok_or_else(|| fail(format!("{key}: {n}"))),
                Some(Value::String(s)) => s.trim().parse().map_err(|_| fail(format!("{key}: {s}"))),
                Some(other) => Err(fail(format!("{key}: {other}"))),
            }
        };
        let flag = |key: &str| -> Result<bool, MappingError> {
            match p.get(key) {
                None => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                Some(Value::String(s)) => s.parse().map_err(|_| fail(format!("{key}: {s}"))),
                Some(other) => Err(fail(format!("{key}: {other}"))),
            }
        };
        if p.get("Enabled").is_some() && !flag("Enabled")? {
            return Err(fail("the mapping is disabled".into()));
        }
        if number("ParallelizationFactor", 1)? != 1 {
            return Err(fail(
                "ParallelizationFactor other than 1 is not emulated".into(),
            ));
        }
        if p.get("TumblingWindowInSeconds").is_some() {
            return Err(fail("TumblingWindowInSeconds is not emulated".into()));
        }
        let stream_arn = p
            .get("Stream")
            .and_then(Value::as_str)
            .ok_or_else(|| fail("no Stream".into()))?
            .to_owned();
        let starting_position = match p.get("StartingPosition").and_then(Value::as_str) {
            Some("TRIM_HORIZON") => StartingPosition::TrimHorizon,
            Some("LATEST") => StartingPosition::Latest,
            other => return Err(fail(format!("StartingPosition {other:?}"))),
        };
        let batch_size = number("BatchSize", 100)?;
        if !(1..=10_000).contains(&batch_size) {
            return Err(fail(format!("BatchSize {batch_size}")));
        }
        let window = number("MaximumBatchingWindowInSeconds", 0)?;
        let retries = number("MaximumRetryAttempts", -1)?;
        let age = number("MaximumRecordAgeInSeconds", -1)?;
        let response_types: Vec<String> = p
            .get("FunctionResponseTypes")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let on_failure = match p.get("DestinationConfig").and_then(|d| d.get("OnFailure")) {
            None => None,
            Some(destination) => {
                if let Some(kind) = destination.get("Type").and_then(Value::as_str) {
                    if kind != "SQS" {
                        return Err(fail(format!("OnFailure Type {kind} is not emulated")));
                    }
                }
                Some(
                    destination
                        .get("Destination")
                        .and_then(Value::as_str)
                        .ok_or_else(|| fail("OnFailure without Destination".into()))?
                        .to_owned(),
                )
            }
        };
        Ok(Self {
            function_arn: spec.function_arn.clone(),
            stream_arn,
            starting_position,
            batch_size: batch_size as usize,
            batching_window: Duration::from_secs(window.max(0) as u64),
            max_retry_attempts: (retries >= 0).then_some(retries as u64),
            max_record_age: (age >= 0).then(|| Duration::from_secs(age as u64)),
            bisect_on_function_error: flag("BisectBatchOnFunctionError")?,
            report_batch_item_failures: response_types
                .iter()
                .any(|t| t == "ReportBatchItemFailures"),
            filters: FilterCriteria::from_property(p.get("FilterCriteria"))
                .map_err(|e| fail(e.to_string()))?,
            on_failure,
            poll_interval: Duration::from_millis(250),
            retry_delay: Duration::ZERO,
        })
    }
}

/// One stream record as the function receives it.
#[derive(Debug, Clone)]
pub struct StreamRecord {
    pub json: Value,
    pub sequence_number: String,
    pub created: DateTime<Utc>,
    /// When the mapping read it.
    pub read_at: Instant,
}

fn attribute_json(value: &AttributeValue) -> Value {
    let b64 = |b: &aws_sdk_dynamodbstreams::primitives::Blob| {
        Value::String(base64::engine::general_purpose::STANDARD.encode(b.as_ref()))
    };
    match value {
        AttributeValue::S(s) => json!({"S": s}),
        AttributeValue::N(n) => json!({"N": n}),
        AttributeValue::B(b) => json!({"B": b64(b)}),
        AttributeValue::Ss(v) => json!({"SS": v}),
        AttributeValue::Ns(v) => json!({"NS": v}),
        AttributeValue::Bs(v) => json!({"BS": v.iter().map(b64).collect::<Vec<_>>()}),
        AttributeValue::M(m) => json!({"M": item_json(m)}),
        AttributeValue::L(l) => json!({"L": l.iter().map(attribute_json).collect::<Vec<_>>()}),
        AttributeValue::Null(b) => json!({"NULL": b}),
        AttributeValue::Bool(b) => json!({"BOOL": b}),
        _ => json!({}),
    }
}

fn item_json(item: &std::collections::HashMap<String, AttributeValue>) -> Value {
    let mut out = Map::new();
    for (key, value) in item {
        out.insert(key.clone(), attribute_json(value));
    }
    Value::Object(out)
}

/// A record of DynamoDB Streams as Lambda delivers it: `eventVersion` 1.1,
/// `ApproximateCreationDateTime` in epoch seconds, images only when present.
pub fn lambda_record(
    record: &aws_sdk_dynamodbstreams::types::Record,
    stream_arn: &str,
) -> Option<StreamRecord> {
    let stream = record.dynamodb.as_ref()?;
    let sequence_number = stream.sequence_number.clone()?;
    let created_secs = stream
        .approximate_creation_date_time
        .map(|t| t.secs())
        .unwrap_or_else(|| Utc::now().timestamp());
    let mut dynamodb = Map::new();
    dynamodb.insert("ApproximateCreationDateTime".into(), json!(created_secs));
    dynamodb.insert(
        "Keys".into(),
        stream
            .keys
            .as_ref()
            .map(item_json)
            .unwrap_or_else(|| json!({})),
    );
    if let Some(image) = &stream.new_image {
        dynamodb.insert("NewImage".into(), item_json(image));
    }
    if let Some(image) = &stream.old_image {
        dynamodb.insert("OldImage".into(), item_json(image));
    }
    dynamodb.insert("SequenceNumber".into(), json!(sequence_number));
    dynamodb.insert("SizeBytes".into(), json!(stream.size_bytes.unwrap_or(0)));
    if let Some(view) = &stream.stream_view_type {
        dynamodb.insert("StreamViewType".into(), json!(view.as_str()));
    }
    let mut out = Map::new();
    out.insert(
        "eventID".into(),
        json!(record.event_id.clone().unwrap_or_default()),
    );
    out.insert(
        "eventName".into(),
        json!(record.event_name.as_ref().map(|n| n.as_str()).unwrap_or("")),
    );
    out.insert("eventVersion".into(), json!("1.1"));
    out.insert("eventSource".into(), json!("aws:dynamodb"));
    out.insert(
        "awsRegion".into(),
        json!(record.aws_region.clone().unwrap_or_default()),
    );
    out.insert("dynamodb".into(), Value::Object(dynamodb));
    if let Some(identity) = &record.user_identity {
        out.insert(
            "userIdentity".into(),
            json!({"type": identity.r#type, "principalId": identity.principal_id}),
        );
    }
    out.insert("eventSourceARN".into(), json!(stream_arn));
    Some(StreamRecord {
        json: Value::Object(out),
        sequence_number,
        created: Utc
            .timestamp_opt(created_secs, 0)
            .single()
            .unwrap_or_else(Utc::now),
        read_at: Instant::now(),
    })
}

/// The function a mapping invokes.
pub trait Target: Send + Sync {
    /// Invoke with the event; the invocation's request id and how it ended.
    fn invoke(&self, event: Bytes) -> impl Future<Output = (String, Outcome)> + Send;
}

impl Target for Arc<LambdaFunction> {
    async fn invoke(&self, event: Bytes) -> (String, Outcome) {
        let invocation = LambdaFunction::invoke(self, event).await;
        (invocation.request_id, invocation.outcome)
    }
}

/// Where discarded batches are described.
pub trait DeadLetter: Send + Sync {
    fn send(&self, message: Value) -> impl Future<Output = Result<(), String>> + Send;
}

/// An SQS queue (the `OnFailure` destination).
#[derive(Clone)]
pub struct SqsDeadLetter {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsDeadLetter {
    /// The queue of an ARN (`arn:aws:sqs:region:account:name`).
    pub async fn new(client: aws_sdk_sqs::Client, queue_arn: &str) -> Result<Self, MappingError> {
        let parts: Vec<&str> = queue_arn.split(':').collect();
        let (Some(account), Some(name)) = (parts.get(4), parts.get(5)) else {
            return Err(MappingError::DeadLetter(format!(
                "not a queue ARN: {queue_arn}"
            )));
        };
        let queue_url = client
            .get_queue_url()
            .queue_name(*name)
            .queue_owner_aws_account_id(*account)
            .send()
            .await
            .map_err(|e| {
                MappingError::DeadLetter(aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
            })?
            .queue_url
            .ok_or_else(|| MappingError::DeadLetter(format!("no URL for {queue_arn}")))?;
        Ok(Self { client, queue_url })
    }
}

impl DeadLetter for SqsDeadLetter {
    async fn send(&self, message: Value) -> Result<(), String> {
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(message.to_string())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
    }
}

/// No destination configured: discarded records are only counted.
pub struct NoDeadLetter;

impl DeadLetter for NoDeadLetter {
    async fn send(&self, _message: Value) -> Result<(), String> {
        Ok(())
    }
}

/// What the mapping did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MappingStats {
    pub records_read: u64,
    pub filtered_out: u64,
    pub invocations: u64,
    pub successes: u64,
    /// Responses with batch item failures.
    pub partial_failures: u64,
    /// Responses that fail the whole batch (bad `itemIdentifier`, not a response).
    pub invalid_responses: u64,
    /// Function errors, crashes, timeouts, failed inits.
    pub function_errors: u64,
    pub bisections: u64,
    pub retries: u64,
    pub dead_lettered_records: u64,
    pub dlq_messages: u64,
    pub dlq_send_failures: u64,
    pub read_errors: u64,
    /// Records waiting or in a batch being processed.
    pub pending: u64,
    pub in_flight: bool,
}

#[derive(Debug)]
enum BatchResult {
    Success,
    /// Retry from this index of the batch (records before it are done).
    FailedFrom(usize),
    /// The response fails the whole batch (not a function error).
    Invalid,
}

/// How a successful response ends a batch.
fn judge_response(body: &[u8], batch: &[StreamRecord], report_failures: bool) -> BatchResult {
    if !report_failures {
        return BatchResult::Success;
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return BatchResult::Success;
    }
    let Ok(response) = serde_json::from_slice::<Value>(body) else {
        return BatchResult::Invalid;
    };
    let failures = match &response {
        Value::Null => return BatchResult::Success,
        Value::Object(object) => match object.get("batchItemFailures") {
            None | Some(Value::Null) => return BatchResult::Success,
            Some(Value::Array(failures)) => failures,
            Some(_) => return BatchResult::Invalid,
        },
        _ => return BatchResult::Invalid,
    };
    let mut lowest: Option<usize> = None;
    for failure in failures {
        let id = failure.get("itemIdentifier").and_then(Value::as_str);
        let Some(id) = id.filter(|id| !id.is_empty()) else {
            return BatchResult::Invalid;
        };
        let Some(index) = batch.iter().position(|r| r.sequence_number == id) else {
            return BatchResult::Invalid;
        };
        lowest = Some(lowest.map_or(index, |l| l.min(index)));
    }
    match lowest {
        None => BatchResult::Success,
        Some(index) => BatchResult::FailedFrom(index),
    }
}

/// A batch in progress: its records, the retries it used, the invocations it had.
struct Segment {
    records: Vec<StreamRecord>,
    retries: u64,
    invocations: u64,
    last_request_id: Option<String>,
    last_function_error: bool,
}

/// Runs batches of one shard against the function.
pub struct BatchRunner<T, D> {
    pub config: MappingConfig,
    pub shard_id: String,
    pub target: T,
    pub dead_letter: D,
    pub stats: Arc<Mutex<MappingStats>>,
}

impl<T: Target, D: DeadLetter> BatchRunner<T, D> {
    fn exhausted(&self, retries: u64) -> bool {
        self.config
            .max_retry_attempts
            .is_some_and(|max| retries >= max)
    }

    async fn discard(&self, segment: &Segment, records: &[StreamRecord], condition: &str) {
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            return;
        };
        let time = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
        let mut message = json!({
            "requestContext": {
                "requestId": segment.last_request_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                "functionArn": self.config.function_arn,
                "condition": condition,
                "approximateInvokeCount": segment.invocations,
            },
            "version": "1.0",
            "timestamp": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            "DDBStreamBatchInfo": {
                "shardId": self.shard_id,
                "startSequenceNumber": first.sequence_number,
                "endSequenceNumber": last.sequence_number,
                "approximateArrivalOfFirstRecord": time(&first.created),
                "approximateArrivalOfLastRecord": time(&last.created),
                "batchSize": records.len(),
                "streamArn": self.config.stream_arn,
            }
        });
        if segment.invocations > 0 {
            let mut response = json!({"statusCode": 200, "executedVersion": "$LATEST"});
            if segment.last_function_error {
                response["functionError"] = json!("Unhandled");
            }
            message["responseContext"] = response;
        }
        let sent = if self.config.on_failure.is_some() {
            self.dead_letter.send(message).await
        } else {
            Ok(())
        };
        let mut stats = lock(&self.stats);
        stats.dead_lettered_records += records.len() as u64;
        match sent {
            Ok(()) if self.config.on_failure.is_some() => stats.dlq_messages += 1,
            Ok(()) => {}
            Err(_) => stats.dlq_send_failures += 1,
        }
    }

    /// Process one batch to its end: every record is done or discarded.
    pub async fn run_batch(&self, records: Vec<StreamRecord>) {
        let mut work: VecDeque<Segment> = VecDeque::from([Segment {
            records,
            retries: 0,
            invocations: 0,
            last_request_id: None,
            last_function_error: false,
        }]);
        let mut first = true;
        while let Some(mut segment) = work.pop_front() {
            if let Some(max_age) = self.config.max_record_age {
                let now = Utc::now();
                let expired = segment
                    .records
                    .iter()
                    .take_while(|r| (now - r.created).to_std().unwrap_or(Duration::ZERO) > max_age)
                    .count();
                if expired > 0 {
                    let old: Vec<StreamRecord> = segment.records.drain(..expired).collect();
                    self.discard(&segment, &old, "RecordAgeExceeded").await;
                }
            }
            if segment.records.is_empty() {
                continue;
            }
            if !first && !self.config.retry_delay.is_zero() {
                tokio::time::sleep(self.config.retry_delay).await;
            }
            first = false;
            let event = json!({
                "Records": segment.records.iter().map(|r| r.json.clone()).collect::<Vec<_>>()
            });
            lock(&self.stats).invocations += 1;
            let (request_id, outcome) = self.target.invoke(Bytes::from(event.to_string())).await;
            segment.invocations += 1;
            segment.last_request_id = Some(request_id);
            let result = match &outcome {
                Outcome::Success(body) => {
                    segment.last_function_error = false;
                    judge_response(
                        body,
                        &segment.records,
                        self.config.report_batch_item_failures,
                    )
                }
                Outcome::Throttled => {
                    // Not an invocation: Lambda waits and tries again, no retry used.
                    lock(&self.stats).invocations -= 1;
                    segment.invocations -= 1;
                    tokio::time::sleep(self.config.poll_interval).await;
                    work.push_front(segment);
                    continue;
                }
                _ => {
                    segment.last_function_error = true;
                    lock(&self.stats).function_errors += 1;
                    if self.config.bisect_on_function_error && segment.records.len() > 1 {
                        let second = segment.records.split_off(segment.records.len() / 2);
                        lock(&self.stats).bisections += 1;
                        work.push_front(Segment {
                            records: second,
                            retries: segment.retries,
                            invocations: segment.invocations,
                            last_request_id: segment.last_request_id.clone(),
                            last_function_error: true,
                        });
                        work.push_front(segment);
                        continue;
                    }
                    BatchResult::FailedFrom(0)
                }
            };
            let from = match result {
                BatchResult::Success => {
                    lock(&self.stats).successes += 1;
                    continue;
                }
                BatchResult::FailedFrom(from) => {
                    if !segment.last_function_error {
                        lock(&self.stats).partial_failures += 1;
                    }
                    from
                }
                BatchResult::Invalid => {
                    lock(&self.stats).invalid_responses += 1;
                    0
                }
            };
            segment.records.drain(..from);
            if self.exhausted(segment.retries) {
                let records = std::mem::take(&mut segment.records);
                self.discard(&segment, &records, "RetryAttemptsExhausted")
                    .await;
                continue;
            }
            segment.retries += 1;
            lock(&self.stats).retries += 1;
            work.push_front(segment);
        }
    }
}

/// Reads one shard in order.
struct ShardReader {
    client: aws_sdk_dynamodbstreams::Client,
    stream_arn: String,
    iterator: Option<String>,
}

impl ShardReader {
    async fn open(
        client: aws_sdk_dynamodbstreams::Client,
        stream_arn: &str,
        shard_id: &str,
        position: StartingPosition,
    ) -> Result<Self, MappingError> {
        let kind = match position {
            StartingPosition::TrimHorizon => ShardIteratorType::TrimHorizon,
            StartingPosition::Latest => ShardIteratorType::Latest,
        };
        let iterator = client
            .get_shard_iterator()
            .stream_arn(stream_arn)
            .shard_id(shard_id)
            .shard_iterator_type(kind)
            .send()
            .await
            .map_err(|e| {
                MappingError::Stream(
                    aws_sdk_dynamodbstreams::error::DisplayErrorContext(e).to_string(),
                )
            })?
            .shard_iterator;
        Ok(Self {
            client,
            stream_arn: stream_arn.to_owned(),
            iterator,
        })
    }

    /// Everything written since the last read.
    async fn read(&mut self) -> Result<Vec<StreamRecord>, MappingError> {
        let mut out = Vec::new();
        for _ in 0..1000 {
            let Some(iterator) = self.iterator.clone() else {
                break;
            };
            let page = self
                .client
                .get_records()
                .shard_iterator(iterator)
                .limit(1000)
                .send()
                .await
                .map_err(|e| {
                    MappingError::Stream(
                        aws_sdk_dynamodbstreams::error::DisplayErrorContext(e).to_string(),
                    )
                })?;
            let records = page.records.unwrap_or_default();
            let empty = records.is_empty();
            out.extend(
                records
                    .iter()
                    .filter_map(|r| lambda_record(r, &self.stream_arn)),
            );
            self.iterator = page.next_shard_iterator;
            if empty {
                break;
            }
        }
        Ok(out)
    }
}

/// A running mapping: one task per shard; stopped (and its invocations cancelled)
/// when dropped.
pub struct EventSourceMapping {
    pub config: MappingConfig,
    stats: Arc<Mutex<MappingStats>>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl EventSourceMapping {
    /// Start reading the stream and invoking `function`.
    pub async fn start<D: DeadLetter + Clone + 'static>(
        config: MappingConfig,
        streams: aws_sdk_dynamodbstreams::Client,
        function: Arc<LambdaFunction>,
        dead_letter: D,
    ) -> Result<Self, MappingError> {
        let description = streams
            .describe_stream()
            .stream_arn(&config.stream_arn)
            .send()
            .await
            .map_err(|e| {
                MappingError::Stream(
                    aws_sdk_dynamodbstreams::error::DisplayErrorContext(e).to_string(),
                )
            })?
            .stream_description
            .ok_or_else(|| MappingError::Stream("no stream description".into()))?;
        let stats = Arc::new(Mutex::new(MappingStats::default()));
        let (stop, _) = watch::channel(false);
        let mut tasks = Vec::new();
        for shard in description.shards.unwrap_or_default() {
            let Some(shard_id) = shard.shard_id else {
                continue;
            };
            let reader = ShardReader::open(
                streams.clone(),
                &config.stream_arn,
                &shard_id,
                config.starting_position,
            )
            .await?;
            let runner = BatchRunner {
                config: config.clone(),
                shard_id,
                target: function.clone(),
                dead_letter: dead_letter.clone(),
                stats: stats.clone(),
            };
            tasks.push(tokio::spawn(run_shard(reader, runner, stop.subscribe())));
        }
        if tasks.is_empty() {
            return Err(MappingError::Stream("the stream has no shard".into()));
        }
        Ok(Self {
            config,
            stats,
            stop,
            tasks,
        })
    }

    pub fn stats(&self) -> MappingStats {
        lock(&self.stats).clone()
    }

    /// Stop polling; the batch in progress is abandoned (its invocation cancelled).
    pub fn stop(&mut self) {
        let _ = self.stop.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Drop for EventSourceMapping {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn run_shard<T: Target, D: DeadLetter>(
    mut reader: ShardReader,
    runner: BatchRunner<T, D>,
    mut stop: watch::Receiver<bool>,
) {
    let config = runner.config.clone();
    let mut pending: VecDeque<StreamRecord> = VecDeque::new();
    let mut last_completed = Instant::now();
    loop {
        if *stop.borrow() {
            return;
        }
        match reader.read().await {
            Ok(records) => {
                let mut stats = lock(&runner.stats);
                for record in records {
                    stats.records_read += 1;
                    if config.filters.matches(&record.json) {
                        pending.push_back(record);
                    } else {
                        stats.filtered_out += 1;
                    }
                }
                stats.pending = pending.len() as u64;
            }
            Err(_) => lock(&runner.stats).read_errors += 1,
        }
        let wait = match pending.front() {
            None => Some(config.poll_interval),
            Some(first) => {
                let window_start = first.read_at.max(last_completed);
                let due = window_start + config.batching_window;
                let now = Instant::now();
                if pending.len() >= config.batch_size || now >= due {
                    None
                } else {
                    Some(config.poll_interval.min(due - now))
                }
            }
        };
        if let Some(wait) = wait {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
            continue;
        }
        let take = config.batch_size.min(pending.len());
        let batch: Vec<StreamRecord> = pending.drain(..take).collect();
        lock(&runner.stats).in_flight = true;
        runner.run_batch(batch).await;
        last_completed = Instant::now();
        let mut stats = lock(&runner.stats);
        stats.in_flight = false;
        stats.pending = pending.len() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn record(seq: u64) -> StreamRecord {
        let json = json!({
            "eventID": format!("e{seq}"),
            "eventName": "INSERT",
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "dynamodb": {
                "ApproximateCreationDateTime": 1_768_467_601,
                "Keys": {"request_id": {"S": format!("r{seq}")}},
                "NewImage": {"request_id": {"S": format!("r{seq}")}, "state": {"S": "received"}},
                "SequenceNumber": seq.to_string(),
                "SizeBytes": 10,
                "StreamViewType": "NEW_AND_OLD_IMAGES"
            },
            "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/x"
        });
        StreamRecord {
            json,
            sequence_number: seq.to_string(),
            created: Utc::now(),
            read_at: Instant::now(),
        }
    }

    /// A scripted function: for each invocation, given the sequence numbers, an outcome.
    struct Script<F> {
        calls: Mutex<Vec<Vec<String>>>,
        count: AtomicUsize,
        behave: F,
    }

    impl<F: Fn(usize, &[String]) -> Outcome + Send + Sync> Target for Script<F> {
        async fn invoke(&self, event: Bytes) -> (String, Outcome) {
            let event: aws_lambda_events::event::dynamodb::Event =
                serde_json::from_slice(&event).unwrap();
            let seqs: Vec<String> = event
                .records
                .iter()
                .map(|r| r.change.sequence_number.clone().unwrap())
                .collect();
            let n = self.count.fetch_add(1, Ordering::SeqCst);
            lock(&self.calls).push(seqs.clone());
            (format!("req-{n}"), (self.behave)(n, &seqs))
        }
    }

    #[derive(Clone, Default)]
    struct Collect(Arc<Mutex<Vec<Value>>>);

    impl DeadLetter for Collect {
        async fn send(&self, message: Value) -> Result<(), String> {
            lock(&self.0).push(message);
            Ok(())
        }
    }

    fn config(max_retries: Option<u64>, bisect: bool) -> MappingConfig {
        MappingConfig {
            function_arn: "arn:aws:lambda:us-east-1:123456789012:function:w".into(),
            stream_arn: "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/x".into(),
            starting_position: StartingPosition::TrimHorizon,
            batch_size: 10,
            batching_window: Duration::ZERO,
            max_retry_attempts: max_retries,
            max_record_age: None,
            bisect_on_function_error: bisect,
            report_batch_item_failures: true,
            filters: FilterCriteria::default(),
            on_failure: Some("arn:aws:sqs:us-east-1:123456789012:dlq".into()),
            poll_interval: Duration::from_millis(10),
            retry_delay: Duration::ZERO,
        }
    }

    fn failure(seq: &str) -> Outcome {
        Outcome::Success(Bytes::from(
            json!({"batchItemFailures": [{"itemIdentifier": seq}]}).to_string(),
        ))
    }

    fn ok() -> Outcome {
        Outcome::Success(Bytes::from_static(b"{\"batchItemFailures\":[]}"))
    }

    fn seqs(calls: &[Vec<String>]) -> Vec<Vec<u64>> {
        calls
            .iter()
            .map(|c| c.iter().map(|s| s.parse().unwrap()).collect())
            .collect()
    }

    #[tokio::test]
    async fn batch_item_failures_retry_from_the_lowest_and_then_dead_letter() {
        let dlq = Collect::default();
        let runner = BatchRunner {
            config: config(Some(2), true),
            shard_id: "shard-1".into(),
            target: Script {
                calls: Mutex::new(vec![]),
                count: AtomicUsize::new(0),
                // 3 always fails (reported with 5, which is higher).
                behave: |_, s: &[String]| {
                    if s.contains(&"3".to_owned()) {
                        Outcome::Success(Bytes::from(
                            json!({"batchItemFailures": [{"itemIdentifier": "5"}, {"itemIdentifier": "3"}]}).to_string(),
                        ))
                    } else {
                        ok()
                    }
                },
            },
            dead_letter: dlq.clone(),
            stats: Arc::default(),
        };
        runner.run_batch((1..=6).map(record).collect()).await;
        let calls = seqs(&lock(&runner.target.calls));
        assert_eq!(
            calls,
            [vec![1, 2, 3, 4, 5, 6], vec![3, 4, 5, 6], vec![3, 4, 5, 6]]
        );
        let messages = lock(&dlq.0).clone();
        assert_eq!(messages.len(), 1);
        let m = &messages[0];
        assert_eq!(m["requestContext"]["condition"], "RetryAttemptsExhausted");
        assert_eq!(m["requestContext"]["approximateInvokeCount"], 3);
        assert_eq!(m["requestContext"]["requestId"], "req-2");
        assert_eq!(m["responseContext"]["statusCode"], 200);
        assert!(m["responseContext"].get("functionError").is_none());
        assert_eq!(m["version"], "1.0");
        let info = &m["DDBStreamBatchInfo"];
        assert_eq!(info["shardId"], "shard-1");
        assert_eq!(info["startSequenceNumber"], "3");
        assert_eq!(info["endSequenceNumber"], "6");
        assert_eq!(info["batchSize"], 4);
        assert_eq!(
            info["streamArn"],
            "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/x"
        );
        let stats = lock(&runner.stats).clone();
        assert_eq!((stats.retries, stats.partial_failures), (2, 3));
        assert_eq!((stats.dead_lettered_records, stats.dlq_messages), (4, 1));
    }

    #[tokio::test]
    async fn function_errors_bisect_without_using_retries() {
        let dlq = Collect::default();
        let runner = BatchRunner {
            config: config(Some(1), true),
            shard_id: "s".into(),
            target: Script {
                calls: Mutex::new(vec![]),
                count: AtomicUsize::new(0),
                // Any batch holding 2 crashes.
                behave: |_, s: &[String]| {
                    if s.contains(&"2".to_owned()) {
                        Outcome::Crashed {
                            detail: "signal: 9".into(),
                        }
                    } else {
                        ok()
                    }
                },
            },
            dead_letter: dlq.clone(),
            stats: Arc::default(),
        };
        runner.run_batch((1..=5).map(record).collect()).await;
        let calls = seqs(&lock(&runner.target.calls));
        assert_eq!(
            calls,
            [
                vec![1, 2, 3, 4, 5],
                vec![1, 2],
                vec![1],
                vec![2],
                vec![2],
                vec![3, 4, 5]
            ]
        );
        let messages = lock(&dlq.0).clone();
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0]["responseContext"]["functionError"], "Unhandled");
        assert_eq!(messages[0]["DDBStreamBatchInfo"]["batchSize"], 1);
        assert_eq!(
            messages[0]["DDBStreamBatchInfo"]["startSequenceNumber"],
            "2"
        );
        assert_eq!(messages[0]["requestContext"]["approximateInvokeCount"], 4);
        let stats = lock(&runner.stats).clone();
        assert_eq!(
            (stats.bisections, stats.retries, stats.function_errors),
            (2, 1, 4)
        );
    }

    #[tokio::test]
    async fn without_bisection_a_failing_batch_is_retried_whole_and_bad_responses_fail_it() {
        let runner = BatchRunner {
            config: config(Some(3), false),
            shard_id: "s".into(),
            target: Script {
                calls: Mutex::new(vec![]),
                count: AtomicUsize::new(0),
                behave: |n, _: &[String]| match n {
                    0 => Outcome::TimedOut,
                    1 => failure("999"),
                    2 => Outcome::Success(Bytes::from_static(
                        b"{\"batchItemFailures\":[{\"itemIdentifier\":\"\"}]}",
                    )),
                    _ => failure("2"),
                },
            },
            dead_letter: Collect::default(),
            stats: Arc::default(),
        };
        runner.run_batch((1..=3).map(record).collect()).await;
        let calls = seqs(&lock(&runner.target.calls));
        assert_eq!(
            calls,
            [vec![1, 2, 3], vec![1, 2, 3], vec![1, 2, 3], vec![1, 2, 3]]
        );
        let stats = lock(&runner.stats).clone();
        assert_eq!(stats.invalid_responses, 2);
        assert_eq!(stats.dead_lettered_records, 2, "2 and 3 after 3 retries");
    }

    #[tokio::test]
    async fn old_records_are_discarded_before_invoking() {
        let dlq = Collect::default();
        let mut cfg = config(None, true);
        cfg.max_record_age = Some(Duration::from_secs(60));
        let runner = BatchRunner {
            config: cfg,
            shard_id: "s".into(),
            target: Script {
                calls: Mutex::new(vec![]),
                count: AtomicUsize::new(0),
                behave: |_, _: &[String]| ok(),
            },
            dead_letter: dlq.clone(),
            stats: Arc::default(),
        };
        let mut records: Vec<StreamRecord> = (1..=3).map(record).collect();
        records[0].created = Utc::now() - chrono::Duration::seconds(120);
        runner.run_batch(records).await;
        assert_eq!(seqs(&lock(&runner.target.calls)), [vec![2, 3]]);
        let messages = lock(&dlq.0).clone();
        assert_eq!(
            messages[0]["requestContext"]["condition"],
            "RecordAgeExceeded"
        );
        assert_eq!(messages[0]["requestContext"]["approximateInvokeCount"], 0);
        assert!(messages[0].get("responseContext").is_none());
    }

    /// The record of a stream read through the SDK, shaped as the sample events of
    /// `events/` (which are AWS's shape) and read by `aws_lambda_events`.
    #[test]
    fn records_are_shaped_as_lambda_sends_them() {
        use aws_sdk_dynamodbstreams::primitives::DateTime as SdkTime;
        use aws_sdk_dynamodbstreams::types::{
            OperationType, Record, StreamRecord as SdkStreamRecord, StreamViewType,
        };
        let s = |v: &str| AttributeValue::S(v.to_owned());
        let sdk = Record::builder()
            .event_id("c81e728d9d4c2f636f067f89cc14862c")
            .event_name(OperationType::Insert)
            .event_version("1.0")
            .event_source("aws:dynamodb")
            .aws_region("us-east-1")
            .dynamodb(
                SdkStreamRecord::builder()
                    .approximate_creation_date_time(SdkTime::from_secs(1_768_467_601))
                    .keys("request_id", s("r1"))
                    .new_image("request_id", s("r1"))
                    .new_image("attempt", AttributeValue::N("1".into()))
                    .new_image("emails", AttributeValue::L(vec![s("a@example.com")]))
                    .new_image("ok", AttributeValue::Bool(true))
                    .new_image("gone", AttributeValue::Null(true))
                    .new_image("blob", AttributeValue::B(vec![1u8, 2, 3].into()))
                    .sequence_number("111100000000012345678901")
                    .size_bytes(642)
                    .stream_view_type(StreamViewType::NewAndOldImages)
                    .build(),
            )
            .build();
        let arn = "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/2026-01-15T08:00:00.000";
        let record = lambda_record(&sdk, arn).unwrap();
        let sample: Value = serde_json::from_str(
            &std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../events/worker-insert.json"),
            )
            .unwrap(),
        )
        .unwrap();
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        let expected = &sample["Records"][0];
        assert_eq!(keys(&record.json), keys(expected));
        assert_eq!(keys(&record.json["dynamodb"]), keys(&expected["dynamodb"]));
        assert_eq!(record.json["eventVersion"], "1.1");
        assert_eq!(record.json["eventSourceARN"], arn);
        assert_eq!(
            record.json["dynamodb"]["ApproximateCreationDateTime"],
            1_768_467_601
        );
        assert_eq!(
            record.json["dynamodb"]["NewImage"]["attempt"],
            json!({"N": "1"})
        );
        assert_eq!(
            record.json["dynamodb"]["NewImage"]["emails"],
            json!({"L": [{"S": "a@example.com"}]})
        );
        assert_eq!(
            record.json["dynamodb"]["NewImage"]["blob"],
            json!({"B": "AQID"})
        );
        assert_eq!(
            record.json["dynamodb"]["NewImage"]["gone"],
            json!({"NULL": true})
        );
        assert!(record.json["dynamodb"].get("OldImage").is_none());
        let event: aws_lambda_events::event::dynamodb::Event =
            serde_json::from_value(json!({"Records": [record.json]})).unwrap();
        assert_eq!(event.records[0].event_name, "INSERT");
        assert_eq!(
            event.records[0].change.sequence_number.as_deref(),
            Some("111100000000012345678901")
        );
    }

    #[test]
    fn the_templates_worker_mapping_is_read() {
        use super::super::template::{LocalResource, StackSettings, Template};
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
        let template = Template::load(&path).unwrap();
        let resources = std::collections::BTreeMap::from([
            (
                "RequestsTable".to_owned(),
                LocalResource::new("requests").with("StreamArn", "arn:stream"),
            ),
            ("MembersTable".to_owned(), LocalResource::new("members")),
            (
                "ConnectionsTable".to_owned(),
                LocalResource::new("connections"),
            ),
            (
                "ConnectorKey".to_owned(),
                LocalResource::new("k").with("Arn", "arn:key"),
            ),
            (
                "ConcurClientSecret".to_owned(),
                LocalResource::new("arn:secret"),
            ),
            (
                "WorkerDeadLetterQueue".to_owned(),
                LocalResource::new("url").with("Arn", "arn:aws:sqs:us-east-1:1:dlq"),
            ),
            (
                "UnlinkDeadLetterQueue".to_owned(),
                LocalResource::new("url-unlink").with("Arn", "arn:aws:sqs:us-east-1:1:unlink"),
            ),
        ]);
        let stack = template
            .stack(
                StackSettings {
                    stack_name: "e2e".into(),
                    region: "us-east-1".into(),
                    account_id: "123456789012".into(),
                },
                &[("ConcurClientId".into(), "c".into())],
                resources,
            )
            .unwrap();
        let spec = stack.function("WorkerFunction").unwrap();
        let config = MappingConfig::from_template(&spec, "RequestsStream").unwrap();
        assert_eq!(config.stream_arn, "arn:stream");
        assert_eq!(
            config.on_failure.as_deref(),
            Some("arn:aws:sqs:us-east-1:1:dlq")
        );
        assert!(config.report_batch_item_failures);
        assert!(!config.filters.patterns.is_empty());
        assert_eq!(config.starting_position, StartingPosition::TrimHorizon);
    }
}
