//! The DynamoDB fault-injection proxy in front of a real moto_server, driven by the real
//! SDK clients: forwarding is transparent and every fault kind has its observable effect.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, Put, ReturnValue,
    ScalarAttributeType, StreamSpecification, StreamViewType, TransactWriteItem,
};
use aws_sdk_dynamodb::Client;
use triplink_shared::fault_proxy::{FaultProxy, Op, Rule};
use triplink_shared::testing;

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn proxy() -> FaultProxy {
    FaultProxy::start(&testing::moto().endpoint)
}

/// A DynamoDB client that talks to moto through the proxy.
fn client(proxy: &FaultProxy, retry: RetryConfig) -> Client {
    let config = testing::local_sdk_config(proxy.endpoint());
    Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&config)
            .retry_config(retry)
            .build(),
    )
}

/// One attempt per call, so every fault reaches the caller.
fn no_retries(proxy: &FaultProxy) -> Client {
    client(proxy, RetryConfig::disabled())
}

/// The SDK's standard retries (3 attempts), with short backoffs.
fn retries(proxy: &FaultProxy) -> Client {
    client(
        proxy,
        RetryConfig::standard()
            .with_max_attempts(3)
            .with_initial_backoff(Duration::from_millis(10)),
    )
}

/// A fresh table with string key `pk`, created directly at moto.
async fn table(prefix: &str, stream: bool) -> String {
    let name = testing::unique_name(prefix);
    let mut create = testing::dynamodb()
        .create_table()
        .table_name(&name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        );
    if stream {
        create = create.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewImage)
                .build()
                .unwrap(),
        );
    }
    create.send().await.unwrap();
    name
}

/// The item as stored at moto (read directly, not through the proxy).
async fn stored(table: &str, pk: &str) -> Option<HashMap<String, AttributeValue>> {
    testing::dynamodb()
        .get_item()
        .table_name(table)
        .key("pk", s(pk))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
}

async fn put(
    client: &Client,
    table: &str,
    pk: &str,
) -> Result<(), SdkError<aws_sdk_dynamodb::operation::put_item::PutItemError>> {
    client
        .put_item()
        .table_name(table)
        .item("pk", s(pk))
        .item("note", s(&format!("note of {pk}")))
        .send()
        .await
        .map(|_| ())
}

fn put_action(table: &str, pk: &str) -> TransactWriteItem {
    TransactWriteItem::builder()
        .put(
            Put::builder()
                .table_name(table)
                .item("pk", s(pk))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .unwrap(),
        )
        .build()
}

