//! Every file in `events/` (the samples for `sam local invoke`) read with the handlers'
//! event types and run through the handlers, against moto and the Concur sandbox.

use std::path::PathBuf;
use std::time::Duration;

use aws_lambda_events::event::dynamodb::Event;
use aws_lambda_events::eventbridge::EventBridgeEvent;
use concur_sandbox::{spawn, Config};
use secrecy::SecretString;
use triplink_shared::concur::{BaseUrl, ConcurClient, ConcurConfig};
use triplink_shared::members::dynamo::DynamoMemberDirectory;
use triplink_shared::store::layout::{RequestItem, RequestState};
use triplink_shared::store::{tables, DynamoRequestStore, RequestStore};
use triplink_shared::telemetry::Metrics;
use triplink_shared::testing;
use triplink_shared::vault::{KmsEncryptor, TokenVault};
use worker::unlink::{Unlinked, VaultRevoker};
use worker::{new_image, Worker, WorkerEvent, WorkerSettings};

fn events_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../events")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(events_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn context() -> lambda_runtime::Context {
    let mut context = lambda_runtime::Context::default();
    context.request_id = "sam-local-test".into();
    context.deadline = (chrono::Utc::now().timestamp_millis() + 30_000) as u64;
    context
}

#[test]
fn every_event_file_is_read_by_its_handlers_type() {
    let mut seen = 0;
    for entry in std::fs::read_dir(events_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        if name.starts_with("worker-") {
            let event = match WorkerEvent::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}")) {
                WorkerEvent::Stream(event) => event,
                WorkerEvent::Unlink(detail) => {
                    assert!(name.contains("unlink"), "{name}");
                    assert_eq!(detail.member_id, "M-SAMPLE-1001");
                    seen += 1;
                    continue;
                }
            };
            assert!(!event.records.is_empty(), "{name}");
            for record in &event.records {
                if record.event_name != "REMOVE" {
                    new_image(record)
                        .unwrap_or_else(|e| panic!("{name}: {e}"))
                        .unwrap();
                }
            }
        } else if name.starts_with("poller-") {
            let _: EventBridgeEvent<serde_json::Value> =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        } else {
            assert_eq!(name, "env.json", "an events/ file no test reads");
            let env: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert!(env.as_object().unwrap().values().all(|v| v.is_object()));
        }
        seen += 1;
    }
    assert!(seen >= 5, "{seen} files");
}

#[tokio::test]
async fn the_handlers_run_on_the_sample_events() {
    let sandbox = spawn(Config::for_tests()).await.unwrap();
    let concur = ConcurClient::new(ConcurConfig::new(
        BaseUrl::parse(&sandbox.local_url).unwrap(),
        "sandbox-client",
        SecretString::from("sandbox-secret"),
    ))
    .unwrap();
    let aws = testing::sdk_config();
    let dynamo = aws_sdk_dynamodb::Client::new(&aws);
    let (requests, members, connections) = (
        testing::unique_name("requests"),
        testing::unique_name("members"),
        testing::unique_name("connections"),
    );
    tables::create_requests_table(&dynamo, &requests)
        .await
        .unwrap();
    tables::create_members_table(&dynamo, &members)
        .await
        .unwrap();
    tables::create_connections_table(&dynamo, &connections)
        .await
        .unwrap();
    let store = DynamoRequestStore::new(dynamo.clone(), requests);

    // The poller on its scheduled event.
    let poller = poller::Poller {
        concur: &concur,
        store: &store,
        settings: poller::PollerSettings::default(),
        metrics: Metrics::new("TripLink", "poller"),
        pause: Default::default(),
        keep_alive: None,
    };
    let tick: EventBridgeEvent<serde_json::Value> =
        serde_json::from_str(&read("poller-schedule.json")).unwrap();
    let summary = poller
        .handle(lambda_runtime::LambdaEvent::new(tick, context()))
        .await
        .unwrap();
    assert_eq!(summary.stop_reason, poller::StopReason::Drained);

    // The worker on its stream events; the sample items are stored as the poller would.
    // The directory holds one member, none of the sample travellers, and its manifest.
    let directory = DynamoMemberDirectory::new(dynamo.clone(), members);
    directory
        .put_member(&triplink_shared::members::Member {
            member_id: "M-OTHER".into(),
            loyalty_number: Some("999000999".into()),
            first_name: None,
            last_name: "Nobody".into(),
            emails: vec!["nobody@mail.example".into()],
            status: triplink_shared::members::MemberStatus::Active,
        })
        .await
        .unwrap();
    directory
        .refresh_manifest(chrono::Utc::now())
        .await
        .unwrap();
    let worker = Worker {
        concur: &concur,
        directory,
        store: &store,
        vault: TokenVault::new(
            dynamo.clone(),
            connections,
            KmsEncryptor::new(aws_sdk_kms::Client::new(&aws), testing::kms_key().await),
        ),
        settings: WorkerSettings {
            deadline_margin: Duration::from_secs(1),
            ..WorkerSettings::default()
        },
        metrics: Metrics::new("TripLink", "worker"),
        safety: Default::default(),
    };
    for file in [
        "worker-insert.json",
        "worker-requeue.json",
        "worker-ignore.json",
    ] {
        let event: Event = serde_json::from_str(&read(file)).unwrap();
        let mut received = Vec::new();
        for record in &event.records {
            if let Some(item) = new_image(record).unwrap() {
                testing::put_request(&store, &item).await;
                if item.state == RequestState::Received {
                    received.push(item);
                }
            }
        }
        let revoker = VaultRevoker {
            vault: &worker.vault,
            concur: &concur,
        };
        let response = worker
            .handle_event(
                lambda_runtime::LambdaEvent::new(
                    serde_json::from_str(&read(file)).unwrap(),
                    context(),
                ),
                &revoker,
            )
            .await
            .unwrap();
        assert_eq!(
            response["batchItemFailures"],
            serde_json::json!([]),
            "{file}: {response}"
        );
        for item in received {
            let after: RequestItem = store.get(&item.request_id).await.unwrap().unwrap();
            assert_eq!(after.state, RequestState::Reported, "{file}");
            assert_eq!(after.attempt, item.attempt, "{file}");
            // No such member in a populated directory: loyalty account not found.
            assert_eq!(
                after.history.last().unwrap().status.as_str(),
                "CREU1",
                "{file}"
            );
        }
    }
    // The unlink sample: that member has no connection here, which is a success.
    let revoker = VaultRevoker {
        vault: &worker.vault,
        concur: &concur,
    };
    let unlinked = worker
        .handle_event(
            lambda_runtime::LambdaEvent::new(
                serde_json::from_str(&read("worker-unlink.json")).unwrap(),
                context(),
            ),
            &revoker,
        )
        .await
        .unwrap();
    assert_eq!(
        unlinked,
        serde_json::json!({"member_id": "M-SAMPLE-1001", "result": Unlinked::NotConnected})
    );
    // The ignored records changed nothing.
    let ignored: Event = serde_json::from_str(&read("worker-ignore.json")).unwrap();
    let working = new_image(&ignored.records[0]).unwrap().unwrap();
    assert_eq!(
        store.get(&working.request_id).await.unwrap().unwrap().state,
        RequestState::Working
    );
}
