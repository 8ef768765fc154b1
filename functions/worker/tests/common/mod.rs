//! What the worker's test suites share: a seeded sandbox, its members imported and its
//! queue polled into moto; stream records shaped as DynamoDB Streams delivers them; and
//! the audit every suite ends with (through the sandbox's own history and the table).
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use aws_lambda_events::event::dynamodb::{EventRecord, StreamRecord};
use concur_sandbox::{spawn, Config, Sandbox};
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::time::Instant;
use triplink_shared::concur::{BaseUrl, ConcurClient, ConcurConfig, RetryPolicy};
use triplink_shared::matching::Member;
use triplink_shared::members::dynamo::DynamoMemberDirectory;
use triplink_shared::members::MemberDirectory;
use triplink_shared::store::layout::{RequestItem, RequestState};
use triplink_shared::store::WorkStore;
use triplink_shared::store::{tables, DynamoRequestStore};
use triplink_shared::telemetry::Metrics;
use triplink_shared::testing;
use triplink_shared::vault::{KmsEncryptor, TokenVault};
use worker::{ConcurPort, ConnectionSink, RecordOutcome, Worker, WorkerSettings};

pub struct Env {
    pub sandbox: Sandbox,
    pub concur: ConcurClient,
    pub store: DynamoRequestStore,
    pub members: DynamoMemberDirectory,
    pub vault: TokenVault<KmsEncryptor>,
    pub expected: HashMap<String, String>,
}

pub fn far() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

pub fn concur_client(sandbox: &Sandbox) -> ConcurClient {
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
pub async fn setup(users: usize) -> Env {
    setup_with(users, |_| {}).await
}

/// [`setup`] with the sandbox's configuration changed first.
pub async fn setup_with(users: usize, configure: impl FnOnce(&mut Config)) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let members_file: PathBuf = dir.path().join("members.json");
    let mut config = Config::for_tests();
    config.seed = Some(7);
    config.users = users;
    config.members_out = Some(members_file.clone());
    configure(&mut config);
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
    members.refresh_manifest(chrono::Utc::now()).await.unwrap();
    let expectations: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("members.expected.json")).unwrap(),
    )
    .unwrap();
    drop(dir);
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

pub fn settings() -> WorkerSettings {
    let mut settings = WorkerSettings::default();
    settings.step_retry.base_delay = Duration::from_millis(10);
    settings
}

pub fn worker<C: ConcurPort, D: MemberDirectory>(
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
        safety: Default::default(),
    }
}

/// A stream record for an item, as DynamoDB Streams delivers it.
pub fn record(item: &RequestItem, event_name: &str, sequence: u64) -> EventRecord {
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

pub fn records(items: &[RequestItem]) -> Vec<EventRecord> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| record(item, "INSERT", 100 + i as u64))
        .collect()
}

/// Deliver `item` to `worker` as an `INSERT` record (stream sequence `sequence`), as
/// invocation `owner` with a minute left: the outcome.
pub async fn deliver<C, D, S, V>(
    worker: &Worker<C, D, S, V>,
    item: &RequestItem,
    sequence: u64,
    owner: &str,
) -> RecordOutcome
where
    C: ConcurPort,
    D: MemberDirectory,
    S: WorkStore,
    V: ConnectionSink,
{
    worker
        .process(
            &record(item, "INSERT", sequence),
            owner,
            lambda_deadline_ms(),
            far(),
        )
        .await
        .unwrap()
}

