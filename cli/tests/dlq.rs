//! `dlq redrive` with a real SQS queue and DynamoDB stream on moto.

mod common;

use chrono::{Duration, Utc};
use common::*;
use serde_json::json;
use triplink_cli::dlq::Redriver;
use triplink_cli::output::{format_report, OutputFormat};
use triplink_cli::retry::Action;
use triplink_shared::model::ConnectionStatus;
use triplink_shared::store::layout::RequestState;
use triplink_shared::store::tables;
use triplink_shared::testing;

/// The stream ARN, shard id and record sequence numbers (in order) of a table's stream.
async fn stream_of(table: &str) -> (String, String, Vec<String>) {
    let stream = read_stream(table).await;
    let sequences = stream
        .records
        .into_iter()
        .filter_map(|r| r.dynamodb.and_then(|d| d.sequence_number))
        .collect();
    (stream.arn, stream.shard, sequences)
}

/// Lambda's on-failure record for a DynamoDB stream batch.
fn failure_record(arn: &str, shard: &str, start: &str, end: &str, size: usize) -> String {
    json!({
        "requestContext": {
            "requestId": "3a1f6e52-0000-4000-8000-000000000000",
            "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:triplink-worker",
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": 4
        },
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": "2026-01-01T00:00:00.000Z",
        "DDBStreamBatchInfo": {
            "shardId": shard,
            "startSequenceNumber": start,
            "endSequenceNumber": end,
            "approximateArrivalOfFirstRecord": "2026-01-01T00:00:00Z",
            "approximateArrivalOfLastRecord": "2026-01-01T00:00:00Z",
            "batchSize": size,
            "streamArn": arn
        }
    })
    .to_string()
}

async fn queue_counts(sqs: &aws_sdk_sqs::Client, url: &str) -> (String, String) {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    (
        attributes[&A::ApproximateNumberOfMessages].clone(),
        attributes[&A::ApproximateNumberOfMessagesNotVisible].clone(),
    )
}

#[tokio::test]
async fn dlq_messages_are_redriven_and_deleted_and_trimmed_or_busy_batches_are_left() {
    let (table, store) = requests_table().await;
    let now = Utc::now();
    // Batch A: three requests the worker failed on; batch B: one a worker holds now.
    put(&store, &working("d-stuck", now - Duration::minutes(2), now)).await;
    put(&store, &item("d-received", RequestState::Received, 1, now)).await;
    put(
        &store,
        &reported("d-done", 1, ConnectionStatus::Connected, now),
    )
    .await;
    put(&store, &working("d-live", now + Duration::minutes(10), now)).await;
    let (arn, shard, seqs) = stream_of(&table).await;
    assert_eq!(seqs.len(), 4);

    // Batch C: a table that is gone, and its stream with it.
    let gone = testing::unique_name("cli-gone");
    tables::create_requests_table(&dynamo(), &gone)
        .await
        .unwrap();
    let gone_store = triplink_shared::store::DynamoRequestStore::new(dynamo(), gone.clone());
    put(&gone_store, &item("d-gone", RequestState::Received, 1, now)).await;
    let (gone_arn, gone_shard, gone_seqs) = stream_of(&gone).await;
    dynamo()
        .delete_table()
        .table_name(&gone)
        .send()
        .await
        .unwrap();

    let sqs = aws_sdk_sqs::Client::new(&testing::sdk_config());
    let queue = testing::unique_name("cli-dlq");
    let url = sqs
        .create_queue()
        .queue_name(&queue)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    for body in [
        failure_record(&arn, &shard, &seqs[0], &seqs[2], 3),
        failure_record(&arn, &shard, &seqs[3], &seqs[3], 1),
        failure_record(&gone_arn, &gone_shard, &gone_seqs[0], &gone_seqs[0], 1),
    ] {
        sqs.send_message()
            .queue_url(&url)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }

    let redriver = Redriver {
        sqs: sqs.clone(),
        streams: aws_sdk_dynamodbstreams::Client::new(&testing::sdk_config()),
        store: &store,
    };
    // --max bounds the messages handled.
    let first = redriver.redrive(&url, 1).await.unwrap();
    assert_eq!(first.messages, 1);
    let rest = redriver.redrive(&url, 10).await.unwrap();
    assert_eq!(rest.messages, 2);

    let details: Vec<_> = first.details.iter().chain(&rest.details).collect();
    assert_eq!(first.deleted + rest.deleted, 1);
    assert_eq!(first.left + rest.left, 2);

    let deleted = details.iter().find(|m| m.deleted).unwrap();
    assert_eq!(deleted.records_read, 3);
    let actions: Vec<(&str, Action)> = deleted
        .results
        .iter()
        .map(|r| (r.request_id.as_str(), r.action))
        .collect();
    assert_eq!(
        actions,
        [
            ("d-stuck", Action::Rearmed),
            ("d-received", Action::Rearmed),
            ("d-done", Action::NothingToRetry)
        ]
    );
    assert_eq!(get(&store, "d-stuck").await.state, RequestState::Received);
    assert_eq!(
        get(&store, "d-received").await.state,
        RequestState::Received
    );
    assert_eq!(get(&store, "d-live").await.state, RequestState::Working);

    let busy = details
        .iter()
        .find(|m| m.results.iter().any(|r| r.request_id == "d-live"))
        .unwrap();
    assert!(!busy.deleted);
    assert!(
        busy.problem.as_deref().unwrap().contains("lease"),
        "{:?}",
        busy.problem
    );

    let trimmed = details
        .iter()
        .find(|m| m.batch.as_ref().is_some_and(|b| b.stream_arn == gone_arn))
        .unwrap();
    assert!(!trimmed.deleted);
    assert!(
        trimmed
            .problem
            .as_deref()
            .unwrap()
            .contains("no longer in the stream"),
        "{:?}",
        trimmed.problem
    );

    // The two left messages are still in the queue (invisible while this run holds them).
    assert_eq!(queue_counts(&sqs, &url).await, ("0".into(), "2".into()));

    let text = format_report(&rest, OutputFormat::Table);
    assert!(text.contains("Left in the queue"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&format_report(&rest, OutputFormat::Json)).unwrap();
    assert_eq!(json["messages"], 2);
}

#[tokio::test]
async fn a_message_that_is_not_a_stream_failure_record_is_left_in_the_queue() {
    let (_, store) = requests_table().await;
    let sqs = aws_sdk_sqs::Client::new(&testing::sdk_config());
    let url = sqs
        .create_queue()
        .queue_name(testing::unique_name("cli-dlq-odd"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    for body in ["not json", r#"{"version": "1.0"}"#] {
        sqs.send_message()
            .queue_url(&url)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }
    let redriver = Redriver {
        sqs: sqs.clone(),
        streams: aws_sdk_dynamodbstreams::Client::new(&testing::sdk_config()),
        store: &store,
    };
    let report = redriver.redrive(&url, 10).await.unwrap();
    assert_eq!((report.messages, report.deleted, report.left), (2, 0, 2));
    let problems: Vec<&str> = report
        .details
        .iter()
        .filter_map(|m| m.problem.as_deref())
        .collect();
    assert!(
        problems.iter().any(|p| p.contains("not JSON")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("DDBStreamBatchInfo")),
        "{problems:?}"
    );
}
