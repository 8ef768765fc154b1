//! What one request costs in AWS calls: every DynamoDB and KMS call of the worker goes
//! through the fault proxy, whose journal lists them in order. Each call is latency on
//! the request's path (they run one after another) and a billed read or write, so the
//! happy paths are pinned here call by call: a new call on them is a decision, not an
//! accident.

mod common;

use common::*;
use triplink_shared::fault_proxy::FaultProxy;
use triplink_shared::members::dynamo::DynamoMemberDirectory;
use triplink_shared::store::DynamoRequestStore;
use triplink_shared::telemetry::Metrics;
use triplink_shared::testing;
use triplink_shared::vault::{KmsEncryptor, TokenVault};
use worker::{RecordOutcome, Worker};

/// The journal's entries with the unique table names reduced to their kind
/// (`requests`, `members`, `connections`).
fn calls(proxy: &FaultProxy) -> Vec<String> {
    proxy
        .journal()
        .iter()
        .map(|call| match call.split_once(' ') {
            Some((op, table)) => {
                let kind = ["requests", "members", "connections"]
                    .into_iter()
                    .find(|kind| table.starts_with(kind))
                    .unwrap_or(table);
                format!("{op} {kind}")
            }
            None => call.clone(),
        })
        .collect()
}

#[tokio::test]
async fn each_request_costs_its_lookups_and_one_write_per_life_cycle_step() {
    let env = setup(12).await;
    let proxy = FaultProxy::start(&testing::moto().endpoint);
    let aws = testing::local_sdk_config(proxy.endpoint());
    let dynamo = aws_sdk_dynamodb::Client::new(&aws);
    let store = DynamoRequestStore::new(dynamo.clone(), env.store.table());
    let members = DynamoMemberDirectory::new(dynamo.clone(), env.members.table.clone());
    let vault = TokenVault::new(
        dynamo,
        env.vault.table(),
        KmsEncryptor::new(aws_sdk_kms::Client::new(&aws), testing::kms_key().await),
    );
    let worker = Worker {
        concur: &env.concur,
        directory: &members,
        store: &store,
        vault: &vault,
        settings: settings(),
        metrics: Metrics::disabled("worker"),
        safety: Default::default(),
    };
    let items = testing::scan_requests(&env.store).await;
    let (mut connected, mut refused) = (Vec::new(), Vec::new());
    for (i, item) in items.iter().enumerate() {
        let expected = env.expected.get(&item.request_id).map(String::as_str);
        if !matches!(expected, Some("CRSUC" | "CREU1" | "CREU2" | "CREU3")) {
            continue;
        }
        proxy.clear_journal();
        let outcome = deliver(&worker, item, 100 + i as u64, "inv-1").await;
        assert!(
            matches!(outcome, RecordOutcome::Reported { .. }),
            "{outcome:?}"
        );
        let journal = calls(&proxy);
        eprintln!("{:?}: {}", expected, journal.join(" | "));
        // The member lookups are the matching's (a loyalty number: one Query; e-mails: a
        // Query each and the owners read); everything else is the life cycle's.
        let (lookups, life_cycle): (Vec<String>, Vec<String>) = journal
            .into_iter()
            .partition(|call| call.ends_with(" members"));
        assert!(
            lookups
                .iter()
                .all(|call| call == "Query members" || call == "GetItem members"),
            "{lookups:?}"
        );
        match expected {
            Some("CRSUC") => connected.push((lookups, life_cycle)),
            _ => refused.push((lookups, life_cycle)),
        }
    }
    assert!(
        connected.len() >= 3 && refused.len() >= 3,
        "{connected:?} {refused:?}"
    );
    // Claim (one conditional write, no read), exchange mark, the KMS encryption and the
    // connection's write (no read either), the decision with its PUT count, the report.
    for (_, life_cycle) in &connected {
        assert_eq!(
            life_cycle,
            &[
                "UpdateItem requests",
                "UpdateItem requests",
                "Encrypt",
                "UpdateItem connections",
                "UpdateItem requests",
                "UpdateItem requests",
            ],
        );
    }
    // A loyalty-number match reads the directory once.
    assert!(connected
        .iter()
        .any(|(lookups, _)| lookups == &["Query members"]));
    // No connection: claim, the decision with its PUT count, the report.
    for (_, life_cycle) in &refused {
        assert_eq!(
            life_cycle,
            &[
                "UpdateItem requests",
                "UpdateItem requests",
                "UpdateItem requests",
            ],
        );
    }
}
