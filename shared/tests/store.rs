//! The DynamoDB requests store against a real local DynamoDB (moto_server).

use std::collections::HashSet;
use std::sync::Arc;

use chrono::Utc;
use triplink_shared::model::{json, ConnectionRequest};
use triplink_shared::store::layout::{self, AttemptRecord, RequestState};
use triplink_shared::store::{tables, DynamoRequestStore, PollWrite, RequestStore};
use triplink_shared::testing;

async fn store() -> DynamoRequestStore {
    let client = testing::dynamodb();
    let table = testing::unique_name("requests");
    tables::create_requests_table(&client, &table)
        .await
        .unwrap();
    DynamoRequestStore::new(client, table)
}

fn polled(id: &str, token: &str) -> ConnectionRequest {
    ConnectionRequest::from_wire(
        json::parse_request(&format!(
            r#"{{"ID":"{id}","requestToken":"{token}","lastName":"Müller","loyaltyNumber":"123456",
                "userId":"u-{id}","status":"Pending","emailAddresses":{{"email1":"a@example.com"}}}}"#
        ))
        .unwrap(),
    )
    .unwrap()
}

/// Mark the stored attempt as reported, as the worker will.
async fn mark_reported(store: &DynamoRequestStore, id: &str) {
    let mut item = store.get(id).await.unwrap().unwrap();
    item.state = RequestState::Reported;
    item.history.push(AttemptRecord {
        attempt: item.attempt,
        status: triplink_shared::model::ConnectionStatus::AccountNotFound,
        decided_at: "2026-01-01T00:00:00.000Z".into(),
        reported_at: Some("2026-01-01T00:00:01.000Z".into()),
        reason: None,
        result: None,
    });
    item.request_token = None;
    item.reported_at = Some(layout::timestamp(Utc::now()));
    item.due_at = None;
    testing::put_request(store, &item).await;
}

#[tokio::test]
async fn new_unchanged_token_refresh_and_requeue() {
    let store = store().await;
    let now = Utc::now();
    assert_eq!(
        store
            .record_polled(&polled("a", "t1"), now, now)
            .await
            .unwrap(),
        PollWrite::New
    );
    let item = store.get("a").await.unwrap().unwrap();
    assert_eq!((item.state, item.attempt), (RequestState::Received, 1));
    assert_eq!(item.request_token.as_deref(), Some("t1"));
    assert_eq!(item.last_name.as_deref(), Some("Müller"));
    assert_eq!(item.emails, ["a@example.com"]);

    assert_eq!(
        store
            .record_polled(&polled("a", "t1"), now, now)
            .await
            .unwrap(),
        PollWrite::Unchanged
    );
    assert_eq!(
        store
            .record_polled(&polled("a", "t2"), now, now)
            .await
            .unwrap(),
        PollWrite::TokenRefreshed
    );
    let item = store.get("a").await.unwrap().unwrap();
    assert_eq!(item.request_token.as_deref(), Some("t2"));
    assert_eq!((item.state, item.attempt), (RequestState::Received, 1));
    assert_eq!(item.times_polled, 2);

    mark_reported(&store, "a").await;
    // A page requested before the report landed is a stale view: not a requeue.
    assert_eq!(
        store
            .record_polled(&polled("a", "t3"), now, Utc::now())
            .await
            .unwrap(),
        PollWrite::Unchanged
    );
    let later = Utc::now() + chrono::Duration::milliseconds(1);
    assert_eq!(
        store
            .record_polled(&polled("a", "t3"), later, later)
            .await
            .unwrap(),
        PollWrite::Requeued { attempt: 2 }
    );
    let item = store.get("a").await.unwrap().unwrap();
    assert_eq!((item.state, item.attempt), (RequestState::Received, 2));
    assert_eq!(item.request_token.as_deref(), Some("t3"));
    assert_eq!(item.history.len(), 1, "the first attempt's history is kept");
    assert_eq!(item.history[0].attempt, 1);
    assert_eq!(item.decided_status, None);
    assert_eq!(
        store
            .record_polled(&polled("a", "t3"), later, later)
            .await
            .unwrap(),
        PollWrite::Unchanged,
        "reading the requeue again does not requeue twice"
    );
}

