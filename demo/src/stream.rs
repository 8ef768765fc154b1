//! Delivers a table's DynamoDB stream (read from moto) to a handler the way Lambda's
//! event source mapping does: records in stream order, the `state = received` filter
//! of the template, batches of `batch_size`, `ReportBatchItemFailures` semantics (a
//! batch is retried from its lowest failed sequence number), at most `max_retries`
//! retries, then the rest of the batch goes to a dead-letter list.

use std::collections::VecDeque;
use std::future::Future;

use aws_lambda_events::event::dynamodb::{EventRecord, StreamRecord};
use aws_lambda_events::event::streams::DynamoDbEventResponse;
use aws_sdk_dynamodbstreams::types::ShardIteratorType;

#[derive(Debug, thiserror::Error)]
#[error("DynamoDB stream: {0}")]
pub struct StreamError(String);

fn err(e: impl std::fmt::Display) -> StreamError {
    StreamError(e.to_string())
}

/// What one delivery round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub read: usize,
    pub filtered_out: usize,
    pub batches: usize,
    pub retries: usize,
    /// Sequence numbers given up on (they would go to the dead-letter queue).
    pub dead_lettered: Vec<String>,
}

pub struct StreamDriver {
    client: aws_sdk_dynamodbstreams::Client,
    stream_arn: String,
    /// Per shard: the iterator to continue from.
    iterators: Vec<(String, Option<String>)>,
    pub batch_size: usize,
    pub max_retries: usize,
}

/// The template's filter: only new images in state `received`.
pub fn passes_filter(record: &EventRecord) -> bool {
    matches!(
        record.change.new_image.get("state"),
        Some(serde_dynamo::AttributeValue::S(state)) if state == "received"
    )
}

fn to_event_record(record: aws_sdk_dynamodbstreams::types::Record) -> EventRecord {
    let mut change = StreamRecord::default();
    if let Some(stream) = record.dynamodb {
        change.keys = stream.keys.unwrap_or_default().into();
        change.new_image = stream.new_image.unwrap_or_default().into();
        change.old_image = stream.old_image.unwrap_or_default().into();
        change.sequence_number = stream.sequence_number;
        change.size_bytes = stream.size_bytes.unwrap_or_default();
    }
    let mut event = EventRecord::default();
    event.event_id = record.event_id.unwrap_or_default();
    event.event_name = record
        .event_name
        .map(|n| n.as_str().to_owned())
        .unwrap_or_default();
    event.event_source = record.event_source;
    event.aws_region = record.aws_region.unwrap_or_default();
    event.change = change;
    event
}

impl StreamDriver {
    /// Attach to the stream of `table`, from its beginning.
    pub async fn attach(
        dynamo: &aws_sdk_dynamodb::Client,
        streams: aws_sdk_dynamodbstreams::Client,
        table: &str,
    ) -> Result<Self, StreamError> {
        let stream_arn = dynamo
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| err(aws_sdk_dynamodb::error::DisplayErrorContext(e)))?
            .table
            .and_then(|t| t.latest_stream_arn)
            .ok_or_else(|| err(format!("table {table} has no stream")))?;
        Ok(Self {
            client: streams,
            stream_arn,
            iterators: Vec::new(),
            batch_size: 10,
            max_retries: 3,
        })
    }

    async fn refresh_shards(&mut self) -> Result<(), StreamError> {
        let description = self
            .client
            .describe_stream()
            .stream_arn(&self.stream_arn)
            .send()
            .await
            .map_err(|e| err(aws_sdk_dynamodbstreams::error::DisplayErrorContext(e)))?
            .stream_description
            .ok_or_else(|| err("no stream description"))?;
        for shard in description.shards.unwrap_or_default() {
            let Some(id) = shard.shard_id else { continue };
            if self.iterators.iter().any(|(known, _)| *known == id) {
                continue;
            }
            let iterator = self
                .client
                .get_shard_iterator()
                .stream_arn(&self.stream_arn)
                .shard_id(&id)
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await
                .map_err(|e| err(aws_sdk_dynamodbstreams::error::DisplayErrorContext(e)))?
                .shard_iterator;
            self.iterators.push((id, iterator));
        }
        Ok(())
    }

    /// Every record written since the last read, in stream order per shard.
    async fn read_new(&mut self) -> Result<Vec<EventRecord>, StreamError> {
        self.refresh_shards().await?;
        let mut records = Vec::new();
        for (_, iterator) in self.iterators.iter_mut() {
            // Bounded: a shard with records keeps answering until it is drained.
            for _ in 0..10_000 {
                let Some(current) = iterator.clone() else {
                    break;
                };
                let output = self
                    .client
                    .get_records()
                    .shard_iterator(current)
                    .limit(1000)
                    .send()
                    .await
                    .map_err(|e| err(aws_sdk_dynamodbstreams::error::DisplayErrorContext(e)))?;
                let page = output.records.unwrap_or_default();
                let empty = page.is_empty();
                records.extend(page.into_iter().map(to_event_record));
                if output.next_shard_iterator.is_some() {
                    *iterator = output.next_shard_iterator;
                }
                if empty {
                    break;
                }
            }
        }
        Ok(records)
    }

    /// Deliver what the stream has now to `handler`, with Lambda's batch semantics.
    pub async fn deliver<F, Fut>(&mut self, mut handler: F) -> Result<Delivery, StreamError>
    where
        F: FnMut(Vec<EventRecord>) -> Fut,
        Fut: Future<Output = DynamoDbEventResponse>,
    {
        let records = self.read_new().await?;
        let mut delivery = Delivery {
            read: records.len(),
            ..Delivery::default()
        };
        let mut queue: VecDeque<EventRecord> = records
            .into_iter()
            .filter(|r| {
                let keep = passes_filter(r);
                if !keep {
                    delivery.filtered_out += 1;
                }
                keep
            })
            .collect();
        while !queue.is_empty() {
            let take = self.batch_size.min(queue.len());
            let mut batch: Vec<EventRecord> = queue.drain(..take).collect();
            let mut retries = 0;
            loop {
                delivery.batches += 1;
                let response = handler(batch.clone()).await;
                let failed = response
                    .batch_item_failures
                    .iter()
                    .filter_map(|f| f.item_identifier.clone())
                    .filter_map(|seq| {
                        batch
                            .iter()
                            .position(|r| r.change.sequence_number.as_deref() == Some(seq.as_str()))
                    })
                    .min();
                let Some(from) = failed else { break };
                batch.drain(..from);
                if retries >= self.max_retries {
                    delivery.dead_lettered.extend(
                        batch
                            .iter()
                            .filter_map(|r| r.change.sequence_number.clone()),
                    );
                    break;
                }
                retries += 1;
                delivery.retries += 1;
            }
        }
        Ok(delivery)
    }
}
