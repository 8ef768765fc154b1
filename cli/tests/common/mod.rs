//! Test support: tables on the shared moto server, seeded request items, an environment
//! for the Concur client.

#![allow(dead_code)]

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use triplink_shared::model::{json, ConnectionRequest, ConnectionStatus};
use triplink_shared::store::layout::{timestamp, AttemptRecord, RequestItem, RequestState};
use triplink_shared::store::{tables, DynamoRequestStore};
use triplink_shared::testing;

pub fn dynamo() -> aws_sdk_dynamodb::Client {
    testing::dynamodb()
}

/// A fresh requests table and its store.
pub async fn requests_table() -> (String, DynamoRequestStore) {
    let name = testing::unique_name("cli-requests");
    tables::create_requests_table(&dynamo(), &name)
        .await
        .unwrap();
    (name.clone(), DynamoRequestStore::new(dynamo(), name))
}

/// A request item with personal data and a token, in `state`.
pub fn item(id: &str, state: RequestState, attempt: u32, now: DateTime<Utc>) -> RequestItem {
    let request = ConnectionRequest::from_wire(
        json::parse_request(&format!(
            r#"{{"ID":"{id}","firstName":"Maria","lastName":"Müller","loyaltyNumber":"99887766",
                "requestToken":"tok-SECRET-{id}","userId":"user-{id}",
                "emailAddresses":{{"email1":"maria.mueller@example.com"}},
                "lastModified":"2026-01-01T00:00:00"}}"#
        ))
        .unwrap(),
    )
    .unwrap();
    let mut item = RequestItem::received(&request, now - Duration::minutes(30));
    item.state = state;
    item.attempt = attempt;
    // As the life cycle keeps it: due again a while from now (the sweep renews it).
    item.due_at = Some(triplink_shared::store::lifecycle::received_due(now));
    item
}

pub fn working(id: &str, lease_until: DateTime<Utc>, now: DateTime<Utc>) -> RequestItem {
    let mut item = item(id, RequestState::Working, 1, now);
    item.lease_owner = Some("lambda-request-1".into());
    item.lease_until = Some(lease_until.timestamp_millis());
    item.due_at = Some(lease_until.timestamp_millis().max(now.timestamp_millis()));
    item
}

pub fn decided(
    id: &str,
    status: ConnectionStatus,
    decided_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> RequestItem {
    let mut item = item(id, RequestState::Decided, 1, now);
    item.decided_status = Some(status);
    item.decided_at = Some(timestamp(decided_at));
    item.decision_reason = Some("not_found".into());
    item
}

pub fn reported(
    id: &str,
    attempt: u32,
    status: ConnectionStatus,
    now: DateTime<Utc>,
) -> RequestItem {
    let mut item = item(id, RequestState::Reported, attempt, now);
    for field in [
        &mut item.request_token,
        &mut item.first_name,
        &mut item.last_name,
        &mut item.loyalty_number,
        &mut item.user_id,
    ] {
        *field = None;
    }
    item.emails.clear();
    item.history = (1..=attempt)
        .map(|a| AttemptRecord {
            attempt: a,
            status,
            decided_at: timestamp(now),
            reported_at: Some(timestamp(now)),
            reason: Some("not_found".into()),
            result: Some(triplink_shared::store::ReportResult::Accepted),
        })
        .collect();
    item.reported_at = Some(timestamp(now));
    item.due_at = None;
    item
}

/// Write an item as is.
pub async fn put(store: &DynamoRequestStore, item: &RequestItem) {
    triplink_shared::testing::put_request(store, item).await;
}

pub async fn get(store: &DynamoRequestStore, id: &str) -> RequestItem {
    use triplink_shared::store::RequestStore;
    store.get(id).await.unwrap().unwrap()
}

/// The Concur settings of the functions, pointed at a sandbox.
pub fn concur_env(base_url: &str) -> HashMap<String, String> {
    [
        ("CONCUR_API_BASE_URL", base_url),
        ("CONCUR_CLIENT_ID", "sandbox-client"),
        ("CONCUR_CLIENT_SECRET_SOURCE", "env:TEST_CONCUR_SECRET"),
        ("TEST_CONCUR_SECRET", "sandbox-secret"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A Concur environment that must never be used.
pub fn no_concur() -> HashMap<String, String> {
    HashMap::new()
}

/// A table's stream read from its start: its ARN, its (only) shard and its records.
pub struct TableStream {
    pub arn: String,
    pub shard: String,
    pub records: Vec<aws_sdk_dynamodbstreams::types::Record>,
}

/// Read `table`'s stream from the trim horizon (one shard, one page: the tests write a
/// few items).
pub async fn read_stream(table: &str) -> TableStream {
    let described = dynamo()
        .describe_table()
        .table_name(table)
        .send()
        .await
        .unwrap();
    let arn = described.table.unwrap().latest_stream_arn.unwrap();
    let streams = aws_sdk_dynamodbstreams::Client::new(&testing::sdk_config());
    let stream = streams
        .describe_stream()
        .stream_arn(&arn)
        .send()
        .await
        .unwrap();
    let shard = stream.stream_description.unwrap().shards.unwrap()[0]
        .shard_id
        .clone()
        .unwrap();
    let iterator = streams
        .get_shard_iterator()
        .stream_arn(&arn)
        .shard_id(&shard)
        .shard_iterator_type(aws_sdk_dynamodbstreams::types::ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator
        .unwrap();
    let records = streams
        .get_records()
        .shard_iterator(iterator)
        .send()
        .await
        .unwrap()
        .records
        .unwrap_or_default();
    TableStream {
        arn,
        shard,
        records,
    }
}