/// Personal data never stays for ever: an unfinished request expires UNSEEN days
/// after the poller last saw it, moved on at most once a day; a reported one keeps its
/// own retention.
#[tokio::test]
async fn every_unfinished_item_has_a_ttl_backstop_moved_on_while_seen() {
    let store = store().await.with_unseen_retention_days(10);
    let day = chrono::Duration::days(1);
    let t0 = Utc::now();
    let expires = |at: chrono::DateTime<Utc>| layout::expiry(at, 10);
    store
        .record_polled(&polled("b", "t1"), t0, t0)
        .await
        .unwrap();
    let item = store.get("b").await.unwrap().unwrap();
    assert_eq!(item.expires_at, Some(expires(t0)));
    let updated = item.updated_at.clone();

    // Seen again within the day: no write at all.
    let t1 = t0 + chrono::Duration::hours(20);
    assert_eq!(
        store
            .record_polled(&polled("b", "t1"), t1, t1)
            .await
            .unwrap(),
        PollWrite::Unchanged
    );
    let item = store.get("b").await.unwrap().unwrap();
    assert_eq!(
        (item.expires_at, &item.updated_at),
        (Some(expires(t0)), &updated)
    );

    // Seen two days later: the backstop moves on, the attempt is untouched.
    let t2 = t0 + day * 2;
    store
        .record_polled(&polled("b", "t1"), t2, t2)
        .await
        .unwrap();
    let item = store.get("b").await.unwrap().unwrap();
    assert_eq!(item.expires_at, Some(expires(t2)));
    assert_eq!((item.state, item.attempt), (RequestState::Received, 1));
    // A new token moves it too.
    let t3 = t0 + day * 4;
    store
        .record_polled(&polled("b", "t2"), t3, t3)
        .await
        .unwrap();
    assert_eq!(
        store.get("b").await.unwrap().unwrap().expires_at,
        Some(expires(t3))
    );

    // Reported: its retention stands; seeing a stale page changes nothing.
    mark_reported(&store, "b").await;
    let mut reported = store.get("b").await.unwrap().unwrap();
    reported.expires_at = Some(layout::expiry(t0, 30));
    testing::put_request(&store, &reported).await;
    let stale = t0 - chrono::Duration::seconds(1);
    store
        .record_polled(&polled("b", "t3"), stale, t0 + day * 6)
        .await
        .unwrap();
    assert_eq!(
        store.get("b").await.unwrap().unwrap().expires_at,
        Some(layout::expiry(t0, 30))
    );
}

#[tokio::test]
async fn concurrent_pollers_store_a_request_exactly_once() {
    let store = Arc::new(store().await);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .record_polled(
                    &polled("same", &format!("tok-{}", i % 2)),
                    Utc::now(),
                    Utc::now(),
                )
                .await
                .unwrap()
        }));
    }
    let mut writes = Vec::new();
    for task in tasks {
        writes.push(task.await.unwrap());
    }
    assert_eq!(
        writes.iter().filter(|w| **w == PollWrite::New).count(),
        1,
        "{writes:?}"
    );
    assert!(writes.iter().all(|w| matches!(
        w,
        PollWrite::New | PollWrite::Unchanged | PollWrite::TokenRefreshed
    )));
    let item = store.get("same").await.unwrap().unwrap();
    assert_eq!(item.attempt, 1);
}

#[tokio::test]
async fn concurrent_requeues_bump_the_attempt_once() {
    let store = Arc::new(store().await);
    store
        .record_polled(&polled("r", "t1"), Utc::now(), Utc::now())
        .await
        .unwrap();
    mark_reported(&store, "r").await;
    let fetched_at = Utc::now() + chrono::Duration::milliseconds(1);
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .record_polled(&polled("r", "t2"), fetched_at, Utc::now())
                .await
                .unwrap()
        }));
    }
    let mut writes = HashSet::new();
    let mut requeues = 0;
    for task in tasks {
        let write = task.await.unwrap();
        if matches!(write, PollWrite::Requeued { .. }) {
            requeues += 1;
        }
        writes.insert(format!("{write:?}"));
    }
    assert_eq!(requeues, 1, "{writes:?}");
    assert_eq!(store.get("r").await.unwrap().unwrap().attempt, 2);
}

#[tokio::test]
async fn a_missing_item_reads_as_none() {
    let store = store().await;
    assert!(store.get("nope").await.unwrap().is_none());
}

#[tokio::test]
async fn the_client_secret_comes_from_secrets_manager_or_ssm() {
    use secrecy::ExposeSecret;
    use std::collections::HashMap;
    use triplink_shared::config::ConcurSettings;
    let aws = testing::local_sdk_config(&testing::moto().endpoint);
    let name = testing::unique_name("concur-secret");
    let arn = aws_sdk_secretsmanager::Client::new(&aws)
        .create_secret()
        .name(&name)
        .secret_string(r#"{"client_id":"sm-id","client_secret":"sm-secret"}"#)
        .send()
        .await
        .unwrap()
        .arn
        .unwrap();
    aws_sdk_ssm::Client::new(&aws)
        .put_parameter()
        .name(format!("/{name}"))
        .value("ssm-secret")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    for (source, id, secret) in [
        (format!("secretsmanager:{arn}"), "sm-id", "sm-secret"),
        (format!("ssm:/{name}"), "configured-id", "ssm-secret"),
    ] {
        let env: HashMap<String, String> = [
            ("CONCUR_API_BASE_URL", "https://us.api.concursolutions.com"),
            ("CONCUR_CLIENT_ID", "configured-id"),
            ("CONCUR_CLIENT_SECRET_SOURCE", source.as_str()),
            ("AWS_LAMBDA_FUNCTION_NAME", "poller"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let client = ConcurSettings::from_env(&env)
            .unwrap()
            .client(&aws, &env)
            .await
            .unwrap();
        assert_eq!(client.config().client_id, id, "{source}");
        assert_eq!(
            client.config().client_secret.expose_secret(),
            secret,
            "{source}"
        );
    }
    let env: HashMap<String, String> = [
        ("CONCUR_API_BASE_URL", "https://us.api.concursolutions.com"),
        ("CONCUR_CLIENT_ID", "x"),
        (
            "CONCUR_CLIENT_SECRET_SOURCE",
            "secretsmanager:does-not-exist",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let err = ConcurSettings::from_env(&env)
        .unwrap()
        .client(&aws, &env)
        .await
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("secretsmanager:does-not-exist"),
        "{err}"
    );
}