#[tokio::test]
async fn forwards_dynamodb_calls_unchanged() {
    let proxy = proxy();
    let table = table("fwd", false).await;
    let via = no_retries(&proxy);

    via.put_item()
        .table_name(&table)
        .item("pk", s("a"))
        .item("n", n(1))
        .item("tags", AttributeValue::Ss(vec!["x".into(), "ü".into()]))
        .send()
        .await
        .unwrap();
    let got = via
        .get_item()
        .table_name(&table)
        .key("pk", s("a"))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert_eq!(got["n"], n(1));
    assert_eq!(Some(got), stored(&table, "a").await);

    let updated = via
        .update_item()
        .table_name(&table)
        .key("pk", s("a"))
        .update_expression("SET n = n + :one")
        .condition_expression("n = :one")
        .expression_attribute_values(":one", n(1))
        .return_values(ReturnValue::AllNew)
        .send()
        .await
        .unwrap();
    assert_eq!(updated.attributes.unwrap()["n"], n(2));

    via.transact_write_items()
        .transact_items(put_action(&table, "b"))
        .transact_items(put_action(&table, "c"))
        .send()
        .await
        .unwrap();
    let queried = via
        .query()
        .table_name(&table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", s("b"))
        .send()
        .await
        .unwrap();
    assert_eq!(queried.count, 1);
    assert_eq!(queried.items()[0]["pk"], s("b"));
    assert!(stored(&table, "c").await.is_some());
    assert_eq!(stored(&table, "a").await.unwrap()["n"], n(2));

    for op in [
        Op::PutItem,
        Op::GetItem,
        Op::UpdateItem,
        Op::TransactWriteItems,
        Op::Query,
    ] {
        assert_eq!(proxy.calls(op.name()), 1, "{op:?}");
    }
    assert_eq!(proxy.calls("any"), 5);
}

#[tokio::test]
async fn forwards_dynamodb_streams_calls_unchanged() {
    let proxy = proxy();
    let table = table("streams", true).await;
    put(&no_retries(&proxy), &table, "s1").await.unwrap();

    let config = testing::local_sdk_config(proxy.endpoint());
    let streams = aws_sdk_dynamodbstreams::Client::from_conf(
        aws_sdk_dynamodbstreams::config::Builder::from(&config)
            .retry_config(RetryConfig::disabled())
            .build(),
    );
    let listed = streams
        .list_streams()
        .table_name(&table)
        .send()
        .await
        .unwrap();
    let arn = listed.streams()[0].stream_arn().unwrap().to_owned();
    assert!(arn.contains(&format!(":table/{table}/stream/")), "{arn}");

    // A Streams call matched by its stream's table: the first DescribeStream fails.
    let rule = proxy.add(
        Rule::new(Op::DescribeStream)
            .table(&table)
            .internal()
            .next(1),
    );
    let failed = streams
        .describe_stream()
        .stream_arn(&arn)
        .send()
        .await
        .unwrap_err();
    assert_eq!(failed.code(), Some("InternalServerError"));
    assert_eq!(proxy.fired(rule), 1);

    let description = streams
        .describe_stream()
        .stream_arn(&arn)
        .send()
        .await
        .unwrap()
        .stream_description
        .unwrap();
    let shard = description.shards()[0].shard_id().unwrap().to_owned();
    let iterator = streams
        .get_shard_iterator()
        .stream_arn(&arn)
        .shard_id(shard)
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
        .unwrap();
    assert_eq!(records.records().len(), 1);
    let record = &records.records()[0];
    assert_eq!(
        record.event_name(),
        Some(&aws_sdk_dynamodbstreams::types::OperationType::Insert)
    );
    let image = record.dynamodb().unwrap().new_image().unwrap();
    assert_eq!(
        image["pk"],
        aws_sdk_dynamodbstreams::types::AttributeValue::S("s1".into())
    );

    assert_eq!(proxy.calls("ListStreams"), 1);
    assert_eq!(proxy.calls("DescribeStream"), 2);
    assert_eq!(proxy.calls("GetShardIterator"), 1);
    assert_eq!(proxy.calls("GetRecords"), 1);
    assert_eq!(proxy.fired(rule), 1);
}

/// Byte for byte, both ways, on a kept-alive connection: the proxy in front of a fake
/// upstream that records what it receives and answers with a chunked response.
#[test]
fn forwards_bytes_unchanged() {
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_endpoint = format!("http://{}", upstream.local_addr().unwrap());
    let body = r#"{"TableName":"t","Item":{"pk":{"S":"ä"}}}"#;
    let request = format!(
        "POST /some/path?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Target: DynamoDB_20120810.PutItem\r\n\
         X-Amz-Date: 20260101T000000Z\r\nauthorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/dynamodb/aws4_request, \
         SignedHeaders=host;x-amz-date;x-amz-target, Signature=0123abcd\r\nX-Odd-Case: KeepMe \r\n\
         Content-Type: application/x-amz-json-1.0\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let response = "HTTP/1.1 200 OK\r\nx-amzn-RequestId: R1\r\nX-Amz-Crc32: 42\r\n\
                    Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
    let expected_request = request.clone();
    let recorder = std::thread::spawn(move || {
        let mut received = Vec::new();
        for _ in 0..2 {
            let (mut conn, _) = upstream.accept().unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut bytes = vec![0; expected_request.len()];
            conn.read_exact(&mut bytes).unwrap();
            received.push(bytes);
            conn.write_all(response.as_bytes()).unwrap();
        }
        received
    });

    let proxy = FaultProxy::start(&upstream_endpoint);
    let mut conn = TcpStream::connect(proxy.endpoint().trim_start_matches("http://")).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 0..2 {
        conn.write_all(request.as_bytes()).unwrap();
        let mut answer = vec![0; response.len()];
        conn.read_exact(&mut answer).unwrap();
        assert_eq!(String::from_utf8(answer).unwrap(), response);
    }
    let received = recorder.join().unwrap();
    assert_eq!(received.len(), 2);
    for bytes in received {
        assert_eq!(String::from_utf8(bytes).unwrap(), request);
    }
    assert_eq!(proxy.calls("PutItem"), 2);
}

#[tokio::test]
async fn throttle_answers_provisioned_throughput_exceeded_without_forwarding() {
    let proxy = proxy();
    let table = table("throttle", false).await;
    let rule = proxy.add(Rule::new(Op::PutItem).table(&table).throttle().next(1));
    let via = no_retries(&proxy);

    let error = put(&via, &table, "t1").await.unwrap_err();
    assert_eq!(error.code(), Some("ProvisionedThroughputExceededException"));
    assert_eq!(error.raw_response().unwrap().status().as_u16(), 400);
    assert!(error
        .into_service_error()
        .is_provisioned_throughput_exceeded_exception());
    assert_eq!(stored(&table, "t1").await, None, "not forwarded");
    assert_eq!(proxy.fired(rule), 1);

    // `next(1)` is spent: the same write now goes through.
    put(&via, &table, "t1").await.unwrap();
    assert!(stored(&table, "t1").await.is_some());
    assert_eq!((proxy.fired(rule), proxy.calls("PutItem")), (1, 2));
}

#[tokio::test]
async fn sdk_retries_absorb_throttling() {
    let proxy = proxy();
    let table = table("retried", false).await;
    let rule = proxy.add(Rule::new(Op::PutItem).table(&table).throttle().next(2));

    put(&retries(&proxy), &table, "r1").await.unwrap();
    assert!(stored(&table, "r1").await.is_some());
    assert_eq!((proxy.fired(rule), proxy.calls("PutItem")), (2, 3));
}

#[tokio::test]
async fn internal_answers_internal_server_error_without_forwarding() {
    let proxy = proxy();
    let table = table("internal", false).await;
    let rule = proxy.add(Rule::new(Op::PutItem).table(&table).internal());

    let error = put(&no_retries(&proxy), &table, "i1").await.unwrap_err();
    assert_eq!(error.code(), Some("InternalServerError"));
    assert_eq!(error.raw_response().unwrap().status().as_u16(), 500);
    assert!(error.into_service_error().is_internal_server_error());
    // Retried by the SDK, and failing every time while the rule stays.
    let error = put(&retries(&proxy), &table, "i1").await.unwrap_err();
    assert_eq!(error.code(), Some("InternalServerError"));
    assert_eq!(stored(&table, "i1").await, None, "not forwarded");
    assert_eq!((proxy.fired(rule), proxy.calls("PutItem")), (4, 4));
}

#[tokio::test]
async fn conditional_answers_a_failed_condition_without_forwarding() {
    let proxy = proxy();
    let table = table("conditional", false).await;
    let via = no_retries(&proxy);
    let rule = proxy.add(
        Rule::new(Op::UpdateItem)
            .table(&table)
            .body_contains("working")
            .conditional(),
    );
    put(&via, &table, "c1").await.unwrap();
    let update = |state: &str| {
        via.update_item()
            .table_name(&table)
            .key("pk", s("c1"))
            .update_expression("SET #state = :state")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":state", s(state))
            .send()
    };

    let error = update("working").await.unwrap_err();
    assert_eq!(error.code(), Some("ConditionalCheckFailedException"));
    assert!(error
        .into_service_error()
        .is_conditional_check_failed_exception());
    assert_eq!(stored(&table, "c1").await.unwrap().get("state"), None);
    // Another write of the same item does not match the body text.
    update("received").await.unwrap();
    assert_eq!(stored(&table, "c1").await.unwrap()["state"], s("received"));
    assert_eq!(proxy.fired(rule), 1);

    // In a transaction it is DynamoDB's TransactionCanceledException, with the failed
    // condition on the action that contains the text.
    let rule = proxy.add(
        Rule::new(Op::TransactWriteItems)
            .body_contains("second")
            .conditional(),
    );
    let error = via
        .transact_write_items()
        .transact_items(put_action(&table, "first"))
        .transact_items(put_action(&table, "second"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("TransactionCanceledException"));
    let error = error.into_service_error();
    let aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(canceled) = error else {
        panic!("not a cancelled transaction: {error:?}");
    };
    let codes: Vec<_> = canceled
        .cancellation_reasons()
        .iter()
        .map(|reason| reason.code().unwrap_or_default())
        .collect();
    assert_eq!(codes, ["None", "ConditionalCheckFailed"]);
    assert_eq!(stored(&table, "first").await, None);
    assert_eq!(stored(&table, "second").await, None);
    assert_eq!(proxy.fired(rule), 1);
}

#[tokio::test]
async fn drop_after_writes_at_moto_but_loses_the_answer() {
    let proxy = proxy();
    let table = table("lost", false).await;
    let rule = proxy.add(Rule::new(Op::PutItem).table(&table).drop_after().next(1));

    let error = put(&no_retries(&proxy), &table, "d1").await.unwrap_err();
    assert!(
        matches!(error, SdkError::DispatchFailure(_)),
        "expected a dispatch failure: {error:?}"
    );
    assert!(stored(&table, "d1").await.is_some(), "the write happened");
    assert_eq!(proxy.fired(rule), 1);

    // The hazard it exists for: with retries, a create-if-absent whose answer is lost
    // meets its own first attempt and fails its condition.
    let rule = proxy.add(Rule::new(Op::PutItem).table(&table).drop_after().next(1));
    let error = retries(&proxy)
        .put_item()
        .table_name(&table)
        .item("pk", s("d2"))
        .condition_expression("attribute_not_exists(pk)")
        .send()
        .await
        .unwrap_err();
    assert!(error
        .into_service_error()
        .is_conditional_check_failed_exception());
    assert!(stored(&table, "d2").await.is_some());
    assert_eq!((proxy.fired(rule), proxy.calls("PutItem")), (1, 3));
}

#[tokio::test]
async fn drop_before_fails_without_writing() {
    let proxy = proxy();
    let table = table("dropped", false).await;
    let rule = proxy.add(Rule::new(Op::PutItem).table(&table).drop_before().next(1));

    let error = put(&no_retries(&proxy), &table, "b1").await.unwrap_err();
    assert!(
        matches!(error, SdkError::DispatchFailure(_)),
        "expected a dispatch failure: {error:?}"
    );
    assert_eq!(stored(&table, "b1").await, None, "not forwarded");
    assert_eq!(proxy.fired(rule), 1);

    // The SDK retries a dispatch failure, and the retry goes through.
    proxy.add(Rule::new(Op::PutItem).table(&table).drop_before().next(1));
    put(&retries(&proxy), &table, "b2").await.unwrap();
    assert!(stored(&table, "b2").await.is_some());
    assert_eq!(proxy.calls("PutItem"), 3);
}

#[tokio::test]
async fn delay_lets_the_operation_timeout_fire_and_writes_late() {
    let proxy = proxy();
    let table = table("late", false).await;
    let rule = proxy.add(
        Rule::new(Op::PutItem)
            .table(&table)
            .delay(Duration::from_millis(1500))
            .next(1),
    );
    let config = testing::local_sdk_config(proxy.endpoint());
    let via = Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&config)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(Duration::from_millis(300))
                    .build(),
            )
            .build(),
    );

    let started = Instant::now();
    let error = put(&via, &table, "l1").await.unwrap_err();
    assert!(
        matches!(error, SdkError::TimeoutError(_)),
        "expected a timeout: {error:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(1200));
    assert_eq!(stored(&table, "l1").await, None, "not yet forwarded");
    assert_eq!(proxy.fired(rule), 1);

    // After the delay the request reaches moto anyway: a late write.
    let deadline = Instant::now() + Duration::from_secs(10);
    while stored(&table, "l1").await.is_none() {
        assert!(Instant::now() < deadline, "the delayed write never arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(started.elapsed() >= Duration::from_millis(1500));

    // Without the rule (spent) the same client is within its timeout.
    put(&via, &table, "l2").await.unwrap();
}

/// The functions' own SDK configuration (`lambda_sdk_config`, the explicit timeouts and
/// retries): a DynamoDB call that hangs (the proxy holds every GetItem for a minute) is
/// cut off by the attempt timeout, retried, and fails as a timeout well before it would
/// have been answered; the proxy saw more than one attempt, so it was the attempt
/// timeout, not the operation's, that ended the first.
#[tokio::test]
async fn the_functions_sdk_config_cuts_a_hanging_attempt_off_and_retries() {
    use triplink_shared::config::{lambda_sdk_config, SDK_MAX_ATTEMPTS};
    let proxy = proxy();
    let table = table("hang", false).await;
    put(&no_retries(&proxy), &table, "h1").await.unwrap();
    let rule = proxy.add(
        Rule::new(Op::GetItem)
            .table(&table)
            .delay(Duration::from_secs(60))
            .always(),
    );
    let vars: HashMap<String, String> = [
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", proxy.endpoint()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    // The execution role's credentials come from the process environment in Lambda;
    // the test's are moto's dummies.
    let config = lambda_sdk_config(&vars)
        .unwrap()
        .into_builder()
        .credentials_provider(testing::sdk_config().credentials_provider().unwrap())
        .build();
    let via = Client::new(&config);

    let call = via
        .get_item()
        .table_name(&table)
        .key("pk", s("h1"))
        .consistent_read(true)
        .send();
    // A guard against a hang only (the call's own budget is 5 s).
    let result = tokio::time::timeout(Duration::from_secs(45), call)
        .await
        .expect("the hanging call was never cut off");
    let error = result.unwrap_err();
    assert!(
        matches!(error, SdkError::TimeoutError(_)),
        "expected a timeout: {error:?}"
    );
    let attempts = proxy.fired(rule);
    assert!(
        (2..=u64::from(SDK_MAX_ATTEMPTS)).contains(&attempts),
        "attempts cut off and retried: {attempts}"
    );

    // Without the hang the same client reads the item.
    proxy.clear();
    let item = via
        .get_item()
        .table_name(&table)
        .key("pk", s("h1"))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item;
    assert!(item.is_some());
}

#[tokio::test]
async fn rules_match_operation_table_and_body_and_can_be_cleared() {
    let proxy = proxy();
    let (a, b) = (table("match-a", false).await, table("match-b", false).await);
    let via = no_retries(&proxy);
    let rule = proxy.add(
        Rule::new(Op::PutItem)
            .table(&a)
            .body_contains("needle")
            .internal(),
    );
    let seen = proxy.add(Rule::new(Op::Any).table(&a).observe());

    put(&via, &b, "needle").await.unwrap(); // other table
    put(&via, &a, "hay").await.unwrap(); // other body
    via.get_item()
        .table_name(&a)
        .key("pk", s("needle"))
        .send()
        .await
        .unwrap(); // other operation
    assert_eq!(
        put(&via, &a, "needle").await.unwrap_err().code(),
        Some("InternalServerError")
    );
    assert_eq!(
        put(&via, &a, "needle").await.unwrap_err().code(),
        Some("InternalServerError"),
        "always, by default"
    );
    assert_eq!(proxy.fired(rule), 2);
    assert_eq!(proxy.fired(seen), 4, "observing counts faulted calls too");

    proxy.remove(seen);
    put(&via, &a, "hay2").await.unwrap();
    assert_eq!(proxy.fired(seen), 4);

    proxy.clear();
    put(&via, &a, "needle").await.unwrap();
    assert!(stored(&a, "needle").await.is_some());
    assert_eq!(proxy.fired(rule), 2);
    assert_eq!(proxy.calls("PutItem"), 6);
    assert_eq!(proxy.calls("GetItem"), 1);
    assert_eq!(proxy.calls("DeleteItem"), 0);
}

#[tokio::test]
async fn probability_is_seeded() {
    let table = table("chance", false).await;
    put(&testing::dynamodb(), &table, "p").await.unwrap();
    let mut runs = Vec::new();
    for _ in 0..2 {
        let proxy = proxy();
        let rule = proxy.add(
            Rule::new(Op::GetItem)
                .table(&table)
                .throttle()
                .probability(0.5, 42),
        );
        let via = no_retries(&proxy);
        let mut outcomes = Vec::new();
        for _ in 0..30 {
            let result = via
                .get_item()
                .table_name(&table)
                .key("pk", s("p"))
                .send()
                .await;
            outcomes.push(result.is_ok());
        }
        let failures = outcomes.iter().filter(|ok| !**ok).count() as u64;
        assert_eq!(proxy.fired(rule), failures);
        assert!((5..=25).contains(&failures), "{failures} of 30 throttled");
        runs.push(outcomes);
    }
    assert_eq!(runs[0], runs[1], "the same seed gives the same faults");
}

#[test]
fn stops_and_closes_connections_when_dropped() {
    let proxy = FaultProxy::start("http://127.0.0.1:9");
    let address = proxy.endpoint().trim_start_matches("http://").to_owned();
    let mut open = TcpStream::connect(&address).unwrap();
    open.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    drop(proxy);
    // Closed: end of stream if the proxy had accepted it, a reset if still queued.
    match open.read(&mut [0; 16]) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("connection still open: {other:?}"),
    }
    assert!(TcpStream::connect(&address).is_err(), "no longer listening");
}