/// Set the sandbox's fault rules (`/_sandbox/faults`, e.g. `put:503:next=5`).
pub async fn faults(env: &Env, rules: &[&str]) {
    let response = triplink_shared::testing::http_client()
        .post(env.sandbox.url("/_sandbox/faults"))
        .json(&json!({ "rules": rules }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
}

pub fn lambda_deadline_ms() -> i64 {
    chrono::Utc::now().timestamp_millis() + 60_000
}

/// The sandbox's view of one request: accepted and rejected PUTs.
pub async fn puts(sandbox: &Sandbox, id: &str) -> (Vec<String>, usize) {
    let view: Value = triplink_shared::testing::http_client()
        .get(sandbox.url(&format!("/_sandbox/requests/{id}")))
        .send()
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

impl Env {
    pub async fn vault_count(&self) -> usize {
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
    pub fn vault_table(&self) -> String {
        self.vault.table().to_owned()
    }
}

/// What the sandbox and the table say about every request, after a run.
#[derive(Debug, Default)]
pub struct Audit {
    /// Attempts with more than one accepted status.
    pub doubled: Vec<String>,
    /// PUTs Concur refused (a second status for an attempt already popped).
    pub rejected_puts: usize,
    /// Request tokens submitted to the grant more than once.
    pub token_reused: Vec<String>,
    /// Successful exchanges per attempt beyond the first.
    pub extra_exchanges: Vec<String>,
    /// Requests Concur never got a status for.
    pub unreported: Vec<String>,
    /// Table items not `reported`.
    pub stuck: Vec<String>,
    /// Seeded requests whose first status is not the expected one.
    pub mismatched: Vec<String>,
}

impl Audit {
    pub fn assert_clean(&self) {
        assert!(
            self.doubled.is_empty()
                && self.rejected_puts == 0
                && self.token_reused.is_empty()
                && self.unreported.is_empty()
                && self.stuck.is_empty()
                && self.mismatched.is_empty(),
            "{self:#?}"
        );
    }
}

pub async fn sandbox_requests(sandbox: &Sandbox) -> Vec<Value> {
    let view: Value = triplink_shared::testing::http_client()
        .get(sandbox.url("/_sandbox/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    view["requests"].as_array().cloned().unwrap_or_default()
}

/// Every request of the sandbox and every item of the table, checked against the
/// connector's promise: one status per attempt, no token submitted twice, nothing left.
pub async fn audit(env: &Env) -> Audit {
    let mut audit = Audit::default();
    for r in sandbox_requests(&env.sandbox).await {
        let id = r["id"].as_str().unwrap_or_default().to_owned();
        let history = r["history"].as_array().cloned().unwrap_or_default();
        let mut per_attempt: HashMap<u64, usize> = HashMap::new();
        for put in &history {
            if put["accepted"].as_bool() == Some(true) {
                *per_attempt
                    .entry(put["attempt"].as_u64().unwrap_or(0))
                    .or_default() += 1;
            } else {
                audit.rejected_puts += 1;
            }
        }
        if per_attempt.values().any(|n| *n > 1) {
            audit.doubled.push(id.clone());
        }
        if history.is_empty() {
            audit.unreported.push(id.clone());
        }
        let mut tokens: HashMap<u64, usize> = HashMap::new();
        for attempt in r["exchange_attempts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            *tokens
                .entry(attempt["token_number"].as_u64().unwrap_or(0))
                .or_default() += 1;
        }
        if tokens.values().any(|n| *n > 1) {
            audit.token_reused.push(id.clone());
        }
        let mut exchanges: HashMap<u64, usize> = HashMap::new();
        for e in r["exchanges"].as_array().cloned().unwrap_or_default() {
            *exchanges
                .entry(e["attempt"].as_u64().unwrap_or(0))
                .or_default() += 1;
        }
        if exchanges.values().any(|n| *n > 1) {
            audit.extra_exchanges.push(id.clone());
        }
        let first = history
            .iter()
            .find(|p| p["accepted"].as_bool() == Some(true))
            .and_then(|p| p["status"].as_str());
        if let (Some(first), Some(expected)) = (first, env.expected.get(&id)) {
            if first != expected {
                audit
                    .mismatched
                    .push(format!("{id}: {first} != {expected}"));
            }
        }
    }
    for item in testing::scan_requests(&env.store).await {
        if item.state != RequestState::Reported {
            audit
                .stuck
                .push(format!("{} {:?}", item.request_id, item.state));
        }
    }
    audit
}
