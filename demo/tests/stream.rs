//! The Lambda-like stream delivery against moto's DynamoDB Streams, and the whole demo.

use std::sync::Mutex;

use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use demo::stream::StreamDriver;
use triplink_shared::store::layout::{RequestItem, RequestState};
use triplink_shared::store::{tables, DynamoRequestStore};
use triplink_shared::testing;

async fn put(store: &DynamoRequestStore, id: &str, state: RequestState) {
    let request = triplink_shared::model::ConnectionRequest::from_wire(
        triplink_shared::model::json::parse_request(&format!(r#"{{"ID":"{id}"}}"#)).unwrap(),
    )
    .unwrap();
    let item = RequestItem {
        state,
        ..RequestItem::received(&request, chrono::Utc::now())
    };
    testing::put_request(store, &item).await;
}

fn id_of(record: &aws_lambda_events::event::dynamodb::EventRecord) -> String {
    match record.change.new_image.get("request_id") {
        Some(serde_dynamo::AttributeValue::S(id)) => id.clone(),
        other => panic!("no request_id: {other:?}"),
    }
}

#[tokio::test]
async fn records_are_filtered_batched_and_retried_from_the_failed_one() {
    let aws = testing::sdk_config();
    let dynamo = aws_sdk_dynamodb::Client::new(&aws);
    let table = testing::unique_name("stream");
    tables::create_requests_table(&dynamo, &table)
        .await
        .unwrap();
    let store = DynamoRequestStore::new(dynamo.clone(), table.clone());
    for i in 0..7 {
        put(&store, &format!("r{i}"), RequestState::Received).await;
    }
    put(&store, "w", RequestState::Working).await;
    let mut driver =
        StreamDriver::attach(&dynamo, aws_sdk_dynamodbstreams::Client::new(&aws), &table)
            .await
            .unwrap();
    driver.batch_size = 3;
    driver.max_retries = 2;

    // r1 fails once; r5 fails every time.
    let calls: Mutex<Vec<Vec<String>>> = Mutex::new(Vec::new());
    let failed_r1 = Mutex::new(false);
    let delivery = driver
        .deliver(|batch| {
            let ids: Vec<String> = batch.iter().map(id_of).collect();
            calls.lock().unwrap().push(ids.clone());
            let mut response = DynamoDbEventResponse::default();
            let fail = batch.iter().find(|r| {
                let id = id_of(r);
                id == "r5"
                    || (id == "r1" && !std::mem::replace(&mut *failed_r1.lock().unwrap(), true))
            });
            if let Some(record) = fail {
                let mut failure = DynamoDbBatchItemFailure::default();
                failure.item_identifier = record.change.sequence_number.clone();
                response.batch_item_failures.push(failure);
            }
            async move { response }
        })
        .await
        .unwrap();
    let calls = calls.into_inner().unwrap();
    assert_eq!(delivery.read, 8);
    assert_eq!(delivery.filtered_out, 1, "the working item is filtered out");
    assert_eq!(
        calls,
        [
            vec!["r0", "r1", "r2"],
            vec!["r1", "r2"],
            vec!["r3", "r4", "r5"],
            vec!["r5"],
            vec!["r5"],
            vec!["r6"],
        ]
    );
    assert_eq!(delivery.retries, 3);
    assert_eq!(delivery.dead_lettered.len(), 1, "r5 after 2 retries");

    // Nothing new: nothing delivered.
    let again = driver
        .deliver(|_| async { DynamoDbEventResponse::default() })
        .await
        .unwrap();
    assert_eq!((again.read, again.batches), (0, 0));
}

#[test]
fn the_demo_runs_end_to_end_with_nothing_lost_or_doubled() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_triplink-demo"))
        .args(["--users", "40", "--seed", "3"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["ok"], true, "{summary}");
    assert_eq!(summary["requests"], 40);
    assert_eq!(
        (summary["lost"].as_u64(), summary["doubled"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(summary["requeued_attempts"].as_u64().unwrap() > 0);
    assert!(stdout.contains("==> advancing the sandbox clock by 24 h"));
}
