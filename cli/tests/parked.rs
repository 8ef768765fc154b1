//! Parked requests on moto: `status` by park reason and with the directory's health,
//! `dry-run list`, and `retry --all-parked`. Dry-run items are written by the store's own
//! path (`WorkStore::claim`, then `WorkStore::record_dry_run`), as the worker writes them.

mod common;

use chrono::{Duration, Utc};
use common::*;
use serde_json::Value;
use triplink_cli::dry_run;
use triplink_cli::output::{format_report, OutputFormat};
use triplink_cli::retry::retry_parked;
use triplink_cli::status::{status_paged, DirectoryReport};
use triplink_shared::members::DynamoMemberDirectory;
use triplink_shared::model::ConnectionStatus;
use triplink_shared::store::layout::RequestState;
use triplink_shared::store::lifecycle::ParkReason;
use triplink_shared::store::{tables, Claim, Decision, DynamoRequestStore, Lease, WorkStore};
use triplink_shared::testing;

const OWNER: &str = "lambda-request-dry";

/// Personal data and secrets of the seeded items (see `common::item`).
const PERSONAL: [&str; 6] = [
    "Maria",
    "Müller",
    "99887766",
    "maria.mueller",
    "tok-SECRET",
    "user-",
];

async fn claim(store: &DynamoRequestStore, id: &str) {
    let now = Utc::now();
    put(store, &item(id, RequestState::Received, 1, now)).await;
    let lease_until = (now + Duration::minutes(5)).timestamp_millis();
    let claim = store.claim(id, 1, OWNER, lease_until, now).await.unwrap();
    assert!(matches!(claim, Claim::Claimed(_)), "{claim:?}");
}

fn lease(id: &str) -> Lease<'_> {
    Lease {
        id,
        attempt: 1,
        owner: OWNER,
    }
}

/// A request decided in dry-run mode, written as the worker writes it.
async fn dry_run_decided(
    store: &DynamoRequestStore,
    id: &str,
    status: ConnectionStatus,
    why: &str,
) {
    claim(store, id).await;
    let decision = Decision {
        status,
        reason: why.into(),
    };
    assert!(store
        .record_dry_run(lease(id), &decision, Utc::now())
        .await
        .unwrap());
}

/// A request the worker parked for `reason`.
async fn parked(store: &DynamoRequestStore, id: &str, reason: ParkReason) {
    claim(store, id).await;
    assert!(WorkStore::park(store, lease(id), reason, Utc::now())
        .await
        .unwrap());
}

/// Three dry-run decisions, one duplicate loyalty number, one received, one reported.
async fn seed(store: &DynamoRequestStore) {
    dry_run_decided(store, "d-1", ConnectionStatus::Connected, "matched").await;
    dry_run_decided(store, "d-2", ConnectionStatus::AccountNotFound, "not_found").await;
    dry_run_decided(store, "d-3", ConnectionStatus::AccountNotFound, "not_found").await;
    parked(store, "p-dup", ParkReason::DuplicateLoyaltyNumber).await;
    put(
        store,
        &item("r-received", RequestState::Received, 1, Utc::now()),
    )
    .await;
    put(
        store,
        &reported("r-reported", 1, ConnectionStatus::Connected, Utc::now()),
    )
    .await;
}

#[tokio::test]
async fn dry_run_list_shows_would_be_statuses_without_personal_data() {
    let (table, store) = requests_table().await;
    seed(&store).await;

    let report = dry_run::list(&dynamo(), &table, Some(2)).await.unwrap();
    assert_eq!(report.total, 3);
    assert_eq!(report.by_status.get("CRSUC"), Some(&1));
    assert_eq!(report.by_status.get("CREU1"), Some(&2));
    assert_eq!(report.by_status.len(), 2);
    let mut ids: Vec<_> = report
        .requests
        .iter()
        .map(|r| r.request_id.as_str())
        .collect();
    ids.sort();
    assert_eq!(ids, ["d-1", "d-2", "d-3"]);
    let d1 = report
        .requests
        .iter()
        .find(|r| r.request_id == "d-1")
        .unwrap();
    assert_eq!(d1.would_send.as_deref(), Some("CRSUC"));
    assert_eq!(d1.reason.as_deref(), Some("matched"));
    assert_eq!(d1.state.as_deref(), Some("working"));
    assert_eq!(d1.attempt, Some(1));
    assert!(d1.parked_at.is_some());

    let json: Value = serde_json::from_str(&format_report(&report, OutputFormat::Json)).unwrap();
    assert_eq!(json["total"], 3);
    assert_eq!(json["by_status"]["CREU1"], 2);
    assert_eq!(json["requests"].as_array().unwrap().len(), 3);
    for format in [OutputFormat::Table, OutputFormat::Json] {
        let text = format_report(&report, format);
        for secret in PERSONAL {
            assert!(!text.contains(secret), "{secret} shown in {text}");
        }
        assert!(
            !text.contains("p-dup") && !text.contains("r-received"),
            "{text}"
        );
    }
    let text = format_report(&report, OutputFormat::Table);
    assert!(text.contains("d-2") && text.contains("not_found"), "{text}");
}

