//! The worker against moto (requests, members and connections tables, KMS) and the
//! Concur sandbox, for every outcome and every way a record can be delivered.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use aws_lambda_events::event::dynamodb::{EventRecord, StreamRecord};
use concur_sandbox::{spawn, Config, Sandbox};
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::time::Instant;
use triplink_shared::concur::{
    BaseUrl, ConcurClient, ConcurConfig, ConcurError, RetryPolicy, UserTokens,
};
use triplink_shared::matching::Member;
use triplink_shared::members::dynamo::DynamoMemberDirectory;
use triplink_shared::members::http::{HttpDirectoryConfig, HttpMemberDirectory};
use triplink_shared::members::MemberDirectory;
use triplink_shared::model::ConnectionStatus;
use triplink_shared::store::layout::{RequestItem, RequestState};
use triplink_shared::store::{tables, DynamoRequestStore, RequestStore, WorkStore};
use triplink_shared::telemetry::Metrics;
use triplink_shared::testing;
use triplink_shared::vault::{KmsEncryptor, TokenVault};
use worker::{ConcurPort, RecordOutcome, Worker, WorkerSettings};

struct Env {
    sandbox: Sandbox,
    concur: ConcurClient,
    store: DynamoRequestStore,
    members: DynamoMemberDirectory,
    vault: TokenVault<KmsEncryptor>,
    expected: HashMap<String, String>,
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

fn concur_client(sandbox: &Sandbox) -> ConcurClient {
    let mut config = ConcurConfig::new(
        BaseUrl::parse(&sandbox.local_url).unwrap(),
        "sandbox-client",
        SecretString::from("sandbox-secret"),
    );
    config.retry = RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(20),
    };
    ConcurClient::new(config).unwrap()
}

/// A seeded sandbox (every hard case), its members imported, its queue polled.
async fn setup(users: usize) -> Env {
    let dir = std::env::temp_dir().join(testing::unique_name("worker-seed"));
    std::fs::create_dir_all(&dir).unwrap();
    let members_file: PathBuf = dir.join("members.json");
    let mut config = Config::for_tests();
    config.seed = Some(7);
    config.users = users;
    config.members_out = Some(members_file.clone());
    let sandbox = spawn(config).await.unwrap();

    let aws = testing::sdk_config();
    let dynamo = aws_sdk_dynamodb::Client::new(&aws);
    let (requests, members_table, connections) = (
        testing::unique_name("requests"),
        testing::unique_name("members"),
        testing::unique_name("connections"),
    );
    tables::create_requests_table(&dynamo, &requests)
        .await
        .unwrap();
    tables::create_members_table(&dynamo, &members_table)
        .await
        .unwrap();
    tables::create_connections_table(&dynamo, &connections)
        .await
        .unwrap();
    let members = DynamoMemberDirectory::new(dynamo.clone(), members_table);
    let seeded: Vec<Member> =
        serde_json::from_str(&std::fs::read_to_string(&members_file).unwrap()).unwrap();
    for member in &seeded {
        members.put_member(member).await.unwrap();
    }
    let expectations: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("members.expected.json")).unwrap())
            .unwrap();
    let expected = expectations
        .iter()
        .map(|e| {
            (
                e["requestId"].as_str().unwrap().to_owned(),
                e["expected"].as_str().unwrap().to_owned(),
            )
        })
        .collect();

    let concur = concur_client(&sandbox);
    let store = DynamoRequestStore::new(dynamo.clone(), requests);
    poller::poll(&concur, &store, &poller::PollerSettings::default(), far())
        .await
        .unwrap();
    let vault = TokenVault::new(
        dynamo,
        connections,
        KmsEncryptor::new(aws_sdk_kms::Client::new(&aws), testing::kms_key().await),
    );
    Env {
        sandbox,
        concur,
        store,
        members,
        vault,
        expected,
    }
}

fn settings() -> WorkerSettings {
    let mut settings = WorkerSettings::default();
    settings.step_retry.base_delay = Duration::from_millis(10);
    settings
}

fn worker<C: ConcurPort, D: MemberDirectory>(
    env: &Env,
    concur: C,
    directory: D,
) -> Worker<C, D, &DynamoRequestStore, &TokenVault<KmsEncryptor>> {
    Worker {
        concur,
        directory,
        store: &env.store,
        vault: &env.vault,
        settings: settings(),
        metrics: Metrics::new("TripLink", "worker"),
    }
}

/// A stream record for an item, as DynamoDB Streams delivers it.
fn record(item: &RequestItem, event_name: &str, sequence: u64) -> EventRecord {
    let image: serde_dynamo::Item = serde_dynamo::to_item(item).unwrap();
    let keys: serde_dynamo::Item =
        serde_dynamo::to_item(json!({"request_id": item.request_id})).unwrap();
    let mut change = StreamRecord::default();
    change.keys = keys;
    change.new_image = image;
    change.sequence_number = Some(format!("{sequence:021}"));
    let mut record = EventRecord::default();
    record.event_name = event_name.into();
    record.change = change;
    record
}

fn records(items: &[RequestItem]) -> Vec<EventRecord> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| record(item, "INSERT", 100 + i as u64))
        .collect()
}

fn lambda_deadline_ms() -> i64 {
    chrono::Utc::now().timestamp_millis() + 60_000
}

/// The sandbox's view of one request: accepted and rejected PUTs.
async fn puts(sandbox: &Sandbox, id: &str) -> (Vec<String>, usize) {
    let view: Value = reqwest::get(sandbox.url(&format!("/_sandbox/requests/{id}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let history = view["history"].as_array().cloned().unwrap_or_default();
    let accepted = history
        .iter()
        .filter(|p| p["accepted"].as_bool().unwrap_or(false))
        .map(|p| p["status"].as_str().unwrap_or_default().to_owned())
        .collect();
    let rejected = history
        .iter()
        .filter(|p| !p["accepted"].as_bool().unwrap_or(true))
        .count();
    (accepted, rejected)
}

#[tokio::test]
async fn every_seeded_case_gets_its_expected_status_exactly_once() {
    let env = setup(40).await;
    let worker = worker(&env, &env.concur, &env.members);
    let batch = records(&testing::scan_requests(&env.store).await);
    assert_eq!(batch.len(), 40);
    let response = worker
        .process_batch(&batch, "invocation-1", lambda_deadline_ms())
        .await;
    assert!(
        response.batch_item_failures.is_empty(),
        "{:?}",
        response.batch_item_failures
    );

    let mut by_status: HashMap<String, usize> = HashMap::new();
    for item in testing::scan_requests(&env.store).await {
        assert_eq!(item.state, RequestState::Reported, "{}", item.request_id);
        let status = item.history.last().unwrap().status.as_str().to_owned();
        assert_eq!(
            Some(&status),
            env.expected.get(&item.request_id),
            "request {} ({:?})",
            item.request_id,
            item.history
        );
        assert!(
            item.last_name.is_none() && item.request_token.is_none(),
            "personal data removed"
        );
        assert!(item.expires_at.is_some(), "TTL set");
        let (accepted, rejected) = puts(&env.sandbox, &item.request_id).await;
        assert_eq!((accepted, rejected), (vec![status.clone()], 0));
        *by_status.entry(status).or_default() += 1;
    }
    for status in ["CRSUC", "CREU1", "CREU2", "CREU3"] {
        assert!(
            by_status.get(status).copied().unwrap_or(0) > 0,
            "{status}: {by_status:?}"
        );
    }
    // Every matched member has a stored connection.
    let connected = by_status["CRSUC"];
    let count = env.vault_count().await;
    assert_eq!(count, connected);
}

impl Env {
    async fn vault_count(&self) -> usize {
        let table = self.vault_table();
        self.store
            .client()
            .scan()
            .table_name(table)
            .send()
            .await
            .unwrap()
            .count as usize
    }
    fn vault_table(&self) -> String {
        self.vault.table().to_owned()
    }
}

#[tokio::test]
async fn duplicated_records_report_once() {
    let env = setup(6).await;
    let worker = worker(&env, &env.concur, &env.members);
    let item = testing::scan_requests(&env.store).await.remove(0);
    let twice = vec![record(&item, "INSERT", 1), record(&item, "MODIFY", 2)];
    let response = worker
        .process_batch(&twice, "inv-a", lambda_deadline_ms())
        .await;
    assert!(response.batch_item_failures.is_empty());
    let again = worker
        .process(
            &record(&item, "INSERT", 1),
            "inv-b",
            lambda_deadline_ms(),
            far(),
        )
        .await
        .unwrap();
    assert_eq!(again, RecordOutcome::AlreadyDone);
    let (accepted, rejected) = puts(&env.sandbox, &item.request_id).await;
    assert_eq!((accepted.len(), rejected), (1, 0));
}

#[tokio::test]
async fn the_workers_own_updates_and_removals_are_ignored() {
    let env = setup(3).await;
    let worker = worker(&env, &env.concur, &env.members);
    let mut item = testing::scan_requests(&env.store).await.remove(0);
    let remove = record(&item, "REMOVE", 1);
    item.state = RequestState::Working;
    let working = record(&item, "MODIFY", 2);
    for (r, why) in [(remove, "removed"), (working, "not received")] {
        let outcome = worker
            .process(&r, "inv", lambda_deadline_ms(), far())
            .await
            .unwrap();
        assert_eq!(outcome, RecordOutcome::Ignored(why));
    }
    assert_eq!(puts(&env.sandbox, &item.request_id).await.0.len(), 0);
}

/// A Concur whose status PUTs fail for chosen requests (the rest pass through).
struct FailingPut<'a> {
    inner: &'a ConcurClient,
    fail_ids: Mutex<Vec<String>>,
}

impl ConcurPort for FailingPut<'_> {
    async fn exchange(
        &self,
        user_id: &str,
        token: &SecretString,
        deadline: Instant,
    ) -> Result<UserTokens, ConcurError> {
        self.inner.exchange(user_id, token, deadline).await
    }
    async fn report(
        &self,
        id: &str,
        status: ConnectionStatus,
        deadline: Instant,
    ) -> Result<(), ConcurError> {
        if self.fail_ids.lock().unwrap().iter().any(|f| f == id) {
            return Err(ConcurError::Timeout {
                info: triplink_shared::concur::CallInfo::new("update_status"),
            });
        }
        self.inner.report(id, status, deadline).await
    }
}

#[tokio::test]
async fn a_crash_between_deciding_and_the_put_resends_the_same_status() {
    let env = setup(6).await;
    let item = testing::scan_requests(&env.store).await.remove(0);
    let failing = FailingPut {
        inner: &env.concur,
        fail_ids: Mutex::new(vec![item.request_id.clone()]),
    };
    let first = worker(&env, failing, &env.members);
    let err = first
        .process(
            &record(&item, "INSERT", 1),
            "inv-1",
            lambda_deadline_ms(),
            far(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("could not be sent"), "{err}");
    let decided = env.store.get(&item.request_id).await.unwrap().unwrap();
    assert_eq!(decided.state, RequestState::Decided);
    let status = decided.decided_status.unwrap();

    let retry = worker(&env, &env.concur, &env.members);
    let outcome = retry
        .process(
            &record(&item, "INSERT", 1),
            "inv-2",
            lambda_deadline_ms(),
            far(),
        )
        .await
        .unwrap();
    assert_eq!(
        outcome,
        RecordOutcome::Reported {
            status,
            resent: true
        }
    );
    assert_eq!(
        puts(&env.sandbox, &item.request_id).await,
        (vec![status.as_str().to_owned()], 0)
    );
}

#[tokio::test]
async fn a_put_failing_then_succeeding() {
    let env = setup(6).await;
    let item = testing::scan_requests(&env.store).await.remove(0);
    let worker = worker(&env, &env.concur, &env.members);
    reqwest::Client::new()
        .post(env.sandbox.url("/_sandbox/faults"))
        .json(&json!({"rules": ["put:503:next=5"]}))
        .send()
        .await
        .unwrap();
    let failed = worker
        .process_batch(&[record(&item, "INSERT", 7)], "inv-1", lambda_deadline_ms())
        .await;
    assert_eq!(failed.batch_item_failures.len(), 1);
    assert_eq!(
        failed.batch_item_failures[0].item_identifier.as_deref(),
        Some("000000000000000000007")
    );
    reqwest::Client::new()
        .delete(env.sandbox.url("/_sandbox/faults"))
        .send()
        .await
        .unwrap();
    let retried = worker
        .process_batch(&[record(&item, "INSERT", 7)], "inv-2", lambda_deadline_ms())
        .await;
    assert!(retried.batch_item_failures.is_empty());
    let (accepted, rejected) = puts(&env.sandbox, &item.request_id).await;
    assert_eq!((accepted.len(), rejected), (1, 0));
    assert_eq!(
        env.store
            .get(&item.request_id)
            .await
            .unwrap()
            .unwrap()
            .state,
        RequestState::Reported
    );
}

#[tokio::test]
async fn a_lost_put_answer_is_not_reported_twice() {
    let env = setup(6).await;
    let item = testing::scan_requests(&env.store).await.remove(0);
    let worker = worker(&env, &env.concur, &env.members);
    // Concur takes the PUT, then the answer is lost: the client's retry finds the
    // request no longer outstanding.
    reqwest::Client::new()
        .post(env.sandbox.url("/_sandbox/faults"))
        .json(&json!({"rules": ["put:503-after:next=1"]}))
        .send()
        .await
        .unwrap();
    let outcome = worker
        .process(
            &record(&item, "INSERT", 1),
            "inv",
            lambda_deadline_ms(),
            far(),
        )
        .await
        .unwrap();
    assert!(
        matches!(outcome, RecordOutcome::Reported { .. }),
        "{outcome:?}"
    );
    let (accepted, _) = puts(&env.sandbox, &item.request_id).await;
    assert_eq!(accepted.len(), 1, "one status for the attempt");
    assert_eq!(
        env.store
            .get(&item.request_id)
            .await
            .unwrap()
            .unwrap()
            .state,
        RequestState::Reported
    );
}

#[tokio::test]
async fn a_live_lease_is_left_alone_and_an_expired_one_is_taken_over() {
    let env = setup(6).await;
    let item = testing::scan_requests(&env.store).await.remove(0);
    let worker = worker(&env, &env.concur, &env.members);
    let now = chrono::Utc::now();
    env.store
        .claim(
            &item.request_id,
            1,
            "someone-else",
            now.timestamp_millis() + 60_000,
            now,
        )
        .await
        .unwrap();
    let busy = worker
        .process_batch(&[record(&item, "INSERT", 3)], "inv", lambda_deadline_ms())
        .await;
    assert_eq!(
        busy.batch_item_failures.len(),
        1,
        "retried later, not processed"
    );
    assert!(puts(&env.sandbox, &item.request_id).await.0.is_empty());

    // The other worker died; its lease runs out.
    let other = testing::scan_requests(&env.store).await.remove(1);
    env.store
        .claim(
            &other.request_id,
            1,
            "dead-worker",
            now.timestamp_millis() - 1,
            now,
        )
        .await
        .unwrap();
    let outcome = worker
        .process(
            &record(&other, "INSERT", 4),
            "inv",
            lambda_deadline_ms(),
            far(),
        )
        .await
        .unwrap();
    assert!(
        matches!(outcome, RecordOutcome::Reported { .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn the_http_directory_down_means_crret() {
    let env = setup(3).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let down = HttpMemberDirectory::new(HttpDirectoryConfig {
        base_url: url::Url::parse(&format!("http://127.0.0.1:{port}")).unwrap(),
        timeout: Duration::from_millis(300),
        auth_header: None,
    })
    .unwrap();
    let worker = worker(&env, &env.concur, down);
    let batch = records(&testing::scan_requests(&env.store).await);
    let response = worker
        .process_batch(&batch, "inv", lambda_deadline_ms())
        .await;
    assert!(response.batch_item_failures.is_empty());
    for item in testing::scan_requests(&env.store).await {
        let last = item.history.last().unwrap();
        assert_eq!(last.status, ConnectionStatus::Retry);
        assert_eq!(last.reason.as_deref(), Some("directory_unavailable"));
        assert_eq!(
            puts(&env.sandbox, &item.request_id).await.0,
            vec!["CRRET".to_owned()]
        );
    }
}

#[tokio::test]
async fn an_expired_request_token_means_crret() {
    let env = setup(20).await;
    // A day and an hour later, the tokens issued by the poll have expired.
    reqwest::Client::new()
        .post(env.sandbox.url("/_sandbox/clock/advance"))
        .json(&json!({"seconds": 25 * 3600}))
        .send()
        .await
        .unwrap();
    let worker = worker(&env, &env.concur, &env.members);
    let matched: Vec<_> = testing::scan_requests(&env.store)
        .await
        .into_iter()
        .filter(|i| env.expected.get(&i.request_id).map(String::as_str) == Some("CRSUC"))
        .collect();
    assert!(!matched.is_empty());
    worker
        .process_batch(&records(&matched), "inv", lambda_deadline_ms())
        .await;
    for item in &matched {
        let stored = env.store.get(&item.request_id).await.unwrap().unwrap();
        let last = stored.history.last().unwrap();
        assert_eq!(last.status, ConnectionStatus::Retry, "{:?}", last);
        assert!(
            last.reason
                .as_deref()
                .unwrap()
                .starts_with("token_exchange_failed"),
            "{last:?}"
        );
    }
}

#[tokio::test]
async fn one_failing_record_fails_only_from_its_sequence_number() {
    let env = setup(6).await;
    let all = testing::scan_requests(&env.store).await;
    let failing = FailingPut {
        inner: &env.concur,
        fail_ids: Mutex::new(vec![all[2].request_id.clone()]),
    };
    let worker = worker(&env, failing, &env.members);
    let batch = records(&all);
    let response = worker
        .process_batch(&batch, "inv", lambda_deadline_ms())
        .await;
    assert_eq!(response.batch_item_failures.len(), 1);
    assert_eq!(
        response.batch_item_failures[0].item_identifier,
        batch[2].change.sequence_number
    );
    let after = testing::scan_requests(&env.store).await;
    for (i, item) in after.iter().enumerate() {
        let want = if i == 2 {
            RequestState::Decided
        } else {
            RequestState::Reported
        };
        assert_eq!(item.state, want, "{}", item.request_id);
    }
    // Lambda retries from the failed record: the rest are done and stay done.
    let worker = self::worker(&env, &env.concur, &env.members);
    let retry = worker
        .process_batch(&batch[2..], "inv-2", lambda_deadline_ms())
        .await;
    assert!(retry.batch_item_failures.is_empty());
    for item in testing::scan_requests(&env.store).await {
        assert_eq!(item.state, RequestState::Reported);
        assert_eq!(puts(&env.sandbox, &item.request_id).await.0.len(), 1);
    }
}