#[tokio::test]
async fn status_breaks_parked_requests_down_by_reason_and_shows_the_directory() {
    let (table, store) = requests_table().await;
    seed(&store).await;
    let report = status_paged(&dynamo(), &table, Utc::now(), Some(2))
        .await
        .unwrap();
    assert_eq!(report.stuck.parked, 4);
    let p = &report.parked_by_reason;
    assert_eq!(
        (
            p.dry_run,
            p.duplicate_loyalty_number,
            p.redrives_exhausted,
            p.decision_too_old,
            p.other
        ),
        (3, 1, 0, 0, 0)
    );
    let json: Value = serde_json::from_str(&format_report(&report, OutputFormat::Json)).unwrap();
    assert_eq!(json["parked_by_reason"]["dry_run"], 3);
    assert_eq!(json["parked_by_reason"]["duplicate_loyalty_number"], 1);
    let text = format_report(&report, OutputFormat::Table);
    assert!(text.contains("parked: dry_run"), "{text}");
    assert!(text.contains("triplink dry-run list"), "{text}");

    // The directory, as the worker's gate reads it: no manifest, then an empty one,
    // then one counting members.
    let members = testing::unique_name("cli-members");
    tables::create_members_table(&dynamo(), &members)
        .await
        .unwrap();
    let directory = DynamoMemberDirectory::new(dynamo(), members.clone());
    let health = DirectoryReport::read(&members, &directory).await;
    assert!(!health.ready);
    assert_eq!(health.not_ready.as_deref(), Some("no_manifest"));
    assert!(health.advice.as_deref().unwrap().contains("members import"));
    directory.write_manifest(0, Utc::now()).await.unwrap();
    let health = DirectoryReport::read(&members, &directory).await;
    assert_eq!(
        (health.ready, health.members, health.not_ready.as_deref()),
        (false, Some(0), Some("empty"))
    );
    assert!(
        health.line().starts_with("NOT READY (empty)"),
        "{}",
        health.line()
    );
    let written = Utc::now();
    directory.write_manifest(42, written).await.unwrap();
    let health = DirectoryReport::read(&members, &directory).await;
    assert!(health.ready);
    assert_eq!(health.members, Some(42));
    assert_eq!(
        health.updated_at.as_deref(),
        Some(triplink_shared::store::layout::timestamp(written).as_str())
    );
    let mut report = report;
    report.directory = Some(health);
    let text = format_report(&report, OutputFormat::Table);
    assert!(text.contains("ready: 42 members"), "{text}");
    let json: Value = serde_json::from_str(&format_report(&report, OutputFormat::Json)).unwrap();
    assert_eq!(json["directory"]["ready"], true);
    assert_eq!(json["directory"]["members"], 42);

    // A members table that does not exist: not ready, unreachable, no panic.
    let missing = DynamoMemberDirectory::new(dynamo(), "no-such-members-table");
    let health = DirectoryReport::read("no-such-members-table", &missing).await;
    assert_eq!(
        (health.ready, health.not_ready.as_deref()),
        (false, Some("unreachable"))
    );
}

#[tokio::test]
async fn retry_all_parked_rearms_only_parked_requests_of_the_reason_given() {
    let (_, store) = requests_table().await;
    seed(&store).await;
    let before = testing::scan_requests(&store).await;
    let received_before = before
        .iter()
        .find(|i| i.request_id == "r-received")
        .unwrap()
        .clone();
    let reported_before = before
        .iter()
        .find(|i| i.request_id == "r-reported")
        .unwrap()
        .clone();

    let report = retry_parked(&store, Some("dry_run"), 500).await.unwrap();
    assert_eq!(
        (report.found, report.rearmed, report.skipped, report.failed),
        (3, 3, 0, 0)
    );
    assert!(!report.more);
    assert_eq!(report.rearmed_by_reason.get("dry_run"), Some(&3));
    for id in ["d-1", "d-2", "d-3"] {
        let item = get(&store, id).await;
        assert_eq!(item.state, RequestState::Received, "{id}");
        assert_eq!(item.parked_at, None, "{id}");
        assert_eq!(item.parked_reason, None, "{id}");
        assert_eq!(item.lease_owner, None, "{id}");
        assert_eq!(item.redrives, 0, "{id}");
        assert!(item.due_at.is_some(), "{id}: back in the sweep");
        assert_eq!(
            item.decided_status, None,
            "{id}: the live worker decides it"
        );
    }
    // The reason filter: the duplicate stays parked; the others are untouched.
    let dup = get(&store, "p-dup").await;
    assert_eq!(dup.state, RequestState::Working);
    assert_eq!(
        dup.parked_reason.as_deref(),
        Some("duplicate_loyalty_number")
    );
    assert_eq!(get(&store, "r-received").await, received_before);
    assert_eq!(get(&store, "r-reported").await, reported_before);
    let text = format_report(&report, OutputFormat::Table);
    assert!(text.contains("re-armed"), "{text}");
    for secret in PERSONAL {
        assert!(!text.contains(secret), "{secret} shown in {text}");
    }

    // Nothing parked for that reason any more.
    let again = retry_parked(&store, Some("dry_run"), 500).await.unwrap();
    assert_eq!((again.found, again.rearmed), (0, 0));

    // Any reason, bounded by --max.
    parked(&store, "p-old", ParkReason::RedrivesExhausted).await;
    let first = retry_parked(&store, None, 1).await.unwrap();
    assert_eq!((first.found, first.rearmed), (1, 1));
    assert!(
        first.more,
        "a second parked request is left for the next run"
    );
    let json: Value = serde_json::from_str(&format_report(&first, OutputFormat::Json)).unwrap();
    assert_eq!(json["more"], true);
    assert_eq!(json["rearmed"], 1);
    let second = retry_parked(&store, None, 1).await.unwrap();
    assert_eq!((second.found, second.rearmed), (1, 1));
    assert!(!second.more);
    for id in ["p-dup", "p-old"] {
        let item = get(&store, id).await;
        assert_eq!(
            (item.state, item.parked_at),
            (RequestState::Received, None),
            "{id}"
        );
    }
    assert_eq!(get(&store, "r-reported").await, reported_before);

    assert!(retry_parked(&store, Some("no_such_reason"), 10)
        .await
        .is_err());
}
